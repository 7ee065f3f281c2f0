//! The server's own audit chain (SHA-256): enrolments, revocations, wipe orders, reviewers'
//! resolutions. Append-only; `zoufang admin audit-verify` re-checks it.

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use zoufang_protocol::audit::{self, AuditEntry, HashAlgorithm};

use super::ts;
use crate::repo::ServerAuditRepo;
use crate::storage::Result;

/// Appends an event: who (`actor`) did what to which subject, with ids and counts only.
pub fn append(
    tx: &mut dyn ServerAuditRepo,
    now: DateTime<Utc>,
    actor: &str,
    action: &str,
    subject: Option<(&str, &str)>,
    detail: Json,
) -> Result<()> {
    let last = tx.last_server_audit()?;
    let entry = AuditEntry {
        seq: last.as_ref().map_or(1, |(s, _)| *s + 1),
        at: ts(now),
        user_id: actor.to_owned(),
        action: action.to_owned(),
        entity: subject.map(|(e, _)| e.to_owned()),
        entity_id: subject.map(|(_, id)| id.to_owned()),
        detail,
        prev_hash: last.map(|(_, h)| h).unwrap_or_default(),
        hash: String::new(),
    };
    let entry = AuditEntry {
        hash: audit::entry_hash(HashAlgorithm::Sha256, &entry),
        ..entry
    };
    tx.append_server_audit(&entry)
}
