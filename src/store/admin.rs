//! What the operator's tools need from the store beyond serving customers: admin API tokens,
//! the audit trail, credits and debits applied once per idempotency key, and settings of a
//! customer the CLI never had (price group, credit limit).
//!
//! The SQL is written once here (`$1` placeholders, which SQLite reads as numbered ones too),
//! the rows are mapped once here, generic over the backend's row type, and the methods are
//! written once, in [`admin_store!`], which each backend instantiates with its own
//! `transaction!` (`sqlite_admin.rs`, `postgres_admin.rs`).

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{Customer, KeyHash, Millis, Result, StoreError, Units};

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every `GET`.
    Read,
    /// Everything.
    Write,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            _ => None,
        }
    }
}

/// An admin token as stored: its name, role and hash (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub name: String,
    pub role: Role,
    pub hash: KeyHash,
    pub created_at: Millis,
}

/// One write through the admin API or the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: Millis,
    /// The token's name, or `cli`.
    pub actor: String,
    /// `client.credit`, `order.resolve`, `token.add`, …
    pub action: String,
    /// What it was done to: a customer's name, an order id, a token's name.
    pub target: String,
    /// `ok`, or the error code the caller got.
    pub outcome: String,
}

/// An idempotency key as a request used it: scoped to the endpoint and the customer, and the
/// hash of what was asked (the same key with another request is refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub scope: String,
    pub key: String,
    pub request_hash: KeyHash,
}

/// The result of a credit or debit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjusted {
    pub name: String,
    pub balance: Units,
    /// An earlier request with the same idempotency key was applied; this one changed nothing.
    pub replayed: bool,
}

#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Refuses a second token of the same name ([`StoreError::Duplicate`]).
    async fn add_admin_token(&self, token: &AdminToken) -> Result<()>;
    async fn admin_token_by_hash(&self, hash: &KeyHash) -> Result<Option<AdminToken>>;
    /// By name.
    async fn admin_tokens(&self) -> Result<Vec<AdminToken>>;
    /// [`StoreError::NotFound`] when there is no token of that name.
    async fn revoke_admin_token(&self, name: &str) -> Result<()>;

    async fn record_audit(&self, entry: &AuditEntry) -> Result<()>;
    /// Newest first, `limit` of them with an id below `before` (all when `None`).
    async fn audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>>;

    /// [`super::Store::adjust_balance`], applied at most once per idempotency key: the key is
    /// written in the transaction of the ledger entry. A key seen before with the same request
    /// answers the balance it answered then (`replayed`); with another request,
    /// [`StoreError::Conflict`].
    async fn adjust_balance_once(
        &self,
        name: &str,
        amount: Units,
        note: Option<&str>,
        idempotency: &Idempotency,
        now: Millis,
    ) -> Result<Adjusted>;

    async fn set_group(&self, name: &str, group: &str) -> Result<()>;
    /// Refused ([`StoreError::InsufficientFunds`]) when the balance is already below the new floor.
    async fn set_credit_limit(&self, name: &str, credit_limit: Units) -> Result<Customer>;
}

pub(super) const INSERT_TOKEN: &str =
    "INSERT INTO admin_tokens (name, token_hash, role, created_at) VALUES ($1, $2, $3, $4)";
pub(super) const TOKEN_BY_HASH: &str =
    "SELECT name, token_hash, role, created_at FROM admin_tokens WHERE token_hash = $1";
pub(super) const TOKENS: &str =
    "SELECT name, token_hash, role, created_at FROM admin_tokens ORDER BY name";
pub(super) const REVOKE_TOKEN: &str = "DELETE FROM admin_tokens WHERE name = $1";
pub(super) const INSERT_AUDIT: &str =
    "INSERT INTO audit (at, actor, action, target, outcome) VALUES ($1, $2, $3, $4, $5)";
pub(super) const AUDIT_PAGE: &str = "SELECT id, at, actor, action, target, outcome FROM audit \
     WHERE id < $1 ORDER BY id DESC LIMIT $2";
