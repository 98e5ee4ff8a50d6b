//! `panelgate serve`, `client …`, `order …` and `check-config` as an operator runs them: the
//! binary, a config file with a simulated upstream, and the CLI working beside the server.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Http;
use common::gw::Scratch;
use serde_json::Value;

/// The upstream key reaches the config through `${DEMO_UPSTREAM_KEY}`.
const UPSTREAM_KEY: &str = "demo-upstream-key-from-env";

fn panelgate(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_panelgate"))
        .env("DEMO_UPSTREAM_KEY", UPSTREAM_KEY)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// The error output of a run that must fail.
fn failure(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `panelgate serve` (with `--config` before the subcommand, which works too).
fn serve(config: &Path) -> common::Spawned {
    let mut command = Command::new(env!("CARGO_BIN_EXE_panelgate"));
    command
        .env("DEMO_UPSTREAM_KEY", UPSTREAM_KEY)
        .arg("--config")
        .arg(config)
        .arg("serve");
    common::Spawned::start(command)
}

fn write_config(dir: &Scratch) -> std::path::PathBuf {
    let config = dir.path("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"listen: "127.0.0.1:0"
database: "sqlite://gw.db"
upstreams:
  - name: demo
    url: "http://127.0.0.1:{port}/api/v2"
    key: "${{DEMO_UPSTREAM_KEY}}"
    simulate: {{ speed: 100000, partial_share: 0, cancel_share: 0 }}
services:
  - id: 1
    upstream: demo
    service: 101
    markup: {{ percent: 25 }}
  - import: demo
    id_offset: 1000
    markup: {{ percent: 40 }}
sync:
  interval: 50ms
"#,
            port = free_port()
        ),
    )
    .unwrap();
    config
}

#[tokio::test]
async fn an_operator_runs_the_gateway_from_the_command_line() {
    let dir = Scratch::new("cli");
    let config = write_config(&dir);

    let server = serve(&config);
    let url = server.url.clone();
    let out = stdout(&panelgate(
        &config,
        &["client", "add", "ann", "--balance", "10"],
    ));
    let key = out.lines().last().unwrap().to_owned();
    assert_eq!(key.len(), 64, "the key is alone on the last line: {out:?}");
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    // The key is stored hashed: it is nowhere in the database file.
    let db = std::fs::read(dir.path("gw.db")).unwrap_or_default();
    assert!(!db.windows(key.len()).any(|w| w == key.as_bytes()));

    let http = Http::default();
    let call = |pairs: Vec<(&'static str, String)>| {
        let http = http.clone();
        let url = url.clone();
        let key = key.clone();
        async move {
            let mut all: Vec<(&str, &str)> = vec![("key", key.as_str())];
            all.extend(pairs.iter().map(|(k, v)| (*k, v.as_str())));
            http.form(&url, &all).await.json()
        }
    };
    let services = call(vec![("action", "services".into())]).await;
    assert_eq!(services[0]["rate"], "1.125");
    let order = call(vec![
        ("action", "add".into()),
        ("service", "1".into()),
        ("link", "https://i.com/a".into()),
        ("quantity", "1000".into()),
    ])
    .await;
    assert_eq!(order["order"], 1, "{order}");
    assert_eq!(
        call(vec![("action", "balance".into())]).await["balance"],
        "8.87500"
    );

    stdout(&panelgate(
        &config,
        &["client", "credit", "ann", "5", "--note", "top-up"],
    ));
    let out = stdout(&panelgate(&config, &["client", "debit", "ann", "1.5"]));
    assert!(out.contains("12.37500"), "{out}");
    let err = failure(&panelgate(&config, &["client", "debit", "ann", "100"]));
    assert!(err.contains("below"), "{err}");
    let list = stdout(&panelgate(&config, &["client", "list"]));
    let row = list.lines().find(|l| l.starts_with("ann")).unwrap();
    assert!(
        row.contains("default") && row.contains("12.37500") && row.trim_end().ends_with('1'),
        "{row}"
    );

    let orders: Value = serde_json::from_str(&stdout(&panelgate(
        &config,
        &["order", "list", "--json", "--client", "ann"],
    )))
    .unwrap();
    let o = &orders[0];
    assert_eq!(
        (
            o["id"].as_i64(),
            o["client"].as_str(),
            o["service"].as_u64()
        ),
        (Some(1), Some("ann"), Some(1))
    );
    assert_eq!(
        (o["charge"].as_str(), o["upstream"].as_str()),
        (Some("1.12500"), Some("demo"))
    );
    assert!(o["upstream_order"].is_u64() && o["state"].is_string() && o["status"].is_string());
    let shown: Value =
        serde_json::from_str(&stdout(&panelgate(&config, &["order", "show", "1"]))).unwrap();
    assert_eq!(shown["id"], 1);
    let err = failure(&panelgate(
        &config,
        &["order", "resolve", "1", "--not-placed"],
    ));
    assert!(err.contains("not unknown"), "{err}");

    // The server may still remember the key for a moment; the order is refused all the same.
    call(vec![("action", "services".into())]).await;
    stdout(&panelgate(&config, &["client", "disable", "ann"]));
    let refused = call(vec![
        ("action", "add".into()),
        ("service", "1".into()),
        ("link", "https://instagram.com/disabled".into()),
        ("quantity", "1000".into()),
    ])
    .await;
    assert_eq!(refused["error"], "Invalid API key");
    assert_eq!(
        call(vec![("action", "balance".into())]).await["error"],
        "Invalid API key"
    );
    stdout(&panelgate(&config, &["client", "enable", "ann"]));
    assert!(call(vec![("action", "balance".into())]).await["balance"].is_string());
    let out = stdout(&panelgate(&config, &["client", "rotate-key", "ann"]));
    let new_key = out.lines().last().unwrap().to_owned();
    assert_eq!(
        call(vec![("action", "balance".into())]).await["error"],
        "Invalid API key"
    );
    let r = http
        .form(&url, &[("key", &new_key), ("action", "balance")])
        .await
        .json();
    assert_eq!(r["balance"], "12.37500");

    let summary = stdout(&panelgate(&config, &["check-config"]));
    assert!(
        summary.contains("upstream demo") && summary.contains("local services: 20"),
        "{summary}"
    );
    assert!(summary.contains("rates 0.028 to 16.8"), "{summary}");
    server.terminate();
}

#[test]
fn a_missing_environment_variable_is_named() {
    let dir = Scratch::new("cli-env");
    let config = write_config(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_panelgate"))
        .args(["check-config", "--config"])
        .arg(&config)
        .env_remove("DEMO_UPSTREAM_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DEMO_UPSTREAM_KEY") && err.contains("line 6"),
        "{err}"
    );
}

/// `order show ID` as JSON.
fn show(config: &Path, id: &str) -> Value {
    serde_json::from_str(&stdout(&panelgate(config, &["order", "show", id]))).unwrap()
}

#[tokio::test]
async fn an_operator_settles_a_partial_the_upstream_cannot_tell() {
    let dir = Scratch::new("cli-settle");
    let config = write_config(&dir);
    let server = serve(&config);
    let out = stdout(&panelgate(
        &config,
        &["client", "add", "ann", "--balance", "10"],
    ));
    let key = out.lines().last().unwrap().to_owned();
    let http = Http::default();
    let api = |pairs: &[(&str, &str)]| {
        let mut all: Vec<(String, String)> = vec![("key".into(), key.clone())];
        all.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let (http, url) = (http.clone(), server.url.clone());
        async move {
            let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (&**k, &**v)).collect();
            http.form(&url, &all).await.json()
        }
    };
    // The demo panel's package 119 (3.00, sold at 4.20) ends Partial and reports no charge.
    let link = "https://yt.com/v?sim-fate=partial&sim-charge=none";
    let order = api(&[("action", "add"), ("service", "1119"), ("link", link)]).await;
    assert_eq!(order["order"], 1, "{order}");
    let mut shown = show(&config, "1");
    for _ in 0..250 {
        if shown["state"] == "final" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        shown = show(&config, "1");
    }
    assert_eq!(
        (&shown["status"], &shown["refunded"], &shown["attention"]),
        (
            &"Partial".into(),
            &"0.00000".into(),
            &"refund_unknown".into()
        )
    );

    let err = failure(&panelgate(
        &config,
        &["order", "settle", "1", "--refund", "5", "--note", "ann"],
    ));
    assert!(
        err.contains("above what is still refundable (4.20000"),
        "{err}"
    );
    let out = stdout(&panelgate(
        &config,
        &[
            "order",
            "settle",
            "1",
            "--refund",
            "1.2",
            "--note",
            "ann: ticket 7",
        ],
    ));
    assert!(out.contains("1.20000 refunded to ann"), "{out}");
    let err = failure(&panelgate(
        &config,
        &["order", "settle", "1", "--refund", "1", "--note", "ann"],
    ));
    assert!(err.contains("not waiting for a refund decision"), "{err}");
    assert_eq!(show(&config, "1")["attention"], Value::Null);

    // The running server shows the settlement to the customer within a second.
    let mut status = Value::Null;
    for _ in 0..100 {
        status = api(&[("action", "status"), ("order", "1")]).await;
        if status["charge"] == "3.00000" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        (&status["charge"], &status["remains"]),
        (&"3.00000".into(), &"0".into())
    );
    assert_eq!(api(&[("action", "balance")]).await["balance"], "7.00000");
    server.terminate();
}
