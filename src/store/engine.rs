//! The one [`Store`]: every read, write and rule of the store, over an [`Engine`] that only
//! supplies connections, transactions and the few words of SQL its dialect says otherwise.
//!
//! A write is one transaction ([`Engine::begin`] … [`Engine::commit`]); each engine makes it
//! safe for money in its own way (SQLite takes the database's write lock before the first
//! read, PostgreSQL locks the rows it reads with [`Engine::LOCK`]), see their module
//! documentation. Every balance change goes through [`post`], which writes its ledger entry in
//! the same transaction.

use std::ops::DerefMut;
use std::time::Duration;

use async_trait::async_trait;

use super::rows::{self, Arg, Conn, Fields, Stmt, params};
use super::rules::{self, Books, Entry, INTERRUPTED_NOTE, opt_to_db, to_db};
use super::{
    Applied, Attention, AttentionFilter, Claim, Customer, CustomerSearch, DayMoney, EntryKind,
    KeyHash, LedgerEntry, Millis, NewOrder, Order, OrderEvent, OrderFilter, OrderState, Refill,
    Result, StatusUpdate, Store, StoreError, StuckCutoffs, Units,
};
use crate::protocol::{RefillStatus, Status};

/// What a database brings to the store: connections, transactions, and its dialect.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    type Conn: Conn;
    /// A connection for reads outside a transaction.
    type Read: DerefMut<Target = Self::Conn> + Send;
    /// An open write transaction; dropped without [`Engine::commit`], it rolls back.
    type Tx: Send;

    /// Appended to a `SELECT` of rows the transaction goes on to change: locks them until
    /// commit where the engine locks rows ("" where the transaction already excludes every
    /// other writer).
    const LOCK: &'static str;
    /// The `ORDER BY` of customers by name, bytewise.
    const BY_NAME: &'static str;
    /// The function `F(text, part)` that answers where `part` starts in `text` (0: nowhere).
    const FIND: &'static str;
    /// Counts (0 or 1) the unique index on upstream orders.
    const INDEXED: &'static str;
    /// Run before checking for shared upstream orders and creating the index, so that no
    /// order takes a shared id in between (and instances starting together take turns).
    const INDEX_LOCKS: &'static [&'static str];
    /// How often a transaction that another got in the way of is run again.
    const RETRIES: u32;
    /// See [`Store::single_writer`].
    const SINGLE_WRITER: bool;

    /// Appended to the `SELECT` that claims a batch of sync work from the table called
    /// `alias` in it: rows another claim is taking right now are skipped, not waited for.
    fn claim(alias: &str) -> String;

    async fn read(&self) -> Result<Self::Read>;
    async fn begin(&self) -> Result<Self::Tx>;
    fn conn(tx: &mut Self::Tx) -> &mut Self::Conn;
    /// Commits; returns once the commit is durable.
    async fn commit(&self, tx: Self::Tx) -> Result<()>;
}

/// The first retry waits about this long; each further one twice as long (plus jitter).
const BACKOFF: Duration = Duration::from_millis(5);

pub(super) async fn backoff(attempt: u32) {
    let base = BACKOFF.saturating_mul(1 << attempt.saturating_sub(1).min(8));
    let base_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX).max(1);
    // Jitter, so that the transactions that collided do not collide again.
    let jitter = getrandom::u64().map(|r| r % base_ms).unwrap_or(0);
    tokio::time::sleep(base + Duration::from_millis(jitter)).await;
}

/// Runs `$body` (a future using the connection `$c`) in a transaction of engine `E` and
/// commits it, running the whole transaction again when another one got in its way
/// ([`StoreError::Contended`]). Any other error rolls back (the transaction is dropped).
macro_rules! transaction {
    ($engine:expr, |$c:ident| $body:expr) => {{
        let mut attempt: u32 = 0;
        loop {
            let result = async {
                let mut tx = $engine.begin().await?;
                let value = {
                    let $c = E::conn(&mut tx);
                    $body.await?
                };
                $engine.commit(tx).await?;
                Ok::<_, StoreError>(value)
            }
            .await;
            match result {
                Err(e @ StoreError::Contended(_)) if attempt < E::RETRIES => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "retrying a transaction");
                    backoff(attempt).await;
                }
                result => break result,
            }
        }
    }};
}
pub(super) use transaction;

/// At most this many ids in one `IN (…)` list.
const IN_CHUNK: usize = 500;

/// Order counts by upstream for the orders not settled yet.
const OPEN_ORDERS_BY_UPSTREAM: &str = "SELECT upstream, COUNT(*) AS n FROM orders \
     WHERE state IN ('dispatching', 'placed', 'unknown') GROUP BY upstream ORDER BY upstream";

/// Orders needing the operator by reason and upstream.
const COUNT_ATTENTION: &str = "SELECT attention, upstream, COUNT(*) AS n FROM orders \
     WHERE attention IS NOT NULL GROUP BY attention, upstream";

/// Revenue and cost by UTC day of placing (see [`DayMoney`]). `SUM` is cast back to an integer:
/// PostgreSQL sums a `BIGINT` as `NUMERIC`.
const MONEY_BY_DAY: &str = "SELECT created_at / 86400000 AS day, \
     CAST(SUM(CASE WHEN state = 'rejected' THEN 0 ELSE charge - refunded END) AS BIGINT) \
     AS revenue, CAST(SUM(COALESCE(cost, 0)) AS BIGINT) AS cost FROM orders \
     WHERE created_at >= $1 GROUP BY created_at / 86400000 ORDER BY day";

/// Every local order sharing its upstream order.
const SHARED_UPSTREAM_ORDERS: &str = "SELECT upstream, upstream_order, id FROM orders \
     WHERE upstream_order IS NOT NULL AND (upstream, upstream_order) IN \
     (SELECT upstream, upstream_order FROM orders WHERE upstream_order IS NOT NULL \
      GROUP BY upstream, upstream_order HAVING COUNT(*) > 1) \
     ORDER BY upstream, upstream_order, id";

/// One upstream order, one local order: created once no upstream order is shared.
const UNIQUE_UPSTREAM_ORDER_INDEX: &str = "CREATE UNIQUE INDEX IF NOT EXISTS \
     orders_upstream_order_unique ON orders (upstream, upstream_order) \
     WHERE upstream_order IS NOT NULL";

