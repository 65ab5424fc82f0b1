//! The heartbeat frame decoder (membership wire): any bytes from a medium, under every
//! signing method, must decode or give a `WireError`, never panic; what decodes must have an
//! envelope that reads or is refused, and must encode again.
#![no_main]

use std::collections::BTreeMap;

use hbd::config::{AuthKey, AuthKeys, AuthMethod, MsgFormat};
use hbd::membership::wire;
use libfuzzer_sys::fuzz_target;

/// The keys of the captures in tests/fixtures/wire (crc lets the fuzzer sign its own frames).
fn keysets() -> Vec<AuthKeys> {
    let key = |index: u8, method, secret: &str| AuthKeys {
        active: index,
        keys: BTreeMap::from([(
            index,
            AuthKey {
                method,
                secret: secret.as_bytes().to_vec(),
            },
        )]),
    };
    vec![
        key(3, AuthMethod::Crc, ""),
        key(1, AuthMethod::Md5, "wirelab-secret"),
        key(2, AuthMethod::Sha1, "wirelab-sha1-key"),
    ]
}

fuzz_target!(|frame: &[u8]| {
    for keys in keysets() {
        if let Ok(msg) = wire::decode(frame, &keys) {
            let _ = wire::read_envelope(&msg);
            let _ = wire::try_encode_classic(&msg, &keys);
            let again = wire::encode(&msg, &keys, MsgFormat::Classic);
            let _ = wire::decode(&again, &keys);
        }
        let _ = wire::decode_classic(frame, &keys);
        if let Ok(view) = wire::decode_view(frame, &wire::FrameKeys::new(&keys)) {
            let _ = wire::read_envelope(&view);
        }
    }
});
