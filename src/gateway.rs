//! One function per action: where the catalog, the ledger and the upstreams meet.
//!
//! Errors inside are typed ([`GatewayError`]); they become protocol replies in one place,
//! [`Gateway::handle`], which also keeps store and upstream details out of customers' sight.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rust_decimal::Decimal;

use crate::auth::{Authenticator, Caller};
use crate::catalog::{Catalog, LocalCatalog, LocalService};
use crate::config::Config;
use crate::guard::{self, Allowance, Guard};
use crate::journal::{self, Journal};
use crate::metrics::{self, Metrics};
use crate::money::{self, Billing};
use crate::protocol::lenient::Refusal;
use crate::protocol::order::OrderFields;
use crate::protocol::reply::{
    self, Added, Balance, Canceled, Item, MultiRefill, MultiRefillStatus, RefillCreated,
    RefillState,
};
use crate::protocol::{Action, Ids, MAX_IDS, Params, ProtocolError};
use crate::server::ApiRequest;
use crate::status_cache::{self, Entry, StatusCache};
use crate::store::{NewOrder, Order, OrderState, Refill, Store, StoreError};
use crate::sync::{Syncer, Tracked, now_ms};
use crate::upstream::{AddOutcome, Upstreams};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

type Result<T, E = GatewayError> = std::result::Result<T, E>;

/// A reply body; `gzip` says it is compressed (only ever when the request allowed it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub bytes: Bytes,
    pub gzip: bool,
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Body {
        Body { bytes, gzip: false }
    }
}

/// Ids a request's log line names at most (it gives their count too): enough to follow an
/// order through the log, bounded however many a request asks about.
const LOGGED_IDS: usize = 5;

/// What one request did, for the request log line.
#[derive(Debug, Default)]
pub struct Trace {
    pub customer: Option<Arc<Caller>>,
    /// The action asked for, when it could be read (empty otherwise).
    pub action: &'static str,
    /// Whether the request got past its key and the rate limits (or was answered over the
    /// read limit): the metrics count a request refused at the door under action `unknown`.
    pub admitted: bool,
    /// The first [`LOGGED_IDS`] ids asked about (orders, or refills for `refill_status`).
    pub ids: Vec<u64>,
    /// How many ids were asked about.
    pub ids_total: usize,
    pub upstream: Option<String>,
    pub order: Option<i64>,
    pub upstream_order: Option<String>,
    /// What the request came to where the log says more than the metric's outcome: for an
    /// `add` that reached an upstream, what its reply meant (placed, refused, unknown,
    /// not_sent); for a read over the customer's read limit answered from what is held,
    /// `held_over_limit`.
    pub outcome: Option<&'static str>,
}

impl Trace {
    /// Notes what a request asks, before anything may refuse it.
    fn asked(&mut self, action: &Action) {
        self.action = action.name();
        let ids = action.ids();
        self.ids = ids.iter().take(LOGGED_IDS).copied().collect();
        self.ids_total = ids.len();
    }

    /// The logged ids, comma-separated (`-` for none).
    pub fn ids_text(&self) -> impl std::fmt::Display + '_ {
        IdsText(&self.ids)
    }
}

struct IdsText<'a>(&'a [u64]);

impl std::fmt::Display for IdsText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}

pub struct Gateway {
    pub cfg: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub store: Arc<dyn Store>,
    pub catalog: Arc<Catalog>,
    pub upstreams: Arc<Upstreams>,
    pub syncer: Syncer,
    guard: Guard,
    auth: Authenticator,
    statuses: Arc<StatusCache>,
    /// Upstream order ids the store could not take yet ([`crate::journal`]).
    pub journal: Arc<Journal>,
}

impl Gateway {
    pub fn new(
        cfg: Arc<Config>,
        store: Arc<dyn Store>,
        upstreams: Arc<Upstreams>,
        metrics: Arc<Metrics>,
    ) -> Gateway {
        let statuses = Arc::new(StatusCache::new(&cfg.currency));
        Gateway {
            catalog: Arc::new(Catalog::new(
                cfg.clone(),
                upstreams.clone(),
                metrics.clone(),
            )),
            syncer: Syncer {
                cfg: cfg.clone(),
                store: store.clone(),
                upstreams: upstreams.clone(),
                metrics: metrics.clone(),
                statuses: statuses.clone(),
            },
            metrics,
            guard: Guard::new(&cfg),
            auth: Authenticator::new(),
            statuses,
            cfg,
            store,
            upstreams,
            journal: Arc::new(Journal::in_memory()),
        }
    }

    /// The longest the `add` for `svc` can take: each target's call is bounded by its
    /// upstream's timeout three times over (a connection slot, our pace, the exchange).
    /// Recorded on the order when it starts, so a reload cannot shorten it.
    fn dispatch_budget(&self, svc: &LocalService) -> Duration {
        std::iter::once(&svc.target)
            .chain(&svc.fallback)
            .filter_map(|t| self.cfg.upstream(&t.upstream))
            .map(|u| u.timeout * 3)
            .sum()
    }

