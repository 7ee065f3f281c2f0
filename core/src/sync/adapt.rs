//! Request sizes that follow the link, and what the engine does when a request gets no answer.
//!
//! Every request costs a fixed part (the round trip, a handshake on a new connection, the
//! server's commit: the `overhead`, fitted with the cost per byte to the answers this sync) plus
//! its bytes. On a link that does not drop, a batch should take about [`REQUEST_SECONDS`]: big on
//! the township's Wi-Fi (fewer round trips and fsyncs), small on 2G. On a link that drops every
//! `W` seconds on average, a request of `x` seconds moves `x − overhead` worth of data and is
//! lost with a chance of about `x / W`; what gets through per second, `(x − o)(W − x) / (x W)`,
//! is greatest at `x = √(o·W)`, so that is the budget then. Sizes move toward the budget after
//! each answer (at most doubling; a short last batch never shrinks them) and halve after a cut
//! only when the request had been out longer than the budget (it was too big for the link as it
//! is now; a cut that hits a request of the right size is the link's normal life). Interruptions
//! do not end the sync: the request is built again from what the store says is left, and the sync
//! fails only when requests keep failing with no answer in between (not counting the halvings),
//! with a message saying how far it got.

use std::time::Duration;

use super::engine::{InFlight, Moment, SyncEngine, SyncPhase};
use super::local::LocalState;
use crate::error::{Error, Result};

/// Link time one request should take, at most.
pub(super) const REQUEST_SECONDS: f64 = 1.0;
/// Upper bounds: the server's own (5,000 changes or pull entries), kept well below.
pub(super) const MAX_PUSH: usize = 2000;
pub(super) const MAX_PULL: usize = 5000;
pub(super) const MAX_AUDIT: usize = 2000;
/// The overhead assumed before any answer came.
const FIRST_OVERHEAD: f64 = 0.05;
/// Link time a streamed request may take: a cut keeps its whole messages, so a long request
/// loses little to one and pays its round trip once.
pub(super) const STREAM_SECONDS: f64 = 4.0;
/// Link time of one message in a stream: what a cut costs at most, and how soon the first
/// answer can come back (on a link cut every half second, several must be answered between
/// two cuts). Smaller costs bytes: each message carries its own header and audit head.
pub(super) const MESSAGE_SECONDS: f64 = 0.08;
/// Pages in a streamed pull, at least (when the link allows bigger ones): the phone applies
/// one while the server reads and sends the next, instead of waiting for the whole answer.
const PAGES_AT_LEAST: usize = 8;
/// A link that carried something this recently is up, however often it drops.
const LIVE_LINK: Duration = Duration::from_secs(10);

/// The kinds of request whose size follows the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Batch {
    Push,
    Pull,
    Audit,
}

/// One kind of batch's size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Size {
    pub current: usize,
    max: usize,
    /// Link time per item, as the last answer measured it.
    per_item: Option<f64>,
}

impl Size {
    pub fn new(start: usize, max: usize) -> Self {
        Self {
            current: start.clamp(1, max.max(1)),
            max: max.max(1),
            per_item: None,
        }
    }

    /// A batch of `items` took `took` seconds (its whole round trip, `overhead` of which any
    /// request pays); `budget` is the time a request may take now.
    pub fn succeeded(&mut self, items: usize, took: f64, budget: f64, overhead: f64) {
        if items == 0 {
            return;
        }
        // The overhead is an estimate and may hold some of the bytes' time: never count less
        // than a tenth of the time as the items'.
        let per_item = (took - overhead).max(took / 10.0).max(1e-6) / items as f64;
        self.per_item = Some(per_item);
        let target = ((budget - overhead).max(0.0) / per_item) as usize;
        // A short batch (the last of the outbox) says little about the ceiling: never shrink on it.
        let floor = if items < self.current {
            self.current
        } else {
            self.current / 2
        };
        self.current = target
            .clamp(floor.max(1), self.current.saturating_mul(2))
            .clamp(1, self.max);
    }

    pub fn interrupted(&mut self) {
        self.current = (self.current / 2).max(1);
    }

    pub fn at_minimum(&self) -> bool {
        self.current <= 1
    }

    /// Items per message of a streamed request: about [`MESSAGE_SECONDS`] of the link as the
    /// last answer measured it (before any, a sixteenth of the request: each message is a
    /// transaction on the server, and the link is not known yet).
    pub fn per_message(&self) -> usize {
        let n = match self.per_item {
            Some(t) => MESSAGE_SECONDS / t,
            None => self.current as f64 / 16.0,
        };
        (n.ceil() as usize).clamp(1, self.current.max(1))
    }
}

