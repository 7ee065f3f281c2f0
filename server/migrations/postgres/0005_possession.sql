-- Possession: which device pushed each visit naming a content, and which devices proved they
-- hold a content's bytes. References made before this migration keep no pusher (NULL) and stay
-- readable as they were. Plus the deployment's secrets (the possession nonces' key).
ALTER TABLE visit_attachments ADD COLUMN pushed_by TEXT;
CREATE TABLE content_holders (
    hash_algorithm TEXT NOT NULL,
    content_hash   TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    proven_at      TEXT NOT NULL,
    PRIMARY KEY (hash_algorithm, content_hash, device_id)
);
CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
