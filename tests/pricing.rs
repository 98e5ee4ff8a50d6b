//! Money at the edges, black-box over loopback: every target priced from its own upstream,
//! markups and limits checked against the upstreams' lists, upstream currencies, error texts
//! without upstream ids; and panel-script upstreams (string-only or empty services lists,
//! type filters, an API at another path). `check-config` is run as the operator runs it.

mod common;

use std::time::Duration;

use common::gw::{ALPHA_KEY, Env, Scratch, dec, replaced, with_services};
use panelgate::store::OrderState;
use serde_json::{Value, json};

const UNAVAILABLE: &str = "Service is temporarily unavailable, please try again later";

async fn get(env: &Env, path: &str) -> common::Reply {
    env.http
        .get(&format!("http://{}{path}", env.gw().addr))
        .await
}

async fn listing(env: &Env, key: &str) -> Vec<Value> {
    env.call(key, &[("action", "services")])
        .await
        .as_array()
        .unwrap()
        .clone()
}

async fn try_add(env: &Env, key: &str, service: &str) -> Value {
    env.call(
        key,
        &[
            ("action", "add"),
            ("service", service),
            ("link", "https://i.com/p"),
            ("quantity", "100"),
        ],
    )
    .await
}

/// Services sold cheaply at alpha with dearer fallbacks at beta (costs in USD: alpha 102
/// 0.45, 118 2.10; beta 201 2.00 EUR × 1.1 = 2.2, 202 0.40 × 1.1 = 0.44).
const FALLBACKS: &str = r#"  - id: 50
    upstream: alpha
    service: 102
    markup: { percent: 10 }
    fallback: [{ upstream: beta, service: 201 }, { upstream: beta, service: 202 }]
  - id: 51
    upstream: alpha
    service: 118
    markup: { percent: 10, min_profit: 0.2 }
    fallback: [{ upstream: beta, service: 201 }]
  - id: 52
    upstream: alpha
    service: 102
    markup: { percent: 10 }
    allow_loss: true
    fallback: [{ upstream: beta, service: 201 }]
"#;

