//! The server's data at rest: after a phone syncs a survey with a photo, no file of the
//! server's data directory (database, WAL, photo objects, partial uploads) holds a household's
//! name, ID number or phone, or a piece of the photo, under either suite; a plaintext server
//! (the control) does. Keys rotate, a directory in clear is encrypted in place, and a server
//! started with the wrong key or none says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use zoufang_core::media::PhotoLimits;
use zoufang_core::protocol::audit::HashAlgorithm;
use zoufang_core::protocol::messages::Role;
use zoufang_server::at_rest::{AtRest, CipherSuite, ServerKey};
use zoufang_server::{SqliteStorage, Storage};
use zoufang_tests::{Device, TestServer, noisy_jpeg, survey_with_photo};

const VILLAGE: &str = "513431104201";

fn key(hex_byte: &str, suite: CipherSuite) -> AtRest {
    AtRest::Encrypted(Arc::new(
        ServerKey::parse(&hex_byte.repeat(32), suite).unwrap(),
    ))
}

/// Which of the personal values (and a piece of the photo) some file under `dir` holds.
fn found_in_clear(dir: &std::path::Path, photo: &[u8]) -> Vec<&'static str> {
    let needles: [(&str, Vec<u8>); 4] = [
        ("name", "吉克阿呷".as_bytes().to_vec()),
        ("id number", b"11010519491231002X".to_vec()),
        ("phone", b"13812345678".to_vec()),
        (
            "photo",
            photo[photo.len() / 2..photo.len() / 2 + 32].to_vec(),
        ),
    ];
    let contents: Vec<Vec<u8>> = zoufang_tests::files_under(dir)
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    needles
        .iter()
        .filter(|(_, n)| {
            contents
                .iter()
                .any(|c| c.windows(n.len()).any(|w| w == n.as_slice()))
        })
        .map(|(what, _)| *what)
        .collect()
}

/// A phone that registers a household and syncs a survey with a photo; the photo's bytes.
fn sync_a_survey(server: &TestServer) -> Vec<u8> {
    let phone = Device::enrolled(server, "coord-a", Role::Coordinator, &[VILLAGE]);
    zoufang_tests::new_household(&phone.collector, VILLAGE);
    let (_, photo) = survey_with_photo(
        &phone.collector,
        VILLAGE,
        &noisy_jpeg(640, 480, 5),
        &PhotoLimits::default(),
    );
    let report = phone
        .collector
        .sync(&server.transport(), None, None)
        .unwrap();
    assert_eq!(report.attachments_uploaded, 4, "{report:?}");
    let bytes = phone
        .collector
        .attachment_content(&photo.content_hash)
        .unwrap();
    // Served back whole: sealed on disk, opened on the way out.
    let fetched = phone
        .collector
        .fetch_attachment_content(
            &server.transport(),
            HashAlgorithm::Sha256,
            &photo.content_hash,
        )
        .unwrap();
    assert_eq!(fetched, bytes);
    bytes
}

#[test]
fn no_personal_value_or_photo_lies_in_clear_on_the_servers_disk() {
    for suite in [CipherSuite::Aes256, CipherSuite::Sm4] {
        let server = TestServer::start_kept(&key("6b", suite));
        let photo = sync_a_survey(&server);
        assert_eq!(
            found_in_clear(server.dir.path(), &photo),
            Vec::<&str>::new(),
            "{suite:?}"
        );
    }
    // The control: the same scan finds them on a server kept in clear.
    let server = TestServer::start_kept(&AtRest::Plaintext);
    let photo = sync_a_survey(&server);
    let found = found_in_clear(server.dir.path(), &photo);
    assert!(found.contains(&"photo"), "{found:?}");
    if zoufang_tests::backend() == "sqlite" {
        assert!(found.contains(&"id number"), "{found:?}");
    }
}

#[test]
fn a_wrong_key_or_none_is_refused_at_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let right = key("6b", CipherSuite::Aes256);
    drop(SqliteStorage::open(dir.path(), &right).unwrap());
    let code = |at_rest: &AtRest| {
        SqliteStorage::open(dir.path(), at_rest)
            .err()
            .map(|e| e.code())
    };
    assert_eq!(
        code(&key("6c", CipherSuite::Aes256)),
        Some("wrong_server_key")
    );
    assert_eq!(code(&key("6b", CipherSuite::Sm4)), Some("at_rest_mismatch"));
    assert_eq!(code(&AtRest::Plaintext), Some("at_rest_mismatch"));
    assert_eq!(code(&right), None);
}

/// Devices, households and visits as a stats line, to compare before and after.
fn totals(storage: &dyn Storage) -> (u64, u64, u64) {
    let s = storage.stats().unwrap();
    (s.devices, s.households, s.visits)
}

#[test]
fn keys_rotate_and_a_directory_in_clear_is_encrypted_in_place() {
    // A pilot that ran in clear...
    let server = TestServer::start_on_sqlite(&AtRest::Plaintext);
    let photo = sync_a_survey(&server);
    let before = (totals(server.storage.as_ref()), photo);
    let data = server.stop();
    let dir = data.path().to_owned();
    // ...is encrypted (AES-256), then rotated to the national suite under another key.
    let aes = key("11", CipherSuite::Aes256);
    let sm4 = key("22", CipherSuite::Sm4);
    let first = zoufang_server::rotation::rotate(&dir, &AtRest::Plaintext, &aes).unwrap();
    assert!(
        first.database_reencrypted && first.objects_resealed >= 4,
        "{first:?}"
    );
    assert_eq!(found_in_clear(&dir, &before.1), Vec::<&str>::new());
    let second = zoufang_server::rotation::rotate(&dir, &aes, &sm4).unwrap();
    assert!(second.database_reencrypted, "{second:?}");
    // The old key opens nothing any more; the new one opens everything as it was.
    assert_eq!(
        SqliteStorage::open(&dir, &aes).err().map(|e| e.code()),
        Some("at_rest_mismatch")
    );
    let reopened = SqliteStorage::open(&dir, &sm4).unwrap();
    assert_eq!(totals(&reopened), before.0);
    assert_eq!(found_in_clear(&dir, &before.1), Vec::<&str>::new());
}
