//! A fresh device's first pull, written as a bulk load. The indexes on members' names and ID
//! numbers take keys in random order: kept while a township's 200,000 members arrive page
//! by page, every page's transaction rewrites most of their leaf pages (a few dozen bytes of
//! key each time, a 4 KB page written to the WAL and checkpointed again), which was more than
//! a third of the pull's time. Set aside while the store is empty and built once at the end,
//! each of their pages is written once.
//!
//! The indexes only speed queries up: while they are set aside every query still answers
//! rightly (by scanning). Whatever interrupts the pull (a cut link, a failed sync, the process
//! killed), the next open of the store or the next sync's end builds them again.

use rusqlite::Connection;

use crate::error::Result;

/// The indexes set aside, as the schema creates them (migration V1; same names and terms).
/// (The households' village index stays: a pull's end lists the villages through it, and its
/// keys arrive grouped by village.)
const SET_ASIDE: [(&str, &str); 2] = [
    (
        "members_by_name",
        "CREATE INDEX IF NOT EXISTS members_by_name ON members (name) WHERE removed = 0",
    ),
    (
        "members_by_id_number",
        "CREATE INDEX IF NOT EXISTS members_by_id_number ON members (id_number) WHERE removed = 0",
    ),
];

/// SQLite's page cache while the indexes are built, in KiB (negative: SQLite's unit for KiB).
/// The sort of 200,000 keys otherwise grows with the default cache and would take the pull over
/// its memory budget; a smaller cache makes the sorter merge in smaller runs.
const BUILD_CACHE_KIB: i64 = -256;

/// WAL pages between checkpoints during a bulk load (SQLite's default: 1,000). A checkpoint
/// copies the latest version of each page: the pages every transaction touches again (a
/// table's last page, the index pages of a village) are copied once per 40 MB, not once per
/// 4 MB. Per connection, so a crash forgets it; `finish` restores the default.
const BULK_CHECKPOINT_PAGES: i64 = 10_000;

/// At the first page of a pull that has more to come: if the store holds no member yet, sets
/// the indexes aside for the rest of the pull. Inside the page's transaction.
pub(crate) fn begin_if_empty(conn: &Connection) -> Result<()> {
    let empty: bool = conn.query_row(
        "SELECT NOT EXISTS (SELECT 1 FROM members) AND NOT EXISTS (SELECT 1 FROM households)",
        [],
        |r| r.get(0),
    )?;
    if empty {
        conn.pragma_update(None, "wal_autocheckpoint", BULK_CHECKPOINT_PAGES)?;
        for (name, _) in SET_ASIDE {
            conn.execute_batch(&format!("DROP INDEX IF EXISTS {name}"))?;
        }
    }
    Ok(())
}

/// Whether any index is set aside.
pub(crate) fn pending(conn: &Connection) -> Result<bool> {
    let present: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN (?1, ?2)",
        [SET_ASIDE[0].0, SET_ASIDE[1].0],
        |r| r.get(0),
    )?;
    Ok(present < SET_ASIDE.len() as i64)
}

/// Builds the indexes set aside, if any (a no-op otherwise). In its own transaction.
pub(crate) fn finish(conn: &mut Connection) -> Result<()> {
    if !pending(conn)? {
        return Ok(());
    }
    conn.pragma_update(None, "wal_autocheckpoint", 1000)?;
    let cache: i64 = conn.pragma_query_value(None, "cache_size", |r| r.get(0))?;
    conn.pragma_update(None, "cache_size", BUILD_CACHE_KIB)?;
    let built = (|| -> Result<()> {
        let tx = conn.transaction()?;
        for (_, create) in SET_ASIDE {
            tx.execute_batch(create)?;
        }
        tx.commit()?;
        Ok(())
    })();
    conn.pragma_update(None, "cache_size", cache)?;
    built
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn store() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        super::super::schema::migrations()
            .to_latest(&mut conn)
            .unwrap();
        conn
    }

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn an_empty_store_sets_the_indexes_aside_and_gets_them_back() {
        let mut conn = store();
        let by_name = "SELECT id FROM members WHERE name = 'x' AND removed = 0";
        assert!(plan(&conn, by_name).contains("members_by_name"));
        begin_if_empty(&conn).unwrap();
        assert!(pending(&conn).unwrap());
        // Queries still answer while they are aside (by scanning).
        assert!(!plan(&conn, by_name).contains("members_by_name"));
        conn.execute_batch(
            "INSERT INTO households (id, village_code, created_at, updated_at) VALUES ('h', '513431104201', 't', 't');
             INSERT INTO members (id, household_id, name, id_number, created_at, updated_at) VALUES ('m', 'h', '阿呷', '513431199001011234', 't', 't');",
        )
        .unwrap();
        finish(&mut conn).unwrap();
        assert!(!pending(&conn).unwrap());
        assert!(plan(&conn, by_name).contains("members_by_name"));
        let found: String = conn
            .query_row(
                "SELECT id FROM members WHERE id_number = '513431199001011234' AND removed = 0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(found, "m");
        // The cache and checkpoint settings are back to what they were.
        let cache: i64 = conn
            .pragma_query_value(None, "cache_size", |r| r.get(0))
            .unwrap();
        assert_eq!(cache, -2000);
        let checkpoint: i64 = conn
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .unwrap();
        assert_eq!(checkpoint, 1000);
    }

    #[test]
    fn a_store_holding_records_keeps_its_indexes() {
        let mut conn = store();
        conn.execute_batch(
            "INSERT INTO households (id, village_code, created_at, updated_at) VALUES ('h', '513431104201', 't', 't');",
        )
        .unwrap();
        begin_if_empty(&conn).unwrap();
        assert!(!pending(&conn).unwrap());
        finish(&mut conn).unwrap();
        assert!(!pending(&conn).unwrap());
    }
}
