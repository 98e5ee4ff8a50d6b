//! The operator's writes, as one core that both faces call: the CLI (`panelgate client …`,
//! `order …`, `admin token …`, actor `cli`) and the admin API (actor: the token's name). Every
//! write goes through [`Operator::audited`], so each leaves one audit row whichever face made
//! it, with the same validation (the rules live in [`crate::admin`]).

use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use crate::admin::{self, AdminError};
use crate::config::Config;
use crate::keys;
use crate::protocol::Status;
use crate::store::admin::{Adjusted, AdminToken, AuditEntry, Idempotency, Role};
use crate::store::{Customer, Store, StoreError};
use crate::sync::now_ms;

type Result<T, E = AdminError> = std::result::Result<T, E>;

/// The actor of the CLI's writes in the audit trail.
pub const CLI: &str = "cli";

/// Who does what: the store, the config in force and the actor the audit names.
pub struct Operator<'a> {
    pub store: &'a dyn Store,
    pub cfg: &'a Config,
    pub actor: &'a str,
}

/// The code an error answers with (the admin API's `code`, the audit's outcome).
pub fn error_code(e: &AdminError) -> &'static str {
    match e {
        AdminError::NoClient(_)
        | AdminError::NoOrder(_)
        | AdminError::NoToken(_)
        | AdminError::NoGroup(_) => "not_found",
        AdminError::Invalid(_) => "bad_request",
        AdminError::Floor(_) => "insufficient_funds",
        AdminError::State(_) => "conflict",
        AdminError::Store(s) => match s {
            StoreError::NotFound => "not_found",
            StoreError::InsufficientFunds => "insufficient_funds",
            StoreError::Duplicate(_) | StoreError::Conflict(_) | StoreError::Disabled => "conflict",
            _ => "unavailable",
        },
    }
}

impl Operator<'_> {
    /// Writes the audit row of `action` on `target` with its outcome, and passes the result
    /// on. An audit row that cannot be written is logged: the write it describes is done.
    async fn audited<T>(&self, action: &str, target: &str, result: Result<T>) -> Result<T> {
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => error_code(e),
        };
        let entry = AuditEntry {
            id: 0,
            at: now_ms(),
            actor: self.actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            outcome: outcome.to_owned(),
        };
        if let Err(e) = self.store.record_audit(&entry).await {
            tracing::error!(error = %e, action, target, "writing the audit row failed");
        }
        result
    }

    pub async fn add_client(
        &self,
        name: &str,
        balance: Decimal,
        group: &str,
        credit_limit: Decimal,
    ) -> Result<(Customer, String)> {
        let done = admin::add_client(self.store, self.cfg, name, balance, group, credit_limit);
        self.audited("client.add", name, done.await).await
    }

    /// Credits (positive) or debits (negative) `name`; with an idempotency key, at most once
    /// per key (a retry answers what the first request did).
    pub async fn adjust(
        &self,
        name: &str,
        amount: Decimal,
        note: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<Adjusted> {
        let action = if amount.is_sign_negative() {
            "client.debit"
        } else {
            "client.credit"
        };
        let done = match idempotency_key {
            None => admin::adjust(self.store, name, amount, note)
                .await
                .map(|c| Adjusted {
                    name: c.name,
                    balance: c.balance,
                    replayed: false,
                }),
            Some(key) => {
                let key = idempotency(action, name, key, amount, note);
                admin::adjust_once(self.store, name, amount, note, &key).await
            }
        };
        self.audited(action, name, done).await
    }

    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<()> {
        let action = if enabled {
            "client.enable"
        } else {
            "client.disable"
        };
        let done = admin::set_enabled(self.store, name, enabled).await;
        self.audited(action, name, done).await
    }

    pub async fn rotate_key(&self, name: &str) -> Result<String> {
        let done = admin::rotate_key(self.store, name).await;
        self.audited("client.rotate_key", name, done).await
    }

    pub async fn set_group(&self, name: &str, group: &str) -> Result<()> {
        let done = admin::set_group(self.store, self.cfg, name, group).await;
        self.audited("client.set_group", name, done).await
    }

    pub async fn set_credit_limit(&self, name: &str, limit: Decimal) -> Result<Customer> {
        let done = admin::set_credit_limit(self.store, name, limit).await;
        self.audited("client.set_credit_limit", name, done).await
    }

    /// Resolves an order of unknown outcome: placed as `upstream_order`, or not placed.
    pub async fn resolve(&self, id: i64, upstream_order: Option<&str>) -> Result<String> {
        let done = admin::resolve(self.store, id, upstream_order).await;
        self.audited("order.resolve", &format!("order {id}"), done)
            .await
    }

    pub async fn resolve_ended(
        &self,
        id: i64,
        status: Status,
        remains: Option<i64>,
    ) -> Result<String> {
        let done = admin::resolve_ended(self.store, id, status, remains).await;
        self.audited("order.resolve", &format!("order {id}"), done)
            .await
    }

    pub async fn settle(&self, id: i64, refund: Decimal, note: &str) -> Result<String> {
        let done = admin::settle(self.store, id, refund, note).await;
        self.audited("order.settle", &format!("order {id}"), done)
            .await
    }

    pub async fn unlink(&self, id: i64) -> Result<String> {
        let done = admin::unlink(self.store, id).await;
        self.audited("order.unlink", &format!("order {id}"), done)
            .await
    }

    /// Creates an admin token and returns it (shown this once, stored only hashed).
    pub async fn add_token(&self, name: &str, role: Role) -> Result<String> {
        let done = async {
            if name.trim().is_empty() {
                return Err(AdminError::Invalid("the name must not be empty".into()));
            }
            let token =
                keys::generate().map_err(|e| AdminError::Invalid(format!("no randomness: {e}")))?;
            let stored = AdminToken {
                name: name.to_owned(),
                role,
                hash: keys::hash(&token),
                created_at: now_ms(),
            };
            self.store.add_admin_token(&stored).await?;
            Ok(token)
        };
        self.audited("token.add", name, done.await).await
    }

    pub async fn revoke_token(&self, name: &str) -> Result<()> {
        let done = match self.store.revoke_admin_token(name).await {
            Err(StoreError::NotFound) => Err(AdminError::NoToken(name.into())),
            other => other.map_err(Into::into),
        };
        self.audited("token.revoke", name, done).await
    }
}

/// The key as stored: scoped to the action and the customer, with the hash of what was asked.
fn idempotency(
    action: &str,
    name: &str,
    key: &str,
    amount: Decimal,
    note: Option<&str>,
) -> Idempotency {
    let mut request = Sha256::new();
    request.update(amount.normalize().to_string().as_bytes());
    request.update([0]);
    request.update(note.unwrap_or_default().as_bytes());
    Idempotency {
        scope: format!("{action}:{name}"),
        key: key.to_owned(),
        request_hash: request.finalize().into(),
    }
}
