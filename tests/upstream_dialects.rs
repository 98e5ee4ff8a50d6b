//! Upstreams that answer `add` in other shapes, and proxies in front of them: what each reply
//! means for the order and the money (the table in `src/upstream/mod.rs` and
//! docs/operations.md, "What an `add` reply means"), played over real sockets by simulators
//! speaking each dialect.

mod common;

use std::process::Command;

use common::Http;
use common::gw::{ALPHA_KEY, Env, Options, Scratch, alpha_config, beta_config, config_text, dec};
use panelgate::sim::Dialect;
use panelgate::store::OrderState;
use serde_json::{Value, json};

const UNAVAILABLE: &str = "Service is temporarily unavailable, please try again later";

/// The usual two-upstream gateway, with `alpha` speaking `dialect`.
async fn env_with(dialect: Dialect) -> Env {
    let o = Options::default();
    let dir = Scratch::new("dialects");
    let mut alpha_cfg = alpha_config(&dir.0, o.alpha_speed);
    alpha_cfg.dialect = dialect;
    let alpha = common::simulator(alpha_cfg).await;
    let beta = common::simulator(beta_config(&dir.0)).await;
    let config_path = dir.path("config.yaml");
    std::fs::write(
        &config_path,
        config_text(&dir.0, &alpha.url(), &beta.url(), &o),
    )
    .unwrap();
    let mut env = Env {
        dir,
        alpha,
        beta,
        gw: None,
        config_path,
        http: Http::default(),
    };
    env.start_gateway().await;
    env
}

async fn add_reply(env: &Env, key: &str, service: &str, link: &str) -> Value {
    env.call(
        key,
        &[
            ("action", "add"),
            ("service", service),
            ("link", link),
            ("quantity", "100"),
        ],
    )
    .await
}

async fn sim_requests(env: &Env, action: &str) -> u64 {
    let state = env
        .http
        .get(&format!(
            "http://{}/_sim/state?key={ALPHA_KEY}",
            env.alpha.addr
        ))
        .await
        .json();
    state["requests"][action].as_u64().unwrap_or(0)
}

/// Issue 13.3: a 504 with a JSON error body from a proxy, after the panel created the order.
#[tokio::test]
async fn a_504_after_the_order_was_created_holds_it_and_never_sends_it_elsewhere() {
    let env = env_with(Dialect::Standard).await;
    let key = env.client("ann", "10", "default").await;
    env.set_faults(
        &env.alpha,
        ALPHA_KEY,
        json!({"http504": 1, "actions": ["add"]}),
    )
    .await;
    // Service 2 has a fallback at beta: a 5xx is not a refusal, so it is not used.
    let id = env
        .add(
            &key,
            "2",
            &[("link", "https://i.com/504"), ("quantity", "100")],
        )
        .await;
    let o = env.order(id).await;
    assert_eq!(
        (o.state, o.upstream.as_str()),
        (OrderState::Unknown, "alpha")
    );
    assert!(
        o.note.as_deref().unwrap_or("").contains("HTTP 504"),
        "{:?}",
        o.note
    );
    assert_eq!(env.status(&key, id).await["status"], "Pending");
    assert_eq!(env.balance(&key).await, dec("10") - dec("0.05625"));
    // Exactly one order upstream, sent once, and none at the fallback.
    assert_eq!(env.journal("alpha").len(), 1);
    assert_eq!(sim_requests(&env, "add").await, 1);
    assert!(env.journal("beta").is_empty());
    env.assert_ledgers_balance().await;
}

/// Issue 13.3: an HTML 403 page (a firewall) is a refusal: nothing was placed, so the
/// fallback may take the order.
#[tokio::test]
async fn an_html_403_is_a_refusal_and_the_fallback_takes_the_order() {
    let env = env_with(Dialect::Standard).await;
    let key = env.client("ann", "10", "default").await;
    env.set_faults(
        &env.alpha,
        ALPHA_KEY,
        json!({"http403": 1, "actions": ["add"]}),
    )
    .await;
    let id = env
        .add(
            &key,
            "2",
            &[("link", "https://i.com/403"), ("quantity", "100")],
        )
        .await;
    let o = env.order(id).await;
    assert_eq!((o.state, o.upstream.as_str()), (OrderState::Placed, "beta"));
    assert!(env.journal("alpha").is_empty());
    assert_eq!(env.journal("beta").len(), 1);

    // Without a fallback the refusal is the customer's error, and the money goes back.
    let r = add_reply(&env, &key, "1", "https://i.com/403b").await;
    assert_eq!(r["error"], UNAVAILABLE, "{r}");
    let rejected = env
        .orders()
        .await
        .into_iter()
        .find(|o| o.state == OrderState::Rejected)
        .expect("a rejected order");
    assert!(
        rejected.note.as_deref().unwrap_or("").contains("HTTP 403"),
        "{:?}",
        rejected.note
    );
    assert!(env.journal("alpha").is_empty());
    env.assert_ledgers_balance().await;
}

