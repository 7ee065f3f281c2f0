//! Visits: started prefilled from the household, autosaved answer by answer, validated,
//! completed (writing what they found into the household's records), signed, voided, revised.

use rusqlite::Transaction;
use serde_json::{Map, Value as Json, json};

use super::Action;
use super::{Collector, FieldState, HOUSEHOLD_VISIT_FORM_ID, NEW_DISCOVERY, RecordBindings};
use super::{duplicates, seen};
use crate::error::{Error, Result};
use crate::records::{
    ChangedSinceOpened, NewHousehold, Visit, VisitStatus, VisitSummary, new_id, timestamp,
};
use crate::store::{self, parse_object};
use zoufang_model::engine::{self, Evaluation, Problem};
use zoufang_model::form::{Form, ItemRef, Severity};
use zoufang_protocol::audit::AuditAction;
use zoufang_protocol::messages::{ChangeOp, Entity};

/// Turns a visit-shaped JSON object into (path, value) pairs, repeats expanded by index.
fn flatten_answers(
    form: &Form,
    answers: &Map<String, Json>,
    prefix: &str,
    out: &mut Vec<(String, Json)>,
) {
    for (key, value) in answers {
        match (form.lookup(key), value) {
            (Some(ItemRef::Repeat(_)), Json::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Json::Object(obj) => {
                            flatten_answers(form, obj, &format!("{prefix}{key}[{i}]."), out)
                        }
                        // Reported by set_answer as a path error.
                        other => out.push((format!("{prefix}{key}[{i}]"), other.clone())),
                    }
                }
            }
            (_, other) => out.push((format!("{prefix}{key}"), other.clone())),
        }
    }
}

/// The answers a new visit starts with: its type and start, and what the store knows of the
/// household. A stored value that no longer fits the form (an older form's choice) is left out.
fn prefill(
    form: &Form,
    household: Option<&crate::records::Household>,
    visit_type: &str,
    started_at: &str,
) -> Map<String, Json> {
    let mut answers = Map::new();
    let put = |answers: &mut Map<String, Json>, name: &str, indices: &[usize], value: Json| {
        let Some(ItemRef::Field(f)) = form.lookup(name) else {
            return;
        };
        if let Some(info) = form.fields.get(f) {
            let _ = engine::put_answer(form, answers, info, indices, name, value);
        }
    };
    put(&mut answers, "visit_type", &[], Json::from(visit_type));
    put(&mut answers, "started_at", &[], Json::from(started_at));
    if visit_type == NEW_DISCOVERY {
        put(
            &mut answers,
            "trigger_source",
            &[],
            Json::from("discovered"),
        );
    }
    let Some(h) = household else {
        return answers;
    };
    let b = RecordBindings::of(form);
    for (record, field) in &b.household {
        if let (Some(v), Some(info)) = (h.fields.get(record), form.fields.get(*field)) {
            put(&mut answers, &info.name, &[], v.clone());
        }
    }
    for (i, m) in h.members.iter().enumerate() {
        for (record, field) in &b.member {
            let Some(info) = form.fields.get(*field) else {
                continue;
            };
            let v = if record == "id" {
                Some(Json::from(m.id.clone()))
            } else {
                m.fields.get(record).cloned()
            };
            if let Some(v) = v {
                let _ = engine::put_answer(form, &mut answers, info, &[i], &info.name, v);
            }
        }
    }
    answers
}

/// A visit of a known household is filed under that household's village: a different village
/// code in the answers blocks completion (moving a household is a reviewer's operation).
fn village_problem(conn: &rusqlite::Connection, visit: &Visit) -> Result<Option<Problem>> {
    let Some(household) = &visit.household_id else {
        return Ok(None);
    };
    let answer = visit.answers.get("village_code").filter(|v| !v.is_null());
    let held = store::households::fields(conn, household)?;
    if answer.is_none_or(|a| held.get("village_code") == Some(a)) {
        return Ok(None);
    }
    Ok(Some(Problem {
        path: "village_code".into(),
        code: "household_village".into(),
        severity: Severity::Error,
        message_zh: "村代码与该户所在村不一致；迁户须由乡镇办理".into(),
        message_en: "The village differs from the household's; moving a household is the township's operation".into(),
    }))
}

