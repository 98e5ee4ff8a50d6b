//! The behaviour every [`Store`] must have, written once and run against each backend.
//!
//! Each case is a function generic over a [`Backend`], which opens a fresh, empty database
//! and gives the few ways around the store that a test needs (raw SQL, a second store on the
//! same database). A backend instantiates every case as a `#[tokio::test]` with
//! [`conformance_tests!`]:
//!
//! ```ignore
//! mod conformance {
//!     crate::store::conformance::conformance_tests!(super::SqliteDb);
//! }
//! ```
//!
//! A case that is written here but not listed in the macro is dead code, which the lints
//! (`-D warnings`) refuse: every case runs for every backend.

use std::sync::Arc;

use tokio::task::JoinSet;

use super::engine::Engine;
use super::rows::{Conn, Fields, Stmt};
use super::rules::Entry;
use super::*;
use crate::protocol::{RefillStatus, Status};

/// A database for one test, with a store on it. Dropping it removes the database.
pub(crate) trait Backend: Sized + Send + Sync + 'static {
    /// A fresh, empty database with a store on it, or `None` when this backend's tests are
    /// skipped (its server is not reachable and `CI` is not set).
    async fn open() -> Option<Self>;

    /// The same, on a database that [`Backend::another`] can open a second time (for SQLite,
    /// a file rather than memory).
    async fn open_shared() -> Option<Self>;

    fn store(&self) -> Arc<dyn Store>;

    /// Another store on the same database, with connections of its own: another process
    /// (the CLI next to the server, or a second gateway instance).
    async fn another(&self) -> Arc<dyn Store>;

    /// The engine under the store, for statements around it.
    type Engine: Engine;

    fn engine(&self) -> &Self::Engine;

    /// Runs one statement on the database directly, around the store.
    async fn execute(&self, sql: &str) -> Result<u64> {
        let mut read = self.engine().read().await?;
        read.execute(Stmt::new(sql.to_owned())).await
    }

    /// The one integer that `sql` returns.
    async fn scalar(&self, sql: &str) -> i64 {
        let stmt = Stmt::new(format!("SELECT ({sql}) AS n"));
        let mut read = self.engine().read().await.unwrap();
        let row = read.fetch_optional(stmt).await.unwrap().expect("no row");
        row.i64("n").unwrap()
    }

    /// Writes a ledger entry with the store's own posting function, in a transaction that is
    /// then rolled back.
    async fn post_and_roll_back(&self, entry: &Entry<'_>) -> Result<()> {
        let mut tx = self.engine().begin().await?;
        let conn = <Self::Engine as Engine>::conn(&mut tx);
        super::engine::post(conn, <Self::Engine as Engine>::LOCK, entry).await
        // Dropping `tx` rolls back.
    }
}

/// Instantiates every case below as a `#[tokio::test]` for the backend `$backend`.
macro_rules! conformance_tests {
    ($backend:ty) => {
        $crate::store::conformance::conformance_tests!(@cases $backend;
            the_ledger_sums_to_the_balance_after_every_kind_of_change,
            the_floor_holds_under_concurrent_orders,
            the_floor_holds_across_two_stores_on_one_database,
            a_partial_is_refunded_exactly_once_under_racing_syncs,
            a_cancel_refunds_the_whole_charge_exactly_once,
            a_batch_of_statuses_applies_every_order_it_can,
            a_running_status_updates_a_placed_order_without_touching_money,
            a_status_changes_nothing_on_an_order_that_is_not_placed,
            a_partial_without_remains_refunds_nothing,
            a_package_partial_refunds_the_share_the_upstream_gave_back,
            a_package_partial_without_a_usable_charge_waits_for_the_operator,
            a_per_unit_partial_is_capped_by_the_upstreams_share,
            only_an_order_waiting_for_a_refund_decision_is_settled,
            a_rejected_order_releases_its_funds,
            an_unknown_order_declared_not_placed_is_canceled_and_refunded,
            an_unknown_order_found_upstream_is_placed_and_synced,
            only_a_dispatching_order_is_retargeted_placed_or_marked_unknown,
            recovery_marks_interrupted_orders_unknown_with_funds_held,
            a_customer_sees_only_their_own_orders_and_refills,
            names_and_keys_are_unique,
            keys_find_customers_and_can_be_changed,
            a_disabled_customer_places_no_order,
            a_debit_stops_at_the_credit_limit,
            a_failed_write_leaves_no_transaction_open,
            claimed_work_is_leased_to_one_claimer,
            orders_to_sync_takes_the_least_recently_synced_first,
            refills_are_synced_until_final,
            listings_and_counts,
            operator_pages_and_order_history,
            open_orders_are_counted_by_upstream,
            the_schema_guards_the_money_rules,
            a_placed_order_that_does_not_move_is_stuck_until_it_moves,
            one_upstream_order_follows_one_local_order,
            a_drip_feed_order_keeps_its_runs_and_is_refunded_per_unit,
            an_idempotent_credit_is_applied_once_across_two_stores,
            admin_tokens_and_audit_rows_are_kept,
            a_customer_changes_group_and_credit_limit,
            console_sessions_end_with_time_logout_or_their_token,
            money_is_summed_by_the_day_orders_were_placed,
            the_balance_after_an_entry_is_the_running_sum_up_to_it,
        );
    };
    (@cases $backend:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::store::conformance::$case::<$backend>().await;
            }
        )*
    };
}
pub(crate) use super::conformance_admin::*;
pub(crate) use conformance_tests;

/// A claim whose lease is over at once, so that repeated claims see the same rows.
pub(crate) fn peek(stale_before: Millis, limit: u32) -> Claim {
    Claim {
        stale_before,
        now: 0,
        lease_until: 0,
        limit,
    }
}

pub(crate) const NOW: Millis = 1_700_000_000_000;
/// 1.00000 in storage units.
pub(crate) const ONE: Units = 100_000;

pub(crate) fn key_of(name: &str) -> KeyHash {
    let mut key = [0u8; 32];
    for (slot, b) in key.iter_mut().zip(name.bytes()) {
        *slot = b;
    }
    key
}

pub(crate) async fn customer(
    store: &dyn Store,
    name: &str,
    balance: Units,
    limit: Units,
) -> Customer {
    store
        .create_customer(name, &key_of(name), "default", limit, balance, NOW)
        .await
        .unwrap()
}

pub(crate) fn new_order(customer_id: i64, charge: Units, billed: u64) -> NewOrder {
    NewOrder {
        customer_id,
        service: 1,
        upstream: "alpha".into(),
        upstream_service: 101,
        charge,
        billed,
        link: Some("https://example.com/p/1".into()),
        fields: r#"{"quantity":"1000"}"#.into(),
        list_cost: None,
        can_refill: true,
        can_cancel: true,
        dispatch_deadline: NOW + 60_000,
        drip: None,
    }
}

pub(crate) async fn order(
    store: &dyn Store,
    customer_id: i64,
    charge: Units,
    billed: u64,
) -> Order {
    store
        .create_order(&new_order(customer_id, charge, billed), NOW)
        .await
        .unwrap()
}

