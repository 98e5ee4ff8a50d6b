//! Config keys and catalog rules, each driven black-box over loopback: the key set, the
//! behaviour it promises seen from outside (a customer's reply, what reached the upstream, the
//! metrics), so that a key that is parsed but ignored fails its test.

mod common;

use std::time::Duration;

use common::gw::{
    ALPHA_KEY, BETA_KEY, Env, Options, Scratch, replaced, sample, upstream_saw, with_services,
};
use common::{KEY, Spawned};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A customer request written by hand: the head and `body`, with `length` announced.
fn request(body: &str, length: usize) -> Vec<u8> {
    format!(
        "POST /api/v2 HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {length}\r\n\r\n{body}"
    )
    .into_bytes()
}

/// Everything the server sends on `stream` until it closes it; the bound only keeps a broken
/// server from hanging the suite.
async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(bound, stream.read_to_end(&mut out))
        .await
        .expect("the server closed the connection")
        .expect("reading the reply");
    out
}

fn add_form<'a>(
    key: &'a str,
    service: &'a str,
    link: &'a str,
    qty: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("key", key),
        ("action", "add"),
        ("service", service),
        ("link", link),
        ("quantity", qty),
    ]
}

#[tokio::test]
async fn a_body_that_stalls_past_body_read_timeout_is_refused() {
    // The default (30 s) would outlast the 10 s this test waits for an answer.
    let env = Env::start(Options {
        extra: "limits:\n  body_read_timeout: 300ms\n",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "10", "default").await;
    let mut stream = TcpStream::connect(env.gw().addr).await.unwrap();
    // The head promises 100 bytes; 20 come, then nothing.
    let partial = format!("key={key}&action=bal");
    stream.write_all(&request(&partial, 100)).await.unwrap();
    let reply =
        String::from_utf8_lossy(&read_until_closed(&mut stream, Duration::from_secs(10)).await)
            .into_owned();
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(
        reply.ends_with(r#"{"error":"Incorrect request"}"#),
        "{reply}"
    );
    assert_eq!(env.balance(&key).await, common::gw::dec("10"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_cuts_a_request_that_outlasts_it() {
    // The upstream takes its time over an add; the gateway's grace is shorter than that.
    let mut sim = common::fast_config();
    sim.faults =
        serde_json::from_value(json!({"slow": 1, "slow_ms": 3000, "actions": ["add"]})).unwrap();
    let sim = common::simulator(sim).await;
    let dir = Scratch::new("grace");
    let config = dir.path("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:0\"\ndatabase: \"sqlite://gw.db\"\nconfig_poll: 0s\nlimits:\n  shutdown_grace: 300ms\nupstreams:\n  - name: up\n    url: \"{}\"\n    key: \"{KEY}\"\nservices:\n  - id: 1\n    upstream: up\n    service: 101\n    markup: {{ percent: 25 }}\nclients:\n  - name: ann\n    key: ann-key-0123456789\n    balance: \"10\"\n",
            sim.url()
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_panelgate"));
    command.args(["serve", "--config"]).arg(&config);
    let server = Spawned::start(command);
    let addr: std::net::SocketAddr = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/api/v2")
        .parse()
        .unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body = common::encode(&add_form(
        "ann-key-0123456789",
        "1",
        "https://i.com/g",
        "100",
    ));
    stream.write_all(&request(&body, body.len())).await.unwrap();
    upstream_saw(&common::Http::default(), sim.addr, KEY, "add", 1).await;
    server.signal("-TERM");
    // With the default grace (10 s) the upstream's answer (after 3 s) would still come back.
    let cut = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(
        String::from_utf8_lossy(&cut),
        "",
        "answered within the grace"
    );
    let logs = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap();
    assert!(
        logs.contains("shutdown grace period over"),
        "no grace line in:\n{logs}"
    );
}

/// A listener that never accepts, with its one-slot backlog full: connecting to it hangs
/// until the connecting side gives up.
async fn blackhole() -> (std::net::SocketAddr, tokio::net::TcpListener, TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let filler = TcpStream::connect(addr).await.unwrap();
    (addr, listener, filler)
}

#[tokio::test]
async fn connect_timeout_gives_up_on_an_upstream_that_never_accepts() {
    let (hole, _listener, _filler) = blackhole().await;
    let gamma = format!(
        "  - name: gamma\n    url: \"http://{hole}/api/v2\"\n    key: gamma-key-123\n    timeout: 20s\n    connect_timeout: 300ms\n    breaker: {{ failures: 10 }}\n"
    );
    let mut env = Env::prepare(
        Options::default(),
        |_, _| {},
        |t| replaced(t, "services:\n", &format!("{gamma}services:\n")),
    )
    .await;
    // Start reads gamma's services (1 + 2 retries) and its balance; at the default connect
    // timeout (5 s) that alone would take 15 s.
    tokio::time::timeout(Duration::from_secs(8), env.start_gateway())
        .await
        .expect("the gateway starts without waiting on gamma for long");
    let metrics = env.metrics().await;
    for (action, count) in [("services", 3.0), ("balance", 1.0)] {
        let series = format!(
            r#"panelgate_upstream_requests_total{{action="{action}",outcome="not_sent",upstream="gamma"}}"#
        );
        assert_eq!(
            sample(&metrics, &series),
            Some(count),
            "{series}:\n{metrics}"
        );
    }
    // Nothing was cut by the 20 s request timeout.
    assert!(
        !metrics.contains(r#"outcome="timeout",upstream="gamma""#),
        "{metrics}"
    );
}

/// Two customers' adds for service 1 sent together, both placed; returns how far apart (in
/// the simulator's milliseconds, real ones at speed 1) alpha created the two orders.
async fn two_adds_apart(env: &Env) -> u64 {
    let ann = env.client("ann", "10", "default").await;
    let bob = env.client("bob", "10", "default").await;
    let adds: Vec<_> = [ann, bob]
        .into_iter()
        .map(|key| {
            let (http, url) = (env.http.clone(), env.url());
            tokio::spawn(async move {
                http.form(&url, &add_form(&key, "1", "https://i.com/c", "100"))
                    .await
                    .json()
            })
        })
        .collect();
    for add in adds {
        let r = add.await.unwrap();
        assert!(r["order"].is_u64(), "{r}");
    }
    let created: Vec<u64> = env
        .journal("alpha")
        .iter()
        .map(|l| l["at_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(created.len(), 2, "{created:?}");
    created[1].abs_diff(created[0])
}

/// The suite's gateway with `key` set on alpha, whose clock runs at real time (so that its
/// journal's `at_ms` are real milliseconds), tuned. Calls may wait 10 s for their turn.
async fn alpha_with(key: &str, tune: impl FnOnce(&mut panelgate::sim::SimConfig)) -> Env {
    Env::tuned_with(
        Options {
            alpha_speed: 1.0,
            upstream_timeout: "10s",
            ..Options::default()
        },
        |a, _| tune(a),
        |t| {
            replaced(
                t,
                "  - name: alpha\n",
                &format!("  - name: alpha\n    {key}\n"),
            )
        },
    )
    .await
}

#[tokio::test]
async fn max_concurrency_holds_the_next_call_until_one_returns() {
    // alpha answers an add a second after taking it; one call to it at a time.
    let env = alpha_with("max_concurrency: 1", |a| {
        a.faults = serde_json::from_value(json!({"slow": 1, "slow_ms": 1000, "actions": ["add"]}))
            .unwrap();
    })
    .await;
    let apart = two_adds_apart(&env).await;
    assert!(
        apart >= 1000,
        "the second add was sent {apart} ms after the first"
    );
}

#[tokio::test]
async fn rate_limit_paces_the_calls_to_an_upstream() {
    // One call a second towards alpha, whatever the customers send.
    let env = alpha_with("rate_limit: 1", |_| {}).await;
    let apart = two_adds_apart(&env).await;
    // GCRA at 1/s: a full second between sends; a little less between the simulator's
    // readings of its own clock.
    assert!(
        apart >= 950,
        "the second add was sent {apart} ms after the first"
    );
}

#[tokio::test]
async fn retries_repeat_a_failed_status_call_as_configured_per_upstream() {
    let env = Env::tuned_with(
        Options {
            sync_interval: "1h",
            ..Options::default()
        },
        |_, _| {},
        |t| {
            let t = replaced(t, "  - name: alpha\n", "  - name: alpha\n    retries: 1\n");
            replaced(t, "  - name: beta\n", "  - name: beta\n    retries: 0\n")
        },
    )
    .await;
    let key = env.client("ann", "100", "default").await;
    let at_alpha = env
        .add(
            &key,
            "1",
            &[
                ("link", "https://i.com/r?sim-fate=hold"),
                ("quantity", "100"),
            ],
        )
        .await;
    let at_beta = env
        .add(
            &key,
            "2201",
            &[
                ("link", "https://i.com/r?sim-fate=hold"),
                ("quantity", "100"),
            ],
        )
        .await;
    let broken = json!({"http500": 1, "actions": ["status"]});
    env.set_faults(&env.alpha, ALPHA_KEY, broken.clone()).await;
    env.set_faults(&env.beta, BETA_KEY, broken).await;
    for (id, sim, key_up, attempts) in [
        (at_alpha, &env.alpha, ALPHA_KEY, 2),
        (at_beta, &env.beta, BETA_KEY, 1),
    ] {
        let before = env.requests(sim, key_up, "status").await;
        let status = env.status(&key, id).await;
        assert!(status["status"].is_string(), "{status}");
        assert_eq!(
            env.requests(sim, key_up, "status").await - before,
            attempts,
            "status calls for order {id}"
        );
    }
}

/// The charge a customer's order took, as the customer reads it.
async fn charged(env: &Env, key: &str, service: &str) -> Value {
    let id = env
        .add(
            key,
            service,
            &[("link", "https://i.com/m"), ("quantity", "1000")],
        )
        .await;
    env.status(key, id).await["charge"].clone()
}

#[tokio::test]
async fn price_groups_and_group_markups_set_what_each_customer_pays() {
    let env = Env::tuned(
        |_, _| {},
        |t| {
            replaced(
                t,
                "    service: 102\n    markup: { percent: 25 }\n",
                "    service: 102\n    markup: { percent: 25 }\n    group_markup: { vip: { percent: 50 } }\n",
            )
        },
    )
    .await;
    let ann = env.client("ann", "10", "default").await;
    let vic = env.client("vic", "10", "vip").await;
    // 1000 of alpha 101 (0.90): +25 % for ann (1.125), the vip group's +10 % for vic (0.99).
    // Alpha 102 (0.45): +25 % for ann (0.5625); the rule's own vip markup, +50 %, for vic
    // (0.675), not the group's.
    assert_eq!(charged(&env, &ann, "1").await, "1.12500");
    assert_eq!(charged(&env, &vic, "1").await, "0.99000");
    assert_eq!(charged(&env, &ann, "2").await, "0.56250");
    assert_eq!(charged(&env, &vic, "2").await, "0.67500");
    assert_eq!(
        env.call(&ann, &[("action", "balance")]).await["balance"],
        "8.31250"
    );
    assert_eq!(
        env.call(&vic, &[("action", "balance")]).await["balance"],
        "8.33500"
    );
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn a_configured_clients_group_sets_its_prices() {
    let env = Env::start(Options {
        extra: "clients:\n  - name: vic\n    key: vic-key-0123456789\n    balance: \"10\"\n    group: vip\n  - name: ann\n    key: ann-key-0123456789\n    balance: \"10\"\n",
        ..Options::default()
    })
    .await;
    let rate = |key: &'static str| {
        let env = &env;
        async move {
            let list = env.call(key, &[("action", "services")]).await;
            entry(&list, 1)["rate"].clone()
        }
    };
    assert_eq!(rate("vic-key-0123456789").await, "0.99");
    assert_eq!(rate("ann-key-0123456789").await, "1.125");
    assert_eq!(charged(&env, "vic-key-0123456789", "1").await, "0.99000");
    // A group that does not exist is refused before anything starts.
    let text = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .replace("group: vip", "group: gold");
    std::fs::write(&env.config_path, text).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_panelgate"))
        .args(["check-config", "--config"])
        .arg(&env.config_path)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(r#"clients[0] (vic).group: no price group named "gold""#),
        "{said}"
    );
}

/// The config with `keys` (indented lines) added to beta's import rule.
fn beta_import(text: String, keys: &str) -> String {
    let rule = "  - import: beta\n    id_offset: 2000\n";
    replaced(text, rule, &format!("{rule}{keys}"))
}

/// A service's entry in a customer's `services` reply.
fn entry(list: &Value, id: u64) -> &Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == id)
        .unwrap_or_else(|| panic!("{id} is not sold: {list}"))
}

async fn ids(env: &Env, key: &str) -> Vec<u64> {
    env.call(key, &[("action", "services")])
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn import_categories_choose_what_an_import_rule_sells() {
    let env = Env::tuned(
        |_, _| {},
        |t| {
            beta_import(
                t,
                "    categories: [\"^Beta Pack\", \"^No such category$\"]\n",
            )
        },
    )
    .await;
    let key = env.client("ann", "100", "default").await;
    let sold = ids(&env, &key).await;
    // Beta Packages only; alpha's import rule has no categories and sells all it may.
    assert!(sold.contains(&2203), "{sold:?}");
    assert!(!sold.contains(&2201) && !sold.contains(&2202), "{sold:?}");
    assert!(sold.contains(&1101) && sold.contains(&1119), "{sold:?}");
    let r = env
        .call(&key, &add_form(&key, "2201", "https://i.com/x", "100")[1..])
        .await;
    assert_eq!(r["error"], "Incorrect service ID", "{r}");
    assert_eq!(env.requests(&env.beta, BETA_KEY, "add").await, 0);
}

/// Explicit services that narrow alpha 101's range (50..10000) and that try to turn refill on
/// for beta 202 (which has none) while turning its cancel off.
const NARROWED: &str = r#"  - id: 60
    upstream: alpha
    service: 101
    markup: { percent: 25 }
    min: 100
    max: 500
  - id: 61
    upstream: beta
    service: 202
    markup: { percent: 25 }
    refill: true
    cancel: false
"#;

#[tokio::test]
async fn overrides_narrow_an_upstreams_terms_and_never_widen_them() {
    let env = Env::tuned(
        |_, _| {},
        |t| {
            let t = with_services(t, NARROWED);
            // An import rule's range is narrowed to each service's own; the package (1..1)
            // keeps nothing of 20..50000 and is left out.
            beta_import(t, "    min: 20\n    max: 50000\n")
        },
    )
    .await;
    let key = env.client("ann", "100", "default").await;
    let list = env.call(&key, &[("action", "services")]).await;
    let terms = |id: u64| {
        let s = entry(&list, id);
        (
            s["min"].clone(),
            s["max"].clone(),
            s["refill"].clone(),
            s["cancel"].clone(),
        )
    };
    assert_eq!(
        terms(60),
        (json!("100"), json!("500"), json!(true), json!(true))
    );
    assert_eq!(
        terms(61),
        (json!("10"), json!("100000"), json!(false), json!(false))
    );
    assert_eq!(
        terms(2201),
        (json!("20"), json!("5000"), json!(true), json!(true))
    );
    assert_eq!(
        terms(2202),
        (json!("20"), json!("50000"), json!(false), json!(true))
    );
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|s| s["service"] != 2203)
    );

    // Quantities alpha would take, outside our narrower range, never reach it.
    for (qty, error) in [
        ("50", "Quantity less than minimal 100"),
        ("600", "Quantity more than maximum 500"),
    ] {
        let r = env
            .call(&key, &add_form(&key, "60", "https://i.com/n", qty)[1..])
            .await;
        assert_eq!(r["error"], error, "{r}");
    }
    assert_eq!(env.requests(&env.alpha, ALPHA_KEY, "add").await, 0);
    // Features turned off stay off; one the upstream lacks cannot be turned on.
    let id = env
        .add(
            &key,
            "61",
            &[
                ("link", "https://i.com/f?sim-fate=hold"),
                ("quantity", "100"),
            ],
        )
        .await
        .to_string();
    let cancel = env
        .call(&key, &[("action", "cancel"), ("orders", &id)])
        .await;
    assert_eq!(
        cancel,
        json!([{"order": id.parse::<u64>().unwrap(), "cancel": {"error": "Cancel is disabled for this service"}}])
    );
    let refill = env
        .call(&key, &[("action", "refill"), ("order", &id)])
        .await;
    assert_eq!(
        refill["error"], "Refill is disabled for this service",
        "{refill}"
    );
    assert_eq!(env.requests(&env.beta, BETA_KEY, "cancel").await, 0);
    assert_eq!(env.requests(&env.beta, BETA_KEY, "refill").await, 0);
}

#[tokio::test]
async fn an_explicit_id_beats_an_imported_one_and_import_clashes_are_reported() {
    let env = Env::tuned(
        |_, _| {},
        |t| {
            let t = with_services(
                t,
                "  - id: 1101\n    upstream: beta\n    service: 201\n    markup: { percent: 10 }\n",
            );
            // beta's 202 and 203 land on 1102 and 1103, which alpha's import rule made first.
            replaced(t, "    id_offset: 2000\n", "    id_offset: 900\n")
        },
    )
    .await;
    let key = env.client("ann", "100", "default").await;
    let list = env.call(&key, &[("action", "services")]).await;
    let named = |id: u64| {
        let s = entry(&list, id);
        (s["name"].clone(), s["rate"].clone())
    };
    // 2.00 EUR × 1.1 (fx) × 1.10 = 2.42 USD.
    assert_eq!(named(1101), (json!("Beta Followers"), json!("2.42")));
    // alpha 102 (0.45) and 103 at +40 %: the first import rule's.
    assert_eq!(
        named(1102),
        (json!("Instagram Likes [Fast]"), json!("0.63"))
    );
    let id = env
        .add(
            &key,
            "1101",
            &[("link", "https://i.com/e"), ("quantity", "100")],
        )
        .await;
    let order = env.order(id).await;
    assert_eq!(order.upstream, "beta");
    assert_eq!(env.journal("beta")[0]["service"], 201);
    assert!(env.journal("alpha").is_empty());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_panelgate"))
        .args(["check-config", "--config"])
        .arg(&env.config_path)
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    for clash in [1102, 1103] {
        let problem = format!(
            "problem: local id {clash} is produced by import rules 0 and 1; the first wins: change an id_offset"
        );
        assert!(said.contains(&problem), "{problem:?} not in:\n{said}");
    }
    assert!(!said.contains("local id 1101"), "{said}");
}

#[tokio::test]
async fn rate_limited_requests_are_counted() {
    let env = Env::start(Options {
        // `balance` is a read: the read limit is the one it meets.
        extra: "limits:\n  per_client_reads: { per_second: 1, burst: 2 }\n  failed_keys_per_minute: 2\n",
        ..Options::default()
    })
    .await;
    let key = env.client("ann", "1", "default").await;
    let mut limited = 0;
    for _ in 0..6 {
        let r = env
            .http
            .form(&env.url(), &[("key", &key), ("action", "balance")])
            .await;
        limited += u32::from(r.status == 429);
    }
    assert!(limited >= 1, "a burst of 2 let 6 requests through");
    for guess in ["wrong-1", "wrong-2", "wrong-3"] {
        let r = env
            .http
            .form(&env.url(), &[("key", guess), ("action", "balance")])
            .await;
        limited += u32::from(r.status == 429);
    }
    // Two failed keys, then the address is shut out: one more 429.
    assert_eq!(
        sample(&env.metrics().await, "panelgate_rate_limited_total"),
        Some(f64::from(limited))
    );
}

/// The catalog refresh counters as (alpha ok, beta ok, beta error); `None` for one not
/// exported.
async fn refreshes(env: &Env) -> [Option<f64>; 3] {
    let metrics = env.metrics().await;
    [("alpha", "ok"), ("beta", "ok"), ("beta", "error")].map(|(upstream, outcome)| {
        sample(
            &metrics,
            &format!(
                r#"panelgate_catalog_refreshes_total{{outcome="{outcome}",upstream="{upstream}"}}"#
            ),
        )
    })
}

#[tokio::test]
async fn catalog_refreshes_are_counted_by_outcome() {
    let env = Env::start(Options::default()).await;
    assert_eq!(refreshes(&env).await, [Some(1.0), Some(1.0), None]);
    // A reload reads every list again; beta's is garbage now: one failed refresh (a reply that
    // came but cannot be read is not asked again).
    env.set_faults(
        &env.beta,
        BETA_KEY,
        json!({"garbage": 1, "actions": ["services"]}),
    )
    .await;
    let before = env.requests(&env.beta, BETA_KEY, "services").await;
    env.gw().reload().await.unwrap();
    assert_eq!(
        env.requests(&env.beta, BETA_KEY, "services").await - before,
        1
    );
    assert_eq!(refreshes(&env).await, [Some(2.0), Some(1.0), Some(1.0)]);
}

#[tokio::test]
async fn upstream_calls_are_timed() {
    let env = Env::start(Options::default()).await;
    env.set_faults(
        &env.alpha,
        ALPHA_KEY,
        json!({"slow": 1, "slow_ms": 300, "actions": ["add"]}),
    )
    .await;
    let key = env.client("ann", "10", "default").await;
    env.add(
        &key,
        "1",
        &[("link", "https://i.com/t"), ("quantity", "100")],
    )
    .await;
    let metrics = env.metrics().await;
    let series = |part: &str| {
        let labels = r#"action="add",upstream="alpha""#;
        let name = "panelgate_upstream_request_duration_seconds";
        match part {
            "" => format!("{name}_count{{{labels}}}"),
            "sum" => format!("{name}_sum{{{labels}}}"),
            le => format!("{name}_bucket{{{labels},le=\"{le}\"}}"),
        }
    };
    assert_eq!(sample(&metrics, &series("")), Some(1.0), "{metrics}");
    // The upstream held its answer 300 ms: the one call is in no bucket below that.
    assert_eq!(sample(&metrics, &series("0.25")), Some(0.0), "{metrics}");
    assert_eq!(sample(&metrics, &series("+Inf")), Some(1.0), "{metrics}");
    let sum = sample(&metrics, &series("sum")).expect("a sum");
    assert!(sum >= 0.3, "{sum}");
}
