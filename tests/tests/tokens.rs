//! Tokens that outlive a season offline: each sync renews the device token (sliding expiry);
//! a store whose token expired while it held unsent work is enrolled again as the successor
//! of its former device, and its outbox, audit chain and uploads go on where they were —
//! nothing lost, nothing applied twice. Two coordinators of one village and its reviewer, with
//! the server's and the phones' clocks moved by months.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use zoufang_core::protocol::audit::HashAlgorithm;
use zoufang_core::protocol::messages::{Entity, Role, UserInfo};
use zoufang_core::sync::LocalState;
use zoufang_core::{Collector, StoreOptions};
use zoufang_server::DeviceAuth;
use zoufang_tests::{
    Calendar, FlakyTransport, TestServer, new_household, noisy_jpeg, routine_visit,
    survey_with_photo,
};

const VILLAGE: &str = "513431104201";

fn phone(calendar: &Calendar) -> (Collector, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::open_with_clock(
        &dir.path().join("phone.db"),
        &StoreOptions::default(),
        calendar.clock(),
    )
    .unwrap();
    (c, dir)
}

fn enrolment_code(server: &TestServer, user: &str) -> String {
    server.user(user, Role::Coordinator, &[VILLAGE])
}

fn reviewer() -> DeviceAuth {
    DeviceAuth::new(
        "review-desk",
        UserInfo {
            id: "township-reviewer".into(),
            role: Role::TownshipStaff,
            areas: vec![VILLAGE.into()],
        },
    )
}

fn expiry(c: &Collector) -> DateTime<Utc> {
    let at = c
        .sync_status()
        .unwrap()
        .token_expires_at
        .expect("an expiry");
    DateTime::parse_from_rfc3339(&at).unwrap().to_utc()
}

/// Days from `calendar`'s now to `at`, rounded.
fn days_left(calendar: &Calendar, at: DateTime<Utc>) -> i64 {
    (at - calendar.now() + TimeDelta::hours(12)).num_days()
}

#[test]
fn each_sync_renews_the_token_so_a_phone_in_use_never_meets_the_first_expiry() {
    let calendar = Calendar::default();
    let server = TestServer::start_on_calendar(&calendar);
    let t = server.transport();
    let (a, _dir) = phone(&calendar);
    a.enroll(&t, &enrolment_code(&server, "coord-a"), "a")
        .unwrap();
    assert_eq!(days_left(&calendar, expiry(&a)), 180);

    calendar.set_day(100);
    let h = new_household(&a, VILLAGE);
    a.sync(&t, None, None).unwrap();
    assert_eq!(days_left(&calendar, expiry(&a)), 180, "renewed at the sync");

    // Day 250: past the first expiry, still syncing.
    calendar.set_day(250);
    routine_visit(&a, &h);
    let report = a.sync(&t, None, None).unwrap();
    assert_eq!(report.rejected, 0);
    assert_eq!(a.sync_status().unwrap().pending_changes, 0);
    let listed = server.storage.devices().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].token_expires_at,
        a.sync_status().unwrap().token_expires_at.unwrap(),
        "the device knows the expiry the server holds"
    );

    // Silent for longer than the lifetime: refused with the code an app shows a screen for.
    calendar.set_day(250 + 181);
    let err = a.sync(&t, None, None).unwrap_err();
    assert_eq!(err.code(), "token_expired", "{err}");
}

