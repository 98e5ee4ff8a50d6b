//! The client side of API v2: panelgate as a customer of upstream panels.
//!
//! Every call is a form-urlencoded `POST` with our key, as every panel accepts. What matters
//! most is the *outcome* of a non-idempotent `add` (docs/operations.md, "What an `add` reply
//! means"), decided by [`add_outcome`] in this order:
//!
//! | what came back | outcome | money |
//! |---|---|---|
//! | connect/TLS failure, no slot, circuit open: nothing written | [`AddOutcome::NotSent`] | next target, else released |
//! | HTTP 400, 401, 403, 404, 405, 422, 429, whatever the body (an HTML 403/404 page too) | [`AddOutcome::Rejected`] | next target, else released |
//! | any HTTP 5xx, whatever the body (a proxy may have given up after the panel created the order) | [`AddOutcome::Unknown`] | held |
//! | 1xx, 3xx (redirects are not followed), other 4xx (408, 409, 413, …) | [`AddOutcome::Unknown`] | held |
//! | written, then no reply, a cut reply or a timeout | [`AddOutcome::Unknown`] | held |
//! | 2xx with an order id in any dialect (`{"order":1}`, `{"status":"success","order":"1"}`, `[{"order":"1"}]`, `"ord_01HG…"`), an error beside it or not | [`AddOutcome::Placed`] | charged |
//! | 2xx with an explicit failure: `error` with text, `status: "error"`, `success: false` | [`AddOutcome::Rejected`] | next target, else released |
//! | 2xx with anything else: empty, not JSON, a bare `message`, an object without an id | [`AddOutcome::Unknown`] | held |
//!
//! An unknown order is never sent again, neither here nor to a fallback: the customer gets our
//! order id and sees it `Pending` until the operator resolves it.

pub mod breaker;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use governor::Quota;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;

use breaker::Breaker;

use crate::clock::{self, Limiter};
use crate::config::{Secret, UpstreamConfig};
use crate::metrics::Metrics;
use crate::protocol::lenient::{self, ReadError, Refusal, ServiceList};
use crate::protocol::order::OrderFields;
use crate::protocol::reply::{Balance, Canceled, MultiRefill, MultiRefillStatus, MultiStatus};

/// Largest upstream reply we read (a services list of many thousands fits easily).
const MAX_REPLY_BYTES: usize = 32 << 20;

/// Why a call produced no usable reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Nothing was written: connecting (or TLS) failed, or no slot freed up in time.
    #[error("not sent: {0}")]
    NotSent(String),
    /// Nothing was written: the upstream's circuit is open (it has been failing). Unlike
    /// [`CallError::NotSent`], retrying at once cannot help.
    #[error("not sent: {CIRCUIT_OPEN}")]
    CircuitOpen,
    /// Written, and then no reply or a cut one.
    #[error("no usable reply: {0}")]
    Unknown(String),
    /// Written, and no reply within the timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// A reply, but not one we can read (HTTP 5xx or 3xx, not JSON, wrong shape).
    #[error("{0}")]
    Unreadable(String),
    /// An explicit refusal: `{"error": …}` and its kin, or a refusing HTTP status (400, 401,
    /// 403, 404, 405, 422, 429) with the body's text or the status itself.
    #[error("refused: {0}")]
    Refused(String),
}

impl CallError {
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            CallError::Refused(text) => Some(Refusal::classify(text)),
            _ => None,
        }
    }

    /// A label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::NotSent(_) | CallError::CircuitOpen => "not_sent",
            CallError::Unknown(_) => "unknown",
            CallError::Timeout(_) => "timeout",
            CallError::Unreadable(_) => "unreadable",
            CallError::Refused(_) => "refused",
        }
    }
}

impl From<ReadError> for CallError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Refused(text) => CallError::Refused(text),
            ReadError::Garbage(what) => CallError::Unreadable(what.to_owned()),
        }
    }
}

/// Why an upstream takes no orders because of its currency (docs/configuration.md,
/// "Currency"): its prices would be converted at a rate meant for another currency.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    #[error("its currency is not known yet ({0})")]
    Unknown(String),
    #[error(
        "its balance reply states no currency and the config declares none for it (set its currency, and fx if it is not ours)"
    )]
    NotStated,
    #[error("it states {stated}; the config expects {expected} (set its currency and fx)")]
    Mismatch { stated: String, expected: String },
}

