//! Which visits name which contents, and the contents held whole, in SQLite.

use rusqlite::params;

use super::{AWAITING_ATTACHMENTS, SqliteTx};
use crate::blobs::ContentKey;
use crate::repo::ContentsRepo;
use crate::storage::Result;

impl ContentsRepo for SqliteTx<'_, '_> {
    fn naming_visits(&mut self, key: &ContentKey) -> Result<Vec<(String, u64)>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT v.village_code, va.size_bytes FROM visit_attachments va JOIN visits v ON v.id = va.visit_id
             WHERE va.hash_algorithm = ?1 AND va.content_hash = ?2",
        )?;
        let rows = stmt.query_map(params![key.algorithm.as_str(), key.hash()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn content_recorded(&mut self, key: &ContentKey) -> Result<bool> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT 1 FROM contents WHERE hash_algorithm = ?1 AND content_hash = ?2",
            )?
            .exists(params![key.algorithm.as_str(), key.hash()])?)
    }

    fn record_content(&mut self, key: &ContentKey, size: u64, at: &str) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT OR IGNORE INTO contents (hash_algorithm, content_hash, size_bytes, stored_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                key.algorithm.as_str(),
                key.hash(),
                i64::try_from(size).unwrap_or(i64::MAX),
                at
            ])?;
        Ok(())
    }

    fn visits_awaiting_attachments(&mut self) -> Result<Vec<String>> {
        let mut stmt = self.0.prepare_cached(AWAITING_ATTACHMENTS)?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
