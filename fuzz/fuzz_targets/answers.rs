//! Any text as the answers of the shipped household visit form, and as an answer path:
//! validation and materialisation never panic, a path either resolves or is an AnswerError.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use zoufang_model::code_list::CodeLists;
use zoufang_model::default_form::{default_code_lists, household_visit_form};
use zoufang_model::engine::{self, Evaluation};
use zoufang_model::form::Form;

fn fixtures() -> &'static (Form, CodeLists) {
    static F: OnceLock<(Form, CodeLists)> = OnceLock::new();
    F.get_or_init(|| {
        (
            household_visit_form().unwrap_or_else(|e| panic!("shipped form: {e}")),
            default_code_lists().unwrap_or_default(),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (form, lists) = fixtures();
    let _ = engine::parse_path(form, text);
    let Ok(serde_json::Value::Object(answers)) = serde_json::from_str(text) else { return };
    let eval = Evaluation::new(form, &answers, lists, chrono::Utc::now());
    let _ = eval.validate();
    let _ = eval.materialize(true);
    for (field, ctx) in eval.field_instances() {
        let _ = eval.is_relevant(field, &ctx);
        let _ = eval.value(field, &ctx);
    }
    // Every answer through the single-answer path, as an autosave would send it.
    let mut draft = serde_json::Map::new();
    for (key, value) in answers {
        let _ = engine::set_answer(form, &mut draft, &key, value);
    }
});
