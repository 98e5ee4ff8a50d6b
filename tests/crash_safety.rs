//! kill -9 at any moment loses no money and no order.
//!
//! One simulated upstream (with a journal of every order it created, hang-ups after `add` so
//! that some outcomes are unknown, and error replies so that some orders are rejected) runs in this process for the whole test. The real
//! `panelgate serve` binary runs in front of it under load — parallel `add`s from several
//! clients, each with a link of its own — and is killed with SIGKILL at a random moment,
//! several times over, then started once more and left to settle. Then the journal, the
//! replies the clients got and the gateway's store must agree:
//!
//! 1. every order the upstream created is known to the gateway, under the same link, as
//!    `placed`/`final` with that upstream order id, or `unknown` (awaiting the operator);
//! 2. nothing was placed twice upstream, nothing was created twice at the gateway;
//! 3. every order the gateway thinks placed is in the journal, with the same link;
//! 4. every order id a client was given exists, with the link and customer it was given for;
//! 5. every balance is the sum of its ledger, above its floor, and equals credits − charges +
//!    refunds as the orders table sees them; every order's ledger entries match it; every
//!    final order agrees with the upstream's own status and is refunded exactly as due.
//!
//! The seed is printed; `CRASH_SEED=N` replays a run's choices (the timing of the kills
//! relative to the load is, of course, only approximately the same).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use panelgate::config::Secret;
use panelgate::money;
use panelgate::protocol::Status;
use panelgate::sim::faults::{SplitMix, mix};
use panelgate::sim::{Chance, Faults};
use panelgate::store::sqlite::INTERRUPTED_NOTE;
use panelgate::store::{self, EntryKind, Order, OrderFilter, OrderState};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use common::gw::Scratch;
use common::{Http, encode, fast_config, simulator};

const UPSTREAM_KEY: &str = "crash-upstream-key";
/// Gateway runs killed with SIGKILL under load.
const ROUNDS: u64 = 5;
/// Concurrent clients per round.
const TASKS: u64 = 10;
/// Local service 1 = upstream 101 at +25 %: 1000 units cost 1.125.
const QUANTITY: &str = "1000";

/// The customers: name, key, opening balance, credit limit. `ann` and `ben` (who may go 5
/// below zero) run out early in the first round, so their floors are hit under concurrency
/// and across kills; `cat` can pay for orders in every round, so every kill has dispatches to
/// interrupt.
const CUSTOMERS: [(&str, &str, &str, &str); 3] = [
    ("ann", "crash-customer-ann-key-0001", "20", "0"),
    ("ben", "crash-customer-ben-key-0002", "50", "5"),
    ("cat", "crash-customer-cat-key-0003", "1000", "0"),
];

/// An order id a client was given, and what it was given for.
#[derive(Debug, Clone)]
struct Received {
    order: u64,
    link: String,
    customer: usize,
}

/// What the clients saw, over all rounds.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    /// Requests cut off mid-flight (reset, closed, or no reply within 3 s): the gateway died
    /// under them.
    cut: AtomicU64,
    /// Connections refused: the gateway was already dead.
    refused: AtomicU64,
    /// Requests on the wire right now.
    in_flight: AtomicI64,
    received: Mutex<Vec<Received>>,
    /// Error replies by text.
    errors: Mutex<BTreeMap<String, u64>>,
}

enum Outcome {
    Order(u64),
    Refused(String),
    Cut,
    NotConnected,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One `add`; never panics: the gateway may die at any moment.
async fn add(client: &HttpClient, url: &str, key: &str, link: &str) -> Outcome {
    let body = encode(&[
        ("key", key),
        ("action", "add"),
        ("service", "1"),
        ("link", link),
        ("quantity", QUANTITY),
    ]);
    let req = http::Request::post(url)
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| e.is_connect())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|_| false)?
            .to_bytes();
        Ok::<_, bool>((status, body))
    };
    let (status, body) = match tokio::time::timeout(Duration::from_secs(3), exchange).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(true)) => return Outcome::NotConnected,
        Ok(Err(false)) | Err(_) => return Outcome::Cut,
    };
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match (&json["order"], &json["error"]) {
        (Value::Number(n), _) if status == 200 && n.as_u64().is_some() => {
            Outcome::Order(n.as_u64().unwrap())
        }
        (_, Value::String(e)) => Outcome::Refused(format!("{} {e}", status.as_u16())),
        _ => Outcome::Refused(format!(
            "{} unexpected reply {}",
            status.as_u16(),
            String::from_utf8_lossy(&body)
        )),
    }
}

