//! The PostgreSQL [`Store`]: one database shared by many gateway instances
//! (docs/scaling.md). Every rule of the SQLite store holds here too, across processes and machines;
//! the same conformance tests (`store::conformance`) run against both.
//!
//! # How the money rules hold
//!
//! Transactions run at PostgreSQL's default `READ COMMITTED`, and every decision about money
//! is taken on a row that this transaction has locked:
//!
//! - A balance only changes through [`post`], whose `UPDATE customers SET balance = balance + $1`
//!   is guarded (`WHERE … AND balance + $1 >= -credit_limit`, checked by rows affected) when
//!   money goes out. An `UPDATE` locks the row and, if another transaction changed it
//!   meanwhile, re-evaluates its `WHERE` against the committed row, so the guard is exact
//!   whatever the concurrency; `CHECK (balance >= -credit_limit)` is the last line behind it.
//! - Creating an order first locks its customer (`SELECT … FOR NO KEY UPDATE`) and refuses an
//!   order that does not fit before inserting anything (so a refused order takes no id).
//!   Orders of one customer are therefore created one after the other, on any instance.
//! - Moving an order between states locks the order row (`FOR NO KEY UPDATE`) or guards the
//!   `UPDATE` with the state it leaves (`WHERE id = $1 AND state = 'placed'`): of many
//!   instances applying the same final status, one moves the order and refunds; the others
//!   find it `final` and change nothing. The ledger's unique index on `(order_id, kind)`
//!   makes a second charge, release or refund of one order impossible even so.
//!
//! `FOR NO KEY UPDATE` rather than `FOR UPDATE`: it excludes every other writer of the row
//! but not the `KEY SHARE` locks that foreign-key checks take (inserting a ledger entry or a
//! refill that references the row), which have no reason to wait. Locks are always taken
//! order first, customer second, so two of these transactions cannot wait on each other in a
//! cycle. Should PostgreSQL still report a deadlock (`40P01`), or a serialization failure
//! (`40001`, e.g. with `default_transaction_isolation = serializable` on the server), the
//! whole transaction is retried a few times with a short, jittered backoff.
//!
//! # Sync work
//!
//! [`Store::orders_to_sync`] and [`Store::refills_to_sync`] claim a batch with one statement:
//! `UPDATE … SET lease_until = … WHERE id IN (SELECT … FOR NO KEY UPDATE SKIP LOCKED)`. Rows
//! another instance is claiming right now are skipped rather than waited for; rows it claimed
//! before stay out of reach until their lease runs out, when any instance takes them over.
//! No advisory locks are used at run time: they are per session, and a transaction-pooling
//! pooler (PgBouncer) hands sessions around between transactions. (The migrator takes one
//! while it migrates, at start-up.)

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};

use super::sqlite::{
    Books, INTERRUPTED_NOTE, SETTLEABLE, check_settle, open_refill_statuses, opt_to_db, refund_due,
    settle_note, to_db, undecodable,
};
use super::{
    Applied, Attention, AttentionFilter, Claim, Customer, EntryKind, KeyHash, LedgerEntry, Millis,
    NewOrder, Order, OrderFilter, OrderState, Refill, Result, StatusUpdate, Store, StoreError,
    StuckCutoffs, Units,
};
use crate::protocol::{RefillStatus, Status};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections per instance. Each request holds one for a few short statements; with many
/// instances on one server, `instances × POOL_SIZE` must stay below its `max_connections`
/// (100 by default).
pub const POOL_SIZE: u32 = 10;

/// How long a request waits for a free connection (or a new one) before it fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Retries of a transaction that failed with a serialization failure or a deadlock.
pub(super) const RETRIES: u32 = 4;

/// The first retry waits about this long; each further one twice as long (plus jitter).
const BACKOFF: Duration = Duration::from_millis(5);

/// Reported to the server, for `pg_stat_activity`, unless the URL names one.
const APPLICATION_NAME: &str = "panelgate";

pub struct PostgresStore {
    pub(super) pool: PgPool,
}

impl PostgresStore {
    /// Connects to `postgres://user:password@host:port/database` (or `postgresql://…`; TLS with
    /// `?sslmode=require` or `verify-full`) and applies the migrations.
    pub async fn open(url: &str) -> Result<PostgresStore> {
        PostgresStore::open_with(PgConnectOptions::from_str(url)?, POOL_SIZE).await
    }

    /// [`PostgresStore::open`] with parsed options and a pool of `max_connections`.
    pub async fn open_with(
        mut options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<PostgresStore> {
        if options.get_application_name().is_none() {
            options = options.application_name(APPLICATION_NAME);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        let store = PostgresStore { pool };
        super::index_unless_shared(&store).await?;
        Ok(store)
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Runs `$body` (a future using the connection `$conn`) in a transaction and commits it,
/// retrying the whole transaction on a serialization failure or a deadlock. Any other error
/// rolls back (the transaction is dropped) and is returned as it is.
macro_rules! transaction {
    ($store:expr, |$conn:ident| $body:expr) => {{
        let mut attempt: u32 = 0;
        loop {
            let result = async {
                let mut tx = $store.pool.begin().await?;
                let value = {
                    let $conn: &mut PgConnection = &mut tx;
                    $body.await?
                };
                tx.commit().await?;
                Ok::<_, StoreError>(value)
            }
            .await;
            match result {
                Err(e) if attempt < RETRIES && is_transient(&e) => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "retrying a PostgreSQL transaction");
                    backoff(attempt).await;
                }
                result => break result,
            }
        }
    }};
}
pub(super) use transaction;

/// A serialization failure or a deadlock: the transaction was rolled back and may simply be
/// run again.
pub(super) fn is_transient(err: &StoreError) -> bool {
    match err {
        StoreError::Db(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40001" | "40P01"))
        }
        _ => false,
    }
}

pub(super) async fn backoff(attempt: u32) {
    let base = BACKOFF.saturating_mul(1 << attempt.saturating_sub(1).min(8));
    let base_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX).max(1);
    // Jitter, so that the transactions that collided do not collide again.
    let jitter = getrandom::u64().map(|r| r % base_ms).unwrap_or(0);
    tokio::time::sleep(base + Duration::from_millis(jitter)).await;
}

// ---- conversions ----

fn get_u64(row: &PgRow, column: &str) -> Result<u64> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| undecodable(column, format!("negative value {value}")))
}

fn get_opt_u64(row: &PgRow, column: &str) -> Result<Option<u64>> {
    let value: Option<i64> = row.try_get(column)?;
    value
        .map(|v| u64::try_from(v).map_err(|_| undecodable(column, format!("negative value {v}"))))
        .transpose()
}

fn get_state(row: &PgRow) -> Result<OrderState> {
    let text: String = row.try_get("state")?;
    OrderState::parse(&text).ok_or_else(|| undecodable("state", format!("unknown state {text:?}")))
}

fn get_status(row: &PgRow) -> Result<Status> {
    let text: String = row.try_get("status")?;
    Status::parse(&text).ok_or_else(|| undecodable("status", format!("unknown status {text:?}")))
}

fn get_refill_status(row: &PgRow) -> Result<RefillStatus> {
    let text: String = row.try_get("status")?;
    RefillStatus::parse(&text)
        .ok_or_else(|| undecodable("status", format!("unknown refill status {text:?}")))
}

/// A unique violation → `Duplicate(what(constraint name))`; anything else unchanged.
pub(super) fn duplicate(err: sqlx::Error, what: impl FnOnce(&str) -> String) -> StoreError {
    if let sqlx::Error::Database(db) = &err
        && db.is_unique_violation()
    {
        return StoreError::Duplicate(what(db.constraint().unwrap_or_default()));
    }
    StoreError::Db(err)
}

