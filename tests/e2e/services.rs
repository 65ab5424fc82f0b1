//! Negotiate checks of the services beyond HTTP against the real Debian servers operators
//! run: dnsmasq (dns, UDP and TCP), vsftpd (ftp), exim4 (smtp), dovecot (imap, pop),
//! slapd (ldap), MariaDB (mysql), PostgreSQL (pgsql, SCRAM-SHA-256) and FreeRADIUS (radius).
//! SIP has no Debian server light enough to start in a test (asterisk, kamailio), so it is
//! checked against a minimal SIP responder written here, over UDP and TCP; simpletcp (a
//! protocol of the operator's own) against a line server written here, and `checktype = N`
//! counts the negotiations such a server sees.
//!
//! Each server runs in its own network namespace on 127.0.0.1, started from a configuration
//! written into a temporary directory, and is stopped by PID (SIGTERM, then the namespace
//! guard's SIGKILL). The packages come from scripts/setup.sh. Each test checks a passing
//! conversation and a failing one (wrong password, wrong answer), and prints the reason
//! `hactl checks` would show.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hbd::config::director::{Credentials, NegotiatedService, Receive};
use hbd::director::checks::{
    CheckKind, CheckResult, CheckSession, CheckSpec, CheckTarget, CheckVip, Checker,
};
use hbd::director::services::{ServiceCheck, Transport};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::{NetNs, gone, poll_until, require_root};

/// How long a server may take to answer its first check (initdb and mariadb-install-db run
/// before, not inside, this).
const START_LIMIT: Duration = Duration::from_secs(30);

fn service(s: NegotiatedService) -> ServiceCheck {
    ServiceCheck {
        service: s,
        transport: Transport::Tcp,
        request: None,
        receive: None,
        credentials: Credentials::default(),
        hostname: "director.example".into(),
    }
}

fn login(c: &mut ServiceCheck, user: &str, pass: &str) {
    c.credentials.login = Some(user.into());
    c.credentials.passwd = Some(pass.into());
}

fn spec(kind: CheckKind) -> CheckSpec {
    CheckSpec {
        kind,
        timeout: Duration::from_secs(5),
        interval: Duration::from_secs(1),
        rise: 1,
        fall: 1,
    }
}

fn target(port: u16) -> CheckTarget {
    CheckTarget {
        real: SocketAddr::from(([127, 0, 0, 1], port)),
        vip: CheckVip::Addr("192.0.2.10:80".parse().unwrap()),
        check_port: None,
    }
}

/// One check of `c` against 127.0.0.1:`port` inside `ns`.
fn probe(ns: &NetNs, c: &ServiceCheck, port: u16) -> CheckResult {
    let s = spec(CheckKind::Service(c.clone()));
    ns.run(|| async move { Checker::new().unwrap().run_check(&s, &target(port)).await })
}

