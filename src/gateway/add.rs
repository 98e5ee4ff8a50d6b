//! `add`: an order is priced, its funds held and written down, and only then sent to its
//! targets in turn ([`Dispatch`]), which records what became of it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rust_decimal::Decimal;

use super::{Gateway, RequestLog, Result};
use crate::auth::Caller;
use crate::catalog::LocalService;
use crate::config::Target;
use crate::journal::{self, Journal};
use crate::metrics::{self, Metrics};
use crate::money::{self, Billing};
use crate::protocol::lenient::Refusal;
use crate::protocol::order::OrderFields;
use crate::protocol::reply::{self, Added};
use crate::protocol::{Params, ProtocolError};
use crate::status_cache::StatusCache;
use crate::store::{NewOrder, Order, Store};
use crate::sync::now_ms;
use crate::upstream::{AddOutcome, Upstream, Upstreams};

impl Gateway {
    pub(super) async fn add(
        &self,
        c: &Caller,
        service: u64,
        params: &Params,
        log: &mut RequestLog,
    ) -> Result<Bytes> {
        let (svc, fields) = self.offered(c, service, params).await?;
        let new = self.new_order(c, service, &svc, &fields)?;
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
        log.order = order;
        log.outcome = outcome;
        if let Some((upstream, upstream_order)) = placed_at {
            log.upstream = Some(upstream);
            log.upstream_order = upstream_order;
        }
        result
    }

    /// The service the customer may order as `service`, and the order's fields read from
    /// `params` and checked against its listing.
    async fn offered(
        &self,
        c: &Caller,
        service: u64,
        params: &Params,
    ) -> Result<(Arc<LocalService>, OrderFields)> {
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
        Ok((svc, fields))
    }

