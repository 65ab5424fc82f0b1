//! Real-server health checks in the manner of ldirectord (features §3.3): TCP connect,
//! HTTP/HTTPS negotiate, the negotiate checks of other services ([`super::services`]),
//! `checktype = N` (negotiate every N+1th check, connect in between), external command, ICMP
//! ping, and the constant `on` / `off`.
//!
//! Every check has one **total deadline** (`CheckSpec::timeout`) covering connect, TLS,
//! headers and body: a server that drips one byte at a time fails at the deadline, not later
//! (keepalived#1822, features §4 item 8). A check never errors: it yields a [`CheckResult`]
//! with a human reason ("HTTP 503", "connect refused", "timeout after 3s", "exit 1") that the
//! director logs and shows in status.
//!
//! TLS: HTTPS checks accept **any** server certificate (no chain, no hostname verification),
//! as ldirectord does since resource-agents PR #333 (`verify_hostname => 0`, features §4
//! item 9): real servers are usually checked by IP with certificates issued for the service
//! name. The handshake signature is still verified against the presented certificate. When a
//! `virtual_host` is set, it is sent both as the `Host` header and as the TLS SNI name.
//!
//! Keep-alive (the default; YAML `director: { httpkeepalive: no }` turns it off): a plain-HTTP
//! check keeps its connection idle between runs in its [`CheckSession`] (one per scheduled
//! check, owned by the scheduler's task for that check) and sends the next request on it. A
//! connection the server closed meanwhile is noticed before use and replaced; a reused one the
//! server closes as the request arrives (before any response byte) is retried once, fresh,
//! within the same deadline. `Connection: close`, HTTP/1.0 without keep-alive, a body
//! delimited by close, a parse error, a timeout or a failed check all drop the connection.
//! Removing a check aborts its task, which drops its session and closes the socket; at most
//! [`IdleBudget`] connections are kept idle so descriptors cannot run out. HTTPS opens a
//! connection (and TLS handshake) per check, as before.
//!
//! HTTP itself is the small client in [`super::http`] (request bytes built once per check,
//! response parsed with `httparse`), not hyper: see that module for why.
//!
//! The input types here ([`CheckTarget`], [`CheckSpec`]) are deliberately small; the
//! configuration layer maps `ldirectord.cf` / YAML onto them.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::http::{self, HttpCheck};
use super::services::{self, ServiceCheck};
use crate::clock;
use crate::config::director::HttpMethod;

/// The virtual side of a check target, as passed to external check commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckVip {
    /// `virtual = ip:port`.
    Addr(SocketAddr),
    /// `virtual = <fwmark>`.
    Fwmark(u32),
}

/// What one check probes: a real server of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CheckTarget {
    /// The real server's address and service port.
    pub real: SocketAddr,
    /// The virtual service it belongs to (external commands get it as arguments).
    pub vip: CheckVip,
    /// ldirectord `checkport`: probe this port instead of the real's port.
    pub check_port: Option<u16>,
}

impl CheckTarget {
    /// The address actually probed: the real's IP with the check port if one is set.
    pub fn check_addr(&self) -> SocketAddr {
        SocketAddr::new(self.real.ip(), self.check_port.unwrap_or(self.real.port()))
    }
}

/// The kind of check (ldirectord `checktype`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// `connect`: a TCP handshake to the check address.
    Connect,
    /// `negotiate` with service http/https.
    Http(HttpCheck),
    /// `external`: `command vip vport rip rport`, exit 0 = up (fwmark: vip = the mark).
    External {
        /// The command (ldirectord `checkcommand`).
        command: PathBuf,
    },
    /// `ping`: ICMP echo to the real's IP, up at the first reply. Up to `count` echos
    /// (ldirectord `checkcount`, ≥ 1), each waiting an equal share of the check's deadline,
    /// so the deadline is `count` × the per-echo timeout (ldirectord: timeouts add up).
    Ping {
        /// Echo attempts.
        count: u32,
    },
    /// `negotiate` with a service beyond HTTP ([`super::services`]).
    Service(ServiceCheck),
    /// ldirectord `checktype = N`: `negotiate`, then `connects` connect checks (each with
    /// `connect_timeout`) while they pass; a failed connect makes the next check negotiate,
    /// and so does the first. Counted per scheduled check in its [`CheckSession`]; without a
    /// session every check negotiates.
    Combined {
        /// Connect checks between two negotiates (N).
        connects: u32,
        /// The connect step: `Connect`, or `Ping` for a UDP service (as `checktype =
        /// connect` pings there).
        connect: Box<CheckKind>,
        /// Timeout of one connect step (`checktimeout`); the spec's timeout is the
        /// negotiate timeout.
        connect_timeout: Duration,
        /// The negotiate step: `Http`, `Service` or `Connect` (service none).
        negotiate: Box<CheckKind>,
    },
    /// `on`: never checked, always up.
    On,
    /// `off`: never checked, always down.
    Off,
}