/// The statuses a refill can still leave, as an SQL list of literals (`'Pending', …`):
/// written into the statements rather than bound, so that the planner can match them with the
/// partial index `refills_sync`. They are the crate's own constants, never input.
fn open_refills() -> String {
    rules::open_refill_statuses()
        .into_iter()
        .map(|s| format!("'{}'", s.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- money ----

/// Moves `entry.amount` into (positive) or out of (negative) a customer's balance and writes
/// the ledger entry for it: the only way the store changes a balance. Money out may not take
/// the balance below `-credit_limit`: checked on the row as this transaction holds it, and
/// again by the guarded `UPDATE` (and the table's `CHECK` behind it). Runs inside a write.
pub(super) async fn post<C: Conn>(c: &mut C, lock: &str, entry: &Entry<'_>) -> Result<()> {
    let row = c
        .fetch_optional(
            Stmt::new(format!(
                "SELECT balance, credit_limit FROM customers WHERE id = $1{lock}"
            ))
            .bind(entry.customer_id),
        )
        .await?
        .ok_or(StoreError::NotFound)?;
    entry.apply(row.i64("balance")?, row.i64("credit_limit")?)?;
    let changed = c
        .execute(
            Stmt::new(
                "UPDATE customers SET balance = balance + $1, order_count = order_count + $3 \
                 WHERE id = $2 AND (balance + $1 >= -credit_limit OR $1 >= 0)",
            )
            .bind(entry.amount)
            .bind(entry.customer_id)
            // Every order has exactly one charge entry: the listings' order count moves with it.
            .bind(i64::from(entry.kind == EntryKind::Charge)),
        )
        .await?;
    if changed != 1 {
        return Err(StoreError::InsufficientFunds);
    }
    let insert = Stmt::new(
        "INSERT INTO ledger (customer_id, amount, kind, order_id, note, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(entry.customer_id)
    .bind(entry.amount)
    .bind(entry.kind.as_str())
    .bind(entry.order_id)
    .bind(entry.note)
    .bind(entry.now);
    match c.execute(insert).await {
        Err(StoreError::Duplicate(_)) => Err(StoreError::Duplicate(format!(
            "a {} entry for order {}",
            entry.kind.as_str(),
            entry.order_id.unwrap_or_default()
        ))),
        other => other.map(drop),
    }
}

/// A refund of `refund` on order `id` of `customer_id`, if there is one.
async fn refund<C: Conn>(
    c: &mut C,
    lock: &str,
    order: (i64, i64),
    refund: Units,
    note: &str,
    now: Millis,
) -> Result<()> {
    if refund <= 0 {
        return Ok(());
    }
    let (id, customer_id) = order;
    let entry = Entry {
        customer_id,
        amount: refund,
        kind: EntryKind::Refund,
        order_id: Some(id),
        note: Some(note),
        now,
    };
    post(c, lock, &entry).await
}

// ---- reads ----

async fn fetch_order<C: Conn>(c: &mut C, id: i64) -> Result<Option<Order>> {
    let sql = format!("{} WHERE o.id = $1", rows::order_select());
    let row = c.fetch_optional(Stmt::new(sql).bind(id)).await?;
    row.as_ref().map(rows::order).transpose()
}

pub(super) async fn fetch_customer<C: Conn>(
    c: &mut C,
    by: &str,
    key: rows::Arg,
) -> Result<Option<Customer>> {
    let sql = format!(
        "SELECT {} FROM customers c WHERE c.{by} = $1",
        rows::CUSTOMER_COLUMNS
    );
    let row = c.fetch_optional(Stmt::new(sql).bind(key)).await?;
    row.as_ref().map(rows::customer).transpose()
}

pub(super) async fn customer_by_id<C: Conn>(c: &mut C, id: i64) -> Result<Customer> {
    fetch_customer(c, "id", id.into())
        .await?
        .ok_or(StoreError::NotFound)
}

/// Why a guarded transition of order `id` out of `expected` changed no row.
async fn not_in_state<C: Conn>(c: &mut C, id: i64, expected: OrderState) -> StoreError {
    let row = c
        .fetch_optional(Stmt::new("SELECT state FROM orders WHERE id = $1").bind(id))
        .await;
    match row.and_then(|row| row.as_ref().map(Fields::state).transpose()) {
        Ok(found) => rules::not_in_state(id, found, expected),
        Err(e) => e,
    }
}

/// Runs a guarded transition of order `id` out of `expected`; no row changed means the order
/// is missing or in another state, which is told apart for the caller.
async fn transition<C: Conn>(c: &mut C, id: i64, expected: OrderState, stmt: Stmt) -> Result<()> {
    if c.execute(stmt).await? != 1 {
        return Err(not_in_state(c, id, expected).await);
    }
    Ok(())
}

/// The rows `sql` returns with `ids` appended as an `IN (…)` list (after `args`), in chunks.
async fn fetch_in<C: Conn, T>(
    c: &mut C,
    sql: impl Fn(&str) -> String,
    args: &[rows::Arg],
    ids: &[i64],
    map: fn(&C::Row) -> Result<T>,
) -> Result<Vec<T>> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IN_CHUNK) {
        let mut stmt = Stmt::new(sql(&params(args.len() + 1, chunk.len())));
        stmt.args.extend(args.iter().cloned());
        for id in chunk {
            stmt = stmt.bind(*id);
        }
        for row in c.fetch_all(stmt).await? {
            found.push(map(&row)?);
        }
    }
    Ok(found)
}

/// Leases the claimed rows of `table` until `until`.
async fn lease<C: Conn>(c: &mut C, table: &str, ids: &[i64], until: Millis) -> Result<()> {
    for chunk in ids.chunks(IN_CHUNK) {
        let sql = format!(
            "UPDATE {table} SET lease_until = $1 WHERE id IN ({})",
            params(2, chunk.len())
        );
        let mut stmt = Stmt::new(sql).bind(until);
        for id in chunk {
            stmt = stmt.bind(*id);
        }
        c.execute(stmt).await?;
    }
    Ok(())
}

fn counts(rows: &[impl Fields]) -> Result<Vec<(OrderState, u64)>> {
    // Every state, zeros included, so that a gauge drops back to 0.
    let mut counts: Vec<(OrderState, u64)> = OrderState::ALL.into_iter().map(|s| (s, 0)).collect();
    for row in rows {
        let state = row.state()?;
        let n = row.u64("n")?;
        if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == state) {
            slot.1 = n;
        }
    }
    Ok(counts)
}

// ---- customers ----

/// A customer about to be created, as [`Store::create_customer`] takes it.
struct NewCustomer<'a> {
    name: &'a str,
    key_hash: &'a KeyHash,
    group: &'a str,
    credit_limit: Units,
    balance: Units,
    now: Millis,
}

async fn create_customer_in<C: Conn>(c: &mut C, new: &NewCustomer<'_>) -> Result<Customer> {
    let insert = Stmt::new(
        "INSERT INTO customers (name, key_hash, grp, credit_limit, balance, enabled, created_at) \
         VALUES ($1, $2, $3, $4, 0, TRUE, $5) RETURNING id",
    )
    .bind(new.name)
    .bind(&new.key_hash[..])
    .bind(new.group)
    .bind(new.credit_limit)
    .bind(new.now);
    let id = match c.fetch_optional(insert).await {
        Ok(row) => row
            .ok_or_else(|| rules::broken("an insert returned no row".into()))?
            .i64("id")?,
        Err(StoreError::Duplicate(constraint)) if constraint.contains("key_hash") => {
            return Err(StoreError::Duplicate("a customer with this API key".into()));
        }
        Err(StoreError::Duplicate(_)) => {
            return Err(StoreError::Duplicate(format!("customer {:?}", new.name)));
        }
        Err(e) => return Err(e),
    };
    // The opening balance goes through the ledger like any other change (a negative one,
    // if ever given, as a debit within the credit limit).
    if new.balance != 0 {
        let entry = Entry::adjustment(id, new.balance, Some("opening balance"), new.now);
        post(c, "", &entry).await?;
    }
    customer_by_id(c, id).await
}

