//! Sync end to end: devices and a real server on loopback.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde_json::{Map, Value as Json, json};
use zoufang_core::Collector;
use zoufang_core::protocol::messages::{Entity, Role, UserInfo};
use zoufang_core::records::NewHousehold;
use zoufang_server::DeviceAuth;
use zoufang_tests::{Device, TestServer, obj, routine_visit};

const VILLAGE: &str = "513431104201";

/// The server-side view of someone reviewing the village.
fn reviewer() -> DeviceAuth {
    DeviceAuth::new(
        "review-desk",
        UserInfo {
            id: "reviewer".into(),
            role: Role::CountyReviewer,
            areas: vec![VILLAGE.into()],
        },
    )
}

fn new_household(c: &Collector) -> String {
    zoufang_tests::new_household(c, VILLAGE)
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

fn no_retry() -> zoufang_core::sync::SyncConfig {
    let mut c = zoufang_core::sync::SyncConfig::default();
    c.retry.attempts = 1;
    c
}

#[test]
fn a_lost_acknowledgement_followed_by_a_re_push_changes_nothing() {
    let server = TestServer::start();
    let a = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let a = &a.collector;
    let h = new_household(a);
    a.edit_household_field(&h, "phone", json!("13900000009"))
        .unwrap();
    // Request 1 is the catalog; from request 2 on every push reaches the server and its
    // answer is lost, until the sync gives up (smaller and smaller pushes first).
    let mut flaky = zoufang_tests::FlakyTransport::new(server.transport());
    flaky.lose_answer = true;
    flaky.fail.lock().extend(2..200);
    let err = a.sync_with(&flaky, no_retry(), None, None).unwrap_err();
    assert_eq!(err.code(), "transport");
    let after_first = server.storage.stats().unwrap();
    assert_eq!(after_first.households, 1, "the server applied the push");
    assert_eq!(
        a.sync_status().unwrap().pending_changes,
        3,
        "nothing left the outbox without an ack"
    );

    let report = a.sync(&server.transport(), None, None).unwrap();
    assert_eq!(
        (report.pushed, report.accepted, report.conflicts),
        (3, 3, 0),
        "{report:?}"
    );
    assert_eq!(
        server.storage.stats().unwrap().feed_entries,
        after_first.feed_entries,
        "nothing applied twice"
    );
    assert_eq!(a.sync_status().unwrap().pending_changes, 0);
    let on_server = server
        .storage
        .record(Entity::Household, &h)
        .unwrap()
        .unwrap();
    assert_eq!(on_server.fields["phone"].value, json!("13900000009"));
}

#[test]
fn answers_lost_now_and_then_cost_a_re_send_within_the_same_sync_not_the_sync() {
    let server = TestServer::start();
    let a = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    for _ in 0..12 {
        new_household(&a.collector);
    }
    let b = Device::enrolled(&server, "coord-b", Role::Coordinator, &[VILLAGE]);
    let queued = a.collector.sync_status().unwrap().pending_changes;
    let mut config = no_retry();
    config.push_batch = 4;
    config.pull_limit = 5;
    // Request 1 is the catalog; the second and fourth pushes reach the server and their
    // answers are lost; then the first pull's page is lost on the way down.
    let mut flaky = zoufang_tests::FlakyTransport::new(server.transport());
    flaky.lose_answer = true;
    flaky.fail.lock().extend([3, 6]);
    let report = a.collector.sync_with(&flaky, config, None, None).unwrap();
    assert_eq!(report.accepted, queued, "{report:?}");
    assert_eq!(a.collector.sync_status().unwrap().pending_changes, 0);
    let after = server.storage.stats().unwrap();
    assert_eq!(after.households, 12, "each household once");
    assert_eq!(after.feed_entries, queued, "each change applied once");

    // The first pull's page, and after an answer the third's, lost on the way.
    let flaky = zoufang_tests::FlakyTransport::new(server.transport());
    flaky.fail.lock().extend([2, 4]);
    let pulled = b.collector.sync_with(&flaky, config, None, None).unwrap();
    assert_eq!(pulled.pulled, queued, "every entry once: {pulled:?}");
    assert_eq!(b.collector.counts().unwrap().households, 12);
}

#[test]
fn an_interrupted_pull_resumes_without_re_downloading_applied_batches() {
    let server = TestServer::start();
    let b = Device::enrolled(&server, "coord-b", Role::Coordinator, &[VILLAGE]);
    for _ in 0..30 {
        new_household(&b.collector);
    }
    b.collector.sync(&server.transport(), None, None).unwrap();
    let total = server.storage.stats().unwrap().feed_entries;
    assert_eq!(total, 60);

    let a = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let mut config = no_retry();
    config.pull_limit = 10;
    // Requests: 1 catalog (nothing to push), then pulls; from the third pull on the link is
    // down (the sync tries smaller pages, then gives up).
    let flaky = zoufang_tests::FlakyTransport::new(server.transport());
    flaky.fail.lock().extend(4..200);
    assert_eq!(
        a.collector
            .sync_with(&flaky, config, None, None)
            .unwrap_err()
            .code(),
        "transport"
    );
    // Two pages applied: 10 entries, then 20 (the page grows after a quick answer).
    let held = a.collector.counts().unwrap();
    assert_eq!(held.households + held.members, 30, "{held:?}");

    let resumed = a
        .collector
        .sync_with(&server.transport(), config, None, None)
        .unwrap();
    assert_eq!(
        resumed.pulled,
        total - 30,
        "applied batches are not downloaded again"
    );
    assert_eq!(a.collector.counts().unwrap().households, 30);
    assert_eq!(a.collector.counts().unwrap().members, 30);
    assert!(
        resumed.repaired_villages.is_empty(),
        "checksums agree after the resume"
    );
}

#[test]
fn a_coordinator_never_receives_nor_writes_another_villages_households() {
    const OTHER: &str = "513431104202";
    let server = TestServer::start();
    let a = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let b = Device::enrolled(&server, "coord-b", Role::Coordinator, &[OTHER]);
    let theirs = b
        .collector
        .add_household(NewHousehold {
            village_code: OTHER.into(),
            fields: obj(json!({"phone": "13811112222"})),
            members: vec![],
        })
        .unwrap();
    b.collector.sync(&server.transport(), None, None).unwrap();
    new_household(&a.collector);
    a.collector.sync(&server.transport(), None, None).unwrap();
    assert!(a.collector.household(&theirs).is_err(), "never downloaded");
    assert!(
        a.collector
            .households_in_village(OTHER, 10, 0)
            .unwrap()
            .is_empty()
    );

    // Writing into the other village is refused, and the refused change is kept and listed.
    let mine_there = a
        .collector
        .add_household(NewHousehold {
            village_code: OTHER.into(),
            fields: Map::new(),
            members: vec![],
        })
        .unwrap();
    let report = a.collector.sync(&server.transport(), None, None).unwrap();
    assert_eq!(report.rejected, 1);
    let rejected = a.collector.rejected_changes().unwrap();
    assert_eq!(rejected[0].code, "out_of_area");
    assert!(
        a.collector.household(&mine_there).is_ok(),
        "the local record is not dropped"
    );
    // Even a hand-made change naming their household is refused by the server.
    let auth = DeviceAuth::new(
        "forged",
        UserInfo {
            id: "coord-a".into(),
            role: Role::Coordinator,
            areas: vec![VILLAGE.into()],
        },
    );
    let change = zoufang_core::protocol::messages::Change {
        seq: 1,
        hlc: "0".into(),
        device_time: chrono::Utc::now().to_rfc3339(),
        op: zoufang_core::protocol::messages::ChangeOp::SetField {
            entity: Entity::Household,
            id: theirs.clone(),
            field: "phone".into(),
            value: json!("13000000000"),
            base: 0,
            resolves: None,
            after: None,
        },
    };
    let acks = server
        .storage
        .push(&auth, &[change], chrono::Utc::now(), chrono::Utc::now())
        .unwrap();
    // It reads as a record that does not exist: nothing tells the sender it is there.
    assert_eq!(acks[0].code.as_deref(), Some("not_found"));
    let unchanged = server
        .storage
        .record(Entity::Household, &theirs)
        .unwrap()
        .unwrap();
    assert_eq!(unchanged.fields["phone"].value, json!("13811112222"));
}

#[test]
fn a_checksum_mismatch_repairs_only_that_village() {
    const OTHER: &str = "513431104202";
    let server = TestServer::start();
    let a = Device::enrolled(&server, "staff-a", Role::TownshipStaff, &["513431104"]);
    let h1 = new_household(&a.collector);
    let h2 = a
        .collector
        .add_household(NewHousehold {
            village_code: OTHER.into(),
            fields: obj(json!({"phone": "13811112222"})),
            members: vec![],
        })
        .unwrap();
    a.collector.sync(&server.transport(), None, None).unwrap();
    assert!(
        a.collector
            .sync(&server.transport(), None, None)
            .unwrap()
            .repaired_villages
            .is_empty()
    );

    // Damage the device's copy of one village behind the store's back.
    let conn = rusqlite::Connection::open(&a.path).unwrap();
    conn.execute("UPDATE households SET server_state = '{}', fields = '{\"village_code\":\"513431104201\"}' WHERE id = ?1", [&h1])
        .unwrap();
    conn.execute(
        "UPDATE scope_checksums SET sum = sum + 1 WHERE village_code = ?1",
        [VILLAGE],
    )
    .unwrap();
    drop(conn);
    let report = a.collector.sync(&server.transport(), None, None).unwrap();
    assert_eq!(report.repaired_villages, vec![VILLAGE.to_owned()]);
    assert_eq!(
        fields(&a.collector, &h1)["phone"],
        json!("13812345678"),
        "restored from the server"
    );
    assert_eq!(fields(&a.collector, &h2)["phone"], json!("13811112222"));
    assert!(
        a.collector
            .sync(&server.transport(), None, None)
            .unwrap()
            .repaired_villages
            .is_empty()
    );
}

#[test]
fn six_months_offline_with_a_thousand_queued_changes_syncs_with_nothing_lost() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    let server = TestServer::start();
    let token = server.user("coord-a", Role::Coordinator, &[VILLAGE]);
    let dir = tempfile::tempdir().unwrap();
    let days_back = Arc::new(AtomicI64::new(0));
    let clock = {
        let days_back = days_back.clone();
        Arc::new(move || {
            chrono::Utc::now() - chrono::TimeDelta::days(days_back.load(Ordering::SeqCst))
        })
    };
    let a = Collector::open_with_clock(
        &dir.path().join("a.db"),
        &zoufang_core::StoreOptions::default(),
        clock,
    )
    .unwrap();
    a.enroll(&server.transport(), &token, "phone").unwrap();

    // Six months of work without coverage: 200 households with a member, then 600 edits.
    days_back.store(180, Ordering::SeqCst);
    let households: Vec<String> = (0..200).map(|_| new_household(&a)).collect();
    for (i, h) in households.iter().enumerate().take(200) {
        for (field, value) in [
            ("phone", json!(format!("139{:08}", i))),
            ("address", json!(format!("{i}号"))),
            ("supporters_elsewhere", json!(i % 5)),
        ] {
            a.edit_household_field(h, field, value).unwrap();
        }
    }
    assert_eq!(a.sync_status().unwrap().pending_changes, 1000);
    days_back.store(0, Ordering::SeqCst);

    let report = a.sync(&server.transport(), None, None).unwrap();
    assert_eq!(
        (
            report.pushed,
            report.accepted,
            report.conflicts,
            report.rejected
        ),
        (1000, 1000, 0, 0),
        "{report:?}"
    );
    assert_eq!(a.sync_status().unwrap().pending_changes, 0);
    assert_eq!(server.storage.stats().unwrap().households, 200);
    for h in households.iter().step_by(37) {
        let on_server = server
            .storage
            .record(Entity::Household, h)
            .unwrap()
            .unwrap();
        let server_fields: Map<String, Json> = on_server
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect();
        assert_eq!(fields(&a, h), server_fields);
    }
}

