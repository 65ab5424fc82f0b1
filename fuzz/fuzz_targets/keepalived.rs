//! keepalived.conf text through its reader and builder (includes are not followed).
#![no_main]

use std::path::Path;

use hbd::config::keepalived::load_keepalived_str;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = load_keepalived_str(text, Path::new("keepalived.conf"));
});
