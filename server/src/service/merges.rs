//! A reviewer merges two registrations of one family: the merged household's members and
//! visits move to the survivor (histories kept), the merged record stays as a tombstone naming
//! its survivor (`status` = `merged`, `merged_into`), and devices apply the merge on their next
//! sync, drafts included. Changes still on their way that name the merged household are filed
//! under its survivor. Merges are within one village; moving a household between villages is
//! its own operation (not built yet), so a cross-village pair is moved first.

use chrono::{DateTime, Utc};
use serde_json::{Value as Json, json};
use zoufang_protocol::messages::{Entity, FeedItem};

use super::records::{next_seq, write_fields_as_server};
use super::{server_audit, ts};
use crate::repo::Tx;
use crate::storage::{DeviceAuth, Result, ServerError};

/// How many merges deep a chain of tombstones is followed.
const MAX_CHAIN: usize = 8;

/// The household a change naming `household` belongs to now: itself, or the survivor its
/// tombstone names.
pub fn survivor_of(tx: &mut dyn Tx, household: &str) -> Result<String> {
    let mut current = household.to_owned();
    for _ in 0..MAX_CHAIN {
        let next = tx
            .field(Entity::Household, &current, "merged_into")?
            .and_then(|f| f.value.as_str().map(str::to_owned));
        match next {
            Some(survivor) if survivor != current => current = survivor,
            _ => break,
        }
    }
    Ok(current)
}

pub fn merge_households(
    tx: &mut dyn Tx,
    auth: &DeviceAuth,
    (survivor, merged): (&str, &str),
    now: DateTime<Utc>,
) -> Result<()> {
    if !auth.user.role.can_review() {
        return Err(ServerError::Forbidden(
            "only reviewers merge households".into(),
        ));
    }
    let village = check_pair(tx, auth, survivor, merged)?;
    let at = ts(now);
    let members = tx.repoint_members(merged, survivor)?;
    let mut visits = 0;
    for (seq, mut visit) in tx.visits_of_household(merged)? {
        visit.household_id = Some(survivor.to_owned());
        tx.update_visit(&visit, seq)?;
        visits += 1;
    }
    let tombstone = [
        ("status", json!("merged")),
        ("merged_into", json!(survivor)),
        (
            "status_date",
            json!(at.chars().take(10).collect::<String>()),
        ),
    ];
    let record = (Entity::Household, merged, village.as_str());
    write_fields_as_server(tx, auth, record, &tombstone, &at)?;
    let seq = next_seq(tx)?;
    let item = FeedItem::Merged {
        merged: merged.to_owned(),
        survivor: survivor.to_owned(),
    };
    tx.append_feed(seq, &village, &auth.lineage, &item)?;
    let detail = json!({"survivor": survivor, "members": members.len(), "visits": visits});
    server_audit::append(
        tx,
        now,
        &auth.user.id,
        "households_merged",
        Some(("household", merged)),
        detail,
    )
}

/// Both households exist, differ, lie in one village the reviewer covers, and neither is
/// merged already. Returns the village.
fn check_pair(tx: &mut dyn Tx, auth: &DeviceAuth, survivor: &str, merged: &str) -> Result<String> {
    if survivor == merged {
        return Err(ServerError::bad(
            "invalid_merge",
            "a household is not merged into itself",
        ));
    }
    let survivor_village = household_village(tx, auth, survivor)?;
    let merged_village = household_village(tx, auth, merged)?;
    if survivor_village != merged_village {
        return Err(ServerError::bad(
            "merge_across_villages",
            "the two households are in different villages; move one into the other's village first",
        ));
    }
    Ok(survivor_village)
}

/// A household's village, if it lies in the reviewer's areas and is not merged already.
fn household_village(tx: &mut dyn Tx, auth: &DeviceAuth, id: &str) -> Result<String> {
    let located = tx.locate(Entity::Household, id)?;
    let Some((village, _)) = located.filter(|(v, _)| auth.covers(v)) else {
        return Err(ServerError::NotFound("household".into()));
    };
    let status = tx.field(Entity::Household, id, "status")?.map(|f| f.value);
    if status == Some(Json::from("merged")) {
        return Err(ServerError::bad(
            "invalid_merge",
            "that household is merged already",
        ));
    }
    Ok(village)
}

