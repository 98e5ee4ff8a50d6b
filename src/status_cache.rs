//! Order statuses answered from memory.
//!
//! Panels poll `status` for every open order, often a hundred at a time, and most answers have
//! not changed since the last poll. Each entry keeps what a status reply needs, already
//! serialized, so a poll of fresh orders costs map lookups and copies, not a database read.
//!
//! What this process writes to an order, it forgets here at once. What another process writes
//! (another instance on PostgreSQL, `panelgate order resolve` or `settle`) shows within
//! [`TRUST`]: entries of unfinished orders are read again after that. Final and rejected orders
//! never change (unless they wait for an operator's settlement), so their entries stay until
//! the cache is full.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;
use rustc_hash::FxBuildHasher;

use crate::clock::{self, Instant};
use crate::money;
use crate::protocol::order::Drip;
use crate::protocol::reply::{self, OrderStatus, Remains};
use crate::protocol::{ProtocolError, Status};
use crate::store::{Attention, Millis, Order, OrderState, StatusUpdate};

/// How long a row of an unfinished order, once read, is answered from memory.
pub const TRUST: Duration = Duration::from_secs(1);

/// Entries kept at most; a full cache starts over (statuses are cheap to read again, and a
/// bound keeps the gateway's memory flat however many orders it has seen).
const CAPACITY: usize = 50_000;

/// What a status reply needs of one order.
#[derive(Debug)]
pub struct Entry {
    pub id: i64,
    pub customer_id: i64,
    pub state: OrderState,
    pub status: Status,
    pub remains: Option<i64>,
    pub start_count: Option<u64>,
    /// Drip-feed runs done as the upstream last reported them.
    pub runs_done: Option<u64>,
    pub upstream: Arc<str>,
    pub upstream_order: Option<Arc<str>>,
    /// When the upstream last confirmed this status: the store's `synced_at`, or later if an
    /// upstream answer changed nothing (such answers are not written).
    pub synced_at: Option<Millis>,
    /// Why a person must look at it: a final order waiting for `order settle` may still change.
    pub attention: Option<Attention>,
    /// The single-order `status` reply, serialized.
    pub json: Bytes,
    /// Until when, unless settled, it stands for the store's row: [`TRUST`] after reading it.
    trusted_until: Instant,
}

impl Entry {
    fn new(o: &Order, currency: &str, read_at: Instant) -> Entry {
        Entry {
            id: o.id,
            customer_id: o.customer_id,
            state: o.state,
            status: o.status,
            remains: o.remains,
            start_count: o.start_count,
            runs_done: o.runs_done,
            upstream: o.upstream.as_str().into(),
            upstream_order: o.upstream_order.as_deref().map(Arc::from),
            synced_at: o.synced_at,
            attention: o.attention,
            json: reply::to_bytes(&order_status(o, currency)),
            trusted_until: read_at + TRUST,
        }
    }

    /// Whether it may be answered at `now` without reading the store again.
    fn trusted(&self, now: Instant) -> bool {
        self.settled() || now < self.trusted_until
    }

    /// Whether the customer may see this order's status.
    pub fn visible_to(&self, customer_id: i64) -> bool {
        self.customer_id == customer_id && self.state != OrderState::Rejected
    }

    /// Placed, and not confirmed by its upstream within `max_age`. A `max_age` of zero means
    /// every status asks the upstream: a confirmation from earlier in the same millisecond
    /// does not count as fresh.
    pub fn is_stale(&self, now: Millis, max_age: Millis) -> bool {
        self.state == OrderState::Placed
            && self
                .synced_at
                .is_none_or(|t| max_age == 0 || now - t > max_age)
    }

    /// Whether applying `update` would change nothing a customer sees.
    pub fn unchanged_by(&self, update: &StatusUpdate) -> bool {
        self.status == update.status
            && self.remains == update.remains
            && (update.start_count.is_none() || update.start_count == self.start_count)
            && (update.runs.is_none() || update.runs == self.runs_done)
    }

    /// Whether nothing can change it any more: final or rejected, and not waiting for an
    /// operator's settlement (`panelgate order settle` writes from another process).
    fn settled(&self) -> bool {
        let waiting = matches!(
            self.attention,
            Some(Attention::RefundUnknown | Attention::PartialWithoutRemains)
        );
        matches!(self.state, OrderState::Final | OrderState::Rejected) && !waiting
    }
}

