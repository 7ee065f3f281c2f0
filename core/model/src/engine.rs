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
use unicode_normalization::UnicodeNormalization;

use super::code_list::CodeLists;
use super::domain;
use super::expr::{Env, GeoPoint, Value};
use super::form::{Container, FieldInfo, FieldKind, Form, ItemRef, Severity};

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

fn expected_shape(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Integer => "a whole number",
        FieldKind::Decimal => "a number",
        FieldKind::Money => "a whole number of fen",
        FieldKind::Date => "a date written YYYY-MM-DD",
        FieldKind::Datetime => "an RFC 3339 date-time with offset",
        FieldKind::SelectMultiple => "a list of choice values",
        FieldKind::Geopoint => "an object {lat, lon, accuracy_m, provider, mock}",
        FieldKind::Note => "absent (notes hold no answer)",
        _ => "a text",
    }
}

/// An answer whose JSON shape does not fit its field's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongShape;

/// Reads a stored JSON answer as a typed value; `Err` when its shape is wrong for the kind.
pub fn json_to_value(kind: FieldKind, json: &Json) -> Result<Value, WrongShape> {
    if json.is_null() {
        return Ok(Value::Null);
    }
    match kind {
        FieldKind::Integer | FieldKind::Money => json
            .as_i64()
            .map(|n| Value::Number(n as f64))
            .ok_or(WrongShape),
        FieldKind::Decimal => json
            .as_f64()
            .filter(|n| n.is_finite())
            .map(Value::Number)
            .ok_or(WrongShape),
        FieldKind::Date => json
            .as_str()
            .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
            .map(Value::Date)
            .ok_or(WrongShape),
        FieldKind::Datetime => json
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| Value::DateTime(t.with_timezone(&Utc)))
            .ok_or(WrongShape),
        FieldKind::SelectMultiple => {
            let items = json.as_array().ok_or(WrongShape)?;
            items
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or(WrongShape))
                .collect::<Result<Vec<_>, WrongShape>>()
                .map(Value::Choices)
        }
        FieldKind::Geopoint => {
            let o = json.as_object().ok_or(WrongShape)?;
            let num = |k: &str| o.get(k).and_then(Json::as_f64);
            Ok(Value::Geopoint(GeoPoint {
                lat: num("lat").ok_or(WrongShape)?,
                lon: num("lon").ok_or(WrongShape)?,
                accuracy_m: num("accuracy_m"),
                provider: o.get("provider").and_then(Json::as_str).map(str::to_owned),
                mock: o.get("mock").and_then(Json::as_bool).unwrap_or(false),
            }))
        }
        FieldKind::Note => Err(WrongShape),
        FieldKind::Calculate => Ok(match json {
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => n.as_f64().map_or(Value::Null, Value::Number),
            Json::String(s) => Value::Text(s.clone()),
            _ => Value::Null,
        }),
        _ => json
            .as_str()
            .map(|s| Value::Text(s.to_owned()))
            .ok_or(WrongShape),
    }
}

/// NFC without an allocation when the text already is (nearly always).
fn nfc(s: String) -> String {
    match unicode_normalization::is_nfc_quick(s.chars()) {
        unicode_normalization::IsNormalized::Yes => s,
        _ => s.nfc().collect(),
    }
}

