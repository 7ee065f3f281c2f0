//! `meta`: the store's own settings, one text value per key (the owner and current user, the
//! audit chain's hash, the sync settings).

use rusqlite::{Connection, OptionalExtension};

use crate::error::Result;

pub(crate) const CURRENT_USER: &str = "current_user";
pub(crate) const OWNER_USER: &str = "owner_user";
pub(crate) const AUDIT_HASH: &str = "audit_hash";
pub(crate) const SYNC: &str = "sync";

pub(crate) fn get(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

pub(crate) fn set(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
        .execute([key, value])?;
    Ok(())
}