pub(crate) async fn placed(
    store: &dyn Store,
    customer_id: i64,
    charge: Units,
    billed: u64,
    upstream_order: u64,
) -> Order {
    let o = order(store, customer_id, charge, billed).await;
    store
        .mark_placed(o.id, &upstream_order.to_string(), NOW)
        .await
        .unwrap();
    store.order(o.id).await.unwrap().unwrap()
}

pub(crate) fn update(status: Status, remains: Option<i64>) -> StatusUpdate {
    StatusUpdate {
        status,
        remains,
        start_count: Some(10),
        cost: Some(500),
        runs: None,
        child_orders: Vec::new(),
    }
}

pub(crate) async fn get(store: &dyn Store, id: i64) -> Order {
    store.order(id).await.unwrap().unwrap()
}

/// The rules every state must satisfy: the balance is the sum of the ledger, read through
/// the trait and straight from the table, and it is not below the floor. Returns it.
pub(crate) async fn books<B: Backend>(db: &B, customer_id: i64) -> Units {
    books_via(db, &*db.store(), customer_id).await
}

/// [`books`], with the ledger read through `store` (another store on `db`'s database).
pub(crate) async fn books_via<B: Backend>(db: &B, store: &dyn Store, customer_id: i64) -> Units {
    let entries = store.ledger(customer_id).await.unwrap();
    let sum: Units = entries.iter().map(|e| e.amount).sum();
    let balance = db
        .scalar(&format!(
            "SELECT balance FROM customers WHERE id = {customer_id}"
        ))
        .await;
    let limit = db
        .scalar(&format!(
            "SELECT credit_limit FROM customers WHERE id = {customer_id}"
        ))
        .await;
    assert_eq!(balance, sum, "balance is not the sum of {entries:#?}");
    assert!(
        balance >= -limit,
        "balance {balance} below the floor {}",
        -limit
    );
    balance
}

pub(crate) fn kinds(entries: &[LedgerEntry]) -> Vec<EntryKind> {
    entries.iter().map(|e| e.kind).collect()
}

pub(crate) async fn the_ledger_sums_to_the_balance_after_every_kind_of_change<B: Backend>() {
    use EntryKind::*;
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "ana", 100 * ONE, 0).await;
    assert_eq!(c.balance, 100 * ONE);
    let mut expected = 100 * ONE;
    assert_eq!(books(&db, c.id).await, expected);

    store
        .adjust_balance("ana", 5 * ONE, Some("top-up"), NOW)
        .await
        .unwrap();
    expected += 5 * ONE;
    assert_eq!(books(&db, c.id).await, expected);

    let after = store
        .adjust_balance("ana", -2 * ONE, Some("fee"), NOW)
        .await
        .unwrap();
    expected -= 2 * ONE;
    assert_eq!(after.balance, expected);
    assert_eq!(books(&db, c.id).await, expected);

    // Charge 0.17663 for 157 units; Partial with 100 left refunds 0.1125 (rounded down).
    let a = order(&*store, c.id, 17_663, 157).await;
    expected -= 17_663;
    assert_eq!(books(&db, c.id).await, expected);
    store.mark_placed(a.id, "9001", NOW).await.unwrap();
    store
        .apply_status(a.id, &update(Status::InProgress, Some(100)), NOW)
        .await
        .unwrap();
    assert_eq!(books(&db, c.id).await, expected);
    // The upstream reports no final charge: `remains` alone decides.
    let partial = StatusUpdate {
        cost: None,
        ..update(Status::Partial, Some(100))
    };
    let applied = store.apply_status(a.id, &partial, NOW).await.unwrap();
    assert_eq!(
        applied,
        Applied {
            refund: 11_250,
            finalized: true,
            attention: None,
        }
    );
    expected += 11_250;
    assert_eq!(books(&db, c.id).await, expected);

    // Rejected: the charge is released.
    let b = order(&*store, c.id, ONE, 1000).await;
    assert_eq!(books(&db, c.id).await, expected - ONE);
    store
        .mark_rejected(b.id, "upstream said no", NOW)
        .await
        .unwrap();
    assert_eq!(books(&db, c.id).await, expected);

    // Unknown, then declared not placed: refunded in full.
    let d = order(&*store, c.id, 30_000, 1000).await;
    store.mark_unknown(d.id, "timeout", NOW).await.unwrap();
    assert_eq!(books(&db, c.id).await, expected - 30_000);
    assert_eq!(store.resolve_not_placed(d.id, NOW).await.unwrap(), 30_000);
    assert_eq!(books(&db, c.id).await, expected);

    // Canceled upstream: refunded in full.
    let e = placed(&*store, c.id, 50_000, 1000, 9002).await;
    let applied = store
        .apply_status(e.id, &update(Status::Canceled, Some(1000)), NOW)
        .await
        .unwrap();
    assert_eq!(applied.refund, 50_000);
    assert_eq!(books(&db, c.id).await, expected);

    // Completed: the charge stays.
    let f = placed(&*store, c.id, 20_000, 1000, 9003).await;
    let applied = store
        .apply_status(f.id, &update(Status::Completed, Some(0)), NOW)
        .await
        .unwrap();
    assert_eq!(
        applied,
        Applied {
            refund: 0,
            finalized: true,
            attention: None,
        }
    );
    expected -= 20_000;
    assert_eq!(books(&db, c.id).await, expected);

    let entries = store.ledger(c.id).await.unwrap();
    assert_eq!(
        kinds(&entries),
        [
            Credit, Credit, Debit, Charge, Refund, Charge, Release, Charge, Refund, Charge, Refund,
            Charge
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
pub(crate) async fn the_floor_holds_under_concurrent_orders<B: Backend>() {
    let Some(db) = B::open_shared().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "bob", 20 * ONE, 0).await;
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
    assert_eq!(books(&db, c.id).await, 0);
    let orders = store.list_orders(&OrderFilter::default()).await.unwrap();
    assert_eq!(orders.len(), 20);
    assert_eq!(store.ledger(c.id).await.unwrap().len(), 21);
}

/// The same across two stores on one database (server and CLI, or two gateway instances):
/// no in-process lock helps here, only the database's own locking. A credit limit lets the
/// balance go to -10.
pub(crate) async fn the_floor_holds_across_two_stores_on_one_database<B: Backend>() {
    let Some(db) = B::open_shared().await else {
        return;
    };
    let server = db.store();
    let cli = db.another().await;
    let c = customer(&*server, "carol", 10 * ONE, 10 * ONE).await;
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
    assert_eq!(books_via(&db, &*server, c.id).await, -10 * ONE);
    assert_eq!(books_via(&db, &*cli, c.id).await, -10 * ONE);
}

/// Ten sync loops (in two processes) apply the same Partial at once: one refund.
pub(crate) async fn a_partial_is_refunded_exactly_once_under_racing_syncs<B: Backend>() {
    let Some(db) = B::open_shared().await else {
        return;
    };
    let a = db.store();
    let b = db.another().await;
    let c = customer(&*a, "dan", 10 * ONE, 0).await;
    let o = placed(&*a, c.id, 4 * ONE, 1000, 77).await;
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
    let o = get(&*a, o.id).await;
    assert_eq!(
        (o.state, o.status, o.refunded, o.remains),
        (OrderState::Final, Status::Partial, ONE, Some(250))
    );
    assert_eq!(books_via(&db, &*b, c.id).await, 7 * ONE);
    let refunds = a
        .ledger(c.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EntryKind::Refund)
        .count();
    assert_eq!(refunds, 1);
}

pub(crate) async fn a_cancel_refunds_the_whole_charge_exactly_once<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "eve", 10 * ONE, 0).await;
    let o = placed(&*store, c.id, 3 * ONE, 1000, 78).await;
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
    assert_eq!(books(&db, c.id).await, 10 * ONE);

    // Later statuses change nothing on a final order.
    let later = store
        .apply_status(o.id, &update(Status::Pending, Some(5)), NOW + 100)
        .await
        .unwrap();
    assert_eq!(later, Applied::default());
    let o = get(&*store, o.id).await;
    assert_eq!(
        (o.state, o.status, o.refunded),
        (OrderState::Final, Status::Canceled, 3 * ONE)
    );
}