pub(super) async fn adjust_balance_in<C: Conn>(
    c: &mut C,
    lock: &str,
    name: &str,
    amount: Units,
    note: Option<&str>,
    now: Millis,
) -> Result<Customer> {
    let id = fetch_customer(c, "name", name.into())
        .await?
        .ok_or(StoreError::NotFound)?
        .id;
    // Zero changes nothing, so it writes nothing.
    if amount != 0 {
        post(c, lock, &Entry::adjustment(id, amount, note, now)).await?;
    }
    customer_by_id(c, id).await
}

async fn set_customer<C: Conn>(c: &mut C, set: &str, value: rows::Arg, name: &str) -> Result<()> {
    let stmt = Stmt::new(format!("UPDATE customers SET {set} = $1 WHERE name = $2"))
        .bind(value)
        .bind(name);
    match c.execute(stmt).await {
        Ok(1) => Ok(()),
        Ok(_) => Err(StoreError::NotFound),
        Err(StoreError::Duplicate(_)) => {
            Err(StoreError::Duplicate("a customer with this API key".into()))
        }
        Err(e) => Err(e),
    }
}

// ---- orders ----

/// The values of a [`NewOrder`] as stored.
struct OrderRow<'a> {
    order: &'a NewOrder,
    service: i64,
    upstream_service: i64,
    billed: i64,
    drip_runs: Option<i64>,
    drip_interval: Option<i64>,
}

impl OrderRow<'_> {
    fn new(order: &NewOrder) -> Result<OrderRow<'_>> {
        if order.charge < 0 {
            return Err(StoreError::Invalid(format!(
                "charge {} is negative",
                order.charge
            )));
        }
        Ok(OrderRow {
            order,
            service: to_db(order.service, "service")?,
            upstream_service: to_db(order.upstream_service, "upstream service")?,
            billed: to_db(order.billed, "billed quantity")?,
            drip_runs: opt_to_db(order.drip.map(|d| d.runs), "runs")?,
            drip_interval: opt_to_db(order.drip.map(|d| d.interval), "interval")?,
        })
    }

    fn insert(&self, now: Millis) -> Stmt {
        let order = self.order;
        Stmt::new(
            "INSERT INTO orders (customer_id, service, upstream, upstream_service, state, \
             status, charge, refunded, billed, link, fields, created_at, updated_at, list_cost, \
             can_refill, can_cancel, dispatch_deadline, drip_runs, drip_interval) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $11, $12, $13, $14, $15, \
             $16, $17) RETURNING id",
        )
        .bind(order.customer_id)
        .bind(self.service)
        .bind(&order.upstream)
        .bind(self.upstream_service)
        .bind(OrderState::Dispatching.as_str())
        .bind(Status::Pending.as_str())
        .bind(order.charge)
        .bind(self.billed)
        .bind(&order.link)
        .bind(&order.fields)
        .bind(now)
        .bind(order.list_cost)
        .bind(order.can_refill)
        .bind(order.can_cancel)
        .bind(order.dispatch_deadline)
        .bind(self.drip_runs)
        .bind(self.drip_interval)
    }
}

async fn create_order_in<C: Conn>(
    c: &mut C,
    lock: &str,
    new: &OrderRow<'_>,
    now: Millis,
) -> Result<Order> {
    let order = new.order;
    // The customer's row is this transaction's until commit: other orders for this customer
    // wait, then read the balance as it is after the ones before them. An order that does not
    // fit is refused before anything is inserted (so it takes no id); `post` checks again
    // when it moves the money.
    let sql = format!("SELECT balance, credit_limit, enabled FROM customers WHERE id = $1{lock}");
    let row = c
        .fetch_optional(Stmt::new(sql).bind(order.customer_id))
        .await?
        .ok_or(StoreError::NotFound)?;
    let enabled = row.flag("enabled")?.unwrap_or(false);
    rules::check_order_fits(
        row.i64("balance")?,
        row.i64("credit_limit")?,
        enabled,
        order.charge,
    )?;
    let id = c
        .fetch_optional(new.insert(now))
        .await?
        .ok_or_else(|| rules::broken("an insert returned no row".into()))?
        .i64("id")?;
    // The charge entry is written even for a zero charge (per-post billing): it is the
    // record that the order took its funds.
    let charge = Entry {
        customer_id: order.customer_id,
        amount: -order.charge,
        kind: EntryKind::Charge,
        order_id: Some(id),
        note: None,
        now,
    };
    post(c, lock, &charge).await?;
    fetch_order(c, id)
        .await?
        .ok_or_else(|| rules::broken(format!("order {id} vanished as it was created")))
}

async fn mark_rejected_in<C: Conn>(
    c: &mut C,
    lock: &str,
    id: i64,
    note: &str,
    now: Millis,
) -> Result<()> {
    let stmt = Stmt::new(
        "UPDATE orders SET state = 'rejected', note = $1, updated_at = $2 \
         WHERE id = $3 AND state = 'dispatching' RETURNING customer_id, charge",
    )
    .bind(note)
    .bind(now)
    .bind(id);
    let Some(row) = c.fetch_optional(stmt).await? else {
        return Err(not_in_state(c, id, OrderState::Dispatching).await);
    };
    // `refunded` stays 0: a release is not a refund, the order simply never cost anything.
    let release = Entry {
        customer_id: row.i64("customer_id")?,
        amount: row.i64("charge")?,
        kind: EntryKind::Release,
        order_id: Some(id),
        note: Some(note),
        now,
    };
    post(c, lock, &release).await
}

/// The parts of a status update as stored.
struct Reported<'a> {
    update: &'a StatusUpdate,
    start_count: Option<i64>,
    runs: Option<i64>,
    children: Option<String>,
}

impl Reported<'_> {
    fn new(update: &StatusUpdate) -> Result<Reported<'_>> {
        Ok(Reported {
            update,
            start_count: opt_to_db(update.start_count, "start count")?,
            runs: opt_to_db(update.runs, "runs")?,
            children: rules::child_orders_to_db(&update.child_orders),
        })
    }

    /// `$1` to `$6` of both updates below: what the upstream reported.
    fn stmt(&self, sql: String) -> Stmt {
        Stmt::new(sql)
            .bind(self.update.status.as_str())
            .bind(self.update.remains)
            .bind(self.start_count)
            .bind(self.update.cost)
            .bind(self.runs)
            .bind(&self.children)
    }
}

