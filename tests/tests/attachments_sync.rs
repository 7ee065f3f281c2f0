//! Photos and signatures over a link that keeps dropping: a real server on loopback behind a
//! fault-injecting proxy (`zoufang_tests::fault_proxy`) that cuts the connection every 64 KB,
//! flips bits, cuts answers short and slows the link; and a device process killed mid-upload.
//! Every photo arrives intact, is stored once, and no byte is sent twice beyond the piece in
//! flight at a cut.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use zoufang_core::media::PhotoLimits;
use zoufang_core::protocol::audit::HashAlgorithm;
use zoufang_core::protocol::frames::FRAME_PAYLOAD;
use zoufang_core::protocol::messages::{self, ChunkResponse, ErrorBody, ErrorDetail, Role};
use zoufang_core::sync::ReqwestTransport;
use zoufang_core::sync::engine::{MAX_CHUNK_BYTES, MIN_CHUNK_BYTES};
use zoufang_core::sync::{HttpRequest, HttpResponse, Transport, TransportError};
use zoufang_core::{Collector, Error, StoreOptions};
use zoufang_tests::fault_proxy::{FaultProxy, Faults};
use zoufang_tests::{Device, TestServer, noisy_jpeg, survey_with_photo};

const VILLAGE: &str = "513431104201";

/// Large enough to keep a noisy 5 MB camera photo as it is.
fn big_photo_limits() -> PhotoLimits {
    PhotoLimits {
        max_long_side: 4000,
        max_bytes: 8 * 1024 * 1024,
    }
}

/// What the server holds of a content, fetched as a reviewer would.
fn fetched(device: &Collector, server: &TestServer, hash: &str) -> Vec<u8> {
    device
        .fetch_attachment_content(&server.transport(), HashAlgorithm::Sha256, hash)
        .unwrap()
}

/// The bytes of every content a visit names.
fn content_bytes(c: &Collector, visit: &str) -> u64 {
    c.attachments_of_visit(visit)
        .unwrap()
        .iter()
        .map(|a| a.size_bytes)
        .sum()
}

/// Request headers and the status round trip that follows a cut: the fixed cost of resuming.
const RESUME_OVERHEAD: u64 = 2 * 1024;
/// The request line and headers every request carries (a chunk's PUT with its path, token and
/// content type is about 320 bytes): not in the engine's byte counts, which are bodies. Chunks
/// follow the link's measured rate, so a slower server (PostgreSQL under load) means more,
/// smaller chunks and more headers, whatever the cuts.
const REQUEST_HEADERS: u64 = 384;

#[test]
fn a_5_mb_photo_crosses_a_link_cut_every_64_kb_intact_without_resending() {
    let server = TestServer::start();
    let phone = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let c = &phone.collector;
    let (visit, photo) =
        survey_with_photo(c, VILLAGE, &noisy_jpeg(2300, 1725, 1), &big_photo_limits());
    assert!(photo.size_bytes >= 5_000_000, "{} B", photo.size_bytes);

    // Before the sync the device lists the visit as waiting, its data not sent yet.
    let pending = c.visits_with_pending_attachments().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].visit_id, visit);
    assert_eq!(pending[0].attachments, 4, "the photo and three signatures");
    assert!(!pending[0].visit_synced);

    let proxy = FaultProxy::start(
        server.addr(),
        Faults {
            cut_every: Some(64 * 1024),
            ..Faults::default()
        },
    )
    .unwrap();
    let link = ReqwestTransport::new(&proxy.url).unwrap();
    let report = c.sync(&link, None, None).unwrap();
    let stats = proxy.stats();

    assert_eq!(report.attachments_uploaded, 4);
    assert_eq!(report.attachments_waiting + report.attachments_damaged, 0);
    assert_eq!(
        fetched(c, &server, &photo.content_hash),
        c.attachment_content(&photo.content_hash).unwrap()
    );
    assert!(c.visits_with_pending_attachments().unwrap().is_empty());
    assert_eq!(c.sync_status().unwrap().pending_attachments, 0);
    let held = server.storage.stats().unwrap();
    assert_eq!(held.visits_awaiting_attachments, 0);
    assert_eq!(held.attachment_contents, 4);

    // The budget: the contents once, plus at most one chunk per cut — in fact far less, since
    // the server keeps every whole frame that arrived before a cut.
    let contents = content_bytes(c, &visit);
    let data = report.bytes_sent - report.attachment_bytes_sent.min(report.bytes_sent);
    assert!(stats.cuts >= 75, "{} cuts", stats.cuts);
    let up = stats.up_bytes;
    assert!(
        up <= contents + stats.cuts * MIN_CHUNK_BYTES as u64,
        "{up} B up for {contents} B of contents and {} cuts",
        stats.cuts
    );
    let tight = contents
        + data
        + stats.cuts * (FRAME_PAYLOAD as u64 + RESUME_OVERHEAD)
        + u64::from(report.round_trips) * REQUEST_HEADERS;
    println!(
        "5 MB photo, cut every 64 KB: {contents} B of contents, {data} B of data, {up} B up ({:.3}×), {} cuts, {} interruptions, {} round trips",
        up as f64 / contents as f64,
        stats.cuts,
        report.attachment_interruptions,
        report.round_trips
    );
    assert!(
        up <= tight,
        "{up} B up > {tight} B (frames lost at cuts + resume overhead)"
    );
}

