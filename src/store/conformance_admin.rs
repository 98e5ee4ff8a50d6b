//! The [`AdminStore`] cases of the conformance suite (listed in `conformance_tests!`): what
//! both backends must do for the admin API and the CLI.

use tokio::task::JoinSet;

use super::admin::{AdminToken, AuditEntry, Idempotency, Role, SessionLimits};
use super::conformance::{Backend, NOW, ONE, books_via, customer, new_order, update};
use super::{DayMoney, StatusUpdate, StoreError, Units};
use crate::protocol::Status;

fn key(scope: &str, key: &str, request: u8) -> Idempotency {
    Idempotency {
        scope: scope.into(),
        key: key.into(),
        request_hash: [request; 32],
    }
}

/// Fifty retries of one credit, half through another store on the same database: one ledger
/// entry, and every retry answers the balance the applied one answered.
pub(crate) async fn an_idempotent_credit_is_applied_once_across_two_stores<B: Backend>() {
    let Some(db) = B::open_shared().await else {
        return;
    };
    let (a, b) = (db.store(), db.another().await);
    let c = customer(&*a, "erin", 0, 0).await;
    let mut tasks = JoinSet::new();
    for i in 0..50 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            let k = key("client.credit:erin", "k1", 1);
            store
                .adjust_balance_once("erin", 5 * ONE, None, &k, 0)
                .await
        });
    }
    let mut applied = 0;
    while let Some(done) = tasks.join_next().await {
        let done = done.unwrap().unwrap();
        assert_eq!(done.balance, 5 * ONE);
        applied += usize::from(!done.replayed);
    }
    assert_eq!(applied, 1);
    assert_eq!(books_via(&db, &*a, c.id).await, 5 * ONE);
    // The same key for another request is refused; in another scope it is another key.
    let other = key("client.credit:erin", "k1", 2);
    let other = a.adjust_balance_once("erin", ONE, None, &other, 0).await;
    assert!(matches!(other, Err(StoreError::Conflict(_))));
    let debit = key("client.debit:erin", "k1", 1);
    // A debit that fails leaves no key behind: its retry is tried afresh.
    let too_much: Units = -6 * ONE;
    let refused = a
        .adjust_balance_once("erin", too_much, None, &debit, 0)
        .await;
    assert!(matches!(refused, Err(StoreError::InsufficientFunds)));
    let done = b
        .adjust_balance_once("erin", -ONE, None, &debit, 0)
        .await
        .unwrap();
    assert_eq!((done.balance, done.replayed), (4 * ONE, false));
    assert_eq!(books_via(&db, &*b, c.id).await, 4 * ONE);
}

pub(crate) async fn admin_tokens_and_audit_rows_are_kept<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let token = AdminToken {
        name: "shop".into(),
        role: Role::Write,
        hash: [7; 32],
        created_at: 1,
    };
    store.add_admin_token(&token).await.unwrap();
    let twice = store.add_admin_token(&token).await;
    assert!(matches!(twice, Err(StoreError::Duplicate(_))));
    assert_eq!(
        store.admin_token_by_hash(&[7; 32]).await.unwrap(),
        Some(token.clone())
    );
    assert_eq!(store.admin_tokens().await.unwrap(), [token]);
    store.revoke_admin_token("shop").await.unwrap();
    assert!(store.admin_token_by_hash(&[7; 32]).await.unwrap().is_none());
    let again = store.revoke_admin_token("shop").await;
    assert!(matches!(again, Err(StoreError::NotFound)));
    for i in 0..3 {
        let entry = AuditEntry {
            id: 0,
            at: i,
            actor: "cli".into(),
            action: "client.add".into(),
            target: format!("c{i}"),
            outcome: "ok".into(),
        };
        store.record_audit(&entry).await.unwrap();
    }
    let newest = store.audit(None, 2).await.unwrap();
    let targets: Vec<&str> = newest.iter().map(|e| e.target.as_str()).collect();
    assert_eq!(targets, ["c2", "c1"]);
    let rest = store.audit(Some(newest[1].id), 2).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].target, "c0");
}

