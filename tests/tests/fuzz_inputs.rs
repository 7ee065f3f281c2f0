//! Every fuzz seed and every input a fuzz run ever found failing, replayed on stable through the
//! same functions the cargo-fuzz targets drive (`fuzz/src/lib.rs`): a crash once found stays
//! fixed even where no nightly toolchain runs the fuzzers. Inputs live in
//! `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../fuzz/src/lib.rs"]
mod fuzz;

use std::path::Path;

fn inputs(kind: &str, target: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind)
        .join(target);
    let mut files: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    files.retain(|f| f.is_file() && f.extension().is_none_or(|e| e != "md"));
    files.sort();
    files
}

#[test]
fn every_seed_and_regression_input_goes_through_its_target_without_a_panic() {
    let mut replayed = 0;
    for (target, run) in fuzz::TARGETS {
        let seeds = inputs("seeds", target);
        assert!(!seeds.is_empty(), "{target} has seeds");
        for file in seeds.iter().chain(&inputs("regressions", target)) {
            let data = std::fs::read(file).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target} panicked on {}", file.display());
            replayed += 1;
        }
    }
    assert!(replayed >= 40, "{replayed} inputs");
}
