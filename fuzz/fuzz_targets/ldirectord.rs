//! ldirectord.cf text through the director's parser and validation.
#![no_main]

use std::path::Path;

use hbd::config::director::{ServiceNames, parse_ldirectord_str};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_ldirectord_str(text, Path::new("ldirectord.cf"), &ServiceNames::builtin());
});
