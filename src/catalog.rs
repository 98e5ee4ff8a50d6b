//! The local catalog: what we sell, at what price, built from the upstreams' services lists
//! and the config's rules.
//!
//! Upstream lists are cached in moka and kept for the configured TTL, timed on
//! [`crate::clock`]; concurrent misses for one upstream share one call (`try_get_with`), and
//! when a refresh fails the last good list keeps serving. The built catalog (and its
//! `services` reply for each price group, serialized once) is swapped in atomically whenever a
//! list changes, so a `services` request costs a lookup. Each reply is also kept
//! gzip-compressed, for the panels that accept it. A customer whose filter (`hide_types`,
//! `hide_categories`) differs from its group's gets a reply built at its first request and
//! kept with the catalog for every customer of that group and filter.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use dashmap::DashMap;
use rust_decimal::Decimal;

use crate::clock;
use crate::config::{Config, DEFAULT_GROUP, ImportRule, Overrides, Target, markup_for};
use crate::matcher::Hidden;
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

    /// Whether a customer who is not shown `hidden` may see (and order) this service: by
    /// its type and by the category it is listed under.
    pub fn shown(&self, hidden: &Hidden) -> bool {
        !hidden.hides(self.kind().as_str(), &self.listing.category)
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
    pub fetched_at: clock::Instant,
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

/// A price group's `services` reply and the filter it was built with.
#[derive(Debug, Clone)]
struct GroupReply {
    hidden: Hidden,
    listing: Listing,
}

/// A built catalog: immutable, shared.
#[derive(Debug, Default)]
pub struct LocalCatalog {
    services: BTreeMap<u64, Arc<LocalService>>,
    /// Pre-serialized `services` reply per price group.
    replies: HashMap<String, GroupReply>,
    /// Replies for customers whose filter is not their group's, by group and filter: built
    /// when first asked for. Filters come from the config only, so this stays as small as it.
    tailored: Mutex<HashMap<(String, Hidden), Listing>>,
    /// Local services per upstream (their primary target).
    pub per_upstream: HashMap<String, usize>,
    /// The lists it was built from, to notice when one changes (held, so that a pointer
    /// cannot be reused by a newer list).
    sources: Vec<(String, Arc<UpstreamList>)>,
    /// Problems found while building (id clashes between import rules), for the operator.
    pub problems: Vec<String>,
    /// Services the config describes on terms the upstream's list rules out; left out.
    pub refused: Vec<Refused>,
    /// Upstream services sold under two local ids (an explicit one and an import rule's
    /// without `skip_mapped`), for the operator.
    pub sold_twice: Vec<SoldTwice>,
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

    /// The `services` reply for a customer of `group` with its group's filter.
    pub fn reply(&self, group: &str) -> Listing {
        self.group_reply(group)
            .map(|r| r.listing.clone())
            .unwrap_or_else(|| Listing::new(Bytes::from_static(b"[]")))
    }

    /// The `services` reply for a customer of `group` who is not shown `hidden`: the
    /// group's own reply when that is its filter, else one built once per group and filter.
    pub fn reply_for(&self, group: &str, hidden: &Hidden) -> Listing {
        if let Some(r) = self.group_reply(group).filter(|r| r.hidden == *hidden) {
            return r.listing.clone();
        }
        let key = (group.to_owned(), hidden.clone());
        if let Some(l) = self.tailored().get(&key) {
            return l.clone();
        }
        // Built outside the lock: serializing and compressing a large list takes a while,
        // and two requests racing here build the same bytes.
        let listing = listing_for(&self.services, group, hidden);
        self.tailored().entry(key).or_insert(listing).clone()
    }

    /// Service `id` if a customer who is not shown `hidden` may order it. A hidden service
    /// is as absent as an unknown one: its orders are refused the same way.
    pub fn offered(&self, id: u64, hidden: &Hidden) -> Option<&Arc<LocalService>> {
        self.get(id).filter(|s| s.shown(hidden))
    }

    fn group_reply(&self, group: &str) -> Option<&GroupReply> {
        self.replies
            .get(group)
            .or_else(|| self.replies.get(DEFAULT_GROUP))
    }

    fn tailored(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Hidden), Listing>> {
        // A panic elsewhere while holding it leaves whole entries only.
        self.tailored
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
            sold_twice,
        } = built;
        let mut per_upstream: HashMap<String, usize> = HashMap::new();
        for s in services.values() {
            *per_upstream.entry(s.target.upstream.clone()).or_default() += 1;
        }
        let replies = cfg
            .group_names()
            .into_iter()
            .map(|g| {
                let hidden = cfg.hiding.group(&g).clone();
                let listing = listing_for(&services, &g, &hidden);
                (g, GroupReply { hidden, listing })
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
            tailored: Mutex::default(),
            per_upstream,
            sources,
            problems,
            refused,
            sold_twice,
        }
    }
}

/// The `services` reply for customers of `group` who are not shown `hidden`.
fn listing_for(
    services: &BTreeMap<u64, Arc<LocalService>>,
    group: &str,
    hidden: &Hidden,
) -> Listing {
    let listing: Vec<Service> = services
        .values()
        .filter(|s| s.shown(hidden))
        .map(|s| Service {
            rate: s.rate_for(group),
            ..s.listing.clone()
        })
        .collect();
    Listing::new(reply::to_bytes(&listing))
}

/// One upstream service sold under two local ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{upstream}/{service} is sold twice: as service {explicit} and as service {imported} (the import rule of {upstream} with id_offset {id_offset}); skip_mapped: true on that rule sells it once"
)]
pub struct SoldTwice {
    pub upstream: String,
    pub service: u64,
    pub explicit: u64,
    pub imported: u64,
    /// The import rule's, which names it in the config.
    pub id_offset: u64,
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
    sold_twice: Vec<SoldTwice>,
}

