//! Assembles a running gateway from its config: the store (migrated, crash-recovered), the
//! demo's simulated upstreams, the upstream clients, the catalog, the sync loop and the
//! listener. `panelgate serve` and the black-box tests both start the gateway through here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, SimulatorSection, UpstreamConfig};
use crate::gateway::{Gateway, Trace};
use crate::metrics::Metrics;
use crate::money;
use crate::protocol::ProtocolError;
use crate::server::{self, Answer, Handler};
use crate::sim::{self, SimConfig, SimHandle, catalog as sim_catalog};
use crate::store::{self, Millis, Store, StoreError};
use crate::sync::{self, now_ms};
use crate::upstream::{CurrencyError, Upstreams};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database {url}: {source}")]
    Store { url: String, source: StoreError },
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("simulated upstream {name}: {message}")]
    Simulator { name: String, message: String },
    #[error("client {name}: {source}")]
    Client { name: String, source: StoreError },
    #[error("tls: {0}")]
    Tls(String),
    #[error(transparent)]
    Stranded(#[from] Stranded),
}

/// A config that leaves out upstreams whose orders are not settled yet (upstream, how many):
/// nothing would sync those orders any more, so their Partial and Canceled refunds would
/// never happen. Such a config is refused, at start as on reload.
#[derive(Debug, thiserror::Error)]
#[error("{}", stranded_text(.0))]
pub struct Stranded(pub Vec<(String, u64)>);

fn stranded_text(left: &[(String, u64)]) -> String {
    let each: Vec<String> = left
        .iter()
        .map(|(name, n)| {
            let orders = if *n == 1 { "order" } else { "orders" };
            format!(
                "upstream {name:?} is not in the config but still has {n} open {orders} \
                 (placed, dispatching or unknown)"
            )
        })
        .collect();
    format!(
        "{}: keep it in the config with `retired: true` (its url and key too) until they are \
         final; retired, it takes no new orders while sync follows the open ones",
        each.join("; ")
    )
}

/// Refuses `cfg` if it leaves out an upstream that still has open orders.
pub async fn check_open_orders(cfg: &Config, store: &dyn Store) -> Result<(), CheckError> {
    let left: Vec<(String, u64)> = store
        .open_orders_by_upstream()
        .await?
        .into_iter()
        .filter(|(name, n)| *n > 0 && cfg.upstream(name).is_none())
        .collect();
    match left.is_empty() {
        true => Ok(()),
        false => Err(Stranded(left).into()),
    }
}

/// Why [`check_open_orders`] refused a config, or could not tell.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Stranded(#[from] Stranded),
    #[error("counting open orders per upstream: {0}")]
    Store(#[from] StoreError),
}

impl CheckError {
    fn at_start(self, database: &str) -> StartError {
        match self {
            CheckError::Stranded(s) => StartError::Stranded(s),
            CheckError::Store(source) => StartError::Store {
                url: redact_url(database),
                source,
            },
        }
    }
}

/// Opens the store a config names and brings its schema up to date.
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, StartError> {
    store::open(url).await.map_err(|source| StartError::Store {
        url: redact_url(url),
        source,
    })
}

/// The gateway in force. A reload builds a new one from the new config and swaps it in whole:
/// a request runs entirely under the config it started with.
pub struct Live {
    current: ArcSwap<Gateway>,
    /// One reload at a time (SIGHUP and the file watch may fire together): each checks the
    /// store against the config it is about to put in force.
    reloading: tokio::sync::Mutex<()>,
}