pub(crate) async fn a_customer_changes_group_and_credit_limit<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    customer(&*store, "finn", 0, 3 * ONE).await;
    store
        .adjust_balance("finn", -2 * ONE, None, 0)
        .await
        .unwrap();
    store.set_group("finn", "vip").await.unwrap();
    assert!(matches!(
        store.set_group("nobody", "vip").await,
        Err(StoreError::NotFound)
    ));
    // The balance (-2) is below a floor of -1: refused; -2 exactly is fine.
    let lower = store.set_credit_limit("finn", ONE).await;
    assert!(matches!(lower, Err(StoreError::InsufficientFunds)));
    let c = store.set_credit_limit("finn", 2 * ONE).await.unwrap();
    assert_eq!((c.group.as_str(), c.credit_limit), ("vip", 2 * ONE));
    let missing = store.set_credit_limit("nobody", ONE).await;
    assert!(matches!(missing, Err(StoreError::NotFound)));
}

/// A session lives until it is closed, too old, idle too long or its token is revoked; a new
/// token of the same name does not inherit it. Another store on the database sees it too.
pub(crate) async fn console_sessions_end_with_time_logout_or_their_token<B: Backend>() {
    let Some(db) = B::open_shared().await else {
        return;
    };
    let (store, other) = (db.store(), db.another().await);
    let token = AdminToken {
        name: "ops".into(),
        role: Role::Read,
        hash: [3; 32],
        created_at: 1,
    };
    store.add_admin_token(&token).await.unwrap();
    let live = SessionLimits {
        opened_after: NOW - 100,
        seen_after: NOW - 10,
    };
    for id in [[1; 32], [2; 32], [4; 32]] {
        store.open_session(&id, &[3; 32], &live, NOW).await.unwrap();
    }
    let found = other.session_token(&[1; 32], &live, NOW).await.unwrap();
    assert_eq!(found, Some(token.clone()));
    assert_eq!(
        store.session_token(&[9; 32], &live, NOW).await.unwrap(),
        None
    );
    // Idle past its limit, or opened too long ago: over.
    let later = SessionLimits {
        opened_after: NOW - 100,
        seen_after: NOW + 1,
    };
    assert_eq!(
        store.session_token(&[1; 32], &later, NOW).await.unwrap(),
        None
    );
    let older = SessionLimits {
        opened_after: NOW,
        seen_after: NOW - 10,
    };
    assert_eq!(
        store.session_token(&[1; 32], &older, NOW).await.unwrap(),
        None
    );
    // Being seen keeps it from going idle (marked at most once a minute).
    let seen = NOW + 120_000;
    assert!(
        store
            .session_token(&[1; 32], &live, seen)
            .await
            .unwrap()
            .is_some()
    );
    let idle_since_open = SessionLimits {
        opened_after: NOW - 100,
        seen_after: NOW + 60_000,
    };
    assert!(
        store
            .session_token(&[1; 32], &idle_since_open, seen)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .session_token(&[2; 32], &idle_since_open, seen)
            .await
            .unwrap()
            .is_none()
    );
    store.close_session(&[2; 32]).await.unwrap();
    store.close_session(&[2; 32]).await.unwrap();
    assert_eq!(
        store.session_token(&[2; 32], &live, NOW).await.unwrap(),
        None
    );
    store.revoke_admin_token("ops").await.unwrap();
    store
        .add_admin_token(&AdminToken {
            hash: [5; 32],
            ..token
        })
        .await
        .unwrap();
    assert_eq!(
        other.session_token(&[4; 32], &live, NOW).await.unwrap(),
        None
    );
    // A session needs a token that exists.
    let orphan = store.open_session(&[6; 32], &[8; 32], &live, NOW).await;
    assert!(orphan.is_err());
}

