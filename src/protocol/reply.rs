//! Reply shapes, serialized exactly as provider panels send them: field order, and string vs
//! number per field. Where a multi reply carries a per-item error, the item holds the error's
//! text; the same types come back out of [`super::lenient`], so what we send and what we read
//! are one vocabulary.

use bytes::Bytes;
use rust_decimal::Decimal;
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

use super::service::as_string;
use super::{RefillStatus, Status};
use crate::money;

/// A per-item result in a multi reply: the value, or the error text shown in its place.
pub type Item<T> = Result<T, String>;

/// `{"error": "…"}`: every refusal, whole-request or per item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorReply {
    pub error: String,
}

/// `{"order": 23501}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Added {
    pub order: u64,
}

/// `remains`: a count (negative on over-delivery) or, from some panels, `"Unknown"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remains {
    Count(i64),
    Unknown,
}

impl Serialize for Remains {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Remains::Count(n) => s.collect_str(n),
            Remains::Unknown => s.serialize_str("Unknown"),
        }
    }
}

/// One order's status: `{"charge":"0.27819","start_count":"3572","status":"Partial","remains":"157","currency":"USD"}`.
/// A drip-feed order adds `"runs"` (runs done so far) and `"interval"` (minutes), both
/// strings; other orders carry neither key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderStatus {
    #[serde(serialize_with = "money_string")]
    pub charge: Decimal,
    #[serde(serialize_with = "as_string")]
    pub start_count: u64,
    pub status: Status,
    pub remains: Remains,
    pub currency: String,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_string")]
    pub runs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_string")]
    pub interval: Option<u64>,
    /// The child orders an upstream lists for a drip-feed order, by its ids. Kept for the
    /// operator and never sent: they are the upstream's ids, and panels poll each child as an
    /// order of its own, which ours are not (docs/operations.md, "Drip-feed orders").
    #[serde(skip)]
    pub orders: Vec<String>,
}

/// Multi-status: an object keyed by order id, in the order asked, errors in place of values.
/// Ours are keyed by our numeric ids; an upstream's by its ids, which are text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiStatus<Id = u64>(pub Vec<(Id, Item<OrderStatus>)>);

impl<Id: std::fmt::Display> Serialize for MultiStatus<Id> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (id, item) in &self.0 {
            match item {
                Ok(status) => map.serialize_entry(&id.to_string(), status)?,
                Err(error) => map.serialize_entry(&id.to_string(), &ErrorRef(error))?,
            }
        }
        map.end()
    }
}

/// `{"refill": "1"}`: a string, unlike the multi form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RefillCreated {
    #[serde(serialize_with = "as_string")]
    pub refill: u64,
}

/// `[{"order":1,"refill":1},{"order":3,"refill":{"error":"Incorrect order ID"}}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiRefill<Id = u64>(pub Vec<(Id, Item<u64>)>);

impl<Id: Serialize> Serialize for MultiRefill<Id> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(order, item)| Pair {
            id_name: "order",
            id: order,
            value_name: "refill",
            value: item.as_ref().map_err(|e| ErrorRef(e)),
        }))
    }
}

/// `{"status": "Completed"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RefillState {
    pub status: RefillStatus,
}

/// `[{"refill":1,"status":"Completed"},{"refill":3,"status":{"error":"Refill not found"}}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiRefillStatus(pub Vec<(u64, Item<RefillStatus>)>);

impl Serialize for MultiRefillStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(refill, item)| Pair {
            id_name: "refill",
            id: refill,
            value_name: "status",
            value: item.as_ref().map_err(|e| ErrorRef(e)),
        }))
    }
}

/// `[{"order":9,"cancel":{"error":"Incorrect order ID"}},{"order":2,"cancel":1}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canceled<Id = u64>(pub Vec<(Id, Item<()>)>);

impl<Id: Serialize> Serialize for Canceled<Id> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(order, item)| Pair {
            id_name: "order",
            id: order,
            value_name: "cancel",
            value: item.as_ref().map(|()| 1).map_err(|e| ErrorRef(e)),
        }))
    }
}

/// `{"balance": "100.84292", "currency": "USD"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    #[serde(serialize_with = "money_string")]
    pub balance: Decimal,
    pub currency: String,
}

/// Serializes a reply to the bytes sent on the wire.
pub fn to_bytes<T: Serialize + ?Sized>(reply: &T) -> Bytes {
    match serde_json::to_vec(reply) {
        Ok(bytes) => Bytes::from(bytes),
        // Only a failing Serialize impl gets here; none of ours can fail.
        Err(_) => Bytes::from_static(br#"{"error":"Internal error"}"#),
    }
}

/// The bytes of `{"error": text}`.
pub fn error_bytes(text: &str) -> Bytes {
    to_bytes(&ErrorRef(text))
}

struct ErrorRef<'a>(&'a str);

