//! The overview's chart: revenue per day as bars, margin as a line, drawn on the server as an
//! inline SVG from the figures alone (whole pixels from whole units: no floats, no script).

use std::str::FromStr;

use maud::{Markup, html};
use rust_decimal::Decimal;

use crate::admin_api::shapes::DayView;
use crate::money;
use crate::store::Units;

const WIDTH: i128 = 600;
const PLOT: i128 = 140;
const TOP: i128 = 8;
const BAR: i128 = 14;

fn units(text: &str) -> Units {
    Decimal::from_str(text)
        .ok()
        .and_then(money::to_units)
        .unwrap_or(0)
}

/// The chart of `days` (oldest first).
pub fn chart(days: &[DayView]) -> Markup {
    let points: Vec<(i128, i128)> = days
        .iter()
        .map(|d| {
            (
                i128::from(units(&d.money.revenue)),
                i128::from(units(&d.money.margin)),
            )
        })
        .collect();
    let high = points
        .iter()
        .map(|(r, m)| (*r).max(*m))
        .max()
        .unwrap_or(0)
        .max(0);
    let low = points
        .iter()
        .map(|(r, m)| (*r).min(*m))
        .min()
        .unwrap_or(0)
        .min(0);
    // At least one unit of range, so that a quiet month draws a flat line, not a division by 0.
    let range = (high - low).max(1);
    let y = |v: i128| TOP + (high - v) * PLOT / range;
    let slot = WIDTH / i128::try_from(days.len().max(1)).unwrap_or(1);
    let x = |i: usize| i128::try_from(i).unwrap_or(0) * slot;
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, (_, m))| format!("{},{}", x(i) + slot / 2, y(*m)))
        .collect();
    let zero = y(0);
    let bottom = TOP + PLOT + 16;
    html! {
        svg #chart viewBox={"0 0 " (WIDTH) " " (bottom + 4)}
            role="img" aria-label="Revenue (bars) and margin (line) per day, last 30 days" {
            @for (i, (d, (r, _))) in days.iter().zip(&points).enumerate() {
                rect.revenue x=(x(i) + (slot - BAR) / 2) y=(y(*r).min(zero)) width=(BAR)
                    height=((y(*r) - zero).abs()) {
                    title { (d.day) ": revenue " (d.money.revenue) ", margin " (d.money.margin) }
                }
            }
            line.axis x1="0" y1=(zero) x2=(WIDTH) y2=(zero) {}
            polyline.margin points=(line.join(" ")) {}
            @if let (Some(first), Some(last)) = (days.first(), days.last()) {
                text x="2" y=(bottom) { (first.day) }
                text x=(WIDTH - 2) y=(bottom) text-anchor="end" { (last.day) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_api::shapes::MoneyView;

    fn day(day: &str, revenue: &str, margin: &str) -> DayView {
        DayView {
            day: day.into(),
            money: MoneyView {
                revenue: revenue.into(),
                cost: "0".into(),
                margin: margin.into(),
            },
        }
    }

    #[test]
    fn bars_stand_on_the_zero_line_and_the_tallest_fills_the_plot() {
        let svg =
            chart(&[day("2025-01-01", "0", "0"), day("2025-01-02", "10", "-5")]).into_string();
        // Range 15 (10 down to -5) over 140 px: zero sits at 8 + 10 * 140 / 15 = 101.
        assert!(svg.contains(r#"x1="0" y1="101""#), "{svg}");
        assert!(svg.contains(r#"y="8" width="14" height="93""#), "{svg}");
        assert!(svg.contains(r#"points="150,101 450,148""#), "{svg}");
        let empty = chart(&[]).into_string();
        assert!(empty.contains("svg") && !empty.contains("rect"));
    }
}
