//! Households and members: created, edited field by field (each edit in the record, the change
//! log and the outbox, in one transaction), listed and searched.

use std::sync::Arc;

use rusqlite::Transaction;
use serde_json::{Map, Value as Json, json};

use super::Action;
use super::{Collector, HOUSEHOLD_VISIT_FORM_ID, MAX_PAGE};
use crate::error::{Error, Result};
use crate::records::{Household, HouseholdSummary, NewHousehold, new_id, timestamp};
use crate::store::{
    self,
    households::{MemberKey, Scope},
};
use zoufang_model::domain::{LIFECYCLE_FIELDS, check_lifecycle_value, household_field_writable};
use zoufang_model::engine::{self, Evaluation};
use zoufang_model::form::{Form, ItemRef};
use zoufang_protocol::audit::AuditAction;
use zoufang_protocol::messages::{ChangeOp, Entity, Role};

/// Which form fields a completed visit writes into the household and member records.
pub(crate) struct RecordBindings {
    /// household record field → form field id
    pub household: Vec<(String, usize)>,
    /// member record field → form field id (inside the members repeat)
    pub member: Vec<(String, usize)>,
    pub members_repeat: Option<usize>,
}

impl RecordBindings {
    pub fn of(form: &Form) -> Self {
        let mut b = Self {
            household: Vec::new(),
            member: Vec::new(),
            members_repeat: None,
        };
        for (id, _) in form.fields.iter().enumerate() {
            let Some(record) = form.field_def(id).and_then(|d| d.record.clone()) else {
                continue;
            };
            if let Some(name) = record.strip_prefix("household.") {
                b.household.push((name.to_owned(), id));
            } else if let Some(name) = record.strip_prefix("member.") {
                b.member.push((name.to_owned(), id));
            }
        }
        if let Some(ItemRef::Repeat(r)) = form.lookup("members") {
            b.members_repeat = Some(r);
        }
        b
    }
}

/// A household field edit this user may make (`server_owned_field` otherwise).
fn writable(field: &str, coordinator: bool) -> Result<()> {
    household_field_writable(field, coordinator).map_err(|reason| Error::ServerOwnedField {
        field: field.to_owned(),
        reason,
    })
}

impl Collector {
    /// Checks one household or member field against the kind of the form field bound to it,
    /// and returns its canonical spelling.
    pub(super) fn check_record_value(
        &self,
        form: &Form,
        bindings: &[(String, usize)],
        field: &str,
        value: Json,
    ) -> Result<Json> {
        let Some((_, id)) = bindings.iter().find(|(name, _)| name == field) else {
            return Err(Error::InvalidInput(format!(
                "'{}' is not a field of this record",
                field.chars().take(64).collect::<String>()
            )));
        };
        if value.is_null() {
            return Ok(value);
        }
        let info = form
            .fields
            .get(*id)
            .ok_or_else(|| Error::InvalidInput("unknown field".into()))?;
        let canonical =
            engine::canonical_answer(info.kind, value).map_err(|_| Error::InvalidValue {
                field: field.to_owned(),
                code: "type_mismatch",
            })?;
        let lists = self.code_lists();
        let empty = Map::new();
        let ev = Evaluation::new(form, &empty, &lists, self.now());
        if let Some(code) = ev.check_value(*id, &canonical) {
            return Err(Error::InvalidValue {
                field: field.to_owned(),
                code,
            });
        }
        Ok(canonical)
    }

    /// Checks a value for a household or member field and returns its canonical spelling.
    pub(crate) fn checked_record_value(
        &self,
        entity: Entity,
        field: &str,
        value: Json,
    ) -> Result<Json> {
        // A status, its reason and date are the record's lifecycle, not answers of the form.
        if LIFECYCLE_FIELDS.contains(&field) {
            return match check_lifecycle_value(entity == Entity::Household, field, &value) {
                Ok(()) => Ok(value),
                Err(_) => Err(Error::InvalidValue {
                    field: field.to_owned(),
                    code: "invalid_status",
                }),
            };
        }
        let (form, b) = self.household_form()?;
        let bindings = match entity {
            Entity::Household => &b.household,
            Entity::Member => &b.member,
        };
        self.check_record_value(&form, bindings, field, value)
    }

    pub(crate) fn household_form(&self) -> Result<(Arc<Form>, RecordBindings)> {
        let form = self.latest_form(HOUSEHOLD_VISIT_FORM_ID)?;
        let bindings = RecordBindings::of(&form);
        Ok((form, bindings))
    }

