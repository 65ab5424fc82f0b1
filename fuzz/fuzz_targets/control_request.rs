//! The control socket's request parser (one JSON line, as `control::server` reads it) and
//! the client's answer parser: never panic, and a request that parses writes back the same.
#![no_main]

use hbd::control::protocol::{Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(request) = serde_json::from_str::<Request>(line.trim()) {
        let text = serde_json::to_string(&request).expect("a request serialises");
        let again: Request = serde_json::from_str(&text).expect("a written request parses");
        assert_eq!(again, request);
    }
    let _ = serde_json::from_str::<Response>(line.trim());
});
