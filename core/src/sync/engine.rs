//! The sync engine: a sans-I/O state machine. It decides the next request and applies each
//! response to the store; it never touches the network, so it is tested with any transport
//! (a real server, a faulty proxy, a function). [`Collector::sync`] drives it over a
//! [`Transport`] with retries.
//!
//! One sync: catalog (new forms and code lists) → push the outbox in batches → pull the feed
//! in batches per area → compare per-village checksums and repair any diverged village from a
//! snapshot. Each response is applied in its own transaction, so a cut link loses at most the
//! batch in flight, and the next sync resumes from there.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::transport::{HttpRequest, HttpResponse, RetryPolicy, Transport};
use crate::collector::Collector;
use crate::error::{Error, Result};
use crate::records::timestamp;
use zoufang_protocol::frames::encode_frames;
use zoufang_protocol::messages::{
    self, AttachmentStatusRequest, AttachmentStatusResponse, AuditBatch, AuditUploadRequest,
    AuditUploadResponse, CatalogRequest, CatalogResponse, ChunkResponse, ContentRef, ContentStatus,
    EnrollRequest, EnrollResponse, ErrorBody, PROTOCOL_VERSION, PullRequest, PullResponse,
    PushRequest, PushResponse, SnapshotRequest, SnapshotResponse, UserInfo,
};

/// Audit entries per upload request: about 6 KB compressed, like a push batch, so that a request
/// fits between two cuts of a weak link.
pub(crate) const AUDIT_BATCH: usize = 100;

/// Contents asked about per status request.
const STATUS_BATCH: usize = 64;
/// Bounds of an attachment chunk. The size follows the link: about [`CHUNK_SECONDS`] of what the
/// last chunk achieved (32 KB on 2G, 1 MB on the township's Wi-Fi), halved at each
/// interruption. A cut costs far less than a chunk anyway (the server keeps every whole frame
/// that arrived), so the size mostly sets how often the device hears how far it got, and how
/// many fsyncs the server spends.
pub const MIN_CHUNK_BYTES: usize = 32 * 1024;
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
const FIRST_CHUNK_BYTES: usize = 64 * 1024;
const CHUNK_SECONDS: f64 = 2.0;

/// A device clock further than this from the server's is reported as skewed.
pub const CLOCK_SKEW_LIMIT_MS: i64 = 5 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncPhase {
    Catalog,
    Push,
    Pull,
    Verify,
    /// Uploading the audit trail.
    Audit,
    /// Uploading photos and signatures, after all the data (`done`/`total` count bytes).
    Attachments,
    Done,
}

/// What a progress bar needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SyncProgress {
    pub phase: SyncPhase,
    /// Items done in this phase (changes pushed, entries pulled, villages verified).
    pub done: u64,
    /// Items known so far for this phase (grows while pulling).
    pub total: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// Implemented by the app to follow a sync.
pub trait SyncListener: Send + Sync {
    fn on_progress(&self, progress: SyncProgress);
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub pushed: u64,
    pub accepted: u64,
    pub conflicts: u64,
    pub rejected: u64,
    pub pulled: u64,
    pub repaired_villages: Vec<String>,
    pub round_trips: u32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Server time minus device time.
    pub clock_offset_ms: Option<i64>,
    pub clock_skewed: bool,
    /// Audit entries the server acknowledged.
    pub audit_uploaded: u64,
    /// The server found this device's audit chain broken (it keeps an alert).
    pub audit_chain_broken: bool,
    /// Attachment contents sent whole and verified by the server.
    pub attachments_uploaded: u64,
    /// Contents the server already held (from this device or another): not sent.
    pub attachments_already_held: u64,
    /// Content bytes sent in chunks, the re-sent ones included.
    pub attachment_bytes_sent: u64,
    /// Chunks cut, refused or unanswered, each resumed from what the server confirmed.
    pub attachment_interruptions: u64,
    /// Contents left for a later sync (the server does not know their visit yet, or refused).
    pub attachments_waiting: u64,
    /// Contents whose stored bytes no longer match their hash: kept, reported, not sent.
    pub attachments_damaged: u64,
}

