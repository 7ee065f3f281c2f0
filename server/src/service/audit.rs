//! Devices' audit trails: an upload is stored only if it continues the chain the server holds
//! for the device (consecutive numbers, linked hashes, recomputed hashes, the same algorithm);
//! otherwise nothing is stored and an alert is kept. A wipe entry from a device ordered wiped
//! completes the wipe. `verify` re-checks every stored chain.

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use zoufang_protocol::audit::{self, AuditEntry, HashAlgorithm};
use zoufang_protocol::messages::{AuditUploadRequest, AuditUploadResponse, PROTOCOL_VERSION};

use super::{server_audit, ts};
use crate::repo::Tx;
use crate::storage::{DeviceAuth, Result, ServerError};

/// Most entries in one upload.
const MAX_ENTRIES: usize = 5000;

pub fn upload(
    tx: &mut dyn Tx,
    auth: &DeviceAuth,
    request: &AuditUploadRequest,
    now: DateTime<Utc>,
) -> Result<AuditUploadResponse> {
    if request.device_id != auth.device_id {
        return Err(ServerError::Forbidden(
            "the audit upload names another device than the token's".into(),
        ));
    }
    if request.entries.len() > MAX_ENTRIES {
        return Err(ServerError::bad(
            "too_many_entries",
            "at most 5000 audit entries per upload",
        ));
    }
    // The chain is the lineage's: a successor continues its predecessor's.
    let device = auth.lineage.as_str();
    let head = tx.device_audit_head(device)?;
    let (last_seq, last_hash) = head
        .as_ref()
        .map_or((0, String::new()), |(s, h, _)| (*s, h.clone()));
    let alg = head.and_then(|(_, _, a)| a).unwrap_or(request.chain_hash);
    let (entries, rehashed) = with_hashes(tx, device, alg, last_seq, request)?;
    let fresh = fresh_entries(tx, device, last_seq, &entries)?;
    let verdict = if alg != request.chain_hash {
        Err("the chain changed its hash algorithm".to_owned())
    } else {
        rehashed
            .and_then(|()| audit::verify(alg, last_seq, &last_hash, &fresh))
            .map_err(|b| b.to_string())
    };
    let answer = |through: u64, chain_break: Option<String>| AuditUploadResponse {
        protocol: PROTOCOL_VERSION,
        server_time: ts(now),
        accepted_through: through,
        chain_break,
    };
    if let Err(problem) = verdict {
        tracing::warn!(device = %device, "audit chain broken: {problem}");
        tx.set_audit_alert(device, &problem)?;
        let detail = serde_json::json!({"problem": problem});
        let subject = Some(("device", device));
        server_audit::append(
            tx,
            now,
            &auth.user.id,
            "audit_chain_broken",
            subject,
            detail,
        )?;
        return Ok(answer(last_seq, Some(problem)));
    }
    let mut through = last_seq;
    let mut wiped = false;
    for e in &fresh {
        tx.append_device_audit(device, alg, e, &ts(now))?;
        through = e.seq;
        wiped |= e.action == "wipe";
    }
    if wiped && tx.confirm_wipe(&auth.device_id, &ts(now))? {
        let subject = Some(("device", auth.device_id.as_str()));
        server_audit::append(
            tx,
            now,
            &auth.user.id,
            "wipe_confirmed",
            subject,
            Json::Null,
        )?;
    }
    Ok(answer(through, None))
}

/// The request's entries with their hashes: as sent, or computed for a compact upload (no
/// hashes, the last one named as `head`) from the stored entry before the first. A head that
/// does not match is a broken chain, as a wrong hash would have been.
fn with_hashes(
    tx: &mut dyn Tx,
    device: &str,
    alg: HashAlgorithm,
    last_seq: u64,
    request: &AuditUploadRequest,
) -> Result<(Vec<AuditEntry>, std::result::Result<(), audit::ChainBreak>)> {
    let mut entries = request.entries.clone();
    let (Some(head), Some(first)) = (&request.head, entries.first()) else {
        return Ok((entries, Ok(())));
    };
    let before = first.seq.saturating_sub(1);
    // An entry missing before the batch: verification names the gap.
    if before > last_seq {
        return Ok((entries, Ok(())));
    }
    let prev = if before == 0 {
        audit::GENESIS.to_owned()
    } else {
        tx.device_audit_hash(device, before)?.unwrap_or_default()
    };
    let verdict = audit::rehash(alg, &prev, &mut entries, head);
    Ok((entries, verdict))
}

/// The entries beyond what the server holds. Entries it already holds (a lost answer) are
/// skipped if identical; a different one at a held number starts the list, so verification
/// reports the chain broken there.
fn fresh_entries(
    tx: &mut dyn Tx,
    device: &str,
    last_seq: u64,
    entries: &[AuditEntry],
) -> Result<Vec<AuditEntry>> {
    let mut fresh = Vec::new();
    for e in entries {
        if e.seq > last_seq {
            fresh.push(e.clone());
        } else if tx.device_audit_hash(device, e.seq)?.as_deref() != Some(e.hash.as_str()) {
            return Ok(vec![e.clone()]);
        }
    }
    Ok(fresh)
}

/// The trail of a device's lineage (a successor's is its predecessor's, continued).
pub fn device_audit(tx: &mut dyn Tx, device_id: &str) -> Result<Vec<AuditEntry>> {
    let lineage = tx.device_lineage(device_id)?;
    tx.device_audit(lineage.as_deref().unwrap_or(device_id))
}

/// Re-verifies every stored chain (each device's and the server's own): the problems found.
pub fn verify(tx: &mut dyn Tx) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for (device, alg, entries) in tx.device_chains()? {
        if let Err(b) = audit::verify(alg, 0, audit::GENESIS, &entries) {
            problems.push(format!("device {device}: {b}"));
        }
    }
    let server = tx.server_audit_entries()?;
    if let Err(b) = audit::verify(HashAlgorithm::Sha256, 0, audit::GENESIS, &server) {
        problems.push(format!("server: {b}"));
    }
    for (device, alert) in tx.audit_alerts()? {
        problems.push(format!("device {device}: refused upload: {alert}"));
    }
    Ok(problems)
}
