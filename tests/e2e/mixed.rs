//! A real heartbeat 3.0.6 node and hbd as one cluster (issue #14).
//!
//! Node `node1` runs Debian's `heartbeat` package, node `node2` runs hbd, with the same ha.cf,
//! authkeys and haresources (ucast, HMAC-SHA1, a VIP group). Each node lives in its own
//! network namespace (a veth pair `eth0`, 192.0.2.11 and 192.0.2.12). The heartbeat node also
//! gets its own hostname, mount and PID namespace (`unshare --uts --mount --pid --fork
//! --kill-child`): an init script (written by the test) mounts a tmpfs over `/run` and binds the
//! test's own `ha.d`, `/var/lib/heartbeat` directories over the system ones, then runs heartbeat
//! in the foreground. The `unshare` process is registered with the namespace guard; killing it
//! (SIGKILL) kills the PID namespace's init through `--kill-child`, and with it every heartbeat
//! process, so nothing outlives the test even on panic. A clean stop asks the init script
//! (a `stop` file) to send heartbeat SIGTERM, as `/etc/init.d/heartbeat stop` does.
//!
//! The oracle is the kernel: who has the VIP on `eth0` (`ip addr`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hbd::control::protocol::{GroupClass, Request};

use crate::netns::{NetNs, gone, pair, poll_every, write_exec};

/// The VIP the group holds.
const VIP: &str = "192.0.2.100";
/// The heartbeat node's address.
const HB_ADDR: &str = "192.0.2.11";
/// The hbd node's address.
const HBD_ADDR: &str = "192.0.2.12";
/// Keepalive, deadtime and initdead of every test here (heartbeat's limits: deadtime > 2 ×
/// keepalive; initdead ≥ deadtime).
const KEEPALIVE_MS: u64 = 200;
const DEADTIME_MS: u64 = 1000;
const INITDEAD_MS: u64 = 3000;

/// What runs as PID 1 of the heartbeat node's namespaces: its own hostname, `/run`, `ha.d` and
/// `/var/lib/heartbeat`, then heartbeat in the foreground, followed through its pidfile;
/// `$D/stop` asks for a clean stop (SIGTERM to the master, then up to 60 s for heartbeat's
/// own shutdown sequence).
const HB_INIT: &str = r#"#!/bin/sh
N="$1"; D="$2"
hostname "$N"
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/heartbeat/rsctmp /run/heartbeat/ccm /run/resource-agents /run/lock /run/netns
chown hacluster:haclient /run/heartbeat/ccm
mount --bind "$D/ha.d" /etc/ha.d
mount --bind "$D/varlib" /var/lib/heartbeat
/usr/libexec/heartbeat/heartbeat -f >"$D/stdout" 2>&1 &
HB=$!
# heartbeat's master, by its pidfile: it re-executes itself after a partition (and then
# runs in the background), so the first PID may not be the master for long.
master() {
  p=$(cat /run/heartbeat.pid 2>/dev/null)
  if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then echo "$p"
  elif kill -0 $HB 2>/dev/null; then echo $HB; fi
}
i=0; gone=0
while [ ! -e "$D/stop" ] && [ $i -lt 36000 ] && [ $gone -lt 50 ]; do
  if [ -z "$(master)" ]; then gone=$((gone+1)); else gone=0; fi
  sleep 0.1; i=$((i+1))
done
m=$(master); [ -n "$m" ] && kill -TERM $m
j=0
while [ -n "$(master)" ] && [ $j -lt 600 ]; do sleep 0.1; j=$((j+1)); done
echo "init: heartbeat ended" >>"$D/stdout"
"#;

/// Which daemon a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// Debian's heartbeat 3.0.6.
    Heartbeat,
    /// hbd.
    Hbd,
}

/// One node of a mixed (or heartbeat/heartbeat) pair.
struct Node {
    name: &'static str,
    daemon: Daemon,
    ns: NetNs,
    /// The node's own directory: `ha.d`, `varlib` (heartbeat) or the state dir (hbd).
    dir: PathBuf,
    /// The `unshare` (heartbeat) or hbd process while it runs.
    pid: Option<u32>,
}

/// Two nodes, `node1` (192.0.2.11) and `node2` (192.0.2.12), on one veth pair.
pub struct Cluster {
    nodes: [Node; 2],
    _dir: tempfile::TempDir,
}

/// The shared configuration of a pair.
pub struct Setup {
    /// `auto_failback on|off|legacy`.
    pub auto_failback: &'static str,
    /// The node the group prefers (`node1` or `node2`).
    pub preferred: &'static str,
}

