//! Sync with the provincial backend: the wire protocol, the hybrid logical clock, per-village
//! checksums, the sans-I/O sync engine and the transports that carry its bytes.

pub mod checksum;
pub mod hlc;
pub mod protocol;
