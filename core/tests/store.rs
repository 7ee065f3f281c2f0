//! The offline store through the Collector: migrations (and an upgrade from the previous
//! schema), records, the visit lifecycle, the outbox, queries, form versions, and refusals of
//! bad input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde_json::{Map, Value as Json, json};
use zoufang_core::records::{NewHousehold, VisitStatus};
use zoufang_core::{Collector, Error, StoreOptions};

fn open(dir: &tempfile::TempDir) -> Collector {
    let c = Collector::open(&dir.path().join("store.db"), &StoreOptions::default()).unwrap();
    c.sign_in("coordinator-1").unwrap();
    c
}

fn obj(v: Json) -> Map<String, Json> {
    v.as_object().cloned().unwrap()
}

fn household(c: &Collector) -> String {
    c.add_household(NewHousehold {
        village_code: "513431104201".into(),
        fields: obj(json!({"phone": "13812345678", "urban_rural": "rural", "next_visit_due": "2026-12-01"})),
        members: vec![
            obj(json!({"name": "吉克阿呷", "id_type": "resident_id", "id_number": "11010519491231002X", "relationship": "02"})),
            obj(json!({"name": "吉克曲布", "id_type": "resident_id", "id_number": "440524188001010014", "relationship": "10"})),
        ],
    })
    .unwrap()
}

/// Record changes waiting for the server: every accepted edit of a record leaves one.
fn changes(c: &Collector) -> u64 {
    c.sync_status().unwrap().pending_changes
}

#[test]
fn a_new_store_is_migrated_wal_and_fully_synchronous() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    drop(open(&dir));
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, zoufang_core::store::schema::SCHEMA_VERSION);
    drop(conn);
    // Reopening keeps the signed-in user and installs nothing twice.
    let c = Collector::open(&path, &StoreOptions::default()).unwrap();
    assert_eq!(c.current_user().as_deref(), Some("coordinator-1"));
    assert_eq!(
        c.installed_forms().unwrap(),
        vec![("household_visit".to_owned(), 1)]
    );
    assert!(c.code_lists().get("ethnicity").is_some());
    assert_eq!(c.integrity_check().unwrap(), "ok");
}

#[test]
fn bad_files_and_keys_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
    let err = Collector::open(&junk, &StoreOptions::default()).unwrap_err();
    assert_eq!(err.code(), "wrong_key_or_not_a_store");
    let keyed = StoreOptions {
        encryption_key: Some("k".into()),
        ..StoreOptions::default()
    };
    let path = dir.path().join("k.db");
    #[cfg(not(feature = "sqlcipher"))]
    {
        // Without an encryption build a key is refused, never silently ignored.
        assert_eq!(
            Collector::open(&path, &keyed).unwrap_err().code(),
            "encryption_unavailable"
        );
        assert!(!path.exists());
    }
    #[cfg(feature = "sqlcipher")]
    {
        let c = Collector::open(&path, &keyed).unwrap();
        c.sign_in("coordinator-1").unwrap();
        drop(c);
        let wrong = StoreOptions {
            encryption_key: Some("not-k".into()),
            ..StoreOptions::default()
        };
        assert_eq!(
            Collector::open(&path, &wrong).unwrap_err().code(),
            "wrong_key_or_not_a_store"
        );
        assert_eq!(
            Collector::open(&path, &StoreOptions::default())
                .unwrap_err()
                .code(),
            "wrong_key_or_not_a_store"
        );
        assert_eq!(
            Collector::open(&path, &keyed)
                .unwrap()
                .current_user()
                .as_deref(),
            Some("coordinator-1")
        );
    }
}

#[test]
fn actions_need_a_signed_in_user() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::open(&dir.path().join("s.db"), &StoreOptions::default()).unwrap();
    assert_eq!(
        c.start_visit(None, "routine").unwrap_err().code(),
        "not_signed_in"
    );
    assert_eq!(c.sign_in("  ").unwrap_err().code(), "invalid_input");
}

