//! What a device receives: the feed of its areas by cursor (never its own changes back, but
//! always conflicts), the villages' checksums once it is up to date, a village's snapshot to
//! repair a divergence, and the open conflicts; and a reviewer's resolution of a conflict.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use zoufang_protocol::messages::{
    ConflictInfo, ConflictStatus, Entity, PROTOCOL_VERSION, PullRequest, PullResponse, RecordState,
    SnapshotResponse,
};

use super::records::{FieldEdit, PushContext, set_field};
use super::{server_audit, ts};
use crate::repo::Tx;
use crate::storage::{DeviceAuth, PossibleDuplicate, Result, ServerError};

/// Most feed entries in one pull response.
pub const MAX_PULL_LIMIT: u32 = 5000;

pub fn pull(
    tx: &mut dyn Tx,
    auth: &DeviceAuth,
    request: &PullRequest,
    now: DateTime<Utc>,
) -> Result<PullResponse> {
    let limit = request.limit.clamp(1, MAX_PULL_LIMIT) as usize;
    // Everything up to the head as it is now: entries written meanwhile come next time.
    let head = tx.feed_head()?;
    let mut entries = Vec::new();
    let mut cursors = BTreeMap::new();
    let mut more = false;
    for area in &auth.user.areas {
        let cursor = request.cursors.get(area).copied().unwrap_or(0);
        if more {
            cursors.insert(area.clone(), cursor);
            continue;
        }
        let room = limit - entries.len();
        let page = tx.feed_page(area, cursor, head, &auth.lineage, room)?;
        let full = page.len() == room;
        let last = page.last().map(|e| e.seq);
        entries.extend(page);
        if full {
            more = true;
            cursors.insert(area.clone(), last.unwrap_or(cursor));
        } else {
            cursors.insert(area.clone(), head.max(cursor));
        }
    }
    let mut checksums = BTreeMap::new();
    if !more {
        for area in &auth.user.areas {
            checksums.extend(tx.checksums_in(area)?);
        }
    }
    Ok(PullResponse {
        protocol: PROTOCOL_VERSION,
        server_time: ts(now),
        entries,
        cursors,
        more,
        checksums,
    })
}

pub fn snapshot(
    tx: &mut dyn Tx,
    auth: &DeviceAuth,
    village_code: &str,
    now: DateTime<Utc>,
) -> Result<SnapshotResponse> {
    if zoufang_model::domain::check_region_code(village_code).is_err() {
        return Err(ServerError::bad(
            "invalid_village",
            "a snapshot names a village's 12-digit region code",
        ));
    }
    if !auth.covers(village_code) {
        return Err(ServerError::Forbidden(
            "the village is outside the user's areas".into(),
        ));
    }
    let records = tx.village_records(village_code)?;
    let conflicts = tx
        .open_conflicts_in(village_code)?
        .into_iter()
        .filter(|c| c.village_code == village_code)
        .collect();
    Ok(SnapshotResponse {
        protocol: PROTOCOL_VERSION,
        server_time: ts(now),
        records,
        conflicts,
        checksum: tx.checksum(village_code)?,
    })
}

/// Open conflicts in the caller's areas.
pub fn conflicts(tx: &mut dyn Tx, auth: &DeviceAuth) -> Result<Vec<ConflictInfo>> {
    let mut out = Vec::new();
    for area in &auth.user.areas {
        out.extend(tx.open_conflicts_in(area)?);
    }
    Ok(out)
}

/// The possible duplicates a reviewer may see: pairs whose households both lie in their areas.
pub fn possible_duplicates(tx: &mut dyn Tx, auth: &DeviceAuth) -> Result<Vec<PossibleDuplicate>> {
    if !auth.user.role.can_review() {
        return Err(ServerError::Forbidden(
            "possible duplicates are for reviewers".into(),
        ));
    }
    let mut out: Vec<PossibleDuplicate> = Vec::new();
    for area in &auth.user.areas {
        for d in tx.duplicates_in(area)? {
            let seen = auth.covers(&d.village_a) && auth.covers(&d.village_b);
            if seen && !out.contains(&d) && still_duplicates(tx, &d)? {
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// A pair is a question while both members are present and still hold one ID (a corrected
/// typo settles it too).
fn still_duplicates(tx: &mut dyn Tx, d: &PossibleDuplicate) -> Result<bool> {
    let id_a = tx
        .field(Entity::Member, &d.member_a, "id_number")?
        .map(|f| f.value);
    let id_b = tx
        .field(Entity::Member, &d.member_b, "id_number")?
        .map(|f| f.value);
    Ok(id_a.is_some() && id_a == id_b && present(tx, &d.member_a)? && present(tx, &d.member_b)?)
}

/// A member not (yet) marked as having left, died or been a duplicate.
fn present(tx: &mut dyn Tx, member: &str) -> Result<bool> {
    let status = tx.field(Entity::Member, member, "status")?;
    Ok(status.is_none_or(|f| f.value.is_null() || f.value == "present"))
}

/// A reviewer settles a conflict from the review screen (coordinators resolve on their
/// device, through a push). The resolution is an edit on the conflict's version.
pub fn resolve_conflict(
    tx: &mut dyn Tx,
    auth: &DeviceAuth,
    conflict_id: &str,
    value: &Json,
    now: DateTime<Utc>,
) -> Result<ConflictInfo> {
    if !auth.user.role.can_review() {
        return Err(ServerError::Forbidden(
            "only reviewers resolve conflicts here; coordinators resolve on their device".into(),
        ));
    }
    let info = tx
        .conflict(conflict_id)?
        .ok_or_else(|| ServerError::NotFound("conflict".into()))?;
    if !auth.covers(&info.village_code) {
        return Err(ServerError::Forbidden(
            "the conflict is outside the user's areas".into(),
        ));
    }
    if info.status != ConflictStatus::Open {
        return Err(ServerError::bad(
            "conflict_resolved",
            "the conflict is already resolved",
        ));
    }
    let ctx = PushContext::new(auth, ts(now), chrono::TimeDelta::zero());
    // Reviewer resolutions are not device changes: sequence 0, never deduplicated.
    let at = ts(now);
    let edit = FieldEdit {
        device_seq: 0,
        device_time: &at,
        entity: info.entity,
        id: &info.entity_id,
        field: &info.field,
        value,
        base: info.version,
        after: None,
    };
    let ack = set_field(tx, &ctx, &edit)?;
    let resolved = ack
        .conflict
        .filter(|c| c.status == ConflictStatus::Resolved)
        .ok_or_else(|| {
            ServerError::bad(
                "resolution_refused",
                ack.message
                    .unwrap_or_else(|| "the resolution was not accepted".into()),
            )
        })?;
    let subject = Some(("conflict", conflict_id));
    let detail = serde_json::json!({"field": info.field});
    server_audit::append(tx, now, &auth.user.id, "conflict_resolved", subject, detail)?;
    Ok(resolved)
}

/// One household or member as the server holds it (administrators and tests).
pub fn record(tx: &mut dyn Tx, entity: Entity, id: &str) -> Result<Option<RecordState>> {
    let Some((village, _)) = tx.locate(entity, id)? else {
        return Ok(None);
    };
    Ok(tx
        .village_records(&village)?
        .into_iter()
        .find(|r| r.entity == entity && r.id == id))
}
