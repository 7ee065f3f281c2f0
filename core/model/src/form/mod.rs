//! Form definitions: the versioned JSON document and its checked, compiled form.
//!
//! Loading a definition checks everything that can be checked without answers: names, types,
//! choice lists, every expression (syntax, references, types, repeat scoping) and the absence
//! of dependency cycles. All problems are reported at once, each with its path.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

mod cycles;
mod load;

use super::expr::{Compiled, Scope, Type};
use super::text::Text;

/// The JSON document a form designer writes and the server delivers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormDefinition {
    pub id: String,
    pub version: u32,
    pub title: Text,
    /// Configurable numbers read by `param('name')`: 低保 standard, thresholds, windows.
    #[serde(default)]
    pub parameters: BTreeMap<String, f64>,
    #[serde(default)]
    pub choice_lists: BTreeMap<String, Vec<Choice>>,
    /// Top-level items; by convention each is a group (a section).
    pub sections: Vec<ItemDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    pub value: String,
    pub label: Text,
}

/// `true`, `false` or an expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Condition {
    Fixed(bool),
    Expr(String),
}

/// One item of a form: a group, a repeat or a field, told apart by `type`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemDef {
    #[serde(rename = "type")]
    pub item_type: String,
    pub name: String,
    #[serde(default)]
    pub label: Text,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relevant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint_message: Option<Text>,
    /// `error` (default) blocks completion; `warning` does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint_severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calculate: Option<String>,
    /// An expression giving the value while the field is unanswered (e.g. sex from the ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Name of a choice list of this form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<String>,
    /// Name of a server-delivered code list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_list: Option<String>,
    /// For `disability_certificate`: the resident ID field of the same person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_field: Option<String>,
    /// Where a completed visit writes this answer: `household.<field>` or `member.<field>`;
    /// on a repeat, `members`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemDef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// The kind of a field, which decides its answer shape and its built-in checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    Text,
    PersonName,
    Integer,
    Decimal,
    Date,
    Datetime,
    SelectOne,
    SelectMultiple,
    Money,
    Geopoint,
    Photo,
    Signature,
    Note,
    ResidentId,
    RegionCode,
    Phone,
    DisabilityCertificate,
    /// A hidden computed value; its type is the type of its expression.
    Calculate,
}

impl FieldKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "text" => Self::Text,
            "person_name" => Self::PersonName,
            "integer" => Self::Integer,
            "decimal" => Self::Decimal,
            "date" => Self::Date,
            "datetime" => Self::Datetime,
            "select_one" => Self::SelectOne,
            "select_multiple" => Self::SelectMultiple,
            "money" => Self::Money,
            "geopoint" => Self::Geopoint,
            "photo" => Self::Photo,
            "signature" => Self::Signature,
            "note" => Self::Note,
            "resident_id" => Self::ResidentId,
            "region_code" => Self::RegionCode,
            "phone" => Self::Phone,
            "disability_certificate" => Self::DisabilityCertificate,
            "calculate" => Self::Calculate,
            _ => return None,
        })
    }

    /// The type expressions see for a field of this kind (Calculate: from its expression).
    fn value_type(self) -> Type {
        match self {
            Self::Integer | Self::Decimal | Self::Money => Type::Number,
            Self::Date => Type::Date,
            Self::Datetime => Type::DateTime,
            Self::SelectMultiple => Type::Choices,
            Self::Geopoint => Type::Geopoint,
            Self::Text
            | Self::PersonName
            | Self::SelectOne
            | Self::Photo
            | Self::Signature
            | Self::Note
            | Self::ResidentId
            | Self::RegionCode
            | Self::Phone
            | Self::DisabilityCertificate
            | Self::Calculate => Type::Text,
        }
    }

    pub fn has_answer(self) -> bool {
        self != Self::Note
    }
}

