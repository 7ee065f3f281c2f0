//! Published forms and code lists, and the totals, in SQLite.

use rusqlite::{OptionalExtension, params};
use zoufang_model::code_list::CodeList;
use zoufang_protocol::messages::FormPublication;

use super::{AWAITING_ATTACHMENTS_COUNT, SqliteTx};
use crate::repo::CatalogRepo;
use crate::storage::{Result, Stats};

impl CatalogRepo for SqliteTx<'_, '_> {
    fn put_visit_frequency(&mut self, category: &str, days: u32, at: &str) -> Result<()> {
        self.0.execute(
            "INSERT INTO visit_frequencies (category, days, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (category) DO UPDATE SET days = ?2, updated_at = ?3",
            params![category, days, at],
        )?;
        Ok(())
    }

    fn visit_frequencies(&mut self) -> Result<std::collections::BTreeMap<String, u32>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT category, days FROM visit_frequencies")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn form_definition(&mut self, form_id: &str, version: u32) -> Result<Option<String>> {
        Ok(self
            .0
            .prepare_cached("SELECT definition FROM forms WHERE form_id = ?1 AND version = ?2")?
            .query_row(params![form_id, version], |r| r.get(0))
            .optional()?)
    }

    fn insert_form(
        &mut self,
        form_id: &str,
        version: u32,
        definition: &str,
        at: &str,
    ) -> Result<()> {
        self.0.execute(
            "INSERT INTO forms (form_id, version, definition, published_at) VALUES (?1, ?2, ?3, ?4)",
            params![form_id, version, definition, at],
        )?;
        Ok(())
    }

    fn forms(&mut self) -> Result<Vec<(String, u32, String)>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT form_id, version, definition FROM forms ORDER BY form_id, version",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn form_publications(&mut self) -> Result<Vec<FormPublication>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT form_id, version, published_at FROM forms ORDER BY form_id, version",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(FormPublication {
                form_id: r.get(0)?,
                version: r.get(1)?,
                published_at: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn form_published_at(&mut self, form_id: &str, version: u32) -> Result<Option<String>> {
        Ok(self
            .0
            .prepare_cached("SELECT published_at FROM forms WHERE form_id = ?1 AND version = ?2")?
            .query_row(params![form_id, version], |r| r.get(0))
            .optional()?)
    }

    fn put_code_list(&mut self, list: &CodeList, at: &str) -> Result<()> {
        self.0.execute(
            "INSERT OR REPLACE INTO code_lists (name, version, entries, published_at) VALUES (?1, ?2, ?3, ?4)",
            params![list.name, list.version, serde_json::to_string(&list.entries)?, at],
        )?;
        Ok(())
    }

    fn latest_code_lists(&mut self) -> Result<Vec<CodeList>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT c.name, c.version, c.entries FROM code_lists c
             WHERE c.version = (SELECT max(version) FROM code_lists d WHERE d.name = c.name)",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(name, version, entries)| {
                Ok(CodeList {
                    name,
                    version,
                    entries: serde_json::from_str(&entries)?,
                })
            })
            .collect()
    }

    fn stats(&mut self) -> Result<Stats> {
        let tx = self.0;
        let n = |sql: &str| {
            tx.query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|v| u64::try_from(v).unwrap_or(0))
        };
        Ok(Stats {
            households: n("SELECT count(*) FROM records WHERE entity = 'household'")?,
            members: n("SELECT count(*) FROM records WHERE entity = 'member'")?,
            visits: n("SELECT count(*) FROM visits")?,
            open_conflicts: n("SELECT count(*) FROM conflicts WHERE status = 'open'")?,
            feed_entries: n("SELECT count(*) FROM feed")?,
            devices: n("SELECT count(*) FROM devices WHERE revoked_at IS NULL")?,
            attachment_contents: n("SELECT count(*) FROM contents")?,
            attachment_bytes: n("SELECT coalesce(sum(size_bytes), 0) FROM contents")?,
            visits_awaiting_attachments: n(AWAITING_ATTACHMENTS_COUNT)?,
        })
    }
}
