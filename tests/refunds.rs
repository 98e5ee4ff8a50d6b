//! Refunds that never exceed what the upstream gave back, over real sockets against the
//! simulated panel (both stores: `PANELGATE_TEST_BACKEND=postgres` runs them on PostgreSQL).
//!
//! Local service 1 sells alpha's 101 (0.90 per 1000) at 1.125; local 1119 sells alpha's
//! package 119 (3.00) at 4.20. Link markers choose how the simulator ends and reports an
//! order (`sim-fate=partial`, `sim-charge=none`, `sim-remains=unknown`, `sim-refund=N`).

mod common;

use common::gw::{Env, Options, dec, money};
use common::reference::{refund, share, units, wire};
use common::skip;
use panelgate::admin;
use panelgate::store::{Attention, EntryKind, Order};
use serde_json::Value;

const PACKAGE: &str = "1119";

async fn place(env: &Env, key: &str, service: &str, link: &str) -> u64 {
    let mut fields = vec![("link", link)];
    if service != PACKAGE {
        fields.push(("quantity", "1000"));
    }
    env.add(key, service, &fields).await
}

/// What alpha itself charges for the order now, in 0.00001 units.
async fn upstream_units(env: &Env, o: &Order) -> i128 {
    units(env.alpha_status(o).await["charge"].as_str().unwrap())
}

/// The value of `series` once it is `wanted` (counted just after the store's commit, so a
/// scrape may come a moment early), or the last value seen.
async fn metric(env: &Env, series: &str, wanted: f64) -> Option<f64> {
    let url = format!("http://{}/metrics", env.gw().addr);
    let mut last = None;
    for _ in 0..100 {
        let text = env.http.get(&url).await.text();
        last = text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok());
        if last == Some(wanted) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    last
}

/// The status reply once it shows `charge`. A settlement is written by the operator's
/// command, as by another process: the gateway re-reads a waiting order once the row it holds
/// is no longer trusted, so the clock is moved past that.
async fn status_once_charged(env: &Env, key: &str, id: u64, charge: &str) -> Value {
    skip(panelgate::status_cache::TRUST).await;
    let s = env.status(key, id).await;
    assert_eq!(money(&s["charge"]), dec(charge), "order {id}: {s}");
    s
}

