//! The expression language of forms: XLSForm-style `${field}` references, `and`/`or`/`not`,
//! comparisons, arithmetic and a fixed set of functions.
//!
//! Expressions are parsed and type-checked once, when a form loads ([`compile`]); a syntax
//! error, an unknown field, a type error or a misuse of a repeat is reported then, with the
//! field's path. Evaluation ([`Compiled::eval`]) is total: it never panics and never fails; a
//! value it cannot compute (division by zero, an unanswered field) is [`Value::Null`].

mod check;
mod eval;
mod parse;

pub use check::{Compiled, Scope, compile};
pub use eval::Env;
pub use parse::{Ast, BinOp, MAX_DEPTH, MAX_EXPRESSION_LEN, parse};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

/// Static type of an expression or a field as seen by expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Type {
    Bool,
    Number,
    Text,
    Date,
    DateTime,
    /// The answer of a select_multiple field: a list of choice values.
    Choices,
    Geopoint,
    /// The literal `''`: "no answer", comparable with and unifiable into any type.
    Empty,
}

impl Type {
    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "boolean",
            Self::Number => "number",
            Self::Text => "text",
            Self::Date => "date",
            Self::DateTime => "datetime",
            Self::Choices => "list of choices",
            Self::Geopoint => "geopoint",
            Self::Empty => "empty",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
    pub accuracy_m: Option<f64>,
    pub provider: Option<String>,
    pub mock: bool,
}

/// A runtime value. `Null` is an unanswered, non-relevant or uncomputable value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
    Choices(Vec<String>),
    Geopoint(GeoPoint),
}

impl Value {
    /// Empty in the XLSForm sense: no answer, `''`, or no choice selected.
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Null => true,
            Self::Text(s) => s.is_empty(),
            Self::Choices(c) => c.is_empty(),
            _ => false,
        }
    }

    /// A boolean condition: only `true` counts; null and anything else is false.
    pub fn is_true(&self) -> bool {
        matches!(self, Self::Bool(true))
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Self::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// JSON form used when a calculated value is stored with the answers.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Self::Null => J::Null,
            Self::Bool(b) => J::Bool(*b),
            Self::Number(n) => {
                if n.fract() == 0.0 && n.abs() < 9.0e15 {
                    J::from(*n as i64)
                } else {
                    serde_json::Number::from_f64(*n).map_or(J::Null, J::Number)
                }
            }
            Self::Text(s) => J::String(s.clone()),
            Self::Date(d) => J::String(d.format("%Y-%m-%d").to_string()),
            Self::DateTime(t) => J::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            Self::Choices(c) => J::Array(c.iter().cloned().map(J::String).collect()),
            Self::Geopoint(g) => serde_json::to_value(g).unwrap_or(J::Null),
        }
    }
}

/// An expression that could not be compiled. `code` is stable; `message` names no answer values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    pub code: &'static str,
    pub message: String,
}

impl ExprError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    fn syntax(pos: usize, what: &str) -> Self {
        Self::new("expr_syntax", format!("syntax error at byte {pos}: {what}"))
    }
}