impl Built {
    fn add(&mut self, id: u64, made: Result<Arc<LocalService>, Refused>) {
        match made {
            Ok(s) => drop(self.services.insert(id, s)),
            Err(r) => self.refused.push(r),
        }
    }

    /// Notes that import rule `rule` put `imported` on sale beside `explicit`, which sells
    /// the same upstream service, if both are on sale.
    fn note_sold_twice(&mut self, explicit: u64, imported: u64, rule: &ImportRule) {
        if let (Some(e), true) = (
            self.services.get(&explicit),
            self.services.contains_key(&imported),
        ) {
            self.sold_twice.push(SoldTwice {
                upstream: e.target.upstream.clone(),
                service: e.target.service,
                explicit,
                imported,
                id_offset: rule.id_offset,
            });
        }
    }
}

/// Local ids already given out while import rules are applied, and the upstream services
/// explicit entries sell.
struct Taken<'a> {
    explicit: std::collections::HashSet<u64>,
    mapped: HashMap<(&'a str, u64), u64>,
    /// Which rule produced each imported id.
    imported_by: HashMap<u64, usize>,
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

    /// Import rules in order; an id an explicit service or an earlier rule has is skipped,
    /// and so is an upstream service an explicit entry sells, under `skip_mapped`.
    fn imported(&self, out: &mut Built) {
        let mut taken = Taken {
            explicit: self.cfg.explicit.iter().map(|e| e.id).collect(),
            mapped: self
                .cfg
                .explicit
                .iter()
                .map(|e| ((e.target.upstream.as_str(), e.target.service), e.id))
                .collect(),
            imported_by: HashMap::new(),
        };
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
                self.import(rule_no, rule, &list.services[id], &mut taken, out);
            }
        }
    }

    /// Upstream service `s` under import rule `rule`, unless it is not to be imported.
    fn import(
        &self,
        rule_no: usize,
        rule: &ImportRule,
        s: &Service,
        taken: &mut Taken<'_>,
        out: &mut Built,
    ) {
        let Some(local) = rule.id_offset.checked_add(s.service) else {
            return;
        };
        let sold_as = taken
            .mapped
            .get(&(rule.upstream.as_str(), s.service))
            .copied();
        if !sellable(&s.kind)
            || !imported(rule, s)
            || taken.explicit.contains(&local)
            || (rule.skip_mapped && sold_as.is_some())
        {
            return;
        }
        if let Some(first) = taken.imported_by.insert(local, rule_no) {
            taken.imported_by.insert(local, first);
            out.problems.push(format!(
                "local id {local} is produced by import rules {first} and {rule_no}; the first wins: change an id_offset"
            ));
            return;
        }
        let target = Target {
            upstream: rule.upstream.clone(),
            service: s.service,
        };
        let terms = Rule {
            markup: &rule.markup,
            group_markup: &rule.group_markup,
            overrides: &rule.overrides,
            allow_loss: rule.allow_loss,
            strict_range: false,
        };
        out.add(local, self.make(local, target, Vec::new(), s, &terms));
        if let Some(explicit) = sold_as {
            out.note_sold_twice(explicit, local, rule);
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
    /// The services sold twice that were last logged (see [`Catalog::report`]).
    told_sold_twice: Mutex<Vec<SoldTwice>>,
}

impl Catalog {
    pub fn new(cfg: Arc<Config>, upstreams: Arc<Upstreams>, metrics: Arc<Metrics>) -> Catalog {
        // No moka TTL: moka keeps time on a clock of its own, which tests cannot move. A
        // list's age is read on crate::clock instead (see `list`).
        let cache = moka::future::Cache::builder()
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
            told_sold_twice: Default::default(),
            metrics,
        }
    }

    /// The current catalog, refreshing upstream lists whose TTL ran out first. Upstreams that
    /// fail keep their last good list; one that never answered contributes nothing.
    pub async fn get(&self) -> Arc<LocalCatalog> {
        // The common case, without touching the list cache: every list is within its TTL.
        let current = self.current.load();
        if current.sources.len() == self.cfg.upstreams.len()
            && current.sources.iter().all(|(_, l)| self.fresh(l))
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
        // What a refresh costs the request that waits on it; it grows with the lists, and
        // an operator with a big catalog sizes catalog.ttl by it.
        let started = clock::now();
        let built = Arc::new(LocalCatalog::build(&self.cfg, &lists));
        self.metrics
            .catalog_build_seconds
            .set(started.elapsed().as_secs_f64());
        self.report(&built);
        self.current.store(built.clone());
        built
    }

    /// Logs what a new build found and counts its services per upstream.
    fn report(&self, built: &LocalCatalog) {
        for p in &built.problems {
            tracing::error!(problem = %p, "catalog");
        }
        for r in &built.refused {
            tracing::error!(service = r.service, reason = %r.reason, "service left out of the catalog: the config's terms do not fit the upstream's list");
        }
        // Said when it changes (at start, after a reload), not at every refresh: it may be
        // deliberate.
        let mut told = self
            .told_sold_twice
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *told != built.sold_twice {
            for d in &built.sold_twice {
                tracing::warn!(upstream = %d.upstream, upstream_service = d.service, explicit = d.explicit, imported = d.imported, "{d}");
            }
            told.clone_from(&built.sold_twice);
        }
        drop(told);
        tracing::info!(services = built.len(), "catalog rebuilt");
        for u in &self.cfg.upstreams {
            let n = built.per_upstream.get(&u.name).copied().unwrap_or(0);
            self.metrics
                .catalog_services
                .with_label_values(&[&u.name])
                .set(n as i64);
        }
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

    /// Whether `list` is within its TTL.
    fn fresh(&self, list: &UpstreamList) -> bool {
        list.fetched_at.elapsed() < self.cfg.catalog_ttl
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
        if let Some(held) = self.cache.get(upstream).await
            && !self.fresh(&held)
        {
            self.cache.invalidate(upstream).await;
        }
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
            fetched_at: clock::now(),
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
                fetched_at: clock::now(),
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
    fn an_import_rule_skips_mapped_services_only_when_told() {
        let rules = |skip: &str| {
            build(&format!(
                "  - id: 1\n    upstream: a\n    service: 101\n    markup: {{ percent: 25 }}\n  - import: a\n    id_offset: 1000\n{skip}    markup: {{ percent: 40 }}\n  - import: b\n    id_offset: 2000\n{skip}    markup: {{ percent: 40 }}\n"
            ))
        };
        // Without skip_mapped (as configs before it): both ids stay on sale, and the operator
        // is told.
        let c = rules("");
        assert!(c.get(1).is_some() && c.get(1101).is_some());
        assert_eq!(
            c.sold_twice,
            [SoldTwice {
                upstream: "a".into(),
                service: 101,
                explicit: 1,
                imported: 1101,
                id_offset: 1000,
            }]
        );
        let c = rules("    skip_mapped: true\n");
        assert!(c.get(1).is_some() && c.get(1101).is_none() && c.get(1102).is_some());
        // Another upstream's 101 is another service.
        assert!(c.get(2101).is_some());
        assert!(c.sold_twice.is_empty());
    }

    #[test]
    fn replies_are_built_once_per_group_and_filter() {
        let c = build(
            "  - import: a\n    id_offset: 1000\n    markup: { percent: 40 }\nprice_groups:\n  vip:\n    markup: { percent: 10 }\n    hide_types: [Poll]\n",
        );
        let ids = |l: &Listing| -> Vec<u64> {
            let list: Vec<serde_json::Value> = serde_json::from_slice(&l.json).unwrap();
            list.iter()
                .map(|s| s["service"].as_u64().unwrap())
                .collect()
        };
        let vip = c.reply("vip");
        assert!(!ids(&vip).contains(&1113) && ids(&vip).contains(&1105));
        assert!(ids(&c.reply(DEFAULT_GROUP)).contains(&1113));
        let more = Hidden {
            types: crate::matcher::NameSet::new(&["poll", "Mentions"]).unwrap(),
            categories: crate::matcher::NameSet::new(&["youtube"]).unwrap(),
        };
        let first = c.reply_for("vip", &more);
        let shown = ids(&first);
        for gone in [1105, 1113, 1117, 1119] {
            assert!(!shown.contains(&gone), "{gone} in {shown:?}");
        }
        assert!(shown.contains(&1101) && shown.contains(&1106));
        // The same filter again is the same bytes; the group's own filter is its reply.
        assert_eq!(c.reply_for("vip", &more).json.as_ptr(), first.json.as_ptr());
        let own = c.reply_for("vip", &c.replies["vip"].hidden);
        assert_eq!(own.json.as_ptr(), vip.json.as_ptr());
        // Priced for the group, and compressed alike.
        let list: Vec<serde_json::Value> = serde_json::from_slice(&first.json).unwrap();
        assert_eq!(list[0]["rate"], "0.99");
        let mut unzipped = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&first.gzip[..]),
            &mut unzipped,
        )
        .unwrap();
        assert_eq!(unzipped, first.json);
        assert!(c.offered(1113, &more).is_none() && c.offered(1101, &more).is_some());
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