/// One polled batch, one transaction: each order is applied as alone, and the orders that
/// cannot be applied (gone, figures too large to store, a refund already on the ledger) fail
/// on their own without holding back the rest.
pub(crate) async fn a_batch_of_statuses_applies_every_order_it_can<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let (c, d) = (
        customer(&*store, "cal", 10 * ONE, 0).await,
        customer(&*store, "dee", 10 * ONE, 0).await,
    );
    let canceled = placed(&*store, c.id, 3 * ONE, 1000, 81).await;
    let partial = placed(&*store, d.id, 4 * ONE, 1000, 82).await;
    let running = placed(&*store, c.id, ONE, 1000, 83).await;
    let planted = placed(&*store, d.id, 2 * ONE, 1000, 84).await;
    let huge = placed(&*store, c.id, ONE, 1000, 85).await;
    // A refund already on the ledger: refunding the order again breaks the unique entry.
    db.execute(&format!(
        "INSERT INTO ledger (customer_id, amount, kind, order_id, note, created_at) \
         VALUES ({}, 0, 'refund', {}, 'planted', {NOW})",
        d.id, planted.id
    ))
    .await
    .unwrap();
    let mut too_large = update(Status::InProgress, Some(10));
    too_large.start_count = Some(u64::MAX);
    let batch = [
        (canceled.id, update(Status::Canceled, None)),
        (partial.id, update(Status::Partial, Some(250))),
        (999_999, update(Status::Completed, Some(0))),
        (running.id, update(Status::InProgress, Some(400))),
        (planted.id, update(Status::Canceled, None)),
        (huge.id, too_large),
        (canceled.id, update(Status::Canceled, None)),
    ];
    let results = store.apply_statuses(&batch, NOW + 1).await.unwrap();
    assert_eq!(results.len(), batch.len());
    let refund = |i: usize| results[i].as_ref().map(|a| (a.refund, a.finalized)).ok();
    assert_eq!(refund(0), Some((3 * ONE, true)));
    assert_eq!(refund(1), Some((ONE, true)));
    assert!(
        matches!(results[2], Err(StoreError::NotFound)),
        "{:?}",
        results[2]
    );
    assert_eq!(refund(3), Some((0, false)));
    assert!(
        matches!(results[4], Err(StoreError::Duplicate(_))),
        "{:?}",
        results[4]
    );
    assert!(
        matches!(results[5], Err(StoreError::Invalid(_))),
        "{:?}",
        results[5]
    );
    // Seen twice, refunded once.
    assert_eq!(refund(6), Some((0, false)));

    let state = |o: &Order| (o.state, o.status, o.refunded, o.remains);
    assert_eq!(
        state(&get(&*store, canceled.id).await),
        (OrderState::Final, Status::Canceled, 3 * ONE, None)
    );
    assert_eq!(
        state(&get(&*store, partial.id).await),
        (OrderState::Final, Status::Partial, ONE, Some(250))
    );
    assert_eq!(
        state(&get(&*store, running.id).await),
        (OrderState::Placed, Status::InProgress, 0, Some(400))
    );
    // What failed wrote nothing: still placed, as it was, for the next pass.
    for o in [&planted, &huge] {
        let now = get(&*store, o.id).await;
        assert_eq!(state(&now), state(o));
        assert_eq!(now.synced_at, None);
    }
    assert_eq!(
        books(&db, c.id).await,
        10 * ONE - 3 * ONE - ONE - ONE + 3 * ONE
    );
    assert_eq!(books(&db, d.id).await, 10 * ONE - 4 * ONE - 2 * ONE + ONE);

    // A batch where every order applies is one transaction; an empty one does nothing.
    let later = [(running.id, update(Status::Completed, Some(0)))];
    let results = store.apply_statuses(&later, NOW + 2).await.unwrap();
    assert!(results[0].as_ref().unwrap().finalized);
    assert!(store.apply_statuses(&[], NOW + 3).await.unwrap().is_empty());
}

pub(crate) async fn a_running_status_updates_a_placed_order_without_touching_money<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "fay", 10 * ONE, 0).await;
    let o = placed(&*store, c.id, ONE, 1000, 79).await;
    assert_eq!((o.status, o.synced_at), (Status::Pending, None));

    let applied = store
        .apply_status(o.id, &update(Status::InProgress, Some(300)), NOW + 5)
        .await
        .unwrap();
    assert_eq!(applied, Applied::default());
    let o = get(&*store, o.id).await;
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
        runs: None,
        child_orders: Vec::new(),
    };
    store.apply_status(o.id, &bare, NOW + 6).await.unwrap();
    let o = get(&*store, o.id).await;
    assert_eq!(
        (o.status, o.remains, o.start_count, o.cost),
        (Status::Processing, Some(200), Some(10), Some(500))
    );
    assert_eq!(books(&db, c.id).await, 9 * ONE);
}

pub(crate) async fn a_status_changes_nothing_on_an_order_that_is_not_placed<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "gus", 10 * ONE, 0).await;
    let dispatching = order(&*store, c.id, ONE, 1000).await;
    let unknown = order(&*store, c.id, ONE, 1000).await;
    store
        .mark_unknown(unknown.id, "timeout", NOW)
        .await
        .unwrap();
    for id in [dispatching.id, unknown.id] {
        let before = get(&*store, id).await;
        let applied = store
            .apply_status(id, &update(Status::Canceled, None), NOW + 9)
            .await
            .unwrap();
        assert_eq!(applied, Applied::default());
        assert_eq!(get(&*store, id).await, before);
    }
    assert!(matches!(
        store
            .apply_status(4242, &update(Status::Completed, None), NOW)
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(books(&db, c.id).await, 8 * ONE);
}

pub(crate) async fn a_partial_without_remains_refunds_nothing<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "hal", 10 * ONE, 0).await;
    let o = placed(&*store, c.id, ONE, 1000, 80).await;
    let applied = store
        .apply_status(o.id, &update(Status::Partial, None), NOW)
        .await
        .unwrap();
    assert_eq!(
        applied,
        Applied {
            refund: 0,
            finalized: true,
            attention: Some(Attention::PartialWithoutRemains),
        }
    );
    let o = get(&*store, o.id).await;
    assert_eq!((o.state, o.refunded), (OrderState::Final, 0));
    assert_eq!(o.attention, Some(Attention::PartialWithoutRemains));
    assert_eq!(books(&db, c.id).await, 9 * ONE);

    // The operator settles it: never above the charge, once, with the note on the ledger.
    let over = store.settle(o.id, ONE + 1, "ops: ann", NOW).await;
    assert!(matches!(over, Err(StoreError::Invalid(_))), "{over:?}");
    assert_eq!(
        store.settle(o.id, 40_000, "ops: ann", NOW).await.unwrap(),
        40_000
    );
    let o = get(&*store, o.id).await;
    assert_eq!((o.refunded, o.attention), (40_000, None));
    let again = store.settle(o.id, 1, "ops: ann", NOW).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(books(&db, c.id).await, 9 * ONE + 40_000);
    let last = store.ledger(c.id).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.kind, last.amount, last.order_id, last.note.as_deref()),
        (
            EntryKind::Refund,
            40_000,
            Some(o.id),
            Some("settled: ops: ann")
        )
    );
}

