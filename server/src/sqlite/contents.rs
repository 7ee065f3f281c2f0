//! Which visits name which contents, and the contents held whole, in SQLite.

use rusqlite::{OptionalExtension, params};

use super::{AWAITING_ATTACHMENTS, SqliteTx};
use crate::blobs::ContentKey;
use crate::repo::{ContentsRepo, NamingVisit};
use crate::storage::Result;

impl ContentsRepo for SqliteTx<'_, '_> {
    fn naming_visits(&mut self, key: &ContentKey) -> Result<Vec<NamingVisit>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT v.village_code, va.size_bytes, va.pushed_by FROM visit_attachments va JOIN visits v ON v.id = va.visit_id
             WHERE va.hash_algorithm = ?1 AND va.content_hash = ?2",
        )?;
        let rows = stmt.query_map(params![key.algorithm.as_str(), key.hash()], |r| {
            Ok(NamingVisit {
                village_code: r.get(0)?,
                size_bytes: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                pushed_by: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn is_holder(&mut self, key: &ContentKey, device_id: &str) -> Result<bool> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT 1 FROM content_holders WHERE hash_algorithm = ?1 AND content_hash = ?2 AND device_id = ?3",
            )?
            .exists(params![key.algorithm.as_str(), key.hash(), device_id])?)
    }

    fn record_holder(&mut self, key: &ContentKey, device_id: &str, at: &str) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT OR IGNORE INTO content_holders (hash_algorithm, content_hash, device_id, proven_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![key.algorithm.as_str(), key.hash(), device_id, at])?;
        Ok(())
    }

    fn server_secret(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .0
            .prepare_cached("SELECT value FROM server_secrets WHERE name = ?1")?
            .query_row(params![name], |r| r.get(0))
            .optional()?)
    }

    fn create_server_secret(&mut self, name: &str, fresh: &[u8]) -> Result<Vec<u8>> {
        self.0
            .prepare_cached("INSERT OR IGNORE INTO server_secrets (name, value) VALUES (?1, ?2)")?
            .execute(params![name, fresh])?;
        Ok(self.0.query_row(
            "SELECT value FROM server_secrets WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )?)
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
