//! Property tests of the wire protocol, through the public API only:
//!
//! - any request (bytes, content type, query) is a typed value or a `ProtocolError`, never a
//!   panic, and whatever `add` fields are accepted are forwarded so that they read back the same;
//! - every reply panelgate sends reads back, through the tolerant upstream reader, as the value
//!   it was made from;
//! - the form encoder direction: any field map, percent-encoded the ways clients do it, parses
//!   back to the same values.
//!
//! Cases default to 512–1024 per property; `PROPTEST_CASES=<n>` overrides them all.

use std::collections::BTreeMap;

use panelgate::money;
use panelgate::protocol::lenient::{self, ServiceList};
use panelgate::protocol::order::OrderFields;
use panelgate::protocol::params::Value;
use panelgate::protocol::reply::{
    self, Added, Balance, Canceled, Item, MultiRefill, MultiRefillStatus, MultiStatus, OrderStatus,
    RefillCreated, RefillState, Remains,
};
use panelgate::protocol::{
    Action, Ids, MAX_IDS, Params, ProtocolError, RefillStatus, Service, ServiceType, Status,
    request,
};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::contextualize_config;
use rust_decimal::Decimal;

/// `cases` unless `PROPTEST_CASES` says otherwise. (`ProptestConfig::with_cases` alone would
/// ignore the variable: only `Config::default()` reads it, and `contextualize_config` applies
/// it on top of an explicit config.)
fn cases(cases: u32) -> ProptestConfig {
    contextualize_config(ProptestConfig {
        cases,
        // CI runs these from a read-only or throw-away checkout; failures print the input.
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

const FIELDS: &[&str] = &[
    "key",
    "action",
    "service",
    "link",
    "quantity",
    "runs",
    "interval",
    "comments",
    "usernames",
    "hashtags",
    "hashtag",
    "username",
    "media",
    "answer_number",
    "groups",
    "country",
    "device",
    "type_of_traffic",
    "google_keyword",
    "referring_url",
    "min",
    "max",
    "posts",
    "old_posts",
    "delay",
    "expiry",
    "order",
    "orders",
    "refill",
    "refills",
    "orders[]",
    "orders[0]",
    "refills[]",
    "comments[]",
    "usernames[1]",
    "link[]",
    "quantity[]",
];

const VALUES: &[&str] = &[
    "add",
    "ADD",
    "services",
    "balance",
    "status",
    "multi_status",
    "refill",
    "multi_refill",
    "refill_status",
    "multi_refill_status",
    "cancel",
    "multi_cancel",
    "0",
    "1",
    "2",
    "3",
    "5",
    "6",
    "30",
    "45",
    "600",
    "100",
    "-1",
    "1.5",
    "1e3",
    " 7 ",
    "18446744073709551615",
    "18446744073709551616",
    "1,2,3",
    "1,,2",
    ",",
    "1,x",
    "undefined",
    "",
    " ",
    "https://example.com/p?a=1&b=2",
    "a\nb",
    "a\r\nb\r\n",
    "\n\r\n",
    "undefined\n",
    " undefined ",
    "1/1/2030",
    "29/02/2028",
    "31/02/2030",
    "2030-01-01",
    "US",
    "#tag",
    "é🔥",
];

fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(VALUES).prop_map(str::to_owned),
        1 => "[0-9]{1,25}",
        1 => proptest::collection::vec(1u64..200, 0..120).prop_map(|ids| {
            ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
        }),
        2 => any::<String>(),
    ]
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(FIELDS).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// How a client spells one form: `+` or `%20`, upper or lower hex, raw UTF-8 or encoded,
/// minimal or everything encoded.
#[derive(Debug, Clone, Copy)]
struct Encoding {
    space_plus: bool,
    lower_hex: bool,
    raw_utf8: bool,
    encode_all: bool,
}

fn encoding() -> impl Strategy<Value = Encoding> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(space_plus, lower_hex, raw_utf8, encode_all)| Encoding {
            space_plus,
            lower_hex,
            raw_utf8,
            encode_all,
        },
    )
}