fn charged(status: Status, remains: Option<i64>, cost: Option<Units>) -> StatusUpdate {
    StatusUpdate {
        cost,
        ..update(status, remains)
    }
}

pub(crate) async fn a_package_partial_refunds_the_share_the_upstream_gave_back<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "pia", 10 * ONE, 0).await;
    let new = NewOrder {
        list_cost: Some(ONE),
        ..new_order(c.id, 3 * ONE, 1)
    };
    let o = store.create_order(&new, NOW).await.unwrap();
    store.mark_placed(o.id, "pk1", NOW).await.unwrap();
    // The first charge reported while running is the upstream's own cost (not the list
    // price, not a later figure).
    let running = charged(Status::InProgress, Some(1), Some(2 * ONE));
    store.apply_status(o.id, &running, NOW).await.unwrap();
    let later = charged(Status::InProgress, Some(1), Some(ONE));
    store.apply_status(o.id, &later, NOW).await.unwrap();
    assert_eq!(get(&*store, o.id).await.first_cost, Some(2 * ONE));
    // It ends charging 0.5 of 2: three quarters of our charge go back, whatever `remains`.
    let partial = charged(Status::Partial, Some(1), Some(ONE / 2));
    let applied = store.apply_status(o.id, &partial, NOW).await.unwrap();
    assert_eq!((applied.refund, applied.attention), (225_000, None));
    let o = get(&*store, o.id).await;
    assert_eq!((o.refunded, o.attention), (225_000, None));
    assert_eq!(books(&db, c.id).await, 7 * ONE + 225_000);

    // Never reported while running: the list cost is the base (1, final 0.2: 80 %).
    let o = store.create_order(&new, NOW).await.unwrap();
    store.mark_placed(o.id, "pk2", NOW).await.unwrap();
    let partial = charged(Status::Partial, Some(1), Some(ONE / 5));
    let applied = store.apply_status(o.id, &partial, NOW).await.unwrap();
    assert_eq!(applied.refund, 240_000);
    assert_eq!(books(&db, c.id).await, 4 * ONE + 225_000 + 240_000);
}

pub(crate) async fn a_package_partial_without_a_usable_charge_waits_for_the_operator<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "quin", 10 * ONE, 0).await;
    for (i, last) in [None, Some(0)].into_iter().enumerate() {
        let o = placed(&*store, c.id, 2 * ONE, 1, 700 + i as u64).await;
        let running = charged(Status::InProgress, Some(1), Some(ONE));
        store.apply_status(o.id, &running, NOW).await.unwrap();
        let partial = charged(Status::Partial, Some(1), last);
        let applied = store.apply_status(o.id, &partial, NOW).await.unwrap();
        assert_eq!(
            applied,
            Applied {
                refund: 0,
                finalized: true,
                attention: Some(Attention::RefundUnknown),
            }
        );
        let o = get(&*store, o.id).await;
        assert_eq!(
            (o.refunded, o.attention),
            (0, Some(Attention::RefundUnknown))
        );
    }
    assert_eq!(books(&db, c.id).await, 6 * ONE);
    let marked = store.list_orders(&OrderFilter::default()).await.unwrap();
    let id = marked[0].id;
    // Settling with nothing owed clears the mark and moves no money.
    assert_eq!(
        store
            .settle(id, 0, "ops: upstream kept it all", NOW)
            .await
            .unwrap(),
        0
    );
    assert_eq!(get(&*store, id).await.attention, None);
    assert_eq!(books(&db, c.id).await, 6 * ONE);
}

pub(crate) async fn a_per_unit_partial_is_capped_by_the_upstreams_share<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "rex", 10 * ONE, 0).await;
    let o = placed(&*store, c.id, ONE, 1000, 810).await;
    let running = charged(Status::InProgress, Some(900), Some(ONE / 2));
    store.apply_status(o.id, &running, NOW).await.unwrap();
    // 800 of 1000 left would refund 0.8, but the upstream gave back only a fifth of its cost.
    let partial = charged(Status::Partial, Some(800), Some(ONE * 4 / 10));
    let applied = store.apply_status(o.id, &partial, NOW).await.unwrap();
    assert_eq!((applied.refund, applied.attention), (ONE / 5, None));
    assert_eq!(books(&db, c.id).await, 9 * ONE + ONE / 5);
}

pub(crate) async fn only_an_order_waiting_for_a_refund_decision_is_settled<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "sol", 10 * ONE, 0).await;
    let done = placed(&*store, c.id, ONE, 1000, 820).await;
    store
        .apply_status(done.id, &update(Status::Completed, Some(0)), NOW)
        .await
        .unwrap();
    let unknown = order(&*store, c.id, ONE, 1000).await;
    store
        .mark_unknown(unknown.id, "timeout", NOW)
        .await
        .unwrap();
    for id in [done.id, unknown.id] {
        let refused = store.settle(id, 1, "ops", NOW).await;
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{refused:?}"
        );
    }
    let missing = store.settle(999_999, 1, "ops", NOW).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    assert_eq!(books(&db, c.id).await, 8 * ONE);
}

