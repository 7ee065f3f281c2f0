//! Records and their fields, the feed and checksums, conflicts, visits and the devices'
//! acknowledged changes, in PostgreSQL.

use zoufang_protocol::messages::{
    Ack, ConflictInfo, ConflictStatus, Entity, FeedEntry, FeedItem, RecordState, VisitRecord,
};

use super::PgTx;
use crate::repo::{
    ConflictsRepo, DeviceChangesRepo, FeedRepo, RecordsRepo, StoredField, StoredWriter, VisitsRepo,
    area_upper, assemble_records, feed_kind, from_db, to_db,
};
use crate::storage::Result;

impl RecordsRepo for PgTx<'_, '_> {
    fn record_created(&mut self, entity: Entity, id: &str) -> Result<Option<u64>> {
        Ok(self
            .query_opt(
                "SELECT created_seq FROM records WHERE entity = $1 AND id = $2",
                &[&entity.as_str(), &id],
            )?
            .map(|r| from_db(r.get(0))))
    }

    fn locate(&mut self, entity: Entity, id: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .query_opt(
                "SELECT village_code, coalesce(household_id, id) FROM records WHERE entity = $1 AND id = $2",
                &[&entity.as_str(), &id],
            )?
            .map(|r| (r.get(0), r.get(1))))
    }

    fn insert_record(
        &mut self,
        entity: Entity,
        id: &str,
        household_id: Option<&str>,
        village: &str,
        created_seq: u64,
    ) -> Result<()> {
        self.execute(
            "INSERT INTO records (entity, id, household_id, village_code, created_seq) VALUES ($1, $2, $3, $4, $5)",
            &[&entity.as_str(), &id, &household_id, &village, &to_db(created_seq)],
        )?;
        Ok(())
    }

    fn field(&mut self, entity: Entity, id: &str, field: &str) -> Result<Option<StoredField>> {
        self
            .query_opt(
                "SELECT value, version, writer_device, writer_seq, writer_user, received_at, device_time, skewed, conflict_id
                 FROM fields WHERE entity = $1 AND id = $2 AND field = $3",
                &[&entity.as_str(), &id, &field],
            )?
            .map(|r| {
                Ok(StoredField {
                    value: serde_json::from_str(r.get(0))?,
                    version: from_db(r.get(1)),
                    writer: StoredWriter {
                        device: r.get(2),
                        seq: from_db(r.get(3)),
                        user: r.get(4),
                        received_at: r.get(5),
                        device_time: r.get(6),
                        skewed: r.get(7),
                    },
                    conflict_id: r.get(8),
                })
            })
            .transpose()
    }

    fn put_field(&mut self, entity: Entity, id: &str, field: &str, f: &StoredField) -> Result<()> {
        let w = &f.writer;
        self.execute(
            "INSERT INTO fields (entity, id, field, value, version, writer_device, writer_seq, writer_user, received_at, device_time, skewed, conflict_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (entity, id, field) DO UPDATE SET value = $4, version = $5, writer_device = $6, writer_seq = $7,
                 writer_user = $8, received_at = $9, device_time = $10, skewed = $11, conflict_id = $12",
            &[
                &entity.as_str(),
                &id,
                &field,
                &f.value.to_string(),
                &to_db(f.version),
                &w.device,
                &to_db(w.seq),
                &w.user,
                &w.received_at,
                &w.device_time,
                &w.skewed,
                &f.conflict_id,
            ],
        )?;
        Ok(())
    }

    fn village_records(&mut self, village: &str) -> Result<Vec<RecordState>> {
        let records = self
            .query(
                "SELECT entity, id, household_id FROM records WHERE village_code = $1",
                &[&village],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let fields = self
            .query(
                "SELECT f.entity, f.id, f.field, f.value, f.version FROM fields f
                 JOIN records r ON r.entity = f.entity AND r.id = f.id WHERE r.village_code = $1",
                &[&village],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), from_db(r.get(4))))
            .collect();
        assemble_records(village, records, fields)
    }
}

impl FeedRepo for PgTx<'_, '_> {
    fn feed_head(&mut self) -> Result<u64> {
        if let Some(head) = self.held.feed_head {
            return Ok(head);
        }
        let row = self.query_one("SELECT coalesce(max(seq), 0)::BIGINT FROM feed", &[])?;
        let head = from_db(row.get(0));
        self.held.feed_head = Some(head);
        Ok(head)
    }

    fn append_feed(
        &mut self,
        seq: u64,
        village: &str,
        origin: &str,
        item: &FeedItem,
    ) -> Result<()> {
        let kind = feed_kind(item);
        self.execute(
            "INSERT INTO feed (seq, village_code, origin_device, kind, payload) VALUES ($1, $2, $3, $4, $5)",
            &[&to_db(seq), &village, &origin, &kind, &serde_json::to_string(item)?],
        )?;
        self.held.feed_head = Some(seq);
        Ok(())
    }