/// Tuning of one sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncConfig {
    /// Changes per push request: small enough that a cut re-sends little on a 2G link.
    pub push_batch: usize,
    /// Feed entries per pull request.
    pub pull_limit: u32,
    pub retry: RetryPolicy,
    /// Largest attachment chunk (bytes); the size adapts below it.
    pub max_chunk_bytes: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            push_batch: 100,
            pull_limit: 500,
            retry: RetryPolicy::default(),
            max_chunk_bytes: MAX_CHUNK_BYTES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum InFlight {
    /// With the last audit entry it carries, if any.
    Catalog(Option<u64>),
    Push(u64),
    Pull,
    Snapshot(String),
    Audit(u64),
    /// Asking how much of these contents the server holds; `recheck`: the current upload's,
    /// after an interruption.
    ContentStatus {
        contents: Vec<ContentRef>,
        recheck: bool,
    },
    Chunk {
        offset: u64,
        len: usize,
        started: Instant,
    },
}

/// One content being uploaded.
#[derive(Debug, Clone)]
struct Upload {
    content: ContentRef,
    /// What the server confirmed it holds.
    received: u64,
    /// Its stored bytes were checked against its hash.
    checked: bool,
}

/// The attachment phase's state.
#[derive(Debug)]
struct Uploads {
    /// Not yet asked about.
    unasked: VecDeque<ContentRef>,
    /// Asked about, to send from what the server holds.
    ready: VecDeque<Upload>,
    current: Option<Upload>,
    /// The current upload was interrupted: ask the server how far it got before sending more.
    recheck: bool,
    chunk: usize,
    /// Interruptions in a row that moved nothing.
    stalled: u32,
    /// Bytes of the contents finished this sync.
    finished_bytes: u64,
}

/// The sync state machine of one device.
pub struct SyncEngine<'a> {
    collector: &'a Collector,
    token: String,
    device_id: String,
    config: SyncConfig,
    phase: SyncPhase,
    in_flight: Option<InFlight>,
    sent_at: Option<DateTime<Utc>>,
    to_repair: Vec<String>,
    uploads: Uploads,
    phase_done: u64,
    phase_total: u64,
    report: SyncReport,
}

impl std::fmt::Debug for SyncEngine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine")
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

pub(crate) fn request(method: &str, path: &str, token: Option<&str>, body: Vec<u8>) -> HttpRequest {
    let mut headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("Content-Encoding".to_owned(), "zstd".to_owned()),
        ("Accept-Encoding".to_owned(), "zstd".to_owned()),
    ];
    if let Some(t) = token {
        headers.push(("Authorization".to_owned(), format!("Bearer {t}")));
    }
    HttpRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        headers,
        body,
    }
}

pub(crate) fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>> {
    messages::encode(message).map_err(|e| Error::Storage(format!("cannot encode a message: {e}")))
}

/// A non-2xx response as an error with the server's code.
pub(crate) fn server_error(response: &HttpResponse) -> Error {
    match messages::decode::<ErrorBody>(&response.body) {
        Ok(b) => Error::Server {
            status: response.status,
            code: b.error.code,
            message: b.error.message,
        },
        Err(_) => Error::Server {
            status: response.status,
            code: "unknown".into(),
            message: "the server sent an unreadable error".into(),
        },
    }
}

pub(crate) fn decode<T: for<'de> serde::Deserialize<'de>>(response: &HttpResponse) -> Result<T> {
    if response.status != 200 {
        return Err(server_error(response));
    }
    messages::decode(&response.body).map_err(|e| Error::Server {
        status: 200,
        code: "bad_message".into(),
        message: e.to_string(),
    })
}