/// A customer's view of an order: what they paid after refunds, and where it stands.
pub fn order_status(o: &Order, currency: &str) -> OrderStatus {
    let remains = match (o.remains, o.status) {
        (_, Status::Partial) if o.state == OrderState::Final => partial_remains(o),
        (Some(n), _) => Remains::Count(n),
        (None, Status::Completed) => Remains::Count(0),
        (None, _) => Remains::Count(o.billed as i64),
    };
    OrderStatus {
        charge: money::from_units(o.charge - o.refunded),
        start_count: o.start_count.unwrap_or(0),
        status: o.status,
        remains,
        currency: currency.to_owned(),
        runs: o.drip.map(|d| runs_done(o, d, remains)),
        interval: o.drip.map(|d| d.interval),
        orders: Vec::new(),
    }
}

/// A drip-feed order's runs done: the upstream's figure where it gave one, otherwise the whole
/// runs the `remains` shown beside it leave delivered (so that the two agree for panel
/// software that reads both), never more than were ordered.
fn runs_done(o: &Order, drip: Drip, remains: Remains) -> u64 {
    match (o.runs_done, remains) {
        (Some(n), _) => n.min(drip.runs),
        (None, Remains::Count(n)) => drip.runs_done(o.billed, n),
        (None, Remains::Unknown) => 0,
    }
}

/// What a final Partial shows as `remains`: what was refunded, in units, since panel
/// software refunds its own user `remains / quantity` of the charge. The upstream's figure
/// where its refund is exactly what we refunded; otherwise (a package, a refund capped by the
/// upstream's share, no `remains` reported, a settlement) the units the refund pays for,
/// rounded down: a package shows 0 unless refunded in full, an unsettled Partial without
/// `remains` shows 0.
fn partial_remains(o: &Order) -> Remains {
    let charge = money::from_units(o.charge);
    if let Some(n) = o.remains.filter(|_| o.billed != 1) {
        let due = money::partial_refund(charge, o.billed, n.max(0).unsigned_abs());
        if money::to_units(due) == Some(o.refunded) {
            return Remains::Count(n);
        }
    }
    if o.charge <= 0 {
        return Remains::Count(0);
    }
    let units = money::from_units(o.refunded) * rust_decimal::Decimal::from(o.billed) / charge;
    let units = rust_decimal::prelude::ToPrimitive::to_i64(&units.floor()).unwrap_or(0);
    Remains::Count(units.clamp(0, i64::try_from(o.billed).unwrap_or(i64::MAX)))
}

pub struct StatusCache {
    currency: String,
    // Keys are our own order ids (only orders read from the store get in), so a fast
    // non-keyed hash is safe here; SipHash was a tenth of a 100-id poll. One lock, taken once
    // per poll: a lock per entry (a sharded map's) was half the cost of answering 100.
    entries: RwLock<HashMap<i64, Arc<Entry>, FxBuildHasher>>,
}

impl StatusCache {
    pub fn new(currency: &str) -> StatusCache {
        StatusCache {
            currency: currency.to_owned(),
            entries: RwLock::default(),
        }
    }

    // No write leaves the map half-changed (each is one call on it), so a panic elsewhere
    // while a guard was held leaves nothing to distrust.
    fn read(&self) -> RwLockReadGuard<'_, HashMap<i64, Arc<Entry>, FxBuildHasher>> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<i64, Arc<Entry>, FxBuildHasher>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry for order `id`, if one is held and still trusted at `now`.
    pub fn get(&self, id: i64, now: Instant) -> Option<Arc<Entry>> {
        self.read().get(&id).filter(|e| e.trusted(now)).cloned()
    }

    /// The entry for order `id` as last read, however long ago: for answers that must not
    /// wait for a fresher one (a customer over their read limit).
    pub fn held(&self, id: i64) -> Option<Arc<Entry>> {
        self.read().get(&id).cloned()
    }

