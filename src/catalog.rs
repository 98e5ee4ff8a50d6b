//! The local catalog: what we sell, at what price, built from the upstreams' services lists
//! and the config's rules.
//!
//! Upstream lists are cached in moka with the configured TTL; concurrent misses for one
//! upstream share one call (`try_get_with`), and when a refresh fails the last good list keeps
//! serving. The built catalog (and its `services` reply for each price group, serialized once)
//! is swapped in atomically whenever a list changes, so a `services` request costs a lookup.
//! Each reply is also kept gzip-compressed, for the panels that accept it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use dashmap::DashMap;
use rust_decimal::Decimal;

use crate::config::{Config, DEFAULT_GROUP, ImportRule, Overrides, Target, markup_for};
use crate::metrics::Metrics;
use crate::pricing::{self, Markup};
use crate::protocol::{Service, ServiceType, reply};
use crate::upstream::{CallError, Upstreams};

/// One service we sell.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalService {
    /// The entry shown to customers of the default group (`rate` is the default group's).
    pub listing: Service,
    pub target: Target,
    pub fallback: Vec<Target>,
    /// What it costs us per 1000 (or per package), in our currency.
    pub cost_rate: Decimal,
    /// What each fallback costs us, in the same order, priced from its own upstream's list
    /// and `fx`; `None` when that list is not loaded or does not list the service.
    pub fallback_costs: Vec<Option<Decimal>>,
    /// Selling rate per price group.
    pub rates: HashMap<String, Decimal>,
    /// The least profit per 1000 the markup in force asks for, per price group.
    pub min_profits: HashMap<String, Decimal>,
    /// The config lets this service sell below cost.
    pub allow_loss: bool,
    /// The rule's `stuck_after`, if it overrides `sync.stuck_after`.
    pub stuck_after: Option<std::time::Duration>,
}

impl LocalService {
    pub fn id(&self) -> u64 {
        self.listing.service
    }

    pub fn kind(&self) -> &ServiceType {
        &self.listing.kind
    }

    pub fn rate_for(&self, group: &str) -> Decimal {
        self.rates
            .get(group)
            .or_else(|| self.rates.get(DEFAULT_GROUP))
            .copied()
            .unwrap_or(self.listing.rate)
    }

    /// Every target an order may go to, in order, with what it costs us.
    pub fn targets(&self) -> impl Iterator<Item = (&Target, Option<Decimal>)> {
        std::iter::once((&self.target, Some(self.cost_rate))).chain(
            self.fallback
                .iter()
                .zip(self.fallback_costs.iter().copied()),
        )
    }

    /// The least a `group` customer's rate must be for an order to go to a target costing
    /// `cost`: the cost plus the markup's `min_profit`. `None` when the cost is not known.
    pub fn floor(&self, group: &str, cost: Option<Decimal>) -> Option<Decimal> {
        let min_profit = self
            .min_profits
            .get(group)
            .or_else(|| self.min_profits.get(DEFAULT_GROUP))
            .copied()
            .unwrap_or_default();
        cost.map(|c| c + min_profit)
    }

    /// Whether an order of a `group` customer may go to a target costing `cost`: its rate
    /// covers the floor, or the config allows a loss. A target of unknown cost is never used
    /// unless losses are allowed.
    pub fn covers(&self, group: &str, cost: Option<Decimal>) -> bool {
        self.allow_loss
            || self
                .floor(group, cost)
                .is_some_and(|floor| self.rate_for(group) >= floor)
    }
}

/// An upstream's services list as last fetched.
#[derive(Debug)]
pub struct UpstreamList {
    pub services: HashMap<u64, Service>,
    pub fetched_at: Instant,
}

/// A `services` reply, serialized and compressed once per catalog build.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub json: Bytes,
    pub gzip: Bytes,
}

impl Listing {
    fn new(json: Bytes) -> Listing {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing to a Vec cannot fail.
        let gzip = gz
            .write_all(&json)
            .and_then(|()| gz.finish())
            .unwrap_or_default();
        Listing {
            json,
            gzip: gzip.into(),
        }
    }
}