impl<'a> SyncEngine<'a> {
    pub fn new(collector: &'a Collector, config: SyncConfig) -> Result<Self> {
        let settings = collector.sync_settings()?;
        let token = settings.device_token.ok_or(Error::NotEnrolled)?;
        let device_id = settings.device_id.ok_or(Error::NotEnrolled)?;
        Ok(Self {
            collector,
            token,
            device_id,
            config,
            phase: SyncPhase::Catalog,
            in_flight: None,
            sent_at: None,
            to_repair: Vec::new(),
            uploads: Uploads {
                unasked: VecDeque::new(),
                ready: VecDeque::new(),
                current: None,
                recheck: false,
                chunk: FIRST_CHUNK_BYTES.min(config.max_chunk_bytes.max(MIN_CHUNK_BYTES)),
                stalled: 0,
                finished_bytes: 0,
            },
            phase_done: 0,
            phase_total: 0,
            report: SyncReport::default(),
        })
    }

    pub fn phase(&self) -> SyncPhase {
        self.phase
    }

    pub fn progress(&self) -> SyncProgress {
        SyncProgress {
            phase: self.phase,
            done: self.phase_done,
            total: self.phase_total.max(self.phase_done),
            bytes_sent: self.report.bytes_sent,
            bytes_received: self.report.bytes_received,
        }
    }

    fn enter(&mut self, phase: SyncPhase, total: u64) {
        self.phase = phase;
        self.phase_done = 0;
        self.phase_total = total;
    }

    /// The next request to send, or `None` when the sync is complete.
    pub fn next_request(&mut self) -> Result<Option<HttpRequest>> {
        loop {
            let (path, body, flight) = match self.phase {
                SyncPhase::Catalog => {
                    let forms = self.collector.installed_forms()?;
                    let code_lists: BTreeMap<String, u32> = self
                        .collector
                        .code_lists()
                        .iter()
                        .map(|l| (l.name.clone(), l.version))
                        .collect();
                    let entries = self.collector.pending_audit(AUDIT_BATCH)?;
                    let last = entries.last().map(|e| e.seq);
                    let audit = match last {
                        Some(_) => Some(AuditBatch {
                            chain_hash: self.collector.audit_chain_hash()?,
                            entries,
                        }),
                        None => None,
                    };
                    let body = encode(&CatalogRequest {
                        protocol: PROTOCOL_VERSION,
                        forms,
                        code_lists,
                        audit,
                    })?;
                    ("/v1/catalog", body, InFlight::Catalog(last))
                }
                SyncPhase::Push => {
                    let batch = self.collector.outbox_batch(self.config.push_batch)?;
                    if batch.is_empty() {
                        self.enter(SyncPhase::Pull, 0);
                        continue;
                    }
                    let n = batch.len() as u64;
                    let device_time = timestamp(self.collector.now());
                    let body = encode(&PushRequest {
                        protocol: PROTOCOL_VERSION,
                        device_id: self.device_id.clone(),
                        device_time,
                        changes: batch,
                    })?;
                    ("/v1/push", body, InFlight::Push(n))
                }
                SyncPhase::Pull => {
                    let cursors = self.collector.sync_settings()?.cursors;
                    let body = encode(&PullRequest {
                        protocol: PROTOCOL_VERSION,
                        cursors,
                        limit: self.config.pull_limit,
                    })?;
                    ("/v1/pull", body, InFlight::Pull)
                }
                SyncPhase::Verify => {
                    let Some(village) = self.to_repair.last().cloned() else {
                        let pending = self.collector.pending_audit_count()?;
                        self.enter(SyncPhase::Audit, pending);
                        continue;
                    };
                    let body = encode(&SnapshotRequest {
                        protocol: PROTOCOL_VERSION,
                        village_code: village.clone(),
                    })?;
                    ("/v1/snapshot", body, InFlight::Snapshot(village))
                }
                SyncPhase::Audit => {
                    let entries = self.collector.pending_audit(AUDIT_BATCH)?;
                    let (Some(last), false) = (
                        entries.last().map(|e| e.seq),
                        self.report.audit_chain_broken,
                    ) else {
                        let contents = self.collector.uploadable_contents()?;
                        let total = contents.iter().map(|c| c.size_bytes).sum();
                        self.uploads.unasked = contents.into();
                        self.enter(SyncPhase::Attachments, total);
                        continue;
                    };
                    let body = encode(&AuditUploadRequest {
                        protocol: PROTOCOL_VERSION,
                        device_id: self.device_id.clone(),
                        chain_hash: self.collector.audit_chain_hash()?,
                        entries,
                    })?;
                    ("/v1/audit", body, InFlight::Audit(last))
                }
                SyncPhase::Attachments => match self.next_upload_request()? {
                    Some(req) => return Ok(Some(req)),
                    None => {
                        self.enter(SyncPhase::Done, 0);
                        continue;
                    }
                },
                SyncPhase::Done => return Ok(None),
            };
            return Ok(Some(self.send("POST", path.to_owned(), body, flight)));
        }
    }

