//! The tolerant reader for upstream replies: numbers as strings and strings
//! as numbers, any status spelling, extra keys, missing optional service fields, `remains:
//! "Unknown"`, and both forms of error (English texts and Perfect Panel's untranslated keys).
//!
//! Every reader first looks for a top-level `{"error": …}`, which is an explicit refusal
//! ([`ReadError::Refused`]); anything that is neither that nor the expected shape is
//! [`ReadError::Garbage`]. [`added`] and [`refusal_text`] also take the panel scripts' failure
//! markers (`status: "error"`, `success: false`, with the text in `message`) as refusals; the
//! other readers do not, since `"status":"Error"` is a refill status.

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
        } else if has("min_quantity") || has("less than minimal") || has("minimum amount") {
            Refusal::QuantityBelowMin
        } else if has("max_quantity") || has("more than maximum") || has("maximum amount") {
            Refusal::QuantityAboveMax
        } else if has("incorrect_service_id")
            || has("incorrect service id")
            || has("service id does not exist")
        {
            Refusal::IncorrectServiceId
        } else if has("incorrect_order_id") || has("incorrect order id") {
            Refusal::IncorrectOrderId
        } else if has("api key")
            || has("api_key")
            || has("incorrect_key")
            || has("api is disable")
            || has("user not found")
        {
            Refusal::InvalidKey
        } else if has("refill not found") || has("refill_not_found") {
            Refusal::RefillNotFound
        } else if has("refill is disabled") || has("refill_disabled") {
            Refusal::RefillDisabled
        } else if has("refill task is not completed") {
            Refusal::RefillNotCompleted
        } else if t == "incorrect request"
            || has("incorrect_request")
            || has("action is invalid")
            || has(" is required")
        {
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
            // Panel scripts with nothing to list: `{"status":"success","data":"Empty Data"}`.
            Some(Value::String(_) | Value::Null) | None if says_success(o) => {
                return Ok(ServiceList {
                    services: Vec::new(),
                    skipped: 0,
                });
            }
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

fn says_success(o: &Map<String, Value>) -> bool {
    text(o.get("status")).is_some_and(|s| s.trim().eq_ignore_ascii_case("success"))
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

/// What the body of a 2xx `add` reply says (the HTTP status has had its say first, see
/// `upstream::add_outcome`):
/// - an order id, in any dialect (one test row per dialect below) → `Ok(id)`: placed, even
///   with an error beside it;
/// - else an explicit failure (an `error` key with text, `status: "error"`, `success: false`) →
///   [`ReadError::Refused`] with the upstream's own text;
/// - anything else (empty, not JSON, a bare `message`, an object without an order id) →
///   [`ReadError::Garbage`]: the order may exist, so its outcome is unknown.
pub fn added(body: &[u8]) -> Result<String, ReadError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| ReadError::Garbage("not JSON"))?;
    let o = match value {
        Value::Object(o) => o,
        // `[{"order":"1242"}]`: a one-element list. More than one element is no answer to one
        // `add`.
        Value::Array(mut items) if items.len() == 1 => match items.pop() {
            Some(Value::Object(o)) => o,
            _ => return Err(ReadError::Garbage("add: not an object")),
        },
        _ => return Err(ReadError::Garbage("add: not an object")),
    };
    // An order id wins over an error beside it: the panel may have created the order, and
    // reading it as refused would give it away or send it to a fallback too. Placed, sync
    // then learns what the upstream really has (an id it does not know ends up stuck, for
    // the operator).
    if let Some(id) = o.get("order").and_then(upstream_id) {
        return Ok(id);
    }
    match failure(&o) {
        Some(text) => Err(ReadError::Refused(text)),
        None => Err(ReadError::Garbage("add: no order id")),
    }
}

/// The text of an explicit failure in a reply object: an `error` with text, or a failure
/// marker (`status: "error"`, `success: false`) with its `message` (or a stand-in text). A
/// `message` alone is no failure: panels put greetings and notices there too.
fn failure(o: &Map<String, Value>) -> Option<String> {
    if let Some(text) = item_error(o) {
        return Some(text);
    }
    let status_error =
        text(o.get("status")).is_some_and(|s| s.trim().eq_ignore_ascii_case("error"));
    let not_success = match o.get("success") {
        Some(Value::Bool(b)) => !b,
        Some(Value::String(s)) => s.trim().eq_ignore_ascii_case("false"),
        _ => false,
    };
    if !(status_error || not_success) {
        return None;
    }
    let message = text(o.get("message"))
        .or_else(|| text(o.get("msg")))
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty());
    Some(message.unwrap_or_else(|| "Refused without a reason".to_owned()))
}

/// Longest upstream order id we keep; longer is not an id.
const MAX_UPSTREAM_ID: usize = 64;

