//! ha.cf text through the parser and the shared validation (authkeys and haresources fixed).
#![no_main]

use std::path::Path;

use hbd::config::{HaTexts, load_ha_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(hacf) = std::str::from_utf8(data) else {
        return;
    };
    let texts = HaTexts {
        hacf,
        authkeys: "auth 1\n1 sha1 fuzz\n",
        haresources: Some("node1 192.0.2.10 ldirectord\n"),
    };
    let _ = load_ha_text(texts, Path::new("/etc/ha.d"), "node1");
});
