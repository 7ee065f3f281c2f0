//! What the server stores, behind one trait, so the embedded SQLite implementation and a
//! PostgreSQL one are interchangeable. Every method is one transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use zoufang_model::code_list::CodeList;
use zoufang_protocol::audit::HashAlgorithm;
use zoufang_protocol::messages::{
    Ack, AuditUploadRequest, AuditUploadResponse, CatalogRequest, Change, ConflictInfo, ContentRef,
    ContentState, EnrollRequest, PullRequest, PullResponse, RecordState, SnapshotResponse,
    UserInfo,
};

use crate::blobs::{BlobError, ContentKey};

/// An authenticated caller: the device and its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAuth {
    /// The enrolled device the token belongs to.
    pub device_id: String,
    /// The device as its data knows it: its own id, or, for a store enrolled again as a
    /// successor, the first device's. Change numbers, the audit chain, feed echoes, uploads and
    /// possession continue under it, so nothing is applied twice across a re-enrolment.
    pub lineage: String,
    /// When the token expires (`None` for callers without one: reviewers, the server itself).
    pub token_expires_at: Option<String>,
    pub user: UserInfo,
}

impl DeviceAuth {
    /// A caller acting without a device token (a reviewer in the console, the server's rules).
    pub fn new(device_id: impl Into<String>, user: UserInfo) -> Self {
        let device_id = device_id.into();
        Self {
            lineage: device_id.clone(),
            device_id,
            token_expires_at: None,
            user,
        }
    }

    /// Is this village inside one of the user's areas?
    pub fn covers(&self, village_code: &str) -> bool {
        self.user
            .areas
            .iter()
            .any(|a| village_code.starts_with(a.as_str()))
    }
}

pub use zoufang_protocol::messages::PossibleDuplicate;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub enrolled_at: String,
    pub token_expires_at: String,
    pub revoked_at: Option<String>,
    pub last_seen_at: Option<String>,
    pub clock_offset_ms: Option<i64>,
    /// The device this one was enrolled to succeed, and the one that succeeded it (its token
    /// then stops working).
    pub predecessor_id: Option<String>,
    pub successor_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub device_id: String,
    pub device_token: String,
    pub token_expires_at: String,
    pub user: UserInfo,
    pub predecessor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Stats {
    pub households: u64,
    pub members: u64,
    pub visits: u64,
    pub open_conflicts: u64,
    pub feed_entries: u64,
    pub devices: u64,
    /// Attachment contents stored whole and verified, and their bytes.
    pub attachment_contents: u64,
    pub attachment_bytes: u64,
    /// Visits still waiting for some of their attachments.
    pub visits_awaiting_attachments: u64,
}

/// Errors of the server, each with an HTTP status and a stable code. Messages name ids, never
/// personal data.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error(
        "the device token has expired; enrol this store again with a new enrolment code: its unsent work is kept"
    )]
    TokenExpired,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("the protocol version {got} is not supported; this server speaks {supported}")]
    Protocol { got: u32, supported: u32 },
    #[error("too many attempts from this address; try again in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error("an administrator ordered this device wiped")]
    Wiped,
    /// The request does not fit the state it acts on (an upload's offset).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Well formed, but its content is refused (a corrupt chunk, a hash that does not match).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("storage error: {0}")]
    Storage(String),
}

impl ServerError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::TokenExpired => "token_expired",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::BadRequest { code, .. } => code,
            Self::Protocol { .. } => "protocol_unsupported",
            Self::RateLimited { .. } => "rate_limited",
            Self::Wiped => "device_wiped",
            Self::Conflict { code, .. } | Self::Unprocessable { code, .. } => code,
            Self::Storage(_) => "storage",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::Unauthorized(_) | Self::TokenExpired => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::BadRequest { .. } => 400,
            Self::Protocol { .. } => 426,
            Self::RateLimited { .. } => 429,
            Self::Wiped => 410,
            Self::Conflict { .. } => 409,
            Self::Unprocessable { .. } => 422,
            Self::Storage(_) => 500,
        }
    }

    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }
}