/// Brings a typed answer to its canonical spelling (NFC text, normalised IDs and phones,
/// UTC instants). The value's shape has already been checked.
fn normalize_answer(kind: FieldKind, json: Json) -> Json {
    match (kind, json) {
        (FieldKind::PersonName, Json::String(s)) => Json::String(domain::normalize_person_name(&s)),
        (FieldKind::ResidentId | FieldKind::DisabilityCertificate, Json::String(s)) => {
            Json::String(domain::normalize_resident_id(&s))
        }
        (FieldKind::Phone, Json::String(s)) => Json::String(domain::normalize_phone(&s)),
        (FieldKind::RegionCode, Json::String(s)) => Json::String(s.trim().to_owned()),
        (FieldKind::Datetime, Json::String(s)) => match DateTime::parse_from_rfc3339(&s) {
            Ok(t) => Json::String(
                t.with_timezone(&Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
            Err(_) => Json::String(s),
        },
        (_, Json::String(s)) => Json::String(nfc(s)),
        (FieldKind::SelectMultiple, Json::Array(items)) => Json::Array(
            items
                .into_iter()
                .map(|v| normalize_answer(FieldKind::Text, v))
                .collect(),
        ),
        (_, other) => other,
    }
}

/// Whether a JSON answer has the shape of a field kind, without building the typed value.
fn has_shape(kind: FieldKind, json: &Json) -> bool {
    match (kind, json) {
        (_, Json::Null) => true,
        (FieldKind::Note, _) => false,
        (FieldKind::Integer | FieldKind::Money, v) => v.as_i64().is_some(),
        (FieldKind::Decimal, v) => v.as_f64().is_some_and(f64::is_finite),
        (FieldKind::SelectMultiple, Json::Array(items)) => items.iter().all(Json::is_string),
        (FieldKind::Geopoint | FieldKind::Date | FieldKind::Datetime | FieldKind::Calculate, v) => {
            json_to_value(kind, v).is_ok()
        }
        (FieldKind::SelectMultiple, _) => false,
        (_, v) => v.is_string(),
    }
}

/// The size an answer takes in the stored JSON, roughly (strings by their bytes).
fn answer_size(json: &Json) -> usize {
    match json {
        Json::String(s) => s.len(),
        Json::Array(_) | Json::Object(_) => json.to_string().len(),
        _ => 16,
    }
}

/// Checks the shape of `value` for a field kind and returns its canonical spelling.
pub fn canonical_answer(kind: FieldKind, value: Json) -> Result<Json, WrongShape> {
    if !has_shape(kind, &value) {
        return Err(WrongShape);
    }
    Ok(normalize_answer(kind, value))
}

/// A parsed answer path: the item and the instance index of each enclosing repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerPath {
    pub item: ItemRef,
    pub indices: Vec<usize>,
}

/// Parses `members[2].id_number` (or `members[2]` for a repeat instance) against `form`.
pub fn parse_path(form: &Form, path: &str) -> Result<AnswerPath, AnswerError> {
    let bad = || AnswerError::BadPath(path.chars().take(200).collect());
    if path.is_empty() || path.len() > 512 {
        return Err(bad());
    }
    let mut segments: Vec<(&str, Option<usize>)> = Vec::new();
    for seg in path.split('.') {
        let (name, index) = match seg.split_once('[') {
            Some((name, rest)) => {
                let digits = rest.strip_suffix(']').ok_or_else(bad)?;
                (name, Some(digits.parse::<usize>().map_err(|_| bad())?))
            }
            None => (seg, None),
        };
        if name.is_empty() {
            return Err(bad());
        }
        segments.push((name, index));
    }
    let (last, parents) = segments.split_last().ok_or_else(bad)?;
    let mut chain = Vec::new();
    let mut indices = Vec::new();
    for (name, index) in parents {
        match (form.lookup(name), index) {
            (Some(ItemRef::Repeat(r)), Some(i)) => {
                chain.push(r);
                indices.push(*i);
            }
            _ => return Err(bad()),
        }
    }
    let item = form
        .lookup(last.0)
        .ok_or_else(|| AnswerError::UnknownField(last.0.chars().take(64).collect()))?;
    match (item, last.1) {
        (ItemRef::Field(f), None) => {
            let info = form.fields.get(f).ok_or_else(bad)?;
            if info.chain != chain {
                return Err(bad());
            }
        }
        (ItemRef::Repeat(r), Some(i)) => {
            let info = form.repeats.get(r).ok_or_else(bad)?;
            if info.chain != chain {
                return Err(bad());
            }
            indices.push(i);
        }
        _ => return Err(bad()),
    }
    Ok(AnswerPath { item, indices })
}

/// The answer object of the scope addressed by `chain`/`indices`, created on the way when
/// `create` (appending at most one instance per repeat, at its end).
fn scope_mut<'a>(
    form: &Form,
    answers: &'a mut Map<String, Json>,
    chain: &[usize],
    indices: &[usize],
    create: bool,
    path: &str,
) -> Result<Option<&'a mut Map<String, Json>>, AnswerError> {
    let mut scope = answers;
    for (r, &i) in chain.iter().zip(indices) {
        let name = form
            .repeats
            .get(*r)
            .map(|r| r.name.as_str())
            .unwrap_or_default();
        if !scope.get(name).is_some_and(Json::is_array) {
            if !create {
                return Ok(None);
            }
            scope.insert(name.to_owned(), Json::Array(Vec::new()));
        }
        let Some(Json::Array(list)) = scope.get_mut(name) else {
            return Ok(None);
        };
        if i == list.len() && create {
            if list.len() >= MAX_REPEAT_INSTANCES {
                return Err(AnswerError::TooLarge(path.to_owned()));
            }
            list.push(Json::Object(Map::new()));
        }
        match list.get_mut(i) {
            Some(Json::Object(obj)) => scope = obj,
            Some(_) => {
                return Err(AnswerError::TypeMismatch {
                    path: path.to_owned(),
                    expected: "an object per repeat instance",
                });
            }
            None if create => return Err(AnswerError::RepeatIndex(path.to_owned())),
            None => return Ok(None),
        }
    }
    Ok(Some(scope))
}

