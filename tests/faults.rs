//! Flaky upstreams, played by the simulator's fault injection: slow, HTTP 500, garbage, down.
//! Money is held where an order's fate is unknown, nothing is ever sent twice, and a dead
//! upstream costs one fast error.

mod common;

use std::time::Duration;

use common::gw::{ALPHA_KEY, Env, Options, dec};
use common::skip;
use panelgate::store::OrderState;
use serde_json::json;

async fn breaker_state(env: &Env, upstream: &str) -> f64 {
    let text = env
        .http
        .get(&format!("http://{}/metrics", env.gw().addr))
        .await
        .text();
    let series = format!(r#"panelgate_upstream_breaker_state{{upstream="{upstream}"}} "#);
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("{series}not exported:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{series}is not a number: {e}"))
}

#[tokio::test]
async fn a_slow_upstream_times_out_into_a_held_order_that_is_never_resent() {
    let env = Env::start(Options {
        upstream_timeout: "300ms",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "10", "default").await;
    env.set_faults(
        &env.alpha,
        ALPHA_KEY,
        json!({"slow": 1, "slow_ms": 1000, "actions": ["add"]}),
    )
    .await;
    // Service 2 has a fallback at beta: a timeout is not a definite failure, so it is not used.
    let id = env
        .add(
            &key,
            "2",
            &[("link", "https://i.com/slow"), ("quantity", "100")],
        )
        .await;
    let o = env.order(id).await;
    assert_eq!(
        (o.state, o.upstream.as_str()),
        (OrderState::Unknown, "alpha")
    );
    assert_eq!(env.status(&key, id).await["status"], "Pending");
    assert_eq!(env.balance(&key).await, dec("10") - dec("0.05625"));
    // The upstream did create it, later; it was sent exactly once and never elsewhere.
    for _ in 0..100 {
        if !env.journal("alpha").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.journal("alpha").len(), 1);
    assert!(env.journal("beta").is_empty());
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn statuses_survive_slow_broken_and_garbled_upstreams() {
    let env = Env::start(Options {
        upstream_timeout: "300ms",
        sync_interval: "1h",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "10", "default").await;
    let id = env
        .add(
            &key,
            "1",
            &[("link", "https://i.com/a"), ("quantity", "100")],
        )
        .await;
    let first = env.status(&key, id).await;
    assert_eq!(first["status"], "Completed");
    for faults in [
        json!({"slow": 1, "slow_ms": 1000, "actions": ["status"]}),
        json!({"http500": 1, "actions": ["status"]}),
        json!({"garbage": 1, "actions": ["status"]}),
    ] {
        env.set_faults(&env.alpha, ALPHA_KEY, faults.clone()).await;
        // status_max_age is 0: every call asks upstream, fails, and answers from the ledger.
        assert_eq!(env.status(&key, id).await, first, "{faults}");
    }
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn a_broken_reply_to_add_is_an_unknown_outcome() {
    let env = Env::start(Options::default()).await;
    let key = env.client("ann", "10", "default").await;
    for faults in [
        json!({"http500": 1, "actions": ["add"]}),
        json!({"garbage": 1, "actions": ["add"]}),
    ] {
        env.set_faults(&env.alpha, ALPHA_KEY, faults.clone()).await;
        let id = env
            .add(
                &key,
                "2",
                &[("link", "https://i.com/x"), ("quantity", "100")],
            )
            .await;
        let o = env.order(id).await;
        assert_eq!(
            (o.state, o.upstream.as_str()),
            (OrderState::Unknown, "alpha"),
            "{faults}"
        );
    }
    // Neither was resent anywhere; both hold their money until the operator resolves them.
    assert!(env.journal("beta").is_empty());
    assert_eq!(
        env.balance(&key).await,
        dec("10") - dec("0.05625") * dec("2")
    );
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn a_dead_upstream_opens_its_breaker_and_recovers_when_it_returns() {
    let mut env = Env::start(Options::default()).await;
    // A cooldown long enough to look at the open breaker with alpha back up.
    env.stop_gateway().await;
    let config = std::fs::read_to_string(&env.config_path).unwrap();
    let alpha_breaker = "breaker: { failures: 3, cooldown: 300ms }";
    assert!(config.contains(alpha_breaker));
    std::fs::write(
        &env.config_path,
        config.replacen(alpha_breaker, "breaker: { failures: 3, cooldown: 2s }", 1),
    )
    .unwrap();
    env.start_gateway().await;
    let key = env.client("ann", "10", "default").await;
    let addr = env.alpha.addr;
    let alpha = std::mem::replace(
        &mut env.alpha,
        common::simulator(panelgate::sim::SimConfig::new("unused")).await,
    );
    alpha.stop().await;
    let add_1 = [
        ("action", "add"),
        ("service", "1"),
        ("link", "x"),
        ("quantity", "100"),
    ];
    // Three refused connections open the breaker (failures: 3 in the test config).
    for _ in 0..3 {
        assert_eq!(
            env.call(&key, &add_1).await["error"],
            "Service is temporarily unavailable, please try again later"
        );
    }
    assert_eq!(breaker_state(&env, "alpha").await, 2.0);
    // alpha is back, but the breaker is open: orders fail without reaching it; fallbacks
    // still serve.
    env.alpha = panelgate::sim::start(common::gw::alpha_config(&env.dir.0, 100_000.0), addr)
        .await
        .unwrap();
    assert_eq!(
        env.call(&key, &add_1).await["error"],
        "Service is temporarily unavailable, please try again later"
    );
    assert_eq!(
        alpha_requests(&env).await,
        0,
        "the open breaker let a call out"
    );
    let id = env
        .add(
            &key,
            "2",
            &[("link", "https://i.com/f"), ("quantity", "100")],
        )
        .await;
    assert_eq!(env.order(id).await.upstream, "beta");
    // The catalog keeps selling alpha's services from the last good list.
    let list = env.call(&key, &[("action", "services")]).await;
    assert!(list.as_array().unwrap().iter().any(|s| s["service"] == 1));
    // After the cooldown a probe closes the breaker.
    skip(Duration::from_secs(2)).await;
    let back = [("link", "https://i.com/back"), ("quantity", "100")];
    let placed = env.add(&key, "1", &back).await;
    assert_eq!(env.order(placed).await.state, OrderState::Placed);
    assert_eq!(breaker_state(&env, "alpha").await, 0.0);
    assert_eq!(
        alpha_requests(&env).await,
        1,
        "only the probe reached alpha"
    );
    // Every refused order gave its money back: 10 less the two placed, 100 units each at
    // 0.5625 (service 2, at beta) and 1.125 (service 1) per 1000.
    assert_eq!(
        env.call(&key, &[("action", "balance")]).await["balance"],
        "9.83125"
    );
    env.assert_ledgers_balance().await;
}

/// `add` requests that reached alpha.
async fn alpha_requests(env: &Env) -> u64 {
    let state = env
        .http
        .get(&format!(
            "http://{}/_sim/state?key={ALPHA_KEY}",
            env.alpha.addr
        ))
        .await
        .json();
    state["requests"]["add"].as_u64().unwrap_or(0)
}