    /// A gateway for a new config that carries over what must survive a reload: the store,
    /// the metrics, the clients (and breaker state) of unchanged upstreams, and the last good
    /// services lists.
    pub fn reconfigured(&self, cfg: Arc<Config>) -> Gateway {
        let upstreams = Upstreams(
            cfg.upstreams
                .iter()
                .map(
                    |u| match (self.cfg.upstream(&u.name), self.upstreams.get(&u.name)) {
                        (Some(old), Some(client)) if old == u => client.clone(),
                        _ => Arc::new(crate::upstream::Upstream::new(u, self.metrics.clone())),
                    },
                )
                .collect(),
        );
        let mut next = Gateway::new(
            cfg,
            self.store.clone(),
            Arc::new(upstreams),
            self.metrics.clone(),
        );
        next.journal = self.journal.clone();
        next.catalog.inherit(&self.catalog);
        next
    }

    /// Answers one API request: the reply body, or the error to show.
    pub async fn handle(
        &self,
        api: &ApiRequest,
        peer: IpAddr,
        trace: &mut Trace,
    ) -> Result<Body, ProtocolError> {
        match self.act(api, peer, trace).await {
            Ok(body) => Ok(body),
            Err(GatewayError::Protocol(e)) => Err(e),
            Err(GatewayError::Store(e)) => {
                self.metrics.store_failed(store_operation(trace.action), &e);
                tracing::error!(error = %e, action = trace.action, "store failure");
                // The database away is a moment's unavailability, not our bug.
                Err(match e.is_unavailable() {
                    true => ProtocolError::Unavailable,
                    false => ProtocolError::Internal,
                })
            }
        }
    }

    async fn act(&self, api: &ApiRequest, peer: IpAddr, trace: &mut Trace) -> Result<Body> {
        self.guard.sweep();
        // Read first so that a refused request's log line says what it asked; a request that
        // cannot be read is told so only once its caller is known and admitted, as ever.
        let parsed = Action::parse(&api.params);
        if let Ok(action) = &parsed {
            trace.asked(action);
        }
        let wait = |d| guard::retry_after_secs(d);
        self.guard
            .admit_address(peer)
            .map_err(|d| ProtocolError::TooManyKeyAttempts(wait(d)))?;
        let key = api.key();
        let customer = match key {
            Some(key) => self.auth.caller(self.store.as_ref(), key).await?,
            None => None,
        };
        let (Some(key), Some(customer)) = (key, customer) else {
            self.guard.failed_key(peer);
            return Err(ProtocolError::InvalidKey.into());
        };
        trace.customer = Some(customer.clone());
        let over = self
            .guard
            .admit_client(&customer.group, customer.id, Allowance::of(&parsed))
            .err()
            .map(wait);
        trace.admitted = over.is_none();
        match (parsed, over) {
            (Err(e), None) => Err(e.into()),
            (Err(_), Some(retry)) => Err(ProtocolError::TooManyRequests(retry).into()),
            (Ok(action), None) => self.answer(action, &customer, key, api, trace).await,
            (Ok(action), Some(retry)) => {
                self.answer_over_limit(action, &customer, retry, api, trace)
                    .await
            }
        }
    }

    async fn answer(
        &self,
        action: Action,
        customer: &Caller,
        key: &str,
        api: &ApiRequest,
        trace: &mut Trace,
    ) -> Result<Body> {
        let body = match action {
            Action::Services => return Ok(self.services(customer, api, self.catalog.get().await)),
            Action::Balance => {
                // Read now, not remembered: it is the customer's money.
                let fresh = self.auth.fresh(self.store.as_ref(), key).await?;
                let customer = fresh.ok_or(ProtocolError::InvalidKey)?;
                reply::to_bytes(&Balance {
                    balance: money::from_units(customer.balance),
                    currency: self.cfg.currency.clone(),
                })
            }
            Action::Add { service } => self.add(customer, service, &api.params, trace).await?,
            Action::Status(ids) => match self.status(customer, &ids).await {
                // A panel takes an error in a status reply as the order's final word: while
                // the database is away, answer what the cache holds where it holds it all.
                Err(GatewayError::Store(e)) if e.is_unavailable() => self
                    .cached_status(customer, &ids)
                    .ok_or(GatewayError::Store(e))?,
                other => other?,
            },
            Action::Refill(ids) => self.refill(customer, &ids).await?,
            Action::RefillStatus(ids) => self.refill_status(customer, &ids).await?,
            Action::Cancel(ids) => self.cancel(customer, &ids).await?,
        };
        Ok(body.into())
    }