/// What became of an `add` (the table in the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddOutcome {
    /// Placed, under the upstream's own id (text: some panels' ids are not numbers).
    Placed(String),
    /// Definitely not placed: the upstream said no. `text` is its own words.
    Rejected { text: String, refusal: Refusal },
    /// Nothing was written: safe to try elsewhere.
    NotSent(String),
    /// Written, and no answer that says whether it was placed: never sent again.
    Unknown(String),
}

impl AddOutcome {
    fn rejected(text: String) -> AddOutcome {
        AddOutcome::Rejected {
            refusal: Refusal::classify(&text),
            text,
        }
    }

    /// The label for metrics and the request log: what the reply meant.
    pub fn label(&self) -> &'static str {
        match self {
            AddOutcome::Placed(_) => "placed",
            AddOutcome::Rejected { .. } => "refused",
            AddOutcome::NotSent(_) => "not_sent",
            AddOutcome::Unknown(_) => "unknown",
        }
    }
}

/// What an HTTP status alone says about a request that was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMeaning {
    /// 2xx: the body decides.
    Answer,
    /// 400, 401, 403, 404, 405, 422, 429: the upstream (or its firewall) did not act on it.
    Refused,
    /// 5xx, 3xx, 1xx and other 4xx: it may have acted.
    Unknown,
}

pub fn status_meaning(status: StatusCode) -> StatusMeaning {
    match status.as_u16() {
        200..=299 => StatusMeaning::Answer,
        400 | 401 | 403 | 404 | 405 | 422 | 429 => StatusMeaning::Refused,
        _ => StatusMeaning::Unknown,
    }
}

/// The outcome of an `add` the upstream answered with `status` and `body`.
pub fn add_outcome(status: StatusCode, body: &[u8]) -> AddOutcome {
    match status_meaning(status) {
        StatusMeaning::Refused => AddOutcome::rejected(
            lenient::refusal_text(body).unwrap_or_else(|| format!("HTTP {status}")),
        ),
        StatusMeaning::Unknown => AddOutcome::Unknown(status_failure(status, body)),
        StatusMeaning::Answer => match lenient::added(body) {
            Ok(order) => AddOutcome::Placed(order),
            Err(ReadError::Refused(text)) => AddOutcome::rejected(text),
            // Answered, but not with an order id: it may exist.
            Err(ReadError::Garbage(what)) => {
                AddOutcome::Unknown(format!("unreadable reply: {what}"))
            }
        },
    }
}

/// What the operator reads about a status that leaves the outcome open: the status, and the
/// body's own error text if it has one (which is not believed: see the module table).
fn status_failure(status: StatusCode, body: &[u8]) -> String {
    let mut why = format!("HTTP {status}");
    if status.is_redirection() {
        why.push_str(": redirects are not followed");
    }
    if let Some(text) = lenient::refusal_text(body) {
        why.push_str(&format!(" (its body said {text:?})"));
    }
    why
}

