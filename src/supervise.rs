//! `respawn USER PROGRAM [ARGS]`: programs kept running beside the daemon, as heartbeat's
//! supervision does it (heartbeat.c `start_a_child_client`, `ManagedChildDied`).
//!
//! Each program runs as its user (supplementary groups, group, then user are switched in
//! the child before exec), in its own process group, with stdin from /dev/null and its
//! stdout/stderr lines copied into hbd's log. When it exits it is started again:
//!
//! * exit code 100 means "do not respawn me" (heartbeat's rule) and it is left stopped;
//! * a program that ran at least [`RespawnPolicy::short_run`] (heartbeat: 30 s) is started
//!   again at once;
//! * a program that exits sooner is started again after a delay that doubles from
//!   [`RespawnPolicy::first_delay`] (1 s) up to [`RespawnPolicy::max_delay`] (60 s). heartbeat
//!   gives up after 10 such quick exits in a row ("respawning too fast") and never tries
//!   again; hbd keeps trying once a minute, so a program that was missing a dependency comes
//!   back without a restart of the daemon, and says so at error level each time.
//!
//! On shutdown every program's process group gets SIGTERM, then SIGKILL after
//! [`RespawnPolicy::stop_grace`]. The decisions are the pure [`RespawnPolicy::after_exit`];
//! the tasks around it own the processes.
//!
//! Unlike heartbeat, which runs the line through `/bin/sh -c "exec …"`, the words are passed
//! to the program as they are: no shell expansion or quoting.

use std::ffi::CString;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Gid, Pid, Uid, User};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::RespawnSpec;

/// heartbeat does not respawn a client that exits with this code (heartbeat.c
/// `ManagedChildDied`: "If they exit 100 we won't restart them").
pub const NO_RESPAWN_EXIT_CODE: i32 = 100;

/// When a program is started again, and how long it gets to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespawnPolicy {
    /// A run shorter than this counts as a quick exit (heartbeat: 30 s).
    pub short_run: Duration,
    /// Delay after the first quick exit in a row; doubles with each further one.
    pub first_delay: Duration,
    /// Longest delay between two starts.
    pub max_delay: Duration,
    /// Time between SIGTERM and SIGKILL at shutdown.
    pub stop_grace: Duration,
}

impl Default for RespawnPolicy {
    fn default() -> Self {
        RespawnPolicy {
            short_run: Duration::from_secs(30),
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It could not be started (user gone, program gone, exec failed).
    NotStarted,
}

impl Exit {
    fn from_status(status: ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            (None, None) => Exit::NotStarted,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "was killed by {sig}"),
                Err(_) => write!(f, "was killed by signal {s}"),
            },
            Exit::NotStarted => write!(f, "could not be started"),
        }
    }
}

/// What to do after a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Start it again after this delay.
    Restart {
        /// Delay before the next start.
        after: Duration,
    },
    /// Leave it stopped.
    Leave,
}

/// Quick exits in a row, the only memory the policy needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RespawnState {
    quick_exits: u32,
}

impl RespawnPolicy {
    /// The decision after a run that lasted `ran` and ended with `exit`.
    pub fn after_exit(&self, state: &mut RespawnState, ran: Duration, exit: Exit) -> Next {
        if exit == Exit::Code(NO_RESPAWN_EXIT_CODE) {
            return Next::Leave;
        }
        if ran >= self.short_run {
            state.quick_exits = 0;
            return Next::Restart {
                after: Duration::ZERO,
            };
        }
        state.quick_exits = state.quick_exits.saturating_add(1);
        let doublings = state.quick_exits.saturating_sub(1).min(31);
        let after = self
            .first_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay);
        Next::Restart { after }
    }
}

/// Starts the `respawn` programs; see [`SupervisorHandle::stop`] for the shutdown.
#[derive(Debug)]
pub struct Supervisor;

impl Supervisor {
    /// Starts one supervising task per program with heartbeat's policy. Must be called
    /// inside a tokio runtime (the tasks run on it).
    pub fn spawn(specs: &[RespawnSpec]) -> SupervisorHandle {
        Supervisor::spawn_with(specs, RespawnPolicy::default())
    }

    /// [`Supervisor::spawn`] with another policy (tests use short delays).
    pub fn spawn_with(specs: &[RespawnSpec], policy: RespawnPolicy) -> SupervisorHandle {
        let (stop, stopped) = watch::channel(false);
        let tasks = specs
            .iter()
            .filter(|s| !s.command.is_empty())
            .map(|spec| tokio::spawn(supervise(spec.clone(), policy, stopped.clone())))
            .collect();
        SupervisorHandle { stop, tasks }
    }
}

