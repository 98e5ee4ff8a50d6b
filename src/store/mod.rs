//! Persistent state: customers, their ledger, orders and refills. One trait, so that the
//! SQLite store of a single instance and the PostgreSQL store of many share every rule.
//!
//! Money here is [`Units`]: integer 0.00001s of the gateway's currency. Every balance change is
//! a ledger entry written in the same transaction as the change that causes it, so a
//! customer's `balance` always equals the sum of their entries.

use async_trait::async_trait;

use crate::protocol::order::Drip;
use crate::protocol::{RefillStatus, Status};

/// Integer count of 0.00001 of the gateway's currency (see [`crate::money::to_units`]).
pub type Units = i64;

/// Unix time in milliseconds.
pub type Millis = i64;

/// SHA-256 of a customer's API key: what is stored and looked up, never the key.
pub type KeyHash = [u8; 32];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The change would take the balance below `-credit_limit`.
    #[error("not enough funds")]
    InsufficientFunds,
    /// The customer is disabled: no new orders (checked where the funds are held, so a
    /// gateway that still remembers the key cannot place one).
    #[error("customer disabled")]
    Disabled,
    #[error("{0} already exists")]
    Duplicate(String),
    /// The row is not in the state the change needs (e.g. resolving an order that is not
    /// `unknown`); nothing was written.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong whatever the rows hold (a negative charge, a number too
    /// large to store, a refund above the charge); nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// The database cannot be reached: no connection within the timeout, a broken or refused
    /// connection, the file cannot be opened or is locked by another connection past the busy
    /// timeout, the server shutting down. Nothing was written, and it is worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Another transaction got in the way (a deadlock, a serialization failure): this one was
    /// rolled back and may simply run again.
    #[error("database: {0}")]
    Contended(String),
    /// Any other database error, or a row that breaks the store's own invariants.
    #[error("database: {0}")]
    Backend(String),
    #[error("database migration: {0}")]
    Migration(String),
    /// Upstream orders held by more than one local order: the unique index on
    /// `(upstream, upstream_order)` cannot be created until the operator unlinks the extras.
    #[error("{}", shared_message(.0))]
    SharedUpstreamOrders(Vec<SharedUpstreamOrder>),
}

impl StoreError {
    /// Whether the database was unreachable (see [`StoreError::Unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// One upstream order that several local orders claim (each would be refunded for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedUpstreamOrder {
    pub upstream: String,
    pub upstream_order: String,
    /// The local orders holding it, oldest first.
    pub orders: Vec<i64>,
}

/// Names every shared upstream order, its local orders and the command that fixes it.
fn shared_message(shared: &[SharedUpstreamOrder]) -> String {
    let mut text = format!(
        "{} upstream order(s) are each held by more than one local order, so each would be \
         refunded more than once; panelgate will not start until one local order holds each:",
        shared.len()
    );
    for s in shared {
        let ids: Vec<String> = s.orders.iter().map(i64::to_string).collect();
        text.push_str(&format!(
            "\n  upstream {} order {}: local orders {}",
            s.upstream,
            s.upstream_order,
            ids.join(", ")
        ));
    }
    text.push_str(
        "\nFind which local order really is that upstream order (`panelgate order show ID`; \
         the customer's resends share service, link and quantity), then run \
         `panelgate order unlink ID` for each of the others (a placed one becomes `unknown` \
         for `panelgate order resolve`), and start again.",
    );
    text
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: i64,
    pub name: String,
    pub group: String,
    pub balance: Units,
    /// How far below zero the balance may go (0: prepaid only).
    pub credit_limit: Units,
    pub enabled: bool,
    pub created_at: Millis,
}

