//! Property: devices doing random edits (household and member statuses among them) and syncs
//! in random order, with random interruptions and a reviewer's merge of two registrations,
//! all converge to the server's state once they sync without faults, and every value anyone
//! typed was applied at some point or is kept in a conflict. Real server on loopback; in half
//! the cases two nodes over one storage, every request landing on the other.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{Map, Value as Json, json};
use zoufang_core::protocol::messages::{Entity, FeedItem, Role};
use zoufang_core::records::NewHousehold;
use zoufang_core::sync::SyncConfig;
use zoufang_tests::{Device, FlakyTransport, RoundRobin, TestServer};

const VILLAGE: &str = "513431104201";
const FIELDS: [&str; 3] = ["phone", "address", "supporters_elsewhere"];

fn value(field: usize, pick: usize) -> Json {
    match field {
        0 => json!(["13900000001", "13900000002", "13900000003"][pick % 3]),
        1 => json!(["一组", "二组"][pick % 2]),
        _ => json!(pick % 3),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Edit {
        device: usize,
        field: usize,
        pick: usize,
    },
    /// Sync; with `cut`, the link drops at that request (answer lost or never sent).
    Sync {
        device: usize,
        cut: Option<(u64, bool)>,
    },
    Resolve {
        device: usize,
        pick: usize,
    },
    /// The household's status (moved away, back again...).
    Status {
        device: usize,
        pick: usize,
    },
    /// A member's status (the first household's member, or the second's): removing them, or
    /// finding them present after all.
    MemberStatus {
        device: usize,
        pick: usize,
        second: bool,
    },
    /// A reviewer merges the second household (the same family registered twice) into the
    /// first; once only.
    Merge,
}

const HOUSEHOLD_STATUSES: [&str; 3] = ["active", "moved_away", "migrant_away"];
const MEMBER_STATUSES: [&str; 3] = ["present", "left_household", "deceased"];

fn ops(devices: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (0..devices, 0..3usize, 0..3usize).prop_map(|(device, field, pick)| Op::Edit { device, field, pick }),
        3 => (0..devices, prop::option::of((1u64..5, any::<bool>()))).prop_map(|(device, cut)| Op::Sync { device, cut }),
        1 => (0..devices, 0..4usize).prop_map(|(device, pick)| Op::Resolve { device, pick }),
        1 => (0..devices, 0..3usize).prop_map(|(device, pick)| Op::Status { device, pick }),
        1 => (0..devices, 0..3usize, any::<bool>()).prop_map(|(device, pick, second)| Op::MemberStatus { device, pick, second }),
        1 => Just(Op::Merge),
    ];
    prop::collection::vec(op, 1..25)
}

fn server_fields(server: &TestServer, h: &str) -> Map<String, Json> {
    server_fields_of(server, Entity::Household, h)
}

/// Where a member is on a phone, and their fields: (household, fields).
fn member_on_phone(
    c: &zoufang_core::Collector,
    households: &[&str],
    member: &str,
) -> Option<(String, Map<String, Json>)> {
    households.iter().find_map(|h| {
        let home = c.household(h).ok()?;
        let m = home
            .members
            .iter()
            .chain(&home.former_members)
            .find(|m| m.id == member)?;
        Some((h.to_string(), m.fields.clone()))
    })
}

/// A record's fields on the server as a phone shows them: a cleared field (null, kept on the
/// server with its version for the merge rule) is absent.
fn server_fields_of(server: &TestServer, entity: Entity, id: &str) -> Map<String, Json> {
    let r = server.storage.record(entity, id).unwrap().unwrap();
    r.fields
        .into_iter()
        .filter(|(_, v)| !v.value.is_null())
        .map(|(k, v)| (k, v.value))
        .collect()
}

