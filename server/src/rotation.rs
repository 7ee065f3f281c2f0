//! Key rotation of a stopped server's data directory, and encryption of a directory that was
//! kept in clear: every attachment object re-sealed, then `server.db` exported page by page
//! into a new file under the new key (`sqlcipher_export`, which also changes suite), swapped
//! in by a rename. The marker names both keys while it runs, so an interruption at any point
//! leaves a directory that the same command finishes; the server refuses to start on it.

use std::fs;
use std::path::Path;

use crate::at_rest::{self, AtRest, Marker};
use crate::blobs::FsBlobStore;
use crate::storage::{Result, ServerError};

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rotation {
    pub objects_resealed: u64,
    pub database_reencrypted: bool,
    pub key_id: String,
}

fn storage_error(what: &str) -> impl Fn(std::io::Error) -> ServerError + '_ {
    move |e| ServerError::Storage(format!("{what}: {e}"))
}

/// Moves `dir` from `from` to `to`. The server must be stopped (every node, on PostgreSQL: the
/// objects are shared; the database itself is PostgreSQL's to protect).
pub fn rotate(dir: &Path, from: &AtRest, to: &AtRest) -> Result<Rotation> {
    let Some(new_key) = to.key() else {
        return Err(ServerError::bad(
            "plaintext_refused",
            "a rotation goes to a key; data is not decrypted to clear",
        ));
    };
    let marker = at_rest::marker_of(dir)?.ok_or_else(|| {
        ServerError::NotFound("a server data directory (no server.db, no attachments)".into())
    })?;
    let rotating = Marker {
        next_mode: Some(Marker::of(to).mode),
        next_key_id: Some(new_key.id()),
        ..Marker::of(from)
    };
    let resuming = marker == rotating;
    let starting = marker.is(from) && marker.next_key_id.is_none();
    if !(resuming || starting) {
        return Err(ServerError::Conflict {
            code: "wrong_server_key",
            message: "the current key (or --plaintext) is not this data directory's".into(),
        });
    }
    if marker.is(to) {
        return Err(ServerError::bad(
            "same_key",
            "the new key is the one in use",
        ));
    }
    at_rest::write_marker(dir, &rotating)?;
    let objects_resealed = FsBlobStore::open(&dir.join("attachments"), to.objects())
        .map_err(storage_error("cannot open the attachment store"))?
        .reseal_from(from.objects().as_deref())
        .map_err(storage_error("re-sealing the attachment objects failed"))?;
    let database_reencrypted = reencrypt_database(dir, from, to)?;
    at_rest::write_marker(dir, &Marker::of(to))?;
    tracing::info!(
        objects = objects_resealed,
        database = database_reencrypted,
        key = %new_key.id(),
        "server data re-encrypted under a new key"
    );
    Ok(Rotation {
        objects_resealed,
        database_reencrypted,
        key_id: new_key.id(),
    })
}

/// Exports server.db under `to` into a new file and renames it over the old one. After an
/// interruption past the rename, server.db already opens with `to`: nothing left to do.
fn reencrypt_database(dir: &Path, from: &AtRest, to: &AtRest) -> Result<bool> {
    let path = dir.join("server.db");
    if !path.exists() {
        return Ok(false);
    }
    if opens_with(&path, to) && !opens_with(&path, from) {
        return Ok(true);
    }
    let fresh = dir.join("server.db.rekey");
    let _ = fs::remove_file(&fresh);
    crate::private::sqlite_file(&fresh).map_err(storage_error("cannot create the new file"))?;
    zoufang_crypto::init();
    let conn = rusqlite::Connection::open(&path)?;
    at_rest::key_connection(&conn, from)?;
    // Everything in the main file first: the export reads through the WAL anyway, but the old
    // WAL must not outlive the swap.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    at_rest::attach_keyed(&conn, &fresh, "rekeyed", to)?;
    conn.query_row("SELECT sqlcipher_export('rekeyed')", [], |_| Ok(()))?;
    let version: i64 = conn.query_row("PRAGMA main.user_version", [], |r| r.get(0))?;
    conn.pragma_update(Some("rekeyed"), "user_version", version)?;
    conn.execute("DETACH DATABASE rekeyed", [])?;
    drop(conn);
    fs::File::open(&fresh)
        .and_then(|f| f.sync_all())
        .map_err(storage_error("cannot make the new file durable"))?;
    for stale in ["server.db-wal", "server.db-shm"] {
        let _ = fs::remove_file(dir.join(stale));
    }
    fs::rename(&fresh, &path).map_err(storage_error("cannot swap in the new file"))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(storage_error("cannot make the swap durable"))?;
    Ok(true)
}

fn opens_with(path: &Path, at_rest: &AtRest) -> bool {
    zoufang_crypto::init();
    let Ok(conn) = rusqlite::Connection::open(path) else {
        return false;
    };
    at_rest::key_connection(&conn, at_rest).is_ok()
        && conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
            .is_ok()
}