#[test]
fn households_queries_and_field_edits_queue_their_changes() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(&dir);
    let before = changes(&c);
    let id = household(&c);
    // household create + two member creates
    assert_eq!(changes(&c), before + 3);
    let h = c.household(&id).unwrap();
    assert_eq!(h.head_name.as_deref(), Some("吉克阿呷"));
    assert_eq!(h.members.len(), 2);

    assert_eq!(
        c.households_in_village("513431104201", 10, 0)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        c.households_in_village("513431104202", 10, 0)
            .unwrap()
            .len(),
        0
    );
    assert_eq!(c.search_households("吉克", 10).unwrap()[0].id, id);
    assert_eq!(c.search_households("吉克曲", 10).unwrap()[0].id, id);
    assert!(c.search_households("阿", 10).unwrap().is_empty());
    assert_eq!(c.search_households("4405", 10).unwrap()[0].id, id);
    assert_eq!(
        c.search_households("11010519491231002x", 10).unwrap()[0].id,
        id
    );
    assert_eq!(c.households_due("2026-12-01", None, 10).unwrap().len(), 1);
    assert_eq!(c.households_due("2026-11-30", None, 10).unwrap().len(), 0);

    c.edit_household_field(&id, "phone", json!("0834-1234567"))
        .unwrap();
    c.edit_household_field(&id, "next_visit_due", json!("2026-11-29"))
        .unwrap();
    assert_eq!(
        c.household(&id).unwrap().fields["phone"],
        json!("0834-1234567")
    );
    assert_eq!(c.households_due("2026-11-30", None, 10).unwrap().len(), 1);
    assert_eq!(changes(&c), before + 5);

    let bad = c
        .edit_household_field(&id, "phone", json!("12345"))
        .unwrap_err();
    assert!(
        matches!(
            bad,
            Error::InvalidValue {
                code: "phone_invalid",
                ..
            }
        ),
        "{bad:?}"
    );
    assert!(!bad.to_string().contains("12345"), "no values in messages");
    assert_eq!(
        c.edit_household_field(&id, "colour", json!("red"))
            .unwrap_err()
            .code(),
        "invalid_input"
    );
    assert_eq!(
        c.edit_household_field(&id, "next_visit_due", json!(20261201))
            .unwrap_err()
            .code(),
        "invalid_value"
    );
    assert_eq!(
        c.edit_household_field("nope", "phone", json!("13812345678"))
            .unwrap_err()
            .code(),
        "not_found"
    );
    assert_eq!(changes(&c), before + 5, "refused edits leave no trace");

    // The head changes when relationships change.
    let qubu = h
        .members
        .iter()
        .find(|m| m.fields["relationship"] == json!("10"))
        .unwrap()
        .id
        .clone();
    let axia = h
        .members
        .iter()
        .find(|m| m.fields["relationship"] == json!("02"))
        .unwrap()
        .id
        .clone();
    c.edit_member_field(&axia, "relationship", json!("10"))
        .unwrap();
    c.edit_member_field(&qubu, "relationship", json!("02"))
        .unwrap();
    assert_eq!(
        c.household(&id).unwrap().head_name.as_deref(),
        Some("吉克曲布")
    );
    let err = c
        .edit_member_field(&qubu, "id_number", json!("440524188001010015"))
        .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidValue {
            code: "resident_id_check",
            ..
        }
    ));
    let bad_village = NewHousehold {
        village_code: "513431999201".into(),
        ..NewHousehold::default()
    };
    assert!(matches!(
        c.add_household(bad_village).unwrap_err(),
        Error::InvalidValue {
            code: "region_code_unknown_township",
            ..
        }
    ));
}

