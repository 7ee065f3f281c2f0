//! Any text as a form definition: loading (parse, check every expression, cycles) either
//! succeeds or gives a FormLoadError; a loaded form evaluates and validates empty answers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zoufang_model::code_list::CodeLists;
use zoufang_model::engine::Evaluation;
use zoufang_model::form::Form;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(form) = Form::from_json(text) {
        let answers = serde_json::Map::new();
        let lists = CodeLists::default();
        let eval = Evaluation::new(&form, &answers, &lists, chrono::Utc::now());
        let _ = eval.validate();
        let _ = eval.materialize(true);
    }
});
