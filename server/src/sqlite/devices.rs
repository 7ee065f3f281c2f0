//! Users, devices, enrolment tokens and the server's audit chain, in SQLite.

use rusqlite::{OptionalExtension, params};
use zoufang_protocol::audit::AuditEntry;
use zoufang_protocol::messages::UserInfo;

use super::SqliteTx;
use crate::repo::{
    DeviceRecord, DevicesRepo, EnrollmentToken, NewDevice, ServerAuditRepo, UsersRepo,
    user_from_row,
};
use crate::storage::{DeviceInfo, Result};

impl UsersRepo for SqliteTx<'_, '_> {
    fn insert_user(&mut self, user: &UserInfo, created_at: &str) -> Result<bool> {
        let n = self.0.execute(
            "INSERT INTO users (id, role, areas, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (id) DO NOTHING",
            params![user.id, user.role.as_str(), serde_json::to_string(&user.areas)?, created_at],
        )?;
        Ok(n == 1)
    }

    fn set_areas(&mut self, user_id: &str, areas: &[String]) -> Result<bool> {
        let n = self.0.execute(
            "UPDATE users SET areas = ?2 WHERE id = ?1",
            params![user_id, serde_json::to_string(areas)?],
        )?;
        Ok(n == 1)
    }

    fn users(&mut self) -> Result<Vec<UserInfo>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT id, role, areas FROM users ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })?
            .collect::<rusqlite::Result<Vec<(String, String, String)>>>()?;
        rows.into_iter()
            .map(|(id, role, areas)| user_from_row(id, &role, &areas))
            .collect()
    }

    fn user(&mut self, user_id: &str) -> Result<Option<UserInfo>> {
        let row: Option<(String, String, String)> = self
            .0
            .prepare_cached("SELECT id, role, areas FROM users WHERE id = ?1")?
            .query_row([user_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        row.map(|(id, role, areas)| user_from_row(id, &role, &areas))
            .transpose()
    }
}

impl DevicesRepo for SqliteTx<'_, '_> {
    fn insert_enrollment_token(
        &mut self,
        token_hash: &str,
        user_id: &str,
        expires_at: &str,
    ) -> Result<()> {
        self.0.execute(
            "INSERT INTO enrollment_tokens (token_hash, user_id, expires_at) VALUES (?1, ?2, ?3)",
            params![token_hash, user_id, expires_at],
        )?;
        Ok(())
    }

    fn enrollment_token(&mut self, token_hash: &str) -> Result<Option<EnrollmentToken>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT user_id, expires_at, used_at FROM enrollment_tokens WHERE token_hash = ?1",
            )?
            .query_row([token_hash], |r| {
                Ok(EnrollmentToken {
                    user_id: r.get(0)?,
                    expires_at: r.get(1)?,
                    used_at: r.get(2)?,
                })
            })
            .optional()?)
    }

    fn mark_enrollment_token_used(&mut self, token_hash: &str, at: &str) -> Result<()> {
        self.0.execute(
            "UPDATE enrollment_tokens SET used_at = ?2 WHERE token_hash = ?1",
            params![token_hash, at],
        )?;
        Ok(())
    }

    fn insert_device(&mut self, d: &NewDevice<'_>) -> Result<()> {
        self.0.execute(
            "INSERT INTO devices (id, user_id, name, token_hash, token_expires_at, enrolled_at, predecessor_id, lineage_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                d.id,
                d.user_id,
                d.name,
                d.token_hash,
                d.token_expires_at,
                d.enrolled_at,
                d.predecessor.map(|p| p.0),
                d.predecessor.map(|p| p.1)
            ],
        )?;
        Ok(())
    }

    fn device_by_token(&mut self, token_hash: &str) -> Result<Option<DeviceRecord>> {
        let row = self
            .0
            .prepare_cached(
                "SELECT d.id, coalesce(d.lineage_id, d.id), d.token_expires_at, d.revoked_at,
                        d.wipe_requested_at, d.successor_id, u.id, u.role, u.areas
                 FROM devices d JOIN users u ON u.id = d.user_id WHERE d.token_hash = ?1",
            )?
            .query_row([token_hash], |r| {
                Ok((
                    [r.get::<_, String>(0)?, r.get(1)?, r.get(2)?],
                    [r.get::<_, Option<String>>(3)?, r.get(4)?, r.get(5)?],
                    [r.get::<_, String>(6)?, r.get(7)?, r.get(8)?],
                ))
            })
            .optional()?;
        row.map(
            |(
                [id, lineage, token_expires_at],
                [revoked_at, wipe_requested_at, successor_id],
                [uid, role, areas],
            )| {
                Ok(DeviceRecord {
                    id,
                    lineage,
                    token_expires_at,
                    revoked_at,
                    wipe_requested_at,
                    successor_id,
                    user: user_from_row(uid, &role, &areas)?,
                })
            },
        )
        .transpose()
    }

    fn set_successor(&mut self, device_id: &str, successor_id: &str) -> Result<bool> {
        let n = self.0.execute(
            "UPDATE devices SET successor_id = ?2 WHERE id = ?1 AND successor_id IS NULL",
            params![device_id, successor_id],
        )?;
        Ok(n == 1)
    }

    fn renew_device_token(&mut self, device_id: &str, expires_at: &str) -> Result<()> {
        self.0.execute(
            "UPDATE devices SET token_expires_at = ?2 WHERE id = ?1",
            params![device_id, expires_at],
        )?;
        Ok(())
    }

    fn device_lineage(&mut self, device_id: &str) -> Result<Option<String>> {
        Ok(self
            .0
            .prepare_cached("SELECT coalesce(lineage_id, id) FROM devices WHERE id = ?1")?
            .query_row([device_id], |r| r.get(0))
            .optional()?)
    }

    fn revoke_device(&mut self, device_id: &str, at: &str) -> Result<bool> {
        let n = self.0.execute(
            "UPDATE devices SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![device_id, at],
        )?;
        Ok(n == 1)
    }

    fn order_wipe(&mut self, device_id: &str, at: &str) -> Result<bool> {
        let n = self.0.execute(
            "UPDATE devices SET wipe_requested_at = ?2 WHERE id = ?1 AND revoked_at IS NULL AND wipe_requested_at IS NULL",
            params![device_id, at],
        )?;
        Ok(n == 1)
    }

    fn devices(&mut self) -> Result<Vec<DeviceInfo>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT id, user_id, name, enrolled_at, token_expires_at, revoked_at, last_seen_at, clock_offset_ms,
                    predecessor_id, successor_id
             FROM devices ORDER BY enrolled_at",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(DeviceInfo {
                id: r.get(0)?,
                user_id: r.get(1)?,
                name: r.get(2)?,
                enrolled_at: r.get(3)?,
                token_expires_at: r.get(4)?,
                revoked_at: r.get(5)?,
                last_seen_at: r.get(6)?,
                clock_offset_ms: r.get(7)?,
                predecessor_id: r.get(8)?,
                successor_id: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

impl ServerAuditRepo for SqliteTx<'_, '_> {
    fn last_server_audit(&mut self) -> Result<Option<(u64, String)>> {
        Ok(self
            .0
            .prepare_cached("SELECT seq, hash FROM server_audit ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| {
                Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), r.get(1)?))
            })
            .optional()?)
    }

    fn append_server_audit(&mut self, entry: &AuditEntry) -> Result<()> {
        self.0.execute(
            "INSERT INTO server_audit (seq, entry, hash) VALUES (?1, ?2, ?3)",
            params![
                i64::try_from(entry.seq).unwrap_or(i64::MAX),
                serde_json::to_string(entry)?,
                entry.hash
            ],
        )?;
        Ok(())
    }
}
