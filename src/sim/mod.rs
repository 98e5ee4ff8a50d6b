//! `panelgate simulate`: a complete simulated provider panel on loopback, served through the
//! same protocol module and HTTP edge as the gateway. It keeps its own account balance,
//! progresses orders in scaled time, injects faults on demand and journals every order it
//! creates, so tests can prove that nothing was placed twice or lost.
//!
//! Besides `/api/v2` it answers two control paths, both taking the panel's key as `?key=`:
//! `GET /_sim/state` (balance and counts) and `GET|POST /_sim/faults` (read or replace the
//! fault settings, a JSON [`Faults`] object).

mod amounts;
pub mod catalog;
pub mod dialect;
pub mod faults;
pub mod panel;
mod settings;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use rust_decimal::Decimal;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;

pub use dialect::Dialect;
use faults::SplitMix;
pub use faults::{Chance, Faults};
use panel::{Millis, Panel, Shares};

use crate::config::Secret;
use crate::protocol::reply::{
    self, Balance, Canceled, MultiRefill, MultiRefillStatus, MultiStatus, RefillCreated,
    RefillState,
};
use crate::protocol::{Action, Ids, Params, ProtocolError, Service};
use crate::server::{self, Answer, Handler, Limits, Reply};

/// Everything a simulator is started with.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub key: Secret,
    pub seed: u64,
    pub balance: Decimal,
    pub currency: String,
    /// How many times faster than real time the panel's clock runs.
    pub speed: f64,
    pub services: Vec<Service>,
    pub shares: Shares,
    pub first_order_id: u64,
    pub faults: Faults,
    pub journal: Option<PathBuf>,
    pub limits: Limits,
    /// How its replies are worded (see [`Dialect`]).
    pub dialect: Dialect,
    /// Serve the API at this path instead of `/api/v2`, and answer every other path with an
    /// HTML 404 page, as PHP panel scripts that serve `/api/v1` do.
    pub api_path: Option<String>,
    /// The `services` reply, verbatim, instead of the catalog's (other panels' shapes).
    pub services_body: Option<Bytes>,
    /// Refuse every refill with this text, `{order}` replaced by the order's id.
    pub refill_refusal: Option<String>,
}

impl SimConfig {
    /// The built-in catalog, 1000.00 of balance, real-time clock, no faults.
    pub fn new(key: impl Into<String>) -> SimConfig {
        SimConfig {
            key: Secret::new(key),
            seed: 1,
            balance: Decimal::from(1000),
            currency: "USD".into(),
            speed: 1.0,
            services: catalog::builtin(),
            shares: Shares {
                partial: Chance::parse("0.12").unwrap_or_default(),
                cancel: Chance::parse("0.08").unwrap_or_default(),
            },
            first_order_id: 1,
            faults: Faults::default(),
            journal: None,
            limits: Limits::default(),
            dialect: Dialect::default(),
            api_path: None,
            services_body: None,
            refill_refusal: None,
        }
    }
}

/// The panel's clock: real time scaled by `speed`.
struct Clock {
    origin: Instant,
    speed: f64,
}

impl Clock {
    fn now(&self) -> Millis {
        (self.origin.elapsed().as_secs_f64() * self.speed * 1000.0) as Millis
    }
}

pub struct Simulator {
    key: Secret,
    limits: Limits,
    clock: Clock,
    panel: Mutex<Panel>,
    faults: RwLock<Faults>,
    rng: SplitMix,
    journal: Option<Mutex<File>>,
    /// The services reply never changes, so it is serialized once.
    services_reply: Bytes,
    /// API requests received, by action, so tests can count what reached the upstream.
    requests: Mutex<std::collections::BTreeMap<String, u64>>,
    /// `status` requests by how many ids they asked about, so tests can see the batches.
    status_batches: Mutex<std::collections::BTreeMap<usize, u64>>,
    dialect: Dialect,
    api_path: Option<String>,
    refill_refusal: Option<String>,
}

