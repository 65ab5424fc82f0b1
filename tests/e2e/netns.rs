//! Test support: network namespaces that clean themselves up.
//!
//! Every root e2e test builds its own little network out of [`NetNs`] guards. A guard owns one
//! named namespace (`ip netns add`), remembers the processes started in it, and on drop —
//! including during a panic unwind — kills those processes (by PID, SIGKILL) and deletes the
//! namespace, which also destroys every interface inside it. Names are unique per test
//! (prefix + pid + a process-wide counter) so tests can run in parallel threads.
//!
//! The `ip` tool is used here as the *oracle* that builds and inspects namespaces; library code
//! under test never shells out. [`NetNs::run`] executes async library code (rtnetlink, raw
//! sockets) on a thread that has joined the namespace with `setns(CLONE_NEWNET)`.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs::File;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Process-wide counter that makes namespace names unique among parallel tests.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Panics with a clear message unless the test runs as root: root tests fail, never skip.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "this end-to-end test needs root (network namespaces, raw sockets); \
             run it with `sudo -E cargo test --test e2e`"
        );
    }
}

/// Runs `ip` with the arguments and panics with its stderr when it fails.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Moves the calling thread into the named namespace (`setns(CLONE_NEWNET)`); panics if it
/// cannot.
pub fn enter(name: &str) {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

/// A named network namespace deleted (with its registered processes killed) on drop.
pub struct NetNs {
    name: String,
    pids: Mutex<Vec<u32>>,
}

impl NetNs {
    /// Creates a fresh namespace named `<prefix (≤ 4 chars)><pid>-<n>` (≤ 15 chars, so it can
    /// also serve as an interface name) and brings its loopback up.
    pub fn new(prefix: &str) -> NetNs {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let short: String = prefix.chars().take(4).collect();
        let name = format!("{short}{}-{n}", std::process::id());
        assert!(name.len() <= 15, "namespace name {name} longer than 15");
        ip(&["netns", "add", &name]);
        let ns = NetNs {
            name,
            pids: Mutex::new(Vec::new()),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace name (as listed by `ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> args…` and panics on failure; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Adds an address (`a.b.c.d/len`) to an interface and sets the interface up.
    pub fn addr_up(&self, ifname: &str, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", ifname]);
        self.ip(&["link", "set", ifname, "up"]);
    }

    /// Turns IPv4 forwarding on (`/proc/sys/net` is per namespace: this is the namespace's
    /// own switch, as a router or NAT director needs it).
    pub fn forward(&self) {
        let out = self.exec(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
        assert!(out.status.success(), "ip_forward in {}: {out:?}", self.name);
    }

    /// Runs a command inside the namespace (`ip netns exec`) and returns its output.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .unwrap_or_else(|e| panic!("cannot exec {cmd:?} in {}: {e}", self.name))
    }

    /// Starts a command inside the namespace (stdin from /dev/null, stderr to `stderr`) and
    /// returns its PID, which is killed when the guard drops (and may be killed earlier).
    pub fn spawn<S: AsRef<OsStr>>(&self, cmd: &[S], stderr: Stdio) -> u32 {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                let shown: Vec<_> = cmd.iter().map(|a| a.as_ref().to_string_lossy()).collect();
                panic!("cannot spawn {shown:?} in {}: {e}", self.name)
            });
        let pid = child.id();
        self.register_pid(pid);
        // The guard's SIGKILL by PID ends it; the handle is not needed.
        std::mem::forget(child);
        pid
    }

    /// Registers a PID to be killed (SIGKILL) when this guard drops.
    pub fn register_pid(&self, pid: u32) {
        self.pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pid);
    }

    /// Runs async code inside the namespace: a new thread joins the namespace with
    /// `setns(CLONE_NEWNET)` and drives the future on a current-thread tokio runtime. Panics
    /// in the future are propagated to the caller.
    pub fn run<C, F>(&self, f: C) -> F::Output
    where
        C: FnOnce() -> F + Send,
        F: Future,
        F::Output: Send,
    {
        let name = self.name.as_str();
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                enter(name);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(f())
            });
            handle
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// The MAC address of an interface in this namespace, as `ip` prints it.
    pub fn mac(&self, ifname: &str) -> String {
        let out = self.ip(&["-o", "link", "show", ifname]);
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC for {ifname} in {}: {out}", self.name))
            .to_string()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let pids = std::mem::take(&mut *self.pids.lock().unwrap_or_else(|e| e.into_inner()));
        for pid in pids {
            if let Ok(raw) = i32::try_from(pid) {
                // Only PIDs this test registered; ESRCH (already gone) is fine.
                let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
            }
        }
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("warning: cannot run ip netns del {}: {e}", self.name),
        }
    }
}

/// Polls `done` every 10 ms until it holds (true), or `limit` passes first (false).
pub fn poll_until(limit: Duration, done: impl FnMut() -> bool) -> bool {
    poll_every(Duration::from_millis(10), limit, done)
}

