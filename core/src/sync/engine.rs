//! The sync engine: a sans-I/O state machine. Each step takes a value — the time
//! ([`Moment`]), the server's answer, or the news that none came — and gives the next request
//! to send. It reads and changes the device only through [`LocalState`] and never touches the
//! network, a clock or a database itself, so it is tested against scripted server answers by
//! the thousand (`core/tests/engine_script.rs`) as well as against a real server. The driver
//! (`driver.rs`, [`Collector::sync`](crate::Collector::sync)) does the I/O.
//!
//! One sync: catalog (new forms and code lists, and the first audit batch) → push the outbox in
//! batches → pull the feed in batches per area → compare per-village checksums and repair any
//! diverged village from a snapshot → upload the rest of the audit trail → upload attachment
//! contents. Enrolment is the machine's first state when the device has no credentials yet,
//! downloading one attachment content a machine of its own ([`SyncEngine::download`]); a wipe
//! order from the server, in any state, leads to [`SyncPhase::Wipe`]. Each answer is
//! applied in its own transaction, so a cut link loses at most the batch in flight, and the
//! next sync resumes from there.

use std::collections::VecDeque;
use std::io::Read;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::adapt::{Batch, LinkWatch};
use super::download::Download;
use super::local::LocalState;
use super::push::Unanswered;
use super::transport::{HttpRequest, HttpResponse, RetryPolicy};
use super::wire::{decode, encode, is_wipe_order, request, server_error};
use crate::error::{Error, Result};
use zoufang_protocol::messages::{
    CatalogRequest, CatalogResponse, ContentRef, EnrollRequest, EnrollResponse, PROTOCOL_VERSION,
    Predecessor, SnapshotRequest, SnapshotResponse, UserInfo,
};
use zoufang_protocol::stream::CONTENT_TYPE as STREAM_TYPE;

/// The time, as the engine is told it: the wall clock (for the server-offset measurement and
/// the device time a push carries) and a monotonic reading since the sync began (for rates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    pub wall: DateTime<Utc>,
    pub elapsed: Duration,
}

/// Audit entries per upload request: about 6 KB compressed, like a push batch, so that a request
/// fits between two cuts of a weak link.
pub(crate) const AUDIT_BATCH: usize = 100;

/// Contents asked about per status request.
pub(super) const STATUS_BATCH: usize = 64;
/// Bounds of an attachment chunk. The size follows the link: about [`CHUNK_SECONDS`] of what the
/// last chunk achieved (32 KB on 2G, 1 MB on the township's Wi-Fi), halved at each
/// interruption. A cut costs far less than a chunk anyway (the server keeps every whole frame
/// that arrived), so the size mostly sets how often the device hears how far it got, and how
/// many fsyncs the server spends.
pub const MIN_CHUNK_BYTES: usize = 32 * 1024;
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
pub(super) const FIRST_CHUNK_BYTES: usize = 64 * 1024;
pub(super) const CHUNK_SECONDS: f64 = 2.0;

/// A device clock further than this from the server's is reported as skewed.
pub const CLOCK_SKEW_LIMIT_MS: i64 = 5 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncPhase {
    /// Exchanging a one-time enrolment token for the device's credentials.
    Enroll,
    Catalog,
    Push,
    Pull,
    Verify,
    /// Uploading the audit trail.
    Audit,
    /// Uploading photos and signatures, after all the data (`done`/`total` count bytes).
    Attachments,
    /// Downloading one attachment content someone opened (`done` counts its bytes).
    Download,
    /// The server ordered this device wiped: what is left of the audit trail goes up (best
    /// effort), then the driver destroys the store.
    Wipe,
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
    /// Members sent whose resident ID is already registered elsewhere in the province: the
    /// township checks (the phone is told nothing more).
    pub possible_duplicates: u64,
    /// Changes for a village the user no longer covers, handed to its reviewers.
    pub handed_over: u64,
    /// Households removed from the phone because the user no longer covers their village.
    pub households_left: u64,
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
pub(super) enum InFlight {
    Enroll,
    /// With the last audit entry it carries, if any.
    Catalog(Option<u64>),
    /// The changes it carries, and the last audit entry riding with them; a streamed push
    /// also names its changes, to ask what arrived if it is cut.
    Push {
        changes: u64,
        audit: Option<u64>,
        streamed: Option<Vec<u64>>,
    },
    /// Asking which changes of a cut streamed push arrived.
    Acks(Unanswered),
    Pull,
    Snapshot(String),
    /// With the last audit entry it carries (also while flushing the trail before a wipe).
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
        started: Duration,
    },
    Download,
}

