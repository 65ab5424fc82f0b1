//! The nftables dataplane: DNAT load balancing in hbd's own table, over native netlink
//! (`NETLINK_NETFILTER`, no `nft` binary), for kernels without IPVS.
//!
//! Layouts from the kernel uapi `include/uapi/linux/netfilter/nf_tables.h` and
//! `nfnetlink.h` (`struct nfgenmsg`, `NFNL_MSG_BATCH_BEGIN/END`, `NFNL_SUBSYS_NFTABLES`);
//! nf_tables integers (registers, lengths, types) travel in network order. Comments use
//! libnftnl's user-data TLV (`NFTNL_UDATA_RULE_COMMENT` = 0), so `nft list table ip hbd`
//! shows them.
//!
//! # Ruleset shape (table `ip hbd`, IPv4 only)
//!
//! ```text
//! table ip hbd {
//!   map services { type ipv4_addr . inet_proto . inet_service : verdict; elements = {
//!       192.0.2.10 . tcp . 80 : jump svc-tcp-192.0.2.10-80 } }
//!   map fwmarks  { type mark : verdict }
//!   set reals { type ipv4_addr . inet_proto . inet_service . ipv4_addr . inet_service;
//!       elements = { 192.0.2.10 . tcp . 80 . 198.51.100.1 . 80 comment "masq 2 0 0", ... } }
//!   map lb-tcp-192.0.2.10-80 { type integer : ipv4_addr . inet_service;
//!       elements = { 0 : 198.51.100.1 . 80, 1 : 198.51.100.2 . 80, ... } }
//!   chain prerouting { type nat hook prerouting priority dstnat; policy accept;
//!       ip daddr . meta l4proto . th dport vmap @services
//!       meta mark vmap @fwmarks }
//!   chain svc-tcp-192.0.2.10-80 {
//!       comment "hbd-svc tcp 192.0.2.10:80 wrr"                # service parameters
//!       dnat ip to numgen inc mod 4 map @lb-tcp-192.0.2.10-80 } # the balancing rule
//! }
//! ```
//!
//! * **Weights** become slots in the `lb-` map (divided by their gcd, scaled to at most
//!   [`MAX_SLOTS`] when larger); `numgen inc mod total` walks the slots, so `wrr` (and the
//!   connection-count schedulers lc/wlc/sed/nq/lblc/lblcr, which nftables cannot see)
//!   are weighted round robin; `rr` gives every live real one slot.
//! * **sh/mh/dh and persistence** hash the source (destination for dh) with a fixed seed:
//!   `jhash ip saddr & mask mod total`. The same client keeps its real across rebuilds
//!   while the real set is unchanged; the persistence timeout is recorded, not enforced.
//! * **Quiescent** (weight 0): the real gets no slot, so no new connections; established
//!   connections keep flowing because conntrack keeps their NAT binding.
//! * **Atomicity**: one reconcile = one nfnetlink batch (BEGIN … END). Each affected
//!   service's chain and map are flushed and refilled inside it; the kernel commits all or
//!   nothing. A packet crossing the commit can still meet the old rule and the new map, so
//!   the map keeps keys up to the old rule's modulus ([`map_entries`]).
//! * **Adoption**: the table itself is the shadow of what was programmed: each service
//!   chain's first rule carries the service parameters in its comment, and the `reals` set
//!   holds one element per real (quiescent ones included) whose comment is
//!   `forwarding weight upper lower`. `list()` reads them back with one rule dump and one
//!   element dump, so a restarted hbd adopts the table without disruption. (Set elements,
//!   not per-real rules: a rule costs the kernel ~10x more to add than an element.)
//! * Forwarding is DNAT (`masq`) only; `gate`/`ipip` and IPv6 services need IPVS and are
//!   refused with a typed error. Replies must route back through the director.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::diff::{Change, apply_changes};
use super::model::{
    Family, Forwarding, Netmask, Persistence, RealServer, Scheduler, ServiceKey, VirtualService,
};
use super::netlink::{
    MsgWriter, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_ERROR,
    NetlinkError, RequestSocket, find, parse_attrs,
};
use super::{Dataplane, DataplaneError};

/// Most slots one service's balancing map gets (more reals than this get one slot each).
pub const MAX_SLOTS: u32 = 4096;
/// Seed of the source hash: fixed so a rebuild keeps clients on their real.
const HASH_SEED: u32 = 0x6862_6400;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFPROTO_IPV4: u8 = 2;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;

/// `NFT_SET_MAP`.
const NFT_SET_MAP: u32 = 0x8;
/// `NFT_DATA_VERDICT`.
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
/// `NFT_JUMP`.
const NFT_JUMP: i32 = -3;
/// `NFT_REG_VERDICT`.
const REG_VERDICT: u32 = 0;
/// `NFT_REG32_00`..`02`.
const REG32_00: u32 = 8;
const REG32_01: u32 = 9;
const REG32_02: u32 = 10;
/// `NF_INET_PRE_ROUTING`, `NF_IP_PRI_NAT_DST`, `NF_ACCEPT`.
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_IP_PRI_NAT_DST: i32 = -100;
const NF_ACCEPT: u32 = 1;
/// `NFT_META_MARK`, `NFT_META_L4PROTO`.
const NFT_META_MARK: u32 = 3;
const NFT_META_L4PROTO: u32 = 16;
/// `NFT_PAYLOAD_NETWORK_HEADER`, `NFT_PAYLOAD_TRANSPORT_HEADER`.
const PAYLOAD_NETWORK: u32 = 1;
const PAYLOAD_TRANSPORT: u32 = 2;
/// nft's data types (`src/datatype.c`), composed for concatenations with 6-bit shifts;
/// only used so `nft list` can print the maps.
const TYPE_INTEGER: u32 = 4;
const TYPE_IPADDR: u32 = 7;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_MARK: u32 = 19;
/// libnftnl `NFTNL_UDATA_SET_KEYBYTEORDER`, `BYTEORDER_HOST_ENDIAN`.
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const BYTEORDER_HOST_ENDIAN: u32 = 1;
/// libnftnl `NFTNL_UDATA_RULE_COMMENT`.
const UDATA_RULE_COMMENT: u8 = 0;
/// Elements per NEWSETELEM message: the element list is one attribute (u16 length).
const ELEMS_PER_MSG: usize = 1000;

const CHAIN_PREROUTING: &str = "prerouting";
const MAP_SERVICES: &str = "services";
const MAP_FWMARKS: &str = "fwmarks";
const SET_REALS: &str = "reals";
const SVC_TAG: &str = "hbd-svc";

