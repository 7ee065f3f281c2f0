//! `visits`: drafts, completed, signed and voided visits (answers as JSON with the form id and
//! version they were started with), and read-only copies of colleagues' visits from the server.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value as Json};

use super::{not_found, parse_object};
use crate::error::Result;
use crate::records::{Visit, VisitStatus, VisitSummary};
use zoufang_protocol::messages::VisitRecord;

pub(crate) fn insert(conn: &Connection, v: &Visit) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO visits (id, household_id, form_id, form_version, visit_type, status, answers, author, revision_of, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        v.id,
        v.household_id,
        v.form_id,
        v.form_version,
        v.visit_type,
        v.status.as_str(),
        Json::Object(v.answers.clone()).to_string(),
        v.author,
        v.revision_of,
        v.created_at,
        v.updated_at
    ])?;
    Ok(())
}

/// A colleague's visit as the server sent it (kept once; a copy never changes but its status).
pub(crate) fn insert_from_server(conn: &Connection, v: &VisitRecord, seq: u64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO visits (id, household_id, form_id, form_version, visit_type, status, answers, author, revision_of, void_reason,
                             created_at, updated_at, completed_at, signed_at, synced_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13, ?14)
         ON CONFLICT (id) DO NOTHING",
    )?
    .execute(params![
        v.id,
        v.household_id,
        v.form_id,
        v.form_version,
        v.visit_type,
        v.status,
        Json::Object(v.answers.clone()).to_string(),
        v.author,
        v.revision_of,
        v.void_reason,
        v.created_at,
        v.completed_at,
        v.signed_at,
        i64::try_from(seq).unwrap_or(i64::MAX)
    ])?;
    Ok(())
}

fn parse_status(s: &str) -> VisitStatus {
    VisitStatus::parse(s).unwrap_or(VisitStatus::Void)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Visit>> {
    let status: String = r.get(5)?;
    let answers: String = r.get(6)?;
    let answers = match parse_object(&answers) {
        Ok(a) => a,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(Visit {
        id: r.get(0)?,
        household_id: r.get(1)?,
        form_id: r.get(2)?,
        form_version: r.get(3)?,
        visit_type: r.get(4)?,
        status: parse_status(&status),
        answers,
        author: r.get(7)?,
        revision_of: r.get(8)?,
        void_reason: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        completed_at: r.get(12)?,
        signed_at: r.get(13)?,
    }))
}

pub(crate) fn load(conn: &Connection, id: &str) -> Result<Visit> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, household_id, form_id, form_version, visit_type, status, answers, author, revision_of, void_reason,
                created_at, updated_at, completed_at, signed_at FROM visits WHERE id = ?1",
    )?;
    stmt.query_row([id], row)
        .optional()?
        .ok_or_else(|| not_found("visit", id))?
}

/// Records what a draft was prefilled from (see schema V7).
pub(crate) fn set_seen(conn: &Connection, id: &str, seen: &Map<String, Json>) -> Result<()> {
    conn.prepare_cached("UPDATE visits SET seen = ?2 WHERE id = ?1")?
        .execute(params![id, Json::Object(seen.clone()).to_string()])?;
    Ok(())
}

/// What a draft was prefilled from, if it was recorded.
pub(crate) fn seen(conn: &Connection, id: &str) -> Result<Option<Map<String, Json>>> {
    let text: Option<Option<String>> = conn
        .prepare_cached("SELECT seen FROM visits WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    text.flatten().map(|t| parse_object(&t)).transpose()
}

/// What an edit of a draft needs: its form, status and answers (as stored).
pub(crate) fn draft_head(
    conn: &Connection,
    id: &str,
) -> Result<(String, u32, VisitStatus, String)> {
    conn.prepare_cached("SELECT form_id, form_version, status, answers FROM visits WHERE id = ?1")?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                parse_status(&r.get::<_, String>(2)?),
                r.get::<_, String>(3)?,
            ))
        })
        .optional()?
        .ok_or_else(|| not_found("visit", id))
}