/// Claims the key; a concurrent claim of the same key waits here until the first commits (or
/// rolls back), then finds it taken.
pub(super) const CLAIM_KEY: &str = "INSERT INTO idempotency (scope, key, request_hash, created_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
pub(super) const CLAIMED_KEY: &str =
    "SELECT request_hash, balance FROM idempotency WHERE scope = $1 AND key = $2";
pub(super) const ANSWER_KEY: &str =
    "UPDATE idempotency SET balance = $1 WHERE scope = $2 AND key = $3";
pub(super) const SET_GROUP: &str = "UPDATE customers SET grp = $1 WHERE name = $2";
pub(super) const SET_CREDIT_LIMIT: &str =
    "UPDATE customers SET credit_limit = $1 WHERE name = $2 AND balance >= -$1";
pub(super) const CUSTOMER_EXISTS: &str = "SELECT id FROM customers WHERE name = $1";

/// A stored value that does not read back as what it should be.
fn undecodable(column: &str, message: String) -> StoreError {
    StoreError::Conflict(format!("stored {column} unreadable: {message}"))
}

fn hash_of(bytes: Vec<u8>, column: &str) -> Result<KeyHash> {
    KeyHash::try_from(bytes.as_slice())
        .map_err(|_| undecodable(column, format!("{} bytes, not 32", bytes.len())))
}

