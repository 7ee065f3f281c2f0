//! The expression language through a small form: every function, the load-time errors with
//! their paths, and property tests that neither parsing, compiling, evaluating nor validating
//! ever panics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::{Map, Value as Json, json};
use zoufang_model::code_list::CodeLists;
use zoufang_model::default_form::household_visit_form;
use zoufang_model::engine::{Evaluation, set_answer};
use zoufang_model::expr::{self, Value};
use zoufang_model::form::{Form, ItemRef};

fn now() -> DateTime<Utc> {
    "2026-11-28T03:00:00Z".parse().unwrap()
}

/// A form with one field of each expression type, a repeat, and a calculate field `probe`
/// whose expression each test supplies.
fn form_with(probe: &str) -> Result<Form, zoufang_model::form::FormLoadError> {
    let def = json!({
        "id": "probe", "version": 1, "title": {"zh": "测试"},
        "parameters": {"standard": 48000},
        "choice_lists": {"c": [{"value": "a", "label": {"zh": "甲"}}, {"value": "b", "label": {"zh": "乙"}}]},
        "sections": [{"type": "group", "name": "main", "items": [
            {"type": "integer", "name": "n"},
            {"type": "decimal", "name": "d"},
            {"type": "text", "name": "t"},
            {"type": "date", "name": "day"},
            {"type": "datetime", "name": "start"},
            {"type": "datetime", "name": "end"},
            {"type": "select_one", "name": "one", "choices": "c"},
            {"type": "select_multiple", "name": "many", "choices": "c"},
            {"type": "resident_id", "name": "rid"},
            {"type": "repeat", "name": "items", "items": [
                {"type": "money", "name": "amount"},
                {"type": "select_one", "name": "kind", "choices": "c"}
            ]},
            {"type": "calculate", "name": "probe", "calculate": probe}
        ]}]
    });
    Form::from_json(&def.to_string())
}

fn answers() -> Map<String, Json> {
    json!({
        "n": 7, "d": 2.5, "t": "阿呷木呷", "day": "2020-02-29",
        "start": "2026-11-28T09:00:00+08:00", "end": "2026-11-28T09:45:30+08:00",
        "one": "a", "many": ["a", "b"], "rid": "11010519491231002X",
        "items": [{"amount": 100, "kind": "a"}, {"amount": 250, "kind": "b"}, {"amount": 50, "kind": "a"}]
    })
    .as_object()
    .cloned()
    .unwrap()
}

fn eval(src: &str) -> Value {
    eval_with(src, &answers())
}

