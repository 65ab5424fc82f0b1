//! The rules every front door shares: a [`Draft`] (what a file said, with where it said it)
//! becomes a [`Config`] or a list of diagnostics.
//!
//! The rules are heartbeat's (`config.c`): at least one medium; deadtime > 2 × keepalive;
//! initdead ≥ deadtime; deadping > 2 × keepalive; the local node listed as a `node`; an
//! authentication key. Unlike heartbeat, timers go down to 1 ms. hbd adds one: deadtime must
//! be more than twice the time a heartbeat takes on each serial line (see
//! `check_serial_lines`).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::diag::{Diagnostic, Severity};
use super::model::*;
use super::time::format_duration;
use crate::net::addr::MAX_IFNAME_LEN;

/// Where a value was written: file and 1-based line (when known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loc {
    /// File the value came from.
    pub file: PathBuf,
    /// Line, when known.
    pub line: Option<usize>,
}

impl Loc {
    /// A location in `file` at `line`.
    pub fn new(file: &Path, line: Option<usize>) -> Loc {
        Loc {
            file: file.to_path_buf(),
            line,
        }
    }

    /// An error here.
    pub fn error(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(&self.file, self.line, message)
    }

    /// A note here (info level).
    pub fn info(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic::info(&self.file, self.line, message)
    }

    /// A warning here.
    pub fn warning(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic::warning(&self.file, self.line, message)
    }
}

/// A value with the place it was written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct At<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub loc: Loc,
}

impl<T> At<T> {
    /// Pairs `value` with `loc`.
    pub fn new(value: T, loc: Loc) -> At<T> {
        At { value, loc }
    }
}

/// What a configuration said, before the cross-field rules: filled by the ha.cf/authkeys/
/// haresources front door or by the YAML one.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    /// File named in diagnostics that have no line (missing media, missing nodes).
    pub main: PathBuf,
    /// `cluster`.
    pub cluster: Option<String>,
    /// `node` names, lower-cased, in order.
    pub nodes: Vec<At<String>>,
    /// `keepalive`.
    pub keepalive: Option<At<Duration>>,
    /// `deadtime`.
    pub deadtime: Option<At<Duration>>,
    /// `warntime`.
    pub warntime: Option<At<Duration>>,
    /// `initdead`.
    pub initdead: Option<At<Duration>>,
    /// `deadping`.
    pub deadping: Option<At<Duration>>,
    /// Default UDP port (`udpport`), given to the media that name none; each medium then
    /// holds its own port, so it is not kept in [`Config`].
    pub udp_port: u16,
    /// Media, with every port already resolved.
    pub media: Vec<At<MediumSpec>>,
    /// Keys; `None` when missing or broken (the error is reported where it was found).
    pub auth: Option<AuthKeys>,
    /// `msgfmt`.
    pub msgfmt: MsgFormat,
    /// `hopfudge`.
    pub hopfudge: u8,
    /// `auto_failback` (or the `nice_failback` it was derived from).
    pub auto_failback: Option<At<AutoFailback>>,
    /// `ping`.
    pub ping_nodes: Vec<At<IpAddr>>,
    /// `ping_group`.
    pub ping_groups: Vec<At<PingGroup>>,
    /// `ping_hysteresis` (hbd extension).
    pub ping_hysteresis: Option<At<Duration>>,
    /// Resource groups.
    pub groups: Vec<At<GroupSpec>>,
    /// Logging.
    pub logging: Logging,
    /// `respawn`.
    pub respawn: Vec<At<RespawnSpec>>,
    /// `apiauth`.
    pub apiauth: Vec<ApiAuth>,
    /// `watchdog`.
    pub watchdog: Option<PathBuf>,
    /// YAML `director:` section, already validated.
    pub director: Option<DirectorSpec>,
    /// YAML `vip_announce`.
    pub vip_announce: VipAnnounce,
    /// YAML `metrics`.
    pub metrics: Option<std::net::SocketAddr>,
    /// Fence devices: ha.cf `stonith`/`stonith_host` lines, or the YAML `fencing` agent.
    pub fence_devices: Vec<At<FenceDevice>>,
    /// YAML `fencing` `action`, `timeout`, `attempts` (defaults for ha.cf).
    pub fence_action: FenceAction,
    /// See `fence_action`.
    pub fence_timeout: Duration,
    /// See `fence_action`.
    pub fence_attempts: u32,
}

