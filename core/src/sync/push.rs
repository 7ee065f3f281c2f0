//! The push phase: the outbox, in batches. To a server that takes streams (its catalog says
//! so), a batch goes as a message stream (`zoufang_protocol::stream`) of small pushes, each
//! applied by the server as it arrives: when the link cuts the request, the device asks which of
//! its changes arrived (`/v1/push/acks`, a few bytes) instead of sending them again, so a cut
//! costs the message in flight, and requests can be long.
//!
//! The question comes before anything else is sent (a later change may depend on a lost one:
//! a member's edit on its creation, a visit on its household). Sending changes of other
//! records meanwhile was tried: it saved little on a link cut every 2 s and cost much on one
//! cut every half second, where the questions it piled up no longer fit between two cuts.

use std::collections::HashSet;
use std::io::Read;
use std::time::Duration;

use super::adapt::Batch;
use super::engine::{InFlight, Moment, SyncEngine};
use super::local::LocalState;
use super::pull::Counted;
use super::transport::HttpResponse;
use super::wire::{decode, encode};
use crate::error::{Error, Result};
use crate::records::timestamp;
use zoufang_protocol::messages::{
    AcksRequest, ErrorDetail, PROTOCOL_VERSION, PushRequest, PushResponse, PushStreamAnswer,
    StreamRefusal,
};
use zoufang_protocol::stream::{MAX_MESSAGES, StreamReader, StreamWriter};

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

/// An answer message that does not decode: the server's fault, never retried as a cut.
fn bad_answer(message: String) -> StreamRefusal {
    StreamRefusal {
        protocol: PROTOCOL_VERSION,
        status: 200,
        error: ErrorDetail {
            code: "bad_message".into(),
            message,
        },
    }
}

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
        let batch = self.local.outbox_batch(limit)?;
        if batch.is_empty() {
            return Ok(None);
        }
        let changes = batch.len() as u64;
        let message = |changes, audit| PushRequest {
            protocol: PROTOCOL_VERSION,
            device_id: self.device_id(),
            device_time: timestamp(now.wall),
            changes,
            audit,
        };
        if !self.link.streams {
            let (riding, audit) = self.riding_audit(batch.len())?;
            let body = encode(&message(batch, riding))?;
            let flight = InFlight::Push {
                changes,
                audit,
                streamed: None,
            };
            return Ok(Some(("/v1/push", body, flight)));
        }
        let seqs = batch.iter().map(|c| c.seq).collect();
        let frame = self
            .link
            .push_frame()
            .max(batch.len().div_ceil(MAX_MESSAGES));
        let (riding, audit) = self.riding_audit_split(batch.len(), frame)?;
        let mut riding = riding.into_iter();
        let (mut writer, mut body) = (StreamWriter::new().map_err(stream_failed)?, Vec::new());
        let mut rest = batch;
        while !rest.is_empty() {
            let tail = rest.split_off(frame.min(rest.len()));
            writer
                .push(&message(rest, riding.next()))
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

    fn apply_push_answer(&mut self, pushed: &PushResponse, audit: Option<u64>) -> Result<()> {
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

    /// A streamed push's answer read as it arrives: each message's acknowledgements are
    /// applied the moment they come, while the server applies the next. When the link cuts it,
    /// what was acknowledged is done; the rest stays in the outbox. From a server seen to
    /// answer as it applies (this sync), the rest is simply sent again: only what arrived in
    /// the last moments before the cut is sent twice, and the server acknowledges it again
    /// without applying it twice, which costs less than a round trip to ask. Otherwise the
    /// device asks what arrived ([`Unanswered`]).
    pub(super) fn handle_push_stream(
        &mut self,
        body: &mut dyn Read,
        now: &dyn Fn() -> Moment,
    ) -> Result<()> {
        let Some(InFlight::Push {
            changes,
            audit,
            streamed: Some(seqs),
        }) = self.in_flight.clone()
        else {
            return Err(Error::InvalidInput("a push's answer without a push".into()));
        };
        let mut counted = Counted {
            body,
            bytes: 0,
            failure: None,
        };
        let (mut answers, mut acked) = (0, HashSet::new());
        let mut reader = StreamReader::new(&mut counted);
        let refused = loop {
            match reader.next_message::<PushStreamAnswer>() {
                None => break None,
                Some(Ok(PushStreamAnswer::Applied(answer))) => {
                    if answers == 0 {
                        self.measure_clock(&answer.server_time, now());
                    }
                    answers += 1;
                    acked.extend(answer.acks.iter().map(|a| a.seq));
                    self.apply_push_answer(&answer, audit)?;
                }
                Some(Ok(PushStreamAnswer::Refused(r))) => break Some(r),
                Some(Err(e)) => break Some(bad_answer(e.to_string())),
            }
        };
        drop(reader);
        self.report.bytes_received += counted.bytes as u64;
        let unacked: Vec<u64> = seqs.into_iter().filter(|s| !acked.contains(s)).collect();
        let cut = match (counted.failure, refused) {
            (Some(reason), _) => reason,
            (None, Some(r)) if r.status < 500 && r.status != 429 => {
                self.in_flight = None;
                return Err(Error::Server {
                    status: r.status,
                    code: r.error.code,
                    message: r.error.message,
                });
            }
            (None, Some(r)) => r.error.message,
            (None, None) if changes > 0 && acked.is_empty() => {
                self.in_flight = None;
                return Err(Error::Server {
                    status: 200,
                    code: "no_acks".into(),
                    message: "the server acknowledged nothing".into(),
                });
            }
            (None, None) => {
                // Whole. A change the server did not acknowledge stays in the outbox.
                self.in_flight = None;
                self.link.silent_cuts = 0;
                let took = now().elapsed.saturating_sub(self.sent_elapsed);
                let bytes = self.sent_bytes + counted.bytes;
                let items = usize::try_from(changes).unwrap_or(usize::MAX);
                let elapsed = now().elapsed;
                self.link
                    .answered(Some((Batch::Push, items)), (bytes, took), elapsed);
                return Ok(());
            }
        };
        self.push_stream_cut(&unacked, answers > 0, audit, &cut, now())
    }

    /// A streamed push cut (by the link or a busy server) with `unacked` of its changes not
    /// acknowledged, after `answered` (some of its answers had come back).
    pub(super) fn push_stream_cut(
        &mut self,
        unacked: &[u64],
        answered: bool,
        audit: Option<u64>,
        reason: &str,
        now: Moment,
    ) -> Result<()> {
        self.in_flight = None;
        let out_for = now.elapsed.saturating_sub(self.sent_elapsed);
        let link = &mut self.link;
        link.silent_cuts = if answered { 0 } else { link.silent_cuts + 1 };
        // Sent again only while answers do come back before cuts: a proxy that holds them
        // until the end would have the device send the same changes forever.
        let resend = link.duplex && link.silent_cuts < 2;
        tracing::debug!(
            unacked = unacked.len(),
            out_for_ms = out_for.as_millis() as u64,
            answered,
            resend,
            "streamed push cut"
        );
        if unacked.is_empty() || (resend && answered) {
            link.cut_after_progress(now.elapsed);
            return Ok(());
        }
        if !resend {
            self.unanswered
                .get_or_insert_with(Unanswered::default)
                .add(unacked, audit, out_for);
            link.interruptions += 1;
            return Ok(());
        }
        // Nothing came back: sent again, smaller if the request was too big for the link.
        link.interruptions += 1;
        link.last_failure = now.elapsed;
        let nothing = Unanswered {
            seqs: Vec::new(),
            audit,
            out_for,
        };
        self.push_cut_for_nothing(&nothing, reason)
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
