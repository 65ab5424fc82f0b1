//! keepalived.conf, read unchanged: VRRP instances, sync groups and scripts into a
//! [`VrrpConfig`], and `virtual_server` blocks into the director's [`DirectorConfig`].
//!
//! The text is read the way keepalived's parser reads it: words separated by blanks, `{` and
//! `}` always words of their own (`unicast_peer{` works), `"…"` one word, a word starting with
//! `#` or `!` begins a comment, and `include PATTERN` (globs, relative to the including file)
//! splices other files in. Every word keeps its `file:line`. A statement is a keyword with
//! the words after it on its line, optionally followed by a `{ … }` block.
//!
//! Keywords hbd does not act on are named in warnings; problems that would make hbd behave
//! differently from the file are errors, each with the fix. docs/configuration.md
//! ("keepalived.conf") lists every keyword.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::diag::{ConfigError, Diagnostic, finish};
use crate::config::director::{
    CheckConfig, CheckType, DirectorConfig, HttpMethod, Protocol, RealConfig, Service,
    VirtualConfig,
};
use crate::config::model::{GroupSpec, ResourceSpec};
use crate::config::source::read_text;
use crate::dataplane::model::{Family, Forwarding, Netmask, Persistence, Scheduler, ServiceKey};
use crate::vrrp::backend::GroupMap;
use crate::vrrp::config::{
    InstanceSpec, NotifySpec, SyncGroupSpec, TrackSpec, VipSpec, VrrpConfig,
};
use crate::vrrp::packet::{Auth, MAX_INTERVAL_CS, Version};
use crate::vrrp::state::{GarpConfig, InitialState, ScriptConfig};

/// How deep `include` may nest (keepalived stops at 8 too).
const MAX_INCLUDE_DEPTH: usize = 8;
/// keepalived's `delay_loop` default.
const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);
/// keepalived's `connect_timeout` default.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a keepalived.conf produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepalivedConfig {
    /// VRRP instances, sync groups and scripts.
    pub vrrp: VrrpConfig,
    /// The virtual servers, when the file has any.
    pub director: Option<DirectorConfig>,
}

/// Where a word came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Loc {
    file: usize,
    line: usize,
}

#[derive(Debug, Clone)]
struct Word {
    text: String,
    loc: Loc,
}

/// One statement: `key args… [{ children }]`.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    key: String,
    args: Vec<String>,
    loc: Loc,
    block: Option<Vec<Stmt>>,
}

impl Stmt {
    /// A statement another front door wrote at `line` of its file (the YAML `vrrp:`
    /// section, [`crate::config::yaml_vrrp`]): `key` with its words, as keepalived would
    /// have split them (a command with blanks is one word, as `"…"` makes it).
    pub(crate) fn at(line: usize, key: &str, args: Vec<String>) -> Stmt {
        Stmt {
            key: key.to_string(),
            args,
            loc: Loc { file: 0, line },
            block: None,
        }
    }

    /// This statement with a `{ … }` block.
    pub(crate) fn with_block(mut self, block: Vec<Stmt>) -> Stmt {
        self.block = Some(block);
        self
    }
}

/// Builds the configuration from statements another front door wrote for `file` (the YAML
/// `vrrp:` section): the same builder and rules as a keepalived.conf, so both give the same
/// model and the same refusals, each diagnostic at the line of `file` the statement names.
pub(crate) fn build_statements(file: &Path, stmts: &[Stmt]) -> (KeepalivedConfig, Vec<Diagnostic>) {
    let mut r = Reader {
        files: vec![file.to_path_buf()],
        diags: Vec::new(),
    };
    let config = build(stmts, &mut r);
    (config, r.diags)
}

/// The reader's state: the files seen, and every diagnostic.
struct Reader {
    files: Vec<PathBuf>,
    diags: Vec<Diagnostic>,
}

impl Reader {
    fn path(&self, loc: &Loc) -> &Path {
        &self.files[loc.file]
    }
    fn error(&mut self, loc: &Loc, msg: impl Into<String>) {
        let d = Diagnostic::error(&self.files[loc.file], Some(loc.line), msg);
        self.diags.push(d);
    }
    fn warn(&mut self, loc: &Loc, msg: impl Into<String>) {
        let d = Diagnostic::warning(&self.files[loc.file], Some(loc.line), msg);
        self.diags.push(d);
    }

    /// Splits one file into words, following `include`s.
    fn words(&mut self, path: &Path, depth: usize, out: &mut Vec<Word>) {
        let Some(text) = read_text(path, "keepalived configuration", &mut self.diags) else {
            return;
        };
        let file = self.files.len();
        self.files.push(path.to_path_buf());
        self.split(&text, file, Some((path, depth)), out);
    }

    /// Splits the text of file number `file` into words. An `include` is followed relative
    /// to `from` (the file read and its include depth); text not read from a file has no
    /// `from`, and there an `include` is an error.
    fn split(
        &mut self,
        text: &str,
        file: usize,
        from: Option<(&Path, usize)>,
        out: &mut Vec<Word>,
    ) {
        for (n, line) in text.lines().enumerate() {
            let loc = Loc { file, line: n + 1 };
            let words = split_line(line);
            if words.first().map(String::as_str) == Some("include") {
                match from {
                    Some((path, depth)) => self.include(&words, &loc, path, depth, out),
                    None => self.error(
                        &loc,
                        "include is not followed when loading from text; load the file instead",
                    ),
                }
                continue;
            }
            out.extend(words.into_iter().map(|text| Word {
                text,
                loc: loc.clone(),
            }));
        }
    }

    fn include(
        &mut self,
        words: &[String],
        loc: &Loc,
        from: &Path,
        depth: usize,
        out: &mut Vec<Word>,
    ) {
        let Some(pattern) = words.get(1) else {
            self.error(
                loc,
                "include without a file; write include PATH (globs allowed)",
            );
            return;
        };
        if depth >= MAX_INCLUDE_DEPTH {
            self.error(
                loc,
                format!("include nested deeper than {MAX_INCLUDE_DEPTH}; look for an include loop"),
            );
            return;
        }
        let base = from.parent().unwrap_or(Path::new("."));
        let full = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            base.join(pattern)
        };
        let matches = glob(&full);
        if matches.is_empty() {
            // keepalived carries on when a glob matches nothing; say so.
            self.warn(
                loc,
                format!(
                    "include {pattern} matches no file ({}); nothing included",
                    full.display()
                ),
            );
        }
        for m in matches {
            self.words(&m, depth + 1, out);
        }
    }
}