/// Why a ledger entry exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Operator adds funds (`client credit`, `client add --balance`).
    Credit,
    /// Operator removes funds (`client debit`).
    Debit,
    /// Funds held for an order when it is created.
    Charge,
    /// An order that was definitely not placed gives its held funds back.
    Release,
    /// Partial / Canceled refund, or an unknown order declared not placed.
    Refund,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Credit => "credit",
            EntryKind::Debit => "debit",
            EntryKind::Charge => "charge",
            EntryKind::Release => "release",
            EntryKind::Refund => "refund",
        }
    }

    pub fn parse(s: &str) -> Option<EntryKind> {
        Some(match s {
            "credit" => EntryKind::Credit,
            "debit" => EntryKind::Debit,
            "charge" => EntryKind::Charge,
            "release" => EntryKind::Release,
            "refund" => EntryKind::Refund,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: i64,
    pub customer_id: i64,
    /// Signed: credits, releases and refunds are positive; debits and charges negative.
    pub amount: Units,
    pub kind: EntryKind,
    pub order_id: Option<i64>,
    pub note: Option<String>,
    pub created_at: Millis,
}

/// Where an order is in its life (docs/operations.md, "Orders of unknown outcome").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderState {
    /// Funds held, the upstream `add` not yet answered.
    Dispatching,
    /// The upstream took it; sync follows it.
    Placed,
    /// Definitely not placed; funds released; the customer got an error.
    Rejected,
    /// The upstream `add` may or may not have happened; funds held; the operator resolves it.
    Unknown,
    /// Completed, Partial or Canceled, refund (if any) applied. Nothing changes any more.
    Final,
}

impl OrderState {
    pub const ALL: [OrderState; 5] = [
        OrderState::Dispatching,
        OrderState::Placed,
        OrderState::Rejected,
        OrderState::Unknown,
        OrderState::Final,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Dispatching => "dispatching",
            OrderState::Placed => "placed",
            OrderState::Rejected => "rejected",
            OrderState::Unknown => "unknown",
            OrderState::Final => "final",
        }
    }

    pub fn parse(s: &str) -> Option<OrderState> {
        OrderState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// An order about to be created, funds to be held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub customer_id: i64,
    /// The local service id the customer ordered.
    pub service: u64,
    /// The first target; fallbacks move it with [`Store::retarget_order`].
    pub upstream: String,
    pub upstream_service: u64,
    pub charge: Units,
    /// Units the charge covers, for pro-rata refunds (1 for packages).
    pub billed: u64,
    pub link: Option<String>,
    /// The forwarded order fields as a JSON object, for the operator.
    pub fields: String,
    /// The first target's list price for this order, in our units (see [`Order::list_cost`]).
    pub list_cost: Option<Units>,
    /// The local service's refill and cancel flags as the order is placed: what the order
    /// may ask for later, whatever the catalog says by then.
    pub can_refill: bool,
    pub can_cancel: bool,
    /// When the `add` for it must have ended, every target and retry included; fixed now, so
    /// that a reload shortening timeouts cannot cut a dispatch already running.
    pub dispatch_deadline: Millis,
    /// Drip-feed runs and interval as ordered (`billed` is then the per-run quantity × runs).
    pub drip: Option<Drip>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: i64,
    pub customer_id: i64,
    pub customer: String,
    pub service: u64,
    pub upstream: String,
    pub upstream_service: u64,
    /// The upstream's id for it: text, since some panels answer opaque ids ("ord_01HG…").
    pub upstream_order: Option<String>,
    pub state: OrderState,
    /// What the customer sees; `Pending` until the upstream says otherwise.
    pub status: Status,
    pub charge: Units,
    pub refunded: Units,
    pub billed: u64,
    pub remains: Option<i64>,
    pub start_count: Option<u64>,
    /// What the upstream charged us, in our currency, as last reported.
    pub cost: Option<Units>,
    pub link: Option<String>,
    pub fields: String,
    pub note: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// When the upstream's status was last applied.
    pub synced_at: Option<Millis>,
    /// Why a person must look at it, if they must.
    pub attention: Option<Attention>,
    /// The target's list price for the order in our units when it was placed.
    pub list_cost: Option<Units>,
    /// The first charge the upstream reported (in our units) while the order was not final.
    pub first_cost: Option<Units>,
    /// The service's flags when the order was placed (`None`: placed before they were kept).
    pub can_refill: Option<bool>,
    pub can_cancel: Option<bool>,
    /// When its dispatch must have ended (`None`: placed before it was kept).
    pub dispatch_deadline: Option<Millis>,
    /// When the upstream last reported a change (status, remains, start count).
    pub progress_at: Option<Millis>,
    /// Drip-feed runs and interval as ordered (`None`: not drip-feed, or placed before they
    /// were kept).
    pub drip: Option<Drip>,
    /// The runs the upstream last reported done (`None`: it never said).
    pub runs_done: Option<u64>,
    /// The child orders the upstream last listed for a drip-feed order, by its ids, for the
    /// operator (never shown to customers).
    pub child_orders: Vec<String>,
}

/// Why an order needs a person (one mark, one listing, one gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attention {
    /// The upstream `add` may or may not have happened (state `unknown`).
    UnknownOutcome,
    /// A package-billed Partial whose refund the upstream's figures cannot tell.
    RefundUnknown,
    /// Partial without `remains`: nothing was refunded automatically.
    PartialWithoutRemains,
    /// Placed and not final after `sync.stuck_after`.
    Stuck,
}

