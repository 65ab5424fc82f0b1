//! Director health checks against real sockets and processes: HTTP and HTTPS servers on
//! 127.0.0.1 written in the test (200 + body, 503, a byte-dripping server for the total
//! deadline, Host/SNI echo; HTTP/1.1 keep-alive, counting connections, optionally closing
//! idle ones), kept-alive connection reuse and its failure cases, TCP connect to open and closed ports, external commands (exit
//! 0/1, argument contract, a hanging one killed with its process group at the deadline), and
//! ICMP echo to loopback, to a host in a namespace, and to an address with no host.
//!
//! Also the load benchmark (`#[ignore]`, run by scripts/bench-checks.sh): 5,000 HTTP reals on
//! 127.0.0.1 checked every second through the real scheduler; the server runs in a separate
//! process (this binary re-executed) so the figures are the checker's own.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hbd::config::director::{HttpMethod, Receive};
use hbd::director::checks::{
    CheckKind, CheckResult, CheckSession, CheckSpec, CheckTarget, CheckVip, Checker,
};
use hbd::director::http::{HttpCheck, HttpStatus};
use hbd::director::scheduler::{CheckScheduler, TargetId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::netns::{gone, pair, require_root, wait_until, write_exec};

fn target(addr: SocketAddr) -> CheckTarget {
    CheckTarget {
        real: addr,
        vip: CheckVip::Addr("192.0.2.10:80".parse().unwrap()),
        check_port: None,
    }
}

fn spec(kind: CheckKind, timeout: Duration) -> CheckSpec {
    CheckSpec {
        kind,
        timeout,
        interval: Duration::from_secs(1),
        rise: 1,
        fall: 1,
    }
}

fn http(request: &str, receive: Option<&str>) -> HttpCheck {
    HttpCheck {
        https: false,
        method: HttpMethod::Get,
        request: request.into(),
        receive: receive.map(|r| Receive::new(r).unwrap()),
        virtual_host: None,
        status: HttpStatus::Any2xx,
    }
}

/// Reads one request head (bounded) and returns (method, path, host header).
async fn read_head(s: &mut tokio::net::TcpStream) -> Option<(String, String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 16 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut first = head.lines().next()?.split_whitespace();
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let host = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("host").then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    Some((method, path, host))
}

/// A kept-alive HTTP/1.1 response (no `Connection` header).
fn response(code: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} X\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// How the in-test HTTP server treats its connections.
#[derive(Debug, Clone, Copy, Default)]
struct ServerMode {
    /// Close a connection idle this long after a response (as nginx `keepalive_timeout`).
    idle_close: Option<Duration>,
    /// Answer one request per connection, then close on reading the next one without
    /// answering: the server's idle close racing the client's next request.
    answer_once: bool,
}

/// Connections a test server accepted and closed.
#[derive(Debug, Default)]
struct ConnCount {
    accepted: AtomicUsize,
    closed: AtomicUsize,
}

impl ConnCount {
    fn get(&self) -> (usize, usize) {
        (
            self.accepted.load(Ordering::SeqCst),
            self.closed.load(Ordering::SeqCst),
        )
    }

    /// Waits (5 s at most) until `closed` connections were closed.
    async fn wait_closed(&self, closed: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.closed.load(Ordering::SeqCst) < closed {
            assert!(
                Instant::now() < deadline,
                "server saw {:?} (accepted, closed), wanted {closed} closed",
                self.get()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The in-test HTTP server (see [`http_server_with`]) in its plain mode.
async fn http_server() -> SocketAddr {
    http_server_with(ServerMode::default()).await.0
}

/// The in-test HTTP/1.1 server, serving several requests per connection: `/ok` 200
/// "service OK", `/fail` 503, `/host` echoes the Host header, `/close` 200 with
/// `Connection: close`, `/chunked` a chunked 200, `/silent` never answers, `/drip` sends
/// headers then one body byte every 100 ms (for 10 s at most). Counts connections.
async fn http_server_with(mode: ServerMode) -> (SocketAddr, Arc<ConnCount>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(ConnCount::default());
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            c.accepted.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                serve_connection(s, mode).await;
                c.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, count)
}

async fn serve_connection(mut s: tokio::net::TcpStream, mode: ServerMode) {
    for served in 0..1000 {
        let head = match mode.idle_close {
            Some(idle) if served > 0 => match tokio::time::timeout(idle, read_head(&mut s)).await {
                Ok(h) => h,
                Err(_) => return,
            },
            _ => read_head(&mut s).await,
        };
        let Some((method, path, host)) = head else {
            return;
        };
        if mode.answer_once && served > 0 {
            return;
        }
        let out = match path.as_str() {
            "/ok" => response(200, "service OK\n"),
            "/fail" => response(503, "down for maintenance\n"),
            "/host" => response(200, &format!("host={host}\n")),
            "/redirect" => response(301, ""),
            "/close" => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nOK\n".to_vec()
            }
            "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                3\r\nser\r\n8\r\nvice OK\n\r\n0\r\n\r\n"
                .to_vec(),
            "/silent" => {
                // Wait for the client to go away (its deadline closes the socket).
                let mut b = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await;
                return;
            }
            "/drip" => {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
                    .await;
                for _ in 0..100 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if s.write_all(b"x").await.is_err() {
                        return;
                    }
                }
                return;
            }
            _ => response(404, "no\n"),
        };
        let mut out = out;
        if method == "HEAD" {
            // The head only (RFC 9110 §9.3.2): a body here would desynchronise the connection.
            let end = out
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(out.len(), |i| i + 4);
            out.truncate(end);
        }
        if s.write_all(&out).await.is_err() || path == "/close" {
            return;
        }
    }
}

/// A TCP port on 127.0.0.1 with nothing listening: a bound socket that never listens, so
/// a SYN gets a reset, and, while the guard lives, no other socket (not even the check's own,
/// which could otherwise connect to itself) can take the port.
fn closed_port() -> (SocketAddr, socket2::Socket) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    (addr, s)
}

async fn check(kind: CheckKind, addr: SocketAddr, timeout: Duration) -> CheckResult {
    let c = Checker::new().unwrap();
    c.run_check(&spec(kind, timeout), &target(addr)).await
}

#[tokio::test]
async fn http_check_status_body_and_host_header() {
    let addr = http_server().await;
    let t = Duration::from_secs(3);
    let r = check(CheckKind::Http(http("/ok", Some("(?m)OK$"))), addr, t).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.reason, "HTTP 200, receive matched");
    let r = check(CheckKind::Http(http("ok", None)), addr, t).await;
    assert_eq!((r.ok, r.reason.as_str()), (true, "HTTP 200"));
    let r = check(CheckKind::Http(http("/ok", Some("nope"))), addr, t).await;
    assert_eq!(
        (r.ok, r.reason.as_str()),
        (false, "HTTP 200, receive regex not matched")
    );
    let r = check(CheckKind::Http(http("/fail", None)), addr, t).await;
    assert_eq!((r.ok, r.reason.as_str()), (false, "HTTP 503"));
    let r = check(CheckKind::Http(http("/redirect", None)), addr, t).await;
    assert_eq!(
        (r.ok, r.reason.as_str()),
        (false, "HTTP 301"),
        "redirects not followed"
    );
    let mut h = http("/fail", Some("maintenance"));
    h.status = HttpStatus::Code(503);
    let r = check(CheckKind::Http(h), addr, t).await;
    assert!(r.ok, "configured status 503: {r:?}");
    let mut h = http("/ok", Some("(?i)content-length: 11"));
    h.method = HttpMethod::Head;
    let r = check(CheckKind::Http(h), addr, t).await;
    assert!(r.ok, "HEAD matches headers: {r:?}");
    let mut h = http("/host", Some("^host=www.example.org\n$"));
    h.virtual_host = Some("www.example.org".into());
    let r = check(CheckKind::Http(h), addr, t).await;
    assert!(r.ok, "virtualhost is the Host header: {r:?}");
    let (closed, _guard) = closed_port();
    let r = check(CheckKind::Http(http("/ok", None)), closed, t).await;
    assert_eq!((r.ok, r.reason.as_str()), (false, "connect refused"));
    let r = check(
        CheckKind::Http(http("/chunked", Some("^service OK\n$"))),
        addr,
        t,
    )
    .await;
    assert_eq!(
        (r.ok, r.reason.as_str()),
        (true, "HTTP 200, receive matched")
    );
}

