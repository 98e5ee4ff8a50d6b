//! Who is asking: the customer behind an API key, remembered for a moment.
//!
//! Every request carries a key, and a busy panel sends hundreds a second; reading the
//! customers table for each would make the key the most expensive part of a `status` poll.
//! A key's customer is remembered for [`TRUST`], so a `client disable` or `rotate-key` by the
//! operator (another process) takes effect within that time (orders of a disabled customer are
//! refused at once: the store checks where it holds the funds). The balance is never taken from
//! here: the `balance` action reads it fresh, and an order's funds are checked in the
//! transaction that holds them.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use crate::clock::{self, Instant};
use crate::keys;
use crate::store::{Customer, KeyHash, Store, StoreError};

pub const TRUST: Duration = Duration::from_secs(1);

/// How long remembered keys are trusted without asking a database found unreachable.
const AWAY_TRUST: Duration = Duration::from_secs(5);

/// Keys remembered at most; when full, the cache starts over.
const CAPACITY: usize = 10_000;

/// An authenticated customer, without the balance (which would be stale here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: i64,
    pub name: String,
    pub group: String,
}

pub struct Authenticator {
    // Keys are SHA-256 digests of valid keys only: a fast non-keyed hash is safe.
    known: DashMap<KeyHash, (Instant, Arc<Caller>), rustc_hash::FxBuildHasher>,
    /// Until when remembered keys are trusted without asking the database, which a read found
    /// unreachable: each request of an outage then waits out the pool's timeout once (for
    /// what it came to do), not twice; a read every [`AWAY_TRUST`] looks whether it is back.
    store_away: std::sync::Mutex<Option<Instant>>,
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator::new()
    }
}

impl Authenticator {
    pub fn new() -> Authenticator {
        Authenticator {
            known: DashMap::default(),
            store_away: std::sync::Mutex::new(None),
        }
    }

    /// The enabled customer whose key this is, if any. Unknown keys are not remembered: the
    /// failed-key cap deals with those.
    pub async fn caller(
        &self,
        store: &dyn Store,
        key: &str,
    ) -> Result<Option<Arc<Caller>>, StoreError> {
        let hash = keys::hash(key);
        if let Some(known) = self.known.get(&hash)
            && (known.0.elapsed() < TRUST || self.store_away())
        {
            return Ok(Some(known.1.clone()));
        }
        let found = match customer(store, &hash).await {
            // The database away: a key known a moment ago is still its customer's (their
            // orders are refused anyway, since nothing can be held).
            Err(e) if e.is_unavailable() => {
                self.set_away(true);
                return match self.known.get(&hash) {
                    Some(known) => Ok(Some(known.1.clone())),
                    None => Err(e),
                };
            }
            other => other?,
        };
        self.set_away(false);
        let Some(customer) = found else {
            self.known.remove(&hash);
            return Ok(None);
        };
        let caller = Arc::new(Caller {
            id: customer.id,
            name: customer.name,
            group: customer.group,
        });
        if self.known.len() >= CAPACITY {
            self.known.clear();
        }
        self.known.insert(hash, (clock::now(), caller.clone()));
        Ok(Some(caller))
    }

    fn store_away(&self) -> bool {
        let until = self.store_away.lock().unwrap_or_else(|e| e.into_inner());
        until.is_some_and(|t| Instant::now() < t)
    }

    fn set_away(&self, away: bool) {
        let mut until = self.store_away.lock().unwrap_or_else(|e| e.into_inner());
        *until = away.then(|| Instant::now() + AWAY_TRUST);
    }

    /// The customer as the store has it now, balance included: for the `balance` action.
    pub async fn fresh(
        &self,
        store: &dyn Store,
        key: &str,
    ) -> Result<Option<Customer>, StoreError> {
        let hash = keys::hash(key);
        let found = customer(store, &hash).await;
        self.set_away(matches!(&found, Err(e) if e.is_unavailable()));
        let found = found?;
        if found.is_none() {
            self.known.remove(&hash);
        }
        Ok(found)
    }
}

async fn customer(store: &dyn Store, hash: &KeyHash) -> Result<Option<Customer>, StoreError> {
    Ok(match store.customer_by_key(hash).await? {
        Some((c, stored)) if keys::matches(&stored, hash) && c.enabled => Some(c),
        _ => None,
    })
}
