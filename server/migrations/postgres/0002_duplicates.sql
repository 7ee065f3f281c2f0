-- Members sharing a resident ID: found through an index on the member ID field, and the pairs
-- flagged for the reviewers whose areas cover both households.
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
);
