//! What a sync screen shows: the state of the device's sync, and what still waits.

use serde::Serialize;

use zoufang_protocol::messages::UserInfo;

pub use crate::store::outbox::RejectedChange;

/// What a sync screen shows before and after a sync.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncStatus {
    pub enrolled: bool,
    pub user: Option<UserInfo>,
    pub device_id: Option<String>,
    /// When the device's token expires unless a sync renews it first: past it, the store must
    /// be enrolled again (its unsent work is kept).
    pub token_expires_at: Option<String>,
    pub pending_changes: u64,
    pub open_conflicts: u64,
    pub rejected_changes: u64,
    pub last_sync_at: Option<String>,
    /// Server time minus device time, measured at the last sync.
    pub clock_offset_ms: Option<i64>,
    /// Attachment contents of completed visits the server does not hold yet, and their bytes.
    pub pending_attachments: u64,
    pub pending_attachment_bytes: u64,
}

/// A visit whose photos or signatures have not all reached the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingAttachments {
    pub visit_id: String,
    /// Attachments whose content the server does not hold yet.
    pub attachments: u64,
    pub bytes: u64,
    /// The server has the visit's data (its attachments go at the next sync); otherwise the
    /// visit itself is still waiting to be pushed.
    pub visit_synced: bool,
}
