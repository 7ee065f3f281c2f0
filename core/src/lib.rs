//! Zoufang core: the offline-first household visit collector embedded in the Android and iOS
//! apps.
//!
//! Layers, from the bottom: [`model`] (forms, answers, validation; pure Rust), [`store`]
//! (SQLite, migrations, every SQL statement), the sync engine, and the [`Collector`] handle that the CLI, the bindings
//! and the tests all use.

pub mod collector;
pub mod error;
pub mod media;
pub mod records;
pub mod store;
pub mod sync;

/// The model layer (forms, answers, validation), its own crate so the server shares it.
pub use zoufang_model as model;
/// What devices and the server share byte for byte: messages, frames, checksums, hashing.
pub use zoufang_protocol as protocol;

pub use collector::{Collector, FieldState, ProposedStatus};
pub use error::{Error, Result};
pub use store::{Cipher, StoreOptions};
