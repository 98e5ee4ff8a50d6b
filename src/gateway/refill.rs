//! `refill` and `refill_status`: asking an upstream to refill placed orders, and following
//! the refills it took.

use bytes::Bytes;

use super::eligible::{self, Ask};
use super::forward::forward;
use super::{Gateway, Result, local_ids};
use crate::auth::Caller;
use crate::protocol::reply::{self, MultiRefill, MultiRefillStatus, RefillCreated, RefillState};
use crate::protocol::{Ids, ProtocolError};
use crate::store::Refill;
use crate::sync::now_ms;

impl Gateway {
    /// Asks the orders' upstreams to refill the eligible ones, and records each refill taken.
    pub(super) async fn refill(&self, c: &Caller, ids: &Ids) -> Result<Bytes> {
        let orders = self
            .store
            .customer_orders(c.id, &local_ids(ids.as_slice()))
            .await?;
        let catalog = self.catalog.get().await;
        let (mut results, eligible) =
            eligible::sort(Ask::Refill, ids.as_slice(), &orders, &catalog);
        let answers = forward(&self.upstreams, eligible, "refill", |u, ids| async move {
            u.refill(&ids).await.map(|r| r.0)
        })
        .await;
        for (o, answer) in answers {
            let result = match answer {
                Ok(upstream_refill) => {
                    let refill = self
                        .store
                        .create_refill(o, upstream_refill, now_ms())
                        .await?;
                    Ok(refill.id as u64)
                }
                Err(text) => Err(text),
            };
            results.insert(o.id as u64, result);
        }
        let mut take = |id: &u64| {
            results
                .remove(id)
                .unwrap_or_else(|| Err(ProtocolError::Unavailable.to_string()))
        };
        Ok(match ids {
            Ids::One(id) => match take(id) {
                Ok(refill) => reply::to_bytes(&RefillCreated { refill }),
                Err(text) => return Err(ProtocolError::Upstream(text).into()),
            },
            Ids::Many(list) => reply::to_bytes(&MultiRefill(
                list.iter().map(|id| (*id, take(id))).collect(),
            )),
        })
    }

    /// The caller's refills, asked about again at their upstream when not final and older
    /// than `status_max_age`.
    pub(super) async fn refill_status(&self, c: &Caller, ids: &Ids) -> Result<Bytes> {
        let wanted = local_ids(ids.as_slice());
        let mut refills = self.store.customer_refills(c.id, &wanted).await?;
        let max_age = self.cfg.status_max_age.as_millis() as i64;
        let now = now_ms();
        let stale: Vec<_> = refills
            .iter()
            .filter(|r| !r.status.is_final() && r.synced_at.is_none_or(|t| now - t > max_age))
            .collect();
        if !stale.is_empty() {
            self.syncer.refresh_refills(&stale).await;
            refills = self.store.customer_refills(c.id, &wanted).await?;
        }
        refill_status_reply(ids, &refills)
    }

    /// Over the read limit: the customer's refills as the store has them, without asking an
    /// upstream; `None` when none of `ids` is theirs.
    pub(super) async fn held_refill_status(&self, c: &Caller, ids: &Ids) -> Result<Option<Bytes>> {
        let refills = self
            .store
            .customer_refills(c.id, &local_ids(ids.as_slice()))
            .await?;
        if refills.is_empty() {
            return Ok(None);
        }
        refill_status_reply(ids, &refills).map(Some)
    }
}

/// The `refill_status` reply for `ids` from the caller's `refills` among them.
fn refill_status_reply(ids: &Ids, refills: &[Refill]) -> Result<Bytes> {
    let status_of = |id: &u64| {
        refills
            .iter()
            .find(|r| r.id as u64 == *id)
            .map(|r| r.status)
    };
    Ok(match ids {
        Ids::One(id) => reply::to_bytes(&RefillState {
            status: status_of(id).ok_or(ProtocolError::RefillNotFound)?,
        }),
        Ids::Many(list) => reply::to_bytes(&MultiRefillStatus(
            list.iter()
                .map(|id| {
                    (
                        *id,
                        status_of(id).ok_or_else(|| ProtocolError::RefillNotFound.to_string()),
                    )
                })
                .collect(),
        )),
    })
}
