//! Built-in `conntrackd::IFACE[::ADDR[::ADDR]][::PORT]` (or `conntrackd::/PATH`): Debian's
//! conntrackd (conntrack-tools) follows the group, so connections translated by the
//! nftables dataplane survive a director failover. The arguments are
//! [`crate::config::conntrackd`]'s.
//!
//! Every node runs one conntrackd from hbd's first probe of the group on, supervised
//! (started again when it exits) and tied to hbd's life (it gets SIGTERM when hbd dies,
//! even by SIGKILL); each fresh daemon asks the other node for its connections (`-n`). It runs in FTFW mode over the dedicated link: its internal cache
//! mirrors the kernel's connection table and goes to the other director, whose external
//! cache holds it. conntrackd has no role of its own ("it can be both at the same time",
//! resource-agents' `conntrackd` agent); the role is the order of its commands, as
//! conntrack-tools' `primary-backup.sh` gives them:
//!
//! * **start** (this node becomes the active director): commit the external cache into the
//!   kernel (`-c`), flush both caches (`-f`), resync the internal cache with the kernel
//!   (`-R`), send it all to the other node (`-B`);
//! * **stop** (the group leaves): shorten the kernel's timers, so entries of connections now
//!   served elsewhere go (`-t`, after conntrackd's `PurgeTimeout`, 60 s), and ask the new
//!   active for its connections (`-n`);
//! * **status**: running while this node is the primary (started here and not stopped).
//!
//! Put it first in the group, before the VIPs: the connections are in the kernel before the
//! addresses move, and the addresses are gone before the timers shorten. The generated
//! conntrackd.conf lives in `STATE_DIR/conntrackd/` (mode 600) with the daemon's lock file
//! and control socket; conntrackd's messages go to hbd's log.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::conntrackd::{CONNTRACKD_BIN, ConntrackdSpec, SyncLink, SyncTransport};
use crate::resources::script::{ScriptError, run_with_timeout};
use crate::supervise::{Exit, Next, RespawnPolicy, RespawnState};

/// How long conntrackd gets to answer its control socket after a start.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// How much of a failed command's output its error keeps (the end).
const OUTPUT_TAIL: usize = 400;

/// Longest path a Unix socket takes (`sun_path` is 108 bytes with its NUL).
const SOCKET_PATH_MAX: usize = 107;

/// A restart policy for the daemon: at once after a long run, else 1 s doubling to 30 s.
const RESTARTS: RespawnPolicy = RespawnPolicy {
    short_run: Duration::from_secs(30),
    first_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(30),
    stop_grace: Duration::from_secs(2),
};

/// Why conntrackd could not be configured, run or switched.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackdError {
    /// The sync interface has no usable IPv4 address.
    #[error(
        "conntrackd: interface {interface} has no IPv4 address (besides the group's VIPs) to sync from; give it one"
    )]
    NoAddress {
        /// The sync interface.
        interface: String,
    },
    /// Neither unicast address is this node's.
    #[error("conntrackd: neither {} is an address of {interface} here; write the two directors' addresses on the sync link", join(.addresses))]
    NotOnLink {
        /// The sync interface.
        interface: String,
        /// The addresses written.
        addresses: Vec<Ipv4Addr>,
    },
    /// The only unicast address is this node's own.
    #[error(
        "conntrackd: {peer} is this node's own address on {interface}; write the other director's (or both)"
    )]
    PeerIsSelf {
        /// The sync interface.
        interface: String,
        /// The address written.
        peer: Ipv4Addr,
    },
    /// The interfaces could not be listed.
    #[error("conntrackd: cannot list this node's addresses: {0}")]
    Interfaces(#[source] nix::Error),
    /// The directory or the configuration could not be written.
    #[error("conntrackd: cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The control socket's path is too long for a Unix socket.
    #[error(
        "conntrackd: the control socket {path} is longer than {SOCKET_PATH_MAX} bytes; use a shorter --state-dir"
    )]
    SocketPath {
        /// The socket path.
        path: PathBuf,
    },
    /// The daemon did not answer on its control socket.
    #[error("conntrackd -C {config} did not answer within {after:?} (see its messages in the log)")]
    NotAnswering {
        /// The configuration it runs with.
        config: PathBuf,
        /// How long it was given.
        after: Duration,
    },
    /// A command (`-c`, `-t`, …) failed, timed out or could not run.
    #[error("conntrackd {flag} ({what}): {source}")]
    Command {
        /// The flag.
        flag: &'static str,
        /// What it does.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: ScriptError,
    },
}