#[test]
fn old_clients_revoked_devices_and_bad_bodies_get_clear_errors() {
    use zoufang_core::protocol::messages::{PullRequest, encode};
    use zoufang_core::sync::{HttpRequest, Transport};
    let server = TestServer::start();
    let a = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let t = server.transport();
    let send = |body: Vec<u8>, token: &str| {
        t.send(&HttpRequest {
            method: "POST".into(),
            path: "/v1/pull".into(),
            headers: vec![("Authorization".into(), format!("Bearer {token}"))],
            body,
        })
        .unwrap()
    };
    let error_code = |r: &zoufang_core::sync::HttpResponse| -> String {
        let body: zoufang_core::protocol::messages::ErrorBody =
            serde_json::from_slice(&r.body).unwrap();
        body.error.code
    };
    // No valid token.
    let ok_body = encode(&PullRequest {
        protocol: 1,
        cursors: Default::default(),
        limit: 10,
        page: None,
    })
    .unwrap();
    let r = send(ok_body.clone(), "zfd_nope");
    assert_eq!((r.status, error_code(&r)), (401, "unauthorized".to_owned()));
    // A real token, then the device is revoked.
    let devices = server.storage.devices().unwrap();
    let device_id = devices[0].id.clone();
    a.collector.sync(&server.transport(), None, None).unwrap();
    server
        .storage
        .revoke_device(&device_id, chrono::Utc::now())
        .unwrap();
    let err = a
        .collector
        .sync(&server.transport(), None, None)
        .unwrap_err();
    assert!(
        matches!(&err, zoufang_core::Error::Server { status: 401, .. }),
        "{err:?}"
    );
    // Protocol from the future, and garbage, with a fresh device.
    let b = server.user("coord-b", Role::Coordinator, &[VILLAGE]);
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::open(
        &dir.path().join("b.db"),
        &zoufang_core::StoreOptions::default(),
    )
    .unwrap();
    c.enroll(&t, &b, "b").unwrap();
    assert_eq!(
        c.enroll(&t, &b, "again").unwrap_err().code(),
        "server",
        "an enrolment token works once"
    );
    let token_b = {
        let e = server.user("coord-c", Role::Coordinator, &[VILLAGE]);
        let enrolled = server
            .storage
            .enroll(
                &zoufang_core::protocol::messages::EnrollRequest::new(&e, "raw"),
                zoufang_server::DEVICE_TOKEN_LIFETIME,
                chrono::Utc::now(),
            )
            .unwrap();
        enrolled.device_token
    };
    let future = encode(&PullRequest {
        protocol: 99,
        cursors: Default::default(),
        limit: 10,
        page: None,
    })
    .unwrap();
    let r = send(future, &token_b);
    assert_eq!(
        (r.status, error_code(&r)),
        (426, "protocol_unsupported".to_owned())
    );
    let r = send(b"\x28\xb5\x2f\xfdgarbage".to_vec(), &token_b);
    assert_eq!((r.status, error_code(&r)), (400, "bad_message".to_owned()));
    let r = send(ok_body, &token_b);
    assert_eq!(r.status, 200);
}