fn eval_with(src: &str, a: &Map<String, Json>) -> Value {
    let form = form_with(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    let Some(ItemRef::Field(id)) = form.lookup("probe") else {
        panic!()
    };
    let lists = CodeLists::default();
    Evaluation::new(&form, a, &lists, now()).value(id, &[])
}

fn load_error(src: &str) -> (String, String) {
    let err = form_with(src).expect_err(src);
    let p = err.problems.first().unwrap();
    (p.code.clone(), p.path.clone())
}

fn num(n: f64) -> Value {
    Value::Number(n)
}
fn text(s: &str) -> Value {
    Value::Text(s.into())
}

#[test]
fn arithmetic_comparison_and_logic() {
    assert_eq!(eval("${n} + ${d} * 2"), num(12.0));
    assert_eq!(eval("(${n} + 1) div 4"), num(2.0));
    assert_eq!(eval("${n} mod 4"), num(3.0));
    assert_eq!(eval("-${n} - -1"), num(-6.0));
    assert_eq!(
        eval("${n} div 0"),
        Value::Null,
        "division by zero is no value, not a panic"
    );
    assert_eq!(eval("${n} > 3 and ${d} <= 2.5"), Value::Bool(true));
    assert_eq!(
        eval("${n} != 7 or not(${t} = '阿呷木呷')"),
        Value::Bool(false)
    );
    assert_eq!(eval("${t} = ''"), Value::Bool(false));
    assert_eq!(eval("${day} >= '2020-01-01'"), Value::Bool(true));
    assert_eq!(eval("true() and false()"), Value::Bool(false));
}

#[test]
fn functions() {
    assert_eq!(eval("if(${n} > 5, 'big', 'small')"), text("big"));
    assert_eq!(eval("selected(${many}, 'b')"), Value::Bool(true));
    assert_eq!(eval("selected(${one}, 'b')"), Value::Bool(false));
    assert_eq!(eval("count-selected(${many})"), num(2.0));
    assert_eq!(eval("count(${items})"), num(3.0));
    assert_eq!(
        eval("${items} * 2"),
        num(6.0),
        "a bare repeat reference is its count"
    );
    assert_eq!(eval("sum(${amount})"), num(400.0));
    assert_eq!(eval("sum(if(${kind} = 'a', ${amount}, 0))"), num(150.0));
    assert_eq!(eval("count(${kind} = 'a')"), num(2.0));
    assert_eq!(eval("min(${amount})"), num(50.0));
    assert_eq!(eval("max(${amount})"), num(250.0));
    assert_eq!(eval("max(${n}, ${d}, 3)"), num(7.0));
    assert_eq!(eval("string-length(${t})"), num(4.0));
    assert_eq!(
        eval("regex(${rid}, '^[0-9]{17}[0-9X]$')"),
        Value::Bool(true)
    );
    assert_eq!(eval("today()"), Value::Date("2026-11-28".parse().unwrap()));
    assert_eq!(eval("coalesce(${d}, 1)"), num(2.5));
}

#[test]
fn more_functions() {
    assert_eq!(eval("coalesce('', ${t})"), text("阿呷木呷"));
    assert_eq!(eval("int(${d})"), num(2.0));
    assert_eq!(eval("round(2.345, 2)"), num(2.35));
    assert_eq!(eval("number('12.5') + 1"), num(13.5));
    assert_eq!(eval("concat(${t}, '-', ${n})"), text("阿呷木呷-7"));
    assert_eq!(eval("age(${day})"), num(6.0));
    assert_eq!(eval("age(id-birth-date(${rid}))"), num(76.0));
    assert_eq!(eval("id-sex(${rid})"), text("2"));
    assert_eq!(eval("id-sex('123')"), Value::Null);
    assert_eq!(eval("minutes-between(${start}, ${end})"), num(45.5));
    assert_eq!(eval("substr(${t}, 3)"), text("木呷"));
    assert_eq!(
        eval("contains(${t}, '木') and starts-with(${t}, '阿')"),
        Value::Bool(true)
    );
    assert_eq!(eval("param('standard') * 1.5"), num(72000.0));
    assert_eq!(eval("date('2024-02-30')"), Value::Null);
}

#[test]
fn unanswered_values_are_null_not_errors() {
    let empty = Map::new();
    assert_eq!(eval_with("${n} + 1", &empty), Value::Null);
    assert_eq!(eval_with("${n} > 1", &empty), Value::Bool(false));
    assert_eq!(eval_with("${n} = ''", &empty), Value::Bool(true));
    assert_eq!(eval_with("sum(${amount})", &empty), num(0.0));
    assert_eq!(eval_with("count-selected(${many})", &empty), num(0.0));
    // A stored answer of the wrong shape reads as unanswered.
    let wrong = json!({"n": "seven"}).as_object().cloned().unwrap();
    assert_eq!(eval_with("${n} + 1", &wrong), Value::Null);
}

#[test]
fn load_errors_name_the_field_and_the_problem() {
    let probe = "sections[0] (main).items[10] (probe).calculate";
    assert_eq!(
        load_error("${nope} + 1"),
        ("expr_unknown_field".into(), probe.into())
    );
    assert_eq!(load_error("${n} + "), ("expr_syntax".into(), probe.into()));
    assert_eq!(
        load_error("${n} + ${t}"),
        ("expr_type".into(), probe.into())
    );
    assert_eq!(
        load_error("if(${n}, 1, 2)"),
        ("expr_type".into(), probe.into())
    );
    assert_eq!(
        load_error("if(${n} > 1, 1, 'x')"),
        ("expr_type".into(), probe.into())
    );
    assert_eq!(
        load_error("${amount} + 1"),
        ("expr_repeat_scope".into(), probe.into())
    );
    assert_eq!(
        load_error("frobnicate(1)"),
        ("expr_unknown_function".into(), probe.into())
    );
    assert_eq!(
        load_error("string-length(1, 2)"),
        ("expr_arity".into(), probe.into())
    );
    assert_eq!(
        load_error("regex(${t}, '(')"),
        ("expr_regex".into(), probe.into())
    );
    assert_eq!(
        load_error("regex(${t}, ${t})"),
        ("expr_type".into(), probe.into())
    );
    assert_eq!(
        load_error("param('nope')"),
        ("expr_unknown_param".into(), probe.into())
    );
    assert_eq!(load_error("if(${probe} = 'x', 'a', 'b')").0, "expr_cycle");
    assert_eq!(load_error(".").0, "expr_no_current");
    assert_eq!(load_error("count-selected(${one})").0, "expr_type");
}

#[test]
fn definition_errors_are_all_reported() {
    let def = json!({
        "id": "Bad Id", "version": 0, "title": {"zh": "x"},
        "choice_lists": {"c": [{"value": "a", "label": {"zh": "甲"}}, {"value": "a", "label": {"zh": "乙"}}]},
        "sections": [{"type": "group", "name": "g", "items": [
            {"type": "text", "name": "x", "relevant": "${y} > 1"},
            {"type": "text", "name": "x"},
            {"type": "wibble", "name": "w"},
            {"type": "select_one", "name": "s"},
            {"type": "select_one", "name": "s2", "choices": "missing"},
            {"type": "integer", "name": "i", "required": "1 + 1"},
            {"type": "disability_certificate", "name": "dc"}
        ]}]
    });
    let err = Form::from_json(&def.to_string()).unwrap_err();
    let codes: Vec<&str> = err.problems.iter().map(|p| p.code.as_str()).collect();
    for code in [
        "form_id",
        "form_version",
        "form_choice",
        "form_duplicate_name",
        "form_item_type",
        "form_choices",
        "form_unknown_choices",
        "expr_type",
        "form_id_field",
        "expr_unknown_field",
    ] {
        assert!(codes.contains(&code), "{code} not in {codes:?}");
    }
    let not_json = Form::from_json("{\"id\": ").unwrap_err();
    assert_eq!(not_json.problems[0].code, "form_json");
    let unknown_key =
        Form::from_json(r#"{"id":"a","version":1,"title":{"zh":"x"},"sections":[],"colour":1}"#)
            .unwrap_err();
    assert_eq!(unknown_key.problems[0].code, "form_json");
}

#[test]
fn hostile_definitions_are_refused_without_exhausting_the_stack() {
    // Groups nested 500 deep.
    let mut item = json!({"type": "text", "name": "leaf"});
    for i in 0..500 {
        item = json!({"type": "group", "name": format!("g{i}"), "items": [item]});
    }
    let def = json!({"id": "deep", "version": 1, "title": {"zh": "x"}, "sections": [item]});
    // serde_json's own recursion limit (128) or ours (16) refuses it; either is a clean error.
    let err = Form::from_json(&def.to_string()).unwrap_err();
    assert!(matches!(
        err.problems[0].code.as_str(),
        "form_json" | "form_too_deep"
    ));
}

/// Expressions built from the grammar, over the probe form's fields.
fn arb_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("${n}".to_owned()),
        Just("${d}".to_owned()),
        Just("${t}".to_owned()),
        Just("${day}".to_owned()),
        Just("${many}".to_owned()),
        Just("${one}".to_owned()),
        Just("${items}".to_owned()),
        Just("${amount}".to_owned()),
        Just("today()".to_owned()),
        Just("''".to_owned()),
        Just(".".to_owned()),
        (-1000i64..1000).prop_map(|n| n.to_string()),
        "[a-z]{0,3}".prop_map(|s| format!("'{s}'")),
    ];
    leaf.prop_recursive(5, 40, 3, |inner| {
        let op = prop_oneof![
            Just("+"),
            Just("-"),
            Just("*"),
            Just("div"),
            Just("mod"),
            Just("="),
            Just("!="),
            Just("<"),
            Just(">="),
            Just("and"),
            Just("or")
        ];
        let func = prop_oneof![
            Just("if"),
            Just("not"),
            Just("sum"),
            Just("count"),
            Just("min"),
            Just("max"),
            Just("coalesce"),
            Just("selected"),
            Just("count-selected"),
            Just("string-length"),
            Just("round"),
            Just("int"),
            Just("concat"),
            Just("age"),
            Just("id-sex"),
            Just("substr")
        ];
        prop_oneof![
            (inner.clone(), op, inner.clone()).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
            (func, prop::collection::vec(inner.clone(), 0..4))
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
            inner.clone().prop_map(|a| format!("({a})")),
            inner.prop_map(|a| format!("-{a}")),
        ]
    })
}

