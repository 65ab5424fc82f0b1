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
//!   map admit-vips  { type ipv4_addr : verdict; elements = { 192.0.2.10 : jump admit-192.0.2.10 } }
//!   map admit-marks { type mark : verdict }
//!   set reals { type ipv4_addr . inet_proto . inet_service . ipv4_addr . inet_service;
//!       elements = { 192.0.2.10 . tcp . 80 . 198.51.100.1 . 80 comment "masq 2 50 0", ... } }
//!   map persist-tcp-192.0.2.10-80 { type ipv4_addr : ipv4_addr . inet_service; flags timeout;
//!       elements = { 203.0.113.0 timeout 5m expires 4m58s : 198.51.100.1 . 80 } }
//!   chain prerouting { type nat hook prerouting priority dstnat; policy accept;
//!       ip daddr . meta l4proto . th dport vmap @services comment "hbd-layout 3"
//!       meta mark vmap @fwmarks }
//!   chain svc-tcp-192.0.2.10-80 {
//!       continue comment "hbd-svc tcp 192.0.2.10:80 wrr persist 300 24"   # parameters
//!       meta l4proto tcp dnat ip to ip saddr & 255.255.255.0 map @persist-tcp-192.0.2.10-80
//!       meta l4proto tcp dnat ip to numgen inc mod 4 map {     # the balancing rule
//!           0 : 198.51.100.1 . 80, 1 : 198.51.100.2 . 80, ... } }
//!   chain admit { type filter hook prerouting priority dstnat + 10; policy accept;
//!       ct direction original ct original ip daddr vmap @admit-vips
//!       ct direction original meta mark vmap @admit-marks }
//!   chain admit-192.0.2.10 {
//!       jump cap-tcp-192.0.2.10-80-198.51.100.1-80
//!       ip daddr . tcp dport { 198.51.100.1 . 80, ... } ct original proto-dst 80
//!           update @persist-tcp-192.0.2.10-80 { ip saddr & 255.255.255.0 timeout 5m : ip daddr . tcp dport } }
//!   chain cap-tcp-192.0.2.10-80-198.51.100.1-80 {
//!       ip daddr 198.51.100.1 tcp dport 80 ct original proto-dst 80 ct state new ct count over 50 drop }
//! }
//! ```
//!
//! * **Saved rulesets load back**: `nft list ruleset > f; nft -f f` restores the table
//!   (tested with the real `nft`). That is why each balancing map is the rule's own
//!   anonymous map (a named map keyed by `numgen`/`jhash` needs nft's `typeof` metadata,
//!   whose encoding is private to nft), why the rule matches `meta l4proto` before a
//!   DNAT that sets a port (nft refuses a port mapping without a protocol match), and why
//!   the admission rules match the real before the original port (nft 1.0.6 cannot type
//!   `ct original proto-dst` otherwise, nor inside a concatenation).
//!
//! * **Weights** become slots in the balancing map (divided by their gcd, scaled to at most
//!   [`MAX_SLOTS`] when larger); `numgen inc mod total` walks the slots: `wrr` (and wlc,
//!   sed, nq, which nftables runs as wrr: it cannot see connection counts); `rr` and `lc`
//!   give every live real one slot; `fo` and `ovf` give the one slot to the live real of
//!   highest weight. [`super::support`] names every approximation.
//! * **sh/mh/dh/lblc/lblcr** hash the source (destination for dh, lblc, lblcr) with a fixed
//!   seed: `jhash ip saddr mod total`. The same client keeps its real across rebuilds while
//!   the real set is unchanged.
//! * **Persistence** (`persistent`, `netmask`) is a timed map per service, `client & mask →
//!   real`. The service chain looks the client up before balancing (a hit DNATs to its
//!   real, a miss falls through to the balancing rule). After DNAT, the `admit` chain sends
//!   each client packet of a persistent service to its VIP's (or mark's) chain, which
//!   records or refreshes the entry (`update … timeout`) if the packet goes to a live real:
//!   an entry lives `persistent` seconds after the client's last packet. A real that is
//!   quiesced or removed has its clients' entries purged right after the batch
//!   (`purge_persistence`); since no rule can record that real any more, none come back.
//! * **Upper thresholds** (`<u:N>`) are a cap after DNAT: the real's own chain counts the
//!   service's live connections to it (`ct count`, conntrack's, closed ones excluded) and
//!   drops a new one beyond N. The chain is kept across refills of the group chain that
//!   jumps to it, so the count survives reloads and weight changes.
//! * **Quiescent** (weight 0): the real gets no slot, so no new connections; established
//!   connections keep flowing because conntrack keeps their NAT binding.
//! * **Atomicity**: one reconcile = one nfnetlink batch (BEGIN … END). Each affected
//!   service's chain (and its admission group's chain) is flushed and refilled inside it;
//!   the kernel commits all or nothing. A packet crossing the commit runs either the old
//!   rule with its own map or the new rule with its own map: the map goes with the rule
//!   that uses it. Persistence maps and cap chains outlive the refills.
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
    Family, Netmask, Persistence, RealServer, Scheduler, ServiceKey, VirtualService,
};
use super::netlink::{
    MsgWriter, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_ERROR,
    NetlinkError, RequestSocket, find, parse_attrs,
};
use super::reconcile::{Dataplane, DataplaneError};
use super::support::BackendKind;

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

/// `NFT_SET_ANONYMOUS`, `NFT_SET_CONSTANT`, `NFT_SET_MAP`, `NFT_SET_TIMEOUT`.
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_TIMEOUT: u32 = 0x10;
/// The name of a rule's anonymous map: the kernel replaces `%d` with a free number.
const ANON_MAP_NAME: &str = "__map%d";
/// The name of a rule's anonymous set.
const ANON_SET_NAME: &str = "__set%d";
/// `NFTA_LOOKUP_SET_ID`, `NFTA_SET_ELEM_LIST_SET_ID`: a set created in the same batch.
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
/// `NFT_CMP_EQ`.
const NFT_CMP_EQ: u32 = 0;
/// The comment of the dispatch rule: which table layout this hbd writes. A table without
/// it (an older hbd's named `lb-` maps) is rebuilt at the first change.
const LAYOUT_TAG: &str = "hbd-layout 3";
/// `NFT_DATA_VERDICT`.
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
/// `NFT_JUMP`, `NFT_CONTINUE`.
const NFT_JUMP: i32 = -3;
const NFT_CONTINUE: i32 = -1;
/// `NFT_REG_VERDICT`.
const REG_VERDICT: u32 = 0;
/// `NFT_REG32_00`..`02`.
const REG32_00: u32 = 8;
const REG32_01: u32 = 9;
const REG32_02: u32 = 10;
/// `REG32_04`, `REG32_05`: the persistence map's data (address, port).
const REG32_04: u32 = 12;
const REG32_05: u32 = 13;
/// `NF_INET_PRE_ROUTING`, `NF_IP_PRI_NAT_DST`, `NF_ACCEPT`.
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_IP_PRI_NAT_DST: i32 = -100;
/// The admission chain runs after DNAT (`dstnat + 10`), when the packet names its real.
const PRI_ADMIT: i32 = NF_IP_PRI_NAT_DST + 10;
/// `NFT_CT_STATE`, `NFT_CT_DIRECTION`, `NFT_CT_PROTO_DST`, `NFT_CT_DST_IP`;
/// `IP_CT_DIR_ORIGINAL`; `NF_CT_STATE_BIT(IP_CT_NEW)` (`ct state new`).
const NFT_CT_STATE: u32 = 0;
const NFT_CT_DIRECTION: u32 = 1;
const CT_STATE_NEW: u32 = 8;
/// `NFT_CMP_NEQ`; `NFT_CONNLIMIT_F_INV` (`ct count over N`); `NF_DROP`.
const NFT_CMP_NEQ: u32 = 1;
const NFT_CONNLIMIT_F_INV: u32 = 1;
const NF_DROP: u32 = 0;
const NFT_CT_PROTO_DST: u32 = 12;
const NFT_CT_DST_IP: u32 = 20;
const IP_CT_DIR_ORIGINAL: u8 = 0;
/// `NFT_DYNSET_OP_UPDATE`: add the element, or refresh its timeout (and data) if present.
const NFT_DYNSET_OP_UPDATE: u32 = 1;
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
const CHAIN_ADMIT: &str = "admit";
const MAP_ADMIT_VIPS: &str = "admit-vips";
const MAP_ADMIT_MARKS: &str = "admit-marks";
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