/// A check and its timing (ldirectord `checktimeout`/`negotiatetimeout`, `checkinterval`,
/// `failurecount`; keepalived-style `rise`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckSpec {
    /// What to do.
    pub kind: CheckKind,
    /// Total deadline of one check (connect + TLS + headers + body, or process lifetime).
    pub timeout: Duration,
    /// Time between the starts of two checks of the same target.
    pub interval: Duration,
    /// Consecutive successes that bring a down real up.
    pub rise: u32,
    /// Consecutive failures that take an up real down (ldirectord `failurecount`).
    pub fall: u32,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The real passed.
    pub ok: bool,
    /// Why: "HTTP 200", "HTTP 503", "connect refused", "timeout after 3s", "exit 1", …
    pub reason: String,
    /// How long the check ran.
    pub took: Duration,
}

impl CheckResult {
    fn new(ok: bool, reason: impl Into<String>, started: Instant) -> CheckResult {
        CheckResult {
            ok,
            reason: reason.into(),
            took: clock::since(started),
        }
    }
}

/// Something that runs checks; the scheduler is generic over it so tests can use a fake.
pub trait Probe: Send + Sync + 'static {
    /// Runs one check of `target` and reports the outcome (never fails, never panics).
    fn probe<'a>(
        &'a self,
        spec: &'a CheckSpec,
        target: &'a CheckTarget,
    ) -> BoxFuture<'a, CheckResult>;

    /// Runs one check of `target` that may use state kept from this check's earlier runs
    /// (a kept-alive connection). The scheduler keeps one `session` per scheduled check and
    /// drops it when the check is removed. By default the session is not used.
    fn probe_in<'a>(
        &'a self,
        spec: &'a CheckSpec,
        target: &'a CheckTarget,
        session: &'a mut CheckSession,
    ) -> BoxFuture<'a, CheckResult> {
        let _ = session;
        self.probe(spec, target)
    }
}

/// "timeout after 3s" / "timeout after 250ms".
pub fn timeout_reason(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("timeout after {}s", d.as_secs())
    } else {
        format!("timeout after {}ms", d.as_millis())
    }
}

/// The real check runner. HTTP(S) uses the small client in [`super::http`]: no proxy, no
/// redirects followed (a 3xx is a failure), TLS accepting any certificate (module docs).
/// Plain-HTTP connections are kept alive between the runs of a check (module docs) unless
/// [`Checker::with_keepalive`] turns that off; a connection that is not kept is closed with
/// RST (`SO_LINGER` 0, as HAProxy's checks) so checks leave no TIME_WAIT sockets. hyper and
/// reqwest were measured first (docs/benchmarks.md): a connection and a client handshake per
/// check cost 90–160 µs of CPU per check, too much for 5,000 checks per second.
#[derive(Clone)]
pub struct Checker {
    tls: tokio_rustls::TlsConnector,
    keepalive: bool,
    budget: Arc<IdleBudget>,
}

impl fmt::Debug for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checker")
            .field("keepalive", &self.keepalive)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// Descriptors left for everything but idle check connections (in-flight checks, the
/// daemon's own sockets and files) when the idle budget is derived from `RLIMIT_NOFILE`.
pub const FD_RESERVE: u64 = 1024;

/// How many check connections may sit idle at once, over every [`Checker`] sharing it: each
/// holds a descriptor, and running out of descriptors would fail every check. A connection
/// that finds the budget spent is closed instead of kept (the next check opens a new one).
#[derive(Debug)]
pub struct IdleBudget {
    max: usize,
    used: AtomicUsize,
}

impl IdleBudget {
    /// A budget of `max` idle connections.
    pub fn new(max: usize) -> IdleBudget {
        IdleBudget {
            max,
            used: AtomicUsize::new(0),
        }
    }

    /// The one budget of this process, from the descriptor limit when first asked for
    /// (after [`raise_fd_limit`] at start): each director resource builds its own
    /// [`Checker`], and budgets of their own would each count the whole limit, together
    /// eating into [`FD_RESERVE`].
    pub fn process_wide() -> Arc<IdleBudget> {
        static BUDGET: std::sync::OnceLock<Arc<IdleBudget>> = std::sync::OnceLock::new();
        BUDGET
            .get_or_init(|| Arc::new(IdleBudget::from_fd_limit()))
            .clone()
    }

