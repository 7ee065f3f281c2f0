//! zoufang-ffi: the uniffi layer over zoufang-core. It converts types and errors and does
//! nothing else: every rule lives in the core. Answers and record fields cross as JSON text
//! (forms are data, so their shape is not known at compile time); everything else is typed.
//!
//! Panics never cross: the release profile keeps `panic = "unwind"` and uniffi turns a panic
//! into a host exception; every exported call that can fail returns `ZoufangError`.

use std::sync::{Arc, Mutex};

use serde_json::Value as Json;
use zoufang_core::sync as core_sync;
use zoufang_core::{Collector as CoreCollector, StoreOptions, records};

uniffi::setup_scaffolding!();

/// Every failure, with the core's stable `code` and a readable message (never personal data).
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi::export(Display)]
pub enum ZoufangError {
    /// Bad input from the app or the user: a wrong answer shape, an invalid value, a bad path.
    #[error("{detail}")]
    InvalidInput { code: String, detail: String },
    /// A visit cannot be completed while blocking problems remain.
    #[error("{detail}")]
    VisitHasProblems {
        problems: Vec<Problem>,
        detail: String,
    },
    #[error("{detail}")]
    NotFound { code: String, detail: String },
    /// The call does not fit the current state: not signed in, not enrolled, a visit already
    /// completed, a cancelled sync.
    #[error("{detail}")]
    InvalidState { code: String, detail: String },
    /// The server could not be reached, or refused the request.
    #[error("{detail}")]
    Network { code: String, detail: String },
    /// The store could not be read or written, or needs another key.
    #[error("{detail}")]
    Storage { code: String, detail: String },
}

impl From<zoufang_core::Error> for ZoufangError {
    fn from(e: zoufang_core::Error) -> Self {
        use zoufang_core::Error as E;
        let (code, detail) = (e.code().to_owned(), e.to_string());
        match e {
            E::VisitHasProblems { problems } => Self::VisitHasProblems {
                problems: problems.into_iter().map(Problem::from).collect(),
                detail,
            },
            E::NotFound { .. } | E::FormNotFound { .. } => Self::NotFound { code, detail },
            E::NotSignedIn
            | E::WrongUser
            | E::DeviceWiped
            | E::NotEnrolled
            | E::TokenExpired
            | E::VisitNotEditable { .. }
            | E::VisitWrongStatus { .. }
            | E::VisitUnsigned { .. }
            | E::Cancelled
            | E::SyncRunning => Self::InvalidState { code, detail },
            E::Transport(_) | E::Server { .. } => Self::Network { code, detail },
            E::Storage(_)
            | E::WrongKeyOrNotAStore
            | E::EncryptionUnavailable
            | E::Migration(_)
            | E::StoreTooNew { .. } => Self::Storage { code, detail },
            _ => Self::InvalidInput { code, detail },
        }
    }
}

impl From<uniffi::UnexpectedUniFFICallbackError> for ZoufangError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Network {
            code: "transport".into(),
            detail: format!("the app's transport failed unexpectedly: {}", e.reason),
        }
    }
}

type Result<T> = std::result::Result<T, ZoufangError>;

fn parse_json(what: &str, text: &str) -> Result<Json> {
    serde_json::from_str(text).map_err(|e| ZoufangError::InvalidInput {
        code: "invalid_json".into(),
        detail: format!(
            "{what} is not valid JSON (line {} column {})",
            e.line(),
            e.column()
        ),
    })
}

fn parse_object(what: &str, text: &str) -> Result<serde_json::Map<String, Json>> {
    match parse_json(what, text)? {
        Json::Object(m) => Ok(m),
        _ => Err(ZoufangError::InvalidInput {
            code: "invalid_json".into(),
            detail: format!("{what} must be a JSON object"),
        }),
    }
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct Problem {
    pub path: String,
    pub code: String,
    /// Errors block completion; warnings do not.
    pub blocks_completion: bool,
    pub message_zh: String,
    pub message_en: String,
}

impl From<zoufang_core::model::engine::Problem> for Problem {
    fn from(p: zoufang_core::model::engine::Problem) -> Self {
        Self {
            blocks_completion: p.blocks_completion(),
            path: p.path,
            code: p.code,
            message_zh: p.message_zh,
            message_en: p.message_en,
        }
    }
}

/// A signature of a visit and whether it still matches the visit (stale after a later change).
#[derive(Debug, Clone, uniffi::Record)]
pub struct SignatureState {
    pub field_path: String,
    pub attachment_id: String,
    pub valid: bool,
}

/// A photo or signature of a visit. Its content is fetched with `attachmentContent`.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Attachment {
    pub id: String,
    pub visit_id: String,
    pub field_path: String,
    /// `photo` or `signature`.
    pub kind: String,
    /// SHA-256 (SM3 in an SM4 store) of the stored bytes, lowercase hex.
    pub content_hash: String,
    pub size_bytes: u64,
    pub mime_type: String,
    /// Width, height, and the capture time and position read from the camera's file.
    pub metadata_json: String,
    pub created_at: String,
}

