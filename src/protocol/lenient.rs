//! The tolerant reader for upstream replies (PROTOCOL.md §6): numbers as strings and strings
//! as numbers, any status spelling, extra keys, missing optional service fields, `remains:
//! "Unknown"`, and both forms of error (English texts and Perfect Panel's untranslated keys).
//!
//! Every reader first looks for a top-level `{"error": …}`, which is an explicit refusal
//! ([`ReadError::Refused`]); anything that is neither that nor the expected shape is
//! [`ReadError::Garbage`].

use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::reply::{
    Balance, Canceled, Item, MultiRefill, MultiRefillStatus, MultiStatus, OrderStatus, Remains,
};
use super::{RefillStatus, Service, ServiceType, Status};
use crate::money;

/// Why an upstream reply could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The upstream answered `{"error": text}`: it understood and said no.
    #[error("upstream refused: {0}")]
    Refused(String),
    /// Not JSON, or not the shape this action answers.
    #[error("unreadable upstream reply: {0}")]
    Garbage(&'static str),
}

impl ReadError {
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            ReadError::Refused(text) => Some(Refusal::classify(text)),
            ReadError::Garbage(_) => None,
        }
    }
}

/// What an upstream's error text means, whichever form it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Our account at the upstream is short: never the customer's problem.
    NotEnoughFunds,
    LinkDuplicate,
    QuantityBelowMin,
    QuantityAboveMax,
    IncorrectServiceId,
    IncorrectOrderId,
    InvalidKey,
    RefillNotFound,
    RefillDisabled,
    RefillNotCompleted,
    IncorrectRequest,
    Other,
}

impl Refusal {
    pub fn classify(text: &str) -> Refusal {
        let t = text.trim().to_ascii_lowercase();
        let has = |needle: &str| t.contains(needle);
        if has("not_enough_funds") || has("not enough funds") || has("insufficient") {
            Refusal::NotEnoughFunds
        } else if has("link_duplicate") || has("active order with this link") {
            Refusal::LinkDuplicate
        } else if has("min_quantity") || has("less than minimal") {
            Refusal::QuantityBelowMin
        } else if has("max_quantity") || has("more than maximum") {
            Refusal::QuantityAboveMax
        } else if has("incorrect_service_id") || has("incorrect service id") {
            Refusal::IncorrectServiceId
        } else if has("incorrect_order_id") || has("incorrect order id") {
            Refusal::IncorrectOrderId
        } else if has("api key") || has("api_key") || has("incorrect_key") {
            Refusal::InvalidKey
        } else if has("refill not found") || has("refill_not_found") {
            Refusal::RefillNotFound
        } else if has("refill is disabled") || has("refill_disabled") {
            Refusal::RefillDisabled
        } else if has("refill task is not completed") {
            Refusal::RefillNotCompleted
        } else if t == "incorrect request" || has("incorrect_request") {
            Refusal::IncorrectRequest
        } else {
            Refusal::Other
        }
    }
}

/// A services list, with the count of entries that were too broken to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceList {
    pub services: Vec<Service>,
    pub skipped: usize,
}

pub fn services(body: &[u8]) -> Result<ServiceList, ReadError> {
    let value = parse(body)?;
    let items = match &value {
        Value::Array(items) => items,
        // Some panels wrap the list.
        Value::Object(o) => match o.get("services").or_else(|| o.get("data")) {
            Some(Value::Array(items)) => items,
            _ => return Err(ReadError::Garbage("services: not a list")),
        },
        _ => return Err(ReadError::Garbage("services: not a list")),
    };
    let mut list = ServiceList {
        services: Vec::with_capacity(items.len()),
        skipped: 0,
    };
    for item in items {
        match item.as_object().and_then(service) {
            Some(s) => list.services.push(s),
            None => list.skipped += 1,
        }
    }
    Ok(list)
}

fn service(o: &Map<String, Value>) -> Option<Service> {
    Some(Service {
        service: uint(o.get("service")?)?,
        name: text(o.get("name")).unwrap_or_default(),
        kind: text(o.get("type"))
            .map(|t| ServiceType::parse(&t))
            .unwrap_or(ServiceType::Default),
        category: text(o.get("category")).unwrap_or_default(),
        rate: decimal(o.get("rate")?)?,
        min: o.get("min").and_then(uint).unwrap_or(1),
        max: o.get("max").and_then(uint).unwrap_or(u64::MAX),
        refill: flag(o.get("refill")),
        cancel: flag(o.get("cancel")),
        dripfeed: flag(o.get("dripfeed")),
        desc: text(o.get("desc")).or_else(|| text(o.get("description"))),
    })
}

/// The new order's id from an `add` reply (`{"order": 23501}`, `{"order":"23501"}`,
/// `{"status":"success","order":151}`).
pub fn added(body: &[u8]) -> Result<u64, ReadError> {
    object(body)?
        .get("order")
        .and_then(uint)
        .ok_or(ReadError::Garbage("add: no order id"))
}

pub fn status(body: &[u8]) -> Result<OrderStatus, ReadError> {
    order_status(&object(body)?).ok_or(ReadError::Garbage("status: unreadable"))
}