impl Attention {
    pub const ALL: [Attention; 4] = [
        Attention::UnknownOutcome,
        Attention::RefundUnknown,
        Attention::PartialWithoutRemains,
        Attention::Stuck,
    ];

    /// The marks [`Store::settle`] clears: orders that got no automatic refund and wait for a
    /// person to decide it.
    pub const SETTLEABLE: [Attention; 2] =
        [Attention::RefundUnknown, Attention::PartialWithoutRemains];

    pub fn as_str(self) -> &'static str {
        match self {
            Attention::UnknownOutcome => "unknown_outcome",
            Attention::RefundUnknown => "refund_unknown",
            Attention::PartialWithoutRemains => "partial_without_remains",
            Attention::Stuck => "stuck",
        }
    }

    pub fn parse(s: &str) -> Option<Attention> {
        Attention::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// What an upstream reported about one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    pub status: Status,
    pub remains: Option<i64>,
    pub start_count: Option<u64>,
    pub cost: Option<Units>,
    /// Drip-feed runs done, where the upstream says.
    pub runs: Option<u64>,
    /// A drip-feed order's child orders, where the upstream lists them (empty: not listed).
    pub child_orders: Vec<String>,
}

/// The effect of applying a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Refunded by this call (0 if none was due or it was applied before).
    pub refund: Units,
    /// This call moved the order to `Final`.
    pub finalized: bool,
    /// The mark this call left for the operator: a Partial refund the upstream's figures
    /// could not tell (nothing was refunded).
    pub attention: Option<Attention>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refill {
    pub id: i64,
    pub order_id: i64,
    pub customer_id: i64,
    pub upstream: String,
    pub upstream_refill: u64,
    pub status: RefillStatus,
    pub created_at: Millis,
    pub synced_at: Option<Millis>,
}

/// A claim on one batch of sync work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// Only rows last synced before this (or never).
    pub stale_before: Millis,
    pub now: Millis,
    /// Other instances leave the claimed rows alone until then.
    pub lease_until: Millis,
    pub limit: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFilter {
    pub customer: Option<String>,
    pub state: Option<OrderState>,
    /// Only orders that need the operator (for any reason, or for this one).
    pub attention: Option<AttentionFilter>,
    pub upstream: Option<String>,
    /// The local service id.
    pub service: Option<u64>,
    /// Created at or after.
    pub since: Option<Millis>,
    /// Created before.
    pub until: Option<Millis>,
    /// Only ids below this one: the cursor of a page (lists are newest first).
    pub before: Option<i64>,
    /// At most this many (all if `None`).
    pub limit: Option<u32>,
}

/// Which customers to list: names containing `contains`, after `after` (a page's cursor).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerSearch {
    pub contains: Option<String>,
    pub after: Option<String>,
    /// At most this many (all if `None`).
    pub limit: Option<u32>,
}

