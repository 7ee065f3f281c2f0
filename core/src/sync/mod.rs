//! Sync with the provincial backend (the wire protocol itself is `zoufang_protocol`): the hybrid
//! logical clock, the device's side of the store, the sans-I/O sync engine and the transports that
//! carry its bytes.

pub mod client;
pub mod engine;
pub mod hlc;
pub mod transport;
pub mod uploads;

pub use client::{RejectedChange, SyncStatus};
pub use engine::{
    CancelFlag, SyncConfig, SyncEngine, SyncListener, SyncPhase, SyncProgress, SyncReport,
};
#[cfg(feature = "reqwest-transport")]
pub use transport::ReqwestTransport;
pub use transport::{HttpRequest, HttpResponse, RetryPolicy, Transport, TransportError};
pub use uploads::PendingAttachments;
