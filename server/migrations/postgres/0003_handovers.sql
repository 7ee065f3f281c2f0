-- Reassignment: the areas a user held until an administrator changed them, and the changes
-- their phones still sent for those villages, kept for the villages' reviewers.
CREATE TABLE former_areas (
    user_id TEXT NOT NULL,
    area    TEXT NOT NULL,
    until   TEXT NOT NULL,
    PRIMARY KEY (user_id, area)
);
CREATE TABLE handovers (
    device_id    TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    user_id      TEXT NOT NULL,
    village_code TEXT NOT NULL,
    change       TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX handovers_by_village ON handovers (village_code);
