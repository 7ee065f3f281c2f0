//! The sync engine against scripted server answers, thousands of schedules a run: no network,
//! no database, no clock. The device is an in-memory [`LocalState`]; the server is a small
//! model of the protocol (deduplication by device and number, a feed per village, checksums,
//! the audit chain, resumable contents). A schedule decides, request by request, whether the
//! link is cut before the server sees it, the answer is lost after the server applied it, a
//! chunk arrives only in part, acks come back twice or reordered, colleagues' edits conflict,
//! a checksum diverges, and whether the server orders a wipe. Between syncs the coordinator
//! keeps working. After the faults stop, syncs run on a clean link.
//!
//! What must hold: an outbox entry leaves the device only when a delivered ack named it; every
//! sync ends within a bound of requests; no chunk is ever sent at an offset the server does
//! not expect (never blindly after an interruption); and once the link is clean the two sides
//! agree exactly — every change applied once, the whole audit chain on the server in order, every
//! feed entry applied once in order, every checksum equal, every content whole. A wipe order
//! ends the machine after the trail went up, with nothing else sent. Cases: 1,500 by default
//! (`PROPTEST_CASES` overrides).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use std::io::Read as _;
use zoufang_core::protocol::audit::{self, AuditAction, AuditEntry, HashAlgorithm};
use zoufang_core::protocol::frames::FrameReader;
use zoufang_core::protocol::messages::{self as m, Ack, ChangeOp, ContentRef, Entity, Outcome};
use zoufang_core::protocol::stream::{CONTENT_TYPE as STREAM_TYPE, decode_stream, encode_stream};
use zoufang_core::sync::{
    HttpRequest, HttpResponse, LocalState, Moment, SyncConfig, SyncEngine, SyncReport,
};
use zoufang_core::{Error, Result};

const VILLAGES: [&str; 2] = ["513431104201", "513431104202"];
const MAX_REQUESTS_PER_SYNC: usize = 2_000;

// ----- the device ----------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Device {
    outbox: BTreeMap<u64, m::Change>,
    next_seq: u64,
    /// Entries that left the outbox, by the ack that removed them.
    removed: BTreeSet<u64>,
    /// Outbox entries whose visit's contents may go once acknowledged.
    content_owner: BTreeMap<String, u64>,
    contents: BTreeMap<String, Vec<u8>>,
    uploaded: BTreeSet<String>,
    acked: BTreeSet<u64>,
    audit: Vec<AuditEntry>,
    audit_uploaded_through: u64,
    cursors: BTreeMap<String, u64>,
    applied_feed: Vec<u64>,
    checksums: BTreeMap<String, u64>,
    conflicts: BTreeSet<String>,
    wipe_recorded: bool,
}

impl Device {
    fn log(&mut self, action: AuditAction) {
        let last = self.audit.last().map(|e| (e.seq, e.hash.clone()));
        let e = audit::next_entry(
            HashAlgorithm::Sha256,
            last.as_ref().map(|(s, h)| (*s, h.as_str())),
            "2026-12-01T08:00:00.000Z".into(),
            "coordinator-1".into(),
            action,
            None,
            json!({}),
        );
        self.audit.push(e);
    }

    /// The coordinator edits a field, or completes a visit with a photo of `photo` bytes.
    fn work(&mut self, field: u8, photo: Option<usize>) {
        self.next_seq += 1;
        let seq = self.next_seq;
        let op = match photo {
            None => ChangeOp::SetField {
                entity: Entity::Household,
                id: format!("h-{}", field % 4),
                field: format!("f{}", field % 3),
                value: json!(seq),
                base: 0,
                resolves: None,
                after: None,
            },
            Some(size) => {
                let bytes: Vec<u8> = (0..size).map(|i| (i as u64 * 31 + seq) as u8).collect();
                let hash = HashAlgorithm::Sha256.digest(&bytes);
                self.content_owner.insert(hash.clone(), seq);
                self.contents.insert(hash, bytes);
                ChangeOp::SetVisitStatus {
                    id: format!("v-{seq}"),
                    status: "signed".into(),
                    reason: None,
                    at: "2026-12-01T08:00:00.000Z".into(),
                }
            }
        };
        self.outbox.insert(
            seq,
            m::Change {
                seq,
                hlc: format!("{seq:013}-0000"),
                device_time: "2026-12-01T08:00:00.000Z".into(),
                op,
            },
        );
        self.log(AuditAction::Edit);
    }
}

#[derive(Debug)]
struct Local(RefCell<Device>);

/// The possession challenge the scripted server's catalog issues.
const SCRIPT_NONCE: &str = "1767225600.0123456789abcdef0123456789abcdef";

