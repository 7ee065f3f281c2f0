//! Streamed answers and requests (`zoufang_protocol::stream`): a pull answered as pages sent
//! one after another in one response, and a push sent as messages one after another in one
//! request body, each applied the moment it arrives. Either way a cut link costs the message
//! in flight, not the request: the device keeps the pages it applied, and asks which of its
//! pushed changes arrived (`/v1/push/acks`) instead of sending them again.

use std::io::Read;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use zoufang_protocol::messages::{
    Ack, AuditUploadResponse, ErrorDetail, PROTOCOL_VERSION, PullRequest, PullResponse,
    PushRequest, PushResponse, PushStreamAnswer, StreamRefusal,
};
use zoufang_protocol::stream::{CONTENT_TYPE, StreamError, StreamReader, StreamWriter};

use super::{
    ApiResult, AppState, Device, MAX_BODY_BYTES, apply_push, blocking, checked_push, reply,
};
use crate::service::pull::MAX_PULL_LIMIT;
use crate::storage::{DeviceAuth, ServerError, Storage};

/// Most messages in one streamed push (each at most `MAX_PUSH_CHANGES` changes).
pub const MAX_STREAM_MESSAGES: usize = zoufang_protocol::stream::MAX_MESSAGES;
/// Silence inside a streamed push after which the server stops waiting for the rest (what
/// arrived is applied and kept).
const STREAM_IDLE: Duration = Duration::from_secs(30);

/// Most entries one streamed pull carries (its pages are read one at a time, so the server's
/// memory holds a page, not the answer).
pub const MAX_STREAMED_PULL: u32 = 50_000;

type Piece = Result<Bytes, std::io::Error>;

fn stream_body(rx: tokio::sync::mpsc::Receiver<Piece>) -> Response {
    let pieces = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        Body::from_stream(pieces),
    )
        .into_response()
}

fn storage_error(e: std::io::Error) -> ServerError {
    ServerError::Storage(format!("cannot encode a stream: {e}"))
}

/// A pull answered as a stream of pages of `page` entries, `request.limit` in all. The first
/// page is read before answering, so a refusal is still a status code; a storage failure
/// after it ends the stream early (the device resumes from the last page it applied).
pub(super) async fn pull_stream(
    state: &AppState,
    auth: DeviceAuth,
    request: PullRequest,
    page: u32,
) -> ApiResult {
    let total = request.limit.clamp(1, MAX_STREAMED_PULL);
    // At most MAX_STREAM_MESSAGES pages: each is a read transaction of its own.
    let fewest = total.div_ceil(MAX_STREAM_MESSAGES as u32);
    let page = page.clamp(fewest.max(1), MAX_PULL_LIMIT);
    let (storage, clock) = (state.storage.clone(), state.clock.clone());
    let device = auth.device_id.clone();
    let started = std::time::Instant::now();
    let ask = PullRequest {
        limit: page.min(total),
        page: None,
        ..request
    };
    let (first, auth) = {
        let storage = storage.clone();
        let now = clock();
        blocking(move || storage.pull(&auth, &ask, now).map(|r| (r, auth))).await?
    };
    let mut writer = StreamWriter::new().map_err(storage_error)?;
    writer.push(&first).map_err(storage_error)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Piece>(2);
    let head = Bytes::from(writer.take());
    tokio::task::spawn_blocking(move || {
        let mut sent = first.entries.len();
        let (mut cursors, mut more) = (first.cursors, first.more);
        drop(first.entries);
        let mut pieces = vec![head];
        while more && sent < total as usize {
            let ask = PullRequest {
                protocol: PROTOCOL_VERSION,
                cursors: std::mem::take(&mut cursors),
                limit: page.min(total - sent as u32),
                page: None,
            };
            let next: PullResponse = match storage.pull(&auth, &ask, clock()) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(device = %device, "a streamed pull stopped early: {e}");
                    break;
                }
            };
            sent += next.entries.len();
            (cursors, more) = (next.cursors.clone(), next.more);
            if writer.push(&next).is_err() {
                break;
            }
            // A page waits only for the one before it to be taken: the server reads ahead of
            // the link by two pages at most.
            pieces.push(Bytes::from(writer.take()));
            if !send_all(&tx, &mut pieces) {
                return;
            }
        }
        if let Ok(tail) = writer.finish() {
            pieces.push(Bytes::from(tail));
        }
        if send_all(&tx, &mut pieces) {
            tracing::info!(device = %device, entries = sent, more, ms = started.elapsed().as_millis() as u64, "pull (streamed)");
        }
    });
    Ok(stream_body(rx))
}

