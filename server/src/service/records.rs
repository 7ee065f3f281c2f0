//! Households and members: creating them and applying field edits under the merge rule
//! (`crate::merge`): an edit on the current version applies; one on an older version whose
//! value differs keeps both values as a conflict, with a provisional value, sent to every
//! device in scope; a resolution closes it. Every accepted change gets the next server sequence
//! number, enters the feed and moves the village's checksum.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value as Json};
use zoufang_protocol::checksum::field_hash;
use zoufang_protocol::messages::{
    Ack, CompetingValue, ConflictInfo, ConflictStatus, Entity, FeedItem, FieldValue, Outcome,
    RecordState,
};

use zoufang_model::domain::{check_lifecycle_value, household_field_writable};
use zoufang_protocol::messages::Role;

use crate::merge::{Decision, Edit, FieldNow, decide};
use crate::repo::{StoredField, StoredWriter, Tx};
use crate::storage::{DeviceAuth, PossibleDuplicate, Result};

/// Largest value of one field accepted.
const MAX_FIELD_BYTES: usize = 16 * 1024;

/// Who is writing, as the fields and conflicts record it.
#[derive(Debug, Clone)]
pub struct PushContext<'a> {
    pub auth: &'a DeviceAuth,
    pub received_at: String,
    pub skewed: bool,
    /// The sender's clock minus the server's, as its push reported it.
    pub clock_offset: chrono::TimeDelta,
    /// Publication times of the form versions this push's visits name, read once a push:
    /// a form's row carries its whole definition, pages of it read for every visit otherwise.
    published: RefCell<HashMap<(String, u32), Option<String>>>,
}

impl<'a> PushContext<'a> {
    /// Changes written at `received_at` by a sender whose clock is `clock_offset` ahead.
    pub fn new(auth: &'a DeviceAuth, received_at: String, clock_offset: chrono::TimeDelta) -> Self {
        Self {
            auth,
            received_at,
            skewed: clock_offset.abs() > super::push::CLOCK_SKEW_LIMIT,
            clock_offset,
            published: RefCell::default(),
        }
    }

    /// When this form version was published here, if it was.
    pub fn form_published_at(
        &self,
        tx: &mut dyn Tx,
        form_id: &str,
        version: u32,
    ) -> Result<Option<String>> {
        let key = (form_id.to_owned(), version);
        if let Some(at) = self.published.borrow().get(&key) {
            return Ok(at.clone());
        }
        let at = tx.form_published_at(form_id, version)?;
        self.published.borrow_mut().insert(key, at.clone());
        Ok(at)
    }

    fn writer(&self, seq: u64, device_time: &str) -> StoredWriter {
        StoredWriter {
            device: self.auth.lineage.clone(),
            seq,
            user: self.auth.user.id.clone(),
            received_at: self.received_at.clone(),
            device_time: device_time.to_owned(),
            skewed: self.skewed,
        }
    }
}

pub fn rejected(seq: u64, code: &str, message: &str) -> Ack {
    Ack {
        seq,
        outcome: Outcome::Rejected,
        version: None,
        value: None,
        conflict: None,
        code: Some(code.to_owned()),
        message: Some(message.to_owned()),
    }
}

/// The refusal of an id another record holds: it says nothing of that record.
pub fn id_in_use(seq: u64) -> Ack {
    rejected(seq, "id_in_use", "the id is already used by another record")
}

pub fn applied(
    seq: u64,
    outcome: Outcome,
    version: u64,
    value: Option<Json>,
    conflict: Option<ConflictInfo>,
) -> Ack {
    Ack {
        seq,
        outcome,
        version: Some(version),
        value,
        conflict,
        code: None,
        message: None,
    }
}

pub fn check_fields(fields: &Map<String, Json>) -> std::result::Result<(), &'static str> {
    if fields.len() > 200 {
        return Err("too many fields");
    }
    for (k, v) in fields {
        if k.is_empty()
            || k.len() > 64
            || !k
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err("a field name is 1 to 64 of [a-z0-9_]");
        }
        if v.to_string().len() > MAX_FIELD_BYTES {
            return Err("a field value is too large");
        }
    }
    Ok(())
}