/// Runs `n` checks of `h` on one session, all expected to pass.
async fn checks_in(c: &Checker, h: HttpCheck, addr: SocketAddr, n: usize) -> CheckSession {
    let mut session = CheckSession::new();
    let sp = spec(CheckKind::Http(h), Duration::from_secs(2));
    for i in 0..n {
        let r = c.run_check_in(&sp, &target(addr), &mut session).await;
        assert!(r.ok, "check {i}: {r:?}");
    }
    session
}

/// A checker with an idle budget of its own: the process-wide one is shared by every test
/// of this binary, so a test that counts idle connections cannot use it.
fn counting_checker() -> Checker {
    Checker::new().unwrap().with_idle_budget(64)
}

#[tokio::test]
async fn keepalive_checks_reuse_one_connection_and_close_it_with_the_session() {
    let (addr, count) = http_server_with(ServerMode::default()).await;
    let c = counting_checker();
    for h in [
        http("/ok", Some("OK")),
        http("/chunked", Some("OK")),
        http("/ok", None),
        HttpCheck {
            method: HttpMethod::Head,
            ..http("/ok", Some("(?i)content-length: 11"))
        },
    ] {
        let before = count.get().0;
        let session = checks_in(&c, h.clone(), addr, 5).await;
        assert_eq!(count.get().0 - before, 1, "5 checks, one connection: {h:?}");
        assert!(session.has_idle_connection());
        assert_eq!(c.idle_connections(), 1);
        drop(session);
        assert_eq!(c.idle_connections(), 0);
        count.wait_closed(count.get().0).await;
    }
}