fn concat_type(types: &[u32]) -> u32 {
    types.iter().fold(0, |acc, t| (acc << 6) | t)
}

/// The chain and map names of a service (derived from its key, so they are stable).
pub fn object_suffix(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Tcp(a) => format!("tcp-{}-{}", a.ip(), a.port()),
        ServiceKey::Udp(a) => format!("udp-{}-{}", a.ip(), a.port()),
        ServiceKey::Fwmark(m, _) => format!("fwm-{m}"),
    }
}

fn chain_name(key: &ServiceKey) -> String {
    format!("svc-{}", object_suffix(key))
}

fn map_name(key: &ServiceKey) -> String {
    format!("lb-{}", object_suffix(key))
}

/// The service comment: `hbd-svc tcp 192.0.2.10:80 wrr [persist <secs> <prefix>]`.
pub fn service_comment(vs: &VirtualService) -> String {
    let key = match vs.key {
        ServiceKey::Tcp(a) => format!("tcp {a}"),
        ServiceKey::Udp(a) => format!("udp {a}"),
        ServiceKey::Fwmark(m, _) => format!("fwm {m}"),
    };
    let mut s = format!("{SVC_TAG} {key} {}", vs.scheduler);
    if let Some(p) = &vs.persistence {
        s.push_str(&format!(
            " persist {} {}",
            p.timeout.as_secs(),
            p.netmask.prefix
        ));
    }
    s
}

/// The comment of a real's element in the `reals` set: `masq <weight> <upper> <lower>`.
pub fn real_comment(r: &RealServer) -> String {
    format!(
        "{} {} {} {}",
        r.forwarding.name(),
        r.weight,
        r.upper_threshold,
        r.lower_threshold
    )
}

/// Parse a service comment back; `None` for anything else.
pub fn parse_service_comment(c: &str) -> Option<VirtualService> {
    let mut w = c.split(' ');
    if w.next()? != SVC_TAG {
        return None;
    }
    let key = match (w.next()?, w.next()?) {
        ("tcp", a) => ServiceKey::Tcp(a.parse().ok()?),
        ("udp", a) => ServiceKey::Udp(a.parse().ok()?),
        ("fwm", m) => ServiceKey::Fwmark(m.parse().ok()?, Family::V4),
        _ => return None,
    };
    let scheduler: Scheduler = w.next()?.parse().ok()?;
    let persistence = match w.next() {
        None => None,
        Some("persist") => Some(Persistence {
            timeout: Duration::from_secs(w.next()?.parse().ok()?),
            netmask: Netmask {
                prefix: w.next()?.parse().ok()?,
            },
        }),
        Some(_) => return None,
    };
    if w.next().is_some() {
        return None;
    }
    Some(VirtualService {
        key,
        scheduler,
        persistence,
        reals: vec![],
    })
}

