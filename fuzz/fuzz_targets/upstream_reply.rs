//! Any bytes as an upstream's reply to every action: read, refused or garbage, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use panelgate::protocol::lenient;

fuzz_target!(|data: &[u8]| {
    let _ = lenient::services(data);
    let _ = lenient::added(data);
    let _ = lenient::status(data);
    let _ = lenient::multi_status(data);
    let _ = lenient::refill_created(data);
    let _ = lenient::multi_refill(data);
    let _ = lenient::refill_status(data);
    let _ = lenient::multi_refill_status(data);
    let _ = lenient::canceled(data);
    let _ = lenient::balance(data);
    if let Some(text) = lenient::refusal_text(data) {
        let _ = lenient::Refusal::classify(&text);
    }
});