/// An upstream's order id: a whole number, or opaque printable text (`"ord_01HG…"`). Ours
/// are numbers; theirs are kept as text, exactly as they would ask for them back.
pub fn upstream_id(v: &Value) -> Option<String> {
    match v {
        Value::Number(_) => uint(v).map(|n| n.to_string()),
        Value::String(s) => {
            let s = s.trim();
            let printable = s.chars().all(|c| c.is_ascii_graphic());
            (printable && !s.is_empty() && s.len() <= MAX_UPSTREAM_ID).then(|| s.to_owned())
        }
        _ => None,
    }
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
        runs: o.get("runs").and_then(uint),
        interval: o.get("interval").and_then(uint),
        orders: o.get("orders").map(child_orders).unwrap_or_default(),
    })
}

/// Most child orders kept of one drip-feed order (one per run; more is not a list of runs).
const MAX_CHILD_ORDERS: usize = 1000;

/// A drip-feed order's child order ids: a list of ids (numbers or text) or one comma list.
/// Entries that are not ids are skipped.
fn child_orders(v: &Value) -> Vec<String> {
    let ids: Vec<String> = match v {
        Value::Array(items) => items.iter().filter_map(upstream_id).collect(),
        Value::String(s) => s
            .split(',')
            .filter_map(|id| upstream_id(&Value::String(id.to_owned())))
            .collect(),
        Value::Number(_) => upstream_id(v).into_iter().collect(),
        _ => Vec::new(),
    };
    ids.into_iter().take(MAX_CHILD_ORDERS).collect()
}