#[tokio::test]
async fn a_full_idle_budget_keeps_the_connections_it_has() {
    let (addr, count) = http_server_with(ServerMode::default()).await;
    let c = Checker::new().unwrap().with_idle_budget(1);
    let sp = spec(
        CheckKind::Http(http("/ok", Some("OK"))),
        Duration::from_secs(2),
    );
    // The first session takes the only unit and keeps its connection from check to check.
    let first = checks_in(&c, http("/ok", Some("OK")), addr, 4).await;
    assert!(first.has_idle_connection());
    assert_eq!(
        count.get().0,
        1,
        "4 checks at a full budget, one connection"
    );
    // A second session finds the budget spent: a new connection per check, none kept.
    let mut second = CheckSession::new();
    for i in 0..3 {
        let r = c.run_check_in(&sp, &target(addr), &mut second).await;
        assert!(r.ok, "check {i}: {r:?}");
        assert!(!second.has_idle_connection());
    }
    assert_eq!(count.get().0, 4);
    assert_eq!(c.idle_connections(), 1);
    // The unit comes back with the first session; the second keeps its next connection.
    drop(first);
    assert_eq!(c.idle_connections(), 0);
    for i in 0..3 {
        let r = c.run_check_in(&sp, &target(addr), &mut second).await;
        assert!(r.ok, "check {i}: {r:?}");
        assert!(second.has_idle_connection());
    }
    assert_eq!(count.get().0, 5);
    assert_eq!(c.idle_connections(), 1);
}

#[tokio::test]
async fn connections_not_kept_when_off_closed_by_the_server_or_failing() {
    let (addr, count) = http_server_with(ServerMode::default()).await;
    // Keep-alive off: one connection per check (ldirectord's behaviour).
    let off = Checker::new().unwrap().with_keepalive(false);
    let s = checks_in(&off, http("/ok", Some("OK")), addr, 3).await;
    assert!(!s.has_idle_connection());
    assert_eq!(count.get().0, 3);
    // The server says Connection: close.
    let c = Checker::new().unwrap();
    let s = checks_in(&c, http("/close", Some("OK")), addr, 3).await;
    assert!(!s.has_idle_connection());
    assert_eq!(count.get().0, 6);
    // A failed check drops its connection.
    let mut session = CheckSession::new();
    let sp = spec(CheckKind::Http(http("/fail", None)), Duration::from_secs(2));
    for _ in 0..2 {
        let r = c.run_check_in(&sp, &target(addr), &mut session).await;
        assert_eq!((r.ok, r.reason.as_str()), (false, "HTTP 503"));
        assert!(!session.has_idle_connection());
    }
    assert_eq!(count.get().0, 8);
    count.wait_closed(8).await;
}

#[tokio::test]
async fn a_server_closing_idle_connections_fails_no_check() {
    // Closes each connection 50 ms after its last response: every later check finds it closed.
    let (addr, count) = http_server_with(ServerMode {
        idle_close: Some(Duration::from_millis(50)),
        ..ServerMode::default()
    })
    .await;
    let c = Checker::new().unwrap();
    let mut session = CheckSession::new();
    let sp = spec(
        CheckKind::Http(http("/ok", Some("OK"))),
        Duration::from_secs(2),
    );
    for i in 1..=4 {
        let r = c.run_check_in(&sp, &target(addr), &mut session).await;
        assert_eq!(
            (r.ok, r.reason.as_str()),
            (true, "HTTP 200, receive matched"),
            "check {i}"
        );
        count.wait_closed(i).await;
    }
    assert_eq!(count.get(), (4, 4));
    // The server closes as the next request arrives (before answering): retried fresh once.
    let (addr, count) = http_server_with(ServerMode {
        answer_once: true,
        ..ServerMode::default()
    })
    .await;
    let mut session = CheckSession::new();
    for i in 1..=4 {
        let r = c.run_check_in(&sp, &target(addr), &mut session).await;
        assert_eq!(
            (r.ok, r.reason.as_str()),
            (true, "HTTP 200, receive matched"),
            "check {i}"
        );
    }
    assert_eq!(
        count.get().0,
        4,
        "one fresh connection per check after the first"
    );
}