/// The running supervision; dropping it without [`SupervisorHandle::stop`] leaves the
/// programs running.
#[derive(Debug)]
pub struct SupervisorHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl SupervisorHandle {
    /// Stops every program (SIGTERM to its process group, SIGKILL after the grace period)
    /// and waits for them; returns within the grace period plus the time to reap.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!("respawn: a supervising task failed: {e}");
            }
        }
    }

    /// How many programs are supervised.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no program is supervised.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

/// Why a program could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RespawnError {
    /// The user does not exist (any more).
    #[error("user '{0}' does not exist; create it or change the respawn line")]
    UnknownUser(String),
    /// The user database could not be read.
    #[error("looking up user '{user}': {source}")]
    UserLookup {
        /// The user.
        user: String,
        /// Why.
        source: nix::Error,
    },
    /// fork/exec failed.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The command line as one string, for logs.
fn describe(spec: &RespawnSpec) -> String {
    spec.command.join(" ")
}

/// Builds the command: its user, groups, environment, process group and pipes.
fn command_for(spec: &RespawnSpec) -> Result<Command, RespawnError> {
    let user = User::from_name(&spec.user)
        .map_err(|source| RespawnError::UserLookup {
            user: spec.user.clone(),
            source,
        })?
        .ok_or_else(|| RespawnError::UnknownUser(spec.user.clone()))?;
    let mut cmd = Command::new(&spec.command[0]);
    cmd.args(&spec.command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("HOME", &user.dir)
        .env("USER", &user.name)
        .env("LOGNAME", &user.name)
        .process_group(0);
    if user.uid != Uid::current() || user.gid != Gid::current() {
        let name = CString::new(user.name.as_bytes())
            .map_err(|_| RespawnError::UnknownUser(spec.user.clone()))?;
        let groups = nix::unistd::getgrouplist(&name, user.gid).map_err(|source| {
            RespawnError::UserLookup {
                user: spec.user.clone(),
                source,
            }
        })?;
        let (uid, gid) = (user.uid, user.gid);
        // SAFETY: the closure runs in the forked child before exec and only makes the
        // setgroups, setgid and setuid system calls on data prepared before the fork (no
        // allocation, no locks), which is async-signal-safe. Groups first, then the group,
        // then the user, as initgroups + setgid + setuid do in heartbeat.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setgroups(&groups)?;
                nix::unistd::setgid(gid)?;
                nix::unistd::setuid(uid)?;
                Ok(())
            });
        }
    }
    Ok(cmd)
}

/// Starts the program and copies its output lines into the log.
fn start(spec: &RespawnSpec) -> Result<Child, RespawnError> {
    let mut child = command_for(spec)?
        .spawn()
        .map_err(|source| RespawnError::Spawn {
            program: spec.command[0].clone(),
            source,
        })?;
    let name = program_name(spec);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(copy_lines(out, name.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(copy_lines(err, name));
    }
    Ok(child)
}

/// The program's file name, which tags its output lines.
fn program_name(spec: &RespawnSpec) -> String {
    std::path::Path::new(&spec.command[0])
        .file_name()
        .map_or_else(
            || spec.command[0].clone(),
            |n| n.to_string_lossy().into_owned(),
        )
}

/// Longest output line kept whole; a longer one is logged in pieces of this size.
const MAX_LINE: usize = 4096;

/// Logs each line a program writes (info level), until it closes the pipe.
async fn copy_lines(mut pipe: impl AsyncRead + Unpin, program: String) {
    let mut pending: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            log_line(&program, &line[..line.len() - 1]);
        }
        while pending.len() >= MAX_LINE {
            let piece: Vec<u8> = pending.drain(..MAX_LINE).collect();
            log_line(&program, &piece);
        }
    }
    if !pending.is_empty() {
        log_line(&program, &pending);
    }
}

fn log_line(program: &str, line: &[u8]) {
    tracing::info!(program, "respawn: {}", String::from_utf8_lossy(line));
}

