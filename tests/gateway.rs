//! The gateway, black-box over loopback, in front of two simulated upstreams with different
//! catalogs and currencies.

mod common;

use std::collections::HashSet;

use common::gw::{ALPHA_KEY, BETA_KEY, Env, Options, dec};
use common::reference::{refund, units, wire};
use common::skip;
use panelgate::store::OrderState;
use serde_json::{Value, json};

#[tokio::test]
async fn services_are_marked_up_exactly_per_price_group() {
    let env = Env::start(Options::default()).await;
    let key = env.client("ann", "10", "default").await;
    let vip = env.client("vic", "10", "vip").await;
    let list = env.call(&key, &[("action", "services")]).await;
    let list = list.as_array().unwrap();
    let find = |id: u64| list.iter().find(|s| s["service"] == id).cloned();
    // 0.90 at +25 % sells at 1.125: exact, no rounding unless a rule asks for it.
    assert_eq!(
        find(1).unwrap(),
        json!({"service":1,"name":"Instagram Followers [Real, 30 days refill]","type":"Default","category":"Instagram Followers",
               "rate":"1.125","min":"50","max":"10000","refill":true,"cancel":true,"dripfeed":true})
    );
    assert_eq!(find(1101).unwrap()["rate"], "1.26");
    assert_eq!(find(1103).unwrap()["rate"], "11.2");
    // Overrides: our name, a narrower minimum.
    assert_eq!(find(3).unwrap()["name"], "TikTok Followers [our best]");
    assert_eq!(find(3).unwrap()["min"], "200");
    // beta: 2.00 EUR × 1.1 (fx) × 1.5 = 3.3 USD, rounded up to 0.01; 0.40 × 1.1 × 1.5 = 0.66.
    assert_eq!(find(2201).unwrap()["rate"], "3.3");
    assert_eq!(find(2202).unwrap()["rate"], "0.66");
    assert_eq!(find(2203).unwrap()["rate"], "8.25");
    // Subscriptions are not sold yet.
    assert!(find(1116).is_none() && find(2204).is_none());
    // Explicit ids, then alpha's 19 sellable services, then beta's 3.
    assert_eq!(list.len(), 3 + 19 + 3);
    // The vip group's markup replaces the rules': 0.90 × 1.10.
    let vlist = env.call(&vip, &[("action", "services")]).await;
    let v1 = vlist
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == 1)
        .unwrap()
        .clone();
    assert_eq!(v1["rate"], "0.99");
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn services_come_gzip_compressed_to_panels_that_accept_it() {
    use std::io::Read;
    let env = Env::start(Options::default()).await;
    let key = env.client("ann", "10", "default").await;
    let ask = |accept: Option<&'static str>| {
        let mut req = http::Request::post(env.url())
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(accept) = accept {
            req = req.header("accept-encoding", accept);
        }
        let body = common::encode(&[("key", &key), ("action", "services")]);
        env.http.send(req.body(body.into()).unwrap())
    };
    let plain = ask(None).await;
    assert_eq!(plain.headers.get("content-encoding"), None);
    assert_eq!(plain.headers["vary"], "accept-encoding");
    let gzipped = ask(Some("gzip, deflate, br")).await;
    assert_eq!(gzipped.headers["content-encoding"], "gzip");
    assert_eq!(gzipped.headers["vary"], "accept-encoding");
    assert!(gzipped.body.len() < plain.body.len());
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(&gzipped.body[..])
        .read_to_end(&mut inflated)
        .unwrap();
    assert_eq!(inflated, plain.body);
    // Refused with q=0: plain again. Other actions are never compressed.
    let refused = ask(Some("gzip;q=0, identity")).await;
    assert_eq!(refused.headers.get("content-encoding"), None);
    assert_eq!(refused.body, plain.body);
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn every_service_type_is_charged_exactly() {
    let env = Env::start(Options::default()).await;
    let key = env.client("ann", "1000", "default").await;
    // (service, fields, the charge in its wire form, worked out by hand)
    type Case = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "1",
            vec![("link", "https://i.com/a"), ("quantity", "157")],
            // 1.125 × 157 / 1000 = 0.176625, rounded up.
            "0.17663",
        ),
        (
            "1101",
            vec![
                ("link", "https://i.com/a"),
                ("quantity", "100"),
                ("runs", "3"),
                ("interval", "10"),
            ],
            // 1.26 × 300 / 1000 = 0.378.
            "0.37800",
        ),
        (
            "1103",
            vec![
                ("link", "https://i.com/p"),
                ("comments", "1\n2\n3\n4\n5\r\n6\n7\n8\n9\n10\n11"),
            ],
            // 11.2 × 11 / 1000 = 0.1232.
            "0.12320",
        ),
        (
            "1104",
            vec![("link", "https://i.com/p"), ("comments", "a\nb")],
            // The package at 3.5.
            "3.50000",
        ),
        (
            "1105",
            vec![
                ("link", "https://i.com/p"),
                ("quantity", "100"),
                ("usernames", "u1\nu2"),
            ],
            // 4.48 × 100 / 1000 = 0.448.
            "0.44800",
        ),
        (
            "1106",
            vec![
                ("link", "https://i.com/p"),
                ("quantity", "100"),
                ("usernames", "u1"),
                ("hashtags", "#a"),
            ],
            // 5.32 × 100 / 1000 = 0.532.
            "0.53200",
        ),
        (
            "1107",
            vec![
                ("link", "https://i.com/p"),
                ("usernames", "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk"),
            ],
            // 5.6 × 11 / 1000 = 0.0616.
            "0.06160",
        ),
        (
            "1108",
            vec![
                ("link", "https://i.com/p"),
                ("quantity", "100"),
                ("hashtag", "#sun"),
            ],
            // 4.9 × 100 / 1000 = 0.49.
            "0.49000",
        ),
        (
            "1109",
            vec![
                ("link", "https://i.com/p"),
                ("quantity", "100"),
                ("username", "bob"),
            ],
            // 4.9 × 100 / 1000 = 0.49.
            "0.49000",
        ),
        (
            "1110",
            vec![
                ("link", "https://i.com/p"),
                ("quantity", "100"),
                ("media", "https://i.com/m"),
            ],
            // 4.9 × 100 / 1000 = 0.49.
            "0.49000",
        ),
        (
            "1111",
            vec![
                ("link", "https://i.com/p"),
                ("quantity", "33"),
                ("username", "bob"),
            ],
            // 1.68 × 33 / 1000 = 0.05544.
            "0.05544",
        ),
        (
            "1112",
            vec![
                ("link", "https://i.com/p"),
                ("username", "bob"),
                ("comments", "hi\nyo\nok"),
            ],
            // 16.8 × 3 / 1000 = 0.0504.
            "0.05040",
        ),
        (
            "1113",
            vec![
                ("link", "https://t.com/p"),
                ("quantity", "100"),
                ("answer_number", "2"),
            ],
            // 2.94 × 100 / 1000 = 0.294.
            "0.29400",
        ),
        (
            "1114",
            vec![
                ("link", "https://t.me/g"),
                ("quantity", "100"),
                ("groups", "g1\ng2"),
            ],
            // 9.1 × 100 / 1000 = 0.91.
            "0.91000",
        ),
        (
            "1115",
            vec![
                ("link", "https://site.com"),
                ("quantity", "1234"),
                ("type_of_traffic", "2"),
                ("referring_url", "https://ref.com"),
            ],
            // 0.07 × 1234 / 1000 = 0.08638.
            "0.08638",
        ),
        (
            "1119",
            vec![("link", "https://y.com/v")],
            // The package at 4.2.
            "4.20000",
        ),
        (
            "2201",
            vec![("link", "https://b.com/x"), ("quantity", "333")],
            // 3.3 × 333 / 1000 = 1.0989.
            "1.09890",
        ),
    ];
    let mut spent = 0;
    for (service, fields, expected) in cases {
        let id = env.add(&key, service, &fields).await;
        spent += units(expected);
        assert_eq!(
            env.call(&key, &[("action", "balance")]).await["balance"],
            wire(units("1000") - spent),
            "service {service}"
        );
        let s = env.wait_status(&key, id, &["Completed"]).await;
        assert_eq!(s["charge"], expected, "service {service}");
        assert_eq!(s["currency"], "USD");
    }
    // Subscriptions and unknown ids.
    let r = env
        .call(
            &key,
            &[
                ("action", "add"),
                ("service", "1116"),
                ("username", "bob"),
                ("min", "50"),
                ("max", "100"),
            ],
        )
        .await;
    assert_eq!(r["error"], "Incorrect service ID");
    let r = env
        .call(
            &key,
            &[
                ("action", "add"),
                ("service", "99999"),
                ("link", "x"),
                ("quantity", "100"),
            ],
        )
        .await;
    assert_eq!(r["error"], "Incorrect service ID");
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn orders_are_validated_against_our_catalog() {
    let env = Env::start(Options::default()).await;
    let key = env.client("ann", "1", "default").await;
    let err = |pairs: Vec<(&'static str, &'static str)>| {
        let env = &env;
        let key = key.clone();
        async move {
            let mut all = vec![("action", "add")];
            all.extend(pairs);
            env.call(&key, &all).await["error"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(
        err(vec![("service", "3"), ("link", "x"), ("quantity", "150")]).await,
        "Quantity less than minimal 200"
    );
    assert_eq!(
        err(vec![("service", "1"), ("link", "x"), ("quantity", "10001")]).await,
        "Quantity more than maximum 10000"
    );
    assert_eq!(
        err(vec![("service", "1"), ("link", "x"), ("quantity", "1000")]).await,
        "Not enough funds on balance"
    );
    assert_eq!(
        err(vec![("service", "1"), ("quantity", "100")]).await,
        "Missing parameter: link"
    );
    assert_eq!(
        err(vec![
            ("service", "3"),
            ("link", "x"),
            ("quantity", "200"),
            ("runs", "2"),
            ("interval", "1")
        ])
        .await,
        "Drip-feed is disabled for this service"
    );
    assert_eq!(env.balance(&key).await, dec("1"));
    assert!(
        env.journal("alpha").is_empty(),
        "nothing reached the upstream"
    );
    let r = env.call("not-a-key", &[("action", "balance")]).await;
    assert_eq!(r["error"], "Invalid API key");
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn our_order_ids_not_theirs_and_each_customer_sees_only_their_own() {
    let env = Env::start(Options::default()).await;
    let ann = env.client("ann", "100", "default").await;
    let bob = env.client("bob", "100", "default").await;
    let a1 = env
        .add(
            &ann,
            "1",
            &[("link", "https://i.com/a"), ("quantity", "100")],
        )
        .await;
    let b1 = env
        .add(
            &bob,
            "2201",
            &[("link", "https://b.com/b"), ("quantity", "100")],
        )
        .await;
    let a2 = env
        .add(
            &ann,
            "2202",
            &[("link", "https://b.com/c"), ("quantity", "100")],
        )
        .await;
    assert_eq!((a1, b1, a2), (1, 2, 3));
    // Upstream ids differ (beta hands out 5001+), and never show.
    let o = env.order(b1).await;
    assert_eq!(
        (o.upstream.as_str(), o.upstream_order),
        ("beta", Some("5001".to_owned()))
    );
    let multi = env
        .call(
            &ann,
            &[
                ("action", "status"),
                ("orders", &format!("{a1},{b1},{a2},999")),
            ],
        )
        .await;
    assert_eq!(
        multi
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<HashSet<_>>(),
        ["1", "2", "3", "999"].map(String::from).into()
    );
    assert_eq!(
        multi[b1.to_string()],
        json!({"error": "Incorrect order ID"}),
        "bob's order is not ann's"
    );
    assert_eq!(multi["999"], json!({"error": "Incorrect order ID"}));
    assert!(multi[a1.to_string()]["status"].is_string());
    assert!(!multi.to_string().contains("5001"));
    assert_eq!(
        env.status(&bob, a1).await,
        json!({"error": "Incorrect order ID"})
    );
    let c = env
        .call(&bob, &[("action", "cancel"), ("orders", &a1.to_string())])
        .await;
    assert_eq!(
        c,
        json!([{"order": a1, "cancel": {"error": "Incorrect order ID"}}])
    );
    let r = env
        .call(&bob, &[("action", "refill"), ("order", &a1.to_string())])
        .await;
    assert_eq!(r, json!({"error": "Incorrect order ID"}));
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn partial_and_canceled_orders_are_refunded_exactly_once() {
    let env = Env::start(Options::default()).await;
    let key = env.client("ann", "100", "default").await;
    let p = env
        .add(
            &key,
            "1",
            &[
                ("link", "https://i.com/a?sim-fate=partial"),
                ("quantity", "1000"),
            ],
        )
        .await;
    let c = env
        .add(
            &key,
            "2201",
            &[
                ("link", "https://b.com/x?sim-fate=cancel"),
                ("quantity", "1000"),
            ],
        )
        .await;
    let done = env
        .add(
            &key,
            "1",
            &[
                ("link", "https://i.com/b?sim-fate=complete"),
                ("quantity", "1000"),
            ],
        )
        .await;
    let sp = env.wait_order(p, |o| o.state == OrderState::Final).await;
    let sc = env.wait_order(c, |o| o.state == OrderState::Final).await;
    env.wait_order(done, |o| o.state == OrderState::Final).await;
    // Seen again and again by sync and by status calls: still refunded once.
    for _ in 0..5 {
        env.status(&key, p).await;
        env.status(&key, c).await;
    }
    let remains = sp.remains.unwrap() as u64;
    assert!(remains > 0 && remains < 1000);
    // 1.125 paid for 1000 units: the undelivered share of it, rounded down.
    let p_refund = refund(units("1.125"), 1000, remains);
    assert_eq!(i128::from(sp.refunded), p_refund);
    assert_eq!(sc.refunded, sc.charge);
    let s = env.status(&key, p).await;
    assert_eq!(
        (&s["status"], &s["charge"]),
        (&json!("Partial"), &json!(wire(units("1.125") - p_refund)))
    );
    assert_eq!(s["remains"], remains.to_string());
    let s = env.status(&key, c).await;
    assert_eq!(
        (&s["status"], &s["charge"]),
        (&json!("Canceled"), &json!("0.00000"))
    );
    assert_eq!(
        env.call(&key, &[("action", "balance")]).await["balance"],
        wire(units("100") - 2 * units("1.125") + p_refund)
    );
    let refunds = env
        .store()
        .ledger(1)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == panelgate::store::EntryKind::Refund)
        .count();
    assert_eq!(refunds, 2);
    // Our cost is what the upstream charged, in our currency (beta: EUR × 1.1).
    let placed_done = env.order(done).await;
    assert_eq!(placed_done.cost, Some(90_000));
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn refill_and_cancel_flows() {
    let env = Env::start(Options::default()).await;
    let key = env.client("ann", "100", "default").await;
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
    let held = env
        .add(
            &key,
            "1",
            &[
                ("link", "https://i.com/b?sim-fate=hold"),
                ("quantity", "1000"),
            ],
        )
        .await;
    let likes = env
        .add(
            &key,
            "1102",
            &[("link", "https://i.com/c"), ("quantity", "100")],
        )
        .await;
    env.wait_status(&key, done, &["Completed"]).await;
    env.wait_status(&key, held, &["In progress"]).await;

    // Refill: our refill ids; the upstream's refusals passed through; disabled services refused.
    let r = env
        .call(&key, &[("action", "refill"), ("order", &done.to_string())])
        .await;
    let refill: u64 = r["refill"]
        .as_str()
        .expect("refill id is a string")
        .parse()
        .unwrap();
    assert_eq!(refill, 1);
    let m = env
        .call(
            &key,
            &[
                ("action", "refill"),
                ("orders", &format!("{done},{held},{likes},77")),
            ],
        )
        .await;
    // The first refill may already be over (the clock runs fast): then a second one starts.
    assert!(
        m[0]["refill"].is_u64()
            || m[0]["refill"]["error"] == "The refill task is not completed for this order",
        "{m}"
    );
    assert_eq!(
        m.as_array().unwrap()[1..],
        json!([
            {"order": held, "refill": {"error": "The order is not completed yet"}},
            {"order": likes, "refill": {"error": "Refill is disabled for this service"}},
            {"order": 77, "refill": {"error": "Incorrect order ID"}}
        ])
        .as_array()
        .unwrap()[..]
    );
    let rs = env
        .call(&key, &[("action", "refill_status"), ("refill", "1")])
        .await;
    assert!(
        ["Pending", "In progress", "Completed", "Rejected"]
            .contains(&rs["status"].as_str().unwrap()),
        "{rs}"
    );
    let rs = env
        .call(&key, &[("action", "refill_status"), ("refills", "1,99")])
        .await;
    assert_eq!(rs[0]["refill"], 1);
    assert_eq!(
        rs[1],
        json!({"refill": 99, "status": {"error": "Refill not found"}})
    );
    let other = env.client("bob", "1", "default").await;
    let r = env
        .call(&other, &[("action", "refill_status"), ("refill", "1")])
        .await;
    assert_eq!(r, json!({"error": "Refill not found"}));

    // Cancel: forwarded; the refund comes when the upstream reports the order Partial.
    let before = env.balance(&key).await;
    let c = env
        .call(
            &key,
            &[
                ("action", "cancel"),
                ("orders", &format!("{held},{done},999")),
            ],
        )
        .await;
    assert_eq!(
        c,
        json!([
            {"order": held, "cancel": 1},
            {"order": done, "cancel": {"error": "The order cannot be canceled"}},
            {"order": 999, "cancel": {"error": "Incorrect order ID"}}
        ])
    );
    let s = env.wait_status(&key, held, &["Partial"]).await;
    assert_eq!(s["remains"], "500");
    // Half of 1000 units undelivered: half of 1.125, 0.5625.
    assert_eq!(env.balance(&key).await - before, dec("0.5625"));
    let single = env
        .call(&key, &[("action", "cancel"), ("order", &held.to_string())])
        .await;
    assert_eq!(
        single,
        json!([{"order": held, "cancel": {"error": "The order cannot be canceled"}}])
    );
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn a_definite_failure_falls_back_and_our_problems_stay_neutral() {
    let mut env = Env::start(Options::default()).await;
    let key = env.client("ann", "100", "default").await;
    // alpha refuses explicitly (it is out of funds): service 2 falls back to beta's 202.
    env.set_faults(
        &env.alpha,
        ALPHA_KEY,
        json!({"error": 1, "error_text": "Not enough funds on balance", "actions": ["add"]}),
    )
    .await;
    let id = env
        .add(
            &key,
            "2",
            &[("link", "https://i.com/a"), ("quantity", "100")],
        )
        .await;
    let o = env.order(id).await;
    assert_eq!(
        (o.upstream.as_str(), o.upstream_service, o.state),
        ("beta", 202, OrderState::Placed)
    );
    // Charged at service 2's price, whatever the fallback costs.
    // 0.5625 × 100 / 1000 = 0.05625.
    assert_eq!(o.charge, 5_625);
    // No fallback for service 1: the customer sees a neutral error, never "not enough funds",
    // and gets the held funds back.
    let before = env.balance(&key).await;
    let r = env
        .call(
            &key,
            &[
                ("action", "add"),
                ("service", "1"),
                ("link", "https://i.com/a"),
                ("quantity", "100"),
            ],
        )
        .await;
    assert_eq!(
        r["error"],
        "Service is temporarily unavailable, please try again later"
    );
    assert_eq!(env.balance(&key).await, before);
    let rejected = env
        .store()
        .list_orders(&panelgate::store::OrderFilter {
            state: Some(OrderState::Rejected),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rejected.len(), 1);
    // A rejected order is nobody's order.
    assert_eq!(
        env.status(&key, rejected[0].id as u64).await["error"],
        "Incorrect order ID"
    );
    // A link refusal means something to the customer: it passes.
    env.set_faults(
        &env.alpha,
        ALPHA_KEY,
        json!({"error": 1, "error_text": "neworder.error.link_duplicate", "actions": ["add"]}),
    )
    .await;
    let r = env
        .call(
            &key,
            &[
                ("action", "add"),
                ("service", "1"),
                ("link", "https://i.com/a"),
                ("quantity", "100"),
            ],
        )
        .await;
    assert_eq!(
        r["error"],
        "You have active order with this link. Please wait until order being completed."
    );
    // alpha down (connection refused: nothing was sent): fallback again.
    let alpha = std::mem::replace(
        &mut env.alpha,
        common::simulator(panelgate::sim::SimConfig::new("unused")).await,
    );
    alpha.stop().await;
    let id = env
        .add(
            &key,
            "2",
            &[("link", "https://i.com/z"), ("quantity", "100")],
        )
        .await;
    let o = env.order(id).await;
    assert_eq!((o.upstream.as_str(), o.state), ("beta", OrderState::Placed));
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn an_unknown_outcome_is_held_never_resent_and_resolved_by_the_operator() {
    let env = Env::start(Options::default()).await;
    let key = env.client("ann", "100", "default").await;
    // alpha reads the request, creates the order, and hangs up.
    env.set_faults(
        &env.alpha,
        ALPHA_KEY,
        json!({"hangup": 1, "actions": ["add"]}),
    )
    .await;
    let before = env.balance(&key).await;
    let id = env
        .add(
            &key,
            "2",
            &[("link", "https://i.com/a"), ("quantity", "100")],
        )
        .await;
    let id2 = env
        .add(
            &key,
            "1",
            &[("link", "https://i.com/b"), ("quantity", "100")],
        )
        .await;
    // Placed once at alpha, never resent, and not tried on the fallback either.
    assert_eq!(env.journal("alpha").len(), 2);
    assert!(env.journal("beta").is_empty());
    let o = env.order(id).await;
    assert_eq!(
        (o.state, o.upstream.as_str()),
        (OrderState::Unknown, "alpha")
    );
    // The customer sees Pending with the money held.
    let s = env.status(&key, id).await;
    assert_eq!(
        (s["status"].as_str(), s["remains"].as_str()),
        (Some("Pending"), Some("100"))
    );
    // 100 units at 1.125 and at 0.5625 per 1000: 0.1125 + 0.05625.
    assert_eq!(before - env.balance(&key).await, dec("0.16875"));
    env.set_faults(&env.alpha, ALPHA_KEY, json!({})).await;

    // The operator finds them with the CLI (beside the running server) and resolves them: the
    // first was placed (the upstream's journal says as which order), the second was not.
    let unknown: Value = serde_json::from_str(
        &env.cli(&["order", "list", "--state", "unknown", "--json"])
            .await,
    )
    .unwrap();
    let listed: Vec<u64> = unknown
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, [id2, id]);
    let upstream_id = env.journal("alpha")[0]["order"]
        .as_u64()
        .unwrap()
        .to_string();
    let out = env
        .cli(&[
            "order",
            "resolve",
            &id.to_string(),
            "--upstream-order",
            &upstream_id,
        ])
        .await;
    assert!(out.contains("placed"), "{out}");
    env.wait_status(&key, id, &["Completed"]).await;
    let out = env
        .cli(&["order", "resolve", &id2.to_string(), "--not-placed"])
        .await;
    assert!(out.contains("Canceled"), "{out}");
    assert_eq!(env.status(&key, id2).await["status"], "Canceled");
    assert_eq!(before - env.balance(&key).await, dec("0.05625"));
    // Only unknown orders can be resolved.
    assert!(
        panelgate::admin::resolve(env.store(), id as i64, None)
            .await
            .is_err()
    );
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn parallel_orders_never_overdraw_a_balance() {
    let env = Env::start(Options::default()).await;
    // Each order costs 1.125; the balance covers 10 of the 40.
    let key = env.client("ann", "11.25", "default").await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let http = env.http.clone();
        let url = env.url();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let link = format!("https://i.com/{i}");
            http.form(
                &url,
                &[
                    ("key", &key),
                    ("action", "add"),
                    ("service", "1"),
                    ("link", &link),
                    ("quantity", "1000"),
                ],
            )
            .await
            .json()
        }));
    }
    let mut placed = 0;
    for t in tasks {
        let r: Value = t.await.unwrap();
        if r["order"].is_u64() {
            placed += 1;
        } else {
            assert_eq!(r["error"], "Not enough funds on balance");
        }
    }
    assert_eq!(placed, 10);
    assert_eq!(env.balance(&key).await, dec("0"));
    assert_eq!(env.journal("alpha").len(), 10);
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn a_restart_loses_nothing() {
    let mut env = Env::start(Options::default()).await;
    let key = env.client("ann", "100", "default").await;
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
                ("link", "https://i.com/b?sim-fate=hold"),
                ("quantity", "1000"),
            ],
        )
        .await;
    env.wait_order(a, |o| o.state == OrderState::Final).await;
    let balance = env.balance(&key).await;
    env.stop_gateway().await;
    env.start_gateway().await;
    assert_eq!(env.balance(&key).await, balance);
    assert_eq!(env.status(&key, a).await["status"], "Partial");
    assert_eq!(env.status(&key, b).await["status"], "In progress");
    // New ids continue after the old ones.
    let c = env
        .add(
            &key,
            "1",
            &[("link", "https://i.com/c"), ("quantity", "100")],
        )
        .await;
    assert_eq!(c, 3);
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn fresh_statuses_are_answered_without_the_upstream() {
    let env = Env::start(Options {
        status_max_age: "1h",
        sync_interval: "1h",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "100", "default").await;
    let id = env
        .add(
            &key,
            "1",
            &[
                ("link", "https://i.com/a?sim-fate=hold"),
                ("quantity", "100"),
            ],
        )
        .await;
    // Never synced (and never final): asked upstream once, then fresh for an hour.
    let first = env.status(&key, id).await;
    assert!(first["status"].is_string());
    assert_eq!(env.requests(&env.alpha, ALPHA_KEY, "status").await, 1);
    // A broken upstream would show if it were asked.
    env.set_faults(&env.alpha, ALPHA_KEY, json!({"http500": 1}))
        .await;
    for _ in 0..3 {
        assert_eq!(env.status(&key, id).await, first);
    }
    assert_eq!(
        env.requests(&env.alpha, ALPHA_KEY, "status").await,
        1,
        "a fresh status went to the upstream"
    );
}

#[tokio::test]
async fn a_service_the_upstream_drops_disappears() {
    let mut env = Env::start(Options::default()).await;
    let key = env.client("ann", "100", "default").await;
    env.add(
        &key,
        "2201",
        &[("link", "https://b.com/x"), ("quantity", "100")],
    )
    .await;
    // beta comes back with a catalog that no longer lists 201.
    let addr = env.beta.addr;
    let old = std::mem::replace(
        &mut env.beta,
        common::simulator(panelgate::sim::SimConfig::new("unused")).await,
    );
    old.stop().await;
    let mut cfg = common::gw::beta_config(&env.dir.0);
    cfg.services.retain(|s| s.service != 201);
    env.beta = panelgate::sim::start(cfg, addr).await.unwrap();
    // Once beta's list is past its TTL, the next order reads the new one. (A new client:
    // skipping five minutes also runs out the server's idle timeouts on the old one's
    // connections.)
    skip(std::time::Duration::from_secs(300)).await;
    let http = common::Http::default();
    let add = [
        ("key", key.as_str()),
        ("action", "add"),
        ("service", "2201"),
        ("link", "https://b.com/y"),
        ("quantity", "100"),
    ];
    let r = http.form(&env.url(), &add).await.json();
    assert_eq!(
        r["error"], "Incorrect service ID",
        "service 2201 is still sold"
    );
    let services = [("key", key.as_str()), ("action", "services")];
    let list = http.form(&env.url(), &services).await.json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|s| s["service"] != 2201)
    );
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["service"] == 2202)
    );
    let _ = BETA_KEY;
}

async fn sim_state(env: &Env, sim: &panelgate::sim::SimHandle, key: &str) -> Value {
    env.http
        .get(&format!("http://{}/_sim/state?key={key}", sim.addr))
        .await
        .json()
}

/// How many `status` requests a simulator got for each number of ids, since `before`.
async fn status_batches(env: &Env, before: &Value) -> Vec<(u64, u64)> {
    let state = sim_state(env, &env.alpha, ALPHA_KEY).await;
    let now = state["status_batches"]
        .as_object()
        .unwrap_or_else(|| panic!("status batches are counted: {state}"));
    let mut sizes: Vec<(u64, u64)> = now
        .iter()
        .map(|(ids, n)| {
            let earlier = before["status_batches"][ids].as_u64().unwrap_or(0);
            (ids.parse().unwrap(), n.as_u64().unwrap() - earlier)
        })
        .filter(|&(_, n)| n > 0)
        .collect();
    sizes.sort();
    sizes
}

#[tokio::test]
async fn statuses_are_fetched_in_batches_of_at_most_100_per_upstream() {
    let env = Env::start(Options {
        sync_interval: "1h",
        status_max_age: "1h",
        ..Options::default()
    })
    .await;
    // 350 adds in a row: the vip group's rate limit lets them through.
    let key = env.client("ann", "1000", "vip").await;
    let mut ids = Vec::new();
    for i in 0..349 {
        ids.push(
            env.add(
                &key,
                "1102",
                &[("link", &format!("https://i.com/{i}")), ("quantity", "100")],
            )
            .await,
        );
    }
    let beta = env
        .add(
            &key,
            "2202",
            &[("link", "https://b.com/x"), ("quantity", "100")],
        )
        .await;
    let (alpha_before, beta_before) = (
        env.requests(&env.alpha, ALPHA_KEY, "status").await,
        env.requests(&env.beta, BETA_KEY, "status").await,
    );
    let batches_before = sim_state(&env, &env.alpha, ALPHA_KEY).await;
    // 99 of alpha's and beta's one, all never synced: one call to each upstream.
    let list: Vec<String> = ids[..99]
        .iter()
        .chain([&beta])
        .map(|i| i.to_string())
        .collect();
    let multi = env
        .call(&key, &[("action", "status"), ("orders", &list.join(","))])
        .await;
    assert_eq!(multi.as_object().unwrap().len(), 100);
    assert!(
        multi
            .as_object()
            .unwrap()
            .values()
            .all(|s| s["status"] == "Completed"),
        "{multi}"
    );
    assert_eq!(
        env.requests(&env.alpha, ALPHA_KEY, "status").await - alpha_before,
        1
    );
    assert_eq!(
        env.requests(&env.beta, BETA_KEY, "status").await - beta_before,
        1
    );
    assert_eq!(status_batches(&env, &batches_before).await, [(99, 1)]);
    // Now fresh: answered from the ledger, no upstream call at all.
    env.call(&key, &[("action", "status"), ("orders", &list.join(","))])
        .await;
    assert_eq!(
        env.requests(&env.alpha, ALPHA_KEY, "status").await - alpha_before,
        1
    );
    // A sync pass over alpha's orders: finished ones are not polled again, so only the 250
    // never synced are asked about, at most 100 at a time.
    env.gw()
        .gateway()
        .syncer
        .pass(std::time::Duration::from_secs(3600))
        .await;
    assert_eq!(
        status_batches(&env, &batches_before).await,
        [(50, 1), (99, 1), (100, 2)]
    );
    for &id in &ids[99..] {
        let o = env.order(id).await;
        assert_eq!(o.state, OrderState::Final, "order {id} was not synced");
    }
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn the_catalog_keeps_the_last_good_list_and_merges_concurrent_fetches() {
    let env = Env::start(Options {
        catalog_ttl: "300ms",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "100", "default").await;
    let before = env.requests(&env.beta, BETA_KEY, "services").await;
    // beta's next list comes slowly, so that every caller below arrives while it is on its
    // way (and so does the background refresher, if its turn comes meanwhile).
    env.set_faults(
        &env.beta,
        BETA_KEY,
        json!({"slow": 1, "slow_ms": 1000, "actions": ["services"]}),
    )
    .await;
    skip(std::time::Duration::from_millis(350)).await;
    // The TTL has run out: 20 concurrent requests cause one fetch.
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let http = env.http.clone();
            let url = env.url();
            let key = key.clone();
            tokio::spawn(async move {
                http.form(&url, &[("key", &key), ("action", "services")])
                    .await
                    .json()
            })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().as_array().unwrap().len(), 25);
    }
    let fetched = env.requests(&env.beta, BETA_KEY, "services").await - before;
    assert_eq!(fetched, 1, "fetches of beta's list for one expiry");
    // beta breaks: its services stay on sale from the last good list.
    env.set_faults(
        &env.beta,
        BETA_KEY,
        json!({"garbage": 1, "actions": ["services"]}),
    )
    .await;
    let before = env.requests(&env.beta, BETA_KEY, "services").await;
    skip(std::time::Duration::from_millis(350)).await;
    let list = env.call(&key, &[("action", "services")]).await;
    // The list was asked for again (and every answer is garbage now): the refetch failed.
    assert!(
        env.requests(&env.beta, BETA_KEY, "services").await > before,
        "beta's list was not fetched again"
    );
    let scrape = env
        .http
        .get(&format!("http://{}/metrics", env.gw().addr))
        .await
        .text();
    assert!(
        scrape.lines().any(|l| l
            .starts_with(r#"panelgate_catalog_refreshes_total{outcome="error",upstream="beta"} "#)),
        "no failed refresh of beta counted"
    );
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["service"] == 2201),
        "beta's services vanished"
    );
    let id = env
        .add(
            &key,
            "2201",
            &[("link", "https://b.com/x"), ("quantity", "100")],
        )
        .await;
    assert_eq!(
        env.wait_status(&key, id, &["Completed"]).await["status"],
        "Completed"
    );
}

#[tokio::test]
async fn orders_caught_mid_dispatch_by_a_crash_become_unknown() {
    let mut env = Env::start(Options::default()).await;
    env.client("ann", "10", "default").await;
    // As if the process died right after holding the funds: the order is `dispatching`.
    let order = env
        .store()
        .create_order(
            &panelgate::store::NewOrder {
                customer_id: 1,
                service: 1,
                upstream: "alpha".into(),
                upstream_service: 101,
                charge: 112_500,
                billed: 1000,
                link: Some("https://i.com/a".into()),
                fields: "{}".into(),
                list_cost: None,
                can_refill: true,
                can_cancel: true,
                // Long past, as its creation: on a shared PostgreSQL another instance might
                // still be running a dispatch whose deadline has not passed.
                dispatch_deadline: 1,
                drip: None,
            },
            0,
        )
        .await
        .unwrap();
    env.stop_gateway().await;
    env.start_gateway().await;
    let o = env.store().order(order.id).await.unwrap().unwrap();
    assert_eq!(o.state, OrderState::Unknown);
    assert_eq!(
        env.store()
            .customer_by_name("ann")
            .await
            .unwrap()
            .unwrap()
            .balance,
        1_000_000 - 112_500
    );
    env.assert_ledgers_balance().await;
}

/// An `add` of 100 of service 1, as the bytes a client writes.
fn raw_add(key: &str) -> String {
    let body = common::encode(&[
        ("key", key),
        ("action", "add"),
        ("service", "1"),
        ("link", "https://i.com/a"),
        ("quantity", "100"),
    ]);
    format!(
        "POST /api/v2 HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn a_client_hanging_up_mid_order_does_not_strand_it() {
    let env = Env::start(Options::default()).await;
    let key = env.client("ann", "10", "default").await;
    env.set_faults(
        &env.alpha,
        ALPHA_KEY,
        json!({"slow": 1, "slow_ms": 300, "actions": ["add"]}),
    )
    .await;
    let request = raw_add(&key);
    // Send the order and hang up long before the upstream answers.
    common::send_and_hang_up(
        env.gw().addr,
        request.as_bytes(),
        std::time::Duration::from_millis(50),
    )
    .await;
    let o = env
        .wait_order(1, |o| o.state != OrderState::Dispatching)
        .await;
    assert!(
        matches!(o.state, OrderState::Placed | OrderState::Final),
        "the dispatch ran to the end without its client: {:?}",
        o.state
    );
    env.assert_ledgers_balance().await;
}

/// Clients that hang up at any instant of their `add`, also while its funds are being held:
/// every order still ends placed, the ledger adds up, and the next order goes through at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_hanging_up_at_any_instant_leave_every_order_whole() {
    use tokio::io::AsyncWriteExt;
    let env = Env::start(Options::default()).await;
    // 162 adds in a blink: the vip group's rate limit lets them all reach the gateway, so
    // that the last one tests the locks, not the default group's burst.
    let key = env.client("ann", "1000", "vip").await;
    let request = raw_add(&key);
    let addr = env.gw().addr;
    // How long one whole `add` takes on this machine now (shared, loaded, either backend):
    // the hang-ups below are spread over that span, so that they land at every instant of
    // an order, before, during and after its hold, however slow the machine is today.
    let started = tokio::time::Instant::now();
    let whole = env
        .call(
            &key,
            &[
                ("action", "add"),
                ("service", "1"),
                ("link", "https://i.com/a"),
                ("quantity", "100"),
            ],
        )
        .await;
    assert!(whole["order"].is_u64(), "{whole}");
    let span_us = started.elapsed().as_micros().max(2000) as u64;
    // Eight at a time, the i-th of 160 dropped i/160 of that span after it is written.
    for batch in 0..20u64 {
        let hangups: Vec<_> = (0..8u64)
            .map(|i| {
                let request = request.clone();
                tokio::spawn(async move {
                    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                    stream.write_all(request.as_bytes()).await.unwrap();
                    let until = tokio::time::Instant::now()
                        + std::time::Duration::from_micros(
                            (batch * 8 + i) * 13 % 160 * span_us / 160,
                        );
                    while tokio::time::Instant::now() < until {
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for hangup in hangups {
            hangup.await.unwrap();
        }
    }
    // Whatever reached the ledger leaves `dispatching`, placed upstream.
    let mut orders = Vec::new();
    for _ in 0..500 {
        orders = env.orders().await;
        if orders.iter().all(|o| o.state != OrderState::Dispatching) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(orders.len() > 1, "no hung-up order reached the ledger");
    for o in &orders {
        assert!(
            matches!(o.state, OrderState::Placed | OrderState::Final),
            "order {} was left {:?}",
            o.id,
            o.state
        );
    }
    env.assert_ledgers_balance().await;
    let next = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        env.add(
            &key,
            "1",
            &[("link", "https://i.com/b"), ("quantity", "100")],
        ),
    )
    .await
    .expect("the next order waited on a lock");
    assert!(next > 0);
}
