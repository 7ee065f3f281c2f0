//! `audit_log`: the device's hash-chained trail (append-only: triggers refuse updates and
//! deletions other than the upload mark). The chain's hashing is `zoufang_protocol::audit`.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value as Json;

use super::meta;
use crate::error::Result;
use zoufang_protocol::audit::{AuditEntry, HashAlgorithm};

const COLUMNS: &str = "seq, at, user_id, action, entity, entity_id, detail, prev_hash, hash";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
        at: r.get(1)?,
        user_id: r.get(2)?,
        action: r.get(3)?,
        entity: r.get(4)?,
        entity_id: r.get(5)?,
        detail: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or(Json::Null),
        prev_hash: r.get(7)?,
        hash: r.get(8)?,
    })
}

fn sql_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// The newest entry's (seq, hash), which the next entry links to.
pub(crate) fn last(conn: &Connection) -> Result<Option<(u64, String)>> {
    Ok(conn
        .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| {
            Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), r.get(1)?))
        })
        .optional()?)
}

pub(crate) fn append(conn: &Connection, e: &AuditEntry) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO audit_log ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?
    .execute(params![
        sql_seq(e.seq),
        e.at,
        e.user_id,
        e.action,
        e.entity,
        e.entity_id,
        e.detail.to_string(),
        e.prev_hash,
        e.hash
    ])?;
    Ok(())
}

/// Entries the server has not acknowledged, oldest first, at most `limit` (through the
/// `audit_pending` index: uploaded entries are never read).
pub(crate) fn pending(conn: &Connection, limit: usize) -> Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM audit_log INDEXED BY audit_pending WHERE uploaded = 0 ORDER BY seq LIMIT ?1"
    ))?;
    let rows = stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn pending_count(conn: &Connection) -> Result<u64> {
    super::count(
        conn,
        "SELECT count(*) FROM audit_log INDEXED BY audit_pending WHERE uploaded = 0",
        [],
    )
}

/// The whole trail, oldest first.
pub(crate) fn all(conn: &Connection) -> Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM audit_log ORDER BY seq"))?;
    let rows = stmt.query_map([], row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn mark_uploaded_through(conn: &Connection, seq: u64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE audit_log INDEXED BY audit_pending SET uploaded = 1 WHERE uploaded = 0 AND seq <= ?1",
    )?
        .execute([sql_seq(seq)])?;
    Ok(())
}

/// The chain's hash, recorded once its first entry was written.
pub(crate) fn chain_hash(conn: &Connection) -> Result<Option<HashAlgorithm>> {
    Ok(meta::get(conn, meta::AUDIT_HASH)?
        .as_deref()
        .and_then(HashAlgorithm::parse))
}

pub(crate) fn set_chain_hash(conn: &Connection, alg: HashAlgorithm) -> Result<()> {
    meta::set(conn, meta::AUDIT_HASH, alg.as_str())
}
