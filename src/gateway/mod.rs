//! Where the catalog, the ledger and the upstreams meet: [`Gateway::handle`] admits a request
//! and hands its action to the module that answers it, one file per action family (`add`,
//! `status`, `refill` with `refill_status`, `cancel`, `account` for balance and services).
//!
//! Errors inside are typed ([`GatewayError`]); they become protocol replies in one place,
//! [`Gateway::handle`], which also keeps store and upstream details out of customers' sight.

mod account;
mod add;
mod cancel;
mod eligible;
mod forward;
mod refill;
mod request_log;
mod status;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::auth::{Authenticator, Caller};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::guard::{self, Allowance, Guard};
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::protocol::ApiRequest;
use crate::protocol::{Action, ProtocolError};
use crate::status_cache::StatusCache;
use crate::store::{Store, StoreError};
use crate::sync::Syncer;
use crate::upstream::Upstreams;

pub use forward::scrub;
pub use request_log::RequestLog;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("store: {0}")]
    Store(StoreError),
}

/// The store's refusals that are the customer's to hear become their protocol errors; the
/// rest stay store failures, which [`Gateway::handle`] logs and answers neutrally.
impl From<StoreError> for GatewayError {
    fn from(e: StoreError) -> GatewayError {
        match e {
            StoreError::InsufficientFunds => ProtocolError::NotEnoughFunds.into(),
            StoreError::Disabled => ProtocolError::InvalidKey.into(),
            e => GatewayError::Store(e),
        }
    }
}

type Result<T, E = GatewayError> = std::result::Result<T, E>;

/// A reply body as it goes on the wire; `gzip` says it is compressed (only ever when the
/// request allowed it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyBytes {
    pub bytes: Bytes,
    pub gzip: bool,
}

impl From<Bytes> for ReplyBytes {
    fn from(bytes: Bytes) -> ReplyBytes {
        ReplyBytes { bytes, gzip: false }
    }
}

/// Everything that answers API requests under one config; a reload builds a new one
/// ([`Gateway::reconfigured`]) and requests in flight finish under the old.
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
                        _ => Arc::new(crate::upstream::Upstream::new(
                            u,
                            self.metrics.clone(),
                            cfg.runtime.cores(),
                        )),
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
        log: &mut RequestLog,
    ) -> Result<ReplyBytes, ProtocolError> {
        match self.act(api, peer, log).await {
            Ok(body) => Ok(body),
            Err(GatewayError::Protocol(e)) => Err(e),
            Err(GatewayError::Store(e)) => {
                self.metrics.store_failed(store_operation(log.action), &e);
                tracing::error!(error = %e, action = log.action, "store failure");
                // The database away is a moment's unavailability, not our bug.
                Err(match e.is_unavailable() {
                    true => ProtocolError::Unavailable,
                    false => ProtocolError::Internal,
                })
            }
        }
    }

    async fn act(
        &self,
        api: &ApiRequest,
        peer: IpAddr,
        log: &mut RequestLog,
    ) -> Result<ReplyBytes> {
        self.guard.sweep();
        // Read first so that a refused request's log line says what it asked; a request that
        // cannot be read is told so only once its caller is known and admitted, as ever.
        let parsed = Action::parse(&api.params);
        if let Ok(action) = &parsed {
            log.asked(action);
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
        log.customer = Some(customer.clone());
        let over = self
            .guard
            .admit_client(&customer.group, customer.id, Allowance::of(&parsed))
            .err()
            .map(wait);
        log.admitted = over.is_none();
        match (parsed, over) {
            (Err(e), None) => Err(e.into()),
            (Err(_), Some(retry)) => Err(ProtocolError::TooManyRequests(retry).into()),
            (Ok(action), None) => self.answer(action, &customer, key, api, log).await,
            (Ok(action), Some(retry)) => {
                self.answer_over_limit(action, &customer, retry, api, log)
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
        log: &mut RequestLog,
    ) -> Result<ReplyBytes> {
        let body = match action {
            Action::Services => return Ok(self.services(customer, api, self.catalog.get().await)),
            Action::Balance => self.balance(key).await?,
            Action::Add { service } => self.add(customer, service, &api.params, log).await?,
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
        log: &mut RequestLog,
    ) -> Result<ReplyBytes> {
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
        log.admitted = true;
        log.outcome = Some("held_over_limit");
        Ok(body)
    }
}

/// The asked ids that can name a local order (ours are `i64`).
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
