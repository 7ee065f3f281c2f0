//! `zoufang bench --suite link`: the sync through a real link on loopback, in real time
//! (`zoufang-link`: a rate shared by both directions, a round-trip time with a handshake per
//! connection, cuts of every open connection at fixed intervals, stalls without close). Each
//! figure is against the time the same bytes need at the link's rate, the bytes measured on
//! the same proxy for a twin device (same data, made the same way) syncing over a clean link:
//!
//! - (a) N visits (2,000 by default), 20 KB/s, 150 ms RTT, cut every 2 s: target ≤ 1.5×;
//! - (b) the same at 50 KB/s, cut every 0.5 s: everything arrives, target ≤ 3×;
//! - (c) a stall without close: noticed (a new connection) within 20 s, the sync resumes;
//! - (d) a fresh phone of the same area pulls what those visits made, through (a) and (b);
//! - (e) 6 photos through (a) (one below 1,000 visits): target ≤ 1.3×.
//!
//! A sync that fails is started again, as the coordinator would press the button again; the
//! figures say how many it took.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value as Json, json};
use zoufang_core::protocol::messages::Role;
use zoufang_core::sync::{
    LocalState, ReqwestTransport, SyncListener, SyncPhase, SyncProgress, SyncReport,
};
use zoufang_core::{Collector, StoreOptions};
use zoufang_link::{FaultProxy, Faults, LinkStats};
use zoufang_server::{AppState, BackgroundServer, SqliteStorage};

use crate::bench_attachments::{noisy_jpeg, visit_with_photo};
use crate::bench_sync::{enroll, seed_rounds, server_err, transport};
use crate::sample::Rng;
use crate::{Failure, fail};

const KB: f64 = 1024.0;
const RTT: Duration = Duration::from_millis(150);
/// Syncs started before a scenario is declared failed.
const MOST_SYNCS: u32 = 30;

struct Bed {
    dir: tempfile::TempDir,
    storage: Arc<SqliteStorage>,
    server: BackgroundServer,
    upstream: SocketAddr,
    devices: u32,
}

impl Bed {
    fn start() -> Result<Self, Failure> {
        let dir = tempfile::Builder::new()
            .prefix("zoufang-bench-link")
            .tempdir_in(".")
            .map_err(|e| fail("io", e.to_string()))?;
        let key = crate::server_key::ephemeral(zoufang_server::at_rest::CipherSuite::Aes256)?;
        let storage =
            Arc::new(SqliteStorage::open(&dir.path().join("server"), &key).map_err(server_err)?);
        zoufang_server::publish_defaults(storage.as_ref()).map_err(server_err)?;
        let server = BackgroundServer::start(AppState::new(storage.clone()), "127.0.0.1:0")
            .map_err(|e| fail("io", e.to_string()))?;
        let upstream = server
            .url
            .trim_start_matches("http://")
            .parse()
            .map_err(|_| fail("bench", "the server's address"))?;
        Ok(Self {
            dir,
            storage,
            server,
            upstream,
            devices: 0,
        })
    }

    /// A new enrolled phone of the county (`role`), its store empty.
    fn phone(&mut self, role: Role) -> Result<Collector, Failure> {
        self.devices += 1;
        let name = format!("link-{}", self.devices);
        let c = Collector::open(
            &self.dir.path().join(format!("{name}.db")),
            &StoreOptions::default(),
        )?;
        let t = transport(&self.server.url)?;
        c.enroll(&t, &enroll(&self.storage, &name, role, "513431")?, &name)?;
        Ok(c)
    }

    /// A coordinator's phone with `visits` households (synced) and a routine visit of each
    /// waiting (a round visits each household once; visits of one household repeated in a
    /// batch would flatter its compression), made from `seed`: twins made from one seed hold
    /// the same data.
    fn coordinator(&mut self, visits: usize, seed: u64) -> Result<Collector, Failure> {
        let c = self.phone(Role::Coordinator)?;
        seed_rounds(&c, &self.server.url, &mut Rng::new(seed), (visits, visits))?;
        Ok(c)
    }

    fn link(&self, faults: Faults) -> Result<(FaultProxy, ReqwestTransport), Failure> {
        let proxy =
            FaultProxy::start(self.upstream, faults).map_err(|e| fail("io", e.to_string()))?;
        let t = transport(&proxy.url)?;
        Ok((proxy, t))
    }
}

fn weak(rate_kb: f64, cut_every: Option<f64>) -> Faults {
    Faults {
        rate: Some((rate_kb * KB) as u64),
        rtt: RTT,
        cut_interval: cut_every.map(Duration::from_secs_f64),
        ..Faults::default()
    }
}

/// Everything the phone holds has reached the server: changes, audit trail, contents (but
/// the entry each sync writes about itself as it ends, which goes up with the next one).
fn all_sent(c: &Collector) -> Result<bool, Failure> {
    let s = c.sync_status()?;
    let audit = LocalState::pending_audit_count(c)?;
    Ok(s.pending_changes == 0 && s.pending_attachments == 0 && audit <= 1)
}

