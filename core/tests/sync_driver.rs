//! The sync driver around the engine: one sync per store at a time, and cancellation at the
//! next step. The server is a transport function that enrols and then holds the catalog
//! request until the test lets it go.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use zoufang_core::protocol::messages::{self as m, Role, UserInfo};
use zoufang_core::sync::{
    CancelFlag, HttpRequest, HttpResponse, RetryPolicy, SyncConfig, Transport, TransportError,
};
use zoufang_core::{Collector, StoreOptions};

const NOW: &str = "2026-12-01T08:00:00.000Z";

/// Answers enrolment at once; tells the test when a catalog request arrives and waits for
/// its word before answering it.
struct HeldServer {
    arrived: Mutex<Sender<()>>,
    release: Mutex<Receiver<()>>,
    seen: Mutex<Vec<String>>,
}

impl Transport for HeldServer {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        self.seen.lock().unwrap().push(request.path.clone());
        let body = match request.path.as_str() {
            "/v1/enroll" => m::encode(&m::EnrollResponse {
                protocol: m::PROTOCOL_VERSION,
                device_id: "device-1".into(),
                device_token: "token-1".into(),
                token_expires_at: "2027-06-01T00:00:00Z".into(),
                user: UserInfo {
                    id: "coordinator-1".into(),
                    role: Role::Coordinator,
                    areas: vec!["513431104201".into()],
                },
                server_time: NOW.into(),
                predecessor: None,
            }),
            "/v1/catalog" => {
                self.arrived.lock().unwrap().send(()).unwrap();
                self.release.lock().unwrap().recv().unwrap();
                m::encode(&m::CatalogResponse {
                    protocol: m::PROTOCOL_VERSION,
                    server_time: NOW.into(),
                    forms: Vec::new(),
                    code_lists: Vec::new(),
                    audit: None,
                    user: None,
                    visit_frequencies: Default::default(),
                    possession_nonce: None,
                    token_expires_at: None,
                    form_publications: Vec::new(),
                    compact_audit: false,
                    streams: false,
                    answers_as_applied: false,
                })
            }
            _ => {
                return Err(TransportError {
                    message: "this test server answers enrolment and the catalog only".into(),
                });
            }
        };
        Ok(HttpResponse {
            status: 200,
            body: body.unwrap(),
        })
    }
}

#[test]
fn a_second_sync_is_refused_and_a_cancelled_one_stops_at_the_next_step() {
    let dir = tempfile::tempdir().unwrap();
    let c =
        Arc::new(Collector::open(&dir.path().join("store.db"), &StoreOptions::default()).unwrap());
    let (arrived_tx, arrived) = channel();
    let (release, release_rx) = channel();
    let server = Arc::new(HeldServer {
        arrived: Mutex::new(arrived_tx),
        release: Mutex::new(release_rx),
        seen: Mutex::new(Vec::new()),
    });
    let user = c.enroll(server.as_ref(), "enrol-token", "phone").unwrap();
    assert_eq!(user.id, "coordinator-1");

    let cancel = Arc::new(CancelFlag::default());
    let first = {
        let (c, server, cancel) = (c.clone(), server.clone(), cancel.clone());
        std::thread::spawn(move || c.sync(server.as_ref(), None, Some(&cancel)))
    };
    arrived.recv().unwrap();
    // While the first sync waits on its catalog answer, a second one on the same store is
    // refused: it would push the same changes again.
    let second = c.sync(server.as_ref(), None, None).unwrap_err();
    assert_eq!(second.code(), "sync_running");
    assert_eq!(
        c.enroll(server.as_ref(), "enrol-token", "phone")
            .unwrap_err()
            .code(),
        "sync_running"
    );
    // Cancelled while the request is out: its answer is applied, nothing more is sent.
    cancel.cancel();
    release.send(()).unwrap();
    let first = first.join().unwrap().unwrap_err();
    assert_eq!(first.code(), "cancelled");
    assert_eq!(
        server.seen.lock().unwrap().as_slice(),
        ["/v1/enroll", "/v1/catalog"],
        "nothing after the cancelled step"
    );
    // The store is free again: the next sync runs (and stops where this server stops).
    release.send(()).unwrap();
    let once = SyncConfig {
        retry: RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        },
        ..SyncConfig::default()
    };
    let again = c.sync_with(server.as_ref(), once, None, None).unwrap_err();
    arrived.recv().unwrap();
    assert_eq!(again.code(), "transport");
    assert_eq!(
        server.seen.lock().unwrap().get(2).map(String::as_str),
        Some("/v1/catalog")
    );
}

