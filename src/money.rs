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

/// The charge for an order at `rate`, rounded up to 0.00001. `None` if it overflows: an
/// upstream's rate and limits and a client's quantity all come from outside.
pub fn charge(rate: Decimal, billing: Billing) -> Option<Decimal> {
    let exact = match billing {
        Billing::PerThousand(units) => {
            rate.checked_mul(Decimal::from(units))? / Decimal::ONE_THOUSAND
        }
        Billing::Package => rate,
        Billing::PerPost => Decimal::ZERO,
    };
    Some(round_up(exact))
}

/// The refund for `remains` undelivered units of `billed` units that cost `charge`, rounded
/// down to 0.00001 and never more than `charge`.
pub fn partial_refund(charge: Decimal, billed: u64, remains: u64) -> Decimal {
    if billed == 0 {
        return Decimal::ZERO;
    }
    let remains = Decimal::from(remains.min(billed));
    let billed = Decimal::from(billed);
    // `charge × remains` overflows for orders of some 10^16 units; dividing first loses only
    // digits far below 0.00001, and the result stays capped by the charge.
    let exact = match charge.checked_mul(remains) {
        Some(product) => product / billed,
        None if remains == billed => charge,
        None => (charge / billed).checked_mul(remains).unwrap_or(charge),
    };
    round_down(exact).min(charge)
}

/// The share of its cost an upstream gave back on an order: 1 − final/initial of its own
/// `charge`, clamped to 0..=1. `None` when its figures cannot tell: either is missing or not
/// positive (panels that do not track the charge omit it or send 0, which must not read as
/// "everything given back").
pub fn upstream_share(initial: Option<Decimal>, last: Option<Decimal>) -> Option<Decimal> {
    let (initial, last) = (initial?, last?);
    if initial <= Decimal::ZERO || last <= Decimal::ZERO {
        return None;
    }
    Some((Decimal::ONE - last / initial).clamp(Decimal::ZERO, Decimal::ONE))
}

/// Why a Partial order got no automatic refund: a person must settle it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withheld {
    /// Package-billed, and the upstream's charge cannot tell what it gave back.
    RefundUnknown,
    /// Per-unit, and the upstream did not say how many units remain.
    NoRemains,
}

