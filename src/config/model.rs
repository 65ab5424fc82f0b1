//! The validated configuration model.
//!
//! Every front door (native YAML, an unchanged Linux-HA directory, later ldirectord.cf and
//! keepalived.conf) produces this one type; the rest of hbd never sees raw text. A value of
//! [`Config`] is always valid: the parsers refuse to build one that breaks a rule heartbeat
//! enforces (deadtime > 2 × keepalive, initdead ≥ deadtime, the local node listed, …).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// UDP port heartbeat uses when `udpport` is absent (IANA "ha-cluster"; heartbeat `UDPPORT`).
pub const DEFAULT_UDP_PORT: u16 = 694;
/// Serial speed used when `baud` is absent (heartbeat config.c default).
pub const DEFAULT_BAUD: u32 = 19200;
/// Serial speeds heartbeat accepts (`StringToBaud`).
pub const VALID_BAUDS: [u32; 7] = [9600, 19200, 38400, 57600, 115200, 230400, 460800];
/// Bits a serial line spends on one byte: a start bit, 8 data bits and a stop bit (8N1, as
/// heartbeat's `ttysetup` sets the line).
pub const SERIAL_BITS_PER_BYTE: u64 = 10;

/// How long `bytes` take to cross a serial line at `baud` (8N1, no gaps between bytes).
pub fn serial_line_time(bytes: usize, baud: u32) -> Duration {
    let bits = u64::try_from(bytes)
        .unwrap_or(u64::MAX)
        .saturating_mul(SERIAL_BITS_PER_BYTE);
    let nanos = u128::from(bits) * 1_000_000_000 / u128::from(baud.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Bytes of an hbd `status` heartbeat in classic text (what a serial line carries, see
/// `media::serial`), counted generously: every field at its longest usual width
/// (`st=active`, 8 hex digits of `seq`/`hg`/`ts`, a long load average, a 3-digit `ttl`),
/// plus the longest node name, the active key's digest and the `hbd_groups` text for
/// `groups`. A real frame is a little shorter: heartbeat 3.0.6's status with md5 is 195
/// bytes where this says 217; with sha256 and two VIP groups it is about 350.
/// `media::serial` checks it against encoded frames.
pub fn status_frame_bytes(nodes: &[String], method: AuthMethod, groups: &[GroupSpec]) -> usize {
    // `>>>`, t, st, dt, protocol, (1)srcuuid, seq, hg, ts, ld, ttl, `src=` and `auth=N `
    // with their newlines, `<<<` (HEARTBEAT-WIRE.md §5 and the capture in §8).
    const FIXED: usize = 4 + 9 + 10 + 12 + 11 + 36 + 13 + 12 + 12 + 36 + 8 + 5 + 8 + 4;
    let name = nodes.iter().map(String::len).max().unwrap_or(0);
    let digest = match method {
        AuthMethod::Crc => 8,
        AuthMethod::Md5 => 32,
        AuthMethod::Sha1 => 40,
        AuthMethod::Sha256 => 64,
    };
    // `hbd_groups=` and, per group, `KEY|1|0|TARGET|EPOCH;` (manager::encode_reports).
    let reports: usize = groups
        .iter()
        .map(|g| g.name().len() + 5 + name + 1 + 6)
        .sum();
    let groups_field = if groups.is_empty() { 0 } else { 12 + reports };
    FIXED + name + digest + groups_field
}

/// Extra forwarding hops above the node count (heartbeat config.c default; only fills `ttl`).
pub const DEFAULT_HOPFUDGE: u8 = 1;
/// Cluster name when none is given (heartbeat config.c default).
pub const DEFAULT_CLUSTER_NAME: &str = "linux-ha";

/// Everything one hbd node needs to run, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Cluster name (`cluster`), informational.
    pub cluster_name: String,
    /// Cluster members, lower-cased as heartbeat does, in file order.
    pub nodes: Vec<String>,
    /// Liveness timers.
    pub timing: Timing,
    /// Heartbeat media; a peer is alive while any of them carries its heartbeats.
    pub media: Vec<MediumSpec>,
    /// Keys for signing and verifying heartbeat frames.
    pub auth: AuthKeys,
    /// Wire form of outbound UDP frames (heartbeat `msgfmt`).
    pub msgfmt: MsgFormat,
    /// Extra hops above node count, only used to fill the `ttl` field (heartbeat `hopfudge`,
    /// 0–255).
    pub hopfudge: u8,
    /// Whether groups return to their preferred node (heartbeat `auto_failback`).
    pub auto_failback: AutoFailback,
    /// Independent ping nodes (`ping`), each a pseudo-member.
    pub ping_nodes: Vec<IpAddr>,
    /// Ping groups (`ping_group`): one pseudo-member, up while any address answers.
    pub ping_groups: Vec<PingGroup>,
    /// How long the node holding groups must reach fewer ping nodes/groups than its peer,
    /// without a break, before the groups move (`ping_hysteresis`, an hbd extension;
    /// default [`default_ping_hysteresis`]).
    pub ping_hysteresis: Duration,
    /// Resource groups, from haresources or YAML, in file order.
    pub groups: Vec<GroupSpec>,
    /// Where log lines go.
    pub logging: Logging,
    /// Programs kept running beside the daemon (`respawn`).
    pub respawn: Vec<RespawnSpec>,
    /// Who may use the client API (`apiauth`); kept for compatibility and `hactl convert`.
    pub apiauth: Vec<ApiAuth>,
    /// Kernel watchdog device kicked while the daemon is healthy (`watchdog`).
    pub watchdog: Option<PathBuf>,
    /// Virtual services managed by the director (YAML `director:`), if any.
    pub director: Option<DirectorSpec>,
    /// How a VIP announces itself on acquire and after a split brain (YAML `vip_announce`).
    pub vip_announce: VipAnnounce,
    /// Where the Prometheus endpoint listens (YAML `metrics`, an hbd extension); `None`, the
    /// default, serves no metrics.
    pub metrics: Option<std::net::SocketAddr>,
    /// How a peer that died while it may have held groups is fenced before this node takes
    /// them over (ha.cf `stonith`/`stonith_host`, YAML `fencing`); `None`: no fencing.
    pub fencing: Option<FencingSpec>,
}

/// Gratuitous ARPs / unsolicited NAs sent when a VIP is acquired: the first at once, the
/// rest `interval` apart (heartbeat IPaddr2 `arp_count` 5; hbd's interval 200 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipAnnounce {
    /// How many (0 = none).
    pub count: u32,
    /// Time between two.
    pub interval: Duration,
}

impl Default for VipAnnounce {
    fn default() -> Self {
        VipAnnounce {
            count: 5,
            interval: Duration::from_millis(200),
        }
    }
}

/// The director's virtual services and where they were read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorSpec {
    /// The ldirectord.cf they came from (`director: { ldirectord_cf: PATH }`); `None` when
    /// written inline in the YAML. The daemon re-reads this file on reload.
    pub ldirectord_cf: Option<PathBuf>,
    /// The validated services.
    pub config: super::director::DirectorConfig,
}