impl Live {
    pub fn gateway(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    /// Counts a reload by its outcome (`ok`, `refused`), so that a refused one is seen
    /// without reading the logs.
    fn count_reload(&self, result: &Result<(), String>) {
        let outcome = if result.is_ok() { "ok" } else { "refused" };
        self.gateway()
            .metrics
            .config_reloads
            .with_label_values(&[outcome])
            .inc();
    }

    /// Switches to `cfg`. Keys that only take effect at start (listeners, database, TLS,
    /// ingress limits) are reported and left as they are; changing the currency under existing
    /// balances is refused.
    pub async fn reload(&self, cfg: Config) -> Result<(), String> {
        let _turn = self.reloading.lock().await;
        let old = self.gateway();
        if cfg.currency != old.cfg.currency {
            return Err("currency cannot change while balances exist in the old one".into());
        }
        check_open_orders(&cfg, old.store.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        let fixed = [
            ("listen", cfg.listen != old.cfg.listen),
            (
                "metrics_listen",
                cfg.metrics_listen != old.cfg.metrics_listen,
            ),
            ("database", cfg.database != old.cfg.database),
            ("tls", cfg.tls != old.cfg.tls),
            ("admin", cfg.admin != old.cfg.admin),
            (
                "limits",
                format!("{:?}", cfg.limits) != format!("{:?}", old.cfg.limits),
            ),
        ];
        for (key, changed) in fixed {
            if changed {
                tracing::warn!(
                    key,
                    "this key takes effect at the next start, not on reload"
                );
            }
        }
        let next = Arc::new(old.reconfigured(Arc::new(cfg)));
        let catalog = next.catalog.get().await;
        // Rules that need the upstreams' lists are checked here, where the new catalog is
        // built from them; a config that breaks one is refused whole.
        if !catalog.refused.is_empty() {
            let all: Vec<String> = catalog.refused.iter().map(|r| r.to_string()).collect();
            return Err(format!("the upstreams' lists rule out: {}", all.join("; ")));
        }
        for u in &next.upstreams.0 {
            // Logged inside when it stops an upstream from taking orders.
            let _ = u.learn_currency().await;
        }
        self.current.store(next.clone());
        // An upstream that is gone must not keep its last readings (and alerts) alive.
        let m = &next.metrics;
        let gone: Vec<&str> = old
            .cfg
            .upstreams
            .iter()
            .map(|u| u.name.as_str())
            .filter(|name| next.cfg.upstream(name).is_none())
            .collect();
        for name in &gone {
            let _ = m.upstream_healthy.remove_label_values(&[name]);
            let _ = m.upstream_breaker.remove_label_values(&[name]);
            let _ = m.catalog_services.remove_label_values(&[name]);
            let _ = m.catalog_age_seconds.remove_label_values(&[name]);
            let _ = m.upstream_services_listed.remove_label_values(&[name]);
            let _ = m.upstream_currency_mismatch.remove_label_values(&[name]);
        }
        if !gone.is_empty() {
            // Balances are labelled by currency too; the poll refills the ones that remain.
            m.upstream_balance.reset();
        }
        tracing::info!(services = catalog.len(), "config reloaded");
        Ok(())
    }
}

/// A running gateway.
pub struct Running {
    pub addr: SocketAddr,
    /// The metrics-only listener, if `metrics_listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    /// The admin API's listener, if `admin:` is set.
    pub admin_addr: Option<SocketAddr>,
    pub live: Arc<Live>,
    /// The store, which a reload never changes.
    pub store: Arc<dyn Store>,
    pub simulators: Vec<SimHandle>,
    tls: bool,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/api/v2", self.addr)
    }

    pub fn gateway(&self) -> Arc<Gateway> {
        self.live.gateway()
    }

    /// Reads the config file again and switches to it; an invalid file is logged and the
    /// running config keeps serving.
    pub async fn reload(&self) -> Result<(), String> {
        let path = self.gateway().cfg.path.clone();
        let result = match crate::config::load(&path) {
            Ok(cfg) => self.live.reload(cfg).await,
            Err(e) => Err(e.to_string()),
        };
        self.live.count_reload(&result);
        if let Err(e) = &result {
            tracing::error!(error = %e, "config not reloaded; the running config stays");
        }
        result
    }

    /// Stops accepting, finishes in-flight requests (within the grace period), stops the
    /// background work and the simulated upstreams.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        for s in self.simulators {
            s.stop().await;
        }
    }
}

