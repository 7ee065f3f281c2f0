//! Moving a pilot county up: copies a SQLite data directory's `server.db` into an empty
//! PostgreSQL database, table by table in one transaction. Device tokens are stored hashed and
//! copied as they are, so enrolled devices go on syncing without enrolling again; attachment
//! contents stay in the data directory, which the PostgreSQL nodes then share.

use std::path::Path;

use postgres::types::ToSql;
use rusqlite::types::Value;

use super::PgStorage;
use crate::at_rest::AtRest;
use crate::storage::{Result, ServerError};

/// Every table, parents before children (foreign keys).
const TABLES: &[&str] = &[
    "users",
    "enrollment_tokens",
    "devices",
    "records",
    "fields",
    "conflicts",
    "visits",
    "feed",
    "device_changes",
    "checksums",
    "forms",
    "code_lists",
    "device_audit",
    "server_audit",
    "visit_attachments",
    "contents",
    "possible_duplicates",
    "former_areas",
    "handovers",
    "visit_frequencies",
    "content_holders",
    "server_secrets",
];

/// Rows copied, per table.
pub type CopyReport = Vec<(String, u64)>;

/// One SQLite value as the PostgreSQL column of `pg_type` takes it.
fn param(value: Value, pg_type: &str) -> Result<Box<dyn ToSql + Sync>> {
    Ok(match (pg_type, value) {
        ("bigint", Value::Integer(n)) => Box::new(n),
        ("bigint", Value::Null) => Box::new(None::<i64>),
        ("boolean", Value::Integer(n)) => Box::new(n != 0),
        ("boolean", Value::Null) => Box::new(None::<bool>),
        ("text", Value::Text(t)) => Box::new(t),
        ("text", Value::Null) => Box::new(None::<String>),
        ("bytea", Value::Blob(b)) => Box::new(b),
        (t, v) => {
            return Err(ServerError::Storage(format!(
                "cannot copy a {:?} value into a {t} column",
                v.data_type()
            )));
        }
    })
}

impl PgStorage {
    /// Copies the SQLite storage of `data_dir` (kept as `at_rest` says) into this (empty)
    /// database.
    pub fn copy_from_sqlite(&self, data_dir: &Path, at_rest: &AtRest) -> Result<CopyReport> {
        zoufang_crypto::init();
        let source = rusqlite::Connection::open_with_flags(
            data_dir.join("server.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        crate::at_rest::key_connection(&source, at_rest)?;
        let mut conn = self.connection()?;
        let mut tx = conn.client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&super::WRITE_LOCK])?;
        let held: i64 = tx
            .query_one(
                "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM feed)",
                &[],
            )?
            .get(0);
        if held > 0 {
            return Err(ServerError::bad(
                "database_not_empty",
                "the PostgreSQL database already holds data; copy into an empty one",
            ));
        }
        let mut report = Vec::new();
        for table in TABLES {
            let columns: Vec<(String, String)> = tx
                .query(
                    "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                    &[table],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
            let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
            let insert = tx.prepare(&format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                names.join(", "),
                placeholders.join(", ")
            ))?;
            let mut stmt = source.prepare(&format!("SELECT {} FROM {table}", names.join(", ")))?;
            let rows = stmt
                .query_map([], |r| {
                    (0..names.len())
                        .map(|i| r.get::<_, Value>(i))
                        .collect::<rusqlite::Result<Vec<_>>>()
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for row in &rows {
                let params = row
                    .iter()
                    .zip(&columns)
                    .map(|(v, (_, t))| param(v.clone(), t))
                    .collect::<Result<Vec<_>>>()?;
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
                tx.execute(&insert, &refs)?;
            }
            report.push(((*table).to_owned(), rows.len() as u64));
        }
        tx.commit()?;
        tracing::info!(
            tables = report.len(),
            "SQLite storage copied into PostgreSQL"
        );
        Ok(report)
    }
}