/// The refund of a `Partial` order that cost `charge` for `billed` units, as the upstream's
/// own figures allow, rounded down and never more than `charge`:
/// - billed as one unit (packages): `charge × share`, where `share` is what
///   [`upstream_share`] found; no share, no refund (`RefundUnknown`);
/// - per unit: the pro-rata refund of `remains` (negative: nothing), also capped by
///   `charge × share` where a share is known; no `remains`, no refund (`NoRemains`).
pub fn partial_settlement(
    charge: Decimal,
    billed: u64,
    remains: Option<i64>,
    share: Option<Decimal>,
) -> Result<Decimal, Withheld> {
    let by_share = share.map(|s| round_down(charge * s).min(charge));
    if billed == 1 {
        return by_share.ok_or(Withheld::RefundUnknown);
    }
    let remains = remains.ok_or(Withheld::NoRemains)?;
    let by_remains = partial_refund(charge, billed, remains.max(0).unsigned_abs());
    Ok(by_share.map_or(by_remains, |cap| by_remains.min(cap)))
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

/// Parses an amount given by an operator or a peer (`"12.5"`, `"0.27819"`). `None` for an
/// amount beyond what storage holds (an `i64` of units, about ±92 trillion): nothing could
/// charge, refund or store it, and arithmetic on it could overflow.
pub fn parse(text: &str) -> Option<Decimal> {
    let text = text.trim();
    let value = text
        .parse::<Decimal>()
        .or_else(|_| Decimal::from_scientific(text))
        .ok()?;
    (from_units(i64::MIN)..=from_units(i64::MAX))
        .contains(&value)
        .then_some(value)
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
        assert_eq!(
            charge(d("1.125"), Billing::PerThousand(157)),
            Some(d("0.17663"))
        );
        assert_eq!(charge(d("0.9"), Billing::PerThousand(1000)), Some(d("0.9")));
        assert_eq!(charge(d("8"), Billing::Package), Some(d("8")));
        assert_eq!(charge(d("8"), Billing::PerPost), Some(Decimal::ZERO));
    }

    /// Found by the `upstream_money` fuzz target: a services entry with
    /// `"rate":"00…012297829382473034410.25"` and an unreadable `max` (so `u64::MAX`) made the
    /// charge of the largest order overflow, a panic.
    #[test]
    fn a_charge_too_large_to_compute_is_none() {
        let rate = d("12297829382473034410.25");
        assert_eq!(charge(rate, Billing::PerThousand(u64::MAX)), None);
        assert_eq!(
            charge(rate, Billing::PerThousand(50)),
            Some(d("614891469123651720.5125"))
        );
        assert_eq!(charge(Decimal::MAX, Billing::Package), Some(Decimal::MAX));
    }

    #[test]
    fn refunds_round_down_and_never_exceed_the_charge() {
        assert_eq!(partial_refund(d("0.17663"), 157, 100), d("0.1125"));
        assert_eq!(partial_refund(d("0.00001"), 3, 1), d("0"));
        assert_eq!(partial_refund(d("1"), 10, 20), d("1"));
        assert_eq!(partial_refund(d("1"), 0, 20), d("0"));
    }

    /// Found by the `upstream_money` fuzz target: a services entry with `"rate":2.00000` (at an
    /// exchange rate of 90 and a markup of ×2 +10 % +0.05: 396.05) and neither a readable `min`
    /// nor `max` (both `u64::MAX`) made the refund of the largest order overflow in
    /// `charge × remains`, a panic.
    #[test]
    fn refunds_of_huge_orders_do_not_overflow() {
        let all = charge(d("396.05"), Billing::PerThousand(u64::MAX)).unwrap();
        assert_eq!(partial_refund(all, u64::MAX, u64::MAX), all);
        assert_eq!(partial_refund(all, u64::MAX, 0), Decimal::ZERO);
        let half = partial_refund(all, u64::MAX, u64::MAX / 2);
        // all × (2^63 − 1) / (2^64 − 1), rounded down: the exact share.
        assert_eq!(half, d("3652916495196333958.36235"));
        assert_eq!(
            partial_refund(Decimal::MAX, u64::MAX, u64::MAX),
            Decimal::MAX
        );
    }

    #[test]
    fn the_upstream_share_needs_both_charges() {
        assert_eq!(
            upstream_share(Some(d("2")), Some(d("0.5"))),
            Some(d("0.75"))
        );
        assert_eq!(upstream_share(Some(d("2")), Some(d("3"))), Some(d("0")));
        assert_eq!(upstream_share(Some(d("2")), Some(d("2"))), Some(d("0")));
        assert_eq!(upstream_share(Some(d("2")), Some(d("0"))), None);
        assert_eq!(upstream_share(Some(d("2")), None), None);
        assert_eq!(upstream_share(None, Some(d("1"))), None);
        assert_eq!(upstream_share(Some(d("0")), Some(d("1"))), None);
    }

    #[test]
    fn partial_settlement_follows_the_upstream() {
        let share = Some(d("0.4"));
        // Packages: the share of the charge, whatever `remains` says.
        assert_eq!(partial_settlement(d("3"), 1, Some(1), share), Ok(d("1.2")));
        assert_eq!(partial_settlement(d("3"), 1, None, share), Ok(d("1.2")));
        assert_eq!(
            partial_settlement(d("3"), 1, Some(1), None),
            Err(Withheld::RefundUnknown)
        );
        assert_eq!(
            partial_settlement(d("0.00001"), 1, Some(1), Some(d("0.5"))),
            Ok(d("0"))
        );
        // Per unit: remains, capped by the share where one is known.
        assert_eq!(
            partial_settlement(d("1"), 1000, Some(500), None),
            Ok(d("0.5"))
        );
        assert_eq!(
            partial_settlement(d("1"), 1000, Some(500), share),
            Ok(d("0.4"))
        );
        assert_eq!(
            partial_settlement(d("1"), 1000, Some(100), share),
            Ok(d("0.1"))
        );
        assert_eq!(
            partial_settlement(d("1"), 1000, Some(-5), share),
            Ok(d("0"))
        );
        assert_eq!(
            partial_settlement(d("1"), 1000, Some(5000), None),
            Ok(d("1"))
        );
        assert_eq!(
            partial_settlement(d("1"), 1000, None, share),
            Err(Withheld::NoRemains)
        );
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
        // Up to what storage holds, either way; beyond it, not an amount.
        assert_eq!(parse("92233720368547.75807"), Some(from_units(i64::MAX)));
        assert_eq!(parse("-92233720368547.75808"), Some(from_units(i64::MIN)));
        assert_eq!(parse("92233720368547.75808"), None);
        assert_eq!(parse("-92233720368547.75809"), None);
        assert_eq!(parse("-1e14"), None);
        assert_eq!(parse("79228162514264337593543950335"), None);
    }
}
