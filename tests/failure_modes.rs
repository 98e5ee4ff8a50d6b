//! Upstreams and databases failing in the ways real ones do, black-box over loopback: what the
//! customer is told, what money moved, and what the upstream was asked (its own count).

mod common;

use std::time::Duration;

use common::gw::{
    ALPHA_KEY, BETA_KEY, Env, Options, alpha_config, dec, replaced, sample, upstream_saw,
};
use panelgate::store::{Attention, OrderState};
use serde_json::{Value, json};

const INTERNAL: &str = "Internal error, please try again later";

/// A gateway that gives alpha half a second to answer and syncs only when told to.
async fn impatient() -> Env {
    impatient_at(100_000.0).await
}

/// The same, with alpha's clock running `speed` times real time.
async fn impatient_at(alpha_speed: f64) -> Env {
    Env::start(Options {
        sync_interval: "1h",
        upstream_timeout: "500ms",
        alpha_speed,
        ..Options::default()
    })
    .await
}

/// Alpha answers garbage to `action`, then (second element) acts and answers after its
/// timeout: the two ways a call's outcome stays unreadable.
fn broken(action: &str) -> [Value; 2] {
    [
        json!({"garbage": 1, "actions": [action]}),
        json!({"slow": 1, "slow_ms": 1500, "actions": [action]}),
    ]
}

#[tokio::test]
async fn a_cancel_the_upstream_garbles_or_times_out_refunds_only_what_sync_later_sees() {
    let env = impatient().await;
    let key = env.client("ann", "10", "default").await;
    let id = env
        .add(
            &key,
            "1",
            &[
                ("link", "https://i.com/c?sim-fate=pending"),
                ("quantity", "1000"),
            ],
        )
        .await;
    // 1000 at 1.125 per 1000.
    assert_eq!(env.balance(&key).await, dec("8.875"));
    for (n, faults) in broken("cancel").into_iter().enumerate() {
        env.set_faults(&env.alpha, ALPHA_KEY, faults).await;
        let r = env
            .call(&key, &[("action", "cancel"), ("orders", &id.to_string())])
            .await;
        assert!(r[0]["cancel"]["error"].is_string(), "{r}");
        assert_eq!(r[0]["order"], id, "{r}");
        // Sent once each time, never retried; nothing refunded on a reply nobody could read.
        assert_eq!(
            env.requests(&env.alpha, ALPHA_KEY, "cancel").await,
            n as u64 + 1
        );
        assert_eq!(env.balance(&key).await, dec("8.875"));
        assert_eq!(env.order(id).await.state, OrderState::Placed);
    }
    // The late one did cancel upstream: sync sees it and refunds the whole charge, once.
    env.set_faults(&env.alpha, ALPHA_KEY, json!({})).await;
    let gateway = env.gw().gateway();
    let syncer = &gateway.syncer;
    syncer.pass(Duration::from_secs(3600)).await;
    syncer.pass(Duration::from_secs(3600)).await;
    let o = env.wait_order(id, |o| o.state == OrderState::Final).await;
    assert_eq!((o.status.as_str(), o.refunded), ("Canceled", o.charge));
    assert_eq!(env.balance(&key).await, dec("10"));
    env.assert_ledgers_balance().await;
}

/// An order at alpha that sync has seen Completed, so that it may be refilled.
async fn completed_order(env: &Env, key: &str) -> u64 {
    let id = env
        .add(
            key,
            "1",
            &[("link", "https://i.com/r"), ("quantity", "100")],
        )
        .await;
    let gateway = env.gw().gateway();
    gateway.syncer.pass(Duration::from_secs(3600)).await;
    env.wait_status(key, id, &["Completed"]).await;
    id
}