impl LocalState for Local {
    fn credentials(&self) -> Result<Option<(String, String)>> {
        Ok(Some(("device-1".into(), "token-1".into())))
    }
    fn save_enrolment(&self, _: &m::EnrollResponse) -> Result<()> {
        Ok(())
    }
    fn save_token_expiry(&self, _: &str) -> Result<()> {
        Ok(())
    }
    fn installed_forms(&self) -> Result<Vec<(String, u32)>> {
        Ok(vec![("household_visit".into(), 1)])
    }
    fn code_list_versions(&self) -> Result<BTreeMap<String, u32>> {
        Ok(BTreeMap::new())
    }
    fn install_catalog(&self, _: &m::CatalogResponse) -> Result<()> {
        Ok(())
    }
    fn outbox_batch(&self, limit: usize) -> Result<Vec<m::Change>> {
        Ok(self
            .0
            .borrow()
            .outbox
            .values()
            .take(limit)
            .cloned()
            .collect())
    }
    fn outbox_len(&self) -> Result<u64> {
        Ok(self.0.borrow().outbox.len() as u64)
    }
    fn apply_acks(&self, acks: &[Ack]) -> Result<(u64, u64, u64)> {
        let mut d = self.0.borrow_mut();
        let mut counts = (0, 0, 0);
        for ack in acks {
            if d.outbox.remove(&ack.seq).is_none() {
                continue;
            }
            d.removed.insert(ack.seq);
            d.acked.insert(ack.seq);
            match ack.outcome {
                Outcome::Conflict => {
                    counts.1 += 1;
                    if let Some(c) = &ack.conflict {
                        d.conflicts.insert(c.id.clone());
                    }
                }
                Outcome::Rejected => counts.2 += 1,
                _ => counts.0 += 1,
            }
        }
        Ok(counts)
    }
    fn cursors(&self) -> Result<BTreeMap<String, u64>> {
        Ok(self.0.borrow().cursors.clone())
    }
    fn apply_pull(&self, pulled: &m::PullResponse) -> Result<()> {
        let mut d = self.0.borrow_mut();
        for e in &pulled.entries {
            if let m::FeedItem::Field { value, .. } = &e.item {
                let add = value.as_u64().unwrap_or(0);
                let sum = d.checksums.entry(e.village_code.clone()).or_default();
                *sum = sum.wrapping_add(add);
            }
            d.applied_feed.push(e.seq);
        }
        d.cursors.extend(pulled.cursors.clone());
        Ok(())
    }
    fn checksums(&self) -> Result<BTreeMap<String, u64>> {
        Ok(self.0.borrow().checksums.clone())
    }
    fn apply_snapshot(&self, village: &str, snapshot: &m::SnapshotResponse) -> Result<()> {
        self.0
            .borrow_mut()
            .checksums
            .insert(village.into(), snapshot.checksum);
        Ok(())
    }
    fn audit_chain_hash(&self) -> Result<HashAlgorithm> {
        Ok(HashAlgorithm::Sha256)
    }
    fn pending_audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let d = self.0.borrow();
        Ok(d.audit
            .iter()
            .filter(|e| e.seq > d.audit_uploaded_through)
            .take(limit)
            .cloned()
            .collect())
    }
    fn pending_audit_count(&self) -> Result<u64> {
        let d = self.0.borrow();
        Ok(d.audit.len() as u64 - d.audit_uploaded_through)
    }
    fn audit_uploaded_through(&self, seq: u64) -> Result<()> {
        let mut d = self.0.borrow_mut();
        d.audit_uploaded_through = d.audit_uploaded_through.max(seq);
        Ok(())
    }
    fn content_algorithm(&self) -> HashAlgorithm {
        HashAlgorithm::Sha256
    }
    fn uploadable_contents(&self) -> Result<Vec<ContentRef>> {
        let d = self.0.borrow();
        Ok(d.contents
            .iter()
            .filter(|(h, _)| !d.uploaded.contains(*h) && d.acked.contains(&d.content_owner[*h]))
            .map(|(h, b)| ContentRef {
                content_hash: h.clone(),
                size_bytes: b.len() as u64,
                proof: None,
            })
            .collect())
    }
    fn content_intact(&self, _: &str) -> Result<bool> {
        Ok(true)
    }
    fn read_content(&self, hash: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let d = self.0.borrow();
        let bytes = &d.contents[hash];
        let start = offset as usize;
        Ok(bytes[start..(start + len).min(bytes.len())].to_vec())
    }
    fn content_proof(&self, hash: &str, nonce: &str) -> Result<String> {
        let d = self.0.borrow();
        Ok(zoufang_core::protocol::possession::ContentProof::of(
            HashAlgorithm::Sha256,
            nonce,
            &d.contents[hash],
        ))
    }
    fn mark_uploaded(&self, hash: &str) -> Result<()> {
        self.0.borrow_mut().uploaded.insert(hash.into());
        Ok(())
    }
    fn leave_former_areas(&self) -> Result<u64> {
        // The scripted server never changes the user's areas.
        Ok(0)
    }
    fn record_wipe_order(&self) -> Result<()> {
        let mut d = self.0.borrow_mut();
        d.wipe_recorded = true;
        d.log(AuditAction::Wipe);
        Ok(())
    }
    fn record_sync(&self, _: &SyncReport) -> Result<()> {
        self.0.borrow_mut().log(AuditAction::Sync);
        Ok(())
    }
}

