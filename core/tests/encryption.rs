//! Encryption at rest, with the `sqlcipher` feature: no personal value in any byte on disk (the
//! database, its WAL and shared-memory files), for both cipher suites and both key forms; a
//! store only opens with its key and its suite; key rotation; both suites in one process.
#![cfg(feature = "sqlcipher")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;

use serde_json::{Map, Value as Json, json};
use zoufang_core::records::NewHousehold;
use zoufang_core::{Cipher, Collector, StoreOptions};

const NAME: &str = "吉克阿呷";
const ID_NUMBER: &str = "11010519491231002X";
const PHONE: &str = "13812345678";
const LATITUDE: &str = "28.01234";
const RAW_KEY: &str = "3f1c2a9d8e7b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa998877";
const OTHER_RAW_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn options(key: Option<&str>, cipher: Cipher) -> StoreOptions {
    StoreOptions {
        encryption_key: key.map(str::to_owned),
        cipher,
    }
}

fn obj(v: Json) -> Map<String, Json> {
    v.as_object().cloned().unwrap()
}

/// A household and a completed visit holding every kind of personal value.
fn write_personal_data(c: &Collector) -> String {
    c.sign_in("coordinator-1").unwrap();
    let h = c
        .add_household(NewHousehold {
            village_code: "513431104201".into(),
            fields: obj(json!({"phone": PHONE, "urban_rural": "rural", "address": "三组", "next_visit_due": "2026-12-01"})),
            members: vec![obj(json!({"name": NAME, "id_type": "resident_id", "id_number": ID_NUMBER,
                                     "relationship": "02", "lives_together": "yes", "health": "healthy"}))],
        })
        .unwrap();
    let v = c.start_visit(Some(&h), "routine").unwrap();
    c.set_answers(
        &v.id,
        &obj(json!({
            "trigger_source": "schedule", "outcome": "completed", "interviewee_name": NAME,
            "location": {"lat": 28.01234, "lon": 102.84567, "accuracy_m": 12.0, "provider": "gps", "mock": false},
            "basic_living_difficulty": "no", "risk_level": "low", "recommendation": "monitor",
            "emergency": "no", "next_visit_due": "2027-03-01", "investigator_1_name": NAME,
            "consent_privacy": "yes"
        })),
    )
    .unwrap();
    c.complete_visit(&v.id).unwrap();
    h
}

/// Every personal value found in any file of `dir`, with the file it was found in.
fn leaks(dir: &Path) -> Vec<String> {
    let needles = [NAME, ID_NUMBER, PHONE, LATITUDE];
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for needle in needles {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(format!("{needle} in {}", path.display()));
            }
        }
    }
    found
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_plaintext_store_shows_the_values_so_the_scan_is_real() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::open(&dir.path().join("s.db"), &options(None, Cipher::Aes256)).unwrap();
    write_personal_data(&c);
    assert!(!leaks(dir.path()).is_empty(), "the scan finds plaintext");
}

#[test]
fn no_personal_value_is_on_disk_for_either_suite_or_key_form() {
    for cipher in [Cipher::Aes256, Cipher::Sm4] {
        for key in [RAW_KEY, "correct horse battery staple"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.db");
            let c = Collector::open(&path, &options(Some(key), cipher)).unwrap();
            let h = write_personal_data(&c);
            // While open, the newest pages are still in the WAL.
            assert!(files(dir.path()).contains(&"s.db-wal".to_owned()));
            assert_eq!(leaks(dir.path()), Vec::<String>::new(), "{cipher:?} open");
            drop(c);
            assert_eq!(leaks(dir.path()), Vec::<String>::new(), "{cipher:?} closed");
            let c = Collector::open(&path, &options(Some(key), cipher)).unwrap();
            assert_eq!(c.household(&h).unwrap().fields["phone"], json!(PHONE));
            assert_eq!(c.integrity_check().unwrap(), "ok");
        }
    }
}

#[test]
fn a_store_opens_only_with_its_key_and_its_suite() {
    for (cipher, other) in [(Cipher::Aes256, Cipher::Sm4), (Cipher::Sm4, Cipher::Aes256)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        write_personal_data(&Collector::open(&path, &options(Some(RAW_KEY), cipher)).unwrap());
        for wrong in [
            options(Some(OTHER_RAW_KEY), cipher),
            options(Some(RAW_KEY), other),
            options(None, cipher),
        ] {
            let err = Collector::open(&path, &wrong).unwrap_err();
            assert_eq!(
                err.code(),
                "wrong_key_or_not_a_store",
                "{cipher:?} with {wrong:?}"
            );
        }
        assert!(Collector::open(&path, &options(Some(RAW_KEY), cipher)).is_ok());
    }
}

#[test]
fn rotating_the_key_re_encrypts_everything_and_keeps_the_data() {
    for cipher in [Cipher::Aes256, Cipher::Sm4] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let c = Collector::open(&path, &options(Some(RAW_KEY), cipher)).unwrap();
        let h = write_personal_data(&c);
        c.rotate_key(OTHER_RAW_KEY).unwrap();
        // The open handle goes on working, reads and writes, under the new key.
        assert_eq!(c.household(&h).unwrap().fields["phone"], json!(PHONE));
        c.edit_household_field(&h, "address", json!("四组"))
            .unwrap();
        assert_eq!(leaks(dir.path()), Vec::<String>::new());
        drop(c);
        assert_eq!(
            Collector::open(&path, &options(Some(RAW_KEY), cipher))
                .unwrap_err()
                .code(),
            "wrong_key_or_not_a_store",
            "{cipher:?}: the old key no longer opens the store"
        );
        let c = Collector::open(&path, &options(Some(OTHER_RAW_KEY), cipher)).unwrap();
        assert_eq!(c.household(&h).unwrap().fields["address"], json!("四组"));
        assert_eq!(c.integrity_check().unwrap(), "ok");
    }
    let dir = tempfile::tempdir().unwrap();
    let plain = Collector::open(&dir.path().join("p.db"), &options(None, Cipher::Aes256)).unwrap();
    assert_eq!(
        plain.rotate_key(RAW_KEY).unwrap_err().code(),
        "invalid_input"
    );
}

#[test]
fn stores_of_both_suites_open_at_once_from_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    let seeded: Vec<_> = (0..4)
        .map(|i| {
            let cipher = if i % 2 == 0 {
                Cipher::Aes256
            } else {
                Cipher::Sm4
            };
            let path = dir.path().join(format!("s{i}.db"));
            let h = write_personal_data(
                &Collector::open(&path, &options(Some(RAW_KEY), cipher)).unwrap(),
            );
            (path, cipher, h)
        })
        .collect();
    std::thread::scope(|s| {
        for (path, cipher, h) in &seeded {
            s.spawn(move || {
                for _ in 0..10 {
                    let c = Collector::open(path, &options(Some(RAW_KEY), *cipher)).unwrap();
                    assert_eq!(c.household(h).unwrap().fields["phone"], json!(PHONE));
                }
            });
        }
    });
}