#[test]
fn a_phone_offline_for_200_days_enrols_again_and_delivers_everything_once() {
    let calendar = Calendar::default();
    let server = TestServer::start_on_calendar(&calendar);
    let t = server.transport();
    let (a, _a_dir) = phone(&calendar);
    let (b, _b_dir) = phone(&calendar);
    a.enroll(&t, &enrolment_code(&server, "coord-a"), "a-phone")
        .unwrap();
    b.enroll(&t, &enrolment_code(&server, "coord-b"), "b-phone")
        .unwrap();
    let first_device = a.sync_status().unwrap().device_id.unwrap();
    let (_, first_token) = a.credentials().unwrap().unwrap();

    // Before leaving for the mountains the coordinator syncs on a weak signal: the pushes
    // reach the server, their answers are lost (request 1 is the catalog, then every push),
    // so the phone still holds those changes as unsent.
    let h = new_household(&a, VILLAGE);
    a.edit_household_field(&h, "phone", json!("13900000001"))
        .unwrap();
    let mut flaky = FlakyTransport::new(server.transport());
    flaky.lose_answer = true;
    *flaky.fail.lock() = (2..200).collect();
    let mut once = zoufang_core::sync::SyncConfig::default();
    once.retry.attempts = 1;
    assert_eq!(
        a.sync_with(&flaky, once, None, None).unwrap_err().code(),
        "transport"
    );
    let lost = server.storage.stats().unwrap();
    assert_eq!(lost.households, 1, "the lost push was applied");
    let phone_version = |s: &TestServer| {
        s.storage
            .record(Entity::Household, &h)
            .unwrap()
            .unwrap()
            .fields["phone"]
            .clone()
    };
    let version_at_lost_push = phone_version(&server).version;

    // A season offline: a visit, a newly found family with a house photo, a correction.
    calendar.set_day(30);
    let routine = routine_visit(&a, &h);
    let (survey, photo) =
        survey_with_photo(&a, VILLAGE, &noisy_jpeg(1200, 900, 3), &Default::default());
    // Meanwhile the colleague in the township seat syncs every few weeks.
    calendar.set_day(100);
    b.sync(&t, None, None).unwrap();
    calendar.set_day(150);
    a.edit_household_field(&h, "phone", json!("13987654321"))
        .unwrap();

    // Day 200: the token expired (180 days after the last contact).
    calendar.set_day(200);
    let pending = a.sync_status().unwrap().pending_changes;
    let err = a.sync(&t, None, None).unwrap_err();
    assert_eq!(err.code(), "token_expired", "{err}");
    assert_eq!(a.sync_status().unwrap().pending_changes, pending, "kept");

    // The administrator issues a new code; the coordinator types it on the same phone.
    let code = server
        .storage
        .issue_enrollment(
            "coord-a",
            std::time::Duration::from_secs(3600),
            calendar.now(),
        )
        .unwrap();
    assert_eq!(a.enroll(&t, &code, "a-phone").unwrap().id, "coord-a");
    let successor = a.sync_status().unwrap().device_id.unwrap();
    assert_ne!(successor, first_device);
    assert_eq!(days_left(&calendar, expiry(&a)), 180);
    assert_eq!(
        a.sync_status().unwrap().pending_changes,
        pending,
        "enrolling again keeps the outbox"
    );

    let report = a.sync(&t, None, None).unwrap();
    assert_eq!((report.rejected, report.conflicts), (0, 0), "{report:?}");
    assert_eq!(
        report.attachments_uploaded,
        1 + 3,
        "the photo and the signatures"
    );
    let status = a.sync_status().unwrap();
    assert_eq!((status.pending_changes, status.pending_attachments), (0, 0));

    // Nothing applied twice: the changes of the lost push got their first answers (applied
    // again, the creation would be refused as `id_in_use` and the first correction would
    // conflict with the second), and only the correction made offline moved the phone number.
    let after = server.storage.stats().unwrap();
    assert_eq!(after.visits, 2);
    assert_eq!(after.households, lost.households + 1, "the new family");
    assert_eq!(after.visits_awaiting_attachments, 0);
    let phone_now = phone_version(&server);
    assert_eq!(phone_now.value, json!("13987654321"));
    assert!(phone_now.version > version_at_lost_push);
    assert!(server.storage.conflicts(&reviewer()).unwrap().is_empty());

    // The server links the two devices; the former token no longer works.
    let devices = server.storage.devices().unwrap();
    let old = devices.iter().find(|d| d.id == first_device).unwrap();
    let new = devices.iter().find(|d| d.id == successor).unwrap();
    assert_eq!(old.successor_id.as_deref(), Some(successor.as_str()));
    assert_eq!(new.predecessor_id.as_deref(), Some(first_device.as_str()));
    let refused = server.storage.authenticate(&first_token, calendar.now());
    assert_eq!(refused.unwrap_err().code(), "unauthorized");

    // One audit trail across both enrolments, verified whole.
    assert_eq!(server.storage.verify_audit().unwrap(), Vec::<String>::new());
    let trail = server.storage.device_audit(&successor).unwrap();
    assert_eq!(trail, server.storage.device_audit(&first_device).unwrap());
    assert!(trail.iter().any(|e| e.action == "complete"));
    let sign_ins = trail.iter().filter(|e| e.action == "sign_in").count();
    assert!(sign_ins >= 2, "both enrolments are in the one trail");
    assert!(trail.windows(2).all(|w| w[1].seq == w[0].seq + 1));

    // The colleague sees the season's work, the photo included.
    b.sync(&t, None, None).unwrap();
    assert!(b.visit(&routine).is_ok() && b.visit(&survey).is_ok());
    assert_eq!(
        b.household(&h).unwrap().fields["phone"],
        json!("13987654321")
    );
    let bytes = b
        .fetch_attachment_content(&t, HashAlgorithm::Sha256, &photo.content_hash)
        .unwrap();
    assert_eq!(bytes, a.attachment_content(&photo.content_hash).unwrap());
}

