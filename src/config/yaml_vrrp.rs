//! The YAML `vrrp:` section: VRRP chosen as the cluster's membership backend in hbd's own
//! file, and [`keepalived_to_yaml`], the way a keepalived.conf becomes such a file
//! (`hactl convert --keepalived-conf`).
//!
//! The section's keys are keepalived's words (`virtual_router_id`, `advert_int`,
//! `track_script`, …) so a keepalived user recognises them. Each entry becomes the
//! statement keepalived.conf would have (at the YAML line it was written on) and goes through
//! the keepalived builder ([`super::keepalived::build_statements`]): both front doors give
//! the same [`KeepalivedConfig`] and refuse the same mistakes. The `director:` section (the
//! ldirectord form) holds the virtual servers. With `media:` the heartbeat media run beside
//! VRRP as a second liveness path, as `--keepalived-conf` with `--config` does.
//!
//! docs/configuration.md ("The YAML `vrrp:` section") lists every key.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_saphyr::{FlowMap, FlowSeq, Spanned};

use super::diag::Diagnostic;
use super::keepalived::{KeepalivedConfig, Stmt, build_statements};
use super::model::{Config, Logging};
use super::source::{Scalar, line_of, parse_bool};
use super::time::{format_duration, parse_duration};
use crate::vrrp::config::{InstanceSpec, NotifySpec, TrackSpec, VipSpec, VrrpConfig};
use crate::vrrp::packet::{Auth, MCAST_V4, MCAST_V6, Version};
use crate::vrrp::state::{GarpConfig, InitialState};

/// The `vrrp:` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVrrp {
    router_id: Option<Spanned<String>>,
    version: Option<Spanned<Scalar>>,
    mcast_group4: Option<Spanned<String>>,
    mcast_group6: Option<Spanned<String>>,
    script_security: Option<Spanned<Scalar>>,
    garp: Option<Spanned<RawGarp>>,
    #[serde(default)]
    scripts: Vec<Spanned<RawScript>>,
    #[serde(default)]
    instances: Vec<Spanned<RawInstance>>,
    #[serde(default)]
    sync_groups: Vec<Spanned<RawSyncGroup>>,
}

/// Announcements after becoming master (keepalived's `garp_master_*`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGarp {
    delay: Option<Spanned<Scalar>>,
    repeat: Option<Spanned<Scalar>>,
    refresh: Option<Spanned<Scalar>>,
    refresh_repeat: Option<Spanned<Scalar>>,
    lower_prio_repeat: Option<Spanned<Scalar>>,
}

/// One `vrrp_script`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    name: String,
    script: Spanned<String>,
    interval: Option<Spanned<Scalar>>,
    timeout: Option<Spanned<Scalar>>,
    weight: Option<Spanned<Scalar>>,
    fall: Option<Spanned<Scalar>>,
    rise: Option<Spanned<Scalar>>,
    init_fail: Option<Spanned<Scalar>>,
}

/// One `vrrp_instance`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    name: String,
    interface: Spanned<String>,
    virtual_router_id: Spanned<Scalar>,
    priority: Option<Spanned<Scalar>>,
    advert_int: Option<Spanned<Scalar>>,
    state: Option<Spanned<String>>,
    version: Option<Spanned<Scalar>>,
    preempt: Option<Spanned<Scalar>>,
    preempt_delay: Option<Spanned<Scalar>>,
    auth_pass: Option<Spanned<String>>,
    virtual_ipaddress: Spanned<Vec<Spanned<RawVip>>>,
    #[serde(default)]
    virtual_ipaddress_excluded: Vec<Spanned<RawVip>>,
    unicast_src_ip: Option<Spanned<String>>,
    mcast_src_ip: Option<Spanned<String>>,
    unicast_peer: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    track_interface: Vec<Spanned<RawTrack>>,
    #[serde(default)]
    track_script: Vec<Spanned<RawTrack>>,
    notify: Option<Spanned<RawNotify>>,
    garp: Option<Spanned<RawGarp>>,
}

/// A virtual address: `"ADDR[/LEN]"`, or a map with its options.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawVip {
    Address(String),
    Full(RawVipFull),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVipFull {
    address: String,
    dev: Option<String>,
    label: Option<String>,
    scope: Option<String>,
}