pub(super) fn token_from_row<R>(row: &R) -> Result<AdminToken>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let role: String = row.try_get("role")?;
    Ok(AdminToken {
        name: row.try_get("name")?,
        role: Role::parse(&role).ok_or_else(|| undecodable("role", role))?,
        hash: hash_of(row.try_get("token_hash")?, "token_hash")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn audit_from_row<R>(row: &R) -> Result<AuditEntry>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(AuditEntry {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        outcome: row.try_get("outcome")?,
    })
}

/// What a claimed key says about this request: `None` when it is ours (apply it), the stored
/// answer when an earlier request with the same body was applied, a conflict otherwise.
pub(super) fn earlier_answer(
    stored: Option<(Vec<u8>, Option<Units>)>,
    idempotency: &Idempotency,
    name: &str,
) -> Result<Adjusted> {
    let Some((hash, balance)) = stored else {
        // Taken by a transaction that rolled back in between: the caller's retry claims it.
        return Err(StoreError::Conflict(
            "the idempotency key is in use by a request still running: retry".into(),
        ));
    };
    let balance = balance.ok_or_else(|| {
        StoreError::Conflict("the idempotency key is in use by a request still running".into())
    })?;
    if hash_of(hash, "request_hash")? != idempotency.request_hash {
        return Err(StoreError::Conflict(
            "this Idempotency-Key was used with a different request".into(),
        ));
    }
    Ok(Adjusted {
        name: name.to_owned(),
        balance,
        replayed: true,
    })
}

/// Implements [`AdminStore`] for `$store`, whose module has a `transaction!(store, |conn|
/// body)` macro (run `body`, a future using the `&mut` connection `conn`, in a write
/// transaction and commit it), a `pool` field, and `$adjust_in(conn, name, amount, note,
/// now)`, its [`super::Store::adjust_balance`] inside a transaction.
macro_rules! admin_store {
    ($store:ty, $adjust_in:path) => {
        #[async_trait::async_trait]
        impl $crate::store::admin::AdminStore for $store {
            async fn add_admin_token(
                &self,
                token: &$crate::store::admin::AdminToken,
            ) -> $crate::store::Result<()> {
                transaction!(self, |conn| async {
                    sqlx::query($crate::store::admin::INSERT_TOKEN)
                        .bind(&token.name)
                        .bind(&token.hash[..])
                        .bind(token.role.as_str())
                        .bind(token.created_at)
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| duplicate(e, |_| format!("admin token {:?}", token.name)))?;
                    Ok::<_, $crate::store::StoreError>(())
                })
            }

            async fn admin_token_by_hash(
                &self,
                hash: &$crate::store::KeyHash,
            ) -> $crate::store::Result<Option<$crate::store::admin::AdminToken>> {
                let row = sqlx::query($crate::store::admin::TOKEN_BY_HASH)
                    .bind(&hash[..])
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref()
                    .map($crate::store::admin::token_from_row)
                    .transpose()
            }

            async fn admin_tokens(
                &self,
            ) -> $crate::store::Result<Vec<$crate::store::admin::AdminToken>> {
                let rows = sqlx::query($crate::store::admin::TOKENS)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map($crate::store::admin::token_from_row)
                    .collect()
            }

            async fn revoke_admin_token(&self, name: &str) -> $crate::store::Result<()> {
                transaction!(self, |conn| $crate::store::admin::change_one(
                    sqlx::query($crate::store::admin::REVOKE_TOKEN)
                        .bind(name)
                        .execute(&mut *conn)
                ))
            }

            async fn record_audit(
                &self,
                e: &$crate::store::admin::AuditEntry,
            ) -> $crate::store::Result<()> {
                sqlx::query($crate::store::admin::INSERT_AUDIT)
                    .bind(e.at)
                    .bind(&e.actor)
                    .bind(&e.action)
                    .bind(&e.target)
                    .bind(&e.outcome)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn audit(
                &self,
                before: Option<i64>,
                limit: u32,
            ) -> $crate::store::Result<Vec<$crate::store::admin::AuditEntry>> {
                let rows = sqlx::query($crate::store::admin::AUDIT_PAGE)
                    .bind(before.unwrap_or(i64::MAX))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map($crate::store::admin::audit_from_row)
                    .collect()
            }

            async fn adjust_balance_once(
                &self,
                name: &str,
                amount: $crate::store::Units,
                note: Option<&str>,
                key: &$crate::store::admin::Idempotency,
                now: $crate::store::Millis,
            ) -> $crate::store::Result<$crate::store::admin::Adjusted> {
                use $crate::store::admin::{ANSWER_KEY, CLAIM_KEY, CLAIMED_KEY};
                transaction!(self, |conn| async {
                    // A concurrent request with the same key (on any instance) waits on this
                    // insert until ours commits or rolls back, then finds the key taken or free.
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
                        return $crate::store::admin::earlier_answer(stored, key, name);
                    }
                    let customer = $adjust_in(&mut *conn, name, amount, note, now).await?;
                    sqlx::query(ANSWER_KEY)
                        .bind(customer.balance)
                        .bind(&key.scope)
                        .bind(&key.key)
                        .execute(&mut *conn)
                        .await?;
                    Ok($crate::store::admin::Adjusted {
                        name: customer.name,
                        balance: customer.balance,
                        replayed: false,
                    })
                })
            }

            async fn set_group(&self, name: &str, group: &str) -> $crate::store::Result<()> {
                transaction!(self, |conn| $crate::store::admin::change_one(
                    sqlx::query($crate::store::admin::SET_GROUP)
                        .bind(group)
                        .bind(name)
                        .execute(&mut *conn)
                ))
            }

            async fn set_credit_limit(
                &self,
                name: &str,
                credit_limit: $crate::store::Units,
            ) -> $crate::store::Result<$crate::store::Customer> {
                use $crate::store::StoreError;
                transaction!(self, |conn| async {
                    let id: i64 = sqlx::query_scalar($crate::store::admin::CUSTOMER_EXISTS)
                        .bind(name)
                        .fetch_optional(&mut *conn)
                        .await?
                        .ok_or(StoreError::NotFound)?;
                    let changed = sqlx::query($crate::store::admin::SET_CREDIT_LIMIT)
                        .bind(credit_limit)
                        .bind(name)
                        .execute(&mut *conn)
                        .await?;
                    if changed.rows_affected() != 1 {
                        return Err(StoreError::InsufficientFunds);
                    }
                    fetch_customer(&mut *conn, id).await
                })
            }
        }
    };
}
pub(super) use admin_store;

/// A statement that must change exactly one row (else the row was not found).
pub(super) async fn change_one<Q>(
    statement: impl Future<Output = Result<Q, sqlx::Error>>,
) -> Result<()>
where
    Q: RowsAffected,
{
    match statement.await?.rows_affected() {
        1 => Ok(()),
        _ => Err(StoreError::NotFound),
    }
}

/// The result of an `UPDATE` or `DELETE`, on either backend.
pub(super) trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}