#[test]
fn a_visit_is_prefilled_autosaved_validated_completed_and_then_immutable() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(&dir);
    let hid = household(&c);
    let v = c.start_visit(Some(&hid), "routine").unwrap();
    assert_eq!(v.status, VisitStatus::Draft);
    assert_eq!(v.answers["village_code"], json!("513431104201"));
    assert_eq!(v.answers["household_phone"], json!("13812345678"));
    assert_eq!(
        v.answers["members"].as_array().unwrap().len(),
        2,
        "members are prefilled with their ids"
    );
    assert!(v.answers["members"][0]["member_id"].is_string());
    assert_eq!(c.my_drafts().unwrap().len(), 1);

    for (path, value) in [
        ("trigger_source", json!("schedule")),
        ("outcome", json!("completed")),
        ("interviewee_name", json!("吉克阿呷")),
        ("location_missing_reason", json!("no_signal")),
        ("basic_living_difficulty", json!("no")),
        ("risk_level", json!("low")),
        ("recommendation", json!("monitor")),
        ("emergency", json!("no")),
        ("investigator_1_name", json!("马海木呷")),
        ("consent_privacy", json!("yes")),
        ("next_visit_due", Json::Null),
    ] {
        c.set_answer(&v.id, path, value).unwrap();
    }
    let problems = c.validate_visit(&v.id).unwrap();
    let blocking: Vec<&str> = problems
        .iter()
        .filter(|p| p.blocks_completion())
        .map(|p| p.path.as_str())
        .collect();
    assert_eq!(blocking, vec!["ended_at", "next_visit_due"]);
    match c.complete_visit(&v.id).unwrap_err() {
        Error::VisitHasProblems { problems } => {
            let blocking: Vec<_> = problems
                .iter()
                .filter(|p| p.blocks_completion())
                .map(|p| (p.path.as_str(), p.code.as_str()))
                .collect();
            assert_eq!(blocking, vec![("next_visit_due", "required")]);
        }
        other => panic!("{other:?}"),
    }
    c.set_answer(&v.id, "next_visit_due", json!("2027-03-01"))
        .unwrap();
    c.set_answer(&v.id, "household_phone", json!("13987654321"))
        .unwrap();
    let done = c.complete_visit(&v.id).unwrap();
    assert_eq!(done.status, VisitStatus::Completed);
    assert!(
        done.answers["ended_at"].is_string(),
        "completion stamps the end time"
    );
    assert_eq!(
        done.answers["completed"],
        json!(true),
        "calculated values are stored"
    );

    // The household now shows the visit's answers, through field edits queued for the server.
    let h = c.household(&hid).unwrap();
    assert_eq!(h.fields["phone"], json!("13987654321"));
    assert_eq!(h.next_visit_due.as_deref(), Some("2027-03-01"));
    assert_eq!(c.visits_of_household(&hid).unwrap().len(), 1);

    // Completed visits are immutable.
    assert_eq!(
        c.set_answer(&v.id, "address", json!("x"))
            .unwrap_err()
            .code(),
        "visit_not_editable"
    );
    assert_eq!(
        c.complete_visit(&v.id).unwrap_err().code(),
        "visit_wrong_status"
    );
    // Nobody signed the draft: it cannot be marked signed (attachments.rs signs one).
    assert_eq!(c.sign_visit(&v.id).unwrap_err().code(), "visit_unsigned");
    assert_eq!(c.visit(&v.id).unwrap().status, VisitStatus::Completed);

    // A correction is a new draft naming the one it replaces.
    let rev = c.revise_visit(&v.id).unwrap();
    assert_eq!(rev.revision_of.as_deref(), Some(v.id.as_str()));
    c.set_answer(&rev.id, "address", json!("二组")).unwrap();
    assert_eq!(
        c.void_visit(&rev.id, " ").unwrap_err().code(),
        "invalid_value"
    );
    c.void_visit(&rev.id, "重复录入").unwrap();
    let voided = c.visit(&rev.id).unwrap();
    assert_eq!(
        (voided.status, voided.void_reason.as_deref()),
        (VisitStatus::Void, Some("重复录入"))
    );
    let counts = c.counts().unwrap();
    assert_eq!((counts.signed, counts.void, counts.drafts), (0, 1, 0));
}