// ----- the server ----------------------------------------------------------------------------

/// What happens to one request on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// The link drops before the server sees the request.
    CutBefore,
    /// The server applies it; its answer is lost.
    LostAnswer,
    /// A chunk arrives only in part (the server keeps its whole frames), then the link drops.
    PartialChunk,
    /// Acks come back twice and in reverse order.
    DuplicateAcks,
    /// The server fails (503) without applying anything.
    ServerError,
}

fn fault_of(code: u8) -> Fault {
    match code % 10 {
        0 => Fault::CutBefore,
        1 => Fault::LostAnswer,
        2 => Fault::PartialChunk,
        3 => Fault::DuplicateAcks,
        4 => Fault::ServerError,
        _ => Fault::None,
    }
}

#[derive(Debug, Default)]
struct Server {
    /// Device seq → server version, and how often each was applied.
    applied: BTreeMap<u64, u64>,
    applications: BTreeMap<u64, u32>,
    next_version: u64,
    /// Acks that reached the device in an answer.
    delivered_acks: BTreeSet<u64>,
    /// Colleagues' edits, per village, as the feed gives them (seq, value).
    feed: BTreeMap<String, Vec<(u64, u64)>>,
    audit: Vec<AuditEntry>,
    received: BTreeMap<String, Vec<u8>>,
    complete: BTreeSet<String>,
    offset_mismatches: u32,
    /// Contested fields: a change to one of them conflicts with a colleague's edit.
    contested: BTreeSet<String>,
    conflicts: BTreeSet<String>,
    /// From this request on, every data request is answered with a wipe order.
    wipe_from: Option<u32>,
    wipe_ordered: bool,
    /// Requests after the wipe order that were not audit uploads.
    sent_after_wipe: u32,
    requests: u32,
    /// The answer recorded for each change (what `/v1/push/acks` gives back).
    recorded: BTreeMap<u64, Ack>,
    /// The server streams (pushes and pulls as message streams, `/v1/push/acks`).
    streams: bool,
    /// The server answers a streamed push as it applies it, message by message.
    answers_as_applied: bool,
    /// Changes named as held and found so, and pushes refused for naming one not held.
    held_named: u32,
    not_held: u32,
    /// The devices' first push batch (at least 3): large ones make streams of many messages.
    push_batch: usize,
    /// What arrived of an answer the link cut (a streamed pull's first pages, a streamed
    /// push's first answers).
    partial: Option<HttpResponse>,
}

fn answer<T: serde::Serialize>(message: &T) -> HttpResponse {
    HttpResponse {
        status: 200,
        body: m::encode(message).unwrap(),
    }
}

fn error(status: u16, code: &str) -> HttpResponse {
    let body = serde_json::to_vec(&m::ErrorBody {
        protocol: m::PROTOCOL_VERSION,
        error: m::ErrorDetail {
            code: code.into(),
            message: "scripted".into(),
        },
    })
    .unwrap();
    HttpResponse { status, body }
}

const NOW: &str = "2026-12-01T08:00:00.000Z";

impl Server {
    fn checksum(&self, village: &str) -> u64 {
        self.feed
            .get(village)
            .map_or(0, |f| f.iter().fold(0u64, |a, (_, v)| a.wrapping_add(*v)))
    }

    /// A colleague edits a field in a village: a feed entry for every device of the village.
    fn colleague_edit(&mut self, village: usize, value: u64) {
        self.next_version += 1;
        let v = self.next_version;
        self.feed
            .entry(VILLAGES[village % 2].into())
            .or_default()
            .push((v, value));
    }

    fn accept_audit(&mut self, entries: &[AuditEntry]) -> u64 {
        let held = self.audit.len() as u64;
        let last_hash = self
            .audit
            .last()
            .map_or(audit::GENESIS.to_owned(), |e| e.hash.clone());
        let fresh: Vec<AuditEntry> = entries.iter().filter(|e| e.seq > held).cloned().collect();
        if audit::verify(HashAlgorithm::Sha256, held, &last_hash, &fresh).is_ok() {
            self.audit.extend(fresh);
        }
        self.audit.len() as u64
    }

