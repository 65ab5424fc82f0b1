//! Real-server health checks in the manner of ldirectord (features §3.3): TCP connect,
//! HTTP/HTTPS negotiate, external command, ICMP ping, and the constant `on` / `off`.
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
//! The input types here ([`CheckTarget`], [`CheckSpec`]) are deliberately small; the
//! configuration layer maps `ldirectord.cf` / YAML onto them.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use regex::Regex;
use tokio::time::Instant;

/// Most body bytes read for the `receive` match; the rest is not downloaded.
pub const MAX_BODY: usize = 1 << 20;

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

/// HTTP method of an HTTP check (ldirectord `httpmethod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HttpMethod {
    /// `GET` (ldirectord default): status and body are checked.
    #[default]
    Get,
    /// `HEAD`: no body; `receive` is matched against the response header lines.
    Head,
}

/// Which HTTP status counts as success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HttpStatus {
    /// Any 2xx (ldirectord: the only choice there).
    #[default]
    Any2xx,
    /// Exactly this code.
    Code(u16),
}

/// An HTTP or HTTPS negotiate check.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    /// `https` instead of `http` (service = https).
    pub https: bool,
    /// GET or HEAD.
    pub method: HttpMethod,
    /// ldirectord `request`: a path (`/index.html`, leading `/` optional), or an absolute
    /// `http://…`/`https://…` URL that replaces scheme, host and port.
    pub request: String,
    /// ldirectord `receive`: the body (header lines for HEAD) must match this regex.
    pub receive: Option<Regex>,
    /// ldirectord `virtualhost`: `Host` header and TLS SNI name.
    pub virtual_host: Option<String>,
    /// Which status is success.
    pub status: HttpStatus,
}

impl PartialEq for HttpCheck {
    /// Regexes compare by their source text, so identical checks can be shared.
    fn eq(&self, o: &Self) -> bool {
        self.https == o.https
            && self.method == o.method
            && self.request == o.request
            && self.receive.as_ref().map(Regex::as_str) == o.receive.as_ref().map(Regex::as_str)
            && self.virtual_host == o.virtual_host
            && self.status == o.status
    }
}

impl Eq for HttpCheck {}

impl Hash for HttpCheck {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.https.hash(h);
        self.method.hash(h);
        self.request.hash(h);
        self.receive.as_ref().map(Regex::as_str).hash(h);
        self.virtual_host.hash(h);
        self.status.hash(h);
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
    /// `ping`: one ICMP echo to the real's IP.
    Ping,
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
            took: started.elapsed(),
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
}

/// "timeout after 3s" / "timeout after 250ms".
pub fn timeout_reason(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("timeout after {}s", d.as_secs())
    } else {
        format!("timeout after {}ms", d.as_millis())
    }
}

/// The real check runner: one shared HTTP client, plus per-(virtual host, real) HTTPS clients
/// so the SNI name can be the virtual host while the connection goes to the real's IP.
pub struct Checker {
    http: reqwest::Client,
    sni_clients: Mutex<HashMap<(String, SocketAddr), reqwest::Client>>,
}

impl fmt::Debug for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checker").finish_non_exhaustive()
    }
}

/// The HTTP client could not be built (TLS provider setup).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP check client: {0}")]
pub struct CheckerError(String);

impl Checker {
    /// Builds the shared client: HTTP/1 only, no proxy, no redirects followed (a 3xx is a
    /// failure), no connection reuse (each check opens a fresh connection, as ldirectord's
    /// LWP does), TLS accepting any certificate (module docs).
    pub fn new() -> Result<Checker, CheckerError> {
        Ok(Checker {
            http: client_builder()?
                .build()
                .map_err(|e| CheckerError(e.to_string()))?,
            sni_clients: Mutex::new(HashMap::new()),
        })
    }

    /// Runs one check with its total deadline.
    pub async fn run_check(&self, spec: &CheckSpec, target: &CheckTarget) -> CheckResult {
        let started = Instant::now();
        let fut = async {
            match &spec.kind {
                CheckKind::On => (true, "checktype on".to_string()),
                CheckKind::Off => (false, "checktype off".to_string()),
                CheckKind::Connect => connect(target.check_addr()).await,
                CheckKind::Http(h) => self.http_check(h, target).await,
                CheckKind::External { command } => {
                    external(command, target, spec.timeout, started).await
                }
                CheckKind::Ping => crate::director::ping::echo(ping_addr(target)).await,
            }
        };
        match tokio::time::timeout(spec.timeout, fut).await {
            Ok((ok, reason)) => CheckResult::new(ok, reason, started),
            Err(_) => CheckResult::new(false, timeout_reason(spec.timeout), started),
        }
    }

    fn client_for(&self, h: &HttpCheck, addr: SocketAddr) -> Result<reqwest::Client, String> {
        match (&h.virtual_host, h.https) {
            (Some(vhost), true) => {
                let mut map = self.sni_clients.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(c) = map.get(&(vhost.clone(), addr)) {
                    return Ok(c.clone());
                }
                let c = client_builder()
                    .map_err(|e| e.to_string())?
                    .resolve(vhost, addr)
                    .build()
                    .map_err(|e| format!("client for {vhost}: {e}"))?;
                map.insert((vhost.clone(), addr), c.clone());
                Ok(c)
            }
            _ => Ok(self.http.clone()),
        }
    }

