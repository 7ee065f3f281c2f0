//! The embedded storage: one SQLite file in the data directory, zero set-up. One writer
//! connection (SQLite has one writer anyway) behind a lock, and a small pool of readers, so the
//! pulls and snapshots of many devices read side by side while a push is written (WAL).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use rusqlite_migration::{M, Migrations};

use crate::at_rest::AtRest;
use crate::blobs::{BlobStore, FsBlobStore};
use crate::storage::{Result, ServerError};

/// Attachments: which contents each visit names, and the contents held whole and verified (the
/// bytes themselves are in the blob store).
const SCHEMA_V3: &str = r#"
CREATE TABLE visit_attachments (
    visit_id       TEXT NOT NULL REFERENCES visits (id),
    attachment_id  TEXT NOT NULL,
    hash_algorithm TEXT NOT NULL,
    content_hash   TEXT NOT NULL,
    size_bytes     INTEGER NOT NULL,
    PRIMARY KEY (visit_id, attachment_id)
) WITHOUT ROWID;
CREATE INDEX visit_attachments_by_content ON visit_attachments (hash_algorithm, content_hash);
CREATE TABLE contents (
    hash_algorithm TEXT NOT NULL,
    content_hash   TEXT NOT NULL,
    size_bytes     INTEGER NOT NULL,
    stored_at      TEXT NOT NULL,
    PRIMARY KEY (hash_algorithm, content_hash)
) WITHOUT ROWID;
"#;

/// Members sharing a resident ID: an index on the member ID field, and the pairs flagged for
/// the reviewers whose areas cover both households.
const SCHEMA_V4: &str = r#"
CREATE INDEX fields_by_id_number ON fields (value) WHERE entity = 'member' AND field = 'id_number';
CREATE TABLE possible_duplicates (
    member_a    TEXT NOT NULL,
    member_b    TEXT NOT NULL,
    household_a TEXT NOT NULL,
    household_b TEXT NOT NULL,
    village_a   TEXT NOT NULL,
    village_b   TEXT NOT NULL,
    found_at    TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'open',
    PRIMARY KEY (member_a, member_b)
) WITHOUT ROWID;
"#;

/// Reassignment: the areas a user held until an administrator changed them, and the changes
/// their phones still sent for those villages, kept for the villages' reviewers.
const SCHEMA_V5: &str = r#"
CREATE TABLE former_areas (
    user_id TEXT NOT NULL,
    area    TEXT NOT NULL,
    until   TEXT NOT NULL,
    PRIMARY KEY (user_id, area)
) WITHOUT ROWID;
CREATE TABLE handovers (
    device_id    TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    user_id      TEXT NOT NULL,
    village_code TEXT NOT NULL,
    change       TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    PRIMARY KEY (device_id, seq)
) WITHOUT ROWID;
CREATE INDEX handovers_by_village ON handovers (village_code);
"#;