/// Starts everything `cfg` describes.
pub async fn start(cfg: Config) -> Result<Running, StartError> {
    let cfg = Arc::new(cfg);
    let store = open_store(&cfg.database).await?;
    // Before anything is written: a refused start leaves the database as it was.
    check_open_orders(&cfg, store.as_ref())
        .await
        .map_err(|e| e.at_start(&cfg.database))?;
    // Two local orders following one upstream order would both be refunded for it: the
    // operator unlinks the extras (the error names them and the command) before serving.
    store
        .unique_upstream_orders()
        .await
        .map_err(|source| StartError::Store {
            url: redact_url(&cfg.database),
            source,
        })?;
    // One SQLite file has one gateway: whatever is still dispatching was left by its previous
    // run. A shared database may have other instances dispatching right now; theirs are only
    // abandoned once past the dispatch deadline (the sync loop checks that periodically).
    let now = now_ms();
    let (deadline_before, updated_before) = if cfg.database.starts_with("sqlite:") {
        (Millis::MAX, now + 1)
    } else {
        sync::abandoned_before(&cfg, now)
    };
    let recovered = store
        .recover_dispatching(deadline_before, updated_before, now)
        .await
        .map_err(|source| StartError::Store {
            url: redact_url(&cfg.database),
            source,
        })?;
    if recovered > 0 {
        tracing::error!(
            orders = recovered,
            "orders interrupted mid-dispatch are now `unknown`: resolve them with `panelgate order resolve`"
        );
    }
    bootstrap_clients(&cfg, store.as_ref()).await?;

    let mut simulators = Vec::new();
    for u in &cfg.upstreams {
        if let Some(section) = &u.simulate {
            simulators.push(start_simulator(u, section).await?);
        }
    }

    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: cfg.listen,
        source,
    })?;

    let metrics = Arc::new(Metrics::new());
    let upstreams = Arc::new(Upstreams::new(&cfg.upstreams, metrics.clone()));
    let gateway = Arc::new(Gateway::new(cfg.clone(), store.clone(), upstreams, metrics));
    let catalog = gateway.catalog.get().await;
    tracing::info!(services = catalog.len(), "catalog loaded");
    // Every upstream's currency is known before it takes an order; one that cannot be asked
    // now is asked again before its first order as a primary, and skipped as a fallback.
    for u in &gateway.upstreams.0 {
        let _ = u.learn_currency().await;
    }
    let live = Arc::new(Live {
        current: ArcSwap::new(gateway),
        reloading: tokio::sync::Mutex::new(()),
    });

    let (stop, stopped) = watch::channel(false);
    let mut tasks = vec![
        tokio::spawn(run_sync(live.clone(), stopped.clone())),
        tokio::spawn(refresh_catalog(live.clone(), stopped.clone())),
        tokio::spawn(poll_balances(live.clone(), stopped.clone())),
    ];
    if let Some(every) = cfg.config_poll {
        tasks.push(tokio::spawn(watch_config(
            live.clone(),
            every,
            stopped.clone(),
        )));
    }
    let mut listeners = vec![(listener, true)];
    let mut metrics_addr = None;
    if let Some(addr) = cfg.metrics_listen {
        let listen_err = |source| StartError::Listen { addr, source };
        let metrics_listener = TcpListener::bind(addr).await.map_err(listen_err)?;
        metrics_addr = Some(metrics_listener.local_addr().map_err(listen_err)?);
        listeners.push((metrics_listener, false));
    }
    let tls = match &cfg.tls {
        Some(files) => Some(server::tls_config(&files.cert, &files.key).map_err(StartError::Tls)?),
        None => None,
    };
    for (listener, api) in listeners {
        let routes = Arc::new(Routes {
            live: live.clone(),
            limits: cfg.limits.clone(),
            api,
        });
        let mut shutdown = stopped.clone();
        tasks.push(tokio::spawn(server::serve(
            listener,
            routes,
            cfg.limits.clone(),
            // The metrics listener stays plain HTTP: it is scraped from inside.
            if api { tls.clone() } else { None },
            async move {
                let _ = shutdown.changed().await;
            },
        )));
    }
    // ---- the admin API (docs/admin-api.md): its own listener, off without `admin:` ----
    let mut admin_addr = None;
    if let Some(admin) = &cfg.admin {
        let mut shutdown = stopped.clone();
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        let (at, task) =
            crate::admin_api::start(admin, live.clone(), cfg.limits.clone(), stop).await?;
        admin_addr = Some(at);
        tasks.push(task);
    }
    // ---- end of the admin API ----
    Ok(Running {
        addr,
        metrics_addr,
        admin_addr,
        live,
        store,
        simulators,
        tls: tls.is_some(),
        stop,
        tasks,
    })
}

