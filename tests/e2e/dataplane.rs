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
            .map(|(i, w)| real(i as u8 + 1, *w))
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
    let mut desired = Vec::new();
    for s in 0..100u16 {
        let mut vs = VirtualService::new(
            ServiceKey::Tcp(SocketAddr::from(([192, 0, 2, 10], 1000 + s))),
            Scheduler::Wrr,
        );
        for r in 0..100u16 {
            vs.reals.push(RealServer {
                weight: 1 + u32::from(r % 3),
                ..RealServer::new(
                    SocketAddr::from(([198, 51, 100, (r % 250) as u8 + 1], 2000 + r)),
                    Forwarding::Masq,
                )
            });
        }
        desired.push(vs);
    }
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
    // a hand-deleted map makes the next batch fail; the one after rebuilds the table
    nft(d, "flush chain ip hbd svc-fwm-7");
    nft(d, "delete map ip hbd lb-fwm-7");
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
    assert!(table.contains("map lb-fwm-7"), "{table}");
}
