//! Users, devices, enrolment tokens, the catalog, the audit chains and attachment contents,
//! in PostgreSQL.

use zoufang_model::code_list::CodeList;
use zoufang_protocol::audit::{AuditEntry, HashAlgorithm};
use zoufang_protocol::messages::{FormPublication, UserInfo};

use super::PgTx;
use crate::blobs::ContentKey;
use crate::repo::{
    AuditRepo, CatalogRepo, ContentsRepo, DeviceRecord, DevicesRepo, EnrollmentToken, NamingVisit,
    NewDevice, ServerAuditRepo, UsersRepo, from_db, to_db, user_from_row,
};
use crate::storage::{DeviceInfo, Result, Stats};

impl UsersRepo for PgTx<'_, '_> {
    fn insert_user(&mut self, user: &UserInfo, created_at: &str) -> Result<bool> {
        let n = self.execute(
            "INSERT INTO users (id, role, areas, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
            &[&user.id, &user.role.as_str(), &serde_json::to_string(&user.areas)?, &created_at],
        )?;
        Ok(n == 1)
    }

    fn set_areas(&mut self, user_id: &str, areas: &[String]) -> Result<bool> {
        let n = self.execute(
            "UPDATE users SET areas = $2 WHERE id = $1",
            &[&user_id, &serde_json::to_string(areas)?],
        )?;
        Ok(n == 1)
    }