    /// A request over the customer's limit. A panel takes an `error` in a status reply as the
    /// order's final word, so `status` and `refill_status` are answered from what is held
    /// (memory, the store) without asking an upstream, and `services` from the catalog held;
    /// only what nothing is held for gets the refusal. `balance` (a fresh read of the
    /// customer's money, and no order's fate) and writes get it too.
    async fn answer_over_limit(
        &self,
        action: Action,
        customer: &Caller,
        retry: u64,
        api: &ApiRequest,
        trace: &mut Trace,
    ) -> Result<Body> {
        let refused = ProtocolError::TooManyRequests(retry);
        let body = match &action {
            Action::Services => self.services(customer, api, self.catalog.snapshot()),
            Action::Status(ids) => self
                .held_status(customer, ids)
                .await?
                .ok_or(refused)?
                .into(),
            Action::RefillStatus(ids) => self
                .held_refill_status(customer, ids)
                .await?
                .ok_or(refused)?
                .into(),
            _ => return Err(refused.into()),
        };
        self.metrics
            .reads_over_limit
            .with_label_values(&[action.name()])
            .inc();
        trace.admitted = true;
        trace.outcome = Some("held_over_limit");
        Ok(body)
    }

    /// The customer's services listing from `catalog`, compressed if the request allows it.
    fn services(&self, customer: &Caller, api: &ApiRequest, catalog: Arc<LocalCatalog>) -> Body {
        let hidden = self.cfg.hiding.customer(&customer.group, &customer.name);
        let listing = catalog.reply_for(&customer.group, &hidden);
        match api.accepts_gzip {
            true => Body {
                bytes: listing.gzip,
                gzip: true,
            },
            false => listing.json.into(),
        }
    }

