//! Any text as an expression: parsed alone, then as the `calculate` and `relevant` of a form
//! with a number, a text, a choice field and a repeat, and evaluated over answers. Parsing,
//! checking and evaluation must never panic (evaluation is total by design).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use zoufang_model::code_list::CodeLists;
use zoufang_model::engine::Evaluation;
use zoufang_model::expr;
use zoufang_model::form::Form;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    let _ = expr::parse(src);
    let form = json!({
        "id": "fuzz", "version": 1, "title": {"zh": "f"},
        "choice_lists": {"yn": [{"value": "yes", "label": {"zh": "是"}}, {"value": "no", "label": {"zh": "否"}}]},
        "sections": [{"type": "group", "name": "s", "label": {"zh": "s"}, "items": [
            {"type": "integer", "name": "n", "label": {"zh": "n"}},
            {"type": "text", "name": "t", "label": {"zh": "t"}},
            {"type": "select_one", "name": "c", "choices": "yn", "label": {"zh": "c"}},
            {"type": "date", "name": "d", "label": {"zh": "d"}},
            {"type": "repeat", "name": "r", "label": {"zh": "r"}, "items": [
                {"type": "integer", "name": "k", "label": {"zh": "k"}}
            ]},
            {"type": "calculate", "name": "x", "calculate": src, "label": {"zh": "x"}},
            {"type": "text", "name": "y", "relevant": src, "constraint": src, "label": {"zh": "y"}}
        ]}]
    });
    let Ok(form) = Form::from_json(&form.to_string()) else { return };
    let answers = json!({"n": 7, "t": "阿呷", "c": "yes", "d": "2026-11-28", "r": [{"k": 1}, {"k": -3}], "y": "z"});
    let answers = answers.as_object().cloned().unwrap_or_default();
    let lists = CodeLists::default();
    let eval = Evaluation::new(&form, &answers, &lists, chrono::Utc::now());
    let _ = eval.validate();
    let _ = eval.materialize(true);
});