/// Sets (or with `null`, clears) one answer. The value's shape must fit the field; its content
/// is checked by validation, so a half-typed ID still autosaves.
pub fn set_answer(
    form: &Form,
    answers: &mut Map<String, Json>,
    path: &str,
    value: Json,
) -> Result<(), AnswerError> {
    let target = parse_path(form, path)?;
    let ItemRef::Field(f) = target.item else {
        return Err(AnswerError::BadPath(path.to_owned()));
    };
    let field = form
        .fields
        .get(f)
        .ok_or_else(|| AnswerError::UnknownField(path.to_owned()))?;
    if !field.kind.has_answer()
        || field.kind == FieldKind::Calculate
        || field.calculate.is_some()
        || is_read_only(form, f)
    {
        return Err(AnswerError::ReadOnly(path.to_owned()));
    }
    put_answer(form, answers, field, &target.indices, path, value)
}

/// Is the field read-only for the person typing (prefilled from the household record)?
pub fn is_read_only(form: &Form, field: usize) -> bool {
    form.field_def(field).is_some_and(|d| d.read_only)
}

/// Writes an answer without the read-only check: for prefill from the household record.
pub fn put_answer(
    form: &Form,
    answers: &mut Map<String, Json>,
    field: &FieldInfo,
    indices: &[usize],
    path: &str,
    value: Json,
) -> Result<(), AnswerError> {
    if !has_shape(field.kind, &value) {
        return Err(AnswerError::TypeMismatch {
            path: path.to_owned(),
            expected: expected_shape(field.kind),
        });
    }
    if answer_size(&value) > MAX_ANSWER_BYTES {
        return Err(AnswerError::TooLarge(path.to_owned()));
    }
    let value = normalize_answer(field.kind, value);
    let scope = scope_mut(form, answers, &field.chain, indices, !value.is_null(), path)?;
    if let Some(scope) = scope {
        if value.is_null() {
            scope.remove(&field.name);
        } else {
            scope.insert(field.name.clone(), value);
        }
    }
    Ok(())
}

/// Removes one repeat instance (`members[2]`); later instances move up by one.
pub fn remove_instance(
    form: &Form,
    answers: &mut Map<String, Json>,
    path: &str,
) -> Result<(), AnswerError> {
    let target = parse_path(form, path)?;
    let ItemRef::Repeat(r) = target.item else {
        return Err(AnswerError::BadPath(path.to_owned()));
    };
    let repeat = form
        .repeats
        .get(r)
        .ok_or_else(|| AnswerError::BadPath(path.to_owned()))?;
    let (index, parents) = target
        .indices
        .split_last()
        .ok_or_else(|| AnswerError::BadPath(path.to_owned()))?;
    let Some(scope) = scope_mut(form, answers, &repeat.chain, parents, false, path)? else {
        return Err(AnswerError::RepeatIndex(path.to_owned()));
    };
    match scope.get_mut(&repeat.name) {
        Some(Json::Array(list)) if *index < list.len() => {
            list.remove(*index);
            Ok(())
        }
        _ => Err(AnswerError::RepeatIndex(path.to_owned())),
    }
}