/// A non-`add` reply: the body of a 2xx answer, or why there is none.
fn answer(status: StatusCode, body: Bytes) -> Result<Bytes, CallError> {
    match status_meaning(status) {
        StatusMeaning::Answer => Ok(body),
        StatusMeaning::Refused => Err(CallError::Refused(
            lenient::refusal_text(&body).unwrap_or_else(|| format!("HTTP {status}")),
        )),
        StatusMeaning::Unknown => Err(CallError::Unreadable(status_failure(status, &body))),
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A connection pool towards the upstream; its pooled connections stay on the runtime that
/// opened them.
fn http_client(cfg: &UpstreamConfig) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(cfg.max_concurrency)
        .build(https)
}

/// Why a call was not sent while the circuit is open, in logs and order notes.
const CIRCUIT_OPEN: &str = "circuit open: the upstream has been failing";

/// One upstream panel.
pub struct Upstream {
    pub name: String,
    url: http::Uri,
    key: Secret,
    timeout: Duration,
    permits: Semaphore,
    /// One connection pool per runtime ([`crate::cores`]).
    clients: Vec<HttpClient>,
    metrics: Arc<Metrics>,
    breaker: Breaker,
    /// Our own pace towards it, if the config sets one.
    pace: Option<Limiter>,
    retries: u32,
    /// Retries are capped per upstream (2 a second, bursts of 10), so that a struggling
    /// upstream is not hammered by our retries on top of our traffic.
    retry_budget: Limiter,
    /// The currency its `balance` must state, and whether the config declared it.
    expected_currency: String,
    declared_currency: bool,
    /// The currency its last `balance` reply stated (`""`: none); `None` until one is read.
    stated_currency: std::sync::Mutex<Option<String>>,
    /// What the last `balance` call found, kept for the operator so that showing it costs the
    /// upstream nothing (the balance poll refreshes it).
    last_balance: std::sync::Mutex<Option<BalanceReading>>,
}

/// One `balance` call's answer, when it came and how long it took.
#[derive(Debug, Clone)]
pub struct BalanceReading {
    /// Unix milliseconds.
    pub at: i64,
    /// The balance, or why it could not be read.
    pub answer: Result<Balance, String>,
    pub latency: Duration,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// With a connection pool for each of `cores` runtimes (1: one shared pool).
    pub fn new(cfg: &UpstreamConfig, metrics: Arc<Metrics>, cores: usize) -> Upstream {
        let clients = (0..cores.max(1)).map(|_| http_client(cfg)).collect();
        let per_second = |n: u32| Quota::per_second(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Upstream {
            name: cfg.name.clone(),
            url: cfg.url.clone(),
            key: cfg.key.clone(),
            timeout: cfg.timeout,
            permits: Semaphore::new(cfg.max_concurrency),
            clients,
            metrics,
            breaker: Breaker::new(cfg.breaker_failures, cfg.breaker_cooldown),
            pace: cfg.rate_limit.map(|n| clock::limiter(per_second(n))),
            retries: cfg.retries,
            retry_budget: clock::limiter(
                per_second(2).allow_burst(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN)),
            ),
            expected_currency: cfg.expected_currency.clone(),
            declared_currency: cfg.currency.is_some(),
            stated_currency: std::sync::Mutex::new(None),
            last_balance: std::sync::Mutex::new(None),
        }
    }

    /// Whether its currency lets it take orders, from what its last `balance` stated (no
    /// call is made: see [`Upstream::learn_currency`]).
    pub fn currency_check(&self) -> Result<(), CurrencyError> {
        let stated = lock(&self.stated_currency).clone();
        match stated {
            None => Err(CurrencyError::Unknown("not asked yet".into())),
            Some(s) => self.judge(&s),
        }
    }

    /// Reads its balance if its currency is not known yet, so that an upstream's currency is
    /// known before it takes its first order.
    pub async fn learn_currency(&self) -> Result<(), CurrencyError> {
        if let Err(CurrencyError::Unknown(_)) = self.currency_check() {
            // One attempt, not retried: it may stand in front of a customer's `add`.
            let unknown = |e: &dyn std::fmt::Display| CurrencyError::Unknown(e.to_string());
            let body = self.call("balance", &[]).await.map_err(|e| unknown(&e))?;
            let balance = lenient::balance(&body).map_err(|e| unknown(&e))?;
            self.record_currency(&balance.currency);
        }
        self.currency_check()
    }

    fn judge(&self, stated: &str) -> Result<(), CurrencyError> {
        let stated = stated.trim();
        if stated.is_empty() {
            // A panel that states nothing is taken at the config's word, if it gives one.
            return match self.declared_currency {
                true => Ok(()),
                false => Err(CurrencyError::NotStated),
            };
        }
        if stated.eq_ignore_ascii_case(&self.expected_currency) {
            return Ok(());
        }
        Err(CurrencyError::Mismatch {
            stated: stated.to_owned(),
            expected: self.expected_currency.clone(),
        })
    }

    /// Remembers the currency a `balance` reply stated; says so in the log and the metrics
    /// when that stops (or starts) letting it take orders.
    fn record_currency(&self, stated: &str) {
        let before = self.currency_check();
        *lock(&self.stated_currency) = Some(stated.trim().to_owned());
        let now = self.currency_check();
        self.metrics
            .upstream_currency_mismatch
            .with_label_values(&[&self.name])
            .set(i64::from(now.is_err()));
        if before != now {
            match &now {
                Ok(()) => {
                    tracing::info!(upstream = %self.name, currency = stated, "upstream currency confirmed")
                }
                Err(e) => {
                    tracing::error!(upstream = %self.name, problem = %e, "upstream takes no orders until its currency matches the config")
                }
            }
        }
    }

    /// Whether its circuit is closed (it has been answering).
    pub fn is_healthy(&self) -> bool {
        self.breaker.state() == breaker::State::Closed
    }

    pub fn breaker_state(&self) -> breaker::State {
        self.breaker.state()
    }

    /// One non-`add` call through the breaker, measured: counted by outcome and timed.
    async fn call(
        &self,
        action: &'static str,
        fields: &[(&str, String)],
    ) -> Result<Bytes, CallError> {
        let started = clock::now();
        let result = self
            .guarded(action, fields)
            .await
            .and_then(|(status, body)| answer(status, body));
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        self.measure(action, outcome, started);
        result
    }

    /// One exchange through the breaker. A refusing status is an answer for the breaker (the
    /// upstream is there and speaking); 5xx and other statuses are failures.
    async fn guarded(
        &self,
        action: &'static str,
        fields: &[(&str, String)],
    ) -> Result<(StatusCode, Bytes), CallError> {
        if !self.breaker.admit() {
            return Err(CallError::CircuitOpen);
        }
        let result = self.send(action, fields).await;
        self.breaker.record(matches!(
            &result,
            Ok((status, _)) if status_meaning(*status) != StatusMeaning::Unknown
        ));
        result
    }

    /// Counts one call by `outcome`, times it, and publishes the breaker's state.
    fn measure(&self, action: &'static str, outcome: &str, started: clock::Instant) {
        let m = &self.metrics;
        m.upstream_requests
            .with_label_values(&[&self.name, action, outcome])
            .inc();
        if outcome == "refused" {
            // Deprecated alias of `refused`, counted beside it until dashboards and alerts
            // have moved (docs/operations.md, "Metrics reference").
            m.upstream_requests
                .with_label_values(&[&self.name, action, "rejected"])
                .inc();
        }
        m.upstream_seconds
            .with_label_values(&[&self.name, action])
            .observe(started.elapsed().as_secs_f64());
        let state = self.breaker.state();
        m.upstream_healthy
            .with_label_values(&[&self.name])
            .set(i64::from(state == breaker::State::Closed));
        m.upstream_breaker
            .with_label_values(&[&self.name])
            .set(state.gauge());
    }

    /// A call that is safe to repeat, retried with backoff after transport failures, within the
    /// upstream's retry budget. Never used for `add`, `refill` or `cancel`.
    async fn call_idempotent(
        &self,
        action: &'static str,
        fields: &[(&str, String)],
    ) -> Result<Bytes, CallError> {
        let mut attempt = 0;
        loop {
            let result = self.call(action, fields).await;
            let retryable = match &result {
                Err(CallError::NotSent(_)) => true,
                Err(CallError::CircuitOpen) => false,
                Err(CallError::Unknown(_) | CallError::Timeout(_) | CallError::Unreadable(_)) => {
                    true
                }
                Ok(_) | Err(CallError::Refused(_)) => false,
            };
            if !retryable || attempt >= self.retries || self.retry_budget.check().is_err() {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
            attempt += 1;
        }
    }

    /// One `services` call as it came back, status and body, outside the breaker and the
    /// metrics: `check-config` reads it to tell a wrong URL path from a failing panel.
    pub async fn probe(&self) -> Result<(StatusCode, Bytes), CallError> {
        self.send("services", &[]).await
    }

    /// Writes one action and reads the reply, within the timeout.
    async fn send(
        &self,
        action: &str,
        fields: &[(&str, String)],
    ) -> Result<(StatusCode, Bytes), CallError> {
        let mut body = form_urlencoded(&[("key", self.key.expose()), ("action", action)]);
        for (k, v) in fields {
            body.push('&');
            body.push_str(&form_urlencoded(&[(k, v)]));
        }
        let request = Request::post(self.url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(USER_AGENT, concat!("panelgate/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::NotSent(format!("building the request: {e}")))?;
        // Waiting for a slot or for our pace writes nothing, so running out of time here is
        // "not sent".
        let _permit = tokio::time::timeout(self.timeout, self.permits.acquire())
            .await
            .map_err(|_| CallError::NotSent("no free connection slot in time".into()))?
            .map_err(|_| CallError::NotSent("upstream client closed".into()))?;
        if let Some(pace) = &self.pace {
            tokio::time::timeout(self.timeout, clock::until_ready(pace))
                .await
                .map_err(|_| {
                    CallError::NotSent("our rate limit towards it left no room in time".into())
                })?;
        }
        let exchange = async {
            let response = crate::cores::pick(&self.clients)
                .request(request)
                .await
                .map_err(|e| {
                    if e.is_connect() {
                        CallError::NotSent(format!("connect: {}", error_chain(&e)))
                    } else {
                        CallError::Unknown(format!("transport: {}", error_chain(&e)))
                    }
                })?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_REPLY_BYTES)
                .collect()
                .await
                .map_err(|e| CallError::Unknown(format!("reading the reply: {e}")))?
                .to_bytes();
            Ok::<_, CallError>((status, bytes))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| CallError::Timeout(self.timeout))?
    }

    pub async fn services(&self) -> Result<ServiceList, CallError> {
        Ok(lenient::services(
            &self.call_idempotent("services", &[]).await?,
        )?)
    }

    /// Our balance there; the currency it states is remembered (see
    /// [`Upstream::currency_check`]).
    pub async fn balance(&self) -> Result<Balance, CallError> {
        let started = clock::now();
        let balance = self
            .call_idempotent("balance", &[])
            .await
            .and_then(|body| Ok(lenient::balance(&body)?));
        let reading = BalanceReading {
            at: clock::now_millis(),
            answer: balance.as_ref().map_err(ToString::to_string).cloned(),
            latency: started.elapsed(),
        };
        *lock(&self.last_balance) = Some(reading);
        let balance = balance?;
        self.record_currency(&balance.currency);
        Ok(balance)
    }

    /// The last `balance` reading, if one was made.
    pub fn last_balance(&self) -> Option<BalanceReading> {
        lock(&self.last_balance).clone()
    }

    /// Places an order. Never retried here: see [`AddOutcome`]. Counted by what the reply
    /// meant: placed, refused, unknown, not_sent.
    pub async fn add(&self, service: u64, fields: &OrderFields) -> AddOutcome {
        let mut form: Vec<(&str, String)> = vec![("service", service.to_string())];
        form.extend(fields.to_form());
        let started = clock::now();
        let outcome = match self.guarded("add", &form).await {
            Ok((status, body)) => add_outcome(status, &body),
            Err(CallError::NotSent(why)) => AddOutcome::NotSent(why),
            Err(CallError::CircuitOpen) => AddOutcome::NotSent(CIRCUIT_OPEN.into()),
            Err(e @ CallError::Timeout(_)) => AddOutcome::Unknown(e.to_string()),
            Err(CallError::Unknown(why) | CallError::Unreadable(why)) => AddOutcome::Unknown(why),
            // `send` never refuses by itself; a refusal is read from the reply above.
            Err(CallError::Refused(text)) => AddOutcome::rejected(text),
        };
        self.measure("add", outcome.label(), started);
        outcome
    }

    /// Multi-status of up to 100 upstream order ids.
    pub async fn statuses(
        &self,
        ids: &[impl std::fmt::Display + Sync],
    ) -> Result<MultiStatus<String>, CallError> {
        Ok(lenient::multi_status(
            &self
                .call_idempotent("status", &[("orders", join(ids))])
                .await?,
        )?)
    }

    pub async fn refill(
        &self,
        ids: &[impl std::fmt::Display + Sync],
    ) -> Result<MultiRefill<String>, CallError> {
        Ok(lenient::multi_refill(
            &self.call("refill", &[("orders", join(ids))]).await?,
        )?)
    }

    pub async fn refill_statuses(&self, ids: &[u64]) -> Result<MultiRefillStatus, CallError> {
        Ok(lenient::multi_refill_status(
            &self
                .call_idempotent("refill_status", &[("refills", join(ids))])
                .await?,
        )?)
    }

    pub async fn cancel(
        &self,
        ids: &[impl std::fmt::Display + Sync],
    ) -> Result<Canceled<String>, CallError> {
        Ok(lenient::canceled(
            &self.call("cancel", &[("orders", join(ids))]).await?,
        )?)
    }
}

/// All configured upstreams, by name.
#[derive(Debug, Default)]
pub struct Upstreams(pub Vec<Arc<Upstream>>);

impl Upstreams {
    pub fn new(cfgs: &[UpstreamConfig], metrics: Arc<Metrics>, cores: usize) -> Upstreams {
        Upstreams(
            cfgs.iter()
                .map(|c| Arc::new(Upstream::new(c, metrics.clone(), cores)))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.0.iter().find(|u| u.name == name)
    }
}

fn join(ids: &[impl std::fmt::Display]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The error and its causes, for logs. hyper's top-level messages alone say little.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Form-encodes pairs (application/x-www-form-urlencoded).
pub fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        escape_into(&mut out, k);
        out.push('=');
        escape_into(&mut out, v);
    }
    out
}

fn escape_into(out: &mut String, s: &str) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Params;

    /// The module's table, one row per case: status, body, outcome label, and the id or the
    /// text kept.
    #[test]
    fn the_status_decides_first_then_the_body() {
        const HTML_403: &str = "<html><title>403 Forbidden</title><body>cloudflare</body></html>";
        const JSON_ERROR: &str = r#"{"error":"Gateway Timeout"}"#;
        let rows: &[(u16, &str, &str, &str)] = &[
            (200, r#"{"order":7}"#, "placed", "7"),
            (201, r#"[{"order":"ord_1"}]"#, "placed", "ord_1"),
            (
                200,
                r#"{"error":"Incorrect service ID"}"#,
                "refused",
                "Incorrect service ID",
            ),
            (
                200,
                r#"{"status":"error","message":"Invalid Interval in minutes"}"#,
                "refused",
                "Invalid Interval in minutes",
            ),
            (
                200,
                r#"{"success":false,"message":"Quantity is required"}"#,
                "refused",
                "Quantity is required",
            ),
            (200, "", "unknown", ""),
            (200, "<html>ok</html>", "unknown", ""),
            (200, r#"{"message":"Thank you"}"#, "unknown", ""),
            (200, r#"{"status":"success"}"#, "unknown", ""),
            (
                400,
                r#"{"error":"Incorrect request"}"#,
                "refused",
                "Incorrect request",
            ),
            (401, "", "refused", "HTTP 401 Unauthorized"),
            (403, HTML_403, "refused", "HTTP 403 Forbidden"),
            (404, "<h1>Not Found</h1>", "refused", "HTTP 404 Not Found"),
            (405, "", "refused", "HTTP 405 Method Not Allowed"),
            (
                422,
                r#"{"status":"error","message":"Service ID does not exists"}"#,
                "refused",
                "Service ID does not exists",
            ),
            (
                429,
                r#"{"error":"Spam protection, wait 7 seconds"}"#,
                "refused",
                "Spam protection, wait 7 seconds",
            ),
            // A 429 with an order id is still a refusal: the status decides first.
            (
                429,
                r#"{"order":5}"#,
                "refused",
                "HTTP 429 Too Many Requests",
            ),
            (500, JSON_ERROR, "unknown", ""),
            (502, JSON_ERROR, "unknown", ""),
            (503, "<html>503</html>", "unknown", ""),
            (504, JSON_ERROR, "unknown", ""),
            (504, r#"{"order":5}"#, "unknown", ""),
            (301, "", "unknown", ""),
            (302, r#"{"error":"moved"}"#, "unknown", ""),
            (408, "", "unknown", ""),
            (409, r#"{"error":"conflict"}"#, "unknown", ""),
            (413, "", "unknown", ""),
        ];
        for &(code, body, label, kept) in rows {
            let status = StatusCode::from_u16(code).unwrap();
            let outcome = add_outcome(status, body.as_bytes());
            assert_eq!(outcome.label(), label, "{code} {body}: {outcome:?}");
            match &outcome {
                AddOutcome::Placed(id) => assert_eq!(id, kept),
                AddOutcome::Rejected { text, .. } => assert_eq!(text, kept),
                AddOutcome::Unknown(why) if code != 200 => {
                    assert!(why.starts_with(&format!("HTTP {code}")), "{why}")
                }
                _ => {}
            }
        }
        // The body's claim is kept for the operator, not believed.
        let why = add_outcome(StatusCode::GATEWAY_TIMEOUT, JSON_ERROR.as_bytes());
        assert_eq!(
            why,
            AddOutcome::Unknown(
                r#"HTTP 504 Gateway Timeout (its body said "Gateway Timeout")"#.into()
            )
        );
    }

    #[test]
    fn form_encoding_round_trips_through_our_parser() {
        let text = "line one\r\nline two & more = 100% ü";
        let body = form_urlencoded(&[("comments", text), ("key", "a+b")]);
        let p = Params::parse_form(body.as_bytes()).unwrap();
        assert_eq!(p.text("key").unwrap(), Some("a+b"));
        match p.get("comments") {
            Some(crate::protocol::params::Value::One(v)) => assert_eq!(v, text),
            other => panic!("{other:?}"),
        }
    }
}
