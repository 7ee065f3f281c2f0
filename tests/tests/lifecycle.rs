//! Households and members over time, through two coordinators' phones of one village: a family
//! that moved away and one whose visit found them away for migrant work leave the due list,
//! the lists and the counts on both phones but stay findable; a member who died is no longer
//! listed among those present but is kept, with the status, on both phones and the server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use serde_json::json;
use zoufang_core::protocol::messages::{Change, ChangeOp, Entity, Role};
use zoufang_server::DeviceAuth;
use zoufang_tests::{Device, TestServer, new_household, obj};

const VILLAGE: &str = "513431104201";

fn due_ids(c: &zoufang_core::Collector) -> Vec<String> {
    // Far enough ahead that every household would be due if it were active.
    let due = c.households_due("2027-12-31", Some(VILLAGE), 100).unwrap();
    due.into_iter().map(|h| h.id).collect()
}

#[test]
fn departed_households_leave_the_due_list_but_stay_findable_and_a_member_who_died_is_kept() {
    let server = TestServer::start();
    let t = server.transport();
    let aga = Device::enrolled(&server, "coord-aga", Role::Coordinator, &[VILLAGE]);
    let muga = Device::enrolled(&server, "coord-muga", Role::Coordinator, &[VILLAGE]);
    let (a, b) = (&aga.collector, &muga.collector);
    let moved = new_household(a, VILLAGE);
    let away = new_household(a, VILLAGE);
    let staying = new_household(a, VILLAGE);
    let grandmother = a
        .add_member(
            &staying,
            obj(json!({"name": "吉克阿莫", "id_type": "none", "sex": "2", "birth_date": "1931-05-01",
                       "relationship": "50", "lives_together": "yes", "health": "serious",
                       "illness_category": "cancer"})),
        )
        .unwrap();
    a.sync(&t, None, None).unwrap();
    b.sync(&t, None, None).unwrap();
    assert_eq!(due_ids(b).len(), 3);

    // Aga records the family that moved away, with a reason and a date.
    a.set_household_status(
        &moved,
        "moved_away",
        Some("全家搬到西昌"),
        Some("2026-11-20"),
    )
    .unwrap();
    // A visit to the second finds them away for migrant work; its outcome proposes the status.
    let v = b.start_visit(Some(&away), "routine").unwrap();
    b.set_answers(
        &v.id,
        &obj(
            json!({"trigger_source": "schedule", "outcome": "migrant_work",
                    "location_missing_reason": "no_signal", "next_visit_due": "2027-06-01"}),
        ),
    )
    .unwrap();
    b.complete_visit(&v.id).unwrap();
    let proposed = b.proposed_status(&v.id).unwrap().unwrap();
    assert_eq!(
        (proposed.household_id.as_str(), proposed.status.as_str()),
        (away.as_str(), "migrant_away")
    );
    b.set_household_status(&away, &proposed.status, None, Some(&proposed.date))
        .unwrap();
    assert_eq!(b.proposed_status(&v.id).unwrap(), None, "confirmed once");
    // Muga records the grandmother's death: a status, not a deletion.
    b.set_member_status(&grandmother, "deceased", Some("病故"), Some("2026-11-25"))
        .unwrap();
    for _ in 0..2 {
        a.sync(&t, None, None).unwrap();
        b.sync(&t, None, None).unwrap();
    }

    for phone in [a, b] {
        assert_eq!(due_ids(phone), std::slice::from_ref(&staying));
        let listed = phone.households_in_village(VILLAGE, 50, 0).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(phone.search_households("吉克", 10).unwrap().len() == 1);
        let all = phone.search_all_households("吉克", 10).unwrap();
        let mut statuses: Vec<&str> = all.iter().map(|h| h.status.as_str()).collect();
        statuses.sort_unstable();
        assert_eq!(statuses, ["active", "migrant_away", "moved_away"]);
        let counts = phone.counts().unwrap();
        assert_eq!((counts.households, counts.households_inactive), (1, 2));
        let home = phone.household(&staying).unwrap();
        assert_eq!(home.members.len(), 1);
        assert_eq!(home.former_members[0].id, grandmother);
        assert_eq!(home.former_members[0].fields["status"], json!("deceased"));
        let gone = phone.household(&moved).unwrap();
        assert_eq!(gone.fields["status_reason"], json!("全家搬到西昌"));
    }
    let held = server
        .storage
        .record(Entity::Member, &grandmother)
        .unwrap()
        .unwrap();
    assert_eq!(held.fields["status"].value, json!("deceased"));

    // Only known statuses are taken; "merged" is a reviewer's operation, on the phone and on
    // the server alike.
    for bad in ["merged", "gone"] {
        let refused = a.set_household_status(&staying, bad, None, None);
        assert_eq!(refused.unwrap_err().code(), "invalid_value");
    }
    let status = a.sync_status().unwrap();
    let auth = DeviceAuth::new(status.device_id.unwrap(), status.user.unwrap());
    let forged = Change {
        seq: 900_000,
        hlc: String::new(),
        device_time: chrono::Utc::now().to_rfc3339(),
        op: ChangeOp::SetField {
            entity: Entity::Household,
            id: staying.clone(),
            field: "status".into(),
            value: json!("merged"),
            base: 0,
            resolves: None,
            after: None,
        },
    };
    let now = chrono::Utc::now();
    let acks = server.storage.push(&auth, &[forged], now, now).unwrap();
    assert_eq!(acks[0].code.as_deref(), Some("invalid_value"));
}
