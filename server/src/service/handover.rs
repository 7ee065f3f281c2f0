//! Reassignment. When an administrator changes a user's areas, the areas taken away are kept
//! as former areas for a season. A change the user's phone still sends for a village of a
//! former area (typed before the move, waiting in its outbox) is not refused into the phone's
//! rejected list: it is handed to that village's reviewers, and the phone hears it was taken.
//! Anything outside both the current and the former areas is refused as before.

use chrono::{DateTime, Utc};
use zoufang_protocol::messages::{Ack, Change, ChangeOp, Entity, Handover, Outcome};

use super::ts;
use crate::repo::Tx;
use crate::storage::{DeviceAuth, Result, ServerError};

/// How long a former area still takes a phone's pending changes.
pub const FORMER_AREA_DAYS: i64 = 180;

/// Records the areas an administrator's change takes away (and forgets those given back).
pub fn record_area_change(
    tx: &mut dyn Tx,
    user_id: &str,
    (before, after): (&[String], &[String]),
    now: DateTime<Utc>,
) -> Result<()> {
    let until = ts(now + chrono::TimeDelta::days(FORMER_AREA_DAYS));
    for area in before.iter().filter(|a| !after.contains(a)) {
        tx.set_former_area(user_id, area, &until)?;
    }
    for area in after {
        tx.drop_former_area(user_id, area)?;
    }
    Ok(())
}

/// The former areas of a user that still count at `now`.
pub fn former_areas(tx: &mut dyn Tx, user_id: &str, now: DateTime<Utc>) -> Result<Vec<String>> {
    let now = ts(now);
    Ok(tx
        .former_areas(user_id)?
        .into_iter()
        .filter(|(_, until)| *until > now)
        .map(|(area, _)| area)
        .collect())
}

/// The village a change is about, as the server knows it.
fn village_of(tx: &mut dyn Tx, change: &Change) -> Result<Option<String>> {
    Ok(match &change.op {
        ChangeOp::CreateHousehold { village_code, .. } => Some(village_code.clone()),
        ChangeOp::CreateMember { household_id, .. } => {
            tx.locate(Entity::Household, household_id)?.map(|(v, _)| v)
        }
        ChangeOp::SetField { entity, id, .. } => tx.locate(*entity, id)?.map(|(v, _)| v),
        ChangeOp::SubmitVisit { visit } => Some(visit.village_code.clone()),
        ChangeOp::SetVisitStatus { id, .. } => tx.visit(id)?.map(|(v, _, _)| v),
    })
}

/// Hands `change` over if it is for a village of a former area outside the current ones:
/// kept for the village's reviewers, answered `unchanged` with code `handed_over`.
pub fn hand_over_if_former(
    tx: &mut dyn Tx,
    auth: &DeviceAuth,
    former: &[String],
    change: &Change,
    now: DateTime<Utc>,
) -> Result<Option<Ack>> {
    if former.is_empty() {
        return Ok(None);
    }
    let Some(village) = village_of(tx, change)? else {
        return Ok(None);
    };
    if auth.covers(&village) || !former.iter().any(|a| village.starts_with(a.as_str())) {
        return Ok(None);
    }
    tx.insert_handover(&Handover {
        device_id: auth.lineage.clone(),
        seq: change.seq,
        user_id: auth.user.id.clone(),
        village_code: village,
        change: change.clone(),
        received_at: ts(now),
    })?;
    Ok(Some(Ack {
        seq: change.seq,
        outcome: Outcome::Unchanged,
        version: None,
        value: None,
        conflict: None,
        code: Some("handed_over".into()),
        message: Some("handed to the village's reviewers: the user no longer covers it".into()),
    }))
}

/// The changes handed to a reviewer's villages.
pub fn handovers(tx: &mut dyn Tx, auth: &DeviceAuth) -> Result<Vec<Handover>> {
    if !auth.user.role.can_review() {
        return Err(ServerError::Forbidden(
            "handed-over changes are for reviewers".into(),
        ));
    }
    let mut out: Vec<Handover> = Vec::new();
    for area in &auth.user.areas {
        for h in tx.handovers_in(area)? {
            if !out
                .iter()
                .any(|o| o.device_id == h.device_id && o.seq == h.seq)
            {
                out.push(h);
            }
        }
    }
    Ok(out)
}
