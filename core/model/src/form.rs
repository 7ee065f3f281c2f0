//! Form definitions: the versioned JSON document and its checked, compiled form.
//!
//! Loading a definition checks everything that can be checked without answers: names, types,
//! choice lists, every expression (syntax, references, types, repeat scoping) and the absence
//! of dependency cycles. All problems are reported at once, each with its path.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::expr::{self, Compiled, Scope, Type};
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

/// Limits that keep a hostile definition from exhausting a cheap phone.
const MAX_ITEMS: usize = 5000;
const MAX_NESTING: usize = 16;

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

/// A definition item waiting to be walked: the item, its path, its container, the repeats
/// around it, its index path in the definition, and its nesting depth.
type Frame<'a> = (
    &'a ItemDef,
    String,
    Option<Container>,
    Vec<usize>,
    Vec<usize>,
    usize,
);

struct Pending<'a> {
    def: &'a ItemDef,
    item: ItemRef,
    chain: Vec<usize>,
    path: String,
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

    pub fn load(definition: FormDefinition) -> Result<Self, FormLoadError> {
        let mut form = Self {
            definition: FormDefinition {
                id: String::new(),
                version: 0,
                title: Text::default(),
                parameters: BTreeMap::new(),
                choice_lists: BTreeMap::new(),
                sections: Vec::new(),
            },
            fields: Vec::new(),
            groups: Vec::new(),
            repeats: Vec::new(),
            items: Vec::new(),
            names: HashMap::new(),
            field_defs: Vec::new(),
        };
        let mut problems = Vec::new();
        let mut problem = |path: &str, code: &str, message: String| {
            problems.push(FormProblem {
                path: path.to_owned(),
                code: code.to_owned(),
                message,
            });
        };
        if definition.id.is_empty() || !is_identifier(&definition.id) {
            problem(
                "id",
                "form_id",
                "the form id must be a non-empty identifier ([a-z0-9_])".into(),
            );
        }
        if definition.version == 0 {
            problem(
                "version",
                "form_version",
                "the form version must be a positive integer".into(),
            );
        }
        for (name, value) in &definition.parameters {
            if !value.is_finite() {
                problem(
                    &format!("parameters.{name}"),
                    "form_parameter",
                    "a parameter must be a finite number".into(),
                );
            }
        }
        for (list, choices) in &definition.choice_lists {
            let mut seen = std::collections::HashSet::new();
            for (i, c) in choices.iter().enumerate() {
                if c.value.is_empty() || !seen.insert(c.value.as_str()) {
                    problem(
                        &format!("choice_lists.{list}[{i}]"),
                        "form_choice",
                        "choice values must be non-empty and unique within a list".into(),
                    );
                }
            }
        }

        // Pass 1: walk the tree, assign ids, register names.
        let mut pending: Vec<Pending<'_>> = Vec::new();
        let mut stack: Vec<Frame<'_>> = definition
            .sections
            .iter()
            .enumerate()
            .rev()
            .map(|(i, d)| (d, format!("sections[{i}]"), None, Vec::new(), vec![i], 0))
            .collect();
        let mut count = 0usize;
        while let Some((def, path, parent, chain, index_path, depth)) = stack.pop() {
            count += 1;
            if count > MAX_ITEMS {
                problem(
                    "sections",
                    "form_too_large",
                    format!("a form may have at most {MAX_ITEMS} items"),
                );
                break;
            }
            let path = format!("{path} ({})", def.name);
            if !is_identifier(&def.name) {
                problem(
                    &path,
                    "form_name",
                    "item names must match [a-z_][a-z0-9_]*".into(),
                );
            }
            if depth > MAX_NESTING {
                problem(
                    &path,
                    "form_too_deep",
                    format!("groups and repeats nest at most {MAX_NESTING} deep"),
                );
                continue;
            }
            let item = match def.item_type.as_str() {
                "group" => {
                    let id = form.groups.len();
                    form.groups.push(GroupInfo {
                        name: def.name.clone(),
                        chain: chain.clone(),
                        parent,
                        relevant: None,
                        items: Vec::new(),
                    });
                    ItemRef::Group(id)
                }
                "repeat" => {
                    let id = form.repeats.len();
                    form.repeats.push(RepeatInfo {
                        name: def.name.clone(),
                        chain: chain.clone(),
                        parent,
                        relevant: None,
                        required: None,
                        always_required: def.required == Some(Condition::Fixed(true)),
                        min_count: def.min_count.unwrap_or(0),
                        max_count: def.max_count,
                        constraint: None,
                        constraint_severity: def.constraint_severity.unwrap_or(Severity::Error),
                        items: Vec::new(),
                    });
                    if def
                        .max_count
                        .is_some_and(|max| max < def.min_count.unwrap_or(0))
                    {
                        problem(
                            &path,
                            "form_repeat_bounds",
                            "max_count is smaller than min_count".into(),
                        );
                    }
                    ItemRef::Repeat(id)
                }
                other => {
                    let Some(kind) = FieldKind::parse(other) else {
                        problem(
                            &path,
                            "form_item_type",
                            format!("unknown item type '{other}'"),
                        );
                        continue;
                    };
                    if !def.items.is_empty() {
                        problem(
                            &path,
                            "form_field_items",
                            "only groups and repeats contain items".into(),
                        );
                    }
                    let id = form.fields.len();
                    form.fields.push(FieldInfo {
                        name: def.name.clone(),
                        kind,
                        ty: kind.value_type(),
                        chain: chain.clone(),
                        parent,
                        required: None,
                        always_required: def.required == Some(Condition::Fixed(true)),
                        relevant: None,
                        constraint: None,
                        constraint_severity: def.constraint_severity.unwrap_or(Severity::Error),
                        calculate: None,
                        default: None,
                        id_field: None,
                        def_path: path.clone(),
                    });
                    form.field_defs.push(index_path.clone());
                    ItemRef::Field(id)
                }
            };
            if form.names.insert(def.name.clone(), item).is_some() {
                problem(
                    &path,
                    "form_duplicate_name",
                    format!("the name '{}' is used twice", def.name),
                );
            }
            match parent {
                None => form.items.push(item),
                Some(Container::Group(g)) => {
                    if let Some(group) = form.groups.get_mut(g) {
                        group.items.push(item);
                    }
                }
                Some(Container::Repeat(r)) => {
                    if let Some(repeat) = form.repeats.get_mut(r) {
                        repeat.items.push(item);
                    }
                }
            }
            let container = match item {
                ItemRef::Group(g) => Some(Container::Group(g)),
                ItemRef::Repeat(r) => Some(Container::Repeat(r)),
                ItemRef::Field(_) => None,
            };
            if let Some(container) = container {
                let mut inner_chain = chain.clone();
                if let Container::Repeat(r) = container {
                    inner_chain.push(r);
                }
                for (i, child) in def.items.iter().enumerate().rev() {
                    let mut child_index = index_path.clone();
                    child_index.push(i);
                    stack.push((
                        child,
                        format!("{path}.items[{i}]"),
                        Some(container),
                        inner_chain.clone(),
                        child_index,
                        depth + 1,
                    ));
                }
            }
            pending.push(Pending {
                def,
                item,
                chain,
                path,
            });
        }

        // Pass 2: choices and expressions, now that every name is known.
        form.definition.parameters = definition.parameters.clone();
        // The type of a calculate field is the type of its expression, which may read other
        // calculate fields: settle the types first (errors are reported by the pass below).
        let calculated: Vec<(usize, &str, &[usize])> = pending
            .iter()
            .filter_map(|p| match (p.item, &p.def.calculate) {
                (ItemRef::Field(id), Some(src)) if p.def.item_type == "calculate" => {
                    Some((id, src.as_str(), p.chain.as_slice()))
                }
                _ => None,
            })
            .collect();
        for _ in 0..=calculated.len() {
            let mut changed = false;
            for (id, src, chain) in &calculated {
                if let Ok(c) = expr::compile(src, &form, chain, None)
                    && let Some(field) = form.fields.get_mut(*id)
                {
                    changed |= field.ty != c.ty();
                    field.ty = c.ty();
                }
            }
            if !changed {
                break;
            }
        }
        for p in &pending {
            let mut compile = |what: &str,
                               src: &Option<String>,
                               ctx: &[usize],
                               current: Option<Type>|
             -> Option<Compiled> {
                let src = src.as_ref()?;
                match expr::compile(src, &form, ctx, current) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        problem(&format!("{}.{what}", p.path), e.code, e.message);
                        None
                    }
                }
            };
            match p.item {
                ItemRef::Field(id) => {
                    let Some(kind) = form.fields.get(id).map(|f| f.kind) else {
                        continue;
                    };
                    let own_ty = kind.value_type();
                    let relevant = compile("relevant", &p.def.relevant, &p.chain, None);
                    let required = match &p.def.required {
                        Some(Condition::Expr(e)) => {
                            compile("required", &Some(e.clone()), &p.chain, None)
                        }
                        _ => None,
                    };
                    let calculate = compile("calculate", &p.def.calculate, &p.chain, None);
                    let ty = match (kind, &calculate) {
                        (FieldKind::Calculate, Some(c)) => c.ty(),
                        _ => own_ty,
                    };
                    let constraint = compile("constraint", &p.def.constraint, &p.chain, Some(ty));
                    let default = compile("default", &p.def.default, &p.chain, Some(ty));
                    for (what, c) in [
                        ("relevant", &relevant),
                        ("required", &required),
                        ("constraint", &constraint),
                    ] {
                        if let Some(c) = c
                            && c.ty() != Type::Bool
                        {
                            problem(
                                &format!("{}.{what}", p.path),
                                "expr_type",
                                format!(
                                    "{what} must be a boolean expression, found a {}",
                                    c.ty().name()
                                ),
                            );
                        }
                    }
                    for (what, c) in [("calculate", &calculate), ("default", &default)] {
                        if let Some(c) = c
                            && kind != FieldKind::Calculate
                            && c.ty() != own_ty
                            && c.ty() != Type::Empty
                        {
                            problem(
                                &format!("{}.{what}", p.path),
                                "expr_type",
                                format!(
                                    "{what} gives a {} but the field holds a {}",
                                    c.ty().name(),
                                    own_ty.name()
                                ),
                            );
                        }
                    }
                    if kind == FieldKind::Calculate && p.def.calculate.is_none() {
                        problem(
                            &p.path,
                            "form_calculate_missing",
                            "a calculate field needs a calculate expression".into(),
                        );
                    }
                    let is_select =
                        matches!(kind, FieldKind::SelectOne | FieldKind::SelectMultiple);
                    match (&p.def.choices, &p.def.code_list, is_select) {
                        (Some(list), None, true) if !definition.choice_lists.contains_key(list) => {
                            problem(
                                &p.path,
                                "form_unknown_choices",
                                format!("choice list '{list}' is not defined"),
                            );
                        }
                        (Some(_), None, true) | (None, Some(_), true) => {}
                        (_, _, true) => problem(
                            &p.path,
                            "form_choices",
                            "a select field names exactly one of choices or code_list".into(),
                        ),
                        (None, None, false) => {}
                        (_, _, false) => problem(
                            &p.path,
                            "form_choices",
                            "only select fields have choices".into(),
                        ),
                    }
                    let mut id_field = None;
                    if kind == FieldKind::DisabilityCertificate {
                        match p.def.id_field.as_deref().map(|n| (n, form.names.get(n))) {
                            Some((_, Some(ItemRef::Field(f))))
                                if form.fields.get(*f).is_some_and(|f| {
                                    f.kind == FieldKind::ResidentId && f.chain == p.chain
                                }) =>
                            {
                                id_field = Some(*f)
                            }
                            _ => problem(
                                &p.path,
                                "form_id_field",
                                "id_field must name a resident_id field in the same repeat".into(),
                            ),
                        }
                    }
                    if let Some(field) = form.fields.get_mut(id) {
                        field.ty = ty;
                        field.relevant = relevant;
                        field.required = required;
                        field.calculate = calculate;
                        field.constraint = constraint;
                        field.default = default;
                        field.id_field = id_field;
                    }
                }
                ItemRef::Group(g) => {
                    let relevant = compile("relevant", &p.def.relevant, &p.chain, None);
                    if let Some(group) = form.groups.get_mut(g) {
                        group.relevant = relevant;
                    }
                }
                ItemRef::Repeat(r) => {
                    // A repeat's own expressions are seen from its parent, where it is one value.
                    let relevant = compile("relevant", &p.def.relevant, &p.chain, None);
                    let required = match &p.def.required {
                        Some(Condition::Expr(e)) => {
                            compile("required", &Some(e.clone()), &p.chain, None)
                        }
                        _ => None,
                    };
                    let constraint = compile("constraint", &p.def.constraint, &p.chain, None);
                    if let Some(repeat) = form.repeats.get_mut(r) {
                        repeat.relevant = relevant;
                        repeat.required = required;
                        repeat.constraint = constraint;
                    }
                }
            }
        }
        form.definition = definition;
        {
            if let Some(cycle) = form.find_cycle() {
                problems.push(FormProblem {
                    path: cycle.first().cloned().unwrap_or_default(),
                    code: "expr_cycle".into(),
                    message: format!(
                        "values depend on each other in a cycle: {}",
                        cycle.join(" → ")
                    ),
                });
            }
        }
        if problems.is_empty() {
            Ok(form)
        } else {
            Err(FormLoadError { problems })
        }
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

    /// Depth-first search over "value of A needs value of B" edges: calculate, default and
    /// relevance (own and enclosing containers), and repeat counts.
    fn find_cycle(&self) -> Option<Vec<String>> {
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        enum N {
            F(usize),
            G(usize),
            R(usize),
        }
        let deps = |n: N| -> Vec<N> {
            let mut out = Vec::new();
            let mut add = |c: &Option<Compiled>| {
                if let Some(c) = c {
                    out.extend(c.field_deps().iter().map(|&f| N::F(f)));
                    out.extend(c.repeat_deps().iter().map(|&r| N::R(r)));
                }
            };
            let parent = match n {
                N::F(f) => self.fields.get(f).and_then(|f| {
                    add(&f.calculate);
                    add(&f.default);
                    add(&f.relevant);
                    f.parent
                }),
                N::G(g) => self.groups.get(g).and_then(|g| {
                    add(&g.relevant);
                    g.parent
                }),
                N::R(r) => self.repeats.get(r).and_then(|r| {
                    add(&r.relevant);
                    r.parent
                }),
            };
            match parent {
                Some(Container::Group(g)) => out.push(N::G(g)),
                Some(Container::Repeat(r)) => out.push(N::R(r)),
                None => {}
            }
            out
        };
        let name = |n: N| {
            match n {
                N::F(f) => self.fields.get(f).map(|x| x.name.clone()),
                N::G(g) => self.groups.get(g).map(|x| x.name.clone()),
                N::R(r) => self.repeats.get(r).map(|x| x.name.clone()),
            }
            .unwrap_or_default()
        };
        let all: Vec<N> = (0..self.fields.len())
            .map(N::F)
            .chain((0..self.groups.len()).map(N::G))
            .chain((0..self.repeats.len()).map(N::R))
            .collect();
        // 0 = unvisited, 1 = on the current path, 2 = done. Iterative to bound stack use.
        let mut state: HashMap<N, u8> = HashMap::new();
        for &start in &all {
            if state.get(&start).copied().unwrap_or(0) != 0 {
                continue;
            }
            let mut path: Vec<(N, Vec<N>)> = vec![(start, deps(start))];
            state.insert(start, 1);
            while let Some((node, pending)) = path.last_mut() {
                let node = *node;
                match pending.pop() {
                    Some(next) => match state.get(&next).copied().unwrap_or(0) {
                        0 => {
                            state.insert(next, 1);
                            let d = deps(next);
                            path.push((next, d));
                        }
                        1 => {
                            let from = path.iter().position(|(n, _)| *n == next).unwrap_or(0);
                            let mut cycle: Vec<String> =
                                path.iter().skip(from).map(|(n, _)| name(*n)).collect();
                            cycle.push(name(next));
                            return Some(cycle);
                        }
                        _ => {}
                    },
                    None => {
                        state.insert(node, 2);
                        path.pop();
                    }
                }
            }
        }
        None
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

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && s.len() <= 64
}
