//! Sync end to end: devices and a real server on loopback.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde_json::{Map, Value as Json, json};
use zoufang_core::Collector;
use zoufang_core::records::NewHousehold;
use zoufang_core::sync::protocol::{Entity, Role, UserInfo};
use zoufang_server::{DeviceAuth, Storage};
use zoufang_tests::{Device, TestServer};

const VILLAGE: &str = "513431104201";

/// The server-side view of someone reviewing the village.
fn reviewer() -> DeviceAuth {
    DeviceAuth {
        device_id: "review-desk".into(),
        user: UserInfo {
            id: "reviewer".into(),
            role: Role::CountyReviewer,
            areas: vec![VILLAGE.into()],
        },
    }
}

fn obj(v: Json) -> Map<String, Json> {
    v.as_object().cloned().unwrap()
}

fn new_household(c: &Collector) -> String {
    c.add_household(NewHousehold {
        village_code: VILLAGE.into(),
        fields: obj(json!({"phone": "13812345678", "urban_rural": "rural", "address": "三组", "next_visit_due": "2026-12-01"})),
        members: vec![obj(json!({"name": "吉克阿呷", "id_type": "resident_id", "id_number": "11010519491231002X",
                                 "relationship": "02", "lives_together": "yes", "health": "healthy"}))],
    })
    .unwrap()
}

fn routine_visit(c: &Collector, household: &str) -> String {
    let v = c.start_visit(Some(household), "routine").unwrap();
    c.set_answers(
        &v.id,
        &obj(json!({
            "trigger_source": "schedule", "outcome": "completed", "interviewee_name": "吉克阿呷",
            "location_missing_reason": "no_signal", "basic_living_difficulty": "no", "risk_level": "low",
            "recommendation": "monitor", "emergency": "no", "next_visit_due": "2027-03-01",
            "investigator_1_name": "马海木呷", "consent_privacy": "yes"
        })),
    )
    .unwrap();
    c.complete_visit(&v.id).unwrap();
    v.id
}

fn fields(c: &Collector, household: &str) -> Map<String, Json> {
    c.household(household).unwrap().fields
}

#[test]
fn the_demo_story_two_coordinators_merge_field_by_field_and_resolve_a_conflict() {
    let server = TestServer::start();
    let t = server.transport();
    let a = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let b = Device::enrolled(&server, "coord-b", Role::Coordinator, &[VILLAGE]);
    let (a, b) = (&a.collector, &b.collector);

    let h = new_household(a);
    a.sync(&t, None, None).unwrap();
    let first = b.sync(&t, None, None).unwrap();
    assert!(first.pulled >= 2, "household and member arrive: {first:?}");
    assert_eq!(fields(b, &h)["phone"], json!("13812345678"));
    assert_eq!(b.household(&h).unwrap().members.len(), 1);

    // Offline: the same value on both sides, different values on one field, one side only.
    a.edit_household_field(&h, "address", json!("三组8号"))
        .unwrap();
    b.edit_household_field(&h, "address", json!("三组8号"))
        .unwrap();
    a.edit_household_field(&h, "phone", json!("13900000001"))
        .unwrap();
    b.edit_household_field(&h, "phone", json!("13900000002"))
        .unwrap();
    b.edit_household_field(&h, "supporters_elsewhere", json!(2))
        .unwrap();
    let visit_a = routine_visit(a, &h);
    let visit_b = routine_visit(b, &h);

    let ra = a.sync(&t, None, None).unwrap();
    assert_eq!((ra.conflicts, ra.rejected), (0, 0), "{ra:?}");
    let rb = b.sync(&t, None, None).unwrap();
    assert_eq!(
        (rb.conflicts, rb.rejected),
        (1, 0),
        "only the phone conflicts: {rb:?}"
    );
    a.sync(&t, None, None).unwrap();

    // The conflict is on both devices and on the server, with both values and who typed them.
    let on_a = a.conflicts().unwrap();
    let on_b = b.conflicts().unwrap();
    let admin_view = server.storage.conflicts(&reviewer()).unwrap();
    assert_eq!((on_a.len(), on_b.len(), admin_view.len()), (1, 1, 1));
    let c = &on_a[0];
    assert_eq!(
        (c.entity, c.entity_id.as_str(), c.field.as_str()),
        (Entity::Household, h.as_str(), "phone")
    );
    let values: Vec<(&Json, &str)> = c
        .values
        .iter()
        .map(|v| (&v.value, v.user.as_str()))
        .collect();
    assert_eq!(
        values,
        vec![
            (&json!("13900000001"), "coord-a"),
            (&json!("13900000002"), "coord-b")
        ]
    );
    assert_eq!(
        c.provisional,
        json!("13900000002"),
        "the last value received is shown meanwhile"
    );
    assert_eq!(fields(a, &h)["phone"], json!("13900000002"));
    assert_eq!(
        fields(a, &h)["supporters_elsewhere"],
        json!(2),
        "one-sided edits merge"
    );

    // A resolves; everyone converges.
    a.resolve_conflict(&c.id, json!("13900000001")).unwrap();
    a.sync(&t, None, None).unwrap();
    b.sync(&t, None, None).unwrap();
    assert!(a.conflicts().unwrap().is_empty() && b.conflicts().unwrap().is_empty());
    let server_state = server
        .storage
        .record(Entity::Household, &h)
        .unwrap()
        .unwrap();
    let server_fields: Map<String, Json> = server_state
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    assert_eq!(fields(a, &h), server_fields);
    assert_eq!(fields(b, &h), server_fields);
    assert_eq!(server_fields["phone"], json!("13900000001"));
    assert_eq!(server_fields["address"], json!("三组8号"));
    // Both visits reached the server and the other device.
    assert!(a.visit_synced(&visit_a).unwrap() && b.visit_synced(&visit_b).unwrap());
    assert!(a.visit(&visit_b).is_ok() && b.visit(&visit_a).is_ok());
    assert_eq!(server.storage.stats().unwrap().visits, 2);
    let resolved = server.storage.conflicts(&reviewer()).unwrap();
    assert!(resolved.is_empty());
}
