//! Answers against a form: reading them as typed values, relevance, calculated values,
//! validation, and setting one answer at a time.
//!
//! Answers are JSON: a flat object per scope (groups do not nest names), with each repeat an
//! array of such objects, e.g. `{"visit_type": "routine", "members": [{"name": "…"}]}`.
//! Paths name one answer: `members[2].id_number` (indices from 0).

use std::cell::RefCell;
use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{Map, Value as Json};

mod answers;
mod validate;

use answers::scope_mut;
pub use answers::{
    AnswerPath, WrongShape, canonical_answer, is_read_only, json_to_value, parse_path, put_answer,
    remove_instance, set_answer,
};
pub use validate::message;

use super::code_list::CodeLists;

use super::expr::{Env, Value};
use super::form::{Container, FieldInfo, Form, ItemRef, Severity};

/// Shanghai time: dates in forms (`today()`, birth dates, due dates) are local dates.
pub fn local_today(now: DateTime<Utc>) -> NaiveDate {
    (now + chrono::Duration::hours(8)).date_naive()
}

/// The largest single answer accepted (bytes of JSON); far above any real answer.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// The most instances of one repeat accepted, whatever the form says.
pub const MAX_REPEAT_INSTANCES: usize = 500;

/// One problem with a visit's answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `members[2].id_number`; a repeat itself is `members`.
    pub path: String,
    /// Stable, machine-readable.
    pub code: String,
    pub severity: Severity,
    pub message_zh: String,
    pub message_en: String,
}

impl Problem {
    pub fn blocks_completion(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Why an answer could not be set. Messages name the path, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("'{0}' is not a valid answer path")]
    BadPath(String),
    #[error("'{0}' names no answerable field of this form")]
    UnknownField(String),
    #[error("'{0}' is computed or read-only and cannot be set")]
    ReadOnly(String),
    #[error("the answer for '{path}' must be {expected}")]
    TypeMismatch {
        path: String,
        expected: &'static str,
    },
    #[error("'{0}': repeat instances are added one at a time at the end")]
    RepeatIndex(String),
    #[error("the answer for '{0}' is too large")]
    TooLarge(String),
}

impl AnswerError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadPath(_) => "answer_path",
            Self::UnknownField(_) => "answer_unknown_field",
            Self::ReadOnly(_) => "answer_read_only",
            Self::TypeMismatch { .. } => "answer_type",
            Self::RepeatIndex(_) => "answer_repeat_index",
            Self::TooLarge(_) => "answer_too_large",
        }
    }
}

/// Answers seen through a form at one instant: values, relevance, validation.
pub struct Evaluation<'a> {
    form: &'a Form,
    answers: &'a Map<String, Json>,
    code_lists: &'a CodeLists,
    now: DateTime<Utc>,
    /// When the form version was published, if known: a time before it did not happen.
    not_before: Option<DateTime<Utc>>,
    today: NaiveDate,
    values: RefCell<HashMap<(usize, Vec<usize>), Value>>,
    relevance: RefCell<HashMap<(Container, Vec<usize>), bool>>,
}

impl std::fmt::Debug for Evaluation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluation")
            .field("form", &self.form.id())
            .finish_non_exhaustive()
    }
}

impl Evaluation<'_> {
    /// The value of a top-level field by name (Null when there is no such field).
    pub fn value_by_name(&self, name: &str) -> Value {
        match self.form().lookup(name) {
            Some(ItemRef::Field(id)) => self.value(id, &[]),
            _ => Value::Null,
        }
    }
}

