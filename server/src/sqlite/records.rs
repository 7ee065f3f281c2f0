//! Records and their fields, the feed and checksums, conflicts, visits and the devices'
//! acknowledged changes, in SQLite.

use rusqlite::{OptionalExtension, params};
use zoufang_protocol::messages::{
    Ack, ConflictInfo, ConflictStatus, Entity, FeedEntry, FeedItem, RecordState, VisitRecord,
};

use super::SqliteTx;
use crate::repo::{
    ConflictsRepo, DeviceChangesRepo, FeedRepo, RecordsRepo, StoredField, StoredWriter, VisitsRepo,
    area_upper, assemble_records, feed_kind, from_db, to_db,
};
use crate::storage::Result;

impl RecordsRepo for SqliteTx<'_, '_> {
    fn record_created(&mut self, entity: Entity, id: &str) -> Result<Option<u64>> {
        let created: Option<i64> = self
            .0
            .prepare_cached("SELECT created_seq FROM records WHERE entity = ?1 AND id = ?2")?
            .query_row(params![entity.as_str(), id], |r| r.get(0))
            .optional()?;
        Ok(created.map(from_db))
    }

    fn locate(&mut self, entity: Entity, id: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT village_code, coalesce(household_id, id) FROM records WHERE entity = ?1 AND id = ?2",
            )?
            .query_row(params![entity.as_str(), id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn insert_record(
        &mut self,
        entity: Entity,
        id: &str,
        household_id: Option<&str>,
        village: &str,
        created_seq: u64,
    ) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT INTO records (entity, id, household_id, village_code, created_seq) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![entity.as_str(), id, household_id, village, to_db(created_seq)])?;
        Ok(())
    }

