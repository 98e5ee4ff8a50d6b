//! Keeping orders and refills in step with their upstreams: batched multi-status calls (one
//! per upstream per ≤100 ids), each batch applied through the store in one transaction, which
//! refunds Partial and Canceled orders exactly once however often a status is seen.
//!
//! The same refresh serves the background loop and the `status` action's stale orders.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::LocalCatalog;
use crate::config::Config;
use crate::metrics::{self, Metrics};
use crate::money;
use crate::pricing;
use crate::protocol::reply::{OrderStatus, Remains};
use crate::protocol::{MAX_IDS, Status};
use crate::status_cache::StatusCache;
use crate::store::{
    Applied, Claim, Millis, Order, Refill, StatusUpdate, Store, StoreError, StuckCutoffs, Units,
};
use crate::upstream::Upstreams;

// Kept under its old name so that callers outside this module need not change with it.
pub use crate::clock::now_millis as now_ms;

/// What sync needs: the store, the upstream clients and the config (for currency rates).
#[derive(Clone)]
pub struct Syncer {
    pub cfg: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub upstreams: Arc<Upstreams>,
    pub metrics: Arc<Metrics>,
    /// Forgets what sync changes, so `status` answers show it at once.
    pub statuses: Arc<StatusCache>,
}

/// What a status refresh needs of an order placed upstream.
#[derive(Debug, Clone)]
pub struct Tracked<'a> {
    pub id: i64,
    pub upstream: &'a str,
    pub upstream_order: &'a str,
}

impl Syncer {
    /// Asks the upstreams for the status of `orders` (placed ones; others are skipped) and
    /// applies what they say. Failures are logged; the orders simply stay as they were.
    pub async fn refresh_orders(&self, orders: &[&Order]) {
        let tracked: Vec<Tracked<'_>> = orders
            .iter()
            .filter_map(|o| {
                Some(Tracked {
                    id: o.id,
                    upstream: &o.upstream,
                    upstream_order: o.upstream_order.as_deref()?,
                })
            })
            .collect();
        let answers = self.ask(&tracked).await;
        self.apply_all(answers).await;
    }

