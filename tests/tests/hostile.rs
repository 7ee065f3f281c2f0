//! The server's doors under hostile requests: each is refused with the right status and stable
//! code, and nothing on the server changes (its statistics, its change feed and the records).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use chrono::Utc;
use parking_lot::Mutex;
use serde_json::{Map, Value as Json, json};
use zoufang_core::protocol::messages::{
    self, Change, ChangeOp, Entity, ErrorBody, PROTOCOL_VERSION, PullRequest, PushRequest,
    PushResponse, ResolveRequest, Role, SnapshotRequest, UserInfo,
};
use zoufang_core::protocol::stream::decode_stream;
use zoufang_core::records::NewHousehold;
use zoufang_core::sync::{HttpRequest, HttpResponse, ReqwestTransport, Transport, TransportError};
use zoufang_core::{Collector, StoreOptions};
use zoufang_server::{
    AppState, BackgroundServer, DEVICE_TOKEN_LIFETIME, DeviceAuth, RateLimits, Storage,
};
use zoufang_tests::Calendar;

const VILLAGE: &str = "513431104201";
const OTHER_VILLAGE: &str = "513431104202";

/// A server whose clock can be moved forward (token expiry).
struct Server {
    storage: Arc<dyn Storage>,
    calendar: Calendar,
    http: BackgroundServer,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(limits: RateLimits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = zoufang_tests::open_storage(dir.path());
        zoufang_server::publish_defaults(storage.as_ref()).unwrap();
        let calendar = Calendar::default();
        let state = AppState {
            clock: calendar.clock(),
            limits: Arc::new(limits),
            ..AppState::new(storage.clone())
        };
        let http = BackgroundServer::start(state, "127.0.0.1:0").unwrap();
        Self {
            storage,
            calendar,
            http,
            _dir: dir,
        }
    }

    fn enrolment_token(&self, user: &str, role: Role, area: &str) -> String {
        let info = UserInfo {
            id: user.into(),
            role,
            areas: vec![area.into()],
        };
        let _ = self.storage.create_user(&info, Utc::now());
        self.storage
            .issue_enrollment(user, std::time::Duration::from_secs(3600), Utc::now())
            .unwrap()
    }

    fn transport(&self) -> ReqwestTransport {
        ReqwestTransport::new(&self.http.url).unwrap()
    }

    /// Everything a hostile request could have changed.
    fn state(&self) -> String {
        let stats = self.storage.stats().unwrap();
        let auditor = DeviceAuth::new(
            "audit",
            UserInfo {
                id: "auditor".into(),
                role: Role::CountyReviewer,
                areas: vec!["5134".into()],
            },
        );
        let records: Vec<String> = [VILLAGE, OTHER_VILLAGE]
            .iter()
            .map(|v| {
                let s = self.storage.snapshot(&auditor, v, Utc::now()).unwrap();
                format!("{:?} {:?} {}", s.records, s.conflicts, s.checksum)
            })
            .collect();
        format!("{stats:?} {records:?}")
    }
}

/// Records every request a device sends (to replay one later).
struct Recorder {
    inner: ReqwestTransport,
    sent: Mutex<Vec<HttpRequest>>,
}

impl Transport for Recorder {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        self.sent.lock().push(request.clone());
        self.inner.send(request)
    }
}

fn obj(v: Json) -> Map<String, Json> {
    v.as_object().cloned().unwrap()
}

fn phone(village: &str, collector: &Collector, server: &Server, user: &str) -> String {
    collector
        .enroll(
            &server.transport(),
            &server.enrolment_token(user, Role::Coordinator, village),
            user,
        )
        .unwrap();
    collector.sign_in(user).unwrap();
    collector
        .add_household(NewHousehold {
            village_code: village.into(),
            fields: obj(
                json!({"phone": "13812345678", "urban_rural": "rural", "address": "三组", "next_visit_due": "2026-12-01"}),
            ),
            members: vec![],
        })
        .unwrap()
}

fn post(t: &dyn Transport, path: &str, token: &str, body: Vec<u8>) -> HttpResponse {
    t.send(&HttpRequest {
        method: "POST".into(),
        path: path.into(),
        headers: vec![("Authorization".into(), format!("Bearer {token}"))],
        body,
    })
    .unwrap()
}

fn code(r: &HttpResponse) -> (u16, String) {
    let body: ErrorBody = serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| panic!("an error body, status {}", r.status));
    (r.status, body.error.code)
}

fn bearer(request: &HttpRequest) -> String {
    request
        .headers
        .iter()
        .find(|(k, _)| k == "Authorization")
        .and_then(|(_, v)| v.strip_prefix("Bearer "))
        .unwrap()
        .to_owned()
}

