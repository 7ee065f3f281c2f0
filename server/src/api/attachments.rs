//! Attachment contents over HTTP: how much of each the server holds, chunks of framed bytes
//! kept frame by frame even when the connection drops, and downloads to those whose areas
//! cover a visit naming the content whose device proved it holds the bytes.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use futures_util::StreamExt;
use zoufang_protocol::audit::HashAlgorithm;
use zoufang_protocol::frames::{FrameError, FrameReader};
use zoufang_protocol::messages::{
    AttachmentStatusRequest, AttachmentStatusResponse, ChunkResponse, ContentRef, ContentState,
    ContentStatus, PROTOCOL_VERSION,
};

use super::{
    ApiResult, AppState, CHUNK_IDLE, Device, MAX_CHUNK_CONTENT, MAX_STATUS_CONTENTS, Msg,
    STATUS_WAIT, blocking, reply,
};
use crate::blobs::ContentKey;
use crate::storage::ServerError;

fn content_key(algorithm: &str, hash: &str) -> Result<ContentKey, ServerError> {
    HashAlgorithm::parse(algorithm)
        .and_then(|alg| ContentKey::new(alg, hash))
        .ok_or_else(|| {
            ServerError::bad(
                "bad_content_name",
                "a content is named by sha256 or sm3 and a lowercase hex digest",
            )
        })
}

