//! Name resolution and type checking: turns a syntax tree into an evaluable tree, or explains
//! precisely why it cannot.

use chrono::NaiveDate;

use super::parse::{Ast, BinOp, parse};
use super::{ExprError, Type, Value};

/// What an expression can see of its form: fields, repeats and configured parameters.
pub trait Scope {
    /// A field by name: its id, the type expressions see, and the chain of repeats that
    /// contain it, outermost first.
    fn field(&self, name: &str) -> Option<(usize, Type, &[usize])>;
    /// A repeat by name: its id and the chain of repeats that contain it (not itself).
    fn repeat(&self, name: &str) -> Option<(usize, &[usize])>;
    /// A configured numeric parameter (低保 standard, thresholds...).
    fn param(&self, name: &str) -> Option<f64>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Agg {
    Sum,
    Count,
    Min,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Func {
    Selected,
    CountSelected,
    StringLength,
    Today,
    Now,
    Int,
    Round,
    Number,
    String,
    Concat,
    Date,
    Age,
    IdBirthDate,
    IdSex,
    Contains,
    StartsWith,
    Substr,
    Min,
    Max,
    MinutesBetween,
}

#[derive(Debug, Clone)]
pub(super) enum Node {
    Lit(Value),
    /// A field value; `depth` is how many context indices address it.
    Field {
        id: usize,
        depth: usize,
    },
    RepeatCount {
        id: usize,
        depth: usize,
    },
    Current,
    IsEmpty(Box<Node>, bool),
    Neg(Box<Node>),
    Arith(BinOp, Box<Node>, Box<Node>),
    Compare(BinOp, Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    If(Box<Node>, Box<Node>, Box<Node>),
    Coalesce(Vec<Node>),
    /// Evaluates `body` once per instance of repeat `over` (or once, if `over` is None).
    Aggregate {
        agg: Agg,
        over: Option<usize>,
        body: Box<Node>,
    },
    Call(Func, Vec<Node>),
    Regex(Box<Node>, Box<regex::Regex>),
}

/// A checked expression, ready to evaluate any number of times.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub(super) root: Node,
    ty: Type,
    fields: Vec<usize>,
    repeats: Vec<usize>,
}

impl Compiled {
    pub fn ty(&self) -> Type {
        self.ty
    }
    /// Every field the expression reads (for dependency ordering and cycle detection).
    pub fn field_deps(&self) -> &[usize] {
        &self.fields
    }
    /// Every repeat whose instance count the expression reads.
    pub fn repeat_deps(&self) -> &[usize] {
        &self.repeats
    }
}

/// Parses and checks `src` as seen from a field inside the repeats `context` (outermost
/// first); `current` is the type of `.`, if the expression belongs to a field.
pub fn compile(
    src: &str,
    scope: &dyn Scope,
    context: &[usize],
    current: Option<Type>,
) -> Result<Compiled, ExprError> {
    let ast = parse(src)?;
    let mut checker = Checker {
        scope,
        current,
        fields: Vec::new(),
        repeats: Vec::new(),
    };
    let (root, ty) = checker.check(&ast, context)?;
    let mut fields = checker.fields;
    fields.sort_unstable();
    fields.dedup();
    let mut repeats = checker.repeats;
    repeats.sort_unstable();
    repeats.dedup();
    Ok(Compiled {
        root,
        ty,
        fields,
        repeats,
    })
}

struct Checker<'a> {
    scope: &'a dyn Scope,
    current: Option<Type>,
    fields: Vec<usize>,
    repeats: Vec<usize>,
}

fn type_error(message: String) -> ExprError {
    ExprError::new("expr_type", message)
}

fn unify(a: Type, b: Type) -> Option<Type> {
    match (a, b) {
        (x, y) if x == y => Some(x),
        (Type::Empty, y) => Some(y),
        (x, Type::Empty) => Some(x),
        _ => None,
    }
}

impl Checker<'_> {
    fn check(&mut self, ast: &Ast, ctx: &[usize]) -> Result<(Node, Type), ExprError> {
        match ast {
            Ast::Number(n) => Ok((Node::Lit(Value::Number(*n)), Type::Number)),
            Ast::Text(s) if s.is_empty() => Ok((Node::Lit(Value::Null), Type::Empty)),
            Ast::Text(s) => Ok((Node::Lit(Value::Text(s.clone())), Type::Text)),
            Ast::Current => match self.current {
                Some(t) => Ok((Node::Current, t)),
                None => Err(ExprError::new(
                    "expr_no_current",
                    "'.' is only allowed in an expression that belongs to a field",
                )),
            },
            Ast::Ref(name) => self.reference(name, ctx),
            Ast::Neg(inner) => {
                let (n, t) = self.check(inner, ctx)?;
                self.expect(t, Type::Number, "operand of unary '-'")?;
                Ok((Node::Neg(Box::new(n)), Type::Number))
            }
            Ast::Binary(op, a, b) => self.binary(*op, a, b, ctx),
            Ast::Call(name, args) => self.call(name, args, ctx),
        }
    }

