//! Price rules: what a service sells at, given what it costs us.
//!
//! Rates are per 1000 units (packages: per package). Everything is `rust_decimal` and exact;
//! the only rounding is the one a rule asks for (`round_up_to`). Charges are rounded once,
//! later, by [`crate::money::charge`].

use rust_decimal::Decimal;
use serde::Deserialize;

/// A markup, as written in the config (`markup: { percent: 25 }`). The parts combine as
/// `cost × multiplier × (1 + percent/100) + add`, then at least `cost + min_profit`, then
/// rounded up to a multiple of `round_up_to`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Markup {
    pub percent: Option<Decimal>,
    pub multiplier: Option<Decimal>,
    /// Added per 1000 units.
    pub add: Option<Decimal>,
    /// Least profit per 1000 units.
    pub min_profit: Option<Decimal>,
    /// Round the rate up to a multiple of this (e.g. 0.01).
    pub round_up_to: Option<Decimal>,
}

impl Markup {
    /// Checks the values an operator could get wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.multiplier.is_some_and(|m| m <= Decimal::ZERO) {
            return Err("multiplier must be above 0".into());
        }
        if self.percent.is_some_and(|p| p <= -Decimal::ONE_HUNDRED) {
            return Err("percent must be above -100".into());
        }
        if self.round_up_to.is_some_and(|r| r <= Decimal::ZERO) {
            return Err("round_up_to must be above 0".into());
        }
        if self.min_profit.is_some_and(|m| m < Decimal::ZERO) {
            return Err("min_profit must not be negative".into());
        }
        Ok(())
    }

    /// Whether some cost would sell below itself: a factor below 1 (negative `percent`,
    /// `multiplier` under 1) or a negative `add`, with no `min_profit` to hold the floor.
    /// Rounding only ever raises a rate, so it cannot cause a loss.
    pub fn may_sell_below_cost(&self) -> bool {
        if self.min_profit.is_some() {
            return false;
        }
        let factor = self.multiplier.unwrap_or(Decimal::ONE)
            * (Decimal::ONE + self.percent.unwrap_or_default() / Decimal::ONE_HUNDRED);
        factor < Decimal::ONE || self.add.is_some_and(|a| a < Decimal::ZERO)
    }

    /// The least rate a target costing `cost` may be sold at under this markup: its cost,
    /// plus `min_profit` when the markup asks for one.
    pub fn floor(&self, cost: Decimal) -> Decimal {
        cost + self.min_profit.unwrap_or_default()
    }

    /// The selling rate for a cost rate (both in our currency).
    pub fn sell_rate(&self, cost: Decimal) -> Decimal {
        let mut rate = cost * self.multiplier.unwrap_or(Decimal::ONE);
        if let Some(p) = self.percent {
            rate += rate * p / Decimal::ONE_HUNDRED;
        }
        if let Some(add) = self.add {
            rate += add;
        }
        if let Some(min) = self.min_profit {
            rate = rate.max(cost + min);
        }
        if let Some(step) = self.round_up_to {
            rate = (rate / step).ceil() * step;
        }
        rate.max(Decimal::ZERO).normalize()
    }
}

/// Converts an upstream's money to ours: `fx` is how much of our currency one unit of theirs
/// is worth.
pub fn convert(amount: Decimal, fx: Decimal) -> Decimal {
    (amount * fx).normalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn markup(yaml: &str) -> Markup {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn percent_is_exact() {
        // 0.90 at +25 % sells at 1.125, not 1.13.
        assert_eq!(markup("{percent: 25}").sell_rate(d("0.90")), d("1.125"));
        assert_eq!(
            markup("{percent: 25}").sell_rate(d("0.90")).to_string(),
            "1.125"
        );
        assert_eq!(markup("{percent: 40}").sell_rate(d("8")), d("11.2"));
    }

    #[test]
    fn parts_combine_in_order() {
        assert_eq!(markup("{multiplier: 2}").sell_rate(d("0.5")), d("1"));
        assert_eq!(
            markup("{multiplier: 2, percent: 10, add: 0.05}").sell_rate(d("0.5")),
            d("1.15")
        );
        // min_profit lifts a thin margin.
        assert_eq!(
            markup("{percent: 1, min_profit: 0.10}").sell_rate(d("1")),
            d("1.1")
        );
        assert_eq!(
            markup("{percent: 50, min_profit: 0.10}").sell_rate(d("1")),
            d("1.5")
        );
        assert_eq!(
            markup("{percent: 25, round_up_to: 0.01}").sell_rate(d("0.90")),
            d("1.13")
        );
        assert_eq!(
            markup("{percent: 25, round_up_to: 0.5}").sell_rate(d("0.90")),
            d("1.5")
        );
        assert_eq!(markup("{}").sell_rate(d("0.90")), d("0.9"));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(markup("{multiplier: 0}").validate().is_err());
        assert!(markup("{percent: -100}").validate().is_err());
        assert!(markup("{round_up_to: 0}").validate().is_err());
        assert!(markup("{min_profit: -1}").validate().is_err());
        assert!(markup("{percent: -10}").validate().is_ok());
        assert!(serde_yaml_ng::from_str::<Markup>("{percnt: 5}").is_err());
    }

    #[test]
    fn markups_that_can_sell_below_cost_are_recognised() {
        for yes in [
            "{percent: -10}",
            "{multiplier: 0.9}",
            "{add: -0.01}",
            "{percent: 50, add: -0.01}",
        ] {
            assert!(markup(yes).may_sell_below_cost(), "{yes}");
        }
        for no in [
            "{}",
            "{percent: 0}",
            "{percent: -10, min_profit: 0}",
            "{multiplier: 2, percent: -50}",
            "{add: 0.01}",
        ] {
            assert!(!markup(no).may_sell_below_cost(), "{no}");
        }
        assert_eq!(
            markup("{percent: 5, min_profit: 0.1}").floor(d("1")),
            d("1.1")
        );
        assert_eq!(markup("{percent: 5}").floor(d("1")), d("1"));
    }

    #[test]
    fn currency_conversion() {
        assert_eq!(convert(d("90"), d("0.011")), d("0.99"));
    }
}