/// Makes a phone conflict between two devices and returns (server, a, b, household).
fn conflicted() -> (TestServer, Device, Device, String) {
    let server = TestServer::start();
    let a = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let b = Device::enrolled(&server, "coord-b", Role::Coordinator, &[VILLAGE]);
    let t = server.transport();
    let h = new_household(&a.collector);
    a.collector.sync(&t, None, None).unwrap();
    b.collector.sync(&t, None, None).unwrap();
    a.collector
        .edit_household_field(&h, "phone", json!("13900000001"))
        .unwrap();
    b.collector
        .edit_household_field(&h, "phone", json!("13900000002"))
        .unwrap();
    a.collector.sync(&t, None, None).unwrap();
    b.collector.sync(&t, None, None).unwrap();
    (server, a, b, h)
}

#[test]
fn a_reviewer_resolves_on_the_server_and_coordinators_may_not() {
    use zoufang_core::protocol::messages::{
        ConflictInfo, ConflictStatus, ResolveRequest, decode, encode,
    };
    use zoufang_core::sync::{HttpRequest, Transport};
    let (server, a, b, h) = conflicted();
    let t = server.transport();
    let conflict = b.collector.conflicts().unwrap()[0].clone();
    let token_of = |user: &str, role: Role| {
        let e = server.user(user, role, &[VILLAGE]);
        server
            .storage
            .enroll(
                &zoufang_core::protocol::messages::EnrollRequest::new(&e, "desk"),
                zoufang_server::DEVICE_TOKEN_LIFETIME,
                chrono::Utc::now(),
            )
            .unwrap()
            .device_token
    };
    let resolve = |token: &str| {
        let body = encode(&ResolveRequest {
            protocol: 1,
            value: json!("13900000003"),
        })
        .unwrap();
        t.send(&HttpRequest {
            method: "POST".into(),
            path: format!("/v1/conflicts/{}/resolve", conflict.id),
            headers: vec![("Authorization".into(), format!("Bearer {token}"))],
            body,
        })
        .unwrap()
    };
    let refused = resolve(&token_of("coord-c", Role::Coordinator));
    assert_eq!(refused.status, 403);
    let done = resolve(&token_of("reviewer-1", Role::CountyReviewer));
    assert_eq!(done.status, 200);
    let info: ConflictInfo = decode(&done.body).unwrap();
    assert_eq!(
        (info.status, info.resolved_by.as_deref()),
        (ConflictStatus::Resolved, Some("reviewer-1"))
    );
    a.collector.sync(&t, None, None).unwrap();
    b.collector.sync(&t, None, None).unwrap();
    for d in [&a, &b] {
        assert!(d.collector.conflicts().unwrap().is_empty());
        assert_eq!(fields(&d.collector, &h)["phone"], json!("13900000003"));
    }
}