impl Cluster {
    /// A pair running `daemons` (`node1`, `node2`), configured alike; nothing started yet.
    pub fn new(prefix: &str, daemons: [Daemon; 2], setup: &Setup) -> Cluster {
        assert!(
            Path::new("/usr/libexec/heartbeat/heartbeat").exists(),
            "Debian's heartbeat package is missing: run scripts/setup.sh"
        );
        let (a, b) = pair(prefix, &format!("{HB_ADDR}/24"), &format!("{HBD_ADDR}/24"));
        let dir = tempfile::tempdir().unwrap();
        let ha_cf = format!(
            "logfile /var/lib/heartbeat/ha-log\ndebugfile /var/lib/heartbeat/ha-debug\n\
             use_logd no\nlogfacility none\nkeepalive {KEEPALIVE_MS}ms\n\
             warntime {}ms\ndeadtime {DEADTIME_MS}ms\ninitdead {INITDEAD_MS}ms\nudpport 694\n\
             realtime off\nucast eth0 {HB_ADDR}\nucast eth0 {HBD_ADDR}\n\
             auto_failback {}\nnode node1\nnode node2\n",
            DEADTIME_MS / 2,
            setup.auto_failback
        );
        let haresources = format!("{} {VIP}/24/eth0\n", setup.preferred);
        let authkeys = "auth 1\n1 sha1 mixed-pair-secret\n";
        let make = |name: &'static str, daemon: Daemon, ns: NetNs| {
            let node_dir = dir.path().join(name);
            std::fs::create_dir_all(&node_dir).unwrap();
            if daemon == Daemon::Heartbeat {
                prepare_heartbeat_dir(&node_dir, &ha_cf, &haresources, authkeys);
            } else {
                // hbd runs in the host's mount namespace: it logs to its state directory
                // (stderr), not to the host's /var/lib/heartbeat.
                let own: String = ha_cf
                    .lines()
                    .filter(|l| !l.starts_with("logfile") && !l.starts_with("debugfile"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                crate::control::write_ha_dir(&node_dir, &own, &haresources, authkeys);
            }
            Node {
                name,
                daemon,
                ns,
                dir: node_dir,
                pid: None,
            }
        };
        let nodes = [make("node1", daemons[0], a), make("node2", daemons[1], b)];
        Cluster { nodes, _dir: dir }
    }

    /// Starts node `i`'s daemon.
    pub fn start(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.pid.is_none(), "{} already runs", node.name);
        let _ = std::fs::remove_file(node.dir.join("stop"));
        let pid = match node.daemon {
            Daemon::Heartbeat => {
                let init = node.dir.join("init.sh");
                write_exec(&init, HB_INIT);
                let cmd = [
                    "unshare",
                    "--uts",
                    "--mount",
                    "--pid",
                    "--fork",
                    "--kill-child",
                    "--mount-proc",
                    init.to_str().unwrap(),
                    node.name,
                    node.dir.to_str().unwrap(),
                ];
                node.ns.spawn(&cmd, Stdio::null())
            }
            Daemon::Hbd => {
                let resources = Path::new(env!("CARGO_MANIFEST_DIR")).join("resources");
                crate::control::spawn_hbd(
                    &node.ns,
                    &node.dir.join("ha.d"),
                    node.name,
                    &node.dir.join("state"),
                    &["--resource-dir", &resources.to_string_lossy()],
                )
            }
        };
        node.pid = Some(pid);
    }

