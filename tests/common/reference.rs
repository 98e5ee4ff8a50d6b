//! Expected amounts worked out apart from panelgate's own money code: whole numbers of 0.00001
//! (the protocol's smallest amount), parsed and printed by hand. A formula or rounding slip in
//! the code under test cannot agree with these by accident.

/// `"1.125"` → 112 500 units of 0.00001.
pub fn units(amount: &str) -> i128 {
    let (sign, digits) = match amount.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, amount),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    assert!(fraction.len() <= 5, "{amount} has more than five decimals");
    let text = format!("{whole}{fraction:0<5}");
    sign * text
        .parse::<i128>()
        .unwrap_or_else(|e| panic!("{amount}: {e}"))
}

/// The wire form of an amount: always five decimals, as a string (`"0.17663"`).
pub fn wire(units: i128) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let magnitude = units.unsigned_abs();
    format!("{sign}{}.{:05}", magnitude / 100_000, magnitude % 100_000)
}

/// The charge for `quantity` units at `rate` per 1000, rounded up to a whole unit.
pub fn charge(rate: &str, quantity: u64) -> i128 {
    let exact_times_1000 = units(rate) * i128::from(quantity);
    (exact_times_1000 + 999) / 1000
}

/// The refund of `remains` undelivered of `billed` units that cost `paid` units, rounded down.
pub fn refund(paid: i128, billed: u64, remains: u64) -> i128 {
    paid * i128::from(remains) / i128::from(billed)
}

/// The share of `paid` units matching what an upstream gave back of its own charge (`charged`
/// at first, `kept` in the end), rounded down.
pub fn share(paid: i128, charged: i128, kept: i128) -> i128 {
    paid * (charged - kept) / charged
}
