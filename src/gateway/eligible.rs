//! The one check `refill` and `cancel` share: which of the asked orders may go upstream.

use std::collections::HashMap;

use crate::catalog::LocalCatalog;
use crate::protocol::ProtocolError;
use crate::protocol::reply::Item;
use crate::store::{Order, OrderState};

/// A multi action that asks an upstream about placed orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ask {
    Refill,
    Cancel,
}

impl Ask {
    /// Whether the order's service allows this action. For an order placed before its flag
    /// was recorded: what today's catalog says. Newer orders answer from their own record, so
    /// a service that left the catalog (or changed its flags) since does not change what its
    /// orders may ask for.
    fn allowed(self, catalog: &LocalCatalog, o: &Order) -> bool {
        let listed = || catalog.get(o.service).map(|s| &s.listing);
        match self {
            Ask::Refill => o
                .can_refill
                .unwrap_or_else(|| listed().is_some_and(|l| l.refill)),
            Ask::Cancel => o
                .can_cancel
                .unwrap_or_else(|| listed().is_some_and(|l| l.cancel)),
        }
    }

    /// Whether the order is where this action can act on it: refilled once its upstream has
    /// it (placed or final), canceled only while still placed.
    fn ready(self, o: &Order) -> bool {
        o.upstream_order.is_some()
            && match self {
                Ask::Refill => matches!(o.state, OrderState::Placed | OrderState::Final),
                Ask::Cancel => o.state == OrderState::Placed,
            }
    }

    /// Why an order may not ask: it never became an order, its service does not allow the
    /// action, or it is not there yet (or any more).
    fn verdict(self, catalog: &LocalCatalog, o: &Order) -> Result<(), ProtocolError> {
        if o.state == OrderState::Rejected {
            return Err(ProtocolError::IncorrectOrderId);
        }
        let (disabled, not_ready) = match self {
            Ask::Refill => (
                ProtocolError::RefillDisabled,
                ProtocolError::OrderNotCompleted,
            ),
            Ask::Cancel => (
                ProtocolError::CancelDisabled,
                ProtocolError::CancelNotAllowed,
            ),
        };
        if !self.allowed(catalog, o) {
            return Err(disabled);
        }
        if !self.ready(o) {
            return Err(not_ready);
        }
        Ok(())
    }
}

/// The asked ids split: each refused one with its error text, and the eligible orders grouped
/// by their upstream.
pub(super) type Sorted<'a, T> = (HashMap<u64, Item<T>>, HashMap<&'a str, Vec<&'a Order>>);

/// Sorts the caller's `orders` for `ids` into refusals and what goes upstream.
pub(super) fn sort<'a, T>(
    ask: Ask,
    ids: &[u64],
    orders: &'a [Order],
    catalog: &LocalCatalog,
) -> Sorted<'a, T> {
    let mut refused = HashMap::new();
    let mut eligible: HashMap<&str, Vec<&Order>> = HashMap::new();
    for &id in ids {
        let checked = orders
            .iter()
            .find(|o| o.id as u64 == id)
            .ok_or(ProtocolError::IncorrectOrderId)
            .and_then(|o| ask.verdict(catalog, o).map(|()| o));
        match checked {
            Ok(o) => eligible.entry(o.upstream.as_str()).or_default().push(o),
            Err(e) => {
                refused.insert(id, Err(e.to_string()));
            }
        }
    }
    (refused, eligible)
}
