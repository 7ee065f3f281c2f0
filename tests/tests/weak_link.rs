//! A real weak link in real time (`zoufang-link` between a phone and a server on loopback):
//! 50 KB/s shared by both directions, 150 ms round trips with a handshake per connection, every
//! connection cut each 0.5 s; 20 KB/s cut every 2 s for a photo; and a link that stalls without
//! closing. What a coordinator recorded arrives within one press of "sync", a colleague's fresh
//! phone gets all of it, a photo takes little more than its bytes' time, and a stall is noticed
//! well within 20 s. Sizes are small (a few dozen visits) so the suite runs in
//! well under a minute; `zoufang bench --suite link` measures the same at 2,000 visits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::io::Read as _;

use zoufang_core::protocol::messages::{PushRequest, PushStreamAnswer, Role};
use zoufang_core::protocol::stream::{StreamWriter, decode_stream, encode_stream};
use zoufang_core::sync::{
    Cut, HttpRequest, HttpResponse, LocalState, ReqwestTransport, STALL_TIMEOUT, Transport,
    TransportError,
};
use zoufang_core::{Collector, Error};
use zoufang_tests::fault_proxy::{FaultProxy, Faults};
use zoufang_tests::{
    Device, TestServer, new_household, noisy_jpeg, routine_visit, survey_with_photo,
};

const VILLAGE: &str = "513431104201";

/// `RUST_LOG=zoufang_core=debug` shows the engine's view of the link.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn half_second_cuts() -> Faults {
    Faults {
        rate: Some(50 * 1024),
        rtt: Duration::from_millis(150),
        cut_interval: Some(Duration::from_millis(500)),
        ..Faults::default()
    }
}

/// A coordinator's phone holding `households` households with one completed visit each.
fn coordinator_with_visits(server: &TestServer, user: &str, households: usize) -> Device {
    let phone = Device::enrolled(server, user, Role::Coordinator, &[VILLAGE]);
    for _ in 0..households {
        let h = new_household(&phone.collector, VILLAGE);
        routine_visit(&phone.collector, &h);
    }
    phone
}

fn nothing_waiting(c: &Collector) -> bool {
    let s = c.sync_status().unwrap();
    // The entry a sync writes about itself as it ends goes up with the next one.
    s.pending_changes == 0 && LocalState::pending_audit_count(c).unwrap() <= 1
}

#[test]
fn a_link_cut_every_half_second_still_carries_every_visit_in_one_sync() {
    logs();
    let server = TestServer::start();
    let phone = coordinator_with_visits(&server, "maha", 40);
    let proxy = FaultProxy::start(server.addr(), half_second_cuts()).unwrap();
    let link = ReqwestTransport::new(&proxy.url).unwrap();

    let report = phone.collector.sync(&link, None, None).unwrap();
    assert!(nothing_waiting(&phone.collector), "{report:?}");
    let stats = proxy.stats();
    assert!(
        stats.cuts >= 2,
        "the link was cut while the sync ran: {stats:?}"
    );
    // 40 households and their 40 visits, each once on the server.
    let held = server.storage.stats().unwrap();
    assert_eq!((held.households, held.visits), (40, 40));

    // A colleague's fresh phone of the same village, through the same kind of link, gets it all.
    let colleague = Device::enrolled(&server, "ayi", Role::Coordinator, &[VILLAGE]);
    let proxy = FaultProxy::start(server.addr(), half_second_cuts()).unwrap();
    let link = ReqwestTransport::new(&proxy.url).unwrap();
    let pulled = colleague.collector.sync(&link, None, None).unwrap();
    let counts = colleague.collector.counts().unwrap();
    assert_eq!(
        (counts.households, counts.members, counts.completed),
        (40, 40, 40),
        "{pulled:?}"
    );
    assert!(proxy.stats().cuts >= 1, "the pull went through a cut");
}