/// keepalived's word splitting: blanks separate, braces stand alone, quotes group, a word
/// starting with `#` or `!` ends the line.
fn split_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                for q in chars.by_ref() {
                    if q == '"' {
                        break;
                    }
                    cur.push(q);
                }
                out.push(std::mem::take(&mut cur));
            }
            '{' | '}' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            }
            '#' | '!' if cur.is_empty() => break,
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Files matching `pattern` (`*`, `?` in any component), sorted; a plain path if it exists.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for comp in pattern.components() {
        let part = comp.as_os_str().to_string_lossy().into_owned();
        if !part.contains(['*', '?']) {
            for p in &mut found {
                p.push(comp.as_os_str());
            }
            continue;
        }
        let mut next = Vec::new();
        for dir in &found {
            let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') && wildcard(part.as_bytes(), n.as_bytes()))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        found = next;
    }
    found.retain(|p| p.is_file());
    found
}

/// `*` and `?` matching (no classes).
fn wildcard(pat: &[u8], name: &[u8]) -> bool {
    match (pat.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            wildcard(&pat[1..], name) || (!name.is_empty() && wildcard(pat, &name[1..]))
        }
        (Some(b'?'), Some(_)) => wildcard(&pat[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => wildcard(&pat[1..], &name[1..]),
        _ => false,
    }
}

/// Builds statements from words: a statement is the words of one line (up to a brace); a
/// `{` opens its block, `}` closes the current one.
fn statements(words: &[Word], at: &mut usize, depth: usize, r: &mut Reader) -> Vec<Stmt> {
    let mut out: Vec<Stmt> = Vec::new();
    while *at < words.len() {
        let w = &words[*at];
        match w.text.as_str() {
            "}" => {
                *at += 1;
                if depth == 0 {
                    r.error(&w.loc, "'}' without a matching '{'; remove it");
                    continue;
                }
                return out;
            }
            "{" => {
                // A block with no keyword before it on its line: attach to the last statement
                // (keepalived allows `virtual_ipaddress` and `{` on separate lines).
                *at += 1;
                let children = statements(words, at, depth + 1, r);
                match out.last_mut() {
                    Some(last) if last.block.is_none() => last.block = Some(children),
                    _ => r.error(&w.loc, "'{' without a keyword before it; name the block"),
                }
            }
            _ => {
                let loc = w.loc.clone();
                let key = w.text.clone();
                *at += 1;
                let mut args = Vec::new();
                while *at < words.len()
                    && words[*at].loc == loc
                    && words[*at].text != "{"
                    && words[*at].text != "}"
                {
                    args.push(words[*at].text.clone());
                    *at += 1;
                }
                let mut block = None;
                if *at < words.len() && words[*at].text == "{" && words[*at].loc == loc {
                    *at += 1;
                    block = Some(statements(words, at, depth + 1, r));
                }
                out.push(Stmt {
                    key,
                    args,
                    loc,
                    block,
                });
            }
        }
    }
    if depth > 0 {
        let loc = words
            .last()
            .map(|w| w.loc.clone())
            .unwrap_or(Loc { file: 0, line: 1 });
        r.error(
            &loc,
            "a '{' block is not closed at the end of the file; add the missing '}'",
        );
    }
    out
}

/// Loads a keepalived.conf (and its includes) into VRRP and director configuration.
pub fn load_keepalived(path: &Path) -> Result<(KeepalivedConfig, Vec<Diagnostic>), ConfigError> {
    let mut r = Reader {
        files: Vec::new(),
        diags: Vec::new(),
    };
    let mut words = Vec::new();
    r.words(path, 0, &mut words);
    if r.files.is_empty() {
        return finish(None, r.diags);
    }
    load_words(&words, r)
}

/// Loads keepalived.conf text as [`load_keepalived`] does a file, but reads no file: an
/// `include` is reported as an error instead of followed. `file` only names the diagnostics.
pub fn load_keepalived_str(
    text: &str,
    file: &Path,
) -> Result<(KeepalivedConfig, Vec<Diagnostic>), ConfigError> {
    let mut r = Reader {
        files: vec![file.to_path_buf()],
        diags: Vec::new(),
    };
    let mut words = Vec::new();
    r.split(text, 0, None, &mut words);
    load_words(&words, r)
}

/// The statements the words make, then the configuration, with every diagnostic met.
fn load_words(
    words: &[Word],
    mut r: Reader,
) -> Result<(KeepalivedConfig, Vec<Diagnostic>), ConfigError> {
    let mut at = 0;
    let stmts = statements(words, &mut at, 0, &mut r);
    let config = build(&stmts, &mut r);
    finish(Some(config), r.diags)
}

/// Global settings that instances inherit.
struct Globals {
    router_id: Option<String>,
    mcast4: IpAddr,
    mcast6: IpAddr,
    version: Version,
    garp: GarpConfig,
    script_security: bool,
}

fn build(stmts: &[Stmt], r: &mut Reader) -> KeepalivedConfig {
    let mut g = Globals {
        router_id: None,
        mcast4: InstanceSpec::default_group(false),
        mcast6: InstanceSpec::default_group(true),
        version: Version::V2,
        garp: GarpConfig::default(),
        script_security: false,
    };
    // global_defs first: instances inherit from it wherever it is written.
    for s in stmts.iter().filter(|s| s.key == "global_defs") {
        global_defs(s, &mut g, r);
    }
    let mut scripts = Vec::new();
    for s in stmts.iter().filter(|s| s.key == "vrrp_script") {
        if let Some(sc) = vrrp_script(s, r) {
            if scripts.iter().any(|x: &ScriptConfig| x.name == sc.name) {
                r.error(
                    &s.loc,
                    format!("vrrp_script {} is defined twice; rename one", sc.name),
                );
            }
            scripts.push(sc);
        }
    }
    let mut instances: Vec<InstanceSpec> = Vec::new();
    let mut groups = Vec::new();
    let mut director = DirectorConfig::default();
    let mut has_director = false;
    let mut vs_groups = Vec::new();
    for s in stmts.iter().filter(|s| s.key == "virtual_server_group") {
        if let Some(vg) = virtual_server_group(s, r) {
            vs_groups.push(vg);
        }
    }
    for s in stmts {
        match s.key.as_str() {
            "global_defs" | "vrrp_script" | "virtual_server_group" => {}
            "vrrp_instance" => {
                if let Some(i) = vrrp_instance(s, &g, &scripts, r) {
                    if instances.iter().any(|x| x.name == i.name) {
                        r.error(
                            &s.loc,
                            format!("vrrp_instance {} is defined twice; rename one", i.name),
                        );
                    } else if let Some(other) = instances.iter().find(|x| {
                        x.vrid == i.vrid && x.interface == i.interface && x.is_ipv6() == i.is_ipv6()
                    }) {
                        r.error(
                            &s.loc,
                            format!(
                                "vrrp_instance {} uses virtual_router_id {} on {} like {}; give each instance on an interface its own id",
                                i.name, i.vrid, i.interface, other.name
                            ),
                        );
                    } else {
                        instances.push(i);
                    }
                }
            }
            "vrrp_sync_group" => {
                if let Some(sg) = sync_group(s, r) {
                    groups.push((sg, s.loc.clone()));
                }
            }
            "virtual_server" => {
                has_director = true;
                director.virtuals.extend(virtual_server(s, &vs_groups, r));
            }
            other => {
                let msg = match other {
                    "static_ipaddress" | "static_routes" | "static_rules" => {
                        format!(
                            "{other} is not supported by hbd and is ignored; configure static addresses and routes in the system's network configuration"
                        )
                    }
                    "linkbeat_use_polling"
                    | "net_namespace"
                    | "vrrp_track_process"
                    | "track_file"
                    | "vrrp_track_file"
                    | "track_process"
                    | "garp_group"
                    | "bfd_instance" => format!("{other} is not supported by hbd and is ignored"),
                    _ => format!(
                        "unknown keyword {other}; keepalived ignores it too, check the spelling"
                    ),
                };
                r.warn(&s.loc, msg);
            }
        }
    }
    let mut sync_groups = Vec::new();
    for (sg, loc) in groups {
        for m in &sg.members {
            if !instances.iter().any(|i| &i.name == m) {
                r.error(&loc, format!("vrrp_sync_group {} names vrrp_instance {m}, which is not defined; define it or remove it from the group", sg.name));
            }
            if sync_groups
                .iter()
                .any(|o: &SyncGroupSpec| o.members.contains(m))
            {
                r.error(
                    &loc,
                    format!(
                        "vrrp_instance {m} is in two sync groups; an instance may be in one only"
                    ),
                );
            }
        }
        sync_groups.push(sg);
    }
    KeepalivedConfig {
        vrrp: VrrpConfig {
            router_id: g.router_id,
            instances,
            sync_groups,
            scripts,
            script_security: g.script_security,
        },
        director: has_director.then_some(director),
    }
}

fn arg<'a>(s: &'a Stmt, r: &mut Reader) -> Option<&'a str> {
    match s.args.first() {
        Some(a) => Some(a),
        None => {
            r.error(
                &s.loc,
                format!("{} needs a value; write {} VALUE", s.key, s.key),
            );
            None
        }
    }
}

