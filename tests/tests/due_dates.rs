//! The next visit follows the household's assistance category, not a date typed by hand. The
//! province configures 低保 households to be visited every 90 days; the township reviewer files a
//! household as 低保; from then on the server sets its next due date from each visit, the
//! coordinator's phone shows it and refuses a typed one, and the server refuses one a phone
//! sends anyway. A household of no configured category keeps the date its coordinator typed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use chrono::{TimeDelta, Utc};
use serde_json::json;
use zoufang_core::protocol::messages::{
    self, Change, ChangeOp, Entity, PROTOCOL_VERSION, PushRequest, PushResponse, Role,
};
use zoufang_core::sync::LocalState;
use zoufang_tests::{Device, TestServer, new_household, routine_visit, send_as};

const VILLAGE: &str = "513431104201";

fn due_of(c: &zoufang_core::Collector, household: &str) -> Option<String> {
    c.household(household).unwrap().next_visit_due
}

#[test]
fn a_dibao_households_next_visit_follows_its_frequency_and_a_typed_date_is_refused() {
    let server = TestServer::start();
    let t = server.transport();
    server
        .storage
        .set_visit_frequency("dibao", 90, Utc::now())
        .unwrap();
    assert!(
        server
            .storage
            .set_visit_frequency("dibao", 0, Utc::now())
            .is_err()
    );
    let aga = Device::enrolled(&server, "coord-aga", Role::Coordinator, &[VILLAGE]);
    let township = Device::enrolled(&server, "township-1", Role::TownshipStaff, &["513431104"]);
    let a = &aga.collector;
    let dibao = new_household(a, VILLAGE);
    let other = new_household(a, VILLAGE);
    a.sync(&t, None, None).unwrap();

    // The reviewer files the household as 低保: its next visit is 90 days from today.
    township.collector.sync(&t, None, None).unwrap();
    township
        .collector
        .edit_household_field(&dibao, "assistance_category", json!("dibao"))
        .unwrap();
    township.collector.sync(&t, None, None).unwrap();
    a.sync(&t, None, None).unwrap();
    let in_90 = (Utc::now() + TimeDelta::days(90))
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(due_of(a, &dibao).as_deref(), Some(in_90.as_str()));

    // The coordinator's phone refuses a typed date for it; the other household takes one.
    let refused = a.edit_household_field(&dibao, "next_visit_due", json!("2026-12-24"));
    assert_eq!(refused.unwrap_err().code(), "server_owned_field");
    a.edit_household_field(&other, "next_visit_due", json!("2026-12-24"))
        .unwrap();

    // A visit whose form asked for a date (2027-03-01): the rule's date wins, nothing refused.
    routine_visit(a, &dibao);
    routine_visit(a, &other);
    let report = a.sync(&t, None, None).unwrap();
    assert_eq!(report.rejected, 0, "{report:?}");
    a.sync(&t, None, None).unwrap();
    assert_eq!(due_of(a, &dibao).as_deref(), Some(in_90.as_str()));
    assert_eq!(due_of(a, &other).as_deref(), Some("2027-03-01"));
    let held = server
        .storage
        .record(Entity::Household, &dibao)
        .unwrap()
        .unwrap();
    assert_eq!(held.fields["next_visit_due"].value, json!(in_90));

    // A phone that sends a date anyway is refused.
    let (device_id, _) = a.credentials().unwrap().unwrap();
    let now = Utc::now().to_rfc3339();
    let body = messages::encode(&PushRequest {
        protocol: PROTOCOL_VERSION,
        device_id,
        device_time: now.clone(),
        changes: vec![Change {
            seq: 900_000,
            hlc: String::new(),
            device_time: now,
            op: ChangeOp::SetField {
                entity: Entity::Household,
                id: dibao.clone(),
                field: "next_visit_due".into(),
                value: json!("2030-01-01"),
                base: held.fields["next_visit_due"].version,
                resolves: None,
                after: None,
            },
        }],
        audit: None,
        held: Vec::new(),
    })
    .unwrap();
    let r = send_as(&server, &aga, "POST", "/v1/push", body);
    let acks = messages::decode::<PushResponse>(&r.body).unwrap().acks;
    assert_eq!(acks[0].code.as_deref(), Some("server_owned_field"));
}
