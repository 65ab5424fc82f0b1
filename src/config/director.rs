//! Virtual services and their checks, from an unchanged `ldirectord.cf` (features §3) or from
//! the `director:` section of the native YAML; both produce the same [`DirectorConfig`].
//!
//! The ldirectord file is read like ldirectord 4.x reads it: `key = value` lines, `#` comments,
//! a `virtual =` line opens a block whose lines are indented, and the overridable global
//! directives (`checktimeout`, `quiescent`, `fallback`, …) may be repeated inside a block to
//! override the global value for that block only. Every problem is collected as a
//! [`Diagnostic`] naming `file:line`, what is wrong and the fix. ldirectord directives hbd does
//! not act on are named in a warning; `docs/configuration.md` ("Director") lists what hbd does
//! with each one.
//!
//! Layout: the validated types, then the two front doors (ldirectord text →
//! [`Entry`] lists; YAML → the same lists), then one resolver ([`build`]) that applies
//! ldirectord's defaults and rules to both. [`DirectorFileForm`] is the YAML form of a
//! [`DirectorConfig`] that `hactl convert` writes.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_saphyr::{FlowMap, Spanned};

use super::diag::{ConfigError, Diagnostic, edit_distance, finish};
use super::source::{Scalar, line_of, parse_bool as parse_bool_word, read_text};
use super::time::{format_duration, parse_duration};
use crate::dataplane::model::{
    Family, Forwarding, Netmask, Persistence, RealServer, Scheduler, ServiceKey, VirtualService,
};

/// Seconds between two checks of a real server (ldirectord `checkinterval` default).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Timeout of connect, external and ping checks (ldirectord `checktimeout` default).
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of negotiate checks (ldirectord `negotiatetimeout` default).
pub const DEFAULT_NEGOTIATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Consecutive failures before a real is taken down (ldirectord `failurecount` default).
pub const DEFAULT_FAILURE_COUNT: u32 = 1;
/// Consecutive successes before a down real is put back (hbd `risecount`; ldirectord: 1).
pub const DEFAULT_RISE_COUNT: u32 = 1;
/// ICMP attempts of a ping check (ldirectord `checkcount` default).
pub const DEFAULT_CHECK_COUNT: u32 = 1;
/// Weight of a real server when none is written (ldirectord default).
pub const DEFAULT_WEIGHT: u32 = 1;
/// Largest weight IPVS and ipvsadm accept.
pub const MAX_WEIGHT: u32 = 65535;
/// Command of an external check without `checkcommand` (ldirectord default).
pub const DEFAULT_CHECK_COMMAND: &str = "/bin/true";
/// Most reals one `a->b` range may expand to: a typo in a range must not build a huge table.
pub const MAX_RANGE: u32 = 1024;

/// Where something was written (a file, a line), kept after validation so later checks
/// (the dataplane's, [`crate::director::support`]) can still name `file:line`. It is not
/// part of what a configuration says: it compares equal to any other, so a configuration
/// reloaded from an edited file equals the old one wherever nothing but positions moved.
#[derive(Debug, Clone, Eq)]
pub struct Origin<T>(pub Option<T>);

impl<T> Default for Origin<T> {
    fn default() -> Self {
        Origin(None)
    }
}

impl<T> PartialEq for Origin<T> {
    fn eq(&self, _: &Origin<T>) -> bool {
        true
    }
}

/// Every virtual service one director manages, with the settings that are not per service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorConfig {
    /// The file it was read from (ldirectord.cf, or the YAML file of a `director:` section).
    pub file: Origin<PathBuf>,
    /// Reload when the configuration file changes on disk (`autoreload`, default no).
    pub autoreload: bool,
    /// Program run with the file name after the file changed (`callback`).
    pub callback: Option<String>,
    /// Directory whose files force reals down for maintenance (`maintenancedir`).
    pub maintenance_dir: Option<PathBuf>,
    /// Re-add a quiesced real that was removed from IPVS by hand (`readdquiescent`, default yes).
    /// Parsed, not acted on yet (warned): the next reconcile puts such a real back anyway.
    pub readd_quiescent: bool,
    /// hbd extension `httpkeepalive` (default yes): plain-HTTP checks keep their connection
    /// between runs; `no` opens one per check, as ldirectord does.
    pub http_keepalive: bool,
    /// Virtual services, in file order.
    pub virtuals: Vec<VirtualConfig>,
}

impl Default for DirectorConfig {
    /// ldirectord's global defaults with no virtual service.
    fn default() -> Self {
        DirectorConfig {
            file: Origin::default(),
            autoreload: false,
            callback: None,
            maintenance_dir: None,
            readd_quiescent: true,
            http_keepalive: true,
            virtuals: Vec::new(),
        }
    }
}

/// The protocol a virtual service is declared with (`protocol =`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP (the default for port 53).
    Udp,
    /// A firewall-mark service (`virtual = <mark>`).
    Fwm,
}

impl Protocol {
    /// ldirectord's word.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Fwm => "fwm",
        }
    }
}

/// One virtual service: what IPVS gets, and how its reals are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualConfig {
    /// Kernel identity (protocol + VIP:port, or fwmark and family).
    pub key: ServiceKey,
    /// The line of its `virtual =` (or YAML entry).
    pub line: Origin<usize>,
    /// Declared protocol (redundant with `key` except that it says `fwm` for marks).
    pub protocol: Protocol,
    /// Scheduler (`scheduler`, default wrr).
    pub scheduler: Scheduler,
    /// Persistence (`persistent` + `netmask`).
    pub persistence: Option<Persistence>,
    /// Real servers, ranges expanded, ports resolved.
    pub reals: Vec<RealConfig>,
    /// Server used while no real is up (`fallback` / `fallback6`, features §3.5).
    pub fallback: Option<RealConfig>,
    /// Program run with `start|stop vip:port proto` when the last real goes down / one returns.
    pub fallback_command: Option<String>,
    /// How reals are checked.
    pub check: CheckConfig,
    /// Failed reals stay at weight 0 instead of being deleted (`quiescent`, default yes).
    pub quiescent: bool,
    /// Remove this service from IPVS when hbd stops (`cleanstop`, default yes).
    pub cleanstop: bool,
    /// Informational name (`servicename`).
    pub service_name: Option<String>,
    /// Informational text (`comment`).
    pub comment: Option<String>,
}

impl VirtualConfig {
    /// The service with every real at its configured weight: what [`crate::director::health::desired_service`]
    /// starts from.
    pub fn configured_service(&self) -> VirtualService {
        let mut vs = VirtualService::new(self.key, self.scheduler);
        vs.persistence = self.persistence;
        vs.reals = self
            .reals
            .iter()
            .map(|r| r.to_real_server(r.weight))
            .collect();
        vs
    }

    /// Port the service listens on (0 for a fwmark service).
    pub fn port(&self) -> u16 {
        match self.key {
            ServiceKey::Tcp(a) | ServiceKey::Udp(a) => a.port(),
            ServiceKey::Fwmark(..) => 0,
        }
    }
}

/// One real server as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealConfig {
    /// Address and port (the virtual's port unless masq, like ldirectord).
    pub addr: SocketAddr,
    /// The line of its `real =` (or `fallback =`).
    pub line: Origin<usize>,
    /// Forwarding method.
    pub forwarding: Forwarding,
    /// Configured weight (0 = never scheduled, still checked).
    pub weight: u32,
    /// Per-real negotiate request, overriding the virtual's.
    pub request: Option<String>,
    /// Per-real expected answer, overriding the virtual's.
    pub receive: Option<Receive>,
    /// Lower connection threshold (`-y`), 0 = none.
    pub lower_threshold: u32,
    /// Upper connection threshold (`-x`), 0 = none.
    pub upper_threshold: u32,
}

impl RealConfig {
    /// The IPVS destination at `weight`, keeping forwarding and thresholds.
    pub fn to_real_server(&self, weight: u32) -> RealServer {
        RealServer {
            addr: self.addr,
            forwarding: self.forwarding,
            weight,
            upper_threshold: self.upper_threshold,
            lower_threshold: self.lower_threshold,
        }
    }
}

/// The protocol conversation of a negotiate check (`service =`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Service {
    /// No conversation: the negotiate step only connects.
    None,
    /// HTTP GET/HEAD; up on any 2xx whose body matches `receive`.
    Http,
    /// The same over TLS (certificate not verified, like ldirectord).
    Https,
    /// A service hbd negotiates with its own client ([`crate::director::services`]).
    Negotiated(NegotiatedService),
    /// An ldirectord service hbd cannot negotiate (nntp, oracle, the TLS variants, …):
    /// refused at check-config when a negotiate check would run, accepted otherwise.
    Unsupported(String),
}

/// The services beyond HTTP that hbd negotiates as ldirectord does (features §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NegotiatedService {
    /// A DNS query for `request`; an A address or PTR name must match `receive`.
    Dns,
    /// FTP login, then `RETR request` whose content must match `receive`.
    Ftp,
    /// IMAP greeting, and `LOGIN` when `login` is set.
    Imap,
    /// LDAP bind, then a base-scope search of `request` whose DN must match `receive`.
    Ldap,
    /// MySQL/MariaDB login, then the query `request` must return a row.
    Mysql,
    /// PostgreSQL login, then the query `request` must return a row.
    Pgsql,
    /// POP3 greeting, and `USER`/`PASS` when `login` is set.
    Pop,
    /// RADIUS Access-Request for `login`/`passwd` with `secret`: up on Access-Accept.
    Radius,
    /// `request` sent, the connection half-closed, a line of the answer must match `receive`.
    Simpletcp,
    /// SIP `OPTIONS` for `login`: up on `SIP/2.0 200`.
    Sip,
    /// SMTP greeting and EHLO (HELO if refused).
    Smtp,
    /// The SMTP check on the submission port.
    Submission,
}

impl NegotiatedService {
    /// ldirectord's name.
    pub fn name(self) -> &'static str {
        match self {
            NegotiatedService::Dns => "dns",
            NegotiatedService::Ftp => "ftp",
            NegotiatedService::Imap => "imap",
            NegotiatedService::Ldap => "ldap",
            NegotiatedService::Mysql => "mysql",
            NegotiatedService::Pgsql => "pgsql",
            NegotiatedService::Pop => "pop",
            NegotiatedService::Radius => "radius",
            NegotiatedService::Simpletcp => "simpletcp",
            NegotiatedService::Sip => "sip",
            NegotiatedService::Smtp => "smtp",
            NegotiatedService::Submission => "submission",
        }
    }

    /// Every negotiated service.
    pub const ALL: [NegotiatedService; 12] = [
        NegotiatedService::Dns,
        NegotiatedService::Ftp,
        NegotiatedService::Imap,
        NegotiatedService::Ldap,
        NegotiatedService::Mysql,
        NegotiatedService::Pgsql,
        NegotiatedService::Pop,
        NegotiatedService::Radius,
        NegotiatedService::Simpletcp,
        NegotiatedService::Sip,
        NegotiatedService::Smtp,
        NegotiatedService::Submission,
    ];

    /// Which of `login`, `passwd`, `database`, `secret` the check uses (ldirectord's manual).
    pub fn uses(self, credential: &str) -> bool {
        use NegotiatedService as N;
        match credential {
            "login" | "passwd" => {
                matches!(
                    self,
                    N::Ftp | N::Imap | N::Ldap | N::Mysql | N::Pgsql | N::Pop | N::Radius | N::Sip
                ) && !(credential == "passwd" && self == N::Sip)
            }
            "database" => matches!(self, N::Mysql | N::Pgsql),
            "secret" => self == N::Radius,
            _ => false,
        }
    }
}

/// `login`, `passwd`, `database` and `secret` of a virtual service, as written (ldirectord's
/// per-service defaults are applied when the check is built, [`crate::director::runtime`]).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// `login`: user name (SIP: the OPTIONS address).
    pub login: Option<String>,
    /// `passwd`.
    pub passwd: Option<String>,
    /// `database` (MySQL, PostgreSQL).
    pub database: Option<String>,
    /// `secret` (RADIUS shared secret).
    pub secret: Option<String>,
}

impl fmt::Debug for Credentials {
    /// Never prints the password or the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("login", &self.login)
            .field("passwd", &self.passwd.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A `service =` name ldirectord does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an ldirectord service; use one of: {list}", list = LDIRECTORD_SERVICES.join(", "))]
pub struct UnknownService(pub String);

/// Every `service` ldirectord knows (features §3.3).
pub const LDIRECTORD_SERVICES: [&str; 21] = [
    "dns",
    "ftp",
    "http",
    "https",
    "http_proxy",
    "imap",
    "imaps",
    "ldap",
    "ldaps",
    "mysql",
    "nntp",
    "none",
    "oracle",
    "pgsql",
    "pop",
    "pops",
    "radius",
    "simpletcp",
    "sip",
    "smtp",
    "submission",
];

impl Service {
    /// ldirectord's name.
    pub fn name(&self) -> &str {
        match self {
            Service::None => "none",
            Service::Http => "http",
            Service::Https => "https",
            Service::Negotiated(n) => n.name(),
            Service::Unsupported(n) => n,
        }
    }

    /// Parses an ldirectord service name (case-insensitive).
    pub fn parse(name: &str) -> Result<Service, UnknownService> {
        let n = name.to_ascii_lowercase();
        match n.as_str() {
            "none" => Ok(Service::None),
            "http" => Ok(Service::Http),
            "https" => Ok(Service::Https),
            other => {
                if let Some(s) = NegotiatedService::ALL.iter().find(|s| s.name() == other) {
                    Ok(Service::Negotiated(*s))
                } else if LDIRECTORD_SERVICES.contains(&other) {
                    Ok(Service::Unsupported(n))
                } else {
                    Err(UnknownService(name.to_string()))
                }
            }
        }
    }

    /// The service ldirectord derives from a port when `service` is absent.
    pub fn from_port(port: u16) -> Service {
        let name = match port {
            21 => "ftp",
            25 => "smtp",
            53 => "dns",
            80 => return Service::Http,
            110 => "pop",
            119 => "nntp",
            143 => "imap",
            389 => "ldap",
            443 => return Service::Https,
            587 => "submission",
            636 => "ldaps",
            993 => "imaps",
            995 => "pops",
            1521 => "oracle",
            1812 => "radius",
            3128 => "http_proxy",
            3306 => "mysql",
            5432 => "pgsql",
            5060 => "sip",
            _ => return Service::None,
        };
        Service::parse(name).unwrap_or(Service::None)
    }

    /// Whether hbd can run a negotiate check for it.
    pub fn is_supported(&self) -> bool {
        !matches!(self, Service::Unsupported(_))
    }
}

/// How reals are checked (`checktype =`, features §3.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CheckType {
    /// TCP connect (UDP services: ping).
    Connect,
    /// The protocol conversation of [`CheckConfig::service`].
    Negotiate,
    /// `checktype = N`: one negotiate, then N connect checks, repeated (ldirectord
    /// `combined`); a failed connect makes the next check negotiate.
    Combined(u32),
    /// A program called with `vip vport rip rport`; exit 0 = up (also `external-perl`).
    External {
        /// Program path (`checkcommand`).
        command: String,
    },
    /// ICMP echo (up to `checkcount` attempts).
    Ping,
    /// No check: reals always up.
    On,
    /// No check: no real and no fallback is ever activated.
    Off,
}

/// HTTP method of an HTTP check (ldirectord `httpmethod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HttpMethod {
    /// `GET` (ldirectord default): status and body are checked.
    #[default]
    Get,
    /// `HEAD`: no body; `receive` is matched against the response header lines.
    Head,
}

