//! One function per action: where the catalog, the ledger and the upstreams meet.
//!
//! Errors inside are typed ([`GatewayError`]); they become protocol replies in one place,
//! [`Gateway::handle`], which also keeps store and upstream details out of customers' sight.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use rust_decimal::Decimal;

use crate::catalog::{Catalog, LocalService};
use crate::config::Config;
use crate::guard::{self, Guard};
use crate::keys;
use crate::metrics::{self, Metrics};
use crate::money::{self, Billing};
use crate::protocol::lenient::Refusal;
use crate::protocol::order::OrderFields;
use crate::protocol::reply::{
    self, Added, Balance, Canceled, Item, MultiRefill, MultiRefillStatus, MultiStatus, OrderStatus,
    RefillCreated, RefillState, Remains,
};
use crate::protocol::{Action, Ids, MAX_IDS, Params, ProtocolError, Status};
use crate::server::ApiRequest;
use crate::store::{Customer, NewOrder, Order, OrderState, Store, StoreError};
use crate::sync::{Syncer, now_ms};
use crate::upstream::{AddOutcome, Upstreams};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

type Result<T, E = GatewayError> = std::result::Result<T, E>;

/// What one request did, for the request log line.
#[derive(Debug, Default)]
pub struct Trace {
    pub customer: Option<String>,
    pub action: &'static str,
    pub upstream: Option<String>,
    pub order: Option<i64>,
    pub upstream_order: Option<u64>,
}

pub struct Gateway {
    pub cfg: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub store: Arc<dyn Store>,
    pub catalog: Arc<Catalog>,
    pub upstreams: Arc<Upstreams>,
    pub syncer: Syncer,
    guard: Guard,
}