    fn send(&mut self, method: &str, path: String, body: Vec<u8>, flight: InFlight) -> HttpRequest {
        self.in_flight = Some(flight);
        self.sent_at = Some(self.collector.now());
        self.report.round_trips += 1;
        self.report.bytes_sent += body.len() as u64;
        request(method, &path, Some(&self.token), body)
    }

    /// The attachment phase's next request, or `None` when nothing is left to send.
    fn next_upload_request(&mut self) -> Result<Option<HttpRequest>> {
        let alg = self.collector.hash_algorithm();
        loop {
            if let Some(up) = &mut self.uploads.current {
                if self.uploads.recheck {
                    let contents = vec![up.content.clone()];
                    return self.status_request(contents, true).map(Some);
                }
                if !up.checked {
                    if !self.collector.content_intact(&up.content.content_hash)? {
                        let hash = up.content.content_hash.clone();
                        self.uploads.current = None;
                        self.content_damaged(&hash);
                        continue;
                    }
                    up.checked = true;
                }
                let offset = up.received;
                let left = up.content.size_bytes.saturating_sub(offset);
                if left == 0 {
                    // The server holds every byte yet calls it incomplete: not ours to mend.
                    self.report.attachments_waiting += 1;
                    self.uploads.current = None;
                    continue;
                }
                let len = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(self.uploads.chunk);
                let path = format!(
                    "/v1/attachments/{}/{}?offset={offset}&size={}",
                    alg.as_str(),
                    up.content.content_hash,
                    up.content.size_bytes
                );
                let bytes = self
                    .collector
                    .read_content(&up.content.content_hash, offset, len)?;
                self.report.attachment_bytes_sent += bytes.len() as u64;
                let flight = InFlight::Chunk {
                    offset,
                    len: bytes.len(),
                    started: Instant::now(),
                };
                let mut req = self.send("PUT", path, encode_frames(&bytes), flight);
                req.headers.retain(|(k, _)| {
                    !k.eq_ignore_ascii_case("content-encoding")
                        && !k.eq_ignore_ascii_case("content-type")
                });
                req.headers.push((
                    "Content-Type".to_owned(),
                    zoufang_protocol::frames::CONTENT_TYPE.to_owned(),
                ));
                return Ok(Some(req));
            }
            if let Some(next) = self.uploads.ready.pop_front() {
                self.uploads.current = Some(next);
                self.uploads.recheck = false;
                continue;
            }
            if self.uploads.unasked.is_empty() {
                return Ok(None);
            }
            let n = self.uploads.unasked.len().min(STATUS_BATCH);
            let contents: Vec<ContentRef> = self.uploads.unasked.drain(..n).collect();
            return self.status_request(contents, false).map(Some);
        }
    }

    fn status_request(&mut self, contents: Vec<ContentRef>, recheck: bool) -> Result<HttpRequest> {
        let body = encode(&AttachmentStatusRequest {
            protocol: PROTOCOL_VERSION,
            hash_algorithm: self.collector.hash_algorithm(),
            contents: contents.clone(),
        })?;
        Ok(self.send(
            "POST",
            "/v1/attachments/status".to_owned(),
            body,
            InFlight::ContentStatus { contents, recheck },
        ))
    }

