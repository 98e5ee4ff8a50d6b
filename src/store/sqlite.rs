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
//! # Durability, with commits grouped
//!
//! A write call returns only once its commit is on disk, so an order id given to a customer
//! survives a power cut. `synchronous = FULL` would get there by fsyncing the WAL inside every
//! commit, while holding SQLite's write lock: one fsync per transaction, one after another.
//! Instead the connections run with `synchronous = NORMAL` (a commit is written to the WAL,
//! not yet synced) and a write call fsyncs the WAL itself after giving up the lock
//! ([`WalSync`]). Commits made while an fsync is under way share the next one, so concurrent
//! writers pay one fsync per group, not each (group commit). The WAL is append-only, so what a
//! crash can lose is a suffix of commits none of which had returned; SQLite itself fsyncs the
//! WAL before each checkpoint.

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
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Mutex, MutexGuard};

use super::{
    Applied, Attention, AttentionFilter, Claim, Customer, EntryKind, KeyHash, LedgerEntry, Millis,
    NewOrder, Order, OrderFilter, OrderState, Refill, Result, StatusUpdate, Store, StoreError,
    StuckCutoffs, Units,
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
    pub(super) pool: SqlitePool,
    /// Queues this process's writers; see the module documentation.
    writer: Mutex<()>,
    wal: WalSync,
}

/// One write transaction: the in-process writer turn and an open `BEGIN IMMEDIATE`.
/// Dropping it without [`Write::commit`] rolls back.
pub(super) struct Write<'a> {
    // Declared first so that it is dropped (rolled back) before the turn is given up.
    tx: Transaction<'static, Sqlite>,
    turn: MutexGuard<'a, ()>,
    wal: &'a WalSync,
}

/// Makes commits durable by fsyncing the WAL file, one fsync for every commit made before it
/// started (see the module documentation).
struct WalSync {
    /// `None` for an in-memory database.
    path: Option<std::path::PathBuf>,
    /// Commits counted so far: a commit takes the next number once it is written.
    committed: AtomicU64,
    /// The highest commit number known to be on disk.
    synced: AtomicU64,
    /// One fsync at a time; whoever waits here is covered by the next one.
    turn: Mutex<()>,
    /// fsyncs done, to see the grouping at work.
    fsyncs: AtomicU64,
}

impl WalSync {
    fn new(path: Option<std::path::PathBuf>) -> WalSync {
        WalSync {
            path,
            committed: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            turn: Mutex::new(()),
            fsyncs: AtomicU64::new(0),
        }
    }

    /// Returns once a commit that has just been written is on disk.
    async fn commit_written(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let ticket = self.committed.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = self.turn.lock().await;
        if self.synced.load(Ordering::SeqCst) >= ticket {
            return Ok(()); // an fsync that started after this commit has finished
        }
        // Everything numbered so far was written before this fsync starts.
        let covered = self.committed.load(Ordering::SeqCst);
        let path = path.clone();
        tokio::task::spawn_blocking(move || match std::fs::File::open(&path) {
            Ok(wal) => wal.sync_data(),
            // No WAL: the last connection checkpointed it into the database file (syncing
            // that) and removed it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|synced| synced)
        .map_err(sqlx::Error::Io)?;
        self.synced.fetch_max(covered, Ordering::SeqCst);
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Write<'_> {
    pub(super) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }

    pub(super) async fn commit(self) -> Result<()> {
        let Write { tx, turn, wal } = self;
        tx.commit().await?;
        // The next writer may go on while this one waits for the disk.
        drop(turn);
        wal.commit_written().await
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
            .synchronous(SqliteSynchronous::Normal);
        let wal = (!memory).then(|| {
            let mut path = options.get_filename().as_os_str().to_owned();
            path.push("-wal");
            std::path::PathBuf::from(path)
        });
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
        migrate(&pool).await?;
        let store = SqliteStore {
            pool,
            writer: Mutex::new(()),
            wal: WalSync::new(wal),
        };
        super::index_unless_shared(&store).await?;
        Ok(store)
    }

    /// Closes every connection (checkpointing the WAL when the last one goes).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction, holding the write lock from its first statement on.
    pub(super) async fn write(&self) -> Result<Write<'_>> {
        let turn = self.writer.lock().await;
        // Opened in a task of its own, so that it cannot be dropped halfway. sqlx runs the
        // BEGIN on the connection's thread and sends back the answer; a caller dropped after
        // the BEGIN ran but before the answer was read (a client hanging up) loses the only
        // handle that could roll it back, and the connection goes back to the pool inside a
        // transaction that holds SQLite's write lock for good. The task keeps the handle
        // until it is owned: a transaction nobody receives is dropped, and so rolled back.
        let pool = self.pool.clone();
        let tx = tokio::spawn(async move { pool.begin_with("BEGIN IMMEDIATE").await })
            .await
            // Only a panic or a runtime shutting down ends the task early.
            .map_err(|_| sqlx::Error::WorkerCrashed)??;
        Ok(Write {
            tx,
            turn,
            wal: &self.wal,
        })
    }
}

/// Applies the migrations with foreign keys off, as SQLite's procedure for rebuilding a table
/// requires (a parent table dropped and recreated), then checks that every reference holds.
async fn migrate(pool: &SqlitePool) -> Result<()> {
    let mut conn = pool.acquire().await?;
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&mut *conn)
        .await?;
    let migrated = MIGRATOR.run(&mut *conn).await;
    sqlx::query("PRAGMA foreign_keys = ON")
        .execute(&mut *conn)
        .await?;
    migrated?;
    let broken: Vec<SqliteRow> = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut *conn)
        .await?;
    if !broken.is_empty() {
        return Err(StoreError::Conflict(format!(
            "{} rows reference rows that do not exist after migrating",
            broken.len()
        )));
    }
    Ok(())
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
//
// The `pub(super)` helpers here and `refund_due` below hold no SQLite specifics: the PostgreSQL
// store uses the same ones, so that both backends convert and refund identically.