/// The next server sequence number.
pub fn next_seq(tx: &mut dyn Tx) -> Result<u64> {
    Ok(tx.feed_head()? + 1)
}

/// Stores a field and keeps its village's checksum in step (wrapping u64 arithmetic: the sum
/// of per-field hashes, order-independent).
fn write_field(
    tx: &mut dyn Tx,
    (entity, id, village, field): (Entity, &str, &str, &str),
    stored: &StoredField,
    old: Option<(&Json, u64)>,
) -> Result<()> {
    tx.put_field(entity, id, field, stored)?;
    let remove = old.map_or(0, |(v, ver)| field_hash(entity, id, field, ver, v));
    let add = field_hash(entity, id, field, stored.version, &stored.value);
    let sum = tx.checksum(village)?.wrapping_sub(remove).wrapping_add(add);
    tx.set_checksum(village, sum)
}

/// A new household or member, written whole: its fields at one version, one feed entry.
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    pub entity: Entity,
    pub id: &'a str,
    pub household_id: Option<&'a str>,
    pub village: &'a str,
    pub fields: &'a Map<String, Json>,
}

pub fn create_record(
    tx: &mut dyn Tx,
    ctx: &PushContext<'_>,
    (device_seq, device_time): (u64, &str),
    r: &NewRecord<'_>,
) -> Result<Ack> {
    if let Err(why) = check_fields(r.fields) {
        return Ok(rejected(device_seq, "invalid_value", why));
    }
    let household = r.entity == Entity::Household;
    if let Some(why) = r
        .fields
        .iter()
        .find_map(|(f, v)| check_lifecycle_value(household, f, v).err())
    {
        return Ok(rejected(device_seq, "invalid_value", why));
    }
    if r.entity == Entity::Household
        && let Some(refusal) = household_fields_refusal(ctx, device_seq, r)
    {
        return Ok(refusal);
    }
    if uuid::Uuid::parse_str(r.id).is_err() {
        return Ok(rejected(
            device_seq,
            "invalid_value",
            "record ids are UUIDs",
        ));
    }
    if let Some(created) = tx.record_created(r.entity, r.id)? {
        // The same record sent again is unchanged; an id taken by another record (in another
        // village, perhaps outside the sender's areas) is refused without saying where.
        let same = tx
            .locate(r.entity, r.id)?
            .is_some_and(|(village, household)| {
                village == r.village && r.household_id.is_none_or(|h| h == household)
            });
        if same {
            return Ok(applied(device_seq, Outcome::Unchanged, created, None, None));
        }
        return Ok(id_in_use(device_seq));
    }
    let seq = next_seq(tx)?;
    tx.insert_record(r.entity, r.id, r.household_id, r.village, seq)?;
    let mut state = BTreeMap::new();
    for (field, value) in r.fields {
        let stored = StoredField {
            value: value.clone(),
            version: seq,
            writer: ctx.writer(device_seq, device_time),
            conflict_id: None,
        };
        write_field(tx, (r.entity, r.id, r.village, field), &stored, None)?;
        let fv = FieldValue {
            value: value.clone(),
            version: seq,
        };
        state.insert(field.clone(), fv);
    }
    let record = RecordState {
        entity: r.entity,
        id: r.id.to_owned(),
        household_id: r.household_id.map(str::to_owned),
        village_code: r.village.to_owned(),
        fields: state,
    };
    let item = FeedItem::Record { record };
    tx.append_feed(seq, r.village, &ctx.auth.lineage, &item)?;
    let ack = applied(device_seq, Outcome::Applied, seq, None, None);
    match (r.entity, r.fields.get("id_number"), r.household_id) {
        (Entity::Member, Some(id_number), Some(household)) => {
            let member = (r.id, household, r.village);
            flag_id_number(tx, ctx, member, id_number, ack)
        }
        _ => Ok(ack),
    }
}

