//! `zoufang bench --suite crypto`: the cost of encryption at rest. Three stores in one run —
//! plaintext, AES-256 and SM4, each keyed with a raw 256-bit key as an app would supply from the
//! platform keystore — take the same saves and searches, round by round in rotating order, so
//! the ratios against plaintext are same-run figures (targets: at most 1.15x for AES-256,
//! 1.3x for SM4). Then the server's
//! side: 10,000 changes (20 devices; fewer with a smaller `--devices`) pushed over loopback HTTP into a SQLite server kept in clear, under
//! AES-256 and under SM4 (SQLCipher pages), in rotating order, rate against the plaintext one.

use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use zoufang_core::{Cipher, Collector, StoreOptions};

use crate::bench::{median, ms};
use crate::sample::{self, Rng};
use crate::{Failure, fail};

const RAW_KEY: &str = "6f1d3c2b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff0";

pub fn run(
    households: usize,
    rounds: usize,
    devices: usize,
    json_output: bool,
) -> Result<Vec<Json>, Failure> {
    let dir = tempfile::Builder::new()
        .prefix("zoufang-bench-crypto")
        .tempdir_in(".")
        .map_err(|e| fail("io", e.to_string()))?;
    let rounds = rounds.max(3);
    let suites: [(&str, Option<Cipher>); 3] = [
        ("plaintext", None),
        ("aes256", Some(Cipher::Aes256)),
        ("sm4", Some(Cipher::Sm4)),
    ];
    let mut rng = Rng::new(11);
    let all: Vec<_> = (0..households)
        .map(|_| sample::household(&mut rng))
        .collect();
    let answers = sample::application_survey(&mut rng);
    let mut stores = Vec::new();
    for (name, cipher) in suites {
        let options = StoreOptions {
            encryption_key: cipher.map(|_| RAW_KEY.to_owned()),
            cipher: cipher.unwrap_or_default(),
        };
        let c = Collector::open(&dir.path().join(format!("{name}.db")), &options)?;
        c.sign_in("bench-coordinator")?;
        for chunk in all.chunks(1000) {
            c.import_households(chunk.to_vec())?;
        }
        stores.push((name, c));
    }

    let mut save: Vec<Vec<Duration>> = vec![Vec::new(); stores.len()];
    let mut search: Vec<Vec<Duration>> = vec![Vec::new(); stores.len()];
    for round in 0..rounds {
        let prefix: String = sample::name(&mut rng).chars().take(3).collect();
        for k in 0..stores.len() {
            let i = (round + k) % stores.len();
            let (Some((_, c)), Some(saves), Some(searches)) =
                (stores.get(i), save.get_mut(i), search.get_mut(i))
            else {
                continue;
            };
            let draft = c.start_visit(None, "application_survey")?;
            let t = Instant::now();
            c.set_answers(&draft.id, &answers)?;
            saves.push(t.elapsed());
            for _ in 0..5 {
                let t = Instant::now();
                c.search_households(&prefix, 50)?;
                searches.push(t.elapsed());
            }
        }
    }

    let medians =
        |v: &[Vec<Duration>]| -> Vec<Duration> { v.iter().cloned().map(median).collect() };
    let (save, search) = (medians(&save), medians(&search));
    let mut report = Vec::new();
    for (what, times) in [("save full visit", &save), ("search by name", &search)] {
        let plain = times.first().copied().unwrap_or_default();
        for ((name, _), t) in stores.iter().zip(times.iter()).skip(1) {
            let ratio = ms(*t) / ms(plain).max(1e-9);
            // The targets: AES within 15% of plaintext, the national suite within 30%.
            let target = if *name == "sm4" { 1.3 } else { 1.15 };
            if !json_output {
                outln!(
                    "{:<28} {:.3} ms vs plaintext {:.3} ms: {ratio:.2}x (target <= {target}x)",
                    format!("{what}, {name}"),
                    ms(*t),
                    ms(plain)
                );
            }
            report.push(
                json!({"name": format!("{}_{name}", what.replace(' ', "_")), "median_ms": ms(*t),
                               "baseline_ms": ms(plain), "ratio": ratio, "target_ratio": target,
                               "households": households, "rounds": rounds}),
            );
        }
    }
    report.extend(server_cost(devices.clamp(1, SERVER_DEVICES), json_output)?);
    Ok(report)
}

/// Devices pushing at once in the server's share, at most: 20 × 500 = 10,000 changes.
const SERVER_DEVICES: usize = 20;

/// The server-side cost of encryption at rest: the same pushes into a plaintext, an AES-256 and
/// an SM4 server, two rounds in rotating order; the better round of each counts.
fn server_cost(devices: usize, json_output: bool) -> Result<Vec<Json>, Failure> {
    use std::sync::Arc;
    use zoufang_server::at_rest::{AtRest, CipherSuite};
    use zoufang_server::{SqliteStorage, Storage};
    let suites: [(&str, Option<CipherSuite>); 3] = [
        ("plaintext", None),
        ("aes256", Some(CipherSuite::Aes256)),
        ("sm4", Some(CipherSuite::Sm4)),
    ];
    let mut best = [0f64; 3];
    for round in 0..2 {
        for k in 0..suites.len() {
            let i = (round + k) % suites.len();
            let (Some((name, suite)), Some(slot)) = (suites.get(i), best.get_mut(i)) else {
                continue;
            };
            let dir = tempfile::Builder::new()
                .prefix("zoufang-bench-server-crypto")
                .tempdir_in(".")
                .map_err(|e| fail("io", e.to_string()))?;
            let at_rest = match suite {
                Some(s) => crate::server_key::ephemeral(*s)?,
                None => AtRest::Plaintext,
            };
            let storage: Arc<dyn Storage> = Arc::new(
                SqliteStorage::open(&dir.path().join(name), &at_rest)
                    .map_err(|e| fail(e.code(), e.to_string()))?,
            );
            let (rate, _) = crate::bench_server::push_at_once(&[storage], devices)?;
            *slot = slot.max(rate);
        }
    }
    let plain = best.first().copied().unwrap_or_default().max(1e-9);
    let changes = devices * crate::bench_server::CHANGES_PER_DEVICE;
    let mut report = Vec::new();
    for ((name, _), rate) in suites.iter().zip(best).skip(1) {
        // Time per change against plaintext's: the encrypted server's slowdown.
        let ratio = plain / rate.max(1e-9);
        if !json_output {
            outln!(
                "{:<28} {rate:.0} changes/s vs plaintext {plain:.0}/s: {ratio:.2}x the time",
                format!("server push {changes}, {name}")
            );
        }
        report.push(
            json!({"name": format!("server_push_{name}"), "changes_per_s": rate,
                           "baseline_changes_per_s": plain, "ratio": ratio, "changes": changes}),
        );
    }
    Ok(report)
}