pub(crate) async fn a_rejected_order_releases_its_funds<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "ivy", 2 * ONE, 0).await;
    let o = order(&*store, c.id, 2 * ONE, 1000).await;
    assert_eq!(books(&db, c.id).await, 0);
    store
        .mark_rejected(o.id, "Incorrect service ID", NOW + 3)
        .await
        .unwrap();
    assert_eq!(books(&db, c.id).await, 2 * ONE);
    let rejected = get(&*store, o.id).await;
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
    let p = placed(&*store, c.id, ONE, 1000, 81).await;
    assert!(matches!(
        store.mark_rejected(p.id, "late", NOW).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.mark_rejected(4242, "none", NOW).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(books(&db, c.id).await, ONE);
}

pub(crate) async fn an_unknown_order_declared_not_placed_is_canceled_and_refunded<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "jon", 5 * ONE, 0).await;
    let o = order(&*store, c.id, 2 * ONE, 1000).await;
    store
        .mark_unknown(o.id, "connection reset after write", NOW)
        .await
        .unwrap();
    assert_eq!(books(&db, c.id).await, 3 * ONE, "funds stay held");
    assert_eq!(
        store.resolve_not_placed(o.id, NOW + 1).await.unwrap(),
        2 * ONE
    );
    let o = get(&*store, o.id).await;
    assert_eq!(
        (o.state, o.status, o.refunded, o.upstream_order),
        (OrderState::Final, Status::Canceled, 2 * ONE, None)
    );
    assert_eq!(books(&db, c.id).await, 5 * ONE);

    assert!(matches!(
        store.resolve_not_placed(o.id, NOW).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.resolve_placed(o.id, "5", NOW).await,
        Err(StoreError::Conflict(_))
    ));
    let p = placed(&*store, c.id, ONE, 1000, 82).await;
    assert!(matches!(
        store.resolve_not_placed(p.id, NOW).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.resolve_not_placed(4242, NOW).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(books(&db, c.id).await, 4 * ONE);
}

pub(crate) async fn an_unknown_order_found_upstream_is_placed_and_synced<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "kim", 5 * ONE, 0).await;
    let o = order(&*store, c.id, ONE, 1000).await;
    store.mark_unknown(o.id, "timeout", NOW).await.unwrap();
    store.resolve_placed(o.id, "555", NOW + 2).await.unwrap();
    let o = get(&*store, o.id).await;
    assert_eq!(
        (o.state, o.status, o.upstream_order, o.updated_at),
        (
            OrderState::Placed,
            Status::Pending,
            Some("555".to_owned()),
            NOW + 2
        )
    );
    let due = store.orders_to_sync("alpha", &peek(NOW, 10)).await.unwrap();
    assert_eq!(due.iter().map(|o| o.id).collect::<Vec<_>>(), [o.id]);
    assert_eq!(books(&db, c.id).await, 4 * ONE, "the charge stands");

    assert!(matches!(
        store.resolve_placed(o.id, "556", NOW).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.resolve_placed(4242, "1", NOW).await,
        Err(StoreError::NotFound)
    ));
}

pub(crate) async fn only_a_dispatching_order_is_retargeted_placed_or_marked_unknown<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "lea", 5 * ONE, 0).await;
    let o = order(&*store, c.id, ONE, 1000).await;
    store.retarget_order(o.id, "beta", 202, None).await.unwrap();
    let moved = get(&*store, o.id).await;
    assert_eq!(
        (moved.upstream.as_str(), moved.upstream_service),
        ("beta", 202)
    );
    store.mark_placed(o.id, "1234", NOW + 1).await.unwrap();
    let p = get(&*store, o.id).await;
    assert_eq!(
        (p.state, p.upstream_order.clone(), p.status),
        (OrderState::Placed, Some("1234".to_owned()), Status::Pending)
    );

    assert!(matches!(
        store.retarget_order(o.id, "gamma", 303, None).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.mark_placed(o.id, "1", NOW).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.mark_unknown(o.id, "x", NOW).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.retarget_order(4242, "gamma", 303, None).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.mark_placed(4242, "1", NOW).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.mark_unknown(4242, "x", NOW).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(get(&*store, o.id).await, p, "refused changes wrote nothing");
}

pub(crate) async fn recovery_marks_interrupted_orders_unknown_with_funds_held<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "max", 5 * ONE, 0).await;
    let a = order(&*store, c.id, ONE, 1000).await;
    let b = order(&*store, c.id, ONE, 1000).await;
    let p = placed(&*store, c.id, ONE, 1000, 83).await;
    // Each order's own deadline (NOW + 60 s here) decides, not how long ago it changed.
    assert_eq!(
        store
            .recover_dispatching(NOW + 7, NOW + 7, NOW + 7)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .recover_dispatching(NOW + 60_001, NOW + 7, NOW + 7)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        get(&*store, a.id).await.attention,
        Some(Attention::UnknownOutcome)
    );
    for id in [a.id, b.id] {
        let o = get(&*store, id).await;
        assert_eq!(o.state, OrderState::Unknown);
        assert_eq!(o.note.as_deref(), Some(INTERRUPTED_NOTE));
        assert_eq!(o.updated_at, NOW + 7);
    }
    assert_eq!(get(&*store, p.id).await.state, OrderState::Placed);
    assert_eq!(books(&db, c.id).await, 2 * ONE);
    assert_eq!(
        store
            .recover_dispatching(NOW + 60_002, NOW + 8, NOW + 8)
            .await
            .unwrap(),
        0
    );
}

pub(crate) async fn a_customer_sees_only_their_own_orders_and_refills<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let ana = customer(&*store, "ana", 5 * ONE, 0).await;
    let bob = customer(&*store, "bob", 5 * ONE, 0).await;
    let a1 = placed(&*store, ana.id, ONE, 1000, 1).await;
    let b1 = placed(&*store, bob.id, ONE, 1000, 2).await;
    let a2 = order(&*store, ana.id, ONE, 1000).await;

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

pub(crate) async fn names_and_keys_are_unique<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let ana = customer(&*store, "ana", ONE, 0).await;
    customer(&*store, "bob", 0, 0).await;

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
    assert_eq!(
        store
            .list_customers(&CustomerSearch::default())
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(store.customer_by_name("cid").await.unwrap().is_none());
    assert_eq!(store.ledger(ana.id).await.unwrap().len(), 1);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM ledger").await, 1);
}

pub(crate) async fn a_disabled_customer_places_no_order<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let ana = customer(&*store, "ana", 5 * ONE, 0).await;
    store.set_enabled("ana", false).await.unwrap();
    assert!(matches!(
        store.create_order(&new_order(ana.id, ONE, 1000), NOW).await,
        Err(StoreError::Disabled)
    ));
    assert_eq!(books(&db, ana.id).await, 5 * ONE);
    store.set_enabled("ana", true).await.unwrap();
    store
        .create_order(&new_order(ana.id, ONE, 1000), NOW)
        .await
        .unwrap();
    assert_eq!(books(&db, ana.id).await, 4 * ONE);
}

pub(crate) async fn keys_find_customers_and_can_be_changed<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let ana = customer(&*store, "ana", ONE, 0).await;
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

pub(crate) async fn a_debit_stops_at_the_credit_limit<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "nia", 10 * ONE, 5 * ONE).await;
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
    assert_eq!(books(&db, c.id).await, -4 * ONE);
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
    order(&*store, c.id, 0, 1).await;
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
    assert_eq!(books(&db, c.id).await, -5 * ONE);
}

/// Refused writes leave nothing open behind them. (A SQLite memory store has one
/// connection: if a failed write left it inside a transaction, the next `BEGIN IMMEDIATE`
/// would fail. On PostgreSQL a connection returned inside an aborted transaction would fail
/// every statement after it.) A refused order takes no id.
pub(crate) async fn a_failed_write_leaves_no_transaction_open<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "oli", 0, 0).await;
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
        store.mark_placed(4242, "18446744073709551615", NOW).await,
        Err(StoreError::NotFound)
    ));
    store.adjust_balance("oli", ONE, None, NOW).await.unwrap();
    let o = order(&*store, c.id, ONE, 1000).await;
    assert_eq!(o.id, 1, "the refused order took no id");
    assert_eq!(books(&db, c.id).await, 0);
}