/// A built catalog: immutable, shared.
#[derive(Debug, Default)]
pub struct LocalCatalog {
    services: BTreeMap<u64, Arc<LocalService>>,
    /// Pre-serialized `services` reply per price group.
    replies: HashMap<String, Listing>,
    /// Local services per upstream (their primary target).
    pub per_upstream: HashMap<String, usize>,
    /// The lists it was built from, to notice when one changes (held, so that a pointer
    /// cannot be reused by a newer list).
    sources: Vec<(String, Arc<UpstreamList>)>,
    /// Problems found while building (id clashes between import rules), for the operator.
    pub problems: Vec<String>,
    /// Services the config describes on terms the upstream's list rules out; left out.
    pub refused: Vec<Refused>,
}

impl LocalCatalog {
    pub fn get(&self, id: u64) -> Option<&Arc<LocalService>> {
        self.services.get(&id)
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<LocalService>> {
        self.services.values()
    }

    /// The `services` reply for a customer of `group`.
    pub fn reply(&self, group: &str) -> Listing {
        self.replies
            .get(group)
            .or_else(|| self.replies.get(DEFAULT_GROUP))
            .cloned()
            .unwrap_or_else(|| Listing::new(Bytes::from_static(b"[]")))
    }

    /// Builds the catalog from the rules of `cfg` and whatever upstream lists are known.
    ///
    /// This is where the rules that need an upstream's list are checked (a `min`/`max`
    /// override outside the upstream's range): a service that breaks one is left out and
    /// listed in `refused`, so it is never sold on terms the upstream would not honour.
    pub fn build(cfg: &Config, lists: &HashMap<String, Arc<UpstreamList>>) -> LocalCatalog {
        let pricer = Pricer { cfg, lists };
        let mut out = Built::default();
        pricer.explicit(&mut out);
        pricer.imported(&mut out);
        LocalCatalog::assemble(cfg, lists, out)
    }

    /// The catalog around its services: counts, replies per price group, sources.
    fn assemble(
        cfg: &Config,
        lists: &HashMap<String, Arc<UpstreamList>>,
        built: Built,
    ) -> LocalCatalog {
        let Built {
            services,
            problems,
            refused,
        } = built;
        let mut per_upstream: HashMap<String, usize> = HashMap::new();
        for s in services.values() {
            *per_upstream.entry(s.target.upstream.clone()).or_default() += 1;
        }
        let replies = cfg
            .group_names()
            .iter()
            .map(|g| {
                let listing: Vec<Service> = services
                    .values()
                    .map(|s| Service {
                        rate: s.rate_for(g),
                        ..s.listing.clone()
                    })
                    .collect();
                (g.clone(), Listing::new(reply::to_bytes(&listing)))
            })
            .collect();
        let mut sources: Vec<(String, Arc<UpstreamList>)> = lists
            .iter()
            .map(|(name, l)| (name.clone(), l.clone()))
            .collect();
        sources.sort_by(|a, b| a.0.cmp(&b.0));
        LocalCatalog {
            services,
            replies,
            per_upstream,
            sources,
            problems,
            refused,
        }
    }
}

/// A service a rule describes but that cannot be sold on its terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service {service}: {reason}")]
pub struct Refused {
    /// Our service id.
    pub service: u64,
    pub reason: String,
}

/// The terms a config rule sells an upstream service on.
struct Rule<'a> {
    markup: &'a Markup,
    group_markup: &'a HashMap<String, Markup>,
    overrides: &'a Overrides,
    allow_loss: bool,
    /// Explicit services must keep `min`/`max` inside the upstream's range; an import rule's
    /// limits apply to many services and are narrowed to each one's range.
    strict_range: bool,
}

/// What building found: the services, and what the operator must hear about.
#[derive(Default)]
struct Built {
    services: BTreeMap<u64, Arc<LocalService>>,
    problems: Vec<String>,
    refused: Vec<Refused>,
}

impl Built {
    fn add(&mut self, id: u64, made: Result<Arc<LocalService>, Refused>) {
        match made {
            Ok(s) => drop(self.services.insert(id, s)),
            Err(r) => self.refused.push(r),
        }
    }
}

/// Prices services from the config and the upstream lists.
struct Pricer<'a> {
    cfg: &'a Config,
    lists: &'a HashMap<String, Arc<UpstreamList>>,
}

