//! Devices' audit chains, their alerts and the server's own chain, in SQLite.

use rusqlite::{OptionalExtension, params};
use zoufang_protocol::audit::{AuditEntry, HashAlgorithm};

use super::SqliteTx;
use crate::repo::{AuditRepo, to_db};
use crate::storage::Result;

impl AuditRepo for SqliteTx<'_, '_> {
    fn device_audit_head(
        &mut self,
        device_id: &str,
    ) -> Result<Option<(u64, String, Option<HashAlgorithm>)>> {
        let head: Option<(i64, String, String)> = self
            .0
            .prepare_cached(
                "SELECT seq, hash, chain_hash FROM device_audit WHERE device_id = ?1 ORDER BY seq DESC LIMIT 1",
            )?
            .query_row([device_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        Ok(head.map(|(s, h, a)| (u64::try_from(s).unwrap_or(0), h, HashAlgorithm::parse(&a))))
    }

    fn device_audit_hash(&mut self, device_id: &str, s: u64) -> Result<Option<String>> {
        Ok(self
            .0
            .prepare_cached("SELECT hash FROM device_audit WHERE device_id = ?1 AND seq = ?2")?
            .query_row(params![device_id, to_db(s)], |r| r.get(0))
            .optional()?)
    }

    fn append_device_audit(
        &mut self,
        device_id: &str,
        algorithm: HashAlgorithm,
        e: &AuditEntry,
        received_at: &str,
    ) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT INTO device_audit (device_id, seq, chain_hash, entry, hash, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                device_id,
                to_db(e.seq),
                algorithm.as_str(),
                serde_json::to_string(e)?,
                e.hash,
                received_at
            ])?;
        Ok(())
    }

    fn set_audit_alert(&mut self, device_id: &str, problem: &str) -> Result<()> {
        self.0.execute(
            "UPDATE devices SET audit_alert = ?2 WHERE id = ?1",
            params![device_id, problem],
        )?;
        Ok(())
    }

    fn confirm_wipe(&mut self, device_id: &str, at: &str) -> Result<bool> {
        let n = self.0.execute(
            "UPDATE devices SET wiped_at = ?2, revoked_at = coalesce(revoked_at, ?2)
             WHERE id = ?1 AND wipe_requested_at IS NOT NULL",
            params![device_id, at],
        )?;
        Ok(n > 0)
    }

    fn device_audit(&mut self, device_id: &str) -> Result<Vec<AuditEntry>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT entry FROM device_audit WHERE device_id = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([device_id], |r| r.get::<_, String>(0))?;
        rows.map(|e| Ok(serde_json::from_str(&e?)?)).collect()
    }

    fn device_chains(&mut self) -> Result<Vec<(String, HashAlgorithm, Vec<AuditEntry>)>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT device_id, chain_hash, entry FROM device_audit ORDER BY device_id, seq",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut chains: Vec<(String, HashAlgorithm, Vec<AuditEntry>)> = Vec::new();
        for (device, alg, entry) in rows {
            let entry: AuditEntry = serde_json::from_str(&entry)?;
            match chains.last_mut() {
                Some((d, _, entries)) if *d == device => entries.push(entry),
                _ => chains.push((
                    device,
                    HashAlgorithm::parse(&alg).unwrap_or_default(),
                    vec![entry],
                )),
            }
        }
        Ok(chains)
    }

    fn server_audit_entries(&mut self) -> Result<Vec<AuditEntry>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT entry FROM server_audit ORDER BY seq")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|e| Ok(serde_json::from_str(&e?)?)).collect()
    }

    fn audit_alerts(&mut self) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT id, audit_alert FROM devices WHERE audit_alert IS NOT NULL")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