/// One resident ID per present member in the province: a member now holding an ID another
/// present member holds is flagged, pair by pair, to the reviewers whose areas cover both
/// households; the sender hears only that the ID is registered elsewhere.
fn flag_id_number(
    tx: &mut dyn Tx,
    ctx: &PushContext<'_>,
    (member, household, village): (&str, &str, &str),
    id_number: &Json,
    mut ack: Ack,
) -> Result<Ack> {
    if !id_number.is_string() {
        return Ok(ack);
    }
    let others = tx.members_with_id_number(&id_number.to_string(), member)?;
    for (other, other_household, other_village) in &others {
        let mine = (member, household, village);
        let theirs = (
            other.as_str(),
            other_household.as_str(),
            other_village.as_str(),
        );
        let (a, b) = if mine.0 < theirs.0 {
            (mine, theirs)
        } else {
            (theirs, mine)
        };
        tx.flag_duplicate(&PossibleDuplicate {
            member_a: a.0.to_owned(),
            household_a: a.1.to_owned(),
            village_a: a.2.to_owned(),
            member_b: b.0.to_owned(),
            household_b: b.1.to_owned(),
            village_b: b.2.to_owned(),
            found_at: ctx.received_at.clone(),
        })?;
    }
    if !others.is_empty() {
        ack.code = Some("possible_duplicate".into());
        ack.message =
            Some("this ID is already registered elsewhere; your township will check".into());
    }
    Ok(ack)
}

/// A new household whose village field names another village than the one it is filed under,
/// or that a coordinator sends with a server-owned field set.
fn household_fields_refusal(ctx: &PushContext<'_>, seq: u64, r: &NewRecord<'_>) -> Option<Ack> {
    if r.fields
        .get("village_code")
        .is_some_and(|v| v.as_str() != Some(r.village))
    {
        let m = "the household's village field differs from the village it is filed under";
        return Some(rejected(seq, "invalid_value", m));
    }
    let coordinator = ctx.auth.user.role == Role::Coordinator;
    r.fields
        .iter()
        .filter(|(field, value)| field.as_str() != "village_code" && !value.is_null())
        .find_map(|(field, _)| household_field_writable(field, coordinator).err())
        .map(|why| rejected(seq, "server_owned_field", why))
}

/// One field edit as a device (or a reviewer, with device sequence 0) sent it.
#[derive(Debug, Clone, Copy)]
pub struct FieldEdit<'a> {
    pub device_seq: u64,
    pub device_time: &'a str,
    pub entity: Entity,
    pub id: &'a str,
    pub field: &'a str,
    pub value: &'a Json,
    pub base: u64,
    pub after: Option<u64>,
}

/// Applies one field edit under the merge rule.
pub fn set_field(tx: &mut dyn Tx, ctx: &PushContext<'_>, e: &FieldEdit<'_>) -> Result<Ack> {
    // A record outside the sender's areas reads as one that does not exist.
    let located = tx.locate(e.entity, e.id)?;
    let Some((village, household)) = located.filter(|(v, _)| ctx.auth.covers(v)) else {
        let m = "the record does not exist on the server";
        return Ok(rejected(e.device_seq, "not_found", m));
    };
    if e.entity == Entity::Household
        && let Err(why) = household_field_writable(e.field, ctx.auth.user.role == Role::Coordinator)
    {
        return Ok(rejected(e.device_seq, "server_owned_field", why));
    }
    if let Err(why) = check_lifecycle_value(e.entity == Entity::Household, e.field, e.value) {
        return Ok(rejected(e.device_seq, "invalid_value", why));
    }
    if let Some(why) = super::due::refusal(tx, ctx.auth, e)? {
        return Ok(rejected(e.device_seq, "server_owned_field", why));
    }
    let mut one = Map::new();
    one.insert(e.field.to_owned(), e.value.clone());
    if let Err(why) = check_fields(&one) {
        return Ok(rejected(e.device_seq, "invalid_value", why));
    }
    let current = tx.field(e.entity, e.id, e.field)?;
    let conflict = match current.as_ref().and_then(|c| c.conflict_id.as_deref()) {
        Some(cid) => tx.conflict(cid)?,
        None => None,
    };
    let decision = decision_for(ctx, e, current.as_ref(), conflict.as_ref());
    let place = Place {
        village: &village,
        household: &household,
    };
    match decision {
        Decision::RejectFutureBase => Ok(rejected(
            e.device_seq,
            "future_base",
            "the edit names a field version the server never issued",
        )),
        Decision::Unchanged => {
            let v = current.as_ref().map_or(0, |c| c.version);
            let value = current.map(|c| c.value);
            Ok(applied(
                e.device_seq,
                Outcome::Unchanged,
                v,
                value,
                conflict,
            ))
        }
        Decision::Apply => {
            let ack = apply_edit(tx, ctx, e, &place, current.as_ref())?;
            if e.entity == Entity::Household && e.field == "assistance_category" {
                // A new category may bring another visit frequency.
                super::due::apply_rule(tx, e.id, &village, &ctx.received_at)?;
            }
            Ok(ack)
        }
        Decision::OpenConflict => open_conflict(tx, ctx, e, &place, current.as_ref()),
        Decision::JoinConflict | Decision::Resolve => {
            let resolve = decision == Decision::Resolve;
            join_conflict(tx, ctx, e, &place, current.as_ref(), conflict, resolve)
        }
    }
}

