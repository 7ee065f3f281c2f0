-- The provincial server's schema on PostgreSQL: the same tables as the SQLite storage
-- (server/src/sqlite/mod.rs), in PostgreSQL's types; village codes compare bytewise (COLLATE "C")
-- as in SQLite, so an area prefix is an index range. Applied once, in file order, by
-- `PgStorage::open`; a released file is never edited (changes come as a new file).

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
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL REFERENCES users (id),
    name              TEXT NOT NULL,
    token_hash        TEXT NOT NULL UNIQUE,
    token_expires_at  TEXT NOT NULL,
    enrolled_at       TEXT NOT NULL,
    revoked_at        TEXT,
    last_seen_at      TEXT,
    clock_offset_ms   BIGINT,
    wipe_requested_at TEXT,
    wiped_at          TEXT,
    audit_alert       TEXT
);
-- Households and members, and each field with the server sequence number that set it.
CREATE TABLE records (
    entity       TEXT NOT NULL,
    id           TEXT NOT NULL,
    household_id TEXT,
    village_code TEXT COLLATE "C" NOT NULL,
    created_seq  BIGINT NOT NULL,
    PRIMARY KEY (entity, id)
);
CREATE INDEX records_by_village ON records (village_code);
CREATE TABLE fields (
    entity        TEXT NOT NULL,
    id            TEXT NOT NULL,
    field         TEXT NOT NULL,
    value         TEXT NOT NULL,
    version       BIGINT NOT NULL,
    writer_device TEXT NOT NULL,
    writer_seq    BIGINT NOT NULL,
    writer_user   TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    device_time   TEXT NOT NULL,
    skewed        BOOLEAN NOT NULL,
    conflict_id   TEXT,
    PRIMARY KEY (entity, id, field)
);
CREATE TABLE conflicts (
    id           TEXT PRIMARY KEY,
    village_code TEXT COLLATE "C" NOT NULL,
    status       TEXT NOT NULL,
    info         TEXT NOT NULL
);
CREATE INDEX conflicts_open ON conflicts (village_code) WHERE status = 'open';
CREATE TABLE visits (
    id           TEXT PRIMARY KEY,
    village_code TEXT COLLATE "C" NOT NULL,
    seq          BIGINT NOT NULL,
    body         TEXT NOT NULL
);
-- Everything devices pull, in server receive order. `seq` is the server sequence number.
CREATE TABLE feed (
    seq           BIGINT PRIMARY KEY,
    village_code  TEXT COLLATE "C" NOT NULL,
    origin_device TEXT NOT NULL,
    kind          TEXT NOT NULL,
    payload       TEXT NOT NULL
);
CREATE INDEX feed_by_village ON feed (village_code, seq);
-- Idempotency: the answer given to each (device, change), returned again on a re-push.
CREATE TABLE device_changes (
    device_id TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    ack       TEXT NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE TABLE checksums (
    village_code TEXT COLLATE "C" PRIMARY KEY,
    sum          BIGINT NOT NULL
);
CREATE TABLE forms (
    form_id      TEXT NOT NULL,
    version      BIGINT NOT NULL,
    definition   TEXT NOT NULL,
    published_at TEXT NOT NULL,
    PRIMARY KEY (form_id, version)
);
CREATE TABLE code_lists (
    name         TEXT NOT NULL,
    version      BIGINT NOT NULL,
    entries      TEXT NOT NULL,
    published_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
-- The audit trails: each device's chain as uploaded, and the server's own. Append-only.
CREATE TABLE device_audit (
    device_id   TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    chain_hash  TEXT NOT NULL,
    entry       TEXT NOT NULL,
    hash        TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE TABLE server_audit (
    seq   BIGINT PRIMARY KEY,
    entry TEXT NOT NULL,
    hash  TEXT NOT NULL
);
CREATE FUNCTION zoufang_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only';
END;
$$;
CREATE TRIGGER device_audit_append_only BEFORE UPDATE OR DELETE ON device_audit
    FOR EACH ROW EXECUTE FUNCTION zoufang_append_only();
CREATE TRIGGER server_audit_append_only BEFORE UPDATE OR DELETE ON server_audit
    FOR EACH ROW EXECUTE FUNCTION zoufang_append_only();
-- Attachments: which contents each visit names, and the contents held whole and verified.
CREATE TABLE visit_attachments (
    visit_id       TEXT NOT NULL REFERENCES visits (id),
    attachment_id  TEXT NOT NULL,
    hash_algorithm TEXT NOT NULL,
    content_hash   TEXT NOT NULL,
    size_bytes     BIGINT NOT NULL,
    PRIMARY KEY (visit_id, attachment_id)
);
CREATE INDEX visit_attachments_by_content ON visit_attachments (hash_algorithm, content_hash);
CREATE TABLE contents (
    hash_algorithm TEXT NOT NULL,
    content_hash   TEXT NOT NULL,
    size_bytes     BIGINT NOT NULL,
    stored_at      TEXT NOT NULL,
    PRIMARY KEY (hash_algorithm, content_hash)
);