    /// The soft `RLIMIT_NOFILE` less [`FD_RESERVE`] (see [`raise_fd_limit`]).
    pub fn from_fd_limit() -> IdleBudget {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(0, |(soft, _)| soft);
        IdleBudget::new(usize::try_from(soft.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX))
    }

    /// Idle connections kept now.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(self: &Arc<Self>) -> Option<IdleSlot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| IdleSlot(self.clone()))
    }
}

/// One unit of [`IdleBudget`], given back when the idle connection is dropped.
#[derive(Debug)]
struct IdleSlot(Arc<IdleBudget>);

impl Drop for IdleSlot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (as the Go runtime and HAProxy do), so
/// thousands of kept-alive check connections fit; returns the new soft limit.
pub fn raise_fd_limit() -> Result<u64, nix::Error> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

/// What one scheduled check keeps between its runs: for a plain-HTTP check with keep-alive,
/// its request bytes and its idle connection. The scheduler owns one per check and drops it
/// (closing the connection) when the check is removed. Empty until the first HTTP check.
#[derive(Debug)]
pub struct CheckSession {
    http: Option<HttpSession>,
    /// `checktype = N`: connect checks passed since the last negotiate (ldirectord
    /// `num_connects`); starts past any N so the first check negotiates.
    connects: u32,
}

impl Default for CheckSession {
    fn default() -> Self {
        CheckSession {
            http: None,
            connects: u32::MAX,
        }
    }
}

impl CheckSession {
    /// An empty session.
    pub fn new() -> CheckSession {
        CheckSession::default()
    }

    /// A connection is kept for the next run.
    pub fn has_idle_connection(&self) -> bool {
        self.http.as_ref().is_some_and(|h| h.idle.is_some())
    }
}

/// The kept part of a plain-HTTP check, valid for one probed address and the parts of the
/// check that make the request (not its `receive` regex or status rule, which are applied to
/// each response, and whose clone would cost a regex cache per session).
#[derive(Debug)]
struct HttpSession {
    addr: SocketAddr,
    https: bool,
    method: HttpMethod,
    request_cfg: String,
    virtual_host: Option<String>,
    rt: HttpRequestTarget,
    request: Vec<u8>,
    idle: Option<IdleConn>,
}

impl HttpSession {
    /// This session was built for check `h` on `addr`.
    fn serves(&self, h: &HttpCheck, addr: SocketAddr) -> bool {
        self.addr == addr
            && self.https == h.https
            && self.method == h.method
            && self.request_cfg == h.request
            && self.virtual_host == h.virtual_host
    }
}

/// A kept-alive connection and its budget unit.
#[derive(Debug)]
struct IdleConn {
    stream: tokio::net::TcpStream,
    slot: IdleSlot,
}

/// The server has not closed (or written to) an idle connection. Does not wait, and costs no
/// system call in the usual case: tokio's readiness says whether anything (bytes, FIN, RST)
/// arrived since the last read emptied the socket, so no readiness means open and quiet.
/// With readiness set, one read decides: WouldBlock means open and quiet; end of stream, an
/// error or unexpected bytes mean discard it. A close that arrives after this look is the
/// race [`http::Exchange::closed_before_response`] retries.
fn still_open(s: &tokio::net::TcpStream) -> bool {
    let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
    if s.poll_read_ready(&mut cx).is_pending() {
        return true;
    }
    let mut b = [0u8; 1];
    matches!(s.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Opens a check connection: no Nagle delay for TLS, closed with RST when dropped.
async fn open(rt: &HttpRequestTarget) -> std::io::Result<tokio::net::TcpStream> {
    let stream = match &rt.connect {
        HttpConnect::Addr(a) => tokio::net::TcpStream::connect(*a).await?,
        HttpConnect::Name(n, p) => tokio::net::TcpStream::connect((n.as_str(), *p)).await?,
    };
    // Nagle can only hold a write back while earlier data is unacknowledged: a plain-HTTP
    // request is one write after the previous response (which acknowledged the previous
    // request), so only the TLS handshake's several writes need TCP_NODELAY. One system
    // call less per connection.
    if rt.https {
        let _ = stream.set_nodelay(true);
    }
    // Close with RST when dropped (SO_LINGER 0): no TIME_WAIT left per check on the director.
    let _ = stream.set_zero_linger();
    Ok(stream)
}
/// The TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the TLS configuration for HTTPS checks: {0}")]
pub struct CheckerError(String);

/// Where and what an HTTP check requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequestTarget {
    /// Connect here: the check address, or `host:port` of an absolute `request` URL.
    pub connect: HttpConnect,
    /// TLS is used.
    pub https: bool,
    /// Request target (`/path?query`).
    pub path: String,
    /// `Host` header value.
    pub host: String,
    /// TLS SNI / certificate name: the virtual host or URL host; `None` for an IP address.
    pub sni: Option<String>,
}

/// The address an HTTP check connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpConnect {
    /// A socket address (the usual case).
    Addr(SocketAddr),
    /// A host name and port from an absolute `request` URL (resolved at check time).
    Name(String, u16),
}

