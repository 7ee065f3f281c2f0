//! `outbox` (changes waiting for the server's acknowledgement, numbered per device, written in
//! the transaction of the change) and `rejected_changes` (what the server refused: kept and
//! listed, never dropped).

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value as Json;

use crate::error::Result;
use zoufang_protocol::messages::{Change, ChangeOp, Entity};

/// A change the server refused: kept and listed, never dropped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedChange {
    pub seq: u64,
    pub change: Json,
    pub code: String,
    pub message: String,
    pub rejected_at: String,
}

/// The record and field an outbox entry touches (none for visits).
pub(crate) type RecordKey<'a> = Option<(Entity, &'a str, Option<&'a str>)>;

fn sql_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

pub(crate) fn push(
    conn: &Connection,
    key: RecordKey<'_>,
    hlc: &str,
    device_time: &str,
    op: &ChangeOp,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO outbox (entity, entity_id, field, hlc, device_time, change) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        key.map(|k| k.0.as_str()),
        key.map(|k| k.1),
        key.and_then(|k| k.2),
        hlc,
        device_time,
        serde_json::to_string(op)?
    ])?;
    Ok(())
}

/// The newest entry's clock stamp (entries are stamped in seq order; a rowid lookup, so a long
/// outbox opens instantly).
pub(crate) fn last_hlc(conn: &Connection) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT hlc FROM outbox ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?)
}

/// The oldest waiting changes, at most `limit`.
pub(crate) fn batch(conn: &Connection, limit: usize) -> Result<Vec<Change>> {
    let mut stmt = conn
        .prepare_cached("SELECT seq, hlc, device_time, change FROM outbox ORDER BY seq LIMIT ?1")?;
    let rows = stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    rows.map(|row| {
        let (seq, hlc, device_time, change) = row?;
        Ok(Change {
            seq: u64::try_from(seq).unwrap_or(0),
            hlc,
            device_time,
            op: zoufang_protocol::change_entry::decode_op(&change)?,
        })
    })
    .collect()
}

pub(crate) fn len(conn: &Connection) -> Result<u64> {
    super::count(conn, "SELECT count(*) FROM outbox", [])
}

/// Removes an acknowledged entry and returns its change as stored (`None` if already gone:
/// an acknowledgement that arrives twice).
pub(crate) fn take(conn: &Connection, seq: u64) -> Result<Option<String>> {
    // One lookup, not a read and then a delete: a push's acknowledgements take each entry.
    let change = conn
        .prepare_cached("DELETE FROM outbox WHERE seq = ?1 RETURNING change")?
        .query_row([sql_seq(seq)], |r| r.get(0))
        .optional()?;
    Ok(change)
}

/// The newest entry still waiting that touches this field (an edit of it, or the creation of
/// its record).
pub(crate) fn pending_for_field(
    conn: &Connection,
    entity: Entity,
    id: &str,
    field: &str,
) -> Result<Option<u64>> {
    let seq: Option<i64> = conn
        .prepare_cached(
            "SELECT max(seq) FROM outbox WHERE entity = ?1 AND entity_id = ?2 AND (field = ?3 OR field IS NULL)",
        )?
        .query_row(params![entity.as_str(), id, field], |r| r.get(0))?;
    Ok(seq.map(|s| u64::try_from(s).unwrap_or(0)))
}

pub(crate) fn reject(
    conn: &Connection,
    seq: u64,
    change: &str,
    code: &str,
    message: &str,
    at: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO rejected_changes (seq, change, code, message, rejected_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![sql_seq(seq), change, code, message, at])?;
    Ok(())
}

/// Refused changes, newest first.
pub(crate) fn rejected(conn: &Connection) -> Result<Vec<RejectedChange>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, change, code, message, rejected_at FROM rejected_changes ORDER BY seq DESC",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    rows.map(|row| {
        let (seq, change, code, message, rejected_at) = row?;
        Ok(RejectedChange {
            seq: u64::try_from(seq).unwrap_or(0),
            change: serde_json::from_str(&change)?,
            code,
            message,
            rejected_at,
        })
    })
    .collect()
}

pub(crate) fn rejected_count(conn: &Connection) -> Result<u64> {
    super::count(conn, "SELECT count(*) FROM rejected_changes", [])
}