#[test]
fn the_same_photo_from_two_devices_is_stored_and_sent_once() {
    let server = TestServer::start();
    let a = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let b = Device::enrolled(&server, "coord-b", Role::Coordinator, &[VILLAGE]);
    // The household's certificate, photographed into the same file on both phones.
    let document = noisy_jpeg(1000, 750, 7);
    let limits = PhotoLimits::default();
    let (_, on_a) = survey_with_photo(&a.collector, VILLAGE, &document, &limits);
    let (visit_b, on_b) = survey_with_photo(&b.collector, VILLAGE, &document, &limits);
    assert_eq!(on_a.content_hash, on_b.content_hash);

    let first = a.collector.sync(&server.transport(), None, None).unwrap();
    assert_eq!(first.attachments_uploaded, 4);
    let second = b.collector.sync(&server.transport(), None, None).unwrap();
    // The photo is on the server already: B sends none of its bytes.
    assert!(second.attachments_already_held >= 1, "{second:?}");
    assert_eq!(
        second.attachments_uploaded + second.attachments_already_held,
        4
    );
    let b_sent: u64 = b
        .collector
        .attachments_of_visit(&visit_b)
        .unwrap()
        .iter()
        .filter(|x| x.content_hash != on_b.content_hash)
        .map(|x| x.size_bytes)
        .sum();
    assert!(
        second.attachment_bytes_sent <= b_sent,
        "{} B sent, the photo is {} B",
        second.attachment_bytes_sent,
        on_b.size_bytes
    );
    assert!(
        b.collector
            .visits_with_pending_attachments()
            .unwrap()
            .is_empty()
    );

    // One file on the server's disk for the photo, named by its hash.
    let objects = server.dir.path().join("attachments/objects/sha256");
    let files: Vec<_> = zoufang_tests::files_under(&objects)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n == on_a.content_hash.as_str())
        })
        .collect();
    assert_eq!(files.len(), 1);
    // Sealed on the disk (encrypted at rest), whole when served.
    let photo = a.collector.attachment_content(&on_a.content_hash).unwrap();
    assert_ne!(std::fs::read(&files[0]).unwrap(), photo);
    assert_eq!(fetched(&b.collector, &server, &on_a.content_hash), photo);
    assert_eq!(
        server.storage.stats().unwrap().visits_awaiting_attachments,
        0
    );
}

#[test]
fn a_corrupted_chunk_is_refused_and_sent_again() {
    let server = TestServer::start();
    let phone = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let c = &phone.collector;
    let (_, photo) = survey_with_photo(c, VILLAGE, &noisy_jpeg(1800, 1350, 3), &big_photo_limits());
    assert!(photo.size_bytes > 1_000_000);
    // Bits flipped well inside the upload (the data of the sync is a few KB), more than a
    // chunk apart.
    let proxy = FaultProxy::start(
        server.addr(),
        Faults {
            corrupt_at: vec![300_000, 2_000_001],
            ..Faults::default()
        },
    )
    .unwrap();
    let report = c
        .sync(&ReqwestTransport::new(&proxy.url).unwrap(), None, None)
        .unwrap();
    assert_eq!(proxy.stats().corrupted, 2);
    assert!(report.attachment_interruptions >= 2, "{report:?}");
    assert_eq!(report.attachments_uploaded, 4);
    // Stored only as it was taken: the server checked every frame and the whole hash.
    assert_eq!(
        fetched(c, &server, &photo.content_hash),
        c.attachment_content(&photo.content_hash).unwrap()
    );
    // Re-sent: the refused frames and what followed them in their chunks, nothing more.
    let up = proxy.stats().up_bytes;
    assert!(
        up <= photo.size_bytes + 2 * MAX_CHUNK_BYTES as u64 + 64 * 1024,
        "{up} B up for a {} B photo",
        photo.size_bytes
    );
}