    fn expect(&self, got: Type, want: Type, what: &str) -> Result<(), ExprError> {
        if got == want || got == Type::Empty {
            Ok(())
        } else {
            Err(type_error(format!(
                "{what} must be a {}, found a {}",
                want.name(),
                got.name()
            )))
        }
    }

    fn reference(&mut self, name: &str, ctx: &[usize]) -> Result<(Node, Type), ExprError> {
        if let Some((id, ty, chain)) = self.scope.field(name) {
            if !ctx.starts_with(chain) {
                let repeat = chain
                    .get(common_prefix(chain, ctx))
                    .copied()
                    .unwrap_or_default();
                return Err(ExprError::new(
                    "expr_repeat_scope",
                    format!(
                        "${{{name}}} is inside repeat #{repeat} and has one value per instance here; use it inside sum(), count(), min() or max()"
                    ),
                ));
            }
            self.fields.push(id);
            return Ok((
                Node::Field {
                    id,
                    depth: chain.len(),
                },
                ty,
            ));
        }
        if let Some((id, parents)) = self.scope.repeat(name) {
            if !ctx.starts_with(parents) {
                return Err(ExprError::new(
                    "expr_repeat_scope",
                    format!(
                        "${{{name}}} is a repeat nested in another repeat; count it inside sum() over the outer repeat"
                    ),
                ));
            }
            self.repeats.push(id);
            return Ok((
                Node::RepeatCount {
                    id,
                    depth: parents.len(),
                },
                Type::Number,
            ));
        }
        Err(ExprError::new(
            "expr_unknown_field",
            format!("${{{name}}} names no field or repeat of this form"),
        ))
    }

    fn binary(
        &mut self,
        op: BinOp,
        a: &Ast,
        b: &Ast,
        ctx: &[usize],
    ) -> Result<(Node, Type), ExprError> {
        let (mut na, ta) = self.check(a, ctx)?;
        let (mut nb, tb) = self.check(b, ctx)?;
        match op {
            BinOp::And | BinOp::Or => {
                self.expect(ta, Type::Bool, "operand of 'and'/'or'")?;
                self.expect(tb, Type::Bool, "operand of 'and'/'or'")?;
                let (ba, bb) = (Box::new(na), Box::new(nb));
                let node = if op == BinOp::And {
                    Node::And(ba, bb)
                } else {
                    Node::Or(ba, bb)
                };
                Ok((node, Type::Bool))
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod => {
                self.expect(ta, Type::Number, "operand of arithmetic")?;
                self.expect(tb, Type::Number, "operand of arithmetic")?;
                Ok((Node::Arith(op, Box::new(na), Box::new(nb)), Type::Number))
            }
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let equality = matches!(op, BinOp::Eq | BinOp::Ne);
                if equality && (ta == Type::Empty || tb == Type::Empty) {
                    let other = if ta == Type::Empty { nb } else { na };
                    return Ok((Node::IsEmpty(Box::new(other), op == BinOp::Eq), Type::Bool));
                }
                // A date compared with a date literal: `${d} >= '2024-01-01'`.
                let (ta, tb) = (date_literal(&mut na, ta, tb), date_literal(&mut nb, tb, ta));
                let comparable = match ta {
                    Type::Number | Type::Text | Type::Date | Type::DateTime => ta == tb,
                    Type::Bool | Type::Choices => equality && ta == tb,
                    _ => false,
                };
                if !comparable {
                    return Err(type_error(format!(
                        "cannot compare a {} with a {}",
                        ta.name(),
                        tb.name()
                    )));
                }
                Ok((Node::Compare(op, Box::new(na), Box::new(nb)), Type::Bool))
            }
        }
    }