#[test]
fn edits_from_a_badly_skewed_clock_are_flagged() {
    use std::sync::Arc;
    let server = TestServer::start();
    let t = server.transport();
    let a = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let h = new_household(&a.collector);
    a.collector.sync(&t, None, None).unwrap();
    // A phone whose clock runs three hours fast.
    let token = server.user("coord-b", Role::Coordinator, &[VILLAGE]);
    let dir = tempfile::tempdir().unwrap();
    let fast = Arc::new(|| chrono::Utc::now() + chrono::TimeDelta::hours(3));
    let b = Collector::open_with_clock(
        &dir.path().join("b.db"),
        &zoufang_core::StoreOptions::default(),
        fast,
    )
    .unwrap();
    b.enroll(&t, &token, "fast").unwrap();
    b.sync(&t, None, None).unwrap();
    a.collector
        .edit_household_field(&h, "phone", json!("13900000001"))
        .unwrap();
    b.edit_household_field(&h, "phone", json!("13900000002"))
        .unwrap();
    a.collector.sync(&t, None, None).unwrap();
    let report = b.sync(&t, None, None).unwrap();
    assert!(report.clock_skewed, "{report:?}");
    assert!(
        report.clock_offset_ms.unwrap() < -2 * 3600 * 1000,
        "server time is behind this device"
    );
    assert!(b.sync_status().unwrap().clock_offset_ms.unwrap() < 0);
    let conflict = &b.conflicts().unwrap()[0];
    let flags: Vec<(String, bool)> = conflict
        .values
        .iter()
        .map(|v| (v.user.clone(), v.clock_skewed))
        .collect();
    assert_eq!(
        flags,
        vec![("coord-a".to_owned(), false), ("coord-b".to_owned(), true)]
    );
}

