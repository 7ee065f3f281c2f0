-- How often a household of each assistance category is visited (the due-date rule).
CREATE TABLE visit_frequencies (
    category   TEXT PRIMARY KEY,
    days       BIGINT NOT NULL,
    updated_at TEXT NOT NULL
);