/// Where a record lives.
struct Place<'a> {
    village: &'a str,
    household: &'a str,
}

fn decision_for(
    ctx: &PushContext<'_>,
    e: &FieldEdit<'_>,
    current: Option<&StoredField>,
    conflict: Option<&ConflictInfo>,
) -> Decision {
    let competing: Vec<Json> = conflict
        .map(|c| c.values.iter().map(|v| v.value.clone()).collect())
        .unwrap_or_default();
    let now = FieldNow {
        value: current.map(|c| &c.value),
        version: current.map_or(0, |c| c.version),
        writer: current.map(|c| (c.writer.device.as_str(), c.writer.seq)),
        conflict: conflict.map(|c| (c.version, competing.as_slice())),
    };
    decide(
        &now,
        &Edit {
            value: e.value,
            base: e.base,
            device: &ctx.auth.lineage,
            after: e.after,
        },
    )
}

/// Writes fields of one record as the server decides them (a reviewer's merge or move, the
/// due-date rule), each on its current version: no merge rule, no device checks; `auth` is who
/// the fields name as their writer.
pub fn write_fields_as_server(
    tx: &mut dyn Tx,
    auth: &DeviceAuth,
    (entity, id, village): (Entity, &str, &str),
    fields: &[(&str, Json)],
    at: &str,
) -> Result<()> {
    let ctx = PushContext::new(auth, at.to_owned(), chrono::TimeDelta::zero());
    let household = tx
        .locate(entity, id)?
        .map_or_else(|| id.to_owned(), |(_, h)| h);
    let place = Place {
        village,
        household: &household,
    };
    for (field, value) in fields {
        let current = tx.field(entity, id, field)?;
        let edit = FieldEdit {
            device_seq: 0,
            device_time: at,
            entity,
            id,
            field,
            value,
            base: current.as_ref().map_or(0, |f| f.version),
            after: None,
        };
        apply_edit(tx, &ctx, &edit, &place, current.as_ref())?;
    }
    Ok(())
}

fn apply_edit(
    tx: &mut dyn Tx,
    ctx: &PushContext<'_>,
    e: &FieldEdit<'_>,
    place: &Place<'_>,
    current: Option<&StoredField>,
) -> Result<Ack> {
    let seq = next_seq(tx)?;
    let stored = StoredField {
        value: e.value.clone(),
        version: seq,
        writer: ctx.writer(e.device_seq, e.device_time),
        conflict_id: None,
    };
    let old = current.map(|c| (&c.value, c.version));
    write_field(tx, (e.entity, e.id, place.village, e.field), &stored, old)?;
    let item = FeedItem::Field {
        entity: e.entity,
        id: e.id.to_owned(),
        field: e.field.to_owned(),
        value: e.value.clone(),
        version: seq,
    };
    tx.append_feed(seq, place.village, &ctx.auth.lineage, &item)?;
    let value = Some(e.value.clone());
    let ack = applied(e.device_seq, Outcome::Applied, seq, value, None);
    if e.entity == Entity::Member && e.field == "id_number" {
        let member = (e.id, place.household, place.village);
        return flag_id_number(tx, ctx, member, e.value, ack);
    }
    Ok(ack)
}

