//! Native YAML configuration: raw serde structures that mirror the file (unknown keys are
//! refused, every value keeps its line), turned into the same [`Draft`] as ha.cf so the same
//! rules apply; and [`to_yaml`], the reverse, for `hactl convert`.
//!
//! The schema is documented key by key in docs/configuration.md.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_saphyr::{FlowMap, FlowSeq, Spanned};

use super::authkeys;
use super::diag::Diagnostic;
use super::hacf::{check_facility, parse_auto_failback, parse_msgfmt};
use super::haresources::parse_resource;
use super::model::*;
use super::source::{Scalar, line_of};
use super::time::{format_duration, parse_duration};
use super::validate::{At, Draft, Loc, respawn_spec};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    cluster: Option<Spanned<String>>,
    #[serde(default)]
    nodes: Vec<Spanned<String>>,
    timing: Option<RawTiming>,
    udp_port: Option<Spanned<u16>>,
    #[serde(default)]
    media: Vec<Spanned<RawMedium>>,
    auth: Option<Spanned<RawAuth>>,
    msgfmt: Option<Spanned<String>>,
    hopfudge: Option<u8>,
    auto_failback: Option<Spanned<Scalar>>,
    #[serde(default)]
    ping: Vec<Spanned<String>>,
    #[serde(default)]
    ping_groups: Vec<Spanned<RawPingGroup>>,
    ping_hysteresis: Option<Spanned<Scalar>>,
    #[serde(default)]
    groups: Vec<Spanned<RawGroup>>,
    logging: Option<Spanned<RawLogging>>,
    #[serde(default)]
    respawn: Vec<Spanned<RawRespawn>>,
    #[serde(default)]
    apiauth: Vec<RawApiAuth>,
    watchdog: Option<PathBuf>,
    director: Option<Spanned<super::director::RawDirector>>,
    vip_announce: Option<Spanned<RawVipAnnounce>>,
    metrics: Option<Spanned<String>>,
    fencing: Option<Spanned<RawFencing>>,
    vrrp: Option<Spanned<super::yaml_vrrp::RawVrrp>>,
}

/// The hook for the `vrrp:` section ([`super::yaml_vrrp`]): a file with it runs VRRP, and
/// takes out of the raw file what VRRP uses, leaving the heartbeat media beside it.
impl RawConfig {
    /// The `vrrp:` section, taken out.
    pub(crate) fn take_vrrp(&mut self) -> Option<Spanned<super::yaml_vrrp::RawVrrp>> {
        self.vrrp.take()
    }

    /// Whether the file lists heartbeat media.
    pub(crate) fn has_media(&self) -> bool {
        !self.media.is_empty()
    }

    /// The `director:` section, taken out.
    pub(crate) fn take_director(&mut self) -> Option<Spanned<super::director::RawDirector>> {
        self.director.take()
    }

    /// The `logging:` section, read and taken out.
    pub(crate) fn take_logging(&mut self, file: &Path, diags: &mut Vec<Diagnostic>) -> Logging {
        self.logging
            .take()
            .map(|l| logging(l, file, diags))
            .unwrap_or_default()
    }
}

/// `logging:` as the model's [`Logging`].
fn logging(l: Spanned<RawLogging>, file: &Path, diags: &mut Vec<Diagnostic>) -> Logging {
    let loc = Loc::new(file, line_of(&l));
    let l = l.value;
    let mut out = Logging {
        file: l.file,
        debug_file: l.debug_file,
        facility: None,
        debug_level: l.debug.unwrap_or(0),
    };
    if let Some(f) = l.facility {
        match check_facility(&f) {
            Ok(f) => out.facility = f,
            Err(e) => diags.push(loc.error(format!("logging.facility: {e}"))),
        }
    }
    out
}

/// `fencing:` either one agent (`agent`, `env`) or a `devices` list, and the settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFencing {
    agent: Option<PathBuf>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    devices: Vec<Spanned<RawFenceDevice>>,
    action: Option<FenceAction>,
    timeout: Option<Scalar>,
    attempts: Option<u32>,
}