    async fn add(
        &self,
        c: &Caller,
        service: u64,
        params: &Params,
        trace: &mut Trace,
    ) -> Result<Bytes> {
        let catalog = self.catalog.get().await;
        let hidden = self.cfg.hiding.customer(&c.group, &c.name);
        let svc: Arc<LocalService> = catalog
            .offered(service, &hidden)
            .ok_or(ProtocolError::IncorrectServiceId)?
            .clone();
        let fields = OrderFields::parse(svc.kind(), params)?;
        // An upstream's currency is known before it takes its first order (fallbacks' are
        // read at start and every `balance_poll`; one not known yet is skipped).
        if let Some(primary) = self.upstreams.get(&svc.target.upstream) {
            let _ = primary.learn_currency().await;
        }
        let l = &svc.listing;
        fields.check_limits(svc.kind(), l.min, l.max, l.dripfeed)?;
        let billed = match fields.billing(svc.kind()) {
            Billing::PerThousand(units) => units,
            Billing::Package => 1,
            Billing::PerPost => return Err(ProtocolError::IncorrectServiceId.into()),
        };
        let charge = money::charge(svc.rate_for(&c.group), fields.billing(svc.kind()))
            .ok_or(ProtocolError::Internal)?;
        let charge = money::to_units(charge).ok_or(ProtocolError::Internal)?;
        let list_cost = list_cost(svc.cost_rate, fields.billing(svc.kind()));
        let form: serde_json::Map<String, serde_json::Value> = fields
            .to_form()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
            .collect();
        let new = NewOrder {
            customer_id: c.id,
            service,
            upstream: svc.target.upstream.clone(),
            upstream_service: svc.target.service,
            charge,
            billed,
            link: fields.link.clone(),
            fields: serde_json::Value::Object(form).to_string(),
            list_cost,
            can_refill: svc.listing.refill,
            can_cancel: svc.listing.cancel,
            dispatch_deadline: now_ms() + self.dispatch_budget(&svc).as_millis() as i64,
            drip: fields.drip,
        };
        // From the hold on, the order's life runs as a task of its own: a client hanging up
        // drops this request's future, and funds held for an order that then never went
        // upstream would stay held until an operator found them.
        let dispatch = Dispatch {
            journal: self.journal.clone(),
            store: self.store.clone(),
            upstreams: self.upstreams.clone(),
            metrics: self.metrics.clone(),
            statuses: self.statuses.clone(),
        };
        let group = c.group.clone();
        let (order, (placed_at, outcome, result)) =
            tokio::spawn(dispatch.run(new, svc, fields, group))
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "dispatch task failed");
                    ProtocolError::Internal
                })?;
        trace.order = order;
        trace.outcome = outcome;
        if let Some((upstream, upstream_order)) = placed_at {
            trace.upstream = Some(upstream);
            trace.upstream_order = upstream_order;
        }
        result
    }

    /// Answered from the status cache where it can be; orders not confirmed by their
    /// upstream within `status_max_age` are asked about first (one call per upstream), and
    /// only an answer that changes something is written.
    async fn status(&self, c: &Caller, ids: &Ids) -> Result<Bytes> {
        let asked = ids.as_slice();
        let started = std::time::Instant::now();
        let now = now_ms();
        let max_age = self.cfg.status_max_age.as_millis() as i64;
        let many = matches!(ids, Ids::Many(_));
        if let Some(reply) = self
            .statuses
            .answer(c.id, asked, many, started, now, max_age)
        {
            return Ok(reply);
        }
        let mut found: Vec<Option<Arc<Entry>>> = asked
            .iter()
            .map(|&id| self.statuses.get(i64::try_from(id).ok()?, started))
            .collect();
        self.read_missing(c, asked, &mut found).await?;

        let mut stale: Vec<Tracked<'_>> = Vec::new();
        for e in found.iter().flatten() {
            if e.visible_to(c.id)
                && e.is_stale(now, max_age)
                && !stale.iter().any(|t| t.id == e.id)
                && let Some(upstream_order) = e.upstream_order.as_deref()
            {
                stale.push(Tracked {
                    id: e.id,
                    upstream: &e.upstream,
                    upstream_order,
                });
            }
        }
        if !stale.is_empty() {
            let mut changed = Vec::new();
            let mut confirmed = Vec::new();
            for (t, update) in self.syncer.ask(&stale).await {
                let held = found.iter().flatten().find(|e| e.id == t.id);
                match held {
                    Some(e) if e.unchanged_by(&update) => {
                        confirmed.push(self.statuses.confirm(e, now));
                    }
                    _ => {
                        self.syncer.apply(t.upstream, t.id, &update).await;
                        changed.push(t.id);
                    }
                }
            }
            drop(stale);
            for e in confirmed {
                place(asked, &mut found, e);
            }
            if !changed.is_empty() {
                self.read_statuses(c, &changed, asked, &mut found).await?;
            }
        }

        hide_others(c, &mut found);
        status_reply(ids, &found)
    }

    /// Over the read limit: the customer's orders as last known, from memory or the store,
    /// without asking an upstream however old; `None` when none of `ids` is theirs.
    async fn held_status(&self, c: &Caller, ids: &Ids) -> Result<Option<Bytes>> {
        let asked = ids.as_slice();
        let mut found: Vec<Option<Arc<Entry>>> = asked
            .iter()
            .map(|&id| self.statuses.held(i64::try_from(id).ok()?))
            .collect();
        self.read_missing(c, asked, &mut found).await?;
        hide_others(c, &mut found);
        if found.iter().all(Option::is_none) {
            return Ok(None);
        }
        status_reply(ids, &found).map(Some)
    }

    /// Every one of `ids` as the status cache last held it, without the store; `None` unless
    /// the cache holds each one of them for the caller.
    fn cached_status(&self, c: &Caller, ids: &Ids) -> Option<Bytes> {
        let found: Vec<Option<Arc<Entry>>> = ids
            .as_slice()
            .iter()
            .map(|&id| self.statuses.held(i64::try_from(id).ok()?))
            .map(|e| e.filter(|e| e.visible_to(c.id)))
            .collect();
        if found.iter().any(Option::is_none) {
            return None;
        }
        status_reply(ids, &found).ok()
    }

    /// Reads the slots of `asked` that nothing was found for from the store.
    async fn read_missing(
        &self,
        c: &Caller,
        asked: &[u64],
        found: &mut [Option<Arc<Entry>>],
    ) -> Result<()> {
        let missing: Vec<i64> = asked
            .iter()
            .zip(found.iter())
            .filter(|(_, e)| e.is_none())
            .filter_map(|(&id, _)| i64::try_from(id).ok())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.read_statuses(c, &missing, asked, found).await
    }

    /// Reads the customer's orders `wanted` from the store into the cache and into the slots
    /// of `asked` they answer.
    async fn read_statuses(
        &self,
        c: &Caller,
        wanted: &[i64],
        asked: &[u64],
        found: &mut [Option<Arc<Entry>>],
    ) -> Result<()> {
        for o in self.store.customer_orders(c.id, wanted).await? {
            place(asked, found, self.statuses.put(&o));
        }
        Ok(())
    }

    async fn refill(&self, c: &Caller, ids: &Ids) -> Result<Bytes> {
        let orders = self
            .store
            .customer_orders(c.id, &local_ids(ids.as_slice()))
            .await?;
        let catalog = self.catalog.get().await;
        let mut results: HashMap<u64, Item<u64>> = HashMap::new();
        let mut eligible: HashMap<&str, Vec<&Order>> = HashMap::new();
        for &id in ids.as_slice() {
            let verdict = match orders.iter().find(|o| o.id as u64 == id) {
                None => Err(ProtocolError::IncorrectOrderId),
                Some(o) if o.state == OrderState::Rejected => Err(ProtocolError::IncorrectOrderId),
                Some(o) if !o.can_refill.unwrap_or_else(|| refillable(&catalog, o)) => {
                    Err(ProtocolError::RefillDisabled)
                }
                Some(o)
                    if o.upstream_order.is_none()
                        || !matches!(o.state, OrderState::Placed | OrderState::Final) =>
                {
                    Err(ProtocolError::OrderNotCompleted)
                }
                Some(o) => {
                    eligible.entry(o.upstream.as_str()).or_default().push(o);
                    continue;
                }
            };
            results.insert(id, verdict.map_err(|e| e.to_string()));
        }
        let answers = forward(&self.upstreams, eligible, "refill", |u, ids| async move {
            u.refill(&ids).await.map(|r| r.0)
        })
        .await;
        for (o, answer) in answers {
            let result = match answer {
                Ok(upstream_refill) => {
                    let refill = self
                        .store
                        .create_refill(o, upstream_refill, now_ms())
                        .await?;
                    Ok(refill.id as u64)
                }
                Err(text) => Err(text),
            };
            results.insert(o.id as u64, result);
        }
        let mut take = |id: &u64| {
            results
                .remove(id)
                .unwrap_or_else(|| Err(ProtocolError::Unavailable.to_string()))
        };
        Ok(match ids {
            Ids::One(id) => match take(id) {
                Ok(refill) => reply::to_bytes(&RefillCreated { refill }),
                Err(text) => return Err(ProtocolError::Upstream(text).into()),
            },
            Ids::Many(list) => reply::to_bytes(&MultiRefill(
                list.iter().map(|id| (*id, take(id))).collect(),
            )),
        })
    }

    async fn refill_status(&self, c: &Caller, ids: &Ids) -> Result<Bytes> {
        let wanted = local_ids(ids.as_slice());
        let mut refills = self.store.customer_refills(c.id, &wanted).await?;
        let max_age = self.cfg.status_max_age.as_millis() as i64;
        let now = now_ms();
        let stale: Vec<_> = refills
            .iter()
            .filter(|r| !r.status.is_final() && r.synced_at.is_none_or(|t| now - t > max_age))
            .collect();
        if !stale.is_empty() {
            self.syncer.refresh_refills(&stale).await;
            refills = self.store.customer_refills(c.id, &wanted).await?;
        }
        refill_status_reply(ids, &refills)
    }

    /// Over the read limit: the customer's refills as the store has them, without asking an
    /// upstream; `None` when none of `ids` is theirs.
    async fn held_refill_status(&self, c: &Caller, ids: &Ids) -> Result<Option<Bytes>> {
        let refills = self
            .store
            .customer_refills(c.id, &local_ids(ids.as_slice()))
            .await?;
        if refills.is_empty() {
            return Ok(None);
        }
        refill_status_reply(ids, &refills).map(Some)
    }

    async fn cancel(&self, c: &Caller, ids: &[u64]) -> Result<Bytes> {
        let orders = self.store.customer_orders(c.id, &local_ids(ids)).await?;
        let catalog = self.catalog.get().await;
        let mut results: HashMap<u64, Item<()>> = HashMap::new();
        let mut eligible: HashMap<&str, Vec<&Order>> = HashMap::new();
        for &id in ids {
            let verdict = match orders.iter().find(|o| o.id as u64 == id) {
                None => Err(ProtocolError::IncorrectOrderId),
                Some(o) if o.state == OrderState::Rejected => Err(ProtocolError::IncorrectOrderId),
                Some(o) if !o.can_cancel.unwrap_or_else(|| cancellable(&catalog, o)) => {
                    Err(ProtocolError::CancelDisabled)
                }
                Some(o) if o.state != OrderState::Placed || o.upstream_order.is_none() => {
                    Err(ProtocolError::CancelNotAllowed)
                }
                Some(o) => {
                    eligible.entry(o.upstream.as_str()).or_default().push(o);
                    continue;
                }
            };
            results.insert(id, verdict.map_err(|e| e.to_string()));
        }
        // A cancel taken upstream is refunded when sync sees the order Canceled (or Partial).
        let answers = forward(&self.upstreams, eligible, "cancel", |u, ids| async move {
            u.cancel(&ids).await.map(|r| r.0)
        })
        .await;
        for (o, answer) in answers {
            results.insert(o.id as u64, answer);
        }
        Ok(reply::to_bytes(&Canceled(
            ids.iter()
                .map(|id| {
                    (
                        *id,
                        results
                            .remove(id)
                            .unwrap_or_else(|| Err(ProtocolError::Unavailable.to_string())),
                    )
                })
                .collect(),
        )))
    }
}