#[tokio::test]
async fn a_fallback_takes_an_order_only_if_the_sell_price_covers_its_own_cost() {
    let env = Env::tuned(|_, _| {}, |t| with_services(t, FALLBACKS)).await;
    let key = env.client("ann", "100", "default").await;
    env.set_faults(
        &env.alpha,
        ALPHA_KEY,
        json!({"error": 1, "error_text": "Not enough funds on balance", "actions": ["add"]}),
    )
    .await;
    // 50 sells at 0.495: beta's 201 (2.2) would lose money and is passed over for 202 (0.44).
    let id = env
        .add(
            &key,
            "50",
            &[("link", "https://i.com/a"), ("quantity", "100")],
        )
        .await;
    let o = env.order(id).await;
    assert_eq!(
        (o.upstream.as_str(), o.upstream_service, o.state),
        ("beta", 202, OrderState::Placed)
    );
    // 51 sells at 2.31: beta's 201 costs 2.2, but the rule asks 0.2 of profit (2.4).
    let before = env.balance(&key).await;
    assert_eq!(try_add(&env, &key, "51").await["error"], UNAVAILABLE);
    assert_eq!(env.balance(&key).await, before);
    let placed_at_beta: Vec<u64> = env
        .journal("beta")
        .iter()
        .map(|l| l["service"].as_u64().unwrap())
        .collect();
    assert_eq!(placed_at_beta, [202]);
    // 52 says allow_loss: its dearer fallback takes the order.
    let id = env
        .add(
            &key,
            "52",
            &[("link", "https://i.com/b"), ("quantity", "100")],
        )
        .await;
    let o = env.order(id).await;
    assert_eq!((o.upstream.as_str(), o.upstream_service), ("beta", 201));
    let metrics = get(&env, "/metrics").await.text();
    assert!(
        metrics.contains(
            r#"panelgate_order_targets_skipped_total{reason="below_cost",upstream="beta"} 2"#
        ),
        "{metrics}"
    );
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn check_config_shows_every_targets_cost_and_margin_currencies_and_the_worst_add() {
    let env = Env::tuned(|_, _| {}, |t| with_services(t, FALLBACKS)).await;
    let (ok, out) = env.check_config().await;
    assert!(ok, "{out}");
    for line in [
        "service 50 [default] sells at 0.495 USD: alpha/102 cost 0.45 margin 0.045; fallback beta/201 cost 2.2 margin -1.705; fallback beta/202 cost 0.44 margin 0.055",
        "service 50 [vip] sells at 0.495 USD:",
        "warning: service 50 [default]: fallback beta/201 costs 2.2 USD, more than the sell price 0.495 allows: orders will not go there",
        "warning: service 51 [default]: fallback beta/201 costs 2.2 USD, more than the sell price 2.31 allows",
        "warning: service 52 [default]: fallback beta/201 sells below cost (0.495 < 2.2; allow_loss)",
        "upstream alpha: balance 1000.00000 USD (the config expects USD)",
        "upstream beta: balance 1000.00000 EUR (the config expects EUR, fx 1.1)",
        // 3 s timeouts: alpha's currency read, then three targets, each 3 × 3 s.
        "worst-case add: 36s (service 50:",
    ] {
        assert!(out.contains(line), "{line:?} not in:\n{out}");
    }
}

#[tokio::test]
async fn an_upstream_in_another_currency_than_configured_takes_no_orders_until_fixed() {
    let env = Env::tuned(|a, _| a.currency = "EUR".into(), |t| t).await;
    let key = env.client("ann", "100", "default").await;
    // alpha states EUR; the config gives it no currency, so it is expected to be in ours.
    assert_eq!(try_add(&env, &key, "1").await["error"], UNAVAILABLE);
    assert!(env.journal("alpha").is_empty());
    assert_eq!(env.balance(&key).await, dec("100"));
    // Its fallback-covered service goes to beta, whose EUR is declared with its fx.
    let id = env
        .add(
            &key,
            "2",
            &[("link", "https://i.com/a"), ("quantity", "100")],
        )
        .await;
    let o = env.order(id).await;
    assert_eq!(o.upstream, "beta");
    let ready = get(&env, "/readyz").await.json();
    assert_eq!(ready["currency"]["beta"], "ok");
    let alpha = ready["currency"]["alpha"].as_str().unwrap();
    assert!(
        alpha.contains("states EUR") && alpha.contains("expects USD"),
        "{alpha}"
    );
    let metrics = get(&env, "/metrics").await.text();
    assert!(
        metrics.contains(r#"panelgate_upstream_currency_mismatch{upstream="alpha"} 1"#)
            && metrics.contains(
                r#"panelgate_order_targets_skipped_total{reason="currency",upstream="alpha"} 2"#
            ),
        "{metrics}"
    );
    let (ok, out) = env.check_config().await;
    assert!(!ok);
    assert!(
        out.contains("upstream alpha: balance 1000.00000 EUR (the config expects USD)")
            && out.contains("problem: upstream alpha: takes no orders: it states EUR"),
        "{out}"
    );
    // The operator declares alpha's currency and its rate: orders go there again.
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let fixed = replaced(
        text,
        &format!("    key: \"{ALPHA_KEY}\"\n"),
        &format!("    key: \"{ALPHA_KEY}\"\n    currency: EUR\n    fx: \"1.1\"\n"),
    );
    std::fs::write(&env.config_path, fixed).unwrap();
    env.gw().reload().await.unwrap();
    let id = env
        .add(
            &key,
            "1",
            &[("link", "https://i.com/b"), ("quantity", "100")],
        )
        .await;
    let o = env.order(id).await;
    assert_eq!(
        (o.upstream.as_str(), o.state),
        ("alpha", OrderState::Placed)
    );
    // 0.90 EUR × 1.1 × 1.25 = 1.2375 per 1000.
    assert_eq!(panelgate::money::from_units(o.charge), dec("0.12375"));
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn limits_outside_the_upstreams_range_are_refused_where_the_lists_are_read() {
    // alpha 101 takes 50..10000: a wider max is left out of the catalog at start.
    let bad = "  - id: 60\n    upstream: alpha\n    service: 101\n    markup: { percent: 25 }\n    max: 20000\n";
    let env = Env::tuned(|_, _| {}, |t| with_services(t, bad)).await;
    let key = env.client("ann", "100", "default").await;
    let list = listing(&env, &key).await;
    assert!(list.iter().all(|s| s["service"] != 60));
    assert!(list.iter().any(|s| s["service"] == 3));
    assert_eq!(
        try_add(&env, &key, "60").await["error"],
        "Incorrect service ID"
    );
    let (ok, out) = env.check_config().await;
    assert!(!ok);
    assert!(
        out.contains("problem: service 60: max 20000 is outside the upstream's range 50..10000"),
        "{out}"
    );
    // A reload that gives service 3 (alpha 118: 100..50000) a min below the upstream's is
    // refused whole, naming the service; the running config stays.
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let text = replaced(text, bad, "");
    let text = replaced(
        text,
        "    name: \"TikTok Followers [our best]\"\n    min: 200\n",
        "    name: \"TikTok Followers [renamed]\"\n    min: 20\n",
    );
    std::fs::write(&env.config_path, text).unwrap();
    let err = env.gw().reload().await.unwrap_err();
    assert!(
        err.contains("service 3: min 20 is outside the upstream's range 100..50000"),
        "{err}"
    );
    let list = listing(&env, &key).await;
    let three = list.iter().find(|s| s["service"] == 3).unwrap();
    assert_eq!(
        (three["name"].as_str(), three["min"].as_str()),
        (Some("TikTok Followers [our best]"), Some("200"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_refused_for_a_services_limits_is_logged_with_the_service() {
    let dir = Scratch::new("pricing-reload");
    let config = dir.path("config.yaml");
    let port = common::free_port();
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:0\"\ndatabase: \"sqlite://gw.db\"\nconfig_poll: 0s\nupstreams:\n  - name: up\n    url: \"http://127.0.0.1:{port}/api/v2\"\n    key: up-key-123\n    simulate: {{ speed: 100000 }}\nservices:\n  - id: 1\n    upstream: up\n    service: 101\n    markup: {{ percent: 25 }}\n    name: first\nclients:\n  - name: ann\n    key: ann-key-0123456789\n    balance: \"10\"\n"
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_panelgate"));
    command.args(["serve", "--config"]).arg(&config);
    let server = common::Spawned::start(command);
    let http = common::Http::default();
    let name = || async {
        let list = http
            .form(
                &server.url,
                &[("key", "ann-key-0123456789"), ("action", "services")],
            )
            .await
            .json();
        list[0]["name"].clone()
    };
    let edit = |from: &str, to: &str| {
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, replaced(text, from, to)).unwrap();
    };
    let refused = r#"panelgate_config_reloads_total{outcome="refused"} 1"#;
    let metrics_url = server.url.replace("/api/v2", "/metrics");
    edit("    name: first\n", "    name: second\n    max: 20000\n");
    server.signal("-HUP");
    let mut counted = false;
    for _ in 0..250 {
        if http.get(&metrics_url).await.text().contains(refused) {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(counted, "the reload was not refused");
    assert_eq!(name().await, "first");
    // A good change after it goes through.
    edit("    name: second\n    max: 20000\n", "    name: third\n");
    server.signal("-HUP");
    let mut seen = Value::Null;
    for _ in 0..250 {
        seen = name().await;
        if seen == "third" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, "third");
    let logs = server.terminate();
    let refused = logs
        .lines()
        .find(|l| l.contains("config not reloaded"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{logs}"));
    assert!(
        refused.contains("service 1: max 20000 is outside the upstream's range 50..10000"),
        "{refused}"
    );
}

#[tokio::test]
async fn refill_refusals_name_our_order_and_keep_their_other_numbers() {
    let env = Env::tuned(
        |a, _| {
            a.first_order_id = 10;
            a.refill_refusal =
                Some("Refill is available 1 time in 10 days for order {order}".into());
        },
        |t| t,
    )
    .await;
    let key = env.client("ann", "100", "default").await;
    let id = env
        .add(
            &key,
            "1",
            &[("link", "https://i.com/r"), ("quantity", "100")],
        )
        .await;
    let o = env.order(id).await;
    assert_eq!(o.upstream_order, Some("10".to_owned()));
    assert_ne!(id, 10);
    env.wait_status(&key, id, &["Completed"]).await;
    let r = env
        .call(&key, &[("action", "refill"), ("order", &id.to_string())])
        .await;
    assert_eq!(
        r["error"],
        format!("Refill is available 1 time in 10 days for order {id}")
    );
}

#[tokio::test]
async fn a_services_list_of_strings_reads_and_an_empty_description_is_left_out() {
    let strings = r#"[{"service":"201","name":"Beta Followers","type":"Default","category":"Beta Instagram","rate":"2.00","min":"10","max":"5000","desc":""},
                      {"service":"202","name":"Beta Likes","type":"default","category":"Beta Instagram","rate":"0.40","min":"10","max":"100000","dripfeed":"0","desc":"Fast start"}]"#;
    let env = Env::tuned(
        |_, b| b.services_body = Some(bytes::Bytes::from_static(strings.as_bytes())),
        |t| t,
    )
    .await;
    let key = env.client("ann", "100", "default").await;
    let list = listing(&env, &key).await;
    let find = |id: u64| list.iter().find(|s| s["service"] == id).cloned().unwrap();
    assert_eq!(
        find(2201),
        json!({"service":2201,"name":"Beta Followers","type":"Default","category":"Beta Instagram",
               "rate":"3.3","min":"10","max":"5000","refill":false,"cancel":false,"dripfeed":false})
    );
    assert_eq!(find(2202)["desc"], "Fast start");
}

#[tokio::test]
async fn an_upstream_answering_empty_data_lists_no_services() {
    let empty = br#"{"status":"success","data":"Empty Data"}"#;
    let env = Env::tuned(
        |_, b| b.services_body = Some(bytes::Bytes::from_static(empty)),
        |t| t,
    )
    .await;
    let key = env.client("ann", "100", "default").await;
    let list = listing(&env, &key).await;
    assert!(list.iter().all(|s| s["service"].as_u64().unwrap() < 2000));
    assert!(list.iter().any(|s| s["service"] == 1101));
    let metrics = get(&env, "/metrics").await.text();
    // Read as an answer, not as garbage.
    for series in [
        r#"panelgate_upstream_services_listed{upstream="beta"} 0"#,
        r#"panelgate_catalog_refreshes_total{outcome="ok",upstream="beta"}"#,
    ] {
        assert!(metrics.contains(series), "{series} not in:\n{metrics}");
    }
    assert!(
        !metrics.contains(r#"panelgate_catalog_refreshes_total{outcome="error",upstream="beta"}"#)
    );
    let (ok, out) = env.check_config().await;
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: upstream beta: 127.0.0.1 lists no services"),
        "{out}"
    );
}

#[tokio::test]
async fn import_rules_filter_by_type_whatever_its_spelling() {
    let env = Env::tuned(
        |_, _| {},
        |t| {
            let t = replaced(
                t,
                "  - import: alpha\n    id_offset: 1000\n",
                "  - import: alpha\n    id_offset: 1000\n    exclude_types: [\"custom comments package\", POLL, Mentions_User_Followers, \"Comment Likes\"]\n",
            );
            replaced(
                t,
                "  - import: beta\n    id_offset: 2000\n",
                "  - import: beta\n    id_offset: 2000\n    types: [package]\n",
            )
        },
    )
    .await;
    let key = env.client("ann", "100", "default").await;
    let ids: Vec<u64> = listing(&env, &key)
        .await
        .iter()
        .map(|s| s["service"].as_u64().unwrap())
        .collect();
    for gone in [1104, 1113, 1109, 1111, 2201, 2202] {
        assert!(!ids.contains(&gone), "{gone} is sold: {ids:?}");
    }
    for kept in [1101, 1103, 1105, 1110, 2203] {
        assert!(ids.contains(&kept), "{kept} is not sold: {ids:?}");
    }
}

#[tokio::test]
async fn check_config_says_when_a_url_is_not_an_api_v2_endpoint() {
    let dir = Scratch::new("pricing-path");
    let mut cfg = common::fast_config();
    cfg.api_path = Some("/api/v1".into());
    let sim = common::simulator(cfg).await;
    assert!(sim.url().ends_with("/api/v1"));
    let config = dir.path("config.yaml");
    std::fs::write(
        &config,
        format!(
            "database: \"sqlite://gw.db\"\nupstreams:\n  - name: script\n    url: \"http://{}/api/v2\"\n    key: \"{}\"\n    retries: 0\n",
            sim.addr,
            common::KEY
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_panelgate"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("the URL does not look like an API v2 endpoint (HTTP 404 with an HTML page); check the path"),
        "{text}"
    );
    // At the right path it answers.
    let r = common::Http::default()
        .form(&sim.url(), &[("key", common::KEY), ("action", "balance")])
        .await;
    assert_eq!(r.json()["currency"], "USD");
}
