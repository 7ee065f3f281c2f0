//! Reassignment in PostgreSQL: users' former areas and the changes handed to reviewers.

use zoufang_protocol::messages::Handover;

use super::PgTx;
use crate::repo::{HandoversRepo, area_upper, from_db, to_db};
use crate::storage::Result;

impl HandoversRepo for PgTx<'_, '_> {
    fn set_former_area(&mut self, user_id: &str, area: &str, until: &str) -> Result<()> {
        self.execute(
            "INSERT INTO former_areas (user_id, area, until) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, area) DO UPDATE SET until = $3",
            &[&user_id, &area, &until],
        )?;
        Ok(())
    }

    fn drop_former_area(&mut self, user_id: &str, area: &str) -> Result<()> {
        self.execute(
            "DELETE FROM former_areas WHERE user_id = $1 AND area = $2",
            &[&user_id, &area],
        )?;
        Ok(())
    }

    fn former_areas(&mut self, user_id: &str) -> Result<Vec<(String, String)>> {
        Ok(self
            .query(
                "SELECT area, until FROM former_areas WHERE user_id = $1 ORDER BY area",
                &[&user_id],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn insert_handover(&mut self, h: &Handover) -> Result<bool> {
        let n = self.execute(
            "INSERT INTO handovers (device_id, seq, user_id, village_code, change, received_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &h.device_id,
                &to_db(h.seq),
                &h.user_id,
                &h.village_code,
                &serde_json::to_string(&h.change)?,
                &h.received_at,
            ],
        )?;
        Ok(n == 1)
    }

    fn handovers_in(&mut self, area: &str) -> Result<Vec<Handover>> {
        self.query(
            "SELECT device_id, seq, user_id, village_code, change, received_at FROM handovers
             WHERE village_code >= $1 AND village_code < $2 ORDER BY received_at, device_id, seq",
            &[&area, &area_upper(area)],
        )?
        .iter()
        .map(|r| {
            Ok(Handover {
                device_id: r.get(0),
                seq: from_db(r.get(1)),
                user_id: r.get(2),
                village_code: r.get(3),
                change: serde_json::from_str(r.get(4))?,
                received_at: r.get(5),
            })
        })
        .collect()
    }
}
