//! Edits on the version seen. A draft remembers, per household and member field it was
//! prefilled with, the value and the server version the phone knew when it was opened. On
//! completion only what the coordinator changed during the visit becomes an edit, based on that
//! version, so the server's merge rule turns a real overlap with a colleague's correction into
//! a conflict and leaves a field the coordinator did not touch as the colleague left it (ODK
//! edits on the version the form was opened with, too). Before completion, the fields changed
//! by others since the draft was opened are listed.

use rusqlite::Connection;
use serde_json::{Map, Value as Json, json};

use super::households::RecordBindings;
use crate::error::Result;
use crate::store;
use crate::sync::apply;
use zoufang_model::engine::Problem;
use zoufang_model::form::{Form, Severity};
use zoufang_protocol::messages::Entity;

/// A record field an answer of the draft is bound to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Slot {
    /// The answer's path: `household_phone`, `members[1].id_number`.
    pub path: String,
    pub entity: Entity,
    pub record_id: String,
    pub field: String,
    pub answer: Json,
}

/// The value a draft was opened with and the server version behind it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Seen {
    pub value: Json,
    pub version: u64,
}

fn key(entity: Entity, id: &str, field: &str) -> String {
    format!("{}:{id}:{field}", entity.as_str())
}

/// Every answer bound to an existing record: the household's fields, and the fields of each
/// members instance that names its member (`member_id`).
pub(crate) fn slots(
    form: &Form,
    b: &RecordBindings,
    household_id: &str,
    answers: &Map<String, Json>,
) -> Vec<Slot> {
    let name = |id: usize| form.fields.get(id).map(|f| f.name.clone());
    let mut out = Vec::new();
    for (record, id) in &b.household {
        if let Some(n) = name(*id) {
            out.push(Slot {
                answer: answers.get(&n).cloned().unwrap_or(Json::Null),
                path: n,
                entity: Entity::Household,
                record_id: household_id.to_owned(),
                field: record.clone(),
            });
        }
    }
    let repeat = b.members_repeat.and_then(|r| form.repeats.get(r));
    let instances = repeat.and_then(|r| answers.get(&r.name).map(|v| (r, v)));
    let Some((repeat, Json::Array(instances))) = instances else {
        return out;
    };
    for (i, instance) in instances.iter().enumerate() {
        let Some(member) = instance.get("member_id").and_then(Json::as_str) else {
            continue;
        };
        for (record, id) in b.member.iter().filter(|(r, _)| r != "id") {
            if let Some(n) = name(*id) {
                out.push(Slot {
                    answer: instance.get(&n).cloned().unwrap_or(Json::Null),
                    path: format!("{}[{i}].{n}", repeat.name),
                    entity: Entity::Member,
                    record_id: member.to_owned(),
                    field: record.clone(),
                });
            }
        }
    }
    out
}

/// What a draft opens with: each bound answer and the server version the phone knows of its
/// field. A revision keeps the versions its original was opened with (`earlier`).
pub(crate) fn snapshot(
    conn: &Connection,
    slots: &[Slot],
    earlier: Option<&Map<String, Json>>,
) -> Result<Map<String, Json>> {
    let mut seen = Map::new();
    for s in slots {
        let k = key(s.entity, &s.record_id, &s.field);
        let version = match earlier.and_then(|e| lookup(e, s)) {
            Some(before) => before.version,
            None => apply::server_field(conn, s.entity, &s.record_id, &s.field)?
                .map_or(0, |f| f.version),
        };
        seen.insert(k, json!({"value": s.answer, "version": version}));
    }
    Ok(seen)
}

/// What the draft was opened with for this slot's field, if it was recorded.
pub(crate) fn lookup(seen: &Map<String, Json>, s: &Slot) -> Option<Seen> {
    opened(seen, s.entity, &s.record_id, &s.field)
}

/// What the draft was opened with for a record field, if it was recorded.
pub(crate) fn opened(
    seen: &Map<String, Json>,
    entity: Entity,
    id: &str,
    field: &str,
) -> Option<Seen> {
    let entry = seen.get(&key(entity, id, field))?;
    Some(Seen {
        value: entry.get("value").cloned().unwrap_or(Json::Null),
        version: entry.get("version").and_then(Json::as_u64).unwrap_or(0),
    })
}

/// The record's value of a slot's field as the phone holds it now.
fn current(conn: &Connection, s: &Slot, household_id: &str) -> Result<Json> {
    let fields = match s.entity {
        Entity::Household => Some(store::households::fields(conn, &s.record_id)?),
        Entity::Member => store::households::member_fields(conn, &s.record_id, household_id)?,
    };
    Ok(fields
        .and_then(|f| f.get(&s.field).cloned())
        .unwrap_or(Json::Null))
}

/// A prefilled value someone else changed since the draft was opened: (slot, opened with, now).
pub(crate) fn changed_since_opened(
    conn: &Connection,
    seen: &Map<String, Json>,
    slots: Vec<Slot>,
    household_id: &str,
) -> Result<Vec<(Slot, Json, Json)>> {
    let mut out = Vec::new();
    for s in slots {
        let Some(opened) = lookup(seen, &s) else {
            continue;
        };
        let now = current(conn, &s, household_id)?;
        if now != opened.value {
            out.push((s, opened.value, now));
        }
    }
    Ok(out)
}

/// The warning a changed field shows on the draft (values never in messages).
pub(crate) fn changed_problem(path: &str) -> Problem {
    Problem {
        path: path.to_owned(),
        code: "changed_since_opened".into(),
        severity: Severity::Warning,
        message_zh: "开始走访后此项已被他人更改，请核对".into(),
        message_en: "Someone changed this since the visit was opened; check it".into(),
    }
}
