//! The server over TLS (rustls): a device enrols and syncs over https when it trusts the
//! server's certificate, and refuses to talk when it does not, or when it is sent plain HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::Utc;
use zoufang_core::protocol::messages::{Role, UserInfo};
use zoufang_core::sync::ReqwestTransport;
use zoufang_core::{Collector, StoreOptions};
use zoufang_server::{AppState, BackgroundServer, SqliteStorage, Storage, TlsFiles};

#[test]
fn a_device_syncs_over_tls_only_with_a_trusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let tls = TlsFiles {
        certificate_chain: dir.path().join("server.pem"),
        private_key: dir.path().join("server.key"),
    };
    std::fs::write(&tls.certificate_chain, certified.cert.pem()).unwrap();
    std::fs::write(&tls.private_key, certified.signing_key.serialize_pem()).unwrap();
    let storage =
        Arc::new(SqliteStorage::open(dir.path(), &zoufang_tests::test_at_rest()).unwrap());
    zoufang_server::publish_defaults(storage.as_ref()).unwrap();
    let server =
        BackgroundServer::start_tls(AppState::new(storage.clone()), "127.0.0.1:0", tls).unwrap();
    assert!(server.url.starts_with("https://"));
    let user = UserInfo {
        id: "coord-a".into(),
        role: Role::Coordinator,
        areas: vec!["513431104201".into()],
    };
    storage.create_user(&user, Utc::now()).unwrap();
    let token = storage
        .issue_enrollment("coord-a", std::time::Duration::from_secs(600), Utc::now())
        .unwrap();
    let phone = Collector::open(&dir.path().join("phone.db"), &StoreOptions::default()).unwrap();

    // Not trusted (public roots only), and plain HTTP to the TLS port: both are transport
    // errors, and the enrolment token is not spent.
    let untrusted = ReqwestTransport::new(&server.url).unwrap();
    assert_eq!(
        phone
            .enroll(&untrusted, &token, "phone")
            .unwrap_err()
            .code(),
        "transport"
    );
    let plain = ReqwestTransport::new(&server.url.replace("https://", "http://")).unwrap();
    assert_eq!(
        phone.enroll(&plain, &token, "phone").unwrap_err().code(),
        "transport"
    );

    let trusted =
        ReqwestTransport::with_root_certificate(&server.url, certified.cert.pem().as_bytes())
            .unwrap();
    phone.enroll(&trusted, &token, "phone").unwrap();
    let report = phone.sync(&trusted, None, None).unwrap();
    assert!(report.round_trips >= 2, "{report:?}");
    assert!(
        ReqwestTransport::with_root_certificate(&server.url, b"not a certificate").is_err(),
        "a bad root is an error, not a silently ignored setting"
    );
}