#[tokio::test]
async fn a_check_cut_by_its_deadline_closes_its_connection() {
    let (addr, count) = http_server_with(ServerMode::default()).await;
    let c = counting_checker();
    let mut session = checks_in(&c, http("/ok", None), addr, 1).await;
    let sp = spec(
        CheckKind::Http(http("/silent", None)),
        Duration::from_millis(300),
    );
    let r = c.run_check_in(&sp, &target(addr), &mut session).await;
    assert_eq!((r.ok, r.reason.as_str()), (false, "timeout after 300ms"));
    assert!(!session.has_idle_connection());
    assert_eq!(c.idle_connections(), 0);
    // Another check on the session replaced its connection; the server sees both closed:
    // the one the deadline cut did not outlive the check.
    count.wait_closed(2).await;
    assert_eq!(count.get(), (2, 2));
}

#[tokio::test]
async fn removing_a_scheduled_check_closes_its_kept_connection() {
    let (addr, count) = http_server_with(ServerMode::default()).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(100);
    let checker = Arc::new(counting_checker());
    let mut s = CheckScheduler::new(checker.clone(), 4, tx);
    let mut sp = spec(
        CheckKind::Http(http("/ok", Some("OK"))),
        Duration::from_secs(1),
    );
    sp.interval = Duration::from_millis(50);
    s.add(TargetId(1), target(addr), sp);
    let deadline = Instant::now() + Duration::from_secs(5);
    for _ in 0..4 {
        let (_, r, _) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("results within 5 s")
            .unwrap();
        assert!(r.ok, "{r:?}");
    }
    assert_eq!(count.get(), (1, 0), "4 checks on one connection");
    s.remove(TargetId(1));
    count.wait_closed(1).await;
    assert_eq!(checker.idle_connections(), 0);
}

#[tokio::test]
async fn http_check_total_deadline_cuts_a_dripping_server() {
    let addr = http_server().await;
    let t = Duration::from_millis(1000);
    let r = check(CheckKind::Http(http("/drip", Some("x"))), addr, t).await;
    assert_eq!((r.ok, r.reason.as_str()), (false, "timeout after 1s"));
    assert!(
        r.took >= t && r.took < t + Duration::from_millis(300),
        "deadline honoured: took {:?}",
        r.took
    );
}

/// A one-connection-at-a-time TLS server on a thread (rustls, the fixture certificate for
/// www.example.org); records the SNI name of each handshake.
fn tls_server(conns: usize) -> (SocketAddr, std::thread::JoinHandle<Vec<Option<String>>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checks");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let cfg = Arc::new(cfg);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let mut snis = Vec::new();
        for _ in 0..conns {
            let (s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, s);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            snis.push(tls.conn.server_name().map(str::to_string));
            let _ = tls.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nsecure OK\n",
            );
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
        snis
    });
    (addr, h)
}

#[tokio::test]
async fn https_check_accepts_any_certificate_and_sends_the_virtual_host_as_sni() {
    let (addr, server) = tls_server(2);
    let t = Duration::from_secs(3);
    let mut h = http("/", Some("secure OK"));
    h.https = true;
    let r = check(CheckKind::Http(h.clone()), addr, t).await;
    assert!(
        r.ok,
        "self-signed certificate for another name, checked by IP: {r:?}"
    );
    h.virtual_host = Some("www.example.org".into());
    let r = check(CheckKind::Http(h), addr, t).await;
    assert!(r.ok, "{r:?}");
    let snis = server.join().unwrap();
    assert_eq!(snis, [None, Some("www.example.org".to_string())]);
}

#[tokio::test]
async fn connect_check_open_and_closed_ports() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = l.local_addr().unwrap();
    let t = Duration::from_secs(2);
    let r = check(CheckKind::Connect, open, t).await;
    assert_eq!((r.ok, r.reason.as_str()), (true, "connected"));
    let (closed, _guard) = closed_port();
    let r = check(CheckKind::Connect, closed, t).await;
    assert_eq!((r.ok, r.reason.as_str()), (false, "connect refused"));
    // checkport: the real's port is closed, the check port is open.
    let c = Checker::new().unwrap();
    let mut tg = target(closed);
    tg.check_port = Some(open.port());
    assert!(c.run_check(&spec(CheckKind::Connect, t), &tg).await.ok);
}

