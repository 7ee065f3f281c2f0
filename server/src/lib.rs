//! zoufang-server: the reference provincial sync backend. axum on tokio; storage behind the
//! [`storage::Storage`] trait, with the embedded SQLite implementation in [`sqlite`].

pub mod api;
pub mod at_rest;
pub mod blobs;
pub mod merge;
pub mod pg;
mod private;
pub mod repo;
pub mod rotation;
pub mod service;
pub mod sqlite;
pub mod storage;

use chrono::Utc;

/// Log levels every subscriber of a server process must cap, whatever `RUST_LOG` asks:
/// tokio-postgres logs each statement with its parameters at DEBUG, and the parameters are
/// households' names, ID numbers and phones. `zoufang serve` and `admin` append these to their
/// filter; an app embedding the server with its own subscriber must do the same.
pub const LOG_CAPS: &str = "tokio_postgres=info,postgres=info";
use zoufang_model::default_form::{HOUSEHOLD_VISIT_FORM_JSON, default_code_lists};

/// Publishes the shipped household visit form and code lists if the server has no form yet,
/// so a new server is usable at once.
pub fn publish_defaults(storage: &dyn Storage) -> Result<(), ServerError> {
    let now = Utc::now();
    storage.publish_form(HOUSEHOLD_VISIT_FORM_JSON, now)?;
    let lists = default_code_lists().map_err(|e| ServerError::Storage(e.to_string()))?;
    for list in lists.iter() {
        storage.publish_code_list(list, now)?;
    }
    Ok(())
}

pub use api::{
    AppState, BackgroundServer, MAX_BODY_BYTES, RateLimits, TlsFiles, router, serve, serve_tls,
    shutdown_signal,
};
pub use pg::PgStorage;
pub use service::access::DEVICE_TOKEN_LIFETIME;
pub use sqlite::SqliteStorage;
pub use storage::{DeviceAuth, ServerError, Storage};
