//! Reassignment in SQLite: users' former areas and the changes handed to reviewers.

use rusqlite::params;
use zoufang_protocol::messages::Handover;

use super::SqliteTx;
use crate::repo::{HandoversRepo, area_upper, from_db, to_db};
use crate::storage::Result;

impl HandoversRepo for SqliteTx<'_, '_> {
    fn set_former_area(&mut self, user_id: &str, area: &str, until: &str) -> Result<()> {
        self.0.execute(
            "INSERT INTO former_areas (user_id, area, until) VALUES (?1, ?2, ?3)
             ON CONFLICT (user_id, area) DO UPDATE SET until = ?3",
            params![user_id, area, until],
        )?;
        Ok(())
    }

    fn drop_former_area(&mut self, user_id: &str, area: &str) -> Result<()> {
        self.0.execute(
            "DELETE FROM former_areas WHERE user_id = ?1 AND area = ?2",
            params![user_id, area],
        )?;
        Ok(())
    }

    fn former_areas(&mut self, user_id: &str) -> Result<Vec<(String, String)>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT area, until FROM former_areas WHERE user_id = ?1 ORDER BY area",
        )?;
        let rows = stmt.query_map([user_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn insert_handover(&mut self, h: &Handover) -> Result<bool> {
        let n = self.0.execute(
            "INSERT INTO handovers (device_id, seq, user_id, village_code, change, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            params![
                h.device_id,
                to_db(h.seq),
                h.user_id,
                h.village_code,
                serde_json::to_string(&h.change)?,
                h.received_at
            ],
        )?;
        Ok(n == 1)
    }

    fn handovers_in(&mut self, area: &str) -> Result<Vec<Handover>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT device_id, seq, user_id, village_code, change, received_at FROM handovers
             WHERE village_code >= ?1 AND village_code < ?2 ORDER BY received_at, device_id, seq",
        )?;
        let rows = stmt
            .query_map(params![area, area_upper(area)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(
                |(device_id, seq, user_id, village_code, change, received_at)| {
                    Ok(Handover {
                        device_id,
                        seq: from_db(seq),
                        user_id,
                        village_code,
                        change: serde_json::from_str(&change)?,
                        received_at,
                    })
                },
            )
            .collect()
    }
}