fn number<T: std::str::FromStr>(s: &Stmt, what: &str, r: &mut Reader) -> Option<T> {
    let a = arg(s, r)?;
    match a.parse() {
        Ok(v) => Some(v),
        Err(_) => {
            r.error(&s.loc, format!("{} {a}: not {what}", s.key));
            None
        }
    }
}

/// keepalived durations: seconds, decimals allowed (`advert_int 0.05`).
fn seconds(s: &Stmt, r: &mut Reader) -> Option<Duration> {
    let a = arg(s, r)?;
    match a.parse::<f64>() {
        Ok(v) if (0.0..1e9).contains(&v) => Some(Duration::from_secs_f64(v)),
        _ => {
            r.error(&s.loc, format!("{} {a}: not a number of seconds", s.key));
            None
        }
    }
}

fn block<'a>(s: &'a Stmt, r: &mut Reader) -> &'a [Stmt] {
    match &s.block {
        Some(b) => b,
        None => {
            r.error(&s.loc, format!("{} needs a {{ … }} block", s.key));
            &[]
        }
    }
}

fn ip(text: &str, s: &Stmt, r: &mut Reader) -> Option<IpAddr> {
    match text.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            r.error(&s.loc, format!("{text}: not an IP address"));
            None
        }
    }
}

/// `vrrp_mcast_group4 ADDR` (or `6` when `v6`): a multicast address of that family.
fn mcast_group(k: &Stmt, v6: bool, r: &mut Reader) -> Option<IpAddr> {
    let a = arg(k, r).and_then(|a| ip(a, k, r))?;
    if a.is_ipv6() == v6 && a.is_multicast() {
        return Some(a);
    }
    let (family, example) = if v6 {
        ("IPv6", "ff02::12")
    } else {
        ("IPv4", "224.0.0.18")
    };
    r.error(
        &k.loc,
        format!(
            "{} {a} is not an {family} multicast address; use e.g. {example}",
            k.key
        ),
    );
    None
}

fn global_defs(s: &Stmt, g: &mut Globals, r: &mut Reader) {
    for k in block(s, r) {
        match k.key.as_str() {
            "router_id" => g.router_id = k.args.first().cloned(),
            "vrrp_mcast_group4" => {
                if let Some(a) = mcast_group(k, false, r) {
                    g.mcast4 = a;
                }
            }
            "vrrp_mcast_group6" => {
                if let Some(a) = mcast_group(k, true, r) {
                    g.mcast6 = a;
                }
            }
            "vrrp_version" => {
                if let Some(v) = version(k, r) {
                    g.version = v;
                }
            }
            "vrrp_garp_master_delay" => {
                if let Some(d) = seconds(k, r) {
                    g.garp.delay = d;
                }
            }
            "vrrp_garp_master_repeat" => {
                if let Some(n) = number(k, "a count", r) {
                    g.garp.repeat = n;
                    g.garp.lower_prio_repeat = n;
                }
            }
            "vrrp_garp_master_refresh" => {
                if let Some(d) = seconds(k, r) {
                    g.garp.refresh = (!d.is_zero()).then_some(d);
                }
            }
            "vrrp_garp_master_refresh_repeat" => {
                if let Some(n) = number(k, "a count", r) {
                    g.garp.refresh_repeat = n;
                }
            }
            "vrrp_garp_lower_prio_repeat" => {
                if let Some(n) = number(k, "a count", r) {
                    g.garp.lower_prio_repeat = n;
                }
            }
            "enable_script_security" => g.script_security = true,
            // Accepted: hbd never compares the advertised addresses, as this asks.
            "vrrp_skip_check_adv_addr" => {}
            "notification_email" | "notification_email_from" | "smtp_server"
            | "smtp_connect_timeout" | "smtp_helo_name" | "smtp_alert" => r.warn(
                &k.loc,
                format!("{} is ignored: hbd sends no e-mail; use notify scripts", k.key),
            ),
            "vrrp_garp_interval" | "vrrp_gna_interval" | "vrrp_garp_lower_prio_delay" => r.warn(
                &k.loc,
                format!("{} is ignored: hbd sends each announcement burst back to back", k.key),
            ),
            "vrrp_strict" => r.warn(
                &k.loc,
                "vrrp_strict is ignored: hbd follows the RFCs' receive rules always and adds no firewall rules",
            ),
            "script_user" => r.warn(&k.loc, "script_user is ignored: hbd runs scripts as its own user"),
            other => r.warn(&k.loc, format!("global_defs keyword {other} is not supported by hbd and is ignored")),
        }
    }
}

