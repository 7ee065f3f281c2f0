//! Pooled connections that keep their prepared statements.
//!
//! The client prepares a statement given as text on every call: one extra round trip per
//! query, paid while the write lock is held, and a push of 100 changes runs hundreds of them:
//! each connection prepares a statement once and reuses it for as long as it lives
//! (statements belong to the connection; PostgreSQL drops them with it).

use std::collections::{BTreeSet, HashMap};

use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement, Transaction};
use r2d2_postgres::PostgresConnectionManager;

use crate::storage::Result;

/// A connection and the statements prepared on it, by their (static) text.
pub(crate) struct PgConn {
    pub(crate) client: Client,
    pub(crate) statements: HashMap<&'static str, Statement>,
}

/// r2d2's manager for [`PgConn`]: the stock one underneath, an empty cache on each connection.
#[derive(Debug)]
pub(crate) struct Manager(pub(crate) PostgresConnectionManager<NoTls>);

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> std::result::Result<PgConn, postgres::Error> {
        Ok(PgConn {
            client: self.0.connect()?,
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> std::result::Result<(), postgres::Error> {
        self.0.is_valid(&mut conn.client)
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        self.0.has_broken(&mut conn.client)
    }
}

/// A transaction of the PostgreSQL storage, as the repositories see it: the statement text
/// they pass is prepared once per connection.
pub(crate) struct PgTx<'a, 't> {
    tx: &'a mut Transaction<'t>,
    statements: &'a mut HashMap<&'static str, Statement>,
    pub(super) held: Held,
}

/// What a write transaction, holding the write lock, knows without asking again: the feed's
/// head and the villages' checksums it has read or changed (written back once, at commit).
/// Nothing else writes them while the lock is held. A new household with two fields then
/// takes 7 statements instead of 12.
#[derive(Default)]
pub(super) struct Held {
    pub(super) feed_head: Option<u64>,
    pub(super) checksums: HashMap<String, u64>,
    pub(super) changed: BTreeSet<String>,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl<'a, 't> PgTx<'a, 't> {
    pub(crate) fn new(
        tx: &'a mut Transaction<'t>,
        statements: &'a mut HashMap<&'static str, Statement>,
    ) -> Self {
        Self {
            tx,
            statements,
            held: Held::default(),
        }
    }

    /// Writes back the checksums changed in this transaction.
    pub(crate) fn flush(&mut self) -> Result<()> {
        for village in std::mem::take(&mut self.held.changed) {
            let sum = self.held.checksums.get(&village).copied().unwrap_or(0);
            // Stored as the i64 with the same bits: the sum wraps.
            self.execute(
                "INSERT INTO checksums (village_code, sum) VALUES ($1, $2)
                 ON CONFLICT (village_code) DO UPDATE SET sum = $2",
                &[&village, &(sum as i64)],
            )?;
        }
        Ok(())
    }

    fn statement(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    pub(crate) fn execute(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64> {
        let s = self.statement(sql)?;
        Ok(self.tx.execute(&s, params)?)
    }

    pub(crate) fn query(&mut self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>> {
        let s = self.statement(sql)?;
        Ok(self.tx.query(&s, params)?)
    }

    pub(crate) fn query_opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>> {
        let s = self.statement(sql)?;
        Ok(self.tx.query_opt(&s, params)?)
    }

    pub(crate) fn query_one(&mut self, sql: &'static str, params: Params<'_>) -> Result<Row> {
        let s = self.statement(sql)?;
        Ok(self.tx.query_one(&s, params)?)
    }
}
