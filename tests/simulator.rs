//! The simulated panel, black-box over loopback: every action in every request shape, every
//! reply shape and error text of API v2, faults, the journal, and scaled time.

mod common;

use std::time::Duration;

use common::reference::{refund, units, wire};
use common::{Http, KEY, encode, fast_config, raw, simulator};
use panelgate::sim::{Chance, Faults, SimConfig};
use rust_decimal::Decimal;
use serde_json::{Value, json};

fn dec(v: &Value) -> Decimal {
    common::gw::money(v)
}

async fn balance(http: &Http, url: &str) -> Decimal {
    dec(&http
        .form(url, &[("key", KEY), ("action", "balance")])
        .await
        .json()["balance"])
}

/// Places an order and returns its id.
async fn add(http: &Http, url: &str, fields: &[(&str, &str)]) -> u64 {
    let mut pairs = vec![("key", KEY), ("action", "add")];
    pairs.extend_from_slice(fields);
    let r = http.form(url, &pairs).await;
    r.json()["order"]
        .as_u64()
        .unwrap_or_else(|| panic!("no order id: {}", r.text()))
}

/// Polls `status` until the order is final (bounded: the clock runs 100 000× fast).
async fn wait_final(http: &Http, url: &str, order: u64) -> Value {
    for _ in 0..500 {
        let s = http
            .form(
                url,
                &[
                    ("key", KEY),
                    ("action", "status"),
                    ("order", &order.to_string()),
                ],
            )
            .await
            .json();
        if matches!(
            s["status"].as_str(),
            Some("Completed" | "Partial" | "Canceled")
        ) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("order {order} never finished");
}

#[tokio::test]
async fn services_in_every_request_shape() {
    let sim = simulator(fast_config()).await;
    let http = Http::default();
    let url = sim.url();
    let shapes = [
        http.form(&url, &[("key", KEY), ("action", "services")])
            .await,
        http.get(&format!("{url}?key={KEY}&action=services")).await,
        http.json(&url, &json!({"key": KEY, "action": "services"}))
            .await,
        // Query and body merged; the trailing slash is the same endpoint, never a redirect.
        http.post(
            &format!("{url}/?action=services"),
            "application/x-www-form-urlencoded",
            format!("key={KEY}"),
        )
        .await,
    ];
    for r in &shapes {
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.location.is_none());
        assert!(
            r.content_type
                .as_deref()
                .unwrap()
                .starts_with("application/json")
        );
        assert_eq!(r.body, shapes[0].body);
    }
    let list = shapes[0].json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 20);
    assert_eq!(
        list[0],
        json!({"service":101,"name":"Instagram Followers [Real, 30 days refill]","type":"Default",
               "category":"Instagram Followers","rate":"0.90","min":"50","max":"10000",
               "refill":true,"cancel":true,"dripfeed":true})
    );
    // Field order and JSON types exactly as the seed shows them.
    let text = shapes[0].text();
    assert!(text.starts_with(r#"[{"service":101,"name":"#), "{text}");
    for entry in list {
        assert!(entry["service"].is_u64());
        for field in ["rate", "min", "max", "name", "type", "category"] {
            assert!(entry[field].is_string(), "{field} in {entry}");
        }
        for field in ["refill", "cancel", "dripfeed"] {
            assert!(entry[field].is_boolean(), "{field} in {entry}");
        }
    }
}

#[tokio::test]
async fn every_service_type_can_be_ordered_and_is_charged_exactly() {
    let sim = simulator(fast_config()).await;
    let http = Http::default();
    let url = sim.url();
    // (service, fields, charge): rate × billed / 1000 rounded up, or the package rate.
    type Case = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "101",
            vec![("link", "https://i.com/a"), ("quantity", "157")],
            "0.14130",
        ),
        (
            "101",
            vec![
                ("link", "https://i.com/a"),
                ("quantity", "100"),
                ("runs", "3"),
                ("interval", "10"),
            ],
            "0.27",
        ),
        (
            "103",
            vec![
                ("link", "https://i.com/p"),
                (
                    "comments",
                    "c1\r\nc2\n\nc3\nc4\nc5\r\nc6\nc7\nc8\nc9\nc10\n",
                ),
            ],
            "0.08",
        ),
        (
            "104",
            vec![("link", "https://i.com/p"), ("comments", "a\nb\nc\nd\ne")],
            "2.5",
        ),
        (
            "105",
            vec![
                ("link", "https://i.com/p"),
                ("quantity", "100"),
                ("usernames", "u1\nu2"),
            ],
            "0.32",
        ),
        (
            "106",
            vec![
                ("link", "https://i.com/p"),
                ("quantity", "100"),
                ("usernames", "u1"),
                ("hashtags", "#a\n#b"),
            ],
            "0.38",
        ),
        (
            "107",
            vec![
                ("link", "https://i.com/p"),
                ("usernames", "a\nb\nc\nd\ne\nf\ng\nh\ni\nj"),
            ],
            "0.04",
        ),
        (
            "108",
            vec![
                ("link", "https://i.com/p"),
                ("quantity", "100"),
                ("hashtag", "#sun"),
            ],
            "0.35",
        ),
        (
            "109",
            vec![
                ("link", "https://i.com/p"),
                ("quantity", "100"),
                ("username", "bob"),
            ],
            "0.35",
        ),
        (
            "110",
            vec![
                ("link", "https://i.com/p"),
                ("quantity", "100"),
                ("media", "https://i.com/m"),
            ],
            "0.35",
        ),
        (
            "111",
            vec![
                ("link", "https://i.com/p"),
                ("quantity", "20"),
                ("username", "bob"),
            ],
            "0.024",
        ),
        (
            "112",
            vec![
                ("link", "https://i.com/p"),
                ("username", "bob"),
                ("comments", "hi\nyo"),
            ],
            "0.024",
        ),
        (
            "113",
            vec![
                ("link", "https://t.com/p"),
                ("quantity", "100"),
                ("answer_number", "2"),
            ],
            "0.21",
        ),
        (
            "114",
            vec![
                ("link", "https://t.me/g"),
                ("quantity", "100"),
                ("groups", "g1\ng2"),
            ],
            "0.65",
        ),
        (
            "115",
            vec![
                ("link", "https://site.com"),
                ("quantity", "1000"),
                ("country", "US"),
                ("device", "2"),
                ("type_of_traffic", "1"),
                ("google_keyword", "shoes"),
            ],
            "0.05",
        ),
        (
            "116",
            vec![
                ("username", "bob"),
                ("min", "50"),
                ("max", "100"),
                ("posts", "3"),
                ("delay", "30"),
                ("expiry", "31/12/2027"),
            ],
            "0",
        ),
        ("119", vec![("link", "https://y.com/v")], "3"),
    ];
    for (service, fields, charge) in cases {
        let before = balance(&http, &url).await;
        let mut all = vec![("service", service)];
        all.extend(fields);
        let id = add(&http, &url, &all).await;
        let after = balance(&http, &url).await;
        assert_eq!(
            before - after,
            charge.parse::<Decimal>().unwrap(),
            "service {service}"
        );
        let s = http
            .form(
                &url,
                &[
                    ("key", KEY),
                    ("action", "status"),
                    ("order", &id.to_string()),
                ],
            )
            .await
            .json();
        assert_eq!(s["charge"], wire(units(charge)), "service {service}");
    }
}