/// Revenue is what was charged less refunds (a rejected order brought nothing), cost what the
/// upstream reported, both by the UTC day the order was placed.
pub(crate) async fn money_is_summed_by_the_day_orders_were_placed<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let c = customer(&*store, "gus", 100 * ONE, 0).await;
    let day = NOW / 86_400_000;
    let next = (day + 1) * 86_400_000;
    let place = |charge: Units, at: i64| {
        let store = store.clone();
        async move {
            let o = store
                .create_order(&new_order(c.id, charge, 1000), at)
                .await
                .unwrap();
            store
                .mark_placed(o.id, &o.id.to_string(), at)
                .await
                .unwrap();
            o.id
        }
    };
    let done = place(10 * ONE, NOW).await;
    let done_update = StatusUpdate {
        cost: Some(4 * ONE),
        ..update(Status::Completed, Some(0))
    };
    store.apply_status(done, &done_update, NOW).await.unwrap();
    let half = place(8 * ONE, NOW).await;
    let half_update = StatusUpdate {
        cost: Some(ONE),
        ..update(Status::Partial, Some(500))
    };
    let refunded = store.apply_status(half, &half_update, NOW).await.unwrap();
    assert!(refunded.refund > 0);
    let rejected = store
        .create_order(&new_order(c.id, 3 * ONE, 1000), NOW)
        .await
        .unwrap();
    store.mark_rejected(rejected.id, "no", NOW).await.unwrap();
    let running = place(6 * ONE, next + 5).await;
    let running_update = StatusUpdate {
        cost: Some(2 * ONE),
        ..update(Status::InProgress, Some(10))
    };
    store
        .apply_status(running, &running_update, next + 5)
        .await
        .unwrap();
    let figures = store.money_by_day(NOW - 1).await.unwrap();
    assert_eq!(
        figures,
        [
            DayMoney {
                day,
                revenue: 18 * ONE - refunded.refund,
                cost: 5 * ONE
            },
            DayMoney {
                day: day + 1,
                revenue: 6 * ONE,
                cost: 2 * ONE
            },
        ]
    );
    assert_eq!(store.money_by_day(next).await.unwrap(), figures[1..]);
}

/// The balance after each entry is the running sum of the ledger up to it, read from today's
/// balance back: another customer's entries, interleaved, count for nothing.
pub(crate) async fn the_balance_after_an_entry_is_the_running_sum_up_to_it<B: Backend>() {
    let Some(db) = B::open().await else {
        return;
    };
    let store = db.store();
    let (ivy, jon) = (
        customer(&*store, "ivy", 5 * ONE, 0).await,
        customer(&*store, "jon", 7 * ONE, 0).await,
    );
    for (i, amount) in [2 * ONE, -3 * ONE, ONE / 2].into_iter().enumerate() {
        let name = if i % 2 == 0 { "ivy" } else { "jon" };
        store.adjust_balance(name, amount, None, NOW).await.unwrap();
        store
            .adjust_balance("ivy", amount, None, NOW)
            .await
            .unwrap();
    }
    store
        .create_order(&new_order(ivy.id, ONE, 1000), NOW)
        .await
        .unwrap();
    store.adjust_balance("jon", ONE, None, NOW).await.unwrap();
    let entries = store.ledger(ivy.id).await.unwrap();
    let mut sum = 0;
    for e in &entries {
        sum += e.amount;
        assert_eq!(store.balance_after(ivy.id, e.id).await.unwrap(), sum);
    }
    let now = store
        .customer_by_name("ivy")
        .await
        .unwrap()
        .unwrap()
        .balance;
    assert_eq!(sum, now);
    // Past her newest entry (jon's is the newest of all) nothing is taken off.
    let newest = store.ledger(jon.id).await.unwrap().last().unwrap().id;
    assert_eq!(store.balance_after(ivy.id, newest).await.unwrap(), now);
    assert_eq!(store.balance_after(ivy.id, 0).await.unwrap(), 0);
    assert!(matches!(
        store.balance_after(jon.id + 100, 1).await,
        Err(StoreError::NotFound)
    ));
}
