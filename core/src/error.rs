//! The one error type of the core. Every variant has a stable `code()`; messages are for people
//! and never carry personal data (names, ID numbers, phones, locations), only ids and paths.

use zoufang_model::engine::{AnswerError, Problem};
use zoufang_model::form::FormLoadError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the store could not be read or written ({0})")]
    Storage(String),
    #[error("the store is encrypted with another key, or the file is not a Zoufang store")]
    WrongKeyOrNotAStore,
    #[error(
        "an encryption key was given but this build has no encryption (enable the `sqlcipher` feature)"
    )]
    EncryptionUnavailable,
    #[error("the store's schema could not be upgraded ({0})")]
    Migration(String),
    #[error("the store was written by a newer Zoufang (schema {found}, this build knows {known})")]
    StoreTooNew { found: i64, known: i64 },
    #[error(transparent)]
    FormLoad(#[from] FormLoadError),
    #[error("form {form_id} version {version} is not installed")]
    FormNotFound { form_id: String, version: u32 },
    #[error(
        "form {form_id} version {version} is already installed with different content; publish a new version"
    )]
    FormVersionConflict { form_id: String, version: u32 },
    #[error("{entity} {id} does not exist")]
    NotFound { entity: &'static str, id: String },
    #[error(transparent)]
    Answer(#[from] AnswerError),
    #[error("the value for '{field}' is not valid ({code})")]
    InvalidValue { field: String, code: &'static str },
    #[error("'{field}' cannot be changed here: {reason}")]
    ServerOwnedField { field: String, reason: &'static str },
    #[error("visit {id} is {status} and can no longer be edited; start a revision instead")]
    VisitNotEditable { id: String, status: &'static str },
    #[error("visit {id} holds no signature; sign it on the draft before marking it signed")]
    VisitUnsigned { id: String },
    #[error("visit {id} cannot be {action}: it is {status}")]
    VisitWrongStatus {
        id: String,
        status: &'static str,
        action: &'static str,
    },
    #[error("the visit has {} problem(s) that block completion", problems.iter().filter(|p| p.blocks_completion()).count())]
    VisitHasProblems { problems: Vec<Problem> },
    #[error("no user is signed in on this store")]
    NotSignedIn,
    #[error("this store belongs to another user; each user has their own store and key")]
    WrongUser,
    #[error("an administrator wiped this device: its data and key are destroyed; enrol again")]
    DeviceWiped,
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("this device is not enrolled with a server yet")]
    NotEnrolled,
    #[error(
        "this device's token expired after a long time without a sync; enrol this store again with a new enrolment code from an administrator: its unsent work is kept and goes up then"
    )]
    TokenExpired,
    #[error("the server could not be reached ({0}); nothing was lost, sync again later")]
    Transport(String),
    #[error("the server refused the request ({code}, HTTP {status}): {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the sync was cancelled; what was already received is kept")]
    Cancelled,
    #[error("a sync of this store is already running; wait for it to end")]
    SyncRunning,
}

impl Error {
    /// Stable, machine-readable code: part of the API of the core, the CLI and the bindings.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Storage(_) => "storage",
            Self::WrongKeyOrNotAStore => "wrong_key_or_not_a_store",
            Self::EncryptionUnavailable => "encryption_unavailable",
            Self::Migration(_) => "migration",
            Self::StoreTooNew { .. } => "store_too_new",
            Self::FormLoad(_) => "form_invalid",
            Self::FormNotFound { .. } => "form_not_found",
            Self::FormVersionConflict { .. } => "form_version_conflict",
            Self::NotFound { .. } => "not_found",
            Self::Answer(e) => e.code(),
            Self::InvalidValue { .. } => "invalid_value",
            Self::ServerOwnedField { .. } => "server_owned_field",
            Self::VisitNotEditable { .. } => "visit_not_editable",
            Self::VisitWrongStatus { .. } => "visit_wrong_status",
            Self::VisitUnsigned { .. } => "visit_unsigned",
            Self::VisitHasProblems { .. } => "visit_has_problems",
            Self::NotSignedIn => "not_signed_in",
            Self::WrongUser => "wrong_user",
            Self::DeviceWiped => "device_wiped",
            Self::InvalidInput(_) => "invalid_input",
            Self::NotEnrolled => "not_enrolled",
            Self::TokenExpired => "token_expired",
            Self::Transport(_) => "transport",
            Self::Server { .. } => "server",
            Self::Cancelled => "cancelled",
            Self::SyncRunning => "sync_running",
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => Self::WrongKeyOrNotAStore,
            // The SQLite message names the failing constraint or condition, never a bound value.
            _ => Self::Storage(e.to_string()),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::Storage(format!(
            "stored JSON is unreadable at line {} column {}",
            e.line(),
            e.column()
        ))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
