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