#[tokio::test]
async fn add_is_validated_with_the_real_texts() {
    let mut cfg = fast_config();
    cfg.balance = "1".parse().unwrap();
    let sim = simulator(cfg).await;
    let http = Http::default();
    let url = sim.url();
    let err = |fields: Vec<(&'static str, &'static str)>| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let mut pairs = vec![("key", KEY), ("action", "add")];
            pairs.extend(fields);
            let r = http.form(&url, &pairs).await;
            assert_eq!(r.status, 200);
            r.error()
        }
    };
    assert_eq!(
        err(vec![("service", "101"), ("link", "x"), ("quantity", "49")]).await,
        "Quantity less than minimal 50"
    );
    assert_eq!(
        err(vec![
            ("service", "101"),
            ("link", "x"),
            ("quantity", "10001")
        ])
        .await,
        "Quantity more than maximum 10000"
    );
    assert_eq!(
        err(vec![
            ("service", "101"),
            ("link", "x"),
            ("quantity", "5000")
        ])
        .await,
        "Not enough funds on balance"
    );
    assert_eq!(
        err(vec![("service", "999"), ("link", "x"), ("quantity", "100")]).await,
        "Incorrect service ID"
    );
    assert_eq!(
        err(vec![("service", "abc"), ("link", "x"), ("quantity", "100")]).await,
        "Incorrect service ID"
    );
    assert_eq!(
        err(vec![("service", "101"), ("quantity", "100")]).await,
        "Missing parameter: link"
    );
    assert_eq!(
        err(vec![("service", "101"), ("link", "x"), ("quantity", "ten")]).await,
        "Incorrect quantity"
    );
    assert_eq!(
        err(vec![
            ("service", "101"),
            ("link", "x"),
            ("quantity", "100"),
            ("runs", "2")
        ])
        .await,
        "Drip-feed needs both runs and interval"
    );
    assert_eq!(
        err(vec![
            ("service", "118"),
            ("link", "x"),
            ("quantity", "100"),
            ("runs", "2"),
            ("interval", "5")
        ])
        .await,
        "Drip-feed is disabled for this service"
    );
    assert_eq!(
        err(vec![
            ("service", "103"),
            ("link", "x"),
            ("comments", "\n\r\n")
        ])
        .await,
        "Missing parameter: comments"
    );
    // `undefined` (a Node SDK's unset field) is no field at all.
    let id = add(
        &http,
        &url,
        &[
            ("service", "102"),
            ("link", "x"),
            ("quantity", "100"),
            ("runs", "undefined"),
            ("interval", "undefined"),
        ],
    )
    .await;
    assert!(id > 0);
    // Nothing was charged for any refusal.
    assert_eq!(
        balance(&http, &url).await,
        "0.955".parse::<Decimal>().unwrap()
    );
}