/// Parse a real's comment back; `None` for anything else.
pub fn parse_real_comment(addr: SocketAddr, c: &str) -> Option<RealServer> {
    let w: Vec<&str> = c.split(' ').collect();
    match w.as_slice() {
        [fwd, weight, upper, lower] => Some(RealServer {
            addr,
            forwarding: fwd.parse().ok()?,
            weight: weight.parse().ok()?,
            upper_threshold: upper.parse().ok()?,
            lower_threshold: lower.parse().ok()?,
        }),
        _ => None,
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The balancing slots of a service: real addresses in slot order.
///
/// Weight 0 (quiescent) reals get none; `rr` ignores weights; weights are divided by
/// their gcd and, if their sum exceeds `max(MAX_SLOTS, live reals)`, scaled down (each live
/// real keeps at least one slot). Slots are interleaved (one per real per pass) so
/// `numgen inc` spreads consecutive connections.
pub fn slots(vs: &VirtualService) -> Vec<SocketAddr> {
    let live: Vec<(SocketAddr, u64)> = vs
        .reals
        .iter()
        .filter(|r| !r.is_quiescent())
        .map(|r| {
            let w = if vs.scheduler == Scheduler::Rr {
                1
            } else {
                r.weight
            };
            (r.addr, u64::from(w))
        })
        .collect();
    if live.is_empty() {
        return vec![];
    }
    let g = live.iter().fold(0u32, |g, (_, w)| gcd(*w as u32, g));
    let mut counts: Vec<u64> = live.iter().map(|(_, w)| w / u64::from(g.max(1))).collect();
    let cap = u64::from(MAX_SLOTS).max(live.len() as u64);
    let sum: u64 = counts.iter().sum();
    if sum > cap {
        for c in counts.iter_mut() {
            *c = (*c * cap / sum).max(1);
        }
    }
    let total: u64 = counts.iter().sum();
    let mut out = Vec::with_capacity(total as usize);
    let mut left = counts;
    while out.len() < total as usize {
        for (i, (addr, _)) in live.iter().enumerate() {
            if left[i] > 0 {
                left[i] -= 1;
                out.push(*addr);
            }
        }
    }
    out
}

fn uses_hash(vs: &VirtualService) -> bool {
    matches!(vs.scheduler, Scheduler::Sh | Scheduler::Mh | Scheduler::Dh)
        || vs.persistence.is_some()
}

/// Check that this backend can program a service.
pub fn check_supported(vs: &VirtualService) -> Result<(), DataplaneError> {
    let unsupported = |why: String| DataplaneError::Unsupported {
        backend: "nftables",
        service: vs.key,
        why,
    };
    if vs.key.family() != Family::V4 {
        return Err(unsupported(
            "IPv6 services are not implemented in the nftables dataplane (table ip); use IPVS"
                .into(),
        ));
    }
    for r in &vs.reals {
        if r.forwarding != Forwarding::Masq {
            return Err(unsupported(format!(
                "real {} uses {}; the nftables dataplane forwards by DNAT only (masq), gate/ipip need IPVS",
                r.addr,
                r.forwarding.name()
            )));
        }
        if !r.addr.is_ipv4() {
            return Err(unsupported(format!("real {} is not IPv4", r.addr)));
        }
    }
    Ok(())
}

/// Builds one nfnetlink batch for hbd's table.
struct Batch<'t> {
    w: MsgWriter,
    table: &'t str,
    seq: u32,
    first: u32,
}

impl<'t> Batch<'t> {
    fn new(table: &'t str, seq: u32) -> Batch<'t> {
        let mut b = Batch {
            w: MsgWriter::new(),
            table,
            seq,
            first: seq,
        };
        b.w.begin_msg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, b.seq);
        b.w.raw(&[0, 0]);
        b.w.raw(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
        b.w.end_msg();
        b
    }

    fn msg(&mut self, ty: u16, flags: u16) {
        self.seq = self.seq.wrapping_add(1);
        self.w.begin_msg(
            (NFNL_SUBSYS_NFTABLES << 8) | ty,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            self.seq,
        );
        self.w.raw(&[NFPROTO_IPV4, 0, 0, 0]);
    }

    fn finish(mut self) -> (Vec<u8>, u32, u32) {
        let last = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.w
            .begin_msg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, self.seq);
        self.w.raw(&[0, 0]);
        self.w.raw(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
        self.w.end_msg();
        (self.w.buf, self.first, last)
    }

    fn new_table(&mut self) {
        self.msg(NFT_MSG_NEWTABLE, NLM_F_CREATE);
        self.w.str(NFTA_TABLE_NAME, self.table);
        self.w.end_msg();
    }

    fn del_table(&mut self) {
        self.msg(NFT_MSG_DELTABLE, 0);
        self.w.str(NFTA_TABLE_NAME, self.table);
        self.w.end_msg();
    }

    fn new_chain(&mut self, name: &str, nat_prerouting: bool) {
        self.msg(NFT_MSG_NEWCHAIN, NLM_F_CREATE);
        self.w.str(NFTA_CHAIN_TABLE, self.table);
        self.w.str(NFTA_CHAIN_NAME, name);
        if nat_prerouting {
            self.w.begin_nest(NFTA_CHAIN_HOOK);
            self.w.be32(NFTA_HOOK_HOOKNUM, NF_INET_PRE_ROUTING);
            self.w.be32(NFTA_HOOK_PRIORITY, NF_IP_PRI_NAT_DST as u32);
            self.w.end_nest();
            self.w.be32(NFTA_CHAIN_POLICY, NF_ACCEPT);
            self.w.str(NFTA_CHAIN_TYPE, "nat");
        }
        self.w.end_msg();
    }

    fn del_chain(&mut self, name: &str) {
        self.msg(NFT_MSG_DELCHAIN, 0);
        self.w.str(NFTA_CHAIN_TABLE, self.table);
        self.w.str(NFTA_CHAIN_NAME, name);
        self.w.end_msg();
    }

    /// A map; `data_type`/`data_len` of `NFT_DATA_VERDICT` / 0 make a verdict map.
    fn new_map(
        &mut self,
        name: &str,
        key_type: u32,
        key_len: u32,
        data_type: u32,
        data_len: u32,
        host_key: bool,
    ) {
        self.msg(NFT_MSG_NEWSET, NLM_F_CREATE);
        self.w.str(NFTA_SET_TABLE, self.table);
        self.w.str(NFTA_SET_NAME, name);
        self.w.be32(NFTA_SET_FLAGS, NFT_SET_MAP);
        self.w.be32(NFTA_SET_KEY_TYPE, key_type);
        self.w.be32(NFTA_SET_KEY_LEN, key_len);
        self.w.be32(NFTA_SET_DATA_TYPE, data_type);
        if data_type != NFT_DATA_VERDICT {
            self.w.be32(NFTA_SET_DATA_LEN, data_len);
        }
        // required by the kernel; unique within the batch (the message sequence is)
        self.w.be32(NFTA_SET_ID, self.seq);
        if host_key {
            let mut ud = vec![UDATA_SET_KEYBYTEORDER, 4];
            ud.extend_from_slice(&BYTEORDER_HOST_ENDIAN.to_ne_bytes());
            self.w.attr(NFTA_SET_USERDATA, &ud);
        }
        self.w.end_msg();
    }

    /// A plain set (no data) whose elements carry comments.
    fn new_set(&mut self, name: &str, key_type: u32, key_len: u32) {
        self.msg(NFT_MSG_NEWSET, NLM_F_CREATE);
        self.w.str(NFTA_SET_TABLE, self.table);
        self.w.str(NFTA_SET_NAME, name);
        self.w.be32(NFTA_SET_FLAGS, 0);
        self.w.be32(NFTA_SET_KEY_TYPE, key_type);
        self.w.be32(NFTA_SET_KEY_LEN, key_len);
        self.w.be32(NFTA_SET_ID, self.seq);
        self.w.end_msg();
    }

    fn del_map(&mut self, name: &str) {
        self.msg(NFT_MSG_DELSET, 0);
        self.w.str(NFTA_SET_TABLE, self.table);
        self.w.str(NFTA_SET_NAME, name);
        self.w.end_msg();
    }

    fn flush_map(&mut self, name: &str) {
        self.msg(NFT_MSG_DELSETELEM, 0);
        self.w.str(NFTA_SET_ELEM_LIST_TABLE, self.table);
        self.w.str(NFTA_SET_ELEM_LIST_SET, name);
        self.w.end_msg();
    }

    /// Elements `key → value` (value bytes) or `key → jump chain`.
    fn elements(&mut self, ty: u16, map: &str, elems: &[(Vec<u8>, Option<ElemData>)]) {
        for chunk in elems.chunks(ELEMS_PER_MSG) {
            self.msg(
                ty,
                if ty == NFT_MSG_NEWSETELEM {
                    NLM_F_CREATE
                } else {
                    0
                },
            );
            self.w.str(NFTA_SET_ELEM_LIST_TABLE, self.table);
            self.w.str(NFTA_SET_ELEM_LIST_SET, map);
            self.w.begin_nest(NFTA_SET_ELEM_LIST_ELEMENTS);
            for (key, data) in chunk {
                self.w.begin_nest(NFTA_LIST_ELEM);
                self.w.begin_nest(NFTA_SET_ELEM_KEY);
                self.w.attr(NFTA_DATA_VALUE, key);
                self.w.end_nest();
                match data {
                    Some(ElemData::Value(v)) => {
                        self.w.begin_nest(NFTA_SET_ELEM_DATA);
                        self.w.attr(NFTA_DATA_VALUE, v);
                        self.w.end_nest();
                    }
                    Some(ElemData::Jump(chain)) => {
                        self.w.begin_nest(NFTA_SET_ELEM_DATA);
                        self.w.begin_nest(NFTA_DATA_VERDICT);
                        self.w.be32(NFTA_VERDICT_CODE, NFT_JUMP as u32);
                        self.w.str(NFTA_VERDICT_CHAIN, chain);
                        self.w.end_nest();
                        self.w.end_nest();
                    }
                    Some(ElemData::Comment(c)) => {
                        self.w.attr(NFTA_SET_ELEM_USERDATA, &comment_udata(c));
                    }
                    None => {}
                }
                self.w.end_nest();
            }
            self.w.end_nest();
            self.w.end_msg();
        }
    }

    fn flush_chain(&mut self, chain: &str) {
        self.msg(NFT_MSG_DELRULE, 0);
        self.w.str(NFTA_RULE_TABLE, self.table);
        self.w.str(NFTA_RULE_CHAIN, chain);
        self.w.end_msg();
    }

    fn rule(&mut self, chain: &str, exprs: &[Expr], comment: Option<&str>) {
        self.msg(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
        self.w.str(NFTA_RULE_TABLE, self.table);
        self.w.str(NFTA_RULE_CHAIN, chain);
        if !exprs.is_empty() {
            self.w.begin_nest(NFTA_RULE_EXPRESSIONS);
            for e in exprs {
                self.w.begin_nest(NFTA_LIST_ELEM);
                e.emit(&mut self.w);
                self.w.end_nest();
            }
            self.w.end_nest();
        }
        if let Some(c) = comment {
            self.w.attr(NFTA_RULE_USERDATA, &comment_udata(c));
        }
        self.w.end_msg();
    }
}

/// libnftnl's comment TLV (`NFTNL_UDATA_RULE_COMMENT` / `NFTNL_UDATA_SET_ELEM_COMMENT`,
/// both 0): type, length including the NUL, text, NUL. Truncated to 127 bytes (nft's limit).
fn comment_udata(c: &str) -> Vec<u8> {
    let mut end = c.len().min(127);
    while !c.is_char_boundary(end) {
        end -= 1;
    }
    let mut ud = vec![UDATA_RULE_COMMENT, (end + 1) as u8];
    ud.extend_from_slice(&c.as_bytes()[..end]);
    ud.push(0);
    ud
}

enum ElemData {
    Value(Vec<u8>),
    Jump(String),
    Comment(String),
}

/// The nf_tables expressions hbd uses (each attribute list from nf_tables.h).
enum Expr {
    /// `NFTA_PAYLOAD_{DREG,BASE,OFFSET,LEN}`.
    Payload {
        dreg: u32,
        base: u32,
        offset: u32,
        len: u32,
    },
    /// `NFTA_META_{DREG,KEY}`.
    Meta { dreg: u32, key: u32 },
    /// `NFTA_LOOKUP_{SET,SREG,DREG}`.
    Lookup { set: String, sreg: u32, dreg: u32 },
    /// `NFTA_NG_{DREG,MODULUS,TYPE,OFFSET}` (type 0 = incremental).
    Numgen { dreg: u32, modulus: u32 },
    /// `NFTA_BITWISE_{SREG,DREG,LEN,MASK,XOR}`.
    Mask { reg: u32, mask: [u8; 4] },
    /// `NFTA_HASH_{SREG,DREG,LEN,MODULUS,SEED,OFFSET,TYPE}` (type 0 = jenkins).
    Jhash { reg: u32, len: u32, modulus: u32 },
    /// `NFTA_NAT_{TYPE,FAMILY,REG_ADDR_MIN,REG_PROTO_MIN}` (type 1 = dnat).
    Dnat { addr: u32, proto: Option<u32> },
}

impl Expr {
    fn emit(&self, w: &mut MsgWriter) {
        let name = match self {
            Expr::Payload { .. } => "payload",
            Expr::Meta { .. } => "meta",
            Expr::Lookup { .. } => "lookup",
            Expr::Numgen { .. } => "numgen",
            Expr::Mask { .. } => "bitwise",
            Expr::Jhash { .. } => "hash",
            Expr::Dnat { .. } => "nat",
        };
        w.str(NFTA_EXPR_NAME, name);
        w.begin_nest(NFTA_EXPR_DATA);
        match self {
            Expr::Payload {
                dreg,
                base,
                offset,
                len,
            } => {
                w.be32(1, *dreg);
                w.be32(2, *base);
                w.be32(3, *offset);
                w.be32(4, *len);
            }
            Expr::Meta { dreg, key } => {
                w.be32(1, *dreg);
                w.be32(2, *key);
            }
            Expr::Lookup { set, sreg, dreg } => {
                w.str(1, set);
                w.be32(2, *sreg);
                w.be32(3, *dreg);
            }
            Expr::Numgen { dreg, modulus } => {
                w.be32(1, *dreg);
                w.be32(2, *modulus);
                w.be32(3, 0);
                w.be32(4, 0);
            }
            Expr::Mask { reg, mask } => {
                w.be32(1, *reg);
                w.be32(2, *reg);
                w.be32(3, 4);
                w.begin_nest(4);
                w.attr(NFTA_DATA_VALUE, mask);
                w.end_nest();
                w.begin_nest(5);
                w.attr(NFTA_DATA_VALUE, &[0; 4]);
                w.end_nest();
            }
            Expr::Jhash { reg, len, modulus } => {
                w.be32(1, *reg);
                w.be32(2, *reg);
                w.be32(3, *len);
                w.be32(4, *modulus);
                w.be32(5, HASH_SEED);
                w.be32(6, 0);
                w.be32(7, 0);
            }
            Expr::Dnat { addr, proto } => {
                w.be32(1, 1);
                w.be32(2, u32::from(NFPROTO_IPV4));
                w.be32(3, *addr);
                if let Some(p) = proto {
                    w.be32(5, *p);
                }
            }
        }
        w.end_nest();
    }
}

fn v4(ip: IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => [0; 4],
    }
}

/// The dispatch key of a service in `services` (`daddr . l4proto . dport`, each padded to
/// 4 bytes) or `fwmarks` (host-order mark).
fn dispatch_key(key: &ServiceKey) -> (&'static str, Vec<u8>) {
    match key {
        ServiceKey::Tcp(a) | ServiceKey::Udp(a) => {
            let proto = if matches!(key, ServiceKey::Tcp(_)) {
                6
            } else {
                17
            };
            let mut k = v4(a.ip()).to_vec();
            k.extend_from_slice(&[proto, 0, 0, 0]);
            k.extend_from_slice(&a.port().to_be_bytes());
            k.extend_from_slice(&[0, 0]);
            (MAP_SERVICES, k)
        }
        ServiceKey::Fwmark(m, _) => (MAP_FWMARKS, m.to_ne_bytes().to_vec()),
    }
}

/// The key of a real in the `reals` shadow set: the service (`vip . proto . port`, or
/// `mark . 0 . 0` for a fwmark service) then `real address . real port`, 20 bytes.
fn real_key(key: &ServiceKey, real: &SocketAddr) -> Vec<u8> {
    let mut k = match key {
        ServiceKey::Fwmark(m, _) => {
            let mut k = m.to_ne_bytes().to_vec();
            k.extend_from_slice(&[0; 8]);
            k
        }
        _ => dispatch_key(key).1,
    };
    k.extend_from_slice(&v4(real.ip()));
    k.extend_from_slice(&real.port().to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}

/// Inverse of [`real_key`].
fn parse_real_key(k: &[u8]) -> Option<(ServiceKey, SocketAddr)> {
    if k.len() != 20 {
        return None;
    }
    let ip = |b: &[u8]| IpAddr::from([b[0], b[1], b[2], b[3]]);
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let svc = match k[4] {
        0 => ServiceKey::Fwmark(u32::from_ne_bytes([k[0], k[1], k[2], k[3]]), Family::V4),
        6 => ServiceKey::Tcp(SocketAddr::new(ip(&k[..4]), port(&k[8..]))),
        17 => ServiceKey::Udp(SocketAddr::new(ip(&k[..4]), port(&k[8..]))),
        _ => return None,
    };
    Some((svc, SocketAddr::new(ip(&k[12..]), port(&k[16..]))))
}

fn real_elem(key: &ServiceKey, r: &RealServer) -> (Vec<u8>, Option<ElemData>) {
    (
        real_key(key, &r.addr),
        Some(ElemData::Comment(real_comment(r))),
    )
}

fn is_fwmark(key: &ServiceKey) -> bool {
    matches!(key, ServiceKey::Fwmark(..))
}

/// The table skeleton: dispatch maps and the nat prerouting chain.
fn emit_skeleton(b: &mut Batch<'_>) {
    b.new_map(
        MAP_SERVICES,
        concat_type(&[TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]),
        12,
        NFT_DATA_VERDICT,
        0,
        false,
    );
    b.new_map(MAP_FWMARKS, TYPE_MARK, 4, NFT_DATA_VERDICT, 0, true);
    b.new_set(
        SET_REALS,
        concat_type(&[
            TYPE_IPADDR,
            TYPE_INET_PROTOCOL,
            TYPE_INET_SERVICE,
            TYPE_IPADDR,
            TYPE_INET_SERVICE,
        ]),
        20,
    );
    b.new_chain(CHAIN_PREROUTING, true);
    b.rule(
        CHAIN_PREROUTING,
        &[
            Expr::Payload {
                dreg: REG32_00,
                base: PAYLOAD_NETWORK,
                offset: 16,
                len: 4,
            },
            Expr::Meta {
                dreg: REG32_01,
                key: NFT_META_L4PROTO,
            },
            Expr::Payload {
                dreg: REG32_02,
                base: PAYLOAD_TRANSPORT,
                offset: 2,
                len: 2,
            },
            Expr::Lookup {
                set: MAP_SERVICES.into(),
                sreg: REG32_00,
                dreg: REG_VERDICT,
            },
        ],
        None,
    );
    b.rule(
        CHAIN_PREROUTING,
        &[
            Expr::Meta {
                dreg: REG32_00,
                key: NFT_META_MARK,
            },
            Expr::Lookup {
                set: MAP_FWMARKS.into(),
                sreg: REG32_00,
                dreg: REG_VERDICT,
            },
        ],
        None,
    );
}

/// Create a service's chain, balancing map and dispatch entry.
fn emit_create_service(b: &mut Batch<'_>, key: &ServiceKey) {
    let chain = chain_name(key);
    b.new_chain(&chain, false);
    let (data_type, data_len) = if is_fwmark(key) {
        (TYPE_IPADDR, 4)
    } else {
        (concat_type(&[TYPE_IPADDR, TYPE_INET_SERVICE]), 8)
    };
    b.new_map(&map_name(key), TYPE_INTEGER, 4, data_type, data_len, true);
    let (map, k) = dispatch_key(key);
    b.elements(NFT_MSG_NEWSETELEM, map, &[(k, Some(ElemData::Jump(chain)))]);
}

/// The balancing map's entries: `slots` (the new rule's modulus is their count), padded
/// with the same reals repeated up to the modulus of the rule being replaced.
///
/// Why the padding: the kernel picks a packet's rule generation when the packet enters the
/// chain but reads the map's generation at the lookup, so a packet crossing a commit can
/// run the old rule (`mod previous`) against the new map. Without keys up to `previous`
/// that lookup misses, the packet is not translated and the client gets a reset. The
/// padding is flushed with the map at the next change, so it never accumulates.
pub fn map_entries(slots: &[SocketAddr], previous_modulus: usize) -> Vec<SocketAddr> {
    if slots.is_empty() {
        return vec![];
    }
    (0..slots.len().max(previous_modulus))
        .map(|i| slots[i % slots.len()])
        .collect()
}

/// Fill a service's (empty) chain and map; `previous_modulus` is the slot count of the
/// balancing rule this replaces (0 for a new service).
fn emit_fill_service(b: &mut Batch<'_>, vs: &VirtualService, previous_modulus: usize) {
    let chain = chain_name(&vs.key);
    let map = map_name(&vs.key);
    b.rule(&chain, &[], Some(&service_comment(vs)));
    let slots = slots(vs);
    if !slots.is_empty() {
        let fw = is_fwmark(&vs.key);
        let elems: Vec<(Vec<u8>, Option<ElemData>)> = map_entries(&slots, previous_modulus)
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut v = v4(a.ip()).to_vec();
                if !fw {
                    v.extend_from_slice(&a.port().to_be_bytes());
                    v.extend_from_slice(&[0, 0]);
                }
                ((i as u32).to_ne_bytes().to_vec(), Some(ElemData::Value(v)))
            })
            .collect();
        b.elements(NFT_MSG_NEWSETELEM, &map, &elems);
        let modulus = slots.len() as u32;
        let mut exprs = Vec::new();
        if uses_hash(vs) {
            let offset = if vs.scheduler == Scheduler::Dh {
                16
            } else {
                12
            };
            exprs.push(Expr::Payload {
                dreg: REG32_00,
                base: PAYLOAD_NETWORK,
                offset,
                len: 4,
            });
            if let Some(p) = &vs.persistence
                && p.netmask.prefix < 32
            {
                exprs.push(Expr::Mask {
                    reg: REG32_00,
                    mask: p.netmask.to_v4().octets(),
                });
            }
            exprs.push(Expr::Jhash {
                reg: REG32_00,
                len: 4,
                modulus,
            });
        } else {
            exprs.push(Expr::Numgen {
                dreg: REG32_00,
                modulus,
            });
        }
        exprs.push(Expr::Lookup {
            set: map,
            sreg: REG32_00,
            dreg: REG32_00,
        });
        exprs.push(Expr::Dnat {
            addr: REG32_00,
            proto: (!fw).then_some(REG32_01),
        });
        b.rule(&chain, &exprs, None);
    }
}

/// Remove a service's rules, map and dispatch entry.
fn emit_delete_service(b: &mut Batch<'_>, key: &ServiceKey) {
    let chain = chain_name(key);
    let (map, k) = dispatch_key(key);
    b.elements(NFT_MSG_DELSETELEM, map, &[(k, None)]);
    b.flush_chain(&chain);
    b.del_map(&map_name(key));
    b.del_chain(&chain);
}

/// The batch that turns `before` into `after` for the `affected` services; with
/// `rebuild`, the table is recreated from scratch first (first use or unknown contents).
fn build_batch(
    table: &str,
    seq: u32,
    before: &[VirtualService],
    after: &[VirtualService],
    affected: &HashSet<ServiceKey>,
    rebuild: bool,
) -> (Vec<u8>, u32, u32) {
    let mut b = Batch::new(table, seq);
    if rebuild {
        b.new_table();
        b.del_table();
        b.new_table();
        emit_skeleton(&mut b);
        let mut shadow = Vec::new();
        for vs in after {
            emit_create_service(&mut b, &vs.key);
            emit_fill_service(&mut b, vs, 0);
            shadow.extend(vs.reals.iter().map(|r| real_elem(&vs.key, r)));
        }
        b.elements(NFT_MSG_NEWSETELEM, SET_REALS, &shadow);
        return b.finish();
    }
    for old in before.iter().filter(|v| affected.contains(&v.key)) {
        match after.iter().find(|n| n.key == old.key) {
            Some(_) => {
                b.flush_chain(&chain_name(&old.key));
                b.flush_map(&map_name(&old.key));
            }
            None => emit_delete_service(&mut b, &old.key),
        }
    }
    for new in after.iter().filter(|v| affected.contains(&v.key)) {
        if !before.iter().any(|o| o.key == new.key) {
            emit_create_service(&mut b, &new.key);
        }
        let previous = before
            .iter()
            .find(|o| o.key == new.key)
            .map_or(0, |o| slots(o).len());
        emit_fill_service(&mut b, new, previous);
    }
    // the shadow: net effect per affected service (edits = delete + add of the same key)
    let (mut del, mut add) = (Vec::new(), Vec::new());
    for key in affected {
        let old = before.iter().find(|v| v.key == *key);
        let new = after.iter().find(|v| v.key == *key);
        for r in old.map(|v| v.reals.as_slice()).unwrap_or(&[]) {
            if new.and_then(|n| n.real(&r.addr)) != Some(r) {
                del.push((real_key(key, &r.addr), None));
            }
        }
        for r in new.map(|v| v.reals.as_slice()).unwrap_or(&[]) {
            if old.and_then(|o| o.real(&r.addr)) != Some(r) {
                add.push(real_elem(key, r));
            }
        }
    }
    b.elements(NFT_MSG_DELSETELEM, SET_REALS, &del);
    b.elements(NFT_MSG_NEWSETELEM, SET_REALS, &add);
    b.finish()
}

/// The nftables dataplane: a netfilter netlink socket, hbd's table name, and the state
/// last read or written (refreshed from the kernel whenever unknown).
#[derive(Debug)]
pub struct Nft {
    sock: RequestSocket,
    table: String,
    seq: u32,
    /// What the table holds, when known; `None` forces a re-read before the next apply.
    state: Option<Vec<VirtualService>>,
    /// Whether the table skeleton (dispatch maps, prerouting chain) is in place.
    skeleton: bool,
    /// Set when a batch was refused: the table may differ from what hbd believes (e.g. an
    /// object deleted by hand), so the next apply rebuilds the whole table.
    rebuild: bool,
}

fn nl(source: NetlinkError) -> DataplaneError {
    DataplaneError::Netlink {
        backend: "nftables",
        source,
    }
}

impl Nft {
    /// Open the dataplane on table `ip <table>` (nothing is written until the first apply).
    pub fn open(table: &str) -> Result<Nft, DataplaneError> {
        let sock = RequestSocket::open(netlink_sys::constants::NETLINK_NETFILTER).map_err(nl)?;
        sock.set_recv_timeout(Duration::from_secs(10)).map_err(nl)?;
        Ok(Nft {
            sock,
            table: table.to_string(),
            seq: 0,
            state: None,
            skeleton: false,
            rebuild: false,
        })
    }

    fn read(&mut self) -> Result<Vec<VirtualService>, DataplaneError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut w = MsgWriter::new();
        w.begin_msg(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
        );
        w.raw(&[NFPROTO_IPV4, 0, 0, 0]);
        w.str(NFTA_RULE_TABLE, &self.table);
        w.end_msg();
        let mut services: BTreeMap<ServiceKey, VirtualService> = BTreeMap::new();
        let mut dispatch_rules = 0;
        let answer = self
            .sock
            .dump(&w.buf, seq, "nftables rule dump", |payload| {
                let (chain, comment) = decode_rule(payload)?;
                if chain == CHAIN_PREROUTING {
                    dispatch_rules += 1;
                } else if let Some(vs) = comment.as_deref().and_then(parse_service_comment) {
                    services.insert(vs.key, vs);
                }
                Ok(())
            });
        let missing_table = match answer {
            Ok(()) => false,
            // No table yet: nothing programmed.
            Err(NetlinkError::Refused {
                errno: nix::errno::Errno::ENOENT,
                ..
            }) => true,
            Err(e) => return Err(nl(e)),
        };
        self.skeleton = dispatch_rules == 2;
        if missing_table || !self.skeleton {
            return Ok(services.into_values().collect());
        }
        for (key, addr, comment) in self.read_shadow()? {
            match services.get_mut(&key) {
                Some(vs) => match parse_real_comment(addr, &comment) {
                    Some(r) => vs.reals.push(r),
                    None => self.rebuild = true,
                },
                // a real without its service: the table was edited by hand; start afresh
                None => self.rebuild = true,
            }
        }
        let mut out: Vec<VirtualService> = services.into_values().collect();
        for vs in &mut out {
            vs.reals.sort_by_key(|r| r.addr);
        }
        Ok(out)
    }

    /// Dump the `reals` shadow set: (service, real address, comment) per element.
    fn read_shadow(&mut self) -> Result<Vec<(ServiceKey, SocketAddr, String)>, DataplaneError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut w = MsgWriter::new();
        w.begin_msg(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
        );
        w.raw(&[NFPROTO_IPV4, 0, 0, 0]);
        w.str(NFTA_SET_ELEM_LIST_TABLE, &self.table);
        w.str(NFTA_SET_ELEM_LIST_SET, SET_REALS);
        w.end_msg();
        let mut out = Vec::new();
        self.sock
            .dump(&w.buf, seq, "nftables set element dump", |payload| {
                out.extend(decode_shadow_elements(payload.get(4..).unwrap_or(&[]))?);
                Ok(())
            })
            .map_err(nl)?;
        Ok(out)
    }

    fn send_batch(&mut self, buf: &[u8], first: u32, last: u32) -> Result<(), DataplaneError> {
        self.sock.send(buf).map_err(nl)?;
        let mut refusal: Option<NetlinkError> = None;
        self.sock
            .recv_until(|m| {
                if let Some(e) = m.error_code()
                    && e != 0
                    && refusal.is_none()
                {
                    refusal = Some(NetlinkError::Refused {
                        what: format!(
                            "nftables batch message {} of {}",
                            m.seq.wrapping_sub(first),
                            last.wrapping_sub(first)
                        ),
                        errno: nix::errno::Errno::from_raw(-e),
                    });
                }
                // The batch header itself failing ends the answer early.
                Ok(m.ty == NLMSG_ERROR && (m.seq == last || (m.seq == first && refusal.is_some())))
            })
            .map_err(nl)?;
        match refusal {
            Some(e) => Err(nl(e)),
            None => Ok(()),
        }
    }
}