fn percent_encode(text: &str, e: Encoding) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    let hex = |out: &mut String, b: u8| {
        if e.lower_hex {
            out.push_str(&format!("%{b:02x}"));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    };
    for ch in text.chars() {
        if !ch.is_ascii() {
            if e.raw_utf8 {
                out.push(ch);
            } else {
                let mut buf = [0u8; 4];
                for &b in ch.encode_utf8(&mut buf).as_bytes() {
                    hex(&mut out, b);
                }
            }
            continue;
        }
        let raw = match ch {
            ' ' if e.space_plus => {
                out.push('+');
                continue;
            }
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '.' | '_' | '~' => !e.encode_all,
            '/' | ':' | ',' | '@' | '!' | '(' | ')' | '*' | ';' | '?' => !e.encode_all,
            _ => false,
        };
        if raw {
            out.push(ch);
        } else {
            hex(&mut out, ch as u8);
        }
    }
    out
}

fn form_body(pairs: &[(String, String)], e: Encoding) -> Vec<u8> {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k, e), percent_encode(v, e)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

fn json_body(pairs: &[(String, String)], numbers: bool) -> Vec<u8> {
    let mut object = serde_json::Map::new();
    for (k, v) in pairs {
        let value = match v.parse::<u64>() {
            Ok(n) if numbers => serde_json::Value::from(n),
            _ if k.ends_with(']') => serde_json::Value::from(vec![v.clone()]),
            _ => serde_json::Value::from(v.clone()),
        };
        object.insert(k.clone(), value);
    }
    serde_json::to_vec(&object).unwrap()
}

/// Bodies: raw bytes, plausible forms (sometimes with a few bytes flipped), plausible JSON.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let pairs = || proptest::collection::vec((field_name(), field_value()), 0..12);
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..256),
        4 => (pairs(), encoding()).prop_map(|(p, e)| form_body(&p, e)),
        1 => (
            pairs(),
            encoding(),
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)
        )
            .prop_map(|(p, e, flips): (Vec<(String, String)>, Encoding, Vec<_>)| {
                let mut body = form_body(&p, e);
                for (at, byte) in flips {
                    if !body.is_empty() {
                        let i = at.index(body.len());
                        body[i] = byte;
                    }
                }
                body
            }),
        3 => (pairs(), any::<bool>()).prop_map(|(p, n)| json_body(&p, n)),
    ]
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("application/x-www-form-urlencoded".to_owned())),
        Just(Some(
            "application/x-www-form-urlencoded; charset=UTF-8".to_owned()
        )),
        Just(Some("application/json".to_owned())),
        Just(Some("multipart/form-data; boundary=----x".to_owned())),
        any::<String>().prop_map(Some),
    ]
}

fn query() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        (
            proptest::collection::vec((field_name(), field_value()), 0..4),
            encoding()
        )
            .prop_map(|(p, e)| Some(String::from_utf8(form_body(&p, e)).unwrap())),
        any::<String>().prop_map(Some),
    ]
}

/// A value the named field plausibly takes, mostly well-formed, sometimes not.
fn good_value(field: &'static str) -> BoxedStrategy<String> {
    let num = |r: std::ops::Range<u64>| r.prop_map(|n| n.to_string()).boxed();
    let word = || "[a-z0-9_.#@/:?=&+% -]{1,16}".boxed();
    let lines = || {
        proptest::collection::vec(
            prop_oneof![4 => "[a-z0-9 #@]{0,10}", 1 => Just("undefined".to_owned())],
            0..5,
        )
        .prop_flat_map(|v| select(&["\n", "\r\n"][..]).prop_map(move |sep| v.join(sep)))
        .boxed()
    };
    let good = match field {
        "action" => select(
            &[
                "add",
                "add",
                "add",
                "status",
                "refill",
                "refill_status",
                "cancel",
            ][..],
        )
        .prop_map(str::to_owned)
        .boxed(),
        "service" => num(0..20),
        "quantity" | "min" | "max" => num(0..20_000),
        "runs" | "interval" | "answer_number" | "posts" | "old_posts" => num(0..12),
        "device" => num(0..7),
        "type_of_traffic" => num(0..5),
        "delay" => select(&[0u64, 5, 10, 30, 45, 90, 600, 601][..])
            .prop_map(|d| d.to_string())
            .boxed(),
        "expiry" => (0u32..33, 0u32..14, 1999u32..2102)
            .prop_map(|(d, m, y)| format!("{d}/{m}/{y}"))
            .boxed(),
        "comments" | "usernames" | "hashtags" | "groups" => lines(),
        "order" | "orders" | "refill" | "refills" => proptest::collection::vec(0u64..50, 1..4)
            .prop_map(|v| v.iter().map(u64::to_string).collect::<Vec<_>>().join(","))
            .boxed(),
        _ => word(),
    };
    prop_oneof![8 => good, 1 => field_value()].boxed()
}

