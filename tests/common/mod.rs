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
/// closing (or until `wait` passes).
pub async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    out
}
pub mod gw;