impl HttpMethod {
    /// ldirectord's word.
    pub fn name(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
        }
    }
}

/// Largest compiled `receive` regex, so a hostile pattern cannot exhaust memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A `receive` pattern, compiled once; it displays, compares and hashes as written.
/// Matched anywhere in the answer, like ldirectord's `=~ /$receive/`.
///
/// Clones share one `Regex` behind an `Arc`: cloning a `regex::Regex` shares the program but
/// makes a new match-cache pool (kilobytes, more once used), and every real's check spec and
/// scheduler keys hold such clones: about 100 MB of the checker's RSS at 20,000 reals
/// (docs/benchmarks.md, "HTTP checks at 20,000 real servers").
#[derive(Debug, Clone)]
pub struct Receive {
    regex: std::sync::Arc<regex::Regex>,
}

/// A `receive` pattern the `regex` crate cannot compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{pattern:?} is not a regular expression hbd can use ({why}); Perl-only syntax (look-around, back-references) is not supported"
)]
pub struct ReceiveError {
    /// The pattern as written.
    pub pattern: String,
    /// The regex compiler's reason (its last line).
    pub why: String,
}

impl Receive {
    /// Compiles `pattern`; the error says why (Perl look-around and back-references are not
    /// supported by the `regex` crate).
    pub fn new(pattern: &str) -> Result<Receive, ReceiveError> {
        regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(|regex| Receive {
                regex: std::sync::Arc::new(regex),
            })
            .map_err(|e| {
                let e = e.to_string();
                ReceiveError {
                    pattern: pattern.to_string(),
                    why: e.lines().last().unwrap_or("").trim().to_string(),
                }
            })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }

    /// Does the answer contain a match?
    pub fn is_match(&self, answer: &str) -> bool {
        self.regex.is_match(answer)
    }
}

impl PartialEq for Receive {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Receive {}

impl std::hash::Hash for Receive {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h);
    }
}

/// Everything a checker needs to decide whether a real of one virtual is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    /// Check type.
    pub kind: CheckType,
    /// Negotiate protocol (explicit, or derived from the port).
    pub service: Service,
    /// Negotiate request (URI for http/https); reals may override.
    pub request: Option<String>,
    /// Expected answer; reals may override.
    pub receive: Option<Receive>,
    /// HTTP method.
    pub http_method: HttpMethod,
    /// Host header and TLS name (`virtualhost`); `None` = the real's address.
    pub virtual_host: Option<String>,
    /// Port to check instead of the real's (`checkport`).
    pub check_port: Option<u16>,
    /// Time between checks of one real (`checkinterval`).
    pub interval: Duration,
    /// Timeout of connect, external and ping checks (`checktimeout`).
    pub check_timeout: Duration,
    /// Timeout of negotiate checks (`negotiatetimeout`).
    pub negotiate_timeout: Duration,
    /// ICMP attempts of a ping check (`checkcount`).
    pub ping_count: u32,
    /// Consecutive failures before a real goes down (`failurecount`).
    pub fall: u32,
    /// Consecutive successes before a down real comes back (hbd `risecount`).
    pub rise: u32,
    /// Exact HTTP status required (hbd `statuscode`); `None` = any 2xx, like ldirectord.
    pub status_code: Option<u16>,
    /// `login`, `passwd`, `database`, `secret` of the negotiated services.
    pub credentials: Credentials,
}

impl CheckConfig {
    /// The timeout of one check of this kind (negotiate timeout for negotiate steps).
    pub fn timeout(&self) -> Duration {
        match self.kind {
            CheckType::Negotiate | CheckType::Combined(_) => self.negotiate_timeout,
            _ => self.check_timeout,
        }
    }

    /// Whether a negotiate conversation runs for this check.
    pub fn negotiates(&self) -> bool {
        matches!(self.kind, CheckType::Negotiate | CheckType::Combined(_))
    }
}

/// Service names from `/etc/services` (or a built-in list), used for `host:http`-style ports.
#[derive(Debug, Clone, Default)]
pub struct ServiceNames(HashMap<String, u16>);

impl ServiceNames {
    /// The well-known names hbd knows without `/etc/services`.
    pub fn builtin() -> ServiceNames {
        let mut m = HashMap::new();
        for (n, p) in [
            ("ftp", 21),
            ("ssh", 22),
            ("smtp", 25),
            ("domain", 53),
            ("http", 80),
            ("www", 80),
            ("pop3", 110),
            ("nntp", 119),
            ("imap", 143),
            ("imap2", 143),
            ("ldap", 389),
            ("https", 443),
            ("submission", 587),
            ("ldaps", 636),
            ("imaps", 993),
            ("pop3s", 995),
            ("radius", 1812),
            ("mysql", 3306),
            ("postgresql", 5432),
            ("sip", 5060),
            ("http-alt", 8080),
        ] {
            m.insert(n.to_string(), p);
        }
        ServiceNames(m)
    }

    /// Parses `/etc/services` text (`name port/proto aliases…`) over the built-in list.
    pub fn parse(text: &str) -> ServiceNames {
        let mut s = ServiceNames::builtin();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut w = line.split_whitespace();
            let (Some(name), Some(pp)) = (w.next(), w.next()) else {
                continue;
            };
            let Some(port) = pp.split('/').next().and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            for n in std::iter::once(name).chain(w) {
                s.0.entry(n.to_string()).or_insert(port);
            }
        }
        s
    }

    /// The system's names: `/etc/services` when readable, else the built-in list.
    pub fn system() -> ServiceNames {
        match std::fs::read_to_string("/etc/services") {
            Ok(t) => ServiceNames::parse(&t),
            Err(_) => ServiceNames::builtin(),
        }
    }

    /// The port of a number or a service name.
    fn port(&self, text: &str) -> Result<u16, String> {
        if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
            return match text.parse::<u16>() {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(format!("port {text} is out of range; use 1 to 65535")),
            };
        }
        self.0.get(text).copied().ok_or_else(|| {
            format!("'{text}' is neither a port number nor a service name in /etc/services; write the port number")
        })
    }
}

/// Finds the ldirectord configuration the way ldirectord does: no argument means
/// `ldirectord.cf`; a name is looked up as `<ha_dir>/<name>`, then `<ha_dir>/conf/<name>`, then
/// taken as given (haresources `ldirectord::<name>`).
pub fn locate_ldirectord_cf(arg: Option<&str>, ha_dir: &Path) -> PathBuf {
    let name = arg.unwrap_or("ldirectord.cf");
    let given = Path::new(name);
    if given.is_absolute() {
        return given.to_path_buf();
    }
    for candidate in [ha_dir.join(name), ha_dir.join("conf").join(name)] {
        if candidate.is_file() {
            return candidate;
        }
    }
    given.to_path_buf()
}

/// Reads and validates an ldirectord configuration file. Returns the configuration and its
/// warnings, or every error (and warning) found.
pub fn parse_ldirectord(path: &Path) -> Result<(DirectorConfig, Vec<Diagnostic>), ConfigError> {
    let mut diags = Vec::new();
    let Some(text) = read_text(path, "ldirectord configuration", &mut diags) else {
        return Err(ConfigError { diagnostics: diags });
    };
    parse_ldirectord_str(&text, path, &ServiceNames::system())
}

/// Validates ldirectord configuration text; `file` only names the diagnostics.
pub fn parse_ldirectord_str(
    text: &str,
    file: &Path,
    names: &ServiceNames,
) -> Result<(DirectorConfig, Vec<Diagnostic>), ConfigError> {
    let mut diags = Vec::new();
    let (globals, blocks) = lex(text, file, &mut diags);
    let config = build(file, &globals, &blocks, names, &mut diags);
    finish(Some(config), diags)
}

// ---------------------------------------------------------------------------------------------
// Front door 1: ldirectord.cf text → entries.

/// One directive as written, in either front door.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Directive name, lower-cased.
    key: String,
    /// Its value.
    value: Value,
    /// 1-based line.
    line: Option<usize>,
}

/// A directive's value: text (ldirectord and YAML scalars) or an already structured real.
#[derive(Debug, Clone)]
enum Value {
    Text(String),
    Real(RealSpec),
}

/// A `virtual =` block: the opening entry and the directives inside it.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    opener: Entry,
    entries: Vec<Entry>,
}

/// Strips a `#` comment that starts a word outside double quotes.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted && prev_space => return &line[..i],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// Removes one pair of surrounding double quotes.
fn unquote(v: &str) -> &str {
    let v = v.trim();
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

/// Lines → global entries and virtual blocks (ldirectord's indentation rule).
fn lex(text: &str, file: &Path, diags: &mut Vec<Diagnostic>) -> (Vec<Entry>, Vec<Block>) {
    let mut globals = Vec::new();
    let mut blocks: Vec<Block> = Vec::new();
    let mut in_block = false;
    let mut nbsp_warned = false;
    for (i, raw) in text.lines().enumerate() {
        let no = i + 1;
        if raw.contains('\u{a0}') && !nbsp_warned {
            nbsp_warned = true;
            diags.push(Diagnostic::warning(
                file,
                Some(no),
                "non-breaking spaces (U+00A0, usually pasted from a web page) are read as spaces; other tools may not accept them: replace them with plain spaces",
            ));
        }
        let line = strip_comment(raw);
        if line.trim().is_empty() {
            continue;
        }
        let indented = line.starts_with(char::is_whitespace);
        let body = line.trim();
        let Some((k, v)) = body.split_once('=') else {
            diags.push(Diagnostic::error(
                file,
                Some(no),
                format!("'{body}' is not a directive; write `name = value`"),
            ));
            continue;
        };
        let key = k.trim().to_ascii_lowercase();
        let entry = Entry {
            key: key.clone(),
            value: Value::Text(v.trim().to_string()),
            line: Some(no),
        };
        if key == "virtual" || key == "virtual6" {
            blocks.push(Block {
                opener: entry,
                entries: Vec::new(),
            });
            in_block = true;
        } else if indented && in_block {
            if let Some(b) = blocks.last_mut() {
                b.entries.push(entry);
            }
        } else {
            in_block = false;
            globals.push(entry);
        }
    }
    (globals, blocks)
}

// ---------------------------------------------------------------------------------------------
// Real-server syntax shared by both front doors.

/// A `real =` / `fallback =` value before defaults and the virtual's port are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RealSpec {
    first: IpAddr,
    last: Option<IpAddr>,
    port: Option<u16>,
    forwarding: Option<Forwarding>,
    weight: Option<u32>,
    request: Option<String>,
    receive: Option<String>,
    lower: Option<u32>,
    upper: Option<u32>,
}

impl RealSpec {
    fn at(first: IpAddr, last: Option<IpAddr>, port: Option<u16>) -> RealSpec {
        RealSpec {
            first,
            last,
            port,
            forwarding: None,
            weight: None,
            request: None,
            receive: None,
            lower: None,
            upper: None,
        }
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
}

/// Splits a real line into words and `"quoted strings"`; commas separate like spaces.
fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || c == ',' {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut q = String::new();
            let mut closed = false;
            for c in chars.by_ref() {
                if c == '"' {
                    closed = true;
                    break;
                }
                q.push(c);
            }
            if !closed {
                return Err("a quoted string is not closed; add the missing '\"'".into());
            }
            out.push(Tok::Quoted(q));
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == ',' || c == '"' {
                    break;
                }
                w.push(c);
                chars.next();
            }
            out.push(Tok::Word(w));
        }
    }
    Ok(out)
}

/// `<l:N>` / `<u:N>` connection thresholds.
fn threshold(t: &str) -> Option<(char, Result<u32, String>)> {
    let inner = t.strip_prefix('<')?.strip_suffix('>')?;
    let (kind, n) = inner.split_once(':')?;
    let kind = match kind {
        "l" | "L" => 'l',
        "u" | "U" => 'u',
        _ => return None,
    };
    Some((
        kind,
        n.trim()
            .parse::<u32>()
            .map_err(|_| format!("threshold '{t}' needs a whole number, e.g. <u:1000>")),
    ))
}

/// Parses an address, `[v6]` address, hostname error, or bare IPv6 (no port).
fn parse_host(h: &str) -> Result<IpAddr, String> {
    let inner = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    inner.parse::<IpAddr>().map_err(|_| {
        if inner.is_empty() {
            "an address is missing".to_string()
        } else {
            format!(
                "'{inner}' is not an IP address; hbd does not resolve host names in its configuration, write the address"
            )
        }
    })
}

/// Splits `host[:port]` where host may be `[v6]` or a bare IPv6 address.
fn split_port(s: &str) -> (&str, Option<&str>) {
    if s.starts_with('[') {
        match s.find(']') {
            Some(i) => {
                let rest = &s[i + 1..];
                (&s[..=i], rest.strip_prefix(':'))
            }
            None => (s, None),
        }
    } else if s.parse::<IpAddr>().is_ok() {
        (s, None)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    }
}

