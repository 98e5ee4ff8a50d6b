//! The SQLite store: one file in WAL mode, for a single instance.
//!
//! Every write that moves money runs in a `BEGIN IMMEDIATE` transaction, which takes SQLite's
//! single write lock up front: two concurrent orders for one customer cannot both read the
//! old balance, so the floor check and the debit are one step. The guarded `UPDATE … WHERE
//! balance - ? >= -credit_limit` and the table's CHECK constraint hold the floor a second and
//! third time. `synchronous = FULL`: when a transaction returns, it is on disk.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use super::*;
use crate::money;

pub struct SqliteStore {
    pool: SqlitePool,
}

const ORDER_COLUMNS: &str = "o.id, o.customer_id, c.name AS customer, o.service, o.upstream, o.upstream_service, \
     o.upstream_order, o.state, o.status, o.charge, o.refunded, o.billed, o.remains, o.start_count, o.cost, \
     o.link, o.fields, o.note, o.created_at, o.updated_at, o.synced_at";

const CUSTOMER_COLUMNS: &str = "id, name, grp, balance, credit_limit, enabled, created_at";

impl SqliteStore {
    /// Opens (creating if missing) `sqlite://path` or `sqlite::memory:`, and migrates it.
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let memory = url.contains(":memory:");
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(if memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // The CLI writes to the same file while the server runs.
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            // An in-memory database exists once per connection: keep exactly one.
            .max_connections(if memory { 1 } else { 8 })
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(if memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if memory {
                None
            } else {
                Some(Duration::from_secs(3600))
            })
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    async fn write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn customer(row: &SqliteRow) -> Result<Customer> {
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

fn order(row: &SqliteRow) -> Result<Order> {
    let state: String = row.try_get("state")?;
    let status: String = row.try_get("status")?;
    let bad =
        |what: &str, v: &str| StoreError::Conflict(format!("stored {what} {v:?} is not known"));
    Ok(Order {
        id: row.try_get("id")?,
        customer_id: row.try_get("customer_id")?,
        customer: row.try_get("customer")?,
        service: row.try_get::<i64, _>("service")? as u64,
        upstream: row.try_get("upstream")?,
        upstream_service: row.try_get::<i64, _>("upstream_service")? as u64,
        upstream_order: row
            .try_get::<Option<i64>, _>("upstream_order")?
            .map(|v| v as u64),
        state: OrderState::parse(&state).ok_or_else(|| bad("state", &state))?,
        status: Status::parse(&status).ok_or_else(|| bad("status", &status))?,
        charge: row.try_get("charge")?,
        refunded: row.try_get("refunded")?,
        billed: row.try_get::<i64, _>("billed")? as u64,
        remains: row.try_get("remains")?,
        start_count: row
            .try_get::<Option<i64>, _>("start_count")?
            .map(|v| v.max(0) as u64),
        cost: row.try_get("cost")?,
        link: row.try_get("link")?,
        fields: row.try_get("fields")?,
        note: row.try_get("note")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        synced_at: row.try_get("synced_at")?,
    })
}

fn refill(row: &SqliteRow) -> Result<Refill> {
    let status: String = row.try_get("status")?;
    Ok(Refill {
        id: row.try_get("id")?,
        order_id: row.try_get("order_id")?,
        customer_id: row.try_get("customer_id")?,
        upstream: row.try_get("upstream")?,
        upstream_refill: row.try_get::<i64, _>("upstream_refill")? as u64,
        status: RefillStatus::parse(&status).ok_or_else(|| {
            StoreError::Conflict(format!("stored refill status {status:?} is not known"))
        })?,
        created_at: row.try_get("created_at")?,
        synced_at: row.try_get("synced_at")?,
    })
}

fn duplicate(e: sqlx::Error, what: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Duplicate(what.to_owned())
        }
        _ => StoreError::Db(e),
    }
}

/// Writes a ledger entry and moves the balance by the same amount, inside `tx`. A negative
/// amount only succeeds if the balance stays at or above `-credit_limit`.
async fn post(
    tx: &mut Transaction<'static, Sqlite>,
    customer_id: i64,
    amount: Units,
    kind: EntryKind,
    order_id: Option<i64>,
    note: Option<&str>,
    now: Millis,
) -> Result<()> {
    let moved = sqlx::query(
        "UPDATE customers SET balance = balance + ?1 WHERE id = ?2 AND (?1 >= 0 OR balance + ?1 >= -credit_limit)",
    )
    .bind(amount)
    .bind(customer_id)
    .execute(&mut **tx)
    .await?;
    if moved.rows_affected() != 1 {
        return Err(StoreError::InsufficientFunds);
    }
    sqlx::query("INSERT INTO ledger (customer_id, amount, kind, order_id, note, created_at) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(customer_id)
        .bind(amount)
        .bind(kind.as_str())
        .bind(order_id)
        .bind(note)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(|e| duplicate(e, "ledger entry for this order"))?;
    Ok(())
}

async fn order_in(tx: &mut Transaction<'static, Sqlite>, id: i64) -> Result<Order> {
    let row = sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = ?"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound)?;
    order(&row)
}

/// Moves an order from `from` to `to` (with extra assignments), failing with `Conflict` when
/// it is not in `from`.
async fn transition(
    tx: &mut Transaction<'static, Sqlite>,
    id: i64,
    from: OrderState,
    set: &str,
    binds: &[Option<i64>],
    note: Option<&str>,
    now: Millis,
) -> Result<()> {
    let sql = format!(
        "UPDATE orders SET {set}, note = COALESCE(?, note), updated_at = ? WHERE id = ? AND state = ?"
    );
    let mut q = sqlx::query(&sql);
    for b in binds {
        q = q.bind(*b);
    }
    let done = q
        .bind(note)
        .bind(now)
        .bind(id)
        .bind(from.as_str())
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() == 1 {
        return Ok(());
    }
    let exists: Option<String> = sqlx::query_scalar("SELECT state FROM orders WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    Err(match exists {
        None => StoreError::NotFound,
        Some(state) => {
            StoreError::Conflict(format!("order {id} is {state}, not {}", from.as_str()))
        }
    })
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(",")
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_customer(
        &self,
        name: &str,
        key_hash: &KeyHash,
        group: &str,
        credit_limit: Units,
        balance: Units,
        now: Millis,
    ) -> Result<Customer> {
        let mut tx = self.write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO customers (name, key_hash, grp, credit_limit, balance, enabled, created_at) VALUES (?, ?, ?, ?, 0, 1, ?) RETURNING id",
        )
        .bind(name)
        .bind(&key_hash[..])
        .bind(group)
        .bind(credit_limit)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| duplicate(e, &format!("client {name:?} (or its key)")))?;
        if balance != 0 {
            post(
                &mut tx,
                id,
                balance,
                if balance > 0 {
                    EntryKind::Credit
                } else {
                    EntryKind::Debit
                },
                None,
                Some("opening balance"),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        self.customer_by_name(name)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn customer_by_key(&self, hash: &KeyHash) -> Result<Option<(Customer, KeyHash)>> {
        let row = sqlx::query(&format!(
            "SELECT {CUSTOMER_COLUMNS}, key_hash FROM customers WHERE key_hash = ?"
        ))
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let stored: Vec<u8> = row.try_get("key_hash")?;
        let stored: KeyHash = stored
            .try_into()
            .map_err(|_| StoreError::Conflict("stored key hash has the wrong length".into()))?;
        Ok(Some((customer(&row)?, stored)))
    }

    async fn customer_by_name(&self, name: &str) -> Result<Option<Customer>> {
        let row = sqlx::query(&format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE name = ?"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(customer).transpose()
    }

    async fn list_customers(&self) -> Result<Vec<(Customer, u64)>> {
        let rows = sqlx::query(&format!(
            "SELECT {CUSTOMER_COLUMNS}, (SELECT COUNT(*) FROM orders o WHERE o.customer_id = customers.id AND o.state != 'rejected') AS orders \
             FROM customers ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((customer(r)?, r.try_get::<i64, _>("orders")? as u64)))
            .collect()
    }

    async fn adjust_balance(
        &self,
        name: &str,
        amount: Units,
        note: Option<&str>,
        now: Millis,
    ) -> Result<Customer> {
        let mut tx = self.write().await?;
        let id: i64 = sqlx::query_scalar("SELECT id FROM customers WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let kind = if amount >= 0 {
            EntryKind::Credit
        } else {
            EntryKind::Debit
        };
        post(&mut tx, id, amount, kind, None, note, now).await?;
        tx.commit().await?;
        self.customer_by_name(name)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn set_enabled(&self, name: &str, enabled: bool) -> Result<()> {
        let done = sqlx::query("UPDATE customers SET enabled = ? WHERE name = ?")
            .bind(i64::from(enabled))
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn set_key(&self, name: &str, key_hash: &KeyHash) -> Result<()> {
        let done = sqlx::query("UPDATE customers SET key_hash = ? WHERE name = ?")
            .bind(&key_hash[..])
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(|e| duplicate(e, "key"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn ledger(&self, customer_id: i64) -> Result<Vec<LedgerEntry>> {
        let rows = sqlx::query("SELECT id, customer_id, amount, kind, order_id, note, created_at FROM ledger WHERE customer_id = ? ORDER BY id")
            .bind(customer_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                Ok(LedgerEntry {
                    id: r.try_get("id")?,
                    customer_id: r.try_get("customer_id")?,
                    amount: r.try_get("amount")?,
                    kind: EntryKind::parse(&kind).ok_or_else(|| {
                        StoreError::Conflict(format!("stored ledger kind {kind:?} is not known"))
                    })?,
                    order_id: r.try_get("order_id")?,
                    note: r.try_get("note")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn create_order(&self, new: &NewOrder, now: Millis) -> Result<Order> {
        let mut tx = self.write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO orders (customer_id, service, upstream, upstream_service, state, status, charge, billed, link, fields, created_at, updated_at) \
             VALUES (?, ?, ?, ?, 'dispatching', 'Pending', ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(new.customer_id)
        .bind(int(new.service))
        .bind(&new.upstream)
        .bind(int(new.upstream_service))
        .bind(new.charge)
        .bind(int(new.billed))
        .bind(&new.link)
        .bind(&new.fields)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        post(
            &mut tx,
            new.customer_id,
            -new.charge,
            EntryKind::Charge,
            Some(id),
            None,
            now,
        )
        .await?;
        let created = order_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn retarget_order(&self, id: i64, upstream: &str, upstream_service: u64) -> Result<()> {
        let done = sqlx::query("UPDATE orders SET upstream = ?, upstream_service = ? WHERE id = ? AND state = 'dispatching'")
            .bind(upstream)
            .bind(int(upstream_service))
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!(
                "order {id} is not dispatching"
            )));
        }
        Ok(())
    }

    async fn mark_placed(&self, id: i64, upstream_order: u64, now: Millis) -> Result<()> {
        let mut tx = self.write().await?;
        transition(
            &mut tx,
            id,
            OrderState::Dispatching,
            "state = 'placed', upstream_order = ?",
            &[Some(int(upstream_order))],
            None,
            now,
        )
        .await?;
        Ok(tx.commit().await?)
    }

    async fn mark_rejected(&self, id: i64, note: &str, now: Millis) -> Result<()> {
        let mut tx = self.write().await?;
        transition(
            &mut tx,
            id,
            OrderState::Dispatching,
            "state = 'rejected'",
            &[],
            Some(note),
            now,
        )
        .await?;
        let o = order_in(&mut tx, id).await?;
        post(
            &mut tx,
            o.customer_id,
            o.charge,
            EntryKind::Release,
            Some(id),
            Some(note),
            now,
        )
        .await?;
        Ok(tx.commit().await?)
    }

    async fn mark_unknown(&self, id: i64, note: &str, now: Millis) -> Result<()> {
        let mut tx = self.write().await?;
        transition(
            &mut tx,
            id,
            OrderState::Dispatching,
            "state = 'unknown'",
            &[],
            Some(note),
            now,
        )
        .await?;
        Ok(tx.commit().await?)
    }

    async fn recover_dispatching(&self, now: Millis) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE orders SET state = 'unknown', note = 'interrupted: the process stopped while the upstream add was in flight', updated_at = ? \
             WHERE state = 'dispatching'",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn order(&self, id: i64) -> Result<Option<Order>> {
        let row = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(order).transpose()
    }

    async fn customer_orders(&self, customer_id: i64, ids: &[i64]) -> Result<Vec<Order>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.customer_id = ? AND o.id IN ({})",
            placeholders(ids.len())
        );
        let mut q = sqlx::query(&sql).bind(customer_id);
        for id in ids {
            q = q.bind(id);
        }
        q.fetch_all(&self.pool).await?.iter().map(order).collect()
    }

    async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<Order>> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders o JOIN customers c ON c.id = o.customer_id \
             WHERE (?1 IS NULL OR c.name = ?1) AND (?2 IS NULL OR o.state = ?2) ORDER BY o.id DESC"
        );
        sqlx::query(&sql)
            .bind(&filter.customer)
            .bind(filter.state.map(OrderState::as_str))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(order)
            .collect()
    }

    async fn orders_to_sync(
        &self,
        upstream: &str,
        stale_before: Millis,
        limit: u32,
    ) -> Result<Vec<Order>> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders o JOIN customers c ON c.id = o.customer_id \
             WHERE o.state = 'placed' AND o.upstream = ? AND (o.synced_at IS NULL OR o.synced_at < ?) \
             ORDER BY o.synced_at IS NOT NULL, o.synced_at, o.id LIMIT ?"
        );
        sqlx::query(&sql)
            .bind(upstream)
            .bind(stale_before)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(order)
            .collect()
    }

    async fn apply_status(&self, id: i64, update: &StatusUpdate, now: Millis) -> Result<Applied> {
        let mut tx = self.write().await?;
        let o = order_in(&mut tx, id).await?;
        if o.state != OrderState::Placed {
            return Ok(Applied::default());
        }
        let final_ = update.status.is_final();
        sqlx::query(
            "UPDATE orders SET status = ?, remains = COALESCE(?, remains), start_count = COALESCE(?, start_count), \
             cost = COALESCE(?, cost), synced_at = ?, updated_at = ?, state = ? WHERE id = ? AND state = 'placed'",
        )
        .bind(update.status.as_str())
        .bind(update.remains)
        .bind(update.start_count.map(int))
        .bind(update.cost)
        .bind(now)
        .bind(now)
        .bind(if final_ { "final" } else { "placed" })
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if !final_ {
            tx.commit().await?;
            return Ok(Applied::default());
        }
        let due = match update.status {
            Status::Canceled => o.charge,
            Status::Partial => {
                let remains = update.remains.or(o.remains).unwrap_or(0).max(0) as u64;
                let refund = money::partial_refund(money::from_units(o.charge), o.billed, remains);
                money::to_units(refund).unwrap_or(0)
            }
            _ => 0,
        };
        let refund = due.min(o.charge - o.refunded).max(0);
        if refund > 0 {
            post(
                &mut tx,
                o.customer_id,
                refund,
                EntryKind::Refund,
                Some(id),
                Some(update.status.as_str()),
                now,
            )
            .await?;
            sqlx::query("UPDATE orders SET refunded = refunded + ? WHERE id = ?")
                .bind(refund)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Applied {
            refund,
            finalized: true,
        })
    }

    async fn resolve_placed(&self, id: i64, upstream_order: u64, now: Millis) -> Result<()> {
        let mut tx = self.write().await?;
        transition(
            &mut tx,
            id,
            OrderState::Unknown,
            "state = 'placed', upstream_order = ?, synced_at = NULL",
            &[Some(int(upstream_order))],
            Some("resolved: placed"),
            now,
        )
        .await?;
        Ok(tx.commit().await?)
    }

    async fn resolve_not_placed(&self, id: i64, now: Millis) -> Result<Units> {
        let mut tx = self.write().await?;
        transition(
            &mut tx,
            id,
            OrderState::Unknown,
            "state = 'final', status = 'Canceled', refunded = charge",
            &[],
            Some("resolved: not placed"),
            now,
        )
        .await?;
        let o = order_in(&mut tx, id).await?;
        if o.charge > 0 {
            post(
                &mut tx,
                o.customer_id,
                o.charge,
                EntryKind::Refund,
                Some(id),
                Some("not placed"),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(o.charge)
    }

    async fn count_orders_by_state(&self) -> Result<Vec<(OrderState, u64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM orders GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut counts: Vec<(OrderState, u64)> = OrderState::ALL.iter().map(|s| (*s, 0)).collect();
        for r in rows {
            let state: String = r.try_get("state")?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| s.as_str() == state) {
                slot.1 = r.try_get::<i64, _>("n")? as u64;
            }
        }
        Ok(counts)
    }

    async fn create_refill(
        &self,
        order: &Order,
        upstream_refill: u64,
        now: Millis,
    ) -> Result<Refill> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO refills (order_id, customer_id, upstream, upstream_refill, status, created_at) VALUES (?, ?, ?, ?, 'Pending', ?) RETURNING id",
        )
        .bind(order.id)
        .bind(order.customer_id)
        .bind(&order.upstream)
        .bind(int(upstream_refill))
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(Refill {
            id,
            order_id: order.id,
            customer_id: order.customer_id,
            upstream: order.upstream.clone(),
            upstream_refill,
            status: RefillStatus::Pending,
            created_at: now,
            synced_at: None,
        })
    }

    async fn customer_refills(&self, customer_id: i64, ids: &[i64]) -> Result<Vec<Refill>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT * FROM refills WHERE customer_id = ? AND id IN ({})",
            placeholders(ids.len())
        );
        let mut q = sqlx::query(&sql).bind(customer_id);
        for id in ids {
            q = q.bind(id);
        }
        q.fetch_all(&self.pool).await?.iter().map(refill).collect()
    }

    async fn refills_to_sync(
        &self,
        upstream: &str,
        stale_before: Millis,
        limit: u32,
    ) -> Result<Vec<Refill>> {
        sqlx::query(
            "SELECT * FROM refills WHERE upstream = ? AND status IN ('Pending', 'In progress') \
             AND (synced_at IS NULL OR synced_at < ?) ORDER BY synced_at IS NOT NULL, synced_at, id LIMIT ?",
        )
        .bind(upstream)
        .bind(stale_before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(refill)
        .collect()
    }

    async fn update_refill(&self, id: i64, status: RefillStatus, now: Millis) -> Result<()> {
        sqlx::query("UPDATE refills SET status = ?, synced_at = ? WHERE id = ?")
            .bind(status.as_str())
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
