//! The thread-per-core model (`runtime.model: thread_per_core`) seen from outside: every
//! runtime's listener answers the API (add, a status forwarded to the upstream, services,
//! `/readyz`), and SIGTERM drains every core before the process exits.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Http;
use common::gw::{Env, Options, Scratch, upstream_saw};

const THREE_CORES: &str = "runtime:\n  model: thread_per_core\n  threads: 3\n";

#[tokio::test]
async fn every_core_serves_the_api_and_the_gateway_drains_on_stop() {
    let mut env = Env::start(Options {
        extra: THREE_CORES,
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "100", "default").await;
    let base = env.url().replace("/api/v2", "");
    // A client per request: each opens its own connection, which the kernel hands to one of
    // the three listeners; twelve leave none of them out but by a long chance.
    for i in 0..12 {
        let http = Http::default();
        let link = format!("https://example.com/p{i}");
        let form = [
            ("key", key.as_str()),
            ("action", "add"),
            ("service", "1"),
            ("link", link.as_str()),
            ("quantity", "100"),
        ];
        let added = http.form(&env.url(), &form).await.json();
        let id = added["order"].as_u64().unwrap_or_else(|| panic!("{added}"));
        let id = id.to_string();
        let form = [("key", key.as_str()), ("action", "status"), ("order", &id)];
        let status = Http::default().form(&env.url(), &form).await.json();
        assert!(status["status"].is_string(), "{status}");
        let form = [("key", key.as_str()), ("action", "services")];
        let services = Http::default().form(&env.url(), &form).await.json();
        assert!(services.as_array().is_some_and(|l| !l.is_empty()));
        let ready = Http::default().get(&format!("{base}/readyz")).await;
        assert_eq!(ready.status, 200);
    }
    assert!(env.balance(&key).await < rust_decimal::Decimal::from(100));
    tokio::time::timeout(Duration::from_secs(20), env.stop_gateway())
        .await
        .expect("every core drains and stops");
}

#[tokio::test]
async fn sigterm_lets_an_order_in_flight_on_a_core_finish() {
    let dir = Scratch::new("cores");
    let config = dir.path("config.yaml");
    let (text, upstream) = common::slow_add_config(THREE_CORES);
    std::fs::write(&config, text).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_panelgate"));
    command.args(["serve", "--config"]).arg(&config);
    let server = common::Spawned::start(command);
    let url = server.url.clone();
    let http = Http::default();
    let ready = http.get(&url.replace("/api/v2", "/readyz")).await;
    assert_eq!(ready.status, 200);
    let (h, u) = (http.clone(), url.clone());
    let in_flight = tokio::spawn(async move {
        let form = [
            ("key", "ann-key-0123456789"),
            ("action", "add"),
            ("service", "1"),
            ("link", "https://i.com/x"),
            ("quantity", "100"),
        ];
        h.form(&u, &form).await.json()
    });
    upstream_saw(&http, &upstream, "up-key-123", "add", 1).await;
    server.signal("-TERM");
    let reply = in_flight.await.unwrap();
    assert_eq!(reply["order"], 1, "{reply}");
    // Returns once the process has exited; it would hang on a core that never drains.
    tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap();
}