impl From<rusqlite::Error> for ServerError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

impl From<postgres::Error> for ServerError {
    fn from(e: postgres::Error) -> Self {
        // The server's message and code only: a DETAIL line can quote a key's value.
        match e.as_db_error() {
            Some(db) => Self::Storage(format!("{} ({})", db.message(), db.code().code())),
            None => Self::Storage(format!("database connection: {e}")),
        }
    }
}

impl From<BlobError> for ServerError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::OffsetMismatch { .. } => Self::Conflict {
                code: "offset_mismatch",
                message: e.to_string(),
            },
            BlobError::TooLong => Self::bad("chunk_too_long", e.to_string()),
            BlobError::HashMismatch => Self::Unprocessable {
                code: "hash_mismatch",
                message: e.to_string(),
            },
            BlobError::Io(io) => Self::Storage(format!("attachment storage: {io}")),
        }
    }
}

impl From<serde_json::Error> for ServerError {
    fn from(e: serde_json::Error) -> Self {
        Self::Storage(format!("stored JSON unreadable: {e}"))
    }
}

pub type Result<T, E = ServerError> = std::result::Result<T, E>;

/// The server's storage. Implementations keep every rule of `merge` and every area check.
pub trait Storage: Send + Sync + 'static {
    // Administration (the `zoufang admin` commands).
    fn create_user(&self, user: &UserInfo, now: DateTime<Utc>) -> Result<()>;
    fn set_areas(&self, user_id: &str, areas: &[String]) -> Result<()>;
    fn users(&self) -> Result<Vec<UserInfo>>;
    fn issue_enrollment(
        &self,
        user_id: &str,
        valid_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<String>;
    fn revoke_device(&self, device_id: &str, now: DateTime<Utc>) -> Result<()>;
    fn devices(&self) -> Result<Vec<DeviceInfo>>;
    fn publish_form(&self, definition_json: &str, now: DateTime<Utc>) -> Result<(String, u32)>;
    fn publish_code_list(&self, list: &CodeList, now: DateTime<Utc>) -> Result<()>;
    fn stats(&self) -> Result<Stats>;
    /// How often households of an assistance category are visited (the due-date rule).
    fn set_visit_frequency(&self, category: &str, days: u32, now: DateTime<Utc>) -> Result<()>;
    fn visit_frequencies(&self) -> Result<std::collections::BTreeMap<String, u32>>;

    // Devices.
    /// Exchanges a one-time enrolment token for a device and its token, valid for `lifetime`
    /// (renewed by each sync); a request naming a predecessor enrols its successor.
    fn enroll(
        &self,
        request: &EnrollRequest,
        lifetime: Duration,
        now: DateTime<Utc>,
    ) -> Result<Enrolled>;
    /// Sliding expiry: the token's expiry moved to `now + lifetime` (written at most once a
    /// day per device); the expiry now in force.
    fn renew_token(
        &self,
        auth: &DeviceAuth,
        lifetime: Duration,
        now: DateTime<Utc>,
    ) -> Result<String>;
    fn authenticate(&self, device_token: &str, now: DateTime<Utc>) -> Result<DeviceAuth>;
    /// As `authenticate`, but also for a device ordered wiped: its audit upload is accepted.
    fn authenticate_for_audit(&self, device_token: &str, now: DateTime<Utc>) -> Result<DeviceAuth>;
    /// Orders a device wiped at its next contact (administrators).
    fn request_wipe(&self, device_id: &str, now: DateTime<Utc>) -> Result<()>;
    /// Verifies and stores a device's audit entries; a broken chain is refused and kept as an
    /// alert on the device. A `wipe` entry from a device ordered wiped completes the wipe.
    fn upload_audit(
        &self,
        auth: &DeviceAuth,
        request: &AuditUploadRequest,
        now: DateTime<Utc>,
    ) -> Result<AuditUploadResponse>;
    /// A device's audit trail as the server holds it (administrators and reviewers).
    fn device_audit(&self, device_id: &str) -> Result<Vec<zoufang_protocol::audit::AuditEntry>>;
    /// Re-verifies every stored chain (each device's and the server's own): the problems found.
    fn verify_audit(&self) -> Result<Vec<String>>;
    fn catalog(&self, request: &CatalogRequest) -> Result<(Vec<Json>, Vec<CodeList>)>;
    /// When each form version was published.
    fn form_publications(&self) -> Result<Vec<zoufang_protocol::messages::FormPublication>>;
    fn push(
        &self,
        auth: &DeviceAuth,
        changes: &[Change],
        device_now: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Ack>>;
    /// The acknowledgements recorded for these changes of the device (those it never received
    /// are left out), and the last audit entry it holds of the device's trail.
    fn recorded_acks(&self, auth: &DeviceAuth, seqs: &[u64]) -> Result<(Vec<Ack>, u64)>;
    fn pull(
        &self,
        auth: &DeviceAuth,
        request: &PullRequest,
        now: DateTime<Utc>,
    ) -> Result<PullResponse>;
    fn snapshot(
        &self,
        auth: &DeviceAuth,
        village_code: &str,
        now: DateTime<Utc>,
    ) -> Result<SnapshotResponse>;
    fn conflicts(&self, auth: &DeviceAuth) -> Result<Vec<ConflictInfo>>;
    /// Changes handed to the reviewer's villages by phones whose users were moved away.
    fn handovers(&self, auth: &DeviceAuth) -> Result<Vec<zoufang_protocol::messages::Handover>>;
    /// Members holding one resident ID in two households the reviewer's areas both cover.
    fn possible_duplicates(&self, auth: &DeviceAuth) -> Result<Vec<PossibleDuplicate>>;
    fn resolve_conflict(
        &self,
        auth: &DeviceAuth,
        conflict_id: &str,
        value: &Json,
        now: DateTime<Utc>,
    ) -> Result<ConflictInfo>;
    /// A reviewer merges `merged` into `survivor` (one village): members and visits move, the
    /// merged record stays as a tombstone naming its survivor.
    fn merge_households(
        &self,
        auth: &DeviceAuth,
        survivor: &str,
        merged: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// A reviewer merges two records of one person: `merged` becomes a duplicate naming
    /// `survivor`.
    fn merge_members(
        &self,
        auth: &DeviceAuth,
        survivor: &str,
        merged: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// A reviewer moves a household, its members and visits to another village they cover.
    fn move_household(
        &self,
        auth: &DeviceAuth,
        household: &str,
        to_village: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;
    // Attachments: contents by hash. A caller may send a content only if a visit in its areas
    // names it, and read it only if such a visit's device proved it holds the bytes.
    /// How much of each content the caller's upload holds, or that it is complete for it; the
    /// proofs in `contents` answer `nonce` (`possession_nonce`).
    fn attachment_status(
        &self,
        auth: &DeviceAuth,
        algorithm: HashAlgorithm,
        contents: &[ContentRef],
        nonce: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ContentState>>;
    /// A fresh possession challenge for the caller.
    fn possession_nonce(&self, auth: &DeviceAuth, now: DateTime<Utc>) -> Result<String>;
    /// Appends verified bytes of a content of `size` bytes at `offset` of the caller's upload
    /// (exactly what it holds); reaching its size, the content is checked against its hash.
    fn append_attachment(
        &self,
        auth: &DeviceAuth,
        key: &ContentKey,
        size: u64,
        offset: u64,
        bytes: &[u8],
        now: DateTime<Utc>,
    ) -> Result<ContentState>;
    /// A complete content (reviewers, and any user whose areas cover a visit naming it).
    fn attachment_content(&self, auth: &DeviceAuth, key: &ContentKey) -> Result<Vec<u8>>;
    /// Visits still waiting for some of their attachments (administrators).
    fn visits_awaiting_attachments(&self) -> Result<Vec<String>>;

    /// One household or member as the server holds it (admin and tests).
    fn record(
        &self,
        entity: zoufang_protocol::messages::Entity,
        id: &str,
    ) -> Result<Option<RecordState>>;
}
