//! The open port: per-customer rate limits, key guessing, connection limits, body limits, TLS.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::gw::{Env, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn balance_request(key: &str) -> Vec<u8> {
    let body = format!("key={key}&action=balance");
    format!(
        "POST /api/v2 HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn each_customer_has_a_rate_limit_per_group() {
    let env = Env::start(Options {
        extra: "limits:\n  per_client: { per_second: 1, burst: 3 }\n",
        ..Options::default()
    })
    .await;
    let ann = env.client("ann", "1", "default").await;
    let bob = env.client("bob", "1", "default").await;
    let vic = env.client("vic", "1", "vip").await;
    for _ in 0..3 {
        assert!(env.call(&ann, &[("action", "balance")]).await["balance"].is_string());
    }
    let r = env
        .http
        .form(&env.url(), &[("key", &ann), ("action", "balance")])
        .await;
    assert_eq!(r.status, 429);
    let retry: u64 = r
        .headers
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(
        r.error(),
        format!("Too many requests, retry in {retry} seconds")
    );
    // Others are not held back by ann; the vip group's limit is higher.
    assert!(env.call(&bob, &[("action", "balance")]).await["balance"].is_string());
    for _ in 0..20 {
        assert!(env.call(&vic, &[("action", "balance")]).await["balance"].is_string());
    }
}

#[tokio::test]
async fn guessing_keys_gets_an_address_shut_out_for_a_while() {
    let env = Env::start(Options {
        extra: "limits:\n  failed_keys_per_minute: 3\n",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "1", "default").await;
    for guess in ["a", "b", "c"] {
        assert_eq!(
            env.call(guess, &[("action", "balance")]).await["error"],
            "Invalid API key"
        );
    }
    // From this address, even the right key is refused until the minute is over.
    let r = env
        .http
        .form(&env.url(), &[("key", &key), ("action", "balance")])
        .await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((59..=60).contains(&retry), "{retry}");
    assert!(
        r.error().starts_with("Too many failed API key attempts"),
        "{}",
        r.text()
    );
    // The gateway shares this test's clock: move it past most of the minute, then past all.
    // A new connection each time: skipping ahead also runs out the server's idle timeouts.
    let balance = || async {
        common::Http::default()
            .form(&env.url(), &[("key", &key), ("action", "balance")])
            .await
    };
    skip(Duration::from_secs(55)).await;
    assert_eq!(balance().await.status, 429, "the lockout ended early");
    skip(Duration::from_secs(6)).await;
    let r = balance().await;
    assert_eq!((r.status, &r.json()["balance"]), (200, &"1.00000".into()));
}

/// Moves the runtime's clock (which the gateway's lockouts read) ahead by `by`, then lets it
/// run on in real time.
async fn skip(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_their_turn() {
    let env = Env::start(Options {
        extra: "limits:\n  max_connections: 2\n",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "1", "default").await;
    let addr = env.gw().addr;
    let idle1 = TcpStream::connect(addr).await.unwrap();
    let _idle2 = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(&balance_request(&key)).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond the connection limit");
    drop(idle1);
    let n = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf))
        .await
        .expect("served once a slot frees up")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn bodies_over_the_configured_limit_are_refused() {
    let env = Env::start(Options {
        extra: "limits:\n  max_body_bytes: 1024\n",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "1", "default").await;
    let pad = "a".repeat(2000);
    let r = env
        .http
        .form(
            &env.url(),
            &[("key", &key), ("action", "balance"), ("pad", &pad)],
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (413, "Request body too large".to_owned())
    );
}

#[tokio::test]
async fn tls_termination() {
    let dir = common::gw::Scratch::new("tls");
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    std::fs::write(dir.path("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let extra: &'static str = Box::leak(
        format!(
            "tls:\n  cert: \"{}\"\n  key: \"{}\"\n",
            dir.path("cert.pem").display(),
            dir.path("key.pem").display()
        )
        .into_boxed_str(),
    );
    let env = Env::start(Options {
        extra,
        ..Options::default()
    })
    .await;
    assert!(env.gw().url().starts_with("https://"));
    let key = env.client("ann", "1", "default").await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(env.gw().addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(&balance_request(&key)).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tls.read(&mut buf).await.unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.contains(r#""balance":"1.00000""#),
        "{reply}"
    );
    // Plain HTTP on the TLS port gets nowhere.
    let plain = common::raw(
        env.gw().addr,
        &balance_request(&key),
        Duration::from_secs(5),
    )
    .await;
    assert!(!String::from_utf8_lossy(&plain).contains("balance"));
}