#[test]
fn a_stalled_link_is_noticed_and_the_same_sync_finishes() {
    logs();
    let server = TestServer::start();
    let phone = coordinator_with_visits(&server, "maha", 30);
    // Slow enough that the sync is still running when the link stalls.
    let proxy = FaultProxy::start(
        server.addr(),
        Faults {
            rate: Some(4 * 1024),
            rtt: Duration::from_millis(150),
            ..Faults::default()
        },
    )
    .unwrap();
    let link = ReqwestTransport::new(&proxy.url).unwrap();
    let (noticed, outcome) = std::thread::scope(|s| {
        let syncing = s.spawn(|| phone.collector.sync(&link, None, None));
        std::thread::sleep(Duration::from_secs(1));
        let before = proxy.stats().connections;
        proxy.stall_open_connections();
        let stalled = Instant::now();
        while proxy.stats().connections == before && stalled.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(20));
        }
        (stalled.elapsed(), syncing.join().unwrap())
    });
    // Noticed by the read timeout, not the request's total timeout, and the sync went on.
    assert!(
        noticed >= STALL_TIMEOUT - Duration::from_secs(1),
        "{noticed:?}"
    );
    assert!(noticed < Duration::from_secs(20), "{noticed:?}");
    let report = match outcome {
        Ok(r) => r,
        Err(Error::Transport(m)) => panic!("a stall of one connection ended the sync: {m}"),
        Err(e) => panic!("{e}"),
    };
    assert!(nothing_waiting(&phone.collector), "{report:?}");
    assert_eq!(server.storage.stats().unwrap().visits, 30);
}

#[test]
fn a_photo_crosses_a_link_cut_every_two_seconds_resuming_at_each_cut() {
    logs();
    let server = TestServer::start();
    let phone = Device::enrolled(&server, "maha", Role::Coordinator, &[VILLAGE]);
    let limits = zoufang_core::media::PhotoLimits {
        max_long_side: 4000,
        max_bytes: 8 * 1024 * 1024,
    };
    let (visit, _) =
        survey_with_photo(&phone.collector, VILLAGE, &noisy_jpeg(400, 300, 3), &limits);
    // The photo and the signatures the survey carries.
    let contents: u64 = phone
        .collector
        .attachments_of_visit(&visit)
        .unwrap()
        .iter()
        .map(|a| a.size_bytes)
        .sum();
    let rate = 20 * 1024;
    let proxy = FaultProxy::start(
        server.addr(),
        Faults {
            rate: Some(rate),
            rtt: Duration::from_millis(150),
            cut_interval: Some(Duration::from_secs(2)),
            ..Faults::default()
        },
    )
    .unwrap();
    let link = ReqwestTransport::new(&proxy.url).unwrap();
    let started = Instant::now();
    let report = phone.collector.sync(&link, None, None).unwrap();
    let took = started.elapsed().as_secs_f64();
    assert_eq!(
        phone.collector.sync_status().unwrap().pending_attachments,
        0
    );
    let stats = proxy.stats();
    assert!(stats.cuts >= 4, "{stats:?}");
    // The server keeps every whole frame that arrived before a cut, so the time is the bytes'
    // time plus a round trip or two per cut. (What the phone had handed to the socket but the
    // link had not carried yet is lost at a cut and written again: that costs no link time.)
    assert!(report.attachment_interruptions >= 4, "{report:?}");
    let needs = contents as f64 / rate as f64;
    // About 1.6x here: each cut costs a reconnection, a status round trip and the frame in
    // flight (`zoufang bench --suite link` measures it against the 1.3x target); twice the
    // bytes' time would mean chunks sent blindly, pauses, or a pull riding along.
    assert!(took < needs * 2.0, "{took:.1} s vs {needs:.1} s: {stats:?}");
}

