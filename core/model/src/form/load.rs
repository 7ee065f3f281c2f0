//! Loading a definition: pass 1 walks the item tree (ids, names, containers), pass 2 compiles
//! every expression and checks choices once every name is known, then dependency cycles are
//! looked for. Every problem is collected, each with its path.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{
    Condition, Container, FieldInfo, FieldKind, Form, FormDefinition, FormLoadError, FormProblem,
    GroupInfo, ItemDef, ItemRef, RepeatInfo, Severity,
};
use crate::expr::{self, Compiled, Type};
use crate::text::Text;

/// Limits that keep a hostile definition from exhausting a cheap phone.
const MAX_ITEMS: usize = 5000;
const MAX_NESTING: usize = 16;

/// A definition item waiting to be walked.
struct Frame<'a> {
    def: &'a ItemDef,
    path: String,
    parent: Option<Container>,
    /// The repeats around it, outermost first.
    chain: Vec<usize>,
    /// Its index path in the definition.
    index_path: Vec<usize>,
    depth: usize,
}

/// An item registered in pass 1, compiled in pass 2.
struct Pending<'a> {
    def: &'a ItemDef,
    item: ItemRef,
    chain: Vec<usize>,
    path: String,
}

pub(super) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && s.len() <= 64
}

struct Loader {
    form: Form,
    problems: Vec<FormProblem>,
}

pub(super) fn load(definition: FormDefinition) -> Result<Form, FormLoadError> {
    let mut l = Loader {
        form: Form {
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
        },
        problems: Vec::new(),
    };
    l.check_header(&definition);
    let pending = l.register_items(&definition);
    // Expressions read parameters through the form while they compile.
    l.form.definition.parameters = definition.parameters.clone();
    l.settle_calculated_types(&pending);
    for p in &pending {
        l.compile(p, &definition);
    }
    let Loader {
        mut form,
        mut problems,
    } = l;
    form.definition = definition;
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
    if problems.is_empty() {
        Ok(form)
    } else {
        Err(FormLoadError { problems })
    }
}

impl Loader {
    fn problem(&mut self, path: &str, code: &str, message: String) {
        self.problems.push(FormProblem {
            path: path.to_owned(),
            code: code.to_owned(),
            message,
        });
    }

    /// The form's id and version, its parameters and its choice lists.
    fn check_header(&mut self, definition: &FormDefinition) {
        if definition.id.is_empty() || !is_identifier(&definition.id) {
            let m = "the form id must be a non-empty identifier ([a-z0-9_])";
            self.problem("id", "form_id", m.into());
        }
        if definition.version == 0 {
            let m = "the form version must be a positive integer";
            self.problem("version", "form_version", m.into());
        }
        for (name, value) in &definition.parameters {
            if !value.is_finite() {
                let m = "a parameter must be a finite number";
                self.problem(&format!("parameters.{name}"), "form_parameter", m.into());
            }
        }
        for (list, choices) in &definition.choice_lists {
            let mut seen = HashSet::new();
            for (i, c) in choices.iter().enumerate() {
                if c.value.is_empty() || !seen.insert(c.value.as_str()) {
                    let m = "choice values must be non-empty and unique within a list";
                    self.problem(
                        &format!("choice_lists.{list}[{i}]"),
                        "form_choice",
                        m.into(),
                    );
                }
            }
        }
    }

