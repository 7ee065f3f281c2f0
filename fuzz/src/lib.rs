//! What each fuzz target does with its input, as plain functions: the targets in
//! `fuzz_targets/` call them under libFuzzer (nightly), and the workspace's stable test
//! `tests/tests/fuzz_inputs.rs` replays every seed and every regression input through them, so a
//! crash once found stays fixed without a nightly toolchain. Each function must never panic,
//! whatever the input (the protocol's frame check asserts an invariant, which is the point).

use std::sync::OnceLock;

use serde_json::json;
use zoufang_model::code_list::CodeLists;
use zoufang_model::default_form::{default_code_lists, household_visit_form};
use zoufang_model::engine::{self, Evaluation};
use zoufang_model::expr;
use zoufang_model::form::Form;
use zoufang_protocol::frames::FrameReader;
use zoufang_protocol::messages::{
    self, AttachmentStatusRequest, AttachmentStatusResponse, CatalogRequest, CatalogResponse,
    ChunkResponse, ConflictsResponse, EnrollRequest, EnrollResponse, ErrorBody, PullRequest,
    PullResponse, PushRequest, PushResponse, ResolveRequest, SnapshotRequest, SnapshotResponse,
};

/// What a target does with one input.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/run.sh` and the replay test know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("form_definition", form_definition),
    ("expression", expression),
    ("answers", answers),
    ("protocol", protocol),
];

/// Any text as a form definition: loading (parse, check every expression, cycles) either
/// succeeds or gives a FormLoadError; a loaded form evaluates and validates empty answers.
pub fn form_definition(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(form) = Form::from_json(text) {
        let answers = serde_json::Map::new();
        let lists = CodeLists::default();
        let eval = Evaluation::new(&form, &answers, &lists, chrono::Utc::now());
        let _ = eval.validate();
        let _ = eval.materialize(true);
    }
}

/// Any text as an expression: parsed alone, then as the `calculate` and `relevant` of a form
/// with a number, a text, a choice field and a repeat, and evaluated over answers. Parsing,
/// checking and evaluation must never panic (evaluation is total by design).
pub fn expression(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
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
    let Ok(form) = Form::from_json(&form.to_string()) else {
        return;
    };
    let answers = json!({"n": 7, "t": "阿呷", "c": "yes", "d": "2026-11-28", "r": [{"k": 1}, {"k": -3}], "y": "z"});
    let answers = answers.as_object().cloned().unwrap_or_default();
    let lists = CodeLists::default();
    let eval = Evaluation::new(&form, &answers, &lists, chrono::Utc::now());
    let _ = eval.validate();
    let _ = eval.materialize(true);
}

fn fixtures() -> &'static (Form, CodeLists) {
    static F: OnceLock<(Form, CodeLists)> = OnceLock::new();
    F.get_or_init(|| {
        (
            household_visit_form().unwrap_or_else(|e| panic!("shipped form: {e}")),
            default_code_lists().unwrap_or_default(),
        )
    })
}

/// Any text as the answers of the shipped household visit form, and as an answer path:
/// validation and materialisation never panic, a path either resolves or is an AnswerError.
pub fn answers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (form, lists) = fixtures();
    let _ = engine::parse_path(form, text);
    let Ok(serde_json::Value::Object(answers)) = serde_json::from_str(text) else {
        return;
    };
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
}

fn every_message(body: &[u8]) {
    let _ = messages::protocol_of(body);
    let _ = messages::decode::<EnrollRequest>(body);
    let _ = messages::decode::<EnrollResponse>(body);
    let _ = messages::decode::<CatalogRequest>(body);
    let _ = messages::decode::<CatalogResponse>(body);
    let _ = messages::decode::<PushRequest>(body);
    let _ = messages::decode::<PushResponse>(body);
    let _ = messages::decode::<PullRequest>(body);
    let _ = messages::decode::<PullResponse>(body);
    let _ = messages::decode::<SnapshotRequest>(body);
    let _ = messages::decode::<SnapshotResponse>(body);
    let _ = messages::decode::<ConflictsResponse>(body);
    let _ = messages::decode::<ResolveRequest>(body);
    let _ = messages::decode::<ErrorBody>(body);
    let _ = messages::decode::<AttachmentStatusRequest>(body);
    let _ = messages::decode::<AttachmentStatusResponse>(body);
    let _ = messages::decode::<ChunkResponse>(body);
    let _ = messages::decode::<messages::AcksRequest>(body);
    let _ = messages::decode::<messages::FeedEntry>(body);
    // As a message stream (a streamed push or pull answer), read as the server and the
    // device read one, a message at a time: whole messages, then an error or the end, never a
    // panic (a few compressed bytes can hold many messages: the first hundred are enough).
    let mut pushes = zoufang_protocol::stream::StreamReader::new(body);
    for _ in 0..100 {
        if !matches!(pushes.next_message::<PushRequest>(), Some(Ok(_))) {
            break;
        }
    }
    let mut pages = zoufang_protocol::stream::StreamReader::new(body);
    for _ in 0..100 {
        if !matches!(pages.next_message::<PullResponse>(), Some(Ok(_))) {
            break;
        }
    }
}

/// A chunk body arriving in pieces of varied size: the verified content never exceeds the body.
fn frames(body: &[u8]) {
    let mut reader = FrameReader::new();
    for piece in body.chunks(1 + body.first().copied().unwrap_or(0) as usize) {
        if reader.push(piece).is_err() {
            break;
        }
    }
    let (content, _) = reader.finish();
    assert!(content.len() <= body.len());
}

/// Any bytes as every protocol message, raw and zstd-framed, and as an attachment chunk's
/// frames: decoding gives a message or a DecodeError (a frame error), never a panic or an
/// unbounded allocation.
pub fn protocol(data: &[u8]) {
    every_message(data);
    frames(data);
    // The same bytes as the JSON inside a zstd frame, as devices and the server send them.
    if let Ok(framed) = messages::encode(&serde_json::from_slice::<serde_json::Value>(data).ok()) {
        every_message(&framed);
    }
}