/// The chain name and comment of a `NEWRULE` dump message.
fn decode_rule(payload: &[u8]) -> Result<(String, Option<String>), NetlinkError> {
    let attrs = parse_attrs(payload.get(4..).unwrap_or(&[]))?;
    let chain = find(&attrs, NFTA_RULE_CHAIN)
        .map(|a| a.str().map(str::to_string))
        .transpose()?
        .unwrap_or_default();
    let comment = find(&attrs, NFTA_RULE_USERDATA).and_then(|a| udata_comment(a.value));
    Ok((chain, comment))
}

/// The shadow elements of one `NEWSETELEM` dump message (unknown ones are skipped).
fn decode_shadow_elements(
    payload: &[u8],
) -> Result<Vec<(ServiceKey, SocketAddr, String)>, NetlinkError> {
    let attrs = parse_attrs(payload)?;
    let mut out = Vec::new();
    let Some(list) = find(&attrs, NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return Ok(out);
    };
    for elem in list.nested()? {
        let e = elem.nested()?;
        let key = match find(&e, NFTA_SET_ELEM_KEY) {
            Some(k) => k.nested()?,
            None => continue,
        };
        let Some(value) = find(&key, NFTA_DATA_VALUE) else {
            continue;
        };
        let comment = find(&e, NFTA_SET_ELEM_USERDATA).and_then(|u| udata_comment(u.value));
        if let (Some((svc, addr)), Some(c)) = (parse_real_key(value.value), comment) {
            out.push((svc, addr, c));
        }
    }
    Ok(out)
}

