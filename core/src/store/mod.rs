//! The store layer: one SQLite file in WAL mode with `synchronous=FULL`, so a transaction that
//! returned is on disk, and a crash loses at most the transaction being written.
//!
//! One writer connection and one reader connection, each behind its own lock: the UI can list
//! and search while a save or a sync batch is being written.
//!
//! Every SQL statement of the device lives under this module, one module per aggregate. Each
//! function takes a `&Connection` (a `Transaction` derefs to one), so a user action composes
//! several of them inside one transaction opened by the layer above; none opens its own.

pub(crate) mod attachments;
pub(crate) mod audit;
pub(crate) mod bulk;
pub(crate) mod forms;
pub(crate) mod households;
pub(crate) mod meta;
pub(crate) mod outbox;
mod private;
pub mod schema;
pub(crate) mod server_view;
#[cfg(feature = "sql-stats")]
pub mod stats;
pub(crate) mod visits;

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};

use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};

/// A stored JSON object (record fields, answers, metadata).
pub(crate) fn parse_object(text: &str) -> Result<Map<String, Json>> {
    match serde_json::from_str(text)? {
        Json::Object(m) => Ok(m),
        _ => Err(Error::Storage(
            "a stored record is not a JSON object".into(),
        )),
    }
}

pub(crate) fn not_found(entity: &'static str, id: &str) -> Error {
    // Ids are UUIDs we issued; cap the length so a hostile argument cannot flood a log line.
    Error::NotFound {
        entity,
        id: id.chars().take(64).collect(),
    }
}

/// A count from SQLite as the API reports it.
pub(crate) fn count(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<u64> {
    let n: i64 = conn.query_row(sql, params, |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Every count a store summary shows.
pub(crate) fn counts(conn: &Connection) -> Result<crate::records::StoreCounts> {
    let n = |sql: &str| count(conn, sql, []);
    Ok(crate::records::StoreCounts {
        households: n("SELECT count(*) FROM households WHERE status = 'active'")?,
        households_inactive: n("SELECT count(*) FROM households WHERE status != 'active'")?,
        members: n("SELECT count(*) FROM members WHERE removed = 0")?,
        drafts: n("SELECT count(*) FROM visits WHERE status = 'draft'")?,
        completed: n("SELECT count(*) FROM visits WHERE status = 'completed'")?,
        signed: n("SELECT count(*) FROM visits WHERE status = 'signed'")?,
        void: n("SELECT count(*) FROM visits WHERE status = 'void'")?,
    })
}

/// SQLite's own consistency check of the file (`ok` when sound).
pub(crate) fn integrity_check(conn: &Connection) -> Result<String> {
    Ok(conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
}

/// Moves everything in the WAL into the main file and empties it (old page copies included).
pub(crate) fn checkpoint(conn: &Connection) -> Result<()> {
    let _busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    Ok(())
}

/// How to open a store.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// The encryption key supplied by the host app (from Android Keystore / iOS Keychain).
    /// 64 hex digits are used as a raw 256-bit key (the recommended form: random bytes from the
    /// platform keystore, no key derivation at open); any other text is a passphrase stretched
    /// with PBKDF2. `None` opens a plaintext store; a key needs the `sqlcipher` feature.
    pub encryption_key: Option<String>,
    /// The cipher suite of an encrypted store. A store keeps the suite it was created with.
    pub cipher: Cipher,
}

/// The cipher suite of an encrypted store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cipher {
    /// AES-256-CBC with HMAC-SHA256 per page, PBKDF2-HMAC-SHA512 for passphrases (SQLCipher 4
    /// with the page MAC on SHA-256).
    #[default]
    Aes256,
    /// The national suite for deployments under a commercial-cryptography assessment:
    /// SM4-CTR with HMAC-SM3 per page, PBKDF2-HMAC-SM3 for passphrases.
    Sm4,
}

pub(crate) struct Connections {
    pub writer: Mutex<Connection>,
    pub reader: Mutex<Connection>,
    path: PathBuf,
    options: Mutex<StoreOptions>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connections")
    }
}

/// The text of `PRAGMA key` for `key`: SQLCipher's raw-key form for 64 hex digits, else the
/// passphrase itself. SM4 keys are 128-bit: a raw 256-bit key is reduced with SM3.
#[cfg(feature = "sqlcipher")]
fn key_pragma(key: &str, cipher: Cipher) -> Result<String> {
    if key.is_empty() {
        return Err(Error::InvalidInput("the encryption key is empty".into()));
    }
    let raw = key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit());
    if !raw {
        return Ok(key.to_owned());
    }
    Ok(match cipher {
        Cipher::Aes256 => format!("x'{key}'"),
        Cipher::Sm4 => {
            let bytes = hex::decode(key).map_err(|_| Error::InvalidInput("bad key".into()))?;
            let digest = zoufang_crypto::sm3(&bytes);
            let half = digest.get(..16).unwrap_or_default();
            format!("x'{}'", hex::encode(half))
        }
    })
}

