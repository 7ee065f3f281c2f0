//! Keeping only what the coordinator still needs, and destroying everything on an
//! administrator's order.
//!
//! - [`Collector::purge_synced_visits`]: visits that the server holds (completed, signed or
//!   voided, acknowledged) and that are older than the retention period leave the phone, with
//!   their attachments' metadata and contents. Households
//!   in the coordinator's areas, drafts and anything not yet acknowledged stay. Deleted bytes
//!   are zeroed (the store runs with `secure_delete`) and the WAL is emptied.
//! - Remote wipe: when the server answers `410 device_wiped`, the device records the wipe in its
//!   audit trail, uploads the trail, then overwrites and deletes its files and returns
//!   `Error::DeviceWiped`, on which the app destroys the store key in the platform keystore.
//!   With an encrypted store, the key's destruction is what makes the data unrecoverable: flash
//!   storage may keep old copies of overwritten blocks.

use std::time::Duration;

use serde_json::json;

use crate::collector::Collector;
use crate::error::{Error, Result};
use crate::records::timestamp;
use crate::store;
use crate::sync::transport::{RetryPolicy, Transport};
use zoufang_protocol::audit::AuditAction;
use zoufang_protocol::messages::{AuditUploadRequest, AuditUploadResponse, PROTOCOL_VERSION};

impl Collector {
    /// Removes visits the server already holds, their photos and signatures included, that were
    /// last changed more than `retention` ago. Returns how many left the phone.
    pub fn purge_synced_visits(&self, retention: Duration) -> Result<u64> {
        self.require_user()?;
        let retention = chrono::TimeDelta::from_std(retention)
            .map_err(|_| Error::InvalidInput("the retention period is too long".into()))?;
        let cutoff = timestamp(self.now() - retention);
        let purged = self.write(|tx| {
            let n = store::visits::purge_synced(tx, &cutoff)?;
            self.audit(
                tx,
                AuditAction::Purge,
                None,
                json!({"visits": n, "retention_days": retention.num_days()}),
            )?;
            Ok(n)
        })?;
        // Old copies of the deleted pages may still sit in the WAL: move everything into the
        // main file now (with secure_delete, freed pages there are zeroed).
        store::checkpoint(&self.db.writer.lock())?;
        tracing::info!(
            visits = purged,
            "synced visits purged after the retention period"
        );
        Ok(purged)
    }

    /// The server ordered this device wiped: record it, hand the audit trail over (best effort:
    /// the wipe happens even if the link fails), destroy the store.
    pub(crate) fn wipe_on_request(
        &self,
        transport: &dyn Transport,
        retry: &RetryPolicy,
    ) -> Result<crate::sync::SyncReport> {
        tracing::warn!("the server ordered this device wiped");
        self.audit_now(AuditAction::Wipe, None, json!({"ordered_by": "server"}))?;
        let settings = self.sync_settings()?;
        if let (Some(device_id), Some(token)) = (settings.device_id, settings.device_token) {
            let chain_hash = self.audit_chain_hash()?;
            loop {
                let entries = self.pending_audit(crate::sync::engine::AUDIT_BATCH)?;
                let Some(first) = entries.first().map(|e| e.seq) else {
                    break;
                };
                let body = crate::sync::engine::encode(&AuditUploadRequest {
                    protocol: PROTOCOL_VERSION,
                    device_id: device_id.clone(),
                    chain_hash,
                    entries,
                })?;
                let request = crate::sync::engine::request("POST", "/v1/audit", Some(&token), body);
                let Ok(response) =
                    crate::sync::engine::send_with_retry(transport, &request, retry, None)
                else {
                    break;
                };
                let Ok(uploaded) = crate::sync::engine::decode::<AuditUploadResponse>(&response)
                else {
                    break;
                };
                if uploaded.accepted_through < first || uploaded.chain_break.is_some() {
                    break;
                }
                self.audit_uploaded_through(uploaded.accepted_through)?;
            }
        }
        self.db.destroy()?;
        Err(Error::DeviceWiped)
    }
}
