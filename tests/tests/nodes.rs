//! Server nodes keep no state of their own: two nodes over the same storage (two `PgStorage`
//! pools on one PostgreSQL database when the suites run on PostgreSQL; two handles on one
//! SQLite file otherwise) serve the same devices, a device may land on another node at every
//! request, and concurrent pushes to one household through different nodes make exactly the
//! conflicts one node would.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::sync::{Arc, Barrier};

use chrono::Utc;
use serde_json::json;
use zoufang_core::protocol::messages::{Role, UserInfo};
use zoufang_core::{Collector, StoreOptions};
use zoufang_server::{AppState, BackgroundServer, Storage};
use zoufang_tests::{RoundRobin, SharedData, backend, new_household};

const VILLAGE: &str = "513431104201";

struct Node {
    storage: Arc<dyn Storage>,
    server: BackgroundServer,
}

fn node(data: &SharedData) -> Node {
    let storage = data.open_node();
    let server = BackgroundServer::start(AppState::new(storage.clone()), "127.0.0.1:0").unwrap();
    Node { storage, server }
}

fn phone(nodes: &[&Node], user: &str, dir: &tempfile::TempDir) -> (Collector, RoundRobin) {
    let info = UserInfo {
        id: user.into(),
        role: Role::Coordinator,
        areas: vec![VILLAGE.into()],
    };
    nodes[0].storage.create_user(&info, Utc::now()).unwrap();
    // The enrolment token is issued on one node and spent on the other.
    let token = nodes[1]
        .storage
        .issue_enrollment(user, std::time::Duration::from_secs(600), Utc::now())
        .unwrap();
    let urls: Vec<&str> = nodes.iter().map(|n| n.server.url.as_str()).collect();
    let transport = RoundRobin::new(&urls);
    let c = Collector::open(
        &dir.path().join(format!("{user}.db")),
        &StoreOptions::default(),
    )
    .unwrap();
    c.enroll(&transport, &token, user).unwrap();
    (c, transport)
}

#[test]
fn two_nodes_serve_the_same_devices_and_make_the_conflicts_one_node_would() {
    let data = SharedData::new();
    zoufang_server::publish_defaults(data.open_node().as_ref()).unwrap();
    let (a, b) = (node(&data), node(&data));
    let dir = tempfile::tempdir().unwrap();
    let (c1, t1) = phone(&[&a, &b], "coord-1", &dir);
    let (c2, t2) = phone(&[&b, &a], "coord-2", &dir);

    // One phone registers a household through whichever node it lands on; the other gets it.
    let h = new_household(&c1, VILLAGE);
    c1.sync(&t1, None, None).unwrap();
    c2.sync(&t2, None, None).unwrap();
    assert!(
        c2.household(&h).is_ok(),
        "the household reached the other phone ({})",
        backend()
    );

    // Both correct the phone number offline, to different values, and sync at the same moment,
    // each through its own node.
    c1.edit_household_field(&h, "phone", json!("13900000001"))
        .unwrap();
    c2.edit_household_field(&h, "phone", json!("13900000002"))
        .unwrap();
    let start = Arc::new(Barrier::new(2));
    std::thread::scope(|s| {
        for (c, t) in [(&c1, &t1), (&c2, &t2)] {
            let start = start.clone();
            s.spawn(move || {
                start.wait();
                c.sync(t, None, None).unwrap();
            });
        }
    });
    c1.sync(&t1, None, None).unwrap();
    c2.sync(&t2, None, None).unwrap();

    // Exactly one conflict, holding both values, on both nodes and both phones.
    for n in [&a, &b] {
        let stats = n.storage.stats().unwrap();
        assert_eq!(stats.open_conflicts, 1, "{} node view", backend());
    }
    for c in [&c1, &c2] {
        let conflicts = c.conflicts().unwrap();
        assert_eq!(conflicts.len(), 1);
        let mut values: Vec<String> = conflicts[0]
            .values
            .iter()
            .map(|v| v.value.to_string())
            .collect();
        values.sort();
        assert_eq!(values, ["\"13900000001\"", "\"13900000002\""]);
    }

    // One phone resolves it; through the other node, everyone converges on the choice.
    let id = c1.conflicts().unwrap()[0].id.clone();
    c1.resolve_conflict(&id, json!("13900000002")).unwrap();
    c1.sync(&t1, None, None).unwrap();
    c2.sync(&t2, None, None).unwrap();
    for c in [&c1, &c2] {
        assert!(c.conflicts().unwrap().is_empty());
        assert_eq!(
            c.household(&h).unwrap().fields["phone"],
            json!("13900000002")
        );
    }
    assert_eq!(b.storage.stats().unwrap().open_conflicts, 0);
    assert!(
        a.storage.verify_audit().unwrap().is_empty(),
        "the audit chains hold across nodes"
    );
}