/// Waits for a stop request; a dropped handle counts as one.
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Keeps one program running until stopped.
async fn supervise(spec: RespawnSpec, policy: RespawnPolicy, mut stop: watch::Receiver<bool>) {
    let mut state = RespawnState::default();
    let what = describe(&spec);
    loop {
        if *stop.borrow() {
            return;
        }
        let started = crate::clock::now();
        let exit = match start(&spec) {
            Ok(mut child) => {
                let pid = child
                    .id()
                    .and_then(|p| i32::try_from(p).ok())
                    .map(Pid::from_raw);
                tracing::info!(user = %spec.user, pid = ?pid.map(Pid::as_raw), "respawn: started {what}");
                tokio::select! {
                    status = child.wait() => match status {
                        Ok(s) => Exit::from_status(s),
                        Err(e) => {
                            tracing::error!("respawn: waiting for {what}: {e}");
                            Exit::NotStarted
                        }
                    },
                    () = stop_requested(&mut stop) => {
                        terminate(&mut child, pid, policy.stop_grace, &what).await;
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::error!(user = %spec.user, "respawn: {what}: {e}");
                Exit::NotStarted
            }
        };
        let ran = crate::clock::since(started);
        match policy.after_exit(&mut state, ran, exit) {
            Next::Leave => {
                tracing::warn!(
                    "respawn: {what} {exit} after {ran:.1?}; not started again (exit code {NO_RESPAWN_EXIT_CODE} asks for that)"
                );
                return;
            }
            Next::Restart { after } => {
                if after >= policy.max_delay {
                    tracing::error!(
                        "respawn: {what} {exit} after {ran:.1?}; respawning too fast, next start in {after:?}"
                    );
                } else {
                    tracing::warn!(
                        "respawn: {what} {exit} after {ran:.1?}; starting it again in {after:?}"
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(after) => {}
                    () = stop_requested(&mut stop) => return,
                }
            }
        }
    }
}

/// SIGTERM to the program's process group, SIGKILL after `grace`. The group is signalled
/// only while its leader is not yet reaped, so its id cannot belong to anyone else.
async fn terminate(child: &mut Child, pid: Option<Pid>, grace: Duration, what: &str) {
    let Some(pid) = pid else {
        return; // already reaped
    };
    let _ = killpg(pid, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => {
            let exit = status.map_or(Exit::NotStarted, Exit::from_status);
            tracing::info!("respawn: stopped {what} ({exit})");
        }
        Err(_) => {
            let _ = killpg(pid, Signal::SIGKILL);
            let exit = child
                .wait()
                .await
                .map_or(Exit::NotStarted, Exit::from_status);
            tracing::warn!(
                "respawn: {what} did not stop within {grace:?} of SIGTERM; killed ({exit})"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RespawnPolicy {
        RespawnPolicy {
            short_run: Duration::from_secs(30),
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
        }
    }

    #[test]
    fn quick_exits_back_off_by_doubling_up_to_the_cap() {
        let p = policy();
        let mut s = RespawnState::default();
        let quick = Duration::from_secs(2);
        let delays: Vec<Duration> = (0..9)
            .map(|_| match p.after_exit(&mut s, quick, Exit::Code(1)) {
                Next::Restart { after } => after,
                Next::Leave => panic!("left"),
            })
            .collect();
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // Many more never overflow.
        for _ in 0..100 {
            p.after_exit(&mut s, quick, Exit::Signal(9));
        }
        assert_eq!(
            p.after_exit(&mut s, quick, Exit::NotStarted),
            Next::Restart {
                after: Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn a_long_run_restarts_at_once_and_resets_the_backoff() {
        let p = policy();
        let mut s = RespawnState::default();
        p.after_exit(&mut s, Duration::ZERO, Exit::Code(1));
        p.after_exit(&mut s, Duration::ZERO, Exit::Code(1));
        assert_eq!(
            p.after_exit(&mut s, Duration::from_secs(30), Exit::Code(0)),
            Next::Restart {
                after: Duration::ZERO
            }
        );
        assert_eq!(
            p.after_exit(&mut s, Duration::from_secs(1), Exit::Code(0)),
            Next::Restart {
                after: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn exit_code_100_is_not_respawned() {
        let p = policy();
        let mut s = RespawnState::default();
        for ran in [Duration::ZERO, Duration::from_secs(3600)] {
            assert_eq!(p.after_exit(&mut s, ran, Exit::Code(100)), Next::Leave);
        }
        assert_ne!(
            p.after_exit(&mut s, Duration::ZERO, Exit::Signal(100)),
            Next::Leave
        );
    }

    #[test]
    fn exits_read_like_heartbeat_s_log() {
        assert_eq!(Exit::Code(3).to_string(), "exited with code 3");
        assert_eq!(Exit::Signal(9).to_string(), "was killed by SIGKILL");
    }

    fn quick_policy() -> RespawnPolicy {
        RespawnPolicy {
            short_run: Duration::from_secs(30),
            first_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(80),
            stop_grace: Duration::from_millis(500),
        }
    }

    /// Writes `body` as the shell script `dir/name` and supervises it as the current user
    /// under [`quick_policy`].
    fn supervise_script(dir: &std::path::Path, name: &str, body: &str) -> SupervisorHandle {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let user = User::from_uid(Uid::current())
            .expect("passwd")
            .expect("current user")
            .name;
        let spec = RespawnSpec {
            user,
            command: vec![path.display().to_string()],
        };
        Supervisor::spawn_with(&[spec], quick_policy())
    }

    /// Waits (bounded) until `path` holds at least `n` lines; returns them.
    async fn lines_at_least(path: &std::path::Path, n: usize) -> Vec<String> {
        for _ in 0..500 {
            if let Ok(t) = std::fs::read_to_string(path) {
                let lines: Vec<String> = t.lines().map(str::to_string).collect();
                if lines.len() >= n {
                    return lines;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} never held {n} lines", path.display());
    }

    fn alive(pid: i32) -> bool {
        nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
    }

    #[tokio::test]
    async fn a_program_that_exits_is_restarted_and_stopped_on_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = dir.path().join("runs");
        // Exits at once twice, then stays up (its pid recorded) until stopped.
        let handle = supervise_script(
            dir.path(),
            "prog",
            &format!(
                "echo \"$$\" >> {runs}\n[ \"$(wc -l < {runs})\" -ge 3 ] || exit 3\nexec sleep 60",
                runs = runs.display()
            ),
        );
        assert_eq!(handle.len(), 1);
        let pids = lines_at_least(&runs, 3).await;
        let last: i32 = pids[2].parse().expect("pid");
        assert!(alive(last));
        let t0 = crate::clock::now();
        handle.stop().await;
        assert!(
            crate::clock::since(t0) < Duration::from_millis(500),
            "sleep stops at SIGTERM"
        );
        assert!(!alive(last), "stopped on shutdown");
        assert_eq!(lines_at_least(&runs, 3).await.len(), 3, "not started again");
    }

    #[tokio::test]
    async fn a_program_ignoring_sigterm_is_killed_with_its_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pids = dir.path().join("pids");
        // The shell ignores TERM; its child sleep is in the same group.
        let handle = supervise_script(
            dir.path(),
            "stubborn",
            &format!(
                "trap '' TERM\nsleep 60 &\necho \"$$ $!\" > {p}.tmp && mv {p}.tmp {p}\nwhile :; do wait; done",
                p = pids.display()
            ),
        );
        let line = lines_at_least(&pids, 1).await.remove(0);
        let both: Vec<i32> = line
            .split_whitespace()
            .map(|p| p.parse().expect("pid"))
            .collect();
        assert!(both.iter().all(|p| alive(*p)));
        let t0 = crate::clock::now();
        handle.stop().await;
        let took = crate::clock::since(t0);
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(3),
            "{took:?}"
        );
        // The shell is reaped; its sleep (same group) got the SIGKILL too.
        assert!(!alive(both[0]));
        for _ in 0..200 {
            if !alive(both[1]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!alive(both[1]), "the group's other process was killed");
    }

    #[tokio::test]
    async fn output_lines_and_exit_100() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = dir.path().join("runs");
        let handle = supervise_script(
            dir.path(),
            "once",
            &format!("echo run >> {}\necho hello\nexit 100", runs.display()),
        );
        lines_at_least(&runs, 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            lines_at_least(&runs, 1).await.len(),
            1,
            "exit 100: not again"
        );
        handle.stop().await;
    }

    #[tokio::test]
    async fn lines_are_split_and_bounded() {
        let (mut w, r) = tokio::io::duplex(64);
        let task = tokio::spawn(copy_lines(r, "t".into()));
        use tokio::io::AsyncWriteExt;
        w.write_all(b"a\nb").await.expect("write");
        w.write_all(&vec![b'x'; MAX_LINE * 2 + 5])
            .await
            .expect("write");
        drop(w);
        task.await.expect("copy ends at EOF");
    }
}
