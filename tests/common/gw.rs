//! A gateway in front of two simulated upstreams with different catalogs and currencies:
//! `alpha` (USD, the built-in catalog) and `beta` (EUR at fx 1.1, a small catalog of its own).

use std::path::{Path, PathBuf};
use std::time::Duration;

use panelgate::app::{self, Running};
use panelgate::config::{self, Secret};
use panelgate::sim::{self, SimConfig, SimHandle};
use panelgate::store::Store;
use rust_decimal::Decimal;
use serde_json::Value;

use super::{Http, fast_config, simulator};

pub const ALPHA_KEY: &str = "alpha-upstream-key-123";
pub const BETA_KEY: &str = "beta-upstream-key-456";

pub const BETA_CATALOG: &str = r#"
- {service: 201, name: "Beta Followers", type: Default, category: "Beta Instagram", rate: "2.00", min: 10, max: 5000, refill: true, cancel: true}
- {service: 202, name: "Beta Likes", type: Default, category: "Beta Instagram", rate: "0.40", min: 10, max: 100000, cancel: true}
- {service: 203, name: "Beta Package", type: Package, category: "Beta Packages", rate: "5", min: 1, max: 1}
- {service: 204, name: "Beta Auto Likes", type: Subscriptions, category: "Beta Instagram", rate: "1", min: 10, max: 100}
"#;

/// A unique scratch folder under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("panelgate-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Env {
    pub dir: Scratch,
    pub alpha: SimHandle,
    pub beta: SimHandle,
    pub gw: Option<Running>,
    pub config_path: PathBuf,
    pub http: Http,
}

/// Knobs the tests turn.
pub struct Options {
    pub sync_interval: &'static str,
    pub status_max_age: &'static str,
    pub catalog_ttl: &'static str,
    pub extra: &'static str,
    pub alpha_speed: f64,
    pub upstream_timeout: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync_interval: "50ms",
            status_max_age: "0s",
            catalog_ttl: "5m",
            extra: "",
            alpha_speed: 100_000.0,
            upstream_timeout: "3s",
        }
    }
}

pub fn alpha_config(dir: &Path, speed: f64) -> SimConfig {
    let mut cfg = fast_config();
    cfg.key = Secret::new(ALPHA_KEY);
    cfg.speed = speed;
    cfg.journal = Some(dir.join("alpha.jsonl"));
    cfg
}

pub fn beta_config(dir: &Path) -> SimConfig {
    let mut cfg = fast_config();
    cfg.key = Secret::new(BETA_KEY);
    cfg.currency = "EUR".into();
    cfg.first_order_id = 5001;
    let catalog = dir.join("beta-catalog.yaml");
    std::fs::write(&catalog, BETA_CATALOG).unwrap();
    cfg.services = sim::catalog::load(&catalog).unwrap();
    cfg.journal = Some(dir.join("beta.jsonl"));
    cfg
}

