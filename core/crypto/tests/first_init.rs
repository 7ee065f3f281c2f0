//! At a fresh process start, threads opening plain SQLite connections race a thread asking for
//! the SM provider. `sqlite3_initialize` returns at once in a thread that arrives while another
//! is between SQLite's own initialisation and SQLCipher's, which registers the default
//! provider; the SM provider must wait for it rather than fail (and, once, fail for good).
//! Its own test binary, so that it runs at a fresh process start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Barrier};

use zoufang_crypto::{CipherSuite, with_suite};

#[test]
fn the_sm_provider_is_ready_however_the_first_initialisations_interleave() {
    let threads = 16;
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                if i % 2 == 0 {
                    rusqlite::Connection::open_in_memory()
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                } else {
                    with_suite(CipherSuite::Sm4, || ()).map_err(|e| e.to_string())
                }
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}
