//! VRRP on a real veth: hbd's raw socket and codec between two namespaces, an hbd pair
//! electing a master, and interop with Debian's keepalived 2.2.7 (installed with
//! `apt-get install keepalived`; the test fails loudly without it).

use std::fs::File;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use hbd::vrrp::packet::{Advert, Auth, Expect, MCAST_V4, MCAST_V6, VRRP_TTL, Version, encode};
use hbd::vrrp::socket::{Received, VrrpSocket};
use hbd::vrrp::state::{GarpConfig, InitialState, Instance, InstanceConfig, VrrpInput, VrrpState};
use hbd::vrrp::task::{AdvertPlan, InstanceCounters, InstanceEvent, run_instance};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use crate::netns::{NetNs, gone, pair, poll_every, poll_until, wait_until};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn advert(version: Version, priority: u8, addrs: Vec<IpAddr>, auth: Auth) -> Advert {
    let (auth_type, auth_data) = auth.wire();
    Advert {
        version,
        vrid: 60,
        priority,
        interval_cs: 100,
        addrs,
        auth_type: if version == Version::V2 { auth_type } else { 0 },
        auth_data: if version == Version::V2 {
            auth_data
        } else {
            [0; 8]
        },
    }
}

/// Adds IPv6 2001:db8::N/64 (documentation prefix, no DAD) to eth0.
fn add_v6(ns: &NetNs, n: u8) {
    let a = format!("2001:db8::{n}/64");
    ns.ip(&["-6", "addr", "add", &a, "dev", "eth0", "nodad"]);
}

