//! Two real `hbd` daemons in network namespaces: they see each other over ucast and over
//! mcast, and one is declared dead within deadtime + one keepalive of its link going down.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::control::wait_peer;
use crate::netns::{NetNs, pair};

const KEEPALIVE_MS: u64 = 100;
const DEADTIME_MS: u64 = 400;

/// A two-director lab: namespaces `a` (192.0.2.11) and `b` (192.0.2.12) joined by a veth
/// pair named `eth0` on both sides, and a private work directory.
struct Pair {
    a: NetNs,
    b: NetNs,
    dir: tempfile::TempDir,
}

impl Pair {
    fn new(prefix: &str) -> Pair {
        let (a, b) = pair(prefix, "192.0.2.11/24", "192.0.2.12/24");
        Pair {
            a,
            b,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Writes a Linux-HA directory shared by both nodes with the given media lines.
    fn write_ha_dir(&self, media: &str) -> PathBuf {
        crate::control::write_ha_dir(
            self.dir.path(),
            &format!(
                "keepalive {KEEPALIVE_MS}ms\ndeadtime {DEADTIME_MS}ms\nwarntime 200ms\n\
                 initdead 2\nudpport 694\n{media}\nauto_failback on\nnode n1\nnode n2\n"
            ),
            "n1 192.0.2.100/24/eth0\n",
            "auth 2\n2 sha256 e2e-test-key\n",
        )
    }

    fn socket(&self, node: &str) -> PathBuf {
        crate::control::socket_in(&self.dir.path().join(node))
    }

    fn start(&self, ns: &NetNs, node: &str, ha_dir: &Path) -> u32 {
        crate::control::spawn_hbd(ns, ha_dir, node, &self.dir.path().join(node), &[])
    }

    fn log(&self, node: &str) -> String {
        crate::control::log_in(&self.dir.path().join(node))
    }
}

fn see_each_other_then_detect_death(prefix: &str, media: &str) {
    let pair = Pair::new(prefix);
    let ha = pair.write_ha_dir(media);
    let n1 = pair.start(&pair.a, "n1", &ha);
    pair.start(&pair.b, "n2", &ha);
    let s1 = pair.socket("n1");
    let s2 = pair.socket("n2");
    let r1 = wait_peer(&s1, "n2", "up", Duration::from_secs(5), || pair.log("n1"));
    // The heartbeat thread runs realtime like the process (SCHED_RESET_ON_FORK resets new
    // threads, so it must ask for it).
    assert_eq!(
        crate::control::thread_policy(n1, "hbd-node"),
        Some(1),
        "hbd-node is not SCHED_FIFO; log:\n{}",
        pair.log("n1")
    );
    let r2 = wait_peer(&s2, "n1", "up", Duration::from_secs(5), || pair.log("n2"));
    for (r, peer) in [(&r1, "n2"), (&r2, "n1")] {
        let node = r.nodes.iter().find(|n| n.name == peer).unwrap();
        assert!(!node.links.is_empty());
        assert!(
            node.links.iter().all(|l| l.status == "up"),
            "links: {:?}",
            node.links
        );
        assert_eq!(r.counters.bad_auth, 0);
        assert_eq!(r.groups.len(), 1);
    }

    // Cut n1's link and time how long n2 takes to declare it dead.
    let cut = Instant::now();
    pair.a.ip(&["link", "set", "eth0", "down"]);
    let r = wait_peer(&s2, "n1", "dead", Duration::from_secs(5), || pair.log("n2"));
    let took = cut.elapsed();
    let bound = Duration::from_millis(DEADTIME_MS + KEEPALIVE_MS);
    assert!(
        took <= bound,
        "n1 declared dead {took:?} after its link went down (bound {bound:?})"
    );
    let node = r.nodes.iter().find(|n| n.name == "n1").unwrap();
    assert!(node.links.iter().all(|l| l.status == "dead"), "{node:?}");
    assert!(
        pair.log("n2").contains("node is dead"),
        "{}",
        pair.log("n2")
    );

    // The link comes back: n1 is up again.
    pair.a.ip(&["link", "set", "eth0", "up"]);
    wait_peer(&s2, "n1", "up", Duration::from_secs(5), || pair.log("n2"));
}

#[test]
fn two_daemons_over_ucast() {
    see_each_other_then_detect_death("hbu", "ucast eth0 192.0.2.11\nucast eth0 192.0.2.12");
}

#[test]
fn two_daemons_over_mcast() {
    see_each_other_then_detect_death("hbm", "mcast eth0 239.0.2.94 694 1 0");
}

#[test]
fn two_daemons_over_bcast() {
    see_each_other_then_detect_death("hbb", "bcast eth0");
}