/// A container of items: the form itself, a group or a repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Container {
    Group(usize),
    Repeat(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemRef {
    Field(usize),
    Group(usize),
    Repeat(usize),
}

/// A field after loading: its place in the tree and its compiled expressions.
#[derive(Debug)]
pub struct FieldInfo {
    pub name: String,
    pub kind: FieldKind,
    pub ty: Type,
    /// Repeats containing this field, outermost first.
    pub chain: Vec<usize>,
    pub parent: Option<Container>,
    pub required: Option<Compiled>,
    pub always_required: bool,
    pub relevant: Option<Compiled>,
    pub constraint: Option<Compiled>,
    pub constraint_severity: Severity,
    pub calculate: Option<Compiled>,
    pub default: Option<Compiled>,
    pub id_field: Option<usize>,
    pub def_path: String,
}

#[derive(Debug)]
pub struct GroupInfo {
    pub name: String,
    pub chain: Vec<usize>,
    pub parent: Option<Container>,
    pub relevant: Option<Compiled>,
    pub items: Vec<ItemRef>,
}

#[derive(Debug)]
pub struct RepeatInfo {
    pub name: String,
    /// Repeats containing this repeat (not itself), outermost first.
    pub chain: Vec<usize>,
    pub parent: Option<Container>,
    pub relevant: Option<Compiled>,
    pub required: Option<Compiled>,
    pub always_required: bool,
    pub min_count: u32,
    pub max_count: Option<u32>,
    pub constraint: Option<Compiled>,
    pub constraint_severity: Severity,
    pub items: Vec<ItemRef>,
}

/// One problem found while loading a form definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FormProblem {
    /// Where in the definition: `sections[2].items[0]` followed by the item's name.
    pub path: String,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for FormProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.path, self.message, self.code)
    }
}

/// A form definition could not be loaded; every problem found is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("form definition has {} problem(s); first: {}", problems.len(), problems.first().map(ToString::to_string).unwrap_or_default())]
pub struct FormLoadError {
    pub problems: Vec<FormProblem>,
}

/// A loaded, checked form.
#[derive(Debug)]
pub struct Form {
    pub definition: FormDefinition,
    pub fields: Vec<FieldInfo>,
    pub groups: Vec<GroupInfo>,
    pub repeats: Vec<RepeatInfo>,
    pub items: Vec<ItemRef>,
    names: HashMap<String, ItemRef>,
    /// The `ItemDef` behind each field/group/repeat, by path of indices into `definition`.
    field_defs: Vec<Vec<usize>>,
}

impl Form {
    pub fn from_json(json: &str) -> Result<Self, FormLoadError> {
        let definition: FormDefinition = serde_json::from_str(json).map_err(|e| FormLoadError {
            problems: vec![FormProblem {
                path: format!("line {} column {}", e.line(), e.column()),
                code: "form_json".into(),
                message: format!("not a valid form definition: {e}"),
            }],
        })?;
        Self::load(definition)
    }

    /// Checks and compiles a definition; every problem is reported at once (see `load.rs`).
    pub fn load(definition: FormDefinition) -> Result<Self, FormLoadError> {
        load::load(definition)
    }

    pub fn id(&self) -> &str {
        &self.definition.id
    }
    pub fn version(&self) -> u32 {
        self.definition.version
    }

    pub fn lookup(&self, name: &str) -> Option<ItemRef> {
        self.names.get(name).copied()
    }

    /// The definition item of a field (labels, hints, choices, record binding).
    pub fn field_def(&self, id: usize) -> Option<&ItemDef> {
        let path = self.field_defs.get(id)?;
        let (first, rest) = path.split_first()?;
        let mut item = self.definition.sections.get(*first)?;
        for i in rest {
            item = item.items.get(*i)?;
        }
        Some(item)
    }

    /// Choice values of an inline list (code lists are checked against the store's lists).
    pub fn choice_list(&self, name: &str) -> Option<&[Choice]> {
        self.definition.choice_lists.get(name).map(Vec::as_slice)
    }
}

impl Scope for Form {
    fn field(&self, name: &str) -> Option<(usize, Type, &[usize])> {
        match self.names.get(name)? {
            ItemRef::Field(id) => self
                .fields
                .get(*id)
                .map(|f| (*id, f.ty, f.chain.as_slice())),
            _ => None,
        }
    }
    fn repeat(&self, name: &str) -> Option<(usize, &[usize])> {
        match self.names.get(name)? {
            ItemRef::Repeat(id) => self.repeats.get(*id).map(|r| (*id, r.chain.as_slice())),
            _ => None,
        }
    }
    fn param(&self, name: &str) -> Option<f64> {
        self.definition.parameters.get(name).copied()
    }
}