pub(crate) async fn claimed_work_is_leased_to_one_claimer<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "lee", 100 * ONE, 0).await;
    let a = placed(&*store, c.id, ONE, 1000, 1).await;
    let b = placed(&*store, c.id, ONE, 1000, 2).await;
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
    // Applying a status releases the lease: the order is due again at the next interval.
    let running = StatusUpdate {
        status: crate::protocol::Status::InProgress,
        remains: Some(10),
        start_count: None,
        cost: None,
        runs: None,
        child_orders: Vec::new(),
    };
    store.apply_status(a.id, &running, 1020).await.unwrap();
    assert_eq!(
        ids(store
            .orders_to_sync("alpha", &claim(1030, 10))
            .await
            .unwrap()),
        [a.id]
    );
}

pub(crate) async fn orders_to_sync_takes_the_least_recently_synced_first<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "pam", 100 * ONE, 0).await;
    let o1 = placed(&*store, c.id, ONE, 1000, 1).await;
    let o2 = placed(&*store, c.id, ONE, 1000, 2).await;
    let o3 = placed(&*store, c.id, ONE, 1000, 3).await;
    let fresh = placed(&*store, c.id, ONE, 1000, 4).await;
    let never = placed(&*store, c.id, ONE, 1000, 5).await;
    let running = update(Status::InProgress, Some(10));
    store.apply_status(o1.id, &running, 100).await.unwrap();
    store.apply_status(o3.id, &running, 50).await.unwrap();
    store.apply_status(o2.id, &running, 150).await.unwrap();
    store.apply_status(fresh.id, &running, 500).await.unwrap();
    // Not due: another upstream, not placed yet, already final.
    let mut elsewhere = new_order(c.id, ONE, 1000);
    elsewhere.upstream = "beta".into();
    let elsewhere = store.create_order(&elsewhere, NOW).await.unwrap();
    store.mark_placed(elsewhere.id, "6", NOW).await.unwrap();
    order(&*store, c.id, ONE, 1000).await;
    let done = placed(&*store, c.id, ONE, 1000, 7).await;
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

pub(crate) async fn refills_are_synced_until_final<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "quinn", 10 * ONE, 0).await;
    let o = placed(&*store, c.id, ONE, 1000, 1).await;
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

pub(crate) async fn open_orders_are_counted_by_upstream<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    assert!(store.open_orders_by_upstream().await.unwrap().is_empty());
    let ana = customer(&*store, "ana", 100 * ONE, 0).await;
    // alpha: one placed, one dispatching, one unknown, and two settled (final, rejected).
    placed(&*store, ana.id, ONE, 1000, 1).await;
    order(&*store, ana.id, ONE, 1000).await;
    let unknown = order(&*store, ana.id, ONE, 1000).await;
    store
        .mark_unknown(unknown.id, "timeout", NOW)
        .await
        .unwrap();
    let done = placed(&*store, ana.id, ONE, 1000, 2).await;
    store
        .apply_status(done.id, &update(Status::Completed, Some(0)), NOW)
        .await
        .unwrap();
    let refused = order(&*store, ana.id, ONE, 1000).await;
    store.mark_rejected(refused.id, "no", NOW).await.unwrap();
    // beta: an order moved there by a fallback counts where it is now.
    let moved = order(&*store, ana.id, ONE, 1000).await;
    store
        .retarget_order(moved.id, "beta", 7, None)
        .await
        .unwrap();
    assert_eq!(
        store.open_orders_by_upstream().await.unwrap(),
        [("alpha".to_owned(), 3), ("beta".to_owned(), 1)]
    );
}

/// The operator's listings page in SQL (by name, by id newest first) and an order's history
/// is recorded by the database on every change of state or status.
pub(crate) async fn operator_pages_and_order_history<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    for name in ["zed", "ana", "anabel", "bob"] {
        customer(&*store, name, 10 * ONE, 0).await;
    }
    let names = |search: CustomerSearch| {
        let store = store.clone();
        async move {
            let rows = store.list_customers(&search).await.unwrap();
            rows.into_iter().map(|(c, _)| c.name).collect::<Vec<_>>()
        }
    };
    let search = |contains: Option<&str>, after: Option<&str>, limit| CustomerSearch {
        contains: contains.map(str::to_owned),
        after: after.map(str::to_owned),
        limit,
    };
    assert_eq!(
        names(search(None, None, None)).await,
        ["ana", "anabel", "bob", "zed"]
    );
    assert_eq!(
        names(search(Some("an"), None, None)).await,
        ["ana", "anabel"]
    );
    assert_eq!(
        names(search(Some("an"), Some("ana"), Some(1))).await,
        ["anabel"]
    );
    assert_eq!(
        names(search(None, Some("anabel"), Some(2))).await,
        ["bob", "zed"]
    );

    let ana = store.customer_by_name("ana").await.unwrap().unwrap();
    let first = placed(&*store, ana.id, ONE, 1000, 7).await;
    let second = order(&*store, ana.id, ONE, 1000).await;
    let third = order(&*store, ana.id, 2 * ONE, 1000).await;
    let ids = |f: OrderFilter| {
        let store = store.clone();
        async move {
            let rows = store.list_orders(&f).await.unwrap();
            rows.into_iter().map(|o| o.id).collect::<Vec<_>>()
        }
    };
    let paged = |before, limit| OrderFilter {
        before,
        limit,
        ..OrderFilter::default()
    };
    assert_eq!(ids(paged(None, Some(2))).await, [third.id, second.id]);
    assert_eq!(ids(paged(Some(second.id), Some(2))).await, [first.id]);
    let other_upstream = OrderFilter {
        upstream: Some("beta".into()),
        ..OrderFilter::default()
    };
    assert!(ids(other_upstream).await.is_empty());
    let by_service_and_time = OrderFilter {
        service: Some(1),
        since: Some(NOW),
        until: Some(NOW + 1),
        ..OrderFilter::default()
    };
    assert_eq!(ids(by_service_and_time).await.len(), 3);
    let later = OrderFilter {
        since: Some(NOW + 1),
        ..OrderFilter::default()
    };
    assert!(ids(later).await.is_empty());

    // Ledger pages: newest first, by id.
    let all = store.ledger(ana.id).await.unwrap();
    let newest: Vec<i64> = all.iter().rev().map(|e| e.id).collect();
    let page = store.ledger_page(ana.id, None, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), newest[..2]);
    let rest = store
        .ledger_page(ana.id, Some(newest[1]), 10)
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), newest[2..]);

    // The history: every change of state or status, none for a change of remains alone.
    let later = NOW + 5;
    store
        .apply_status(first.id, &update(Status::InProgress, Some(900)), later)
        .await
        .unwrap();
    store
        .apply_status(first.id, &update(Status::InProgress, Some(400)), later)
        .await
        .unwrap();
    store
        .apply_status(first.id, &update(Status::Canceled, Some(1000)), later + 1)
        .await
        .unwrap();
    let history = store.order_history(first.id).await.unwrap();
    let seen: Vec<_> = history
        .iter()
        .map(|e| (e.state, e.status, e.remains))
        .collect();
    assert_eq!(
        seen,
        [
            (OrderState::Dispatching, Status::Pending, None),
            (OrderState::Placed, Status::Pending, None),
            (OrderState::Placed, Status::InProgress, Some(900)),
            (OrderState::Final, Status::Canceled, Some(1000)),
        ]
    );
    assert_eq!(history.last().unwrap().at, later + 1);
    let kinds: Vec<_> = (store.order_ledger(first.id).await.unwrap())
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [EntryKind::Charge, EntryKind::Refund]);
    assert!(store.order_history(third.id + 1).await.unwrap().is_empty());
}

