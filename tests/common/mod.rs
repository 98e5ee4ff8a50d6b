//! Test helpers: a real HTTP client over loopback, and simulators to point it at.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use panelgate::sim::{self, SimConfig, SimHandle};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const KEY: &str = "sim-test-key-0123456789";

/// Starts a simulator on a free loopback port.
pub async fn simulator(cfg: SimConfig) -> SimHandle {
    sim::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts")
}

/// A simulator whose orders finish in milliseconds, with no random Partial/Canceled endings.
pub fn fast_config() -> SimConfig {
    let mut cfg = SimConfig::new(KEY);
    cfg.speed = 100_000.0;
    cfg.shares.partial = sim::Chance::NEVER;
    cfg.shares.cancel = sim::Chance::NEVER;
    cfg
}

/// A tool a test drives (PHP, a Python client), or `None` to skip the test here: said on
/// stderr with `missing`. Under `CI` a missing tool fails instead, since `.ci/run` `installs`
/// it.
pub fn required<T>(tool: Option<T>, missing: &str, installs: &str) -> Option<T> {
    if tool.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: {missing} (.ci/run {installs})"
        );
        eprintln!("skipped: {missing} (run `bash .ci/run`, which {installs})");
    }
    tool
}

/// One HTTP reply, decoded.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub location: Option<String>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error` text of a `{"error": …}` reply.
    pub fn error(&self) -> String {
        match self.json().get("error") {
            Some(Value::String(e)) => e.clone(),
            _ => panic!("expected an error reply, got {}", self.text()),
        }
    }
}

/// A self-signed certificate for `localhost` and `127.0.0.1` written into a folder, and a TLS
/// client that trusts it.
pub struct SelfSigned {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    connector: tokio_rustls::TlsConnector,
}

impl SelfSigned {
    pub fn new(dir: &gw::Scratch) -> SelfSigned {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let made = rcgen::generate_simple_self_signed(names).unwrap();
        let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(made.cert.der().clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
        SelfSigned {
            cert,
            key,
            connector,
        }
    }

    /// `tls:` for a config section, indented by `indent` spaces (leaked: configs are `'static`).
    pub fn section(&self, indent: usize) -> &'static str {
        let pad = " ".repeat(indent);
        let text = format!(
            "{pad}tls:\n{pad}  cert: \"{}\"\n{pad}  key: \"{}\"\n",
            self.cert.display(),
            self.key.display()
        );
        Box::leak(text.into_boxed_str())
    }

    /// A TLS connection to `addr`, as `localhost`.
    pub async fn connect(&self, addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        self.connector.connect(name, tcp).await.unwrap()
    }
}

/// A config for `panelgate serve` whose one upstream, simulated by `serve` itself on a free
/// port, takes 700 ms over every `add`: for stopping the gateway with an order in flight.
/// `extra` goes in before `upstreams:`. Returns the config and the upstream's address.
pub fn slow_add_config(extra: &str) -> (String, String) {
    let upstream = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "listen: \"127.0.0.1:0\"\ndatabase: \"sqlite://gw.db\"\nconfig_poll: 0s\n{extra}upstreams:\n  - name: up\n    url: \"http://{upstream}/api/v2\"\n    key: up-key-123\n    simulate: {{ speed: 100000, faults: {{ slow: 1, slow_ms: 700, actions: [add] }} }}\nservices:\n  - id: 1\n    upstream: up\n    service: 101\n    markup: {{ percent: 25 }}\nclients:\n  - name: ann\n    key: ann-key-0123456789\n    balance: \"10\"\n",
    );
    (config, upstream)
}

/// A loopback port free a moment ago, for a config that must name its upstream's port before
/// the upstream is started (`simulate:` upstreams are started by `serve` itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl Http {
    pub async fn send(&self, req: http::Request<Full<Bytes>>) -> Reply {
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .expect("reply within 30 s")
            .expect("request succeeds");
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(http::header::CONTENT_TYPE);
        let location = header(http::header::LOCATION);
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            content_type,
            location,
            headers,
            body,
        }
    }

    /// `POST` form-urlencoded, as the canonical PHP client sends.
    pub async fn form(&self, url: &str, pairs: &[(&str, &str)]) -> Reply {
        self.post(url, "application/x-www-form-urlencoded", encode(pairs))
            .await
    }

    pub async fn post(&self, url: &str, content_type: &str, body: impl Into<Bytes>) -> Reply {
        let req = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(body.into()))
            .unwrap();
        self.send(req).await
    }

    pub async fn json(&self, url: &str, body: &Value) -> Reply {
        self.post(url, "application/json", body.to_string()).await
    }

    pub async fn get(&self, url: &str) -> Reply {
        let req = http::Request::get(url)
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.send(req).await
    }
}

/// Form-encodes pairs the way browsers and PHP's `http_build_query` do.
pub fn encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Sends raw bytes on a fresh connection and returns everything the server sent back before
/// closing. A server that neither answers in full nor closes within `wait` fails the test.
pub async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    match tokio::time::timeout(wait, stream.read_to_end(&mut out)).await {
        Ok(read) => {
            // A reset after the reply still counts as the server closing.
            if let Err(e) = read {
                assert!(!out.is_empty() || is_reset(&e), "reading the reply: {e}");
            }
            out
        }
        Err(_) => panic!(
            "the server kept the connection open for {wait:?} without closing it; got {:?}",
            String::from_utf8_lossy(&out)
        ),
    }
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
    )
}

/// Sends raw bytes on a fresh connection and hangs up after `after`, whatever came back: a
/// client that walks away mid-request.
pub async fn send_and_hang_up(addr: SocketAddr, request: &[u8], after: Duration) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(after, stream.read_to_end(&mut out)).await;
}
pub mod gw;
pub mod reference;

/// Moves the runtime's clock (which an in-process gateway's TTLs, cooldowns and rate limits
/// read) ahead by `by`, then lets it run on in real time. The whole test cannot run paused:
/// while the runtime waits on a socket or on sqlx's own threads, a paused clock would jump to
/// the next timer by itself (server timeouts, sync ticks). A gateway in another process keeps
/// its own clock: tests of one wait for events instead.
pub async fn skip(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

/// A `panelgate` process a test started: its API URL (read from the `listening on URL` line it
/// prints first) and everything it logs to stderr.
pub struct Spawned {
    pub child: std::process::Child,
    pub url: String,
    logs: std::thread::JoinHandle<String>,
}

impl Spawned {
    /// Starts `command` (a `panelgate` command line that prints its address first).
    pub fn start(mut command: std::process::Command) -> Spawned {
        use std::io::{BufRead, Read};
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("panelgate starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        let mut stderr = child.stderr.take().unwrap();
        let logs = std::thread::spawn(move || {
            let mut all = String::new();
            let _ = stderr.read_to_string(&mut all);
            all
        });
        Spawned { child, url, logs }
    }

    /// Sends a signal (`-HUP`, `-TERM`, …).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name}");
    }

    /// SIGTERM; the process must exit 0 within 20 s. Returns what it logged.
    pub fn terminate(self) -> String {
        self.signal("-TERM");
        self.wait()
    }

    /// Waits (20 s at most) for the process to exit, which it must do with 0. Returns what it
    /// logged.
    pub fn wait(mut self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                assert!(exit.success(), "exit on SIGTERM: {exit:?}");
                return self.logs.join().unwrap();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
