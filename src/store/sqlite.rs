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
//! the busy timeout then only matters against another process. They all write on the same
//! connection, whose page cache therefore stays valid from one write to the next (see
//! [`SqliteStore`]'s `writes`).
//!
//! The store's reads, writes and rules are the same for both backends (`store::engine`); this
//! module supplies the connections, the transactions and the durability.
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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Sqlite, SqlitePool, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::engine::Engine;
use super::{Result, StoreError};

/// Kept here too, where it has always been.
pub use super::rules::INTERRUPTED_NOTE;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a write waits for another process (the CLI, a second server by mistake) to
/// release SQLite's write lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections to a database file. SQLite has one writer at a time anyway; the others serve
/// reads (WAL readers never block the writer nor each other).
const POOL_SIZE: u32 = 4;

pub struct SqliteStore {
    /// Reads.
    pool: SqlitePool,
    /// Writes: one connection, always the same. SQLite empties a connection's page cache
    /// whenever another connection has written since its last transaction; with writes taking
    /// turns on the pool's connections, every write read the B-trees' inner pages again (from
    /// the OS, a system call each), more of them the larger the ledger: an `add` at 1M orders
    /// was a quarter slower than at 10k. The one writer's cache stays valid.
    writes: SqlitePool,
    /// Queues this process's writers; see the module documentation.
    writer: Arc<Mutex<()>>,
    wal: WalSync,
}

/// One write transaction: the in-process writer turn and an open `BEGIN IMMEDIATE`.
/// Dropping it without committing rolls back.
pub struct Write {
    // Declared first so that it is dropped (rolled back) before the turn is given up.
    tx: Transaction<'static, Sqlite>,
    turn: OwnedMutexGuard<()>,
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
        let (pool, writes) = if memory {
            // One connection that never closes: every query sees the same in-memory database,
            // which lives exactly as long as this store.
            let one = one_connection(options).await?;
            (one.clone(), one)
        } else {
            create_parent_dir(options.get_filename())?;
            options = options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal);
            let writes = one_connection(options.clone()).await?;
            let pool = SqlitePoolOptions::new()
                .max_connections(POOL_SIZE)
                .connect_with(options)
                .await?;
            (pool, writes)
        };
        migrate(&writes).await?;
        let store = SqliteStore {
            pool,
            writes,
            writer: Arc::new(Mutex::new(())),
            wal: WalSync::new(wal),
        };
        super::index_unless_shared(&store).await?;
        Ok(store)
    }

    /// Closes every connection (checkpointing the WAL when the last one goes).
    pub async fn close(&self) {
        self.pool.close().await;
        self.writes.close().await;
    }

    /// Starts a write transaction, holding the write lock from its first statement on.
    async fn write(&self) -> Result<Write> {
        let turn = self.writer.clone().lock_owned().await;
        // Opened in a task of its own, so that it cannot be dropped halfway. sqlx runs the
        // BEGIN on the connection's thread and sends back the answer; a caller dropped after
        // the BEGIN ran but before the answer was read (a client hanging up) loses the only
        // handle that could roll it back, and the connection goes back to the pool inside a
        // transaction that holds SQLite's write lock for good. The task keeps the handle
        // until it is owned: a transaction nobody receives is dropped, and so rolled back.
        let pool = self.writes.clone();
        let tx = tokio::spawn(async move { pool.begin_with("BEGIN IMMEDIATE").await })
            .await
            // Only a panic or a runtime shutting down ends the task early.
            .map_err(|_| sqlx::Error::WorkerCrashed)??;
        Ok(Write { tx, turn })
    }
}

#[async_trait]
impl Engine for SqliteStore {
    type Conn = SqliteConnection;
    type Read = PoolConnection<Sqlite>;
    type Tx = Write;

