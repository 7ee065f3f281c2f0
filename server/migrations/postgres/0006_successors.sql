-- Re-enrolment: a store enrolled again (its token expired offline) gets a device that succeeds
-- the old one. The old one's token stops working; the new one continues its lineage (change
-- numbers, audit chain, uploads). lineage_id NULL is the device's own id.
ALTER TABLE devices ADD COLUMN lineage_id TEXT;
ALTER TABLE devices ADD COLUMN predecessor_id TEXT;
ALTER TABLE devices ADD COLUMN successor_id TEXT;