fn version(k: &Stmt, r: &mut Reader) -> Option<Version> {
    match arg(k, r)? {
        "2" => Some(Version::V2),
        "3" => Some(Version::V3),
        v => {
            r.error(&k.loc, format!("{} {v}: VRRP version is 2 or 3", k.key));
            None
        }
    }
}

fn vrrp_script(s: &Stmt, r: &mut Reader) -> Option<ScriptConfig> {
    let Some(name) = s.args.first().cloned() else {
        r.error(
            &s.loc,
            "vrrp_script needs a name; write vrrp_script NAME { … }",
        );
        return None;
    };
    let mut sc = ScriptConfig {
        name,
        command: String::new(),
        interval: Duration::from_secs(1),
        timeout: Duration::ZERO,
        weight: 0,
        fall: 1,
        rise: 1,
        init_fail: false,
    };
    for k in block(s, r) {
        match k.key.as_str() {
            "script" => sc.command = k.args.join(" "),
            "interval" => sc.interval = seconds(k, r).unwrap_or(sc.interval),
            "timeout" => sc.timeout = seconds(k, r).unwrap_or(sc.timeout),
            "weight" => {
                sc.weight = number(k, "a weight", r).unwrap_or(0);
                if !(-253..=253).contains(&sc.weight) {
                    r.error(&k.loc, "weight must be between -253 and 253");
                }
                if k.args.get(1).map(String::as_str) == Some("reverse") {
                    r.warn(
                        &k.loc,
                        "weight … reverse is not supported by hbd; the weight applies as written",
                    );
                }
            }
            "fall" => sc.fall = number(k, "a count", r).unwrap_or(1).max(1),
            "rise" => sc.rise = number(k, "a count", r).unwrap_or(1).max(1),
            "init_fail" => sc.init_fail = true,
            "user" => r.warn(&k.loc, "user is ignored: hbd runs scripts as its own user"),
            other => r.warn(
                &k.loc,
                format!("vrrp_script keyword {other} is not supported by hbd and is ignored"),
            ),
        }
    }
    if sc.command.is_empty() {
        r.error(
            &s.loc,
            format!(
                "vrrp_script {} has no script line; add script \"COMMAND\"",
                sc.name
            ),
        );
        return None;
    }
    if sc.timeout.is_zero() {
        sc.timeout = sc.interval;
    }
    Some(sc)
}

fn vip_list(s: &Stmt, r: &mut Reader) -> Vec<VipSpec> {
    let mut out = Vec::new();
    for v in block(s, r) {
        let (addr_text, prefix_text) = match v.key.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (v.key.as_str(), None),
        };
        let Some(addr) = ip(addr_text, v, r) else {
            continue;
        };
        let max = if addr.is_ipv6() { 128 } else { 32 };
        let prefix = match prefix_text.map(str::parse::<u8>) {
            None => max,
            Some(Ok(p)) if p <= max => p,
            Some(_) => {
                r.error(
                    &v.loc,
                    format!("{}: prefix length must be 0 to {max}", v.key),
                );
                continue;
            }
        };
        let mut vip = VipSpec {
            addr,
            prefix,
            dev: None,
            label: None,
            scope: None,
        };
        let mut it = v.args.iter();
        while let Some(word) = it.next() {
            let value = it.next().cloned();
            match word.as_str() {
                "dev" => vip.dev = value,
                "label" => vip.label = value,
                "scope" => vip.scope = value,
                "brd" | "broadcast" => {}
                other => r.warn(
                    &v.loc,
                    format!(
                        "virtual address option {other} is not supported by hbd and is ignored"
                    ),
                ),
            }
        }
        out.push(vip);
    }
    out
}

fn track_list(
    s: &Stmt,
    default: impl Fn(&str) -> Option<i32>,
    what: &str,
    r: &mut Reader,
) -> Vec<TrackSpec> {
    let mut out = Vec::new();
    for t in block(s, r) {
        let Some(base) = default(&t.key) else {
            r.warn(
                &t.loc,
                format!(
                    "{what} {} is not defined; keepalived and hbd ignore this line",
                    t.key
                ),
            );
            continue;
        };
        let weight = match t.args.as_slice() {
            [w, n, ..] if w == "weight" => n.parse().unwrap_or_else(|_| {
                r.error(&t.loc, format!("weight {n}: not a number"));
                0
            }),
            _ => base,
        };
        out.push(TrackSpec {
            name: t.key.clone(),
            weight,
        });
    }
    out
}