/// `addr[->addr2][:port]`.
fn parse_real_address(
    s: &str,
    names: &ServiceNames,
) -> Result<(IpAddr, Option<IpAddr>, Option<u16>), String> {
    let (first, rest) = match s.split_once("->") {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    match rest {
        None => {
            let (h, p) = split_port(first);
            let ip = parse_host(h)?;
            let port = p.map(|p| names.port(p)).transpose()?;
            Ok((ip, None, port))
        }
        Some(rest) => {
            if rest.contains("->") {
                return Err(format!(
                    "'{s}' has more than one '->'; write a range as FIRST->LAST[:PORT]"
                ));
            }
            let (h, p) = split_port(rest);
            let a = parse_host(first)?;
            let b = parse_host(h)?;
            let port = p.map(|p| names.port(p)).transpose()?;
            match (a, b) {
                (IpAddr::V4(x), IpAddr::V4(y)) if u32::from(x) <= u32::from(y) => {
                    if u32::from(y) - u32::from(x) >= MAX_RANGE {
                        return Err(format!(
                            "range {x}->{y} holds more than {MAX_RANGE} addresses; split it or check for a typo"
                        ));
                    }
                    Ok((a, Some(b), port))
                }
                (IpAddr::V4(x), IpAddr::V4(y)) => Err(format!(
                    "range {x}->{y} goes backwards; write the lower address first"
                )),
                _ => Err("address ranges are IPv4 only; list IPv6 reals one per line".into()),
            }
        }
    }
}

/// The value of a `real =` or `fallback =` line.
fn parse_real_line(value: &str, names: &ServiceNames) -> Result<RealSpec, String> {
    let toks = tokenize(value)?;
    let mut it = toks.into_iter();
    let addr = match it.next() {
        Some(Tok::Word(w)) => w,
        Some(Tok::Quoted(q)) => q,
        None => return Err("the address is missing; write ADDRESS[:PORT] gate|masq|ipip".into()),
    };
    let (first, last, port) = parse_real_address(&addr, names)?;
    let mut spec = RealSpec::at(first, last, port);
    let mut strings = Vec::new();
    for t in it {
        let text = match &t {
            Tok::Word(w) | Tok::Quoted(w) => w.as_str(),
        };
        if let Some((kind, n)) = threshold(text) {
            let n = n?;
            if kind == 'l' {
                spec.lower = Some(n);
            } else {
                spec.upper = Some(n);
            }
            continue;
        }
        match t {
            Tok::Word(w) => {
                if spec.forwarding.is_none()
                    && strings.is_empty()
                    && let Ok(f) = w.to_ascii_lowercase().parse::<Forwarding>()
                {
                    spec.forwarding = Some(f);
                    continue;
                }
                if spec.weight.is_none()
                    && strings.is_empty()
                    && w.bytes().all(|b| b.is_ascii_digit())
                {
                    spec.weight =
                        Some(w.parse::<u32>().map_err(|_| {
                            format!("weight {w} is too large; use 0 to {MAX_WEIGHT}")
                        })?);
                    continue;
                }
                return Err(format!(
                    "unexpected '{w}'; write ADDRESS[:PORT] gate|masq|ipip [WEIGHT] [\"REQUEST\", \"RECEIVE\"]"
                ));
            }
            Tok::Quoted(q) => strings.push(q),
        }
    }
    match strings.len() {
        0 => {}
        2 => {
            let mut s = strings.into_iter();
            spec.request = s.next();
            spec.receive = s.next();
        }
        n => {
            return Err(format!(
                "{n} quoted string(s) given; a real takes none or two: \"REQUEST\", \"RECEIVE\""
            ));
        }
    }
    Ok(spec)
}

// ---------------------------------------------------------------------------------------------
// The resolver shared by both front doors.

/// Where a directive may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Global,
    Virtual,
}

/// A `checktype` as written (external-perl kept apart only to warn once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CheckWord {
    Connect,
    Negotiate,
    Combined(u32),
    External,
    Ping,
    On,
    Off,
}

/// Settings of one scope; the global scope's serve as defaults for every block.
#[derive(Debug, Clone, Default)]
struct Settings {
    checktimeout: Option<Duration>,
    negotiatetimeout: Option<Duration>,
    checkinterval: Option<Duration>,
    checkcount: Option<u32>,
    failurecount: Option<u32>,
    risecount: Option<u32>,
    fallback4: Option<(RealSpec, Option<usize>)>,
    fallback6: Option<(RealSpec, Option<usize>)>,
    fallbackcommand: Option<String>,
    quiescent: Option<bool>,
    cleanstop: Option<bool>,
    reals: Vec<(RealSpec, Option<usize>)>,
    real_lines: usize,
    service: Option<Service>,
    request: Option<String>,
    receive: Option<Receive>,
    httpmethod: Option<HttpMethod>,
    virtualhost: Option<String>,
    checktype: Option<CheckWord>,
    checkport: Option<u16>,
    checkcommand: Option<(String, Option<usize>)>,
    scheduler: Option<Scheduler>,
    persistent: Option<Duration>,
    netmask: Option<(String, Option<usize>)>,
    protocol: Option<Protocol>,
    statuscode: Option<u16>,
    servicename: Option<String>,
    comment: Option<String>,
    /// `login`, `passwd`, `database`, `secret` with the line of each (warned where unused).
    credentials: Vec<(&'static str, String, Option<usize>)>,
}

/// Directives that belong to the whole file only.
const GLOBAL_ONLY: [&str; 9] = [
    "autoreload",
    "callback",
    "logfile",
    "execute",
    "supervised",
    "fork",
    "readdquiescent",
    "maintenancedir",
    "httpkeepalive",
];

/// Directives that belong inside a `virtual` block only.
const VIRTUAL_ONLY: [&str; 25] = [
    "real",
    "real6",
    "service",
    "request",
    "receive",
    "httpmethod",
    "virtualhost",
    "checktype",
    "checkport",
    "checkcommand",
    "scheduler",
    "schedflags",
    "persistent",
    "netmask",
    "protocol",
    "login",
    "passwd",
    "database",
    "secret",
    "monitorfile",
    "servicename",
    "comment",
    "load",
    "ops",
    "statuscode",
];

/// Directives allowed in both places (a block's value overrides the global one).
const OVERRIDABLE: [&str; 17] = [
    "checktimeout",
    "negotiatetimeout",
    "connecttimeout",
    "checkinterval",
    "checkcount",
    "failurecount",
    "risecount",
    "fallback",
    "fallback6",
    "fallbackcommand",
    "quiescent",
    "cleanstop",
    "emailalert",
    "emailalertfreq",
    "emailalertstatus",
    "emailalertfrom",
    "smtp",
];

/// Directives that may appear more than once in one scope.
const REPEATABLE: [&str; 3] = ["real", "real6", "execute"];

/// ldirectord's yes/no: heartbeat's booleans, with the message the directive errors use.
fn parse_bool(v: &str) -> Result<bool, String> {
    parse_bool_word(v).ok_or_else(|| format!("'{v}' is not yes or no"))
}

fn parse_count(v: &str, what: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "'{v}' is not a {what}; write a whole number of at least 1"
        )),
    }
}

fn parse_secs(v: &str, what: &str) -> Result<Duration, String> {
    match parse_duration(v) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("{what} must be more than 0")),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_checktype(v: &str) -> Result<CheckWord, String> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "connect" => CheckWord::Connect,
        "negotiate" => CheckWord::Negotiate,
        "external" | "external-perl" => CheckWord::External,
        "ping" => CheckWord::Ping,
        "on" => CheckWord::On,
        "off" => CheckWord::Off,
        n if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            CheckWord::Combined(parse_count(n, "count of connect checks")?)
        }
        _ => {
            return Err(format!(
                "'{v}' is unknown; use connect, negotiate, external, external-perl, ping, on, off or a number N (N connects, then a negotiate)"
            ));
        }
    })
}

/// Applies one directive to the settings of its scope (and to the file-wide ones).
fn apply(
    e: &Entry,
    scope: Scope,
    s: &mut Settings,
    g: &mut DirectorConfig,
    names: &ServiceNames,
    file: &Path,
    diags: &mut Vec<Diagnostic>,
) {
    let key = e.key.as_str();
    let err = |m: String| Diagnostic::error(file, e.line, m);
    let warn = |m: String| Diagnostic::warning(file, e.line, m);
    let known =
        GLOBAL_ONLY.contains(&key) || VIRTUAL_ONLY.contains(&key) || OVERRIDABLE.contains(&key);
    if !known {
        let hint = GLOBAL_ONLY
            .iter()
            .chain(&VIRTUAL_ONLY)
            .chain(&OVERRIDABLE)
            .find(|k| k.len().abs_diff(key.len()) <= 2 && edit_distance(k, key) <= 2)
            .map(|k| format!("did you mean '{k}'? "))
            .unwrap_or_default();
        diags.push(err(format!(
            "'{key}' is not an ldirectord directive; {hint}see \"Director\" in docs/configuration.md for the list"
        )));
        return;
    }
    if scope == Scope::Virtual && GLOBAL_ONLY.contains(&key) {
        diags.push(err(format!(
            "{key} is a global directive and cannot be set per virtual service; move it above the first virtual= line, without indentation"
        )));
        return;
    }
    if scope == Scope::Global && VIRTUAL_ONLY.contains(&key) {
        diags.push(err(format!(
            "{key} belongs to a virtual service; indent it under its virtual= line"
        )));
        return;
    }
    let real = match &e.value {
        Value::Real(r) => Some(r.clone()),
        Value::Text(_) => None,
    };
    let text = match &e.value {
        Value::Text(t) => t.clone(),
        Value::Real(_) => String::new(),
    };
    let v = unquote(&text).to_string();
    let needs_value = !matches!(
        key,
        "virtualhost"
            | "request"
            | "receive"
            | "comment"
            | "servicename"
            | "load"
            | "callback"
            | "fallbackcommand"
            | "emailalert"
            | "emailalertfrom"
            | "smtp"
            | "login"
            | "passwd"
            | "database"
            | "secret"
            | "monitorfile"
            | "schedflags"
    );
    if needs_value && real.is_none() && v.is_empty() {
        diags.push(err(format!("{key} has no value; write `{key} = VALUE`")));
        return;
    }
    let opt = |v: &str| (!v.is_empty()).then(|| v.to_string());
    let set = |r: Result<(), String>, diags: &mut Vec<Diagnostic>| {
        if let Err(m) = r {
            diags.push(err(format!("{key}: {m}")));
        }
    };
    match key {
        "checktimeout" => set(parse_secs(&v, key).map(|d| s.checktimeout = Some(d)), diags),
        "negotiatetimeout" => set(
            parse_secs(&v, key).map(|d| s.negotiatetimeout = Some(d)),
            diags,
        ),
        "connecttimeout" => diags.push(err(
            "connecttimeout is obsolete and refused, as ldirectord itself refuses it; write negotiatetimeout = SECONDS (timeout of negotiate checks) or checktimeout = SECONDS (connect checks)".into(),
        )),
        "checkinterval" => set(parse_secs(&v, key).map(|d| s.checkinterval = Some(d)), diags),
        "checkcount" => set(parse_count(&v, "count").map(|n| s.checkcount = Some(n)), diags),
        "failurecount" => set(parse_count(&v, "count").map(|n| s.failurecount = Some(n)), diags),
        "risecount" => set(parse_count(&v, "count").map(|n| s.risecount = Some(n)), diags),
        "fallback" | "fallback6" => {
            let spec = match real {
                Some(r) => Ok(r),
                None => parse_real_line(&text, names),
            };
            match spec {
                Ok(r) if r.last.is_some() => {
                    diags.push(err(format!("{key} takes one address, not a range")))
                }
                Ok(r) if r.weight.is_some() || r.request.is_some() => diags.push(err(format!(
                    "{key} takes ADDRESS[:PORT] [gate|masq|ipip] only; the fallback always has weight 1 and is not checked"
                ))),
                Ok(r) => {
                    let slot = match r.first {
                        IpAddr::V4(_) => &mut s.fallback4,
                        IpAddr::V6(_) => &mut s.fallback6,
                    };
                    *slot = Some((r, e.line));
                }
                Err(m) => diags.push(err(format!("{key}: {m}"))),
            }
        }
        "fallbackcommand" => s.fallbackcommand = opt(&v),
        "quiescent" => set(parse_bool(&v).map(|b| s.quiescent = Some(b)), diags),
        "cleanstop" => set(parse_bool(&v).map(|b| s.cleanstop = Some(b)), diags),
        "autoreload" => set(parse_bool(&v).map(|b| g.autoreload = b), diags),
        "readdquiescent" => {
            set(parse_bool(&v).map(|b| g.readd_quiescent = b), diags);
            diags.push(warn(
                "readdquiescent is not acted on yet: a quiesced real removed from IPVS by hand is put back (at weight 0) at the director's next dataplane update, whatever this says".into(),
            ));
        }
        "httpkeepalive" => set(parse_bool(&v).map(|b| g.http_keepalive = b), diags),
        "callback" => {
            g.callback = opt(&v);
            diags.push(warn(
                "callback is not acted on yet: hbd does not run it when the file changes; copy the file to the peer yourself".into(),
            ));
        }
        "maintenancedir" => g.maintenance_dir = Some(PathBuf::from(&v)),
        "logfile" => diags.push(warn(
            "logfile is ignored: hbd writes director messages to its own log (ha.cf logfile/logfacility, or YAML logging); remove the line".into(),
        )),
        "emailalert" | "emailalertfreq" | "emailalertstatus" | "emailalertfrom" | "smtp" => {
            diags.push(warn(format!(
                "{key} is ignored: hbd does not send e-mail; follow real-server changes in the log or with `hactl status`"
            )))
        }
        "execute" => diags.push(warn(format!(
            "execute = {v} is ignored: hbd does not start other ldirectord instances; move those virtual services into this file"
        ))),
        "supervised" => {
            set(parse_bool(&v).map(|_| ()), diags);
            diags.push(warn(
                "supervised is ignored: hbd never daemonizes (run it under systemd); remove the line".into(),
            ));
        }
        "fork" => {
            set(parse_bool(&v).map(|_| ()), diags);
            diags.push(warn(
                "fork is ignored: hbd always checks every virtual service concurrently; remove the line".into(),
            ));
        }
        "real" | "real6" => {
            s.real_lines += 1;
            let spec = match real {
                Some(r) => Ok(r),
                None => parse_real_line(&text, names),
            };
            match spec {
                Ok(r) if r.forwarding.is_none() => diags.push(err(format!(
                    "{key} needs a forwarding method after the address: gate (direct routing), masq (NAT) or ipip (tunnel)"
                ))),
                Ok(r) => s.reals.push((r, e.line)),
                Err(m) => diags.push(err(format!("{key}: {m}"))),
            }
        }
        "service" => set(
            Service::parse(&v)
                .map(|x| s.service = Some(x))
                .map_err(|e| e.to_string()),
            diags,
        ),
        "request" => s.request = opt(&v),
        "receive" => match v.as_str() {
            "" => s.receive = None,
            p => set(
                Receive::new(p)
                    .map(|r| s.receive = Some(r))
                    .map_err(|e| e.to_string()),
                diags,
            ),
        },
        "httpmethod" => match v.to_ascii_uppercase().as_str() {
            "GET" => s.httpmethod = Some(HttpMethod::Get),
            "HEAD" => s.httpmethod = Some(HttpMethod::Head),
            _ => diags.push(err(format!("httpmethod '{v}' is unknown; use GET or HEAD"))),
        },
        "virtualhost" => s.virtualhost = opt(&v),
        "checktype" => {
            if v.eq_ignore_ascii_case("external-perl") {
                diags.push(warn(
                    "checktype external-perl is run as external: hbd executes the checkcommand script instead of loading it as Perl; the result is the same".into(),
                ));
            }
            set(parse_checktype(&v).map(|c| s.checktype = Some(c)), diags)
        }
        "checkport" => match v.parse::<u16>() {
            Ok(p) if p > 0 => s.checkport = Some(p),
            _ => diags.push(err(format!("checkport '{v}' is not a port; use 1 to 65535"))),
        },
        "checkcommand" => s.checkcommand = Some((v.clone(), e.line)),
        "scheduler" => set(
            v.parse::<Scheduler>()
                .map(|x| s.scheduler = Some(x))
                .map_err(|_| {
                    let known: Vec<&str> = Scheduler::ALL.iter().map(|x| x.name()).collect();
                    // `sip` is often taken for one: it is `ipvsadm --pe sip`, another option.
                    let what = if v == "sip" {
                        ": it is IPVS's SIP persistence engine (ipvsadm --pe sip, Call-ID persistence), which hbd does not program"
                    } else {
                        ""
                    };
                    format!(
                        "'{v}' is not a scheduler hbd supports{what}; use one of: {}",
                        known.join(", ")
                    )
                }),
            diags,
        ),
        "schedflags" => diags.push(warn(
            "schedflags is ignored: hbd does not set IPVS scheduler flags yet".into(),
        )),
        "persistent" => set(parse_secs(&v, key).map(|d| s.persistent = Some(d)), diags),
        "netmask" => s.netmask = Some((v.clone(), e.line)),
        "protocol" => match v.to_ascii_lowercase().as_str() {
            "tcp" => s.protocol = Some(Protocol::Tcp),
            "udp" => s.protocol = Some(Protocol::Udp),
            "fwm" => s.protocol = Some(Protocol::Fwm),
            _ => diags.push(err(format!("protocol '{v}' is unknown; use tcp, udp or fwm"))),
        },
        "login" | "passwd" | "database" | "secret" => {
            let k = match key {
                "login" => "login",
                "passwd" => "passwd",
                "database" => "database",
                _ => "secret",
            };
            s.credentials.retain(|(c, _, _)| *c != k);
            s.credentials.push((k, v.clone(), e.line));
        }
        "monitorfile" => diags.push(warn(
            "monitorfile is ignored: check results go to hbd's log and `hactl status`".into(),
        )),
        "servicename" => s.servicename = opt(&v),
        "comment" => s.comment = opt(&v),
        "load" => {}
        "ops" => match parse_bool(&v) {
            Ok(true) => diags.push(warn(
                "ops = yes is not applied: hbd's dataplane has no one-packet scheduling yet; UDP datagrams are scheduled per connection".into(),
            )),
            Ok(false) => {}
            Err(m) => diags.push(err(format!("ops: {m}"))),
        },
        "statuscode" => match v.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => s.statuscode = Some(c),
            _ => diags.push(err(format!(
                "statuscode '{v}' is not an HTTP status; use 100 to 599"
            ))),
        },
        _ => diags.push(err(format!("'{key}' cannot be used here"))),
    }
}

