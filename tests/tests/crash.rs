//! Kill the writing process at arbitrary instants: every answer acknowledged before the kill is
//! in the store afterwards, at most the one being written is lost, nothing is applied twice,
//! and the file stays sound.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use zoufang_core::{Collector, StoreOptions};

#[test]
fn a_draft_survives_a_process_killed_mid_save() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let visit = {
        let c = Collector::open(&path, &StoreOptions::default()).unwrap();
        c.sign_in("coordinator-1").unwrap();
        c.start_visit(None, "application_survey").unwrap().id
    };
    let mut acknowledged = 0usize; // answers 0..acknowledged were acknowledged
    // Pseudo-random kill points without a dependency: vary how many acks and how long to wait.
    for round in 0..12u64 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_autosave_writer"))
            .args([path.to_str().unwrap(), &visit, &acknowledged.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let wanted = 3 + (round * 7919 % 17) as usize;
        for _ in 0..wanted {
            let line = lines.next().expect("writer stopped early").unwrap();
            let i: usize = line.parse().unwrap();
            assert_eq!(i, acknowledged, "answers are acknowledged in order");
            acknowledged += 1;
        }
        // Land the kill at different points of the next save.
        std::thread::sleep(Duration::from_micros(round * 373 % 2000));
        child.kill().unwrap();
        child.wait().unwrap();
        // Acks the child printed before it died also count.
        for line in lines.map_while(Result::ok) {
            assert_eq!(line.parse::<usize>().unwrap(), acknowledged);
            acknowledged += 1;
        }

        let c = Collector::open(&path, &StoreOptions::default()).unwrap();
        assert_eq!(c.integrity_check().unwrap(), "ok");
        let answers = c.visit(&visit).unwrap().answers;
        let members = answers["members"].as_array().cloned().unwrap_or_default();
        assert!(
            members.len() == acknowledged || members.len() == acknowledged + 1,
            "round {round}: {} stored, {acknowledged} acknowledged",
            members.len()
        );
        for (i, m) in members.iter().enumerate() {
            assert_eq!(
                m["name"],
                serde_json::json!(format!("成员{i}")),
                "answer {i} stored once, in place"
            );
        }
        // The unacknowledged answer that made it to disk counts from now on.
        acknowledged = members.len();
    }
    assert!(acknowledged >= 12 * 3);
}