/// Issue 20.1: a PHP panel script. Its `{"status":"success","order":N}` is placed, its
/// `{"status":"error","message":…}` (HTTP 200, text/html) is a refusal, and its empty body
/// after creating the order is an unknown outcome.
#[tokio::test]
async fn a_panel_script_places_refuses_and_leaves_unknown_as_it_means() {
    let env = env_with(Dialect::PanelScript).await;
    let key = env.client("ann", "10", "default").await;
    // Its all-string services list without refill/cancel was read: service 1 is on sale.
    let placed = env
        .add(
            &key,
            "1",
            &[("link", "https://i.com/ok"), ("quantity", "100")],
        )
        .await;
    env.wait_status(&key, placed, &["Completed"]).await;
    let charge = dec("0.1125");

    env.set_faults(
        &env.alpha,
        ALPHA_KEY,
        json!({"error": 1, "error_text": "Invalid Interval in minutes", "actions": ["add"]}),
    )
    .await;
    let r = add_reply(&env, &key, "1", "https://i.com/refused").await;
    assert_eq!(r["error"], UNAVAILABLE, "{r}");
    assert_eq!(env.balance(&key).await, dec("10") - charge);

    env.set_faults(
        &env.alpha,
        ALPHA_KEY,
        json!({"empty": 1, "actions": ["add"]}),
    )
    .await;
    let unknown = env
        .add(
            &key,
            "1",
            &[("link", "https://i.com/empty"), ("quantity", "100")],
        )
        .await;
    let o = env.order(unknown).await;
    assert_eq!(o.state, OrderState::Unknown);
    assert_eq!(env.status(&key, unknown).await["status"], "Pending");
    assert_eq!(env.balance(&key).await, dec("10") - charge - charge);
    // It did create that one: two orders upstream, the refused one not among them.
    assert_eq!(env.journal("alpha").len(), 2);
    env.assert_ledgers_balance().await;
}

/// Issue 20.2: the family's refusal texts are classified, the customer gets the neutral or
/// mapped text, and the rejected order keeps the upstream's own words.
#[tokio::test]
async fn refusal_texts_are_kept_on_the_order_and_mapped_for_the_customer() {
    let env = env_with(Dialect::PanelScript).await;
    let key = env.client("ann", "10", "default").await;
    let cases = [
        (
            "API is Disable for this user or User Not Found!",
            UNAVAILABLE,
        ),
        ("Service ID does not exists", UNAVAILABLE),
        ("Quantity is required", UNAVAILABLE),
        ("This action is Invalid", UNAVAILABLE),
        (
            "Quantity must to be greater than or equal to minimum amount 150",
            "Quantity must to be greater than or equal to minimum amount 150",
        ),
        (
            "Quantity must to be less than or equal to maximum amount 50",
            "Quantity must to be less than or equal to maximum amount 50",
        ),
    ];
    for (i, (upstream_text, customer_text)) in cases.into_iter().enumerate() {
        env.set_faults(
            &env.alpha,
            ALPHA_KEY,
            json!({"error": 1, "error_text": upstream_text, "actions": ["add"]}),
        )
        .await;
        let link = format!("https://i.com/r{i}");
        let r = add_reply(&env, &key, "1", &link).await;
        assert_eq!(r["error"], customer_text, "{upstream_text}: {r}");
        let orders = env.orders().await;
        let o = orders
            .iter()
            .find(|o| o.link.as_deref() == Some(link.as_str()))
            .unwrap();
        assert_eq!(o.state, OrderState::Rejected);
        let note = o.note.as_deref().unwrap_or("");
        assert!(
            note.contains(&format!("alpha refused: {upstream_text}")),
            "{note}"
        );
    }
    assert_eq!(env.balance(&key).await, dec("10"));
    assert!(env.journal("alpha").is_empty());
    env.assert_ledgers_balance().await;
}

/// Issue 13.11: `add` answered with a one-element list.
#[tokio::test]
async fn a_one_element_list_reply_is_placed_and_synced() {
    let env = env_with(Dialect::List).await;
    let key = env.client("ann", "10", "default").await;
    let id = env
        .add(
            &key,
            "1",
            &[("link", "https://i.com/list"), ("quantity", "100")],
        )
        .await;
    let o = env.order(id).await;
    assert_eq!(o.state, OrderState::Placed);
    assert_eq!(
        o.upstream_order.as_deref(),
        env.journal("alpha")[0]["order"]
            .as_u64()
            .map(|n| n.to_string())
            .as_deref()
    );
    env.wait_status(&key, id, &["Completed"]).await;
    env.assert_ledgers_balance().await;
}

