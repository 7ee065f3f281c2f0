//! A hybrid logical clock: orders a device's own events even when its wall clock jumps back
//! (a phone whose battery died, a user fixing the date). Physical milliseconds plus a counter;
//! written as a fixed-width string so text order is clock order.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc {
    pub millis: u64,
    pub counter: u32,
}

impl Hlc {
    /// The next timestamp for a local event at wall-clock `physical_ms`: greater than every
    /// earlier one, and never behind the wall clock.
    pub fn tick(&mut self, physical_ms: u64) -> Hlc {
        if physical_ms > self.millis {
            self.millis = physical_ms;
            self.counter = 0;
        } else {
            self.bump();
        }
        *self
    }

    /// Takes in a timestamp seen from elsewhere (the server's clock): later local events
    /// order after it.
    pub fn observe(&mut self, remote: Hlc, physical_ms: u64) -> Hlc {
        let top = self.millis.max(remote.millis).max(physical_ms);
        let counter = match (top == self.millis, top == remote.millis) {
            (true, true) => self.counter.max(remote.counter).saturating_add(1),
            (true, false) => self.counter.saturating_add(1),
            (false, true) => remote.counter.saturating_add(1),
            (false, false) => 0,
        };
        self.millis = top;
        self.counter = counter;
        if self.counter == u32::MAX {
            self.bump();
        }
        *self
    }

    fn bump(&mut self) {
        if self.counter == u32::MAX {
            // Counter exhausted within one millisecond: borrow the next millisecond.
            self.millis = self.millis.saturating_add(1);
            self.counter = 0;
        } else {
            self.counter += 1;
        }
    }

    pub fn parse(s: &str) -> Option<Hlc> {
        let (m, c) = s.split_once('-')?;
        Some(Hlc {
            millis: m.parse().ok()?,
            counter: c.parse().ok()?,
        })
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:015}-{:010}", self.millis, self.counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Event {
        Local(u64),
        Remote(u64, u32, u64),
    }

    fn events() -> impl Strategy<Value = Vec<Event>> {
        prop::collection::vec(
            prop_oneof![
                (0u64..1_000_000).prop_map(Event::Local),
                (0u64..1_000_000, 0u32..5, 0u64..1_000_000)
                    .prop_map(|(m, c, p)| Event::Remote(m, c, p)),
            ],
            1..200,
        )
    }

    proptest! {
        /// Every timestamp is strictly greater than the one before, never behind the wall clock,
        /// after any remote timestamp it observed, and its text sorts like the clock.
        #[test]
        fn strictly_monotonic_and_never_behind(events in events()) {
            let mut clock = Hlc::default();
            let mut last: Option<Hlc> = None;
            for e in events {
                let (now, physical, remote) = match e {
                    Event::Local(p) => (clock.tick(p), p, None),
                    Event::Remote(m, c, p) => {
                        let r = Hlc { millis: m, counter: c };
                        (clock.observe(r, p), p, Some(r))
                    }
                };
                prop_assert!(now.millis >= physical);
                if let Some(r) = remote {
                    prop_assert!(now > r);
                }
                if let Some(prev) = last {
                    prop_assert!(now > prev);
                    prop_assert!(now.to_string() > prev.to_string());
                }
                prop_assert_eq!(Hlc::parse(&now.to_string()), Some(now));
                last = Some(now);
            }
        }
    }

    #[test]
    fn a_clock_set_back_still_moves_forward() {
        let mut c = Hlc::default();
        let a = c.tick(10_000);
        let b = c.tick(5_000);
        assert!(b > a && b.millis == 10_000 && b.counter == 1);
        let mut full = Hlc {
            millis: 7,
            counter: u32::MAX,
        };
        assert_eq!(
            full.tick(3),
            Hlc {
                millis: 8,
                counter: 0
            }
        );
    }
}
