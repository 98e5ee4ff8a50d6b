//! [`AdminStore`] on SQLite: the statements of [`super::admin`], each write in a
//! [`super::sqlite`] write transaction.

use async_trait::async_trait;

use super::admin::{
    ANSWER_KEY, AUDIT_PAGE, Adjusted, AdminStore, AdminToken, AuditEntry, CLAIM_KEY, CLAIMED_KEY,
    CUSTOMER_EXISTS, INSERT_AUDIT, INSERT_TOKEN, Idempotency, REVOKE_TOKEN, SET_CREDIT_LIMIT,
    SET_GROUP, TOKEN_BY_HASH, TOKENS, audit_from_row, before_or_max, earlier_answer,
    token_from_row,
};
use super::sqlite::{SqliteStore, adjust_balance_in, duplicate, fetch_customer};
use super::{Customer, KeyHash, Millis, Result, StoreError, Units};

#[async_trait]
impl AdminStore for SqliteStore {
    async fn add_admin_token(&self, token: &AdminToken) -> Result<()> {
        let mut w = self.write().await?;
        sqlx::query(INSERT_TOKEN)
            .bind(&token.name)
            .bind(&token.hash[..])
            .bind(token.role.as_str())
            .bind(token.created_at)
            .execute(w.conn())
            .await
            .map_err(|e| duplicate(e, |_| format!("admin token {:?}", token.name)))?;
        w.commit().await
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
        let mut w = self.write().await?;
        let gone = sqlx::query(REVOKE_TOKEN)
            .bind(name)
            .execute(w.conn())
            .await?;
        if gone.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
        w.commit().await
    }

    async fn record_audit(&self, e: &AuditEntry) -> Result<()> {
        let mut w = self.write().await?;
        sqlx::query(INSERT_AUDIT)
            .bind(e.at)
            .bind(&e.actor)
            .bind(&e.action)
            .bind(&e.target)
            .bind(&e.outcome)
            .execute(w.conn())
            .await?;
        w.commit().await
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
        let mut w = self.write().await?;
        let claimed = sqlx::query(CLAIM_KEY)
            .bind(&key.scope)
            .bind(&key.key)
            .bind(&key.request_hash[..])
            .bind(now)
            .execute(w.conn())
            .await?;
        if claimed.rows_affected() == 0 {
            let stored = sqlx::query_as(CLAIMED_KEY)
                .bind(&key.scope)
                .bind(&key.key)
                .fetch_optional(w.conn())
                .await?;
            return earlier_answer(stored, key, name);
        }
        let customer = adjust_balance_in(w.conn(), name, amount, note, now).await?;
        sqlx::query(ANSWER_KEY)
            .bind(customer.balance)
            .bind(&key.scope)
            .bind(&key.key)
            .execute(w.conn())
            .await?;
        w.commit().await?;
        Ok(Adjusted {
            name: customer.name,
            balance: customer.balance,
            replayed: false,
        })
    }

    async fn set_group(&self, name: &str, group: &str) -> Result<()> {
        let mut w = self.write().await?;
        let changed = sqlx::query(SET_GROUP)
            .bind(group)
            .bind(name)
            .execute(w.conn())
            .await?;
        if changed.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
        w.commit().await
    }

    async fn set_credit_limit(&self, name: &str, credit_limit: Units) -> Result<Customer> {
        let mut w = self.write().await?;
        let id: i64 = sqlx::query_scalar(CUSTOMER_EXISTS)
            .bind(name)
            .fetch_optional(w.conn())
            .await?
            .ok_or(StoreError::NotFound)?;
        let changed = sqlx::query(SET_CREDIT_LIMIT)
            .bind(credit_limit)
            .bind(name)
            .execute(w.conn())
            .await?;
        if changed.rows_affected() != 1 {
            return Err(StoreError::InsufficientFunds);
        }
        let customer = fetch_customer(w.conn(), id).await?;
        w.commit().await?;
        Ok(customer)
    }
}