    pub(super) fn insert_household(
        &self,
        tx: &Transaction<'_>,
        form: &Form,
        b: &RecordBindings,
        new: NewHousehold,
        at: &str,
    ) -> Result<String> {
        let id = new_id();
        let mut fields = Map::new();
        let village = self.check_record_value(
            form,
            &b.household,
            "village_code",
            Json::String(new.village_code),
        )?;
        let village_code = village.as_str().unwrap_or_default().to_owned();
        // Empty is no village: every household is filed under a valid 12-digit code.
        check_village(&village_code)?;
        fields.insert("village_code".into(), village);
        let coordinator = self.is_coordinator()?;
        for (k, v) in new.fields {
            if k != "village_code" {
                if !v.is_null() {
                    writable(&k, coordinator)?;
                }
                let v = self.check_record_value(form, &b.household, &k, v)?;
                fields.insert(k, v);
            }
        }
        store::households::insert_household(tx, &id, &village_code, &fields, None, at)?
            .required()?;
        let action = Action {
            entity: "household",
            entity_id: &id,
            op: "create",
            field: None,
        };
        self.audit_action(tx, action)?;
        let key = Some((Entity::Household, id.as_str(), None));
        let op = ChangeOp::CreateHousehold {
            id: id.clone(),
            village_code,
            fields,
        };
        self.enqueue(tx, at, key, op)?;
        for m in new.members {
            self.insert_member(tx, form, b, &id, m, at)?;
        }
        Ok(id)
    }

    pub(super) fn insert_member(
        &self,
        tx: &Transaction<'_>,
        form: &Form,
        b: &RecordBindings,
        household_id: &str,
        fields: Map<String, Json>,
        at: &str,
    ) -> Result<String> {
        let id = new_id();
        let mut clean = Map::new();
        for (k, v) in fields {
            if k == "id" {
                continue;
            }
            let v = self.check_record_value(form, &b.member, &k, v)?;
            clean.insert(k, v);
        }
        store::households::insert_member(tx, &id, household_id, &clean, None, at)?.required()?;
        let action = Action {
            entity: "member",
            entity_id: &id,
            op: "create",
            field: Some(household_id),
        };
        self.audit_action(tx, action)?;
        let op = ChangeOp::CreateMember {
            id: id.clone(),
            household_id: household_id.to_owned(),
            fields: clean,
        };
        self.enqueue(tx, at, Some((Entity::Member, id.as_str(), None)), op)?;
        Ok(id)
    }

    /// Creates a household with its members (one action, one transaction).
    pub fn add_household(&self, new: NewHousehold) -> Result<String> {
        self.require_user()?;
        let (form, b) = self.household_form()?;
        let at = timestamp(self.now());
        self.write(|tx| self.insert_household(tx, &form, &b, new, &at))
    }

    /// Creates many households in one transaction (first download, imports, benchmarks).
    pub fn import_households(&self, households: Vec<NewHousehold>) -> Result<Vec<String>> {
        self.require_user()?;
        let (form, b) = self.household_form()?;
        let at = timestamp(self.now());
        self.write(|tx| {
            households
                .into_iter()
                .map(|h| self.insert_household(tx, &form, &b, h, &at))
                .collect()
        })
    }

    /// Whether a household's next due date is the server's to set: its assistance category has
    /// a visit frequency.
    pub(crate) fn due_date_ruled(&self, fields: &Map<String, Json>) -> Result<bool> {
        let Some(category) = fields.get("assistance_category").and_then(Json::as_str) else {
            return Ok(false);
        };
        Ok(self
            .sync_settings()?
            .visit_frequencies
            .contains_key(category))
    }

    /// Whether the signed-in user is a coordinator (as enrolment said; a store never enrolled
    /// is held to a coordinator's rules).
    pub(crate) fn is_coordinator(&self) -> Result<bool> {
        let role = self.sync_settings()?.user.map(|u| u.role);
        Ok(role.is_none_or(|r| r == Role::Coordinator))
    }

    /// Sets one household field (`phone`, `address`...), or clears it with null. The village and
    /// server-owned fields (assistance status and category) are refused: `server_owned_field`.
    pub fn edit_household_field(&self, household_id: &str, field: &str, value: Json) -> Result<()> {
        self.require_user()?;
        let coordinator = self.is_coordinator()?;
        writable(field, coordinator)?;
        if field == "next_visit_due" && coordinator {
            let fields = self.read(|c| store::households::fields(c, household_id))?;
            if self.due_date_ruled(&fields)? {
                return Err(Error::ServerOwnedField {
                    field: field.to_owned(),
                    reason: "the next visit follows the visit frequency of the household's category",
                });
            }
        }
        let value = if field == "assistance_category" {
            // Not a form answer: a reviewer files the household under a programme.
            self.check_category(value)?
        } else {
            let (form, b) = self.household_form()?;
            self.check_record_value(&form, &b.household, field, value)?
        };
        let at = timestamp(self.now());
        self.write(|tx| {
            self.set_record_field(tx, Entity::Household, household_id, field, &value, &at)
        })
    }