/// Whole requests: every field of every type, each there or not, with plausible values.
fn request_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    let plain: Vec<&'static str> = FIELDS
        .iter()
        .copied()
        .filter(|f| !f.contains('['))
        .collect();
    let fields: Vec<_> = plain
        .into_iter()
        .map(|f| proptest::option::weighted(0.6, good_value(f)).prop_map(move |v| (f, v)))
        .collect();
    (
        fields,
        proptest::collection::vec((field_name(), field_value()), 0..3),
    )
        .prop_map(|(fields, extra)| {
            let mut pairs: Vec<(String, String)> = fields
                .into_iter()
                .filter_map(|(f, v)| v.map(|v| (f.to_owned(), v)))
                .collect();
            pairs.extend(extra);
            pairs
        })
}

fn kinds() -> Vec<ServiceType> {
    let mut all = ServiceType::ALL.to_vec();
    all.push(ServiceType::Other("Something New".into()));
    all
}

fn check_ids(ids: &[u64]) {
    assert!(!ids.is_empty() && ids.len() <= MAX_IDS, "{ids:?}");
    assert!(ids.iter().all(|&id| id > 0), "{ids:?}");
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "duplicate ids: {ids:?}");
}

/// One request all the way through: a typed value or a `ProtocolError` at every step, and
/// the invariants the rest of panelgate relies on for whatever is accepted.
fn exercise(query: Option<&str>, content_type: Option<&str>, body: &[u8]) {
    let params: Params = match Params::from_parts(query, content_type, body) {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let _ = request::api_key(&params, Some(" header "));
    match Action::parse(&params) {
        Ok(Action::Add { service }) => assert!(service > 0),
        Ok(Action::Status(ids) | Action::Refill(ids) | Action::RefillStatus(ids)) => {
            if let Ids::One(id) = ids {
                assert!(id > 0);
            }
            check_ids(ids.as_slice());
        }
        Ok(Action::Cancel(ids)) => check_ids(&ids),
        Ok(a @ (Action::Services | Action::Balance)) => assert!(!a.name().is_empty()),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    for kind in kinds() {
        let fields = match OrderFields::parse(&kind, &params) {
            Ok(f) => f,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                continue;
            }
        };
        assert!(!matches!(kind, ServiceType::Other(_)));
        assert_eq!(
            fields.link.is_some(),
            kind != ServiceType::Subscriptions,
            "{kind:?}"
        );
        let _ = fields.billing(&kind);
        let _ = fields.limited_quantity(&kind);
        for dripfeed in [false, true] {
            let _ = fields.check_limits(&kind, 1, 10_000, dripfeed);
        }
        // What is accepted is forwarded so that it reads back the same.
        let mut forwarded = Params::default();
        for (name, value) in fields.to_form() {
            assert!(!forwarded.contains(name), "{kind:?}: {name} twice");
            forwarded.insert(name, value);
        }
        assert_eq!(
            OrderFields::parse(&kind, &forwarded).as_ref(),
            Ok(&fields),
            "{kind:?}: forwarded {:?}",
            fields.to_form()
        );
    }
}

proptest! {
    #![proptest_config(cases(1024))]

    #[test]
    fn plausible_requests_in_every_shape(
        pairs in request_pairs(),
        e in encoding(),
        shape in 0..4usize,
        split in any::<prop::sample::Index>(),
    ) {
        match shape {
            0 => exercise(None, Some("application/x-www-form-urlencoded"), &form_body(&pairs, e)),
            1 => exercise(None, Some("application/json"), &json_body(&pairs, e.space_plus)),
            2 => {
                let q = String::from_utf8(form_body(&pairs, e)).unwrap();
                exercise(Some(&q), None, b"");
            }
            _ => {
                let at = split.index(pairs.len() + 1);
                let q = String::from_utf8(form_body(&pairs[..at], e)).unwrap();
                exercise(Some(&q), None, &json_body(&pairs[at..], e.lower_hex));
            }
        }
    }

    #[test]
    fn any_request_is_a_typed_value_or_a_protocol_error(
        query in query(),
        content_type in content_type(),
        body in body(),
    ) {
        exercise(query.as_deref(), content_type.as_deref(), &body);
    }

    #[test]
    fn any_bytes_in_any_shape(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        query in proptest::collection::vec(any::<u8>(), 0..64),
        shape in 0..4usize,
    ) {
        let content_type = [
            None,
            Some("application/x-www-form-urlencoded"),
            Some("application/json"),
            Some("multipart/form-data; boundary=x"),
        ][shape];
        let query = String::from_utf8_lossy(&query);
        exercise(None, content_type, &body);
        exercise(Some(&query), content_type, &body);
        // A body that is JSON by its first byte but declared otherwise.
        let mut json = b"{".to_vec();
        json.extend_from_slice(&body);
        exercise(None, content_type, &json);
    }

    /// Plain digits and commas are read by a shorter way than a list with spaces in it: both
    /// ways give the same ids, or the same refusal (zero, overflow, too many, none).
    #[test]
    fn an_id_list_reads_the_same_with_spaces_around_its_pieces(
        pieces in proptest::collection::vec(
            prop_oneof![
                4 => (1u64..200).prop_map(|n| n.to_string()),
                1 => Just(String::new()),
                1 => Just("0".to_owned()),
                1 => Just("007".to_owned()),
                1 => Just("18446744073709551616".to_owned()),
                1 => any::<u64>().prop_map(|n| n.to_string()),
            ],
            0..130,
        ),
    ) {
        let read = |list: String| {
            let mut p = Params::default();
            p.insert("action", "status");
            p.insert("orders", list);
            Action::parse(&p)
        };
        let plain = read(pieces.join(","));
        let spaced = read(pieces.iter().map(|p| format!(" {p} ")).collect::<Vec<_>>().join(","));
        prop_assert_eq!(&plain, &spaced);
        if let Ok(Action::Status(ids)) = &plain {
            check_ids(ids.as_slice());
        }
    }

    #[test]
    fn multipart_is_always_refused(body in proptest::collection::vec(any::<u8>(), 1..128)) {
        prop_assert_eq!(
            Params::from_parts(None, Some("multipart/form-data; boundary=x"), &body),
            Err(ProtocolError::UnsupportedBody)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Replies: what panelgate sends reads back as what it was made from
// ---------------------------------------------------------------------------------------------

/// Amounts with at most five decimals, as stored and sent.
fn money_value() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        any::<i64>().prop_map(money::from_units),
        (0i64..100_000_000, 0u32..=5).prop_map(|(n, scale)| Decimal::new(n, scale)),
        Just(Decimal::ZERO),
    ]
}

fn id() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..1_000_000, 1u64..=u64::MAX]
}