/// An absolute `request` URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequestUrl {
    /// Not a URL.
    #[error("bad request URL {url:?}: {reason}")]
    Parse {
        /// The configured request.
        url: String,
        /// What the URL parser said.
        reason: String,
    },
    /// A URL without a host.
    #[error("no host in request URL {0:?}")]
    NoHost(String),
}

impl HttpRequestTarget {
    /// Works out the request of `h` against `addr` (ldirectord: an absolute `http://` request
    /// replaces host and port; `virtualhost` sets the Host header and TLS name).
    pub fn new(h: &HttpCheck, addr: SocketAddr) -> Result<HttpRequestTarget, BadRequestUrl> {
        let absolute = h.request.starts_with("http://") || h.request.starts_with("https://");
        let (connect, https, path, mut host) = if absolute {
            let uri: ::http::Uri =
                h.request
                    .parse()
                    .map_err(|e: ::http::uri::InvalidUri| BadRequestUrl::Parse {
                        url: h.request.clone(),
                        reason: e.to_string(),
                    })?;
            let https = uri.scheme_str() == Some("https");
            let name = uri
                .host()
                .ok_or_else(|| BadRequestUrl::NoHost(h.request.clone()))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let connect = match name.parse::<IpAddr>() {
                Ok(ip) => HttpConnect::Addr(SocketAddr::new(ip, port)),
                Err(_) => HttpConnect::Name(name, port),
            };
            let host = uri
                .authority()
                .map(|a| a.as_str().to_string())
                .unwrap_or_default();
            let path = uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            (connect, https, path, host)
        } else {
            let path = format!("/{}", h.request.strip_prefix('/').unwrap_or(&h.request));
            (HttpConnect::Addr(addr), h.https, path, addr.to_string())
        };
        if let Some(v) = &h.virtual_host {
            host = v.clone();
        }
        let sni = match (&h.virtual_host, &connect) {
            (Some(v), _) => Some(v.clone()),
            (None, HttpConnect::Name(n, _)) => Some(n.clone()),
            (None, HttpConnect::Addr(_)) => None,
        };
        Ok(HttpRequestTarget {
            connect,
            https,
            path,
            host,
            sni,
        })
    }
}

impl Checker {
    /// Builds the checker (the TLS configuration on the ring provider), with keep-alive on and
    /// the process-wide idle budget ([`IdleBudget::process_wide`]), which every director of
    /// the daemon shares.
    pub fn new() -> Result<Checker, CheckerError> {
        let cfg = tls::any_certificate_config().map_err(|e| CheckerError(e.to_string()))?;
        Ok(Checker {
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            keepalive: true,
            budget: IdleBudget::process_wide(),
        })
    }

    /// Keeps plain-HTTP connections between checks (`true`, the default) or opens one per
    /// check with `Connection: close` (`false`, ldirectord's behaviour).
    pub fn with_keepalive(mut self, on: bool) -> Checker {
        self.keepalive = on;
        self
    }

    /// Keeps at most `max` connections idle instead of the number the descriptor limit
    /// allows ([`IdleBudget::from_fd_limit`]).
    pub fn with_idle_budget(mut self, max: usize) -> Checker {
        self.budget = Arc::new(IdleBudget::new(max));
        self
    }

    /// Idle connections kept now, over all sessions.
    pub fn idle_connections(&self) -> usize {
        self.budget.in_use()
    }

    /// Runs one check with its total deadline, on a fresh connection.
    pub async fn run_check(&self, spec: &CheckSpec, target: &CheckTarget) -> CheckResult {
        self.run(spec, target, None).await
    }

    /// Runs one check with its total deadline, reusing what `session` kept from this check's
    /// earlier runs (module docs). One session belongs to one check.
    pub async fn run_check_in(
        &self,
        spec: &CheckSpec,
        target: &CheckTarget,
        session: &mut CheckSession,
    ) -> CheckResult {
        self.run(spec, target, Some(session)).await
    }