/// A tracked interface or script: its name, or `{ name, weight }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawTrack {
    Name(String),
    Weighted(RawWeighted),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeighted {
    name: String,
    weight: i32,
}

/// Notify scripts: `notify_master` … and keepalived's `notify` (`any`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    master: Option<String>,
    backup: Option<String>,
    fault: Option<String>,
    stop: Option<String>,
    any: Option<String>,
}

/// One `vrrp_sync_group`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyncGroup {
    name: String,
    group: Vec<String>,
    notify: Option<Spanned<RawNotify>>,
}

/// What a YAML file with a `vrrp:` section runs.
#[derive(Debug, Clone, PartialEq)]
pub struct VrrpYaml {
    /// The VRRP instances, sync groups and scripts, and the director's virtual servers:
    /// the model `--keepalived-conf` builds.
    pub keepalived: KeepalivedConfig,
    /// The heartbeat media beside VRRP (`nodes`, `media`, `auth`, `timing`), when the file
    /// has `media`.
    pub heartbeat: Option<Config>,
    /// Where log lines go (`logging:`).
    pub logging: Logging,
}

/// Top-level keys that only a heartbeat configuration uses: with `vrrp:` the instances
/// decide who holds what, so these would be silently ignored; they are refused instead.
const NOT_WITH_VRRP: [(&str, &str); 12] = [
    (
        "groups",
        "each vrrp instance (or sync group) drives the group of its addresses and the director; remove `groups`",
    ),
    (
        "auto_failback",
        "VRRP decides by priority and `preempt`; remove it",
    ),
    (
        "ping",
        "track the uplink with a vrrp script or track_interface instead",
    ),
    (
        "ping_groups",
        "track the uplink with a vrrp script or track_interface instead",
    ),
    (
        "ping_hysteresis",
        "track the uplink with a vrrp script instead (its `fall` and `rise`)",
    ),
    ("respawn", "run the program from systemd beside hbd"),
    ("apiauth", "remove it"),
    ("watchdog", "remove it"),
    (
        "vip_announce",
        "the instance's `garp` settings say how a master announces its addresses",
    ),
    ("metrics", "remove it"),
    ("fencing", "remove it"),
    ("hopfudge", "remove it"),
];

/// Top-level keys that describe the heartbeat media beside VRRP: they need `media`.
const HEARTBEAT_KEYS: [&str; 5] = ["nodes", "timing", "auth", "udp_port", "msgfmt"];

/// The 1-based line of a top-level key (written at the start of a line), if present.
fn top_level_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|n| n + 1)
}

/// Refuses the top-level keys a VRRP file cannot use, and the heartbeat keys without media.
pub(crate) fn check_top_level(
    text: &str,
    file: &Path,
    has_media: bool,
    diags: &mut Vec<Diagnostic>,
) {
    for (key, fix) in NOT_WITH_VRRP {
        if let Some(line) = top_level_line(text, key) {
            diags.push(Diagnostic::error(
                file,
                Some(line),
                format!("`{key}` is not used when the file has a `vrrp:` section: {fix}"),
            ));
        }
    }
    if !has_media {
        for key in HEARTBEAT_KEYS {
            if let Some(line) = top_level_line(text, key) {
                diags.push(Diagnostic::error(
                    file,
                    Some(line),
                    format!("`{key}` describes the heartbeat media beside VRRP, but the file has no `media`; add `media:` (and `nodes`, `auth`) for a second liveness path, or remove `{key}`"),
                ));
            }
        }
    }
}