/// [`poll_until`] at another pace, for waits whose duration a test measures.
pub fn poll_every(every: Duration, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Polls `done` (see [`poll_until`]) and panics naming `what` unless it holds within `limit`.
pub fn wait_until(limit: Duration, what: &str, done: impl FnMut() -> bool) {
    assert!(poll_until(limit, done), "{what}: not within {limit:?}");
}

/// Whether process `pid` is gone: no longer in /proc, or a zombie ("Z") awaiting its reaper.
/// The state is read after the last ')' of /proc/PID/stat, as the command name may hold
/// spaces and parentheses.
pub fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Writes an executable (mode 0755) file: `body` is the whole script, shebang included.
pub fn write_exec(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Connects two namespaces with a veth pair: `a_if` in `a`, `b_if` in `b` (both left down).
pub fn veth(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
}

/// Two fresh namespaces joined by a veth pair named `eth0` on both sides, addressed
/// `a_cidr` and `b_cidr` and up; returns once both ends have carrier (LOWER_UP), so the
/// first packet (an ARP request, a heartbeat) is not lost on a link still coming up.
pub fn pair(prefix: &str, a_cidr: &str, b_cidr: &str) -> (NetNs, NetNs) {
    let a = NetNs::new(prefix);
    let b = NetNs::new(prefix);
    veth(&a, "eth0", &b, "eth0");
    a.addr_up("eth0", a_cidr);
    b.addr_up("eth0", b_cidr);
    let carrier = |ns: &NetNs| ns.ip(&["link", "show", "eth0"]).contains("LOWER_UP");
    wait_until(
        Duration::from_secs(5),
        "veth carrier up on both ends",
        || carrier(&a) && carrier(&b),
    );
    (a, b)
}

/// A bridged LAN: one namespace holding bridge `br0`, and `hosts`, each with `eth0` attached
/// to a bridge port `p<i>`. Drop order deletes the hosts, then the bridge.
pub struct Lan {
    /// Host namespaces, in creation order.
    pub hosts: Vec<NetNs>,
    /// The namespace that holds the bridge.
    pub bridge: NetNs,
}

impl Lan {
    /// Builds a bridge namespace and `n` hosts. Interfaces are up, without addresses.
    pub fn new(prefix: &str, n: usize) -> Lan {
        let bridge = bridge(prefix);
        let mut hosts = Vec::with_capacity(n);
        for i in 0..n {
            let host = NetNs::new(prefix);
            attach(&bridge, &host, "eth0", &format!("p{i}"));
            host.ip(&["link", "set", "eth0", "up"]);
            hosts.push(host);
        }
        Lan { hosts, bridge }
    }
}

/// A fresh namespace holding a bridge `br0`, up, for [`attach`] to plug hosts into.
pub fn bridge(prefix: &str) -> NetNs {
    let lan = NetNs::new(prefix);
    lan.ip(&["link", "add", "br0", "type", "bridge"]);
    lan.ip(&["link", "set", "br0", "up"]);
    lan
}

/// Connects `host` to the bridge `br0` in `lan` through a veth: `port` on the bridge (up),
/// `ifname` on the host (left down, for the caller to address).
pub fn attach(lan: &NetNs, host: &NetNs, ifname: &str, port: &str) {
    veth(lan, port, host, ifname);
    lan.ip(&["link", "set", port, "master", "br0"]);
    lan.ip(&["link", "set", port, "up"]);
}

#[test]
fn namespace_is_removed_even_when_the_test_panics() {
    require_root();
    let name = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let ns = NetNs::new("pnc");
        *name.lock().unwrap() = ns.name().to_string();
        ns.spawn(&["sleep", "30"], Stdio::null());
        assert!(ip(&["netns", "list"]).contains(ns.name()));
        panic!("deliberate panic inside a NetNs scope");
    });
    assert!(result.is_err());
    let name = name.into_inner().unwrap();
    assert!(!name.is_empty());
    let list = ip(&["netns", "list"]);
    assert!(
        !list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name.as_str())),
        "namespace {name} still listed after panic: {list}"
    );
}

#[test]
fn run_executes_inside_the_namespace() {
    let a = NetNs::new("run");
    let b = NetNs::new("run");
    veth(&a, "va", &b, "vb");
    a.addr_up("va", "192.0.2.1/24");
    let seen = a.run(|| async {
        // The thread's /proc view follows its network namespace.
        std::fs::read_to_string("/proc/thread-self/net/dev").unwrap()
    });
    assert!(seen.contains("va:"), "{seen}");
    assert!(!seen.contains("vb:"), "{seen}");
}

#[test]
fn lan_hosts_reach_each_other() {
    let lan = Lan::new("lan", 2);
    lan.hosts[0].ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"]);
    lan.hosts[1].ip(&["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            lan.hosts[1].run(|| async move {
                let l = tokio::net::TcpListener::bind("192.0.2.2:7000")
                    .await
                    .unwrap();
                tx.send(()).unwrap();
                let accepted = tokio::time::timeout(Duration::from_secs(5), l.accept()).await;
                accepted.expect("accept timed out").unwrap().1
            })
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("listener ready");
        lan.hosts[0].run(|| async {
            let c = tokio::net::TcpStream::connect("192.0.2.2:7000");
            tokio::time::timeout(Duration::from_secs(5), c)
                .await
                .expect("connect timed out")
                .unwrap();
        });
        let peer = server.join().unwrap();
        assert_eq!(peer.ip().to_string(), "192.0.2.1");
    });
}
