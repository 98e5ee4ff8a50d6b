//! What the operator's tools need from the store beyond serving customers: admin API tokens,
//! the console's sessions (opened with a token), the audit trail, credits and debits applied
//! once per idempotency key, and settings of a customer the CLI never had (price group, credit
//! limit).
//!
//! Written once for both backends, on the store's [`Engine`]: its transactions (retried when
//! contended), its statements and rows.

use async_trait::async_trait;

use super::engine::{
    Engine, adjust_balance_in, backoff, customer_by_id, fetch_customer, transaction,
};
use super::rows::{Conn, Fields, Stmt};
use super::rules::undecodable;
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

/// When console sessions end: a session opened before `opened_after` or last seen before
/// `seen_after` is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub opened_after: Millis,
    pub seen_after: Millis,
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

    /// Opens a console session: `id` is the hash of the cookie's id, `token` the hash of the
    /// admin token it was opened with. Sessions over by `limits` are deleted on the way.
    async fn open_session(
        &self,
        id: &KeyHash,
        token: &KeyHash,
        limits: &SessionLimits,
        now: Millis,
    ) -> Result<()>;
    /// The token of a session not over by `limits` (`None`: no such session, it is over, or
    /// its token was revoked); marks it seen at `now` (at most once a minute, to spare writes).
    async fn session_token(
        &self,
        id: &KeyHash,
        limits: &SessionLimits,
        now: Millis,
    ) -> Result<Option<AdminToken>>;
    /// Ends a session (nothing to do if there is none).
    async fn close_session(&self, id: &KeyHash) -> Result<()>;

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

const INSERT_TOKEN: &str =
    "INSERT INTO admin_tokens (name, token_hash, role, created_at) VALUES ($1, $2, $3, $4)";
const TOKEN_COLUMNS: &str = "SELECT name, token_hash, role, created_at FROM admin_tokens";
const REVOKE_TOKEN: &str = "DELETE FROM admin_tokens WHERE name = $1";
const INSERT_SESSION: &str = "INSERT INTO console_sessions (id_hash, token_hash, created_at, \
     seen_at) VALUES ($1, $2, $3, $3)";
const PURGE_SESSIONS: &str = "DELETE FROM console_sessions WHERE created_at <= $1 OR seen_at <= $2";
/// The session's token, joined by hash: a revoked token's sessions find none.
const SESSION_TOKEN: &str = "SELECT t.name AS name, t.token_hash AS token_hash, t.role AS role, \
     t.created_at AS created_at, s.seen_at AS seen_at FROM console_sessions s \
     JOIN admin_tokens t ON t.token_hash = s.token_hash \
     WHERE s.id_hash = $1 AND s.created_at > $2 AND s.seen_at > $3";
const TOUCH_SESSION: &str = "UPDATE console_sessions SET seen_at = $1 WHERE id_hash = $2";
const CLOSE_SESSION: &str = "DELETE FROM console_sessions WHERE id_hash = $1";
/// A session seen less than this long ago is not marked seen again.
const TOUCH_EVERY: Millis = 60_000;
const INSERT_AUDIT: &str =
    "INSERT INTO audit (at, actor, action, target, outcome) VALUES ($1, $2, $3, $4, $5)";
const AUDIT_PAGE: &str = "SELECT id, at, actor, action, target, outcome FROM audit \
     WHERE id < $1 ORDER BY id DESC LIMIT $2";
/// Claims the key; a concurrent claim of the same key waits here until the first commits (or
/// rolls back), then finds it taken.
const CLAIM_KEY: &str = "INSERT INTO idempotency (scope, key, request_hash, created_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
const CLAIMED_KEY: &str =
    "SELECT request_hash, balance FROM idempotency WHERE scope = $1 AND key = $2";
