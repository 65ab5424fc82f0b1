//! The 10,000-real set both apply benchmarks program (`ipvs_bench` on IPVS in the VM,
//! `dataplane::bench_nft_apply_10000_reals` on nftables), so their figures compare. Included
//! by each with `#[path]`; not an example of its own.

use std::net::SocketAddr;

use hbd::dataplane::{Forwarding, RealServer, Scheduler, ServiceKey, VirtualService};

/// 100 TCP services on 192.0.2.10 (ports 1000–1099), each with 100 masq reals of weights
/// 1–3 in 198.51.100.0/24.
pub fn ten_thousand_reals() -> Vec<VirtualService> {
    let mut desired = Vec::new();
    for s in 0..100u16 {
        let mut vs = VirtualService::new(
            ServiceKey::Tcp(SocketAddr::from(([192, 0, 2, 10], 1000 + s))),
            Scheduler::Wrr,
        );
        for r in 0..100u16 {
            vs.reals.push(RealServer {
                weight: 1 + u32::from(r % 3),
                ..RealServer::new(
                    SocketAddr::from(([198, 51, 100, (r % 250) as u8 + 1], 2000 + r)),
                    Forwarding::Masq,
                )
            });
        }
        desired.push(vs);
    }
    desired
}