impl Gateway {
    pub fn new(
        cfg: Arc<Config>,
        store: Arc<dyn Store>,
        upstreams: Arc<Upstreams>,
        metrics: Arc<Metrics>,
    ) -> Gateway {
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
            },
            metrics,
            guard: Guard::new(&cfg),
            cfg,
            store,
            upstreams,
        }
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
        let next = Gateway::new(
            cfg,
            self.store.clone(),
            Arc::new(upstreams),
            self.metrics.clone(),
        );
        next.catalog.inherit(&self.catalog);
        next
    }

    /// Answers one API request: the reply body, or the error to show.
    pub async fn handle(
        &self,
        api: &ApiRequest,
        peer: IpAddr,
        trace: &mut Trace,
    ) -> Result<Bytes, ProtocolError> {
        match self.act(api, peer, trace).await {
            Ok(body) => Ok(body),
            Err(GatewayError::Protocol(e)) => Err(e),
            Err(GatewayError::Store(e)) => {
                tracing::error!(error = %e, action = trace.action, "store failure");
                Err(ProtocolError::Internal)
            }
        }
    }

    async fn act(&self, api: &ApiRequest, peer: IpAddr, trace: &mut Trace) -> Result<Bytes> {
        self.guard.sweep();
        let wait = |d| guard::retry_after_secs(d);
        self.guard
            .admit_address(peer)
            .map_err(|d| ProtocolError::TooManyKeyAttempts(wait(d)))?;
        let customer = match api.key() {
            Some(key) => self.authenticate(key).await?,
            None => None,
        };
        let Some(customer) = customer else {
            self.guard.failed_key(peer);
            return Err(ProtocolError::InvalidKey.into());
        };
        self.guard
            .admit_client(&customer.group, customer.id)
            .map_err(|d| ProtocolError::TooManyRequests(wait(d)))?;
        trace.customer = Some(customer.name.clone());
        let action = Action::parse(&api.params)?;
        trace.action = action.name();
        match action {
            Action::Services => Ok(self.catalog.get().await.reply(&customer.group)),
            Action::Balance => Ok(reply::to_bytes(&Balance {
                balance: money::from_units(customer.balance),
                currency: self.cfg.currency.clone(),
            })),
            Action::Add { service } => self.add(&customer, service, &api.params, trace).await,
            Action::Status(ids) => self.status(&customer, &ids).await,
            Action::Refill(ids) => self.refill(&customer, &ids).await,
            Action::RefillStatus(ids) => self.refill_status(&customer, &ids).await,
            Action::Cancel(ids) => self.cancel(&customer, &ids).await,
        }
    }

    /// The enabled customer whose key this is, if any.
    async fn authenticate(&self, key: &str) -> Result<Option<Customer>> {
        let hash = keys::hash(key);
        Ok(match self.store.customer_by_key(&hash).await? {
            Some((c, stored)) if keys::matches(&stored, &hash) && c.enabled => Some(c),
            _ => None,
        })
    }

    async fn add(
        &self,
        c: &Customer,
        service: u64,
        params: &Params,
        trace: &mut Trace,
    ) -> Result<Bytes> {
        let catalog = self.catalog.get().await;
        let svc: Arc<LocalService> = catalog
            .get(service)
            .ok_or(ProtocolError::IncorrectServiceId)?
            .clone();
        let fields = OrderFields::parse(svc.kind(), params)?;
        let l = &svc.listing;
        fields.check_limits(svc.kind(), l.min, l.max, l.dripfeed)?;
        let billed = match fields.billing(svc.kind()) {
            Billing::PerThousand(units) => units,
            Billing::Package => 1,
            Billing::PerPost => return Err(ProtocolError::IncorrectServiceId.into()),
        };
        let charge = money::charge(svc.rate_for(&c.group), fields.billing(svc.kind()));
        let charge = money::to_units(charge).ok_or(ProtocolError::Internal)?;
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
        };
        let order = match self.store.create_order(&new, now_ms()).await {
            Ok(o) => o,
            Err(StoreError::InsufficientFunds) => return Err(ProtocolError::NotEnoughFunds.into()),
            Err(e) => return Err(e.into()),
        };
        trace.order = Some(order.id);
        // Funds are held and the order is on disk: only now does anything go upstream. The
        // dispatch runs as its own task, so a client hanging up mid-request cannot leave the
        // order half-dispatched.
        let dispatch = Dispatch {
            store: self.store.clone(),
            upstreams: self.upstreams.clone(),
            metrics: self.metrics.clone(),
        };
        let (placed_at, result) = tokio::spawn(dispatch.run(order, svc, fields))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "dispatch task failed");
                ProtocolError::Internal
            })?;
        if let Some((upstream, upstream_order)) = placed_at {
            trace.upstream = Some(upstream);
            trace.upstream_order = upstream_order;
        }
        result
    }

    async fn status(&self, c: &Customer, ids: &Ids) -> Result<Bytes> {
        let wanted = local_ids(ids.as_slice());
        let mut orders = self.store.customer_orders(c.id, &wanted).await?;
        let max_age = self.cfg.status_max_age.as_millis() as i64;
        let now = now_ms();
        let stale: Vec<&Order> = orders
            .iter()
            .filter(|o| {
                o.state == OrderState::Placed && o.synced_at.is_none_or(|t| now - t > max_age)
            })
            .collect();
        if !stale.is_empty() {
            self.syncer.refresh_orders(&stale).await;
            orders = self.store.customer_orders(c.id, &wanted).await?;
        }
        let by_id: HashMap<u64, &Order> = orders
            .iter()
            .filter(|o| o.state != OrderState::Rejected)
            .map(|o| (o.id as u64, o))
            .collect();
        let status_of = |id: &u64| by_id.get(id).map(|o| self.order_status(o));
        Ok(match ids {
            Ids::One(id) => reply::to_bytes(&status_of(id).ok_or(ProtocolError::IncorrectOrderId)?),
            Ids::Many(list) => reply::to_bytes(&MultiStatus(
                list.iter()
                    .map(|id| {
                        (
                            *id,
                            status_of(id)
                                .ok_or_else(|| ProtocolError::IncorrectOrderId.to_string()),
                        )
                    })
                    .collect(),
            )),
        })
    }

    fn order_status(&self, o: &Order) -> OrderStatus {
        OrderStatus {
            charge: money::from_units(o.charge - o.refunded),
            start_count: o.start_count.unwrap_or(0),
            status: o.status,
            remains: match (o.remains, o.status) {
                (Some(n), _) => Remains::Count(n),
                (None, Status::Completed) => Remains::Count(0),
                (None, _) => Remains::Count(o.billed as i64),
            },
            currency: self.cfg.currency.clone(),
        }
    }

    async fn refill(&self, c: &Customer, ids: &Ids) -> Result<Bytes> {
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
                Some(o) if !catalog.get(o.service).is_some_and(|s| s.listing.refill) => {
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

    async fn refill_status(&self, c: &Customer, ids: &Ids) -> Result<Bytes> {
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

    async fn cancel(&self, c: &Customer, ids: &[u64]) -> Result<Bytes> {
        let orders = self.store.customer_orders(c.id, &local_ids(ids)).await?;
        let catalog = self.catalog.get().await;
        let mut results: HashMap<u64, Item<()>> = HashMap::new();
        let mut eligible: HashMap<&str, Vec<&Order>> = HashMap::new();
        for &id in ids {
            let verdict = match orders.iter().find(|o| o.id as u64 == id) {
                None => Err(ProtocolError::IncorrectOrderId),
                Some(o) if o.state == OrderState::Rejected => Err(ProtocolError::IncorrectOrderId),
                Some(o) if !catalog.get(o.service).is_some_and(|s| s.listing.cancel) => {
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
    store: Arc<dyn Store>,
    upstreams: Arc<Upstreams>,
    metrics: Arc<Metrics>,
}

/// Where the order went (upstream, and its order id there if known), and the reply.
type Dispatched = (Option<(String, Option<u64>)>, Result<Bytes>);

impl Dispatch {
    async fn run(self, order: Order, svc: Arc<LocalService>, fields: OrderFields) -> Dispatched {
        let added = || {
            Ok(reply::to_bytes(&Added {
                order: order.id as u64,
            }))
        };
        let mut refusal = ProtocolError::Unavailable;
        let mut last = None;
        let targets = std::iter::once(&svc.target).chain(&svc.fallback);
        for (i, target) in targets.enumerate() {
            let Some(upstream) = self.upstreams.get(&target.upstream) else {
                continue;
            };
            if i > 0
                && let Err(e) = self
                    .store
                    .retarget_order(order.id, &target.upstream, target.service)
                    .await
            {
                return (last, Err(e.into()));
            }
            last = Some((target.upstream.clone(), None));
            match upstream.add(target.service, &fields).await {
                AddOutcome::Placed(upstream_order) => {
                    let m = &self.metrics;
                    m.orders_placed.with_label_values(&[&target.upstream]).inc();
                    m.revenue
                        .with_label_values(&[&target.upstream])
                        .inc_by(metrics::as_metric(money::from_units(order.charge)));
                    if let Err(e) = self
                        .store
                        .mark_placed(order.id, upstream_order, now_ms())
                        .await
                    {
                        // Placed upstream but not recorded: the order stays `dispatching`,
                        // becomes `unknown` at the next start, and this line tells the operator
                        // which upstream order it is.
                        tracing::error!(order = order.id, upstream = %target.upstream, upstream_order, error = %e, "placed upstream but not recorded; resolve with `panelgate order resolve`");
                    }
                    return (
                        Some((target.upstream.clone(), Some(upstream_order))),
                        added(),
                    );
                }
                AddOutcome::Unknown(why) => {
                    tracing::error!(order = order.id, upstream = %target.upstream, reason = %why, "upstream add outcome unknown: funds held, never resent; resolve with `panelgate order resolve`");
                    let marked = self.store.mark_unknown(order.id, &why, now_ms()).await;
                    return (last, marked.map_err(Into::into).and_then(|()| added()));
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
                }
            }
        }
        let rejected = self
            .store
            .mark_rejected(order.id, &refusal.to_string(), now_ms())
            .await;
        (
            last,
            rejected
                .map_err(Into::into)
                .and_then(|()| Err(refusal.into())),
        )
    }
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
    F: Fn(Arc<crate::upstream::Upstream>, Vec<u64>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<(u64, Item<T>)>, crate::upstream::CallError>>,
{
    let mut out = Vec::new();
    for (name, orders) in eligible {
        let Some(upstream) = upstreams.get(name) else {
            continue;
        };
        for chunk in orders.chunks(MAX_IDS) {
            let ids: Vec<u64> = chunk.iter().filter_map(|o| o.upstream_order).collect();
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
                    .position(|(uid, _)| Some(*uid) == o.upstream_order)
                    .map(|i| answered.swap_remove(i).1);
                let answer = match item {
                    Some(Ok(value)) => Ok(value),
                    Some(Err(text)) => Err(scrub(&text, o)),
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

/// An upstream's refusal text, with its order id replaced by ours: upstream ids never leak.
fn scrub(text: &str, order: &Order) -> String {
    match order.upstream_order {
        Some(uid) => text.replace(&uid.to_string(), &order.id.to_string()),
        None => text.to_owned(),
    }
}

fn local_ids(ids: &[u64]) -> Vec<i64> {
    ids.iter()
        .filter_map(|&id| i64::try_from(id).ok())
        .collect()
}

/// The sum of a customer's ledger entries, for invariant checks.
pub async fn ledger_sum(store: &dyn Store, customer_id: i64) -> Result<Decimal, StoreError> {
    let entries = store.ledger(customer_id).await?;
    Ok(money::from_units(entries.iter().map(|e| e.amount).sum()))
}