    /// Is the request in flight an attachment chunk? Those are never blindly re-sent: after an
    /// interruption the engine first asks how far the server got.
    pub fn chunk_in_flight(&self) -> bool {
        matches!(self.in_flight, Some(InFlight::Chunk { .. }))
    }

    /// The request in flight got no usable answer (the link dropped, the server failed).
    /// Fails once interruptions keep coming with nothing moving.
    pub fn handle_interruption(&mut self, reason: &str) -> Result<()> {
        match self.in_flight.take() {
            Some(InFlight::Chunk { .. }) => self.chunk_interrupted(reason),
            _ => Err(Error::Transport(reason.to_owned())),
        }
    }

    /// The chunk in flight went nowhere known: ask how far the server got before sending more.
    fn chunk_interrupted(&mut self, reason: &str) -> Result<()> {
        self.uploads.recheck = true;
        self.uploads.stalled += 1;
        self.uploads.chunk = (self.uploads.chunk / 2).max(MIN_CHUNK_BYTES);
        self.report.attachment_interruptions += 1;
        tracing::debug!(
            stalled = self.uploads.stalled,
            "attachment chunk interrupted; asking the server how far it got"
        );
        if self.uploads.stalled > self.config.retry.attempts.max(1) {
            return Err(Error::Transport(reason.to_owned()));
        }
        Ok(())
    }

    /// How long to wait before the next request: only after interruptions that moved nothing
    /// twice in a row (one cut is the link's normal life; resuming at once costs nothing).
    pub fn pause(&self) -> Option<Duration> {
        (self.uploads.stalled >= 2).then(|| self.config.retry.delay(self.uploads.stalled - 1))
    }

    fn upload_progress(&mut self) {
        let current = self.uploads.current.as_ref().map_or(0, |u| u.received);
        self.phase_done = self.uploads.finished_bytes + current;
    }

    fn content_held(&mut self, content: &ContentRef) -> Result<()> {
        self.collector.mark_uploaded(&content.content_hash)?;
        self.uploads.finished_bytes += content.size_bytes;
        Ok(())
    }

