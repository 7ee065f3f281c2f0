//! `zoufang bench --suite attachments`: uploading photos, each figure against a baseline
//! measured in the same run.
//!
//! - upload a 5 MB photo over loopback (chunked, framed, hashed, fsynced per chunk) against one
//!   bare HTTP PUT of the same bytes that the receiver writes and fsyncs;
//! - bytes sent against the photo's size over a link cut every 64 KB;
//! - the same over a 20 KB/s link cut every 2 s, and its time against the photo's bytes' time.
//!
//! The links run on virtual time (loopback itself is instant) and pass on what got through
//! before a cut, as a real link does: the server keeps the whole frames of a cut chunk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use zoufang_core::media::PhotoLimits;
use zoufang_core::protocol::messages::Role;
use zoufang_core::sync::{
    HttpRequest, HttpResponse, Moment, ReqwestTransport, SyncConfig, SyncEngine, SyncPhase,
    Transport, TransportError,
};
use zoufang_core::{Collector, StoreOptions};
use zoufang_server::{AppState, BackgroundServer, SqliteStorage, Storage};

use crate::bench::median;
use crate::sample::{self, Rng};
use crate::{Failure, fail};

/// A camera JPEG of noise (it hardly compresses: the size asked for is the size stored).
pub(crate) fn noisy_jpeg(w: u32, h: u32, seed: u32) -> Result<Vec<u8>, Failure> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let img = image::RgbImage::from_fn(w, h, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [a, b, c, _] = state.to_le_bytes();
        image::Rgb([a, b, c])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode_image(&img)
        .map_err(|e| fail("bench", e.to_string()))?;
    Ok(jpeg)
}

/// A completed application survey with `photo` as its house photo, kept at full size.
pub(crate) fn visit_with_photo(c: &Collector, rng: &mut Rng, photo: &[u8]) -> Result<u64, Failure> {
    let v = c.start_visit(None, "application_survey")?;
    c.set_answers(&v.id, &sample::application_survey(rng))?;
    let limits = PhotoLimits {
        max_long_side: 4000,
        max_bytes: 8 * 1024 * 1024,
    };
    let a = c.add_photo(&v.id, "house_exterior_photo", photo, &limits)?;
    c.complete_visit(&v.id)?;
    Ok(a.size_bytes)
}

/// A link on virtual time: `rate` bytes a second both ways, cut at every multiple of `cut_every`
/// seconds. What went up before a cut reaches the server (so a chunk's whole frames land); the
/// answer to a request cut on its way is lost.
struct CutLink {
    inner: ReqwestTransport,
    rate: f64,
    cut_every: f64,
    state: parking_lot::Mutex<LinkState>,
}

#[derive(Debug, Default, Clone, Copy)]
struct LinkState {
    clock: f64,
    up: u64,
    down: u64,
    cuts: u64,
}

/// HTTP headers around each body, roughly, each way.
const HEADER_BYTES: u64 = 250;

impl CutLink {
    /// Moves up to `bytes`; returns how many got through before a cut (all of them: no cut).
    fn transfer(&self, s: &mut LinkState, bytes: u64) -> u64 {
        let next_cut = ((s.clock / self.cut_every).floor() + 1.0) * self.cut_every;
        let end = s.clock + bytes as f64 / self.rate;
        if end > next_cut {
            let moved = ((next_cut - s.clock) * self.rate) as u64;
            s.clock = next_cut;
            s.cuts += 1;
            moved.min(bytes)
        } else {
            s.clock = end;
            bytes
        }
    }
}

impl Transport for CutLink {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        let mut s = self.state.lock();
        let up = request.body.len() as u64 + HEADER_BYTES;
        let moved = self.transfer(&mut s, up);
        s.up += moved;
        if moved < up {
            // A chunk cut on its way: the server gets what passed and keeps its whole frames.
            if request.method == "PUT" && moved > HEADER_BYTES {
                let mut partial = request.clone();
                partial.body.truncate((moved - HEADER_BYTES) as usize);
                let _ = self.inner.send(&partial);
            }
            return Err(TransportError {
                message: "link cut while sending".into(),
            });
        }
        let response = self.inner.send(request)?;
        let down = response.body.len() as u64 + HEADER_BYTES;
        let moved = self.transfer(&mut s, down);
        s.down += moved;
        if moved < down {
            return Err(TransportError {
                message: "link cut while receiving".into(),
            });
        }
        Ok(response)
    }
}