impl Pricer<'_> {
    /// A retired upstream takes no new orders: a service whose target is there is not sold
    /// (its id stays reserved) and a fallback to it is skipped, while sync keeps following the
    /// orders it already has.
    fn explicit(&self, out: &mut Built) {
        let taking = |t: &&Target| self.cfg.takes_orders(&t.upstream);
        for e in &self.cfg.explicit {
            if !self.cfg.takes_orders(&e.target.upstream) {
                continue;
            }
            let Some(s) = self.lookup(&e.target).filter(|s| sellable(&s.kind)) else {
                continue;
            };
            let rule = Rule {
                markup: &e.markup,
                group_markup: &e.group_markup,
                overrides: &e.overrides,
                allow_loss: e.allow_loss,
                strict_range: true,
            };
            let fallback = e.fallback.iter().filter(taking).cloned().collect();
            let made = self.make(e.id, e.target.clone(), fallback, s, &rule);
            out.add(e.id, made);
        }
    }

    /// Import rules in order; an id an explicit service or an earlier rule has is skipped.
    fn imported(&self, out: &mut Built) {
        let explicit: std::collections::HashSet<u64> =
            self.cfg.explicit.iter().map(|e| e.id).collect();
        let mut imported_by: HashMap<u64, usize> = HashMap::new();
        for (rule_no, rule) in self.cfg.imports.iter().enumerate() {
            let Some(list) = self
                .lists
                .get(&rule.upstream)
                .filter(|_| self.cfg.takes_orders(&rule.upstream))
            else {
                continue;
            };
            let mut ids: Vec<&u64> = list.services.keys().collect();
            ids.sort();
            for id in ids {
                let s = &list.services[id];
                let Some(local) = rule.id_offset.checked_add(*id) else {
                    continue;
                };
                if !sellable(&s.kind) || !imported(rule, s) || explicit.contains(&local) {
                    continue;
                }
                if let Some(first) = imported_by.insert(local, rule_no) {
                    imported_by.insert(local, first);
                    out.problems.push(format!(
                        "local id {local} is produced by import rules {first} and {rule_no}; the first wins: change an id_offset"
                    ));
                    continue;
                }
                let target = Target {
                    upstream: rule.upstream.clone(),
                    service: *id,
                };
                let terms = Rule {
                    markup: &rule.markup,
                    group_markup: &rule.group_markup,
                    overrides: &rule.overrides,
                    allow_loss: rule.allow_loss,
                    strict_range: false,
                };
                out.add(local, self.make(local, target, Vec::new(), s, &terms));
            }
        }
    }

    fn lookup(&self, t: &Target) -> Option<&Service> {
        self.lists
            .get(&t.upstream)
            .and_then(|l| l.services.get(&t.service))
    }

    /// What one unit of `t` costs us, from its own upstream's list and `fx`; `None` when its
    /// upstream's list is not loaded or does not list it.
    fn cost(&self, t: &Target) -> Option<Decimal> {
        let fx = self.cfg.upstream(&t.upstream)?.fx;
        self.lookup(t).map(|s| pricing::convert(s.rate, fx))
    }

    fn make(
        &self,
        id: u64,
        target: Target,
        fallback: Vec<Target>,
        upstream_service: &Service,
        rule: &Rule<'_>,
    ) -> Result<Arc<LocalService>, Refused> {
        let cost = self.cost(&target).unwrap_or(upstream_service.rate);
        let mut rates = HashMap::new();
        let mut min_profits = HashMap::new();
        for g in self.cfg.group_names() {
            let m = markup_for(&g, rule.markup, rule.group_markup, &self.cfg.groups);
            rates.insert(g.clone(), m.sell_rate(cost));
            min_profits.insert(g, m.floor(Decimal::ZERO));
        }
        let (min, max) =
            limits(upstream_service, rule.overrides, rule.strict_range).map_err(|reason| {
                Refused {
                    service: id,
                    reason,
                }
            })?;
        let fallback_costs = fallback.iter().map(|t| self.cost(t)).collect();
        Ok(Arc::new(LocalService {
            listing: listing(
                id,
                upstream_service,
                rule.overrides,
                rates[DEFAULT_GROUP],
                min,
                max,
            ),
            target,
            fallback,
            cost_rate: cost,
            fallback_costs,
            rates,
            min_profits,
            allow_loss: rule.allow_loss,
            stuck_after: rule.overrides.stuck_after,
        }))
    }
}