// `remains` is stored as reported, since a refund is computed from it; `start_count`, `cost`,
// runs and child orders are informational and keep their last known value if the upstream
// omitted them this time.
const REPORTED: &str = "status = $1, remains = $2, start_count = COALESCE($3, start_count), \
     cost = COALESCE($4, cost), runs_done = COALESCE($5, runs_done), \
     child_orders = COALESCE($6, child_orders), lease_until = NULL";

/// A running status on placed order `id` (its `row` as read): no money moves.
async fn apply_running<C: Conn>(
    c: &mut C,
    id: i64,
    row: &C::Row,
    reported: &Reported<'_>,
    now: Millis,
) -> Result<Applied> {
    let update = reported.update;
    // Progress restarts the stuck clock and lifts a stuck mark. The first positive charge
    // while running is the upstream's own cost for the order, the base of the share a
    // Partial package gets back.
    let moved = rules::moved(
        row.status()?,
        row.int("remains")?,
        row.opt_u64("start_count")?,
        update,
    );
    let running = format!(
        "UPDATE orders SET {REPORTED}, first_cost = COALESCE(first_cost, $7), \
         synced_at = $8, updated_at = $8, \
         progress_at = CASE WHEN $9 THEN $8 ELSE progress_at END, \
         attention = CASE WHEN $9 AND attention = 'stuck' THEN NULL ELSE attention END \
         WHERE id = $10 AND state = 'placed'"
    );
    let stmt = reported
        .stmt(running)
        .bind(update.cost.filter(|&c| c > 0))
        .bind(now)
        .bind(moved)
        .bind(id);
    c.execute(stmt).await?;
    Ok(Applied::default())
}

async fn apply_status_in<C: Conn>(
    c: &mut C,
    lock: &str,
    id: i64,
    reported: &Reported<'_>,
    now: Millis,
) -> Result<Applied> {
    let update = reported.update;
    let sql = format!(
        "SELECT customer_id, state, status, charge, refunded, billed, remains, start_count, \
         first_cost, list_cost FROM orders WHERE id = $1{lock}"
    );
    let row = c
        .fetch_optional(Stmt::new(sql).bind(id))
        .await?
        .ok_or(StoreError::NotFound)?;
    if row.state()? != OrderState::Placed {
        // Dispatching, unknown, rejected, or already final (another sync got there first):
        // nothing to do.
        return Ok(Applied::default());
    }
    if !update.status.is_final() {
        return apply_running(c, id, &row, reported, now).await;
    }
    let books = Books {
        charge: row.i64("charge")?,
        refunded: row.i64("refunded")?,
        billed: row.u64("billed")?,
        first_cost: row.int("first_cost")?,
        list_cost: row.int("list_cost")?,
    };
    let (due, mark) = rules::refund_due(update.status, &books, update.remains, update.cost)?;
    books.assert_refund(due)?;
    // A final order is no longer stuck; it may need a person for its refund instead.
    let finished = format!(
        "UPDATE orders SET state = 'final', {REPORTED}, refunded = refunded + $7, \
         attention = $8, synced_at = $9, updated_at = $9, progress_at = $9 \
         WHERE id = $10 AND state = 'placed'"
    );
    let stmt = reported
        .stmt(finished)
        .bind(due)
        .bind(mark.map(Attention::as_str))
        .bind(now)
        .bind(id);
    transition(c, id, OrderState::Placed, stmt).await?;
    let customer_id = row.i64("customer_id")?;
    refund(c, lock, (id, customer_id), due, update.status.as_str(), now).await?;
    Ok(Applied {
        refund: due,
        finalized: true,
        attention: mark,
    })
}