/// Builds the VRRP model from the `vrrp:` section (its statements through the keepalived
/// builder, see the module docs).
pub(crate) fn build(
    raw: Spanned<RawVrrp>,
    file: &Path,
    diags: &mut Vec<Diagnostic>,
) -> KeepalivedConfig {
    let section_line = line_of(&raw).unwrap_or(1);
    let v = raw.value;
    let mut w = Writer {
        file,
        diags,
        section_line,
    };
    let mut stmts = Vec::new();
    let mut global = Vec::new();
    if let Some(r) = v.router_id {
        global.push(Stmt::at(w.line(&r), "router_id", vec![r.value]));
    }
    if let Some(x) = &v.version {
        global.push(Stmt::at(w.line(x), "vrrp_version", vec![x.value.0.clone()]));
    }
    for (key, g) in [
        ("vrrp_mcast_group4", &v.mcast_group4),
        ("vrrp_mcast_group6", &v.mcast_group6),
    ] {
        if let Some(g) = g {
            global.push(Stmt::at(w.line(g), key, vec![g.value.clone()]));
        }
    }
    if let Some(s) = &v.script_security
        && w.flag(s, "vrrp.script_security")
    {
        global.push(Stmt::at(w.line(s), "enable_script_security", Vec::new()));
    }
    if let Some(g) = &v.garp {
        w.garp(g, "vrrp_", "vrrp.garp", &mut global);
    }
    if !global.is_empty() {
        stmts.push(Stmt::at(section_line, "global_defs", Vec::new()).with_block(global));
    }
    for s in &v.scripts {
        stmts.push(w.script(s));
    }
    for i in &v.instances {
        if let Some(st) = w.instance(i) {
            stmts.push(st);
        }
    }
    for g in &v.sync_groups {
        let line = w.line(g);
        let g = &g.value;
        let mut block = vec![
            Stmt::at(line, "group", Vec::new()).with_block(
                g.group
                    .iter()
                    .map(|m| Stmt::at(line, m, Vec::new()))
                    .collect(),
            ),
        ];
        if let Some(n) = &g.notify {
            notify(&n.value, w.line(n), &mut block);
        }
        stmts.push(Stmt::at(line, "vrrp_sync_group", vec![g.name.clone()]).with_block(block));
    }
    if v.instances.is_empty() {
        w.diags.push(Diagnostic::error(
            file,
            Some(section_line),
            "vrrp has no instances; add `instances: [ { name, interface, virtual_router_id, virtual_ipaddress } ]`",
        ));
    }
    let (config, d) = build_statements(file, &stmts);
    w.diags.extend(d);
    config
}

/// Writes statements for the builder, reporting what only the YAML can get wrong.
struct Writer<'a> {
    file: &'a Path,
    diags: &'a mut Vec<Diagnostic>,
    section_line: usize,
}

