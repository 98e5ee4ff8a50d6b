//! The gateway's routes: `/api/v2` (with its per-route headers, metrics and access log line),
//! and the probes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;

use super::{Answer, Handler, Limits, Refused, Reply, probes};
use crate::app::Live;
use crate::gateway::{Gateway, ReplyBytes, RequestLog};
use crate::protocol::ProtocolError;

/// The gateway's HTTP routes: `/api/v2`, `/metrics`, `/healthz`, `/readyz`.
pub struct Routes {
    pub live: Arc<Live>,
    pub limits: Limits,
    /// The metrics listener serves everything but the API.
    pub api: bool,
}

impl Handler for Routes {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Answer {
        match req.uri().path() {
            "/healthz" => probes::healthz().into(),
            "/readyz" => probes::readiness(&self.live.gateway()).await.into(),
            "/metrics" => probes::metrics_reply(&self.live.gateway()).await.into(),
            path if self.api && super::is_api_path(path) => self.api(req, peer).await.into(),
            _ => Refused::NotFound.into(),
        }
    }
}

impl Routes {
    /// One API request: read, answered by the gateway in force, counted and logged.
    async fn api(&self, req: Request<Incoming>, peer: SocketAddr) -> Reply {
        let started = crate::clock::now();
        let gateway = self.live.gateway();
        let api = match super::read_api_request(req, &self.limits).await {
            Ok(api) => api,
            Err(refused) => {
                gateway
                    .metrics
                    .requests
                    .with_label_values(&["unknown", "refused"])
                    .inc();
                return refused.into();
            }
        };
        let mut log = RequestLog::default();
        let result = gateway.handle(&api, peer.ip(), &mut log).await;
        let asked = if log.action.is_empty() {
            "unknown"
        } else {
            log.action
        };
        let elapsed = started.elapsed();
        count(&gateway, &log, asked, &result, elapsed);
        access_log(&log, asked, &result, elapsed, peer);
        let mut reply = match result {
            Ok(body) => ok_reply(body),
            Err(e) => Refused::Protocol(e).into(),
        };
        if asked == "services" {
            // The body depends on Accept-Encoding: caches between us and the panel must know.
            reply.headers_mut().insert(
                http::header::VARY,
                http::HeaderValue::from_static("accept-encoding"),
            );
        }
        reply
    }
}

/// The request's metrics. A request refused at the door (its key, a rate limit) is counted
/// under action `unknown`, as it always has been, whatever it asked for.
fn count(
    gateway: &Gateway,
    log: &RequestLog,
    asked: &'static str,
    result: &Result<ReplyBytes, ProtocolError>,
    elapsed: Duration,
) {
    let metrics = &gateway.metrics;
    let action = if log.admitted { asked } else { "unknown" };
    match result {
        Err(ProtocolError::InvalidKey) => metrics.rejected_keys.inc(),
        Err(ProtocolError::TooManyRequests(_) | ProtocolError::TooManyKeyAttempts(_)) => {
            metrics.rate_limited.inc()
        }
        _ => {}
    }
    metrics
        .requests
        .with_label_values(&[action, outcome(result)])
        .inc();
    metrics
        .request_seconds
        .with_label_values(&[action])
        .observe(elapsed.as_secs_f64());
}

/// `ok`, or the class of error the customer got.
fn outcome(result: &Result<ReplyBytes, ProtocolError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.label(),
    }
}

/// The access log line: it names what a refused request asked for, and says what an `add`
/// came to upstream (placed, refused, unknown, not_sent) or that a read was answered over the
/// limit, where the metric keeps `ok` / the error class the customer got.
fn access_log(
    log: &RequestLog,
    asked: &'static str,
    result: &Result<ReplyBytes, ProtocolError>,
    elapsed: Duration,
    peer: SocketAddr,
) {
    tracing::info!(
        action = asked,
        client = log.customer.as_ref().map_or("-", |c| c.name.as_str()),
        ids = %log.ids_text(),
        ids_total = log.ids_total,
        outcome = log.outcome.unwrap_or(outcome(result)),
        error = result.as_ref().err().map(|e| e.to_string()).unwrap_or_default(),
        latency_us = elapsed.as_micros() as u64,
        upstream = log.upstream.as_deref().unwrap_or("-"),
        order = log.order.unwrap_or(0),
        upstream_order = log.upstream_order.as_deref().unwrap_or("-"),
        %peer,
        "request"
    );
}

/// `200` with the body, marked gzip when it is compressed.
fn ok_reply(body: ReplyBytes) -> Reply {
    let mut reply = super::ok(body.bytes);
    if body.gzip {
        reply.headers_mut().insert(
            http::header::CONTENT_ENCODING,
            http::HeaderValue::from_static("gzip"),
        );
    }
    reply
}
