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

use crate::config::{Config, DEFAULT_GROUP, Overrides, Target};
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
    /// Selling rate per price group.
    pub rates: HashMap<String, Decimal>,
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
    pub fn build(cfg: &Config, lists: &HashMap<String, Arc<UpstreamList>>) -> LocalCatalog {
        let groups = cfg.group_names();
        let fx = |upstream: &str| cfg.upstream(upstream).map_or(Decimal::ONE, |u| u.fx);
        let mut problems = Vec::new();
        let mut services: BTreeMap<u64, Arc<LocalService>> = BTreeMap::new();
        let make = |id: u64,
                    target: Target,
                    fallback: Vec<Target>,
                    upstream_service: &Service,
                    markup: &Markup,
                    group_markup: &HashMap<String, Markup>,
                    o: &Overrides| {
            let cost = pricing::convert(upstream_service.rate, fx(&target.upstream));
            let rates: HashMap<String, Decimal> = groups
                .iter()
                .map(|g| {
                    let m = group_markup
                        .get(g)
                        .or_else(|| (g != DEFAULT_GROUP).then(|| cfg.groups.get(g)).flatten())
                        .unwrap_or(markup);
                    (g.clone(), m.sell_rate(cost))
                })
                .collect();
            // Our limits may narrow the upstream's, never widen them: it would refuse.
            let min = o
                .min
                .map_or(upstream_service.min, |m| m.max(upstream_service.min));
            let max = o
                .max
                .map_or(upstream_service.max, |m| m.min(upstream_service.max));
            Arc::new(LocalService {
                listing: Service {
                    service: id,
                    name: o
                        .name
                        .clone()
                        .unwrap_or_else(|| upstream_service.name.clone()),
                    kind: upstream_service.kind.clone(),
                    category: o
                        .category
                        .clone()
                        .unwrap_or_else(|| upstream_service.category.clone()),
                    rate: rates[DEFAULT_GROUP],
                    min,
                    max: max.max(min),
                    refill: o.refill.unwrap_or(upstream_service.refill) && upstream_service.refill,
                    cancel: o.cancel.unwrap_or(upstream_service.cancel) && upstream_service.cancel,
                    dripfeed: o.dripfeed.unwrap_or(upstream_service.dripfeed)
                        && upstream_service.dripfeed,
                    desc: o.desc.clone().or_else(|| upstream_service.desc.clone()),
                },
                target,
                fallback,
                cost_rate: cost,
                rates,
                stuck_after: o.stuck_after,
            })
        };
        let lookup = |t: &Target| {
            lists
                .get(&t.upstream)
                .and_then(|l| l.services.get(&t.service))
        };

        for e in &cfg.explicit {
            let Some(s) = lookup(&e.target) else { continue };
            if sellable(&s.kind) {
                services.insert(
                    e.id,
                    make(
                        e.id,
                        e.target.clone(),
                        e.fallback.clone(),
                        s,
                        &e.markup,
                        &e.group_markup,
                        &e.overrides,
                    ),
                );
            }
        }
        let explicit_ids: std::collections::HashSet<u64> =
            cfg.explicit.iter().map(|e| e.id).collect();
        let mut imported_by: HashMap<u64, usize> = HashMap::new();
        for (rule_no, rule) in cfg.imports.iter().enumerate() {
            let Some(list) = lists.get(&rule.upstream) else {
                continue;
            };
            let mut ids: Vec<&u64> = list.services.keys().collect();
            ids.sort();
            for id in ids {
                let s = &list.services[id];
                if !sellable(&s.kind)
                    || !(rule.categories.is_empty()
                        || rule.categories.iter().any(|r| r.is_match(&s.category)))
                {
                    continue;
                }
                let Some(local) = rule.id_offset.checked_add(*id) else {
                    continue;
                };
                if explicit_ids.contains(&local) {
                    continue; // explicit wins
                }
                if let Some(first) = imported_by.get(&local) {
                    problems.push(format!(
                        "local id {local} is produced by import rules {first} and {rule_no}; the first wins: change an id_offset"
                    ));
                    continue;
                }
                imported_by.insert(local, rule_no);
                let target = Target {
                    upstream: rule.upstream.clone(),
                    service: *id,
                };
                services.insert(
                    local,
                    make(
                        local,
                        target,
                        Vec::new(),
                        s,
                        &rule.markup,
                        &rule.group_markup,
                        &rule.overrides,
                    ),
                );
            }
        }

        let mut per_upstream: HashMap<String, usize> = HashMap::new();
        for s in services.values() {
            *per_upstream.entry(s.target.upstream.clone()).or_default() += 1;
        }
        let replies = groups
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
        }
    }
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