fn join(addresses: &[Ipv4Addr]) -> String {
    addresses
        .iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(" nor ")
}

/// One conntrackd client command (conntrackd(8)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ctl {
    /// `-c`: commit the external cache into the kernel's table.
    Commit,
    /// `-f`: flush the internal and the external cache.
    Flush,
    /// `-R`: resync the internal cache with the kernel's table.
    Resync,
    /// `-B`: send a bulk update to the other node.
    BulkSend,
    /// `-t`: shorten the kernel's timers (flush after `PurgeTimeout`).
    ResetTimers,
    /// `-n`: ask the other node for a resync.
    RequestResync,
    /// `-s`: statistics, the "does it answer" probe.
    Stats,
}

impl Ctl {
    /// The command line flag.
    pub fn flag(self) -> &'static str {
        match self {
            Ctl::Commit => "-c",
            Ctl::Flush => "-f",
            Ctl::Resync => "-R",
            Ctl::BulkSend => "-B",
            Ctl::ResetTimers => "-t",
            Ctl::RequestResync => "-n",
            Ctl::Stats => "-s",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Ctl::Commit => "commit the external cache",
            Ctl::Flush => "flush the caches",
            Ctl::Resync => "resync with the kernel",
            Ctl::BulkSend => "bulk send to the other node",
            Ctl::ResetTimers => "shorten the kernel timers",
            Ctl::RequestResync => "request a resync",
            Ctl::Stats => "statistics",
        }
    }
}

/// The node's role in the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The active director: its kernel serves the connections.
    Primary,
    /// The standby: its external cache holds the active's connections.
    Backup,
}

/// The commands that make this node `to` (conntrack-tools' `primary-backup.sh`, the
/// resource-agents agent's promote and demote).
pub fn sequence(to: Role) -> &'static [Ctl] {
    match to {
        Role::Primary => &[Ctl::Commit, Ctl::Flush, Ctl::Resync, Ctl::BulkSend],
        Role::Backup => &[Ctl::ResetTimers, Ctl::RequestResync],
    }
}

/// What the generated file needs to know about this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddresses {
    /// Every address of the node (all interfaces), the group's VIPs left out.
    pub own: Vec<IpAddr>,
    /// The IPv4 addresses of the sync interface, the group's VIPs left out.
    pub on_link: Vec<Ipv4Addr>,
}

impl NodeAddresses {
    /// Reads the node's addresses (in its network namespace), leaving out `vips`.
    pub fn read(interface: &str, vips: &[IpAddr]) -> Result<NodeAddresses, ConntrackdError> {
        let mut own = Vec::new();
        let mut on_link = Vec::new();
        for a in nix::ifaddrs::getifaddrs().map_err(ConntrackdError::Interfaces)? {
            let Some(sa) = a.address else { continue };
            let ip = if let Some(v4) = sa.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = sa.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            if vips.contains(&ip) {
                continue;
            }
            if let (IpAddr::V4(v4), true) = (ip, a.interface_name == interface) {
                on_link.push(v4);
            }
            if !own.contains(&ip) {
                own.push(ip);
            }
        }
        Ok(NodeAddresses { own, on_link })
    }
}

/// Where one node's conntrackd files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    /// `STATE_DIR/conntrackd`.
    pub dir: PathBuf,
    /// The configuration conntrackd runs with (generated, or the operator's).
    pub config: PathBuf,
    /// The lock file of a generated configuration.
    pub lock: PathBuf,
    /// The control socket of a generated configuration.
    pub socket: PathBuf,
}

