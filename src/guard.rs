//! Who may come in, and how often: GCRA rate limits per customer (governor, keyed by
//! customer, with quotas per price group), one for writes and one for reads, and a cap on
//! failed key attempts per IP address so that keys cannot be guessed at line rate. All are
//! per instance, and a reload starts them afresh (a new config's gateway gets a new guard).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use dashmap::DashMap;
use governor::Quota;
use governor::clock::Clock;

use crate::clock::{self, Instant, KeyedLimiter};
use crate::config::{Config, DEFAULT_GROUP, RateSpec};
use crate::protocol::Action;

/// Length of the window failed key attempts are counted in.
const WINDOW: Duration = Duration::from_secs(60);

/// Which of a customer's allowances a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    Writes,
    Reads,
}

impl Allowance {
    /// Reads change nothing and are answered from what is held; everything else, a request
    /// whose action cannot be read included, counts as a write.
    pub fn of<E>(action: &Result<Action, E>) -> Allowance {
        match action {
            Ok(
                Action::Status(_) | Action::RefillStatus(_) | Action::Balance | Action::Services,
            ) => Allowance::Reads,
            _ => Allowance::Writes,
        }
    }
}

/// One price group's limiters, keyed by customer.
struct Limiters {
    writes: KeyedLimiter<i64>,
    reads: KeyedLimiter<i64>,
}

pub struct Guard {
    clients: HashMap<String, Limiters>,
    failed_keys_per_window: u32,
    /// Failed key attempts per address in the current window (start, count).
    failed: DashMap<IpAddr, (Instant, u32)>,
    last_sweep: Mutex<Instant>,
}

fn quota(r: &RateSpec) -> Quota {
    let per_second = NonZeroU32::new(r.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = r.burst.and_then(NonZeroU32::new).unwrap_or(per_second);
    Quota::per_second(per_second).allow_burst(burst)
}

impl Guard {
    pub fn new(cfg: &Config) -> Guard {
        Guard {
            clients: cfg
                .client_rates
                .iter()
                .map(|(group, r)| {
                    let limiters = Limiters {
                        writes: clock::keyed_limiter(quota(&r.writes)),
                        reads: clock::keyed_limiter(quota(&r.reads)),
                    };
                    (group.clone(), limiters)
                })
                .collect(),
            failed_keys_per_window: cfg.failed_keys_per_minute.max(1),
            failed: DashMap::new(),
            last_sweep: Mutex::new(clock::now()),
        }
    }

    /// Takes one request from the customer's allowance; `Err(wait)` when it is spent.
    pub fn admit_client(
        &self,
        group: &str,
        customer: i64,
        allowance: Allowance,
    ) -> Result<(), Duration> {
        let limiters = self
            .clients
            .get(group)
            .or_else(|| self.clients.get(DEFAULT_GROUP));
        let limiter = limiters.map(|l| match allowance {
            Allowance::Writes => &l.writes,
            Allowance::Reads => &l.reads,
        });
        match limiter.map(|l| (l, l.check_key(&customer))) {
            Some((l, Err(not_until))) => Err(not_until.wait_time_from(l.clock().now())),
            _ => Ok(()),
        }
    }

    /// Whether an address may still try keys; `Err(wait)` after too many failures.
    pub fn admit_address(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = clock::now();
        match self.failed.get(&ip).map(|e| *e) {
            Some((start, count))
                if now < start + WINDOW && count >= self.failed_keys_per_window =>
            {
                Err(start + WINDOW - now)
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed key attempt from `ip`.
    pub fn failed_key(&self, ip: IpAddr) {
        let now = clock::now();
        let mut entry = self.failed.entry(ip).or_insert((now, 0));
        if now >= entry.0 + WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }

    /// Housekeeping, at most once a minute: forget limiter state of customers who have gone
    /// quiet and windows that are over, so that memory stays bounded.
    pub fn sweep(&self) {
        let now = clock::now();
        {
            let mut last = self
                .last_sweep
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if now < *last + WINDOW {
                return;
            }
            *last = now;
        }
        for limiter in self.clients.values().flat_map(|l| [&l.writes, &l.reads]) {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.failed.retain(|_, (start, _)| now < *start + WINDOW);
        self.failed.shrink_to_fit();
    }
}

/// Whole seconds to wait, at least 1 (the `Retry-After` header's unit).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.as_secs() == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(limits: &str) -> Guard {
        let text = format!("limits:\n{limits}");
        Guard::new(&crate::config::parse(&text, std::path::Path::new("/x/config.yaml")).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_allowance_refills_as_time_passes() {
        let guard = guard("  per_client_reads: { per_second: 1, burst: 2 }\n");
        let read = || guard.admit_client(DEFAULT_GROUP, 7, Allowance::Reads);
        assert_eq!((read(), read()), (Ok(()), Ok(())));
        assert_eq!(read(), Err(Duration::from_secs(1)));
        assert_eq!(
            guard.admit_client(DEFAULT_GROUP, 8, Allowance::Reads),
            Ok(())
        );
        assert_eq!(
            guard.admit_client(DEFAULT_GROUP, 7, Allowance::Writes),
            Ok(())
        );
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(read().is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(read(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_that_guesses_keys_is_shut_out_for_the_rest_of_the_minute() {
        let guard = guard("  failed_keys_per_minute: 3\n");
        let ip = IpAddr::from([192, 0, 2, 1]);
        for _ in 0..3 {
            assert_eq!(guard.admit_address(ip), Ok(()));
            guard.failed_key(ip);
        }
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(guard.admit_address(ip), Err(Duration::from_secs(40)));
        assert_eq!(guard.admit_address(IpAddr::from([192, 0, 2, 2])), Ok(()));
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(guard.admit_address(ip), Ok(()));
    }

    #[test]
    fn waits_round_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