    // `BEGIN IMMEDIATE` already holds the database's one write lock.
    const LOCK: &'static str = "";
    // SQLite compares text bytewise unless told otherwise.
    const BY_NAME: &'static str = "c.name";
    const FIND: &'static str = "instr";
    const INDEXED: &'static str = "SELECT COUNT(*) AS n FROM sqlite_master \
         WHERE type = 'index' AND name = 'orders_upstream_order_unique'";
    const INDEX_LOCKS: &'static [&'static str] = &[];
    // One writer at a time: no transaction gets in another's way.
    const RETRIES: u32 = 0;
    const SINGLE_WRITER: bool = true;

    fn claim(_alias: &str) -> String {
        String::new()
    }

    async fn read(&self) -> Result<PoolConnection<Sqlite>> {
        Ok(self.pool.acquire().await?)
    }

    async fn begin(&self) -> Result<Write> {
        self.write().await
    }

    fn conn(tx: &mut Write) -> &mut SqliteConnection {
        &mut tx.tx
    }

    async fn commit(&self, tx: Write) -> Result<()> {
        let Write { tx, turn } = tx;
        tx.commit().await?;
        // The next writer may go on while this one waits for the disk.
        drop(turn);
        self.wal.commit_written().await
    }
}

/// A pool of one connection that stays open.
async fn one_connection(options: SqliteConnectOptions) -> Result<SqlitePool> {
    Ok(SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await?)
}

/// Applies the migrations with foreign keys off, as SQLite's procedure for rebuilding a table
/// requires (a parent table dropped and recreated), then, if any ran, checks that every
/// reference holds.
async fn migrate(pool: &SqlitePool) -> Result<()> {
    let mut conn = pool.acquire().await?;
    let before = applied_migrations(&mut conn).await?;
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&mut *conn)
        .await?;
    let migrated = MIGRATOR.run(&mut *conn).await;
    sqlx::query("PRAGMA foreign_keys = ON")
        .execute(&mut *conn)
        .await?;
    migrated?;
    // Only a migration can have broken a reference (writes run with foreign keys on). The
    // check reads every order and ledger entry: 0.4 s at a million orders, which every CLI
    // command and every start paid when it ran at each open.
    if applied_migrations(&mut conn).await? == before {
        return Ok(());
    }
    let broken: Vec<SqliteRow> = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut *conn)
        .await?;
    if !broken.is_empty() {
        return Err(StoreError::Migration(format!(
            "{} rows reference rows that do not exist after migrating",
            broken.len()
        )));
    }
    Ok(())
}

/// How many migrations the database has had (0 for a new one).
async fn applied_migrations(conn: &mut SqliteConnection) -> Result<i64> {
    let table = sqlx::query("SELECT name FROM sqlite_master WHERE name = '_sqlx_migrations'")
        .fetch_optional(&mut *conn)
        .await?;
    if table.is_none() {
        return Ok(0);
    }
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut *conn)
        .await?)
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::store::conformance::{Backend, NOW, ONE, books, customer, order, placed};
    use crate::store::*;

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
        type Engine = SqliteStore;

        fn engine(&self) -> &SqliteStore {
            &self.store
        }

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
        // No fsync may start until every writer has committed its hold: they pile up behind
        // this one turn, so the grouping does not depend on how fast this disk syncs.
        let held = store.wal.turn.lock().await;
        let before = store.wal.committed.load(Ordering::SeqCst);
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
        while store.wal.committed.load(Ordering::SeqCst) < before + 64 {
            tokio::task::yield_now().await;
        }
        drop(held);
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
            let until = tokio::time::Instant::now() + Duration::from_micros(round);
            while tokio::time::Instant::now() < until {
                tokio::task::yield_now().await;
            }
            write.abort();
            if let Err(e) = write.await {
                assert!(e.is_cancelled(), "a write failed: {e}");
            }
        }
        // The writer's connection takes more writes; none may find SQLite locked.
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
        // The kept order count starts from the orders already there.
        let listed = store.list_customers(&CustomerSearch::default()).await;
        assert_eq!(listed.unwrap()[0].1, 2);
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
