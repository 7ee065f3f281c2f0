//! The store layer: one SQLite file in WAL mode with `synchronous=FULL`, so a transaction that
//! returned is on disk, and a crash loses at most the transaction being written.
//!
//! One writer connection and one reader connection, each behind its own lock: the UI can list
//! and search while a save or a sync batch is being written.

pub mod schema;

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};

/// How to open a store.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// The encryption key supplied by the host app (from Android Keystore / iOS Keychain).
    /// `None` opens a plaintext store; a key needs a build with the `sqlcipher` feature.
    pub encryption_key: Option<String>,
}

pub(crate) struct Connections {
    pub writer: Mutex<Connection>,
    pub reader: Mutex<Connection>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connections")
    }
}

fn apply_key(conn: &Connection, key: Option<&str>) -> Result<()> {
    match key {
        None => Ok(()),
        #[cfg(feature = "sqlcipher")]
        Some(key) => {
            // SQLCipher needs the key before any other statement touches the file.
            conn.pragma_update(None, "key", key)?;
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
    Ok(())
}

pub(crate) fn open(path: &Path, options: &StoreOptions) -> Result<Connections> {
    // Refuse a key this build cannot use before the file is created.
    if options.encryption_key.is_some() && !cfg!(feature = "sqlcipher") {
        return Err(Error::EncryptionUnavailable);
    }
    let mut writer = Connection::open(path)?;
    apply_key(&writer, options.encryption_key.as_deref())?;
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
    let reader = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    apply_key(&reader, options.encryption_key.as_deref())?;
    configure(&reader)?;
    Ok(Connections {
        writer: Mutex::new(writer),
        reader: Mutex::new(reader),
    })
}