    fn users(&mut self) -> Result<Vec<UserInfo>> {
        self.query("SELECT id, role, areas FROM users ORDER BY id", &[])?
            .iter()
            .map(|r| user_from_row(r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    fn user(&mut self, user_id: &str) -> Result<Option<UserInfo>> {
        self.query_opt(
            "SELECT id, role, areas FROM users WHERE id = $1",
            &[&user_id],
        )?
        .map(|r| user_from_row(r.get(0), r.get(1), r.get(2)))
        .transpose()
    }
}

impl DevicesRepo for PgTx<'_, '_> {
    fn insert_enrollment_token(
        &mut self,
        token_hash: &str,
        user_id: &str,
        expires_at: &str,
    ) -> Result<()> {
        self.execute(
            "INSERT INTO enrollment_tokens (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
            &[&token_hash, &user_id, &expires_at],
        )?;
        Ok(())
    }

    fn enrollment_token(&mut self, token_hash: &str) -> Result<Option<EnrollmentToken>> {
        Ok(self
            .query_opt(
                "SELECT user_id, expires_at, used_at FROM enrollment_tokens WHERE token_hash = $1",
                &[&token_hash],
            )?
            .map(|r| EnrollmentToken {
                user_id: r.get(0),
                expires_at: r.get(1),
                used_at: r.get(2),
            }))
    }

    fn mark_enrollment_token_used(&mut self, token_hash: &str, at: &str) -> Result<()> {
        self.execute(
            "UPDATE enrollment_tokens SET used_at = $2 WHERE token_hash = $1",
            &[&token_hash, &at],
        )?;
        Ok(())
    }

    fn insert_device(&mut self, d: &NewDevice<'_>) -> Result<()> {
        self.execute(
            "INSERT INTO devices (id, user_id, name, token_hash, token_expires_at, enrolled_at, predecessor_id, lineage_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &d.id,
                &d.user_id,
                &d.name,
                &d.token_hash,
                &d.token_expires_at,
                &d.enrolled_at,
                &d.predecessor.map(|p| p.0),
                &d.predecessor.map(|p| p.1),
            ],
        )?;
        Ok(())
    }

    fn device_by_token(&mut self, token_hash: &str) -> Result<Option<DeviceRecord>> {
        self.query_opt(
            "SELECT d.id, coalesce(d.lineage_id, d.id), d.token_expires_at, d.revoked_at,
                    d.wipe_requested_at, d.successor_id, u.id, u.role, u.areas
             FROM devices d JOIN users u ON u.id = d.user_id WHERE d.token_hash = $1",
            &[&token_hash],
        )?
        .map(|r| {
            Ok(DeviceRecord {
                id: r.get(0),
                lineage: r.get(1),
                token_expires_at: r.get(2),
                revoked_at: r.get(3),
                wipe_requested_at: r.get(4),
                successor_id: r.get(5),
                user: user_from_row(r.get(6), r.get(7), r.get(8))?,
            })
        })
        .transpose()
    }

    fn set_successor(&mut self, device_id: &str, successor_id: &str) -> Result<bool> {
        let n = self.execute(
            "UPDATE devices SET successor_id = $2 WHERE id = $1 AND successor_id IS NULL",
            &[&device_id, &successor_id],
        )?;
        Ok(n == 1)
    }

    fn renew_device_token(&mut self, device_id: &str, expires_at: &str) -> Result<()> {
        self.execute(
            "UPDATE devices SET token_expires_at = $2 WHERE id = $1",
            &[&device_id, &expires_at],
        )?;
        Ok(())
    }

    fn device_lineage(&mut self, device_id: &str) -> Result<Option<String>> {
        Ok(self
            .query_opt(
                "SELECT coalesce(lineage_id, id) FROM devices WHERE id = $1",
                &[&device_id],
            )?
            .map(|r| r.get(0)))
    }

    fn revoke_device(&mut self, device_id: &str, at: &str) -> Result<bool> {
        let n = self.execute(
            "UPDATE devices SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[&device_id, &at],
        )?;
        Ok(n == 1)
    }

    fn order_wipe(&mut self, device_id: &str, at: &str) -> Result<bool> {
        let n = self.execute(
            "UPDATE devices SET wipe_requested_at = $2 WHERE id = $1 AND revoked_at IS NULL AND wipe_requested_at IS NULL",
            &[&device_id, &at],
        )?;
        Ok(n == 1)
    }

    fn devices(&mut self) -> Result<Vec<DeviceInfo>> {
        Ok(self
            .query(
                "SELECT id, user_id, name, enrolled_at, token_expires_at, revoked_at, last_seen_at, clock_offset_ms,
                        predecessor_id, successor_id
                 FROM devices ORDER BY enrolled_at",
                &[],
            )?
            .iter()
            .map(|r| DeviceInfo {
                id: r.get(0),
                user_id: r.get(1),
                name: r.get(2),
                enrolled_at: r.get(3),
                token_expires_at: r.get(4),
                revoked_at: r.get(5),
                last_seen_at: r.get(6),
                clock_offset_ms: r.get(7),
                predecessor_id: r.get(8),
                successor_id: r.get(9),
            })
            .collect())
    }
}

impl ServerAuditRepo for PgTx<'_, '_> {
    fn last_server_audit(&mut self) -> Result<Option<(u64, String)>> {
        Ok(self
            .query_opt(
                "SELECT seq, hash FROM server_audit ORDER BY seq DESC LIMIT 1",
                &[],
            )?
            .map(|r| (from_db(r.get(0)), r.get(1))))
    }

    fn append_server_audit(&mut self, e: &AuditEntry) -> Result<()> {
        self.execute(
            "INSERT INTO server_audit (seq, entry, hash) VALUES ($1, $2, $3)",
            &[&to_db(e.seq), &serde_json::to_string(e)?, &e.hash],
        )?;
        Ok(())
    }
}

impl CatalogRepo for PgTx<'_, '_> {
    fn form_definition(&mut self, form_id: &str, version: u32) -> Result<Option<String>> {
        Ok(self
            .query_opt(
                "SELECT definition FROM forms WHERE form_id = $1 AND version = $2",
                &[&form_id, &i64::from(version)],
            )?
            .map(|r| r.get(0)))
    }

    fn insert_form(
        &mut self,
        form_id: &str,
        version: u32,
        definition: &str,
        at: &str,
    ) -> Result<()> {
        self.execute(
            "INSERT INTO forms (form_id, version, definition, published_at) VALUES ($1, $2, $3, $4)",
            &[&form_id, &i64::from(version), &definition, &at],
        )?;
        Ok(())
    }

    fn form_publications(&mut self) -> Result<Vec<FormPublication>> {
        Ok(self
            .query(
                "SELECT form_id, version, published_at FROM forms ORDER BY form_id, version",
                &[],
            )?
            .iter()
            .map(|r| FormPublication {
                form_id: r.get(0),
                version: u32::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                published_at: r.get(2),
            })
            .collect())
    }

    fn form_published_at(&mut self, form_id: &str, version: u32) -> Result<Option<String>> {
        Ok(self
            .query_opt(
                "SELECT published_at FROM forms WHERE form_id = $1 AND version = $2",
                &[&form_id, &i64::from(version)],
            )?
            .map(|r| r.get(0)))
    }

    fn forms(&mut self) -> Result<Vec<(String, u32, String)>> {
        Ok(self
            .query(
                "SELECT form_id, version, definition FROM forms ORDER BY form_id, version",
                &[],
            )?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    u32::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                    r.get(2),
                )
            })
            .collect())
    }

    fn put_code_list(&mut self, list: &CodeList, at: &str) -> Result<()> {
        self.execute(
            "INSERT INTO code_lists (name, version, entries, published_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name, version) DO UPDATE SET entries = $3, published_at = $4",
            &[
                &list.name,
                &i64::from(list.version),
                &serde_json::to_string(&list.entries)?,
                &at,
            ],
        )?;
        Ok(())
    }

    fn put_visit_frequency(&mut self, category: &str, days: u32, at: &str) -> Result<()> {
        self.execute(
            "INSERT INTO visit_frequencies (category, days, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (category) DO UPDATE SET days = $2, updated_at = $3",
            &[&category, &i64::from(days), &at],
        )?;
        Ok(())
    }

    fn visit_frequencies(&mut self) -> Result<std::collections::BTreeMap<String, u32>> {
        Ok(self
            .query("SELECT category, days FROM visit_frequencies", &[])?
            .iter()
            .map(|r| (r.get(0), u32::try_from(r.get::<_, i64>(1)).unwrap_or(0)))
            .collect())
    }

    fn latest_code_lists(&mut self) -> Result<Vec<CodeList>> {
        self.query(
            "SELECT c.name, c.version, c.entries FROM code_lists c
                 WHERE c.version = (SELECT max(version) FROM code_lists d WHERE d.name = c.name)",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(CodeList {
                name: r.get(0),
                version: u32::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                entries: serde_json::from_str(r.get(2))?,
            })
        })
        .collect()
    }

    fn stats(&mut self) -> Result<Stats> {
        let row = self.query_one(
            "SELECT (SELECT count(*) FROM records WHERE entity = 'household'),
                    (SELECT count(*) FROM records WHERE entity = 'member'),
                    (SELECT count(*) FROM visits),
                    (SELECT count(*) FROM conflicts WHERE status = 'open'),
                    (SELECT count(*) FROM feed),
                    (SELECT count(*) FROM devices WHERE revoked_at IS NULL),
                    (SELECT count(*) FROM contents),
                    (SELECT coalesce(sum(size_bytes), 0)::BIGINT FROM contents),
                    (SELECT count(DISTINCT va.visit_id) FROM visit_attachments va
                      WHERE NOT EXISTS (SELECT 1 FROM contents c
                                        WHERE c.hash_algorithm = va.hash_algorithm AND c.content_hash = va.content_hash))",
            &[],
        )?;
        let n = |i: usize| from_db(row.get(i));
        Ok(Stats {
            households: n(0),
            members: n(1),
            visits: n(2),
            open_conflicts: n(3),
            feed_entries: n(4),
            devices: n(5),
            attachment_contents: n(6),
            attachment_bytes: n(7),
            visits_awaiting_attachments: n(8),
        })
    }
}