/// Notes a request in `seen` (its path, and a push stream's changes); returns a push stream's
/// messages.
fn record(
    seen: &parking_lot::Mutex<Vec<(String, Vec<u64>)>>,
    request: &HttpRequest,
) -> Vec<PushRequest> {
    let (messages, _) = decode_stream::<PushRequest>(&request.body);
    let seqs = if request.path == "/v1/push/stream" {
        messages
            .iter()
            .flat_map(|m| m.changes.iter().map(|c| c.seq))
            .collect()
    } else {
        Vec::new()
    };
    seen.lock().push((request.path.clone(), seqs));
    messages
}

/// A link that cuts the first streamed push after half of its messages have reached the
/// server (the server sees them whole and applies them, as it does before a real cut), and
/// records every request the phone makes.
struct CutFirstPushHalfway {
    inner: ReqwestTransport,
    cut_done: std::sync::atomic::AtomicBool,
    /// The changes of the messages that reached the server before the cut.
    arrived: parking_lot::Mutex<Vec<u64>>,
    /// (path, changes' seqs in a push stream)
    seen: parking_lot::Mutex<Vec<(String, Vec<u64>)>>,
}

impl Transport for CutFirstPushHalfway {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        let messages = record(&self.seen, request);
        let first =
            request.path == "/v1/push/stream" && !self.cut_done.swap(true, Ordering::SeqCst);
        if first {
            assert!(messages.len() >= 2, "a push stream of several messages");
            let half = &messages[..messages.len() / 2];
            let seqs = half.iter().flat_map(|m| m.changes.iter().map(|c| c.seq));
            self.arrived.lock().extend(seqs);
            let mut arrived = request.clone();
            arrived.body = encode_stream(half).unwrap();
            self.inner.send(&arrived)?;
            return Err(TransportError {
                message: "the link dropped".into(),
            });
        }
        self.inner.send(request)
    }
}

/// A push cut on the way is asked about, not sent again: the server applied every whole
/// message that arrived, the phone asks which of its changes did (a few bytes) before sending
/// anything else, and sends only the others. Every visit is on the server once.
#[test]
fn a_cut_push_is_asked_about_not_sent_again() {
    let server = TestServer::start();
    let phone = coordinator_with_visits(&server, "maha", 60);
    let link = CutFirstPushHalfway {
        inner: ReqwestTransport::new(&server.url).unwrap(),
        cut_done: Default::default(),
        arrived: Default::default(),
        seen: Default::default(),
    };
    let report = phone.collector.sync(&link, None, None).unwrap();
    assert!(nothing_waiting(&phone.collector), "{report:?}");
    assert_eq!(server.storage.stats().unwrap().visits, 60);

    let seen = link.seen.lock();
    let first = seen
        .iter()
        .position(|(p, _)| p == "/v1/push/stream")
        .expect("a streamed push");
    // Right after the cut, the question about the cut push's changes...
    assert_eq!(seen[first + 1].0, "/v1/push/acks");
    let cut: BTreeSet<u64> = seen[first].1.iter().copied().collect();
    let pushed = |from: usize| -> BTreeSet<u64> {
        seen[from..]
            .iter()
            .filter(|(p, _)| p == "/v1/push/stream")
            .flat_map(|(_, s)| s.iter().copied())
            .collect()
    };
    // ...then what had not arrived goes, and nothing that had.
    let arrived: BTreeSet<u64> = link.arrived.lock().iter().copied().collect();
    let resent = pushed(first + 2);
    let lost: BTreeSet<u64> = cut.difference(&arrived).copied().collect();
    assert!(!arrived.is_empty() && !lost.is_empty());
    assert!(
        resent.is_disjoint(&arrived),
        "changes that had arrived were sent again"
    );
    assert!(
        lost.is_subset(&resent),
        "changes lost in the cut were not sent again"
    );
}