/// Checks until one passes (the server is up) within [`START_LIMIT`]; panics with the last
/// reason otherwise.
fn until_up(ns: &NetNs, c: &ServiceCheck, port: u16, what: &str) -> CheckResult {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let r = probe(ns, c, port);
        if r.ok {
            eprintln!("{what}: up: {}", r.reason);
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no passing check within {START_LIMIT:?}; last: {}",
            r.reason
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The check fails, with a reason containing `needle`.
fn fails(ns: &NetNs, c: &ServiceCheck, port: u16, needle: &str) {
    let r = probe(ns, c, port);
    eprintln!("down: {}", r.reason);
    assert!(!r.ok, "should fail: {}", r.reason);
    assert!(
        r.reason.contains(needle),
        "reason {:?} lacks {needle:?}",
        r.reason
    );
}

/// Starts `cmd` in `ns` (stderr to `log`) and returns its PID.
fn start(ns: &NetNs, cmd: &[&str], log: &Path) -> u32 {
    let f = std::fs::File::create(log).unwrap();
    ns.spawn(cmd, Stdio::from(f))
}

/// SIGTERM to `pid` and a bounded wait for it to end (the guard SIGKILLs what is left).
fn stop(pid: u32) {
    let pid = i32::try_from(pid).unwrap();
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    poll_until(Duration::from_secs(5), || gone(pid));
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dns_against_dnsmasq_over_udp_and_tcp() {
    require_root();
    let ns = NetNs::new("sdns");
    let dir = tempfile::tempdir().unwrap();
    let pid = start(
        &ns,
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--port=53",
            "--address=/www.example.test/192.0.2.7",
            "--ptr-record=7.2.0.192.in-addr.arpa,www.example.test",
            "--user=root",
            "--pid-file=",
        ],
        &dir.path().join("log"),
    );
    let mut c = service(NegotiatedService::Dns);
    c.request = Some("www.example.test".into());
    c.receive = Some(Receive::new("^192\\.0\\.2\\.7$").unwrap());
    until_up(&ns, &c, 53, "dnsmasq tcp");
    c.transport = Transport::Udp;
    until_up(&ns, &c, 53, "dnsmasq udp");
    c.request = Some("192.0.2.7".into());
    c.receive = Some(Receive::new("^www\\.example\\.test$").unwrap());
    until_up(&ns, &c, 53, "dnsmasq PTR");
    c.request = Some("www.example.test".into());
    c.receive = Some(Receive::new("^198\\.51\\.100\\.").unwrap());
    fails(&ns, &c, 53, "does not match receive");
    c.request = Some("nothing.example.test".into());
    fails(&ns, &c, 53, "REFUSED");
    stop(pid);
}

#[test]
fn ftp_against_vsftpd() {
    require_root();
    let ns = NetNs::new("sftp");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(root.join("health.txt"), "all is well\n").unwrap();
    // vsftpd refuses an anonymous root the anonymous user could write to.
    run(
        "chmod",
        &["755", dir.path().to_str().unwrap(), root.to_str().unwrap()],
    );
    let conf = dir.path().join("vsftpd.conf");
    std::fs::write(
        &conf,
        format!(
            "listen=YES\nlisten_ipv6=NO\nlisten_address=127.0.0.1\nbackground=NO\n\
             anonymous_enable=YES\nlocal_enable=NO\nanon_root={}\nno_anon_password=YES\n\
             secure_chroot_dir={}\npasv_enable=YES\npasv_address=127.0.0.1\n\
             seccomp_sandbox=NO\nxferlog_enable=NO\n",
            root.display(),
            empty.display()
        ),
    )
    .unwrap();
    let pid = start(
        &ns,
        &["vsftpd", conf.to_str().unwrap()],
        &dir.path().join("log"),
    );
    let mut c = service(NegotiatedService::Ftp);
    login(&mut c, "anonymous", "ldirectord@director.example");
    until_up(&ns, &c, 21, "vsftpd login");
    c.request = Some("health.txt".into());
    c.receive = Some(Receive::new("well").unwrap());
    let r = until_up(&ns, &c, 21, "vsftpd RETR");
    assert_eq!(r.reason, "RETR 12 bytes");
    c.receive = Some(Receive::new("^broken").unwrap());
    fails(&ns, &c, 21, "does not match receive");
    c.request = Some("missing.txt".into());
    fails(&ns, &c, 21, "RETR: answer \"550");
    login(&mut c, "nobody-here", "x");
    fails(&ns, &c, 21, "answer \"530");
    stop(pid);
}

#[test]
fn smtp_against_exim() {
    require_root();
    let ns = NetNs::new("smtp");
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("exim.pid");
    let pid = start(
        &ns,
        &[
            "exim4",
            "-bdf",
            "-oX",
            "25",
            "-oP",
            pidfile.to_str().unwrap(),
        ],
        &dir.path().join("log"),
    );
    let c = service(NegotiatedService::Smtp);
    let r = until_up(&ns, &c, 25, "exim4");
    assert_eq!(r.reason, "greeting 220, EHLO 250");
    fails(&ns, &c, 26, "connect refused");
    stop(pid);
}

#[test]
fn imap_and_pop_against_dovecot() {
    require_root();
    let ns = NetNs::new("sdov");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::write(dir.path().join("users"), "alice:{PLAIN}pw::::::\n").unwrap();
    // POP3 opens the mailbox at login: alice gets an empty maildir owned by Debian's `mail`
    // user (dovecot refuses uid 0 for mail access).
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(dir.path().join("mail/alice/Maildir").join(sub)).unwrap();
    }
    let mail = dir.path().join("mail");
    run("chown", &["-R", "mail:mail", mail.to_str().unwrap()]);
    run("chmod", &["755", dir.path().to_str().unwrap()]);
    let conf = dir.path().join("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            "protocols = imap pop3\nlisten = 127.0.0.1\nbase_dir = {d}/run\nstate_dir = {d}/state\n\
             ssl = no\ndisable_plaintext_auth = no\nlog_path = /dev/stderr\n\
             mail_location = maildir:~/Maildir\nfirst_valid_uid = 0\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {d}/users\n}}\n\
             userdb {{\n  driver = static\n  args = uid=mail gid=mail home={d}/mail/%u\n}}\n"
        ),
    )
    .unwrap();
    let pid = start(
        &ns,
        &["dovecot", "-F", "-c", conf.to_str().unwrap()],
        &dir.path().join("log"),
    );
    let mut imap = service(NegotiatedService::Imap);
    until_up(&ns, &imap, 143, "dovecot imap greeting");
    login(&mut imap, "alice", "pw");
    let r = until_up(&ns, &imap, 143, "dovecot imap login");
    assert_eq!(r.reason, "greeting OK, LOGIN OK");
    login(&mut imap, "alice", "wrong");
    fails(&ns, &imap, 143, "LOGIN: answer \"a1 NO");
    let mut pop = service(NegotiatedService::Pop);
    login(&mut pop, "alice", "pw");
    let r = until_up(&ns, &pop, 110, "dovecot pop login");
    assert_eq!(r.reason, "greeting +OK, login +OK");
    login(&mut pop, "alice", "wrong");
    fails(&ns, &pop, 110, "PASS: answer \"-ERR");
    stop(pid);
}