    async fn run(
        &self,
        spec: &CheckSpec,
        target: &CheckTarget,
        session: Option<&mut CheckSession>,
    ) -> CheckResult {
        let started = clock::now();
        // With the outcome known, the rest of a body is read for at most 90 % of the deadline.
        let drain_until = started + spec.timeout.saturating_sub(spec.timeout / 10);
        // This future is allocated for every check (`Probe` returns it boxed). The kinds that
        // cost far more than an allocation (a process, ICMP, a service dialogue, the connect
        // and negotiate steps of `checktype = N`) are boxed on their own, and so is HTTPS in
        // `http_check`: what is left for a plain-HTTP or connect check is under 1 KiB (976
        // bytes in a debug build, from 3.6 KB), an allocation glibc serves from its
        // per-thread cache.
        let fut = async {
            match &spec.kind {
                CheckKind::On => (true, "checktype on".to_string()),
                CheckKind::Off => (false, "checktype off".to_string()),
                CheckKind::Connect => connect(target.check_addr()).await,
                CheckKind::Http(h) => self.http_check(h, target, session, drain_until).await,
                CheckKind::Service(c) => Box::pin(service(c, target)).await,
                CheckKind::External { command } => {
                    Box::pin(external(command, target, spec.timeout, started)).await
                }
                CheckKind::Ping { count } => {
                    Box::pin(ping(ping_addr(target), *count, started, spec.timeout)).await
                }
                CheckKind::Combined {
                    connects,
                    connect: step,
                    connect_timeout,
                    negotiate,
                } => {
                    let step = Step {
                        connects: *connects,
                        connect: step,
                        connect_timeout: *connect_timeout,
                        negotiate,
                    };
                    Box::pin(self.combined(step, target, session, drain_until)).await
                }
            }
        };
        // An external check keeps its own deadline, then kills and reaps its process group:
        // the outer one waits a little longer so that work is not cut off on a busy host.
        let limit = match spec.kind {
            CheckKind::External { .. } => spec.timeout + EXTERNAL_REAP_GRACE,
            _ => spec.timeout,
        };
        match tokio::time::timeout(limit, fut).await {
            Ok((ok, reason)) => CheckResult::new(ok, reason, started),
            Err(_) => CheckResult::new(false, timeout_reason(spec.timeout), started),
        }
    }

    /// One step of `checktype = N` (ldirectord `_check_real`, `combined`): negotiate when N
    /// connects have passed since the last passed negotiate (or a connect failed), else
    /// connect. A passed negotiate resets the count; a failed one leaves it, so the next
    /// check negotiates again.
    async fn combined(
        &self,
        step: Step<'_>,
        target: &CheckTarget,
        mut session: Option<&mut CheckSession>,
        drain_until: Instant,
    ) -> (bool, String) {
        let done = session.as_ref().map_or(u32::MAX, |s| s.connects);
        if done >= step.connects {
            let (ok, reason) = match step.negotiate {
                CheckKind::Http(h) => {
                    self.http_check(h, target, session.as_deref_mut(), drain_until)
                        .await
                }
                CheckKind::Service(c) => Box::pin(service(c, target)).await,
                _ => connect(target.check_addr()).await,
            };
            if ok && let Some(s) = session {
                s.connects = 0;
            }
            return (ok, format!("negotiate: {reason}"));
        }
        let t = step.connect_timeout;
        let (ok, reason) = match step.connect {
            CheckKind::Ping { count } => {
                Box::pin(ping(ping_addr(target), *count, clock::now(), t)).await
            }
            _ => match tokio::time::timeout(t, connect(target.check_addr())).await {
                Ok(r) => r,
                Err(_) => (false, timeout_reason(t)),
            },
        };
        if let Some(s) = session {
            s.connects = if ok { done.saturating_add(1) } else { u32::MAX };
        }
        (ok, reason)
    }

    async fn http_check(
        &self,
        h: &HttpCheck,
        target: &CheckTarget,
        session: Option<&mut CheckSession>,
        drain_until: Instant,
    ) -> (bool, String) {
        let addr = target.check_addr();
        if self.keepalive
            && let Some(s) = session
        {
            let fresh = !s.http.as_ref().is_some_and(|hs| hs.serves(h, addr));
            if fresh {
                s.http = None;
                let rt = match HttpRequestTarget::new(h, addr) {
                    Ok(r) => r,
                    Err(e) => return (false, e.to_string()),
                };
                if !rt.https {
                    let request = match http::request_bytes(h.method, &rt.path, &rt.host, false) {
                        Ok(r) => r,
                        Err(e) => return (false, e.to_string()),
                    };
                    s.http = Some(HttpSession {
                        addr,
                        https: h.https,
                        method: h.method,
                        request_cfg: h.request.clone(),
                        virtual_host: h.virtual_host.clone(),
                        rt,
                        request,
                        idle: None,
                    });
                }
            }
            if let Some(hs) = &mut s.http {
                return self.kept_alive(h, hs, drain_until).await;
            }
        }
        // Boxed: TLS makes this future large, and it is rare beside the kept-alive path.
        Box::pin(self.one_shot(h, target, drain_until)).await
    }

