//! `attachments` (which visit field names which content), `blobs` (the contents themselves,
//! content-addressed, inside the encrypted store) and `pending_contents` (those the server does
//! not hold whole yet). A content no attachment names is deleted in the transaction that let it go.

use rusqlite::{Connection, OptionalExtension, blob::Blob, params};
use serde_json::{Map, Value as Json};

use super::{not_found, parse_object};
use crate::error::Result;
use crate::records::{Attachment, AttachmentKind};
use zoufang_protocol::messages::ContentRef;

fn size_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The attachments recorded for a visit, oldest first.
pub(crate) fn of_visit(conn: &Connection, visit_id: &str) -> Result<Vec<Attachment>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, visit_id, field_path, kind, content_hash, size_bytes, mime_type, metadata, created_at
         FROM attachments WHERE visit_id = ?1 ORDER BY created_at, id",
    )?;
    let rows = stmt.query_map([visit_id], |r| {
        let kind: String = r.get(3)?;
        let metadata: String = r.get(7)?;
        Ok((
            Attachment {
                id: r.get(0)?,
                visit_id: r.get(1)?,
                field_path: r.get(2)?,
                kind: if kind == "signature" {
                    AttachmentKind::Signature
                } else {
                    AttachmentKind::Photo
                },
                content_hash: r.get(4)?,
                size_bytes: size_of(r.get(5)?),
                mime_type: r.get(6)?,
                metadata: Map::new(),
                created_at: r.get(8)?,
            },
            metadata,
        ))
    })?;
    rows.map(|row| {
        let (mut a, metadata) = row?;
        a.metadata = parse_object(&metadata)?;
        Ok(a)
    })
    .collect()
}

pub(crate) fn insert(conn: &Connection, a: &Attachment) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO attachments (id, visit_id, field_path, kind, content_hash, size_bytes, mime_type, metadata, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        a.id,
        a.visit_id,
        a.field_path,
        a.kind.as_str(),
        a.content_hash,
        i64::try_from(a.size_bytes).unwrap_or(i64::MAX),
        a.mime_type,
        Json::Object(a.metadata.clone()).to_string(),
        a.created_at
    ])?;
    Ok(())
}

/// One attachment of a visit: its field path and content hash.
pub(crate) fn find(
    conn: &Connection,
    visit_id: &str,
    attachment_id: &str,
) -> Result<(String, Option<String>)> {
    conn.prepare_cached(
        "SELECT field_path, content_hash FROM attachments WHERE id = ?1 AND visit_id = ?2",
    )?
    .query_row(params![attachment_id, visit_id], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()?
    .ok_or_else(|| not_found("attachment", attachment_id))
}

/// Deletes an attachment row and, if nothing else names it, its content.
pub(crate) fn delete(
    conn: &Connection,
    attachment_id: &str,
    content_hash: Option<&str>,
) -> Result<()> {
    conn.prepare_cached("DELETE FROM attachments WHERE id = ?1")?
        .execute([attachment_id])?;
    collect_blob(conn, content_hash)
}

/// (id, content hash) of the attachments in one field of a visit, or in all of it.
pub(crate) fn ids(
    conn: &Connection,
    visit_id: &str,
    field_path: Option<&str>,
) -> Result<Vec<(String, Option<String>)>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, content_hash FROM attachments WHERE visit_id = ?1 AND (?2 IS NULL OR field_path = ?2)",
        )?
        .query_map(params![visit_id, field_path], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Removes the attachments of a draft its answers no longer name (an answer cleared or
/// overwritten, a repeat instance removed) and the contents nothing names any more: a photo
/// the visit does not hold neither travels nor stays on the phone.
pub(crate) fn drop_unreferenced(
    conn: &Connection,
    visit_id: &str,
    answers_json: &str,
) -> Result<()> {
    for (id, hash) in ids(conn, visit_id, None)? {
        // Ids are UUIDs: as a quoted JSON string they occur only where an answer names them.
        if !answers_json.contains(&format!("\"{id}\"")) {
            delete(conn, &id, hash.as_deref())?;
        }
    }
    Ok(())
}

/// (field path, content hash) of a visit's photos, in a fixed order: what a signature covers.
pub(crate) fn photo_hashes(conn: &Connection, visit_id: &str) -> Result<Vec<(String, String)>> {
    Ok(conn
        .prepare_cached(
            "SELECT field_path, coalesce(content_hash, '') FROM attachments
             WHERE visit_id = ?1 AND kind = 'photo' ORDER BY field_path, content_hash",
        )?
        .query_map([visit_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?)
}

/// (id, field path, metadata JSON) of a visit's signatures.
pub(crate) fn signatures(
    conn: &Connection,
    visit_id: &str,
) -> Result<Vec<(String, String, String)>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, field_path, metadata FROM attachments
             WHERE visit_id = ?1 AND kind = 'signature' ORDER BY field_path",
        )?
        .query_map([visit_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?)
}

// ----- contents ----------------------------------------------------------------------------

/// Stores a content under its hash (kept once however many attachments name it); a new one
/// waits for upload.
pub(crate) fn put_blob(conn: &Connection, hash: &str, bytes: &[u8], at: &str) -> Result<()> {
    let added = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO blobs (hash, size, bytes, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            hash,
            i64::try_from(bytes.len()).unwrap_or(i64::MAX),
            bytes,
            at
        ])?;
    if added > 0 {
        conn.prepare_cached("INSERT OR IGNORE INTO pending_contents (hash) VALUES (?1)")?
            .execute([hash])?;
    }
    Ok(())
}

/// Deletes a content no attachment names any more.
pub(crate) fn collect_blob(conn: &Connection, hash: Option<&str>) -> Result<()> {
    if let Some(hash) = hash {
        let gone = conn
            .prepare_cached(
                "DELETE FROM blobs WHERE hash = ?1 AND NOT EXISTS (SELECT 1 FROM attachments WHERE content_hash = ?1)",
            )?
            .execute([hash])?;
        if gone > 0 {
            conn.prepare_cached("DELETE FROM pending_contents WHERE hash = ?1")?
                .execute([hash])?;
        }
    }
    Ok(())
}

/// A whole content.
pub(crate) fn blob(conn: &Connection, hash: &str) -> Result<Vec<u8>> {
    conn.prepare_cached("SELECT bytes FROM blobs WHERE hash = ?1")?
        .query_row([hash], |r| r.get(0))
        .optional()?
        .ok_or_else(|| not_found("attachment content", hash))
}

/// A content opened for reading piece by piece (incremental blob I/O: a 5 MB photo is never
/// copied whole to send 64 KB of it).
pub(crate) fn open_blob<'c>(conn: &'c Connection, hash: &str) -> Result<Blob<'c>> {
    let rowid: i64 = conn
        .prepare_cached("SELECT rowid FROM blobs WHERE hash = ?1")?
        .query_row([hash], |r| r.get(0))
        .optional()?
        .ok_or_else(|| not_found("attachment content", hash))?;
    Ok(conn.blob_open("main", "blobs", "bytes", rowid, true)?)
}