/// The timed map of a persistent service: masked client address → its real.
fn persist_map_name(key: &ServiceKey) -> String {
    format!("persist-{}", object_suffix(key))
}

/// Where a service's connections are admitted after DNAT (a real's upper threshold) and
/// its persistent clients recorded: one chain per VIP (its TCP and UDP services, told
/// apart by protocol and original port) or per firewall mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum AdmitGroup {
    Vip([u8; 4]),
    Mark(u32),
}

impl AdmitGroup {
    fn of(key: &ServiceKey) -> AdmitGroup {
        match key {
            ServiceKey::Tcp(a) | ServiceKey::Udp(a) => AdmitGroup::Vip(v4(a.ip())),
            ServiceKey::Fwmark(m, _) => AdmitGroup::Mark(*m),
        }
    }

    fn chain(self) -> String {
        match self {
            AdmitGroup::Vip(a) => format!("admit-{}", std::net::Ipv4Addr::from(a)),
            AdmitGroup::Mark(m) => format!("admit-fwm-{m}"),
        }
    }

    /// The dispatch map and key: `ct original ip daddr` or `meta mark`.
    fn dispatch(self) -> (&'static str, Vec<u8>) {
        match self {
            AdmitGroup::Vip(a) => (MAP_ADMIT_VIPS, a.to_vec()),
            AdmitGroup::Mark(m) => (MAP_ADMIT_MARKS, m.to_ne_bytes().to_vec()),
        }
    }
}

/// Whether a service needs admission rules: persistence, or a live real with an upper
/// connection threshold.
fn admits(vs: &VirtualService) -> bool {
    vs.persistence.is_some() || !capped_reals(vs).is_empty()
}

/// The reals with an upper threshold (`<u:N>`), whose new connections are capped
/// (quiesced ones too: their count must survive a quiesce and a return).
fn capped_reals(vs: &VirtualService) -> Vec<&RealServer> {
    let mut out: Vec<&RealServer> = vs.reals.iter().filter(|r| r.upper_threshold > 0).collect();
    out.sort_by_key(|r| r.addr);
    out
}

/// The chain holding one real's cap: its own chain, so that the rule (and the connection
/// list its `ct count` keeps) outlives every refill of the group chain that jumps to it.
fn cap_chain_name(key: &ServiceKey, real: &SocketAddr) -> String {
    format!("cap-{}-{}-{}", object_suffix(key), real.ip(), real.port())
}

/// (real, upper threshold) of every capped real of `key` in `services`.
fn caps_of(services: &[VirtualService], key: &ServiceKey) -> Vec<(SocketAddr, u32)> {
    services
        .iter()
        .find(|v| v.key == *key)
        .map(|v| {
            capped_reals(v)
                .iter()
                .map(|r| (r.addr, r.upper_threshold))
                .collect()
        })
        .unwrap_or_default()
}

/// The services of `group` in `services` that need admission rules, in key order.
fn admitted_in(services: &[VirtualService], group: AdmitGroup) -> Vec<&VirtualService> {
    let mut out: Vec<&VirtualService> = services
        .iter()
        .filter(|v| admits(v) && AdmitGroup::of(&v.key) == group)
        .collect();
    out.sort_by_key(|v| v.key);
    out
}

/// The reals a persistent client may be sent to: every real with a weight. The
/// persistence chain records only these, and a real leaving the set has its clients'
/// entries purged.
fn live_reals(vs: &VirtualService) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = vs
        .reals
        .iter()
        .filter(|r| !r.is_quiescent())
        .map(|r| r.addr)
        .collect();
    out.sort();
    out
}

/// The data of a persistence entry (or of a balancing slot): `addr . port` for a service
/// by address, the address alone for a firewall mark (DNAT keeps the port).
fn target_bytes(fwmark: bool, a: &SocketAddr) -> Vec<u8> {
    let mut v = v4(a.ip()).to_vec();
    if !fwmark {
        v.extend_from_slice(&a.port().to_be_bytes());
        v.extend_from_slice(&[0, 0]);
    }
    v
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
/// Weight 0 (quiescent) reals get none; `rr` (and `lc`, which runs as `rr`) ignores weights;
/// `fo` (and `ovf`, which runs as `fo`) gives the one slot to the live real of highest
/// weight (the lowest address among equals); otherwise weights are divided by
/// their gcd and, if their sum exceeds `max(MAX_SLOTS, live reals)`, scaled down (each live
/// real keeps at least one slot). Slots are interleaved (one per real per pass) so
/// `numgen inc` spreads consecutive connections.
pub fn slots(vs: &VirtualService) -> Vec<SocketAddr> {
    let live: Vec<(SocketAddr, u32)> = vs
        .reals
        .iter()
        .filter(|r| !r.is_quiescent())
        .map(|r| {
            let w = if matches!(vs.scheduler, Scheduler::Rr | Scheduler::Lc) {
                1
            } else {
                r.weight
            };
            (r.addr, w)
        })
        .collect();
    if live.is_empty() {
        return vec![];
    }
    if matches!(vs.scheduler, Scheduler::Fo | Scheduler::Ovf) {
        // The highest weight takes everything; among equals the lowest address.
        let top = live
            .iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(a, _)| *a);
        return top.into_iter().collect();
    }
    let g = live.iter().fold(0u32, |g, (_, w)| gcd(*w, g));
    let mut counts: Vec<u64> = live.iter().map(|(_, w)| u64::from(w / g.max(1))).collect();
    let cap = u64::from(MAX_SLOTS).max(live.len() as u64);
    let sum: u64 = counts.iter().sum();
    if sum > cap {
        for c in counts.iter_mut() {
            *c = (*c * cap / sum).max(1);
        }
    }
    // At most `cap` (plus one per live real, from the `max(1)` above): far below usize.
    let total = usize::try_from(counts.iter().sum::<u64>()).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(total.min(1 << 16));
    let mut left = counts;
    while out.len() < total {
        for (i, (addr, _)) in live.iter().enumerate() {
            if left[i] > 0 {
                left[i] -= 1;
                out.push(*addr);
            }
        }
    }
    out
}

/// Schedulers balanced by a hash (of the source; of the destination for [`hashes_destination`])
/// rather than `numgen`. Persistence no longer hashes: its timed map pins a client whatever
/// the scheduler chose.
fn uses_hash(vs: &VirtualService) -> bool {
    matches!(vs.scheduler, Scheduler::Sh | Scheduler::Mh) || hashes_destination(vs)
}

/// `dh`, and `lblc`/`lblcr`, which run as `dh` (destination locality).
fn hashes_destination(vs: &VirtualService) -> bool {
    matches!(
        vs.scheduler,
        Scheduler::Dh | Scheduler::Lblc | Scheduler::Lblcr
    )
}