/// Liveness timers, all held as [`Duration`] (heartbeat keeps milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Interval between heartbeats (`keepalive`).
    pub keepalive: Duration,
    /// Silence after which a node is declared dead (`deadtime`).
    pub deadtime: Duration,
    /// Silence after which a late heartbeat is logged (`warntime`).
    pub warntime: Duration,
    /// Dead time used right after start, until every node has been heard (`initdead`).
    pub initdead: Duration,
    /// Dead time for ping nodes (`deadping`).
    pub deadping: Duration,
}

impl Timing {
    /// heartbeat's computed defaults for everything but keepalive and deadtime (config.c
    /// `init_config`): warntime = deadtime/2; initdead = deadtime if deadtime > 10 s, 12 s if
    /// deadtime < 6 s, else 2 × deadtime; deadping = deadtime.
    pub fn with_defaults(keepalive: Duration, deadtime: Duration) -> Timing {
        let initdead = if deadtime > Duration::from_secs(10) {
            deadtime
        } else if deadtime < Duration::from_secs(6) {
            Duration::from_secs(12)
        } else {
            deadtime * 2
        };
        Timing {
            keepalive,
            deadtime,
            warntime: deadtime / 2,
            initdead,
            deadping: deadtime,
        }
    }
}

impl Default for Timing {
    /// heartbeat's compiled defaults: keepalive 1 s, deadtime 30 s.
    fn default() -> Self {
        Timing::with_defaults(Duration::from_secs(1), Duration::from_secs(30))
    }
}