/// Enrols, then serves contents by hash: `good` after one 503, `tampered` with other bytes
/// than its hash says, and orders a wipe for anything else (taking the trail's last entries first).
struct ContentServer {
    good: (String, Vec<u8>),
    tampered: String,
    failed_once: Mutex<bool>,
    flushed: Mutex<bool>,
}

impl Transport for ContentServer {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        let answer = |status, body: Vec<u8>| Ok(HttpResponse { status, body });
        if request.path == "/v1/enroll" {
            let enrolled = m::EnrollResponse {
                protocol: m::PROTOCOL_VERSION,
                device_id: "device-1".into(),
                device_token: "token-1".into(),
                token_expires_at: "2027-06-01T00:00:00Z".into(),
                user: UserInfo {
                    id: "reviewer-1".into(),
                    role: Role::TownshipStaff,
                    areas: vec!["513431104".into()],
                },
                server_time: NOW.into(),
                predecessor: None,
            };
            return answer(200, m::encode(&enrolled).unwrap());
        }
        if request.path == "/v1/audit" {
            let trail: m::AuditUploadRequest = m::decode(&request.body).unwrap();
            *self.flushed.lock().unwrap() = true;
            let held = m::AuditUploadResponse {
                protocol: m::PROTOCOL_VERSION,
                server_time: NOW.into(),
                accepted_through: trail.entries.last().map_or(0, |e| e.seq),
                chain_break: None,
            };
            return answer(200, m::encode(&held).unwrap());
        }
        assert_eq!(request.method, "GET", "{}", request.path);
        let authorised = request
            .headers
            .iter()
            .any(|(k, v)| k == "Authorization" && v == "Bearer token-1");
        assert!(authorised, "a download carries the device's token");
        let hash = request.path.rsplit('/').next().unwrap();
        if hash == self.good.0 {
            let mut failed = self.failed_once.lock().unwrap();
            if !*failed {
                *failed = true;
                return answer(503, Vec::new());
            }
            return answer(200, self.good.1.clone());
        }
        if hash == self.tampered {
            return answer(200, b"not the photo that was hashed".to_vec());
        }
        let wipe = m::ErrorBody {
            protocol: m::PROTOCOL_VERSION,
            error: m::ErrorDetail {
                code: "device_wiped".into(),
                message: "this device was ordered wiped".into(),
            },
        };
        answer(410, m::encode(&wipe).unwrap())
    }
}

#[test]
fn a_download_is_retried_checked_against_its_hash_and_honours_a_wipe_order() {
    use zoufang_core::Error;
    use zoufang_core::protocol::audit::HashAlgorithm::Sha256;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let c = Collector::open(&path, &StoreOptions::default()).unwrap();
    let photo = b"\xff\xd8\xff\xe0 a photo of the house".to_vec();
    let server = ContentServer {
        good: (Sha256.digest(&photo), photo.clone()),
        tampered: Sha256.digest(b"the photo that was hashed"),
        failed_once: Mutex::new(false),
        flushed: Mutex::new(false),
    };
    let not_enrolled = c.fetch_attachment_content(&server, Sha256, &server.good.0);
    assert!(
        matches!(not_enrolled, Err(Error::NotEnrolled)),
        "{not_enrolled:?}"
    );
    c.enroll(&server, "enrol-token", "reviewer's phone")
        .unwrap();

    let bad = c.fetch_attachment_content(&server, Sha256, "../../etc/passwd");
    assert!(matches!(bad, Err(Error::InvalidInput(_))), "{bad:?}");
    let got = c
        .fetch_attachment_content(&server, Sha256, &server.good.0)
        .unwrap();
    assert_eq!(got, photo);
    assert!(*server.failed_once.lock().unwrap(), "the 503 was retried");
    let tampered = c.fetch_attachment_content(&server, Sha256, &server.tampered);
    assert!(
        matches!(&tampered, Err(Error::Server { code, .. }) if code == "hash_mismatch"),
        "{tampered:?}"
    );

    let wiped = c.fetch_attachment_content(&server, Sha256, &Sha256.digest(b"other"));
    assert!(matches!(wiped, Err(Error::DeviceWiped)), "{wiped:?}");
    assert!(
        *server.flushed.lock().unwrap(),
        "the audit trail went up first"
    );
    assert!(!path.exists(), "the store is destroyed on a wipe order");
}
