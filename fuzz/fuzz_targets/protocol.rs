//! Any bytes as every protocol message, raw and zstd-framed: decoding gives a message or a
//! DecodeError, never a panic or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zoufang_core::sync::protocol::{
    self, CatalogRequest, CatalogResponse, ConflictsResponse, EnrollRequest, EnrollResponse,
    ErrorBody, PullRequest, PullResponse, PushRequest, PushResponse, ResolveRequest,
    SnapshotRequest, SnapshotResponse,
};

fn all(body: &[u8]) {
    let _ = protocol::protocol_of(body);
    let _ = protocol::decode::<EnrollRequest>(body);
    let _ = protocol::decode::<EnrollResponse>(body);
    let _ = protocol::decode::<CatalogRequest>(body);
    let _ = protocol::decode::<CatalogResponse>(body);
    let _ = protocol::decode::<PushRequest>(body);
    let _ = protocol::decode::<PushResponse>(body);
    let _ = protocol::decode::<PullRequest>(body);
    let _ = protocol::decode::<PullResponse>(body);
    let _ = protocol::decode::<SnapshotRequest>(body);
    let _ = protocol::decode::<SnapshotResponse>(body);
    let _ = protocol::decode::<ConflictsResponse>(body);
    let _ = protocol::decode::<ResolveRequest>(body);
    let _ = protocol::decode::<ErrorBody>(body);
}

fuzz_target!(|data: &[u8]| {
    all(data);
    // The same bytes as the JSON inside a zstd frame, as devices and the server send them.
    if let Ok(framed) = protocol::encode(&serde_json::from_slice::<serde_json::Value>(data).ok()) {
        all(&framed);
    }
});
