//! The store's rules, whatever database holds the rows: what a change needs of the row it
//! changes, what an order is refunded, which sign each ledger entry has. Pure functions, so
//! that both backends decide alike and the rules can be tested without a database.

use super::{
    Attention, EntryKind, Millis, Order, OrderState, Result, SharedUpstreamOrder, StatusUpdate,
    StoreError, Units,
};
use crate::money;
use crate::protocol::order::Drip;
use crate::protocol::{RefillStatus, Status};

/// The note [`super::Store::recover_dispatching`] leaves on the orders it marks `Unknown`.
pub const INTERRUPTED_NOTE: &str =
    "interrupted: the process stopped while the upstream add was in flight";

/// A state that the store's own rules make impossible was found: loud in debug builds, an
/// error (never a silent default) in release ones.
pub(super) fn broken(what: String) -> StoreError {
    debug_assert!(false, "store invariant broken: {what}");
    StoreError::Backend(format!("invariant broken: {what}"))
}

/// A value that cannot be stored as it is.
pub(super) fn unstorable(message: String) -> StoreError {
    StoreError::Invalid(message)
}

/// A stored value that does not read back as what it should be.
pub(super) fn undecodable(column: &str, message: String) -> StoreError {
    StoreError::Backend(format!("column {column}: {message}"))
}

/// Database integers are signed 64-bit; ids and counts above `i64::MAX` cannot be stored.
pub(super) fn to_db(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| unstorable(format!("{what} {value} is too large to store")))
}

pub(super) fn opt_to_db(value: Option<u64>, what: &str) -> Result<Option<i64>> {
    value.map(|v| to_db(v, what)).transpose()
}

/// A stored count or id, which is never negative.
pub(super) fn from_db(value: i64, column: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| undecodable(column, format!("negative value {value}")))
}

/// A drip-feed from its stored runs and interval (both set, or it is none).
pub(super) fn drip_from_db(runs: Option<i64>, interval: Option<i64>) -> Option<Drip> {
    Some(Drip {
        runs: u64::try_from(runs?).ok()?,
        interval: u64::try_from(interval?).ok()?,
    })
}

/// Child orders as stored: a JSON list of ids; `None` (keep the last list) when none were listed.
pub(super) fn child_orders_to_db(ids: &[String]) -> Option<String> {
    (!ids.is_empty()).then(|| serde_json::Value::from(ids.to_vec()).to_string())
}

/// Child orders as read back (a list that does not parse reads as none: it is for display).
pub(super) fn child_orders_from_db(text: Option<&str>) -> Vec<String> {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

/// The statuses a refill can still leave.
pub(super) fn open_refill_statuses() -> Vec<&'static str> {
    RefillStatus::ALL
        .into_iter()
        .filter(|s| !s.is_final())
        .map(RefillStatus::as_str)
        .collect()
}

/// Whether a status report moves an order on: its status, or a `remains` or start count it
/// had reported before, changed. A first report of `remains` or start count is not
/// progress: a panel showing a failed order as Pending reports them too.
pub(crate) fn moved(
    status: Status,
    remains: Option<i64>,
    start_count: Option<u64>,
    update: &StatusUpdate,
) -> bool {
    status != update.status
        || remains.is_some_and(|r| update.remains.is_some_and(|u| u != r))
        || start_count.is_some_and(|s| update.start_count.is_some_and(|u| u != s))
}

// ---- state ----

/// Why a change that needs order `id` in state `expected` found it in `found` (`None`: there
/// is no such order).
pub(super) fn not_in_state(id: i64, found: Option<OrderState>, expected: OrderState) -> StoreError {
    match found {
        None => StoreError::NotFound,
        Some(state) if state == expected => broken(format!(
            "order {id} is {} and yet its guarded change matched no row",
            state.as_str()
        )),
        Some(state) => StoreError::Conflict(format!(
            "order {id} is {}, not {}",
            state.as_str(),
            expected.as_str()
        )),
    }
}