/// The backend the suite runs against: SQLite by default, PostgreSQL when
/// `PANELGATE_TEST_BACKEND=postgres` (`.ci/run` runs the suite both ways).
pub fn postgres_backend() -> bool {
    std::env::var("PANELGATE_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// A fresh database for one test: a SQLite file in `dir`, or a new PostgreSQL database on the
/// server `PANELGATE_TEST_POSTGRES` names (default: the local one). Test databases are named
/// `pgt_*`; `.ci/run` drops leftovers.
pub fn database_url(dir: &Path) -> String {
    if !postgres_backend() {
        return format!("sqlite://{}", dir.join("gateway.db").display());
    }
    let server = std::env::var("PANELGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "pgt_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 1_000_000
    );
    let out = std::process::Command::new("psql")
        .arg(&server)
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            &format!("CREATE DATABASE {name}"),
        ])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "creating {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

pub fn config_text(dir: &Path, alpha: &str, beta: &str, o: &Options) -> String {
    format!(
        r#"listen: "127.0.0.1:0"
database: "{db}"
currency: USD
status_max_age: {max_age}
upstreams:
  - name: alpha
    url: "{alpha}"
    key: "{ALPHA_KEY}"
    timeout: {timeout}
    breaker: {{ failures: 3, cooldown: 300ms }}
  - name: beta
    url: "{beta}"
    key: "{BETA_KEY}"
    currency: EUR
    fx: "1.1"
    timeout: {timeout}
    breaker: {{ failures: 3, cooldown: 300ms }}
services:
  - id: 1
    upstream: alpha
    service: 101
    markup: {{ percent: 25 }}
  - id: 2
    upstream: alpha
    service: 102
    markup: {{ percent: 25 }}
    fallback: [{{ upstream: beta, service: 202 }}]
  - id: 3
    upstream: alpha
    service: 118
    markup: {{ percent: 25 }}
    name: "TikTok Followers [our best]"
    min: 200
  - import: alpha
    id_offset: 1000
    markup: {{ percent: 40 }}
  - import: beta
    id_offset: 2000
    markup: {{ multiplier: 1.5, round_up_to: 0.01 }}
price_groups:
  vip:
    markup: {{ percent: 10 }}
    rate_limit: {{ per_second: 1000, burst: 1000 }}
    read_rate_limit: {{ per_second: 1000, burst: 1000 }}
sync:
  interval: {sync}
catalog:
  ttl: {ttl}
{extra}"#,
        db = database_url(dir),
        max_age = o.status_max_age,
        sync = o.sync_interval,
        ttl = o.catalog_ttl,
        extra = o.extra,
        timeout = o.upstream_timeout,
    )
}

/// The config with `services` put first in its `services:` list.
pub fn with_services(text: String, services: &str) -> String {
    text.replacen("services:\n", &format!("services:\n{services}"), 1)
}

/// The config with its first `from` replaced (which must be there).
pub fn replaced(text: String, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not in the config");
    text.replacen(from, to, 1)
}

impl Env {
    pub async fn start(o: Options) -> Env {
        let mut env = Env::prepare(o, |_, _| {}, |t| t).await;
        env.start_gateway().await;
        env
    }

    /// The suite's two simulators (tuned) and a gateway on the suite's config, edited.
    pub async fn tuned(
        tune: impl FnOnce(&mut SimConfig, &mut SimConfig),
        edit: impl FnOnce(String) -> String,
    ) -> Env {
        Env::tuned_with(Options::default(), tune, edit).await
    }

    /// The same, from the knobs `o`.
    pub async fn tuned_with(
        o: Options,
        tune: impl FnOnce(&mut SimConfig, &mut SimConfig),
        edit: impl FnOnce(String) -> String,
    ) -> Env {
        let mut env = Env::prepare(o, tune, edit).await;
        env.start_gateway().await;
        env
    }

    /// Everything but the gateway: the simulators running, the config written. Tests that
    /// need an upstream broken before the gateway first asks it start the gateway themselves.
    pub async fn prepare(
        o: Options,
        tune: impl FnOnce(&mut SimConfig, &mut SimConfig),
        edit: impl FnOnce(String) -> String,
    ) -> Env {
        let dir = Scratch::new("gw");
        let mut a = alpha_config(&dir.0, o.alpha_speed);
        let mut b = beta_config(&dir.0);
        tune(&mut a, &mut b);
        let alpha = simulator(a).await;
        let beta = simulator(b).await;
        let config_path = dir.path("config.yaml");
        let text = config_text(&dir.0, &alpha.url(), &beta.url(), &o);
        std::fs::write(&config_path, edit(text)).unwrap();
        Env {
            dir,
            alpha,
            beta,
            gw: None,
            config_path,
            http: Http::default(),
        }
    }

    pub async fn start_gateway(&mut self) {
        let cfg = config::load(&self.config_path).expect("config is valid");
        self.gw = Some(app::start(cfg).await.expect("gateway starts"));
    }

    pub async fn stop_gateway(&mut self) {
        if let Some(gw) = self.gw.take() {
            gw.stop().await;
        }
    }

    pub fn gw(&self) -> &Running {
        self.gw.as_ref().expect("gateway running")
    }

    pub fn url(&self) -> String {
        self.gw().url()
    }

    pub fn store(&self) -> &dyn Store {
        self.gw().store.as_ref()
    }

    /// Creates a customer and returns its key.
    pub async fn client(&self, name: &str, balance: &str, group: &str) -> String {
        let cfg = self.gw().gateway().cfg.clone();
        let (_, key) = panelgate::admin::add_client(
            self.store(),
            &cfg,
            name,
            balance.parse().unwrap(),
            group,
            Decimal::ZERO,
        )
        .await
        .unwrap();
        key
    }

    /// An admin token made through the core the CLI runs (actor `cli`).
    pub async fn admin_token(&self, name: &str, role: panelgate::store::admin::Role) -> String {
        let cfg = self.gw().gateway().cfg.clone();
        let op = panelgate::operator::Operator {
            store: self.store(),
            cfg: &cfg,
            actor: panelgate::operator::CLI,
        };
        op.add_token(name, role).await.unwrap()
    }

    pub async fn call(&self, key: &str, pairs: &[(&str, &str)]) -> Value {
        let mut all = vec![("key", key)];
        all.extend_from_slice(pairs);
        self.http.form(&self.url(), &all).await.json()
    }

    pub async fn balance(&self, key: &str) -> Decimal {
        money(&self.call(key, &[("action", "balance")]).await["balance"])
    }

    /// Places an order and returns its id (panics on an error reply).
    pub async fn add(&self, key: &str, service: &str, fields: &[(&str, &str)]) -> u64 {
        let mut pairs = vec![("action", "add"), ("service", service)];
        pairs.extend_from_slice(fields);
        let r = self.call(key, &pairs).await;
        r["order"]
            .as_u64()
            .unwrap_or_else(|| panic!("no order id: {r}"))
    }

    /// Places an order of service 1 that the simulated upstream takes and keeps in progress
    /// (`sim-fate=hold`): placed, and never final unless the operator ends it.
    pub async fn add_held(&self, key: &str, quantity: &str) -> u64 {
        let link = "https://i.com/a?sim-fate=hold";
        self.add(key, "1", &[("link", link), ("quantity", quantity)])
            .await
    }

    pub async fn status(&self, key: &str, order: u64) -> Value {
        self.call(key, &[("action", "status"), ("order", &order.to_string())])
            .await
    }

    /// Polls until the order's status is one of `wanted` (bounded).
    pub async fn wait_status(&self, key: &str, order: u64, wanted: &[&str]) -> Value {
        let mut last = Value::Null;
        for _ in 0..500 {
            last = self.status(key, order).await;
            if wanted.iter().any(|w| last["status"] == *w) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("order {order} never reached {wanted:?}: {last}");
    }

    /// Polls until `check` holds for the order as the store sees it (bounded).
    /// Order `id` as the store holds it now; it must exist.
    pub async fn order(&self, id: u64) -> panelgate::store::Order {
        let found = self.store().order(id as i64).await.unwrap();
        found.unwrap_or_else(|| panic!("no order {id}"))
    }

    /// Every order in the store.
    pub async fn orders(&self) -> Vec<panelgate::store::Order> {
        self.store().list_orders(&Default::default()).await.unwrap()
    }

    pub async fn wait_order(
        &self,
        id: u64,
        check: impl Fn(&panelgate::store::Order) -> bool,
    ) -> panelgate::store::Order {
        for _ in 0..500 {
            if let Some(o) = self.store().order(id as i64).await.unwrap()
                && check(&o)
            {
                return o;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "order {id} never reached the expected state: {:?}",
            self.store().order(id as i64).await
        );
    }

    /// The order once it is final as the store sees it (bounded).
    pub async fn wait_final(&self, id: u64) -> panelgate::store::Order {
        self.wait_order(id, |o| o.state == panelgate::store::OrderState::Final)
            .await
    }

    /// What alpha itself answers for the order now, asked directly (not through the gateway).
    pub async fn alpha_status(&self, o: &panelgate::store::Order) -> Value {
        let pairs = [
            ("key", ALPHA_KEY),
            ("action", "status"),
            ("order", o.upstream_order.as_deref().unwrap()),
        ];
        self.http.form(&self.alpha.url(), &pairs).await.json()
    }

    /// Every customer's balance equals the sum of their ledger entries, and no balance is
    /// below its floor.
    pub async fn assert_ledgers_balance(&self) {
        assert_ledgers_balance(self.store()).await;
    }

    /// Lines of a simulator's journal.
    pub fn journal(&self, name: &str) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path(&format!("{name}.jsonl")))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// How many API requests with `action` a simulator has received (its own count).
    pub async fn requests(&self, sim: &SimHandle, key: &str, action: &str) -> u64 {
        let state = self
            .http
            .get(&format!("http://{}/_sim/state?key={key}", sim.addr))
            .await
            .json();
        state["requests"][action].as_u64().unwrap_or(0)
    }

    /// The gateway's `/metrics` scrape, over its API listener.
    pub async fn metrics(&self) -> String {
        self.http
            .get(&format!("http://{}/metrics", self.gw().addr))
            .await
            .text()
    }

    /// The value of one series on `/metrics` (`name{labels}` as exported), if exported.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        sample(&self.metrics().await, series)
    }

    /// Runs one SQL statement on the gateway's database directly, around the store (to plant
    /// a row the store itself would never write).
    pub async fn sql(&self, sql: &str) {
        let url = self.gw().gateway().cfg.database.clone();
        if url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }

    /// Runs the operator CLI against this gateway's config and database; returns its stdout.
    /// Awaited, not blocked on: the gateway under test shares this runtime and must keep
    /// running (it may be inside a write transaction the CLI waits for).
    pub async fn cli(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_panelgate"))
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `panelgate check-config` on this gateway's config, as the operator runs it: whether
    /// it succeeded, and its stdout.
    pub async fn check_config(&self) -> (bool, String) {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_panelgate"))
            .args(["check-config", "--config"])
            .arg(&self.config_path)
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success(), text)
    }

    pub async fn set_faults(&self, sim: &SimHandle, key: &str, faults: Value) {
        let r = self
            .http
            .json(
                &format!("http://{}/_sim/faults?key={key}", sim.addr),
                &faults,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// Every customer's balance in `store` equals the sum of their ledger entries and is above
/// its floor, and no order is refunded more than it was charged.
pub async fn assert_ledgers_balance(store: &dyn Store) {
    for (c, _) in store.list_customers(&Default::default()).await.unwrap() {
        let sum: i64 = store
            .ledger(c.id)
            .await
            .unwrap()
            .iter()
            .map(|e| e.amount)
            .sum();
        assert_eq!(
            sum, c.balance,
            "ledger of {} does not sum to its balance",
            c.name
        );
        assert!(
            c.balance >= -c.credit_limit,
            "{} is below its floor",
            c.name
        );
    }
    for o in store.list_orders(&Default::default()).await.unwrap() {
        assert!(
            o.refunded <= o.charge,
            "order {} refunded more than charged",
            o.id
        );
    }
}

/// An amount from a reply, which must come in the wire form: a string with five decimals.
pub fn money(v: &Value) -> Decimal {
    let text = v
        .as_str()
        .unwrap_or_else(|| panic!("money is a string: {v}"));
    let decimals = text.split_once('.').map_or("", |(_, d)| d);
    assert!(
        decimals.len() == 5 && decimals.bytes().all(|b| b.is_ascii_digit()),
        "money has five decimals: {text:?}"
    );
    text.parse().unwrap()
}

pub fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// The value of one series (`name{labels}` as the scrape spells it) in a `/metrics` scrape;
/// `None` when it is not exported, so that a missing metric never reads as 0.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Polls a simulator's own count of `action` requests (`/_sim/state` at `addr`) until it
/// reaches `at_least`, 10 s at most; returns the count. The way to know a request has reached
/// an upstream, where a fixed sleep would only hope so.
pub async fn upstream_saw(
    http: &Http,
    addr: impl std::fmt::Display,
    key: &str,
    action: &str,
    at_least: u64,
) -> u64 {
    let url = format!("http://{addr}/_sim/state?key={key}");
    let mut seen = 0;
    for _ in 0..1000 {
        seen = http.get(&url).await.json()["requests"][action]
            .as_u64()
            .unwrap_or(0);
        if seen >= at_least {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the upstream saw {seen} {action} requests, not {at_least}");
}
