//! Reachability drives failover in a real pair: two daemons and a "router" namespace holding
//! the ping node on one LAN. When the active director loses its path to the router, the
//! group moves to the standby within deadping + ping_hysteresis; when the path returns, it
//! moves back (auto_failback on) once the take-back hold is served, or stays (auto_failback
//! off); cutting both directors' paths moves nothing; a path that flaps every 300 ms for 10 s
//! moves the group at most once. `hactl status` shows the target and both nodes' counts.

use std::time::{Duration, Instant};

use std::path::{Path, PathBuf};

use crate::control::{
    hactl, pair_logs, socket_in, spawn_hbd, status, wait_owner, wait_peer, write_ha_dir,
};
use crate::netns::{Lan, NetNs, poll_every};

const LIMIT: Duration = Duration::from_secs(10);
const DEADPING: Duration = Duration::from_millis(200);
const HYSTERESIS: Duration = Duration::from_millis(400);

/// Drops `ns`'s ICMP to and from the router (192.0.2.1), or lets it through again.
fn cut_router(ns: &NetNs, cut: bool) {
    let script = if cut {
        "add table inet hbdping\n\
         add chain inet hbdping out { type filter hook output priority 0 ; }\n\
         add rule inet hbdping out ip daddr 192.0.2.1 icmp type echo-request drop\n"
    } else {
        "delete table inet hbdping\n"
    };
    let out = ns.exec(&["sh", "-c", &format!("printf '{script}' | nft -f -")]);
    assert!(out.status.success(), "nft: {out:?}");
}

/// A director pair (n1 holding 192.0.2.10) and a router (192.0.2.1, the ping node) on one
/// LAN, both daemons up and n1 holding the group.
struct PingLab {
    lan: Lan,
    _dir: tempfile::TempDir,
    states: Vec<PathBuf>,
    sockets: Vec<PathBuf>,
}

impl PingLab {
    fn new(prefix: &str, auto_failback: &str) -> PingLab {
        let lan = Lan::new(prefix, 3);
        for (i, addr) in ["192.0.2.11/24", "192.0.2.12/24", "192.0.2.1/24"]
            .iter()
            .enumerate()
        {
            lan.hosts[i].ip(&["addr", "add", addr, "dev", "eth0"]);
        }
        let dir = tempfile::tempdir().unwrap();
        let ha = write_ha_dir(
            dir.path(),
            &format!(
                "keepalive 20ms\ndeadtime 100ms\nwarntime 60ms\ninitdead 1\nudpport 694\n\
                 ucast eth0 192.0.2.11\nucast eth0 192.0.2.12\nping 192.0.2.1\ndeadping 200ms\n\
                 ping_hysteresis 400ms\nauto_failback {auto_failback}\nnode n1\nnode n2\n"
            ),
            "n1 IPaddr::192.0.2.10/24/eth0\n",
            "auth 1\n1 sha256 ipfail-test\n",
        );
        let states: Vec<_> = ["n1", "n2"].iter().map(|n| dir.path().join(n)).collect();
        for (i, node) in ["n1", "n2"].iter().enumerate() {
            spawn_hbd(&lan.hosts[i], &ha, node, &states[i], &["--no-realtime"]);
        }
        let sockets: Vec<_> = states.iter().map(|s| socket_in(s)).collect();
        let lab = PingLab {
            lan,
            _dir: dir,
            states,
            sockets,
        };
        let logs = || lab.logs();
        wait_peer(&lab.sockets[0], "n2", "up", LIMIT, logs);
        wait_owner(&lab.sockets[0], "n1", LIMIT, logs);
        wait_owner(&lab.sockets[1], "n1", LIMIT, logs);
        // Both reach the router: wait until each knows both counts (its own and the peer's,
        // from the peer's heartbeats).
        for s in &lab.sockets {
            let known = poll_every(Duration::from_millis(20), LIMIT, || {
                status(s)
                    .and_then(|r| r.reachability)
                    .is_some_and(|r| r.policy.local.is_some() && r.policy.peer.is_some())
            });
            assert!(known, "counts never known\n{}", lab.logs());
        }
        wait_owner(&lab.sockets[1], "n1", LIMIT, logs);
        lab
    }

    fn logs(&self) -> String {
        pair_logs([&self.states[0], &self.states[1]])
    }

    /// Which director has the VIP configured now (the kernel's word, not hbd's).
    fn vip_holder(&self) -> Option<usize> {
        (0..2).find(|&i| {
            self.lan.hosts[i]
                .ip(&["-o", "-4", "addr", "show", "dev", "eth0"])
                .contains(" 192.0.2.10/")
        })
    }
}