impl Writer<'_> {
    fn line<T>(&self, s: &Spanned<T>) -> usize {
        line_of(s).unwrap_or(self.section_line)
    }

    fn error(&mut self, line: usize, msg: String) {
        self.diags
            .push(Diagnostic::error(self.file, Some(line), msg));
    }

    /// A duration in hbd's syntax (`50ms`, `0.05`, `1s`) as keepalived's seconds.
    fn seconds(&mut self, s: &Spanned<Scalar>, what: &str) -> Option<String> {
        match parse_duration(&s.value.0) {
            Ok(d) => Some(seconds_text(d)),
            Err(e) => {
                let line = self.line(s);
                self.error(line, format!("{what}: {e}"));
                None
            }
        }
    }

    fn flag(&mut self, s: &Spanned<Scalar>, what: &str) -> bool {
        match parse_bool(&s.value.0) {
            Some(b) => b,
            None => {
                let line = self.line(s);
                self.error(
                    line,
                    format!("{what}: '{}' is not true or false", s.value.0),
                );
                false
            }
        }
    }

    /// A keyword with a duration, when it parses.
    fn timed(&mut self, key: &str, s: &Option<Spanned<Scalar>>, what: &str, out: &mut Vec<Stmt>) {
        if let Some(s) = s
            && let Some(t) = self.seconds(s, what)
        {
            out.push(Stmt::at(self.line(s), key, vec![t]));
        }
    }

    /// A keyword with a number (or any word the builder checks itself).
    fn word(&self, key: &str, s: &Option<Spanned<Scalar>>, out: &mut Vec<Stmt>) {
        if let Some(s) = s {
            out.push(Stmt::at(self.line(s), key, vec![s.value.0.clone()]));
        }
    }

    fn garp(&mut self, g: &Spanned<RawGarp>, prefix: &str, what: &str, out: &mut Vec<Stmt>) {
        let r = &g.value;
        self.timed(
            &format!("{prefix}garp_master_delay"),
            &r.delay,
            &format!("{what}.delay"),
            out,
        );
        self.word(&format!("{prefix}garp_master_repeat"), &r.repeat, out);
        match &r.refresh {
            // `off` (or false) is no refresh, as 0 is.
            Some(s) if parse_bool(&s.value.0) == Some(false) => {
                out.push(Stmt::at(
                    self.line(s),
                    &format!("{prefix}garp_master_refresh"),
                    vec!["0".into()],
                ));
            }
            refresh => self.timed(
                &format!("{prefix}garp_master_refresh"),
                refresh,
                &format!("{what}.refresh"),
                out,
            ),
        }
        self.word(
            &format!("{prefix}garp_master_refresh_repeat"),
            &r.refresh_repeat,
            out,
        );
        self.word(
            &format!("{prefix}garp_lower_prio_repeat"),
            &r.lower_prio_repeat,
            out,
        );
    }

    fn script(&mut self, s: &Spanned<RawScript>) -> Stmt {
        let line = self.line(s);
        let r = &s.value;
        let what = format!("vrrp script {}", r.name);
        let mut block = vec![Stmt::at(
            self.line(&r.script),
            "script",
            vec![r.script.value.clone()],
        )];
        self.timed(
            "interval",
            &r.interval,
            &format!("{what}: interval"),
            &mut block,
        );
        self.timed(
            "timeout",
            &r.timeout,
            &format!("{what}: timeout"),
            &mut block,
        );
        self.word("weight", &r.weight, &mut block);
        self.word("fall", &r.fall, &mut block);
        self.word("rise", &r.rise, &mut block);
        if let Some(f) = &r.init_fail
            && self.flag(f, &format!("{what}: init_fail"))
        {
            block.push(Stmt::at(self.line(f), "init_fail", Vec::new()));
        }
        Stmt::at(line, "vrrp_script", vec![r.name.clone()]).with_block(block)
    }

    fn instance(&mut self, s: &Spanned<RawInstance>) -> Option<Stmt> {
        let line = self.line(s);
        let r = &s.value;
        let what = format!("vrrp instance {}", r.name);
        let mut b = vec![
            Stmt::at(
                self.line(&r.interface),
                "interface",
                vec![r.interface.value.clone()],
            ),
            Stmt::at(
                self.line(&r.virtual_router_id),
                "virtual_router_id",
                vec![r.virtual_router_id.value.0.clone()],
            ),
        ];
        if let Some(st) = &r.state {
            b.push(Stmt::at(
                self.line(st),
                "state",
                vec![st.value.to_ascii_uppercase()],
            ));
        }
        self.word("priority", &r.priority, &mut b);
        self.timed(
            "advert_int",
            &r.advert_int,
            &format!("{what}: advert_int"),
            &mut b,
        );
        self.word("version", &r.version, &mut b);
        if let Some(p) = &r.preempt
            && !self.flag(p, &format!("{what}: preempt"))
        {
            b.push(Stmt::at(self.line(p), "nopreempt", Vec::new()));
        }
        self.timed(
            "preempt_delay",
            &r.preempt_delay,
            &format!("{what}: preempt_delay"),
            &mut b,
        );
        if let Some(p) = &r.auth_pass {
            let l = self.line(p);
            b.push(Stmt::at(l, "authentication", Vec::new()).with_block(vec![
                Stmt::at(l, "auth_type", vec!["PASS".into()]),
                Stmt::at(l, "auth_pass", vec![p.value.clone()]),
            ]));
        }
        let vips = |list: &[Spanned<RawVip>], w: &Writer<'_>| -> Vec<Stmt> {
            list.iter()
                .map(|v| {
                    let l = w.line(v);
                    match &v.value {
                        RawVip::Address(a) => Stmt::at(l, a, Vec::new()),
                        RawVip::Full(f) => {
                            let mut args = Vec::new();
                            for (k, x) in
                                [("dev", &f.dev), ("label", &f.label), ("scope", &f.scope)]
                            {
                                if let Some(x) = x {
                                    args.extend([k.to_string(), x.clone()]);
                                }
                            }
                            Stmt::at(l, &f.address, args)
                        }
                    }
                })
                .collect()
        };
        let l = self.line(&r.virtual_ipaddress);
        b.push(
            Stmt::at(l, "virtual_ipaddress", Vec::new())
                .with_block(vips(&r.virtual_ipaddress.value, self)),
        );
        if !r.virtual_ipaddress_excluded.is_empty() {
            let l = self.line(&r.virtual_ipaddress_excluded[0]);
            b.push(
                Stmt::at(l, "virtual_ipaddress_excluded", Vec::new())
                    .with_block(vips(&r.virtual_ipaddress_excluded, self)),
            );
        }
        for (key, a) in [
            ("unicast_src_ip", &r.unicast_src_ip),
            ("mcast_src_ip", &r.mcast_src_ip),
        ] {
            if let Some(a) = a {
                b.push(Stmt::at(self.line(a), key, vec![a.value.clone()]));
            }
        }
        if let Some(p) = &r.unicast_peer {
            let l = self.line(p);
            b.push(
                Stmt::at(l, "unicast_peer", Vec::new()).with_block(
                    p.value
                        .iter()
                        .map(|a| Stmt::at(self.line(a), &a.value, Vec::new()))
                        .collect(),
                ),
            );
        }
        for (key, list) in [
            ("track_interface", &r.track_interface),
            ("track_script", &r.track_script),
        ] {
            if let Some(first) = list.first() {
                let l = self.line(first);
                let items = list
                    .iter()
                    .map(|t| {
                        let l = self.line(t);
                        match &t.value {
                            RawTrack::Name(n) => Stmt::at(l, n, Vec::new()),
                            RawTrack::Weighted(x) => {
                                Stmt::at(l, &x.name, vec!["weight".into(), x.weight.to_string()])
                            }
                        }
                    })
                    .collect();
                b.push(Stmt::at(l, key, Vec::new()).with_block(items));
            }
        }
        if let Some(n) = &r.notify {
            notify(&n.value, self.line(n), &mut b);
        }
        if let Some(g) = &r.garp {
            self.garp(g, "", &format!("{what}: garp"), &mut b);
        }
        Some(Stmt::at(line, "vrrp_instance", vec![r.name.clone()]).with_block(b))
    }
}