    fn feed_page(
        &mut self,
        area: &str,
        after: u64,
        through: u64,
        device: &str,
        limit: usize,
    ) -> Result<Vec<FeedEntry>> {
        self.query(
            "SELECT seq, village_code, payload FROM feed
                 WHERE seq > $1 AND seq <= $2 AND village_code >= $3 AND village_code < $4
                   AND (origin_device != $5 OR kind = 'conflict')
                 ORDER BY seq LIMIT $6",
            &[
                &to_db(after),
                &to_db(through),
                &area,
                &area_upper(area),
                &device,
                &to_db(limit as u64),
            ],
        )?
        .iter()
        .map(|r| {
            Ok(FeedEntry {
                seq: from_db(r.get(0)),
                village_code: r.get(1),
                item: zoufang_protocol::feed_entry::decode_item(r.get(2))?,
            })
        })
        .collect()
    }

    fn checksum(&mut self, village: &str) -> Result<u64> {
        if let Some(sum) = self.held.checksums.get(village) {
            return Ok(*sum);
        }
        // Stored as the i64 with the same bits: the sum wraps.
        let sum = self
            .query_opt(
                "SELECT sum FROM checksums WHERE village_code = $1",
                &[&village],
            )?
            .map_or(0, |r| r.get::<_, i64>(0) as u64);
        self.held.checksums.insert(village.to_owned(), sum);
        Ok(sum)
    }

    fn set_checksum(&mut self, village: &str, sum: u64) -> Result<()> {
        self.held.checksums.insert(village.to_owned(), sum);
        self.held.changed.insert(village.to_owned());
        Ok(())
    }

    fn checksums_in(&mut self, area: &str) -> Result<Vec<(String, u64)>> {
        self.flush()?;
        Ok(self
            .query(
                "SELECT village_code, sum FROM checksums WHERE village_code >= $1 AND village_code < $2",
                &[&area, &area_upper(area)],
            )?
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }
}

impl ConflictsRepo for PgTx<'_, '_> {
    fn conflict(&mut self, id: &str) -> Result<Option<ConflictInfo>> {
        self.query_opt("SELECT info FROM conflicts WHERE id = $1", &[&id])?
            .map(|r| Ok(serde_json::from_str(r.get(0))?))
            .transpose()
    }

    fn save_conflict(&mut self, c: &ConflictInfo) -> Result<()> {
        let status = match c.status {
            ConflictStatus::Open => "open",
            ConflictStatus::Resolved => "resolved",
        };
        self.execute(
            "INSERT INTO conflicts (id, village_code, status, info) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET status = $3, info = $4",
            &[&c.id, &c.village_code, &status, &serde_json::to_string(c)?],
        )?;
        Ok(())
    }

    fn open_conflicts_in(&mut self, area: &str) -> Result<Vec<ConflictInfo>> {
        self
            .query(
                "SELECT info FROM conflicts WHERE status = 'open' AND village_code >= $1 AND village_code < $2 ORDER BY id",
                &[&area, &area_upper(area)],
            )?
            .iter()
            .map(|r| Ok(serde_json::from_str(r.get(0))?))
            .collect()
    }
}

impl VisitsRepo for PgTx<'_, '_> {
    fn visit(&mut self, id: &str) -> Result<Option<(String, u64, VisitRecord)>> {
        self.query_opt(
            "SELECT village_code, seq, body FROM visits WHERE id = $1",
            &[&id],
        )?
        .map(|r| Ok((r.get(0), from_db(r.get(1)), serde_json::from_str(r.get(2))?)))
        .transpose()
    }

    fn insert_visit(&mut self, visit: &VisitRecord, seq: u64, device_id: &str) -> Result<()> {
        self.execute(
            "INSERT INTO visits (id, village_code, seq, body) VALUES ($1, $2, $3, $4)",
            &[
                &visit.id,
                &visit.village_code,
                &to_db(seq),
                &serde_json::to_string(visit)?,
            ],
        )?;
        for a in &visit.attachments {
            self.execute(
                "INSERT INTO visit_attachments (visit_id, attachment_id, hash_algorithm, content_hash, size_bytes, pushed_by)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[&visit.id, &a.id, &a.hash_algorithm.as_str(), &a.content_hash, &to_db(a.size_bytes), &device_id],
            )?;
        }
        Ok(())
    }

    fn update_visit(&mut self, visit: &VisitRecord, seq: u64) -> Result<()> {
        self.execute(
            "UPDATE visits SET body = $2, seq = $3 WHERE id = $1",
            &[&visit.id, &serde_json::to_string(visit)?, &to_db(seq)],
        )?;
        Ok(())
    }
}

impl DeviceChangesRepo for PgTx<'_, '_> {
    fn previous_ack(&mut self, device_id: &str, seq: u64) -> Result<Option<Ack>> {
        self.query_opt(
            "SELECT ack FROM device_changes WHERE device_id = $1 AND seq = $2",
            &[&device_id, &to_db(seq)],
        )?
        .map(|r| Ok(serde_json::from_str(r.get(0))?))
        .transpose()
    }

    fn record_ack(&mut self, device_id: &str, seq: u64, ack: &Ack) -> Result<()> {
        self.execute(
            "INSERT INTO device_changes (device_id, seq, ack) VALUES ($1, $2, $3)",
            &[&device_id, &to_db(seq), &serde_json::to_string(ack)?],
        )?;
        Ok(())
    }

    fn device_seen(&mut self, device_id: &str, at: &str, clock_offset_ms: i64) -> Result<()> {
        self.execute(
            "UPDATE devices SET last_seen_at = $2, clock_offset_ms = $3 WHERE id = $1",
            &[&device_id, &at, &clock_offset_ms],
        )?;
        Ok(())
    }
}