    fn args(&mut self, args: &[Ast], ctx: &[usize]) -> Result<Vec<(Node, Type)>, ExprError> {
        args.iter().map(|a| self.check(a, ctx)).collect()
    }

    fn call(&mut self, name: &str, args: &[Ast], ctx: &[usize]) -> Result<(Node, Type), ExprError> {
        let agg = match name {
            "sum" => Some(Agg::Sum),
            "count" => Some(Agg::Count),
            "min" | "max" if args.len() == 1 => {
                Some(if name == "min" { Agg::Min } else { Agg::Max })
            }
            _ => None,
        };
        if let Some(agg) = agg {
            arity(name, args, 1, 1)?;
            return self.aggregate(agg, args.first().unwrap_or(&Ast::Number(0.0)), ctx);
        }
        if let Some(special) = self.special_form(name, args, ctx)? {
            return Ok(special);
        }
        let Some((func, ret, params)) = signature(name) else {
            return Err(ExprError::new(
                "expr_unknown_function",
                format!("{name}() is not a known function"),
            ));
        };
        self.function(name, func, ret, params, args, ctx)
    }

    /// The forms that are not plain functions of typed arguments: literals, `not`, `if`,
    /// `coalesce` (types unified), `regex` (a literal pattern), `param` (a literal name).
    fn special_form(
        &mut self,
        name: &str,
        args: &[Ast],
        ctx: &[usize],
    ) -> Result<Option<(Node, Type)>, ExprError> {
        let none = || (Node::Lit(Value::Null), Type::Empty);
        Ok(Some(match name {
            "true" | "false" => {
                arity(name, args, 0, 0)?;
                (Node::Lit(Value::Bool(name == "true")), Type::Bool)
            }
            "not" => {
                arity(name, args, 1, 1)?;
                let (n, t) = self.args(args, ctx)?.pop().unwrap_or_else(none);
                self.expect(t, Type::Bool, "argument of not()")?;
                (Node::Not(Box::new(n)), Type::Bool)
            }
            "if" => {
                arity(name, args, 3, 3)?;
                let mut a = self.args(args, ctx)?.into_iter();
                let (c, tc) = a.next().unwrap_or_else(none);
                let (x, tx) = a.next().unwrap_or_else(none);
                let (y, ty) = a.next().unwrap_or_else(none);
                self.expect(tc, Type::Bool, "condition of if()")?;
                let t = unify(tx, ty).ok_or_else(|| {
                    type_error(format!(
                        "the branches of if() differ: {} and {}",
                        tx.name(),
                        ty.name()
                    ))
                })?;
                (Node::If(Box::new(c), Box::new(x), Box::new(y)), t)
            }
            "coalesce" => {
                arity(name, args, 1, 16)?;
                let a = self.args(args, ctx)?;
                let mut t = Type::Empty;
                for (_, ta) in &a {
                    t = unify(t, *ta).ok_or_else(|| {
                        type_error("the arguments of coalesce() differ in type".into())
                    })?;
                }
                (Node::Coalesce(a.into_iter().map(|(n, _)| n).collect()), t)
            }
            "regex" => self.regex(args, ctx)?,
            "param" => self.param(args)?,
            _ => return Ok(None),
        }))
    }

