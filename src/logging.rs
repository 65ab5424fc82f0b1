//! Where log lines go: stderr, heartbeat's `logfile` and `debugfile`, and syslog
//! (`logfacility`), at the level `debug` asks for (features.md §2.2 "Logging").
//!
//! One `tracing` subscriber with three outputs besides its level filter:
//!
//! * **stderr**, as before: journald's priority prefixes under systemd (`crate::journal`),
//!   colours only when stderr is a terminal;
//! * **files**: `logfile` gets info, warnings and errors; `debugfile` gets every line the
//!   level lets through, as heartbeat's debugfile does. Both are appended to, never
//!   coloured, reopened on [`LogHandle::apply`] (SIGHUP, `hactl reload`) and when the file
//!   was rotated away (its device/inode no longer match the path, checked at most every
//!   [`ROTATION_CHECK`] while lines are written: one `stat` per period);
//! * **syslog**: RFC 3164 lines (`<PRI>Mmm dd hh:mm:ss hbd[PID]: message`, the form glibc's
//!   syslog(3) sends; the local daemon adds the host name) as datagrams to `/dev/log` with
//!   the configured facility. Never blocks: a full socket drops the line. When `/dev/log` is
//!   absent hbd says so once and tries again every [`SYSLOG_RETRY`].
//!
//! `debug N`: 0 = info and above; 1 = hbd's debug lines too; 2 = hbd's trace lines; 3 and
//! above = trace from every library as well. `HBD_LOG` (an `EnvFilter` directive), when set,
//! overrides `debug`.
//!
//! [`LogHandle::apply`] swaps the outputs and the level for a new [`Logging`]: a reload
//! takes effect at once, and a file that cannot be opened leaves everything as it was.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, Registry, filter, reload};

use crate::config::Logging;

/// How often a log file's path is compared with the open file, while lines are written.
pub const ROTATION_CHECK: Duration = Duration::from_secs(2);
/// How often hbd tries `/dev/log` again after it was absent or refused a line.
pub const SYSLOG_RETRY: Duration = Duration::from_secs(5);
/// The syslog socket (glibc `_PATH_LOG`).
pub const DEV_LOG: &str = "/dev/log";
/// Longest syslog datagram sent (rsyslog's default maximum message size).
const MAX_SYSLOG_LINE: usize = 8192;
/// The tag in syslog lines.
const TAG: &str = "hbd";

/// A logging change that could not be made; the previous outputs stay.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// A log file could not be opened for appending.
    #[error(
        "cannot open the {what} {}: {source}; create its directory, fix the permissions, or change the `{what}` line",
        path.display()
    )]
    Open {
        /// `logfile` or `debugfile`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The facility name is not a syslog facility (the configuration checks this first).
    #[error("'{0}' is not a syslog facility")]
    Facility(String),
    /// A global subscriber was already installed.
    #[error("logging was already set up")]
    AlreadySet,
}

/// The level filter `debug N` means (see the module docs).
pub fn filter_for(debug: u8) -> &'static str {
    match debug {
        0 => "info",
        1 => "info,hbd=debug",
        2 => "info,hbd=trace",
        _ => "trace",
    }
}

/// syslog facility codes (RFC 3164 §4.1.1, `<syslog.h>`).
pub fn facility_code(name: &str) -> Option<u8> {
    Some(match name {
        "kern" => 0,
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" => 4,
        "syslog" => 5,
        "lpr" => 6,
        "news" => 7,
        "uucp" => 8,
        "cron" => 9,
        "authpriv" => 10,
        "ftp" => 11,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    })
}

/// syslog severity for a tracing level (RFC 3164 §4.1.1: err 3, warning 4, info 6, debug 7).
fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Where the outputs are and how they behave; [`LogOptions::default`] is the daemon's.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The syslog socket.
    pub syslog_path: PathBuf,
    /// How often a file's path is compared with the open file.
    pub rotation_check: Duration,
    /// Whether lines also go to stderr.
    pub stderr: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            syslog_path: PathBuf::from(DEV_LOG),
            rotation_check: ROTATION_CHECK,
            stderr: true,
        }
    }
}

/// Installs hbd's subscriber as the global one: stderr only, at `HBD_LOG` or info, until
/// [`LogHandle::apply`] adds the configured outputs.
pub fn init() -> Result<LogHandle, LoggingError> {
    let (subscriber, handle) = subscriber(LogOptions::default());
    tracing::subscriber::set_global_default(subscriber).map_err(|_| LoggingError::AlreadySet)?;
    let _ = INSTALLED.set(handle.clone());
    Ok(handle)
}

