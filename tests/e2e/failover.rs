//! The director pair end to end: two hbd daemons on a bridged LAN with a client, the VIP
//! moving on link loss, on SIGKILL, on `hactl takeover`/`standby`, back per auto_failback, the
//! seed-style `lvs` script in the group, and a 10 ms sampler proving the VIP is never on
//! both directors while heartbeats flow.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hbd::control::protocol::{GroupClass, Request, Response, StatusReport};

use crate::netns::{Lan, NetNs};
use crate::web::who_answers;

const VIP: &str = "192.0.2.10";

/// Directors `dir1` (192.0.2.11) and `dir2` (192.0.2.12) and a client (192.0.2.100) on one
/// bridge; each director runs examples/labweb on :80 answering its own name.
struct DirectorPair {
    lan: Lan,
    dir: tempfile::TempDir,
    ha: PathBuf,
    pids: std::sync::Mutex<Vec<(usize, u32)>>,
}

impl DirectorPair {
    fn new(prefix: &str, auto_failback: &str, haresources: &str) -> DirectorPair {
        let lan = crate::control::director_lan(prefix);
        let dir = tempfile::tempdir().unwrap();
        let ha = crate::control::write_ha_dir(
            dir.path(),
            &format!(
                "keepalive 20ms\ndeadtime 100ms\nwarntime 60ms\ninitdead 1\nudpport 694\n\
                 ucast eth0 192.0.2.11\nucast eth0 192.0.2.12\nauto_failback {auto_failback}\n\
                 node dir1\nnode dir2\n"
            ),
            &format!("{haresources}\n"),
            "auth 1\n1 sha256 failover-test\n",
        );
        DirectorPair {
            lan,
            dir,
            ha,
            pids: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn ns(&self, i: usize) -> &NetNs {
        &self.lan.hosts[i]
    }

    fn name(i: usize) -> &'static str {
        ["dir1", "dir2"][i]
    }

    fn socket(&self, i: usize) -> PathBuf {
        crate::control::socket_in(&self.dir.path().join(Self::name(i)))
    }

    fn start(&self, i: usize) {
        let name = Self::name(i);
        let resources = Path::new(env!("CARGO_MANIFEST_DIR")).join("resources");
        let pid = crate::control::spawn_hbd(
            self.ns(i),
            &self.ha,
            name,
            &self.dir.path().join(name),
            &["--resource-dir", &resources.to_string_lossy()],
        );
        self.pids.lock().unwrap().push((i, pid));
    }

    /// SIGKILLs the hbd of director `i` (as a crash would).
    fn kill(&self, i: usize) {
        let mut pids = self.pids.lock().unwrap();
        for (_, pid) in pids.iter().filter(|(n, _)| *n == i) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(*pid).unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        pids.retain(|(n, _)| *n != i);
    }

    fn log(&self, i: usize) -> String {
        crate::control::log_in(&self.dir.path().join(Self::name(i)))
    }

    fn call(&self, i: usize, request: Request) -> Option<Response> {
        crate::control::call(&self.socket(i), &request, Duration::from_secs(2))
    }

    fn status(&self, i: usize) -> Option<StatusReport> {
        crate::control::status(&self.socket(i))
    }

    /// Waits until director `i` reports `owner` for the group and the expected local state.
    fn wait_owner(&self, i: usize, owner: &str, limit: Duration) {
        crate::control::wait_owner(&self.socket(i), owner, limit, || {
            format!("log dir1:\n{}\nlog dir2:\n{}", self.log(0), self.log(1))
        });
    }

    fn has_vip(&self, i: usize, dev: &str) -> bool {
        self.ns(i)
            .ip(&["-o", "-4", "addr", "show", "dev", dev])
            .contains(&format!("inet {VIP}/"))
    }

    /// Asks the VIP from the client who answers.
    fn ask_vip(&self) -> String {
        self.lan.hosts[2].run(|| async {
            who_answers((VIP, 80), Duration::from_secs(1))
                .await
                .unwrap_or_else(|| "(no answer)".into())
        })
    }

    /// Boots both and waits until dir1 holds the group as seen from both sides.
    fn boot(&self) {
        self.start(0);
        self.start(1);
        self.wait_owner(0, "dir1", Duration::from_secs(10));
        self.wait_owner(1, "dir1", Duration::from_secs(10));
        assert!(self.has_vip(0, "eth0"));
        assert!(!self.has_vip(1, "eth0"));
        let answer = self.ask_vip();
        if answer != "dir1" {
            let rules = self.ns(0).exec(&["nft", "list", "ruleset"]);
            let addrs = self.ns(0).exec(&["ip", "-o", "addr"]);
            panic!(
                "VIP answered {answer:?}\n{}\n{}\nlog:\n{}",
                String::from_utf8_lossy(&rules.stdout),
                String::from_utf8_lossy(&addrs.stdout),
                self.log(0)
            );
        }
    }
}

const LIMIT: Duration = Duration::from_secs(5);

#[test]
fn failover_on_link_down_and_failback_on() {
    let pair = DirectorPair::new("fo1", "on", &format!("dir1 IPaddr::{VIP}/24/eth0"));
    pair.boot();
    let cut = Instant::now();
    pair.ns(0).ip(&["link", "set", "eth0", "down"]);
    pair.wait_owner(1, "dir2", LIMIT);
    let took = cut.elapsed();
    assert!(
        took < Duration::from_millis(100 + 20 + 200),
        "takeover after {took:?}"
    );
    assert!(pair.has_vip(1, "eth0"));
    assert_eq!(pair.ask_vip(), "dir2");
    // The partition heals: dir1 (preferred, auto_failback on) keeps it, dir2 lets go.
    pair.ns(0).ip(&["link", "set", "eth0", "up"]);
    pair.wait_owner(1, "dir1", LIMIT);
    pair.wait_owner(0, "dir1", LIMIT);
    assert!(!pair.has_vip(1, "eth0"));
    assert!(pair.has_vip(0, "eth0"));
    assert_eq!(pair.ask_vip(), "dir1");
    assert!(pair.log(0).contains("re-announcing"), "{}", pair.log(0));
}

/// dir1's hbd is SIGKILLed and dir2 takes over; dir1's daemon comes back and finds the VIP
/// it left behind: the group ends on `owner_after` (director index), as auto_failback says.
fn crash_and_restart_dir1(prefix: &str, auto_failback: &str, owner_after: usize) {
    let pair = DirectorPair::new(
        prefix,
        auto_failback,
        &format!("dir1 IPaddr::{VIP}/24/eth0"),
    );
    pair.boot();
    pair.kill(0);
    pair.wait_owner(1, "dir2", LIMIT);
    assert_eq!(pair.ask_vip(), "dir2");
    pair.start(0);
    let owner = DirectorPair::name(owner_after);
    pair.wait_owner(0, owner, LIMIT);
    pair.wait_owner(1, owner, LIMIT);
    assert!(pair.has_vip(owner_after, "eth0"));
    assert!(!pair.has_vip(1 - owner_after, "eth0"));
    assert_eq!(pair.ask_vip(), owner);
}

#[test]
fn auto_failback_off_keeps_the_group_where_it_is() {
    // With auto_failback off the newer decision (dir2) wins: dir1 releases its stale copy.
    crash_and_restart_dir1("fo2", "off", 1);
}

#[test]
fn sigkill_failover_then_restart_with_auto_failback_on() {
    crash_and_restart_dir1("fo3", "on", 0);
}

#[test]
fn planned_takeover_and_standby() {
    let pair = DirectorPair::new("fo4", "on", &format!("dir1 IPaddr::{VIP}/24/eth0"));
    pair.boot();
    let r = pair
        .call(
            1,
            Request::Takeover {
                class: GroupClass::All,
            },
        )
        .unwrap();
    assert!(r.ok, "{r:?}");
    pair.wait_owner(1, "dir2", LIMIT);
    pair.wait_owner(0, "dir2", LIMIT);
    assert_eq!(pair.ask_vip(), "dir2");
    let r = pair
        .call(
            1,
            Request::Standby {
                class: GroupClass::All,
            },
        )
        .unwrap();
    assert!(r.ok, "{r:?}");
    pair.wait_owner(0, "dir1", LIMIT);
    assert_eq!(pair.ask_vip(), "dir1");
    // hactl's own exit codes for a refused standby: kill dir2, then standby on dir1.
    pair.kill(1);
    crate::control::wait_peer(&pair.socket(0), "dir2", "dead", LIMIT, || pair.log(0));
    let out = crate::control::hactl(&pair.socket(0), &["standby"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn seed_haresources_line_with_builtin_lvs_ipaddr_ipvsadm_ldirectord() {
    // The seed's line, unchanged but for the node and the address:
    // `loadbalancer lvs IPaddr::192.168.136.10/24/eth0 ipvsadm ldirectord`.
    let pair = DirectorPair::new(
        "fo5",
        "on",
        &format!("dir1 lvs IPaddr::{VIP}/24/eth0 ipvsadm ldirectord"),
    );
    std::fs::write(
        pair.ha.join("ldirectord.cf"),
        format!(
            "checkinterval=1\nvirtual={VIP}:8080\n    real=192.0.2.50:8080 masq\n    checktype=on\n"
        ),
    )
    .unwrap();
    pair.boot();
    // dir2 ran the group's stop side at no point; dir1 is director: VIP off lo.
    assert!(!pair.has_vip(0, "lo"));
    let r = pair
        .call(
            0,
            Request::Standby {
                class: GroupClass::All,
            },
        )
        .unwrap();
    assert!(r.ok);
    pair.wait_owner(1, "dir2", LIMIT);
    pair.wait_owner(0, "dir2", LIMIT);
    assert!(pair.has_vip(1, "eth0"));
    assert!(!pair.has_vip(1, "lo"), "director: VIP off the loopback");
    assert!(
        pair.has_vip(0, "lo"),
        "released side prepared as a real server"
    );
    let arp_ignore = pair
        .ns(0)
        .exec(&["cat", "/proc/sys/net/ipv4/conf/all/arp_ignore"]);
    assert_eq!(String::from_utf8_lossy(&arp_ignore.stdout).trim(), "1");
    // The director moved with the group: its rules are on dir2, gone from dir1.
    let table = |i: usize| {
        let out = pair.ns(i).exec(&[env!("CARGO_BIN_EXE_hactl"), "ipvs"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(table(1).contains(&format!("{VIP}:8080")), "{}", table(1));
    assert!(!table(0).contains(&format!("{VIP}:8080")), "{}", table(0));
    let st = pair.status(1).unwrap();
    assert_eq!(
        st.groups[0].resources.len(),
        4,
        "lvs, IPaddr, ipvsadm, ldirectord: {st:#?}"
    );
}

#[test]
fn vip_never_on_both_directors_while_heartbeats_flow() {
    let pair = DirectorPair::new("fo6", "on", &format!("dir1 IPaddr::{VIP}/24/eth0"));
    pair.boot();
    let stop = AtomicBool::new(false);
    // Each sample is (query sent, answer read, VIP present): the kernel's answer reflects
    // some instant inside that window, which under load can be milliseconds wide.
    let samples: Vec<Vec<(Instant, Instant, bool)>> = std::thread::scope(|s| {
        let samplers: Vec<_> = (0..2)
            .map(|i| {
                let ns = pair.ns(i);
                let stop = &stop;
                s.spawn(move || {
                    ns.run(|| async move {
                        let nl = hbd::net::addr::Netlink::connect().expect("netlink");
                        let vip = VIP.parse().unwrap();
                        let mut out = Vec::new();
                        let mut tick = tokio::time::interval(Duration::from_millis(10));
                        // Bounded: at most 60 s of samples.
                        for _ in 0..6000 {
                            tick.tick().await;
                            if stop.load(Ordering::SeqCst) {
                                break;
                            }
                            let sent = Instant::now();
                            let present = nl.has_address("eth0", vip).await.unwrap_or(false);
                            out.push((sent, Instant::now(), present));
                        }
                        out
                    })
                })
            })
            .collect();
        // A takeover / failback cycle, twice, while sampling; each state is held for a
        // while so the samplers see it.
        let dwell = || std::thread::sleep(Duration::from_millis(150));
        for _ in 0..2 {
            pair.call(
                1,
                Request::Takeover {
                    class: GroupClass::All,
                },
            );
            pair.wait_owner(0, "dir2", LIMIT);
            dwell();
            pair.call(
                0,
                Request::Takeover {
                    class: GroupClass::Local,
                },
            );
            pair.wait_owner(1, "dir1", LIMIT);
            dwell();
            pair.call(
                0,
                Request::Standby {
                    class: GroupClass::All,
                },
            );
            pair.wait_owner(0, "dir2", LIMIT);
            dwell();
            pair.call(
                1,
                Request::Standby {
                    class: GroupClass::All,
                },
            );
            pair.wait_owner(1, "dir1", LIMIT);
            dwell();
        }
        stop.store(true, Ordering::SeqCst);
        samplers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(samples[0].len() > 20 && samples[1].len() > 20);
    // A director that has the VIP somewhere in [s, e] while the other's last answer read
    // before s and first query sent after e both show it too means both held it in [s, e]
    // (a move between those two samples and back is impossible within 10 ms here).
    for (a, b) in [(0, 1), (1, 0)] {
        for (s, e, present) in &samples[a] {
            if !present {
                continue;
            }
            let before = samples[b].iter().rev().find(|(_, eb, _)| eb <= s);
            let after = samples[b].iter().find(|(sa, _, _)| sa >= e);
            if let (Some((_, eb, true)), Some((sa, _, true))) = (before, after) {
                panic!(
                    "VIP on both directors: dir{} has it within {s:?}..{e:?} and dir{} at {eb:?} \
                     and {sa:?}\n--- dir1 log:\n{}\n--- dir2 log:\n{}",
                    a + 1,
                    b + 1,
                    pair.log(0),
                    pair.log(1)
                );
            }
        }
    }
    let moves = samples[1].windows(2).filter(|w| w[0].2 != w[1].2).count();
    assert!(moves >= 4, "the sampler saw the VIP move ({moves} changes)");
}

#[test]
fn reload_applies_keys_and_refuses_group_changes() {
    let pair = DirectorPair::new("fo7", "on", &format!("dir1 IPaddr::{VIP}/24/eth0"));
    pair.boot();
    // Key rollover: both nodes learn key 2 while still signing with key 1 ...
    let keys = pair.ha.join("authkeys");
    std::fs::write(&keys, "auth 1\n1 sha256 failover-test\n2 sha256 next-key\n").unwrap();
    for i in 0..2 {
        let r = pair.call(i, Request::Reload).unwrap();
        assert!(r.ok, "{r:?}");
        assert!(r.message.unwrap().contains("authkeys"));
    }
    // ... then both switch to signing with key 2; the pair never loses sight of each other.
    std::fs::write(&keys, "auth 2\n1 sha256 failover-test\n2 sha256 next-key\n").unwrap();
    for i in 0..2 {
        assert!(pair.call(i, Request::Reload).unwrap().ok);
    }
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..2 {
        let s = pair.status(i).unwrap();
        assert!(s.nodes.iter().all(|n| n.status == "up"), "{s:#?}");
        assert_eq!(s.counters.bad_auth, 0);
    }
    // A group change needs a restart: refused, nothing applied.
    std::fs::write(
        pair.ha.join("haresources"),
        "dir2 IPaddr::192.0.2.99/24/eth0\n",
    )
    .unwrap();
    let r = pair.call(0, Request::Reload).unwrap();
    assert!(!r.ok);
    assert!(r.error.unwrap().contains("haresources groups"));
    // A broken file is refused with file:line, and the old configuration stays.
    std::fs::write(pair.ha.join("ha.cf"), "keepalive 20ms\ndeadtime 10ms\n").unwrap();
    let r = pair.call(0, Request::Reload).unwrap();
    assert!(!r.ok);
    assert!(r.error.unwrap().contains("ha.cf:2:"));
    pair.wait_owner(1, "dir1", LIMIT);
}

#[test]
fn shipped_lvs_script_as_a_heartbeat_resource() {
    // The seed's `lvs` script, as shipped in resources/, run through the heartbeat-class
    // script path (under another name, since hbd's built-in `lvs` comes first).
    let pair = DirectorPair::new(
        "fo8",
        "on",
        &format!("dir1 lvsscript::{VIP}::lo IPaddr::{VIP}/24/eth0"),
    );
    let rd = pair.ha.join("resource.d");
    std::fs::create_dir_all(&rd).unwrap();
    let script = rd.join("lvsscript");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("resources/lvs"),
        &script,
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    pair.boot();
    assert!(!pair.has_vip(0, "lo"));
    assert!(
        pair.call(
            0,
            Request::Standby {
                class: GroupClass::All
            }
        )
        .unwrap()
        .ok
    );
    pair.wait_owner(1, "dir2", LIMIT);
    pair.wait_owner(0, "dir2", LIMIT);
    assert!(
        pair.has_vip(0, "lo"),
        "script's stop made dir1 a real server"
    );
    assert!(!pair.has_vip(1, "lo"));
    assert_eq!(pair.ask_vip(), "dir2");
    let st = pair.status(1).unwrap();
    assert_eq!(st.groups[0].state, "running");
}