/// Sends a held order to its targets in turn, and records what became of it.
struct Dispatch {
    journal: Arc<Journal>,
    store: Arc<dyn Store>,
    upstreams: Arc<Upstreams>,
    metrics: Arc<Metrics>,
    statuses: Arc<StatusCache>,
}

/// Where the order went (upstream, and its order id there if known), what the upstreams'
/// replies came to (an [`AddOutcome::label`], none if no upstream was tried), and the reply.
type Dispatched = (
    Option<(String, Option<String>)>,
    Option<&'static str>,
    Result<Bytes>,
);

impl Dispatch {
    /// Holds the funds, then places the order. Returns the order's id once it has one.
    async fn run(
        self,
        new: NewOrder,
        svc: Arc<LocalService>,
        fields: OrderFields,
        group: String,
    ) -> (Option<i64>, Dispatched) {
        let order = match self.store.create_order(&new, now_ms()).await {
            Ok(o) => o,
            Err(e) => {
                // Nothing was held, so nothing goes upstream: `handle` says unavailable.
                let refusal = match e {
                    StoreError::InsufficientFunds => ProtocolError::NotEnoughFunds.into(),
                    StoreError::Disabled => ProtocolError::InvalidKey.into(),
                    e => e.into(),
                };
                return (None, (None, None, Err(refusal)));
            }
        };
        // Funds are held and the order is on disk: only now does anything go upstream.
        let dispatched = self.place(&order, svc, fields, &group).await;
        // A `status` poll during the dispatch may have cached the order as it was.
        self.statuses.forget(order.id);
        (Some(order.id), dispatched)
    }

