//! Hostile-network defects of issue #15 that only real sockets show: a peer returning
//! after one-way heartbeat loss is noticed within a keepalive (its answers wait on the
//! twin socket, which the node now reads while a peer is down), and the split brain the
//! loss caused is resolved and logged on the heal; 1,100 idle control connections under a
//! 1,024-descriptor limit neither keep `hactl status` from an answer nor a failover from
//! starting the VIP.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hbd::control::protocol::Request;

use crate::control::{
    call, log_in, pair_logs, socket_in, spawn_hbd, wait_owner, wait_peer, write_ha_dir,
};
use crate::netns::{NetNs, pair, poll_until};

const KEEPALIVE_MS: u64 = 100;
const DEADTIME_MS: u64 = 500;

/// Runs `nft` with `args` inside `ns`; panics when it fails.
fn nft(ns: &NetNs, args: &[&str]) {
    let mut cmd = vec!["nft"];
    cmd.extend_from_slice(args);
    let out = ns.exec(&cmd);
    assert!(out.status.success(), "nft {args:?}: {out:?}");
}

fn ha_dir(dir: &Path) -> PathBuf {
    write_ha_dir(
        dir,
        &format!(
            "keepalive {KEEPALIVE_MS}ms\ndeadtime {DEADTIME_MS}ms\nwarntime 300ms\n\
             initdead 2\nudpport 694\nucast eth0 192.0.2.11\nucast eth0 192.0.2.12\n\
             auto_failback on\nnode n1\nnode n2\n"
        ),
        "n1 192.0.2.100/24/eth0\n",
        "auth 2\n2 sha256 e2e-hostile-key\n",
    )
}

#[test]
fn a_peer_back_from_one_way_loss_is_noticed_within_a_keepalive_and_the_split_brain_resolved() {
    let (a, b) = pair("hos", "192.0.2.11/24", "192.0.2.12/24");
    let dir = tempfile::tempdir().unwrap();
    let ha = ha_dir(&dir.path().join("ha"));
    let state = |node: &str| dir.path().join(node);
    spawn_hbd(&a, &ha, "n1", &state("n1"), &[]);
    spawn_hbd(&b, &ha, "n2", &state("n2"), &[]);
    let (s1, s2) = (socket_in(&state("n1")), socket_in(&state("n2")));
    let logs = || pair_logs([&state("n1"), &state("n2")]);
    wait_peer(&s2, "n1", "up", Duration::from_secs(5), logs);
    wait_owner(&s1, "n1", Duration::from_secs(5), logs);

    // One-way loss: n2 stops hearing n1 (n1 still hears n2) until n2 declares n1 dead
    // and takes the group, and a while longer.
    nft(&b, &["add", "table", "inet", "hostile"]);
    nft(
        &b,
        &[
            "add", "chain", "inet", "hostile", "in", "{", "type", "filter", "hook", "input",
            "priority", "0", ";", "}",
        ],
    );
    nft(
        &b,
        &[
            "add",
            "rule",
            "inet",
            "hostile",
            "in",
            "ip",
            "saddr",
            "192.0.2.11",
            "udp",
            "dport",
            "694",
            "drop",
        ],
    );
    wait_peer(&s2, "n1", "dead", Duration::from_secs(5), logs);
    wait_owner(&s2, "n2", Duration::from_secs(5), logs);
    std::thread::sleep(Duration::from_secs(1));

    nft(&b, &["delete", "table", "inet", "hostile"]);
    let healed = Instant::now();
    wait_peer(&s2, "n1", "up", Duration::from_secs(10), logs);
    let took = healed.elapsed();
    eprintln!("n1 noticed {took:?} after the heal");
    // One keepalive for n1's next heartbeat, plus the status poll and scheduling.
    let bound = Duration::from_millis(2 * KEEPALIVE_MS);
    assert!(
        took <= bound,
        "n1 noticed {took:?} after the heal (bound {bound:?})\n{}",
        logs()
    );
    // n1 (preferred, auto_failback on) keeps the group; n2 releases it and says why.
    wait_owner(&s2, "n1", Duration::from_secs(5), logs);
    assert!(
        poll_until(Duration::from_secs(5), || log_in(&state("n2"))
            .contains("SPLIT BRAIN")),
        "n2 logs the split brain\n{}",
        logs()
    );
}

/// Opens `n` connections to `socket` on a thread and hands them back, or `None` if that
/// takes longer than `limit` (a daemon that stopped accepting fills its backlog).
fn idle_connections(socket: &Path, n: usize, limit: Duration) -> Option<Vec<UnixStream>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        let streams: Vec<UnixStream> = (0..n)
            .filter_map(|_| UnixStream::connect(&socket).ok())
            .collect();
        let _ = tx.send(streams);
    });
    rx.recv_timeout(limit).ok()
}

#[test]
fn idle_control_connections_under_a_low_file_limit_neither_block_status_nor_failover() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // The test holds 1,100 client ends: give it room (root may raise its hard limit).
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, 8192, hard.max(8192)).unwrap();

    let (a, b) = pair("hfd", "192.0.2.11/24", "192.0.2.12/24");
    let dir = tempfile::tempdir().unwrap();
    let ha = ha_dir(&dir.path().join("ha"));
    let state = |node: &str| dir.path().join(node);
    let n1 = spawn_hbd(&a, &ha, "n1", &state("n1"), &[]);
    let n2 = spawn_hbd(&b, &ha, "n2", &state("n2"), &[]);
    let s2 = socket_in(&state("n2"));
    let logs = || pair_logs([&state("n1"), &state("n2")]);
    wait_peer(&s2, "n1", "up", Duration::from_secs(5), logs);
    wait_owner(&s2, "n1", Duration::from_secs(5), logs);

    // The standby runs under `ulimit -n 1024` (soft and hard, so it cannot raise it).
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &n2.to_string(), "--nofile=1024:1024"])
        .output()
        .unwrap();
    assert!(out.status.success(), "prlimit: {out:?}");
    let idle = idle_connections(&s2, 1100, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("1,100 connections not accepted within 20 s\n{}", logs()));
    assert_eq!(idle.len(), 1100);

    let asked = Instant::now();
    let status = call(&s2, &Request::Status, Duration::from_secs(3));
    assert!(
        status.is_some_and(|r| r.ok),
        "hactl status unanswered with 1,100 idle connections\n{}",
        logs()
    );
    eprintln!(
        "status answered in {:?} beside 1,100 idle connections",
        asked.elapsed()
    );

    // Failover still finds the descriptors it needs: kill n1, n2 starts the VIP.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(n1).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    );
    wait_owner(&s2, "n2", Duration::from_secs(5), logs);
    let addrs = b.ip(&["-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("192.0.2.100/24"), "{addrs}\n{}", logs());
    let log = log_in(&state("n2"));
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(log.len() < 1 << 20, "n2 wrote {} bytes of log", log.len());
    drop(idle);
}
