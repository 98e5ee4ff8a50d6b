//! The admin API as a storefront or a script uses it: bearer tokens made with the CLI, JSON in
//! and out on the admin listener, beside a gateway serving customers (docs/admin-api.md).

mod common;

use bytes::Bytes;
use common::gw::{ALPHA_KEY, Env, Options, dec, money};
use common::{Http, Reply};
use http_body_util::Full;
use panelgate::store::OrderState;
use panelgate::store::admin::Role;
use rust_decimal::Decimal;
use serde_json::{Value, json};

const ADMIN: &str = "admin:\n  listen: \"127.0.0.1:0\"\n";

/// The admin API of a running gateway, with one token.
struct Admin {
    base: String,
    token: String,
    http: Http,
}

impl Admin {
    fn new(env: &Env, token: &str) -> Admin {
        let addr = env.gw().admin_addr.expect("the admin listener runs");
        Admin {
            base: format!("http://{addr}/admin/api/v1"),
            token: token.to_owned(),
            http: Http::default(),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        self.http
            .send(
                req.header("content-type", "application/json")
                    .body(Full::new(body))
                    .unwrap(),
            )
            .await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None, &[]).await
    }

    async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send("POST", path, Some(body), &[]).await
    }
}

async fn started() -> (Env, Admin) {
    let env = Env::start(Options {
        extra: ADMIN,
        ..Options::default()
    })
    .await;
    let write = env.admin_token("shop", Role::Write).await;
    let admin = Admin::new(&env, &write);
    (env, admin)
}

fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.json()["code"], code, "{}", r.text());
    assert!(r.json()["error"].as_str().is_some_and(|e| !e.is_empty()));
}

