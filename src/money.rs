//! Exact money arithmetic shared by everything that charges or refunds.
//!
//! The protocol shows five decimals (`"0.27819"`), so 0.00001 is the smallest unit we ever
//! store or send. Charges round *up* to it and refunds round *down*, so rounding can never
//! turn a refund into more than was paid.

use rust_decimal::{Decimal, RoundingStrategy};

/// Decimal places of every amount on the wire and in storage.
pub const SCALE: u32 = 5;

/// How an order is billed, derived from its service type and fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Billing {
    /// `rate` is the price of 1000 units; this many units are billed.
    PerThousand(u64),
    /// `rate` is the price of the whole package.
    Package,
    /// Billed per post as the upstream creates orders (Subscriptions); nothing up front.
    PerPost,
}

/// The charge for an order at `rate`, rounded up to 0.00001.
pub fn charge(rate: Decimal, billing: Billing) -> Decimal {
    let exact = match billing {
        Billing::PerThousand(units) => rate * Decimal::from(units) / Decimal::ONE_THOUSAND,
        Billing::Package => rate,
        Billing::PerPost => Decimal::ZERO,
    };
    round_up(exact)
}

/// The refund for `remains` undelivered units of `billed` units that cost `charge`, rounded
/// down to 0.00001 and never more than `charge`.
pub fn partial_refund(charge: Decimal, billed: u64, remains: u64) -> Decimal {
    if billed == 0 {
        return Decimal::ZERO;
    }
    let remains = remains.min(billed);
    round_down(charge * Decimal::from(remains) / Decimal::from(billed)).min(charge)
}

pub fn round_up(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(SCALE, RoundingStrategy::ToPositiveInfinity)
}

pub fn round_down(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(SCALE, RoundingStrategy::ToNegativeInfinity)
}

/// The wire form of an amount: always five decimals, as panels send it (`"100.84292"`).
pub fn format(value: Decimal) -> String {
    let mut v = round_down(value);
    v.rescale(SCALE);
    v.to_string()
}

/// Integer count of 0.00001 units, the storage form. `None` if it has more than five decimals
/// or does not fit.
pub fn to_units(value: Decimal) -> Option<i64> {
    if value.normalize().scale() > SCALE {
        return None;
    }
    let mut v = value;
    v.rescale(SCALE);
    i64::try_from(v.mantissa()).ok()
}

pub fn from_units(units: i64) -> Decimal {
    Decimal::new(units, SCALE)
}

/// Parses an amount given by an operator or a peer (`"12.5"`, `"0.27819"`).
pub fn parse(text: &str) -> Option<Decimal> {
    let text = text.trim();
    let value = text
        .parse::<Decimal>()
        .or_else(|_| Decimal::from_scientific(text))
        .ok()?;
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn charges_round_up_once() {
        // 0.90 at +25 % sells at 1.125; 157 units cost 0.176625 → 0.17663.
        assert_eq!(charge(d("1.125"), Billing::PerThousand(157)), d("0.17663"));
        assert_eq!(charge(d("0.9"), Billing::PerThousand(1000)), d("0.9"));
        assert_eq!(charge(d("8"), Billing::Package), d("8"));
        assert_eq!(charge(d("8"), Billing::PerPost), Decimal::ZERO);
    }

    #[test]
    fn refunds_round_down_and_never_exceed_the_charge() {
        assert_eq!(partial_refund(d("0.17663"), 157, 100), d("0.1125"));
        assert_eq!(partial_refund(d("0.00001"), 3, 1), d("0"));
        assert_eq!(partial_refund(d("1"), 10, 20), d("1"));
        assert_eq!(partial_refund(d("1"), 0, 20), d("0"));
    }

    #[test]
    fn wire_form_has_five_decimals() {
        assert_eq!(format(d("100.84292")), "100.84292");
        assert_eq!(format(d("1")), "1.00000");
        assert_eq!(format(d("0.1")), "0.10000");
        assert_eq!(format(d("-2.5")), "-2.50000");
    }

    #[test]
    fn storage_units_are_exact() {
        assert_eq!(to_units(d("100.84292")), Some(10_084_292));
        assert_eq!(to_units(d("1.000000")), Some(100_000));
        assert_eq!(to_units(d("0.000001")), None);
        assert_eq!(from_units(10_084_292), d("100.84292"));
        assert_eq!(parse(" 12.5 "), Some(d("12.5")));
        assert_eq!(parse("1e-5"), Some(d("0.00001")));
        assert_eq!(parse("abc"), None);
    }
}
