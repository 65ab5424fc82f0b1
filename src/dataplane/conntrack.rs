//! Connection counts per real server for the nftables dataplane, from the kernel's
//! connection tracking table (`NETLINK_NETFILTER`, subsystem ctnetlink), the way
//! `conntrack -L` reads it.
//!
//! IPVS counts its own connections (ActiveConn/InActConn in `ipvsadm -Ln`); nftables DNAT
//! has none, but conntrack knows every translated connection: its original direction goes to
//! the VIP:port, its reply comes from the real. Counted as IPVS does: a TCP connection in
//! ESTABLISHED is active, every other TCP state and every UDP flow is inactive.
//!
//! Layouts from the kernel uapi `nfnetlink_conntrack.h` (`CTA_*`, `IPCTNL_MSG_CT_GET`) and
//! `nf_conntrack_tcp.h` (`TCP_CONNTRACK_ESTABLISHED`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::model::{Connections, RealConnections};
use super::model::{ServiceKey, VirtualService};
use super::netlink::{
    Attr, DecodeError, MsgWriter, NLM_F_DUMP, NLM_F_REQUEST, NetlinkError, RequestSocket, find,
    parse_attrs,
};
use super::reconcile::DataplaneError;

/// `NFNL_SUBSYS_CTNETLINK`, `IPCTNL_MSG_CT_GET`.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const NFPROTO_IPV4: u8 = 2;
/// `CTA_TUPLE_ORIG`, `CTA_TUPLE_REPLY`, `CTA_PROTOINFO`.
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_PROTOINFO: u16 = 4;
/// `CTA_TUPLE_IP`, `CTA_TUPLE_PROTO`; `CTA_IP_V4_SRC`, `CTA_IP_V4_DST`.
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
/// `CTA_PROTO_NUM`, `CTA_PROTO_SRC_PORT`, `CTA_PROTO_DST_PORT`.
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
/// `CTA_PROTOINFO_TCP`, `CTA_PROTOINFO_TCP_STATE`, `TCP_CONNTRACK_ESTABLISHED`.
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
const TCP_CONNTRACK_ESTABLISHED: u8 = 3;

/// One tracked IPv4 flow: protocol, where it was sent, who answers, whether established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// IP protocol (6 TCP, 17 UDP).
    pub protocol: u8,
    /// Original destination (the VIP:port for a balanced connection).
    pub to: SocketAddr,
    /// Reply source (the real server after DNAT).
    pub from: SocketAddr,
    /// TCP in ESTABLISHED.
    pub established: bool,
}

/// (protocol, source, destination) of a `CTA_TUPLE_*` nest.
fn tuple(attrs: &[Attr<'_>]) -> Option<(u8, SocketAddr, SocketAddr)> {
    let ip = find(attrs, CTA_TUPLE_IP)?.nested().ok()?;
    let proto = find(attrs, CTA_TUPLE_PROTO)?.nested().ok()?;
    let v4 = |k| -> Option<IpAddr> {
        let v = find(&ip, k)?.value;
        let b: [u8; 4] = v.get(..4)?.try_into().ok()?;
        Some(IpAddr::V4(Ipv4Addr::from(b)))
    };
    let port = |k| -> Option<u16> {
        let v = find(&proto, k)?.value;
        Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?))
    };
    let num = *find(&proto, CTA_PROTO_NUM)?.value.first()?;
    Some((
        num,
        SocketAddr::new(v4(CTA_IP_V4_SRC)?, port(CTA_PROTO_SRC_PORT).unwrap_or(0)),
        SocketAddr::new(v4(CTA_IP_V4_DST)?, port(CTA_PROTO_DST_PORT).unwrap_or(0)),
    ))
}