#[tokio::test]
async fn a_refill_the_upstream_garbles_or_times_out_is_an_error_and_sent_once() {
    let env = impatient().await;
    let key = env.client("ann", "10", "default").await;
    let id = completed_order(&env, &key).await;
    for (n, faults) in broken("refill").into_iter().enumerate() {
        env.set_faults(&env.alpha, ALPHA_KEY, faults).await;
        let r = env
            .call(&key, &[("action", "refill"), ("order", &id.to_string())])
            .await;
        assert!(r["error"].is_string() && r.get("refill").is_none(), "{r}");
        assert_eq!(
            env.requests(&env.alpha, ALPHA_KEY, "refill").await,
            n as u64 + 1
        );
    }
    // No refill was recorded for the customer to ask after.
    let r = env
        .call(&key, &[("action", "refill_status"), ("refill", "1")])
        .await;
    assert_eq!(r["error"], "Refill not found", "{r}");
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn a_refill_status_the_upstream_garbles_or_times_out_keeps_the_last_known_one() {
    // At 50× an order is done within 1.3 s and a refill runs at least 240 ms: long enough
    // to be asked about while unfinished.
    let env = impatient_at(50.0).await;
    let key = env.client("ann", "10", "default").await;
    let id = completed_order(&env, &key).await;
    let refill = env
        .call(&key, &[("action", "refill"), ("order", &id.to_string())])
        .await;
    let refill = refill["refill"]
        .as_str()
        .unwrap_or_else(|| panic!("a refill id: {refill}"))
        .to_owned();
    let before = env
        .call(&key, &[("action", "refill_status"), ("refill", &refill)])
        .await;
    assert!(
        matches!(before["status"].as_str(), Some("Pending" | "In progress")),
        "{before}"
    );
    // refill_status is safe to repeat: a reply that came but cannot be read is final, a
    // time-out is tried again (the default 2 retries; alpha's breaker allows all three).
    for (faults, attempts) in broken("refill_status").into_iter().zip([1, 3]) {
        env.set_faults(&env.alpha, ALPHA_KEY, faults).await;
        let asked = env.requests(&env.alpha, ALPHA_KEY, "refill_status").await;
        let r = env
            .call(&key, &[("action", "refill_status"), ("refill", &refill)])
            .await;
        assert_eq!(r, before);
        assert_eq!(
            env.requests(&env.alpha, ALPHA_KEY, "refill_status").await - asked,
            attempts
        );
    }
}

#[tokio::test]
async fn an_order_the_upstream_loses_stays_charged_and_is_shown_to_the_operator() {
    let mut env = Env::tuned_with(
        Options {
            sync_interval: "50ms",
            ..Options::default()
        },
        |_, _| {},
        // Claims of a lost order's status expire quickly, so that it is asked about again.
        |t| replaced(t, "sync:\n", "sync:\n  stuck_after: 1s\n  lease: 200ms\n"),
    )
    .await;
    let key = env.client("ann", "10", "default").await;
    let id = env
        .add(
            &key,
            "1",
            &[
                ("link", "https://i.com/l?sim-fate=hold"),
                ("quantity", "1000"),
            ],
        )
        .await;
    env.wait_status(&key, id, &["In progress"]).await;
    // alpha comes back from a restore without the order: "Incorrect order ID" for it.
    let addr = restore_alpha(&mut env).await;
    // Two status calls: the answer to the first has been read.
    upstream_saw(&env.http, addr, ALPHA_KEY, "status", 2).await;
    let o = env
        .wait_order(id, |o| o.attention == Some(Attention::Stuck))
        .await;
    assert_eq!((o.state, o.refunded), (OrderState::Placed, 0));
    // Never placed again, never refunded on the upstream's say-so; the customer sees the last
    // status the upstream gave.
    assert_eq!(env.requests(&env.alpha, ALPHA_KEY, "add").await, 0);
    assert_eq!(env.status(&key, id).await["status"], "In progress");
    assert_eq!(env.balance(&key).await, dec("8.875"));
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn an_upstream_without_a_list_at_start_sells_nothing_until_it_answers() {
    let mut env = Env::prepare(
        Options::default(),
        |_, b| {
            b.faults =
                serde_json::from_value(json!({"garbage": 1, "actions": ["services"]})).unwrap();
        },
        |t| t,
    )
    .await;
    env.start_gateway().await;
    let metrics = env.metrics().await;
    let refreshes = |outcome: &str| {
        format!(r#"panelgate_catalog_refreshes_total{{outcome="{outcome}",upstream="beta"}}"#)
    };
    assert_eq!(
        sample(&metrics, &refreshes("error")),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, &refreshes("ok")), None, "{metrics}");
    let ready = env
        .http
        .get(&format!("http://{}/readyz", env.gw().addr))
        .await;
    assert_eq!(ready.status, 200, "alpha still sells: {}", ready.text());
    let key = env.client("ann", "10", "default").await;
    let sold = |list: Value| -> Vec<u64> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|s| s["service"].as_u64().unwrap())
            .collect()
    };
    let list = sold(env.call(&key, &[("action", "services")]).await);
    assert!(list.contains(&1101) && !list.contains(&2201), "{list:?}");
    let r = try_add(&env, &key, "2201").await;
    assert_eq!(r["error"], "Incorrect service ID", "{r}");
    assert_eq!(env.requests(&env.beta, BETA_KEY, "add").await, 0);
    assert_eq!(env.balance(&key).await, dec("10"));
    // beta answers again: the next request that reads the catalog asks it and sells its list.
    env.set_faults(&env.beta, BETA_KEY, json!({})).await;
    let list = sold(env.call(&key, &[("action", "services")]).await);
    assert!(list.contains(&2201), "{list:?}");
    env.add(
        &key,
        "2201",
        &[("link", "https://i.com/b"), ("quantity", "100")],
    )
    .await;
    assert_eq!(env.requests(&env.beta, BETA_KEY, "add").await, 1);
}

