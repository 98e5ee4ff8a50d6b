//! The open port: per-customer rate limits, key guessing, connection limits, body limits, TLS.

mod common;

use std::time::Duration;

use common::gw::{ALPHA_KEY, Env, Options};
use common::{Reply, skip};
use panelgate::store::OrderState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn balance_request(key: &str) -> Vec<u8> {
    let body = format!("key={key}&action=balance");
    format!(
        "POST /api/v2 HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The text of a rate-limit refusal that asks to wait `secs` seconds.
fn too_many(secs: u64) -> String {
    match secs {
        1 => "Too many requests, retry in 1 second".to_owned(),
        n => format!("Too many requests, retry in {n} seconds"),
    }
}

/// Asserts that `r` is the rate-limit refusal: HTTP 429, `Retry-After`, and the text with the
/// same wait, in words.
fn assert_too_many(r: &Reply) {
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r
        .headers
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(r.error(), too_many(retry));
}

/// Sends `pairs` as `key` until the rate limit refuses (within 10 tries), checking each reply
/// before that with `admitted`; returns the refusal.
async fn until_refused(env: &Env, key: &str, pairs: &[(&str, &str)]) -> Reply {
    until_refused_checking(env, key, pairs, |r| {
        assert_eq!(r.status, 200, "{}", r.text())
    })
    .await
}

async fn until_refused_checking(
    env: &Env,
    key: &str,
    pairs: &[(&str, &str)],
    admitted: impl Fn(&Reply),
) -> Reply {
    let mut all = vec![("key", key)];
    all.extend_from_slice(pairs);
    for _ in 0..10 {
        let r = env.http.form(&env.url(), &all).await;
        if r.status == 429 {
            return r;
        }
        admitted(&r);
    }
    panic!("{pairs:?} never refused");
}

#[tokio::test]
async fn each_customer_has_a_rate_limit_per_group() {
    let env = Env::start(Options {
        extra: "limits:\n  per_client_reads: { per_second: 1, burst: 3 }\n",
        ..Options::default()
    })
    .await;
    let ann = env.client("ann", "1", "default").await;
    let bob = env.client("bob", "1", "default").await;
    let vic = env.client("vic", "1", "vip").await;
    for _ in 0..3 {
        assert!(env.call(&ann, &[("action", "balance")]).await["balance"].is_string());
    }
    let r = env
        .http
        .form(&env.url(), &[("key", &ann), ("action", "balance")])
        .await;
    assert_too_many(&r);
    // Others are not held back by ann; the vip group's limit is higher.
    assert!(env.call(&bob, &[("action", "balance")]).await["balance"].is_string());
    for _ in 0..20 {
        assert!(env.call(&vic, &[("action", "balance")]).await["balance"].is_string());
    }
}

/// A panel stores an order whose status reply is an `error` as failed and stops polling it:
/// over the read limit, the customer's own orders are answered as last known (HTTP 200, no
/// upstream call, counted); only ids that are not theirs get the refusal.
#[tokio::test]
async fn statuses_over_the_read_limit_are_answered_as_last_known() {
    let env = Env::start(Options {
        sync_interval: "1h",
        extra: "limits:\n  per_client_reads: { per_second: 1, burst: 3 }\n",
        ..Options::default()
    })
    .await;
    let ann = env.client("ann", "10", "default").await;
    let bob = env.client("bob", "10", "default").await;
    let held = [
        ("link", "https://i.com/a?sim-fate=hold"),
        ("quantity", "100"),
    ];
    let order = env.add(&ann, "1", &held).await.to_string();
    let bobs = env.add(&bob, "1", &held).await.to_string();
    let asked_before = env.requests(&env.alpha, ALPHA_KEY, "status").await;

    let mut sent = 0;
    for _ in 0..15 {
        let one = [
            ("key", ann.as_str()),
            ("action", "status"),
            ("order", &order),
        ];
        let r = env.http.form(&env.url(), &one).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let last = r.json();
        assert_eq!(last["status"], "In progress", "{last}");
        assert_eq!(last["remains"], "50", "{last}");
        let orders = format!("{order},999999,{bobs}");
        let many = [
            ("key", ann.as_str()),
            ("action", "status"),
            ("orders", &orders),
        ];
        let r = env.http.form(&env.url(), &many).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = r.json();
        assert_eq!(r[order.as_str()], last, "{r}");
        assert_eq!(r["999999"]["error"], "Incorrect order ID", "{r}");
        assert_eq!(r[bobs.as_str()]["error"], "Incorrect order ID", "{r}");
        sent += 2;
    }
    let answered_held = env
        .metric(r#"panelgate_reads_over_limit_total{action="status"}"#)
        .await
        .unwrap_or(0.0) as u64;
    assert!(answered_held >= 1, "no status was over the limit");
    // Only the statuses within the limit may have asked the upstream.
    let asked = env.requests(&env.alpha, ALPHA_KEY, "status").await - asked_before;
    assert!(
        asked <= sent - answered_held,
        "{asked} upstream calls for {sent} polls, {answered_held} over the limit"
    );
    // None was refused.
    assert_eq!(env.metric("panelgate_rate_limited_total").await, Some(0.0));

    // Ids never seen, or another customer's: the refusal, never a status of theirs.
    for asked in ["999999", bobs.as_str()] {
        let pairs = [("action", "status"), ("order", asked)];
        // One that comes after the allowance refilled is answered as ever.
        let unknown = |r: &Reply| assert_eq!(r.error(), "Incorrect order ID");
        assert_too_many(&until_refused_checking(&env, &ann, &pairs, unknown).await);
    }
    let refused = env.metric("panelgate_rate_limited_total").await;
    assert!(refused >= Some(2.0), "{refused:?}");
}

/// Over the read limit, refill statuses are answered from the database and the services list
/// from the catalog held; a refill that is not the customer's gets the refusal.
#[tokio::test]
async fn refill_statuses_and_services_over_the_read_limit_are_answered_as_held() {
    let env = Env::start(Options {
        extra: "limits:\n  per_client_reads: { per_second: 1, burst: 3 }\n",
        ..Options::default()
    })
    .await;
    let ann = env.client("ann", "10", "default").await;
    let order = [
        ("link", "https://i.com/r?sim-fate=complete"),
        ("quantity", "100"),
    ];
    let id = env.add(&ann, "1", &order).await;
    env.wait_order(id, |o| o.state == OrderState::Final).await;
    let r = env
        .call(&ann, &[("action", "refill"), ("order", &id.to_string())])
        .await;
    let refill = r["refill"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_owned();
    for _ in 0..8 {
        let one = env
            .call(&ann, &[("action", "refill_status"), ("refill", &refill)])
            .await;
        assert!(one["status"].is_string(), "{one}");
        let many = format!("{refill},999");
        let both = env
            .call(&ann, &[("action", "refill_status"), ("refills", &many)])
            .await;
        assert_eq!(both[0]["status"], one["status"], "{both}");
        assert_eq!(both[1]["status"]["error"], "Refill not found", "{both}");
    }
    let series = r#"panelgate_reads_over_limit_total{action="refill_status"}"#;
    assert!(env.metric(series).await >= Some(1.0));
    let pairs = [("action", "refill_status"), ("refill", "999")];
    let unknown = |r: &Reply| assert_eq!(r.error(), "Refill not found");
    assert_too_many(&until_refused_checking(&env, &ann, &pairs, unknown).await);
    for _ in 0..8 {
        let list = env.call(&ann, &[("action", "services")]).await;
        assert!(list.as_array().is_some_and(|l| !l.is_empty()), "{list}");
    }
    let series = r#"panelgate_reads_over_limit_total{action="services"}"#;
    assert!(env.metric(series).await >= Some(1.0));
}

#[tokio::test]
async fn reads_and_writes_draw_on_allowances_of_their_own() {
    let env = Env::start(Options {
        extra: "limits:\n  per_client: { per_second: 1, burst: 3 }\n  per_client_reads: { per_second: 1, burst: 3 }\n",
        ..Options::default()
    })
    .await;
    let ann = env.client("ann", "10", "default").await;
    // Reads spent: balance is refused (a fresh read of the customer's money, no order's fate).
    let r = until_refused(&env, &ann, &[("action", "balance")]).await;
    assert_too_many(&r);
    // Writes are untouched by reads: a full allowance of adds, then the refusal.
    let order = [("link", "https://i.com/w"), ("quantity", "100")];
    for _ in 0..3 {
        env.add(&ann, "1", &order).await;
    }
    let add = [
        ("action", "add"),
        ("service", "1"),
        ("link", "https://i.com/w"),
        ("quantity", "100"),
    ];
    assert_too_many(&until_refused(&env, &ann, &add).await);

    // A request whose action cannot be read counts as a write, and leaves reads alone.
    let bob = env.client("bob", "10", "default").await;
    let bogus = [("action", "bogus")];
    let unreadable = |r: &Reply| assert_eq!(r.error(), "Incorrect request");
    assert_too_many(&until_refused_checking(&env, &bob, &bogus, unreadable).await);
    for _ in 0..3 {
        assert!(env.call(&bob, &[("action", "balance")]).await["balance"].is_string());
    }
}

#[tokio::test]
async fn a_reload_applies_new_rate_limits_and_starts_them_afresh() {
    let env = Env::start(Options {
        extra: "limits:\n  per_client_reads: { per_second: 1, burst: 2 }\n",
        ..Options::default()
    })
    .await;
    let ann = env.client("ann", "10", "default").await;
    let balance = [("action", "balance")];
    assert_too_many(&until_refused(&env, &ann, &balance).await);
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let edit = |from: &str, to: &str| {
        assert!(text.contains(from));
        std::fs::write(&env.config_path, text.replace(from, to)).unwrap();
    };
    // Raised: at once, and from a full allowance.
    edit(
        "per_client_reads: { per_second: 1, burst: 2 }",
        "per_client_reads: { per_second: 1, burst: 30 }",
    );
    env.gw().reload().await.unwrap();
    for _ in 0..10 {
        assert!(env.call(&ann, &balance).await["balance"].is_string());
    }
    // Lowered, writes too (by default 100 in a burst).
    edit(
        "per_client_reads: { per_second: 1, burst: 2 }",
        "per_client_reads: { per_second: 1, burst: 2 }\n  per_client: { per_second: 1, burst: 2 }",
    );
    env.gw().reload().await.unwrap();
    assert_too_many(&until_refused(&env, &ann, &balance).await);
    let cancel = [("action", "cancel"), ("order", "1")];
    assert_too_many(&until_refused(&env, &ann, &cancel).await);
}

#[tokio::test]
async fn guessing_keys_gets_an_address_shut_out_for_a_while() {
    let env = Env::start(Options {
        extra: "limits:\n  failed_keys_per_minute: 3\n",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "1", "default").await;
    for guess in ["a", "b", "c"] {
        assert_eq!(
            env.call(guess, &[("action", "balance")]).await["error"],
            "Invalid API key"
        );
    }
    // From this address, even the right key is refused until the minute is over.
    let r = env
        .http
        .form(&env.url(), &[("key", &key), ("action", "balance")])
        .await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((59..=60).contains(&retry), "{retry}");
    assert!(
        r.error().starts_with("Too many failed API key attempts"),
        "{}",
        r.text()
    );
    // The gateway shares this test's clock: move it past most of the minute, then past all.
    // A new connection each time: skipping ahead also runs out the server's idle timeouts.
    let balance = || async {
        common::Http::default()
            .form(&env.url(), &[("key", &key), ("action", "balance")])
            .await
    };
    skip(Duration::from_secs(55)).await;
    assert_eq!(balance().await.status, 429, "the lockout ended early");
    skip(Duration::from_secs(6)).await;
    let r = balance().await;
    assert_eq!((r.status, &r.json()["balance"]), (200, &"1.00000".into()));
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_their_turn() {
    let env = Env::start(Options {
        extra: "limits:\n  max_connections: 2\n",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "1", "default").await;
    let addr = env.gw().addr;
    // Two kept-alive connections, each known to be taken because it was answered once.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(&balance_request(&key)).await.unwrap();
        let mut reply = vec![0u8; 4096];
        let n = conn.read(&mut reply).await.unwrap();
        assert!(String::from_utf8_lossy(&reply[..n]).starts_with("HTTP/1.1 200"));
        held.push(conn);
    }
    let idle1 = held.remove(0);
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(&balance_request(&key)).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond the connection limit");
    drop(idle1);
    let n = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf))
        .await
        .expect("served once a slot frees up")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn bodies_over_the_configured_limit_are_refused() {
    let env = Env::start(Options {
        extra: "limits:\n  max_body_bytes: 1024\n",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "1", "default").await;
    let pad = "a".repeat(2000);
    let r = env
        .http
        .form(
            &env.url(),
            &[("key", &key), ("action", "balance"), ("pad", &pad)],
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (413, "Request body too large".to_owned())
    );
}

#[tokio::test]
async fn tls_termination() {
    let dir = common::gw::Scratch::new("tls");
    let certs = common::SelfSigned::new(&dir);
    let env = Env::start(Options {
        extra: certs.section(0),
        ..Options::default()
    })
    .await;
    assert!(env.gw().url().starts_with("https://"));
    let key = env.client("ann", "1", "default").await;

    let mut tls = certs.connect(env.gw().addr).await;
    tls.write_all(&balance_request(&key)).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tls.read(&mut buf).await.unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.contains(r#""balance":"1.00000""#),
        "{reply}"
    );
    // Plain HTTP on the TLS port gets nowhere.
    let plain = common::raw(
        env.gw().addr,
        &balance_request(&key),
        Duration::from_secs(5),
    )
    .await;
    assert!(!String::from_utf8_lossy(&plain).contains("balance"));
}