static INSTALLED: std::sync::OnceLock<LogHandle> = std::sync::OnceLock::new();

/// The handle of the subscriber [`init`] installed, if any: a reload applies the new
/// [`Logging`] through it without the handle being passed around.
pub fn installed() -> Option<&'static LogHandle> {
    INSTALLED.get()
}

/// Builds the subscriber and its handle without installing it (tests install it with
/// `tracing::subscriber::with_default`).
pub fn subscriber(
    options: LogOptions,
) -> (
    impl Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    LogHandle,
) {
    let env = std::env::var("HBD_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok());
    let env_override = env.is_some();
    let (level, level_handle) =
        reload::Layer::new(env.unwrap_or_else(|| EnvFilter::new(filter_for(0))));
    let files = FileOutputs(Arc::new(Mutex::new(Files {
        log: None,
        debug: None,
        check_every: options.rotation_check,
    })));
    let files_on = Arc::new(AtomicBool::new(false));
    let syslog = SyslogOutput(Arc::new(Mutex::new(Syslog {
        path: options.syslog_path.clone(),
        facility: None,
        socket: None,
        last_try: None,
    })));
    let syslog_on = Arc::new(AtomicBool::new(false));
    // journald's stream gets `<N>` priority prefixes, a terminal colour, anything else plain
    // lines (`crate::journal`).
    let stderr = options
        .stderr
        .then(|| crate::journal::stderr_layer(crate::journal::StderrStyle::detect()));
    let file_layer = tracing_subscriber::fmt::layer()
        .with_writer(files.clone())
        .with_target(false)
        .with_ansi(false)
        .with_filter(on_while(files_on.clone()));
    let syslog_layer = tracing_subscriber::fmt::layer()
        .with_writer(syslog.clone())
        .with_target(false)
        .with_ansi(false)
        .without_time()
        .with_level(false)
        .with_filter(on_while(syslog_on.clone()));
    let subscriber = Registry::default()
        .with(level)
        .with(stderr)
        .with(file_layer)
        .with(syslog_layer);
    let handle = LogHandle {
        inner: Arc::new(Inner {
            level: level_handle,
            env_override,
            files,
            files_on,
            syslog,
            syslog_on,
            current: Mutex::new(Logging::default()),
        }),
    };
    (subscriber, handle)
}

/// A per-layer filter that lets lines through while `flag` is set (checked per line, so
/// turning an output on or off needs no rebuild).
fn on_while<S>(
    flag: Arc<AtomicBool>,
) -> filter::DynFilterFn<
    S,
    impl Fn(&Metadata<'_>, &tracing_subscriber::layer::Context<'_, S>) -> bool,
> {
    filter::dynamic_filter_fn(move |_, _| flag.load(Ordering::Relaxed))
}

/// Changes the outputs of a running hbd: give it to whatever handles SIGHUP and
/// `hactl reload`. Cloning shares the outputs.
#[derive(Clone)]
pub struct LogHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("current", &*lock(&self.inner.current))
            .finish()
    }
}

struct Inner {
    level: reload::Handle<EnvFilter, Registry>,
    env_override: bool,
    files: FileOutputs,
    files_on: Arc<AtomicBool>,
    syslog: SyslogOutput,
    syslog_on: Arc<AtomicBool>,
    current: Mutex<Logging>,
}