    fn handle_content_status(
        &mut self,
        contents: Vec<ContentRef>,
        recheck: bool,
        response: &HttpResponse,
    ) -> Result<()> {
        let answer: AttachmentStatusResponse = match decode(response) {
            Ok(a) => a,
            Err(e) if !recheck => {
                self.uploads.unasked.extend(contents);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let states: BTreeMap<&str, _> = answer
            .contents
            .iter()
            .map(|c| (c.content_hash.as_str(), (c.status, c.received)))
            .collect();
        for content in contents {
            let state = states.get(content.content_hash.as_str()).copied();
            match state {
                Some((ContentStatus::Complete, _)) => {
                    self.content_held(&content)?;
                    if recheck {
                        // The last chunk's answer was lost: the server finished it.
                        self.report.attachments_uploaded += 1;
                        self.uploads.current = None;
                    } else {
                        self.report.attachments_already_held += 1;
                    }
                }
                Some((ContentStatus::Receiving, received)) if received <= content.size_bytes => {
                    if recheck {
                        if let Some(up) = &mut self.uploads.current {
                            if received > up.received {
                                self.uploads.stalled = 0;
                            }
                            up.received = received;
                        }
                        self.uploads.recheck = false;
                    } else {
                        self.uploads.ready.push_back(Upload {
                            content,
                            received,
                            checked: false,
                        });
                    }
                }
                _ => {
                    self.report.attachments_waiting += 1;
                    if recheck {
                        self.uploads.current = None;
                    }
                }
            }
        }
        self.upload_progress();
        Ok(())
    }

    fn handle_chunk(
        &mut self,
        offset: u64,
        len: usize,
        started: Instant,
        response: &HttpResponse,
    ) -> Result<()> {
        if response.status == 200 {
            let answer: ChunkResponse = decode(response)?;
            let Some(up) = self.uploads.current.as_mut() else {
                return Ok(());
            };
            if answer.received > offset {
                self.uploads.stalled = 0;
                // Follow the link: about CHUNK_SECONDS of what this chunk achieved.
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                let rate = (answer.received - offset) as f64 / secs;
                let max = self.config.max_chunk_bytes.max(MIN_CHUNK_BYTES);
                self.uploads.chunk = ((rate * CHUNK_SECONDS) as usize).clamp(MIN_CHUNK_BYTES, max);
            }
            up.received = answer.received;
            if answer.complete {
                let content = up.content.clone();
                self.uploads.current = None;
                self.content_held(&content)?;
                self.report.attachments_uploaded += 1;
            } else if answer.received < offset + len as u64 {
                // The server kept less than was sent (a cut or a refused frame on the way).
                self.report.attachment_interruptions += 1;
            }
            self.upload_progress();
            return Ok(());
        }
        match server_error(response) {
            // Not this device's to send (its visit unknown here, or out of its areas): later.
            Error::Server {
                status: 403 | 404, ..
            } => {
                self.report.attachments_waiting += 1;
                self.uploads.current = None;
                Ok(())
            }
            // The whole content arrived and did not match its hash; the server discarded it.
            // The same bytes would end the same way (and a content sent in several chunks would
            // make progress each round, never stall): no second try in this sync.
            Error::Server { code, .. } if code == "hash_mismatch" => self.whole_content_refused(),
            // A refused chunk (offset, a bad frame), a server failure or a rate limit: ask how
            // far it got, then go on from there.
            e => self.chunk_interrupted(&e.to_string()),
        }
    }

    fn whole_content_refused(&mut self) -> Result<()> {
        let Some(up) = self.uploads.current.take() else {
            return Ok(());
        };
        self.report.attachment_interruptions += 1;
        if self.collector.content_intact(&up.content.content_hash)? {
            // Intact here, so altered on the way past every frame's checksum: the next sync
            // sends it again.
            self.report.attachments_waiting += 1;
        } else {
            self.content_damaged(&up.content.content_hash);
        }
        self.upload_progress();
        Ok(())
    }

    /// Its stored bytes no longer match their name (storage gone bad): kept, reported, not sent.
    fn content_damaged(&mut self, content_hash: &str) {
        // Ids only: the content itself is personal data.
        tracing::error!(content = %content_hash, "a stored attachment no longer matches its hash; kept, not sent");
        self.report.attachments_damaged += 1;
    }

    fn measure_clock(&mut self, server_time: &str) {
        let (Some(sent), Ok(server)) = (self.sent_at, DateTime::parse_from_rfc3339(server_time))
        else {
            return;
        };
        let received = self.collector.now();
        let midpoint = sent + (received - sent) / 2;
        let offset = (server.with_timezone(&Utc) - midpoint).num_milliseconds();
        self.report.clock_offset_ms = Some(offset);
        self.report.clock_skewed = offset.abs() > CLOCK_SKEW_LIMIT_MS;
    }

    /// Applies the response to the request last returned by [`Self::next_request`].
    pub fn handle_response(&mut self, response: &HttpResponse) -> Result<()> {
        self.report.bytes_received += response.body.len() as u64;
        let flight = self
            .in_flight
            .take()
            .ok_or_else(|| Error::InvalidInput("a response without a request".into()))?;
        match flight {
            InFlight::Catalog(audit_sent) => {
                let catalog: CatalogResponse = decode(response)?;
                self.measure_clock(&catalog.server_time);
                if let (Some(last), Some(ack)) = (audit_sent, &catalog.audit) {
                    self.apply_audit_ack(ack, last)?;
                }
                for form in &catalog.forms {
                    self.collector.install_form(&form.to_string())?;
                }
                for list in &catalog.code_lists {
                    self.collector.install_code_list(list)?;
                }
                let waiting = self.collector.outbox_len()?;
                self.enter(SyncPhase::Push, waiting);
            }
            InFlight::Push(n) => {
                let pushed: PushResponse = decode(response)?;
                self.measure_clock(&pushed.server_time);
                let (accepted, conflicts, rejected) = self.collector.apply_acks(&pushed.acks)?;
                self.report.pushed += n;
                self.report.accepted += accepted;
                self.report.conflicts += conflicts;
                self.report.rejected += rejected;
                self.phase_done += n;
                if pushed.acks.is_empty() {
                    return Err(Error::Server {
                        status: 200,
                        code: "no_acks".into(),
                        message: "the server acknowledged nothing".into(),
                    });
                }
            }
            InFlight::Pull => {
                let pulled: PullResponse = decode(response)?;
                self.collector.apply_pull(&pulled)?;
                let n = pulled.entries.len() as u64;
                self.report.pulled += n;
                self.phase_done += n;
                self.phase_total = self.phase_done
                    + if pulled.more {
                        u64::from(self.config.pull_limit)
                    } else {
                        0
                    };
                if !pulled.more {
                    let local = self.collector.local_checksums()?;
                    self.to_repair = pulled
                        .checksums
                        .iter()
                        .filter(|(village, sum)| local.get(*village).copied().unwrap_or(0) != **sum)
                        .map(|(village, _)| village.clone())
                        .collect();
                    let n = self.to_repair.len() as u64;
                    self.enter(SyncPhase::Verify, n);
                }
            }
            InFlight::Audit(last) => {
                let uploaded: AuditUploadResponse = decode(response)?;
                let before = self.report.audit_uploaded;
                self.apply_audit_ack(&uploaded, last)?;
                self.phase_done += self.report.audit_uploaded - before;
                if !self.report.audit_chain_broken && self.report.audit_uploaded == before {
                    return Err(Error::Server {
                        status: 200,
                        code: "no_audit_progress".into(),
                        message: "the server acknowledged no audit entry".into(),
                    });
                }
            }
            InFlight::ContentStatus { contents, recheck } => {
                self.handle_content_status(contents, recheck, response)?;
            }
            InFlight::Chunk {
                offset,
                len,
                started,
            } => {
                self.handle_chunk(offset, len, started, response)?;
            }
            InFlight::Snapshot(village) => {
                let snapshot: SnapshotResponse = decode(response)?;
                self.collector.apply_snapshot(&village, &snapshot)?;
                tracing::info!(village = %village, "village repaired from a snapshot after a checksum mismatch");
                self.to_repair.retain(|v| *v != village);
                self.report.repaired_villages.push(village);
                self.phase_done += 1;
            }
        }
        Ok(())
    }

    /// Marks what the server acknowledged of an audit batch ending at `last`.
    fn apply_audit_ack(&mut self, ack: &AuditUploadResponse, last: u64) -> Result<()> {
        let first_pending = self
            .collector
            .pending_audit(1)?
            .first()
            .map_or(u64::MAX, |e| e.seq);
        let through = ack.accepted_through.min(last);
        if through >= first_pending {
            self.collector.audit_uploaded_through(through)?;
            self.report.audit_uploaded += through + 1 - first_pending;
        }
        if ack.chain_break.is_some() {
            tracing::warn!("the server refused this device's audit chain");
            self.report.audit_chain_broken = true;
        }
        Ok(())
    }

    /// Records the sync's end and returns its report.
    pub fn finish(self) -> Result<SyncReport> {
        let r = &self.report;
        self.collector.audit_now(
            zoufang_protocol::audit::AuditAction::Sync,
            None,
            serde_json::json!({"pushed": r.pushed, "pulled": r.pulled, "conflicts": r.conflicts,
                               "rejected": r.rejected, "audit_uploaded": r.audit_uploaded,
                               "attachments_uploaded": r.attachments_uploaded}),
        )?;
        let now = timestamp(self.collector.now());
        let hlc = self.collector.hlc.lock().to_string();
        let offset = self.report.clock_offset_ms;
        self.collector.update_settings(|s| {
            s.last_sync_at = Some(now);
            s.hlc = Some(hlc);
            if offset.is_some() {
                s.clock_offset_ms = offset;
            }
        })?;
        Ok(self.report)
    }
}

/// Lets another thread stop a sync between two requests.
#[derive(Debug, Default)]
pub struct CancelFlag(AtomicBool);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Sends with retries: no answer, 5xx and 429 are retried with backoff; other answers return.
pub(crate) fn send_with_retry(
    transport: &dyn Transport,
    request: &HttpRequest,
    policy: &RetryPolicy,
    cancel: Option<&CancelFlag>,
) -> Result<HttpResponse> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let failure = match transport.send(request) {
            Ok(r) if r.status >= 500 || r.status == 429 => server_error(&r).to_string(),
            Ok(r) => return Ok(r),
            Err(e) => e.message,
        };
        if attempt >= policy.attempts.max(1) {
            return Err(Error::Transport(failure));
        }
        if cancel.is_some_and(CancelFlag::is_cancelled) {
            return Err(Error::Cancelled);
        }
        tracing::debug!(attempt, "request failed; retrying after a pause");
        std::thread::sleep(policy.delay(attempt));
    }
}