#[test]
fn completing_an_application_survey_merges_members_and_a_new_discovery_creates_its_household() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(&dir);
    let v = c.start_visit(None, "new_discovery").unwrap();
    let answers = obj(json!({
        "village_code": "513431104201", "outcome": "completed", "interviewee_name": "阿说日哈",
        "location": {"lat": 27.9, "lon": 102.2, "accuracy_m": 8.0, "provider": "gps"},
        "urban_rural": "rural", "household_phone": "13812345678",
        "members": [
            {"name": "阿说日哈", "id_type": "resident_id", "id_number": "11010519491231002X", "relationship": "02",
             "lives_together": "yes", "health": "serious", "illness_category": "cancer"},
            {"name": "阿说木呷", "id_type": "none", "sex": "1", "birth_date": "2015-01-01", "relationship": "20",
             "lives_together": "yes", "health": "healthy",
             "father_situation": "seriously_ill", "mother_situation": "deceased", "actual_caregiver": "grandparent"}
        ],
        "basic_living_difficulty": "yes", "risk_level": "high", "recommendation": "apply", "explanation": "户主重病",
        "emergency": "yes", "next_visit_due": "2026-12-05", "investigator_1_name": "马海木呷", "consent_privacy": "yes"
    }));
    c.set_answers(&v.id, &answers).unwrap();
    let done = c.complete_visit(&v.id).unwrap();
    let hid = done.household_id.clone().expect("a household was created");
    let h = c.household(&hid).unwrap();
    assert_eq!(h.village_code, "513431104201");
    assert_eq!(h.head_name.as_deref(), Some("阿说日哈"));
    assert_eq!(h.members.len(), 2);
    let child = h
        .members
        .iter()
        .find(|m| m.fields["relationship"] == json!("20"))
        .unwrap();
    assert_eq!(child.fields["father_situation"], json!("seriously_ill"));
    // The visit now names the members it created.
    let ids: Vec<&Json> = done.answers["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["member_id"])
        .collect();
    assert!(
        ids.iter()
            .all(|id| h.members.iter().any(|m| json!(m.id) == **id))
    );
    // The head's sex and birth date came from the ID.
    let head = h
        .members
        .iter()
        .find(|m| m.fields["relationship"] == json!("02"))
        .unwrap();
    assert_eq!(
        (
            head.fields["sex"].clone(),
            head.fields["birth_date"].clone()
        ),
        (json!("2"), json!("1949-12-31"))
    );

    // A later periodic review on the same household edits the existing member, adds none.
    let review = c.start_visit(Some(&hid), "routine").unwrap();
    assert_eq!(review.answers["members"].as_array().unwrap().len(), 2);
}

#[test]
fn forms_live_side_by_side_and_a_visit_keeps_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(&dir);
    let v1 = c.start_visit(None, "routine").unwrap();
    let mut def: Json =
        serde_json::from_str(zoufang_core::model::default_form::HOUSEHOLD_VISIT_FORM_JSON).unwrap();
    def["version"] = json!(2);
    def["title"]["zh"] = json!("困难群众入户走访表（2027版）");
    c.install_form(&def.to_string()).unwrap();
    // Same version, same content: fine; different content: refused.
    c.install_form(&def.to_string()).unwrap();
    def["title"]["zh"] = json!("改");
    assert_eq!(
        c.install_form(&def.to_string()).unwrap_err().code(),
        "form_version_conflict"
    );
    let v2 = c.start_visit(None, "routine").unwrap();
    assert_eq!((v1.form_version, v2.form_version), (1, 2));
    c.set_answer(&v1.id, "address", json!("一组")).unwrap();
    assert_eq!(c.visit(&v1.id).unwrap().form_version, 1);
    assert_eq!(
        c.install_form("{\"id\":1}").unwrap_err().code(),
        "form_invalid"
    );
}

#[test]
fn bad_answers_are_refused_and_leave_the_draft_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(&dir);
    let v = c.start_visit(None, "routine").unwrap();
    c.set_answer(&v.id, "address", json!("一组")).unwrap();
    let before = c.visit(&v.id).unwrap();
    for (path, value, code) in [
        ("village_code_year", json!("2023"), "answer_type"),
        ("members[3].name", json!("x"), "answer_repeat_index"),
        ("nope", json!(1), "answer_unknown_field"),
        ("completed", json!(true), "answer_read_only"),
        ("members[0]", json!({}), "answer_path"),
    ] {
        assert_eq!(
            c.set_answer(&v.id, path, value).unwrap_err().code(),
            code,
            "{path}"
        );
    }
    assert_eq!(
        c.set_answer("missing", "address", json!("x"))
            .unwrap_err()
            .code(),
        "not_found"
    );
    assert_eq!(
        c.start_visit(None, "picnic").unwrap_err().code(),
        "invalid_value"
    );
    // Answers and the last-edit time as they were: nothing was written.
    assert_eq!(c.visit(&v.id).unwrap(), before);
    // A half-typed ID autosaves; validation reports it.
    let v = c.start_visit(None, "application_survey").unwrap();
    c.set_answer(&v.id, "outcome", json!("completed")).unwrap();
    c.set_answer(&v.id, "members[0].id_number", json!("5134"))
        .unwrap();
    let problems = c.validate_visit(&v.id).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.path == "members[0].id_number" && p.code == "resident_id_length")
    );
    c.remove_repeat_instance(&v.id, "members[0]").unwrap();
    assert_eq!(c.visit(&v.id).unwrap().answers["members"], json!([]));
}

