//! [`AdminStore`] on PostgreSQL: the statements of [`super::admin`], each write in a
//! [`super::postgres`] transaction (retried on a serialization failure or a deadlock).

use async_trait::async_trait;
use sqlx::postgres::PgConnection;

use super::admin::{
    ANSWER_KEY, AUDIT_PAGE, Adjusted, AdminStore, AdminToken, AuditEntry, CLAIM_KEY, CLAIMED_KEY,
    CUSTOMER_EXISTS, INSERT_AUDIT, INSERT_TOKEN, Idempotency, REVOKE_TOKEN, SET_CREDIT_LIMIT,
    SET_GROUP, TOKEN_BY_HASH, TOKENS, audit_from_row, before_or_max, earlier_answer,
    token_from_row,
};
use super::postgres::{
    PostgresStore, RETRIES, adjust_balance_in, backoff, duplicate, fetch_customer, is_transient,
    transaction,
};
use super::{Customer, KeyHash, Millis, Result, StoreError, Units};

/// Runs one statement that must change exactly one row (else the row was not found).
async fn change_one(conn: &mut PgConnection, sql: &str, a: &str, b: &str) -> Result<()> {
    let changed = sqlx::query(sql).bind(a).bind(b).execute(conn).await?;
    match changed.rows_affected() {
        1 => Ok(()),
        _ => Err(StoreError::NotFound),
    }
}

async fn adjust_once_in(
    conn: &mut PgConnection,
    name: &str,
    amount: Units,
    note: Option<&str>,
    key: &Idempotency,
    now: Millis,
) -> Result<Adjusted> {
    // A concurrent request with the same key waits on this insert until ours commits.
    let claimed = sqlx::query(CLAIM_KEY)
        .bind(&key.scope)
        .bind(&key.key)
        .bind(&key.request_hash[..])
        .bind(now)
        .execute(&mut *conn)
        .await?;
    if claimed.rows_affected() == 0 {
        let stored = sqlx::query_as(CLAIMED_KEY)
            .bind(&key.scope)
            .bind(&key.key)
            .fetch_optional(&mut *conn)
            .await?;
        return earlier_answer(stored, key, name);
    }
    let customer = adjust_balance_in(conn, name, amount, note, now).await?;
    sqlx::query(ANSWER_KEY)
        .bind(customer.balance)
        .bind(&key.scope)
        .bind(&key.key)
        .execute(&mut *conn)
        .await?;
    Ok(Adjusted {
        name: customer.name,
        balance: customer.balance,
        replayed: false,
    })
}

#[async_trait]
impl AdminStore for PostgresStore {
    async fn add_admin_token(&self, token: &AdminToken) -> Result<()> {
        transaction!(self, |conn| async {
            sqlx::query(INSERT_TOKEN)
                .bind(&token.name)
                .bind(&token.hash[..])
                .bind(token.role.as_str())
                .bind(token.created_at)
                .execute(&mut *conn)
                .await
                .map_err(|e| duplicate(e, |_| format!("admin token {:?}", token.name)))?;
            Ok::<_, StoreError>(())
        })
    }

    async fn admin_token_by_hash(&self, hash: &KeyHash) -> Result<Option<AdminToken>> {
        let row = sqlx::query(TOKEN_BY_HASH)
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn admin_tokens(&self) -> Result<Vec<AdminToken>> {
        let rows = sqlx::query(TOKENS).fetch_all(&self.pool).await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_admin_token(&self, name: &str) -> Result<()> {
        let gone = sqlx::query(REVOKE_TOKEN)
            .bind(name)
            .execute(&self.pool)
            .await?;
        match gone.rows_affected() {
            1 => Ok(()),
            _ => Err(StoreError::NotFound),
        }
    }

    async fn record_audit(&self, e: &AuditEntry) -> Result<()> {
        sqlx::query(INSERT_AUDIT)
            .bind(e.at)
            .bind(&e.actor)
            .bind(&e.action)
            .bind(&e.target)
            .bind(&e.outcome)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(AUDIT_PAGE)
            .bind(before_or_max(before))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn adjust_balance_once(
        &self,
        name: &str,
        amount: Units,
        note: Option<&str>,
        key: &Idempotency,
        now: Millis,
    ) -> Result<Adjusted> {
        transaction!(self, |conn| adjust_once_in(
            conn, name, amount, note, key, now
        ))
    }

    async fn set_group(&self, name: &str, group: &str) -> Result<()> {
        transaction!(self, |conn| change_one(conn, SET_GROUP, group, name))
    }

    async fn set_credit_limit(&self, name: &str, credit_limit: Units) -> Result<Customer> {
        transaction!(self, |conn| async {
            let id: i64 = sqlx::query_scalar(CUSTOMER_EXISTS)
                .bind(name)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(StoreError::NotFound)?;
            let changed = sqlx::query(SET_CREDIT_LIMIT)
                .bind(credit_limit)
                .bind(name)
                .execute(&mut *conn)
                .await?;
            if changed.rows_affected() != 1 {
                return Err(StoreError::InsufficientFunds);
            }
            fetch_customer(conn, id).await
        })
    }
}