/// Answers seen through a form at one instant: values, relevance, validation.
pub struct Evaluation<'a> {
    form: &'a Form,
    answers: &'a Map<String, Json>,
    code_lists: &'a CodeLists,
    now: DateTime<Utc>,
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
            today: local_today(now),
            values: RefCell::default(),
            relevance: RefCell::default(),
        }
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

    /// The built-in check of a field's kind on one canonical value, whatever the rest of the
    /// answers say (for direct household and member edits). Returns the failing code.
    pub fn check_value(&self, field: usize, value: &Json) -> Option<&'static str> {
        let f = self.form.fields.get(field)?;
        let Ok(v) = json_to_value(f.kind, value) else {
            return Some("type_mismatch");
        };
        if v.is_empty() {
            return None;
        }
        let mut warnings = Vec::new();
        self.kind_check(field, f, &[], &v, &mut warnings)
    }

    /// Every problem at once, in form order.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let form = self.form;
        let mut visit = |item: ItemRef, ctx: &[usize]| match item {
            ItemRef::Field(id) => self.check_field(id, ctx, &mut problems),
            ItemRef::Repeat(r) => self.check_repeat(r, ctx, &mut problems),
            ItemRef::Group(_) => {}
        };
        self.walk(&form.items, &mut Vec::new(), &mut visit);
        self.check_unknown_keys(self.answers, &[], "", &mut problems);
        problems
    }

    /// Answers the form has no place for (an unknown name, or a name used in the wrong
    /// repeat) are reported as warnings; a repeat that is not a list of objects is an error.
    fn check_unknown_keys(
        &self,
        scope: &Map<String, Json>,
        chain: &[usize],
        prefix: &str,
        out: &mut Vec<Problem>,
    ) {
        for (key, value) in scope {
            let path = format!("{prefix}{key}");
            match self.form.lookup(key) {
                Some(ItemRef::Field(f))
                    if self.form.fields.get(f).is_some_and(|f| f.chain == chain) => {}
                Some(ItemRef::Repeat(r))
                    if self
                        .form
                        .repeats
                        .get(r)
                        .is_some_and(|rep| rep.chain == chain) =>
                {
                    let Some(list) = value.as_array() else {
                        out.push(problem(path, "type_mismatch", Severity::Error));
                        continue;
                    };
                    let inner: Vec<usize> = chain.iter().copied().chain([r]).collect();
                    for (i, instance) in list.iter().enumerate() {
                        match instance.as_object() {
                            Some(obj) => {
                                self.check_unknown_keys(obj, &inner, &format!("{path}[{i}]."), out)
                            }
                            None => out.push(problem(
                                format!("{path}[{i}]"),
                                "type_mismatch",
                                Severity::Error,
                            )),
                        }
                    }
                }
                _ => out.push(problem(path, "unknown_field", Severity::Warning)),
            }
        }
    }

    fn check_repeat(&self, r: usize, ctx: &[usize], out: &mut Vec<Problem>) {
        let Some(rep) = self.form.repeats.get(r) else {
            return;
        };
        if !self.container_relevant(Some(Container::Repeat(r)), ctx) {
            return;
        }
        let path = self.repeat_path(r, ctx);
        let n = self.instance_count(r, ctx);
        let required = rep.always_required
            || rep
                .required
                .as_ref()
                .is_some_and(|e| e.eval(self, ctx, &Value::Null).is_true());
        let min = rep.min_count.max(u32::from(required)) as usize;
        if n < min {
            let code = if n == 0 { "required" } else { "repeat_too_few" };
            out.push(problem(path.clone(), code, Severity::Error));
        }
        if rep.max_count.is_some_and(|max| n > max as usize) {
            out.push(problem(path.clone(), "repeat_too_many", Severity::Error));
        }
        if let Some(c) = &rep.constraint
            && !c.eval(self, ctx, &Value::Null).is_true()
        {
            out.push(self.constraint_problem(path, r, true, rep.constraint_severity));
        }
    }

    fn constraint_problem(
        &self,
        path: String,
        id: usize,
        is_repeat: bool,
        severity: Severity,
    ) -> Problem {
        let def = if is_repeat {
            self.repeat_def(id)
        } else {
            self.form.field_def(id)
        };
        let message = def.and_then(|d| d.constraint_message.clone());
        let mut p = problem(path, "constraint", severity);
        if let Some(m) = message {
            p.message_en = m.en.clone().unwrap_or_else(|| p.message_en.clone());
            p.message_zh = m.zh;
        }
        p
    }

    fn repeat_def(&self, r: usize) -> Option<&super::form::ItemDef> {
        let name = &self.form.repeats.get(r)?.name;
        find_def(&self.form.definition.sections, name)
    }

    fn check_field(&self, id: usize, ctx: &[usize], out: &mut Vec<Problem>) {
        let Some(f) = self.form.fields.get(id) else {
            return;
        };
        if !f.kind.has_answer() || !self.is_relevant(id, ctx) {
            return;
        }
        let path = self.path_of(f, ctx);
        if f.calculate.is_none()
            && let Some(raw) = self.raw(f, ctx)
            && json_to_value(f.kind, raw).is_err()
        {
            out.push(problem(path, "type_mismatch", Severity::Error));
            return;
        }
        let value = self.value(id, ctx);
        if value.is_empty() {
            if self.is_required(id, ctx) {
                out.push(problem(path, "required", Severity::Error));
            }
            return;
        }
        if let Some(code) = self.kind_check(id, f, ctx, &value, out) {
            out.push(problem(path.clone(), code, Severity::Error));
            return;
        }
        if let Some(c) = &f.constraint
            && !c.eval(self, ctx, &value).is_true()
        {
            out.push(self.constraint_problem(path, id, false, f.constraint_severity));
        }
    }

    /// The built-in check of a field kind; returns the code of the first failure.
    fn kind_check(
        &self,
        id: usize,
        f: &FieldInfo,
        ctx: &[usize],
        value: &Value,
        out: &mut Vec<Problem>,
    ) -> Option<&'static str> {
        let def = self.form.field_def(id)?;
        let text = match value {
            Value::Text(s) => Some(s.as_str()),
            _ => None,
        };
        match (f.kind, value) {
            (FieldKind::SelectOne | FieldKind::SelectMultiple, _) => {
                let chosen: Vec<&str> = match value {
                    Value::Text(s) => vec![s.as_str()],
                    Value::Choices(c) => c.iter().map(String::as_str).collect(),
                    _ => vec![],
                };
                let mut seen = std::collections::HashSet::new();
                if !chosen.iter().all(|c| seen.insert(*c)) {
                    return Some("choice_duplicate");
                }
                for c in chosen {
                    let known = match (&def.choices, &def.code_list) {
                        (Some(list), _) => self
                            .form
                            .choice_list(list)
                            .map(|l| l.iter().any(|x| x.value == c)),
                        (None, Some(list)) => self.code_lists.contains(list, c),
                        (None, None) => Some(false),
                    };
                    match known {
                        Some(true) => {}
                        Some(false) => return Some("choice_unknown"),
                        None => {
                            let path = self.path_of(f, ctx);
                            out.push(problem(path, "code_list_unavailable", Severity::Warning));
                            return None;
                        }
                    }
                }
                None
            }
            (FieldKind::Money, Value::Number(n)) if *n < 0.0 => Some("money_negative"),
            (FieldKind::ResidentId, _) => text.and_then(|s| {
                domain::ResidentId::parse(s, self.today)
                    .err()
                    .map(|e| e.code())
            }),
            (FieldKind::RegionCode, _) => {
                text.and_then(|s| domain::check_region_code(s).err().map(|e| e.code()))
            }
            (FieldKind::Phone, _) => text
                .filter(|s| !domain::is_valid_phone(s))
                .map(|_| "phone_invalid"),
            (FieldKind::PersonName, _) => {
                text.and_then(|s| domain::check_person_name(s).err().map(|e| e.code()))
            }
            (FieldKind::DisabilityCertificate, _) => {
                let holder = f.id_field.and_then(|id| match self.value(id, ctx) {
                    Value::Text(s) => Some(s),
                    _ => None,
                });
                text.and_then(|s| {
                    domain::check_disability_certificate(s, holder.as_deref(), self.today)
                        .err()
                        .map(|e| e.code())
                })
            }
            (FieldKind::Date, Value::Date(d)) if *d > self.today + chrono::Days::new(3650) => {
                Some("date_out_of_range")
            }
            (FieldKind::Date, Value::Date(d))
                if *d < NaiveDate::from_ymd_opt(1880, 1, 1).unwrap_or(NaiveDate::MIN) =>
            {
                Some("date_out_of_range")
            }
            (FieldKind::Geopoint, Value::Geopoint(g)) => {
                if !(-90.0..=90.0).contains(&g.lat)
                    || !(-180.0..=180.0).contains(&g.lon)
                    || g.accuracy_m.is_some_and(|a| a < 0.0)
                {
                    Some("geopoint_range")
                } else {
                    if g.mock {
                        out.push(problem(
                            self.path_of(f, ctx),
                            "geopoint_mock",
                            Severity::Warning,
                        ));
                    }
                    None
                }
            }
            (FieldKind::Photo | FieldKind::Signature, _) => text
                .filter(|s| uuid::Uuid::parse_str(s).is_err())
                .map(|_| "attachment_reference"),
            (FieldKind::Text, _) => text
                .filter(|s| s.chars().count() > 2000)
                .map(|_| "text_too_long"),
            _ => None,
        }
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