    /// The order as it is written when its funds are held: priced at the customer's rate,
    /// aimed at the service's primary target.
    fn new_order(
        &self,
        c: &Caller,
        service: u64,
        svc: &LocalService,
        fields: &OrderFields,
    ) -> Result<NewOrder> {
        let billing = fields.billing(svc.kind());
        let billed = match billing {
            Billing::PerThousand(units) => units,
            Billing::Package => 1,
            Billing::PerPost => return Err(ProtocolError::IncorrectServiceId.into()),
        };
        let charge =
            money::charge(svc.rate_for(&c.group), billing).ok_or(ProtocolError::Internal)?;
        let charge = money::to_units(charge).ok_or(ProtocolError::Internal)?;
        let form: serde_json::Map<String, serde_json::Value> = fields
            .to_form()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
            .collect();
        Ok(NewOrder {
            customer_id: c.id,
            service,
            upstream: svc.target.upstream.clone(),
            upstream_service: svc.target.service,
            charge,
            billed,
            link: fields.link.clone(),
            fields: serde_json::Value::Object(form).to_string(),
            list_cost: list_cost(svc.cost_rate, billing),
            can_refill: svc.listing.refill,
            can_cancel: svc.listing.cancel,
            dispatch_deadline: now_ms() + self.dispatch_budget(svc).as_millis() as i64,
            drip: fields.drip,
        })
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

/// What the targets tried so far came to, while no target has placed the order.
struct Attempts {
    /// The last target tried (its order id there is never known here).
    last: Option<(String, Option<String>)>,
    /// What the upstreams' replies meant: a refusal anywhere outranks "not sent".
    outcome: Option<&'static str>,
    /// What the customer is told if no target takes the order.
    refusal: ProtocolError,
    /// The upstreams' own words, for the operator: the customer gets `refusal`.
    refused: Vec<String>,
}

impl Attempts {
    fn new() -> Attempts {
        Attempts {
            last: None,
            outcome: None,
            refusal: ProtocolError::Unavailable,
            refused: Vec::new(),
        }
    }

    fn tried(&mut self, upstream: &str, answer: &AddOutcome) {
        self.last = Some((upstream.to_owned(), None));
        if self.outcome != Some("refused") {
            self.outcome = Some(answer.label());
        }
    }

    fn refused_by(&mut self, upstream: &str, text: &str, kind: Refusal) {
        self.refusal = customer_error(kind, text);
        // Bounded: a refusal is a sentence, whatever an upstream sends.
        let text: String = text.chars().take(300).collect();
        self.refused.push(format!("{upstream} refused: {text}"));
    }

    /// The note on a rejected order: each upstream's refusal in its own words, then what the
    /// customer was told (the operator sees both in `order show` / `order list --json`).
    fn rejection_note(&self) -> String {
        if self.refused.is_empty() {
            return self.refusal.to_string();
        }
        format!(
            "{}; customer told: {}",
            self.refused.join("; "),
            self.refusal
        )
    }
}

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
            Err(e) => return (None, (None, None, Err(e.into()))),
        };
        // Funds are held and the order is on disk: only now does anything go upstream.
        let dispatched = self.place_upstream(&order, svc, fields, &group).await;
        // A `status` poll during the dispatch may have cached the order as it was.
        self.statuses.forget(order.id);
        (Some(order.id), dispatched)
    }

    /// Offers the order to each target that may take it until one places it or its outcome
    /// is unknown (never resent); if none does, the order is rejected and its funds released.
    async fn place_upstream(
        &self,
        order: &Order,
        svc: Arc<LocalService>,
        fields: OrderFields,
        group: &str,
    ) -> Dispatched {
        let mut tried = Attempts::new();
        for (i, (target, cost)) in svc.targets().enumerate() {
            let Some(upstream) = self.upstreams.get(&target.upstream) else {
                continue;
            };
            if !self.may_take(order, &svc, group, target, cost, upstream) {
                continue;
            }
            if i > 0 {
                let cost = cost.and_then(|rate| list_cost(rate, fields.billing(svc.kind())));
                let retargeted = self
                    .store
                    .retarget_order(order.id, &target.upstream, target.service, cost)
                    .await;
                if let Err(e) = retargeted {
                    return (tried.last, tried.outcome, Err(e.into()));
                }
            }
            let answer = upstream.add(target.service, &fields).await;
            tried.tried(&target.upstream, &answer);
            match answer {
                AddOutcome::Placed(upstream_order) => {
                    return self.placed(order, target, upstream_order).await;
                }
                AddOutcome::Unknown(why) => return self.unknown(order, target, &why, tried).await,
                AddOutcome::NotSent(why) => {
                    tracing::warn!(order = order.id, upstream = %target.upstream, reason = %why, "upstream add not sent");
                }
                AddOutcome::Rejected { text, refusal } => {
                    tracing::warn!(order = order.id, upstream = %target.upstream, refusal = %text, "upstream refused the order");
                    if refusal == Refusal::NotEnoughFunds {
                        tracing::error!(upstream = %target.upstream, "our account at the upstream is out of funds");
                    }
                    tried.refused_by(&target.upstream, &text, refusal);
                }
            }
        }
        self.rejected(order, tried).await
    }

    /// `target` placed the order as `upstream_order`: counted, and recorded on the order.
    async fn placed(&self, order: &Order, target: &Target, upstream_order: String) -> Dispatched {
        let m = &self.metrics;
        m.orders_placed.with_label_values(&[&target.upstream]).inc();
        m.revenue
            .with_label_values(&[&target.upstream])
            .inc_by(metrics::as_metric(money::from_units(order.charge)));
        self.record_placed(order, target, &upstream_order).await;
        (
            Some((target.upstream.clone(), Some(upstream_order))),
            Some("placed"),
            Ok(added(order)),
        )
    }

    /// The store write "placed, upstream order N". The customer's order exists upstream
    /// whatever the store says now, so they get its id; the upstream's id is never lost to a
    /// store failure ([`journal::record_placed_durably`]: journaled, then written again).
    async fn record_placed(&self, order: &Order, target: &Target, upstream_order: &str) {
        let placed = journal::Placed {
            order: order.id,
            upstream: target.upstream.clone(),
            upstream_order: upstream_order.to_owned(),
            at: now_ms(),
        };
        let (store, journal) = (self.store.clone(), self.journal.clone());
        journal::record_placed_durably(store, journal, self.metrics.clone(), placed).await;
    }

    /// `target` may or may not have placed the order: its funds stay held, and it is never
    /// sent again; the operator resolves it.
    async fn unknown(
        &self,
        order: &Order,
        target: &Target,
        why: &str,
        tried: Attempts,
    ) -> Dispatched {
        tracing::error!(order = order.id, upstream = %target.upstream, reason = %why, "upstream add outcome unknown: funds held, never resent; resolve with `panelgate order resolve`");
        let marked = self.store.mark_unknown(order.id, why, now_ms()).await;
        (
            tried.last,
            Some("unknown"),
            marked.map_err(Into::into).map(|()| added(order)),
        )
    }

    /// No target took the order: it is rejected and its funds released.
    async fn rejected(&self, order: &Order, tried: Attempts) -> Dispatched {
        let note = tried.rejection_note();
        let rejected = self.store.mark_rejected(order.id, &note, now_ms()).await;
        let refusal = tried.refusal;
        (
            tried.last,
            tried.outcome,
            rejected
                .map_err(Into::into)
                .and_then(|()| Err(refusal.into())),
        )
    }

    /// Whether `target` may take the order: its stated currency is the one the config
    /// expects, and the customer's rate covers what it costs us (docs/configuration.md,
    /// "Where each rule is checked").
    fn may_take(
        &self,
        order: &Order,
        svc: &LocalService,
        group: &str,
        target: &Target,
        cost: Option<Decimal>,
        upstream: &Upstream,
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

/// The reply to an `add` that left the order placed (or of unknown outcome): our order id.
fn added(order: &Order) -> Bytes {
    reply::to_bytes(&Added {
        order: order.id as u64,
    })
}

/// What an order billed as `billing` costs us at a target's list `rate`, in our units
/// (rounded up, as the upstream would round its charge).
fn list_cost(rate: Decimal, billing: Billing) -> Option<crate::store::Units> {
    money::charge(rate, billing).and_then(|c| money::to_units(money::round_up(c)))
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
