//! A gateway's life: configuration reloaded atomically (by call, by SIGHUP, by a file change),
//! an invalid one refused while the old one keeps serving, and SIGTERM letting in-flight
//! requests finish.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use common::Http;
use common::gw::{Env, Options, Scratch, sample, upstream_saw};
use serde_json::Value;

async fn rate_of(env: &Env, key: &str, id: u64) -> Value {
    let list = env.call(key, &[("action", "services")]).await;
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == id)
        .map(|s| s["rate"].clone())
        .unwrap_or(Value::Null)
}

/// The rates of services 1, 2 and 3 in a `services` reply.
fn rates_in(list: &Value) -> Vec<Value> {
    [1, 2, 3]
        .map(|id| {
            list.as_array()
                .unwrap()
                .iter()
                .find(|s| s["service"] == id)
                .map_or(Value::Null, |s| s["rate"].clone())
        })
        .to_vec()
}

async fn rates(env: &Env, key: &str) -> Vec<Value> {
    rates_in(&env.call(key, &[("action", "services")]).await)
}

fn rewrite(path: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in the config");
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test]
async fn a_reload_switches_atomically_and_an_invalid_config_is_refused() {
    let env = Env::start(Options {
        extra: "config_poll: 0s\n",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "10", "default").await;
    let old = rates(&env, &key).await;
    assert_eq!(old[0], "1.125");
    // Services 1, 2 and 3 all go from +25 % to +50 %, in one reload.
    for _ in 0..3 {
        rewrite(
            &env.config_path,
            "markup: { percent: 25 }",
            "markup: { percent: 50 }",
        );
    }
    // A reader lists the services all through the swap: each list is wholly old or new.
    let (reads, swapped) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let reader = {
        let (http, url, key) = (env.http.clone(), env.url(), key.clone());
        let (reads, swapped) = (reads.clone(), swapped.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let last = swapped.load(SeqCst);
                let list = http
                    .form(&url, &[("key", &key), ("action", "services")])
                    .await;
                seen.push(rates_in(&list.json()));
                reads.fetch_add(1, SeqCst);
                if last {
                    return seen;
                }
            }
        })
    };
    while reads.load(SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    env.gw().reload().await.unwrap();
    swapped.store(true, SeqCst);
    let seen = reader.await.unwrap();
    let new = rates(&env, &key).await;
    assert_eq!(new[0], "1.35");
    assert!(old.iter().zip(&new).all(|(o, n)| o != n), "{old:?} {new:?}");
    assert!(
        seen.iter().all(|r| *r == old || *r == new),
        "a list mixed old and new prices: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&new));
    // Orders are charged at the new price, and the clients, balances and ids carry on.
    let id = env
        .add(
            &key,
            "1",
            &[("link", "https://i.com/a"), ("quantity", "1000")],
        )
        .await;
    assert_eq!(id, 1);
    assert_eq!(env.balance(&key).await, "8.65".parse().unwrap());
    // A broken file: refused, the running config stays.
    rewrite(
        &env.config_path,
        "currency: USD",
        "currency: USD\nbogus_key: 1",
    );
    let err = env.gw().reload().await.unwrap_err();
    assert!(err.contains("bogus_key"), "{err}");
    assert_eq!(rate_of(&env, &key, 1).await, "1.35");
    rewrite(
        &env.config_path,
        "currency: USD\nbogus_key: 1",
        "currency: EUR",
    );
    assert!(env.gw().reload().await.unwrap_err().contains("currency"));
    assert_eq!(
        env.call(&key, &[("action", "balance")]).await["currency"],
        "USD"
    );
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn a_changed_config_file_is_picked_up() {
    let env = Env::start(Options {
        extra: "config_poll: 50ms\n",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "10", "default").await;
    rewrite(
        &env.config_path,
        "markup: { percent: 25 }",
        "markup: { percent: 100 }",
    );
    for _ in 0..200 {
        if rate_of(&env, &key, 1).await == "1.8" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the changed file was not reloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_finishes_in_flight_requests() {
    let dir = Scratch::new("signals");
    let config = dir.path("config.yaml");
    let (text, upstream) = common::slow_add_config("");
    std::fs::write(&config, text).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_panelgate"));
    command.args(["serve", "--config"]).arg(&config);
    let server = common::Spawned::start(command);
    let url = server.url.clone();
    let http = Http::default();
    let rate = || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let list = http
                .form(
                    &url,
                    &[("key", "ann-key-0123456789"), ("action", "services")],
                )
                .await
                .json();
            list[0]["rate"].clone()
        }
    };
    assert_eq!(rate().await, "1.125");

    rewrite(&config, "percent: 25", "percent: 60");
    server.signal("-HUP");
    let mut reloaded = false;
    for _ in 0..200 {
        if rate().await == "1.44" {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reloaded, "SIGHUP did not reload");
    rewrite(&config, "percent: 60", "percnt: 70");
    server.signal("-HUP");
    let metrics = url.replace("/api/v2", "/metrics");
    let refused = r#"panelgate_config_reloads_total{outcome="refused"}"#;
    let mut counted = None;
    for _ in 0..500 {
        counted = sample(&http.get(&metrics).await.text(), refused);
        if counted.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        counted,
        Some(1.0),
        "the invalid config's reload was not refused"
    );
    assert_eq!(
        rate().await,
        "1.44",
        "an invalid config replaced the running one"
    );

    // An order in flight (the upstream takes 700 ms) when SIGTERM arrives still gets its answer.
    let (h, u) = (http.clone(), url.clone());
    let in_flight = tokio::spawn(async move {
        h.form(
            &u,
            &[
                ("key", "ann-key-0123456789"),
                ("action", "add"),
                ("service", "1"),
                ("link", "https://i.com/x"),
                ("quantity", "100"),
            ],
        )
        .await
        .json()
    });
    upstream_saw(&http, &upstream, "up-key-123", "add", 1).await;
    server.signal("-TERM");
    let reply = in_flight.await.unwrap();
    assert_eq!(reply["order"], 1, "{reply}");
    let logs = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap();
    assert!(
        logs.contains("config not reloaded"),
        "the refused reload was not logged"
    );
    assert!(
        logs.contains("percnt"),
        "the log does not say what was wrong"
    );
}

#[tokio::test]
async fn an_upstream_removed_by_a_reload_leaves_no_stale_metrics() {
    let env = Env::start(Options {
        extra: "config_poll: 0s\n",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "10", "default").await;
    env.call(&key, &[("action", "services")]).await;
    let scrape = || async {
        env.http
            .get(&format!("http://{}/metrics", env.gw().addr))
            .await
            .text()
    };
    assert!(
        scrape()
            .await
            .contains(r#"panelgate_catalog_services{upstream="beta"}"#)
    );
    // Drop beta: its upstream entry, its import rule and the fallback that names it.
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let start = text.find("  - name: beta\n").unwrap();
    let end = start + text[start..].find("services:").unwrap();
    let text = format!("{}{}", &text[..start], &text[end..])
        .replace("    fallback: [{ upstream: beta, service: 202 }]\n", "")
        .replace("  - import: beta\n    id_offset: 2000\n    markup: { multiplier: 1.5, round_up_to: 0.01 }\n", "");
    std::fs::write(&env.config_path, text).unwrap();
    env.gw().reload().await.unwrap();
    let after = scrape().await;
    // Counters keep their history; the gauges that would keep alerts alive are gone.
    for gauge in [
        "panelgate_upstream_healthy",
        "panelgate_upstream_breaker_state",
        "panelgate_upstream_balance",
        "panelgate_catalog_services",
        "panelgate_catalog_list_age_seconds",
    ] {
        let stale = after
            .lines()
            .any(|l| l.starts_with(gauge) && l.contains(r#"upstream="beta""#));
        assert!(!stale, "{gauge} still reports beta");
    }
    assert!(after.contains(r#"panelgate_catalog_services{upstream="alpha"}"#));
    assert_eq!(
        rate_of(&env, &key, 2201).await,
        Value::Null,
        "beta's services are gone"
    );
}
