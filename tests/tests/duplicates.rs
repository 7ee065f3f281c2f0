//! One resident ID, one present member. The phone warns while the coordinator types an ID its
//! store already holds; the same family discovered offline in two villages is flagged to the
//! township reviewer (whose areas cover both), the coordinators hearing only that the ID is
//! registered elsewhere; the same son added on two phones is flagged, and once one of the two
//! is marked a duplicate, both phones list one son and the flag is settled.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use serde_json::{Value as Json, json};
use zoufang_core::Collector;
use zoufang_core::protocol::messages::{self, DuplicatesResponse, Role};
use zoufang_core::records::NewHousehold;
use zoufang_tests::{Device, TestServer, obj, send_as};

const TOWNSHIP: &str = "513431104";
const VILLAGE_A: &str = "513431104201";
const VILLAGE_B: &str = "513431104202";
const HEAD_ID: &str = "11010519491231002X";
const SON_ID: &str = "513431200801010010";

fn family(c: &Collector, village: &str) -> String {
    c.add_household(NewHousehold {
        village_code: village.into(),
        fields: obj(json!({"phone": "13812345678", "urban_rural": "rural"})),
        members: vec![obj(json!({"name": "吉克阿呷", "id_type": "resident_id", "id_number": HEAD_ID,
                                 "relationship": "02", "lives_together": "yes", "health": "healthy"}))],
    })
    .unwrap()
}

fn son() -> serde_json::Map<String, Json> {
    obj(
        json!({"name": "吉克木呷", "id_type": "resident_id", "id_number": SON_ID,
               "relationship": "20", "lives_together": "yes", "health": "healthy"}),
    )
}

/// The reviewer's list, as their phone's token fetches it over HTTP.
fn duplicates_seen_by(
    server: &TestServer,
    phone: &Device,
) -> (u16, Vec<messages::PossibleDuplicate>) {
    let r = send_as(server, phone, "GET", "/v1/duplicates", Vec::new());
    if r.status != 200 {
        return (r.status, Vec::new());
    }
    let list: DuplicatesResponse = messages::decode(&r.body).unwrap();
    (r.status, list.duplicates)
}

#[test]
fn the_same_family_in_two_villages_and_the_same_son_on_two_phones_are_flagged_and_settled() {
    let server = TestServer::start();
    let t = server.transport();
    let aga = Device::enrolled(&server, "coord-aga", Role::Coordinator, &[VILLAGE_A]);
    let muga = Device::enrolled(&server, "coord-muga", Role::Coordinator, &[VILLAGE_B]);
    let ashu = Device::enrolled(&server, "coord-ashu", Role::Coordinator, &[VILLAGE_A]);
    let township = Device::enrolled(&server, "township-1", Role::TownshipStaff, &[TOWNSHIP]);
    let elsewhere = Device::enrolled(&server, "township-2", Role::TownshipStaff, &["513431105"]);
    let (a, b, c) = (&aga.collector, &muga.collector, &ashu.collector);

    // On one phone: typing an ID the store already holds warns at once (not blocking).
    let home_a = family(a, VILLAGE_A);
    assert_eq!(
        a.households_holding_id_number(HEAD_ID).unwrap()[0].id,
        home_a
    );
    let draft = a.start_visit(None, "new_discovery").unwrap();
    a.set_answer(
        &draft.id,
        "members[0].id_number",
        json!(HEAD_ID.to_lowercase()),
    )
    .unwrap();
    let warned = a.validate_visit(&draft.id).unwrap();
    let warned = warned
        .iter()
        .find(|p| p.code == "id_number_registered")
        .unwrap();
    assert_eq!(warned.path, "members[0].id_number");
    assert!(!warned.blocks_completion() && !warned.message_zh.contains(HEAD_ID));
    a.void_visit(&draft.id, "重复录入").unwrap();

    // The same head discovered offline in the next village too.
    let home_b = family(b, VILLAGE_B);
    assert_eq!(a.sync(&t, None, None).unwrap().possible_duplicates, 0);
    let report = b.sync(&t, None, None).unwrap();
    assert_eq!((report.possible_duplicates, report.rejected), (1, 0));
    // Muga's phone knows nothing of village A's household.
    assert!(b.household(&home_a).is_err());

    let (status, seen) = duplicates_seen_by(&server, &township);
    assert_eq!(status, 200);
    assert_eq!(seen.len(), 1);
    let mut households = [seen[0].household_a.clone(), seen[0].household_b.clone()];
    households.sort();
    let mut expected = [home_a.clone(), home_b.clone()];
    expected.sort();
    assert_eq!(households, expected);
    assert!(
        duplicates_seen_by(&server, &elsewhere).1.is_empty(),
        "not their township"
    );
    assert_eq!(
        duplicates_seen_by(&server, &aga).0,
        403,
        "coordinators do not see the list"
    );

    // The son returns: added on two phones of village A.
    c.sync(&t, None, None).unwrap();
    let son_a = a.add_member(&home_a, son()).unwrap();
    let son_c = c.add_member(&home_a, son()).unwrap();
    a.sync(&t, None, None).unwrap();
    assert_eq!(c.sync(&t, None, None).unwrap().possible_duplicates, 1);
    a.sync(&t, None, None).unwrap();
    assert_eq!(duplicates_seen_by(&server, &township).1.len(), 2);
    assert_eq!(a.household(&home_a).unwrap().members.len(), 3);

    // One of the two is marked a duplicate; both phones list one son; the flag is settled.
    a.set_member_status(&son_c, "duplicate", Some("重复录入"), None)
        .unwrap();
    a.sync(&t, None, None).unwrap();
    c.sync(&t, None, None).unwrap();
    for phone in [a, c] {
        let home = phone.household(&home_a).unwrap();
        let present: Vec<&str> = home.members.iter().map(|m| m.id.as_str()).collect();
        assert!(present.contains(&son_a.as_str()) && !present.contains(&son_c.as_str()));
        assert_eq!(home.former_members[0].fields["status"], json!("duplicate"));
    }
    assert_eq!(duplicates_seen_by(&server, &township).1.len(), 1);

    // It was a typo after all: Muga corrects his household head's ID; the last pair settles.
    let head_b = b.household(&home_b).unwrap().members[0].id.clone();
    b.edit_member_field(&head_b, "id_number", json!("513431195101010032"))
        .unwrap();
    b.sync(&t, None, None).unwrap();
    assert!(duplicates_seen_by(&server, &township).1.is_empty());
}