/// One client: `add`s as fast as it can, for random customers, until told to stop.
async fn load(
    url: String,
    round: u64,
    task: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .retry_canceled_requests(false)
        .build_http();
    let rng = SplitMix::new(mix(seed ^ mix(round * 1000 + task + 1)));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let customer = (rng.next() % CUSTOMERS.len() as u64) as usize;
        let link = format!("https://i.com/r{round}-t{task}-n{n}");
        n += 1;
        tally.sent.fetch_add(1, Ordering::Relaxed);
        tally.in_flight.fetch_add(1, Ordering::SeqCst);
        let outcome = add(&client, &url, CUSTOMERS[customer].1, &link).await;
        tally.in_flight.fetch_sub(1, Ordering::SeqCst);
        match outcome {
            Outcome::Order(order) => tally.received.lock().unwrap().push(Received {
                order,
                link,
                customer,
            }),
            Outcome::Refused(text) => {
                *tally.errors.lock().unwrap().entry(text).or_default() += 1;
            }
            Outcome::Cut => {
                tally.cut.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::NotConnected => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                // The gateway is gone; do not spin until the stop flag comes.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// `panelgate serve` and its API URL, read from its first line.
async fn serve(config: &Path, log: &Path) -> (Child, String) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_panelgate"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("panelgate starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("panelgate prints its address within 20 s")
        .unwrap()
        .unwrap_or_default();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    // Keep reading, so that nothing the gateway prints ever blocks it or fails.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

/// SIGTERM, and a clean exit within 20 s.
async fn terminate(mut child: Child) {
    let pid = child.id().expect("still running").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success(), "kill -TERM {pid}");
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the gateway stops within 20 s of SIGTERM")
        .unwrap();
    assert!(exit.success(), "the gateway exits 0 on SIGTERM: {exit:?}");
}

/// The gateway's config. `sync.lease` is short because the leases a killed gateway held on
/// sync batches are honoured after its restart until they expire (default 60 s), and the
/// settling below would wait that long.
fn write_config(dir: &Scratch, upstream: &str, database: &str) -> PathBuf {
    let clients: String = CUSTOMERS
        .iter()
        .map(|(name, key, balance, credit)| {
            format!(
                "  - {{ name: {name}, key: \"{key}\", balance: \"{balance}\", credit_limit: \"{credit}\" }}\n"
            )
        })
        .collect();
    let config = dir.path("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"listen: "127.0.0.1:0"
database: "{database}"
status_max_age: 0s
limits:
  per_client: {{ per_second: 100000, burst: 100000 }}
upstreams:
  - name: alpha
    url: "{upstream}"
    key: "{UPSTREAM_KEY}"
    timeout: 2s
services:
  - id: 1
    upstream: alpha
    service: 101
    markup: {{ percent: 25 }}
sync:
  interval: 100ms
  lease: 1s
clients:
{clients}"#
        ),
    )
    .unwrap();
    config
}

fn units(text: &str) -> i64 {
    money::to_units(text.parse().unwrap()).unwrap()
}

/// A journal line: what the upstream created.
#[derive(Debug)]
struct Journaled {
    order: u64,
    link: String,
}

fn read_journal(path: &Path) -> Vec<Journaled> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("journal line {l:?}: {e}"));
            Journaled {
                order: v["order"].as_u64().expect("journal order id"),
                link: v["link"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

/// The upstream's own status of its orders: (status, remains).
async fn upstream_statuses(url: &str, ids: &[u64]) -> HashMap<u64, (String, Option<i64>)> {
    let http = Http::default();
    let mut out = HashMap::new();
    for chunk in ids.chunks(100) {
        let list = chunk
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let reply = http
            .form(
                url,
                &[
                    ("key", UPSTREAM_KEY),
                    ("action", "status"),
                    ("orders", &list),
                ],
            )
            .await
            .json();
        for &id in chunk {
            let item = &reply[id.to_string()];
            let status = item["status"].as_str().unwrap_or("?").to_owned();
            let remains = item["remains"].as_str().and_then(|r| r.parse().ok());
            out.insert(id, (status, remains));
        }
    }
    out
}

fn seed() -> u64 {
    match std::env::var("CRASH_SEED") {
        Ok(s) => s.trim().parse().expect("CRASH_SEED is a number"),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            mix(nanos ^ u64::from(std::process::id()))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_any_moment_loses_no_money_and_no_order() {
    kill_under_load(1).await;
}

/// Two gateways on one PostgreSQL database, customers spread over both, one of them killed
/// mid-load and restarted each round: the survivor keeps serving and takes over the dead one's
/// sync work when its leases expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_database_survive_kill_9() {
    if !common::gw::postgres_backend() {
        // CI runs it in its PostgreSQL half and leaves it out of the SQLite one.
        assert!(
            std::env::var_os("CI").is_none(),
            "several instances need PostgreSQL: run with PANELGATE_TEST_BACKEND=postgres"
        );
        eprintln!("skipped: several instances need PostgreSQL (PANELGATE_TEST_BACKEND=postgres)");
        return;
    }
    kill_under_load(2).await;
}

/// The load, the kills and the checks, with `instances` gateways on one database.
async fn kill_under_load(instances: usize) {
    let started = Instant::now();
    let seed = seed();
    eprintln!("crash_safety: seed {seed} (replay with CRASH_SEED={seed})");
    let rng = SplitMix::new(seed);

    let dir = Scratch::new("crash");
    let journal_path = dir.path("upstream.jsonl");
    let mut sim_cfg = fast_config();
    sim_cfg.key = Secret::new(UPSTREAM_KEY);
    sim_cfg.seed = seed;
    sim_cfg.speed = 1000.0;
    sim_cfg.balance = 1_000_000.into();
    sim_cfg.shares.partial = Chance::parse("0.2").unwrap();
    sim_cfg.shares.cancel = Chance::parse("0.1").unwrap();
    sim_cfg.faults = Faults {
        // Acts, then hangs up: the outcome is unknown to the gateway.
        hangup: Chance::parse("0.05").unwrap(),
        // Refuses without acting: the order is rejected and its funds released.
        error: Chance::parse("0.03").unwrap(),
        actions: vec!["add".into()],
        ..Faults::default()
    };
    sim_cfg.journal = Some(journal_path.clone());
    let upstream = simulator(sim_cfg).await;
    let database = common::gw::database_url(&dir.0);
    let config = write_config(&dir, &upstream.url(), &database);
    let log = dir.path("gateway.log");
    let tally = Arc::new(Tally::default());

    // ---- load, and SIGKILL at a random moment, several times ----
    let mut killed_in_flight = 0;
    let mut gateways: Vec<Option<(Child, String)>> = (0..instances).map(|_| None).collect();
    for round in 0..ROUNDS {
        for gateway in gateways.iter_mut().filter(|g| g.is_none()) {
            *gateway = Some(serve(&config, &log).await);
        }
        let urls: Vec<String> = gateways
            .iter()
            .flatten()
            .map(|(_, url)| url.clone())
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                tokio::spawn(load(
                    urls[task as usize % urls.len()].clone(),
                    round,
                    task,
                    seed,
                    stop.clone(),
                    tally.clone(),
                ))
            })
            .collect();
        let delay = 100 + rng.next() % 601;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let in_flight = tally.in_flight.load(Ordering::SeqCst);
        // One instance dies each round; with several, the others keep serving.
        let (mut child, _) = gateways[round as usize % instances]
            .take()
            .expect("running");
        child.start_kill().expect("SIGKILL");
        let exit = child.wait().await.unwrap();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("client task");
        }
        if in_flight > 0 {
            killed_in_flight += 1;
        }
        eprintln!(
            "crash_safety: round {round}: killed after {delay} ms with {in_flight} requests in flight ({exit}); so far {} sent, {} answered with an order, {} cut off",
            tally.sent.load(Ordering::Relaxed),
            tally.received.lock().unwrap().len(),
            tally.cut.load(Ordering::Relaxed),
        );
    }

    // ---- let sync settle: a lone gateway restarts; with several, the survivors finish the
    // dead one's work alone (its leases and dispatches expire, and they take over) ----
    if gateways.iter().all(Option::is_none) {
        gateways[0] = Some(serve(&config, &log).await);
    }
    let store = store::open(&database)
        .await
        .expect("the gateway's store opens");
    let settle_start = Instant::now();
    loop {
        let counts: HashMap<OrderState, u64> = store
            .count_orders_by_state()
            .await
            .unwrap()
            .into_iter()
            .collect();
        let open = |s| counts.get(&s).copied().unwrap_or(0);
        if open(OrderState::Placed) == 0 && open(OrderState::Dispatching) == 0 {
            break;
        }
        assert!(
            settle_start.elapsed() < Duration::from_secs(30),
            "sync did not settle within 30 s after the last restart: {counts:?} (seed {seed})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settled_in = settle_start.elapsed();
    for (child, _) in gateways.into_iter().flatten() {
        terminate(child).await;
    }

    // ---- the evidence ----
    let journal = read_journal(&journal_path);
    let orders = store.list_orders(&OrderFilter::default()).await.unwrap();
    let customers: Vec<_> = store
        .list_customers(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(
        customers.len(),
        CUSTOMERS.len(),
        "the configured customers, created once: {customers:?}"
    );
    let received = tally.received.lock().unwrap().clone();
    let mut problems: Vec<String> = Vec::new();

    let by_id: HashMap<i64, &Order> = orders.iter().map(|o| (o.id, o)).collect();
    let mut by_link: HashMap<&str, Vec<&Order>> = HashMap::new();
    for o in &orders {
        by_link
            .entry(o.link.as_deref().unwrap_or(""))
            .or_default()
            .push(o);
    }
    let journal_by_order: HashMap<u64, &Journaled> = journal.iter().map(|j| (j.order, j)).collect();

    // 1. Every order the upstream created is known to the gateway.
    for j in &journal {
        match by_link.get(j.link.as_str()).map(Vec::as_slice) {
            Some([o]) => match o.state {
                OrderState::Placed | OrderState::Final if o.upstream_order == Some(j.order.to_string()) => {}
                OrderState::Unknown if o.upstream_order.as_ref().is_none_or(|u| *u == j.order.to_string()) => {}
                _ => problems.push(format!(
                    "upstream order {} ({}) is gateway order {} in state {} with upstream order {:?}",
                    j.order,
                    j.link,
                    o.id,
                    o.state.as_str(),
                    o.upstream_order
                )),
            },
            None | Some([]) => problems.push(format!(
                "upstream order {} ({}) is unknown to the gateway: an order lost",
                j.order, j.link
            )),
            Some(many) => problems.push(format!(
                "upstream order {} ({}) matches {} gateway orders: {:?}",
                j.order,
                j.link,
                many.len(),
                many.iter().map(|o| o.id).collect::<Vec<_>>()
            )),
        }
    }

    // 2. Nothing placed twice upstream, nothing created twice here.
    let mut links = HashMap::<&str, u64>::new();
    for j in &journal {
        if let Some(first) = links.insert(&j.link, j.order) {
            problems.push(format!(
                "{} was placed twice upstream: orders {first} and {}",
                j.link, j.order
            ));
        }
    }
    for (link, os) in &by_link {
        if os.len() > 1 {
            problems.push(format!(
                "{link} (sent once) is {} gateway orders: {:?}",
                os.len(),
                os.iter().map(|o| o.id).collect::<Vec<_>>()
            ));
        }
    }
    let mut upstream_ids = HashMap::<u64, i64>::new();
    for o in &orders {
        if let Some(u) = upstream_number(o)
            && let Some(other) = upstream_ids.insert(u, o.id)
        {
            problems.push(format!(
                "gateway orders {other} and {} share upstream order {u}",
                o.id
            ));
        }
    }

    // 3. Every order the gateway thinks placed was placed, as that link.
    for o in &orders {
        if matches!(o.state, OrderState::Placed | OrderState::Final) {
            match upstream_number(o).and_then(|u| journal_by_order.get(&u)) {
                Some(j) if Some(j.link.as_str()) == o.link.as_deref() => {}
                Some(j) => problems.push(format!(
                    "gateway order {} ({:?}) points at upstream order {}, which is {}",
                    o.id, o.link, j.order, j.link
                )),
                None => problems.push(format!(
                    "gateway order {} ({:?}, {}) has upstream order {:?}, not in the journal",
                    o.id,
                    o.link,
                    o.state.as_str(),
                    o.upstream_order
                )),
            }
        }
        if o.state == OrderState::Dispatching {
            problems.push(format!("gateway order {} is still dispatching", o.id));
        }
    }

    // 4. Every order id a client was given is real, for that link and that customer.
    for r in &received {
        let customer = CUSTOMERS[r.customer].0;
        match i64::try_from(r.order).ok().and_then(|id| by_id.get(&id)) {
            Some(o)
                if o.link.as_deref() == Some(r.link.as_str())
                    && o.customer == customer
                    && o.state != OrderState::Rejected => {}
            Some(o) => problems.push(format!(
                "{customer} was given order {} for {}, but it is {:?} of {} in state {}",
                r.order,
                r.link,
                o.link,
                o.customer,
                o.state.as_str()
            )),
            None => problems.push(format!(
                "{customer} was given order {} for {}, which the gateway does not have: an order lost",
                r.order, r.link
            )),
        }
    }

    // 5. Money.
    let statuses = upstream_statuses(
        &upstream.url(),
        &orders
            .iter()
            .filter(|o| o.state == OrderState::Final)
            .filter_map(upstream_number)
            .collect::<Vec<_>>(),
    )
    .await;
    for c in &customers {
        let ledger = store.ledger(c.id).await.unwrap();
        let sum: i64 = ledger.iter().map(|e| e.amount).sum();
        if sum != c.balance {
            problems.push(format!(
                "{}: balance {} but its ledger sums to {}",
                c.name,
                money::from_units(c.balance),
                money::from_units(sum)
            ));
        }
        if c.balance < -c.credit_limit {
            problems.push(format!(
                "{}: balance {} is below its floor -{}",
                c.name,
                money::from_units(c.balance),
                money::from_units(c.credit_limit)
            ));
        }
        let (_, _, opening, credit) = CUSTOMERS
            .iter()
            .find(|x| x.0 == c.name)
            .expect("a configured customer");
        if c.credit_limit != units(credit) {
            problems.push(format!("{}: credit limit {}", c.name, c.credit_limit));
        }
        let mine: Vec<&Order> = orders.iter().filter(|o| o.customer_id == c.id).collect();
        let held: i64 = mine
            .iter()
            .filter(|o| o.state != OrderState::Rejected)
            .map(|o| o.charge - o.refunded)
            .sum();
        if c.balance != units(opening) - held {
            problems.push(format!(
                "{}: balance {} but opening {opening} - charges + refunds of its orders = {}",
                c.name,
                money::from_units(c.balance),
                money::from_units(units(opening) - held)
            ));
        }
        let mut entries: HashMap<i64, Vec<(EntryKind, i64)>> = HashMap::new();
        for e in &ledger {
            match e.order_id {
                Some(id) => entries.entry(id).or_default().push((e.kind, e.amount)),
                None if e.kind == EntryKind::Credit && e.amount == units(opening) => {}
                None => problems.push(format!("{}: unexpected ledger entry {e:?}", c.name)),
            }
        }
        for o in &mine {
            let es = entries.remove(&o.id).unwrap_or_default();
            let of = |k| {
                es.iter()
                    .filter(move |(kind, _)| *kind == k)
                    .map(|(_, a)| *a)
            };
            let charges: Vec<i64> = of(EntryKind::Charge).collect();
            let releases: Vec<i64> = of(EntryKind::Release).collect();
            let refunds: i64 = of(EntryKind::Refund).sum();
            let mut bad = |what: String| {
                problems.push(format!(
                    "order {} ({}, {}, status {}, charge {}, refunded {}): {what}; entries {es:?}",
                    o.id,
                    c.name,
                    o.state.as_str(),
                    o.status.as_str(),
                    o.charge,
                    o.refunded
                ))
            };
            if charges != [-o.charge] {
                bad("not charged exactly once".into());
            }
            if o.refunded > o.charge || o.refunded < 0 {
                bad("refunded more than charged".into());
            }
            if o.state == OrderState::Rejected {
                if releases != [o.charge] {
                    bad("rejected without a release of its charge".into());
                }
            } else if !releases.is_empty() {
                bad("released, but not rejected".into());
            }
            if refunds != o.refunded {
                bad("refund entries do not add up to `refunded`".into());
            }
            match o.state {
                OrderState::Final => {
                    let due = match o.status {
                        Status::Canceled => o.charge,
                        Status::Partial => common::reference::refund(
                            i128::from(o.charge),
                            o.billed,
                            o.remains.unwrap_or(0).clamp(0, o.billed as i64) as u64,
                        ) as i64,
                        Status::Completed => 0,
                        _ => {
                            bad("final with a status that is not".into());
                            o.refunded
                        }
                    };
                    if o.refunded != due {
                        bad(format!("refunded, but {due} was due"));
                    }
                    let theirs = upstream_number(o).and_then(|u| statuses.get(&u));
                    let ours = (o.status.as_str().to_owned(), o.remains);
                    match theirs {
                        Some((status, remains))
                            if *status == ours.0
                                && (o.status != Status::Partial || *remains == ours.1) => {}
                        other => bad(format!("the upstream says {other:?}")),
                    }
                }
                OrderState::Unknown | OrderState::Placed | OrderState::Dispatching => {
                    if o.refunded != 0 {
                        bad("refunded while not final".into());
                    }
                }
                OrderState::Rejected => {}
            }
        }
        for (id, es) in entries {
            problems.push(format!(
                "{}: ledger entries {es:?} for order {id}, not one of theirs",
                c.name
            ));
        }
    }

    // ---- report ----
    let count = |s| orders.iter().filter(|o| o.state == s).count();
    let (placed, unknown, rejected, fin) = (
        count(OrderState::Placed),
        count(OrderState::Unknown),
        count(OrderState::Rejected),
        count(OrderState::Final),
    );
    let unknown_placed = orders
        .iter()
        .filter(|o| o.state == OrderState::Unknown)
        .filter(|o| {
            journal
                .iter()
                .any(|j| Some(j.link.as_str()) == o.link.as_deref())
        })
        .count();
    // Unknown because a kill caught them mid-dispatch (rather than an upstream hang-up).
    let interrupted: BTreeMap<String, usize> = orders
        .iter()
        .filter(|o| o.state == OrderState::Unknown && o.note.as_deref() == Some(INTERRUPTED_NOTE))
        .fold(BTreeMap::new(), |mut m, o| {
            let round = o
                .link
                .as_deref()
                .unwrap_or("")
                .trim_start_matches("https://i.com/");
            let round = round.split('-').next().unwrap_or("").to_owned();
            *m.entry(round).or_default() += 1;
            m
        });
    let canceled = orders
        .iter()
        .filter(|o| o.status == Status::Canceled)
        .count();
    let partial = orders
        .iter()
        .filter(|o| o.status == Status::Partial)
        .count();
    eprintln!(
        "crash_safety: {} requests sent, {} answered with an order, {} cut off by a kill, {} refused a connection; errors {:?}",
        tally.sent.load(Ordering::Relaxed),
        received.len(),
        tally.cut.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.errors.lock().unwrap(),
    );
    eprintln!(
        "crash_safety: {} gateway orders: {placed} placed, {fin} final ({partial} partial, {canceled} canceled), {unknown} unknown ({unknown_placed} of them placed upstream; caught mid-dispatch by a kill, by round: {interrupted:?}), {rejected} rejected; {} journal lines",
        orders.len(),
        journal.len()
    );
    for c in &customers {
        eprintln!(
            "crash_safety: {} balance {} (floor -{})",
            c.name,
            money::from_units(c.balance),
            money::from_units(c.credit_limit)
        );
    }
    eprintln!(
        "crash_safety: settled in {settled_in:?}; whole test {:?}",
        started.elapsed()
    );

    if !problems.is_empty() {
        let shown = problems.iter().take(40).cloned().collect::<Vec<_>>();
        panic!(
            "{} invariant violations after kill -9 (seed {seed}; replay with CRASH_SEED={seed}):\n{}\nthe gateway's last warnings and errors:\n{}",
            problems.len(),
            shown.join("\n"),
            tail(&log, 40)
        );
    }

    // 6. The load really happened, and the kills really hit it.
    assert!(
        fin + unknown > 20,
        "too few orders to prove anything: {fin} final, {unknown} unknown (seed {seed})"
    );
    assert!(
        !journal.is_empty() && !received.is_empty(),
        "no order reached the upstream (seed {seed})"
    );
    assert!(
        killed_in_flight > 0 && tally.cut.load(Ordering::Relaxed) > 0,
        "no kill hit requests in flight (seed {seed})"
    );
    assert!(
        !interrupted.is_empty(),
        "no kill caught an order mid-dispatch (seed {seed})"
    );
}

/// The last `n` warnings and errors of a log file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The simulator's order ids are numbers; panelgate keeps upstream ids as text.
fn upstream_number(o: &Order) -> Option<u64> {
    o.upstream_order.as_deref()?.parse().ok()
}
