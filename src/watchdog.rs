//! The kernel watchdog (`watchdog DEVICE` in ha.cf), used as heartbeat uses it
//! (heartbeat.c `hb_init_watchdog`, `hb_tickle_watchdog`, `hb_close_watchdog`).
//!
//! The device is opened at start; the heartbeat loop writes one byte to it every keepalive
//! ([`Watchdog::pet`]); a clean stop writes the magic `V` and closes it
//! ([`Watchdog::close_clean`]), which disarms the timer. If hbd hangs, the writes stop and the
//! kernel reboots the node when the timer runs out; if hbd dies, the device is closed
//! without the `V`, the timer stays armed, and the node reboots too. That is the point: a
//! node that cannot heartbeat must not keep holding its VIPs. (A driver loaded with
//! `nowayout=1` ignores the `V` and reboots even after a clean stop; use `nowayout=0`.)
//!
//! The timer length is set as heartbeat sets it: deadtime + 10 ms, rounded up to whole
//! seconds (`WDIOC_SETTIMEOUT`); a device that cannot set it keeps its own.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::libc;

/// A watchdog problem, naming the device and the fix.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    /// The device could not be opened.
    #[error(
        "cannot open the watchdog device {}: {source}; load a watchdog driver (`modprobe softdog nowayout=0`), or fix or remove the `watchdog` line",
        path.display()
    )]
    Open {
        /// The device.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A pet or the magic close could not be written.
    #[error("writing to the watchdog device {}: {source}", path.display())]
    Write {
        /// The device.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Closing the device failed (the timer may still be armed).
    #[error("closing the watchdog device {}: {source}; the timer may still be armed", path.display())]
    Close {
        /// The device.
        path: PathBuf,
        /// Why.
        source: nix::Error,
    },
    /// The driver would not take the timer length.
    #[error(
        "the watchdog device {} did not take a {secs} s timeout ({source}); it keeps its own (see /sys/class/watchdog/*/timeout)",
        path.display()
    )]
    Timeout {
        /// The device.
        path: PathBuf,
        /// The seconds asked for.
        secs: i32,
        /// Why.
        source: nix::Error,
    },
}

nix::ioctl_readwrite!(
    /// linux/watchdog.h `WDIOC_SETTIMEOUT` = `_IOWR('W', 6, int)`: sets the timer in
    /// seconds and reads back what the driver took.
    wdioc_settimeout,
    b'W',
    6,
    libc::c_int
);

/// heartbeat's watchdog timer for a deadtime: deadtime + 10 ms (heartbeat.c
/// `hb_init_watchdog_interval`), which the driver rounds up to whole seconds.
pub fn timeout_for(deadtime: Duration) -> Duration {
    deadtime + Duration::from_millis(10)
}

/// An open watchdog device.
#[derive(Debug)]
pub struct Watchdog {
    file: File,
    path: PathBuf,
}

