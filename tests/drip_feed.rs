//! Drip-feed orders over real sockets against the simulated panel (both stores:
//! `PANELGATE_TEST_BACKEND=postgres` runs them on PostgreSQL).
//!
//! Panel software reads `runs` from a drip-feed order's status; without it one refunded its
//! user a Partial drip-feed in full. Local service 1 sells alpha's 101 (0.90 per 1000, drip-feed
//! allowed) at 1.125 per 1000. Link markers choose how the simulator ends and reports an order
//! (`sim-fate=partial`, `sim-delivered=N`, `sim-runs=none`).

mod common;

use common::gw::{Env, Options, dec, money};
use serde_json::Value;

/// 4 runs of 100 every 30 minutes: 400 units at 1.125 per 1000 = 0.45000.
const DRIP: [(&str, &str); 3] = [("quantity", "100"), ("runs", "4"), ("interval", "30")];

async fn drip_order(env: &Env, key: &str, link: &str) -> u64 {
    let mut fields = vec![("link", link)];
    fields.extend_from_slice(&DRIP);
    env.add(key, "1", &fields).await
}

fn keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

async fn multi_status(env: &Env, key: &str, ids: &[u64]) -> Value {
    let list: Vec<String> = ids.iter().map(u64::to_string).collect();
    env.call(key, &[("action", "status"), ("orders", &list.join(","))])
        .await
}

#[tokio::test]
async fn a_drip_feed_partial_answers_runs_and_interval_and_is_refunded_per_unit() {
    let env = Env::start(Options::default()).await;
    let key = env.client("ann", "10", "default").await;
    // 193 of the 400 units delivered, as in the panel owner's report.
    let drip = drip_order(
        &env,
        &key,
        "https://ig.com/a?sim-fate=partial&sim-delivered=193",
    )
    .await;
    // The same units without drip-feed: the reply keeps its usual shape.
    let plain = env
        .add(
            &key,
            "1",
            &[
                (
                    "link",
                    "https://ig.com/b?sim-fate=partial&sim-delivered=193",
                ),
                ("quantity", "400"),
            ],
        )
        .await;
    let o = env.wait_final(drip).await;
    env.wait_final(plain).await;

    // Alpha said how many runs were done; that figure is the one kept.
    let theirs = env.alpha_status(&o).await;
    assert_eq!(
        (&theirs["runs"], &theirs["interval"]),
        (&"1".into(), &"30".into())
    );
    assert_eq!(o.runs_done, Some(1));

    // Charged 0.45000 for 400 units; 207 undelivered: 0.45 × 207 / 400 = 0.232875, rounded
    // down to 0.23287 back; 0.45 − 0.23287 = 0.21713 stays charged.
    assert_eq!(o.refunded, 23_287);
    let s = env.status(&key, drip).await;
    assert_eq!(
        keys(&s),
        [
            "charge",
            "currency",
            "interval",
            "remains",
            "runs",
            "start_count",
            "status"
        ]
    );
    assert_eq!(s["status"], "Partial");
    assert_eq!(money(&s["charge"]), dec("0.21713"));
    assert_eq!(
        (&s["remains"], &s["runs"], &s["interval"]),
        (&"207".into(), &"1".into(), &"30".into())
    );

    let p = env.status(&key, plain).await;
    assert_eq!(
        keys(&p),
        ["charge", "currency", "remains", "start_count", "status"]
    );
    assert_eq!(
        (money(&p["charge"]), &p["remains"]),
        (dec("0.21713"), &"207".into())
    );

    // The multi form answers the same, each order as its own single reply.
    let m = multi_status(&env, &key, &[drip, plain]).await;
    assert_eq!(m[drip.to_string()], s);
    assert_eq!(m[plain.to_string()], p);

    // 10 − 2 × 0.45 + 2 × 0.23287.
    assert_eq!(env.balance(&key).await, dec("9.56574"));
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn runs_are_derived_from_the_delivered_units_when_the_upstream_omits_them() {
    let env = Env::start(Options::default()).await;
    let key = env.client("bob", "10", "default").await;
    let ended = "https://ig.com/c?sim-fate=partial&sim-delivered=250&sim-runs=none";
    let ended = drip_order(&env, &key, ended).await;
    let waiting = drip_order(
        &env,
        &key,
        "https://ig.com/d?sim-fate=pending&sim-runs=none",
    )
    .await;
    let o = env.wait_final(ended).await;
    assert_eq!(env.alpha_status(&o).await.get("runs"), None);
    assert_eq!(o.runs_done, None);

    // 250 of 400 delivered: two whole runs of 100. Refund 0.45 × 150 / 400 = 0.16875 exactly;
    // 0.45 − 0.16875 = 0.28125 stays charged.
    assert_eq!(o.refunded, 16_875);
    let s = env.status(&key, ended).await;
    assert_eq!(
        (&s["status"], &s["remains"], &s["runs"], &s["interval"]),
        (&"Partial".into(), &"150".into(), &"2".into(), &"30".into())
    );
    assert_eq!(money(&s["charge"]), dec("0.28125"));

    // Not started: nothing delivered, no run done.
    let w = env.wait_status(&key, waiting, &["Pending"]).await;
    assert_eq!(
        (&w["remains"], &w["runs"], &w["interval"]),
        (&"400".into(), &"0".into(), &"30".into())
    );
    let m = multi_status(&env, &key, &[waiting, ended]).await;
    assert_eq!(
        (
            &m[waiting.to_string()]["runs"],
            &m[ended.to_string()]["runs"]
        ),
        (&"0".into(), &"2".into())
    );
    assert_eq!(m[ended.to_string()], s);

    // 10 − 2 × 0.45 + 0.16875.
    assert_eq!(env.balance(&key).await, dec("9.26875"));
    env.assert_ledgers_balance().await;
}
