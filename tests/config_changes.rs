//! Config changes that must not strand orders: an upstream with open orders cannot leave the
//! config (it retires instead), a service that left the catalog keeps its orders' refill and
//! cancel, and a reload that shortens a timeout does not cut a dispatch already running.

mod common;

use std::time::Duration;

use common::gw::{ALPHA_KEY, Env, Options};
use panelgate::store::OrderState;
use serde_json::json;

/// Whether local service `id` is in the customer's `services` list.
async fn listed(env: &Env, key: &str, id: u64) -> bool {
    let list = env.call(key, &[("action", "services")]).await;
    list.as_array().unwrap().iter().any(|s| s["service"] == id)
}

fn config(env: &Env) -> String {
    std::fs::read_to_string(&env.config_path).unwrap()
}

fn write_config(env: &Env, text: &str) {
    std::fs::write(&env.config_path, text).unwrap();
}

/// The harness's config without beta: its upstream entry, its import rule and the fallback
/// that names it.
fn without_beta(text: &str) -> String {
    let start = text.find("  - name: beta\n").unwrap();
    let end = start + text[start..].find("services:").unwrap();
    format!("{}{}", &text[..start], &text[end..])
        .replace("    fallback: [{ upstream: beta, service: 202 }]\n", "")
        .replace(
            "  - import: beta\n    id_offset: 2000\n    markup: { multiplier: 1.5, round_up_to: 0.01 }\n",
            "",
        )
}

/// The harness's config with beta renamed gamma everywhere.
fn beta_renamed(text: &str) -> String {
    text.replace("name: beta", "name: gamma")
        .replace("upstream: beta", "upstream: gamma")
        .replace("import: beta", "import: gamma")
}

fn beta_retired(text: &str) -> String {
    let retired = text.replacen(
        "    currency: EUR\n",
        "    currency: EUR\n    retired: true\n",
        1,
    );
    assert_ne!(retired, text);
    retired
}

/// An order of beta's service 201 (local 2201) that the simulator keeps running until canceled.
async fn held_at_beta(env: &Env, key: &str) -> u64 {
    let id = env
        .add(
            key,
            "2201",
            &[
                ("link", "https://i.com/b?sim-fate=hold"),
                ("quantity", "1000"),
            ],
        )
        .await;
    env.wait_status(key, id, &["In progress"]).await;
    id
}

