//! Applying what the server sends to the store: acknowledgements (each entry leaves the outbox
//! with its effect), pulled feed entries, snapshots, conflicts. Every function works inside the
//! caller's transaction, so one answer is applied whole or not at all.

use rusqlite::Connection;
use serde_json::{Map, Value as Json};

use super::settings::SyncSettings;
use crate::error::Result;
use crate::store::households::Insert;
use crate::store::{self, households, outbox, server_view};
use zoufang_protocol::checksum::field_hash;
use zoufang_protocol::messages::{
    Ack, ChangeOp, ConflictInfo, Entity, FeedItem, FieldValue, Outcome, PullResponse, RecordState,
    SnapshotResponse, VisitRecord,
};

fn field_value(state: &Map<String, Json>, field: &str) -> Option<FieldValue> {
    state
        .get(field)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

pub(crate) fn server_field(
    conn: &Connection,
    entity: Entity,
    id: &str,
    field: &str,
) -> Result<Option<FieldValue>> {
    Ok(server_view::state(conn, entity, id)?.and_then(|s| field_value(&s, field)))
}

/// Field hashes to add to villages' checksums, written once per village when an answer is
/// applied (a fresh pull brings thousands of records per village: one read and one write of the
/// checksum each would be half a million statements for a township).
#[derive(Debug, Default)]
pub(crate) struct ChecksumAdds(std::collections::BTreeMap<String, u64>);

impl ChecksumAdds {
    fn add(&mut self, village: &str, hash: u64) {
        let sum = self.0.entry(village.to_owned()).or_insert(0);
        *sum = sum.wrapping_add(hash);
    }

    /// Writes them (the sums wrap, so their order among other adjustments does not matter).
    fn write(self, conn: &Connection) -> Result<()> {
        for (village, add) in self.0 {
            adjust_checksum(conn, &village, None, Some(add))?;
        }
        Ok(())
    }
}

/// Moves a village's checksum from one field hash to another.
fn adjust_checksum(
    conn: &Connection,
    village: &str,
    remove: Option<u64>,
    add: Option<u64>,
) -> Result<()> {
    // Wrapping u64 arithmetic in Rust: SQLite would turn an overflowing integer sum into a float.
    let sum = server_view::checksum(conn, village)?
        .wrapping_sub(remove.unwrap_or(0))
        .wrapping_add(add.unwrap_or(0));
    server_view::set_checksum(conn, village, sum)
}

/// Records the server's value of one field (unless what we hold is newer) and, when no local
/// edit of it is pending, shows it. Keeps the village checksum in step.
pub(crate) fn set_server_field(
    conn: &Connection,
    entity: Entity,
    id: &str,
    field: &str,
    value: &Json,
    version: u64,
    at: &str,
) -> Result<()> {
    let Some(mut state) = server_view::state(conn, entity, id)? else {
        return Ok(());
    };
    let old = field_value(&state, field);
    if old.as_ref().is_none_or(|o| version > o.version) {
        if let Some(village) = households::village_of(conn, entity, id)? {
            let remove = old
                .as_ref()
                .map(|o| field_hash(entity, id, field, o.version, &o.value));
            let add = Some(field_hash(entity, id, field, version, value));
            adjust_checksum(conn, &village, remove, add)?;
        }
        let fv = FieldValue {
            value: value.clone(),
            version,
        };
        state.insert(field.to_owned(), serde_json::to_value(fv)?);
        server_view::save_state(conn, entity, id, &state)?;
    }
    if outbox::pending_for_field(conn, entity, id, field)?.is_none()
        && let Some(current) = field_value(&state, field)
    {
        households::store_field(conn, entity, id, field, &current.value, at)?;
    }
    Ok(())
}

pub(crate) fn apply_conflict(conn: &Connection, c: &ConflictInfo, at: &str) -> Result<()> {
    let value = c.resolution.as_ref().unwrap_or(&c.provisional);
    set_server_field(conn, c.entity, &c.entity_id, &c.field, value, c.version, at)?;
    server_view::upsert_conflict(conn, c)
}

/// Inserts a record the device did not have (its fields' hashes go to `sums`), or merges the
/// server's fields into it.
pub(crate) fn apply_record(
    conn: &Connection,
    r: &RecordState,
    at: &str,
    sums: &mut ChecksumAdds,
) -> Result<()> {
    // A new record is written whole: its server view, local view and checksum in one go.
    let fields: Map<String, Json> = r
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    // The same text as an object of each field's {value, version}, without building one.
    let state = serde_json::to_string(&r.fields)?;
    let done = match r.entity {
        Entity::Household => {
            households::insert_household(conn, &r.id, &r.village_code, &fields, Some(&state), at)?
        }
        // A member arrives after its household; one whose household is not here is not ours.
        Entity::Member => match r.household_id.as_deref() {
            Some(household) => {
                households::insert_member(conn, &r.id, household, &fields, Some(&state), at)?
            }
            None => Insert::NoHousehold,
        },
    };
    match done {
        Insert::Done => {}
        Insert::NoHousehold => return Ok(()),
        Insert::IdTaken => {
            for (field, fv) in &r.fields {
                set_server_field(conn, r.entity, &r.id, field, &fv.value, fv.version, at)?;
            }
            return Ok(());
        }
    }
    let sum = r.fields.iter().fold(0u64, |acc, (k, v)| {
        acc.wrapping_add(field_hash(r.entity, &r.id, k, v.version, &v.value))
    });
    sums.add(&r.village_code, sum);
    Ok(())
}

pub(crate) fn apply_visit(conn: &Connection, v: &VisitRecord, seq: u64) -> Result<()> {
    let form_known = store::forms::has_version(conn, &v.form_id, v.form_version)?;
    let household_known = match &v.household_id {
        Some(h) => households::exists(conn, h)?,
        None => true,
    };
    if !form_known || !household_known {
        // Read-only copies of others' visits; the form arrives with the catalog next time.
        tracing::debug!(visit = %v.id, "visit from the server skipped: form or household not on the device");
        return Ok(());
    }
    store::visits::insert_from_server(conn, v, seq)
}

/// Applies one acknowledgement: the entry leaves the outbox in the same transaction as its
/// effect. Returns its outcome, or `None` for an entry already gone (an ack seen twice).
pub(crate) fn apply_ack(conn: &Connection, ack: &Ack, at: &str) -> Result<Option<Outcome>> {
    let Some(change) = outbox::take(conn, ack.seq)? else {
        return Ok(None);
    };
    let op = zoufang_protocol::change_entry::decode_op(&change)?;
    if ack.outcome == Outcome::Rejected {
        let code = ack.code.as_deref().unwrap_or("rejected");
        let message = ack.message.as_deref().unwrap_or("");
        outbox::reject(conn, ack.seq, &change, code, message, at)?;
        if let ChangeOp::SetField {
            entity, id, field, ..
        } = &op
        {
            // The record shows the server's value again; the typed one stays listed.
            if outbox::pending_for_field(conn, *entity, id, field)?.is_none() {
                let server =
                    server_field(conn, *entity, id, field)?.map_or(Json::Null, |f| f.value);
                households::store_field(conn, *entity, id, field, &server, at)?;
            }
        }
        return Ok(Some(Outcome::Rejected));
    }
    if let Some(version) = ack.version {
        let created = ack.outcome == Outcome::Applied;
        match &op {
            ChangeOp::SetField {
                entity,
                id,
                field,
                value,
                ..
            } => {
                let value = ack.value.as_ref().unwrap_or(value);
                set_server_field(conn, *entity, id, field, value, version, at)?;
            }
            ChangeOp::CreateHousehold { id, fields, .. } if created => {
                for (field, value) in fields {
                    set_server_field(conn, Entity::Household, id, field, value, version, at)?;
                }
            }
            ChangeOp::CreateMember { id, fields, .. } if created => {
                for (field, value) in fields {
                    set_server_field(conn, Entity::Member, id, field, value, version, at)?;
                }
            }
            ChangeOp::SubmitVisit { visit } => store::visits::set_synced(conn, &visit.id, version)?,
            _ => {}
        }
        if let Some(c) = &ack.conflict {
            server_view::upsert_conflict(conn, c)?;
        }
    }
    Ok(Some(ack.outcome))
}

/// Replaces the server view of one village with a snapshot and recounts its checksum; local
/// edits still waiting in the outbox stay on top.
pub(crate) fn apply_snapshot(
    conn: &Connection,
    village: &str,
    snapshot: &SnapshotResponse,
    at: &str,
) -> Result<()> {
    server_view::clear_village(conn, village)?;
    let households = snapshot
        .records
        .iter()
        .filter(|r| r.entity == Entity::Household);
    let members = snapshot
        .records
        .iter()
        .filter(|r| r.entity == Entity::Member);
    // The checksum is recounted below: what the records would add is not needed.
    let mut unused = ChecksumAdds::default();
    for r in households.chain(members) {
        apply_record(conn, r, at, &mut unused)?;
    }
    for c in &snapshot.conflicts {
        server_view::upsert_conflict(conn, c)?;
    }
    // Recount from scratch: the incremental sum is what diverged.
    let mut sum = 0u64;
    for (entity, id, state) in server_view::village_states(conn, village)? {
        for (field, fv) in state {
            if let Ok(fv) = serde_json::from_value::<FieldValue>(fv) {
                sum = sum.wrapping_add(field_hash(entity, &id, &field, fv.version, &fv.value));
            }
        }
    }
    server_view::set_checksum(conn, village, sum)
}

/// Applies one pull batch and moves the cursors it names.
pub(crate) fn apply_pull(conn: &Connection, response: &PullResponse, at: &str) -> Result<()> {
    let mut sums = ChecksumAdds::default();
    for entry in &response.entries {
        match &entry.item {
            FeedItem::Record { record } => apply_record(conn, record, at, &mut sums)?,
            FeedItem::Field {
                entity,
                id,
                field,
                value,
                version,
            } => set_server_field(conn, *entity, id, field, value, *version, at)?,
            FeedItem::Conflict { conflict } => apply_conflict(conn, conflict, at)?,
            FeedItem::Visit { visit } => apply_visit(conn, visit, entry.seq)?,
            FeedItem::VisitStatus {
                id,
                status,
                reason,
                at: when,
            } => store::visits::set_status_from_server(conn, id, status, reason.as_deref(), when)?,
            FeedItem::Merged { merged, survivor } => {
                households::apply_merge(conn, merged, survivor)?;
            }
        }
    }
    sums.write(conn)?;
    let mut settings = SyncSettings::load(conn)?;
    for (area, cursor) in &response.cursors {
        settings.cursors.insert(area.clone(), *cursor);
    }
    settings.save(conn)
}
