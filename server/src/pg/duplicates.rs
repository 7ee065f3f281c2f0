//! Members sharing a resident ID, and the pairs flagged for reviewers, in PostgreSQL.

use super::PgTx;
use crate::repo::{DuplicatesRepo, MEMBERS_WITH_ID_NUMBER, MergesRepo, area_upper, from_db};
use crate::storage::{PossibleDuplicate, Result};
use zoufang_protocol::messages::VisitRecord;

impl DuplicatesRepo for PgTx<'_, '_> {
    fn members_with_id_number(
        &mut self,
        value: &str,
        except: &str,
    ) -> Result<Vec<(String, String, String)>> {
        Ok(self
            .query(MEMBERS_WITH_ID_NUMBER, &[&value, &except])?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    fn flag_duplicate(&mut self, d: &PossibleDuplicate) -> Result<bool> {
        let n = self.execute(
            "INSERT INTO possible_duplicates (member_a, member_b, household_a, household_b, village_a, village_b, found_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            &[
                &d.member_a,
                &d.member_b,
                &d.household_a,
                &d.household_b,
                &d.village_a,
                &d.village_b,
                &d.found_at,
            ],
        )?;
        Ok(n == 1)
    }

    fn duplicates_in(&mut self, area: &str) -> Result<Vec<PossibleDuplicate>> {
        Ok(self
            .query(
                "SELECT member_a, household_a, village_a, member_b, household_b, village_b, found_at
                 FROM possible_duplicates WHERE status = 'open'
                   AND ((village_a >= $1 AND village_a < $2) OR (village_b >= $1 AND village_b < $2))
                 ORDER BY found_at, member_a",
                &[&area, &area_upper(area)],
            )?
            .iter()
            .map(|r| PossibleDuplicate {
                member_a: r.get(0),
                household_a: r.get(1),
                village_a: r.get(2),
                member_b: r.get(3),
                household_b: r.get(4),
                village_b: r.get(5),
                found_at: r.get(6),
            })
            .collect())
    }
}

impl MergesRepo for PgTx<'_, '_> {
    fn repoint_members(&mut self, merged: &str, survivor: &str) -> Result<Vec<String>> {
        Ok(self
            .query(
                "UPDATE records SET household_id = $2 WHERE entity = 'member' AND household_id = $1 RETURNING id",
                &[&merged, &survivor],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn visits_of_household(&mut self, household: &str) -> Result<Vec<(u64, VisitRecord)>> {
        self.query(
            "SELECT seq, body FROM visits WHERE body::json->>'household_id' = $1 ORDER BY id",
            &[&household],
        )?
        .iter()
        .map(|r| Ok((from_db(r.get(0)), serde_json::from_str(r.get(1))?)))
        .collect()
    }

    fn move_household_records(&mut self, household: &str, village: &str) -> Result<()> {
        self.execute(
            "UPDATE records SET village_code = $2
             WHERE (entity = 'household' AND id = $1) OR (entity = 'member' AND household_id = $1)",
            &[&household, &village],
        )?;
        Ok(())
    }
}