/// A reviewer moves a household (with its members and visits) to another village they cover:
/// the old village's phones lose it at their next sync (its village field changes, and they no
/// longer cover it), the new village's phones gain it with its history.
pub fn move_household(
    tx: &mut dyn Tx,
    auth: &DeviceAuth,
    (household, to_village): (&str, &str),
    now: DateTime<Utc>,
) -> Result<()> {
    if !auth.user.role.can_review() {
        return Err(ServerError::Forbidden(
            "only reviewers move households".into(),
        ));
    }
    if zoufang_model::domain::check_region_code(to_village).is_err() || !auth.covers(to_village) {
        return Err(ServerError::bad(
            "invalid_move",
            "the new village is not one of the reviewer's",
        ));
    }
    let from = household_village(tx, auth, household)?;
    if from == to_village {
        return Err(ServerError::bad(
            "invalid_move",
            "the household is in that village already",
        ));
    }
    let at = ts(now);
    // The village field first, under the old village: its phones learn the move from it.
    let village = [("village_code", json!(to_village))];
    write_fields_as_server(
        tx,
        auth,
        (Entity::Household, household, &from),
        &village,
        &at,
    )?;
    // Then the records and their checksum contributions move, and the new village's feed gets
    // the household, its members and its visits whole.
    let records: Vec<_> = tx
        .village_records(&from)?
        .into_iter()
        .filter(|r| r.id == household || r.household_id.as_deref() == Some(household))
        .collect();
    let moved: u64 = records.iter().map(record_sum).fold(0, u64::wrapping_add);
    tx.move_household_records(household, to_village)?;
    let old_sum = tx.checksum(&from)?.wrapping_sub(moved);
    tx.set_checksum(&from, old_sum)?;
    let new_sum = tx.checksum(to_village)?.wrapping_add(moved);
    tx.set_checksum(to_village, new_sum)?;
    let mut ordered = records;
    ordered.sort_by_key(|r| r.entity != Entity::Household);
    for mut record in ordered {
        record.village_code = to_village.to_owned();
        let seq = next_seq(tx)?;
        tx.append_feed(seq, to_village, &auth.lineage, &FeedItem::Record { record })?;
    }
    let visits = tx.visits_of_household(household)?;
    for (_, visit) in &visits {
        let seq = next_seq(tx)?;
        let item = FeedItem::Visit {
            visit: Box::new(visit.clone()),
        };
        tx.append_feed(seq, to_village, &auth.lineage, &item)?;
    }
    let detail = json!({"from": from, "to": to_village, "visits": visits.len()});
    server_audit::append(
        tx,
        now,
        &auth.user.id,
        "household_moved",
        Some(("household", household)),
        detail,
    )
}

/// A record's part of its village's checksum.
fn record_sum(r: &zoufang_protocol::messages::RecordState) -> u64 {
    r.fields.iter().fold(0u64, |sum, (field, fv)| {
        let h =
            zoufang_protocol::checksum::field_hash(r.entity, &r.id, field, fv.version, &fv.value);
        sum.wrapping_add(h)
    })
}

/// A reviewer merges two records of one person in one village (the same son added on two
/// phones): the merged member becomes a tombstone (`status` = `duplicate`, `merged_into`),
/// keeping its own field history; the survivor stays as it is.
pub fn merge_members(
    tx: &mut dyn Tx,
    auth: &DeviceAuth,
    (survivor, merged): (&str, &str),
    now: DateTime<Utc>,
) -> Result<()> {
    if !auth.user.role.can_review() {
        return Err(ServerError::Forbidden(
            "only reviewers merge members".into(),
        ));
    }
    if survivor == merged {
        return Err(ServerError::bad(
            "invalid_merge",
            "a member is not merged into itself",
        ));
    }
    let mut villages = Vec::with_capacity(2);
    for id in [survivor, merged] {
        let located = tx.locate(Entity::Member, id)?;
        let Some((village, _)) = located.filter(|(v, _)| auth.covers(v)) else {
            return Err(ServerError::NotFound("member".into()));
        };
        villages.push(village);
    }
    let village = villages.pop().unwrap_or_default();
    if villages.first() != Some(&village) {
        return Err(ServerError::bad(
            "merge_across_villages",
            "the two members are in different villages; move one household first",
        ));
    }
    let at = ts(now);
    let tombstone = [
        ("status", json!("duplicate")),
        ("merged_into", json!(survivor)),
        (
            "status_date",
            json!(at.chars().take(10).collect::<String>()),
        ),
    ];
    let record = (Entity::Member, merged, village.as_str());
    write_fields_as_server(tx, auth, record, &tombstone, &at)?;
    let detail = json!({"survivor": survivor});
    server_audit::append(
        tx,
        now,
        &auth.user.id,
        "members_merged",
        Some(("member", merged)),
        detail,
    )
}