/// One heartbeat medium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediumSpec {
    /// UDP unicast to one peer (`ucast IFACE PEER`). A line whose peer address is local is
    /// skipped at run time, so both nodes can share one file.
    Ucast {
        /// Interface the sockets are bound to.
        interface: String,
        /// Peer address.
        peer: IpAddr,
        /// Destination and listening port.
        port: u16,
    },
    /// UDP multicast (`mcast IFACE GROUP PORT TTL LOOP`).
    Mcast {
        /// Interface that joins the group and sends.
        interface: String,
        /// Multicast group.
        group: IpAddr,
        /// Group port.
        port: u16,
        /// Multicast TTL (hop limit).
        ttl: u8,
        /// Whether our own datagrams loop back to us.
        loopback: bool,
    },
    /// UDP broadcast on an interface (`bcast IFACE`).
    Bcast {
        /// Interface whose broadcast address is used.
        interface: String,
        /// Destination and listening port.
        port: u16,
    },
    /// A serial line (`serial DEV`, `baud N`).
    Serial {
        /// Character device.
        device: PathBuf,
        /// Line speed.
        baud: u32,
    },
}

impl MediumSpec {
    /// Short name used for the link in status output and logs, like heartbeat's link names.
    pub fn link_name(&self) -> String {
        match self {
            MediumSpec::Ucast {
                interface, peer, ..
            } => format!("ucast:{interface}:{peer}"),
            MediumSpec::Mcast {
                interface, group, ..
            } => format!("mcast:{interface}:{group}"),
            MediumSpec::Bcast { interface, .. } => format!("bcast:{interface}"),
            MediumSpec::Serial { device, .. } => format!("serial:{}", device.display()),
        }
    }
}

/// The authkeys contents: which key signs, and every key accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthKeys {
    /// Key index used to sign outbound frames (`auth N`).
    pub active: u8,
    /// Every configured key by index (0–15); several allow rolling key changes.
    pub keys: BTreeMap<u8, AuthKey>,
}

impl AuthKeys {
    /// The key that signs outbound frames; present by construction.
    pub fn active_key(&self) -> &AuthKey {
        &self.keys[&self.active]
    }
}

/// One authentication key.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey {
    /// Digest method.
    pub method: AuthMethod,
    /// Secret bytes (empty for `crc`).
    pub secret: Vec<u8>,
}

impl fmt::Debug for AuthKey {
    /// Never prints the secret: configs end up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthKey")
            .field("method", &self.method)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Frame digest methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// CRC-32/POSIX, unkeyed: integrity only (heartbeat `crc`).
    Crc,
    /// HMAC-MD5 (heartbeat `md5`).
    Md5,
    /// HMAC-SHA1 (heartbeat `sha1`).
    Sha1,
    /// HMAC-SHA256, hbd's default for new configs.
    Sha256,
}

impl AuthMethod {
    /// The name used in authkeys and YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Crc => "crc",
            AuthMethod::Md5 => "md5",
            AuthMethod::Sha1 => "sha1",
            AuthMethod::Sha256 => "sha256",
        }
    }
}

/// Outbound frame form (heartbeat `msgfmt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MsgFormat {
    /// Netstring frame that also carries heartbeat's inner classic `auth` field (default).
    #[default]
    Classic,
    /// Netstring frame without the inner field.
    Netstring,
}

impl MsgFormat {
    /// The word used in ha.cf and YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            MsgFormat::Classic => "classic",
            MsgFormat::Netstring => "netstring",
        }
    }
}

/// Failback policy (heartbeat `auto_failback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoFailback {
    /// Groups go back to their preferred node when it returns.
    On,
    /// Groups stay where they are until failure or an operator move.
    Off,
    /// heartbeat's pre-nice_failback mode: each node always owns its preferred groups.
    Legacy,
}

impl AutoFailback {
    /// The word used in ha.cf and YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            AutoFailback::On => "on",
            AutoFailback::Off => "off",
            AutoFailback::Legacy => "legacy",
        }
    }
}

/// `ping_hysteresis` when none is given: 2 × `deadping`. ipfail waited 2 × keepalive before
/// giving resources up; hbd counts in deadpings, the time a target takes to be declared
/// dead, so a target that dies and answers again within one more deadping moves nothing.
pub fn default_ping_hysteresis(deadping: Duration) -> Duration {
    deadping * 2
}

/// A ping group: one pseudo-member that is up while any address answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingGroup {
    /// Group name, used as the pseudo-node name.
    pub name: String,
    /// Member addresses.
    pub addresses: Vec<IpAddr>,
}

/// One resource group (one haresources line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    /// Node the group prefers (the line's first field, lower-cased).
    pub preferred: String,
    /// Resources, started left to right and stopped right to left. Never empty.
    pub resources: Vec<ResourceSpec>,
}

