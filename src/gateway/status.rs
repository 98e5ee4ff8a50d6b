//! `status`: the orders' state from the status cache, the store, or (when stale) their
//! upstream.

use std::sync::Arc;

use bytes::Bytes;

use super::{Gateway, Result};
use crate::auth::Caller;
use crate::protocol::{Ids, ProtocolError};
use crate::status_cache::{self, Entry};
use crate::sync::{Tracked, now_ms};

impl Gateway {
    /// Answered from the status cache where it can be; orders not confirmed by their
    /// upstream within `status_max_age` are asked about first (one call per upstream), and
    /// only an answer that changes something is written.
    pub(super) async fn status(&self, c: &Caller, ids: &Ids) -> Result<Bytes> {
        let asked = ids.as_slice();
        let started = crate::clock::now();
        let now = now_ms();
        let max_age = self.cfg.status_max_age.as_millis() as i64;
        let many = matches!(ids, Ids::Many(_));
        if let Some(reply) = self
            .statuses
            .answer(c.id, asked, many, started, now, max_age)
        {
            return Ok(reply);
        }
        let mut found: Vec<Option<Arc<Entry>>> = asked
            .iter()
            .map(|&id| self.statuses.get(i64::try_from(id).ok()?, started))
            .collect();
        self.read_missing(c, asked, &mut found).await?;
        self.refresh_stale(c, asked, &mut found, now, max_age)
            .await?;
        hide_others(c, &mut found);
        status_reply(ids, &found)
    }

    /// Asks the upstreams about the caller's `found` orders not confirmed within `max_age`:
    /// an unchanged answer only confirms the cached entry; a changed one is written (by the
    /// syncer, with any refund) and read back into `found`.
    async fn refresh_stale(
        &self,
        c: &Caller,
        asked: &[u64],
        found: &mut [Option<Arc<Entry>>],
        now: i64,
        max_age: i64,
    ) -> Result<()> {
        let stale = stale_orders(c, found, now, max_age);
        if stale.is_empty() {
            return Ok(());
        }
        let mut changed = Vec::new();
        let mut confirmed = Vec::new();
        let mut updates = Vec::new();
        for (t, update) in self.syncer.ask(&stale).await {
            let held = found.iter().flatten().find(|e| e.id == t.id);
            match held {
                Some(e) if e.unchanged_by(&update) => {
                    confirmed.push(self.statuses.confirm(e, now));
                }
                _ => {
                    changed.push(t.id);
                    updates.push((t, update));
                }
            }
        }
        self.syncer.apply_all(updates).await;
        drop(stale);
        for e in confirmed {
            put_in_asked_order(asked, found, e);
        }
        if !changed.is_empty() {
            self.read_statuses(c, &changed, asked, found).await?;
        }
        Ok(())
    }

    /// Over the read limit: the customer's orders as last known, from memory or the store,
    /// without asking an upstream however old; `None` when none of `ids` is theirs.
    pub(super) async fn held_status(&self, c: &Caller, ids: &Ids) -> Result<Option<Bytes>> {
        let asked = ids.as_slice();
        let mut found: Vec<Option<Arc<Entry>>> = asked
            .iter()
            .map(|&id| self.statuses.held(i64::try_from(id).ok()?))
            .collect();
        self.read_missing(c, asked, &mut found).await?;
        hide_others(c, &mut found);
        if found.iter().all(Option::is_none) {
            return Ok(None);
        }
        status_reply(ids, &found).map(Some)
    }

    /// Every one of `ids` as the status cache last held it, without the store (the database is
    /// away); `None` unless the cache holds each one of them for the caller.
    pub(super) fn cached_status(&self, c: &Caller, ids: &Ids) -> Option<Bytes> {
        let found: Vec<Option<Arc<Entry>>> = ids
            .as_slice()
            .iter()
            .map(|&id| self.statuses.held(i64::try_from(id).ok()?))
            .map(|e| e.filter(|e| e.visible_to(c.id)))
            .collect();
        if found.iter().any(Option::is_none) {
            return None;
        }
        status_reply(ids, &found).ok()
    }

    /// Reads the slots of `asked` that nothing was found for from the store.
    async fn read_missing(
        &self,
        c: &Caller,
        asked: &[u64],
        found: &mut [Option<Arc<Entry>>],
    ) -> Result<()> {
        let missing: Vec<i64> = asked
            .iter()
            .zip(found.iter())
            .filter(|(_, e)| e.is_none())
            .filter_map(|(&id, _)| i64::try_from(id).ok())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.read_statuses(c, &missing, asked, found).await
    }

    /// Reads the customer's orders `wanted` from the store into the cache and into the slots
    /// of `asked` they answer.
    async fn read_statuses(
        &self,
        c: &Caller,
        wanted: &[i64],
        asked: &[u64],
        found: &mut [Option<Arc<Entry>>],
    ) -> Result<()> {
        for o in self.store.customer_orders(c.id, wanted).await? {
            put_in_asked_order(asked, found, self.statuses.put(&o));
        }
        Ok(())
    }
}

/// The caller's placed orders among `found` that their upstream has not confirmed within
/// `max_age`, each once.
fn stale_orders<'a>(
    c: &Caller,
    found: &'a [Option<Arc<Entry>>],
    now: i64,
    max_age: i64,
) -> Vec<Tracked<'a>> {
    let mut stale: Vec<Tracked<'_>> = Vec::new();
    for e in found.iter().flatten() {
        if e.visible_to(c.id)
            && e.is_stale(now, max_age)
            && !stale.iter().any(|t| t.id == e.id)
            && let Some(upstream_order) = e.upstream_order.as_deref()
        {
            stale.push(Tracked {
                id: e.id,
                upstream: &e.upstream,
                upstream_order,
            });
        }
    }
    stale
}

/// Empties the slots of orders the customer may not see.
fn hide_others(c: &Caller, found: &mut [Option<Arc<Entry>>]) {
    for slot in found {
        if slot.as_ref().is_some_and(|e| !e.visible_to(c.id)) {
            *slot = None;
        }
    }
}

/// The `status` reply for `ids` from the entries found for each (`None`: not the caller's).
fn status_reply(ids: &Ids, found: &[Option<Arc<Entry>>]) -> Result<Bytes> {
    Ok(match ids {
        Ids::One(_) => found[0]
            .as_ref()
            .ok_or(ProtocolError::IncorrectOrderId)?
            .json
            .clone(),
        Ids::Many(asked) => status_cache::multi_reply(asked, found),
    })
}
/// Puts `entry` into every slot of `asked` that names its order.
fn put_in_asked_order(asked: &[u64], found: &mut [Option<Arc<Entry>>], entry: Arc<Entry>) {
    for (id, slot) in asked.iter().zip(found.iter_mut()) {
        if *id == entry.id as u64 {
            *slot = Some(entry.clone());
        }
    }
}