/// Whether an order for `charge` may be created for a customer with this balance, floor and
/// switch; refused before anything is written.
pub(super) fn check_order_fits(
    balance: Units,
    credit_limit: Units,
    enabled: bool,
    charge: Units,
) -> Result<()> {
    if !enabled {
        return Err(StoreError::Disabled);
    }
    match balance.checked_sub(charge) {
        Some(after) if after >= -credit_limit => Ok(()),
        _ => Err(StoreError::InsufficientFunds),
    }
}

/// Why `unlink_order` changed nothing on `order` (as it is now).
pub(super) fn cannot_unlink(order: Option<Order>, id: i64) -> StoreError {
    match order {
        None => StoreError::NotFound,
        Some(o) if o.upstream_order.is_none() => {
            StoreError::Conflict(format!("order {id} holds no upstream order"))
        }
        Some(o) if o.state == OrderState::Dispatching => StoreError::Conflict(format!(
            "order {id} is {}: wait until its dispatch ends",
            o.state.as_str()
        )),
        Some(o) => broken(format!(
            "order {id} is {} with an upstream order and yet was not unlinked",
            o.state.as_str()
        )),
    }
}

/// The refusal naming the order that already holds an upstream order.
pub(super) fn already_held(upstream: &str, upstream_order: &str, holder: i64) -> StoreError {
    StoreError::Conflict(format!(
        "upstream order {upstream_order} at {upstream} is already order {holder}'s: one \
         upstream order follows one local order (check that this is not the customer's resend \
         of order {holder})"
    ))
}

/// Groups rows of (upstream, upstream order, local order), sorted by the first two.
pub(super) fn group_shared(rows: Vec<(String, String, i64)>) -> Vec<SharedUpstreamOrder> {
    let mut shared: Vec<SharedUpstreamOrder> = Vec::new();
    for (upstream, upstream_order, id) in rows {
        match shared.last_mut() {
            Some(s) if s.upstream == upstream && s.upstream_order == upstream_order => {
                s.orders.push(id)
            }
            _ => shared.push(SharedUpstreamOrder {
                upstream,
                upstream_order,
                orders: vec![id],
            }),
        }
    }
    shared
}

// ---- money ----

/// What an order's row holds that its refund depends on.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Books {
    pub charge: Units,
    pub refunded: Units,
    pub billed: u64,
    pub first_cost: Option<Units>,
    pub list_cost: Option<Units>,
}

impl Books {
    /// The upstream's own cost for the order, the base of the share it gives back: the
    /// first charge it reported, or (never reported) its list price at placement.
    fn initial_cost(&self) -> Option<Units> {
        self.first_cost.filter(|&c| c > 0).or(self.list_cost)
    }

    /// What may still be refunded: the charge less what was refunded already.
    pub fn refundable(&self) -> Units {
        self.charge.saturating_sub(self.refunded).max(0)
    }

    /// Checks that `refund` may be added to these books, as every refund must be: not
    /// negative, and not above what is still refundable.
    pub fn assert_refund(&self, refund: Units) -> Result<()> {
        if (0..=self.refundable()).contains(&refund) {
            return Ok(());
        }
        Err(broken(format!(
            "a refund of {refund} on a charge of {} with {} refunded",
            self.charge, self.refunded
        )))
    }
}

/// Whether order `id` (its books and mark as read under the write lock) may be settled with
/// `refund`: it must carry a settleable mark (a conflict otherwise), and the refund must be
/// within what is left (invalid otherwise).
pub(super) fn check_settle(
    id: i64,
    books: &Books,
    mark: Option<Attention>,
    refund: Units,
) -> Result<()> {
    if !mark.is_some_and(|m| Attention::SETTLEABLE.contains(&m)) {
        return Err(StoreError::Conflict(format!(
            "order {id} is not waiting for a refund decision (attention: {}); \
             only refund_unknown and partial_without_remains orders are settled",
            mark.map_or("none", Attention::as_str)
        )));
    }
    let left = books.refundable();
    if refund < 0 || refund > left {
        return Err(StoreError::Invalid(format!(
            "order {id}: a refund of {} is above what is still refundable ({} of {} charged)",
            money::format(money::from_units(refund)),
            money::format(money::from_units(left)),
            money::format(money::from_units(books.charge)),
        )));
    }
    // A marked order got no refund entry (its automatic refund was withheld), so the one
    // refund entry an order may have is still free; if not, say so rather than hit the index.
    if refund > 0 && books.refunded > 0 {
        return Err(StoreError::Conflict(format!(
            "order {id} was already refunded {}; settle refuses a second refund",
            money::format(money::from_units(books.refunded))
        )));
    }
    Ok(())
}