/// alpha replaced by a fresh simulator on the same address, as a panel restored from a backup
/// that has none of its orders and numbers new ones from 1 again; returns the address.
async fn restore_alpha(env: &mut Env) -> std::net::SocketAddr {
    let addr = env.alpha.addr;
    let old = std::mem::replace(
        &mut env.alpha,
        common::simulator(common::fast_config()).await,
    );
    old.stop().await;
    env.alpha = panelgate::sim::start(alpha_config(&env.dir.0, 100_000.0), addr)
        .await
        .unwrap();
    addr
}

#[tokio::test]
async fn an_upstream_that_reuses_an_order_id_leaves_the_new_order_to_the_operator() {
    let mut env = Env::start(Options::default()).await;
    let key = env.client("ann", "10", "default").await;
    let fields = [("link", "https://i.com/p"), ("quantity", "1000")];
    let first = env.add(&key, "1", &fields).await;
    let held = env.order(first).await.upstream_order.unwrap();
    // alpha is restored from a backup older than that order: it numbers its orders from 1 again.
    restore_alpha(&mut env).await;
    let second = env.add(&key, "1", &fields).await;
    let o = env
        .wait_order(second, |o| o.state != OrderState::Dispatching)
        .await;
    // Not retried forever as if the database were away: the operator's, funds held, with the
    // upstream's answer in the note.
    assert_eq!(o.state, OrderState::Unknown);
    assert_eq!(o.attention, Some(Attention::UnknownOutcome));
    let note = o.note.unwrap_or_default();
    assert!(
        note.contains(&format!("answered upstream order {held}")),
        "{note}"
    );
    assert_eq!(env.order(first).await.upstream_order, Some(held));
    assert_eq!(env.status(&key, second).await["status"], "Pending");
    assert_eq!(env.balance(&key).await, dec("7.75"));
    env.assert_ledgers_balance().await;
}

/// The suite's gateway with alpha answering every `add` with `faults`, and a customer with 10.
async fn adds_failing_with(faults: Value) -> (Env, String) {
    let env = Env::start(Options::default()).await;
    env.set_faults(&env.alpha, ALPHA_KEY, faults).await;
    let key = env.client("ann", "10", "default").await;
    (env, key)
}

/// An `add` of 1000 as the customer sends it, whatever the reply.
async fn try_add(env: &Env, key: &str, service: &str) -> Value {
    let pairs = [
        ("action", "add"),
        ("service", service),
        ("link", "https://i.com/f"),
        ("quantity", "1000"),
    ];
    env.call(key, &pairs).await
}

