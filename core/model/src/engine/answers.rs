//! Answers as stored: their JSON shapes per field kind, paths (`members[2].id_number`), and
//! setting or removing one answer.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value as Json};
use unicode_normalization::UnicodeNormalization;

use super::{AnswerError, MAX_ANSWER_BYTES, MAX_REPEAT_INSTANCES};
use crate::domain;
use crate::expr::{GeoPoint, Value};
use crate::form::{FieldInfo, FieldKind, Form, ItemRef};

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
pub(super) fn scope_mut<'a>(
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