#[tokio::test]
async fn external_check_contract_and_deadline_kill() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = d.join("args");
    let ok = d.join("ok");
    write_exec(
        &ok,
        &format!("#!/bin/sh\necho \"$@\" > {}\nexit 0\n", args.display()),
    );
    let fail = d.join("fail");
    write_exec(&fail, "#!/bin/sh\nexit 1\n");
    let pids = d.join("pids");
    let hang = d.join("hang");
    write_exec(
        &hang,
        &format!(
            "#!/bin/sh\nsleep 30 &\necho $$ $! > {}\nwait\n",
            pids.display()
        ),
    );
    let real: SocketAddr = "192.0.2.21:8080".parse().unwrap();
    let c = Checker::new().unwrap();
    let t = Duration::from_secs(2);
    let ext = |command: PathBuf| CheckKind::External { command };
    let r = c.run_check(&spec(ext(ok.clone()), t), &target(real)).await;
    assert_eq!((r.ok, r.reason.as_str()), (true, "exit 0"));
    assert_eq!(
        std::fs::read_to_string(&args).unwrap(),
        "192.0.2.10 80 192.0.2.21 8080\n"
    );
    let mut fw = target(real);
    fw.vip = CheckVip::Fwmark(7);
    assert!(c.run_check(&spec(ext(ok), t), &fw).await.ok);
    assert_eq!(
        std::fs::read_to_string(&args).unwrap(),
        "7 8080 192.0.2.21 8080\n"
    );
    let r = c.run_check(&spec(ext(fail), t), &target(real)).await;
    assert_eq!((r.ok, r.reason.as_str()), (false, "exit 1"));
    let r = c
        .run_check(&spec(ext(d.join("missing")), t), &target(real))
        .await;
    assert!(!r.ok && r.reason.starts_with("cannot run"), "{r:?}");

    let t = Duration::from_millis(800);
    let r = c
        .run_check(&spec(ext(hang.clone()), t), &target(real))
        .await;
    assert_eq!(
        (r.ok, r.reason.as_str()),
        (false, "timeout after 800ms (killed)")
    );
    assert!(r.took < t + Duration::from_millis(200), "took {:?}", r.took);
    let text = std::fs::read_to_string(&pids).unwrap();
    let ids: Vec<i32> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    wait_until(
        Duration::from_secs(5),
        &format!("group {ids:?} gone after the deadline"),
        || ids.iter().all(|p| gone(*p)),
    );

    // A check dropped before its own deadline (a director stopping, an outer timeout)
    // takes the script's whole group with it, background child included.
    std::fs::remove_file(&pids).unwrap();
    let dropped = tokio::time::timeout(
        Duration::from_millis(300),
        c.run_check(&spec(ext(hang), Duration::from_secs(5)), &target(real)),
    )
    .await;
    assert!(
        dropped.is_err(),
        "the check outlived its caller: {dropped:?}"
    );
    let both_ids = || -> Option<Vec<i32>> {
        let ids: Vec<i32> = std::fs::read_to_string(&pids)
            .ok()?
            .split_whitespace()
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        (ids.len() == 2).then_some(ids)
    };
    wait_until(
        Duration::from_secs(5),
        &format!("{} written", pids.display()),
        || both_ids().is_some(),
    );
    let ids = both_ids().unwrap();
    wait_until(
        Duration::from_secs(5),
        &format!("group {ids:?} gone after the check was dropped"),
        || ids.iter().all(|p| gone(*p)),
    );
}

#[tokio::test]
async fn ping_loopback() {
    require_root();
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        let ping = CheckKind::Ping { count: 1 };
        let r = check(ping, addr.parse().unwrap(), Duration::from_secs(2)).await;
        assert_eq!(
            (r.ok, r.reason.as_str()),
            (true, "echo reply"),
            "{addr}: {r:?}"
        );
    }
}

