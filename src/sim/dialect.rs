//! The reply dialects of real panels the simulator can speak, so that the gateway's tolerant
//! reader is tested over sockets against each of them (`dialect` in the simulator's settings).

use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Value, json};

use crate::money;
use crate::protocol::Params;
use crate::protocol::Service;
use crate::server::{self, Reply};

/// How the simulated panel words its replies. The books behind them are the same.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// API v2 as documented: `{"order": 1}`, `{"error": …}`.
    #[default]
    Standard,
    /// A PHP panel script: every services field a string and no `refill`/`cancel`/`dripfeed`
    /// keys; `add` answered `{"status":"success","order":N}`; refusals answered
    /// `{"status":"error","message":…}` with HTTP 200 and `Content-Type: text/html`.
    PanelScript,
    /// `add` answered with a one-element list, `[{"order":"N"}]`.
    List,
    /// Opaque order ids (`"ord_01HG0000002A"`): in `add` replies, status keys and multi
    /// replies, and expected back in `order` / `orders`.
    Opaque,
}

impl std::str::FromStr for Dialect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(Value::String(s.trim().replace('-', "_")))
            .map_err(|_| format!("{s:?} is not a dialect: standard, panel_script, list or opaque"))
    }
}

/// The prefix of opaque ids; the rest is the panel's number in hex.
const OPAQUE_PREFIX: &str = "ord_01HG";

/// An order id as this dialect writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireId {
    pub id: u64,
    pub opaque: bool,
}

impl fmt::Display for WireId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.opaque {
            true => write!(f, "{OPAQUE_PREFIX}{:08X}", self.id),
            false => write!(f, "{}", self.id),
        }
    }
}

impl Serialize for WireId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.opaque {
            true => s.collect_str(self),
            false => s.serialize_u64(self.id),
        }
    }
}

impl Dialect {
    pub fn id(self, id: u64) -> WireId {
        WireId {
            id,
            opaque: self == Dialect::Opaque,
        }
    }

    /// The request with opaque ids turned back into the panel's numbers (other dialects: as
    /// sent). An id that is not ours stays as it is and is refused like any unknown id.
    pub fn incoming(self, params: &Params) -> Option<Params> {
        if self != Dialect::Opaque {
            return None;
        }
        let mut out = params.clone();
        for name in ["order", "orders"] {
            if let Ok(Some(text)) = params.text(name) {
                let ids: Vec<String> = text.split(',').map(decode).collect();
                out.insert(name, ids.join(","));
            }
        }
        Some(out)
    }

    /// The services reply.
    pub fn services(self, services: &[Service], standard: &Bytes) -> Bytes {
        if self != Dialect::PanelScript {
            return standard.clone();
        }
        let list: Vec<Value> = services
            .iter()
            .map(|s| {
                json!({
                    "service": s.service.to_string(),
                    "name": s.name,
                    "type": s.kind.as_str(),
                    "category": s.category,
                    "rate": money::format(s.rate),
                    "min": s.min.to_string(),
                    "max": s.max.to_string(),
                })
            })
            .collect();
        Bytes::from(serde_json::to_vec(&list).unwrap_or_default())
    }

    /// The reply to an `add` that created order `id`.
    pub fn added(self, id: u64) -> Bytes {
        let body = match self {
            Dialect::Standard => json!({ "order": id }),
            Dialect::PanelScript => json!({ "status": "success", "order": id }),
            Dialect::List => json!([{ "order": id.to_string() }]),
            Dialect::Opaque => json!({ "order": self.id(id).to_string() }),
        };
        Bytes::from(body.to_string())
    }

    /// A refusal with `text`, in this dialect.
    pub fn refusal(self, text: &str) -> Reply {
        if self != Dialect::PanelScript {
            return server::ok(crate::protocol::reply::error_bytes(text));
        }
        let body = json!({ "status": "error", "message": text }).to_string();
        let mut r = server::json_reply(StatusCode::OK, Bytes::from(body));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=UTF-8"),
        );
        r
    }
}

fn decode(id: &str) -> String {
    let id = id.trim();
    id.strip_prefix(OPAQUE_PREFIX)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .map_or_else(|| id.to_owned(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_ids_round_trip_and_others_stay() {
        let d = Dialect::Opaque;
        assert_eq!(d.id(42).to_string(), "ord_01HG0000002A");
        let p = Params::parse_form(b"order=ord_01HG0000002A&orders=ord_01HG00000001,7,x").unwrap();
        let p = d.incoming(&p).unwrap();
        assert_eq!(p.text("order").unwrap(), Some("42"));
        assert_eq!(p.text("orders").unwrap(), Some("1,7,x"));
        assert!(Dialect::Standard.incoming(&p).is_none());
    }

    #[test]
    fn dialects_parse_by_name() {
        assert_eq!("panel-script".parse(), Ok(Dialect::PanelScript));
        assert_eq!("opaque".parse(), Ok(Dialect::Opaque));
        assert!("php".parse::<Dialect>().is_err());
    }
}
