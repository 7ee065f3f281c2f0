//! `zoufang bench --suite server`: many devices pushing at once, over HTTP on loopback, against
//! one SQLite node, and — when `ZOUFANG_TEST_POSTGRES` names a cluster (run the bench under
//! `scripts/with-postgres.sh`) — against one and two PostgreSQL nodes on one database, all in
//! the same run: changes per second and the p99 latency of a push, each next to SQLite's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use zoufang_core::protocol::messages::{
    self, Change, ChangeOp, EnrollRequest, PushRequest, Role, UserInfo,
};
use zoufang_core::sync::{HttpRequest, ReqwestTransport, Transport};
use zoufang_server::{
    AppState, BackgroundServer, DEVICE_TOKEN_LIFETIME, PgStorage, SqliteStorage, Storage,
};

use crate::bench::{ms, percentile};
use crate::{Failure, fail};

const BATCHES_PER_DEVICE: usize = 5;
const BATCH: usize = 100;
/// Changes one device pushes in `push_at_once`.
pub(crate) const CHANGES_PER_DEVICE: usize = BATCHES_PER_DEVICE * BATCH;

fn server_err(e: zoufang_server::ServerError) -> Failure {
    fail(e.code(), e.to_string())
}

/// A device's pushes, ready to send: (token, bodies).
fn device_pushes(storage: &dyn Storage, i: usize) -> Result<(String, Vec<Vec<u8>>), Failure> {
    let now = chrono::Utc::now();
    let user = UserInfo {
        id: format!("load-{i}"),
        role: Role::Coordinator,
        areas: vec!["513431244".into()],
    };
    storage.create_user(&user, now).map_err(server_err)?;
    let token = storage
        .issue_enrollment(&user.id, Duration::from_secs(3600), now)
        .map_err(server_err)?;
    let enrolled = storage
        .enroll(
            &EnrollRequest::new(&token, "load"),
            DEVICE_TOKEN_LIFETIME,
            now,
        )
        .map_err(server_err)?;
    let bodies = (0..BATCHES_PER_DEVICE)
        .map(|round| {
            let changes = (0..BATCH)
                .map(|k| Change {
                    seq: (round * BATCH + k + 1) as u64,
                    hlc: String::new(),
                    device_time: now.to_rfc3339(),
                    op: ChangeOp::CreateHousehold {
                        id: uuid::Uuid::now_v7().to_string(),
                        village_code: format!("513431244{:03}", 201 + (i % 30)),
                        fields: json!({"phone": "13812345678", "urban_rural": "rural"})
                            .as_object()
                            .cloned()
                            .unwrap_or_default(),
                    },
                })
                .collect();
            messages::encode(&PushRequest {
                protocol: messages::PROTOCOL_VERSION,
                device_id: enrolled.device_id.clone(),
                device_time: now.to_rfc3339(),
                changes,
                audit: None,
                held: Vec::new(),
            })
            .map_err(|e| fail("bench", e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    Ok((enrolled.device_token, bodies))
}

/// All devices push at once, device `i` to node `i % nodes`: (changes per second, p99).
pub(crate) fn push_at_once(
    nodes: &[Arc<dyn Storage>],
    devices: usize,
) -> Result<(f64, Duration), Failure> {
    let servers = nodes
        .iter()
        .map(|s| BackgroundServer::start(AppState::new(s.clone()), "127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| fail("io", e.to_string()))?;
    let first = nodes
        .first()
        .ok_or_else(|| fail("bench", "no server node"))?;
    let work = (0..devices)
        .map(|i| device_pushes(first.as_ref(), i))
        .collect::<Result<Vec<_>, _>>()?;
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let started = Instant::now();
    let threads: Vec<_> = work
        .into_iter()
        .enumerate()
        .map(|(i, (token, bodies))| {
            let url = urls.get(i % urls.len()).cloned().unwrap_or_default();
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                let t = ReqwestTransport::new(&url).map_err(|e| e.message)?;
                let mut latencies = Vec::new();
                for body in bodies {
                    let sent = Instant::now();
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
                    latencies.push(sent.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for th in threads {
        latencies.extend(
            th.join()
                .map_err(|_| fail("bench", "a pushing thread panicked"))?
                .map_err(|e| fail("bench", e))?,
        );
    }
    let elapsed = started.elapsed();
    let total = (devices * BATCHES_PER_DEVICE * BATCH) as f64;
    Ok((
        total / elapsed.as_secs_f64().max(1e-9),
        percentile(latencies, 0.99),
    ))
}

pub fn run(devices: usize, json_output: bool) -> Result<Vec<Json>, Failure> {
    let say = |name: &str, line: String| {
        if !json_output {
            println!("{name:<44} {line}");
        }
    };
    let mut report = Vec::new();
    let dir = tempfile::Builder::new()
        .prefix("zoufang-bench")
        .tempdir_in(".")
        .map_err(|e| fail("io", e.to_string()))?;
    let sqlite: Arc<dyn Storage> = Arc::new(
        SqliteStorage::open(
            &dir.path().join("sqlite"),
            &crate::server_key::ephemeral(zoufang_server::at_rest::CipherSuite::Aes256)?,
        )
        .map_err(server_err)?,
    );
    let (base_rate, base_p99) = push_at_once(&[sqlite], devices)?;
    let changes = devices * BATCHES_PER_DEVICE * BATCH;
    say(
        &format!("{devices} devices pushing, SQLite, 1 node"),
        format!(
            "{changes} changes: {base_rate:.0}/s, p99 push {:.0} ms",
            ms(base_p99)
        ),
    );
    report.push(
        json!({"name": "server_push_sqlite", "devices": devices, "changes": changes,
        "per_second": base_rate, "p99_ms": ms(base_p99)}),
    );
    let Ok(admin) = std::env::var("ZOUFANG_TEST_POSTGRES") else {
        say(
            "PostgreSQL",
            "not measured: run under scripts/with-postgres.sh".into(),
        );
        return Ok(report);
    };
    let at_rest = crate::server_key::ephemeral(zoufang_server::at_rest::CipherSuite::Aes256)?;
    for nodes in [1usize, 2] {
        let url = fresh_database(&admin)?;
        let storages = (0..nodes)
            .map(|_| {
                PgStorage::open(&url, &dir.path().join(format!("pg-{nodes}")), &at_rest)
                    .map(|s| Arc::new(s) as Arc<dyn Storage>)
                    .map_err(server_err)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (rate, p99) = push_at_once(&storages, devices)?;
        say(
            &format!("{devices} devices pushing, PostgreSQL, {nodes} node(s)"),
            format!(
                "{rate:.0}/s ({:.2}x SQLite), p99 push {:.0} ms ({:.2}x SQLite)",
                rate / base_rate.max(1e-9),
                ms(p99),
                ms(p99) / ms(base_p99).max(1e-9)
            ),
        );
        report.push(json!({"name": "server_push_postgres", "nodes": nodes, "devices": devices,
            "changes": changes, "per_second": rate, "p99_ms": ms(p99),
            "rate_vs_sqlite": rate / base_rate.max(1e-9), "p99_vs_sqlite": ms(p99) / ms(base_p99).max(1e-9)}));
    }
    Ok(report)
}

/// A fresh database of the cluster, as a connection string.
fn fresh_database(admin: &str) -> Result<String, Failure> {
    let name = format!("zf_bench_{}", uuid::Uuid::new_v4().simple());
    let mut client = postgres::Client::connect(admin, postgres::NoTls)
        .map_err(|e| fail("database", e.to_string()))?;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .map_err(|e| fail("database", e.to_string()))?;
    Ok(format!("{admin} dbname={name}"))
}
