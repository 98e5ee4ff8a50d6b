//! `balance` and `services`: what the customer holds and what they may buy.

use std::sync::Arc;

use bytes::Bytes;

use super::{Gateway, ReplyBytes, Result};
use crate::auth::Caller;
use crate::catalog::LocalCatalog;
use crate::money;
use crate::protocol::ApiRequest;
use crate::protocol::ProtocolError;
use crate::protocol::reply::{self, Balance};

impl Gateway {
    /// Read now, not remembered: it is the customer's money.
    pub(super) async fn balance(&self, key: &str) -> Result<Bytes> {
        let fresh = self.auth.fresh(self.store.as_ref(), key).await?;
        let customer = fresh.ok_or(ProtocolError::InvalidKey)?;
        Ok(reply::to_bytes(&Balance {
            balance: money::from_units(customer.balance),
            currency: self.cfg.currency.clone(),
        }))
    }

    /// The customer's services listing from `catalog`, compressed if the request allows it.
    pub(super) fn services(
        &self,
        customer: &Caller,
        api: &ApiRequest,
        catalog: Arc<LocalCatalog>,
    ) -> ReplyBytes {
        let hidden = self.cfg.hiding.customer(&customer.group, &customer.name);
        let listing = catalog.reply_for(&customer.group, &hidden);
        match api.accepts_gzip {
            true => ReplyBytes {
                bytes: listing.gzip,
                gzip: true,
            },
            false => listing.json.into(),
        }
    }
}
