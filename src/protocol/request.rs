//! Typed actions, validated strictly: what a request asks for, before anyone looks up a key,
//! a service or an order.

use super::params::{Params, Value};
use super::{MAX_IDS, ProtocolError};

/// One id or a list of them: the single and multi forms of `status`, `refill` and
/// `refill_status` reply in different shapes, so the distinction is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ids {
    One(u64),
    Many(Vec<u64>),
}

impl Ids {
    pub fn as_slice(&self) -> &[u64] {
        match self {
            Ids::One(id) => std::slice::from_ref(id),
            Ids::Many(ids) => ids,
        }
    }
}

/// A request's action with its validated arguments. `add`'s order fields depend on the
/// service's type, so they are read later by [`super::order::OrderFields::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Services,
    Add {
        service: u64,
    },
    Status(Ids),
    Refill(Ids),
    RefillStatus(Ids),
    /// Always answered as a list, also when a client sends a single `order`.
    Cancel(Vec<u64>),
    Balance,
}

/// An API request read off the wire: its merged parameters and the `X-Api-Key` header.
pub struct ApiRequest {
    pub params: Params,
    pub key_header: Option<String>,
    /// `Accept-Encoding` allows gzip.
    pub accepts_gzip: bool,
}

impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRequest")
            .field("params", &self.params)
            .field("key_header", &self.key_header.as_ref().map(|_| "***"))
            .finish()
    }
}

impl ApiRequest {
    pub fn key(&self) -> Option<&str> {
        api_key(&self.params, self.key_header.as_deref())
    }
}

impl Action {
    /// Reads the action and its arguments. Accepts the seed's `multi_*` names beside the
    /// `action=status|refill|refill_status` + plural parameter that real panels use.
    pub fn parse(params: &Params) -> Result<Action, ProtocolError> {
        let name = params
            .text("action")?
            .ok_or(ProtocolError::IncorrectRequest)?;
        let order_ids = |multi| {
            ids(
                params,
                "orders",
                "order",
                multi,
                ProtocolError::IncorrectOrderId,
            )
        };
        Ok(match name.to_ascii_lowercase().as_str() {
            "services" => Action::Services,
            "balance" => Action::Balance,
            "add" => Action::Add {
                service: params
                    .text("service")?
                    .and_then(positive_id)
                    .ok_or(ProtocolError::IncorrectServiceId)?,
            },
            "status" => Action::Status(order_ids(false)?),
            "multi_status" => Action::Status(order_ids(true)?),
            "refill" => Action::Refill(order_ids(false)?),
            "multi_refill" => Action::Refill(order_ids(true)?),
            "refill_status" => Action::RefillStatus(refill_ids(params, false)?),
            "multi_refill_status" => Action::RefillStatus(refill_ids(params, true)?),
            "cancel" | "multi_cancel" => Action::Cancel(match order_ids(true)? {
                Ids::One(id) => vec![id],
                Ids::Many(list) => list,
            }),
            _ => return Err(ProtocolError::IncorrectRequest),
        })
    }

    /// The ids it asks about (orders, or refills for `refill_status`); none for the rest.
    pub fn ids(&self) -> &[u64] {
        match self {
            Action::Status(ids) | Action::Refill(ids) | Action::RefillStatus(ids) => ids.as_slice(),
            Action::Cancel(ids) => ids,
            Action::Services | Action::Add { .. } | Action::Balance => &[],
        }
    }

    /// The action's canonical name, for logs and metric labels (bounded cardinality).
    pub fn name(&self) -> &'static str {
        match self {
            Action::Services => "services",
            Action::Add { .. } => "add",
            Action::Status(_) => "status",
            Action::Refill(_) => "refill",
            Action::RefillStatus(_) => "refill_status",
            Action::Cancel(_) => "cancel",
            Action::Balance => "balance",
        }
    }
}

/// The API key: the `key` parameter, or an `X-Api-Key` header some gateways use.
pub fn api_key<'a>(params: &'a Params, header: Option<&'a str>) -> Option<&'a str> {
    params
        .text("key")
        .ok()
        .flatten()
        .or(header.map(str::trim).filter(|k| !k.is_empty()))
}

fn refill_ids(params: &Params, multi: bool) -> Result<Ids, ProtocolError> {
    ids(
        params,
        "refills",
        "refill",
        multi,
        ProtocolError::IncorrectRefillId,
    )
}

/// Reads the plural parameter if present, else the singular one. `multi` forces the list
/// shape even for a single id.
fn ids(
    params: &Params,
    plural: &str,
    single: &str,
    multi: bool,
    bad: ProtocolError,
) -> Result<Ids, ProtocolError> {
    if let Some(value) = params.get(plural) {
        return id_list(value, bad).map(Ids::Many);
    }
    match params.get(single) {
        Some(Value::One(text)) if !text.contains(',') => {
            let id = positive_id(text.trim()).ok_or(bad)?;
            Ok(if multi {
                Ids::Many(vec![id])
            } else {
                Ids::One(id)
            })
        }
        // A list in the singular parameter: answer it in the multi shape.
        Some(value) => id_list(value, bad).map(Ids::Many),
        None => Err(bad),
    }
}

