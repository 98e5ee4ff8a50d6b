//! The database away while orders are placed: no upstream order id is ever lost.
//!
//! An upstream that takes each `add` at once and answers it seconds later gives the test time
//! to take the database away between the hold (written before anything goes upstream) and the
//! write of "placed, upstream order N". Away means, for SQLite, another connection holding
//! `BEGIN EXCLUSIVE` (CI runs as root, so file permissions would not stop a write); for
//! PostgreSQL, the test's own server stopped (`pg_ctl stop -m fast`), never the machine's
//! shared one. Then the database comes back, and:
//!
//! - every order whose upstream id arrived is `placed` with that id, none `unknown`;
//! - nothing was placed twice (the upstream's own journal of the orders it created);
//! - every balance equals its ledger.
//!
//! The kill -9 tests stop the gateway while the database is away, after the answers arrived;
//! the restarted gateway replays its journal before it serves.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use panelgate::store::{self, OrderState, Store};
use serde_json::{Value, json};

use common::gw::{ALPHA_KEY, Env, Options, Scratch};
use common::{Http, Spawned, required};

/// Orders in flight when the database goes away.
const IN_FLIGHT: usize = 3;
/// How long the upstream sits on each `add` it has already acted on.
const UPSTREAM_DELAY_MS: u64 = 3000;

// ---------------------------------------------------------------------------------------
// The database, and taking it away
// ---------------------------------------------------------------------------------------

/// A database a test can take away and give back.
enum Db {
    /// A SQLite file; `lock` is the connection holding it exclusively while it is away.
    Sqlite {
        file: PathBuf,
        lock: Option<rusqlite::Connection>,
    },
    Postgres(PgServer),
}

impl Db {
    fn sqlite(dir: &Path) -> Db {
        Db::Sqlite {
            file: dir.join("gateway.db"),
            lock: None,
        }
    }

    /// The test's own PostgreSQL server, or `None` (skipped) where it cannot run one.
    fn postgres() -> Option<Db> {
        PgServer::start().map(Db::Postgres)
    }

    fn url(&self) -> String {
        match self {
            Db::Sqlite { file, .. } => format!("sqlite://{}", file.display()),
            Db::Postgres(pg) => pg.url(),
        }
    }

    /// Where the gateway keeps answers the store has not taken (its default location).
    fn journal(&self, config: &Path) -> PathBuf {
        match self {
            Db::Sqlite { file, .. } => {
                PathBuf::from(format!("{}-unrecorded.jsonl", file.display()))
            }
            Db::Postgres(_) => config.with_file_name("panelgate-unrecorded.jsonl"),
        }
    }

    fn take_away(&mut self) {
        match self {
            Db::Sqlite { file, lock } => {
                let conn = rusqlite::Connection::open(file).unwrap();
                conn.busy_timeout(Duration::from_secs(60)).unwrap();
                conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
                *lock = Some(conn);
            }
            Db::Postgres(pg) => pg.ctl(&["stop", "-m", "fast"]),
        }
    }

    fn give_back(&mut self) {
        match self {
            Db::Sqlite { lock, .. } => {
                let conn = lock.take().expect("taken away");
                conn.execute_batch("COMMIT").unwrap();
            }
            Db::Postgres(pg) => pg.ctl(&["start"]),
        }
    }
}

/// A PostgreSQL server of the test's own, on a free port, its data in a scratch folder owned
/// by `postgres` (the server refuses to run as root).
struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
}

