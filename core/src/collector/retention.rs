//! Keeping only what the coordinator still needs, and destroying everything on an
//! administrator's order.
//!
//! - [`Collector::purge_synced_visits`]: visits that the server holds (completed, signed or
//!   voided, acknowledged) and that are older than the retention period leave the phone, with
//!   their attachments' metadata and contents. Households
//!   in the coordinator's areas, drafts and anything not yet acknowledged stay. Deleted bytes
//!   are zeroed (the store runs with `secure_delete`) and the WAL is emptied.
//! - Remote wipe: when the server answers `410 device_wiped`, the device records the wipe in its
//!   audit trail, uploads the trail (the engine's `Wipe` state), then overwrites and deletes its
//!   files (`Connections::destroy`, from the sync driver) and returns
//!   `Error::DeviceWiped`, on which the app destroys the store key in the platform keystore.
//!   With an encrypted store, the key's destruction is what makes the data unrecoverable: flash
//!   storage may keep old copies of overwritten blocks.

use std::time::Duration;

use serde_json::json;

use super::Collector;
use crate::error::{Error, Result};
use crate::records::timestamp;
use crate::store;
use zoufang_protocol::audit::AuditAction;

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
}