/// A poisoned lock only means a panic elsewhere while logging; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LogHandle {
    /// Makes the outputs what `logging` says: opens (or reopens) both files, points syslog at
    /// the facility, sets the level. Returns what changed, one short phrase each (empty when
    /// only the files were reopened). On error nothing changes.
    pub fn apply(&self, logging: &Logging) -> Result<Vec<String>, LoggingError> {
        let log = open_opt("logfile", logging.file.as_deref())?;
        let debug = open_opt("debugfile", logging.debug_file.as_deref())?;
        let facility = match &logging.facility {
            Some(name) => {
                Some(facility_code(name).ok_or_else(|| LoggingError::Facility(name.clone()))?)
            }
            None => None,
        };
        let mut changed = Vec::new();
        let mut current = lock(&self.inner.current);
        let describe = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or_else(|| "off".to_string(), |p| p.display().to_string())
        };
        if current.file != logging.file {
            changed.push(format!("logfile {}", describe(&logging.file)));
        }
        if current.debug_file != logging.debug_file {
            changed.push(format!("debugfile {}", describe(&logging.debug_file)));
        }
        if current.facility != logging.facility {
            changed.push(format!(
                "logfacility {}",
                logging.facility.as_deref().unwrap_or("none")
            ));
        }
        if current.debug_level != logging.debug_level {
            changed.push(format!(
                "debug {} ({})",
                logging.debug_level,
                filter_for(logging.debug_level)
            ));
        }
        {
            let mut files = lock(&self.inner.files.0);
            files.log = log;
            files.debug = debug;
            self.inner.files_on.store(
                files.log.is_some() || files.debug.is_some(),
                Ordering::Relaxed,
            );
        }
        let absent = {
            let mut syslog = lock(&self.inner.syslog.0);
            syslog.facility = facility;
            syslog.socket = None;
            syslog.last_try = None;
            self.inner
                .syslog_on
                .store(facility.is_some(), Ordering::Relaxed);
            if facility.is_some() {
                syslog.connect().err().map(|e| (syslog.path.clone(), e))
            } else {
                None
            }
        };
        if !self.inner.env_override && current.debug_level != logging.debug_level {
            // A reload of a live filter only fails when the subscriber is gone.
            let _ = self
                .inner
                .level
                .reload(EnvFilter::new(filter_for(logging.debug_level)));
        }
        *current = logging.clone();
        drop(current);
        if let Some((path, e)) = absent {
            tracing::warn!(
                "logfacility {}: cannot reach {} ({e}); is a syslog daemon running? syslog lines are dropped until it answers (tried again every {}s)",
                logging.facility.as_deref().unwrap_or_default(),
                path.display(),
                SYSLOG_RETRY.as_secs()
            );
        }
        Ok(changed)
    }

    /// Reopens the log files (after a rotation that did not move them, or on SIGHUP).
    pub fn reopen(&self) -> Result<(), LoggingError> {
        let current = lock(&self.inner.current).clone();
        self.apply(&current).map(|_| ())
    }
}

/// Opens a log file for appending, creating it (mode 0640: logs may name addresses).
fn open_opt(what: &'static str, path: Option<&Path>) -> Result<Option<LogFile>, LoggingError> {
    path.map(|p| {
        LogFile::open(p).map_err(|source| LoggingError::Open {
            what,
            path: p.to_path_buf(),
            source,
        })
    })
    .transpose()
}

/// One open log file and what it was when opened.
struct LogFile {
    path: PathBuf,
    file: File,
    dev: u64,
    ino: u64,
    checked: Instant,
}

impl LogFile {
    fn open(path: &Path) -> std::io::Result<LogFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = File::options()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)?;
        let meta = file.metadata()?;
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            checked: crate::clock::now(),
        })
    }

    /// Reopens the path when it no longer names the open file (moved or removed by a
    /// rotation), at most once per `every`. A failed reopen keeps the old file.
    fn follow_rotation(&mut self, every: Duration) {
        let now = crate::clock::now();
        if now.duration_since(self.checked) < every {
            return;
        }
        self.checked = now;
        let same = std::fs::metadata(&self.path)
            .map(|m| m.dev() == self.dev && m.ino() == self.ino)
            .unwrap_or(false);
        if !same && let Ok(fresh) = LogFile::open(&self.path) {
            *self = fresh;
        }
    }

    fn write_line(&mut self, line: &[u8], every: Duration) {
        self.follow_rotation(every);
        // A log line that cannot be written has nowhere to be reported.
        let _ = self.file.write_all(line);
    }
}

struct Files {
    log: Option<LogFile>,
    debug: Option<LogFile>,
    check_every: Duration,
}

/// The file outputs, shared by the layer's writers and the handle.
#[derive(Clone)]
struct FileOutputs(Arc<Mutex<Files>>);

/// One line's way into the files: the logfile takes it only at info or above.
struct FileWriter<'a> {
    outputs: &'a FileOutputs,
    to_logfile: bool,
}