fn push_body(device_id: &str, changes: Vec<ChangeOp>) -> Vec<u8> {
    messages::encode(&PushRequest {
        protocol: PROTOCOL_VERSION,
        device_id: device_id.into(),
        device_time: Utc::now().to_rfc3339(),
        changes: changes
            .into_iter()
            .enumerate()
            .map(|(i, op)| Change {
                seq: 10_000 + i as u64,
                hlc: String::new(),
                device_time: Utc::now().to_rfc3339(),
                op,
            })
            .collect(),
        audit: None,
        held: Vec::new(),
    })
    .unwrap()
}

#[test]
fn hostile_requests_are_refused_and_change_nothing() {
    let server = Server::start(RateLimits::default());
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Collector::open(&dirs.0.path().join("a.db"), &StoreOptions::default()).unwrap();
    let b = Collector::open(&dirs.1.path().join("b.db"), &StoreOptions::default()).unwrap();
    let recorder = Recorder {
        inner: server.transport(),
        sent: Mutex::new(Vec::new()),
    };
    let _ours = phone(VILLAGE, &a, &server, "coord-a");
    let theirs = phone(OTHER_VILLAGE, &b, &server, "coord-b");
    a.sync(&recorder, None, None).unwrap();
    b.sync(&server.transport(), None, None).unwrap();
    let a_push = recorder
        .sent
        .lock()
        .iter()
        .find(|r| r.path == "/v1/push/stream")
        .cloned()
        .expect("A pushed its household");
    let a_token = bearer(&a_push);
    let a_device = server
        .storage
        .devices()
        .unwrap()
        .into_iter()
        .find(|d| d.user_id == "coord-a")
        .unwrap()
        .id;
    let b_token = {
        let t = server.enrolment_token("coord-b2", Role::Coordinator, OTHER_VILLAGE);
        server
            .storage
            .enroll(
                &messages::EnrollRequest::new(&t, "b2"),
                DEVICE_TOKEN_LIFETIME,
                Utc::now(),
            )
            .unwrap()
            .device_token
    };
    let t = server.transport();
    let before = server.state();

    // Another village's households, read: a snapshot is refused, a pull never carries them.
    let snapshot = messages::encode(&SnapshotRequest {
        protocol: PROTOCOL_VERSION,
        village_code: OTHER_VILLAGE.into(),
    })
    .unwrap();
    assert_eq!(
        code(&post(&t, "/v1/snapshot", &a_token, snapshot)),
        (403, "forbidden".into())
    );
    let pull = messages::encode(&PullRequest {
        protocol: PROTOCOL_VERSION,
        cursors: [(OTHER_VILLAGE.to_owned(), 0), ("5134".to_owned(), 0)].into(),
        limit: 1000,
        page: None,
    })
    .unwrap();
    let r = post(&t, "/v1/pull", &a_token, pull);
    assert_eq!(r.status, 200);
    let text = String::from_utf8(zstd::decode_all(&r.body[..]).unwrap()).unwrap();
    assert!(
        !text.contains(&theirs),
        "another village's household leaked into a pull"
    );

    // ...and written: creating there and editing theirs are both rejected, change by change.
    let forged = push_body(
        &a_device,
        vec![
            ChangeOp::CreateHousehold {
                id: uuid::Uuid::now_v7().to_string(),
                village_code: OTHER_VILLAGE.into(),
                fields: obj(json!({"urban_rural": "rural"})),
            },
            ChangeOp::SetField {
                entity: Entity::Household,
                id: theirs.clone(),
                field: "phone".into(),
                value: json!("13900000009"),
                base: 0,
                resolves: None,
                after: None,
            },
        ],
    );
    let r = post(&t, "/v1/push", &a_token, forged);
    assert_eq!(r.status, 200);
    let acks: PushResponse = messages::decode(&r.body).unwrap();
    assert!(
        acks.acks
            .iter()
            .all(|a| a.outcome == messages::Outcome::Rejected),
        "{acks:?}"
    );
    assert_eq!(
        server.state(),
        before,
        "rejected changes leave nothing behind"
    );

    // A coordinator acting as a reviewer.
    let resolve = messages::encode(&ResolveRequest {
        protocol: PROTOCOL_VERSION,
        value: json!("13900000001"),
    })
    .unwrap();
    let r = post(&t, "/v1/conflicts/any/resolve", &a_token, resolve);
    assert_eq!(code(&r), (403, "forbidden".into()));

    // A push captured from A, replayed with another device's token; and by A itself.
    let replay = post(&t, "/v1/push/stream", &b_token, a_push.body.clone());
    assert_eq!(code(&replay), (403, "forbidden".into()));
    let again = post(&t, "/v1/push/stream", &a_token, a_push.body.clone());
    assert_eq!(again.status, 200, "A's own retry is answered from its acks");
    assert_eq!(server.state(), before, "nothing applied twice");
    // What the server recorded for A's changes is A's to ask: another device naming A is
    // refused, and asking in its own name about A's change numbers learns nothing.
    let (messages_sent, _) = decode_stream::<PushRequest>(&a_push.body);
    let seqs: Vec<u64> = messages_sent
        .iter()
        .flat_map(|m| m.changes.iter().map(|c| c.seq))
        .collect();
    let ask = |device: &str| {
        messages::encode(&messages::AcksRequest {
            protocol: PROTOCOL_VERSION,
            device_id: device.to_owned(),
            seqs: seqs.clone(),
        })
        .unwrap()
    };
    let as_a = post(&t, "/v1/push/acks", &b_token, ask(&a_device));
    assert_eq!(code(&as_a), (403, "forbidden".into()));
    let b_device = server
        .storage
        .devices()
        .unwrap()
        .into_iter()
        .find(|d| d.user_id == "coord-b2")
        .unwrap()
        .id;
    let own = post(&t, "/v1/push/acks", &b_token, ask(&b_device));
    assert_eq!(own.status, 200);
    let own: PushResponse = messages::decode(&own.body).unwrap();
    assert!(
        own.acks.is_empty(),
        "another device's acknowledgements leaked"
    );
    let mine = post(&t, "/v1/push/acks", &a_token, ask(&a_device));
    let mine: PushResponse = messages::decode(&mine.body).unwrap();
    assert_eq!(mine.acks.len(), seqs.len(), "A's own answers, all recorded");

    // Oversized, malformed and future bodies.
    let huge = vec![0u8; zoufang_server::MAX_BODY_BYTES + 1];
    let r = post(&t, "/v1/push", &a_token, huge);
    assert_eq!(r.status, 413);
    let bomb = zstd::encode_all(&vec![b' '; messages::MAX_MESSAGE_BYTES + 1][..], 19).unwrap();
    assert!(
        bomb.len() < 64 * 1024,
        "a small body that inflates past the limit"
    );
    assert_eq!(
        code(&post(&t, "/v1/push", &a_token, bomb)),
        (400, "bad_message".into())
    );
    for garbage in [
        b"\x28\xb5\x2f\xfdnot zstd".to_vec(),
        zstd::encode_all(&b"not json"[..], 3).unwrap(),
        zstd::encode_all(&br#"{"protocol": 1, "changes": "no"}"#[..], 3).unwrap(),
        br#"{"protocol": 1}"#.to_vec(),
        Vec::new(),
    ] {
        assert_eq!(
            code(&post(&t, "/v1/push", &a_token, garbage)),
            (400, "bad_message".into())
        );
    }
    let future = zstd::encode_all(&br#"{"protocol": 99, "device_id": "x"}"#[..], 3).unwrap();
    assert_eq!(
        code(&post(&t, "/v1/push", &a_token, future)),
        (426, "protocol_unsupported".into())
    );
    assert_eq!(server.state(), before);

    // Tokens: none, unknown, revoked, expired.
    let pull = || {
        messages::encode(&PullRequest {
            protocol: PROTOCOL_VERSION,
            cursors: Default::default(),
            limit: 10,
            page: None,
        })
        .unwrap()
    };
    let r = t
        .send(&HttpRequest {
            method: "POST".into(),
            path: "/v1/pull".into(),
            headers: vec![],
            body: pull(),
        })
        .unwrap();
    assert_eq!(code(&r), (401, "unauthorized".into()));
    assert_eq!(
        code(&post(&t, "/v1/pull", "zfd_guess", pull())),
        (401, "unauthorized".into())
    );
    server.calendar.set_day(400);
    assert_eq!(
        code(&post(&t, "/v1/pull", &a_token, pull())),
        (401, "token_expired".into())
    );
    server.calendar.set_day(0);
    assert_eq!(post(&t, "/v1/pull", &a_token, pull()).status, 200);
    assert_eq!(server.state(), before);
    server.storage.revoke_device(&a_device, Utc::now()).unwrap();
    assert_eq!(
        code(&post(&t, "/v1/pull", &a_token, pull())),
        (401, "unauthorized".into())
    );
}

#[test]
fn enrolment_and_failed_authentication_are_rate_limited_per_address() {
    let server = Server::start(RateLimits::per_minute(3, 4));
    let t = server.transport();
    let enroll = |token: &str| {
        let body = messages::encode(&messages::EnrollRequest::new(token, "guess")).unwrap();
        t.send(&HttpRequest {
            method: "POST".into(),
            path: "/v1/enroll".into(),
            headers: vec![],
            body,
        })
        .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(code(&enroll("zfe_guess")).0, 401);
    }
    assert_eq!(code(&enroll("zfe_guess")), (429, "rate_limited".into()));
    let head = raw_post(&server.http.addr, "/v1/enroll");
    let retry = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after: ")
                .map(str::to_owned)
        })
        .map(|v| v.trim().parse::<u64>().unwrap());
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(matches!(retry, Some(s) if (1..=60).contains(&s)), "{head}");
    // Even a valid enrolment token waits: the door, not the token, is limited.
    let real = server.enrolment_token("coord-a", Role::Coordinator, VILLAGE);
    assert_eq!(code(&enroll(&real)).0, 429);

    // Failed authentications; a device with a valid token is never slowed down.
    let valid = {
        let t2 = server.enrolment_token("coord-b", Role::Coordinator, VILLAGE);
        server
            .storage
            .enroll(
                &messages::EnrollRequest::new(&t2, "b"),
                DEVICE_TOKEN_LIFETIME,
                Utc::now(),
            )
            .unwrap()
            .device_token
    };
    let pull = messages::encode(&PullRequest {
        protocol: PROTOCOL_VERSION,
        cursors: Default::default(),
        limit: 10,
        page: None,
    })
    .unwrap();
    for _ in 0..4 {
        assert_eq!(
            code(&post(&t, "/v1/pull", "zfd_guess", pull.clone())).0,
            401
        );
    }
    assert_eq!(
        code(&post(&t, "/v1/pull", "zfd_guess", pull.clone())),
        (429, "rate_limited".into())
    );
    for _ in 0..10 {
        assert_eq!(post(&t, "/v1/pull", &valid, pull.clone()).status, 200);
    }
}