#[test]
fn enrolling_again_is_refused_when_the_former_device_may_not_be_succeeded() {
    let calendar = Calendar::default();
    let server = TestServer::start_on_calendar(&calendar);
    let t = server.transport();

    // A code for another user: refused, and the store stays as it was.
    let (a, a_dir) = phone(&calendar);
    a.enroll(&t, &enrolment_code(&server, "coord-a"), "a")
        .unwrap();
    let h = new_household(&a, VILLAGE);
    let before = a.sync_status().unwrap();
    let err = a
        .enroll(&t, &enrolment_code(&server, "coord-b"), "a")
        .unwrap_err();
    assert!(err.to_string().contains("another user"), "{err}");
    let after = a.sync_status().unwrap();
    assert_eq!(
        (after.device_id, after.pending_changes),
        (before.device_id.clone(), before.pending_changes)
    );

    // A copy of the store enrolled again first: the original cannot succeed the same device.
    let copy_dir = tempfile::tempdir().unwrap();
    let copy_path = copy_dir.path().join("copy.db");
    drop(a);
    for suffix in ["", "-wal"] {
        let from = a_dir.path().join(format!("phone.db{suffix}"));
        if from.exists() {
            std::fs::copy(from, copy_dir.path().join(format!("copy.db{suffix}"))).unwrap();
        }
    }
    let a = Collector::open_with_clock(
        &a_dir.path().join("phone.db"),
        &StoreOptions::default(),
        calendar.clock(),
    )
    .unwrap();
    let copy =
        Collector::open_with_clock(&copy_path, &StoreOptions::default(), calendar.clock()).unwrap();
    copy.enroll(&t, &enrolment_code(&server, "coord-a"), "copy")
        .unwrap();
    let err = a
        .enroll(&t, &enrolment_code(&server, "coord-a"), "a")
        .unwrap_err();
    assert!(err.to_string().contains("enrolled again already"), "{err}");
    copy.sync(&t, None, None).unwrap();
    assert!(
        server
            .storage
            .record(Entity::Household, &h)
            .unwrap()
            .is_some()
    );

    // A revoked device: its store cannot come back through a new code.
    let (c, _c_dir) = phone(&calendar);
    c.enroll(&t, &enrolment_code(&server, "coord-c"), "c")
        .unwrap();
    let revoked = c.sync_status().unwrap().device_id.unwrap();
    server
        .storage
        .revoke_device(&revoked, calendar.now())
        .unwrap();
    let err = c
        .enroll(&t, &enrolment_code(&server, "coord-c"), "c")
        .unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
    assert_eq!(c.sync_status().unwrap().device_id.unwrap(), revoked);
}

#[test]
fn a_store_enrolled_with_another_server_enrols_here_as_a_first_device() {
    let calendar = Calendar::default();
    let pilot = TestServer::start_on_calendar(&calendar);
    let province = TestServer::start_on_calendar(&calendar);
    let (a, _dir) = phone(&calendar);
    a.enroll(&pilot.transport(), &enrolment_code(&pilot, "coord-a"), "a")
        .unwrap();
    let pilot_device = a.sync_status().unwrap().device_id.unwrap();
    let h = new_household(&a, VILLAGE);
    // The province's server never knew the pilot's device: no successor, a first enrolment.
    a.enroll(
        &province.transport(),
        &enrolment_code(&province, "coord-a"),
        "a",
    )
    .unwrap();
    let here = province.storage.devices().unwrap();
    assert_eq!(here.len(), 1);
    assert_ne!(here[0].id, pilot_device);
    assert_eq!(here[0].predecessor_id, None);
    a.sync(&province.transport(), None, None).unwrap();
    assert!(
        province
            .storage
            .record(Entity::Household, &h)
            .unwrap()
            .is_some()
    );
}
