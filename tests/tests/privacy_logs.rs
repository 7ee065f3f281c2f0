//! Nothing personal reaches the logs: the two-coordinator sync story, with every crate logging at
//! TRACE into one buffer, plus deliberate mistakes that produce errors. Every name, ID number,
//! phone number and coordinate of the test data is then searched for in the log, in every error
//! message and Debug form seen, and in any panic message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Map, Value as Json, json};
use zoufang_core::Collector;
use zoufang_core::protocol::messages::Role;
use zoufang_core::records::NewHousehold;
use zoufang_tests::{Device, TestServer};

const VILLAGE: &str = "513431104201";
const OTHER_VILLAGE: &str = "513431104202";
const NAMES: [&str; 3] = ["吉克阿呷", "阿苏拉则", "马海木呷"];
const ID_NUMBERS: [&str; 2] = ["11010519491231002X", "513431198807150014"];
const PHONES: [&str; 3] = ["13812345678", "13900000001", "13900000002"];
const COORDINATES: [&str; 2] = ["28.01234", "102.84567"];

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn obj(v: Json) -> Map<String, Json> {
    v.as_object().cloned().unwrap()
}

fn household(c: &Collector, village: &str) -> zoufang_core::Result<String> {
    c.add_household(NewHousehold {
        village_code: village.into(),
        fields: obj(json!({"phone": PHONES[0], "urban_rural": "rural", "address": "三组", "next_visit_due": "2026-12-01"})),
        members: vec![
            obj(json!({"name": NAMES[0], "id_type": "resident_id", "id_number": ID_NUMBERS[0],
                       "relationship": "02", "lives_together": "yes", "health": "healthy"})),
            obj(json!({"name": NAMES[1], "id_type": "resident_id", "id_number": ID_NUMBERS[1],
                       "relationship": "10", "lives_together": "yes", "health": "healthy"})),
        ],
    })
}

#[test]
fn the_sync_story_at_trace_level_logs_no_personal_data() {
    let log = Captured::default();
    let writer = log.clone();
    // Everything at TRACE, with the caps every server process applies (`LOG_CAPS`).
    let filter = format!("trace,{}", zoufang_server::LOG_CAPS);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let panics = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen_panics = panics.clone();
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen_panics.lock().push(info.to_string());
        report(info);
    }));
    let mut errors: Vec<String> = Vec::new();
    fn note(errors: &mut Vec<String>, e: &zoufang_core::Error) {
        errors.push(e.to_string());
        errors.push(format!("{e:?}"));
    }

    let server = TestServer::start();
    let t = server.transport();
    let a = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let b = Device::enrolled(&server, "coord-b", Role::Coordinator, &[VILLAGE]);
    let (a, b) = (&a.collector, &b.collector);

    let h = household(a, VILLAGE).unwrap();
    a.sync(&t, None, None).unwrap();
    b.sync(&t, None, None).unwrap();
    a.edit_household_field(&h, "phone", json!(PHONES[1]))
        .unwrap();
    b.edit_household_field(&h, "phone", json!(PHONES[2]))
        .unwrap();
    let v = a.start_visit(Some(&h), "routine").unwrap();
    a.set_answers(
        &v.id,
        &obj(json!({
            "trigger_source": "schedule", "outcome": "completed", "interviewee_name": NAMES[0],
            "location": {"lat": COORDINATES[0].parse::<f64>().unwrap(), "lon": COORDINATES[1].parse::<f64>().unwrap(),
                         "accuracy_m": 12.0, "provider": "gps", "mock": false},
            "basic_living_difficulty": "no", "risk_level": "low", "recommendation": "monitor",
            "emergency": "no", "next_visit_due": "2027-03-01", "investigator_1_name": NAMES[2],
            "consent_privacy": "yes"
        })),
    )
    .unwrap();
    a.complete_visit(&v.id).unwrap();
    a.sync(&t, None, None).unwrap();
    b.sync(&t, None, None).unwrap();
    a.sync(&t, None, None).unwrap();
    let conflict = a.conflicts().unwrap().pop().expect("the phone conflicts");
    a.resolve_conflict(&conflict.id, json!(PHONES[1])).unwrap();
    a.sync(&t, None, None).unwrap();
    b.sync(&t, None, None).unwrap();

    // A survey with a photo and a signature: uploaded by A, downloaded by B. Content hashes
    // name photos of ID cards and homes; they stay out of the log too.
    let (survey, _) = zoufang_tests::survey_with_photo(
        a,
        VILLAGE,
        &zoufang_tests::noisy_jpeg(320, 240, 4),
        &zoufang_core::media::PhotoLimits::default(),
    );
    a.sync(&t, None, None).unwrap();
    b.sync(&t, None, None).unwrap();
    let hashes: Vec<String> = a
        .attachments_of_visit(&survey)
        .unwrap()
        .iter()
        .map(|x| x.content_hash.clone())
        .collect();
    assert!(hashes.len() >= 2, "{hashes:?}");

    // Mistakes whose errors must not echo what was typed.
    let bad_id = "51343119880715001X";
    let e = a
        .edit_member_field(
            &b.household(&h).unwrap().members[0].id,
            "id_number",
            json!(bad_id),
        )
        .unwrap_err();
    note(&mut errors, &e);
    let e = a
        .edit_household_field(&h, "phone", json!("1381234567"))
        .unwrap_err();
    note(&mut errors, &e);
    // Outside the coordinator's area: the server refuses it at the next sync.
    household(a, OTHER_VILLAGE).unwrap();
    let report = a.sync(&t, None, None).unwrap();
    assert_eq!(
        report.rejected, 3,
        "household and both members refused: {report:?}"
    );
    // A rejected change keeps its data for the coordinator to see; its reason must not.
    for r in a.rejected_changes().unwrap() {
        errors.push(format!("{}: {}", r.code, r.message));
    }
    let draft = a.start_visit(Some(&h), "application_survey").unwrap();
    a.set_answer(&draft.id, "members[0].id_number", json!(bad_id))
        .unwrap();
    for p in a.validate_visit(&draft.id).unwrap() {
        errors.push(format!("{p:?}"));
    }
    let e = a.complete_visit(&draft.id).unwrap_err();
    note(&mut errors, &e);

    let log = String::from_utf8(log.0.lock().clone()).unwrap();
    assert!(
        log.contains("push") && log.contains("pull") && log.lines().count() > 50,
        "the log was captured at TRACE level ({} lines)",
        log.lines().count()
    );
    assert!(
        errors.len() >= 8,
        "the mistakes produced errors: {errors:?}"
    );
    let panics = panics.lock().clone();
    let typed = [bad_id, "1381234567"];
    let personal = NAMES
        .iter()
        .chain(&ID_NUMBERS)
        .chain(&PHONES)
        .chain(&COORDINATES)
        .chain(&typed)
        .copied()
        .chain(hashes.iter().map(String::as_str));
    for value in personal {
        assert!(
            !log.contains(value),
            "a personal value reached the log: {}",
            redact_around(&log, value)
        );
        for text in errors.iter().chain(&panics) {
            assert!(
                !text.contains(value),
                "a personal value reached an error message: {text}"
            );
        }
    }
}

/// The log line holding a leak, for the failure message.
fn redact_around(log: &str, value: &str) -> String {
    log.lines()
        .find(|l| l.contains(value))
        .unwrap_or_default()
        .to_owned()
}