/// The customer-facing entry: the upstream's service with the rule's overrides.
fn listing(id: u64, up: &Service, o: &Overrides, rate: Decimal, min: u64, max: u64) -> Service {
    // Features may be turned off, never on: the upstream would refuse them.
    let off = |ours: Option<bool>, theirs: bool| ours.unwrap_or(theirs) && theirs;
    Service {
        service: id,
        name: o.name.clone().unwrap_or_else(|| up.name.clone()),
        kind: up.kind.clone(),
        category: o.category.clone().unwrap_or_else(|| up.category.clone()),
        rate,
        min,
        max,
        refill: off(o.refill, up.refill),
        cancel: off(o.cancel, up.cancel),
        dripfeed: off(o.dripfeed, up.dripfeed),
        // Panel scripts send `"desc": ""` for no description; our list leaves it out.
        desc: o
            .desc
            .clone()
            .or_else(|| up.desc.clone())
            .filter(|d| !d.trim().is_empty()),
    }
}

/// Our `min`/`max`: the overrides, which may narrow the upstream's range but never leave it
/// (the upstream would refuse what we accepted).
fn limits(up: &Service, o: &Overrides, strict: bool) -> Result<(u64, u64), String> {
    let range = |v: u64| (up.min..=up.max).contains(&v);
    if strict {
        for (key, value) in [("min", o.min), ("max", o.max)] {
            if let Some(v) = value.filter(|v| !range(*v)) {
                return Err(format!(
                    "{key} {v} is outside the upstream's range {}..{}",
                    up.min, up.max
                ));
            }
        }
    }
    let min = o.min.map_or(up.min, |m| m.max(up.min));
    let max = o.max.map_or(up.max, |m| m.min(up.max));
    if min > max {
        return Err(format!(
            "min/max {}..{} leave nothing of the upstream's range {}..{}",
            o.min.unwrap_or(up.min),
            o.max.unwrap_or(up.max),
            up.min,
            up.max
        ));
    }
    Ok((min, max))
}

/// Whether an import rule takes a service: its category and its type pass the rule's filters.
fn imported(rule: &ImportRule, s: &Service) -> bool {
    (rule.categories.is_empty() || rule.categories.iter().any(|r| r.is_match(&s.category)))
        && rule.types.passes(s.kind.as_str())
}

/// Subscriptions bill per post (a later feature); types we do not know cannot be validated.
fn sellable(kind: &ServiceType) -> bool {
    !matches!(kind, ServiceType::Subscriptions | ServiceType::Other(_))
}

/// The live catalog of a running gateway.
pub struct Catalog {
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    upstreams: Arc<Upstreams>,
    cache: moka::future::Cache<String, Arc<UpstreamList>>,
    last_good: DashMap<String, Arc<UpstreamList>>,
    current: ArcSwap<LocalCatalog>,
    rebuild: tokio::sync::Mutex<()>,
    hits: prometheus::IntCounter,
}

impl Catalog {
    pub fn new(cfg: Arc<Config>, upstreams: Arc<Upstreams>, metrics: Arc<Metrics>) -> Catalog {
        let cache = moka::future::Cache::builder()
            .time_to_live(cfg.catalog_ttl)
            .max_capacity(cfg.upstreams.len().max(1) as u64 * 2)
            .build();
        Catalog {
            cfg,
            upstreams,
            cache,
            last_good: DashMap::new(),
            current: ArcSwap::from_pointee(LocalCatalog::default()),
            rebuild: tokio::sync::Mutex::new(()),
            hits: metrics.catalog_lookups.with_label_values(&["hit"]),
            metrics,
        }
    }