/// What one scenario took.
struct Run {
    elapsed: Duration,
    syncs: u32,
    report: SyncReport,
    stats: LinkStats,
    last_error: Option<String>,
}

/// Syncs until `done` says so (at most [`MOST_SYNCS`] syncs), in real time.
fn sync_until(
    c: &Collector,
    proxy: &FaultProxy,
    t: &ReqwestTransport,
    done: &dyn Fn(&Collector, &SyncReport) -> Result<bool, Failure>,
) -> Result<Run, Failure> {
    let started = Instant::now();
    let (mut syncs, mut last_error, mut total) = (0, None, SyncReport::default());
    while syncs < MOST_SYNCS {
        syncs += 1;
        match c.sync(t, None, None) {
            Ok(r) => {
                total.pulled += r.pulled;
                total.pushed += r.pushed;
                total.round_trips += r.round_trips;
                if done(c, &total)? {
                    break;
                }
            }
            Err(e) => last_error = Some(e.to_string()),
        }
    }
    Ok(Run {
        elapsed: started.elapsed(),
        syncs,
        report: total,
        stats: proxy.stats(),
        last_error,
    })
}

fn link_bytes(s: &LinkStats) -> u64 {
    s.up_bytes + s.down_bytes
}

struct Say<'a> {
    report: &'a mut Vec<Json>,
    quiet: bool,
}

impl Say<'_> {
    fn figure(&mut self, name: &str, line: &str, json: Json) {
        if !self.quiet {
            outln!("{name:<28} {line}");
        }
        self.report.push(json);
    }

    /// A scenario against its ideal time (clean bytes at the link's rate).
    fn against(
        &mut self,
        name: &str,
        key: &str,
        run: &Run,
        clean_bytes: u64,
        (rate_kb, target): (f64, f64),
        done: bool,
    ) {
        let ideal = clean_bytes as f64 / (rate_kb * KB);
        let secs = run.elapsed.as_secs_f64();
        let ratio = secs / ideal.max(1e-9);
        let line = format!(
            "{secs:.1} s vs {ideal:.1} s for the clean sync's {} KB at {rate_kb:.0} KB/s: {ratio:.2}x (target <= {target}x); {} syncs, {} cuts, {} connections, {} KB sent on the link ({:.0}% of its time){}{}",
            clean_bytes / 1024,
            run.syncs,
            run.stats.cuts,
            run.stats.connections,
            run.stats.sent_bytes / 1024,
            100.0 * run.stats.sent_bytes as f64 / (rate_kb * KB) / secs.max(1e-9),
            if done { "" } else { "; NOT ALL ARRIVED" },
            run.last_error
                .as_deref()
                .map_or(String::new(), |e| format!("; last error: {e}"))
        );
        self.figure(
            name,
            &line,
            json!({"name": key, "seconds": secs, "ideal_seconds": ideal, "ratio": ratio, "target_ratio": target,
                   "all_arrived": done, "syncs": run.syncs, "cuts": run.stats.cuts, "connections": run.stats.connections,
                   "bytes_moved": link_bytes(&run.stats), "bytes_sent_on_link": run.stats.sent_bytes, "clean_bytes": clean_bytes, "round_trips": run.report.round_trips,
                   "last_error": run.last_error}),
        );
    }
}