impl PgServer {
    fn start() -> Option<PgServer> {
        let bin = required(
            pg_bindir(),
            "PostgreSQL's server programs (initdb, pg_ctl) are not installed",
            "installs postgresql",
        )?;
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let data = std::env::temp_dir().join(format!("panelgate-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        run(Command::new("chown").args(["postgres:postgres"]).arg(&data));
        let server = PgServer {
            bin,
            data,
            port: common::free_port(),
        };
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(server.bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(server.data.join("db")));
        server.ctl(&["start"]);
        Some(server)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl ACTION`, waiting until it is done.
    fn ctl(&self, args: &[&str]) {
        let options = format!(
            "-p {} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data.join("db"))
            .arg("-l")
            .arg(self.data.join("server.log"))
            .args(["-w", "-o", &options])
            .args(args));
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data.join("db"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// The folder of `initdb` and `pg_ctl`, if this machine has them and may run them as
/// `postgres` (this needs root).
fn pg_bindir() -> Option<PathBuf> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !root {
        return None;
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let mut installed: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    installed.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    from_pg_config
        .into_iter()
        .chain(installed.into_iter().rev())
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

fn run(command: &mut Command) {
    let out = command.output().expect("runs");
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// What must hold afterwards
// ---------------------------------------------------------------------------------------

/// The upstream's own journal of the orders it created: link → its order id.
fn created_upstream(journal: &Path) -> HashMap<String, String> {
    let mut created = HashMap::new();
    for line in std::fs::read_to_string(journal).unwrap_or_default().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let link = v["link"].as_str().unwrap().to_owned();
        let id = v["order"].as_u64().unwrap().to_string();
        assert!(
            created.insert(link.clone(), id).is_none(),
            "the upstream created two orders for {link}: placed twice"
        );
    }
    created
}

/// Every order the upstream created is `placed` (or final) at the gateway with the id the
/// upstream gave it, none is `unknown`, and every balance equals its ledger.
async fn assert_settled(store: &dyn Store, created: &HashMap<String, String>) {
    let orders = store.list_orders(&Default::default()).await.unwrap();
    assert_eq!(
        orders.len(),
        created.len(),
        "one local order per upstream order"
    );
    for o in &orders {
        let link = o.link.as_deref().unwrap_or_default();
        assert!(
            matches!(o.state, OrderState::Placed | OrderState::Final),
            "order {} ({link}) is {:?}, note {:?}",
            o.id,
            o.state,
            o.note
        );
        assert_eq!(
            o.upstream_order.as_ref(),
            created.get(link),
            "order {} keeps the upstream's id",
            o.id
        );
    }
    common::gw::assert_ledgers_balance(store).await;
}

/// Answers the journal holds: `placed` lines not followed by their `recorded` line.
fn journaled(path: &Path) -> Vec<Value> {
    let mut pending: Vec<Value> = Vec::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        match v.get("recorded") {
            Some(done) => pending.retain(|p| p["order"] != *done),
            None => pending.push(v),
        }
    }
    pending
}

/// Waits (bounded) until the journal holds `n` answers.
async fn wait_journaled(path: &Path, n: usize) {
    for _ in 0..6000 {
        if journaled(path).len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the journal {} never held {n} answers", path.display());
}

/// Places `IN_FLIGHT` orders at once, each with a link of its own; returns the replies once
/// the upstream has taken them all (it answers each `UPSTREAM_DELAY_MS` later).
async fn add_in_flight(
    url: &str,
    key: &str,
    upstream: std::net::SocketAddr,
    tag: &str,
) -> Vec<tokio::task::JoinHandle<Value>> {
    let before = upstream_adds(upstream).await;
    let calls: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let (url, key) = (url.to_owned(), key.to_owned());
            let link = format!("https://instagram.com/{tag}{i}");
            tokio::spawn(async move {
                let pairs = [
                    ("key", key.as_str()),
                    ("action", "add"),
                    ("service", "1"),
                    ("link", link.as_str()),
                    ("quantity", "1000"),
                ];
                slow_form(&url, &pairs).await
            })
        })
        .collect();
    common::gw::upstream_saw(
        &Http::default(),
        upstream,
        ALPHA_KEY,
        "add",
        before + IN_FLIGHT as u64,
    )
    .await;
    calls
}

/// A form `POST` whose reply may take minutes: while SQLite is locked every write waits out
/// the busy timeout in turn, sync's and each dispatch's, longer than `Http`'s 30 s.
async fn slow_form(url: &str, pairs: &[(&str, &str)]) -> Value {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let req = http::Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(bytes::Bytes::from(common::encode(pairs))))
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(300), client.request(req))
        .await
        .expect("a reply within 5 minutes")
        .expect("a reply");
    let body = reply.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

async fn upstream_adds(upstream: std::net::SocketAddr) -> u64 {
    let url = format!("http://{upstream}/_sim/state?key={ALPHA_KEY}");
    Http::default().get(&url).await.json()["requests"]["add"]
        .as_u64()
        .unwrap_or(0)
}

/// Each call's reply is an order id: the customer was told the order exists.
async fn order_ids(calls: Vec<tokio::task::JoinHandle<Value>>) -> Vec<u64> {
    let mut ids = Vec::new();
    for call in calls {
        let reply = call.await.unwrap();
        ids.push(
            reply["order"]
                .as_u64()
                .unwrap_or_else(|| panic!("an order id: {reply}")),
        );
    }
    ids
}

// ---------------------------------------------------------------------------------------
// Under load, in process
// ---------------------------------------------------------------------------------------

/// A gateway (in this process) on `db`, its upstream sitting on every `add`.
async fn gateway_on(db_url: &str) -> Env {
    let options = Options {
        upstream_timeout: "10s",
        ..Options::default()
    };
    let url = db_url.to_owned();
    Env::tuned_with(
        options,
        |a, _| {
            a.faults = serde_json::from_value(
                json!({"slow": 1, "slow_ms": UPSTREAM_DELAY_MS, "actions": ["add"]}),
            )
            .unwrap();
        },
        move |text| {
            let line = text
                .lines()
                .find(|l| l.starts_with("database: "))
                .unwrap()
                .to_owned();
            text.replacen(&line, &format!("database: \"{url}\""), 1)
        },
    )
    .await
}

async fn outage_under_load(mut db: Db, dir: Scratch) {
    let env = gateway_on(&db.url()).await;
    let key = env.client("ann", "100", "default").await;
    let journal = db.journal(&env.config_path);
    let upstream_journal = env.dir.path("alpha.jsonl");

    // Orders before the outage go through as ever.
    let first = env
        .add(
            &key,
            "1",
            &[
                ("link", "https://instagram.com/before"),
                ("quantity", "1000"),
            ],
        )
        .await;
    // Final (sync no longer touches it), then polled once: the status cache holds it.
    env.wait_final(first).await;
    assert!(env.status(&key, first).await["status"].is_string());

    let calls = add_in_flight(&env.url(), &key, env.alpha.addr, "during").await;
    db.take_away();
    let during = order_ids(calls).await;
    // The upstream answered every one while the store refused to record it: kept.
    let kept = journaled(&journal);
    assert_eq!(kept.len(), IN_FLIGHT, "journal: {kept:?}");
    for id in &during {
        assert!(
            kept.iter().any(|k| k["order"] == *id),
            "order {id} is journaled with its upstream id"
        );
    }
    let errors = env
        .metric(r#"panelgate_store_errors_total{operation="mark_placed"}"#)
        .await
        .unwrap_or(0.0);
    assert!(errors >= IN_FLIGHT as f64, "store errors counted: {errors}");

    if matches!(db, Db::Postgres(_)) {
        during_outage(&env, &key, first).await;
    }

    db.give_back();
    for id in during {
        env.wait_order(id, |o| {
            matches!(o.state, OrderState::Placed | OrderState::Final)
        })
        .await;
    }
    assert!(journaled(&journal).is_empty(), "every answer retired");
    assert_eq!(env.metric("panelgate_store_up").await, Some(1.0));
    // And new orders go through again.
    env.add(
        &key,
        "1",
        &[
            ("link", "https://instagram.com/after"),
            ("quantity", "1000"),
        ],
    )
    .await;
    let created = created_upstream(&upstream_journal);
    assert_eq!(created.len(), IN_FLIGHT + 2);
    assert_settled(env.store(), &created).await;
    drop(dir);
}

/// What customers and probes see while the database is away.
async fn during_outage(env: &Env, key: &str, held: u64) {
    let before = upstream_adds(env.alpha.addr).await;
    let url = env.url();
    let add = slow_form(
        &url,
        &[
            ("key", key),
            ("action", "add"),
            ("service", "1"),
            ("link", "https://instagram.com/x"),
            ("quantity", "1000"),
        ],
    )
    .await;
    assert_eq!(
        add["error"],
        "Service is temporarily unavailable, please try again later"
    );
    assert_eq!(
        upstream_adds(env.alpha.addr).await,
        before,
        "nothing went upstream without a hold"
    );
    let status = slow_form(
        &url,
        &[
            ("key", key),
            ("action", "status"),
            ("order", &held.to_string()),
        ],
    )
    .await;
    assert!(
        status["status"].is_string(),
        "answered from the status cache: {status}"
    );
    let balance = slow_form(&url, &[("key", key), ("action", "balance")]).await;
    assert_eq!(
        balance["error"],
        "Service is temporarily unavailable, please try again later"
    );
    let ready = env
        .http
        .get(&format!("http://{}/readyz", env.gw().addr))
        .await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(
        ready.json()["problems"]
            .to_string()
            .contains("database unreachable"),
        "{}",
        ready.text()
    );
    assert_eq!(env.metric("panelgate_store_up").await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_locked_under_add_load_loses_no_upstream_order() {
    let dir = Scratch::new("outage-sqlite");
    outage_under_load(Db::sqlite(&dir.0), dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_under_add_load_loses_no_upstream_order() {
    let Some(db) = Db::postgres() else { return };
    outage_under_load(db, Scratch::new("outage-pg")).await;
}

// ---------------------------------------------------------------------------------------
// kill -9 while the database is away
// ---------------------------------------------------------------------------------------

const CUSTOMER_KEY: &str = "outage-customer-key-0001";

fn write_config(dir: &Scratch, upstream: &str, database: &str) -> PathBuf {
    let config = dir.path("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"listen: "127.0.0.1:0"
database: "{database}"
upstreams:
  - name: alpha
    url: "{upstream}"
    key: "{ALPHA_KEY}"
    timeout: 10s
services:
  - id: 1
    upstream: alpha
    service: 101
    markup: {{ percent: 25 }}
clients:
  - {{ name: ann, key: "{CUSTOMER_KEY}", balance: "100" }}
"#
        ),
    )
    .unwrap();
    config
}

fn serve(config: &Path) -> Spawned {
    let mut command = Command::new(env!("CARGO_BIN_EXE_panelgate"));
    command
        .args(["serve", "--config"])
        .arg(config)
        .env("NO_COLOR", "1");
    Spawned::start(command)
}

async fn kill_9_while_away(mut db: Db, dir: Scratch) {
    let mut sim = common::fast_config();
    sim.key = panelgate::config::Secret::new(ALPHA_KEY);
    sim.journal = Some(dir.path("alpha.jsonl"));
    sim.faults = serde_json::from_value(
        json!({"slow": 1, "slow_ms": UPSTREAM_DELAY_MS, "actions": ["add"]}),
    )
    .unwrap();
    let upstream = common::simulator(sim).await;
    let config = write_config(&dir, &upstream.url(), &db.url());
    let journal = db.journal(&config);

    let mut gateway = serve(&config);
    let calls = add_in_flight(&gateway.url, CUSTOMER_KEY, upstream.addr, "killed").await;
    db.take_away();
    let ids = order_ids(calls).await;
    wait_journaled(&journal, IN_FLIGHT).await;
    gateway.child.kill().unwrap();
    gateway.child.wait().unwrap();
    db.give_back();

    let restarted = serve(&config);
    // The replay ran before it listened: the store has every answer now.
    let store = store::open(&db.url()).await.unwrap();
    for id in &ids {
        let o = store.order(*id as i64).await.unwrap().unwrap();
        assert!(
            matches!(o.state, OrderState::Placed | OrderState::Final),
            "order {id}: {o:?}"
        );
    }
    assert!(
        journaled(&journal).is_empty(),
        "the journal was replayed and emptied"
    );
    let created = created_upstream(&dir.path("alpha.jsonl"));
    assert_eq!(created.len(), IN_FLIGHT, "nothing placed twice");
    assert_settled(store.as_ref(), &created).await;
    let logs = restarted.terminate();
    assert!(logs.contains("journal"), "{logs}");
    upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_kill_9_while_locked_replays_the_journal_at_restart() {
    let dir = Scratch::new("outage-kill-sqlite");
    kill_9_while_away(Db::sqlite(&dir.0), dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_kill_9_while_stopped_replays_the_journal_at_restart() {
    let Some(db) = Db::postgres() else { return };
    kill_9_while_away(db, Scratch::new("outage-kill-pg")).await;
}