#[test]
fn syncing_while_the_user_keeps_editing_loses_nothing() {
    let server = TestServer::start();
    let a = std::sync::Arc::new(Device::enrolled(
        &server,
        "coord-a",
        Role::Coordinator,
        &[VILLAGE],
    ));
    let households: Vec<String> = (0..20).map(|_| new_household(&a.collector)).collect();
    let editor = {
        let (a, households) = (a.clone(), households.clone());
        std::thread::spawn(move || {
            for round in 0..10 {
                for h in &households {
                    a.collector
                        .edit_household_field(h, "address", json!(format!("{round}组")))
                        .unwrap();
                }
            }
        })
    };
    let t = server.transport();
    let config = zoufang_core::sync::SyncConfig {
        push_batch: 7,
        ..Default::default()
    };
    while !editor.is_finished() {
        a.collector.sync_with(&t, config, None, None).unwrap();
    }
    editor.join().unwrap();
    a.collector.sync(&t, None, None).unwrap();
    assert_eq!(a.collector.sync_status().unwrap().pending_changes, 0);
    for h in &households {
        let on_server = server
            .storage
            .record(Entity::Household, h)
            .unwrap()
            .unwrap();
        assert_eq!(
            on_server.fields["address"].value,
            json!("9组"),
            "the last edit wins on the device and the server"
        );
        assert_eq!(fields(&a.collector, h)["address"], json!("9组"));
    }
    assert!(
        a.collector.conflicts().unwrap().is_empty(),
        "a device's own successive edits never conflict"
    );
}
