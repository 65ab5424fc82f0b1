//! Fencing end to end: a director whose hbd is SIGKILLed keeps the VIP up (nothing is left to
//! remove it); its peer fences it through the configured agent before taking the group over,
//! so the VIP is never on both. A failing agent leaves the group stopped and says so.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::netns::{Lan, poll_until};

const VIP: &str = "192.0.2.10";

/// `dir1` (192.0.2.11, preferred) and `dir2` (192.0.2.12) on one bridge, from one YAML file
/// whose fencing agent is `agent_body(dir1's namespace)` (a shell script; `$1` is the
/// action, `$2` the node).
struct FencedPair {
    lan: Lan,
    dir: tempfile::TempDir,
    yaml: PathBuf,
    pids: Vec<u32>,
}

impl FencedPair {
    fn new(prefix: &str, agent_body: impl FnOnce(&str) -> String) -> FencedPair {
        let lan = Lan::new(prefix, 2);
        for (i, addr) in ["192.0.2.11/24", "192.0.2.12/24"].iter().enumerate() {
            lan.hosts[i].ip(&["addr", "add", addr, "dev", "eth0"]);
        }
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("fence-agent");
        let body = agent_body(lan.hosts[0].name());
        std::fs::write(&agent, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
        let yaml = dir.path().join("hbd.yaml");
        std::fs::write(
            &yaml,
            format!(
                "nodes: [dir1, dir2]\n\
                 timing: {{ keepalive: 20ms, deadtime: 100ms, warntime: 60ms, initdead: 1s }}\n\
                 media:\n  - ucast: {{ interface: eth0, peer: 192.0.2.11 }}\n  \
                 - ucast: {{ interface: eth0, peer: 192.0.2.12 }}\n\
                 auth: {{ keys: [ {{ id: 1, method: sha256, key: fencing-test }} ] }}\n\
                 auto_failback: on\n\
                 groups:\n  - preferred: dir1\n    resources: [\"IPaddr::{VIP}/24/eth0\"]\n\
                 fencing:\n  agent: {}\n  timeout: 5s\n  attempts: 2\n",
                agent.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&yaml, std::fs::Permissions::from_mode(0o600)).unwrap();
        FencedPair {
            lan,
            dir,
            yaml,
            pids: Vec::new(),
        }
    }

    fn name(i: usize) -> &'static str {
        ["dir1", "dir2"][i]
    }

    fn state(&self, i: usize) -> PathBuf {
        self.dir.path().join(Self::name(i))
    }

    fn start(&mut self, i: usize) {
        let pid = crate::control::spawn_hbd(
            &self.lan.hosts[i],
            &self.yaml,
            Self::name(i),
            &self.state(i),
            &[],
        );
        self.pids.push(pid);
    }

    fn has_vip(&self, i: usize) -> bool {
        self.lan.hosts[i]
            .ip(&["-o", "-4", "addr", "show", "dev", "eth0"])
            .contains(&format!("inet {VIP}/"))
    }

    fn logs(&self) -> String {
        format!(
            "log dir1:\n{}\nlog dir2:\n{}",
            crate::control::log_in(&self.state(0)),
            crate::control::log_in(&self.state(1))
        )
    }

    fn wait_owner(&self, i: usize, owner: &str) {
        crate::control::wait_owner(
            &crate::control::socket_in(&self.state(i)),
            owner,
            Duration::from_secs(10),
            || self.logs(),
        );
    }

    /// SIGKILLs dir1's hbd: its VIP stays up, as after a crash.
    fn crash_dir1(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.pids[0]).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
}

/// An agent that "powers off" dir1 the only way a namespace can be: its VIP is removed.
fn resetting_agent(dir1: &str, log: &std::path::Path) -> String {
    format!(
        "echo \"$1 $2\" >> '{}'\n\
         ip netns exec {dir1} ip addr del {VIP}/24 dev eth0 2>/dev/null\n\
         exit 0",
        log.display()
    )
}

#[test]
fn a_crashed_holder_is_fenced_before_its_peer_takes_the_vip() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("fenced");
    let mut p = FencedPair::new("fen", |dir1| resetting_agent(dir1, &log));
    p.start(0);
    p.start(1);
    p.wait_owner(1, "dir1");
    assert!(p.has_vip(0) && !p.has_vip(1));

    // Sample every 10 ms from the crash until dir2 holds the group.
    let stop = AtomicBool::new(false);
    let (both, samples) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let (mut both, mut n) = (0, 0);
            for _ in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // dir2 first: it may gain the VIP only after dir1 lost it, so dir2 holding it
                // and then dir1 still holding it is a real overlap, never two reads taken at
                // different instants of a clean hand-over.
                if p.has_vip(1) && p.has_vip(0) {
                    both += 1;
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (both, n)
        });
        p.crash_dir1();
        p.wait_owner(1, "dir2");
        stop.store(true, Ordering::Relaxed);
        sampler.join().unwrap()
    });
    assert!(samples > 0);
    assert_eq!(
        both, 0,
        "the VIP was on both directors in {both} of {samples} samples"
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "reset dir1\n",
        "{}",
        p.logs()
    );
    assert!(p.has_vip(1) && !p.has_vip(0));
    let status = crate::control::status(&crate::control::socket_in(&p.state(1))).unwrap();
    assert_eq!(
        status.fencing.as_deref(),
        Some("dir1 fenced"),
        "{status:#?}"
    );
}

#[test]
fn a_failing_fence_agent_leaves_the_group_stopped_and_says_so() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("tries");
    let mut p = FencedPair::new("fef", |_| {
        format!(
            "echo \"$1 $2\" >> '{}'; echo 'power switch unreachable' >&2; exit 1",
            log.display()
        )
    });
    p.start(0);
    p.start(1);
    p.wait_owner(1, "dir1");
    p.crash_dir1();
    let socket = crate::control::socket_in(&p.state(1));
    let mut last = None;
    let failed = poll_until(Duration::from_secs(10), || {
        last = crate::control::status(&socket);
        last.as_ref()
            .and_then(|s| s.fencing.as_deref())
            .is_some_and(|f| f.starts_with("FENCING dir1 FAILED"))
    });
    assert!(failed, "{last:#?}\n{}", p.logs());
    let status = last.unwrap();
    let fencing = status.fencing.as_deref().unwrap();
    assert!(fencing.contains("power switch unreachable"), "{fencing}");
    assert_eq!(status.groups[0].state, "failed", "{status:#?}");
    assert!(!p.has_vip(1), "dir2 took the VIP without fencing dir1");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "reset dir1\nreset dir1\n",
        "both attempts ran"
    );
    assert!(
        crate::control::log_in(&p.state(1)).contains("FENCING FAILED"),
        "{}",
        p.logs()
    );
}