    /// A plain-HTTP check on the session's idle connection if it is still open (retried once
    /// on a fresh one if the server closed it as the request arrived), else on a new one.
    /// The budget unit of the idle connection stays with the session for the connection it
    /// keeps next: a check at a full budget keeps its connection, and a reuse costs no
    /// budget update.
    async fn kept_alive(
        &self,
        h: &HttpCheck,
        hs: &mut HttpSession,
        drain_until: Instant,
    ) -> (bool, String) {
        let mut slot = None;
        if let Some(IdleConn {
            mut stream,
            slot: s,
        }) = hs.idle.take()
        {
            slot = Some(s);
            if still_open(&stream) {
                let ex = http::exchange(h, &hs.request, &mut stream, drain_until).await;
                if !ex.closed_before_response {
                    return self.keep(hs, stream, slot, ex);
                }
            }
            // Closed (or closing) by the server: dropped here, before a new one is opened.
        }
        let mut stream = match open(&hs.rt).await {
            Ok(s) => s,
            Err(e) => return (false, describe_io("connect", &e)),
        };
        let ex = http::exchange(h, &hs.request, &mut stream, drain_until).await;
        self.keep(hs, stream, slot, ex)
    }

    /// Keeps `stream` for the next run when the exchange allows it and there is a budget
    /// unit for it: `slot`, the one the session had, or a new one.
    fn keep(
        &self,
        hs: &mut HttpSession,
        stream: tokio::net::TcpStream,
        slot: Option<IdleSlot>,
        ex: http::Exchange,
    ) -> (bool, String) {
        if ex.reusable
            && let Some(slot) = slot.or_else(|| self.budget.take())
        {
            hs.idle = Some(IdleConn { stream, slot });
        }
        (ex.ok, ex.reason)
    }

    /// One request on a new connection with `Connection: close` (HTTPS, keep-alive off, or
    /// no session).
    async fn one_shot(
        &self,
        h: &HttpCheck,
        target: &CheckTarget,
        drain_until: Instant,
    ) -> (bool, String) {
        let rt = match HttpRequestTarget::new(h, target.check_addr()) {
            Ok(r) => r,
            Err(e) => return (false, e.to_string()),
        };
        let request = match http::request_bytes(h.method, &rt.path, &rt.host, true) {
            Ok(r) => r,
            Err(e) => return (false, e.to_string()),
        };
        let mut stream = match open(&rt).await {
            Ok(s) => s,
            Err(e) => return (false, describe_io("connect", &e)),
        };
        if !rt.https {
            let ex = http::exchange(h, &request, &mut stream, drain_until).await;
            return (ex.ok, ex.reason);
        }
        let name = match &rt.sni {
            Some(n) => rustls::pki_types::ServerName::try_from(n.clone()),
            None => Ok(rustls::pki_types::ServerName::IpAddress(
                stream
                    .peer_addr()
                    .map(|a| a.ip())
                    .unwrap_or(target.real.ip())
                    .into(),
            )),
        };
        let name = match name {
            Ok(n) => n,
            Err(e) => return (false, format!("bad TLS name {:?}: {e}", rt.sni)),
        };
        match self.tls.connect(name, stream).await {
            Ok(mut tls) => {
                let ex = http::exchange(h, &request, &mut tls, drain_until).await;
                (ex.ok, ex.reason)
            }
            Err(e) => (false, format!("TLS: {e}")),
        }
    }
}

impl Probe for Checker {
    fn probe<'a>(
        &'a self,
        spec: &'a CheckSpec,
        target: &'a CheckTarget,
    ) -> BoxFuture<'a, CheckResult> {
        Box::pin(self.run_check(spec, target))
    }

    fn probe_in<'a>(
        &'a self,
        spec: &'a CheckSpec,
        target: &'a CheckTarget,
        session: &'a mut CheckSession,
    ) -> BoxFuture<'a, CheckResult> {
        Box::pin(self.run_check_in(spec, target, session))
    }
}

/// The parts of [`CheckKind::Combined`] one step needs.
struct Step<'a> {
    connects: u32,
    connect: &'a CheckKind,
    connect_timeout: Duration,
    negotiate: &'a CheckKind,
}

/// A negotiate check of a service beyond HTTP ([`super::services`]).
async fn service(c: &ServiceCheck, target: &CheckTarget) -> (bool, String) {
    match services::negotiate(c, target.check_addr()).await {
        Ok(p) => (true, p.0),
        Err(e) => (false, e.to_string()),
    }
}