#[test]
fn vrrp_adverts_cross_a_veth_multicast_unicast_v2_v3_ipv6() {
    let (a, b) = pair("vrp", "192.0.2.1/24", "192.0.2.2/24");
    add_v6(&a, 1);
    add_v6(&b, 2);
    let vip4 = vec![ip("192.0.2.100")];
    let vip6 = vec![ip("2001:db8::100")];
    let sent = [
        (
            advert(Version::V2, 150, vip4.clone(), Auth::pass("secret")),
            ip("224.0.0.18"),
        ),
        (
            advert(Version::V3, 151, vip4.clone(), Auth::None),
            ip("224.0.0.18"),
        ),
        (
            advert(Version::V3, 152, vip4.clone(), Auth::None),
            ip("192.0.2.2"),
        ),
        (
            advert(Version::V3, 153, vip6.clone(), Auth::None),
            IpAddr::V6(MCAST_V6),
        ),
    ];
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let received: Vec<Received> = std::thread::scope(|s| {
        let rx = s.spawn(|| {
            b.run(|| async move {
                let s4 = VrrpSocket::open("eth0", ip("192.0.2.2"), Some(IpAddr::V4(MCAST_V4)))
                    .expect("v4 socket");
                let s6 = VrrpSocket::open("eth0", ip("2001:db8::2"), Some(IpAddr::V6(MCAST_V6)))
                    .expect("v6 socket");
                ready_tx.send(()).unwrap();
                let mut got = Vec::new();
                for _ in 0..3 {
                    let r = timeout(Duration::from_secs(5), s4.recv()).await;
                    got.push(r.expect("v4 advert in time").unwrap().expect("IPv4 header"));
                }
                let r = timeout(Duration::from_secs(5), s6.recv()).await;
                got.push(r.expect("v6 advert in time").unwrap().unwrap());
                got
            })
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("receiver ready");
        let sent = sent.clone();
        a.run(|| async move {
            let s4 = VrrpSocket::open("eth0", ip("192.0.2.1"), Some(IpAddr::V4(MCAST_V4))).unwrap();
            let s6 = VrrpSocket::open("eth0", ip("2001:db8::1"), None).unwrap();
            for (adv, dst) in &sent {
                let sock = if dst.is_ipv6() { &s6 } else { &s4 };
                let bytes = encode(adv, sock.src(), *dst).unwrap();
                sock.send(&bytes, *dst).unwrap();
            }
        });
        rx.join().unwrap()
    });
    for (i, r) in received.iter().enumerate() {
        let (adv, dst) = &sent[i];
        assert_eq!(r.env.ttl, VRRP_TTL, "#{i}: TTL/hop limit 255 on the wire");
        assert_eq!(r.env.dst, *dst, "#{i}");
        let expect = Expect {
            version: adv.version,
            vrid: 60,
            naddr: 1,
            auth: if adv.version == Version::V2 {
                Auth::pass("secret")
            } else {
                Auth::None
            },
            interval_cs: 100,
            unicast: !dst.is_multicast(),
        };
        let got = expect.accept(&r.payload, &r.env).expect("accepted");
        assert_eq!(&got, adv, "#{i}");
    }
    assert_eq!(received[0].env.src, ip("192.0.2.1"));
    assert_eq!(received[3].env.src, ip("2001:db8::1"));
}

/// A v3 IPv4 instance of hbd on eth0 sending from `src`.
fn hbd_instance(
    name: &str,
    priority: u8,
    src: &str,
    advert_int: Duration,
) -> (Instance, AdvertPlan) {
    let cfg = InstanceConfig {
        name: name.to_string(),
        vrid: 61,
        version: Version::V3,
        priority,
        advert_int,
        initial: InitialState::Backup,
        preempt: true,
        preempt_delay: Duration::ZERO,
        local_addr: ip(src),
        garp: GarpConfig::default(),
    };
    let plan = AdvertPlan {
        destinations: vec![IpAddr::V4(MCAST_V4)],
        addrs: vec![ip("192.0.2.200")],
        auth: (0, [0; 8]),
        expect: Expect {
            version: Version::V3,
            vrid: 61,
            naddr: 1,
            auth: Auth::None,
            interval_cs: u16::try_from(advert_int.as_millis() / 10).unwrap(),
            unicast: false,
        },
    };
    (Instance::new(cfg), plan)
}

/// What one hbd instance did: its events with their time since start, and its counters.
type Run = (Vec<(Duration, InstanceEvent)>, InstanceCounters);

/// Runs an hbd instance in `ns` for `life`, then stops it with `shutdown` (priority 0) or
/// by dropping the task (a silent death).
fn run_hbd(
    ns: &NetNs,
    src: &str,
    priority: u8,
    advert_int: Duration,
    life: Duration,
    shutdown: bool,
) -> Run {
    let src = src.to_string();
    ns.run(|| async move {
        let (instance, plan) = hbd_instance("T", priority, &src, advert_int);
        let sock = VrrpSocket::open("eth0", ip(&src), Some(IpAddr::V4(MCAST_V4))).unwrap();
        let (in_tx, in_rx) = mpsc::channel(8);
        let (ev_tx, mut ev_rx) = mpsc::channel(64);
        let task = tokio::spawn(run_instance(instance, sock, plan, in_rx, ev_tx));
        let start = Instant::now();
        let mut events = Vec::new();
        let end = start + life;
        while let Ok(Some(e)) = tokio::time::timeout_at(end, ev_rx.recv()).await {
            events.push((start.elapsed(), e));
        }
        let counters = if shutdown {
            in_tx.send(VrrpInput::Shutdown).await.unwrap();
            let c = timeout(Duration::from_secs(2), task).await.expect("stops");
            c.unwrap().unwrap()
        } else {
            task.abort();
            InstanceCounters::default()
        };
        while let Ok(e) = ev_rx.try_recv() {
            events.push((start.elapsed(), e));
        }
        (events, counters)
    })
}

fn held(events: &[(Duration, InstanceEvent)]) -> Option<Duration> {
    events
        .iter()
        .find(|(_, e)| *e == InstanceEvent::HoldGroup)
        .map(|(t, _)| *t)
}

fn last_state(events: &[(Duration, InstanceEvent)]) -> Option<VrrpState> {
    events.iter().rev().find_map(|(_, e)| match e {
        InstanceEvent::Notify(s) if *s != VrrpState::Init => Some(*s),
        _ => None,
    })
}

#[test]
fn vrrp_hbd_pair_elects_the_higher_priority_and_fails_over() {
    let (a, b) = pair("vrp", "192.0.2.1/24", "192.0.2.2/24");
    let int = Duration::from_millis(100);
    let (ra, rb) = std::thread::scope(|s| {
        // a (200) dies silently after 2 s; b (100) runs 4 s.
        let ta = s.spawn(|| run_hbd(&a, "192.0.2.1", 200, int, Duration::from_secs(2), false));
        let tb = s.spawn(|| run_hbd(&b, "192.0.2.2", 100, int, Duration::from_secs(4), true));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let a_held = held(&ra.0).expect("a became master");
    // Master_Down for 200 at 100 ms: 300 ms + 56 × 100 / 256 ms ≈ 322 ms.
    assert!(a_held < Duration::from_millis(800), "a took {a_held:?}");
    let b_held = held(&rb.0).expect("b took over after a died");
    assert!(
        b_held > Duration::from_secs(2),
        "b held while a was alive: {:?}",
        rb.0
    );
    // b's Master_Down: 300 ms + 156 × 100 / 256 ms ≈ 361 ms after a's last advert.
    assert!(b_held < Duration::from_millis(2500), "b took {b_held:?}");
    assert!(rb.1.received > 5 && rb.1.dropped.total() == 0, "{:?}", rb.1);
}

/// keepalived started in `ns` with `conf`; its log goes to `log`. Returns the main PID.
fn keepalived(ns: &NetNs, dir: &Path, conf: &str) -> u32 {
    let present = Command::new("keepalived").arg("-v").output().is_ok();
    assert!(
        present,
        "this test needs keepalived 2.2.7 (apt-get install -y keepalived)"
    );
    let conf_path = dir.join("keepalived.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let log = File::create(dir.join("ka.log")).unwrap();
    let pid = ns.spawn(
        &[
            "keepalived",
            "-n",
            "-l",
            "-D",
            "--vrrp",
            "-f",
            conf_path.to_str().unwrap(),
            "-p",
            dir.join("ka.pid").to_str().unwrap(),
            "-r",
            dir.join("vrrp.pid").to_str().unwrap(),
        ],
        Stdio::from(log),
    );
    // Its VRRP child must die with the guard too. The pid file exists before keepalived has
    // written it: wait for a number.
    let child = dir.join("vrrp.pid");
    let read = || {
        std::fs::read_to_string(&child)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
    };
    wait_until(
        Duration::from_secs(5),
        "keepalived VRRP child started",
        || read().is_some(),
    );
    let child = read().unwrap();
    ns.register_pid(child);
    pid
}

/// Stops keepalived the way systemd does (SIGTERM to the main PID) and waits until it is gone.
fn stop_keepalived(pid: u32) {
    let raw = i32::try_from(pid).unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(raw),
        nix::sys::signal::Signal::SIGTERM,
    );
    wait_until(Duration::from_secs(5), "keepalived stopped", || gone(raw));
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("ka.log")).unwrap_or_default()
}

const KA_V3: &str = "global_defs {\n router_id ka\n enable_script_security\n}\nvrrp_instance T {\n state BACKUP\n interface eth0\n virtual_router_id 61\n priority 100\n advert_int 0.1\n version 3\n virtual_ipaddress {\n 192.0.2.200/24\n }\n}\n";

#[test]
fn vrrp_interop_keepalived_v3_yields_to_hbd_and_takes_over_on_priority_zero() {
    let (a, b) = pair("vrk", "192.0.2.1/24", "192.0.2.2/24");
    let dir = tempfile::tempdir().unwrap();
    let pid = keepalived(&b, dir.path(), KA_V3);
    wait_until(Duration::from_secs(5), "keepalived MASTER alone", || {
        log_of(dir.path()).contains("(T) Entering MASTER STATE")
    });
    // hbd (200) joins: it hears keepalived's adverts, preempts, and keepalived steps down.
    let (events, counters) = run_hbd(
        &a,
        "192.0.2.1",
        200,
        Duration::from_millis(100),
        Duration::from_secs(3),
        true,
    );
    let took = held(&events).expect("hbd became master");
    assert!(took < Duration::from_secs(1), "hbd took {took:?}");
    assert!(counters.received > 0, "hbd decoded keepalived's adverts");
    assert_eq!(counters.dropped.total(), 0, "{counters:?}");
    let log = log_of(dir.path());
    let backup = log
        .rfind("(T) Entering BACKUP STATE")
        .filter(|&i| i > log.find("(T) Entering MASTER STATE").unwrap());
    assert!(backup.is_some(), "keepalived did not yield to hbd:\n{log}");
    // hbd stopped with priority 0: keepalived is master again within its skew.
    assert!(
        poll_until(Duration::from_secs(2), || log_of(dir.path())
            .matches("(T) Entering MASTER STATE")
            .count()
            >= 2),
        "keepalived did not take over after hbd's priority 0:\n{}",
        log_of(dir.path())
    );
    assert!(log_of(dir.path()).contains("Backup received priority 0 advertisement"));
    stop_keepalived(pid);
}

const KA_V2: &str = "global_defs {\n router_id ka\n enable_script_security\n}\nvrrp_instance T {\n state BACKUP\n interface eth0\n virtual_router_id 61\n priority 200\n advert_int 1\n authentication {\n auth_type PASS\n auth_pass wire1234\n }\n virtual_ipaddress {\n 192.0.2.200/24\n }\n}\n";

#[test]
fn vrrp_interop_keepalived_v2_pass_is_master_over_a_lower_hbd() {
    let (a, b) = pair("vrk", "192.0.2.1/24", "192.0.2.2/24");
    let dir = tempfile::tempdir().unwrap();
    let pid = keepalived(&b, dir.path(), KA_V2);
    let events = a.run(|| async move {
        let mut cfg = hbd_instance("T", 100, "192.0.2.1", Duration::from_secs(1));
        cfg.0 = Instance::new(InstanceConfig {
            version: Version::V2,
            ..cfg.0.config().clone()
        });
        let plan = AdvertPlan {
            auth: Auth::pass("wire1234").wire(),
            expect: Expect {
                version: Version::V2,
                auth: Auth::pass("wire1234"),
                interval_cs: 100,
                ..cfg.1.expect.clone()
            },
            ..cfg.1
        };
        let sock = VrrpSocket::open("eth0", ip("192.0.2.1"), Some(IpAddr::V4(MCAST_V4))).unwrap();
        let (in_tx, in_rx) = mpsc::channel(8);
        let (ev_tx, mut ev_rx) = mpsc::channel(64);
        let task = tokio::spawn(run_instance(cfg.0, sock, plan, in_rx, ev_tx));
        let start = Instant::now();
        let mut events = Vec::new();
        while let Ok(Some(e)) =
            tokio::time::timeout_at(start + Duration::from_secs(6), ev_rx.recv()).await
        {
            events.push((start.elapsed(), e));
        }
        in_tx.send(VrrpInput::Shutdown).await.unwrap();
        let counters = timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        (events, counters)
    });
    let (events, counters) = events;
    assert!(counters.received >= 2, "{counters:?}");
    assert_eq!(counters.dropped.total(), 0, "{counters:?}");
    // hbd may become master before keepalived's first advert (both start as backup, hbd's
    // Master_Down is longer); whatever happened first, hbd ends as backup.
    assert_eq!(last_state(&events), Some(VrrpState::Backup), "{events:?}");
    let log = log_of(dir.path());
    assert!(log.contains("(T) Entering MASTER STATE"), "{log}");
    assert!(
        !log.contains("authentication"),
        "keepalived accepted hbd's PASS adverts:\n{log}"
    );
    stop_keepalived(pid);
}

/// Who runs one side of a failover measurement.
#[derive(Clone, Copy, Debug)]
enum Side {
    Hbd,
    Keepalived,
}

fn ka_conf(priority: u8, advert_int: &str) -> String {
    format!(
        "global_defs {{\n router_id ka\n enable_script_security\n}}\nvrrp_instance T {{\n state BACKUP\n interface eth0\n virtual_router_id 61\n priority {priority}\n advert_int {advert_int}\n version 3\n virtual_ipaddress {{\n 192.0.2.200/24\n }}\n}}\n"
    )
}

/// One failover on a bridged LAN: `master` (priority 200) on host 0, `backup` (100) on host 1,
/// an observer on host 2 timestamping every advert. Host 0's link goes down after 3 s.
/// Returns the gap between the master's last advert and the backup's first one after it.
fn failover_once(master: Side, backup: Side, int_ms: u64) -> Duration {
    let lan = crate::netns::Lan::new("vfo", 3);
    for (i, h) in lan.hosts.iter().enumerate() {
        h.ip(&[
            "addr",
            "add",
            &format!("192.0.2.{}/24", i + 1),
            "dev",
            "eth0",
        ]);
    }
    let int = Duration::from_millis(int_ms);
    let int_s = format!("{}", int.as_secs_f64());
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let adverts = std::thread::scope(|s| {
        let observer = &lan.hosts[2];
        let obs = s.spawn(move || {
            observer.run(|| async move {
                let sock =
                    VrrpSocket::open("eth0", ip("192.0.2.3"), Some(IpAddr::V4(MCAST_V4))).unwrap();
                ready_tx.send(()).unwrap();
                let mut seen = Vec::new();
                let end = Instant::now() + Duration::from_secs(6);
                while let Ok(Ok(Ok(r))) = tokio::time::timeout_at(end, sock.recv()).await {
                    seen.push((
                        std::time::Instant::now(),
                        r.env.src,
                        r.payload.get(2).copied(),
                    ));
                }
                seen
            })
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let mut ka_pids = Vec::new();
        let mut hbd_threads = Vec::new();
        for (host, side, prio) in [(1usize, backup, 100u8), (0, master, 200)] {
            let ns = &lan.hosts[host];
            match side {
                Side::Keepalived => {
                    ka_pids.push(keepalived(ns, dirs[host].path(), &ka_conf(prio, &int_s)))
                }
                Side::Hbd => {
                    let src = format!("192.0.2.{}", host + 1);
                    hbd_threads.push(
                        s.spawn(move || run_hbd(ns, &src, prio, int, Duration::from_secs(5), true)),
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_secs(3));
        lan.hosts[0].ip(&["link", "set", "eth0", "down"]);
        // The observer records until 6 s; the backups keep running until then.
        std::thread::sleep(Duration::from_secs(2));
        for t in hbd_threads {
            t.join().unwrap();
        }
        for pid in ka_pids {
            stop_keepalived(pid);
        }
        obs.join().unwrap()
    });
    let master_addr = ip("192.0.2.1");
    let last_master = adverts
        .iter()
        .filter(|a| a.1 == master_addr && a.2 != Some(0))
        .map(|a| a.0)
        .max()
        .expect("adverts from the master");
    let first_backup = adverts
        .iter()
        .filter(|a| a.1 == ip("192.0.2.2") && a.0 > last_master)
        .map(|a| a.0)
        .min()
        .unwrap_or_else(|| {
            let logs: Vec<String> = dirs.iter().map(|d| log_of(d.path())).collect();
            panic!(
                "the backup did not take over; keepalived logs:\n{}",
                logs.join("\n----\n")
            )
        });
    first_backup - last_master
}

/// Failover figures for docs: hbd and keepalived pairs at the same advert_int, one probe.
/// `cargo test --test e2e vrrp_failover_figures -- --ignored --nocapture`
#[test]
#[ignore = "measurement: run by hand for the figures"]
fn vrrp_failover_figures() {
    let pairs = [
        (Side::Hbd, Side::Hbd),
        (Side::Keepalived, Side::Hbd),
        (Side::Hbd, Side::Keepalived),
        (Side::Keepalived, Side::Keepalived),
    ];
    let only = std::env::var("VRRP_PAIR")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    for (i, &(m, b)) in pairs.iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        let gaps: Vec<Duration> = (0..3).map(|_| failover_once(m, b, 50)).collect();
        eprintln!("advert_int 0.05 v3, master {m:?} -> backup {b:?}: gaps {gaps:?}");
    }
}

// ---- hbd as a daemon: `hbd --keepalived-conf`, its groups, hactl, and keepalived as peer ----

/// An `hbd --keepalived-conf` running in a namespace, with its socket and log.
struct HbdDaemon {
    pid: u32,
    dir: tempfile::TempDir,
}

impl HbdDaemon {
    /// Starts hbd in `ns` with this keepalived.conf text.
    fn start(ns: &NetNs, name: &str, conf: &str) -> HbdDaemon {
        HbdDaemon::start_in(ns, name, conf, tempfile::tempdir().unwrap(), &[])
    }

    /// Starts hbd in `ns` with this keepalived.conf text written to `dir`, and `extra`
    /// arguments; returns once its control socket exists.
    fn start_in(
        ns: &NetNs,
        name: &str,
        conf: &str,
        dir: tempfile::TempDir,
        extra: &[&str],
    ) -> HbdDaemon {
        HbdDaemon::start_file(
            ns,
            name,
            ("--keepalived-conf", "keepalived.conf", conf),
            dir,
            extra,
        )
    }

    /// Starts hbd in `ns` with an hbd YAML (`vrrp:` section) as its `--config`.
    fn start_yaml(ns: &NetNs, name: &str, yaml: &str) -> HbdDaemon {
        let dir = tempfile::tempdir().unwrap();
        HbdDaemon::start_file(ns, name, ("--config", "hbd.yaml", yaml), dir, &[])
    }

    /// Starts hbd in `ns` with `text` written to `dir/FILE` and given as `FLAG FILE`.
    fn start_file(
        ns: &NetNs,
        name: &str,
        (flag, file, text): (&str, &str, &str),
        dir: tempfile::TempDir,
        extra: &[&str],
    ) -> HbdDaemon {
        let conf_path = dir.path().join(file);
        std::fs::write(&conf_path, text).unwrap();
        let log = File::create(dir.path().join("hbd.log")).unwrap();
        let socket = dir.path().join("hbd.sock");
        let state = dir.path().join("state");
        let mut args = vec![
            env!("CARGO_BIN_EXE_hbd"),
            flag,
            conf_path.to_str().unwrap(),
            "--node-name",
            name,
            "--socket",
            socket.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let pid = ns.spawn(&args, Stdio::from(log));
        wait_until(Duration::from_secs(10), "hbd control socket", || {
            socket.exists()
        });
        HbdDaemon { pid, dir }
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("hbd.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hbd.log")).unwrap_or_default()
    }

    /// `hactl status --json`, parsed.
    fn status(&self) -> serde_json::Value {
        let out = crate::control::hactl(&self.socket(), &["status", "--json"]);
        assert!(
            out.status.success(),
            "hactl status: {out:?}\n{}",
            self.log()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The state of instance `i` as `hactl status` shows it.
    fn state(&self, i: usize) -> String {
        self.status()["vrrp"][i]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let raw = i32::try_from(self.pid).unwrap();
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), sig);
    }

    /// SIGTERM and wait until it has stopped (its groups released).
    fn stop(&self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let raw = i32::try_from(self.pid).unwrap();
        wait_until(Duration::from_secs(10), "hbd stopped", || gone(raw));
    }
}

/// Whether `ns` holds `vip` on eth0.
fn holds(ns: &NetNs, vip: &str) -> bool {
    ns.ip(&["-4", "addr", "show", "dev", "eth0"])
        .contains(&format!("inet {vip}/"))
}

/// A keepalived.conf for one v3 instance of vrid 62 on eth0 with VIP 192.0.2.200/24.
fn conf62(priority: u8, advert_int: &str, extra: &str, top: &str) -> String {
    format!(
        "global_defs {{\n router_id t\n enable_script_security\n}}\n{top}\nvrrp_instance V {{\n state BACKUP\n interface eth0\n virtual_router_id 62\n priority {priority}\n advert_int {advert_int}\n version 3\n{extra}\n virtual_ipaddress {{\n 192.0.2.200/24\n }}\n}}\n"
    )
}

const VIP: &str = "192.0.2.200";

#[test]
fn vrrp_daemon_holds_the_vip_as_master_and_a_script_failure_moves_it_to_keepalived() {
    let (a, b) = pair("vrd", "192.0.2.1/24", "192.0.2.2/24");
    let flag_dir = tempfile::tempdir().unwrap();
    let flag = flag_dir.path().join("ok");
    std::fs::write(&flag, "").unwrap();
    let chk = format!(
        "vrrp_script chk {{\n script \"/usr/bin/test -e {}\"\n interval 0.2\n timeout 1\n fall 1\n rise 1\n}}",
        flag.display()
    );
    let hbd = HbdDaemon::start(
        &a,
        "a",
        &conf62(200, "0.1", " track_script {\n chk\n }", &chk),
    );
    let kdir = tempfile::tempdir().unwrap();
    let ka = keepalived(&b, kdir.path(), &conf62(100, "0.1", "", ""));
    wait_until(Duration::from_secs(5), "hbd MASTER holding the VIP", || {
        holds(&a, VIP)
    });
    assert_eq!(hbd.state(0), "MASTER", "{}", hbd.log());
    let st = hbd.status();
    assert_eq!(st["vrrp"][0]["effective_priority"], 200);
    assert_eq!(st["vrrp"][0]["master"], "192.0.2.1");
    assert_eq!(st["groups"][0]["state"], "running", "{st}");
    // keepalived hears hbd and stays backup without the VIP.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!holds(&b, VIP), "{}", log_of(kdir.path()));
    assert!(!log_of(kdir.path()).contains("(V) Entering MASTER STATE"));

    // The script fails: hbd goes FAULT, sends priority 0, releases; keepalived takes over.
    std::fs::remove_file(&flag).unwrap();
    wait_until(
        Duration::from_secs(3),
        "keepalived MASTER after the script failed",
        || holds(&b, VIP),
    );
    wait_until(Duration::from_secs(3), "hbd released the VIP", || {
        !holds(&a, VIP)
    });
    assert_eq!(hbd.state(0), "FAULT");
    let st = hbd.status();
    assert_eq!(
        st["vrrp"][0]["down"][0], "script chk down (weight 0)",
        "{st}"
    );
    // The script passes again: hbd (200) preempts keepalived (100).
    std::fs::write(&flag, "").unwrap();
    wait_until(Duration::from_secs(3), "hbd master again", || {
        holds(&a, VIP)
    });
    wait_until(Duration::from_secs(3), "keepalived released", || {
        !holds(&b, VIP)
    });
    hbd.stop();
    assert!(!holds(&a, VIP), "hbd released its group on SIGTERM");
    stop_keepalived(ka);
}

#[test]
fn vrrp_daemon_killed_master_keepalived_takes_over_within_master_down() {
    let (a, b) = pair("vrd", "192.0.2.1/24", "192.0.2.2/24");
    let hbd = HbdDaemon::start(&a, "a", &conf62(200, "0.1", "", ""));
    let kdir = tempfile::tempdir().unwrap();
    let ka = keepalived(&b, kdir.path(), &conf62(100, "0.1", "", ""));
    wait_until(Duration::from_secs(5), "hbd MASTER", || holds(&a, VIP));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!holds(&b, VIP));
    let killed = std::time::Instant::now();
    hbd.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(
        poll_every(Duration::from_millis(5), Duration::from_secs(3), || holds(
            &b, VIP
        )),
        "keepalived did not take over:\n{}",
        log_of(kdir.path())
    );
    let took = killed.elapsed();
    // keepalived (100) at 100 ms: 3 × 100 ms + 156/256 × 100 ms ≈ 361 ms after hbd's last
    // advert; allow the `ip` polls and a loaded machine 250 ms.
    assert!(took < Duration::from_millis(361 + 250), "took {took:?}");
    eprintln!("kill -9 hbd master -> keepalived holds the VIP after {took:?}");
    stop_keepalived(ka);
}

#[test]
fn vrrp_daemon_nopreempt_and_preempt_delay_as_keepalived() {
    let (a, b) = pair("vrd", "192.0.2.1/24", "192.0.2.2/24");
    // keepalived (100) is master alone.
    let kdir = tempfile::tempdir().unwrap();
    let ka = keepalived(&b, kdir.path(), &conf62(100, "0.1", "", ""));
    wait_until(Duration::from_secs(5), "keepalived MASTER", || {
        holds(&b, VIP)
    });
    // hbd 200 with nopreempt: stays backup, and says why.
    let hbd = HbdDaemon::start(&a, "a", &conf62(200, "0.1", " nopreempt", ""));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(hbd.state(0), "BACKUP", "{}", hbd.log());
    assert!(!holds(&a, VIP));
    let st = hbd.status();
    let why = st["vrrp"][0]["preempt"].as_str().unwrap().to_string();
    assert!(why.contains("nopreempt"), "{why}");
    assert_eq!(st["vrrp"][0]["master"], "192.0.2.2");
    // `hactl takeover` overrides: priority 254, preempts.
    let out = crate::control::hactl(&hbd.socket(), &["takeover"]);
    assert!(out.status.success(), "{out:?}");
    wait_until(Duration::from_secs(3), "hbd master after takeover", || {
        holds(&a, VIP)
    });
    assert_eq!(hbd.status()["vrrp"][0]["effective_priority"], 254);
    // `hactl standby`: hands back with priority 0, keepalived master again.
    let out = crate::control::hactl(&hbd.socket(), &["standby"]);
    assert!(out.status.success(), "{out:?}");
    wait_until(
        Duration::from_secs(3),
        "keepalived master after standby",
        || holds(&b, VIP) && !holds(&a, VIP),
    );
    assert_eq!(hbd.status()["vrrp"][0]["effective_priority"], 1);
    let out = crate::control::hactl(&hbd.socket(), &["auto"]);
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_millis(800));
    assert!(holds(&b, VIP), "nopreempt again after auto");
    hbd.stop();

    // hbd 200 with preempt_delay 1: backup for about a second, then master.
    let hbd = HbdDaemon::start(&a, "a", &conf62(200, "0.1", " preempt_delay 1", ""));
    let started = std::time::Instant::now();
    let why = || {
        hbd.status()["vrrp"][0]["preempt"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // Backup, hearing keepalived and waiting out the delay (and saying so).
    wait_until(
        Duration::from_millis(900),
        "hbd waiting out preempt_delay",
        || why().contains("preempt_delay"),
    );
    assert!(!holds(&a, VIP));
    wait_until(Duration::from_secs(4), "hbd master after the delay", || {
        holds(&a, VIP)
    });
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1000),
        "preempted after {took:?}"
    );
    wait_until(Duration::from_secs(3), "keepalived released", || {
        !holds(&b, VIP)
    });
    hbd.stop();
    stop_keepalived(ka);
}

#[test]
fn vrrp_daemon_check_config_reads_the_seeds() {
    for rel in [
        "001/node1.conf",
        "002/master.conf",
        "003/sync/keepalived.conf",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/keepalived")
            .join(rel);
        let out = Command::new(env!("CARGO_BIN_EXE_hbd"))
            .args([
                "--keepalived-conf",
                path.to_str().unwrap(),
                "--check-config",
            ])
            .args(["--node-name", "n1"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{rel}: {out:?}");
        assert!(text.contains("configuration OK"), "{rel}: {text}");
    }
}

/// Drops VRRP (IP protocol 112) arriving in `ns`, as seed 002's firewall did.
fn drop_vrrp(ns: &NetNs) {
    for cmd in [
        "add table inet seed002",
        "add chain inet seed002 input { type filter hook input priority 0 ; }",
        "add rule inet seed002 input meta l4proto 112 drop",
    ] {
        let mut argv = vec!["nft"];
        argv.extend(cmd.split(' '));
        let out = ns.exec(&argv);
        assert!(out.status.success(), "nft {cmd}: {out:?}");
    }
}

/// hbd's heartbeat YAML for node `me` of the pair a/b, one ucast medium to `peer`.
fn heartbeat_yaml(dir: &Path, peer: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("hb.yaml");
    std::fs::write(
        &path,
        format!(
            "nodes: [a, b]\n\
             timing: {{ keepalive: 100ms, deadtime: 600ms, initdead: 2s }}\n\
             media:\n  - ucast: {{ interface: eth0, peer: {peer} }}\n\
             auth: {{ keys: [ {{ id: 1, method: sha256, key: beside-vrrp }} ] }}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

impl HbdDaemon {
    /// Starts hbd with a keepalived.conf and a heartbeat YAML beside it.
    fn start_with_heartbeat(ns: &NetNs, name: &str, conf: &str, peer: &str) -> HbdDaemon {
        let dir = tempfile::tempdir().unwrap();
        let yaml = heartbeat_yaml(dir.path(), peer);
        let extra = ["--config", yaml.to_str().unwrap(), "--no-realtime"];
        HbdDaemon::start_in(ns, name, conf, dir, &extra)
    }
}

#[test]
fn vrrp_seed_002_dropped_adverts_keepalived_dual_master_hbd_with_heartbeat_single_master() {
    // keepalived pair: VRRP dropped both ways, both become master (seed 002's experiment).
    {
        let (a, b) = pair("vrs", "192.0.2.1/24", "192.0.2.2/24");
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ka = keepalived(&a, da.path(), &conf62(200, "0.1", "", ""));
        let kb = keepalived(&b, db.path(), &conf62(100, "0.1", "", ""));
        wait_until(Duration::from_secs(5), "keepalived a MASTER", || {
            holds(&a, VIP)
        });
        std::thread::sleep(Duration::from_millis(500));
        assert!(!holds(&b, VIP), "{}", log_of(db.path()));
        drop_vrrp(&a);
        drop_vrrp(&b);
        wait_until(Duration::from_secs(3), "keepalived b MASTER too", || {
            holds(&b, VIP)
        });
        assert!(holds(&a, VIP), "both masters: the split seed 002 shows");
        eprintln!("keepalived pair with VRRP dropped: both hold {VIP}");
        stop_keepalived(ka);
        stop_keepalived(kb);
    }
    // hbd pair with a heartbeat medium beside VRRP: one master.
    let (a, b) = pair("vrs", "192.0.2.1/24", "192.0.2.2/24");
    let ha = HbdDaemon::start_with_heartbeat(&a, "a", &conf62(200, "0.1", "", ""), "192.0.2.2");
    let hb = HbdDaemon::start_with_heartbeat(&b, "b", &conf62(100, "0.1", "", ""), "192.0.2.1");
    wait_until(Duration::from_secs(5), "hbd a MASTER", || holds(&a, VIP));
    wait_until(Duration::from_secs(5), "hbd b BACKUP", || {
        hb.state(0) == "BACKUP"
    });
    // Both hear each other on the heartbeat medium before the cut.
    let hb_sock = |d: &HbdDaemon| {
        let mut s = d.socket().into_os_string();
        s.push(".heartbeat");
        std::path::PathBuf::from(s)
    };
    wait_until(Duration::from_secs(5), "heartbeat peers up", || {
        let out = crate::control::hactl(&hb_sock(&hb), &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["name"] == "a" && n["status"] == "up"))
    });
    drop_vrrp(&a);
    drop_vrrp(&b);
    std::thread::sleep(Duration::from_secs(2));
    assert!(holds(&a, VIP), "{}", ha.log());
    assert!(!holds(&b, VIP), "hbd b took the VIP:\n{}", hb.log());
    let st = hb.status();
    assert_eq!(st["vrrp"][0]["state"], "BACKUP");
    let why = st["vrrp"][0]["preempt"].as_str().unwrap_or_default();
    assert!(why.contains("heartbeat"), "{why}");
    // a dies: silent on both paths, b takes over after the heartbeat deadtime.
    ha.signal(nix::sys::signal::Signal::SIGKILL);
    wait_until(Duration::from_secs(3), "hbd b MASTER after a died", || {
        holds(&b, VIP)
    });
    hb.stop();
}

// ---- VRRP chosen in hbd's YAML, `hactl convert --keepalived-conf`, tracked links ----

/// hbd YAML for one v3 instance of vrid 63 on eth0 with VIP 192.0.2.200/24 at 100 ms adverts,
/// `extra` lines added to the instance.
fn yaml63(priority: u8, extra: &str) -> String {
    format!(
        "vrrp:\n  instances:\n    - name: V\n      interface: eth0\n      virtual_router_id: 63\n      priority: {priority}\n      advert_int: 100ms\n      version: 3\n      virtual_ipaddress: [192.0.2.200/24]\n{extra}"
    )
}

#[test]
fn vrrp_yaml_pair_elects_the_higher_priority_and_fails_over() {
    let (a, b) = pair("vry", "192.0.2.1/24", "192.0.2.2/24");
    // The lower priority starts first and becomes master alone; the higher one preempts.
    let hb = HbdDaemon::start_yaml(&b, "b", &yaml63(100, ""));
    wait_until(Duration::from_secs(5), "b MASTER alone", || holds(&b, VIP));
    let ha = HbdDaemon::start_yaml(&a, "a", &yaml63(200, ""));
    wait_until(Duration::from_secs(5), "a (200) MASTER", || holds(&a, VIP));
    wait_until(Duration::from_secs(3), "b released", || !holds(&b, VIP));
    assert_eq!(ha.state(0), "MASTER", "{}", ha.log());
    assert_eq!(hb.state(0), "BACKUP", "{}", hb.log());
    let st = hb.status();
    assert_eq!(st["vrrp"][0]["master"], "192.0.2.1", "{st}");
    assert_eq!(st["vrrp"][0]["base_priority"], 100, "{st}");
    // a dies: b holds the VIP within Master_Down (3 × 100 ms + 156/256 × 100 ms ≈ 361 ms).
    let killed = std::time::Instant::now();
    ha.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(
        poll_every(Duration::from_millis(5), Duration::from_secs(3), || holds(
            &b, VIP
        )),
        "b did not take over:\n{}",
        hb.log()
    );
    let took = killed.elapsed();
    assert!(took < Duration::from_millis(361 + 250), "took {took:?}");
    eprintln!("YAML pair: kill -9 master -> backup holds the VIP after {took:?}");
    hb.stop();
    assert!(!holds(&b, VIP), "released on SIGTERM");
}

#[test]
fn vrrp_convert_keepalived_conf_writes_yaml_that_hbd_runs() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keepalived/003/ka01/keepalived.conf");
    let out = Command::new(env!("CARGO_BIN_EXE_hactl"))
        .args(["convert", "--keepalived-conf", conf.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let yaml = String::from_utf8_lossy(&out.stdout);
    let warnings = String::from_utf8_lossy(&out.stderr);
    for want in [
        "vrrp:",
        "virtual_router_id: 51",
        "unicast_peer:",
        "director:",
        "virtual: 192.0.2.100:80",
    ] {
        assert!(yaml.contains(want), "missing {want}:\n{yaml}");
    }
    // What does not carry over is named with its file and line.
    assert!(
        warnings.contains("conf.d/www.ming.org.conf:26: warning: accept has no effect"),
        "{warnings}"
    );
    assert!(
        warnings.contains("conf.d/www.ming.org.conf:47: warning: delay_before_retry"),
        "{warnings}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hbd.yaml");
    std::fs::write(&file, yaml.as_bytes()).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_hbd"))
        .args(["--config", file.to_str().unwrap(), "--check-config"])
        .args(["--node-name", "n1", "--dataplane", "ipvs"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{check:?}");
    assert!(
        text.contains("configuration OK for node n1: 1 vrrp_instance(s), 0 sync group(s), 1 resource group(s), 1 virtual server(s)"),
        "{text}"
    );
    // Neither source nor broken: a missing file is refused with exit 1.
    let out = Command::new(env!("CARGO_BIN_EXE_hactl"))
        .args([
            "convert",
            "--keepalived-conf",
            "/nonexistent/keepalived.conf",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/keepalived.conf"));
}

#[test]
fn vrrp_tracked_link_down_is_fault_at_once() {
    let (a, _b) = pair("vrl", "192.0.2.1/24", "192.0.2.2/24");
    a.ip(&[
        "link", "add", "trk0", "type", "veth", "peer", "name", "trk1",
    ]);
    a.ip(&["link", "set", "trk1", "up"]);
    a.ip(&["link", "set", "trk0", "up"]);
    let hbd = HbdDaemon::start_yaml(&a, "a", &yaml63(200, "      track_interface: [trk0]\n"));
    wait_until(Duration::from_secs(5), "MASTER alone", || holds(&a, VIP));
    assert_eq!(hbd.state(0), "MASTER", "{}", hbd.log());
    // Let the start settle, so the figure is the announcement's, not a busy start's.
    std::thread::sleep(Duration::from_millis(300));
    // The state as the control socket answers it, asked in-process (what `hactl status`
    // asks; a process start per query would dominate the figure on a loaded machine).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket = hbd.socket();
    let state = || {
        rt.block_on(hbd::control::client::call(
            &socket,
            &hbd::control::protocol::Request::Status,
            Duration::from_secs(1),
        ))
        .ok()
        .and_then(|r| r.vrrp)
        .and_then(|v| v.first().map(|i| i.state.clone()))
        .unwrap_or_default()
    };
    let mut figures = Vec::new();
    for round in 0..5 {
        let t0 = std::time::Instant::now();
        a.ip(&["link", "set", "trk0", "down"]);
        let mut fault = None;
        // Bounded: at most 2 s of status queries.
        while t0.elapsed() < Duration::from_secs(2) {
            if state() == "FAULT" {
                fault = Some(t0.elapsed());
                break;
            }
        }
        let took = fault.unwrap_or_else(|| panic!("no FAULT within 2 s:\n{}", hbd.log()));
        eprintln!("round {round}: tracked link down -> FAULT in the status after {took:?}");
        figures.push(took);
        let st = hbd.status();
        assert_eq!(st["vrrp"][0]["state"], "FAULT", "{st}");
        assert_eq!(
            st["vrrp"][0]["down"][0], "interface trk0 down (weight 0)",
            "{st}"
        );
        a.ip(&["link", "set", "trk0", "up"]);
        wait_until(Duration::from_secs(3), "MASTER again", || {
            state() == "MASTER"
        });
    }
    // The old poll read the link every 200 ms (100 ms late on average, 200 at worst); the
    // announcement arrives at once. The figure includes the `ip` command's own start.
    figures.sort();
    let median = figures[figures.len() / 2];
    eprintln!("tracked link down -> FAULT: median {median:?}, all {figures:?}");
    assert!(median < Duration::from_millis(100), "{figures:?}");
    assert!(
        figures[figures.len() - 1] < Duration::from_millis(200),
        "{figures:?}"
    );
    hbd.stop();
}