#[tokio::test]
async fn a_429_from_the_upstream_is_a_refusal_that_charges_nothing() {
    let (env, key) = adds_failing_with(json!({"http429": 1, "actions": ["add"]})).await;
    // Service 1 has no fallback: the customer is refused and keeps every cent.
    let r = try_add(&env, &key, "1").await;
    assert!(r["error"].is_string() && r.get("order").is_none(), "{r}");
    assert_eq!(env.balance(&key).await, dec("10"));
    assert_eq!(env.requests(&env.alpha, ALPHA_KEY, "add").await, 1);
    // Service 2 falls back to beta, which takes it: charged once, at our price (1000 of alpha
    // 102 at 0.45 + 25 % = 0.5625).
    let id = env
        .add(
            &key,
            "2",
            &[("link", "https://i.com/q2"), ("quantity", "1000")],
        )
        .await;
    assert_eq!(env.requests(&env.alpha, ALPHA_KEY, "add").await, 2);
    assert_eq!(env.requests(&env.beta, BETA_KEY, "add").await, 1);
    assert_eq!(env.order(id).await.upstream, "beta");
    assert_eq!(env.balance(&key).await, dec("9.4375"));
    let rejected = env
        .orders()
        .await
        .into_iter()
        .filter(|o| o.state == OrderState::Rejected)
        .count();
    assert_eq!(rejected, 1);
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn an_add_answered_500_is_never_sent_again() {
    let (env, key) = adds_failing_with(json!({"http500": 1, "actions": ["add"]})).await;
    // Service 2 has a fallback; a 5xx may hide a placed order, so it is not used either.
    let r = try_add(&env, &key, "2").await;
    let id = r["order"]
        .as_u64()
        .unwrap_or_else(|| panic!("held, with an id: {r}"));
    let o = env.order(id).await;
    assert_eq!(
        (o.state, o.attention),
        (OrderState::Unknown, Some(Attention::UnknownOutcome))
    );
    // The money stays held for the operator's decision.
    assert_eq!(env.balance(&key).await, dec("9.4375"));
    // Sync passes come and go; alpha was asked once, beta never.
    let gateway = env.gw().gateway();
    let syncer = &gateway.syncer;
    for _ in 0..3 {
        syncer.pass(Duration::from_secs(3600)).await;
        syncer.recover_abandoned().await;
    }
    assert_eq!(env.requests(&env.alpha, ALPHA_KEY, "add").await, 1);
    assert_eq!(env.requests(&env.beta, BETA_KEY, "add").await, 0);
    env.assert_ledgers_balance().await;
}

/// The server `PANELGATE_TEST_POSTGRES` names, if it answers; in CI it must.
fn postgres_server() -> Option<String> {
    let server = std::env::var("PANELGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let up = std::process::Command::new("psql")
        .arg(&server)
        .args(["-qAtc", "SELECT 1"])
        .output()
        .is_ok_and(|o| o.status.success());
    if up {
        return Some(server);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must reach PostgreSQL at {server} (PANELGATE_TEST_POSTGRES)"
    );
    eprintln!("skipped: no PostgreSQL at {server}; this test needs one");
    None
}

fn psql(server: &str, sql: &str) {
    let out = std::process::Command::new("psql")
        .arg(server)
        .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `/readyz` until it answers `status` (bounded); returns its body.
async fn readiness(env: &Env, status: u16) -> Value {
    let url = format!("http://{}/readyz", env.gw().addr);
    let mut last = None;
    for _ in 0..300 {
        let r = env.http.get(&url).await;
        if r.status == status {
            return r.json();
        }
        last = Some(r);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/readyz never answered {status}: {last:?}");
}

#[tokio::test]
async fn readyz_reports_a_database_that_stops_taking_connections_and_its_return() {
    // A database of this test's own on the shared server, closed to connections and opened
    // again: the server itself, which other tests use, keeps running.
    let Some(server) = postgres_server() else {
        return;
    };
    let name = format!("pgt_down_{}", std::process::id());
    psql(
        &server,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
    psql(&server, &format!("CREATE DATABASE {name}"));
    let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
    let url = format!("{base}/{name}");
    let mut env = Env::prepare(
        Options::default(),
        |_, _| {},
        |t| {
            let line = t
                .lines()
                .find(|l| l.starts_with("database:"))
                .unwrap()
                .to_owned();
            replaced(t, &line, &format!("database: \"{url}\""))
        },
    )
    .await;
    env.start_gateway().await;
    let key = env.client("ann", "10", "default").await;
    assert_eq!(readiness(&env, 200).await["database"], "ok");

    psql(
        &server,
        &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
    );
    psql(
        &server,
        &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"),
    );
    let down = readiness(&env, 503).await;
    assert!(
        down["database"].as_str().unwrap().starts_with("error"),
        "{down}"
    );
    // A customer is told to come back (HTTP 200, as every API error but 413 and 429);
    // nothing reaches an upstream meanwhile.
    let r = env
        .http
        .form(
            &env.url(),
            &[
                ("key", &key),
                ("action", "add"),
                ("service", "1"),
                ("link", "https://i.com/d"),
                ("quantity", "100"),
            ],
        )
        .await;
    assert_eq!((r.status, r.error()), (200, INTERNAL.to_owned()));
    assert_eq!(env.requests(&env.alpha, ALPHA_KEY, "add").await, 0);

    psql(
        &server,
        &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"),
    );
    assert_eq!(readiness(&env, 200).await["database"], "ok");
    env.add(
        &key,
        "1",
        &[("link", "https://i.com/d"), ("quantity", "100")],
    )
    .await;
    assert_eq!(env.requests(&env.alpha, ALPHA_KEY, "add").await, 1);
    env.stop_gateway().await;
    psql(
        &server,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
}