/// Sends what is waiting; false once the device has gone (the link dropped).
fn send_all(tx: &tokio::sync::mpsc::Sender<Piece>, pieces: &mut Vec<Bytes>) -> bool {
    pieces
        .drain(..)
        .filter(|p| !p.is_empty())
        .all(|p| tx.blocking_send(Ok(p)).is_ok())
}

/// The body as it arrives, for a reader on the blocking pool: a cut, a silence past
/// [`STREAM_IDLE`] or a body past [`MAX_BODY_BYTES`] reads as an error, never as an end.
struct Arriving {
    rx: tokio::sync::mpsc::Receiver<Option<Bytes>>,
    current: Bytes,
}

impl Read for Arriving {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Some(piece)) => self.current = piece,
                Some(None) => {
                    let e = std::io::ErrorKind::UnexpectedEof;
                    return Err(std::io::Error::new(e, "the body was cut"));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        let piece = self.current.split_to(n);
        if let Some(to) = buf.get_mut(..n) {
            to.copy_from_slice(&piece);
        }
        Ok(n)
    }
}

fn arriving(body: Body) -> Arriving {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let mut total = 0;
        loop {
            let piece = match tokio::time::timeout(STREAM_IDLE, stream.next()).await {
                Ok(None) => return,
                Ok(Some(Ok(piece))) if piece.is_empty() => continue,
                Ok(Some(Ok(piece))) => piece,
                Ok(Some(Err(_))) | Err(_) => {
                    let _ = tx.send(None).await;
                    return;
                }
            };
            total += piece.len();
            let piece = (total <= MAX_BODY_BYTES).then_some(piece);
            let over = piece.is_none();
            if tx.send(piece).await.is_err() || over {
                return;
            }
        }
    });
    Arriving {
        rx,
        current: Bytes::new(),
    }
}

/// `POST /v1/push/stream`: a push as a stream of [`PushRequest`] messages, each checked and
/// applied (its own transaction) as it arrives. A device that accepts a stream in return gets
/// each message's acknowledgements the moment it is applied ([`push_answered_as_applied`]);
/// otherwise the answer holds every acknowledgement at the end. A cut body keeps what was
/// applied.
pub(super) async fn push_stream(
    State(state): State<AppState>,
    Device(auth): Device,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let accepts_stream = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim() == CONTENT_TYPE));
    if accepts_stream {
        return Ok(push_answered_as_applied(&state, auth, body));
    }
    let started = std::time::Instant::now();
    let (storage, clock) = (state.storage.clone(), state.clock.clone());
    let now = clock.clone();
    let device = auth.device_id.clone();
    let body = arriving(body);
    let outcome = blocking(move || {
        let (mut acks, mut audit) = (Vec::new(), None);
        let messages = apply_messages(
            storage.as_ref(),
            &auth,
            &*clock,
            body,
            &mut |more, answer| {
                acks.extend(more);
                audit = answer.or(audit.take());
                true
            },
        )?;
        Ok(messages.map(|m| (acks, audit, m)))
    })
    .await?;
    let Some((acks, audit, messages)) = outcome else {
        tracing::info!(device = %device, ms = started.elapsed().as_millis() as u64, "push (streamed) cut; what arrived is kept");
        return Err(
            ServerError::bad("stream_cut", "the push's body ended inside a message").into(),
        );
    };
    tracing::info!(device = %device, changes = acks.len(), messages, ms = started.elapsed().as_millis() as u64, "push (streamed)");
    reply(&PushResponse {
        protocol: PROTOCOL_VERSION,
        server_time: now().to_rfc3339(),
        acks,
        audit,
    })
}

