//! The VRRP packet decoder: any IP payload, v4 or v6 envelope, decodes or is a counted drop;
//! what decodes encodes again.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hbd::vrrp::packet::{self, Envelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let (src, dst): (IpAddr, IpAddr) = if selector & 1 == 0 {
        (
            Ipv4Addr::new(192, 0, 2, 1).into(),
            Ipv4Addr::new(224, 0, 0, 18).into(),
        )
    } else {
        (
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1).into(),
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12).into(),
        )
    };
    let env = Envelope {
        src,
        dst,
        ttl: if selector & 2 == 0 { 255 } else { selector },
    };
    if let Ok(advert) = packet::decode(payload, &env) {
        let _ = packet::encode(&advert, src, dst);
    }
});
