//! What an operator's Prometheus and load balancer see: `/metrics` after a scripted workload
//! (checked value by value, and by `promtool check metrics`), `/healthz` and `/readyz`.

mod common;

use std::collections::HashMap;

use common::gw::{ALPHA_KEY, BETA_KEY, Env, Options};
use common::reference::{refund, units};
use panelgate::store::OrderState;
use serde_json::json;

/// Parses the text exposition into `name{labels} -> value`.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Whether a sample is the amount of `units` 0.00001 (metrics carry money as floats).
fn is_amount(sample: f64, units: i128) -> bool {
    (sample - units as f64 / 100_000.0).abs() < 1e-9
}

fn get(s: &HashMap<String, f64>, series: &str) -> f64 {
    *s.get(series)
        .unwrap_or_else(|| panic!("{series} not exported"))
}

/// `promtool check metrics` on a real scrape; required in CI, skipped elsewhere if missing.
fn promtool_accepts(scrape: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have promtool: {e}"
            );
            eprintln!("skipped promtool: {e}");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn metrics_move_with_the_workload_and_pass_promtool() {
    let env = Env::start(Options {
        extra: "metrics_listen: \"127.0.0.1:0\"\nbalance_poll: 20ms\n",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "100", "default").await;
    env.call(&key, &[("action", "services")]).await;
    let a = env
        .add(
            &key,
            "1",
            &[
                ("link", "https://i.com/a?sim-fate=partial"),
                ("quantity", "1000"),
            ],
        )
        .await;
    let b = env
        .add(
            &key,
            "1",
            &[
                ("link", "https://i.com/b?sim-fate=complete"),
                ("quantity", "1000"),
            ],
        )
        .await;
    let c = env
        .add(
            &key,
            "2201",
            &[
                ("link", "https://b.com/c?sim-fate=cancel"),
                ("quantity", "100"),
            ],
        )
        .await;
    let refused = env
        .call(
            &key,
            &[
                ("action", "add"),
                ("service", "1"),
                ("link", "x"),
                ("quantity", "1"),
            ],
        )
        .await;
    assert_eq!(refused["error"], "Quantity less than minimal 50");
    assert_eq!(
        env.call("wrong-key", &[("action", "balance")]).await["error"],
        "Invalid API key"
    );
    for id in [a, b, c] {
        env.wait_order(id, |o| o.state == OrderState::Final).await;
    }
    let partial = env.order(a).await;
    let remains = partial.remains.unwrap() as u64;
    // alpha charged 0.90 for each 1000 units and gave back the undelivered share of the
    // Partial one, rounded down; we charged 1.125 and gave back the same share of that.
    let alpha_refund = refund(units("0.9"), 1000, remains);
    let alpha_balance = units("1000") - 2 * units("0.9") + alpha_refund;
    let balance_series = r#"panelgate_upstream_balance{currency="USD",upstream="alpha"}"#;
    for _ in 0..200 {
        let text = env
            .http
            .get(&format!("http://{}/metrics", env.gw().addr))
            .await
            .text();
        if samples(&text)
            .get(balance_series)
            .is_some_and(|v| is_amount(*v, alpha_balance))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // The same metrics on the main listener and on the metrics listener.
    let main = env
        .http
        .get(&format!("http://{}/metrics", env.gw().addr))
        .await;
    assert_eq!(main.status, 200);
    assert!(
        main.content_type
            .as_deref()
            .unwrap()
            .starts_with("text/plain")
    );
    let side = env
        .http
        .get(&format!(
            "http://{}/metrics",
            env.gw().metrics_addr.unwrap()
        ))
        .await;
    assert_eq!(side.status, 200);
    // The metrics listener does not serve the API.
    let api = env
        .http
        .form(
            &format!("http://{}/api/v2", env.gw().metrics_addr.unwrap()),
            &[("key", &key), ("action", "balance")],
        )
        .await;
    assert_eq!(api.status, 404);

    let text = main.text();
    let s = samples(&text);
    assert_eq!(
        get(&s, r#"panelgate_requests_total{action="add",outcome="ok"}"#),
        3.0
    );
    assert_eq!(
        get(
            &s,
            r#"panelgate_requests_total{action="add",outcome="quantity_limits"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            &s,
            r#"panelgate_requests_total{action="unknown",outcome="invalid_key"}"#
        ),
        1.0
    );
    assert_eq!(get(&s, "panelgate_rejected_keys_total"), 1.0);
    assert_eq!(
        get(
            &s,
            r#"panelgate_request_duration_seconds_count{action="add"}"#
        ),
        4.0
    );
    assert_eq!(
        get(&s, r#"panelgate_orders_placed_total{upstream="alpha"}"#),
        2.0
    );
    assert_eq!(
        get(&s, r#"panelgate_orders_placed_total{upstream="beta"}"#),
        1.0
    );
    assert_eq!(
        get(
            &s,
            r#"panelgate_upstream_requests_total{action="add",outcome="placed",upstream="alpha"}"#
        ),
        2.0
    );
    assert_eq!(get(&s, r#"panelgate_orders{state="final"}"#), 3.0);
    assert_eq!(get(&s, r#"panelgate_orders{state="unknown"}"#), 0.0);
    assert_eq!(get(&s, r#"panelgate_refunds_total{status="Partial"}"#), 1.0);
    assert_eq!(
        get(&s, r#"panelgate_refunds_total{status="Canceled"}"#),
        1.0
    );
    // Money in our currency: two orders at 1.125 at alpha; 100 × 3.3 / 1000 = 0.33 at beta.
    assert!((get(&s, r#"panelgate_revenue_total{upstream="alpha"}"#) - 2.25).abs() < 1e-9);
    assert!((get(&s, r#"panelgate_revenue_total{upstream="beta"}"#) - 0.33).abs() < 1e-9);
    let refunded = get(&s, r#"panelgate_refunded_amount_total{upstream="alpha"}"#);
    assert!(
        is_amount(refunded, refund(units("1.125"), 1000, remains)),
        "{refunded}"
    );
    // Our cost is what the upstreams kept: alpha 0.90 + (0.90 − its refund); beta nothing.
    let cost = get(&s, r#"panelgate_cost_total{upstream="alpha"}"#);
    assert!(is_amount(cost, 2 * units("0.9") - alpha_refund), "{cost}");
    assert_eq!(get(&s, r#"panelgate_cost_total{upstream="beta"}"#), 0.0);
    assert_eq!(
        get(&s, r#"panelgate_catalog_services{upstream="alpha"}"#),
        22.0
    );
    assert_eq!(
        get(&s, r#"panelgate_catalog_services{upstream="beta"}"#),
        3.0
    );
    assert!(get(&s, r#"panelgate_catalog_lookups_total{result="hit"}"#) >= 1.0);
    // Fetched at start and kept for the 5 minute TTL: its age is below that.
    let age = get(
        &s,
        r#"panelgate_catalog_list_age_seconds{upstream="alpha"}"#,
    );
    assert!((0.0..300.0).contains(&age), "{age}");
    // Exported from the first build on, for the operator to size catalog.ttl by.
    assert!(get(&s, "panelgate_catalog_build_seconds") >= 0.0);
    assert_eq!(
        get(&s, r#"panelgate_upstream_healthy{upstream="alpha"}"#),
        1.0
    );
    let balance = get(&s, balance_series);
    assert!(is_amount(balance, alpha_balance), "{balance}");
    assert_eq!(
        get(
            &s,
            &format!(
                r#"panelgate_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    // Bounded labels: no key, link or order id in any series.
    assert!(!text.contains(&key) && !text.contains(ALPHA_KEY) && !text.contains(BETA_KEY));
    assert!(!text.contains("https://"));
    promtool_accepts(&text);
}

#[tokio::test]
async fn health_and_readiness() {
    let mut env = Env::start(Options::default()).await;
    let key = env.client("ann", "100", "default").await;
    let h = env
        .http
        .get(&format!("http://{}/healthz", env.gw().addr))
        .await;
    assert_eq!((h.status, h.json()), (200, json!({"status": "ok"})));
    let r = env
        .http
        .get(&format!("http://{}/readyz", env.gw().addr))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["ready"], true);
    assert_eq!(body["database"], "ok");
    assert_eq!(body["catalog_services"], 25);
    assert_eq!(
        body["upstreams"],
        json!({"alpha": "healthy", "beta": "healthy"})
    );

    // Both upstreams go away; after a few failed calls each, the gateway is not ready.
    for sim in [&mut env.alpha, &mut env.beta] {
        let dead = std::mem::replace(
            sim,
            common::simulator(panelgate::sim::SimConfig::new("unused")).await,
        );
        dead.stop().await;
    }
    for service in ["1", "2201"] {
        for _ in 0..3 {
            let r = env
                .call(
                    &key,
                    &[
                        ("action", "add"),
                        ("service", service),
                        ("link", "x"),
                        ("quantity", "100"),
                    ],
                )
                .await;
            assert_eq!(
                r["error"],
                "Service is temporarily unavailable, please try again later"
            );
        }
    }
    let r = env
        .http
        .get(&format!("http://{}/readyz", env.gw().addr))
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    let body = r.json();
    assert_eq!(body["ready"], false);
    assert_eq!(body["problems"], json!(["no healthy upstream"]));
    assert_eq!(
        body["upstreams"],
        json!({"alpha": "unhealthy", "beta": "unhealthy"})
    );
    // Alive all the same.
    assert_eq!(
        env.http
            .get(&format!("http://{}/healthz", env.gw().addr))
            .await
            .status,
        200
    );
    env.assert_ledgers_balance().await;
}

/// The request lines of a JSON log, by their fields.
fn request_lines(logs: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter(|l| l.contains(r#""message":"request""#))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["fields"].clone())
        .collect()
}

/// The first request line of `action` that names `ids` and, if given, came to `outcome`.
fn line<'a>(
    lines: &'a [serde_json::Value],
    action: &str,
    outcome: Option<&str>,
    ids: &str,
) -> &'a serde_json::Value {
    lines
        .iter()
        .find(|l| {
            l["action"] == action
                && l["ids"] == ids
                && outcome.is_none_or(|outcome| l["outcome"] == outcome)
        })
        .unwrap_or_else(|| panic!("no {action} line for {ids} ({outcome:?}) in {lines:#?}"))
}

/// An operator follows an order through the request log: the lines of `status`, `refill`,
/// `refill_status` and `cancel` name the ids asked about (the first five, and how many), also
/// when a rate limit or a bad key refused the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_lines_name_the_ids_asked_about_even_when_refused() {
    let dir = common::gw::Scratch::new("log-ids");
    let config = dir.path("config.yaml");
    let port = common::free_port();
    let key = "ann-key-0123456789";
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:0\"\ndatabase: \"sqlite://gw.db\"\nconfig_poll: 0s\nlimits:\n  per_client: {{ per_second: 1, burst: 5 }}\n  per_client_reads: {{ per_second: 1, burst: 5 }}\nupstreams:\n  - name: up\n    url: \"http://127.0.0.1:{port}/api/v2\"\n    key: up-key-123\n    simulate: {{ speed: 100000, partial_share: 0, cancel_share: 0 }}\nservices:\n  - id: 1\n    upstream: up\n    service: 101\n    markup: {{ percent: 25 }}\nclients:\n  - name: ann\n    key: {key}\n    balance: \"10\"\n"
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_panelgate"));
    command
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&config);
    let server = common::Spawned::start(command);
    let http = common::Http::default();
    let call = |pairs: Vec<(&'static str, String)>| {
        let (http, url) = (http.clone(), server.url.clone());
        async move {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http.form(&url, &pairs).await
        }
    };
    let k = || ("key", key.to_owned());
    let add = call(vec![
        k(),
        ("action", "add".into()),
        ("service", "1".into()),
        ("link", "https://i.com/a".into()),
        ("quantity", "100".into()),
    ])
    .await
    .json();
    let order = add["order"].to_string();
    let many = format!("{order},91,92,93,94,95,96");
    call(vec![
        k(),
        ("action", "status".into()),
        ("order", order.clone()),
    ])
    .await;
    call(vec![
        k(),
        ("action", "status".into()),
        ("orders", many.clone()),
    ])
    .await;
    call(vec![
        k(),
        ("action", "refill".into()),
        ("order", order.clone()),
    ])
    .await;
    call(vec![
        k(),
        ("action", "refill_status".into()),
        ("refill", "77".into()),
    ])
    .await;
    call(vec![
        k(),
        ("action", "cancel".into()),
        ("orders", format!("{order},93")),
    ])
    .await;
    let wrong = ("key", format!("{key}x"));
    let r = call(vec![
        wrong,
        ("action", "status".into()),
        ("order", order.clone()),
    ])
    .await;
    assert_eq!(r.error(), "Invalid API key");
    // Over the limits: reads (an id never seen), then writes.
    for (action, asked) in [("status", "999"), ("refill", order.as_str())] {
        let mut refused = false;
        for _ in 0..20 {
            let pairs = vec![k(), ("action", action.into()), ("order", asked.to_owned())];
            if call(pairs).await.status == 429 {
                refused = true;
                break;
            }
        }
        assert!(refused, "{action} was never refused");
    }
    let logs = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(!logs.contains(key), "the key was logged");
    let lines = request_lines(&logs);
    let one = line(&lines, "status", Some("ok"), &order);
    assert_eq!(
        (&one["ids_total"], &one["client"]),
        (&json!(1), &json!("ann"))
    );
    let first_five = format!("{order},91,92,93,94");
    assert_eq!(
        line(&lines, "status", Some("ok"), &first_five)["ids_total"],
        7
    );
    assert_eq!(line(&lines, "refill", None, &order)["ids_total"], 1);
    line(&lines, "refill_status", Some("incorrect_id"), "77");
    let cancel = line(&lines, "cancel", Some("ok"), &format!("{order},93"));
    assert_eq!(cancel["ids_total"], 2);
    let bad_key = line(&lines, "status", Some("invalid_key"), &order);
    assert_eq!(bad_key["client"], "-");
    line(&lines, "status", Some("rate_limited"), "999");
    line(&lines, "refill", Some("rate_limited"), &order);
    // Requests without ids say so.
    assert_eq!(line(&lines, "add", Some("placed"), "-")["ids_total"], 0);
}