/// One conntrack dump message (after the 4-byte `nfgenmsg`) as a [`Flow`]; `None` for
/// what is not an IPv4 TCP/UDP flow.
pub fn decode_flow(payload: &[u8]) -> Result<Option<Flow>, DecodeError> {
    let attrs = parse_attrs(payload.get(4..).unwrap_or(&[]))?;
    let (Some(orig), Some(reply)) = (find(&attrs, CTA_TUPLE_ORIG), find(&attrs, CTA_TUPLE_REPLY))
    else {
        return Ok(None);
    };
    let (Some((protocol, _, to)), Some((_, from, _))) =
        (tuple(&orig.nested()?), tuple(&reply.nested()?))
    else {
        return Ok(None);
    };
    if protocol != 6 && protocol != 17 {
        return Ok(None);
    }
    let established = find(&attrs, CTA_PROTOINFO)
        .and_then(|p| p.nested().ok())
        .and_then(|p| find(&p, CTA_PROTOINFO_TCP)?.nested().ok())
        .and_then(|t| find(&t, CTA_PROTOINFO_TCP_STATE)?.value.first().copied())
        == Some(TCP_CONNTRACK_ESTABLISHED);
    Ok(Some(Flow {
        protocol,
        to,
        from,
        established,
    }))
}

/// Counts `flows` per (service, real) of `services`, as IPVS would (pure). A fwmark
/// service's flows cannot be told from its packets' destination: they count under the real
/// they went to when that real belongs to one fwmark service only.
pub fn count(services: &[VirtualService], flows: &[Flow]) -> Connections {
    let mut out: Connections = HashMap::new();
    for f in flows {
        let key = match f.protocol {
            6 => ServiceKey::Tcp(f.to),
            _ => ServiceKey::Udp(f.to),
        };
        let service = services.iter().find(|s| s.key == key).or_else(|| {
            let mut marks = services
                .iter()
                .filter(|s| matches!(s.key, ServiceKey::Fwmark(..)))
                .filter(|s| s.reals.iter().any(|r| r.addr.ip() == f.from.ip()));
            let one = marks.next();
            one.filter(|_| marks.next().is_none())
        });
        let Some(service) = service else { continue };
        let Some(real) = service
            .reals
            .iter()
            .find(|r| r.addr == f.from || (r.addr.port() == 0 && r.addr.ip() == f.from.ip()))
        else {
            continue;
        };
        let c: &mut RealConnections = out.entry((service.key, real.addr)).or_default();
        if f.protocol == 6 && f.established {
            c.active += 1;
        } else {
            c.inactive += 1;
        }
    }
    out
}

