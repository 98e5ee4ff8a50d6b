//! The SQLite [`Store`]: one file next to the binary, in WAL mode, shared by the server and
//! the operator's CLI.
//!
//! # How the money rules hold
//!
//! Every write runs in one transaction opened with `BEGIN IMMEDIATE`, which takes SQLite's
//! write lock *before* the first read. A deferred `BEGIN` would let two transactions read the
//! same balance and both decide that a charge fits; with `IMMEDIATE` the second one waits (up
//! to the busy timeout) until the first has committed, then reads the new balance. SQLite has
//! one writer per database file, so this serialises every balance change across all
//! connections and all processes (server and CLI alike) without any row locking. We use sqlx's
//! own [`Pool::begin_with`](sqlx::Pool::begin_with) rather than a hand-written `BEGIN`: its
//! [`Transaction`] rolls back on drop (the rollback is queued on the connection's worker
//! before the connection goes back to the pool), so an error path or a cancelled future can
//! never hand an open transaction to the next user of that connection.
//!
//! Inside one process, writers first queue on an async mutex, so they wait their turn in
//! order instead of polling SQLite's busy handler (which sleeps in steps of up to 100 ms);
//! the busy timeout then only matters against another process.
//!
//! On top of the lock, the code that lowers a balance checks the floor in Rust with checked
//! arithmetic, guards the `UPDATE` itself (`WHERE balance + ? >= -credit_limit`, checked by
//! rows affected), and the table has `CHECK (balance >= -credit_limit)`. State transitions are
//! guarded the same way (`WHERE id = ? AND state = 'placed'`), and the ledger's unique index on
//! `(order_id, kind)` makes a second charge, release or refund of one order impossible.
//!
//! `synchronous = FULL`: a commit is on disk (the WAL is fsynced) when the call returns, so an
//! order id given to a customer survives a power cut.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use super::{
    Applied, Claim, Customer, EntryKind, KeyHash, LedgerEntry, Millis, NewOrder, Order,
    OrderFilter, OrderState, Refill, Result, StatusUpdate, Store, StoreError, Units,
};
use crate::money;
use crate::protocol::{RefillStatus, Status};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a write waits for another process (the CLI, a second server by mistake) to
/// release SQLite's write lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections to a database file. SQLite has one writer at a time anyway; the others serve
/// reads (WAL readers never block the writer nor each other).
const POOL_SIZE: u32 = 4;

/// The note [`Store::recover_dispatching`] leaves on the orders it marks `Unknown`.
pub const INTERRUPTED_NOTE: &str =
    "interrupted: the process stopped while the upstream add was in flight";

/// At most this many ids in one `IN (…)` list.
const IN_CHUNK: usize = 500;

pub struct SqliteStore {
    pool: SqlitePool,
    /// Queues this process's writers; see the module documentation.
    writer: Mutex<()>,
}

/// One write transaction: the in-process writer turn and an open `BEGIN IMMEDIATE`.
/// Dropping it without [`Write::commit`] rolls back.
struct Write<'a> {
    // Declared first so that it is dropped (rolled back) before the turn is given up.
    tx: Transaction<'static, Sqlite>,
    _turn: MutexGuard<'a, ()>,
}

impl Write<'_> {
    fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }

    async fn commit(self) -> Result<()> {
        let Write { tx, _turn } = self;
        tx.commit().await?;
        Ok(())
    }
}

impl SqliteStore {
    /// Opens (creating if missing) `sqlite://path/to/file.db`, or `sqlite::memory:` for tests,
    /// and applies the migrations.
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let mut options = SqliteConnectOptions::from_str(url)?
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Full);
        let pool = if memory {
            // One connection that never closes: every query sees the same in-memory database,
            // which lives exactly as long as this store.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await?
        } else {
            create_parent_dir(options.get_filename())?;
            options = options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal);
            SqlitePoolOptions::new()
                .max_connections(POOL_SIZE)
                .connect_with(options)
                .await?
        };
        MIGRATOR.run(&pool).await?;
        Ok(SqliteStore {
            pool,
            writer: Mutex::new(()),
        })
    }

    /// Closes every connection (checkpointing the WAL when the last one goes).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction, holding the write lock from its first statement on.
    async fn write(&self) -> Result<Write<'_>> {
        let turn = self.writer.lock().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(Write { tx, _turn: turn })
    }
}

fn create_parent_dir(file: &Path) -> Result<()> {
    if let Some(dir) = file.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
    }
    Ok(())
}

// ---- conversions ----

/// A value that cannot be stored as it is.
fn unstorable(message: String) -> StoreError {
    StoreError::Db(sqlx::Error::Encode(message.into()))
}

/// A stored value that does not read back as what it should be.
fn undecodable(column: &str, message: String) -> StoreError {
    StoreError::Db(sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: message.into(),
    })
}

/// SQLite integers are signed 64-bit; ids and counts above `i64::MAX` cannot be stored.
fn to_db(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| unstorable(format!("{what} {value} is too large to store")))
}

fn opt_to_db(value: Option<u64>, what: &str) -> Result<Option<i64>> {
    value.map(|v| to_db(v, what)).transpose()
}

fn get_u64(row: &SqliteRow, column: &str) -> Result<u64> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| undecodable(column, format!("negative value {value}")))
}

fn get_opt_u64(row: &SqliteRow, column: &str) -> Result<Option<u64>> {
    let value: Option<i64> = row.try_get(column)?;
    value
        .map(|v| u64::try_from(v).map_err(|_| undecodable(column, format!("negative value {v}"))))
        .transpose()
}

fn get_state(row: &SqliteRow) -> Result<OrderState> {
    let text: String = row.try_get("state")?;
    OrderState::parse(&text).ok_or_else(|| undecodable("state", format!("unknown state {text:?}")))
}

fn get_status(row: &SqliteRow) -> Result<Status> {
    let text: String = row.try_get("status")?;
    Status::parse(&text).ok_or_else(|| undecodable("status", format!("unknown status {text:?}")))
}

fn get_refill_status(row: &SqliteRow) -> Result<RefillStatus> {
    let text: String = row.try_get("status")?;
    RefillStatus::parse(&text)
        .ok_or_else(|| undecodable("status", format!("unknown refill status {text:?}")))
}

/// `UNIQUE constraint failed: customers.name` → `Duplicate(what)`; anything else unchanged.
fn duplicate(err: sqlx::Error, what: impl FnOnce(&str) -> String) -> StoreError {
    if let sqlx::Error::Database(db) = &err
        && db.is_unique_violation()
    {
        let message = db.message();
        let constraint = message.rsplit(": ").next().unwrap_or(message);
        return StoreError::Duplicate(what(constraint));
    }
    StoreError::Db(err)
}

fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s
}

// ---- rows ----

const CUSTOMER_COLUMNS: &str = "c.id AS id, c.name AS name, c.grp AS grp, c.balance AS balance, \
     c.credit_limit AS credit_limit, c.enabled AS enabled, c.created_at AS created_at";