    async fn place(
        &self,
        order: &Order,
        svc: Arc<LocalService>,
        fields: OrderFields,
        group: &str,
    ) -> Dispatched {
        let added = || {
            Ok(reply::to_bytes(&Added {
                order: order.id as u64,
            }))
        };
        let mut refusal = ProtocolError::Unavailable;
        let mut last = None;
        // The upstreams' own words, for the operator: the customer gets `refusal`.
        let mut refused: Vec<String> = Vec::new();
        let mut outcome = None;
        for (i, (target, cost)) in svc.targets().enumerate() {
            let Some(upstream) = self.upstreams.get(&target.upstream) else {
                continue;
            };
            if !self.may_take(order, &svc, group, target, cost, upstream) {
                continue;
            }
            if i > 0
                && let Err(e) = self
                    .store
                    .retarget_order(
                        order.id,
                        &target.upstream,
                        target.service,
                        cost.and_then(|rate| list_cost(rate, fields.billing(svc.kind()))),
                    )
                    .await
            {
                return (last, outcome, Err(e.into()));
            }
            last = Some((target.upstream.clone(), None));
            let answer = upstream.add(target.service, &fields).await;
            // A refusal anywhere outranks "not sent" in what the attempts came to.
            if outcome != Some("refused") {
                outcome = Some(answer.label());
            }
            match answer {
                AddOutcome::Placed(upstream_order) => {
                    let m = &self.metrics;
                    m.orders_placed.with_label_values(&[&target.upstream]).inc();
                    m.revenue
                        .with_label_values(&[&target.upstream])
                        .inc_by(metrics::as_metric(money::from_units(order.charge)));
                    // ---- issue #18: the upstream's id is never lost to a store failure ----
                    let placed = journal::Placed {
                        order: order.id,
                        upstream: target.upstream.clone(),
                        upstream_order: upstream_order.clone(),
                        at: now_ms(),
                    };
                    let (store, journal) = (self.store.clone(), self.journal.clone());
                    journal::record_placed_durably(store, journal, m.clone(), placed).await;
                    return (
                        Some((target.upstream.clone(), Some(upstream_order))),
                        Some("placed"),
                        added(),
                    );
                }
                AddOutcome::Unknown(why) => {
                    tracing::error!(order = order.id, upstream = %target.upstream, reason = %why, "upstream add outcome unknown: funds held, never resent; resolve with `panelgate order resolve`");
                    let marked = self.store.mark_unknown(order.id, &why, now_ms()).await;
                    return (
                        last,
                        Some("unknown"),
                        marked.map_err(Into::into).and_then(|()| added()),
                    );
                }
                AddOutcome::NotSent(why) => {
                    tracing::warn!(order = order.id, upstream = %target.upstream, reason = %why, "upstream add not sent");
                }
                AddOutcome::Rejected {
                    text,
                    refusal: kind,
                } => {
                    tracing::warn!(order = order.id, upstream = %target.upstream, refusal = %text, "upstream refused the order");
                    if kind == Refusal::NotEnoughFunds {
                        tracing::error!(upstream = %target.upstream, "our account at the upstream is out of funds");
                    }
                    refusal = customer_error(kind, &text);
                    // Bounded: a refusal is a sentence, whatever an upstream sends.
                    let text: String = text.chars().take(300).collect();
                    refused.push(format!("{} refused: {text}", target.upstream));
                }
            }
        }
        let note = rejection_note(&refused, &refusal);
        let rejected = self.store.mark_rejected(order.id, &note, now_ms()).await;
        (
            last,
            outcome,
            rejected
                .map_err(Into::into)
                .and_then(|()| Err(refusal.into())),
        )
    }
}

/// The note on a rejected order: each upstream's refusal in its own words, then what the
/// customer was told (the operator sees both in `order show` / `order list --json`).
fn rejection_note(refused: &[String], told: &ProtocolError) -> String {
    if refused.is_empty() {
        return told.to_string();
    }
    format!("{}; customer told: {told}", refused.join("; "))
}