/// The reviewer merges, over HTTP with their phone's token.
fn merge(server: &TestServer, reviewer: &Device, survivor: &str, merged: &str) -> u16 {
    let body = messages::encode(&messages::MergeRequest {
        protocol: messages::PROTOCOL_VERSION,
        survivor: survivor.into(),
        merged: merged.into(),
    })
    .unwrap();
    send_as(server, reviewer, "POST", "/v1/households/merge", body).status
}

#[test]
fn a_reviewer_merges_the_same_family_registered_twice_and_both_phones_follow_drafts_included() {
    let server = TestServer::start();
    let t = server.transport();
    let aga = Device::enrolled(&server, "coord-aga", Role::Coordinator, &[VILLAGE_A]);
    let ashu = Device::enrolled(&server, "coord-ashu", Role::Coordinator, &[VILLAGE_A]);
    let township = Device::enrolled(&server, "township-1", Role::TownshipStaff, &[TOWNSHIP]);
    let (a, c) = (&aga.collector, &ashu.collector);
    // Both discover the family offline; Ashu also adds the son and records a visit.
    let first = family(a, VILLAGE_A);
    let second = family(c, VILLAGE_A);
    let son = c.add_member(&second, son()).unwrap();
    let visit = zoufang_tests::routine_visit(c, &second);
    a.sync(&t, None, None).unwrap();
    assert_eq!(c.sync(&t, None, None).unwrap().possible_duplicates, 1);
    a.sync(&t, None, None).unwrap();
    // Aga opens a visit of the second registration before the merge reaches her.
    let draft = a.start_visit(Some(&second), "routine").unwrap();

    // Coordinators cannot merge; the reviewer can.
    assert_eq!(merge(&server, &aga, &first, &second), 403);
    assert_eq!(merge(&server, &township, &first, &second), 200);
    assert_eq!(
        merge(&server, &township, &first, &second),
        400,
        "merged already"
    );
    for _ in 0..2 {
        a.sync(&t, None, None).unwrap();
        c.sync(&t, None, None).unwrap();
    }

    for phone in [a, c] {
        let survivor = phone.household(&first).unwrap();
        assert!(
            survivor.members.iter().any(|m| m.id == son),
            "the son moved"
        );
        let visits = phone.visits_of_household(&first).unwrap();
        assert!(visits.iter().any(|v| v.id == visit), "the visit moved");
        let tombstone = phone.household(&second).unwrap();
        assert_eq!(tombstone.fields["status"], json!("merged"));
        assert_eq!(tombstone.fields["merged_into"], json!(first));
        assert!(tombstone.members.is_empty());
        let listed = phone.households_in_village(VILLAGE_A, 50, 0).unwrap();
        assert_eq!(listed.len(), 1);
    }
    // The draft follows the survivor, and completes there.
    assert_eq!(
        a.visit(&draft.id).unwrap().household_id.as_deref(),
        Some(first.as_str())
    );
    let held = server
        .storage
        .record(messages::Entity::Member, &son)
        .unwrap()
        .unwrap();
    assert_eq!(held.household_id.as_deref(), Some(first.as_str()));
    a.set_answers(
        &draft.id,
        &obj(json!({"trigger_source": "schedule", "outcome": "nobody_home", "location_missing_reason": "no_signal",
                    "next_visit_due": "2027-01-15"})),
    )
    .unwrap();
    a.complete_visit(&draft.id).unwrap();
    a.sync(&t, None, None).unwrap();
    assert!(a.rejected_changes().unwrap().is_empty() && c.rejected_changes().unwrap().is_empty());

    // The survivor now lists the head twice: the reviewer merges the two records of one person.
    let heads: Vec<String> = a
        .household(&first)
        .unwrap()
        .members
        .iter()
        .filter(|m| m.fields["id_number"] == json!(HEAD_ID))
        .map(|m| m.id.clone())
        .collect();
    assert_eq!(heads.len(), 2);
    assert_eq!(duplicates_seen_by(&server, &township).1.len(), 1);
    let body = messages::encode(&messages::MergeRequest {
        protocol: messages::PROTOCOL_VERSION,
        survivor: heads[0].clone(),
        merged: heads[1].clone(),
    })
    .unwrap();
    let r = send_as(&server, &aga, "POST", "/v1/members/merge", body.clone());
    assert_eq!(r.status, 403, "coordinators do not merge");
    assert_eq!(
        send_as(&server, &township, "POST", "/v1/members/merge", body).status,
        200
    );
    a.sync(&t, None, None).unwrap();
    c.sync(&t, None, None).unwrap();
    for phone in [a, c] {
        let home = phone.household(&first).unwrap();
        let gone = home
            .former_members
            .iter()
            .find(|m| m.id == heads[1])
            .unwrap();
        assert_eq!(gone.fields["merged_into"], json!(heads[0]));
        assert_eq!(gone.fields["status"], json!("duplicate"));
    }
    assert!(
        duplicates_seen_by(&server, &township).1.is_empty(),
        "settled"
    );
}
