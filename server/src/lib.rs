//! zoufang-server: the reference provincial sync backend. axum on tokio; storage behind the
//! [`storage::Storage`] trait, with the embedded SQLite implementation in [`sqlite`].

pub mod api;
pub mod merge;
pub mod sqlite;
pub mod storage;

pub use api::{AppState, router, serve};
pub use sqlite::SqliteStorage;
pub use storage::{DeviceAuth, ServerError, Storage};
