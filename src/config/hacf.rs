//! `ha.cf`: heartbeat's main configuration file, directive by directive (features.md
//! §2.1–2.2, heartbeat `config.c`).
//!
//! Two steps: [`lex`] turns the text into [`Line`]s (directive, words, line number) and
//! [`interpret`] reads them in order into a [`Draft`], because order matters in ha.cf:
//! `udpport` applies to the `bcast`/`ucast` lines after it and `baud` to the `serial` lines
//! after it. Every directive heartbeat knows is recognised: those hbd uses fill the draft,
//! those it does not act on are warned about by name from the one table in
//! [`super::support`], `crm`/`pacemaker` other than `off` are refused, and unknown words are
//! errors.

use super::diag::edit_distance;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::diag::{Diagnostic, Severity};
use super::model::*;
use super::source::parse_bool;
use super::support::{DIRECTIVES, lookup, warning_for};
use super::time::parse_duration;
use super::validate::{At, Draft, Loc, bauds_list, respawn_spec};

/// One non-blank ha.cf line, comments removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    /// 1-based line number.
    pub line: usize,
    /// The directive, lower-cased.
    pub directive: String,
    /// The words after the directive.
    pub args: Vec<String>,
}

/// Splits ha.cf text into directive lines: `#` starts a comment anywhere, words are separated
/// by whitespace.
pub(crate) fn lex(text: &str) -> Vec<Line> {
    text.lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let body = raw.split('#').next().unwrap_or_default();
            let mut words = body.split_whitespace();
            let directive = words.next()?.to_ascii_lowercase();
            Some(Line {
                line: i + 1,
                directive,
                args: words.map(str::to_string).collect(),
            })
        })
        .collect()
}

/// Directives that take one value; giving one twice is worth a warning.
const SINGLE: &[&str] = &[
    "keepalive",
    "deadtime",
    "warntime",
    "initdead",
    "deadping",
    "ping_hysteresis",
    "hopfudge",
    "msgfmt",
    "cluster",
    "auto_failback",
    "nice_failback",
    "logfacility",
    "logfile",
    "debugfile",
    "debug",
    "watchdog",
    "autojoin",
    "uuidfrom",
    "hbgenmethod",
    "use_logd",
];

/// syslog facilities heartbeat accepts (`logfacility`).
const FACILITIES: &[&str] = &[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
];

/// A directive value outside the words it accepts; the message names the value and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ValueError {
    /// `auto_failback` is not a boolean or `legacy`.
    #[error("auto_failback '{0}' is unknown; use on, off or legacy")]
    AutoFailback(String),
    /// `msgfmt` is not `classic` or `netstring`.
    #[error("msgfmt '{0}' is unknown; use classic or netstring")]
    MsgFormat(String),
    /// `logfacility` is not a syslog facility.
    #[error("'{0}' is not a syslog facility; use one of {list} or none", list = FACILITIES.join(", "))]
    Facility(String),
}

/// `auto_failback` values: a boolean or `legacy`.
pub(crate) fn parse_auto_failback(word: &str) -> Result<AutoFailback, ValueError> {
    if word.eq_ignore_ascii_case("legacy") {
        return Ok(AutoFailback::Legacy);
    }
    match parse_bool(word) {
        Some(true) => Ok(AutoFailback::On),
        Some(false) => Ok(AutoFailback::Off),
        None => Err(ValueError::AutoFailback(word.to_string())),
    }
}

/// `msgfmt` values.
pub(crate) fn parse_msgfmt(word: &str) -> Result<MsgFormat, ValueError> {
    match word.to_ascii_lowercase().as_str() {
        "classic" => Ok(MsgFormat::Classic),
        "netstring" => Ok(MsgFormat::Netstring),
        _ => Err(ValueError::MsgFormat(word.to_string())),
    }
}

/// Checks a syslog facility name (`none` means no syslog).
pub(crate) fn check_facility(word: &str) -> Result<Option<String>, ValueError> {
    let w = word.to_ascii_lowercase();
    if w == "none" {
        Ok(None)
    } else if FACILITIES.contains(&w.as_str()) {
        Ok(Some(w))
    } else {
        Err(ValueError::Facility(word.to_string()))
    }
}