#[test]
fn ldap_against_slapd() {
    require_root();
    let ns = NetNs::new("sldp");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::create_dir(dir.path().join("db")).unwrap();
    let conf = dir.path().join("slapd.conf");
    std::fs::write(
        &conf,
        format!(
            "include /etc/ldap/schema/core.schema\npidfile {d}/pid\nmodulepath /usr/lib/ldap\n\
             moduleload back_ldif\ndatabase ldif\ndirectory {d}/db\nsuffix \"dc=example,dc=test\"\n\
             rootdn \"cn=admin,dc=example,dc=test\"\nrootpw pw\n"
        ),
    )
    .unwrap();
    let pid = start(
        &ns,
        &[
            "slapd",
            "-d",
            "0",
            "-h",
            "ldap://127.0.0.1:389/",
            "-f",
            conf.to_str().unwrap(),
        ],
        &dir.path().join("log"),
    );
    // ldirectord's default request "/" searches the root DSE (base "").
    let mut c = service(NegotiatedService::Ldap);
    c.request = Some(String::new());
    until_up(&ns, &c, 389, "slapd anonymous");
    login(&mut c, "cn=admin,dc=example,dc=test", "pw");
    until_up(&ns, &c, 389, "slapd bind");
    login(&mut c, "cn=admin,dc=example,dc=test", "wrong");
    fails(&ns, &c, 389, "bind: answer \"result 49");
    // A base that does not exist: no entry (noSuchObject).
    login(&mut c, "cn=admin,dc=example,dc=test", "pw");
    c.request = Some("dc=missing,dc=test".into());
    fails(&ns, &c, 389, "search: answer \"result 32");
    stop(pid);
}