#[test]
fn field_states_follow_the_answers() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(&dir);
    let v = c.start_visit(None, "routine").unwrap();
    let state = |path: &str| {
        c.field_states(&v.id)
            .unwrap()
            .into_iter()
            .find(|s| s.path == path)
    };
    assert!(state("location_missing_reason").unwrap().relevant);
    c.set_answer(&v.id, "location", json!({"lat": 27.9, "lon": 102.2}))
        .unwrap();
    assert!(!state("location_missing_reason").unwrap().relevant);
    assert!(!state("explanation").unwrap().relevant);
    c.set_answer(&v.id, "outcome", json!("completed")).unwrap();
    c.set_answer(&v.id, "recommendation", json!("apply"))
        .unwrap();
    let explanation = state("explanation").unwrap();
    assert!(explanation.relevant && explanation.required);
}

#[test]
fn attachments_are_recorded_with_the_answer_that_references_them() {
    use zoufang_core::records::{AttachmentKind, NewAttachment};
    let dir = tempfile::tempdir().unwrap();
    let c = open(&dir);
    let v = c.start_visit(None, "application_survey").unwrap();
    let photo = NewAttachment {
        field_path: "house_exterior_photo".into(),
        kind: AttachmentKind::Photo,
        content_hash: "ab".repeat(32),
        size_bytes: 412_000,
        mime_type: "image/jpeg".into(),
        metadata: obj(json!({"captured_at": "2026-11-28T01:02:03Z"})),
    };
    let a = c.add_attachment(&v.id, &photo).unwrap();
    assert_eq!(
        c.visit(&v.id).unwrap().answers["house_exterior_photo"],
        json!(a.id)
    );
    assert_eq!(c.attachments_of_visit(&v.id).unwrap(), vec![a]);

    let before = c.visit(&v.id).unwrap();
    let wrong_field = NewAttachment {
        field_path: "interviewee_signature".into(),
        ..photo.clone()
    };
    assert_eq!(
        c.add_attachment(&v.id, &wrong_field).unwrap_err().code(),
        "invalid_value"
    );
    let bad_hash = NewAttachment {
        content_hash: "xyz".into(),
        ..photo.clone()
    };
    assert_eq!(
        c.add_attachment(&v.id, &bad_hash).unwrap_err().code(),
        "invalid_value"
    );
    let pdf = NewAttachment {
        mime_type: "application/pdf".into(),
        ..photo.clone()
    };
    assert_eq!(
        c.add_attachment(&v.id, &pdf).unwrap_err().code(),
        "invalid_value"
    );
    assert_eq!(c.attachments_of_visit(&v.id).unwrap().len(), 1);
    assert_eq!(
        c.visit(&v.id).unwrap(),
        before,
        "refused attachments leave no trace"
    );
}