/// Check that this backend can program a service ([`super::support`] decides, so the
/// director's check before a start or reload and this backend always agree).
pub fn check_supported(vs: &VirtualService) -> Result<(), DataplaneError> {
    super::support::supports(BackendKind::Nftables, std::slice::from_ref(vs)).map_err(|l| {
        DataplaneError::Unsupported {
            backend: "nftables",
            service: l.service,
            why: l.text,
        }
    })
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

    fn finish(mut self) -> Result<(Vec<u8>, u32, u32), NetlinkError> {
        let last = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.w
            .begin_msg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, self.seq);
        self.w.raw(&[0, 0]);
        self.w.raw(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
        self.w.end_msg();
        self.w.checked()?;
        Ok((self.w.buf, self.first, last))
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

    /// A chain; with `hook` (type, priority) a base chain on prerouting, policy accept.
    fn new_chain(&mut self, name: &str, hook: Option<(&str, i32)>) {
        self.msg(NFT_MSG_NEWCHAIN, NLM_F_CREATE);
        self.w.str(NFTA_CHAIN_TABLE, self.table);
        self.w.str(NFTA_CHAIN_NAME, name);
        if let Some((ty, priority)) = hook {
            self.w.begin_nest(NFTA_CHAIN_HOOK);
            self.w.be32(NFTA_HOOK_HOOKNUM, NF_INET_PRE_ROUTING);
            self.w.be32(NFTA_HOOK_PRIORITY, priority.cast_unsigned());
            self.w.end_nest();
            self.w.be32(NFTA_CHAIN_POLICY, NF_ACCEPT);
            self.w.str(NFTA_CHAIN_TYPE, ty);
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

    /// A rule's anonymous constant map `integer → data`; returns its batch id, by which
    /// its elements and the rule's lookup name it (its final name is the kernel's).
    fn new_anon_map(&mut self, data_type: u32, data_len: u32) -> u32 {
        self.msg(NFT_MSG_NEWSET, NLM_F_CREATE);
        let id = self.seq;
        self.w.str(NFTA_SET_TABLE, self.table);
        self.w.str(NFTA_SET_NAME, ANON_MAP_NAME);
        self.w.be32(
            NFTA_SET_FLAGS,
            NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_MAP,
        );
        self.w.be32(NFTA_SET_KEY_TYPE, TYPE_INTEGER);
        self.w.be32(NFTA_SET_KEY_LEN, 4);
        self.w.be32(NFTA_SET_DATA_TYPE, data_type);
        self.w.be32(NFTA_SET_DATA_LEN, data_len);
        self.w.be32(NFTA_SET_ID, id);
        let mut ud = vec![UDATA_SET_KEYBYTEORDER, 4];
        ud.extend_from_slice(&BYTEORDER_HOST_ENDIAN.to_ne_bytes());
        self.w.attr(NFTA_SET_USERDATA, &ud);
        self.w.end_msg();
        id
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

    /// A persistence map `ipv4_addr : data` whose elements time out (the timeout is the
    /// updating rule's, so the map itself does not depend on the service's settings).
    fn new_timeout_map(&mut self, name: &str, data_type: u32, data_len: u32) {
        self.msg(NFT_MSG_NEWSET, NLM_F_CREATE);
        self.w.str(NFTA_SET_TABLE, self.table);
        self.w.str(NFTA_SET_NAME, name);
        self.w.be32(NFTA_SET_FLAGS, NFT_SET_MAP | NFT_SET_TIMEOUT);
        self.w.be32(NFTA_SET_KEY_TYPE, TYPE_IPADDR);
        self.w.be32(NFTA_SET_KEY_LEN, 4);
        self.w.be32(NFTA_SET_DATA_TYPE, data_type);
        self.w.be32(NFTA_SET_DATA_LEN, data_len);
        self.w.be32(NFTA_SET_ID, self.seq);
        self.w.end_msg();
    }

    /// A rule's anonymous constant set (keys in network order); returns its batch id.
    fn new_anon_set(&mut self, key_type: u32, key_len: u32) -> u32 {
        self.msg(NFT_MSG_NEWSET, NLM_F_CREATE);
        let id = self.seq;
        self.w.str(NFTA_SET_TABLE, self.table);
        self.w.str(NFTA_SET_NAME, ANON_SET_NAME);
        self.w
            .be32(NFTA_SET_FLAGS, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT);
        self.w.be32(NFTA_SET_KEY_TYPE, key_type);
        self.w.be32(NFTA_SET_KEY_LEN, key_len);
        self.w.be32(NFTA_SET_ID, id);
        self.w.end_msg();
        id
    }

    fn del_set(&mut self, name: &str) {
        self.msg(NFT_MSG_DELSET, 0);
        self.w.str(NFTA_SET_TABLE, self.table);
        self.w.str(NFTA_SET_NAME, name);
        self.w.end_msg();
    }

    /// Every element of set `name` removed (`DELSETELEM` without a list): never refused for
    /// an element that timed out meanwhile, unlike a delete by key.
    fn flush_set(&mut self, name: &str) {
        self.msg(NFT_MSG_DELSETELEM, 0);
        self.w.str(NFTA_SET_ELEM_LIST_TABLE, self.table);
        self.w.str(NFTA_SET_ELEM_LIST_SET, name);
        self.w.end_msg();
    }

    /// Elements `key → value` (value bytes) or `key → jump chain`, of set `map` (or of the
    /// anonymous map with batch id `set_id`).
    fn elements(&mut self, ty: u16, map: &str, elems: &[(Vec<u8>, Option<ElemData>)]) {
        self.set_elements(ty, map, None, elems);
    }

    fn set_elements(
        &mut self,
        ty: u16,
        map: &str,
        set_id: Option<u32>,
        elems: &[(Vec<u8>, Option<ElemData>)],
    ) {
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
            if let Some(id) = set_id {
                self.w.be32(NFTA_SET_ELEM_LIST_SET_ID, id);
            }
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
                        self.w.be32(NFTA_VERDICT_CODE, NFT_JUMP.cast_unsigned());
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
    // end ≤ 127, so the length (with its NUL) fits a byte.
    let mut ud = vec![UDATA_RULE_COMMENT, u8::try_from(end + 1).unwrap_or(u8::MAX)];
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
    /// `NFTA_LOOKUP_{SET,SREG,DREG,SET_ID}`.
    Lookup {
        set: String,
        sreg: u32,
        dreg: u32,
        set_id: Option<u32>,
    },
    /// `NFTA_IMMEDIATE_{DREG,DATA}`: the verdict `continue` (`NFT_CONTINUE`), which does
    /// nothing; it carries the service comment, because `nft` prints a rule without
    /// statements as the chain's own comment and a saved ruleset would lose the rule.
    Continue,
    /// `NFTA_CMP_{SREG,OP,DATA}` with `NFT_CMP_EQ`.
    Equals { reg: u32, value: Vec<u8> },
    /// The same with `NFT_CMP_NEQ`.
    NotEquals { reg: u32, value: Vec<u8> },
    /// `NFTA_CONNLIMIT_{COUNT,FLAGS}` with `NFT_CONNLIMIT_F_INV`: `ct count over N`, true
    /// when the rule's list of live connections (this one added) holds more than N.
    ConnlimitOver(u32),
    /// `NFTA_IMMEDIATE_{DREG,DATA}`: the verdict `drop`.
    Drop,
    /// `NFTA_IMMEDIATE_{DREG,DATA}`: the verdict `jump chain`.
    Jump(String),
    /// `NFTA_NG_{DREG,MODULUS,TYPE,OFFSET}` (type 0 = incremental).
    Numgen { dreg: u32, modulus: u32 },
    /// `NFTA_BITWISE_{SREG,DREG,LEN,MASK,XOR}`.
    Mask { reg: u32, mask: [u8; 4] },
    /// `NFTA_HASH_{SREG,DREG,LEN,MODULUS,SEED,OFFSET,TYPE}` (type 0 = jenkins).
    Jhash { reg: u32, len: u32, modulus: u32 },
    /// `NFTA_NAT_{TYPE,FAMILY,REG_ADDR_MIN,REG_PROTO_MIN}` (type 1 = dnat).
    Dnat { addr: u32, proto: Option<u32> },
    /// `NFTA_CT_{DREG,KEY,DIRECTION}`: a conntrack field, of the original direction's tuple
    /// when `original`.
    Ct { dreg: u32, key: u32, original: bool },
    /// `NFTA_LOOKUP_{SET,SREG,SET_ID}` without a destination: set membership.
    Member { set: String, sreg: u32, set_id: u32 },
    /// `NFTA_DYNSET_{SET_NAME,OP,SREG_KEY,SREG_DATA,TIMEOUT}` with `NFT_DYNSET_OP_UPDATE`:
    /// `update @set { key timeout T : data }` from the packet path.
    Update {
        set: String,
        key: u32,
        data: u32,
        timeout_ms: u64,
    },
}

impl Expr {
    fn emit(&self, w: &mut MsgWriter) {
        let name = match self {
            Expr::Payload { .. } => "payload",
            Expr::Meta { .. } => "meta",
            Expr::Lookup { .. } => "lookup",
            Expr::Equals { .. } | Expr::NotEquals { .. } => "cmp",
            Expr::ConnlimitOver(_) => "connlimit",
            Expr::Drop | Expr::Jump(_) => "immediate",
            Expr::Continue => "immediate",
            Expr::Numgen { .. } => "numgen",
            Expr::Mask { .. } => "bitwise",
            Expr::Jhash { .. } => "hash",
            Expr::Dnat { .. } => "nat",
            Expr::Ct { .. } => "ct",
            Expr::Member { .. } => "lookup",
            Expr::Update { .. } => "dynset",
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
            Expr::Lookup {
                set,
                sreg,
                dreg,
                set_id,
            } => {
                w.str(1, set);
                w.be32(2, *sreg);
                w.be32(3, *dreg);
                if let Some(id) = set_id {
                    w.be32(NFTA_LOOKUP_SET_ID, *id);
                }
            }
            Expr::Continue => {
                w.be32(1, REG_VERDICT);
                w.begin_nest(2);
                w.begin_nest(NFTA_DATA_VERDICT);
                w.be32(NFTA_VERDICT_CODE, NFT_CONTINUE.cast_unsigned());
                w.end_nest();
                w.end_nest();
            }
            Expr::Equals { reg, value } | Expr::NotEquals { reg, value } => {
                w.be32(1, *reg);
                let op = if matches!(self, Expr::Equals { .. }) {
                    NFT_CMP_EQ
                } else {
                    NFT_CMP_NEQ
                };
                w.be32(2, op);
                w.begin_nest(3);
                w.attr(NFTA_DATA_VALUE, value);
                w.end_nest();
            }
            Expr::ConnlimitOver(n) => {
                w.be32(1, *n);
                w.be32(2, NFT_CONNLIMIT_F_INV);
            }
            Expr::Drop => {
                w.be32(1, REG_VERDICT);
                w.begin_nest(2);
                w.begin_nest(NFTA_DATA_VERDICT);
                w.be32(NFTA_VERDICT_CODE, NF_DROP);
                w.end_nest();
                w.end_nest();
            }
            Expr::Jump(chain) => {
                w.be32(1, REG_VERDICT);
                w.begin_nest(2);
                w.begin_nest(NFTA_DATA_VERDICT);
                w.be32(NFTA_VERDICT_CODE, NFT_JUMP.cast_unsigned());
                w.str(NFTA_VERDICT_CHAIN, chain);
                w.end_nest();
                w.end_nest();
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
            Expr::Ct {
                dreg,
                key,
                original,
            } => {
                w.be32(1, *dreg);
                w.be32(2, *key);
                if *original {
                    w.attr(3, &[IP_CT_DIR_ORIGINAL]);
                }
            }
            Expr::Member { set, sreg, set_id } => {
                w.str(1, set);
                w.be32(2, *sreg);
                w.be32(NFTA_LOOKUP_SET_ID, *set_id);
            }
            Expr::Update {
                set,
                key,
                data,
                timeout_ms,
            } => {
                w.str(1, set);
                w.be32(3, NFT_DYNSET_OP_UPDATE);
                w.be32(4, *key);
                w.be32(5, *data);
                w.attr(6, &timeout_ms.to_be_bytes());
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
    b.new_map(MAP_ADMIT_VIPS, TYPE_IPADDR, 4, NFT_DATA_VERDICT, 0, false);
    b.new_map(MAP_ADMIT_MARKS, TYPE_MARK, 4, NFT_DATA_VERDICT, 0, true);
    b.new_chain(CHAIN_PREROUTING, Some(("nat", NF_IP_PRI_NAT_DST)));
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
                set_id: None,
            },
        ],
        Some(LAYOUT_TAG),
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
                set_id: None,
            },
        ],
        None,
    );
    // Persistence, after DNAT: client packets (`ct direction original`) of a persistent
    // service, found by their original destination or their mark.
    b.new_chain(CHAIN_ADMIT, Some(("filter", PRI_ADMIT)));
    let original = || {
        [
            Expr::Ct {
                dreg: REG32_00,
                key: NFT_CT_DIRECTION,
                original: false,
            },
            Expr::Equals {
                reg: REG32_00,
                value: vec![IP_CT_DIR_ORIGINAL],
            },
        ]
    };
    let mut by_vip = Vec::from(original());
    by_vip.extend([
        Expr::Ct {
            dreg: REG32_00,
            key: NFT_CT_DST_IP,
            original: true,
        },
        Expr::Lookup {
            set: MAP_ADMIT_VIPS.into(),
            sreg: REG32_00,
            dreg: REG_VERDICT,
            set_id: None,
        },
    ]);
    b.rule(CHAIN_ADMIT, &by_vip, None);
    let mut by_mark = Vec::from(original());
    by_mark.extend([
        Expr::Meta {
            dreg: REG32_00,
            key: NFT_META_MARK,
        },
        Expr::Lookup {
            set: MAP_ADMIT_MARKS.into(),
            sreg: REG32_00,
            dreg: REG_VERDICT,
            set_id: None,
        },
    ]);
    b.rule(CHAIN_ADMIT, &by_mark, None);
}

/// Create a service's chain and dispatch entry.
fn emit_create_service(b: &mut Batch<'_>, key: &ServiceKey) {
    let chain = chain_name(key);
    b.new_chain(&chain, None);
    let (map, k) = dispatch_key(key);
    b.elements(NFT_MSG_NEWSETELEM, map, &[(k, Some(ElemData::Jump(chain)))]);
}

/// Fill a service's (empty) chain: the comment rule, then the balancing rule with its own
/// anonymous map `slot → real` (none while no real has a slot).
fn emit_fill_service(b: &mut Batch<'_>, vs: &VirtualService) {
    let chain = chain_name(&vs.key);
    b.rule(&chain, &[Expr::Continue], Some(&service_comment(vs)));
    if let Some(p) = &vs.persistence {
        emit_persist_hit(b, vs, p);
    }
    let slots = slots(vs);
    if slots.is_empty() {
        return;
    }
    let fw = is_fwmark(&vs.key);
    let (data_type, data_len) = target_type(fw);
    let map = b.new_anon_map(data_type, data_len);
    let elems: Vec<(Vec<u8>, Option<ElemData>)> = slots
        .iter()
        .enumerate()
        .map(|(i, a)| {
            (
                u32::try_from(i).unwrap_or(u32::MAX).to_ne_bytes().to_vec(),
                Some(ElemData::Value(target_bytes(fw, a))),
            )
        })
        .collect();
    b.set_elements(NFT_MSG_NEWSETELEM, ANON_MAP_NAME, Some(map), &elems);
    let modulus = u32::try_from(slots.len()).unwrap_or(u32::MAX);
    let mut exprs = Vec::new();
    // nft only loads a DNAT that sets a port after a protocol match (the kernel needs none).
    let proto = match vs.key {
        ServiceKey::Tcp(_) => Some(6u8),
        ServiceKey::Udp(_) => Some(17),
        ServiceKey::Fwmark(..) => None,
    };
    if let Some(p) = proto {
        exprs.push(Expr::Meta {
            dreg: REG32_00,
            key: NFT_META_L4PROTO,
        });
        exprs.push(Expr::Equals {
            reg: REG32_00,
            value: vec![p],
        });
    }
    if uses_hash(vs) {
        let offset = if hashes_destination(vs) { 16 } else { 12 };
        exprs.push(Expr::Payload {
            dreg: REG32_00,
            base: PAYLOAD_NETWORK,
            offset,
            len: 4,
        });
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
        set: ANON_MAP_NAME.into(),
        sreg: REG32_00,
        dreg: REG32_00,
        set_id: Some(map),
    });
    exprs.push(Expr::Dnat {
        addr: REG32_00,
        proto: (!fw).then_some(REG32_01),
    });
    b.rule(&chain, &exprs, None);
}

/// nft's type and length of a DNAT target (see [`target_bytes`]).
fn target_type(fwmark: bool) -> (u32, u32) {
    if fwmark {
        (TYPE_IPADDR, 4)
    } else {
        (concat_type(&[TYPE_IPADDR, TYPE_INET_SERVICE]), 8)
    }
}

/// The protocol match of a service by address (`meta l4proto tcp`): nft needs it before a
/// DNAT that sets a port or a `tcp dport`; a firewall mark has none.
fn proto_match(key: &ServiceKey) -> Vec<Expr> {
    let proto = match key {
        ServiceKey::Tcp(_) => 6u8,
        ServiceKey::Udp(_) => 17,
        ServiceKey::Fwmark(..) => return vec![],
    };
    vec![
        Expr::Meta {
            dreg: REG32_00,
            key: NFT_META_L4PROTO,
        },
        Expr::Equals {
            reg: REG32_00,
            value: vec![proto],
        },
    ]
}

/// `ip saddr & mask` into `REG32_00`: the client as persistence sees it.
fn masked_source(p: &Persistence) -> Vec<Expr> {
    let mut out = vec![Expr::Payload {
        dreg: REG32_00,
        base: PAYLOAD_NETWORK,
        offset: 12,
        len: 4,
    }];
    if p.netmask.prefix < 32 {
        out.push(Expr::Mask {
            reg: REG32_00,
            mask: p.netmask.to_v4().octets(),
        });
    }
    out
}

/// The persistence hit, before the balancing rule: a client with an entry goes to its real
/// (`dnat ip to ip saddr & mask map @persist-…`); without one the lookup fails and the
/// balancing rule picks.
fn emit_persist_hit(b: &mut Batch<'_>, vs: &VirtualService, p: &Persistence) {
    let fw = is_fwmark(&vs.key);
    let mut exprs = proto_match(&vs.key);
    exprs.extend(masked_source(p));
    exprs.push(Expr::Lookup {
        set: persist_map_name(&vs.key),
        sreg: REG32_00,
        dreg: REG32_00,
        set_id: None,
    });
    exprs.push(Expr::Dnat {
        addr: REG32_00,
        proto: (!fw).then_some(REG32_01),
    });
    b.rule(&chain_name(&vs.key), &exprs, None);
}

/// A persistent service's map.
fn emit_new_persist_map(b: &mut Batch<'_>, key: &ServiceKey) {
    let (data_type, data_len) = target_type(is_fwmark(key));
    b.new_timeout_map(&persist_map_name(key), data_type, data_len);
}

/// The recording rule of one persistent service, in its group's chain, after DNAT: a
/// client packet of this service to one of its live reals sets (or refreshes) the client's
/// entry, `update @persist-… { ip saddr & mask timeout T : ip daddr . tcp dport }`. Its
/// match order is the one `nft` prints back loadably (the protocol, then the real, then the
/// original port). Nothing while no real is live.
fn emit_persist_record(b: &mut Batch<'_>, vs: &VirtualService, p: &Persistence) {
    let live = live_reals(vs);
    if live.is_empty() {
        return;
    }
    let fw = is_fwmark(&vs.key);
    let key_type = if fw {
        TYPE_IPADDR
    } else {
        concat_type(&[TYPE_IPADDR, TYPE_INET_SERVICE])
    };
    let key_len = if fw { 4 } else { 8 };
    let set = b.new_anon_set(key_type, key_len);
    let elems: Vec<(Vec<u8>, Option<ElemData>)> =
        live.iter().map(|a| (target_bytes(fw, a), None)).collect();
    b.set_elements(NFT_MSG_NEWSETELEM, ANON_SET_NAME, Some(set), &elems);
    let daddr = |dreg| Expr::Payload {
        dreg,
        base: PAYLOAD_NETWORK,
        offset: 16,
        len: 4,
    };
    let dport = |dreg| Expr::Payload {
        dreg,
        base: PAYLOAD_TRANSPORT,
        offset: 2,
        len: 2,
    };
    let mut exprs = proto_match(&vs.key);
    exprs.push(daddr(REG32_00));
    if !fw {
        exprs.push(dport(REG32_01));
    }
    exprs.push(Expr::Member {
        set: ANON_SET_NAME.into(),
        sreg: REG32_00,
        set_id: set,
    });
    if let ServiceKey::Tcp(a) | ServiceKey::Udp(a) = vs.key {
        exprs.push(Expr::Ct {
            dreg: REG32_00,
            key: NFT_CT_PROTO_DST,
            original: true,
        });
        exprs.push(Expr::Equals {
            reg: REG32_00,
            value: a.port().to_be_bytes().to_vec(),
        });
    }
    exprs.extend(masked_source(p));
    exprs.push(daddr(REG32_04));
    if !fw {
        exprs.push(dport(REG32_05));
    }
    exprs.push(Expr::Update {
        set: persist_map_name(&vs.key),
        key: REG32_00,
        data: REG32_04,
        timeout_ms: u64::try_from(p.timeout.as_millis()).unwrap_or(u64::MAX),
    });
    b.rule(&AdmitGroup::of(&vs.key).chain(), &exprs, None);
}

/// A group's chain and dispatch entry.
fn emit_create_group(b: &mut Batch<'_>, group: AdmitGroup) {
    let chain = group.chain();
    b.new_chain(&chain, None);
    let (map, k) = group.dispatch();
    b.elements(NFT_MSG_NEWSETELEM, map, &[(k, Some(ElemData::Jump(chain)))]);
}

/// Remove a group's dispatch entry, rules and chain.
fn emit_delete_group(b: &mut Batch<'_>, group: AdmitGroup) {
    let chain = group.chain();
    let (map, k) = group.dispatch();
    b.elements(NFT_MSG_DELSETELEM, map, &[(k, None)]);
    b.flush_chain(&chain);
    b.del_chain(&chain);
}

/// Remove a service's rules (their maps go with them), chain and dispatch entry.
fn emit_delete_service(b: &mut Batch<'_>, key: &ServiceKey) {
    let chain = chain_name(key);
    let (map, k) = dispatch_key(key);
    b.elements(NFT_MSG_DELSETELEM, map, &[(k, None)]);
    b.flush_chain(&chain);
    b.del_chain(&chain);
}

/// The batch that turns `before` into `after` for the `affected` services; with
/// `rebuild`, the table is recreated from scratch first (first use or unknown contents).
///
/// Order inside the batch: rules that go are flushed before the maps they use are deleted,
/// and maps are created before the rules that use them. A persistence map that stays keeps
/// its entries (flushed only when the netmask changes); entries of reals that stop being
/// live are purged after the batch ([`stale_persistence`]).
fn build_batch(
    table: &str,
    seq: u32,
    before: &[VirtualService],
    after: &[VirtualService],
    affected: &HashSet<ServiceKey>,
    rebuild: bool,
) -> Result<(Vec<u8>, u32, u32), NetlinkError> {
    let mut b = Batch::new(table, seq);
    if rebuild {
        b.new_table();
        b.del_table();
        b.new_table();
        emit_skeleton(&mut b);
        let mut shadow = Vec::new();
        for vs in after.iter().filter(|v| v.persistence.is_some()) {
            emit_new_persist_map(&mut b, &vs.key);
        }
        for vs in after {
            emit_create_service(&mut b, &vs.key);
            emit_fill_service(&mut b, vs);
            shadow.extend(vs.reals.iter().map(|r| real_elem(&vs.key, r)));
        }
        let groups: std::collections::BTreeSet<AdmitGroup> = after
            .iter()
            .filter(|v| admits(v))
            .map(|v| AdmitGroup::of(&v.key))
            .collect();
        for vs in after {
            for r in capped_reals(vs) {
                emit_cap(&mut b, vs, r);
            }
        }
        for g in groups {
            emit_create_group(&mut b, g);
            emit_fill_group(&mut b, after, g);
        }
        b.elements(NFT_MSG_NEWSETELEM, SET_REALS, &shadow);
        return b.finish();
    }
    for old in before.iter().filter(|v| affected.contains(&v.key)) {
        match after.iter().find(|n| n.key == old.key) {
            Some(_) => b.flush_chain(&chain_name(&old.key)),
            None => emit_delete_service(&mut b, &old.key),
        }
    }
    // Persistence groups touched by the change: emptied (or removed) before maps go.
    let groups: std::collections::BTreeSet<AdmitGroup> =
        affected.iter().map(AdmitGroup::of).collect();
    let mut refill = Vec::new();
    for &g in &groups {
        let had = !admitted_in(before, g).is_empty();
        let has = !admitted_in(after, g).is_empty();
        match (had, has) {
            (true, true) => {
                b.flush_chain(&g.chain());
                refill.push(g);
            }
            (true, false) => emit_delete_group(&mut b, g),
            (false, true) => {
                emit_create_group(&mut b, g);
                refill.push(g);
            }
            (false, false) => {}
        }
    }
    let mut keys: Vec<&ServiceKey> = affected.iter().collect();
    keys.sort();
    // Caps: one that goes or changes is removed (the group chain no longer jumps to it);
    // an unchanged one stays, with the connections it counts.
    for key in &keys {
        let new = caps_of(after, key);
        for (addr, u) in caps_of(before, key) {
            if !new.contains(&(addr, u)) {
                let chain = cap_chain_name(key, &addr);
                b.flush_chain(&chain);
                b.del_chain(&chain);
            }
        }
    }
    for key in &keys {
        let old = caps_of(before, key);
        if let Some(vs) = after.iter().find(|v| v.key == **key) {
            for r in capped_reals(vs) {
                if !old.contains(&(r.addr, r.upper_threshold)) {
                    emit_cap(&mut b, vs, r);
                }
            }
        }
    }
    for key in keys {
        let old = before
            .iter()
            .find(|v| v.key == *key)
            .and_then(|v| v.persistence);
        let new = after
            .iter()
            .find(|v| v.key == *key)
            .and_then(|v| v.persistence);
        match (old, new) {
            (Some(_), None) => b.del_set(&persist_map_name(key)),
            (None, Some(_)) => emit_new_persist_map(&mut b, key),
            (Some(o), Some(n)) if o.netmask != n.netmask => {
                b.flush_set(&persist_map_name(key));
            }
            _ => {}
        }
    }
    for new in after.iter().filter(|v| affected.contains(&v.key)) {
        if !before.iter().any(|o| o.key == new.key) {
            emit_create_service(&mut b, &new.key);
        }
        emit_fill_service(&mut b, new);
    }
    for g in refill {
        emit_fill_group(&mut b, after, g);
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

/// The admission rules of `group`: every cap first (a dropped connection must not be
/// recorded for persistence), then the recording rules.
fn emit_fill_group(b: &mut Batch<'_>, services: &[VirtualService], group: AdmitGroup) {
    let admitted = admitted_in(services, group);
    for vs in &admitted {
        for r in capped_reals(vs) {
            b.rule(
                &group.chain(),
                &[Expr::Jump(cap_chain_name(&vs.key, &r.addr))],
                None,
            );
        }
    }
    for vs in &admitted {
        if let Some(p) = &vs.persistence {
            emit_persist_record(b, vs, p);
        }
    }
}

/// A real's upper threshold as a hard cap, after DNAT: a new connection of this service to
/// this real while it already holds `u` live ones (conntrack's, counted by the rule's own
/// `ct count` list) is dropped: `ip daddr 198.51.100.18 tcp dport 80 ct original proto-dst
/// 80 ct state new ct count over 50 drop`. The client's SYN retransmission is balanced
/// afresh. (IPVS instead passes such a connection to another real at once; nftables cannot
/// undo a DNAT, and its balancing map cannot skip a real.)
fn emit_cap(b: &mut Batch<'_>, vs: &VirtualService, r: &RealServer) {
    let chain = cap_chain_name(&vs.key, &r.addr);
    b.new_chain(&chain, None);
    let mut exprs = proto_match(&vs.key);
    exprs.push(Expr::Payload {
        dreg: REG32_00,
        base: PAYLOAD_NETWORK,
        offset: 16,
        len: 4,
    });
    exprs.push(Expr::Equals {
        reg: REG32_00,
        value: v4(r.addr.ip()).to_vec(),
    });
    if let ServiceKey::Tcp(a) | ServiceKey::Udp(a) = vs.key {
        exprs.push(Expr::Payload {
            dreg: REG32_00,
            base: PAYLOAD_TRANSPORT,
            offset: 2,
            len: 2,
        });
        exprs.push(Expr::Equals {
            reg: REG32_00,
            value: r.addr.port().to_be_bytes().to_vec(),
        });
        exprs.push(Expr::Ct {
            dreg: REG32_00,
            key: NFT_CT_PROTO_DST,
            original: true,
        });
        exprs.push(Expr::Equals {
            reg: REG32_00,
            value: a.port().to_be_bytes().to_vec(),
        });
    }
    exprs.push(Expr::Ct {
        dreg: REG32_00,
        key: NFT_CT_STATE,
        original: false,
    });
    exprs.push(Expr::Mask {
        reg: REG32_00,
        mask: CT_STATE_NEW.to_ne_bytes(),
    });
    exprs.push(Expr::NotEquals {
        reg: REG32_00,
        value: vec![0; 4],
    });
    exprs.push(Expr::ConnlimitOver(r.upper_threshold));
    exprs.push(Expr::Drop);
    b.rule(&chain, &exprs, None);
}

/// The persistent services (kept persistent, same netmask) among `affected` whose entries
/// may now point at a real that is no longer live (removed or quiesced), with the targets
/// still allowed: those entries must go, so that no new connection reaches that real.
fn stale_persistence(
    before: &[VirtualService],
    after: &[VirtualService],
    affected: &HashSet<ServiceKey>,
) -> Vec<(ServiceKey, Vec<Vec<u8>>)> {
    let mut out = Vec::new();
    for new in after.iter().filter(|v| affected.contains(&v.key)) {
        let Some(old) = before.iter().find(|o| o.key == new.key) else {
            continue;
        };
        let (Some(po), Some(pn)) = (old.persistence, new.persistence) else {
            continue;
        };
        if po.netmask != pn.netmask {
            continue; // flushed in the batch
        }
        let live = live_reals(new);
        if live_reals(old).iter().all(|a| live.contains(a)) {
            continue;
        }
        let fw = is_fwmark(&new.key);
        out.push((new.key, live.iter().map(|a| target_bytes(fw, a)).collect()));
    }
    out.sort_by_key(|(k, _)| *k);
    out
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

    /// The table's name (`ip <table>`).
    pub fn table(&self) -> &str {
        &self.table
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
        let mut persist_rules = 0;
        let mut current_layout = false;
        let answer = self
            .sock
            .dump(&w.buf, seq, "nftables rule dump", |payload| {
                let (chain, comment) = decode_rule(payload)?;
                if chain == CHAIN_PREROUTING {
                    dispatch_rules += 1;
                    if comment.as_deref() == Some(LAYOUT_TAG) {
                        current_layout = true;
                    }
                } else if chain == CHAIN_ADMIT {
                    persist_rules += 1;
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
        if self.skeleton && (!current_layout || persist_rules != 2) {
            // An older hbd's layout (named balancing maps): adopt it, rewrite it whole.
            self.rebuild = true;
        }
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
        self.dump_elements(
            SET_REALS,
            "nftables set element dump",
            decode_shadow_elements,
        )
    }

    /// Every element of map `name`: (key, data) as the kernel holds them.
    fn dump_map(&mut self, name: &str) -> Result<Vec<MapEntry>, DataplaneError> {
        self.dump_elements(name, "nftables persistence map dump", decode_map_elements)
    }

    /// Every element of set or map `name` in hbd's table, each reply decoded by `decode`;
    /// `what` names the dump in errors.
    fn dump_elements<T>(
        &mut self,
        name: &str,
        what: &'static str,
        decode: fn(&[u8]) -> Result<Vec<T>, NetlinkError>,
    ) -> Result<Vec<T>, DataplaneError> {
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
        w.str(NFTA_SET_ELEM_LIST_SET, name);
        w.end_msg();
        let mut out = Vec::new();
        self.sock
            .dump(&w.buf, seq, what, |payload| {
                out.extend(decode(payload.get(4..).unwrap_or(&[]))?);
                Ok(())
            })
            .map_err(nl)?;
        Ok(out)
    }

    /// Live persistence entries per (service, real): `PersistConn` of `ipvsadm -Ln
    /// --persistent-conn`, as IPVS counts its templates. One map dump per persistent service
    /// (the kernel leaves timed-out entries out of a dump).
    pub fn persistent_counts(
        &mut self,
        services: &[VirtualService],
    ) -> Result<std::collections::HashMap<(ServiceKey, SocketAddr), u32>, DataplaneError> {
        let mut out = std::collections::HashMap::new();
        for vs in services.iter().filter(|v| v.persistence.is_some()) {
            let fw = is_fwmark(&vs.key);
            let targets: Vec<(Vec<u8>, SocketAddr)> = vs
                .reals
                .iter()
                .map(|r| (target_bytes(fw, &r.addr), r.addr))
                .collect();
            for (_, data) in self.dump_map(&persist_map_name(&vs.key))? {
                if let Some((_, addr)) = targets.iter().find(|(t, _)| *t == data) {
                    *out.entry((vs.key, *addr)).or_insert(0) += 1;
                }
            }
        }
        Ok(out)
    }

    /// One batch of `fill`'s messages, sent and acknowledged.
    fn send(&mut self, fill: impl FnOnce(&mut Batch<'_>)) -> Result<(), DataplaneError> {
        let mut b = Batch::new(&self.table, self.seq.wrapping_add(1));
        fill(&mut b);
        let (buf, first, last) = b.finish().map_err(nl)?;
        self.seq = last.wrapping_add(1);
        self.send_batch(&buf, first, last)
    }

    /// Remove the entries of `key`'s persistence map whose real is not in `keep` (target
    /// bytes). Deleting an entry that timed out since the dump refuses the whole batch, so
    /// it is dumped and tried again; after three refusals the map is flushed (every client
    /// of the service is balanced afresh, none reaches a real that left).
    fn purge_persistence(
        &mut self,
        key: &ServiceKey,
        keep: &[Vec<u8>],
    ) -> Result<(), DataplaneError> {
        let name = persist_map_name(key);
        for _ in 0..3 {
            let stale: Vec<(Vec<u8>, Option<ElemData>)> = self
                .dump_map(&name)?
                .into_iter()
                .filter(|(_, data)| !keep.contains(data))
                .map(|(k, _)| (k, None))
                .collect();
            if stale.is_empty() {
                return Ok(());
            }
            if self
                .send(|b| b.elements(NFT_MSG_DELSETELEM, &name, &stale))
                .is_ok()
            {
                return Ok(());
            }
        }
        self.send(|b| b.flush_set(&name))
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

/// One element of a map as the kernel holds it: (key, data) bytes.
type MapEntry = (Vec<u8>, Vec<u8>);

/// The (key, data) values of one `NEWSETELEM` dump message of a map.
fn decode_map_elements(payload: &[u8]) -> Result<Vec<MapEntry>, NetlinkError> {
    let attrs = parse_attrs(payload)?;
    let mut out = Vec::new();
    let Some(list) = find(&attrs, NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return Ok(out);
    };
    for elem in list.nested()? {
        let e = elem.nested()?;
        let value = |ty| -> Result<Option<Vec<u8>>, NetlinkError> {
            Ok(match find(&e, ty) {
                Some(a) => find(&a.nested()?, NFTA_DATA_VALUE).map(|v| v.value.to_vec()),
                None => None,
            })
        };
        if let (Some(k), Some(d)) = (value(NFTA_SET_ELEM_KEY)?, value(NFTA_SET_ELEM_DATA)?) {
            out.push((k, d));
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
        let batch = build_batch(
            &self.table,
            self.seq.wrapping_add(1),
            &before,
            &after,
            &affected,
            rebuild,
        );
        let (buf, first, last) = match batch {
            Ok(batch) => batch,
            Err(e) => {
                self.state = Some(before);
                return Err(nl(e));
            }
        };
        self.seq = last.wrapping_add(1);
        if let Err(e) = self.send_batch(&buf, first, last) {
            self.rebuild = true;
            return Err(e);
        }
        self.skeleton = true;
        self.rebuild = false;
        let stale = if rebuild {
            Vec::new() // the maps are new and empty
        } else {
            stale_persistence(&before, &after, &affected)
        };
        self.state = Some(after);
        for (key, keep) in stale {
            if let Err(e) = self.purge_persistence(&key, &keep) {
                // The rules are committed but stale entries may remain: the next change
                // rebuilds the table, whose maps start empty.
                self.rebuild = true;
                return Err(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::Forwarding;
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
    fn huge_weights_are_scaled() {
        let s = slots(&vs(Scheduler::Wlc, &[65535, 1, 30000]));
        assert!(
            u32::try_from(s.len()).unwrap() <= MAX_SLOTS + 3,
            "{}",
            s.len()
        );
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
        let (buf, first, last) = build_batch("hbd", 10, &[], &after, &affected, true).unwrap();
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
        let (buf, _, _) = build_batch("hbd", 1, &after, &edited, &affected, false).unwrap();
        let types: Vec<u16> = parse_messages(&buf)
            .unwrap()
            .iter()
            .map(|m| m.ty & 0xff)
            .collect();
        assert!(!types.contains(&NFT_MSG_DELTABLE) && !types.contains(&NFT_MSG_NEWCHAIN));
        assert!(
            !types.contains(&NFT_MSG_DELSET),
            "the old map goes with its rule"
        );
        assert_eq!(types[1], NFT_MSG_DELRULE);
        // the comment rule, then the balancing rule's own map, its slots, the rule
        assert_eq!(
            &types[2..6],
            &[
                NFT_MSG_NEWRULE,
                NFT_MSG_NEWSET,
                NFT_MSG_NEWSETELEM,
                NFT_MSG_NEWRULE
            ]
        );
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
        let (buf, _, _) = build_batch("hbd", 1, &[], &after, &affected, true).unwrap();
        let n = parse_messages(&buf)
            .unwrap()
            .iter()
            .filter(|m| m.ty & 0xff == NFT_MSG_NEWSETELEM)
            .count();
        // 2500 slots in 3 messages, the dispatch element, 2500 shadow elements in 3
        assert_eq!(n, 7);
    }

    /// (message type, object name) of every table object message in a batch, in order:
    /// chains by `NFTA_CHAIN_NAME`, sets by `NFTA_SET_NAME`, rules and elements by their
    /// chain or set.
    fn objects(buf: &[u8]) -> Vec<(u16, String)> {
        parse_messages(buf)
            .unwrap()
            .iter()
            .filter(|m| m.ty >> 8 == NFNL_SUBSYS_NFTABLES)
            .map(|m| {
                let ty = m.ty & 0xff;
                let attr = match ty {
                    NFT_MSG_NEWCHAIN | NFT_MSG_DELCHAIN => NFTA_CHAIN_NAME,
                    _ => 2, // NFTA_SET_NAME, NFTA_RULE_CHAIN, NFTA_SET_ELEM_LIST_SET
                };
                let attrs = parse_attrs(&m.payload[4..]).unwrap();
                let name = find(&attrs, attr)
                    .map(|a| a.str().unwrap().to_string())
                    .unwrap_or_default();
                (ty, name)
            })
            .collect()
    }

    fn persistent_capped() -> VirtualService {
        let mut v = vs(Scheduler::Wrr, &[1, 1, 1]);
        v.persistence = Some(Persistence {
            timeout: Duration::from_secs(300),
            netmask: Netmask { prefix: 24 },
        });
        v.reals[0].upper_threshold = 50;
        v
    }

    #[test]
    fn fo_ovf_and_lc_slots() {
        let s = slots(&vs(Scheduler::Fo, &[1, 5, 5, 0]));
        assert_eq!(
            s,
            vec!["198.51.100.2:80".parse().unwrap()],
            "highest weight, lowest address"
        );
        assert_eq!(slots(&vs(Scheduler::Ovf, &[7, 5])).len(), 1);
        assert!(slots(&vs(Scheduler::Fo, &[0, 0])).is_empty());
        let s = slots(&vs(Scheduler::Lc, &[5, 1, 0]));
        assert_eq!(s.len(), 2, "lc ignores weights as IPVS does");
    }

    #[test]
    fn persistence_and_caps_get_their_objects_in_a_rebuild() {
        let after = vec![persistent_capped()];
        let affected = HashSet::from([after[0].key]);
        let (buf, _, _) = build_batch("hbd", 1, &[], &after, &affected, true).unwrap();
        let o = objects(&buf);
        let pos = |ty: u16, name: &str| {
            o.iter()
                .position(|x| *x == (ty, name.to_string()))
                .unwrap_or_else(|| panic!("no {ty} {name} in {o:?}"))
        };
        let map = pos(NFT_MSG_NEWSET, "persist-tcp-192.0.2.10-80");
        let cap = pos(NFT_MSG_NEWCHAIN, "cap-tcp-192.0.2.10-80-198.51.100.1-80");
        let group = pos(NFT_MSG_NEWCHAIN, "admit-192.0.2.10");
        pos(NFT_MSG_NEWCHAIN, CHAIN_ADMIT);
        pos(NFT_MSG_NEWSETELEM, MAP_ADMIT_VIPS);
        // maps and cap chains exist before the rules that name them
        assert!(map < pos(NFT_MSG_NEWRULE, "svc-tcp-192.0.2.10-80"));
        assert!(cap < group && group < pos(NFT_MSG_NEWRULE, "admit-192.0.2.10"));
        assert_eq!(
            pos(NFT_MSG_NEWRULE, "cap-tcp-192.0.2.10-80-198.51.100.1-80"),
            cap + 1
        );
    }

    #[test]
    fn an_edit_keeps_the_map_entries_and_the_caps_count_and_purges_a_quiesced_real() {
        let before = vec![persistent_capped()];
        let mut after = before.clone();
        after[0].reals[1].weight = 0;
        let affected = HashSet::from([after[0].key]);
        let (buf, _, _) = build_batch("hbd", 1, &before, &after, &affected, false).unwrap();
        let o = objects(&buf);
        assert!(!o.contains(&(NFT_MSG_DELSET, "persist-tcp-192.0.2.10-80".into())));
        assert!(!o.contains(&(NFT_MSG_NEWSET, "persist-tcp-192.0.2.10-80".into())));
        assert!(
            !o.iter().any(|(_, n)| n.starts_with("cap-")),
            "the cap is untouched: {o:?}"
        );
        // the group chain is refilled: flushed, then its jump and recording rules
        assert!(o.contains(&(NFT_MSG_DELRULE, "admit-192.0.2.10".into())));
        assert!(o.contains(&(NFT_MSG_NEWRULE, "admit-192.0.2.10".into())));
        // the quiesced real's clients are purged after the batch; the others are kept
        let stale = stale_persistence(&before, &after, &affected);
        assert_eq!(stale.len(), 1);
        let keep = &stale[0].1;
        assert_eq!(keep.len(), 2);
        assert!(!keep.contains(&target_bytes(false, &after[0].reals[1].addr)));
        // a weight change among live reals purges nothing
        let mut heavier = before.clone();
        heavier[0].reals[2].weight = 4;
        assert!(stale_persistence(&before, &heavier, &affected).is_empty());
    }

    #[test]
    fn persistence_and_a_cap_removed_take_their_objects_after_the_rules() {
        let before = vec![persistent_capped()];
        let mut after = before.clone();
        after[0].persistence = None;
        after[0].reals[0].upper_threshold = 0;
        let affected = HashSet::from([after[0].key]);
        let (buf, _, _) = build_batch("hbd", 1, &before, &after, &affected, false).unwrap();
        let o = objects(&buf);
        let pos = |ty: u16, name: &str| {
            o.iter()
                .position(|x| *x == (ty, name.to_string()))
                .unwrap_or_else(|| panic!("no {ty} {name} in {o:?}"))
        };
        let del_map = pos(NFT_MSG_DELSET, "persist-tcp-192.0.2.10-80");
        assert!(pos(NFT_MSG_DELRULE, "svc-tcp-192.0.2.10-80") < del_map);
        assert!(pos(NFT_MSG_DELRULE, "admit-192.0.2.10") < del_map);
        let del_group = pos(NFT_MSG_DELCHAIN, "admit-192.0.2.10");
        let del_cap = pos(NFT_MSG_DELCHAIN, "cap-tcp-192.0.2.10-80-198.51.100.1-80");
        assert!(
            del_group < del_cap,
            "the jump goes before the chain it names"
        );
        assert!(pos(NFT_MSG_DELSETELEM, MAP_ADMIT_VIPS) < del_group);
    }

    #[test]
    fn map_elements_decode_what_a_batch_encodes() {
        let mut b = Batch::new("hbd", 1);
        let a: SocketAddr = "198.51.100.18:80".parse().unwrap();
        let elems = vec![
            (
                vec![203, 0, 113, 0],
                Some(ElemData::Value(target_bytes(false, &a))),
            ),
            (vec![203, 0, 113, 1], None), // no data: skipped
        ];
        b.set_elements(NFT_MSG_NEWSETELEM, "persist-x", None, &elems);
        let (buf, _, _) = b.finish().unwrap();
        let msgs = parse_messages(&buf).unwrap();
        let decoded = decode_map_elements(&msgs[1].payload[4..]).unwrap();
        assert_eq!(
            decoded,
            vec![(vec![203, 0, 113, 0], vec![198, 51, 100, 18, 0, 80, 0, 0])]
        );
        assert_eq!(target_bytes(true, &a), vec![198, 51, 100, 18]);
        assert!(
            decode_map_elements(&[1, 2, 3]).is_err()
                || decode_map_elements(&[1, 2, 3]).unwrap().is_empty()
        );
    }
}