/// How often a household of each assistance category is visited (the due-date rule), and the
/// visits of a household found by index (the rule and merges read them per household).
const SCHEMA_V6: &str = r#"
CREATE TABLE visit_frequencies (
    category   TEXT PRIMARY KEY,
    days       INTEGER NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX visits_by_household ON visits (json_extract(body, '$.household_id'));
"#;

/// Possession: which device pushed each visit naming a content, and which devices proved they
/// hold a content's bytes. References made before this schema keep no pusher (`NULL`) and stay
/// readable as they were. Plus the deployment's secrets (the possession nonces' key).
const SCHEMA_V7: &str = r#"
ALTER TABLE visit_attachments ADD COLUMN pushed_by TEXT;
CREATE TABLE content_holders (
    hash_algorithm TEXT NOT NULL,
    content_hash   TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    proven_at      TEXT NOT NULL,
    PRIMARY KEY (hash_algorithm, content_hash, device_id)
) WITHOUT ROWID;
CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
"#;

/// Re-enrolment: a store enrolled again (its token expired offline) gets a device that succeeds
/// the old one. The old one's token stops working; the new one continues its lineage (change
/// numbers, audit chain, uploads). `lineage_id` NULL is the device's own id.
const SCHEMA_V8: &str = r#"
ALTER TABLE devices ADD COLUMN lineage_id TEXT;
ALTER TABLE devices ADD COLUMN predecessor_id TEXT;
ALTER TABLE devices ADD COLUMN successor_id TEXT;
"#;

/// Visits naming a content the server does not hold whole yet.
const AWAITING_ATTACHMENTS: &str = "SELECT DISTINCT va.visit_id FROM visit_attachments va
     WHERE NOT EXISTS (SELECT 1 FROM contents c
                       WHERE c.hash_algorithm = va.hash_algorithm AND c.content_hash = va.content_hash)
     ORDER BY va.visit_id";
const AWAITING_ATTACHMENTS_COUNT: &str = "SELECT count(DISTINCT va.visit_id) FROM visit_attachments va
     WHERE NOT EXISTS (SELECT 1 FROM contents c
                       WHERE c.hash_algorithm = va.hash_algorithm AND c.content_hash = va.content_hash)";

/// Remote wipe and the audit trails: each device's chain as uploaded (verified on arrival), and
/// the server's own chain of administrative events. Both append-only.
const SCHEMA_V2: &str = r#"
ALTER TABLE devices ADD COLUMN wipe_requested_at TEXT;
ALTER TABLE devices ADD COLUMN wiped_at TEXT;
ALTER TABLE devices ADD COLUMN audit_alert TEXT;
CREATE TABLE device_audit (
    device_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    chain_hash  TEXT NOT NULL,
    entry       TEXT NOT NULL,
    hash        TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (device_id, seq)
) WITHOUT ROWID;
CREATE TABLE server_audit (
    seq   INTEGER PRIMARY KEY,
    entry TEXT NOT NULL,
    hash  TEXT NOT NULL
);
CREATE TRIGGER device_audit_append_only_update BEFORE UPDATE ON device_audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER device_audit_append_only_delete BEFORE DELETE ON device_audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER server_audit_append_only_update BEFORE UPDATE ON server_audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER server_audit_append_only_delete BEFORE DELETE ON server_audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"#;

const SCHEMA: &str = r#"
CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    role       TEXT NOT NULL,
    areas      TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE enrollment_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    expires_at TEXT NOT NULL,
    used_at    TEXT
);
CREATE TABLE devices (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL REFERENCES users (id),
    name             TEXT NOT NULL,
    token_hash       TEXT NOT NULL UNIQUE,
    token_expires_at TEXT NOT NULL,
    enrolled_at      TEXT NOT NULL,
    revoked_at       TEXT,
    last_seen_at     TEXT,
    clock_offset_ms  INTEGER
);
-- Households and members, and each field with the server sequence number that set it.
CREATE TABLE records (
    entity       TEXT NOT NULL,
    id           TEXT NOT NULL,
    household_id TEXT,
    village_code TEXT NOT NULL,
    created_seq  INTEGER NOT NULL,
    PRIMARY KEY (entity, id)
) WITHOUT ROWID;
CREATE INDEX records_by_village ON records (village_code);
CREATE TABLE fields (
    entity        TEXT NOT NULL,
    id            TEXT NOT NULL,
    field         TEXT NOT NULL,
    value         TEXT NOT NULL,
    version       INTEGER NOT NULL,
    writer_device TEXT NOT NULL,
    writer_seq    INTEGER NOT NULL,
    writer_user   TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    device_time   TEXT NOT NULL,
    skewed        INTEGER NOT NULL,
    conflict_id   TEXT,
    PRIMARY KEY (entity, id, field)
) WITHOUT ROWID;
CREATE TABLE conflicts (
    id           TEXT PRIMARY KEY,
    village_code TEXT NOT NULL,
    status       TEXT NOT NULL,
    info         TEXT NOT NULL
);
CREATE INDEX conflicts_open ON conflicts (village_code) WHERE status = 'open';
CREATE TABLE visits (
    id           TEXT PRIMARY KEY,
    village_code TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    body         TEXT NOT NULL
);
-- Everything devices pull, in server receive order. `seq` is the server sequence number.
CREATE TABLE feed (
    seq           INTEGER PRIMARY KEY,
    village_code  TEXT NOT NULL,
    origin_device TEXT NOT NULL,
    kind          TEXT NOT NULL,
    payload       TEXT NOT NULL
);
CREATE INDEX feed_by_village ON feed (village_code, seq);
-- Idempotency: the answer given to each (device, change), returned again on a re-push.
CREATE TABLE device_changes (
    device_id TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    ack       TEXT NOT NULL,
    PRIMARY KEY (device_id, seq)
) WITHOUT ROWID;
CREATE TABLE checksums (
    village_code TEXT PRIMARY KEY,
    sum          INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE forms (
    form_id      TEXT NOT NULL,
    version      INTEGER NOT NULL,
    definition   TEXT NOT NULL,
    published_at TEXT NOT NULL,
    PRIMARY KEY (form_id, version)
) WITHOUT ROWID;
CREATE TABLE code_lists (
    name         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    entries      TEXT NOT NULL,
    published_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;
"#;

mod audit;
mod catalog;
mod contents;
mod devices;
mod duplicates;
mod handovers;
mod records;

/// A transaction of the SQLite storage, as the repositories (`crate::repo`) see it.
pub(crate) struct SqliteTx<'a, 'c>(pub(crate) &'a Transaction<'c>);

/// The SQLite storage of a server data directory.
pub struct SqliteStorage {
    writer: Mutex<Connection>,
    readers: r2d2::Pool<r2d2_sqlite::SqliteConnectionManager>,
    blobs: Arc<dyn BlobStore>,
}

/// Read connections: one per core, at least two (a status question must not wait for a pull).
fn reader_count() -> u32 {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get() as u32)
        .clamp(2, 8)
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStorage")
    }
}