fn vrrp_instance(
    s: &Stmt,
    g: &Globals,
    scripts: &[ScriptConfig],
    r: &mut Reader,
) -> Option<InstanceSpec> {
    let Some(name) = s.args.first().cloned() else {
        r.error(
            &s.loc,
            "vrrp_instance needs a name; write vrrp_instance NAME { … }",
        );
        return None;
    };
    let mut interface = None;
    let mut vrid = None;
    let mut priority: u8 = 100;
    let mut advert_int = Duration::from_secs(1);
    let mut advert_loc = None;
    let mut initial = InitialState::Backup;
    let mut preempt = true;
    let mut preempt_delay = Duration::ZERO;
    let mut auth = Auth::None;
    let mut auth_loc = None;
    let mut vips = Vec::new();
    let mut excluded = Vec::new();
    let mut src_ip = None;
    let mut peers: Option<(Vec<IpAddr>, Loc)> = None;
    let mut track_interfaces = Vec::new();
    let mut track_scripts = Vec::new();
    let mut notify = NotifySpec::default();
    let mut garp = g.garp;
    let mut ver = None;
    let mut nopreempt_loc = None;
    let mut unicast_src_loc = None;
    for k in block(s, r) {
        match k.key.as_str() {
            "state" => match arg(k, r) {
                Some("MASTER") => initial = InitialState::Master,
                Some("BACKUP") => initial = InitialState::Backup,
                Some(v) => r.error(&k.loc, format!("state {v}: write MASTER or BACKUP")),
                None => {}
            },
            "interface" => interface = k.args.first().cloned(),
            "virtual_router_id" => match number::<u16>(k, "a number", r) {
                Some(v @ 1..=255) => vrid = u8::try_from(v).ok(),
                Some(v) => r.error(&k.loc, format!("virtual_router_id {v}: use 1 to 255")),
                None => {}
            },
            "priority" => match number::<u16>(k, "a number", r) {
                Some(v @ 1..=255) => priority = u8::try_from(v).unwrap_or(100),
                Some(v) => r.error(&k.loc, format!("priority {v}: use 1 to 255 (255 = address owner)")),
                None => {}
            },
            "advert_int" => {
                if let Some(d) = seconds(k, r) {
                    advert_int = d;
                    advert_loc = Some(k.loc.clone());
                }
            }
            "version" => ver = version(k, r),
            "nopreempt" => {
                preempt = false;
                nopreempt_loc = Some(k.loc.clone());
            }
            "preempt" => preempt = true,
            "preempt_delay" => preempt_delay = seconds(k, r).unwrap_or_default(),
            "authentication" => {
                auth_loc = Some(k.loc.clone());
                let mut kind = None;
                let mut pass = None;
                for a in block(k, r) {
                    match a.key.as_str() {
                        "auth_type" => kind = a.args.first().cloned().map(|t| (t, a.loc.clone())),
                        "auth_pass" => pass = a.args.first().cloned(),
                        other => r.warn(&a.loc, format!("authentication keyword {other} is ignored")),
                    }
                }
                match kind {
                    Some((t, _)) if t == "PASS" => match pass {
                        Some(p) => {
                            if p.len() > 8 {
                                r.warn(&k.loc, "auth_pass is longer than 8 characters; keepalived and hbd use the first 8");
                            }
                            auth = Auth::pass(&p);
                        }
                        None => r.error(&k.loc, "auth_type PASS without auth_pass; add auth_pass PASSWORD"),
                    },
                    Some((t, loc)) if t == "AH" => r.error(&loc, "auth_type AH is not supported by hbd; use auth_type PASS, or VRRPv3 without authentication"),
                    Some((t, loc)) => r.error(&loc, format!("auth_type {t}: write PASS")),
                    None => r.error(&k.loc, "authentication without auth_type; add auth_type PASS"),
                }
            }
            "virtual_ipaddress" => vips = vip_list(k, r),
            "virtual_ipaddress_excluded" => excluded = vip_list(k, r),
            "unicast_src_ip" | "mcast_src_ip" => {
                src_ip = arg(k, r).and_then(|a| ip(a, k, r));
                if k.key == "unicast_src_ip" {
                    unicast_src_loc = Some(k.loc.clone());
                }
            }
            "unicast_peer" => {
                let mut list = Vec::new();
                for p in block(k, r) {
                    if let Some(a) = ip(&p.key, p, r) {
                        list.push(a);
                    }
                    if !p.args.is_empty() {
                        r.warn(&p.loc, "unicast_peer options (min_ttl, max_ttl) are ignored by hbd");
                    }
                }
                peers = Some((list, k.loc.clone()));
            }
            "track_interface" => {
                track_interfaces = track_list(k, |_| Some(0), "interface", r);
            }
            "track_script" => {
                track_scripts = track_list(
                    k,
                    |n| scripts.iter().find(|sc| sc.name == n).map(|sc| sc.weight),
                    "vrrp_script",
                    r,
                );
            }
            "notify_master" => notify.master = Some(k.args.join(" ")),
            "notify_backup" => notify.backup = Some(k.args.join(" ")),
            "notify_fault" => notify.fault = Some(k.args.join(" ")),
            "notify_stop" => notify.stop = Some(k.args.join(" ")),
            "notify" => notify.any = Some(k.args.join(" ")),
            "garp_master_delay" => garp.delay = seconds(k, r).unwrap_or(garp.delay),
            "garp_master_repeat" => garp.repeat = number(k, "a count", r).unwrap_or(garp.repeat),
            "garp_master_refresh" => {
                garp.refresh = seconds(k, r).filter(|d| !d.is_zero());
            }
            "garp_master_refresh_repeat" => {
                garp.refresh_repeat = number(k, "a count", r).unwrap_or(garp.refresh_repeat);
            }
            "garp_lower_prio_repeat" => {
                garp.lower_prio_repeat = number(k, "a count", r).unwrap_or(garp.lower_prio_repeat);
            }
            "accept" | "no_accept" => r.warn(
                &k.loc,
                format!("{} has no effect in hbd: hbd adds no firewall rules, so the VIPs always accept traffic", k.key),
            ),
            "dont_track_primary" | "smtp_alert" | "debug" | "lvs_sync_daemon_interface"
            | "use_vmac" | "vmac_xmit_base" | "native_ipv6" | "strict_mode" | "kernel_rx_buf_size"
            | "virtual_routes" | "virtual_rules" | "track_process" | "track_file" | "track_bfd" => {
                r.warn(&k.loc, format!("{} is not supported by hbd and is ignored", k.key))
            }
            other => r.warn(&k.loc, format!("vrrp_instance keyword {other} is not supported by hbd and is ignored")),
        }
    }
    let Some(interface) = interface else {
        r.error(
            &s.loc,
            format!("vrrp_instance {name} has no interface; add interface IFNAME"),
        );
        return None;
    };
    let Some(vrid) = vrid else {
        r.error(&s.loc, format!("vrrp_instance {name} has no virtual_router_id; add virtual_router_id 1-255 (the same on every router of the instance)"));
        return None;
    };
    if vips.is_empty() {
        r.error(
            &s.loc,
            format!("vrrp_instance {name} has no virtual_ipaddress; add the addresses it holds"),
        );
        return None;
    }
    let v6 = vips[0].addr.is_ipv6();
    if vips.iter().any(|v| v.addr.is_ipv6() != v6) {
        r.error(&s.loc, format!("vrrp_instance {name} mixes IPv4 and IPv6 in virtual_ipaddress; keep one family there and put the other in virtual_ipaddress_excluded"));
        return None;
    }
    let mut version = ver.unwrap_or(g.version);
    if v6 && version == Version::V2 {
        if ver.is_some() {
            r.warn(&s.loc, format!("vrrp_instance {name}: VRRPv2 is IPv4 only; using version 3 for its IPv6 addresses"));
        }
        version = Version::V3;
    }
    let cs = advert_int.as_millis() / 10;
    let loc = advert_loc.unwrap_or_else(|| s.loc.clone());
    match version {
        Version::V2
            if advert_int.subsec_nanos() != 0 || !(1..=255).contains(&advert_int.as_secs()) =>
        {
            r.error(&loc, format!("advert_int {}: VRRPv2 carries whole seconds 1 to 255; round it, or use version 3 for sub-second adverts", advert_int.as_secs_f64()));
        }
        Version::V3 if cs == 0 || cs > u128::from(MAX_INTERVAL_CS) => {
            r.error(&loc, "advert_int: VRRPv3 carries 0.01 to 40.95 seconds");
        }
        _ => {}
    }
    if version == Version::V3 && auth != Auth::None {
        r.warn(
            auth_loc.as_ref().unwrap_or(&s.loc),
            "VRRPv3 has no authentication (RFC 5798); authentication is ignored",
        );
        auth = Auth::None;
    }
    if let Some(loc) = nopreempt_loc
        && initial == InitialState::Master
    {
        r.warn(&loc, "nopreempt with state MASTER: the instance still becomes master at start; use state BACKUP on every router for nopreempt to hold");
    }
    let unicast_peers = match peers {
        Some((list, loc)) if list.is_empty() => {
            r.error(&loc, format!("vrrp_instance {name}: unicast_peer is empty; list the other routers' addresses (hbd refuses a unicast instance with no peers rather than falling back to multicast)"));
            return None;
        }
        Some((list, _)) => list,
        None => {
            if let Some(loc) = unicast_src_loc {
                r.error(&loc, format!("vrrp_instance {name}: unicast_src_ip without unicast_peer; add unicast_peer {{ PEER_ADDRESS }} or remove unicast_src_ip to use multicast"));
                return None;
            }
            Vec::new()
        }
    };
    if let Some(p) = unicast_peers.iter().find(|p| p.is_ipv6() != v6) {
        r.error(
            &s.loc,
            format!(
                "vrrp_instance {name}: unicast_peer {p} is not of the virtual addresses' family"
            ),
        );
    }
    Some(InstanceSpec {
        name,
        origin: (r.path(&s.loc).to_path_buf(), s.loc.line),
        interface,
        vrid,
        version,
        priority,
        advert_int,
        initial,
        preempt,
        preempt_delay,
        auth,
        vips,
        excluded_vips: excluded,
        mcast_group: if v6 { g.mcast6 } else { g.mcast4 },
        src_ip,
        unicast_peers,
        track_interfaces,
        track_scripts,
        notify,
        garp,
    })
}

