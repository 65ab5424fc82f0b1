//! Dataplane end to end: the nftables backend load-balancing real TCP traffic between
//! network namespaces (client — director — three real servers), and the IPVS backend's
//! "no IPVS in this kernel" error.
//!
//! Topology (all addresses from the documentation ranges):
//! client 203.0.113.2 ── 203.0.113.1 director (VIP 192.0.2.10 on lo, ip_forward)
//! director 198.51.100.{16i+1}/28 ── real i 198.51.100.{16i+2}, default route via director.
//! Each real runs an in-test responder (a thread moved into its namespace with setns) that
//! answers every request line with its own name, so the client sees who served it.
//! Uses `ip` to build namespaces and `nft` (package nftables) as an oracle only.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hbd::dataplane::{
    Dataplane, DataplaneError, Forwarding, RealServer, Scheduler, ServiceKey, VirtualService,
    ipvs::Ipvs, nft::Nft,
};

use crate::netns::{NetNs, enter, veth};

#[path = "../../examples/lab/ten_thousand_reals.rs"]
mod ten_thousand_reals;

const VIP: &str = "192.0.2.10:80";

/// `nft COMMAND` inside namespace `ns` (the oracle); its stdout. Panics when nft fails.
fn nft(ns: &NetNs, command: &str) -> String {
    let out = ns.exec(&["nft", command]);
    assert!(
        out.status.success(),
        "`nft {command}` in {} failed ({}): {}",
        ns.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The topology's namespaces (each a [`NetNs`] guard) and the responders running in them.
/// Drop stops the responders; the guards then delete the namespaces (reals first, then the
/// director and the client), even when a test panics.
struct Lab {
    reals: Vec<NetNs>,
    director: NetNs,
    client: NetNs,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Lab {
    /// client — director — three reals, forwarding on, a responder in each real.
    fn topology() -> Lab {
        let client = NetNs::new("dpc");
        let director = NetNs::new("dpd");
        veth(&director, "c0", &client, "eth0");
        director.addr_up("c0", "203.0.113.1/24");
        director.ip(&["addr", "add", "192.0.2.10/32", "dev", "lo"]);
        client.addr_up("eth0", "203.0.113.2/24");
        client.ip(&["route", "add", "192.0.2.0/24", "via", "203.0.113.1"]);
        director.forward();
        let mut lab = Lab {
            reals: Vec::new(),
            director,
            client,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for i in 1..=3u8 {
            let r = NetNs::new(&format!("dpr{i}"));
            let dev = format!("r{i}");
            let base = 16 * i;
            veth(&lab.director, &dev, &r, "eth0");
            lab.director
                .addr_up(&dev, &format!("198.51.100.{}/28", base + 1));
            r.addr_up("eth0", &format!("198.51.100.{}/28", base + 2));
            let gateway = format!("198.51.100.{}", base + 1);
            r.ip(&["route", "add", "default", "via", &gateway]);
            lab.responder(&r, &format!("r{i}"));
            lab.reals.push(r);
        }
        lab
    }

    /// A line responder on 0.0.0.0:80 inside `ns`, answering each line with `name`.
    fn responder(&mut self, ns: &NetNs, name: &str) {
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = self.stop.clone();
        let (ns, name) = (ns.name().to_string(), name.to_string());
        self.threads.push(std::thread::spawn(move || {
            enter(&ns);
            let l = TcpListener::bind("0.0.0.0:80").expect("bind responder");
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            while !stop.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((s, _)) => {
                        let (name, stop) = (name.clone(), stop.clone());
                        std::thread::spawn(move || serve(s, &name, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }));
        rx.recv_timeout(Duration::from_secs(5))
            .expect("responder up");
    }
}

fn serve(s: TcpStream, name: &str, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    // bounded: a connection lives at most 60 s or until the lab stops
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                if w.write_all(format!("{name}\n").as_bytes()).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One request through a fresh connection: who answered, or which step failed and why.
fn ask(vip: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| format!("timeout: {e}"))?;
    s.write_all(b"GET /\n").map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    Ok(line.trim().to_string())
}

/// `n` requests from the client namespace: answers counted by real name; a failure is
/// counted under `FAILED` and its reason kept in the second map.
fn ask_many(client: &NetNs, n: usize) -> HashMap<String, usize> {
    client.run(|| async move {
        let vip: SocketAddr = VIP.parse().unwrap();
        let mut seen = HashMap::new();
        for _ in 0..n {
            match ask(vip) {
                Ok(name) => *seen.entry(name).or_insert(0) += 1,
                Err(why) => {
                    *seen.entry(FAILED.to_string()).or_insert(0) += 1;
                    *seen.entry(format!("{FAILED} {why}")).or_insert(0) += 1;
                }
            }
        }
        seen
    })
}

/// The key under which [`ask_many`] counts failed requests.
const FAILED: &str = "failed";

fn real(i: u8, weight: u32) -> RealServer {
    RealServer {
        weight,
        ..RealServer::new(
            SocketAddr::from(([198, 51, 100, 16 * i + 2], 80)),
            Forwarding::Masq,
        )
    }
}

fn web(weights: &[u32]) -> VirtualService {
    VirtualService {
        reals: weights
            .iter()
            .enumerate()
            .map(|(i, w)| real(u8::try_from(i).unwrap() + 1, *w))
            .collect(),
        ..VirtualService::new(ServiceKey::Tcp(VIP.parse().unwrap()), Scheduler::Wrr)
    }
}

fn open_nft(director: &NetNs) -> Nft {
    director.run(|| async { Nft::open("hbd").expect("open nftables dataplane") })
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

fn owned(vs: &[VirtualService]) -> HashSet<ServiceKey> {
    vs.iter().map(|v| v.key).collect()
}

#[test]
fn nft_weighted_round_robin_is_idempotent_and_leaves_other_tables_alone() {
    let lab = Lab::topology();
    let (c, d) = (&lab.client, &lab.director);
    // a foreign table hbd must never touch
    nft(d, "add table ip other");
    nft(
        d,
        "add chain ip other input { type filter hook input priority 0; }",
    );
    nft(d, "add rule ip other input tcp dport 9999 counter accept");
    let other_before = nft(d, "list table ip other");

    let mut dp = open_nft(d);
    let desired = vec![web(&[2, 1, 1])];
    let own = owned(&desired);
    let first = block(dp.reconcile(&desired, &own)).expect("first reconcile");
    assert_eq!(first.changes.len(), 4, "{first:?}");
    let again = block(dp.reconcile(&desired, &own)).expect("second reconcile");
    assert!(
        again.changes.is_empty(),
        "second reconcile changed {again:?}"
    );
    // a freshly opened dataplane adopts the table: same services, nothing to do
    let mut adopted = open_nft(d);
    assert_eq!(block(adopted.list()).unwrap(), desired);
    assert!(
        block(adopted.reconcile(&desired, &own))
            .unwrap()
            .changes
            .is_empty()
    );

    let table = nft(d, "list table ip hbd");
    println!("{table}");

    let n = 4000;
    let seen = ask_many(c, n);
    assert_eq!(seen.get(FAILED), None, "failed requests: {seen:?}");
    for (name, want) in [("r1", 0.5), ("r2", 0.25), ("r3", 0.25)] {
        let got = *seen.get(name).unwrap_or(&0) as f64 / n as f64;
        assert!(
            (got - want).abs() <= 0.05,
            "{name}: {got} vs {want} ({seen:?})"
        );
    }

    // removing everything hbd owns leaves the foreign table byte-for-byte alone
    let gone = block(dp.reconcile(&[], &own)).unwrap();
    assert_eq!(gone.changes.len(), 4);
    assert!(block(dp.list()).unwrap().is_empty());
    let other_after = nft(d, "list table ip other");
    assert_eq!(other_before, other_after);
}

#[test]
fn nft_quiescent_real_keeps_established_connections_and_removal_is_atomic() {
    let lab = Lab::topology();
    let (c, d) = (&lab.client, &lab.director);
    let mut dp = open_nft(d);
    let own = owned(&[web(&[1, 1, 1])]);
    block(dp.reconcile(&[web(&[1, 1, 1])], &own)).unwrap();

    // open a long-lived connection and learn which real it landed on
    let idx = std::thread::scope(|s| {
        let (to_main, from_client) = std::sync::mpsc::channel::<String>();
        let (to_client, from_main) = std::sync::mpsc::channel::<()>();
        let held = s.spawn(move || {
            c.run(move || async move {
                let vip: SocketAddr = VIP.parse().unwrap();
                let s = TcpStream::connect_timeout(&vip, Duration::from_secs(2)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let mut line = String::new();
                w.write_all(b"GET /\n").unwrap();
                r.read_line(&mut line).unwrap();
                to_main.send(line.trim().to_string()).unwrap();
                from_main.recv_timeout(Duration::from_secs(30)).unwrap();
                line.clear();
                w.write_all(b"GET /\n").unwrap();
                r.read_line(&mut line).unwrap();
                line.trim().to_string()
            })
        });
        let first = from_client.recv_timeout(Duration::from_secs(10)).unwrap();
        let idx: usize = first[1..].parse::<usize>().unwrap() - 1;
        let mut weights = [1, 1, 1];
        weights[idx] = 0;
        let report = block(dp.reconcile(&[web(&weights)], &own)).unwrap();
        assert_eq!(
            report.changes.len(),
            1,
            "a weight change is one edit: {report:?}"
        );

        let seen = ask_many(c, 300);
        assert_eq!(seen.get(FAILED), None, "{seen:?}");
        assert_eq!(
            seen.get(&first),
            None,
            "quiesced {first} got new connections: {seen:?}"
        );
        to_client.send(()).unwrap();
        assert_eq!(held.join().unwrap(), first, "established connection broke");
        idx
    });

    // flip a real in and out while traffic flows: every request must succeed
    let seen = std::thread::scope(|s| {
        let traffic = s.spawn(|| ask_many(c, 600));
        let keep = (idx + 1) % 3;
        for round in 0..40 {
            if round % 2 == 0 {
                // remove every real but `keep`
                let only: Vec<RealServer> = web(&[1, 1, 1])
                    .reals
                    .into_iter()
                    .skip(keep)
                    .take(1)
                    .collect();
                let vs = VirtualService {
                    reals: only,
                    ..web(&[1, 1, 1])
                };
                block(dp.reconcile(&[vs], &own)).unwrap();
            } else {
                block(dp.reconcile(&[web(&[1, 1, 1])], &own)).unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        traffic.join().unwrap()
    });
    assert_eq!(
        seen.get(FAILED),
        None,
        "requests failed during updates: {seen:?}"
    );
    let listed = block(dp.list()).unwrap();
    assert_eq!(listed, vec![web(&[1, 1, 1])]);
}

#[test]
fn ipvs_absent_is_a_clear_error() {
    // This kernel is built without IPVS (CONFIG_IP_VS unset): resolving the family fails.
    match Ipvs::open() {
        Err(DataplaneError::NoIpvs) => {}
        Err(e) => panic!("expected NoIpvs, got {e}"),
        Ok(_) => panic!("this test expects a kernel without IPVS; it found the IPVS family"),
    }
    assert!(
        DataplaneError::NoIpvs
            .to_string()
            .contains("dataplane: nftables")
    );
}

/// Benchmark: 10,000 reals in 100 services applied at once, then one weight change.
/// Run with `cargo test --test e2e dataplane::bench -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_nft_apply_10000_reals() {
    let d = &NetNs::new("dpd");
    let mut dp = open_nft(d);
    let mut desired = ten_thousand_reals::ten_thousand_reals();
    let own = owned(&desired);
    let t = Instant::now();
    let r = block(dp.reconcile(&desired, &own)).unwrap();
    let full = t.elapsed();
    assert_eq!(r.changes.len(), 100 + 10_000);
    let mut times = Vec::new();
    for i in 0..20u32 {
        desired[42].reals[7].weight = 5 + i % 2;
        let t = Instant::now();
        let r = block(dp.reconcile(&desired, &own)).unwrap();
        times.push(t.elapsed());
        assert_eq!(r.changes.len(), 1);
    }
    times.sort();
    // apply alone (the state is cached after a reconcile): one EditReal
    let mut applies = Vec::new();
    for i in 0..20u32 {
        let mut r = desired[42].reals[7];
        r.weight = 7 + i % 2;
        let change = hbd::dataplane::Change::EditReal(desired[42].key, r);
        let t = Instant::now();
        block(dp.apply(&[change])).unwrap();
        applies.push(t.elapsed());
    }
    applies.sort();
    let t = Instant::now();
    let listed = block(dp.list()).unwrap();
    let list = t.elapsed();
    assert_eq!(listed.len(), 100);
    println!(
        "BENCH nft: full apply of 10,000 reals / 100 services: {full:?}; one real change: apply median {:?} max {:?}, reconcile (list+diff+apply) median {:?} max {:?}; list of 10,000: {list:?}",
        applies[applies.len() / 2],
        applies[applies.len() - 1],
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

#[test]
fn nft_source_hash_and_persistence_pin_a_client() {
    let lab = Lab::topology();
    let (c, d) = (&lab.client, &lab.director);
    let mut dp = open_nft(d);
    let mut vs = web(&[1, 1, 1]);
    vs.scheduler = Scheduler::Sh;
    let own = owned(std::slice::from_ref(&vs));
    block(dp.reconcile(std::slice::from_ref(&vs), &own)).unwrap();
    let seen = ask_many(c, 60);
    assert_eq!(seen.len(), 1, "source hashing spread one client: {seen:?}");
    assert!(!seen.contains_key(FAILED), "{seen:?}");

    // wrr + persistence /24: an EditService, still one real for this client
    vs.scheduler = Scheduler::Wrr;
    vs.persistence = Some(hbd::dataplane::Persistence {
        timeout: Duration::from_secs(300),
        netmask: hbd::dataplane::Netmask { prefix: 24 },
    });
    let r = block(dp.reconcile(std::slice::from_ref(&vs), &own)).unwrap();
    assert!(
        matches!(
            r.changes.as_slice(),
            [hbd::dataplane::Change::EditService(_)]
        ),
        "{r:?}"
    );
    let seen = ask_many(c, 60);
    assert_eq!(seen.len(), 1, "persistence spread one client: {seen:?}");
    assert_eq!(block(dp.list()).unwrap(), vec![vs]);
}

#[test]
fn nft_udp_and_fwmark_services_round_trip_through_the_kernel() {
    let d = &NetNs::new("dpd");
    let mut dp = open_nft(d);
    let mut udp = VirtualService::new(
        ServiceKey::Udp("192.0.2.53:53".parse().unwrap()),
        Scheduler::Rr,
    );
    udp.reals = vec![real(1, 1), real(2, 0)];
    let mut fwm = VirtualService::new(
        ServiceKey::Fwmark(7, hbd::dataplane::Family::V4),
        Scheduler::Wlc,
    );
    fwm.reals = vec![RealServer {
        upper_threshold: 100,
        lower_threshold: 10,
        ..real(3, 4)
    }];
    let desired = vec![udp, fwm];
    let own = owned(&desired);
    block(dp.reconcile(&desired, &own)).unwrap();
    let mut listed = block(dp.list()).unwrap();
    listed.sort_by_key(|v| v.key);
    let mut want = desired.clone();
    want.sort_by_key(|v| v.key);
    assert_eq!(listed, want);
    let table = nft(d, "list table ip hbd");
    assert!(table.contains("meta mark vmap @fwmarks"), "{table}");
    assert!(table.contains("0x00000007 : jump svc-fwm-7"), "{table}");
    // a hand-deleted chain makes the next batch fail; the one after rebuilds the table
    nft(d, "delete element ip hbd fwmarks { 0x00000007 }");
    nft(d, "flush chain ip hbd svc-fwm-7");
    nft(d, "delete chain ip hbd svc-fwm-7");
    let mut changed = desired.clone();
    changed[1].reals[0].weight = 2;
    let first = block(dp.reconcile(&changed, &own));
    if first.is_err() {
        block(dp.reconcile(&changed, &own)).expect("rebuild after a refused batch");
    }
    let mut listed = block(dp.list()).unwrap();
    listed.sort_by_key(|v| v.key);
    changed.sort_by_key(|v| v.key);
    assert_eq!(listed, changed);
    let table = nft(d, "list table ip hbd");
    assert!(table.contains("chain svc-fwm-7"), "{table}");
    assert!(
        table.contains("dnat to numgen inc mod 1 map { 0 : 198.51.100.50 }"),
        "{table}"
    );
}

/// Defect 3 of issue 16: operators save rulesets with `nft list ruleset > file` and load them
/// back; hbd's table must survive that (`nft -c -f` is nft's own dry run of the load), for
/// every shape hbd programs: tcp/udp/fwmark dispatch, numgen and jhash balancing.
#[test]
fn nft_saved_ruleset_loads_back() {
    let d = &NetNs::new("dps");
    let mut dp = open_nft(d);
    let mut sh = web(&[1, 1]);
    sh.key = ServiceKey::Tcp("192.0.2.11:443".parse().unwrap());
    sh.scheduler = Scheduler::Sh;
    sh.persistence = Some(hbd::dataplane::Persistence {
        timeout: Duration::from_secs(300),
        netmask: hbd::dataplane::Netmask { prefix: 24 },
    });
    let mut udp = VirtualService::new(
        ServiceKey::Udp("192.0.2.53:53".parse().unwrap()),
        Scheduler::Rr,
    );
    udp.reals = vec![real(1, 1), real(2, 0)];
    let mut fwm = VirtualService::new(
        ServiceKey::Fwmark(7, hbd::dataplane::Family::V4),
        Scheduler::Wrr,
    );
    fwm.reals = vec![real(3, 4)];
    let mut fwm_persistent = VirtualService::new(
        ServiceKey::Fwmark(8, hbd::dataplane::Family::V4),
        Scheduler::Fo,
    );
    fwm_persistent.reals = vec![
        real(1, 2),
        RealServer {
            upper_threshold: 40,
            ..real(2, 1)
        },
    ];
    fwm_persistent.persistence = Some(hbd::dataplane::Persistence {
        timeout: Duration::from_secs(60),
        netmask: hbd::dataplane::Netmask { prefix: 32 },
    });
    let desired = vec![web(&[2, 1, 1]), sh, udp, fwm, fwm_persistent];
    block(dp.reconcile(&desired, &owned(&desired))).unwrap();
    // Persistence entries as the packet path would leave them, timeouts included.
    nft(
        d,
        "add element ip hbd persist-tcp-192.0.2.11-443 { 203.0.113.0 timeout 300s : 198.51.100.18 . 80 }",
    );
    nft(
        d,
        "add element ip hbd persist-fwm-8 { 203.0.113.2 timeout 60s : 198.51.100.18 }",
    );
    let saved = nft(d, "list ruleset");
    for shape in [
        "update @persist-tcp-192.0.2.11-443 { ip saddr & 255.255.255.0 timeout 5m : ip daddr . tcp dport }",
        "update @persist-fwm-8 { ip saddr timeout 1m : ip daddr }",
        "dnat ip to ip saddr & 255.255.255.0 map @persist-tcp-192.0.2.11-443",
        "ip daddr 198.51.100.34 ct state new ct count over 40 drop",
    ] {
        assert!(saved.contains(shape), "no `{shape}` in\n{saved}");
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &saved).unwrap();
    let path = file.path().to_str().unwrap();
    let check = d.exec(&["nft", "-c", "-f", path]);
    assert!(
        check.status.success(),
        "`nft -c -f` refuses the saved ruleset: {}\n{saved}",
        String::from_utf8_lossy(&check.stderr)
    );
    // And a real load (flush first, as a saved file is restored) gives hbd the same table.
    nft(d, "flush ruleset");
    let load = d.exec(&["nft", "-f", path]);
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let mut listed = block(open_nft(d).list()).unwrap();
    listed.sort_by_key(|v| v.key);
    let mut want = desired.clone();
    want.sort_by_key(|v| v.key);
    assert_eq!(listed, want, "{saved}");
}

/// Issue 16 defect 4: ActiveConn comes from conntrack for the nftables dataplane, and
/// `hactl ipvs` keeps ipvsadm's first line (parsers skip three header lines).
#[test]
fn nft_connection_counts_come_from_conntrack() {
    let lab = Lab::topology();
    let (c, d) = (&lab.client, &lab.director);
    let desired = vec![web(&[1, 0, 0])];
    block(open_nft(d).reconcile(&desired, &owned(&desired))).unwrap();
    let r1 = real(1, 1).addr;
    std::thread::scope(|s| {
        let (opened, wait_open) = std::sync::mpsc::channel::<()>();
        let (release, wait_release) = std::sync::mpsc::channel::<()>();
        s.spawn(move || {
            c.run(move || async move {
                let vip: SocketAddr = VIP.parse().unwrap();
                let mut held = Vec::new();
                for _ in 0..3 {
                    let s = TcpStream::connect_timeout(&vip, Duration::from_secs(2)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut w = s.try_clone().unwrap();
                    w.write_all(b"GET /\n").unwrap();
                    let mut line = String::new();
                    let mut r = BufReader::new(s);
                    r.read_line(&mut line).unwrap();
                    assert_eq!(line.trim(), "r1");
                    held.push((w, r));
                }
                opened.send(()).unwrap();
                let _ = wait_release.recv_timeout(Duration::from_secs(20));
            })
        });
        wait_open.recv_timeout(Duration::from_secs(10)).unwrap();
        let counts = d.run(|| async {
            let mut b = hbd::dataplane::DataplaneBackend::Nft(Nft::open("hbd").unwrap());
            let services = b.list().await.unwrap();
            b.connections(&services).unwrap()
        });
        let key = desired[0].key;
        assert_eq!(
            counts.get(&(key, r1)).map(|c| c.active),
            Some(3),
            "{counts:?}"
        );
        let out = d.exec(&[env!("CARGO_BIN_EXE_hactl"), "ipvs"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("IP Virtual Server version 1.2.1 (size=0) via nftables"),
            "{text}"
        );
        assert!(lines[3].starts_with("TCP  192.0.2.10:80 wrr"), "{text}");
        let row: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(
            row,
            ["->", "198.51.100.18:80", "Masq", "1", "3", "0"],
            "{text}"
        );
        release.send(()).unwrap();
    });
}

/// A table an older hbd wrote (no layout tag on the dispatch rule) is adopted as it is and
/// rewritten whole, atomically, at the first change.
#[test]
fn nft_older_layout_is_rebuilt_at_the_first_change() {
    let d = &NetNs::new("dpo");
    let desired = vec![web(&[2, 1, 1])];
    let own = owned(&desired);
    block(open_nft(d).reconcile(&desired, &own)).unwrap();
    // Drop the tag, as an older hbd's table would be.
    let out = d.exec(&["nft", "-a", "list", "chain", "ip", "hbd", "prerouting"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    let handle = listing
        .lines()
        .find(|l| l.contains("vmap @services"))
        .and_then(|l| l.rsplit("# handle ").next())
        .unwrap()
        .trim()
        .to_string();
    nft(
        d,
        &format!(
            "replace rule ip hbd prerouting handle {handle} ip daddr . meta l4proto . th dport vmap @services"
        ),
    );
    assert!(!nft(d, "list table ip hbd").contains("hbd-layout"));
    let mut dp = open_nft(d);
    assert_eq!(block(dp.list()).unwrap(), desired, "adopted as it is");
    let mut changed = desired.clone();
    changed[0].reals[0].weight = 3;
    block(dp.reconcile(&changed, &own)).expect("the first change rebuilds the table");
    assert!(nft(d, "list table ip hbd").contains("hbd-layout 3"));
    assert_eq!(block(open_nft(d).list()).unwrap(), changed);
}

/// The client's entries in a persistence map, as `nft` lists them (`203.0.113.2 … : real`).
fn persist_entries(d: &NetNs, map: &str) -> Vec<String> {
    let listing = nft(d, &format!("list map ip hbd {map}"));
    let Some(start) = listing.find("elements = {") else {
        return Vec::new();
    };
    let body = &listing[start + "elements = {".len()..];
    let body = &body[..body.find('}').unwrap_or(body.len())];
    body.split(',')
        .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|e| !e.is_empty())
        .collect()
}

/// Scope 4 of issue 16: persistence is a timed map (`persistent`, `netmask`), not a hash.
/// A client sticks to the real it was first given across connections; `persistent`
/// seconds after its last packet the entry times out (awaited by polling the map) and its
/// next connection is balanced afresh; a real that is quiesced or removed loses its
/// clients' entries at once, so no new connection reaches it.
#[test]
fn nft_persistence_is_a_timed_map_and_a_removed_real_loses_its_clients() {
    let lab = Lab::topology();
    let (c, d) = (&lab.client, &lab.director);
    let mut dp = open_nft(d);
    let mut vs = web(&[1, 1, 1]);
    vs.persistence = Some(hbd::dataplane::Persistence {
        timeout: Duration::from_secs(2),
        netmask: hbd::dataplane::Netmask { prefix: 24 },
    });
    let own = owned(std::slice::from_ref(&vs));
    block(dp.reconcile(std::slice::from_ref(&vs), &own)).unwrap();
    let map = "persist-tcp-192.0.2.10-80";

    // Same client, many connections: one real, one entry keyed by the client's /24.
    let seen = ask_many(c, 40);
    assert_eq!(seen.len(), 1, "persistence spread one client: {seen:?}");
    let first = seen.keys().next().unwrap().clone();
    assert_ne!(first, FAILED, "{seen:?}");
    let entries = persist_entries(d, map);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].starts_with("203.0.113.0 "), "{entries:?}");
    assert!(entries[0].contains("timeout 2s"), "{entries:?}");
    // PersistConn counts the map's entries, as ipvsadm counts IPVS's templates.
    let out = d.exec(&[env!("CARGO_BIN_EXE_hactl"), "ipvs", "--persistent-conn"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("-> 198."))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    for row in &rows {
        let mine = row[1]
            == format!(
                "198.51.100.{}:80",
                16 * (first[1..].parse::<usize>().unwrap()) + 2
            );
        assert_eq!(row[3], if mine { "1" } else { "0" }, "{text}");
    }
    let out = d.exec(&[env!("CARGO_BIN_EXE_hactl"), "ipvs"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("# TCP  192.0.2.10:80: persistent = 2 under nftables: a timed map keeps a client (/24 source) on its real until 2 s after its last packet"),
        "{text}"
    );

    // The entry times out 2 s after the last packet: await it, then the next connection
    // is balanced afresh (numgen moved on, so to another real).
    let started = Instant::now();
    crate::netns::wait_until(
        Duration::from_secs(10),
        "the persistence entry times out",
        || persist_entries(d, map).is_empty(),
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "expired after {:?}, before its 2 s",
        started.elapsed()
    );
    let seen = ask_many(c, 20);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let second = seen.keys().next().unwrap().clone();
    assert!(second != first && second != FAILED, "{first} then {seen:?}");

    // Quiesce the client's real: its entry goes, the client moves and sticks elsewhere.
    let idx = second[1..].parse::<usize>().unwrap() - 1;
    let mut weights = [1, 1, 1];
    weights[idx] = 0;
    let quiesced = VirtualService {
        reals: web(&weights).reals,
        ..vs.clone()
    };
    block(dp.reconcile(std::slice::from_ref(&quiesced), &own)).unwrap();
    assert!(
        persist_entries(d, map)
            .iter()
            .all(|e| !e.contains(&format!("198.51.100.{} ", 16 * (idx + 1) + 2))),
        "{:?}",
        persist_entries(d, map)
    );
    let seen = ask_many(c, 20);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let third = seen.keys().next().unwrap().clone();
    assert!(third != second && third != FAILED, "{second} then {seen:?}");

    // Remove that real altogether: same again, and the table lists back as programmed.
    let gone = third[1..].parse::<usize>().unwrap() - 1;
    let remaining = VirtualService {
        reals: quiesced
            .reals
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != gone)
            .map(|(_, r)| *r)
            .collect(),
        ..vs.clone()
    };
    block(dp.reconcile(std::slice::from_ref(&remaining), &own)).unwrap();
    let seen = ask_many(c, 20);
    assert!(
        !seen.contains_key(&third) && !seen.contains_key(&second) && !seen.contains_key(FAILED),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(block(open_nft(d).list()).unwrap(), vec![remaining.clone()]);

    // Persistence off: the map and the recording chain go; on again: they come back.
    let plain = VirtualService {
        persistence: None,
        ..remaining.clone()
    };
    block(dp.reconcile(std::slice::from_ref(&plain), &own)).unwrap();
    let table = nft(d, "list table ip hbd");
    assert!(
        !table.contains(map) && !table.contains("admit-192.0.2.10"),
        "{table}"
    );
    block(dp.reconcile(std::slice::from_ref(&remaining), &own)).unwrap();
    let table = nft(d, "list table ip hbd");
    assert!(
        table.contains(map) && table.contains("chain admit-192.0.2.10"),
        "{table}"
    );
    assert_eq!(block(open_nft(d).list()).unwrap(), vec![remaining]);
}

/// Scope 4 of issue 16: a real's upper threshold (`<u:N>`) is a hard cap under nftables.
/// With one live real capped at 2, two held connections reach it and a third is refused
/// (its SYNs are dropped after DNAT); once one of the two is closed, a new one gets in.
/// A reload that leaves the cap alone keeps its count (the cap's rule is not rebuilt).
#[test]
fn nft_upper_threshold_caps_a_reals_connections() {
    let lab = Lab::topology();
    let (c, d) = (&lab.client, &lab.director);
    let mut dp = open_nft(d);
    let mut vs = web(&[1, 0, 0]);
    vs.reals[0].upper_threshold = 2;
    let own = owned(std::slice::from_ref(&vs));
    block(dp.reconcile(std::slice::from_ref(&vs), &own)).unwrap();
    let table = nft(d, "list table ip hbd");
    assert!(
        table.contains("ip daddr 198.51.100.18 tcp dport 80 ct original proto-dst 80 ct state new ct count over 2 drop"),
        "{table}"
    );
    // What differs from IPVS is said under `hactl ipvs`, naming the service and the real.
    let out = d.exec(&[env!("CARGO_BIN_EXE_hactl"), "ipvs"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with(
            "# TCP  192.0.2.10:80: real 198.51.100.18:80: <u:2> is a hard cap under nftables"
        ) && l.contains("use IPVS for exact thresholds")),
        "{text}"
    );
    let vip: SocketAddr = VIP.parse().unwrap();
    std::thread::scope(|s| {
        let (to_main, from_client) = std::sync::mpsc::channel::<Result<String, String>>();
        let (to_client, from_main) = std::sync::mpsc::channel::<&'static str>();
        s.spawn(move || {
            c.run(move || async move {
                let open = || -> Result<(TcpStream, BufReader<TcpStream>), String> {
                    let s = TcpStream::connect_timeout(&vip, Duration::from_secs(2))
                        .map_err(|e| format!("connect: {e}"))?;
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut w = s.try_clone().unwrap();
                    w.write_all(b"GET /\n").map_err(|e| e.to_string())?;
                    let mut r = BufReader::new(s);
                    let mut line = String::new();
                    r.read_line(&mut line).map_err(|e| e.to_string())?;
                    assert_eq!(line.trim(), "r1");
                    Ok((w, r))
                };
                let mut held = Vec::new();
                for _ in 0..2 {
                    held.push(open().expect("a connection under the cap"));
                }
                to_main.send(Ok("two held".into())).unwrap();
                // The third would exceed the cap: refused.
                to_main
                    .send(open().map(|_| "a third got in".to_string()))
                    .unwrap();
                assert_eq!(
                    from_main.recv_timeout(Duration::from_secs(30)),
                    Ok("close one")
                );
                drop(held.pop());
                // Closed (TIME_WAIT) connections are not counted: a new one gets in.
                let mut last = Err("not tried".to_string());
                for _ in 0..10 {
                    last = open().map(|_| "in".to_string());
                    if last.is_ok() {
                        break;
                    }
                }
                to_main.send(last).unwrap();
                let _ = from_main.recv_timeout(Duration::from_secs(30));
            })
        });
        let step = |what: &str| {
            from_client
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("{what}: {e}"))
        };
        assert_eq!(step("two held"), Ok("two held".to_string()));
        // A reload that changes another real keeps the cap's count.
        let mut edited = vs.clone();
        edited.reals[2].weight = 0;
        edited.reals[1].lower_threshold = 1;
        block(dp.reconcile(std::slice::from_ref(&edited), &own)).unwrap();
        let third = step("third");
        assert!(
            third.is_err(),
            "the cap let a third connection in: {third:?}"
        );
        to_client.send("close one").unwrap();
        let after = step("after closing one");
        assert!(
            after.is_ok(),
            "no new connection once one closed: {after:?}"
        );
        to_client.send("done").unwrap();
    });
}

/// Scope 4 of issue 16: what the nftables dataplane runs differently is named at
/// `hbd --check-config`, each with its `ldirectord.cf` line: the scheduler at the `virtual`
/// line (ovf runs as fo), persistence there too, a threshold at its `real` line; `sip` is
/// refused as the persistence engine it is.
#[test]
fn check_config_names_every_nftables_approximation_at_its_line() {
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/seed004-lab");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for f in ["ha.cf", "haresources", "authkeys"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("authkeys"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let cf = dir.join("ldirectord.cf");
    let check = |body: &str| {
        std::fs::write(&cf, body).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hbd"))
            .args([
                "--check-config",
                "--node-name",
                "loadbalancer",
                "--dataplane",
                "nftables",
                "--ha-dir",
            ])
            .arg(dir)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, text) = check(
        "checktimeout=3\nvirtual=192.0.2.10:80\n\treal=198.51.100.18:80 masq 2 <u:50> <l:10>\n\treal=198.51.100.34:80 masq 1\n\tscheduler=ovf\n\tpersistent=300\n\tnetmask=255.255.255.0\n\tchecktype=on\n",
    );
    assert_eq!(code, Some(0), "approximations are warnings: {text}");
    let at = |line: u32, what: &str| {
        let head = format!("{}:{line}: warning: ", cf.display());
        assert!(
            text.lines()
                .any(|l| l.starts_with(&head) && l.contains(what)),
            "no warning `{what}` at line {line} in\n{text}"
        );
    };
    at(2, "scheduler ovf approximated as fo under nftables");
    at(
        2,
        "persistent = 300 under nftables: a timed map keeps a client (/24 source)",
    );
    at(
        3,
        "real 198.51.100.18:80: <u:50> is a hard cap under nftables",
    );
    at(3, "<l:10> has no effect");
    let (code, text) =
        check("virtual=192.0.2.10:80\n\treal=198.51.100.18:80 masq\n\tscheduler=sip\n");
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains(":3: scheduler: 'sip' is not a scheduler hbd supports: it is IPVS's SIP persistence engine"), "{text}");
}

/// Persistence of a firewall-mark service (ldirectord `virtual = 8` with `persistent`): the
/// mark (set here by a mangle rule, as an operator's firewall would) finds the service's
/// recording chain after DNAT, and the entry keeps the client on one real.
#[test]
fn nft_fwmark_persistence_pins_a_client() {
    let lab = Lab::topology();
    let (c, d) = (&lab.client, &lab.director);
    nft(d, "add table ip mangle");
    nft(
        d,
        "add chain ip mangle prerouting { type filter hook prerouting priority mangle; }",
    );
    nft(
        d,
        "add rule ip mangle prerouting ip daddr 192.0.2.10 tcp dport 80 meta mark set 8",
    );
    let mut vs = VirtualService {
        reals: web(&[1, 1, 1]).reals,
        ..VirtualService::new(
            ServiceKey::Fwmark(8, hbd::dataplane::Family::V4),
            Scheduler::Wrr,
        )
    };
    vs.persistence = Some(hbd::dataplane::Persistence {
        timeout: Duration::from_secs(60),
        netmask: hbd::dataplane::Netmask { prefix: 32 },
    });
    let mut dp = open_nft(d);
    block(dp.reconcile(std::slice::from_ref(&vs), &owned(std::slice::from_ref(&vs)))).unwrap();
    let seen = ask_many(c, 30);
    assert_eq!(seen.len(), 1, "persistence spread one client: {seen:?}");
    let name = seen.keys().next().unwrap().clone();
    assert_ne!(name, FAILED, "{seen:?}");
    let entries = persist_entries(d, "persist-fwm-8");
    let real_ip = format!(
        "198.51.100.{}",
        16 * name[1..].parse::<usize>().unwrap() + 2
    );
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(
        entries[0].starts_with("203.0.113.2 ") && entries[0].ends_with(&format!(": {real_ip}")),
        "{entries:?}"
    );
}