#[cfg(feature = "sqlcipher")]
fn suite(cipher: Cipher) -> zoufang_crypto::CipherSuite {
    match cipher {
        Cipher::Aes256 => zoufang_crypto::CipherSuite::Aes256,
        Cipher::Sm4 => zoufang_crypto::CipherSuite::Sm4,
    }
}

fn apply_key(conn: &Connection, options: &StoreOptions) -> Result<()> {
    match options.encryption_key.as_deref() {
        None => Ok(()),
        #[cfg(feature = "sqlcipher")]
        Some(key) => {
            let pragma = key_pragma(key, options.cipher)?;
            // A wrong key is our typed error; SQLCipher's own stderr log would only be noise.
            conn.pragma_update(None, "cipher_log_level", "NONE")?;
            // SQLCipher needs the key before any other statement touches the file; the suite
            // decides which provider the connection's codec gets.
            zoufang_crypto::with_suite(suite(options.cipher), || {
                conn.pragma_update(None, "key", &pragma)?;
                if options.cipher == Cipher::Aes256 {
                    // Every page write is MACed: SHA-256 runs on the CPU's SHA instructions
                    // (x86 SHA-NI, ARMv8 SHA2), SHA-512 does not. Set at every open.
                    conn.pragma_update(None, "cipher_hmac_algorithm", "HMAC_SHA256")?;
                }
                Ok::<_, rusqlite::Error>(())
            })
            .map_err(|e| Error::Storage(e.to_string()))??;
            Ok(())
        }
        #[cfg(not(feature = "sqlcipher"))]
        Some(_) => {
            let _ = conn;
            Err(Error::EncryptionUnavailable)
        }
    }
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Deleted rows hold personal data: their bytes are zeroed, not left in free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(())
}

pub(crate) fn open(path: &Path, options: &StoreOptions) -> Result<Connections> {
    // Refuse a key this build cannot use before the file is created.
    if options.encryption_key.is_some() && !cfg!(feature = "sqlcipher") {
        return Err(Error::EncryptionUnavailable);
    }
    private::sqlite_file(path)
        .map_err(|e| Error::Storage(format!("cannot create the store file: {e}")))?;
    // SQLCipher's provider is in every link (see `zoufang_crypto::init`).
    #[cfg(feature = "sqlcipher")]
    zoufang_crypto::init();
    let mut writer = Connection::open(path)?;
    apply_key(&writer, options)?;
    // Before anything reads: wait for another connection's lock instead of failing at once.
    writer.busy_timeout(std::time::Duration::from_secs(10))?;
    // The first read of the file is where a wrong key or a foreign file shows.
    let mode: String = writer.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Storage(format!(
            "the file system does not support WAL (journal mode {mode})"
        )));
    }
    configure(&writer)?;
    let found: i64 = writer.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > schema::SCHEMA_VERSION {
        return Err(Error::StoreTooNew {
            found,
            known: schema::SCHEMA_VERSION,
        });
    }
    schema::migrations()
        .to_latest(&mut writer)
        .map_err(|e| Error::Migration(e.to_string()))?;
    // A first pull killed before its end left indexes set aside.
    bulk::finish(&mut writer)?;
    let reader = open_reader(path, options)?;
    Ok(Connections {
        writer: Mutex::new(writer),
        reader: Mutex::new(reader),
        path: path.to_owned(),
        options: Mutex::new(options.clone()),
    })
}

