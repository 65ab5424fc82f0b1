//! Native YAML configuration: raw serde structures that mirror the file (unknown keys are
//! refused, every value keeps its line), turned into the same [`Draft`] as ha.cf so the same
//! rules apply; and [`to_yaml`], the reverse, for `hactl convert`.
//!
//! The schema is documented key by key in docs/configuration.md.

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_saphyr::Spanned;

use super::authkeys;
use super::diag::Diagnostic;
use super::hacf::{check_facility, parse_auto_failback, parse_msgfmt};
use super::haresources::parse_resource;
use super::model::*;
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
    #[serde(default)]
    groups: Vec<Spanned<RawGroup>>,
    logging: Option<Spanned<RawLogging>>,
    #[serde(default)]
    respawn: Vec<Spanned<RawRespawn>>,
    #[serde(default)]
    apiauth: Vec<RawApiAuth>,
    watchdog: Option<PathBuf>,
    director: Option<Spanned<crate::director::config::RawDirector>>,
    vip_announce: Option<Spanned<RawVipAnnounce>>,
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

/// A YAML scalar kept as text, so `3`, `"3"`, `yes` and `true` reach the same parser:
/// durations may be written `10ms`, `1.5` or `2`, and `auto_failback` as `on` or `true`.
/// YAML 1.1 reads `on`/`off` (and `yes`/`no`) as booleans; they come back as `on`/`off`,
/// which every boolean setting accepts (and which the director's `checktype: on|off` means).
/// Shared with the `director:` section.
#[derive(Debug, Clone)]
pub(crate) struct Scalar(pub(crate) String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(if v { "on" } else { "off" }.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The 1-based line a spanned YAML value was written on, when serde-saphyr knows it.
pub(crate) fn line_of<T>(s: &Spanned<T>) -> Option<usize> {
    let l = s.referenced.line();
    (l > 0).then(|| usize::try_from(l).unwrap_or(usize::MAX))
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
            Err(e) => diags.push(at(line_of(&m)).error(e)),
        }
    }
    if let Some(h) = raw.hopfudge {
        d.hopfudge = h;
    }
    if let Some(a) = raw.auto_failback {
        let loc = at(line_of(&a));
        match parse_auto_failback(&a.value.0) {
            Ok(v) => d.auto_failback = Some(At::new(v, loc)),
            Err(e) => diags.push(loc.error(e)),
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
    for g in raw.groups {
        let loc = at(line_of(&g));
        let mut resources = Vec::new();
        for r in &g.value.resources {
            match parse_resource(r) {
                Ok(r) => resources.push(r),
                Err(e) => diags.push(loc.error(e)),
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
        let loc = at(line_of(&l));
        let l = l.value;
        d.logging.file = l.file;
        d.logging.debug_file = l.debug_file;
        d.logging.debug_level = l.debug.unwrap_or(0);
        if let Some(f) = l.facility {
            match check_facility(&f) {
                Ok(f) => d.logging.facility = f,
                Err(e) => diags.push(loc.error(format!("logging.facility: {e}"))),
            }
        }
    }
    for r in raw.respawn {
        let loc = at(line_of(&r));
        let r = r.value;
        if r.command.is_empty() {
            diags.push(loc.error(
                "respawn entry has an empty command; write `command: [/path/to/program, ARGS...]`",
            ));
        } else if let Some(r) = respawn_spec(&r.user, &r.command, &loc, &mut diags) {
            d.respawn.push(r);
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
    if let Some(dir) = &raw.director {
        use crate::director::config::{ServiceNames, YamlDirector, from_yaml};
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

/// Quotes `s` as a YAML double-quoted string (JSON string syntax is valid YAML).
pub(crate) fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{}\"", s.escape_default()))
}

fn qp(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(|i| quote(&i.to_string())).collect();
    format!("[{}]", parts.join(", "))
}

/// Writes `config` as native YAML, keys inline; [`super::load_yaml`] reads it back to an equal
/// [`Config`]. The output holds secrets: the operator must store it with mode 0600.
pub fn to_yaml(config: &Config) -> String {
    let mut o = String::new();
    let c = config;
    // Writing into a String cannot fail.
    let _ = writeln!(
        o,
        "# hbd configuration (docs/configuration.md).\n\
         # It holds the authentication keys inline: store it with mode 0600 (`chmod 600 FILE`);\n\
         # hbd refuses to load a file that group or others can read."
    );
    let _ = writeln!(o, "cluster: {}", quote(&c.cluster_name));
    let _ = writeln!(o, "nodes: {}", list(&c.nodes));
    let t = &c.timing;
    let _ = writeln!(o, "timing:");
    for (k, v) in [
        ("keepalive", t.keepalive),
        ("deadtime", t.deadtime),
        ("warntime", t.warntime),
        ("initdead", t.initdead),
        ("deadping", t.deadping),
    ] {
        let _ = writeln!(o, "  {k}: {}", format_duration(v));
    }
    let _ = writeln!(o, "media:");
    for m in &c.media {
        let _ = match m {
            MediumSpec::Ucast {
                interface,
                peer,
                port,
            } => writeln!(
                o,
                "  - ucast: {{ interface: {}, peer: {}, port: {port} }}",
                quote(interface),
                quote(&peer.to_string())
            ),
            MediumSpec::Mcast {
                interface,
                group,
                port,
                ttl,
                loopback,
            } => writeln!(
                o,
                "  - mcast: {{ interface: {}, group: {}, port: {port}, ttl: {ttl}, loop: {loopback} }}",
                quote(interface),
                quote(&group.to_string())
            ),
            MediumSpec::Bcast { interface, port } => {
                writeln!(
                    o,
                    "  - bcast: {{ interface: {}, port: {port} }}",
                    quote(interface)
                )
            }
            MediumSpec::Serial { device, baud } => {
                writeln!(o, "  - serial: {{ device: {}, baud: {baud} }}", qp(device))
            }
        };
    }
    let _ = writeln!(o, "auth:\n  active: {}\n  keys:", c.auth.active);
    for (id, k) in &c.auth.keys {
        let _ = match k.method {
            AuthMethod::Crc => writeln!(o, "    - {{ id: {id}, method: crc }}"),
            m => writeln!(
                o,
                "    - {{ id: {id}, method: {}, key: {} }}",
                m.as_str(),
                quote(&String::from_utf8_lossy(&k.secret))
            ),
        };
    }
    let _ = writeln!(o, "msgfmt: {}", c.msgfmt.as_str());
    let _ = writeln!(o, "hopfudge: {}", c.hopfudge);
    let _ = writeln!(o, "auto_failback: {}", quote(c.auto_failback.as_str()));
    if !c.ping_nodes.is_empty() {
        let _ = writeln!(o, "ping: {}", list(&c.ping_nodes));
    }
    if !c.ping_groups.is_empty() {
        let _ = writeln!(o, "ping_groups:");
        for g in &c.ping_groups {
            let _ = writeln!(
                o,
                "  - {{ name: {}, addresses: {} }}",
                quote(&g.name),
                list(&g.addresses)
            );
        }
    }
    if !c.groups.is_empty() {
        let _ = writeln!(o, "groups:");
        for g in &c.groups {
            let specs: Vec<&str> = g.resources.iter().map(|r| r.spec.as_str()).collect();
            let _ = writeln!(
                o,
                "  - preferred: {}\n    resources: {}",
                quote(&g.preferred),
                list(&specs)
            );
        }
    }
    let l = &c.logging;
    let _ = writeln!(o, "logging:");
    if let Some(f) = &l.file {
        let _ = writeln!(o, "  file: {}", qp(f));
    }
    if let Some(f) = &l.debug_file {
        let _ = writeln!(o, "  debug_file: {}", qp(f));
    }
    if let Some(f) = &l.facility {
        let _ = writeln!(o, "  facility: {}", quote(f));
    }
    let _ = writeln!(o, "  debug: {}", l.debug_level);
    if !c.respawn.is_empty() {
        let _ = writeln!(o, "respawn:");
        for r in &c.respawn {
            let _ = writeln!(
                o,
                "  - {{ user: {}, command: {} }}",
                quote(&r.user),
                list(&r.command)
            );
        }
    }
    if !c.apiauth.is_empty() {
        let _ = writeln!(o, "apiauth:");
        for a in &c.apiauth {
            let _ = writeln!(
                o,
                "  - {{ client: {}, uids: {}, gids: {} }}",
                quote(&a.client),
                list(&a.uids),
                list(&a.gids)
            );
        }
    }
    if let Some(w) = &c.watchdog {
        let _ = writeln!(o, "watchdog: {}", qp(w));
    }
    if c.vip_announce != VipAnnounce::default() {
        let _ = writeln!(
            o,
            "vip_announce: {{ count: {}, interval: {} }}",
            c.vip_announce.count,
            format_duration(c.vip_announce.interval)
        );
    }
    if let Some(d) = &c.director {
        let _ = writeln!(o, "director:");
        match &d.ldirectord_cf {
            Some(path) => {
                let _ = writeln!(o, "  ldirectord_cf: {}", qp(path));
            }
            None => o.push_str(&crate::director::config::director_to_yaml(&d.config, 2)),
        }
    }
    o
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
    fn ipfail_is_not_respawned() {
        let (d, diags) = draft(
            "respawn:\n  - { user: hacluster, command: [/usr/lib/heartbeat/ipfail] }\n  - { user: root, command: [/usr/bin/x] }\nauth: { authkeys: keys }\n",
        );
        assert_eq!(d.respawn.len(), 1);
        assert_eq!(d.respawn[0].command, ["/usr/bin/x"]);
        assert!(
            diags[0].starts_with("hbd.yaml:2: warning: ipfail is not started"),
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
}