/// What of a draft's prefilled values changed on the phone since it was opened.
fn changed_since_opened(
    conn: &rusqlite::Connection,
    form: &Form,
    visit: &Visit,
) -> Result<Vec<ChangedSinceOpened>> {
    let (Some(household), VisitStatus::Draft) = (&visit.household_id, visit.status) else {
        return Ok(Vec::new());
    };
    let Some(opened) = store::visits::seen(conn, &visit.id)? else {
        return Ok(Vec::new());
    };
    let slots = seen::slots(form, &RecordBindings::of(form), household, &visit.answers);
    Ok(seen::changed_since_opened(conn, &opened, slots, household)?
        .into_iter()
        .map(|(slot, opened_with, now)| ChangedSinceOpened {
            path: slot.path,
            opened_with,
            now,
        })
        .collect())
}

/// How a completion files answers into records: its time and what the draft was opened with.
struct Filing<'a> {
    at: &'a str,
    seen: Option<&'a Map<String, Json>>,
}

impl Collector {
    /// Starts a draft visit of `visit_type` for a household (or, with `None`, for a household
    /// being discovered), prefilled with what the store knows of the household.
    pub fn start_visit(&self, household_id: Option<&str>, visit_type: &str) -> Result<Visit> {
        let author = self.require_user()?;
        let form = self.latest_form(HOUSEHOLD_VISIT_FORM_ID)?;
        let known_type = form
            .choice_list("visit_type")
            .is_some_and(|l| l.iter().any(|c| c.value == visit_type));
        if !known_type {
            return Err(Error::InvalidValue {
                field: "visit_type".into(),
                code: "choice_unknown",
            });
        }
        let household = household_id.map(|h| self.load_household(h)).transpose()?;
        let now = timestamp(self.now());
        let answers = prefill(&form, household.as_ref(), visit_type, &now);
        let visit = Visit {
            id: new_id(),
            household_id: household.map(|h| h.id),
            form_id: form.id().to_owned(),
            form_version: form.version(),
            visit_type: visit_type.to_owned(),
            status: VisitStatus::Draft,
            answers,
            author,
            revision_of: None,
            void_reason: None,
            created_at: now.clone(),
            updated_at: now,
            completed_at: None,
            signed_at: None,
        };
        self.store_new_visit(&visit, ("create", Some(&visit.visit_type)), None)?;
        Ok(visit)
    }