    fn regex(&mut self, args: &[Ast], ctx: &[usize]) -> Result<(Node, Type), ExprError> {
        arity("regex", args, 2, 2)?;
        let (value, tv) = self.check(args.first().unwrap_or(&Ast::Current), ctx)?;
        self.expect(tv, Type::Text, "first argument of regex()")?;
        let Some(Ast::Text(pattern)) = args.get(1) else {
            return Err(type_error(
                "the pattern of regex() must be a string literal".into(),
            ));
        };
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .nest_limit(32)
            .build()
            .map_err(|_| {
                ExprError::new(
                    "expr_regex",
                    "the pattern of regex() is not a valid regular expression",
                )
            })?;
        Ok((Node::Regex(Box::new(value), Box::new(re)), Type::Bool))
    }

    fn param(&mut self, args: &[Ast]) -> Result<(Node, Type), ExprError> {
        arity("param", args, 1, 1)?;
        let Some(Ast::Text(p)) = args.first() else {
            return Err(type_error(
                "param() takes the parameter name as a string literal".into(),
            ));
        };
        let v = self.scope.param(p).ok_or_else(|| {
            ExprError::new(
                "expr_unknown_param",
                format!("param('{p}') is not a parameter of this form"),
            )
        })?;
        Ok((Node::Lit(Value::Number(v)), Type::Number))
    }

    /// A plain function: its arguments checked against its signature.
    fn function(
        &mut self,
        name: &str,
        func: Func,
        ret: Type,
        params: &[Type],
        args: &[Ast],
        ctx: &[usize],
    ) -> Result<(Node, Type), ExprError> {
        let checked = self.args(args, ctx)?;
        match func {
            Func::String => arity(name, args, 1, 1)?,
            Func::Concat => arity(name, args, 1, 32)?,
            Func::Min | Func::Max => {
                arity(name, args, 2, 16)?;
                for (_, t) in &checked {
                    self.expect(*t, Type::Number, &format!("argument of {name}()"))?;
                }
            }
            Func::Round => arity(name, args, 1, 2)?,
            Func::Substr => arity(name, args, 2, 3)?,
            _ => arity(name, args, params.len(), params.len())?,
        }
        for (i, ((_, got), want)) in checked.iter().zip(params).enumerate() {
            let ok = match (func, i) {
                // selected() works on select_one (text) and select_multiple (choices).
                (Func::Selected, 0) => matches!(got, Type::Choices | Type::Text | Type::Empty),
                _ => *got == *want || *got == Type::Empty,
            };
            if !ok {
                return Err(type_error(format!(
                    "argument {} of {name}() must be a {}, found a {}",
                    i + 1,
                    want.name(),
                    got.name()
                )));
            }
        }
        if matches!(func, Func::String | Func::Concat)
            && let Some((_, t)) = checked
                .iter()
                .find(|(_, t)| matches!(t, Type::Choices | Type::Geopoint))
        {
            return Err(type_error(format!(
                "{name}() cannot turn a {} into text",
                t.name()
            )));
        }
        Ok((
            Node::Call(func, checked.into_iter().map(|(n, _)| n).collect()),
            ret,
        ))
    }

    fn aggregate(&mut self, agg: Agg, arg: &Ast, ctx: &[usize]) -> Result<(Node, Type), ExprError> {
        // count(${repeat}) is the number of instances.
        if let (Agg::Count, Ast::Ref(name)) = (agg, arg)
            && self.scope.field(name).is_none()
            && self.scope.repeat(name).is_some()
        {
            return self.reference(name, ctx);
        }
        let mut over = None;
        let mut refs = Vec::new();
        collect_refs(arg, &mut refs);
        for name in refs {
            let chain: Vec<usize> = match (self.scope.field(name), self.scope.repeat(name)) {
                (Some((_, _, chain)), _) => chain.to_vec(),
                (None, Some((_, parents))) => parents.to_vec(),
                (None, None) => continue, // reported by check() below
            };
            if ctx.starts_with(&chain) {
                continue;
            }
            if !chain.starts_with(ctx) {
                return Err(ExprError::new(
                    "expr_repeat_scope",
                    format!(
                        "${{{name}}} belongs to another repeat instance and cannot be reached from here"
                    ),
                ));
            }
            let next = chain.get(ctx.len()).copied();
            match (over, next) {
                (None, n) => over = n,
                (Some(a), Some(b)) if a != b => {
                    return Err(ExprError::new(
                        "expr_repeat_scope",
                        "one aggregate reads fields of two different repeats; aggregate each separately",
                    ));
                }
                _ => {}
            }
        }
        let inner_ctx: Vec<usize> = ctx.iter().copied().chain(over).collect();
        let (body, t) = self.check(arg, &inner_ctx)?;
        if let Some(r) = over {
            self.repeats.push(r);
        }
        if agg != Agg::Count {
            self.expect(t, Type::Number, "argument of sum()/min()/max()")?;
        }
        Ok((
            Node::Aggregate {
                agg,
                over,
                body: Box::new(body),
            },
            Type::Number,
        ))
    }
}