    /// The reply for `ids`, written straight from the held entries, when every one of them is
    /// held, trusted at `now`, the customer's, and fresh from its upstream (not older than
    /// `max_age` at `now_ms`): the common poll. Anything else (`None`) takes the long way.
    pub fn answer(
        &self,
        customer_id: i64,
        ids: &[u64],
        many: bool,
        now: Instant,
        now_ms: Millis,
        max_age: Millis,
    ) -> Option<Bytes> {
        let entries = self.read();
        let usable = |id: u64| {
            let e = entries.get(&i64::try_from(id).ok()?)?;
            (e.trusted(now) && e.visible_to(customer_id) && !e.is_stale(now_ms, max_age))
                .then_some(e)
        };
        if !many {
            return Some(usable(*ids.first()?)?.json.clone());
        }
        let mut out = Vec::with_capacity(ids.len() * 112 + 2);
        out.push(b'{');
        let mut digits = itoa::Buffer::new();
        for (i, &id) in ids.iter().enumerate() {
            write_item(&mut out, &mut digits, i, id, &usable(id)?.json);
        }
        out.push(b'}');
        Some(out.into())
    }

    /// Holds a row just read from the store.
    pub fn put(&self, o: &Order) -> Arc<Entry> {
        let mut entry = Entry::new(o, &self.currency, clock::now());
        let mut entries = self.write();
        // A confirmation held only in memory outlives the re-read of its row.
        if let Some(old) = entries.get(&o.id) {
            entry.synced_at = entry.synced_at.max(old.synced_at);
        }
        let entry = Arc::new(entry);
        // Starting over, the old entries are freed after the lock is let go, not under it.
        let full = (entries.len() >= CAPACITY).then(|| std::mem::take(&mut *entries));
        entries.insert(o.id, entry.clone());
        drop(entries);
        drop(full);
        entry
    }

    /// The upstream confirmed `e`'s status at `now` without changing it.
    pub fn confirm(&self, e: &Entry, now: Millis) -> Arc<Entry> {
        let confirmed = Arc::new(Entry {
            upstream: e.upstream.clone(),
            upstream_order: e.upstream_order.clone(),
            json: e.json.clone(),
            synced_at: Some(now),
            ..*e
        });
        self.write().insert(e.id, confirmed.clone());
        confirmed
    }

    /// This process changed order `id`: the next read goes to the store.
    pub fn forget(&self, id: i64) {
        self.write().remove(&id);
    }
}

/// The multi-order `status` reply: `{"id": status or error, …}` in the order asked, written
/// from the held entries' bytes.
pub fn multi_reply(ids: &[u64], found: &[Option<Arc<Entry>>]) -> Bytes {
    let missing = reply::error_bytes(&ProtocolError::IncorrectOrderId.to_string());
    let len: usize = found
        .iter()
        .map(|e| e.as_ref().map_or(missing.len(), |e| e.json.len()) + 24)
        .sum();
    let mut out = Vec::with_capacity(len + 2);
    out.push(b'{');
    let mut digits = itoa::Buffer::new();
    for (i, (id, entry)) in ids.iter().zip(found).enumerate() {
        let json = entry.as_ref().map_or(&missing[..], |e| &e.json[..]);
        write_item(&mut out, &mut digits, i, *id, json);
    }
    out.push(b'}');
    Bytes::from(out)
}

