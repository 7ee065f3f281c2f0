//! The push phase: the outbox, in batches. To a server that takes streams (its catalog says
//! so), a batch goes as a message stream (`zoufang_protocol::stream`) of small pushes, each
//! applied by the server as it arrives, so a cut costs the message in flight, and requests can
//! be long. A server that answers each message as it applies it has its answers read as they
//! come (`push_answers.rs`); to one that answers at the end, the device asks after a cut which
//! of its changes arrived (`/v1/push/acks`, a few bytes) instead of sending them again.
//!
//! The question comes before anything else is sent (a later change may depend on a lost one:
//! a member's edit on its creation, a visit on its household). Sending changes of other
//! records meanwhile was tried: it saved little on a link cut every 2 s and cost much on one
//! cut every half second, where the questions it piled up no longer fit between two cuts.

use std::time::Duration;

use super::engine::{InFlight, Moment, SyncEngine};
use super::local::LocalState;
use super::transport::HttpResponse;
use super::wire::{decode, encode};
use crate::error::{Error, Result};
use crate::records::timestamp;
use zoufang_protocol::messages::{AcksRequest, PROTOCOL_VERSION, PushRequest, PushResponse};
use zoufang_protocol::stream::{MAX_MESSAGES, StreamWriter};

/// Changes asked about in one question, at most.
const MOST_ASKED: usize = 500;

/// Streamed pushes the link cut: their changes, the last audit entry riding on them, and how
/// long the last had been out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Unanswered {
    pub seqs: Vec<u64>,
    pub audit: Option<u64>,
    pub out_for: Duration,
}

impl Unanswered {
    /// Adds a cut push's changes.
    pub fn add(&mut self, seqs: &[u64], audit: Option<u64>, out_for: Duration) {
        self.seqs.extend_from_slice(seqs);
        self.audit = self.audit.max(audit);
        self.out_for = out_for;
    }
}

