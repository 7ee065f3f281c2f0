//! What the sync engine knows of the device: [`LocalState`], a narrow view of the store that
//! the engine reads and applies server answers through. The engine itself does no I/O, reads
//! no clock and opens no database; the store implements this trait for `Collector`, and a
//! test can implement it in memory to script thousands of server behaviours a second.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::sync::engine::SyncReport;
use zoufang_protocol::audit::{AuditEntry, HashAlgorithm};
use zoufang_protocol::messages::{
    Ack, CatalogResponse, Change, ContentRef, EnrollResponse, PullResponse, SnapshotResponse,
};

/// The device's side of a sync, as the engine sees it. Every `apply_*` and `mark_*` is one
/// transaction of the store: a cut link between two calls loses nothing.
pub trait LocalState {
    /// (device id, device token) once enrolled.
    fn credentials(&self) -> Result<Option<(String, String)>>;
    /// Keeps what enrolment gave (and signs the user in). A successor keeps its pull cursors:
    /// it continues where its predecessor was.
    fn save_enrolment(&self, enrolled: &EnrollResponse) -> Result<()>;
    /// The token's expiry as the server last said (each sync renews it).
    fn save_token_expiry(&self, expires_at: &str) -> Result<()>;

    fn installed_forms(&self) -> Result<Vec<(String, u32)>>;
    fn code_list_versions(&self) -> Result<BTreeMap<String, u32>>;
    /// Installs new forms and code lists, and takes the user as the server holds them now.
    fn install_catalog(&self, catalog: &CatalogResponse) -> Result<()>;
    /// Once the outbox is empty: removes the villages the user no longer covers (but those
    /// with drafts); returns the households removed.
    fn leave_former_areas(&self) -> Result<u64>;

    /// The oldest waiting changes, at most `limit`.
    fn outbox_batch(&self, limit: usize) -> Result<Vec<Change>>;
    fn outbox_len(&self) -> Result<u64>;
    /// Removes each acknowledged entry with its effect; (applied, conflicts, rejected).
    fn apply_acks(&self, acks: &[Ack]) -> Result<(u64, u64, u64)>;

    fn cursors(&self) -> Result<BTreeMap<String, u64>>;
    /// Applies a pull batch and moves the cursors it names.
    fn apply_pull(&self, pulled: &PullResponse) -> Result<()>;
    /// The pull reached the end of the feed: the store finishes what it deferred while pages
    /// were arriving (a fresh store's indexes). Called once the last page's answer is released.
    fn pull_finished(&self) -> Result<()> {
        Ok(())
    }
    fn checksums(&self) -> Result<BTreeMap<String, u64>>;
    fn apply_snapshot(&self, village: &str, snapshot: &SnapshotResponse) -> Result<()>;

    fn audit_chain_hash(&self) -> Result<HashAlgorithm>;
    fn pending_audit(&self, limit: usize) -> Result<Vec<AuditEntry>>;
    fn pending_audit_count(&self) -> Result<u64>;
    fn audit_uploaded_through(&self, seq: u64) -> Result<()>;

    /// The hash naming this store's contents.
    fn content_algorithm(&self) -> HashAlgorithm;
    /// Contents to upload: not yet held by the server, of visits it has acknowledged.
    fn uploadable_contents(&self) -> Result<Vec<ContentRef>>;
    fn content_intact(&self, content_hash: &str) -> Result<bool>;
    fn read_content(&self, content_hash: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// The keyed hash of a whole content under the server's `nonce`: proof this device holds
    /// the bytes, not just their name (`zoufang_protocol::possession`).
    fn content_proof(&self, content_hash: &str, nonce: &str) -> Result<String>;
    fn mark_uploaded(&self, content_hash: &str) -> Result<()>;

    /// The server ordered this device wiped: recorded in the audit trail before it goes up.
    fn record_wipe_order(&self) -> Result<()>;
    /// The sync ended: its summary in the audit trail, the time and clock offset kept.
    fn record_sync(&self, report: &SyncReport) -> Result<()>;
}