impl SqliteStorage {
    /// Opens (creating and migrating) `server.db` in `data_dir`, with attachment contents in
    /// its `attachments` directory, both kept as `at_rest` says.
    pub fn open(data_dir: &Path, at_rest: &AtRest) -> Result<Self> {
        zoufang_crypto::init();
        crate::private::dir(data_dir)
            .map_err(|e| ServerError::Storage(format!("cannot create the data directory: {e}")))?;
        crate::at_rest::check_directory(data_dir, at_rest)?;
        let blobs = FsBlobStore::open(&data_dir.join("attachments"), at_rest.objects())
            .map_err(|e| ServerError::Storage(format!("cannot open the attachment store: {e}")))?;
        Self::open_with(data_dir, at_rest, Arc::new(blobs))
    }

    /// As [`Self::open`], with the attachment contents in `blobs` (an object store, say).
    pub fn open_with(data_dir: &Path, at_rest: &AtRest, blobs: Arc<dyn BlobStore>) -> Result<Self> {
        crate::private::dir(data_dir)
            .map_err(|e| ServerError::Storage(format!("cannot create the data directory: {e}")))?;
        crate::at_rest::check_directory(data_dir, at_rest)?;
        let path = data_dir.join("server.db");
        crate::private::sqlite_file(&path)
            .map_err(|e| ServerError::Storage(format!("cannot create the database file: {e}")))?;
        // Links SQLCipher's provider (see `zoufang_crypto::init`).
        zoufang_crypto::init();
        let mut writer = Connection::open(&path)?;
        crate::at_rest::key_connection(&writer, at_rest)?;
        // The first read is where a wrong key shows: say so, not "file is not a database".
        writer
            .query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
            .map_err(|_| ServerError::Conflict {
                code: "wrong_server_key",
                message: "server.db cannot be read with this key (or is not a Zoufang database)"
                    .into(),
            })?;
        // First, so that every later statement waits for another process (admin and serve
        // share the file) instead of failing at once.
        writer.busy_timeout(Duration::from_secs(30))?;
        writer.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
        writer.pragma_update(None, "synchronous", "FULL")?;
        // Up to 256 MB of pages (taken as used), not SQLite's 2 MB: a push looks records up by
        // random ids while writing visits and feed entries that push them out, and every page
        // read again from the file is decrypted and authenticated again (a third of a large
        // push's time with the default, a sixth with 64 MB).
        writer.pragma_update(None, "cache_size", -262144)?;
        writer.busy_timeout(Duration::from_secs(30))?;
        Migrations::new(vec![
            M::up(SCHEMA),
            M::up(SCHEMA_V2),
            M::up(SCHEMA_V3),
            M::up(SCHEMA_V4),
            M::up(SCHEMA_V5),
            M::up(SCHEMA_V6),
            M::up(SCHEMA_V7),
            M::up(SCHEMA_V8),
        ])
        .to_latest(&mut writer)
        .map_err(|e| ServerError::Storage(format!("migration failed: {e}")))?;
        let keyed = at_rest.clone();
        let manager = r2d2_sqlite::SqliteConnectionManager::file(&path).with_init(move |c| {
            crate::at_rest::key_connection(c, &keyed).map_err(|e| {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_AUTH),
                    Some(e.to_string()),
                )
            })?;
            c.busy_timeout(Duration::from_secs(30))
        });
        // No idle minimum: otherwise every checkout has a pool thread open a replacement in the
        // background, and one still opening as a short command (`zoufang admin`) exits closes
        // its encrypted connection while SQLCipher's exit handler tears down the globals it
        // uses (a SIGSEGV at exit, about one run in thirty).
        let readers = r2d2::Pool::builder()
            .max_size(reader_count())
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(30))
            .build(manager)
            .map_err(|e| ServerError::Storage(format!("cannot open the read connections: {e}")))?;
        Ok(Self {
            writer: Mutex::new(writer),
            readers,
            blobs,
        })
    }

    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self
            .readers
            .get()
            .map_err(|e| ServerError::Storage(format!("no read connection free: {e}")))?;
        // One read transaction: a consistent snapshot while writers go on (WAL).
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

impl crate::repo::Transactions for SqliteStorage {
    fn blobs(&self) -> &dyn BlobStore {
        self.blobs.as_ref()
    }

    fn read_tx(&self, f: &mut dyn FnMut(&mut dyn crate::repo::Tx) -> Result<()>) -> Result<()> {
        self.read(|tx| f(&mut SqliteTx(tx)))
    }

    fn write_tx(&self, f: &mut dyn FnMut(&mut dyn crate::repo::Tx) -> Result<()>) -> Result<()> {
        self.write(|tx| f(&mut SqliteTx(tx)))
    }
}