/// One change of an order's state or status, as the database recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderEvent {
    pub at: Millis,
    pub state: OrderState,
    pub status: Status,
    pub remains: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionFilter {
    Any,
    Only(Attention),
}

/// What the orders placed on one UTC day brought in and cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayMoney {
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    /// What was charged, less what was refunded (a rejected order's charge was released, so
    /// it brought nothing).
    pub revenue: Units,
    /// What the upstreams charged us for them, as last reported.
    pub cost: Units,
}

/// When a placed order that has not moved counts as stuck: `sync.stuck_after`, and the
/// services that override it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StuckCutoffs {
    /// Orders whose last progress (or creation) is before this are stuck.
    pub before: Millis,
    /// Local services with a cutoff of their own.
    pub services: Vec<(u64, Millis)>,
}

#[async_trait]
pub trait Store: admin::AdminStore + Send + Sync + 'static {
    // ---- customers ----

    /// Creates a customer; a non-zero `balance` is written as a `Credit` entry.
    async fn create_customer(
        &self,
        name: &str,
        key_hash: &KeyHash,
        group: &str,
        credit_limit: Units,
        balance: Units,
        now: Millis,
    ) -> Result<Customer>;

    /// The enabled-or-not customer whose key hashes to `hash`, with the stored hash (for the
    /// constant-time comparison the caller makes).
    async fn customer_by_key(&self, hash: &KeyHash) -> Result<Option<(Customer, KeyHash)>>;

    async fn customer_by_name(&self, name: &str) -> Result<Option<Customer>>;

    /// The customers `search` asks for, with their order counts, by name (bytewise).
    async fn list_customers(&self, search: &CustomerSearch) -> Result<Vec<(Customer, u64)>>;

    /// Operator credit (positive `amount`) or debit (negative). A debit may not take the
    /// balance below `-credit_limit`.
    async fn adjust_balance(
        &self,
        name: &str,
        amount: Units,
        note: Option<&str>,
        now: Millis,
    ) -> Result<Customer>;

    async fn set_enabled(&self, name: &str, enabled: bool) -> Result<()>;

    async fn set_key(&self, name: &str, key_hash: &KeyHash) -> Result<()>;

    async fn ledger(&self, customer_id: i64) -> Result<Vec<LedgerEntry>>;

    /// At most `limit` of the customer's entries below id `before` (any if `None`), newest
    /// first: a page of the ledger, read by the index.
    async fn ledger_page(
        &self,
        customer_id: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>>;

    /// The customer's balance right after their ledger entry `entry_id`: today's balance less
    /// the entries since, in one statement (so that a write in between cannot split the two),
    /// read by the index and costing the entries since, not the whole ledger.
    async fn balance_after(&self, customer_id: i64, entry_id: i64) -> Result<Units>;

    /// The entries one order caused (its charge, a release, refunds), oldest first.
    async fn order_ledger(&self, order_id: i64) -> Result<Vec<LedgerEntry>>;

    /// Every change of the order's state or status, oldest first (written by the database
    /// itself, in the transaction that made the change).
    async fn order_history(&self, order_id: i64) -> Result<Vec<OrderEvent>>;

    // ---- orders ----

    /// One transaction: checks `balance - charge >= -credit_limit`, inserts the order as
    /// `Dispatching`, writes the `Charge` entry and lowers the balance. The order is on disk
    /// when this returns.
    async fn create_order(&self, order: &NewOrder, now: Millis) -> Result<Order>;

    /// Moves a `Dispatching` order to its next target (fallback) before it is sent there.
    async fn retarget_order(
        &self,
        id: i64,
        upstream: &str,
        upstream_service: u64,
        list_cost: Option<Units>,
    ) -> Result<()>;

    /// `Dispatching` → `Placed` with the upstream's order id; status `Pending`.
    async fn mark_placed(&self, id: i64, upstream_order: &str, now: Millis) -> Result<()>;

    /// `Dispatching` → `Rejected`; a `Release` entry gives the charge back.
    async fn mark_rejected(&self, id: i64, note: &str, now: Millis) -> Result<()>;

    /// `Dispatching` → `Unknown`, marked for the operator; funds stay held.
    async fn mark_unknown(&self, id: i64, note: &str, now: Millis) -> Result<()>;

    /// Every order still `Dispatching` whose own dispatch deadline is before `deadline_before`
    /// (or, for orders created before deadlines were recorded, whose last change is before
    /// `updated_before`) becomes `Unknown`, marked for the operator: its dispatch cannot still
    /// be running (the process that ran it died). Returns how many.
    async fn recover_dispatching(
        &self,
        deadline_before: Millis,
        updated_before: Millis,
        now: Millis,
    ) -> Result<u64>;

    async fn order(&self, id: i64) -> Result<Option<Order>>;

    /// The orders among `ids` that belong to `customer_id` (others' are simply absent).
    async fn customer_orders(&self, customer_id: i64, ids: &[i64]) -> Result<Vec<Order>>;

    /// Newest first.
    async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<Order>>;

    /// Claims a batch of sync work: `Placed` orders at `upstream` whose status was last applied
    /// before `claim.stale_before` (or never) and that no other instance holds a lease on,
    /// least recently synced first. They are leased until `claim.lease_until`.
    async fn orders_to_sync(&self, upstream: &str, claim: &Claim) -> Result<Vec<Order>>;

    /// Applies an upstream status to a `Placed` order in one transaction. A final status
    /// moves it to `Final` and refunds exactly once: `Partial` the pro-rata rest
    /// ([`crate::money::partial_refund`] of charge, billed, remains), `Canceled` the whole
    /// charge. Applying to an order that is not `Placed` changes nothing. Applying releases the
    /// order's sync lease: it is fresh now, and due again after the next interval.
    async fn apply_status(&self, id: i64, update: &StatusUpdate, now: Millis) -> Result<Applied>;

    /// Applies each `(id, status)` of `batch` exactly as [`Store::apply_status`] would, all
    /// in one transaction (one commit for a polled batch, not one per order). An entry that
    /// cannot be applied (its order gone, its figures unstorable, its books broken) does not
    /// stop the others: the batch is then applied entry by entry, each in its own
    /// transaction. Returns each entry's result in `batch`'s order; the outer error only when
    /// the database is unavailable, and then nothing was written.
    async fn apply_statuses(
        &self,
        batch: &[(i64, StatusUpdate)],
        now: Millis,
    ) -> Result<Vec<Result<Applied>>>;

    /// Operator: an `Unknown` order was placed after all, as `upstream_order`. Refused (a
    /// conflict naming it) when another local order already holds that upstream order.
    async fn resolve_placed(&self, id: i64, upstream_order: &str, now: Millis) -> Result<()>;

    /// Operator: an `Unknown` order was not placed: `Final`, status `Canceled`, the whole
    /// charge refunded. Returns the refund.
    async fn resolve_not_placed(&self, id: i64, now: Millis) -> Result<Units>;

    /// Operator: settles a final order marked [`Attention::RefundUnknown`] or
    /// [`Attention::PartialWithoutRemains`] (which got no automatic refund) by refunding
    /// `refund` (0: nothing is owed), with `note` saying who and why on the ledger entry, and
    /// clears the mark, in one transaction. Refuses an order without such a mark and a refund
    /// above what is still refundable (`charge - refunded`). Returns the refund.
    async fn settle(&self, id: i64, refund: Units, note: &str, now: Millis) -> Result<Units>;

    /// Order counts by state, for metrics and `/readyz`.
    async fn count_orders_by_state(&self) -> Result<Vec<(OrderState, u64)>>;

    /// Orders not settled yet (`dispatching`, `placed` or `unknown`) counted by the upstream
    /// they are at, by name: a config must keep every upstream named here, or they would never
    /// be synced (nor refunded).
    async fn open_orders_by_upstream(&self) -> Result<Vec<(String, u64)>>;
    /// Orders that need the operator, counted by reason and upstream (non-zero counts only).
    async fn count_attention(&self) -> Result<Vec<(Attention, String, u64)>>;

    /// Revenue and cost of the orders placed since `since`, by UTC day of placing, oldest
    /// first; days without orders are absent.
    async fn money_by_day(&self, since: Millis) -> Result<Vec<DayMoney>>;

    /// Marks `stuck` every placed order without another mark whose last progress (or, if it
    /// never moved, its creation) is before its cutoff. Returns how many were marked. The
    /// mark goes when the order moves again or becomes final ([`Store::apply_status`]).
    async fn mark_stuck(&self, cutoffs: &StuckCutoffs, now: Millis) -> Result<u64>;

    /// Detaches order `id` from its upstream order: a placed one becomes `unknown`
    /// (`unknown_outcome`, funds held) for the operator to resolve; a final or unknown one
    /// only loses the id. `note` says why. Works while upstream orders are shared.
    async fn unlink_order(&self, id: i64, note: &str, now: Millis) -> Result<OrderState>;

    /// Replaces an order's operator note (what a person decided about it, and why).
    async fn note_order(&self, id: i64, note: &str, now: Millis) -> Result<()>;

    /// Creates the unique index on `(upstream, upstream_order)` once no upstream order is
    /// held by two local orders; if some are, creates nothing and fails with
    /// [`StoreError::SharedUpstreamOrders`] naming them. Opening a store calls it (the CLI
    /// works while it fails, so that `order unlink` can fix it); `serve` refuses to start.
    async fn unique_upstream_orders(&self) -> Result<()>;

    // ---- refills ----

    async fn create_refill(
        &self,
        order: &Order,
        upstream_refill: u64,
        now: Millis,
    ) -> Result<Refill>;

    /// The refills among `ids` that belong to `customer_id`.
    async fn customer_refills(&self, customer_id: i64, ids: &[i64]) -> Result<Vec<Refill>>;

    /// Claims unfinished refills at `upstream` as [`Store::orders_to_sync`] claims orders.
    async fn refills_to_sync(&self, upstream: &str, claim: &Claim) -> Result<Vec<Refill>>;

    async fn update_refill(&self, id: i64, status: RefillStatus, now: Millis) -> Result<()>;

    /// Checks that the database answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    /// Whether one gateway alone dispatches orders on this database (a SQLite file): then
    /// whatever is still dispatching when it starts was left by its own previous run, and is
    /// recovered at once rather than after its dispatch deadline.
    fn single_writer(&self) -> bool;
}

