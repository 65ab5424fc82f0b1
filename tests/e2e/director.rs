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
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
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

    // hactl checks shows the reals, and the fallback (idle while a real is up).
    let checks = lab.call(0, Request::Checks).unwrap().checks.unwrap();
    let (fallback, reals): (Vec<_>, Vec<_>) = checks.iter().partition(|r| r.fallback);
    assert_eq!(reals.len(), 3, "{checks:?}");
    assert!(reals.iter().all(|r| r.state == "up"), "{checks:?}");
    assert_eq!(fallback.len(), 1, "{checks:?}");
    assert_eq!(
        (fallback[0].real.as_str(), fallback[0].state.as_str()),
        ("203.0.113.1:8080", "idle")
    );

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
    let checks = lab.call(0, Request::Checks).unwrap().checks.unwrap();
    let fallback = checks.iter().find(|r| r.fallback).expect("fallback listed");
    assert_eq!(
        (fallback.state.as_str(), fallback.weight),
        ("serving", Some(1))
    );
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
    assert_eq!(
        checks.iter().filter(|r| !r.fallback).count(),
        3,
        "{checks:?}"
    );

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
        let (config, _) = hbd::config::director::parse_ldirectord(&path).expect("parses");
        let parsed = t0.elapsed();
        let backend = runtime::open_backend(runtime::BackendChoice::Nftables).unwrap();
        let handle = runtime::start(&config, backend, 256).await.unwrap();
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

/// Issue 16 defect 1: a reload the dataplane refuses (a real switched from masq to ipip on
/// nftables) leaves the running director exactly as it was: checks running, rules as they
/// were, `hactl checks` listing it; fixing the file then reloads, a real whose check did not
/// change keeps its "changed" time, and stopping removes the rules.
#[test]
fn a_refused_reload_leaves_the_running_director_as_it_was() {
    use hbd::dataplane::Dataplane;
    use hbd::director::runtime::BackendChoice;
    use hbd::resources::director::{DirectorResource, DirectorSource};

    let ns = NetNs::new("drl");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ldirectord.cf");
    let cf = |second: &str| {
        format!(
            "checkinterval=1\n\
             virtual=192.0.2.10:80\n    real=198.51.100.1:80 masq 2\n    real=198.51.100.2:80 {second}\n\
             \x20   checktype=external\n    checkcommand=/bin/true\n"
        )
    };
    std::fs::write(&path, cf("masq 1")).unwrap();
    ns.run(|| async move {
        let d = DirectorResource::new(DirectorSource::File(path.clone()), BackendChoice::Nftables);
        let table = || async {
            let mut nft = hbd::director::runtime::open_backend(BackendChoice::Nftables).unwrap();
            nft.list().await.unwrap()
        };
        let wait_up = || async {
            for _ in 0..100 {
                let r = d.report().await.unwrap_or_default();
                if r.len() == 2 && r.iter().all(|r| r.state == "up" && r.weight > Some(0)) {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("reals never up: {:?}", d.report().await);
        };
        d.start().await.expect("director starts");
        wait_up().await;
        let before = table().await;
        assert_eq!(before.len(), 1);
        assert_eq!(before[0].reals.len(), 2);

        // The refused reload: named at its line, the director still runs as it was.
        std::fs::write(&path, cf("ipip 1")).unwrap();
        let e = d.reload().await.expect_err("nftables cannot forward ipip");
        assert!(e.contains("ldirectord.cf:4:") && e.contains("ipip"), "{e}");
        assert!(d.is_running().await, "the director stopped");
        assert_eq!(table().await, before, "the rules changed");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let r = d
            .report()
            .await
            .expect("hactl checks still lists the director");
        assert_eq!(r.len(), 2, "{r:?}");
        for real in &r {
            let last = real.last_check_s.expect("checked");
            assert!(last < 1.5, "checks stopped: {real:?}");
        }
        let changed_before = r[1].since_change_s;

        // Fixing the file helps: the reload goes through in place.
        std::fs::write(&path, cf("masq 5")).unwrap();
        let m = d.reload().await.expect("the fixed file reloads");
        assert!(m.contains("director reloaded"), "{m}");
        let after = table().await;
        assert_eq!(
            after[0]
                .real(&"198.51.100.2:80".parse().unwrap())
                .unwrap()
                .weight,
            5
        );
        let r = d.report().await.unwrap();
        assert!(
            r[1].since_change_s >= changed_before,
            "an unchanged check keeps its history: {r:?}"
        );

        // Refused once more, then stopped (as SIGTERM stops the group): the rules go.
        std::fs::write(&path, cf("gate 1")).unwrap();
        d.reload().await.expect_err("nftables cannot forward gate");
        assert_eq!(table().await, after);
        d.stop().await.unwrap();
        assert!(!d.is_running().await);
        assert!(
            table().await.is_empty(),
            "a stale service survived the stop"
        );
    });
}

/// Issue 16 defects 2 and 5: `hbd --check-config` says when the dataplane cannot forward a
/// real's way (ipip/gate on nftables), naming ldirectord.cf:line and the fix: an error with
/// `--dataplane nftables`, nothing with `ipvs`, a warning with `auto` on a kernel without
/// IPVS (this one); and HEAD with receive is a warning. No namespace: nothing is programmed.
#[test]
fn check_config_names_what_the_dataplane_cannot_do() {
    let work = tempfile::tempdir().unwrap();
    let ha = crate::control::write_ha_dir(
        work.path(),
        "keepalive 1\ndeadtime 10\nucast eth0 198.51.100.12\nnode dir1\nnode dir2\n",
        &format!("dir1 IPaddr::{VIP}/24/eth0 ldirectord::ldirectord.cf\n"),
        "auth 1\n1 sha256 check-config\n",
    );
    std::fs::write(
        ha.join("ldirectord.cf"),
        "virtual=198.51.100.10:80\n    real=203.0.113.21:80 masq\n    real=203.0.113.22:80 ipip\n    \
         service=http\n    httpmethod=HEAD\n    receive=\"rs\"\n    scheduler=wlc\n",
    )
    .unwrap();
    let check = |dataplane: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hbd"))
            .args([
                "--check-config",
                "--node-name",
                "dir1",
                "--dataplane",
                dataplane,
            ])
            .arg("--ha-dir")
            .arg(&ha)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let cf = ha.join("ldirectord.cf").display().to_string();
    let (code, text) = check("nftables");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("{cf}:3: virtual service 198.51.100.10:80 (tcp) on the nftables dataplane: real 203.0.113.22:80 uses ipip"))
            && text.contains("--dataplane ipvs"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{cf}:1: warning: virtual service 198.51.100.10:80 (tcp) on the nftables dataplane: scheduler wlc approximated as wrr")),
        "{text}"
    );
    assert!(text.contains("HEAD with receive can never pass"), "{text}");
    let (code, text) = check("ipvs");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        !text.contains("ipip") && !text.contains("approximated"),
        "{text}"
    );
    assert!(text.contains("HEAD with receive can never pass"), "{text}");
    // auto: what this kernel has decides; without IPVS the refusal is a warning.
    let (code, text) = check("auto");
    assert_eq!(code, Some(0), "{text}");
    let kind = hbd::director::runtime::backend_kind(hbd::director::runtime::BackendChoice::Auto);
    if kind == hbd::dataplane::BackendKind::Nftables {
        assert!(
            text.contains(&format!("{cf}:3: warning:")) && text.contains("this kernel has no IPVS"),
            "{text}"
        );
    } else {
        assert!(!text.contains("ipip"), "{text}");
    }
}