impl Files {
    fn new(state_dir: &Path, spec: &ConntrackdSpec) -> Files {
        let dir = state_dir.join("conntrackd");
        Files {
            config: match spec {
                ConntrackdSpec::OwnFile(path) => path.clone(),
                ConntrackdSpec::Generated(_) => dir.join("conntrackd.conf"),
            },
            lock: dir.join("conntrackd.lock"),
            socket: dir.join("conntrackd.ctl"),
            dir,
        }
    }
}

/// The conntrackd.conf of this node: FTFW over the sync link, the node's own addresses
/// ignored (only forwarded, translated connections are worth syncing; the VIPs are not
/// ignored, as every translated connection is addressed to one), TCP, UDP, SCTP and DCCP.
/// Sizes follow conntrack-tools' FTFW example.
pub fn render(
    link: &SyncLink,
    node: &NodeAddresses,
    files: &Files,
) -> Result<String, ConntrackdError> {
    let local = |want: Option<Ipv4Addr>| -> Result<Ipv4Addr, ConntrackdError> {
        match want {
            Some(a) => Ok(a),
            None => node
                .on_link
                .first()
                .copied()
                .ok_or_else(|| ConntrackdError::NoAddress {
                    interface: link.interface.clone(),
                }),
        }
    };
    let channel = match &link.transport {
        SyncTransport::Multicast(group) => format!(
            "\tMulticast {{\n\t\tIPv4_address {group}\n\t\tGroup {}\n\t\tIPv4_interface {}\n\t\tInterface {}\n{BUFFERS}\t}}\n",
            link.port,
            local(None)?,
            link.interface,
        ),
        SyncTransport::Unicast(addresses) => {
            let (me, peer) = match addresses.as_slice() {
                [peer] => {
                    let me = local(None)?;
                    if me == *peer || node.on_link.contains(peer) {
                        return Err(ConntrackdError::PeerIsSelf {
                            interface: link.interface.clone(),
                            peer: *peer,
                        });
                    }
                    (me, *peer)
                }
                _ => {
                    let mine: Vec<_> = addresses
                        .iter()
                        .filter(|a| node.on_link.contains(a))
                        .collect();
                    let [me] = mine.as_slice() else {
                        return Err(ConntrackdError::NotOnLink {
                            interface: link.interface.clone(),
                            addresses: addresses.clone(),
                        });
                    };
                    let peer = addresses.iter().find(|a| a != me).copied();
                    (**me, peer.unwrap_or(**me))
                }
            };
            format!(
                "\tUDP {{\n\t\tIPv4_address {me}\n\t\tIPv4_Destination_Address {peer}\n\t\tPort {}\n\t\tInterface {}\n{BUFFERS}\t}}\n",
                link.port, link.interface,
            )
        }
    };
    let mut ignore = String::new();
    for ip in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    ]
    .iter()
    .chain(node.own.iter().filter(|ip| !ip.is_loopback()))
    {
        let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
        ignore.push_str(&format!("\t\t\t{family}_address {ip}\n"));
    }
    Ok(format!(
        "# Written by hbd for the conntrackd resource; hbd rewrites it at every start.\n\
         Sync {{\n\tMode FTFW {{\n\t}}\n{channel}}}\n\
         General {{\n\
         \tSystemd off\n\
         \tHashSize 32768\n\
         \tHashLimit 131072\n\
         \tLogFile off\n\
         \tSyslog off\n\
         \tLockFile {lock}\n\
         \tUNIX {{\n\t\tPath {socket}\n\t}}\n\
         \tNetlinkBufferSize 2097152\n\
         \tNetlinkBufferSizeMaxGrowth 8388608\n\
         \tFilter From Userspace {{\n\
         \t\tProtocol Accept {{\n\t\t\tTCP\n\t\t\tUDP\n\t\t\tSCTP\n\t\t\tDCCP\n\t\t}}\n\
         \t\tAddress Ignore {{\n{ignore}\t\t}}\n\
         \t}}\n\
         }}\n",
        lock = files.lock.display(),
        socket = files.socket.display(),
    ))
}