#[test]
fn ping_a_namespace_host_and_an_absent_one() {
    let (a, _b) = pair("chk", "198.51.100.1/24", "198.51.100.2/24");
    // One up host and one absent one, each pinged `count` times within `timeout`.
    let ping = |count, timeout: Duration, absent: &'static str| {
        a.run(|| async move {
            let c = Checker::new().unwrap();
            let s = spec(CheckKind::Ping { count }, timeout);
            let up = c
                .run_check(&s, &target("198.51.100.2:80".parse().unwrap()))
                .await;
            let absent = c.run_check(&s, &target(absent.parse().unwrap())).await;
            (up, absent)
        })
    };
    let (up, absent) = ping(1, Duration::from_millis(1000), "198.51.100.3:80");
    // checkcount = 3: three echos of 300 ms each; a host that answers is up at the first.
    // Another absent host: .3's neighbour entry may have failed by now.
    let (up3, absent3) = ping(3, Duration::from_millis(900), "198.51.100.4:80");
    assert_eq!(
        (up3.ok, up3.reason.as_str()),
        (true, "echo reply"),
        "{up3:?}"
    );
    assert!(up3.took < Duration::from_millis(300), "{up3:?}");
    assert_eq!(
        (absent3.ok, absent3.reason.as_str()),
        (false, "timeout after 300ms (3 attempts)")
    );
    assert!(
        absent3.took >= Duration::from_millis(900) && absent3.took < Duration::from_millis(1200),
        "{absent3:?}"
    );
    assert_eq!((up.ok, up.reason.as_str()), (true, "echo reply"), "{up:?}");
    assert_eq!(
        (absent.ok, absent.reason.as_str()),
        (false, "timeout after 1s")
    );
    assert!(
        absent.took >= Duration::from_millis(1000) && absent.took < Duration::from_millis(1300),
        "{absent:?}"
    );
}

#[tokio::test]
async fn scheduler_with_the_real_checker_shares_and_reports() {
    let addr = http_server().await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(100);
    let mut s = CheckScheduler::new(Arc::new(Checker::new().unwrap()), 4, tx);
    let mut sp = spec(
        CheckKind::Http(http("/ok", Some("OK"))),
        Duration::from_secs(1),
    );
    sp.interval = Duration::from_millis(200);
    s.add(TargetId(1), target(addr), sp.clone());
    let mut other = target(addr);
    other.vip = CheckVip::Fwmark(3);
    s.add(TargetId(2), other, sp);
    assert_eq!(s.running(), 1);
    let mut seen = [0usize; 3];
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen[1] < 3 || seen[2] < 3 {
        let (id, r, _) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("results within 5 s")
            .unwrap();
        assert!(r.ok, "{r:?}");
        seen[usize::try_from(id.0).unwrap()] += 1;
    }
}

/// Environment variable that turns [`bench_http_server`] into the benchmark's server.
const BENCH_ENV: &str = "HBD_BENCH_SERVER";
const BENCH_BASE_PORT: u16 = 20000;

