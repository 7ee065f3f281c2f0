//! What a piece of work asked of SQLite, counted by SQLite itself: statements run, virtual
//! machine steps and the rows stepped through by full scans (of a table or a whole index).
//! A diagnostic for tests and benchmarks (cargo feature `sql-stats`), to show that a sync's
//! cost follows the batch it carries rather than the store's history: an index lookup costs a
//! few steps whatever the table's size, a scan costs a step per row.
//!
//! [`Collector::measure_sql`](crate::Collector::measure_sql) traces the store's connections
//! while a closure runs on the calling thread (the sync driver does its SQL there), with the
//! statement cache off so that SQLite's per-statement counters cover one run each.

use std::cell::RefCell;
use std::collections::BTreeMap;

use rusqlite::trace::{TraceEvent, TraceEventCodes};
use rusqlite::{Connection, StatementStatus};

/// One statement's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementStats {
    pub runs: u64,
    pub vm_steps: u64,
    pub fullscan_steps: u64,
}

/// Every statement run while measuring, by SQL text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlStats {
    pub statements: BTreeMap<String, StatementStats>,
}

impl SqlStats {
    pub fn runs(&self) -> u64 {
        self.statements.values().map(|s| s.runs).sum()
    }
    pub fn vm_steps(&self) -> u64 {
        self.statements.values().map(|s| s.vm_steps).sum()
    }
    /// Rows (table or index entries) stepped through by full scans.
    pub fn fullscan_steps(&self) -> u64 {
        self.statements.values().map(|s| s.fullscan_steps).sum()
    }
    /// The statements that scanned, most rows first (what to look at when a sync grew).
    pub fn scans(&self) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self
            .statements
            .iter()
            .filter(|(_, s)| s.fullscan_steps > 0)
            .map(|(sql, s)| (sql.as_str(), s.fullscan_steps))
            .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.1));
        v
    }
}

thread_local! {
    static RECORDING: RefCell<Option<SqlStats>> = const { RefCell::new(None) };
}

fn counter(stmt: &rusqlite::trace::StmtRef<'_>, status: StatementStatus) -> u64 {
    u64::try_from(stmt.get_status(status)).unwrap_or(0)
}

fn on_trace(event: TraceEvent<'_>) {
    let TraceEvent::Profile(stmt, _) = event else {
        return;
    };
    RECORDING.with(|r| {
        if let Some(stats) = r.borrow_mut().as_mut() {
            let entry = stats.statements.entry(stmt.sql().into_owned()).or_default();
            entry.runs += 1;
            entry.vm_steps += counter(&stmt, StatementStatus::VmStep);
            entry.fullscan_steps += counter(&stmt, StatementStatus::FullscanStep);
        }
    });
}

/// Starts or stops tracing one connection.
pub(crate) fn trace(conn: &Connection, on: bool) {
    conn.flush_prepared_statement_cache();
    if on {
        conn.set_prepared_statement_cache_capacity(0);
        conn.trace_v2(TraceEventCodes::SQLITE_TRACE_PROFILE, Some(on_trace));
    } else {
        conn.trace_v2(TraceEventCodes::empty(), None);
        conn.set_prepared_statement_cache_capacity(DEFAULT_CACHE);
    }
}

/// rusqlite's default statement cache size.
const DEFAULT_CACHE: usize = 16;

pub(crate) fn start() {
    RECORDING.with(|r| *r.borrow_mut() = Some(SqlStats::default()));
}

pub(crate) fn stop() -> SqlStats {
    RECORDING
        .with(|r| r.borrow_mut().take())
        .unwrap_or_default()
}
