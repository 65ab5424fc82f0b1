//! The LVS-NAT director pair end to end with the nftables dataplane: a client LAN
//! (198.51.100.0/24, VIP .10) and a real-server LAN (203.0.113.0/24, floating gateway .1),
//! two directors running hbd with `ldirectord::ldirectord.cf` in their group, three real
//! servers. Weighted balancing, a real server going down and coming back, the fallback, the
//! rules following the VIP on failover, and a bad reload that keeps the running rules.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hbd::control::protocol::{Request, Response};

use crate::control::spawn_labweb;
use crate::netns::{NetNs, attach, bridge, pair, poll_until};
use crate::web::who_answers;

const VIP: &str = "198.51.100.10";
const LIMIT: Duration = Duration::from_secs(10);

const LDIRECTORD_CF: &str = "\
checktimeout=1
checkinterval=1
failurecount=1
quiescent=no
autoreload=yes
maintenancedir=MAINTENANCE
fallback=203.0.113.1:8080 masq

virtual=198.51.100.10:80
    real=203.0.113.21:80 masq 2
    real=203.0.113.22:80 masq 1
    real=203.0.113.23:80 masq 1
    service=http
    request=\"/\"
    receive=\"rs\"
    scheduler=wrr
    protocol=tcp
";

fn ldirectord_cf(maintenance: &std::path::Path) -> String {
    LDIRECTORD_CF.replace("MAINTENANCE", &maintenance.to_string_lossy())
}

struct NatLab {
    _lan_a: NetNs,
    _lan_b: NetNs,
    dirs: Vec<NetNs>,
    client: NetNs,
    reals: Vec<NetNs>,
    web_pids: HashMap<String, u32>,
    work: tempfile::TempDir,
    ha: PathBuf,
}

impl NatLab {
    fn new(prefix: &str) -> NatLab {
        let lan_a = bridge(prefix);
        let lan_b = bridge(prefix);
        let dirs: Vec<NetNs> = (0..2).map(|_| NetNs::new(prefix)).collect();
        let client = NetNs::new(prefix);
        let reals: Vec<NetNs> = (0..3).map(|_| NetNs::new(prefix)).collect();
        let mut web_pids = HashMap::new();
        for (i, d) in dirs.iter().enumerate() {
            attach(&lan_a, d, "eth0", &format!("a{i}"));
            attach(&lan_b, d, "eth1", &format!("b{i}"));
            d.addr_up("eth0", &format!("198.51.100.{}/24", 11 + i));
            d.addr_up("eth1", &format!("203.0.113.{}/24", 2 + i));
            d.forward();
            // The sorry server, reached through the floating gateway address.
            web_pids.insert(
                format!("sorry{}", i + 1),
                spawn_labweb(d, "0.0.0.0:8080", &format!("sorry-dir{}", i + 1)),
            );
        }
        attach(&lan_a, &client, "eth0", "c0");
        client.addr_up("eth0", "198.51.100.100/24");
        for (i, r) in reals.iter().enumerate() {
            attach(&lan_b, r, "eth0", &format!("r{i}"));
            r.addr_up("eth0", &format!("203.0.113.{}/24", 21 + i));
            r.ip(&["route", "add", "default", "via", "203.0.113.1"]);
            let name = format!("rs{}", i + 1);
            web_pids.insert(name.clone(), spawn_labweb(r, "0.0.0.0:80", &name));
        }
        let work = tempfile::tempdir().unwrap();
        let ha = crate::control::write_ha_dir(
            work.path(),
            "keepalive 20ms\ndeadtime 100ms\nwarntime 60ms\ninitdead 1\n\
             ucast eth1 203.0.113.2\nucast eth1 203.0.113.3\n\
             ucast eth0 198.51.100.11\nucast eth0 198.51.100.12\n\
             auto_failback on\nnode dir1\nnode dir2\n",
            &format!(
                "dir1 IPaddr::{VIP}/24/eth0 IPaddr::203.0.113.1/24/eth1 ipvsadm ldirectord::ldirectord.cf\n"
            ),
            "auth 1\n1 sha256 director-test\n",
        );
        let maintenance = work.path().join("maintenance");
        std::fs::create_dir_all(&maintenance).unwrap();
        std::fs::write(ha.join("ldirectord.cf"), ldirectord_cf(&maintenance)).unwrap();
        NatLab {
            _lan_a: lan_a,
            _lan_b: lan_b,
            dirs,
            client,
            reals,
            web_pids,
            work,
            ha,
        }
    }

