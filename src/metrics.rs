//! Every Prometheus metric panelgate exports, in one registry per running gateway.
//!
//! Names follow Prometheus conventions: `panelgate_` prefix, `_total` counters, `_seconds`
//! histograms, base units. Labels are bounded: action, outcome, upstream, state, reason — never a key,
//! an order id or a link. Money counters are in the gateway's currency (exact amounts live in
//! the ledger; these are for graphs and alerts).

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// Buckets for request latencies: from 100 µs (answered from memory) to 30 s (an upstream's
/// timeout).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_seconds: HistogramVec,
    pub upstream_healthy: IntGaugeVec,
    pub upstream_breaker: IntGaugeVec,
    pub upstream_balance: GaugeVec,
    pub catalog_lookups: IntCounterVec,
    pub catalog_refreshes: IntCounterVec,
    pub catalog_services: IntGaugeVec,
    pub catalog_age_seconds: GaugeVec,
    pub upstream_services_listed: IntGaugeVec,
    pub upstream_currency_mismatch: IntGaugeVec,
    pub targets_skipped: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub orders_placed: IntCounterVec,
    pub orders: IntGaugeVec,
    pub orders_attention: IntGaugeVec,
    pub refunds: IntCounterVec,
    pub refunded: prometheus::CounterVec,
    pub refunds_withheld: IntCounterVec,
    pub revenue: prometheus::CounterVec,
    pub cost: prometheus::CounterVec,
    pub rejected_keys: IntCounter,
    pub rate_limited: IntCounter,
    pub reads_over_limit: IntCounterVec,
    pub store_errors: IntCounterVec,
    pub store_up: IntGaugeVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn amount(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::CounterVec {
    let c = prometheus::CounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn float_gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

impl Metrics {
    /// A fresh registry with every metric. The names are constants, so registering cannot
    /// fail; the `expect`s above document that, they never fire.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let build = gauge(
            &r,
            "panelgate_build_info",
            "Always 1; the labels say which build runs.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let single = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            r.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let store_up = gauge(
            &r,
            "panelgate_store_up",
            "1 while the database answers (the last readiness ping or write), 0 while it is unreachable.",
            &[],
        );
        store_up.with_label_values(&[] as &[&str]).set(1);
        Metrics {
            store_errors: counter(
                &r,
                "panelgate_store_errors_total",
                "Failed database operations by operation (hold, mark_placed, replay, apply_status, ping, balance, status, auth, …).",
                &["operation"],
            ),
            store_up,
            requests: counter(
                &r,
                "panelgate_requests_total",
                "API requests by action and outcome (ok, or the error class).",
                &["action", "outcome"],
            ),
            request_seconds: histogram(
                &r,
                "panelgate_request_duration_seconds",
                "Time to answer an API request, by action.",
                &["action"],
            ),
            upstream_requests: counter(
                &r,
                "panelgate_upstream_requests_total",
                "Calls to upstream panels by outcome. add: placed, refused, unknown, not_sent (what the reply meant). Other actions: ok, refused, unknown, not_sent, timeout, unreadable. rejected: deprecated alias counted beside refused.",
                &["upstream", "action", "outcome"],
            ),
            upstream_seconds: histogram(
                &r,
                "panelgate_upstream_request_duration_seconds",
                "Duration of calls to upstream panels.",
                &["upstream", "action"],
            ),
            upstream_breaker: gauge(
                &r,
                "panelgate_upstream_breaker_state",
                "Circuit breaker per upstream: 0 closed, 1 half-open (probing), 2 open (failing fast).",
                &["upstream"],
            ),
            upstream_healthy: gauge(
                &r,
                "panelgate_upstream_healthy",
                "1 while an upstream's circuit breaker is closed (it answers), else 0.",
                &["upstream"],
            ),
            upstream_balance: float_gauge(
                &r,
                "panelgate_upstream_balance",
                "Our account balance at each upstream, in its currency, as last polled.",
                &["upstream", "currency"],
            ),
            catalog_lookups: counter(
                &r,
                "panelgate_catalog_lookups_total",
                "Catalog reads answered from the built catalog (hit) or after rebuilding it (miss).",
                &["result"],
            ),
            catalog_refreshes: counter(
                &r,
                "panelgate_catalog_refreshes_total",
                "Fetches of upstream services lists by outcome.",
                &["upstream", "outcome"],
            ),
            catalog_services: gauge(
                &r,
                "panelgate_catalog_services",
                "Local services sold, by the upstream they are placed at.",
                &["upstream"],
            ),
            catalog_age_seconds: float_gauge(
                &r,
                "panelgate_catalog_list_age_seconds",
                "Age of the services list we hold for each upstream.",
                &["upstream"],
            ),
            upstream_services_listed: gauge(
                &r,
                "panelgate_upstream_services_listed",
                "Services in each upstream's last services list (0: it lists none).",
                &["upstream"],
            ),
            upstream_currency_mismatch: gauge(
                &r,
                "panelgate_upstream_currency_mismatch",
                "1 while an upstream states a currency the config does not expect: it takes no orders.",
                &["upstream"],
            ),
            targets_skipped: counter(
                &r,
                "panelgate_order_targets_skipped_total",
                "Targets an order was not sent to: below_cost (the sell price does not cover it) or currency (its stated currency is wrong or unknown).",
                &["upstream", "reason"],
            ),
            config_reloads: counter(
                &r,
                "panelgate_config_reloads_total",
                "Config reloads by outcome: ok, or refused (invalid file, or rules the upstreams' lists break; the running config stays).",
                &["outcome"],
            ),
            orders_placed: counter(
                &r,
                "panelgate_orders_placed_total",
                "Orders an upstream took, by upstream.",
                &["upstream"],
            ),
            orders: gauge(
                &r,
                "panelgate_orders",
                "Orders by state (unknown: the operator must resolve them).",
                &["state"],
            ),
            orders_attention: gauge(
                &r,
                "panelgate_orders_attention",
                "Orders that need the operator, by reason (unknown_outcome, refund_unknown, \
                 partial_without_remains, stuck) and upstream: `panelgate order list --attention`.",
                &["reason", "upstream"],
            ),
            refunds: counter(
                &r,
                "panelgate_refunds_total",
                "Refunds applied, by the status that caused them.",
                &["status"],
            ),
            refunded: amount(
                &r,
                "panelgate_refunded_amount_total",
                "Money refunded to customers, in our currency.",
                &["upstream"],
            ),
            refunds_withheld: counter(
                &r,
                "panelgate_refunds_withheld_total",
                "Partial orders that got no automatic refund because the upstream's figures \
                 cannot tell it, by attention reason (refund_unknown, partial_without_remains) \
                 and upstream: each waits for `panelgate order settle`.",
                &["reason", "upstream"],
            ),
            revenue: amount(
                &r,
                "panelgate_revenue_total",
                "Money charged for placed orders, in our currency.",
                &["upstream"],
            ),
            cost: amount(
                &r,
                "panelgate_cost_total",
                "What upstreams charged us for finished orders, in our currency.",
                &["upstream"],
            ),
            rejected_keys: single(
                "panelgate_rejected_keys_total",
                "Requests refused for a missing or invalid API key.",
            ),
            rate_limited: single(
                "panelgate_rate_limited_total",
                "Requests refused by a rate limit.",
            ),
            reads_over_limit: counter(
                &r,
                "panelgate_reads_over_limit_total",
                "Reads over the customer's read limit answered from what is held (HTTP 200, \
                 no upstream call), by action: status, refill_status, services.",
                &["action"],
            ),
            registry: r,
        }
    }

    /// Counts a failed database `operation` (a fixed name, never customer data); one that
    /// says the database is unreachable also turns `panelgate_store_up` to 0.
    pub fn store_failed(&self, operation: &'static str, e: &crate::store::StoreError) {
        self.store_errors.with_label_values(&[operation]).inc();
        if e.is_unavailable() {
            self.store_up.with_label_values(&[] as &[&str]).set(0);
        }
    }

    /// The database answered: `panelgate_store_up` back to 1.
    pub fn store_answered(&self) {
        self.store_up.with_label_values(&[] as &[&str]).set(1);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A money amount as a metric value (graphs only; the ledger keeps the exact figure).
pub fn as_metric(amount: Decimal) -> f64 {
    amount.to_f64().unwrap_or(0.0)
}
