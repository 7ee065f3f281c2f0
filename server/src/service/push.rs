//! A device's push: each change applied once (a re-push after a lost answer gets the same
//! acknowledgement), each checked against the sender's areas and the rules of its kind.

use chrono::{DateTime, Utc};
use zoufang_model::domain::check_region_code;
use zoufang_protocol::audit::is_hex_digest;
use zoufang_protocol::messages::{Ack, Change, ChangeOp, Entity, FeedItem, Outcome, VisitRecord};

use super::records::{
    FieldEdit, NewRecord, PushContext, applied, create_record, id_in_use, next_seq, rejected,
};
use super::{handover, merges, plausible, records, ts};
use crate::repo::Tx;
use crate::storage::{DeviceAuth, Result};

/// A device clock further than this from the server's is flagged on its edits.
pub const CLOCK_SKEW_LIMIT: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// Most attachments one visit may name, and the largest content (the device's own bounds).
const MAX_VISIT_ATTACHMENTS: usize = 64;
const MAX_CONTENT_BYTES: u64 = 50 * 1024 * 1024;

pub fn push(
    tx: &mut dyn Tx,
    auth: &DeviceAuth,
    changes: &[Change],
    device_now: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<Ack>> {
    let offset = device_now - now;
    let ctx = PushContext::new(auth, ts(now), offset);
    let mut acks = Vec::with_capacity(changes.len());
    let former = handover::former_areas(tx, &auth.user.id, now)?;
    for change in changes {
        if let Some(ack) = tx.previous_ack(&auth.lineage, change.seq)? {
            // A re-push after a lost acknowledgement: the same answer, nothing applied twice.
            acks.push(ack);
            continue;
        }
        let ack = match handover::hand_over_if_former(tx, auth, &former, change, now)? {
            Some(ack) => ack,
            None => apply_change(tx, &ctx, change)?,
        };
        tx.record_ack(&auth.lineage, change.seq, &ack)?;
        acks.push(ack);
    }
    tx.device_seen(&auth.device_id, &ts(now), offset.num_milliseconds())?;
    Ok(acks)
}

/// What was recorded for these changes of the device, and how far its audit trail is held.
pub fn recorded_acks(tx: &mut dyn Tx, auth: &DeviceAuth, seqs: &[u64]) -> Result<(Vec<Ack>, u64)> {
    let mut acks = Vec::new();
    for seq in seqs {
        if let Some(ack) = tx.previous_ack(&auth.lineage, *seq)? {
            acks.push(ack);
        }
    }
    let audit = tx
        .device_audit_head(&auth.lineage)?
        .map_or(0, |(seq, _, _)| seq);
    Ok((acks, audit))
}

fn apply_change(tx: &mut dyn Tx, ctx: &PushContext<'_>, change: &Change) -> Result<Ack> {
    let seq = change.seq;
    let from = (seq, change.device_time.as_str());
    match &change.op {
        ChangeOp::CreateHousehold {
            id,
            village_code,
            fields,
        } => {
            if check_region_code(village_code).is_err() {
                let m = "the village code is not a valid region code";
                return Ok(rejected(seq, "invalid_value", m));
            }
            if !ctx.auth.covers(village_code) {
                let m = "the village is outside the user's areas";
                return Ok(rejected(seq, "out_of_area", m));
            }
            let r = NewRecord {
                entity: Entity::Household,
                id,
                household_id: None,
                village: village_code,
                fields,
            };
            create_record(tx, ctx, from, &r)
        }
        ChangeOp::CreateMember {
            id,
            household_id,
            fields,
        } => {
            // A household merged since the phone added the member: filed under its survivor.
            let household_id = &merges::survivor_of(tx, household_id)?;
            // A household outside the sender's areas reads as one that does not exist.
            let located = tx.locate(Entity::Household, household_id)?;
            let Some((village, _)) = located.filter(|(v, _)| ctx.auth.covers(v)) else {
                let m = "the member's household does not exist on the server";
                return Ok(rejected(seq, "not_found", m));
            };
            let r = NewRecord {
                entity: Entity::Member,
                id,
                household_id: Some(household_id),
                village: &village,
                fields,
            };
            create_record(tx, ctx, from, &r)
        }
        ChangeOp::SetField {
            entity,
            id,
            field,
            value,
            base,
            resolves: _,
            after,
        } => {
            let edit = FieldEdit {
                device_seq: seq,
                device_time: &change.device_time,
                entity: *entity,
                id,
                field,
                value,
                base: *base,
                after: *after,
            };
            records::set_field(tx, ctx, &edit)
        }
        ChangeOp::SubmitVisit { visit } => submit_visit(tx, ctx, seq, visit),
        ChangeOp::SetVisitStatus {
            id,
            status,
            reason,
            at,
        } => set_visit_status(tx, ctx, seq, (id, status, reason.as_deref(), at)),
    }
}

/// Signing or voiding a submitted visit (a completed visit may be signed; any may be voided).
fn set_visit_status(
    tx: &mut dyn Tx,
    ctx: &PushContext<'_>,
    seq: u64,
    (id, status, reason, at): (&str, &str, Option<&str>, &str),
) -> Result<Ack> {
    let held = tx.visit(id)?;
    let Some((village, held_seq, mut visit)) = held.filter(|(v, _, _)| ctx.auth.covers(v)) else {
        let m = "the visit does not exist on the server";
        return Ok(rejected(seq, "not_found", m));
    };
    if visit.status == status {
        return Ok(applied(seq, Outcome::Unchanged, held_seq, None, None));
    }
    let allowed = matches!(
        (visit.status.as_str(), status),
        ("completed", "signed") | (_, "void")
    );
    if !allowed {
        let m = "that status change is not allowed";
        return Ok(rejected(seq, "invalid_transition", m));
    }
    if status == "signed" && !has_signature(&visit) {
        let m = "a signed visit carries its signatures";
        return Ok(rejected(seq, "unsigned", m));
    }
    visit.status = status.to_owned();
    if status == "signed" {
        visit.signed_at = Some(at.to_owned());
    } else {
        visit.void_reason = reason.map(str::to_owned);
    }
    let server_seq = next_seq(tx)?;
    tx.update_visit(&visit, server_seq)?;
    let item = FeedItem::VisitStatus {
        id: id.to_owned(),
        status: status.to_owned(),
        reason: reason.map(str::to_owned),
        at: at.to_owned(),
    };
    tx.append_feed(server_seq, &village, &ctx.auth.lineage, &item)?;
    Ok(applied(seq, Outcome::Applied, server_seq, None, None))
}

fn submit_visit(
    tx: &mut dyn Tx,
    ctx: &PushContext<'_>,
    seq: u64,
    visit: &VisitRecord,
) -> Result<Ack> {
    if uuid::Uuid::parse_str(&visit.id).is_err() || check_region_code(&visit.village_code).is_err()
    {
        let m = "a visit needs a UUID and a valid village code";
        return Ok(rejected(seq, "invalid_value", m));
    }
    if !ctx.auth.covers(&visit.village_code) {
        let m = "the visit's village is outside the user's areas";
        return Ok(rejected(seq, "out_of_area", m));
    }
    if !matches!(visit.status.as_str(), "completed" | "signed" | "void") {
        let m = "only completed visits are submitted";
        return Ok(rejected(seq, "invalid_value", m));
    }
    if let Some(problem) = attachments_problem(visit) {
        return Ok(rejected(seq, "invalid_attachment", problem));
    }
    if visit.author != ctx.auth.user.id {
        let m = "a visit's author is the user signed in on the device that sends it";
        return Ok(rejected(seq, "author_mismatch", m));
    }
    if let Some(refusal) = plausible::visit_time_refusal(tx, ctx, seq, visit)? {
        return Ok(refusal);
    }
    if visit.status == "signed" && !has_signature(visit) {
        let m = "a signed visit carries its signatures";
        return Ok(rejected(seq, "unsigned", m));
    }
    if let Some((village, held_seq, held)) = tx.visit(&visit.id)? {
        // Sent again (its acknowledgement lost, the phone restored): unchanged. Any other
        // visit's id is refused without saying where that visit is.
        if village == visit.village_code && held.author == visit.author {
            return Ok(applied(seq, Outcome::Unchanged, held_seq, None, None));
        }
        return Ok(id_in_use(seq));
    }
    // A visit of a household merged since: filed under the survivor.
    let mut visit = visit.clone();
    if let Some(h) = &visit.household_id {
        visit.household_id = Some(merges::survivor_of(tx, h)?);
    }
    if let Some(refusal) = links_refusal(tx, ctx, seq, &visit)? {
        return Ok(refusal);
    }
    let server_seq = next_seq(tx)?;
    tx.insert_visit(&visit, server_seq, &ctx.auth.lineage)?;
    let (household, village) = (visit.household_id.clone(), visit.village_code.clone());
    let item = FeedItem::Visit {
        visit: Box::new(visit),
    };
    tx.append_feed(server_seq, &village, &ctx.auth.lineage, &item)?;
    if let Some(h) = &household {
        // The next visit follows the household's category, from this one.
        super::due::apply_rule(tx, h, &village, &ctx.received_at)?;
    }
    Ok(applied(seq, Outcome::Applied, server_seq, None, None))
}

/// The records a visit points to must be where it claims: its household in its village, the
/// visit it revises in the sender's areas. Outside the areas reads as not existing.
fn links_refusal(
    tx: &mut dyn Tx,
    ctx: &PushContext<'_>,
    seq: u64,
    visit: &VisitRecord,
) -> Result<Option<Ack>> {
    if let Some(h) = &visit.household_id {
        match tx.locate(Entity::Household, h)? {
            Some((village, _)) if village == visit.village_code => {}
            Some((village, _)) if ctx.auth.covers(&village) => {
                let m = "the visit's household is in another village than the visit";
                return Ok(Some(rejected(seq, "invalid_value", m)));
            }
            _ => {
                let m = "the visit's household does not exist on the server";
                return Ok(Some(rejected(seq, "not_found", m)));
            }
        }
    }
    if let Some(original) = &visit.revision_of {
        let held = tx.visit(original)?;
        if !held.is_some_and(|(village, _, _)| ctx.auth.covers(&village)) {
            let m = "the visit it revises does not exist on the server";
            return Ok(Some(rejected(seq, "not_found", m)));
        }
    }
    Ok(None)
}

fn has_signature(visit: &VisitRecord) -> bool {
    visit.attachments.iter().any(|a| a.kind == "signature")
}

/// What is wrong with a visit's attachment list, if anything.
fn attachments_problem(visit: &VisitRecord) -> Option<&'static str> {
    if visit.attachments.len() > MAX_VISIT_ATTACHMENTS {
        return Some("a visit names too many attachments");
    }
    for a in &visit.attachments {
        if a.id.is_empty() || a.id.len() > 64 || a.field_path.len() > 256 {
            return Some("an attachment needs an id and a field");
        }
        if !matches!(a.kind.as_str(), "photo" | "signature") {
            return Some("an attachment is a photo or a signature");
        }
        if !is_hex_digest(&a.content_hash) {
            return Some("an attachment's content hash must be a lowercase hex digest");
        }
        if a.size_bytes == 0 || a.size_bytes > MAX_CONTENT_BYTES {
            return Some("an attachment's size is out of bounds");
        }
    }
    None
}