/// A virtual service in prose: `192.0.2.10:80 (tcp)`, `fwmark 7 (IPv6)`.
pub(crate) fn describe(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Tcp(a) => format!("{a} (tcp)"),
        ServiceKey::Udp(a) => format!("{a} (udp)"),
        ServiceKey::Fwmark(m, Family::V4) => format!("fwmark {m}"),
        ServiceKey::Fwmark(m, Family::V6) => format!("fwmark {m} (IPv6)"),
    }
}

/// The virtual's address as written.
#[derive(Debug, Clone, Copy)]
enum VirtualAddr {
    Ip(SocketAddr),
    Fwmark(u32),
}

fn parse_virtual(v: &str, names: &ServiceNames) -> Result<VirtualAddr, String> {
    let v = unquote(v);
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return match v.parse::<u32>() {
            Ok(m) if m > 0 => Ok(VirtualAddr::Fwmark(m)),
            _ => Err(format!(
                "firewall mark {v} is out of range; use 1 to 4294967295"
            )),
        };
    }
    let (h, p) = split_port(v);
    let ip = parse_host(h)?;
    let Some(p) = p else {
        return Err(format!(
            "virtual '{v}' has no port; write ADDRESS:PORT (e.g. {ip}:80), [IPV6]:PORT, or a firewall mark"
        ));
    };
    Ok(VirtualAddr::Ip(SocketAddr::new(ip, names.port(p)?)))
}

