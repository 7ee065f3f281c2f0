//! Stores written before this crate had its own AES provider — by SQLCipher's OpenSSL provider,
//! and by the SM provider when it called OpenSSL's SM4 and SM3 (`fixtures/`, made with the
//! keys below, 200 rows each) — open and read with today's providers, and take new writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use zoufang_crypto::{CipherSuite, with_suite};

const RAW_AES: &str = "x'6f1d3c2b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff0'";
const RAW_SM4: &str = "x'6f1d3c2b4a5968778695a4b3c2d1e0f0'";
const PASSPHRASE: &str = "correct horse 电池";

fn open(
    fixture: &str,
    suite: CipherSuite,
    key: &str,
    sha256: bool,
) -> (tempfile::TempDir, rusqlite::Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let from = format!("{}/tests/fixtures/{fixture}.db", env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(from, &path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "cipher_log_level", "NONE")
        .unwrap();
    with_suite(suite, || {
        conn.pragma_update(None, "key", key).unwrap();
        if sha256 {
            conn.pragma_update(None, "cipher_hmac_algorithm", "HMAC_SHA256")
                .unwrap();
        }
    })
    .unwrap();
    (dir, conn)
}

fn rows(conn: &rusqlite::Connection) -> rusqlite::Result<(i64, String)> {
    conn.query_row(
        "SELECT count(*), (SELECT answer FROM visits WHERE id = 8) FROM visits",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

#[test]
fn stores_written_with_openssl_open_and_take_writes() {
    let cases = [
        ("aes256-raw", CipherSuite::Aes256, RAW_AES, true),
        ("aes256-passphrase", CipherSuite::Aes256, PASSPHRASE, false),
        ("sm4-raw", CipherSuite::Sm4, RAW_SM4, false),
        ("sm4-passphrase", CipherSuite::Sm4, PASSPHRASE, false),
    ];
    for (fixture, suite, key, sha256) in cases {
        let (dir, conn) = open(fixture, suite, key, sha256);
        let (count, answer) = rows(&conn).unwrap_or_else(|e| panic!("{fixture}: {e}"));
        assert_eq!(count, 200, "{fixture}");
        assert_eq!(
            answer,
            format!("低保复核 第7户 ꆈꌠ {}", "x".repeat(7)),
            "{fixture}"
        );
        let provider: String = conn
            .query_row("PRAGMA cipher_provider", [], |r| r.get(0))
            .unwrap();
        assert_eq!(provider, suite.provider_name(), "{fixture}");
        conn.execute(
            "INSERT INTO visits (village, answer) VALUES ('513431000001', '新')",
            [],
        )
        .unwrap();
        drop(conn);
        // Reopened with today's provider, the new row is there; the file holds no plaintext.
        let path = dir.path().join("store.db");
        let again = rusqlite::Connection::open(&path).unwrap();
        with_suite(suite, || {
            again.pragma_update(None, "key", key).unwrap();
            if sha256 {
                again
                    .pragma_update(None, "cipher_hmac_algorithm", "HMAC_SHA256")
                    .unwrap();
            }
        })
        .unwrap();
        assert_eq!(rows(&again).unwrap().0, 201, "{fixture}");
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(9).any(|w| w == "低保复".as_bytes()),
            "{fixture}"
        );
    }
}

#[test]
fn a_wrong_key_or_suite_reads_nothing() {
    let cases = [
        (
            "aes256-raw",
            CipherSuite::Aes256,
            "x'00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff'",
        ),
        ("aes256-raw", CipherSuite::Sm4, RAW_SM4),
        ("sm4-raw", CipherSuite::Aes256, RAW_AES),
        ("sm4-passphrase", CipherSuite::Sm4, "correct horse"),
    ];
    for (fixture, suite, key) in cases {
        let (_dir, conn) = open(fixture, suite, key, false);
        assert!(
            rows(&conn).is_err(),
            "{fixture} opened under {suite:?} with {key}"
        );
    }
}
