//! The PostgreSQL storage, for the provincial scale: several `zoufang serve` nodes on one
//! database, none keeping state of its own (attachment contents in a `BlobStore` they share).
//!
//! Write transactions are serialised by one transaction-scoped advisory lock taken first
//! thing: every rule of the service (the merge rule's "is the base current?", the feed's next
//! sequence number, idempotency by device and change) then runs exactly as it does on a single
//! SQLite writer, whichever node a device talks to, so concurrent pushes to one household make
//! exactly the conflicts one node would, and the feed's order is its commit order (a pull never
//! skips an entry committed later under a smaller number). Reads run on a REPEATABLE READ
//! snapshot and never wait. Row locks per record would let writes to different villages
//! proceed side by side, but the feed's single sequence would still need this serialisation.

mod conn;
mod copy;
mod devices;
mod duplicates;
mod handovers;
mod records;

pub use copy::CopyReport;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use postgres::{IsolationLevel, NoTls};
use r2d2_postgres::PostgresConnectionManager;

use crate::at_rest::AtRest;
use crate::blobs::{BlobStore, FsBlobStore};
use crate::repo::{Transactions, Tx};
use crate::storage::{Result, ServerError};

/// The migrations, in order: (version, SQL). A released one is never edited.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_schema.sql")),
    (
        2,
        include_str!("../../migrations/postgres/0002_duplicates.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_handovers.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_visit_frequencies.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_possession.sql"),
    ),
    (
        6,
        include_str!("../../migrations/postgres/0006_successors.sql"),
    ),
];

/// The advisory lock every write transaction holds (any constant; ours spells "zf").
const WRITE_LOCK: i64 = 0x7a66;

pub(crate) use conn::PgTx;

type Pool = r2d2::Pool<conn::Manager>;

/// The PostgreSQL storage of a deployment.
pub struct PgStorage {
    /// Always `Some` until dropped (see `Drop`).
    pool: Option<Pool>,
    blobs: Arc<dyn BlobStore>,
}

impl Drop for PgStorage {
    /// The synchronous client closes its connections by blocking on its own runtime, which
    /// tokio forbids on a thread driving async tasks (where a server's state is dropped): the
    /// connections are closed on a thread of their own.
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

impl std::fmt::Debug for PgStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgStorage")
    }
}

fn pool_error(e: r2d2::Error) -> ServerError {
    ServerError::Storage(format!("no database connection: {e}"))
}

impl PgStorage {
    /// Connects to `url` (`postgres://user@host:port/db`), migrating the schema if needed,
    /// with attachment contents in `data_dir/attachments` (a directory every node shares),
    /// sealed as `at_rest` says. (The database's own files are PostgreSQL's to protect: disk or
    /// volume encryption on the database host.)
    pub fn open(url: &str, data_dir: &Path, at_rest: &AtRest) -> Result<Self> {
        crate::private::dir(data_dir)
            .map_err(|e| ServerError::Storage(format!("cannot create the data directory: {e}")))?;
        crate::at_rest::check_directory(data_dir, at_rest)?;
        let blobs = FsBlobStore::open(&data_dir.join("attachments"), at_rest.objects())
            .map_err(|e| ServerError::Storage(format!("cannot open the attachment store: {e}")))?;
        Self::open_with(url, Arc::new(blobs))
    }

    pub fn open_with(url: &str, blobs: Arc<dyn BlobStore>) -> Result<Self> {
        let config: postgres::Config = url
            .parse()
            .map_err(|_| ServerError::bad("invalid_database", "not a postgres:// URL"))?;
        let manager = conn::Manager(PostgresConnectionManager::new(config, NoTls));
        let pool = r2d2::Pool::builder()
            .max_size(16)
            .connection_timeout(Duration::from_secs(30))
            .build(manager)
            .map_err(pool_error)?;
        let storage = Self {
            pool: Some(pool),
            blobs,
        };
        storage.migrate()?;
        Ok(storage)
    }

    /// Applies the migrations not yet applied, under a lock so two nodes starting together do
    /// not both apply one.
    fn connection(&self) -> Result<r2d2::PooledConnection<conn::Manager>> {
        let pool = self
            .pool
            .as_ref()
            .ok_or_else(|| ServerError::Storage("the storage is closed".into()))?;
        pool.get().map_err(pool_error)
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.connection()?;
        let mut tx = conn.client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )?;
        for (version, sql) in MIGRATIONS {
            let done = tx
                .query_opt(
                    "SELECT 1 FROM schema_migrations WHERE version = $1",
                    &[version],
                )?
                .is_some();
            if !done {
                tx.batch_execute(sql)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[version],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

impl Transactions for PgStorage {
    fn blobs(&self) -> &dyn BlobStore {
        self.blobs.as_ref()
    }

    fn read_tx(&self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        let conn = &mut *self.connection()?;
        let mut tx = conn
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        f(&mut PgTx::new(&mut tx, &mut conn.statements))?;
        tx.commit()?;
        Ok(())
    }

    fn write_tx(&self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        let conn = &mut *self.connection()?;
        let mut tx = conn.client.transaction()?;
        let mut repos = PgTx::new(&mut tx, &mut conn.statements);
        repos.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
        f(&mut repos)?;
        repos.flush()?;
        tx.commit()?;
        Ok(())
    }
}
