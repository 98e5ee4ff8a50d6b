//! No key ever reaches the logs: every action driven against `panelgate serve` with logging at
//! `trace` (hyper, sqlx and all), in both log formats, and the captured output searched for
//! the customer's key and the upstream's.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Http;
use common::gw::{Scratch, upstream_saw};

const UPSTREAM_KEY: &str = "upstream-secret-key-5e3a9c";

async fn drive_every_action(format: &str) {
    let dir = Scratch::new("secrets");
    let config = dir.path("config.yaml");
    let upstream = format!("127.0.0.1:{}", common::free_port());
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:0\"\ndatabase: \"sqlite://gw.db\"\nlog_level: trace\nupstreams:\n  - name: up\n    url: \"http://{upstream}/api/v2\"\n    key: \"${{UPSTREAM_KEY}}\"\n    simulate: {{ speed: 100000, partial_share: 0, cancel_share: 0 }}\nservices:\n  - import: up\n    markup: {{ percent: 10 }}\nsync:\n  interval: 50ms\nbalance_poll: 50ms\n",
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_panelgate"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("UPSTREAM_KEY", UPSTREAM_KEY)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (out, add_log) = cli(&["client", "add", "ann", "--balance", "50"]);
    let key = out.lines().last().unwrap().to_owned();

    let mut command = Command::new(env!("CARGO_BIN_EXE_panelgate"));
    command
        .args(["serve", "--log-format", format, "--config"])
        .arg(&config)
        .env("UPSTREAM_KEY", UPSTREAM_KEY)
        .env("RUST_LOG", "trace");
    let server = common::Spawned::start(command);
    let url = server.url.clone();
    let http = Http::default();
    let call = |pairs: Vec<(&'static str, String)>| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http.form(&url, &pairs).await.json()
        }
    };
    let k = || ("key", key.clone());
    call(vec![k(), ("action", "services".into())]).await;
    let done = call(vec![
        k(),
        ("action", "add".into()),
        ("service", "101".into()),
        ("link", "https://i.com/a?sim-fate=complete".into()),
        ("quantity", "100".into()),
    ])
    .await["order"]
        .to_string();
    let held = call(vec![
        k(),
        ("action", "add".into()),
        ("service", "101".into()),
        ("link", "https://i.com/b?sim-fate=hold".into()),
        ("quantity", "100".into()),
    ])
    .await["order"]
        .to_string();
    // The finished order is refillable: sync has seen it Completed.
    let mut status = serde_json::Value::Null;
    for _ in 0..500 {
        status = call(vec![
            k(),
            ("action", "status".into()),
            ("order", done.clone()),
        ])
        .await;
        if status["status"] == "Completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status["status"], "Completed", "{status}");
    call(vec![
        k(),
        ("action", "status".into()),
        ("orders", format!("{done},{held},999")),
    ])
    .await;
    let refill = call(vec![
        k(),
        ("action", "refill".into()),
        ("order", done.clone()),
    ])
    .await;
    call(vec![
        k(),
        ("action", "refill".into()),
        ("orders", format!("{done},{held}")),
    ])
    .await;
    call(vec![
        k(),
        ("action", "refill_status".into()),
        (
            "refill",
            refill["refill"].as_str().unwrap_or("1").to_owned(),
        ),
    ])
    .await;
    call(vec![
        k(),
        ("action", "refill_status".into()),
        ("refills", "1,2".into()),
    ])
    .await;
    call(vec![
        k(),
        ("action", "cancel".into()),
        ("orders", held.clone()),
    ])
    .await;
    call(vec![k(), ("action", "balance".into())]).await;
    // The key in a header and in a JSON body; and a wrong one.
    let req = http::Request::post(&url)
        .header("x-api-key", &key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            "action=balance",
        )))
        .unwrap();
    assert!(http.send(req).await.json()["balance"].is_string());
    http.json(&url, &serde_json::json!({"key": key, "action": "balance"}))
        .await;
    call(vec![
        ("key", format!("{key}x")),
        ("action", "balance".into()),
    ])
    .await;
    // The background work calls the upstream with its key too: let two more balance polls
    // happen (every 50 ms) before the logs are read.
    let polled = upstream_saw(&http, &upstream, UPSTREAM_KEY, "balance", 1).await;
    upstream_saw(&http, &upstream, UPSTREAM_KEY, "balance", polled + 2).await;

    let logs = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(
        logs.contains("TRACE") || logs.contains("\"TRACE\""),
        "logging was not at trace level"
    );
    assert!(
        logs.matches("request").count() >= 12,
        "the request lines are missing:\n{}",
        &logs[..logs.len().min(2000)]
    );
    for (what, secret) in [
        ("customer key", key.as_str()),
        ("upstream key", UPSTREAM_KEY),
    ] {
        assert!(
            !logs.contains(secret),
            "the {what} appears in the {format} logs"
        );
        assert!(
            !add_log.contains(secret),
            "the {what} appears in `client add`'s logs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_reach_text_logs() {
    drive_every_action("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_reach_json_logs() {
    drive_every_action("json").await;
}
