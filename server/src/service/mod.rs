//! The server's rules, written once for every storage: who may do what (authentication,
//! roles and areas), enrolment and token lifetimes, and the server's audit chain. Each
//! function works on a transaction handle (`repo::Tx`) and decides; the storage only reads and
//! writes. See `repo.rs` for how far the move to this shape has come.

pub mod access;
pub mod admin;
pub mod attachments;
pub mod audit;
pub mod catalog;
pub mod due;
pub mod handover;
pub mod merges;
pub mod plausible;
pub mod possession;
pub mod pull;
pub mod push;
pub mod records;
pub mod server_audit;
mod storage;

use chrono::{DateTime, SecondsFormat, Utc};

/// How the server writes an instant: UTC, RFC 3339, milliseconds (sorts as text).
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}