/// What an answer costs on this link: `took ≈ overhead + bytes × per_byte`, fitted by least
/// squares to the answers so far, the older ones weighing less (the link changes).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) struct Cost {
    weight: f64,
    bytes: f64,
    took: f64,
    bytes_sq: f64,
    bytes_took: f64,
    quickest: Option<f64>,
}

impl Cost {
    const KEEP: f64 = 0.9;

    pub fn add(&mut self, bytes: usize, took: f64) {
        let b = bytes as f64;
        self.weight = self.weight * Self::KEEP + 1.0;
        self.bytes = self.bytes * Self::KEEP + b;
        self.took = self.took * Self::KEEP + took;
        self.bytes_sq = self.bytes_sq * Self::KEEP + b * b;
        self.bytes_took = self.bytes_took * Self::KEEP + b * took;
        self.quickest = Some(self.quickest.map_or(took, |q| q.min(took)));
    }

    /// The fixed part of a request, in seconds: the fit's intercept, within what the quickest
    /// answer allows (half of it when the answers so far cannot tell bytes from overhead).
    pub fn overhead(&self) -> f64 {
        let Some(quickest) = self.quickest else {
            return FIRST_OVERHEAD;
        };
        let w = self.weight;
        let (mean_b, mean_t) = (self.bytes / w, self.took / w);
        let var = self.bytes_sq / w - mean_b * mean_b;
        if w < 2.0 || var <= (mean_b * 0.05).powi(2) {
            return quickest / 2.0;
        }
        let slope = (self.bytes_took / w - mean_b * mean_t) / var;
        if slope <= 0.0 {
            return quickest / 2.0;
        }
        (mean_t - slope * mean_b).clamp(0.0, quickest)
    }
}

/// The link as this sync has seen it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct LinkWatch {
    pub push: Size,
    pub pull: Size,
    pub audit: Size,
    /// What answers cost this sync.
    pub cost: Cost,
    /// Interruptions this sync, and failures since the last answer that did not halve a size.
    pub interruptions: u32,
    pub in_a_row: u32,
    /// The server streams pulls and takes streamed pushes (its catalog said so).
    pub streams: bool,
    /// The transport reads answers while sending (the driver says so).
    pub reads_while_sending: bool,
    /// ...and the server answers a streamed push as it applies it (its catalog said so): after
    /// a cut, what was not acknowledged is sent again rather than asked about...
    pub duplex: bool,
    /// ...unless cuts keep coming with no answer at all (a proxy on the way may hold the
    /// answers back): streamed pushes cut in a row before any answer came.
    pub silent_cuts: u32,
    /// Changes taken as arrived that had not, this sync: each makes the guess half a message
    /// more careful, and four stop it (`push_answers::taken_as_arrived`).
    pub wrong_guesses: u32,
    /// When (since the sync began) the link last carried something useful, and when the last
    /// request failed: a link that carried something lately is up, however often it drops.
    pub last_progress: Duration,
    pub last_failure: Duration,
}

impl LinkWatch {
    pub fn new(push: usize, pull: usize, audit: usize) -> Self {
        Self {
            push: Size::new(push, MAX_PUSH),
            pull: Size::new(pull, MAX_PULL),
            audit: Size::new(audit, MAX_AUDIT),
            cost: Cost::default(),
            interruptions: 0,
            in_a_row: 0,
            streams: false,
            reads_while_sending: false,
            duplex: false,
            silent_cuts: 0,
            wrong_guesses: 0,
            last_progress: Duration::ZERO,
            last_failure: Duration::ZERO,
        }
    }

    fn streamed(&self, batch: Batch) -> bool {
        self.streams && matches!(batch, Batch::Push | Batch::Pull)
    }

    /// Link time a request of `batch` may take, after `elapsed` of this sync.
    fn budget_for(&self, batch: Batch, elapsed: Duration) -> f64 {
        if self.streamed(batch) {
            STREAM_SECONDS
        } else {
            self.budget(elapsed)
        }
    }

    /// Entries per page of a streamed pull (a stream holds at most `MAX_MESSAGES` pages).
    pub fn pull_page(&self) -> usize {
        let current = self.pull.current;
        let fewest = current.div_ceil(zoufang_protocol::stream::MAX_MESSAGES);
        let overlap = current.div_ceil(PAGES_AT_LEAST);
        self.pull.per_message().min(overlap).max(fewest)
    }

    /// Changes per message of a streamed push.
    pub fn push_frame(&self) -> usize {
        self.push.per_message()
    }

    /// A streamed request was cut after some of its messages had arrived: the link's normal
    /// life, and progress.
    pub fn cut_after_progress(&mut self, elapsed: Duration) {
        self.interruptions += 1;
        self.in_a_row = 0;
        self.last_progress = elapsed;
    }

    /// The link carried something within [`LIVE_LINK`] of its last failure.
    fn lately_alive(&self) -> bool {
        self.last_failure.saturating_sub(self.last_progress) < LIVE_LINK
    }

