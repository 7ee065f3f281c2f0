//! `zoufang bench --suite sync`: the sync figures, each against a baseline from the same run.
//!
//! - bytes on the wire per visit (compressed push body) against the zstd-compressed answers;
//! - pushing 10,000 visits through a real server on loopback, against bare fsynced inserts of
//!   the same visit bodies;
//! - pulling N households with members for a township, in a separate process so its peak
//!   memory is its own;
//! - round trips of a typical sync;
//! - server changes accepted per second with many devices pushing at once, against the same
//!   changes applied by the storage directly;
//! - up to 2,000 visits over a simulated 20 KB/s link cut every 2 s, against the time their
//!   bytes need at that rate.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value as Json, json};
use zoufang_core::protocol::messages::{
    self, Change, ChangeOp, EnrollRequest, PushRequest, Role, UserInfo, VisitRecord,
};
use zoufang_core::records::NewHousehold;
use zoufang_core::sync::{HttpRequest, ReqwestTransport, SyncConfig, Transport};
use zoufang_core::{Collector, StoreOptions};
use zoufang_server::{
    AppState, BackgroundServer, DEVICE_TOKEN_LIFETIME, DeviceAuth, SqliteStorage, Storage,
};

use crate::bench::{bare_db, bench_err, ms};
use crate::sample::{self, Rng};
use crate::{CliResult, Failure, fail};

pub(crate) fn server_err(e: zoufang_server::ServerError) -> Failure {
    fail(e.code(), e.to_string())
}

pub(crate) fn transport(url: &str) -> Result<ReqwestTransport, Failure> {
    ReqwestTransport::new(url).map_err(|e| fail("transport", e.message))
}

pub(crate) fn enroll(
    storage: &SqliteStorage,
    user: &str,
    role: Role,
    area: &str,
) -> Result<String, Failure> {
    let now = chrono::Utc::now();
    let _ = storage.create_user(
        &UserInfo {
            id: user.into(),
            role,
            areas: vec![area.into()],
        },
        now,
    );
    storage
        .issue_enrollment(user, Duration::from_secs(3600), now)
        .map_err(server_err)
}