fn arb_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Json::String),
        Just(json!("11010519491231002X")),
        Just(json!("2026-02-29")),
    ];
    leaf.prop_recursive(3, 30, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_parser_never_panics(src in ".{0,200}") {
        let _ = expr::parse(&src);
    }

    /// Whatever the grammar produces either fails to load with a coded error or evaluates
    /// to some value, with or without answers.
    #[test]
    fn compile_and_eval_never_panic(src in arb_expr(), empty in any::<bool>()) {
        match form_with(&src) {
            Ok(form) => {
                let Some(ItemRef::Field(id)) = form.lookup("probe") else { panic!() };
                let a = if empty { Map::new() } else { answers() };
                let lists = CodeLists::default();
                let ev = Evaluation::new(&form, &a, &lists, now());
                let _ = ev.value(id, &[]);
                let _ = ev.validate();
            }
            Err(e) => prop_assert!(e.problems.iter().all(|p| p.code.starts_with("expr_") || p.code.starts_with("form_"))),
        }
    }

    /// Integer arithmetic and comparisons agree with Rust's.
    #[test]
    fn arithmetic_agrees_with_rust(a in -100_000i64..100_000, b in -100_000i64..100_000) {
        let vals = json!({"n": a}).as_object().cloned().unwrap();
        let src = format!("${{n}} * {b} - {b}");
        prop_assert_eq!(eval_with(&src, &vals), num((a * b - b) as f64));
        prop_assert_eq!(eval_with(&format!("${{n}} < {b}"), &vals), Value::Bool(a < b));
        prop_assert_eq!(eval_with(&format!("not(${{n}} < {b}) = (${{n}} >= {b})"), &vals), Value::Bool(true));
        if b != 0 {
            prop_assert_eq!(eval_with(&format!("${{n}} mod {b}"), &vals), num((a % b) as f64));
        }
    }

    /// Arbitrary answers against the household visit form: validation and set_answer never
    /// panic, and set_answer either stores a value or refuses it with a code.
    #[test]
    fn validator_never_panics_on_arbitrary_answers(
        answers in prop::collection::btree_map(
            prop_oneof![
                Just("members".to_owned()), Just("visit_type".to_owned()), Just("outcome".to_owned()),
                Just("income_items".to_owned()), Just("village_code".to_owned()), Just("location".to_owned()),
                Just("started_at".to_owned()), Just("ended_at".to_owned()), "[a-z_]{1,10}"
            ],
            arb_json(), 0..8),
        path in prop_oneof![Just("members[0].id_number".to_owned()), Just("members[1].name".to_owned()), Just("location".to_owned()), ".{0,30}"],
        value in arb_json(),
    ) {
        let form = household_visit_form().unwrap();
        let mut a: Map<String, Json> = answers.into_iter().collect();
        let lists = CodeLists::default();
        let _ = Evaluation::new(&form, &a, &lists, now()).validate();
        let _ = Evaluation::new(&form, &a, &lists, now()).materialize(true);
        if let Err(e) = set_answer(&form, &mut a, &path, value) {
            prop_assert!(e.code().starts_with("answer_"));
        }
        let _ = Evaluation::new(&form, &a, &lists, now()).validate();
    }
}