/// Error texts: anything non-empty without surrounding whitespace (readers trim them).
fn error_text() -> impl Strategy<Value = String> {
    prop_oneof![
        select(
            &[
                "Incorrect order ID",
                "Refill not found",
                "Refill is disabled for this service",
                "neworder.error.not_enough_funds",
                "undefined",
                "null",
                "{\"error\":1}",
            ][..]
        )
        .prop_map(str::to_owned),
        any::<String>().prop_filter_map("blank", |s| {
            let t = s.trim();
            (!t.is_empty()).then(|| t.to_owned())
        }),
    ]
}

fn item<T: std::fmt::Debug + Clone>(
    ok: impl Strategy<Value = T>,
) -> impl Strategy<Value = Item<T>> {
    prop_oneof![3 => ok.prop_map(Ok), 1 => error_text().prop_map(Err)]
}

fn status() -> impl Strategy<Value = Status> {
    select(Status::ALL.to_vec())
}

fn refill_status() -> impl Strategy<Value = RefillStatus> {
    select(RefillStatus::ALL.to_vec())
}

fn order_status() -> impl Strategy<Value = OrderStatus> {
    (
        money_value(),
        any::<u64>(),
        status(),
        prop_oneof![
            any::<i64>().prop_map(Remains::Count),
            Just(Remains::Unknown)
        ],
        prop_oneof![Just("USD".to_owned()), any::<String>()],
        // Drip-feed orders carry runs and interval; others neither. Child orders are never
        // sent, so they come back as none.
        proptest::option::of((any::<u64>(), any::<u64>())),
    )
        .prop_map(
            |(charge, start_count, status, remains, currency, drip)| OrderStatus {
                charge,
                start_count,
                status,
                remains,
                currency,
                runs: drip.map(|d| d.0),
                interval: drip.map(|d| d.1),
                orders: Vec::new(),
            },
        )
}