fn parse_netmask(v: &str, family: Family) -> Result<Netmask, String> {
    let max = match family {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    if let Ok(p) = v.trim_start_matches('/').parse::<u8>() {
        if p <= max {
            return Ok(Netmask { prefix: p });
        }
        return Err(format!("netmask /{p} is too long; use 0 to {max}"));
    }
    match (v.parse::<Ipv4Addr>(), family) {
        (Ok(m), Family::V4) => Netmask::from_v4(m)
            .ok_or_else(|| format!("netmask {v} is not contiguous; use e.g. 255.255.255.0")),
        _ => Err(format!(
            "netmask '{v}' is not a mask; write 255.255.255.0 or a prefix length such as 24"
        )),
    }
}

/// Resolves entries into the validated configuration, applying ldirectord's defaults.
pub(crate) fn build(
    file: &Path,
    globals: &[Entry],
    blocks: &[Block],
    names: &ServiceNames,
    diags: &mut Vec<Diagnostic>,
) -> DirectorConfig {
    let mut g = DirectorConfig {
        file: Origin(Some(file.to_path_buf())),
        ..DirectorConfig::default()
    };
    let mut gs = Settings::default();
    let mut seen = BTreeSet::new();
    for e in globals {
        warn_repeat(e, &mut seen, file, diags);
        apply(e, Scope::Global, &mut gs, &mut g, names, file, diags);
    }
    let mut keys = BTreeSet::new();
    for b in blocks {
        let mut s = Settings::default();
        let mut seen = BTreeSet::new();
        for e in &b.entries {
            warn_repeat(e, &mut seen, file, diags);
            apply(e, Scope::Virtual, &mut s, &mut g, names, file, diags);
        }
        if let Some(v) = resolve(b, &s, &gs, names, file, diags) {
            if !keys.insert(v.key) {
                diags.push(Diagnostic::error(
                    file,
                    b.opener.line,
                    format!(
                        "virtual service {} is defined twice; merge the two blocks",
                        describe(&v.key)
                    ),
                ));
            } else {
                g.virtuals.push(v);
            }
        }
    }
    g
}

fn warn_repeat(e: &Entry, seen: &mut BTreeSet<String>, file: &Path, diags: &mut Vec<Diagnostic>) {
    if !REPEATABLE.contains(&e.key.as_str()) && !seen.insert(e.key.clone()) {
        diags.push(Diagnostic::warning(
            file,
            e.line,
            format!(
                "{} is given twice here; the later value is used; remove one",
                e.key
            ),
        ));
    }
}

/// One real (or fallback) with the virtual's port rule: gate and ipip cannot change the port,
/// so a different port is replaced by the virtual's (with a warning), as ldirectord does.
fn resolve_real(
    spec: &RealSpec,
    addr: IpAddr,
    vport: Option<u16>,
    default_fwd: Forwarding,
    line: Option<usize>,
    file: &Path,
    diags: &mut Vec<Diagnostic>,
) -> RealConfig {
    let forwarding = spec.forwarding.unwrap_or(default_fwd);
    let port = match (vport, spec.port) {
        (None, p) => p.unwrap_or(0),
        (Some(v), None) => v,
        (Some(v), Some(p)) if p == v || forwarding == Forwarding::Masq => p,
        (Some(v), Some(p)) => {
            diags.push(Diagnostic::warning(
                file,
                line,
                format!(
                    "{addr}: port {p} is replaced by the virtual port {v}: {} forwarding cannot change the port (only masq can)",
                    forwarding.name()
                ),
            ));
            v
        }
    };
    RealConfig {
        addr: SocketAddr::new(addr, port),
        line: Origin(line),
        forwarding,
        weight: spec.weight.unwrap_or(DEFAULT_WEIGHT),
        request: spec.request.clone().filter(|r| !r.is_empty()),
        receive: None,
        lower_threshold: spec.lower.unwrap_or(0),
        upper_threshold: spec.upper.unwrap_or(0),
    }
}

fn expand(spec: &RealSpec) -> Vec<IpAddr> {
    match (spec.first, spec.last) {
        (IpAddr::V4(a), Some(IpAddr::V4(b))) => (u32::from(a)..=u32::from(b))
            .map(|x| IpAddr::V4(Ipv4Addr::from(x)))
            .collect(),
        (a, _) => vec![a],
    }
}

fn resolve(
    b: &Block,
    s: &Settings,
    gs: &Settings,
    names: &ServiceNames,
    file: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Option<VirtualConfig> {
    let line = b.opener.line;
    let err = |m: String| Diagnostic::error(file, line, m);
    let warn = |m: String| Diagnostic::warning(file, line, m);
    let text = match &b.opener.value {
        Value::Text(t) => t.clone(),
        Value::Real(_) => String::new(),
    };
    let addr = match parse_virtual(&text, names) {
        Ok(a) => a,
        Err(m) => {
            diags.push(err(format!("{}: {m}", b.opener.key)));
            return None;
        }
    };
    let six = b.opener.key == "virtual6";
    let family = match addr {
        VirtualAddr::Ip(a) => Family::of(&a.ip()),
        VirtualAddr::Fwmark(_) if six => Family::V6,
        VirtualAddr::Fwmark(_) => Family::V4,
    };
    let (key, protocol, vport) = match (addr, s.protocol) {
        (VirtualAddr::Fwmark(m), None | Some(Protocol::Fwm)) => {
            (ServiceKey::Fwmark(m, family), Protocol::Fwm, None)
        }
        (VirtualAddr::Fwmark(m), Some(p)) => {
            diags.push(err(format!(
                "virtual {m} is a firewall mark, so its protocol is fwm, not {}; remove the protocol line",
                p.name()
            )));
            return None;
        }
        (VirtualAddr::Ip(a), Some(Protocol::Fwm)) => {
            diags.push(err(format!(
                "protocol fwm needs a firewall mark (virtual = 1), not {a}; use tcp or udp"
            )));
            return None;
        }
        (VirtualAddr::Ip(a), Some(Protocol::Udp)) => {
            (ServiceKey::Udp(a), Protocol::Udp, Some(a.port()))
        }
        (VirtualAddr::Ip(a), Some(Protocol::Tcp)) => {
            (ServiceKey::Tcp(a), Protocol::Tcp, Some(a.port()))
        }
        (VirtualAddr::Ip(a), None) if a.port() == 53 => {
            (ServiceKey::Udp(a), Protocol::Udp, Some(53))
        }
        (VirtualAddr::Ip(a), None) => (ServiceKey::Tcp(a), Protocol::Tcp, Some(a.port())),
    };
    let mut ok = true;

    // Reals.
    let mut reals: Vec<RealConfig> = Vec::new();
    for (spec, rline) in &s.reals {
        let receive = match spec.receive.as_deref() {
            Some(p) if !p.is_empty() => match Receive::new(p) {
                Ok(r) => Some(r),
                Err(m) => {
                    diags.push(Diagnostic::error(
                        file,
                        *rline,
                        format!("real: receive {m}"),
                    ));
                    ok = false;
                    None
                }
            },
            _ => None,
        };
        for a in expand(spec) {
            if Family::of(&a) != family {
                diags.push(Diagnostic::error(
                    file,
                    *rline,
                    format!(
                        "real {a} is not of the virtual service's address family; use real6 with an IPv6 virtual6, or real with an IPv4 virtual"
                    ),
                ));
                ok = false;
                break;
            }
            let mut r = resolve_real(spec, a, vport, Forwarding::Gate, *rline, file, diags);
            if r.weight > MAX_WEIGHT {
                diags.push(Diagnostic::error(
                    file,
                    *rline,
                    format!("weight {} is too large; use 0 to {MAX_WEIGHT}", r.weight),
                ));
                ok = false;
            }
            r.receive = receive.clone();
            if reals.iter().any(|x| x.addr == r.addr) {
                diags.push(Diagnostic::error(
                    file,
                    *rline,
                    format!(
                        "real {} is listed twice in this virtual service; remove one",
                        r.addr
                    ),
                ));
                ok = false;
                continue;
            }
            reals.push(r);
        }
    }
    if s.real_lines == 0 {
        diags.push(warn(format!(
            "virtual service {} has no real servers; only its fallback (if any) will be used",
            describe(&key)
        )));
    }

    // Fallback: the block's, else the global one, of the virtual's family.
    let fb = match family {
        Family::V4 => s.fallback4.as_ref().or(gs.fallback4.as_ref()),
        Family::V6 => s.fallback6.as_ref().or(gs.fallback6.as_ref()),
    };
    let fallback = fb
        .map(|(spec, fline)| {
            resolve_real(
                spec,
                spec.first,
                vport,
                Forwarding::Gate,
                *fline,
                file,
                diags,
            )
        })
        .map(|mut f| {
            f.weight = 1;
            f
        });

    // Persistence.
    let persistence = match s.persistent {
        Some(timeout) => {
            let netmask = match &s.netmask {
                Some((m, l)) => match parse_netmask(m, family) {
                    Ok(n) => n,
                    Err(m) => {
                        diags.push(Diagnostic::error(file, *l, m));
                        ok = false;
                        Netmask::host(family)
                    }
                },
                None => Netmask::host(family),
            };
            Some(Persistence { timeout, netmask })
        }
        None => {
            if let Some((_, l)) = &s.netmask {
                diags.push(Diagnostic::warning(
                    file,
                    *l,
                    "netmask has no effect without persistent; add persistent = SECONDS or remove it",
                ));
            }
            None
        }
    };

    // Check.
    let check_port = s.checkport;
    let service = s
        .service
        .clone()
        .unwrap_or_else(|| match vport.or(check_port) {
            Some(p) => Service::from_port(p),
            None => Service::None,
        });
    let word = s.checktype.unwrap_or(CheckWord::Negotiate);
    let kind = match word {
        CheckWord::Connect => CheckType::Connect,
        CheckWord::Negotiate => CheckType::Negotiate,
        CheckWord::Combined(n) => CheckType::Combined(n),
        CheckWord::Ping => CheckType::Ping,
        CheckWord::On => CheckType::On,
        CheckWord::Off => CheckType::Off,
        CheckWord::External => {
            let command = match &s.checkcommand {
                Some((c, _)) if !c.is_empty() => c.clone(),
                _ => {
                    diags.push(warn(format!(
                        "checktype external without checkcommand runs {DEFAULT_CHECK_COMMAND}: every real is always up; add checkcommand = \"/path/to/script\""
                    )));
                    DEFAULT_CHECK_COMMAND.to_string()
                }
            };
            CheckType::External { command }
        }
    };
    if word != CheckWord::External
        && let Some((_, l)) = &s.checkcommand
    {
        diags.push(Diagnostic::warning(
            file,
            *l,
            "checkcommand is only used by checktype = external; it is ignored here",
        ));
    }
    if vport.is_none()
        && check_port.is_none()
        && matches!(
            kind,
            CheckType::Connect | CheckType::Negotiate | CheckType::Combined(_)
        )
        && let Some(r) = reals.iter().find(|r| r.addr.port() == 0)
    {
        diags.push(warn(format!(
            "real {} of firewall-mark service {} has no port, so its checks have none to connect to; add checkport = PORT or give the real a port",
            r.addr.ip(),
            describe(&key)
        )));
    }
    let ct = s.checktimeout.or(gs.checktimeout);
    let nt = s.negotiatetimeout.or(gs.negotiatetimeout);
    let check = CheckConfig {
        kind,
        service,
        request: s.request.clone(),
        receive: s.receive.clone(),
        http_method: s.httpmethod.unwrap_or(HttpMethod::Get),
        virtual_host: s.virtualhost.clone(),
        check_port,
        interval: s
            .checkinterval
            .or(gs.checkinterval)
            .unwrap_or(DEFAULT_CHECK_INTERVAL),
        check_timeout: ct.or(nt).unwrap_or(DEFAULT_CHECK_TIMEOUT),
        negotiate_timeout: nt.or(ct).unwrap_or(DEFAULT_NEGOTIATE_TIMEOUT),
        ping_count: s
            .checkcount
            .or(gs.checkcount)
            .unwrap_or(DEFAULT_CHECK_COUNT),
        fall: s
            .failurecount
            .or(gs.failurecount)
            .unwrap_or(DEFAULT_FAILURE_COUNT),
        rise: s.risecount.or(gs.risecount).unwrap_or(DEFAULT_RISE_COUNT),
        status_code: s.statuscode,
        credentials: credentials_of(s),
    };
    // A HEAD answer has no body, so a `receive` string can never match (ldirectord's
    // check_http has the same trap): say so rather than let every real stay down.
    if check.negotiates()
        && matches!(check.service, Service::Http | Service::Https)
        && check.http_method == HttpMethod::Head
        && (check.receive.is_some() || reals.iter().any(|r| r.receive.is_some()))
    {
        diags.push(warn(format!(
            "virtual service {}: httpmethod = HEAD with receive can never pass (a HEAD answer has no body to match); use httpmethod = GET, or remove receive",
            describe(&key)
        )));
    }
    if check.negotiates() && !check.service.is_supported() {
        let how = if s.service.is_some() {
            "service"
        } else {
            "port-derived service"
        };
        let known: Vec<&str> = NegotiatedService::ALL.iter().map(|n| n.name()).collect();
        diags.push(err(format!(
            "virtual service {}: negotiate checks for {how} '{}' are not supported by hbd (it negotiates http, https, none, {}); use checktype = connect, or checktype = external with a script",
            describe(&key),
            check.service.name(),
            known.join(", ")
        )));
        ok = false;
    }
    ok &= check_negotiated(&check, s, &reals, &key, file, line, diags);

    ok.then(|| VirtualConfig {
        key,
        line: Origin(line),
        protocol,
        scheduler: s.scheduler.unwrap_or(Scheduler::Wrr),
        persistence,
        reals,
        fallback,
        fallback_command: s
            .fallbackcommand
            .clone()
            .or_else(|| gs.fallbackcommand.clone()),
        check,
        quiescent: s.quiescent.or(gs.quiescent).unwrap_or(true),
        cleanstop: s.cleanstop.or(gs.cleanstop).unwrap_or(true),
        service_name: s.servicename.clone(),
        comment: s.comment.clone(),
    })
}

/// The credentials written in one virtual block (the last of each directive wins).
fn credentials_of(s: &Settings) -> Credentials {
    let get = |k: &str| {
        s.credentials
            .iter()
            .find(|(c, _, _)| *c == k)
            .map(|(_, v, _)| v.clone())
            .filter(|v| !v.is_empty())
    };
    Credentials {
        login: get("login"),
        passwd: get("passwd"),
        database: get("database"),
        secret: get("secret"),
    }
}

/// What a negotiated service needs that ldirectord would only find out at check time (a
/// check that can never pass), refused here; credentials a service does not use are warned
/// at their own line. Returns false when the virtual is refused.
fn check_negotiated(
    check: &CheckConfig,
    s: &Settings,
    reals: &[RealConfig],
    key: &ServiceKey,
    file: &Path,
    line: Option<usize>,
    diags: &mut Vec<Diagnostic>,
) -> bool {
    use NegotiatedService as N;
    let negotiated = match (&check.service, check.negotiates()) {
        (Service::Negotiated(n), true) => Some(*n),
        _ => None,
    };
    for (k, _, l) in &s.credentials {
        if !negotiated.is_some_and(|n| n.uses(k)) {
            let what = match negotiated {
                Some(n) => format!("service {} does not use it", n.name()),
                None => format!(
                    "only negotiate checks of ftp, imap, ldap, mysql, pgsql, pop, radius and sip use it (this one: checktype {}, service {})",
                    checktype_word(&check.kind),
                    check.service.name()
                ),
            };
            diags.push(Diagnostic::warning(
                file,
                *l,
                format!("{k} is ignored: {what}"),
            ));
        }
    }
    let Some(n) = negotiated else {
        return true;
    };
    let c = &check.credentials;
    let every_real_has = |f: &dyn Fn(&RealConfig) -> bool| !reals.is_empty() && reals.iter().all(f);
    let has_request = check.request.is_some() || every_real_has(&|r| r.request.is_some());
    let has_receive = check.receive.is_some() || every_real_has(&|r| r.receive.is_some());
    let missing: Option<&str> = match n {
        N::Mysql | N::Pgsql if c.login.is_none() || !has_request => Some(
            "needs login = \"USER\" and request = \"QUERY\" (a query that returns at least one row when the server may serve), as ldirectord requires",
        ),
        N::Radius if c.login.is_none() || c.secret.is_none() => Some(
            "needs login = \"USER\", passwd = \"PASSWORD\" and secret = \"SECRET\" (the check passes on Access-Accept)",
        ),
        N::Dns if !has_request || !has_receive => Some(
            "needs request = \"NAME\" (the name or address to look up) and receive = \"REGEX\" (matched against the A address or PTR name); without them it can never pass",
        ),
        N::Simpletcp if !has_request || !has_receive => Some(
            "needs request = \"TEXT\" (\\n for a newline) and receive = \"REGEX\" (matched against each answer line)",
        ),
        _ => None,
    };
    match missing {
        Some(m) => {
            diags.push(Diagnostic::error(
                file,
                line,
                format!(
                    "virtual service {}: service {} {m}",
                    describe(key),
                    n.name()
                ),
            ));
            false
        }
        None => true,
    }
}

/// The `checktype` word of a check type, as ldirectord writes it.
fn checktype_word(kind: &CheckType) -> String {
    match kind {
        CheckType::Connect => "connect".into(),
        CheckType::Negotiate => "negotiate".into(),
        CheckType::Combined(n) => n.to_string(),
        CheckType::External { .. } => "external".into(),
        CheckType::Ping => "ping".into(),
        CheckType::On => "on".into(),
        CheckType::Off => "off".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Front door 2: the YAML `director:` section.

/// `director:` in the native YAML: a reference to an ldirectord.cf, or the services inline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDirector {
    ldirectord_cf: Option<PathBuf>,
    checktimeout: Option<Spanned<Scalar>>,
    negotiatetimeout: Option<Spanned<Scalar>>,
    checkinterval: Option<Spanned<Scalar>>,
    checkcount: Option<Spanned<Scalar>>,
    failurecount: Option<Spanned<Scalar>>,
    risecount: Option<Spanned<Scalar>>,
    fallback: Option<Spanned<RawReal>>,
    fallback6: Option<Spanned<RawReal>>,
    fallbackcommand: Option<Spanned<Scalar>>,
    quiescent: Option<Spanned<Scalar>>,
    cleanstop: Option<Spanned<Scalar>>,
    autoreload: Option<Spanned<Scalar>>,
    callback: Option<Spanned<Scalar>>,
    readdquiescent: Option<Spanned<Scalar>>,
    maintenancedir: Option<Spanned<Scalar>>,
    httpkeepalive: Option<Spanned<Scalar>>,
    #[serde(default)]
    virtual_services: Vec<Spanned<RawVirtual>>,
}

/// One inline virtual service; keys are ldirectord's directive names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVirtual {
    #[serde(rename = "virtual")]
    address: Option<Spanned<Scalar>>,
    /// A firewall mark serving IPv6 (ldirectord `virtual6 = MARK`); IPv6 addresses may use
    /// either key.
    virtual6: Option<Spanned<Scalar>>,
    protocol: Option<Spanned<Scalar>>,
    scheduler: Option<Spanned<Scalar>>,
    persistent: Option<Spanned<Scalar>>,
    netmask: Option<Spanned<Scalar>>,
    #[serde(default)]
    reals: Vec<Spanned<RawReal>>,
    fallback: Option<Spanned<RawReal>>,
    fallbackcommand: Option<Spanned<Scalar>>,
    checktype: Option<Spanned<Scalar>>,
    service: Option<Spanned<Scalar>>,
    request: Option<Spanned<Scalar>>,
    receive: Option<Spanned<Scalar>>,
    httpmethod: Option<Spanned<Scalar>>,
    virtualhost: Option<Spanned<Scalar>>,
    checkport: Option<Spanned<Scalar>>,
    checkcommand: Option<Spanned<Scalar>>,
    checktimeout: Option<Spanned<Scalar>>,
    negotiatetimeout: Option<Spanned<Scalar>>,
    checkinterval: Option<Spanned<Scalar>>,
    checkcount: Option<Spanned<Scalar>>,
    failurecount: Option<Spanned<Scalar>>,
    risecount: Option<Spanned<Scalar>>,
    statuscode: Option<Spanned<Scalar>>,
    quiescent: Option<Spanned<Scalar>>,
    cleanstop: Option<Spanned<Scalar>>,
    servicename: Option<Spanned<Scalar>>,
    comment: Option<Spanned<Scalar>>,
    login: Option<Spanned<Scalar>>,
    passwd: Option<Spanned<Scalar>>,
    database: Option<Spanned<Scalar>>,
    secret: Option<Spanned<Scalar>>,
}

/// A real server (or fallback) in YAML.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReal {
    /// `ADDRESS[->LAST][:PORT]`, as in ldirectord.
    address: String,
    forwarding: Option<String>,
    weight: Option<u32>,
    request: Option<String>,
    receive: Option<String>,
    lower_threshold: Option<u32>,
    upper_threshold: Option<u32>,
}

fn text_entry(key: &str, v: &Option<Spanned<Scalar>>, out: &mut Vec<Entry>) {
    if let Some(v) = v {
        out.push(Entry {
            key: key.to_string(),
            value: Value::Text(v.value.0.clone()),
            line: line_of(v),
        });
    }
}

fn real_entry(
    key: &str,
    r: &Spanned<RawReal>,
    names: &ServiceNames,
    file: &Path,
    diags: &mut Vec<Diagnostic>,
    out: &mut Vec<Entry>,
) {
    let line = line_of(r);
    let raw = &r.value;
    let spec = parse_real_address(raw.address.trim(), names).and_then(|(first, last, port)| {
        let mut spec = RealSpec::at(first, last, port);
        spec.forwarding = raw
            .forwarding
            .as_deref()
            .map(|f| f.to_ascii_lowercase().parse::<Forwarding>())
            .transpose()?;
        spec.weight = raw.weight;
        spec.request = raw.request.clone();
        spec.receive = raw.receive.clone();
        spec.lower = raw.lower_threshold;
        spec.upper = raw.upper_threshold;
        if spec.request.is_some() != spec.receive.is_some() {
            return Err("give both request and receive, or neither".to_string());
        }
        Ok(spec)
    });
    match spec {
        Ok(spec) => out.push(Entry {
            key: key.to_string(),
            value: Value::Real(spec),
            line,
        }),
        Err(m) => diags.push(Diagnostic::error(
            file,
            line,
            format!("director {key}: {m}"),
        )),
    }
}

/// What a YAML `director:` section asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum YamlDirector {
    /// Read this ldirectord.cf (already resolved against the YAML file's directory).
    File(PathBuf, Option<usize>),
    /// The services written inline.
    Inline(DirectorConfig),
}