    fn push(&mut self, req: m::PushRequest, fault: Fault) -> m::PushResponse {
        let mut acks = Vec::new();
        for c in req.changes {
            let version = match self.applied.get(&c.seq) {
                Some(v) => *v,
                None => {
                    self.next_version += 1;
                    *self.applications.entry(c.seq).or_default() += 1;
                    self.applied.insert(c.seq, self.next_version);
                    self.next_version
                }
            };
            let contested =
                matches!(&c.op, ChangeOp::SetField { field, .. } if self.contested.contains(field));
            let conflict = contested.then(|| {
                let id = format!("conflict-{}", c.seq);
                self.conflicts.insert(id.clone());
                m::ConflictInfo {
                    id,
                    entity: Entity::Household,
                    entity_id: "h-0".into(),
                    household_id: "h-0".into(),
                    village_code: VILLAGES[0].into(),
                    field: "f0".into(),
                    values: Vec::new(),
                    provisional: json!(0),
                    status: m::ConflictStatus::Open,
                    resolution: None,
                    resolved_by: None,
                    version,
                }
            });
            let ack = Ack {
                seq: c.seq,
                outcome: if contested {
                    Outcome::Conflict
                } else {
                    Outcome::Applied
                },
                version: Some(version),
                value: None,
                conflict,
                code: None,
                message: None,
            };
            self.recorded.entry(c.seq).or_insert_with(|| ack.clone());
            acks.push(ack);
        }
        if fault == Fault::DuplicateAcks {
            let again = acks.clone();
            acks.reverse();
            acks.extend(again);
        }
        m::PushResponse {
            protocol: m::PROTOCOL_VERSION,
            server_time: NOW.into(),
            acks,
            audit: None,
        }
    }

    fn pull(&self, req: &m::PullRequest) -> m::PullResponse {
        let mut entries = Vec::new();
        let mut cursors = BTreeMap::new();
        let mut more = false;
        for village in VILLAGES {
            let from = req.cursors.get(village).copied().unwrap_or(0);
            let mut last = from;
            for (seq, value) in self.feed.get(village).into_iter().flatten() {
                if *seq <= from {
                    continue;
                }
                if entries.len() >= req.limit as usize {
                    more = true;
                    break;
                }
                entries.push(m::FeedEntry {
                    seq: *seq,
                    village_code: village.into(),
                    item: m::FeedItem::Field {
                        entity: Entity::Household,
                        id: "h-9".into(),
                        field: "f9".into(),
                        value: json!(value),
                        version: *seq,
                    },
                });
                last = *seq;
            }
            cursors.insert(village.to_owned(), last);
        }
        let checksums = if more {
            BTreeMap::new()
        } else {
            VILLAGES
                .iter()
                .map(|v| ((*v).to_owned(), self.checksum(v)))
                .collect()
        };
        m::PullResponse {
            protocol: m::PROTOCOL_VERSION,
            server_time: NOW.into(),
            entries,
            cursors,
            more,
            checksums,
        }
    }

    /// A streamed pull's pages.
    fn pull_pages(&self, req: &m::PullRequest, page: u32) -> Vec<m::PullResponse> {
        let (mut pages, mut cursors, mut sent) = (Vec::new(), req.cursors.clone(), 0);
        loop {
            let next = self.pull(&m::PullRequest {
                cursors: cursors.clone(),
                limit: page.min(req.limit - sent),
                page: None,
                ..req.clone()
            });
            sent += next.entries.len() as u32;
            cursors = next.cursors.clone();
            let more = next.more;
            pages.push(next);
            if !more || sent >= req.limit {
                return pages;
            }
        }
    }

    /// A chunk: `Some(kept)` bytes appended, or `None` for an offset the server does not hold.
    fn chunk(
        &mut self,
        req: &HttpRequest,
        fault: Fault,
    ) -> std::result::Result<m::ChunkResponse, HttpResponse> {
        let (path, query) = req.path.split_once('?').unwrap();
        let hash = path.rsplit('/').next().unwrap().to_owned();
        let mut offset = 0;
        let mut size = 0;
        for kv in query.split('&') {
            let (k, v) = kv.split_once('=').unwrap();
            match k {
                "offset" => offset = v.parse().unwrap(),
                "size" => size = v.parse().unwrap(),
                _ => {}
            }
        }
        let held = self.received.entry(hash.clone()).or_default();
        if offset != held.len() as u64 {
            self.offset_mismatches += 1;
            return Err(error(409, "offset_mismatch"));
        }
        let body = if fault == Fault::PartialChunk {
            &req.body[..req.body.len() / 2]
        } else {
            &req.body[..]
        };
        let mut reader = FrameReader::new();
        let _ = reader.push(body);
        held.extend_from_slice(reader.content());
        let complete = held.len() as u64 == size;
        if complete {
            assert_eq!(
                HashAlgorithm::Sha256.digest(held),
                hash,
                "a content arrived altered"
            );
            self.complete.insert(hash);
        }
        Ok(m::ChunkResponse {
            protocol: m::PROTOCOL_VERSION,
            received: held.len() as u64,
            complete,
        })
    }

