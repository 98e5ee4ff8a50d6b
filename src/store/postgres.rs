//! The PostgreSQL [`Store`]: one database shared by many gateway instances
//! (docs/scaling.md). Every rule of the SQLite store holds here too, across processes and machines;
//! the same conformance tests (`store::conformance`) run against both.
//!
//! # How the money rules hold
//!
//! Transactions run at PostgreSQL's default `READ COMMITTED`, and every decision about money
//! is taken on a row that this transaction has locked:
//!
//! The store's reads, writes and rules are the same for both backends (`store::engine`); this
//! module supplies the connections, the transactions and the row locks ([`Engine::LOCK`]).
//!
//! - A balance only changes through the engine's `post`, which reads the customer's row
//!   `FOR NO KEY UPDATE`, and whose `UPDATE customers SET balance = balance + $1` is guarded (`WHERE … AND balance + $1 >= -credit_limit`, checked by rows affected) when
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
//! [`Store::orders_to_sync`] and [`Store::refills_to_sync`] claim a batch in one transaction:
//! `SELECT … FOR NO KEY UPDATE SKIP LOCKED`, then `UPDATE … SET lease_until = …` on what it
//! picked. Rows another instance is claiming right now are skipped rather than waited for;
//! rows it claimed before stay out of reach until their lease runs out, when any instance
//! takes them over.
//! No advisory locks are used at run time: they are per session, and a transaction-pooling
//! pooler (PgBouncer) hands sessions around between transactions. (The migrator takes one
//! while it migrates, at start-up.)

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::Result;
use super::engine::Engine;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections per instance. Each request holds one for a few short statements; with many
/// instances on one server, `instances × POOL_SIZE` must stay below its `max_connections`
/// (100 by default).
pub const POOL_SIZE: u32 = 10;

/// How long a request waits for a free connection (or a new one) before it fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reported to the server, for `pg_stat_activity`, unless the URL names one.
const APPLICATION_NAME: &str = "panelgate";

pub struct PostgresStore {
    /// The first runtime's pool: migrations, background work, and every request in the
    /// multi-thread model.
    pool: PgPool,
    /// The other runtimes' pools in the thread-per-core model ([`crate::cores`]), each opening
    /// its connections on the runtime that first asks, so that no request waits on another
    /// core's driver for its database reply.
    others: Vec<PgPool>,
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
        let store = PostgresStore {
            pool,
            others: Vec::new(),
        };
        super::index_unless_shared(&store).await?;
        Ok(store)
    }

    /// [`PostgresStore::open`] with a pool for each of `cores` runtimes; the extra ones connect
    /// lazily, from the runtime that uses them. Each has [`POOL_SIZE`] connections.
    pub async fn open_per_core(url: &str, cores: usize) -> Result<PostgresStore> {
        let options = PgConnectOptions::from_str(url)?;
        let mut store = PostgresStore::open_with(options, POOL_SIZE).await?;
        let options = store.pool.connect_options().as_ref().clone();
        store.others = (1..cores)
            .map(|_| {
                PgPoolOptions::new()
                    .max_connections(POOL_SIZE)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(options.clone())
            })
            .collect();
        Ok(store)
    }

    /// The calling runtime's pool.
    fn pool(&self) -> &PgPool {
        match crate::cores::current() {
            0 => &self.pool,
            n => self.others.get(n - 1).unwrap_or(&self.pool),
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        for pool in &self.others {
            pool.close().await;
        }
        self.pool.close().await;
    }
}

#[async_trait]
impl Engine for PostgresStore {
    type Conn = PgConnection;
    type Read = PoolConnection<Postgres>;
    type Tx = Transaction<'static, Postgres>;

    // Not `FOR UPDATE`: see the module documentation.
    const LOCK: &'static str = " FOR NO KEY UPDATE";
    // By name as bytes, as SQLite sorts it, whatever the database's locale.
    const BY_NAME: &'static str = "c.name COLLATE \"C\"";
    const FIND: &'static str = "strpos";
    const INDEXED: &'static str = "SELECT COUNT(*) AS n \
         WHERE to_regclass('orders_upstream_order_unique') IS NOT NULL";
    // Instances starting together: one checks and creates, the others wait here and then find
    // the index. The table lock keeps orders from taking a shared id between the check and
    // the index.
    const INDEX_LOCKS: &'static [&'static str] = &[
        "SELECT pg_advisory_xact_lock(7419260413)",
        "LOCK TABLE orders IN SHARE MODE",
    ];
    const RETRIES: u32 = 4;
    const SINGLE_WRITER: bool = false;

    // Only the claimed table's rows: an order's customer stays free for new orders.
    fn claim(alias: &str) -> String {
        format!(" FOR NO KEY UPDATE OF {alias} SKIP LOCKED")
    }

    async fn read(&self) -> Result<PoolConnection<Postgres>> {
        Ok(self.pool().acquire().await?)
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool().begin().await?)
    }

    fn conn(tx: &mut Self::Tx) -> &mut PgConnection {
        tx
    }

    async fn commit(&self, tx: Transaction<'static, Postgres>) -> Result<()> {
        Ok(tx.commit().await?)
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
    use crate::store::*;

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
        type Engine = PostgresStore;

        fn engine(&self) -> &PostgresStore {
            &self.store
        }

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
        assert!(matches!(StoreError::from(err), StoreError::Contended(_)));
        drop(reader);

        let err = sqlx::query("INSERT INTO scratch VALUES (1, 0)")
            .execute(pool)
            .await
            .unwrap_err();
        assert!(matches!(StoreError::from(err), StoreError::Duplicate(_)));
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

    /// An index that another already is (same table, columns, operator classes, expressions
    /// and predicate) costs every write and buys no read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_index_is_another_twice() {
        let Some(db) = PgDb::create().await else {
            return;
        };
        let mut conn = PgConnection::connect_with(&db.options).await.unwrap();
        let twice: Vec<(String,)> = sqlx::query_as(
            "SELECT string_agg(c.relname, ' = ' ORDER BY c.relname) FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema() \
             GROUP BY i.indrelid, i.indkey::text, i.indclass::text, i.indisunique, \
             pg_get_expr(i.indexprs, i.indrelid), pg_get_expr(i.indpred, i.indrelid) \
             HAVING COUNT(*) > 1",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert!(twice.is_empty(), "the same index twice: {twice:?}");
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
