//! A TCP connection through an nftables (LVS-NAT) director survives a failover when the
//! `conntrackd` resource is in the group (issue 16, scope 2), and breaks without it.
//!
//! The lab is director.rs's: a client LAN (198.51.100.0/24, VIP .10), a real-server LAN
//! (203.0.113.0/24, floating gateway .1), two directors running hbd with the nftables
//! dataplane, three real servers running examples/labecho on :9000; plus a dedicated sync
//! link between the directors (192.0.2.1 and .2 on eth2). The client holds one connection to
//! VIP:9000 and exchanges a line every 50 ms; each answer names the real server and its
//! connection serial, so a new handshake or another real shows.
//!
//! The directors run with `nf_conntrack_tcp_loose = 0`: a director without the connection
//! in its table does not pick it up from mid-stream (the nftables DNAT would send it to a
//! real chosen anew, the same one by chance), so without the resource the connection breaks
//! every time, and the test can fail.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hbd::control::protocol::{GroupClass, Request, Response};

use crate::netns::{NetNs, attach, bridge, enter, poll_until, veth};

const VIP: &str = "198.51.100.10";
const LIMIT: Duration = Duration::from_secs(15);
/// The client's pace.
const EVERY: Duration = Duration::from_millis(50);
/// How long one exchange may wait for its answer (TCP retransmits across the failover).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// An external check that passes after 1 s: a director that has just taken over has no
/// real in its table for that long, and the synced connection must carry on through that
/// window too (its conntrack entry, committed with its DNAT, needs no rule). `CHECK` is
/// replaced by the script.
const LDIRECTORD_CF: &str = "\
checktimeout=3
checkinterval=4
quiescent=no

virtual=198.51.100.10:9000
    real=203.0.113.21:9000 masq
    real=203.0.113.22:9000 masq
    real=203.0.113.23:9000 masq
    checktype=external
    checkcommand=CHECK
    scheduler=rr
    protocol=tcp
";

/// The sync resource over UDP unicast, the same line on both directors (each sends to the
/// other).
const SYNC: &str = "conntrackd::eth2::192.0.2.1::192.0.2.2";

struct SyncLab {
    _lan_a: NetNs,
    _lan_b: NetNs,
    dirs: Vec<NetNs>,
    client: NetNs,
    _reals: Vec<NetNs>,
    work: tempfile::TempDir,
    ha: PathBuf,
    pids: Mutex<HashMap<usize, u32>>,
}

impl SyncLab {
    /// The lab; `sync` is the group's conntrackd resource, if any.
    fn new(prefix: &str, sync: Option<&str>) -> SyncLab {
        let lan_a = bridge(prefix);
        let lan_b = bridge(prefix);
        let dirs: Vec<NetNs> = (0..2).map(|_| NetNs::new(prefix)).collect();
        let client = NetNs::new(prefix);
        let reals: Vec<NetNs> = (0..3).map(|_| NetNs::new(prefix)).collect();
        veth(&dirs[0], "eth2", &dirs[1], "eth2");
        for (i, d) in dirs.iter().enumerate() {
            attach(&lan_a, d, "eth0", &format!("a{i}"));
            attach(&lan_b, d, "eth1", &format!("b{i}"));
            d.addr_up("eth0", &format!("198.51.100.{}/24", 11 + i));
            d.addr_up("eth1", &format!("203.0.113.{}/24", 2 + i));
            d.addr_up("eth2", &format!("192.0.2.{}/24", 1 + i));
            d.forward();
            let out = d.exec(&[
                "sh",
                "-c",
                "echo 0 > /proc/sys/net/netfilter/nf_conntrack_tcp_loose",
            ]);
            assert!(out.status.success(), "nf_conntrack_tcp_loose: {out:?}");
        }
        attach(&lan_a, &client, "eth0", "c0");
        client.addr_up("eth0", "198.51.100.100/24");
        let labecho = crate::control::example_bin("labecho");
        for (i, r) in reals.iter().enumerate() {
            attach(&lan_b, r, "eth0", &format!("r{i}"));
            r.addr_up("eth0", &format!("203.0.113.{}/24", 21 + i));
            r.ip(&["route", "add", "default", "via", "203.0.113.1"]);
            let name = format!("rs{}", i + 1);
            r.spawn(
                &[
                    labecho.to_str().expect("a UTF-8 target path"),
                    "--listen",
                    "0.0.0.0:9000",
                    "--name",
                    &name,
                ],
                std::process::Stdio::null(),
            );
        }
        let work = tempfile::tempdir().unwrap();
        let sync = sync.unwrap_or_default();
        let ha = crate::control::write_ha_dir(
            work.path(),
            "keepalive 20ms\ndeadtime 200ms\nwarntime 100ms\ninitdead 1\n\
             ucast eth1 203.0.113.2\nucast eth1 203.0.113.3\n\
             ucast eth0 198.51.100.11\nucast eth0 198.51.100.12\n\
             auto_failback off\nnode dir1\nnode dir2\n",
            &format!(
                "dir1 ldirectord::ldirectord.cf {sync} IPaddr::{VIP}/24/eth0 IPaddr::203.0.113.1/24/eth1\n"
            ),
            "auth 1\n1 sha256 conntrackd-test\n",
        );
        let check = work.path().join("slow-check");
        crate::netns::write_exec(&check, "#!/bin/sh\nsleep 1\nexit 0\n");
        std::fs::write(
            ha.join("ldirectord.cf"),
            LDIRECTORD_CF.replace("CHECK", check.to_str().expect("a UTF-8 path")),
        )
        .unwrap();
        SyncLab {
            _lan_a: lan_a,
            _lan_b: lan_b,
            dirs,
            client,
            _reals: reals,
            work,
            ha,
            pids: Mutex::new(HashMap::new()),
        }
    }