/// The comment in a libnftnl user-data TLV run (`u8 type, u8 len, value`).
pub fn udata_comment(mut ud: &[u8]) -> Option<String> {
    while ud.len() >= 2 {
        let (ty, len) = (ud[0], usize::from(ud[1]));
        let value = ud.get(2..2 + len)?;
        if ty == UDATA_RULE_COMMENT {
            let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
            return std::str::from_utf8(&value[..end]).ok().map(str::to_string);
        }
        ud = &ud[2 + len..];
    }
    None
}

impl Dataplane for Nft {
    async fn list(&mut self) -> Result<Vec<VirtualService>, DataplaneError> {
        let services = self.read()?;
        self.state = Some(services.clone());
        Ok(services)
    }

    async fn apply(&mut self, changes: &[Change]) -> Result<(), DataplaneError> {
        if changes.is_empty() {
            return Ok(());
        }
        let before = match self.state.take() {
            Some(s) => s,
            None => self.read()?,
        };
        let mut after = before.clone();
        if let Err(e) = apply_changes(&mut after, changes) {
            self.state = Some(before);
            return Err(e.into());
        }
        let affected: HashSet<ServiceKey> = changes.iter().map(Change::service).collect();
        for vs in after.iter().filter(|v| affected.contains(&v.key)) {
            if let Err(e) = check_supported(vs) {
                self.state = Some(before);
                return Err(e);
            }
        }
        let rebuild = !self.skeleton || self.rebuild;
        let (buf, first, last) = build_batch(
            &self.table,
            self.seq.wrapping_add(1),
            &before,
            &after,
            &affected,
            rebuild,
        );
        self.seq = last.wrapping_add(1);
        if let Err(e) = self.send_batch(&buf, first, last) {
            self.rebuild = true;
            return Err(e);
        }
        self.skeleton = true;
        self.rebuild = false;
        self.state = Some(after);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::netlink::parse_messages;

    fn vs(sched: Scheduler, weights: &[u32]) -> VirtualService {
        VirtualService {
            reals: weights
                .iter()
                .enumerate()
                .map(|(i, w)| RealServer {
                    weight: *w,
                    ..RealServer::new(
                        format!("198.51.100.{}:80", i + 1).parse().unwrap(),
                        Forwarding::Masq,
                    )
                })
                .collect(),
            ..VirtualService::new(ServiceKey::Tcp("192.0.2.10:80".parse().unwrap()), sched)
        }
    }

    fn count(slots: &[SocketAddr], last_octet: u8) -> usize {
        slots
            .iter()
            .filter(|a| matches!(a.ip(), IpAddr::V4(v) if v.octets()[3] == last_octet))
            .count()
    }

    #[test]
    fn slots_follow_weights() {
        let s = slots(&vs(Scheduler::Wrr, &[2, 1, 1]));
        assert_eq!(s.len(), 4);
        assert_eq!((count(&s, 1), count(&s, 2), count(&s, 3)), (2, 1, 1));
        // interleaved: the first pass visits every real
        assert_eq!(count(&s[..3], 1), 1);
        let s = slots(&vs(Scheduler::Wrr, &[200, 100, 0]));
        assert_eq!((s.len(), count(&s, 1), count(&s, 3)), (3, 2, 0));
        let s = slots(&vs(Scheduler::Rr, &[5, 1, 0]));
        assert_eq!(s.len(), 2);
        assert!(slots(&vs(Scheduler::Wrr, &[0, 0])).is_empty());
    }

    #[test]
    fn map_entries_cover_the_replaced_rules_modulus() {
        let s = slots(&vs(Scheduler::Wrr, &[1]));
        // shrinking from 3 slots to 1: keys 0..3 all present, all the remaining real
        let m = map_entries(&s, 3);
        assert_eq!(m.len(), 3);
        assert!(m.iter().all(|a| *a == s[0]));
        // growing: exactly the new slots, in order
        let s = slots(&vs(Scheduler::Wrr, &[2, 1, 1]));
        assert_eq!(map_entries(&s, 1), s);
        // nothing live: no entries (the rule goes too)
        assert!(map_entries(&[], 3).is_empty());
    }

    #[test]
    fn huge_weights_are_scaled() {
        let s = slots(&vs(Scheduler::Wlc, &[65535, 1, 30000]));
        assert!(s.len() as u32 <= MAX_SLOTS + 3, "{}", s.len());
        assert!(count(&s, 2) >= 1);
        let ratio = count(&s, 1) as f64 / count(&s, 3) as f64;
        assert!((ratio - 65535.0 / 30000.0).abs() < 0.01, "{ratio}");
    }

    #[test]
    fn comments_round_trip() {
        let mut v = vs(Scheduler::Sh, &[3]);
        v.persistence = Some(Persistence {
            timeout: Duration::from_secs(300),
            netmask: Netmask { prefix: 24 },
        });
        assert_eq!(
            service_comment(&v),
            "hbd-svc tcp 192.0.2.10:80 sh persist 300 24"
        );
        let back = parse_service_comment(&service_comment(&v)).unwrap();
        assert_eq!(
            back,
            VirtualService {
                reals: vec![],
                ..v.clone()
            }
        );
        let r = RealServer {
            upper_threshold: 9,
            lower_threshold: 2,
            ..v.reals[0]
        };
        assert_eq!(real_comment(&r), "masq 3 9 2");
        assert_eq!(parse_real_comment(r.addr, &real_comment(&r)), Some(r));
        for k in [
            v.key,
            ServiceKey::Udp(r.addr),
            ServiceKey::Fwmark(77, Family::V4),
        ] {
            assert_eq!(parse_real_key(&real_key(&k, &r.addr)), Some((k, r.addr)));
        }
        assert_eq!(parse_real_key(&[1, 2, 3]), None);
        let f = VirtualService::new(ServiceKey::Fwmark(7, Family::V4), Scheduler::Wrr);
        assert_eq!(parse_service_comment(&service_comment(&f)), Some(f));
        for junk in ["", "hbd-svc", "hbd-svc tcp x wrr", "gate x 0 0", "other"] {
            let a: SocketAddr = "198.51.100.1:80".parse().unwrap();
            assert!(parse_service_comment(junk).is_none() && parse_real_comment(a, junk).is_none());
        }
    }

    #[test]
    fn udata_comment_parsing_never_panics() {
        assert_eq!(udata_comment(&[0, 3, b'h', b'i', 0]).as_deref(), Some("hi"));
        assert_eq!(
            udata_comment(&[1, 1, 9, 0, 2, b'x', 0]).as_deref(),
            Some("x")
        );
        assert_eq!(udata_comment(&[0, 9, b'h']), None);
        assert_eq!(udata_comment(&[0]), None);
    }

    #[test]
    fn unsupported_services_are_refused() {
        let mut v = vs(Scheduler::Wrr, &[1]);
        v.reals[0].forwarding = Forwarding::Gate;
        let e = check_supported(&v).unwrap_err().to_string();
        assert!(e.contains("DNAT only") && e.contains("gate"), "{e}");
        let v6 = VirtualService::new(
            ServiceKey::Tcp("[2001:db8::1]:80".parse().unwrap()),
            Scheduler::Rr,
        );
        assert!(check_supported(&v6).is_err());
    }

    #[test]
    fn batch_is_framed_and_touches_only_our_table() {
        let after = vec![vs(Scheduler::Wrr, &[2, 1, 1])];
        let affected = HashSet::from([after[0].key]);
        let (buf, first, last) = build_batch("hbd", 10, &[], &after, &affected, true);
        let msgs = parse_messages(&buf).unwrap();
        assert_eq!(msgs.first().unwrap().ty, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(msgs.last().unwrap().ty, NFNL_MSG_BATCH_END);
        assert_eq!((first, last), (10, msgs[msgs.len() - 2].seq));
        for m in &msgs[1..msgs.len() - 1] {
            assert_eq!(m.ty >> 8, NFNL_SUBSYS_NFTABLES);
            let attrs = parse_attrs(&m.payload[4..]).unwrap();
            // attribute 1 is the table name in every nf_tables message hbd sends
            assert_eq!(find(&attrs, 1).unwrap().str().unwrap(), "hbd");
        }
        // an edit of a known service: flush + refill, no table rebuild
        let mut edited = after.clone();
        edited[0].reals[0].weight = 0;
        let (buf, _, _) = build_batch("hbd", 1, &after, &edited, &affected, false);
        let types: Vec<u16> = parse_messages(&buf)
            .unwrap()
            .iter()
            .map(|m| m.ty & 0xff)
            .collect();
        assert!(!types.contains(&NFT_MSG_DELTABLE) && !types.contains(&NFT_MSG_NEWCHAIN));
        assert_eq!(types[1], NFT_MSG_DELRULE);
        assert_eq!(types[2], NFT_MSG_DELSETELEM);
    }

    #[test]
    fn many_slots_split_across_messages() {
        let mut v = vs(Scheduler::Rr, &[]);
        v.reals = (0..2500u16)
            .map(|i| {
                RealServer::new(
                    SocketAddr::from(([198, 51, 100, 1], 1000 + i)),
                    Forwarding::Masq,
                )
            })
            .collect();
        let after = vec![v];
        let affected = HashSet::from([after[0].key]);
        let (buf, _, _) = build_batch("hbd", 1, &[], &after, &affected, true);
        let n = parse_messages(&buf)
            .unwrap()
            .iter()
            .filter(|m| m.ty & 0xff == NFT_MSG_NEWSETELEM)
            .count();
        // 2500 slots in 3 messages, the dispatch element, 2500 shadow elements in 3
        assert_eq!(n, 7);
    }
}