    /// An assistance category is a value of the `programme` code list (or null).
    fn check_category(&self, value: Json) -> Result<Json> {
        let known = match &value {
            Json::Null => true,
            Json::String(c) => self.code_lists().contains("programme", c) == Some(true),
            _ => false,
        };
        if known {
            Ok(value)
        } else {
            Err(Error::InvalidValue {
                field: "assistance_category".into(),
                code: "choice_unknown",
            })
        }
    }

    /// Sets one member field, or clears it with null.
    pub fn edit_member_field(&self, member_id: &str, field: &str, value: Json) -> Result<()> {
        self.require_user()?;
        let (form, b) = self.household_form()?;
        let value = self.check_record_value(&form, &b.member, field, value)?;
        let at = timestamp(self.now());
        self.write(|tx| self.set_record_field(tx, Entity::Member, member_id, field, &value, &at))
    }

    pub fn add_member(&self, household_id: &str, fields: Map<String, Json>) -> Result<String> {
        self.require_user()?;
        let (form, b) = self.household_form()?;
        let at = timestamp(self.now());
        self.write(|tx| {
            store::households::require(tx, household_id)?;
            self.insert_member(tx, &form, &b, household_id, fields, &at)
        })
    }

    /// A direct edit of one household or member field: the record, the audit trail and the
    /// outbox, in the caller's transaction.
    pub(super) fn set_record_field(
        &self,
        tx: &Transaction<'_>,
        entity: Entity,
        id: &str,
        field: &str,
        value: &Json,
        at: &str,
    ) -> Result<()> {
        self.set_record_field_on(tx, (entity, id, field), value, at, None)
    }

    /// Sets a record field, the edit based on `seen` (the server version its editor saw) or,
    /// with `None`, on the version the phone knows now.
    pub(super) fn set_record_field_on(
        &self,
        tx: &Transaction<'_>,
        (entity, id, field): (Entity, &str, &str),
        value: &Json,
        at: &str,
        seen: Option<u64>,
    ) -> Result<()> {
        store::households::store_field(tx, entity, id, field, value, at)?;
        let action = Action {
            entity: entity.as_str(),
            entity_id: id,
            op: "set_field",
            field: Some(field),
        };
        self.audit_action(tx, action)?;
        self.enqueue_field_edit(tx, at, (entity, id, field), value, None, seen)
    }

    /// A household with its members, for display: the view is recorded in the audit trail.
    pub fn household(&self, id: &str) -> Result<Household> {
        let household = self.load_household(id)?;
        self.audit_now(AuditAction::View, Some(("household", id)), json!({}))?;
        Ok(household)
    }

    pub(crate) fn load_household(&self, id: &str) -> Result<Household> {
        self.read(|c| store::households::load(c, id))
    }

    /// Active households of a village, by head's name.
    pub fn households_in_village(
        &self,
        village_code: &str,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<HouseholdSummary>> {
        check_village(village_code)?;
        let page = (limit.min(MAX_PAGE), offset);
        self.read(|c| store::households::in_village(c, village_code, page, Scope::Active))
    }

    /// Households whose next visit is due on or before `date` (YYYY-MM-DD), soonest first;
    /// optionally within one village.
    pub fn households_due(
        &self,
        on_or_before: &str,
        village_code: Option<&str>,
        limit: u32,
    ) -> Result<Vec<HouseholdSummary>> {
        if let Some(v) = village_code {
            check_village(v)?;
        }
        self.read(|c| store::households::due(c, on_or_before, village_code, limit.min(MAX_PAGE)))
    }

    /// Active households with a member present whose name starts with `query`, or whose
    /// resident ID starts with it when the query looks like an ID.
    pub fn search_households(&self, query: &str, limit: u32) -> Result<Vec<HouseholdSummary>> {
        self.search(query, limit, Scope::Active)
    }

    pub(super) fn search(
        &self,
        query: &str,
        limit: u32,
        scope: Scope,
    ) -> Result<Vec<HouseholdSummary>> {
        let q = query.trim();
        if q.is_empty() {
            return Ok(Vec::new());
        }
        let looks_like_id = q
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, 'x' | 'X' | '０'..='９'));
        let (key, prefix) = if looks_like_id {
            (
                MemberKey::IdNumber,
                zoufang_model::domain::normalize_resident_id(q),
            )
        } else {
            (
                MemberKey::Name,
                zoufang_model::domain::normalize_person_name(q),
            )
        };
        let limit = limit.min(MAX_PAGE);
        self.read(|c| store::households::with_member_prefix(c, key, &prefix, limit, scope))
    }
}

/// A village code as it enters from an app or the CLI: a valid 12-digit region code.
fn check_village(village_code: &str) -> Result<()> {
    zoufang_model::domain::check_region_code(village_code).map_err(|e| Error::InvalidValue {
        field: "village_code".into(),
        code: e.code(),
    })
}