#[test]
fn mysql_against_mariadb() {
    require_root();
    let ns = NetNs::new("smys");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    run(
        "mariadb-install-db",
        &[
            "--no-defaults",
            &format!("--datadir={}", data.display()),
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
    );
    let init = dir.path().join("init.sql");
    std::fs::write(
        &init,
        "CREATE USER IF NOT EXISTS 'hbd'@'%' IDENTIFIED BY 'pw';\n\
         GRANT SELECT ON *.* TO 'hbd'@'%';\n",
    )
    .unwrap();
    let d = dir.path().display();
    let pid = start(
        &ns,
        &[
            "mariadbd",
            "--no-defaults",
            &format!("--datadir={}", data.display()),
            &format!("--socket={d}/sock"),
            &format!("--pid-file={d}/pid"),
            "--port=3306",
            "--bind-address=127.0.0.1",
            "--user=root",
            "--skip-log-bin",
            &format!("--init-file={}", init.display()),
        ],
        &dir.path().join("log"),
    );
    let mut c = service(NegotiatedService::Mysql);
    login(&mut c, "hbd", "pw");
    c.request = Some("SELECT 1".into());
    let r = until_up(&ns, &c, 3306, "mariadb");
    assert_eq!(r.reason, "1 rows");
    c.request = Some("SELECT 1 FROM DUAL WHERE 1 = 0".into());
    fails(&ns, &c, 3306, "0 rows");
    c.request = Some("SELECT nothing FROM nowhere".into());
    fails(&ns, &c, 3306, "query: answer \"error 1046");
    login(&mut c, "hbd", "wrong");
    fails(&ns, &c, 3306, "login: answer \"error 1045");
    stop(pid);
}

#[test]
fn pgsql_against_postgresql_with_scram() {
    require_root();
    let ns = NetNs::new("spgs");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    std::fs::write(dir.path().join("pw"), "pw\n").unwrap();
    run("chown", &["-R", "postgres", &d]);
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .expect("postgresql installed (scripts/setup.sh)")
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .max()
        .unwrap();
    let initdb = bin.join("initdb");
    run(
        "runuser",
        &[
            "-u",
            "postgres",
            "--",
            initdb.to_str().unwrap(),
            "-D",
            &format!("{d}/data"),
            "-U",
            "hbd",
            "--auth=scram-sha-256",
            &format!("--pwfile={d}/pw"),
            "-N",
        ],
    );
    let postgres = bin.join("postgres");
    let pid = start(
        &ns,
        &[
            "runuser",
            "-u",
            "postgres",
            "--",
            postgres.to_str().unwrap(),
            "-D",
            &format!("{d}/data"),
            "-k",
            &d,
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
        ],
        &dir.path().join("log"),
    );
    let mut c = service(NegotiatedService::Pgsql);
    login(&mut c, "hbd", "pw");
    c.credentials.database = Some("postgres".into());
    c.request = Some("SELECT 1".into());
    let r = until_up(&ns, &c, 5432, "postgresql");
    assert_eq!(r.reason, "1 rows (scram-sha-256 login)");
    c.request = Some("SELECT 1 WHERE false".into());
    fails(&ns, &c, 5432, "0 rows");
    c.request = Some("SELECT nothing FROM nowhere".into());
    fails(&ns, &c, 5432, "query: answer \"42P01");
    login(&mut c, "hbd", "wrong");
    fails(&ns, &c, 5432, "login: answer \"28P01");
    stop(pid);
}

#[test]
fn radius_against_freeradius() {
    require_root();
    let ns = NetNs::new("srad");
    let dir = tempfile::tempdir().unwrap();
    let raddb = dir.path().join("raddb");
    run(
        "cp",
        &["-a", "/etc/freeradius/3.0", raddb.to_str().unwrap()],
    );
    let users = raddb.join("mods-config/files/authorize");
    let rest = std::fs::read_to_string(&users).unwrap();
    std::fs::write(
        &users,
        format!("alice Cleartext-Password := \"pw\"\n{rest}"),
    )
    .unwrap();
    // Debian's clients.conf has localhost with secret testing123.
    let pid = start(
        &ns,
        &[
            "freeradius",
            "-f",
            "-d",
            raddb.to_str().unwrap(),
            "-l",
            "stdout",
        ],
        &dir.path().join("log"),
    );
    let mut c = service(NegotiatedService::Radius);
    c.transport = Transport::Udp;
    login(&mut c, "alice", "pw");
    c.credentials.secret = Some("testing123".into());
    let r = until_up(&ns, &c, 1812, "freeradius");
    assert_eq!(r.reason, "Access-Accept");
    login(&mut c, "alice", "wrong");
    fails(&ns, &c, 1812, "Access-Reject");
    // A wrong secret: FreeRADIUS drops the request (bad Message-Authenticator): a timeout.
    login(&mut c, "alice", "pw");
    c.credentials.secret = Some("not-the-secret".into());
    let s = CheckSpec {
        timeout: Duration::from_millis(1500),
        ..spec(CheckKind::Service(c.clone()))
    };
    let r = ns.run(|| async move { Checker::new().unwrap().run_check(&s, &target(1812)).await });
    assert!(!r.ok, "{}", r.reason);
    eprintln!("down: {}", r.reason);
    stop(pid);
}

/// A minimal SIP responder (RFC 3261 §11.2: OPTIONS answered 200 with the request's Via,
/// From, To, Call-ID and CSeq) on UDP and TCP 5060; `status` is the answer it gives.
async fn sip_responder(status: &'static str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    fn answer(req: &str, status: &str) -> String {
        let mut out = format!("SIP/2.0 {status}\r\n");
        for l in req.lines() {
            let name = l.split(':').next().unwrap_or("");
            if ["Via", "From", "To", "Call-ID", "CSeq"].contains(&name) {
                out.push_str(l.trim_end());
                out.push_str("\r\n");
            }
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        out
    }
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:5060").await.unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:5060")
        .await
        .unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                return;
            };
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let _ = udp
                .send_to(answer(&req, "100 Trying").as_bytes(), from)
                .await;
            let _ = udp.send_to(answer(&req, status).as_bytes(), from).await;
        }
    });
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = tcp.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&buf).into_owned();
                let _ = s.write_all(answer(&req, status).as_bytes()).await;
            });
        }
    });
}

