//! Sync with the provincial backend (the wire protocol itself is `zoufang_protocol`): the
//! sans-I/O engine (`engine`, `attachments`, `download`) and the narrow view of the device it works through
//! (`local`), the driver that does its I/O (`driver`), applying the server's answers to the
//! store (`apply`), the sync settings and status, the hybrid logical clock and the transports
//! that carry the bytes. Nothing here imports the `Collector` facade: it implements
//! `LocalState` and calls the driver (`collector/sync.rs`, `collector/local_state.rs`).

mod adapt;
pub(crate) mod apply;
mod attachments;
mod audit_upload;
mod download;
pub(crate) mod driver;
pub mod engine;
pub mod hlc;
pub mod local;
mod pull;
mod push;
mod push_answers;
#[cfg(feature = "reqwest-transport")]
mod reqwest_transport;
pub(crate) mod settings;
pub mod status;
pub mod transport;
pub(crate) mod wire;

pub use driver::CancelFlag;
pub use engine::{
    Moment, SyncConfig, SyncEngine, SyncListener, SyncPhase, SyncProgress, SyncReport,
};
pub use local::LocalState;
#[cfg(feature = "reqwest-transport")]
pub use reqwest_transport::ReqwestTransport;
pub use status::{PendingAttachments, RejectedChange, SyncStatus};
pub use transport::{
    CONNECT_TIMEOUT, Cut, HttpRequest, HttpResponse, RetryPolicy, STALL_TIMEOUT, Transport,
    TransportError,
};