/// Turns the raw YAML section into a file reference or a validated configuration.
pub(crate) fn from_yaml(
    raw: &Spanned<RawDirector>,
    file: &Path,
    names: &ServiceNames,
    diags: &mut Vec<Diagnostic>,
) -> Option<YamlDirector> {
    let line = line_of(raw);
    let r = &raw.value;
    let mut globals = Vec::new();
    for (k, v) in [
        ("checktimeout", &r.checktimeout),
        ("negotiatetimeout", &r.negotiatetimeout),
        ("checkinterval", &r.checkinterval),
        ("checkcount", &r.checkcount),
        ("failurecount", &r.failurecount),
        ("risecount", &r.risecount),
        ("fallbackcommand", &r.fallbackcommand),
        ("quiescent", &r.quiescent),
        ("cleanstop", &r.cleanstop),
        ("autoreload", &r.autoreload),
        ("callback", &r.callback),
        ("readdquiescent", &r.readdquiescent),
        ("maintenancedir", &r.maintenancedir),
        ("httpkeepalive", &r.httpkeepalive),
    ] {
        text_entry(k, v, &mut globals);
    }
    for (k, v) in [("fallback", &r.fallback), ("fallback6", &r.fallback6)] {
        if let Some(v) = v {
            real_entry(k, v, names, file, diags, &mut globals);
        }
    }
    if let Some(path) = &r.ldirectord_cf {
        if !globals.is_empty() || !r.virtual_services.is_empty() {
            diags.push(Diagnostic::error(
                file,
                line,
                "director gives both ldirectord_cf and inline settings; keep one of them",
            ));
            return None;
        }
        let path = if path.is_relative() {
            file.parent().unwrap_or(Path::new(".")).join(path)
        } else {
            path.clone()
        };
        return Some(YamlDirector::File(path, line));
    }
    let mut blocks = Vec::new();
    for v in &r.virtual_services {
        let rv = &v.value;
        let mut entries = Vec::new();
        for (k, x) in [
            ("protocol", &rv.protocol),
            ("scheduler", &rv.scheduler),
            ("persistent", &rv.persistent),
            ("netmask", &rv.netmask),
            ("fallbackcommand", &rv.fallbackcommand),
            ("checktype", &rv.checktype),
            ("service", &rv.service),
            ("request", &rv.request),
            ("receive", &rv.receive),
            ("httpmethod", &rv.httpmethod),
            ("virtualhost", &rv.virtualhost),
            ("checkport", &rv.checkport),
            ("checkcommand", &rv.checkcommand),
            ("checktimeout", &rv.checktimeout),
            ("negotiatetimeout", &rv.negotiatetimeout),
            ("checkinterval", &rv.checkinterval),
            ("checkcount", &rv.checkcount),
            ("failurecount", &rv.failurecount),
            ("risecount", &rv.risecount),
            ("statuscode", &rv.statuscode),
            ("quiescent", &rv.quiescent),
            ("cleanstop", &rv.cleanstop),
            ("servicename", &rv.servicename),
            ("comment", &rv.comment),
            ("login", &rv.login),
            ("passwd", &rv.passwd),
            ("database", &rv.database),
            ("secret", &rv.secret),
        ] {
            text_entry(k, x, &mut entries);
        }
        for real in &rv.reals {
            real_entry("real", real, names, file, diags, &mut entries);
        }
        if let Some(f) = &rv.fallback {
            real_entry("fallback", f, names, file, diags, &mut entries);
        }
        let (key, addr) = match (&rv.address, &rv.virtual6) {
            (Some(a), None) => ("virtual", a),
            (None, Some(a)) => ("virtual6", a),
            _ => {
                diags.push(Diagnostic::error(
                    file,
                    line_of(v),
                    "a virtual service needs exactly one of `virtual` (ADDRESS:PORT or MARK) and `virtual6` ([IPV6]:PORT or an IPv6 MARK)",
                ));
                continue;
            }
        };
        let opener = Entry {
            key: key.into(),
            value: Value::Text(addr.value.0.clone()),
            line: line_of(addr).or(line_of(v)),
        };
        blocks.push(Block { opener, entries });
    }
    Some(YamlDirector::Inline(build(
        file, &globals, &blocks, names, diags,
    )))
}

/// The YAML `director:` section for writing (`hactl convert`): the keys [`RawDirector`]
/// reads, every value explicit, so loading it back gives an equal [`DirectorConfig`].
#[derive(Serialize)]
pub(crate) struct DirectorFileForm<'a> {
    autoreload: bool,
    /// Written only when not the default: the directive is parsed but warned about.
    #[serde(skip_serializing_if = "is_true")]
    readdquiescent: bool,
    #[serde(skip_serializing_if = "is_true")]
    httpkeepalive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    callback: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    maintenancedir: Option<&'a Path>,
    virtual_services: Vec<VirtualFileForm<'a>>,
}

fn is_true(b: &bool) -> bool {
    *b
}

/// One virtual service; keys are ldirectord's directive names, as [`RawVirtual`] reads them.
#[derive(Serialize)]
struct VirtualFileForm<'a> {
    #[serde(rename = "virtual", skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    virtual6: Option<String>,
    protocol: &'static str,
    scheduler: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    persistent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    netmask: Option<u8>,
    reals: Vec<FlowMap<RealFileForm<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fallback: Option<FlowMap<RealFileForm<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fallbackcommand: Option<&'a str>,
    checktype: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkcommand: Option<&'a str>,
    service: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    receive: Option<&'a str>,
    httpmethod: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    virtualhost: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkport: Option<u16>,
    checkinterval: String,
    checktimeout: String,
    negotiatetimeout: String,
    checkcount: u32,
    failurecount: u32,
    risecount: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    statuscode: Option<u16>,
    quiescent: bool,
    cleanstop: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    servicename: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    login: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    passwd: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'a str>,
}