/// The notify scripts as keepalived's `notify_*` lines.
fn notify(n: &RawNotify, line: usize, out: &mut Vec<Stmt>) {
    for (key, cmd) in [
        ("notify_master", &n.master),
        ("notify_backup", &n.backup),
        ("notify_fault", &n.fault),
        ("notify_stop", &n.stop),
        ("notify", &n.any),
    ] {
        if let Some(c) = cmd {
            out.push(Stmt::at(line, key, vec![c.clone()]));
        }
    }
}

/// A duration as keepalived's decimal seconds, exact to the microsecond.
fn seconds_text(d: Duration) -> String {
    let micros = d.as_micros();
    let (s, frac) = (micros / 1_000_000, micros % 1_000_000);
    if frac == 0 {
        s.to_string()
    } else {
        let f = format!("{frac:06}");
        format!("{s}.{}", f.trim_end_matches('0'))
    }
}

// ---------------------------------------------------------------------------------------------
// Writing: a keepalived.conf's model as hbd YAML (`hactl convert --keepalived-conf`).

/// The header `hactl convert --keepalived-conf` puts above the YAML.
const HEADER: &str = "# hbd configuration with VRRP as the membership backend (docs/configuration.md,\n\
# \"The YAML vrrp: section\"), converted from a keepalived.conf. Run it with\n\
# `hbd --config FILE`; add `nodes`, `media` and `auth` for heartbeat media beside VRRP.\n";

/// A keepalived model could not be written as YAML.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the VRRP configuration as YAML: {0}")]
pub struct VrrpYamlError(#[from] serde_saphyr::SerializeError);

/// Writes a keepalived.conf's model as hbd YAML (`vrrp:` and `director:`); loading it back
/// ([`super::load_yaml_any`]) gives an equal [`KeepalivedConfig`] (the instances' `origin`
/// aside: it names the YAML line then).
pub fn keepalived_to_yaml(config: &KeepalivedConfig) -> Result<String, VrrpYamlError> {
    let form = FileForm {
        vrrp: VrrpForm::of(&config.vrrp),
        director: config
            .director
            .as_ref()
            .map(super::director::DirectorFileForm::of),
    };
    Ok(format!("{HEADER}{}", serde_saphyr::to_string(&form)?))
}

#[derive(Serialize)]
struct FileForm<'a> {
    vrrp: VrrpForm<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    director: Option<super::director::DirectorFileForm<'a>>,
}