/// Creates the config's `clients:` that do not exist yet (the demo's customer). Existing
/// ones are left as they are: the config never resets a balance. An entry without a key
/// creates nothing: it carries settings for a client `client add` creates.
async fn bootstrap_clients(cfg: &Config, store: &dyn Store) -> Result<(), StartError> {
    for c in &cfg.clients {
        let err = |source| StartError::Client {
            name: c.name.clone(),
            source,
        };
        if store
            .customer_by_name(&c.name)
            .await
            .map_err(err)?
            .is_some()
        {
            continue;
        }
        let Some(key) = &c.key else {
            tracing::warn!(client = %c.name, "no client of this name and no key in the config to create it: its settings apply once `client add` creates it");
            continue;
        };
        let units = |d| {
            money::to_units(d).ok_or(StoreError::Conflict(
                "amount has more than 5 decimals".into(),
            ))
        };
        let balance = units(c.balance).map_err(err)?;
        let credit = units(c.credit_limit).map_err(err)?;
        store
            .create_customer(
                &c.name,
                &crate::keys::hash(key.expose()),
                &c.group,
                credit,
                balance,
                now_ms(),
            )
            .await
            .map_err(err)?;
        tracing::info!(client = %c.name, "client created from the config");
    }
    Ok(())
}

async fn start_simulator(
    u: &UpstreamConfig,
    s: &SimulatorSection,
) -> Result<SimHandle, StartError> {
    let err = |message: String| StartError::Simulator {
        name: u.name.clone(),
        message,
    };
    let addr: SocketAddr = u
        .url
        .authority()
        .map(|a| a.as_str())
        .unwrap_or_default()
        .parse()
        .map_err(|_| err("the url of a simulated upstream must be http://IP:PORT/…".into()))?;
    let mut cfg = SimConfig::new(u.key.expose());
    cfg.seed = s.seed.unwrap_or(cfg.seed);
    cfg.balance = s.balance.unwrap_or(cfg.balance);
    cfg.currency = s
        .currency
        .clone()
        .or_else(|| u.currency.clone())
        .unwrap_or(cfg.currency);
    cfg.speed = s.speed.unwrap_or(cfg.speed);
    cfg.services = match (&s.catalog, s.services) {
        (Some(path), _) => sim_catalog::load(path).map_err(err)?,
        (None, Some(n)) => sim_catalog::generated(n, cfg.seed),
        (None, None) => sim_catalog::builtin(),
    };
    cfg.shares.partial = s.partial_share.unwrap_or(cfg.shares.partial);
    cfg.shares.cancel = s.cancel_share.unwrap_or(cfg.shares.cancel);
    cfg.first_order_id = s.first_order_id.unwrap_or(1);
    cfg.journal = s.journal.clone();
    cfg.faults = s.faults.clone().unwrap_or_default();
    cfg.dialect = s.dialect.unwrap_or_default();
    cfg.api_path = s.api_path.clone();
    let handle = sim::start(cfg, addr)
        .await
        .map_err(|e| err(format!("listening on {addr}: {e}")))?;
    tracing::info!(upstream = %u.name, url = %handle.url(), "simulated upstream started");
    Ok(handle)
}

