//! The `zoufang` binary as a desk user and a script see it: outputs, JSON, one-line errors and
//! exit codes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value as Json, json};

/// The key of the tests' stores (encrypted, as a coordinator's is).
const STORE_KEY: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn zoufang(store: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zoufang"));
    cmd.args(args)
        .env_remove("ZOUFANG_STORE")
        .env("ZOUFANG_STORE_KEY", STORE_KEY);
    if let Some(s) = store {
        cmd.env("ZOUFANG_STORE", s);
    }
    cmd.output().unwrap()
}

fn ok_json(store: Option<&Path>, args: &[&str]) -> Json {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = zoufang(store, &all);
    assert!(
        out.status.success(),
        "{args:?}: {} {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn form_print_in_yi_and_check() {
    let out = zoufang(None, &["form", "print", "--lang", "ii"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("ꅉꀨꁱꂷ"), "Yi section title");
    assert!(
        text.contains("[resident_id id_number] *"),
        "Chinese fallback with types: {text}"
    );
    let def = ok_json(None, &["form", "print"]);
    assert_eq!(def["id"], json!("household_visit"));

    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(&good, def.to_string()).unwrap();
    let checked = ok_json(None, &["form", "check", good.to_str().unwrap()]);
    assert_eq!(checked["ok"], json!(true));

    let mut broken = def.clone();
    broken["sections"][0]["items"][2]["relevant"] = json!("${no_such_field} = 'x'");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, broken.to_string()).unwrap();
    let out = zoufang(None, &["form", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("sections[0] (visit).items[2] (task_id).relevant"),
        "{err}"
    );
    assert!(err.contains("expr_unknown_field"), "{err}");
    assert!(
        err.lines()
            .last()
            .unwrap()
            .starts_with("error[form_invalid]"),
        "{err}"
    );
}

#[test]
fn a_desk_user_records_a_visit_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("desk.db");
    let s = Some(store.as_path());
    ok_json(s, &["init", "--user", "desk-1"]);
    let added = ok_json(
        s,
        &[
            "household",
            "add",
            "--village",
            "513431104201",
            "--fields",
            r#"{"phone": "13812345678", "next_visit_due": "2026-12-01"}"#,
            "--member",
            r#"{"name": "吉克阿呷", "id_type": "resident_id", "id_number": "11010519491231002X", "relationship": "02", "lives_together": "yes", "health": "healthy"}"#,
        ],
    );
    let hid = added["id"].as_str().unwrap().to_owned();
    assert_eq!(
        ok_json(s, &["household", "search", "吉克"])[0]["id"],
        json!(hid)
    );
    assert_eq!(
        ok_json(s, &["household", "list", "--village", "513431104201"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        ok_json(s, &["household", "due", "--before", "2026-12-31"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let visit = ok_json(
        s,
        &[
            "visit",
            "start",
            "--type",
            "disability_check",
            "--household",
            &hid,
        ],
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let answers = dir.path().join("answers.json");
    std::fs::write(
        &answers,
        json!({
            "trigger_source": "schedule", "outcome": "completed", "interviewee_name": "吉克阿呷",
            "location": {"lat": 27.9, "lon": 102.2, "accuracy_m": 10.0, "provider": "gps"},
            "urban_rural": "rural", "basic_living_difficulty": "no", "risk_level": "low", "recommendation": "monitor",
            "emergency": "no", "next_visit_due": "2027-03-01", "investigator_1_name": "马海木呷", "consent_privacy": "yes",
            "members": [{"id_number": "11010519491231002Y"}]
        })
        .to_string(),
    )
    .unwrap();
    ok_json(
        s,
        &[
            "visit",
            "set",
            &visit,
            "--answers",
            answers.to_str().unwrap(),
        ],
    );
    let problems = ok_json(s, &["visit", "validate", &visit]);
    let ids: Vec<&Json> = problems
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["path"] == json!("members[0].id_number"))
        .collect();
    assert_eq!(ids[0]["code"], json!("resident_id_characters"));
    assert_eq!(ids[0]["severity"], json!("error"));
    assert!(ids[0]["message_zh"].as_str().unwrap().contains("身份证"));

    // Completion is refused with the problems listed, exit code 1, one error line.
    let out = zoufang(s, &["visit", "complete", &visit]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("members[0].id_number") && err.contains("resident_id_characters"),
        "{err}"
    );
    assert!(
        !err.contains("11010519491231002Y"),
        "no personal data in errors"
    );

    let out = zoufang(
        s,
        &[
            "visit",
            "set",
            &visit,
            "members[0].id_number",
            r#""11010519491231002X""#,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The interviewee signs on the draft (a PNG from the signature pad).
    let png = dir.path().join("signature.png");
    image::GrayAlphaImage::from_fn(400, 120, |x, y| {
        image::LumaA([0, if (x + 3 * y) % 11 == 0 { 255 } else { 0 }])
    })
    .save(&png)
    .unwrap();
    ok_json(
        s,
        &[
            "visit",
            "add-signature",
            &visit,
            "interviewee_signature",
            png.to_str().unwrap(),
        ],
    );
    // RUST_LOG works for a desk command too: the completion is logged by ids, never by value.
    let out = Command::new(env!("CARGO_BIN_EXE_zoufang"))
        .args(["--json", "visit", "complete", &visit])
        .env("ZOUFANG_STORE", &store)
        .env("ZOUFANG_STORE_KEY", STORE_KEY)
        .env("RUST_LOG", "zoufang_core=trace")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let logged = stderr(&out);
    assert!(logged.contains("visit completed"), "{logged}");
    for personal in ["吉克阿呷", "11010519491231002X", "13812345678"] {
        assert!(!logged.contains(personal), "{logged}");
    }
    let done: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["status"], json!("completed"));
    let shown = ok_json(s, &["household", "show", &hid]);
    assert_eq!(shown["household"]["next_visit_due"], json!("2027-03-01"));
    assert_eq!(shown["visits"][0]["id"], json!(visit));
    ok_json(s, &["visit", "sign", &visit]);
    let counts = ok_json(s, &["counts"]);
    assert_eq!(
        (counts["households"].clone(), counts["signed"].clone()),
        (json!(1), json!(1))
    );
    // The family moves away: no longer listed or counted, still found with --all.
    ok_json(
        s,
        &[
            "household",
            "status",
            &hid,
            "moved_away",
            "--reason",
            "全家搬到西昌",
        ],
    );
    let counts = ok_json(s, &["counts"]);
    assert_eq!(
        (
            counts["households"].clone(),
            counts["households_inactive"].clone()
        ),
        (json!(0), json!(1))
    );
    let found = ok_json(s, &["household", "search", "--all", "1101"]);
    assert_eq!(found[0]["status"], json!("moved_away"));
}

#[test]
fn a_desk_user_works_on_an_encrypted_store_with_the_key_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("k.db");
    let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let run = |key: Option<&str>, args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zoufang"));
        cmd.args(args)
            .env("ZOUFANG_STORE", &store)
            .env_remove("ZOUFANG_STORE_KEY");
        if let Some(k) = key {
            cmd.env("ZOUFANG_STORE_KEY", k);
        }
        cmd.output().unwrap()
    };
    for sm4 in [false, true] {
        let _ = std::fs::remove_file(&store);
        let flag: &[&'static str] = if sm4 { &["--sm4"] } else { &[] };
        let with = |args: &[&'static str]| -> Vec<&'static str> { [flag, args].concat() };
        assert!(
            run(Some(key), &with(&["init", "--user", "u"]))
                .status
                .success()
        );
        assert!(run(Some(key), &with(&["counts"])).status.success());
        let out = run(None, &with(&["counts"]));
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).starts_with("error[wrong_key_or_not_a_store]"),
            "{}",
            stderr(&out)
        );
        // The key is never echoed, not even in help.
        let help = run(Some(key), &["--help"]);
        assert!(!String::from_utf8_lossy(&help.stdout).contains(key));
    }
    // No key: a new store in clear only when asked for, and never with a key too.
    let _ = std::fs::remove_file(&store);
    let out = run(None, &["init", "--user", "u"]);
    assert!(
        stderr(&out).starts_with("error[plaintext_refused]"),
        "{}",
        stderr(&out)
    );
    assert!(!store.exists());
    let out = run(Some(key), &["--plaintext", "init", "--user", "u"]);
    assert!(!out.status.success());
    assert!(!store.exists());
    assert!(
        run(None, &["--plaintext", "init", "--user", "u"])
            .status
            .success()
    );
    assert!(run(None, &["counts"]).status.success());
}

#[test]
fn errors_are_one_line_with_a_code_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("e.db");
    let s = Some(store.as_path());
    let out = zoufang(None, &["counts"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error[no_store]: give --store PATH or set ZOUFANG_STORE"
    );

    let out = zoufang(s, &["visit", "start", "--type", "routine"]);
    assert_eq!(
        stderr(&out).trim(),
        "error[not_signed_in]: no user is signed in on this store"
    );
    ok_json(s, &["init", "--user", "u"]);
    let out = zoufang(
        s,
        &[
            "--json",
            "household",
            "add",
            "--village",
            "5134",
            "--fields",
            "{bad",
        ],
    );
    let err: Json = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert_eq!(err["error"]["code"], json!("invalid_json"));
    for village in ["5134", ""] {
        let out = zoufang(s, &["household", "add", "--village", village]);
        assert!(
            stderr(&out).starts_with("error[invalid_value]"),
            "{village:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(ok_json(s, &["counts"])["households"], json!(0));
    // An endless answers file is refused at once, not read until memory runs out.
    let v = ok_json(s, &["visit", "start", "--type", "new_discovery"]);
    let id = v["id"].as_str().unwrap();
    let started = std::time::Instant::now();
    let out = zoufang(s, &["visit", "set", id, "--answers", "/dev/zero"]);
    assert!(
        stderr(&out).starts_with("error[file_too_large]"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let out = zoufang(s, &["visit", "show", "nope"]);
    assert_eq!(
        stderr(&out).trim(),
        "error[not_found]: visit nope does not exist"
    );
    assert_eq!(stderr(&out).lines().count(), 1);
}

#[test]
fn the_demo_story_runs_and_reports_every_step() {
    let out = ok_json(None, &["demo"]);
    assert_eq!(out["ok"], json!(true));
    let steps = out["steps"].as_array().unwrap();
    assert!(steps.len() >= 9 && steps.iter().all(|s| s["ok"] == json!(true)));
    let caught = steps
        .iter()
        .find(|s| s["what"].as_str().unwrap().contains("mistyped"))
        .unwrap();
    assert!(
        caught["detail"]["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["path"] == json!("members[2].id_number"))
    );
}

#[test]
fn the_benchmark_runs_and_reports_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zoufang"))
        .args([
            "--json",
            "bench",
            "--suite",
            "store,sync,server,crypto,attachments,whole",
            "--households",
            "300",
            "--rounds",
            "3",
            "--visits",
            "100",
            "--devices",
            "4",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Json = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = report["benchmarks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "save_full_visit",
            "complete_visit",
            "insert_households",
            "search_by_name_prefix",
            "open_store",
            "prepare_photo_12mp",
            "bytes_per_visit",
            "round_trips",
            "push_visits",
            "pull_township",
            "server_throughput",
            "weak_link",
            "server_push_sqlite",
            "save_full_visit_aes256",
            "save_full_visit_sm4",
            "search_by_name_aes256",
            "search_by_name_sm4",
            "server_push_aes256",
            "server_push_sm4",
            "upload_loopback",
            "upload_cut_every_64kb",
            "upload_weak_link",
            "whole_sync",
            "whole_sync",
            "whole_sync",
            "whole_sync_growth"
        ]
    );
    // The whole sync at 10, 100 and 500 visits: everything sent, each against its floor.
    let whole = &report["benchmarks"].as_array().unwrap()[22..25];
    for (b, n) in whole.iter().zip([10, 100, 500]) {
        assert!(
            b["visits"] == json!(n)
                && b["left_waiting"] == json!(0)
                && b["ratio"].as_f64().unwrap() > 0.0,
            "{b}"
        );
        let share = b["audit_share"].as_f64().unwrap();
        assert!(share > 0.0 && share < 0.5, "{b}");
    }
    assert_eq!(report["benchmarks"][25]["to"], json!(500));
    // Encrypted against plaintext: real ratios, measured on stores that hold the households.
    for b in &report["benchmarks"].as_array().unwrap()[13..17] {
        assert!(
            b["ratio"].as_f64().unwrap() > 0.0 && b["households"] == json!(60),
            "{b}"
        );
    }
    // The server's share: every change of 4 devices pushed into each server.
    for b in &report["benchmarks"].as_array().unwrap()[17..19] {
        assert!(
            b["ratio"].as_f64().unwrap() > 0.0 && b["changes"] == json!(2000),
            "{b}"
        );
    }
    let pull = &report["benchmarks"][9];
    assert_eq!(
        pull["probe"]["households"],
        json!(300),
        "the probe pulled every household"
    );
    let weak = &report["benchmarks"][11];
    let server = &report["benchmarks"][12];
    assert!(
        server["per_second"].as_f64().unwrap() > 0.0 && server["changes"] == json!(4 * 5 * 100),
        "{server}"
    );
    assert!(
        weak["cuts"].as_u64().unwrap() <= weak["link_seconds"].as_f64().unwrap() as u64 / 2 + 1
    );
    assert!(
        weak["worst_cut_bytes"].as_u64().unwrap()
            <= weak["largest_request_bytes"].as_u64().unwrap()
    );
    let photo = &report["benchmarks"][5];
    assert!(
        photo["output_bytes"].as_u64().unwrap() <= 500 * 1024
            && photo["ratio"].as_f64().unwrap() > 1.0
    );
    // Photos: a real upload, and over links that drop, little more than the photo goes up.
    let upload = &report["benchmarks"][19];
    assert!(
        upload["ratio"].as_f64().unwrap() > 0.0 && upload["bytes"].as_u64().unwrap() > 5_000_000
    );
    for b in &report["benchmarks"].as_array().unwrap()[20..22] {
        let ratio = b["ratio"].as_f64().unwrap();
        assert!(
            (1.0..1.3).contains(&ratio) && b["cuts"].as_u64().unwrap() > 50,
            "{b}"
        );
        assert!(b["lost_per_cut_bytes"].as_f64().unwrap() < 8192.0, "{b}");
    }
    let save = &report["benchmarks"][0];
    assert!(save["ratio"].as_f64().unwrap() > 0.0 && save["answers"].as_u64().unwrap() > 120);
    // The benchmark cleans up after itself.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// The sync through a real weak link in real time, at a small size: every scenario gets all of
/// its data through, and the stall is noticed by the read timeout.
#[test]
fn the_link_benchmark_gets_everything_through() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zoufang"))
        .args(["--json", "bench", "--suite", "link", "--visits", "60"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Json = serde_json::from_slice(&out.stdout).unwrap();
    let all = report["benchmarks"].as_array().unwrap();
    let names: Vec<&str> = all.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "link_2s_cuts",
            "link_half_second_cuts",
            "pull_2s_cuts",
            "pull_half_second_cuts",
            "photos_2s_cuts",
            "stall"
        ]
    );
    for b in &all[..5] {
        assert!(b["all_arrived"] == json!(true), "{b}");
        assert!(
            b["ratio"].as_f64().unwrap() >= 1.0 && b["clean_bytes"].as_u64().unwrap() > 0,
            "{b}"
        );
    }
    let stall = &all[5];
    let noticed = stall["noticed_seconds"].as_f64().unwrap();
    // The read timeout (15 s) counts from the last byte read, which may come a little before
    // the stall: noticed by it, not at once (a stall is no cut) and well within 20 s.
    assert!(
        (10.0..20.0).contains(&noticed) && stall["finished"] == json!(true),
        "{stall}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// `zoufang serve` as its own process, administered with `zoufang admin`, and a desk device
/// that enrols and syncs with `zoufang device`.
#[test]
fn serve_admin_and_device_commands_work_together() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let data_s = data.to_str().unwrap();
    // A free loopback port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    // The server refuses to start without a key (or --plaintext); with one from a file, its
    // data is encrypted.
    let refused = zoufang(None, &["--json", "admin", "--data", data_s, "stats"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no_server_key"));
    let key_file = dir.path().join("server.key");
    let key_s = key_file.to_str().unwrap();
    ok_json(None, &["admin", "new-key", "--out", key_s]);
    ok_json(
        None,
        &[
            "admin",
            "--data",
            data_s,
            "--key-file",
            key_s,
            "user-add",
            "coord-1",
            "--role",
            "coordinator",
            "--area",
            "513431104201",
        ],
    );
    let token = ok_json(
        None,
        &[
            "admin",
            "--data",
            data_s,
            "--key-file",
            key_s,
            "enroll-token",
            "coord-1",
        ],
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let server = Command::new(env!("CARGO_BIN_EXE_zoufang"))
        .args([
            "serve",
            "--data",
            data_s,
            "--key-file",
            key_s,
            "--listen",
            &listen,
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://{listen}");
    // Up to 30 s: a loaded CI machine starts the server slowly.
    for _ in 0..600 {
        if std::net::TcpStream::connect(&listen).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let store = dir.path().join("phone.db");
    let s = Some(store.as_path());
    let device = |args: &[&str]| {
        let mut all = vec!["device", "--server", url.as_str()];
        all.extend_from_slice(args);
        ok_json(s, &all)
    };
    let user = device(&["enroll", "--token", &token]);
    assert_eq!(user["id"], json!("coord-1"));
    ok_json(
        s,
        &[
            "household",
            "add",
            "--village",
            "513431104201",
            "--fields",
            r#"{"phone": "13812345678"}"#,
        ],
    );
    // The desk sync at TRACE: an administrator sees what it did, and nothing personal.
    let traced = Command::new(env!("CARGO_BIN_EXE_zoufang"))
        .args(["--json", "device", "--server", &url, "sync"])
        .env("ZOUFANG_STORE", &store)
        .env("ZOUFANG_STORE_KEY", STORE_KEY)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(traced.status.success(), "{}", stderr(&traced));
    let logged = stderr(&traced);
    assert!(logged.contains("sync finished"), "{logged}");
    assert!(logged.contains("pushed=1"), "{logged}");
    assert!(!logged.contains("13812345678"), "{logged}");
    let report: Json = serde_json::from_slice(&traced.stdout).unwrap();
    assert_eq!(
        (report["pushed"].clone(), report["accepted"].clone()),
        (json!(1), json!(1))
    );
    let status = device(&["status"]);
    assert_eq!(
        (
            status["enrolled"].clone(),
            status["pending_changes"].clone()
        ),
        (json!(true), json!(0))
    );
    // The token's expiry, renewed by the sync, as the server lists it (180 days by default).
    let expires = status["token_expires_at"].as_str().unwrap_or_default();
    let listed = ok_json(
        None,
        &[
            "admin",
            "--data",
            data_s,
            "--key-file",
            key_s,
            "device-list",
        ],
    );
    assert_eq!(listed[0]["token_expires_at"], json!(expires));
    assert!(expires.len() >= 20, "{status}");
    assert_eq!(device(&["conflicts"]), json!([]));
    // The token works once.
    let again = zoufang(
        s,
        &["device", "--server", &url, "enroll", "--token", &token],
    );
    assert!(
        stderr(&again).starts_with("error[server]"),
        "{}",
        stderr(&again)
    );
    // SIGTERM, as a service manager stops it: the server finishes and exits cleanly.
    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = server.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a clean exit on SIGTERM: {logs}");
    assert!(logs.contains("zoufang server stopped"), "{logs}");
    assert!(logs.contains("push"), "structured logs: {logs}");
    assert!(
        logs.contains("/v1/push"),
        "request spans name the route: {logs}"
    );
    assert!(!logs.contains("13812345678"), "no personal data in logs");
    let stats = ok_json(
        None,
        &["admin", "--data", data_s, "--key-file", key_s, "stats"],
    );
    assert_eq!(stats["households"], json!(1));
}