// ----- uploads -----------------------------------------------------------------------------

/// (visit, contents, bytes, visit acknowledged) for completed visits whose contents have not
/// all reached the server, oldest first.
pub(crate) fn pending_by_visit(conn: &Connection) -> Result<Vec<(String, u64, u64, bool)>> {
    // From the waiting contents (few) to their visits, never the other way round.
    let mut stmt = conn.prepare_cached(
        "SELECT v.id, count(*), sum(b.size), v.synced_seq IS NOT NULL
         FROM pending_contents p
         CROSS JOIN blobs b ON b.hash = p.hash
         CROSS JOIN attachments a ON a.content_hash = p.hash
         CROSS JOIN visits v ON v.id = a.visit_id
         WHERE v.status IN ('completed', 'signed', 'void')
         GROUP BY v.id ORDER BY v.completed_at, v.id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get(0)?, size_of(r.get(1)?), size_of(r.get(2)?), r.get(3)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Contents of completed visits the server does not hold yet, and their bytes (each counted
/// once).
pub(crate) fn pending_totals(conn: &Connection) -> Result<(u64, u64)> {
    let (n, bytes): (i64, Option<i64>) = conn
        .prepare_cached(
            "SELECT count(*), sum(b.size) FROM pending_contents p CROSS JOIN blobs b ON b.hash = p.hash
             WHERE EXISTS (
                 SELECT 1 FROM attachments a JOIN visits v ON v.id = a.visit_id
                 WHERE a.content_hash = p.hash AND v.status IN ('completed', 'signed', 'void'))",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((size_of(n), size_of(bytes.unwrap_or(0))))
}

/// Contents to upload now: not yet held by the server, named by a visit the server has
/// acknowledged (a visit's data goes first). Oldest first.
pub(crate) fn uploadable(conn: &Connection) -> Result<Vec<ContentRef>> {
    let mut stmt = conn.prepare_cached(
        "SELECT b.hash, b.size FROM pending_contents p CROSS JOIN blobs b ON b.hash = p.hash
         WHERE EXISTS (
             SELECT 1 FROM attachments a JOIN visits v ON v.id = a.visit_id
             WHERE a.content_hash = p.hash AND v.synced_seq IS NOT NULL)
         ORDER BY b.rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(ContentRef {
            content_hash: r.get(0)?,
            size_bytes: size_of(r.get(1)?),
            proof: None,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The server holds this content whole and verified.
pub(crate) fn mark_uploaded(conn: &Connection, hash: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM pending_contents WHERE hash = ?1")?
        .execute([hash])?;
    Ok(())
}
