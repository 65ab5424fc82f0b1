//! Test support: start `hbd` (or the lab web server, `examples/labweb`) in a namespace, and
//! send it one control request.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use hbd::control::client;
use hbd::control::protocol::{Request, Response, StatusReport};

use crate::netns::{Lan, NetNs, poll_every};

/// Sends `request` to the daemon at `socket`; `None` if it does not answer within `timeout`.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Option<Response> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(client::call(socket, request, timeout)).ok()
}

/// Starts `hbd --ha-dir HA --node-name NODE --state-dir STATE --socket STATE/hbd.sock EXTRA…`
/// inside `ns`, appending its log to STATE/log. The namespace guard kills it (by PID) when it
/// drops; the PID is returned for tests that kill it earlier. A path ending in `.yaml` is
/// passed as `--config` instead.
pub fn spawn_hbd(ns: &NetNs, ha: &Path, node: &str, state: &Path, extra: &[&str]) -> u32 {
    let source = if ha.extension().is_some_and(|e| e == "yaml") {
        "--config"
    } else {
        "--ha-dir"
    };
    std::fs::create_dir_all(state).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.join("log"))
        .unwrap();
    let socket = socket_in(state);
    let mut cmd: Vec<&OsStr> = vec![
        OsStr::new(env!("CARGO_BIN_EXE_hbd")),
        OsStr::new(source),
        ha.as_os_str(),
        OsStr::new("--node-name"),
        OsStr::new(node),
        OsStr::new("--state-dir"),
        state.as_os_str(),
        OsStr::new("--socket"),
        socket.as_os_str(),
    ];
    cmd.extend(extra.iter().map(OsStr::new));
    ns.spawn(&cmd, Stdio::from(log))
}

/// The scheduling policy (0 = `SCHED_OTHER`, 1 = `SCHED_FIFO`) of `pid`'s thread named
/// `comm`, if it has one: field 41 of `/proc/PID/task/TID/stat`, which every kernel has
/// (`…/sched` needs CONFIG_SCHED_DEBUG).
pub fn thread_policy(pid: u32, comm: &str) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if name.trim() != comm {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        return stat_policy(&stat);
    }
    None
}

/// Field 41 (policy) of a `/proc/…/stat` line. Field 2, the command name, is in parentheses
/// and may itself hold spaces and ')': the fields are counted after the last ')', where
/// field 3 comes first.
fn stat_policy(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(41 - 3)?.parse().ok()
}

#[test]
fn stat_policy_counts_fields_after_the_last_parenthesis() {
    // A real line (kernel 6.x) for a SCHED_FIFO thread whose name holds ") (".
    let line = "4242 (a) (b c) S 1 4242 4242 0 -1 4194624 150 0 0 0 1 2 0 0 -51 0 3 0 \
                12345 1000000 200 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 50 1 \
                0 0 0 0 0 0 0 0 0 0 0\n";
    assert_eq!(stat_policy(line), Some(1));
    assert_eq!(stat_policy(&line.replace(" 50 1 ", " 0 0 ")), Some(0));
    assert_eq!(stat_policy("4242 (truncated) S 1"), None);
    // This kernel's own line has the field (whatever policy the test runs under).
    let own = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    assert!(stat_policy(&own).is_some(), "{own}");
}

/// Starts `examples/labweb --listen LISTEN --name NAME` (a web server answering its own
/// name) inside `ns`; the namespace guard kills it, and its PID is returned for tests that
/// kill it earlier.
pub fn spawn_labweb(ns: &NetNs, listen: &str, name: &str) -> u32 {
    let labweb = example_bin("labweb");
    let cmd = [
        labweb.to_str().expect("a UTF-8 target path"),
        "--listen",
        listen,
        "--name",
        name,
    ];
    ns.spawn(&cmd, Stdio::null())
}

/// The director lab's LAN: `dir1` (192.0.2.11) and `dir2` (192.0.2.12), each running
/// examples/labweb on :80 answering its own name, and a client (192.0.2.100), on one bridge.
pub fn director_lan(prefix: &str) -> Lan {
    let lan = Lan::new(prefix, 3);
    for (i, addr) in ["192.0.2.11/24", "192.0.2.12/24", "192.0.2.100/24"]
        .iter()
        .enumerate()
    {
        lan.hosts[i].ip(&["addr", "add", addr, "dev", "eth0"]);
    }
    for (i, name) in ["dir1", "dir2"].iter().enumerate() {
        spawn_labweb(&lan.hosts[i], "0.0.0.0:80", name);
    }
    lan
}