/// `hactl status` (text) on `socket`.
fn status_text(socket: &Path) -> String {
    let out = hactl(socket, &["status"]);
    assert!(out.status.success(), "hactl status: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_director_that_loses_its_upstream_hands_the_vip_over_and_gets_it_back() {
    let lab = PingLab::new("ipf", "on");
    let (lan, sockets) = (&lab.lan, &lab.sockets);
    let logs = || lab.logs();
    // The operator sees the ping node and both nodes' counts.
    let text = status_text(&sockets[0]);
    assert!(
        text.contains("n1 (this node) reaches 1 of 1; n2 reaches 1 of 1"),
        "{text}"
    );
    assert!(
        text.contains("this node is equal (nothing moves)"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("  ping       192.0.2.1") && l.contains(" up ")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("  ucast:eth0:192.0.2.12") && l.contains("192.0.2.12:694")),
        "{text}"
    );

    // n1 loses its upstream: the group moves to n2 within deadping + hysteresis (+ margin
    // for the probe interval and one heartbeat exchange).
    let lost = Instant::now();
    cut_router(&lan.hosts[0], true);
    wait_owner(&sockets[1], "n2", LIMIT, logs);
    let took = lost.elapsed();
    assert!(
        took <= DEADPING + HYSTERESIS + Duration::from_millis(300),
        "moved {took:?} after the cut (deadping {DEADPING:?} + hysteresis {HYSTERESIS:?})\n{}",
        logs()
    );
    wait_owner(&sockets[0], "n2", LIMIT, logs);
    eprintln!("ipfail: group on n2 {took:?} after n1 lost its upstream");
    let text = status_text(&sockets[1]);
    assert!(
        text.contains("n2 (this node) reaches 1 of 1; n1 reaches 0 of 1"),
        "{text}"
    );
    assert!(text.contains("this node is better than the peer"), "{text}");

    // The upstream returns: the group comes back (auto_failback on) after the hold.
    let restored = Instant::now();
    cut_router(&lan.hosts[0], false);
    wait_owner(&sockets[0], "n1", LIMIT, logs);
    let back = restored.elapsed();
    assert!(
        back >= HYSTERESIS * 4,
        "back {back:?} after the restore, before the take-back hold\n{}",
        logs()
    );
    wait_owner(&sockets[1], "n1", LIMIT, logs);
    eprintln!("ipfail: group back on n1 {back:?} after the upstream returned");

    // Both lose the upstream: equal reach moves nothing.
    cut_router(&lan.hosts[0], true);
    cut_router(&lan.hosts[1], true);
    std::thread::sleep(DEADPING + HYSTERESIS * 3);
    wait_owner(&sockets[0], "n1", Duration::from_millis(100), logs);
    wait_owner(&sockets[1], "n1", Duration::from_millis(100), logs);
}

#[test]
fn with_auto_failback_off_the_group_stays_on_the_standby_after_the_upstream_returns() {
    let lab = PingLab::new("ipo", "off");
    let logs = || lab.logs();
    cut_router(&lab.lan.hosts[0], true);
    wait_owner(&lab.sockets[1], "n2", LIMIT, logs);
    wait_owner(&lab.sockets[0], "n2", LIMIT, logs);
    cut_router(&lab.lan.hosts[0], false);
    // Both counts equal again; the take-back hold passes; nothing moves without auto_failback.
    let equal = poll_every(Duration::from_millis(20), LIMIT, || {
        status(&lab.sockets[0])
            .and_then(|r| r.reachability)
            .is_some_and(|r| r.policy.standing == hbd::reachability::Standing::Equal)
    });
    assert!(equal, "n1 never as good as n2 again\n{}", lab.logs());
    let until = Instant::now() + HYSTERESIS * 4 + Duration::from_secs(1);
    while Instant::now() < until {
        assert_eq!(lab.vip_holder(), Some(1), "the VIP left n2\n{}", lab.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_owner(&lab.sockets[0], "n2", Duration::from_millis(100), logs);
}

#[test]
fn an_upstream_flapping_every_300_ms_for_10_s_moves_the_vip_at_most_once() {
    let lab = PingLab::new("ipx", "on");
    assert_eq!(
        lab.vip_holder(),
        Some(0),
        "n1 holds the VIP\n{}",
        lab.logs()
    );
    let flap = Duration::from_millis(300);
    let start = Instant::now();
    let mut holders = vec![0];
    let mut cut = false;
    // 10 s of flapping: toggle the path every 300 ms, sample the VIP in between.
    for _ in 0..(10_000 / 300) {
        cut = !cut;
        cut_router(&lab.lan.hosts[0], cut);
        let next = Instant::now() + flap;
        while Instant::now() < next {
            if let Some(h) = lab.vip_holder()
                && holders.last() != Some(&h)
            {
                holders.push(h);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if cut {
        cut_router(&lab.lan.hosts[0], false);
    }
    let moves = holders.len() - 1;
    eprintln!(
        "ipfail: {moves} move(s) in {:?} of flapping (holders {holders:?})",
        start.elapsed()
    );
    assert!(
        moves <= 1,
        "the VIP moved {moves} times while the upstream flapped (holders {holders:?})\n{}",
        lab.logs()
    );
}
