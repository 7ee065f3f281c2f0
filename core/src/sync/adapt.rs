//! Request sizes that follow the link, and what the engine does when a request gets no answer.
//!
//! A batch should take about [`REQUEST_SECONDS`] of the link: big on the township's Wi-Fi
//! (fewer round trips and fsyncs), small on 2G, and smaller still on a link that drops often,
//! where it should take at most a quarter of the time the link has stayed up on average between
//! two drops this sync (a cut loses the request in flight, so a request that rarely fits is
//! worse than several that do). After a success the size moves towards that target, at most
//! doubling; after an interruption it halves. Interruptions do not end the sync: the request is
//! built again, smaller, from what the store says is left, and the sync fails only when
//! requests of the smallest size keep failing, with a message saying how far it got.

use std::time::Duration;

use super::engine::{InFlight, SyncEngine, SyncPhase};
use super::local::LocalState;
use crate::error::{Error, Result};

/// Link time one request should take, at most.
pub(super) const REQUEST_SECONDS: f64 = 1.0;
/// Upper bounds: the server's own (5,000 changes or pull entries), kept well below.
pub(super) const MAX_PUSH: usize = 2000;
pub(super) const MAX_PULL: usize = 5000;
pub(super) const MAX_AUDIT: usize = 2000;

/// One kind of batch's size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Size {
    pub current: usize,
    max: usize,
}

impl Size {
    pub fn new(start: usize, max: usize) -> Self {
        Self {
            current: start.clamp(1, max.max(1)),
            max: max.max(1),
        }
    }

    /// A batch of `items` took `took` (its whole round trip); `budget` is the link time a
    /// request may take now.
    pub fn succeeded(&mut self, items: usize, took: Duration, budget: f64) {
        if items == 0 {
            return;
        }
        let rate = items as f64 / took.as_secs_f64().max(1e-3);
        let target = (rate * budget) as usize;
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
}

/// The link as this sync has seen it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct LinkWatch {
    pub push: Size,
    pub pull: Size,
    pub audit: Size,
    /// Interruptions this sync, and failures in a row at the smallest size since an answer.
    pub interruptions: u32,
    pub in_a_row: u32,
}

impl LinkWatch {
    pub fn new(push: usize, pull: usize, audit: usize) -> Self {
        Self {
            push: Size::new(push, MAX_PUSH),
            pull: Size::new(pull, MAX_PULL),
            audit: Size::new(audit, MAX_AUDIT),
            interruptions: 0,
            in_a_row: 0,
        }
    }

    /// Link time a request may take, after `elapsed` of this sync.
    pub fn budget(&self, elapsed: Duration) -> f64 {
        if self.interruptions == 0 {
            return REQUEST_SECONDS;
        }
        let up_between_drops = elapsed.as_secs_f64() / f64::from(self.interruptions);
        (up_between_drops / 4.0).clamp(0.05, REQUEST_SECONDS)
    }
}

impl<L: LocalState + ?Sized> SyncEngine<'_, L> {
    /// The request in flight got no answer: shrink what it carried and try again, from the
    /// store's state (nothing it carried was lost: a push's changes stay in the outbox until
    /// acknowledged, a page's cursor moves only when applied).
    pub(super) fn request_interrupted(&mut self, flight: &InFlight, reason: &str) -> Result<()> {
        let link = &mut self.link;
        link.interruptions += 1;
        let size = match flight {
            InFlight::Push { .. } => Some(&mut link.push),
            InFlight::Pull => Some(&mut link.pull),
            InFlight::Audit(_) => Some(&mut link.audit),
            _ => None,
        };
        // Shrinking is the answer to a cut; only failures at the smallest size count against
        // the link (a server that cannot be reached fails the catalog, the first request).
        match size {
            Some(s) if !s.at_minimum() => s.interrupted(),
            _ => link.in_a_row += 1,
        }
        tracing::debug!(
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

    /// An answer came: the link is up.
    pub(super) fn answered(&mut self) {
        self.link.in_a_row = 0;
    }

    /// The pause before the next request: after two failures in a row at the smallest size
    /// (the link is down, not small); a cut is the link's normal life otherwise.
    pub(super) fn link_pause(&self) -> Option<Duration> {
        let n = self.link.in_a_row;
        (n >= 2).then(|| self.config.retry.delay(n - 1))
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
            s.succeeded(s.current, Duration::from_millis(10), 1.0);
        }
        assert_eq!(s.current, 2000);
        // Slow: 2000 items took 20 s → at most halves per step, towards 100.
        s.succeeded(2000, Duration::from_secs(20), 1.0);
        assert_eq!(s.current, 1000);
        for _ in 0..10 {
            let n = s.current;
            s.succeeded(n, Duration::from_secs_f64(n as f64 / 100.0), 1.0);
        }
        assert_eq!(s.current, 100);
        // A short last batch never shrinks it.
        s.succeeded(3, Duration::from_secs(1), 1.0);
        assert_eq!(s.current, 100);
        for _ in 0..20 {
            s.interrupted();
        }
        assert!(s.at_minimum());
    }

    #[test]
    fn a_link_that_drops_often_gets_a_smaller_budget() {
        let mut w = LinkWatch::new(100, 500, 100);
        assert!((w.budget(Duration::from_secs(10)) - REQUEST_SECONDS).abs() < 1e-9);
        w.interruptions = 20; // every 0.5 s over 10 s
        assert!((w.budget(Duration::from_secs(10)) - 0.125).abs() < 1e-9);
    }
}