/// A server that answers a streamed push as it applies it: the phone reads each message's
/// acknowledgements while sending, so after a cut it knows what arrived but the last moments,
/// and sends the rest again at once instead of asking. What arrived without its answer
/// coming back is sent twice and applied once; what was acknowledged is never sent again.
#[test]
fn a_push_answered_as_applied_is_resumed_without_asking() {
    let server = TestServer::start();
    let phone = coordinator_with_visits(&server, "maha", 60);
    let link = CutAfterSomeAnswers {
        inner: ReqwestTransport::new(&server.url).unwrap(),
        cut_done: Default::default(),
        arrived: Default::default(),
        acked: Default::default(),
        seen: Default::default(),
    };
    let report = phone.collector.sync(&link, None, None).unwrap();
    assert!(nothing_waiting(&phone.collector), "{report:?}");
    let held = server.storage.stats().unwrap();
    assert_eq!((held.households, held.visits), (60, 60));

    let seen = link.seen.lock();
    let first = seen
        .iter()
        .position(|(p, _)| p == "/v1/push/stream")
        .expect("a streamed push");
    assert_eq!(seen[first + 1].0, "/v1/push/stream", "no question asked");
    assert!(seen.iter().all(|(p, _)| p != "/v1/push/acks"));
    let resent: BTreeSet<u64> = seen[first + 1..]
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .collect();
    let (arrived, acked) = (link.arrived.lock(), link.acked.lock());
    let cut: BTreeSet<u64> = seen[first].1.iter().copied().collect();
    let unacked: BTreeSet<u64> = cut.difference(&acked).copied().collect();
    assert!(!acked.is_empty() && !unacked.is_empty());
    assert!(
        resent.is_disjoint(&acked),
        "acknowledged changes were sent again"
    );
    assert!(
        unacked.is_subset(&resent),
        "unacknowledged changes were not sent again"
    );
    // The message whose answer the cut took: arrived, applied, sent again, held once.
    assert!(arrived.difference(&acked).next().is_some());
}

/// Lets the first half of the first streamed push's messages reach the server, hands the
/// phone the answers to all of them but the last (the cut took it), then cuts.
struct CutAfterSomeAnswers {
    inner: ReqwestTransport,
    cut_done: std::sync::atomic::AtomicBool,
    arrived: parking_lot::Mutex<BTreeSet<u64>>,
    acked: parking_lot::Mutex<BTreeSet<u64>>,
    seen: parking_lot::Mutex<Vec<(String, Vec<u64>)>>,
}

impl Transport for CutAfterSomeAnswers {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        record(&self.seen, request);
        self.inner.send(request)
    }

    fn reads_while_sending(&self) -> bool {
        true
    }

    fn send_streaming(
        &self,
        request: &HttpRequest,
        receive: &mut dyn FnMut(u16, &mut dyn std::io::Read),
    ) -> Result<(), Cut> {
        let messages = record(&self.seen, request);
        if request.path != "/v1/push/stream" || self.cut_done.swap(true, Ordering::SeqCst) {
            return self.inner.send_streaming(request, receive);
        }
        assert!(messages.len() >= 4, "a push stream of several messages");
        let half = &messages[..messages.len() / 2];
        let seqs = half.iter().flat_map(|m| m.changes.iter().map(|c| c.seq));
        self.arrived.lock().extend(seqs);
        let mut arrived = request.clone();
        arrived.body = encode_stream(half).unwrap();
        let answer = self.inner.send(&arrived).unwrap();
        let (mut answers, _) = decode_stream::<PushStreamAnswer>(&answer.body);
        assert_eq!(answers.len(), half.len(), "one answer per message");
        answers.pop();
        for a in &answers {
            let PushStreamAnswer::Applied(a) = a else {
                panic!("refused: {a:?}")
            };
            self.acked.lock().extend(a.acks.iter().map(|k| k.seq));
        }
        let mut writer = StreamWriter::new().unwrap();
        let mut body = Vec::new();
        for a in &answers {
            writer.push(a).unwrap();
            body.append(&mut writer.take());
        }
        receive(200, &mut body.as_slice().chain(CutHere));
        Ok(())
    }
}

/// A body's end where the link cut it.
struct CutHere;

impl std::io::Read for CutHere {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("the link dropped"))
    }
}
