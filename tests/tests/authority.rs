//! The server decides who wrote what. Two coordinators in two villages of one township and
//! their township reviewer: a coordinator's phone that lies — a colleague as author, the other
//! village's household or visit, "signed" with no signature, its household moved to the other
//! village by a field edit, the other village's ids reused, the assistance status set — is
//! refused change by change, the refusal says nothing of the other village, and nothing on the
//! server changes. The reviewer's assistance status flows down to the coordinator's phone. A
//! visit dated before its form existed or after it was sent is refused on the phone and on the
//! server; a phone whose clock runs hours fast still delivers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;
use zoufang_core::protocol::messages::{
    self, Ack, Change, ChangeOp, Entity, Outcome, PROTOCOL_VERSION, PushRequest, PushResponse,
    Role, VisitRecord,
};
use zoufang_core::sync::LocalState;
use zoufang_tests::{Device, TestServer, new_household, routine_visit, send_as};

const TOWNSHIP: &str = "513431104";
const VILLAGE_A: &str = "513431104201";
const VILLAGE_B: &str = "513431104202";

static FORGED: AtomicU64 = AtomicU64::new(1_000_000);

/// Pushes hand-made changes with the phone's own credentials, as a tampered app would.
fn forge(server: &TestServer, phone: &Device, ops: Vec<ChangeOp>) -> Vec<Ack> {
    let (device_id, _) = phone.collector.credentials().unwrap().unwrap();
    let now = chrono::Utc::now().to_rfc3339();
    let changes = ops
        .into_iter()
        .map(|op| Change {
            // Far above anything the phone's own outbox reaches in this test; never reused (the
            // server answers a repeated number with its first answer).
            seq: FORGED.fetch_add(1, Ordering::SeqCst),
            hlc: String::new(),
            device_time: now.clone(),
            op,
        })
        .collect();
    let body = messages::encode(&PushRequest {
        protocol: PROTOCOL_VERSION,
        device_id,
        device_time: now,
        changes,
        audit: None,
        held: Vec::new(),
    })
    .unwrap();
    let response = send_as(server, phone, "POST", "/v1/push", body);
    assert_eq!(response.status, 200);
    messages::decode::<PushResponse>(&response.body)
        .unwrap()
        .acks
}

fn set_field(id: &str, field: &str, value: serde_json::Value) -> ChangeOp {
    ChangeOp::SetField {
        entity: Entity::Household,
        id: id.into(),
        field: field.into(),
        value,
        base: 0,
        resolves: None,
        after: None,
    }
}

/// A visit as really recorded, under a new id: one claim is then changed.
fn copy_of(real: &VisitRecord) -> VisitRecord {
    VisitRecord {
        id: uuid::Uuid::now_v7().to_string(),
        ..real.clone()
    }
}

fn submit(visit: VisitRecord) -> ChangeOp {
    ChangeOp::SubmitVisit {
        visit: Box::new(visit),
    }
}