#[test]
fn an_autosave_racing_with_completion_is_never_lost() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Collector>();
    let dir = tempfile::tempdir().unwrap();
    let c = std::sync::Arc::new(open(&dir));
    let v = c.start_visit(None, "routine").unwrap();
    c.set_answers(
        &v.id,
        &obj(json!({
            "trigger_source": "schedule", "village_code": "513431104201", "outcome": "completed",
            "interviewee_name": "吉克阿呷", "location_missing_reason": "no_signal", "urban_rural": "rural",
            "basic_living_difficulty": "no", "risk_level": "low", "recommendation": "monitor", "emergency": "no",
            "next_visit_due": "2027-03-01", "investigator_1_name": "马海木呷", "consent_privacy": "yes"
        })),
    )
    .unwrap();
    let writer = {
        let (c, id) = (c.clone(), v.id.clone());
        std::thread::spawn(move || {
            let mut last = None;
            for i in 0.. {
                match c.set_answer(&id, "address", json!(format!("{i}号"))) {
                    Ok(()) => last = Some(i),
                    Err(e) => {
                        assert_eq!(e.code(), "visit_not_editable");
                        return last;
                    }
                }
            }
            last
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(30));
    let done = c.complete_visit(&v.id).unwrap();
    let last = writer
        .join()
        .unwrap()
        .expect("some autosaves landed before completion");
    assert_eq!(done.answers["address"], json!(format!("{last}号")));
    assert_eq!(
        c.visit(&v.id).unwrap().answers["address"],
        json!(format!("{last}号"))
    );
}

/// The schema of a store as SQLite describes it: every table, index and trigger with its SQL.
fn schema_of(path: &std::path::Path) -> Vec<(String, String, Option<String>)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A store written by the previous released schema (5), with a coordinator's work in it — a
/// household with its head, a draft, a queued change, change-log lines, an audit entry —
/// upgrades to the current schema: the same schema as a fresh store, and nothing lost.
#[test]
fn a_store_of_the_previous_schema_upgrades_to_what_a_fresh_store_is() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.db");
    {
        let mut conn = rusqlite::Connection::open(&old).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        zoufang_core::store::schema::migrations()
            .to_version(&mut conn, 5)
            .unwrap();
        let at = "2026-11-20T08:00:00.000Z";
        conn.execute(
            "INSERT INTO form_definitions (form_id, version, definition, installed_at) VALUES ('household_visit', 1, ?1, ?2)",
            rusqlite::params![zoufang_core::model::default_form::HOUSEHOLD_VISIT_FORM_JSON, at],
        )
        .unwrap();
        let entry = zoufang_core::protocol::audit::next_entry(
            zoufang_core::protocol::audit::HashAlgorithm::Sha256,
            None,
            at.into(),
            "coordinator-1".into(),
            zoufang_core::protocol::audit::AuditAction::SignIn,
            None,
            json!({}),
        );
        let fields = json!({"village_code": "513431104201", "phone": "13812345678"}).to_string();
        let member =
            json!({"name": "吉克阿呷", "id_number": "11010519491231002X", "relationship": "02"})
                .to_string();
        let answers = json!({"visit_type": "routine", "address": "一组"}).to_string();
        let change =
            json!({"op": "set_field", "entity": "household", "id": "h-1", "field": "phone",
                            "value": "13812345678", "base": 0})
            .to_string();
        conn.execute_batch(&format!(
            "INSERT INTO meta (key, value) VALUES ('owner_user', 'coordinator-1'), ('current_user', 'coordinator-1'),
                                                 ('audit_hash', 'sha256');
             INSERT INTO households (id, village_code, head_name, fields, created_at, updated_at)
                 VALUES ('h-1', '513431104201', '吉克阿呷', '{fields}', '{at}', '{at}');
             INSERT INTO members (id, household_id, name, id_number, relationship, fields, created_at, updated_at)
                 VALUES ('m-1', 'h-1', '吉克阿呷', '11010519491231002X', '02', '{member}', '{at}', '{at}');
             INSERT INTO visits (id, household_id, form_id, form_version, visit_type, status, answers, author, created_at, updated_at)
                 VALUES ('v-1', 'h-1', 'household_visit', 1, 'routine', 'draft', '{answers}', 'coordinator-1', '{at}', '{at}');
             INSERT INTO change_log (entity, entity_id, op, field, value, author, at)
                 VALUES ('household', 'h-1', 'set_field', 'phone', '\"13812345678\"', 'coordinator-1', '{at}');
             INSERT INTO outbox (entity, entity_id, field, hlc, device_time, change)
                 VALUES ('household', 'h-1', 'phone', '0000000001000-0000', '{at}', '{change}');
             INSERT INTO audit_log (seq, at, user_id, action, entity, entity_id, detail, prev_hash, hash)
                 VALUES (1, '{at}', 'coordinator-1', 'sign_in', NULL, NULL, '{{}}', '', '{hash}');",
            hash = entry.hash
        ))
        .unwrap();
    }
    let fresh = dir.path().join("fresh.db");
    drop(Collector::open(&fresh, &StoreOptions::default()).unwrap());
    let c = Collector::open(&old, &StoreOptions::default()).unwrap();
    assert_eq!(c.current_user().as_deref(), Some("coordinator-1"));
    let h = c.household("h-1").unwrap();
    assert_eq!(h.head_name.as_deref(), Some("吉克阿呷"));
    assert_eq!(h.members.len(), 1);
    let v = c.visit("v-1").unwrap();
    assert_eq!(
        (v.status, v.answers["address"].clone()),
        (VisitStatus::Draft, json!("一组"))
    );
    assert_eq!(
        changes(&c),
        1,
        "the queued change still waits for the server"
    );
    let (trail, intact) = c.audit_trail().unwrap();
    assert!(
        intact && trail.len() >= 2,
        "the old chain goes on: {}",
        trail.len()
    );
    // The draft is still editable and completes through the upgraded store.
    c.set_answer("v-1", "address", json!("二组")).unwrap();
    drop(c);
    assert_eq!(schema_of(&old), schema_of(&fresh));
}
