//! The YAML configuration: read as text, `${VAR}` expanded, parsed into a raw schema that
//! refuses unknown keys (serde reports them with their line), then validated into the runtime
//! [`Config`] with errors that name the key at fault.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};

use crate::matcher::{Filter, Hidden, NameSet};
use crate::pricing::Markup;
use crate::protocol::ServiceType;
use crate::server::Limits;
use crate::sim::{Chance, Faults};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A secret (an API key): usable, but never printed. Debug and Display show `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A duration as the config writes it: `2s`, `500ms`, `5m`, `1h`, or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_yaml_ng::Value::deserialize(d)?;
        let text = match v {
            serde_yaml_ng::Value::String(s) => s,
            serde_yaml_ng::Value::Number(n) => format!("{n}s"),
            _ => {
                return Err(serde::de::Error::custom(
                    "a duration like 2s, 500ms, 5m, 1h",
                ));
            }
        };
        parse_duration(&text).map(HumanDuration).ok_or_else(|| {
            serde::de::Error::custom(format!("{text:?} is not a duration like 2s, 500ms, 5m, 1h"))
        })
    }
}

pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = t.split_at(split);
    let n: Decimal = number.parse().ok()?;
    let millis = match unit.trim() {
        "ms" => n,
        "s" => n * Decimal::ONE_THOUSAND,
        "m" => n * Decimal::from(60_000),
        "h" => n * Decimal::from(3_600_000),
        _ => return None,
    };
    let millis: u64 = rust_decimal::prelude::ToPrimitive::to_u64(&millis.trunc())?;
    Some(Duration::from_millis(millis))
}

// ---------------------------------------------------------------------------------------
// Raw schema: exactly what the file may say.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    log_level: Option<String>,
    database: Option<String>,
    currency: Option<String>,
    status_max_age: Option<HumanDuration>,
    balance_poll: Option<HumanDuration>,
    config_poll: Option<HumanDuration>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    catalog: RawCatalog,
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    upstreams: Vec<RawUpstream>,
    #[serde(default)]
    services: Vec<RawRule>,
    #[serde(default)]
    price_groups: HashMap<String, RawGroup>,
    #[serde(default)]
    clients: Vec<RawClient>,
    simulator: Option<SimulatorSection>,
    tls: Option<TlsFiles>,
    journal: Option<PathBuf>,
    admin: Option<RawAdmin>,
    #[serde(default)]
    runtime: RawRuntime,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    model: Option<RuntimeModel>,
    threads: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<usize>,
    max_connections: Option<usize>,
    per_client: Option<RateSpec>,
    per_client_reads: Option<RateSpec>,
    failed_keys_per_minute: Option<u32>,
    header_read_timeout: Option<HumanDuration>,
    body_read_timeout: Option<HumanDuration>,
    shutdown_grace: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    ttl: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    interval: Option<HumanDuration>,
    lease: Option<HumanDuration>,
    stuck_after: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: String,
    url: String,
    key: Secret,
    currency: Option<String>,
    fx: Option<Decimal>,
    timeout: Option<HumanDuration>,
    connect_timeout: Option<HumanDuration>,
    max_concurrency: Option<usize>,
    rate_limit: Option<u32>,
    retries: Option<u32>,
    #[serde(default)]
    breaker: RawBreaker,
    simulate: Option<SimulatorSection>,
    retired: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    failures: Option<u32>,
    cooldown: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    upstream: String,
    service: u64,
}

/// One entry of `services:`: explicit (`id` + `upstream` + `service`) or bulk (`import`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Option<u64>,
    upstream: Option<String>,
    service: Option<u64>,
    import: Option<String>,
    id_offset: Option<u64>,
    categories: Option<Vec<String>>,
    types: Option<Vec<String>>,
    exclude_types: Option<Vec<String>>,
    /// Leave out upstream services an explicit entry already sells.
    skip_mapped: Option<bool>,
    markup: Option<Markup>,
    /// Lets this service's markups sell below cost (a loss leader); refused otherwise.
    allow_loss: Option<bool>,
    #[serde(default)]
    group_markup: HashMap<String, Markup>,
    name: Option<String>,
    category: Option<String>,
    min: Option<u64>,
    max: Option<u64>,
    refill: Option<bool>,
    cancel: Option<bool>,
    dripfeed: Option<bool>,
    desc: Option<String>,
    stuck_after: Option<HumanDuration>,
    #[serde(default)]
    fallback: Vec<RawTarget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    /// Required, except on `default` (whose customers pay each entry's markup).
    markup: Option<Markup>,
    rate_limit: Option<RateSpec>,
    read_rate_limit: Option<RateSpec>,
    hide_types: Option<Vec<String>>,
    hide_categories: Option<Vec<String>>,
}

/// A rate limit: a sustained rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    pub per_second: u32,
    pub burst: Option<u32>,
}

/// A customer's two allowances: writes (`add`, `refill`, `cancel`, and requests whose action
/// cannot be read) and reads (`status`, `refill_status`, `balance`, `services`). Panels poll
/// statuses far more often than they order, so reads get a larger allowance of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRates {
    pub writes: RateSpec,
    pub reads: RateSpec,
}

/// `limits.per_client` unless the config says otherwise.
pub const DEFAULT_WRITE_RATE: RateSpec = RateSpec {
    per_second: 20,
    burst: Some(100),
};

/// `limits.per_client_reads` unless the config says otherwise.
pub const DEFAULT_READ_RATE: RateSpec = RateSpec {
    per_second: 100,
    burst: Some(500),
};

/// TLS termination: PEM files of the certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: String,
    /// Needed only to create the client; an entry without one carries settings (its
    /// `hide_*`) for a client created with `client add`.
    key: Option<Secret>,
    #[serde(default)]
    balance: Option<Decimal>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    credit_limit: Option<Decimal>,
    hide_types: Option<Vec<String>>,
    hide_categories: Option<Vec<String>>,
}

/// `simulator:` (for `panelgate simulate`) and an upstream's `simulate:` (a simulated panel
/// that `panelgate serve` starts at the upstream's address). Every key is optional.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorSection {
    pub listen: Option<SocketAddr>,
    pub key: Option<Secret>,
    pub seed: Option<u64>,
    pub balance: Option<Decimal>,
    pub currency: Option<String>,
    pub speed: Option<f64>,
    pub services: Option<usize>,
    pub catalog: Option<PathBuf>,
    pub journal: Option<PathBuf>,
    pub first_order_id: Option<u64>,
    pub partial_share: Option<Chance>,
    pub cancel_share: Option<Chance>,
    pub faults: Option<Faults>,
    /// How the simulated panel words its replies.
    pub dialect: Option<crate::sim::Dialect>,
    /// Serve the API at this path (e.g. `/api/v1`); other paths answer an HTML 404 page.
    pub api_path: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Runtime configuration: validated, defaults filled in.
// ---------------------------------------------------------------------------------------

pub const DEFAULT_GROUP: &str = "default";

/// `sync.stuck_after` unless the config says otherwise.
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub listen: SocketAddr,
    /// A second listener serving only `/metrics`, `/healthz` and `/readyz`.
    pub metrics_listen: Option<SocketAddr>,
    /// The log filter (`info`, `panelgate=debug,info`); `RUST_LOG` overrides it.
    pub log_level: String,
    /// How often each upstream's balance is polled for the metrics.
    pub balance_poll: Duration,
    /// How often the config file is checked for changes (reloaded when it changed); `0s`
    /// turns the check off (SIGHUP still reloads).
    pub config_poll: Option<Duration>,
    pub database: String,
    pub currency: String,
    /// A status younger than this is answered from the ledger without asking the upstream.
    pub status_max_age: Duration,
    pub limits: Limits,
    pub catalog_ttl: Duration,
    pub sync_interval: Duration,
    /// How long a claimed batch of sync work is left to the instance that claimed it.
    pub sync_lease: Duration,
    /// A placed order the upstream has reported nothing new of for this long (since its last
    /// change, or its creation) is marked stuck for the operator; `None` (`0s`): never.
    /// Services may say otherwise ([`Overrides::stuck_after`]).
    pub stuck_after: Option<Duration>,
    pub upstreams: Vec<UpstreamConfig>,
    pub explicit: Vec<ExplicitService>,
    pub imports: Vec<ImportRule>,
    /// Price groups and their markups (replacing a rule's markup for the group's customers
    /// unless the rule has a `group_markup` for that group).
    pub groups: HashMap<String, Markup>,
    pub clients: Vec<BootstrapClient>,
    /// What price groups and customers are not shown (nor sold).
    pub hiding: Hiding,
    pub simulator: Option<SimulatorSection>,
    /// Requests per customer, by price group (`default` for customers in no group).
    pub client_rates: HashMap<String, ClientRates>,
    /// Failed key attempts one IP address may make per minute before it is refused outright.
    pub failed_keys_per_minute: u32,
    pub tls: Option<TlsFiles>,
    /// Where upstream answers the store could not take yet are kept until it does
    /// ([`crate::journal`]); `None`: the default beside the database or the config file.
    pub journal: Option<PathBuf>,
    /// The admin API's listener (docs/admin-api.md); off when the section is absent.
    pub admin: Option<AdminConfig>,
    pub runtime: RuntimeConfig,
}

/// How requests are spread over the machine's cores (`runtime:`; at start only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeModel {
    /// One work-stealing runtime: any thread takes any request.
    MultiThread,
    /// One single-threaded runtime per thread, each with its own `SO_REUSEPORT` listener,
    /// upstream connections and database pool, as nginx's workers do.
    ThreadPerCore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub model: RuntimeModel,
    /// Worker threads (multi_thread) or runtimes (thread_per_core).
    pub threads: usize,
}

impl RuntimeConfig {
    /// How many copies of per-core state (upstream clients, database pools) to keep: one per
    /// runtime in thread_per_core, one shared otherwise.
    pub fn cores(&self) -> usize {
        match self.model {
            RuntimeModel::MultiThread => 1,
            RuntimeModel::ThreadPerCore => self.threads,
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            model: RuntimeModel::MultiThread,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    pub url: http::Uri,
    pub key: Secret,
    pub currency: Option<String>,
    /// The currency its `balance` reply must state before it takes orders: `currency` when
    /// the config declares one, else ours.
    pub expected_currency: String,
    /// Our money per unit of theirs.
    pub fx: Decimal,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_concurrency: usize,
    /// Requests per second we allow ourselves to send it (upstreams rate-limit their users).
    pub rate_limit: Option<u32>,
    /// Extra attempts for idempotent calls (services, status, balance, refill_status).
    pub retries: u32,
    /// Transport failures in a row that open the circuit.
    pub breaker_failures: u32,
    /// How long an open circuit fails fast before one probe is let through.
    pub breaker_cooldown: Duration,
    pub simulate: Option<SimulatorSection>,
    /// Takes no new orders (its services leave the catalog, fallbacks to it are skipped)
    /// while its open orders are still followed to the end: the way out of the config.
    pub retired: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub upstream: String,
    pub service: u64,
}

/// Fields a rule may override on the upstream's service.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub name: Option<String>,
    pub category: Option<String>,
    pub min: Option<u64>,
    pub max: Option<u64>,
    pub refill: Option<bool>,
    pub cancel: Option<bool>,
    pub dripfeed: Option<bool>,
    pub desc: Option<String>,
    /// This service's `sync.stuck_after` (slow drip-feeds, long-running services);
    /// `Some(ZERO)`: its orders are never marked stuck.
    pub stuck_after: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct ExplicitService {
    pub id: u64,
    pub target: Target,
    pub fallback: Vec<Target>,
    pub markup: Markup,
    pub group_markup: HashMap<String, Markup>,
    pub overrides: Overrides,
    pub allow_loss: bool,
}

#[derive(Debug, Clone)]
pub struct ImportRule {
    pub upstream: String,
    pub id_offset: u64,
    /// Empty: every category.
    pub categories: Vec<regex::Regex>,
    /// `types:` / `exclude_types:`.
    pub types: Filter,
    /// `skip_mapped:` leave out the upstream's services that an explicit entry names.
    pub skip_mapped: bool,
    pub markup: Markup,
    pub group_markup: HashMap<String, Markup>,
    pub overrides: Overrides,
    pub allow_loss: bool,
}

/// The markup a customer of `group` pays on a rule: the rule's own `group_markup` for the
/// group, else the price group's markup, else the rule's markup.
pub fn markup_for<'a>(
    group: &str,
    markup: &'a Markup,
    group_markup: &'a HashMap<String, Markup>,
    groups: &'a HashMap<String, Markup>,
) -> &'a Markup {
    group_markup
        .get(group)
        .or_else(|| {
            (group != DEFAULT_GROUP)
                .then(|| groups.get(group))
                .flatten()
        })
        .unwrap_or(markup)
}

/// Refuses a rule whose markup for some price group could sell below cost, unless the rule
/// says `allow_loss: true`. Static: `may_sell_below_cost` holds for every cost or none, so no
/// upstream list is needed.
fn check_margins(
    at: &str,
    markup: &Markup,
    group_markup: &HashMap<String, Markup>,
    groups: &HashMap<String, Markup>,
) -> Result<(), String> {
    let mut names: Vec<&str> = groups.keys().map(String::as_str).collect();
    names.push(DEFAULT_GROUP);
    names.sort_unstable();
    for g in names {
        if markup_for(g, markup, group_markup, groups).may_sell_below_cost() {
            return Err(format!(
                "{at}: the markup for price group {g} can sell below cost (a negative percent or add, or a multiplier under 1, without min_profit); set allow_loss: true on the service to sell at a loss, or add a min_profit (0 keeps the cost as the floor)"
            ));
        }
    }
    Ok(())
}

/// `types:` and `exclude_types:` of an import rule.
fn type_filter(
    at: &str,
    types: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
) -> Result<Filter, String> {
    let set = |key: &str, names: Option<Vec<String>>| {
        NameSet::new(&names.unwrap_or_default()).map_err(|e| format!("{at}.{key}: {e}"))
    };
    Ok(Filter {
        only: set("types", types)?,
        except: set("exclude_types", exclude)?,
    })
}

/// `hide_types` and `hide_categories` of the price groups and of `clients:` entries.
#[derive(Debug, Clone, Default)]
pub struct Hiding {
    /// Every configured group (`default` included), hiding something or not.
    groups: HashMap<String, Hidden>,
    /// Customers (by name) with a filter of their own.
    clients: HashMap<String, Hidden>,
}

static NOTHING: Hidden = Hidden::NOTHING;

impl Hiding {
    /// What every customer of `group` is not shown; a group the config no longer has is
    /// `default`, as for its prices.
    pub fn group(&self, group: &str) -> &Hidden {
        self.groups
            .get(group)
            .or_else(|| self.groups.get(DEFAULT_GROUP))
            .unwrap_or(&NOTHING)
    }

    /// What customer `name` of `group` is not shown: the group's filter and the customer's
    /// own, together (a customer can hide more than its group, never less).
    pub fn customer(&self, group: &str, name: &str) -> Cow<'_, Hidden> {
        let shared = self.group(group);
        match self.clients.get(name) {
            Some(own) => Cow::Owned(shared.union(own)),
            None => Cow::Borrowed(shared),
        }
    }
}

/// `price_groups:`, validated: per group its markup, request rate and filter.
struct PriceGroups {
    groups: HashMap<String, Markup>,
    client_rates: HashMap<String, ClientRates>,
    /// Every group, `default` included.
    hidden: HashMap<String, Hidden>,
}

fn price_groups(
    raw: HashMap<String, RawGroup>,
    defaults: ClientRates,
) -> Result<PriceGroups, String> {
    let mut out = PriceGroups {
        groups: HashMap::new(),
        client_rates: HashMap::from([(DEFAULT_GROUP.to_owned(), defaults)]),
        hidden: HashMap::from([(DEFAULT_GROUP.to_owned(), Hidden::default())]),
    };
    for (name, g) in raw {
        let at = format!("price_groups.{name}");
        match g.markup {
            Some(m) => {
                m.validate().map_err(|e| format!("{at}.markup: {e}"))?;
                out.groups.insert(name.clone(), m);
            }
            // Customers in no group pay each entry's markup; `default` may be here only
            // for its rate limit or its filter.
            None if name == DEFAULT_GROUP => {}
            None => {
                return Err(format!(
                    "{at}.markup: required (e.g. markup: {{ percent: 15 }})"
                ));
            }
        }
        let rates = ClientRates {
            writes: rate_or(&format!("{at}.rate_limit"), g.rate_limit, defaults.writes)?,
            reads: rate_or(
                &format!("{at}.read_rate_limit"),
                g.read_rate_limit,
                defaults.reads,
            )?,
        };
        out.client_rates.insert(name.clone(), rates);
        let hidden = hidden(&at, g.hide_types, g.hide_categories)?;
        out.hidden.insert(name, hidden);
    }
    Ok(out)
}

/// `clients:`: the clients to create when missing, and the customers' own filters (two
/// entries of one name hide what either hides).
fn clients(
    raw: Vec<RawClient>,
    groups: &HashMap<String, Markup>,
) -> Result<(Vec<BootstrapClient>, HashMap<String, Hidden>), String> {
    let mut clients = Vec::new();
    let mut own: HashMap<String, Hidden> = HashMap::new();
    for (i, c) in raw.into_iter().enumerate() {
        let at = format!("clients[{i}] ({})", c.name);
        if c.key.as_ref().is_some_and(|k| k.expose().len() < 16) {
            return Err(format!("{at}.key: must be at least 16 characters"));
        }
        let group = c.group.unwrap_or_else(|| DEFAULT_GROUP.into());
        if group != DEFAULT_GROUP && !groups.contains_key(&group) {
            return Err(format!("{at}.group: no price group named {group:?}"));
        }
        let hidden = hidden(&at, c.hide_types, c.hide_categories)?;
        if !hidden.is_empty() {
            let entry = own.entry(c.name.clone()).or_default();
            *entry = entry.union(&hidden);
        }
        clients.push(BootstrapClient {
            name: c.name,
            key: c.key,
            balance: c.balance.unwrap_or_default(),
            group,
            credit_limit: c.credit_limit.unwrap_or_default(),
        });
    }
    Ok((clients, own))
}

/// `hide_types:` and `hide_categories:` at `at`. Types are checked against the types of API
/// v2: a misspelt one would hide nothing and sell what it was meant to hide.
fn hidden(
    at: &str,
    types: Option<Vec<String>>,
    categories: Option<Vec<String>>,
) -> Result<Hidden, String> {
    let types =
        NameSet::new(&types.unwrap_or_default()).map_err(|e| format!("{at}.hide_types: {e}"))?;
    let known: Vec<&str> = ServiceType::ALL.iter().map(ServiceType::as_str).collect();
    if let Some(bad) = types.first_unknown(&known) {
        return Err(format!(
            "{at}.hide_types: {bad:?} is not a service type (known: {})",
            known.join(", ")
        ));
    }
    let categories = NameSet::new(&categories.unwrap_or_default())
        .map_err(|e| format!("{at}.hide_categories: {e}"))?;
    Ok(Hidden { types, categories })
}

#[derive(Debug, Clone)]
pub struct BootstrapClient {
    pub name: String,
    /// `None`: the entry creates no client (it only carries settings for an existing one).
    pub key: Option<Secret>,
    pub balance: Decimal,
    pub group: String,
    pub credit_limit: Decimal,
}

impl Config {
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// Whether `name` is configured and not retired: whether new orders may go there.
    pub fn takes_orders(&self, name: &str) -> bool {
        self.upstream(name).is_some_and(|u| !u.retired)
    }

    /// The longest a dispatch can run: every target tried, each call bounded by its timeout
    /// (waiting for a slot and for our pace included), with a margin. A `dispatching` order
    /// older than this was left behind by a process that died.
    pub fn dispatch_deadline(&self) -> Duration {
        let slowest = self
            .upstreams
            .iter()
            .map(|u| u.timeout)
            .max()
            .unwrap_or_default();
        let targets = 1 + self
            .explicit
            .iter()
            .map(|e| e.fallback.len())
            .max()
            .unwrap_or(0) as u32;
        // The margin covers clock differences between instances.
        slowest * 3 * targets + Duration::from_secs(5)
    }

    /// The longest an `add` for a service with these targets can take (`check-config` prints
    /// it for proxy timeouts): reading the primary's currency if it is not known yet, then a
    /// call to each target. A call may wait its upstream's timeout for a connection slot,
    /// again for our pace towards it, and again for the reply.
    pub fn worst_case_add(&self, targets: &[&Target]) -> Duration {
        let call = |t: &Target| {
            self.upstream(&t.upstream)
                .map_or(Duration::ZERO, |u| u.timeout * 3)
        };
        let currency = targets.first().map_or(Duration::ZERO, |t| call(t));
        currency + targets.iter().map(|t| call(t)).sum::<Duration>()
    }

    /// Every price group customers may be in.
    pub fn group_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.groups.keys().cloned().collect();
        names.push(DEFAULT_GROUP.into());
        names.sort();
        names.dedup();
        names
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Validates config text as if read from `path` (relative paths resolve against its folder).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    let text = expand_env(text, |name| std::env::var(name).ok()).map_err(invalid)?;
    let raw: RawConfig = serde_yaml_ng::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    validate(raw, path, base).map_err(invalid)
}

/// Replaces `${NAME}` with the variable's value; `$${` stands for a literal `${`. A missing
/// variable is an error naming it and its line.
pub fn expand_env(text: &str, var: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("${") {
            if rest[..at].ends_with('$') {
                out.push_str(&rest[..at - 1]);
                out.push_str("${");
                rest = &rest[at + 2..];
                continue;
            }
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("line {}: unclosed ${{", n + 1))?;
            let name = &after[..end];
            let value = var(name)
                .ok_or_else(|| format!("line {}: environment variable {name} is not set", n + 1))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// The rate limit at `at`, or `default` when the config gives none.
fn rate_or(at: &str, given: Option<RateSpec>, default: RateSpec) -> Result<RateSpec, String> {
    match given {
        Some(r) if r.per_second == 0 || r.burst == Some(0) => {
            Err(format!("{at}: per_second and burst must be above 0"))
        }
        Some(r) => Ok(r),
        None => Ok(default),
    }
}

fn validate(raw: RawConfig, path: &Path, base: &Path) -> Result<Config, String> {
    let currency = build_currency(raw.currency)?;
    let upstreams = build_upstreams(raw.upstreams, &currency, base)?;
    let PriceGroups {
        groups,
        client_rates,
        hidden: group_hidden,
    } = price_groups(raw.price_groups, build_default_rates(&raw.limits)?)?;
    let known: HashSet<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    let Services { explicit, imports } = build_services(raw.services, &known, &groups)?;
    let (clients, client_hidden) = clients(raw.clients, &groups)?;
    let sync = build_sync(&raw.sync);
    Ok(Config {
        path: path.to_owned(),
        listen: raw
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        metrics_listen: raw.metrics_listen,
        log_level: raw.log_level.unwrap_or_else(|| "info".into()),
        balance_poll: or_default(raw.balance_poll, Duration::from_secs(60)),
        config_poll: Some(or_default(raw.config_poll, Duration::from_secs(2)))
            .filter(|d| !d.is_zero()),
        database: build_database(raw.database, base),
        currency,
        status_max_age: or_default(raw.status_max_age, Duration::from_secs(60)),
        failed_keys_per_minute: raw.limits.failed_keys_per_minute.unwrap_or(20),
        limits: build_limits(&raw.limits),
        catalog_ttl: or_default(raw.catalog.ttl, Duration::from_secs(300)),
        sync_interval: sync.interval,
        sync_lease: sync.lease,
        stuck_after: sync.stuck_after,
        upstreams,
        explicit,
        imports,
        groups,
        clients,
        hiding: Hiding {
            groups: group_hidden,
            clients: client_hidden,
        },
        simulator: raw.simulator.map(|s| build_simulator(s, base)),
        client_rates,
        tls: raw.tls.map(|t| build_tls(t, base)),
        journal: raw.journal.map(|mut j| {
            beside(base, &mut j);
            j
        }),
        admin: raw.admin.map(|a| build_admin(a, base)).transpose()?,
        runtime: build_runtime(raw.runtime)?,
    })
}

/// Far more threads than any machine has cores would only be a typo costing memory.
const MAX_THREADS: usize = 1024;

fn build_runtime(raw: RawRuntime) -> Result<RuntimeConfig, String> {
    let d = RuntimeConfig::default();
    let threads = raw.threads.unwrap_or(d.threads);
    if threads == 0 || threads > MAX_THREADS {
        return Err(format!(
            "runtime.threads: must be between 1 and {MAX_THREADS}, not {threads}"
        ));
    }
    Ok(RuntimeConfig {
        model: raw.model.unwrap_or(d.model),
        threads,
    })
}

/// The duration the config gives, or `default`.
fn or_default(given: Option<HumanDuration>, default: Duration) -> Duration {
    given.map_or(default, |d| d.0)
}

/// `path` as given when absolute, else relative to the config file's directory `base`.
fn beside(base: &Path, path: &mut PathBuf) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

fn build_currency(raw: Option<String>) -> Result<String, String> {
    let currency = raw.unwrap_or_else(|| "USD".into());
    if currency.trim().is_empty() {
        return Err("currency: must not be empty".into());
    }
    Ok(currency)
}

/// `database:`, a relative SQLite file read as beside the config file.
fn build_database(raw: Option<String>, base: &Path) -> String {
    let database = raw.unwrap_or_else(|| "sqlite://panelgate.db".into());
    match database.strip_prefix("sqlite://") {
        Some(file) if !file.starts_with('/') && !file.is_empty() => {
            format!("sqlite://{}", base.join(file).display())
        }
        _ => database,
    }
}

fn build_tls(mut tls: TlsFiles, base: &Path) -> TlsFiles {
    beside(base, &mut tls.cert);
    beside(base, &mut tls.key);
    tls
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<SocketAddr>,
    tls: Option<TlsFiles>,
    allow_plaintext: Option<bool>,
}

/// `admin:`: where the admin API listens, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
}

/// The admin listener. Tokens would cross the network in the clear on a non-loopback address
/// without TLS: refused unless `allow_plaintext: true` says a proxy in front terminates it.
fn build_admin(raw: RawAdmin, base: &Path) -> Result<AdminConfig, String> {
    let listen = raw
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8081)));
    let tls = raw.tls.map(|t| build_tls(t, base));
    if !listen.ip().is_loopback() && tls.is_none() && raw.allow_plaintext != Some(true) {
        return Err(format!(
            "admin.listen: {listen} is not a loopback address and admin.tls is not set: admin \
             tokens would travel in the clear; set admin.tls, or admin.allow_plaintext: true \
             when a proxy in front terminates TLS (as in Docker, behind one)"
        ));
    }
    Ok(AdminConfig { listen, tls })
}

fn build_simulator(mut sim: SimulatorSection, base: &Path) -> SimulatorSection {
    for p in [&mut sim.catalog, &mut sim.journal].into_iter().flatten() {
        beside(base, p);
    }
    sim
}

/// `limits:` for the HTTP edge (the per-client rates are read with the price groups).
fn build_limits(raw: &RawLimits) -> Limits {
    let d = Limits::default();
    Limits {
        max_body_bytes: raw.max_body_bytes.unwrap_or(d.max_body_bytes),
        header_read_timeout: or_default(raw.header_read_timeout, d.header_read_timeout),
        body_read_timeout: or_default(raw.body_read_timeout, d.body_read_timeout),
        shutdown_grace: or_default(raw.shutdown_grace, d.shutdown_grace),
        max_connections: raw.max_connections.unwrap_or(d.max_connections).max(1),
    }
}

/// `limits.per_client` and `limits.per_client_reads`: the rates of customers whose price
/// group sets none.
fn build_default_rates(raw: &RawLimits) -> Result<ClientRates, String> {
    Ok(ClientRates {
        writes: rate_or("limits.per_client", raw.per_client, DEFAULT_WRITE_RATE)?,
        reads: rate_or(
            "limits.per_client_reads",
            raw.per_client_reads,
            DEFAULT_READ_RATE,
        )?,
    })
}

/// `sync:`, with its defaults.
struct SyncTimings {
    interval: Duration,
    lease: Duration,
    stuck_after: Option<Duration>,
}

fn build_sync(raw: &RawSync) -> SyncTimings {
    SyncTimings {
        interval: or_default(raw.interval, Duration::from_secs(30)),
        lease: or_default(raw.lease, Duration::from_secs(60)),
        stuck_after: Some(or_default(raw.stuck_after, DEFAULT_STUCK_AFTER))
            .filter(|d| !d.is_zero()),
    }
}

/// `upstreams:`, each named once.
fn build_upstreams(
    raw: Vec<RawUpstream>,
    currency: &str,
    base: &Path,
) -> Result<Vec<UpstreamConfig>, String> {
    let mut names = HashSet::new();
    let mut upstreams = Vec::with_capacity(raw.len());
    for (i, u) in raw.into_iter().enumerate() {
        let at = format!("upstreams[{i}] ({})", u.name);
        let valid_name = !u.name.is_empty()
            && u.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_name {
            return Err(format!("{at}: name must be letters, digits, - or _"));
        }
        if !names.insert(u.name.clone()) {
            return Err(format!("{at}: name used twice"));
        }
        upstreams.push(build_upstream(&at, u, currency, base)?);
    }
    Ok(upstreams)
}

fn build_upstream(
    at: &str,
    u: RawUpstream,
    currency: &str,
    base: &Path,
) -> Result<UpstreamConfig, String> {
    let url: http::Uri = u.url.parse().map_err(|e| format!("{at}.url: {e}"))?;
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
        return Err(format!("{at}.url: must be an http:// or https:// URL"));
    }
    if u.key.expose().is_empty() {
        return Err(format!("{at}.key: must not be empty"));
    }
    let (expected_currency, fx) = upstream_money(at, &u, currency)?;
    let timeout = or_default(u.timeout, Duration::from_secs(30));
    let max_concurrency = u.max_concurrency.unwrap_or(16);
    if max_concurrency == 0 || timeout.is_zero() {
        return Err(format!("{at}: timeout and max_concurrency must be above 0"));
    }
    if u.simulate.is_some() && url.scheme_str() != Some("http") {
        return Err(format!(
            "{at}.simulate: a simulated upstream needs an http:// url"
        ));
    }
    if u.rate_limit == Some(0) || u.breaker.failures == Some(0) {
        return Err(format!(
            "{at}: rate_limit and breaker.failures must be above 0"
        ));
    }
    Ok(UpstreamConfig {
        name: u.name,
        url,
        key: u.key,
        currency: u.currency,
        expected_currency,
        fx,
        timeout,
        connect_timeout: or_default(u.connect_timeout, Duration::from_secs(5)).min(timeout),
        max_concurrency,
        rate_limit: u.rate_limit,
        retries: u.retries.unwrap_or(2),
        breaker_failures: u.breaker.failures.unwrap_or(5),
        breaker_cooldown: or_default(u.breaker.cooldown, Duration::from_secs(10)),
        simulate: u.simulate.map(|s| build_simulator(s, base)),
        retired: u.retired.unwrap_or(false),
    })
}

/// An upstream's currency (the one its `balance` must state) and its rate to ours.
fn upstream_money(at: &str, u: &RawUpstream, currency: &str) -> Result<(String, Decimal), String> {
    let fx = u.fx.unwrap_or(Decimal::ONE);
    if fx <= Decimal::ZERO {
        return Err(format!("{at}.fx: must be above 0"));
    }
    let expected_currency = u.currency.clone().unwrap_or_else(|| currency.to_owned());
    // Without its rate, a foreign upstream would be priced as if its money were ours.
    if !expected_currency.eq_ignore_ascii_case(currency) && u.fx.is_none() {
        return Err(format!(
            "{at}.fx: currency is {expected_currency}, not ours ({currency}): give fx, our money per unit of theirs"
        ));
    }
    Ok((expected_currency, fx))
}

/// `services:`, split into explicit services and import rules.
#[derive(Debug, Default)]
struct Services {
    explicit: Vec<ExplicitService>,
    imports: Vec<ImportRule>,
}

/// What every entry of `services:` has, explicit or import rule.
struct Terms {
    markup: Markup,
    group_markup: HashMap<String, Markup>,
    overrides: Overrides,
    allow_loss: bool,
}

fn build_services(
    raw: Vec<RawRule>,
    known: &HashSet<&str>,
    groups: &HashMap<String, Markup>,
) -> Result<Services, String> {
    let mut out = Services::default();
    let mut explicit_ids = HashSet::new();
    for (i, mut r) in raw.into_iter().enumerate() {
        let at = match (r.id, &r.import) {
            (Some(id), _) => format!("services[{i}] (id {id})"),
            (None, Some(up)) => format!("services[{i}] (import {up})"),
            _ => format!("services[{i}]"),
        };
        let terms = build_terms(&at, &mut r, groups)?;
        match (r.id, r.import.take()) {
            (Some(id), None) => {
                let service = build_explicit(&at, id, r, terms, known, &mut explicit_ids)?;
                out.explicit.push(service);
            }
            (None, Some(upstream)) => out
                .imports
                .push(build_import(&at, upstream, r, terms, known)?),
            _ => {
                return Err(format!(
                    "{at}: give either id (explicit) or import (bulk), not both"
                ));
            }
        }
    }
    Ok(out)
}

/// An entry's markups (checked against the price groups' unless it may sell at a loss) and
/// overrides, taken out of `r`.
fn build_terms(
    at: &str,
    r: &mut RawRule,
    groups: &HashMap<String, Markup>,
) -> Result<Terms, String> {
    let markup = r
        .markup
        .take()
        .ok_or_else(|| format!("{at}: markup is required (e.g. markup: {{ percent: 25 }})"))?;
    markup.validate().map_err(|e| format!("{at}.markup: {e}"))?;
    for (g, m) in &r.group_markup {
        m.validate()
            .map_err(|e| format!("{at}.group_markup.{g}: {e}"))?;
    }
    let allow_loss = r.allow_loss.unwrap_or(false);
    if !allow_loss {
        check_margins(at, &markup, &r.group_markup, groups)?;
    }
    let overrides = Overrides {
        name: r.name.take(),
        category: r.category.take(),
        min: r.min,
        max: r.max,
        refill: r.refill,
        cancel: r.cancel,
        dripfeed: r.dripfeed,
        desc: r.desc.take(),
        stuck_after: r.stuck_after.map(|s| s.0),
    };
    if let (Some(min), Some(max)) = (overrides.min, overrides.max)
        && (min == 0 || min > max)
    {
        return Err(format!("{at}: need 0 < min <= max"));
    }
    Ok(Terms {
        markup,
        group_markup: std::mem::take(&mut r.group_markup),
        overrides,
        allow_loss,
    })
}

fn build_explicit(
    at: &str,
    id: u64,
    r: RawRule,
    terms: Terms,
    known: &HashSet<&str>,
    ids: &mut HashSet<u64>,
) -> Result<ExplicitService, String> {
    let (Some(upstream), Some(service)) = (r.upstream, r.service) else {
        return Err(format!(
            "{at}: an explicit service needs upstream and service"
        ));
    };
    if id == 0 {
        return Err(format!("{at}: id must be above 0"));
    }
    if !known.contains(upstream.as_str()) {
        return Err(format!("{at}.upstream: no upstream named {upstream:?}"));
    }
    if !ids.insert(id) {
        return Err(format!("{at}: id {id} is defined twice"));
    }
    let fallback = build_fallback(at, r.fallback, known)?;
    if r.categories.is_some()
        || r.id_offset.is_some()
        || r.types.is_some()
        || r.exclude_types.is_some()
        || r.skip_mapped.is_some()
    {
        return Err(format!(
            "{at}: categories, types, exclude_types, skip_mapped and id_offset belong to import rules"
        ));
    }
    Ok(ExplicitService {
        id,
        target: Target { upstream, service },
        fallback,
        markup: terms.markup,
        group_markup: terms.group_markup,
        overrides: terms.overrides,
        allow_loss: terms.allow_loss,
    })
}

fn build_fallback(
    at: &str,
    raw: Vec<RawTarget>,
    known: &HashSet<&str>,
) -> Result<Vec<Target>, String> {
    let mut fallback = Vec::with_capacity(raw.len());
    for (j, f) in raw.into_iter().enumerate() {
        if !known.contains(f.upstream.as_str()) {
            return Err(format!(
                "{at}.fallback[{j}].upstream: no upstream named {:?}",
                f.upstream
            ));
        }
        fallback.push(Target {
            upstream: f.upstream,
            service: f.service,
        });
    }
    Ok(fallback)
}

fn build_import(
    at: &str,
    upstream: String,
    r: RawRule,
    terms: Terms,
    known: &HashSet<&str>,
) -> Result<ImportRule, String> {
    if !known.contains(upstream.as_str()) {
        return Err(format!("{at}.import: no upstream named {upstream:?}"));
    }
    if r.upstream.is_some() || r.service.is_some() || !r.fallback.is_empty() {
        return Err(format!(
            "{at}: upstream, service and fallback belong to explicit services"
        ));
    }
    let categories = r
        .categories
        .unwrap_or_default()
        .iter()
        .map(|c| regex::Regex::new(c).map_err(|e| format!("{at}.categories: {e}")))
        .collect::<Result<_, _>>()?;
    let types = type_filter(at, r.types, r.exclude_types)?;
    Ok(ImportRule {
        upstream,
        id_offset: r.id_offset.unwrap_or(0),
        categories,
        types,
        skip_mapped: r.skip_mapped.unwrap_or(false),
        markup: terms.markup,
        group_markup: terms.group_markup,
        overrides: terms.overrides,
        allow_loss: terms.allow_loss,
    })
}

/// Only the `simulator:` section, for `panelgate simulate`, which must not fail on gateway
/// keys it does not use (but does on a malformed file).
pub fn load_simulator(path: &Path) -> Result<Option<SimulatorSection>, ConfigError> {
    Ok(load(path)?.simulator)
}

/// One test per section builder: a valid section, and an error naming its path.
#[cfg(test)]
mod builders {
    use super::*;

    fn raw<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn base() -> &'static Path {
        Path::new("/etc/panelgate")
    }

    #[test]
    fn currency() {
        assert_eq!(build_currency(None).unwrap(), "USD");
        assert_eq!(build_currency(Some("EUR".into())).unwrap(), "EUR");
        assert_eq!(
            build_currency(Some(" ".into())).unwrap_err(),
            "currency: must not be empty"
        );
    }

    #[test]
    fn database_files_sit_beside_the_config() {
        assert_eq!(
            build_database(None, base()),
            "sqlite:///etc/panelgate/panelgate.db"
        );
        assert_eq!(
            build_database(Some("sqlite:///var/x.db".into()), base()),
            "sqlite:///var/x.db"
        );
        let pg = "postgres://u@h/db";
        assert_eq!(build_database(Some(pg.into()), base()), pg);
    }

    #[test]
    fn limits() {
        let l = build_limits(&raw("max_connections: 0\nshutdown_grace: 3s\n"));
        assert_eq!(l.max_connections, 1, "at least one connection");
        assert_eq!(l.shutdown_grace, Duration::from_secs(3));
        assert_eq!(l.max_body_bytes, Limits::default().max_body_bytes);
        let r = build_default_rates(&raw("per_client_reads: {per_second: 7}\n")).unwrap();
        assert_eq!((r.writes, r.reads.per_second), (DEFAULT_WRITE_RATE, 7));
        let err = build_default_rates(&raw("per_client: {per_second: 0}\n")).unwrap_err();
        assert_eq!(
            err,
            "limits.per_client: per_second and burst must be above 0"
        );
    }

    #[test]
    fn sync() {
        let s = build_sync(&raw("interval: 5s\nstuck_after: 0s\n"));
        assert_eq!(s.interval, Duration::from_secs(5));
        assert_eq!(s.lease, Duration::from_secs(60));
        assert_eq!(s.stuck_after, None, "0s: never stuck");
        assert_eq!(
            build_sync(&raw("{}")).stuck_after,
            Some(DEFAULT_STUCK_AFTER)
        );
    }

    #[test]
    fn upstreams() {
        let yaml = "- name: a\n  url: http://127.0.0.1:1/api/v2\n  key: k\n  timeout: 2s\n  simulate: {catalog: c.yaml}\n";
        let u = &build_upstreams(raw(yaml), "USD", base()).unwrap()[0];
        assert_eq!(
            (u.timeout, u.connect_timeout),
            (Duration::from_secs(2), Duration::from_secs(2))
        );
        assert_eq!((u.expected_currency.as_str(), u.fx), ("USD", Decimal::ONE));
        let sim = u.simulate.as_ref().unwrap();
        assert_eq!(
            sim.catalog.as_deref(),
            Some(Path::new("/etc/panelgate/c.yaml"))
        );
        let twice = format!("{yaml}{yaml}");
        let err = build_upstreams(raw(&twice), "USD", base()).unwrap_err();
        assert_eq!(err, "upstreams[1] (a): name used twice");
        let foreign = "- name: b\n  url: https://x.example/api/v2\n  key: k\n  currency: EUR\n";
        let err = build_upstreams(raw(foreign), "USD", base()).unwrap_err();
        assert!(
            err.starts_with("upstreams[0] (b).fx: currency is EUR"),
            "{err}"
        );
    }

    #[test]
    fn services() {
        let known = HashSet::from(["a"]);
        let groups = HashMap::new();
        let yaml = "- {id: 1, upstream: a, service: 5, markup: {percent: 10}, min: 10}\n- {import: a, id_offset: 1000, markup: {percent: 20}, categories: [Likes]}\n";
        let s = build_services(raw(yaml), &known, &groups).unwrap();
        assert_eq!((s.explicit.len(), s.imports.len()), (1, 1));
        assert_eq!(
            s.explicit[0].target,
            Target {
                upstream: "a".into(),
                service: 5
            }
        );
        assert_eq!(s.explicit[0].overrides.min, Some(10));
        assert_eq!(s.imports[0].id_offset, 1000);
        let twice = "- {id: 1, upstream: a, service: 5, markup: {percent: 10}}\n- {id: 1, upstream: a, service: 6, markup: {percent: 10}}\n";
        let err = build_services(raw(twice), &known, &groups).unwrap_err();
        assert_eq!(err, "services[1] (id 1): id 1 is defined twice");
        let unknown = "- {import: b, markup: {percent: 10}}\n";
        let err = build_services(raw(unknown), &known, &groups).unwrap_err();
        assert_eq!(
            err,
            "services[0] (import b).import: no upstream named \"b\""
        );
    }

    #[test]
    fn tls_and_simulator_paths_sit_beside_the_config() {
        let tls = build_tls(raw("{cert: c.pem, key: /k.pem}"), base());
        assert_eq!(
            (tls.cert.as_path(), tls.key.as_path()),
            (Path::new("/etc/panelgate/c.pem"), Path::new("/k.pem"))
        );
        let sim = build_simulator(raw("{journal: j.log}"), base());
        assert_eq!(
            sim.journal.as_deref(),
            Some(Path::new("/etc/panelgate/j.log"))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Config {
        parse(text, Path::new("/etc/panelgate/config.yaml")).unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse(text, Path::new("/etc/panelgate/config.yaml"))
            .unwrap_err()
            .to_string()
    }

    const BASE: &str =
        "upstreams:\n  - name: alpha\n    url: \"http://127.0.0.1:9001/api/v2\"\n    key: k\n";

    #[test]
    fn runtime_defaults_to_multi_thread_on_every_core() {
        let r = parse_ok(BASE).runtime;
        assert_eq!(r, RuntimeConfig::default());
        assert_eq!(r.model, RuntimeModel::MultiThread);
        assert_eq!(r.cores(), 1);
    }

    #[test]
    fn runtime_thread_per_core_keeps_one_of_everything_per_thread() {
        let r = parse_ok(&format!(
            "{BASE}runtime:\n  model: thread_per_core\n  threads: 3\n"
        ))
        .runtime;
        assert_eq!(r.model, RuntimeModel::ThreadPerCore);
        assert_eq!((r.threads, r.cores()), (3, 3));
    }

    #[test]
    fn runtime_keys_are_checked() {
        let err = parse_err(&format!("{BASE}runtime:\n  threads: 0\n"));
        assert!(err.contains("runtime.threads"), "{err}");
        let err = parse_err(&format!("{BASE}runtime:\n  model: green_threads\n"));
        assert!(err.contains("green_threads"), "{err}");
        let err = parse_err(&format!("{BASE}runtime:\n  workers: 2\n"));
        assert!(err.contains("workers"), "{err}");
    }

    #[test]
    fn env_vars_are_expanded_and_missing_ones_named() {
        let vars = |n: &str| (n == "A").then(|| "x".to_owned());
        assert_eq!(
            expand_env("a: ${A}\nb: $${A}\n", vars).unwrap(),
            "a: x\nb: ${A}\n"
        );
        let err = expand_env("a: 1\nb: ${MISSING_ONE}\n", vars).unwrap_err();
        assert!(
            err.contains("MISSING_ONE") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_their_location() {
        let err = parse_err("listen: \"127.0.0.1:1\"\nlisten_port: 5\n");
        assert!(
            err.contains("listen_port") && err.contains("line 2"),
            "{err}"
        );
        let err = parse_err(&format!("{BASE}    timeuot: 5s\n"));
        assert!(err.contains("timeuot"), "{err}");
    }

    #[test]
    fn stuck_after_defaults_to_a_day_and_services_may_override_it() {
        let c = parse_ok(&format!(
            "{BASE}services:\n  - id: 1\n    upstream: alpha\n    service: 102\n    markup: {{ percent: 25 }}\n    stuck_after: 72h\n  - import: alpha\n    id_offset: 1000\n    markup: {{ percent: 40 }}\n    stuck_after: 0s\n"
        ));
        assert_eq!(c.stuck_after, Some(Duration::from_secs(24 * 3600)));
        assert_eq!(
            c.explicit[0].overrides.stuck_after,
            Some(Duration::from_secs(72 * 3600))
        );
        assert_eq!(c.imports[0].overrides.stuck_after, Some(Duration::ZERO));
        let off = parse_ok(&format!("{BASE}sync:\n  stuck_after: 0s\n"));
        assert_eq!(off.stuck_after, None);
        let short = parse_ok(&format!("{BASE}sync:\n  stuck_after: 90m\n"));
        assert_eq!(short.stuck_after, Some(Duration::from_secs(5400)));
        assert!(parse_err(&format!("{BASE}sync:\n  stuck_after: soon\n")).contains("duration"));
    }

    #[test]
    fn the_documented_shape_parses_with_defaults() {
        let c = parse_ok(&format!(
            "{BASE}services:\n  - id: 1\n    upstream: alpha\n    service: 102\n    markup: {{ percent: 25 }}\n    fallback: [{{upstream: alpha, service: 103}}]\n  - import: alpha\n    id_offset: 1000\n    categories: [\"^Insta\"]\n    markup: {{ percent: 40 }}\nsync:\n  interval: 2s\n"
        ));
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.database, "sqlite:///etc/panelgate/panelgate.db");
        assert_eq!(c.sync_interval, Duration::from_secs(2));
        assert_eq!(
            c.explicit[0].target,
            Target {
                upstream: "alpha".into(),
                service: 102
            }
        );
        assert_eq!(c.explicit[0].fallback.len(), 1);
        assert_eq!(c.imports[0].id_offset, 1000);
        assert!(c.imports[0].categories[0].is_match("Instagram Likes"));
        assert_eq!(c.upstreams[0].fx, Decimal::ONE);
        assert_eq!(format!("{:?}", c.upstreams[0].key), "***");
    }

    #[test]
    fn a_retired_upstream_stays_configured_but_takes_no_orders() {
        let c = parse_ok(&format!(
            "{BASE}  - name: beta\n    url: \"http://127.0.0.1:9002/api/v2\"\n    key: k\n    retired: true\n"
        ));
        assert!(!c.upstreams[0].retired && c.upstreams[1].retired);
        assert!(c.takes_orders("alpha") && !c.takes_orders("beta") && !c.takes_orders("gamma"));
        // Retired is not removed: it still needs its url and key, to follow its orders.
        let err = parse_err(&format!("{BASE}  - name: beta\n    retired: true\n"));
        assert!(err.contains("url") || err.contains("key"), "{err}");
    }

    #[test]
    fn reads_and_writes_have_their_own_rates_per_group() {
        let rate = |per_second, burst| RateSpec {
            per_second,
            burst: Some(burst),
        };
        let c = parse_ok(&format!(
            "{BASE}limits:\n  per_client: {{ per_second: 5, burst: 10 }}\nprice_groups:\n  vip:\n    markup: {{ percent: 10 }}\n    read_rate_limit: {{ per_second: 900, burst: 2000 }}\n  slow:\n    markup: {{ percent: 10 }}\n    rate_limit: {{ per_second: 1, burst: 2 }}\n"
        ));
        let rates = |group: &str| c.client_rates[group];
        assert_eq!(rates("default").writes, rate(5, 10));
        assert_eq!(rates("default").reads, DEFAULT_READ_RATE);
        assert_eq!(rates("vip").writes, rate(5, 10));
        assert_eq!(rates("vip").reads, rate(900, 2000));
        assert_eq!(rates("slow").writes, rate(1, 2));
        assert_eq!(rates("slow").reads, DEFAULT_READ_RATE);
        let plain = parse_ok(BASE);
        assert_eq!(
            plain.client_rates["default"],
            ClientRates {
                writes: rate(20, 100),
                reads: rate(100, 500)
            }
        );
        for (text, needle) in [
            (
                "limits:\n  per_client_reads: { per_second: 0 }\n",
                "limits.per_client_reads",
            ),
            (
                "price_groups:\n  vip:\n    markup: { percent: 1 }\n    read_rate_limit: { per_second: 5, burst: 0 }\n",
                "price_groups.vip.read_rate_limit",
            ),
            (
                "price_groups:\n  vip:\n    markup: { percent: 1 }\n    read_rate_limt: { per_second: 5 }\n",
                "read_rate_limt",
            ),
        ] {
            let err = parse_err(&format!("{BASE}{text}"));
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
    }

    #[test]
    fn invalid_values_name_their_key() {
        for (text, needle) in [
            (
                "upstreams:\n  - name: a\n    url: ftp://x\n    key: k\n",
                "upstreams[0] (a).url",
            ),
            (
                &format!("{BASE}  - name: alpha\n    url: http://x\n    key: k\n"),
                "name used twice",
            ),
            (
                &format!(
                    "{BASE}services:\n  - id: 1\n    upstream: beta\n    service: 1\n    markup: {{percent: 1}}\n"
                ),
                "no upstream named \"beta\"",
            ),
            (
                &format!("{BASE}services:\n  - id: 1\n    upstream: alpha\n    service: 1\n"),
                "markup is required",
            ),
            (
                &format!(
                    "{BASE}services:\n  - id: 1\n    upstream: alpha\n    service: 1\n    markup: {{percent: 1}}\n  - id: 1\n    upstream: alpha\n    service: 2\n    markup: {{percent: 1}}\n"
                ),
                "defined twice",
            ),
            (
                &format!(
                    "{BASE}services:\n  - import: alpha\n    categories: [\"(\"]\n    markup: {{percent: 1}}\n"
                ),
                "categories",
            ),
            (&format!("{BASE}    fx: 0\n"), "fx"),
            ("sync:\n  interval: soon\n", "duration"),
            ("clients:\n  - name: d\n    key: short\n", "at least 16"),
        ] {
            let err = parse_err(text);
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
    }

    #[test]
    fn markups_that_can_sell_below_cost_need_allow_loss() {
        let svc = |markup: &str, more: &str| {
            format!(
                "{BASE}services:\n  - id: 7\n    upstream: alpha\n    service: 1\n    markup: {markup}\n{more}"
            )
        };
        for markup in ["{percent: -10}", "{add: -0.01}", "{multiplier: 0.9}"] {
            let err = parse_err(&svc(markup, ""));
            assert!(
                err.contains("services[0] (id 7)") && err.contains("price group default"),
                "{err}"
            );
            parse_ok(&svc(markup, "    allow_loss: true\n"));
        }
        // min_profit keeps the floor; a rule's own group markup is checked too.
        parse_ok(&svc("{percent: -10, min_profit: 0}", ""));
        let err = parse_err(&svc(
            "{percent: 10}",
            "    group_markup: { vip: { percent: -5 } }\nprice_groups:\n  vip:\n    markup: { percent: 5 }\n",
        ));
        assert!(err.contains("price group vip"), "{err}");
        // A price group's markup applies to every rule without one of its own.
        let err = parse_err(&svc(
            "{percent: 10}",
            "price_groups:\n  cheap:\n    markup: { add: -0.5 }\n",
        ));
        assert!(err.contains("price group cheap"), "{err}");
    }

    #[test]
    fn a_foreign_upstream_currency_needs_its_fx() {
        let err = parse_err(&format!("{BASE}    currency: EUR\n"));
        assert!(
            err.contains("upstreams[0] (alpha).fx") && err.contains("EUR"),
            "{err}"
        );
        let c = parse_ok(&format!("{BASE}    currency: EUR\n    fx: \"1.1\"\n"));
        assert_eq!(c.upstreams[0].expected_currency, "EUR");
        let c = parse_ok(&format!("{BASE}    currency: usd\n"));
        assert_eq!(c.upstreams[0].expected_currency, "usd");
        assert_eq!(parse_ok(BASE).upstreams[0].expected_currency, "USD");
    }

    #[test]
    fn type_filters_belong_to_import_rules() {
        let c = parse_ok(&format!(
            "{BASE}services:\n  - import: alpha\n    types: [Default, \"web traffic\"]\n    exclude_types: [package]\n    markup: {{percent: 1}}\n"
        ));
        let t = &c.imports[0].types;
        assert!(t.passes("Web Traffic") && t.passes("DEFAULT") && !t.passes("Package"));
        let err = parse_err(&format!(
            "{BASE}services:\n  - id: 1\n    upstream: alpha\n    service: 1\n    types: [Default]\n    markup: {{percent: 1}}\n"
        ));
        assert!(err.contains("belong to import rules"), "{err}");
        let err = parse_err(&format!(
            "{BASE}services:\n  - import: alpha\n    exclude_types: [\"\"]\n    markup: {{percent: 1}}\n"
        ));
        assert!(err.contains("exclude_types"), "{err}");
    }

    #[test]
    fn hide_filters_name_known_types_per_group_and_customer() {
        let c = parse_ok(&format!(
            "{BASE}price_groups:\n  scripts:\n    markup: {{ percent: 5 }}\n    hide_types: [comment_replies, POLL]\n  default:\n    hide_categories: [Telegram]\nclients:\n  - name: ann\n    hide_types: [Mentions]\n  - name: ann\n    hide_categories: [\"twitter\"]\n"
        ));
        let h = &c.hiding;
        assert!(
            h.group("scripts").hides("Comment Replies", "x")
                && h.group("scripts").hides("poll", "x")
        );
        assert!(!h.group("scripts").hides("Default", "Telegram"));
        assert!(h.group("default").hides("Default", "TELEGRAM"));
        // A group the config does not have is the default group, as for prices.
        assert!(h.group("gone").hides("Default", "Telegram"));
        // A customer's own filter adds to its group's; both of its entries count.
        let ann = h.customer("scripts", "ann");
        assert!(
            ann.hides("Mentions", "x") && ann.hides("Poll", "x") && ann.hides("Default", "Twitter")
        );
        assert_eq!(*h.customer("scripts", "bob"), *h.group("scripts"));
        // An entry without a key creates no client.
        assert!(c.clients[0].key.is_none());
        // The default group's markup is each entry's: it may be left out there only.
        assert!(!c.groups.contains_key("default"));
        let err = parse_err(&format!(
            "{BASE}price_groups:\n  vip:\n    hide_types: [Poll]\n"
        ));
        assert!(err.contains("price_groups.vip.markup"), "{err}");
    }

    #[test]
    fn a_misspelt_hidden_type_is_named() {
        for (text, at) in [
            (
                "price_groups:\n  vip:\n    markup: { percent: 5 }\n    hide_types: [Poll, \"Comment Replys\"]\n",
                "price_groups.vip.hide_types",
            ),
            (
                "clients:\n  - name: ann\n    hide_types: [Comment Replys]\n",
                "clients[0] (ann).hide_types",
            ),
        ] {
            let err = parse_err(&format!("{BASE}{text}"));
            assert!(
                err.contains(at)
                    && err.contains("\"Comment Replys\" is not a service type")
                    && err.contains("Comment Replies"),
                "{err}"
            );
        }
        let err = parse_err(&format!(
            "{BASE}clients:\n  - name: ann\n    hide_categories: [\" \"]\n"
        ));
        assert!(err.contains("clients[0] (ann).hide_categories"), "{err}");
        let err = parse_err(&format!(
            "{BASE}clients:\n  - name: ann\n    hide_type: [Poll]\n"
        ));
        assert!(err.contains("hide_type") && err.contains("line"), "{err}");
    }

    #[test]
    fn skip_mapped_belongs_to_import_rules() {
        let c = parse_ok(&format!(
            "{BASE}services:\n  - import: alpha\n    skip_mapped: true\n    markup: {{percent: 1}}\n  - import: alpha\n    id_offset: 5000\n    markup: {{percent: 1}}\n"
        ));
        assert!(c.imports[0].skip_mapped && !c.imports[1].skip_mapped);
        let err = parse_err(&format!(
            "{BASE}services:\n  - id: 1\n    upstream: alpha\n    service: 1\n    skip_mapped: true\n    markup: {{percent: 1}}\n"
        ));
        assert!(err.contains("belong to import rules"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
