//! Every Prometheus metric panelgate exports, in one registry per running gateway.
//!
//! Names follow Prometheus conventions: `panelgate_` prefix, `_total` counters, `_seconds`
//! histograms, base units. Labels are bounded: action, outcome, upstream, state, reason — never a key,
//! an order id or a link. Money counters are in the gateway's currency (exact amounts live in
//! the ledger; these are for graphs and alerts).

use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
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
    pub catalog_build_seconds: Gauge,
    pub upstream_services_listed: IntGaugeVec,
    pub upstream_currency_mismatch: IntGaugeVec,
    pub targets_skipped: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub orders_placed: IntCounterVec,
    pub orders: IntGaugeVec,
    pub orders_attention: IntGaugeVec,
    pub refunds: IntCounterVec,
    pub refunded: CounterVec,
    pub refunds_withheld: IntCounterVec,
    pub revenue: CounterVec,
    pub cost: CounterVec,
    pub rejected_keys: IntCounter,
    pub rate_limited: IntCounter,
    pub reads_over_limit: IntCounterVec,
    pub store_errors: IntCounterVec,
    pub store_up: IntGauge,
}

/// What a metric is called, what it means, and the labels it is split by.
struct Spec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
}

const BUILD_INFO: Spec = Spec {
    name: "panelgate_build_info",
    help: "Always 1; the labels say which build runs.",
    labels: &["version"],
};

// The API edge: requests as they come in and what was refused.
const REQUESTS: Spec = Spec {
    name: "panelgate_requests_total",
    help: "API requests by action and outcome (ok, or the error class).",
    labels: &["action", "outcome"],
};
const REQUEST_SECONDS: Spec = Spec {
    name: "panelgate_request_duration_seconds",
    help: "Time to answer an API request, by action.",
    labels: &["action"],
};
const REJECTED_KEYS: Spec = Spec {
    name: "panelgate_rejected_keys_total",
    help: "Requests refused for a missing or invalid API key.",
    labels: &[],
};
const RATE_LIMITED: Spec = Spec {
    name: "panelgate_rate_limited_total",
    help: "Requests refused by a rate limit.",
    labels: &[],
};
const READS_OVER_LIMIT: Spec = Spec {
    name: "panelgate_reads_over_limit_total",
    help: "Reads over the customer's read limit answered from what is held (HTTP 200, \
    no upstream call), by action: status, refill_status, services.",
    labels: &["action"],
};

// The upstream panels: calls, breakers, balances.
const UPSTREAM_REQUESTS: Spec = Spec {
    name: "panelgate_upstream_requests_total",
    help: "Calls to upstream panels by outcome. add: placed, refused, unknown, not_sent (what the reply meant). Other actions: ok, refused, unknown, not_sent, timeout, unreadable. rejected: deprecated alias counted beside refused.",
    labels: &["upstream", "action", "outcome"],
};
const UPSTREAM_SECONDS: Spec = Spec {
    name: "panelgate_upstream_request_duration_seconds",
    help: "Duration of calls to upstream panels.",
    labels: &["upstream", "action"],
};
const UPSTREAM_BREAKER: Spec = Spec {
    name: "panelgate_upstream_breaker_state",
    help: "Circuit breaker per upstream: 0 closed, 1 half-open (probing), 2 open (failing fast).",
    labels: &["upstream"],
};
const UPSTREAM_HEALTHY: Spec = Spec {
    name: "panelgate_upstream_healthy",
    help: "1 while an upstream's circuit breaker is closed (it answers), else 0.",
    labels: &["upstream"],
};
const UPSTREAM_BALANCE: Spec = Spec {
    name: "panelgate_upstream_balance",
    help: "Our account balance at each upstream, in its currency, as last polled.",
    labels: &["upstream", "currency"],
};
const UPSTREAM_SERVICES_LISTED: Spec = Spec {
    name: "panelgate_upstream_services_listed",
    help: "Services in each upstream's last services list (0: it lists none).",
    labels: &["upstream"],
};
const UPSTREAM_CURRENCY_MISMATCH: Spec = Spec {
    name: "panelgate_upstream_currency_mismatch",
    help: "1 while an upstream states a currency the config does not expect: it takes no orders.",
    labels: &["upstream"],
};