fn sync_group(s: &Stmt, r: &mut Reader) -> Option<SyncGroupSpec> {
    let Some(name) = s.args.first().cloned() else {
        r.error(&s.loc, "vrrp_sync_group needs a name");
        return None;
    };
    let mut sg = SyncGroupSpec {
        name,
        members: Vec::new(),
        notify: NotifySpec::default(),
    };
    for k in block(s, r) {
        match k.key.as_str() {
            "group" => sg.members = block(k, r).iter().map(|m| m.key.clone()).collect(),
            "notify_master" => sg.notify.master = Some(k.args.join(" ")),
            "notify_backup" => sg.notify.backup = Some(k.args.join(" ")),
            "notify_fault" => sg.notify.fault = Some(k.args.join(" ")),
            "notify_stop" => sg.notify.stop = Some(k.args.join(" ")),
            "notify" => sg.notify.any = Some(k.args.join(" ")),
            other => r.warn(
                &k.loc,
                format!("vrrp_sync_group keyword {other} is not supported by hbd and is ignored"),
            ),
        }
    }
    if sg.members.is_empty() {
        r.error(
            &s.loc,
            format!(
                "vrrp_sync_group {} has no group {{ … }} of instances; add one",
                sg.name
            ),
        );
        return None;
    }
    Some(sg)
}

/// A `virtual_server_group`: its members' keys.
struct VsGroup {
    name: String,
    keys: Vec<(Option<std::net::SocketAddr>, Option<u32>)>,
}

fn virtual_server_group(s: &Stmt, r: &mut Reader) -> Option<VsGroup> {
    let name = s.args.first().cloned()?;
    let mut keys = Vec::new();
    for k in block(s, r) {
        if k.key == "fwmark" {
            if let Some(m) = number::<u32>(k, "a firewall mark", r) {
                keys.push((None, Some(m)));
            }
        } else if let Some(a) = ip(&k.key, k, r) {
            match k.args.first().map(|p| p.parse::<u16>()) {
                Some(Ok(port)) => keys.push((Some(std::net::SocketAddr::new(a, port)), None)),
                _ => r.error(
                    &k.loc,
                    format!(
                        "{}: write ADDRESS PORT (address ranges are not supported)",
                        k.key
                    ),
                ),
            }
        }
    }
    Some(VsGroup { name, keys })
}

/// One keepalived checker of a real server, as hbd's check.
struct Checker {
    kind: CheckType,
    service: Service,
    path: Option<String>,
    status: Option<u16>,
    port: Option<u16>,
    timeout: Option<Duration>,
    fall: Option<u32>,
    vhost: Option<String>,
    loc: Loc,
}

fn checker(k: &Stmt, r: &mut Reader) -> Option<Checker> {
    let (kind, service) = match k.key.as_str() {
        "HTTP_GET" => (CheckType::Negotiate, Service::Http),
        "SSL_GET" => (CheckType::Negotiate, Service::Https),
        "TCP_CHECK" => (CheckType::Connect, Service::None),
        "MISC_CHECK" => (
            CheckType::External {
                command: String::new(),
            },
            Service::None,
        ),
        _ => return None,
    };
    let mut c = Checker {
        kind,
        service,
        path: None,
        status: None,
        port: None,
        timeout: None,
        fall: None,
        vhost: None,
        loc: k.loc.clone(),
    };
    let mut urls = 0;
    for o in block(k, r) {
        match o.key.as_str() {
            "url" => {
                urls += 1;
                if urls > 1 {
                    r.warn(
                        &o.loc,
                        "hbd checks the first url of a checker only; this one is ignored",
                    );
                    continue;
                }
                for u in block(o, r) {
                    match u.key.as_str() {
                        "path" => c.path = u.args.first().cloned(),
                        "status_code" => c.status = number(u, "an HTTP status", r),
                        "digest" => r.warn(&u.loc, "digest is not supported by hbd: the check passes on the status code alone"),
                        other => r.warn(&u.loc, format!("url keyword {other} is not supported by hbd and is ignored")),
                    }
                }
            }
            "connect_timeout" | "misc_timeout" => c.timeout = seconds(o, r),
            "connect_port" => c.port = number(o, "a port", r),
            "retry" | "nb_get_retry" => c.fall = number::<u32>(o, "a count", r).map(|n| n.max(1)),
            "virtualhost" => c.vhost = o.args.first().cloned(),
            "misc_path" => {
                c.kind = CheckType::External {
                    command: o.args.join(" "),
                }
            }
            "delay_before_retry" => r.warn(
                &o.loc,
                "delay_before_retry is ignored: hbd retries at the next delay_loop",
            ),
            "misc_dynamic" | "warmup" | "connect_ip" | "bindto" | "bind_port" | "fwmark"
            | "alpha" | "user" => r.warn(
                &o.loc,
                format!("{} is not supported by hbd and is ignored", o.key),
            ),
            other => r.warn(
                &o.loc,
                format!(
                    "{} keyword {other} is not supported by hbd and is ignored",
                    k.key
                ),
            ),
        }
    }
    if let CheckType::External { command } = &c.kind
        && command.is_empty()
    {
        r.error(
            &k.loc,
            "MISC_CHECK without misc_path; add misc_path \"COMMAND\"",
        );
        return None;
    }
    Some(c)
}