    /// What the upstreams say of `orders`: one multi-status call per upstream per ≤100 ids.
    /// Orders an upstream does not report, or whose call failed, are left out (and logged).
    pub async fn ask<'a>(&self, orders: &'a [Tracked<'a>]) -> Vec<(&'a Tracked<'a>, StatusUpdate)> {
        let mut by_upstream: HashMap<&str, Vec<&Tracked<'a>>> = HashMap::new();
        for t in orders {
            by_upstream.entry(t.upstream).or_default().push(t);
        }
        let mut answers = Vec::with_capacity(orders.len());
        for (name, orders) in by_upstream {
            let Some(upstream) = self.upstreams.get(name) else {
                continue;
            };
            let fx = self
                .cfg
                .upstream(name)
                .map_or(rust_decimal::Decimal::ONE, |u| u.fx);
            for chunk in orders.chunks(MAX_IDS) {
                let ids: Vec<&str> = chunk.iter().map(|t| t.upstream_order).collect();
                let reply = match upstream.statuses(&ids).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(upstream = name, error = %e, "status sync failed");
                        continue;
                    }
                };
                let ours: HashMap<&str, &'a Tracked<'a>> =
                    chunk.iter().map(|t| (t.upstream_order, *t)).collect();
                for (upstream_order, item) in reply.0 {
                    let Some(&t) = ours.get(upstream_order.as_str()) else {
                        continue;
                    };
                    let status = match item {
                        Ok(s) => s,
                        Err(text) => {
                            tracing::warn!(upstream = name, order = t.id, %upstream_order, error = %text, "upstream does not report this order");
                            continue;
                        }
                    };
                    answers.push((t, update_from(status, fx)));
                }
            }
        }
        answers
    }

    /// Writes what the upstreams said of a batch of orders (refunding those that became
    /// Partial or Canceled) in one transaction; failures are logged and counted per order.
    pub async fn apply_all(&self, answers: Vec<(&Tracked<'_>, StatusUpdate)>) {
        if answers.is_empty() {
            return;
        }
        let (tracked, batch): (Vec<&Tracked<'_>>, Vec<(i64, StatusUpdate)>) =
            answers.into_iter().map(|(t, u)| (t, (t.id, u))).unzip();
        let polled = tracked.iter().zip(&batch);
        match self.store.apply_statuses(&batch, now_ms()).await {
            Ok(results) => {
                for ((t, (id, update)), result) in polled.zip(&results) {
                    self.record(t.upstream, *id, update, result.as_ref().copied());
                }
            }
            // The whole batch was refused as one (the database away): each order tells it.
            Err(e) => {
                for (t, (id, update)) in polled {
                    self.record(t.upstream, *id, update, Err(&e));
                }
            }
        }
    }

    /// Logs and counts what applying `update` to order `id` did, and forgets the order's held
    /// status unless the database was away (then nothing changed).
    fn record(
        &self,
        upstream: &str,
        id: i64,
        update: &StatusUpdate,
        applied: Result<Applied, &StoreError>,
    ) {
        if !matches!(&applied, Err(e) if e.is_unavailable()) {
            self.statuses.forget(id);
        }
        match applied {
            Ok(applied) if applied.finalized => {
                tracing::info!(
                    order = id,
                    status = update.status.as_str(),
                    refund = %money::format(money::from_units(applied.refund)),
                    "order final"
                );
                self.count_final(upstream, update.status, applied.refund, update.cost);
                if let Some(mark) = applied.attention {
                    tracing::warn!(
                        order = id,
                        reason = mark.as_str(),
                        "Partial order refunded nothing: the upstream's figures cannot tell \
                         what it gave back; settle it with `panelgate order settle`"
                    );
                    self.metrics
                        .refunds_withheld
                        .with_label_values(&[mark.as_str(), upstream])
                        .inc();
                }
            }
            Ok(_) => {}
            // Nothing was written: the order stays placed and stale, so the next pass (or
            // the next `status` poll) asks the upstream again and applies it then.
            Err(e) => {
                self.metrics.store_failed("apply_status", e);
                tracing::error!(order = id, error = %e, "applying a status failed");
            }
        }
    }

    fn count_final(&self, upstream: &str, status: Status, refund: Units, cost: Option<Units>) {
        let m = &self.metrics;
        if refund > 0 {
            m.refunds.with_label_values(&[status.as_str()]).inc();
            m.refunded
                .with_label_values(&[upstream])
                .inc_by(metrics::as_metric(money::from_units(refund)));
        }
        if let Some(cost) = cost {
            m.cost
                .with_label_values(&[upstream])
                .inc_by(metrics::as_metric(money::from_units(cost)));
        }
    }

    /// Refreshes the status of unfinished refills.
    pub async fn refresh_refills(&self, refills: &[&Refill]) {
        let mut by_upstream: HashMap<&str, Vec<&Refill>> = HashMap::new();
        for r in refills.iter().filter(|r| !r.status.is_final()) {
            by_upstream.entry(r.upstream.as_str()).or_default().push(r);
        }
        for (name, refills) in by_upstream {
            let Some(upstream) = self.upstreams.get(name) else {
                continue;
            };
            for chunk in refills.chunks(MAX_IDS) {
                let ids: Vec<u64> = chunk.iter().map(|r| r.upstream_refill).collect();
                let reply = match upstream.refill_statuses(&ids).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(upstream = name, error = %e, "refill sync failed");
                        continue;
                    }
                };
                let ours: HashMap<u64, i64> =
                    chunk.iter().map(|r| (r.upstream_refill, r.id)).collect();
                for (upstream_refill, item) in reply.0 {
                    let (Some(&id), Ok(status)) = (ours.get(&upstream_refill), item) else {
                        continue;
                    };
                    if let Err(e) = self.store.update_refill(id, status, now_ms()).await {
                        tracing::error!(refill = id, error = %e, "updating a refill failed");
                    }
                }
            }
        }
    }

    /// One pass over every upstream: each placed order and unfinished refill not synced in
    /// the last `interval` is claimed (leased to this instance) and asked about once.
    pub async fn pass(&self, interval: Duration) {
        let now = now_ms();
        let claim = Claim {
            stale_before: now - interval.as_millis() as Millis,
            now,
            lease_until: now + self.cfg.sync_lease.as_millis() as Millis,
            limit: MAX_IDS as u32,
        };
        for upstream in &self.cfg.upstreams {
            // Claimed rows are leased, so the loop ends when nothing unclaimed is left; the
            // seen-set guards against a store that hands the same rows out again.
            let mut seen = HashSet::new();
            loop {
                let batch = match self.store.orders_to_sync(&upstream.name, &claim).await {
                    Ok(b) => b,
                    Err(e) => {
                        self.metrics.store_failed("sync_claim", &e);
                        tracing::error!(error = %e, "claiming orders to sync failed");
                        break;
                    }
                };
                let fresh: Vec<&Order> = batch.iter().filter(|o| seen.insert(o.id)).collect();
                if fresh.is_empty() {
                    break;
                }
                self.refresh_orders(&fresh).await;
                if batch.len() < MAX_IDS {
                    break;
                }
            }
            let mut seen = HashSet::new();
            loop {
                let batch = match self.store.refills_to_sync(&upstream.name, &claim).await {
                    Ok(b) => b,
                    Err(e) => {
                        self.metrics.store_failed("sync_claim", &e);
                        tracing::error!(error = %e, "claiming refills to sync failed");
                        break;
                    }
                };
                let fresh: Vec<&Refill> = batch.iter().filter(|r| seen.insert(r.id)).collect();
                if fresh.is_empty() {
                    break;
                }
                self.refresh_refills(&fresh).await;
                if batch.len() < MAX_IDS {
                    break;
                }
            }
        }
        self.recover_abandoned().await;
    }

    /// Orders whose dispatch died with its process (here or on another instance) become
    /// `unknown` for the operator, once no dispatch could still be running.
    pub async fn recover_abandoned(&self) {
        let now = now_ms();
        let (deadline_before, updated_before) = abandoned_before(&self.cfg, now);
        match self
            .store
            .recover_dispatching(deadline_before, updated_before, now)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::error!(
                orders = n,
                "orders abandoned mid-dispatch are now `unknown`: resolve them with `panelgate order resolve`"
            ),
            Err(e) => tracing::error!(error = %e, "recovering abandoned dispatches failed"),
        }
    }
}