    /// Pass 1: walks the tree (iteratively: a deep hostile form cannot exhaust the stack),
    /// assigns ids and registers names.
    fn register_items<'d>(&mut self, definition: &'d FormDefinition) -> Vec<Pending<'d>> {
        let mut pending = Vec::new();
        let mut stack: Vec<Frame<'d>> = definition
            .sections
            .iter()
            .enumerate()
            .rev()
            .map(|(i, def)| Frame {
                def,
                path: format!("sections[{i}]"),
                parent: None,
                chain: Vec::new(),
                index_path: vec![i],
                depth: 0,
            })
            .collect();
        let mut count = 0usize;
        while let Some(frame) = stack.pop() {
            count += 1;
            if count > MAX_ITEMS {
                let m = format!("a form may have at most {MAX_ITEMS} items");
                self.problem("sections", "form_too_large", m);
                break;
            }
            let path = format!("{} ({})", frame.path, frame.def.name);
            if !is_identifier(&frame.def.name) {
                let m = "item names must match [a-z_][a-z0-9_]*";
                self.problem(&path, "form_name", m.into());
            }
            if frame.depth > MAX_NESTING {
                let m = format!("groups and repeats nest at most {MAX_NESTING} deep");
                self.problem(&path, "form_too_deep", m);
                continue;
            }
            let Some(item) = self.register(&frame, &path) else {
                continue;
            };
            self.push_children(&frame, item, &path, &mut stack);
            pending.push(Pending {
                def: frame.def,
                item,
                chain: frame.chain,
                path,
            });
        }
        pending
    }

    /// Creates the item of one definition entry, names it and puts it in its container.
    fn register(&mut self, frame: &Frame<'_>, path: &str) -> Option<ItemRef> {
        let def = frame.def;
        let item = match def.item_type.as_str() {
            "group" => self.new_group(frame),
            "repeat" => self.new_repeat(frame, path),
            other => self.new_field(frame, path, other)?,
        };
        if self.form.names.insert(def.name.clone(), item).is_some() {
            let m = format!("the name '{}' is used twice", def.name);
            self.problem(path, "form_duplicate_name", m);
        }
        let form = &mut self.form;
        match frame.parent {
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
        Some(item)
    }

    fn new_group(&mut self, frame: &Frame<'_>) -> ItemRef {
        let id = self.form.groups.len();
        self.form.groups.push(GroupInfo {
            name: frame.def.name.clone(),
            chain: frame.chain.clone(),
            parent: frame.parent,
            relevant: None,
            items: Vec::new(),
        });
        ItemRef::Group(id)
    }

    fn new_repeat(&mut self, frame: &Frame<'_>, path: &str) -> ItemRef {
        let def = frame.def;
        let id = self.form.repeats.len();
        self.form.repeats.push(RepeatInfo {
            name: def.name.clone(),
            chain: frame.chain.clone(),
            parent: frame.parent,
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
            let m = "max_count is smaller than min_count";
            self.problem(path, "form_repeat_bounds", m.into());
        }
        ItemRef::Repeat(id)
    }

    fn new_field(&mut self, frame: &Frame<'_>, path: &str, item_type: &str) -> Option<ItemRef> {
        let def = frame.def;
        let Some(kind) = FieldKind::parse(item_type) else {
            let m = format!("unknown item type '{item_type}'");
            self.problem(path, "form_item_type", m);
            return None;
        };
        if !def.items.is_empty() {
            let m = "only groups and repeats contain items";
            self.problem(path, "form_field_items", m.into());
        }
        let id = self.form.fields.len();
        self.form.fields.push(FieldInfo {
            name: def.name.clone(),
            kind,
            ty: kind.value_type(),
            chain: frame.chain.clone(),
            parent: frame.parent,
            required: None,
            always_required: def.required == Some(Condition::Fixed(true)),
            relevant: None,
            constraint: None,
            constraint_severity: def.constraint_severity.unwrap_or(Severity::Error),
            calculate: None,
            default: None,
            id_field: None,
            def_path: path.to_owned(),
        });
        self.form.field_defs.push(frame.index_path.clone());
        Some(ItemRef::Field(id))
    }

    /// Queues a group's or repeat's items, in order.
    fn push_children<'d>(
        &self,
        frame: &Frame<'d>,
        item: ItemRef,
        path: &str,
        stack: &mut Vec<Frame<'d>>,
    ) {
        let container = match item {
            ItemRef::Group(g) => Container::Group(g),
            ItemRef::Repeat(r) => Container::Repeat(r),
            ItemRef::Field(_) => return,
        };
        let mut inner_chain = frame.chain.clone();
        if let Container::Repeat(r) = container {
            inner_chain.push(r);
        }
        for (i, child) in frame.def.items.iter().enumerate().rev() {
            let mut index_path = frame.index_path.clone();
            index_path.push(i);
            stack.push(Frame {
                def: child,
                path: format!("{path}.items[{i}]"),
                parent: Some(container),
                chain: inner_chain.clone(),
                index_path,
                depth: frame.depth + 1,
            });
        }
    }

    /// The type of a calculate field is the type of its expression, which may read other
    /// calculate fields: settle the types first (errors are reported when compiling).
    fn settle_calculated_types(&mut self, pending: &[Pending<'_>]) {
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
                if let Ok(c) = expr::compile(src, &self.form, chain, None)
                    && let Some(field) = self.form.fields.get_mut(*id)
                {
                    changed |= field.ty != c.ty();
                    field.ty = c.ty();
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// One expression of an item, or `None` (with its problem recorded).
    fn expr(
        &mut self,
        p: &Pending<'_>,
        what: &str,
        src: Option<&str>,
        current: Option<Type>,
    ) -> Option<Compiled> {
        let src = src?;
        match expr::compile(src, &self.form, &p.chain, current) {
            Ok(c) => Some(c),
            Err(e) => {
                self.problem(&format!("{}.{what}", p.path), e.code, e.message);
                None
            }
        }
    }

    fn required_expr(&mut self, p: &Pending<'_>) -> Option<Compiled> {
        match &p.def.required {
            Some(Condition::Expr(e)) => self.expr(p, "required", Some(e), None),
            _ => None,
        }
    }

    /// Pass 2 for one item.
    fn compile(&mut self, p: &Pending<'_>, definition: &FormDefinition) {
        match p.item {
            ItemRef::Field(id) => self.compile_field(p, id, definition),
            ItemRef::Group(g) => {
                let relevant = self.expr(p, "relevant", p.def.relevant.as_deref(), None);
                if let Some(group) = self.form.groups.get_mut(g) {
                    group.relevant = relevant;
                }
            }
            ItemRef::Repeat(r) => {
                // A repeat's own expressions are seen from its parent, where it is one value.
                let relevant = self.expr(p, "relevant", p.def.relevant.as_deref(), None);
                let required = self.required_expr(p);
                let constraint = self.expr(p, "constraint", p.def.constraint.as_deref(), None);
                if let Some(repeat) = self.form.repeats.get_mut(r) {
                    repeat.relevant = relevant;
                    repeat.required = required;
                    repeat.constraint = constraint;
                }
            }
        }
    }

    fn compile_field(&mut self, p: &Pending<'_>, id: usize, definition: &FormDefinition) {
        let Some(kind) = self.form.fields.get(id).map(|f| f.kind) else {
            return;
        };
        let def = p.def;
        let relevant = self.expr(p, "relevant", def.relevant.as_deref(), None);
        let required = self.required_expr(p);
        let calculate = self.expr(p, "calculate", def.calculate.as_deref(), None);
        let ty = match (kind, &calculate) {
            (FieldKind::Calculate, Some(c)) => c.ty(),
            _ => kind.value_type(),
        };
        let constraint = self.expr(p, "constraint", def.constraint.as_deref(), Some(ty));
        let default = self.expr(p, "default", def.default.as_deref(), Some(ty));
        for (what, c) in [
            ("relevant", &relevant),
            ("required", &required),
            ("constraint", &constraint),
        ] {
            self.check_boolean(p, what, c.as_ref());
        }
        for (what, c) in [("calculate", &calculate), ("default", &default)] {
            self.check_value_type(p, kind, what, c.as_ref());
        }
        if kind == FieldKind::Calculate && def.calculate.is_none() {
            let m = "a calculate field needs a calculate expression";
            self.problem(&p.path, "form_calculate_missing", m.into());
        }
        self.check_choices(p, kind, definition);
        let id_field = self.id_field(p, kind);
        if let Some(field) = self.form.fields.get_mut(id) {
            field.ty = ty;
            field.relevant = relevant;
            field.required = required;
            field.calculate = calculate;
            field.constraint = constraint;
            field.default = default;
            field.id_field = id_field;
        }
    }

    fn check_boolean(&mut self, p: &Pending<'_>, what: &str, c: Option<&Compiled>) {
        if let Some(c) = c
            && c.ty() != Type::Bool
        {
            let m = format!(
                "{what} must be a boolean expression, found a {}",
                c.ty().name()
            );
            self.problem(&format!("{}.{what}", p.path), "expr_type", m);
        }
    }

    fn check_value_type(
        &mut self,
        p: &Pending<'_>,
        kind: FieldKind,
        what: &str,
        c: Option<&Compiled>,
    ) {
        let own = kind.value_type();
        if let Some(c) = c
            && kind != FieldKind::Calculate
            && c.ty() != own
            && c.ty() != Type::Empty
        {
            let m = format!(
                "{what} gives a {} but the field holds a {}",
                c.ty().name(),
                own.name()
            );
            self.problem(&format!("{}.{what}", p.path), "expr_type", m);
        }
    }

    /// A select field names exactly one of a form choice list or a code list; others none.
    fn check_choices(&mut self, p: &Pending<'_>, kind: FieldKind, definition: &FormDefinition) {
        let is_select = matches!(kind, FieldKind::SelectOne | FieldKind::SelectMultiple);
        match (&p.def.choices, &p.def.code_list, is_select) {
            (Some(list), None, true) if !definition.choice_lists.contains_key(list) => {
                let m = format!("choice list '{list}' is not defined");
                self.problem(&p.path, "form_unknown_choices", m);
            }
            (Some(_), None, true) | (None, Some(_), true) | (None, None, false) => {}
            (_, _, true) => {
                let m = "a select field names exactly one of choices or code_list";
                self.problem(&p.path, "form_choices", m.into());
            }
            (_, _, false) => {
                let m = "only select fields have choices";
                self.problem(&p.path, "form_choices", m.into());
            }
        }
    }

    /// A disability certificate names the resident-ID field of the same person.
    fn id_field(&mut self, p: &Pending<'_>, kind: FieldKind) -> Option<usize> {
        if kind != FieldKind::DisabilityCertificate {
            return None;
        }
        let named = p
            .def
            .id_field
            .as_deref()
            .and_then(|n| self.form.names.get(n));
        if let Some(ItemRef::Field(f)) = named
            && self
                .form
                .fields
                .get(*f)
                .is_some_and(|f| f.kind == FieldKind::ResidentId && f.chain == p.chain)
        {
            return Some(*f);
        }
        let m = "id_field must name a resident_id field in the same repeat";
        self.problem(&p.path, "form_id_field", m.into());
        None
    }
}