#[test]
fn sip_against_a_minimal_responder_over_udp_and_tcp() {
    require_root();
    for (status, ok) in [("200 OK", true), ("503 Service Unavailable", false)] {
        let ns = NetNs::new("ssip");
        let mut c = service(NegotiatedService::Sip);
        c.credentials.login = Some("ldirectord@director.example".into());
        for transport in [Transport::Udp, Transport::Tcp] {
            c.transport = transport;
            let s = spec(CheckKind::Service(c.clone()));
            let r = ns.run(|| async move {
                sip_responder(status).await;
                Checker::new().unwrap().run_check(&s, &target(5060)).await
            });
            eprintln!("{transport:?} {status}: {}", r.reason);
            assert_eq!(r.ok, ok, "{transport:?}: {}", r.reason);
            if !ok {
                assert!(r.reason.contains("503"), "{}", r.reason);
            }
        }
    }
}

/// `checktype = 2` over a simpletcp server that counts the requests it answers: ldirectord's
/// order is negotiate, connect, connect, negotiate, …; a failed negotiate is retried on the
/// next check, and a failed connect makes the next check negotiate.
#[test]
fn simpletcp_and_checktype_n_count_negotiations() {
    require_root();
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ns = NetNs::new("stcp");
    let negotiated = Arc::new(AtomicUsize::new(0));
    let healthy = Arc::new(AtomicBool::new(true));
    let (n2, h2) = (negotiated.clone(), healthy.clone());
    let reasons = ns.run(|| async move {
        let l = tokio::net::TcpListener::bind("127.0.0.1:7070")
            .await
            .unwrap();
        let h_srv = h2.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let (n, h) = (n2.clone(), h_srv.clone());
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    // A bare connect sends nothing and closes: not a negotiation.
                    if s.read_to_end(&mut req).await.is_err() || req.is_empty() {
                        return;
                    }
                    n.fetch_add(1, Ordering::SeqCst);
                    let answer: &[u8] = if h.load(Ordering::SeqCst) {
                        b"banner\nSTATUS OK\n"
                    } else {
                        b"STATUS BAD\n"
                    };
                    let _ = s.write_all(answer).await;
                });
            }
        });
        let mut c = service(NegotiatedService::Simpletcp);
        c.request = Some("STATUS\\n".into());
        c.receive = Some(Receive::new("^STATUS OK$").unwrap());
        let s = spec(CheckKind::Combined {
            connects: 2,
            connect: Box::new(CheckKind::Connect),
            connect_timeout: Duration::from_secs(2),
            negotiate: Box::new(CheckKind::Service(c)),
        });
        let checker = Checker::new().unwrap();
        let mut session = CheckSession::new();
        let mut reasons = Vec::new();
        for i in 0..7 {
            if i == 3 {
                h2.store(false, Ordering::SeqCst);
            }
            if i == 5 {
                h2.store(true, Ordering::SeqCst);
            }
            let r = checker.run_check_in(&s, &target(7070), &mut session).await;
            // Each check's negotiation (if any) is counted before the next check starts.
            reasons.push((r.ok, r.reason));
        }
        reasons
    });
    for r in &reasons {
        eprintln!("{r:?}");
    }
    let negotiates: Vec<bool> = reasons
        .iter()
        .map(|(_, r)| r.starts_with("negotiate:"))
        .collect();
    // 0 negotiates (ok), 1–2 connect, 3 negotiates (bad answer: down), 4 negotiates again
    // (still bad), 5 negotiates (good again), 6 connects.
    assert_eq!(negotiates, [true, false, false, true, true, true, false]);
    let oks: Vec<bool> = reasons.iter().map(|(ok, _)| *ok).collect();
    assert_eq!(oks, [true, true, true, false, false, true, true]);
    assert!(
        reasons[3].1.contains("does not match receive"),
        "{}",
        reasons[3].1
    );
    assert_eq!(negotiated.load(Ordering::SeqCst), 4);
}