fn describe_io(what: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => format!("{what} refused"),
        std::io::ErrorKind::ConnectionReset => format!("{what}: connection reset"),
        _ => format!("{what}: {e}"),
    }
}

async fn connect(addr: SocketAddr) -> (bool, String) {
    match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => {
            // Close with RST (SO_LINGER 0): no TIME_WAIT and no FIN exchange per check.
            let _ = s.set_zero_linger();
            (true, "connected".into())
        }
        Err(e) => (false, describe_io("connect", &e)),
    }
}

/// Up to `count` (at least 1) echos to `ip`, attempt `i` ending at `started + total × i /
/// count`; up at the first reply. The last attempt ends by `started + total`, before the
/// check's own deadline, so the reason names the attempts.
async fn ping(ip: IpAddr, count: u32, started: Instant, total: Duration) -> (bool, String) {
    let count = count.max(1);
    let each = total / count;
    let mut last = String::new();
    for i in 1..=count {
        // Saturating: an absurd checktimeout × checkcount² must not panic.
        let until = started + total.saturating_mul(i) / count;
        match tokio::time::timeout_at(until, super::ping::echo(ip)).await {
            Ok((true, reason)) => return (true, reason),
            Ok((false, reason)) => last = reason,
            Err(_) => last = timeout_reason(each),
        }
    }
    if count > 1 {
        last = format!("{last} ({count} attempts)");
    }
    (false, last)
}

/// The arguments ldirectord gives an external check: `vip vport rip rport` (for a fwmark
/// service `vip` is the mark and `vport` the real's check port).
pub fn external_args(target: &CheckTarget) -> [String; 4] {
    let check = target.check_addr();
    let (vip, vport) = match target.vip {
        CheckVip::Addr(a) => (a.ip().to_string(), a.port()),
        CheckVip::Fwmark(m) => (m.to_string(), check.port()),
    };
    [
        vip,
        vport.to_string(),
        check.ip().to_string(),
        check.port().to_string(),
    ]
}

/// Runs the external command in its own process group; at the deadline the whole group is
/// killed (SIGKILL) and reaped, so a hanging script cannot leave children behind.
async fn external(
    command: &PathBuf,
    target: &CheckTarget,
    timeout: Duration,
    started: Instant,
) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(command);
    cmd.args(external_args(target))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match crate::spawn::spawn_past_busy_text(&mut cmd).await {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot run {}: {e}", command.display())),
    };
    // Should this future be dropped before the group is reaped (the outer deadline), the
    // guard kills the whole group: kill_on_drop alone would reach only its leader.
    let group = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(GroupKiller);
    let deadline = started + timeout;
    match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(Ok(status)) => match (status.code(), status.success()) {
            (_, true) => (true, "exit 0".into()),
            (Some(c), false) => (false, format!("exit {c}")),
            (None, false) => {
                use std::os::unix::process::ExitStatusExt;
                (
                    false,
                    format!("killed by signal {}", status.signal().unwrap_or(0)),
                )
            }
        },
        Ok(Err(e)) => (false, format!("wait for {}: {e}", command.display())),
        Err(_) => {
            // The child leads its own group (process_group(0)): kill it all, then reap.
            drop(group);
            let _ = child.wait().await;
            (false, format!("{} (killed)", timeout_reason(timeout)))
        }
    }
}

/// How much longer than its deadline an external check may take to kill and reap its
/// process group before the outer deadline drops it (its [`GroupKiller`] then kills).
const EXTERNAL_REAP_GRACE: Duration = Duration::from_millis(150);

/// Kills the process group it names when dropped (SIGKILL; ESRCH when already gone).
struct GroupKiller(i32);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// IP of the real for ping checks (ports play no role).
pub fn ping_addr(target: &CheckTarget) -> IpAddr {
    target.real.ip()
}

/// TLS for HTTPS checks: accept any certificate (ldirectord behaviour, module docs).
mod tls {
    use std::sync::Arc;