pub(super) async fn attachment_status(
    State(state): State<AppState>,
    Device(auth): Device,
    Msg(req, _): Msg<AttachmentStatusRequest>,
) -> ApiResult {
    if req.contents.len() > MAX_STATUS_CONTENTS {
        return Err(ServerError::bad(
            "too_many_contents",
            format!("at most {MAX_STATUS_CONTENTS} contents per status request"),
        )
        .into());
    }
    for c in &req.contents {
        if let Some(key) = ContentKey::new(req.hash_algorithm, &c.content_hash) {
            state.uploads.settled(&key).await;
        }
    }
    let (storage, now) = (state.storage.clone(), (state.clock)());
    let contents = blocking(move || {
        let nonce = req.possession_nonce.as_deref();
        storage.attachment_status(&auth, req.hash_algorithm, &req.contents, nonce, now)
    })
    .await?;
    reply(&AttachmentStatusResponse {
        protocol: PROTOCOL_VERSION,
        contents,
    })
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct ChunkQuery {
    offset: u64,
    /// The content's size, as the uploading device's visit names it.
    size: u64,
}

/// `PUT /v1/attachments/{algorithm}/{hash}?offset=N&size=S`, a framed body
/// (`core::sync::frames`).
/// Every whole frame that arrives with a sound checksum is kept, even when the connection
/// drops mid-chunk or a later frame is corrupt; the device then asks how far the server got.
pub(super) async fn put_chunk(
    State(state): State<AppState>,
    Device(auth): Device,
    Path((algorithm, hash)): Path<(String, String)>,
    Query(query): Query<ChunkQuery>,
    body: axum::body::Body,
) -> ApiResult {
    let key = content_key(&algorithm, &hash)?;
    let (storage, now) = (state.storage.clone(), (state.clock)());
    let receiving = tokio::time::timeout(STATUS_WAIT, state.uploads.lock_of(&key).lock_owned())
        .await
        .map_err(|_| ServerError::Conflict {
            code: "upload_busy",
            message: "another chunk of this content is being received".into(),
        })?;
    // A wrong offset is refused before a byte of the body is read.
    let held = {
        let (storage, auth, key) = (storage.clone(), auth.clone(), key.clone());
        let asked = [ContentRef {
            content_hash: key.hash().to_owned(),
            size_bytes: query.size,
            proof: None,
        }];
        blocking(move || storage.attachment_status(&auth, key.algorithm, &asked, None, now))
            .await?
            .pop()
            .ok_or_else(|| ServerError::Storage("no status for a content".into()))?
    };
    if let Some(answer) = before_receiving(&held, query.offset) {
        return answer;
    }
    let device = auth.device_id.clone();
    // Its own task: when the connection drops, axum drops this handler, but what arrived
    // before the cut must still be written.
    let task = tokio::spawn(async move {
        let _receiving = receiving;
        let (frames, cut) = receive_frames(body).await?;
        let (content, outcome) = frames.finish();
        let stored = if content.is_empty() {
            held
        } else {
            let (offset, size) = (query.offset, query.size);
            blocking(move || storage.append_attachment(&auth, &key, size, offset, &content, now))
                .await?
        };
        Ok::<_, ServerError>((stored, outcome, cut))
    });
    let (stored, outcome, cut) = task
        .await
        .map_err(|_| ServerError::Storage("an upload task failed".into()))??;
    tracing::debug!(device = %device, received = stored.received, cut, "attachment chunk");
    chunk_answer(&device, &stored, outcome)
}

/// The answer to a chunk that is not to be read: the content is unknown to the sender, already
/// complete, or held up to another offset than the chunk's.
fn before_receiving(held: &ContentState, offset: u64) -> Option<ApiResult> {
    match held.status {
        ContentStatus::Unknown => Some(Err(
            ServerError::NotFound("attachment content".into()).into()
        )),
        ContentStatus::Complete => Some(reply(&ChunkResponse {
            protocol: PROTOCOL_VERSION,
            received: held.received,
            complete: true,
        })),
        ContentStatus::Receiving if held.received != offset => Some(Err(ServerError::Conflict {
            code: "offset_mismatch",
            message: format!(
                "the chunk starts at {offset} but the server holds {} bytes",
                held.received
            ),
        }
        .into())),
        ContentStatus::Receiving => None,
    }
}

/// Reads a chunk's frames until the body ends, breaks, or idles past `CHUNK_IDLE` (`true`:
/// cut); a chunk with more content than allowed is refused.
async fn receive_frames(body: axum::body::Body) -> Result<(FrameReader, bool), ServerError> {
    let mut frames = FrameReader::new();
    let mut stream = body.into_data_stream();
    loop {
        let Ok(piece) = tokio::time::timeout(CHUNK_IDLE, stream.next()).await else {
            return Ok((frames, true));
        };
        match piece {
            None => return Ok((frames, false)),
            Some(Err(_)) => return Ok((frames, true)),
            Some(Ok(bytes)) => {
                if frames.push(&bytes).is_err() {
                    return Ok((frames, false));
                }
                if frames.content().len() > MAX_CHUNK_CONTENT {
                    return Err(ServerError::bad(
                        "chunk_too_long",
                        format!("at most {MAX_CHUNK_CONTENT} bytes per chunk"),
                    ));
                }
            }
        }
    }
}

/// What the device hears after its chunk: how much the server now holds, or why the rest of
/// the chunk was refused.
fn chunk_answer(device: &str, stored: &ContentState, outcome: Result<(), FrameError>) -> ApiResult {
    match outcome {
        Err(FrameError::Checksum | FrameError::Length) => {
            tracing::warn!(device = %device, "a corrupt attachment chunk was refused after its sound frames");
            Err(ServerError::Unprocessable {
                code: "chunk_corrupt",
                message: format!(
                    "a frame of the chunk was damaged on the way; the server holds {} bytes",
                    stored.received
                ),
            }
            .into())
        }
        Err(FrameError::Truncated) => Err(ServerError::bad(
            "chunk_truncated",
            format!(
                "the chunk ended inside a frame; the server holds {} bytes",
                stored.received
            ),
        )
        .into()),
        Ok(()) => reply(&ChunkResponse {
            protocol: PROTOCOL_VERSION,
            received: stored.received,
            complete: stored.status == ContentStatus::Complete,
        }),
    }
}

/// `GET /v1/attachments/{algorithm}/{hash}`: a complete content, to a user whose areas cover a
/// visit that names it, pushed by a device that proved it holds the bytes (404 to anyone else,
/// as if it did not exist).
pub(super) async fn get_attachment(
    State(state): State<AppState>,
    Device(auth): Device,
    Path((algorithm, hash)): Path<(String, String)>,
) -> ApiResult {
    let key = content_key(&algorithm, &hash)?;
    let storage = state.storage.clone();
    let device = auth.device_id.clone();
    let bytes = blocking(move || storage.attachment_content(&auth, &key)).await?;
    tracing::info!(device = %device, bytes = bytes.len(), "attachment served");
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        bytes,
    )
        .into_response())
}