    /// The server's answer, or `None` when the link dropped.
    fn handle(&mut self, req: &HttpRequest, fault: Fault) -> Option<HttpResponse> {
        self.requests += 1;
        if fault == Fault::CutBefore {
            return None;
        }
        if fault == Fault::ServerError {
            return Some(error(503, "unavailable"));
        }
        let is_audit = req.path == "/v1/audit";
        if self.wipe_from.is_some_and(|n| self.requests >= n) {
            if self.wipe_ordered && !is_audit {
                self.sent_after_wipe += 1;
            }
            if !is_audit {
                self.wipe_ordered = true;
                return Some(error(410, "device_wiped"));
            }
        }
        let response = match req.path.split('?').next().unwrap() {
            "/v1/catalog" => {
                let r: m::CatalogRequest = m::decode(&req.body).unwrap();
                let audit = r.audit.map(|batch| m::AuditUploadResponse {
                    protocol: m::PROTOCOL_VERSION,
                    server_time: NOW.into(),
                    accepted_through: self.accept_audit(&batch.entries),
                    chain_break: None,
                });
                answer(&m::CatalogResponse {
                    protocol: m::PROTOCOL_VERSION,
                    server_time: NOW.into(),
                    forms: Vec::new(),
                    code_lists: Vec::new(),
                    audit,
                    user: None,
                    visit_frequencies: Default::default(),
                    possession_nonce: Some(SCRIPT_NONCE.into()),
                    token_expires_at: None,
                    form_publications: Vec::new(),
                    compact_audit: false,
                    streams: self.streams,
                    answers_as_applied: self.answers_as_applied,
                })
            }
            "/v1/push/stream" => {
                let (messages, problem) = decode_stream::<m::PushRequest>(&req.body);
                assert!(problem.is_none() && !messages.is_empty(), "{problem:?}");
                // Cut partway: the server applied the messages that arrived whole.
                let arrived = if fault == Fault::PartialChunk {
                    messages.len() / 2
                } else {
                    messages.len()
                };
                let as_applied = self.answers_as_applied
                    && req
                        .headers
                        .iter()
                        .any(|(k, v)| k == "Accept" && v == STREAM_TYPE);
                // Changes taken as arrived: answered as recorded, or the push is refused.
                let held = messages.first().map(|m| m.held.clone()).unwrap_or_default();
                assert!(
                    as_applied || held.is_empty(),
                    "held named to a server that cannot"
                );
                if held.iter().any(|seq| !self.recorded.contains_key(seq)) {
                    let refusal = m::PushStreamAnswer::Refused(m::StreamRefusal {
                        protocol: m::PROTOCOL_VERSION,
                        status: 409,
                        error: m::ErrorDetail {
                            code: "not_held".into(),
                            message: "scripted".into(),
                        },
                    });
                    self.not_held += 1;
                    return match fault {
                        Fault::LostAnswer | Fault::PartialChunk => None,
                        _ => Some(HttpResponse {
                            status: 200,
                            body: encode_stream(&[refusal]).unwrap(),
                        }),
                    };
                }
                let mut answers: Vec<m::PushResponse> = messages
                    .into_iter()
                    .take(arrived)
                    .map(|message| self.push(message, fault))
                    .collect();
                if let Some(first) = answers.first_mut() {
                    let mut acks: Vec<Ack> =
                        held.iter().map(|s| self.recorded[s].clone()).collect();
                    self.held_named += acks.len() as u32;
                    acks.append(&mut first.acks);
                    first.acks = acks;
                }
                if as_applied {
                    // Each message's answer as it is applied; a cut takes the last one's.
                    let delivered = if fault == Fault::PartialChunk {
                        arrived.saturating_sub(1)
                    } else if fault == Fault::LostAnswer {
                        0
                    } else {
                        answers.len()
                    };
                    for a in answers.iter().take(delivered) {
                        self.delivered_acks.extend(a.acks.iter().map(|a| a.seq));
                    }
                    let stream: Vec<m::PushStreamAnswer> = answers
                        .into_iter()
                        .map(m::PushStreamAnswer::Applied)
                        .collect();
                    if fault == Fault::PartialChunk {
                        self.partial = Some(HttpResponse {
                            status: 200,
                            body: encode_stream(&stream[..delivered]).unwrap(),
                        });
                    }
                    HttpResponse {
                        status: 200,
                        body: encode_stream(&stream).unwrap(),
                    }
                } else {
                    let acks: Vec<Ack> = answers.into_iter().flat_map(|a| a.acks).collect();
                    if fault == Fault::None || fault == Fault::DuplicateAcks {
                        self.delivered_acks.extend(acks.iter().map(|a| a.seq));
                    }
                    answer(&m::PushResponse {
                        protocol: m::PROTOCOL_VERSION,
                        server_time: NOW.into(),
                        acks,
                        audit: None,
                    })
                }
            }
            "/v1/push/acks" => {
                let r: m::AcksRequest = m::decode(&req.body).unwrap();
                let acks: Vec<Ack> = r
                    .seqs
                    .iter()
                    .filter_map(|seq| self.recorded.get(seq).cloned())
                    .collect();
                if fault != Fault::LostAnswer && fault != Fault::PartialChunk {
                    self.delivered_acks.extend(acks.iter().map(|a| a.seq));
                }
                answer(&m::PushResponse {
                    protocol: m::PROTOCOL_VERSION,
                    server_time: NOW.into(),
                    acks,
                    audit: Some(m::AuditUploadResponse {
                        protocol: m::PROTOCOL_VERSION,
                        server_time: NOW.into(),
                        accepted_through: self.audit.len() as u64,
                        chain_break: None,
                    }),
                })
            }
            "/v1/pull" if self.streams => {
                let r: m::PullRequest = m::decode(&req.body).unwrap();
                let page = r.page.expect("a streaming device asks for pages");
                let body = encode_stream(&self.pull_pages(&r, page)).unwrap();
                if fault == Fault::PartialChunk {
                    // The first half of the bytes: the pages wholly inside them count.
                    self.partial = Some(HttpResponse {
                        status: 200,
                        body: body[..body.len() / 2].to_vec(),
                    });
                }
                HttpResponse { status: 200, body }
            }
            "/v1/push" => {
                let r: m::PushRequest = m::decode(&req.body).unwrap();
                let response = self.push(r, fault);
                if fault != Fault::LostAnswer {
                    self.delivered_acks
                        .extend(response.acks.iter().map(|a| a.seq));
                }
                answer(&response)
            }
            "/v1/pull" => answer(&self.pull(&m::decode(&req.body).unwrap())),
            "/v1/snapshot" => {
                let r: m::SnapshotRequest = m::decode(&req.body).unwrap();
                answer(&m::SnapshotResponse {
                    protocol: m::PROTOCOL_VERSION,
                    server_time: NOW.into(),
                    records: Vec::new(),
                    conflicts: Vec::new(),
                    checksum: self.checksum(&r.village_code),
                })
            }
            "/v1/audit" => {
                let r: m::AuditUploadRequest = m::decode(&req.body).unwrap();
                answer(&m::AuditUploadResponse {
                    protocol: m::PROTOCOL_VERSION,
                    server_time: NOW.into(),
                    accepted_through: self.accept_audit(&r.entries),
                    chain_break: None,
                })
            }
            "/v1/attachments/status" => {
                let r: m::AttachmentStatusRequest = m::decode(&req.body).unwrap();
                // A first question proves possession under the catalog's nonce; a recheck of an
                // upload in progress needs none.
                if let Some(nonce) = &r.possession_nonce {
                    assert_eq!(nonce, SCRIPT_NONCE);
                    assert!(r.contents.iter().all(|c| c.proof.is_some()));
                }
                let contents = r
                    .contents
                    .iter()
                    .map(|c| {
                        let held = self.received.get(&c.content_hash).map_or(0, Vec::len) as u64;
                        m::ContentState {
                            content_hash: c.content_hash.clone(),
                            status: if self.complete.contains(&c.content_hash) {
                                m::ContentStatus::Complete
                            } else {
                                m::ContentStatus::Receiving
                            },
                            received: held,
                        }
                    })
                    .collect();
                answer(&m::AttachmentStatusResponse {
                    protocol: m::PROTOCOL_VERSION,
                    contents,
                })
            }
            path if path.starts_with("/v1/attachments/sha256/") => match self.chunk(req, fault) {
                Ok(r) => answer(&r),
                Err(e) => e,
            },
            other => panic!("unexpected request {other}"),
        };
        match fault {
            Fault::LostAnswer | Fault::PartialChunk => None,
            _ => Some(response),
        }
    }
}