fn customer_from_row(row: &SqliteRow) -> Result<Customer> {
    Ok(Customer {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        group: row.try_get("grp")?,
        balance: row.try_get("balance")?,
        credit_limit: row.try_get("credit_limit")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

const ORDER_SELECT: &str = "SELECT o.id AS id, o.customer_id AS customer_id, c.name AS customer, \
     o.service AS service, o.upstream AS upstream, o.upstream_service AS upstream_service, \
     o.upstream_order AS upstream_order, o.state AS state, o.status AS status, \
     o.charge AS charge, o.refunded AS refunded, o.billed AS billed, o.remains AS remains, \
     o.start_count AS start_count, o.cost AS cost, o.link AS link, o.fields AS fields, \
     o.note AS note, o.created_at AS created_at, o.updated_at AS updated_at, \
     o.synced_at AS synced_at \
     FROM orders o JOIN customers c ON c.id = o.customer_id";

fn order_from_row(row: &SqliteRow) -> Result<Order> {
    Ok(Order {
        id: row.try_get("id")?,
        customer_id: row.try_get("customer_id")?,
        customer: row.try_get("customer")?,
        service: get_u64(row, "service")?,
        upstream: row.try_get("upstream")?,
        upstream_service: get_u64(row, "upstream_service")?,
        upstream_order: get_opt_u64(row, "upstream_order")?,
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
    })
}

const REFILL_COLUMNS: &str = "id, order_id, customer_id, upstream, upstream_refill, status, \
     created_at, synced_at";

fn refill_from_row(row: &SqliteRow) -> Result<Refill> {
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

fn entry_from_row(row: &SqliteRow) -> Result<LedgerEntry> {
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

/// The statuses a refill can still leave, as the SQL list they are matched against.
fn open_refill_statuses() -> Vec<&'static str> {
    RefillStatus::ALL
        .into_iter()
        .filter(|s| !s.is_final())
        .map(RefillStatus::as_str)
        .collect()
}

// ---- money ----

/// The refund a final `status` is due on an order that cost `charge` for `billed` units, of
/// which `refunded` was already given back: `Partial` the pro-rata rest (rounded down; an
/// unreported or negative `remains` counts as nothing left), `Canceled` everything still held,
/// `Completed` nothing. Never more than `charge - refunded`.
fn refund_due(
    status: Status,
    charge: Units,
    refunded: Units,
    billed: u64,
    remains: Option<i64>,
) -> Result<Units> {
    let left = charge.saturating_sub(refunded).max(0);
    let due = match status {
        Status::Partial => {
            let remains = remains.unwrap_or(0).max(0).unsigned_abs();
            let refund = money::partial_refund(money::from_units(charge), billed, remains);
            money::to_units(refund)
                .ok_or_else(|| unstorable(format!("refund {refund} is not a whole unit")))?
        }
        Status::Canceled => left,
        Status::Completed | Status::Pending | Status::InProgress | Status::Processing => 0,
    };
    Ok(due.clamp(0, left))
}

/// Moves `amount` into (positive) or out of (negative) a customer's balance and writes the
/// ledger entry for it: the only way this store changes a balance. Money out may not take
/// the balance below `-credit_limit`. Must run inside a [`Write`].
async fn post(
    conn: &mut SqliteConnection,
    customer_id: i64,
    amount: Units,
    kind: EntryKind,
    order_id: Option<i64>,
    note: Option<&str>,
    now: Millis,
) -> Result<()> {
    let row = sqlx::query("SELECT balance, credit_limit FROM customers WHERE id = ?")
        .bind(customer_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    let balance: Units = row.try_get("balance")?;
    let credit_limit: Units = row.try_get("credit_limit")?;
    let after = balance
        .checked_add(amount)
        .ok_or_else(|| unstorable(format!("balance {balance} + {amount} overflows")))?;
    let changed = if amount < 0 {
        if after < -credit_limit {
            return Err(StoreError::InsufficientFunds);
        }
        // Belt and braces: the write lock makes the check above exact, and this guard would
        // still refuse a balance below the floor if it were not.
        sqlx::query(
            "UPDATE customers SET balance = balance + ?1 \
             WHERE id = ?2 AND balance + ?1 >= -credit_limit",
        )
        .bind(amount)
        .bind(customer_id)
        .execute(&mut *conn)
        .await?
    } else {
        sqlx::query("UPDATE customers SET balance = balance + ?1 WHERE id = ?2")
            .bind(amount)
            .bind(customer_id)
            .execute(&mut *conn)
            .await?
    };
    if changed.rows_affected() != 1 {
        return Err(StoreError::InsufficientFunds);
    }
    sqlx::query(
        "INSERT INTO ledger (customer_id, amount, kind, order_id, note, created_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
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
async fn not_in_state(conn: &mut SqliteConnection, id: i64, expected: OrderState) -> StoreError {
    let state = sqlx::query_scalar::<_, String>("SELECT state FROM orders WHERE id = ?")
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

async fn fetch_order(conn: &mut SqliteConnection, id: i64) -> Result<Option<Order>> {
    let row = sqlx::query(&format!("{ORDER_SELECT} WHERE o.id = ?"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(order_from_row).transpose()
}

async fn fetch_customer(conn: &mut SqliteConnection, id: i64) -> Result<Customer> {
    let row = sqlx::query(&format!(
        "SELECT {CUSTOMER_COLUMNS} FROM customers c WHERE c.id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    customer_from_row(&row)
}

#[async_trait]
impl Store for SqliteStore {
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
        let mut w = self.write().await?;
        let id = sqlx::query(
            "INSERT INTO customers (name, key_hash, grp, credit_limit, balance, enabled, created_at) \
             VALUES (?, ?, ?, ?, 0, 1, ?)",
        )
        .bind(name)
        .bind(&key_hash[..])
        .bind(group)
        .bind(credit_limit)
        .bind(now)
        .execute(w.conn())
        .await
        .map_err(|e| {
            duplicate(e, |constraint| {
                if constraint.ends_with("key_hash") {
                    "a customer with this API key".to_owned()
                } else {
                    format!("customer {name:?}")
                }
            })
        })?
        .last_insert_rowid();
        // The opening balance goes through the ledger like any other change (a negative one,
        // if ever given, as a debit within the credit limit).
        if balance > 0 {
            post(
                w.conn(),
                id,
                balance,
                EntryKind::Credit,
                None,
                Some("opening balance"),
                now,
            )
            .await?;
        } else if balance < 0 {
            post(
                w.conn(),
                id,
                balance,
                EntryKind::Debit,
                None,
                Some("opening balance"),
                now,
            )
            .await?;
        }
        let customer = fetch_customer(w.conn(), id).await?;
        w.commit().await?;
        Ok(customer)
    }

    async fn customer_by_key(&self, hash: &KeyHash) -> Result<Option<(Customer, KeyHash)>> {
        let row = sqlx::query(&format!(
            "SELECT {CUSTOMER_COLUMNS}, c.key_hash AS key_hash FROM customers c WHERE c.key_hash = ?"
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
            "SELECT {CUSTOMER_COLUMNS} FROM customers c WHERE c.name = ?"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(customer_from_row).transpose()
    }

    async fn list_customers(&self) -> Result<Vec<(Customer, u64)>> {
        let rows = sqlx::query(&format!(
            "SELECT {CUSTOMER_COLUMNS}, \
             (SELECT COUNT(*) FROM orders o WHERE o.customer_id = c.id) AS orders \
             FROM customers c ORDER BY c.name"
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
        let mut w = self.write().await?;
        let id = sqlx::query_scalar::<_, i64>("SELECT id FROM customers WHERE name = ?")
            .bind(name)
            .fetch_optional(w.conn())
            .await?
            .ok_or(StoreError::NotFound)?;
        // Zero changes nothing, so it writes nothing.
        if amount != 0 {
            let kind = if amount > 0 {
                EntryKind::Credit
            } else {
                EntryKind::Debit
            };
            post(w.conn(), id, amount, kind, None, note, now).await?;
        }
        let customer = fetch_customer(w.conn(), id).await?;
        w.commit().await?;
        Ok(customer)
    }

    async fn set_enabled(&self, name: &str, enabled: bool) -> Result<()> {
        let mut w = self.write().await?;
        let changed = sqlx::query("UPDATE customers SET enabled = ? WHERE name = ?")
            .bind(i64::from(enabled))
            .bind(name)
            .execute(w.conn())
            .await?;
        if changed.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
        w.commit().await
    }

    async fn set_key(&self, name: &str, key_hash: &KeyHash) -> Result<()> {
        let mut w = self.write().await?;
        let changed = sqlx::query("UPDATE customers SET key_hash = ? WHERE name = ?")
            .bind(&key_hash[..])
            .bind(name)
            .execute(w.conn())
            .await
            .map_err(|e| duplicate(e, |_| "a customer with this API key".to_owned()))?;
        if changed.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
        w.commit().await
    }

    async fn ledger(&self, customer_id: i64) -> Result<Vec<LedgerEntry>> {
        let rows = sqlx::query(
            "SELECT id, customer_id, amount, kind, order_id, note, created_at \
             FROM ledger WHERE customer_id = ? ORDER BY id",
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
        let service = to_db(order.service, "service")?;
        let upstream_service = to_db(order.upstream_service, "upstream service")?;
        let billed = to_db(order.billed, "billed quantity")?;

        let mut w = self.write().await?;
        // Refuse early, before inserting anything, when the funds are not there; `post` checks
        // again (exactly, under the same lock) when it moves the money.
        let row = sqlx::query("SELECT balance, credit_limit FROM customers WHERE id = ?")
            .bind(order.customer_id)
            .fetch_optional(w.conn())
            .await?
            .ok_or(StoreError::NotFound)?;
        let balance: Units = row.try_get("balance")?;
        let credit_limit: Units = row.try_get("credit_limit")?;
        match balance.checked_sub(order.charge) {
            Some(after) if after >= -credit_limit => {}
            _ => return Err(StoreError::InsufficientFunds),
        }

        let id = sqlx::query(
            "INSERT INTO orders (customer_id, service, upstream, upstream_service, state, status, \
             charge, refunded, billed, link, fields, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)",
        )
        .bind(order.customer_id)
        .bind(service)
        .bind(&order.upstream)
        .bind(upstream_service)
        .bind(OrderState::Dispatching.as_str())
        .bind(Status::Pending.as_str())
        .bind(order.charge)
        .bind(billed)
        .bind(&order.link)
        .bind(&order.fields)
        .bind(now)
        .bind(now)
        .execute(w.conn())
        .await?
        .last_insert_rowid();
        // The charge entry is written even for a zero charge (per-post billing): it is the
        // record that the order took its funds.
        post(
            w.conn(),
            order.customer_id,
            -order.charge,
            EntryKind::Charge,
            Some(id),
            None,
            now,
        )
        .await?;
        let created = fetch_order(w.conn(), id)
            .await?
            .ok_or(StoreError::NotFound)?;
        w.commit().await?;
        Ok(created)
    }

    async fn retarget_order(&self, id: i64, upstream: &str, upstream_service: u64) -> Result<()> {
        let upstream_service = to_db(upstream_service, "upstream service")?;
        let mut w = self.write().await?;
        let changed = sqlx::query(
            "UPDATE orders SET upstream = ?, upstream_service = ? \
             WHERE id = ? AND state = 'dispatching'",
        )
        .bind(upstream)
        .bind(upstream_service)
        .bind(id)
        .execute(w.conn())
        .await?;
        if changed.rows_affected() != 1 {
            return Err(not_in_state(w.conn(), id, OrderState::Dispatching).await);
        }
        w.commit().await
    }

    async fn mark_placed(&self, id: i64, upstream_order: u64, now: Millis) -> Result<()> {
        let upstream_order = to_db(upstream_order, "upstream order id")?;
        let mut w = self.write().await?;
        let changed = sqlx::query(
            "UPDATE orders SET state = 'placed', upstream_order = ?, status = ?, updated_at = ? \
             WHERE id = ? AND state = 'dispatching'",
        )
        .bind(upstream_order)
        .bind(Status::Pending.as_str())
        .bind(now)
        .bind(id)
        .execute(w.conn())
        .await?;
        if changed.rows_affected() != 1 {
            return Err(not_in_state(w.conn(), id, OrderState::Dispatching).await);
        }
        w.commit().await
    }

    async fn mark_rejected(&self, id: i64, note: &str, now: Millis) -> Result<()> {
        let mut w = self.write().await?;
        let row = sqlx::query(
            "UPDATE orders SET state = 'rejected', note = ?, updated_at = ? \
             WHERE id = ? AND state = 'dispatching' RETURNING customer_id, charge",
        )
        .bind(note)
        .bind(now)
        .bind(id)
        .fetch_optional(w.conn())
        .await?;
        let Some(row) = row else {
            return Err(not_in_state(w.conn(), id, OrderState::Dispatching).await);
        };
        let customer_id: i64 = row.try_get("customer_id")?;
        let charge: Units = row.try_get("charge")?;
        // `refunded` stays 0: a release is not a refund, the order simply never cost anything.
        post(
            w.conn(),
            customer_id,
            charge,
            EntryKind::Release,
            Some(id),
            Some(note),
            now,
        )
        .await?;
        w.commit().await
    }

    async fn mark_unknown(&self, id: i64, note: &str, now: Millis) -> Result<()> {
        let mut w = self.write().await?;
        let changed = sqlx::query(
            "UPDATE orders SET state = 'unknown', note = ?, updated_at = ? \
             WHERE id = ? AND state = 'dispatching'",
        )
        .bind(note)
        .bind(now)
        .bind(id)
        .execute(w.conn())
        .await?;
        if changed.rows_affected() != 1 {
            return Err(not_in_state(w.conn(), id, OrderState::Dispatching).await);
        }
        w.commit().await
    }

    async fn recover_dispatching(&self, updated_before: Millis, now: Millis) -> Result<u64> {
        let mut w = self.write().await?;
        let changed = sqlx::query(
            "UPDATE orders SET state = 'unknown', note = ?, updated_at = ? \
             WHERE state = 'dispatching' AND updated_at < ?",
        )
        .bind(INTERRUPTED_NOTE)
        .bind(now)
        .bind(updated_before)
        .execute(w.conn())
        .await?;
        w.commit().await?;
        Ok(changed.rows_affected())
    }

    async fn order(&self, id: i64) -> Result<Option<Order>> {
        let mut conn = self.pool.acquire().await?;
        fetch_order(&mut conn, id).await
    }

    async fn customer_orders(&self, customer_id: i64, ids: &[i64]) -> Result<Vec<Order>> {
        let mut orders = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "{ORDER_SELECT} WHERE o.customer_id = ? AND o.id IN ({}) ORDER BY o.id",
                placeholders(chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(customer_id);
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.pool).await? {
                orders.push(order_from_row(&row)?);
            }
        }
        Ok(orders)
    }

    async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<Order>> {
        let mut sql = format!("{ORDER_SELECT} WHERE 1 = 1");
        if filter.customer.is_some() {
            sql.push_str(" AND c.name = ?");
        }
        if filter.state.is_some() {
            sql.push_str(" AND o.state = ?");
        }
        sql.push_str(" ORDER BY o.id DESC");
        let mut query = sqlx::query(&sql);
        if let Some(customer) = &filter.customer {
            query = query.bind(customer);
        }
        if let Some(state) = filter.state {
            query = query.bind(state.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(order_from_row).collect()
    }

    async fn orders_to_sync(&self, upstream: &str, claim: &Claim) -> Result<Vec<Order>> {
        // Ascending order puts NULLs (never synced) first in SQLite. Claimed under the write
        // lock, so two claims never take the same rows.
        let mut w = self.write().await?;
        let rows = sqlx::query(&format!(
            "{ORDER_SELECT} WHERE o.state = 'placed' AND o.upstream = ? \
             AND (o.synced_at IS NULL OR o.synced_at < ?) \
             AND (o.lease_until IS NULL OR o.lease_until <= ?) \
             ORDER BY o.synced_at, o.id LIMIT ?"
        ))
        .bind(upstream)
        .bind(claim.stale_before)
        .bind(claim.now)
        .bind(i64::from(claim.limit))
        .fetch_all(w.conn())
        .await?;
        let orders: Vec<Order> = rows.iter().map(order_from_row).collect::<Result<_>>()?;
        for o in &orders {
            sqlx::query("UPDATE orders SET lease_until = ? WHERE id = ?")
                .bind(claim.lease_until)
                .bind(o.id)
                .execute(w.conn())
                .await?;
        }
        w.commit().await?;
        Ok(orders)
    }

    async fn apply_status(&self, id: i64, update: &StatusUpdate, now: Millis) -> Result<Applied> {
        let start_count = opt_to_db(update.start_count, "start count")?;
        let mut w = self.write().await?;
        let row = sqlx::query(
            "SELECT customer_id, state, charge, refunded, billed FROM orders WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(w.conn())
        .await?
        .ok_or(StoreError::NotFound)?;
        if get_state(&row)? != OrderState::Placed {
            // Dispatching, unknown, rejected, or already final (another sync got there first):
            // nothing to do. Dropping `w` rolls back the empty transaction.
            return Ok(Applied::default());
        }

        // `remains` is stored as reported, since a refund is computed from it; `start_count`
        // and `cost` are informational and keep their last known value if the upstream
        // omitted them this time.
        if !update.status.is_final() {
            sqlx::query(
                "UPDATE orders SET status = ?, remains = ?, \
                 start_count = COALESCE(?, start_count), cost = COALESCE(?, cost), \
                 synced_at = ?, updated_at = ? \
                 WHERE id = ? AND state = 'placed'",
            )
            .bind(update.status.as_str())
            .bind(update.remains)
            .bind(start_count)
            .bind(update.cost)
            .bind(now)
            .bind(now)
            .bind(id)
            .execute(w.conn())
            .await?;
            w.commit().await?;
            return Ok(Applied::default());
        }

        let customer_id: i64 = row.try_get("customer_id")?;
        let charge: Units = row.try_get("charge")?;
        let refunded: Units = row.try_get("refunded")?;
        let billed = get_u64(&row, "billed")?;
        let refund = refund_due(update.status, charge, refunded, billed, update.remains)?;

        let changed = sqlx::query(
            "UPDATE orders SET state = 'final', status = ?, remains = ?, \
             start_count = COALESCE(?, start_count), cost = COALESCE(?, cost), \
             refunded = refunded + ?, synced_at = ?, updated_at = ? \
             WHERE id = ? AND state = 'placed'",
        )
        .bind(update.status.as_str())
        .bind(update.remains)
        .bind(start_count)
        .bind(update.cost)
        .bind(refund)
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(w.conn())
        .await?;
        if changed.rows_affected() != 1 {
            // Cannot happen under the write lock; if it did, someone else finalised it.
            return Ok(Applied::default());
        }
        if refund > 0 {
            post(
                w.conn(),
                customer_id,
                refund,
                EntryKind::Refund,
                Some(id),
                Some(update.status.as_str()),
                now,
            )
            .await?;
        }
        w.commit().await?;
        Ok(Applied {
            refund,
            finalized: true,
        })
    }

    async fn resolve_placed(&self, id: i64, upstream_order: u64, now: Millis) -> Result<()> {
        let upstream_order = to_db(upstream_order, "upstream order id")?;
        let mut w = self.write().await?;
        let changed = sqlx::query(
            "UPDATE orders SET state = 'placed', upstream_order = ?, status = ?, \
             synced_at = NULL, updated_at = ? \
             WHERE id = ? AND state = 'unknown'",
        )
        .bind(upstream_order)
        .bind(Status::Pending.as_str())
        .bind(now)
        .bind(id)
        .execute(w.conn())
        .await?;
        if changed.rows_affected() != 1 {
            return Err(not_in_state(w.conn(), id, OrderState::Unknown).await);
        }
        w.commit().await
    }

    async fn resolve_not_placed(&self, id: i64, now: Millis) -> Result<Units> {
        let mut w = self.write().await?;
        let row =
            sqlx::query("SELECT customer_id, state, charge, refunded FROM orders WHERE id = ?")
                .bind(id)
                .fetch_optional(w.conn())
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
        let charge: Units = row.try_get("charge")?;
        let refunded: Units = row.try_get("refunded")?;
        let refund = refund_due(Status::Canceled, charge, refunded, 0, None)?;
        let changed = sqlx::query(
            "UPDATE orders SET state = 'final', status = ?, refunded = refunded + ?, \
             updated_at = ? WHERE id = ? AND state = 'unknown'",
        )
        .bind(Status::Canceled.as_str())
        .bind(refund)
        .bind(now)
        .bind(id)
        .execute(w.conn())
        .await?;
        if changed.rows_affected() != 1 {
            return Err(not_in_state(w.conn(), id, OrderState::Unknown).await);
        }
        if refund > 0 {
            post(
                w.conn(),
                customer_id,
                refund,
                EntryKind::Refund,
                Some(id),
                Some("resolved: not placed"),
                now,
            )
            .await?;
        }
        w.commit().await?;
        Ok(refund)
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

    // ---- refills ----

    async fn create_refill(
        &self,
        order: &Order,
        upstream_refill: u64,
        now: Millis,
    ) -> Result<Refill> {
        let upstream_refill = to_db(upstream_refill, "upstream refill id")?;
        let mut w = self.write().await?;
        // Customer and upstream come from the stored order, not from the caller's copy.
        let row = sqlx::query(&format!(
            "INSERT INTO refills (order_id, customer_id, upstream, upstream_refill, status, \
             created_at) \
             SELECT id, customer_id, upstream, ?, ?, ? FROM orders WHERE id = ? \
             RETURNING {REFILL_COLUMNS}"
        ))
        .bind(upstream_refill)
        .bind(RefillStatus::Pending.as_str())
        .bind(now)
        .bind(order.id)
        .fetch_optional(w.conn())
        .await?
        .ok_or(StoreError::NotFound)?;
        let refill = refill_from_row(&row)?;
        w.commit().await?;
        Ok(refill)
    }

    async fn customer_refills(&self, customer_id: i64, ids: &[i64]) -> Result<Vec<Refill>> {
        let mut refills = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT {REFILL_COLUMNS} FROM refills WHERE customer_id = ? AND id IN ({}) \
                 ORDER BY id",
                placeholders(chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(customer_id);
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.pool).await? {
                refills.push(refill_from_row(&row)?);
            }
        }
        Ok(refills)
    }

    async fn refills_to_sync(&self, upstream: &str, claim: &Claim) -> Result<Vec<Refill>> {
        let open = open_refill_statuses();
        let sql = format!(
            "SELECT {REFILL_COLUMNS} FROM refills \
             WHERE status IN ({}) AND upstream = ? AND (synced_at IS NULL OR synced_at < ?) \
             AND (lease_until IS NULL OR lease_until <= ?) \
             ORDER BY synced_at, id LIMIT ?",
            placeholders(open.len())
        );
        let mut w = self.write().await?;
        let mut query = sqlx::query(&sql);
        for status in open {
            query = query.bind(status);
        }
        let rows = query
            .bind(upstream)
            .bind(claim.stale_before)
            .bind(claim.now)
            .bind(i64::from(claim.limit))
            .fetch_all(w.conn())
            .await?;
        let refills: Vec<Refill> = rows.iter().map(refill_from_row).collect::<Result<_>>()?;
        for r in &refills {
            sqlx::query("UPDATE refills SET lease_until = ? WHERE id = ?")
                .bind(claim.lease_until)
                .bind(r.id)
                .execute(w.conn())
                .await?;
        }
        w.commit().await?;
        Ok(refills)
    }

    async fn update_refill(&self, id: i64, status: RefillStatus, now: Millis) -> Result<()> {
        let open = open_refill_statuses();
        let mut w = self.write().await?;
        // A refill that reached a final status stays there (a slower sync racing a faster one
        // must not move it back).
        let sql = format!(
            "UPDATE refills SET status = ?, synced_at = ? WHERE id = ? AND status IN ({})",
            placeholders(open.len())
        );
        let mut query = sqlx::query(&sql).bind(status.as_str()).bind(now).bind(id);
        for open in open {
            query = query.bind(open);
        }
        let changed = query.execute(w.conn()).await?;
        if changed.rows_affected() == 0 {
            let exists = sqlx::query_scalar::<_, i64>("SELECT id FROM refills WHERE id = ?")
                .bind(id)
                .fetch_optional(w.conn())
                .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound);
            }
        }
        w.commit().await
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::task::JoinSet;

    use super::*;

    /// A claim whose lease is over at once, so that repeated claims see the same rows.
    fn peek(stale_before: Millis, limit: u32) -> Claim {
        Claim {
            stale_before,
            now: 0,
            lease_until: 0,
            limit,
        }
    }

    const NOW: Millis = 1_700_000_000_000;
    /// 1.00000 in storage units.
    const ONE: Units = 100_000;

    /// A database file in a directory of its own (not created: `open` must create it), removed
    /// when the test ends.
    struct TempDb {
        dir: PathBuf,
    }

    impl TempDb {
        fn new() -> TempDb {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir().join(format!(
                "panelgate-store-{}-{}-{nanos}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            TempDb { dir }
        }

        fn url(&self) -> String {
            format!("sqlite://{}", self.dir.join("data/panelgate.db").display())
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn memory() -> SqliteStore {
        SqliteStore::open("sqlite::memory:").await.unwrap()
    }

    fn key_of(name: &str) -> KeyHash {
        let mut key = [0u8; 32];
        for (slot, b) in key.iter_mut().zip(name.bytes()) {
            *slot = b;
        }
        key
    }

    async fn customer(store: &SqliteStore, name: &str, balance: Units, limit: Units) -> Customer {
        store
            .create_customer(name, &key_of(name), "default", limit, balance, NOW)
            .await
            .unwrap()
    }

    fn new_order(customer_id: i64, charge: Units, billed: u64) -> NewOrder {
        NewOrder {
            customer_id,
            service: 1,
            upstream: "alpha".into(),
            upstream_service: 101,
            charge,
            billed,
            link: Some("https://example.com/p/1".into()),
            fields: r#"{"quantity":"1000"}"#.into(),
        }
    }

    async fn order(store: &SqliteStore, customer_id: i64, charge: Units, billed: u64) -> Order {
        store
            .create_order(&new_order(customer_id, charge, billed), NOW)
            .await
            .unwrap()
    }

    async fn placed(
        store: &SqliteStore,
        customer_id: i64,
        charge: Units,
        billed: u64,
        upstream_order: u64,
    ) -> Order {
        let o = order(store, customer_id, charge, billed).await;
        store.mark_placed(o.id, upstream_order, NOW).await.unwrap();
        store.order(o.id).await.unwrap().unwrap()
    }

    fn update(status: Status, remains: Option<i64>) -> StatusUpdate {
        StatusUpdate {
            status,
            remains,
            start_count: Some(10),
            cost: Some(500),
        }
    }

    async fn get(store: &SqliteStore, id: i64) -> Order {
        store.order(id).await.unwrap().unwrap()
    }

    /// The rules every state must satisfy: the balance is the sum of the ledger, read through
    /// the trait and straight from the table, and it is not below the floor. Returns it.
    async fn books(store: &SqliteStore, customer_id: i64) -> Units {
        let entries = store.ledger(customer_id).await.unwrap();
        let sum: Units = entries.iter().map(|e| e.amount).sum();
        let row = sqlx::query("SELECT balance, credit_limit FROM customers WHERE id = ?")
            .bind(customer_id)
            .fetch_one(&store.pool)
            .await
            .unwrap();
        let balance: Units = row.get("balance");
        let limit: Units = row.get("credit_limit");
        assert_eq!(balance, sum, "balance is not the sum of {entries:#?}");
        assert!(
            balance >= -limit,
            "balance {balance} below the floor {}",
            -limit
        );
        balance
    }

    fn kinds(entries: &[LedgerEntry]) -> Vec<EntryKind> {
        entries.iter().map(|e| e.kind).collect()
    }

    #[tokio::test]
    async fn the_ledger_sums_to_the_balance_after_every_kind_of_change() {
        use EntryKind::*;
        let store = memory().await;
        let c = customer(&store, "ana", 100 * ONE, 0).await;
        assert_eq!(c.balance, 100 * ONE);
        let mut expected = 100 * ONE;
        assert_eq!(books(&store, c.id).await, expected);

        store
            .adjust_balance("ana", 5 * ONE, Some("top-up"), NOW)
            .await
            .unwrap();
        expected += 5 * ONE;
        assert_eq!(books(&store, c.id).await, expected);

        let after = store
            .adjust_balance("ana", -2 * ONE, Some("fee"), NOW)
            .await
            .unwrap();
        expected -= 2 * ONE;
        assert_eq!(after.balance, expected);
        assert_eq!(books(&store, c.id).await, expected);

        // Charge 0.17663 for 157 units; Partial with 100 left refunds 0.1125 (rounded down).
        let a = order(&store, c.id, 17_663, 157).await;
        expected -= 17_663;
        assert_eq!(books(&store, c.id).await, expected);
        store.mark_placed(a.id, 9001, NOW).await.unwrap();
        store
            .apply_status(a.id, &update(Status::InProgress, Some(100)), NOW)
            .await
            .unwrap();
        assert_eq!(books(&store, c.id).await, expected);
        let applied = store
            .apply_status(a.id, &update(Status::Partial, Some(100)), NOW)
            .await
            .unwrap();
        assert_eq!(
            applied,
            Applied {
                refund: 11_250,
                finalized: true
            }
        );
        expected += 11_250;
        assert_eq!(books(&store, c.id).await, expected);

        // Rejected: the charge is released.
        let b = order(&store, c.id, ONE, 1000).await;
        assert_eq!(books(&store, c.id).await, expected - ONE);
        store
            .mark_rejected(b.id, "upstream said no", NOW)
            .await
            .unwrap();
        assert_eq!(books(&store, c.id).await, expected);

        // Unknown, then declared not placed: refunded in full.
        let d = order(&store, c.id, 30_000, 1000).await;
        store.mark_unknown(d.id, "timeout", NOW).await.unwrap();
        assert_eq!(books(&store, c.id).await, expected - 30_000);
        assert_eq!(store.resolve_not_placed(d.id, NOW).await.unwrap(), 30_000);
        assert_eq!(books(&store, c.id).await, expected);

        // Canceled upstream: refunded in full.
        let e = placed(&store, c.id, 50_000, 1000, 9002).await;
        let applied = store
            .apply_status(e.id, &update(Status::Canceled, Some(1000)), NOW)
            .await
            .unwrap();
        assert_eq!(applied.refund, 50_000);
        assert_eq!(books(&store, c.id).await, expected);

        // Completed: the charge stays.
        let f = placed(&store, c.id, 20_000, 1000, 9003).await;
        let applied = store
            .apply_status(f.id, &update(Status::Completed, Some(0)), NOW)
            .await
            .unwrap();
        assert_eq!(
            applied,
            Applied {
                refund: 0,
                finalized: true
            }
        );
        expected -= 20_000;
        assert_eq!(books(&store, c.id).await, expected);

        let entries = store.ledger(c.id).await.unwrap();
        assert_eq!(
            kinds(&entries),
            [
                Credit, Credit, Debit, Charge, Refund, Charge, Release, Charge, Refund, Charge,
                Refund, Charge
            ]
        );
        let refund_a = &entries[4];
        assert_eq!((refund_a.amount, refund_a.order_id), (11_250, Some(a.id)));
        assert_eq!(entries[0].note.as_deref(), Some("opening balance"));
        assert_eq!(entries[1].note.as_deref(), Some("top-up"));
        let customer = store.customer_by_name("ana").await.unwrap().unwrap();
        assert_eq!(customer.balance, expected);
    }

    /// 50 orders at once, funds for 20: exactly 20 are created.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_floor_holds_under_concurrent_orders() {
        let db = TempDb::new();
        let store = Arc::new(SqliteStore::open(&db.url()).await.unwrap());
        let c = customer(&store, "bob", 20 * ONE, 0).await;
        let mut tasks = JoinSet::new();
        for i in 0..50 {
            let store = store.clone();
            tasks.spawn(async move {
                store
                    .create_order(&new_order(c.id, ONE, 1000), NOW + i)
                    .await
            });
        }
        let (mut created, mut refused) = (0, 0);
        while let Some(result) = tasks.join_next().await {
            match result.unwrap() {
                Ok(_) => created += 1,
                Err(StoreError::InsufficientFunds) => refused += 1,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!((created, refused), (20, 30));
        assert_eq!(books(&store, c.id).await, 0);
        let orders = store.list_orders(&OrderFilter::default()).await.unwrap();
        assert_eq!(orders.len(), 20);
        assert_eq!(store.ledger(c.id).await.unwrap().len(), 21);
    }

    /// The same across two stores on one file (server and CLI): no in-process lock helps
    /// here, only SQLite's write lock. A credit limit lets the balance go to -10.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_floor_holds_across_two_processes_sharing_the_file() {
        let db = TempDb::new();
        let server = Arc::new(SqliteStore::open(&db.url()).await.unwrap());
        let cli = Arc::new(SqliteStore::open(&db.url()).await.unwrap());
        let c = customer(&server, "carol", 10 * ONE, 10 * ONE).await;
        let mut tasks = JoinSet::new();
        for i in 0..50 {
            let store = if i % 2 == 0 {
                server.clone()
            } else {
                cli.clone()
            };
            tasks.spawn(async move {
                store
                    .create_order(&new_order(c.id, ONE, 1000), NOW + i)
                    .await
            });
        }
        let mut created = 0;
        while let Some(result) = tasks.join_next().await {
            match result.unwrap() {
                Ok(_) => created += 1,
                Err(StoreError::InsufficientFunds) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(created, 20);
        assert_eq!(books(&server, c.id).await, -10 * ONE);
        assert_eq!(books(&cli, c.id).await, -10 * ONE);
    }

    /// Ten sync loops (in two processes) apply the same Partial at once: one refund.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partial_is_refunded_exactly_once_under_racing_syncs() {
        let db = TempDb::new();
        let a = Arc::new(SqliteStore::open(&db.url()).await.unwrap());
        let b = Arc::new(SqliteStore::open(&db.url()).await.unwrap());
        let c = customer(&a, "dan", 10 * ONE, 0).await;
        let o = placed(&a, c.id, 4 * ONE, 1000, 77).await;
        let mut tasks = JoinSet::new();
        for i in 0..10 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.spawn(async move {
                store
                    .apply_status(o.id, &update(Status::Partial, Some(250)), NOW + i)
                    .await
            });
        }
        let (mut refunded, mut finalized) = (0, 0);
        while let Some(result) = tasks.join_next().await {
            let applied = result.unwrap().unwrap();
            refunded += applied.refund;
            finalized += u32::from(applied.finalized);
        }
        assert_eq!((refunded, finalized), (ONE, 1));
        let o = get(&a, o.id).await;
        assert_eq!(
            (o.state, o.status, o.refunded, o.remains),
            (OrderState::Final, Status::Partial, ONE, Some(250))
        );
        assert_eq!(books(&a, c.id).await, 7 * ONE);
        let refunds = a
            .ledger(c.id)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EntryKind::Refund)
            .count();
        assert_eq!(refunds, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancel_refunds_the_whole_charge_exactly_once() {
        let store = Arc::new(memory().await);
        let c = customer(&store, "eve", 10 * ONE, 0).await;
        let o = placed(&store, c.id, 3 * ONE, 1000, 78).await;
        let mut tasks = JoinSet::new();
        for i in 0..10 {
            let store = store.clone();
            tasks.spawn(async move {
                store
                    .apply_status(o.id, &update(Status::Canceled, None), NOW + i)
                    .await
            });
        }
        let mut refunded = 0;
        while let Some(result) = tasks.join_next().await {
            refunded += result.unwrap().unwrap().refund;
        }
        assert_eq!(refunded, 3 * ONE);
        assert_eq!(books(&store, c.id).await, 10 * ONE);

        // Later statuses change nothing on a final order.
        let later = store
            .apply_status(o.id, &update(Status::Pending, Some(5)), NOW + 100)
            .await
            .unwrap();
        assert_eq!(later, Applied::default());
        let o = get(&store, o.id).await;
        assert_eq!(
            (o.state, o.status, o.refunded),
            (OrderState::Final, Status::Canceled, 3 * ONE)
        );
    }

    #[tokio::test]
    async fn a_running_status_updates_a_placed_order_without_touching_money() {
        let store = memory().await;
        let c = customer(&store, "fay", 10 * ONE, 0).await;
        let o = placed(&store, c.id, ONE, 1000, 79).await;
        assert_eq!((o.status, o.synced_at), (Status::Pending, None));

        let applied = store
            .apply_status(o.id, &update(Status::InProgress, Some(300)), NOW + 5)
            .await
            .unwrap();
        assert_eq!(applied, Applied::default());
        let o = get(&store, o.id).await;
        assert_eq!(o.state, OrderState::Placed);
        assert_eq!(o.status, Status::InProgress);
        assert_eq!(
            (o.remains, o.start_count, o.cost),
            (Some(300), Some(10), Some(500))
        );
        assert_eq!((o.synced_at, o.updated_at), (Some(NOW + 5), NOW + 5));

        // An upstream that omits start_count and cost does not erase them.
        let bare = StatusUpdate {
            status: Status::Processing,
            remains: Some(200),
            start_count: None,
            cost: None,
        };
        store.apply_status(o.id, &bare, NOW + 6).await.unwrap();
        let o = get(&store, o.id).await;
        assert_eq!(
            (o.status, o.remains, o.start_count, o.cost),
            (Status::Processing, Some(200), Some(10), Some(500))
        );
        assert_eq!(books(&store, c.id).await, 9 * ONE);
    }

    #[tokio::test]
    async fn a_status_changes_nothing_on_an_order_that_is_not_placed() {
        let store = memory().await;
        let c = customer(&store, "gus", 10 * ONE, 0).await;
        let dispatching = order(&store, c.id, ONE, 1000).await;
        let unknown = order(&store, c.id, ONE, 1000).await;
        store
            .mark_unknown(unknown.id, "timeout", NOW)
            .await
            .unwrap();
        for id in [dispatching.id, unknown.id] {
            let before = get(&store, id).await;
            let applied = store
                .apply_status(id, &update(Status::Canceled, None), NOW + 9)
                .await
                .unwrap();
            assert_eq!(applied, Applied::default());
            assert_eq!(get(&store, id).await, before);
        }
        assert!(matches!(
            store
                .apply_status(4242, &update(Status::Completed, None), NOW)
                .await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(books(&store, c.id).await, 8 * ONE);
    }

    #[test]
    fn refunds_round_down_and_never_exceed_what_is_left() {
        use Status::*;
        // 157 billed for 0.17663, 100 left: 0.112500… → 0.1125.
        assert_eq!(
            refund_due(Partial, 17_663, 0, 157, Some(100)).unwrap(),
            11_250
        );
        // Unreported or negative remains: nothing is known to be undelivered.
        assert_eq!(refund_due(Partial, ONE, 0, 1000, None).unwrap(), 0);
        assert_eq!(refund_due(Partial, ONE, 0, 1000, Some(-20)).unwrap(), 0);
        // More remains than billed: at most the whole charge.
        assert_eq!(refund_due(Partial, ONE, 0, 1000, Some(5000)).unwrap(), ONE);
        // One unit over three: a third of 0.00001 rounds down to nothing.
        assert_eq!(refund_due(Partial, 1, 0, 3, Some(1)).unwrap(), 0);
        // Canceled gives back what is still held; never more than the charge.
        assert_eq!(refund_due(Canceled, ONE, 0, 1000, Some(0)).unwrap(), ONE);
        assert_eq!(
            refund_due(Canceled, ONE, 40_000, 1000, None).unwrap(),
            60_000
        );
        assert_eq!(
            refund_due(Partial, ONE, 90_000, 1000, Some(500)).unwrap(),
            10_000
        );
        assert_eq!(refund_due(Completed, ONE, 0, 1000, Some(500)).unwrap(), 0);
        assert_eq!(refund_due(Canceled, 0, 0, 0, None).unwrap(), 0);
    }

    #[tokio::test]
    async fn a_partial_without_remains_refunds_nothing() {
        let store = memory().await;
        let c = customer(&store, "hal", 10 * ONE, 0).await;
        let o = placed(&store, c.id, ONE, 1000, 80).await;
        let applied = store
            .apply_status(o.id, &update(Status::Partial, None), NOW)
            .await
            .unwrap();
        assert_eq!(
            applied,
            Applied {
                refund: 0,
                finalized: true
            }
        );
        let o = get(&store, o.id).await;
        assert_eq!((o.state, o.refunded), (OrderState::Final, 0));
        assert_eq!(books(&store, c.id).await, 9 * ONE);
    }

    #[tokio::test]
    async fn a_rejected_order_releases_its_funds() {
        let store = memory().await;
        let c = customer(&store, "ivy", 2 * ONE, 0).await;
        let o = order(&store, c.id, 2 * ONE, 1000).await;
        assert_eq!(books(&store, c.id).await, 0);
        store
            .mark_rejected(o.id, "Incorrect service ID", NOW + 3)
            .await
            .unwrap();
        assert_eq!(books(&store, c.id).await, 2 * ONE);
        let rejected = get(&store, o.id).await;
        assert_eq!(rejected.state, OrderState::Rejected);
        assert_eq!(rejected.note.as_deref(), Some("Incorrect service ID"));
        let last = store.ledger(c.id).await.unwrap().pop().unwrap();
        assert_eq!(
            (last.kind, last.amount, last.order_id),
            (EntryKind::Release, 2 * ONE, Some(o.id))
        );

        // Once only, and only from dispatching.
        assert!(matches!(
            store.mark_rejected(o.id, "again", NOW).await,
            Err(StoreError::Conflict(_))
        ));
        let p = placed(&store, c.id, ONE, 1000, 81).await;
        assert!(matches!(
            store.mark_rejected(p.id, "late", NOW).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.mark_rejected(4242, "none", NOW).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(books(&store, c.id).await, ONE);
    }

    #[tokio::test]
    async fn an_unknown_order_declared_not_placed_is_canceled_and_refunded() {
        let store = memory().await;
        let c = customer(&store, "jon", 5 * ONE, 0).await;
        let o = order(&store, c.id, 2 * ONE, 1000).await;
        store
            .mark_unknown(o.id, "connection reset after write", NOW)
            .await
            .unwrap();
        assert_eq!(books(&store, c.id).await, 3 * ONE, "funds stay held");
        assert_eq!(
            store.resolve_not_placed(o.id, NOW + 1).await.unwrap(),
            2 * ONE
        );
        let o = get(&store, o.id).await;
        assert_eq!(
            (o.state, o.status, o.refunded, o.upstream_order),
            (OrderState::Final, Status::Canceled, 2 * ONE, None)
        );
        assert_eq!(books(&store, c.id).await, 5 * ONE);

        assert!(matches!(
            store.resolve_not_placed(o.id, NOW).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.resolve_placed(o.id, 5, NOW).await,
            Err(StoreError::Conflict(_))
        ));
        let p = placed(&store, c.id, ONE, 1000, 82).await;
        assert!(matches!(
            store.resolve_not_placed(p.id, NOW).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.resolve_not_placed(4242, NOW).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(books(&store, c.id).await, 4 * ONE);
    }

    #[tokio::test]
    async fn an_unknown_order_found_upstream_is_placed_and_synced() {
        let store = memory().await;
        let c = customer(&store, "kim", 5 * ONE, 0).await;
        let o = order(&store, c.id, ONE, 1000).await;
        store.mark_unknown(o.id, "timeout", NOW).await.unwrap();
        store.resolve_placed(o.id, 555, NOW + 2).await.unwrap();
        let o = get(&store, o.id).await;
        assert_eq!(
            (o.state, o.status, o.upstream_order, o.updated_at),
            (OrderState::Placed, Status::Pending, Some(555), NOW + 2)
        );
        let due = store.orders_to_sync("alpha", &peek(NOW, 10)).await.unwrap();
        assert_eq!(due.iter().map(|o| o.id).collect::<Vec<_>>(), [o.id]);
        assert_eq!(books(&store, c.id).await, 4 * ONE, "the charge stands");

        assert!(matches!(
            store.resolve_placed(o.id, 556, NOW).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.resolve_placed(4242, 1, NOW).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn only_a_dispatching_order_is_retargeted_placed_or_marked_unknown() {
        let store = memory().await;
        let c = customer(&store, "lea", 5 * ONE, 0).await;
        let o = order(&store, c.id, ONE, 1000).await;
        store.retarget_order(o.id, "beta", 202).await.unwrap();
        let moved = get(&store, o.id).await;
        assert_eq!(
            (moved.upstream.as_str(), moved.upstream_service),
            ("beta", 202)
        );
        store.mark_placed(o.id, 1234, NOW + 1).await.unwrap();
        let p = get(&store, o.id).await;
        assert_eq!(
            (p.state, p.upstream_order, p.status),
            (OrderState::Placed, Some(1234), Status::Pending)
        );

        assert!(matches!(
            store.retarget_order(o.id, "gamma", 303).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.mark_placed(o.id, 1, NOW).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.mark_unknown(o.id, "x", NOW).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.retarget_order(4242, "gamma", 303).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.mark_placed(4242, 1, NOW).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.mark_unknown(4242, "x", NOW).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(get(&store, o.id).await, p, "refused changes wrote nothing");
    }

    #[tokio::test]
    async fn recovery_marks_interrupted_orders_unknown_with_funds_held() {
        let store = memory().await;
        let c = customer(&store, "max", 5 * ONE, 0).await;
        let a = order(&store, c.id, ONE, 1000).await;
        let b = order(&store, c.id, ONE, 1000).await;
        let p = placed(&store, c.id, ONE, 1000, 83).await;
        assert_eq!(
            store.recover_dispatching(NOW + 7, NOW + 7).await.unwrap(),
            2
        );
        for id in [a.id, b.id] {
            let o = get(&store, id).await;
            assert_eq!(o.state, OrderState::Unknown);
            assert_eq!(o.note.as_deref(), Some(INTERRUPTED_NOTE));
            assert_eq!(o.updated_at, NOW + 7);
        }
        assert_eq!(get(&store, p.id).await.state, OrderState::Placed);
        assert_eq!(books(&store, c.id).await, 2 * ONE);
        assert_eq!(
            store.recover_dispatching(NOW + 8, NOW + 8).await.unwrap(),
            0
        );
    }

    #[tokio::test]
    async fn a_customer_sees_only_their_own_orders_and_refills() {
        let store = memory().await;
        let ana = customer(&store, "ana", 5 * ONE, 0).await;
        let bob = customer(&store, "bob", 5 * ONE, 0).await;
        let a1 = placed(&store, ana.id, ONE, 1000, 1).await;
        let b1 = placed(&store, bob.id, ONE, 1000, 2).await;
        let a2 = order(&store, ana.id, ONE, 1000).await;

        let seen = store
            .customer_orders(ana.id, &[b1.id, a2.id, 4242, a1.id])
            .await
            .unwrap();
        assert_eq!(
            seen.iter().map(|o| o.id).collect::<Vec<_>>(),
            [a1.id, a2.id]
        );
        assert!(seen.iter().all(|o| o.customer == "ana"));
        assert!(
            store
                .customer_orders(bob.id, &[a1.id])
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.customer_orders(ana.id, &[]).await.unwrap().is_empty());

        let ra = store.create_refill(&a1, 900, NOW).await.unwrap();
        let rb = store.create_refill(&b1, 901, NOW).await.unwrap();
        let seen = store
            .customer_refills(ana.id, &[rb.id, ra.id, 4242])
            .await
            .unwrap();
        assert_eq!(seen, std::slice::from_ref(&ra));
        assert!(
            store
                .customer_refills(bob.id, &[ra.id])
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn names_and_keys_are_unique() {
        let store = memory().await;
        let ana = customer(&store, "ana", ONE, 0).await;
        customer(&store, "bob", 0, 0).await;

        let same_name = store
            .create_customer("ana", &key_of("other"), "vip", 0, ONE, NOW)
            .await;
        assert!(matches!(same_name, Err(StoreError::Duplicate(ref what)) if what.contains("ana")));
        let same_key = store
            .create_customer("cid", &key_of("ana"), "vip", 0, ONE, NOW)
            .await;
        assert!(matches!(same_key, Err(StoreError::Duplicate(ref what)) if what.contains("key")));
        assert!(matches!(
            store.set_key("bob", &key_of("ana")).await,
            Err(StoreError::Duplicate(_))
        ));
        assert!(matches!(
            store.set_key("nobody", &key_of("new")).await,
            Err(StoreError::NotFound)
        ));

        // The refused creations left nothing behind: no customer, no ledger entry.
        assert_eq!(store.list_customers().await.unwrap().len(), 2);
        assert!(store.customer_by_name("cid").await.unwrap().is_none());
        assert_eq!(store.ledger(ana.id).await.unwrap().len(), 1);
        let entries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(entries, 1);
    }

    #[tokio::test]
    async fn keys_find_customers_and_can_be_changed() {
        let store = memory().await;
        let ana = customer(&store, "ana", ONE, 0).await;
        let (found, stored) = store
            .customer_by_key(&key_of("ana"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((found, stored), (ana.clone(), key_of("ana")));
        assert!(
            store
                .customer_by_key(&key_of("zed"))
                .await
                .unwrap()
                .is_none()
        );

        store.set_key("ana", &key_of("fresh")).await.unwrap();
        assert!(
            store
                .customer_by_key(&key_of("ana"))
                .await
                .unwrap()
                .is_none()
        );
        let (found, _) = store
            .customer_by_key(&key_of("fresh"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, ana.id);

        store.set_enabled("ana", false).await.unwrap();
        assert!(
            !store
                .customer_by_name("ana")
                .await
                .unwrap()
                .unwrap()
                .enabled
        );
        let (found, _) = store
            .customer_by_key(&key_of("fresh"))
            .await
            .unwrap()
            .unwrap();
        assert!(
            !found.enabled,
            "disabled customers are still found, and told apart"
        );
        store.set_enabled("ana", true).await.unwrap();
        assert!(
            store
                .customer_by_name("ana")
                .await
                .unwrap()
                .unwrap()
                .enabled
        );
        assert!(matches!(
            store.set_enabled("nobody", true).await,
            Err(StoreError::NotFound)
        ));
        store.ping().await.unwrap();
    }

    #[tokio::test]
    async fn a_debit_stops_at_the_credit_limit() {
        let store = memory().await;
        let c = customer(&store, "nia", 10 * ONE, 5 * ONE).await;
        assert_eq!(
            store
                .adjust_balance("nia", -14 * ONE, None, NOW)
                .await
                .unwrap()
                .balance,
            -4 * ONE
        );
        assert!(matches!(
            store.adjust_balance("nia", -2 * ONE, None, NOW).await,
            Err(StoreError::InsufficientFunds)
        ));
        assert_eq!(books(&store, c.id).await, -4 * ONE);
        assert_eq!(
            store
                .adjust_balance("nia", -ONE, None, NOW)
                .await
                .unwrap()
                .balance,
            -5 * ONE
        );
        assert!(matches!(
            store.create_order(&new_order(c.id, 1, 1), NOW).await,
            Err(StoreError::InsufficientFunds)
        ));
        // A zero-charge order (billed per post) still fits at the floor.
        order(&store, c.id, 0, 1).await;
        // Zero changes nothing and writes nothing.
        let entries = store.ledger(c.id).await.unwrap().len();
        store.adjust_balance("nia", 0, None, NOW).await.unwrap();
        assert_eq!(store.ledger(c.id).await.unwrap().len(), entries);
        assert!(matches!(
            store.adjust_balance("nobody", ONE, None, NOW).await,
            Err(StoreError::NotFound)
        ));
        // An opening balance below the floor is refused, and leaves no customer behind.
        assert!(matches!(
            store
                .create_customer("owe", &key_of("owe"), "default", ONE, -2 * ONE, NOW)
                .await,
            Err(StoreError::InsufficientFunds)
        ));
        assert!(store.customer_by_name("owe").await.unwrap().is_none());
        assert_eq!(books(&store, c.id).await, -5 * ONE);
    }

    /// A memory store has one connection: if a failed write left it inside a transaction,
    /// the next `BEGIN IMMEDIATE` would fail.
    #[tokio::test]
    async fn a_failed_write_leaves_no_transaction_open() {
        let store = memory().await;
        let c = customer(&store, "oli", 0, 0).await;
        assert!(matches!(
            store.create_order(&new_order(c.id, ONE, 1000), NOW).await,
            Err(StoreError::InsufficientFunds)
        ));
        assert!(matches!(
            store
                .create_customer("oli", &key_of("x"), "g", 0, 0, NOW)
                .await,
            Err(StoreError::Duplicate(_))
        ));
        assert!(matches!(
            store.resolve_not_placed(4242, NOW).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.mark_placed(4242, u64::MAX, NOW).await,
            Err(StoreError::Db(_))
        ));
        store.adjust_balance("oli", ONE, None, NOW).await.unwrap();
        let o = order(&store, c.id, ONE, 1000).await;
        assert_eq!(o.id, 1, "the refused order took no id");
        assert_eq!(books(&store, c.id).await, 0);
    }

    #[tokio::test]
    async fn claimed_work_is_leased_to_one_claimer() {
        let store = memory().await;
        let c = customer(&store, "lee", 100 * ONE, 0).await;
        let a = placed(&store, c.id, ONE, 1000, 1).await;
        let b = placed(&store, c.id, ONE, 1000, 2).await;
        let claim = |now, limit| Claim {
            stale_before: now,
            now,
            lease_until: now + 1000,
            limit,
        };
        let ids = |orders: Vec<Order>| orders.into_iter().map(|o| o.id).collect::<Vec<_>>();
        // Two instances claim at once: each order goes to one of them.
        assert_eq!(
            ids(store.orders_to_sync("alpha", &claim(10, 1)).await.unwrap()),
            [a.id]
        );
        assert_eq!(
            ids(store.orders_to_sync("alpha", &claim(10, 10)).await.unwrap()),
            [b.id]
        );
        assert!(
            store
                .orders_to_sync("alpha", &claim(500, 10))
                .await
                .unwrap()
                .is_empty()
        );
        // A dead claimer's lease runs out and the work is taken over.
        assert_eq!(
            ids(store
                .orders_to_sync("alpha", &claim(1010, 10))
                .await
                .unwrap()),
            [a.id, b.id]
        );
    }

    #[tokio::test]
    async fn orders_to_sync_takes_the_least_recently_synced_first() {
        let store = memory().await;
        let c = customer(&store, "pam", 100 * ONE, 0).await;
        let o1 = placed(&store, c.id, ONE, 1000, 1).await;
        let o2 = placed(&store, c.id, ONE, 1000, 2).await;
        let o3 = placed(&store, c.id, ONE, 1000, 3).await;
        let fresh = placed(&store, c.id, ONE, 1000, 4).await;
        let never = placed(&store, c.id, ONE, 1000, 5).await;
        let running = update(Status::InProgress, Some(10));
        store.apply_status(o1.id, &running, 100).await.unwrap();
        store.apply_status(o3.id, &running, 50).await.unwrap();
        store.apply_status(o2.id, &running, 150).await.unwrap();
        store.apply_status(fresh.id, &running, 500).await.unwrap();
        // Not due: another upstream, not placed yet, already final.
        let mut elsewhere = new_order(c.id, ONE, 1000);
        elsewhere.upstream = "beta".into();
        let elsewhere = store.create_order(&elsewhere, NOW).await.unwrap();
        store.mark_placed(elsewhere.id, 6, NOW).await.unwrap();
        order(&store, c.id, ONE, 1000).await;
        let done = placed(&store, c.id, ONE, 1000, 7).await;
        store
            .apply_status(done.id, &update(Status::Completed, Some(0)), 10)
            .await
            .unwrap();

        let ids = |orders: Vec<Order>| orders.into_iter().map(|o| o.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.orders_to_sync("alpha", &peek(200, 10)).await.unwrap()),
            [never.id, o3.id, o1.id, o2.id]
        );
        assert_eq!(
            ids(store.orders_to_sync("alpha", &peek(200, 2)).await.unwrap()),
            [never.id, o3.id]
        );
        assert_eq!(
            ids(store.orders_to_sync("alpha", &peek(100, 10)).await.unwrap()),
            [never.id, o3.id],
            "synced at exactly stale_before is fresh"
        );
        assert_eq!(
            ids(store.orders_to_sync("beta", &peek(200, 10)).await.unwrap()),
            [elsewhere.id]
        );
        assert!(
            store
                .orders_to_sync("gamma", &peek(200, 10))
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn refills_are_synced_until_final() {
        let store = memory().await;
        let c = customer(&store, "quinn", 10 * ONE, 0).await;
        let o = placed(&store, c.id, ONE, 1000, 1).await;
        let r = store.create_refill(&o, 321, NOW).await.unwrap();
        assert_eq!(
            (
                r.order_id,
                r.customer_id,
                r.upstream.as_str(),
                r.upstream_refill
            ),
            (o.id, c.id, "alpha", 321)
        );
        assert_eq!(
            (r.status, r.created_at, r.synced_at),
            (RefillStatus::Pending, NOW, None)
        );
        let r2 = store.create_refill(&o, 322, NOW).await.unwrap();

        let ids = |refills: Vec<Refill>| refills.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store
                .refills_to_sync("alpha", &peek(NOW, 10))
                .await
                .unwrap()),
            [r.id, r2.id]
        );
        assert!(
            store
                .refills_to_sync("beta", &peek(NOW, 10))
                .await
                .unwrap()
                .is_empty()
        );

        store
            .update_refill(r.id, RefillStatus::InProgress, NOW + 10)
            .await
            .unwrap();
        // r was just synced: r2 (never) first, r only once stale.
        assert_eq!(
            ids(store
                .refills_to_sync("alpha", &peek(NOW + 5, 10))
                .await
                .unwrap()),
            [r2.id]
        );
        assert_eq!(
            ids(store
                .refills_to_sync("alpha", &peek(NOW + 11, 10))
                .await
                .unwrap()),
            [r2.id, r.id]
        );
        assert_eq!(
            ids(store
                .refills_to_sync("alpha", &peek(NOW + 11, 1))
                .await
                .unwrap()),
            [r2.id]
        );

        store
            .update_refill(r.id, RefillStatus::Completed, NOW + 20)
            .await
            .unwrap();
        store
            .update_refill(r2.id, RefillStatus::Rejected, NOW + 20)
            .await
            .unwrap();
        assert!(
            store
                .refills_to_sync("alpha", &peek(NOW + 100, 10))
                .await
                .unwrap()
                .is_empty()
        );

        // A final refill stays final.
        store
            .update_refill(r.id, RefillStatus::Pending, NOW + 30)
            .await
            .unwrap();
        let r = store
            .customer_refills(c.id, &[r.id])
            .await
            .unwrap()
            .remove(0);
        assert_eq!(
            (r.status, r.synced_at),
            (RefillStatus::Completed, Some(NOW + 20))
        );

        assert!(matches!(
            store
                .update_refill(4242, RefillStatus::Completed, NOW)
                .await,
            Err(StoreError::NotFound)
        ));
        let mut ghost = o.clone();
        ghost.id = 4242;
        assert!(matches!(
            store.create_refill(&ghost, 1, NOW).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn listings_and_counts() {
        let store = memory().await;
        let bob = customer(&store, "bob", 10 * ONE, 0).await;
        let ana = customer(&store, "ana", 10 * ONE, 0).await;
        let a1 = placed(&store, ana.id, ONE, 1000, 1).await;
        let b1 = order(&store, bob.id, ONE, 1000).await;
        let a2 = order(&store, ana.id, ONE, 1000).await;
        store.mark_unknown(a2.id, "timeout", NOW).await.unwrap();

        let listed = store.list_customers().await.unwrap();
        let listed: Vec<_> = listed.iter().map(|(c, n)| (c.name.as_str(), *n)).collect();
        assert_eq!(listed, [("ana", 2), ("bob", 1)]);

        let ids = |orders: Vec<Order>| orders.into_iter().map(|o| o.id).collect::<Vec<_>>();
        let all = store.list_orders(&OrderFilter::default()).await.unwrap();
        assert_eq!(ids(all), [a2.id, b1.id, a1.id]);
        let anas = OrderFilter {
            customer: Some("ana".into()),
            state: None,
        };
        assert_eq!(ids(store.list_orders(&anas).await.unwrap()), [a2.id, a1.id]);
        let unknown = OrderFilter {
            customer: None,
            state: Some(OrderState::Unknown),
        };
        assert_eq!(ids(store.list_orders(&unknown).await.unwrap()), [a2.id]);
        let none = OrderFilter {
            customer: Some("bob".into()),
            state: Some(OrderState::Placed),
        };
        assert!(store.list_orders(&none).await.unwrap().is_empty());

        let counts = store.count_orders_by_state().await.unwrap();
        assert_eq!(
            counts,
            [
                (OrderState::Dispatching, 1),
                (OrderState::Placed, 1),
                (OrderState::Rejected, 0),
                (OrderState::Unknown, 1),
                (OrderState::Final, 0),
            ]
        );

        // Every field survives the round trip.
        let o = get(&store, a1.id).await;
        assert_eq!(o.customer, "ana");
        assert_eq!(
            (o.service, o.upstream.as_str(), o.upstream_service),
            (1, "alpha", 101)
        );
        assert_eq!((o.charge, o.billed, o.refunded), (ONE, 1000, 0));
        assert_eq!(o.link.as_deref(), Some("https://example.com/p/1"));
        assert_eq!(o.fields, r#"{"quantity":"1000"}"#);
        assert_eq!(
            (o.created_at, o.remains, o.cost, o.note),
            (NOW, None, None, None)
        );
    }

    /// The database refuses what the code must never do, whatever the code.
    #[tokio::test]
    async fn the_schema_guards_the_money_rules() {
        let store = memory().await;
        let c = customer(&store, "rex", ONE, 0).await;
        let o = placed(&store, c.id, ONE, 1000, 1).await;
        store
            .apply_status(o.id, &update(Status::Canceled, None), NOW)
            .await
            .unwrap();
        let refused = [
            "UPDATE ledger SET amount = 0",
            "DELETE FROM ledger",
            "UPDATE customers SET balance = -1",
            "UPDATE orders SET refunded = charge + 1",
            "UPDATE customers SET balance = 1.5",
        ];
        for sql in refused {
            assert!(
                sqlx::query(sql).execute(&store.pool).await.is_err(),
                "{sql}"
            );
        }
        // A second refund (or charge) for one order cannot be written.
        let second = store.write().await;
        let mut second = second.unwrap();
        let err = post(
            second.conn(),
            c.id,
            ONE,
            EntryKind::Refund,
            Some(o.id),
            None,
            NOW,
        )
        .await;
        assert!(matches!(err, Err(StoreError::Duplicate(_))), "{err:?}");
        drop(second);
        assert_eq!(books(&store, c.id).await, ONE);
    }

    /// The CLI opens the file while the server runs: each sees the other's writes, and what
    /// was committed is still there after both close.
    #[tokio::test]
    async fn a_second_open_of_the_file_sees_the_first_ones_writes() {
        let db = TempDb::new();
        let server = SqliteStore::open(&db.url()).await.unwrap();
        let c = customer(&server, "sam", 5 * ONE, 0).await;
        let o = order(&server, c.id, ONE, 1000).await;

        let cli = SqliteStore::open(&db.url()).await.unwrap();
        assert_eq!(
            cli.customer_by_name("sam").await.unwrap().unwrap().balance,
            4 * ONE
        );
        assert_eq!(cli.order(o.id).await.unwrap().unwrap(), o);
        cli.adjust_balance("sam", 3 * ONE, Some("cash"), NOW)
            .await
            .unwrap();
        assert_eq!(
            server
                .customer_by_name("sam")
                .await
                .unwrap()
                .unwrap()
                .balance,
            7 * ONE
        );

        for store in [&server, &cli] {
            let mut conn = store.pool.acquire().await.unwrap();
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!((mode.as_str(), sync, fk), ("wal", 2, 1));
        }
        server.close().await;
        cli.close().await;

        let again = SqliteStore::open(&db.url()).await.unwrap();
        assert_eq!(again.order(o.id).await.unwrap().unwrap(), o);
        assert_eq!(books(&again, c.id).await, 7 * ONE);
    }
}