/// The path of the lab helper `examples/NAME.rs`, built beside this test binary
/// (`target/PROFILE/examples/NAME`). Lab helpers are examples, not product binaries, so cargo
/// gives tests no `CARGO_BIN_EXE_` for them, and `cargo test --all-targets` builds examples only
/// as test harnesses: `cargo build --examples` first (scripts/test.sh does); a missing one
/// fails loudly.
pub fn example_bin(name: &str) -> PathBuf {
    // The test binary is target/PROFILE/deps/e2e-HASH.
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/PROFILE/deps");
    let bin = profile.join("examples").join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build the lab helpers with `cargo build --examples` \
         (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Runs `hactl --socket SOCK ARGS…` (outside any namespace) and returns what it did.
pub fn hactl(sock: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hactl"))
        .arg("--socket")
        .arg(sock)
        .args(args)
        .output()
        .expect("run hactl")
}

/// Writes a Linux-HA directory `DIR/ha.d` with these `ha.cf`, `haresources` and `authkeys`
/// (mode 0600: hbd refuses a key file others can read, as heartbeat does) and returns it.
pub fn write_ha_dir(dir: &Path, ha_cf: &str, haresources: &str, authkeys: &str) -> PathBuf {
    let ha = dir.join("ha.d");
    std::fs::create_dir_all(&ha).unwrap();
    std::fs::write(ha.join("ha.cf"), ha_cf).unwrap();
    std::fs::write(ha.join("haresources"), haresources).unwrap();
    let keys = ha.join("authkeys");
    std::fs::write(&keys, authkeys).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    ha
}

/// The log of a daemon started by [`spawn_hbd`] with state directory `state` (empty if none
/// yet).
pub fn log_in(state: &Path) -> String {
    std::fs::read_to_string(state.join("log")).unwrap_or_default()
}

/// The logs of the pair n1 and n2 started by [`spawn_hbd`] with state directories `states`,
/// for a failed assertion's message.
pub fn pair_logs(states: [&Path; 2]) -> String {
    format!("n1:\n{}\nn2:\n{}", log_in(states[0]), log_in(states[1]))
}

/// The control socket of a daemon started by [`spawn_hbd`] with state directory `state`.
pub fn socket_in(state: &Path) -> PathBuf {
    state.join("hbd.sock")
}

/// The daemon's status report; `None` if it does not answer within 3 s.
pub fn status(socket: &Path) -> Option<StatusReport> {
    call(socket, &Request::Status, Duration::from_secs(3))?.status
}

/// Whether `report` shows `peer` as `wanted`: a status (`init`, `up`, `dead`) or `active`,
/// heartbeat's finer state of an `up` node that said it is active (`cl_status nodestatus`
/// prints it; the report's `status` field folds it into `up`).
fn peer_is(report: &StatusReport, peer: &str, wanted: &str) -> bool {
    report
        .nodes
        .iter()
        .find(|n| n.name == peer)
        .is_some_and(|n| {
            if wanted == "active" {
                n.state == wanted
            } else {
                n.status == wanted
            }
        })
}

/// Polls `socket` (every millisecond, as tests time it, at most `limit`) until `peer` is
/// `wanted` (a status, or `active`: see [`peer_is`]), and returns that report. Panics with the last status and `logs()`
/// otherwise.
pub fn wait_peer(
    socket: &Path,
    peer: &str,
    wanted: &str,
    limit: Duration,
    logs: impl Fn() -> String,
) -> StatusReport {
    let mut last = None;
    let seen = poll_every(Duration::from_millis(1), limit, || {
        let Some(r) = status(socket) else {
            return false;
        };
        let done = peer_is(&r, peer, wanted);
        last = Some(r);
        done
    });
    match last {
        Some(report) if seen => report,
        _ => panic!(
            "{} never saw {peer} {wanted} within {limit:?}; last status {last:#?}\n{}",
            socket.display(),
            logs()
        ),
    }
}

/// Waits (at most `limit`) until the daemon at `socket` reports `owner` as the owner of its
/// first group, running it exactly when it is itself `owner`. Panics with the last status
/// and `logs()` otherwise.
pub fn wait_owner(socket: &Path, owner: &str, limit: Duration, logs: impl Fn() -> String) {
    let mut last = None;
    let seen = poll_every(Duration::from_millis(5), limit, || {
        let Some(s) = status(socket) else {
            return false;
        };
        let g = &s.groups[0];
        let done = g.owner.as_deref() == Some(owner) && (g.state == "running") == (s.node == owner);
        last = Some(s);
        done
    });
    assert!(
        seen,
        "{} never saw {owner} own and run the group; last status {last:#?}\n{}",
        socket.display(),
        logs()
    );
}
