//! `form_definitions` and `code_lists`: several versions of each side by side.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;
use zoufang_model::code_list::{CodeList, CodeLists};

/// How many versions of a form are installed.
pub(crate) fn version_count(conn: &Connection, form_id: &str) -> Result<u64> {
    super::count(
        conn,
        "SELECT count(*) FROM form_definitions WHERE form_id = ?1",
        [form_id],
    )
}

/// The stored definition of one form version.
pub(crate) fn definition(conn: &Connection, form_id: &str, version: u32) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT definition FROM form_definitions WHERE form_id = ?1 AND version = ?2",
        )?
        .query_row(params![form_id, version], |r| r.get(0))
        .optional()?)
}

pub(crate) fn insert_definition(
    conn: &Connection,
    form_id: &str,
    version: u32,
    definition: &str,
    at: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO form_definitions (form_id, version, definition, installed_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![form_id, version, definition, at])?;
    Ok(())
}

pub(crate) fn latest_version(conn: &Connection, form_id: &str) -> Result<Option<u32>> {
    Ok(conn
        .prepare_cached("SELECT max(version) FROM form_definitions WHERE form_id = ?1")?
        .query_row([form_id], |r| r.get(0))?)
}

/// Installed forms as (id, version), newest first per form.
pub(crate) fn installed(conn: &Connection) -> Result<Vec<(String, u32)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT form_id, version FROM form_definitions ORDER BY form_id, version DESC",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn has_version(conn: &Connection, form_id: &str, version: u32) -> Result<bool> {
    Ok(definition(conn, form_id, version)?.is_some())
}

pub(crate) fn put_code_list(conn: &Connection, list: &CodeList, at: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO code_lists (name, version, entries, installed_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        list.name,
        list.version,
        serde_json::to_string(&list.entries)?,
        at
    ])?;
    Ok(())
}

/// The newest version of every code list.
pub(crate) fn latest_code_lists(conn: &Connection) -> Result<CodeLists> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.name, c.version, c.entries FROM code_lists c
         WHERE c.version = (SELECT max(version) FROM code_lists d WHERE d.name = c.name)",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, u32>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut lists = CodeLists::default();
    for row in rows {
        let (name, version, entries) = row?;
        lists.insert(CodeList {
            name,
            version,
            entries: serde_json::from_str(&entries)?,
        });
    }
    Ok(lists)
}
