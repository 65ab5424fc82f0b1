//! A YAML file's `vrrp:` section through its reader and the keepalived builder it feeds;
//! what loads must convert back to YAML and load again.
#![no_main]

use std::path::Path;

use hbd::config::{keepalived_to_yaml, load_yaml_vrrp_str};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/etc/hbd/hbd.yaml");
    if let Ok((loaded, _)) = load_yaml_vrrp_str(text, file, "node1")
        && let Ok(again) = keepalived_to_yaml(&loaded.keepalived)
    {
        let _ = load_yaml_vrrp_str(&again, file, "node1");
    }
});
