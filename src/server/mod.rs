//! The HTTP edge: a hyper 1 HTTP/1.1 listener with explicit limits (body size, header read
//! time) and graceful shutdown, shared by the gateway and the simulator; reading an API
//! request ([`api_request`]); the one table from refusals to replies ([`reply`]); and the
//! gateway's routes ([`routes`]: the API, per-route headers, the access log) and probes
//! ([`probes`]: `/healthz`, `/readyz`, `/metrics`). Everything above it sees parsed
//! [`Params`](crate::protocol::Params) and answers with bytes.

mod api_request;
mod probes;
mod reply;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use crate::protocol::ApiRequest;
pub use api_request::{accepts_gzip, is_api_path, read_api_request};
pub use reply::{Refused, error_reply, json_reply, not_found, ok, protocol_error};
pub use routes::Routes;

/// Ingress limits. Every one is explicit so that an open port cannot be made to hold memory or
/// sockets for free.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body accepted; larger ones get 413 and a JSON error.
    pub max_body_bytes: usize,
    /// Time a client has to send its request head (slowloris).
    pub header_read_timeout: Duration,
    /// Time a client has to send its body once the head is in.
    pub body_read_timeout: Duration,
    /// How long in-flight requests may run after shutdown begins.
    pub shutdown_grace: Duration,
    /// Connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

pub type Reply = Response<Full<Bytes>>;

/// What a handler does with a request.
pub enum Answer {
    Respond(Reply),
    /// Close the connection without a reply. Only the simulator's fault injection uses it, to
    /// play an upstream that read the request and then vanished.
    Hangup,
}

impl From<Reply> for Answer {
    fn from(r: Reply) -> Self {
        Answer::Respond(r)
    }
}

impl From<Refused> for Answer {
    fn from(r: Refused) -> Self {
        Answer::Respond(r.into())
    }
}

pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Answer> + Send;
}

#[derive(Debug, thiserror::Error)]
#[error("connection closed on purpose")]
struct Hangup;

/// Serves `handler` on `listener` until `shutdown` completes, then stops accepting and gives
/// in-flight requests `limits.shutdown_grace` to finish. With `tls`, connections are TLS
/// (rustls); the handshake must complete within the header read timeout.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        // At the limit, stop accepting: new connections wait in the kernel's backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let handler = handler.clone();
            async move {
                match handler.handle(req, peer).await {
                    Answer::Respond(reply) => Ok(reply),
                    Answer::Hangup => Err(Hangup),
                }
            }
        });
        match &tls {
            None => {
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    drop(slot);
                });
            }
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                let http = http.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let conn =
                                watcher.watch(http.serve_connection(TokioIo::new(stream), service));
                            if let Err(e) = conn.await {
                                tracing::debug!(error = %e, %peer, "connection ended with an error");
                            }
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; dropping the remaining connections");
    }
}

/// A rustls server config from PEM files: the certificate chain and its private key.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| format!("{} with {}: {e}", cert.display(), key.display()))?;
    Ok(Arc::new(config))
}