// ----- the driver ----------------------------------------------------------------------------

/// A body's end where the link cut it.
struct CutHere;

impl std::io::Read for CutHere {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("the link dropped"))
    }
}

/// One sync as the real driver runs it, with the schedule's faults; the time moves a second
/// per request.
fn sync_once(
    local: &Local,
    server: &mut Server,
    faults: &mut dyn Iterator<Item = Fault>,
) -> (Result<SyncReport>, bool) {
    let config = SyncConfig {
        push_batch: server.push_batch.max(3),
        pull_limit: 4,
        ..SyncConfig::default()
    };
    let mut engine = match SyncEngine::new(local, config) {
        Ok(e) => e,
        Err(e) => return (Err(e), false),
    };
    // The script hands a cut streamed answer's first messages over, as a duplex transport does.
    engine.set_reads_while_sending(true);
    let mut step = 0u64;
    let now = |step: u64| Moment {
        wall: chrono::DateTime::parse_from_rfc3339(NOW).unwrap().to_utc()
            + chrono::TimeDelta::seconds(step as i64),
        elapsed: Duration::from_secs(step),
    };
    let run = (|| -> Result<()> {
        while let Some(req) = engine.next_request(now(step))? {
            step += 1;
            assert!(
                step < MAX_REQUESTS_PER_SYNC as u64,
                "a sync that never ends (phase {:?})",
                engine.phase()
            );
            let fault = faults.next().unwrap_or(Fault::None);
            // As the real driver does: a streamed answer is read as it arrives.
            let streamed = engine.receives_stream();
            // Within a request time moves 10 ms a look, so answers come at a pace.
            let looks = std::cell::Cell::new(0u64);
            let at = || {
                looks.set(looks.get() + 1);
                let t = now(step);
                let later = 10 * looks.get();
                Moment {
                    wall: t.wall + chrono::TimeDelta::milliseconds(later as i64),
                    elapsed: t.elapsed + Duration::from_millis(later),
                }
            };
            match server.handle(&req, fault) {
                Some(r) if r.status >= 500 => {
                    engine.handle_interruption("server error", now(step))?
                }
                Some(r) if streamed => {
                    engine.handle_stream(r.status, &mut r.body.as_slice(), &at)?
                }
                Some(r) => engine.handle_response(&r, now(step))?,
                None => match server.partial.take() {
                    Some(p) if streamed => {
                        let mut cut = p.body.as_slice().chain(CutHere);
                        engine.handle_stream(p.status, &mut cut, &at)?
                    }
                    partial => engine.handle_cut("cut", partial.as_ref(), now(step))?,
                },
            }
        }
        Ok(())
    })();
    let wiped = engine.wiped();
    match run {
        Err(e) => (Err(e), wiped),
        Ok(()) if wiped => (Err(Error::DeviceWiped), true),
        Ok(()) => (engine.finish(), false),
    }
}

