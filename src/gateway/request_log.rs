//! The record of what one request did, which the HTTP edge writes as its access-log line.

use std::sync::Arc;

use crate::auth::Caller;
use crate::protocol::Action;

/// Ids a request's log line names at most (it gives their count too): enough to follow an
/// order through the log, bounded however many a request asks about.
const LOGGED_IDS: usize = 5;

/// What one request did, for its request log line (not a log itself: the HTTP edge writes it).
#[derive(Debug, Default)]
pub struct RequestLog {
    pub customer: Option<Arc<Caller>>,
    /// The action asked for, when it could be read (empty otherwise).
    pub action: &'static str,
    /// Whether the request got past its key and the rate limits (or was answered over the
    /// read limit): the metrics count a request refused at the door under action `unknown`.
    pub admitted: bool,
    /// The first [`LOGGED_IDS`] ids asked about (orders, or refills for `refill_status`).
    pub ids: Vec<u64>,
    /// How many ids were asked about.
    pub ids_total: usize,
    pub upstream: Option<String>,
    pub order: Option<i64>,
    pub upstream_order: Option<String>,
    /// What the request came to where the log says more than the metric's outcome: for an
    /// `add` that reached an upstream, what its reply meant (placed, refused, unknown,
    /// not_sent); for a read over the customer's read limit answered from what is held,
    /// `held_over_limit`.
    pub outcome: Option<&'static str>,
}

impl RequestLog {
    /// Notes what a request asks, before anything may refuse it.
    pub(super) fn asked(&mut self, action: &Action) {
        self.action = action.name();
        let ids = action.ids();
        self.ids = ids.iter().take(LOGGED_IDS).copied().collect();
        self.ids_total = ids.len();
    }

    /// The logged ids, comma-separated (`-` for none).
    pub fn ids_text(&self) -> impl std::fmt::Display + '_ {
        IdsText(&self.ids)
    }
}

struct IdsText<'a>(&'a [u64]);

impl std::fmt::Display for IdsText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}