/// A value that cannot be stored as it is.
fn unstorable(message: String) -> StoreError {
    StoreError::Db(sqlx::Error::Encode(message.into()))
}

/// A stored value that does not read back as what it should be.
pub(super) fn undecodable(column: &str, message: String) -> StoreError {
    StoreError::Db(sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: message.into(),
    })
}

/// SQLite integers (and PostgreSQL BIGINTs) are signed 64-bit; ids and counts above
/// `i64::MAX` cannot be stored.
pub(super) fn to_db(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| unstorable(format!("{what} {value} is too large to store")))
}

pub(super) fn opt_to_db(value: Option<u64>, what: &str) -> Result<Option<i64>> {
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
pub(super) fn duplicate(err: sqlx::Error, what: impl FnOnce(&str) -> String) -> StoreError {
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
     o.synced_at AS synced_at, o.attention AS attention, o.list_cost AS list_cost, \
     o.first_cost AS first_cost, o.can_refill AS can_refill, o.can_cancel AS can_cancel, \
     o.dispatch_deadline AS dispatch_deadline, o.progress_at AS progress_at, \
     o.drip_runs AS drip_runs, o.drip_interval AS drip_interval, o.runs_done AS runs_done, \
     o.child_orders AS child_orders \
     FROM orders o JOIN customers c ON c.id = o.customer_id";

fn order_from_row(row: &SqliteRow) -> Result<Order> {
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

fn get_attention(row: &SqliteRow) -> Result<Option<Attention>> {
    let text: Option<String> = row.try_get("attention")?;
    text.map(|t| {
        Attention::parse(&t)
            .ok_or_else(|| undecodable("attention", format!("unknown reason {t:?}")))
    })
    .transpose()
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
pub(super) fn open_refill_statuses() -> Vec<&'static str> {
    RefillStatus::ALL
        .into_iter()
        .filter(|s| !s.is_final())
        .map(RefillStatus::as_str)
        .collect()
}

// ---- money ----

/// What an order's row holds that its refund depends on.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Books {
    pub charge: Units,
    pub refunded: Units,
    pub billed: u64,
    pub first_cost: Option<Units>,
    pub list_cost: Option<Units>,
}

impl Books {
    /// The upstream's own cost for the order, the base of the share it gives back: the
    /// first charge it reported, or (never reported) its list price at placement.
    fn initial_cost(&self) -> Option<Units> {
        self.first_cost.filter(|&c| c > 0).or(self.list_cost)
    }
}

/// The marks `settle` clears: orders that got no automatic refund and wait for a person.
pub(super) const SETTLEABLE: [Attention; 2] =
    [Attention::RefundUnknown, Attention::PartialWithoutRemains];

/// Whether order `id` (its books and mark as read under the write lock) may be settled with
/// `refund`: it must carry a settleable mark, and the refund must be within what is left.
pub(super) fn check_settle(
    id: i64,
    books: &Books,
    mark: Option<Attention>,
    refund: Units,
) -> Result<()> {
    if !mark.is_some_and(|m| SETTLEABLE.contains(&m)) {
        return Err(StoreError::Conflict(format!(
            "order {id} is not waiting for a refund decision (attention: {}); \
             only refund_unknown and partial_without_remains orders are settled",
            mark.map_or("none", Attention::as_str)
        )));
    }
    let left = books.charge.saturating_sub(books.refunded).max(0);
    if refund < 0 || refund > left {
        return Err(StoreError::Conflict(format!(
            "order {id}: a refund of {} is above what is still refundable ({} of {} charged)",
            money::format(money::from_units(refund)),
            money::format(money::from_units(left)),
            money::format(money::from_units(books.charge)),
        )));
    }
    // A marked order got no refund entry (its automatic refund was withheld), so the one
    // refund entry an order may have is still free; if not, say so rather than hit the index.
    if refund > 0 && books.refunded > 0 {
        return Err(StoreError::Conflict(format!(
            "order {id} was already refunded {}; settle refuses a second refund",
            money::format(money::from_units(books.refunded))
        )));
    }
    Ok(())
}

/// The ledger note of a settlement: who or why, as the operator gave it.
pub(super) fn settle_note(note: &str) -> String {
    format!("settled: {}", note.trim())
}

/// The refund a final `status` is due on an order, and the mark it gets if a person must
/// settle it: `Partial` as [`money::partial_settlement`] says (the upstream's share of its
/// `initial` cost given back, `last_cost` being what it charges at the end), `Canceled`
/// everything still held, `Completed` nothing. Never more than `charge - refunded`.
pub(super) fn refund_due(
    status: Status,
    books: &Books,
    remains: Option<i64>,
    last_cost: Option<Units>,
) -> Result<(Units, Option<Attention>)> {
    let left = books.charge.saturating_sub(books.refunded).max(0);
    let (due, mark) = match status {
        Status::Partial => {
            let share = money::upstream_share(
                books.initial_cost().map(money::from_units),
                last_cost.map(money::from_units),
            );
            let charge = money::from_units(books.charge);
            match money::partial_settlement(charge, books.billed, remains, share) {
                Ok(refund) => (
                    money::to_units(refund).ok_or_else(|| {
                        unstorable(format!("refund {refund} is not a whole unit"))
                    })?,
                    None,
                ),
                Err(money::Withheld::RefundUnknown) => (0, Some(Attention::RefundUnknown)),
                Err(money::Withheld::NoRemains) => (0, Some(Attention::PartialWithoutRemains)),
            }
        }
        Status::Canceled => (left, None),
        Status::Completed | Status::Pending | Status::InProgress | Status::Processing => (0, None),
    };
    Ok((due.clamp(0, left), mark))
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

pub(super) async fn fetch_customer(conn: &mut SqliteConnection, id: i64) -> Result<Customer> {
    let row = sqlx::query(&format!(
        "SELECT {CUSTOMER_COLUMNS} FROM customers c WHERE c.id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    customer_from_row(&row)
}

/// [`Store::adjust_balance`] inside a [`Write`] (the admin store adds its idempotency key to it).
pub(super) async fn adjust_balance_in(
    conn: &mut SqliteConnection,
    name: &str,
    amount: Units,
    note: Option<&str>,
    now: Millis,
) -> Result<Customer> {
    let id = sqlx::query_scalar::<_, i64>("SELECT id FROM customers WHERE name = ?")
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
        let customer = adjust_balance_in(w.conn(), name, amount, note, now).await?;
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
        let drip_runs = opt_to_db(order.drip.map(|d| d.runs), "runs")?;
        let drip_interval = opt_to_db(order.drip.map(|d| d.interval), "interval")?;

        let mut w = self.write().await?;
        // Refuse early, before inserting anything, when the funds are not there; `post` checks
        // again (exactly, under the same lock) when it moves the money.
        let row = sqlx::query("SELECT balance, credit_limit, enabled FROM customers WHERE id = ?")
            .bind(order.customer_id)
            .fetch_optional(w.conn())
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

        let id = sqlx::query(
            "INSERT INTO orders (customer_id, service, upstream, upstream_service, state, status, \
             charge, refunded, billed, link, fields, created_at, updated_at, list_cost, \
             can_refill, can_cancel, dispatch_deadline, drip_runs, drip_interval) \
             VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .bind(order.list_cost)
        .bind(order.can_refill)
        .bind(order.can_cancel)
        .bind(order.dispatch_deadline)
        .bind(drip_runs)
        .bind(drip_interval)
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

    async fn retarget_order(
        &self,
        id: i64,
        upstream: &str,
        upstream_service: u64,
        list_cost: Option<Units>,
    ) -> Result<()> {
        let upstream_service = to_db(upstream_service, "upstream service")?;
        let mut w = self.write().await?;
        let changed = sqlx::query(
            "UPDATE orders SET upstream = ?, upstream_service = ?, list_cost = ? \
             WHERE id = ? AND state = 'dispatching'",
        )
        .bind(upstream)
        .bind(upstream_service)
        .bind(list_cost)
        .bind(id)
        .execute(w.conn())
        .await?;
        if changed.rows_affected() != 1 {
            return Err(not_in_state(w.conn(), id, OrderState::Dispatching).await);
        }
        w.commit().await
    }

    async fn mark_placed(&self, id: i64, upstream_order: &str, now: Millis) -> Result<()> {
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
            "UPDATE orders SET state = 'unknown', attention = 'unknown_outcome', note = ?, \
             updated_at = ? WHERE id = ? AND state = 'dispatching'",
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

    async fn recover_dispatching(
        &self,
        deadline_before: Millis,
        updated_before: Millis,
        now: Millis,
    ) -> Result<u64> {
        let mut w = self.write().await?;
        let changed = sqlx::query(
            "UPDATE orders SET state = 'unknown', attention = 'unknown_outcome', note = ?1, \
             updated_at = ?2 WHERE state = 'dispatching' \
             AND COALESCE(dispatch_deadline < ?3, updated_at < ?4)",
        )
        .bind(INTERRUPTED_NOTE)
        .bind(now)
        .bind(deadline_before)
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
        match filter.attention {
            None => {}
            Some(AttentionFilter::Any) => sql.push_str(" AND o.attention IS NOT NULL"),
            Some(AttentionFilter::Only(_)) => sql.push_str(" AND o.attention = ?"),
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
        let runs = opt_to_db(update.runs, "runs")?;
        let children = super::child_orders_to_db(&update.child_orders);
        let mut w = self.write().await?;
        let row = sqlx::query(
            "SELECT customer_id, state, status, charge, refunded, billed, remains, start_count, \
             first_cost, list_cost \
             FROM orders WHERE id = ?",
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
                "UPDATE orders SET status = ?, remains = ?, \
                 start_count = COALESCE(?, start_count), cost = COALESCE(?, cost), \
                 first_cost = COALESCE(first_cost, ?), \
                 runs_done = COALESCE(?, runs_done), child_orders = COALESCE(?, child_orders), \
                 synced_at = ?, updated_at = ?, lease_until = NULL, \
                 progress_at = CASE WHEN ? THEN ? ELSE progress_at END, \
                 attention = CASE WHEN ? AND attention = 'stuck' THEN NULL ELSE attention END \
                 WHERE id = ? AND state = 'placed'",
            )
            .bind(update.status.as_str())
            .bind(update.remains)
            .bind(start_count)
            .bind(update.cost)
            .bind(update.cost.filter(|&c| c > 0))
            .bind(runs)
            .bind(&children)
            .bind(now)
            .bind(now)
            .bind(moved)
            .bind(now)
            .bind(moved)
            .bind(id)
            .execute(w.conn())
            .await?;
            w.commit().await?;
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
            "UPDATE orders SET state = 'final', status = ?, remains = ?, \
             start_count = COALESCE(?, start_count), cost = COALESCE(?, cost), \
             refunded = refunded + ?, attention = ?, \
             runs_done = COALESCE(?, runs_done), child_orders = COALESCE(?, child_orders), \
             synced_at = ?, updated_at = ?, lease_until = NULL, progress_at = ? \
             WHERE id = ? AND state = 'placed'",
        )
        .bind(update.status.as_str())
        .bind(update.remains)
        .bind(start_count)
        .bind(update.cost)
        .bind(refund)
        .bind(mark.map(Attention::as_str))
        .bind(runs)
        .bind(&children)
        .bind(now)
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
            attention: mark,
        })
    }

    async fn resolve_placed(&self, id: i64, upstream_order: &str, now: Millis) -> Result<()> {
        let mut w = self.write().await?;
        let holder = sqlx::query(
            "SELECT h.id AS id, h.upstream AS upstream FROM orders o JOIN orders h \
             ON h.upstream = o.upstream AND h.upstream_order = ? AND h.id <> o.id \
             WHERE o.id = ? ORDER BY h.id LIMIT 1",
        )
        .bind(upstream_order)
        .bind(id)
        .fetch_optional(w.conn())
        .await?;
        if let Some(h) = holder {
            let upstream: String = h.try_get("upstream")?;
            return Err(super::already_held(
                &upstream,
                upstream_order,
                h.try_get("id")?,
            ));
        }
        let changed = sqlx::query(
            "UPDATE orders SET state = 'placed', upstream_order = ?, status = ?, \
             synced_at = NULL, attention = NULL, updated_at = ? \
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
        let books = Books {
            charge: row.try_get("charge")?,
            refunded: row.try_get("refunded")?,
            ..Books::default()
        };
        let (refund, _) = refund_due(Status::Canceled, &books, None, None)?;
        let changed = sqlx::query(
            "UPDATE orders SET state = 'final', status = ?, refunded = refunded + ?, \
             attention = NULL, updated_at = ? WHERE id = ? AND state = 'unknown'",
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

    async fn settle(&self, id: i64, refund: Units, note: &str, now: Millis) -> Result<Units> {
        let mut w = self.write().await?;
        let row =
            sqlx::query("SELECT customer_id, charge, refunded, attention FROM orders WHERE id = ?")
                .bind(id)
                .fetch_optional(w.conn())
                .await?
                .ok_or(StoreError::NotFound)?;
        let books = Books {
            charge: row.try_get("charge")?,
            refunded: row.try_get("refunded")?,
            ..Books::default()
        };
        check_settle(id, &books, get_attention(&row)?, refund)?;
        let customer_id: i64 = row.try_get("customer_id")?;
        let changed = sqlx::query(
            "UPDATE orders SET refunded = refunded + ?, attention = NULL, updated_at = ? \
             WHERE id = ? AND state = 'final' AND attention IN (?, ?)",
        )
        .bind(refund)
        .bind(now)
        .bind(id)
        .bind(SETTLEABLE[0].as_str())
        .bind(SETTLEABLE[1].as_str())
        .execute(w.conn())
        .await?;
        if changed.rows_affected() != 1 {
            return Err(not_in_state(w.conn(), id, OrderState::Final).await);
        }
        if refund > 0 {
            let note = settle_note(note);
            let kind = EntryKind::Refund;
            post(
                w.conn(),
                customer_id,
                refund,
                kind,
                Some(id),
                Some(&note),
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
        const STUCK: &str = "UPDATE orders SET attention = 'stuck', updated_at = ? \
             WHERE state = 'placed' AND attention IS NULL \
             AND COALESCE(progress_at, created_at) < ?";
        let mut w = self.write().await?;
        let mut marked = 0;
        for (service, before) in &cutoffs.services {
            let done = sqlx::query(&format!("{STUCK} AND service = ?"))
                .bind(now)
                .bind(before)
                .bind(to_db(*service, "service")?)
                .execute(w.conn())
                .await?;
            marked += done.rows_affected();
        }
        let sql = format!(
            "{STUCK} AND service NOT IN ({})",
            placeholders(cutoffs.services.len())
        );
        let mut query = sqlx::query(&sql).bind(now).bind(cutoffs.before);
        for (service, _) in &cutoffs.services {
            query = query.bind(to_db(*service, "service")?);
        }
        marked += query.execute(w.conn()).await?.rows_affected();
        w.commit().await?;
        Ok(marked)
    }

    async fn unlink_order(&self, id: i64, note: &str, now: Millis) -> Result<OrderState> {
        let mut w = self.write().await?;
        // A placed order's outcome is the operator's again; the others keep their state. SET
        // reads the row as it was, so `state` in each CASE is the old one.
        let changed = sqlx::query(
            "UPDATE orders SET upstream_order = NULL, note = ?, updated_at = ?, \
             synced_at = NULL, lease_until = NULL, \
             attention = CASE WHEN state = 'placed' THEN 'unknown_outcome' ELSE attention END, \
             state = CASE WHEN state = 'placed' THEN 'unknown' ELSE state END \
             WHERE id = ? AND upstream_order IS NOT NULL AND state <> 'dispatching'",
        )
        .bind(note)
        .bind(now)
        .bind(id)
        .execute(w.conn())
        .await?;
        if changed.rows_affected() != 1 {
            return Err(super::cannot_unlink(fetch_order(w.conn(), id).await?, id));
        }
        let state = fetch_order(w.conn(), id)
            .await?
            .ok_or(StoreError::NotFound)?;
        w.commit().await?;
        Ok(state.state)
    }

    async fn note_order(&self, id: i64, note: &str, now: Millis) -> Result<()> {
        let mut w = self.write().await?;
        let changed = sqlx::query("UPDATE orders SET note = ?, updated_at = ? WHERE id = ?")
            .bind(note)
            .bind(now)
            .bind(id)
            .execute(w.conn())
            .await?;
        if changed.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
        w.commit().await
    }

    async fn unique_upstream_orders(&self) -> Result<()> {
        const INDEXED: &str = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' \
             AND name = 'orders_upstream_order_unique'";
        // Every open asks: a read, so that the CLI beside a busy server takes no write lock.
        let indexed: i64 = sqlx::query_scalar(INDEXED).fetch_one(&self.pool).await?;
        if indexed > 0 {
            return Ok(());
        }
        // Under the write lock, so that no order takes a shared id between check and index.
        let mut w = self.write().await?;
        let rows: Vec<(String, String, i64)> = sqlx::query_as(super::SHARED_UPSTREAM_ORDERS)
            .fetch_all(w.conn())
            .await?;
        if !rows.is_empty() {
            return Err(StoreError::SharedUpstreamOrders(super::group_shared(rows)));
        }
        sqlx::query(super::UNIQUE_UPSTREAM_ORDER_INDEX)
            .execute(w.conn())
            .await?;
        w.commit().await
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
            "UPDATE refills SET status = ?, synced_at = ?, lease_until = NULL WHERE id = ? AND status IN ({})",
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

    use super::*;
    use crate::store::conformance::{Backend, NOW, ONE, books, customer, order, placed};

    /// The behaviour every store shares (`store::conformance`), on SQLite.
    mod conformance {
        crate::store::conformance::conformance_tests!(super::SqliteDb);
    }

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

    /// A SQLite database for one test: in memory, or a file when a second store must open it.
    pub(super) struct SqliteDb {
        // Declared first: the store is closed before its file is removed.
        store: Arc<SqliteStore>,
        file: Option<TempDb>,
    }

    impl Backend for SqliteDb {
        async fn open() -> Option<SqliteDb> {
            let store = SqliteStore::open("sqlite::memory:").await.unwrap();
            Some(SqliteDb {
                store: Arc::new(store),
                file: None,
            })
        }

        async fn open_shared() -> Option<SqliteDb> {
            let file = TempDb::new();
            let store = SqliteStore::open(&file.url()).await.unwrap();
            Some(SqliteDb {
                store: Arc::new(store),
                file: Some(file),
            })
        }

        fn store(&self) -> Arc<dyn Store> {
            self.store.clone()
        }

        async fn another(&self) -> Arc<dyn Store> {
            let file = self
                .file
                .as_ref()
                .expect("another() needs a database from open_shared()");
            Arc::new(SqliteStore::open(&file.url()).await.unwrap())
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
            let mut w = self.store.write().await?;
            post(w.conn(), customer_id, amount, kind, order_id, None, NOW).await
            // Dropping `w` rolls back.
        }
    }

    fn due(
        status: Status,
        charge: Units,
        refunded: Units,
        billed: u64,
        remains: Option<i64>,
    ) -> Units {
        let books = Books {
            charge,
            refunded,
            billed,
            ..Books::default()
        };
        refund_due(status, &books, remains, None).unwrap().0
    }

    #[test]
    fn refunds_round_down_and_never_exceed_what_is_left() {
        use Status::*;
        // 157 billed for 0.17663, 100 left: 0.112500… → 0.1125.
        assert_eq!(due(Partial, 17_663, 0, 157, Some(100)), 11_250);
        // Unreported or negative remains: nothing is known to be undelivered.
        assert_eq!(due(Partial, ONE, 0, 1000, None), 0);
        assert_eq!(due(Partial, ONE, 0, 1000, Some(-20)), 0);
        // More remains than billed: at most the whole charge.
        assert_eq!(due(Partial, ONE, 0, 1000, Some(5000)), ONE);
        // One unit over three: a third of 0.00001 rounds down to nothing.
        assert_eq!(due(Partial, 1, 0, 3, Some(1)), 0);
        // Canceled gives back what is still held; never more than the charge.
        assert_eq!(due(Canceled, ONE, 0, 1000, Some(0)), ONE);
        assert_eq!(due(Canceled, ONE, 40_000, 1000, None), 60_000);
        assert_eq!(due(Partial, ONE, 90_000, 1000, Some(500)), 10_000);
        assert_eq!(due(Completed, ONE, 0, 1000, Some(500)), 0);
        assert_eq!(due(Canceled, 0, 0, 0, None), 0);
    }

    #[test]
    fn partial_refunds_follow_the_upstreams_charge() {
        use Status::*;
        let package = Books {
            charge: 3 * ONE,
            billed: 1,
            first_cost: Some(2 * ONE),
            list_cost: Some(ONE),
            ..Books::default()
        };
        // First reported cost 2, final 0.5: three quarters given back.
        let refund = refund_due(Partial, &package, Some(1), Some(ONE / 2)).unwrap();
        assert_eq!(refund, (225_000, None));
        // Never reported while running: the list cost is the base.
        let unseen = Books {
            first_cost: None,
            ..package
        };
        let refund = refund_due(Partial, &unseen, Some(1), Some(ONE / 4)).unwrap();
        assert_eq!(refund, (225_000, None));
        // No usable final charge: nothing, and a person settles it.
        for last in [None, Some(0)] {
            let refund = refund_due(Partial, &package, Some(1), last).unwrap();
            assert_eq!(refund, (0, Some(Attention::RefundUnknown)));
        }
        // Per unit: remains, capped by the share; no remains: nothing, marked.
        let per_unit = Books {
            charge: ONE,
            billed: 1000,
            first_cost: Some(ONE),
            ..Books::default()
        };
        let capped = refund_due(Partial, &per_unit, Some(800), Some(ONE / 2)).unwrap();
        assert_eq!(capped, (ONE / 2, None));
        let unmarked = refund_due(Partial, &per_unit, None, Some(ONE / 2)).unwrap();
        assert_eq!(unmarked, (0, Some(Attention::PartialWithoutRemains)));
        assert_eq!(
            refund_due(Canceled, &package, None, None).unwrap(),
            (3 * ONE, None)
        );
    }

    /// STRICT tables refuse a value that is not an integer (a float bound by mistake, an
    /// overflow turned REAL) instead of storing it.
    #[tokio::test]
    async fn strict_tables_refuse_what_is_not_an_integer() {
        let db = SqliteDb::open().await.unwrap();
        let store = db.store();
        let c = customer(&*store, "uma", ONE, 0).await;
        placed(&*store, c.id, ONE, 1000, 1).await;
        for sql in [
            "UPDATE customers SET balance = 1.5",
            "UPDATE orders SET refunded = 0.5",
            "UPDATE customers SET balance = 9223372036854775807 + 1",
        ] {
            assert!(db.execute(sql).await.is_err(), "{sql}");
        }
        assert_eq!(books(&db, c.id).await, 0);
    }

    /// The CLI opens the file while the server runs: each sees the other's writes, and what
    /// was committed is still there after both close.
    #[tokio::test]
    async fn concurrent_writers_share_fsyncs_and_every_returned_commit_is_synced() {
        let db = TempDb::new();
        let store = Arc::new(SqliteStore::open(&db.url()).await.unwrap());
        let c = customer(store.as_ref(), "sam", 1000 * ONE, 0).await;
        let writers: Vec<_> = (0..64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let o = order(store.as_ref(), c.id, ONE, 1000).await;
                    store
                        .mark_placed(o.id, &(7000 + i).to_string(), NOW)
                        .await
                        .unwrap();
                    // Returned: its commit must be covered by a finished fsync.
                    let wal = &store.wal;
                    assert!(
                        wal.synced.load(Ordering::SeqCst) >= 1,
                        "returned before any fsync"
                    );
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let wal = &store.wal;
        let commits = wal.committed.load(Ordering::SeqCst);
        assert_eq!(wal.synced.load(Ordering::SeqCst), commits);
        assert!(commits >= 129, "{commits} commits"); // customer + 64 × (hold, placed)
        assert!(
            wal.fsyncs.load(Ordering::Relaxed) < commits,
            "no commits were grouped"
        );
        store.close().await;
        let again = SqliteStore::open(&db.url()).await.unwrap();
        let c = again.customer_by_name("sam").await.unwrap().unwrap();
        assert_eq!(c.balance, 936 * ONE);
        assert_eq!(again.ledger(c.id).await.unwrap().len(), 65);
    }

    /// A request whose client hangs up is dropped wherever it is, also halfway through opening
    /// a transaction. No such drop may leave a connection inside a transaction: it would hold
    /// SQLite's write lock, and every later write would wait out the busy timeout and fail.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_dropped_at_any_point_leave_no_transaction_open() {
        let db = TempDb::new();
        let store = Arc::new(SqliteStore::open(&db.url()).await.unwrap());
        customer(store.as_ref(), "sam", 0, 0).await;
        for round in 0..600u64 {
            let writer = store.clone();
            let write = tokio::spawn(async move {
                writer.adjust_balance("sam", ONE, None, NOW).await.unwrap();
            });
            // Dropped after 0–600 µs: at some of these instants the BEGIN has run on the
            // connection's thread and its answer is on the way back.
            let until = std::time::Instant::now() + Duration::from_micros(round);
            while std::time::Instant::now() < until {
                tokio::task::yield_now().await;
            }
            write.abort();
            if let Err(e) = write.await {
                assert!(e.is_cancelled(), "a write failed: {e}");
            }
        }
        // Every pooled connection takes a write in turn; none may find SQLite locked.
        for _ in 0..2 * POOL_SIZE {
            let write = store.adjust_balance("sam", ONE, None, NOW);
            tokio::time::timeout(Duration::from_secs(5), write)
                .await
                .expect("a write waited on a lock no one holds")
                .expect("a write failed after dropped ones");
        }
        let c = store.customer_by_name("sam").await.unwrap().unwrap();
        assert_eq!(
            c.balance,
            ONE * store.ledger(c.id).await.unwrap().len() as Units,
            "the balance is the sum of the entries"
        );
    }

    /// A database written by the previous release (migrations 1 and 2) keeps every order,
    /// entry and reference when its orders table is rebuilt for text upstream ids.
    #[tokio::test]
    async fn upgrading_keeps_orders_and_their_ledger_references() {
        let file = TempDb::new();
        std::fs::create_dir_all(file.dir.join("data")).unwrap();
        let options = SqliteConnectOptions::from_str(&file.url())
            .unwrap()
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        let old = Migrator {
            migrations: MIGRATOR
                .migrations
                .iter()
                .filter(|m| m.version <= 2)
                .cloned()
                .collect::<Vec<_>>()
                .into(),
            ..Migrator::DEFAULT
        };
        old.run(&pool).await.unwrap();
        for sql in [
            "INSERT INTO customers (id, name, key_hash, grp, balance, created_at) \
             VALUES (1, 'ann', zeroblob(32), 'default', 800, 0)",
            "INSERT INTO orders (id, customer_id, service, upstream, upstream_service, \
             upstream_order, state, status, charge, billed, fields, created_at, updated_at) \
             VALUES (7, 1, 1, 'main', 101, 123456, 'placed', 'Pending', 100, 1000, '{}', 0, 0), \
             (8, 1, 1, 'main', 101, NULL, 'unknown', 'Pending', 100, 1000, '{}', 0, 0)",
            "INSERT INTO ledger (customer_id, amount, kind, order_id, created_at) \
             VALUES (1, 1000, 'credit', NULL, 0), (1, -100, 'charge', 7, 0), \
             (1, -100, 'charge', 8, 0)",
        ] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        pool.close().await;

        let store = SqliteStore::open(&file.url()).await.unwrap();
        let placed = store.order(7).await.unwrap().unwrap();
        assert_eq!(placed.upstream_order.as_deref(), Some("123456"));
        assert_eq!(placed.attention, None);
        let unknown = store.order(8).await.unwrap().unwrap();
        assert_eq!(unknown.attention, Some(Attention::UnknownOutcome));
        assert_eq!(store.ledger(1).await.unwrap().len(), 3);
        // Foreign keys are on again: an entry for an order that does not exist is refused.
        let orphan = sqlx::query(
            "INSERT INTO ledger (customer_id, amount, kind, order_id, created_at) \
             VALUES (1, 5, 'refund', 99, 0)",
        )
        .execute(&store.pool)
        .await;
        assert!(orphan.is_err(), "{orphan:?}");
        store.close().await;
    }

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
            // NORMAL: commits are made durable by WalSync, not inside SQLite's lock.
            assert_eq!((mode.as_str(), sync, fk), ("wal", 1, 1));
        }
        server.close().await;
        cli.close().await;

        let again = SqliteStore::open(&db.url()).await.unwrap();
        assert_eq!(again.order(o.id).await.unwrap().unwrap(), o);
        let again = SqliteDb {
            store: Arc::new(again),
            file: None,
        };
        assert_eq!(books(&again, c.id).await, 7 * ONE);
    }
}