fn common_prefix(a: &[usize], b: &[usize]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn collect_refs<'a>(ast: &'a Ast, out: &mut Vec<&'a str>) {
    match ast {
        Ast::Ref(name) => out.push(name),
        Ast::Neg(a) => collect_refs(a, out),
        Ast::Binary(_, a, b) => {
            collect_refs(a, out);
            collect_refs(b, out);
        }
        // A nested aggregate decides its own iteration.
        Ast::Call(name, _) if matches!(name.as_str(), "sum" | "count" | "min" | "max") => {}
        Ast::Call(_, args) => args.iter().for_each(|a| collect_refs(a, out)),
        Ast::Number(_) | Ast::Text(_) | Ast::Current => {}
    }
}

/// When a date is compared with a text literal that spells a date, the literal becomes a date.
fn date_literal(node: &mut Node, own: Type, other: Type) -> Type {
    if own == Type::Text
        && other == Type::Date
        && let Node::Lit(Value::Text(s)) = node
        && let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
    {
        *node = Node::Lit(Value::Date(d));
        return Type::Date;
    }
    own
}

fn arity(name: &str, args: &[Ast], min: usize, max: usize) -> Result<(), ExprError> {
    if args.len() < min || args.len() > max {
        Err(ExprError::new(
            "expr_arity",
            format!("{name}() takes {min}..={max} arguments, got {}", args.len()),
        ))
    } else {
        Ok(())
    }
}

/// A plain function's result type and parameter types (variadic ones list none).
fn signature(name: &str) -> Option<(Func, Type, &'static [Type])> {
    Some(match name {
        "selected" => (Func::Selected, Type::Bool, &[Type::Choices, Type::Text]),
        "count-selected" => (Func::CountSelected, Type::Number, &[Type::Choices]),
        "string-length" => (Func::StringLength, Type::Number, &[Type::Text]),
        "today" => (Func::Today, Type::Date, &[]),
        "now" => (Func::Now, Type::DateTime, &[]),
        "int" => (Func::Int, Type::Number, &[Type::Number]),
        "round" => (Func::Round, Type::Number, &[Type::Number, Type::Number]),
        "number" => (Func::Number, Type::Number, &[Type::Text]),
        "string" => (Func::String, Type::Text, &[]),
        "concat" => (Func::Concat, Type::Text, &[]),
        "date" => (Func::Date, Type::Date, &[Type::Text]),
        "age" => (Func::Age, Type::Number, &[Type::Date]),
        "id-birth-date" => (Func::IdBirthDate, Type::Date, &[Type::Text]),
        "id-sex" => (Func::IdSex, Type::Text, &[Type::Text]),
        "contains" => (Func::Contains, Type::Bool, &[Type::Text, Type::Text]),
        "starts-with" => (Func::StartsWith, Type::Bool, &[Type::Text, Type::Text]),
        "minutes-between" => (
            Func::MinutesBetween,
            Type::Number,
            &[Type::DateTime, Type::DateTime],
        ),
        "substr" => (
            Func::Substr,
            Type::Text,
            &[Type::Text, Type::Number, Type::Number],
        ),
        "min" => (Func::Min, Type::Number, &[]),
        "max" => (Func::Max, Type::Number, &[]),
        _ => return None,
    })
}
