//! systemd service notifications (`sd_notify(3)`), without libsystemd.
//!
//! Under `Type=notify` systemd passes the path of a Unix datagram socket in `NOTIFY_SOCKET`
//! (a file path, or an abstract-namespace name written with a leading `@`); the service sends
//! newline-separated `KEY=VALUE` assignments to it: `READY=1` once it serves, `WATCHDOG=1`
//! at least every `WatchdogSec=` (passed as `WATCHDOG_USEC`, meant for the process named by
//! `WATCHDOG_PID` when that is set), `STOPPING=1` when a clean stop begins and `STATUS=…` as
//! free text for `systemctl status`. See `sd_notify(3)` and `sd_watchdog_enabled(3)`.
//!
//! The socket is connected once and kept, so a watchdog ping from the heartbeat loop is one
//! non-blocking `send(2)`. Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.
//! Failures are returned but never fatal: the daemon's job is the cluster, not the unit.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` does not name a socket we can use.
    #[error("NOTIFY_SOCKET '{0}' is not a socket path or @abstract name")]
    BadAddress(String),
    /// Connecting or sending failed.
    #[error("cannot notify systemd at '{socket}': {source}")]
    Io {
        /// The `NOTIFY_SOCKET` value.
        socket: String,
        /// The OS error.
        source: io::Error,
    },
}

/// A connection to systemd's notification socket, or nothing when not run by systemd.
#[derive(Debug)]
pub struct Notifier {
    /// The connected socket and the `NOTIFY_SOCKET` value it came from.
    socket: Option<(UnixDatagram, String)>,
}

impl Notifier {
    /// A notifier that sends nothing (not under systemd, or in tests).
    pub fn disabled() -> Notifier {
        Notifier { socket: None }
    }

    /// Connects to `NOTIFY_SOCKET` when it is set; [`Notifier::disabled`] when it is not.
    pub fn from_env() -> Result<Notifier, NotifyError> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(value) if !value.is_empty() => Notifier::connect(&value),
            _ => Ok(Notifier::disabled()),
        }
    }

    /// Connects to `socket`: a path (`/run/systemd/notify`) or an abstract name (`@name`).
    pub fn connect(socket: &str) -> Result<Notifier, NotifyError> {
        let address = notify_address(socket)?;
        let io_error = |source| NotifyError::Io {
            socket: socket.to_string(),
            source,
        };
        let datagram = UnixDatagram::unbound().map_err(io_error)?;
        datagram.connect_addr(&address).map_err(io_error)?;
        // A full receive queue must not stall the heartbeat loop: drop the ping instead.
        datagram.set_nonblocking(true).map_err(io_error)?;
        Ok(Notifier {
            socket: Some((datagram, socket.to_string())),
        })
    }

    /// Whether notifications go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines) as one datagram.
    pub fn send(&self, state: &str) -> Result<(), NotifyError> {
        let Some((socket, name)) = &self.socket else {
            return Ok(());
        };
        socket
            .send(state.as_bytes())
            .map(drop)
            .map_err(|source| NotifyError::Io {
                socket: name.clone(),
                source,
            })
    }

    /// `READY=1`: start-up is finished (systemd then reports the unit active).
    pub fn ready(&self) -> Result<(), NotifyError> {
        self.send("READY=1")
    }

    /// `WATCHDOG=1`: the main loop is alive.
    pub fn watchdog(&self) -> Result<(), NotifyError> {
        self.send("WATCHDOG=1")
    }

    /// `STOPPING=1`: a clean stop has begun (systemd then waits up to `TimeoutStopSec=`).
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.send("STOPPING=1")
    }

    /// `STATUS=text`: one line shown by `systemctl status`. Newlines in `text` are replaced,
    /// since they would start a new assignment.
    pub fn status(&self, text: &str) -> Result<(), NotifyError> {
        self.send(&format!("STATUS={}", text.replace('\n', " ")))
    }
}

/// The socket address `NOTIFY_SOCKET` names: `@name` is Linux's abstract namespace, anything
/// starting with `/` a file path.
fn notify_address(socket: &str) -> Result<SocketAddr, NotifyError> {
    use std::os::linux::net::SocketAddrExt;
    let bad = || NotifyError::BadAddress(socket.to_string());
    if let Some(name) = socket.strip_prefix('@') {
        SocketAddr::from_abstract_name(name.as_bytes()).map_err(|_| bad())
    } else if socket.starts_with('/') {
        SocketAddr::from_pathname(socket).map_err(|_| bad())
    } else {
        Err(bad())
    }
}

/// The process-wide notifier, connected on first use from `NOTIFY_SOCKET`.
fn global() -> &'static Notifier {
    static NOTIFIER: OnceLock<Notifier> = OnceLock::new();
    NOTIFIER.get_or_init(|| {
        Notifier::from_env().unwrap_or_else(|e| {
            tracing::warn!("{e}; systemd will not hear from hbd");
            Notifier::disabled()
        })
    })
}

/// Logs a failed notification at debug level only: a lost ping shows in systemd's own log
/// when it matters, and the heartbeat loop must not flood the journal.
fn report(result: Result<(), NotifyError>) {
    if let Err(e) = result {
        tracing::debug!("{e}");
    }
}

/// Whether `NOTIFY_SOCKET` named a usable socket (hbd runs under `Type=notify`).
pub fn enabled() -> bool {
    global().is_enabled()
}

/// Tells systemd the node is up and its groups settled (`READY=1`).
pub fn notify_ready() {
    report(global().ready());
}

