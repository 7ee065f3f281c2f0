//! The server's view on the device: each record's server fields with their versions
//! (`server_state`, the bases of local edits), the per-village checksums kept in step with
//! them, and the conflicts the server reported.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value as Json};

use super::parse_object;
use crate::error::Result;
use zoufang_protocol::messages::{ConflictInfo, ConflictStatus, Entity};

fn table(entity: Entity) -> &'static str {
    match entity {
        Entity::Household => "households",
        Entity::Member => "members",
    }
}

/// A record's server fields (`{field: {value, version}}`), `None` if the record is not here.
pub(crate) fn state(
    conn: &Connection,
    entity: Entity,
    id: &str,
) -> Result<Option<Map<String, Json>>> {
    let sql = format!("SELECT server_state FROM {} WHERE id = ?1", table(entity));
    let text: Option<String> = conn
        .prepare_cached(&sql)?
        .query_row([id], |r| r.get(0))
        .optional()?;
    text.map(|t| parse_object(&t)).transpose()
}

pub(crate) fn save_state(
    conn: &Connection,
    entity: Entity,
    id: &str,
    state: &Map<String, Json>,
) -> Result<()> {
    let sql = format!(
        "UPDATE {} SET server_state = ?2 WHERE id = ?1",
        table(entity)
    );
    conn.prepare_cached(&sql)?
        .execute(params![id, Json::Object(state.clone()).to_string()])?;
    Ok(())
}

/// Forgets the server's view of every record of a village (before a snapshot replaces it).
pub(crate) fn clear_village(conn: &Connection, village: &str) -> Result<()> {
    conn.execute(
        "UPDATE households SET server_state = '{}' WHERE village_code = ?1",
        [village],
    )?;
    conn.execute(
        "UPDATE members SET server_state = '{}' WHERE household_id IN (SELECT id FROM households WHERE village_code = ?1)",
        [village],
    )?;
    Ok(())
}

/// A record's server fields, with what it is.
pub(crate) type RecordServerState = (Entity, String, Map<String, Json>);

/// (entity, id, server fields) of every record of a village.
pub(crate) fn village_states(conn: &Connection, village: &str) -> Result<Vec<RecordServerState>> {
    let mut stmt = conn.prepare_cached(
        "SELECT 'household', id, server_state FROM households WHERE village_code = ?1
         UNION ALL
         SELECT 'member', m.id, m.server_state FROM members m JOIN households h ON h.id = m.household_id WHERE h.village_code = ?1",
    )?;
    let rows = stmt.query_map([village], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    rows.map(|row| {
        let (entity, id, state) = row?;
        let entity = Entity::parse(&entity).unwrap_or(Entity::Household);
        Ok((entity, id, parse_object(&state)?))
    })
    .collect()
}

pub(crate) fn checksum(conn: &Connection, village: &str) -> Result<u64> {
    let sum: Option<i64> = conn
        .prepare_cached("SELECT sum FROM scope_checksums WHERE village_code = ?1")?
        .query_row([village], |r| r.get(0))
        .optional()?;
    // Stored as the i64 with the same bits.
    Ok(sum.unwrap_or(0) as u64)
}

pub(crate) fn set_checksum(conn: &Connection, village: &str, sum: u64) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO scope_checksums (village_code, sum) VALUES (?1, ?2)",
    )?
    .execute(params![village, sum as i64])?;
    Ok(())
}

pub(crate) fn checksums(conn: &Connection) -> Result<BTreeMap<String, u64>> {
    let mut stmt = conn.prepare_cached("SELECT village_code, sum FROM scope_checksums")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn upsert_conflict(conn: &Connection, c: &ConflictInfo) -> Result<()> {
    let status = if c.status == ConflictStatus::Open {
        "open"
    } else {
        "resolved"
    };
    conn.prepare_cached(
        "INSERT INTO sync_conflicts (id, village_code, status, info) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET status = ?3, info = ?4",
    )?
    .execute(params![
        c.id,
        c.village_code,
        status,
        serde_json::to_string(c)?
    ])?;
    Ok(())
}

pub(crate) fn open_conflicts(conn: &Connection) -> Result<Vec<ConflictInfo>> {
    let mut stmt =
        conn.prepare_cached("SELECT info FROM sync_conflicts WHERE status = 'open' ORDER BY id")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.map(|i| Ok(serde_json::from_str(&i?)?)).collect()
}

pub(crate) fn open_conflict(conn: &Connection, id: &str) -> Result<Option<ConflictInfo>> {
    let info: Option<String> = conn
        .prepare_cached("SELECT info FROM sync_conflicts WHERE id = ?1 AND status = 'open'")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(info.map(|i| serde_json::from_str(&i)).transpose()?)
}

pub(crate) fn open_conflict_count(conn: &Connection) -> Result<u64> {
    super::count(
        conn,
        "SELECT count(*) FROM sync_conflicts WHERE status = 'open'",
        [],
    )
}