/// `"id":{…}` of a multi reply, after a comma unless it is the first.
fn write_item(out: &mut Vec<u8>, digits: &mut itoa::Buffer, i: usize, id: u64, json: &[u8]) {
    if i > 0 {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(digits.format(id).as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(json);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::reply::MultiStatus;

    fn order(id: i64, state: OrderState, status: Status) -> Order {
        Order {
            id,
            customer_id: 7,
            customer: "ann".into(),
            service: 1,
            upstream: "alpha".into(),
            upstream_service: 101,
            upstream_order: Some(format!("{}", 900 + id)),
            state,
            status,
            charge: 12_600,
            refunded: 2_000,
            billed: 100,
            remains: Some(40),
            start_count: Some(5),
            cost: None,
            link: None,
            fields: "{}".into(),
            note: None,
            created_at: 0,
            updated_at: 0,
            synced_at: Some(1_000),
            attention: None,
            list_cost: None,
            first_cost: None,
            can_refill: None,
            can_cancel: None,
            dispatch_deadline: None,
            progress_at: None,
            drip: None,
            runs_done: None,
            child_orders: Vec::new(),
        }
    }

    #[test]
    fn the_multi_reply_is_byte_for_byte_what_serde_writes() {
        let cache = StatusCache::new("USD");
        let a = order(1, OrderState::Placed, Status::InProgress);
        let b = order(2, OrderState::Final, Status::Partial);
        let found = vec![Some(cache.put(&a)), None, Some(cache.put(&b))];
        let ids = [1, 3, 2];
        let expected = reply::to_bytes(&MultiStatus(vec![
            (1, Ok(order_status(&a, "USD"))),
            (3, Err("Incorrect order ID".into())),
            (2, Ok(order_status(&b, "USD"))),
        ]));
        assert_eq!(multi_reply(&ids, &found), expected);
        // All held and fresh: the short way writes the same bytes; one missing: no answer.
        let (now, at) = (Instant::now(), 1_000);
        let held = cache.answer(7, &[1, 2], true, now, at, 60_000).unwrap();
        let both = multi_reply(&[1, 2], &[Some(cache.put(&a)), Some(cache.put(&b))]);
        assert_eq!(held, both);
        assert_eq!(cache.answer(7, &ids, true, now, at, 60_000), None);
        assert_eq!(cache.answer(8, &[1], false, now, at, 60_000), None);
        let one = cache.answer(7, &[2], false, now, at, 60_000).unwrap();
        assert_eq!(one, reply::to_bytes(&order_status(&b, "USD")));
        // Stale (confirmed more than max_age ago): the long way asks the upstream.
        assert_eq!(cache.answer(7, &[1], false, now, 100_000, 60_000), None);
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache = StatusCache::new("USD");
        let now = Instant::now();
        for id in 1..=CAPACITY as i64 {
            cache.put(&order(id, OrderState::Placed, Status::InProgress));
        }
        assert!(cache.get(1, now).is_some());
        let next = CAPACITY as i64 + 1;
        cache.put(&order(next, OrderState::Placed, Status::InProgress));
        assert!(
            cache.get(1, now).is_none(),
            "the first entry outlived a full cache"
        );
        assert!(cache.get(next, now).is_some());
        assert_eq!(cache.read().len(), 1);
    }

    #[test]
    fn a_final_partial_shows_what_was_refunded() {
        let remains = |o: &Order| order_status(o, "USD").remains;
        // Per unit, refunded exactly by remains (40 of 100 for 0.126 → 0.0504): as reported.
        let mut o = order(1, OrderState::Final, Status::Partial);
        o.refunded = 5_040;
        assert_eq!(remains(&o), Remains::Count(40));
        // Capped below that by the upstream's share: the units the refund pays for.
        o.refunded = 2_000;
        assert_eq!(remains(&o), Remains::Count(15));
        // No remains reported, nothing refunded yet: 0; settled: what the settlement paid for.
        o.remains = None;
        o.refunded = 0;
        assert_eq!(remains(&o), Remains::Count(0));
        o.refunded = 6_300;
        assert_eq!(remains(&o), Remains::Count(50));
        // A package: 0 unless refunded in full, whatever the upstream said.
        let mut p = order(2, OrderState::Final, Status::Partial);
        (p.billed, p.remains, p.refunded) = (1, Some(1), 9_000);
        assert_eq!(remains(&p), Remains::Count(0));
        p.refunded = p.charge;
        assert_eq!(remains(&p), Remains::Count(1));
        // Still running: the upstream's figure.
        p.state = OrderState::Placed;
        p.status = Status::InProgress;
        assert_eq!(remains(&p), Remains::Count(1));
    }

    #[test]
    fn drip_feed_orders_show_runs_and_interval_and_others_do_not() {
        let json = |o: &Order| {
            String::from_utf8(reply::to_bytes(&order_status(o, "USD")).to_vec()).unwrap()
        };
        let mut o = order(1, OrderState::Placed, Status::InProgress);
        assert!(!json(&o).contains("runs") && !json(&o).contains("interval"));
        // 4 runs of 100, 193 delivered: one whole run done.
        (o.billed, o.remains) = (400, Some(207));
        o.drip = Some(Drip {
            runs: 4,
            interval: 30,
        });
        assert!(
            json(&o).ends_with(r#""remains":"207","currency":"USD","runs":"1","interval":"30"}"#)
        );
        // The upstream's own figure wins, capped at the runs ordered.
        o.runs_done = Some(2);
        assert_eq!(order_status(&o, "USD").runs, Some(2));
        o.runs_done = Some(9);
        assert_eq!(order_status(&o, "USD").runs, Some(4));
        // Not started (no remains yet): none done; Completed without remains: all.
        (o.runs_done, o.remains, o.status) = (None, None, Status::Pending);
        assert_eq!(order_status(&o, "USD").runs, Some(0));
        (o.state, o.status) = (OrderState::Final, Status::Completed);
        assert_eq!(order_status(&o, "USD").runs, Some(4));
        // A final Partial: the runs the remains shown (what the refund paid for) leave done.
        // 12.6 for 400 units; 207 refunded by remains: 12.6 × 207 / 400 = 6.52050.
        (o.status, o.charge, o.remains, o.refunded) =
            (Status::Partial, 1_260_000, Some(207), 652_050);
        assert_eq!(order_status(&o, "USD").remains, Remains::Count(207));
        assert_eq!(order_status(&o, "USD").runs, Some(1));
    }

    #[test]
    fn unfinished_rows_are_trusted_briefly_and_settled_ones_for_good() {
        let cache = StatusCache::new("USD");
        cache.put(&order(1, OrderState::Placed, Status::Pending));
        cache.put(&order(2, OrderState::Final, Status::Completed));
        let now = Instant::now();
        assert!(cache.get(1, now).is_some());
        let later = now + TRUST + Duration::from_millis(1);
        assert!(cache.get(1, later).is_none());
        assert!(cache.get(2, later).is_some());
        cache.forget(2);
        assert!(cache.get(2, later).is_none());
        // Final but waiting for an operator's settlement (from another process): re-read.
        let mut waiting = order(3, OrderState::Final, Status::Partial);
        waiting.attention = Some(Attention::RefundUnknown);
        cache.put(&waiting);
        assert!(cache.get(3, now).is_some());
        assert!(cache.get(3, later).is_none());
    }

    #[test]
    fn a_confirmation_outlives_a_reread_and_only_real_changes_count() {
        let cache = StatusCache::new("USD");
        let o = order(1, OrderState::Placed, Status::InProgress);
        let e = cache.put(&o);
        assert!(e.is_stale(100_000, 30_000));
        let confirmed = cache.confirm(&e, 99_000);
        assert!(!confirmed.is_stale(100_000, 30_000));
        assert!(!cache.put(&o).is_stale(100_000, 30_000));
        // Zero: always asked, even within the millisecond of the last confirmation.
        let just_now = cache.confirm(&e, 100_000);
        assert!(just_now.is_stale(100_000, 0));
        assert!(!just_now.is_stale(100_000, 1));

        let same = StatusUpdate {
            status: Status::InProgress,
            remains: Some(40),
            start_count: Some(5),
            cost: Some(1),
            runs: None,
            child_orders: Vec::new(),
        };
        assert!(e.unchanged_by(&same));
        // A drip-feed's runs done are news too (where the upstream reports them).
        assert!(!e.unchanged_by(&StatusUpdate {
            runs: Some(1),
            ..same.clone()
        }));
        assert!(e.unchanged_by(&StatusUpdate {
            start_count: None,
            ..same.clone()
        }));
        assert!(!e.unchanged_by(&StatusUpdate {
            remains: Some(39),
            ..same.clone()
        }));
        assert!(!e.unchanged_by(&StatusUpdate {
            status: Status::Completed,
            ..same
        }));
    }

    #[test]
    fn others_orders_and_rejected_ones_are_not_shown() {
        let cache = StatusCache::new("USD");
        let e = cache.put(&order(1, OrderState::Placed, Status::Pending));
        assert!(e.visible_to(7) && !e.visible_to(8));
        let r = cache.put(&order(2, OrderState::Rejected, Status::Pending));
        assert!(!r.visible_to(7));
    }
}
