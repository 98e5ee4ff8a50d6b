//! The simulated panel's own money arithmetic: whole numbers of 0.00001 in `i128`, rounded by
//! integer division. It deliberately shares nothing with the gateway's `money` module, so a
//! rounding or formula slip there shows up as a disagreement with the panel in the black-box
//! tests instead of being repeated on both sides.

use rust_decimal::Decimal;

use crate::money::Billing;

/// Decimal places of every amount the panel books.
const PLACES: u32 = 5;

/// 10^`power`, if it fits.
fn ten_to(power: u32) -> Option<i128> {
    10i128.checked_pow(power)
}

/// `numerator / denominator` rounded up, for a positive denominator.
fn div_up(numerator: i128, denominator: i128) -> i128 {
    -(-numerator).div_euclid(denominator)
}

/// `rate × count / per` in 0.00001 units, rounded up; `None` when it does not fit.
fn scaled_up(rate: Decimal, count: u64, per: u64) -> Option<i128> {
    let numerator = rate
        .mantissa()
        .checked_mul(i128::from(count))?
        .checked_mul(ten_to(PLACES)?)?;
    let denominator = i128::from(per).checked_mul(ten_to(rate.scale())?)?;
    Some(div_up(numerator, denominator))
}

/// An amount of 0.00001 units as a decimal; `None` beyond what a decimal holds.
fn from_units(units: i128) -> Option<Decimal> {
    Decimal::try_from_i128_with_scale(units, PLACES).ok()
}

/// The amount in 0.00001 units, rounded down (the panel's own amounts never have more places).
fn to_units(amount: Decimal) -> i128 {
    let mantissa = amount.mantissa();
    match amount.scale() {
        s if s <= PLACES => mantissa * ten_to(PLACES - s).unwrap_or(1),
        s => mantissa.div_euclid(ten_to(s - PLACES).unwrap_or(i128::MAX)),
    }
}

/// What an order billed as `billing` costs at `rate`, rounded up to 0.00001: per thousand
/// units, per package, or nothing up front for subscriptions. `None` when it is too large to
/// compute, which is more than any balance.
pub fn charge(rate: Decimal, billing: Billing) -> Option<Decimal> {
    let units = match billing {
        Billing::PerThousand(count) => scaled_up(rate, count, 1000)?,
        Billing::Package => scaled_up(rate, 1, 1)?,
        Billing::PerPost => 0,
    };
    from_units(units)
}

/// What the panel gives back of `charge` when `remains` of `total` units were not delivered,
/// `percent` of the undelivered share, each step rounded down.
pub fn refund(charge: Decimal, total: u64, remains: u64, percent: u64) -> Decimal {
    let charge = to_units(charge);
    let (total, remains) = (i128::from(total.max(1)), i128::from(remains.min(total)));
    let undelivered = match charge.checked_mul(remains) {
        Some(product) => product / total,
        // Beyond any balance a test gives the panel: dividing first only loses sub-units.
        None => charge / total * remains,
    };
    let given = undelivered * i128::from(percent.min(100)) / 100;
    from_units(given).unwrap_or(Decimal::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn charges_round_up_to_the_smallest_unit() {
        // 1.125 × 157 / 1000 = 0.176625 → 0.17663.
        assert_eq!(
            charge(d("1.125"), Billing::PerThousand(157)),
            Some(d("0.17663"))
        );
        assert_eq!(charge(d("0.9"), Billing::PerThousand(500)), Some(d("0.45")));
        // 0.000001 per package is still one unit.
        assert_eq!(charge(d("0.000001"), Billing::Package), Some(d("0.00001")));
        assert_eq!(charge(d("3"), Billing::PerPost), Some(d("0")));
        assert_eq!(charge(d("1e20"), Billing::PerThousand(u64::MAX)), None);
    }

    #[test]
    fn refunds_round_down_and_follow_the_percent() {
        // 0.9 × 333 / 1000 = 0.2997; half of it is 0.14985.
        assert_eq!(refund(d("0.9"), 1000, 333, 100), d("0.2997"));
        assert_eq!(refund(d("0.9"), 1000, 333, 50), d("0.14985"));
        // 0.00001 × 1 / 3 rounds down to nothing.
        assert_eq!(refund(d("0.00001"), 3, 1, 100), d("0"));
        assert_eq!(refund(d("1"), 10, 20, 100), d("1"));
    }
}