    use rustls::DigitallySignedStruct;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    /// Accepts any server certificate, but still checks the handshake signature against it.
    #[derive(Debug)]
    struct AnyCertificate(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// A rustls client configuration on the ring provider that accepts any certificate.
    pub fn any_certificate_config() -> Result<rustls::ClientConfig, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::director::Receive;
    use crate::director::http::HttpStatus;

    fn target() -> CheckTarget {
        CheckTarget {
            real: "192.0.2.21:80".parse().unwrap(),
            vip: CheckVip::Addr("198.51.100.10:8080".parse().unwrap()),
            check_port: None,
        }
    }

    fn http(request: &str) -> HttpCheck {
        HttpCheck {
            https: false,
            method: HttpMethod::Get,
            request: request.into(),
            receive: None,
            virtual_host: None,
            status: HttpStatus::Any2xx,
        }
    }

    #[test]
    fn check_port_replaces_the_real_port() {
        let mut t = target();
        assert_eq!(t.check_addr(), "192.0.2.21:80".parse().unwrap());
        t.check_port = Some(8081);
        assert_eq!(t.check_addr(), "192.0.2.21:8081".parse().unwrap());
    }

    #[test]
    fn external_arguments_follow_ldirectord() {
        let mut t = target();
        assert_eq!(
            external_args(&t),
            ["198.51.100.10", "8080", "192.0.2.21", "80"]
        );
        t.vip = CheckVip::Fwmark(7);
        t.check_port = Some(81);
        assert_eq!(external_args(&t), ["7", "81", "192.0.2.21", "81"]);
    }

    #[test]
    fn request_targets() {
        let a: SocketAddr = "192.0.2.21:80".parse().unwrap();
        let r = HttpRequestTarget::new(&http("/index.html"), a).unwrap();
        assert_eq!(r.connect, HttpConnect::Addr(a));
        assert_eq!(
            (r.path.as_str(), r.host.as_str()),
            ("/index.html", "192.0.2.21:80")
        );
        assert_eq!((r.https, r.sni), (false, None));
        assert_eq!(
            HttpRequestTarget::new(&http("health"), a).unwrap().path,
            "/health"
        );
        let mut h = http("/");
        h.https = true;
        h.virtual_host = Some("www.example.org".into());
        let r = HttpRequestTarget::new(&h, a).unwrap();
        assert_eq!(r.connect, HttpConnect::Addr(a));
        assert_eq!(r.host, "www.example.org");
        assert_eq!(r.sni.as_deref(), Some("www.example.org"));
        // An absolute request URL replaces scheme, host and port.
        let r = HttpRequestTarget::new(&http("https://x.example:8443/y?z=1"), a).unwrap();
        assert_eq!(r.connect, HttpConnect::Name("x.example".into(), 8443));
        assert_eq!((r.https, r.path.as_str()), (true, "/y?z=1"));
        assert_eq!(
            (r.host.as_str(), r.sni.as_deref()),
            ("x.example:8443", Some("x.example"))
        );
        let r = HttpRequestTarget::new(&http("http://[2001:db8::1]/"), a).unwrap();
        assert_eq!(
            r.connect,
            HttpConnect::Addr("[2001:db8::1]:80".parse().unwrap())
        );
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(
            HttpRequestTarget::new(&http("/"), v6).unwrap().host,
            "[2001:db8::1]:443"
        );
        assert!(HttpRequestTarget::new(&http("http://"), a).is_err());
    }

    #[test]
    fn identical_http_checks_are_equal_and_hash_alike() {
        use std::collections::hash_map::DefaultHasher;
        use std::hash::{Hash, Hasher};
        let mut a = http("/");
        a.receive = Some(Receive::new("OK").unwrap());
        let b = a.clone();
        let mut c = a.clone();
        c.receive = Some(Receive::new("KO").unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let h = |x: &HttpCheck| {
            let mut s = DefaultHasher::new();
            x.hash(&mut s);
            s.finish()
        };
        assert_eq!(h(&a), h(&b));
    }

    #[test]
    fn timeout_reasons() {
        assert_eq!(timeout_reason(Duration::from_secs(3)), "timeout after 3s");
        assert_eq!(
            timeout_reason(Duration::from_millis(250)),
            "timeout after 250ms"
        );
    }

    #[test]
    fn every_checker_of_the_process_shares_one_idle_budget() {
        // Two director resources, two checkers: one count against the descriptor limit.
        let a = Checker::new().unwrap();
        let b = Checker::new().unwrap();
        assert!(Arc::ptr_eq(&a.budget, &b.budget));
        assert!(Arc::ptr_eq(&a.budget, &IdleBudget::process_wide()));
    }

    #[tokio::test]
    async fn on_and_off_are_constant() {
        let c = Checker::new().unwrap();
        let mut spec = CheckSpec {
            kind: CheckKind::On,
            timeout: Duration::from_secs(1),
            interval: Duration::from_secs(1),
            rise: 1,
            fall: 1,
        };
        assert!(c.run_check(&spec, &target()).await.ok);
        spec.kind = CheckKind::Off;
        let r = c.run_check(&spec, &target()).await;
        assert!(!r.ok);
        assert_eq!(r.reason, "checktype off");
    }
}
