//! A pilot county moves up: its SQLite server is copied into PostgreSQL (`zoufang admin
//! copy-to-postgres`), and its enrolled phones go on syncing with the new server without
//! enrolling again; a new phone gets everything. Built only with the `postgres` feature (the
//! suites' PostgreSQL pass), since it needs a cluster by its nature.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use zoufang_core::protocol::messages::{Entity, Role};
use zoufang_core::sync::ReqwestTransport;
use zoufang_server::{AppState, BackgroundServer, PgStorage, SqliteStorage, Storage};
use zoufang_tests::{POSTGRES_ENV, fresh_postgres_database, new_household, routine_visit};

const VILLAGE: &str = "513431104201";

#[test]
fn a_sqlite_server_moves_into_postgres_and_its_phones_sync_on() {
    let admin =
        std::env::var(POSTGRES_ENV).expect("the PostgreSQL pass sets ZOUFANG_TEST_POSTGRES");
    // The pilot, on SQLite.
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteStorage::open(dir.path(), &zoufang_tests::test_at_rest()).unwrap());
    zoufang_server::publish_defaults(sqlite.as_ref()).unwrap();
    let pilot = BackgroundServer::start(AppState::new(sqlite.clone()), "127.0.0.1:0").unwrap();
    let token = {
        let user = zoufang_core::protocol::messages::UserInfo {
            id: "coord-1".into(),
            role: Role::Coordinator,
            areas: vec![VILLAGE.into()],
        };
        sqlite.create_user(&user, chrono::Utc::now()).unwrap();
        sqlite
            .issue_enrollment(
                "coord-1",
                std::time::Duration::from_secs(600),
                chrono::Utc::now(),
            )
            .unwrap()
    };
    let phone_dir = tempfile::tempdir().unwrap();
    let phone =
        zoufang_core::Collector::open(&phone_dir.path().join("p.db"), &Default::default()).unwrap();
    phone
        .enroll(
            &ReqwestTransport::new(&pilot.url).unwrap(),
            &token,
            "coord-1-phone",
        )
        .unwrap();
    let h = new_household(&phone, VILLAGE);
    routine_visit(&phone, &h);
    phone
        .sync(&ReqwestTransport::new(&pilot.url).unwrap(), None, None)
        .unwrap();
    let before = sqlite.record(Entity::Household, &h).unwrap().unwrap();
    let stats = sqlite.stats().unwrap();
    drop(pilot);
    drop(sqlite);

    // The move.
    let url = fresh_postgres_database(&admin);
    let pg = Arc::new(PgStorage::open(&url, dir.path(), &zoufang_tests::test_at_rest()).unwrap());
    let report = pg
        .copy_from_sqlite(dir.path(), &zoufang_tests::test_at_rest())
        .unwrap();
    assert!(report.iter().any(|(t, n)| t == "feed" && *n > 0));
    assert_eq!(
        pg.copy_from_sqlite(dir.path(), &zoufang_tests::test_at_rest())
            .unwrap_err()
            .code(),
        "database_not_empty",
        "a second copy is refused"
    );
    assert_eq!(pg.record(Entity::Household, &h).unwrap().unwrap(), before);
    assert_eq!(pg.stats().unwrap(), stats);
    assert!(
        pg.verify_audit().unwrap().is_empty(),
        "the audit chains moved intact"
    );

    // The phone syncs with the PostgreSQL server on its old token; a new phone gets it all.
    let server = BackgroundServer::start(AppState::new(pg.clone()), "127.0.0.1:0").unwrap();
    phone
        .edit_household_field(&h, "phone", serde_json::json!("13900000009"))
        .unwrap();
    let report = phone
        .sync(&ReqwestTransport::new(&server.url).unwrap(), None, None)
        .unwrap();
    assert_eq!((report.pushed, report.rejected), (1, 0));
    let user = zoufang_core::protocol::messages::UserInfo {
        id: "coord-2".into(),
        role: Role::Coordinator,
        areas: vec![VILLAGE.into()],
    };
    pg.create_user(&user, chrono::Utc::now()).unwrap();
    let token = pg
        .issue_enrollment(
            "coord-2",
            std::time::Duration::from_secs(600),
            chrono::Utc::now(),
        )
        .unwrap();
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh =
        zoufang_core::Collector::open(&fresh_dir.path().join("f.db"), &Default::default()).unwrap();
    let t = ReqwestTransport::new(&server.url).unwrap();
    fresh.enroll(&t, &token, "coord-2-phone").unwrap();
    fresh.sync(&t, None, None).unwrap();
    assert_eq!(
        fresh.household(&h).unwrap().fields["phone"],
        serde_json::json!("13900000009")
    );
}