#[derive(Serialize)]
struct VrrpForm<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    router_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mcast_group4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mcast_group6: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    script_security: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    garp: Option<FlowMap<GarpForm>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    scripts: Vec<ScriptForm<'a>>,
    instances: Vec<InstanceForm<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sync_groups: Vec<SyncGroupForm<'a>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize, PartialEq)]
struct GarpForm {
    delay: String,
    repeat: u32,
    refresh: String,
    refresh_repeat: u32,
    lower_prio_repeat: u32,
}

impl GarpForm {
    fn of(g: &GarpConfig) -> GarpForm {
        GarpForm {
            delay: format_duration(g.delay),
            repeat: g.repeat,
            refresh: g.refresh.map_or_else(|| "off".to_string(), format_duration),
            refresh_repeat: g.refresh_repeat,
            lower_prio_repeat: g.lower_prio_repeat,
        }
    }
}

#[derive(Serialize)]
struct ScriptForm<'a> {
    name: &'a str,
    script: &'a str,
    interval: String,
    timeout: String,
    weight: i32,
    fall: u32,
    rise: u32,
    #[serde(skip_serializing_if = "is_false")]
    init_fail: bool,
}

#[derive(Serialize)]
struct InstanceForm<'a> {
    name: &'a str,
    interface: &'a str,
    virtual_router_id: u8,
    state: &'static str,
    priority: u8,
    advert_int: String,
    version: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    preempt: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preempt_delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_pass: Option<String>,
    virtual_ipaddress: Vec<VipForm<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    virtual_ipaddress_excluded: Vec<VipForm<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unicast_src_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mcast_src_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unicast_peer: Option<FlowSeq<Vec<String>>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    track_interface: Vec<TrackForm<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    track_script: Vec<TrackForm<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notify: Option<NotifyForm<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    garp: Option<FlowMap<GarpForm>>,
}

/// A virtual address: the bare `ADDR/LEN`, or a map when it has options.
#[derive(Serialize)]
#[serde(untagged)]
enum VipForm<'a> {
    Address(String),
    Full(FlowMap<VipFullForm<'a>>),
}

#[derive(Serialize)]
struct VipFullForm<'a> {
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    dev: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