impl InFlight {
    /// The request's kind, for logs (never what it carries).
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Self::Enroll => "enroll",
            Self::Catalog(_) => "catalog",
            Self::Push { .. } => "push",
            Self::Acks(_) => "push_acks",
            Self::Pull => "pull",
            Self::Snapshot(_) => "snapshot",
            Self::Audit(_) => "audit",
            Self::ContentStatus { .. } => "content_status",
            Self::Chunk { .. } => "chunk",
            Self::Download => "download",
        }
    }
}

/// One content being uploaded.
#[derive(Debug, Clone)]
pub(super) struct Upload {
    pub content: ContentRef,
    /// What the server confirmed it holds.
    pub received: u64,
    /// Its stored bytes were checked against its hash.
    pub checked: bool,
}

/// The attachment phase's state.
#[derive(Debug)]
pub(super) struct Uploads {
    /// Not yet asked about.
    pub unasked: VecDeque<ContentRef>,
    /// Asked about, to send from what the server holds.
    pub ready: VecDeque<Upload>,
    pub current: Option<Upload>,
    /// The current upload was interrupted: ask the server how far it got before sending more.
    pub recheck: bool,
    pub chunk: usize,
    /// Interruptions in a row that moved nothing.
    pub stalled: u32,
    /// Bytes of the contents finished this sync.
    pub finished_bytes: u64,
    /// The catalog's possession challenge, answered for each content asked about.
    pub nonce: Option<String>,
}

/// The sync state machine of one device.
pub struct SyncEngine<'a, L: LocalState + ?Sized> {
    pub(super) local: &'a L,
    /// `None` until enrolment gives them.
    credentials: Option<(String, String)>,
    enrolment: Option<EnrollRequest>,
    enrolled: Option<UserInfo>,
    pub(super) config: SyncConfig,
    phase: SyncPhase,
    pub(super) in_flight: Option<InFlight>,
    sent_at: Option<DateTime<Utc>>,
    pub(super) to_repair: Vec<String>,
    /// The last page is applied; the store is told once its answer is released.
    pub(super) pull_ended: bool,
    pub(super) uploads: Uploads,
    pub(super) phase_done: u64,
    pub(super) phase_total: u64,
    pub(super) report: SyncReport,
    pub(super) wiped: bool,
    pub(super) download: Option<Download>,
    /// The server computes audit hashes and takes entries on pushes (its catalog said so).
    pub(super) compact_audit: bool,
    /// Pending audit entries per waiting change when the push began: each push takes that
    /// share of the trail.
    pub(super) audit_per_change: f64,
    /// A streamed push was cut: what arrived of it is asked before anything else is sent.
    pub(super) unanswered: Option<Unanswered>,
    /// Changes of a cut streamed push taken as arrived (their answers were on the way): the
    /// next push names them instead of sending them again.
    pub(super) held: Vec<u64>,
    /// Batch sizes and interruptions: how the link behaves this sync.
    pub(super) link: LinkWatch,
    /// When the request in flight was sent, since the sync began.
    pub(super) sent_elapsed: Duration,
    /// The body bytes of the request in flight.
    pub(super) sent_bytes: usize,
}

