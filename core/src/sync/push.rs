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
/// Wrong guesses of what arrived before a cut after which a sync guesses no more.
const MOST_WRONG_GUESSES: u32 = 4;

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
        let mut batch = self.local.outbox_batch(limit)?;
        if batch.is_empty() {
            return Ok(None);
        }
        // Taken as arrived before the last cut: named, not sent again (`PushRequest::held`).
        let held = std::mem::take(&mut self.held);
        batch.retain(|c| !held.contains(&c.seq));
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
        // The answer's head came the moment the server began: a round trip after sending on a
        // live connection, two on a new one.
        let head = now().elapsed;
        let mut counted = Counted {
            body,
            bytes: 0,
            failure: None,
        };
        let (mut arrivals, mut acked) = (Vec::new(), HashSet::new());
        let mut reader = StreamReader::new(&mut counted);
        let refused = loop {
            match reader.next_message::<PushStreamAnswer>() {
                None => break None,
                Some(Ok(PushStreamAnswer::Applied(answer))) => {
                    let at = now();
                    if arrivals.is_empty() {
                        self.measure_clock(&answer.server_time, at);
                    }
                    arrivals.push((at.elapsed, answer.acks.len()));
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
            (Some(reason), _) => {
                let at = now().elapsed;
                let wrong = self.link.wrong_guesses;
                if self.link.duplex && wrong < MOST_WRONG_GUESSES {
                    let one_way = head.saturating_sub(self.sent_elapsed) / 4;
                    let margin = 0.2 + 0.5 * f64::from(wrong);
                    self.held = taken_as_arrived(&arrivals, one_way, at, &unacked, margin);
                }

                reason
            }
            (None, Some(r)) if r.error.code == "not_held" => {
                // A guess was wrong: what was named goes again, and the next guesses are warier.
                tracing::debug!("changes taken as arrived had not; sending them again");
                self.in_flight = None;
                self.link.wrong_guesses += 1;
                return Ok(());
            }
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
        self.push_stream_cut(&unacked, !arrivals.is_empty(), audit, &cut, now())
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
            taken_as_arrived = self.held.len(),
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

/// Of a cut stream's unacknowledged changes (in order), those taken as arrived: the messages
/// whose answers were due within a one-way trip after the cut (`at`), at the pace the answers
/// had come (`arrivals`: when each came, and how many changes it answered) while it lasted,
/// less `margin` messages for safety (the server's own time between a message's arrival and its answer is
/// another margin). A wrong guess costs the next request (`not_held`); none at all costs a
/// round trip's worth of changes sent twice.
fn taken_as_arrived(
    arrivals: &[(Duration, usize)],
    one_way: Duration,
    at: Duration,
    unacked: &[u64],
    margin: f64,
) -> Vec<u64> {
    let (Some(&(first, _)), Some(&(last, per_message))) = (arrivals.first(), arrivals.last())
    else {
        return Vec::new();
    };
    if arrivals.len() < 3 {
        return Vec::new();
    }
    let pace = last.saturating_sub(first).as_secs_f64() / (arrivals.len() - 1) as f64;
    if pace <= 0.0 {
        return Vec::new();
    }
    // Answers late at the cut say the flow had slowed: no more than one pace of lateness counts.
    let late = at.saturating_sub(last).as_secs_f64().min(pace);
    let due = (late + one_way.as_secs_f64()) / pace;
    let messages = (due - margin).floor().max(0.0) as usize;
    let n = messages.saturating_mul(per_message).min(unacked.len());
    unacked.get(..n).unwrap_or_default().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn changes_whose_answers_were_due_are_taken_as_arrived() {
        // Answers of 10 changes every 70 ms; the last came 20 ms before the cut; 75 ms one way:
        // the next answer was due 50 ms after the cut (its message reached the server 25 ms
        // before it), the one after at 120 ms (too late). 1.36 messages due: one taken.
        let arrivals: Vec<_> = (0..5).map(|i| (MS(500 + 70 * i), 10)).collect();
        let unacked: Vec<u64> = (51..=100).collect();
        let taken = taken_as_arrived(&arrivals, MS(75), MS(800), &unacked, 0.2);
        assert_eq!(taken, (51..=60).collect::<Vec<_>>());
        // A message that would have reached the server just before the cut (1.1 due) is not.
        assert!(taken_as_arrived(&arrivals, MS(75), MS(782), &unacked, 0.2).is_empty());
        // More careful after wrong guesses.
        assert!(taken_as_arrived(&arrivals, MS(75), MS(800), &unacked, 0.7).is_empty());
        // Answers that had stopped coming well before the cut: one pace of lateness counts.
        assert_eq!(
            taken_as_arrived(&arrivals, MS(75), MS(1100), &unacked, 0.2),
            (51..=60).collect::<Vec<_>>()
        );
        // A long trip: several messages, never more than what is unacknowledged.
        assert_eq!(
            taken_as_arrived(&arrivals, MS(2000), MS(800), &unacked, 0.2),
            unacked
        );
    }

    #[test]
    fn too_few_answers_tell_no_pace() {
        let unacked: Vec<u64> = (1..=30).collect();
        for n in 0..3 {
            let arrivals: Vec<_> = (0..n).map(|i| (MS(100 * i), 10)).collect();
            assert!(taken_as_arrived(&arrivals, MS(500), MS(1000), &unacked, 0.2).is_empty());
        }
        // Answers all at one instant: no pace either.
        let bunched = vec![(MS(100), 10); 4];
        assert!(taken_as_arrived(&bunched, MS(500), MS(1000), &unacked, 0.2).is_empty());
    }
}