/// Dumps the IPv4 conntrack table (every flow, for [`count`]).
pub fn dump() -> Result<Vec<Flow>, DataplaneError> {
    let nl = |source: NetlinkError| DataplaneError::Netlink {
        backend: "conntrack",
        source,
    };
    let mut sock = RequestSocket::open(netlink_sys::constants::NETLINK_NETFILTER).map_err(nl)?;
    sock.set_recv_timeout(Duration::from_secs(10)).map_err(nl)?;
    let mut w = MsgWriter::new();
    w.begin_msg(
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
    );
    w.raw(&[NFPROTO_IPV4, 0, 0, 0]);
    w.end_msg();
    let mut flows = Vec::new();
    sock.dump(&w.buf, 1, "conntrack dump", |payload| {
        if let Some(f) = decode_flow(payload)? {
            flows.push(f);
        }
        Ok(())
    })
    .map_err(nl)?;
    Ok(flows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{Family, Forwarding, RealServer, Scheduler};

    /// A ctnetlink message as the kernel sends it (nested flags set), from the uapi layout.
    fn message(proto: u8, to: SocketAddr, from: SocketAddr, tcp_state: Option<u8>) -> Vec<u8> {
        const NESTED: u16 = 0x8000;
        let ip = |a: SocketAddr| match a.ip() {
            IpAddr::V4(v) => v.octets(),
            IpAddr::V6(_) => unreachable!(),
        };
        let mut w = MsgWriter::new();
        w.begin_msg(0, 0, 1);
        w.raw(&[NFPROTO_IPV4, 0, 0, 0]);
        let client: SocketAddr = "203.0.113.2:40000".parse().unwrap();
        for (k, src, dst) in [
            (CTA_TUPLE_ORIG, client, to),
            (CTA_TUPLE_REPLY, from, client),
        ] {
            w.begin_nest(k | NESTED);
            w.begin_nest(CTA_TUPLE_IP | NESTED);
            w.attr(CTA_IP_V4_SRC, &ip(src));
            w.attr(CTA_IP_V4_DST, &ip(dst));
            w.end_nest();
            w.begin_nest(CTA_TUPLE_PROTO | NESTED);
            w.attr(CTA_PROTO_NUM, &[proto]);
            w.attr(CTA_PROTO_SRC_PORT, &src.port().to_be_bytes());
            w.attr(CTA_PROTO_DST_PORT, &dst.port().to_be_bytes());
            w.end_nest();
            w.end_nest();
        }
        if let Some(s) = tcp_state {
            w.begin_nest(CTA_PROTOINFO | NESTED);
            w.begin_nest(CTA_PROTOINFO_TCP | NESTED);
            w.attr(CTA_PROTOINFO_TCP_STATE, &[s]);
            w.end_nest();
            w.end_nest();
        }
        w.end_msg();
        w.buf[16..].to_vec()
    }

    #[test]
    fn flows_count_per_real_like_ipvs() {
        let vip: SocketAddr = "192.0.2.10:80".parse().unwrap();
        let (r1, r2): (SocketAddr, SocketAddr) = (
            "198.51.100.1:80".parse().unwrap(),
            "198.51.100.2:8080".parse().unwrap(),
        );
        let mut web = VirtualService::new(ServiceKey::Tcp(vip), Scheduler::Wrr);
        web.reals = vec![
            RealServer::new(r1, Forwarding::Masq),
            RealServer::new(r2, Forwarding::Masq),
        ];
        let mut fwm = VirtualService::new(ServiceKey::Fwmark(7, Family::V4), Scheduler::Wrr);
        let r3: SocketAddr = "198.51.100.3:0".parse().unwrap();
        fwm.reals = vec![RealServer::new(r3, Forwarding::Masq)];
        let flows: Vec<Flow> = [
            message(6, vip, r1, Some(TCP_CONNTRACK_ESTABLISHED)),
            message(6, vip, r1, Some(TCP_CONNTRACK_ESTABLISHED)),
            message(6, vip, r1, Some(7)), // TIME_WAIT
            message(6, vip, r2, Some(TCP_CONNTRACK_ESTABLISHED)),
            message(17, "192.0.2.10:53".parse().unwrap(), r1, None), // no such service
            message(
                6,
                "192.0.2.99:443".parse().unwrap(),
                "198.51.100.3:443".parse().unwrap(),
                Some(3),
            ),
            message(
                6,
                "192.0.2.10:81".parse().unwrap(),
                "192.0.2.10:81".parse().unwrap(),
                Some(3),
            ),
        ]
        .iter()
        .filter_map(|m| decode_flow(m).unwrap())
        .collect();
        assert_eq!(flows.len(), 7);
        assert!(flows[0].established && !flows[2].established);
        assert_eq!((flows[0].to, flows[0].from), (vip, r1));
        let c = count(&[web.clone(), fwm.clone()], &flows);
        let key = ServiceKey::Tcp(vip);
        assert_eq!(
            c[&(key, r1)],
            RealConnections {
                active: 2,
                inactive: 1,
                persistent: 0,
            }
        );
        assert_eq!(
            c[&(key, r2)],
            RealConnections {
                active: 1,
                inactive: 0,
                persistent: 0,
            }
        );
        // the fwmark service's real, found by its address
        assert_eq!(
            c[&(fwm.key, r3)],
            RealConnections {
                active: 1,
                inactive: 0,
                persistent: 0,
            }
        );
        assert_eq!(c.len(), 3, "{c:?}");
    }

    #[test]
    fn junk_is_no_flow_and_never_panics() {
        assert_eq!(decode_flow(&[]).unwrap(), None);
        assert_eq!(decode_flow(&[2, 0, 0, 0]).unwrap(), None);
        assert!(
            decode_flow(&[2, 0, 0, 0, 8, 0, 1]).is_err()
                || decode_flow(&[2, 0, 0, 0, 8, 0, 1]).unwrap().is_none()
        );
    }
}
