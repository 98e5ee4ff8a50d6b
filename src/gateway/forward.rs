//! Forwarding a multi action (refill, cancel) to the upstreams that hold the orders, and
//! keeping their order ids out of what the customer reads back.

use std::collections::HashMap;
use std::sync::Arc;

use crate::protocol::reply::Item;
use crate::protocol::{MAX_IDS, ProtocolError};
use crate::store::Order;
use crate::upstream::{CallError, Upstream, Upstreams};

/// Sends one multi action (refill, cancel) for `eligible` orders to their upstreams, one call
/// per upstream per ≤100 ids, and returns each order's answer: the upstream's item, its refusal
/// text (with our order id in place of theirs), or the neutral unavailability error when the
/// call failed or left the order out.
pub(super) async fn forward<'a, T, F, Fut>(
    upstreams: &Upstreams,
    eligible: HashMap<&str, Vec<&'a Order>>,
    action: &'static str,
    call: F,
) -> Vec<(&'a Order, Item<T>)>
where
    F: Fn(Arc<Upstream>, Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<(String, Item<T>)>, CallError>>,
{
    let mut out = Vec::new();
    for (name, orders) in eligible {
        let Some(upstream) = upstreams.get(name) else {
            continue;
        };
        for chunk in orders.chunks(MAX_IDS) {
            let ids: Vec<String> = chunk
                .iter()
                .filter_map(|o| o.upstream_order.clone())
                .collect();
            let mut answered = match call(upstream.clone(), ids).await {
                Ok(items) => items,
                Err(e) => {
                    tracing::warn!(upstream = name, action, error = %e, "upstream call failed");
                    Vec::new()
                }
            };
            for &o in chunk {
                let item = answered
                    .iter()
                    .position(|(uid, _)| Some(uid) == o.upstream_order.as_ref())
                    .map(|i| answered.swap_remove(i).1);
                let answer = match item {
                    Some(Ok(value)) => Ok(value),
                    Some(Err(text)) => Err(match &o.upstream_order {
                        Some(theirs) => scrub(&text, theirs, &o.id.to_string()),
                        None => text,
                    }),
                    None => Err(ProtocolError::Unavailable.to_string()),
                };
                out.push((o, answer));
            }
        }
    }
    out
}
/// An upstream's refusal text about one order, with its order id replaced by ours so that
/// upstream ids never leak. Only whole tokens that name the order are replaced (after
/// "order", "ID", "#", or opening the text): "Refill is available 1 time in 10 days" keeps
/// its numbers whatever the order's id.
pub fn scrub(text: &str, theirs: &str, ours: &str) -> String {
    let is_token = |c: char| c.is_alphanumeric() || c == '-' || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| is_token(c)) {
        let len = rest[start..]
            .find(|c: char| !is_token(c))
            .unwrap_or(rest.len() - start);
        let token = &rest[start..start + len];
        let before = &text[..text.len() - rest.len() + start];
        out.push_str(&rest[..start]);
        out.push_str(if token == theirs && names_an_order(before) {
            ours
        } else {
            token
        });
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

/// Whether the text just before a token introduces an order id: "order 5", "Order ID: 5",
/// "orders #5", "#5", or nothing at all ("5: cannot be refilled").
fn names_an_order(before: &str) -> bool {
    let trimmed = before.trim_end_matches([' ', ':', '=', '\t']);
    if trimmed.ends_with(['#', '№']) || trimmed.is_empty() {
        return true;
    }
    let word: String = trimmed
        .rsplit(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default()
        .to_lowercase();
    matches!(
        word.as_str(),
        "order" | "orders" | "id" | "ids" | "order_id" | "orderid"
    )
}
#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn scrub_replaces_only_whole_tokens_that_name_the_order() {
        let cases = [
            // The example: the numbers are not the order.
            (
                "Refill is available 1 time in 10 days",
                "1",
                "7",
                "Refill is available 1 time in 10 days",
            ),
            (
                "Order 1 is not completed",
                "1",
                "7",
                "Order 7 is not completed",
            ),
            (
                "order #1: refill in 10 days",
                "1",
                "7",
                "order #7: refill in 10 days",
            ),
            (
                "Order ID: 23501 can't be refilled",
                "23501",
                "9",
                "Order ID: 9 can't be refilled",
            ),
            ("23501: not completed", "23501", "9", "9: not completed"),
            // Part of a longer token is another token.
            ("Order 123501 unknown", "23501", "9", "Order 123501 unknown"),
            // Text ids.
            ("order ab-12 is done", "ab-12", "4", "order 4 is done"),
            ("no id here", "5", "4", "no id here"),
        ];
        for (text, theirs, ours, want) in cases {
            assert_eq!(scrub(text, theirs, ours), want, "{text}");
        }
    }
}
