//! Any bytes, as any request shape, through everything the server does with a request before
//! it looks anything up: it must end in a typed value or a protocol error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use panelgate::protocol::order::OrderFields;
use panelgate::protocol::{Action, Params, ServiceType};

const CONTENT_TYPES: [Option<&str>; 5] = [
    None,
    Some("application/x-www-form-urlencoded"),
    Some("application/json"),
    Some("multipart/form-data; boundary=x"),
    Some("text/plain"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    // The first byte picks the content type; a NUL splits query from body.
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    let (query, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (std::str::from_utf8(&rest[..i]).ok(), &rest[i + 1..]),
        None => (None, rest),
    };
    let Ok(params) = Params::from_parts(query, content_type, body) else {
        return;
    };
    let _ = Action::parse(&params);
    let _ = format!("{params:?}");
    for kind in ServiceType::ALL {
        if let Ok(fields) = OrderFields::parse(&kind, &params) {
            let _ = fields.billing(&kind);
            let _ = fields.check_limits(&kind, 1, 1000, true);
            let _ = fields.to_form();
        }
    }
});