impl Dispatch {
    /// Whether `target` may take the order: its stated currency is the one the config
    /// expects, and the customer's rate covers what it costs us (docs/configuration.md,
    /// "Where each rule is checked").
    fn may_take(
        &self,
        order: &Order,
        svc: &LocalService,
        group: &str,
        target: &crate::config::Target,
        cost: Option<Decimal>,
        upstream: &crate::upstream::Upstream,
    ) -> bool {
        let skipped = |reason: &str| {
            self.metrics
                .targets_skipped
                .with_label_values(&[target.upstream.as_str(), reason])
                .inc();
            false
        };
        if let Err(e) = upstream.currency_check() {
            tracing::warn!(order = order.id, upstream = %target.upstream, problem = %e, "target skipped: its currency does not fit the config");
            return skipped("currency");
        }
        if !svc.covers(group, cost) {
            let floor = svc.floor(group, cost).map(|f| f.to_string());
            tracing::warn!(order = order.id, upstream = %target.upstream, service = target.service, rate = %svc.rate_for(group), floor = floor.as_deref().unwrap_or("unknown (not in its list)"), "target skipped: the sell price does not cover its cost");
            return skipped("below_cost");
        }
        true
    }
}

/// What an order billed as `billing` costs us at a target's list `rate`, in our units
/// (rounded up, as the upstream would round its charge).
fn list_cost(rate: Decimal, billing: Billing) -> Option<crate::store::Units> {
    money::charge(rate, billing).and_then(|c| money::to_units(money::round_up(c)))
}