// The catalog: services lists and what is sold.
const CATALOG_LOOKUPS: Spec = Spec {
    name: "panelgate_catalog_lookups_total",
    help: "Catalog reads answered from the built catalog (hit) or after rebuilding it (miss).",
    labels: &["result"],
};
const CATALOG_REFRESHES: Spec = Spec {
    name: "panelgate_catalog_refreshes_total",
    help: "Fetches of upstream services lists by outcome.",
    labels: &["upstream", "outcome"],
};
const CATALOG_SERVICES: Spec = Spec {
    name: "panelgate_catalog_services",
    help: "Local services sold, by the upstream they are placed at.",
    labels: &["upstream"],
};
const CATALOG_AGE_SECONDS: Spec = Spec {
    name: "panelgate_catalog_list_age_seconds",
    help: "Age of the services list we hold for each upstream.",
    labels: &["upstream"],
};

const CATALOG_BUILD_SECONDS: Spec = Spec {
    name: "panelgate_catalog_build_seconds",
    help: "Time the last catalog build took: prices, listings and their gzip, for every group.",
    labels: &[],
};

// Orders and money.
const TARGETS_SKIPPED: Spec = Spec {
    name: "panelgate_order_targets_skipped_total",
    help: "Targets an order was not sent to: below_cost (the sell price does not cover it) or currency (its stated currency is wrong or unknown).",
    labels: &["upstream", "reason"],
};
const ORDERS_PLACED: Spec = Spec {
    name: "panelgate_orders_placed_total",
    help: "Orders an upstream took, by upstream.",
    labels: &["upstream"],
};
const ORDERS: Spec = Spec {
    name: "panelgate_orders",
    help: "Orders by state (unknown: the operator must resolve them).",
    labels: &["state"],
};
const ORDERS_ATTENTION: Spec = Spec {
    name: "panelgate_orders_attention",
    help: "Orders that need the operator, by reason (unknown_outcome, refund_unknown, \
    partial_without_remains, stuck) and upstream: `panelgate order list --attention`.",
    labels: &["reason", "upstream"],
};
const REFUNDS: Spec = Spec {
    name: "panelgate_refunds_total",
    help: "Refunds applied, by the status that caused them.",
    labels: &["status"],
};
const REFUNDED: Spec = Spec {
    name: "panelgate_refunded_amount_total",
    help: "Money refunded to customers, in our currency.",
    labels: &["upstream"],
};
const REFUNDS_WITHHELD: Spec = Spec {
    name: "panelgate_refunds_withheld_total",
    help: "Partial orders that got no automatic refund because the upstream's figures \
    cannot tell it, by attention reason (refund_unknown, partial_without_remains) \
    and upstream: each waits for `panelgate order settle`.",
    labels: &["reason", "upstream"],
};
const REVENUE: Spec = Spec {
    name: "panelgate_revenue_total",
    help: "Money charged for placed orders, in our currency.",
    labels: &["upstream"],
};
const COST: Spec = Spec {
    name: "panelgate_cost_total",
    help: "What upstreams charged us for finished orders, in our currency.",
    labels: &["upstream"],
};

// The database.
const STORE_ERRORS: Spec = Spec {
    name: "panelgate_store_errors_total",
    help: "Failed database operations by operation (hold, mark_placed, replay, apply_status, sync_claim, ping, balance, status, auth, …).",
    labels: &["operation"],
};
const STORE_UP: Spec = Spec {
    name: "panelgate_store_up",
    help: "1 while the database answers (the last readiness ping or write), 0 while it is unreachable.",
    labels: &[],
};

// Operation.
const CONFIG_RELOADS: Spec = Spec {
    name: "panelgate_config_reloads_total",
    help: "Config reloads by outcome: ok, or refused (invalid file, or rules the upstreams' lists break; the running config stays).",
    labels: &["outcome"],
};

fn register<M: Collector + Clone + 'static>(r: &Registry, metric: M) -> M {
    r.register(Box::new(metric.clone()))
        .expect("registered once");
    metric
}

fn opts(spec: &Spec) -> Opts {
    Opts::new(spec.name, spec.help)
}

fn counter(r: &Registry, spec: &Spec) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(opts(spec), spec.labels).expect("valid metric"),
    )
}

fn single(r: &Registry, spec: &Spec) -> IntCounter {
    register(r, IntCounter::with_opts(opts(spec)).expect("valid metric"))
}