    /// Stores a new draft with what it was prefilled from (`seen.rs`); a revision passes the
    /// visit it revises, whose versions it keeps.
    fn store_new_visit(
        &self,
        visit: &Visit,
        (op, field): (&'static str, Option<&str>),
        revises: Option<&str>,
    ) -> Result<()> {
        let form = self.form(&visit.form_id, visit.form_version)?;
        let b = RecordBindings::of(&form);
        self.write(|tx| {
            store::visits::insert(tx, visit)?;
            if let Some(h) = &visit.household_id {
                let earlier = revises.map(|r| store::visits::seen(tx, r)).transpose()?;
                let slots = seen::slots(&form, &b, h, &visit.answers);
                let snapshot = seen::snapshot(tx, &slots, earlier.flatten().as_ref())?;
                store::visits::set_seen(tx, &visit.id, &snapshot)?;
            }
            let action = Action {
                entity: "visit",
                entity_id: &visit.id,
                op,
                field,
            };
            self.audit_action(tx, action)
        })
    }

    /// Starts a correction of a completed or signed visit: a new draft that names the visit it
    /// replaces, with its answers.
    pub fn revise_visit(&self, visit_id: &str) -> Result<Visit> {
        let author = self.require_user()?;
        let old = self.load_visit(visit_id)?;
        if !matches!(old.status, VisitStatus::Completed | VisitStatus::Signed) {
            return Err(Error::VisitWrongStatus {
                id: old.id,
                status: old.status.as_str(),
                action: "revised",
            });
        }
        let now = timestamp(self.now());
        let visit = Visit {
            id: new_id(),
            status: VisitStatus::Draft,
            author,
            revision_of: Some(old.id.clone()),
            created_at: now.clone(),
            updated_at: now,
            completed_at: None,
            signed_at: None,
            void_reason: None,
            ..old
        };
        let revises = visit.revision_of.as_deref();
        self.store_new_visit(&visit, ("revise", revises), revises)?;
        Ok(visit)
    }

    /// Autosaves one answer of a draft (`members[2].id_number`); `null` clears it. One
    /// transaction: a crash loses at most this answer.
    pub fn set_answer(&self, visit_id: &str, path: &str, value: Json) -> Result<()> {
        self.require_user()?;
        self.edit_draft(
            visit_id,
            |_, form, answers| Ok(engine::set_answer(form, answers, path, value)?),
            ("set_answer", Some(path)),
        )
    }

    /// Sets many answers in one action: `answers` is shaped like a visit's answers (repeats as
    /// arrays of objects); it is merged into the draft.
    pub fn set_answers(&self, visit_id: &str, answers: &Map<String, Json>) -> Result<()> {
        self.require_user()?;
        self.edit_draft(
            visit_id,
            |_, form, draft| {
                let mut paths = Vec::new();
                flatten_answers(form, answers, "", &mut paths);
                for (path, value) in paths {
                    engine::set_answer(form, draft, &path, value)?;
                }
                Ok(())
            },
            ("set_answers", None),
        )
    }

    /// Removes one repeat instance of a draft (`members[3]`).
    pub fn remove_repeat_instance(&self, visit_id: &str, path: &str) -> Result<()> {
        self.require_user()?;
        self.edit_draft(
            visit_id,
            |_, form, answers| Ok(engine::remove_instance(form, answers, path)?),
            ("remove_instance", Some(path)),
        )
    }

    /// Applies `edit` to a draft's answers and saves them, in one transaction; refused unless
    /// the visit is a draft. `action` (op, field) names what was done, for the audit trail.
    pub(super) fn edit_draft(
        &self,
        visit_id: &str,
        edit: impl FnOnce(&Transaction<'_>, &Form, &mut Map<String, Json>) -> Result<()>,
        action: (&'static str, Option<&str>),
    ) -> Result<()> {
        let now = timestamp(self.now());
        self.write(|tx| {
            let (form_id, version, status, answers) = store::visits::draft_head(tx, visit_id)?;
            if status != VisitStatus::Draft {
                return Err(Error::VisitNotEditable {
                    id: visit_id.to_owned(),
                    status: status.as_str(),
                });
            }
            let form = self.form(&form_id, version)?;
            let mut answers = parse_object(&answers)?;
            edit(tx, &form, &mut answers)?;
            let answers = Json::Object(answers).to_string();
            store::attachments::drop_unreferenced(tx, visit_id, &answers)?;
            store::visits::update_answers(tx, visit_id, &answers, &now)?;
            let (op, field) = action;
            let action = Action {
                entity: "visit",
                entity_id: visit_id,
                op,
                field,
            };
            self.audit_action(tx, action)
        })
    }

    /// A visit with its answers, for display: the view is recorded in the audit trail.
    pub fn visit(&self, id: &str) -> Result<Visit> {
        let visit = self.load_visit(id)?;
        self.audit_now(AuditAction::View, Some(("visit", id)), json!({}))?;
        Ok(visit)
    }

    pub(crate) fn load_visit(&self, id: &str) -> Result<Visit> {
        self.read(|c| store::visits::load(c, id))
    }

    /// Every problem of a visit's answers, as the form and the domain rules see them now.
    pub fn validate_visit(&self, visit_id: &str) -> Result<Vec<Problem>> {
        let visit = self.load_visit(visit_id)?;
        let form = self.form(&visit.form_id, visit.form_version)?;
        let lists = self.code_lists();
        let published = self.form_published_at(&visit.form_id, visit.form_version)?;
        let mut problems = Evaluation::new(&form, &visit.answers, &lists, self.now())
            .published_at(published)
            .validate();
        self.read(|c| {
            problems.extend(self.stale_signature_problems(c, &form, visit_id, &visit.answers)?);
            problems.extend(village_problem(c, &visit)?);
            problems.extend(duplicates::id_number_problems(c, &form, &visit.answers)?);
            let changed = changed_since_opened(c, &form, &visit)?;
            problems.extend(changed.iter().map(|ch| seen::changed_problem(&ch.path)));
            Ok(())
        })?;
        Ok(problems)
    }

    /// The prefilled values someone else changed since this draft was opened (a colleague's
    /// correction synced, a reviewer's resolution), with both values, for the coordinator to
    /// check before completing; `validate_visit` warns at the same paths.
    pub fn changes_since_opened(&self, visit_id: &str) -> Result<Vec<ChangedSinceOpened>> {
        let visit = self.load_visit(visit_id)?;
        let form = self.form(&visit.form_id, visit.form_version)?;
        self.read(|c| changed_since_opened(c, &form, &visit))
    }

    /// For the UI: which fields are relevant and required now, per answer path.
    pub fn field_states(&self, visit_id: &str) -> Result<Vec<FieldState>> {
        let visit = self.load_visit(visit_id)?;
        let form = self.form(&visit.form_id, visit.form_version)?;
        let lists = self.code_lists();
        let ev = Evaluation::new(&form, &visit.answers, &lists, self.now());
        Ok(ev
            .field_instances()
            .into_iter()
            .map(|(id, ctx)| {
                let info = form.fields.get(id);
                FieldState {
                    path: info.map(|f| ev.path_of(f, &ctx)).unwrap_or_default(),
                    relevant: ev.is_relevant(id, &ctx),
                    required: ev.is_relevant(id, &ctx) && ev.is_required(id, &ctx),
                    value: ev.value(id, &ctx).to_json(),
                }
            })
            .collect())
    }

    /// Completes a draft: refuses it while any blocking problem remains; stamps the end time if
    /// unset; stores calculated values; writes its household and member answers into the
    /// household's records as field edits (creating the household for a new discovery). One
    /// transaction.
    pub fn complete_visit(&self, visit_id: &str) -> Result<Visit> {
        self.require_user()?;
        // Read, check and write under the writer lock: an autosave racing with completion is
        // either in the completed visit or refused as "not editable", never lost.
        let visit = self.write(|tx| self.complete_in(tx, visit_id))?;
        // Ids only: answers are personal data and never reach a log.
        tracing::debug!(visit = %visit.id, household = ?visit.household_id, "visit completed");
        Ok(visit)
    }

    fn complete_in(&self, tx: &Transaction<'_>, visit_id: &str) -> Result<Visit> {
        let mut visit = store::visits::load(tx, visit_id)?;
        if visit.status != VisitStatus::Draft {
            return Err(Error::VisitWrongStatus {
                id: visit.id,
                status: visit.status.as_str(),
                action: "completed",
            });
        }
        let form = self.form(&visit.form_id, visit.form_version)?;
        let now = self.now();
        if visit.answers.get("ended_at").is_none_or(Json::is_null) {
            let end = Json::from(timestamp(now));
            let _ = engine::set_answer(&form, &mut visit.answers, "ended_at", end);
        }
        let lists = self.code_lists();
        let published = super::sync::form_published_at(tx, &visit.form_id, visit.form_version)?;
        let ev = Evaluation::new(&form, &visit.answers, &lists, now).published_at(published);
        let mut problems = ev.validate();
        problems.extend(self.stale_signature_problems(tx, &form, visit_id, &visit.answers)?);
        problems.extend(village_problem(tx, &visit)?);
        if problems.iter().any(Problem::blocks_completion) {
            return Err(Error::VisitHasProblems { problems });
        }
        let completed = ev.value_by_name("completed").is_true();
        let mut answers = ev.materialize(true);
        let at = timestamp(now);
        if completed {
            let b = RecordBindings::of(&form);
            let seen = store::visits::seen(tx, visit_id)?;
            let filing = Filing {
                at: &at,
                seen: seen.as_ref(),
            };
            let household = self.apply_to_household(
                tx,
                (&form, &b),
                visit.household_id.as_deref(),
                &mut answers,
                &filing,
            )?;
            visit.household_id = Some(household);
        }
        let answers_json = Json::Object(answers.clone()).to_string();
        store::attachments::drop_unreferenced(tx, visit_id, &answers_json)?;
        store::visits::mark_completed(
            tx,
            visit_id,
            &answers_json,
            visit.household_id.as_deref(),
            &at,
        )?;
        let action = Action {
            entity: "visit",
            entity_id: visit_id,
            op: "complete",
            field: None,
        };
        self.audit_action(tx, action)?;
        visit.answers = answers;
        visit.status = VisitStatus::Completed;
        visit.completed_at = Some(at.clone());
        visit.updated_at = at.clone();
        let record = self.visit_record(tx, &visit)?;
        let op = ChangeOp::SubmitVisit {
            visit: Box::new(record),
        };
        self.enqueue(tx, &at, None, op)?;
        Ok(visit)
    }

    /// Writes a completed visit's household and member answers into the records, field by field
    /// through the same path as a direct edit. Returns the household id.
    fn apply_to_household(
        &self,
        tx: &Transaction<'_>,
        (form, b): (&Form, &RecordBindings),
        household_id: Option<&str>,
        answers: &mut Map<String, Json>,
        filing: &Filing<'_>,
    ) -> Result<String> {
        let at = filing.at;
        let read_only = |id: usize| engine::is_read_only(form, id);
        let household_id = match household_id {
            Some(h) => h.to_owned(),
            None => {
                let village = answers
                    .get("village_code")
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let new = NewHousehold {
                    village_code: village,
                    ..NewHousehold::default()
                };
                self.insert_household(tx, form, b, new, at)?
            }
        };
        let current = store::households::fields(tx, &household_id)?;
        let due_ruled = self.due_date_ruled(&current)?;
        for (record, id) in &b.household {
            let Some(info) = form.fields.get(*id) else {
                continue;
            };
            // The village is the household's, never moved by a visit (checked at completion);
            // the next due date of a household whose category has a frequency is the server's.
            let server_owned =
                record == "village_code" || (record == "next_visit_due" && due_ruled);
            if read_only(*id) || !info.chain.is_empty() || server_owned {
                continue;
            }
            if let Some(v) = answers.get(&info.name).filter(|v| !v.is_null()) {
                let target = (Entity::Household, household_id.as_str(), record.as_str());
                self.file_answer(tx, filing, target, v, current.get(record))?;
            }
        }
        self.apply_to_members(tx, (form, b), &household_id, answers, filing)?;
        Ok(household_id)
    }

    /// Writes each instance of the members repeat into its member record, or creates the
    /// member (and names it in the answers) for an instance without one.
    fn apply_to_members(
        &self,
        tx: &Transaction<'_>,
        (form, b): (&Form, &RecordBindings),
        household_id: &str,
        answers: &mut Map<String, Json>,
        filing: &Filing<'_>,
    ) -> Result<()> {
        let at = filing.at;
        let Some(members_repeat) = b.members_repeat else {
            return Ok(());
        };
        let members_name = form
            .repeats
            .get(members_repeat)
            .map(|r| r.name.clone())
            .unwrap_or_default();
        let Some(Json::Array(instances)) = answers.get_mut(&members_name) else {
            return Ok(());
        };
        for instance in instances.iter_mut() {
            let Some(obj) = instance.as_object_mut() else {
                continue;
            };
            let bound: Vec<(String, Json)> = b
                .member
                .iter()
                .filter(|(record, id)| record != "id" && !engine::is_read_only(form, *id))
                .filter_map(|(record, id)| {
                    let name = &form.fields.get(*id)?.name;
                    obj.get(name)
                        .filter(|v| !v.is_null())
                        .map(|v| (record.clone(), v.clone()))
                })
                .collect();
            let existing = obj
                .get("member_id")
                .and_then(Json::as_str)
                .map(str::to_owned);
            let member_fields = match &existing {
                Some(mid) => store::households::member_fields(tx, mid, household_id)?,
                None => None,
            };
            match (existing, member_fields) {
                (Some(mid), Some(fields)) => {
                    for (record, v) in bound {
                        let target = (Entity::Member, mid.as_str(), record.as_str());
                        self.file_answer(tx, filing, target, &v, fields.get(&record))?;
                    }
                }
                _ => {
                    let fields = bound.into_iter().collect();
                    let new_id = self.insert_member(tx, form, b, household_id, fields, at)?;
                    obj.insert("member_id".into(), Json::from(new_id));
                }
            }
        }
        Ok(())
    }

    /// Files one completed answer into its record field. An answer still as the draft was
    /// opened with is no edit (a colleague's correction since then stands); a changed one is an
    /// edit on the version the draft was opened with, so a real overlap becomes a conflict.
    fn file_answer(
        &self,
        tx: &Transaction<'_>,
        filing: &Filing<'_>,
        (entity, id, field): (Entity, &str, &str),
        answer: &Json,
        current: Option<&Json>,
    ) -> Result<()> {
        let opened = filing.seen.and_then(|m| seen::opened(m, entity, id, field));
        match opened {
            Some(o) if &o.value == answer => Ok(()),
            _ if current == Some(answer) => Ok(()),
            Some(o) => {
                let base = Some(o.version);
                self.set_record_field_on(tx, (entity, id, field), answer, filing.at, base)
            }
            None => self.set_record_field(tx, entity, id, field, answer, filing.at),
        }
    }

    /// Marks a completed visit as signed: it must hold a signature (added on the draft, still
    /// matching what was completed), or it is refused with `visit_unsigned`.
    pub fn sign_visit(&self, visit_id: &str) -> Result<()> {
        self.require_user()?;
        if !self.signatures(visit_id)?.iter().any(|s| s.valid) {
            return Err(Error::VisitUnsigned {
                id: visit_id.to_owned(),
            });
        }
        self.transition(
            visit_id,
            &[VisitStatus::Completed],
            VisitStatus::Signed,
            None,
        )
    }

    /// Voids a visit with a reason; the visit stays in the store.
    pub fn void_visit(&self, visit_id: &str, reason: &str) -> Result<()> {
        self.require_user()?;
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(Error::InvalidValue {
                field: "void_reason".into(),
                code: "required",
            });
        }
        let from = [
            VisitStatus::Draft,
            VisitStatus::Completed,
            VisitStatus::Signed,
        ];
        self.transition(visit_id, &from, VisitStatus::Void, Some(reason))
    }

    fn transition(
        &self,
        visit_id: &str,
        from: &[VisitStatus],
        to: VisitStatus,
        reason: Option<&str>,
    ) -> Result<()> {
        let at = timestamp(self.now());
        let (op, action) = match to {
            VisitStatus::Void => ("void", "voided"),
            _ => ("sign", "signed"),
        };
        self.write(|tx| {
            let status = store::visits::status(tx, visit_id)?;
            if !from.contains(&status) {
                return Err(Error::VisitWrongStatus {
                    id: visit_id.to_owned(),
                    status: status.as_str(),
                    action,
                });
            }
            store::visits::set_status(tx, visit_id, to, reason, &at)?;
            let action = Action {
                entity: "visit",
                entity_id: visit_id,
                op,
                field: None,
            };
            self.audit_action(tx, action)?;
            // A draft never left the device; a completed visit's status follows it to the server.
            if status != VisitStatus::Draft {
                let change = ChangeOp::SetVisitStatus {
                    id: visit_id.to_owned(),
                    status: to.as_str().to_owned(),
                    reason: reason.map(str::to_owned),
                    at: at.clone(),
                };
                self.enqueue(tx, &at, None, change)?;
            }
            Ok(())
        })
    }

    /// A household's visits, newest first.
    pub fn visits_of_household(&self, household_id: &str) -> Result<Vec<VisitSummary>> {
        self.read(|c| store::visits::of_household(c, household_id))
    }

    /// The signed-in user's drafts, most recently edited first.
    pub fn my_drafts(&self) -> Result<Vec<VisitSummary>> {
        let user = self.require_user()?;
        self.read(|c| store::visits::drafts_of(c, &user))
    }
}
