//! The embedded storage: one SQLite file in the data directory, zero set-up. One writer
//! connection (SQLite has one writer anyway) behind a lock, and a small pool of readers, so the
//! pulls and snapshots of many devices read side by side while a push is written (WAL).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use rusqlite_migration::{M, Migrations};
use serde_json::{Map, Value as Json};
use zoufang_model::code_list::CodeList;
use zoufang_model::domain::check_region_code;
use zoufang_protocol::audit::{AuditEntry, HashAlgorithm, is_hex_digest};
use zoufang_protocol::checksum::field_hash;
use zoufang_protocol::messages::{
    Ack, AuditUploadRequest, AuditUploadResponse, CatalogRequest, Change, ChangeOp, CompetingValue,
    ConflictInfo, ConflictStatus, ContentRef, ContentState, Entity, FeedEntry, FeedItem,
    FieldValue, Outcome, PROTOCOL_VERSION, PullRequest, PullResponse, RecordState,
    SnapshotResponse, UserInfo, VisitRecord,
};

use crate::blobs::{BlobStore, ContentKey, FsBlobStore};
use crate::merge::{Decision, Edit, FieldNow, decide};
use crate::service::{self, ts};
use crate::storage::{DeviceAuth, DeviceInfo, Enrolled, Result, ServerError, Stats, Storage};

/// A device clock further than this from the server's is flagged on its edits.
pub const CLOCK_SKEW_LIMIT: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// Most feed entries in one pull response.
pub const MAX_PULL_LIMIT: u32 = 5000;
/// Largest value of one field accepted.
const MAX_FIELD_BYTES: usize = 16 * 1024;

/// Remote wipe and the audit trails: each device's chain as uploaded (verified on arrival), and
/// the server's own chain of administrative events. Both append-only.
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

/// Visits naming a content the server does not hold whole yet.
const AWAITING_ATTACHMENTS: &str = "SELECT DISTINCT va.visit_id FROM visit_attachments va
     WHERE NOT EXISTS (SELECT 1 FROM contents c
                       WHERE c.hash_algorithm = va.hash_algorithm AND c.content_hash = va.content_hash)
     ORDER BY va.visit_id";
const AWAITING_ATTACHMENTS_COUNT: &str = "SELECT count(DISTINCT va.visit_id) FROM visit_attachments va
     WHERE NOT EXISTS (SELECT 1 FROM contents c
                       WHERE c.hash_algorithm = va.hash_algorithm AND c.content_hash = va.content_hash)";

/// Most attachments one visit may name, and the largest content (the device's own bounds).
const MAX_VISIT_ATTACHMENTS: usize = 64;
const MAX_CONTENT_BYTES: u64 = 50 * 1024 * 1024;

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

fn area_upper(prefix: &str) -> String {
    // Codes are ASCII digits: every code with this prefix sorts below prefix + '~'.
    format!("{prefix}~")
}

mod audit;
mod catalog;
mod contents;
mod devices;

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
    /// its `attachments` directory.
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| ServerError::Storage(format!("cannot create the data directory: {e}")))?;
        let blobs = FsBlobStore::open(&data_dir.join("attachments"))
            .map_err(|e| ServerError::Storage(format!("cannot open the attachment store: {e}")))?;
        Self::open_with(data_dir, Arc::new(blobs))
    }

    /// As [`Self::open`], with the attachment contents in `blobs` (an object store, say).
    pub fn open_with(data_dir: &Path, blobs: Arc<dyn BlobStore>) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| ServerError::Storage(format!("cannot create the data directory: {e}")))?;
        let path = data_dir.join("server.db");
        let mut writer = Connection::open(&path)?;
        // First, so that every later statement waits for another process (admin and serve
        // share the file) instead of failing at once.
        writer.busy_timeout(Duration::from_secs(30))?;
        writer.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
        writer.pragma_update(None, "synchronous", "FULL")?;
        writer.busy_timeout(Duration::from_secs(30))?;
        Migrations::new(vec![M::up(SCHEMA), M::up(SCHEMA_V2), M::up(SCHEMA_V3)])
            .to_latest(&mut writer)
            .map_err(|e| ServerError::Storage(format!("migration failed: {e}")))?;
        let manager = r2d2_sqlite::SqliteConnectionManager::file(&path)
            .with_init(|c| c.busy_timeout(Duration::from_secs(30)));
        let readers = r2d2::Pool::builder()
            .max_size(reader_count())
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

fn next_seq(tx: &Transaction<'_>) -> Result<u64> {
    let max: i64 = tx.query_row("SELECT coalesce(max(seq), 0) FROM feed", [], |r| r.get(0))?;
    Ok(max as u64 + 1)
}