impl<'a> VipForm<'a> {
    fn of(v: &'a VipSpec) -> VipForm<'a> {
        let address = format!("{}/{}", v.addr, v.prefix);
        if v.dev.is_none() && v.label.is_none() && v.scope.is_none() {
            VipForm::Address(address)
        } else {
            VipForm::Full(FlowMap(VipFullForm {
                address,
                dev: v.dev.as_deref(),
                label: v.label.as_deref(),
                scope: v.scope.as_deref(),
            }))
        }
    }
}

/// A tracked item: its name, or `{ name, weight }` when the weight is not the default.
#[derive(Serialize)]
#[serde(untagged)]
enum TrackForm<'a> {
    Name(&'a str),
    Weighted(FlowMap<WeightedForm<'a>>),
}

#[derive(Serialize)]
struct WeightedForm<'a> {
    name: &'a str,
    weight: i32,
}

impl<'a> TrackForm<'a> {
    fn of(t: &'a TrackSpec, default: i32) -> TrackForm<'a> {
        if t.weight == default {
            TrackForm::Name(&t.name)
        } else {
            TrackForm::Weighted(FlowMap(WeightedForm {
                name: &t.name,
                weight: t.weight,
            }))
        }
    }
}

#[derive(Serialize)]
struct NotifyForm<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    master: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backup: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fault: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    any: Option<&'a str>,
}

impl<'a> NotifyForm<'a> {
    fn of(n: &'a NotifySpec) -> Option<NotifyForm<'a>> {
        (*n != NotifySpec::default()).then_some(NotifyForm {
            master: n.master.as_deref(),
            backup: n.backup.as_deref(),
            fault: n.fault.as_deref(),
            stop: n.stop.as_deref(),
            any: n.any.as_deref(),
        })
    }
}

#[derive(Serialize)]
struct SyncGroupForm<'a> {
    name: &'a str,
    group: FlowSeq<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notify: Option<NotifyForm<'a>>,
}

impl<'a> VrrpForm<'a> {
    fn of(v: &'a VrrpConfig) -> VrrpForm<'a> {
        // Instance-wide settings that came from global_defs go back there when every
        // instance shares them.
        let shared = |f: &dyn Fn(&InstanceSpec) -> Option<IpAddr>| {
            let mut it = v.instances.iter().filter_map(f);
            let first = it.next()?;
            it.all(|x| x == first).then_some(first)
        };
        let group4 = shared(&|i| (!i.is_ipv6()).then_some(i.mcast_group))
            .filter(|g| *g != IpAddr::V4(MCAST_V4));
        let group6 = shared(&|i| i.is_ipv6().then_some(i.mcast_group))
            .filter(|g| *g != IpAddr::V6(MCAST_V6));
        let garp = v
            .instances
            .first()
            .map(|i| i.garp)
            .filter(|g| v.instances.iter().all(|i| i.garp == *g));
        let global_garp = garp.unwrap_or_default();
        VrrpForm {
            router_id: v.router_id.as_deref(),
            mcast_group4: group4.map(|g| g.to_string()),
            mcast_group6: group6.map(|g| g.to_string()),
            script_security: v.script_security,
            garp: garp
                .filter(|g| *g != GarpConfig::default())
                .map(|g| FlowMap(GarpForm::of(&g))),
            scripts: v
                .scripts
                .iter()
                .map(|s| ScriptForm {
                    name: &s.name,
                    script: &s.command,
                    interval: format_duration(s.interval),
                    timeout: format_duration(s.timeout),
                    weight: s.weight,
                    fall: s.fall,
                    rise: s.rise,
                    init_fail: s.init_fail,
                })
                .collect(),
            instances: v
                .instances
                .iter()
                .map(|i| InstanceForm {
                    name: &i.name,
                    interface: &i.interface,
                    virtual_router_id: i.vrid,
                    state: match i.initial {
                        InitialState::Master => "MASTER",
                        InitialState::Backup => "BACKUP",
                    },
                    priority: i.priority,
                    advert_int: format_duration(i.advert_int),
                    version: match i.version {
                        Version::V2 => 2,
                        Version::V3 => 3,
                    },
                    preempt: (!i.preempt).then_some(false),
                    preempt_delay: (!i.preempt_delay.is_zero())
                        .then(|| format_duration(i.preempt_delay)),
                    auth_pass: match i.auth {
                        Auth::None => None,
                        Auth::Pass(b) => Some(
                            String::from_utf8_lossy(&b)
                                .trim_end_matches('\0')
                                .to_string(),
                        ),
                    },
                    virtual_ipaddress: i.vips.iter().map(VipForm::of).collect(),
                    virtual_ipaddress_excluded: i.excluded_vips.iter().map(VipForm::of).collect(),
                    unicast_src_ip: i
                        .src_ip
                        .filter(|_| !i.unicast_peers.is_empty())
                        .map(|a| a.to_string()),
                    mcast_src_ip: i
                        .src_ip
                        .filter(|_| i.unicast_peers.is_empty())
                        .map(|a| a.to_string()),
                    unicast_peer: (!i.unicast_peers.is_empty()).then(|| {
                        FlowSeq(i.unicast_peers.iter().map(ToString::to_string).collect())
                    }),
                    track_interface: i
                        .track_interfaces
                        .iter()
                        .map(|t| TrackForm::of(t, 0))
                        .collect(),
                    track_script: i
                        .track_scripts
                        .iter()
                        .map(|t| TrackForm::of(t, v.script(&t.name).map_or(0, |s| s.weight)))
                        .collect(),
                    notify: NotifyForm::of(&i.notify),
                    garp: (i.garp != global_garp).then(|| FlowMap(GarpForm::of(&i.garp))),
                })
                .collect(),
            sync_groups: v
                .sync_groups
                .iter()
                .map(|g| SyncGroupForm {
                    name: &g.name,
                    group: FlowSeq(&g.members),
                    notify: NotifyForm::of(&g.notify),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