    pub fn size(&mut self, batch: Batch) -> &mut Size {
        match batch {
            Batch::Push => &mut self.push,
            Batch::Pull => &mut self.pull,
            Batch::Audit => &mut self.audit,
        }
    }

    fn overhead(&self) -> f64 {
        self.cost.overhead()
    }

    /// Link time a request may take, after `elapsed` of this sync.
    pub fn budget(&self, elapsed: Duration) -> f64 {
        if self.interruptions == 0 {
            return REQUEST_SECONDS;
        }
        let up_between_drops = elapsed.as_secs_f64() / f64::from(self.interruptions);
        (self.overhead() * up_between_drops)
            .sqrt()
            .min(REQUEST_SECONDS)
    }

    /// An answer came: `bytes` went both ways in `took`, carrying `items` of `batch`.
    pub fn answered(
        &mut self,
        batch: Option<(Batch, usize)>,
        (bytes, took): (usize, Duration),
        elapsed: Duration,
    ) {
        self.in_a_row = 0;
        self.last_progress = elapsed;
        let took = took.as_secs_f64();
        self.cost.add(bytes, took);
        if let Some((batch, items)) = batch {
            let (budget, overhead) = (self.budget_for(batch, elapsed), self.overhead());
            self.size(batch).succeeded(items, took, budget, overhead);
        }
    }
}

