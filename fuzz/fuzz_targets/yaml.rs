//! The native YAML configuration through its parser and the shared validation; what loads
//! must write back as YAML and load again.
#![no_main]

use std::path::Path;

use hbd::config::{load_yaml_str, to_yaml};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/etc/hbd/hbd.yaml");
    if let Ok(loaded) = load_yaml_str(text, file, "node1")
        && let Ok(again) = to_yaml(&loaded.config)
    {
        let _ = load_yaml_str(&again, file, "node1");
    }
});