impl Serialize for ErrorRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Error", 1)?;
        st.serialize_field("error", self.0)?;
        st.end()
    }
}

/// `{"<id_name>": id, "<value_name>": value-or-error}`, the element of every multi list.
struct Pair<'a, I, T> {
    id_name: &'static str,
    id: &'a I,
    value_name: &'static str,
    value: Result<T, ErrorRef<'a>>,
}

impl<I: Serialize, T: Serialize> Serialize for Pair<'_, I, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry(self.id_name, &self.id)?;
        match &self.value {
            Ok(v) => map.serialize_entry(self.value_name, v)?,
            Err(e) => map.serialize_entry(self.value_name, e)?,
        }
        map.end()
    }
}

fn opt_string<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(n) => s.collect_str(n),
        None => s.serialize_none(),
    }
}

fn money_string<S: Serializer>(v: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&money::format(*v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: Serialize>(v: &T) -> String {
        String::from_utf8(to_bytes(v).to_vec()).unwrap()
    }

    fn partial() -> OrderStatus {
        OrderStatus {
            charge: "0.27819".parse().unwrap(),
            start_count: 3572,
            status: Status::Partial,
            remains: Remains::Count(157),
            currency: "USD".into(),
            runs: None,
            interval: None,
            orders: Vec::new(),
        }
    }

    #[test]
    fn shapes_match_the_seed() {
        assert_eq!(json(&Added { order: 23501 }), r#"{"order":23501}"#);
        assert_eq!(
            json(&partial()),
            r#"{"charge":"0.27819","start_count":"3572","status":"Partial","remains":"157","currency":"USD"}"#
        );
        assert_eq!(
            json(&MultiStatus(vec![
                (1, Ok(partial())),
                (10, Err("Incorrect order ID".into()))
            ])),
            r#"{"1":{"charge":"0.27819","start_count":"3572","status":"Partial","remains":"157","currency":"USD"},"10":{"error":"Incorrect order ID"}}"#
        );
        assert_eq!(json(&RefillCreated { refill: 1 }), r#"{"refill":"1"}"#);
        assert_eq!(
            json(&MultiRefill(vec![
                (1, Ok(1)),
                (3, Err("Incorrect order ID".into()))
            ])),
            r#"[{"order":1,"refill":1},{"order":3,"refill":{"error":"Incorrect order ID"}}]"#
        );
        assert_eq!(
            json(&RefillState {
                status: RefillStatus::Completed
            }),
            r#"{"status":"Completed"}"#
        );
        assert_eq!(
            json(&MultiRefillStatus(vec![
                (1, Ok(RefillStatus::Completed)),
                (2, Ok(RefillStatus::Rejected)),
                (3, Err("Refill not found".into()))
            ])),
            r#"[{"refill":1,"status":"Completed"},{"refill":2,"status":"Rejected"},{"refill":3,"status":{"error":"Refill not found"}}]"#
        );
        assert_eq!(
            json(&Canceled(vec![
                (9, Err("Incorrect order ID".into())),
                (2, Ok(()))
            ])),
            r#"[{"order":9,"cancel":{"error":"Incorrect order ID"}},{"order":2,"cancel":1}]"#
        );
        assert_eq!(
            json(&Balance {
                balance: "100.84292".parse().unwrap(),
                currency: "USD".into()
            }),
            r#"{"balance":"100.84292","currency":"USD"}"#
        );
        assert_eq!(
            String::from_utf8(error_bytes("Invalid API key").to_vec()).unwrap(),
            r#"{"error":"Invalid API key"}"#
        );
    }

    #[test]
    fn drip_feed_adds_runs_and_interval_after_the_usual_keys() {
        let mut s = partial();
        s.runs = Some(2);
        s.interval = Some(30);
        // The upstream's child order ids never go out.
        s.orders = vec!["9001".into(), "9002".into()];
        assert_eq!(
            json(&s),
            r#"{"charge":"0.27819","start_count":"3572","status":"Partial","remains":"157","currency":"USD","runs":"2","interval":"30"}"#
        );
    }

    #[test]
    fn remains_can_be_negative_or_unknown() {
        let mut s = partial();
        s.remains = Remains::Count(-12);
        assert!(json(&s).contains(r#""remains":"-12""#));
        s.remains = Remains::Unknown;
        assert!(json(&s).contains(r#""remains":"Unknown""#));
    }
}
