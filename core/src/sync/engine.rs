//! The sync engine: a sans-I/O state machine. It decides the next request and applies each
//! response to the store; it never touches the network, so it is tested with any transport
//! (a real server, a faulty proxy, a function). [`Collector::sync`] drives it over a
//! [`Transport`] with retries.
//!
//! One sync: catalog (new forms and code lists) → push the outbox in batches → pull the feed
//! in batches per area → compare per-village checksums and repair any diverged village from a
//! snapshot. Each response is applied in its own transaction, so a cut link loses at most the
//! batch in flight, and the next sync resumes from there.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::protocol::{
    self, AuditBatch, AuditUploadRequest, AuditUploadResponse, CatalogRequest, CatalogResponse,
    EnrollRequest, EnrollResponse, ErrorBody, PROTOCOL_VERSION, PullRequest, PullResponse,
    PushRequest, PushResponse, SnapshotRequest, SnapshotResponse, UserInfo,
};
use super::transport::{HttpRequest, HttpResponse, RetryPolicy, Transport};
use crate::collector::{Collector, timestamp};
use crate::error::{Error, Result};

/// Audit entries per upload request: about 6 KB compressed, like a push batch, so that a request
/// fits between two cuts of a weak link.
pub(crate) const AUDIT_BATCH: usize = 100;

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
}

/// Tuning of one sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncConfig {
    /// Changes per push request: small enough that a cut re-sends little on a 2G link.
    pub push_batch: usize,
    /// Feed entries per pull request.
    pub pull_limit: u32,
    pub retry: RetryPolicy,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            push_batch: 100,
            pull_limit: 500,
            retry: RetryPolicy::default(),
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
    protocol::encode(message).map_err(|e| Error::Storage(format!("cannot encode a message: {e}")))
}

/// A non-2xx response as an error with the server's code.
pub(crate) fn server_error(response: &HttpResponse) -> Error {
    match protocol::decode::<ErrorBody>(&response.body) {
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
    protocol::decode(&response.body).map_err(|e| Error::Server {
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
                        self.enter(SyncPhase::Done, 0);
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
                SyncPhase::Done => return Ok(None),
            };
            self.in_flight = Some(flight);
            self.sent_at = Some(self.collector.now());
            self.report.round_trips += 1;
            self.report.bytes_sent += body.len() as u64;
            return Ok(Some(request("POST", path, Some(&self.token), body)));
        }
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
            crate::audit::AuditAction::Sync,
            None,
            serde_json::json!({"pushed": r.pushed, "pulled": r.pulled, "conflicts": r.conflicts,
                               "rejected": r.rejected, "audit_uploaded": r.audit_uploaded}),
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
            let response = send_with_retry(transport, &req, &config.retry, cancel)?;
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
        }
        if let Some(l) = listener {
            l.on_progress(engine.progress());
        }
        engine.finish()
    }
}