fn append_feed(
    tx: &Transaction<'_>,
    seq: u64,
    village: &str,
    origin: &str,
    item: &FeedItem,
) -> Result<()> {
    let kind = match item {
        FeedItem::Record { .. } => "record",
        FeedItem::Field { .. } => "field",
        FeedItem::Conflict { .. } => "conflict",
        FeedItem::Visit { .. } => "visit",
        FeedItem::VisitStatus { .. } => "visit_status",
    };
    tx.prepare_cached("INSERT INTO feed (seq, village_code, origin_device, kind, payload) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![seq as i64, village, origin, kind, serde_json::to_string(item)?])?;
    Ok(())
}

fn adjust_checksum(
    tx: &Transaction<'_>,
    village: &str,
    remove: Option<u64>,
    add: u64,
) -> Result<()> {
    // Wrapping u64 arithmetic in Rust: SQLite would turn an overflowing integer sum into a float.
    let current: Option<i64> = tx
        .prepare_cached("SELECT sum FROM checksums WHERE village_code = ?1")?
        .query_row([village], |r| r.get(0))
        .optional()?;
    let sum = (current.unwrap_or(0) as u64)
        .wrapping_sub(remove.unwrap_or(0))
        .wrapping_add(add);
    tx.prepare_cached("INSERT OR REPLACE INTO checksums (village_code, sum) VALUES (?1, ?2)")?
        .execute(params![village, sum as i64])?;
    Ok(())
}

/// Who wrote a value, for the conflict list.
struct Writer<'a> {
    device: &'a str,
    seq: u64,
    user: &'a str,
    received_at: &'a str,
    device_time: &'a str,
    skewed: bool,
}

struct StoredField {
    value: Json,
    version: u64,
    writer_device: String,
    writer_seq: u64,
    writer_user: String,
    received_at: String,
    device_time: String,
    skewed: bool,
    conflict_id: Option<String>,
}

fn load_field(
    tx: &Transaction<'_>,
    entity: Entity,
    id: &str,
    field: &str,
) -> Result<Option<StoredField>> {
    let row = tx
        .prepare_cached(
            "SELECT value, version, writer_device, writer_seq, writer_user, received_at, device_time, skewed, conflict_id
             FROM fields WHERE entity = ?1 AND id = ?2 AND field = ?3",
        )?
        .query_row(params![entity.as_str(), id, field], |r| {
            Ok((
                r.get::<_, String>(0)?,
                StoredField {
                    value: Json::Null,
                    version: r.get::<_, i64>(1)? as u64,
                    writer_device: r.get(2)?,
                    writer_seq: r.get::<_, i64>(3)? as u64,
                    writer_user: r.get(4)?,
                    received_at: r.get(5)?,
                    device_time: r.get(6)?,
                    skewed: r.get(7)?,
                    conflict_id: r.get(8)?,
                },
            ))
        })
        .optional()?;
    match row {
        Some((value, mut f)) => {
            f.value = serde_json::from_str(&value)?;
            Ok(Some(f))
        }
        None => Ok(None),
    }
}

#[allow(clippy::too_many_arguments)]
fn write_field(
    tx: &Transaction<'_>,
    entity: Entity,
    id: &str,
    village: &str,
    field: &str,
    value: &Json,
    version: u64,
    writer: &Writer<'_>,
    conflict_id: Option<&str>,
    old: Option<(&Json, u64)>,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO fields (entity, id, field, value, version, writer_device, writer_seq, writer_user, received_at, device_time, skewed, conflict_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (entity, id, field) DO UPDATE SET value = ?4, version = ?5, writer_device = ?6, writer_seq = ?7,
             writer_user = ?8, received_at = ?9, device_time = ?10, skewed = ?11, conflict_id = ?12",
    )?
    .execute(params![
        entity.as_str(),
        id,
        field,
        value.to_string(),
        version as i64,
        writer.device,
        writer.seq as i64,
        writer.user,
        writer.received_at,
        writer.device_time,
        writer.skewed,
        conflict_id
    ])?;
    let old_hash = old.map(|(v, ver)| field_hash(entity, id, field, ver, v));
    adjust_checksum(
        tx,
        village,
        old_hash,
        field_hash(entity, id, field, version, value),
    )
}