impl Watchdog {
    /// Opens the device write-only and close-on-exec (std sets `O_CLOEXEC` on every open), so
    /// the scripts and programs hbd starts never hold it.
    pub fn open(path: &Path) -> Result<Watchdog, WatchdogError> {
        let file =
            File::options()
                .write(true)
                .open(path)
                .map_err(|source| WatchdogError::Open {
                    path: path.to_path_buf(),
                    source,
                })?;
        Ok(Watchdog {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The device's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the timer length, rounded up to whole seconds; returns the length the driver
    /// took (it may round it again).
    pub fn set_timeout(&self, timeout: Duration) -> Result<Duration, WatchdogError> {
        let secs = i32::try_from(timeout.as_millis().div_ceil(1000))
            .unwrap_or(i32::MAX)
            .max(1);
        let mut value: libc::c_int = secs;
        // SAFETY: the fd is open for the life of `self.file`, and WDIOC_SETTIMEOUT reads and
        // writes exactly one c_int through the pointer, which points at a live local.
        unsafe { wdioc_settimeout(self.file.as_raw_fd(), &raw mut value) }.map_err(|source| {
            WatchdogError::Timeout {
                path: self.path.clone(),
                secs,
                source,
            }
        })?;
        Ok(Duration::from_secs(u64::try_from(value).unwrap_or(0)))
    }

    /// Resets the timer: one write of one byte (heartbeat writes a NUL), a single system
    /// call, cheap enough for every keepalive on the heartbeat thread. A failure is
    /// reported; the caller logs it and keeps heartbeating (the timer then runs out).
    pub fn pet(&mut self) -> Result<(), WatchdogError> {
        self.write_byte(0)
    }

    /// The clean stop: writes the magic `V` so the driver disarms the timer on close, then
    /// closes the device. Called once, after the groups are released.
    pub fn close_clean(mut self) -> Result<(), WatchdogError> {
        self.write_byte(b'V')?;
        let fd = self.file.into_raw_fd();
        nix::unistd::close(fd).map_err(|source| WatchdogError::Close {
            path: self.path,
            source,
        })
    }

    fn write_byte(&mut self, byte: u8) -> Result<(), WatchdogError> {
        match self.file.write(&[byte]) {
            Ok(1) => Ok(()),
            Ok(_) => Err(WatchdogError::Write {
                path: self.path.clone(),
                source: std::io::Error::from(std::io::ErrorKind::WriteZero),
            }),
            Err(source) => Err(WatchdogError::Write {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    // The kernel's softdog is not available on the test machines (not built), so these run
    // against a plain file and a fifo, which see exactly the bytes a driver would.

    #[test]
    fn magic_close_writes_v_after_the_pets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = dir.path().join("watchdog");
        std::fs::write(&dev, b"").expect("create");
        let mut w = Watchdog::open(&dev).expect("open");
        for _ in 0..3 {
            w.pet().expect("pet");
        }
        w.close_clean().expect("close");
        assert_eq!(std::fs::read(&dev).expect("read"), b"\0\0\0V");
    }

    #[test]
    fn a_dropped_watchdog_is_not_disarmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = dir.path().join("watchdog");
        std::fs::write(&dev, b"").expect("create");
        let mut w = Watchdog::open(&dev).expect("open");
        w.pet().expect("pet");
        drop(w); // a crash or a panic: no `V`, the timer stays armed and the node reboots.
        assert_eq!(std::fs::read(&dev).expect("read"), b"\0");
    }

    #[test]
    fn a_reader_on_a_fifo_sees_pets_then_v_then_the_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = dir.path().join("watchdog.fifo");
        nix::unistd::mkfifo(&dev, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let mut reader = File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&dev)
            .expect("reader");
        let mut w = Watchdog::open(&dev).expect("open");
        w.pet().expect("pet");
        w.pet().expect("pet");
        w.close_clean().expect("close");
        let mut got = Vec::new();
        // The writer is closed, so the read ends at EOF once the bytes are read.
        reader.read_to_end(&mut got).expect("read");
        assert_eq!(got, b"\0\0V");
    }

    #[test]
    fn open_failure_names_the_device_and_the_fix() {
        let e = Watchdog::open(Path::new("/nonexistent/watchdog")).expect_err("no device");
        let text = e.to_string();
        assert!(
            text.starts_with("cannot open the watchdog device /nonexistent/watchdog: "),
            "{text}"
        );
        assert!(text.contains("modprobe softdog"), "{text}");
    }

    #[test]
    fn timeout_is_heartbeat_s_and_a_plain_file_refuses_it() {
        assert_eq!(
            timeout_for(Duration::from_secs(30)),
            Duration::from_millis(30_010)
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = dir.path().join("watchdog");
        std::fs::write(&dev, b"").expect("create");
        let w = Watchdog::open(&dev).expect("open");
        let e = w
            .set_timeout(timeout_for(Duration::from_secs(30)))
            .expect_err("not a watchdog");
        assert!(e.to_string().contains("did not take a 31 s timeout"), "{e}");
    }

    /// The cost of a pet (the heartbeat thread pays it every keepalive); /dev/null stands in
    /// for the driver's write handler.
    #[test]
    fn a_pet_is_one_cheap_write() {
        let mut w = Watchdog::open(Path::new("/dev/null")).expect("open /dev/null");
        let n = 20_000u32;
        let start = crate::clock::now();
        for _ in 0..n {
            w.pet().expect("pet");
        }
        let each = crate::clock::since(start) / n;
        println!("watchdog pet: {each:?} each over {n}");
        assert!(each < Duration::from_micros(100), "{each:?}");
    }
}
