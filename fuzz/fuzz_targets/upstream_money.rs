//! Any bytes as an upstream's services list or order status, and every amount read from it
//! through the money steps the gateway takes next: the exchange rate, each kind of markup, the
//! charge of the smallest and the largest order the limits allow, and the storage form. Each
//! ends in an amount or a refusal, never a panic (an overflow included).
//!
//! The first byte picks the exchange rate and the markup, as an operator could configure them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use panelgate::money::{self, Billing};
use panelgate::pricing::{self, Markup};
use panelgate::protocol::lenient;
use rust_decimal::Decimal;

fn d(text: &str) -> Decimal {
    text.parse().expect("a constant amount")
}

fn fx(selector: u8) -> Decimal {
    d(["1", "0.011", "90", "1.08"][usize::from(selector % 4)])
}

fn markup(selector: u8) -> Markup {
    match (selector / 4) % 4 {
        0 => Markup::default(),
        1 => Markup {
            percent: Some(d("25")),
            ..Markup::default()
        },
        2 => Markup {
            multiplier: Some(d("2")),
            percent: Some(d("10")),
            add: Some(d("0.05")),
            ..Markup::default()
        },
        _ => Markup {
            percent: Some(d("-50")),
            min_profit: Some(d("0.10")),
            round_up_to: Some(d("0.01")),
            ..Markup::default()
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, reply)) = data.split_first() else {
        return;
    };
    let (fx, markup) = (fx(selector), markup(selector));
    if let Ok(list) = lenient::services(reply) {
        for service in list.services {
            let cost = pricing::convert(service.rate, fx);
            let rate = markup.sell_rate(cost);
            for billing in [
                Billing::PerThousand(service.min),
                Billing::PerThousand(service.max),
                Billing::Package,
            ] {
                if let Some(charge) = money::charge(rate, billing) {
                    let _ = money::to_units(charge);
                    let _ = money::partial_refund(charge, service.max, service.min);
                }
            }
        }
    }
    if let Ok(status) = lenient::status(reply) {
        let cost = pricing::convert(status.charge, fx);
        let _ = money::to_units(money::round_up(cost));
    }
});