    fn socket(&self, i: usize) -> PathBuf {
        crate::control::socket_in(&self.work.path().join(format!("dir{}", i + 1)))
    }

    fn log(&self, i: usize) -> String {
        crate::control::log_in(&self.work.path().join(format!("dir{}", i + 1)))
    }

    fn start(&self, i: usize) {
        let name = format!("dir{}", i + 1);
        let state = self.work.path().join(&name);
        crate::control::spawn_hbd(
            &self.dirs[i],
            &self.ha,
            &name,
            &state,
            &["--dataplane", "nftables"],
        );
    }

    fn call(&self, i: usize, request: Request) -> Option<Response> {
        crate::control::call(&self.socket(i), &request, Duration::from_secs(3))
    }

    /// Waits until director `i` sees `owner` own the group, running it where it is owned.
    fn wait_running(&self, i: usize, owner: &str) {
        crate::control::wait_owner(&self.socket(i), owner, LIMIT, || {
            format!("dir1 log:\n{}\ndir2 log:\n{}", self.log(0), self.log(1))
        });
    }

    /// `n` requests from the client to the VIP; the answers counted by name.
    fn ask(&self, n: usize) -> HashMap<String, usize> {
        self.client.run(|| async move {
            let mut counts = HashMap::new();
            for _ in 0..n {
                let name = who_answers((VIP, 80), Duration::from_millis(500))
                    .await
                    .unwrap_or_else(|| "(failed)".into());
                *counts.entry(name).or_insert(0) += 1;
            }
            counts
        })
    }

    /// Asks until `pred` holds for a batch of 20 answers; returns how long that took.
    fn until(&self, what: &str, pred: impl Fn(&HashMap<String, usize>) -> bool) -> Duration {
        let start = Instant::now();
        let mut last = HashMap::new();
        while start.elapsed() < LIMIT {
            last = self.ask(20);
            if pred(&last) {
                return start.elapsed();
            }
        }
        panic!(
            "{what}: not reached within {LIMIT:?}; last answers {last:?}\ndir1 log:\n{}",
            self.log(0)
        );
    }