/// The bare baseline: a receiver that writes a PUT body to a file and fsyncs it.
fn bare_sink(
    dir: &std::path::Path,
) -> Result<
    (
        String,
        std::thread::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    ),
    Failure,
> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| fail("io", e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| fail("io", e.to_string()))?;
    let url = format!(
        "http://{}",
        listener
            .local_addr()
            .map_err(|e| fail("io", e.to_string()))?
    );
    let file = dir.join("sink.bin");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail("io", e.to_string()))?;
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let app = axum::Router::new().route(
                "/sink",
                axum::routing::put(move |body: axum::body::Bytes| {
                    let file = file.clone();
                    async move {
                        let _ = tokio::task::spawn_blocking(move || {
                            use std::io::Write;
                            let mut f = std::fs::File::create(&file)?;
                            f.write_all(&body)?;
                            f.sync_data()
                        })
                        .await;
                        "ok"
                    }
                }),
            );
            let app = app.layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024));
            if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            }
        });
    });
    Ok((url, thread, stop))
}

fn enroll(storage: &SqliteStorage, c: &Collector, url: &str, user: &str) -> Result<(), Failure> {
    let info = zoufang_core::protocol::messages::UserInfo {
        id: user.to_owned(),
        role: Role::Coordinator,
        areas: vec!["513431".into()],
    };
    let now = chrono::Utc::now();
    storage
        .create_user(&info, now)
        .map_err(|e| fail(e.code(), e.to_string()))?;
    let token = storage
        .issue_enrollment(user, Duration::from_secs(3600), now)
        .map_err(|e| fail(e.code(), e.to_string()))?;
    let t = ReqwestTransport::new(url).map_err(|e| fail("transport", e.message))?;
    c.enroll(&t, &token, user)?;
    Ok(())
}