/// A service type as an upstream may list it: a known one, or an unknown name that does not
/// read as a known one.
fn service_type() -> impl Strategy<Value = ServiceType> {
    prop_oneof![
        3 => select(ServiceType::ALL.to_vec()),
        1 => any::<String>().prop_filter_map("reads as a known type", |s| {
            let name = s.trim().to_owned();
            (ServiceType::parse(&name) == ServiceType::Other(name.clone()))
                .then_some(ServiceType::Other(name))
        }),
    ]
}

fn service() -> impl Strategy<Value = Service> {
    (
        (id(), any::<String>(), service_type(), any::<String>()),
        (money_value(), any::<u64>(), any::<u64>()),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(any::<String>()),
        ),
    )
        .prop_map(
            |(
                (service, name, kind, category),
                (rate, min, max),
                (refill, cancel, dripfeed, desc),
            )| Service {
                service,
                name,
                kind,
                category,
                rate,
                min,
                max,
                refill,
                cancel,
                dripfeed,
                desc,
            },
        )
}

/// An object keyed by id is unordered in JSON: compare multi-status replies by id.
fn by_id<I: Clone + Ord, T: Clone>(items: &[(I, T)]) -> Vec<(I, T)> {
    let mut v = items.to_vec();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Our ids as an upstream's reader reads them: as text.
fn as_text<T: Clone>(items: &[(u64, T)]) -> Vec<(String, T)> {
    items
        .iter()
        .map(|(id, v)| (id.to_string(), v.clone()))
        .collect()
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn added_round_trips(order in id()) {
        let bytes = reply::to_bytes(&Added { order });
        prop_assert_eq!(lenient::added(&bytes), Ok(order.to_string()));
    }

    #[test]
    fn order_status_round_trips(s in order_status()) {
        let bytes = reply::to_bytes(&s);
        prop_assert_eq!(lenient::status(&bytes), Ok(s));
    }

    #[test]
    fn multi_status_round_trips(
        items in proptest::collection::btree_map(id(), item(order_status()), 0..20)
            .prop_flat_map(|m| Just(m.into_iter().collect::<Vec<_>>()).prop_shuffle()),
    ) {
        let bytes = reply::to_bytes(&MultiStatus(items.clone()));
        let MultiStatus(read) = lenient::multi_status(&bytes).unwrap();
        prop_assert_eq!(by_id(&read), by_id(&as_text(&items)));
    }

    #[test]
    fn refill_created_round_trips(refill in id()) {
        let bytes = reply::to_bytes(&RefillCreated { refill });
        prop_assert_eq!(lenient::refill_created(&bytes), Ok(refill));
    }

    #[test]
    fn multi_refill_round_trips(
        items in proptest::collection::vec((id(), item(id())), 0..20),
    ) {
        let m = MultiRefill(items);
        prop_assert_eq!(lenient::multi_refill(&reply::to_bytes(&m)), Ok(MultiRefill(as_text(&m.0))));
    }

    #[test]
    fn refill_state_round_trips(status in refill_status()) {
        let bytes = reply::to_bytes(&RefillState { status });
        prop_assert_eq!(lenient::refill_status(&bytes), Ok(status));
    }

    #[test]
    fn multi_refill_status_round_trips(
        items in proptest::collection::vec((id(), item(refill_status())), 0..20),
    ) {
        let m = MultiRefillStatus(items);
        prop_assert_eq!(lenient::multi_refill_status(&reply::to_bytes(&m)), Ok(m));
    }

    #[test]
    fn canceled_round_trips(
        items in proptest::collection::vec((id(), item(Just(()))), 0..20),
    ) {
        let c = Canceled(items);
        prop_assert_eq!(lenient::canceled(&reply::to_bytes(&c)), Ok(Canceled(as_text(&c.0))));
    }

    #[test]
    fn balance_round_trips(
        balance in money_value(),
        currency in prop_oneof![Just("USD".to_owned()), any::<String>()],
    ) {
        let b = Balance { balance, currency };
        prop_assert_eq!(lenient::balance(&reply::to_bytes(&b)), Ok(b));
    }

    #[test]
    fn services_round_trip(list in proptest::collection::vec(service(), 0..12)) {
        let bytes = reply::to_bytes(&list);
        prop_assert_eq!(
            lenient::services(&bytes),
            Ok(ServiceList { services: list, skipped: 0 })
        );
    }

    /// Amounts go out with exactly five decimals and come back exact.
    #[test]
    fn money_wire_form_is_exact(amount in money_value()) {
        let text = money::format(amount);
        let (_, decimals) = text.split_once('.').unwrap();
        prop_assert_eq!(decimals.len(), 5);
        prop_assert_eq!(money::parse(&text), Some(amount));
        prop_assert_eq!(money::to_units(amount).map(money::from_units), Some(amount));
    }

    /// An error reply reads back as the same refusal from every reader.
    #[test]
    fn error_replies_are_refusals(text in error_text()) {
        let bytes = reply::error_bytes(&text);
        let refused = Err::<(), _>(lenient::ReadError::Refused(text.clone()));
        prop_assert_eq!(lenient::added(&bytes).map(drop), refused.clone());
        prop_assert_eq!(lenient::status(&bytes).map(drop), refused.clone());
        prop_assert_eq!(lenient::multi_status(&bytes).map(drop), refused.clone());
        prop_assert_eq!(lenient::refill_created(&bytes).map(drop), refused.clone());
        prop_assert_eq!(lenient::multi_refill(&bytes).map(drop), refused.clone());
        prop_assert_eq!(lenient::refill_status(&bytes).map(drop), refused.clone());
        prop_assert_eq!(lenient::multi_refill_status(&bytes).map(drop), refused.clone());
        prop_assert_eq!(lenient::canceled(&bytes).map(drop), refused.clone());
        prop_assert_eq!(lenient::balance(&bytes).map(drop), refused.clone());
        prop_assert_eq!(lenient::services(&bytes).map(drop), refused);
        prop_assert_eq!(lenient::refusal_text(&bytes), Some(text));
    }

    /// Whatever an upstream sends, the readers answer a value or a `ReadError`.
    #[test]
    fn readers_never_panic(body in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        any::<String>().prop_map(String::into_bytes),
    ]) {
        let _ = lenient::services(&body);
        let _ = lenient::added(&body);
        let _ = lenient::status(&body);
        let _ = lenient::multi_status(&body);
        let _ = lenient::refill_created(&body);
        let _ = lenient::multi_refill(&body);
        let _ = lenient::refill_status(&body);
        let _ = lenient::multi_refill_status(&body);
        let _ = lenient::canceled(&body);
        let _ = lenient::balance(&body);
        let _ = lenient::refusal_text(&body);
    }
}

