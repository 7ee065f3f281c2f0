//! `zoufang bench`: each figure is a ratio against a baseline measured in the same run, on the
//! same disk, interleaved round by round, because shared machines are noisy.
//!
//! - save a full application survey (one user action, synchronous=FULL) against one bare
//!   fsynced SQLite insert of the same bytes;
//! - insert N households (with members) against bare inserts of the same bytes;
//! - search N households by name prefix (target ≤ 5 ms);
//! - open a store holding them, against a bare SQLite open and first read;
//! - prepare a 12-megapixel camera photo (orient, downscale, re-encode), against decoding it.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use serde_json::{Value as Json, json};
use zoufang_core::{Collector, StoreOptions};

use crate::sample::{self, Rng};
use crate::{Failure, fail};

pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub(crate) fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn bare_db(path: &Path) -> Result<Connection, Failure> {
    let conn = Connection::open(path).map_err(|e| fail("bench", e.to_string()))?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
        .map_err(|e| fail("bench", e.to_string()))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| fail("bench", e.to_string()))?;
    conn.execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
        .map_err(|e| fail("bench", e.to_string()))?;
    Ok(conn)
}

pub(crate) fn bench_err(e: rusqlite::Error) -> Failure {
    fail("bench", e.to_string())
}

pub fn run(
    households: usize,
    rounds: usize,
    json_output: bool,
) -> Result<Vec<serde_json::Value>, Failure> {
    // On the project's disk, not a tmpfs: fsync must cost what it costs on a phone's flash.
    let dir = tempfile::Builder::new()
        .prefix("zoufang-bench")
        .tempdir_in(".")
        .map_err(|e| fail("io", e.to_string()))?;
    let rounds = rounds.max(3);
    let mut report = Vec::new();
    let mut rng = Rng::new(7);
    let say = |name: &str, line: String| {
        if !json_output {
            outln!("{name:<28} {line}");
        }
    };

    // 1. Saving a full visit.
    let c = Collector::open(&dir.path().join("store.db"), &StoreOptions::default())?;
    c.sign_in("bench-coordinator")?;
    let bare = bare_db(&dir.path().join("bare.db"))?;
    let answers = sample::application_survey(&mut rng);
    let count = sample::answer_count(&answers);
    let (mut save, mut baseline, mut complete) = (Vec::new(), Vec::new(), Vec::new());
    let mut stored_bytes = 0;
    for round in 0..rounds {
        let draft = c.start_visit(None, "application_survey")?;
        let body = {
            // The exact bytes the store writes for this visit.
            let probe = c.start_visit(None, "application_survey")?;
            c.set_answers(&probe.id, &answers)?;
            Json::Object(c.visit(&probe.id)?.answers).to_string()
        };
        stored_bytes = body.len();
        let time_save = || -> Result<Duration, Failure> {
            let t = Instant::now();
            c.set_answers(&draft.id, &answers)?;
            Ok(t.elapsed())
        };
        let time_bare = || -> Result<Duration, Failure> {
            let t = Instant::now();
            bare.execute(
                "INSERT INTO t (id, body) VALUES (?1, ?2)",
                params![uuid::Uuid::now_v7().to_string(), body],
            )
            .map_err(bench_err)?;
            Ok(t.elapsed())
        };
        if round % 2 == 0 {
            save.push(time_save()?);
            baseline.push(time_bare()?);
        } else {
            baseline.push(time_bare()?);
            save.push(time_save()?);
        }
        let t = Instant::now();
        c.complete_visit(&draft.id)?;
        complete.push(t.elapsed());
    }
    let (s, b, k) = (median(save), median(baseline), median(complete));
    let ratio = s.as_secs_f64() / b.as_secs_f64().max(1e-9);
    say(
        "save full visit",
        format!(
            "{:.2} ms vs bare fsynced insert {:.2} ms: {ratio:.2}x (target <= 1.5x); {count} answers, {stored_bytes} bytes",
            ms(s),
            ms(b)
        ),
    );
    say(
        "complete visit",
        format!(
            "{:.2} ms ({:.2}x the bare insert; validates, derives, updates the household)",
            ms(k),
            ms(k) / ms(b).max(1e-9)
        ),
    );
    report.push(json!({"name": "save_full_visit", "median_ms": ms(s), "baseline_ms": ms(b), "ratio": ratio, "target_ratio": 1.5,
                       "answers": count, "bytes": stored_bytes, "rounds": rounds}));
    report.push(json!({"name": "complete_visit", "median_ms": ms(k), "baseline_ms": ms(b), "ratio": ms(k) / ms(b).max(1e-9)}));
    drop(c);

    // 2. Inserting N households, in batches as a first download would.
    let big = dir.path().join("big.db");
    let c = Collector::open(&big, &StoreOptions::default())?;
    c.sign_in("bench-coordinator")?;
    let bare = bare_db(&dir.path().join("bare-households.db"))?;
    let all: Vec<_> = (0..households)
        .map(|_| sample::household(&mut rng))
        .collect();
    let batch = 1000;
    let t = Instant::now();
    for chunk in all.chunks(batch) {
        c.import_households(chunk.to_vec())?;
    }
    let import = t.elapsed();
    let mut bare_conn = bare;
    let t = Instant::now();
    for chunk in all.chunks(batch) {
        let tx = bare_conn.transaction().map_err(bench_err)?;
        for h in chunk {
            let body = serde_json::to_string(h).map_err(|e| fail("bench", e.to_string()))?;
            tx.execute(
                "INSERT INTO t (id, body) VALUES (?1, ?2)",
                params![uuid::Uuid::now_v7().to_string(), body],
            )
            .map_err(bench_err)?;
        }
        tx.commit().map_err(bench_err)?;
    }
    let bare_import = t.elapsed();
    let members: usize = all.iter().map(|h| h.members.len()).sum();
    say(
        &format!("insert {households} households"),
        format!(
            "{:.0} ms ({:.1} µs each, {members} members) vs bare inserts of the same bytes {:.0} ms: {:.1}x",
            ms(import),
            import.as_secs_f64() * 1e6 / households.max(1) as f64,
            ms(bare_import),
            ms(import) / ms(bare_import).max(1e-9)
        ),
    );
    report.push(json!({"name": "insert_households", "households": households, "members": members, "total_ms": ms(import),
                       "baseline_ms": ms(bare_import), "ratio": ms(import) / ms(bare_import).max(1e-9)}));

    // 3. Searching them by name prefix.
    let mut times = Vec::new();
    let mut hits = 0;
    for _ in 0..(rounds * 5) {
        let full = sample::name(&mut rng);
        let prefix: String = full.chars().take(3).collect();
        let t = Instant::now();
        hits += c.search_households(&prefix, 50)?.len();
        times.push(t.elapsed());
    }
    let (m, p95) = (median(times.clone()), percentile(times, 0.95));
    say(
        &format!("search {households} by name"),
        format!(
            "median {:.3} ms, p95 {:.3} ms (target <= 5 ms); {:.1} hits per query",
            ms(m),
            ms(p95),
            hits as f64 / (rounds * 5) as f64
        ),
    );
    report.push(json!({"name": "search_by_name_prefix", "median_ms": ms(m), "p95_ms": ms(p95), "target_ms": 5.0}));
    drop(c);

    // 4. Opening the store that holds them.
    let (mut open, mut bare_open) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        let c = Collector::open(&big, &StoreOptions::default())?;
        open.push(t.elapsed());
        drop(c);
        let t = Instant::now();
        let conn = Connection::open(&big).map_err(bench_err)?;
        let _: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(bench_err)?;
        bare_open.push(t.elapsed());
    }
    let (o, bo) = (median(open), median(bare_open));
    say(
        &format!("open store of {households}"),
        format!(
            "{:.2} ms vs bare SQLite open and first read {:.2} ms: {:.1}x",
            ms(o),
            ms(bo),
            ms(o) / ms(bo).max(1e-9)
        ),
    );
    report.push(json!({"name": "open_store", "households": households, "median_ms": ms(o), "baseline_ms": ms(bo), "ratio": ms(o) / ms(bo).max(1e-9)}));

    // 5. Preparing a 12-megapixel camera photo, against only decoding it.
    let camera = {
        let mut seed = 7u32;
        let img = image::RgbImage::from_fn(4000, 3000, |x, y| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let n = (seed >> 26) as u8;
            image::Rgb([(x / 9) as u8 ^ n, (y / 7) as u8 ^ n, ((x + y) / 13) as u8])
        });
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&img)
            .map_err(|e| fail("bench", e.to_string()))?;
        jpeg
    };
    let (mut prepare, mut decode_only, mut out_bytes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..rounds.min(10) {
        let t = Instant::now();
        let prepared = zoufang_core::media::prepare_photo(&camera, &Default::default())
            .map_err(|e| fail(e.code(), e.to_string()))?;
        prepare.push(t.elapsed());
        out_bytes = prepared.bytes.len();
        let t = Instant::now();
        image::load_from_memory(&camera).map_err(|e| fail("bench", e.to_string()))?;
        decode_only.push(t.elapsed());
    }
    let (p, d) = (median(prepare), median(decode_only));
    say(
        "prepare a 12 MP photo",
        format!(
            "{:.0} ms ({} KB in, {} KB out, 1600 px) vs decoding it alone {:.0} ms: {:.2}x",
            ms(p),
            camera.len() / 1024,
            out_bytes / 1024,
            ms(d),
            ms(p) / ms(d).max(1e-9)
        ),
    );
    report.push(json!({"name": "prepare_photo_12mp", "median_ms": ms(p), "baseline_ms": ms(d), "ratio": ms(p) / ms(d).max(1e-9),
                       "input_bytes": camera.len(), "output_bytes": out_bytes}));

    Ok(report)
}

/// The Rust side of `bindings/bench.sh`, which times the same call from Kotlin against the same
/// store. `prepare` writes one full application survey draft and prints its id.
pub fn validate_probe(
    c: &Collector,
    prepare: bool,
    visit: Option<&str>,
    rounds: usize,
) -> Result<(), Failure> {
    if prepare {
        c.sign_in("bench-coordinator")?;
        let mut rng = Rng::new(7);
        let draft = c.start_visit(None, "application_survey")?;
        c.set_answers(&draft.id, &sample::application_survey(&mut rng))?;
        outln!("{}", draft.id);
        return Ok(());
    }
    let visit =
        visit.ok_or_else(|| fail("invalid_input", "--visit is required without --prepare"))?;
    let mut times = Vec::with_capacity(rounds);
    let mut problems = 0;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        problems = c.validate_visit(visit)?.len();
        times.push(t.elapsed());
    }
    let nanos: Vec<u128> = times.iter().map(Duration::as_nanos).collect();
    outln!("{}", json!({"problems": problems, "nanos": nanos}));
    Ok(())
}