    fn state(&self, i: usize) -> PathBuf {
        self.work.path().join(format!("dir{}", i + 1))
    }

    fn socket(&self, i: usize) -> PathBuf {
        crate::control::socket_in(&self.state(i))
    }

    fn logs(&self) -> String {
        let table = |i: usize| {
            let out = self.dirs[i].exec(&["conntrack", "-L", "-p", "tcp", "--dport", "9000"]);
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        format!(
            "{}\ndir1 conntrack:\n{}dir2 conntrack:\n{}",
            crate::control::pair_logs([&self.state(0), &self.state(1)]),
            table(0),
            table(1)
        )
    }

    fn start(&self, i: usize) {
        let pid = crate::control::spawn_hbd(
            &self.dirs[i],
            &self.ha,
            &format!("dir{}", i + 1),
            &self.state(i),
            &["--dataplane", "nftables"],
        );
        self.pids.lock().unwrap().insert(i, pid);
    }

    /// SIGKILLs the hbd of director `i`, as a crash would (its VIPs and rules stay).
    fn kill(&self, i: usize) {
        let pid = self.pids.lock().unwrap()[&i];
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }

    fn call(&self, i: usize, request: Request) -> Option<Response> {
        crate::control::call(&self.socket(i), &request, Duration::from_secs(3))
    }

    fn wait_running(&self, i: usize, owner: &str) {
        crate::control::wait_owner(&self.socket(i), owner, LIMIT, || self.logs());
    }

    /// `hactl standby` on director `i`, which must be accepted.
    fn standby(&self, i: usize) {
        let r = self
            .call(
                i,
                Request::Standby {
                    class: GroupClass::All,
                },
            )
            .unwrap();
        assert!(r.ok, "{r:?}");
    }

    /// Waits until director `i`'s conntrackd holds the client's connection in its external
    /// cache (`who` names the moment in the failure).
    fn wait_cache_holds_the_connection(&self, i: usize, who: &str) {
        assert!(
            poll_until(LIMIT, || self.external_cache(i).contains("dport=9000")),
            "{who} never held the connection in its external cache: {:?}\n{}",
            self.external_cache(i),
            self.logs()
        );
    }

    /// What director `i`'s conntrackd holds in its external cache (`conntrackd -e`, the
    /// oracle), empty when it does not answer.
    fn external_cache(&self, i: usize) -> String {
        let conf = self.state(i).join("conntrackd/conntrackd.conf");
        let out = self.dirs[i].exec(&["conntrackd", "-C", conf.to_str().unwrap(), "-e"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// One exchange of the long-lived connection: when the line was sent, and the answer or
/// the error.
#[derive(Debug, Clone)]
struct Exchange {
    sent: Instant,
    answered: Instant,
    answer: Result<String, String>,
}

/// A client holding one connection to VIP:9000 from its namespace, exchanging a line
/// every [`EVERY`] until stopped or until the connection fails.
struct LongConnection {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Exchange>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LongConnection {
    /// Opens the connection once the service answers (new connections are tried until
    /// [`LIMIT`]), then keeps exchanging in the background.
    fn open(ns: &NetNs) -> LongConnection {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let name = ns.name().to_string();
        let thread = std::thread::spawn({
            let (stop, log) = (stop.clone(), log.clone());
            move || {
                enter(&name);
                let begin = Instant::now();
                let stream = loop {
                    match TcpStream::connect_timeout(
                        &format!("{VIP}:9000").parse().unwrap(),
                        Duration::from_millis(500),
                    ) {
                        Ok(s) => break s,
                        Err(e) if begin.elapsed() > LIMIT => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                };
                let _ = ready_tx.send(Ok(()));
                exchange_until(stream, &stop, &log);
            }
        });
        let ready = ready_rx.recv_timeout(LIMIT + Duration::from_secs(5));
        assert!(
            matches!(ready, Ok(Ok(()))),
            "the service never accepted: {ready:?}"
        );
        LongConnection {
            stop,
            log,
            thread: Some(thread),
        }
    }

    fn exchanges(&self) -> Vec<Exchange> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `n` more exchanges than now were answered (or one failed).
    fn wait_more(&self, n: usize) {
        let have = self.exchanges().len();
        poll_until(LIMIT + ANSWER_WITHIN, || {
            let log = self.exchanges();
            log.len() >= have + n || log.iter().any(|e| e.answer.is_err())
        });
    }

    fn finish(mut self) -> Vec<Exchange> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.exchanges()
    }
}

impl Drop for LongConnection {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Sends `n\n` every [`EVERY`] and reads the answer line, logging each exchange; ends at the
/// first failure, when stopped, or after 120 s.
fn exchange_until(stream: TcpStream, stop: &AtomicBool, log: &Mutex<Vec<Exchange>>) {
    stream.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut out = stream.try_clone().unwrap();
    let mut lines = BufReader::new(stream);
    let begin = Instant::now();
    for n in 0u64.. {
        if stop.load(Ordering::SeqCst) || begin.elapsed() > Duration::from_secs(120) {
            return;
        }
        let sent = Instant::now();
        let mut line = String::new();
        let answer = out
            .write_all(format!("{n}\n").as_bytes())
            .and_then(|()| lines.read_line(&mut line))
            .map_err(|e| format!("{:?}: {e}", e.kind()))
            .and_then(|read| {
                if read == 0 {
                    Err("closed by the other end".to_string())
                } else if line.trim_end().ends_with(&format!(" {n}")) {
                    Ok(line.trim_end().to_string())
                } else {
                    Err(format!("answer {line:?} to {n}"))
                }
            });
        let failed = answer.is_err();
        log.lock().unwrap().push(Exchange {
            sent,
            answered: Instant::now(),
            answer,
        });
        if failed {
            return;
        }
        std::thread::sleep(EVERY.saturating_sub(sent.elapsed()));
    }
}

/// The `NAME#SERIAL` of an answer: which real, which of its connections.
fn tag(answer: &str) -> &str {
    answer.split(' ').next().unwrap_or_default()
}

/// Checks that every exchange was answered on the first one's connection, and that some
/// were answered after `moment`; returns the longest gap between two exchanges from then.
fn assert_one_connection(
    log: &[Exchange],
    moment: Instant,
    what: &str,
    logs: impl Fn() -> String,
) -> Duration {
    let first = log
        .first()
        .and_then(|e| e.answer.as_ref().ok())
        .map(|a| tag(a).to_string())
        .expect("a first answer");
    let mut longest = Duration::ZERO;
    for (i, e) in log.iter().enumerate() {
        match &e.answer {
            Ok(a) => assert_eq!(
                tag(a),
                first,
                "{what}: exchange {i} answered on another connection: {a}"
            ),
            Err(err) => panic!(
                "{what}: exchange {i} failed (sent {:?}, failed {:?} after the failover began): {err}\n{}",
                e.sent.checked_duration_since(moment),
                e.answered.checked_duration_since(moment),
                logs()
            ),
        }
        if let Some(next) = log.get(i + 1)
            && next.sent > moment
        {
            longest = longest.max(next.sent.duration_since(e.sent));
        }
    }
    let after = log.iter().filter(|e| e.sent > moment).count();
    assert!(
        after >= 10,
        "{what}: only {after} exchanges after the failover"
    );
    longest
}

#[test]
fn a_connection_survives_standby_sigkill_and_restart_with_conntrackd() {
    let lab = SyncLab::new("ctd", Some(SYNC));
    lab.start(0);
    lab.start(1);
    lab.wait_running(0, "dir1");
    lab.wait_running(1, "dir1");
    let conn = LongConnection::open(&lab.client);
    conn.wait_more(5);

    // The standby's conntrackd holds the connection in its external cache.
    lab.wait_cache_holds_the_connection(1, "dir2");

    // Planned: dir1 goes standby, dir2 commits the connection and takes the addresses.
    lab.standby(0);
    let moment = Instant::now();
    lab.wait_running(1, "dir2");
    lab.wait_running(0, "dir2");
    conn.wait_more(20);
    let longest = assert_one_connection(&conn.exchanges(), moment, "standby", || lab.logs());
    println!("MEASURE conntrackd standby failover: longest gap between exchanges {longest:?}");

    // dir1, now the backup, learnt the connection back from dir2's bulk send.
    lab.wait_cache_holds_the_connection(0, "dir1");

    // A crash: dir2's hbd is SIGKILLed (its conntrackd dies with it), dir1 takes over.
    lab.kill(1);
    let moment = Instant::now();
    lab.wait_running(0, "dir1");
    conn.wait_more(20);
    let longest = assert_one_connection(&conn.exchanges(), moment, "SIGKILL", || lab.logs());
    println!("MEASURE conntrackd SIGKILL failover: longest gap between exchanges {longest:?}");
    let dir1 = crate::control::log_in(&lab.state(0));
    assert!(dir1.contains("conntrackd on eth2: primary"), "{dir1}");

    // dir2's hbd comes back: it releases what its killed run left, and its fresh conntrackd
    // asks dir1 for the connections (idle or not), so the group can move back to it.
    lab.start(1);
    lab.wait_running(1, "dir1");
    lab.wait_cache_holds_the_connection(1, "the restarted dir2");
    lab.standby(0);
    let moment = Instant::now();
    lab.wait_running(1, "dir2");
    conn.wait_more(20);
    let log = conn.finish();
    let longest = assert_one_connection(&log, moment, "after dir2's restart", || lab.logs());
    println!(
        "MEASURE conntrackd failover to a restarted node: longest gap between exchanges {longest:?}, {} exchanges on one connection",
        log.len()
    );
}

#[test]
fn without_conntrackd_the_connection_breaks_over_a_failover() {
    let lab = SyncLab::new("ctn", None);
    lab.start(0);
    lab.start(1);
    lab.wait_running(0, "dir1");
    lab.wait_running(1, "dir1");
    let conn = LongConnection::open(&lab.client);
    conn.wait_more(5);
    lab.standby(0);
    lab.wait_running(1, "dir2");
    conn.wait_more(20);
    let log = conn.finish();
    let failure = log.iter().find_map(|e| e.answer.as_ref().err());
    assert!(
        failure.is_some(),
        "the connection went on without conntrackd ({} exchanges): the test could not fail",
        log.len()
    );
    println!("without conntrackd: {}", failure.unwrap());
}

#[test]
fn a_connection_survives_standby_over_a_multicast_sync_link() {
    let lab = SyncLab::new("ctm", Some("conntrackd::eth2::239.255.42.1::3790"));
    lab.start(0);
    lab.start(1);
    lab.wait_running(0, "dir1");
    lab.wait_running(1, "dir1");
    let conn = LongConnection::open(&lab.client);
    conn.wait_more(5);
    lab.wait_cache_holds_the_connection(1, "dir2");
    let conf = std::fs::read_to_string(lab.state(1).join("conntrackd/conntrackd.conf")).unwrap();
    assert!(
        conf.contains("IPv4_address 239.255.42.1\n\t\tGroup 3790\n\t\tIPv4_interface 192.0.2.2\n"),
        "{conf}"
    );
    lab.standby(0);
    let moment = Instant::now();
    lab.wait_running(1, "dir2");
    conn.wait_more(20);
    let log = conn.finish();
    let longest = assert_one_connection(&log, moment, "multicast standby", || lab.logs());
    println!(
        "MEASURE conntrackd multicast standby failover: longest gap between exchanges {longest:?}"
    );
}