// ----- the schedules ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Round {
    /// The coordinator's work before this sync: (field, photo size if a visit with a photo).
    work: Vec<(u8, Option<usize>)>,
    /// Colleagues' edits landing on the server: (village, value).
    colleagues: Vec<(usize, u64)>,
    /// The device's checksum of a village goes wrong (storage trouble): repaired by a snapshot.
    diverge: Option<usize>,
    faults: Vec<u8>,
}

fn round() -> impl Strategy<Value = Round> {
    (
        prop_oneof![
            3 => prop::collection::vec(
                (any::<u8>(), prop::option::weighted(0.2, 1usize..200_000)),
                0..6,
            ),
            // A day's fieldwork at once: pushes of many messages, cut between their answers.
            1 => prop::collection::vec((any::<u8>(), Just(None)), 20..48),
        ],
        prop::collection::vec((0usize..2, 1u64..1000), 0..8),
        prop::option::weighted(0.2, 0usize..2),
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(work, colleagues, diverge, faults)| Round {
            work,
            colleagues,
            diverge,
            faults,
        })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_500)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn any_schedule_of_faults_converges_without_loss_or_repetition(
        rounds in prop::collection::vec(round(), 1..6),
        contested in prop::collection::btree_set(0u8..3, 0..2),
        wipe_at in prop::option::weighted(0.1, 1u32..60),
        streams in any::<bool>(),
        answers_as_applied in any::<bool>(),
        push_batch in prop_oneof![Just(3usize), 3usize..60],
    ) {
        let local = Local(RefCell::new(Device::default()));
        let mut server = Server {
            contested: contested.iter().map(|f| format!("f{f}")).collect(),
            wipe_from: wipe_at,
            streams,
            answers_as_applied,
            push_batch,
            ..Server::default()
        };
        let mut wiped = false;
        for r in &rounds {
            {
                let mut d = local.0.borrow_mut();
                for (field, photo) in &r.work {
                    d.work(*field, *photo);
                }
                if let Some(v) = r.diverge {
                    *d.checksums.entry(VILLAGES[v].into()).or_default() ^= 0xdead_beef;
                }
            }
            for (village, value) in &r.colleagues {
                server.colleague_edit(*village, *value);
            }
            let mut faults = r.faults.iter().map(|c| fault_of(*c));
            let (result, w) = sync_once(&local, &mut server, &mut faults);
            prop_assert!(!w || server.wipe_ordered, "wiped without an order");
            if w {
                prop_assert!(matches!(result, Err(Error::DeviceWiped)));
                wiped = true;
                break;
            }
        }
        if !wiped {
            // The faults stop: a few syncs on a clean link finish everything.
            for _ in 0..4 {
                let (result, w) = sync_once(&local, &mut server, &mut std::iter::empty());
                if w {
                    wiped = true;
                    break;
                }
                if result.is_ok() && local.0.borrow().outbox.is_empty() {
                    let (again, w) = sync_once(&local, &mut server, &mut std::iter::empty());
                    prop_assert!(again.is_ok() || w, "a clean sync failed: {:?}", again.err());
                    wiped = w;
                    break;
                }
            }
        }
        let d = local.0.borrow();
        prop_assert_eq!(server.offset_mismatches, 0, "a chunk went at an offset the server did not hold");
        prop_assert!(d.removed.is_subset(&server.delivered_acks), "an entry left the outbox without a delivered ack");
        prop_assert!(server.applications.values().all(|n| *n == 1), "a change applied twice");
        if wiped {
            prop_assert!(d.wipe_recorded);
            prop_assert_eq!(server.sent_after_wipe, 0, "data requests after the wipe order");
            return Ok(());
        }
        prop_assert!(d.outbox.is_empty(), "{} changes still waiting", d.outbox.len());
        let all: BTreeSet<u64> = (1..=d.next_seq).collect();
        prop_assert_eq!(server.applied.keys().copied().collect::<BTreeSet<_>>(), all);
        prop_assert_eq!(&server.audit[..], &d.audit[..server.audit.len()]);
        prop_assert!(d.audit.len() - server.audit.len() <= 1, "only the last sync's own entry may wait");
        for village in VILLAGES {
            let feed: Vec<u64> = server.feed.get(village).into_iter().flatten().map(|(s, _)| *s).collect();
            let applied: Vec<u64> = d.applied_feed.iter().copied().filter(|s| feed.contains(s)).collect();
            let mut once = applied.clone();
            once.dedup();
            prop_assert_eq!(&once, &feed, "feed of {} applied out of order or incompletely", village);
            prop_assert_eq!(d.checksums.get(village).copied().unwrap_or(0), server.checksum(village));
        }
        prop_assert_eq!(&d.conflicts, &server.conflicts);
        for (hash, bytes) in &d.contents {
            prop_assert!(server.complete.contains(hash));
            prop_assert_eq!(&server.received[hash], bytes);
        }
    }
}