impl<L: LocalState + ?Sized> SyncEngine<'_, L> {
    /// The request in flight got no answer: try again from the store's state, smaller if it was
    /// too big for the link (nothing it carried was lost: a push's changes stay in the outbox
    /// until acknowledged, a page's cursor moves only when applied).
    pub(super) fn request_interrupted(
        &mut self,
        flight: &InFlight,
        reason: &str,
        now: Moment,
    ) -> Result<()> {
        let out_for = now.elapsed.saturating_sub(self.sent_elapsed).as_secs_f64();
        let link = &mut self.link;
        link.interruptions += 1;
        link.last_failure = now.elapsed;
        let budget = link.budget(now.elapsed);
        let batch = match flight {
            InFlight::Push { .. } => Some(Batch::Push),
            InFlight::Pull => Some(Batch::Pull),
            InFlight::Audit(_) => Some(Batch::Audit),
            _ => None,
        };
        // A request out longer than the budget was too big for the link as it is now: it is
        // halved, which is progress of its own (at most log2 of the size). Any other failure
        // counts against the link: enough of them without an answer in between, and the link
        // is down, not small (a refused connection fails at once, whatever the size).
        // A streamed request cut before its first message was too big for the link, if it was
        // out long enough to be the link's doing at all (a refused connection fails at once).
        let too_big = match batch {
            Some(b) if link.streamed(b) => out_for > link.overhead(),
            _ => out_for > budget,
        };
        match batch.map(|b| link.size(b)) {
            Some(s) if !s.at_minimum() && too_big => s.interrupted(),
            _ => link.in_a_row += 1,
        }
        tracing::debug!(
            request = flight.kind(),
            out_for,
            budget,
            push = link.push.current,
            pull = link.pull.current,
            audit = link.audit.current,
            in_a_row = link.in_a_row,
            "request interrupted; trying again"
        );
        if link.in_a_row > self.config.retry.attempts.max(1) {
            return Err(Error::Transport(self.how_far(reason)));
        }
        Ok(())
    }

    /// What a person reads when the link gave up: what happened, how far the sync got, and
    /// that nothing is lost.
    pub(super) fn how_far(&self, reason: &str) -> String {
        let r = &self.report;
        let step = match self.phase() {
            SyncPhase::Push => format!(
                "{} of {} changes sent",
                self.phase_done,
                self.progress().total
            ),
            SyncPhase::Pull => format!("{} updates received", r.pulled),
            SyncPhase::Audit => format!("{} audit entries sent", r.audit_uploaded),
            SyncPhase::Attachments => format!(
                "{} of {} photo bytes sent",
                self.phase_done,
                self.progress().total
            ),
            _ => format!("{} changes sent, {} updates received", r.pushed, r.pulled),
        };
        format!(
            "the link kept dropping ({reason}); {step}; nothing is lost, the next sync goes on from there"
        )
    }

    /// The pause before the next request: after two failures in a row that were not the
    /// request being too big, on a link that carried nothing for [`LIVE_LINK`] (it is down,
    /// not small). A link that drops often but carries between the drops is retried at once: a
    /// request sent right after a cut has the whole interval to the next one, a request sent
    /// after a random pause may not.
    pub(super) fn link_pause(&self) -> Option<Duration> {
        let n = self.link.in_a_row;
        (n >= 2 && !self.link.lately_alive()).then(|| self.config.retry.delay(n - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_link() {
        let mut s = Size::new(100, 2000);
        // Fast: 100 items in 10 ms → doubles, up to the max.
        for _ in 0..10 {
            s.succeeded(s.current, 0.01, 1.0, 0.0);
        }
        assert_eq!(s.current, 2000);
        // Slow: 2000 items took 20 s → at most halves per step, towards 100.
        s.succeeded(2000, 20.0, 1.0, 0.0);
        assert_eq!(s.current, 1000);
        for _ in 0..10 {
            let n = s.current;
            s.succeeded(n, n as f64 / 100.0, 1.0, 0.0);
        }
        assert_eq!(s.current, 100);
        // A short last batch never shrinks it.
        s.succeeded(3, 1.0, 1.0, 0.0);
        assert_eq!(s.current, 100);
        for _ in 0..20 {
            s.interrupted();
        }
        assert!(s.at_minimum());
    }

    #[test]
    fn a_streamed_message_is_a_moment_of_the_link() {
        let mut s = Size::new(160, 2000);
        // Before any answer: a sixteenth of the request.
        assert_eq!(s.per_message(), 10);
        // 10 ms an item: 8 items a message (80 ms), however large the request grows.
        s.succeeded(160, 1.6, STREAM_SECONDS, 0.0);
        assert_eq!((s.current, s.per_message()), (320, 8));
        // Never more than the request itself.
        let mut small = Size::new(4, 2000);
        small.succeeded(4, 0.004, STREAM_SECONDS, 0.0);
        assert_eq!(small.per_message(), small.current);
    }

    #[test]
    fn the_round_trip_is_paid_once_per_request_not_per_item() {
        // 150 ms of overhead, then 10 ms per item: a 1 s budget holds 85 items, not 1 s / 25 ms.
        let mut s = Size::new(40, 2000);
        for _ in 0..10 {
            let n = s.current;
            s.succeeded(n, 0.15 + n as f64 * 0.01, 1.0, 0.15);
        }
        assert_eq!(s.current, 85);
    }

    #[test]
    fn a_link_that_drops_often_gets_the_budget_that_moves_most() {
        let mut w = LinkWatch::new(100, 500, 100);
        // Answers of 1 KB and 11 KB at 150 ms + 0.1 ms per byte... in link terms: 10 KB/s.
        for (bytes, ms) in [(1000, 250), (11_000, 1250), (1000, 250)] {
            w.answered(
                None,
                (bytes, Duration::from_millis(ms)),
                Duration::from_secs(1),
            );
        }
        assert!((w.cost.overhead() - 0.15).abs() < 1e-6, "{:?}", w.cost);
        assert!((w.budget(Duration::from_secs(10)) - REQUEST_SECONDS).abs() < 1e-9);
        // Dropped every 2 s over 40 s, 150 ms round trips: √(0.15 × 2) ≈ 0.55 s.
        w.interruptions = 20;
        assert!((w.budget(Duration::from_secs(40)) - 0.3f64.sqrt()).abs() < 1e-9);
        // Every 0.5 s: √(0.15 × 0.5) ≈ 0.27 s, which still carries some bytes past the overhead.
        w.interruptions = 80;
        let b = w.budget(Duration::from_secs(40));
        assert!((b - 0.075f64.sqrt()).abs() < 1e-9 && b > 0.15);
    }

    #[test]
    fn answers_all_of_one_size_say_little_about_the_overhead() {
        let mut c = Cost::default();
        assert!((c.overhead() - FIRST_OVERHEAD).abs() < 1e-9);
        for _ in 0..5 {
            c.add(10_000, 0.6);
        }
        assert!((c.overhead() - 0.3).abs() < 1e-9);
        // Never more than the quickest answer, never negative.
        c.add(500, 0.01);
        c.add(20_000, 0.02);
        let o = c.overhead();
        assert!((0.0..=0.01).contains(&o), "{o}");
    }

    /// The budget a watch gives is where the model's throughput peaks.
    #[test]
    fn the_budget_is_the_best_request_length() {
        let mut w = LinkWatch::new(100, 500, 100);
        for (bytes, ms) in [(1000, 250), (11_000, 1250)] {
            w.answered(
                None,
                (bytes, Duration::from_millis(ms)),
                Duration::from_secs(1),
            );
        }
        // Dropped every 2 s over 40 s.
        w.interruptions = 20;
        let (o, window) = (w.cost.overhead(), 2.0f64);
        let moved = |x: f64| (x - o) * (window - x) / (x * window);
        let best = w.budget(Duration::from_secs(40));
        for x in [0.2, 0.3, 0.4, 0.5, 0.7, 0.9, 1.2, 1.6] {
            assert!(moved(best) >= moved(x), "{x}");
        }
    }
}
