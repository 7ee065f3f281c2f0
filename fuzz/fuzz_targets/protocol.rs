//! Any bytes as every protocol message, raw and zstd-framed, and as an attachment chunk's frames:
//! decoding gives a message or a DecodeError (a frame error), never a panic or an unbounded
//! allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zoufang_core::sync::frames::FrameReader;
use zoufang_core::sync::protocol::{
    self, AttachmentStatusRequest, AttachmentStatusResponse, CatalogRequest, CatalogResponse,
    ChunkResponse, ConflictsResponse, EnrollRequest, EnrollResponse, ErrorBody, PullRequest,
    PullResponse, PushRequest, PushResponse, ResolveRequest, SnapshotRequest, SnapshotResponse,
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
    let _ = protocol::decode::<AttachmentStatusRequest>(body);
    let _ = protocol::decode::<AttachmentStatusResponse>(body);
    let _ = protocol::decode::<ChunkResponse>(body);
}

/// A chunk body arriving in pieces of varied size: the verified content never exceeds the body.
fn frames(body: &[u8]) {
    let mut reader = FrameReader::new();
    for piece in body.chunks(1 + body.first().copied().unwrap_or(0) as usize) {
        if reader.push(piece).is_err() {
            break;
        }
    }
    let (content, _) = reader.finish();
    assert!(content.len() <= body.len());
}

fuzz_target!(|data: &[u8]| {
    all(data);
    frames(data);
    // The same bytes as the JSON inside a zstd frame, as devices and the server send them.
    if let Ok(framed) = protocol::encode(&serde_json::from_slice::<serde_json::Value>(data).ok()) {
        all(&framed);
    }
});