impl Draft {
    /// An empty draft whose file-level diagnostics name `main`.
    pub fn new(main: &Path) -> Draft {
        Draft {
            main: main.to_path_buf(),
            cluster: None,
            nodes: Vec::new(),
            keepalive: None,
            deadtime: None,
            warntime: None,
            initdead: None,
            deadping: None,
            udp_port: DEFAULT_UDP_PORT,
            media: Vec::new(),
            auth: None,
            msgfmt: MsgFormat::Classic,
            hopfudge: DEFAULT_HOPFUDGE,
            auto_failback: None,
            ping_nodes: Vec::new(),
            ping_groups: Vec::new(),
            ping_hysteresis: None,
            groups: Vec::new(),
            logging: Logging::default(),
            respawn: Vec::new(),
            apiauth: Vec::new(),
            watchdog: None,
            director: None,
            vip_announce: VipAnnounce::default(),
            metrics: None,
            fence_devices: Vec::new(),
            fence_action: FenceAction::Reset,
            fence_timeout: DEFAULT_FENCE_TIMEOUT,
            fence_attempts: DEFAULT_FENCE_ATTEMPTS,
        }
    }

    /// The slot of the timer called `name` (`keepalive`, `deadtime`, `warntime`, `initdead`
    /// or `deadping`, as ha.cf and YAML `timing` spell them); `None` for any other name.
    pub fn timer_mut(&mut self, name: &str) -> Option<&mut Option<At<Duration>>> {
        Some(match name {
            "keepalive" => &mut self.keepalive,
            "deadtime" => &mut self.deadtime,
            "warntime" => &mut self.warntime,
            "initdead" => &mut self.initdead,
            "deadping" => &mut self.deadping,
            _ => return None,
        })
    }
}

/// The shortest keepalive hbd accepts.
pub(crate) const MIN_TIMER: Duration = Duration::from_millis(1);
/// heartbeat warns when initdead is shorter than this (config.c).
const INITDEAD_WARN_BELOW: Duration = Duration::from_secs(10);

/// Checks one medium's values (shared by ha.cf and YAML): multicast groups, TTL, ports, baud.
pub(crate) fn check_medium(medium: &MediumSpec, loc: &Loc, diags: &mut Vec<Diagnostic>) {
    let iface_ok = |iface: &str, diags: &mut Vec<Diagnostic>| {
        if iface.is_empty() || iface.len() > MAX_IFNAME_LEN || iface.contains(['/', ' ']) {
            diags.push(loc.error(format!(
                "'{iface}' is not a network interface name; use the name shown by `ip link` (e.g. eth0)"
            )));
        }
    };
    match medium {
        MediumSpec::Ucast {
            interface, port, ..
        }
        | MediumSpec::Bcast { interface, port } => {
            iface_ok(interface, diags);
            if *port == 0 {
                diags.push(loc.error("UDP port 0 is not usable; use 694 (ha-cluster)"));
            }
            if let MediumSpec::Ucast { peer, .. } = medium
                && (peer.is_multicast() || peer.is_unspecified())
            {
                diags.push(loc.error(format!(
                    "ucast peer {peer} is not a unicast address; give the peer node's address"
                )));
            }
        }
        MediumSpec::Mcast {
            interface,
            group,
            port,
            ttl,
            ..
        } => {
            iface_ok(interface, diags);
            if !group.is_multicast() {
                diags.push(loc.error(format!(
                    "mcast group {group} is not a multicast address; use one in 239.192.0.0/14 (IPv4) or ff12::/16 (IPv6)"
                )));
            }
            if *port == 0 {
                diags.push(loc.error("mcast port 0 is not usable; use 694 (ha-cluster)"));
            }
            if *ttl == 0 {
                diags.push(loc.error(
                    "mcast ttl 0 would never leave this host; use 1 for the local subnet (1-255)",
                ));
            }
        }
        MediumSpec::Serial { device, baud } => {
            if !device.is_absolute() {
                diags.push(loc.error(format!(
                    "serial device '{}' is not an absolute path; write e.g. /dev/ttyS0",
                    device.display()
                )));
            }
            if !VALID_BAUDS.contains(baud) {
                diags.push(loc.error(format!(
                    "baud {baud} is not a serial speed heartbeat supports; use one of {}",
                    bauds_list()
                )));
            }
        }
    }
}