type Request = (&'static str, Vec<u8>, InFlight);

fn stream_failed(e: std::io::Error) -> Error {
    Error::Storage(format!("cannot encode a stream: {e}"))
}

impl<L: LocalState + ?Sized> SyncEngine<'_, L> {
    /// The next push request, or `None` when the outbox is empty. After a cut, the question
    /// of what arrived comes first.
    pub(super) fn push_request(&mut self, now: Moment) -> Result<Option<Request>> {
        let limit = self.link.push.current;
        if let Some(waiting) = &self.unanswered {
            // The oldest first, as many as a push of the link's size: the answer has to fit
            // between two cuts too.
            let n = waiting.seqs.len().min(limit.clamp(1, MOST_ASKED));
            let asked = Unanswered {
                seqs: waiting.seqs.get(..n).unwrap_or_default().to_vec(),
                ..waiting.clone()
            };
            let body = encode(&AcksRequest {
                protocol: PROTOCOL_VERSION,
                device_id: self.device_id(),
                seqs: asked.seqs.clone(),
            })?;
            return Ok(Some(("/v1/push/acks", body, InFlight::Acks(asked))));
        }
        let mut batch = self.local.outbox_batch(limit)?;
        if batch.is_empty() {
            return Ok(None);
        }
        // Taken as arrived before the last cut: named, not sent again (`PushRequest::held`).
        let held = std::mem::take(&mut self.held);
        let named: std::collections::HashSet<u64> = held.iter().copied().collect();
        batch.retain(|c| !named.contains(&c.seq));
        let changes = batch.len() as u64;
        let message = |changes, audit, held| PushRequest {
            protocol: PROTOCOL_VERSION,
            device_id: self.device_id(),
            device_time: timestamp(now.wall),
            changes,
            audit,
            held,
        };
        if !self.link.streams {
            let (riding, audit) = self.riding_audit(batch.len())?;
            let body = encode(&message(batch, riding, Vec::new()))?;
            let flight = InFlight::Push {
                changes,
                audit,
                streamed: None,
            };
            return Ok(Some(("/v1/push", body, flight)));
        }
        let seqs = held.iter().copied().chain(batch.iter().map(|c| c.seq));
        let seqs = seqs.collect();
        let frame = self
            .link
            .push_frame()
            .max(batch.len().div_ceil(MAX_MESSAGES));
        let (riding, audit) = self.riding_audit_split(batch.len(), frame)?;
        let mut riding = riding.into_iter();
        let (mut writer, mut body) = (StreamWriter::new().map_err(stream_failed)?, Vec::new());
        let (mut rest, mut held) = (batch, (!held.is_empty()).then_some(held));
        // At least one message: the held changes alone, when nothing else is left.
        while !rest.is_empty() || held.is_some() {
            let tail = rest.split_off(frame.min(rest.len()));
            let first = held.take().unwrap_or_default();
            writer
                .push(&message(rest, riding.next(), first))
                .map_err(stream_failed)?;
            body.append(&mut writer.take());
            rest = tail;
        }
        body.append(&mut writer.finish().map_err(stream_failed)?);
        let flight = InFlight::Push {
            changes,
            audit,
            streamed: Some(seqs),
        };
        Ok(Some(("/v1/push/stream", body, flight)))
    }

    pub(super) fn handle_push(
        &mut self,
        n: u64,
        audit: Option<u64>,
        response: &HttpResponse,
        now: Moment,
    ) -> Result<()> {
        let pushed: PushResponse = decode(response)?;
        self.measure_clock(&pushed.server_time, now);
        if n > 0 && pushed.acks.is_empty() {
            return Err(Error::Server {
                status: 200,
                code: "no_acks".into(),
                message: "the server acknowledged nothing".into(),
            });
        }
        self.apply_push_answer(&pushed, audit)
    }

    /// The answer to "what arrived of this cut push"; returns how many of its changes had.
    pub(super) fn handle_acks(
        &mut self,
        asked: &Unanswered,
        response: &HttpResponse,
    ) -> Result<usize> {
        let answer: PushResponse = decode(response)?;
        // Asked and answered: what arrived is acknowledged, the rest goes again (and after a
        // cut, sent again unasked if the server answers as it applies).
        self.link.silent_cuts = 0;
        if let Some(waiting) = &mut self.unanswered {
            waiting.seqs.retain(|s| !asked.seqs.contains(s));
            if waiting.seqs.is_empty() {
                self.unanswered = None;
            }
        }
        self.apply_push_answer(&answer, asked.audit)?;
        Ok(answer.acks.len())
    }

    pub(super) fn apply_push_answer(
        &mut self,
        pushed: &PushResponse,
        audit: Option<u64>,
    ) -> Result<()> {
        let (accepted, conflicts, rejected) = self.local.apply_acks(&pushed.acks)?;
        if let (Some(last), Some(ack)) = (audit, &pushed.audit) {
            self.apply_audit_ack(ack, last)?;
        }
        let n = pushed.acks.len() as u64;
        self.report.pushed += n;
        self.report.accepted += accepted;
        self.report.conflicts += conflicts;
        self.report.rejected += rejected;
        let with_code = |code: &str| {
            let n = pushed
                .acks
                .iter()
                .filter(|a| a.code.as_deref() == Some(code));
            n.count() as u64
        };
        self.report.possible_duplicates += with_code("possible_duplicate");
        self.report.handed_over += with_code("handed_over");
        self.phase_done += n;
        Ok(())
    }

    /// A streamed push was cut before any of it arrived: too big for the link if it was out
    /// long enough to be the link's doing (then halved), a failure with no answer otherwise.
    pub(super) fn push_cut_for_nothing(&mut self, asked: &Unanswered, reason: &str) -> Result<()> {
        let link = &mut self.link;
        if !link.push.at_minimum() && asked.out_for.as_secs_f64() > link.cost.overhead() {
            link.push.interrupted();
        } else {
            link.in_a_row += 1;
        }
        if link.in_a_row > self.config.retry.attempts.max(1) {
            return Err(Error::Transport(self.how_far(reason)));
        }
        Ok(())
    }
}
