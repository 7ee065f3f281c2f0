//! Numbered schema migrations, applied in order from an empty file. A migration is never edited
//! once released: changes come as a new migration, so every store upgrades the same way.

use rusqlite_migration::{M, Migrations};

/// The migrations, in order; `user_version` records how many are applied.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(V1),
        M::up(V2),
        M::up(V3),
        M::up(V4),
        M::up(V5),
        M::up(V6),
        M::up(V7),
        M::up(V8),
    ])
}

/// Schema version this build writes.
pub const SCHEMA_VERSION: i64 = 8;

const V1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Several versions of a form live side by side: a visit keeps the version it was started with.
CREATE TABLE form_definitions (
    form_id      TEXT NOT NULL,
    version      INTEGER NOT NULL,
    definition   TEXT NOT NULL,
    installed_at TEXT NOT NULL,
    PRIMARY KEY (form_id, version)
) WITHOUT ROWID;

CREATE TABLE code_lists (
    name         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    entries      TEXT NOT NULL,
    installed_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;

-- A household: the indexed columns are copies of fields kept for the coordinator's queries;
-- `fields` (JSON) is the record itself, edited field by field.
CREATE TABLE households (
    id             TEXT PRIMARY KEY,
    village_code   TEXT NOT NULL,
    head_name      TEXT,
    next_visit_due TEXT,
    fields         TEXT NOT NULL DEFAULT '{}',
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX households_by_village ON households (village_code, head_name);
CREATE INDEX households_by_due ON households (next_visit_due) WHERE next_visit_due IS NOT NULL;

CREATE TABLE members (
    id           TEXT PRIMARY KEY,
    household_id TEXT NOT NULL REFERENCES households (id),
    name         TEXT,
    id_number    TEXT,
    relationship TEXT,
    fields       TEXT NOT NULL DEFAULT '{}',
    removed      INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX members_by_household ON members (household_id);
CREATE INDEX members_by_name ON members (name) WHERE removed = 0;
CREATE INDEX members_by_id_number ON members (id_number) WHERE removed = 0;

CREATE TABLE visits (
    id           TEXT PRIMARY KEY,
    household_id TEXT REFERENCES households (id),
    form_id      TEXT NOT NULL,
    form_version INTEGER NOT NULL,
    visit_type   TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('draft', 'completed', 'signed', 'void')),
    answers      TEXT NOT NULL,
    author       TEXT NOT NULL,
    revision_of  TEXT REFERENCES visits (id),
    void_reason  TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    completed_at TEXT,
    signed_at    TEXT,
    voided_at    TEXT,
    FOREIGN KEY (form_id, form_version) REFERENCES form_definitions (form_id, version)
);
CREATE INDEX visits_by_household ON visits (household_id, created_at);
-- Not on updated_at: an autosave must not rewrite an index page.
CREATE INDEX visits_by_author_status ON visits (author, status);

-- Metadata of photos and signatures; the files themselves live next to the store.
CREATE TABLE attachments (
    id           TEXT PRIMARY KEY,
    visit_id     TEXT NOT NULL REFERENCES visits (id),
    field_path   TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('photo', 'signature')),
    content_hash TEXT,
    size_bytes   INTEGER,
    mime_type    TEXT,
    metadata     TEXT NOT NULL DEFAULT '{}',
    created_at   TEXT NOT NULL
);
CREATE INDEX attachments_by_visit ON attachments (visit_id);

-- Every change, written in the same transaction as the change itself: the sync engine builds
-- its outbox from this log. `seq` orders changes; entries are only ever appended, and purges
-- remove the oldest, so the rowid never goes back. No secondary index: each autosave writes
-- as few pages as possible.
CREATE TABLE change_log (
    seq       INTEGER PRIMARY KEY,
    entity    TEXT NOT NULL CHECK (entity IN ('household', 'member', 'visit', 'attachment', 'form', 'code_list')),
    entity_id TEXT NOT NULL,
    op        TEXT NOT NULL,
    field     TEXT,
    value     TEXT,
    author    TEXT NOT NULL,
    at        TEXT NOT NULL
);
"#;

/// Sync: the server's view of each record (for bases and checksums), the outbox, conflicts,
/// rejected changes and per-village checksums. Columns are added, no data is rewritten.
const V2: &str = r#"
ALTER TABLE households ADD COLUMN server_state TEXT NOT NULL DEFAULT '{}';
ALTER TABLE members ADD COLUMN server_state TEXT NOT NULL DEFAULT '{}';
ALTER TABLE visits ADD COLUMN synced_seq INTEGER;

-- Changes waiting for the server's acknowledgement. `seq` is the per-device change number
-- (AUTOINCREMENT: never reused, even after the newest entry is deleted on its ack).
CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    entity      TEXT,
    entity_id   TEXT,
    field       TEXT,
    hlc         TEXT NOT NULL,
    device_time TEXT NOT NULL,
    change      TEXT NOT NULL
);
CREATE INDEX outbox_by_record ON outbox (entity, entity_id) WHERE entity IS NOT NULL;