impl<'a> Evaluation<'a> {
    pub fn new(
        form: &'a Form,
        answers: &'a Map<String, Json>,
        code_lists: &'a CodeLists,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            form,
            answers,
            code_lists,
            now,
            not_before: None,
            today: local_today(now),
            values: RefCell::default(),
            relevance: RefCell::default(),
        }
    }

    /// Times before `published` (the form version's publication, less a day of clock slack)
    /// are refused as `datetime_before_form`.
    #[must_use]
    pub fn published_at(mut self, published: Option<DateTime<Utc>>) -> Self {
        self.not_before = published;
        self
    }

    /// The answer object of a scope, if it exists.
    fn scope(&self, chain: &[usize], indices: &[usize]) -> Option<&'a Map<String, Json>> {
        let mut scope = self.answers;
        for (r, i) in chain.iter().zip(indices) {
            let name = &self.form.repeats.get(*r)?.name;
            scope = scope.get(name)?.as_array()?.get(*i)?.as_object()?;
        }
        Some(scope)
    }

    fn raw(&self, field: &FieldInfo, ctx: &[usize]) -> Option<&'a Json> {
        self.scope(&field.chain, ctx)?.get(&field.name)
    }

    /// How many instances a repeat has in the answers, relevant or not.
    pub fn instance_count(&self, repeat: usize, ctx: &[usize]) -> usize {
        self.form
            .repeats
            .get(repeat)
            .and_then(|r| {
                self.scope(&r.chain, ctx)?
                    .get(&r.name)?
                    .as_array()
                    .map(Vec::len)
            })
            .unwrap_or(0)
    }

    fn container_relevant(&self, container: Option<Container>, ctx: &[usize]) -> bool {
        let Some(container) = container else {
            return true;
        };
        let key = (container, ctx.to_vec());
        if let Some(v) = self.relevance.borrow().get(&key) {
            return *v;
        }
        let (expr, parent, chain_len) = match container {
            Container::Group(g) => match self.form.groups.get(g) {
                Some(g) => (&g.relevant, g.parent, g.chain.len()),
                None => return true,
            },
            Container::Repeat(r) => match self.form.repeats.get(r) {
                Some(r) => (&r.relevant, r.parent, r.chain.len()),
                None => return true,
            },
        };
        let scope_ctx = ctx.get(..chain_len).unwrap_or(ctx);
        let own = expr
            .as_ref()
            .is_none_or(|e| e.eval(self, scope_ctx, &Value::Null).is_true());
        let relevant = own && self.container_relevant(parent, scope_ctx);
        self.relevance.borrow_mut().insert(key, relevant);
        relevant
    }

    /// Is the field shown (and its answer counted) in this instance?
    pub fn is_relevant(&self, field: usize, ctx: &[usize]) -> bool {
        let Some(f) = self.form.fields.get(field) else {
            return false;
        };
        self.container_relevant(f.parent, ctx)
            && f.relevant
                .as_ref()
                .is_none_or(|e| e.eval(self, ctx, &Value::Null).is_true())
    }

    /// Must the field be answered in this instance (when relevant)?
    pub fn is_required(&self, field: usize, ctx: &[usize]) -> bool {
        let Some(f) = self.form.fields.get(field) else {
            return false;
        };
        f.always_required
            || f.required
                .as_ref()
                .is_some_and(|e| e.eval(self, ctx, &Value::Null).is_true())
    }

    /// The value of a field: null if not relevant; computed for calculate fields; the default
    /// while unanswered.
    pub fn value(&self, field: usize, ctx: &[usize]) -> Value {
        let key = (field, ctx.to_vec());
        if let Some(v) = self.values.borrow().get(&key) {
            return v.clone();
        }
        let v = self.compute(field, ctx);
        self.values.borrow_mut().insert(key, v.clone());
        v
    }

    fn compute(&self, field: usize, ctx: &[usize]) -> Value {
        let Some(f) = self.form.fields.get(field) else {
            return Value::Null;
        };
        if !self.is_relevant(field, ctx) {
            return Value::Null;
        }
        if let Some(calc) = &f.calculate {
            return calc.eval(self, ctx, &Value::Null);
        }
        let answered = self
            .raw(f, ctx)
            .and_then(|j| json_to_value(f.kind, j).ok())
            .filter(|v| !v.is_empty());
        match (answered, &f.default) {
            (Some(v), _) => v,
            (None, Some(d)) => d.eval(self, ctx, &Value::Null),
            (None, None) => Value::Null,
        }
    }

    /// Every instance context of the fields directly in `items`, walked depth-first.
    fn walk(
        &self,
        items: &[ItemRef],
        ctx: &mut Vec<usize>,
        visit: &mut dyn FnMut(ItemRef, &[usize]),
    ) {
        for item in items {
            visit(*item, ctx);
            match item {
                ItemRef::Field(_) => {}
                ItemRef::Group(g) => {
                    if let Some(g) = self.form.groups.get(*g) {
                        self.walk(&g.items, ctx, visit);
                    }
                }
                ItemRef::Repeat(r) => {
                    let n = self.instance_count(*r, ctx);
                    if let Some(rep) = self.form.repeats.get(*r) {
                        for i in 0..n {
                            ctx.push(i);
                            self.walk(&rep.items, ctx, visit);
                            ctx.pop();
                        }
                    }
                }
            }
        }
    }

    /// The answer path of a field instance, e.g. `members[2].id_number`.
    pub fn path_of(&self, field: &FieldInfo, ctx: &[usize]) -> String {
        let mut path = String::new();
        for (r, i) in field.chain.iter().zip(ctx) {
            let name = self
                .form
                .repeats
                .get(*r)
                .map(|r| r.name.as_str())
                .unwrap_or_default();
            path.push_str(&format!("{name}[{i}]."));
        }
        path.push_str(&field.name);
        path
    }

    fn repeat_path(&self, repeat: usize, ctx: &[usize]) -> String {
        let Some(rep) = self.form.repeats.get(repeat) else {
            return String::new();
        };
        let mut path = String::new();
        for (r, i) in rep.chain.iter().zip(ctx) {
            let name = self
                .form
                .repeats
                .get(*r)
                .map(|r| r.name.as_str())
                .unwrap_or_default();
            path.push_str(&format!("{name}[{i}]."));
        }
        path.push_str(&rep.name);
        path
    }

    pub fn form(&self) -> &'a Form {
        self.form
    }

    /// Every field instance of the answers: (field id, repeat instance indices), in form order.
    pub fn field_instances(&self) -> Vec<(usize, Vec<usize>)> {
        let mut out = Vec::new();
        let mut visit = |item: ItemRef, ctx: &[usize]| {
            if let ItemRef::Field(id) = item {
                out.push((id, ctx.to_vec()));
            }
        };
        self.walk(&self.form.items, &mut Vec::new(), &mut visit);
        out
    }

    /// Calculated values (and, with `with_defaults`, defaults standing in for unanswered fields)
    /// written into a copy of the answers: what a completed visit stores.
    pub fn materialize(&self, with_defaults: bool) -> Map<String, Json> {
        let mut out = self.answers.clone();
        let mut writes: Vec<(usize, Vec<usize>, Json)> = Vec::new();
        let mut visit = |item: ItemRef, ctx: &[usize]| {
            let ItemRef::Field(id) = item else { return };
            let Some(f) = self.form.fields.get(id) else {
                return;
            };
            let answered = self.raw(f, ctx).is_some_and(|j| !j.is_null());
            if f.calculate.is_some() || (with_defaults && f.default.is_some() && !answered) {
                writes.push((id, ctx.to_vec(), self.value(id, ctx).to_json()));
            }
        };
        self.walk(&self.form.items, &mut Vec::new(), &mut visit);
        for (id, ctx, value) in writes {
            let Some(f) = self.form.fields.get(id) else {
                continue;
            };
            if let Ok(Some(scope)) = scope_mut(self.form, &mut out, &f.chain, &ctx, false, "") {
                if value.is_null() {
                    scope.remove(&f.name);
                } else {
                    scope.insert(f.name.clone(), value);
                }
            }
        }
        out
    }
}

impl Env for Evaluation<'_> {
    fn field(&self, id: usize, ctx: &[usize]) -> Value {
        self.value(id, ctx)
    }
    fn repeat_len(&self, id: usize, ctx: &[usize]) -> usize {
        if self.container_relevant(Some(Container::Repeat(id)), ctx) {
            self.instance_count(id, ctx)
        } else {
            0
        }
    }
    fn today(&self) -> NaiveDate {
        self.today
    }
    fn now(&self) -> DateTime<Utc> {
        self.now
    }
}