/// The ledger note of a settlement: who or why, as the operator gave it.
pub(super) fn settle_note(note: &str) -> String {
    format!("settled: {}", note.trim())
}

/// The refund a final `status` is due on an order, and the mark it gets if a person must
/// settle it: `Partial` as [`money::partial_settlement`] says (the upstream's share of its
/// `initial` cost given back, `last_cost` being what it charges at the end), `Canceled`
/// everything still held, `Completed` nothing. Never more than `charge - refunded`.
pub(super) fn refund_due(
    status: Status,
    books: &Books,
    remains: Option<i64>,
    last_cost: Option<Units>,
) -> Result<(Units, Option<Attention>)> {
    let left = books.refundable();
    let (due, mark) = match status {
        Status::Partial => {
            let share = money::upstream_share(
                books.initial_cost().map(money::from_units),
                last_cost.map(money::from_units),
            );
            let charge = money::from_units(books.charge);
            match money::partial_settlement(charge, books.billed, remains, share) {
                Ok(refund) => (
                    money::to_units(refund)
                        .ok_or_else(|| broken(format!("refund {refund} is not a whole unit")))?,
                    None,
                ),
                Err(money::Withheld::RefundUnknown) => (0, Some(Attention::RefundUnknown)),
                Err(money::Withheld::NoRemains) => (0, Some(Attention::PartialWithoutRemains)),
            }
        }
        Status::Canceled => (left, None),
        Status::Completed | Status::Pending | Status::InProgress | Status::Processing => (0, None),
    };
    Ok((due.clamp(0, left), mark))
}

/// One ledger entry about to be written, with the balance change it records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    pub customer_id: i64,
    /// Signed as [`super::LedgerEntry::amount`].
    pub amount: Units,
    pub kind: EntryKind,
    pub order_id: Option<i64>,
    pub note: Option<&'a str>,
    pub now: Millis,
}

