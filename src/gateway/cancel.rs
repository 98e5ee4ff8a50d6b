//! `cancel`: asking an upstream to cancel placed orders. The refund follows when sync sees
//! the order Canceled (or Partial), not here.

use bytes::Bytes;

use super::eligible::{self, Ask};
use super::forward::forward;
use super::{Gateway, Result, local_ids};
use crate::auth::Caller;
use crate::protocol::ProtocolError;
use crate::protocol::reply::{self, Canceled};

impl Gateway {
    /// Asks the orders' upstreams to cancel the eligible ones; each id gets its own answer.
    pub(super) async fn cancel(&self, c: &Caller, ids: &[u64]) -> Result<Bytes> {
        let orders = self.store.customer_orders(c.id, &local_ids(ids)).await?;
        let catalog = self.catalog.get().await;
        let (mut results, eligible) = eligible::sort(Ask::Cancel, ids, &orders, &catalog);
        // A cancel taken upstream is refunded when sync sees the order Canceled (or Partial).
        let answers = forward(&self.upstreams, eligible, "cancel", |u, ids| async move {
            u.cancel(&ids).await.map(|r| r.0)
        })
        .await;
        for (o, answer) in answers {
            results.insert(o.id as u64, answer);
        }
        Ok(reply::to_bytes(&Canceled(
            ids.iter()
                .map(|id| {
                    (
                        *id,
                        results
                            .remove(id)
                            .unwrap_or_else(|| Err(ProtocolError::Unavailable.to_string())),
                    )
                })
                .collect(),
        )))
    }
}
