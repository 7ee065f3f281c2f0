//! Evaluation of checked expressions. Total by construction: every path returns a [`Value`].

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::Value;
use super::check::{Agg, Compiled, Func, Node};
use super::parse::BinOp;
use crate::domain::ResidentId;

/// Where an expression reads its inputs. `ctx` holds the instance index of each enclosing
/// repeat, outermost first, truncated to the chain of the field or repeat asked for.
pub trait Env {
    fn field(&self, id: usize, ctx: &[usize]) -> Value;
    fn repeat_len(&self, id: usize, ctx: &[usize]) -> usize;
    fn today(&self) -> NaiveDate;
    fn now(&self) -> DateTime<Utc>;
}

impl Compiled {
    /// Evaluates in the repeat instance `ctx`, with `current` as the value of `.`.
    pub fn eval(&self, env: &dyn Env, ctx: &[usize], current: &Value) -> Value {
        let mut ctx = ctx.to_vec();
        eval(&self.root, env, &mut ctx, current)
    }
}

fn number(n: f64) -> Value {
    if n.is_finite() {
        Value::Number(n)
    } else {
        Value::Null
    }
}

fn eval(node: &Node, env: &dyn Env, ctx: &mut Vec<usize>, current: &Value) -> Value {
    let ev = |n: &Node, ctx: &mut Vec<usize>| eval(n, env, ctx, current);
    match node {
        Node::Lit(v) => v.clone(),
        Node::Field { id, depth } => env.field(*id, ctx.get(..*depth).unwrap_or(ctx)),
        Node::RepeatCount { id, depth } => {
            Value::Number(env.repeat_len(*id, ctx.get(..*depth).unwrap_or(ctx)) as f64)
        }
        Node::Current => current.clone(),
        Node::IsEmpty(inner, want_empty) => Value::Bool(ev(inner, ctx).is_empty() == *want_empty),
        Node::Neg(inner) => match ev(inner, ctx) {
            Value::Number(n) => number(-n),
            _ => Value::Null,
        },
        Node::Arith(op, a, b) => match (ev(a, ctx), ev(b, ctx)) {
            (Value::Number(x), Value::Number(y)) => match op {
                BinOp::Add => number(x + y),
                BinOp::Sub => number(x - y),
                BinOp::Mul => number(x * y),
                BinOp::Div if y != 0.0 => number(x / y),
                BinOp::Mod if y != 0.0 => number(x % y),
                _ => Value::Null,
            },
            _ => Value::Null,
        },
        Node::Compare(op, a, b) => compare(*op, &ev(a, ctx), &ev(b, ctx)),
        Node::And(a, b) => Value::Bool(ev(a, ctx).is_true() && ev(b, ctx).is_true()),
        Node::Or(a, b) => Value::Bool(ev(a, ctx).is_true() || ev(b, ctx).is_true()),
        Node::Not(a) => Value::Bool(!ev(a, ctx).is_true()),
        Node::If(c, a, b) => {
            if ev(c, ctx).is_true() {
                ev(a, ctx)
            } else {
                ev(b, ctx)
            }
        }
        Node::Coalesce(items) => items
            .iter()
            .map(|n| ev(n, ctx))
            .find(|v| !v.is_empty())
            .unwrap_or(Value::Null),
        Node::Aggregate { agg, over, body } => {
            let values: Vec<Value> = match over {
                None => vec![ev(body, ctx)],
                Some(repeat) => {
                    let len = env.repeat_len(*repeat, ctx);
                    (0..len)
                        .map(|i| {
                            ctx.push(i);
                            let v = ev(body, ctx);
                            ctx.pop();
                            v
                        })
                        .collect()
                }
            };
            aggregate(*agg, values)
        }
        Node::Regex(value, re) => match ev(value, ctx) {
            Value::Text(s) => Value::Bool(re.is_match(&s)),
            _ => Value::Null,
        },
        Node::Call(func, args) => {
            let values: Vec<Value> = args.iter().map(|a| ev(a, ctx)).collect();
            call(*func, &values, env)
        }
    }
}

fn compare(op: BinOp, a: &Value, b: &Value) -> Value {
    use std::cmp::Ordering;
    let ordering: Option<Ordering> = match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.partial_cmp(y),
        (Value::Text(x), Value::Text(y)) => Some(x.cmp(y)),
        (Value::Date(x), Value::Date(y)) => Some(x.cmp(y)),
        (Value::DateTime(x), Value::DateTime(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Choices(x), Value::Choices(y)) => {
            let (mut x, mut y) = (x.clone(), y.clone());
            x.sort();
            y.sort();
            Some(if x == y {
                Ordering::Equal
            } else {
                Ordering::Less
            })
        }
        _ => None,
    };
    let result = match (op, ordering) {
        (BinOp::Eq, Some(o)) => o == Ordering::Equal,
        // An unanswered value is different from any answer, and not ordered against it.
        (BinOp::Ne, Some(o)) => o != Ordering::Equal,
        (BinOp::Ne, None) => a.is_empty() != b.is_empty(),
        (BinOp::Lt, Some(o)) => o == Ordering::Less,
        (BinOp::Le, Some(o)) => o != Ordering::Greater,
        (BinOp::Gt, Some(o)) => o == Ordering::Greater,
        (BinOp::Ge, Some(o)) => o != Ordering::Less,
        _ => false,
    };
    Value::Bool(result)
}