/// Issue 16 scope 4: the built-in `tunl` resource creates tunl0 (the kernel loads ipip for
/// it) and relaxes rp_filter as the shipped script does; on a kernel without ipip (this
/// one) it fails with an error saying so. LVS-DR on lo works everywhere.
#[test]
fn builtin_tunl_creates_tunl0_or_says_why_not() {
    use hbd::resources::lvsrole::LvsRole;
    let ns = NetNs::new("dtu");
    let vip: std::net::IpAddr = "192.0.2.10".parse().unwrap();
    let has_ipip = std::path::Path::new("/sys/module/ipip").exists()
        || ns.exec(&["ip", "link", "show", "tunl0"]).status.success();
    let tunl =
        ns.run(|| async move { LvsRole::new(vec![vip], "tunl0".into(), true).start().await });
    let sysctl = |key: &str| {
        let out = ns.exec(&["cat", &format!("/proc/sys/net/ipv4/conf/{key}")]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    match tunl {
        Ok(()) => {
            assert!(has_ipip || ns.exec(&["ip", "link", "show", "tunl0"]).status.success());
            let addrs = ns.ip(&["-o", "addr", "show", "dev", "tunl0"]);
            assert!(addrs.contains("192.0.2.10/32"), "{addrs}");
            assert_eq!(sysctl("tunl0/rp_filter"), "0");
            assert_eq!(sysctl("all/rp_filter"), "0");
        }
        Err(e) => {
            assert!(!has_ipip, "tunl failed with ipip present: {e}");
            let m = e.to_string();
            assert!(
                m.contains("tunl0 cannot be created") && m.contains("ipip"),
                "{m}"
            );
        }
    }
    // LVS-DR: the VIP on lo, ARP for it suppressed.
    ns.run(|| async move { LvsRole::new(vec![vip], "lo".into(), true).start().await })
        .expect("tunl on lo");
    let addrs = ns.ip(&["-o", "addr", "show", "dev", "lo"]);
    assert!(addrs.contains("192.0.2.10/32"), "{addrs}");
    assert_eq!(sysctl("all/arp_ignore"), "1");
    assert_eq!(sysctl("all/arp_announce"), "2");
}

/// Issue 16 scope 4: the shipped resources/tunl script (heartbeat-class, for heartbeat
/// itself) on lo and on tunl0, in a namespace.
#[test]
fn shipped_tunl_script_prepares_a_real_server() {
    let ns = NetNs::new("dts");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/resources/tunl");
    let run = |args: &[&str]| {
        let mut cmd = vec![script];
        cmd.extend_from_slice(args);
        let out = ns.exec(&cmd);
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, text) = run(&["192.0.2.10", "lo", "start"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        ns.ip(&["-o", "addr", "show", "dev", "lo"])
            .contains("192.0.2.10/32")
    );
    let (_, text) = run(&["192.0.2.10", "lo", "status"]);
    assert!(text.contains("is running"), "{text}");
    let (code, text) = run(&["192.0.2.10", "lo", "stop"]);
    assert_eq!(code, Some(0), "{text}");
    let (_, text) = run(&["192.0.2.10", "lo", "status"]);
    assert!(text.contains("is not running"), "{text}");
    // tunl0: works where the kernel has ipip, else fails naming the missing module.
    let (code, text) = run(&["192.0.2.10", "start"]);
    if code == Some(0) {
        assert!(
            ns.ip(&["-o", "addr", "show", "dev", "tunl0"])
                .contains("192.0.2.10/32")
        );
    } else {
        assert!(text.contains("ipip module missing"), "{text}");
    }
}
