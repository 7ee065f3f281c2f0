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

use std::time::{Duration, Instant};

use zoufang_core::protocol::messages::Role;
use zoufang_core::sync::{LocalState, ReqwestTransport, STALL_TIMEOUT};
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