impl<L: LocalState + ?Sized> std::fmt::Debug for SyncEngine<'_, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine")
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl<'a, L: LocalState + ?Sized> SyncEngine<'a, L> {
    fn with(local: &'a L, config: SyncConfig, phase: SyncPhase) -> Self {
        Self {
            local,
            credentials: None,
            enrolment: None,
            enrolled: None,
            config,
            phase,
            in_flight: None,
            sent_at: None,
            to_repair: Vec::new(),
            pull_ended: false,
            uploads: Uploads {
                unasked: VecDeque::new(),
                ready: VecDeque::new(),
                current: None,
                recheck: false,
                chunk: FIRST_CHUNK_BYTES.min(config.max_chunk_bytes.max(MIN_CHUNK_BYTES)),
                stalled: 0,
                finished_bytes: 0,
                nonce: None,
            },
            phase_done: 0,
            phase_total: 0,
            report: SyncReport::default(),
            wiped: false,
            download: None,
            compact_audit: false,
            audit_per_change: 0.0,
            unanswered: None,
            held: Vec::new(),
            link: LinkWatch::new(config.push_batch, config.pull_limit as usize, AUDIT_BATCH),
            sent_elapsed: Duration::ZERO,
            sent_bytes: 0,
        }
    }

    /// A sync of an enrolled device.
    pub fn new(local: &'a L, config: SyncConfig) -> Result<Self> {
        let credentials = local.credentials()?.ok_or(Error::NotEnrolled)?;
        let mut engine = Self::with(local, config, SyncPhase::Catalog);
        engine.credentials = Some(credentials);
        Ok(engine)
    }

    /// Enrolment: one exchange of a one-time token for the device's credentials, kept through
    /// [`LocalState::save_enrolment`]; the machine is done after it (the next sync starts
    /// from the catalog). A store enrolled before (its token expired after a season offline,
    /// say) names the device it was: the server enrols a successor that continues its outbox,
    /// audit chain and uploads.
    pub fn enrolment(local: &'a L, enrollment_token: &str, device_name: &str) -> Result<Self> {
        let predecessor = local
            .credentials()?
            .map(|(device_id, device_token)| Predecessor {
                device_id,
                device_token,
            });
        let mut engine = Self::with(local, SyncConfig::default(), SyncPhase::Enroll);
        engine.enrolment = Some(EnrollRequest {
            protocol: PROTOCOL_VERSION,
            enrollment_token: enrollment_token.trim().to_owned(),
            device_name: device_name.to_owned(),
            predecessor,
        });
        Ok(engine)
    }

    pub fn phase(&self) -> SyncPhase {
        self.phase
    }

    /// The transport hands an answer over while its request is still being sent
    /// ([`super::Transport::reads_while_sending`]): a streamed push's answers can then come
    /// back before a cut, if the server sends them as it applies the push.
    pub fn set_reads_while_sending(&mut self, yes: bool) {
        self.link.reads_while_sending = yes;
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

    /// The report so far.
    pub fn report(&self) -> &SyncReport {
        &self.report
    }

    /// Who enrolment signed in, once it has.
    pub fn enrolled(&self) -> Option<&UserInfo> {
        self.enrolled.as_ref()
    }

    /// The server ordered this device wiped, and the trail went up as far as it could: the
    /// driver now destroys the store.
    pub fn wiped(&self) -> bool {
        self.wiped
    }

    pub(super) fn enter(&mut self, phase: SyncPhase, total: u64) {
        self.phase = phase;
        self.phase_done = 0;
        self.phase_total = total;
    }

    fn token(&self) -> Option<&str> {
        self.credentials.as_ref().map(|(_, t)| t.as_str())
    }

    pub(super) fn device_id(&self) -> String {
        self.credentials
            .as_ref()
            .map(|(d, _)| d.clone())
            .unwrap_or_default()
    }

    /// The next request to send, or `None` when the machine is done.
    pub fn next_request(&mut self, now: Moment) -> Result<Option<HttpRequest>> {
        if std::mem::take(&mut self.pull_ended) {
            self.local.pull_finished()?;
        }
        loop {
            let (path, body, flight) = match self.phase {
                SyncPhase::Enroll => match &self.enrolment {
                    Some(e) => ("/v1/enroll", encode(e)?, InFlight::Enroll),
                    None => {
                        self.enter(SyncPhase::Done, 0);
                        continue;
                    }
                },
                SyncPhase::Catalog => self.catalog_request()?,
                SyncPhase::Push => match self.push_request(now)? {
                    Some(r) => r,
                    None => {
                        self.report.households_left += self.local.leave_former_areas()?;
                        self.enter(SyncPhase::Pull, 0);
                        continue;
                    }
                },
                SyncPhase::Pull => self.pull_request()?,
                SyncPhase::Verify => {
                    let Some(village) = self.to_repair.last().cloned() else {
                        let pending = self.local.pending_audit_count()?;
                        self.enter(SyncPhase::Audit, pending);
                        continue;
                    };
                    let body = encode(&SnapshotRequest {
                        protocol: PROTOCOL_VERSION,
                        village_code: village.clone(),
                    })?;
                    ("/v1/snapshot", body, InFlight::Snapshot(village))
                }
                SyncPhase::Audit | SyncPhase::Wipe => match self.audit_request()? {
                    Some(r) => r,
                    None if self.phase == SyncPhase::Wipe => {
                        self.wiped = true;
                        self.enter(SyncPhase::Done, 0);
                        continue;
                    }
                    None => {
                        let contents = self.local.uploadable_contents()?;
                        let total = contents.iter().map(|c| c.size_bytes).sum();
                        self.uploads.unasked = contents.into();
                        self.enter(SyncPhase::Attachments, total);
                        continue;
                    }
                },
                SyncPhase::Attachments => match self.next_upload_request(now)? {
                    Some(req) => return Ok(Some(req)),
                    None => {
                        self.enter(SyncPhase::Done, 0);
                        continue;
                    }
                },
                SyncPhase::Download => match self.download_request(now) {
                    Some(req) => return Ok(Some(req)),
                    None => {
                        self.enter(SyncPhase::Done, 0);
                        continue;
                    }
                },
                SyncPhase::Done => return Ok(None),
            };
            return Ok(Some(self.send("POST", path.to_owned(), body, flight, now)));
        }
    }

    fn catalog_request(&mut self) -> Result<(&'static str, Vec<u8>, InFlight)> {
        // Before the catalog says whether the server computes hashes: entries sent whole.
        let (audit, last) = self.audit_batch(AUDIT_BATCH, false)?;
        let body = encode(&CatalogRequest {
            protocol: PROTOCOL_VERSION,
            forms: self.local.installed_forms()?,
            code_lists: self.local.code_list_versions()?,
            audit,
        })?;
        Ok(("/v1/catalog", body, InFlight::Catalog(last)))
    }

    pub(super) fn send(
        &mut self,
        method: &str,
        path: String,
        body: Vec<u8>,
        flight: InFlight,
        now: Moment,
    ) -> HttpRequest {
        let streamed = matches!(
            flight,
            InFlight::Push {
                streamed: Some(_),
                ..
            }
        );
        self.in_flight = Some(flight);
        self.sent_at = Some(now.wall);
        self.sent_elapsed = now.elapsed;
        self.sent_bytes = body.len();
        self.report.round_trips += 1;
        self.report.bytes_sent += body.len() as u64;
        let token = self.token().map(str::to_owned);
        let mut req = request(method, &path, token.as_deref(), body);
        if streamed {
            // One zstd stream over messages: its own media type, no content coding.
            req.headers
                .retain(|(k, _)| k != "Content-Encoding" && k != "Content-Type");
            req.headers
                .push(("Content-Type".into(), STREAM_TYPE.into()));
            if self.link.duplex {
                // Its answer as a stream too: each message's acknowledgements as it is applied.
                req.headers.push(("Accept".into(), STREAM_TYPE.into()));
            }
        }
        req
    }

    /// Send the request in flight once, never through retries: an attachment chunk (after an
    /// interruption the engine asks how far the server got instead of sending it blindly).
    pub fn send_once(&self) -> bool {
        matches!(self.in_flight, Some(InFlight::Chunk { .. }))
    }

    /// The request in flight got no usable answer (the link dropped or stalled, the server
    /// failed after retries). A chunk is resumed from what the server confirms; the audit
    /// flush before a wipe ends; anything else is built again, smaller if it was too big for
    /// the link (`adapt.rs`), and the sync fails only when requests keep failing with no answer
    /// in between. `now` tells how long the request had been out.
    pub fn handle_interruption(&mut self, reason: &str, now: Moment) -> Result<()> {
        self.handle_cut(reason, None, now)
    }

    /// As [`Self::handle_interruption`], with what of a cut answer arrived: the whole pages of a
    /// streamed pull are applied, and count as progress.
    pub fn handle_cut(
        &mut self,
        reason: &str,
        partial: Option<&HttpResponse>,
        now: Moment,
    ) -> Result<()> {
        if let Some(InFlight::Push {
            streamed: Some(seqs),
            audit,
            ..
        }) = &self.in_flight
        {
            // No answer began: sent again or asked about (`push.rs`); the server applied every
            // whole message that arrived.
            let (seqs, audit) = (seqs.clone(), *audit);
            return self.push_stream_cut(&seqs, false, audit, reason, now);
        }
        if let (Some(InFlight::Pull), Some(partial)) = (&self.in_flight, partial) {
            self.report.bytes_received += partial.body.len() as u64;
            if partial.status == 200 {
                let entries = self.handle_pull(partial, false)?;
                if self.pull_cut_kept(entries, now) {
                    return Ok(());
                }
            }
        }
        match self.in_flight.take() {
            Some(InFlight::Chunk { .. }) => self.chunk_interrupted(reason),
            _ if self.phase == SyncPhase::Wipe => {
                self.wiped = true;
                self.enter(SyncPhase::Done, 0);
                Ok(())
            }
            Some(flight) => {
                // A question about contents left the queue when it was sent: without an
                // answer they go back, or the sync would end with their uploads not begun.
                if let InFlight::ContentStatus {
                    contents,
                    recheck: false,
                } = &flight
                {
                    self.status_unanswered(contents.clone());
                }
                self.request_interrupted(&flight, reason, now)
            }
            None => Err(Error::InvalidInput(
                "an interruption without a request".into(),
            )),
        }
    }

    /// How long to wait before the next request: only after interruptions that moved nothing
    /// twice in a row (one cut is the link's normal life; resuming at once costs nothing).
    pub fn pause(&self) -> Option<Duration> {
        let chunks =
            (self.uploads.stalled >= 2).then(|| self.config.retry.delay(self.uploads.stalled - 1));
        chunks.max(self.link_pause())
    }

    pub(super) fn measure_clock(&mut self, server_time: &str, now: Moment) {
        let (Some(sent), Ok(server)) = (self.sent_at, DateTime::parse_from_rfc3339(server_time))
        else {
            return;
        };
        let midpoint = sent + (now.wall - sent) / 2;
        let offset = (server.with_timezone(&Utc) - midpoint).num_milliseconds();
        self.report.clock_offset_ms = Some(offset);
        self.report.clock_skewed = offset.abs() > CLOCK_SKEW_LIMIT_MS;
    }

    /// Applies the answer to the request last returned by [`Self::next_request`].
    pub fn handle_response(&mut self, response: &HttpResponse, now: Moment) -> Result<()> {
        self.report.bytes_received += response.body.len() as u64;
        let flight = self
            .in_flight
            .take()
            .ok_or_else(|| Error::InvalidInput("a response without a request".into()))?;
        if self.phase == SyncPhase::Wipe {
            return self.handle_wipe_flush(&flight, response);
        }
        let took = now.elapsed.saturating_sub(self.sent_elapsed);
        if is_wipe_order(response) && self.credentials.is_some() {
            self.local.record_wipe_order()?;
            let pending = self.local.pending_audit_count()?;
            self.report.audit_chain_broken = false;
            self.enter(SyncPhase::Wipe, pending);
            return Ok(());
        }
        let mut batch = None;
        let kind = flight.kind();
        match flight {
            InFlight::Enroll => {
                let enrolled: EnrollResponse = decode(response)?;
                self.local.save_enrolment(&enrolled)?;
                self.credentials = Some((enrolled.device_id, enrolled.device_token));
                self.enrolled = Some(enrolled.user);
                self.enter(SyncPhase::Done, 0);
            }
            InFlight::Catalog(audit_sent) => {
                let catalog: CatalogResponse = decode(response)?;
                self.measure_clock(&catalog.server_time, now);
                if let (Some(last), Some(ack)) = (audit_sent, &catalog.audit) {
                    self.apply_audit_ack(ack, last)?;
                }
                self.local.install_catalog(&catalog)?;
                self.uploads.nonce = catalog.possession_nonce;
                if let Some(expires) = &catalog.token_expires_at {
                    self.local.save_token_expiry(expires)?;
                }
                let waiting = self.local.outbox_len()?;
                self.compact_audit = catalog.compact_audit;
                self.link.streams = catalog.streams;
                self.link.duplex =
                    catalog.streams && catalog.answers_as_applied && self.link.reads_while_sending;
                if self.compact_audit && waiting > 0 {
                    let trail = self.local.pending_audit_count()?;
                    self.audit_per_change = trail as f64 / waiting as f64;
                }
                self.enter(SyncPhase::Push, waiting);
            }
            InFlight::Push { changes, audit, .. } => {
                self.handle_push(changes, audit, response, now)?;
                let items = usize::try_from(changes).unwrap_or(usize::MAX);
                batch = Some((Batch::Push, items));
            }
            InFlight::Acks(asked) => {
                let in_a_row = self.link.in_a_row;
                let arrived = self.handle_acks(&asked, response)?;
                self.link.answered(
                    None,
                    (self.sent_bytes + response.body.len(), took),
                    now.elapsed,
                );
                if arrived == 0 {
                    // Nothing of the cut push had arrived: the cut counts as one with no answer.
                    self.link.in_a_row = in_a_row;
                    self.push_cut_for_nothing(&asked, "the link dropped")?;
                }
                return Ok(());
            }
            InFlight::Pull => {
                batch = Some((Batch::Pull, self.handle_pull(response, true)?));
            }
            InFlight::Audit(last) => {
                batch = Some((Batch::Audit, self.handle_audit(last, response)?));
            }
            InFlight::ContentStatus { contents, recheck } => {
                self.handle_content_status(contents, recheck, response)?;
            }
            InFlight::Chunk {
                offset,
                len,
                started,
            } => self.handle_chunk(offset, len, now.elapsed.saturating_sub(started), response)?,
            InFlight::Download => self.handle_download(response)?,
            InFlight::Snapshot(village) => {
                let snapshot: SnapshotResponse = decode(response)?;
                self.local.apply_snapshot(&village, &snapshot)?;
                tracing::info!(village = %village, "village repaired from a snapshot after a checksum mismatch");
                self.to_repair.retain(|v| *v != village);
                self.report.repaired_villages.push(village);
                self.phase_done += 1;
            }
        }
        let bytes = self.sent_bytes + response.body.len();
        tracing::debug!(
            request = kind,
            sent = self.sent_bytes,
            received = response.body.len(),
            took_ms = took.as_millis() as u64,
            "answered"
        );
        self.link.answered(batch, (bytes, took), now.elapsed);
        Ok(())
    }

    /// A streamed pull's answer read to its end (`bytes` of body): the link's model learns
    /// from it as from any answer.
    pub(super) fn answered_pull(
        &mut self,
        bytes: usize,
        entries: usize,
        now: Moment,
    ) -> Result<()> {
        self.report.bytes_received += bytes as u64;
        self.in_flight
            .take()
            .ok_or_else(|| Error::InvalidInput("a response without a request".into()))?;
        let took = now.elapsed.saturating_sub(self.sent_elapsed);
        let all = (self.sent_bytes + bytes, took);
        self.link
            .answered(Some((Batch::Pull, entries)), all, now.elapsed);
        Ok(())
    }

    /// The request in flight is a streamed pull or push: its answer is best read as it arrives
    /// ([`Self::handle_stream`]).
    pub fn receives_stream(&self) -> bool {
        self.link.streams
            && matches!(
                self.in_flight,
                Some(
                    InFlight::Pull
                        | InFlight::Push {
                            streamed: Some(_),
                            ..
                        }
                )
            )
    }

    /// The answer to a streamed request as it arrives (`Transport::send_streaming`): a pull's
    /// pages or a push's acknowledgements are applied while the rest is on its way; a body cut
    /// by the link keeps what came whole. `now` is read as the answer goes.
    pub fn handle_stream(
        &mut self,
        status: u16,
        body: &mut dyn Read,
        now: &dyn Fn() -> Moment,
    ) -> Result<()> {
        if status != 200 {
            // An error's text is short; a cut inside it is still that status.
            let mut text = Vec::new();
            let _ = body.take(64 * 1024).read_to_end(&mut text);
            let response = HttpResponse { status, body: text };
            if status >= 500 || status == 429 {
                // A busy server: tried again, as the driver retries any other request.
                let reason = server_error(&response).to_string();
                return self.handle_interruption(&reason, now());
            }
            return self.handle_response(&response, now());
        }
        match &self.in_flight {
            Some(InFlight::Push { .. }) => self.handle_push_stream(body, now),
            _ => self.handle_pull_stream(body, now()),
        }
    }

    /// Records the sync's end and returns its report.
    pub fn finish(self) -> Result<SyncReport> {
        self.local.record_sync(&self.report)?;
        let r = &self.report;
        // Counts only: what a sync did, for whoever reads the app's or the desk tool's log.
        tracing::info!(
            pushed = r.pushed,
            accepted = r.accepted,
            conflicts = r.conflicts,
            rejected = r.rejected,
            pulled = r.pulled,
            round_trips = r.round_trips,
            bytes_sent = r.bytes_sent,
            attachments_uploaded = r.attachments_uploaded,
            attachments_waiting = r.attachments_waiting,
            "sync finished"
        );
        Ok(self.report)
    }
}