/// Socket buffers of the sync channel, from conntrack-tools' example (the default ~100 KB
/// overruns on a busy director).
const BUFFERS: &str = "\t\tSndSocketBuffer 1249280\n\t\tRcvSocketBuffer 1249280\n\t\tChecksum on\n";

/// The supervising task of the running daemon.
#[derive(Debug)]
struct Supervised {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The conntrackd resource of one node.
#[derive(Debug)]
pub struct Conntrackd {
    spec: ConntrackdSpec,
    files: Files,
    group_vips: Vec<IpAddr>,
    binary: PathBuf,
    timeout: Duration,
    primary: AtomicBool,
    daemon: Mutex<Option<Supervised>>,
}

impl Conntrackd {
    /// The resource for `spec`, keeping its files under `state_dir`; each command gets
    /// `timeout`. `group_vips` are left out of the ignored addresses.
    pub fn new(
        spec: ConntrackdSpec,
        state_dir: &Path,
        group_vips: Vec<IpAddr>,
        timeout: Duration,
    ) -> Conntrackd {
        Conntrackd {
            files: Files::new(state_dir, &spec),
            spec,
            group_vips,
            binary: PathBuf::from(CONNTRACKD_BIN),
            timeout,
            primary: AtomicBool::new(false),
            daemon: Mutex::new(None),
        }
    }

    /// A short name for logs: `conntrackd on eth2` or `conntrackd -C FILE`.
    pub fn name(&self) -> String {
        match &self.spec {
            ConntrackdSpec::Generated(link) => format!("conntrackd on {}", link.interface),
            ConntrackdSpec::OwnFile(path) => format!("conntrackd -C {}", path.display()),
        }
    }

    /// Where this node's files are.
    pub fn files(&self) -> &Files {
        &self.files
    }

