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

/// Every byte of the SQLite database `gw.db` in `dir`: the file and its `-wal` and `-shm`.
fn database_files(dir: &Scratch) -> Vec<u8> {
    let mut all = std::fs::read(dir.path("gw.db")).expect("the database file exists");
    for suffix in ["-wal", "-shm"] {
        if let Ok(bytes) = std::fs::read(dir.path(&format!("gw.db{suffix}"))) {
            all.extend(bytes);
        }
    }
    all
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
            port = common::free_port()
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
    // The key is stored hashed: it is nowhere in the database's files (the main file, and its
    // write-ahead log where a fresh row may still sit), which do hold the customer's row.
    let db = database_files(&dir);
    let holds = |text: &[u8]| db.windows(text.len()).any(|w| w == text);
    assert!(holds(b"ann"), "the customer's row is not in the files read");
    assert!(!holds(key.as_bytes()));

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

/// Listings come a page at a time however large the ledger grows: at most `--limit` rows, and
/// stderr names the flag that continues.
#[tokio::test]
async fn listings_come_a_page_at_a_time() {
    let dir = Scratch::new("cli-pages");
    let config = write_config(&dir);
    let server = serve(&config);
    let key = client_key(&config, "ann", "10");
    client_key(&config, "bob", "1");
    client_key(&config, "cid", "1");
    let http = Http::default();
    for i in 0..3 {
        let placed = add(&http, &server.url, &key, &format!("https://i.com/p{i}")).await;
        assert!(placed["order"].is_u64(), "{placed}");
    }

    let first = panelgate(&config, &["client", "list", "--limit", "2"]);
    let names: Vec<String> = stdout(&first)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["ann", "bob"]);
    let hint = String::from_utf8_lossy(&first.stderr);
    assert!(hint.contains(r#"--after "bob""#), "{hint}");
    let rest = stdout(&panelgate(&config, &["client", "list", "--after", "bob"]));
    assert_eq!(rest.lines().skip(1).count(), 1, "{rest}");
    assert!(rest.lines().nth(1).unwrap().starts_with("cid"), "{rest}");

    let ids = |listed: Vec<Value>| {
        listed
            .iter()
            .map(|o| o["id"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let page = panelgate(&config, &["order", "list", "--json", "--limit", "2"]);
    let listed: Vec<Value> = serde_json::from_str(&stdout(&page)).unwrap();
    assert_eq!(ids(listed), [3, 2]);
    let hint = String::from_utf8_lossy(&page.stderr);
    assert!(hint.contains("--before 2"), "{hint}");
    let next = json_list(&config, &["order", "list", "--json", "--before", "2"]);
    assert_eq!(ids(next), [1]);
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

/// `write_config` with other `sync:` settings.
fn config_with_sync(dir: &Scratch, sync: &str) -> std::path::PathBuf {
    let config = write_config(dir);
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace("sync:\n  interval: 50ms\n", sync);
    std::fs::write(&config, text).unwrap();
    config
}

/// A client with `balance` and the key to call the server with.
fn client_key(config: &Path, name: &str, balance: &str) -> String {
    let out = stdout(&panelgate(
        config,
        &["client", "add", name, "--balance", balance],
    ));
    out.lines().last().unwrap().to_owned()
}

async fn add(http: &Http, url: &str, key: &str, link: &str) -> Value {
    http.form(
        url,
        &[
            ("key", key),
            ("action", "add"),
            ("service", "1"),
            ("link", link),
            ("quantity", "1000"),
        ],
    )
    .await
    .json()
}

fn json_list(config: &Path, args: &[&str]) -> Vec<Value> {
    let text = stdout(&panelgate(config, args));
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Waits (60 s at most, polling) until `args` lists something.
async fn wait_listed(config: &Path, args: &[&str]) -> Vec<Value> {
    for _ in 0..600 {
        let listed = json_list(config, args);
        if !listed.is_empty() {
            return listed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("nothing listed by {args:?}");
}

/// A panel script shows an order it will never finish as In progress for ever: after
/// `sync.stuck_after` without news it is listed as stuck (with its age), counted by the gauge,
/// and the operator settles it; the customer gets the refund, the mark and the count go.
#[tokio::test]
async fn an_order_that_never_finishes_upstream_is_listed_as_stuck_and_settled() {
    let dir = Scratch::new("cli-stuck");
    let config = config_with_sync(&dir, "sync:\n  interval: 50ms\n  stuck_after: 400ms\n");
    let server = serve(&config);
    let key = client_key(&config, "ann", "10");
    let http = Http::default();
    // `hold`: the simulated panel delivers half, then reports the same for ever.
    let placed = add(&http, &server.url, &key, "https://i.com/a?sim-fate=hold").await;
    let id = placed["order"].as_i64().expect("placed");

    let stuck = wait_listed(&config, &["order", "list", "--stuck", "--json"]).await;
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    let o = &stuck[0];
    assert_eq!(
        (o["id"].as_i64(), o["attention"].as_str()),
        (Some(id), Some("stuck"))
    );
    assert_eq!(o["state"], "placed");
    assert!(
        o["age_seconds"].is_i64() && o["quiet_seconds"].is_i64(),
        "{o}"
    );
    // The same order under the general listing; nothing of unknown outcome.
    let any = json_list(&config, &["order", "list", "--attention", "--json"]);
    assert_eq!(any.len(), 1);
    assert!(
        json_list(
            &config,
            &["order", "list", "--attention", "unknown_outcome", "--json"]
        )
        .is_empty()
    );
    assert!(json_list(&config, &["order", "list", "--state", "unknown", "--json"]).is_empty());
    let table = stdout(&panelgate(
        &config,
        &["order", "list", "--attention", "stuck"],
    ));
    let header = table.lines().next().unwrap();
    assert!(
        header.contains("REASON") && header.contains("AGE"),
        "{table}"
    );
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.contains("stuck") && row.contains("placed") && row.contains("ann"),
        "{table}"
    );
    let err = failure(&panelgate(
        &config,
        &["order", "list", "--attention", "bored"],
    ));
    assert!(err.contains("stuck"), "the reasons are listed: {err}");

    let base = server.url.trim_end_matches("/api/v2").to_owned();
    let metrics = http.get(&format!("{base}/metrics")).await.text();
    assert!(
        metrics.contains(r#"panelgate_orders_attention{reason="stuck",upstream="demo"} 1"#)
            && metrics.contains(
                r#"panelgate_orders_attention{reason="unknown_outcome",upstream="demo"} 0"#
            ),
        "{metrics}"
    );

    // The operator found it failed at the upstream: Canceled, the whole charge back.
    let err = failure(&panelgate(
        &config,
        &["order", "resolve", &id.to_string(), "--not-placed"],
    ));
    assert!(err.contains("--status Canceled"), "{err}");
    let out = stdout(&panelgate(
        &config,
        &["order", "resolve", &id.to_string(), "--status", "canceled"],
    ));
    assert!(out.contains("Canceled") && out.contains("1.12500"), "{out}");
    let shown: Value = serde_json::from_str(&stdout(&panelgate(
        &config,
        &["order", "show", &id.to_string()],
    )))
    .unwrap();
    assert_eq!(
        (shown["state"].as_str(), shown["status"].as_str()),
        (Some("final"), Some("Canceled"))
    );
    assert!(shown["attention"].is_null());
    assert!(
        shown["note"].as_str().unwrap().contains("operator"),
        "{shown}"
    );
    let balance = http
        .form(&server.url, &[("key", key.as_str()), ("action", "balance")])
        .await
        .json();
    assert_eq!(balance["balance"], "10.00000");
    assert!(json_list(&config, &["order", "list", "--stuck", "--json"]).is_empty());
    let metrics = http.get(&format!("{base}/metrics")).await.text();
    assert!(
        metrics.contains(r#"panelgate_orders_attention{reason="stuck",upstream="demo"} 0"#),
        "{metrics}"
    );
    // Settled once: a second try is refused, nothing more is refunded.
    failure(&panelgate(
        &config,
        &["order", "resolve", &id.to_string(), "--status", "Canceled"],
    ));
    server.terminate();
}

/// Two local orders holding one upstream order (a database from before the unique index, or a
/// resend resolved to the wrong id) would both be refunded: `serve` refuses to start, naming
/// both and the fix; `order unlink` works meanwhile and makes the extra one unknown; `resolve`
/// refuses an id another order holds, naming it; then the server starts.
#[tokio::test]
async fn one_upstream_order_is_held_by_one_local_order() {
    let dir = Scratch::new("cli-shared");
    let config = write_config(&dir);
    let server = serve(&config);
    let key = client_key(&config, "ann", "10");
    let http = Http::default();
    // The customer's resend: same service, link and quantity, a moment later. Held in
    // progress upstream, so that sync cannot end them before the unlink below.
    let link = "https://i.com/resend?sim-fate=hold";
    let first = add(&http, &server.url, &key, link).await;
    let resend = add(&http, &server.url, &key, link).await;
    let (first, resend) = (
        first["order"].as_i64().unwrap(),
        resend["order"].as_i64().unwrap(),
    );
    server.terminate();

    let shown: Value = serde_json::from_str(&stdout(&panelgate(
        &config,
        &["order", "show", &first.to_string()],
    )))
    .unwrap();
    let upstream_order = shown["upstream_order"]
        .to_string()
        .trim_matches('"')
        .to_owned();
    // What an older database may hold: no index, one upstream id under both orders.
    let db = rusqlite::Connection::open(dir.path("gw.db")).unwrap();
    db.execute_batch(&format!(
        "DROP INDEX orders_upstream_order_unique;
         UPDATE orders SET upstream_order = '{upstream_order}' WHERE id = {resend};"
    ))
    .unwrap();
    drop(db);

    let err = failure(&run_to_end(&config, &["serve"]));
    assert!(
        err.contains(&format!(
            "upstream demo order {upstream_order}: local orders {first}, {resend}"
        )) && err.contains("panelgate order unlink"),
        "{err}"
    );
    let err = failure(&panelgate(&config, &["migrate"]));
    assert!(err.contains("panelgate order unlink"), "{err}");

    let out = stdout(&panelgate(
        &config,
        &["order", "unlink", &resend.to_string()],
    ));
    assert!(out.contains("unknown"), "{out}");
    let unknown = json_list(
        &config,
        &["order", "list", "--attention", "unknown_outcome", "--json"],
    );
    assert_eq!(unknown.len(), 1);
    assert_eq!(
        (unknown[0]["id"].as_i64(), unknown[0]["state"].as_str()),
        (Some(resend), Some("unknown"))
    );
    assert!(unknown[0]["upstream_order"].is_null());
    let err = failure(&panelgate(
        &config,
        &[
            "order",
            "resolve",
            &resend.to_string(),
            "--upstream-order",
            &upstream_order,
        ],
    ));
    assert!(err.contains(&format!("already order {first}'s")), "{err}");

    let server = serve(&config);
    let out = stdout(&panelgate(
        &config,
        &["order", "resolve", &resend.to_string(), "--not-placed"],
    ));
    assert!(out.contains("1.12500"), "{out}");
    server.terminate();
}

/// Runs the binary to its end (60 s at most): for a `serve` that must refuse to start.
fn run_to_end(config: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_panelgate"))
        .env("DEMO_UPSTREAM_KEY", UPSTREAM_KEY)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
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
