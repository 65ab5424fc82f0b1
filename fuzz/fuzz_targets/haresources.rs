//! haresources text through the parser and the shared validation (ha.cf and authkeys fixed).
#![no_main]

use std::path::Path;

use hbd::config::{HaTexts, load_ha_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(haresources) = std::str::from_utf8(data) else {
        return;
    };
    let texts = HaTexts {
        hacf: "keepalive 1\ndeadtime 10\nudpport 694\nbcast lo\nnode node1 node2\nauto_failback on\n",
        authkeys: "auth 1\n1 sha1 fuzz\n",
        haresources: Some(haresources),
    };
    let _ = load_ha_text(texts, Path::new("/etc/ha.d"), "node1");
});