    /// Writes the generated configuration (mode 600, through a temporary file).
    fn write_config(&self, link: &SyncLink) -> Result<(), ConntrackdError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let written = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ConntrackdError::Write { path, source }
        };
        if self.files.socket.as_os_str().len() > SOCKET_PATH_MAX {
            return Err(ConntrackdError::SocketPath {
                path: self.files.socket.clone(),
            });
        }
        let node = NodeAddresses::read(&link.interface, &self.group_vips)?;
        let text = render(link, &node, &self.files)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.files.dir)
            .map_err(written(&self.files.dir))?;
        let tmp = self.files.dir.join("conntrackd.conf.tmp");
        {
            use std::io::Write;
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(written(&tmp))?;
            f.write_all(text.as_bytes()).map_err(written(&tmp))?;
            f.sync_all().map_err(written(&tmp))?;
        }
        std::fs::rename(&tmp, &self.files.config).map_err(written(&self.files.config))
    }

    /// Runs one client command, bounded by the timeout.
    async fn ctl(&self, step: Ctl) -> Result<String, ConntrackdError> {
        let config = self.files.config.as_os_str();
        let args = [
            std::ffi::OsStr::new("-C"),
            config,
            std::ffi::OsStr::new(step.flag()),
        ];
        let fail = |source| ConntrackdError::Command {
            flag: step.flag(),
            what: step.what(),
            source,
        };
        let out = run_with_timeout(&self.binary, &args, &[], step.flag(), self.timeout)
            .await
            .map_err(fail)?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        // conntrackd prints its refusals on stdout as often as on stderr: keep both.
        let said = format!("{} {}", out.stdout.trim(), out.stderr.trim());
        let said = said.trim();
        let from = said
            .char_indices()
            .rev()
            .nth(OUTPUT_TAIL)
            .map_or(0, |(i, _)| i);
        Err(fail(ScriptError::Failed {
            script: self.binary.clone(),
            op: step.flag().to_string(),
            code: out.status.code(),
            stderr_tail: said[from..].to_string(),
        }))
    }

    /// Whether the daemon answers on its control socket.
    async fn answers(&self) -> bool {
        self.ctl(Ctl::Stats).await.is_ok()
    }

    /// Makes sure the daemon runs under supervision here (starting it, as the backup, if
    /// it does not), and waits until it answers.
    async fn ensure_daemon(&self) -> Result<(), ConntrackdError> {
        let started = {
            let mut daemon = self.daemon.lock().unwrap_or_else(|e| e.into_inner());
            if daemon.as_ref().is_some_and(|d| !d.task.is_finished()) {
                false
            } else {
                if let ConntrackdSpec::Generated(link) = &self.spec {
                    self.write_config(link)?;
                }
                let (stop, stopped) = watch::channel(false);
                let task = tokio::spawn(supervise(
                    self.binary.clone(),
                    self.files.clone(),
                    matches!(self.spec, ConntrackdSpec::Generated(_)),
                    stopped,
                ));
                *daemon = Some(Supervised { stop, task });
                true
            }
        };
        if !started && self.answers().await {
            return Ok(());
        }
        let deadline = crate::clock::now() + ANSWER_WITHIN;
        for _ in 0..200 {
            if self.answers().await {
                if started {
                    tracing::info!(config = %self.files.config.display(), "conntrackd runs (backup until this node holds the group)");
                    // A fresh daemon knows nothing: ask the other node for its connections,
                    // as resource-agents' agent does at start (idle ones send no events).
                    if let Err(e) = self.ctl(Ctl::RequestResync).await {
                        tracing::warn!("{e}");
                    }
                }
                return Ok(());
            }
            if crate::clock::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(ConntrackdError::NotAnswering {
            config: self.files.config.clone(),
            after: ANSWER_WITHIN,
        })
    }

    async fn become_(&self, role: Role) -> Result<(), ConntrackdError> {
        self.ensure_daemon().await?;
        for step in sequence(role) {
            self.ctl(*step).await?;
        }
        self.primary.store(role == Role::Primary, Ordering::SeqCst);
        tracing::info!(
            "{}: {} now",
            self.name(),
            match role {
                Role::Primary => "primary (external cache committed to the kernel, bulk sent)",
                Role::Backup => "backup (kernel timers shortened, resync requested)",
            }
        );
        Ok(())
    }

    /// This node is the active director: primary.
    pub async fn start(&self) -> Result<(), ConntrackdError> {
        self.become_(Role::Primary).await
    }

    /// This node is the standby: backup.
    pub async fn stop(&self) -> Result<(), ConntrackdError> {
        self.become_(Role::Backup).await
    }

    /// Whether this node is the primary; starts the daemon (backup) where it does not run.
    pub async fn is_running(&self) -> Result<bool, ConntrackdError> {
        self.ensure_daemon().await?;
        Ok(self.primary.load(Ordering::SeqCst))
    }
}

impl Drop for Conntrackd {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = d.stop.send(true);
        }
    }
}

/// Keeps conntrackd running until `stopped` turns true: started again after each exit
/// ([`RESTARTS`]), its output lines logged.
async fn supervise(
    binary: PathBuf,
    files: Files,
    generated: bool,
    mut stopped: watch::Receiver<bool>,
) {
    let mut state = RespawnState::default();
    loop {
        if generated {
            // A lock left by a daemon that was killed would refuse the new one.
            let _ = std::fs::remove_file(&files.lock);
        }
        let began = crate::clock::now();
        let exit = match spawn_daemon(&binary, &files.config) {
            Err(e) => {
                tracing::error!(
                    "cannot run {} -C {}: {e}",
                    binary.display(),
                    files.config.display()
                );
                Exit::NotStarted
            }
            Ok(mut child) => {
                if let Some(out) = child.stdout.take() {
                    tokio::spawn(log_lines(out));
                }
                if let Some(err) = child.stderr.take() {
                    tokio::spawn(log_lines(err));
                }
                tokio::select! {
                    status = child.wait() => match status {
                        Ok(s) => exit_of(s),
                        Err(_) => Exit::NotStarted,
                    },
                    () = stop_asked(&mut stopped) => {
                        terminate(&mut child).await;
                        return;
                    }
                }
            }
        };
        let after = match RESTARTS.after_exit(&mut state, crate::clock::since(began), exit) {
            Next::Restart { after } => after,
            Next::Leave => RESTARTS.max_delay,
        };
        tracing::warn!("conntrackd {exit}; starting it again in {after:?}");
        tokio::select! {
            _ = tokio::time::sleep(after) => {}
            () = stop_asked(&mut stopped) => return,
        }
    }
}

