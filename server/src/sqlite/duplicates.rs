//! Members sharing a resident ID, and the pairs flagged for reviewers, in SQLite.

use rusqlite::params;

use super::SqliteTx;
use crate::repo::{DuplicatesRepo, MEMBERS_WITH_ID_NUMBER, MergesRepo, area_upper, from_db};
use crate::storage::{PossibleDuplicate, Result};
use zoufang_protocol::messages::VisitRecord;

impl DuplicatesRepo for SqliteTx<'_, '_> {
    fn members_with_id_number(
        &mut self,
        value: &str,
        except: &str,
    ) -> Result<Vec<(String, String, String)>> {
        let mut stmt = self.0.prepare_cached(MEMBERS_WITH_ID_NUMBER)?;
        let rows = stmt.query_map(params![value, except], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn flag_duplicate(&mut self, d: &PossibleDuplicate) -> Result<bool> {
        let n = self.0.prepare_cached(
            "INSERT INTO possible_duplicates (member_a, member_b, household_a, household_b, village_a, village_b, found_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            d.member_a, d.member_b, d.household_a, d.household_b, d.village_a, d.village_b, d.found_at
        ])?;
        Ok(n == 1)
    }

    fn duplicates_in(&mut self, area: &str) -> Result<Vec<PossibleDuplicate>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT member_a, household_a, village_a, member_b, household_b, village_b, found_at
             FROM possible_duplicates WHERE status = 'open'
               AND ((village_a >= ?1 AND village_a < ?2) OR (village_b >= ?1 AND village_b < ?2))
             ORDER BY found_at, member_a",
        )?;
        let rows = stmt.query_map(params![area, area_upper(area)], |r| {
            Ok(PossibleDuplicate {
                member_a: r.get(0)?,
                household_a: r.get(1)?,
                village_a: r.get(2)?,
                member_b: r.get(3)?,
                household_b: r.get(4)?,
                village_b: r.get(5)?,
                found_at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

impl MergesRepo for SqliteTx<'_, '_> {
    fn repoint_members(&mut self, merged: &str, survivor: &str) -> Result<Vec<String>> {
        let ids = {
            let mut stmt = self.0.prepare_cached(
                "SELECT id FROM records WHERE entity = 'member' AND household_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([merged], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<Vec<String>>>()?
        };
        self.0.execute(
            "UPDATE records SET household_id = ?2 WHERE entity = 'member' AND household_id = ?1",
            params![merged, survivor],
        )?;
        Ok(ids)
    }

    fn visits_of_household(&mut self, household: &str) -> Result<Vec<(u64, VisitRecord)>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT seq, body FROM visits WHERE json_extract(body, '$.household_id') = ?1 ORDER BY id",
        )?;
        let rows = stmt
            .query_map([household], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(seq, body)| Ok((from_db(seq), serde_json::from_str(&body)?)))
            .collect()
    }

    fn move_household_records(&mut self, household: &str, village: &str) -> Result<()> {
        self.0.execute(
            "UPDATE records SET village_code = ?2
             WHERE (entity = 'household' AND id = ?1) OR (entity = 'member' AND household_id = ?1)",
            params![household, village],
        )?;
        Ok(())
    }
}
