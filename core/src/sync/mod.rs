//! Sync with the provincial backend (the wire protocol itself is `zoufang_protocol`): the
//! sans-I/O engine (`engine`, `attachments`) and the narrow view of the store it works through
//! (`local`), the driver that does its I/O (`driver`), the device side of sync over the store
//! (`client`, `uploads`), the hybrid logical clock and the transports that carry the bytes.

mod attachments;
pub mod client;
mod driver;
pub mod engine;
pub mod hlc;
pub mod local;
pub mod transport;
pub mod uploads;
pub(crate) mod wire;

pub use client::{RejectedChange, SyncStatus};
pub use driver::CancelFlag;
pub use engine::{
    Moment, SyncConfig, SyncEngine, SyncListener, SyncPhase, SyncProgress, SyncReport,
};
pub use local::LocalState;
#[cfg(feature = "reqwest-transport")]
pub use transport::ReqwestTransport;
pub use transport::{HttpRequest, HttpResponse, RetryPolicy, Transport, TransportError};
pub use uploads::PendingAttachments;
