//! What the operator's tools need from the store beyond serving customers: admin API tokens,
//! the audit trail, credits and debits applied once per idempotency key, and settings of a
//! customer the CLI never had (price group, credit limit).
//!
//! The SQL is written once here (`$1` placeholders, which SQLite reads as numbered ones too)
//! and the rows are mapped once here, generic over the backend's row type; each backend only
//! runs the statements in its own transactions (`sqlite_admin.rs`, `postgres_admin.rs`).

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

/// The `before` cursor of a first page.
pub(super) fn before_or_max(before: Option<i64>) -> i64 {
    before.unwrap_or(i64::MAX)
}
