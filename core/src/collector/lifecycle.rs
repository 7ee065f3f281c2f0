//! Households and members over time: a household moves away, is away for migrant work, dies
//! out or was registered in error; a member leaves, dies or turns out to be a duplicate. Each
//! is a status with a reason and a date, written as field edits that merge like any other and
//! are never deletions. Only active households are due, listed and counted by default; all of
//! them stay findable. A visit's outcome proposes the matching change for the coordinator to
//! confirm.

use serde_json::Value as Json;

use super::Collector;
use crate::error::{Error, Result};
use crate::records::{HouseholdSummary, timestamp};
use crate::store::{self, households::Scope};
use zoufang_model::domain::check_lifecycle_value;
use zoufang_protocol::messages::Entity;

/// A status change to confirm, proposed by a visit's outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProposedStatus {
    pub household_id: String,
    pub status: String,
    /// The visit's date (YYYY-MM-DD).
    pub date: String,
}

impl Collector {
    /// Sets a household's status (`active`, `moved_away`, `migrant_away`, `all_deceased`,
    /// `registered_in_error`) with a reason and a date (YYYY-MM-DD; today when `None`).
    pub fn set_household_status(
        &self,
        household_id: &str,
        status: &str,
        reason: Option<&str>,
        date: Option<&str>,
    ) -> Result<()> {
        self.set_status(Entity::Household, household_id, status, (reason, date))
    }

    /// Sets a member's status (`present`, `left_household`, `deceased`, `duplicate`): removing
    /// a member is this, never a deletion.
    pub fn set_member_status(
        &self,
        member_id: &str,
        status: &str,
        reason: Option<&str>,
        date: Option<&str>,
    ) -> Result<()> {
        self.set_status(Entity::Member, member_id, status, (reason, date))
    }

    fn set_status(
        &self,
        entity: Entity,
        id: &str,
        status: &str,
        (reason, date): (Option<&str>, Option<&str>),
    ) -> Result<()> {
        self.require_user()?;
        let now = self.now();
        let today = now.format("%Y-%m-%d").to_string();
        let values = [
            ("status", Json::from(status)),
            (
                "status_reason",
                reason.map(str::trim).map_or(Json::Null, Json::from),
            ),
            ("status_date", Json::from(date.unwrap_or(&today))),
        ];
        for (field, value) in &values {
            check_lifecycle_value(entity == Entity::Household, field, value).map_err(|_| {
                Error::InvalidValue {
                    field: (*field).to_owned(),
                    code: "invalid_status",
                }
            })?;
        }
        let at = timestamp(now);
        self.write(|tx| {
            if !store::households::record_exists(tx, entity, id)? {
                return Err(store::not_found(entity.as_str(), id));
            }
            for (field, value) in &values {
                self.set_record_field(tx, entity, id, field, value, &at)?;
            }
            Ok(())
        })
    }

    /// Households whose member's name or resident ID starts with `query`, whatever their
    /// status and their members' (a family that moved away, a member who died).
    pub fn search_all_households(&self, query: &str, limit: u32) -> Result<Vec<HouseholdSummary>> {
        self.search(query, limit, Scope::All)
    }

    /// The household status a completed visit's outcome suggests (moved away, migrant worker
    /// away, deceased), if the household does not have it yet: the app asks the coordinator
    /// to confirm it with [`Self::set_household_status`].
    pub fn proposed_status(&self, visit_id: &str) -> Result<Option<ProposedStatus>> {
        let visit = self.load_visit(visit_id)?;
        let Some(household_id) = visit.household_id else {
            return Ok(None);
        };
        let status = match visit.answers.get("outcome").and_then(Json::as_str) {
            Some("moved_away") => "moved_away",
            Some("migrant_work") => "migrant_away",
            Some("deceased") => "all_deceased",
            _ => return Ok(None),
        };
        let household = self.load_household(&household_id)?;
        if household.fields.get("status").and_then(Json::as_str) == Some(status) {
            return Ok(None);
        }
        let date = visit
            .completed_at
            .as_deref()
            .unwrap_or(&visit.created_at)
            .chars()
            .take(10)
            .collect();
        Ok(Some(ProposedStatus {
            household_id,
            status: status.to_owned(),
            date,
        }))
    }
}
