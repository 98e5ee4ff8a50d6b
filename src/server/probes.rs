//! The probes: `/healthz` (the process answers), `/readyz` (it can take orders) and
//! `/metrics` (the gauges read at scrape time, then everything).

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Map, Value};

use super::Reply;
use crate::gateway::Gateway;
use crate::store::StoreError;
use crate::upstream::CurrencyError;

/// `/healthz`: the process is up and serving.
pub fn healthz() -> Reply {
    super::ok(Bytes::from_static(br#"{"status":"ok"}"#))
}

/// `/readyz`: 200 when the database answers, the catalog has services and at least one
/// upstream is healthy; 503 otherwise, with a JSON body saying what is wrong.
pub async fn readiness(gw: &Gateway) -> Reply {
    let database = match ping(gw).await {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("error: {e}"),
    };
    let services = gw.catalog.snapshot().len();
    let problems = problems(gw, database == "ok", services);
    let body = serde_json::json!({
        "ready": problems.is_empty(),
        "problems": problems,
        "database": database,
        "catalog_services": services,
        "upstreams": upstream_health(gw),
        "currency": upstream_currency(gw),
    });
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    super::json_reply(status, crate::protocol::reply::to_bytes(&body))
}

/// What keeps the gateway from taking orders, in words.
fn problems(gw: &Gateway, database_ok: bool, services: usize) -> Vec<String> {
    let mut problems = Vec::new();
    if !database_ok {
        problems.push("database unreachable".to_owned());
    }
    if services == 0 {
        problems.push("catalog empty: no upstream services list loaded yet".to_owned());
    }
    if !gw.upstreams.0.iter().any(|u| u.is_healthy()) {
        problems.push("no healthy upstream".to_owned());
    } else if !gw.upstreams.0.iter().any(|u| {
        u.is_healthy()
            && !matches!(
                u.currency_check(),
                Err(CurrencyError::Mismatch { .. } | CurrencyError::NotStated)
            )
    }) {
        problems.push("no healthy upstream may take orders: see currency".to_owned());
    }
    problems
}

/// Each upstream: `healthy` while its circuit is closed.
fn upstream_health(gw: &Gateway) -> Map<String, Value> {
    gw.upstreams
        .0
        .iter()
        .map(|u| {
            let health = if u.is_healthy() {
                "healthy"
            } else {
                "unhealthy"
            };
            (u.name.clone(), health.into())
        })
        .collect()
}

/// Each upstream's currency check: an upstream whose currency does not fit the config takes
/// no orders.
fn upstream_currency(gw: &Gateway) -> Map<String, Value> {
    gw.upstreams
        .0
        .iter()
        .map(|u| {
            let state = match u.currency_check() {
                Ok(()) => "ok".to_owned(),
                Err(e) => e.to_string(),
            };
            (u.name.clone(), state.into())
        })
        .collect()
}

/// How long a prober or scraper waits for the database: seconds at most, not the pool's whole
/// acquire timeout.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the database whether it answers, keeping `panelgate_store_up` (and its alert) current.
async fn ping(gw: &Gateway) -> Result<(), StoreError> {
    let answered = match tokio::time::timeout(PING_TIMEOUT, gw.store.ping()).await {
        Ok(answered) => answered,
        Err(_) => Err(StoreError::Unavailable(format!(
            "no answer within {}s",
            PING_TIMEOUT.as_secs()
        ))),
    };
    match &answered {
        Ok(()) => gw.metrics.store_answered(),
        Err(e) => gw.metrics.store_failed("ping", e),
    }
    answered
}

/// `/metrics`: gauges read at scrape time (orders by state, list ages), then everything.
pub async fn metrics_reply(gw: &Gateway) -> Reply {
    let m = &gw.metrics;
    // The database away: the counts below would each wait out the pool's timeout, longer than
    // a scrape may take; the last ones stay, and `panelgate_store_up` says why.
    match ping(gw).await {
        Ok(()) => order_gauges(gw).await,
        Err(_) => tracing::warn!("database unreachable: order gauges not refreshed"),
    }
    for (upstream, age) in gw.catalog.list_ages() {
        m.catalog_age_seconds
            .with_label_values(&[&upstream])
            .set(age.as_secs_f64());
    }
    let mut reply = super::ok(Bytes::from(m.render()));
    reply.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    reply
}

/// `panelgate_orders{state}` and the attention gauges, from the database.
async fn order_gauges(gw: &Gateway) {
    match gw.store.count_orders_by_state().await {
        Ok(counts) => {
            for (state, n) in counts {
                gw.metrics
                    .orders
                    .with_label_values(&[state.as_str()])
                    .set(n as i64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "counting orders for the metrics failed"),
    }
    attention_gauge(gw).await;
}

/// `panelgate_orders_attention{reason, upstream}`: every reason at every configured upstream,
/// zeros included, so that a count drops back to 0 and an alert resolves; an upstream no longer
/// configured keeps a series only while it has such orders.
async fn attention_gauge(gw: &Gateway) {
    let counts = match gw.store.count_attention().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "counting orders that need the operator failed");
            return;
        }
    };
    let g = &gw.metrics.orders_attention;
    g.reset();
    for reason in crate::store::Attention::ALL {
        for u in &gw.cfg.upstreams {
            g.with_label_values(&[reason.as_str(), &u.name]).set(0);
        }
    }
    for (reason, upstream, n) in counts {
        g.with_label_values(&[reason.as_str(), &upstream])
            .set(n as i64);
    }
}
