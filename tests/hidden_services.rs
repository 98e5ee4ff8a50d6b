//! Selling only what a customer's panel software can order, black-box over loopback:
//! `hide_types` and `hide_categories` on a price group and on a customer take services out of
//! their `services` list (plain and gzip) and refuse `add` for them exactly as for a service
//! that does not exist, while orders placed before keep their status, refill and cancel.
//! Reloads apply them; a misspelt type is refused by name.

mod common;

use std::io::Read;

use common::gw::{Env, Options};
use serde_json::{Value, json};

/// The suite's gateway, restarted on its config as `edit` changes it (file polling off:
/// reloads are the tests' own).
async fn start(edit: impl FnOnce(String) -> String) -> Env {
    let mut env = Env::start(Options {
        extra: "config_poll: 0s\n",
        ..Options::default()
    })
    .await;
    env.stop_gateway().await;
    write_config(&env, &edit(config(&env)));
    env.start_gateway().await;
    env
}

fn config(env: &Env) -> String {
    std::fs::read_to_string(&env.config_path).unwrap()
}

fn write_config(env: &Env, text: &str) {
    std::fs::write(&env.config_path, text).unwrap();
}

/// The config with `keys` added to the `vip` price group.
fn vip_hides(text: String, keys: &str) -> String {
    let group = "  vip:\n    markup: { percent: 10 }\n";
    assert!(text.contains(group), "no vip group in the config");
    text.replacen(group, &format!("{group}{keys}"), 1)
}

/// The ids of a `services` reply.
fn ids_of(list: &Value) -> Vec<u64> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a services list: {list}"))
        .iter()
        .map(|s| s["service"].as_u64().unwrap())
        .collect()
}

async fn listed(env: &Env, key: &str) -> Vec<u64> {
    ids_of(&env.call(key, &[("action", "services")]).await)
}

/// The `services` list as a panel that accepts gzip receives it.
async fn listed_gzip(env: &Env, key: &str) -> Vec<u64> {
    let req = http::Request::post(env.url())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept-encoding", "gzip")
        .body(common::encode(&[("key", key), ("action", "services")]).into())
        .unwrap();
    let r = env.http.send(req).await;
    assert_eq!(r.headers["content-encoding"], "gzip");
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_end(&mut json)
        .unwrap();
    ids_of(&serde_json::from_slice(&json).unwrap())
}

fn assert_listed(ids: &[u64], shown: &[u64], hidden: &[u64]) {
    for id in shown {
        assert!(ids.contains(id), "{id} is not listed: {ids:?}");
    }
    for id in hidden {
        assert!(!ids.contains(id), "{id} is listed: {ids:?}");
    }
}

/// What an order of each simulated service used here needs besides `link`.
fn order_fields(service: &str) -> Vec<(&'static str, &'static str)> {
    let quantity = ("quantity", "1000");
    match service {
        // Poll (alpha's 113).
        "1113" => vec![quantity, ("answer_number", "2")],
        // Mentions (alpha's 105).
        "1105" => vec![quantity, ("usernames", "ann\nbob")],
        // Comment Replies (alpha's 112).
        "1112" => vec![("username", "ann"), ("comments", "nice\ngreat")],
        _ => vec![quantity],
    }
}

async fn try_add(env: &Env, key: &str, service: &str, link: &str) -> Value {
    let mut pairs = vec![("action", "add"), ("service", service), ("link", link)];
    pairs.extend(order_fields(service));
    env.call(key, &pairs).await
}

/// `add` for `service` gets exactly what an id we never sold gets, and charges nothing.
async fn assert_refused_as_unknown(env: &Env, key: &str, service: &str) {
    let before = env.balance(key).await;
    let unknown = try_add(env, key, "99999", "https://i.com/u").await;
    assert_eq!(unknown, json!({"error": "Incorrect service ID"}));
    let hidden = try_add(env, key, service, "https://i.com/u").await;
    assert_eq!(hidden, unknown, "service {service}");
    assert_eq!(env.balance(key).await, before, "service {service}");
}