#[test]
fn a_lost_answer_is_not_a_reason_to_send_again() {
    let server = TestServer::start();
    let phone = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let c = &phone.collector;
    let (visit, photo) =
        survey_with_photo(c, VILLAGE, &noisy_jpeg(1800, 1350, 4), &big_photo_limits());
    // The answer to the chunk in flight at 500 KB is cut short: the server applied it, the
    // device does not know. It asks, and goes on from what the server holds.
    let proxy = FaultProxy::start(
        server.addr(),
        Faults {
            truncate_answer_after: Some(500_000),
            ..Faults::default()
        },
    )
    .unwrap();
    let report = c
        .sync(&ReqwestTransport::new(&proxy.url).unwrap(), None, None)
        .unwrap();
    assert_eq!(proxy.stats().truncated_answers, 1);
    assert_eq!(report.attachments_uploaded, 4);
    assert_eq!(
        fetched(c, &server, &photo.content_hash),
        c.attachment_content(&photo.content_hash).unwrap()
    );
    assert!(c.visits_with_pending_attachments().unwrap().is_empty());
    // Every content byte went up exactly once.
    let contents = content_bytes(c, &visit);
    assert_eq!(report.attachment_bytes_sent, contents, "{report:?}");
    assert!(report.attachment_interruptions >= 1);
}

#[test]
fn a_content_damaged_in_the_store_is_kept_and_reported_not_sent() {
    let server = TestServer::start();
    let phone = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let c = &phone.collector;
    let (visit, photo) = survey_with_photo(
        c,
        VILLAGE,
        &noisy_jpeg(800, 600, 5),
        &PhotoLimits::default(),
    );
    // Flash that went bad under the photo: same length, other bytes.
    rusqlite::Connection::open(&phone.path)
        .unwrap()
        .execute(
            "UPDATE blobs SET bytes = zeroblob(length(bytes)) WHERE hash = ?1",
            [&photo.content_hash],
        )
        .unwrap();
    let report = c.sync(&server.transport(), None, None).unwrap();
    assert_eq!(report.attachments_damaged, 1, "{report:?}");
    assert_eq!(report.attachments_uploaded, 3, "the three signatures go");
    assert!(
        report.attachment_bytes_sent < photo.size_bytes,
        "{report:?}"
    );
    // Kept on the device, still listed as waiting; the server never saw it.
    assert_eq!(
        c.attachment_content(&photo.content_hash).unwrap().len() as u64,
        photo.size_bytes
    );
    let pending = c.visits_with_pending_attachments().unwrap();
    assert_eq!(
        (
            pending.len(),
            pending[0].visit_id.as_str(),
            pending[0].attachments
        ),
        (1, visit.as_str(), 1)
    );
    assert_eq!(
        server.storage.stats().unwrap().visits_awaiting_attachments,
        1
    );
}

/// Answers the completion of every content with `hash_mismatch`, as a server that discarded
/// what it received would.
struct RefusesWholeContents(ReqwestTransport);

impl Transport for RefusesWholeContents {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        let response = self.0.send(request)?;
        let completed = request.method == "PUT"
            && response.status == 200
            && messages::decode::<ChunkResponse>(&response.body).is_ok_and(|a| a.complete);
        if !completed {
            return Ok(response);
        }
        let refusal = ErrorBody {
            protocol: messages::PROTOCOL_VERSION,
            error: ErrorDetail {
                code: "hash_mismatch".into(),
                message: "the uploaded content does not match its hash".into(),
            },
        };
        Ok(HttpResponse {
            status: 422,
            body: messages::encode(&refusal).unwrap(),
        })
    }
}