// ---------------------------------------------------------------------------------------------
// The form encoder direction
// ---------------------------------------------------------------------------------------------

/// Names that are plain parameters (not `name[...]` arrays).
fn plain_name() -> impl Strategy<Value = String> {
    prop_oneof![select(FIELDS).prop_map(str::to_owned), any::<String>(),]
        .prop_filter("array syntax", |n| {
            !(n.ends_with(']') && n.find('[').is_some_and(|i| i > 0))
        })
}

fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => any::<String>(),
        1 => Just("undefined".to_owned()),
        1 => Just(String::new()),
        1 => "[ \r\n\t,&=+%a-z0-9]{0,12}",
    ]
}

fn present(v: &str) -> bool {
    !v.is_empty() && v != "undefined"
}

fn assert_same(params: &Params, map: &BTreeMap<String, String>) -> Result<(), TestCaseError> {
    for (name, value) in map {
        if present(value) {
            prop_assert_eq!(
                params.get(name),
                Some(&Value::One(value.clone())),
                "{}",
                name
            );
        } else {
            prop_assert!(
                !params.contains(name),
                "{} = {:?} should be absent",
                name,
                value
            );
        }
    }
    prop_assert_eq!(params.len(), map.values().filter(|v| present(v)).count());
    Ok(())
}

