//! Assembles a running gateway from its config: the store (migrated, crash-recovered), the
//! demo's simulated upstreams, the upstream clients, the catalog, the background tasks
//! ([`crate::tasks`]) and the listeners ([`crate::server`]); and switches configs on reload.
//! `panelgate serve` and the black-box tests both start the gateway through here.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, RuntimeModel, SimulatorSection, UpstreamConfig};
use crate::gateway::Gateway;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::money;
use crate::server::{self, Routes};
use crate::sim::{self, SimConfig, SimHandle};
use crate::store::{self, Millis, Store, StoreError};
use crate::sync::{self, now_ms};
use crate::tasks;
use crate::upstream::Upstreams;

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
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("starting the runtime of core {index}: {source}")]
    Runtime {
        index: usize,
        source: std::io::Error,
    },
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
    pub(crate) fn count_reload(&self, result: &Result<(), String>) {
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
            ("runtime", cfg.runtime != old.cfg.runtime),
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
        forget_gone_upstreams(&old, &next);
        tracing::info!(services = catalog.len(), "config reloaded");
        Ok(())
    }
}

/// An upstream that is gone after a reload must not keep its last readings (and alerts) alive.
fn forget_gone_upstreams(old: &Gateway, next: &Gateway) {
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
    let (store, journal) = prepare_store(&cfg).await?;
    bootstrap_clients(&cfg, store.as_ref()).await?;
    let simulators = start_simulators(&cfg).await?;
    let (listener, addr, other_cores) = bind_api(&cfg).await?;
    let live = Arc::new(Live {
        current: ArcSwap::new(first_gateway(&cfg, &store, journal).await),
        reloading: tokio::sync::Mutex::new(()),
    });
    let (stop, stopped) = watch::channel(false);
    let mut tasks = tasks::spawn(&live, &cfg, &stopped);
    let mut listeners = vec![(listener, true)];
    let mut metrics_addr = None;
    if let Some(addr) = cfg.metrics_listen {
        let (metrics_listener, bound) = bind(addr).await?;
        metrics_addr = Some(bound);
        listeners.push((metrics_listener, false));
    }
    let tls = match &cfg.tls {
        Some(files) => Some(server::tls_config(&files.cert, &files.key).map_err(StartError::Tls)?),
        None => None,
    };
    for (listener, api) in listeners {
        // The metrics listener stays plain HTTP: it is scraped from inside.
        let tls = if api { tls.clone() } else { None };
        tasks.push(serve(listener, api, &live, &cfg, tls, &stopped));
    }
    for (i, listener) in other_cores.into_iter().enumerate() {
        let routes = routes(&live, &cfg, true);
        tasks.push(serve_on_core(
            i + 1,
            listener,
            routes,
            &cfg,
            tls.clone(),
            &stopped,
        )?);
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

/// Opens the store and readies it for this start: refused (unchanged) if `cfg` strands open
/// orders or two orders follow one upstream order, and orders a previous run left
/// mid-dispatch are marked `unknown`, after the upstream order ids a previous run journaled
/// while the database was away are recorded.
async fn prepare_store(cfg: &Config) -> Result<(Arc<dyn Store>, Arc<Journal>), StartError> {
    let store = store::open_per_core(&cfg.database, cfg.runtime.cores())
        .await
        .map_err(|source| StartError::Store {
            url: redact_url(&cfg.database),
            source,
        })?;
    let failed = |source| StartError::Store {
        url: redact_url(&cfg.database),
        source,
    };
    // Before anything is written: a refused start leaves the database as it was.
    check_open_orders(cfg, store.as_ref())
        .await
        .map_err(|e| e.at_start(&cfg.database))?;
    // Two local orders following one upstream order would both be refunded for it: the
    // operator unlinks the extras (the error names them and the command) before serving.
    store.unique_upstream_orders().await.map_err(failed)?;
    // Upstream order ids kept while the database was away go in first, so that the recovery
    // below does not make their orders `unknown`.
    let journal = Arc::new(Journal::open(&Journal::path_for(cfg))?);
    let replayed = crate::journal::replay(&journal, store.as_ref()).await?;
    if replayed > 0 {
        tracing::warn!(orders = replayed, journal = %journal.describe(), "upstream orders kept in the journal while the database was away are recorded");
    }
    // A single-writer store (one SQLite file) has one gateway: whatever is still dispatching was left by its previous
    // run. A shared database may have other instances dispatching right now; theirs are only
    // abandoned once past the dispatch deadline (the sync loop checks that periodically).
    let now = now_ms();
    let (deadline_before, updated_before) = if store.single_writer() {
        (Millis::MAX, now + 1)
    } else {
        sync::abandoned_before(cfg, now)
    };
    let recovered = store
        .recover_dispatching(deadline_before, updated_before, now)
        .await
        .map_err(failed)?;
    if recovered > 0 {
        tracing::error!(
            orders = recovered,
            "orders interrupted mid-dispatch are now `unknown`: resolve them with `panelgate order resolve`"
        );
    }
    Ok((store, journal))
}

/// The gateway for the config at start, its catalog loaded and its upstreams' currencies
/// asked.
async fn first_gateway(
    cfg: &Arc<Config>,
    store: &Arc<dyn Store>,
    journal: Arc<Journal>,
) -> Arc<Gateway> {
    let metrics = Arc::new(Metrics::new());
    let upstreams = Arc::new(Upstreams::new(
        &cfg.upstreams,
        metrics.clone(),
        cfg.runtime.cores(),
    ));
    let mut gateway = Gateway::new(cfg.clone(), store.clone(), upstreams, metrics);
    gateway.journal = journal;
    let gateway = Arc::new(gateway);
    let catalog = gateway.catalog.get().await;
    tracing::info!(services = catalog.len(), "catalog loaded");
    // Every upstream's currency is known before it takes an order; one that cannot be asked
    // now is asked again before its first order as a primary, and skipped as a fallback.
    for u in &gateway.upstreams.0 {
        let _ = u.learn_currency().await;
    }
    gateway
}

/// A listener on `addr`, and the address it got (port 0 picks one).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let failed = |source| StartError::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    Ok((listener, bound))
}

/// The API's listener on `cfg.listen`, the address it got, and in the thread-per-core model
/// one more listener on that same address for each other core: with `SO_REUSEPORT` the
/// kernel spreads new connections over them, so no core hands a connection to another.
async fn bind_api(
    cfg: &Config,
) -> Result<(TcpListener, SocketAddr, Vec<std::net::TcpListener>), StartError> {
    let failed = |addr, source| StartError::Listen { addr, source };
    if cfg.runtime.model == RuntimeModel::MultiThread {
        let (listener, addr) = bind(cfg.listen).await?;
        return Ok((listener, addr, Vec::new()));
    }
    let first = reuse_port(cfg.listen).map_err(|e| failed(cfg.listen, e))?;
    // Port 0 picks a port for the first; the others join that one.
    let addr = first.local_addr().map_err(|e| failed(cfg.listen, e))?;
    let others = (1..cfg.runtime.threads)
        .map(|_| reuse_port(addr).map_err(|e| failed(addr, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let first = TcpListener::from_std(first).map_err(|e| failed(addr, e))?;
    Ok((first, addr, others))
}

/// A non-blocking listener on `addr` that other sockets of this user may share.
fn reuse_port(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // The backlog tokio's own `bind` asks for.
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Serves the API on `listener` from a runtime of its own, on a thread of its own marked as
/// core `index`, until `stop` changes; the handle ends when that core has drained.
fn serve_on_core(
    index: usize,
    listener: std::net::TcpListener,
    routes: Arc<Routes>,
    cfg: &Config,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: &watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, StartError> {
    let failed = |source| StartError::Runtime { index, source };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(failed)?;
    // Registered with its own core's driver, not the caller's.
    let listener = {
        let _on = runtime.enter();
        TcpListener::from_std(listener).map_err(failed)?
    };
    let limits = cfg.limits.clone();
    let mut shutdown = stop.clone();
    let (drained, done) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(format!("panelgate-core-{index}"))
        .spawn(move || {
            crate::cores::enter(index);
            let stop = async move {
                let _ = shutdown.changed().await;
            };
            runtime.block_on(server::serve(listener, routes, limits, tls, stop));
            drop(runtime);
            let _ = drained.send(());
        })
        .map_err(failed)?;
    Ok(tokio::spawn(async move {
        let _ = done.await;
    }))
}

fn routes(live: &Arc<Live>, cfg: &Config, api: bool) -> Arc<Routes> {
    Arc::new(Routes {
        live: live.clone(),
        limits: cfg.limits.clone(),
        api,
    })
}

/// Serves the gateway's routes on `listener` (the API too when `api`) until `stop` changes.
fn serve(
    listener: TcpListener,
    api: bool,
    live: &Arc<Live>,
    cfg: &Config,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let routes = routes(live, cfg, api);
    let mut shutdown = stop.clone();
    tokio::spawn(server::serve(
        listener,
        routes,
        cfg.limits.clone(),
        tls,
        async move {
            let _ = shutdown.changed().await;
        },
    ))
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
            money::to_units(d).ok_or(StoreError::Invalid(
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

/// The simulated upstreams the config asks for, each on its upstream's address.
async fn start_simulators(cfg: &Config) -> Result<Vec<SimHandle>, StartError> {
    let mut simulators = Vec::new();
    for u in &cfg.upstreams {
        if let Some(section) = &u.simulate {
            simulators.push(start_simulator(u, section).await?);
        }
    }
    Ok(simulators)
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
    // It states the currency the upstream is configured with, unless it says otherwise.
    let settings = SimulatorSection {
        currency: s.currency.clone().or_else(|| u.currency.clone()),
        ..s.clone()
    };
    let cfg = SimConfig::from_settings(u.key.expose(), &settings).map_err(err)?;
    let handle = sim::start(cfg, addr)
        .await
        .map_err(|e| err(format!("listening on {addr}: {e}")))?;
    tracing::info!(upstream = %u.name, url = %handle.url(), "simulated upstream started");
    Ok(handle)
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
