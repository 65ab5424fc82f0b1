//! authkeys text through the parser and the shared validation (ha.cf fixed).
#![no_main]

use std::path::Path;

use hbd::config::{HaTexts, load_ha_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(authkeys) = std::str::from_utf8(data) else {
        return;
    };
    let texts = HaTexts {
        hacf: "keepalive 1\ndeadtime 10\nudpport 694\nbcast lo\nnode node1 node2\n",
        authkeys,
        haresources: None,
    };
    let _ = load_ha_text(texts, Path::new("/etc/ha.d"), "node1");
});
