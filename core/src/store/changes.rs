//! `change_log`: every change of the store, with who made it and when (typed values included,
//! so the log is purged with the visits it describes).

use rusqlite::{Connection, params};
use serde_json::Value as Json;

use crate::error::Result;

/// One change-log line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Change<'a> {
    pub entity: &'static str,
    pub entity_id: &'a str,
    pub op: &'static str,
    pub field: Option<&'a str>,
    pub value: Option<&'a Json>,
}

pub(crate) fn append(conn: &Connection, change: &Change<'_>, author: &str, at: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO change_log (entity, entity_id, op, field, value, author, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        change.entity,
        change.entity_id,
        change.op,
        change.field,
        change.value.map(Json::to_string),
        author,
        at
    ])?;
    Ok(())
}