/// The server's whole feed, as a reader of every village would pull it (on either storage).
fn server_feed(server: &TestServer) -> Vec<FeedItem> {
    let auditor = zoufang_server::DeviceAuth::new(
        "auditor",
        zoufang_core::protocol::messages::UserInfo {
            id: "auditor".into(),
            role: Role::Administrator,
            areas: vec!["5".into()],
        },
    );
    let mut cursors = std::collections::BTreeMap::new();
    let mut items = Vec::new();
    loop {
        let request = zoufang_core::protocol::messages::PullRequest {
            protocol: zoufang_core::protocol::messages::PROTOCOL_VERSION,
            cursors: cursors.clone(),
            limit: 1000,
            page: None,
        };
        let page = server
            .storage
            .pull(&auditor, &request, chrono::Utc::now())
            .unwrap();
        items.extend(page.entries.into_iter().map(|e| e.item));
        cursors = page.cursors;
        if !page.more {
            return items;
        }
    }
}

/// Every (field, value) the server ever accepted or keeps in a conflict.
fn server_history(server: &TestServer) -> BTreeSet<(String, String)> {
    let mut seen = BTreeSet::new();
    for item in server_feed(server) {
        match item {
            FeedItem::Record { record } => {
                for (f, v) in record.fields {
                    seen.insert((f, v.value.to_string()));
                }
            }
            FeedItem::Field { field, value, .. } => {
                seen.insert((field, value.to_string()));
            }
            FeedItem::Conflict { conflict } => {
                for v in &conflict.values {
                    seen.insert((conflict.field.clone(), v.value.to_string()));
                }
                if let Some(r) = &conflict.resolution {
                    seen.insert((conflict.field.clone(), r.to_string()));
                }
            }
            _ => {}
        }
    }
    seen
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn devices_converge_and_nothing_typed_is_lost(
        (n, script) in (2usize..=4).prop_flat_map(|n| (Just(n), ops(n))),
        two_nodes in any::<bool>(),
    ) {
        let server = TestServer::start();
        // With two nodes over one storage, every request lands on the other node.
        let second = two_nodes.then(|| server.another_node());
        let urls: Vec<&str> = std::iter::once(server.url.as_str()).chain(second.as_ref().map(|s| s.url.as_str())).collect();
        let devices: Vec<Device> = (0..n).map(|i| Device::enrolled(&server, &format!("coord-{i}"), Role::Coordinator, &[VILLAGE])).collect();
        let t = RoundRobin::new(&urls);
        let h = devices[0].collector.add_household(NewHousehold {
            village_code: VILLAGE.into(),
            fields: json!({"phone": "13812345678", "address": "三组", "supporters_elsewhere": 0}).as_object().cloned().unwrap(),
            members: vec![json!({"name": "吉克阿呷", "id_type": "none", "sex": "1", "birth_date": "1960-03-01",
                                 "relationship": "02", "lives_together": "yes", "health": "healthy"}).as_object().cloned().unwrap()],
        }).unwrap();
        let member = devices[0].collector.household(&h).unwrap().members[0].id.clone();
        let last = &devices[n - 1].collector;
        let h2 = last.add_household(NewHousehold {
            village_code: VILLAGE.into(),
            fields: json!({"phone": "13812345679", "address": "三组"}).as_object().cloned().unwrap(),
            members: vec![json!({"name": "吉克木呷", "id_type": "none", "sex": "1", "birth_date": "1990-03-01",
                                 "relationship": "20", "lives_together": "yes", "health": "healthy"}).as_object().cloned().unwrap()],
        }).unwrap();
        let member2 = last.household(&h2).unwrap().members[0].id.clone();
        let reviewer = zoufang_server::DeviceAuth::new("reviewer", zoufang_core::protocol::messages::UserInfo {
                id: "township-1".into(),
                role: Role::TownshipStaff,
                areas: vec!["513431104".into()],
            });
        // Twice: the last device's household reaches the others on the second round.
        for d in devices.iter().chain(&devices) {
            d.collector.sync(&t, None, None).unwrap();
        }
        let mut typed: BTreeSet<(String, String)> = BTreeSet::new();
        let mut no_retry = SyncConfig::default();
        no_retry.retry.attempts = 1;

        for op in &script {
            match op {
                Op::Edit { device, field, pick } => {
                    let v = value(*field, *pick);
                    devices[*device].collector.edit_household_field(&h, FIELDS[*field], v.clone()).unwrap();
                    typed.insert((FIELDS[*field].to_owned(), v.to_string()));
                }
                Op::Sync { device, cut } => {
                    let c = &devices[*device].collector;
                    match cut {
                        None => { c.sync(&t, None, None).unwrap(); }
                        Some((at, lose_answer)) => {
                            let mut flaky = FlakyTransport::new(RoundRobin::new(&urls));
                            flaky.lose_answer = *lose_answer;
                            flaky.fail.lock().push(*at);
                            // A cut sync may fail; whatever it did is kept.
                            let _ = c.sync_with(&flaky, no_retry, None, None);
                        }
                    }
                }
                Op::Resolve { device, pick } => {
                    let c = &devices[*device].collector;
                    if let Some(conflict) = c.conflicts().unwrap().first() {
                        let typed_anew = FIELDS.iter().position(|f| *f == conflict.field).map(|field| value(field, *pick));
                        let v = match (conflict.values.get(*pick), typed_anew) {
                            (Some(competing), _) => competing.value.clone(),
                            (None, Some(v)) => v,
                            (None, None) => conflict.provisional.clone(),
                        };
                        c.resolve_conflict(&conflict.id, v.clone()).unwrap();
                        typed.insert((conflict.field.clone(), v.to_string()));
                    }
                }
                Op::Status { device, pick } => {
                    let status = HOUSEHOLD_STATUSES[*pick];
                    devices[*device].collector.set_household_status(&h, status, None, Some("2026-11-20")).unwrap();
                    typed.insert(("status".to_owned(), json!(status).to_string()));
                }
                Op::MemberStatus { device, pick, second } => {
                    let status = MEMBER_STATUSES[*pick];
                    let target = if *second { &member2 } else { &member };
                    devices[*device].collector.set_member_status(target, status, None, Some("2026-11-25")).unwrap();
                    typed.insert(("status".to_owned(), json!(status).to_string()));
                }
                Op::Merge => {
                    // The second time, it is refused: merged already.
                    let _ = server.storage.merge_households(&reviewer, &h, &h2, chrono::Utc::now());
                }
            }
        }

        // Quiet period: everyone syncs; open conflicts are settled; everyone syncs twice more.
        for _ in 0..3 {
            for d in &devices {
                d.collector.sync(&t, None, None).unwrap();
            }
            for d in &devices {
                for c in d.collector.conflicts().unwrap() {
                    d.collector.resolve_conflict(&c.id, c.provisional.clone()).unwrap();
                }
            }
        }
        for _ in 0..2 {
            for d in &devices {
                d.collector.sync(&t, None, None).unwrap();
            }
        }
        let truth = server_fields(&server, &h);
        let truth2 = server_fields(&server, &h2);
        for d in &devices {
            let home = d.collector.household(&h).unwrap();
            prop_assert_eq!(&home.fields, &truth);
            prop_assert_eq!(&d.collector.household(&h2).unwrap().fields, &truth2);
            for m in [&member, &member2] {
                let held = server.storage.record(Entity::Member, m).unwrap().unwrap();
                let on_phone = member_on_phone(&d.collector, &[&h, &h2], m);
                let server_side = (held.household_id.clone().unwrap(), server_fields_of(&server, Entity::Member, m));
                prop_assert_eq!(on_phone, Some(server_side));
            }
            prop_assert_eq!(d.collector.sync_status().unwrap().pending_changes, 0);
            prop_assert!(d.collector.conflicts().unwrap().is_empty());
            prop_assert!(d.collector.rejected_changes().unwrap().is_empty());
        }
        let history = server_history(&server);
        for (field, v) in &typed {
            prop_assert!(history.contains(&(field.clone(), v.clone())), "{} = {} was lost", field, v);
        }
    }
}
