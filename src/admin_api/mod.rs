//! The admin API (docs/admin-api.md): JSON under `/admin/api/v1/` on a listener of its own
//! (`admin:` in the config), for storefronts and scripts; the web console ([`crate::console`])
//! answers the listener's other `/admin` paths. Every write runs through [`crate::operator`],
//! the core the CLI runs too.
//!
//! A request is routed first (unknown path 404, wrong method 405), then authenticated
//! (`Authorization: Bearer`, 401; failed attempts per address are capped like API keys), then
//! authorised (a read token may only `GET`: 403), then its body is read within a size limit.

mod error;
pub mod input;
pub mod openapi;
pub mod read;
pub mod routes;
pub mod shapes;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::app::Live;
use crate::console::{self, Console};
use crate::guard::{Guard, retry_after_secs};
use crate::keys;
use crate::server::{Answer, Handler, Reply};
use crate::store::admin::Role;

pub use error::ApiError;

/// Where the API lives.
pub const PREFIX: &str = "/admin/api/v1";

/// Request bodies are small JSON objects.
const MAX_BODY: usize = 64 * 1024;

/// The admin listener's handler: the API, and the console beside it.
pub struct AdminApi {
    live: Arc<Live>,
    /// Failed token attempts, counted per address for the API and the console's logins alike.
    guard: Guard,
    console: Console,
}

impl AdminApi {
    /// `tls`: whether the listener speaks TLS itself.
    pub fn new(live: Arc<Live>, tls: bool) -> AdminApi {
        let guard = Guard::new(&live.gateway().cfg);
        let console = Console::new(live.clone(), tls);
        AdminApi {
            live,
            guard,
            console,
        }
    }
}

/// An authenticated request, routed.
pub struct Call {
    /// The token's name: the actor of the audit trail.
    pub actor: String,
    pub route: routes::Route,
    pub query: Option<String>,
    pub body: Bytes,
    pub idempotency_key: Option<String>,
}

impl Handler for AdminApi {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Answer {
        let reply = match self.answer(req, peer).await {
            Ok(reply) => reply,
            Err(e) => e.reply(),
        };
        reply.into()
    }
}

impl AdminApi {
    async fn answer(&self, req: Request<Incoming>, peer: SocketAddr) -> Result<Reply, ApiError> {
        let path = req.uri().path();
        if console::serves(path) {
            return Ok(self.console.answer(req, peer, &self.guard).await);
        }
        if path == format!("{PREFIX}/openapi.json") {
            return match *req.method() {
                Method::GET => Ok(openapi::reply()),
                _ => Err(ApiError::method_not_allowed(&[Method::GET])),
            };
        }
        let route = routes::Route::parse(path)?;
        if !route.methods().contains(req.method()) {
            return Err(ApiError::method_not_allowed(route.methods()));
        }
        let role = self.authenticate(&req, peer).await?;
        let (actor, role) = role;
        if role == Role::Read && req.method() != Method::GET {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token may only read",
            ));
        }
        let method = req.method().clone();
        let query = req.uri().query().map(str::to_owned);
        let idempotency_key = match req.headers().get("idempotency-key") {
            None => None,
            // Not ignored: a retry must not be applied twice for a key we could not read.
            Some(v) => Some(v.to_str().map(str::to_owned).map_err(|_| {
                ApiError::bad_request("Idempotency-Key: visible ASCII characters only")
            })?),
        };
        let body = read_body(req.into_body()).await?;
        let call = Call {
            actor,
            route,
            query,
            body,
            idempotency_key,
        };
        routes::dispatch(&self.live, &method, &call).await
    }

    /// The token's name and role, or 401 (429 once an address failed too often).
    async fn authenticate(
        &self,
        req: &Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<(String, Role), ApiError> {
        if let Err(wait) = self.guard.admit_address(peer.ip()) {
            return Err(ApiError::too_many(retry_after_secs(wait)));
        }
        let token = header(req, "authorization")
            .and_then(|h| h.strip_prefix("Bearer ").map(|t| t.trim().to_owned()));
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(ApiError::unauthorized());
        };
        let hash = keys::hash(&token);
        let store = self.live.gateway().store.clone();
        match store.admin_token_by_hash(&hash).await {
            Ok(Some(t)) if keys::matches(&t.hash, &hash) => Ok((t.name, t.role)),
            Ok(_) => {
                self.guard.failed_key(peer.ip());
                self.guard.sweep();
                Err(ApiError::unauthorized())
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A request body, within the size limit.
pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        )),
        Err(_) => Err(ApiError::bad_request("the request body could not be read")),
    }
}

/// Binds the admin listener `cfg` describes and serves it until `shutdown` completes.
pub async fn start(
    cfg: &crate::config::AdminConfig,
    live: Arc<Live>,
    limits: crate::server::Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), crate::app::StartError> {
    use crate::app::StartError;
    let listen_err = |source| StartError::Listen {
        addr: cfg.listen,
        source,
    };
    let tls = match &cfg.tls {
        Some(files) => Some(
            crate::server::tls_config(&files.cert, &files.key)
                .map_err(|e| StartError::Tls(format!("admin: {e}")))?,
        ),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(listen_err)?;
    let addr = listener.local_addr().map_err(listen_err)?;
    let handler = Arc::new(AdminApi::new(live, tls.is_some()));
    let task = tokio::spawn(crate::server::serve(
        listener, handler, limits, tls, shutdown,
    ));
    tracing::info!(%addr, "admin API listening");
    Ok((addr, task))
}