    fn kill_web(&self, name: &str) {
        let pid = self.web_pids[name];
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn director_pair_over_nftables() {
    let mut lab = NatLab::new("dr");
    lab.start(0);
    lab.start(1);
    lab.wait_running(0, "dir1");
    lab.wait_running(1, "dir1");
    // Every real comes up after its first check (1 s interval).
    lab.until("all reals serving", |c| {
        ["rs1", "rs2", "rs3"].iter().all(|n| c.contains_key(*n))
    });

    // Weighted round robin 2:1:1 over 4,000 requests, each share within ±5 %.
    let counts = lab.ask(4000);
    assert_eq!(counts.get("(failed)"), None, "{counts:?}");
    for (name, share) in [("rs1", 0.5), ("rs2", 0.25), ("rs3", 0.25)] {
        let got = counts[name] as f64 / 4000.0;
        assert!(
            (got - share).abs() <= 0.05,
            "{name}: {got:.3} of requests, want {share} ±0.05: {counts:?}"
        );
    }

    // hactl checks shows the reals.
    let checks = lab.call(0, Request::Checks).unwrap().checks.unwrap();
    assert_eq!(checks.len(), 3, "{checks:?}");
    assert!(checks.iter().all(|r| r.state == "up"), "{checks:?}");

    // rs2 stops: new connections avoid it within checkinterval × failurecount + checktimeout.
    lab.kill_web("rs2");
    let took = lab.until("rs2 out", |c| {
        !c.contains_key("rs2") && !c.contains_key("(failed)")
    });
    assert!(
        took <= Duration::from_secs(2) + Duration::from_millis(500),
        "rs2 removed after {took:?}"
    );
    let checks = lab.call(0, Request::Checks).unwrap().checks.unwrap();
    let rs2 = checks
        .iter()
        .find(|r| r.real.starts_with("203.0.113.22"))
        .unwrap();
    assert_eq!(rs2.state, "down", "{rs2:?}");
    assert!(rs2.reason.is_some());
    // rs2 is back.
    let pid = spawn_labweb(&lab.reals[1], "0.0.0.0:80", "rs2");
    lab.web_pids.insert("rs2".into(), pid);
    lab.until("rs2 back", |c| c.contains_key("rs2"));

    // maintenancedir: a file named after rs3 drains it; removing the file brings it back.
    let maintenance = lab.work.path().join("maintenance");
    std::fs::write(maintenance.join("203.0.113.23:80"), "").unwrap();
    lab.until("rs3 drained", |c| {
        !c.contains_key("rs3") && !c.contains_key("(failed)")
    });
    let checks = lab.call(0, Request::Checks).unwrap().checks.unwrap();
    let rs3 = checks
        .iter()
        .find(|r| r.real.starts_with("203.0.113.23"))
        .unwrap();
    assert!(
        rs3.reason.as_deref().unwrap_or("").contains("maintenance"),
        "{rs3:?}"
    );
    std::fs::remove_file(maintenance.join("203.0.113.23:80")).unwrap();
    lab.until("rs3 back", |c| c.contains_key("rs3"));

    // autoreload: rs1's weight goes from 2 to 0 in the file, no hactl reload needed.
    let edited =
        ldirectord_cf(&maintenance).replace("203.0.113.21:80 masq 2", "203.0.113.21:80 masq 0");
    std::fs::write(lab.ha.join("ldirectord.cf"), edited).unwrap();
    lab.until("autoreload applied", |c| {
        !c.contains_key("rs1") && c.contains_key("rs2")
    });
    assert!(
        lab.log(0).contains("autoreload: director reloaded"),
        "{}",
        lab.log(0)
    );
    std::fs::write(lab.ha.join("ldirectord.cf"), ldirectord_cf(&maintenance)).unwrap();
    lab.until("autoreload restored", |c| c.contains_key("rs1"));

    // All down: the fallback (sorry server on the active director) answers.
    for name in ["rs1", "rs2", "rs3"] {
        lab.kill_web(name);
    }
    lab.until("fallback", |c| c.get("sorry-dir1") == Some(&20));
    let pid = spawn_labweb(&lab.reals[0], "0.0.0.0:80", "rs1");
    lab.web_pids.insert("rs1".into(), pid);
    lab.until("fallback out", |c| c.get("rs1") == Some(&20));

    // A broken ldirectord.cf is refused on reload; the running rules stay.
    std::fs::write(
        lab.ha.join("ldirectord.cf"),
        "checktimeout=1\nvirtual=198.51.100.10:80\n    real=nonsense\n",
    )
    .unwrap();
    let r = lab.call(0, Request::Reload).unwrap();
    assert!(!r.ok, "{r:?}");
    assert!(r.error.unwrap().contains("ldirectord.cf:3:"));
    assert_eq!(lab.ask(10).get("rs1"), Some(&10));
    std::fs::write(
        lab.ha.join("ldirectord.cf"),
        ldirectord_cf(&lab.work.path().join("maintenance")),
    )
    .unwrap();

    // The rules follow the VIP: dir1 loses both links, dir2 takes the VIPs and the director.
    lab.dirs[0].ip(&["link", "set", "eth0", "down"]);
    lab.dirs[0].ip(&["link", "set", "eth1", "down"]);
    lab.wait_running(1, "dir2");
    lab.until("served through dir2", |c| c.get("rs1") == Some(&20));
    let checks = lab.call(1, Request::Checks).unwrap().checks.unwrap();
    assert_eq!(checks.len(), 3);

    // hactl ipvs shows the live table on the director that holds it.
    let table = lab.dirs[1].exec(&[env!("CARGO_BIN_EXE_hactl"), "ipvs"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{table:?}");
    assert!(
        text.contains("198.51.100.10:80") && text.contains("203.0.113.21:80"),
        "{text}"
    );
    let save = lab.dirs[1].exec(&[env!("CARGO_BIN_EXE_hactl"), "ipvs", "save"]);
    let text = String::from_utf8_lossy(&save.stdout);
    assert!(text.contains("-A -t 198.51.100.10:80 -s wrr"), "{text}");
}

/// Benchmark (run with `--ignored --nocapture`): a director with 10,000 real servers
/// (100 virtual services × 100 reals, `checktype = on`) in a fresh namespace, from
/// `runtime::start` to the whole table programmed and serving.
#[test]
#[ignore]
fn bench_director_start_with_10000_reals() {
    let ns = NetNs::new("dbn");
    let mut cf = String::from("checkinterval=1\nquiescent=yes\n");
    for v in 0..100u32 {
        cf.push_str(&format!("virtual=198.51.100.{}:{}\n", 1 + v / 50, 1000 + v));
        for r in 0..100u32 {
            cf.push_str(&format!(
                "    real=203.0.{}.{}:80 masq\n",
                113,
                1 + (v * 100 + r) % 250
            ));
        }
        cf.push_str("    checktype=on\n    scheduler=wrr\n");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ldirectord.cf");
    std::fs::write(&path, cf).unwrap();
    let (figures, reals) = ns.run(|| async move {
        use hbd::dataplane::Dataplane;
        use hbd::director::runtime;
        let t0 = Instant::now();
        let (config, _) = hbd::director::parse_ldirectord(&path).expect("parses");
        let parsed = t0.elapsed();
        let backend = runtime::open_backend(runtime::BackendChoice::Nftables).unwrap();
        let handle = runtime::start(&config, backend, 256, &Default::default())
            .await
            .unwrap();
        let started = t0.elapsed();
        let mut check = runtime::open_backend(runtime::BackendChoice::Nftables).unwrap();
        let listed = check.list().await.unwrap();
        let reals: usize = listed
            .iter()
            .map(|s| s.reals.iter().filter(|r| r.weight > 0).count())
            .sum();
        handle.stop().await;
        ((parsed, started), reals)
    });
    println!(
        "MEASURE director start, 10,000 reals: parsed in {:?}, programmed and serving after {:?} ({} reals with weight > 0)",
        figures.0, figures.1, reals
    );
    assert!(reals >= 10_000 - 100, "{reals}");
}

/// A YAML configuration with an inline `director:` section: `hactl reload` applies a changed
/// section to the running director (the rules change without a restart).
#[test]
fn yaml_director_section_is_reloaded() {
    // The peer end is up but holds no address of dir2 (198.51.100.12): dir2 is absent.
    let (ns, _peer) = pair("dy", "198.51.100.11/24", "198.51.100.13/24");
    let work = tempfile::tempdir().unwrap();
    let yaml = work.path().join("hbd.yaml");
    let write = |weight: u32| {
        std::fs::write(
            &yaml,
            format!(
                "nodes: [dir1, dir2]\n\
                 timing: {{ keepalive: 20ms, deadtime: 100ms, initdead: 200ms }}\n\
                 media:\n  - ucast: {{ interface: eth0, peer: 198.51.100.12 }}\n\
                 auth: {{ keys: [ {{ id: 1, method: sha256, key: yaml-director }} ] }}\n\
                 auto_failback: on\n\
                 groups:\n  - preferred: dir1\n    resources: [\"IPaddr::{VIP}/24/eth0\", ldirectord]\n\
                 director:\n  virtual_services:\n    - virtual: \"{VIP}:80\"\n      checktype: on\n      \
                 reals:\n        - {{ address: \"203.0.113.21:80\", forwarding: masq, weight: {weight} }}\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&yaml, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    write(3);
    let state = work.path().join("dir1");
    crate::control::spawn_hbd(&ns, &yaml, "dir1", &state, &["--dataplane", "nftables"]);
    let socket = crate::control::socket_in(&state);
    let table = || {
        let out = ns.exec(&[env!("CARGO_BIN_EXE_hactl"), "ipvs", "save"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let wait_for = |want: &str| {
        if !poll_until(LIMIT, || table().contains(want)) {
            let log = crate::control::log_in(&state);
            panic!("table never had {want:?}: {}\nlog:\n{log}", table());
        }
    };
    // The lone node holds the group after initdead; its director programs weight 3.
    wait_for("-r 203.0.113.21:80 -m -w 3");
    write(7);
    let r = crate::control::call(&socket, &Request::Reload, Duration::from_secs(3)).unwrap();
    assert!(r.ok, "{r:?}");
    wait_for("-r 203.0.113.21:80 -m -w 7");
}