    /// The current catalog, refreshing upstream lists whose TTL ran out first. Upstreams that
    /// fail keep their last good list; one that never answered contributes nothing.
    pub async fn get(&self) -> Arc<LocalCatalog> {
        // The common case, without touching the list cache: every list is within its TTL.
        let current = self.current.load();
        if current.sources.len() == self.cfg.upstreams.len()
            && current
                .sources
                .iter()
                .all(|(_, l)| l.fetched_at.elapsed() < self.cfg.catalog_ttl)
        {
            self.hits.inc();
            return Arc::clone(&current);
        }
        drop(current);
        let mut lists = HashMap::with_capacity(self.cfg.upstreams.len());
        for u in &self.cfg.upstreams {
            if let Some(list) = self.list(&u.name).await {
                lists.insert(u.name.clone(), list);
            }
        }
        let current = self.current.load_full();
        if same_sources(&current.sources, &lists) {
            self.hits.inc();
            return current;
        }
        self.metrics
            .catalog_lookups
            .with_label_values(&["miss"])
            .inc();
        let _guard = self.rebuild.lock().await;
        let current = self.current.load_full();
        if same_sources(&current.sources, &lists) {
            return current;
        }
        let built = Arc::new(LocalCatalog::build(&self.cfg, &lists));
        for p in &built.problems {
            tracing::error!(problem = %p, "catalog");
        }
        for r in &built.refused {
            tracing::error!(service = r.service, reason = %r.reason, "service left out of the catalog: the config's terms do not fit the upstream's list");
        }
        tracing::info!(services = built.len(), "catalog rebuilt");
        for u in &self.cfg.upstreams {
            let n = built.per_upstream.get(&u.name).copied().unwrap_or(0);
            self.metrics
                .catalog_services
                .with_label_values(&[&u.name])
                .set(n as i64);
        }
        self.current.store(built.clone());
        built
    }

    /// Takes over another catalog's last good lists (after a reload), so that an upstream that
    /// is failing right now keeps its services on sale.
    pub fn inherit(&self, other: &Catalog) {
        for entry in other.last_good.iter() {
            if self.cfg.upstream(entry.key()).is_some() {
                self.last_good
                    .insert(entry.key().clone(), entry.value().clone());
            }
        }
    }

    /// Age of the list held for each upstream (for the metrics scrape).
    pub fn list_ages(&self) -> Vec<(String, std::time::Duration)> {
        self.last_good
            .iter()
            .map(|e| (e.key().clone(), e.value().fetched_at.elapsed()))
            .collect()
    }

    /// The catalog as it is, without refreshing anything.
    pub fn snapshot(&self) -> Arc<LocalCatalog> {
        self.current.load_full()
    }

    async fn list(&self, upstream: &str) -> Option<Arc<UpstreamList>> {
        let fetched = self
            .cache
            .try_get_with(upstream.to_owned(), self.fetch(upstream))
            .await;
        match fetched {
            Ok(list) => {
                self.last_good.insert(upstream.to_owned(), list.clone());
                Some(list)
            }
            Err(e) => {
                tracing::warn!(upstream, error = %e, "services list refresh failed; serving the last good list");
                self.last_good.get(upstream).map(|l| l.clone())
            }
        }
    }

    async fn fetch(&self, upstream: &str) -> Result<Arc<UpstreamList>, CallError> {
        let client = self
            .upstreams
            .get(upstream)
            .ok_or_else(|| CallError::NotSent(format!("no upstream {upstream}")))?;
        let list = client.services().await;
        let outcome = if list.is_ok() { "ok" } else { "error" };
        self.metrics
            .catalog_refreshes
            .with_label_values(&[upstream, outcome])
            .inc();
        let list = list?;
        self.metrics
            .upstream_services_listed
            .with_label_values(&[upstream])
            .set(list.services.len() as i64);
        if list.services.is_empty() {
            // Panel scripts answer `{"status":"success","data":"Empty Data"}` for this.
            tracing::warn!(upstream, "the upstream lists no services");
        }
        if list.skipped > 0 {
            tracing::warn!(
                upstream,
                skipped = list.skipped,
                "unreadable entries in the services list"
            );
        }
        Ok(Arc::new(UpstreamList {
            services: list.services.into_iter().map(|s| (s.service, s)).collect(),
            fetched_at: Instant::now(),
        }))
    }
}