/// The benchmark's server: `HBD_BENCH_SERVER=<n>` listens on 127.0.0.1 ports 20000.. and
/// answers every request with 200 "OK" (several per connection) until killed. Without the variable it does nothing.
/// Needs `ulimit -n` above the number of ports (scripts/bench-checks.sh sets it).
#[test]
#[ignore]
fn bench_http_server() {
    let Ok(n) = std::env::var(BENCH_ENV) else {
        return;
    };
    let n: u16 = n.parse().unwrap();
    // This process serves ports BENCH_BASE_PORT + first .. + first + n.
    let first: u16 = std::env::var("HBD_BENCH_SERVER_FIRST").map_or(0, |v| v.parse().unwrap());
    // HBD_BENCH_CLOSE=1: answer with `Connection: close` and close, as servers that do not
    // keep connections (and ldirectord's checks) make it: a new connection per check.
    let close = std::env::var("HBD_BENCH_CLOSE").is_ok_and(|v| v == "1");
    // Several such processes serve one benchmark (a descriptor limit per process; the
    // servers must not be the bottleneck, and their CPU is reported).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        for i in first..first + n {
            let l = TcpListener::bind(("127.0.0.1", BENCH_BASE_PORT + i))
                .await
                .unwrap_or_else(|e| panic!("bind port {}: {e}", BENCH_BASE_PORT + i));
            tokio::spawn(async move {
                while let Ok((mut s, _)) = l.accept().await {
                    // HTTP/1.1 keep-alive: serve requests on the connection until it closes.
                    tokio::spawn(async move {
                        while read_head(&mut s).await.is_some() {
                            if close {
                                let _ = s
                                    .write_all(
                                        b"HTTP/1.1 200 X\r\nContent-Length: 3\r\nConnection: close\r\n\r\nOK\n",
                                    )
                                    .await;
                                return;
                            }
                            if s.write_all(&response(200, "OK\n")).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        }
        println!("READY");
        std::future::pending::<()>().await;
    });
}

/// (utime, stime) clock ticks of this process.
fn cpu_ticks() -> (u64, u64) {
    cpu_ticks_of("self")
}

/// (utime, stime) clock ticks of process `pid` ("self" for this one).
fn cpu_ticks_of(pid: &str) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(") ").unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime), counted from 1; `rest` starts at field 3.
    (f[11].parse().unwrap(), f[12].parse().unwrap())
}

/// VmRSS of this process in KiB.
fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// 5,000 (or `HBD_BENCH_REALS`) HTTP reals checked every second for `HBD_BENCH_SECS` (20)
/// seconds on a current-thread runtime; prints CPU % of one core, RSS, checks/s and lateness.
#[test]
#[ignore]
fn bench_http_checks() {
    let reals: u16 = std::env::var("HBD_BENCH_REALS").map_or(5000, |v| v.parse().unwrap());
    let secs: u64 = std::env::var("HBD_BENCH_SECS").map_or(20, |v| v.parse().unwrap());
    let concurrency: usize =
        std::env::var("HBD_BENCH_CONCURRENCY").map_or(256, |v| v.parse().unwrap());
    let keepalive = std::env::var("HBD_BENCH_KEEPALIVE").map_or(true, |v| v != "0");
    let close = std::env::var("HBD_BENCH_CLOSE").is_ok_and(|v| v == "1");
    let exe = std::env::current_exe().unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // One server process per 5,000 reals: each holds a listener and a connection per real,
    // under the per-process descriptor limit.
    let per: u16 = 5000;
    let mut servers = Vec::new();
    let mut pids = Vec::new();
    for first in (0..reals).step_by(usize::from(per)) {
        let n = per.min(reals - first);
        let mut server = std::process::Command::new(&exe)
            .args([
                "--exact",
                "checks::bench_http_server",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(BENCH_ENV, n.to_string())
            .env("HBD_BENCH_SERVER_FIRST", first.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = server.stdout.take().unwrap();
        pids.push(server.id().to_string());
        servers.push(Kill(server));
        let mut seen = String::new();
        let mut b = [0u8; 256];
        while !seen.contains("READY") {
            let n = out.read(&mut b).unwrap();
            assert!(n > 0, "benchmark server exited: {seen}");
            seen.push_str(&String::from_utf8_lossy(&b[..n]));
        }
    }
    let servers_cpu = || {
        pids.iter()
            .map(|p| cpu_ticks_of(p))
            .fold((0, 0), |a, t| (a.0 + t.0, a.1 + t.1))
    };

    // One thread, as the daemon runs its director (src/bin/hbd.rs: a current-thread
    // runtime): the checks and the loop that receives their results share it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let checker = Arc::new(Checker::new().unwrap().with_keepalive(keepalive));
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64;
    let srv0 = servers_cpu();
    let t0 = std::time::Instant::now();
    let r = rt.block_on(bench_run(checker.clone(), reals, secs, concurrency));
    let srv1 = servers_cpu();
    let server_pct =
        ((srv1.0 + srv1.1) - (srv0.0 + srv0.1)) as f64 / ticks / t0.elapsed().as_secs_f64() * 100.0;
    // The floor, in the same run against the same server: a bare blocking connect, request,
    // response, close (RST, as the checker closes), as fast as one thread goes.
    let floor_us = floor_per_connection(reals, Duration::from_secs(secs.min(10)), ticks);
    drop(servers);
    let cpu = r.cpu_user_sys.0 + r.cpu_user_sys.1;
    let per_check = cpu * 10_000.0 / r.checks_per_s;
    println!(
        "servers: {} processes, close every connection={close}, CPU {server_pct:.1}% of one core over the run\n\
         floor: bare connect/request/close loop {floor_us:.1} us CPU per connection; \
         hbd/floor = {:.2}",
        pids.len(),
        per_check / floor_us
    );
    println!(
        "reals={reals} interval=1s secs={secs} concurrency={concurrency} keepalive={keepalive} \
         kept connections at the end={}\n\
         checks/s={:.0} per-real checks in window: min={} max={}\n\
         failed={} skipped={} max_lateness={:?} (warm-up: skipped={} max_lateness={:?})\n\
         cpu={cpu:.1}% of one core (user {:.1}%, sys {:.1}%) = {:.0} us/check  rss={} MB",
        r.kept,
        r.checks_per_s,
        r.per_real.0,
        r.per_real.1,
        r.failed,
        r.stats.skipped - r.warmup.skipped,
        r.stats.max_lateness,
        r.warmup.skipped,
        r.warmup.max_lateness,
        r.cpu_user_sys.0,
        r.cpu_user_sys.1,
        cpu * 10_000.0 / r.checks_per_s,
        r.rss_kb / 1024
    );
    // One line for scripts/bench-checks.sh's min/median/max.
    println!(
        "summary: cpu_pct={cpu:.1} us_per_check={per_check:.1} rss_mb={} floor_us={floor_us:.1} ratio={:.2} checks_per_s={:.0} servers_pct={server_pct:.1} late_ms={}",
        r.rss_kb / 1024,
        per_check / floor_us,
        r.checks_per_s,
        r.stats.max_lateness.as_millis()
    );
    drop(checker);
}

/// CPU µs of this process per bare blocking HTTP exchange on a new connection (connect,
/// write the check's request, read the answer, close with RST), over the benchmark's ports
/// in turn for `window`.
fn floor_per_connection(reals: u16, window: Duration, ticks: f64) -> f64 {
    let req = b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: floor\r\nConnection: close\r\n\r\n";
    let mut buf = [0u8; 512];
    let c0 = cpu_ticks();
    let t0 = std::time::Instant::now();
    let mut n = 0u64;
    // Bounded: at most `window`, and at most 10 million exchanges.
    while t0.elapsed() < window && n < 10_000_000 {
        let port = BENCH_BASE_PORT + u16::try_from(n % u64::from(reals)).unwrap();
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let _ = s.write_all(req);
        let _ = s.read(&mut buf);
        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        n += 1;
    }
    let c1 = cpu_ticks();
    let cpu_s = ((c1.0 + c1.1) - (c0.0 + c0.1)) as f64 / ticks;
    cpu_s * 1e6 / n.max(1) as f64
}

/// Figures of one benchmark run.
struct BenchResult {
    checks_per_s: f64,
    per_real: (usize, usize),
    failed: u64,
    stats: hbd::director::scheduler::SchedulerStats,
    /// The counters at the end of the warm-up.
    warmup: hbd::director::scheduler::SchedulerStats,
    cpu_user_sys: (f64, f64),
    rss_kb: u64,
    kept: usize,
}

async fn bench_run(probe: Arc<Checker>, reals: u16, secs: u64, concurrency: usize) -> BenchResult {
    {
        let (tx, mut rx) = tokio::sync::mpsc::channel(8192);
        let mut s = CheckScheduler::new(probe.clone(), concurrency, tx);
        let sp = spec(
            CheckKind::Http(http("/", Some("OK"))),
            Duration::from_secs(3),
        );
        for i in 0..reals {
            let addr = SocketAddr::from(([127, 0, 0, 1], BENCH_BASE_PORT + i));
            s.add(TargetId(u64::from(i)), target(addr), sp.clone());
        }
        let counts: Vec<AtomicUsize> = (0..reals).map(|_| AtomicUsize::new(0)).collect();
        let mut failed = 0u64;
        // Warm-up: the first interval spreads the jittered starts and opens every connection
        // (20,000 connects in one interval run late); the window measures the steady state
        // after it, and the warm-up's own lateness is reported apart.
        let warm_secs: u64 = std::env::var("HBD_BENCH_WARM").map_or(6, |v| v.parse().unwrap());
        let warm = Instant::now() + Duration::from_secs(warm_secs);
        while let Ok(Some(_)) = tokio::time::timeout_at(warm, rx.recv()).await {}
        let base = s.stats();
        s.reset_max_lateness();
        let t0 = Instant::now();
        let cpu0 = cpu_ticks();
        let end = t0 + Duration::from_secs(secs);
        let mut rss_max = 0;
        let mut next_rss = t0;
        // One timer for the window, not one per result: the daemon's director receives
        // results without a timer of its own per result either.
        let window = tokio::time::sleep_until(end);
        tokio::pin!(window);
        loop {
            let next = tokio::select! {
                biased;
                () = &mut window => None,
                r = rx.recv() => r,
            };
            match next {
                Some((id, r, _)) => {
                    counts[usize::try_from(id.0).unwrap()].fetch_add(1, Ordering::Relaxed);
                    if !r.ok {
                        failed += 1;
                        if failed < 5 {
                            eprintln!("failed: {r:?}");
                        }
                    }
                }
                None => break,
            }
            if Instant::now() >= next_rss {
                rss_max = rss_max.max(rss_kb());
                next_rss += Duration::from_millis(500);
            }
        }
        let cpu1 = cpu_ticks();
        let elapsed = t0.elapsed().as_secs_f64();
        let stats = s.stats();
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .unwrap()
            .unwrap() as f64;
        let pct = |a: u64, b: u64| (b - a) as f64 / ticks / elapsed * 100.0;
        let n: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        BenchResult {
            checks_per_s: (stats.checks - base.checks) as f64 / elapsed,
            per_real: (*n.iter().min().unwrap(), *n.iter().max().unwrap()),
            failed,
            stats,
            warmup: base,
            cpu_user_sys: (pct(cpu0.0, cpu1.0), pct(cpu0.1, cpu1.1)),
            rss_kb: rss_max,
            kept: probe.idle_connections(),
        }
    }
}
