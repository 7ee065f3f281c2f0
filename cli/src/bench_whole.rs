//! `zoufang bench --suite whole`: the whole sync (everything `zoufang device sync` does, with
//! its defaults) of N/10, N and 5·N completed visits (N = `--visits`, 10,000 by default), so
//! growth is visible (target: 5·N ≤ 5.5× N), each against a floor measured in the same run:
//! the very bodies that sync sent, posted over loopback to a handler that only decompresses
//! them and inserts their rows (each change, each audit entry) into SQLite, one fsynced
//! transaction per request (target ≤ 2×). Also: the audit trail's share of the sync's bytes.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use parking_lot::Mutex;
use rusqlite::Connection;
use serde_json::{Value as Json, json};
use zoufang_core::protocol::messages::{self, CatalogRequest, PushRequest, Role};
use zoufang_core::protocol::stream::{decode_stream, encode_stream};
use zoufang_core::sync::{
    Cut, HttpRequest, HttpResponse, ReqwestTransport, Transport, TransportError,
};
use zoufang_core::{Collector, StoreOptions};
use zoufang_server::{AppState, BackgroundServer, SqliteStorage};

use crate::bench::{bare_db, ms};
use crate::bench_sync::{enroll, seed_rounds, server_err, transport};
use crate::sample::Rng;
use crate::{Failure, fail};

/// Records every request (the audit trail's share is counted after the sync, outside its
/// time) and the bytes of every answer.
struct Recording {
    inner: ReqwestTransport,
    requests: Mutex<Vec<HttpRequest>>,
    answer_bytes: Mutex<u64>,
}

/// Bytes of `body` that are audit entries: the body less the same request without them.
fn audit_part(request: &HttpRequest) -> u64 {
    let total = request.body.len() as u64;
    let without = match request.path.as_str() {
        "/v1/audit" => Some(0),
        "/v1/push" => messages::decode::<PushRequest>(&request.body)
            .ok()
            .and_then(|mut r| r.audit.take().and(messages::encode(&r).ok()))
            .map(|b| b.len() as u64),
        "/v1/push/stream" => {
            let (mut pushes, _) = decode_stream::<PushRequest>(&request.body);
            pushes.iter_mut().for_each(|p| p.audit = None);
            encode_stream(&pushes).ok().map(|b| b.len() as u64)
        }
        "/v1/catalog" => messages::decode::<CatalogRequest>(&request.body)
            .ok()
            .and_then(|mut r| r.audit.take().and(messages::encode(&r).ok()))
            .map(|b| b.len() as u64),
        _ => None,
    };
    without.map_or(0, |w| total.saturating_sub(w))
}

/// Forwards everything to the default transport, streamed answers as they arrive included, so
/// the sync runs as `zoufang device sync` runs it.
impl Transport for Recording {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        self.requests.lock().push(request.clone());
        let response = self.inner.send(request)?;
        *self.answer_bytes.lock() += response.body.len() as u64;
        Ok(response)
    }

    fn reads_while_sending(&self) -> bool {
        self.inner.reads_while_sending()
    }

    fn send_streaming(
        &self,
        request: &HttpRequest,
        receive: &mut dyn FnMut(u16, &mut dyn Read),
    ) -> Result<(), Cut> {
        self.requests.lock().push(request.clone());
        let mut bytes = 0;
        let sent = self.inner.send_streaming(request, &mut |status, body| {
            let mut counted = Counting { body, bytes: 0 };
            receive(status, &mut counted);
            bytes = counted.bytes;
        });
        *self.answer_bytes.lock() += bytes;
        sent
    }
}

/// A body whose bytes are counted as they are read.
struct Counting<'a> {
    body: &'a mut dyn Read,
    bytes: u64,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.body.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The floor's handler: decompress, take the rows, insert them, one fsync.
fn insert_rows(conn: &Mutex<Connection>, body: &[u8]) -> Result<usize, String> {
    // A body is one message or a stream of them (a streamed push).
    let (values, problem) = decode_stream::<Json>(body);
    if let Some(e) = problem {
        return Err(e.to_string());
    }
    let rows = values.iter().flat_map(|value| {
        ["changes", "entries"]
            .iter()
            .filter_map(|k| value.get(k).and_then(Json::as_array))
            .chain(value.pointer("/audit/entries").and_then(Json::as_array))
            .flatten()
    });
    let mut conn = conn.lock();
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    let mut n = 0;
    for row in rows {
        tx.execute(
            "INSERT INTO t (id, body) VALUES (?1, ?2)",
            rusqlite::params![uuid::Uuid::now_v7().to_string(), row.to_string()],
        )
        .map_err(|e| e.to_string())?;
        n += 1;
    }
    tx.commit().map_err(|e| e.to_string())?;
    Ok(n)
}

/// A loopback HTTP server that only inserts rows.
struct Floor {
    url: String,
    _runtime: tokio::runtime::Runtime,
}

fn floor(db: &std::path::Path) -> Result<Floor, Failure> {
    let io = |e: std::io::Error| fail("io", e.to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io)?;
    let conn = Arc::new(Mutex::new(bare_db(db)?));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let app = axum::Router::new().route(
        "/floor",
        axum::routing::post(move |body: Bytes| {
            let conn = conn.clone();
            async move {
                let done = tokio::task::spawn_blocking(move || insert_rows(&conn, &body)).await;
                match done {
                    Ok(Ok(n)) => (axum::http::StatusCode::OK, n.to_string()),
                    _ => (axum::http::StatusCode::BAD_REQUEST, String::new()),
                }
            }
        }),
    );
    runtime.spawn(async move { axum::serve(listener, app).await });
    Ok(Floor {
        url: format!("http://{addr}"),
        _runtime: runtime,
    })
}