pub(crate) fn routine_answers(due: &str) -> Map<String, Json> {
    json!({
        "trigger_source": "schedule", "outcome": "completed", "interviewee_name": "吉克阿呷",
        "location": {"lat": 28.0108, "lon": 102.8456, "accuracy_m": 9.5, "provider": "gps", "mock": false},
        "language_used": "ii", "basic_living_difficulty": "no", "risk_level": "low", "recommendation": "monitor",
        "emergency": "no", "next_visit_due": due, "investigator_1_name": "马海木呷", "consent_privacy": "yes",
        "started_at": sample::hours_ago(0.5), "ended_at": sample::hours_ago(0.1)
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// Gives an enrolled phone `households` sample households (synced to the server at `url`) and
/// `visits` completed routine visits of them in turn, all made from `rng`, as a coordinator's
/// rounds between two syncs would leave it.
pub(crate) fn seed_rounds(
    c: &Collector,
    url: &str,
    rng: &mut Rng,
    (households, visits): (usize, usize),
) -> Result<(), Failure> {
    let homes: Vec<NewHousehold> = (0..households).map(|_| sample::household(rng)).collect();
    let mut ids = Vec::new();
    for chunk in homes.chunks(1000) {
        ids.extend(c.import_households(chunk.to_vec())?);
    }
    c.sync(&transport(url)?, None, None)?;
    for (id, home) in ids.iter().zip(&homes).cycle().take(visits) {
        let due = home
            .fields
            .get("next_visit_due")
            .and_then(Json::as_str)
            .unwrap_or("2026-12-01");
        let v = c.start_visit(Some(id), "routine")?;
        c.set_answers(&v.id, &sample::routine_visit(rng, due))?;
        c.complete_visit(&v.id)?;
    }
    Ok(())
}

pub fn run(
    households: usize,
    visits: usize,
    devices: usize,
    json_output: bool,
) -> Result<Vec<Json>, Failure> {
    let dir = tempfile::Builder::new()
        .prefix("zoufang-bench-sync")
        .tempdir_in(".")
        .map_err(|e| fail("io", e.to_string()))?;
    let storage = Arc::new(
        SqliteStorage::open(
            &dir.path().join("server"),
            &crate::server_key::ephemeral(zoufang_server::at_rest::CipherSuite::Aes256)?,
        )
        .map_err(server_err)?,
    );
    zoufang_server::publish_defaults(storage.as_ref()).map_err(server_err)?;
    let server = BackgroundServer::start(AppState::new(storage.clone()), "127.0.0.1:0")
        .map_err(|e| fail("io", e.to_string()))?;
    let t = transport(&server.url)?;
    let mut report = Vec::new();
    let say = |name: &str, line: String| {
        if !json_output {
            outln!("{name:<28} {line}");
        }
    };
    let mut rng = Rng::new(11);

    // 1. Bytes on the wire per visit.
    let c = Collector::open(&dir.path().join("a.db"), &StoreOptions::default())?;
    c.enroll(
        &t,
        &enroll(&storage, "coord-a", Role::Coordinator, "513431")?,
        "bench-a",
    )?;
    let mut full_visits = Vec::new();
    for _ in 0..100 {
        let answers = sample::application_survey(&mut rng);
        let village = answers
            .get("village_code")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned();
        let v = c.start_visit(None, "application_survey")?;
        c.set_answers(&v.id, &answers)?;
        full_visits.push((c.complete_visit(&v.id)?, village));
    }
    let change = |i: u64, v: &VisitRecord| Change {
        seq: i,
        hlc: format!("{:015}-{:010}", 1_764_300_000_000u64 + i, 0),
        device_time: "2026-11-28T02:10:00.000Z".into(),
        op: ChangeOp::SubmitVisit {
            visit: Box::new(v.clone()),
        },
    };
    let records: Vec<VisitRecord> = full_visits
        .iter()
        .map(|(v, _)| c.visit_submission(&v.id))
        .collect::<Result<_, _>>()?;
    let compressed_answers: Vec<usize> = full_visits
        .iter()
        .map(|(v, _)| {
            zstd::bulk::compress(Json::Object(v.answers.clone()).to_string().as_bytes(), 3)
                .map_or(0, |b| b.len())
        })
        .collect();
    let one = messages::encode(&PushRequest {
        protocol: messages::PROTOCOL_VERSION,
        device_id: uuid::Uuid::now_v7().to_string(),
        device_time: "2026-11-28T02:10:00.000Z".into(),
        changes: records
            .first()
            .map(|r| vec![change(1, r)])
            .unwrap_or_default(),
        audit: None,
        held: Vec::new(),
    })
    .map_err(|e| fail("bench", e.to_string()))?;
    let batch = messages::encode(&PushRequest {
        protocol: messages::PROTOCOL_VERSION,
        device_id: uuid::Uuid::now_v7().to_string(),
        device_time: "2026-11-28T02:10:00.000Z".into(),
        changes: records
            .iter()
            .enumerate()
            .map(|(i, r)| change(i as u64 + 1, r))
            .collect(),
        audit: None,
        held: Vec::new(),
    })
    .map_err(|e| fail("bench", e.to_string()))?;
    let zstd_one = *compressed_answers.first().unwrap_or(&1) as f64;
    let zstd_avg =
        compressed_answers.iter().sum::<usize>() as f64 / compressed_answers.len().max(1) as f64;
    let per_visit_batched = batch.len() as f64 / records.len().max(1) as f64;
    say(
        "bytes per visit",
        format!(
            "alone {} B vs its zstd answers {:.0} B: {:.2}x; in a push of 100: {:.0} B vs {:.0} B: {:.2}x (target <= 1.3x)",
            one.len(),
            zstd_one,
            one.len() as f64 / zstd_one,
            per_visit_batched,
            zstd_avg,
            per_visit_batched / zstd_avg
        ),
    );
    report.push(json!({"name": "bytes_per_visit", "alone_bytes": one.len(), "alone_zstd_answers": zstd_one,
        "alone_ratio": one.len() as f64 / zstd_one, "batched_bytes": per_visit_batched, "batched_zstd_answers": zstd_avg,
        "batched_ratio": per_visit_batched / zstd_avg, "target_ratio": 1.3}));

    // 2. Round trips of a typical sync: three edits after the first sync.
    c.sync(&t, None, None)?;
    let hid = full_visits
        .first()
        .and_then(|(v, _)| v.household_id.clone())
        .unwrap_or_default();
    for (i, field) in ["phone", "address", "supporters_elsewhere"]
        .iter()
        .enumerate()
    {
        let value = if *field == "supporters_elsewhere" {
            json!(i)
        } else if *field == "phone" {
            json!("13900000007")
        } else {
            json!("五组")
        };
        c.edit_household_field(&hid, field, value)?;
    }
    let typical = c.sync(&t, None, None)?;
    let idle = c.sync(&t, None, None)?;
    say(
        "round trips per sync",
        format!(
            "{} with 3 edits ({} B up, {} B down); {} with nothing to do",
            typical.round_trips, typical.bytes_sent, typical.bytes_received, idle.round_trips
        ),
    );
    report.push(
        json!({"name": "round_trips", "with_edits": typical.round_trips, "idle": idle.round_trips,
        "bytes_up": typical.bytes_sent, "bytes_down": typical.bytes_received}),
    );
    drop(c);

    // 3. Pushing many visits.
    let b = Collector::open(&dir.path().join("b.db"), &StoreOptions::default())?;
    b.enroll(
        &t,
        &enroll(&storage, "coord-b", Role::Coordinator, "513431")?,
        "bench-b",
    )?;
    let homes: Vec<NewHousehold> = (0..(visits / 10).max(1))
        .map(|_| sample::household(&mut rng))
        .collect();
    let ids = b.import_households(homes.clone())?;
    b.sync(&t, None, None)?;
    for (id, home) in ids.iter().zip(&homes).cycle().take(visits) {
        let due = home
            .fields
            .get("next_visit_due")
            .and_then(Json::as_str)
            .unwrap_or("2026-12-01");
        let v = b.start_visit(Some(id), "routine")?;
        b.set_answers(&v.id, &routine_answers(due))?;
        b.complete_visit(&v.id)?;
    }
    let queued = b.sync_status()?.pending_changes;
    let started = Instant::now();
    let pushed = b.sync_with(
        &t,
        SyncConfig {
            push_batch: 200,
            ..SyncConfig::default()
        },
        None,
        None,
    )?;
    let push_time = started.elapsed();
    // Baseline: the same visit bodies in bare fsynced inserts, 200 per transaction.
    let mut bare = bare_db(&dir.path().join("bare-visits.db"))?;
    let bodies: Vec<String> = {
        let conn = rusqlite::Connection::open(dir.path().join("b.db")).map_err(bench_err)?;
        let mut stmt = conn
            .prepare("SELECT answers FROM visits WHERE status = 'completed'")
            .map_err(bench_err)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(bench_err)?;
        rows.collect::<Result<_, _>>().map_err(bench_err)?
    };
    let started = Instant::now();
    for chunk in bodies.chunks(200) {
        let tx = bare.transaction().map_err(bench_err)?;
        for body in chunk {
            tx.execute(
                "INSERT INTO t (id, body) VALUES (?1, ?2)",
                rusqlite::params![uuid::Uuid::now_v7().to_string(), body],
            )
            .map_err(bench_err)?;
        }
        tx.commit().map_err(bench_err)?;
    }
    let bare_time = started.elapsed();
    say(
        &format!("push {visits} visits"),
        format!(
            "{queued} changes in {:.0} ms ({:.0} visits/s, {} round trips, {:.0} B/visit up) vs bare inserts of the same bodies {:.0} ms: {:.1}x",
            ms(push_time),
            visits as f64 / push_time.as_secs_f64().max(1e-9),
            pushed.round_trips,
            pushed.bytes_sent as f64 / visits.max(1) as f64,
            ms(bare_time),
            ms(push_time) / ms(bare_time).max(1e-9)
        ),
    );
    report.push(json!({"name": "push_visits", "visits": visits, "changes": queued, "ms": ms(push_time), "round_trips": pushed.round_trips,
        "bytes_up": pushed.bytes_sent, "baseline_ms": ms(bare_time), "ratio": ms(push_time) / ms(bare_time).max(1e-9)}));
    drop(b);

    // 4. Pulling a township: seed the server directly, then pull in a separate process.
    let seed = DeviceAuth::new(
        "seed",
        UserInfo {
            id: "seed".into(),
            role: Role::Administrator,
            areas: vec!["513431".into()],
        },
    );
    let mut seq = 0u64;
    let mut pending = Vec::new();
    let mut members = 0usize;
    for _ in 0..households {
        let mut h = sample::household(&mut rng);
        h.village_code = format!("513431105{:03}", 201 + rng.below(30));
        let hid = uuid::Uuid::now_v7().to_string();
        let mut fields = h.fields.clone();
        fields.insert("village_code".into(), json!(h.village_code));
        seq += 1;
        pending.push(Change {
            seq,
            hlc: String::new(),
            device_time: "2026-11-28T00:00:00Z".into(),
            op: ChangeOp::CreateHousehold {
                id: hid.clone(),
                village_code: h.village_code.clone(),
                fields,
            },
        });
        for m in h.members {
            seq += 1;
            members += 1;
            pending.push(Change {
                seq,
                hlc: String::new(),
                device_time: "2026-11-28T00:00:00Z".into(),
                op: ChangeOp::CreateMember {
                    id: uuid::Uuid::now_v7().to_string(),
                    household_id: hid.clone(),
                    fields: m,
                },
            });
        }
        if pending.len() >= 2000 {
            let now = chrono::Utc::now();
            storage
                .push(&seed, &pending, now, now)
                .map_err(server_err)?;
            pending.clear();
        }
    }
    let now = chrono::Utc::now();
    storage
        .push(&seed, &pending, now, now)
        .map_err(server_err)?;
    let token = enroll(&storage, "staff-pull", Role::TownshipStaff, "513431105")?;
    let exe = std::env::current_exe().map_err(|e| fail("io", e.to_string()))?;
    let started = Instant::now();
    let out = std::process::Command::new(exe)
        .args([
            "bench-pull-probe",
            "--server",
            &server.url,
            "--token",
            &token,
            "--store",
        ])
        .arg(dir.path().join("puller.db"))
        .output()
        .map_err(|e| fail("io", e.to_string()))?;
    let pull_time = started.elapsed();
    if !out.status.success() {
        return Err(fail(
            "bench",
            format!(
                "the pull probe failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let probe: Json =
        serde_json::from_slice(&out.stdout).map_err(|e| fail("bench", e.to_string()))?;
    let peak_kb = probe.get("peak_rss_kb").and_then(Json::as_u64).unwrap_or(0);
    let baseline_kb = probe
        .get("baseline_rss_kb")
        .and_then(Json::as_u64)
        .unwrap_or(0);
    let sync_ms = probe.get("sync_ms").and_then(Json::as_f64).unwrap_or(0.0);
    say(
        &format!("pull {households} households"),
        format!(
            "{members} members in {:.0} ms ({:.0} households/s; {} B down, {} round trips); peak RSS {} MB vs {} MB for an open empty store",
            sync_ms,
            households as f64 / (sync_ms / 1000.0).max(1e-9),
            probe.get("bytes_down").and_then(Json::as_u64).unwrap_or(0),
            probe.get("round_trips").and_then(Json::as_u64).unwrap_or(0),
            peak_kb / 1024,
            baseline_kb / 1024
        ),
    );
    report.push(json!({"name": "pull_township", "households": households, "members": members, "sync_ms": sync_ms,
        "process_ms": ms(pull_time), "peak_rss_kb": peak_kb, "baseline_rss_kb": baseline_kb, "probe": probe}));

    // 5. Server throughput with many devices pushing at once.
    let tokens: Vec<(String, String)> = (0..devices)
        .map(|i| {
            let t = enroll(
                &storage,
                &format!("load-{i}"),
                Role::Coordinator,
                "513431244",
            )?;
            storage
                .enroll(
                    &EnrollRequest::new(&t, "load"),
                    DEVICE_TOKEN_LIFETIME,
                    chrono::Utc::now(),
                )
                .map(|e| (e.device_id, e.device_token))
                .map_err(server_err)
        })
        .collect::<Result<_, _>>()?;
    let per_device_batches = 5;
    let batch_size = 100;
    let make_batch = |device: usize, round: usize| -> Vec<Change> {
        (0..batch_size)
            .map(|k| {
                let seq = (round * batch_size + k + 1) as u64;
                Change {
                    seq,
                    hlc: String::new(),
                    device_time: chrono::Utc::now().to_rfc3339(),
                    op: ChangeOp::CreateHousehold {
                        id: uuid::Uuid::now_v7().to_string(),
                        village_code: format!("513431244{:03}", 201 + (device % 30)),
                        fields: json!({"phone": "13812345678", "urban_rural": "rural"})
                            .as_object()
                            .cloned()
                            .unwrap_or_default(),
                    },
                }
            })
            .collect()
    };
    let started = Instant::now();
    let threads: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(i, (device_id, token))| {
            let (url, token) = (server.url.clone(), token.clone());
            let batches: Vec<Vec<u8>> = (0..per_device_batches)
                .filter_map(|r| {
                    messages::encode(&PushRequest {
                        protocol: messages::PROTOCOL_VERSION,
                        device_id: device_id.clone(),
                        device_time: chrono::Utc::now().to_rfc3339(),
                        changes: make_batch(i, r),
                        audit: None,
                        held: Vec::new(),
                    })
                    .ok()
                })
                .collect();
            std::thread::spawn(move || -> Result<(), String> {
                let t = ReqwestTransport::new(&url).map_err(|e| e.message)?;
                for body in batches {
                    let r = t
                        .send(&HttpRequest {
                            method: "POST".into(),
                            path: "/v1/push".into(),
                            headers: vec![("Authorization".into(), format!("Bearer {token}"))],
                            body,
                        })
                        .map_err(|e| e.message)?;
                    if r.status != 200 {
                        return Err(format!("HTTP {}", r.status));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for th in threads {
        th.join()
            .map_err(|_| fail("bench", "a pushing thread panicked"))?
            .map_err(|e| fail("bench", e))?;
    }
    let concurrent = started.elapsed();
    let total = devices * per_device_batches * batch_size;
    // Baseline: the same number of changes applied by the storage directly, one caller.
    let direct_auth = DeviceAuth::new(
        "direct",
        UserInfo {
            id: "direct".into(),
            role: Role::Coordinator,
            areas: vec!["513431244".into()],
        },
    );
    let started = Instant::now();
    for r in 0..(devices * per_device_batches) {
        let now = chrono::Utc::now();
        storage
            .push(&direct_auth, &make_batch(r, r), now, now)
            .map_err(server_err)?;
    }
    let direct = started.elapsed();
    let rate = total as f64 / concurrent.as_secs_f64().max(1e-9);
    let direct_rate = total as f64 / direct.as_secs_f64().max(1e-9);
    say(
        &format!("{devices} devices pushing"),
        format!(
            "{total} changes: {rate:.0}/s over HTTP vs {direct_rate:.0}/s applied directly by the storage: {:.2}x",
            rate / direct_rate.max(1e-9)
        ),
    );
    report.push(json!({"name": "server_throughput", "devices": devices, "changes": total, "per_second": rate,
        "direct_per_second": direct_rate, "ratio": rate / direct_rate.max(1e-9)}));

    // 6. A weak link: 20 KB/s, cut every 2 s of link time.
    let w = Collector::open(&dir.path().join("weak.db"), &StoreOptions::default())?;
    w.enroll(
        &t,
        &enroll(&storage, "coord-weak", Role::Coordinator, "513431")?,
        "bench-weak",
    )?;
    let weak_homes: Vec<NewHousehold> = (0..200).map(|_| sample::household(&mut rng)).collect();
    let weak_ids = w.import_households(weak_homes.clone())?;
    w.sync(&t, None, None)?;
    let weak_visits = visits.min(2000);
    for (id, home) in weak_ids.iter().zip(&weak_homes).cycle().take(weak_visits) {
        let due = home
            .fields
            .get("next_visit_due")
            .and_then(Json::as_str)
            .unwrap_or("2026-12-01");
        let v = w.start_visit(Some(id), "routine")?;
        w.set_answers(&v.id, &routine_answers(due))?;
        w.complete_visit(&v.id)?;
    }
    let link = WeakLink::new(transport(&server.url)?, 20.0 * 1024.0, 2.0);
    let config = SyncConfig {
        push_batch: 50,
        retry: zoufang_core::sync::RetryPolicy {
            attempts: 10_000,
            base: Duration::ZERO,
            cap: Duration::ZERO,
        },
        ..SyncConfig::default()
    };
    let weak = w.sync_with(&link, config, None, None)?;
    let state = link.state.lock();
    let ideal = state.useful as f64 / link.rate;
    say(
        &format!("{weak_visits} visits, 20 KB/s, cut/2s"),
        format!(
            "{:.1} s of link time vs {:.1} s for its bytes at 20 KB/s: {:.2}x (target <= 1.5x); {} cuts, {} B re-sent, at most {} B at one cut (largest request {} B); {} visits left waiting",
            state.clock,
            ideal,
            state.clock / ideal.max(1e-9),
            state.cuts,
            state.wasted,
            state.worst_cut,
            state.largest,
            w.sync_status()?.pending_changes
        ),
    );
    report.push(json!({"name": "weak_link", "visits": weak_visits, "link_seconds": state.clock, "ideal_seconds": ideal,
        "ratio": state.clock / ideal.max(1e-9), "target_ratio": 1.5, "cuts": state.cuts, "wasted_bytes": state.wasted,
        "worst_cut_bytes": state.worst_cut, "largest_request_bytes": state.largest, "round_trips": weak.round_trips}));
    drop(server);
    Ok(report)
}

#[derive(Debug, Default)]
struct LinkState {
    /// Link time, seconds: advances only while bytes move (loopback itself is instant).
    clock: f64,
    useful: u64,
    wasted: u64,
    worst_cut: u64,
    cuts: u64,
    largest: u64,
}

/// A simulated 2G link on virtual time: a fixed rate both ways, and a cut at every multiple of
/// `cut_every` seconds that kills whatever is in flight (a request not yet fully sent, or an
/// answer not yet fully received, after the server acted on it).
struct WeakLink {
    inner: ReqwestTransport,
    rate: f64,
    cut_every: f64,
    state: parking_lot::Mutex<LinkState>,
}

/// Bytes of HTTP headers around each body, roughly, each way.
const HEADER_BYTES: u64 = 250;

impl WeakLink {
    fn new(inner: ReqwestTransport, rate: f64, cut_every: f64) -> Self {
        Self {
            inner,
            rate,
            cut_every,
            state: parking_lot::Mutex::new(LinkState::default()),
        }
    }

    /// Moves `bytes` over the link; false if a cut came first (the link time and wasted bytes
    /// are accounted either way).
    fn transfer(&self, s: &mut LinkState, bytes: u64) -> bool {
        let next_cut = ((s.clock / self.cut_every).floor() + 1.0) * self.cut_every;
        let end = s.clock + bytes as f64 / self.rate;
        if end > next_cut {
            let moved = ((next_cut - s.clock) * self.rate) as u64;
            s.wasted += moved;
            s.cuts += 1;
            s.worst_cut = s.worst_cut.max(moved);
            s.clock = next_cut;
            false
        } else {
            s.clock = end;
            true
        }
    }
}

impl Transport for WeakLink {
    fn send(
        &self,
        request: &HttpRequest,
    ) -> Result<zoufang_core::sync::HttpResponse, zoufang_core::sync::TransportError> {
        let mut s = self.state.lock();
        let up = request.body.len() as u64 + HEADER_BYTES;
        s.largest = s.largest.max(up);
        if !self.transfer(&mut s, up) {
            return Err(zoufang_core::sync::TransportError {
                message: "link cut while sending".into(),
            });
        }
        let response = self.inner.send(request)?;
        let down = response.body.len() as u64 + HEADER_BYTES;
        if !self.transfer(&mut s, down) {
            // The server acted; the answer is lost. The re-sent request costs link time again.
            s.wasted += up;
            return Err(zoufang_core::sync::TransportError {
                message: "link cut while receiving".into(),
            });
        }
        s.useful += up + down;
        Ok(response)
    }
}

fn rss_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The pulling phone, in its own process: enrols, syncs, prints its figures as JSON.
pub fn pull_probe(server: &str, token: &str, store: &Path) -> CliResult {
    let c = Collector::open(store, &StoreOptions::default())?;
    let t = transport(server)?;
    c.enroll(&t, token, "pull-probe")?;
    let baseline = rss_kb("VmRSS:");
    let started = Instant::now();
    // The default path, as `zoufang device sync` and the bindings run it: pages start at the
    // default size and grow with the link.
    let report = c.sync_with(&t, SyncConfig::default(), None, None)?;
    let elapsed = started.elapsed();
    let counts = c.counts()?;
    outln!(
        "{}",
        json!({"sync_ms": ms(elapsed), "pulled": report.pulled, "households": counts.households, "members": counts.members,
               "bytes_down": report.bytes_received, "round_trips": report.round_trips,
               "peak_rss_kb": rss_kb("VmHWM:"), "baseline_rss_kb": baseline})
    );
    Ok(())
}