#[tokio::test]
async fn a_package_partial_refunds_the_share_the_upstream_gave_back() {
    let env = Env::start(Options::default()).await;
    let key = env.client("ann", "100", "default").await;
    let id = place(&env, &key, PACKAGE, "https://yt.com/v?sim-fate=partial").await;
    let o = env.wait_final(id).await;
    assert_eq!(o.status.as_str(), "Partial");
    // Alpha charged 3.00 and ends charging what it delivered; we give back the same share.
    let last = upstream_units(&env, &o).await;
    assert!(last > 0 && last < units("3"), "{last}");
    let refund = share(units("4.2"), units("3"), last);
    assert_eq!(i128::from(o.refunded), refund);
    assert!(refund > 0 && refund < units("4.2"));
    assert_eq!(o.attention, None);
    // The customer sees the net charge, and nothing left (not refunded in full).
    let s = env.status(&key, id).await;
    assert_eq!(s["status"], "Partial");
    assert_eq!(s["charge"], wire(units("4.2") - refund));
    assert_eq!(s["remains"], "0");
    assert_eq!(
        env.call(&key, &[("action", "balance")]).await["balance"],
        wire(units("100") - units("4.2") + refund)
    );
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn a_package_partial_without_a_usable_charge_refunds_nothing_until_settled() {
    let env = Env::start(Options::default()).await;
    let key = env.client("ann", "100", "default").await;
    let link = "https://yt.com/v?sim-fate=partial&sim-charge=none";
    let id = place(&env, &key, PACKAGE, link).await;
    let o = env.wait_final(id).await;
    assert_eq!((o.status.as_str(), o.refunded), ("Partial", 0));
    assert_eq!(o.attention, Some(Attention::RefundUnknown));
    let s = env.status(&key, id).await;
    assert_eq!(
        (&s["charge"], &s["remains"]),
        (&"4.20000".into(), &"0".into())
    );
    assert_eq!(env.balance(&key).await, dec("95.8"));
    // Counted, and shown to the operator.
    let withheld = r#"panelgate_refunds_withheld_total{reason="refund_unknown",upstream="alpha"}"#;
    assert_eq!(metric(&env, withheld, 1.0).await, Some(1.0));
    let listed = admin::list_orders(env.store(), None, None, None, Default::default())
        .await
        .unwrap();
    assert_eq!(admin::order_json(&listed[0])["attention"], "refund_unknown");

    // The operator settles it: capped, audited, once.
    let over = admin::settle(env.store(), id as i64, dec("4.20001"), "ops: ann").await;
    let why = over.unwrap_err().to_string();
    assert!(why.contains("above what is still refundable"), "{why}");
    admin::settle(env.store(), id as i64, dec("1"), "ops: ann, ticket 12")
        .await
        .unwrap();
    let again = admin::settle(env.store(), id as i64, dec("1"), "ops: ann").await;
    assert!(again.is_err());
    let o = env.order(id).await;
    assert_eq!((o.refunded, o.attention), (100_000, None));
    let entry = env.store().ledger(1).await.unwrap().pop().unwrap();
    assert_eq!(
        (entry.kind, entry.amount, entry.note.as_deref()),
        (
            EntryKind::Refund,
            100_000,
            Some("settled: ops: ann, ticket 12")
        )
    );
    let s = status_once_charged(&env, &key, id, "3.2").await;
    assert_eq!(s["remains"], "0");
    assert_eq!(env.balance(&key).await, dec("96.8"));
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn a_per_unit_partial_is_capped_by_the_share_the_upstream_gave_back() {
    let env = Env::start(Options::default()).await;
    let key = env.client("ann", "100", "default").await;
    // Alpha refunds only half of what its `remains` says.
    let link = "https://i.com/a?sim-fate=partial&sim-refund=50";
    let id = place(&env, &key, "1", link).await;
    let o = env.wait_final(id).await;
    let remains = o.remains.unwrap() as u64;
    let last = upstream_units(&env, &o).await;
    let by_remains = refund(units("1.125"), 1000, remains);
    let by_share = share(units("1.125"), units("0.9"), last);
    assert!(by_share < by_remains, "{by_share} vs {by_remains}");
    assert_eq!(i128::from(o.refunded), by_share);
    assert_eq!(o.attention, None);
    // `remains` shows what the refund paid for, so a panel refunding by it matches us.
    let s = env.status(&key, id).await;
    assert_eq!(s["charge"], wire(units("1.125") - by_share));
    let shown = by_share * 1000 / units("1.125");
    assert_eq!(s["remains"], shown.to_string());
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn a_partial_without_remains_shows_nothing_left_until_settled() {
    let env = Env::start(Options::default()).await;
    let key = env.client("ann", "100", "default").await;
    let link = "https://i.com/a?sim-fate=partial&sim-remains=unknown";
    let id = place(&env, &key, "1", link).await;
    let o = env.wait_final(id).await;
    assert_eq!(
        (o.status.as_str(), o.refunded, o.remains),
        ("Partial", 0, None)
    );
    assert_eq!(o.attention, Some(Attention::PartialWithoutRemains));
    // Nothing refunded, nothing shown as left: a panel refunding by `remains` matches us.
    let s = env.status(&key, id).await;
    assert_eq!(
        (&s["charge"], &s["remains"]),
        (&"1.12500".into(), &"0".into())
    );
    let withheld =
        r#"panelgate_refunds_withheld_total{reason="partial_without_remains",upstream="alpha"}"#;
    assert_eq!(metric(&env, withheld, 1.0).await, Some(1.0));

    admin::settle(
        env.store(),
        id as i64,
        dec("0.5"),
        "ops: half was delivered",
    )
    .await
    .unwrap();
    let s = status_once_charged(&env, &key, id, "0.625").await;
    assert_eq!(s["remains"], "444");
    assert_eq!(env.balance(&key).await, dec("100") - dec("0.625"));
    env.assert_ledgers_balance().await;
}

/// A polled batch is applied in one transaction; an order in it that cannot be applied (here
/// a refund already on its ledger) fails alone, and the others are applied and counted.
#[tokio::test]
async fn one_order_that_cannot_be_applied_does_not_hold_back_its_batch() {
    let env = Env::start(Options {
        sync_interval: "1h",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "100", "default").await;
    let link = "https://i.com/a?sim-fate=cancel";
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(place(&env, &key, "1", link).await);
    }
    let planted = ids[1];
    let customer = env.order(planted).await.customer_id;
    env.sql(&format!(
        "INSERT INTO ledger (customer_id, amount, kind, order_id, note, created_at) \
         VALUES ({customer}, 0, 'refund', {planted}, 'planted', 0)"
    ))
    .await;
    // Each `status` of the three asks alpha about all of them at once (nothing is fresh) and
    // applies its answers as one batch.
    let orders = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let asked = [("action", "status"), ("orders", orders.as_str())];
    let reply = env.call(&key, &asked).await;
    for _ in 0..100 {
        if env.order(ids[2]).await.state == panelgate::store::OrderState::Final {
            break;
        }
        env.call(&key, &asked).await;
    }
    for id in [ids[0], ids[2]] {
        let o = env.wait_final(id).await;
        assert_eq!((o.status.as_str(), o.refunded), ("Canceled", 112_500));
    }
    let stuck = env.order(planted).await;
    assert_eq!(
        (stuck.state.as_str(), stuck.refunded),
        ("placed", 0),
        "{reply}"
    );
    let canceled = r#"panelgate_refunds_total{status="Canceled"}"#;
    assert_eq!(env.metric(canceled).await, Some(2.0));
    let failed = r#"panelgate_store_errors_total{operation="apply_status"}"#;
    assert!(env.metric(failed).await >= Some(1.0));
    assert_eq!(env.balance(&key).await, dec("100") - dec("1.125"));
    env.assert_ledgers_balance().await;
}