impl Collector {
    /// Enrols this device with a server using a one-time enrolment token from an
    /// administrator, and signs its user in.
    pub fn enroll(
        &self,
        transport: &dyn Transport,
        enrollment_token: &str,
        device_name: &str,
    ) -> Result<UserInfo> {
        let body = encode(&EnrollRequest {
            protocol: PROTOCOL_VERSION,
            enrollment_token: enrollment_token.trim().to_owned(),
            device_name: device_name.to_owned(),
        })?;
        let response = send_with_retry(
            transport,
            &request("POST", "/v1/enroll", None, body),
            &RetryPolicy::default(),
            None,
        )?;
        let enrolled: EnrollResponse = decode(&response)?;
        let user = enrolled.user.clone();
        self.update_settings(|s| {
            s.device_id = Some(enrolled.device_id);
            s.device_token = Some(enrolled.device_token);
            s.user = Some(enrolled.user);
            s.cursors.clear();
        })?;
        self.sign_in(&user.id)?;
        Ok(user)
    }

    /// Syncs with the server: safe to interrupt at any point and to run while the user keeps
    /// editing. Progress goes to `listener`; `cancel` stops it between requests.
    pub fn sync(
        &self,
        transport: &dyn Transport,
        listener: Option<&dyn SyncListener>,
        cancel: Option<&CancelFlag>,
    ) -> Result<SyncReport> {
        self.sync_with(transport, SyncConfig::default(), listener, cancel)
    }