pub(crate) fn status(conn: &Connection, id: &str) -> Result<VisitStatus> {
    let status: String = conn
        .prepare_cached("SELECT status FROM visits WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| not_found("visit", id))?;
    Ok(parse_status(&status))
}

pub(crate) fn update_answers(
    conn: &Connection,
    id: &str,
    answers_json: &str,
    at: &str,
) -> Result<()> {
    conn.prepare_cached("UPDATE visits SET answers = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![id, answers_json, at])?;
    Ok(())
}

pub(crate) fn mark_completed(
    conn: &Connection,
    id: &str,
    answers_json: &str,
    household_id: Option<&str>,
    at: &str,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE visits SET status = 'completed', answers = ?2, household_id = ?3, completed_at = ?4, updated_at = ?4
         WHERE id = ?1",
    )?
    .execute(params![id, answers_json, household_id, at])?;
    Ok(())
}

/// Moves a visit to `signed` or `void` (with its reason).
pub(crate) fn set_status(
    conn: &Connection,
    id: &str,
    to: VisitStatus,
    reason: Option<&str>,
    at: &str,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE visits SET status = ?2, updated_at = ?3,
             signed_at = CASE WHEN ?2 = 'signed' THEN ?3 ELSE signed_at END,
             voided_at = CASE WHEN ?2 = 'void' THEN ?3 ELSE voided_at END,
             void_reason = coalesce(?4, void_reason)
         WHERE id = ?1",
    )?
    .execute(params![id, to.as_str(), at, reason])?;
    Ok(())
}

/// A status change the server sent for a visit that left its device (never a local draft).
pub(crate) fn set_status_from_server(
    conn: &Connection,
    id: &str,
    status: &str,
    reason: Option<&str>,
    at: &str,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE visits SET status = ?2, void_reason = coalesce(?3, void_reason),
             signed_at = CASE WHEN ?2 = 'signed' THEN ?4 ELSE signed_at END, updated_at = ?4
         WHERE id = ?1 AND status != 'draft'",
    )?
    .execute(params![id, status, reason, at])?;
    Ok(())
}

/// The server acknowledged the visit's submission at `seq`.
pub(crate) fn set_synced(conn: &Connection, id: &str, seq: u64) -> Result<()> {
    conn.prepare_cached("UPDATE visits SET synced_seq = ?2 WHERE id = ?1")?
        .execute(params![id, i64::try_from(seq).unwrap_or(i64::MAX)])?;
    Ok(())
}

pub(crate) fn is_synced(conn: &Connection, id: &str) -> Result<bool> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT synced_seq FROM visits WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| not_found("visit", id))?;
    Ok(seq.is_some())
}

fn summaries(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<VisitSummary>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |r| {
        let status: String = r.get(3)?;
        Ok(VisitSummary {
            id: r.get(0)?,
            household_id: r.get(1)?,
            visit_type: r.get(2)?,
            status: parse_status(&status),
            author: r.get(4)?,
            updated_at: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A household's visits, newest first.
pub(crate) fn of_household(conn: &Connection, household_id: &str) -> Result<Vec<VisitSummary>> {
    summaries(
        conn,
        "SELECT id, household_id, visit_type, status, author, updated_at FROM visits WHERE household_id = ?1 ORDER BY created_at DESC",
        [household_id],
    )
}

/// A user's drafts, most recently edited first.
pub(crate) fn drafts_of(conn: &Connection, author: &str) -> Result<Vec<VisitSummary>> {
    summaries(
        conn,
        "SELECT id, household_id, visit_type, status, author, updated_at FROM visits WHERE author = ?1 AND status = 'draft' ORDER BY updated_at DESC",
        [author],
    )
}

/// Removes visits the server holds whole (acknowledged, nothing of theirs pending, no revision
/// on the device, every content uploaded) last changed before `cutoff`, with their attachments
/// and contents. Returns how many left.
pub(crate) fn purge_synced(conn: &Connection, cutoff: &str) -> Result<u64> {
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS purge_ids (id TEXT PRIMARY KEY)",
        [],
    )?;
    conn.execute("DELETE FROM temp.purge_ids", [])?;
    conn.execute(
        "INSERT INTO temp.purge_ids (id)
         SELECT v.id FROM visits v
         WHERE v.status IN ('completed', 'signed', 'void')
           AND v.synced_seq IS NOT NULL
           AND v.updated_at < ?1
           AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.entity = 'visit' AND o.entity_id = v.id)
           AND NOT EXISTS (SELECT 1 FROM visits r WHERE r.revision_of = v.id)
           AND NOT EXISTS (SELECT 1 FROM attachments a JOIN blobs b ON b.hash = a.content_hash
                           WHERE a.visit_id = v.id AND EXISTS (SELECT 1 FROM pending_contents p WHERE p.hash = b.hash))",
        params![cutoff],
    )?;
    for sql in [
        "DELETE FROM attachments WHERE visit_id IN (SELECT id FROM temp.purge_ids)",
        "DELETE FROM blobs WHERE NOT EXISTS (SELECT 1 FROM attachments a WHERE a.content_hash = blobs.hash)",
        "DELETE FROM pending_contents WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.hash = pending_contents.hash)",
    ] {
        conn.execute(sql, [])?;
    }
    let n = conn.execute(
        "DELETE FROM visits WHERE id IN (SELECT id FROM temp.purge_ids)",
        [],
    )?;
    conn.execute("DELETE FROM temp.purge_ids", [])?;
    Ok(n as u64)
}
