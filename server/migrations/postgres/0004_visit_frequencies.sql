-- How often a household of each assistance category is visited (the due-date rule), and the
-- visits of a household found by index (the rule and merges read them per household).
CREATE TABLE visit_frequencies (
    category   TEXT PRIMARY KEY,
    days       BIGINT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX visits_by_household ON visits ((body::json ->> 'household_id'));