/// The statuses a refill can still leave, as an SQL list of literals (`'Pending', …`): written
/// into the statements rather than bound, so that the planner can match them with the
/// partial index `refills_sync`. They are the crate's own constants, never input.
static OPEN_REFILLS: LazyLock<String> = LazyLock::new(|| {
    open_refill_statuses()
        .into_iter()
        .map(|s| format!("'{}'", s.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ")
});

// ---- rows ----

const CUSTOMER_COLUMNS: &str = "c.id AS id, c.name AS name, c.grp AS grp, c.balance AS balance, \
     c.credit_limit AS credit_limit, c.enabled AS enabled, c.created_at AS created_at";

fn customer_from_row(row: &PgRow) -> Result<Customer> {
    Ok(Customer {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        group: row.try_get("grp")?,
        balance: row.try_get("balance")?,
        credit_limit: row.try_get("credit_limit")?,
        enabled: row.try_get("enabled")?,
        created_at: row.try_get("created_at")?,
    })
}

/// The columns of [`Order`], from `orders o` joined with `customers c`.
macro_rules! order_columns {
    () => {
        "o.id AS id, o.customer_id AS customer_id, c.name AS customer, \
         o.service AS service, o.upstream AS upstream, o.upstream_service AS upstream_service, \
         o.upstream_order AS upstream_order, o.state AS state, o.status AS status, \
         o.charge AS charge, o.refunded AS refunded, o.billed AS billed, o.remains AS remains, \
         o.start_count AS start_count, o.cost AS cost, o.link AS link, o.fields AS fields, \
         o.note AS note, o.created_at AS created_at, o.updated_at AS updated_at, \
         o.synced_at AS synced_at, o.attention AS attention, o.list_cost AS list_cost, \
         o.first_cost AS first_cost, o.can_refill AS can_refill, o.can_cancel AS can_cancel, \
         o.dispatch_deadline AS dispatch_deadline, o.progress_at AS progress_at, \
         o.drip_runs AS drip_runs, o.drip_interval AS drip_interval, \
         o.runs_done AS runs_done, o.child_orders AS child_orders"
    };
}

const ORDER_SELECT: &str = concat!(
    "SELECT ",
    order_columns!(),
    " FROM orders o JOIN customers c ON c.id = o.customer_id"
);

fn order_from_row(row: &PgRow) -> Result<Order> {
    Ok(Order {
        id: row.try_get("id")?,
        customer_id: row.try_get("customer_id")?,
        customer: row.try_get("customer")?,
        service: get_u64(row, "service")?,
        upstream: row.try_get("upstream")?,
        upstream_service: get_u64(row, "upstream_service")?,
        upstream_order: row.try_get("upstream_order")?,
        state: get_state(row)?,
        status: get_status(row)?,
        charge: row.try_get("charge")?,
        refunded: row.try_get("refunded")?,
        billed: get_u64(row, "billed")?,
        remains: row.try_get("remains")?,
        start_count: get_opt_u64(row, "start_count")?,
        cost: row.try_get("cost")?,
        link: row.try_get("link")?,
        fields: row.try_get("fields")?,
        note: row.try_get("note")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        synced_at: row.try_get("synced_at")?,
        attention: get_attention(row)?,
        list_cost: row.try_get("list_cost")?,
        first_cost: row.try_get("first_cost")?,
        can_refill: row.try_get("can_refill")?,
        can_cancel: row.try_get("can_cancel")?,
        dispatch_deadline: row.try_get("dispatch_deadline")?,
        progress_at: row.try_get("progress_at")?,
        drip: super::drip_from_db(row.try_get("drip_runs")?, row.try_get("drip_interval")?),
        runs_done: get_opt_u64(row, "runs_done")?,
        child_orders: super::child_orders_from_db(row.try_get("child_orders")?),
    })
}

fn get_attention(row: &PgRow) -> Result<Option<Attention>> {
    let text: Option<String> = row.try_get("attention")?;
    text.map(|t| {
        Attention::parse(&t)
            .ok_or_else(|| undecodable("attention", format!("unknown reason {t:?}")))
    })
    .transpose()
}

const REFILL_COLUMNS: &str = "id, order_id, customer_id, upstream, upstream_refill, status, \
     created_at, synced_at";

fn refill_from_row(row: &PgRow) -> Result<Refill> {
    Ok(Refill {
        id: row.try_get("id")?,
        order_id: row.try_get("order_id")?,
        customer_id: row.try_get("customer_id")?,
        upstream: row.try_get("upstream")?,
        upstream_refill: get_u64(row, "upstream_refill")?,
        status: get_refill_status(row)?,
        created_at: row.try_get("created_at")?,
        synced_at: row.try_get("synced_at")?,
    })
}

fn entry_from_row(row: &PgRow) -> Result<LedgerEntry> {
    let kind: String = row.try_get("kind")?;
    Ok(LedgerEntry {
        id: row.try_get("id")?,
        customer_id: row.try_get("customer_id")?,
        amount: row.try_get("amount")?,
        kind: EntryKind::parse(&kind)
            .ok_or_else(|| undecodable("kind", format!("unknown entry kind {kind:?}")))?,
        order_id: row.try_get("order_id")?,
        note: row.try_get("note")?,
        created_at: row.try_get("created_at")?,
    })
}

// ---- money ----

/// Moves `amount` into (positive) or out of (negative) a customer's balance and writes the
/// ledger entry for it: the only way this store changes a balance. Money out may not take
/// the balance below `-credit_limit`: the guarded `UPDATE` decides on the row as committed,
/// whatever else runs at the same time. Must run inside a transaction.
async fn post(
    conn: &mut PgConnection,
    customer_id: i64,
    amount: Units,
    kind: EntryKind,
    order_id: Option<i64>,
    note: Option<&str>,
    now: Millis,
) -> Result<()> {
    let sql = if amount < 0 {
        "UPDATE customers SET balance = balance + $1 \
         WHERE id = $2 AND balance + $1 >= -credit_limit"
    } else {
        "UPDATE customers SET balance = balance + $1 WHERE id = $2"
    };
    let changed = sqlx::query(sql)
        .bind(amount)
        .bind(customer_id)
        .execute(&mut *conn)
        .await?;
    if changed.rows_affected() != 1 {
        let exists = sqlx::query_scalar::<_, i64>("SELECT id FROM customers WHERE id = $1")
            .bind(customer_id)
            .fetch_optional(&mut *conn)
            .await?;
        return Err(match exists {
            None => StoreError::NotFound,
            Some(_) => StoreError::InsufficientFunds,
        });
    }
    sqlx::query(
        "INSERT INTO ledger (customer_id, amount, kind, order_id, note, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(customer_id)
    .bind(amount)
    .bind(kind.as_str())
    .bind(order_id)
    .bind(note)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        duplicate(e, |_| {
            format!(
                "a {} entry for order {}",
                kind.as_str(),
                order_id.unwrap_or_default()
            )
        })
    })?;
    Ok(())
}

/// Why a guarded transition of order `id` out of `expected` changed no row.
async fn not_in_state(conn: &mut PgConnection, id: i64, expected: OrderState) -> StoreError {
    let state = sqlx::query_scalar::<_, String>("SELECT state FROM orders WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await;
    match state {
        Ok(None) => StoreError::NotFound,
        Ok(Some(state)) => {
            StoreError::Conflict(format!("order {id} is {state}, not {}", expected.as_str()))
        }
        Err(e) => StoreError::Db(e),
    }
}

async fn fetch_order(conn: &mut PgConnection, id: i64) -> Result<Option<Order>> {
    let row = sqlx::query(&format!("{ORDER_SELECT} WHERE o.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(order_from_row).transpose()
}

pub(super) async fn fetch_customer(conn: &mut PgConnection, id: i64) -> Result<Customer> {
    let row = sqlx::query(&format!(
        "SELECT {CUSTOMER_COLUMNS} FROM customers c WHERE c.id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    customer_from_row(&row)
}

// ---- transactions ----
//
// Each write is a function of an open transaction's connection, so that `transaction!` can
// run it again from the start when PostgreSQL asks for a retry.

async fn create_customer_in(
    conn: &mut PgConnection,
    name: &str,
    key_hash: &KeyHash,
    group: &str,
    credit_limit: Units,
    balance: Units,
    now: Millis,
) -> Result<Customer> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO customers (name, key_hash, grp, credit_limit, balance, enabled, created_at) \
         VALUES ($1, $2, $3, $4, 0, TRUE, $5) RETURNING id",
    )
    .bind(name)
    .bind(&key_hash[..])
    .bind(group)
    .bind(credit_limit)
    .bind(now)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| {
        duplicate(e, |constraint| {
            if constraint.contains("key_hash") {
                "a customer with this API key".to_owned()
            } else {
                format!("customer {name:?}")
            }
        })
    })?;
    // The opening balance goes through the ledger like any other change (a negative one,
    // if ever given, as a debit within the credit limit).
    if balance != 0 {
        let kind = if balance > 0 {
            EntryKind::Credit
        } else {
            EntryKind::Debit
        };
        post(conn, id, balance, kind, None, Some("opening balance"), now).await?;
    }
    fetch_customer(conn, id).await
}

pub(super) async fn adjust_balance_in(
    conn: &mut PgConnection,
    name: &str,
    amount: Units,
    note: Option<&str>,
    now: Millis,
) -> Result<Customer> {
    let id = sqlx::query_scalar::<_, i64>("SELECT id FROM customers WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    // Zero changes nothing, so it writes nothing.
    if amount != 0 {
        let kind = if amount > 0 {
            EntryKind::Credit
        } else {
            EntryKind::Debit
        };
        post(conn, id, amount, kind, None, note, now).await?;
    }
    fetch_customer(conn, id).await
}

/// The values of a [`NewOrder`] as stored.
struct OrderRow<'a> {
    order: &'a NewOrder,
    service: i64,
    upstream_service: i64,
    billed: i64,
    drip_runs: Option<i64>,
    drip_interval: Option<i64>,
}

async fn create_order_in(
    conn: &mut PgConnection,
    new: &OrderRow<'_>,
    now: Millis,
) -> Result<Order> {
    let order = new.order;
    // The customer's row stays locked until commit: this instance's and every other
    // instance's orders for this customer wait here, then read the balance as it is after
    // the ones before them. An order that does not fit is refused before anything is
    // inserted; `post` checks again (exactly, on the locked row) when it moves the money.
    let row = sqlx::query(
        "SELECT balance, credit_limit, enabled FROM customers WHERE id = $1 FOR NO KEY UPDATE",
    )
    .bind(order.customer_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    if !row.try_get::<bool, _>("enabled")? {
        return Err(StoreError::Disabled);
    }
    let balance: Units = row.try_get("balance")?;
    let credit_limit: Units = row.try_get("credit_limit")?;
    match balance.checked_sub(order.charge) {
        Some(after) if after >= -credit_limit => {}
        _ => return Err(StoreError::InsufficientFunds),
    }

    let id: i64 = sqlx::query_scalar(
        "INSERT INTO orders (customer_id, service, upstream, upstream_service, state, status, \
         charge, refunded, billed, link, fields, created_at, updated_at, list_cost, \
         can_refill, can_cancel, dispatch_deadline, drip_runs, drip_interval) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $11, $12, $13, $14, $15, \
         $16, $17) \
         RETURNING id",
    )
    .bind(order.customer_id)
    .bind(new.service)
    .bind(&order.upstream)
    .bind(new.upstream_service)
    .bind(OrderState::Dispatching.as_str())
    .bind(Status::Pending.as_str())
    .bind(order.charge)
    .bind(new.billed)
    .bind(&order.link)
    .bind(&order.fields)
    .bind(now)
    .bind(order.list_cost)
    .bind(order.can_refill)
    .bind(order.can_cancel)
    .bind(order.dispatch_deadline)
    .bind(new.drip_runs)
    .bind(new.drip_interval)
    .fetch_one(&mut *conn)
    .await?;
    // The charge entry is written even for a zero charge (per-post billing): it is the
    // record that the order took its funds.
    post(
        conn,
        order.customer_id,
        -order.charge,
        EntryKind::Charge,
        Some(id),
        None,
        now,
    )
    .await?;
    fetch_order(conn, id).await?.ok_or(StoreError::NotFound)
}

/// Runs a guarded transition of order `id` out of `expected`; no row changed means the order
/// is missing or in another state, which is told apart for the caller.
async fn transition(
    conn: &mut PgConnection,
    id: i64,
    expected: OrderState,
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<()> {
    let changed = query.execute(&mut *conn).await?;
    if changed.rows_affected() != 1 {
        return Err(not_in_state(conn, id, expected).await);
    }
    Ok(())
}

async fn retarget_order_in(
    conn: &mut PgConnection,
    id: i64,
    upstream: &str,
    upstream_service: i64,
    list_cost: Option<Units>,
) -> Result<()> {
    let query = sqlx::query(
        "UPDATE orders SET upstream = $1, upstream_service = $2, list_cost = $3 \
         WHERE id = $4 AND state = 'dispatching'",
    )
    .bind(upstream)
    .bind(upstream_service)
    .bind(list_cost)
    .bind(id);
    transition(conn, id, OrderState::Dispatching, query).await
}

async fn mark_placed_in(
    conn: &mut PgConnection,
    id: i64,
    upstream_order: &str,
    now: Millis,
) -> Result<()> {
    let query = sqlx::query(
        "UPDATE orders SET state = 'placed', upstream_order = $1, status = $2, updated_at = $3 \
         WHERE id = $4 AND state = 'dispatching'",
    )
    .bind(upstream_order)
    .bind(Status::Pending.as_str())
    .bind(now)
    .bind(id);
    transition(conn, id, OrderState::Dispatching, query).await
}

async fn mark_rejected_in(conn: &mut PgConnection, id: i64, note: &str, now: Millis) -> Result<()> {
    let row = sqlx::query(
        "UPDATE orders SET state = 'rejected', note = $1, updated_at = $2 \
         WHERE id = $3 AND state = 'dispatching' RETURNING customer_id, charge",
    )
    .bind(note)
    .bind(now)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Err(not_in_state(conn, id, OrderState::Dispatching).await);
    };
    let customer_id: i64 = row.try_get("customer_id")?;
    let charge: Units = row.try_get("charge")?;
    // `refunded` stays 0: a release is not a refund, the order simply never cost anything.
    post(
        conn,
        customer_id,
        charge,
        EntryKind::Release,
        Some(id),
        Some(note),
        now,
    )
    .await
}

async fn mark_unknown_in(conn: &mut PgConnection, id: i64, note: &str, now: Millis) -> Result<()> {
    let query = sqlx::query(
        "UPDATE orders SET state = 'unknown', attention = 'unknown_outcome', note = $1, \
         updated_at = $2 WHERE id = $3 AND state = 'dispatching'",
    )
    .bind(note)
    .bind(now)
    .bind(id);
    transition(conn, id, OrderState::Dispatching, query).await
}

async fn orders_to_sync_in(
    conn: &mut PgConnection,
    upstream: &str,
    claim: &Claim,
) -> Result<Vec<Order>> {
    // The inner SELECT picks the batch and locks it, skipping rows another claim has locked
    // at this moment; a row it had to wait for would be re-checked (its lease, now taken,
    // excludes it). The UPDATE leases what was picked; the outer SELECT adds the customer.
    let rows = sqlx::query(concat!(
        "WITH claimed AS (\
             UPDATE orders SET lease_until = $5 \
             WHERE id IN (\
                 SELECT id FROM orders \
                 WHERE state = 'placed' AND upstream = $1 \
                 AND (synced_at IS NULL OR synced_at < $2) \
                 AND (lease_until IS NULL OR lease_until <= $3) \
                 ORDER BY synced_at NULLS FIRST, id LIMIT $4 \
                 FOR NO KEY UPDATE SKIP LOCKED) \
             RETURNING *) \
         SELECT ",
        order_columns!(),
        " FROM claimed o JOIN customers c ON c.id = o.customer_id \
         ORDER BY o.synced_at NULLS FIRST, o.id"
    ))
    .bind(upstream)
    .bind(claim.stale_before)
    .bind(claim.now)
    .bind(i64::from(claim.limit))
    .bind(claim.lease_until)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(order_from_row).collect()
}

async fn apply_status_in(
    conn: &mut PgConnection,
    id: i64,
    update: &StatusUpdate,
    start_count: Option<i64>,
    now: Millis,
) -> Result<Applied> {
    let runs = opt_to_db(update.runs, "runs")?;
    let children = super::child_orders_to_db(&update.child_orders);
    // Locked until commit: another instance applying a status to this order waits here and
    // then reads the state this transaction leaves.
    let row = sqlx::query(
        "SELECT customer_id, state, status, charge, refunded, billed, remains, start_count, \
         first_cost, list_cost \
         FROM orders WHERE id = $1 FOR NO KEY UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    if get_state(&row)? != OrderState::Placed {
        // Dispatching, unknown, rejected, or already final (another sync got there first):
        // nothing to do.
        return Ok(Applied::default());
    }
    // Progress restarts the stuck clock and lifts a stuck mark.
    let moved = super::moved(
        get_status(&row)?,
        row.try_get("remains")?,
        get_opt_u64(&row, "start_count")?,
        update,
    );

    // `remains` is stored as reported, since a refund is computed from it; `start_count`
    // and `cost` are informational and keep their last known value if the upstream
    // omitted them this time.
    // The first positive charge while running is the upstream's own cost for the order,
    // the base of the share a Partial package gets back.
    if !update.status.is_final() {
        sqlx::query(
            "UPDATE orders SET status = $1, remains = $2, \
             start_count = COALESCE($3, start_count), cost = COALESCE($4, cost), \
             first_cost = COALESCE(first_cost, $8), \
             runs_done = COALESCE($9, runs_done), child_orders = COALESCE($10, child_orders), \
             synced_at = $5, updated_at = $5, lease_until = NULL, \
             progress_at = CASE WHEN $7 THEN $5 ELSE progress_at END, \
             attention = CASE WHEN $7 AND attention = 'stuck' THEN NULL ELSE attention END \
             WHERE id = $6 AND state = 'placed'",
        )
        .bind(update.status.as_str())
        .bind(update.remains)
        .bind(start_count)
        .bind(update.cost)
        .bind(now)
        .bind(id)
        .bind(moved)
        .bind(update.cost.filter(|&c| c > 0))
        .bind(runs)
        .bind(&children)
        .execute(&mut *conn)
        .await?;
        return Ok(Applied::default());
    }

    let customer_id: i64 = row.try_get("customer_id")?;
    let books = Books {
        charge: row.try_get("charge")?,
        refunded: row.try_get("refunded")?,
        billed: get_u64(&row, "billed")?,
        first_cost: row.try_get("first_cost")?,
        list_cost: row.try_get("list_cost")?,
    };
    let (refund, mark) = refund_due(update.status, &books, update.remains, update.cost)?;

    // A final order is no longer stuck; it may need a person for its refund instead.
    let changed = sqlx::query(
        "UPDATE orders SET state = 'final', status = $1, remains = $2, \
         start_count = COALESCE($3, start_count), cost = COALESCE($4, cost), \
         refunded = refunded + $5, attention = $8, \
         runs_done = COALESCE($9, runs_done), child_orders = COALESCE($10, child_orders), \
         synced_at = $6, updated_at = $6, lease_until = NULL, progress_at = $6 \
         WHERE id = $7 AND state = 'placed'",
    )
    .bind(update.status.as_str())
    .bind(update.remains)
    .bind(start_count)
    .bind(update.cost)
    .bind(refund)
    .bind(now)
    .bind(id)
    .bind(mark.map(Attention::as_str))
    .bind(runs)
    .bind(&children)
    .execute(&mut *conn)
    .await?;
    if changed.rows_affected() != 1 {
        // Cannot happen with the row locked; if it did, someone else finalised it.
        return Ok(Applied::default());
    }
    if refund > 0 {
        post(
            conn,
            customer_id,
            refund,
            EntryKind::Refund,
            Some(id),
            Some(update.status.as_str()),
            now,
        )
        .await?;
    }
    Ok(Applied {
        refund,
        finalized: true,
        attention: mark,
    })
}

async fn settle_in(
    conn: &mut PgConnection,
    id: i64,
    refund: Units,
    note: &str,
    now: Millis,
) -> Result<Units> {
    let row = sqlx::query(
        "SELECT customer_id, charge, refunded, attention FROM orders WHERE id = $1 \
         FOR NO KEY UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    let books = Books {
        charge: row.try_get("charge")?,
        refunded: row.try_get("refunded")?,
        ..Books::default()
    };
    check_settle(id, &books, get_attention(&row)?, refund)?;
    let customer_id: i64 = row.try_get("customer_id")?;
    let query = sqlx::query(
        "UPDATE orders SET refunded = refunded + $1, attention = NULL, updated_at = $2 \
         WHERE id = $3 AND state = 'final' AND attention IN ($4, $5)",
    )
    .bind(refund)
    .bind(now)
    .bind(id)
    .bind(SETTLEABLE[0].as_str())
    .bind(SETTLEABLE[1].as_str());
    transition(conn, id, OrderState::Final, query).await?;
    if refund > 0 {
        let note = settle_note(note);
        post(
            conn,
            customer_id,
            refund,
            EntryKind::Refund,
            Some(id),
            Some(&note),
            now,
        )
        .await?;
    }
    Ok(refund)
}

async fn resolve_placed_in(
    conn: &mut PgConnection,
    id: i64,
    upstream_order: &str,
    now: Millis,
) -> Result<()> {
    let holder = sqlx::query(
        "SELECT h.id AS id, h.upstream AS upstream FROM orders o JOIN orders h \
         ON h.upstream = o.upstream AND h.upstream_order = $1 AND h.id <> o.id \
         WHERE o.id = $2 ORDER BY h.id LIMIT 1",
    )
    .bind(upstream_order)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(h) = holder {
        let upstream: String = h.try_get("upstream")?;
        return Err(super::already_held(
            &upstream,
            upstream_order,
            h.try_get("id")?,
        ));
    }
    let query = sqlx::query(
        "UPDATE orders SET state = 'placed', upstream_order = $1, status = $2, \
         synced_at = NULL, attention = NULL, updated_at = $3 \
         WHERE id = $4 AND state = 'unknown'",
    )
    .bind(upstream_order)
    .bind(Status::Pending.as_str())
    .bind(now)
    .bind(id);
    transition(conn, id, OrderState::Unknown, query).await
}

async fn resolve_not_placed_in(conn: &mut PgConnection, id: i64, now: Millis) -> Result<Units> {
    let row = sqlx::query(
        "SELECT customer_id, state, charge, refunded FROM orders WHERE id = $1 \
         FOR NO KEY UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    let state = get_state(&row)?;
    if state != OrderState::Unknown {
        return Err(StoreError::Conflict(format!(
            "order {id} is {}, not unknown",
            state.as_str()
        )));
    }
    let customer_id: i64 = row.try_get("customer_id")?;
    let books = Books {
        charge: row.try_get("charge")?,
        refunded: row.try_get("refunded")?,
        ..Books::default()
    };
    let (refund, _) = refund_due(Status::Canceled, &books, None, None)?;
    let query = sqlx::query(
        "UPDATE orders SET state = 'final', status = $1, refunded = refunded + $2, \
         attention = NULL, updated_at = $3 WHERE id = $4 AND state = 'unknown'",
    )
    .bind(Status::Canceled.as_str())
    .bind(refund)
    .bind(now)
    .bind(id);
    transition(conn, id, OrderState::Unknown, query).await?;
    if refund > 0 {
        post(
            conn,
            customer_id,
            refund,
            EntryKind::Refund,
            Some(id),
            Some("resolved: not placed"),
            now,
        )
        .await?;
    }
    Ok(refund)
}

async fn create_refill_in(
    conn: &mut PgConnection,
    order_id: i64,
    upstream_refill: i64,
    now: Millis,
) -> Result<Refill> {
    // Customer and upstream come from the stored order, not from the caller's copy.
    let row = sqlx::query(&format!(
        "INSERT INTO refills (order_id, customer_id, upstream, upstream_refill, status, \
         created_at) \
         SELECT id, customer_id, upstream, $1, $2, $3 FROM orders WHERE id = $4 \
         RETURNING {REFILL_COLUMNS}"
    ))
    .bind(upstream_refill)
    .bind(RefillStatus::Pending.as_str())
    .bind(now)
    .bind(order_id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    refill_from_row(&row)
}

async fn refills_to_sync_in(
    conn: &mut PgConnection,
    upstream: &str,
    claim: &Claim,
) -> Result<Vec<Refill>> {
    let open = &*OPEN_REFILLS;
    let rows = sqlx::query(&format!(
        "WITH claimed AS (\
             UPDATE refills SET lease_until = $5 \
             WHERE id IN (\
                 SELECT id FROM refills \
                 WHERE status IN ({open}) AND upstream = $1 \
                 AND (synced_at IS NULL OR synced_at < $2) \
                 AND (lease_until IS NULL OR lease_until <= $3) \
                 ORDER BY synced_at NULLS FIRST, id LIMIT $4 \
                 FOR NO KEY UPDATE SKIP LOCKED) \
             RETURNING {REFILL_COLUMNS}) \
         SELECT {REFILL_COLUMNS} FROM claimed ORDER BY synced_at NULLS FIRST, id"
    ))
    .bind(upstream)
    .bind(claim.stale_before)
    .bind(claim.now)
    .bind(i64::from(claim.limit))
    .bind(claim.lease_until)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(refill_from_row).collect()
}

async fn update_refill_in(
    conn: &mut PgConnection,
    id: i64,
    status: RefillStatus,
    now: Millis,
) -> Result<()> {
    // A refill that reached a final status stays there (a slower sync racing a faster one
    // must not move it back).
    let open = &*OPEN_REFILLS;
    let changed = sqlx::query(&format!(
        "UPDATE refills SET status = $1, synced_at = $2, lease_until = NULL WHERE id = $3 AND status IN ({open})"
    ))
    .bind(status.as_str())
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if changed.rows_affected() == 0 {
        let exists = sqlx::query_scalar::<_, i64>("SELECT id FROM refills WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
    }
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
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
            return Err(StoreError::Conflict(format!(
                "credit limit {credit_limit} is negative"
            )));
        }
        transaction!(self, |conn| create_customer_in(
            conn,
            name,
            key_hash,
            group,
            credit_limit,
            balance,
            now
        ))
    }

    async fn customer_by_key(&self, hash: &KeyHash) -> Result<Option<(Customer, KeyHash)>> {
        let row = sqlx::query(&format!(
            "SELECT {CUSTOMER_COLUMNS}, c.key_hash AS key_hash FROM customers c \
             WHERE c.key_hash = $1"
        ))
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let stored: Vec<u8> = row.try_get("key_hash")?;
        let stored = KeyHash::try_from(stored.as_slice())
            .map_err(|_| undecodable("key_hash", format!("{} bytes, not 32", stored.len())))?;
        Ok(Some((customer_from_row(&row)?, stored)))
    }

    async fn customer_by_name(&self, name: &str) -> Result<Option<Customer>> {
        let row = sqlx::query(&format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers c WHERE c.name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(customer_from_row).transpose()
    }

    async fn list_customers(&self) -> Result<Vec<(Customer, u64)>> {
        // `COLLATE "C"`: by name as bytes, as SQLite sorts it, whatever the database's locale.
        let rows = sqlx::query(&format!(
            "SELECT {CUSTOMER_COLUMNS}, \
             (SELECT COUNT(*) FROM orders o WHERE o.customer_id = c.id) AS orders \
             FROM customers c ORDER BY c.name COLLATE \"C\""
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((customer_from_row(row)?, get_u64(row, "orders")?)))
            .collect()
    }

    async fn adjust_balance(
        &self,
        name: &str,
        amount: Units,
        note: Option<&str>,
        now: Millis,
    ) -> Result<Customer> {
        transaction!(self, |conn| adjust_balance_in(
            conn, name, amount, note, now
        ))
    }

    async fn set_enabled(&self, name: &str, enabled: bool) -> Result<()> {
        transaction!(self, |conn| async {
            let changed = sqlx::query("UPDATE customers SET enabled = $1 WHERE name = $2")
                .bind(enabled)
                .bind(name)
                .execute(&mut *conn)
                .await?;
            if changed.rows_affected() != 1 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
    }

    async fn set_key(&self, name: &str, key_hash: &KeyHash) -> Result<()> {
        transaction!(self, |conn| async {
            let changed = sqlx::query("UPDATE customers SET key_hash = $1 WHERE name = $2")
                .bind(&key_hash[..])
                .bind(name)
                .execute(&mut *conn)
                .await
                .map_err(|e| duplicate(e, |_| "a customer with this API key".to_owned()))?;
            if changed.rows_affected() != 1 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
    }

    async fn ledger(&self, customer_id: i64) -> Result<Vec<LedgerEntry>> {
        let rows = sqlx::query(
            "SELECT id, customer_id, amount, kind, order_id, note, created_at \
             FROM ledger WHERE customer_id = $1 ORDER BY id",
        )
        .bind(customer_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    // ---- orders ----

    async fn create_order(&self, order: &NewOrder, now: Millis) -> Result<Order> {
        if order.charge < 0 {
            return Err(StoreError::Conflict(format!(
                "charge {} is negative",
                order.charge
            )));
        }
        let new = OrderRow {
            order,
            service: to_db(order.service, "service")?,
            upstream_service: to_db(order.upstream_service, "upstream service")?,
            billed: to_db(order.billed, "billed quantity")?,
            drip_runs: opt_to_db(order.drip.map(|d| d.runs), "runs")?,
            drip_interval: opt_to_db(order.drip.map(|d| d.interval), "interval")?,
        };
        transaction!(self, |conn| create_order_in(conn, &new, now))
    }

    async fn retarget_order(
        &self,
        id: i64,
        upstream: &str,
        upstream_service: u64,
        list_cost: Option<Units>,
    ) -> Result<()> {
        let upstream_service = to_db(upstream_service, "upstream service")?;
        transaction!(self, |conn| retarget_order_in(
            conn,
            id,
            upstream,
            upstream_service,
            list_cost
        ))
    }

    async fn mark_placed(&self, id: i64, upstream_order: &str, now: Millis) -> Result<()> {
        transaction!(self, |conn| mark_placed_in(conn, id, upstream_order, now))
    }

    async fn mark_rejected(&self, id: i64, note: &str, now: Millis) -> Result<()> {
        transaction!(self, |conn| mark_rejected_in(conn, id, note, now))
    }

    async fn mark_unknown(&self, id: i64, note: &str, now: Millis) -> Result<()> {
        transaction!(self, |conn| mark_unknown_in(conn, id, note, now))
    }

    async fn recover_dispatching(
        &self,
        deadline_before: Millis,
        updated_before: Millis,
        now: Millis,
    ) -> Result<u64> {
        // Several instances may run this at once: each order is moved by whichever gets its
        // row first; the others, re-checking `state` after waiting, skip it.
        transaction!(self, |conn| async {
            let changed = sqlx::query(
                "UPDATE orders SET state = 'unknown', attention = 'unknown_outcome', note = $1, \
                 updated_at = $2 WHERE state = 'dispatching' \
                 AND COALESCE(dispatch_deadline < $3, updated_at < $4)",
            )
            .bind(INTERRUPTED_NOTE)
            .bind(now)
            .bind(deadline_before)
            .bind(updated_before)
            .execute(&mut *conn)
            .await?;
            Ok::<_, StoreError>(changed.rows_affected())
        })
    }

    async fn order(&self, id: i64) -> Result<Option<Order>> {
        let mut conn = self.pool.acquire().await?;
        fetch_order(&mut conn, id).await
    }

    async fn customer_orders(&self, customer_id: i64, ids: &[i64]) -> Result<Vec<Order>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "{ORDER_SELECT} WHERE o.customer_id = $1 AND o.id = ANY($2) ORDER BY o.id"
        ))
        .bind(customer_id)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(order_from_row).collect()
    }

    async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<Order>> {
        let mut sql = format!("{ORDER_SELECT} WHERE TRUE");
        let mut n = 0;
        if filter.customer.is_some() {
            n += 1;
            sql.push_str(&format!(" AND c.name = ${n}"));
        }
        if filter.state.is_some() {
            n += 1;
            sql.push_str(&format!(" AND o.state = ${n}"));
        }
        match filter.attention {
            None => {}
            Some(AttentionFilter::Any) => sql.push_str(" AND o.attention IS NOT NULL"),
            Some(AttentionFilter::Only(_)) => {
                n += 1;
                sql.push_str(&format!(" AND o.attention = ${n}"));
            }
        }
        sql.push_str(" ORDER BY o.id DESC");
        let mut query = sqlx::query(&sql);
        if let Some(customer) = &filter.customer {
            query = query.bind(customer);
        }
        if let Some(state) = filter.state {
            query = query.bind(state.as_str());
        }
        if let Some(AttentionFilter::Only(reason)) = filter.attention {
            query = query.bind(reason.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(order_from_row).collect()
    }

    async fn orders_to_sync(&self, upstream: &str, claim: &Claim) -> Result<Vec<Order>> {
        transaction!(self, |conn| orders_to_sync_in(conn, upstream, claim))
    }

    async fn apply_status(&self, id: i64, update: &StatusUpdate, now: Millis) -> Result<Applied> {
        let start_count = opt_to_db(update.start_count, "start count")?;
        transaction!(self, |conn| apply_status_in(
            conn,
            id,
            update,
            start_count,
            now
        ))
    }

    async fn resolve_placed(&self, id: i64, upstream_order: &str, now: Millis) -> Result<()> {
        transaction!(self, |conn| resolve_placed_in(
            conn,
            id,
            upstream_order,
            now
        ))
    }

    async fn resolve_not_placed(&self, id: i64, now: Millis) -> Result<Units> {
        transaction!(self, |conn| resolve_not_placed_in(conn, id, now))
    }

    async fn settle(&self, id: i64, refund: Units, note: &str, now: Millis) -> Result<Units> {
        transaction!(self, |conn| settle_in(conn, id, refund, note, now))
    }

    async fn count_orders_by_state(&self) -> Result<Vec<(OrderState, u64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM orders GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        // Every state, zeros included, so that a gauge drops back to 0.
        let mut counts: Vec<(OrderState, u64)> =
            OrderState::ALL.into_iter().map(|s| (s, 0)).collect();
        for row in &rows {
            let state = get_state(row)?;
            let n = get_u64(row, "n")?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == state) {
                slot.1 = n;
            }
        }
        Ok(counts)
    }

    async fn open_orders_by_upstream(&self) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query(super::OPEN_ORDERS_BY_UPSTREAM)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("upstream")?, get_u64(row, "n")?)))
            .collect()
    }

    async fn count_attention(&self) -> Result<Vec<(Attention, String, u64)>> {
        let rows = sqlx::query(super::COUNT_ATTENTION)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let reason = get_attention(row)?
                    .ok_or_else(|| undecodable("attention", "NULL in a count".into()))?;
                Ok((reason, row.try_get("upstream")?, get_u64(row, "n")?))
            })
            .collect()
    }

    async fn mark_stuck(&self, cutoffs: &StuckCutoffs, now: Millis) -> Result<u64> {
        let services: Vec<i64> = cutoffs
            .services
            .iter()
            .map(|(s, _)| to_db(*s, "service"))
            .collect::<Result<_>>()?;
        let befores: Vec<Millis> = cutoffs.services.iter().map(|(_, b)| *b).collect();
        // One statement: each overriding service's cutoff, the default for the rest.
        transaction!(self, |conn| async {
            let done = sqlx::query(
                "UPDATE orders o SET attention = 'stuck', updated_at = $1 \
                 WHERE o.state = 'placed' AND o.attention IS NULL \
                 AND COALESCE(o.progress_at, o.created_at) < COALESCE( \
                   (SELECT c.cutoff FROM UNNEST($3::BIGINT[], $4::BIGINT[]) AS c(service, cutoff) \
                    WHERE c.service = o.service), $2)",
            )
            .bind(now)
            .bind(cutoffs.before)
            .bind(&services)
            .bind(&befores)
            .execute(&mut *conn)
            .await?;
            Ok::<_, StoreError>(done.rows_affected())
        })
    }

    async fn unlink_order(&self, id: i64, note: &str, now: Millis) -> Result<OrderState> {
        transaction!(self, |conn| async {
            // A placed order's outcome is the operator's again; the others keep their state.
            // SET reads the row as it was, so `state` in each CASE is the old one.
            let changed = sqlx::query(
                "UPDATE orders SET upstream_order = NULL, note = $1, updated_at = $2, \
                 synced_at = NULL, lease_until = NULL, \
                 attention = CASE WHEN state = 'placed' THEN 'unknown_outcome' ELSE attention END, \
                 state = CASE WHEN state = 'placed' THEN 'unknown' ELSE state END \
                 WHERE id = $3 AND upstream_order IS NOT NULL AND state <> 'dispatching'",
            )
            .bind(note)
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            if changed.rows_affected() != 1 {
                return Err(super::cannot_unlink(fetch_order(conn, id).await?, id));
            }
            let order = fetch_order(conn, id).await?.ok_or(StoreError::NotFound)?;
            Ok::<_, StoreError>(order.state)
        })
    }

    async fn note_order(&self, id: i64, note: &str, now: Millis) -> Result<()> {
        let changed = sqlx::query("UPDATE orders SET note = $1, updated_at = $2 WHERE id = $3")
            .bind(note)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if changed.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn unique_upstream_orders(&self) -> Result<()> {
        transaction!(self, |conn| async {
            let indexed: bool = sqlx::query_scalar(
                "SELECT to_regclass('orders_upstream_order_unique') IS NOT NULL",
            )
            .fetch_one(&mut *conn)
            .await?;
            if indexed {
                return Ok(());
            }
            // Instances starting together: one checks and creates, the others wait here and
            // then find the index. The table lock keeps orders from taking a shared id between
            // the check and the index.
            sqlx::query("SELECT pg_advisory_xact_lock(7419260413)")
                .execute(&mut *conn)
                .await?;
            sqlx::query("LOCK TABLE orders IN SHARE MODE")
                .execute(&mut *conn)
                .await?;
            let rows: Vec<(String, String, i64)> = sqlx::query_as(super::SHARED_UPSTREAM_ORDERS)
                .fetch_all(&mut *conn)
                .await?;
            if !rows.is_empty() {
                return Err(StoreError::SharedUpstreamOrders(super::group_shared(rows)));
            }
            sqlx::query(super::UNIQUE_UPSTREAM_ORDER_INDEX)
                .execute(&mut *conn)
                .await?;
            Ok::<_, StoreError>(())
        })
    }

    // ---- refills ----

    async fn create_refill(
        &self,
        order: &Order,
        upstream_refill: u64,
        now: Millis,
    ) -> Result<Refill> {
        let upstream_refill = to_db(upstream_refill, "upstream refill id")?;
        transaction!(self, |conn| create_refill_in(
            conn,
            order.id,
            upstream_refill,
            now
        ))
    }

    async fn customer_refills(&self, customer_id: i64, ids: &[i64]) -> Result<Vec<Refill>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {REFILL_COLUMNS} FROM refills WHERE customer_id = $1 AND id = ANY($2) \
             ORDER BY id"
        ))
        .bind(customer_id)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(refill_from_row).collect()
    }

    async fn refills_to_sync(&self, upstream: &str, claim: &Claim) -> Result<Vec<Refill>> {
        transaction!(self, |conn| refills_to_sync_in(conn, upstream, claim))
    }

    async fn update_refill(&self, id: i64, status: RefillStatus, now: Millis) -> Result<()> {
        transaction!(self, |conn| update_refill_in(conn, id, status, now))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::fmt::Display;
    use std::sync::{Arc, OnceLock};

    use sqlx::postgres::PgSslMode;
    use sqlx::{Connection, Executor};
    use tokio::task::JoinSet;

    use super::*;
    use crate::store::conformance::{
        Backend, NOW, ONE, books, books_via, customer, get, new_order, placed, update,
    };

    /// The behaviour every store shares (`store::conformance`), on PostgreSQL.
    mod conformance {
        crate::store::conformance::conformance_tests!(super::PgDb);
    }

    /// The server the tests use unless `PANELGATE_TEST_POSTGRES` names another.
    const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

    fn server_url() -> String {
        std::env::var("PANELGATE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.to_owned())
    }

    /// Where the server is, for messages (without the password a URL may carry).
    fn location(options: &PgConnectOptions) -> String {
        format!("{}:{}", options.get_host(), options.get_port())
    }

    /// Outside CI, a test without a server passes with a note; in CI it fails.
    fn not_reachable<T>(at: &str, err: &dyn Display) -> Option<T> {
        if std::env::var_os("CI").is_some() {
            panic!(
                "PostgreSQL not reachable at {at} ({err}); CI is set, so the PostgreSQL tests \
                 fail rather than skip (PANELGATE_TEST_POSTGRES names the server)"
            );
        }
        eprintln!("skipped: PostgreSQL not reachable at {at} ({err})");
        None
    }

    /// A connection to the test server (its maintenance database), or `None` to skip.
    async fn server() -> Option<(PgConnectOptions, PgConnection)> {
        // After one failure the others skip at once instead of waiting for their own timeout.
        static UNREACHABLE: OnceLock<(String, String)> = OnceLock::new();
        if let Some((at, err)) = UNREACHABLE.get() {
            return not_reachable(at, err);
        }
        let options = PgConnectOptions::from_str(&server_url())
            .expect("PANELGATE_TEST_POSTGRES is not a PostgreSQL URL");
        let at = location(&options);
        let err = match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
        {
            Ok(Ok(conn)) => return Some((options, conn)),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {CONNECT_TIMEOUT:?}"),
        };
        let (at, err) = UNREACHABLE.get_or_init(|| (at, err));
        not_reachable(at, err)
    }

    /// Drops its database when dropped, connections still open to it included.
    struct DropDatabase {
        server: PgConnectOptions,
        name: String,
    }

    impl Drop for DropDatabase {
        fn drop(&mut self) {
            let server = self.server.clone();
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            // Drop cannot await: a thread of its own with a runtime of its own does it, so that
            // this works from any runtime, and while a failed test unwinds.
            let dropped = std::thread::spawn(move || -> std::result::Result<(), String> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime.block_on(async {
                    let mut conn = PgConnection::connect_with(&server)
                        .await
                        .map_err(|e| e.to_string())?;
                    conn.execute(sql.as_str())
                        .await
                        .map_err(|e| e.to_string())?;
                    conn.close().await.map_err(|e| e.to_string())
                })
            })
            .join();
            match dropped {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name),
                Err(_) => eprintln!("could not drop test database {}", self.name),
            }
        }
    }

    /// A database of its own for one test (`pg_test_<random>` on the server that
    /// `PANELGATE_TEST_POSTGRES` names), migrated, dropped when the test ends.
    pub(super) struct PgDb {
        // Declared first: the pool goes before the database is dropped.
        store: Arc<PostgresStore>,
        options: PgConnectOptions,
        dropper: DropDatabase,
    }

    impl PgDb {
        async fn create() -> Option<PgDb> {
            let (server, mut conn) = server().await?;
            let name = format!(
                "pg_test_{:016x}",
                getrandom::u64().expect("random database name")
            );
            conn.execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .expect("CREATE DATABASE");
            let _ = conn.close().await;
            let dropper = DropDatabase {
                server: server.clone(),
                name: name.clone(),
            };
            let options = server.database(&name);
            let store = PostgresStore::open_with(options.clone(), POOL_SIZE)
                .await
                .expect("open the test database");
            Some(PgDb {
                store: Arc::new(store),
                options,
                dropper,
            })
        }

        /// A URL for this test's database, `scheme://…/<name>?<query>`, from the server's URL.
        fn url(&self, scheme: &str, query: &str) -> String {
            let base = server_url();
            let base = base.split_once('?').map_or(base.as_str(), |(b, _)| b);
            let (_, rest) = base.split_once("://").unwrap_or(("", base));
            let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
            format!("{scheme}://{authority}/{}?{query}", self.dropper.name)
        }

        async fn another_pool(&self) -> PostgresStore {
            PostgresStore::open_with(self.options.clone(), POOL_SIZE)
                .await
                .expect("open a second pool")
        }
    }

    impl Backend for PgDb {
        async fn open() -> Option<PgDb> {
            PgDb::create().await
        }

        async fn open_shared() -> Option<PgDb> {
            PgDb::create().await
        }

        fn store(&self) -> Arc<dyn Store> {
            self.store.clone()
        }

        async fn another(&self) -> Arc<dyn Store> {
            Arc::new(self.another_pool().await)
        }

        async fn execute(&self, sql: &str) -> std::result::Result<u64, sqlx::Error> {
            Ok(sqlx::query(sql)
                .execute(&self.store.pool)
                .await?
                .rows_affected())
        }

        async fn scalar(&self, sql: &str) -> i64 {
            sqlx::query_scalar(sql)
                .fetch_one(&self.store.pool)
                .await
                .unwrap()
        }

        async fn post_and_roll_back(
            &self,
            customer_id: i64,
            amount: Units,
            kind: EntryKind,
            order_id: Option<i64>,
        ) -> Result<()> {
            let mut tx = self.store.pool.begin().await?;
            post(&mut tx, customer_id, amount, kind, order_id, None, NOW).await
            // Dropping `tx` rolls back.
        }
    }

    fn ids<T>(items: &[T], id: impl Fn(&T) -> i64) -> Vec<i64> {
        items.iter().map(id).collect()
    }

    /// 50 orders at once through two instances (two pools), funds for 20: exactly 20.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_floor_holds_across_two_pools() {
        let Some(db) = PgDb::create().await else {
            return;
        };
        let a = db.store();
        let b = db.another().await;
        let c = customer(&*a, "bob", 20 * ONE, 0).await;
        let mut tasks = JoinSet::new();
        for i in 0..50 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.spawn(async move {
                store
                    .create_order(&new_order(c.id, ONE, 1000), NOW + i)
                    .await
            });
        }
        let (mut created, mut refused) = (Vec::new(), 0);
        while let Some(result) = tasks.join_next().await {
            match result.unwrap() {
                Ok(o) => created.push(o.id),
                Err(StoreError::InsufficientFunds) => refused += 1,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!((created.len(), refused), (20, 30));
        assert_eq!(
            created.iter().collect::<HashSet<_>>().len(),
            20,
            "ids are unique"
        );
        assert_eq!(books(&db, c.id).await, 0);
        assert_eq!(books_via(&db, &*b, c.id).await, 0);
        assert_eq!(a.ledger(c.id).await.unwrap().len(), 21);
        let orders = b.list_orders(&OrderFilter::default()).await.unwrap();
        assert_eq!(orders.len(), 20);
    }

    /// Ten sync loops in two instances apply the same final status at once: one refund.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_final_status_from_two_pools_is_refunded_once() {
        let Some(db) = PgDb::create().await else {
            return;
        };
        let a = db.store();
        let b = db.another().await;
        let c = customer(&*a, "dan", 20 * ONE, 0).await;
        let cases = [
            (Status::Partial, Some(250), ONE),
            (Status::Canceled, None, 4 * ONE),
        ];
        let mut expected = 20 * ONE;
        for (n, (status, remains, refund)) in cases.into_iter().enumerate() {
            let o = placed(&*a, c.id, 4 * ONE, 1000, 100 + n as u64).await;
            expected -= 4 * ONE;
            let mut tasks = JoinSet::new();
            for i in 0..10 {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                tasks.spawn(async move {
                    store
                        .apply_status(o.id, &update(status, remains), NOW + i)
                        .await
                });
            }
            let (mut refunded, mut finalized) = (0, 0);
            while let Some(result) = tasks.join_next().await {
                let applied = result.unwrap().unwrap();
                refunded += applied.refund;
                finalized += u32::from(applied.finalized);
            }
            assert_eq!((refunded, finalized), (refund, 1), "{status:?}");
            expected += refund;
            let o = get(&*b, o.id).await;
            assert_eq!(
                (o.state, o.status, o.refunded),
                (OrderState::Final, status, refund)
            );
            let refunds = a
                .ledger(c.id)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.kind == EntryKind::Refund && e.order_id == Some(o.id))
                .count();
            assert_eq!(refunds, 1, "{status:?}");
            assert_eq!(books(&db, c.id).await, expected);
        }
    }

    /// Sync loops in two instances claim the same work at once: every row goes to exactly
    /// one of them; nobody else gets it while the lease holds; once it has run out (the
    /// claimer died), the work is claimed again, again by exactly one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claims_from_two_pools_never_overlap_and_expired_leases_are_taken_over() {
        let Some(db) = PgDb::create().await else {
            return;
        };
        let a = db.store();
        let b = db.another().await;
        let c = customer(&*a, "lee", 100 * ONE, 0).await;
        let mut orders = Vec::new();
        let mut refills = Vec::new();
        for n in 0..40 {
            let o = placed(&*a, c.id, ONE, 1000, n).await;
            if n % 2 == 0 {
                refills.push(a.create_refill(&o, 1000 + n, NOW).await.unwrap().id);
            }
            orders.push(o.id);
        }
        let all_orders: HashSet<i64> = orders.iter().copied().collect();
        let all_refills: HashSet<i64> = refills.iter().copied().collect();

        // Eight claimers, half on each pool, take batches of three until nothing is left.
        let claim_all = |now: Millis| {
            let mut tasks = JoinSet::new();
            for i in 0..8 {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                tasks.spawn(async move {
                    let claim = Claim {
                        stale_before: now,
                        now,
                        lease_until: now + 60_000,
                        limit: 3,
                    };
                    let (mut orders, mut refills) = (Vec::new(), Vec::new());
                    loop {
                        let o = store.orders_to_sync("alpha", &claim).await.unwrap();
                        let r = store.refills_to_sync("alpha", &claim).await.unwrap();
                        if o.is_empty() && r.is_empty() {
                            break;
                        }
                        assert!(o.len() <= 3 && r.len() <= 3);
                        orders.extend(ids(&o, |o| o.id));
                        refills.extend(ids(&r, |r| r.id));
                        tokio::task::yield_now().await;
                    }
                    (orders, refills)
                });
            }
            tasks
        };
        let partition = |mut tasks: JoinSet<(Vec<i64>, Vec<i64>)>| async move {
            let (mut orders, mut refills) = (Vec::new(), Vec::new());
            while let Some(result) = tasks.join_next().await {
                let (o, r) = result.unwrap();
                orders.extend(o);
                refills.extend(r);
            }
            (orders, refills)
        };
        let check = |(orders, refills): (Vec<i64>, Vec<i64>)| {
            let order_set: HashSet<i64> = orders.iter().copied().collect();
            let refill_set: HashSet<i64> = refills.iter().copied().collect();
            assert_eq!(order_set.len(), orders.len(), "an order was claimed twice");
            assert_eq!(
                refill_set.len(),
                refills.len(),
                "a refill was claimed twice"
            );
            assert_eq!(order_set, all_orders);
            assert_eq!(refill_set, all_refills);
        };

        let start = NOW;
        check(partition(claim_all(start)).await);
        // While the leases hold, neither instance gets anything.
        for store in [&a, &b] {
            let during = Claim {
                stale_before: start + 30_000,
                now: start + 30_000,
                lease_until: start + 90_000,
                limit: 100,
            };
            assert!(
                store
                    .orders_to_sync("alpha", &during)
                    .await
                    .unwrap()
                    .is_empty()
            );
            assert!(
                store
                    .refills_to_sync("alpha", &during)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
        // The claimers died without syncing anything: at lease_until the work is theirs to
        // take over, each row by exactly one of them again.
        check(partition(claim_all(start + 60_000)).await);
    }

    /// A row that another transaction holds locked (a claim in progress, a status being
    /// applied) is skipped by a claim, not waited for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_skips_locked_rows_instead_of_waiting() {
        let Some(db) = PgDb::create().await else {
            return;
        };
        let store = db.store();
        let c = customer(&*store, "mo", 10 * ONE, 0).await;
        let first = placed(&*store, c.id, ONE, 1000, 1).await;
        let second = placed(&*store, c.id, ONE, 1000, 2).await;

        let other = db.another_pool().await;
        let mut holder = other.pool.begin().await.unwrap();
        sqlx::query("SELECT id FROM orders WHERE id = $1 FOR NO KEY UPDATE")
            .bind(first.id)
            .execute(&mut *holder)
            .await
            .unwrap();
        let claim = Claim {
            stale_before: NOW,
            now: NOW,
            lease_until: NOW + 1000,
            limit: 10,
        };
        let claimed = tokio::time::timeout(
            Duration::from_secs(5),
            store.orders_to_sync("alpha", &claim),
        )
        .await
        .expect("the claim waited for a locked row")
        .unwrap();
        assert_eq!(ids(&claimed, |o| o.id), [second.id]);
        holder.rollback().await.unwrap();
        let claimed = store.orders_to_sync("alpha", &claim).await.unwrap();
        assert_eq!(ids(&claimed, |o| o.id), [first.id]);
    }

    /// `store::open` takes both URL schemes, and `sslmode=require` connects over TLS
    /// (rustls) when the server offers it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn urls_of_both_schemes_open_and_tls_works() {
        let Some(db) = PgDb::create().await else {
            return;
        };
        let c = customer(&*db.store(), "ned", ONE, 0).await;
        for scheme in ["postgres", "postgresql"] {
            let store = crate::store::open(&db.url(scheme, "")).await.unwrap();
            store.ping().await.unwrap();
            assert_eq!(
                store.customer_by_name("ned").await.unwrap(),
                Some(c.clone())
            );
        }

        let ssl: String = sqlx::query_scalar("SHOW ssl")
            .fetch_one(&db.store.pool)
            .await
            .unwrap();
        if ssl != "on" {
            println!(
                "TLS not checked: the server at {} has ssl = {ssl}",
                location(&db.options)
            );
            return;
        }
        let url = db.url("postgresql", "sslmode=require");
        assert!(matches!(
            PgConnectOptions::from_str(&url).unwrap().get_ssl_mode(),
            PgSslMode::Require
        ));
        let tls = PostgresStore::open(&url).await.unwrap();
        let encrypted: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(&tls.pool)
                .await
                .unwrap();
        assert!(encrypted, "sslmode=require connected without TLS");
        assert_eq!(tls.customer_by_name("ned").await.unwrap(), Some(c));
        let app: String = sqlx::query_scalar("SHOW application_name")
            .fetch_one(&tls.pool)
            .await
            .unwrap();
        assert_eq!(app, APPLICATION_NAME);
    }

    /// Serialization failures and deadlocks are retried; nothing else is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serialization_failures_are_told_apart() {
        let Some(db) = PgDb::create().await else {
            return;
        };
        let pool = &db.store.pool;
        sqlx::query("CREATE TABLE scratch (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO scratch VALUES (1, 0)")
            .execute(pool)
            .await
            .unwrap();
        let mut reader = pool.begin().await.unwrap();
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *reader)
            .await
            .unwrap();
        sqlx::query("SELECT v FROM scratch WHERE id = 1")
            .execute(&mut *reader)
            .await
            .unwrap();
        sqlx::query("UPDATE scratch SET v = v + 1 WHERE id = 1")
            .execute(pool)
            .await
            .unwrap();
        let err = sqlx::query("UPDATE scratch SET v = v + 1 WHERE id = 1")
            .execute(&mut *reader)
            .await
            .unwrap_err();
        assert!(is_transient(&StoreError::Db(err)));
        drop(reader);

        let err = sqlx::query("INSERT INTO scratch VALUES (1, 0)")
            .execute(pool)
            .await
            .unwrap_err();
        assert!(!is_transient(&StoreError::Db(err)));
        assert!(!is_transient(&StoreError::InsufficientFunds));
    }

    /// On a server whose transactions are SERIALIZABLE by default, concurrent writers get
    /// serialization failures instead of waiting: the store retries them and every rule
    /// still holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_serializable_database_is_retried_not_failed() {
        let Some(db) = PgDb::create().await else {
            return;
        };
        sqlx::query(&format!(
            "ALTER DATABASE {} SET default_transaction_isolation = 'serializable'",
            db.dropper.name
        ))
        .execute(&db.store.pool)
        .await
        .unwrap();
        // New pools, so that every connection has the setting.
        let a: Arc<dyn Store> = Arc::new(db.another_pool().await);
        let b = Arc::new(db.another_pool().await);
        let level: String = sqlx::query_scalar("SHOW transaction_isolation")
            .fetch_one(&b.pool)
            .await
            .unwrap();
        assert_eq!(level, "serializable");
        let b: Arc<dyn Store> = b;

        for round in 0..5 {
            let name = format!("sue{round}");
            let c = customer(&*a, &name, 2 * ONE, 0).await;
            let mut tasks = JoinSet::new();
            for i in 0..4 {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                tasks.spawn(async move {
                    store
                        .create_order(&new_order(c.id, ONE, 1000), NOW + i)
                        .await
                });
            }
            let mut created = Vec::new();
            while let Some(result) = tasks.join_next().await {
                match result.unwrap() {
                    Ok(o) => created.push(o),
                    Err(StoreError::InsufficientFunds) => {}
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            assert_eq!(created.len(), 2);
            assert_eq!(books_via(&db, &*a, c.id).await, 0);

            let o = &created[0];
            a.mark_placed(o.id, &round.to_string(), NOW).await.unwrap();
            let mut tasks = JoinSet::new();
            for i in 0..4 {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                let id = o.id;
                tasks.spawn(async move {
                    store
                        .apply_status(id, &update(Status::Canceled, None), NOW + i)
                        .await
                });
            }
            let mut refunded = 0;
            while let Some(result) = tasks.join_next().await {
                refunded += result.unwrap().unwrap().refund;
            }
            assert_eq!(refunded, ONE);
            assert_eq!(books_via(&db, &*b, c.id).await, ONE);
        }
    }

    /// What the SQLite schema refuses through STRICT tables and triggers, this one refuses
    /// too; and the ledger cannot be emptied with TRUNCATE either.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_ledger_cannot_be_truncated() {
        let Some(db) = PgDb::create().await else {
            return;
        };
        let c = customer(&*db.store(), "val", ONE, 0).await;
        assert!(db.execute("TRUNCATE ledger CASCADE").await.is_err());
        assert!(
            db.execute("UPDATE customers SET key_hash = '\\x00'")
                .await
                .is_err(),
            "a key hash is 32 bytes"
        );
        assert_eq!(books(&db, c.id).await, ONE);
    }
}
