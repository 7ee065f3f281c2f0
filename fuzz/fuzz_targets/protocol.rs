//! Any bytes as every protocol message, raw and zstd-framed, and as an attachment chunk's frames:
//! decoding gives a message or a DecodeError (a frame error), never a panic or an unbounded
//! allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zoufang_protocol::frames::FrameReader;
use zoufang_protocol::messages::{
    self, AttachmentStatusRequest, AttachmentStatusResponse, CatalogRequest, CatalogResponse,
    ChunkResponse, ConflictsResponse, EnrollRequest, EnrollResponse, ErrorBody, PullRequest,
    PullResponse, PushRequest, PushResponse, ResolveRequest, SnapshotRequest, SnapshotResponse,
};

fn all(body: &[u8]) {
    let _ = messages::protocol_of(body);
    let _ = messages::decode::<EnrollRequest>(body);
    let _ = messages::decode::<EnrollResponse>(body);
    let _ = messages::decode::<CatalogRequest>(body);
    let _ = messages::decode::<CatalogResponse>(body);
    let _ = messages::decode::<PushRequest>(body);
    let _ = messages::decode::<PushResponse>(body);
    let _ = messages::decode::<PullRequest>(body);
    let _ = messages::decode::<PullResponse>(body);
    let _ = messages::decode::<SnapshotRequest>(body);
    let _ = messages::decode::<SnapshotResponse>(body);
    let _ = messages::decode::<ConflictsResponse>(body);
    let _ = messages::decode::<ResolveRequest>(body);
    let _ = messages::decode::<ErrorBody>(body);
    let _ = messages::decode::<AttachmentStatusRequest>(body);
    let _ = messages::decode::<AttachmentStatusResponse>(body);
    let _ = messages::decode::<ChunkResponse>(body);
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
    if let Ok(framed) = messages::encode(&serde_json::from_slice::<serde_json::Value>(data).ok()) {
        all(&framed);
    }
});