#[test]
fn a_content_the_server_refuses_whole_is_not_sent_again_in_the_same_sync() {
    let server = TestServer::start();
    let phone = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let c = &phone.collector;
    // Several chunks each: every round of re-sending would make progress and never stall.
    let (visit, _) = survey_with_photo(c, VILLAGE, &noisy_jpeg(1200, 900, 6), &big_photo_limits());
    let contents = content_bytes(c, &visit);
    let report = c
        .sync(&RefusesWholeContents(server.transport()), None, None)
        .unwrap();
    // Each content went up once, was refused, and waits for the next sync; none is damaged here.
    assert_eq!(report.attachment_bytes_sent, contents, "{report:?}");
    assert_eq!(
        (
            report.attachments_waiting,
            report.attachments_damaged,
            report.attachments_uploaded
        ),
        (4, 0, 0)
    );
    assert_eq!(
        c.visits_with_pending_attachments().unwrap()[0].attachments,
        4
    );
    // In fact the server kept them: the next sync finds them held and sends nothing.
    let next = c.sync(&server.transport(), None, None).unwrap();
    assert_eq!(
        (next.attachments_already_held, next.attachment_bytes_sent),
        (4, 0)
    );
    assert!(c.visits_with_pending_attachments().unwrap().is_empty());
}