fn open_reader(path: &Path, options: &StoreOptions) -> Result<Connection> {
    let reader = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    apply_key(&reader, options)?;
    configure(&reader)?;
    Ok(reader)
}

impl Connections {
    /// Overwrites and deletes the store's files after closing them; the handle is left on an
    /// empty in-memory database, so any later call fails instead of touching the old file.
    pub(crate) fn destroy(&self) -> Result<()> {
        let mut writer = self.writer.lock();
        let mut reader = self.reader.lock();
        let _ = writer.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        });
        *reader = Connection::open_in_memory()?;
        *writer = Connection::open_in_memory()?;
        let mut files = vec![self.path.clone()];
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            files.push(PathBuf::from(name));
        }
        for file in files {
            let Ok(meta) = std::fs::metadata(&file) else {
                continue;
            };
            let overwrite = || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().write(true).open(&file)?;
                let zeros = vec![0u8; 64 * 1024];
                let mut left = meta.len();
                while left > 0 {
                    let n = left.min(zeros.len() as u64) as usize;
                    f.write_all(zeros.get(..n).unwrap_or_default())?;
                    left -= n as u64;
                }
                f.sync_all()
            };
            overwrite().map_err(|e| Error::Storage(format!("wiping the store: {e}")))?;
            std::fs::remove_file(&file)
                .map_err(|e| Error::Storage(format!("wiping the store: {e}")))?;
        }
        Ok(())
    }

    /// An SM4 store: the national-crypto mode, whose audit chain hashes with SM3.
    pub(crate) fn national_crypto(&self) -> bool {
        let options = self.options.lock();
        options.encryption_key.is_some() && options.cipher == Cipher::Sm4
    }

    /// Re-encrypts every page with `new_key`, atomically: a crash before the commit leaves the
    /// old key valid, after it the new one. The WAL is emptied first so that no frame under the
    /// old key outlives the rotation, and again after so the main file holds only new pages.
    /// The host app keeps both keys until this returns and tries the new one first on open.
    pub(crate) fn rotate_key(&self, new_key: &str) -> Result<()> {
        // Writer, then reader, then options: no read sees a half-rotated store.
        let writer = self.writer.lock();
        let mut reader = self.reader.lock();
        let mut options = self.options.lock();
        if options.encryption_key.is_none() {
            return Err(Error::InvalidInput(
                "the store is not encrypted; a key can only be rotated on an encrypted store"
                    .into(),
            ));
        }
        #[cfg(feature = "sqlcipher")]
        {
            let pragma = key_pragma(new_key, options.cipher)?;
            let checkpoint = || -> Result<()> {
                let busy: i64 =
                    writer.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
                if busy != 0 {
                    return Err(Error::Storage(
                        "the store is busy; rotate the key again".into(),
                    ));
                }
                Ok(())
            };
            checkpoint()?;
            writer.pragma_update(None, "rekey", &pragma)?;
            checkpoint()?;
            options.encryption_key = Some(new_key.to_owned());
            *reader = open_reader(&self.path, &options)?;
            Ok(())
        }
        #[cfg(not(feature = "sqlcipher"))]
        {
            let _ = (new_key, &writer, &mut reader, &mut options, &self.path);
            Err(Error::EncryptionUnavailable)
        }
    }
}