/// 1–100 positive integers, comma-separated and/or as array elements, duplicates dropped
/// (a reply keyed by id cannot hold one twice).
fn id_list(value: &Value, bad: ProtocolError) -> Result<Vec<u64>, ProtocolError> {
    let texts = match value {
        Value::One(text) => std::slice::from_ref(text),
        Value::List(items) => items.as_slice(),
    };
    let mut ids = UniqueIds {
        list: Vec::with_capacity(MAX_IDS),
        highest: 0,
    };
    let blank = |p: &str| p.trim_ascii().is_empty() || (!p.is_ascii() && p.trim().is_empty());
    for text in texts {
        // Panels send plain digits and commas, which need no trimming: read byte by byte,
        // such a list costs half of the general reading (a poll of 100 is the common request).
        if text.bytes().all(|b| b.is_ascii_digit() || b == b',') {
            for piece in text.as_bytes().split(|&b| b == b',') {
                if !piece.is_empty() {
                    ids.push(digits(piece).ok_or_else(|| bad.clone())?)?;
                }
            }
        } else {
            for piece in text.split(',').filter(|p| !blank(p)) {
                ids.push(positive_id(piece).ok_or_else(|| bad.clone())?)?;
            }
        }
    }
    if ids.list.is_empty() {
        return Err(bad);
    }
    Ok(ids.list)
}

/// Ids in the order given, each once.
struct UniqueIds {
    list: Vec<u64>,
    highest: u64,
}

impl UniqueIds {
    fn push(&mut self, id: u64) -> Result<(), ProtocolError> {
        // Panels list ids in ascending order: only one below the highest yet can repeat.
        if id > self.highest || !self.list.contains(&id) {
            if self.list.len() == MAX_IDS {
                return Err(ProtocolError::TooManyIds);
            }
            self.highest = self.highest.max(id);
            self.list.push(id);
        }
        Ok(())
    }
}

/// A positive integer written in plain digits.
pub fn positive_id(text: &str) -> Option<u64> {
    positive_int(text)
}