impl Write for FileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut files = lock(&self.outputs.0);
        let every = files.check_every;
        if self.to_logfile
            && let Some(f) = files.log.as_mut()
        {
            f.write_line(buf, every);
        }
        if let Some(f) = files.debug.as_mut() {
            f.write_line(buf, every);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for FileOutputs {
    type Writer = FileWriter<'a>;

    fn make_writer(&'a self) -> FileWriter<'a> {
        FileWriter {
            outputs: self,
            to_logfile: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> FileWriter<'a> {
        FileWriter {
            outputs: self,
            to_logfile: *meta.level() <= Level::INFO,
        }
    }
}

struct Syslog {
    path: PathBuf,
    facility: Option<u8>,
    socket: Option<UnixDatagram>,
    last_try: Option<Instant>,
}

impl Syslog {
    fn connect(&mut self) -> std::io::Result<()> {
        self.last_try = Some(crate::clock::now());
        let socket = UnixDatagram::unbound()?;
        socket.connect(&self.path)?;
        socket.set_nonblocking(true)?;
        self.socket = Some(socket);
        Ok(())
    }

    fn send(&mut self, severity: u8, message: &[u8]) {
        let Some(facility) = self.facility else {
            return;
        };
        if self.socket.is_none() {
            let due = self
                .last_try
                .is_none_or(|t| crate::clock::since(t) >= SYSLOG_RETRY);
            if !due || self.connect().is_err() {
                return;
            }
        }
        let line = rfc3164(
            facility,
            severity,
            crate::clock::wall(),
            std::process::id(),
            message,
        );
        if let Some(socket) = &self.socket
            && let Err(e) = socket.send(&line)
            && e.kind() != std::io::ErrorKind::WouldBlock
        {
            // The daemon went away or restarted: reconnect on a later line.
            self.socket = None;
        }
    }
}

/// The syslog output, shared by the layer's writers and the handle.
#[derive(Clone)]
struct SyslogOutput(Arc<Mutex<Syslog>>);

struct SyslogWriter<'a> {
    output: &'a SyslogOutput,
    severity: u8,
}

impl Write for SyslogWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.output.0).send(self.severity, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for SyslogOutput {
    type Writer = SyslogWriter<'a>;

    fn make_writer(&'a self) -> SyslogWriter<'a> {
        SyslogWriter {
            output: self,
            severity: 6,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> SyslogWriter<'a> {
        SyslogWriter {
            output: self,
            severity: severity(meta.level()),
        }
    }
}

/// One syslog datagram: `<PRI>Mmm dd hh:mm:ss hbd[PID]: message` (RFC 3164 §4.1 as glibc
/// sends it to /dev/log, without the host name). The time is UTC; syslog daemons stamp
/// local lines with their own receive time anyway. The message loses its trailing newline
/// and is cut to [`MAX_SYSLOG_LINE`] bytes.
pub(crate) fn rfc3164(
    facility: u8,
    severity: u8,
    now: std::time::SystemTime,
    pid: u32,
    message: &[u8],
) -> Vec<u8> {
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let pri = u16::from(facility) * 8 + u16::from(severity);
    let mut line = format!("<{pri}>{} {TAG}[{pid}]: ", timestamp(secs)).into_bytes();
    let message = message.strip_suffix(b"\n").unwrap_or(message);
    let room = MAX_SYSLOG_LINE.saturating_sub(line.len());
    let mut cut = message.len().min(room);
    // Do not split a UTF-8 sequence.
    while cut < message.len() && cut > 0 && (message[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    line.extend_from_slice(&message[..cut]);
    line
}

/// RFC 3164 TIMESTAMP (`Mmm dd hh:mm:ss`, day padded with a space) for a UNIX time, in UTC.
fn timestamp(unix_secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    let (_, month, day) = civil_from_days(days);
    format!(
        "{} {day:>2} {:02}:{:02}:{:02}",
        MONTHS[usize::from(month - 1)],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`, for days after the epoch).
fn civil_from_days(days: u64) -> (u64, u8, u8) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    // Both fit by construction (1–12, 1–31).
    (
        year,
        u8::try_from(month).unwrap_or(1),
        u8::try_from(day).unwrap_or(1),
    )
}

/// `error` and its causes as one line, `outer: cause: cause`, leaving out a cause whose text
/// the line already ends with: hbd's error messages name their cause (`cannot write X:
/// Read-only file system (os error 30)`), and printing the chain as well said it twice.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// At most one line per `interval` for a message that may repeat in a loop (an accept
/// that keeps failing): the first one at once, then one per interval with how many were
/// left out. Issue #15: a spinning accept loop wrote 16 million identical warnings.
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// One line per `interval`.
    pub fn new(interval: Duration) -> RateLimit {
        RateLimit {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether to log at `now`: `Some(lines left out since the last one)`, or `None`.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet(syslog_path: &Path) -> LogOptions {
        LogOptions {
            syslog_path: syslog_path.to_path_buf(),
            rotation_check: Duration::ZERO,
            stderr: false,
        }
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn files_get_their_levels_without_colour_and_follow_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("ha-log");
        let debug = dir.path().join("ha-debug");
        let (sub, handle) = subscriber(quiet(&dir.path().join("no-syslog")));
        tracing::subscriber::with_default(sub, || {
            let changed = handle
                .apply(&Logging {
                    file: Some(log.clone()),
                    debug_file: Some(debug.clone()),
                    facility: None,
                    debug_level: 1,
                })
                .expect("apply");
            assert_eq!(changed.len(), 3, "{changed:?}");
            tracing::info!(peer = "backup", "node is dead");
            tracing::warn!("late heartbeat");
            tracing::debug!("a debug line");
            tracing::trace!("a trace line");
            let l = read(&log);
            let d = read(&debug);
            assert!(l.contains("INFO node is dead peer=\"backup\""), "{l}");
            assert!(l.contains("WARN late heartbeat"), "{l}");
            assert!(!l.contains("debug line"), "logfile has no debug: {l}");
            assert!(
                d.contains("node is dead") && d.contains("DEBUG a debug line"),
                "{d}"
            );
            assert!(!d.contains("trace line"), "debug 1 stops at debug: {d}");
            assert!(
                !l.contains('\u{1b}') && !d.contains('\u{1b}'),
                "no ANSI codes"
            );

            // logrotate moves the file away: the next line goes to a new file at the path.
            let rotated = dir.path().join("ha-log.1");
            std::fs::rename(&log, &rotated).expect("rotate");
            tracing::info!("after rotation");
            assert!(read(&log).contains("after rotation"), "{}", read(&log));
            assert!(!read(&rotated).contains("after rotation"));

            // copytruncate-style or removed: apply (SIGHUP) reopens as well.
            std::fs::remove_file(&log).expect("rm");
            assert_eq!(handle.reopen().ok(), Some(()));
            tracing::info!("after reopen");
            assert!(read(&log).contains("after reopen"));

            // Files off: nothing more is written.
            handle.apply(&Logging::default()).expect("apply");
            tracing::info!("not written");
            assert!(!read(&log).contains("not written"));
        });
    }

    #[test]
    fn a_file_that_cannot_open_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("ha-log");
        let (sub, handle) = subscriber(quiet(&dir.path().join("no-syslog")));
        tracing::subscriber::with_default(sub, || {
            let good = Logging {
                file: Some(log.clone()),
                ..Logging::default()
            };
            handle.apply(&good).expect("apply");
            let bad = Logging {
                file: Some(dir.path().join("missing-dir/ha-log")),
                ..Logging::default()
            };
            let e = handle.apply(&bad).expect_err("no directory");
            assert!(
                e.to_string().starts_with("cannot open the logfile ")
                    && e.to_string().contains("change the `logfile` line"),
                "{e}"
            );
            tracing::info!("still here");
            assert!(read(&log).contains("still here"));
            assert_eq!(handle.apply(&good).expect("same"), Vec::<String>::new());
        });
    }

    #[test]
    fn syslog_lines_are_rfc3164_with_the_facility() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev_log = dir.path().join("log");
        let server = UnixDatagram::bind(&dev_log).expect("bind");
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let (sub, handle) = subscriber(quiet(&dev_log));
        tracing::subscriber::with_default(sub, || {
            let changed = handle
                .apply(&Logging {
                    facility: Some("local0".into()),
                    ..Logging::default()
                })
                .expect("apply");
            assert_eq!(changed, ["logfacility local0"]);
            tracing::warn!(group = "lvs", "giving up resources");
            tracing::info!("node is dead");
            tracing::debug!("not at debug 0");
            tracing::error!("a stop failed");
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 9000];
        for _ in 0..3 {
            let n = server.recv(&mut buf).expect("a syslog line");
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let pid = std::process::id();
        // local0 = 16: warning 16*8+4, info +6, err +3.
        for (line, pri, text) in [
            (&got[0], 132, "giving up resources group=\"lvs\""),
            (&got[1], 134, "node is dead"),
            (&got[2], 131, "a stop failed"),
        ] {
            let head = format!("<{pri}>");
            assert!(line.starts_with(&head), "{line}");
            assert!(line.ends_with(&format!(" hbd[{pid}]: {text}")), "{line:?}");
            assert!(
                !line.contains('\u{1b}') && !line.ends_with('\n'),
                "{line:?}"
            );
            // <PRI>Mmm dd hh:mm:ss
            let stamp = &line[head.len()..head.len() + 15];
            assert_eq!(stamp.as_bytes()[3], b' ', "{stamp}");
            assert_eq!(&stamp[9..10], ":", "{stamp}");
        }
        // The debug line was never sent (sends are synchronous, so the queue is complete).
        server.set_nonblocking(true).expect("nonblocking");
        assert!(server.recv(&mut buf).is_err(), "only three lines");
    }

    #[test]
    fn absent_dev_log_is_not_an_error_and_none_turns_syslog_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sub, handle) = subscriber(quiet(&dir.path().join("absent")));
        tracing::subscriber::with_default(sub, || {
            let on = Logging {
                facility: Some("daemon".into()),
                ..Logging::default()
            };
            assert_eq!(handle.apply(&on).expect("apply"), ["logfacility daemon"]);
            tracing::info!("dropped, no daemon");
            assert_eq!(
                handle.apply(&Logging::default()).expect("apply"),
                ["logfacility none"]
            );
        });
    }

    #[test]
    fn debug_levels_map_onto_filters() {
        assert_eq!(filter_for(0), "info");
        assert_eq!(filter_for(1), "info,hbd=debug");
        assert_eq!(filter_for(2), "info,hbd=trace");
        assert_eq!(filter_for(255), "trace");
        // Through the subscriber: debug 0 keeps debug lines out, debug 2 lets trace in, and
        // a reload changes it at once.
        let dir = tempfile::tempdir().expect("tempdir");
        let debug = dir.path().join("ha-debug");
        let (sub, handle) = subscriber(quiet(&dir.path().join("no-syslog")));
        if std::env::var_os("HBD_LOG").is_some() {
            return; // HBD_LOG overrides `debug` by design.
        }
        tracing::subscriber::with_default(sub, || {
            let mut l = Logging {
                debug_file: Some(debug.clone()),
                ..Logging::default()
            };
            handle.apply(&l).expect("apply");
            tracing::debug!("d0");
            l.debug_level = 2;
            assert_eq!(
                handle.apply(&l).expect("apply"),
                ["debug 2 (info,hbd=trace)"]
            );
            tracing::trace!("t2");
            l.debug_level = 0;
            handle.apply(&l).expect("apply");
            tracing::debug!("d0 again");
        });
        let d = read(&debug);
        assert!(!d.contains("d0"), "{d}");
        assert!(d.contains("TRACE t2"), "{d}");
    }

    #[test]
    fn timestamps_and_truncation() {
        assert_eq!(timestamp(0), "Jan  1 00:00:00");
        assert_eq!(timestamp(951_782_400), "Feb 29 00:00:00");
        assert_eq!(timestamp(1_709_251_199), "Feb 29 23:59:59");
        assert_eq!(timestamp(1_796_608_780), "Dec  7 01:59:40");
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_796_608_780);
        assert_eq!(
            rfc3164(3, 6, t, 42, b"hello\n"),
            b"<30>Dec  7 01:59:40 hbd[42]: hello"
        );
        let long = "é".repeat(MAX_SYSLOG_LINE);
        let line = rfc3164(16, 3, t, 1, long.as_bytes());
        assert!(line.len() <= MAX_SYSLOG_LINE);
        assert!(
            String::from_utf8(line).is_ok(),
            "cut on a character boundary"
        );
        assert_eq!(facility_code("local7"), Some(23));
        assert_eq!(facility_code("local8"), None);
    }

    #[test]
    fn an_error_chain_names_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot write /x/hb_generation: {source}")]
        struct Outer {
            source: std::io::Error,
        }
        let e = Outer {
            source: std::io::Error::from_raw_os_error(30),
        };
        let line = error_chain(&e);
        assert_eq!(line.matches("(os error 30)").count(), 1, "{line}");
        let wrapped = std::io::Error::other(e);
        let line = error_chain(&wrapped);
        assert_eq!(line.matches("(os error 30)").count(), 1, "{line}");
    }

    #[test]
    fn a_repeated_line_is_logged_once_per_interval_with_the_count_left_out() {
        let t0 = crate::clock::now();
        let mut limit = RateLimit::new(Duration::from_secs(1));
        assert_eq!(limit.allow(t0), Some(0));
        for i in 1..=1000 {
            assert_eq!(limit.allow(t0 + Duration::from_micros(i)), None);
        }
        assert_eq!(limit.allow(t0 + Duration::from_secs(1)), Some(1000));
        assert_eq!(limit.allow(t0 + Duration::from_millis(1001)), None);
    }
}