/// A coordinator's phone with `visits` completed routine visits (and a tenth as many
/// households, synced), on the server at `url`.
fn phone(
    storage: &SqliteStorage,
    url: &str,
    path: &std::path::Path,
    visits: usize,
) -> Result<Collector, Failure> {
    let c = Collector::open(path, &StoreOptions::default())?;
    let name = format!("whole-{visits}");
    c.enroll(
        &transport(url)?,
        &enroll(storage, &name, Role::Coordinator, "513431")?,
        &name,
    )?;
    let households = (visits / 10).max(1);
    seed_rounds(&c, url, &mut Rng::new(visits as u64), (households, visits))?;
    Ok(c)
}

/// The largest sync is this many times the middle one (50,000 visits by default, the largest
/// size issue 14 measured); linear cost means at most 10% more than that factor in time.
const GROWTH: usize = 5;
const GROWTH_TARGET: f64 = GROWTH as f64 * 1.1;

pub fn run(visits: usize, json_output: bool) -> Result<Vec<Json>, Failure> {
    let dir = tempfile::Builder::new()
        .prefix("zoufang-bench-whole")
        .tempdir_in(".")
        .map_err(|e| fail("io", e.to_string()))?;
    let key = crate::server_key::ephemeral(zoufang_server::at_rest::CipherSuite::Aes256)?;
    let storage =
        Arc::new(SqliteStorage::open(&dir.path().join("server"), &key).map_err(server_err)?);
    zoufang_server::publish_defaults(storage.as_ref()).map_err(server_err)?;
    let server = BackgroundServer::start(AppState::new(storage.clone()), "127.0.0.1:0")
        .map_err(|e| fail("io", e.to_string()))?;
    let mut report = Vec::new();
    let mut times: Vec<(usize, Duration)> = Vec::new();
    for n in [(visits / 10).max(1), visits, visits * GROWTH] {
        let c = phone(
            &storage,
            &server.url,
            &dir.path().join(format!("p{n}.db")),
            n,
        )?;
        let recording = Recording {
            inner: transport(&server.url)?,
            requests: Mutex::new(Vec::new()),
            answer_bytes: Mutex::new(0),
        };
        let started = Instant::now();
        let r = c.sync(&recording, None, None)?;
        let took = started.elapsed();
        let left = c.sync_status()?.pending_changes;
        drop(c);
        // The floor: the same bodies, posted to a handler that only inserts their rows.
        let bed = floor(&dir.path().join(format!("floor{n}.db")))?;
        let t = transport(&bed.url)?;
        let requests = std::mem::take(&mut *recording.requests.lock());
        let audit_bytes: u64 = requests.iter().map(audit_part).sum();
        let all_bytes = requests.iter().map(|r| r.body.len() as u64).sum::<u64>()
            + *recording.answer_bytes.lock();
        let bodies: Vec<Vec<u8>> = requests.into_iter().map(|r| r.body).collect();
        let started = Instant::now();
        for body in bodies {
            let a = t
                .send(&HttpRequest {
                    method: "POST".into(),
                    path: "/floor".into(),
                    headers: Vec::new(),
                    body,
                })
                .map_err(|e| fail("transport", e.message))?;
            if a.status != 200 {
                return Err(fail("bench", "the floor refused a body"));
            }
        }
        let floor_time = started.elapsed();
        let ratio = ms(took) / ms(floor_time).max(1e-9);
        let audit_share = audit_bytes as f64 / all_bytes.max(1) as f64;
        if !json_output {
            outln!(
                "{:<28} {:.0} ms ({:.0} visits/s, {} round trips, {} KB up, {} KB down, {left} left) vs the floor {:.0} ms: {ratio:.2}x (target <= 2x); audit {:.1}% of the bytes (target <= 15%)",
                format!("whole sync of {n} visits"),
                ms(took),
                n as f64 / took.as_secs_f64().max(1e-9),
                r.round_trips,
                r.bytes_sent / 1024,
                r.bytes_received / 1024,
                ms(floor_time),
                audit_share * 100.0
            );
        }
        report.push(json!({"name": "whole_sync", "visits": n, "ms": ms(took), "floor_ms": ms(floor_time), "ratio": ratio,
            "target_ratio": 2.0, "round_trips": r.round_trips, "bytes_up": r.bytes_sent, "bytes_down": r.bytes_received,
            "audit_share": audit_share, "left_waiting": left}));
        times.push((n, took));
    }
    if let [_, (n1, t1), (n2, t2)] = times.as_slice() {
        let growth = t2.as_secs_f64() / t1.as_secs_f64().max(1e-9);
        if !json_output {
            outln!(
                "{:<28} {n2} visits took {growth:.1}x the time of {n1} (target <= {:.1}x)",
                "whole sync growth",
                GROWTH_TARGET
            );
        }
        report.push(json!({"name": "whole_sync_growth", "from": n1, "to": n2, "ratio": growth, "target_ratio": GROWTH_TARGET}));
    }
    drop(server);
    Ok(report)
}