#[tokio::test]
async fn a_groups_hidden_types_and_categories_are_neither_listed_nor_sold() {
    let env = start(|t| {
        vip_hides(
            t,
            "    hide_types: [Mentions, \"comment replies\", POLL, Invites_from_Groups]\n    hide_categories: [youtube]\n",
        )
    })
    .await;
    let vic = env.client("vic", "100", "vip").await;
    let ann = env.client("ann", "100", "default").await;
    // 105 Mentions, 112 Comment Replies, 113 Poll, 114 Invites from Groups; 117 and 119 are
    // in the YouTube category.
    let hidden = [1105, 1112, 1113, 1114, 1117, 1119];
    // Whole names only: Mentions with Hashtags (106) and Custom List (107) are other types.
    let shown = [1, 2, 3, 1101, 1106, 1107, 1111, 1115, 1118, 2201];
    assert_listed(&listed(&env, &vic).await, &shown, &hidden);
    assert_listed(&listed_gzip(&env, &vic).await, &shown, &hidden);
    assert_listed(&listed(&env, &ann).await, &hidden, &[]);

    for service in ["1105", "1112", "1113", "1117"] {
        assert_refused_as_unknown(&env, &vic, service).await;
    }
    let vics: Vec<_> = env.orders().await;
    assert!(vics.is_empty(), "orders were written: {vics:?}");

    // check-config says what each group is not shown (and what the suite's config sells
    // twice: its explicit ids map services its import rule takes too).
    let (_, out) = env.check_config().await;
    for line in [
        "price group vip: 6 services hidden",
        "warning: alpha/101 is sold twice: as service 1 and as service 1101 (the import rule of alpha with id_offset 1000); skip_mapped: true on that rule sells it once",
    ] {
        assert!(out.contains(line), "{line:?} not in:\n{out}");
    }

    // Another group's customer orders them as before.
    let poll = env
        .add(
            &ann,
            "1113",
            &[
                ("link", "https://x.com/p"),
                ("quantity", "1000"),
                ("answer_number", "2"),
            ],
        )
        .await;
    env.wait_status(&ann, poll, &["Completed"]).await;
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn a_customers_own_filter_adds_to_its_groups() {
    // carl and dora have entries without a key: settings for customers `client add` made.
    let env = start(|t| {
        vip_hides(t, "    hide_types: [Poll]\n")
            + "clients:\n  - name: carl\n    hide_types: [web traffic]\n    hide_categories: [\"Instagram Likes\"]\n  - name: dora\n    hide_types: [Mentions]\n"
    })
    .await;
    let carl = env.client("carl", "100", "vip").await;
    let vic = env.client("vic", "100", "vip").await;
    let dora = env.client("dora", "100", "default").await;
    let ann = env.client("ann", "100", "default").await;

    // carl: vip's Poll, his Web Traffic (115) and the Instagram Likes category (102, also
    // sold as local 2).
    let carls = [1113, 1115, 1102, 2];
    assert_listed(&listed(&env, &carl).await, &[1, 1101, 1105], &carls);
    assert_listed(&listed_gzip(&env, &carl).await, &[1, 1101, 1105], &carls);
    assert_listed(&listed(&env, &vic).await, &[1115, 1102, 2], &[1113]);
    assert_listed(&listed(&env, &dora).await, &[1113, 1115], &[1105]);
    assert_listed(&listed(&env, &ann).await, &[1105, 1113, 1115], &[]);

    // carl's list is priced for his group.
    let rate = |list: Value| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == 1101)
            .unwrap()["rate"]
            .clone()
    };
    let carls_rate = rate(env.call(&carl, &[("action", "services")]).await);
    assert_eq!(
        carls_rate,
        rate(env.call(&vic, &[("action", "services")]).await)
    );
    assert_ne!(
        carls_rate,
        rate(env.call(&ann, &[("action", "services")]).await)
    );

    assert_refused_as_unknown(&env, &carl, "1115").await;
    assert_refused_as_unknown(&env, &carl, "1113").await;
    assert_refused_as_unknown(&env, &dora, "1105").await;
    env.add(
        &vic,
        "1115",
        &[("link", "https://x.com/"), ("quantity", "1000")],
    )
    .await;
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn a_reload_applies_hiding_and_earlier_orders_keep_working() {
    let env = start(|t| t).await;
    let vic = env.client("vic", "100", "vip").await;
    let held = env
        .add(
            &vic,
            "1113",
            &[
                ("link", "https://x.com/p?sim-fate=hold"),
                ("quantity", "1000"),
                ("answer_number", "1"),
            ],
        )
        .await;
    let done = env
        .add(
            &vic,
            "1101",
            &[("link", "https://i.com/f"), ("quantity", "1000")],
        )
        .await;
    env.wait_status(&vic, held, &["In progress"]).await;
    env.wait_status(&vic, done, &["Completed"]).await;

    let plain = config(&env);
    write_config(
        &env,
        &vip_hides(
            plain.clone(),
            "    hide_types: [Poll]\n    hide_categories: [instagram followers]\n",
        ),
    );
    env.gw().reload().await.unwrap();
    // 1 and 1101 are alpha's 101, in Instagram Followers.
    assert_listed(&listed(&env, &vic).await, &[2, 1102], &[1, 1101, 1113]);
    assert_refused_as_unknown(&env, &vic, "1113").await;

    // Orders placed before are the customer's still: status, refill and cancel answer.
    assert_eq!(env.status(&vic, held).await["status"], "In progress");
    let r = env
        .call(&vic, &[("action", "refill"), ("order", &done.to_string())])
        .await;
    assert!(r["refill"].as_str().is_some(), "refill refused: {r}");
    let c = env
        .call(&vic, &[("action", "cancel"), ("orders", &held.to_string())])
        .await;
    assert_eq!(c, json!([{"order": held, "cancel": 1}]));
    env.wait_status(&vic, held, &["Partial"]).await;

    // A misspelt type is refused by name, and the running filter stays.
    write_config(&env, &vip_hides(plain.clone(), "    hide_types: [Polls]\n"));
    let err = env.gw().reload().await.unwrap_err();
    assert!(
        err.contains("price_groups.vip.hide_types")
            && err.contains("\"Polls\" is not a service type"),
        "{err}"
    );
    assert_listed(&listed(&env, &vic).await, &[], &[1113]);

    // Taken out of the config, they are sold again.
    write_config(&env, &plain);
    env.gw().reload().await.unwrap();
    assert_listed(&listed(&env, &vic).await, &[1, 1101, 1113], &[]);
    env.add(
        &vic,
        "1113",
        &[
            ("link", "https://x.com/q"),
            ("quantity", "1000"),
            ("answer_number", "3"),
        ],
    )
    .await;
    env.assert_ledgers_balance().await;
}