pub(crate) async fn listings_and_counts<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let bob = customer(&*store, "bob", 10 * ONE, 0).await;
    let ana = customer(&*store, "ana", 10 * ONE, 0).await;
    let a1 = placed(&*store, ana.id, ONE, 1000, 1).await;
    let b1 = order(&*store, bob.id, ONE, 1000).await;
    let a2 = order(&*store, ana.id, ONE, 1000).await;
    store.mark_unknown(a2.id, "timeout", NOW).await.unwrap();

    let listed = store
        .list_customers(&CustomerSearch::default())
        .await
        .unwrap();
    let listed: Vec<_> = listed.iter().map(|(c, n)| (c.name.as_str(), *n)).collect();
    assert_eq!(listed, [("ana", 2), ("bob", 1)]);

    let ids = |orders: Vec<Order>| orders.into_iter().map(|o| o.id).collect::<Vec<_>>();
    let all = store.list_orders(&OrderFilter::default()).await.unwrap();
    assert_eq!(ids(all), [a2.id, b1.id, a1.id]);
    let anas = OrderFilter {
        customer: Some("ana".into()),
        state: None,
        ..OrderFilter::default()
    };
    assert_eq!(ids(store.list_orders(&anas).await.unwrap()), [a2.id, a1.id]);
    let unknown = OrderFilter {
        customer: None,
        state: Some(OrderState::Unknown),
        ..OrderFilter::default()
    };
    assert_eq!(ids(store.list_orders(&unknown).await.unwrap()), [a2.id]);
    let none = OrderFilter {
        customer: Some("bob".into()),
        state: Some(OrderState::Placed),
        ..OrderFilter::default()
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
    let o = get(&*store, a1.id).await;
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
pub(crate) async fn the_schema_guards_the_money_rules<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "rex", ONE, 0).await;
    let o = placed(&*store, c.id, ONE, 1000, 1).await;
    store
        .apply_status(o.id, &update(Status::Canceled, None), NOW)
        .await
        .unwrap();
    let (c_id, o_id) = (c.id, o.id);
    let refused = [
        "UPDATE ledger SET amount = 0".to_owned(),
        "DELETE FROM ledger".to_owned(),
        "UPDATE customers SET balance = -1".to_owned(),
        "UPDATE customers SET credit_limit = -1".to_owned(),
        "UPDATE orders SET refunded = charge + 1".to_owned(),
        "UPDATE orders SET refunded = -1".to_owned(),
        "UPDATE orders SET state = 'lost'".to_owned(),
        "UPDATE orders SET state = 'placed', upstream_order = NULL".to_owned(),
        // A second refund for one order; money in with the sign of money out; an operator
        // entry that names an order.
        format!(
            "INSERT INTO ledger (customer_id, amount, kind, order_id, created_at) \
             VALUES ({c_id}, 1, 'refund', {o_id}, 0)"
        ),
        format!(
            "INSERT INTO ledger (customer_id, amount, kind, created_at) \
             VALUES ({c_id}, -1, 'credit', 0)"
        ),
        format!(
            "INSERT INTO ledger (customer_id, amount, kind, order_id, created_at) \
             VALUES ({c_id}, 1, 'credit', {o_id}, 0)"
        ),
    ];
    for sql in &refused {
        assert!(db.execute(sql).await.is_err(), "{sql}");
    }
    // The store's own posting cannot write a second refund (or charge) either.
    let refund = Entry {
        customer_id: c.id,
        amount: ONE,
        kind: EntryKind::Refund,
        order_id: Some(o.id),
        note: None,
        now: NOW,
    };
    let err = db.post_and_roll_back(&refund).await;
    assert!(matches!(err, Err(StoreError::Duplicate(_))), "{err:?}");
    assert_eq!(books(&db, c.id).await, ONE);
    assert_eq!(store.ledger(c.id).await.unwrap().len(), 3);
}

/// `sync.stuck_after`: a placed order whose upstream reports nothing new is marked stuck after
/// its cutoff (counted from its last progress, or its creation), listed and counted by reason;
/// the mark goes when it moves again or becomes final, and a service may have its own cutoff.
pub(crate) async fn a_placed_order_that_does_not_move_is_stuck_until_it_moves<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "sam", 10 * ONE, 0).await;
    let quiet = placed(&*store, c.id, ONE, 1000, 1).await;
    let moving = placed(&*store, c.id, ONE, 1000, 2).await;
    let mut slow = new_order(c.id, ONE, 1000);
    slow.service = 7;
    let slow = store.create_order(&slow, NOW).await.unwrap();
    store.mark_placed(slow.id, "3", NOW).await.unwrap();
    let unknown = order(&*store, c.id, ONE, 1000).await;
    store
        .mark_unknown(unknown.id, "timeout", NOW)
        .await
        .unwrap();

    // Nothing is old enough yet, with or without services of their own.
    let none = StuckCutoffs {
        before: NOW - 1,
        services: Vec::new(),
    };
    assert_eq!(store.mark_stuck(&none, NOW + 5).await.unwrap(), 0);

    // A first report of remains and start count is not progress (a panel script reports
    // those for the orders it failed too); a change of remains is.
    let pending = update(Status::Pending, Some(1000));
    for o in [&quiet, &moving] {
        store.apply_status(o.id, &pending, NOW + 10).await.unwrap();
    }
    assert_eq!(get(&*store, quiet.id).await.progress_at, None);
    let running = update(Status::InProgress, Some(400));
    store
        .apply_status(moving.id, &running, NOW + 50)
        .await
        .unwrap();
    assert_eq!(get(&*store, moving.id).await.progress_at, Some(NOW + 50));

    let cutoffs = StuckCutoffs {
        before: NOW + 40,
        services: vec![(7, NOW - 1)],
    };
    assert_eq!(store.mark_stuck(&cutoffs, NOW + 100).await.unwrap(), 1);
    assert_eq!(store.mark_stuck(&cutoffs, NOW + 101).await.unwrap(), 0);
    assert_eq!(
        get(&*store, quiet.id).await.attention,
        Some(Attention::Stuck)
    );
    assert_eq!(
        get(&*store, moving.id).await.attention,
        None,
        "it moved after the cutoff"
    );
    assert_eq!(
        get(&*store, slow.id).await.attention,
        None,
        "its service waits longer"
    );
    assert_eq!(
        get(&*store, unknown.id).await.attention,
        Some(Attention::UnknownOutcome)
    );

    let ids = |orders: Vec<Order>| orders.into_iter().map(|o| o.id).collect::<Vec<_>>();
    let only = |a| OrderFilter {
        attention: Some(AttentionFilter::Only(a)),
        ..OrderFilter::default()
    };
    let listed = store.list_orders(&only(Attention::Stuck)).await.unwrap();
    assert_eq!(ids(listed), [quiet.id]);
    let any = OrderFilter {
        attention: Some(AttentionFilter::Any),
        ..OrderFilter::default()
    };
    assert_eq!(
        ids(store.list_orders(&any).await.unwrap()),
        [unknown.id, quiet.id]
    );
    let mut counts = store.count_attention().await.unwrap();
    counts.sort_by_key(|(a, _, _)| a.as_str());
    assert_eq!(
        counts,
        [
            (Attention::Stuck, "alpha".to_owned(), 1),
            (Attention::UnknownOutcome, "alpha".to_owned(), 1),
        ]
    );

    // The same report again is not progress; a new status is, and lifts the mark.
    store
        .apply_status(quiet.id, &pending, NOW + 200)
        .await
        .unwrap();
    assert_eq!(
        get(&*store, quiet.id).await.attention,
        Some(Attention::Stuck)
    );
    store
        .apply_status(quiet.id, &running, NOW + 300)
        .await
        .unwrap();
    let o = get(&*store, quiet.id).await;
    assert_eq!((o.attention, o.progress_at), (None, Some(NOW + 300)));

    // Its own cutoff passed: stuck; final: the mark goes, the refund is as ever.
    let later = StuckCutoffs {
        before: NOW + 40,
        services: vec![(7, NOW + 1)],
    };
    assert_eq!(store.mark_stuck(&later, NOW + 400).await.unwrap(), 1);
    assert_eq!(
        get(&*store, slow.id).await.attention,
        Some(Attention::Stuck)
    );
    let canceled = update(Status::Canceled, None);
    let applied = store
        .apply_status(slow.id, &canceled, NOW + 500)
        .await
        .unwrap();
    assert_eq!((applied.refund, applied.finalized), (ONE, true));
    let o = get(&*store, slow.id).await;
    assert_eq!((o.attention, o.state), (None, OrderState::Final));
    assert_eq!(books(&db, c.id).await, 10 * ONE - 3 * ONE);
}