pub fn run(rounds: usize, json_output: bool) -> Result<Vec<Json>, Failure> {
    let dir = tempfile::Builder::new()
        .prefix("zoufang-bench-attachments")
        .tempdir_in(".")
        .map_err(|e| fail("io", e.to_string()))?;
    let storage = Arc::new(
        SqliteStorage::open(
            &dir.path().join("server"),
            &crate::server_key::ephemeral(zoufang_server::at_rest::CipherSuite::Aes256)?,
        )
        .map_err(|e| fail(e.code(), e.to_string()))?,
    );
    zoufang_server::publish_defaults(storage.as_ref())
        .map_err(|e| fail(e.code(), e.to_string()))?;
    let server = BackgroundServer::start(AppState::new(storage.clone()), "127.0.0.1:0")
        .map_err(|e| fail("io", e.to_string()))?;
    let (sink_url, sink_thread, stop_sink) = bare_sink(dir.path())?;
    let say = |name: &str, line: String| {
        if !json_output {
            outln!("{name:<28} {line}");
        }
    };
    let mut report = Vec::new();
    let mut rng = Rng::new(17);
    let direct = ReqwestTransport::new(&server.url).map_err(|e| fail("transport", e.message))?;
    let bare = reqwest::blocking::Client::new();

    // 1. Loopback upload of a 5 MB photo against one bare PUT of the same bytes.
    let c = Collector::open(&dir.path().join("a.db"), &StoreOptions::default())?;
    enroll(&storage, &c, &server.url, "coord-a")?;
    let (mut ours, mut baseline, mut size) = (Vec::new(), Vec::new(), 0);
    for round in 0..rounds.clamp(1, 5) {
        let photo = noisy_jpeg(2300, 1725, round as u32 + 1)?;
        size = visit_with_photo(&c, &mut rng, &photo)?;
        let stored = c
            .visits_with_pending_attachments()?
            .first()
            .map(|p| p.visit_id.clone())
            .unwrap_or_default();
        let content = c
            .attachments_of_visit(&stored)?
            .into_iter()
            .find(|a| a.field_path == "house_exterior_photo")
            .map(|a| c.attachment_content(&a.content_hash))
            .transpose()?
            .unwrap_or_default();
        // Ours: the attachment phase of a sync, driven here so only that phase is timed.
        let mut engine = SyncEngine::new(&c, SyncConfig::default())?;
        let mut started = None;
        let begun = Instant::now();
        let now = || Moment {
            wall: chrono::Utc::now(),
            elapsed: begun.elapsed(),
        };
        while let Some(req) = engine.next_request(now())? {
            if engine.phase() == SyncPhase::Attachments && started.is_none() {
                started = Some(Instant::now());
            }
            let response = direct
                .send(&req)
                .map_err(|e| fail("transport", e.message))?;
            engine.handle_response(&response, now())?;
        }
        ours.push(started.map(|t| t.elapsed()).unwrap_or_default());
        engine.finish()?;
        let t = Instant::now();
        bare.put(format!("{sink_url}/sink"))
            .body(content)
            .send()
            .and_then(reqwest::blocking::Response::error_for_status)
            .map_err(|e| fail("bench", e.to_string()))?;
        baseline.push(t.elapsed());
    }
    let (o, b) = (median(ours), median(baseline));
    let secs = |d: Duration| d.as_secs_f64().max(1e-9);
    say(
        "upload 5 MB photo (loopback)",
        format!(
            "{:.0} ms ({:.0} MB/s) vs one bare fsynced PUT {:.0} ms: {:.2}x",
            secs(o) * 1e3,
            size as f64 / secs(o) / 1e6,
            secs(b) * 1e3,
            secs(o) / secs(b)
        ),
    );
    report.push(json!({"name": "upload_loopback", "bytes": size, "median_ms": secs(o) * 1e3, "baseline_ms": secs(b) * 1e3,
                       "ratio": secs(o) / secs(b), "mb_per_s": size as f64 / secs(o) / 1e6}));

    // 2 and 3. Bytes (and link time) against the photo's size over links that keep dropping.
    for (name, label, rate, cut_every) in [
        (
            "upload_cut_every_64kb",
            "upload, cut every 64 KB",
            64.0 * 1024.0,
            1.0,
        ),
        (
            "upload_weak_link",
            "upload, 20 KB/s cut every 2s",
            20.0 * 1024.0,
            2.0,
        ),
    ] {
        let c = Collector::open(
            &dir.path().join(format!("{name}.db")),
            &StoreOptions::default(),
        )?;
        enroll(&storage, &c, &server.url, &format!("coord-{name}"))?;
        // Data first, over the good link: this measures the photo alone.
        c.sync(&direct, None, None)?;
        let photo = noisy_jpeg(2300, 1725, 100 + report.len() as u32)?;
        let size = visit_with_photo(&c, &mut rng, &photo)?;
        let link = CutLink {
            inner: ReqwestTransport::new(&server.url).map_err(|e| fail("transport", e.message))?,
            rate,
            cut_every,
            state: parking_lot::Mutex::new(LinkState::default()),
        };
        let mut config = SyncConfig::default();
        config.retry.base = Duration::from_millis(1);
        config.retry.cap = Duration::from_millis(5);
        let r = c.sync_with(&link, config, None, None)?;
        if r.attachments_uploaded != 1 || !c.visits_with_pending_attachments()?.is_empty() {
            return Err(fail("bench", format!("{name}: the photo did not arrive")));
        }
        let s = *link.state.lock();
        let data = r.bytes_sent.saturating_sub(r.attachment_bytes_sent);
        let ratio = s.up as f64 / size as f64;
        let resent_per_cut =
            s.up.saturating_sub(size + data + r.round_trips as u64 * HEADER_BYTES) as f64
                / s.cuts.max(1) as f64;
        let time_ratio = s.clock / (size as f64 / rate);
        say(
            label,
            format!(
                "{} B up for a {} B photo: {:.3}x, {} cuts, {:.0} B lost per cut, link time {:.0} s = {:.2}x its bytes' time",
                s.up, size, ratio, s.cuts, resent_per_cut, s.clock, time_ratio
            ),
        );
        report.push(json!({"name": name, "photo_bytes": size, "up_bytes": s.up, "ratio": ratio, "cuts": s.cuts,
                           "lost_per_cut_bytes": resent_per_cut, "link_seconds": s.clock, "time_ratio": time_ratio,
                           "round_trips": r.round_trips}));
    }
    let _ = stop_sink.send(());
    let _ = sink_thread.join();
    drop(server);
    Ok(report)
}