/// Tells systemd the heartbeat loop is alive (`WATCHDOG=1`); one `send(2)`.
pub fn notify_watchdog() {
    report(global().watchdog());
}

/// Tells systemd a clean stop has begun (`STOPPING=1`).
pub fn notify_stopping() {
    report(global().stopping());
}

/// Sets the one-line status `systemctl status hbd` shows.
pub fn notify_status(text: &str) {
    report(global().status(text));
}

/// The watchdog period systemd expects pings within (`WatchdogSec=`), or `None` when the
/// watchdog is off or meant for another process.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_interval`] from the variables' values: `usec` must be a positive number, and
/// `pid`, when set, must be `own_pid` (as `sd_watchdog_enabled(3)` checks).
pub fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Option<Duration> {
    let micros: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok()? != own_pid
    {
        return None;
    }
    Some(Duration::from_micros(micros))
}

/// When to send the next `WATCHDOG=1`: every half period, as `sd_watchdog_enabled(3)`
/// advises, so a loop that wakes every keepalive sends a ping only every few seconds.
#[derive(Debug, Clone)]
pub struct WatchdogPacer {
    /// Half the watchdog period.
    every: Duration,
    /// The earliest instant the next ping is due.
    next: Instant,
}

impl WatchdogPacer {
    /// Pings for a watchdog of `period`, the first one at once.
    pub fn new(period: Duration, now: Instant) -> WatchdogPacer {
        WatchdogPacer {
            every: period / 2,
            next: now,
        }
    }

    /// From the environment ([`watchdog_interval`]); `None` when systemd set no watchdog.
    pub fn from_env(now: Instant) -> Option<WatchdogPacer> {
        watchdog_interval().map(|p| WatchdogPacer::new(p, now))
    }

    /// Whether a ping is due at `now`; if so, the next one is due half a period later.
    pub fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + self.every;
        true
    }

    /// The instant the next ping is due (for a loop that sleeps until its next deadline).
    pub fn next_due(&self) -> Instant {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen_path() -> (tempfile::TempDir, UnixDatagram, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let name = path.to_string_lossy().into_owned();
        (dir, listener, name)
    }

    fn receive(listener: &UnixDatagram) -> String {
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = listener.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn each_notification_is_one_datagram_on_a_path_socket() {
        let (_dir, listener, name) = listen_path();
        let n = Notifier::connect(&name).unwrap();
        assert!(n.is_enabled());
        n.ready().unwrap();
        assert_eq!(receive(&listener), "READY=1");
        n.watchdog().unwrap();
        assert_eq!(receive(&listener), "WATCHDOG=1");
        n.status("2 nodes up\n1 group running").unwrap();
        assert_eq!(receive(&listener), "STATUS=2 nodes up 1 group running");
        n.stopping().unwrap();
        assert_eq!(receive(&listener), "STOPPING=1");
    }

    #[test]
    fn abstract_namespace_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("hbd-sdnotify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&address).unwrap();
        let n = Notifier::connect(&format!("@{name}")).unwrap();
        n.watchdog().unwrap();
        assert_eq!(receive(&listener), "WATCHDOG=1");
    }

    #[test]
    fn a_full_queue_does_not_block_the_sender() {
        let (_dir, _listener, name) = listen_path();
        let n = Notifier::connect(&name).unwrap();
        // Nobody reads: the queue fills and sends fail with EAGAIN instead of blocking.
        let failed = (0..10_000).map(|_| n.watchdog()).find_map(Result::err);
        match failed {
            Some(NotifyError::Io { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::WouldBlock)
            }
            other => panic!("expected EAGAIN, got {other:?}"),
        }
    }

    #[test]
    fn bad_addresses_are_refused_and_disabled_sends_nothing() {
        assert!(matches!(
            Notifier::connect("relative/path"),
            Err(NotifyError::BadAddress(_))
        ));
        assert!(matches!(
            Notifier::connect("/nonexistent/hbd/notify"),
            Err(NotifyError::Io { .. })
        ));
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        n.ready().unwrap();
    }

    #[test]
    fn watchdog_interval_follows_sd_watchdog_enabled() {
        let d = watchdog_interval_from;
        assert_eq!(d(Some("5000000"), None, 7), Some(Duration::from_secs(5)));
        assert_eq!(
            d(Some("5000000"), Some("7"), 7),
            Some(Duration::from_secs(5))
        );
        assert_eq!(d(Some("5000000"), Some("8"), 7), None, "another process's");
        assert_eq!(d(Some("5000000"), Some("x"), 7), None);
        assert_eq!(d(Some("0"), None, 7), None, "0 means off");
        assert_eq!(d(Some("soon"), None, 7), None);
        assert_eq!(d(None, Some("7"), 7), None);
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_pings_every_half_period() {
        let start = crate::clock::now();
        let mut p = WatchdogPacer::new(Duration::from_secs(5), start);
        assert!(p.due(start), "the first ping goes at once");
        assert!(!p.due(start + Duration::from_millis(10)));
        assert_eq!(p.next_due(), start + Duration::from_millis(2500));
        assert!(!p.due(start + Duration::from_millis(2499)));
        assert!(p.due(start + Duration::from_millis(2500)));
        // A late loop pings once, then waits a half period from then.
        assert!(p.due(start + Duration::from_secs(9)));
        assert!(!p.due(start + Duration::from_secs(10)));
        assert!(p.due(start + Duration::from_millis(11_500)));
    }
}