/// Applies every `(id, status)` of `batch` as [`apply_status_in`] does, in the one
/// transaction `c` is in; the first entry that fails ends it (so the caller rolls it all
/// back). Returns what each entry did, in `batch`'s order.
async fn apply_batch_in<C: Conn>(
    c: &mut C,
    lock: &str,
    batch: &[(i64, Reported<'_>)],
    now: Millis,
) -> Result<Vec<Applied>> {
    // Every order of the batch is locked first, in id order, then the entries are applied
    // customer by customer. Each write takes its orders before its customers, each in
    // ascending order, so two batches refunding the same customers (two instances, or a
    // pass beside a `status`) wait for each other instead of deadlocking.
    let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
    let owners: std::collections::HashMap<i64, i64> = fetch_in(
        c,
        |ids| format!("SELECT id, customer_id FROM orders WHERE id IN ({ids}) ORDER BY id{lock}"),
        &[],
        &ids,
        |row| Ok((row.i64("id")?, row.i64("customer_id")?)),
    )
    .await?
    .into_iter()
    .collect();
    let mut turns: Vec<usize> = (0..batch.len()).collect();
    turns.sort_by_key(|&i| (owners.get(&batch[i].0).copied(), batch[i].0));
    let mut applied = vec![Applied::default(); batch.len()];
    for i in turns {
        let (id, reported) = &batch[i];
        applied[i] = apply_status_in(c, lock, *id, reported, now).await?;
    }
    Ok(applied)
}

/// [`Store::apply_statuses`] on engine `E`: the batch in one transaction; should any entry
/// fail, each entry again in a transaction of its own, so that one order that cannot be
/// applied neither holds back the others nor hides its own error. Errors are rare (an order
/// gone, books that do not add up), so the common case pays one commit and no savepoints.
async fn apply_statuses_in<E: Engine>(
    engine: &E,
    batch: &[(i64, StatusUpdate)],
    now: Millis,
) -> Result<Vec<Result<Applied>>> {
    let mut results: Vec<Option<Result<Applied>>> = Vec::with_capacity(batch.len());
    let mut valid = Vec::with_capacity(batch.len());
    let mut slots = Vec::with_capacity(batch.len());
    for (i, (id, update)) in batch.iter().enumerate() {
        match Reported::new(update) {
            Ok(reported) => {
                valid.push((*id, reported));
                slots.push(i);
                results.push(None);
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    let outcome: Vec<Result<Applied>> = match transaction!(engine, |c| apply_batch_in(
        c,
        E::LOCK,
        &valid,
        now
    )) {
        Ok(applied) => applied.into_iter().map(Ok).collect(),
        // Nothing was written, and one by one would only wait for the database again.
        Err(e) if e.is_unavailable() => return Err(e),
        Err(e) => {
            tracing::debug!(orders = valid.len(), error = %e, "a batch of statuses failed; applying them one by one");
            let mut one_by_one = Vec::with_capacity(valid.len());
            for (id, reported) in &valid {
                let id = *id;
                one_by_one.push(transaction!(engine, |c| apply_status_in(
                    c,
                    E::LOCK,
                    id,
                    reported,
                    now
                )));
            }
            one_by_one
        }
    };
    for (slot, result) in slots.into_iter().zip(outcome) {
        results[slot] = Some(result);
    }
    Ok(results.into_iter().flatten().collect())
}

async fn resolve_placed_in<C: Conn>(
    c: &mut C,
    id: i64,
    upstream_order: &str,
    now: Millis,
) -> Result<()> {
    let holder = Stmt::new(
        "SELECT h.id AS id, h.upstream AS upstream FROM orders o JOIN orders h \
         ON h.upstream = o.upstream AND h.upstream_order = $1 AND h.id <> o.id \
         WHERE o.id = $2 ORDER BY h.id LIMIT 1",
    )
    .bind(upstream_order)
    .bind(id);
    if let Some(h) = c.fetch_optional(holder).await? {
        let upstream = h.string("upstream")?;
        return Err(rules::already_held(&upstream, upstream_order, h.i64("id")?));
    }
    let stmt = Stmt::new(
        "UPDATE orders SET state = 'placed', upstream_order = $1, status = $2, \
         synced_at = NULL, attention = NULL, updated_at = $3 \
         WHERE id = $4 AND state = 'unknown'",
    )
    .bind(upstream_order)
    .bind(Status::Pending.as_str())
    .bind(now)
    .bind(id);
    transition(c, id, OrderState::Unknown, stmt).await
}

/// The books and customer of order `id`, its row locked where the engine locks rows.
async fn books_of<C: Conn>(c: &mut C, lock: &str, id: i64) -> Result<(C::Row, Books)> {
    let sql = format!(
        "SELECT customer_id, state, charge, refunded, attention FROM orders WHERE id = $1{lock}"
    );
    let row = c
        .fetch_optional(Stmt::new(sql).bind(id))
        .await?
        .ok_or(StoreError::NotFound)?;
    let books = Books {
        charge: row.i64("charge")?,
        refunded: row.i64("refunded")?,
        ..Books::default()
    };
    Ok((row, books))
}

async fn resolve_not_placed_in<C: Conn>(
    c: &mut C,
    lock: &str,
    id: i64,
    now: Millis,
) -> Result<Units> {
    let (row, books) = books_of(c, lock, id).await?;
    let state = row.state()?;
    if state != OrderState::Unknown {
        return Err(rules::not_in_state(id, Some(state), OrderState::Unknown));
    }
    let (due, _) = rules::refund_due(Status::Canceled, &books, None, None)?;
    books.assert_refund(due)?;
    let stmt = Stmt::new(
        "UPDATE orders SET state = 'final', status = $1, refunded = refunded + $2, \
         attention = NULL, updated_at = $3 WHERE id = $4 AND state = 'unknown'",
    )
    .bind(Status::Canceled.as_str())
    .bind(due)
    .bind(now)
    .bind(id);
    transition(c, id, OrderState::Unknown, stmt).await?;
    let order = (id, row.i64("customer_id")?);
    refund(c, lock, order, due, "resolved: not placed", now).await?;
    Ok(due)
}

async fn settle_in<C: Conn>(
    c: &mut C,
    lock: &str,
    id: i64,
    amount: Units,
    note: &str,
    now: Millis,
) -> Result<Units> {
    let (row, books) = books_of(c, lock, id).await?;
    rules::check_settle(id, &books, row.attention()?, amount)?;
    books.assert_refund(amount)?;
    let stmt = Stmt::new(
        "UPDATE orders SET refunded = refunded + $1, attention = NULL, updated_at = $2 \
         WHERE id = $3 AND state = 'final' AND attention IN ($4, $5)",
    )
    .bind(amount)
    .bind(now)
    .bind(id)
    .bind(Attention::SETTLEABLE[0].as_str())
    .bind(Attention::SETTLEABLE[1].as_str());
    transition(c, id, OrderState::Final, stmt).await?;
    let order = (id, row.i64("customer_id")?);
    refund(c, lock, order, amount, &rules::settle_note(note), now).await?;
    Ok(amount)
}

/// What a claim of sync work selects, and how it reads what it claimed.
struct Batch<E: Engine, T> {
    sql: String,
    table: &'static str,
    map: fn(&<E::Conn as Conn>::Row) -> Result<T>,
    id: fn(&T) -> i64,
}

/// Claims the batch of sync work that `sql` selects from `table` (`$1` the upstream, `$2`
/// stale before, `$3` now, `$4` the batch size) and leases it, in a transaction of its own.
async fn claim_work<E: Engine, T: Send>(
    engine: &E,
    batch: Batch<E, T>,
    upstream: &str,
    claim: &Claim,
) -> Result<Vec<T>> {
    let Batch {
        sql,
        table,
        map,
        id,
    } = batch;
    let sql = &sql;
    transaction!(engine, |c| async move {
        let stmt = Stmt::new(sql.clone())
            .bind(upstream)
            .bind(claim.stale_before)
            .bind(claim.now)
            .bind(i64::from(claim.limit));
        let rows = c.fetch_all(stmt).await?;
        let claimed: Vec<T> = rows.iter().map(map).collect::<Result<_>>()?;
        let ids: Vec<i64> = claimed.iter().map(id).collect();
        lease(c, table, &ids, claim.lease_until).await?;
        Ok::<_, StoreError>(claimed)
    })
}

fn orders_to_claim<E: Engine>() -> Batch<E, Order> {
    let claim_lock = E::claim("o");
    let sql = format!(
        "{} WHERE o.state = 'placed' AND o.upstream = $1 \
         AND (o.synced_at IS NULL OR o.synced_at < $2) \
         AND (o.lease_until IS NULL OR o.lease_until <= $3) \
         ORDER BY o.synced_at NULLS FIRST, o.id LIMIT $4{claim_lock}",
        rows::order_select()
    );
    Batch {
        sql,
        table: "orders",
        map: rows::order,
        id: |o| o.id,
    }
}

fn refills_to_claim<E: Engine>() -> Batch<E, Refill> {
    let claim_lock = E::claim("r");
    let sql = format!(
        "SELECT {} FROM refills r WHERE status IN ({}) AND upstream = $1 \
         AND (synced_at IS NULL OR synced_at < $2) \
         AND (lease_until IS NULL OR lease_until <= $3) \
         ORDER BY synced_at NULLS FIRST, id LIMIT $4{claim_lock}",
        rows::REFILL_COLUMNS,
        open_refills()
    );
    Batch {
        sql,
        table: "refills",
        map: rows::refill,
        id: |r| r.id,
    }
}

async fn mark_stuck_in<C: Conn>(c: &mut C, cutoffs: &StuckCutoffs, now: Millis) -> Result<u64> {
    const STUCK: &str = "UPDATE orders SET attention = 'stuck', updated_at = $1 \
         WHERE state = 'placed' AND attention IS NULL \
         AND COALESCE(progress_at, created_at) < $2";
    let mut marked = 0;
    let mut services = Vec::with_capacity(cutoffs.services.len());
    for (service, before) in &cutoffs.services {
        let service = to_db(*service, "service")?;
        services.push(service);
        let stmt = Stmt::new(format!("{STUCK} AND service = $3"))
            .bind(now)
            .bind(*before)
            .bind(service);
        marked += c.execute(stmt).await?;
    }
    let mut rest = Stmt::new(STUCK);
    if !services.is_empty() {
        rest = Stmt::new(format!(
            "{STUCK} AND service NOT IN ({})",
            params(3, services.len())
        ));
    }
    let mut rest = rest.bind(now).bind(cutoffs.before);
    for service in services {
        rest = rest.bind(service);
    }
    Ok(marked + c.execute(rest).await?)
}

async fn unlink_order_in<C: Conn>(
    c: &mut C,
    id: i64,
    note: &str,
    now: Millis,
) -> Result<OrderState> {
    // A placed order's outcome is the operator's again; the others keep their state. SET
    // reads the row as it was, so `state` in each CASE is the old one.
    let stmt = Stmt::new(
        "UPDATE orders SET upstream_order = NULL, note = $1, updated_at = $2, \
         synced_at = NULL, lease_until = NULL, \
         attention = CASE WHEN state = 'placed' THEN 'unknown_outcome' ELSE attention END, \
         state = CASE WHEN state = 'placed' THEN 'unknown' ELSE state END \
         WHERE id = $3 AND upstream_order IS NOT NULL AND state <> 'dispatching' \
         RETURNING state",
    )
    .bind(note)
    .bind(now)
    .bind(id);
    match c.fetch_optional(stmt).await? {
        Some(row) => row.state(),
        None => Err(rules::cannot_unlink(fetch_order(c, id).await?, id)),
    }
}

async fn unique_index_in<C: Conn>(c: &mut C, locks: &[&'static str]) -> Result<()> {
    for lock in locks {
        c.execute(Stmt::new(*lock)).await?;
    }
    let rows = c.fetch_all(Stmt::new(SHARED_UPSTREAM_ORDERS)).await?;
    let shared = rows
        .iter()
        .map(|r| {
            Ok((
                r.string("upstream")?,
                r.string("upstream_order")?,
                r.i64("id")?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    if !shared.is_empty() {
        return Err(StoreError::SharedUpstreamOrders(rules::group_shared(
            shared,
        )));
    }
    c.execute(Stmt::new(UNIQUE_UPSTREAM_ORDER_INDEX)).await?;
    Ok(())
}

async fn update_refill_in<C: Conn>(
    c: &mut C,
    id: i64,
    status: RefillStatus,
    now: Millis,
) -> Result<()> {
    // A refill that reached a final status stays there (a slower sync racing a faster one
    // must not move it back).
    let sql = format!(
        "UPDATE refills SET status = $1, synced_at = $2, lease_until = NULL \
         WHERE id = $3 AND status IN ({})",
        open_refills()
    );
    let stmt = Stmt::new(sql).bind(status.as_str()).bind(now).bind(id);
    if c.execute(stmt).await? == 0 {
        let exists = Stmt::new("SELECT id FROM refills WHERE id = $1").bind(id);
        if c.fetch_optional(exists).await?.is_none() {
            return Err(StoreError::NotFound);
        }
    }
    Ok(())
}

async fn create_refill_in<C: Conn>(
    c: &mut C,
    order_id: i64,
    upstream_refill: i64,
    now: Millis,
) -> Result<Refill> {
    // Customer and upstream come from the stored order, not from the caller's copy.
    let sql = format!(
        "INSERT INTO refills (order_id, customer_id, upstream, upstream_refill, status, \
         created_at) \
         SELECT id, customer_id, upstream, $1, $2, $3 FROM orders WHERE id = $4 \
         RETURNING {}",
        rows::REFILL_COLUMNS
    );
    let stmt = Stmt::new(sql)
        .bind(upstream_refill)
        .bind(RefillStatus::Pending.as_str())
        .bind(now)
        .bind(order_id);
    let row = c.fetch_optional(stmt).await?.ok_or(StoreError::NotFound)?;
    rows::refill(&row)
}

/// Runs `stmt`, a guarded change of dispatching order `id`, in a transaction of its own.
async fn leave_dispatching<E: Engine>(engine: &E, id: i64, stmt: Stmt) -> Result<()> {
    transaction!(engine, |c| transition(
        c,
        id,
        OrderState::Dispatching,
        stmt.clone()
    ))
}

#[async_trait]
impl<E: Engine> Store for E {
    // ---- customers ----

    async fn create_customer(
        &self,
        name: &str,
        key_hash: &KeyHash,
        group: &str,
        credit_limit: Units,
        balance: Units,
        now: Millis,
    ) -> Result<Customer> {
        if credit_limit < 0 {
            return Err(StoreError::Invalid(format!(
                "credit limit {credit_limit} is negative"
            )));
        }
        let new = NewCustomer {
            name,
            key_hash,
            group,
            credit_limit,
            balance,
            now,
        };
        transaction!(self, |c| create_customer_in(c, &new))
    }

    async fn customer_by_key(&self, hash: &KeyHash) -> Result<Option<(Customer, KeyHash)>> {
        let sql = format!(
            "SELECT {}, c.key_hash AS key_hash FROM customers c WHERE c.key_hash = $1",
            rows::CUSTOMER_COLUMNS
        );
        let mut read = self.read().await?;
        let row = read.fetch_optional(Stmt::new(sql).bind(&hash[..])).await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let stored = row.bytes("key_hash")?;
        let stored = KeyHash::try_from(stored.as_slice()).map_err(|_| {
            rules::undecodable("key_hash", format!("{} bytes, not 32", stored.len()))
        })?;
        Ok(Some((rows::customer(&row)?, stored)))
    }

    async fn customer_by_name(&self, name: &str) -> Result<Option<Customer>> {
        fetch_customer(&mut *self.read().await?, "name", name.into()).await
    }

    async fn list_customers(&self, search: &CustomerSearch) -> Result<Vec<(Customer, u64)>> {
        let mut sql = format!(
            "SELECT {}, c.order_count AS orders FROM customers c WHERE TRUE",
            rows::CUSTOMER_COLUMNS,
        );
        let mut stmt = Stmt::new("");
        if let Some(part) = &search.contains {
            stmt = stmt.bind(part.as_str());
            sql.push_str(&format!(
                " AND {}(c.name, ${}) > 0",
                E::FIND,
                stmt.args.len()
            ));
        }
        if let Some(after) = &search.after {
            stmt = stmt.bind(after.as_str());
            sql.push_str(&format!(" AND {} > ${}", E::BY_NAME, stmt.args.len()));
        }
        sql.push_str(&format!(" ORDER BY {}", E::BY_NAME));
        if let Some(limit) = search.limit {
            stmt = stmt.bind(i64::from(limit));
            sql.push_str(&format!(" LIMIT ${}", stmt.args.len()));
        }
        stmt.sql = sql.into();
        let rows = self.read().await?.fetch_all(stmt).await?;
        rows.iter()
            .map(|row| Ok((rows::customer(row)?, row.u64("orders")?)))
            .collect()
    }

    async fn adjust_balance(
        &self,
        name: &str,
        amount: Units,
        note: Option<&str>,
        now: Millis,
    ) -> Result<Customer> {
        transaction!(self, |c| adjust_balance_in(
            c,
            E::LOCK,
            name,
            amount,
            note,
            now
        ))
    }

    async fn set_enabled(&self, name: &str, enabled: bool) -> Result<()> {
        transaction!(self, |c| set_customer(c, "enabled", enabled.into(), name))
    }

    async fn set_key(&self, name: &str, key_hash: &KeyHash) -> Result<()> {
        transaction!(self, |c| set_customer(
            c,
            "key_hash",
            key_hash[..].into(),
            name
        ))
    }

    async fn ledger(&self, customer_id: i64) -> Result<Vec<LedgerEntry>> {
        let sql = format!(
            "SELECT {} FROM ledger WHERE customer_id = $1 ORDER BY id",
            rows::ENTRY_COLUMNS
        );
        let mut read = self.read().await?;
        let rows = read.fetch_all(Stmt::new(sql).bind(customer_id)).await?;
        rows.iter().map(rows::entry).collect()
    }

    async fn ledger_page(
        &self,
        customer_id: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>> {
        let sql = format!(
            "SELECT {} FROM ledger WHERE customer_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            rows::ENTRY_COLUMNS
        );
        let stmt = Stmt::new(sql)
            .bind(customer_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit));
        let rows = self.read().await?.fetch_all(stmt).await?;
        rows.iter().map(rows::entry).collect()
    }

    async fn balance_after(&self, customer_id: i64, entry_id: i64) -> Result<Units> {
        let sql = "SELECT balance - COALESCE((SELECT CAST(SUM(amount) AS BIGINT) FROM ledger \
             WHERE customer_id = $1 AND id > $2), 0) AS balance FROM customers WHERE id = $1";
        let stmt = Stmt::new(sql).bind(customer_id).bind(entry_id);
        let row = self.read().await?.fetch_optional(stmt).await?;
        row.ok_or(StoreError::NotFound)?.i64("balance")
    }

    async fn order_ledger(&self, order_id: i64) -> Result<Vec<LedgerEntry>> {
        let sql = format!(
            "SELECT {} FROM ledger WHERE order_id = $1 ORDER BY id",
            rows::ENTRY_COLUMNS
        );
        let rows = self
            .read()
            .await?
            .fetch_all(Stmt::new(sql).bind(order_id))
            .await?;
        rows.iter().map(rows::entry).collect()
    }

    async fn order_history(&self, order_id: i64) -> Result<Vec<OrderEvent>> {
        let sql = format!(
            "SELECT {} FROM order_events WHERE order_id = $1 ORDER BY id",
            rows::EVENT_COLUMNS
        );
        let rows = self
            .read()
            .await?
            .fetch_all(Stmt::new(sql).bind(order_id))
            .await?;
        rows.iter().map(rows::event).collect()
    }

    // ---- orders ----

    async fn create_order(&self, order: &NewOrder, now: Millis) -> Result<Order> {
        let new = OrderRow::new(order)?;
        transaction!(self, |c| create_order_in(c, E::LOCK, &new, now))
    }

    async fn retarget_order(
        &self,
        id: i64,
        upstream: &str,
        upstream_service: u64,
        list_cost: Option<Units>,
    ) -> Result<()> {
        let upstream_service = to_db(upstream_service, "upstream service")?;
        let stmt = Stmt::new(
            "UPDATE orders SET upstream = $1, upstream_service = $2, list_cost = $3 \
             WHERE id = $4 AND state = 'dispatching'",
        )
        .bind(upstream)
        .bind(upstream_service)
        .bind(list_cost)
        .bind(id);
        leave_dispatching(self, id, stmt).await
    }

    async fn mark_placed(&self, id: i64, upstream_order: &str, now: Millis) -> Result<()> {
        let stmt = Stmt::new(
            "UPDATE orders SET state = 'placed', upstream_order = $1, status = $2, \
             updated_at = $3 WHERE id = $4 AND state = 'dispatching'",
        )
        .bind(upstream_order)
        .bind(Status::Pending.as_str())
        .bind(now)
        .bind(id);
        leave_dispatching(self, id, stmt).await
    }

    async fn mark_rejected(&self, id: i64, note: &str, now: Millis) -> Result<()> {
        transaction!(self, |c| mark_rejected_in(c, E::LOCK, id, note, now))
    }

    async fn mark_unknown(&self, id: i64, note: &str, now: Millis) -> Result<()> {
        let stmt = Stmt::new(
            "UPDATE orders SET state = 'unknown', attention = 'unknown_outcome', note = $1, \
             updated_at = $2 WHERE id = $3 AND state = 'dispatching'",
        )
        .bind(note)
        .bind(now)
        .bind(id);
        leave_dispatching(self, id, stmt).await
    }

    async fn recover_dispatching(
        &self,
        deadline_before: Millis,
        updated_before: Millis,
        now: Millis,
    ) -> Result<u64> {
        // Several instances may run this at once: each order is moved by whichever gets its
        // row first; the others, re-checking `state` after waiting, skip it.
        let stmt = Stmt::new(
            "UPDATE orders SET state = 'unknown', attention = 'unknown_outcome', note = $1, \
             updated_at = $2 WHERE state = 'dispatching' \
             AND COALESCE(dispatch_deadline < $3, updated_at < $4)",
        )
        .bind(INTERRUPTED_NOTE)
        .bind(now)
        .bind(deadline_before)
        .bind(updated_before);
        transaction!(self, |c| c.execute(stmt.clone()))
    }

    async fn order(&self, id: i64) -> Result<Option<Order>> {
        fetch_order(&mut *self.read().await?, id).await
    }

    async fn customer_orders(&self, customer_id: i64, ids: &[i64]) -> Result<Vec<Order>> {
        let select = rows::order_select();
        let sql = |ids: &str| {
            format!("{select} WHERE o.customer_id = $1 AND o.id IN ({ids}) ORDER BY o.id")
        };
        let mut read = self.read().await?;
        fetch_in(&mut *read, sql, &[customer_id.into()], ids, rows::order).await
    }

    async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<Order>> {
        let f = filter;
        let mut sql = format!("{} WHERE TRUE", rows::order_select());
        let mut conditions: Vec<(&str, Arg)> = Vec::new();
        let mut when = |condition, arg: Option<Arg>| {
            if let Some(arg) = arg {
                conditions.push((condition, arg));
            }
        };
        when("c.name =", f.customer.as_deref().map(Arg::from));
        when("o.state =", f.state.map(|s| s.as_str().into()));
        match f.attention {
            None => {}
            Some(AttentionFilter::Any) => sql.push_str(" AND o.attention IS NOT NULL"),
            Some(AttentionFilter::Only(r)) => when("o.attention =", Some(r.as_str().into())),
        }
        when("o.upstream =", f.upstream.as_deref().map(Arg::from));
        let service = f.service.map(|s| to_db(s, "service")).transpose()?;
        when("o.service =", service.map(Arg::from));
        when("o.created_at >=", f.since.map(Arg::from));
        when("o.created_at <", f.until.map(Arg::from));
        when("o.id <", f.before.map(Arg::from));
        let mut stmt = Stmt::new("");
        for (condition, arg) in conditions {
            stmt = stmt.bind(arg);
            sql.push_str(&format!(" AND {condition} ${}", stmt.args.len()));
        }
        sql.push_str(" ORDER BY o.id DESC");
        if let Some(limit) = f.limit {
            stmt = stmt.bind(i64::from(limit));
            sql.push_str(&format!(" LIMIT ${}", stmt.args.len()));
        }
        stmt.sql = sql.into();
        let rows = self.read().await?.fetch_all(stmt).await?;
        rows.iter().map(rows::order).collect()
    }

    async fn orders_to_sync(&self, upstream: &str, claim: &Claim) -> Result<Vec<Order>> {
        claim_work(self, orders_to_claim::<E>(), upstream, claim).await
    }

    async fn apply_status(&self, id: i64, update: &StatusUpdate, now: Millis) -> Result<Applied> {
        let reported = Reported::new(update)?;
        transaction!(self, |c| apply_status_in(c, E::LOCK, id, &reported, now))
    }

    async fn apply_statuses(
        &self,
        batch: &[(i64, StatusUpdate)],
        now: Millis,
    ) -> Result<Vec<Result<Applied>>> {
        apply_statuses_in(self, batch, now).await
    }

    async fn resolve_placed(&self, id: i64, upstream_order: &str, now: Millis) -> Result<()> {
        transaction!(self, |c| resolve_placed_in(c, id, upstream_order, now))
    }

    async fn resolve_not_placed(&self, id: i64, now: Millis) -> Result<Units> {
        transaction!(self, |c| resolve_not_placed_in(c, E::LOCK, id, now))
    }

    async fn settle(&self, id: i64, refund: Units, note: &str, now: Millis) -> Result<Units> {
        transaction!(self, |c| settle_in(c, E::LOCK, id, refund, note, now))
    }

    async fn count_orders_by_state(&self) -> Result<Vec<(OrderState, u64)>> {
        let stmt = Stmt::new("SELECT state, COUNT(*) AS n FROM orders GROUP BY state");
        counts(&self.read().await?.fetch_all(stmt).await?)
    }

    async fn open_orders_by_upstream(&self) -> Result<Vec<(String, u64)>> {
        let stmt = Stmt::new(OPEN_ORDERS_BY_UPSTREAM);
        let rows = self.read().await?.fetch_all(stmt).await?;
        rows.iter()
            .map(|row| Ok((row.string("upstream")?, row.u64("n")?)))
            .collect()
    }

    async fn count_attention(&self) -> Result<Vec<(Attention, String, u64)>> {
        let rows = self
            .read()
            .await?
            .fetch_all(Stmt::new(COUNT_ATTENTION))
            .await?;
        rows.iter()
            .map(|row| {
                let reason = row
                    .attention()?
                    .ok_or_else(|| rules::broken("a NULL attention counted".into()))?;
                Ok((reason, row.string("upstream")?, row.u64("n")?))
            })
            .collect()
    }

    async fn money_by_day(&self, since: Millis) -> Result<Vec<DayMoney>> {
        let stmt = Stmt::new(MONEY_BY_DAY).bind(since);
        let rows = self.read().await?.fetch_all(stmt).await?;
        rows.iter()
            .map(|row| {
                Ok(DayMoney {
                    day: row.i64("day")?,
                    revenue: row.i64("revenue")?,
                    cost: row.i64("cost")?,
                })
            })
            .collect()
    }

    async fn mark_stuck(&self, cutoffs: &StuckCutoffs, now: Millis) -> Result<u64> {
        transaction!(self, |c| mark_stuck_in(c, cutoffs, now))
    }

    async fn unlink_order(&self, id: i64, note: &str, now: Millis) -> Result<OrderState> {
        transaction!(self, |c| unlink_order_in(c, id, note, now))
    }

    async fn note_order(&self, id: i64, note: &str, now: Millis) -> Result<()> {
        let stmt = Stmt::new("UPDATE orders SET note = $1, updated_at = $2 WHERE id = $3")
            .bind(note)
            .bind(now)
            .bind(id);
        match transaction!(self, |c| c.execute(stmt.clone()))? {
            1 => Ok(()),
            _ => Err(StoreError::NotFound),
        }
    }

    async fn unique_upstream_orders(&self) -> Result<()> {
        // Every open asks: a read, so that the CLI beside a busy server takes no write lock.
        let indexed = self
            .read()
            .await?
            .fetch_optional(Stmt::new(E::INDEXED))
            .await?;
        if indexed.map(|row| row.i64("n")).transpose()?.unwrap_or(0) > 0 {
            return Ok(());
        }
        transaction!(self, |c| unique_index_in(c, E::INDEX_LOCKS))
    }

    // ---- refills ----

    async fn create_refill(
        &self,
        order: &Order,
        upstream_refill: u64,
        now: Millis,
    ) -> Result<Refill> {
        let upstream_refill = to_db(upstream_refill, "upstream refill id")?;
        transaction!(self, |c| create_refill_in(
            c,
            order.id,
            upstream_refill,
            now
        ))
    }

    async fn customer_refills(&self, customer_id: i64, ids: &[i64]) -> Result<Vec<Refill>> {
        let sql = |ids: &str| {
            format!(
                "SELECT {} FROM refills WHERE customer_id = $1 AND id IN ({ids}) ORDER BY id",
                rows::REFILL_COLUMNS
            )
        };
        let mut read = self.read().await?;
        fetch_in(&mut *read, sql, &[customer_id.into()], ids, rows::refill).await
    }

    async fn refills_to_sync(&self, upstream: &str, claim: &Claim) -> Result<Vec<Refill>> {
        claim_work(self, refills_to_claim::<E>(), upstream, claim).await
    }

    async fn update_refill(&self, id: i64, status: RefillStatus, now: Millis) -> Result<()> {
        transaction!(self, |c| update_refill_in(c, id, status, now))
    }

    async fn ping(&self) -> Result<()> {
        self.read().await?.execute(Stmt::new("SELECT 1")).await?;
        Ok(())
    }

    fn single_writer(&self) -> bool {
        E::SINGLE_WRITER
    }
}
