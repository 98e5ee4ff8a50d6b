//! A circuit breaker per upstream: after `threshold` transport failures in a row the circuit
//! opens and calls fail at once (nothing is sent) for `cooldown`; then one probe call is let
//! through (half-open): its success closes the circuit, its failure opens it again. A dead
//! upstream then costs its callers one fast error instead of a timeout each.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::clock::{self, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    /// The value of the `panelgate_upstream_breaker_state` gauge.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe went out at `since`; another may go if it never reports back.
    HalfOpen {
        since: Instant,
    },
}

#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            inner: Mutex::new(Inner::Closed { failures: 0 }),
            threshold: threshold.max(1),
            cooldown,
        }
    }

    /// Whether a call may go out now. Moving from open to half-open admits the one probe.
    pub fn admit(&self) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let now = clock::now();
        match *inner {
            Inner::Closed { .. } => true,
            Inner::Open { until } if now >= until => {
                *inner = Inner::HalfOpen { since: now };
                true
            }
            Inner::Open { .. } => false,
            // A probe whose caller vanished must not keep the circuit shut forever.
            Inner::HalfOpen { since } if now >= since + self.cooldown => {
                *inner = Inner::HalfOpen { since: now };
                true
            }
            Inner::HalfOpen { .. } => false,
        }
    }

    /// Records the outcome of an admitted call: an answer (even a refusal) or a failure.
    pub fn record(&self, answered: bool) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let open = Inner::Open {
            until: clock::now() + self.cooldown,
        };
        *inner = match (&*inner, answered) {
            (_, true) => Inner::Closed { failures: 0 },
            (Inner::Closed { failures }, false) if failures + 1 < self.threshold => Inner::Closed {
                failures: failures + 1,
            },
            (Inner::Open { until }, false) => Inner::Open { until: *until },
            (_, false) => open,
        };
    }

    pub fn state(&self) -> State {
        match *self.inner.lock().unwrap_or_else(PoisonError::into_inner) {
            Inner::Closed { .. } => State::Closed,
            Inner::Open { .. } => State::Open,
            Inner::HalfOpen { .. } => State::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_probes_after_the_cooldown() {
        let b = Breaker::new(3, Duration::from_secs(10));
        for _ in 0..2 {
            assert!(b.admit());
            b.record(false);
        }
        assert_eq!(b.state(), State::Closed);
        // An answer in between resets the count.
        b.record(true);
        for _ in 0..3 {
            assert!(b.admit());
            b.record(false);
        }
        assert_eq!(b.state(), State::Open);
        assert!(!b.admit(), "open: fail fast");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.admit(), "the probe");
        assert_eq!(b.state(), State::HalfOpen);
        assert!(!b.admit(), "one probe at a time");
        b.record(false);
        assert_eq!(b.state(), State::Open);
        assert!(!b.admit());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.admit());
        b.record(true);
        assert_eq!(b.state(), State::Closed);
        assert!(b.admit());
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_reports_back_is_replaced() {
        let b = Breaker::new(1, Duration::from_secs(5));
        b.record(false);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.admit());
        assert!(!b.admit());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.admit(), "the lost probe does not keep the circuit shut");
    }
}