CREATE TABLE sync_conflicts (
    id           TEXT PRIMARY KEY,
    village_code TEXT NOT NULL,
    status       TEXT NOT NULL,
    info         TEXT NOT NULL
);
CREATE TABLE rejected_changes (
    seq         INTEGER PRIMARY KEY,
    change      TEXT NOT NULL,
    code        TEXT NOT NULL,
    message     TEXT NOT NULL,
    rejected_at TEXT NOT NULL
);
CREATE TABLE scope_checksums (
    village_code TEXT PRIMARY KEY,
    sum          INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// The audit trail: append-only (triggers refuse edits and deletions; only the upload mark
/// moves) and hash-chained (see `zoufang_protocol::audit`).
const V3: &str = r#"
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    action    TEXT NOT NULL,
    entity    TEXT,
    entity_id TEXT,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL,
    uploaded  INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER audit_log_append_only_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_append_only_update
BEFORE UPDATE OF seq, at, user_id, action, entity, entity_id, detail, prev_hash, hash ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#;

/// Attachment contents, content-addressed, inside the store: they share its encryption (either
/// suite), its transactions (a photo and the answer naming it commit together) and its crash
/// safety, and a content no attachment names is deleted in the same transaction.
const V4: &str = r#"
CREATE TABLE blobs (
    hash       TEXT NOT NULL UNIQUE,
    size       INTEGER NOT NULL,
    bytes      BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX attachments_by_content ON attachments (content_hash);
"#;

/// Upload state: a content is pending until the server confirmed it holds it whole and verified.
/// A table of its own: SQLite rewrites a whole record on any update, and a 5 MB photo's record
/// is 5 MB. How far a partial upload got is the server's to say, never guessed here.
const V5: &str = r#"
CREATE TABLE uploaded_contents (
    hash        TEXT PRIMARY KEY,
    uploaded_at TEXT NOT NULL
) WITHOUT ROWID;
"#;

/// The change log goes: nothing read it (sync has the outbox, accountability the audit trail)
/// and it kept a third copy of every typed value, written at every autosave.
const V6: &str = r#"
DROP TABLE change_log;
"#;

/// What a draft was prefilled from, per record field: the value and the server version the
/// phone knew when the visit was opened (JSON). Completion edits only what the coordinator
/// changed, on the version they saw; NULL for drafts opened before this schema.
///
/// Households carry a lifecycle status (a copy of their `status` field, for the due list and
/// searches); a member whose status is not `present` is `removed`.
const V7: &str = r#"
ALTER TABLE visits ADD COLUMN seen TEXT;
ALTER TABLE households ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
"#;

/// Per-sync costs that follow the batch, not the history. The trail's entries waiting for the
/// server get an index of their own (uploaded ones leave it), so finding, counting and marking
/// them no longer scans years of uploaded entries. The upload state of contents flips: the
/// contents *waiting* to go up are listed (and leave the list once the server holds them), so
/// a sync looks at those instead of every photo the phone ever kept.
const V8: &str = r#"
CREATE INDEX audit_pending ON audit_log (seq) WHERE uploaded = 0;
CREATE TABLE pending_contents (
    hash TEXT PRIMARY KEY
) WITHOUT ROWID;
INSERT INTO pending_contents (hash)
    SELECT hash FROM blobs WHERE hash NOT IN (SELECT hash FROM uploaded_contents);
DROP TABLE uploaded_contents;
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid_and_apply_from_empty() {
        assert!(migrations().validate().is_ok());
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        migrations().to_latest(&mut conn).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap();
        let tables: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        drop(stmt);
        assert_eq!(
            tables,
            [
                "attachments",
                "audit_log",
                "blobs",
                "code_lists",
                "form_definitions",
                "households",
                "members",
                "meta",
                "outbox",
                "pending_contents",
                "rejected_changes",
                "scope_checksums",
                "sync_conflicts",
                "visits"
            ]
        );
        // Applying again is a no-op.
        migrations().to_latest(&mut conn).unwrap();
    }
}
