//! The HTTP edge shared by the gateway and the simulator: a hyper 1 HTTP/1.1 listener with
//! explicit limits (body size, header read time), JSON replies for every refusal, and graceful
//! shutdown. Everything above it sees parsed [`Params`] and answers with bytes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::protocol::{Params, ProtocolError, reply};

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

/// `/api/v2` and `/api/v2/` alike: a redirect would turn a client's POST into a body-less GET.
pub fn is_api_path(path: &str) -> bool {
    matches!(path, "/api/v2" | "/api/v2/")
}

/// An API request read off the wire: its merged parameters and the `X-Api-Key` header.
pub struct ApiRequest {
    pub params: Params,
    pub key_header: Option<String>,
    /// `Accept-Encoding` allows gzip.
    pub accepts_gzip: bool,
}

impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRequest")
            .field("params", &self.params)
            .field("key_header", &self.key_header.as_ref().map(|_| "***"))
            .finish()
    }
}

impl ApiRequest {
    pub fn key(&self) -> Option<&str> {
        crate::protocol::request::api_key(&self.params, self.key_header.as_deref())
    }
}

/// Reads an API request's parameters from its query string and body, within the limits. A
/// refusal comes back as the reply to send.
pub async fn read_api_request(
    req: Request<Incoming>,
    limits: &Limits,
) -> Result<ApiRequest, Reply> {
    if req.method() != Method::POST && req.method() != Method::GET {
        return Err(error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            &ProtocolError::IncorrectRequest.to_string(),
        ));
    }
    // The rest of an oversized body is never read, so the connection cannot carry another
    // request: say so, and hyper closes it after the reply.
    let too_large = || {
        let mut r = error_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            &ProtocolError::BodyTooLarge.to_string(),
        );
        r.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes as u64) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    let collected = tokio::time::timeout(
        limits.body_read_timeout,
        Limited::new(body, limits.max_body_bytes).collect(),
    )
    .await;
    let body = match collected {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Ok(Err(_)) | Err(_) => {
            return Err(error_reply(
                StatusCode::BAD_REQUEST,
                &ProtocolError::IncorrectRequest.to_string(),
            ));
        }
    };
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let params = Params::from_parts(
        parts.uri.query(),
        header(CONTENT_TYPE.as_str()).as_deref(),
        &body,
    )
    .map_err(|e| protocol_error(&e))?;
    Ok(ApiRequest {
        params,
        key_header: header("x-api-key"),
        accepts_gzip: parts
            .headers
            .get_all(http::header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(accepts_gzip),
    })
}

/// Whether an `Accept-Encoding` value allows gzip: named (or `*`) without `q=0`.
pub fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
    })
}

/// A JSON reply with the given status. Clients read the body whatever the status.
pub fn json_reply(status: StatusCode, body: Bytes) -> Reply {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// `200 {"body"}`: the protocol's normal reply.
pub fn ok(body: Bytes) -> Reply {
    json_reply(StatusCode::OK, body)
}

/// `{"error": text}` with a status. Protocol refusals use 200 (clients ignore the status, and
/// some lose the text on a 4xx); transport refusals may use 4xx/5xx.
pub fn error_reply(status: StatusCode, text: &str) -> Reply {
    json_reply(status, reply::error_bytes(text))
}

/// A protocol refusal: 200 with the canonical text, except refusals of the transport itself.
pub fn protocol_error(e: &ProtocolError) -> Reply {
    let (status, retry_after) = match e {
        ProtocolError::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, None),
        ProtocolError::TooManyRequests(s) | ProtocolError::TooManyKeyAttempts(s) => {
            (StatusCode::TOO_MANY_REQUESTS, Some(*s))
        }
        _ => (StatusCode::OK, None),
    };
    let mut reply = error_reply(status, &e.to_string());
    if let Some(secs) = retry_after {
        reply
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    reply
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

pub fn not_found() -> Reply {
    error_reply(StatusCode::NOT_FOUND, "Not found")
}

#[cfg(test)]
mod tests {
    use super::accepts_gzip;

    #[test]
    fn gzip_is_sent_only_where_accept_encoding_allows_it() {
        for yes in [
            "gzip",
            "GZIP",
            "deflate, gzip",
            "gzip;q=0.5",
            "*",
            "br, * ;q=1",
        ] {
            assert!(accepts_gzip(yes), "{yes}");
        }
        for no in [
            "",
            "identity",
            "deflate, br",
            "gzip;q=0",
            "gzip; q=0.0",
            "x-gzip2",
        ] {
            assert!(!accepts_gzip(no), "{no}");
        }
    }
}