fn virtual_server(s: &Stmt, groups: &[VsGroup], r: &mut Reader) -> Vec<VirtualConfig> {
    // The keys this block stands for.
    let mut keys: Vec<(ServiceKey, bool)> = Vec::new();
    let mut protocol = Protocol::Tcp;
    let mut scheduler = Scheduler::Wlc;
    let mut forwarding = Forwarding::Masq;
    let mut persistence_timeout = None;
    let mut granularity = None;
    let mut interval = DEFAULT_DELAY_LOOP;
    let mut sorry = None;
    let mut reals: Vec<(RealConfig, Option<Checker>, bool)> = Vec::new();
    let head: Vec<&str> = s.args.iter().map(String::as_str).collect();
    enum Head {
        Addr(std::net::SocketAddr),
        Mark(u32),
        Group(String),
    }
    let parsed = match head.as_slice() {
        ["fwmark", m] => m.parse().ok().map(Head::Mark),
        ["group", g] => Some(Head::Group((*g).to_string())),
        [a, p] => match (a.parse::<IpAddr>(), p.parse::<u16>()) {
            (Ok(a), Ok(p)) => Some(Head::Addr(std::net::SocketAddr::new(a, p))),
            _ => None,
        },
        _ => None,
    };
    let Some(parsed) = parsed else {
        r.error(
            &s.loc,
            "virtual_server needs ADDRESS PORT, fwmark MARK or group NAME",
        );
        return Vec::new();
    };
    for k in block(s, r) {
        match k.key.as_str() {
            "delay_loop" => interval = seconds(k, r).unwrap_or(interval),
            "lb_algo" => match arg(k, r).map(str::parse::<Scheduler>) {
                Some(Ok(sch)) => scheduler = sch,
                Some(Err(e)) => r.error(&k.loc, format!("lb_algo: {e}")),
                None => {}
            },
            "lb_kind" => match arg(k, r) {
                Some("NAT") => forwarding = Forwarding::Masq,
                Some("DR") => forwarding = Forwarding::Gate,
                Some("TUN") => forwarding = Forwarding::Ipip,
                Some(o) => r.error(&k.loc, format!("lb_kind {o}: write NAT, DR or TUN")),
                None => {}
            },
            "protocol" => match arg(k, r) {
                Some("TCP") => protocol = Protocol::Tcp,
                Some("UDP") => protocol = Protocol::Udp,
                Some(o) => r.error(&k.loc, format!("protocol {o}: hbd supports TCP and UDP")),
                None => {}
            },
            "persistence_timeout" => persistence_timeout = seconds(k, r),
            "persistence_granularity" => granularity = k.args.first().cloned(),
            "sorry_server" => match head_addr(&k.args) {
                Some(a) => sorry = Some(a),
                None => r.error(&k.loc, "sorry_server needs ADDRESS PORT"),
            },
            "real_server" => {
                let Some(addr) = head_addr(&k.args) else {
                    r.error(&k.loc, "real_server needs ADDRESS PORT");
                    continue;
                };
                let mut weight = 1;
                let mut check = None;
                let mut inhibit = false;
                for o in k.block.as_deref().unwrap_or(&[]) {
                    match o.key.as_str() {
                        "weight" => weight = number(o, "a weight", r).unwrap_or(1),
                        "inhibit_on_failure" => inhibit = true,
                        "HTTP_GET" | "SSL_GET" | "TCP_CHECK" | "MISC_CHECK" => {
                            if check.is_some() {
                                r.warn(
                                    &o.loc,
                                    "hbd runs one checker per real server; this one is ignored",
                                );
                            } else {
                                check = checker(o, r);
                            }
                        }
                        "SMTP_CHECK" | "DNS_CHECK" | "BFD_CHECK" | "FILE_CHECK" | "PING_CHECK"
                        | "UDP_CHECK" => r.warn(
                            &o.loc,
                            format!("{} is not supported by hbd; the real is not checked", o.key),
                        ),
                        other => r.warn(
                            &o.loc,
                            format!(
                                "real_server keyword {other} is not supported by hbd and is ignored"
                            ),
                        ),
                    }
                }
                reals.push((
                    RealConfig {
                        line: Default::default(),
                        addr,
                        forwarding,
                        weight,
                        request: None,
                        receive: None,
                        lower_threshold: 0,
                        upper_threshold: 0,
                    },
                    check,
                    inhibit,
                ));
            }
            "quorum"
            | "quorum_up"
            | "quorum_down"
            | "hysteresis"
            | "alpha"
            | "omega"
            | "ha_suspend"
            | "virtualhost"
            | "retry"
            | "delay_before_retry"
            | "warmup"
            | "ops"
            | "lb_flags"
            | "lvs_sched"
            | "lvs_method"
            | "sorry_server_inhibit" => r.warn(
                &k.loc,
                format!(
                    "virtual_server keyword {} is not supported by hbd and is ignored",
                    k.key
                ),
            ),
            other => r.warn(
                &k.loc,
                format!("virtual_server keyword {other} is not supported by hbd and is ignored"),
            ),
        }
    }
    for (real, _, _) in &mut reals {
        real.forwarding = forwarding;
    }
    match parsed {
        Head::Addr(a) => keys.push((service_key(protocol, a), false)),
        Head::Mark(m) => keys.push((ServiceKey::Fwmark(m, Family::V4), true)),
        Head::Group(name) => match groups.iter().find(|g| g.name == name) {
            Some(g) => {
                for (addr, mark) in &g.keys {
                    match (addr, mark) {
                        (Some(a), _) => keys.push((service_key(protocol, *a), false)),
                        (None, Some(m)) => keys.push((ServiceKey::Fwmark(*m, Family::V4), true)),
                        _ => {}
                    }
                }
            }
            None => r.error(
                &s.loc,
                format!("virtual_server group {name}: no virtual_server_group {name} is defined"),
            ),
        },
    }
    // One check per virtual in hbd: the first real's checker, a warning if others differ.
    let first = reals.iter().find_map(|(_, c, _)| c.as_ref());
    if let Some(f) = first {
        for (real, c, _) in &reals {
            let same = c.as_ref().is_some_and(|c| {
                c.kind == f.kind && c.path == f.path && c.status == f.status && c.port == f.port
            });
            if !same {
                let at = c.as_ref().map_or(s.loc.clone(), |c| c.loc.clone());
                r.warn(&at, format!("real {} is checked like the first checked real of this virtual_server (hbd runs one check definition per virtual service)", real.addr));
            }
        }
    }
    let quiescent = reals.iter().any(|(_, _, inhibit)| *inhibit);
    if quiescent && !reals.iter().all(|(_, _, i)| *i) {
        r.warn(&s.loc, "inhibit_on_failure is set on some reals only; hbd applies it to every real of the virtual_server");
    }
    let check = CheckConfig {
        kind: first.map_or(CheckType::On, |c| c.kind.clone()),
        service: first.map_or(Service::None, |c| c.service.clone()),
        request: first.and_then(|c| c.path.clone()),
        receive: None,
        http_method: HttpMethod::Get,
        virtual_host: first.and_then(|c| c.vhost.clone()),
        check_port: first.and_then(|c| c.port),
        interval,
        check_timeout: first
            .and_then(|c| c.timeout)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        negotiate_timeout: first
            .and_then(|c| c.timeout)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        ping_count: 1,
        fall: first.and_then(|c| c.fall).unwrap_or(1),
        rise: 1,
        status_code: first.and_then(|c| c.status),
        credentials: Default::default(),
    };
    let mut out = Vec::new();
    for (key, is_mark) in keys {
        let family = key.family();
        let persistence = persistence_timeout.filter(|d| !d.is_zero()).map(|timeout| {
            let host = Netmask::host(family);
            let netmask = granularity
                .as_deref()
                .and_then(|g| g.parse::<std::net::Ipv4Addr>().ok())
                .and_then(Netmask::from_v4)
                .unwrap_or(host);
            Persistence { timeout, netmask }
        });
        out.push(VirtualConfig {
            line: Default::default(),
            key,
            protocol: if is_mark { Protocol::Fwm } else { protocol },
            scheduler,
            persistence,
            reals: reals.iter().map(|(rc, _, _)| rc.clone()).collect(),
            fallback: sorry.map(|addr| RealConfig {
                line: Default::default(),
                addr,
                forwarding,
                weight: 1,
                request: None,
                receive: None,
                lower_threshold: 0,
                upper_threshold: 0,
            }),
            fallback_command: None,
            check: check.clone(),
            quiescent,
            cleanstop: true,
            service_name: None,
            comment: None,
        });
    }
    out
}