impl AuditRepo for PgTx<'_, '_> {
    fn device_audit_head(
        &mut self,
        device_id: &str,
    ) -> Result<Option<(u64, String, Option<HashAlgorithm>)>> {
        Ok(self
            .query_opt(
                "SELECT seq, hash, chain_hash FROM device_audit WHERE device_id = $1 ORDER BY seq DESC LIMIT 1",
                &[&device_id],
            )?
            .map(|r| (from_db(r.get(0)), r.get(1), HashAlgorithm::parse(r.get(2)))))
    }

    fn device_audit_hash(&mut self, device_id: &str, seq: u64) -> Result<Option<String>> {
        Ok(self
            .query_opt(
                "SELECT hash FROM device_audit WHERE device_id = $1 AND seq = $2",
                &[&device_id, &to_db(seq)],
            )?
            .map(|r| r.get(0)))
    }

    fn append_device_audit(
        &mut self,
        device_id: &str,
        algorithm: HashAlgorithm,
        e: &AuditEntry,
        received_at: &str,
    ) -> Result<()> {
        self.execute(
            "INSERT INTO device_audit (device_id, seq, chain_hash, entry, hash, received_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&device_id, &to_db(e.seq), &algorithm.as_str(), &serde_json::to_string(e)?, &e.hash, &received_at],
        )?;
        Ok(())
    }

    fn set_audit_alert(&mut self, device_id: &str, problem: &str) -> Result<()> {
        self.execute(
            "UPDATE devices SET audit_alert = $2 WHERE id = $1",
            &[&device_id, &problem],
        )?;
        Ok(())
    }