/// The status line and headers of a bare HTTP/1.1 POST with an empty body.
fn raw_post(addr: &std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A push that names as held (`PushRequest::held`) a change the server never received is
/// refused before anything is applied: a gap in what a device pushed would let a later change
/// (a visit) land without the one it depends on (its household). Naming what did arrive gets
/// its recorded answer back, first.
#[test]
fn a_push_naming_as_held_what_never_arrived_applies_nothing() {
    let server = Server::start(RateLimits::default());
    let dir = tempfile::tempdir().unwrap();
    let a = Collector::open(&dir.path().join("a.db"), &StoreOptions::default()).unwrap();
    let recorder = Recorder {
        inner: server.transport(),
        sent: Mutex::new(Vec::new()),
    };
    phone(VILLAGE, &a, &server, "coord-a");
    a.sync(&recorder, None, None).unwrap();
    let (token, pushed) = {
        let sent = recorder.sent.lock();
        let push = sent.iter().find(|r| r.path == "/v1/push/stream").unwrap();
        let (messages, _) = decode_stream::<PushRequest>(&push.body);
        (bearer(push), messages[0].changes[0].seq)
    };
    let device = server.storage.devices().unwrap()[0].id.clone();
    let household = |held: Vec<u64>| {
        let mut body: PushRequest = messages::decode(&push_body(
            &device,
            vec![ChangeOp::CreateHousehold {
                id: uuid::Uuid::now_v7().to_string(),
                village_code: VILLAGE.into(),
                fields: obj(json!({"urban_rural": "rural", "address": "五组"})),
            }],
        ))
        .unwrap();
        body.held = held;
        messages::encode(&body).unwrap()
    };
    let t = server.transport();
    let before = server.state();
    let r = post(&t, "/v1/push", &token, household(vec![pushed, 9_999]));
    assert_eq!(code(&r), (409, "not_held".into()));
    assert_eq!(server.state(), before, "nothing applied after a gap");

    let r = post(&t, "/v1/push", &token, household(vec![pushed]));
    assert_eq!(r.status, 200);
    let answer: PushResponse = messages::decode(&r.body).unwrap();
    let answered: Vec<(u64, messages::Outcome)> =
        answer.acks.iter().map(|a| (a.seq, a.outcome)).collect();
    assert_eq!(
        answered,
        [
            (pushed, messages::Outcome::Applied),
            (10_000, messages::Outcome::Applied)
        ]
    );
    assert_ne!(server.state(), before);
}