/// A streamed push answered as a stream of [`PushStreamAnswer`]s: the answer begins at once,
/// each applied message's acknowledgements follow it while the device is still sending, and a
/// refusal (a bad message, a storage failure) ends it as its last message.
fn push_answered_as_applied(state: &AppState, auth: DeviceAuth, body: Body) -> Response {
    let started = std::time::Instant::now();
    let (storage, clock) = (state.storage.clone(), state.clock.clone());
    let device = auth.device_id.clone();
    let body = arriving(body);
    let (tx, rx) = tokio::sync::mpsc::channel::<Piece>(4);
    // The request's span (its route) goes with the work that outlives the handler.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _span = span.enter();
        let Ok(mut writer) = StreamWriter::new() else {
            return;
        };
        let mut changes = 0;
        let mut answer = |message: &PushStreamAnswer| {
            if writer.push(message).is_err() {
                return false;
            }
            send_all(&tx, &mut vec![Bytes::from(writer.take())])
        };
        let outcome = apply_messages(
            storage.as_ref(),
            &auth,
            &*clock,
            body,
            &mut |acks, audit| {
                changes += acks.len();
                answer(&PushStreamAnswer::Applied(PushResponse {
                    protocol: PROTOCOL_VERSION,
                    server_time: clock().to_rfc3339(),
                    acks,
                    audit,
                }))
            },
        );
        let ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok(Some(messages)) => {
                tracing::info!(device = %device, changes, messages, ms, "push (streamed, answered as applied)");
            }
            Ok(None) => {
                tracing::info!(device = %device, changes, ms, "push (streamed, answered as applied) cut; what arrived is kept");
            }
            Err(e) => {
                if e.status() >= 500 {
                    tracing::error!(code = e.code(), "streamed push failed: {e}");
                }
                answer(&PushStreamAnswer::Refused(StreamRefusal {
                    protocol: PROTOCOL_VERSION,
                    status: e.status(),
                    error: ErrorDetail {
                        code: e.code().to_owned(),
                        message: e.to_string(),
                    },
                }));
            }
        }
        if let Ok(tail) = writer.finish() {
            send_all(&tx, &mut vec![Bytes::from(tail)]);
        }
    });
    stream_body(rx)
}

/// Reads a streamed push's messages as they arrive and applies each, handing its
/// acknowledgements and audit answer to `applied` (which returns false once nobody listens).
/// Returns the messages applied, `None` if the body was cut (or the answer's reader went).
fn apply_messages(
    storage: &dyn Storage,
    auth: &DeviceAuth,
    clock: &(dyn Fn() -> DateTime<Utc> + Send + Sync),
    body: Arriving,
    applied: &mut dyn FnMut(Vec<Ack>, Option<AuditUploadResponse>) -> bool,
) -> Result<Option<usize>, ServerError> {
    let mut reader = StreamReader::new(body);
    let mut messages = 0;
    loop {
        let req: PushRequest = match reader.next_message() {
            None => return Ok(Some(messages)),
            Some(Ok(req)) => req,
            Some(Err(StreamError::Message(e))) => {
                return Err(ServerError::bad("bad_message", e.to_string()));
            }
            Some(Err(_)) => return Ok(None),
        };
        messages += 1;
        if messages > MAX_STREAM_MESSAGES {
            let m = format!("at most {MAX_STREAM_MESSAGES} messages per streamed push");
            return Err(ServerError::bad("too_many_changes", m));
        }
        if req.protocol != PROTOCOL_VERSION {
            return Err(ServerError::Protocol {
                got: req.protocol,
                supported: PROTOCOL_VERSION,
            });
        }
        let device_now = checked_push(auth, &req)?;
        let (acks, audit) = apply_push(storage, auth, req, device_now, clock())?;
        if !applied(acks, audit) {
            return Ok(None);
        }
    }
}