    async fn http_check(&self, h: &HttpCheck, target: &CheckTarget) -> (bool, String) {
        let addr = target.check_addr();
        let url = http_url(h, addr);
        let client = match self.client_for(h, addr) {
            Ok(c) => c,
            Err(e) => return (false, e),
        };
        let method = match h.method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Head => reqwest::Method::HEAD,
        };
        let mut req = client.request(method, &url);
        if let Some(vhost) = &h.virtual_host {
            req = req.header(reqwest::header::HOST, vhost.as_str());
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return (false, describe_reqwest(&e)),
        };
        let code = resp.status().as_u16();
        let status_ok = match h.status {
            HttpStatus::Any2xx => (200..300).contains(&code),
            HttpStatus::Code(c) => code == c,
        };
        if !status_ok {
            return (false, format!("HTTP {code}"));
        }
        let Some(re) = &h.receive else {
            return (true, format!("HTTP {code}"));
        };
        let text = match h.method {
            HttpMethod::Head => resp
                .headers()
                .iter()
                .map(|(k, v)| format!("{}: {}\n", k, String::from_utf8_lossy(v.as_bytes())))
                .collect::<String>(),
            HttpMethod::Get => {
                let mut body = Vec::new();
                loop {
                    match resp.chunk().await {
                        Ok(Some(c)) => {
                            let room = MAX_BODY - body.len();
                            body.extend_from_slice(&c[..c.len().min(room)]);
                            if body.len() >= MAX_BODY {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return (false, format!("HTTP {code}, body: {}", root_cause(&e))),
                    }
                }
                String::from_utf8_lossy(&body).into_owned()
            }
        };
        if re.is_match(&text) {
            (true, format!("HTTP {code}, receive matched"))
        } else {
            (false, format!("HTTP {code}, receive regex not matched"))
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
}

fn client_builder() -> Result<reqwest::ClientBuilder, CheckerError> {
    let tls = tls::any_certificate_config().map_err(|e| CheckerError(e.to_string()))?;
    Ok(reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .user_agent(concat!("hbd-check/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(tls))
}

/// The URL an HTTP check requests.
pub fn http_url(h: &HttpCheck, addr: SocketAddr) -> String {
    if h.request.starts_with("http://") || h.request.starts_with("https://") {
        return h.request.clone();
    }
    let scheme = if h.https { "https" } else { "http" };
    let path = h.request.strip_prefix('/').unwrap_or(&h.request);
    match (&h.virtual_host, h.https) {
        // Resolved to `addr` by the per-target client, so SNI carries the name.
        (Some(vhost), true) => format!("{scheme}://{vhost}:{}/{path}", addr.port()),
        _ => format!("{scheme}://{addr}/{path}"),
    }
}

/// The innermost error message, e.g. "Connection refused (os error 111)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return describe_io("connect", io);
        }
        cur = err.source();
    }
    if e.is_connect() {
        format!("connect: {}", root_cause(e))
    } else {
        format!("HTTP: {}", root_cause(e))
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
        Ok(_) => (true, "connected".into()),
        Err(e) => (false, describe_io("connect", &e)),
    }
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
    let mut child = match tokio::process::Command::new(command)
        .args(external_args(target))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot run {}: {e}", command.display())),
    };
    // Leave a little slack before the outer deadline so the group is killed and reaped here.
    let deadline = started + timeout.saturating_sub(Duration::from_millis(5));
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
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                // The child leads its own group (process_group(0)); ESRCH means it is gone.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            (false, format!("{} (killed)", timeout_reason(timeout)))
        }
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

/// Lets `Arc<P>` be a probe too.
impl<P: Probe> Probe for Arc<P> {
    fn probe<'a>(
        &'a self,
        spec: &'a CheckSpec,
        target: &'a CheckTarget,
    ) -> BoxFuture<'a, CheckResult> {
        (**self).probe(spec, target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn urls() {
        let a: SocketAddr = "192.0.2.21:80".parse().unwrap();
        assert_eq!(
            http_url(&http("/index.html"), a),
            "http://192.0.2.21:80/index.html"
        );
        assert_eq!(http_url(&http("health"), a), "http://192.0.2.21:80/health");
        assert_eq!(
            http_url(&http("http://x.example/y"), a),
            "http://x.example/y"
        );
        let mut h = http("/");
        h.https = true;
        assert_eq!(http_url(&h, a), "https://192.0.2.21:80/");
        h.virtual_host = Some("www.example.org".into());
        assert_eq!(http_url(&h, a), "https://www.example.org:80/");
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(http_url(&http("/"), v6), "http://[2001:db8::1]:443/");
    }

    #[test]
    fn identical_http_checks_are_equal_and_hash_alike() {
        use std::collections::hash_map::DefaultHasher;
        let mut a = http("/");
        a.receive = Some(Regex::new("OK").unwrap());
        let b = a.clone();
        let mut c = a.clone();
        c.receive = Some(Regex::new("KO").unwrap());
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