impl Simulator {
    pub fn new(cfg: SimConfig) -> std::io::Result<Simulator> {
        let journal = match &cfg.journal {
            Some(path) => Some(Mutex::new(
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
            None => None,
        };
        Ok(Simulator {
            services_reply: cfg.services_body.clone().unwrap_or_else(|| {
                cfg.dialect
                    .services(&cfg.services, &reply::to_bytes(&cfg.services))
            }),
            dialect: cfg.dialect,
            api_path: cfg.api_path.clone(),
            refill_refusal: cfg.refill_refusal.clone(),
            panel: Mutex::new(Panel::new(
                cfg.seed,
                &cfg.services,
                cfg.balance,
                cfg.currency,
                cfg.shares,
                cfg.first_order_id,
            )),
            key: cfg.key,
            limits: cfg.limits,
            clock: Clock {
                origin: Instant::now(),
                speed: if cfg.speed > 0.0 { cfg.speed } else { 1.0 },
            },
            faults: RwLock::new(cfg.faults),
            rng: SplitMix::new(cfg.seed),
            journal,
            requests: Mutex::default(),
            status_batches: Mutex::default(),
        })
    }

    fn panel(&self) -> std::sync::MutexGuard<'_, Panel> {
        // A panic elsewhere must not take the simulator down with it.
        self.panel.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers one API request (after fault injection has had its say).
    fn answer(&self, api: &server::ApiRequest) -> Reply {
        match self.act(api) {
            Ok(body) => server::ok(body),
            Err(e) if self.dialect == Dialect::PanelScript => self.dialect.refusal(&e.to_string()),
            Err(e) => server::protocol_error(&e),
        }
    }

    fn act(&self, api: &server::ApiRequest) -> Result<Bytes, ProtocolError> {
        if api.key() != Some(self.key.expose()) {
            return Err(ProtocolError::InvalidKey);
        }
        let translated = self.dialect.incoming(&api.params);
        let action = Action::parse(translated.as_ref().unwrap_or(&api.params))?;
        let wire = |id| self.dialect.id(id);
        if let Action::Status(ids) = &action {
            let asked = match ids {
                Ids::One(_) => 1,
                Ids::Many(ids) => ids.len(),
            };
            *self
                .status_batches
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(asked)
                .or_default() += 1;
        }
        let now = self.clock.now();
        let mut panel = self.panel();
        panel.settle_due(now);
        Ok(match action {
            Action::Services => self.services_reply.clone(),
            Action::Balance => reply::to_bytes(&Balance {
                balance: panel.balance,
                currency: panel.currency.clone(),
            }),
            Action::Add { service } => {
                let created = panel.add(service, &api.params, now)?;
                drop(panel);
                self.journal(&created);
                self.dialect.added(created.order)
            }
            Action::Status(Ids::One(id)) => reply::to_bytes(&panel.status(id, now)?),
            Action::Status(Ids::Many(ids)) => reply::to_bytes(&MultiStatus(
                ids.iter()
                    .map(|&id| (wire(id), panel.status(id, now).map_err(|e| e.to_string())))
                    .collect(),
            )),
            Action::Refill(Ids::One(id)) => reply::to_bytes(&RefillCreated {
                refill: match self.refused_refill(id) {
                    Some(text) => return Err(ProtocolError::Upstream(text)),
                    None => panel.refill(id, now)?,
                },
            }),
            Action::Refill(Ids::Many(ids)) => reply::to_bytes(&MultiRefill(
                ids.iter()
                    .map(|&id| match self.refused_refill(id) {
                        Some(text) => (wire(id), Err(text)),
                        None => (wire(id), panel.refill(id, now).map_err(|e| e.to_string())),
                    })
                    .collect(),
            )),
            Action::RefillStatus(Ids::One(id)) => reply::to_bytes(&RefillState {
                status: panel.refill_status(id, now)?,
            }),
            Action::RefillStatus(Ids::Many(ids)) => reply::to_bytes(&MultiRefillStatus(
                ids.iter()
                    .map(|&id| (id, panel.refill_status(id, now).map_err(|e| e.to_string())))
                    .collect(),
            )),
            Action::Cancel(ids) => reply::to_bytes(&Canceled(
                ids.iter()
                    .map(|&id| (wire(id), panel.cancel(id, now).map_err(|e| e.to_string())))
                    .collect(),
            )),
        })
    }

    fn refused_refill(&self, order: u64) -> Option<String> {
        let text = self.refill_refusal.as_ref()?;
        Some(text.replace("{order}", &order.to_string()))
    }

    fn is_api_path(&self, path: &str) -> bool {
        match &self.api_path {
            Some(p) => path.trim_end_matches('/') == p.trim_end_matches('/'),
            None => server::is_api_path(path),
        }
    }

    /// What a path that is not the API gets: a panel script's HTML page when the API has been
    /// moved (`api_path`), else our JSON 404.
    fn not_found(&self) -> Reply {
        if self.api_path.is_none() {
            return server::not_found();
        }
        let mut r = server::json_reply(
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body><h1>Page not found</h1></body></html>"),
        );
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r
    }

    fn journal(&self, created: &panel::Created) {
        let Some(journal) = &self.journal else { return };
        let mut line = serde_json::to_vec(created).unwrap_or_default();
        line.push(b'\n');
        let mut file = journal.lock().unwrap_or_else(PoisonError::into_inner);
        // The journal is the tests' evidence: a lost line would hide exactly the bugs it is
        // there to show, so a failed write is loud.
        if let Err(e) = file.write_all(&line).and_then(|()| file.flush()) {
            tracing::error!(error = %e, order = created.order, "journal write failed");
        }
    }

    async fn control(&self, req: Request<Incoming>, path: &str) -> Reply {
        let query =
            Params::parse_form(req.uri().query().unwrap_or("").as_bytes()).unwrap_or_default();
        if query.text("key").ok().flatten() != Some(self.key.expose()) {
            return server::protocol_error(&ProtocolError::InvalidKey);
        }
        match (req.method().clone(), path) {
            (Method::GET, "/_sim/state") => {
                let panel = self.panel();
                server::ok(reply::to_bytes(&serde_json::json!({
                    "balance": crate::money::format(panel.balance),
                    "currency": panel.currency,
                    "orders": panel.order_count(),
                    "refills": panel.refill_count(),
                    "requests": *self.requests.lock().unwrap_or_else(PoisonError::into_inner),
                    "status_batches": *self.status_batches.lock().unwrap_or_else(PoisonError::into_inner),
                })))
            }
            (Method::GET, "/_sim/faults") => server::ok(reply::to_bytes(
                &*self.faults.read().unwrap_or_else(PoisonError::into_inner),
            )),
            (Method::POST, "/_sim/faults") => {
                let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => return server::protocol_error(&ProtocolError::BodyTooLarge),
                };
                match serde_json::from_slice::<Faults>(&body) {
                    Ok(new) => {
                        *self.faults.write().unwrap_or_else(PoisonError::into_inner) = new.clone();
                        server::ok(reply::to_bytes(&new))
                    }
                    Err(e) => server::error_reply(
                        StatusCode::BAD_REQUEST,
                        &format!("Incorrect faults: {e}"),
                    ),
                }
            }
            _ => server::not_found(),
        }
    }
}

impl Handler for Simulator {
    async fn handle(&self, req: Request<Incoming>, _peer: SocketAddr) -> Answer {
        let path = req.uri().path().to_owned();
        if path.starts_with("/_sim/") {
            return self.control(req, &path).await.into();
        }
        if !self.is_api_path(&path) {
            return self.not_found().into();
        }
        let api = match server::read_api_request(req, &self.limits).await {
            Ok(api) => api,
            Err(reply) => return reply.into(),
        };
        let action = api
            .params
            .text("action")
            .ok()
            .flatten()
            .unwrap_or("")
            .to_ascii_lowercase();
        *self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(action.clone())
            .or_default() += 1;
        let plan = self
            .faults
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .plan(&action, &self.rng);
        if plan.http500 {
            let mut r = server::json_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(b"<html><body><h1>500 Internal Server Error</h1></body></html>"),
            );
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/html"),
            );
            return r.into();
        }
        if plan.http403 {
            let mut r = server::json_reply(
                StatusCode::FORBIDDEN,
                Bytes::from_static(b"<html><head><title>403 Forbidden</title></head><body><h1>Access denied</h1></body></html>"),
            );
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/html"),
            );
            return r.into();
        }
        if plan.http429 {
            return server::error_reply(StatusCode::TOO_MANY_REQUESTS, "Too many requests").into();
        }
        if plan.garbage {
            let mut r = server::ok(Bytes::from_static(
                b"<!DOCTYPE html><title>Just a moment...</title>",
            ));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/html"),
            );
            return r.into();
        }
        if let Some(text) = plan.error {
            return self.dialect.refusal(&text).into();
        }
        // A slow panel acts at once and answers late, as one that took the order and then
        // stalled: a client that gives up waiting leaves an order behind it.
        let reply = self.answer(&api);
        if let Some(delay) = plan.delay {
            tokio::time::sleep(delay).await;
        }
        if plan.hangup {
            return Answer::Hangup;
        }
        if plan.http504 {
            // A proxy in front of the panel that gave up waiting, after the panel acted.
            return server::error_reply(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout").into();
        }
        if plan.empty {
            return server::ok(Bytes::new()).into();
        }
        reply.into()
    }
}

/// A running simulator: its address, and the way to stop it.
pub struct SimHandle {
    pub addr: SocketAddr,
    pub sim: Arc<Simulator>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl SimHandle {
    /// The API URL, `http://ADDR/api/v2` (or its `api_path`).
    pub fn url(&self) -> String {
        let path = self.sim.api_path.as_deref().unwrap_or("/api/v2");
        format!("http://{}{path}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish, and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a simulator on `listener` in the background.
pub fn spawn(cfg: SimConfig, listener: TcpListener) -> std::io::Result<SimHandle> {
    let addr = listener.local_addr()?;
    let limits = cfg.limits.clone();
    let sim = Arc::new(Simulator::new(cfg)?);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(
        listener,
        sim.clone(),
        limits,
        None,
        async move {
            let _ = stopped.await;
        },
    ));
    Ok(SimHandle {
        addr,
        sim,
        stop: Some(stop),
        task,
    })
}

/// Binds `addr` and starts a simulator there.
pub async fn start(cfg: SimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
    spawn(cfg, TcpListener::bind(addr).await?)
}