fn competitor(ctx: &PushContext<'_>, e: &FieldEdit<'_>, seq: u64) -> CompetingValue {
    CompetingValue {
        value: e.value.clone(),
        user: ctx.auth.user.id.clone(),
        device: ctx.auth.lineage.clone(),
        received_at: ctx.received_at.clone(),
        device_time: e.device_time.to_owned(),
        seq,
        clock_skewed: ctx.skewed,
    }
}

fn open_conflict(
    tx: &mut dyn Tx,
    ctx: &PushContext<'_>,
    e: &FieldEdit<'_>,
    place: &Place<'_>,
    current: Option<&StoredField>,
) -> Result<Ack> {
    let seq = next_seq(tx)?;
    let Some(cur) = current else {
        let m = "a conflict needs an existing value";
        return Ok(rejected(e.device_seq, "invalid_state", m));
    };
    let held = CompetingValue {
        value: cur.value.clone(),
        user: cur.writer.user.clone(),
        device: cur.writer.device.clone(),
        received_at: cur.writer.received_at.clone(),
        device_time: cur.writer.device_time.clone(),
        seq: cur.version,
        clock_skewed: cur.writer.skewed,
    };
    let info = ConflictInfo {
        id: uuid::Uuid::now_v7().to_string(),
        entity: e.entity,
        entity_id: e.id.to_owned(),
        household_id: place.household.to_owned(),
        village_code: place.village.to_owned(),
        field: e.field.to_owned(),
        values: vec![held, competitor(ctx, e, seq)],
        provisional: e.value.clone(),
        status: ConflictStatus::Open,
        resolution: None,
        resolved_by: None,
        version: seq,
    };
    commit_conflict(tx, ctx, e, place, current, info, seq, Outcome::Conflict)
}

fn join_conflict(
    tx: &mut dyn Tx,
    ctx: &PushContext<'_>,
    e: &FieldEdit<'_>,
    place: &Place<'_>,
    current: Option<&StoredField>,
    conflict: Option<ConflictInfo>,
    resolve: bool,
) -> Result<Ack> {
    let seq = next_seq(tx)?;
    let Some(mut info) = conflict else {
        let m = "no open conflict on this field";
        return Ok(rejected(e.device_seq, "invalid_state", m));
    };
    info.provisional = e.value.clone();
    info.version = seq;
    if resolve {
        info.status = ConflictStatus::Resolved;
        info.resolution = Some(e.value.clone());
        info.resolved_by = Some(ctx.auth.user.id.clone());
        commit_conflict(tx, ctx, e, place, current, info, seq, Outcome::Applied)
    } else {
        info.values.push(competitor(ctx, e, seq));
        commit_conflict(tx, ctx, e, place, current, info, seq, Outcome::Conflict)
    }
}

/// The last step of every conflict outcome: keep the conflict, set the field (still
/// conflicted unless resolved), tell every device in scope, and answer.
#[allow(clippy::too_many_arguments)]
fn commit_conflict(
    tx: &mut dyn Tx,
    ctx: &PushContext<'_>,
    e: &FieldEdit<'_>,
    place: &Place<'_>,
    current: Option<&StoredField>,
    info: ConflictInfo,
    seq: u64,
    outcome: Outcome,
) -> Result<Ack> {
    tx.save_conflict(&info)?;
    let open = (info.status == ConflictStatus::Open).then(|| info.id.clone());
    let stored = StoredField {
        value: e.value.clone(),
        version: seq,
        writer: ctx.writer(e.device_seq, e.device_time),
        conflict_id: open,
    };
    let old = current.map(|c| (&c.value, c.version));
    write_field(tx, (e.entity, e.id, place.village, e.field), &stored, old)?;
    let item = FeedItem::Conflict {
        conflict: info.clone(),
    };
    tx.append_feed(seq, place.village, &ctx.auth.lineage, &item)?;
    let value = Some(e.value.clone());
    Ok(applied(e.device_seq, outcome, seq, value, Some(info)))
}