#[tokio::test]
async fn a_customer_is_created_with_a_key_shown_once_then_listed_and_shown_without_it() {
    let (env, admin) = started().await;
    let r = admin
        .post(
            "/customers",
            &json!({"name": "ann", "balance": "12.5", "group": "vip"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    assert_eq!(
        (created["name"].clone(), money(&created["balance"])),
        (json!("ann"), dec("12.5"))
    );
    let key = created["key"].as_str().unwrap();
    // The key works on the API v2 at once.
    assert_eq!(env.balance(key).await, dec("12.5"));
    let shown = admin.get("/customers/ann").await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json()["group"], "vip");
    assert!(!shown.text().contains(key));
    let listed = admin.get("/customers").await;
    assert_eq!(listed.json()["items"][0]["name"], "ann");
    assert!(listed.json()["next_cursor"].is_null());
    assert!(!listed.text().contains(key));
    assert_error(
        &admin.post("/customers", &json!({"name": "ann"})).await,
        409,
        "conflict",
    );
    assert_error(&admin.get("/customers/bob").await, 404, "not_found");
}

#[tokio::test]
async fn credits_and_debits_answer_the_new_balance_and_the_ledger_shows_them_newest_first() {
    let (_env, admin) = started().await;
    admin.post("/customers", &json!({"name": "ann"})).await;
    let r = admin
        .post(
            "/customers/ann/credit",
            &json!({"amount": "12.50", "note": "bank 1234"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(money(&r.json()["balance"]), dec("12.5"));
    let r = admin
        .post("/customers/ann/debit", &json!({"amount": "2.25"}))
        .await;
    assert_eq!(money(&r.json()["balance"]), dec("10.25"));
    // Below the floor (credit limit 0): refused, nothing written.
    let r = admin
        .post("/customers/ann/debit", &json!({"amount": "11"}))
        .await;
    assert_error(&r, 409, "insufficient_funds");
    let ledger = admin.get("/customers/ann/ledger").await.json();
    let kinds: Vec<&str> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["debit", "credit"]);
    assert_eq!(ledger["items"][1]["note"], "bank 1234");
    // A credit limit lets the balance go below zero.
    let r = admin
        .post("/customers/ann/credit-limit", &json!({"credit_limit": "5"}))
        .await;
    assert_eq!(money(&r.json()["credit_limit"]), dec("5"));
    let r = admin
        .post("/customers/ann/debit", &json!({"amount": "15"}))
        .await;
    assert_eq!(money(&r.json()["balance"]), dec("-4.75"));
    let bad = [
        "0",
        "0.00",
        "-1",
        "1.000001",
        "x",
        " 1",
        "1e3",
        "12345678901",
    ];
    for bad in bad
        .map(|a| json!({"amount": a}))
        .into_iter()
        .chain([json!({"amount": 1})])
    {
        assert_error(
            &admin.post("/customers/ann/credit", &bad).await,
            400,
            "bad_request",
        );
    }
}

#[tokio::test]
async fn fifty_concurrent_retries_with_one_idempotency_key_credit_once_and_answer_alike() {
    let (env, admin) = started().await;
    admin.post("/customers", &json!({"name": "ann"})).await;
    let admin = std::sync::Arc::new(admin);
    let retries: Vec<_> = (0..50)
        .map(|_| {
            let admin = admin.clone();
            tokio::spawn(async move {
                let body = json!({"amount": "10", "note": "order 77"});
                admin
                    .send(
                        "POST",
                        "/customers/ann/credit",
                        Some(&body),
                        &[("idempotency-key", "shop-77")],
                    )
                    .await
            })
        })
        .collect();
    for r in retries {
        let r = r.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(money(&r.json()["balance"]), dec("10"));
    }
    let ledger = admin.get("/customers/ann/ledger").await.json();
    assert_eq!(ledger["items"].as_array().unwrap().len(), 1);
    // The same key with another request is refused; on another endpoint it is another key.
    let other = json!({"amount": "11", "note": "order 77"});
    let r = admin
        .send(
            "POST",
            "/customers/ann/credit",
            Some(&other),
            &[("idempotency-key", "shop-77")],
        )
        .await;
    assert_error(&r, 409, "conflict");
    let r = admin
        .send(
            "POST",
            "/customers/ann/debit",
            Some(&json!({"amount": "1"})),
            &[("idempotency-key", "shop-77")],
        )
        .await;
    assert_eq!(money(&r.json()["balance"]), dec("9"));
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn read_tokens_read_and_are_refused_on_writes_and_bad_tokens_get_401() {
    let (env, admin) = started().await;
    let read = Admin::new(&env, &env.admin_token("viewer", Role::Read).await);
    assert_eq!(read.get("/customers").await.status, 200);
    assert_error(
        &read.post("/customers", &json!({"name": "x"})).await,
        403,
        "forbidden",
    );
    let mut nobody = Admin::new(&env, "not-a-token");
    let r = nobody.get("/customers").await;
    assert_error(&r, 401, "unauthorized");
    assert_eq!(r.headers.get("www-authenticate").unwrap(), "Bearer");
    nobody.token.clear();
    assert_error(&nobody.get("/audit").await, 401, "unauthorized");
    // The failed-key cap (20 a minute by default) holds for tokens too.
    let mut last = 0;
    for _ in 0..25 {
        last = Admin::new(&env, "guess").get("/customers").await.status;
    }
    assert_eq!(last, 429);
    // The document needs no token.
    let doc = env.http.get(&format!("{}/openapi.json", admin.base)).await;
    assert_eq!(doc.status, 200);
    assert_eq!(
        doc.json()["openapi"].as_str().unwrap().chars().next(),
        Some('3')
    );
}

#[tokio::test]
async fn malformed_requests_unknown_paths_and_methods_answer_json_errors() {
    let (_env, admin) = started().await;
    let refused = [
        admin
            .post("/customers", &json!({"name": "x", "colour": "red"}))
            .await,
        admin.send("POST", "/customers", None, &[]).await,
        admin.get("/customers?limit=0").await,
        admin.get("/customers?limit=501").await,
        admin.get("/orders?cursor=zzz").await,
        admin.get("/orders?state=lost").await,
        admin.post("/customers", &json!({"name": "x\u{0}"})).await,
        admin.get("/orders?customer=a%00").await,
        admin.get("/customers/a%00").await,
        admin.get("/orders?service=-1").await,
        admin
            .send(
                "POST",
                "/customers/x/credit",
                Some(&json!({"amount": "1"})),
                &[("idempotency-key", "a b")],
            )
            .await,
    ];
    for r in refused {
        assert_error(&r, 400, "bad_request");
    }
    assert_error(&admin.get("/nothing").await, 404, "not_found");
    let unknown_group = admin
        .post("/customers", &json!({"name": "x", "group": "nope"}))
        .await;
    assert_error(&unknown_group, 404, "not_found");
    assert_error(&admin.get("/orders/abc").await, 404, "not_found");
    let r = admin.send("DELETE", "/customers", None, &[]).await;
    assert_error(&r, 405, "method_not_allowed");
    assert_eq!(r.headers.get("allow").unwrap(), "GET, POST");
    let big = json!({"name": "x".repeat(100_000)});
    assert_error(
        &admin.post("/customers", &big).await,
        413,
        "payload_too_large",
    );
}

#[tokio::test]
async fn pages_walk_every_customer_once_and_search_finds_by_name() {
    let (_env, admin) = started().await;
    for name in ["e", "a", "d", "b", "c", "a/b"] {
        let r = admin.post("/customers", &json!({"name": name})).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/customers?limit=2&cursor={c}"),
            None => "/customers?limit=2".to_owned(),
        };
        let page = admin.get(&path).await.json();
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "a/b", "b", "c", "d", "e"]);
    let found = admin.get("/customers?q=%2F").await.json();
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    // A name holding `/` is one percent-encoded path segment.
    let r = admin
        .post("/customers/a%2Fb/credit", &json!({"amount": "1"}))
        .await;
    assert_eq!((r.status, r.json()["name"].clone()), (200, json!("a/b")));
    assert_eq!(admin.get("/customers/a%2Fb").await.json()["name"], "a/b");
}

#[tokio::test]
async fn orders_are_listed_filtered_shown_and_an_unknown_one_resolved() {
    let (env, admin) = started().await;
    let key = env.client("ann", "100", "default").await;
    env.client("bob", "100", "default").await;
    let placed = env
        .add(
            &key,
            "1",
            &[("link", "https://i.com/a"), ("quantity", "100")],
        )
        .await;
    env.set_faults(
        &env.alpha,
        ALPHA_KEY,
        json!({"hangup": 1, "actions": ["add"]}),
    )
    .await;
    let unknown = env
        .add(
            &key,
            "1",
            &[("link", "https://i.com/b"), ("quantity", "100")],
        )
        .await;
    assert_eq!(env.order(unknown).await.state, OrderState::Unknown);
    let all = admin.get("/orders?customer=ann").await.json();
    let ids: Vec<u64> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [unknown, placed]);
    let only = admin
        .get("/orders?state=unknown&upstream=alpha&service=1")
        .await
        .json();
    assert_eq!(only["items"].as_array().unwrap().len(), 1);
    assert!(
        admin.get("/orders?customer=bob").await.json()["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let page = admin.get("/orders?limit=1").await.json();
    assert_eq!(page["next_cursor"], json!(unknown.to_string()));
    let shown = admin.get(&format!("/orders/{placed}")).await.json();
    assert_eq!(shown["order"]["upstream"], "alpha");
    assert_eq!(shown["history"][0]["kind"], "charge");
    assert!(shown["order"]["upstream_order"].is_string());
    // Resolving takes exactly one of the two forms.
    let path = format!("/orders/{unknown}/resolve");
    assert_error(&admin.post(&path, &json!({})).await, 400, "bad_request");
    assert_error(
        &admin
            .post(&path, &json!({"upstream_order": "9", "not_placed": true}))
            .await,
        400,
        "bad_request",
    );
    assert_error(
        &admin.post(&path, &json!({"not_placed": false})).await,
        400,
        "bad_request",
    );
    let r = admin.post(&path, &json!({"not_placed": true})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["order"]["status"], "Canceled");
    assert_error(
        &admin.post(&path, &json!({"not_placed": true})).await,
        409,
        "conflict",
    );
    // Its status history: every change of state or status, oldest first.
    let shown = admin.get(&format!("/orders/{unknown}")).await.json();
    let steps: Vec<(String, String)> = shown["status_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["state"].to_string(), e["status"].to_string()))
        .collect();
    let expected = [
        ("dispatching", "Pending"),
        ("unknown", "Pending"),
        ("final", "Canceled"),
    ]
    .map(|(a, b)| (json!(a).to_string(), json!(b).to_string()));
    assert_eq!(steps, expected);
    assert_error(&admin.get("/orders/999999").await, 404, "not_found");
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn every_write_through_the_api_or_the_cli_leaves_an_audit_row_without_secrets() {
    let (env, admin) = started().await;
    let created = admin
        .post("/customers", &json!({"name": "ann"}))
        .await
        .json();
    admin
        .post("/customers/ann/credit", &json!({"amount": "5"}))
        .await;
    admin.post("/customers/ann/disable", &json!({})).await;
    let rotated = admin
        .post("/customers/ann/rotate-key", &json!({}))
        .await
        .json();
    admin.post("/customers/nobody/enable", &json!({})).await;
    env.cli(&["client", "credit", "ann", "1"]).await;
    let audit = admin.get("/audit").await;
    let rows: Vec<(String, String, String, String)> = audit.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap().to_owned();
            (s("actor"), s("action"), s("target"), s("outcome"))
        })
        .collect();
    let row = |a: &str, b: &str, c: &str, d: &str| {
        (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned())
    };
    assert_eq!(
        rows,
        [
            row("cli", "client.credit", "ann", "ok"),
            row("shop", "client.enable", "nobody", "not_found"),
            row("shop", "client.rotate_key", "ann", "ok"),
            row("shop", "client.disable", "ann", "ok"),
            row("shop", "client.credit", "ann", "ok"),
            row("shop", "client.add", "ann", "ok"),
            row("cli", "token.add", "shop", "ok"),
        ]
    );
    for secret in [&created["key"], &rotated["key"]] {
        assert!(!audit.text().contains(secret.as_str().unwrap()));
    }
    assert!(!audit.text().contains(&admin.token));
    assert!(admin.get("/customers/ann").await.json()["enabled"] == json!(false));
}

#[tokio::test]
async fn tokens_made_with_the_cli_work_until_revoked() {
    let (env, admin) = started().await;
    let out = env
        .cli(&["admin", "token", "add", "ops", "--role", "read"])
        .await;
    let made = Admin::new(&env, out.lines().last().unwrap());
    assert_eq!(made.get("/customers").await.status, 200);
    let listed = env.cli(&["admin", "token", "list"]).await;
    assert!(listed.contains("ops") && listed.contains("read") && listed.contains("shop"));
    assert!(!listed.contains(&made.token) && !listed.contains(&admin.token));
    env.cli(&["admin", "token", "revoke", "ops"]).await;
    assert_error(&made.get("/customers").await, 401, "unauthorized");
}

#[tokio::test]
async fn upstreams_show_health_and_balance_and_the_catalog_prices_per_group() {
    let (_env, admin) = started().await;
    let ups = admin.get("/upstreams").await.json();
    let alpha = &ups.as_array().unwrap()[0];
    assert_eq!(
        (
            alpha["name"].clone(),
            alpha["healthy"].clone(),
            alpha["breaker"].clone()
        ),
        (json!("alpha"), json!(true), json!("closed"))
    );
    assert!(alpha["balance"].is_string() && alpha["currency"] == "USD");
    let catalog = admin.get("/catalog").await.json();
    let one = catalog
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == 1)
        .unwrap();
    assert_eq!(one["targets"][0]["upstream"], "alpha");
    let default = one["prices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["group"] == "default")
        .unwrap();
    let (rate, cost) = (money(&default["rate"]), money(&one["targets"][0]["cost"]));
    assert_eq!(money(&default["margin"]), rate - cost);
    assert_eq!(default["below_cost"], false);
}

#[tokio::test]
async fn the_admin_listener_is_off_without_its_section_and_refuses_plaintext_off_loopback() {
    let env = Env::start(Options::default()).await;
    assert!(env.gw().admin_addr.is_none());
    let path = env.dir.path("admin.yaml");
    let base = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(&path, format!("{base}admin:\n  listen: \"0.0.0.0:0\"\n")).unwrap();
    let err = panelgate::config::load(&path).unwrap_err().to_string();
    assert!(err.contains("allow_plaintext"), "{err}");
    std::fs::write(
        &path,
        format!("{base}admin:\n  listen: \"0.0.0.0:0\"\n  allow_plaintext: true\n"),
    )
    .unwrap();
    assert!(panelgate::config::load(&path).is_ok());
}

#[tokio::test]
async fn an_order_waiting_for_a_refund_decision_is_settled_once_within_what_is_left() {
    let (env, admin) = started().await;
    let key = env.client("ann", "100", "default").await;
    let link = "https://i.com/a?sim-fate=partial&sim-remains=unknown";
    let id = env
        .add(&key, "1", &[("link", link), ("quantity", "1000")])
        .await;
    let o = env.wait_final(id).await;
    assert_eq!(
        o.attention.map(|a| a.as_str()),
        Some("partial_without_remains")
    );
    let charged = env.balance(&key).await;
    let path = format!("/orders/{id}/settle");
    let note = "ops: half was delivered";
    // Never more than the customer paid, always with a note, amounts as decimal strings.
    let too_much = admin
        .post(&path, &json!({"refund": "1000", "note": note}))
        .await;
    assert_error(&too_much, 400, "bad_request");
    let no_note = admin
        .post(&path, &json!({"refund": "0.5", "note": " "}))
        .await;
    assert_error(&no_note, 400, "bad_request");
    let not_money = admin
        .post(&path, &json!({"refund": 0.5, "note": note}))
        .await;
    assert_error(&not_money, 400, "bad_request");
    assert_eq!(env.balance(&key).await, charged);

    let r = admin
        .post(&path, &json!({"refund": "0.5", "note": note}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["order"]["attention"], Value::Null);
    assert_eq!(env.balance(&key).await, charged + dec("0.5"));
    // Settled once: the mark is gone, so a second settlement is a conflict.
    let again = admin
        .post(&path, &json!({"refund": "0.5", "note": note}))
        .await;
    assert_error(&again, 409, "conflict");
    assert_eq!(env.balance(&key).await, charged + dec("0.5"));
    let audit = admin.get("/audit").await.json();
    let settled = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "order.settle")
        .map(|a| (a["actor"].clone(), a["outcome"].clone()))
        .collect::<Vec<_>>();
    assert!(
        settled.contains(&(json!("shop"), json!("ok"))),
        "{settled:?}"
    );
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn a_placed_order_is_ended_with_the_upstreams_final_status_or_unlinked_as_the_cli_does() {
    let (env, admin) = started().await;
    let key = env.client("ann", "100", "default").await;
    let id = env.add_held(&key, "1000").await;
    let charge = env.order(id).await.charge;
    let path = format!("/orders/{id}/resolve");
    let refused = [
        json!({"status": "Partial"}),
        json!({"status": "In progress"}),
        json!({"status": "Partial", "remains": 400, "note": "x"}),
        json!({"status": "Partial", "remains": -1}),
    ];
    for body in refused {
        assert_error(&admin.post(&path, &body).await, 400, "bad_request");
    }
    let before = env.balance(&key).await;
    let r = admin
        .post(&path, &json!({"status": "partial", "remains": 400}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (&r.json()["order"]["state"], &r.json()["order"]["status"]),
        (&json!("final"), &json!("Partial"))
    );
    // The remains' share of the charge comes back: 400 of 1000.
    let refund = Decimal::new(charge * 400 / 1000, 5);
    assert_eq!(env.balance(&key).await, before + refund);
    assert_error(
        &admin.post(&path, &json!({"status": "Canceled"})).await,
        409,
        "conflict",
    );

    // Unlinking a placed order makes its outcome unknown, to be resolved again.
    let other = env.add_held(&key, "1000").await;
    let r = admin
        .post(&format!("/orders/{other}/unlink"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["order"]["state"], "unknown");
    assert_eq!(r.json()["order"]["upstream_order"], Value::Null);
    let unlink_again = admin
        .post(&format!("/orders/{other}/unlink"), &json!({}))
        .await;
    assert_error(&unlink_again, 409, "conflict");
    env.assert_ledgers_balance().await;
}
