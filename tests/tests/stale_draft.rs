//! A stale draft never undoes other people's corrections. Two coordinators of one village and
//! their township reviewer: a visit opened on one phone before a colleague corrected a member's
//! resident ID (or before the reviewer resolved a phone conflict), completed after the
//! correction reached that phone, leaves the correction standing; the draft shows, before
//! completion, what changed since it was opened; and a real overlap becomes a conflict with
//! both values kept.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use serde_json::{Value as Json, json};
use zoufang_core::Collector;
use zoufang_core::model::domain::resident_id_check_char;
use zoufang_core::protocol::messages::{Entity, Role};
use zoufang_tests::{Device, TestServer, new_household, routine_draft};

const VILLAGE: &str = "513431104201";

/// A valid resident ID of someone born on `birth` (yyyymmdd).
fn resident_id(birth: &str, order: &str) -> String {
    let body = format!("513431{birth}{order}");
    format!("{body}{}", resident_id_check_char(&body).unwrap())
}

fn head_id_number(c: &Collector, household: &str) -> Json {
    c.household(household).unwrap().members[0].fields["id_number"].clone()
}

#[test]
fn a_draft_opened_before_a_correction_leaves_it_standing_and_a_real_overlap_is_a_conflict() {
    let server = TestServer::start();
    let t = server.transport();
    let aga = Device::enrolled(&server, "coord-aga", Role::Coordinator, &[VILLAGE]);
    let muga = Device::enrolled(&server, "coord-muga", Role::Coordinator, &[VILLAGE]);
    let (a, b) = (&aga.collector, &muga.collector);
    let home = new_household(a, VILLAGE);
    a.sync(&t, None, None).unwrap();
    b.sync(&t, None, None).unwrap();
    let head = a.household(&home).unwrap().members[0].id.clone();

    // Aga opens a visit; meanwhile Muga corrects the head's resident ID, and it reaches Aga.
    let draft = routine_draft(a, &home);
    let corrected = resident_id("19491231", "003");
    b.edit_member_field(&head, "id_number", json!(corrected))
        .unwrap();
    b.sync(&t, None, None).unwrap();
    a.sync(&t, None, None).unwrap();
    assert_eq!(head_id_number(a, &home), json!(corrected));

    // Before completing, the draft says what changed since it was opened, with both values.
    let changed = a.changes_since_opened(&draft).unwrap();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0].path, "members[0].id_number");
    assert_eq!(changed[0].opened_with, json!("11010519491231002X"));
    assert_eq!(changed[0].now, json!(corrected));
    let warning = a.validate_visit(&draft).unwrap();
    let warning = warning
        .iter()
        .find(|p| p.code == "changed_since_opened")
        .unwrap();
    assert!(!warning.blocks_completion() && warning.path == "members[0].id_number");
    assert!(
        !warning.message_zh.contains(&corrected),
        "no values in messages"
    );

    // Aga completes without touching the ID: the correction stands everywhere.
    a.complete_visit(&draft).unwrap();
    let report = a.sync(&t, None, None).unwrap();
    assert_eq!((report.rejected, report.conflicts), (0, 0));
    b.sync(&t, None, None).unwrap();
    for phone in [a, b] {
        assert_eq!(head_id_number(phone, &home), json!(corrected));
    }
    let held = server
        .storage
        .record(Entity::Member, &head)
        .unwrap()
        .unwrap();
    assert_eq!(held.fields["id_number"].value, json!(corrected));

    // A real overlap: both change the phone, Aga on a draft opened before Muga's edit arrived.
    let draft = routine_draft(a, &home);
    b.edit_household_field(&home, "phone", json!("13900000002"))
        .unwrap();
    b.sync(&t, None, None).unwrap();
    a.sync(&t, None, None).unwrap();
    a.set_answer(&draft, "household_phone", json!("13900000001"))
        .unwrap();
    a.complete_visit(&draft).unwrap();
    let report = a.sync(&t, None, None).unwrap();
    assert_eq!(report.conflicts, 1, "{report:?}");
    let conflict = &a.conflicts().unwrap()[0];
    let values: Vec<&Json> = conflict.values.iter().map(|v| &v.value).collect();
    assert_eq!(values, [&json!("13900000002"), &json!("13900000001")]);
    // Untouched fields of that visit did not move.
    assert_eq!(head_id_number(a, &home), json!(corrected));
}

#[test]
fn a_draft_opened_before_a_reviewers_resolution_leaves_it_standing() {
    let server = TestServer::start();
    let t = server.transport();
    let aga = Device::enrolled(&server, "coord-aga", Role::Coordinator, &[VILLAGE]);
    let muga = Device::enrolled(&server, "coord-muga", Role::Coordinator, &[VILLAGE]);
    let reviewer = Device::enrolled(&server, "township-1", Role::TownshipStaff, &["513431104"]);
    let (a, b, r) = (&aga.collector, &muga.collector, &reviewer.collector);
    let home = new_household(a, VILLAGE);
    a.sync(&t, None, None).unwrap();
    b.sync(&t, None, None).unwrap();
    // Both type a phone offline: a conflict.
    a.edit_household_field(&home, "phone", json!("13900000001"))
        .unwrap();
    b.edit_household_field(&home, "phone", json!("13900000002"))
        .unwrap();
    a.sync(&t, None, None).unwrap();
    b.sync(&t, None, None).unwrap();
    a.sync(&t, None, None).unwrap();
    // Aga opens a visit while the conflict is open; the reviewer resolves it.
    let draft = routine_draft(a, &home);
    r.sync(&t, None, None).unwrap();
    let conflict = r.conflicts().unwrap()[0].id.clone();
    r.resolve_conflict(&conflict, json!("13900000003")).unwrap();
    r.sync(&t, None, None).unwrap();
    a.sync(&t, None, None).unwrap();
    assert_eq!(
        a.changes_since_opened(&draft).unwrap()[0].path,
        "household_phone"
    );

    a.complete_visit(&draft).unwrap();
    let report = a.sync(&t, None, None).unwrap();
    assert_eq!((report.rejected, report.conflicts), (0, 0));
    b.sync(&t, None, None).unwrap();
    for phone in [a, b] {
        assert_eq!(
            phone.household(&home).unwrap().fields["phone"],
            json!("13900000003")
        );
        assert!(phone.conflicts().unwrap().is_empty());
    }
}
