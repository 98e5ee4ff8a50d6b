//! The gateway's two clocks, in one place so that tests can control time.
//!
//! - [`now`] is monotonic and runs on tokio's clock: every age, TTL, cooldown, rate limit and
//!   latency is measured on it. A test on `#[tokio::test(start_paused = true)]` moves it with
//!   `tokio::time::advance` (or lets tokio skip idle waits), so a 5-minute TTL costs no wall
//!   time. `std::time::Instant` is refused by clippy (`clippy.toml`) for this reason.
//! - [`now_millis`] is the wall clock in Unix milliseconds, for timestamps that are stored and
//!   compared across processes and restarts (order times, leases, sync deadlines): a monotonic
//!   instant means nothing to another instance or after a restart. Tokio cannot pause it.
//!
//! [`Pace`] is a [`governor`] clock over [`now`], so rate limiters keep tokio's time too.

use std::time::Duration;

use governor::clock::{Clock, ReasonablyRealtime};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::store::Millis;

pub use tokio::time::Instant;

/// Now, on tokio's (pausable) monotonic clock.
pub fn now() -> Instant {
    Instant::now()
}

/// Unix time in milliseconds, on the wall clock: for stored timestamps.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// A rate limiter's clock on tokio time. governor measures time from an origin of its own
/// choosing; the time since this clock's creation serves (governor implements its `Reference`
/// for [`Duration`]).
#[derive(Debug, Clone)]
pub struct Pace {
    origin: Instant,
}

impl Default for Pace {
    fn default() -> Self {
        Pace { origin: now() }
    }
}

impl Clock for Pace {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

impl ReasonablyRealtime for Pace {}

/// One rate limit on tokio time.
pub type Limiter = RateLimiter<NotKeyed, InMemoryState, Pace, NoOpMiddleware<Duration>>;

/// A rate limit per key on tokio time.
pub type KeyedLimiter<K> = RateLimiter<K, DashMapStateStore<K>, Pace, NoOpMiddleware<Duration>>;

pub fn limiter(quota: Quota) -> Limiter {
    RateLimiter::direct_with_clock(quota, Pace::default())
}

pub fn keyed_limiter<K: std::hash::Hash + Eq + Clone>(quota: Quota) -> KeyedLimiter<K> {
    RateLimiter::dashmap_with_clock(quota, Pace::default())
}

/// Waits until `limiter` admits one more. governor's own `until_ready` sleeps on a timer
/// thread of its own, which tokio's paused clock would not move.
pub async fn until_ready(limiter: &Limiter) {
    while let Err(not_until) = limiter.check() {
        tokio::time::sleep(not_until.wait_time_from(limiter.clock().now())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::{Quota, RateLimiter};
    use std::num::NonZeroU32;

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_rate_limit_takes_tokio_time() {
        let limiter = limiter(Quota::per_second(NonZeroU32::new(2).unwrap()));
        let start = now();
        for _ in 0..5 {
            until_ready(&limiter).await;
        }
        // A burst of 2, then 3 more at 2 a second.
        assert_eq!(start.elapsed(), Duration::from_millis(1_500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_on_pace_refills_as_tokio_time_advances() {
        let quota = Quota::per_second(NonZeroU32::new(1).unwrap());
        let pace = Pace::default();
        let limiter = RateLimiter::direct_with_clock(quota, pace.clone());
        assert!(limiter.check().is_ok());
        let refused = limiter.check().unwrap_err();
        let wait = refused.wait_time_from(pace.now());
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limiter.check().is_ok());
    }
}