/// Sends one multi action (refill, cancel) for `eligible` orders to their upstreams, one call
/// per upstream per ≤100 ids, and returns each order's answer: the upstream's item, its refusal
/// text (with our order id in place of theirs), or the neutral unavailability error when the
/// call failed or left the order out.
async fn forward<'a, T, F, Fut>(
    upstreams: &Upstreams,
    eligible: HashMap<&str, Vec<&'a Order>>,
    action: &'static str,
    call: F,
) -> Vec<(&'a Order, Item<T>)>
where
    F: Fn(Arc<crate::upstream::Upstream>, Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<(String, Item<T>)>, crate::upstream::CallError>>,
{
    let mut out = Vec::new();
    for (name, orders) in eligible {
        let Some(upstream) = upstreams.get(name) else {
            continue;
        };
        for chunk in orders.chunks(MAX_IDS) {
            let ids: Vec<String> = chunk
                .iter()
                .filter_map(|o| o.upstream_order.clone())
                .collect();
            let mut answered = match call(upstream.clone(), ids).await {
                Ok(items) => items,
                Err(e) => {
                    tracing::warn!(upstream = name, action, error = %e, "upstream call failed");
                    Vec::new()
                }
            };
            for &o in chunk {
                let item = answered
                    .iter()
                    .position(|(uid, _)| Some(uid) == o.upstream_order.as_ref())
                    .map(|i| answered.swap_remove(i).1);
                let answer = match item {
                    Some(Ok(value)) => Ok(value),
                    Some(Err(text)) => Err(match &o.upstream_order {
                        Some(theirs) => scrub(&text, theirs, &o.id.to_string()),
                        None => text,
                    }),
                    None => Err(ProtocolError::Unavailable.to_string()),
                };
                out.push((o, answer));
            }
        }
    }
    out
}

/// What a customer is told when every target refused: the refusals that are theirs to fix
/// pass through; the ones that are ours (our funds, our key, our catalog) stay neutral.
fn customer_error(kind: Refusal, text: &str) -> ProtocolError {
    match kind {
        Refusal::LinkDuplicate => ProtocolError::ActiveOrderWithLink,
        Refusal::QuantityBelowMin | Refusal::QuantityAboveMax if text.starts_with("Quantity") => {
            ProtocolError::Upstream(text.to_owned())
        }
        _ => ProtocolError::Unavailable,
    }
}

/// An upstream's refusal text about one order, with its order id replaced by ours so that
/// upstream ids never leak. Only whole tokens that name the order are replaced (after
/// "order", "ID", "#", or opening the text): "Refill is available 1 time in 10 days" keeps
/// its numbers whatever the order's id.
pub fn scrub(text: &str, theirs: &str, ours: &str) -> String {
    let is_token = |c: char| c.is_alphanumeric() || c == '-' || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| is_token(c)) {
        let len = rest[start..]
            .find(|c: char| !is_token(c))
            .unwrap_or(rest.len() - start);
        let token = &rest[start..start + len];
        let before = &text[..text.len() - rest.len() + start];
        out.push_str(&rest[..start]);
        out.push_str(if token == theirs && names_an_order(before) {
            ours
        } else {
            token
        });
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

/// Whether the text just before a token introduces an order id: "order 5", "Order ID: 5",
/// "orders #5", "#5", or nothing at all ("5: cannot be refilled").
fn names_an_order(before: &str) -> bool {
    let trimmed = before.trim_end_matches([' ', ':', '=', '\t']);
    if trimmed.ends_with(['#', '№']) || trimmed.is_empty() {
        return true;
    }
    let word: String = trimmed
        .rsplit(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default()
        .to_lowercase();
    matches!(
        word.as_str(),
        "order" | "orders" | "id" | "ids" | "order_id" | "orderid"
    )
}

/// For an order placed before its refill flag was recorded: what today's catalog says.
/// Newer orders answer from their own record, so a service that left the catalog (or changed
/// its flags) since does not change what its orders may ask for.
fn refillable(catalog: &LocalCatalog, o: &Order) -> bool {
    catalog.get(o.service).is_some_and(|s| s.listing.refill)
}

/// As [`refillable`], for cancel.
fn cancellable(catalog: &LocalCatalog, o: &Order) -> bool {
    catalog.get(o.service).is_some_and(|s| s.listing.cancel)
}

/// Empties the slots of orders the customer may not see.
fn hide_others(c: &Caller, found: &mut [Option<Arc<Entry>>]) {
    for slot in found {
        if slot.as_ref().is_some_and(|e| !e.visible_to(c.id)) {
            *slot = None;
        }
    }
}

/// The `status` reply for `ids` from the entries found for each (`None`: not the caller's).
fn status_reply(ids: &Ids, found: &[Option<Arc<Entry>>]) -> Result<Bytes> {
    Ok(match ids {
        Ids::One(_) => found[0]
            .as_ref()
            .ok_or(ProtocolError::IncorrectOrderId)?
            .json
            .clone(),
        Ids::Many(asked) => status_cache::multi_reply(asked, found),
    })
}

/// The `refill_status` reply for `ids` from the caller's `refills` among them.
fn refill_status_reply(ids: &Ids, refills: &[Refill]) -> Result<Bytes> {
    let status_of = |id: &u64| {
        refills
            .iter()
            .find(|r| r.id as u64 == *id)
            .map(|r| r.status)
    };
    Ok(match ids {
        Ids::One(id) => reply::to_bytes(&RefillState {
            status: status_of(id).ok_or(ProtocolError::RefillNotFound)?,
        }),
        Ids::Many(list) => reply::to_bytes(&MultiRefillStatus(
            list.iter()
                .map(|id| {
                    (
                        *id,
                        status_of(id).ok_or_else(|| ProtocolError::RefillNotFound.to_string()),
                    )
                })
                .collect(),
        )),
    })
}

/// Puts `entry` into every slot of `asked` that names its order.
fn place(asked: &[u64], found: &mut [Option<Arc<Entry>>], entry: Arc<Entry>) {
    for (id, slot) in asked.iter().zip(found.iter_mut()) {
        if *id == entry.id as u64 {
            *slot = Some(entry.clone());
        }
    }
}

fn local_ids(ids: &[u64]) -> Vec<i64> {
    ids.iter()
        .filter_map(|&id| i64::try_from(id).ok())
        .collect()
}

/// The `operation` label of a store failure met answering `action` (a fixed set of names).
fn store_operation(action: &str) -> &'static str {
    match action {
        "add" => "hold",
        "" => "auth",
        "balance" => "balance",
        "status" => "status",
        "refill" => "refill",
        "refill_status" => "refill_status",
        "cancel" => "cancel",
        "services" => "services",
        _ => "other",
    }
}

/// The sum of a customer's ledger entries, for invariant checks.
pub async fn ledger_sum(store: &dyn Store, customer_id: i64) -> Result<Decimal, StoreError> {
    let entries = store.ledger(customer_id).await?;
    Ok(money::from_units(entries.iter().map(|e| e.amount).sum()))
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn scrub_replaces_only_whole_tokens_that_name_the_order() {
        let cases = [
            // The example: the numbers are not the order.
            (
                "Refill is available 1 time in 10 days",
                "1",
                "7",
                "Refill is available 1 time in 10 days",
            ),
            (
                "Order 1 is not completed",
                "1",
                "7",
                "Order 7 is not completed",
            ),
            (
                "order #1: refill in 10 days",
                "1",
                "7",
                "order #7: refill in 10 days",
            ),
            (
                "Order ID: 23501 can't be refilled",
                "23501",
                "9",
                "Order ID: 9 can't be refilled",
            ),
            ("23501: not completed", "23501", "9", "9: not completed"),
            // Part of a longer token is another token.
            ("Order 123501 unknown", "23501", "9", "Order 123501 unknown"),
            // Text ids.
            ("order ab-12 is done", "ab-12", "4", "order 4 is done"),
            ("no id here", "5", "4", "no id here"),
        ];
        for (text, theirs, ours, want) in cases {
            assert_eq!(scrub(text, theirs, ours), want, "{text}");
        }
    }
}