/// Issue 13.11: opaque upstream ids, placed and synced to Completed and to Partial with its
/// refund.
#[tokio::test]
async fn opaque_ids_are_placed_and_synced_to_completed_and_partial() {
    let env = env_with(Dialect::Opaque).await;
    let key = env.client("ann", "10", "default").await;
    let done = env
        .add(
            &key,
            "1",
            &[
                ("link", "https://i.com/a?sim-fate=complete"),
                ("quantity", "1000"),
            ],
        )
        .await;
    let partial = env
        .add(
            &key,
            "1",
            &[
                ("link", "https://i.com/b?sim-fate=partial"),
                ("quantity", "1000"),
            ],
        )
        .await;
    for id in [done, partial] {
        let o = env.order(id).await;
        assert_eq!(o.state, OrderState::Placed);
        assert!(
            o.upstream_order.as_deref().unwrap().starts_with("ord_01HG"),
            "{:?}",
            o.upstream_order
        );
    }
    env.wait_status(&key, done, &["Completed"]).await;
    let s = env.wait_status(&key, partial, &["Partial"]).await;
    let remains: u64 = s["remains"].as_str().unwrap().parse().unwrap();
    assert!(remains > 0 && remains < 1000, "{s}");
    let o = env
        .wait_order(partial, |o| o.state == OrderState::Final)
        .await;
    assert!(o.refunded > 0, "{o:?}");
    let charge = dec("1.125");
    assert_eq!(
        env.balance(&key).await,
        dec("10") - charge - charge + panelgate::money::from_units(o.refunded)
    );
    env.assert_ledgers_balance().await;
}

/// Issue 20.8: the upstream metric and the request log say what each `add` reply meant;
/// `rejected` stays as a deprecated alias of `refused`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_outcomes_are_counted_and_logged_by_what_the_reply_meant() {
    let dir = Scratch::new("add-outcomes");
    let config = dir.path("config.yaml");
    let write = |faults: &str| {
        std::fs::write(
            &config,
            format!(
                "listen: \"127.0.0.1:0\"\ndatabase: \"sqlite://gw.db\"\nconfig_poll: 0s\nupstreams:\n  - name: up\n    url: \"http://127.0.0.1:{}/api/v2\"\n    key: up-key-123\n    simulate: {{ speed: 100000, dialect: panel_script{faults} }}\nservices:\n  - id: 1\n    upstream: up\n    service: 101\n    markup: {{ percent: 25 }}\nclients:\n  - name: ann\n    key: ann-key-0123456789\n    balance: \"10\"\n",
                common::free_port()
            ),
        )
        .unwrap();
    };
    let http = Http::default();
    let mut lines = String::new();
    let mut metrics = String::new();
    // One gateway per fault setting: a simulated upstream's faults are fixed by its config.
    for (faults, want) in [
        ("", "placed"),
        (
            ", faults: { error: 1, error_text: \"This action is Invalid\", actions: [add] }",
            "refused",
        ),
        (", faults: { empty: 1, actions: [add] }", "unknown"),
    ] {
        write(faults);
        let mut command = Command::new(env!("CARGO_BIN_EXE_panelgate"));
        command
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&config);
        let server = common::Spawned::start(command);
        let r = http
            .form(
                &server.url,
                &[
                    ("key", "ann-key-0123456789"),
                    ("action", "add"),
                    ("service", "1"),
                    ("link", "https://i.com/m"),
                    ("quantity", "100"),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "{want}");
        let base = server.url.trim_end_matches("/api/v2");
        metrics = http.get(&format!("{base}/metrics")).await.text();
        let series = format!(
            r#"panelgate_upstream_requests_total{{action="add",outcome="{want}",upstream="up"}} 1"#
        );
        assert!(metrics.contains(&series), "{want}:\n{metrics}");
        // The request line is logged before the reply is sent, and flushed at exit.
        let logs = server.terminate();
        let request = logs
            .lines()
            .find(|l| l.contains(r#""message":"request""#) && l.contains(r#""action":"add""#))
            .unwrap_or_else(|| panic!("no request line:\n{logs}"))
            .to_owned();
        assert!(
            request.contains(&format!(r#""outcome":"{want}""#)),
            "{request}"
        );
        lines.push_str(&request);
    }
    // An unknown add is no longer an `ok` call.
    assert!(
        !metrics.contains(r#"panelgate_upstream_requests_total{action="add",outcome="ok""#),
        "{metrics}"
    );
    assert!(!lines.contains(r#""outcome":"ok""#), "{lines}");
}

/// The deprecated `rejected` label is still counted beside `refused`.
#[tokio::test]
async fn rejected_stays_a_deprecated_alias_of_refused() {
    let env = env_with(Dialect::Standard).await;
    let key = env.client("ann", "10", "default").await;
    env.set_faults(
        &env.alpha,
        ALPHA_KEY,
        json!({"error": 1, "error_text": "Incorrect service ID", "actions": ["add"]}),
    )
    .await;
    let r = add_reply(&env, &key, "1", "https://i.com/x").await;
    assert_eq!(r["error"], UNAVAILABLE);
    let text = env
        .http
        .get(&format!("http://{}/metrics", env.gw().addr))
        .await
        .text();
    for outcome in ["refused", "rejected"] {
        let series = format!(
            r#"panelgate_upstream_requests_total{{action="add",outcome="{outcome}",upstream="alpha"}} 1"#
        );
        assert!(text.contains(&series), "{outcome}:\n{text}");
    }
}