impl GroupSpec {
    /// The group's key: its first resource as written, as heartbeat names groups.
    pub fn name(&self) -> &str {
        &self.resources[0].spec
    }
}

/// One resource of a group, e.g. `IPaddr::192.168.136.10/24/eth0` or `ldirectord`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceSpec {
    /// The resource as written in haresources (a bare address is kept bare here).
    pub spec: String,
    /// Resource type or script name: text before the first `::`; `IPaddr` for a bare address.
    pub kind: String,
    /// `::`-separated arguments; for a bare address, the address itself.
    pub args: Vec<String>,
}

/// Where log lines go, besides stderr.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Logging {
    /// `logfile`: normal messages appended here.
    pub file: Option<PathBuf>,
    /// `debugfile`: debug messages appended here.
    pub debug_file: Option<PathBuf>,
    /// `logfacility`: syslog facility, `None` when unset or `none`.
    pub facility: Option<String>,
    /// `debug`: 0–255.
    pub debug_level: u8,
}

/// Fencing (STONITH): before taking over from a peer that died while it may have held
/// groups, reset (or power off) that peer, and take over only once that succeeded. A peer
/// whose daemon died but whose addresses stay up is the case it exists for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FencingSpec {
    /// The devices, each for the nodes that may use it; the first that applies to this node
    /// (named `from`, else `*`) is the one used.
    pub devices: Vec<FenceDevice>,
    /// What is asked of the device.
    pub action: FenceAction,
    /// Time one attempt may take before its process group is killed.
    pub timeout: Duration,
    /// Attempts before giving up (the groups then stay stopped and the failure is reported).
    pub attempts: u32,
}

impl FencingSpec {
    /// The device `node` uses: the first naming it, else the first for every node (`*`).
    pub fn device_for(&self, node: &str) -> Option<&FenceDevice> {
        self.devices
            .iter()
            .find(|d| d.from.as_deref() == Some(node))
            .or_else(|| self.devices.iter().find(|d| d.from.is_none()))
    }
}

/// Fencing defaults: heartbeat resets; 30 s per attempt; three attempts.
pub const DEFAULT_FENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// See [`DEFAULT_FENCE_TIMEOUT`].
pub const DEFAULT_FENCE_ATTEMPTS: u32 = 3;

/// What a fence device is asked to do to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FenceAction {
    /// Power-cycle it (heartbeat's choice).
    Reset,
    /// Power it off.
    Off,
}

impl FenceAction {
    /// The word agents take.
    pub fn as_str(self) -> &'static str {
        match self {
            FenceAction::Reset => "reset",
            FenceAction::Off => "off",
        }
    }
}

/// One fence device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceDevice {
    /// The node that uses it (`stonith_host NODE …`); `None` for `*`: every node.
    pub from: Option<String>,
    /// How it is driven.
    pub kind: FenceKind,
}

/// How a fence device is driven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceKind {
    /// A cluster-glue STONITH plugin through `stonith(8)`, as heartbeat drove it:
    /// `stonith -t TYPE -p PARAMS -T ACTION NODE` (`stonith_host`), or `-F FILE`
    /// (`stonith TYPE FILE`).
    Glue {
        /// Plugin type (`external/ipmi`, `apcmaster`, `null`, …).
        plugin: String,
        /// Its parameters.
        params: GlueParams,
    },
    /// An external agent, the contract of cluster-glue's external plugins: called as
    /// `AGENT reset|off|status NODE`, its parameters in the environment; exit 0 is success.
    Agent {
        /// The program.
        path: PathBuf,
        /// Environment variables it gets.
        params: Vec<(String, String)>,
    },
}

/// A cluster-glue plugin's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlueParams {
    /// Inline words (`stonith_host`), passed with `-p`.
    Inline(String),
    /// A configuration file (`stonith`), passed with `-F`.
    File(PathBuf),
}

/// Where cluster-glue's `stonith(8)` is; `stonith`/`stonith_host` need it.
pub const STONITH_COMMAND: &str = "/usr/sbin/stonith";

/// A program kept running beside the daemon (`respawn USER PATH [ARGS]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespawnSpec {
    /// User it runs as.
    pub user: String,
    /// Program and arguments.
    pub command: Vec<String>,
}

/// An `apiauth CLIENT [uid=…] [gid=…]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiAuth {
    /// Client name.
    pub client: String,
    /// Allowed users.
    pub uids: Vec<String>,
    /// Allowed groups.
    pub gids: Vec<String>,
}