fn aggregate(agg: Agg, values: Vec<Value>) -> Value {
    let numbers = values.iter().filter_map(Value::as_number);
    match agg {
        Agg::Sum => number(numbers.sum()),
        Agg::Count => Value::Number(
            values
                .iter()
                .filter(|v| match v {
                    Value::Bool(b) => *b,
                    other => !other.is_empty(),
                })
                .count() as f64,
        ),
        Agg::Min => numbers.reduce(f64::min).map_or(Value::Null, number),
        Agg::Max => numbers.reduce(f64::max).map_or(Value::Null, number),
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Text(s) => Some(s.clone()),
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => Some(format!("{}", *n as i64)),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "true" } else { "false" }.to_owned()),
        Value::Date(_) | Value::DateTime(_) => match v.to_json() {
            serde_json::Value::String(s) => Some(s),
            _ => None,
        },
        Value::Null => Some(String::new()),
        Value::Choices(_) | Value::Geopoint(_) => None,
    }
}

/// Full years between `birth` and `today` (0 for a birth date in the future).
pub fn age_in_years(birth: NaiveDate, today: NaiveDate) -> i64 {
    let mut years = i64::from(today.year() - birth.year());
    if (today.month(), today.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    years.max(0)
}

fn call(func: Func, args: &[Value], env: &dyn Env) -> Value {
    let arg = |i: usize| args.get(i).unwrap_or(&Value::Null);
    match func {
        Func::Selected => match (arg(0), arg(1)) {
            (Value::Choices(list), Value::Text(v)) => Value::Bool(list.contains(v)),
            (Value::Text(one), Value::Text(v)) => Value::Bool(one == v),
            _ => Value::Bool(false),
        },
        Func::CountSelected => match arg(0) {
            Value::Choices(list) => Value::Number(list.len() as f64),
            _ => Value::Number(0.0),
        },
        Func::Int => arg(0)
            .as_number()
            .map_or(Value::Null, |n| number(n.trunc())),
        Func::Round => {
            let digits = arg(1).as_number().unwrap_or(0.0).clamp(-15.0, 15.0);
            arg(0).as_number().map_or(Value::Null, |n| {
                let scale = 10f64.powi(digits as i32);
                number((n * scale).round() / scale)
            })
        }
        Func::Min | Func::Max => {
            let nums: Option<Vec<f64>> = args.iter().map(Value::as_number).collect();
            match nums {
                Some(n) if func == Func::Min => {
                    n.into_iter().reduce(f64::min).map_or(Value::Null, number)
                }
                Some(n) => n.into_iter().reduce(f64::max).map_or(Value::Null, number),
                None => Value::Null,
            }
        }
        Func::Today | Func::Now | Func::Date | Func::Age | Func::MinutesBetween => {
            date_call(func, args, env)
        }
        Func::IdBirthDate | Func::IdSex => match arg(0) {
            Value::Text(s) => match ResidentId::parse(s, env.today()) {
                Ok(id) if func == Func::IdBirthDate => Value::Date(id.birth_date()),
                Ok(id) => Value::Text(id.sex().code().to_owned()),
                Err(_) => Value::Null,
            },
            _ => Value::Null,
        },
        Func::StringLength
        | Func::Number
        | Func::String
        | Func::Concat
        | Func::Contains
        | Func::StartsWith
        | Func::Substr => text_call(func, args),
    }
}

/// The functions of texts.
fn text_call(func: Func, args: &[Value]) -> Value {
    let arg = |i: usize| args.get(i).unwrap_or(&Value::Null);
    match func {
        Func::StringLength => match arg(0) {
            Value::Text(s) => Value::Number(s.chars().count() as f64),
            _ => Value::Number(0.0),
        },
        Func::Number => match arg(0) {
            Value::Text(s) => s.trim().parse::<f64>().map_or(Value::Null, number),
            _ => Value::Null,
        },
        Func::String => text_of(arg(0)).map_or(Value::Null, Value::Text),
        Func::Concat => Value::Text(args.iter().filter_map(text_of).collect()),
        Func::Contains | Func::StartsWith => match (arg(0), arg(1)) {
            (Value::Text(a), Value::Text(b)) => Value::Bool(if func == Func::Contains {
                a.contains(b.as_str())
            } else {
                a.starts_with(b.as_str())
            }),
            _ => Value::Bool(false),
        },
        Func::Substr => match arg(0) {
            Value::Text(s) => {
                // XPath's substring: 1-based start, optional length, counted in characters.
                let start = arg(1).as_number().unwrap_or(1.0).max(1.0) as usize - 1;
                let len = arg(2)
                    .as_number()
                    .map_or(usize::MAX, |n| n.max(0.0) as usize);
                Value::Text(s.chars().skip(start).take(len).collect())
            }
            _ => Value::Null,
        },
        _ => Value::Null,
    }
}

/// The functions of dates and times (`today()` is the Shanghai date).
fn date_call(func: Func, args: &[Value], env: &dyn Env) -> Value {
    let arg = |i: usize| args.get(i).unwrap_or(&Value::Null);
    match func {
        Func::Today => Value::Date(env.today()),
        Func::Now => Value::DateTime(env.now()),
        Func::Date => match arg(0) {
            Value::Text(s) => {
                NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_or(Value::Null, Value::Date)
            }
            _ => Value::Null,
        },
        Func::Age => match arg(0) {
            Value::Date(d) if *d <= env.today() => {
                Value::Number(age_in_years(*d, env.today()) as f64)
            }
            _ => Value::Null,
        },
        Func::MinutesBetween => match (arg(0), arg(1)) {
            (Value::DateTime(a), Value::DateTime(b)) => {
                Value::Number((*b - *a).num_seconds() as f64 / 60.0)
            }
            _ => Value::Null,
        },
        _ => Value::Null,
    }
}
