//! A coordinator moves from one village to another while her phone holds unsent work for the
//! old one. Her next sync hands that work to the old village's reviewers (nothing goes to her
//! rejected list), takes the new area at once, removes the old village from the phone (but a
//! household with an open draft, until the draft is done) and pulls the new village.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use serde_json::json;
use zoufang_core::protocol::messages::{self, Entity, HandoversResponse, Role};
use zoufang_tests::{Device, TestServer, new_household, routine_visit, send_as};

const TOWNSHIP: &str = "513431104";
const OLD_VILLAGE: &str = "513431104201";
const NEW_VILLAGE: &str = "513431104202";

fn handovers_seen_by(server: &TestServer, reviewer: &Device) -> Vec<messages::Handover> {
    let r = send_as(server, reviewer, "GET", "/v1/handovers", Vec::new());
    assert_eq!(r.status, 200);
    messages::decode::<HandoversResponse>(&r.body)
        .unwrap()
        .handovers
}

#[test]
fn a_moved_coordinators_pending_work_reaches_the_old_villages_reviewers_and_the_old_village_leaves_her_phone()
 {
    let server = TestServer::start();
    let t = server.transport();
    let aga = Device::enrolled(&server, "coord-aga", Role::Coordinator, &[OLD_VILLAGE]);
    let muga = Device::enrolled(&server, "coord-muga", Role::Coordinator, &[NEW_VILLAGE]);
    let township = Device::enrolled(&server, "township-1", Role::TownshipStaff, &[TOWNSHIP]);
    let other = Device::enrolled(&server, "township-2", Role::TownshipStaff, &["513431105"]);
    let (a, b) = (&aga.collector, &muga.collector);
    let old_home = new_household(a, OLD_VILLAGE);
    let drafted = new_household(a, OLD_VILLAGE);
    let new_home = new_household(b, NEW_VILLAGE);
    a.sync(&t, None, None).unwrap();
    b.sync(&t, None, None).unwrap();

    // Offline, Aga corrects a phone, records a visit and opens a draft in her old village.
    a.edit_household_field(&old_home, "phone", json!("13900000007"))
        .unwrap();
    let visit = routine_visit(a, &old_home);
    let draft = a.start_visit(Some(&drafted), "routine").unwrap();
    // Meanwhile the administrator moves her to the next village.
    server
        .storage
        .set_areas("coord-aga", &[NEW_VILLAGE.to_owned()])
        .unwrap();

    let report = a.sync(&t, None, None).unwrap();
    // The phone, the visit, and the household fields the visit's answers updated.
    assert_eq!((report.handed_over, report.rejected), (4, 0), "{report:?}");
    assert!(a.rejected_changes().unwrap().is_empty());
    assert_eq!(a.sync_status().unwrap().pending_changes, 0);
    // She no longer claims the old village; it left the phone, but for the household with
    // her open draft; the new village arrived.
    assert_eq!(a.sync_status().unwrap().user.unwrap().areas, [NEW_VILLAGE]);
    assert_eq!(report.households_left, 1);
    assert!(a.household(&old_home).is_err());
    assert!(a.visit(&visit).is_err());
    assert!(a.household(&drafted).is_ok(), "kept for the open draft");
    assert!(a.household(&new_home).is_ok());

    // The old village's reviewer has both changes; the server applied neither on its own.
    let handed = handovers_seen_by(&server, &township);
    assert_eq!(handed.len(), 4);
    assert!(
        handed
            .iter()
            .all(|h| h.village_code == OLD_VILLAGE && h.user_id == "coord-aga")
    );
    assert!(handovers_seen_by(&server, &other).is_empty());
    let held = server
        .storage
        .record(Entity::Household, &old_home)
        .unwrap()
        .unwrap();
    assert_eq!(held.fields["phone"].value, json!("13812345678"));

    // The draft is voided: the last of the old village leaves at the next sync.
    a.void_visit(&draft.id, "已调往他村").unwrap();
    let report = a.sync(&t, None, None).unwrap();
    assert_eq!(report.households_left, 1);
    assert!(a.household(&drafted).is_err());
    assert!(
        a.households_in_village(OLD_VILLAGE, 10, 0)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        a.households_in_village(NEW_VILLAGE, 10, 0).unwrap().len(),
        1
    );
}

#[test]
fn a_reviewer_moves_a_household_the_old_village_loses_it_and_the_new_one_gains_it_with_its_history()
{
    let server = TestServer::start();
    let t = server.transport();
    let aga = Device::enrolled(&server, "coord-aga", Role::Coordinator, &[OLD_VILLAGE]);
    let muga = Device::enrolled(&server, "coord-muga", Role::Coordinator, &[NEW_VILLAGE]);
    let township = Device::enrolled(&server, "township-1", Role::TownshipStaff, &[TOWNSHIP]);
    let (a, b) = (&aga.collector, &muga.collector);
    let home = new_household(a, OLD_VILLAGE);
    let visit = routine_visit(a, &home);
    a.sync(&t, None, None).unwrap();
    b.sync(&t, None, None).unwrap();
    assert!(b.household(&home).is_err());

    let move_by = |phone: &Device| {
        let body = messages::encode(&messages::MoveRequest {
            protocol: messages::PROTOCOL_VERSION,
            household: home.clone(),
            village_code: NEW_VILLAGE.into(),
        })
        .unwrap();
        send_as(&server, phone, "POST", "/v1/households/move", body).status
    };
    assert_eq!(move_by(&aga), 403, "coordinators do not move households");
    assert_eq!(move_by(&township), 200);

    let report = a.sync(&t, None, None).unwrap();
    assert_eq!(report.households_left, 1);
    assert!(a.household(&home).is_err() && a.visit(&visit).is_err());
    b.sync(&t, None, None).unwrap();
    let moved = b.household(&home).unwrap();
    assert_eq!(moved.village_code, NEW_VILLAGE);
    assert_eq!(moved.members.len(), 1);
    assert_eq!(b.visits_of_household(&home).unwrap()[0].id, visit);
    let held = server
        .storage
        .record(Entity::Household, &home)
        .unwrap()
        .unwrap();
    assert_eq!(held.village_code, NEW_VILLAGE);
    // Settled: the next syncs find every village's checksum in step.
    for phone in [a, b] {
        let again = phone.sync(&t, None, None).unwrap();
        assert!(again.repaired_villages.is_empty(), "{again:?}");
        assert!(phone.rejected_changes().unwrap().is_empty());
    }
}
