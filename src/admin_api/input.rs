//! What the operator types, checked by the same rules on every face (the API's JSON, the
//! console's forms): amounts of money, page sizes and cursors.

use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;

use super::ApiError;
use super::shapes::{MONEY, POSITIVE};
use crate::protocol::Status;

static MONEY_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(MONEY).expect("it compiles"));
static POSITIVE_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(POSITIVE).expect("it compiles"));

/// An amount of money, zero or more (a balance, a credit limit): `what` names it in the
/// refusal.
pub fn money(text: &str, what: &str) -> Result<Decimal, ApiError> {
    decimal(text, what, &MONEY_RE)
}

/// An amount above zero (a credit, a debit, a refund).
pub fn positive(text: &str, what: &str) -> Result<Decimal, ApiError> {
    decimal(text, what, &POSITIVE_RE)
}

/// A decimal string of the form `form` takes (the document's pattern).
fn decimal(text: &str, what: &str, form: &Regex) -> Result<Decimal, ApiError> {
    let refused = || {
        ApiError::bad_request(format!(
            "{what}: not an amount of the form {}: {text:?}",
            form.as_str()
        ))
    };
    if !form.is_match(text) {
        return Err(refused());
    }
    Decimal::from_str(text).map_err(|_| refused())
}

/// A page size: 50 unless given, at most 500.
pub fn limit(given: Option<u32>) -> Result<usize, ApiError> {
    match given {
        None => Ok(50),
        Some(n @ 1..=500) => Ok(n as usize),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit: {n} is out of range (1 to 500)"
        ))),
    }
}

/// An id cursor (lists newest first): items below it (`None`: from the newest).
pub fn id_cursor(cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
    cursor
        .map(|c| digits(c).ok_or_else(|| ApiError::bad_request("cursor: not one this API gave")))
        .transpose()
}

/// A count typed as text (an order's remains, from a form): a whole number, 0 or more.
pub fn count(text: &str, what: &str) -> Result<i64, ApiError> {
    digits(text).ok_or_else(|| {
        ApiError::bad_request(format!("{what}: a whole number, 0 or more, not {text:?}"))
    })
}

/// 1 to 18 ASCII digits (so that it fits an `i64`), nothing else: no sign, no space.
fn digits(text: &str) -> Option<i64> {
    let digits = (1..=18).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| text.parse().ok()).flatten()
}

/// An Idempotency-Key: 1 to 255 visible ASCII characters.
pub fn idempotency_key(key: Option<&str>) -> Result<Option<&str>, ApiError> {
    let visible = |k: &str| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic());
    match key {
        Some(k) if !visible(k) => Err(ApiError::bad_request(
            "Idempotency-Key: 1 to 255 visible ASCII characters",
        )),
        _ => Ok(key),
    }
}

/// A query string's parameters. Text with NUL in it is refused everywhere: PostgreSQL cannot
/// store it.
pub fn query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    if query.to_ascii_lowercase().contains("%00") {
        return Err(ApiError::bad_request("query: text must not contain NUL"));
    }
    serde_urlencoded::from_str(query).map_err(|e| ApiError::bad_request(format!("query: {e}")))
}

/// A final status the operator read on the upstream's own panel: `Completed`, `Partial` or
/// `Canceled`, case as typed.
pub fn final_status(text: &str) -> Result<Status, ApiError> {
    Status::parse_final(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "status: one of {}, not {text:?}",
            Status::FINAL.map(Status::as_str).join(", ")
        ))
    })
}