pub(crate) fn positive_int(text: &str) -> Option<u64> {
    // ASCII trimming first: generic `trim` was a tenth of a 100-id `status` poll.
    let text = match text.trim_ascii() {
        t if t.is_ascii() => t,
        t => t.trim(),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits(text.as_bytes())
}

/// A positive integer from ASCII digits, which the caller has checked `text` is made of.
fn digits(text: &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for &b in text {
        n = n
            .checked_mul(10)?
            .checked_add(u64::from(b.wrapping_sub(b'0')))?;
    }
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(s: &str) -> Params {
        Params::parse_form(s.as_bytes()).unwrap()
    }

    fn action(s: &str) -> Result<Action, ProtocolError> {
        Action::parse(&form(s))
    }

    #[test]
    fn plain_actions() {
        assert_eq!(action("action=services"), Ok(Action::Services));
        assert_eq!(action("action=balance"), Ok(Action::Balance));
        assert_eq!(
            action("action=add&service=7"),
            Ok(Action::Add { service: 7 })
        );
        assert_eq!(
            action("action=frobnicate"),
            Err(ProtocolError::IncorrectRequest)
        );
        assert_eq!(action("key=k"), Err(ProtocolError::IncorrectRequest));
    }

    #[test]
    fn add_needs_a_positive_service_id() {
        for bad in [
            "action=add",
            "action=add&service=0",
            "action=add&service=x",
            "action=add&service=-1",
        ] {
            assert_eq!(action(bad), Err(ProtocolError::IncorrectServiceId), "{bad}");
        }
    }

    #[test]
    fn single_and_multi_forms() {
        assert_eq!(
            action("action=status&order=5"),
            Ok(Action::Status(Ids::One(5)))
        );
        assert_eq!(
            action("action=status&orders=1%2C2,3"),
            Ok(Action::Status(Ids::Many(vec![1, 2, 3])))
        );
        assert_eq!(
            action("action=multi_status&orders=4"),
            Ok(Action::Status(Ids::Many(vec![4])))
        );
        assert_eq!(
            action("action=status&orders[0]=1&orders[1]=2"),
            Ok(Action::Status(Ids::Many(vec![1, 2])))
        );
        assert_eq!(
            action("action=refill&order=9"),
            Ok(Action::Refill(Ids::One(9)))
        );
        assert_eq!(
            action("action=multi_refill&orders=9,10"),
            Ok(Action::Refill(Ids::Many(vec![9, 10])))
        );
        assert_eq!(
            action("action=refill_status&refill=3"),
            Ok(Action::RefillStatus(Ids::One(3)))
        );
        assert_eq!(
            action("action=refill_status&refills=3,4"),
            Ok(Action::RefillStatus(Ids::Many(vec![3, 4])))
        );
        assert_eq!(
            action("action=multi_refill_status&refills=3"),
            Ok(Action::RefillStatus(Ids::Many(vec![3])))
        );
        assert_eq!(
            action("action=cancel&orders=1,2"),
            Ok(Action::Cancel(vec![1, 2]))
        );
        assert_eq!(action("action=cancel&order=8"), Ok(Action::Cancel(vec![8])));
    }

    #[test]
    fn id_lists_are_strict() {
        assert_eq!(
            action("action=status"),
            Err(ProtocolError::IncorrectOrderId)
        );
        assert_eq!(
            action("action=status&orders="),
            Err(ProtocolError::IncorrectOrderId)
        );
        assert_eq!(
            action("action=status&orders=,"),
            Err(ProtocolError::IncorrectOrderId)
        );
        assert_eq!(
            action("action=status&orders=1,x"),
            Err(ProtocolError::IncorrectOrderId)
        );
        assert_eq!(
            action("action=status&order=1.5"),
            Err(ProtocolError::IncorrectOrderId)
        );
        assert_eq!(
            action("action=status&order=0"),
            Err(ProtocolError::IncorrectOrderId)
        );
        assert_eq!(
            action("action=refill_status&refills=a"),
            Err(ProtocolError::IncorrectRefillId)
        );
        let hundred: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
        let ok = format!("action=status&orders={}", hundred.join(","));
        assert!(matches!(action(&ok), Ok(Action::Status(Ids::Many(v))) if v.len() == 100));
        let over = format!("{ok},101");
        assert_eq!(action(&over), Err(ProtocolError::TooManyIds));
        // Duplicates collapse before counting.
        assert_eq!(
            action("action=status&orders=1,1,2,"),
            Ok(Action::Status(Ids::Many(vec![1, 2])))
        );
    }

    #[test]
    fn actions_in_every_request_shape() {
        let json = |s: &str| Action::parse(&Params::parse_json(s.as_bytes()).unwrap());
        assert_eq!(
            json(r#"{"action":"add","service":7}"#),
            Ok(Action::Add { service: 7 })
        );
        assert_eq!(
            json(r#"{"action":"add","service":"7"}"#),
            Ok(Action::Add { service: 7 })
        );
        assert_eq!(
            json(r#"{"action":"add","service":7.5}"#),
            Err(ProtocolError::IncorrectServiceId)
        );
        assert_eq!(
            json(r#"{"action":"status","orders":[1,"2",3]}"#),
            Ok(Action::Status(Ids::Many(vec![1, 2, 3])))
        );
        assert_eq!(
            json(r#"{"action":"status","order":5}"#),
            Ok(Action::Status(Ids::One(5)))
        );
        assert_eq!(
            json(r#"{"action":"cancel","orders":"4,5"}"#),
            Ok(Action::Cancel(vec![4, 5]))
        );
        assert_eq!(
            json(r#"{"action":"status","orders":[]}"#),
            Err(ProtocolError::IncorrectOrderId)
        );
        assert_eq!(
            json(r#"{"action":["status"]}"#),
            Err(ProtocolError::IncorrectRequest)
        );
        // Action names in any case, padded; `multi_cancel` too.
        assert_eq!(action("action=+Balance+"), Ok(Action::Balance));
        assert_eq!(action("action=SERVICES"), Ok(Action::Services));
        assert_eq!(
            action("action=multi_cancel&orders[]=3&orders[]=1"),
            Ok(Action::Cancel(vec![3, 1]))
        );
        // `undefined` is not an action, and an unset plural falls back to the singular.
        assert_eq!(
            action("action=undefined"),
            Err(ProtocolError::IncorrectRequest)
        );
        assert_eq!(
            action("action=status&orders=undefined&order=6"),
            Ok(Action::Status(Ids::One(6)))
        );
        // A comma list in the singular `order` answers in the multi shape.
        assert_eq!(
            action("action=status&order=1%2C2"),
            Ok(Action::Status(Ids::Many(vec![1, 2])))
        );
        assert_eq!(
            action("action=refill_status&refills[0]=8&refills[1]=8"),
            Ok(Action::RefillStatus(Ids::Many(vec![8])))
        );
        assert_eq!(
            action("action=refill&order=-2"),
            Err(ProtocolError::IncorrectOrderId)
        );
        assert_eq!(
            action("action=status&orders=18446744073709551616"),
            Err(ProtocolError::IncorrectOrderId)
        );
    }

    #[test]
    fn key_from_parameter_or_header() {
        let p = form("key=abc&action=balance");
        assert_eq!(api_key(&p, Some("hdr")), Some("abc"));
        let p = form("action=balance");
        assert_eq!(api_key(&p, Some(" hdr ")), Some("hdr"));
        assert_eq!(api_key(&p, None), None);
    }
}