/// The engine's own timing never reads a clock: the same schedule gives the same requests.
#[test]
fn the_same_schedule_gives_the_same_requests() {
    let run = || {
        let local = Local(RefCell::new(Device::default()));
        local.0.borrow_mut().work(1, Some(90_000));
        local.0.borrow_mut().work(2, None);
        let mut server = Server::default();
        let faults = [1u8, 2, 0, 5, 2, 5, 5, 1];
        let mut trace = Vec::new();
        for _ in 0..3 {
            let mut f = faults.iter().map(|c| fault_of(*c));
            let (r, _) = sync_once(&local, &mut server, &mut f);
            trace.push(format!(
                "{:?}",
                r.map(|r| (r.pushed, r.attachment_bytes_sent, r.round_trips))
            ));
        }
        (trace, server.requests)
    };
    assert_eq!(run(), run());
}

/// A wipe order in the middle of a push: the trail goes up, then nothing else.
#[test]
fn a_wipe_order_flushes_the_trail_and_stops() {
    let local = Local(RefCell::new(Device::default()));
    for i in 0..7 {
        local.0.borrow_mut().work(i, None);
    }
    let mut server = Server {
        wipe_from: Some(3),
        ..Server::default()
    };
    let (result, wiped) = sync_once(&local, &mut server, &mut std::iter::empty());
    assert!(wiped && matches!(result, Err(Error::DeviceWiped)));
    let d = local.0.borrow();
    assert!(d.wipe_recorded);
    assert_eq!(
        server.audit.len(),
        d.audit.len(),
        "the whole trail, the wipe included"
    );
    assert_eq!(server.sent_after_wipe, 0);
    assert!(!d.outbox.is_empty(), "changes after the order stay unsent");
}