fn load_conflict(tx: &Transaction<'_>, id: &str) -> Result<Option<ConflictInfo>> {
    let info: Option<String> = tx
        .prepare_cached("SELECT info FROM conflicts WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    info.map(|i| serde_json::from_str(&i).map_err(ServerError::from))
        .transpose()
}

fn save_conflict(tx: &Transaction<'_>, c: &ConflictInfo) -> Result<()> {
    let status = match c.status {
        ConflictStatus::Open => "open",
        ConflictStatus::Resolved => "resolved",
    };
    tx.prepare_cached(
        "INSERT INTO conflicts (id, village_code, status, info) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET status = ?3, info = ?4",
    )?
    .execute(params![
        c.id,
        c.village_code,
        status,
        serde_json::to_string(c)?
    ])?;
    Ok(())
}

/// A record's village and household (a member's household; a household's own id).
fn locate(tx: &Transaction<'_>, entity: Entity, id: &str) -> Result<Option<(String, String)>> {
    Ok(tx
        .prepare_cached("SELECT village_code, coalesce(household_id, id) FROM records WHERE entity = ?1 AND id = ?2")?
        .query_row(params![entity.as_str(), id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

fn rejected(seq: u64, code: &str, message: &str) -> Ack {
    Ack {
        seq,
        outcome: Outcome::Rejected,
        version: None,
        value: None,
        conflict: None,
        code: Some(code.to_owned()),
        message: Some(message.to_owned()),
    }
}

fn applied(
    seq: u64,
    outcome: Outcome,
    version: u64,
    value: Option<Json>,
    conflict: Option<ConflictInfo>,
) -> Ack {
    Ack {
        seq,
        outcome,
        version: Some(version),
        value,
        conflict,
        code: None,
        message: None,
    }
}

fn check_fields(fields: &Map<String, Json>) -> std::result::Result<(), &'static str> {
    if fields.len() > 200 {
        return Err("too many fields");
    }
    for (k, v) in fields {
        if k.is_empty()
            || k.len() > 64
            || !k
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err("a field name is 1 to 64 of [a-z0-9_]");
        }
        if v.to_string().len() > MAX_FIELD_BYTES {
            return Err("a field value is too large");
        }
    }
    Ok(())
}

struct PushContext<'a> {
    auth: &'a DeviceAuth,
    received_at: String,
    skewed: bool,
}

impl PushContext<'_> {
    fn writer<'b>(&'b self, seq: u64, device_time: &'b str) -> Writer<'b> {
        Writer {
            device: &self.auth.device_id,
            seq,
            user: &self.auth.user.id,
            received_at: &self.received_at,
            device_time,
            skewed: self.skewed,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn create_record(
    tx: &Transaction<'_>,
    ctx: &PushContext<'_>,
    change: &Change,
    entity: Entity,
    id: &str,
    household_id: Option<&str>,
    village: &str,
    fields: &Map<String, Json>,
) -> Result<Ack> {
    if let Err(why) = check_fields(fields) {
        return Ok(rejected(change.seq, "invalid_value", why));
    }
    if uuid::Uuid::parse_str(id).is_err() {
        return Ok(rejected(
            change.seq,
            "invalid_value",
            "record ids are UUIDs",
        ));
    }
    let existing: Option<i64> = tx
        .prepare_cached("SELECT created_seq FROM records WHERE entity = ?1 AND id = ?2")?
        .query_row(params![entity.as_str(), id], |r| r.get(0))
        .optional()?;
    if let Some(created) = existing {
        return Ok(applied(
            change.seq,
            Outcome::Unchanged,
            created as u64,
            None,
            None,
        ));
    }
    let seq = next_seq(tx)?;
    tx.prepare_cached("INSERT INTO records (entity, id, household_id, village_code, created_seq) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![entity.as_str(), id, household_id, village, seq as i64])?;
    let writer = ctx.writer(change.seq, &change.device_time);
    let mut state = BTreeMap::new();
    for (field, value) in fields {
        write_field(
            tx, entity, id, village, field, value, seq, &writer, None, None,
        )?;
        state.insert(
            field.clone(),
            FieldValue {
                value: value.clone(),
                version: seq,
            },
        );
    }
    let record = RecordState {
        entity,
        id: id.to_owned(),
        household_id: household_id.map(str::to_owned),
        village_code: village.to_owned(),
        fields: state,
    };
    append_feed(
        tx,
        seq,
        village,
        &ctx.auth.device_id,
        &FeedItem::Record { record },
    )?;
    Ok(applied(change.seq, Outcome::Applied, seq, None, None))
}

/// Applies one field edit under the merge rule. `device_seq` is None for a reviewer's
/// resolution from the review screen.
#[allow(clippy::too_many_arguments)]
fn set_field(
    tx: &Transaction<'_>,
    ctx: &PushContext<'_>,
    device_seq: u64,
    device_time: &str,
    entity: Entity,
    id: &str,
    field: &str,
    value: &Json,
    base: u64,
    after: Option<u64>,
) -> Result<Ack> {
    let Some((village, household)) = locate(tx, entity, id)? else {
        return Ok(rejected(
            device_seq,
            "not_found",
            "the record does not exist on the server",
        ));
    };
    if !ctx.auth.covers(&village) {
        return Ok(rejected(
            device_seq,
            "out_of_area",
            "the record is outside the user's areas",
        ));
    }
    let mut one = Map::new();
    one.insert(field.to_owned(), value.clone());
    if let Err(why) = check_fields(&one) {
        return Ok(rejected(device_seq, "invalid_value", why));
    }
    let current = load_field(tx, entity, id, field)?;
    let mut conflict = match current.as_ref().and_then(|c| c.conflict_id.as_deref()) {
        Some(cid) => load_conflict(tx, cid)?,
        None => None,
    };
    let competing: Vec<Json> = conflict
        .as_ref()
        .map(|c| c.values.iter().map(|v| v.value.clone()).collect())
        .unwrap_or_default();
    let now = FieldNow {
        value: current.as_ref().map(|c| &c.value),
        version: current.as_ref().map_or(0, |c| c.version),
        writer: current
            .as_ref()
            .map(|c| (c.writer_device.as_str(), c.writer_seq)),
        conflict: conflict.as_ref().map(|c| (c.version, competing.as_slice())),
    };
    let decision = decide(
        &now,
        &Edit {
            value,
            base,
            device: &ctx.auth.device_id,
            after,
        },
    );
    let old = current.as_ref().map(|c| (&c.value, c.version));
    let writer = ctx.writer(device_seq, device_time);
    let competitor = |seq: u64| CompetingValue {
        value: value.clone(),
        user: ctx.auth.user.id.clone(),
        device: ctx.auth.device_id.clone(),
        received_at: ctx.received_at.clone(),
        device_time: device_time.to_owned(),
        seq,
        clock_skewed: ctx.skewed,
    };
    // The last step of every conflict outcome: keep the conflict, set the field (still
    // conflicted unless resolved), tell every device in scope, and answer.
    let commit_conflict = |info: ConflictInfo, seq: u64, outcome: Outcome| -> Result<Ack> {
        save_conflict(tx, &info)?;
        let open = (info.status == ConflictStatus::Open).then_some(info.id.as_str());
        write_field(
            tx, entity, id, &village, field, value, seq, &writer, open, old,
        )?;
        append_feed(
            tx,
            seq,
            &village,
            &ctx.auth.device_id,
            &FeedItem::Conflict {
                conflict: info.clone(),
            },
        )?;
        Ok(applied(
            device_seq,
            outcome,
            seq,
            Some(value.clone()),
            Some(info),
        ))
    };
    match decision {
        Decision::RejectFutureBase => Ok(rejected(
            device_seq,
            "future_base",
            "the edit names a field version the server never issued",
        )),
        Decision::Unchanged => {
            let v = current.as_ref().map_or(0, |c| c.version);
            Ok(applied(
                device_seq,
                Outcome::Unchanged,
                v,
                current.map(|c| c.value),
                conflict,
            ))
        }
        Decision::Apply => {
            let seq = next_seq(tx)?;
            write_field(
                tx, entity, id, &village, field, value, seq, &writer, None, old,
            )?;
            let item = FeedItem::Field {
                entity,
                id: id.to_owned(),
                field: field.to_owned(),
                value: value.clone(),
                version: seq,
            };
            append_feed(tx, seq, &village, &ctx.auth.device_id, &item)?;
            Ok(applied(
                device_seq,
                Outcome::Applied,
                seq,
                Some(value.clone()),
                None,
            ))
        }
        Decision::OpenConflict => {
            let seq = next_seq(tx)?;
            let Some(cur) = current.as_ref() else {
                return Ok(rejected(
                    device_seq,
                    "invalid_state",
                    "a conflict needs an existing value",
                ));
            };
            let info = ConflictInfo {
                id: uuid::Uuid::now_v7().to_string(),
                entity,
                entity_id: id.to_owned(),
                household_id: household,
                village_code: village.clone(),
                field: field.to_owned(),
                values: vec![
                    CompetingValue {
                        value: cur.value.clone(),
                        user: cur.writer_user.clone(),
                        device: cur.writer_device.clone(),
                        received_at: cur.received_at.clone(),
                        device_time: cur.device_time.clone(),
                        seq: cur.version,
                        clock_skewed: cur.skewed,
                    },
                    competitor(seq),
                ],
                provisional: value.clone(),
                status: ConflictStatus::Open,
                resolution: None,
                resolved_by: None,
                version: seq,
            };
            commit_conflict(info, seq, Outcome::Conflict)
        }
        Decision::JoinConflict | Decision::Resolve => {
            let seq = next_seq(tx)?;
            let Some(mut info) = conflict.take() else {
                return Ok(rejected(
                    device_seq,
                    "invalid_state",
                    "no open conflict on this field",
                ));
            };
            info.provisional = value.clone();
            info.version = seq;
            if decision == Decision::Resolve {
                info.status = ConflictStatus::Resolved;
                info.resolution = Some(value.clone());
                info.resolved_by = Some(ctx.auth.user.id.clone());
                commit_conflict(info, seq, Outcome::Applied)
            } else {
                info.values.push(competitor(seq));
                commit_conflict(info, seq, Outcome::Conflict)
            }
        }
    }
}

fn apply_change(tx: &Transaction<'_>, ctx: &PushContext<'_>, change: &Change) -> Result<Ack> {
    let seq = change.seq;
    match &change.op {
        ChangeOp::CreateHousehold {
            id,
            village_code,
            fields,
        } => {
            if check_region_code(village_code).is_err() {
                return Ok(rejected(
                    seq,
                    "invalid_value",
                    "the village code is not a valid region code",
                ));
            }
            if !ctx.auth.covers(village_code) {
                return Ok(rejected(
                    seq,
                    "out_of_area",
                    "the village is outside the user's areas",
                ));
            }
            create_record(
                tx,
                ctx,
                change,
                Entity::Household,
                id,
                None,
                village_code,
                fields,
            )
        }
        ChangeOp::CreateMember {
            id,
            household_id,
            fields,
        } => {
            let Some((village, _)) = locate(tx, Entity::Household, household_id)? else {
                return Ok(rejected(
                    seq,
                    "not_found",
                    "the member's household does not exist on the server",
                ));
            };
            if !ctx.auth.covers(&village) {
                return Ok(rejected(
                    seq,
                    "out_of_area",
                    "the household is outside the user's areas",
                ));
            }
            create_record(
                tx,
                ctx,
                change,
                Entity::Member,
                id,
                Some(household_id),
                &village,
                fields,
            )
        }
        ChangeOp::SetField {
            entity,
            id,
            field,
            value,
            base,
            resolves: _,
            after,
        } => set_field(
            tx,
            ctx,
            seq,
            &change.device_time,
            *entity,
            id,
            field,
            value,
            *base,
            *after,
        ),
        ChangeOp::SubmitVisit { visit } => submit_visit(tx, ctx, seq, visit),
        ChangeOp::SetVisitStatus {
            id,
            status,
            reason,
            at,
        } => {
            let body: Option<(String, String)> = tx
                .prepare_cached("SELECT village_code, body FROM visits WHERE id = ?1")?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((village, body)) = body else {
                return Ok(rejected(
                    seq,
                    "not_found",
                    "the visit does not exist on the server",
                ));
            };
            if !ctx.auth.covers(&village) {
                return Ok(rejected(
                    seq,
                    "out_of_area",
                    "the visit is outside the user's areas",
                ));
            }
            let mut visit: VisitRecord = serde_json::from_str(&body)?;
            let allowed = matches!(
                (visit.status.as_str(), status.as_str()),
                ("completed", "signed") | (_, "void")
            );
            if visit.status == *status {
                let v: i64 =
                    tx.query_row("SELECT seq FROM visits WHERE id = ?1", [id], |r| r.get(0))?;
                return Ok(applied(seq, Outcome::Unchanged, v as u64, None, None));
            }
            if !allowed {
                return Ok(rejected(
                    seq,
                    "invalid_transition",
                    "that status change is not allowed",
                ));
            }
            visit.status = status.clone();
            if status == "signed" {
                visit.signed_at = Some(at.clone());
            } else {
                visit.void_reason = reason.clone();
            }
            let server_seq = next_seq(tx)?;
            tx.execute(
                "UPDATE visits SET body = ?2, seq = ?3 WHERE id = ?1",
                params![id, serde_json::to_string(&visit)?, server_seq as i64],
            )?;
            let item = FeedItem::VisitStatus {
                id: id.clone(),
                status: status.clone(),
                reason: reason.clone(),
                at: at.clone(),
            };
            append_feed(tx, server_seq, &village, &ctx.auth.device_id, &item)?;
            Ok(applied(seq, Outcome::Applied, server_seq, None, None))
        }
    }
}

fn submit_visit(
    tx: &Transaction<'_>,
    ctx: &PushContext<'_>,
    seq: u64,
    visit: &VisitRecord,
) -> Result<Ack> {
    if uuid::Uuid::parse_str(&visit.id).is_err() || check_region_code(&visit.village_code).is_err()
    {
        return Ok(rejected(
            seq,
            "invalid_value",
            "a visit needs a UUID and a valid village code",
        ));
    }
    if !ctx.auth.covers(&visit.village_code) {
        return Ok(rejected(
            seq,
            "out_of_area",
            "the visit's village is outside the user's areas",
        ));
    }
    if !matches!(visit.status.as_str(), "completed" | "signed" | "void") {
        return Ok(rejected(
            seq,
            "invalid_value",
            "only completed visits are submitted",
        ));
    }
    if let Some(problem) = attachments_problem(visit) {
        return Ok(rejected(seq, "invalid_attachment", problem));
    }
    let existing: Option<i64> = tx
        .prepare_cached("SELECT seq FROM visits WHERE id = ?1")?
        .query_row([&visit.id], |r| r.get(0))
        .optional()?;
    if let Some(v) = existing {
        return Ok(applied(seq, Outcome::Unchanged, v as u64, None, None));
    }
    if let Some(h) = &visit.household_id
        && locate(tx, Entity::Household, h)?.is_none()
    {
        return Ok(rejected(
            seq,
            "not_found",
            "the visit's household does not exist on the server",
        ));
    }
    let server_seq = next_seq(tx)?;
    tx.prepare_cached("INSERT INTO visits (id, village_code, seq, body) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![
            visit.id,
            visit.village_code,
            server_seq as i64,
            serde_json::to_string(visit)?
        ])?;
    for a in &visit.attachments {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO visit_attachments (visit_id, attachment_id, hash_algorithm, content_hash, size_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            visit.id,
            a.id,
            a.hash_algorithm.as_str(),
            a.content_hash,
            a.size_bytes as i64
        ])?;
    }
    append_feed(
        tx,
        server_seq,
        &visit.village_code,
        &ctx.auth.device_id,
        &FeedItem::Visit {
            visit: Box::new(visit.clone()),
        },
    )?;
    Ok(applied(seq, Outcome::Applied, server_seq, None, None))
}

/// What is wrong with a visit's attachment list, if anything.
fn attachments_problem(visit: &VisitRecord) -> Option<&'static str> {
    if visit.attachments.len() > MAX_VISIT_ATTACHMENTS {
        return Some("a visit names too many attachments");
    }
    for a in &visit.attachments {
        if a.id.is_empty() || a.id.len() > 64 || a.field_path.len() > 256 {
            return Some("an attachment needs an id and a field");
        }
        if !matches!(a.kind.as_str(), "photo" | "signature") {
            return Some("an attachment is a photo or a signature");
        }
        if !is_hex_digest(&a.content_hash) {
            return Some("an attachment's content hash must be a lowercase hex digest");
        }
        if a.size_bytes == 0 || a.size_bytes > MAX_CONTENT_BYTES {
            return Some("an attachment's size is out of bounds");
        }
    }
    None
}

fn record_states(tx: &Transaction<'_>, village: &str) -> Result<Vec<RecordState>> {
    let mut records: BTreeMap<(Entity, String), RecordState> = BTreeMap::new();
    let mut stmt =
        tx.prepare_cached("SELECT entity, id, household_id FROM records WHERE village_code = ?1")?;
    for row in stmt.query_map([village], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })? {
        let (entity, id, household_id) = row?;
        let entity = Entity::parse(&entity)
            .ok_or_else(|| ServerError::Storage("unknown entity stored".into()))?;
        records.insert(
            (entity, id.clone()),
            RecordState {
                entity,
                id,
                household_id,
                village_code: village.to_owned(),
                fields: BTreeMap::new(),
            },
        );
    }
    let mut stmt = tx.prepare_cached(
        "SELECT f.entity, f.id, f.field, f.value, f.version FROM fields f
         JOIN records r ON r.entity = f.entity AND r.id = f.id WHERE r.village_code = ?1",
    )?;
    for row in stmt.query_map([village], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })? {
        let (entity, id, field, value, version) = row?;
        let Some(entity) = Entity::parse(&entity) else {
            continue;
        };
        if let Some(rec) = records.get_mut(&(entity, id)) {
            rec.fields.insert(
                field,
                FieldValue {
                    value: serde_json::from_str(&value)?,
                    version: version as u64,
                },
            );
        }
    }
    Ok(records.into_values().collect())
}