impl KeepalivedConfig {
    /// The resource groups the instances drive, in [`GroupMap`] order: each group holds its
    /// instances' `virtual_ipaddress` and `virtual_ipaddress_excluded` entries as `IPaddr2`
    /// resources (left to right, instances in file order), and the group whose addresses
    /// the most `virtual_server`s listen on (the first group when none) ends with the
    /// director (`ldirectord`, running the virtual servers of this file). keepalived keeps
    /// its virtual servers loaded on the backup too; hbd runs the director where the
    /// addresses are, as heartbeat with ldirectord did.
    pub fn resource_groups(&self, node: &str) -> Vec<GroupSpec> {
        let map = GroupMap::of(&self.vrrp);
        let mut groups: Vec<GroupSpec> = map
            .members
            .iter()
            .map(|members| GroupSpec {
                preferred: node.to_string(),
                resources: members
                    .iter()
                    .filter_map(|&i| self.vrrp.instances.get(i))
                    .flat_map(|i| {
                        i.vips
                            .iter()
                            .chain(&i.excluded_vips)
                            .map(|v| vip_resource(v, &i.interface))
                    })
                    .collect(),
            })
            .collect();
        if let Some(d) = &self.director
            && !groups.is_empty()
        {
            let listens = |g: &GroupSpec| {
                d.virtuals
                    .iter()
                    .filter(|v| match v.key {
                        ServiceKey::Tcp(a) | ServiceKey::Udp(a) => g
                            .resources
                            .iter()
                            .any(|r| r.args[0].split('/').next() == Some(&a.ip().to_string())),
                        ServiceKey::Fwmark(..) => false,
                    })
                    .count()
            };
            let best = (0..groups.len())
                .rev()
                .max_by_key(|&g| listens(&groups[g]))
                .unwrap_or(0);
            groups[best].resources.push(ResourceSpec {
                spec: "ldirectord".into(),
                kind: "ldirectord".into(),
                args: Vec::new(),
            });
        }
        // A group must not be empty (an instance with no address): it holds nothing, but
        // its instance still runs.
        for (g, members) in groups.iter_mut().zip(&map.members) {
            if g.resources.is_empty() {
                let name = members
                    .first()
                    .and_then(|&i| self.vrrp.instances.get(i))
                    .map_or("vrrp", |i| i.name.as_str());
                g.resources.push(ResourceSpec {
                    spec: format!("vrrp_instance::{name}"),
                    kind: "ipvsadm".into(),
                    args: vec![name.to_string()],
                });
            }
        }
        groups
    }
}

/// One `virtual_ipaddress` line as hbd's `IPaddr2::ADDR/PREFIX/DEV[:LABEL]`.
fn vip_resource(v: &VipSpec, interface: &str) -> ResourceSpec {
    let dev = v.dev.as_deref().unwrap_or(interface);
    let dev = match &v.label {
        Some(l) if v.addr.is_ipv4() && l.starts_with(&format!("{dev}:")) => l.clone(),
        _ => dev.to_string(),
    };
    let arg = format!("{}/{}/{}", v.addr, v.prefix, dev);
    ResourceSpec {
        spec: format!("IPaddr2::{arg}"),
        kind: "IPaddr2".into(),
        args: vec![arg],
    }
}

fn service_key(protocol: Protocol, a: std::net::SocketAddr) -> ServiceKey {
    match protocol {
        Protocol::Udp => ServiceKey::Udp(a),
        _ => ServiceKey::Tcp(a),
    }
}

fn head_addr(args: &[String]) -> Option<std::net::SocketAddr> {
    match args {
        [a, p, ..] => Some(std::net::SocketAddr::new(a.parse().ok()?, p.parse().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