pub fn run(visits: usize, json_output: bool) -> Result<Vec<Json>, Failure> {
    let n = visits.min(2000);
    let mut report = Vec::new();
    let mut say = Say {
        report: &mut report,
        quiet: json_output,
    };
    let mut bed = Bed::start()?;
    let everything = |c: &Collector, _: &SyncReport| all_sent(c);

    // The twin on a clean link: the bytes the data needs.
    let clean = bed.coordinator(n, 21)?;
    let (proxy, t) = bed.link(Faults::default())?;
    let clean_run = sync_until(&clean, &proxy, &t, &everything)?;
    let clean_bytes = link_bytes(&clean_run.stats);
    drop((proxy, clean));

    // (a) and (b): the same data through two weak links.
    for (key, label, rate, cut, target) in [
        (
            "link_2s_cuts",
            format!("{n} visits, 20 KB/s, cut/2s"),
            20.0,
            2.0,
            1.5,
        ),
        (
            "link_half_second_cuts",
            format!("{n} visits, 50 KB/s, cut/0.5s"),
            50.0,
            0.5,
            3.0,
        ),
    ] {
        // A server of its own, like the twin's: a phone of the county syncing on the first
        // bed would also pull what the twin (and the other scenario) made, which the clean
        // bytes do not hold.
        let mut own = Bed::start()?;
        let c = own.coordinator(n, 21)?;
        let (proxy, t) = own.link(weak(rate, Some(cut)))?;
        let run = sync_until(&c, &proxy, &t, &everything)?;
        say.against(
            &label,
            key,
            &run,
            clean_bytes,
            (rate, target),
            all_sent(&c)?,
        );
    }

    // (d) A fresh phone of the area pulls what the twin's visits made: clean, then through
    // (a) and (b).
    let expected = {
        let p = bed.phone(Role::Coordinator)?;
        let (proxy, t) = bed.link(Faults::default())?;
        let run = sync_until(&p, &proxy, &t, &|_, _| Ok(true))?;
        (run.report.pulled, link_bytes(&run.stats))
    };
    for (key, label, rate, cut, target) in [
        (
            "pull_2s_cuts",
            "fresh pull, 20 KB/s, cut/2s",
            20.0,
            2.0,
            1.5,
        ),
        (
            "pull_half_second_cuts",
            "fresh pull, 50 KB/s, cut/0.5s",
            50.0,
            0.5,
            3.0,
        ),
    ] {
        let p = bed.phone(Role::Coordinator)?;
        let (proxy, t) = bed.link(weak(rate, Some(cut)))?;
        let run = sync_until(&p, &proxy, &t, &|_, r| Ok(r.pulled >= expected.0))?;
        let done = run.report.pulled >= expected.0;
        say.against(label, key, &run, expected.1, (rate, target), done);
    }

    // (e) Six photos (one at small sizes) through (a), against a twin's clean upload to a
    // server of its own (the same photos on one server would be found already held).
    let count = if n >= 1000 { 6 } else { 1 };
    let photos = |bed: &mut Bed| -> Result<Collector, Failure> {
        let c = bed.phone(Role::Coordinator)?;
        let mut rng = Rng::new(5);
        for i in 0..count {
            visit_with_photo(&c, &mut rng, &noisy_jpeg(560, 420, 40 + i)?)?;
        }
        Ok(c)
    };
    let mut twin_bed = Bed::start()?;
    let clean = photos(&mut twin_bed)?;
    let (proxy, t) = twin_bed.link(Faults::default())?;
    let photo_bytes = link_bytes(&sync_until(&clean, &proxy, &t, &everything)?.stats);
    drop((proxy, clean, twin_bed));
    // And the weak one on another fresh server: a fresh phone of this bed's county would pull
    // everything the scenarios above made before its photos.
    let mut photo_bed = Bed::start()?;
    let c = photos(&mut photo_bed)?;
    let (proxy, t) = photo_bed.link(weak(20.0, Some(2.0)))?;
    let run = sync_until(&c, &proxy, &t, &everything)?;
    say.against(
        &format!("{count} photos, 20 KB/s, cut/2s"),
        "photos_2s_cuts",
        &run,
        photo_bytes,
        (20.0, 1.3),
        all_sent(&c)?,
    );

    // (c) A stall without close, 3 s into a sync.
    stall(&mut bed, &mut say)?;
    Ok(report)
}

/// The last phase a sync reported.
#[derive(Default)]
struct LastPhase(Mutex<Option<SyncPhase>>);

impl SyncListener for LastPhase {
    fn on_progress(&self, progress: SyncProgress) {
        *self.0.lock() = Some(progress.phase);
    }
}

fn stall(bed: &mut Bed, say: &mut Say<'_>) -> Result<(), Failure> {
    let c = bed.coordinator(300, 22)?;
    let (proxy, t) = bed.link(weak(20.0, None))?;
    let phase = Arc::new(LastPhase::default());
    let (noticed, phase_at_stall, outcome) = std::thread::scope(|s| {
        let syncing = s.spawn(|| c.sync(&t, Some(phase.as_ref()), None));
        std::thread::sleep(Duration::from_secs(3));
        let at_stall = *phase.0.lock();
        let before = proxy.stats().connections;
        proxy.stall_open_connections();
        let stalled_at = Instant::now();
        while proxy.stats().connections == before && stalled_at.elapsed() < Duration::from_secs(120)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let noticed = stalled_at.elapsed();
        (noticed, at_stall, syncing.join())
    });
    let outcome = outcome.map_err(|_| fail("bench", "the syncing thread panicked"))?;
    let done = outcome.is_ok() && all_sent(&c)?;
    let secs = noticed.as_secs_f64();
    let phase_name = phase_at_stall.map_or("none".to_owned(), |p| format!("{p:?}").to_lowercase());
    say.figure(
        "stall without close",
        &format!(
            "noticed after {secs:.1} s (target <= 20 s) during the {phase_name} phase; the sync {}",
            if done { "resumed and finished" } else { "did NOT finish" }
        ),
        json!({"name": "stall", "noticed_seconds": secs, "target_seconds": 20.0, "phase": phase_name, "finished": done,
               "error": outcome.err().map(|e| e.to_string())}),
    );
    Ok(())
}