    pub fn sync_with(
        &self,
        transport: &dyn Transport,
        config: SyncConfig,
        listener: Option<&dyn SyncListener>,
        cancel: Option<&CancelFlag>,
    ) -> Result<SyncReport> {
        let mut engine = SyncEngine::new(self, config)?;
        while let Some(req) = engine.next_request()? {
            if cancel.is_some_and(CancelFlag::is_cancelled) {
                return Err(Error::Cancelled);
            }
            let response = if engine.chunk_in_flight() {
                // Sent once: after a failure the engine asks how far the server got instead.
                match transport.send(&req) {
                    Ok(r) => r,
                    Err(e) => {
                        engine.handle_interruption(&e.message)?;
                        if let Some(pause) = engine.pause() {
                            std::thread::sleep(pause);
                        }
                        continue;
                    }
                }
            } else {
                send_with_retry(transport, &req, &config.retry, cancel)?
            };
            // Only the server's own order, never a bare 410 from a proxy on the way.
            let wipe_ordered = response.status == 410
                && matches!(server_error(&response), Error::Server { code, .. } if code == "device_wiped");
            if wipe_ordered {
                drop(engine);
                return self.wipe_on_request(transport, &config.retry);
            }
            engine.handle_response(&response)?;
            if let Some(l) = listener {
                l.on_progress(engine.progress());
            }
            if let Some(pause) = engine.pause() {
                std::thread::sleep(pause);
            }
        }
        if let Some(l) = listener {
            l.on_progress(engine.progress());
        }
        engine.finish()
    }
}