impl From<records::Attachment> for Attachment {
    fn from(a: records::Attachment) -> Self {
        Self {
            id: a.id,
            visit_id: a.visit_id,
            field_path: a.field_path,
            kind: a.kind.as_str().to_owned(),
            content_hash: a.content_hash,
            size_bytes: a.size_bytes,
            mime_type: a.mime_type,
            metadata_json: Json::Object(a.metadata).to_string(),
            created_at: a.created_at,
        }
    }
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct FormInfo {
    pub id: String,
    pub version: u32,
    pub title_zh: String,
    pub title_ii: String,
    /// The whole checked definition (sections, fields, types, labels in zh/ii, choices,
    /// expressions) for the app's renderer.
    pub definition_json: String,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct HouseholdSummary {
    pub id: String,
    pub village_code: String,
    pub head_name: Option<String>,
    pub next_visit_due: Option<String>,
    /// `active`, `moved_away`, `migrant_away`, `all_deceased`, `merged`, `registered_in_error`.
    pub status: String,
}

impl From<records::HouseholdSummary> for HouseholdSummary {
    fn from(h: records::HouseholdSummary) -> Self {
        Self {
            id: h.id,
            village_code: h.village_code,
            head_name: h.head_name,
            next_visit_due: h.next_visit_due,
            status: h.status,
        }
    }
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct Member {
    pub id: String,
    pub fields_json: String,
}

impl From<records::Member> for Member {
    fn from(m: records::Member) -> Self {
        Self {
            id: m.id,
            fields_json: Json::Object(m.fields).to_string(),
        }
    }
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct Household {
    pub id: String,
    pub village_code: String,
    pub head_name: Option<String>,
    pub next_visit_due: Option<String>,
    pub fields_json: String,
    /// Members present.
    pub members: Vec<Member>,
    /// Members who left, died or were found duplicates (their `status` field says which).
    pub former_members: Vec<Member>,
}

/// How a store is protected at rest, chosen explicitly by the app.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum StoreProtection {
    /// Encrypted with `key` from the platform keystore (Android Keystore-wrapped, iOS
    /// Keychain): 64 hex digits (32 random bytes) are a raw key, other text a passphrase.
    /// `cipher`: AES-256 unless the deployment runs in the national SM4 mode; a store keeps
    /// the suite it was created with.
    Encrypted { key: String, cipher: Cipher },
    /// In clear: for tests and demos without personal data only.
    Plaintext,
}

/// The cipher suite of an encrypted store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Cipher {
    /// AES-256 (SQLCipher).
    Aes256,
    /// The national suite: SM4 pages, SM3 MACs and key derivation.
    Sm4,
}

impl From<Cipher> for zoufang_core::Cipher {
    fn from(c: Cipher) -> Self {
        match c {
            Cipher::Aes256 => Self::Aes256,
            Cipher::Sm4 => Self::Sm4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum VisitStatus {
    Draft,
    Completed,
    Signed,
    Void,
}

impl From<records::VisitStatus> for VisitStatus {
    fn from(s: records::VisitStatus) -> Self {
        match s {
            records::VisitStatus::Draft => Self::Draft,
            records::VisitStatus::Completed => Self::Completed,
            records::VisitStatus::Signed => Self::Signed,
            records::VisitStatus::Void => Self::Void,
        }
    }
}

/// A status change a visit's outcome suggests.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ProposedStatus {
    pub household_id: String,
    pub status: String,
    pub date: String,
}

/// A prefilled value someone else changed after the draft was opened.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ChangedSinceOpened {
    /// The answer's path (`members[1].id_number`).
    pub path: String,
    pub opened_with_json: String,
    pub now_json: String,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct Visit {
    pub id: String,
    pub household_id: Option<String>,
    pub form_id: String,
    pub form_version: u32,
    pub visit_type: String,
    pub status: VisitStatus,
    pub answers_json: String,
    pub author: String,
    pub revision_of: Option<String>,
    pub void_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<records::Visit> for Visit {
    fn from(v: records::Visit) -> Self {
        Self {
            id: v.id,
            household_id: v.household_id,
            form_id: v.form_id,
            form_version: v.form_version,
            visit_type: v.visit_type,
            status: v.status.into(),
            answers_json: Json::Object(v.answers).to_string(),
            author: v.author,
            revision_of: v.revision_of,
            void_reason: v.void_reason,
            created_at: v.created_at,
            updated_at: v.updated_at,
        }
    }
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct VisitSummary {
    pub id: String,
    pub household_id: Option<String>,
    pub visit_type: String,
    pub status: VisitStatus,
    pub updated_at: String,
}

impl From<records::VisitSummary> for VisitSummary {
    fn from(v: records::VisitSummary) -> Self {
        Self {
            id: v.id,
            household_id: v.household_id,
            visit_type: v.visit_type,
            status: v.status.into(),
            updated_at: v.updated_at,
        }
    }
}

/// What the UI needs to draw one field instance as answers change.
#[derive(Debug, Clone, uniffi::Record)]
pub struct FieldState {
    pub path: String,
    pub relevant: bool,
    pub required: bool,
    pub value_json: String,
}

#[derive(Debug, Clone, Copy, uniffi::Record)]
pub struct StoreCounts {
    /// Active households.
    pub households: u64,
    pub households_inactive: u64,
    pub members: u64,
    pub drafts: u64,
    pub completed: u64,
    pub signed: u64,
    pub voided: u64,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct UserInfo {
    pub id: String,
    pub role: String,
    pub areas: Vec<String>,
}

impl From<zoufang_core::protocol::messages::UserInfo> for UserInfo {
    fn from(u: zoufang_core::protocol::messages::UserInfo) -> Self {
        Self {
            id: u.id,
            role: u.role.as_str().to_owned(),
            areas: u.areas,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SyncPhase {
    /// Exchanging the enrolment token for the device's credentials.
    Enroll,
    Catalog,
    Push,
    Pull,
    Verify,
    Audit,
    /// Uploading photos and signatures; `done`/`total` count bytes.
    Attachments,
    /// Downloading one attachment content that was opened; `done` counts bytes.
    Download,
    /// The server ordered this device wiped: the audit trail goes up, then the store is
    /// destroyed and the sync fails with `device_wiped`.
    Wipe,
    Done,
}

#[derive(Debug, Clone, Copy, uniffi::Record)]
pub struct SyncProgress {
    pub phase: SyncPhase,
    pub done: u64,
    pub total: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct SyncReport {
    pub pushed: u64,
    pub accepted: u64,
    pub conflicts: u64,
    pub rejected: u64,
    pub pulled: u64,
    pub repaired_villages: Vec<String>,
    pub round_trips: u32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub clock_offset_ms: Option<i64>,
    pub clock_skewed: bool,
    /// Audit entries the server acknowledged in this sync.
    pub audit_uploaded: u64,
    /// The server found this device's audit chain broken (tampering); it keeps an alert.
    pub audit_chain_broken: bool,
    /// Attachment contents sent whole and verified by the server.
    pub attachments_uploaded: u64,
    /// Contents the server already held (from this device or another): not sent.
    pub attachments_already_held: u64,
    /// Content bytes sent, re-sent ones included.
    pub attachment_bytes_sent: u64,
    /// Chunks cut or refused, each resumed from what the server confirmed.
    pub attachment_interruptions: u64,
    /// Contents left for a later sync.
    pub attachments_waiting: u64,
    /// Contents whose stored bytes no longer match their hash: kept, not sent.
    pub attachments_damaged: u64,
    /// Members sent whose resident ID is already registered elsewhere: the township checks.
    pub possible_duplicates: u64,
    /// Changes for a village the user no longer covers, handed to its reviewers.
    pub handed_over: u64,
    /// Households removed because the user no longer covers their village.
    pub households_left: u64,
}

impl From<core_sync::SyncReport> for SyncReport {
    fn from(r: core_sync::SyncReport) -> Self {
        Self {
            pushed: r.pushed,
            accepted: r.accepted,
            conflicts: r.conflicts,
            rejected: r.rejected,
            pulled: r.pulled,
            repaired_villages: r.repaired_villages,
            round_trips: r.round_trips,
            bytes_sent: r.bytes_sent,
            bytes_received: r.bytes_received,
            clock_offset_ms: r.clock_offset_ms,
            clock_skewed: r.clock_skewed,
            audit_uploaded: r.audit_uploaded,
            audit_chain_broken: r.audit_chain_broken,
            attachments_uploaded: r.attachments_uploaded,
            attachments_already_held: r.attachments_already_held,
            attachment_bytes_sent: r.attachment_bytes_sent,
            attachment_interruptions: r.attachment_interruptions,
            attachments_waiting: r.attachments_waiting,
            attachments_damaged: r.attachments_damaged,
            possible_duplicates: r.possible_duplicates,
            handed_over: r.handed_over,
            households_left: r.households_left,
        }
    }
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct SyncStatus {
    pub enrolled: bool,
    pub user: Option<UserInfo>,
    /// When the device's token expires unless a sync renews it first (each sync does); past
    /// it, `enroll` again with a new code: unsent work is kept.
    pub token_expires_at: Option<String>,
    pub pending_changes: u64,
    pub open_conflicts: u64,
    pub rejected_changes: u64,
    pub last_sync_at: Option<String>,
    pub clock_offset_ms: Option<i64>,
    /// Attachment contents of completed visits not yet on the server, and their bytes.
    pub pending_attachments: u64,
    pub pending_attachment_bytes: u64,
}

/// A completed visit whose photos or signatures have not all reached the server.
#[derive(Debug, Clone, uniffi::Record)]
pub struct PendingAttachments {
    pub visit_id: String,
    pub attachments: u64,
    pub bytes: u64,
    /// The server has the visit's data; false while the visit itself waits to be sent.
    pub visit_synced: bool,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct CompetingValue {
    pub value_json: String,
    pub user: String,
    pub received_at: String,
    pub device_time: String,
    pub clock_skewed: bool,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct Conflict {
    pub id: String,
    /// `household` or `member`.
    pub entity: String,
    pub entity_id: String,
    pub household_id: String,
    pub field: String,
    pub values: Vec<CompetingValue>,
    /// What the record shows until someone decides.
    pub provisional_json: String,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct RejectedChange {
    pub seq: u64,
    pub change_json: String,
    pub code: String,
    pub message: String,
}

/// Follows a sync; implemented by the app (called from a background thread).
#[uniffi::export(with_foreign)]
pub trait SyncListener: Send + Sync {
    fn on_progress(&self, progress: SyncProgress);
}

/// One HTTP exchange, for apps that bring their own HTTP stack (OkHttp, URLSession).
#[derive(Debug, Clone, uniffi::Record)]
pub struct HttpRequest {
    pub method: String,
    /// Relative to the server's base URL, e.g. `/v1/push`.
    pub path: String,
    pub headers: Vec<HttpHeader>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// An HTTP transport implemented by the app. Return `Err` when no answer came (no network,
/// timeout, cut connection); any HTTP status is an answer.
#[uniffi::export(with_foreign)]
pub trait HttpTransport: Send + Sync {
    fn send(&self, request: HttpRequest) -> std::result::Result<HttpResponse, ZoufangError>;
}

struct ForeignTransport(Arc<dyn HttpTransport>);

impl core_sync::Transport for ForeignTransport {
    fn send(
        &self,
        request: &core_sync::HttpRequest,
    ) -> std::result::Result<core_sync::HttpResponse, core_sync::TransportError> {
        let req = HttpRequest {
            method: request.method.clone(),
            path: request.path.clone(),
            headers: request
                .headers
                .iter()
                .map(|(n, v)| HttpHeader {
                    name: n.clone(),
                    value: v.clone(),
                })
                .collect(),
            body: request.body.clone(),
        };
        match self.0.send(req) {
            Ok(r) => Ok(core_sync::HttpResponse {
                status: r.status,
                body: r.body,
            }),
            Err(e) => Err(core_sync::TransportError {
                message: e.to_string(),
            }),
        }
    }
}

struct ForeignListener(Arc<dyn SyncListener>);

impl core_sync::SyncListener for ForeignListener {
    fn on_progress(&self, p: core_sync::SyncProgress) {
        let phase = match p.phase {
            core_sync::SyncPhase::Enroll => SyncPhase::Enroll,
            core_sync::SyncPhase::Catalog => SyncPhase::Catalog,
            core_sync::SyncPhase::Push => SyncPhase::Push,
            core_sync::SyncPhase::Pull => SyncPhase::Pull,
            core_sync::SyncPhase::Verify => SyncPhase::Verify,
            core_sync::SyncPhase::Audit => SyncPhase::Audit,
            core_sync::SyncPhase::Attachments => SyncPhase::Attachments,
            core_sync::SyncPhase::Download => SyncPhase::Download,
            core_sync::SyncPhase::Wipe => SyncPhase::Wipe,
            core_sync::SyncPhase::Done => SyncPhase::Done,
        };
        self.0.on_progress(SyncProgress {
            phase,
            done: p.done,
            total: p.total,
            bytes_sent: p.bytes_sent,
            bytes_received: p.bytes_received,
        });
    }
}

/// The offline store of the signed-in user: forms, households, visits, sync, conflicts.
#[derive(uniffi::Object)]
pub struct Collector {
    inner: Arc<CoreCollector>,
    cancel: Mutex<Option<Arc<core_sync::CancelFlag>>>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Collector")
    }
}

#[cfg(feature = "reqwest-transport")]
fn reqwest_transport(server_url: &str) -> Result<core_sync::ReqwestTransport> {
    core_sync::ReqwestTransport::new(server_url).map_err(|e| ZoufangError::Network {
        code: "transport".into(),
        detail: e.message,
    })
}

/// No value: the transport a build without the built-in one never makes.
#[cfg(not(feature = "reqwest-transport"))]
enum NoTransport {}

#[cfg(not(feature = "reqwest-transport"))]
impl core_sync::Transport for NoTransport {
    fn send(
        &self,
        _: &core_sync::HttpRequest,
    ) -> std::result::Result<core_sync::HttpResponse, core_sync::TransportError> {
        match *self {}
    }
}

/// A build for apps that bring their own HTTP stack: the same API, and the built-in transport's
/// calls say what to use instead.
#[cfg(not(feature = "reqwest-transport"))]
fn reqwest_transport(_server_url: &str) -> Result<NoTransport> {
    Err(ZoufangError::Network {
        code: "transport_unavailable".into(),
        detail: "this build of the library has no built-in HTTP transport: \
                 use enrollWithTransport and syncWithTransport"
            .into(),
    })
}

impl Collector {
    /// Runs a sync on its own thread and awaits it: the caller's executor is never blocked.
    async fn run_sync(
        &self,
        transport: Box<dyn core_sync::Transport>,
        listener: Option<Arc<dyn SyncListener>>,
    ) -> Result<SyncReport> {
        let flag = Arc::new(core_sync::CancelFlag::default());
        if let Ok(mut slot) = self.cancel.lock() {
            *slot = Some(flag.clone());
        }
        let inner = self.inner.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let listener = listener.map(ForeignListener);
            let result = inner.sync(
                transport.as_ref(),
                listener.as_ref().map(|l| l as &dyn core_sync::SyncListener),
                Some(&flag),
            );
            let _ = tx.send(result);
        });
        let result = rx.await.map_err(|_| ZoufangError::InvalidState {
            code: "cancelled".into(),
            detail: "the sync thread stopped".into(),
        })?;
        Ok(result?.into())
    }
}

#[uniffi::export]
impl Collector {
    /// Opens (creating and migrating) the store at `path`, protected as the app chose: no
    /// default, so a store in clear is never an accident (`StoreProtection`).
    #[uniffi::constructor]
    pub fn open(path: String, protection: StoreProtection) -> Result<Arc<Self>> {
        let options = match protection {
            StoreProtection::Encrypted { key, cipher } => StoreOptions {
                encryption_key: Some(key),
                cipher: cipher.into(),
            },
            StoreProtection::Plaintext => StoreOptions::default(),
        };
        let inner = CoreCollector::open(path.as_ref(), &options)?;
        Ok(Arc::new(Self {
            inner: Arc::new(inner),
            cancel: Mutex::new(None),
        }))
    }

    /// Adds a photo to a draft's photo field from the camera's bytes: upright, at most 1600 px
    /// and about 500 KB, without the file's metadata; stored in the (encrypted) store with the
    /// answer. A photo already in the field is replaced.
    pub fn add_photo(
        &self,
        visit_id: String,
        field_path: String,
        image: Vec<u8>,
    ) -> Result<Attachment> {
        Ok(self
            .inner
            .add_photo(&visit_id, &field_path, &image, &Default::default())?
            .into())
    }

    /// As `addPhoto`, from the file the camera wrote.
    pub fn add_photo_file(
        &self,
        visit_id: String,
        field_path: String,
        path: String,
    ) -> Result<Attachment> {
        Ok(self
            .inner
            .add_photo_file(&visit_id, &field_path, path.as_ref(), &Default::default())?
            .into())
    }

    /// Adds a signature or thumbprint image to a draft's signature field (kept lossless).
    pub fn add_signature(
        &self,
        visit_id: String,
        field_path: String,
        image: Vec<u8>,
    ) -> Result<Attachment> {
        Ok(self
            .inner
            .add_signature(&visit_id, &field_path, &image)?
            .into())
    }

    /// Removes an attachment from a draft; its content goes once nothing names it.
    pub fn remove_attachment(&self, visit_id: String, attachment_id: String) -> Result<()> {
        Ok(self.inner.remove_attachment(&visit_id, &attachment_id)?)
    }

    pub fn attachments_of_visit(&self, visit_id: String) -> Result<Vec<Attachment>> {
        Ok(self
            .inner
            .attachments_of_visit(&visit_id)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The visit's signatures; one is stale when the visit changed after it was given.
    pub fn signatures(&self, visit_id: String) -> Result<Vec<SignatureState>> {
        Ok(self
            .inner
            .signatures(&visit_id)?
            .into_iter()
            .map(|s| SignatureState {
                field_path: s.field_path,
                attachment_id: s.attachment_id,
                valid: s.valid,
            })
            .collect())
    }

    /// The stored bytes of an attachment (JPEG or PNG), for display.
    pub fn attachment_content(&self, content_hash: String) -> Result<Vec<u8>> {
        Ok(self.inner.attachment_content(&content_hash)?)
    }

    /// Removes visits the server already holds and that were last changed more than
    /// `retention_days` ago; households in scope, drafts and pending work stay.
    pub fn purge_synced_visits(&self, retention_days: u32) -> Result<u64> {
        let retention = std::time::Duration::from_secs(u64::from(retention_days) * 86_400);
        Ok(self.inner.purge_synced_visits(retention)?)
    }

    /// Re-encrypts the whole store with `new_key`, atomically. Keep the old key in the keystore
    /// until this returns; on open, try the new key first.
    pub fn rotate_key(&self, new_key: String) -> Result<()> {
        Ok(self.inner.rotate_key(&new_key)?)
    }

    pub fn sign_in(&self, user_id: String) -> Result<()> {
        Ok(self.inner.sign_in(&user_id)?)
    }

    pub fn current_user(&self) -> Option<String> {
        self.inner.current_user()
    }

    /// The newest installed version of a form (the household visit form by default).
    pub fn form(&self, form_id: Option<String>) -> Result<FormInfo> {
        let id =
            form_id.unwrap_or_else(|| zoufang_core::collector::HOUSEHOLD_VISIT_FORM_ID.to_owned());
        let form = self.inner.latest_form(&id)?;
        let d = &form.definition;
        Ok(FormInfo {
            id: d.id.clone(),
            version: d.version,
            title_zh: d.title.zh.clone(),
            title_ii: d.title.get(zoufang_core::model::text::Lang::Ii).to_owned(),
            definition_json: serde_json::to_string(d).unwrap_or_default(),
        })
    }

    /// The code lists on this device, as a JSON array.
    pub fn code_lists_json(&self) -> String {
        let lists: Vec<_> = self.inner.code_lists().iter().cloned().collect();
        serde_json::to_string(&lists).unwrap_or_default()
    }

    pub fn add_household(
        &self,
        village_code: String,
        fields_json: String,
        members_json: Vec<String>,
    ) -> Result<String> {
        let fields = parse_object("fields", &fields_json)?;
        let members = members_json
            .iter()
            .map(|m| parse_object("a member", m))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.inner.add_household(records::NewHousehold {
            village_code,
            fields,
            members,
        })?)
    }

    pub fn households_in_village(
        &self,
        village_code: String,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<HouseholdSummary>> {
        Ok(self
            .inner
            .households_in_village(&village_code, limit, offset)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// By the start of a member's name or resident ID.
    pub fn search_households(&self, query: String, limit: u32) -> Result<Vec<HouseholdSummary>> {
        Ok(self
            .inner
            .search_households(&query, limit)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The households on this phone with a present member holding `id_number`, to warn before
    /// the same person is registered twice.
    pub fn households_holding_id_number(&self, id_number: String) -> Result<Vec<HouseholdSummary>> {
        Ok(self
            .inner
            .households_holding_id_number(&id_number)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Households matching `query` whatever their status (a family that moved away).
    pub fn search_all_households(
        &self,
        query: String,
        limit: u32,
    ) -> Result<Vec<HouseholdSummary>> {
        Ok(self
            .inner
            .search_all_households(&query, limit)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Sets a household's status with a reason and a date (YYYY-MM-DD; today when null).
    pub fn set_household_status(
        &self,
        household_id: String,
        status: String,
        reason: Option<String>,
        date: Option<String>,
    ) -> Result<()> {
        Ok(self.inner.set_household_status(
            &household_id,
            &status,
            reason.as_deref(),
            date.as_deref(),
        )?)
    }

    /// Sets a member's status: removing a member is this, never a deletion.
    pub fn set_member_status(
        &self,
        member_id: String,
        status: String,
        reason: Option<String>,
        date: Option<String>,
    ) -> Result<()> {
        Ok(self
            .inner
            .set_member_status(&member_id, &status, reason.as_deref(), date.as_deref())?)
    }

    /// The household status a completed visit's outcome suggests, for the coordinator to
    /// confirm.
    pub fn proposed_status(&self, visit_id: String) -> Result<Option<ProposedStatus>> {
        Ok(self
            .inner
            .proposed_status(&visit_id)?
            .map(|p| ProposedStatus {
                household_id: p.household_id,
                status: p.status,
                date: p.date,
            }))
    }

    pub fn households_due(
        &self,
        on_or_before: String,
        village_code: Option<String>,
        limit: u32,
    ) -> Result<Vec<HouseholdSummary>> {
        Ok(self
            .inner
            .households_due(&on_or_before, village_code.as_deref(), limit)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    pub fn household(&self, id: String) -> Result<Household> {
        let h = self.inner.household(&id)?;
        Ok(Household {
            id: h.id,
            village_code: h.village_code,
            head_name: h.head_name,
            next_visit_due: h.next_visit_due,
            fields_json: Json::Object(h.fields).to_string(),
            members: h.members.into_iter().map(Member::from).collect(),
            former_members: h.former_members.into_iter().map(Member::from).collect(),
        })
    }

    pub fn edit_household_field(
        &self,
        household_id: String,
        field: String,
        value_json: String,
    ) -> Result<()> {
        Ok(self.inner.edit_household_field(
            &household_id,
            &field,
            parse_json("the value", &value_json)?,
        )?)
    }

    pub fn edit_member_field(
        &self,
        member_id: String,
        field: String,
        value_json: String,
    ) -> Result<()> {
        Ok(self.inner.edit_member_field(
            &member_id,
            &field,
            parse_json("the value", &value_json)?,
        )?)
    }

    /// A draft of `visit_type` for a household, or (without one) a newly discovered household.
    pub fn start_visit(&self, household_id: Option<String>, visit_type: String) -> Result<Visit> {
        Ok(self
            .inner
            .start_visit(household_id.as_deref(), &visit_type)?
            .into())
    }

    /// Autosaves one answer (`members[2].id_number`); `null` clears it.
    pub fn set_answer(&self, visit_id: String, path: String, value_json: String) -> Result<()> {
        Ok(self
            .inner
            .set_answer(&visit_id, &path, parse_json("the answer", &value_json)?)?)
    }

    pub fn set_answers(&self, visit_id: String, answers_json: String) -> Result<()> {
        Ok(self
            .inner
            .set_answers(&visit_id, &parse_object("the answers", &answers_json)?)?)
    }

    pub fn remove_repeat_instance(&self, visit_id: String, path: String) -> Result<()> {
        Ok(self.inner.remove_repeat_instance(&visit_id, &path)?)
    }

    /// Relevance and required-ness of every field instance, for the UI.
    pub fn field_states(&self, visit_id: String) -> Result<Vec<FieldState>> {
        Ok(self
            .inner
            .field_states(&visit_id)?
            .into_iter()
            .map(|s| FieldState {
                path: s.path,
                relevant: s.relevant,
                required: s.required,
                value_json: s.value.to_string(),
            })
            .collect())
    }

    pub fn validate_visit(&self, visit_id: String) -> Result<Vec<Problem>> {
        Ok(self
            .inner
            .validate_visit(&visit_id)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Prefilled values someone else changed since the draft was opened (values as JSON).
    pub fn changes_since_opened(&self, visit_id: String) -> Result<Vec<ChangedSinceOpened>> {
        Ok(self
            .inner
            .changes_since_opened(&visit_id)?
            .into_iter()
            .map(|c| ChangedSinceOpened {
                path: c.path,
                opened_with_json: c.opened_with.to_string(),
                now_json: c.now.to_string(),
            })
            .collect())
    }

    /// Starts a correction of a completed or signed visit: a new draft naming the one it
    /// replaces.
    pub fn revise_visit(&self, visit_id: String) -> Result<Visit> {
        Ok(self.inner.revise_visit(&visit_id)?.into())
    }

    pub fn complete_visit(&self, visit_id: String) -> Result<Visit> {
        Ok(self.inner.complete_visit(&visit_id)?.into())
    }

    pub fn sign_visit(&self, visit_id: String) -> Result<()> {
        Ok(self.inner.sign_visit(&visit_id)?)
    }

    pub fn void_visit(&self, visit_id: String, reason: String) -> Result<()> {
        Ok(self.inner.void_visit(&visit_id, &reason)?)
    }

    pub fn visit(&self, visit_id: String) -> Result<Visit> {
        Ok(self.inner.visit(&visit_id)?.into())
    }

    pub fn visits_of_household(&self, household_id: String) -> Result<Vec<VisitSummary>> {
        Ok(self
            .inner
            .visits_of_household(&household_id)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    pub fn my_drafts(&self) -> Result<Vec<VisitSummary>> {
        Ok(self
            .inner
            .my_drafts()?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    pub fn counts(&self) -> Result<StoreCounts> {
        let c = self.inner.counts()?;
        Ok(StoreCounts {
            households: c.households,
            households_inactive: c.households_inactive,
            members: c.members,
            drafts: c.drafts,
            completed: c.completed,
            signed: c.signed,
            voided: c.void,
        })
    }

    /// Enrols this device with a server, using the built-in HTTP transport.
    pub fn enroll(
        &self,
        server_url: String,
        enrollment_token: String,
        device_name: String,
    ) -> Result<UserInfo> {
        Ok(self
            .inner
            .enroll(
                &reqwest_transport(&server_url)?,
                &enrollment_token,
                &device_name,
            )?
            .into())
    }

    /// Enrols through the app's own HTTP transport.
    pub fn enroll_with_transport(
        &self,
        transport: Arc<dyn HttpTransport>,
        enrollment_token: String,
        device_name: String,
    ) -> Result<UserInfo> {
        Ok(self
            .inner
            .enroll(
                &ForeignTransport(transport),
                &enrollment_token,
                &device_name,
            )?
            .into())
    }

    /// Syncs over the built-in transport (Kotlin `suspend`, Swift `async`).
    pub async fn sync(
        &self,
        server_url: String,
        listener: Option<Arc<dyn SyncListener>>,
    ) -> Result<SyncReport> {
        let transport = reqwest_transport(&server_url)?;
        self.run_sync(Box::new(transport), listener).await
    }

    /// Syncs over the app's own HTTP transport.
    pub async fn sync_with_transport(
        &self,
        transport: Arc<dyn HttpTransport>,
        listener: Option<Arc<dyn SyncListener>>,
    ) -> Result<SyncReport> {
        self.run_sync(Box::new(ForeignTransport(transport)), listener)
            .await
    }

    /// Stops a running sync between two requests; what it already received is kept.
    pub fn cancel_sync(&self) {
        if let Ok(slot) = self.cancel.lock()
            && let Some(flag) = slot.as_ref()
        {
            flag.cancel();
        }
    }

    pub fn sync_status(&self) -> Result<SyncStatus> {
        let s = self.inner.sync_status()?;
        Ok(SyncStatus {
            enrolled: s.enrolled,
            user: s.user.map(Into::into),
            token_expires_at: s.token_expires_at,
            pending_changes: s.pending_changes,
            open_conflicts: s.open_conflicts,
            rejected_changes: s.rejected_changes,
            last_sync_at: s.last_sync_at,
            clock_offset_ms: s.clock_offset_ms,
            pending_attachments: s.pending_attachments,
            pending_attachment_bytes: s.pending_attachment_bytes,
        })
    }

    /// Completed visits whose photos or signatures have not all reached the server.
    pub fn visits_with_pending_attachments(&self) -> Result<Vec<PendingAttachments>> {
        Ok(self
            .inner
            .visits_with_pending_attachments()?
            .into_iter()
            .map(|p| PendingAttachments {
                visit_id: p.visit_id,
                attachments: p.attachments,
                bytes: p.bytes,
                visit_synced: p.visit_synced,
            })
            .collect())
    }

    pub fn conflicts(&self) -> Result<Vec<Conflict>> {
        Ok(self
            .inner
            .conflicts()?
            .into_iter()
            .map(|c| Conflict {
                id: c.id,
                entity: c.entity.as_str().to_owned(),
                entity_id: c.entity_id,
                household_id: c.household_id,
                field: c.field,
                values: c
                    .values
                    .into_iter()
                    .map(|v| CompetingValue {
                        value_json: v.value.to_string(),
                        user: v.user,
                        received_at: v.received_at,
                        device_time: v.device_time,
                        clock_skewed: v.clock_skewed,
                    })
                    .collect(),
                provisional_json: c.provisional.to_string(),
            })
            .collect())
    }

    /// Resolves a conflict with one of its values or a new one (JSON); syncs like any edit.
    pub fn resolve_conflict(&self, conflict_id: String, value_json: String) -> Result<()> {
        Ok(self
            .inner
            .resolve_conflict(&conflict_id, parse_json("the value", &value_json)?)?)
    }

    pub fn rejected_changes(&self) -> Result<Vec<RejectedChange>> {
        Ok(self
            .inner
            .rejected_changes()?
            .into_iter()
            .map(|r| RejectedChange {
                seq: r.seq,
                change_json: r.change.to_string(),
                code: r.code,
                message: r.message,
            })
            .collect())
    }
}

/// A build for apps with their own HTTP stack (`--no-default-features`, run by scripts/test.sh):
/// the built-in transport's calls say what to use instead, and nothing is sent.
#[cfg(all(test, not(feature = "reqwest-transport")))]
mod without_http {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn enroll_and_sync_name_the_calls_to_use_instead() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db").to_string_lossy().into_owned();
        let c = Collector::open(path, StoreProtection::Plaintext).unwrap();
        let unavailable = |e: ZoufangError| match e {
            ZoufangError::Network { code, detail } => {
                assert_eq!(code, "transport_unavailable");
                assert!(detail.contains("syncWithTransport"), "{detail}");
            }
            other => panic!("expected transport_unavailable, got {other:?}"),
        };
        unavailable(
            c.enroll("http://127.0.0.1:9".into(), "token".into(), "phone".into())
                .unwrap_err(),
        );
        let sync = c.sync("http://127.0.0.1:9".into(), None);
        unavailable(block_on(sync).unwrap_err());
    }

    /// Polls a future to its end (the sync's own thread does the work; no executor needed).
    fn block_on<F: Future>(f: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