    /// Kills node `i`'s daemon at once (SIGKILL; for heartbeat its whole PID namespace), as
    /// a crash would. Its VIP stays configured, as after a real crash.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(pid) = node.pid.take() {
            signal(pid, nix::sys::signal::Signal::SIGKILL);
            let limit = Duration::from_secs(10);
            assert!(
                poll_every(Duration::from_millis(10), limit, || gone(pid.cast_signed())),
                "{} did not die",
                node.name
            );
        }
    }

    /// Stops node `i`'s daemon cleanly (heartbeat: SIGTERM through its init; hbd: SIGTERM)
    /// and waits until it has exited.
    pub fn stop(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(pid) = node.pid.take() else { return };
        match node.daemon {
            Daemon::Heartbeat => std::fs::write(node.dir.join("stop"), b"").unwrap(),
            Daemon::Hbd => signal(pid, nix::sys::signal::Signal::SIGTERM),
        }
        assert!(
            poll_every(Duration::from_millis(20), Duration::from_secs(90), || gone(
                pid.cast_signed()
            )),
            "{} did not stop; log:\n{}",
            self.nodes[i].name,
            self.log(i)
        );
    }

    /// Whether node `i` has the VIP on `eth0`.
    pub fn has_vip(&self, i: usize) -> bool {
        self.nodes[i]
            .ns
            .ip(&["-o", "-4", "addr", "show", "dev", "eth0"])
            .contains(&format!("inet {VIP}/"))
    }

    /// Who has the VIP now: `[node1, node2]`.
    pub fn holders(&self) -> [bool; 2] {
        [self.has_vip(0), self.has_vip(1)]
    }

    /// Node `i`'s log (heartbeat's ha-log or hbd's log).
    pub fn log(&self, i: usize) -> String {
        let node = &self.nodes[i];
        let path = match node.daemon {
            Daemon::Heartbeat => node.dir.join("varlib/ha-log"),
            Daemon::Hbd => node.dir.join("state/log"),
        };
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Both logs, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "---- node1 ({:?}) log:\n{}\n---- node2 ({:?}) log:\n{}",
            self.nodes[0].daemon,
            tail(&self.log(0), 120),
            self.nodes[1].daemon,
            tail(&self.log(1), 120)
        )
    }

    /// Runs a command inside heartbeat node `i`'s namespaces (hostname, mounts, PIDs), e.g.
    /// `cl_status` or `hb_standby`.
    pub fn in_heartbeat_node(&self, i: usize, cmd: &[&str]) -> Output {
        let node = &self.nodes[i];
        assert_eq!(node.daemon, Daemon::Heartbeat);
        let unshare = node.pid.expect("the heartbeat node runs");
        // `unshare` forks the namespace's init just after it starts.
        let mut init = None;
        poll_every(Duration::from_millis(10), Duration::from_secs(5), || {
            init = child_of(unshare);
            init.is_some()
        });
        let init = init.expect("the namespace's init");
        Command::new("nsenter")
            .args(["-t", &init.to_string(), "-a"])
            .args(cmd)
            .output()
            .expect("nsenter")
    }

    /// Waits until `want` holds of who has the VIP, at most `limit`; returns how long it took.
    pub fn wait_holders(&self, want: [bool; 2], limit: Duration, what: &str) -> Duration {
        let start = Instant::now();
        let mut last = [false; 2];
        let seen = poll_every(Duration::from_millis(20), limit, || {
            last = self.holders();
            last == want
        });
        assert!(
            seen,
            "{what}: VIP holders never became {want:?} within {limit:?} (last {last:?})\n{}",
            self.logs()
        );
        start.elapsed()
    }
}