#[test]
fn a_phone_that_lies_about_author_household_revision_signature_village_or_ids_is_refused() {
    let server = TestServer::start();
    let t = server.transport();
    let aga = Device::enrolled(&server, "coord-aga", Role::Coordinator, &[VILLAGE_A]);
    let muga = Device::enrolled(&server, "coord-muga", Role::Coordinator, &[VILLAGE_B]);
    let township = Device::enrolled(&server, "township-1", Role::TownshipStaff, &[TOWNSHIP]);
    let (a, b) = (&aga.collector, &muga.collector);

    let home_a = new_household(a, VILLAGE_A);
    let visit_a = routine_visit(a, &home_a);
    let home_b = new_household(b, VILLAGE_B);
    let visit_b = routine_visit(b, &home_b);
    a.sync(&t, None, None).unwrap();
    b.sync(&t, None, None).unwrap();
    let before = server.storage.stats().unwrap();
    let held_a = server
        .storage
        .record(Entity::Household, &home_a)
        .unwrap()
        .unwrap();

    // Each lie starts from a visit Aga really recorded, with one claim changed.
    let real = a.visit_submission(&visit_a).unwrap();
    let fresh = || copy_of(&real);
    let acks = forge(
        &server,
        &aga,
        vec![
            submit(VisitRecord {
                author: "coord-muga".into(),
                ..fresh()
            }),
            submit(VisitRecord {
                household_id: Some(home_b.clone()),
                ..fresh()
            }),
            submit(VisitRecord {
                revision_of: Some(visit_b.clone()),
                ..fresh()
            }),
            submit(VisitRecord {
                status: "signed".into(),
                signed_at: Some(real.created_at.clone()),
                ..fresh()
            }),
            set_field(&home_a, "village_code", json!(VILLAGE_B)),
            set_field(&home_a, "assistance_status", json!("低保")),
            ChangeOp::CreateHousehold {
                id: home_b.clone(),
                village_code: VILLAGE_A.into(),
                fields: serde_json::Map::new(),
            },
            submit(VisitRecord {
                id: visit_b.clone(),
                ..real.clone()
            }),
            set_field(&home_b, "phone", json!("13000000000")),
        ],
    );
    let codes: Vec<&str> = acks
        .iter()
        .map(|a| a.code.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(
        codes,
        [
            "author_mismatch",
            "not_found",
            "not_found",
            "unsigned",
            "server_owned_field",
            "server_owned_field",
            "id_in_use",
            "id_in_use",
            "not_found",
        ]
    );
    assert!(acks.iter().all(|a| a.outcome == Outcome::Rejected));
    // The other village's household reads as one that does not exist, the same words as an
    // unknown id; no refusal names the other village.
    let unknown = forge(
        &server,
        &aga,
        vec![ChangeOp::SubmitVisit {
            visit: Box::new(VisitRecord {
                household_id: Some(uuid::Uuid::now_v7().to_string()),
                ..fresh()
            }),
        }],
    );
    assert_eq!(acks[1].message, unknown[0].message);
    let said = serde_json::to_string(&acks).unwrap();
    assert!(!said.contains(VILLAGE_B), "{said}");
    // Nothing changed on the server.
    assert_eq!(server.storage.stats().unwrap(), before);
    let after_a = server
        .storage
        .record(Entity::Household, &home_a)
        .unwrap()
        .unwrap();
    assert_eq!(after_a, held_a);

    // The phone itself refuses the same edits before they reach the outbox.
    for field in ["village_code", "assistance_status"] {
        let refused = a.edit_household_field(&home_a, field, json!(VILLAGE_B));
        assert_eq!(refused.unwrap_err().code(), "server_owned_field");
    }
    // A visit of Aga's household filed under the other village cannot be completed.
    let moved = a.start_visit(Some(&home_a), "routine").unwrap();
    a.set_answer(&moved.id, "village_code", json!(VILLAGE_B))
        .unwrap();
    let problems = a.validate_visit(&moved.id).unwrap();
    let village = problems.iter().find(|p| p.path == "village_code").unwrap();
    assert!(village.code == "household_village" && village.blocks_completion());
    assert_eq!(
        a.complete_visit(&moved.id).unwrap_err().code(),
        "visit_has_problems"
    );

    // The township reviewer sets the assistance status; it reaches Aga's phone.
    township.collector.sync(&t, None, None).unwrap();
    township
        .collector
        .edit_household_field(&home_a, "assistance_status", json!("低保"))
        .unwrap();
    let report = township.collector.sync(&t, None, None).unwrap();
    assert_eq!((report.accepted, report.rejected), (1, 0));
    a.sync(&t, None, None).unwrap();
    assert_eq!(
        a.household(&home_a).unwrap().fields["assistance_status"],
        json!("低保")
    );
}

#[test]
fn a_visit_dated_before_its_form_existed_or_after_it_was_sent_is_refused() {
    let server = TestServer::start();
    let t = server.transport();
    let aga = Device::enrolled(&server, "coord-aga", Role::Coordinator, &[VILLAGE_A]);
    let a = &aga.collector;
    let home = new_household(a, VILLAGE_A);
    let visit = routine_visit(a, &home);
    a.sync(&t, None, None).unwrap();

    // On the phone: a start time typed years before the form was published blocks completion.
    let draft = zoufang_tests::routine_draft(a, &home);
    a.set_answer(&draft, "started_at", json!("2019-03-01T08:00:00+08:00"))
        .unwrap();
    let problems = a.validate_visit(&draft).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.path == "started_at" && p.code == "datetime_before_form"),
        "{problems:?}"
    );
    assert_eq!(
        a.complete_visit(&draft).unwrap_err().code(),
        "visit_has_problems"
    );

    // A tampered app sends such visits anyway: the server refuses each, whatever it claims.
    let before = server.storage.stats().unwrap();
    let real = a.visit_submission(&visit).unwrap();
    let fresh = || copy_of(&real);
    let acks = forge(
        &server,
        &aga,
        vec![
            submit(VisitRecord {
                completed_at: Some("2019-03-01T00:08:00Z".into()),
                ..fresh()
            }),
            submit(VisitRecord {
                completed_at: Some("2099-01-01T08:00:00Z".into()),
                ..fresh()
            }),
            submit(VisitRecord {
                form_version: 99,
                ..fresh()
            }),
            submit(VisitRecord {
                completed_at: Some("yesterday".into()),
                ..fresh()
            }),
        ],
    );
    let codes: Vec<_> = acks.iter().map(|a| a.code.as_deref()).collect();
    assert_eq!(
        codes,
        [
            Some("implausible_time"),
            Some("implausible_time"),
            Some("unknown_form"),
            Some("invalid_value")
        ]
    );
    assert!(acks.iter().all(|a| a.outcome == Outcome::Rejected));
    assert_eq!(server.storage.stats().unwrap(), before);
}

#[test]
fn a_phone_whose_clock_runs_hours_fast_still_delivers_its_visits() {
    let server = TestServer::start();
    let t = server.transport();
    let token = server.user("coord-aga", Role::Coordinator, &[VILLAGE_A]);
    let dir = tempfile::tempdir().unwrap();
    let fast = std::sync::Arc::new(|| chrono::Utc::now() + chrono::TimeDelta::hours(3));
    let a = zoufang_core::Collector::open_with_clock(
        &dir.path().join("fast.db"),
        &zoufang_core::StoreOptions::default(),
        fast,
    )
    .unwrap();
    a.enroll(&t, &token, "fast").unwrap();
    let home = new_household(&a, VILLAGE_A);
    let visit = routine_visit(&a, &home);
    // Its visit says it was completed three hours from now on the server's clock; read on the
    // phone's own clock (its push says what time it thinks it is), it was a moment ago.
    let report = a.sync(&t, None, None).unwrap();
    assert!(report.clock_skewed);
    assert_eq!(report.rejected, 0, "{report:?}");
    assert_eq!(server.storage.stats().unwrap().visits, 1);
    assert!(a.visit(&visit).is_ok());
}