fn find_def<'d>(items: &'d [super::form::ItemDef], name: &str) -> Option<&'d super::form::ItemDef> {
    items.iter().find_map(|d| {
        if d.name == name {
            Some(d)
        } else {
            find_def(&d.items, name)
        }
    })
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

fn problem(path: String, code: &str, severity: Severity) -> Problem {
    let (zh, en) = message(code);
    Problem {
        path,
        code: code.to_owned(),
        severity,
        message_zh: zh.to_owned(),
        message_en: en.to_owned(),
    }
}

/// The standard wording of each problem code, in Chinese and English.
pub fn message(code: &str) -> (&'static str, &'static str) {
    match code {
        "required" => ("此项必填", "This answer is required"),
        "type_mismatch" => ("答案格式不正确", "The answer has the wrong format"),
        "unknown_field" => ("表单中没有此项", "This answer is not part of the form"),
        "choice_unknown" => ("选项不在列表中", "The choice is not in the list"),
        "choice_duplicate" => ("选项重复", "A choice is selected twice"),
        "code_list_unavailable" => (
            "代码表尚未下载，无法核对",
            "The code list is not on this device yet; the choice was not checked",
        ),
        "money_negative" => ("金额不能为负数", "Amounts of money cannot be negative"),
        "resident_id_length" => ("身份证号应为18位", "A resident ID has 18 characters"),
        "resident_id_characters" => (
            "身份证号只能包含数字，最后一位可为X",
            "A resident ID is digits, with X allowed last",
        ),
        "resident_id_check" => (
            "身份证号校验位不正确",
            "The resident ID's check character is wrong",
        ),
        "resident_id_birth_date" => (
            "身份证号中的出生日期无效",
            "The birth date in the resident ID is not a real past date",
        ),
        "region_code_syntax" => ("区划代码应为12位数字", "A region code has 12 digits"),
        "region_code_unknown_township" => (
            "区划代码中的乡镇不存在",
            "The township in this region code does not exist",
        ),
        "phone_invalid" => (
            "电话号码格式不正确",
            "The phone number is not a valid mobile or landline number",
        ),
        "name_empty" => ("姓名不能为空", "The name is empty"),
        "name_too_long" => ("姓名过长", "The name is too long"),
        "name_characters" => (
            "姓名含有不允许的字符",
            "The name contains characters a name cannot have",
        ),
        "disability_certificate_length" => (
            "残疾证号应为20位",
            "A disability certificate number has 20 characters",
        ),
        "disability_certificate_id" => (
            "残疾证号前18位不是有效身份证号",
            "The first 18 characters are not a valid resident ID",
        ),
        "disability_certificate_other_person" => (
            "残疾证号与本人身份证号不符",
            "The certificate belongs to a different ID than this member's",
        ),
        "disability_certificate_category" => {
            ("残疾类别应为1至7", "The disability category must be 1 to 7")
        }
        "disability_certificate_level" => {
            ("残疾等级应为1至4", "The disability level must be 1 to 4")
        }
        "date_out_of_range" => ("日期超出合理范围", "The date is out of the plausible range"),
        "geopoint_range" => ("位置坐标无效", "The location coordinates are invalid"),
        "geopoint_mock" => (
            "位置可能来自模拟定位",
            "The location may come from a mock-location app",
        ),
        "attachment_reference" => ("附件引用无效", "The attachment reference is invalid"),
        "text_too_long" => ("文字过长", "The text is too long"),
        "repeat_too_few" => ("条目数量不足", "Too few entries"),
        "repeat_too_many" => ("条目数量过多", "Too many entries"),
        "constraint" => ("答案不符合要求", "The answer does not meet the form's rule"),
        _ => ("答案有问题", "There is a problem with this answer"),
    }
}