#[tokio::test]
async fn status_refill_and_cancel_in_single_and_multi_form() {
    let sim = simulator(fast_config()).await;
    let http = Http::default();
    let url = sim.url();
    let done = add(
        &http,
        &url,
        &[
            ("service", "101"),
            ("link", "https://i.com/a?sim-fate=complete"),
            ("quantity", "1000"),
        ],
    )
    .await;
    let held = add(
        &http,
        &url,
        &[
            ("service", "101"),
            ("link", "https://i.com/b?sim-fate=hold"),
            ("quantity", "1000"),
        ],
    )
    .await;
    let s = wait_final(&http, &url, done).await;
    assert_eq!(
        s,
        json!({"charge":"0.90000","start_count":s["start_count"],"status":"Completed","remains":"0","currency":"USD"})
    );
    assert!(s["start_count"].is_string());

    let (d, h) = (done.to_string(), held.to_string());
    let multi = http
        .form(
            &url,
            &[
                ("key", KEY),
                ("action", "status"),
                ("orders", &format!("{d},{h},99999")),
            ],
        )
        .await;
    let text = multi.text();
    assert!(
        text.starts_with(&format!(r#"{{"{d}":{{"charge""#)),
        "{text}"
    );
    let multi = multi.json();
    assert_eq!(multi[&d]["status"], "Completed");
    assert_eq!(multi[&h]["status"], "In progress");
    assert_eq!(multi["99999"], json!({"error": "Incorrect order ID"}));
    // The seed's multi_status name and PHP arrays mean the same.
    let again = http
        .form(
            &url,
            &[
                ("key", KEY),
                ("action", "multi_status"),
                ("orders[0]", &d),
                ("orders[1]", &h),
                ("orders[2]", "99999"),
            ],
        )
        .await
        .json();
    assert_eq!(
        again.as_object().unwrap().keys().collect::<Vec<_>>(),
        multi.as_object().unwrap().keys().collect::<Vec<_>>()
    );

    // Refill: a string id in the single form, a number in the multi form.
    let r = http
        .form(&url, &[("key", KEY), ("action", "refill"), ("order", &d)])
        .await
        .json();
    let refill: u64 = r["refill"]
        .as_str()
        .expect("refill id is a string")
        .parse()
        .unwrap();
    let m = http
        .form(
            &url,
            &[
                ("key", KEY),
                ("action", "refill"),
                ("orders", &format!("{d},{h},99999")),
            ],
        )
        .await
        .json();
    assert_eq!(
        m,
        json!([
            {"order": done, "refill": {"error": "The refill task is not completed for this order"}},
            {"order": held, "refill": {"error": "The order is not completed yet"}},
            {"order": 99999, "refill": {"error": "Incorrect order ID"}}
        ])
    );
    let rs = http
        .form(
            &url,
            &[
                ("key", KEY),
                ("action", "refill_status"),
                ("refill", &refill.to_string()),
            ],
        )
        .await
        .json();
    assert!(
        ["Pending", "In progress", "Completed", "Rejected"]
            .contains(&rs["status"].as_str().unwrap())
    );
    let mrs = http
        .form(
            &url,
            &[
                ("key", KEY),
                ("action", "refill_status"),
                ("refills", &format!("{refill},77777")),
            ],
        )
        .await
        .json();
    assert_eq!(mrs[0]["refill"], json!(refill));
    assert!(mrs[0]["status"].is_string());
    assert_eq!(
        mrs[1],
        json!({"refill": 77777, "status": {"error": "Refill not found"}})
    );
    let single_missing = http
        .form(
            &url,
            &[
                ("key", KEY),
                ("action", "refill_status"),
                ("refill", "77777"),
            ],
        )
        .await;
    assert_eq!(single_missing.error(), "Refill not found");

    // Cancel: always the list shape, also for a single `order`.
    let before = balance(&http, &url).await;
    let c = http
        .form(
            &url,
            &[
                ("key", KEY),
                ("action", "cancel"),
                ("orders", &format!("99999,{h},{d}")),
            ],
        )
        .await
        .json();
    assert_eq!(
        c,
        json!([
            {"order": 99999, "cancel": {"error": "Incorrect order ID"}},
            {"order": held, "cancel": 1},
            {"order": done, "cancel": {"error": "The order cannot be canceled"}}
        ])
    );
    let single = http
        .form(&url, &[("key", KEY), ("action", "cancel"), ("order", &h)])
        .await
        .json();
    assert_eq!(
        single,
        json!([{"order": held, "cancel": {"error": "The order cannot be canceled"}}])
    );
    // Half delivered when canceled: Partial, the other half refunded to the panel's balance.
    let s = http
        .form(&url, &[("key", KEY), ("action", "status"), ("order", &h)])
        .await
        .json();
    assert_eq!(
        (s["status"].as_str(), s["remains"].as_str()),
        (Some("Partial"), Some("500"))
    );
    assert_eq!(s["charge"], "0.45000");
    assert_eq!(
        balance(&http, &url).await - before,
        "0.45".parse::<Decimal>().unwrap()
    );
}

#[tokio::test]
async fn partial_and_canceled_orders_are_refunded_to_the_panel_balance() {
    let sim = simulator(fast_config()).await;
    let http = Http::default();
    let url = sim.url();
    let start = balance(&http, &url).await;
    let p = add(
        &http,
        &url,
        &[
            ("service", "101"),
            ("link", "l?sim-fate=partial"),
            ("quantity", "1000"),
        ],
    )
    .await;
    let c = add(
        &http,
        &url,
        &[
            ("service", "101"),
            ("link", "l?sim-fate=cancel"),
            ("quantity", "1000"),
        ],
    )
    .await;
    let sp = wait_final(&http, &url, p).await;
    let sc = wait_final(&http, &url, c).await;
    assert_eq!(sp["status"], "Partial");
    assert_eq!(sc["status"], "Canceled");
    assert_eq!(sc["charge"], "0.00000");
    let remains: u64 = sp["remains"].as_str().unwrap().parse().unwrap();
    assert!(remains > 0 && remains < 1000);
    // 0.90 paid for 1000 units: the undelivered share of it, rounded down, comes back.
    let kept = units("0.9") - refund(units("0.9"), 1000, remains);
    assert_eq!(sp["charge"], wire(kept));
    assert_eq!(start - balance(&http, &url).await, dec(&sp["charge"]));
}

#[tokio::test]
async fn orders_progress_in_scaled_time() {
    let mut cfg = fast_config();
    cfg.speed = 1000.0;
    let sim = simulator(cfg).await;
    let http = Http::default();
    let url = sim.url();
    let id = add(
        &http,
        &url,
        &[("service", "101"), ("link", "x"), ("quantity", "3000")],
    )
    .await;
    let first = http
        .form(
            &url,
            &[
                ("key", KEY),
                ("action", "status"),
                ("order", &id.to_string()),
            ],
        )
        .await
        .json();
    assert_eq!(first["status"], "Pending");
    assert_eq!(first["remains"], "3000");
    let mut seen = vec![first["status"].as_str().unwrap().to_owned()];
    for _ in 0..2000 {
        let s = http
            .form(
                &url,
                &[
                    ("key", KEY),
                    ("action", "status"),
                    ("order", &id.to_string()),
                ],
            )
            .await
            .json();
        let status = s["status"].as_str().unwrap().to_owned();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if status == "Completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, ["Pending", "In progress", "Completed"]);
}

#[tokio::test]
async fn refusals_of_the_request_itself() {
    let sim = simulator(fast_config()).await;
    let http = Http::default();
    let url = sim.url();
    let form = |body: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.post(&url, "application/x-www-form-urlencoded", body)
                .await
        }
    };
    assert_eq!(
        form(format!("key={KEY}&action=fly")).await.error(),
        "Incorrect request"
    );
    assert_eq!(
        form(format!("key={KEY}")).await.error(),
        "Incorrect request"
    );
    assert_eq!(
        form("action=balance".into()).await.error(),
        "Invalid API key"
    );
    assert_eq!(
        form("key=wrong&action=balance".into()).await.error(),
        "Invalid API key"
    );
    assert_eq!(
        form(format!("key={KEY}&action=status&orders="))
            .await
            .error(),
        "Incorrect order ID"
    );
    assert_eq!(
        form(format!("key={KEY}&action=status&orders=1,two"))
            .await
            .error(),
        "Incorrect order ID"
    );
    let ids: Vec<String> = (1..=101).map(|i| i.to_string()).collect();
    let r = form(format!(
        "key={KEY}&action=status&orders={}",
        ids.join("%2C")
    ))
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.error(), "Too many IDs: at most 100 per request");
    let r = form(format!(
        "key={KEY}&action=status&orders={}",
        ids[..100].join(",")
    ))
    .await;
    assert_eq!(r.json().as_object().unwrap().len(), 100);

    let r = http
        .post(&url, "application/json", "{\"key\": \"x\", ")
        .await;
    assert_eq!((r.status, r.error()), (200, "Incorrect request".to_owned()));
    let r = http.post(&url, "application/json", "[1,2]").await;
    assert_eq!(r.error(), "Incorrect request");
    let r = http
        .post(
            &url,
            "application/x-www-form-urlencoded",
            &b"key=\xff\xfe&action=balance"[..],
        )
        .await;
    assert_eq!(r.error(), "Incorrect request");
    let r = http
        .post(
            &url,
            "application/x-www-form-urlencoded",
            format!("key={KEY}&action=add&service=101&link=%FF&quantity=100"),
        )
        .await;
    assert_eq!(r.error(), "Incorrect request");
    let r = http
        .post(&url, "multipart/form-data; boundary=x", "--x\r\n")
        .await;
    assert!(r.error().starts_with("Incorrect request"));
    // JSON numbers and strings alike.
    let r = http
        .json(
            &url,
            &json!({"key": KEY, "action": "add", "service": 102, "link": "x", "quantity": 100}),
        )
        .await;
    assert!(r.json()["order"].is_u64());
    let r = http
        .json(
            &url,
            &json!({"key": KEY, "action": "add", "service": "102", "link": "x", "quantity": "100"}),
        )
        .await;
    assert!(r.json()["order"].is_u64());
    // Oversized body: refused before it is read, with a JSON error.
    let big = format!("key={KEY}&action=balance&pad={}", "a".repeat(2 << 20));
    let r = form(big).await;
    assert_eq!(
        (r.status, r.error()),
        (413, "Request body too large".to_owned())
    );
    // Other paths and methods: JSON errors, never HTML, never a redirect.
    let r = http.get(&format!("http://{}/api/v1", sim.addr)).await;
    assert_eq!(r.status, 404);
    assert!(r.content_type.unwrap().starts_with("application/json"));
    let req = http::Request::delete(&url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let r = http.send(req).await;
    assert_eq!((r.status, r.error()), (405, "Incorrect request".to_owned()));
}

#[tokio::test]
async fn a_body_without_length_over_the_limit_is_cut_off() {
    let mut cfg = fast_config();
    cfg.limits.max_body_bytes = 1024;
    let sim = simulator(cfg).await;
    let chunk = format!("{:x}\r\n{}\r\n", 4096, "a".repeat(4096));
    let request = format!(
        "POST /api/v2 HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ntransfer-encoding: chunked\r\n\r\n{chunk}0\r\n\r\n"
    );
    let out = raw(sim.addr, request.as_bytes(), Duration::from_secs(5)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(
        out.contains(r#"{"error":"Request body too large"}"#),
        "{out}"
    );
}

#[tokio::test]
async fn a_slow_header_is_dropped() {
    let mut cfg = fast_config();
    cfg.limits.header_read_timeout = Duration::from_millis(200);
    let sim = simulator(cfg).await;
    // Half a request head, then silence: the server must hang up rather than wait forever.
    let out = raw(
        sim.addr,
        b"POST /api/v2 HTTP/1.1\r\nhost: x\r\n",
        Duration::from_secs(20),
    )
    .await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 408"), "{out}");
}

#[tokio::test]
async fn journal_records_every_created_order() {
    let dir = std::env::temp_dir().join(format!("panelgate-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("journal.jsonl");
    let _ = std::fs::remove_file(&path);
    let mut cfg = fast_config();
    cfg.journal = Some(path.clone());
    let sim = simulator(cfg).await;
    let http = Http::default();
    let url = sim.url();
    let a = add(
        &http,
        &url,
        &[
            ("service", "101"),
            ("link", "https://i.com/a"),
            ("quantity", "100"),
        ],
    )
    .await;
    let _refused = http
        .form(
            &url,
            &[
                ("key", KEY),
                ("action", "add"),
                ("service", "101"),
                ("link", "x"),
                ("quantity", "1"),
            ],
        )
        .await;
    let b = add(
        &http,
        &url,
        &[("service", "119"), ("link", "https://y.com/v")],
    )
    .await;
    let lines: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["order"], json!(a));
    assert_eq!(lines[0]["service"], json!(101));
    assert_eq!(lines[0]["link"], json!("https://i.com/a"));
    assert_eq!(lines[0]["quantity"], json!(100));
    assert_eq!(lines[0]["charge"], json!("0.09000"));
    assert_eq!(lines[1]["order"], json!(b));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn faults_can_be_injected_and_changed_at_run_time() {
    let dir = std::env::temp_dir().join(format!("panelgate-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let journal = dir.join("journal.jsonl");
    let _ = std::fs::remove_file(&journal);
    let mut cfg = fast_config();
    cfg.journal = Some(journal.clone());
    let sim = simulator(cfg).await;
    let http = Http::default();
    let url = sim.url();
    let control = format!("http://{}/_sim/faults?key={KEY}", sim.addr);
    let set = |faults: Value| {
        let http = http.clone();
        let control = control.clone();
        async move {
            let r = http.json(&control, &faults).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    };
    let order = [
        ("key", KEY),
        ("action", "add"),
        ("service", "102"),
        ("link", "x"),
        ("quantity", "100"),
    ];

    set(json!({"http500": 1})).await;
    let r = http.form(&url, &order).await;
    assert_eq!(r.status, 500);
    assert!(r.text().contains("<html>"));

    set(json!({"garbage": "100%"})).await;
    let r = http.form(&url, &order).await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());

    set(json!({"error": 1, "error_text": "Not enough funds on balance"})).await;
    assert_eq!(
        http.form(&url, &order).await.error(),
        "Not enough funds on balance"
    );

    // Only `add` is faulted: other actions answer normally.
    set(json!({"http500": 1, "actions": ["add"]})).await;
    assert_eq!(
        http.form(&url, &[("key", KEY), ("action", "balance")])
            .await
            .status,
        200
    );

    // None of the above created an order.
    let state = http
        .get(&format!("http://{}/_sim/state?key={KEY}", sim.addr))
        .await
        .json();
    assert_eq!(state["orders"], 0);

    // Hang-up after the request was read: no reply, but the order exists.
    set(json!({"hangup": 1, "actions": ["add"]})).await;
    let body = common::encode(&order);
    let request = format!(
        "POST /api/v2 HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let out = raw(sim.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    let state = http
        .get(&format!("http://{}/_sim/state?key={KEY}", sim.addr))
        .await
        .json();
    assert_eq!(state["orders"], 1);
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap().lines().count(),
        1
    );

    // Slow replies arrive late but whole.
    set(json!({"slow": 1, "slow_ms": 300})).await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        http.form(&url, &[("key", KEY), ("action", "balance")])
            .await
            .status,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Back to normal; the control path itself needs the key and refuses bad settings.
    set(json!({})).await;
    assert!(http.form(&url, &order).await.json()["order"].is_u64());
    let r = http
        .json(
            &format!("http://{}/_sim/faults?key=nope", sim.addr),
            &json!({}),
        )
        .await;
    assert_eq!(r.error(), "Invalid API key");
    let r = http.json(&control, &json!({"http500": 2})).await;
    assert_eq!(r.status, 400);
    let r = http.json(&control, &json!({"typo": 1})).await;
    assert_eq!(r.status, 400);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn faults_from_the_start_follow_the_seed() {
    let run = || async {
        let mut cfg = fast_config();
        cfg.seed = 99;
        cfg.faults = Faults {
            error: Chance::parse("0.5").unwrap(),
            ..Faults::default()
        };
        let sim = simulator(cfg).await;
        let http = Http::default();
        let mut outcomes = Vec::new();
        for _ in 0..40 {
            let r = http
                .form(&sim.url(), &[("key", KEY), ("action", "balance")])
                .await;
            outcomes.push(r.json().get("error").is_some());
        }
        outcomes
    };
    let a = run().await;
    assert_eq!(a, run().await);
    assert!(a.iter().any(|&e| e) && a.iter().any(|&e| !e));
}

#[tokio::test]
async fn the_same_seed_gives_the_same_orders() {
    let run = || async {
        let mut cfg = SimConfig::new(KEY);
        cfg.speed = 100_000.0;
        cfg.seed = 1234;
        let sim = simulator(cfg).await;
        let http = Http::default();
        let url = sim.url();
        let mut ids = Vec::new();
        for i in 0..30 {
            ids.push(
                add(
                    &http,
                    &url,
                    &[
                        ("service", "101"),
                        ("link", &format!("l{i}")),
                        ("quantity", "1000"),
                    ],
                )
                .await,
            );
        }
        let mut finals = Vec::new();
        for id in ids {
            let s = wait_final(&http, &url, id).await;
            finals.push((
                id,
                s["status"].clone(),
                s["remains"].clone(),
                s["charge"].clone(),
                s["start_count"].clone(),
            ));
        }
        finals
    };
    let a = run().await;
    assert_eq!(a, run().await);
    // With the default shares, 30 orders show more than one ending.
    let endings: std::collections::HashSet<_> = a.iter().map(|f| f.1.to_string()).collect();
    assert!(endings.len() > 1, "{endings:?}");
}

#[tokio::test]
async fn generated_catalog_for_benchmarks() {
    let mut cfg = fast_config();
    cfg.services = panelgate::sim::catalog::generated(3000, 1);
    let sim = simulator(cfg).await;
    let r = Http::default()
        .form(&sim.url(), &[("key", KEY), ("action", "services")])
        .await;
    assert_eq!(r.json().as_array().unwrap().len(), 3000);
    assert!(encode(&[("a", "b c")]) == "a=b+c");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cfg = fast_config();
    cfg.limits.header_read_timeout = Duration::from_millis(200);
    let sim = simulator(cfg).await;
    let mut stream = tokio::net::TcpStream::connect(sim.addr).await.unwrap();
    let body = format!("key={KEY}&action=balance");
    let request = format!(
        "POST /api/v2 HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Then nothing: the server hangs up instead of holding the socket forever.
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "idle connection kept open");
}