/// Background sync: a pass over every upstream each `sync.interval`, under the config in force.
async fn run_sync(live: Arc<Live>, mut stop: watch::Receiver<bool>) {
    // Weak: an old gateway is not kept alive, and its address cannot be reused meanwhile.
    let mut last = Arc::downgrade(&live.gateway());
    loop {
        let gateway = live.gateway();
        let interval = gateway.cfg.sync_interval;
        gateway.syncer.pass(interval).await;
        let current = Arc::downgrade(&gateway);
        if !std::sync::Weak::ptr_eq(&last, &current) {
            warn_unfollowed(&gateway).await;
        }
        last = current;
        gateway.syncer.mark_stuck(&gateway.catalog.snapshot()).await;
        drop(gateway);
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// After a reload: a dispatch the previous config started may have created its order at an
/// upstream the reload then removed (the reload's own check ran a moment before). Nothing
/// follows such an order; say so, once, a sync interval after the reload.
async fn warn_unfollowed(gateway: &Gateway) {
    match check_open_orders(&gateway.cfg, gateway.store.as_ref()).await {
        Ok(()) => {}
        Err(e) => tracing::error!(error = %e, "orders are not being synced"),
    }
}

/// Keeps the catalog warm: lists are re-fetched every TTL even when nobody asks.
async fn refresh_catalog(live: Arc<Live>, mut stop: watch::Receiver<bool>) {
    loop {
        let ttl = live.gateway().cfg.catalog_ttl.max(Duration::from_secs(1));
        tokio::select! {
            () = tokio::time::sleep(ttl) => {}
            _ = stop.changed() => return,
        }
        live.gateway().catalog.get().await;
    }
}

/// Reloads the config when its file changes (checked every `config_poll`).
async fn watch_config(live: Arc<Live>, every: Duration, mut stop: watch::Receiver<bool>) {
    let path = live.gateway().cfg.path.clone();
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    let mut last = stamp(&path);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let now = stamp(&path);
        if now == last {
            continue;
        }
        last = now;
        match crate::config::load(&path) {
            Ok(cfg) => {
                let result = live.reload(cfg).await;
                live.count_reload(&result);
                if let Err(e) = result {
                    tracing::error!(error = %e, "config not reloaded; the running config stays");
                }
            }
            Err(e) => {
                live.count_reload(&Err(String::new()));
                tracing::error!(error = %e, "config file changed but is invalid; the running config stays")
            }
        }
    }
}

/// The gateway's HTTP routes: `/api/v2`, `/metrics`, `/healthz`, `/readyz`.
struct Routes {
    live: Arc<Live>,
    limits: server::Limits,
    /// The metrics listener serves everything but the API.
    api: bool,
}

impl Handler for Routes {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Answer {
        match req.uri().path() {
            "/healthz" => {
                return server::ok(bytes::Bytes::from_static(br#"{"status":"ok"}"#)).into();
            }
            "/readyz" => return readiness(&self.live.gateway()).await.into(),
            "/metrics" => return metrics_reply(&self.live.gateway()).await.into(),
            path if self.api && server::is_api_path(path) => {}
            _ => return server::not_found().into(),
        }
        let started = Instant::now();
        let gateway = self.live.gateway();
        let metrics = &gateway.metrics;
        let api = match server::read_api_request(req, &self.limits).await {
            Ok(api) => api,
            Err(reply) => {
                metrics
                    .requests
                    .with_label_values(&["unknown", "refused"])
                    .inc();
                return reply.into();
            }
        };
        let mut trace = Trace::default();
        let result = gateway.handle(&api, peer.ip(), &mut trace).await;
        let asked = if trace.action.is_empty() {
            "unknown"
        } else {
            trace.action
        };
        // The log line names what a refused request asked for; the metrics count a request
        // refused at the door (its key, a rate limit) under `unknown`, as they always have.
        let action = if trace.admitted { asked } else { "unknown" };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.label(),
        };
        // The log line says what an `add` came to upstream (placed, refused, unknown,
        // not_sent), or that a read was answered over the limit; the metric keeps `ok` / the
        // error class the customer got.
        let logged = trace.outcome.unwrap_or(outcome);
        match &result {
            Err(ProtocolError::InvalidKey) => metrics.rejected_keys.inc(),
            Err(ProtocolError::TooManyRequests(_) | ProtocolError::TooManyKeyAttempts(_)) => {
                metrics.rate_limited.inc()
            }
            _ => {}
        }
        let elapsed = started.elapsed();
        metrics.requests.with_label_values(&[action, outcome]).inc();
        metrics
            .request_seconds
            .with_label_values(&[action])
            .observe(elapsed.as_secs_f64());
        tracing::info!(
            action = asked,
            client = trace.customer.as_ref().map_or("-", |c| c.name.as_str()),
            ids = %trace.ids_text(),
            ids_total = trace.ids_total,
            outcome = logged,
            error = result.as_ref().err().map(|e| e.to_string()).unwrap_or_default(),
            latency_us = elapsed.as_micros() as u64,
            upstream = trace.upstream.as_deref().unwrap_or("-"),
            order = trace.order.unwrap_or(0),
            upstream_order = trace.upstream_order.as_deref().unwrap_or("-"),
            %peer,
            "request"
        );
        let mut reply = match result {
            Ok(body) => {
                let mut reply = server::ok(body.bytes);
                if body.gzip {
                    reply.headers_mut().insert(
                        http::header::CONTENT_ENCODING,
                        http::HeaderValue::from_static("gzip"),
                    );
                }
                reply
            }
            Err(e) => server::protocol_error(&e),
        };
        if asked == "services" {
            // The body depends on Accept-Encoding: caches between us and the panel must know.
            reply.headers_mut().insert(
                http::header::VARY,
                http::HeaderValue::from_static("accept-encoding"),
            );
        }
        reply.into()
    }
}

/// `/readyz`: 200 when the database answers, the catalog has services and at least one
/// upstream is healthy; 503 otherwise, with a JSON body saying what is wrong.
async fn readiness(gw: &Gateway) -> server::Reply {
    let database = match gw.store.ping().await {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("error: {e}"),
    };
    let services = gw.catalog.snapshot().len();
    let upstreams: serde_json::Map<String, serde_json::Value> = gw
        .upstreams
        .0
        .iter()
        .map(|u| {
            (
                u.name.clone(),
                (if u.is_healthy() {
                    "healthy"
                } else {
                    "unhealthy"
                })
                .into(),
            )
        })
        .collect();
    // An upstream whose currency does not fit the config takes no orders.
    let currency: serde_json::Map<String, serde_json::Value> = gw
        .upstreams
        .0
        .iter()
        .map(|u| {
            let state = match u.currency_check() {
                Ok(()) => "ok".to_owned(),
                Err(e) => e.to_string(),
            };
            (u.name.clone(), state.into())
        })
        .collect();
    let mut problems = Vec::new();
    if database != "ok" {
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
    let body = serde_json::json!({
        "ready": problems.is_empty(),
        "problems": problems,
        "database": database,
        "catalog_services": services,
        "upstreams": upstreams,
        "currency": currency,
    });
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    server::json_reply(status, crate::protocol::reply::to_bytes(&body))
}

/// `/metrics`: gauges read at scrape time (orders by state, list ages), then everything.
async fn metrics_reply(gw: &Gateway) -> server::Reply {
    let m = &gw.metrics;
    match gw.store.count_orders_by_state().await {
        Ok(counts) => {
            for (state, n) in counts {
                m.orders.with_label_values(&[state.as_str()]).set(n as i64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "counting orders for the metrics failed"),
    }
    attention_gauge(gw).await;
    for (upstream, age) in gw.catalog.list_ages() {
        m.catalog_age_seconds
            .with_label_values(&[&upstream])
            .set(age.as_secs_f64());
    }
    let mut reply = server::ok(bytes::Bytes::from(m.render()));
    reply.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    reply
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

/// Polls each upstream's balance for the metrics, so operators hear of an account running dry
/// before orders start failing.
async fn poll_balances(live: Arc<Live>, mut stop: watch::Receiver<bool>) {
    loop {
        let gateway = live.gateway();
        for u in &gateway.upstreams.0 {
            match u.balance().await {
                Ok(b) => {
                    let currency = if b.currency.is_empty() {
                        "unknown"
                    } else {
                        b.currency.as_str()
                    };
                    gateway
                        .metrics
                        .upstream_balance
                        .with_label_values(&[&u.name, currency])
                        .set(crate::metrics::as_metric(b.balance));
                }
                Err(e) => tracing::warn!(upstream = %u.name, error = %e, "balance poll failed"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(gateway.cfg.balance_poll) => {}
            _ = stop.changed() => return,
        }
    }
}

/// A database URL without its password, for error texts.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}