/// Resolves once the stop is asked (or its sender is gone).
async fn stop_asked(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(s)) => Exit::Signal(s),
        (None, None) => Exit::NotStarted,
    }
}

/// Starts `conntrackd -C CONFIG` in the foreground, in its own process group, to receive
/// SIGTERM when the thread that started it (hbd's) ends.
fn spawn_daemon(binary: &Path, config: &Path) -> std::io::Result<tokio::process::Child> {
    let mut cmd = Command::new(binary);
    cmd.arg("-C")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // conntrackd speaks sd_notify when it finds the variable: it is not hbd's unit.
        .env_remove("NOTIFY_SOCKET")
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec and makes one prctl system
    // call (async-signal-safe), on no data shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
}

/// SIGTERM (conntrackd removes its lock and socket), then SIGKILL after the grace period.
async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(RESTARTS.stop_grace, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Logs each line conntrackd writes (it timestamps its own lines).
async fn log_lines(pipe: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(program = "conntrackd", "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(words: &[&str]) -> ConntrackdSpec {
        let args: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        ConntrackdSpec::from_args(&args).unwrap()
    }

    fn link(words: &[&str]) -> SyncLink {
        match spec(words) {
            ConntrackdSpec::Generated(l) => l,
            other => panic!("{other:?}"),
        }
    }

    fn node() -> NodeAddresses {
        NodeAddresses {
            own: vec![
                "127.0.0.1".parse().unwrap(),
                "198.51.100.11".parse().unwrap(),
                "192.0.2.1".parse().unwrap(),
                "2001:db8::11".parse().unwrap(),
            ],
            on_link: vec!["192.0.2.1".parse().unwrap()],
        }
    }

    fn files() -> Files {
        Files::new(Path::new("/var/lib/hbd"), &spec(&["eth2"]))
    }

    #[test]
    fn the_role_sequences_are_primary_backups() {
        let flags = |r| sequence(r).iter().map(|c| c.flag()).collect::<Vec<_>>();
        assert_eq!(flags(Role::Primary), ["-c", "-f", "-R", "-B"]);
        assert_eq!(flags(Role::Backup), ["-t", "-n"]);
    }

    #[test]
    fn files_live_in_the_state_directory_unless_the_operator_gives_one() {
        let f = files();
        assert_eq!(
            f.config,
            Path::new("/var/lib/hbd/conntrackd/conntrackd.conf")
        );
        assert_eq!(
            f.socket,
            Path::new("/var/lib/hbd/conntrackd/conntrackd.ctl")
        );
        assert_eq!(f.lock, Path::new("/var/lib/hbd/conntrackd/conntrackd.lock"));
        let own = Files::new(Path::new("/var/lib/hbd"), &spec(&["/etc/c.conf"]));
        assert_eq!(own.config, Path::new("/etc/c.conf"));
    }

    #[test]
    fn multicast_config_joins_the_group_on_the_sync_interface() {
        let text = render(&link(&["eth2"]), &node(), &files()).unwrap();
        assert!(text.contains("Mode FTFW {"), "{text}");
        assert!(
            text.contains(
                "\tMulticast {\n\t\tIPv4_address 225.0.0.50\n\t\tGroup 3780\n\t\tIPv4_interface 192.0.2.1\n\t\tInterface eth2\n"
            ),
            "{text}"
        );
        assert!(!text.contains("UDP {"), "{text}");
        assert!(text.contains("\tLockFile /var/lib/hbd/conntrackd/conntrackd.lock\n"));
        assert!(text.contains("\t\tPath /var/lib/hbd/conntrackd/conntrackd.ctl\n"));
        assert!(text.contains("\tSystemd off\n"), "{text}");
    }

    #[test]
    fn unicast_config_sends_to_the_address_this_node_does_not_hold() {
        let both = render(
            &link(&["eth2", "192.0.2.1", "192.0.2.2", "3781"]),
            &node(),
            &files(),
        )
        .unwrap();
        assert!(
            both.contains(
                "\tUDP {\n\t\tIPv4_address 192.0.2.1\n\t\tIPv4_Destination_Address 192.0.2.2\n\t\tPort 3781\n\t\tInterface eth2\n"
            ),
            "{both}"
        );
        // The same line on the other node sends the other way.
        let other = NodeAddresses {
            own: vec!["192.0.2.2".parse().unwrap()],
            on_link: vec!["192.0.2.2".parse().unwrap()],
        };
        let back = render(&link(&["eth2", "192.0.2.1", "192.0.2.2"]), &other, &files()).unwrap();
        assert!(
            back.contains("IPv4_address 192.0.2.2\n\t\tIPv4_Destination_Address 192.0.2.1\n"),
            "{back}"
        );
        let one = render(&link(&["eth2", "192.0.2.2"]), &node(), &files()).unwrap();
        assert!(
            one.contains("IPv4_Destination_Address 192.0.2.2\n"),
            "{one}"
        );
    }

    #[test]
    fn unusable_links_are_named() {
        let stranger = NodeAddresses {
            own: vec![],
            on_link: vec!["192.0.2.9".parse().unwrap()],
        };
        let e = render(
            &link(&["eth2", "192.0.2.1", "192.0.2.2"]),
            &stranger,
            &files(),
        )
        .unwrap_err();
        assert!(matches!(e, ConntrackdError::NotOnLink { .. }), "{e}");
        assert!(
            e.to_string().contains("neither 192.0.2.1 nor 192.0.2.2"),
            "{e}"
        );
        let e = render(&link(&["eth2", "192.0.2.1"]), &node(), &files()).unwrap_err();
        assert!(matches!(e, ConntrackdError::PeerIsSelf { .. }), "{e}");
        let bare = NodeAddresses {
            own: vec![],
            on_link: vec![],
        };
        let e = render(&link(&["eth2"]), &bare, &files()).unwrap_err();
        assert!(e.to_string().contains("eth2 has no IPv4 address"), "{e}");
    }

    #[test]
    fn the_filter_ignores_the_nodes_own_addresses_not_the_vips() {
        let text = render(&link(&["eth2"]), &node(), &files()).unwrap();
        let filter = text.split("Address Ignore {").nth(1).unwrap();
        let filter = filter.split('}').next().unwrap();
        let listed: Vec<&str> = filter
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            listed,
            [
                "IPv4_address 127.0.0.1",
                "IPv6_address ::1",
                "IPv4_address 198.51.100.11",
                "IPv4_address 192.0.2.1",
                "IPv6_address 2001:db8::11",
            ]
        );
        assert!(
            text.contains("Protocol Accept {\n\t\t\tTCP\n\t\t\tUDP\n"),
            "{text}"
        );
    }

    #[test]
    fn node_addresses_leave_out_the_vips() {
        // The loopback of the test's namespace holds 127.0.0.1; as a "VIP" it is left out.
        let with = NodeAddresses::read("lo", &[]).unwrap();
        assert!(with.on_link.contains(&Ipv4Addr::LOCALHOST), "{with:?}");
        let without = NodeAddresses::read("lo", &[IpAddr::V4(Ipv4Addr::LOCALHOST)]).unwrap();
        assert!(
            !without.on_link.contains(&Ipv4Addr::LOCALHOST),
            "{without:?}"
        );
        assert!(!without.own.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
}