const ANSWER_KEY: &str = "UPDATE idempotency SET balance = $1 WHERE scope = $2 AND key = $3";
const SET_GROUP: &str = "UPDATE customers SET grp = $1 WHERE name = $2";
const SET_CREDIT_LIMIT: &str =
    "UPDATE customers SET credit_limit = $1 WHERE name = $2 AND balance >= -$1";

fn hash_of(bytes: Vec<u8>, column: &str) -> Result<KeyHash> {
    KeyHash::try_from(bytes.as_slice())
        .map_err(|_| undecodable(column, format!("{} bytes, not 32", bytes.len())))
}

fn token_from_row(row: &impl Fields) -> Result<AdminToken> {
    let role = row.string("role")?;
    Ok(AdminToken {
        name: row.string("name")?,
        role: Role::parse(&role).ok_or_else(|| undecodable("role", role))?,
        hash: hash_of(row.bytes("token_hash")?, "token_hash")?,
        created_at: row.i64("created_at")?,
    })
}

fn audit_from_row(row: &impl Fields) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: row.i64("id")?,
        at: row.i64("at")?,
        actor: row.string("actor")?,
        action: row.string("action")?,
        target: row.string("target")?,
        outcome: row.string("outcome")?,
    })
}

/// What a claimed key says about this request: the stored answer when an earlier request with
/// the same body was applied, a conflict otherwise.
fn earlier_answer(
    stored: Option<&impl Fields>,
    idempotency: &Idempotency,
    name: &str,
) -> Result<Adjusted> {
    let Some(stored) = stored else {
        // Taken by a transaction that rolled back in between: the caller's retry claims it.
        return Err(StoreError::Conflict(
            "the idempotency key is in use by a request still running: retry".into(),
        ));
    };
    let balance = stored.int("balance")?.ok_or_else(|| {
        StoreError::Conflict("the idempotency key is in use by a request still running".into())
    })?;
    if hash_of(stored.bytes("request_hash")?, "request_hash")? != idempotency.request_hash {
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

/// A statement that must change exactly one row (else the row was not found).
async fn change_one<C: Conn>(c: &mut C, stmt: Stmt) -> Result<()> {
    match c.execute(stmt).await? {
        1 => Ok(()),
        _ => Err(StoreError::NotFound),
    }
}

/// [`AdminStore::adjust_balance_once`] inside a transaction.
async fn adjust_once_in<C: Conn>(
    c: &mut C,
    lock: &str,
    adjustment: (&str, Units, Option<&str>),
    key: &Idempotency,
    now: Millis,
) -> Result<Adjusted> {
    let (name, amount, note) = adjustment;
    let claim = Stmt::new(CLAIM_KEY)
        .bind(&key.scope)
        .bind(&key.key)
        .bind(&key.request_hash[..])
        .bind(now);
    // A concurrent request with the same key (on any instance) waits on this insert until
    // ours commits or rolls back, then finds the key taken or free.
    if c.execute(claim).await? == 0 {
        let stored = Stmt::new(CLAIMED_KEY).bind(&key.scope).bind(&key.key);
        let stored = c.fetch_optional(stored).await?;
        return earlier_answer(stored.as_ref(), key, name);
    }
    let customer = adjust_balance_in(c, lock, name, amount, note, now).await?;
    let answer = Stmt::new(ANSWER_KEY)
        .bind(customer.balance)
        .bind(&key.scope)
        .bind(&key.key);
    c.execute(answer).await?;
    Ok(Adjusted {
        name: customer.name,
        balance: customer.balance,
        replayed: false,
    })
}

async fn set_credit_limit_in<C: Conn>(c: &mut C, name: &str, limit: Units) -> Result<Customer> {
    let id = fetch_customer(c, "name", name.into())
        .await?
        .ok_or(StoreError::NotFound)?
        .id;
    let changed = c
        .execute(Stmt::new(SET_CREDIT_LIMIT).bind(limit).bind(name))
        .await?;
    if changed != 1 {
        return Err(StoreError::InsufficientFunds);
    }
    customer_by_id(c, id).await
}

#[async_trait]
impl<E: Engine> AdminStore for E {
    async fn add_admin_token(&self, token: &AdminToken) -> Result<()> {
        let insert = Stmt::new(INSERT_TOKEN)
            .bind(&token.name)
            .bind(&token.hash[..])
            .bind(token.role.as_str())
            .bind(token.created_at);
        let result = transaction!(self, |c| c.execute(insert.clone()));
        match result {
            Err(StoreError::Duplicate(_)) => Err(StoreError::Duplicate(format!(
                "admin token {:?}",
                token.name
            ))),
            other => other.map(drop),
        }
    }

    async fn admin_token_by_hash(&self, hash: &KeyHash) -> Result<Option<AdminToken>> {
        let stmt = Stmt::new(format!("{TOKEN_COLUMNS} WHERE token_hash = $1")).bind(&hash[..]);
        let row = self.read().await?.fetch_optional(stmt).await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn admin_tokens(&self) -> Result<Vec<AdminToken>> {
        let stmt = Stmt::new(format!("{TOKEN_COLUMNS} ORDER BY name"));
        let rows = self.read().await?.fetch_all(stmt).await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_admin_token(&self, name: &str) -> Result<()> {
        transaction!(self, |c| change_one(c, Stmt::new(REVOKE_TOKEN).bind(name)))
    }

    async fn open_session(
        &self,
        id: &KeyHash,
        token: &KeyHash,
        limits: &SessionLimits,
        now: Millis,
    ) -> Result<()> {
        let purge = Stmt::new(PURGE_SESSIONS)
            .bind(limits.opened_after)
            .bind(limits.seen_after);
        let insert = Stmt::new(INSERT_SESSION)
            .bind(&id[..])
            .bind(&token[..])
            .bind(now);
        transaction!(self, |c| async {
            c.execute(purge.clone()).await?;
            c.execute(insert.clone()).await
        })
        .map(drop)
    }

    async fn session_token(
        &self,
        id: &KeyHash,
        limits: &SessionLimits,
        now: Millis,
    ) -> Result<Option<AdminToken>> {
        let stmt = Stmt::new(SESSION_TOKEN)
            .bind(&id[..])
            .bind(limits.opened_after)
            .bind(limits.seen_after);
        let Some(row) = self.read().await?.fetch_optional(stmt).await? else {
            return Ok(None);
        };
        if row.i64("seen_at")? < now - TOUCH_EVERY {
            let touch = Stmt::new(TOUCH_SESSION).bind(now).bind(&id[..]);
            transaction!(self, |c| c.execute(touch.clone()))?;
        }
        token_from_row(&row).map(Some)
    }

    async fn close_session(&self, id: &KeyHash) -> Result<()> {
        let stmt = Stmt::new(CLOSE_SESSION).bind(&id[..]);
        transaction!(self, |c| c.execute(stmt.clone())).map(drop)
    }

    async fn record_audit(&self, e: &AuditEntry) -> Result<()> {
        let insert = Stmt::new(INSERT_AUDIT)
            .bind(e.at)
            .bind(&e.actor)
            .bind(&e.action)
            .bind(&e.target)
            .bind(&e.outcome);
        transaction!(self, |c| c.execute(insert.clone())).map(drop)
    }

    async fn audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>> {
        let stmt = Stmt::new(AUDIT_PAGE)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit));
        let rows = self.read().await?.fetch_all(stmt).await?;
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
        transaction!(self, |c| adjust_once_in(
            c,
            E::LOCK,
            (name, amount, note),
            key,
            now
        ))
    }

    async fn set_group(&self, name: &str, group: &str) -> Result<()> {
        transaction!(self, |c| change_one(
            c,
            Stmt::new(SET_GROUP).bind(group).bind(name)
        ))
    }

    async fn set_credit_limit(&self, name: &str, credit_limit: Units) -> Result<Customer> {
        transaction!(self, |c| set_credit_limit_in(c, name, credit_limit))
    }
}