impl Entry<'_> {
    /// The operator's credit (positive) or debit (negative) of `amount`.
    pub fn adjustment(
        customer_id: i64,
        amount: Units,
        note: Option<&str>,
        now: Millis,
    ) -> Entry<'_> {
        let kind = if amount > 0 {
            EntryKind::Credit
        } else {
            EntryKind::Debit
        };
        Entry {
            customer_id,
            amount,
            kind,
            order_id: None,
            note,
            now,
        }
    }

    /// The balance after this entry, refused below the floor when money goes out. The sign
    /// of each kind is fixed: money in is never written as a charge, nor out as a refund.
    pub fn apply(&self, balance: Units, credit_limit: Units) -> Result<Units> {
        let signed = match self.kind {
            EntryKind::Credit | EntryKind::Release | EntryKind::Refund => self.amount >= 0,
            EntryKind::Debit | EntryKind::Charge => self.amount <= 0,
        };
        if !signed {
            return Err(broken(format!(
                "a {} entry of {}",
                self.kind.as_str(),
                self.amount
            )));
        }
        let after = balance
            .checked_add(self.amount)
            .ok_or_else(|| unstorable(format!("balance {balance} + {} overflows", self.amount)))?;
        if self.amount < 0 && after < -credit_limit {
            return Err(StoreError::InsufficientFunds);
        }
        Ok(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: Units = 100_000;

    fn due(
        status: Status,
        charge: Units,
        refunded: Units,
        billed: u64,
        remains: Option<i64>,
    ) -> Units {
        let books = Books {
            charge,
            refunded,
            billed,
            ..Books::default()
        };
        refund_due(status, &books, remains, None).unwrap().0
    }

    #[test]
    fn refunds_round_down_and_never_exceed_what_is_left() {
        use Status::*;
        // 157 billed for 0.17663, 100 left: 0.112500… → 0.1125.
        assert_eq!(due(Partial, 17_663, 0, 157, Some(100)), 11_250);
        // Unreported or negative remains: nothing is known to be undelivered.
        assert_eq!(due(Partial, ONE, 0, 1000, None), 0);
        assert_eq!(due(Partial, ONE, 0, 1000, Some(-20)), 0);
        // More remains than billed: at most the whole charge.
        assert_eq!(due(Partial, ONE, 0, 1000, Some(5000)), ONE);
        // One unit over three: a third of 0.00001 rounds down to nothing.
        assert_eq!(due(Partial, 1, 0, 3, Some(1)), 0);
        // Canceled gives back what is still held; never more than the charge.
        assert_eq!(due(Canceled, ONE, 0, 1000, Some(0)), ONE);
        assert_eq!(due(Canceled, ONE, 40_000, 1000, None), 60_000);
        assert_eq!(due(Partial, ONE, 90_000, 1000, Some(500)), 10_000);
        assert_eq!(due(Completed, ONE, 0, 1000, Some(500)), 0);
        assert_eq!(due(Canceled, 0, 0, 0, None), 0);
        // Refunded above the charge (a broken row): nothing more, never a negative refund.
        assert_eq!(due(Canceled, ONE, 2 * ONE, 1000, None), 0);
    }

    #[test]
    fn partial_refunds_follow_the_upstreams_charge() {
        use Status::*;
        let package = Books {
            charge: 3 * ONE,
            billed: 1,
            first_cost: Some(2 * ONE),
            list_cost: Some(ONE),
            ..Books::default()
        };
        // First reported cost 2, final 0.5: three quarters given back.
        let refund = refund_due(Partial, &package, Some(1), Some(ONE / 2)).unwrap();
        assert_eq!(refund, (225_000, None));
        // Never reported while running: the list cost is the base.
        let unseen = Books {
            first_cost: None,
            ..package
        };
        let refund = refund_due(Partial, &unseen, Some(1), Some(ONE / 4)).unwrap();
        assert_eq!(refund, (225_000, None));
        // No usable final charge: nothing, and a person settles it.
        for last in [None, Some(0)] {
            let refund = refund_due(Partial, &package, Some(1), last).unwrap();
            assert_eq!(refund, (0, Some(Attention::RefundUnknown)));
        }
        // Per unit: remains, capped by the share; no remains: nothing, marked.
        let per_unit = Books {
            charge: ONE,
            billed: 1000,
            first_cost: Some(ONE),
            ..Books::default()
        };
        let capped = refund_due(Partial, &per_unit, Some(800), Some(ONE / 2)).unwrap();
        assert_eq!(capped, (ONE / 2, None));
        let unmarked = refund_due(Partial, &per_unit, None, Some(ONE / 2)).unwrap();
        assert_eq!(unmarked, (0, Some(Attention::PartialWithoutRemains)));
        assert_eq!(
            refund_due(Canceled, &package, None, None).unwrap(),
            (3 * ONE, None)
        );
    }

    #[test]
    fn a_settlement_needs_a_mark_and_stays_within_the_charge() {
        let books = Books {
            charge: ONE,
            ..Books::default()
        };
        let marked = Some(Attention::RefundUnknown);
        assert!(check_settle(7, &books, marked, ONE).is_ok());
        assert!(check_settle(7, &books, marked, 0).is_ok());
        let over = check_settle(7, &books, marked, ONE + 1);
        assert!(matches!(over, Err(StoreError::Invalid(_))), "{over:?}");
        let negative = check_settle(7, &books, marked, -1);
        assert!(
            matches!(negative, Err(StoreError::Invalid(_))),
            "{negative:?}"
        );
        for mark in [
            None,
            Some(Attention::Stuck),
            Some(Attention::UnknownOutcome),
        ] {
            let refused = check_settle(7, &books, mark, 1);
            assert!(
                matches!(refused, Err(StoreError::Conflict(_))),
                "{refused:?}"
            );
        }
        let refunded = Books {
            refunded: 1,
            ..books
        };
        let again = check_settle(7, &refunded, marked, 1);
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    }

    #[test]
    fn a_change_in_the_wrong_state_is_a_conflict_and_a_missing_order_is_not_found() {
        use OrderState::*;
        assert!(matches!(
            not_in_state(3, None, Placed),
            StoreError::NotFound
        ));
        let StoreError::Conflict(text) = not_in_state(3, Some(Final), Placed) else {
            panic!("not a conflict");
        };
        assert_eq!(text, "order 3 is final, not placed");
    }

    #[test]
    fn an_order_fits_within_the_credit_limit_of_an_enabled_customer() {
        assert!(check_order_fits(ONE, 0, true, ONE).is_ok());
        assert!(check_order_fits(0, ONE, true, ONE).is_ok());
        assert!(matches!(
            check_order_fits(ONE, 0, true, ONE + 1),
            Err(StoreError::InsufficientFunds)
        ));
        assert!(matches!(
            check_order_fits(i64::MIN, 0, true, 1),
            Err(StoreError::InsufficientFunds)
        ));
        assert!(matches!(
            check_order_fits(ONE, 0, false, 1),
            Err(StoreError::Disabled)
        ));
    }

    #[test]
    fn entries_move_the_balance_in_their_kinds_direction_down_to_the_floor() {
        let entry = |amount, kind| Entry {
            customer_id: 1,
            amount,
            kind,
            order_id: None,
            note: None,
            now: 0,
        };
        use EntryKind::*;
        assert_eq!(entry(ONE, Refund).apply(0, 0).unwrap(), ONE);
        assert_eq!(entry(-ONE, Charge).apply(0, ONE).unwrap(), -ONE);
        assert_eq!(entry(0, Charge).apply(0, 0).unwrap(), 0);
        assert!(matches!(
            entry(-ONE, Debit).apply(0, ONE - 1),
            Err(StoreError::InsufficientFunds)
        ));
        assert!(matches!(
            entry(1, Credit).apply(i64::MAX, 0),
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(Entry::adjustment(1, -5, None, 0).kind, Debit);
        assert_eq!(Entry::adjustment(1, 5, None, 0).kind, Credit);
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "invariant"))]
    fn an_entry_of_the_wrong_sign_is_refused() {
        let refund = Entry {
            customer_id: 1,
            amount: -1,
            kind: EntryKind::Refund,
            order_id: Some(1),
            note: None,
            now: 0,
        };
        assert!(matches!(refund.apply(0, 0), Err(StoreError::Backend(_))));
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "invariant"))]
    fn a_refund_above_what_is_left_is_refused() {
        let books = Books {
            charge: ONE,
            refunded: ONE / 2,
            ..Books::default()
        };
        assert!(books.assert_refund(ONE / 2).is_ok());
        assert!(matches!(
            books.assert_refund(ONE / 2 + 1),
            Err(StoreError::Backend(_))
        ));
    }

    #[test]
    fn shared_upstream_orders_are_grouped() {
        let rows = vec![
            ("a".to_owned(), "1".to_owned(), 3),
            ("a".to_owned(), "1".to_owned(), 5),
            ("b".to_owned(), "1".to_owned(), 4),
            ("b".to_owned(), "1".to_owned(), 6),
        ];
        let shared = group_shared(rows);
        assert_eq!(shared.len(), 2);
        assert_eq!(
            (shared[0].upstream.as_str(), &shared[0].orders),
            ("a", &vec![3, 5])
        );
        assert_eq!(shared[1].orders, vec![4, 6]);
    }
}