/// The closest known directive, when one is close enough to be a typo.
fn did_you_mean(word: &str) -> Option<&'static str> {
    DIRECTIVES
        .iter()
        .map(|k| (edit_distance(word, k.name), k.name))
        .filter(|(d, k)| *d <= 2 && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Reads lexed ha.cf lines, in order, into a draft (authkeys and haresources are added by the
/// caller), with a diagnostic for each problem.
pub(crate) fn interpret(lines: &[Line], file: &Path) -> (Draft, Vec<Diagnostic>) {
    let mut s = State {
        draft: Draft::new(file),
        diags: Vec::new(),
        file: file.to_path_buf(),
        baud: DEFAULT_BAUD,
        seen: BTreeMap::new(),
        nice_failback: None,
    };
    for line in lines {
        s.directive(line);
    }
    (s.draft, s.diags)
}

/// Parses ha.cf text (both steps).
pub(crate) fn parse(text: &str, file: &Path) -> (Draft, Vec<Diagnostic>) {
    interpret(&lex(text), file)
}

struct State {
    draft: Draft,
    diags: Vec<Diagnostic>,
    file: PathBuf,
    /// Current `baud`, applied to later `serial` lines.
    baud: u32,
    /// Line where each single-valued directive was first seen.
    seen: BTreeMap<&'static str, usize>,
    /// Line of a `nice_failback` (mapped onto auto_failback).
    nice_failback: Option<usize>,
}

impl State {
    fn loc(&self, l: &Line) -> Loc {
        Loc::new(&self.file, Some(l.line))
    }

    fn err(&mut self, l: &Line, msg: impl Into<String>) {
        let d = self.loc(l).error(msg);
        self.diags.push(d);
    }

    fn warn(&mut self, l: &Line, msg: impl Into<String>) {
        let d = self.loc(l).warning(msg);
        self.diags.push(d);
    }

    /// The one argument of a single-valued directive, or an error naming the expected form.
    fn one<'a>(&mut self, l: &'a Line, form: &str) -> Option<&'a str> {
        if l.args.len() == 1 {
            Some(&l.args[0])
        } else {
            self.err(
                l,
                format!(
                    "{} takes exactly one value, got {}; write `{} {form}`",
                    l.directive,
                    l.args.len(),
                    l.directive
                ),
            );
            None
        }
    }

    /// At least `n` arguments, or an error naming the expected form.
    fn at_least(&mut self, l: &Line, n: usize, form: &str) -> bool {
        if l.args.len() >= n {
            true
        } else {
            self.err(
                l,
                format!(
                    "{} needs {}; write `{} {form}`",
                    l.directive,
                    if n == 1 {
                        "a value".to_string()
                    } else {
                        format!("at least {n} values")
                    },
                    l.directive
                ),
            );
            false
        }
    }

    fn duration(&mut self, l: &Line) -> Option<At<Duration>> {
        let v = self.one(l, "TIME")?;
        match parse_duration(v) {
            Ok(d) => Some(At::new(d, self.loc(l))),
            Err(e) => {
                self.err(l, format!("{}: {e}", l.directive));
                None
            }
        }
    }

    fn boolean(&mut self, l: &Line) -> Option<bool> {
        let v = self.one(l, "on|off")?;
        let b = parse_bool(v);
        if b.is_none() {
            self.err(
                l,
                format!(
                    "{}: '{v}' is not a boolean; use on/yes/true/y/1 or off/no/false/n/0",
                    l.directive
                ),
            );
        }
        b
    }

    fn number<T: std::str::FromStr>(&mut self, l: &Line, range: &str) -> Option<T> {
        let v = self.one(l, "N")?;
        let n = v.parse::<T>().ok();
        if n.is_none() {
            self.err(
                l,
                format!(
                    "{}: '{v}' is not a number in {range}; write a number in {range}",
                    l.directive
                ),
            );
        }
        n
    }

    fn ip(&mut self, l: &Line, word: &str, v6: bool, what: &str) -> Option<IpAddr> {
        let want = if v6 { "IPv6" } else { "IPv4" };
        match word.parse::<IpAddr>() {
            Ok(a) if a.is_ipv6() == v6 => Some(a),
            Ok(_) => {
                let base = l.directive.trim_end_matches('6');
                let v6_form = format!("{base}6");
                let hint = if v6 {
                    format!("use `{base}` for IPv4")
                } else if lookup(&v6_form).is_some() {
                    format!("use `{v6_form}` for IPv6")
                } else {
                    format!(
                        "`{base}` takes IPv4 addresses only; use `ping6` for IPv6 ping nodes (or `ping_groups` in the YAML form)"
                    )
                };
                self.err(
                    l,
                    format!("{what} '{word}' is not an {want} address; {hint}"),
                );
                None
            }
            Err(_) => {
                self.err(
                    l,
                    format!("{what} '{word}' is not an {want} address; hbd does not resolve names, write the address"),
                );
                None
            }
        }
    }

    fn directive(&mut self, l: &Line) {
        let d = l.directive.as_str();
        if let Some(name) = SINGLE.iter().find(|s| **s == d) {
            if let Some(first) = self.seen.get(name) {
                let first = *first;
                self.warn(
                    l,
                    format!(
                        "{d} is given twice (first on line {first}); the value on this line is used, remove the other"
                    ),
                );
            } else {
                self.seen.insert(name, l.line);
            }
        }
        if lookup(d).is_none() {
            let hint = match did_you_mean(d) {
                Some(k) => format!("did you mean '{k}'?"),
                None => "remove it or check the spelling against docs/configuration.md".to_string(),
            };
            self.err(l, format!("unknown directive '{d}'; {hint}"));
            return;
        }
        let errors_before = self.errors();
        self.read_value(l);
        // One place warns for every directive hbd does not act on (support::DIRECTIVES), and
        // only when its value was good (a bad value is an error instead).
        if self.errors() == errors_before
            && let Some(w) = warning_for(d, l.args.first().map(String::as_str))
        {
            self.warn(l, w);
        }
    }

    fn errors(&self) -> usize {
        self.diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// Checks a directive's value and, for those hbd acts on, fills the draft.
    fn read_value(&mut self, l: &Line) {
        let d = l.directive.as_str();
        match d {
            "keepalive" | "deadtime" | "warntime" | "initdead" | "deadping" => {
                if let Some(v) = self.duration(l)
                    && let Some(slot) = self.draft.timer_mut(d)
                {
                    *slot = Some(v);
                }
            }
            "udpport" => self.udpport(l),
            "bcast" | "udp" => {
                if d == "udp" {
                    self.warn(l, "'udp' is the old name of 'bcast'; write `bcast` instead");
                }
                if self.at_least(l, 1, "IFACE [IFACE...]") {
                    for iface in &l.args {
                        let m = MediumSpec::Bcast {
                            interface: iface.clone(),
                            port: self.draft.udp_port,
                        };
                        self.draft.media.push(At::new(m, self.loc(l)));
                    }
                }
            }
            "ucast" | "ucast6" => {
                if self.at_least(l, 2, "IFACE PEER-ADDRESS") {
                    for peer in &l.args[1..] {
                        if let Some(peer) = self.ip(l, peer, d == "ucast6", "ucast peer") {
                            let m = MediumSpec::Ucast {
                                interface: l.args[0].clone(),
                                peer,
                                port: self.draft.udp_port,
                            };
                            self.draft.media.push(At::new(m, self.loc(l)));
                        }
                    }
                }
            }
            "mcast" | "mcast6" => self.mcast(l),
            "serial" => {
                if self.at_least(l, 1, "DEVICE [DEVICE...]") {
                    for dev in &l.args {
                        let m = MediumSpec::Serial {
                            device: PathBuf::from(dev),
                            baud: self.baud,
                        };
                        self.draft.media.push(At::new(m, self.loc(l)));
                    }
                }
            }
            "baud" => self.baud(l),
            "hopfudge" => {
                if let Some(n) = self.number::<u8>(l, "0-255") {
                    self.draft.hopfudge = n;
                }
            }
            "msgfmt" => {
                if let Some(v) = self.one(l, "classic|netstring") {
                    match parse_msgfmt(v) {
                        Ok(f) => self.draft.msgfmt = f,
                        Err(e) => self.err(l, e.to_string()),
                    }
                }
            }
            "compression" => {
                if let Some(v) = self.one(l, "zlib|bz2")
                    && !matches!(v.to_ascii_lowercase().as_str(), "zlib" | "bz2")
                {
                    self.err(
                        l,
                        format!("compression '{v}' is unknown; use zlib or bz2 (or remove the line)"),
                    );
                }
            }
            "compression_threshold" | "memreserve" | "rtprio" => {
                self.number::<u32>(l, "0-4294967295");
            }
            "max_rexmit_delay" | "conn_logd_time" => {
                if let Some(v) = self.one(l, "TIME")
                    && parse_duration(v).is_err()
                {
                    self.err(
                        l,
                        format!("{d}: '{v}' is not a number; write a number of milliseconds"),
                    );
                }
            }
            "traditional_compression"
            | "realtime"
            | "coredumps"
            | "log_badpack"
            | "syslogmsgfmt"
            | "use_apphbd"
            | "normalpoll"
            | "use_logd" => {
                self.boolean(l);
            }
            "coreroot" => {
                self.one(l, "DIRECTORY");
            }
            "node" => {
                if self.at_least(l, 1, "NAME [NAME...]") {
                    for n in &l.args {
                        let at = At::new(n.to_ascii_lowercase(), self.loc(l));
                        self.draft.nodes.push(at);
                    }
                }
            }
            "autojoin" => {
                if let Some(v) = self.one(l, "none|other|any") {
                    match v.to_ascii_lowercase().as_str() {
                        "none" | "other" | "any" => {}
                        _ => self.err(
                            l,
                            format!("autojoin '{v}' is unknown; use none, other or any"),
                        ),
                    }
                }
            }
            "uuidfrom" | "hbgenmethod" => {
                let allowed: &[&str] = if d == "uuidfrom" {
                    &["file", "nodename"]
                } else {
                    &["file", "time"]
                };
                if let Some(v) = self.one(l, &allowed.join("|"))
                    && !allowed.contains(&v.to_ascii_lowercase().as_str())
                {
                    self.err(
                        l,
                        format!("{d} '{v}' is unknown; use {}", allowed.join(" or ")),
                    );
                }
            }
            "cluster" => {
                if let Some(v) = self.one(l, "NAME") {
                    self.draft.cluster = Some(v.to_string());
                }
            }
            "auto_failback" => {
                if let Some(v) = self.one(l, "on|off|legacy") {
                    match parse_auto_failback(v) {
                        Ok(a) => {
                            if let Some(nl) = self.nice_failback {
                                self.err(l, format!("auto_failback and nice_failback (line {nl}) are both set; remove nice_failback"));
                            }
                            self.draft.auto_failback = Some(At::new(a, self.loc(l)));
                        }
                        Err(e) => self.err(l, e.to_string()),
                    }
                }
            }
            "nice_failback" => {
                if let Some(b) = self.boolean(l) {
                    if let Some(a) = &self.draft.auto_failback {
                        let al = a.loc.line.unwrap_or(0);
                        self.err(l, format!("nice_failback and auto_failback (line {al}) are both set; remove nice_failback"));
                    } else {
                        let (a, word) = if b {
                            (AutoFailback::Off, "off")
                        } else {
                            (AutoFailback::Legacy, "legacy")
                        };
                        self.warn(l, format!("nice_failback is deprecated; it is read as `auto_failback {word}`, write that instead"));
                        self.nice_failback = Some(l.line);
                        self.draft.auto_failback = Some(At::new(a, self.loc(l)));
                    }
                }
            }
            "ping" | "ping6" => {
                if self.at_least(l, 1, "ADDRESS [ADDRESS...]") {
                    for a in &l.args {
                        if let Some(ip) = self.ip(l, a, d == "ping6", "ping node") {
                            self.draft.ping_nodes.push(At::new(ip, self.loc(l)));
                        }
                    }
                }
            }
            "ping_hysteresis" => self.draft.ping_hysteresis = self.duration(l),
            "ping_group" => {
                if self.at_least(l, 2, "NAME ADDRESS [ADDRESS...]") {
                    let mut addresses = Vec::new();
                    for a in &l.args[1..] {
                        if let Some(ip) = self.ip(l, a, false, "ping_group address") {
                            addresses.push(ip);
                        }
                    }
                    let g = PingGroup {
                        name: l.args[0].to_ascii_lowercase(),
                        addresses,
                    };
                    self.draft.ping_groups.push(At::new(g, self.loc(l)));
                }
            }
            "respawn" => {
                if self.at_least(l, 2, "USER PROGRAM [ARGS...]") {
                    let loc = self.loc(l);
                    if let Some(r) = respawn_spec(&l.args[0], &l.args[1..], &loc, &mut self.diags) {
                        self.draft.respawn.push(At::new(r, self.loc(l)));
                    }
                }
            }
            "apiauth" => self.apiauth(l),
            "logfacility" => {
                if let Some(v) = self.one(l, "FACILITY") {
                    match check_facility(v) {
                        Ok(f) => self.draft.logging.facility = f,
                        Err(e) => self.err(l, e.to_string()),
                    }
                }
            }
            "logfile" => {
                if let Some(v) = self.one(l, "PATH") {
                    self.draft.logging.file = Some(PathBuf::from(v));
                }
            }
            "debugfile" => {
                if let Some(v) = self.one(l, "PATH") {
                    self.draft.logging.debug_file = Some(PathBuf::from(v));
                }
            }
            "debug" => {
                if let Some(n) = self.number::<u8>(l, "0-255") {
                    self.draft.logging.debug_level = n;
                }
            }
            "watchdog" => {
                if let Some(v) = self.one(l, "DEVICE") {
                    self.draft.watchdog = Some(PathBuf::from(v));
                }
            }
            "crm" | "pacemaker" => {
                let v = l
                    .args
                    .first()
                    .map(|s| s.to_ascii_lowercase())
                    .unwrap_or_default();
                if l.args.len() != 1 {
                    self.err(l, format!("{d} takes one value; hbd does not run Pacemaker, so remove the line or write `{d} off`"));
                } else if parse_bool(&v) == Some(false) {
                    // Off is what hbd does anyway.
                } else {
                    self.err(
                        l,
                        format!("'{d} {v}' asks for Pacemaker, which hbd does not run: hbd manages the haresources groups itself; remove the line or write `{d} off`"),
                    );
                }
            }
            "stonith" => {
                // stonith TYPE FILE: one device for every node, parameters in FILE.
                if l.args.len() != 2 {
                    self.err(l, format!("{d} takes a STONITH type and its configuration file (`stonith external/ipmi /etc/ha.d/ipmi.cfg`)"));
                } else {
                    let device = FenceDevice {
                        from: None,
                        kind: FenceKind::Glue {
                            plugin: l.args[0].clone(),
                            params: GlueParams::File(PathBuf::from(&l.args[1])),
                        },
                    };
                    self.draft.fence_devices.push(At::new(device, self.loc(l)));
                }
            }
            "stonith_host" => {
                // stonith_host FROM|* TYPE PARAMS…: a device for node FROM (or every node).
                if l.args.len() < 2 {
                    self.err(l, format!("{d} takes the node that uses it (or *), a STONITH type and its parameters (`stonith_host * external/ipmi peer 192.0.2.50 admin secret lan`)"));
                } else {
                    let from = (l.args[0] != "*").then(|| l.args[0].to_ascii_lowercase());
                    let device = FenceDevice {
                        from,
                        kind: FenceKind::Glue {
                            plugin: l.args[1].clone(),
                            params: GlueParams::Inline(l.args[2..].join(" ")),
                        },
                    };
                    self.draft.fence_devices.push(At::new(device, self.loc(l)));
                }
            }
            "hbaping"
            | "failfast"
            | "env"
            | "quorum_server"
            | "crm_daemon_dir"
            | "crmd_spawns_pengine"
            | "record_config_changes"
            | "record_pengine_inputs"
            | "enable_config_writes" => {
                if l.args.is_empty() {
                    self.err(
                        l,
                        format!("{d} needs a value; see `man ha.cf`, or remove the line"),
                    );
                }
            }
            // Only names in support::DIRECTIVES get here (checked in `directive`), and each
            // has an arm above; a row added to the table without one is refused, not
            // accepted silently.
            _ => self.err(
                l,
                format!("hbd has no reader for '{d}' although it knows the directive; remove the line and report this"),
            ),
        }
    }

    fn udpport(&mut self, l: &Line) {
        let Some(port) = self.number::<u16>(l, "1-65535") else {
            return;
        };
        if port == 0 {
            self.err(l, "udpport 0 is not usable; use 694 (ha-cluster)");
            return;
        }
        let before = self
            .draft
            .media
            .iter()
            .filter(|m| match &m.value {
                MediumSpec::Ucast { port: p, .. } | MediumSpec::Bcast { port: p, .. } => *p != port,
                _ => false,
            })
            .count();
        if before > 0 {
            let prev = self.draft.udp_port;
            self.warn(
                l,
                format!(
                    "udpport applies only to the bcast/ucast lines after it; the {before} medium(s) above keep port {prev}; move udpport above them"
                ),
            );
        }
        self.draft.udp_port = port;
    }

    fn baud(&mut self, l: &Line) {
        let Some(baud) = self.number::<u32>(l, bauds_list().as_str()) else {
            return;
        };
        if !VALID_BAUDS.contains(&baud) {
            self.err(
                l,
                format!(
                    "baud {baud} is not a serial speed heartbeat supports; use one of {}",
                    bauds_list()
                ),
            );
            return;
        }
        let before = self
            .draft
            .media
            .iter()
            .filter(|m| matches!(&m.value, MediumSpec::Serial { baud: b, .. } if *b != baud))
            .count();
        if before > 0 {
            let prev = self.baud;
            self.warn(
                l,
                format!(
                    "baud applies only to the serial lines after it; the {before} serial line(s) above keep {prev}; move baud above them"
                ),
            );
        }
        self.baud = baud;
    }

    fn mcast(&mut self, l: &Line) {
        let v6 = l.directive == "mcast6";
        if l.args.len() != 5 {
            self.err(
                l,
                format!(
                    "{} takes 5 values, got {}; write `{} IFACE GROUP PORT TTL LOOP` (e.g. `{} eth0 {} 694 1 0`)",
                    l.directive,
                    l.args.len(),
                    l.directive,
                    l.directive,
                    if v6 { "ff12::1" } else { "239.192.0.1" }
                ),
            );
            return;
        }
        let group = self.ip(l, &l.args[1], v6, "mcast group");
        let port = match l.args[2].parse::<u16>() {
            Ok(p) => Some(p),
            Err(_) => {
                self.err(
                    l,
                    format!(
                        "mcast port '{}' is not a port number; use 1-65535 (694 is ha-cluster)",
                        l.args[2]
                    ),
                );
                None
            }
        };
        let ttl = match l.args[3].parse::<u8>() {
            Ok(t) => Some(t),
            Err(_) => {
                self.err(
                    l,
                    format!(
                        "mcast ttl '{}' is not in 1-255; use 1 for the local subnet",
                        l.args[3]
                    ),
                );
                None
            }
        };
        let loopback = match l.args[4].as_str() {
            "0" => Some(false),
            "1" => Some(true),
            other => {
                self.err(l, format!("mcast loop '{other}' must be 0 or 1; use 0"));
                None
            }
        };
        if let (Some(group), Some(port), Some(ttl), Some(loopback)) = (group, port, ttl, loopback) {
            let m = MediumSpec::Mcast {
                interface: l.args[0].clone(),
                group,
                port,
                ttl,
                loopback,
            };
            self.draft.media.push(At::new(m, self.loc(l)));
        }
    }

    fn apiauth(&mut self, l: &Line) {
        if !self.at_least(l, 2, "CLIENT [uid=USER,...] [gid=GROUP,...]") {
            return;
        }
        let mut a = ApiAuth {
            client: l.args[0].clone(),
            uids: Vec::new(),
            gids: Vec::new(),
        };
        for w in &l.args[1..] {
            let (key, list) = w.split_once('=').unwrap_or((w, ""));
            let names = list
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            match key.to_ascii_lowercase().as_str() {
                "uid" => a.uids.extend(names),
                "gid" => a.gids.extend(names),
                _ => {
                    self.err(l, format!("apiauth: '{w}' is neither uid=... nor gid=...; write `apiauth {} uid=USER,... gid=GROUP,...`", a.client));
                    return;
                }
            }
        }
        if a.uids.is_empty() && a.gids.is_empty() {
            self.err(
                l,
                format!(
                    "apiauth {} names no users or groups; add uid=USER or gid=GROUP",
                    a.client
                ),
            );
            return;
        }
        self.draft.apiauth.push(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::support::Support;

    fn run(text: &str) -> (Draft, Vec<String>) {
        let (d, diags) = parse(text, Path::new("ha.cf"));
        (d, diags.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn ping_hysteresis_is_read_as_a_time() {
        let (d, diags) = run("ping_hysteresis 250ms\n");
        assert!(diags.is_empty(), "{diags:?}");
        let h = d.ping_hysteresis.unwrap();
        assert_eq!((h.value, h.loc.line), (Duration::from_millis(250), Some(1)));
        let (d, diags) = run("ping_hysteresis soon\nping_hysteresis 1 2\n");
        assert!(d.ping_hysteresis.is_none());
        assert!(
            diags[0].starts_with("ha.cf:1: ping_hysteresis: 'soon' is not a time value"),
            "{diags:?}"
        );
        assert!(
            diags[1].starts_with("ha.cf:2: warning: ping_hysteresis is given twice"),
            "{diags:?}"
        );
        assert!(
            diags[2].starts_with("ha.cf:2: ping_hysteresis takes exactly one value"),
            "{diags:?}"
        );
        let (_, diags) = run("ping_hysterisis 1\n");
        assert!(
            diags[0].contains("did you mean 'ping_hysteresis'?"),
            "{diags:?}"
        );
    }

    #[test]
    fn lexing() {
        let l = lex("# c\n\n  Keepalive 2 # two\nnode a b\n");
        assert_eq!(
            l,
            vec![
                Line {
                    line: 3,
                    directive: "keepalive".into(),
                    args: vec!["2".into()]
                },
                Line {
                    line: 4,
                    directive: "node".into(),
                    args: vec!["a".into(), "b".into()]
                },
            ]
        );
    }

    #[test]
    fn media_and_order() {
        let (d, diags) = run(
            "bcast eth0\nudpport 700\nbcast eth1 eth2\nucast eth0 192.0.2.12\nucast6 eth0 fe80::1\n\
             mcast eth0 239.0.2.94 694 1 0\nmcast6 eth0 ff12::1 694 1 1\nserial /dev/ttyS0\nbaud 38400\nserial /dev/ttyS1\nudp eth3\n",
        );
        let ports: Vec<String> = d.media.iter().map(|m| format!("{:?}", m.value)).collect();
        assert_eq!(d.media.len(), 10, "{ports:?}");
        assert_eq!(
            d.media[0].value,
            MediumSpec::Bcast {
                interface: "eth0".into(),
                port: 694
            }
        );
        assert_eq!(
            d.media[1].value,
            MediumSpec::Bcast {
                interface: "eth1".into(),
                port: 700
            }
        );
        assert_eq!(d.media[1].loc.line, Some(3));
        assert_eq!(
            d.media[3].value,
            MediumSpec::Ucast {
                interface: "eth0".into(),
                peer: "192.0.2.12".parse().unwrap(),
                port: 700
            }
        );
        assert!(matches!(
            d.media[4].value,
            MediumSpec::Ucast {
                peer: IpAddr::V6(_),
                ..
            }
        ));
        assert_eq!(
            d.media[5].value,
            MediumSpec::Mcast {
                interface: "eth0".into(),
                group: "239.0.2.94".parse().unwrap(),
                port: 694,
                ttl: 1,
                loopback: false
            }
        );
        assert_eq!(
            d.media[7].value,
            MediumSpec::Serial {
                device: "/dev/ttyS0".into(),
                baud: 19200
            }
        );
        assert_eq!(
            d.media[8].value,
            MediumSpec::Serial {
                device: "/dev/ttyS1".into(),
                baud: 38400
            }
        );
        assert_eq!(d.udp_port, 700);
        let all = diags.join("\n");
        assert!(all.contains("ha.cf:2: warning: udpport applies only to the bcast/ucast lines after it; the 1 medium(s) above keep port 694"), "{all}");
        assert!(
            all.contains("ha.cf:9: warning: baud applies only to the serial lines after it"),
            "{all}"
        );
        assert!(
            all.contains("ha.cf:11: warning: 'udp' is the old name of 'bcast'"),
            "{all}"
        );
        // udp line still adds a medium
        assert_eq!(
            d.media[9].value,
            MediumSpec::Bcast {
                interface: "eth3".into(),
                port: 700
            }
        );
    }

    #[test]
    fn values() {
        let (d, diags) = run(
            "keepalive 10ms\ndeadtime 1.5\nwarntime 500ms\ninitdead 2\ndeadping 100ms\nnode Alpha beta\nnode gamma\n\
             cluster lab\nhopfudge 2\nmsgfmt netstring\nauto_failback YES\nping 192.0.2.1 192.0.2.2\nping6 2001:db8::1\n\
             ping_group g1 192.0.2.1 192.0.2.3\nrespawn hacluster /usr/lib/heartbeat/ipfail\nrespawn root /usr/bin/x -a\n\
             apiauth ipfail gid=root uid=root,hacluster\nlogfacility LOCAL0\nlogfile /var/log/ha-log\ndebugfile /var/log/ha-debug\n\
             debug 3\nwatchdog /dev/watchdog\nuse_logd no\ncrm off\nautojoin none\n",
        );
        assert_eq!(
            d.keepalive.as_ref().unwrap().value,
            Duration::from_millis(10)
        );
        assert_eq!(
            d.deadtime.as_ref().unwrap().value,
            Duration::from_millis(1500)
        );
        assert_eq!(d.initdead.as_ref().unwrap().value, Duration::from_secs(2));
        let nodes: Vec<&str> = d.nodes.iter().map(|n| n.value.as_str()).collect();
        assert_eq!(nodes, ["alpha", "beta", "gamma"]);
        assert_eq!(d.cluster.as_deref(), Some("lab"));
        assert_eq!(d.hopfudge, 2);
        assert_eq!(d.msgfmt, MsgFormat::Netstring);
        assert_eq!(d.auto_failback.as_ref().unwrap().value, AutoFailback::On);
        assert_eq!(d.ping_nodes.len(), 3);
        assert_eq!(d.ping_groups[0].value.addresses.len(), 2);
        assert_eq!(
            d.respawn
                .iter()
                .map(|r| r.value.clone())
                .collect::<Vec<_>>(),
            vec![RespawnSpec {
                user: "root".into(),
                command: vec!["/usr/bin/x".into(), "-a".into()]
            }]
        );
        assert_eq!(
            d.apiauth,
            vec![ApiAuth {
                client: "ipfail".into(),
                uids: vec!["root".into(), "hacluster".into()],
                gids: vec!["root".into()]
            }]
        );
        assert_eq!(
            d.logging,
            Logging {
                file: Some("/var/log/ha-log".into()),
                debug_file: Some("/var/log/ha-debug".into()),
                facility: Some("local0".into()),
                debug_level: 3
            }
        );
        assert_eq!(d.watchdog, Some(PathBuf::from("/dev/watchdog")));
        // Each line hbd does not act on is named once; ipfail gets a note, not a warning.
        let named: Vec<&str> = diags
            .iter()
            .map(|d| d.split(" is ").next().unwrap_or(d))
            .collect();
        assert_eq!(
            named,
            [
                "ha.cf:8: warning: 'cluster'",
                "ha.cf:15: note: ipfail",
                "ha.cf:17: warning: 'apiauth'",
            ],
            "{diags:#?}"
        );
    }

    #[test]
    fn unsupported_are_named() {
        let text = "compression bz2\ncompression_threshold 2\ntraditional_compression off\nmax_rexmit_delay 250\nuuidfrom file\n\
             hbgenmethod time\nhbaping fc-card\nfailfast hacluster /bin/x\nenv A=b\nuse_logd yes\nconn_logd_time 60\n\
             realtime off\nrtprio 5\ncoredumps true\ncoreroot /var/lib/heartbeat/cores\nlog_badpack true\nsyslogmsgfmt true\n\
             use_apphbd no\nmemreserve 6500\nnormalpoll true\nquorum_server q1\ncrm_daemon_dir /usr/lib/heartbeat\n\
             crmd_spawns_pengine on\nrecord_config_changes on\nrecord_pengine_inputs on\nenable_config_writes on\nautojoin any\n";
        let (_, diags) = run(text);
        assert_eq!(diags.len(), 27, "{diags:#?}");
        let lines = lex(text);
        for (i, d) in diags.iter().enumerate() {
            let l = &lines[i];
            let want = warning_for(&l.directive, l.args.first().map(String::as_str))
                .expect("every line here is warned about");
            assert_eq!(*d, format!("ha.cf:{}: warning: {want}", i + 1));
            let unsupported = matches!(
                lookup(&l.directive).map(|d| d.support),
                Some(Support::Unsupported { .. })
            );
            let kind = if unsupported {
                "is not supported by hbd yet and is ignored; "
            } else {
                "is ignored: "
            };
            assert!(d.contains(kind), "{d}");
        }
        assert_eq!(
            diags[0],
            "ha.cf:1: warning: 'compression' is ignored: hbd never compresses the heartbeat frames it sends"
        );
        assert_eq!(
            diags[9],
            "ha.cf:10: warning: 'use_logd yes' is ignored: hbd writes logfile, debugfile and syslog itself"
        );
        assert_eq!(
            diags[26],
            "ha.cf:27: warning: 'autojoin any' is ignored: only the listed `node`s are members; add a `node` line for each member"
        );
    }

    #[test]
    fn stonith_lines_become_fence_devices() {
        let (d, diags) = run("stonith baytech /etc/ha.d/conf/stonith.baytech\n\
             stonith_host * external/ipmi peer 192.0.2.50 admin secret lan\n\
             stonith_host Dir1 null dir2\nstonith_host\nstonith only-a-type\n");
        assert_eq!(diags.len(), 2, "{diags:#?}");
        assert!(
            diags[0].starts_with("ha.cf:4: stonith_host takes"),
            "{diags:?}"
        );
        assert!(diags[1].starts_with("ha.cf:5: stonith takes"), "{diags:?}");
        let devices: Vec<_> = d
            .fence_devices
            .iter()
            .map(|a| (a.value.clone(), a.loc.line))
            .collect();
        let glue = |from: Option<&str>, plugin: &str, params: GlueParams| FenceDevice {
            from: from.map(str::to_string),
            kind: FenceKind::Glue {
                plugin: plugin.into(),
                params,
            },
        };
        assert_eq!(
            devices,
            [
                (
                    glue(
                        None,
                        "baytech",
                        GlueParams::File("/etc/ha.d/conf/stonith.baytech".into())
                    ),
                    Some(1)
                ),
                (
                    glue(
                        None,
                        "external/ipmi",
                        GlueParams::Inline("peer 192.0.2.50 admin secret lan".into())
                    ),
                    Some(2)
                ),
                (
                    glue(Some("dir1"), "null", GlueParams::Inline("dir2".into())),
                    Some(3)
                ),
            ]
        );
    }

    #[test]
    fn errors_are_collected() {
        let (_, diags) = run(
            "keepalive fast\nkeepalive 1 2\nkeepaliv 2\ncrm respawn\npacemaker on\nbaud 1200\nmcast eth0 10.0.0.1 694 1 0\n\
             mcast eth0 239.0.0.1 694 1\nmcast eth0 239.0.0.1 x 300 2\nucast eth0 peerhost\nucast eth0 2001:db8::1\nauto_failback maybe\n\
             nice_failback on\nmsgfmt xml\ndebug 300\nlogfacility local9\napiauth x foo=1\nudpport 0\nrealtime maybe\nping_group g\nbogus 1\ncrm\nhopfudge 300\nmcast6 eth0 ff12::1 694\n",
        );
        let all = diags.join("\n");
        for want in [
            "ha.cf:1: keepalive: 'fast' is not a time value",
            "ha.cf:2: keepalive takes exactly one value, got 2",
            "ha.cf:3: unknown directive 'keepaliv'; did you mean 'keepalive'?",
            "ha.cf:4: 'crm respawn' asks for Pacemaker, which hbd does not run",
            "ha.cf:5: 'pacemaker on' asks for Pacemaker",
            "ha.cf:6: baud 1200 is not a serial speed heartbeat supports; use one of 9600, 19200",
            "ha.cf:8: mcast takes 5 values, got 4",
            "ha.cf:9: mcast port 'x' is not a port number",
            "ha.cf:9: mcast ttl '300' is not in 1-255",
            "ha.cf:9: mcast loop '2' must be 0 or 1",
            "ha.cf:10: ucast peer 'peerhost' is not an IPv4 address; hbd does not resolve names",
            "ha.cf:11: ucast peer '2001:db8::1' is not an IPv4 address; use `ucast6` for IPv6",
            "ha.cf:12: auto_failback 'maybe' is unknown; use on, off or legacy",
            "ha.cf:14: msgfmt 'xml' is unknown",
            "ha.cf:15: debug: '300' is not a number in 0-255",
            "ha.cf:16: 'local9' is not a syslog facility",
            "ha.cf:17: apiauth: 'foo=1' is neither uid=... nor gid=...",
            "ha.cf:18: udpport 0 is not usable",
            "ha.cf:19: realtime: 'maybe' is not a boolean",
            "ha.cf:20: ping_group needs at least 2 values",
            "ha.cf:21: unknown directive 'bogus'",
            "ha.cf:22: crm takes one value",
            "ha.cf:23: hopfudge: '300' is not a number in 0-255",
            "ha.cf:24: mcast6 takes 5 values, got 3; write `mcast6 IFACE GROUP PORT TTL LOOP` (e.g. `mcast6 eth0 ff12::1 694 1 0`)",
        ] {
            assert!(all.contains(want), "missing {want} in\n{all}");
        }
        // The group address check in mcast (line 7) is a validation rule (check_medium).
    }

    #[test]
    fn one_clear_error_for_a_bad_value() {
        let (_, diags) = run("ping_group g1 192.0.2.1 2001:db8::1\n");
        assert_eq!(
            diags,
            [
                "ha.cf:1: ping_group address '2001:db8::1' is not an IPv4 address; `ping_group` takes IPv4 addresses only; use `ping6` for IPv6 ping nodes (or `ping_groups` in the YAML form)"
            ]
        );
        let (_, diags) = run("compression lzma\n");
        assert_eq!(
            diags,
            ["ha.cf:1: compression 'lzma' is unknown; use zlib or bz2 (or remove the line)"]
        );
        let (_, diags) = run("compression BZ2\n");
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert!(
            diags[0]
                == "ha.cf:1: warning: 'compression' is ignored: hbd never compresses the heartbeat frames it sends",
            "{diags:?}"
        );
    }

    #[test]
    fn nice_failback_maps() {
        let (d, diags) = run("nice_failback on\n");
        assert_eq!(d.auto_failback.unwrap().value, AutoFailback::Off);
        assert!(
            diags[0].contains("nice_failback is deprecated; it is read as `auto_failback off`")
        );
        let (_, diags) = run("auto_failback on\nnice_failback off\n");
        assert!(
            diags[0].starts_with("ha.cf:2: nice_failback and auto_failback (line 1) are both set")
        );
    }

    #[test]
    fn duplicates_warn() {
        let (d, diags) = run("deadtime 10\ndeadtime 20\n");
        assert_eq!(d.deadtime.unwrap().value, Duration::from_secs(20));
        assert!(
            diags[0].starts_with("ha.cf:2: warning: deadtime is given twice (first on line 1)")
        );
    }

    #[test]
    fn booleans() {
        for t in ["true", "ON", "yes", "Y", "1"] {
            assert_eq!(parse_bool(t), Some(true));
        }
        for f in ["false", "off", "NO", "n", "0"] {
            assert_eq!(parse_bool(f), Some(false));
        }
        assert_eq!(parse_bool("2"), None);
        assert_eq!(parse_auto_failback("Legacy"), Ok(AutoFailback::Legacy));
    }
}