pub mod admin;
#[cfg(test)]
mod conformance;
#[cfg(test)]
mod conformance_admin;
mod engine;
pub mod postgres;
mod rows;
mod rules;
pub mod sqlite;
mod via_sqlx;

pub use rules::INTERRUPTED_NOTE;

/// Opens the store a database URL names (`sqlite://file.db`, `postgres://…` or
/// `postgresql://…`), applying migrations.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    open_per_core(url, 1).await
}

/// [`open`] for `cores` runtimes of the thread-per-core model: a PostgreSQL pool per runtime.
/// SQLite's connections run on threads of their own, so one pool serves every runtime.
pub async fn open_per_core(url: &str, cores: usize) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        return Ok(std::sync::Arc::new(sqlite::SqliteStore::open(url).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(std::sync::Arc::new(
            postgres::PostgresStore::open_per_core(url, cores).await?,
        ));
    }
    Err(StoreError::Invalid(format!(
        "unsupported database URL (expected sqlite://FILE or postgres://…): {}",
        url.split("://").next().unwrap_or("")
    )))
}

/// After migrating: the unique index on upstream orders, unless some are shared. Those do not
/// stop the store opening (they are logged): the CLI must open it to unlink them; `serve`
/// checks again and refuses to start.
pub(crate) async fn index_unless_shared(store: &dyn Store) -> Result<()> {
    match store.unique_upstream_orders().await {
        Err(e @ StoreError::SharedUpstreamOrders(_)) => {
            tracing::warn!("{e}");
            Ok(())
        }
        other => other,
    }
}
