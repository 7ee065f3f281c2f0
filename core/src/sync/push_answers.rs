//! A streamed push's answer read as it arrives, from a server that answers each message as it
//! applies it (`PushStreamAnswer`, its catalog's `answers_as_applied`): the phone applies the
//! acknowledgements while the rest of the push is still going up. After a cut it knows what
//! was applied up to the last answer that came back; the rest goes again at once, less what
//! was surely on its way (named as `held`, answered by the server without being sent twice).

use std::collections::HashSet;
use std::io::Read;
use std::time::Duration;

use super::adapt::Batch;
use super::engine::{InFlight, Moment, SyncEngine};
use super::local::LocalState;
use super::pull::Counted;
use super::push::Unanswered;
use crate::error::{Error, Result};
use zoufang_protocol::messages::{ErrorDetail, PROTOCOL_VERSION, PushStreamAnswer, StreamRefusal};
use zoufang_protocol::stream::StreamReader;

/// Wrong guesses of what arrived before a cut after which a sync guesses no more.
const MOST_WRONG_GUESSES: u32 = 4;

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

impl<L: LocalState + ?Sized> SyncEngine<'_, L> {
    /// A streamed push's answer read as it arrives: each message's acknowledgements are
    /// applied the moment they come, while the server applies the next. When the link cuts it,
    /// what was acknowledged is done; the rest stays in the outbox. From a server that answers
    /// as it applies, the rest is sent again at once, less what was surely on its way (named
    /// as `held`): what arrived unanswered is acknowledged again without being applied twice,
    /// which costs less than a round trip to ask. Otherwise the device asks what arrived
    /// ([`Unanswered`]).
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
}

/// Of a cut stream's unacknowledged changes (in order), those taken as arrived: the messages
/// whose answers were due within a one-way trip after the cut (`at`), at the pace the answers
/// had come (`arrivals`: when each came, and how many changes it answered) while it lasted,
/// less `margin` messages for safety (the server's own time between a message's arrival and
/// its answer is another margin). A wrong guess costs the next request (`not_held`); none at
/// all costs a round trip's worth of changes sent twice.
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