#[tokio::test]
async fn an_upstream_with_open_orders_cannot_leave_the_config_but_can_retire() {
    let env = Env::start(Options {
        extra: "config_poll: 0s\n",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "100", "default").await;
    let held = held_at_beta(&env, &key).await;
    let full = config(&env);

    // Removed or renamed: refused, naming the upstream and its open orders; the old config
    // keeps serving.
    for (change, text) in [
        ("removed", without_beta(&full)),
        ("renamed", beta_renamed(&full)),
    ] {
        write_config(&env, &text);
        let err = env.gw().reload().await.unwrap_err();
        assert!(
            err.contains("upstream \"beta\"") && err.contains("1 open order"),
            "{change}: {err}"
        );
        assert!(err.contains("retired: true"), "{change}: {err}");
        assert!(listed(&env, &key, 2201).await, "{change}: beta left");
    }

    // Retired: its services leave the list and cannot be ordered.
    write_config(&env, &beta_retired(&full));
    env.gw().reload().await.unwrap();
    assert!(!listed(&env, &key, 2201).await);
    assert!(listed(&env, &key, 1).await);
    let r = env
        .call(
            &key,
            &[
                ("action", "add"),
                ("service", "2201"),
                ("link", "https://i.com/c"),
                ("quantity", "1000"),
            ],
        )
        .await;
    assert_eq!(r["error"], "Incorrect service ID");
    // A fallback to it is skipped: alpha refusing service 2 is the end of it.
    env.set_faults(
        &env.alpha,
        ALPHA_KEY,
        json!({"error": 1, "actions": ["add"]}),
    )
    .await;
    // The simulator journals every order it creates.
    let beta_orders = env.journal("beta").len();
    let r = env
        .call(
            &key,
            &[
                ("action", "add"),
                ("service", "2"),
                ("link", "https://i.com/d"),
                ("quantity", "100"),
            ],
        )
        .await;
    assert_eq!(
        r["error"],
        "Service is temporarily unavailable, please try again later"
    );
    assert_eq!(
        env.journal("beta").len(),
        beta_orders,
        "an order went to a retired upstream"
    );
    env.set_faults(&env.alpha, ALPHA_KEY, json!({})).await;

    // Its open order is still followed: canceled there, refunded here.
    let before = env.balance(&key).await;
    let c = env
        .call(&key, &[("action", "cancel"), ("orders", &held.to_string())])
        .await;
    assert_eq!(c, json!([{"order": held, "cancel": 1}]));
    env.wait_order(held, |o| o.state == OrderState::Final).await;
    assert!(env.balance(&key).await > before, "no refund");

    // Nothing open any more: now it may go.
    write_config(&env, &without_beta(&full));
    env.gw().reload().await.unwrap();
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn a_start_whose_config_would_strand_open_orders_is_refused() {
    let mut env = Env::start(Options::default()).await;
    let key = env.client("ann", "100", "default").await;
    let held = held_at_beta(&env, &key).await;
    env.stop_gateway().await;
    let full = config(&env);

    write_config(&env, &without_beta(&full));
    let cfg = panelgate::config::load(&env.config_path).unwrap();
    let err = match panelgate::app::start(cfg).await {
        Ok(_) => panic!("a config leaving beta's open order behind was started"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("upstream \"beta\"") && err.contains("1 open order"),
        "{err}"
    );

    // Retired, it starts, and the order is still followed to its end.
    write_config(&env, &beta_retired(&full));
    env.start_gateway().await;
    assert!(!listed(&env, &key, 2201).await);
    let c = env
        .call(&key, &[("action", "cancel"), ("orders", &held.to_string())])
        .await;
    assert_eq!(c, json!([{"order": held, "cancel": 1}]));
    env.wait_order(held, |o| o.state == OrderState::Final).await;
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn refill_and_cancel_follow_the_order_not_todays_catalog() {
    let env = Env::start(Options {
        extra: "config_poll: 0s\n",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "100", "default").await;
    // Local service 1 is alpha's 101 (refill and cancel).
    let order = |fate: &'static str| {
        let link = format!("https://i.com/a?sim-fate={fate}");
        let env = &env;
        let key = key.clone();
        async move {
            env.add(&key, "1", &[("link", &link), ("quantity", "1000")])
                .await
        }
    };
    let done = order("complete").await;
    let held = order("hold").await;
    env.wait_status(&key, done, &["Completed"]).await;
    env.wait_status(&key, held, &["In progress"]).await;

    // Service 1 leaves the catalog.
    let text = config(&env);
    let entry = "  - id: 1\n    upstream: alpha\n    service: 101\n    markup: { percent: 25 }\n";
    assert!(text.contains(entry));
    write_config(&env, &text.replacen(entry, "", 1));
    env.gw().reload().await.unwrap();
    assert!(!listed(&env, &key, 1).await);

    // Its orders may still ask for what they were sold with, at the upstream they are at.
    let r = env
        .call(&key, &[("action", "refill"), ("order", &done.to_string())])
        .await;
    assert!(r["refill"].as_str().is_some(), "refill refused: {r}");
    let before = env.balance(&key).await;
    let c = env
        .call(&key, &[("action", "cancel"), ("orders", &held.to_string())])
        .await;
    assert_eq!(c, json!([{"order": held, "cancel": 1}]));
    let s = env.wait_status(&key, held, &["Partial"]).await;
    assert_eq!(s["remains"], "500");
    assert!(env.balance(&key).await > before, "no refund");
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn a_reload_shortening_timeouts_does_not_cut_a_dispatch_in_flight() {
    let env = Env::start(Options {
        extra: "config_poll: 0s\n",
        upstream_timeout: "20s",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "100", "default").await;
    // alpha answers `add` after 7 s: longer than the 5 s margin plus any deadline the new
    // timeout gives, so a recovery reading the new config would call the order abandoned.
    env.set_faults(
        &env.alpha,
        ALPHA_KEY,
        json!({"slow": 1, "slow_ms": 7000, "actions": ["add"]}),
    )
    .await;
    let (http, url, k) = (env.http.clone(), env.url(), key.clone());
    let in_flight = tokio::spawn(async move {
        http.form(
            &url,
            &[
                ("key", &k),
                ("action", "add"),
                ("service", "1"),
                ("link", "https://i.com/a"),
                ("quantity", "100"),
            ],
        )
        .await
        .json()
    });
    let o = env
        .wait_order(1, |o| o.state == OrderState::Dispatching)
        .await;
    let recorded = o.dispatch_deadline.expect("a deadline is recorded");

    let text = config(&env);
    write_config(&env, &text.replace("timeout: 20s", "timeout: 100ms"));
    env.gw().reload().await.unwrap();
    assert!(env.gw().gateway().cfg.dispatch_deadline() < Duration::from_secs(6));

    // The sync loop recovers abandoned dispatches under the new config every 50 ms, as would
    // another instance; it leaves this one alone until its own deadline.
    let gateway = env.gw().gateway();
    while !in_flight.is_finished() {
        gateway.syncer.recover_abandoned().await;
        let o = env.store().order(1).await.unwrap().unwrap();
        assert!(
            o.state != OrderState::Unknown || panelgate::sync::now_ms() > recorded,
            "marked unknown before its recorded deadline: {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(in_flight.await.unwrap(), json!({"order": 1}));
    let o = env.store().order(1).await.unwrap().unwrap();
    // Placed (and, the simulated clock running fast, maybe already done): never unknown.
    assert!(
        matches!(o.state, OrderState::Placed | OrderState::Final) && o.attention.is_none(),
        "{o:?}"
    );
    assert_eq!(o.upstream_order.as_deref(), Some("1"));
    assert_eq!(o.dispatch_deadline, Some(recorded));
    env.set_faults(&env.alpha, ALPHA_KEY, json!({})).await;
    env.wait_status(&key, 1, &["Completed"]).await;
    // A new dispatch gets the new, shorter budget.
    let next = env
        .add(
            &key,
            "1",
            &[("link", "https://i.com/b"), ("quantity", "100")],
        )
        .await;
    let n = env.order(next).await;
    assert!(
        n.dispatch_deadline.unwrap() - n.created_at <= 1_000,
        "{n:?}"
    );
    env.assert_ledgers_balance().await;
}

/// `panelgate serve` with upstream `up` (simulated) and its service 101 as local 1, plus
/// `more_upstreams` and `more_services`.
fn served_config(up: u16, more_upstreams: &str, more_services: &str) -> String {
    format!(
        "listen: \"127.0.0.1:0\"\ndatabase: \"sqlite://gw.db\"\nconfig_poll: 50ms\nupstreams:\n  - name: up\n    url: \"http://127.0.0.1:{up}/api/v2\"\n    key: up-key-123\n    simulate: {{ speed: 100000 }}\n{more_upstreams}services:\n  - id: 1\n    upstream: up\n    service: 101\n    markup: {{ percent: 25 }}\n{more_services}clients:\n  - name: ann\n    key: ann-key-0123456789\n    balance: \"10\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_the_file_watch_refuse_to_strand_orders_and_say_why() {
    let dir = common::gw::Scratch::new("strand");
    let config = dir.path("config.yaml");
    let (up, old) = (common::free_port(), common::free_port());
    let old_entry = format!(
        "  - name: old\n    url: \"http://127.0.0.1:{old}/api/v2\"\n    key: old-key-123\n    simulate: {{ speed: 100000 }}\n"
    );
    let old_service = "  - import: old\n    id_offset: 2000\n    markup: { percent: 25 }\n";
    let with_old = served_config(up, &old_entry, old_service);
    std::fs::write(&config, &with_old).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_panelgate"));
    command.args(["serve", "--config"]).arg(&config);
    let server = common::Spawned::start(command);
    let http = common::Http::default();
    let call = |pairs: &[(&str, &str)]| {
        let mut all = vec![("key", "ann-key-0123456789")];
        all.extend_from_slice(pairs);
        let (http, url) = (http.clone(), server.url.clone());
        let all: Vec<(String, String)> = all
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        async move {
            let pairs: Vec<(&str, &str)> =
                all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            http.form(&url, &pairs).await.json()
        }
    };
    let r = call(&[
        ("action", "add"),
        ("service", "2101"),
        ("link", "https://i.com/x?sim-fate=hold"),
        ("quantity", "100"),
    ])
    .await;
    assert_eq!(r["order"], 1, "{r}");

    // The file watch sees `old` gone, then SIGHUP reads the same file: both refuse. Each
    // refusal is awaited on the reload counter before the file changes again.
    let metrics_url = server.url.replace("/api/v2", "/metrics");
    let refused_after = |at_least: u64| {
        let (http, url) = (http.clone(), metrics_url.clone());
        async move {
            for _ in 0..500 {
                let text = http.get(&url).await.text();
                let count = text
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix(r#"panelgate_config_reloads_total{outcome="refused"} "#)
                    })
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                if count >= at_least {
                    return count;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("fewer than {at_least} refused reloads counted");
        }
    };
    std::fs::write(&config, served_config(up, "", "")).unwrap();
    let by_watch = refused_after(1).await;
    server.signal("-HUP");
    refused_after(by_watch + 1).await;
    // Then `old` retired, with a new price to see the reload happen.
    let retired = with_old
        .replace("old-key-123\n", "old-key-123\n    retired: true\n")
        .replacen("percent: 25", "percent: 60", 1);
    assert!(retired.contains("retired: true") && retired.contains("percent: 60"));
    std::fs::write(&config, retired).unwrap();
    server.signal("-HUP");
    let mut rate = serde_json::Value::Null;
    for _ in 0..200 {
        let list = call(&[("action", "services")]).await;
        rate = list[0]["rate"].clone();
        if rate == "1.44" {
            assert_eq!(list.as_array().unwrap().len(), 1, "old's services: {list}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rate, "1.44", "the retiring config was not loaded");
    let logs = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    let refusals = logs
        .lines()
        .filter(|l| {
            l.contains("config not reloaded")
                && l.contains(r#"upstream "old" is not in the config but still has 1 open order"#)
        })
        .count();
    assert!(refusals >= 2, "refusals logged: {refusals}\n{logs}");

    // A fresh start with `old` gone is refused too, saying why.
    std::fs::write(&config, served_config(up, "", "")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_panelgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("upstream \"old\" is not in the config but still has 1 open order"),
        "{stderr}"
    );
}