fn order_status(o: &Map<String, Value>) -> Option<OrderStatus> {
    Some(OrderStatus {
        charge: o.get("charge").and_then(decimal).unwrap_or_default(),
        start_count: o.get("start_count").and_then(uint).unwrap_or(0),
        status: Status::parse(&text(o.get("status"))?)?,
        remains: match o.get("remains") {
            Some(v) => int(v).map_or(Remains::Unknown, Remains::Count),
            None => Remains::Unknown,
        },
        currency: text(o.get("currency")).unwrap_or_default(),
    })
}

pub fn multi_status(body: &[u8]) -> Result<MultiStatus, ReadError> {
    let o = object(body)?;
    let mut out = Vec::with_capacity(o.len());
    for (key, value) in &o {
        let Some(id) = key.trim().parse::<u64>().ok() else {
            continue;
        };
        let item = match value.as_object() {
            Some(entry) => match item_error(entry) {
                Some(error) => Err(error),
                None => order_status(entry).ok_or_else(|| "Unreadable status".to_owned()),
            },
            None => Err("Unreadable status".to_owned()),
        };
        out.push((id, item));
    }
    Ok(MultiStatus(out))
}

/// The new refill's id (`{"refill":"1"}`).
pub fn refill_created(body: &[u8]) -> Result<u64, ReadError> {
    let o = object(body)?;
    match o.get("refill") {
        Some(Value::Object(inner)) => Err(ReadError::Refused(
            item_error(inner).unwrap_or_else(|| "Refill refused".into()),
        )),
        Some(v) => uint(v).ok_or(ReadError::Garbage("refill: no refill id")),
        None => Err(ReadError::Garbage("refill: no refill id")),
    }
}

pub fn multi_refill(body: &[u8]) -> Result<MultiRefill, ReadError> {
    pairs(body, "order", "refill", uint).map(MultiRefill)
}

pub fn refill_status(body: &[u8]) -> Result<RefillStatus, ReadError> {
    text(object(body)?.get("status"))
        .and_then(|s| RefillStatus::parse(&s))
        .ok_or(ReadError::Garbage("refill_status: unreadable"))
}

pub fn multi_refill_status(body: &[u8]) -> Result<MultiRefillStatus, ReadError> {
    pairs(body, "refill", "status", |v| {
        v.as_str().and_then(RefillStatus::parse)
    })
    .map(MultiRefillStatus)
}

pub fn canceled(body: &[u8]) -> Result<Canceled, ReadError> {
    pairs(body, "order", "cancel", |v| flag(Some(v)).then_some(())).map(Canceled)
}

pub fn balance(body: &[u8]) -> Result<Balance, ReadError> {
    let o = object(body)?;
    Ok(Balance {
        balance: o
            .get("balance")
            .and_then(decimal)
            .ok_or(ReadError::Garbage("balance: no amount"))?,
        currency: text(o.get("currency")).unwrap_or_default(),
    })
}

/// The element list of a multi reply: `[{id_name: id, value_name: value | {"error": …}}]`.
fn pairs<T>(
    body: &[u8],
    id_name: &str,
    value_name: &str,
    read: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<(u64, Item<T>)>, ReadError> {
    let items = match parse(body)? {
        Value::Array(items) => items,
        // A single-element reply sent as a bare object.
        Value::Object(o) => vec![Value::Object(o)],
        _ => return Err(ReadError::Garbage("expected a list")),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in &items {
        let Some(o) = item.as_object() else { continue };
        let Some(id) = o.get(id_name).and_then(uint) else {
            continue;
        };
        let value = match o.get(value_name) {
            Some(Value::Object(inner)) => {
                Err(item_error(inner).unwrap_or_else(|| "Unreadable item".into()))
            }
            Some(v) => read(v).ok_or_else(|| "Unreadable item".to_owned()),
            None => Err("Unreadable item".to_owned()),
        };
        out.push((id, value));
    }
    Ok(out)
}

/// The text of a top-level `{"error": …}` reply, if that is what `body` is.
pub fn refusal_text(body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Object(o) => item_error(&o),
        _ => None,
    }
}

fn parse(body: &[u8]) -> Result<Value, ReadError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| ReadError::Garbage("not JSON"))?;
    if let Value::Object(o) = &value
        && let Some(error) = item_error(o)
    {
        return Err(ReadError::Refused(error));
    }
    Ok(value)
}

fn object(body: &[u8]) -> Result<Map<String, Value>, ReadError> {
    match parse(body)? {
        Value::Object(o) => Ok(o),
        _ => Err(ReadError::Garbage("expected an object")),
    }
}

fn item_error(o: &Map<String, Value>) -> Option<String> {
    match o.get("error")? {
        Value::Null | Value::Bool(false) => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.trim().to_owned()),
        other => Some(other.to_string()),
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn uint(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => money::parse(&n.to_string()),
        Value::String(s) => money::parse(s),
        _ => None,
    }
}

fn flag(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        ),
        _ => false,
    }
}
