//! The SMM panel API v2 wire format, shared by both sides of panelgate: the server it is to
//! downstream clients and the client it is to upstream panels.
//!
//! - [`params`]: request bodies and query strings in every shape real peers send;
//! - [`request`]: typed, strictly validated actions;
//! - [`order`]: the `add` fields of every service type and what they bill;
//! - [`reply`]: reply shapes, serialized exactly as panels send them;
//! - [`service`], [`status`]: the catalog entry and status vocabularies;
//! - [`lenient`]: the tolerant reader for whatever upstream panels actually answer.

pub mod lenient;
pub mod order;
pub mod params;
pub mod reply;
pub mod request;
pub mod service;
pub mod status;

pub use params::Params;
pub use request::{Action, ApiRequest, Ids};
pub use service::{Service, ServiceType};
pub use status::{RefillStatus, Status};

/// Most ids one multi call may carry.
pub const MAX_IDS: usize = 100;

impl ProtocolError {
    /// A short, fixed name for metrics labels and logs.
    pub fn label(&self) -> &'static str {
        use ProtocolError as E;
        match self {
            E::IncorrectRequest | E::UnsupportedBody => "incorrect_request",
            E::BodyTooLarge => "body_too_large",
            E::InvalidKey => "invalid_key",
            E::IncorrectServiceId => "incorrect_service",
            E::IncorrectOrderId | E::IncorrectRefillId | E::RefillNotFound => "incorrect_id",
            E::TooManyIds => "too_many_ids",
            E::NotEnoughFunds => "not_enough_funds",
            E::QuantityBelowMin(_) | E::QuantityAboveMax(_) => "quantity_limits",
            E::Missing(_) | E::Invalid(_) | E::DripfeedIncomplete | E::DripfeedDisabled => {
                "invalid_order"
            }
            E::RefillDisabled | E::RefillNotCompleted | E::OrderNotCompleted => "refill_refused",
            E::CancelDisabled | E::CancelNotAllowed => "cancel_refused",
            E::ActiveOrderWithLink => "link_duplicate",
            E::Unavailable => "unavailable",
            E::Internal => "internal",
            E::TooManyRequests(_) => "rate_limited",
            E::TooManyKeyAttempts(_) => "key_attempts_limited",
            E::Upstream(_) => "upstream_refused",
        }
    }
}

/// A wait in whole seconds, as a person would write it: "1 second", "2 seconds".
struct Seconds(u64);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            1 => f.write_str("1 second"),
            n => write!(f, "{n} seconds"),
        }
    }
}

/// Everything a request can be refused for. The `Display` text is what the client receives in
/// `{"error": …}`; the error texts of API v2 are kept to the letter because clients match them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("Incorrect request")]
    IncorrectRequest,
    #[error(
        "Incorrect request: multipart/form-data is not supported, send application/x-www-form-urlencoded or JSON"
    )]
    UnsupportedBody,
    #[error("Request body too large")]
    BodyTooLarge,
    #[error("Invalid API key")]
    InvalidKey,
    #[error("Incorrect service ID")]
    IncorrectServiceId,
    #[error("Incorrect order ID")]
    IncorrectOrderId,
    #[error("Incorrect refill ID")]
    IncorrectRefillId,
    #[error("Refill not found")]
    RefillNotFound,
    #[error("Too many IDs: at most 100 per request")]
    TooManyIds,
    #[error("Not enough funds on balance")]
    NotEnoughFunds,
    #[error("Quantity less than minimal {0}")]
    QuantityBelowMin(u64),
    #[error("Quantity more than maximum {0}")]
    QuantityAboveMax(u64),
    #[error("Missing parameter: {0}")]
    Missing(&'static str),
    #[error("Incorrect {0}")]
    Invalid(&'static str),
    #[error("Drip-feed needs both runs and interval")]
    DripfeedIncomplete,
    #[error("Drip-feed is disabled for this service")]
    DripfeedDisabled,
    #[error("Refill is disabled for this service")]
    RefillDisabled,
    #[error("The order is not completed yet")]
    OrderNotCompleted,
    #[error("The refill task is not completed for this order")]
    RefillNotCompleted,
    #[error("Cancel is disabled for this service")]
    CancelDisabled,
    #[error("The order cannot be canceled")]
    CancelNotAllowed,
    #[error("You have active order with this link. Please wait until order being completed.")]
    ActiveOrderWithLink,
    /// An upstream cannot take the order now (down, out of funds, misconfigured): neutral by
    /// design, the details go to the operator's log.
    #[error("Service is temporarily unavailable, please try again later")]
    Unavailable,
    #[error("Internal error, please try again later")]
    Internal,
    /// The customer's rate limit is spent; the value is the seconds to wait.
    #[error("Too many requests, retry in {}", Seconds(*.0))]
    TooManyRequests(u64),
    /// Too many failed key attempts from one address.
    #[error("Too many failed API key attempts, retry in {}", Seconds(*.0))]
    TooManyKeyAttempts(u64),
    /// An upstream's own refusal text, passed through where it means something to the
    /// customer (refill and cancel refusals).
    #[error("{0}")]
    Upstream(String),
}

#[cfg(test)]
mod tests {
    use super::ProtocolError;

    #[test]
    fn waits_are_worded_in_the_singular_and_the_plural() {
        for (e, text) in [
            (
                ProtocolError::TooManyRequests(1),
                "Too many requests, retry in 1 second",
            ),
            (
                ProtocolError::TooManyRequests(2),
                "Too many requests, retry in 2 seconds",
            ),
            (
                ProtocolError::TooManyKeyAttempts(1),
                "Too many failed API key attempts, retry in 1 second",
            ),
            (
                ProtocolError::TooManyKeyAttempts(60),
                "Too many failed API key attempts, retry in 60 seconds",
            ),
        ] {
            assert_eq!(e.to_string(), text);
        }
    }
}
