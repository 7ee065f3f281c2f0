//! The audit trail end to end (recorded on the device, uploaded with sync, verified by the
//! server, tampering detected), remote wipe, retention purge, and one store per user.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use chrono::Utc;
use serde_json::json;
use zoufang_core::protocol::messages::Role;
use zoufang_core::{Collector, StoreOptions};
use zoufang_tests::{Device, TestServer, routine_visit, signed_routine_visit};

const VILLAGE: &str = "513431104201";

fn household(c: &Collector) -> String {
    zoufang_tests::new_household(c, VILLAGE)
}

fn device_id(server: &TestServer, user: &str) -> String {
    server
        .storage
        .devices()
        .unwrap()
        .into_iter()
        .find(|d| d.user_id == user)
        .unwrap()
        .id
}

#[test]
fn the_audit_trail_is_recorded_uploaded_and_verified() {
    let server = TestServer::start();
    let t = server.transport();
    let phone = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let c = &phone.collector;
    let h = household(c);
    c.household(&h).unwrap();
    c.edit_household_field(&h, "address", json!("三组8号"))
        .unwrap();
    let v = signed_routine_visit(c, &h);
    c.visit(&v).unwrap();
    let report = c.sync(&t, None, None).unwrap();
    assert!(!report.audit_chain_broken);

    let (trail, intact) = c.audit_trail().unwrap();
    assert!(intact);
    let actions: Vec<&str> = trail.iter().map(|e| e.action.as_str()).collect();
    for expected in [
        "sign_in", "create", "view", "edit", "complete", "sign", "sync",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    // Values never enter the trail: the edit names its field only.
    let edit = trail.iter().find(|e| e.action == "edit").unwrap();
    assert_eq!(edit.detail["field"], json!("address"));
    assert!(!serde_json::to_string(&trail).unwrap().contains("三组8号"));

    // The server holds everything but the entry of the sync that carried it, and verifies.
    let held = server
        .storage
        .device_audit(&device_id(&server, "coord-a"))
        .unwrap();
    assert_eq!(held.len(), trail.len() - 1);
    assert_eq!(held[..], trail[..held.len()]);
    assert_eq!(report.audit_uploaded, held.len() as u64);
    assert_eq!(server.storage.verify_audit().unwrap(), Vec::<String>::new());
    c.sync(&t, None, None).unwrap();
    assert_eq!(
        server
            .storage
            .device_audit(&device_id(&server, "coord-a"))
            .unwrap()
            .len(),
        trail.len(),
        "the next sync brings the previous sync's own entry"
    );
}

#[test]
fn a_tampered_trail_is_refused_and_reported() {
    let server = TestServer::start();
    let t = server.transport();
    let phone = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let c = &phone.collector;
    let h = household(c);
    c.sync(&t, None, None).unwrap();
    for field in ["address", "phone", "next_visit_due"] {
        let value = match field {
            "phone" => json!("13900000001"),
            "next_visit_due" => json!("2027-01-01"),
            _ => json!("四组"),
        };
        c.edit_household_field(&h, field, value).unwrap();
    }
    // The store refuses to edit or delete an entry...
    let raw = rusqlite::Connection::open(&phone.path).unwrap();
    assert!(
        raw.execute("DELETE FROM audit_log WHERE action = 'edit'", [])
            .is_err()
    );
    assert!(
        raw.execute(
            "UPDATE audit_log SET detail = '{}' WHERE action = 'edit'",
            []
        )
        .is_err()
    );
    // ...so someone with the file drops the guard and removes one edit that was not uploaded.
    raw.execute_batch("DROP TRIGGER audit_log_append_only_delete")
        .unwrap();
    let n = raw
        .execute(
            "DELETE FROM audit_log WHERE seq = (SELECT min(seq) FROM audit_log WHERE action = 'edit' AND uploaded = 0)",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(raw);
    assert!(
        !c.audit_trail().unwrap().1,
        "the device sees its own chain broken"
    );
    let before = server
        .storage
        .device_audit(&device_id(&server, "coord-a"))
        .unwrap();
    let report = c.sync(&t, None, None).unwrap();
    assert!(report.audit_chain_broken, "{report:?}");
    assert_eq!(report.pushed, 3, "the data still syncs");
    let after = server
        .storage
        .device_audit(&device_id(&server, "coord-a"))
        .unwrap();
    assert_eq!(after, before, "nothing of the broken chain is stored");
    let problems = server.storage.verify_audit().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("refused upload"), "{problems:?}");
}

#[test]
fn a_wiped_device_destroys_its_store_and_says_so_first() {
    let server = TestServer::start();
    let t = server.transport();
    let phone = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let c = &phone.collector;
    let h = household(c);
    routine_visit(c, &h);
    c.sync(&t, None, None).unwrap();
    c.household(&h).unwrap();
    let id = device_id(&server, "coord-a");
    server.storage.request_wipe(&id, Utc::now()).unwrap();

    let err = c.sync(&t, None, None).unwrap_err();
    assert_eq!(err.code(), "device_wiped");
    let left: Vec<_> = std::fs::read_dir(phone.dir.path()).unwrap().collect();
    assert!(left.is_empty(), "every file of the store is gone: {left:?}");
    assert!(
        c.household(&h).is_err(),
        "the handle no longer reaches any data"
    );
    // The wipe's last words reached the server, whose own trail records the order and the end.
    let held = server.storage.device_audit(&id).unwrap();
    assert_eq!(held.last().unwrap().action, "wipe");
    assert_eq!(held.iter().filter(|e| e.action == "view").count(), 1);
    assert_eq!(server.storage.verify_audit().unwrap(), Vec::<String>::new());
    assert!(
        server
            .storage
            .devices()
            .unwrap()
            .iter()
            .all(|d| d.id != id || d.revoked_at.is_some())
    );
}

#[test]
fn synced_visits_leave_the_phone_after_the_retention_period() {
    let server = TestServer::start();
    let t = server.transport();
    let calendar = zoufang_tests::Calendar::default();
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::open_with_clock(
        &dir.path().join("p.db"),
        &StoreOptions::default(),
        calendar.clock(),
    )
    .unwrap();
    c.enroll(
        &t,
        &server.user("coord-a", Role::Coordinator, &[VILLAGE]),
        "p",
    )
    .unwrap();
    let h = household(&c);
    let synced = routine_visit(&c, &h);
    c.sync(&t, None, None).unwrap();
    let unsynced = routine_visit(&c, &h);
    let draft = c.start_visit(Some(&h), "routine").unwrap().id;

    calendar.set_day(100);
    assert_eq!(
        c.purge_synced_visits(std::time::Duration::from_secs(90 * 86_400))
            .unwrap(),
        1
    );
    assert_eq!(c.visit(&synced).unwrap_err().code(), "not_found");
    assert!(
        c.visit(&unsynced).is_ok() && c.visit(&draft).is_ok(),
        "pending work stays"
    );
    assert!(c.household(&h).is_ok(), "households in scope stay");
    // The server still has it; a later sync does not bring it back.
    c.sync(&t, None, None).unwrap();
    assert_eq!(c.visit(&synced).unwrap_err().code(), "not_found");
    assert_eq!(server.storage.stats().unwrap().visits, 2);
    let (trail, intact) = c.audit_trail().unwrap();
    assert!(
        intact
            && trail
                .iter()
                .any(|e| e.action == "purge" && e.detail["visits"] == json!(1))
    );
    // The visit that was pending is acknowledged now, and old: it goes too; the draft never.
    let fresh = routine_visit(&c, &h);
    c.sync(&t, None, None).unwrap();
    assert_eq!(
        c.purge_synced_visits(std::time::Duration::from_secs(90 * 86_400))
            .unwrap(),
        1
    );
    assert_eq!(c.visit(&unsynced).unwrap_err().code(), "not_found");
    assert!(c.visit(&fresh).is_ok(), "a visit within the period stays");
    assert!(c.visit(&draft).is_ok());
}

#[test]
fn each_user_has_their_own_store() {
    let dir = tempfile::tempdir().unwrap();
    let a = Collector::open(&dir.path().join("a.db"), &StoreOptions::default()).unwrap();
    a.sign_in("coord-a").unwrap();
    a.sign_in("coord-a").unwrap();
    assert_eq!(a.sign_in("coord-b").unwrap_err().code(), "wrong_user");
    assert_eq!(a.current_user().as_deref(), Some("coord-a"));
    let b = Collector::open(&dir.path().join("b.db"), &StoreOptions::default()).unwrap();
    b.sign_in("coord-b").unwrap();
}

/// A proxy on the way answering 410 is not the server's wipe order: nothing is destroyed.
#[test]
fn a_bare_410_from_a_proxy_wipes_nothing() {
    use zoufang_core::sync::{HttpRequest, HttpResponse, Transport, TransportError};
    struct Gone;
    impl Transport for Gone {
        fn send(&self, _: &HttpRequest) -> Result<HttpResponse, TransportError> {
            Ok(HttpResponse {
                status: 410,
                body: b"<html>Gone</html>".to_vec(),
            })
        }
    }
    let server = TestServer::start();
    let phone = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let h = household(&phone.collector);
    let err = phone.collector.sync(&Gone, None, None).unwrap_err();
    assert_ne!(err.code(), "device_wiped");
    assert!(phone.path.exists());
    assert!(phone.collector.household(&h).is_ok());
}