proptest! {
    #![proptest_config(cases(1024))]

    #[test]
    fn form_encoded_maps_parse_back(
        map in proptest::collection::btree_map(plain_name(), any_value(), 0..10),
        e in encoding(),
        shuffle in any::<prop::sample::Index>(),
    ) {
        let mut pairs: Vec<(String, String)> = map.clone().into_iter().collect();
        if !pairs.is_empty() {
            let n = shuffle.index(pairs.len());
            pairs.rotate_left(n);
        }
        let body = form_body(&pairs, e);
        assert_same(&Params::parse_form(&body).unwrap(), &map)?;
        // The same as a body, as a query string, and with no content type.
        let text = String::from_utf8(body.clone()).unwrap();
        assert_same(&Params::from_parts(Some(&text), None, b"").unwrap(), &map)?;
        if !body.starts_with(b"%7B") && !body.starts_with(b"{") {
            assert_same(&Params::from_parts(None, None, &body).unwrap(), &map)?;
        }
        assert_same(
            &Params::from_parts(None, Some("application/x-www-form-urlencoded"), &body).unwrap(),
            &map,
        )?;
    }

    #[test]
    fn json_objects_parse_back(map in proptest::collection::btree_map(any::<String>(), any_value(), 0..10)) {
        let body = serde_json::to_vec(&map).unwrap();
        assert_same(&Params::parse_json(&body).unwrap(), &map)?;
        assert_same(&Params::from_parts(None, None, &body).unwrap(), &map)?;
    }

    #[test]
    fn query_and_body_merge_with_the_body_winning(
        query in proptest::collection::btree_map(plain_name(), any_value(), 0..6),
        body in proptest::collection::btree_map(plain_name(), any_value(), 0..6),
        e in encoding(),
        json in any::<bool>(),
    ) {
        let q = String::from_utf8(form_body(&query.clone().into_iter().collect::<Vec<_>>(), e)).unwrap();
        let (ct, b) = if json {
            ("application/json", serde_json::to_vec(&body).unwrap())
        } else {
            ("application/x-www-form-urlencoded", form_body(&body.clone().into_iter().collect::<Vec<_>>(), e))
        };
        let params = Params::from_parts(Some(&q), Some(ct), &b).unwrap();
        for (name, value) in &body {
            if present(value) {
                prop_assert_eq!(params.get(name), Some(&Value::One(value.clone())));
            }
        }
        for (name, value) in &query {
            if !body.contains_key(name) {
                if present(value) {
                    prop_assert_eq!(params.get(name), Some(&Value::One(value.clone())));
                } else {
                    prop_assert!(!params.contains(name));
                }
            }
        }
    }

    /// Arrays, PHP/qs style, read back element by element (empty and `undefined` dropped).
    #[test]
    fn form_arrays_parse_back(
        items in proptest::collection::vec(any_value(), 1..8),
        indexed in any::<bool>(),
        e in encoding(),
    ) {
        let pairs: Vec<(String, String)> = items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let name = if indexed { format!("orders[{i}]") } else { "orders[]".to_owned() };
                (name, v.clone())
            })
            .collect();
        let params = Params::parse_form(&form_body(&pairs, e)).unwrap();
        let want: Vec<String> = items.into_iter().filter(|v| present(v)).collect();
        prop_assert_eq!(params.get("orders"), Some(&Value::List(want)));
    }

    /// Id lists in every spelling read as the same ids.
    #[test]
    fn id_lists_in_every_spelling(
        ids in proptest::collection::btree_set(1u64..=u64::MAX, 1..=MAX_IDS),
        spelling in 0..5usize,
    ) {
        let ids: Vec<u64> = ids.into_iter().collect();
        let list: Vec<String> = ids.iter().map(u64::to_string).collect();
        let body = match spelling {
            0 => format!("action=status&orders={}", list.join(",")),
            1 => format!("action=status&orders={}", list.join("%2C")),
            2 => list.iter().enumerate().map(|(i, id)| format!("orders[{i}]={id}&")).collect::<String>() + "action=status",
            3 => list.iter().map(|id| format!("orders%5B%5D={id}&")).collect::<String>() + "action=status",
            _ => serde_json::json!({"action": "status", "orders": ids}).to_string(),
        };
        let p = Params::from_parts(None, None, body.as_bytes()).unwrap();
        prop_assert_eq!(Action::parse(&p), Ok(Action::Status(Ids::Many(ids))));
    }
}