/// A fresh copy of the system's `/etc/ha.d` (scripts, resource.d) with this pair's
/// configuration, and an empty `/var/lib/heartbeat` with the directories heartbeat expects.
fn prepare_heartbeat_dir(dir: &Path, ha_cf: &str, haresources: &str, authkeys: &str) {
    let ha = dir.join("ha.d");
    std::fs::create_dir_all(&ha).unwrap();
    let out = Command::new("cp")
        .args(["-a", "/etc/ha.d/.", ha.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "copy /etc/ha.d: {out:?}");
    crate::control::write_ha_dir(dir, ha_cf, haresources, authkeys);
    let varlib = dir.join("varlib");
    for sub in [
        "api",
        "casual",
        "ckpt",
        "lrm",
        "ccm",
        "crm",
        "pengine",
        "cores/root",
        "cores/nobody",
        "cores/hacluster",
    ] {
        std::fs::create_dir_all(varlib.join(sub)).unwrap();
    }
    let out = Command::new("chown")
        .args([
            "hacluster:haclient",
            &varlib.join("ccm").to_string_lossy(),
            &varlib.join("crm").to_string_lossy(),
            &varlib.join("pengine").to_string_lossy(),
            &varlib.join("cores/hacluster").to_string_lossy(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "chown: {out:?}");
}

/// The first child of `pid` (the PID namespace's init under `unshare --fork`).
fn child_of(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        // Only a PID this test started; ESRCH (already gone) is fine.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), sig);
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Cluster {
    /// The namespace names, for a [`Sampler`].
    fn ns_names(&self) -> [String; 2] {
        [
            self.nodes[0].ns.name().to_string(),
            self.nodes[1].ns.name().to_string(),
        ]
    }

    /// Cuts (`false`) or restores node `i`'s link.
    pub fn link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        self.nodes[i].ns.ip(&["link", "set", "eth0", state]);
    }

    /// Cuts (`true`) or heals the cluster traffic between the nodes (UDP 694 dropped in
    /// node2's namespace both ways), links and addresses untouched: a partition.
    pub fn partition(&self, cut: bool) {
        let ns = &self.nodes[1].ns;
        let script = if cut {
            "add table inet mxpart\n\
             add chain inet mxpart in { type filter hook input priority 0; }\n\
             add chain inet mxpart out { type filter hook output priority 0; }\n\
             add rule inet mxpart in udp dport 694 drop\n\
             add rule inet mxpart out udp dport 694 drop\n"
        } else {
            "delete table inet mxpart\n"
        };
        let path = self._dir.path().join("partition.nft");
        std::fs::write(&path, script).unwrap();
        let out = ns.exec(&["nft", "-f", path.to_str().unwrap()]);
        assert!(out.status.success(), "nft: {out:?}");
    }

    /// Switches node `i` to another daemon (the rolling migration); it must be stopped.
    pub fn set_daemon(&mut self, i: usize, daemon: Daemon) {
        assert!(self.nodes[i].pid.is_none());
        let node = &mut self.nodes[i];
        if daemon == Daemon::Hbd && !node.dir.join("state").exists() {
            // The same ha.d as heartbeat's (its logfile lines aside: see `new`).
            let ha = node.dir.join("ha.d");
            let cf = std::fs::read_to_string(ha.join("ha.cf")).unwrap();
            let own: String = cf
                .lines()
                .filter(|l| !l.starts_with("logfile") && !l.starts_with("debugfile"))
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(ha.join("ha.cf"), own).unwrap();
        }
        node.daemon = daemon;
    }

    /// Runs heartbeat's `hb_standby`/`hb_takeover` script on node `i`. heartbeat refuses a
    /// standby while either side's resources are "in flux" (saying so in its log), and under
    /// load now and then reads a script's message from its FIFO as empty ("msg2string:
    /// Message with zero fields"); an operator then runs it again, and so does this.
    fn heartbeat_script(&self, i: usize, script: &str, moved: impl Fn() -> bool) {
        let dropped = || {
            let log = self.log(i);
            // heartbeat drops the FIFO message, refuses while "in flux", or ignores it while
            // a standby of its own (its auto-failback check) is "in progress".
            log.matches("Message with zero fields").count()
                + log.matches("in flux").count()
                + log.matches("Standby in progress- new request").count()
        };
        // Bounded: the first run and at most eleven more (heartbeat stays "in flux" for 6 s
        // and more after its own auto-failback check on a loaded machine).
        for _ in 0..12 {
            let before = dropped();
            let out = self.in_heartbeat_node(i, &[script]);
            assert!(out.status.success(), "{script}: {out:?}");
            let ok = poll_every(Duration::from_millis(50), Duration::from_secs(4), || {
                moved() || dropped() > before
            });
            if !ok || dropped() == before {
                return;
            }
            eprintln!("heartbeat dropped or refused {script}: running it again");
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The operator's `standby` on node `i` (`hb_standby` or `hactl standby`).
    pub fn standby(&self, i: usize) {
        let class = GroupClass::All;
        self.operator(i, "standby", Request::Standby { class });
    }

    /// The operator's `takeover` on node `i` (`hb_takeover` or `hactl takeover`).
    pub fn takeover(&self, i: usize) {
        let class = GroupClass::All;
        self.operator(i, "takeover", Request::Takeover { class });
    }

    /// Operator command `verb` on node `i`: heartbeat's `hb_<verb>` script until the VIP
    /// moves, or hbd's `request`, which must be accepted.
    fn operator(&self, i: usize, verb: &str, request: Request) {
        match self.nodes[i].daemon {
            Daemon::Heartbeat => {
                let held = self.has_vip(i);
                let script = format!("/usr/share/heartbeat/hb_{verb}");
                self.heartbeat_script(i, &script, || self.has_vip(i) != held);
            }
            Daemon::Hbd => {
                let r = self.hbd_call(i, request);
                assert!(r.contains("ok: true"), "hactl {verb}: {r}");
            }
        }
    }

    fn hbd_call(&self, i: usize, request: Request) -> String {
        let socket = crate::control::socket_in(&self.nodes[i].dir.join("state"));
        let r = crate::control::call(&socket, &request, Duration::from_secs(3));
        format!("{r:?}").replace("ok:true", "ok: true")
    }

    /// `cl_status hbstatus` and `nodestatus <peer>` on heartbeat node `i`: both answer
    /// (polled while heartbeat may still be bringing its communication up).
    pub fn cl_status_answers(&self, i: usize) {
        let peer = self.nodes[1 - i].name;
        let mut last = None;
        let ok = poll_every(Duration::from_millis(200), placement_limit(), || {
            let hb = self.in_heartbeat_node(i, &["cl_status", "hbstatus"]);
            let node = self.in_heartbeat_node(i, &["cl_status", "nodestatus", peer]);
            let said = String::from_utf8_lossy(&node.stdout).trim().to_string();
            let done = hb.status.success() && node.status.success() && said == "active";
            last = Some((hb, node));
            done
        });
        assert!(
            ok,
            "cl_status on {} (hbstatus, nodestatus {peer}): {last:?}\n{}",
            self.nodes[i].name,
            self.logs()
        );
    }

    /// heartbeat's flow-control complaints in node `i`'s log.
    pub fn hist_queue_warnings(&self, i: usize) -> usize {
        self.log(i).matches("Message hist queue").count()
    }

    /// Which nodes run which daemon, for messages.
    fn kind(&self) -> String {
        format!("{:?}/{:?}", self.nodes[0].daemon, self.nodes[1].daemon)
    }
}

/// Samples who holds the VIP every 20 ms in the background until [`Sampler::finish`].
///
/// Reading a namespace's addresses takes a while (tens of ms under load), so a sample reads
/// node1, node2, node1 again: node1 held it "surely" at node2's reading when both its
/// readings say so, "maybe" when either does. "Both" counts sure overlaps only, "nobody"
/// needs no maybe.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<Sample>>,
}

/// One sample: when, and node1 (sure, maybe) and node2.
type Sample = (Instant, [bool; 2], bool);

/// Who held the VIP when.
pub struct Trace(Vec<Sample>);

impl Sampler {
    fn start(c: &Cluster) -> Sampler {
        let names = c.ns_names();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut samples = Vec::new();
            // A namespace already gone (the test failed) holds nothing.
            let holds = |ns: &str| {
                Command::new("ip")
                    .args(["-n", ns, "-o", "-4", "addr", "show", "dev", "eth0"])
                    .output()
                    .is_ok_and(|o| {
                        String::from_utf8_lossy(&o.stdout).contains(&format!("inet {VIP}/"))
                    })
            };
            // Bounded: at most 20 minutes of samples.
            for _ in 0..60_000 {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let a1 = holds(&names[0]);
                let t = Instant::now();
                let b = holds(&names[1]);
                let a2 = holds(&names[0]);
                samples.push((t, [a1 && a2, b], a1 || a2));
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        });
        Sampler { stop, handle }
    }

    fn finish(self) -> Trace {
        self.stop.store(true, Ordering::Relaxed);
        Trace(self.handle.join().expect("sampler"))
    }
}

impl Trace {
    /// Instants when both held the VIP, from `from` on.
    fn both(&self, from: Instant) -> usize {
        self.0
            .iter()
            .filter(|(t, h, _)| *t >= from && h[0] && h[1])
            .count()
    }

    /// The longest stretch with nobody holding the VIP, from `from` on.
    fn longest_nobody(&self, from: Instant) -> Duration {
        let mut longest = Duration::ZERO;
        let mut since: Option<Instant> = None;
        for (t, h, maybe) in self.0.iter().filter(|(t, _, _)| *t >= from) {
            if !maybe && !h[1] {
                let start = *since.get_or_insert(*t);
                longest = longest.max(*t - start);
            } else {
                since = None;
            }
        }
        longest
    }
}

/// How long a pair may take to place the VIP after both start: initdead plus a few
/// keepalives, plus heartbeat's own start (up to 4 s before its first heartbeat), its
/// resource scripts (IPaddr takes about a second) and, when two heartbeat nodes start
/// together, its 10 s wait for the other to settle (`RQSTDELAY`).
fn placement_limit() -> Duration {
    Duration::from_millis(INITDEAD_MS + 10 * KEEPALIVE_MS) + Duration::from_secs(18)
}

/// How long a move between live nodes may take (heartbeat's scripts included).
fn move_limit() -> Duration {
    Duration::from_secs(10)
}

/// How long a move asked on a node running `daemon` may take: heartbeat refuses a standby
/// while "in flux" and the harness re-asks, which on a loaded machine took 11 s once in a
/// full run; hbd keeps [`move_limit`].
fn move_limit_on(daemon: Daemon) -> Duration {
    match daemon {
        Daemon::Heartbeat => Duration::from_secs(25),
        Daemon::Hbd => move_limit(),
    }
}

/// The VIP on the preferred node `pref` alone.
fn only(pref: usize) -> [bool; 2] {
    [pref == 0, pref == 1]
}

/// Starts the preferred node `pref`, waits until it holds the VIP alone, then starts the
/// other and lets the pair settle: the same start whatever the load (a simultaneous start
/// under load may let one node's initdead pass before the other runs, and with
/// `auto_failback off` the VIP would then stay on the wrong node; start orders have their
/// own test).
fn boot(c: &mut Cluster, pref: usize) {
    c.start(pref);
    c.wait_holders(only(pref), placement_limit(), "boot: preferred node alone");
    c.start(1 - pref);
    if c.nodes[pref].daemon == Daemon::Heartbeat {
        c.cl_status_answers(pref);
    } else if c.nodes[1 - pref].daemon == Daemon::Heartbeat {
        c.cl_status_answers(1 - pref);
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.holders(), only(pref), "boot\n{}", c.logs());
}

/// The pair kinds every scenario runs on: heartbeat + hbd, and heartbeat + heartbeat for
/// comparison.
const MIXED: [Daemon; 2] = [Daemon::Heartbeat, Daemon::Hbd];
const CLASSIC: [Daemon; 2] = [Daemon::Heartbeat, Daemon::Heartbeat];

/// Start orders: simultaneous, node1 first, node2 first; the preferred node (`pref`) holds
/// the VIP within initdead + a few keepalives of the later start, and never both.
fn start_orders(prefix: &str, daemons: [Daemon; 2], pref: usize) {
    let preferred = ["node1", "node2"][pref];
    for order in [None, Some(0), Some(1)] {
        let setup = Setup {
            auto_failback: "on",
            preferred,
        };
        let mut c = Cluster::new(prefix, daemons, &setup);
        let sampler = Sampler::start(&c);
        let t0 = Instant::now();
        match order {
            None => {
                c.start(0);
                c.start(1);
            }
            Some(first) => {
                c.start(first);
                // Alone: it takes the VIP after initdead.
                c.wait_holders(only(first), placement_limit(), "first node alone");
                c.start(1 - first);
            }
        }
        c.wait_holders(only(pref), placement_limit(), "both started");
        // Settled: it stays there.
        std::thread::sleep(Duration::from_millis(5 * KEEPALIVE_MS));
        assert_eq!(
            c.holders(),
            only(pref),
            "{}: order {order:?}\n{}",
            c.kind(),
            c.logs()
        );
        let trace = sampler.finish();
        assert_eq!(
            trace.both(t0),
            0,
            "{}: VIP on both; order {order:?}\n{}",
            c.kind(),
            c.logs()
        );
        for (i, daemon) in daemons.iter().enumerate() {
            if *daemon == Daemon::Heartbeat {
                c.cl_status_answers(i);
            }
        }
    }
}

#[test]
fn mixed_start_orders_heartbeat_preferred() {
    start_orders("mxa", MIXED, 0);
}

#[test]
fn mixed_start_orders_hbd_preferred() {
    start_orders("mxb", MIXED, 1);
}

#[test]
fn classic_start_orders() {
    start_orders("mxc", CLASSIC, 0);
}

/// Kill node `victim` (daemon and link): the other takes the VIP within deadtime (plus its
/// scripts); it returns: per auto_failback the VIP goes back (on, legacy) or stays (off),
/// with no stretch of nobody holding it beyond the move itself.
fn crash_and_return(
    prefix: &str,
    daemons: [Daemon; 2],
    victim: usize,
    auto_failback: &'static str,
) {
    let setup = Setup {
        auto_failback,
        preferred: ["node1", "node2"][victim],
    };
    let mut c = Cluster::new(prefix, daemons, &setup);
    boot(&mut c, victim);
    let sampler = Sampler::start(&c);
    let crash = Instant::now();
    c.kill(victim);
    c.link(victim, false);
    let took = c.wait_holders(
        [true, true],
        Duration::from_millis(DEADTIME_MS) + move_limit(),
        "survivor takes over (the dead node keeps its stale VIP)",
    );
    eprintln!("{}: takeover after crash in {took:?}", c.kind());
    // The crashed node's stale address goes with its restart (heartbeat and hbd both check
    // their resources at start); clear it as a reboot would.
    c.nodes[victim]
        .ns
        .ip(&["addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);
    c.link(victim, true);
    let back = Instant::now();
    c.start(victim);
    let want = if auto_failback == "off" {
        only(1 - victim)
    } else {
        only(victim)
    };
    c.wait_holders(want, placement_limit(), "after the return");
    std::thread::sleep(Duration::from_millis(5 * KEEPALIVE_MS));
    assert_eq!(c.holders(), want, "{}\n{}", c.kind(), c.logs());
    let trace = sampler.finish();
    assert_eq!(
        trace.both(back),
        0,
        "{}: VIP on both\n{}",
        c.kind(),
        c.logs()
    );
    let gap = trace.longest_nobody(back);
    assert!(
        gap <= move_limit(),
        "{}: nobody held the VIP for {gap:?} after the return\n{}",
        c.kind(),
        c.logs()
    );
    let _ = crash;
}

#[test]
fn mixed_crash_heartbeat_node_failback_on() {
    crash_and_return("mxd", MIXED, 0, "on");
}

#[test]
fn mixed_crash_hbd_node_failback_on() {
    crash_and_return("mxe", MIXED, 1, "on");
}

#[test]
fn mixed_crash_heartbeat_node_failback_off() {
    crash_and_return("mxf", MIXED, 0, "off");
}

#[test]
fn mixed_crash_hbd_node_failback_legacy() {
    crash_and_return("mxg", MIXED, 1, "legacy");
}

#[test]
fn classic_crash_failback_on_off_legacy() {
    crash_and_return("mxh", CLASSIC, 0, "on");
    crash_and_return("mxh", CLASSIC, 0, "off");
    crash_and_return("mxh", CLASSIC, 1, "legacy");
}

/// Operator moves on both sides: standby on the holder, then takeover back, each moves the
/// VIP; then a clean stop of the holder hands over without waiting for deadtime.
fn operator_moves_and_clean_stop(prefix: &str, daemons: [Daemon; 2], holder: usize) {
    let setup = Setup {
        auto_failback: "on",
        preferred: ["node1", "node2"][holder],
    };
    let mut c = Cluster::new(prefix, daemons, &setup);
    boot(&mut c, holder);
    // Both sides settle (heartbeat refuses standby while "in flux").
    std::thread::sleep(Duration::from_secs(2));
    let other = 1 - holder;
    c.standby(holder);
    c.wait_holders(
        only(other),
        move_limit_on(daemons[holder]),
        "standby on the holder",
    );
    std::thread::sleep(Duration::from_secs(2));
    c.takeover(holder);
    c.wait_holders(
        only(holder),
        move_limit_on(daemons[holder]),
        "takeover back",
    );
    std::thread::sleep(Duration::from_secs(2));
    c.standby(holder);
    c.wait_holders(only(other), move_limit_on(daemons[holder]), "standby again");
    std::thread::sleep(Duration::from_secs(2));
    c.takeover(other);
    // Nothing to move: it holds already.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(c.holders(), only(other), "{}\n{}", c.kind(), c.logs());
    c.standby(other);
    c.wait_holders(
        only(holder),
        move_limit_on(daemons[other]),
        "standby on the other",
    );
    std::thread::sleep(Duration::from_secs(2));
    // Clean stop of the holder: the other holds the VIP without waiting for deadtime after
    // the holder released it.
    let sampler = Sampler::start(&c);
    let stop = Instant::now();
    c.stop(holder);
    c.wait_holders(only(other), move_limit(), "clean stop of the holder");
    let trace = sampler.finish();
    let gap = trace.longest_nobody(stop);
    eprintln!("{}: clean stop handover gap {gap:?}", c.kind());
    assert!(
        gap < Duration::from_millis(DEADTIME_MS) + Duration::from_secs(2),
        "{}: nobody held the VIP for {gap:?} on a clean stop\n{}",
        c.kind(),
        c.logs()
    );
    if daemons[other] == Daemon::Heartbeat {
        c.cl_status_answers_alone(other);
    }
}

impl Cluster {
    /// `cl_status hbstatus` answers on heartbeat node `i` (its peer may be gone).
    fn cl_status_answers_alone(&self, i: usize) {
        let out = self.in_heartbeat_node(i, &["cl_status", "hbstatus"]);
        assert!(out.status.success(), "cl_status: {out:?}\n{}", self.logs());
    }
}

#[test]
fn mixed_operator_moves_and_clean_stop_heartbeat_holder() {
    operator_moves_and_clean_stop("mxi", MIXED, 0);
}

#[test]
fn mixed_operator_moves_and_clean_stop_hbd_holder() {
    operator_moves_and_clean_stop("mxj", MIXED, 1);
}

#[test]
fn classic_operator_moves_and_clean_stop() {
    operator_moves_and_clean_stop("mxk", CLASSIC, 0);
}

/// A partition heals: both nodes took the VIP while apart; once linked again exactly one
/// holds it within a few keepalives (plus heartbeat's own restart after a partition, and its
/// scripts), the preferred one under auto_failback on.
fn partition_heals(prefix: &str, daemons: [Daemon; 2]) {
    let setup = Setup {
        auto_failback: "on",
        preferred: "node1",
    };
    let mut c = Cluster::new(prefix, daemons, &setup);
    boot(&mut c, 0);
    std::thread::sleep(Duration::from_secs(2));
    c.partition(true);
    c.wait_holders(
        [true, true],
        Duration::from_millis(DEADTIME_MS) + move_limit(),
        "each side alone takes the VIP",
    );
    std::thread::sleep(Duration::from_secs(1));
    let sampler = Sampler::start(&c);
    let heal = Instant::now();
    c.partition(false);
    c.wait_holders(only(0), placement_limit(), "after the heal");
    // heartbeat restarts itself about 2 s after a partition heals (giving its groups up on
    // the way, `shutdone`): let that run its course, then the VIP must be home again.
    std::thread::sleep(Duration::from_secs(12));
    c.wait_holders(only(0), placement_limit(), "after heartbeat's restart");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.holders(), only(0), "{}\n{}", c.kind(), c.logs());
    let trace = sampler.finish();
    let overlap = trace.both(heal);
    eprintln!(
        "{}: after the heal, {overlap} samples (20 ms) on both; longest with nobody {:?}",
        c.kind(),
        trace.longest_nobody(heal)
    );
    // A heartbeat pair restarts both nodes after a heal and is without the VIP for a
    // while (shown, not asserted: it is the comparison); with hbd it must be held again.
    assert!(
        daemons == CLASSIC || trace.longest_nobody(heal) <= move_limit(),
        "{}: nobody held the VIP for {:?} after the heal\n{}",
        c.kind(),
        trace.longest_nobody(heal),
        c.logs()
    );
    for (i, daemon) in daemons.iter().enumerate() {
        if *daemon == Daemon::Heartbeat {
            c.cl_status_answers(i);
        }
    }
}

#[test]
fn mixed_partition_heals() {
    partition_heals("mxl", MIXED);
}

#[test]
fn classic_partition_heals() {
    partition_heals("mxm", CLASSIC);
}

/// A mixed pair runs for `secs` seconds: the VIP stays put, `cl_status` answers on the
/// heartbeat node throughout, and heartbeat never complains of its message history (hbd
/// acknowledges its frames).
fn soak(prefix: &str, secs: u64) {
    let setup = Setup {
        auto_failback: "on",
        preferred: "node1",
    };
    let mut c = Cluster::new(prefix, MIXED, &setup);
    boot(&mut c, 0);
    let sampler = Sampler::start(&c);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(secs);
    // Bounded: one round every 5 s until the end.
    for _ in 0..(secs / 5 + 1) {
        if Instant::now() >= end {
            break;
        }
        c.cl_status_answers(0);
        assert_eq!(c.holders(), only(0), "{}", c.logs());
        std::thread::sleep(
            Duration::from_secs(5).min(end.saturating_duration_since(Instant::now())),
        );
    }
    let trace = sampler.finish();
    assert_eq!(trace.both(t0), 0, "{}", c.logs());
    assert_eq!(trace.longest_nobody(t0), Duration::ZERO, "{}", c.logs());
    assert_eq!(
        c.hist_queue_warnings(0),
        0,
        "heartbeat complains of its message history:\n{}",
        c.logs()
    );
    assert!(
        !c.log(0).contains("lost packet") || c.log(0).contains("No pkts missing"),
        "heartbeat lost frames it never got back:\n{}",
        c.logs()
    );
}

#[test]
fn mixed_soak_one_minute() {
    soak("mxn", 60);
}

#[test]
#[ignore = "10 minutes: run by hand (cargo test --test e2e mixed_soak_ten -- --ignored)"]
fn mixed_soak_ten_minutes() {
    soak("mxo", 600);
}

/// The rolling migration of docs/migration.md, step by step: a heartbeat pair becomes an hbd
/// pair one node at a time, the VIP always held by exactly one node.
#[test]
fn rolling_migration() {
    let setup = Setup {
        auto_failback: "on",
        preferred: "node1",
    };
    let mut c = Cluster::new("mxp", CLASSIC, &setup);
    // 0. Today: heartbeat on both nodes, the VIP on node1.
    boot(&mut c, 0);
    let sampler = Sampler::start(&c);
    let t0 = Instant::now();
    // 1. Stop heartbeat on the standby node (node2): nothing moves.
    c.stop(1);
    assert_eq!(c.holders(), only(0), "{}", c.logs());
    // 2. Start hbd on node2 with the same /etc/ha.d: it joins, the VIP stays on node1.
    c.set_daemon(1, Daemon::Hbd);
    c.start(1);
    c.cl_status_answers(0);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.holders(), only(0), "{}", c.logs());
    // 3. Move the VIP to node2 (hb_standby on node1).
    c.standby(0);
    c.wait_holders(
        only(1),
        move_limit_on(Daemon::Heartbeat),
        "hb_standby on node1",
    );
    std::thread::sleep(Duration::from_secs(2));
    // 4. Stop heartbeat on node1: hbd on node2 keeps the VIP.
    c.stop(0);
    assert_eq!(c.holders(), only(1), "{}", c.logs());
    // 5. Start hbd on node1: auto_failback on brings the VIP home.
    c.set_daemon(0, Daemon::Hbd);
    c.start(0);
    c.wait_holders(only(0), placement_limit(), "hbd pair, failback to node1");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(c.holders(), only(0), "{}", c.logs());
    let trace = sampler.finish();
    assert_eq!(
        trace.both(t0),
        0,
        "VIP on both during the migration\n{}",
        c.logs()
    );
    let gap = trace.longest_nobody(t0);
    assert!(
        gap <= Duration::from_secs(3),
        "nobody held the VIP for {gap:?} during the migration\n{}",
        c.logs()
    );
}