impl Syncer {
    /// Marks placed orders the upstream has said nothing new of for `sync.stuck_after` (or
    /// their service's own) as stuck, for the operator. Panel scripts show their failed orders
    /// as Pending for ever, with the customer's money held.
    pub async fn mark_stuck(&self, catalog: &LocalCatalog) {
        let now = now_ms();
        let cutoffs = stuck_cutoffs(&self.cfg, catalog, now);
        match self.store.mark_stuck(&cutoffs, now).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                orders = n,
                "placed orders have not moved upstream for `sync.stuck_after`: see `panelgate order list --stuck`"
            ),
            Err(e) => tracing::error!(error = %e, "marking stuck orders failed"),
        }
    }
}

/// Each service's stuck cutoff: `sync.stuck_after` before `now`, or the service's own.
/// Explicit services are taken from the config too, so that an upstream whose list is not
/// loaded does not fall back to the default for them. Off (zero) is a cutoff nothing is
/// older than.
pub fn stuck_cutoffs(cfg: &Config, catalog: &LocalCatalog, now: Millis) -> StuckCutoffs {
    let before = |d: Option<Duration>| {
        d.filter(|d| !d.is_zero())
            .map_or(Millis::MIN, |d| now - d.as_millis() as Millis)
    };
    let mut services: Vec<(u64, Millis)> = catalog
        .services()
        .filter_map(|s| Some((s.id(), before(Some(s.stuck_after?)))))
        .collect();
    for e in &cfg.explicit {
        if let Some(d) = e.overrides.stuck_after
            && !services.iter().any(|(id, _)| *id == e.id)
        {
            services.push((e.id, before(Some(d))));
        }
    }
    StuckCutoffs {
        before: before(cfg.stuck_after),
        services,
    }
}

/// How far in the past a dispatch's recorded deadline (and, for orders placed before
/// deadlines were recorded, its last change) must be for no process to be still running it.
/// The margin covers clock differences between instances sharing a database.
pub fn abandoned_before(cfg: &Config, now: Millis) -> (Millis, Millis) {
    const CLOCK_MARGIN: Millis = 5_000;
    (
        now - CLOCK_MARGIN,
        now - cfg.dispatch_deadline().as_millis() as Millis,
    )
}

/// An upstream's status of one order as the store takes it, its charge in our money.
fn update_from(status: OrderStatus, fx: rust_decimal::Decimal) -> StatusUpdate {
    StatusUpdate {
        status: status.status,
        remains: match status.remains {
            Remains::Count(n) => Some(n),
            Remains::Unknown => None,
        },
        start_count: Some(status.start_count),
        cost: money::to_units(money::round_up(pricing::convert(status.charge, fx))),
        runs: status.runs,
        child_orders: status.orders,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each service's cutoff: the default, its own, or none (0s); an explicit service keeps its
    /// own while its upstream's list is not loaded (it is not in the catalog then).
    #[test]
    fn stuck_cutoffs_follow_the_config_and_the_services() {
        let text = "upstreams:\n  - name: alpha\n    url: \"http://127.0.0.1:9/api/v2\"\n    key: k\n\
            services:\n  - id: 1\n    upstream: alpha\n    service: 102\n    markup: { percent: 25 }\n    stuck_after: 2h\n\
            \x20 - id: 2\n    upstream: alpha\n    service: 103\n    markup: { percent: 25 }\n    stuck_after: 0s\n\
            sync:\n  stuck_after: 1h\n";
        let cfg = crate::config::parse(text, std::path::Path::new("/tmp/c.yaml")).unwrap();
        let catalog = LocalCatalog::build(&cfg, &HashMap::new());
        let now = 10_000_000;
        let mut c = stuck_cutoffs(&cfg, &catalog, now);
        c.services.sort();
        assert_eq!(c.before, now - 3_600_000);
        assert_eq!(c.services, [(1, now - 7_200_000), (2, Millis::MIN)]);

        let off = crate::config::parse(
            &text.replace("sync:\n  stuck_after: 1h\n", "sync:\n  stuck_after: 0s\n"),
            std::path::Path::new("/tmp/c.yaml"),
        )
        .unwrap();
        assert_eq!(stuck_cutoffs(&off, &catalog, now).before, Millis::MIN);
    }
}