    fn confirm_wipe(&mut self, device_id: &str, at: &str) -> Result<bool> {
        let n = self.execute(
            "UPDATE devices SET wiped_at = $2, revoked_at = coalesce(revoked_at, $2)
             WHERE id = $1 AND wipe_requested_at IS NOT NULL",
            &[&device_id, &at],
        )?;
        Ok(n > 0)
    }

    fn device_audit(&mut self, device_id: &str) -> Result<Vec<AuditEntry>> {
        self.query(
            "SELECT entry FROM device_audit WHERE device_id = $1 ORDER BY seq",
            &[&device_id],
        )?
        .iter()
        .map(|r| Ok(serde_json::from_str(r.get(0))?))
        .collect()
    }

    fn device_chains(&mut self) -> Result<Vec<(String, HashAlgorithm, Vec<AuditEntry>)>> {
        let rows = self.query(
            "SELECT device_id, chain_hash, entry FROM device_audit ORDER BY device_id, seq",
            &[],
        )?;
        let mut chains: Vec<(String, HashAlgorithm, Vec<AuditEntry>)> = Vec::new();
        for r in &rows {
            let device: String = r.get(0);
            let entry: AuditEntry = serde_json::from_str(r.get(2))?;
            match chains.last_mut() {
                Some((d, _, entries)) if *d == device => entries.push(entry),
                _ => {
                    let alg = HashAlgorithm::parse(r.get(1)).unwrap_or_default();
                    chains.push((device, alg, vec![entry]));
                }
            }
        }
        Ok(chains)
    }

    fn server_audit_entries(&mut self) -> Result<Vec<AuditEntry>> {
        self.query("SELECT entry FROM server_audit ORDER BY seq", &[])?
            .iter()
            .map(|r| Ok(serde_json::from_str(r.get(0))?))
            .collect()
    }

    fn audit_alerts(&mut self) -> Result<Vec<(String, String)>> {
        Ok(self
            .query(
                "SELECT id, audit_alert FROM devices WHERE audit_alert IS NOT NULL",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }
}

impl ContentsRepo for PgTx<'_, '_> {
    fn naming_visits(&mut self, key: &ContentKey) -> Result<Vec<NamingVisit>> {
        Ok(self
            .query(
                "SELECT v.village_code, va.size_bytes, va.pushed_by FROM visit_attachments va JOIN visits v ON v.id = va.visit_id
                 WHERE va.hash_algorithm = $1 AND va.content_hash = $2",
                &[&key.algorithm.as_str(), &key.hash()],
            )?
            .iter()
            .map(|r| NamingVisit {
                village_code: r.get(0),
                size_bytes: from_db(r.get(1)),
                pushed_by: r.get(2),
            })
            .collect())
    }

    fn is_holder(&mut self, key: &ContentKey, device_id: &str) -> Result<bool> {
        Ok(self
            .query_opt(
                "SELECT 1 FROM content_holders WHERE hash_algorithm = $1 AND content_hash = $2 AND device_id = $3",
                &[&key.algorithm.as_str(), &key.hash(), &device_id],
            )?
            .is_some())
    }

    fn record_holder(&mut self, key: &ContentKey, device_id: &str, at: &str) -> Result<()> {
        self.execute(
            "INSERT INTO content_holders (hash_algorithm, content_hash, device_id, proven_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[&key.algorithm.as_str(), &key.hash(), &device_id, &at],
        )?;
        Ok(())
    }

    fn server_secret(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .query_opt("SELECT value FROM server_secrets WHERE name = $1", &[&name])?
            .map(|r| r.get(0)))
    }

    fn create_server_secret(&mut self, name: &str, fresh: &[u8]) -> Result<Vec<u8>> {
        self.execute(
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&name, &fresh],
        )?;
        Ok(self
            .query_one("SELECT value FROM server_secrets WHERE name = $1", &[&name])?
            .get(0))
    }

    fn record_content(&mut self, key: &ContentKey, size: u64, at: &str) -> Result<()> {
        self.execute(
            "INSERT INTO contents (hash_algorithm, content_hash, size_bytes, stored_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[&key.algorithm.as_str(), &key.hash(), &to_db(size), &at],
        )?;
        Ok(())
    }

    fn visits_awaiting_attachments(&mut self) -> Result<Vec<String>> {
        Ok(self
            .query(
                "SELECT DISTINCT va.visit_id FROM visit_attachments va
                 WHERE NOT EXISTS (SELECT 1 FROM contents c
                                   WHERE c.hash_algorithm = va.hash_algorithm AND c.content_hash = va.content_hash)
                 ORDER BY va.visit_id",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }
}