/// A real server (or fallback), as [`RawReal`] reads it.
#[derive(Serialize)]
struct RealFileForm<'a> {
    address: String,
    forwarding: &'static str,
    /// A fallback always runs at weight 1, so it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    receive: Option<&'a str>,
    #[serde(skip_serializing_if = "is_zero")]
    lower_threshold: u32,
    #[serde(skip_serializing_if = "is_zero")]
    upper_threshold: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl<'a> DirectorFileForm<'a> {
    /// The file form of `d`.
    pub(crate) fn of(d: &'a DirectorConfig) -> DirectorFileForm<'a> {
        DirectorFileForm {
            autoreload: d.autoreload,
            readdquiescent: d.readd_quiescent,
            httpkeepalive: d.http_keepalive,
            callback: d.callback.as_deref(),
            maintenancedir: d.maintenance_dir.as_deref(),
            virtual_services: d.virtuals.iter().map(VirtualFileForm::of).collect(),
        }
    }
}

impl<'a> VirtualFileForm<'a> {
    fn of(v: &'a VirtualConfig) -> VirtualFileForm<'a> {
        let (address, virtual6) = match v.key {
            ServiceKey::Tcp(a) | ServiceKey::Udp(a) => (Some(a.to_string()), None),
            ServiceKey::Fwmark(m, Family::V4) => (Some(m.to_string()), None),
            ServiceKey::Fwmark(m, Family::V6) => (None, Some(m.to_string())),
        };
        let c = &v.check;
        let checktype = checktype_word(&c.kind);
        let checkcommand = match &c.kind {
            CheckType::External { command } => Some(command.as_str()),
            _ => None,
        };
        VirtualFileForm {
            address,
            virtual6,
            protocol: v.protocol.name(),
            scheduler: v.scheduler.name(),
            persistent: v.persistence.map(|p| format_duration(p.timeout)),
            netmask: v.persistence.map(|p| p.netmask.prefix),
            reals: v
                .reals
                .iter()
                .map(|r| FlowMap(RealFileForm::of(r, true)))
                .collect(),
            fallback: v
                .fallback
                .as_ref()
                .map(|f| FlowMap(RealFileForm::of(f, false))),
            fallbackcommand: v.fallback_command.as_deref(),
            checktype,
            checkcommand,
            service: c.service.name(),
            request: c.request.as_deref(),
            receive: c.receive.as_ref().map(Receive::as_str),
            httpmethod: c.http_method.name(),
            virtualhost: c.virtual_host.as_deref(),
            checkport: c.check_port,
            checkinterval: format_duration(c.interval),
            checktimeout: format_duration(c.check_timeout),
            negotiatetimeout: format_duration(c.negotiate_timeout),
            checkcount: c.ping_count,
            failurecount: c.fall,
            risecount: c.rise,
            statuscode: c.status_code,
            quiescent: v.quiescent,
            cleanstop: v.cleanstop,
            servicename: v.service_name.as_deref(),
            comment: v.comment.as_deref(),
            login: c.credentials.login.as_deref(),
            passwd: c.credentials.passwd.as_deref(),
            database: c.credentials.database.as_deref(),
            secret: c.credentials.secret.as_deref(),
        }
    }
}

impl<'a> RealFileForm<'a> {
    fn of(r: &'a RealConfig, with_weight: bool) -> RealFileForm<'a> {
        let (request, receive) = match (&r.request, &r.receive) {
            (Some(req), Some(rec)) => (Some(req.as_str()), Some(rec.as_str())),
            _ => (None, None),
        };
        RealFileForm {
            address: r.addr.to_string(),
            forwarding: r.forwarding.name(),
            weight: with_weight.then_some(r.weight),
            request,
            receive,
            lower_threshold: r.lower_threshold,
            upper_threshold: r.upper_threshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/director")
            .join(rel)
    }

    fn parse(text: &str) -> Result<(DirectorConfig, Vec<String>), Vec<String>> {
        parse_ldirectord_str(text, Path::new("ld.cf"), &ServiceNames::builtin())
            .map(|(c, w)| (c, w.iter().map(|d| d.to_string()).collect()))
            .map_err(|e| e.diagnostics.iter().map(|d| d.to_string()).collect())
    }

    fn ok(text: &str) -> (DirectorConfig, Vec<String>) {
        parse(text).unwrap_or_else(|e| panic!("refused:\n{}", e.join("\n")))
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn counts_below_one_are_refused_where_parsed() {
        for key in ["failurecount", "risecount", "checkcount"] {
            let e = parse(&format!(
                "{key} = 0\nvirtual = 192.0.2.10:80\n\treal = 192.0.2.21:80 gate\n"
            ))
            .unwrap_err();
            assert!(
                e.iter()
                    .any(|m| m.contains(key) && m.contains("at least 1")),
                "{key}: {e:?}"
            );
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// What the seed's ldirectord.cf means, with `net` as the first three octets.
    fn seed_expected(net: &str) -> DirectorConfig {
        let real = |host: u8| RealConfig {
            addr: sa(&format!("{net}.{host}:80")),
            line: Origin::default(),
            forwarding: Forwarding::Ipip,
            weight: 1,
            request: None,
            receive: None,
            lower_threshold: 0,
            upper_threshold: 0,
        };
        DirectorConfig {
            file: Origin::default(),
            autoreload: true,
            callback: None,
            maintenance_dir: None,
            readd_quiescent: true,
            http_keepalive: true,
            virtuals: vec![VirtualConfig {
                key: ServiceKey::Tcp(sa(&format!("{net}.10:80"))),
                line: Origin::default(),
                protocol: Protocol::Tcp,
                scheduler: Scheduler::Rr,
                persistence: None,
                reals: [11, 12, 101, 102, 103].into_iter().map(real).collect(),
                fallback: Some(RealConfig {
                    addr: sa("127.0.0.1:80"),
                    forwarding: Forwarding::Gate,
                    ..real(1)
                }),
                fallback_command: None,
                check: CheckConfig {
                    kind: CheckType::Negotiate,
                    service: Service::Http,
                    request: Some("test.html".into()),
                    receive: Some(Receive::new("Test Page").unwrap()),
                    http_method: HttpMethod::Get,
                    virtual_host: None,
                    check_port: None,
                    interval: secs(1),
                    check_timeout: secs(3),
                    negotiate_timeout: secs(3),
                    ping_count: 1,
                    fall: 1,
                    rise: 1,
                    status_code: None,
                    credentials: Credentials::default(),
                },
                quiescent: true,
                cleanstop: true,
                service_name: None,
                comment: None,
            }],
        }
    }

    #[test]
    fn seed_files_load_with_exactly_the_expected_warnings() {
        for (dir, net) in [("seed004", "192.168.136"), ("seed004-lab", "192.0.2")] {
            let path = fixture(&format!("{dir}/ldirectord.cf"));
            let (c, w) = parse_ldirectord(&path).expect("seed loads");
            let w: Vec<String> = w.iter().map(|d| d.to_string()).collect();
            let p = path.display();
            assert_eq!(w.len(), 2, "{w:#?}");
            assert!(
                w[0].starts_with(&format!("{p}:11: warning: logfile is ignored")),
                "{w:#?}"
            );
            assert!(
                w[1].starts_with(&format!("{p}:19: warning: non-breaking spaces")),
                "{w:#?}"
            );
            assert_eq!(c, seed_expected(net), "{dir}");
        }
    }

    #[test]
    fn defaults_are_ldirectord_defaults() {
        let (c, w) = ok("virtual=192.0.2.10:8080\n\treal=192.0.2.11 gate\n");
        assert_eq!(w.len(), 0, "{w:?}");
        assert!(!c.autoreload && c.readd_quiescent);
        assert_eq!(c.callback, None);
        let v = &c.virtuals[0];
        assert_eq!(v.key, ServiceKey::Tcp(sa("192.0.2.10:8080")));
        assert_eq!(v.protocol, Protocol::Tcp);
        assert_eq!(v.scheduler, Scheduler::Wrr);
        assert_eq!(v.persistence, None);
        assert!(v.quiescent && v.cleanstop);
        assert_eq!(v.fallback, None);
        assert_eq!(v.reals[0].addr, sa("192.0.2.11:8080"));
        assert_eq!(v.reals[0].weight, DEFAULT_WEIGHT);
        let k = &v.check;
        assert_eq!(k.kind, CheckType::Negotiate);
        assert_eq!(k.service, Service::None);
        assert_eq!(k.http_method, HttpMethod::Get);
        assert_eq!(k.interval, DEFAULT_CHECK_INTERVAL);
        assert_eq!(k.check_timeout, DEFAULT_CHECK_TIMEOUT);
        assert_eq!(k.negotiate_timeout, DEFAULT_NEGOTIATE_TIMEOUT);
        assert_eq!(k.timeout(), DEFAULT_NEGOTIATE_TIMEOUT);
        assert_eq!((k.fall, k.rise, k.ping_count), (1, 1, 1));
        assert_eq!((k.request.as_deref(), k.status_code), (None, None));

        // Port-derived protocol and service.
        let (c, _) = ok(
            "virtual=192.0.2.10:53\n real=192.0.2.11 gate\n checktype=connect\n\
             virtual=192.0.2.10:443\n real=192.0.2.11 gate\n\
             virtual=7\n real=192.0.2.11 gate\n checktype=ping\n\
             virtual6=8\n real6=[2001:db8::2] gate\n checktype=on\n",
        );
        assert_eq!(c.virtuals[0].key, ServiceKey::Udp(sa("192.0.2.10:53")));
        assert_eq!(
            c.virtuals[0].check.service,
            Service::Negotiated(NegotiatedService::Dns)
        );
        assert_eq!(c.virtuals[1].check.service, Service::Https);
        assert_eq!(c.virtuals[2].key, ServiceKey::Fwmark(7, Family::V4));
        assert_eq!(c.virtuals[2].protocol, Protocol::Fwm);
        assert_eq!(c.virtuals[2].reals[0].addr, sa("192.0.2.11:0"));
        assert_eq!(c.virtuals[3].key, ServiceKey::Fwmark(8, Family::V6));

        // Only one timeout given: the other follows it.
        let (c, _) = ok("negotiatetimeout=7\nvirtual=192.0.2.10:80\n real=192.0.2.11 gate\n");
        assert_eq!(c.virtuals[0].check.check_timeout, secs(7));
        assert_eq!(c.virtuals[0].check.negotiate_timeout, secs(7));
    }

    #[test]
    fn every_directive_parses() {
        let text = r#"
checktimeout = 4
negotiatetimeout = 20
checkinterval = 6
checkcount = 3
failurecount = 2
risecount = 2
fallback = 127.0.0.1:80 gate
fallback6 = [::1]:80 masq
fallbackcommand = "/usr/local/bin/sorry"
autoreload = yes
callback = "/usr/local/bin/sync-cf"
quiescent = no
readdquiescent = no
cleanstop = no
emailalert = "ops@example.org"
emailalertfreq = 3600
emailalertstatus = all
emailalertfrom = "ld@example.org"
smtp = 192.0.2.25
execute = "other.cf"
supervised = no
fork = yes
logfile = "local0"
maintenancedir = /etc/ha.d/maintenance

virtual = 192.0.2.10:http
	real = 192.0.2.11->192.0.2.13:80 gate 3
	real = 192.0.2.20:8080 masq 2 "/health", "ok$" "<l:10>" "<u:100>"
	real = 192.0.2.21:8080 ipip
	service = http
	request = "/index.html"
	receive = "Welcome|Hello"
	httpmethod = HEAD
	virtualhost = www.example.org
	checktype = 3
	checkport = 8081
	scheduler = wlc
	persistent = 600
	netmask = 255.255.255.0
	protocol = tcp
	login = "u"
	passwd = "p"
	database = "d"
	secret = "s"
	monitorfile = "/var/log/mon.log"
	servicename = "web"
	comment = "front page"
	load = "x"
	ops = no
	schedflags = sh-port
	statuscode = 204
	checktimeout = 2
	failurecount = 5
	quiescent = yes
	fallback = 192.0.2.99 masq
	fallbackcommand = "/bin/web-sorry"
	cleanstop = yes
	emailalert = "web@example.org"

virtual6 = [2001:db8::10]:53
	real6 = [2001:db8::11] gate
	protocol = udp
	checktype = external-perl
	checkcommand = "/usr/local/bin/check-dns"
	persistent = 30
	netmask = 64
	ops = yes
"#;
        let (c, w) = ok(text);
        let want_warnings = [
            ":12: warning: callback is not acted on yet",
            ":14: warning: readdquiescent is not acted on yet",
            ":16: warning: emailalert is ignored",
            ":17: warning: emailalertfreq is ignored",
            ":18: warning: emailalertstatus is ignored",
            ":19: warning: emailalertfrom is ignored",
            ":20: warning: smtp is ignored",
            ":21: warning: execute = other.cf is ignored",
            ":22: warning: supervised is ignored",
            ":23: warning: fork is ignored",
            ":24: warning: logfile is ignored",
            ":27: warning: virtual service 192.0.2.10:80 (tcp): httpmethod = HEAD with receive can never pass",
            ":30: warning: 192.0.2.21: port 8080 is replaced by the virtual port 80",
            ":42: warning: login is ignored",
            ":43: warning: passwd is ignored",
            ":44: warning: database is ignored",
            ":45: warning: secret is ignored",
            ":46: warning: monitorfile is ignored",
            ":51: warning: schedflags is ignored",
            ":59: warning: emailalert is ignored",
            ":64: warning: checktype external-perl is run as external",
            ":68: warning: ops = yes is not applied",
        ];
        assert_eq!(w.len(), want_warnings.len(), "{w:#?}");
        for (got, want) in w.iter().zip(want_warnings) {
            assert!(got.contains(want), "want {want}, got {got}");
        }
        assert!(c.autoreload && !c.readd_quiescent);
        assert_eq!(c.callback.as_deref(), Some("/usr/local/bin/sync-cf"));
        assert_eq!(
            c.maintenance_dir.as_deref(),
            Some(Path::new("/etc/ha.d/maintenance"))
        );
        let v = &c.virtuals[0];
        assert_eq!(v.key, ServiceKey::Tcp(sa("192.0.2.10:80")));
        assert_eq!(v.scheduler, Scheduler::Wlc);
        assert_eq!(
            v.persistence,
            Some(Persistence {
                timeout: secs(600),
                netmask: Netmask { prefix: 24 }
            })
        );
        let addrs: Vec<String> = v.reals.iter().map(|r| r.addr.to_string()).collect();
        assert_eq!(
            addrs,
            [
                "192.0.2.11:80",
                "192.0.2.12:80",
                "192.0.2.13:80",
                "192.0.2.20:8080",
                "192.0.2.21:80"
            ]
        );
        assert_eq!(v.reals[0].weight, 3);
        let masq = &v.reals[3];
        assert_eq!(masq.forwarding, Forwarding::Masq);
        assert_eq!(masq.weight, 2);
        assert_eq!(masq.request.as_deref(), Some("/health"));
        assert_eq!(masq.receive.as_ref().map(Receive::as_str), Some("ok$"));
        assert_eq!((masq.lower_threshold, masq.upper_threshold), (10, 100));
        assert_eq!(v.reals[4].forwarding, Forwarding::Ipip);
        let f = v.fallback.as_ref().unwrap();
        assert_eq!(
            (f.addr, f.forwarding, f.weight),
            (sa("192.0.2.99:80"), Forwarding::Masq, 1)
        );
        assert_eq!(v.fallback_command.as_deref(), Some("/bin/web-sorry"));
        assert!(v.quiescent && v.cleanstop);
        assert_eq!(v.service_name.as_deref(), Some("web"));
        assert_eq!(v.comment.as_deref(), Some("front page"));
        let k = &v.check;
        assert_eq!(k.kind, CheckType::Combined(3));
        assert_eq!(k.service, Service::Http);
        assert_eq!(k.request.as_deref(), Some("/index.html"));
        assert!(k.receive.as_ref().unwrap().is_match("say Hello"));
        assert_eq!(k.http_method, HttpMethod::Head);
        assert_eq!(k.virtual_host.as_deref(), Some("www.example.org"));
        assert_eq!(k.check_port, Some(8081));
        assert_eq!(k.interval, secs(6));
        assert_eq!((k.check_timeout, k.negotiate_timeout), (secs(2), secs(20)));
        assert_eq!((k.ping_count, k.fall, k.rise), (3, 5, 2));
        assert_eq!(k.status_code, Some(204));

        let v6 = &c.virtuals[1];
        assert_eq!(v6.key, ServiceKey::Udp(sa("[2001:db8::10]:53")));
        assert_eq!(v6.reals[0].addr, sa("[2001:db8::11]:53"));
        assert_eq!(
            v6.check.kind,
            CheckType::External {
                command: "/usr/local/bin/check-dns".into()
            }
        );
        assert_eq!(v6.persistence.unwrap().netmask, Netmask { prefix: 64 });
        let f6 = v6.fallback.as_ref().unwrap();
        assert_eq!((f6.addr, f6.forwarding), (sa("[::1]:80"), Forwarding::Masq));
        assert!(!v6.quiescent && !v6.cleanstop);
        assert_eq!(v6.fallback_command.as_deref(), Some("/usr/local/bin/sorry"));
        assert_eq!((v6.check.check_timeout, v6.check.fall), (secs(4), 2));
    }

    #[test]
    fn broken_file_reports_every_mistake_with_its_line() {
        let path = fixture("broken/ldirectord.cf");
        let e = parse_ldirectord(&path).expect_err("broken");
        let all: Vec<String> = e.diagnostics.iter().map(|d| d.to_string()).collect();
        let p = path.display().to_string();
        let want = [
            ":2: checktimeout: 'abc' is not a time value",
            ":3: connecttimeout is obsolete and refused",
            ":4: 'chektimeout' is not an ldirectord directive; did you mean 'checktimeout'?",
            ":5: quiescent: 'maybe' is not yes or no",
            ":6: service belongs to a virtual service; indent it",
            ":7: warning: logfile is ignored",
            ":9: virtual: 'www.example.com' is not an IP address",
            ":12: real needs a forwarding method",
            ":13: real: 1 quoted string(s) given",
            ":14: real: range 192.0.2.20->192.0.2.19 goes backwards",
            ":15: real 2001:db8::1 is not of the virtual service's address family",
            ":16: scheduler: 'sip' is not a scheduler hbd supports: it is IPVS's SIP persistence engine",
            ":17: checktype: 'sometimes' is unknown",
            ":18: receive: \"(unclosed\" is not a regular expression hbd can use",
            ":19: autoreload is a global directive",
            ":21: netmask 255.0.255.0 is not contiguous",
            ":22: virtual service 192.0.2.10:119 (tcp): negotiate checks for port-derived service 'nntp' are not supported",
            ":25: real: unexpected 'weight'",
            ":26: warning: 192.0.2.12: port 8443 is replaced by the virtual port 443",
            ":27: virtual service 192.0.2.10:443 (tcp) is defined twice",
        ];
        for w in want {
            assert!(
                all.iter().any(|d| d.starts_with(&p) && d.contains(w)),
                "missing {w} in\n{}",
                all.join("\n")
            );
        }
        assert_eq!(all.len(), want.len(), "{}", all.join("\n"));
    }

    #[test]
    fn unsupported_service_is_refused_only_when_negotiated() {
        let base = "virtual=192.0.2.10:119\n real=192.0.2.11 gate\n";
        let e = parse(base).expect_err("nntp negotiate");
        assert!(e[0].contains("'nntp' are not supported by hbd"), "{e:?}");
        assert!(e[0].contains(":1:"), "names the virtual's line: {e:?}");
        for ct in ["connect", "ping", "on", "off", "external"] {
            let (c, _) = ok(&format!("{base} checktype={ct}\n"));
            assert_eq!(
                c.virtuals[0].check.service,
                Service::Unsupported("nntp".into())
            );
        }
        let e = parse(&format!("{base} service=oracle\n checktype=2\n")).expect_err("combined");
        assert!(e[0].contains("service 'oracle' are not supported"), "{e:?}");
        let e = parse(&format!("{base} service=gopher\n")).expect_err("unknown");
        assert!(
            e[1].contains("'gopher' is not an ldirectord service"),
            "{e:?}"
        );
    }

    #[test]
    fn negotiated_services_parse_with_their_credentials() {
        for n in NegotiatedService::ALL {
            assert_eq!(Service::parse(n.name()), Ok(Service::Negotiated(n)));
        }
        assert_eq!(
            Service::from_port(3306),
            Service::Negotiated(NegotiatedService::Mysql)
        );
        assert_eq!(Service::from_port(119), Service::Unsupported("nntp".into()));
        let (c, w) = ok(
            "virtual=192.0.2.10:3306\n real=192.0.2.11 gate\n login = \"hbd\"\n passwd = \"pw\"\n database = \"app\"\n request = \"SELECT 1\"\n checktype = 4\n",
        );
        assert!(w.is_empty(), "{w:?}");
        let k = &c.virtuals[0].check;
        assert_eq!(k.kind, CheckType::Combined(4));
        assert_eq!(k.credentials.login.as_deref(), Some("hbd"));
        assert_eq!(k.credentials.database.as_deref(), Some("app"));
        assert!(
            !format!("{:?}", k.credentials).contains("pw"),
            "passwords are not printed"
        );
    }

    #[test]
    fn negotiated_services_refuse_checks_that_cannot_pass() {
        let cases = [
            ("3306", "", "service mysql needs login"),
            ("5432", " login = \"u\"\n", "service pgsql needs login"),
            ("1812", " login = \"u\"\n", "service radius needs login"),
            (
                "53",
                " request = \"www.example.org\"\n",
                "service dns needs request",
            ),
            (
                "7",
                " service = simpletcp\n receive = \"OK\"\n",
                "service simpletcp needs request",
            ),
        ];
        for (port, extra, want) in cases {
            let e = parse(&format!(
                "virtual=192.0.2.10:{port}\n real=192.0.2.11 gate\n{extra}"
            ))
            .expect_err(want);
            assert!(
                e.iter().any(|m| m.contains(want) && m.contains(":1:")),
                "{want}: {e:?}"
            );
        }
        // Enough given: accepted; unused credentials are warned at their own line.
        let (_, w) = ok("virtual=192.0.2.10:25\n real=192.0.2.11 gate\n secret = \"s\"\n");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains(":3: warning: secret is ignored: service smtp does not use it"),
            "{w:?}"
        );
        let (_, w) = ok(
            "virtual=192.0.2.10:389\n real=192.0.2.11 gate\n checktype = connect\n login = \"cn=x\"\n",
        );
        assert!(
            w[0].contains(":4: warning: login is ignored: only negotiate checks"),
            "{w:?}"
        );
        // ldap without request searches the root DSE, as ldirectord's default "/" does.
        ok("virtual=192.0.2.10:389\n real=192.0.2.11 gate\n");
    }

    #[test]
    fn indentation_closes_blocks_and_overrides_stay_local() {
        let (c, w) = ok(
            "virtual=192.0.2.10:80\n    real=192.0.2.11 gate\n    quiescent=no\n\
             quiescent=yes\nvirtual=192.0.2.10:81\n\treal=192.0.2.11 gate\n",
        );
        assert!(w.is_empty(), "{w:?}");
        assert!(!c.virtuals[0].quiescent);
        assert!(c.virtuals[1].quiescent);
        // An unindented real after a block is a global line, which is refused.
        let e = parse("virtual=192.0.2.10:80\nreal=192.0.2.11 gate\n").expect_err("unindented");
        assert!(
            e.iter()
                .any(|d| d.contains("ld.cf:2: real belongs to a virtual service")),
            "{e:?}"
        );
    }

    #[test]
    fn hostnames_are_refused_and_service_names_resolve() {
        let (c, _) =
            ok("virtual=192.0.2.10:https\n real=192.0.2.11:https gate\n checktype=connect\n");
        assert_eq!(c.virtuals[0].key, ServiceKey::Tcp(sa("192.0.2.10:443")));
        let e = parse("virtual=192.0.2.10:80\n real=web1:80 gate\n").expect_err("host");
        assert!(e[0].contains("hbd does not resolve host names"), "{e:?}");
        let e = parse("virtual=192.0.2.10\n real=192.0.2.11 gate\n").expect_err("port");
        assert!(e[0].contains("has no port"), "{e:?}");
        let names = ServiceNames::parse("webcache 8080/tcp  squid # comment\n");
        assert_eq!(names.port("squid"), Ok(8080));
        assert_eq!(names.port("http"), Ok(80));
    }

    #[test]
    fn fwmark_reals_without_port_are_warned_when_checks_connect() {
        let (_, w) = ok("virtual=7\n real=192.0.2.11 gate\n checktype=connect\n");
        assert!(
            w[0].contains("real 192.0.2.11 of firewall-mark service fwmark 7 has no port"),
            "{w:?}"
        );
        let (c, w) = ok("virtual=7\n real=192.0.2.11 gate\n checkport=80\n checktype=connect\n");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.virtuals[0].check.check_port, Some(80));
        let e = parse("virtual=7\n real=192.0.2.11 gate\n protocol=tcp\n").expect_err("tcp");
        assert!(e[0].contains("its protocol is fwm"), "{e:?}");
    }

    #[test]
    fn ranges_are_bounded() {
        let e = parse("virtual=192.0.2.10:80\n real=10.0.0.0->10.255.255.255 gate\n")
            .expect_err("huge");
        assert!(e[0].contains("more than 1024 addresses"), "{e:?}");
    }

    #[test]
    fn virtual_service_follows_health_quiescent_and_fallback() {
        use crate::director::health::{Health, ServicePolicy, desired_service};
        let (c, _) = ok(
            "fallback=127.0.0.1:80\nvirtual=192.0.2.10:80\n real=192.0.2.11 gate 5\n real=192.0.2.12 gate\n",
        );
        let v = &c.virtuals[0];
        let (vs, policy) = (v.configured_service(), ServicePolicy::of(v));
        let all_up = desired_service(&vs, |_| Health::Up, &policy);
        assert_eq!(all_up.reals.len(), 2);
        assert_eq!(all_up.reals[0].weight, 5);
        let first_up = |a: &SocketAddr| {
            if *a == sa("192.0.2.11:80") {
                Health::Up
            } else {
                Health::Down
            }
        };
        let one_down = desired_service(&vs, first_up, &policy);
        assert_eq!(
            one_down.reals.iter().map(|r| r.weight).collect::<Vec<_>>(),
            [5, 0]
        );
        let none = desired_service(&vs, |_| Health::Down, &policy);
        assert_eq!(none.reals.len(), 3);
        assert_eq!(none.reals[2].addr, sa("127.0.0.1:80"));
        assert_eq!(none.reals[2].weight, 1);
        let mut v2 = v.clone();
        v2.quiescent = false;
        let none = desired_service(
            &v2.configured_service(),
            |_| Health::Down,
            &ServicePolicy::of(&v2),
        );
        assert_eq!(none.reals.len(), 1);
    }

    #[test]
    fn locate_follows_ldirectord_rules() {
        let dir = tempfile::tempdir().unwrap();
        let ha = dir.path();
        assert_eq!(locate_ldirectord_cf(None, ha), Path::new("ldirectord.cf"));
        std::fs::create_dir(ha.join("conf")).unwrap();
        std::fs::write(ha.join("conf/web.cf"), "").unwrap();
        assert_eq!(
            locate_ldirectord_cf(Some("web.cf"), ha),
            ha.join("conf/web.cf")
        );
        std::fs::write(ha.join("web.cf"), "").unwrap();
        assert_eq!(locate_ldirectord_cf(Some("web.cf"), ha), ha.join("web.cf"));
        std::fs::write(ha.join("ldirectord.cf"), "").unwrap();
        assert_eq!(locate_ldirectord_cf(None, ha), ha.join("ldirectord.cf"));
        assert_eq!(
            locate_ldirectord_cf(Some("/etc/x.cf"), ha),
            Path::new("/etc/x.cf")
        );
    }

    #[derive(Deserialize)]
    struct Wrap {
        director: Spanned<RawDirector>,
    }

    fn yaml(text: &str) -> (Option<YamlDirector>, Vec<String>) {
        let w: Wrap = serde_saphyr::from_str(text).expect("yaml parses");
        let mut d = Vec::new();
        let r = from_yaml(
            &w.director,
            Path::new("hbd.yaml"),
            &ServiceNames::builtin(),
            &mut d,
        );
        (r, d.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn yaml_form_equals_the_ldirectord_file() {
        let (r, d) = yaml(
            r#"
director:
  checktimeout: 3
  checkinterval: 1
  fallback: { address: "127.0.0.1:80" }
  autoreload: true
  quiescent: yes
  virtual_services:
    - virtual: 192.0.2.10:80
      reals:
        - { address: "192.0.2.11:80", forwarding: ipip }
        - { address: "192.0.2.12:80", forwarding: ipip }
        - { address: "192.0.2.101->192.0.2.103:80", forwarding: ipip }
      fallback: { address: "127.0.0.1:80", forwarding: gate }
      service: http
      request: test.html
      receive: Test Page
      virtualhost: ""
      scheduler: rr
      protocol: tcp
"#,
        );
        assert!(d.is_empty(), "{d:?}");
        let (cf, _) = parse_ldirectord(&fixture("seed004-lab/ldirectord.cf")).unwrap();
        assert_eq!(r, Some(YamlDirector::Inline(cf)));
    }

    #[test]
    fn to_yaml_round_trips() {
        let (seed, _) = parse_ldirectord(&fixture("seed004-lab/ldirectord.cf")).unwrap();
        let (rich, _) = ok(
            "autoreload=yes\ncallback=/bin/cb\nmaintenancedir=/m\nhttpkeepalive=no\nfallback6=[::1]:80\n\
             virtual=192.0.2.10:80\n real=192.0.2.20:8080 masq 2 \"/h\", \"o.k\" <l:1> <u:9>\n \
             persistent=30\n netmask=24\n statuscode=200\n virtualhost=v\n checkport=81\n servicename=s\n comment=c\n fallbackcommand=/f\n\
             virtual6=9\n real6=[2001:db8::2]:80 gate\n checktype=external\n checkcommand=/c\n",
        );
        assert!(seed.http_keepalive, "keep-alive is the default");
        assert!(!rich.http_keepalive);
        for c in [seed, rich] {
            let form = std::collections::BTreeMap::from([("director", DirectorFileForm::of(&c))]);
            let text = serde_saphyr::to_string(&form).expect("serialises");
            let (r, d) = yaml(&text);
            assert!(d.iter().all(|d| d.contains("warning")), "{d:?}\n{text}");
            assert_eq!(r, Some(YamlDirector::Inline(c)), "{text}");
        }
    }

    #[test]
    fn yaml_refers_to_a_file_and_reports_lines() {
        let (r, d) = yaml("director:\n  ldirectord_cf: ld.cf\n");
        assert!(d.is_empty());
        assert_eq!(r, Some(YamlDirector::File(PathBuf::from("ld.cf"), Some(2))));
        let (r, d) = yaml("director:\n  ldirectord_cf: ld.cf\n  checkinterval: 2\n");
        assert_eq!(r, None);
        assert!(d[0].contains("both ldirectord_cf and inline"), "{d:?}");
        let (_, d) = yaml(
            "director:\n  virtual_services:\n    - virtual: 192.0.2.10:80\n      scheduler: sip\n      reals:\n        - { address: web1, forwarding: gate }\n",
        );
        assert!(
            d.iter().any(|x| x.starts_with("hbd.yaml:4: scheduler")),
            "{d:?}"
        );
        assert!(
            d.iter().any(|x| x.starts_with("hbd.yaml:6: director real")),
            "{d:?}"
        );
    }

    #[test]
    fn load_yaml_reads_the_referenced_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            fixture("seed004-lab/ldirectord.cf"),
            dir.path().join("ldirectord.cf"),
        )
        .unwrap();
        let y = dir.path().join("hbd.yaml");
        std::fs::write(
            &y,
            "nodes: [a]\nmedia: [ { bcast: { interface: eth0 } } ]\nauth: { authkeys: keys }\nauto_failback: on\ndirector: { ldirectord_cf: ldirectord.cf }\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("keys"), "auth 1\n1 sha1 secret\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("keys"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let loaded = crate::config::load_yaml(&y, "a").expect("loads");
        let d = loaded.config.director.clone().expect("director");
        assert_eq!(d.ldirectord_cf, Some(dir.path().join("ldirectord.cf")));
        assert_eq!(d.config, seed_expected("192.0.2"));
        // The converted YAML keeps the reference.
        let text = crate::config::to_yaml(&loaded.config).expect("serialises");
        assert!(text.contains("director:\n  ldirectord_cf: "), "{text}");
    }

    /// A tiny fixed-seed generator (xorshift64*), so the garbage test is repeatable.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[usize::try_from(self.next() % xs.len() as u64).unwrap_or(0)]
        }
    }

    #[test]
    fn head_with_receive_is_a_warning() {
        let text = "virtual = 192.0.2.10:80\n\treal = 192.0.2.21:80 gate\n\tservice = http\n\thttpmethod = HEAD\n\treceive = \"OK\"\n";
        let (_, warnings) =
            parse_ldirectord_str(text, Path::new("ld.cf"), &ServiceNames::builtin()).unwrap();
        let w: Vec<String> = warnings.iter().map(|d| d.to_string()).collect();
        assert!(
            w.iter().any(|m| m.starts_with("ld.cf:1: warning:")
                && m.contains("HEAD with receive can never pass")),
            "{w:?}"
        );
        let get = text.replace("HEAD", "GET");
        let (_, warnings) =
            parse_ldirectord_str(&get, Path::new("ld.cf"), &ServiceNames::builtin()).unwrap();
        assert!(
            warnings.iter().all(|d| !d.message.contains("HEAD")),
            "{warnings:?}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let keys: Vec<&str> = GLOBAL_ONLY
            .iter()
            .chain(VIRTUAL_ONLY.iter())
            .chain(OVERRIDABLE.iter())
            .chain(["virtual", "virtual6", "", "x"].iter())
            .copied()
            .collect();
        let vals = [
            "",
            "0",
            "1",
            "4294967296",
            "-1",
            "yes",
            "\"",
            "\"a\" \"b\" \"c\"",
            "192.0.2.1",
            "192.0.2.1:80",
            "[2001:db8::1]:53",
            "[::1",
            "1.2.3.4->1.2.3.1:80 gate",
            "192.0.2.1->192.0.2.9:http masq 65536",
            "192.0.2.1 gate <l:x>",
            "<u:5>",
            "(",
            "a->",
            "->",
            ":",
            "::",
            "[]:",
            "255.255.255.0",
            "/129",
            "é\u{a0}x",
            "ipip 3 \"/\", \"ok\"",
            "12ms",
            "1e99",
            "99999999999999999999",
        ];
        let mut rng = Rng(0x5eed_0004);
        for _ in 0..2000 {
            let mut text = String::new();
            for _ in 0..(rng.next() % 12) {
                let indent = rng.pick(&["", "\t", "    ", "\u{a0}"]);
                let sep = rng.pick(&["=", " = ", " ", "=="]);
                let _ = writeln!(text, "{indent}{}{sep}{}", rng.pick(&keys), rng.pick(&vals));
            }
            let _ = parse(&text);
        }
        // Raw characters, biased towards the ones the parser splits on.
        let alphabet: Vec<char> = "=\"[]:->#,<>/ \t\n\u{a0}0123456789.abcfglmqrtuvw\u{e9}"
            .chars()
            .collect();
        for _ in 0..2000 {
            let len = rng.next() % 120;
            let text: String = (0..len)
                .map(|_| alphabet[usize::try_from(rng.next() % alphabet.len() as u64).unwrap_or(0)])
                .collect();
            let _ = parse(&format!("virtual=192.0.2.10:80\n real={text}\n{text}"));
        }
    }
}