fn same_sources(
    sources: &[(String, Arc<UpstreamList>)],
    lists: &HashMap<String, Arc<UpstreamList>>,
) -> bool {
    sources.len() == lists.len()
        && sources
            .iter()
            .all(|(name, held)| lists.get(name).is_some_and(|l| Arc::ptr_eq(l, held)))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::sim::catalog::builtin;

    /// Upstream `a` (ours) lists the simulator's catalog (101: 0.90, 50..10000; 119: a 3.00
    /// package); `b` (fx 2) lists 101 at 0.55, so 1.1 of ours.
    fn build(services: &str) -> LocalCatalog {
        let text = format!(
            "upstreams:\n  - name: a\n    url: \"http://127.0.0.1:1/api/v2\"\n    key: k\n  - name: b\n    url: \"http://127.0.0.1:2/api/v2\"\n    key: k\n    currency: EUR\n    fx: 2\nservices:\n{services}"
        );
        let cfg = crate::config::parse(&text, Path::new("/etc/pg/config.yaml")).unwrap();
        let list = |services: Vec<Service>| {
            Arc::new(UpstreamList {
                services: services.into_iter().map(|s| (s.service, s)).collect(),
                fetched_at: Instant::now(),
            })
        };
        let mut cheap = builtin()[0].clone();
        cheap.rate = "0.55".parse().unwrap();
        let lists = HashMap::from([
            ("a".to_owned(), list(builtin())),
            ("b".to_owned(), list(vec![cheap])),
        ]);
        LocalCatalog::build(&cfg, &lists)
    }

    #[test]
    fn each_fallback_is_priced_from_its_own_list_and_fx() {
        let c = build(
            "  - id: 1\n    upstream: a\n    service: 101\n    markup: { percent: 10 }\n    fallback: [{ upstream: b, service: 101 }, { upstream: b, service: 7 }]\n",
        );
        let s = c.get(1).unwrap();
        let d = |t: &str| t.parse::<Decimal>().unwrap();
        assert_eq!(s.rate_for(DEFAULT_GROUP), d("0.99"));
        assert_eq!(s.fallback_costs, [Some(d("1.1")), None]);
        // 0.99 does not cover 1.1; an unlisted fallback is never used.
        assert!(s.covers(DEFAULT_GROUP, Some(d("0.9"))));
        assert!(!s.covers(DEFAULT_GROUP, Some(d("1.1"))));
        assert!(!s.covers(DEFAULT_GROUP, None));
        // min_profit raises the floor of every target.
        let c = build(
            "  - id: 1\n    upstream: a\n    service: 101\n    markup: { percent: 40, min_profit: 0.2 }\n    fallback: [{ upstream: b, service: 101 }]\n",
        );
        let s = c.get(1).unwrap();
        assert_eq!(s.rate_for(DEFAULT_GROUP), d("1.26"));
        assert_eq!(s.floor(DEFAULT_GROUP, Some(d("1.1"))), Some(d("1.3")));
        assert!(!s.covers(DEFAULT_GROUP, Some(d("1.1"))));
    }

    #[test]
    fn limits_stay_inside_the_upstreams_range() {
        let explicit = |limits: &str| {
            build(&format!(
                "  - id: 1\n    upstream: a\n    service: 101\n    markup: {{ percent: 10 }}\n{limits}"
            ))
        };
        let ok = explicit("    min: 100\n    max: 5000\n");
        assert_eq!(
            (
                ok.get(1).unwrap().listing.min,
                ok.get(1).unwrap().listing.max
            ),
            (100, 5000)
        );
        for (limits, reason) in [
            (
                "    max: 20000\n",
                "max 20000 is outside the upstream's range 50..10000",
            ),
            (
                "    min: 10\n",
                "min 10 is outside the upstream's range 50..10000",
            ),
            ("    min: 20000\n", "min 20000 is outside"),
        ] {
            let c = explicit(limits);
            assert!(c.get(1).is_none());
            assert_eq!(c.refused.len(), 1);
            assert_eq!(c.refused[0].service, 1);
            assert!(c.refused[0].reason.starts_with(reason), "{:?}", c.refused);
        }
        // An import rule's limits narrow each service to its own range; a range they leave
        // empty is refused.
        let c = build(
            "  - import: a\n    id_offset: 1000\n    types: [Default, package]\n    max: 5000\n    markup: { percent: 10 }\n",
        );
        assert_eq!(c.get(1101).unwrap().listing.max, 5000);
        assert_eq!(c.get(1119).unwrap().listing.max, 1);
        let c = build(
            "  - import: a\n    id_offset: 1000\n    types: [package]\n    min: 2\n    markup: { percent: 10 }\n",
        );
        assert!(c.get(1119).is_none());
        assert_eq!(c.refused[0].service, 1119);
    }
}
