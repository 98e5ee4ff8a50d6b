//! Fault injection: the ways real upstream panels misbehave, each a chance per request, drawn
//! from a seeded generator so a run can be repeated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A probability in parts per million (no floating point anywhere near the simulator's money).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Chance(u32);

impl Chance {
    pub const NEVER: Chance = Chance(0);
    pub const ALWAYS: Chance = Chance(1_000_000);

    /// `"0.05"`, `"5%"`, `"1"`.
    pub fn parse(text: &str) -> Option<Chance> {
        let text = text.trim();
        let (number, scale) = match text.strip_suffix('%') {
            Some(p) => (p.trim(), rust_decimal::Decimal::ONE_HUNDRED),
            None => (text, rust_decimal::Decimal::ONE),
        };
        let share = number.parse::<rust_decimal::Decimal>().ok()? / scale;
        if share.is_sign_negative() || share > rust_decimal::Decimal::ONE {
            return None;
        }
        let ppm = (share * rust_decimal::Decimal::from(1_000_000)).trunc();
        Some(Chance(rust_decimal::prelude::ToPrimitive::to_u32(&ppm)?))
    }

    pub fn hits(self, draw: u64) -> bool {
        (draw % 1_000_000) < u64::from(self.0)
    }
}

impl std::str::FromStr for Chance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Chance::parse(s)
            .ok_or_else(|| format!("{s:?} is not a chance between 0 and 1 (or 0% and 100%)"))
    }
}

impl std::fmt::Display for Chance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}",
            rust_decimal::Decimal::new(i64::from(self.0), 6).normalize()
        )
    }
}

impl Serialize for Chance {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Chance {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let text = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            _ => return Err(serde::de::Error::custom("a chance is a number or a string")),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The faults the simulator injects. Changeable at run time through `POST /_sim/faults`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Delay the reply by `slow_ms`.
    pub slow: Chance,
    pub slow_ms: u64,
    /// Answer HTTP 500 with an HTML page, without acting.
    pub http500: Chance,
    /// Answer 200 with a body that is not JSON, without acting.
    pub garbage: Chance,
    /// Act on the request (an `add` creates its order), then close the connection without a
    /// reply: the unknown-outcome case.
    pub hangup: Chance,
    /// Answer `{"error": error_text}` without acting (in the `panel_script` dialect:
    /// `{"status":"error","message": error_text}`, HTTP 200, text/html).
    pub error: Chance,
    pub error_text: Option<String>,
    /// Answer an HTML 403 page without acting (a firewall in front of the panel).
    pub http403: Chance,
    /// Answer HTTP 429 with a JSON error, without acting (a panel rate-limiting its users).
    pub http429: Chance,
    /// Act on the request (an `add` creates its order), then answer HTTP 504 with the JSON
    /// body `{"error":"Gateway Timeout"}`: a proxy that gave up after the panel acted.
    pub http504: Chance,
    /// Act on the request, then answer HTTP 200 with an empty body (a panel script that
    /// created the order and printed nothing).
    pub empty: Chance,
    /// Only requests with these actions are faulted; empty means all.
    pub actions: Vec<String>,
}

/// What to do to one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub delay: Option<Duration>,
    pub http500: bool,
    pub garbage: bool,
    pub error: Option<String>,
    pub hangup: bool,
    pub http403: bool,
    pub http429: bool,
    pub http504: bool,
    pub empty: bool,
}

impl Faults {
    pub fn plan(&self, action: &str, rng: &SplitMix) -> Plan {
        if !self.actions.is_empty() && !self.actions.iter().any(|a| a == action) {
            return Plan::default();
        }
        let mut plan = Plan::default();
        if self.slow.hits(rng.next()) {
            plan.delay = Some(Duration::from_millis(self.slow_ms));
        }
        if self.http500.hits(rng.next()) {
            plan.http500 = true;
        } else if self.garbage.hits(rng.next()) {
            plan.garbage = true;
        } else if self.error.hits(rng.next()) {
            plan.error = Some(
                self.error_text
                    .clone()
                    .unwrap_or_else(|| "Service temporarily unavailable".into()),
            );
        } else if self.hangup.hits(rng.next()) {
            plan.hangup = true;
        // The newer kinds draw only when set, so a seed replays the older kinds as before.
        } else if self.http403 != Chance::NEVER && self.http403.hits(rng.next()) {
            plan.http403 = true;
        } else if self.http429 != Chance::NEVER && self.http429.hits(rng.next()) {
            plan.http429 = true;
        } else if self.http504 != Chance::NEVER && self.http504.hits(rng.next()) {
            plan.http504 = true;
        } else if self.empty != Chance::NEVER && self.empty.hits(rng.next()) {
            plan.empty = true;
        }
        plan
    }
}

/// SplitMix64: tiny, seeded, and safe to share between tasks.
#[derive(Debug)]
pub struct SplitMix(AtomicU64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(AtomicU64::new(seed))
    }

    pub fn next(&self) -> u64 {
        let state = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(state)
    }
}

/// The SplitMix64 finaliser: a well-spread hash of one word. Used to derive every seeded
/// choice about an order from (seed, order id), whatever order requests arrive in.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chances_parse_in_every_form() {
        assert_eq!(Chance::parse("0.05"), Some(Chance(50_000)));
        assert_eq!(Chance::parse("5%"), Some(Chance(50_000)));
        assert_eq!(Chance::parse("1"), Some(Chance::ALWAYS));
        assert_eq!(Chance::parse("0"), Some(Chance::NEVER));
        assert_eq!(Chance::parse("1.5"), None);
        assert_eq!(Chance::parse("-0.1"), None);
        assert_eq!(Chance::parse("x"), None);
        assert_eq!(Chance(50_000).to_string(), "0.05");
    }

    #[test]
    fn always_and_never_are_exact() {
        let rng = SplitMix::new(7);
        for _ in 0..1000 {
            assert!(Chance::ALWAYS.hits(rng.next()));
            assert!(!Chance::NEVER.hits(rng.next()));
        }
    }

    #[test]
    fn plans_only_touch_the_listed_actions() {
        let faults = Faults {
            http500: Chance::ALWAYS,
            actions: vec!["add".into()],
            ..Faults::default()
        };
        let rng = SplitMix::new(1);
        assert!(faults.plan("add", &rng).http500);
        assert_eq!(faults.plan("status", &rng), Plan::default());
    }

    #[test]
    fn same_seed_same_draws() {
        let a = SplitMix::new(42);
        let b = SplitMix::new(42);
        for _ in 0..100 {
            assert_eq!(a.next(), b.next());
        }
    }
}