/// One fence device: an `agent` (with `env`) or a cluster-glue `stonith` plugin (with
/// inline `params` or a `config_file`), for the node `from` (every node when absent).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFenceDevice {
    from: Option<String>,
    agent: Option<PathBuf>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    stonith: Option<String>,
    params: Option<String>,
    config_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVipAnnounce {
    count: Option<u32>,
    interval: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTiming {
    keepalive: Option<Spanned<Scalar>>,
    deadtime: Option<Spanned<Scalar>>,
    warntime: Option<Spanned<Scalar>>,
    initdead: Option<Spanned<Scalar>>,
    deadping: Option<Spanned<Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawMedium {
    Ucast(RawUcast),
    Mcast(RawMcast),
    Bcast(RawBcast),
    Serial(RawSerial),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUcast {
    interface: String,
    peer: String,
    port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMcast {
    interface: String,
    group: String,
    port: Option<u16>,
    ttl: Option<u8>,
    #[serde(rename = "loop")]
    loopback: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBcast {
    interface: String,
    port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSerial {
    device: PathBuf,
    baud: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    active: Option<u8>,
    keys: Option<Vec<Spanned<RawKey>>>,
    authkeys: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: u8,
    method: String,
    key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPingGroup {
    name: String,
    addresses: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    preferred: String,
    resources: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogging {
    file: Option<PathBuf>,
    debug_file: Option<PathBuf>,
    facility: Option<String>,
    debug: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRespawn {
    user: String,
    command: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiAuth {
    client: String,
    #[serde(default)]
    uids: Vec<String>,
    #[serde(default)]
    gids: Vec<String>,
}

/// Parses YAML text into the raw structure, or one diagnostic at the line serde-saphyr names.
pub(crate) fn parse_raw(text: &str, file: &Path) -> Result<RawConfig, Diagnostic> {
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options::<RawConfig>(text, options).map_err(|e| {
        let e = e.without_snippet();
        let line = e
            .location()
            .map(|l| l.line())
            .filter(|l| *l > 0)
            .map(|l| usize::try_from(l).unwrap_or(usize::MAX));
        let mut msg = e.to_string();
        // serde-saphyr appends " at line L, column C"; the line is in the prefix already.
        if let Some(i) = msg.find(" at line ") {
            msg.truncate(i);
        }
        Diagnostic::error(
            file,
            line,
            format!("{msg}; see docs/configuration.md for the YAML schema"),
        )
    })
}

/// Where the keys come from.
pub(crate) enum AuthSource {
    /// Inline keys: the YAML file itself holds secrets.
    Inline,
    /// An authkeys file to read (already resolved against the YAML file's directory).
    File(PathBuf, Loc),
    /// None given, or broken (already reported).
    Missing,
}

/// Turns the raw structure into a draft; keys are filled inline, or the authkeys file to read
/// is returned.
pub(crate) fn to_draft(raw: RawConfig, file: &Path) -> (Draft, AuthSource, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut d = Draft::new(file);
    let at = |line: Option<usize>| Loc::new(file, line);

    d.cluster = raw.cluster.map(|c| c.value);
    for n in &raw.nodes {
        d.nodes
            .push(At::new(n.value.to_ascii_lowercase(), at(line_of(n))));
    }
    if let Some(t) = raw.timing {
        for (name, value) in [
            ("keepalive", t.keepalive),
            ("deadtime", t.deadtime),
            ("warntime", t.warntime),
            ("initdead", t.initdead),
            ("deadping", t.deadping),
        ] {
            if let Some(v) = value {
                let loc = at(line_of(&v));
                match parse_duration(&v.value.0) {
                    Ok(dur) => {
                        if let Some(slot) = d.timer_mut(name) {
                            *slot = Some(At::new(dur, loc));
                        }
                    }
                    Err(e) => diags.push(loc.error(format!("timing.{name}: {e}"))),
                }
            }
        }
    }
    if let Some(p) = &raw.udp_port {
        if p.value == 0 {
            diags.push(at(line_of(p)).error("udp_port 0 is not usable; use 694 (ha-cluster)"));
        } else {
            d.udp_port = p.value;
        }
    }
    let ip = |text: &str, loc: &Loc, what: &str, diags: &mut Vec<Diagnostic>| match text
        .parse::<IpAddr>()
    {
        Ok(a) => Some(a),
        Err(_) => {
            diags.push(loc.error(format!(
                "{what} '{text}' is not an IP address; hbd does not resolve names, write the address"
            )));
            None
        }
    };
    for m in raw.media {
        let loc = at(line_of(&m));
        let spec = match m.value {
            RawMedium::Ucast(u) => {
                ip(&u.peer, &loc, "ucast peer", &mut diags).map(|peer| MediumSpec::Ucast {
                    interface: u.interface,
                    peer,
                    port: u.port.unwrap_or(d.udp_port),
                })
            }
            RawMedium::Mcast(u) => {
                ip(&u.group, &loc, "mcast group", &mut diags).map(|group| MediumSpec::Mcast {
                    interface: u.interface,
                    group,
                    port: u.port.unwrap_or(d.udp_port),
                    ttl: u.ttl.unwrap_or(1),
                    loopback: u.loopback.unwrap_or(false),
                })
            }
            RawMedium::Bcast(b) => Some(MediumSpec::Bcast {
                interface: b.interface,
                port: b.port.unwrap_or(d.udp_port),
            }),
            RawMedium::Serial(s) => Some(MediumSpec::Serial {
                device: s.device,
                baud: s.baud.unwrap_or(DEFAULT_BAUD),
            }),
        };
        if let Some(spec) = spec {
            d.media.push(At::new(spec, loc));
        }
    }

    let mut source = AuthSource::Missing;
    match raw.auth {
        None => diags.push(at(None).error(
            "no `auth` section; add `auth: { active: 1, keys: [ { id: 1, method: sha256, key: \"SECRET\" } ] }` or `auth: { authkeys: /etc/ha.d/authkeys }`",
        )),
        Some(a) => {
            let loc = at(line_of(&a));
            let a = a.value;
            match (a.authkeys, a.keys) {
                (Some(_), Some(_)) => diags.push(loc.error(
                    "auth gives both `authkeys` and `keys`; keep one of them",
                )),
                (Some(path), None) => {
                    if a.active.is_some() {
                        diags.push(loc.error(
                            "auth.active goes with inline keys; with `authkeys`, the file's `auth N` line chooses the key; remove `active`",
                        ));
                    }
                    let path = if path.is_relative() {
                        file.parent().unwrap_or(Path::new(".")).join(path)
                    } else {
                        path
                    };
                    source = AuthSource::File(path, loc);
                }
                (None, None) => diags.push(loc.error(
                    "auth has neither `keys` nor `authkeys`; add `keys: [ { id: 1, method: sha256, key: \"SECRET\" } ]`",
                )),
                (None, Some(keys)) => {
                    if let Some(k) = inline_keys(a.active, &keys, &loc, file, &mut diags) {
                        d.auth = Some(k);
                        source = AuthSource::Inline;
                    }
                }
            }
        }
    }

    if let Some(m) = raw.msgfmt {
        match parse_msgfmt(&m.value) {
            Ok(f) => d.msgfmt = f,
            Err(e) => diags.push(at(line_of(&m)).error(e.to_string())),
        }
    }
    if let Some(h) = raw.hopfudge {
        d.hopfudge = h;
    }
    if let Some(a) = raw.auto_failback {
        let loc = at(line_of(&a));
        match parse_auto_failback(&a.value.0) {
            Ok(v) => d.auto_failback = Some(At::new(v, loc)),
            Err(e) => diags.push(loc.error(e.to_string())),
        }
    }
    for p in &raw.ping {
        let loc = at(line_of(p));
        if let Some(a) = ip(&p.value, &loc, "ping node", &mut diags) {
            d.ping_nodes.push(At::new(a, loc));
        }
    }
    for g in raw.ping_groups {
        let loc = at(line_of(&g));
        let addresses = g
            .value
            .addresses
            .iter()
            .filter_map(|a| ip(a, &loc, "ping_group address", &mut diags))
            .collect();
        d.ping_groups.push(At::new(
            PingGroup {
                name: g.value.name.to_ascii_lowercase(),
                addresses,
            },
            loc,
        ));
    }
    if let Some(h) = &raw.ping_hysteresis {
        let loc = at(line_of(h));
        match parse_duration(&h.value.0) {
            Ok(v) => d.ping_hysteresis = Some(At::new(v, loc)),
            Err(e) => diags.push(loc.error(format!("ping_hysteresis: {e}"))),
        }
    }
    for g in raw.groups {
        let loc = at(line_of(&g));
        let mut resources = Vec::new();
        for r in &g.value.resources {
            match parse_resource(r) {
                Ok(r) => resources.push(r),
                Err(e) => diags.push(loc.error(e.to_string())),
            }
        }
        d.groups.push(At::new(
            GroupSpec {
                preferred: g.value.preferred.to_ascii_lowercase(),
                resources,
            },
            loc,
        ));
    }
    if let Some(l) = raw.logging {
        d.logging = logging(l, file, &mut diags);
    }
    for r in raw.respawn {
        let loc = at(line_of(&r));
        let r = r.value;
        if r.command.is_empty() {
            diags.push(loc.error(
                "respawn entry has an empty command; write `command: [/path/to/program, ARGS...]`",
            ));
        } else if let Some(r) = respawn_spec(&r.user, &r.command, &loc, &mut diags) {
            d.respawn.push(At::new(r, loc));
        }
    }
    d.apiauth = raw
        .apiauth
        .into_iter()
        .map(|a| ApiAuth {
            client: a.client,
            uids: a.uids,
            gids: a.gids,
        })
        .collect();
    d.watchdog = raw.watchdog;
    if let Some(a) = &raw.vip_announce {
        let loc = Loc::new(file, line_of(a));
        if let Some(count) = a.value.count {
            if count > 100 {
                diags.push(loc.error(format!(
                    "vip_announce count {count} is too many; switches dislike ARP storms: use 1-10"
                )));
            } else {
                d.vip_announce.count = count;
            }
        }
        if let Some(w) = &a.value.interval {
            match parse_duration(&w.0) {
                Ok(i) if !i.is_zero() => d.vip_announce.interval = i,
                _ => diags.push(loc.error(format!(
                    "vip_announce interval '{}' is not a duration; write e.g. 200ms",
                    w.0
                ))),
            }
        }
    }
    if let Some(m) = &raw.metrics {
        d.metrics = metrics_address(&m.value, &Loc::new(file, line_of(m)), &mut diags);
    }
    if let Some(f) = raw.fencing {
        fencing(f, file, &mut d, &mut diags);
    }
    if let Some(dir) = &raw.director {
        use super::director::{ServiceNames, YamlDirector, from_yaml};
        d.director = match from_yaml(dir, file, &ServiceNames::builtin(), &mut diags) {
            // The file is read by `load_yaml`, which fills `config`.
            Some(YamlDirector::File(path, _)) => Some(DirectorSpec {
                ldirectord_cf: Some(path),
                config: Default::default(),
            }),
            Some(YamlDirector::Inline(config)) => Some(DirectorSpec {
                ldirectord_cf: None,
                config,
            }),
            None => None,
        };
    }
    (d, source, diags)
}

/// Reads `fencing:` into the draft's devices and settings.
fn fencing(f: Spanned<RawFencing>, file: &Path, d: &mut Draft, diags: &mut Vec<Diagnostic>) {
    let loc = Loc::new(file, line_of(&f));
    let f = f.value;
    if let Some(agent) = f.agent {
        let device = FenceDevice {
            from: None,
            kind: FenceKind::Agent {
                path: agent,
                params: f.env.into_iter().collect(),
            },
        };
        d.fence_devices.push(At::new(device, loc.clone()));
    } else if !f.env.is_empty() {
        diags.push(loc.error(
            "fencing `env` goes with `agent`; add `agent: PATH` or move `env` into a device",
        ));
    }
    for dev in f.devices {
        let dloc = Loc::new(file, line_of(&dev));
        let dev = dev.value;
        let from = dev
            .from
            .map(|n| n.to_ascii_lowercase())
            .filter(|n| n != "*");
        let kind = match (dev.agent, dev.stonith) {
            (Some(path), None) if dev.params.is_none() && dev.config_file.is_none() => {
                FenceKind::Agent {
                    path,
                    params: dev.env.into_iter().collect(),
                }
            }
            (None, Some(plugin)) if dev.env.is_empty() => match (dev.params, dev.config_file) {
                (Some(p), None) => FenceKind::Glue {
                    plugin,
                    params: GlueParams::Inline(p),
                },
                (None, Some(file)) => FenceKind::Glue {
                    plugin,
                    params: GlueParams::File(file),
                },
                (None, None) => FenceKind::Glue {
                    plugin,
                    params: GlueParams::Inline(String::new()),
                },
                (Some(_), Some(_)) => {
                    diags.push(
                        dloc.error("a stonith device takes `params` or `config_file`, not both"),
                    );
                    continue;
                }
            },
            _ => {
                diags.push(dloc.error(
                    "a fence device is either `agent: PATH` (with `env`) or `stonith: TYPE` (with `params` or `config_file`)",
                ));
                continue;
            }
        };
        d.fence_devices
            .push(At::new(FenceDevice { from, kind }, dloc));
    }
    if d.fence_devices.is_empty() {
        diags.push(loc.error(
            "fencing names no device; add `agent: PATH` or a `devices:` list, or remove `fencing`",
        ));
    }
    if let Some(a) = f.action {
        d.fence_action = a;
    }
    if let Some(t) = f.timeout {
        match parse_duration(&t.0) {
            Ok(t) if !t.is_zero() => d.fence_timeout = t,
            _ => diags.push(loc.error(format!(
                "fencing timeout '{}' is not a duration; write e.g. 30s",
                t.0
            ))),
        }
    }
    if let Some(n) = f.attempts {
        d.fence_attempts = n;
    }
}

/// The `metrics` listen address: `ADDR:PORT` (IPv6 as `[ADDR]:PORT`), a port other than 0.
fn metrics_address(
    text: &str,
    loc: &Loc,
    diags: &mut Vec<Diagnostic>,
) -> Option<std::net::SocketAddr> {
    match text.trim().parse::<std::net::SocketAddr>() {
        Ok(a) if a.port() != 0 => Some(a),
        Ok(_) => {
            diags.push(loc.error(format!(
                "metrics '{text}' has port 0; pick a fixed port, e.g. 127.0.0.1:9694"
            )));
            None
        }
        Err(_) => {
            diags.push(loc.error(format!(
                "metrics '{text}' is not ADDR:PORT; write e.g. 127.0.0.1:9694 or [::1]:9694"
            )));
            None
        }
    }
}

/// Inline `auth.keys`: the same rules as an authkeys file ([`authkeys::assemble`]); with a
/// single key, `active` may be left out.
fn inline_keys(
    active: Option<u8>,
    keys: &[Spanned<RawKey>],
    auth_loc: &Loc,
    file: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Option<AuthKeys> {
    let ids: Vec<String> = keys.iter().map(|k| k.value.id.to_string()).collect();
    let entries: Vec<authkeys::KeyEntry<'_>> = keys
        .iter()
        .zip(&ids)
        .map(|(k, id)| authkeys::KeyEntry {
            index: id,
            method: Some(&k.value.method),
            secret: k.value.key.as_deref(),
            loc: Loc::new(file, line_of(k)),
        })
        .collect();
    let signing = match (active, keys) {
        (Some(index), _) => authkeys::Signing::Named {
            index,
            loc: auth_loc.clone(),
            written: format!("`auth.active: {index}`"),
        },
        (None, [only]) => authkeys::Signing::Named {
            index: only.value.id,
            loc: auth_loc.clone(),
            written: format!("the only key, id {},", only.value.id),
        },
        (None, _) => authkeys::Signing::Missing(Some(
            auth_loc
                .error("auth.active is missing; name the key id that signs outbound heartbeats"),
        )),
    };
    authkeys::assemble(&entries, signing, diags)
}

/// The header `hactl convert` puts above the YAML: the file holds secrets.
const HEADER: &str = "# hbd configuration (docs/configuration.md).\n\
# It holds the authentication keys inline: store it with mode 0600 (`chmod 600 FILE`);\n\
# hbd refuses to load a file that group or others can read.\n";

/// A [`Config`] could not be written as YAML.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the configuration as YAML: {0}")]
pub struct ToYamlError(#[from] serde_saphyr::SerializeError);

/// Writes `config` as native YAML, keys inline; [`super::load_yaml`] reads it back to an equal
/// [`Config`]. The output holds secrets: the operator must store it with mode 0600.
pub fn to_yaml(config: &Config) -> Result<String, ToYamlError> {
    Ok(format!(
        "{HEADER}{}",
        serde_saphyr::to_string(&FileForm::of(config))?
    ))
}

/// The native file's shape for writing: the keys [`RawConfig`] reads, in the order the
/// documentation gives them, defaults left out where the reader supplies them.
#[derive(Serialize)]
struct FileForm<'a> {
    cluster: &'a str,
    nodes: FlowSeq<&'a [String]>,
    timing: TimingForm,
    media: Vec<MediumForm<'a>>,
    auth: AuthForm,
    msgfmt: &'static str,
    hopfudge: u8,
    auto_failback: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ping: Option<FlowSeq<Vec<String>>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ping_groups: Vec<FlowMap<PingGroupForm<'a>>>,
    /// Written only when it is not the default (2 × deadping).
    #[serde(skip_serializing_if = "Option::is_none")]
    ping_hysteresis: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    groups: Vec<GroupForm<'a>>,
    logging: LoggingForm<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    respawn: Vec<FlowMap<RespawnForm<'a>>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    apiauth: Vec<FlowMap<ApiAuthForm<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    watchdog: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vip_announce: Option<FlowMap<VipAnnounceForm>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    director: Option<DirectorForm<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fencing: Option<FencingForm<'a>>,
}

#[derive(Serialize)]
struct FencingForm<'a> {
    devices: Vec<FlowMap<FenceDeviceForm<'a>>>,
    action: FenceAction,
    timeout: String,
    attempts: u32,
}

#[derive(Serialize)]
struct FenceDeviceForm<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<&'a Path>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stonith: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_file: Option<&'a Path>,
}

impl<'a> FencingForm<'a> {
    fn of(f: &'a FencingSpec) -> FencingForm<'a> {
        let devices = f
            .devices
            .iter()
            .map(|d| {
                let mut form = FenceDeviceForm {
                    from: d.from.as_deref(),
                    agent: None,
                    env: BTreeMap::new(),
                    stonith: None,
                    params: None,
                    config_file: None,
                };
                match &d.kind {
                    FenceKind::Agent { path, params } => {
                        form.agent = Some(path);
                        form.env = params
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                            .collect();
                    }
                    FenceKind::Glue { plugin, params } => {
                        form.stonith = Some(plugin);
                        match params {
                            GlueParams::Inline(p) => form.params = Some(p),
                            GlueParams::File(file) => form.config_file = Some(file),
                        }
                    }
                }
                FlowMap(form)
            })
            .collect();
        FencingForm {
            devices,
            action: f.action,
            timeout: format_duration(f.timeout),
            attempts: f.attempts,
        }
    }
}

/// Durations as heartbeat writes them (`10ms`, `2s`), which the reader parses back.
#[derive(Serialize)]
struct TimingForm {
    keepalive: String,
    deadtime: String,
    warntime: String,
    initdead: String,
    deadping: String,
}

#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum MediumForm<'a> {
    Ucast(FlowMap<UcastForm<'a>>),
    Mcast(FlowMap<McastForm<'a>>),
    Bcast(FlowMap<BcastForm<'a>>),
    Serial(FlowMap<SerialForm<'a>>),
}

#[derive(Serialize)]
struct UcastForm<'a> {
    interface: &'a str,
    peer: String,
    port: u16,
}

#[derive(Serialize)]
struct McastForm<'a> {
    interface: &'a str,
    group: String,
    port: u16,
    ttl: u8,
    #[serde(rename = "loop")]
    loopback: bool,
}

#[derive(Serialize)]
struct BcastForm<'a> {
    interface: &'a str,
    port: u16,
}

#[derive(Serialize)]
struct SerialForm<'a> {
    device: &'a Path,
    baud: u32,
}

#[derive(Serialize)]
struct AuthForm {
    active: u8,
    keys: Vec<FlowMap<KeyForm>>,
}

#[derive(Serialize)]
struct KeyForm {
    id: u8,
    method: &'static str,
    /// Absent for `crc`, which has no secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

#[derive(Serialize)]
struct PingGroupForm<'a> {
    name: &'a str,
    addresses: Vec<String>,
}

#[derive(Serialize)]
struct GroupForm<'a> {
    preferred: &'a str,
    resources: FlowSeq<Vec<&'a str>>,
}

#[derive(Serialize)]
struct LoggingForm<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    debug_file: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    facility: Option<&'a str>,
    debug: u8,
}

#[derive(Serialize)]
struct RespawnForm<'a> {
    user: &'a str,
    command: &'a [String],
}

#[derive(Serialize)]
struct ApiAuthForm<'a> {
    client: &'a str,
    uids: &'a [String],
    gids: &'a [String],
}

#[derive(Serialize)]
struct VipAnnounceForm {
    count: u32,
    interval: String,
}

/// `director:` either names its ldirectord.cf or holds the services inline.
#[derive(Serialize)]
#[serde(untagged)]
enum DirectorForm<'a> {
    File { ldirectord_cf: &'a Path },
    Inline(super::director::DirectorFileForm<'a>),
}

impl<'a> FileForm<'a> {
    fn of(c: &'a Config) -> FileForm<'a> {
        let t = &c.timing;
        let strings = |items: &[IpAddr]| items.iter().map(ToString::to_string).collect();
        FileForm {
            cluster: &c.cluster_name,
            nodes: FlowSeq(&c.nodes),
            timing: TimingForm {
                keepalive: format_duration(t.keepalive),
                deadtime: format_duration(t.deadtime),
                warntime: format_duration(t.warntime),
                initdead: format_duration(t.initdead),
                deadping: format_duration(t.deadping),
            },
            media: c.media.iter().map(MediumForm::of).collect(),
            auth: AuthForm {
                active: c.auth.active,
                keys: c
                    .auth
                    .keys
                    .iter()
                    .map(|(&id, k)| {
                        FlowMap(KeyForm {
                            id,
                            method: k.method.as_str(),
                            key: (k.method != AuthMethod::Crc)
                                .then(|| String::from_utf8_lossy(&k.secret).into_owned()),
                        })
                    })
                    .collect(),
            },
            msgfmt: c.msgfmt.as_str(),
            hopfudge: c.hopfudge,
            auto_failback: c.auto_failback.as_str(),
            ping: (!c.ping_nodes.is_empty()).then(|| FlowSeq(strings(&c.ping_nodes))),
            ping_groups: c
                .ping_groups
                .iter()
                .map(|g| {
                    FlowMap(PingGroupForm {
                        name: &g.name,
                        addresses: strings(&g.addresses),
                    })
                })
                .collect(),
            ping_hysteresis: (c.ping_hysteresis != default_ping_hysteresis(t.deadping))
                .then(|| format_duration(c.ping_hysteresis)),
            groups: c
                .groups
                .iter()
                .map(|g| GroupForm {
                    preferred: &g.preferred,
                    resources: FlowSeq(g.resources.iter().map(|r| r.spec.as_str()).collect()),
                })
                .collect(),
            logging: LoggingForm {
                file: c.logging.file.as_deref(),
                debug_file: c.logging.debug_file.as_deref(),
                facility: c.logging.facility.as_deref(),
                debug: c.logging.debug_level,
            },
            respawn: c
                .respawn
                .iter()
                .map(|r| {
                    FlowMap(RespawnForm {
                        user: &r.user,
                        command: &r.command,
                    })
                })
                .collect(),
            apiauth: c
                .apiauth
                .iter()
                .map(|a| {
                    FlowMap(ApiAuthForm {
                        client: &a.client,
                        uids: &a.uids,
                        gids: &a.gids,
                    })
                })
                .collect(),
            watchdog: c.watchdog.as_deref(),
            vip_announce: (c.vip_announce != VipAnnounce::default()).then(|| {
                FlowMap(VipAnnounceForm {
                    count: c.vip_announce.count,
                    interval: format_duration(c.vip_announce.interval),
                })
            }),
            director: c.director.as_ref().map(|d| match &d.ldirectord_cf {
                Some(path) => DirectorForm::File {
                    ldirectord_cf: path,
                },
                None => DirectorForm::Inline(super::director::DirectorFileForm::of(&d.config)),
            }),
            metrics: c.metrics.map(|a| a.to_string()),
            fencing: c.fencing.as_ref().map(FencingForm::of),
        }
    }
}

impl<'a> MediumForm<'a> {
    fn of(m: &'a MediumSpec) -> MediumForm<'a> {
        match m {
            MediumSpec::Ucast {
                interface,
                peer,
                port,
            } => MediumForm::Ucast(FlowMap(UcastForm {
                interface,
                peer: peer.to_string(),
                port: *port,
            })),
            MediumSpec::Mcast {
                interface,
                group,
                port,
                ttl,
                loopback,
            } => MediumForm::Mcast(FlowMap(McastForm {
                interface,
                group: group.to_string(),
                port: *port,
                ttl: *ttl,
                loopback: *loopback,
            })),
            MediumSpec::Bcast { interface, port } => MediumForm::Bcast(FlowMap(BcastForm {
                interface,
                port: *port,
            })),
            MediumSpec::Serial { device, baud } => MediumForm::Serial(FlowMap(SerialForm {
                device,
                baud: *baud,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(text: &str) -> (Draft, Vec<String>) {
        let raw = parse_raw(text, Path::new("hbd.yaml")).expect("parses");
        let (d, _, diags) = to_draft(raw, Path::new("hbd.yaml"));
        (d, diags.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn schema_example() {
        let (d, diags) = draft(
            r#"
cluster: linux-ha
nodes: [LoadBalancer, backup]
timing: { keepalive: 10ms, deadtime: 30ms, warntime: 20ms, initdead: 1s, deadping: 30ms }
udp_port: 700
media:
  - ucast: { interface: eth0, peer: 192.0.2.12 }
  - mcast: { interface: eth0, group: 239.0.2.94, port: 694, ttl: 1, loop: false }
  - bcast: { interface: eth0 }
  - serial: { device: /dev/ttyS0, baud: 38400 }
auth:
  active: 1
  keys: [ { id: 1, method: sha256, key: "secret" }, { id: 2, method: crc } ]
msgfmt: netstring
auto_failback: off
ping: [192.0.2.1]
ping_groups: [ { name: group1, addresses: [192.0.2.1, 192.0.2.2] } ]
groups:
  - preferred: loadbalancer
    resources: [lvs, "IPaddr::192.0.2.10/24/eth0", ipvsadm, ldirectord]
logging: { file: /var/log/hbd.log, facility: local0, debug: 2 }
respawn: [ { user: root, command: [/usr/bin/x, -a] } ]
apiauth: [ { client: ipfail, uids: [root], gids: [root] } ]
watchdog: /dev/watchdog
hopfudge: 2
"#,
        );
        assert_eq!(diags.len(), 1, "{diags:?}"); // the crc warning
        assert!(
            diags[0].starts_with("hbd.yaml:13: warning: key 2 uses crc"),
            "{diags:?}"
        );
        assert_eq!(d.nodes[0].value, "loadbalancer");
        assert_eq!(d.nodes[0].loc.line, Some(3));
        assert_eq!(d.keepalive.unwrap().value.as_millis(), 10);
        assert_eq!(d.initdead.unwrap().value.as_millis(), 1000);
        assert_eq!(
            d.media[0].value,
            MediumSpec::Ucast {
                interface: "eth0".into(),
                peer: "192.0.2.12".parse().unwrap(),
                port: 700
            }
        );
        assert_eq!(d.media[0].loc.line, Some(7));
        assert_eq!(
            d.media[3].value,
            MediumSpec::Serial {
                device: "/dev/ttyS0".into(),
                baud: 38400
            }
        );
        assert_eq!(d.auth.unwrap().keys.len(), 2);
        assert_eq!(d.msgfmt, MsgFormat::Netstring);
        assert_eq!(d.auto_failback.unwrap().value, AutoFailback::Off);
        assert_eq!(d.groups[0].value.resources[1].kind, "IPaddr");
        assert_eq!(d.groups[0].loc.line, Some(19));
        assert_eq!(d.logging.debug_level, 2);
        assert_eq!(d.hopfudge, 2);
    }

    #[test]
    fn numbers_as_seconds_and_booleans() {
        let (d, diags) = draft(
            "timing: { keepalive: 1, deadtime: 2.5 }\nauto_failback: true\nauth: { authkeys: keys }\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(d.keepalive.unwrap().value.as_millis(), 1000);
        assert_eq!(d.deadtime.unwrap().value.as_millis(), 2500);
        assert_eq!(d.auto_failback.unwrap().value, AutoFailback::On);
    }

    #[test]
    fn unknown_keys_name_the_line() {
        let e = parse_raw(
            "nodes: [a]\ntiming:\n  keepalive: 1\n  deadtme: 3\n",
            Path::new("hbd.yaml"),
        )
        .expect_err("unknown key");
        let s = e.to_string();
        assert!(s.starts_with("hbd.yaml:4: "), "{s}");
        assert!(s.contains("deadtme"), "{s}");
        let e = parse_raw(
            "media:\n  - tcp: { interface: eth0 }\n",
            Path::new("hbd.yaml"),
        )
        .expect_err("bad medium");
        assert!(e.to_string().starts_with("hbd.yaml:2: "), "{e}");
    }

    #[test]
    fn hopfudge_beyond_a_byte_is_refused_at_its_line() {
        let e = parse_raw("nodes: [a]\nhopfudge: 300\n", Path::new("hbd.yaml"))
            .expect_err("hopfudge is 0-255");
        assert!(e.to_string().starts_with("hbd.yaml:2: "), "{e}");
    }

    #[test]
    fn ping_hysteresis_is_a_top_level_time() {
        let (d, diags) = draft("ping_hysteresis: 300ms\nauth: { authkeys: keys }\n");
        assert!(diags.is_empty(), "{diags:?}");
        let h = d.ping_hysteresis.unwrap();
        assert_eq!(
            (h.value, h.loc.line),
            (std::time::Duration::from_millis(300), Some(1))
        );
        let (d, diags) = draft("ping_hysteresis: later\nauth: { authkeys: keys }\n");
        assert!(d.ping_hysteresis.is_none());
        assert!(
            diags[0].starts_with("hbd.yaml:1: ping_hysteresis: 'later' is not a time value"),
            "{diags:?}"
        );
    }

    #[test]
    fn ipfail_is_not_respawned() {
        let (d, diags) = draft(
            "respawn:\n  - { user: hacluster, command: [/usr/lib/heartbeat/ipfail] }\n  - { user: root, command: [/usr/bin/x] }\nauth: { authkeys: keys }\n",
        );
        assert_eq!(d.respawn.len(), 1);
        assert_eq!(d.respawn[0].value.command, ["/usr/bin/x"]);
        assert!(
            diags
                == [
                    "hbd.yaml:2: note: ipfail is built into hbd (ping nodes/groups drive failover); it is not started, and this line can go"
                ],
            "{diags:?}"
        );
    }

    #[test]
    fn inline_keys_follow_the_authkeys_rules() {
        let (d, diags) = draft(
            "auth:\n  active: 1\n  keys:\n    - { id: 16, method: md5, key: x }\n    - { id: 1, method: sha1, key: \"a b\" }\n    - { id: 2, method: sha1, key: a }\n    - { id: 2, method: sha1, key: b }\n",
        );
        assert!(d.auth.is_none());
        let all = diags.join("\n");
        for want in [
            "hbd.yaml:4: '16' is not a key index; use a number from 0 to 15",
            "hbd.yaml:5: key 1: the secret contains whitespace",
            "hbd.yaml:7: key index 2 is defined twice (first on line 6)",
        ] {
            assert!(all.contains(want), "missing {want} in\n{all}");
        }
        let (d, diags) =
            draft("auth: { active: 3, keys: [ { id: 1, method: sha256, key: k } ] }\n");
        assert!(d.auth.is_none());
        assert!(
            diags[0].starts_with("hbd.yaml:1: `auth.active: 3` names key 3, which is not defined"),
            "{diags:?}"
        );
        let (d, diags) = draft("auth: { keys: [ { id: 4, method: sha256, key: k } ] }\n");
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(d.auth.expect("one key signs").active, 4);
    }

    #[test]
    fn value_errors_name_the_line() {
        let (_, diags) = draft(
            "timing:\n  keepalive: fast\nmedia:\n  - ucast: { interface: eth0, peer: host }\nauth:\n  keys: [ { id: 1, method: des, key: x }, { id: 2, method: md5 } ]\n\
             auto_failback: sometimes\nmsgfmt: xml\nlogging: { facility: local9 }\ngroups: [ { preferred: a, resources: [\"::x\"] } ]\n",
        );
        let all = diags.join("\n");
        for want in [
            "hbd.yaml:2: timing.keepalive: 'fast' is not a time value",
            "hbd.yaml:4: ucast peer 'host' is not an IP address",
            "hbd.yaml:6: 'des' is not an authentication method",
            "hbd.yaml:6: key 2: md5 needs a secret",
            "hbd.yaml:7: auto_failback 'sometimes' is unknown",
            "hbd.yaml:8: msgfmt 'xml' is unknown",
            "hbd.yaml:9: logging.facility: 'local9' is not a syslog facility",
            "hbd.yaml:10: resource '::x' has no script name",
        ] {
            assert!(all.contains(want), "missing {want} in\n{all}");
        }
    }

    #[test]
    fn metrics_is_an_address_with_a_port() {
        // Only the metrics diagnostics matter here (the snippets have no auth section).
        let about = |diags: Vec<String>| -> Vec<String> {
            diags
                .into_iter()
                .filter(|d| d.contains("metrics"))
                .collect()
        };
        let (d, diags) = draft("metrics: 127.0.0.1:9694\n");
        assert!(about(diags).is_empty());
        assert_eq!(d.metrics, Some("127.0.0.1:9694".parse().unwrap()));
        let (d, diags) = draft("metrics: \"[::1]:9694\"\n");
        assert!(about(diags).is_empty());
        assert_eq!(d.metrics, Some("[::1]:9694".parse().unwrap()));
        let (d, _) = draft("nodes: [a]\n");
        assert_eq!(d.metrics, None, "off by default");
        let (_, diags) = draft("nodes: [a]\nmetrics: localhost:9694\n");
        assert_eq!(
            about(diags),
            [
                "hbd.yaml:2: metrics 'localhost:9694' is not ADDR:PORT; write e.g. 127.0.0.1:9694 or [::1]:9694"
            ]
        );
        let (_, diags) = draft("metrics: 0.0.0.0:0\n");
        assert!(about(diags)[0].contains("has port 0"));
    }
}