pub fn multi_status(body: &[u8]) -> Result<MultiStatus<String>, ReadError> {
    let o = object(body)?;
    let mut out = Vec::with_capacity(o.len());
    for (key, value) in &o {
        let Some(id) = upstream_id(&Value::String(key.clone())) else {
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

pub fn multi_refill(body: &[u8]) -> Result<MultiRefill<String>, ReadError> {
    pairs(body, "order", upstream_id, "refill", uint).map(MultiRefill)
}

pub fn refill_status(body: &[u8]) -> Result<RefillStatus, ReadError> {
    text(object(body)?.get("status"))
        .and_then(|s| RefillStatus::parse(&s))
        .ok_or(ReadError::Garbage("refill_status: unreadable"))
}

pub fn multi_refill_status(body: &[u8]) -> Result<MultiRefillStatus, ReadError> {
    pairs(body, "refill", uint, "status", |v| {
        v.as_str().and_then(RefillStatus::parse)
    })
    .map(MultiRefillStatus)
}

pub fn canceled(body: &[u8]) -> Result<Canceled<String>, ReadError> {
    pairs(body, "order", upstream_id, "cancel", |v| {
        flag(Some(v)).then_some(())
    })
    .map(Canceled)
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
fn pairs<I, T>(
    body: &[u8],
    id_name: &str,
    read_id: impl Fn(&Value) -> Option<I>,
    value_name: &str,
    read: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<(I, Item<T>)>, ReadError> {
    let items = match parse(body)? {
        Value::Array(items) => items,
        // A single-element reply sent as a bare object.
        Value::Object(o) => vec![Value::Object(o)],
        _ => return Err(ReadError::Garbage("expected a list")),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in &items {
        let Some(o) = item.as_object() else { continue };
        let Some(id) = o.get(id_name).and_then(&read_id) else {
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

/// The text of an explicit failure reply (`{"error": …}`, `{"status":"error","message": …}`,
/// `{"success": false, …}`), if that is what `body` is.
pub fn refusal_text(body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Object(o) => failure(&o),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::reply::Remains;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn refused(text: &str) -> ReadError {
        ReadError::Refused(text.into())
    }

    fn bad<T>() -> Item<T> {
        Err("Unreadable item".into())
    }

    /// Replies that are not JSON, or JSON of no use to any reader.
    const GARBAGE: [&str; 9] = [
        "",
        "   ",
        "<html><body><h1>502 Bad Gateway</h1></body></html>",
        "<!DOCTYPE html><title>Just a moment...</title>",
        "Service Unavailable",
        "{\"order\":",
        "\u{feff}{\"order\":1}",
        "null",
        "\"ok\"",
    ];

    #[test]
    fn services_in_the_seed_shape() {
        let body = br#"[{"service":1,"name":"Followers","type":"Default","category":"First Category","rate":"0.90","min":"50","max":"10000","refill":true,"cancel":true},{"service":2,"name":"Comments","type":"Custom Comments","category":"Second Category","rate":"8","min":"10","max":"1500","refill":false,"cancel":true,"dripfeed":true,"desc":"Real comments"}]"#;
        let list = services(body).unwrap();
        assert_eq!(list.skipped, 0);
        assert_eq!(
            list.services,
            [
                Service {
                    service: 1,
                    name: "Followers".into(),
                    kind: ServiceType::Default,
                    category: "First Category".into(),
                    rate: d("0.90"),
                    min: 50,
                    max: 10000,
                    refill: true,
                    cancel: true,
                    dripfeed: false,
                    desc: None,
                },
                Service {
                    service: 2,
                    name: "Comments".into(),
                    kind: ServiceType::CustomComments,
                    category: "Second Category".into(),
                    rate: d("8"),
                    min: 10,
                    max: 1500,
                    refill: false,
                    cancel: true,
                    dripfeed: true,
                    desc: Some("Real comments".into()),
                },
            ]
        );
    }

    #[test]
    fn services_in_upstream_dialects() {
        // `service` as a string, numbers for rate/min/max, flags as strings and numbers,
        // missing refill/cancel/dripfeed/desc, `description` for `desc`, an odd type
        // spelling, extra keys, and an unknown type kept as Other.
        let body = br#"[
            {"service":"3","name":"Likes","type":"default","category":"C","rate":1.25,"min":100,"max":50000,"extra":"x"},
            {"service":4,"name":"Views","type":"WEB_TRAFFIC","category":"C","rate":"0.01","min":"1","max":"1000000","refill":"1","cancel":0,"dripfeed":"true","description":"fast"},
            {"service":5,"name":"Drip","type":" Something New ","category":"C","rate":"2.00000","min":"10","max":"100","refill":1,"cancel":"yes"},
            {"service":6,"name":"No type","category":"C","rate":"3"}
        ]"#;
        let list = services(body).unwrap();
        assert_eq!(list.skipped, 0);
        let s = &list.services;
        assert_eq!(s.len(), 4);
        assert_eq!((s[0].service, s[0].kind.clone()), (3, ServiceType::Default));
        assert_eq!((s[0].rate, s[0].min, s[0].max), (d("1.25"), 100, 50000));
        assert!(!s[0].refill && !s[0].cancel && !s[0].dripfeed);
        assert_eq!(s[0].desc, None);
        assert_eq!(s[1].kind, ServiceType::WebTraffic);
        assert!(s[1].refill && !s[1].cancel && s[1].dripfeed);
        assert_eq!(s[1].desc.as_deref(), Some("fast"));
        assert_eq!(s[2].kind, ServiceType::Other("Something New".into()));
        assert_eq!(s[2].rate, d("2"));
        assert!(s[2].refill && s[2].cancel);
        // No type is Default; no limits are no limits.
        assert_eq!(s[3].kind, ServiceType::Default);
        assert_eq!((s[3].min, s[3].max), (1, u64::MAX));
        assert_eq!(s[3].name, "No type");
    }

    #[test]
    fn a_panel_script_with_nothing_to_list_lists_no_services() {
        for body in [
            &br#"{"status":"success","data":"Empty Data"}"#[..],
            br#"{"status":"Success","data":null}"#,
        ] {
            assert_eq!(
                services(body),
                Ok(ServiceList {
                    services: Vec::new(),
                    skipped: 0
                })
            );
        }
        // Without the success marker it is still not a list.
        assert!(services(br#"{"data":"Empty Data"}"#).is_err());
        assert!(services(br#"{"status":"fail","data":"Empty Data"}"#).is_err());
    }

    #[test]
    fn services_wrapped_or_partly_broken() {
        let wrapped = services(br#"{"services":[{"service":1,"rate":"1"}]}"#).unwrap();
        assert_eq!(wrapped.services.len(), 1);
        let data = services(br#"{"status":"success","data":[{"service":1,"rate":"1"}]}"#).unwrap();
        assert_eq!(data.services.len(), 1);
        // Entries without an id or a usable rate are skipped and counted.
        let list = services(
            br#"[{"service":1,"rate":"1"},{"name":"no id","rate":"1"},{"service":"x","rate":"1"},{"service":2},{"service":3,"rate":"free"},{"service":-4,"rate":"1"},"junk",7,null]"#,
        )
        .unwrap();
        assert_eq!(list.services.len(), 1);
        assert_eq!(list.skipped, 8);
        assert_eq!(services(b"[]").unwrap().services, []);
        assert_eq!(
            services(br#"{"error":"Invalid API key"}"#),
            Err(refused("Invalid API key"))
        );
        assert!(matches!(
            services(br#"{"services":{"1":{}}}"#),
            Err(ReadError::Garbage(_))
        ));
        assert!(matches!(
            services(br#"{"a":1}"#),
            Err(ReadError::Garbage(_))
        ));
        for g in GARBAGE {
            assert!(
                matches!(services(g.as_bytes()), Err(ReadError::Garbage(_))),
                "{g:?}"
            );
        }
    }

    /// What a 2xx `add` body means.
    #[derive(Debug, PartialEq)]
    enum Meant {
        Placed(&'static str),
        Refused(&'static str),
        Unknown,
    }

    /// One row per dialect of a 2xx `add` reply: the body, where it was seen, what it means.
    const ADD_DIALECTS: &[(&str, &str, Meant)] = &[
        (
            r#"{"order":23501}"#,
            "API v2 documentation",
            Meant::Placed("23501"),
        ),
        (
            r#"{"order":"23501"}"#,
            "Perfect Panel",
            Meant::Placed("23501"),
        ),
        (
            r#"{"order":" 23501 "}"#,
            "padded id",
            Meant::Placed("23501"),
        ),
        (
            r#"{"order":23501.0}"#,
            "id as a float",
            Meant::Placed("23501"),
        ),
        (
            r#"{"status":"success","order":151}"#,
            "PHP panel scripts",
            Meant::Placed("151"),
        ),
        (
            r#"[{"order":"1242"}]"#,
            "a one-element list (issue 13)",
            Meant::Placed("1242"),
        ),
        (
            r#"[{"order":1242}]"#,
            "the same, numeric",
            Meant::Placed("1242"),
        ),
        (
            r#"{"order":"ord_01HGW2N7EJ3K"}"#,
            "opaque ids (issue 13)",
            Meant::Placed("ord_01HGW2N7EJ3K"),
        ),
        (
            r#"{"order":151,"error":null}"#,
            "null error beside the id",
            Meant::Placed("151"),
        ),
        (
            r#"{"order":151,"error":""}"#,
            "empty error beside the id",
            Meant::Placed("151"),
        ),
        (
            r#"{"order":151,"error":false}"#,
            "false error beside the id",
            Meant::Placed("151"),
        ),
        (
            r#"{"order":151,"success":true,"message":"Order created"}"#,
            "success flag and a message",
            Meant::Placed("151"),
        ),
        (
            r#"{"error":"Not enough funds on balance"}"#,
            "most panels",
            Meant::Refused("Not enough funds on balance"),
        ),
        (
            r#"{"order":1,"error":"Not enough funds on balance"}"#,
            "an error next to an id: the id wins, the order may exist",
            Meant::Placed("1"),
        ),
        (
            r#"{"status":"error","message":"Invalid Interval in minutes"}"#,
            "PHP panel script, HTTP 200 text/html (issue 20)",
            Meant::Refused("Invalid Interval in minutes"),
        ),
        (
            r#"{"status":"Error","message":" API is Disable for this user or User Not Found! "}"#,
            "the same, capitalised",
            Meant::Refused("API is Disable for this user or User Not Found!"),
        ),
        (
            r#"{"success":false,"message":"Service ID does not exists"}"#,
            "success flag",
            Meant::Refused("Service ID does not exists"),
        ),
        (
            r#"{"success":"false","msg":"This action is Invalid"}"#,
            "success flag as text, msg key",
            Meant::Refused("This action is Invalid"),
        ),
        (
            r#"{"status":"error"}"#,
            "a failure without a reason",
            Meant::Refused("Refused without a reason"),
        ),
        (r#"{"error":1}"#, "non-text error", Meant::Refused("1")),
        (
            "",
            "empty body: the panel script that DID create the order",
            Meant::Unknown,
        ),
        (
            r#"{"message":"Order received"}"#,
            "a bare message",
            Meant::Unknown,
        ),
        (
            r#"{"message":"Invalid Interval in minutes"}"#,
            "a bare message",
            Meant::Unknown,
        ),
        (
            r#"{"status":"success"}"#,
            "success without an id",
            Meant::Unknown,
        ),
        (
            r#"{"success":true}"#,
            "success without an id",
            Meant::Unknown,
        ),
        (r#"{"order":null}"#, "null id", Meant::Unknown),
        (r#"{"order":-1}"#, "negative id", Meant::Unknown),
        (r#"{"order":1.5}"#, "fractional id", Meant::Unknown),
        (r#"{"order":""}"#, "empty id", Meant::Unknown),
        (r#"{"order":"two words"}"#, "not an id", Meant::Unknown),
        (r#"{"order":{"id":1}}"#, "nested id", Meant::Unknown),
        (
            r#"[{"order":1},{"order":2}]"#,
            "two ids for one add",
            Meant::Unknown,
        ),
        (r#"[]"#, "empty list", Meant::Unknown),
        (
            r#"[{"error":"x"}]"#,
            "a refusal in the list dialect",
            Meant::Refused("x"),
        ),
        ("23501", "a bare number", Meant::Unknown),
    ];

    #[test]
    fn added_in_upstream_dialects() {
        for (body, seen, want) in ADD_DIALECTS {
            let got = match added(body.as_bytes()) {
                Ok(id) => Some(id),
                Err(ReadError::Refused(text)) => {
                    assert_eq!(*want, Meant::Refused(leak(text)), "{seen}: {body}");
                    continue;
                }
                Err(ReadError::Garbage(_)) => None,
            };
            match (got, want) {
                (Some(id), Meant::Placed(w)) => assert_eq!(id, *w, "{seen}: {body}"),
                (None, Meant::Unknown) => {}
                (got, want) => panic!("{seen}: {body}: got {got:?}, want {want:?}"),
            }
        }
        for g in GARBAGE {
            assert!(
                matches!(added(g.as_bytes()), Err(ReadError::Garbage(_))),
                "{g:?}"
            );
        }
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    #[test]
    fn both_error_forms_are_refusals() {
        let cases = [
            ("Not enough funds on balance", Refusal::NotEnoughFunds),
            ("neworder.error.not_enough_funds", Refusal::NotEnoughFunds),
            ("Insufficient balance", Refusal::NotEnoughFunds),
            (
                "You have active order with this link. Please wait until order being completed.",
                Refusal::LinkDuplicate,
            ),
            ("neworder.error.link_duplicate", Refusal::LinkDuplicate),
            ("Quantity less than minimal 50", Refusal::QuantityBelowMin),
            ("neworder.error.min_quantity", Refusal::QuantityBelowMin),
            (
                "Quantity more than maximum 10000",
                Refusal::QuantityAboveMax,
            ),
            ("neworder.error.max_quantity", Refusal::QuantityAboveMax),
            ("Incorrect service ID", Refusal::IncorrectServiceId),
            ("error.incorrect_service_id", Refusal::IncorrectServiceId),
            ("Incorrect order ID", Refusal::IncorrectOrderId),
            ("error.incorrect_order_id", Refusal::IncorrectOrderId),
            ("Invalid API key", Refusal::InvalidKey),
            ("error.incorrect_key", Refusal::InvalidKey),
            ("Refill not found", Refusal::RefillNotFound),
            (
                "Refill is disabled for this service",
                Refusal::RefillDisabled,
            ),
            (
                "The refill task is not completed for this order",
                Refusal::RefillNotCompleted,
            ),
            ("Incorrect request", Refusal::IncorrectRequest),
            ("error.incorrect_request", Refusal::IncorrectRequest),
            ("  NOT ENOUGH FUNDS ON BALANCE  ", Refusal::NotEnoughFunds),
            ("Service is under maintenance", Refusal::Other),
            // The PHP panel-script family (issue 20), as they send them.
            (
                "API is Disable for this user or User Not Found!",
                Refusal::InvalidKey,
            ),
            (
                "Quantity must to be greater than or equal to minimum amount 100",
                Refusal::QuantityBelowMin,
            ),
            (
                "Quantity must to be less than or equal to maximum amount 5000",
                Refusal::QuantityAboveMax,
            ),
            ("Service ID does not exists", Refusal::IncorrectServiceId),
            ("Quantity is required", Refusal::IncorrectRequest),
            ("This action is Invalid", Refusal::IncorrectRequest),
            ("Incorrect request: multipart/form-data", Refusal::Other),
        ];
        for (text, want) in cases {
            assert_eq!(Refusal::classify(text), want, "{text}");
            let body = serde_json::json!({ "error": text }).to_string();
            let trimmed = text.trim().to_owned();
            // Every reader sees a top-level error object as a refusal, whatever it expects.
            let b = body.as_bytes();
            assert_eq!(added(b), Err(ReadError::Refused(trimmed.clone())), "{text}");
            assert_eq!(status(b), Err(ReadError::Refused(trimmed.clone())));
            assert_eq!(multi_status(b), Err(ReadError::Refused(trimmed.clone())));
            assert_eq!(refill_created(b), Err(ReadError::Refused(trimmed.clone())));
            assert_eq!(multi_refill(b), Err(ReadError::Refused(trimmed.clone())));
            assert_eq!(refill_status(b), Err(ReadError::Refused(trimmed.clone())));
            assert_eq!(
                multi_refill_status(b),
                Err(ReadError::Refused(trimmed.clone()))
            );
            assert_eq!(canceled(b), Err(ReadError::Refused(trimmed.clone())));
            assert_eq!(balance(b), Err(ReadError::Refused(trimmed.clone())));
            assert!(matches!(services(b), Err(ReadError::Refused(_))));
            assert_eq!(added(b).unwrap_err().refusal(), Some(want), "{text}");
            assert_eq!(refusal_text(b).as_deref(), Some(trimmed.as_str()));
        }
        // An error next to an order id is not a refusal: the order may exist (see `added`).
        assert_eq!(
            added(br#"{"order":1,"error":"Not enough funds on balance"}"#),
            Ok("1".to_owned())
        );
        // A non-string error is kept as its JSON text.
        assert_eq!(added(br#"{"error":1}"#), Err(refused("1")));
        assert_eq!(
            added(br#"{"error":{"code":"x"}}"#),
            Err(refused(r#"{"code":"x"}"#))
        );
        assert_eq!(ReadError::Garbage("x").refusal(), None);
        assert_eq!(refusal_text(br#"{"order":1}"#), None);
        assert_eq!(refusal_text(br#"[{"error":"x"}]"#), None);
        // The failure markers count in any reply whose status is read as a refusal.
        assert_eq!(
            refusal_text(br#"{"status":"error","message":"Invalid Interval in minutes"}"#)
                .as_deref(),
            Some("Invalid Interval in minutes")
        );
        assert_eq!(
            refusal_text(br#"{"success":false}"#).as_deref(),
            Some("Refused without a reason")
        );
        assert_eq!(refusal_text(br#"{"message":"Hello"}"#), None);
        assert_eq!(refusal_text(br#"{"status":"success","order":1}"#), None);
        assert_eq!(refusal_text(b"<html>"), None);
    }

    #[test]
    fn status_in_the_seed_shape() {
        let s = status(
            br#"{"charge":"0.27819","start_count":"3572","status":"Partial","remains":"157","currency":"USD"}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            OrderStatus {
                charge: d("0.27819"),
                start_count: 3572,
                status: Status::Partial,
                remains: Remains::Count(157),
                currency: "USD".into(),
                runs: None,
                interval: None,
                orders: Vec::new(),
            }
        );
    }

    #[test]
    fn drip_feed_status_with_runs_and_child_orders() {
        // Runs as a number or a string; child orders as a list of ids or a comma list.
        let s = status(
            br#"{"charge":"0.5","start_count":"10","status":"In progress","remains":"207","currency":"USD","runs":1,"interval":"30","orders":[9001,"9002"," "]}"#,
        )
        .unwrap();
        assert_eq!(
            (s.runs, s.interval, s.orders),
            (
                Some(1),
                Some(30),
                vec!["9001".to_owned(), "9002".to_owned()]
            )
        );
        let s = status(br#"{"status":"Partial","remains":207,"runs":"1","orders":"9001, 9002"}"#)
            .unwrap();
        assert_eq!((s.runs, s.orders.len()), (Some(1), 2));
        // Missing or unreadable: not known, and the status still reads.
        for body in [
            r#"{"status":"Partial","remains":207}"#,
            r#"{"status":"Partial","remains":207,"runs":"","orders":{"a":1}}"#,
            r#"{"status":"Partial","remains":207,"runs":null,"orders":null}"#,
            r#"{"status":"Partial","remains":207,"runs":-1,"orders":[[1]]}"#,
        ] {
            let s = status(body.as_bytes()).unwrap();
            assert_eq!((s.runs, s.orders.len()), (None, 0), "{body}");
            assert_eq!(s.remains, Remains::Count(207), "{body}");
        }
        // A list of child orders is bounded.
        let many: Vec<u64> = (1..=5000).collect();
        let body = serde_json::json!({ "status": "In progress", "orders": many }).to_string();
        assert_eq!(status(body.as_bytes()).unwrap().orders.len(), 1000);
    }

    #[test]
    fn status_in_upstream_dialects() {
        let s = status(
            br#"{"charge":0.27819,"start_count":3572,"status":"In Progress","remains":157,"currency":"USD","extra":[1]}"#,
        )
        .unwrap();
        assert_eq!(
            (s.charge, s.start_count, s.status, s.remains),
            (d("0.27819"), 3572, Status::InProgress, Remains::Count(157))
        );
        let s = status(br#"{"status":"Completed","remains":"-25"}"#).unwrap();
        assert_eq!(s.remains, Remains::Count(-25));
        assert_eq!((s.charge, s.start_count), (Decimal::ZERO, 0));
        assert_eq!(s.currency, "");
        assert_eq!(
            status(br#"{"status":"Pending","remains":-3}"#)
                .unwrap()
                .remains,
            Remains::Count(-3)
        );
        for unknown in [
            r#"{"status":"Pending","remains":"Unknown"}"#,
            r#"{"status":"Pending","remains":null}"#,
            r#"{"status":"Pending","remains":""}"#,
            r#"{"status":"Pending"}"#,
        ] {
            assert_eq!(
                status(unknown.as_bytes()).unwrap().remains,
                Remains::Unknown,
                "{unknown}"
            );
        }
        // start_count that is not a count reads as 0, not as a failure.
        assert_eq!(
            status(br#"{"status":"Pending","start_count":null}"#)
                .unwrap()
                .start_count,
            0
        );
        let spellings = [
            ("Pending", Status::Pending),
            ("pending", Status::Pending),
            ("In progress", Status::InProgress),
            ("In Progress", Status::InProgress),
            ("inprogress", Status::InProgress),
            ("Processing", Status::Processing),
            ("Completed", Status::Completed),
            ("Partial", Status::Partial),
            ("Canceled", Status::Canceled),
            ("Cancelled", Status::Canceled),
            ("Refunded", Status::Canceled),
        ];
        for (text, want) in spellings {
            let body = serde_json::json!({ "status": text }).to_string();
            assert_eq!(status(body.as_bytes()).unwrap().status, want, "{text}");
        }
        // Numeric codes, as strings or numbers.
        for (code, want) in [
            (0, Status::Pending),
            (1, Status::Processing),
            (2, Status::Completed),
            (3, Status::Partial),
            (4, Status::Canceled),
            (5, Status::Canceled),
        ] {
            let n = format!(r#"{{"status":{code}}}"#);
            let s = format!(r#"{{"status":"{code}"}}"#);
            assert_eq!(status(n.as_bytes()).unwrap().status, want, "{n}");
            assert_eq!(status(s.as_bytes()).unwrap().status, want, "{s}");
        }
        for body in [
            r#"{"status":"Shipped"}"#,
            r#"{"status":6}"#,
            r#"{"status":null}"#,
            r#"{"charge":"1"}"#,
            r#"{"status":"success","order":151}"#,
            r#"[{"status":"Pending"}]"#,
        ] {
            assert!(
                matches!(status(body.as_bytes()), Err(ReadError::Garbage(_))),
                "{body}"
            );
        }
        for g in GARBAGE {
            assert!(
                matches!(status(g.as_bytes()), Err(ReadError::Garbage(_))),
                "{g:?}"
            );
        }
    }

    #[test]
    fn multi_status_with_per_item_errors() {
        let body = br#"{"1":{"charge":"0.27819","start_count":"3572","status":"Partial","remains":"157","currency":"USD"},"10":{"error":"Incorrect order ID"},"11":{"status":"Shipped"},"12":"junk","13":{"charge":"1","status":"Cancelled","remains":"Unknown"},"total":3}"#;
        let MultiStatus(mut items) = multi_status(body).unwrap();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            items,
            [
                (
                    "1".to_owned(),
                    Ok(OrderStatus {
                        charge: d("0.27819"),
                        start_count: 3572,
                        status: Status::Partial,
                        remains: Remains::Count(157),
                        currency: "USD".into(),
                        runs: None,
                        interval: None,
                        orders: Vec::new(),
                    })
                ),
                ("10".to_owned(), Err("Incorrect order ID".into())),
                ("11".to_owned(), Err("Unreadable status".into())),
                ("12".to_owned(), Err("Unreadable status".into())),
                (
                    "13".to_owned(),
                    Ok(OrderStatus {
                        charge: d("1"),
                        start_count: 0,
                        status: Status::Canceled,
                        remains: Remains::Unknown,
                        currency: String::new(),
                        runs: None,
                        interval: None,
                        orders: Vec::new(),
                    })
                ),
                // Opaque ids are ids too: a key that is no order of ours is simply not used.
                ("total".to_owned(), Err("Unreadable status".into())),
            ]
        );
        assert_eq!(multi_status(b"{}"), Ok(MultiStatus(vec![])));
        assert!(matches!(multi_status(b"[]"), Err(ReadError::Garbage(_))));
        for g in GARBAGE {
            assert!(
                matches!(multi_status(g.as_bytes()), Err(ReadError::Garbage(_))),
                "{g:?}"
            );
        }
    }

    #[test]
    fn refill_created_in_upstream_dialects() {
        assert_eq!(refill_created(br#"{"refill":"1"}"#), Ok(1));
        assert_eq!(refill_created(br#"{"refill":1}"#), Ok(1));
        assert_eq!(
            refill_created(br#"{"refill":"77","status":"success"}"#),
            Ok(77)
        );
        // The error may sit inside `refill`.
        assert_eq!(
            refill_created(br#"{"refill":{"error":"Refill is disabled for this service"}}"#),
            Err(refused("Refill is disabled for this service"))
        );
        assert_eq!(
            refill_created(br#"{"refill":{}}"#),
            Err(refused("Refill refused"))
        );
        for body in [
            r#"{}"#,
            r#"{"refill":"x"}"#,
            r#"{"refill":null}"#,
            r#"["1"]"#,
        ] {
            assert!(
                matches!(refill_created(body.as_bytes()), Err(ReadError::Garbage(_))),
                "{body}"
            );
        }
        for g in GARBAGE {
            assert!(
                matches!(refill_created(g.as_bytes()), Err(ReadError::Garbage(_))),
                "{g:?}"
            );
        }
    }

    #[test]
    fn multi_refill_with_per_item_errors() {
        let body = br#"[{"order":1,"refill":1},{"order":"2","refill":"5"},{"order":3,"refill":{"error":"Incorrect order ID"}},{"order":4,"refill":{"error":"neworder.error.refill_disabled"}},{"order":5},{"order":6,"refill":"x"},{"refill":7},"junk"]"#;
        assert_eq!(
            multi_refill(body),
            Ok(MultiRefill(vec![
                ("1".into(), Ok(1)),
                ("2".into(), Ok(5)),
                ("3".into(), Err("Incorrect order ID".into())),
                ("4".into(), Err("neworder.error.refill_disabled".into())),
                ("5".into(), bad()),
                ("6".into(), bad()),
            ]))
        );
        // A single element sent as a bare object.
        assert_eq!(
            multi_refill(br#"{"order":1,"refill":"9"}"#),
            Ok(MultiRefill(vec![("1".into(), Ok(9))]))
        );
        assert_eq!(multi_refill(b"[]"), Ok(MultiRefill(vec![])));
        assert!(matches!(multi_refill(b"5"), Err(ReadError::Garbage(_))));
        for g in GARBAGE {
            assert!(
                matches!(multi_refill(g.as_bytes()), Err(ReadError::Garbage(_))),
                "{g:?}"
            );
        }
    }

    #[test]
    fn refill_status_in_upstream_dialects() {
        for (text, want) in [
            (r#""Completed""#, RefillStatus::Completed),
            (r#""In progress""#, RefillStatus::InProgress),
            (r#""In Progress""#, RefillStatus::InProgress),
            (r#""pending""#, RefillStatus::Pending),
            (r#""Rejected""#, RefillStatus::Rejected),
            (r#""Error""#, RefillStatus::Error),
            ("2", RefillStatus::Completed),
        ] {
            let body = format!(r#"{{"status":{text},"extra":1}}"#);
            assert_eq!(refill_status(body.as_bytes()), Ok(want), "{body}");
        }
        for body in [r#"{"status":"Shipped"}"#, "{}", r#"["Completed"]"#] {
            assert!(
                matches!(refill_status(body.as_bytes()), Err(ReadError::Garbage(_))),
                "{body}"
            );
        }
        for g in GARBAGE {
            assert!(
                matches!(refill_status(g.as_bytes()), Err(ReadError::Garbage(_))),
                "{g:?}"
            );
        }
    }

    #[test]
    fn multi_refill_status_with_per_item_errors() {
        let body = br#"[{"refill":1,"status":"Completed"},{"refill":"2","status":"Rejected"},{"refill":3,"status":{"error":"Refill not found"}},{"refill":4,"status":"Shipped"},{"refill":5,"status":3},{"status":"Pending"}]"#;
        assert_eq!(
            multi_refill_status(body),
            Ok(MultiRefillStatus(vec![
                (1, Ok(RefillStatus::Completed)),
                (2, Ok(RefillStatus::Rejected)),
                (3, Err("Refill not found".into())),
                (4, bad()),
                // Numbers where a status string belongs are not read here.
                (5, bad()),
            ]))
        );
        for g in GARBAGE {
            assert!(
                matches!(
                    multi_refill_status(g.as_bytes()),
                    Err(ReadError::Garbage(_))
                ),
                "{g:?}"
            );
        }
    }

    #[test]
    fn canceled_with_per_item_errors() {
        let body = br#"[{"order":9,"cancel":{"error":"Incorrect order ID"}},{"order":2,"cancel":1},{"order":3,"cancel":"1"},{"order":4,"cancel":true},{"order":5,"cancel":0},{"order":6,"cancel":{"error":"error.cancel_not_allowed"}}]"#;
        assert_eq!(
            canceled(body),
            Ok(Canceled(vec![
                ("9".into(), Err("Incorrect order ID".into())),
                ("2".into(), Ok(())),
                ("3".into(), Ok(())),
                ("4".into(), Ok(())),
                ("5".into(), bad()),
                ("6".into(), Err("error.cancel_not_allowed".into())),
            ]))
        );
        for g in GARBAGE {
            assert!(
                matches!(canceled(g.as_bytes()), Err(ReadError::Garbage(_))),
                "{g:?}"
            );
        }
    }

    #[test]
    fn balance_in_upstream_dialects() {
        assert_eq!(
            balance(br#"{"balance":"100.84292","currency":"USD"}"#),
            Ok(Balance {
                balance: d("100.84292"),
                currency: "USD".into()
            })
        );
        assert_eq!(
            balance(br#"{"balance":100.84292,"currency":"USD","status":"success"}"#),
            Ok(Balance {
                balance: d("100.84292"),
                currency: "USD".into()
            })
        );
        assert_eq!(
            balance(br#"{"balance":"-1.5"}"#),
            Ok(Balance {
                balance: d("-1.5"),
                currency: String::new()
            })
        );
        assert_eq!(balance(br#"{"balance":0}"#).unwrap().balance, Decimal::ZERO);
        for body in [
            "{}",
            r#"{"balance":"lots"}"#,
            r#"{"balance":null}"#,
            r#"["100"]"#,
        ] {
            assert!(
                matches!(balance(body.as_bytes()), Err(ReadError::Garbage(_))),
                "{body}"
            );
        }
        for g in GARBAGE {
            assert!(
                matches!(balance(g.as_bytes()), Err(ReadError::Garbage(_))),
                "{g:?}"
            );
        }
    }
}