fn single_gauge(r: &Registry, spec: &Spec) -> IntGauge {
    register(r, IntGauge::with_opts(opts(spec)).expect("valid metric"))
}

fn single_float_gauge(r: &Registry, spec: &Spec) -> Gauge {
    register(r, Gauge::with_opts(opts(spec)).expect("valid metric"))
}

fn amount(r: &Registry, spec: &Spec) -> CounterVec {
    register(
        r,
        CounterVec::new(opts(spec), spec.labels).expect("valid metric"),
    )
}

fn gauge(r: &Registry, spec: &Spec) -> IntGaugeVec {
    register(
        r,
        IntGaugeVec::new(opts(spec), spec.labels).expect("valid metric"),
    )
}

fn float_gauge(r: &Registry, spec: &Spec) -> GaugeVec {
    register(
        r,
        GaugeVec::new(opts(spec), spec.labels).expect("valid metric"),
    )
}

fn histogram(r: &Registry, spec: &Spec) -> HistogramVec {
    let opts = HistogramOpts::new(spec.name, spec.help).buckets(LATENCY_BUCKETS.to_vec());
    register(
        r,
        HistogramVec::new(opts, spec.labels).expect("valid metric"),
    )
}

impl Metrics {
    /// A fresh registry with every metric. The specs are constants, so registering cannot
    /// fail; the `expect`s above document that, they never fire.
    pub fn new() -> Metrics {
        let r = Registry::new();
        gauge(&r, &BUILD_INFO)
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Metrics {
            // The API edge.
            requests: counter(&r, &REQUESTS),
            request_seconds: histogram(&r, &REQUEST_SECONDS),
            rejected_keys: single(&r, &REJECTED_KEYS),
            rate_limited: single(&r, &RATE_LIMITED),
            reads_over_limit: counter(&r, &READS_OVER_LIMIT),
            // The upstream panels.
            upstream_requests: counter(&r, &UPSTREAM_REQUESTS),
            upstream_seconds: histogram(&r, &UPSTREAM_SECONDS),
            upstream_breaker: gauge(&r, &UPSTREAM_BREAKER),
            upstream_healthy: gauge(&r, &UPSTREAM_HEALTHY),
            upstream_balance: float_gauge(&r, &UPSTREAM_BALANCE),
            upstream_services_listed: gauge(&r, &UPSTREAM_SERVICES_LISTED),
            upstream_currency_mismatch: gauge(&r, &UPSTREAM_CURRENCY_MISMATCH),
            // The catalog.
            catalog_lookups: counter(&r, &CATALOG_LOOKUPS),
            catalog_refreshes: counter(&r, &CATALOG_REFRESHES),
            catalog_services: gauge(&r, &CATALOG_SERVICES),
            catalog_age_seconds: float_gauge(&r, &CATALOG_AGE_SECONDS),
            catalog_build_seconds: single_float_gauge(&r, &CATALOG_BUILD_SECONDS),
            // Orders and money.
            targets_skipped: counter(&r, &TARGETS_SKIPPED),
            orders_placed: counter(&r, &ORDERS_PLACED),
            orders: gauge(&r, &ORDERS),
            orders_attention: gauge(&r, &ORDERS_ATTENTION),
            refunds: counter(&r, &REFUNDS),
            refunded: amount(&r, &REFUNDED),
            refunds_withheld: counter(&r, &REFUNDS_WITHHELD),
            revenue: amount(&r, &REVENUE),
            cost: amount(&r, &COST),
            // The database: up until a ping or a write finds it away.
            store_errors: counter(&r, &STORE_ERRORS),
            store_up: {
                let up = single_gauge(&r, &STORE_UP);
                up.set(1);
                up
            },
            // Operation.
            config_reloads: counter(&r, &CONFIG_RELOADS),
            registry: r,
        }
    }

    /// Counts a failed database `operation` (a fixed name, never customer data); one that
    /// says the database is unreachable also turns `panelgate_store_up` to 0.
    pub fn store_failed(&self, operation: &'static str, e: &crate::store::StoreError) {
        self.store_errors.with_label_values(&[operation]).inc();
        if e.is_unavailable() {
            self.store_up.set(0);
        }
    }

    /// The database answered: `panelgate_store_up` back to 1.
    pub fn store_answered(&self) {
        self.store_up.set(1);
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