    fn field(&mut self, entity: Entity, id: &str, field: &str) -> Result<Option<StoredField>> {
        let row = self
            .0
            .prepare_cached(
                "SELECT value, version, writer_device, writer_seq, writer_user, received_at, device_time, skewed, conflict_id
                 FROM fields WHERE entity = ?1 AND id = ?2 AND field = ?3",
            )?
            .query_row(params![entity.as_str(), id, field], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    from_db(r.get(1)?),
                    StoredWriter {
                        device: r.get(2)?,
                        seq: from_db(r.get(3)?),
                        user: r.get(4)?,
                        received_at: r.get(5)?,
                        device_time: r.get(6)?,
                        skewed: r.get(7)?,
                    },
                    r.get::<_, Option<String>>(8)?,
                ))
            })
            .optional()?;
        row.map(|(value, version, writer, conflict_id)| {
            Ok(StoredField {
                value: serde_json::from_str(&value)?,
                version,
                writer,
                conflict_id,
            })
        })
        .transpose()
    }

    fn put_field(&mut self, entity: Entity, id: &str, field: &str, f: &StoredField) -> Result<()> {
        let w = &f.writer;
        self.0
            .prepare_cached(
                "INSERT INTO fields (entity, id, field, value, version, writer_device, writer_seq, writer_user, received_at, device_time, skewed, conflict_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (entity, id, field) DO UPDATE SET value = ?4, version = ?5, writer_device = ?6, writer_seq = ?7,
                     writer_user = ?8, received_at = ?9, device_time = ?10, skewed = ?11, conflict_id = ?12",
            )?
            .execute(params![
                entity.as_str(),
                id,
                field,
                f.value.to_string(),
                to_db(f.version),
                w.device,
                to_db(w.seq),
                w.user,
                w.received_at,
                w.device_time,
                w.skewed,
                f.conflict_id
            ])?;
        Ok(())
    }

    fn village_records(&mut self, village: &str) -> Result<Vec<RecordState>> {
        let records = self
            .0
            .prepare_cached("SELECT entity, id, household_id FROM records WHERE village_code = ?1")?
            .query_map([village], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let fields = self
            .0
            .prepare_cached(
                "SELECT f.entity, f.id, f.field, f.value, f.version FROM fields f
                 JOIN records r ON r.entity = f.entity AND r.id = f.id WHERE r.village_code = ?1",
            )?
            .query_map([village], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    from_db(r.get(4)?),
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        assemble_records(village, records, fields)
    }
}

impl FeedRepo for SqliteTx<'_, '_> {
    fn feed_head(&mut self) -> Result<u64> {
        let max: i64 = self
            .0
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM feed")?
            .query_row([], |r| r.get(0))?;
        Ok(from_db(max))
    }

    fn append_feed(
        &mut self,
        seq: u64,
        village: &str,
        origin: &str,
        item: &FeedItem,
    ) -> Result<()> {
        let kind = feed_kind(item);
        self.0
            .prepare_cached(
                "INSERT INTO feed (seq, village_code, origin_device, kind, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![to_db(seq), village, origin, kind, serde_json::to_string(item)?])?;
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
        let mut stmt = self.0.prepare_cached(
            "SELECT seq, village_code, payload FROM feed
             WHERE seq > ?1 AND seq <= ?2 AND village_code >= ?3 AND village_code < ?4
               AND (origin_device != ?5 OR kind = 'conflict')
             ORDER BY seq LIMIT ?6",
        )?;
        let rows = stmt
            .query_map(
                params![
                    to_db(after),
                    to_db(through),
                    area,
                    area_upper(area),
                    device,
                    to_db(limit as u64)
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(seq, village_code, payload)| {
                Ok(FeedEntry {
                    seq: from_db(seq),
                    village_code,
                    item: zoufang_protocol::feed_entry::decode_item(&payload)?,
                })
            })
            .collect()
    }

    fn checksum(&mut self, village: &str) -> Result<u64> {
        let sum: Option<i64> = self
            .0
            .prepare_cached("SELECT sum FROM checksums WHERE village_code = ?1")?
            .query_row([village], |r| r.get(0))
            .optional()?;
        // Stored as the i64 with the same bits: the sum wraps.
        Ok(sum.unwrap_or(0) as u64)
    }

    fn set_checksum(&mut self, village: &str, sum: u64) -> Result<()> {
        self.0
            .prepare_cached("INSERT OR REPLACE INTO checksums (village_code, sum) VALUES (?1, ?2)")?
            .execute(params![village, sum as i64])?;
        Ok(())
    }

    fn checksums_in(&mut self, area: &str) -> Result<Vec<(String, u64)>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT village_code, sum FROM checksums WHERE village_code >= ?1 AND village_code < ?2",
        )?;
        let rows = stmt.query_map(params![area, area_upper(area)], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

impl ConflictsRepo for SqliteTx<'_, '_> {
    fn conflict(&mut self, id: &str) -> Result<Option<ConflictInfo>> {
        let info: Option<String> = self
            .0
            .prepare_cached("SELECT info FROM conflicts WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        Ok(info.map(|i| serde_json::from_str(&i)).transpose()?)
    }

    fn save_conflict(&mut self, c: &ConflictInfo) -> Result<()> {
        let status = match c.status {
            ConflictStatus::Open => "open",
            ConflictStatus::Resolved => "resolved",
        };
        self.0
            .prepare_cached(
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

    fn open_conflicts_in(&mut self, area: &str) -> Result<Vec<ConflictInfo>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT info FROM conflicts WHERE status = 'open' AND village_code >= ?1 AND village_code < ?2 ORDER BY id",
        )?;
        let rows = stmt
            .query_map(params![area, area_upper(area)], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.iter().map(|i| Ok(serde_json::from_str(i)?)).collect()
    }
}

impl VisitsRepo for SqliteTx<'_, '_> {
    fn visit(&mut self, id: &str) -> Result<Option<(String, u64, VisitRecord)>> {
        let row: Option<(String, i64, String)> = self
            .0
            .prepare_cached("SELECT village_code, seq, body FROM visits WHERE id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        row.map(|(village, seq, body)| Ok((village, from_db(seq), serde_json::from_str(&body)?)))
            .transpose()
    }

    fn insert_visit(&mut self, visit: &VisitRecord, seq: u64, device_id: &str) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT INTO visits (id, village_code, seq, body) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                visit.id,
                visit.village_code,
                to_db(seq),
                serde_json::to_string(visit)?
            ])?;
        for a in &visit.attachments {
            self.0
                .prepare_cached(
                    "INSERT OR IGNORE INTO visit_attachments (visit_id, attachment_id, hash_algorithm, content_hash, size_bytes, pushed_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    visit.id,
                    a.id,
                    a.hash_algorithm.as_str(),
                    a.content_hash,
                    to_db(a.size_bytes),
                    device_id
                ])?;
        }
        Ok(())
    }

    fn update_visit(&mut self, visit: &VisitRecord, seq: u64) -> Result<()> {
        self.0.execute(
            "UPDATE visits SET body = ?2, seq = ?3 WHERE id = ?1",
            params![visit.id, serde_json::to_string(visit)?, to_db(seq)],
        )?;
        Ok(())
    }
}

impl DeviceChangesRepo for SqliteTx<'_, '_> {
    fn previous_ack(&mut self, device_id: &str, seq: u64) -> Result<Option<Ack>> {
        let ack: Option<String> = self
            .0
            .prepare_cached("SELECT ack FROM device_changes WHERE device_id = ?1 AND seq = ?2")?
            .query_row(params![device_id, to_db(seq)], |r| r.get(0))
            .optional()?;
        Ok(ack.map(|a| serde_json::from_str(&a)).transpose()?)
    }

    fn record_ack(&mut self, device_id: &str, seq: u64, ack: &Ack) -> Result<()> {
        self.0
            .prepare_cached("INSERT INTO device_changes (device_id, seq, ack) VALUES (?1, ?2, ?3)")?
            .execute(params![device_id, to_db(seq), serde_json::to_string(ack)?])?;
        Ok(())
    }

    fn device_seen(&mut self, device_id: &str, at: &str, clock_offset_ms: i64) -> Result<()> {
        self.0
            .prepare_cached(
                "UPDATE devices SET last_seen_at = ?2, clock_offset_ms = ?3 WHERE id = ?1",
            )?
            .execute(params![device_id, at, clock_offset_ms])?;
        Ok(())
    }
}
