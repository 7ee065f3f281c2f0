//! Zoufang core: the offline-first household visit collector embedded in the Android and iOS
//! apps.
//!
//! Layers, from the bottom: [`model`] (forms, answers, validation; pure Rust), [`store`]
//! (SQLite, migrations, change log), and the [`Collector`] handle that the CLI, the bindings
//! and the tests all use.

pub mod audit;
pub mod collector;
pub mod error;
pub mod media;
pub mod model;
pub mod records;
pub mod retention;
pub mod signing;
pub mod store;
pub mod sync;

pub use collector::{Collector, FieldState};
pub use error::{Error, Result};
pub use store::{Cipher, StoreOptions};