impl crate::repo::Transactions for SqliteStorage {
    fn read_tx(&self, f: &mut dyn FnMut(&mut dyn crate::repo::Tx) -> Result<()>) -> Result<()> {
        self.read(|tx| f(&mut SqliteTx(tx)))
    }

    fn write_tx(&self, f: &mut dyn FnMut(&mut dyn crate::repo::Tx) -> Result<()>) -> Result<()> {
        self.write(|tx| f(&mut SqliteTx(tx)))
    }
}

impl Storage for SqliteStorage {
    fn create_user(&self, user: &UserInfo, now: DateTime<Utc>) -> Result<()> {
        self.write(|tx| service::admin::create_user(&mut SqliteTx(tx), user, now))
    }

    fn set_areas(&self, user_id: &str, areas: &[String]) -> Result<()> {
        self.write(|tx| service::admin::set_areas(&mut SqliteTx(tx), user_id, areas))
    }

    fn users(&self) -> Result<Vec<UserInfo>> {
        self.read(|tx| service::admin::users(&mut SqliteTx(tx)))
    }

    fn issue_enrollment(
        &self,
        user_id: &str,
        valid_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<String> {
        self.write(|tx| {
            service::admin::issue_enrollment(&mut SqliteTx(tx), user_id, valid_for, now)
        })
    }

    fn revoke_device(&self, device_id: &str, now: DateTime<Utc>) -> Result<()> {
        self.write(|tx| service::admin::revoke_device(&mut SqliteTx(tx), device_id, now))
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        self.read(|tx| service::admin::devices(&mut SqliteTx(tx)))
    }

    fn publish_form(&self, definition_json: &str, now: DateTime<Utc>) -> Result<(String, u32)> {
        self.write(|tx| service::catalog::publish_form(&mut SqliteTx(tx), definition_json, now))
    }

    fn publish_code_list(&self, list: &CodeList, now: DateTime<Utc>) -> Result<()> {
        self.write(|tx| service::catalog::publish_code_list(&mut SqliteTx(tx), list, now))
    }

    fn attachment_status(
        &self,
        auth: &DeviceAuth,
        algorithm: HashAlgorithm,
        contents: &[ContentRef],
        now: DateTime<Utc>,
    ) -> Result<Vec<ContentState>> {
        service::attachments::status(self, self.blobs.as_ref(), auth, algorithm, contents, now)
    }

    fn append_attachment(
        &self,
        auth: &DeviceAuth,
        key: &ContentKey,
        size: u64,
        offset: u64,
        bytes: &[u8],
        now: DateTime<Utc>,
    ) -> Result<ContentState> {
        let blobs = self.blobs.as_ref();
        service::attachments::append(self, blobs, auth, key, size, offset, bytes, now)
    }

    fn attachment_content(&self, auth: &DeviceAuth, key: &ContentKey) -> Result<Vec<u8>> {
        service::attachments::content(self, self.blobs.as_ref(), auth, key)
    }

    fn visits_awaiting_attachments(&self) -> Result<Vec<String>> {
        service::attachments::awaiting(self)
    }

    fn stats(&self) -> Result<Stats> {
        self.read(|tx| service::catalog::stats(&mut SqliteTx(tx)))
    }

    fn enroll(
        &self,
        enrollment_token: &str,
        device_name: &str,
        now: DateTime<Utc>,
    ) -> Result<Enrolled> {
        self.write(|tx| {
            service::access::enroll(&mut SqliteTx(tx), enrollment_token, device_name, now)
        })
    }

    fn authenticate(&self, device_token: &str, now: DateTime<Utc>) -> Result<DeviceAuth> {
        self.read(|tx| service::access::authenticate(&mut SqliteTx(tx), device_token, now, false))
    }

    fn authenticate_for_audit(&self, device_token: &str, now: DateTime<Utc>) -> Result<DeviceAuth> {
        self.read(|tx| service::access::authenticate(&mut SqliteTx(tx), device_token, now, true))
    }

    fn request_wipe(&self, device_id: &str, now: DateTime<Utc>) -> Result<()> {
        self.write(|tx| service::admin::request_wipe(&mut SqliteTx(tx), device_id, now))
    }

    fn upload_audit(
        &self,
        auth: &DeviceAuth,
        request: &AuditUploadRequest,
        now: DateTime<Utc>,
    ) -> Result<AuditUploadResponse> {
        self.write(|tx| service::audit::upload(&mut SqliteTx(tx), auth, request, now))
    }

    fn device_audit(&self, device_id: &str) -> Result<Vec<AuditEntry>> {
        self.read(|tx| service::audit::device_audit(&mut SqliteTx(tx), device_id))
    }

    fn verify_audit(&self) -> Result<Vec<String>> {
        self.read(|tx| service::audit::verify(&mut SqliteTx(tx)))
    }

    fn catalog(&self, request: &CatalogRequest) -> Result<(Vec<Json>, Vec<CodeList>)> {
        self.read(|tx| service::catalog::catalog(&mut SqliteTx(tx), request))
    }

    fn push(
        &self,
        auth: &DeviceAuth,
        changes: &[Change],
        device_now: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Ack>> {
        let offset = device_now - now;
        let ctx = PushContext {
            auth,
            received_at: ts(now),
            skewed: offset.abs() > CLOCK_SKEW_LIMIT,
        };
        self.write(|tx| {
            let mut acks = Vec::with_capacity(changes.len());
            for change in changes {
                let previous: Option<String> = tx
                    .prepare_cached(
                        "SELECT ack FROM device_changes WHERE device_id = ?1 AND seq = ?2",
                    )?
                    .query_row(params![auth.device_id, change.seq as i64], |r| r.get(0))
                    .optional()?;
                if let Some(ack) = previous {
                    // A re-push after a lost acknowledgement: the same answer, nothing applied twice.
                    acks.push(serde_json::from_str(&ack)?);
                    continue;
                }
                let ack = apply_change(tx, &ctx, change)?;
                tx.prepare_cached(
                    "INSERT INTO device_changes (device_id, seq, ack) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![
                    auth.device_id,
                    change.seq as i64,
                    serde_json::to_string(&ack)?
                ])?;
                acks.push(ack);
            }
            tx.prepare_cached(
                "UPDATE devices SET last_seen_at = ?2, clock_offset_ms = ?3 WHERE id = ?1",
            )?
            .execute(params![auth.device_id, ts(now), offset.num_milliseconds()])?;
            Ok(acks)
        })
    }

    fn pull(
        &self,
        auth: &DeviceAuth,
        request: &PullRequest,
        now: DateTime<Utc>,
    ) -> Result<PullResponse> {
        let limit = request.limit.clamp(1, MAX_PULL_LIMIT) as usize;
        self.read(|tx| {
            let max: i64 = tx.query_row("SELECT coalesce(max(seq), 0) FROM feed", [], |r| r.get(0))?;
            let mut entries = Vec::new();
            let mut cursors = BTreeMap::new();
            let mut more = false;
            for area in &auth.user.areas {
                let cursor = request.cursors.get(area).copied().unwrap_or(0);
                if more {
                    cursors.insert(area.clone(), cursor);
                    continue;
                }
                let room = limit - entries.len();
                let mut stmt = tx.prepare_cached(
                    "SELECT seq, village_code, payload FROM feed
                     WHERE seq > ?1 AND seq <= ?2 AND village_code >= ?3 AND village_code < ?4
                       AND (origin_device != ?5 OR kind = 'conflict')
                     ORDER BY seq LIMIT ?6",
                )?;
                let rows = stmt
                    .query_map(
                        params![cursor as i64, max, area, area_upper(area), auth.device_id, room as i64],
                        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)),
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let full = rows.len() == room;
                let last = rows.last().map(|r| r.0);
                for (seq, village_code, payload) in rows {
                    entries.push(FeedEntry { seq: seq as u64, village_code, item: serde_json::from_str(&payload)? });
                }
                if full {
                    more = true;
                    cursors.insert(area.clone(), last.unwrap_or(cursor as i64) as u64);
                } else {
                    cursors.insert(area.clone(), max.max(cursor as i64) as u64);
                }
            }
            let mut checksums = BTreeMap::new();
            if !more {
                for area in &auth.user.areas {
                    let mut stmt = tx.prepare_cached("SELECT village_code, sum FROM checksums WHERE village_code >= ?1 AND village_code < ?2")?;
                    for row in stmt.query_map(params![area, area_upper(area)], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                        let (village, sum) = row?;
                        checksums.insert(village, sum as u64);
                    }
                }
            }
            Ok(PullResponse { protocol: PROTOCOL_VERSION, server_time: ts(now), entries, cursors, more, checksums })
        })
    }