/// One upstream order, one local order: `resolve_placed` names the order already holding the
/// id; a database holding shared ids (from before the index) gets no index and an error naming
/// them, until the extras are unlinked.
pub(crate) async fn one_upstream_order_follows_one_local_order<B: Backend>() {
    let Some(db) = B::open_shared().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "ida", 10 * ONE, 0).await;
    let first = placed(&*store, c.id, ONE, 1000, 77).await;
    let resend = order(&*store, c.id, ONE, 1000).await;
    store.mark_unknown(resend.id, "timeout", NOW).await.unwrap();
    let refused = store.resolve_placed(resend.id, "77", NOW).await;
    let Err(StoreError::Conflict(text)) = refused else {
        panic!("{refused:?}");
    };
    assert!(text.contains(&format!("order {}", first.id)), "{text}");
    assert_eq!(get(&*store, resend.id).await.state, OrderState::Unknown);
    // The database refuses it too, whatever the code.
    let twin = order(&*store, c.id, ONE, 1000).await;
    assert!(store.mark_placed(twin.id, "77", NOW).await.is_err());
    store.mark_rejected(twin.id, "test", NOW).await.unwrap();

    // A database from before the index: two local orders hold upstream order 77.
    db.execute("DROP INDEX orders_upstream_order_unique")
        .await
        .unwrap();
    store.resolve_placed(resend.id, "78", NOW).await.unwrap();
    db.execute(&format!(
        "UPDATE orders SET upstream_order = '77' WHERE id = {}",
        resend.id
    ))
    .await
    .unwrap();
    let shared = store.unique_upstream_orders().await;
    let Err(StoreError::SharedUpstreamOrders(shared)) = shared else {
        panic!("{shared:?}");
    };
    assert_eq!(
        shared,
        [SharedUpstreamOrder {
            upstream: "alpha".into(),
            upstream_order: "77".into(),
            orders: vec![first.id, resend.id],
        }]
    );
    let text = StoreError::SharedUpstreamOrders(shared).to_string();
    assert!(
        text.contains(&format!("local orders {}, {}", first.id, resend.id))
            && text.contains("panelgate order unlink"),
        "{text}"
    );
    // Another store opening the database still opens (the CLI must, to fix it).
    let other = db.another().await;

    let state = other.unlink_order(resend.id, "resend", NOW + 1).await;
    assert_eq!(state.unwrap(), OrderState::Unknown);
    let o = get(&*store, resend.id).await;
    assert_eq!(
        (o.upstream_order, o.attention, o.note.as_deref()),
        (None, Some(Attention::UnknownOutcome), Some("resend"))
    );
    assert!(matches!(
        store.unlink_order(resend.id, "again", NOW).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.unlink_order(4242, "none", NOW).await,
        Err(StoreError::NotFound)
    ));
    store.unique_upstream_orders().await.unwrap();
    assert!(
        store
            .mark_placed(order(&*store, c.id, ONE, 1000).await.id, "77", NOW)
            .await
            .is_err()
    );
    // Unlinked, the funds are still held: the operator resolves it as ever.
    store.resolve_not_placed(resend.id, NOW + 2).await.unwrap();
    assert_eq!(books(&db, c.id).await, 10 * ONE - 2 * ONE);
}

pub(crate) async fn a_drip_feed_order_keeps_its_runs_and_is_refunded_per_unit<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "dora", 10 * ONE, 0).await;
    // 4 runs of 100 every 30 minutes: 400 units billed, 2.00000 charged.
    let drip = crate::protocol::order::Drip {
        runs: 4,
        interval: 30,
    };
    let new = NewOrder {
        drip: Some(drip),
        ..new_order(c.id, 2 * ONE, 400)
    };
    let o = store.create_order(&new, NOW).await.unwrap();
    assert_eq!(
        (o.drip, o.runs_done, o.child_orders.len()),
        (Some(drip), None, 0)
    );
    store.mark_placed(o.id, "d1", NOW).await.unwrap();

    // Running: the upstream's runs and child orders are kept; a report without them keeps
    // the last ones.
    let running = StatusUpdate {
        runs: Some(1),
        child_orders: vec!["c1".into(), "c2".into()],
        ..update(Status::InProgress, Some(250))
    };
    store.apply_status(o.id, &running, NOW + 1).await.unwrap();
    let bare = update(Status::InProgress, Some(220));
    store.apply_status(o.id, &bare, NOW + 2).await.unwrap();
    let o = get(&*store, o.id).await;
    assert_eq!((o.remains, o.runs_done), (Some(220), Some(1)));
    assert_eq!(o.child_orders, ["c1", "c2"]);

    // Partial with 207 of 400 undelivered: 2.00000 × 207 / 400 = 1.03500 back, per unit.
    let partial = StatusUpdate {
        runs: Some(1),
        cost: None,
        ..update(Status::Partial, Some(207))
    };
    let applied = store.apply_status(o.id, &partial, NOW + 3).await.unwrap();
    assert_eq!((applied.refund, applied.finalized), (103_500, true));
    let o = get(&*store, o.id).await;
    assert_eq!(
        (o.state, o.refunded, o.runs_done),
        (OrderState::Final, 103_500, Some(1))
    );
    assert_eq!(books(&db, c.id).await, 10 * ONE - 2 * ONE + 103_500);

    // Orders that are not drip-feed have none of it.
    let plain = order(&*store, c.id, ONE, 1000).await;
    assert_eq!((plain.drip, plain.runs_done), (None, None));
    // The schema refuses runs that make no sense.
    let zero = db
        .execute(&format!(
            "UPDATE orders SET drip_runs = 0 WHERE id = {}",
            plain.id
        ))
        .await;
    assert!(zero.is_err());
}
