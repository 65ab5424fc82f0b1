//! Two daemons joined by UDP and by a serial line: a pty pair joined by `socat` (the null-modem
//! cable of the test). With UDP cut by nftables the serial line alone keeps the pair
//! together and the group stays where it is; with the serial line cut too, the standby takes
//! the group over after deadtime.

use std::process::Stdio;
use std::time::{Duration, Instant};

use hbd::control::protocol::StatusReport;

use crate::control::{
    hactl, pair_logs, socket_in, spawn_hbd, status, wait_owner, wait_peer, write_ha_dir,
};
use crate::netns::{NetNs, pair, poll_every, wait_until};

const LIMIT: Duration = Duration::from_secs(10);
/// The ha.cf deadtime below.
const DEADTIME: Duration = Duration::from_millis(600);

/// The state of `peer`'s link whose name starts with `prefix`, as `report` shows it.
fn link_state(report: &StatusReport, peer: &str, prefix: &str) -> Option<String> {
    report
        .nodes
        .iter()
        .find(|n| n.name == peer)?
        .links
        .iter()
        .find(|l| l.name.starts_with(prefix))
        .map(|l| l.status.clone())
}

/// Runs `nft` with `args` inside `ns`; panics when it fails.
fn nft(ns: &NetNs, args: &[&str]) {
    let mut cmd = vec!["nft"];
    cmd.extend_from_slice(args);
    let out = ns.exec(&cmd);
    assert!(out.status.success(), "nft {args:?}: {out:?}");
}

#[test]
fn serial_line_keeps_the_pair_up_while_udp_is_cut_and_failover_follows_when_both_are() {
    let (n1, n2) = pair("ser", "192.0.2.11/24", "192.0.2.12/24");
    let dir = tempfile::tempdir().unwrap();
    let tty = |name: &str| dir.path().join(name);
    // The cable: two ptys joined by socat, killed with the namespace guard.
    let cable = n1.spawn(
        &[
            "socat".to_string(),
            format!("pty,link={},raw,echo=0", tty("ttyA").display()),
            format!("pty,link={},raw,echo=0", tty("ttyB").display()),
        ],
        Stdio::null(),
    );
    wait_until(Duration::from_secs(5), "socat's ptys", || {
        tty("ttyA").exists() && tty("ttyB").exists()
    });
    let mut sockets = Vec::new();
    let mut states = Vec::new();
    for (ns, node, device) in [(&n1, "n1", "ttyA"), (&n2, "n2", "ttyB")] {
        let ha = write_ha_dir(
            &dir.path().join(format!("ha-{node}")),
            &format!(
                "keepalive 100ms\ndeadtime 600ms\nwarntime 300ms\ninitdead 2\nudpport 694\n\
                 ucast eth0 192.0.2.11\nucast eth0 192.0.2.12\nbaud 115200\nserial {}\n\
                 auto_failback on\nnode n1\nnode n2\n",
                tty(device).display()
            ),
            "n1 IPaddr::192.0.2.10/24/eth0\n",
            "auth 1\n1 sha256 serial-test\n",
        );
        let state = dir.path().join(node);
        spawn_hbd(ns, &ha, node, &state, &["--no-realtime"]);
        sockets.push(socket_in(&state));
        states.push(state);
    }
    let logs = || pair_logs([&states[0], &states[1]]);
    wait_peer(&sockets[0], "n2", "up", LIMIT, logs);
    wait_peer(&sockets[1], "n1", "up", LIMIT, logs);
    wait_owner(&sockets[0], "n1", LIMIT, logs);
    // Both paths carry heartbeats: the serial link is up on both sides.
    for (i, peer) in [(0, "n2"), (1, "n1")] {
        let up = poll_every(Duration::from_millis(20), LIMIT, || {
            status(&sockets[i])
                .is_some_and(|r| link_state(&r, peer, "serial:").as_deref() == Some("up"))
        });
        assert!(up, "serial link to {peer} never up\n{}", logs());
    }
    // `hactl status` shows every medium, the serial line with its device open.
    let text = status_text(&sockets[0]);
    let serial_line = format!("open {} at 115200 baud", tty("ttyA").display());
    assert!(
        text.lines()
            .any(|l| l.starts_with("  serial:") && l.ends_with(&serial_line)),
        "{text}"
    );
    assert!(text.contains("  ucast:eth0:192.0.2.12"), "{text}");

    // Cut UDP (port 694 both ways) on n1's side.
    nft(&n1, &["add", "table", "inet", "hbdcut"]);
    for (chain, hook) in [("in", "input"), ("out", "output")] {
        nft(
            &n1,
            &[
                "add",
                "chain",
                "inet",
                "hbdcut",
                chain,
                &format!("{{ type filter hook {hook} priority 0 ; }}"),
            ],
        );
        nft(
            &n1,
            &[
                "add", "rule", "inet", "hbdcut", chain, "udp", "dport", "694", "drop",
            ],
        );
    }
    let udp_dead = poll_every(Duration::from_millis(20), LIMIT, || {
        status(&sockets[1])
            .is_some_and(|r| link_state(&r, "n1", "ucast").as_deref() == Some("dead"))
    });
    assert!(udp_dead, "n2 never saw the UDP link dead\n{}", logs());
    // Three deadtimes over the serial line alone: nobody dies, nothing moves.
    let until = Instant::now() + DEADTIME * 3;
    while Instant::now() < until {
        for (i, peer) in [(0, "n2"), (1, "n1")] {
            let r = status(&sockets[i]).expect("status");
            let node = r.nodes.iter().find(|n| n.name == peer).expect("peer");
            assert_eq!(
                node.status,
                "up",
                "{peer} seen {} over serial only\n{}",
                node.status,
                logs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_owner(&sockets[1], "n1", LIMIT, logs);

    // Cut the cable too: n2 declares n1 dead after deadtime and takes the group.
    let cut = Instant::now();
    // The PID is socat's, started above (the guard would end it anyway).
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(cable).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    );
    wait_peer(&sockets[1], "n1", "dead", LIMIT, logs);
    let took = cut.elapsed();
    assert!(
        took >= DEADTIME - Duration::from_millis(150),
        "n1 declared dead {took:?} after the cable was cut (deadtime {DEADTIME:?})"
    );
    wait_owner(&sockets[1], "n2", LIMIT, logs);
    // The cable's ptys are gone: the device is reported as retrying, with the error.
    let retrying = poll_every(Duration::from_millis(50), LIMIT, || {
        status_text(&sockets[1])
            .lines()
            .any(|l| l.starts_with("  serial:") && l.contains("RETRYING"))
    });
    assert!(
        retrying,
        "no RETRYING serial line in:\n{}",
        status_text(&sockets[1])
    );
}

/// `hactl status` (text) on `socket`.
fn status_text(socket: &std::path::Path) -> String {
    let out = hactl(socket, &["status"]);
    assert!(out.status.success(), "hactl status: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