    fn snapshot(
        &self,
        auth: &DeviceAuth,
        village_code: &str,
        now: DateTime<Utc>,
    ) -> Result<SnapshotResponse> {
        if !auth.covers(village_code) {
            return Err(ServerError::Forbidden(
                "the village is outside the user's areas".into(),
            ));
        }
        self.read(|tx| {
            let records = record_states(tx, village_code)?;
            let mut stmt = tx.prepare_cached(
                "SELECT info FROM conflicts WHERE village_code = ?1 AND status = 'open'",
            )?;
            let conflicts = stmt
                .query_map([village_code], |r| r.get::<_, String>(0))?
                .map(|i| Ok(serde_json::from_str(&i?)?))
                .collect::<Result<Vec<ConflictInfo>>>()?;
            let checksum: Option<i64> = tx
                .query_row(
                    "SELECT sum FROM checksums WHERE village_code = ?1",
                    [village_code],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(SnapshotResponse {
                protocol: PROTOCOL_VERSION,
                server_time: ts(now),
                records,
                conflicts,
                checksum: checksum.unwrap_or(0) as u64,
            })
        })
    }

    fn conflicts(&self, auth: &DeviceAuth) -> Result<Vec<ConflictInfo>> {
        self.read(|tx| {
            let mut out = Vec::new();
            for area in &auth.user.areas {
                let mut stmt = tx.prepare_cached(
                    "SELECT info FROM conflicts WHERE status = 'open' AND village_code >= ?1 AND village_code < ?2 ORDER BY id",
                )?;
                for info in stmt.query_map(params![area, area_upper(area)], |r| r.get::<_, String>(0))? {
                    out.push(serde_json::from_str(&info?)?);
                }
            }
            Ok(out)
        })
    }

    fn resolve_conflict(
        &self,
        auth: &DeviceAuth,
        conflict_id: &str,
        value: &Json,
        now: DateTime<Utc>,
    ) -> Result<ConflictInfo> {
        if !auth.user.role.can_review() {
            return Err(ServerError::Forbidden(
                "only reviewers resolve conflicts here; coordinators resolve on their device"
                    .into(),
            ));
        }
        let ctx = PushContext {
            auth,
            received_at: ts(now),
            skewed: false,
        };
        self.write(|tx| {
            let info = load_conflict(tx, conflict_id)?
                .ok_or_else(|| ServerError::NotFound("conflict".into()))?;
            if !auth.covers(&info.village_code) {
                return Err(ServerError::Forbidden(
                    "the conflict is outside the user's areas".into(),
                ));
            }
            if info.status != ConflictStatus::Open {
                return Err(ServerError::bad(
                    "conflict_resolved",
                    "the conflict is already resolved",
                ));
            }
            // Reviewer resolutions are not device changes: sequence 0, never deduplicated.
            let ack = set_field(
                tx,
                &ctx,
                0,
                &ts(now),
                info.entity,
                &info.entity_id,
                &info.field,
                value,
                info.version,
                None,
            )?;
            let resolved = ack
                .conflict
                .filter(|c| c.status == ConflictStatus::Resolved)
                .ok_or_else(|| {
                    ServerError::bad(
                        "resolution_refused",
                        ack.message
                            .unwrap_or_else(|| "the resolution was not accepted".into()),
                    )
                })?;
            service::server_audit::append(
                &mut SqliteTx(tx),
                now,
                &auth.user.id,
                "conflict_resolved",
                Some(("conflict", conflict_id)),
                serde_json::json!({"field": info.field}),
            )?;
            Ok(resolved)
        })
    }

    fn record(&self, entity: Entity, id: &str) -> Result<Option<RecordState>> {
        self.read(|tx| {
            let Some((village, _)) = locate(tx, entity, id)? else {
                return Ok(None);
            };
            Ok(record_states(tx, &village)?
                .into_iter()
                .find(|r| r.entity == entity && r.id == id))
        })
    }
}