/// A `respawn` program to keep running, or `None` with a note for ipfail (any program whose
/// name is `ipfail`), whose job the daemon does itself (shared by ha.cf and YAML). A missing
/// ipfail binary is therefore fine.
pub(crate) fn respawn_spec(
    user: &str,
    command: &[String],
    loc: &Loc,
    diags: &mut Vec<Diagnostic>,
) -> Option<RespawnSpec> {
    let program = command.first()?;
    if Path::new(program)
        .file_name()
        .is_some_and(|n| n == "ipfail")
    {
        diags.push(loc.info(IPFAIL_BUILT_IN));
        return None;
    }
    if !Path::new(program).is_absolute() {
        diags.push(loc.error(format!(
            "respawn program '{program}' is not an absolute path; write the full path (e.g. /usr/local/bin/{program})"
        )));
        return None;
    }
    Some(RespawnSpec {
        user: user.to_string(),
        command: command.to_vec(),
    })
}

/// The note given for `respawn … ipfail` (info level, not a warning).
pub(crate) const IPFAIL_BUILT_IN: &str = "ipfail is built into hbd (ping nodes/groups drive failover); it is not started, and this line can go";

/// The valid serial speeds, for messages.
pub(crate) fn bauds_list() -> String {
    VALID_BAUDS
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Applies the cross-field rules; returns the [`Config`] when no error was found in `draft`
/// nor before it (`diags` holds earlier diagnostics, to which new ones are appended).
pub(crate) fn validate(
    draft: Draft,
    local_node: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Config> {
    let main = Loc::new(&draft.main, None);

    // Media.
    if draft.media.is_empty() {
        diags.push(main.error(
            "no heartbeat media defined; add at least one of ucast, mcast, bcast or serial",
        ));
    }
    for m in &draft.media {
        check_medium(&m.value, &m.loc, diags);
    }

    // Nodes: each once, in file order.
    let mut seen = BTreeSet::new();
    let mut nodes = Vec::new();
    for n in &draft.nodes {
        if seen.insert(n.value.clone()) {
            nodes.push(n.value.clone());
        } else {
            diags.push(n.loc.warning(format!(
                "node '{}' is listed twice; remove the duplicate",
                n.value
            )));
        }
    }
    let local = local_node.to_ascii_lowercase();
    if draft.nodes.is_empty() {
        diags.push(main.error(format!(
            "no cluster nodes defined; add one `node` line per member, including this node ('{local}')"
        )));
    } else if !seen.contains(&local) {
        let listed: Vec<&str> = draft.nodes.iter().map(|n| n.value.as_str()).collect();
        diags.push(main.error(format!(
            "this node '{local}' is not listed as a node (listed: {}); add `node {local}` or run hbd with the right node name (`uname -n`)",
            listed.join(", ")
        )));
    }

    // Timing, then whether each serial line can carry it.
    let timing = check_timing(&draft, &main, diags);
    if let Some(t) = &timing {
        check_serial_lines(&draft, t, diags);
    }

    // Auto failback: heartbeat defaults to legacy with a startup warning.
    let auto_failback = match &draft.auto_failback {
        Some(a) => a.value,
        None => {
            diags.push(main.warning(
                "auto_failback is not set; using heartbeat's default 'legacy'; set auto_failback on or off explicitly",
            ));
            AutoFailback::Legacy
        }
    };

    // Ping groups: unique names, not clashing with nodes.
    let mut ping_names = BTreeSet::new();
    for g in &draft.ping_groups {
        if g.value.addresses.is_empty() {
            diags.push(g.loc.error(format!(
                "ping_group '{}' has no addresses; list at least one address after the name",
                g.value.name
            )));
        }
        if !ping_names.insert(g.value.name.clone()) {
            diags.push(g.loc.error(format!(
                "ping_group '{}' is defined twice; give each group its own name",
                g.value.name
            )));
        }
        if seen.contains(&g.value.name) {
            diags.push(g.loc.error(format!(
                "ping_group '{}' has the same name as a cluster node; rename the group",
                g.value.name
            )));
        }
    }

    // Groups: a two-node design, as heartbeat's haresources mode: the ownership protocol
    // moves every group between this node and its one peer.
    if draft.nodes.len() > 2
        && let Some(first) = draft.groups.first()
    {
        diags.push(first.loc.error(format!(
            "resource groups need a two-node cluster, and {} nodes are listed ({}); \
             haresources groups move between two nodes only: list exactly two `node` lines, \
             or run the other nodes without haresources",
            draft.nodes.len(),
            draft
                .nodes
                .iter()
                .map(|n| n.value.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let ping_hysteresis = timing.map(|t| check_ping_hysteresis(&draft, &t, diags));

    // Groups: preferred node listed, keys unique.
    let mut keys: Vec<(String, &Loc)> = Vec::new();
    for g in &draft.groups {
        if g.value.resources.is_empty() {
            diags.push(g.loc.error(format!(
                "resource group for node '{}' has no resources; list the resources after the node name",
                g.value.preferred
            )));
            continue;
        }
        if !seen.contains(&g.value.preferred) && !draft.nodes.is_empty() {
            diags.push(g.loc.error(format!(
                "preferred node '{}' is not a cluster node; use one of the `node` names ({})",
                g.value.preferred,
                draft
                    .nodes
                    .iter()
                    .map(|n| n.value.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let first = &g.value.resources[0];
        let key = canonical(first);
        if let Some((_, other)) = keys.iter().find(|(k, _)| *k == key) {
            diags.push(g.loc.error(format!(
                "group key '{}' (the first resource) is already used by the group on line {}; \
                 the first resource names the group and must be unique",
                first.spec,
                other.line.map_or_else(|| "?".to_string(), |l| l.to_string())
            )));
        } else {
            keys.push((key, &g.loc));
        }
    }

    if draft.auth.is_none() && !diags.iter().any(|d| d.severity == Severity::Error) {
        diags.push(main.error(
            "no authentication specified; provide an authkeys file with `auth 1` and `1 sha256 SECRET`",
        ));
    }

    let fencing = check_fencing(&draft, &local, diags);

    if diags.iter().any(|d| d.severity == Severity::Error) {
        return None;
    }
    let timing = timing?;
    let ping_hysteresis = ping_hysteresis?;
    let auth = draft.auth?;
    Some(Config {
        cluster_name: draft
            .cluster
            .unwrap_or_else(|| DEFAULT_CLUSTER_NAME.to_string()),
        nodes,
        timing,
        media: draft.media.into_iter().map(|m| m.value).collect(),
        auth,
        msgfmt: draft.msgfmt,
        hopfudge: draft.hopfudge,
        auto_failback,
        ping_nodes: draft.ping_nodes.into_iter().map(|p| p.value).collect(),
        ping_groups: draft.ping_groups.into_iter().map(|p| p.value).collect(),
        ping_hysteresis,
        groups: draft.groups.into_iter().map(|g| g.value).collect(),
        logging: draft.logging,
        respawn: draft.respawn.into_iter().map(|r| r.value).collect(),
        apiauth: draft.apiauth,
        watchdog: draft.watchdog,
        director: draft.director,
        vip_announce: draft.vip_announce,
        metrics: draft.metrics,
        fencing,
    })
}

/// The fencing in force: every device checked (its program present, its node a cluster
/// node), and a note when none applies to `local_node`.
fn check_fencing(
    draft: &Draft,
    local_node: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<FencingSpec> {
    if draft.fence_devices.is_empty() {
        return None;
    }
    for d in &draft.fence_devices {
        if let Some(from) = &d.value.from
            && !draft.nodes.is_empty()
            && !draft.nodes.iter().any(|n| &n.value == from)
        {
            diags.push(d.loc.warning(format!(
                "'{from}' is not a cluster node, so this fence device is never used; write a `node` name or `*`"
            )));
        }
        match &d.value.kind {
            FenceKind::Glue { plugin, params } => {
                if !Path::new(STONITH_COMMAND).is_file() {
                    diags.push(d.loc.error(format!(
                        "STONITH plugin '{plugin}' is driven through cluster-glue's stonith(8), and {STONITH_COMMAND} is missing; \
                         install it (`apt-get install cluster-glue`) or use a fence agent (YAML `fencing: {{ agent: PATH }}`)"
                    )));
                }
                if let GlueParams::File(file) = params
                    && !file.is_file()
                {
                    diags.push(d.loc.error(format!(
                        "STONITH configuration file {} does not exist; create it or use `stonith_host` with inline parameters",
                        file.display()
                    )));
                }
            }
            FenceKind::Agent { path, .. } => {
                use std::os::unix::fs::PermissionsExt;
                let runnable = std::fs::metadata(path)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
                if !runnable {
                    diags.push(d.loc.error(format!(
                        "fence agent {} is not an executable file; install it or fix the path",
                        path.display()
                    )));
                }
            }
        }
    }
    if draft.fence_attempts == 0 {
        diags.push(
            draft.fence_devices[0]
                .loc
                .error("fencing attempts must be at least 1"),
        );
    }
    let devices: Vec<FenceDevice> = draft
        .fence_devices
        .iter()
        .map(|d| d.value.clone())
        .collect();
    let spec = FencingSpec {
        devices,
        action: draft.fence_action,
        timeout: draft.fence_timeout,
        attempts: draft.fence_attempts,
    };
    if spec.device_for(local_node).is_none() && !local_node.is_empty() {
        diags.push(draft.fence_devices[0].loc.warning(format!(
            "no fence device applies to this node ({local_node}): it takes over without fencing; \
             add a `stonith_host {local_node} …` or `stonith_host * …` line"
        )));
    }
    Some(spec)
}

/// `ping_hysteresis`, given or its default (2 × deadping), with warnings when it cannot act
/// as meant.
fn check_ping_hysteresis(draft: &Draft, timing: &Timing, diags: &mut Vec<Diagnostic>) -> Duration {
    let given = draft.ping_hysteresis.as_ref();
    let value = given.map_or(default_ping_hysteresis(timing.deadping), |h| h.value);
    let targets = !draft.ping_nodes.is_empty() || !draft.ping_groups.is_empty();
    let f = format_duration;
    match given {
        Some(h) if !targets => diags.push(h.loc.warning(
            "ping_hysteresis has no effect without ping targets; add `ping`, `ping6` or `ping_group` lines, or remove it",
        )),
        Some(h) if value < timing.keepalive * 2 => diags.push(h.loc.warning(format!(
            "ping_hysteresis ({}) is shorter than 2 × keepalive ({}): each node hears its peer's count in heartbeats, up to a keepalive late, so losing the same target on both nodes could move groups; raise ping_hysteresis to at least {}",
            f(value),
            f(timing.keepalive * 2),
            f(timing.keepalive * 2)
        ))),
        _ => {}
    }
    value
}

/// A resource's identity as heartbeat compares it (a bare address is `IPaddr::address`).
fn canonical(r: &ResourceSpec) -> String {
    let mut s = r.kind.clone();
    for a in &r.args {
        s.push_str("::");
        s.push_str(a);
    }
    s
}

/// Rounds up to a whole millisecond, for messages.
fn ceil_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_micros().div_ceil(1_000)).unwrap_or(u64::MAX))
}

/// Whether each serial line can keep a peer alive on its own (see media::serial).
///
/// A serial line carries one heartbeat in [`serial_line_time`] of a status frame (about
/// 180 ms at 19200 baud). hbd lets it run at the rate it allows: when keepalive is shorter,
/// the line carries the newest heartbeat each time it is free and skips the others, which
/// the UDP media still carry (a warning says so). But the peer is declared dead after
/// deadtime without any heartbeat, so deadtime must be more than twice the line's
/// heartbeat time, as heartbeat requires deadtime > 2 × keepalive; otherwise the line would
/// not keep the peer alive when the network is lost, which is its whole point (an error).
fn check_serial_lines(draft: &Draft, timing: &Timing, diags: &mut Vec<Diagnostic>) {
    let nodes: Vec<String> = draft.nodes.iter().map(|n| n.value.clone()).collect();
    // A group without resources is reported on its own (and would have no name to size).
    let groups: Vec<GroupSpec> = draft
        .groups
        .iter()
        .filter(|g| !g.value.resources.is_empty())
        .map(|g| g.value.clone())
        .collect();
    let method = draft
        .auth
        .as_ref()
        .and_then(|a| a.keys.get(&a.active))
        .map_or(AuthMethod::Sha256, |k| k.method);
    let frame = status_frame_bytes(&nodes, method, &groups);
    let f = format_duration;
    for m in &draft.media {
        let MediumSpec::Serial { device, baud } = &m.value else {
            continue;
        };
        let per_frame = ceil_ms(serial_line_time(frame, *baud));
        let device = device.display();
        if timing.deadtime <= per_frame * 2 {
            let faster = VALID_BAUDS
                .iter()
                .find(|b| ceil_ms(serial_line_time(frame, **b)) * 2 < timing.deadtime)
                .map(|b| format!(", raise baud to {b} or more"))
                .unwrap_or_default();
            diags.push(m.loc.error(format!(
                "deadtime ({}) is too short for the serial line {device} at {baud} baud: a heartbeat (about {frame} bytes) takes {} on it, so a peer heard only on this line would be declared dead; raise deadtime to at least {}{faster}, or drop the serial line",
                f(timing.deadtime),
                f(per_frame),
                f(per_frame * 2 + Duration::from_millis(1)),
            )));
        } else if timing.keepalive < per_frame {
            diags.push(m.loc.warning(format!(
                "keepalive ({}) is shorter than the {} a heartbeat (about {frame} bytes) takes on the serial line {device} at {baud} baud: that line will carry the newest heartbeat every {} and skip the others, which the other media still carry; use keepalive {} or more to send every one on it",
                f(timing.keepalive),
                f(per_frame),
                f(per_frame),
                f(per_frame),
            )));
        }
    }
}

/// Timers: defaults from the final deadtime, then heartbeat's rules.
fn check_timing(draft: &Draft, main: &Loc, diags: &mut Vec<Diagnostic>) -> Option<Timing> {
    let or = |a: &Option<At<Duration>>, default: Duration| a.as_ref().map_or(default, |a| a.value);
    let keepalive = or(&draft.keepalive, Timing::default().keepalive);
    let deadtime = or(&draft.deadtime, Timing::default().deadtime);
    let defaults = Timing::with_defaults(keepalive, deadtime);
    let timing = Timing {
        keepalive,
        deadtime,
        warntime: or(&draft.warntime, defaults.warntime),
        initdead: or(&draft.initdead, defaults.initdead),
        deadping: or(&draft.deadping, defaults.deadping),
    };
    let loc_of = |a: &Option<At<Duration>>| a.as_ref().map_or(main.clone(), |a| a.loc.clone());
    let f = format_duration;
    let mut errors = false;

    if keepalive < MIN_TIMER {
        errors = true;
        diags.push(loc_of(&draft.keepalive).error(format!(
            "keepalive ({}) is too short; use at least 1ms",
            f(keepalive)
        )));
    }
    if deadtime <= keepalive * 2 {
        errors = true;
        let (loc, what) = if draft.deadtime.is_some() {
            (loc_of(&draft.deadtime), "")
        } else {
            (loc_of(&draft.keepalive), " (the default)")
        };
        diags.push(loc.error(format!(
            "deadtime{what} ({}) must be more than twice keepalive ({}); raise deadtime to at least {} or lower keepalive",
            f(deadtime),
            f(keepalive),
            f(keepalive * 2 + Duration::from_millis(1)),
        )));
    }
    if timing.initdead < deadtime {
        errors = true;
        diags.push(loc_of(&draft.initdead).error(format!(
            "initdead ({}) must be at least deadtime ({}); raise initdead to {} or more",
            f(timing.initdead),
            f(deadtime),
            f(deadtime)
        )));
    }
    if timing.initdead < INITDEAD_WARN_BELOW && deadtime >= INITDEAD_WARN_BELOW {
        diags.push(loc_of(&draft.initdead).warning(format!(
            "initdead ({}) is shorter than 10s; the network may not be up before peers are declared dead",
            f(timing.initdead)
        )));
    }
    // An unset deadping equals deadtime, already checked above: report only an explicit one.
    if draft.deadping.is_some() && timing.deadping <= keepalive * 2 {
        errors = true;
        diags.push(loc_of(&draft.deadping).error(format!(
            "deadping ({}) must be more than twice keepalive ({}); raise deadping to at least {} or lower keepalive",
            f(timing.deadping),
            f(keepalive),
            f(keepalive * 2 + Duration::from_millis(1)),
        )));
    }
    if timing.warntime > deadtime {
        diags.push(loc_of(&draft.warntime).warning(format!(
            "warntime ({}) is longer than deadtime ({}), so late heartbeats are never reported; set warntime below deadtime",
            f(timing.warntime),
            f(deadtime)
        )));
    }
    if timing.warntime < keepalive && draft.warntime.is_some() {
        diags.push(loc_of(&draft.warntime).warning(format!(
            "warntime ({}) is shorter than keepalive ({}), so every heartbeat will be reported late; set warntime between keepalive and deadtime",
            f(timing.warntime),
            f(keepalive)
        )));
    }
    if errors { None } else { Some(timing) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn loc(line: usize) -> Loc {
        Loc::new(Path::new("ha.cf"), Some(line))
    }

    fn base() -> Draft {
        let mut d = Draft::new(Path::new("ha.cf"));
        d.nodes = vec![At::new("a".into(), loc(1)), At::new("b".into(), loc(1))];
        d.media = vec![At::new(
            MediumSpec::Bcast {
                interface: "eth0".into(),
                port: 694,
            },
            loc(2),
        )];
        d.auth = Some(AuthKeys {
            active: 1,
            keys: BTreeMap::from([(
                1,
                AuthKey {
                    method: AuthMethod::Sha256,
                    secret: b"k".to_vec(),
                },
            )]),
        });
        d.auto_failback = Some(At::new(AutoFailback::On, loc(3)));
        d
    }

    fn dur(ms: u64, line: usize) -> Option<At<Duration>> {
        Some(At::new(Duration::from_millis(ms), loc(line)))
    }

    fn run(d: Draft) -> (Option<Config>, Vec<String>) {
        let mut diags = Vec::new();
        let c = validate(d, "A", &mut diags);
        (c, diags.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn ping_hysteresis_defaults_to_two_deadpings_and_warns_when_it_cannot_act() {
        let mut d = base();
        d.keepalive = dur(100, 4);
        d.deadtime = dur(1000, 5);
        d.deadping = dur(500, 6);
        let (c, diags) = run(d.clone());
        assert_eq!(c.unwrap().ping_hysteresis, Duration::from_millis(1000));
        assert!(diags.is_empty(), "{diags:?}");

        // Given without targets: no effect.
        d.ping_hysteresis = dur(300, 7);
        let (c, diags) = run(d.clone());
        assert_eq!(c.unwrap().ping_hysteresis, Duration::from_millis(300));
        assert_eq!(
            diags,
            [
                "ha.cf:7: warning: ping_hysteresis has no effect without ping targets; add `ping`, `ping6` or `ping_group` lines, or remove it"
            ]
        );

        // Shorter than two keepalives: a shared loss could move groups.
        d.ping_nodes = vec![At::new("192.0.2.1".parse().unwrap(), loc(8))];
        d.ping_hysteresis = dur(150, 7);
        let (c, diags) = run(d.clone());
        assert!(c.is_some());
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert!(
            diags[0].starts_with(
                "ha.cf:7: warning: ping_hysteresis (150ms) is shorter than 2 × keepalive (200ms)"
            ),
            "{diags:?}"
        );
        d.ping_hysteresis = dur(200, 7);
        assert!(run(d).1.is_empty());
    }

    #[test]
    fn defaults_follow_final_deadtime() {
        let mut d = base();
        d.deadtime = dur(8000, 5);
        let (c, diags) = run(d);
        let t = c.expect("valid").timing;
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(t.keepalive, Duration::from_secs(1));
        assert_eq!(t.warntime, Duration::from_secs(4));
        assert_eq!(t.initdead, Duration::from_secs(16));
        assert_eq!(t.deadping, Duration::from_secs(8));
    }

    #[test]
    fn millisecond_timers() {
        let mut d = base();
        d.keepalive = dur(1, 4);
        d.deadtime = dur(3, 5);
        d.initdead = dur(3, 6);
        let (c, diags) = run(d);
        assert!(c.is_some(), "{diags:?}");
    }

    #[test]
    fn deadtime_rule() {
        let mut d = base();
        d.keepalive = dur(300, 4);
        d.deadtime = dur(500, 12);
        let (c, diags) = run(d);
        assert!(c.is_none());
        assert!(diags.contains(&"ha.cf:12: deadtime (500ms) must be more than twice keepalive (300ms); raise deadtime to at least 601ms or lower keepalive".to_string()), "{diags:?}");
    }

    #[test]
    fn initdead_deadping_warntime_rules() {
        let mut d = base();
        d.keepalive = dur(1000, 4);
        d.deadtime = dur(10000, 5);
        d.initdead = dur(5000, 6);
        d.deadping = dur(2000, 7);
        d.warntime = dur(20000, 8);
        let (c, diags) = run(d);
        assert!(c.is_none());
        let all = diags.join("\n");
        assert!(
            all.contains("ha.cf:6: initdead (5000ms) must be at least deadtime"),
            "{all}"
        );
        assert!(
            all.contains("ha.cf:6: warning: initdead (5000ms) is shorter than 10s"),
            "{all}"
        );
        assert!(
            all.contains("ha.cf:7: deadping (2000ms) must be more than twice keepalive"),
            "{all}"
        );
        assert!(
            all.contains("ha.cf:8: warning: warntime (20000ms) is longer than deadtime"),
            "{all}"
        );
    }

    #[test]
    fn structure_rules() {
        let mut d = base();
        d.media.clear();
        d.nodes = vec![At::new("b".into(), loc(1))];
        d.auto_failback = None;
        d.groups = vec![
            At::new(
                GroupSpec {
                    preferred: "c".into(),
                    resources: vec![ResourceSpec {
                        spec: "10.0.0.1".into(),
                        kind: "IPaddr".into(),
                        args: vec!["10.0.0.1".into()],
                    }],
                },
                Loc::new(Path::new("haresources"), Some(1)),
            ),
            At::new(
                GroupSpec {
                    preferred: "b".into(),
                    resources: vec![ResourceSpec {
                        spec: "IPaddr::10.0.0.1".into(),
                        kind: "IPaddr".into(),
                        args: vec!["10.0.0.1".into()],
                    }],
                },
                Loc::new(Path::new("haresources"), Some(3)),
            ),
        ];
        let (c, diags) = run(d);
        assert!(c.is_none());
        let all = diags.join("\n");
        assert!(all.contains("ha.cf: no heartbeat media defined"), "{all}");
        assert!(all.contains("ha.cf: this node 'a' is not listed"), "{all}");
        assert!(
            all.contains("ha.cf: warning: auto_failback is not set"),
            "{all}"
        );
        assert!(
            all.contains("haresources:1: preferred node 'c' is not a cluster node"),
            "{all}"
        );
        assert!(all.contains("haresources:3: group key 'IPaddr::10.0.0.1' (the first resource) is already used by the group on line 1"), "{all}");
    }

    fn with_serial(keepalive: u64, deadtime: u64, baud: u32) -> (Option<Config>, Vec<String>) {
        let mut d = base();
        d.media.push(At::new(
            MediumSpec::Serial {
                device: "/dev/ttyS0".into(),
                baud,
            },
            loc(9),
        ));
        d.keepalive = dur(keepalive, 4);
        d.deadtime = dur(deadtime, 5);
        d.initdead = dur(deadtime.max(12000), 6);
        run(d)
    }

    #[test]
    fn serial_line_must_carry_a_heartbeat_within_deadtime() {
        // Nodes "a" and "b", sha256, no groups: about 245 bytes, 128 ms at 19200 baud.
        assert_eq!(
            status_frame_bytes(&["a".into(), "b".into()], AuthMethod::Sha256, &[]),
            245
        );
        let (c, diags) = with_serial(10, 200, 19200);
        assert!(c.is_none());
        assert_eq!(
            diags,
            [
                "ha.cf:9: deadtime (200ms) is too short for the serial line /dev/ttyS0 at 19200 baud: \
              a heartbeat (about 245 bytes) takes 128ms on it, so a peer heard only on this line \
              would be declared dead; raise deadtime to at least 257ms, raise baud to 38400 or more, \
              or drop the serial line"
            ]
        );
        // No baud is fast enough for 10ms: only deadtime or dropping the line helps.
        let (c, diags) = with_serial(1, 10, 9600);
        assert!(c.is_none());
        assert!(
            diags[0].ends_with("raise deadtime to at least 513ms, or drop the serial line"),
            "{diags:?}"
        );
    }

    #[test]
    fn serial_line_slower_than_keepalive_is_a_warning() {
        let (c, diags) = with_serial(10, 300, 19200);
        assert!(c.is_some(), "{diags:?}");
        assert_eq!(
            diags,
            [
                "ha.cf:9: warning: keepalive (10ms) is shorter than the 128ms a heartbeat (about 245 bytes) \
              takes on the serial line /dev/ttyS0 at 19200 baud: that line will carry the newest \
              heartbeat every 128ms and skip the others, which the other media still carry; use \
              keepalive 128ms or more to send every one on it"
            ]
        );
        // Fast enough: nothing to say.
        let (c, diags) = with_serial(30, 300, 115200);
        assert!(c.is_some() && diags.is_empty(), "{diags:?}");
        let (c, diags) = with_serial(1000, 8000, 19200);
        assert!(c.is_some() && diags.is_empty(), "{diags:?}");
    }

    #[test]
    fn groups_are_refused_in_a_cluster_of_more_than_two_nodes() {
        let mut d = base();
        d.nodes = ["a", "b", "c"]
            .iter()
            .map(|n| At::new(n.to_string(), loc(1)))
            .collect();
        d.groups = vec![At::new(
            GroupSpec {
                preferred: "a".into(),
                resources: vec![ResourceSpec {
                    spec: "192.0.2.10".into(),
                    kind: "IPaddr".into(),
                    args: vec!["192.0.2.10".into()],
                }],
            },
            Loc::new(Path::new("haresources"), Some(2)),
        )];
        let (c, diags) = run(d.clone());
        assert!(c.is_none());
        let all = diags.join("\n");
        assert!(
            all.contains("haresources:2: resource groups need a two-node cluster, and 3 nodes are listed (a, b, c)"),
            "{all}"
        );
        // the same three nodes without groups are a valid membership-only cluster
        d.groups.clear();
        assert!(run(d).0.is_some());
    }

    #[test]
    fn medium_checks() {
        let mut diags = Vec::new();
        let l = loc(9);
        check_medium(
            &MediumSpec::Mcast {
                interface: "eth0".into(),
                group: "10.0.0.1".parse().unwrap(),
                port: 0,
                ttl: 0,
                loopback: false,
            },
            &l,
            &mut diags,
        );
        check_medium(
            &MediumSpec::Serial {
                device: "ttyS0".into(),
                baud: 1200,
            },
            &l,
            &mut diags,
        );
        let all: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        assert_eq!(all.len(), 5, "{all:?}");
        assert!(all.iter().all(|d| d.starts_with("ha.cf:9: ")));
    }
}