#[test]
fn a_device_killed_mid_upload_resumes_after_restart() {
    let server = TestServer::start();
    let phone = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let (visit, photo) = survey_with_photo(
        &phone.collector,
        VILLAGE,
        &noisy_jpeg(2300, 1725, 5),
        &big_photo_limits(),
    );
    let path = phone.path.clone();
    drop(phone.collector);
    // 1.5 MB/s: the photo takes seconds, time enough to kill the device in the middle.
    let proxy = FaultProxy::start(
        server.addr(),
        Faults {
            up_bytes_per_second: Some(1_500_000),
            ..Faults::default()
        },
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_attachment_sync"))
        .args([path.to_str().unwrap(), &proxy.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Progress lines: "attachments DONE TOTAL" in bytes the server confirmed.
    loop {
        let line = lines.next().expect("the device stopped early").unwrap();
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.first() == Some(&"attachments") && parts[1].parse::<u64>().unwrap() >= 1_500_000 {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = proxy.stats().up_bytes;

    // The server holds the visit, and knows it is not complete yet.
    assert_eq!(
        server.storage.visits_awaiting_attachments().unwrap(),
        vec![visit.clone()]
    );

    let c = Collector::open(&path, &StoreOptions::default()).unwrap();
    let pending = c.visits_with_pending_attachments().unwrap();
    assert_eq!(pending.len(), 1);
    assert!(pending[0].visit_synced);
    let report = c
        .sync(&ReqwestTransport::new(&proxy.url).unwrap(), None, None)
        .unwrap();
    assert_eq!(
        report.attachments_uploaded, 4,
        "the photo and its signatures: {report:?}"
    );
    assert_eq!(
        fetched(&c, &server, &photo.content_hash),
        c.attachment_content(&photo.content_hash).unwrap()
    );
    assert!(
        server
            .storage
            .visits_awaiting_attachments()
            .unwrap()
            .is_empty()
    );
    let resumed = proxy.stats().up_bytes - at_kill;
    let left = photo.size_bytes;
    // Across the kill: at most the chunk in flight was lost.
    let total = proxy.stats().up_bytes;
    let contents = content_bytes(&c, &visit);
    assert!(
        total <= contents + MAX_CHUNK_BYTES as u64 + 64 * 1024,
        "{total} B up for {contents} B of contents ({resumed} B after the restart, photo {left} B)"
    );
    assert!(
        resumed < left,
        "the restart resumed instead of starting over"
    );
}

#[test]
fn reviewers_fetch_attachments_only_inside_their_areas() {
    let server = TestServer::start();
    let phone = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let (_, photo) = survey_with_photo(
        &phone.collector,
        VILLAGE,
        &noisy_jpeg(800, 600, 9),
        &PhotoLimits::default(),
    );
    phone
        .collector
        .sync(&server.transport(), None, None)
        .unwrap();
    let expected = phone
        .collector
        .attachment_content(&photo.content_hash)
        .unwrap();

    let county = Device::enrolled(
        &server,
        "reviewer-zhaojue",
        Role::CountyReviewer,
        &["513431"],
    );
    assert_eq!(
        fetched(&county.collector, &server, &photo.content_hash),
        expected
    );

    for (user, area) in [
        ("reviewer-other", "513432"),
        ("coord-other", "513431104202"),
    ] {
        let outsider = Device::enrolled(&server, user, Role::CountyReviewer, &[area]);
        let refused = outsider.collector.fetch_attachment_content(
            &server.transport(),
            HashAlgorithm::Sha256,
            &photo.content_hash,
        );
        assert!(
            matches!(&refused, Err(Error::Server { status: 404, .. })),
            "{user}: {refused:?}"
        );
    }
    // A content nobody's visit names does not exist, whoever asks.
    let unknown = county.collector.fetch_attachment_content(
        &server.transport(),
        HashAlgorithm::Sha256,
        &"ab".repeat(32),
    );
    assert!(matches!(unknown, Err(Error::Server { status: 404, .. })));
}

/// An in-process link that misbehaves at chosen points of the upward byte stream: a cut (what
/// went up before it reaches the server, the answer is lost), a flipped bit in a chunk, or a
/// lost answer after the server acted.
struct ChaosLink {
    inner: ReqwestTransport,
    state: parking_lot::Mutex<Chaos>,
}

#[derive(Debug, Default)]
struct Chaos {
    /// Upward bytes so far; faults fire at these offsets.
    up: u64,
    schedule: std::collections::VecDeque<(u64, Fault)>,
    /// Chunk body bytes that went up, cut ones included.
    chunk_bytes: u64,
    chunk_cuts: u64,
    chunk_flips: u64,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Cut,
    FlipBit,
    LoseAnswer,
}

impl Transport for ChaosLink {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        let lost = || TransportError {
            message: "link fault".into(),
        };
        let mut s = self.state.lock();
        let (start, len) = (s.up, request.body.len() as u64);
        let fault = match s.schedule.front() {
            Some(&(at, fault)) if at < start + len => {
                s.schedule.pop_front();
                Some(((at.max(start) - start) as usize, fault))
            }
            _ => None,
        };
        let chunk = request.method == "PUT";
        let moved = match fault {
            Some((at, Fault::Cut)) => at as u64,
            _ => len,
        };
        s.up += moved;
        if chunk {
            s.chunk_bytes += moved;
        }
        match fault {
            Some((at, Fault::Cut)) => {
                if chunk {
                    s.chunk_cuts += 1;
                    let mut partial = request.clone();
                    partial.body.truncate(at);
                    let _ = self.inner.send(&partial);
                }
                Err(lost())
            }
            Some((at, Fault::FlipBit)) if chunk => {
                s.chunk_flips += 1;
                let mut damaged = request.clone();
                damaged.body[at] ^= 0x04;
                self.inner.send(&damaged)
            }
            Some((_, Fault::LoseAnswer)) => {
                let _ = self.inner.send(request);
                Err(lost())
            }
            _ => self.inner.send(request),
        }
    }
}

/// The framed size of `n` content bytes.
fn framed(n: u64) -> u64 {
    n + n.div_ceil(FRAME_PAYLOAD as u64) * 8
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 12, ..Default::default() })]

    /// Whatever the link does and wherever, the contents arrive intact and once, nothing stays
    /// pending, a cut costs at most the frame in flight and a damaged chunk at most itself.
    #[test]
    fn uploads_survive_any_schedule_of_faults(
        faults in proptest::collection::vec((1_000u64..900_000, 0u8..3), 0..12),
        seed in 0u32..1000,
    ) {
        let server = TestServer::start();
        let phone = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
        let c = &phone.collector;
        let (visit, _) = survey_with_photo(c, VILLAGE, &noisy_jpeg(600, 450, seed), &big_photo_limits());
        let mut schedule: Vec<(u64, Fault)> = faults
            .into_iter()
            .map(|(at, k)| (at, [Fault::Cut, Fault::FlipBit, Fault::LoseAnswer][usize::from(k)]))
            .collect();
        schedule.sort_by_key(|f| f.0);
        let link = ChaosLink {
            inner: server.transport(),
            state: parking_lot::Mutex::new(Chaos { schedule: schedule.into(), ..Chaos::default() }),
        };
        let mut config = zoufang_core::sync::SyncConfig::default();
        config.retry.base = std::time::Duration::from_millis(1);
        config.retry.cap = std::time::Duration::from_millis(4);
        // A sync that gives up (faults in a row) is simply run again, as the app would.
        for _ in 0..20 {
            match c.sync_with(&link, config, None, None) {
                Ok(_) => break,
                Err(Error::Transport(_) | Error::Server { .. }) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        proptest::prop_assert!(c.visits_with_pending_attachments().unwrap().is_empty());
        let attachments = c.attachments_of_visit(&visit).unwrap();
        for a in &attachments {
            proptest::prop_assert_eq!(fetched(c, &server, &a.content_hash), c.attachment_content(&a.content_hash).unwrap());
        }
        let stats = server.storage.stats().unwrap();
        proptest::prop_assert_eq!((stats.attachment_contents, stats.visits_awaiting_attachments), (4, 0));
        let s = link.state.lock();
        let once: u64 = attachments.iter().map(|a| framed(a.size_bytes)).sum();
        let budget = once
            + s.chunk_cuts * (FRAME_PAYLOAD as u64 + 8)
            + s.chunk_flips * framed(MAX_CHUNK_BYTES as u64);
        proptest::prop_assert!(
            s.chunk_bytes <= budget,
            "{} chunk bytes > {} ({} cuts, {} flips in chunks)", s.chunk_bytes, budget, s.chunk_cuts, s.chunk_flips
        );
    }
}

#[test]
fn a_visit_naming_a_malformed_attachment_is_refused() {
    use messages::{Change, ChangeOp, Outcome};
    let server = TestServer::start();
    let phone = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let c = &phone.collector;
    let (visit, _) = survey_with_photo(
        c,
        VILLAGE,
        &noisy_jpeg(300, 200, 2),
        &PhotoLimits::default(),
    );
    let auth = zoufang_server::DeviceAuth::new(
        c.sync_status().unwrap().device_id.unwrap(),
        c.sync_status().unwrap().user.unwrap(),
    );
    let record = c.visit_submission(&visit).unwrap();
    type Spoil = fn(&mut messages::AttachmentRecord);
    let spoil: [(&str, Spoil); 4] = [
        ("uppercase hash", |a| {
            a.content_hash = a.content_hash.to_uppercase()
        }),
        ("path in the hash", |a| {
            a.content_hash = "../../../etc/passwd".into()
        }),
        ("empty", |a| a.size_bytes = 0),
        ("a third kind", |a| a.kind = "video".into()),
    ];
    for (i, (what, spoil)) in spoil.into_iter().enumerate() {
        let mut bad = record.clone();
        bad.id = uuid::Uuid::now_v7().to_string();
        spoil(&mut bad.attachments[0]);
        let change = Change {
            seq: 1000 + i as u64,
            hlc: format!("{:015}-{:010}", 1_764_300_000_000u64 + i as u64, 0),
            device_time: "2026-11-28T02:10:00.000Z".into(),
            op: ChangeOp::SubmitVisit {
                visit: Box::new(bad),
            },
        };
        let now = chrono::Utc::now();
        let acks = server.storage.push(&auth, &[change], now, now).unwrap();
        assert_eq!(acks[0].outcome, Outcome::Rejected, "{what}");
        assert_eq!(
            acks[0].code.as_deref(),
            Some("invalid_attachment"),
            "{what}"
        );
    }
    assert_eq!(server.storage.stats().unwrap().visits, 0);
}

#[test]
fn a_visit_that_misstates_a_contents_size_cannot_hold_up_its_upload() {
    use messages::{Change, ChangeOp, Outcome};
    let server = TestServer::start();
    let honest = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let liar = Device::enrolled(&server, "coord-b", Role::Coordinator, &[VILLAGE]);
    let (visit, photo) = survey_with_photo(
        &honest.collector,
        VILLAGE,
        &noisy_jpeg(400, 300, 6),
        &PhotoLimits::default(),
    );
    // Before the honest phone syncs, another names the same content with a larger size.
    let mut lie = honest.collector.visit_submission(&visit).unwrap();
    // An id that sorts first, so the server meets the lie before the truth.
    lie.id = "00000000-0000-7000-8000-000000000001".into();
    lie.household_id = None;
    lie.author = "coord-b".into();
    lie.attachments
        .retain(|a| a.content_hash == photo.content_hash);
    lie.attachments[0].size_bytes += 10_000;
    let status = liar.collector.sync_status().unwrap();
    let auth = zoufang_server::DeviceAuth::new(status.device_id.unwrap(), status.user.unwrap());
    let now = chrono::Utc::now();
    let change = Change {
        seq: 1,
        hlc: "001764300000000-0000000000".into(),
        device_time: "2026-11-28T02:10:00.000Z".into(),
        op: ChangeOp::SubmitVisit {
            visit: Box::new(lie),
        },
    };
    let acks = server.storage.push(&auth, &[change], now, now).unwrap();
    assert_eq!(acks[0].outcome, Outcome::Applied);

    let report = honest
        .collector
        .sync(&server.transport(), None, None)
        .unwrap();
    assert_eq!(report.attachments_uploaded, 4, "{report:?}");
    assert_eq!(
        fetched(&honest.collector, &server, &photo.content_hash),
        honest
            .collector
            .attachment_content(&photo.content_hash)
            .unwrap()
    );
}
