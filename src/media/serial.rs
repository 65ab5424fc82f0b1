//! The serial medium: heartbeats over a null-modem cable (`serial DEVICE`, `baud N`), as
//! heartbeat 3.0.6's `serial.c` sends them (HEARTBEAT-WIRE.md §8), so a pair keeps hearing
//! each other when the network between them is lost.
//!
//! * On the wire: heartbeat's classic text frames (`>>>\n` … `name=value\n` … `<<<\n`, no
//!   NUL) back to back, each authenticated by its inner `auth` field
//!   ([`crate::membership::wire::encode_classic`] writes them byte for byte as heartbeat
//!   does; the captured link is checked in the tests).
//! * [`framer`] reassembles frames from the byte stream and resynchronises after line
//!   noise, a cut frame, binary garbage or an over-long frame. It is pure.
//! * [`pacing`] holds the two clocks: the re-open backoff and the line's occupancy.
//! * The device is opened with the serialport crate: raw 8N1 at the configured baud, no flow
//!   control, exclusive (`TIOCEXCL` and `flock`), after checking it is a character device.
//!   One thread per device, `hbd-serial-<dev>`, owns it: it waits in `ppoll` on the device
//!   and a bell (an eventfd), hands each received frame to the callback given at
//!   [`open`], and writes the frames [`SerialTx`] leaves it.
//! * A device that cannot be opened or goes away (EIO/ENXIO/hang-up: USB adapter pulled,
//!   the other end of a pty closed) is logged once per change of state and opened again
//!   with backoff (100 ms doubling to 5 s, reset once it opens). It never stops the daemon.
//!   [`SerialLinkHandle::status`] says whether it is open, the last error and the counters.
//!
//! **Sending.** A serial line is slow: a 350-byte status takes 182 ms at 19200 baud.
//! [`SerialTx::send`] never blocks: it leaves the frame in a one-frame slot and rings the
//! device thread; a frame still waiting there is replaced by the newer one (and counted
//! as superseded). The thread writes the slot's frame only once the line has sent the
//! previous one ([`pacing::LineClock`]), and finishes a frame before it takes the next, so
//! frames never interleave and the frame that leaves is always the newest. Every frame
//! hbd sends is a `status` that repeats and supersedes the previous one, so dropping the
//! older is right; a bounded queue would send heartbeats that are already stale. When
//! keepalive is shorter than the line's frame time the line therefore carries one
//! heartbeat per frame time, and check-config says so (config `check_serial_lines`).

pub mod framer;
pub mod pacing;

mod device;
mod shared;

use shared::Shared;
pub use shared::{FrameSink, SerialLinkStatus, SerialState};

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::{FrameForm, Medium, Transmit};
use crate::config::{AuthKeys, MediumSpec, serial_line_time};
use crate::membership::wire::{self, MAX_FRAME_LEN, WireError};
pub use framer::{FramerStats, SerialFramer};

/// Frame size assumed for [`SerialLinkHandle::min_interval`] until the first frame is sent:
/// a status with sha256 and two groups (config::status_frame_bytes).
const TYPICAL_FRAME: usize = 350;

/// Why a serial link could not be started (the device itself is opened, and retried, by
/// the link's thread: a missing device is not an error here).
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// The medium given is not a serial line.
    #[error("medium {0} is not a serial line")]
    NotSerial(String),
    /// The bell (eventfd) that wakes the device thread could not be created.
    #[error("serial link {link}: creating its wakeup eventfd: {source}")]
    Bell {
        /// Link name.
        link: String,
        /// What the kernel said.
        source: nix::Error,
    },
    /// The device thread could not be started.
    #[error("serial link {link}: starting its thread: {source}")]
    Thread {
        /// Link name.
        link: String,
        /// What the kernel said.
        source: std::io::Error,
    },
}

/// The classic text form of `frame`, a netstring frame as the node builds for its UDP
/// media, as heartbeat's `serial_write` makes it (HEARTBEAT-WIRE.md §8): decoded (its
/// trailer verified), the inner `auth` field recomputed with the active key (in place, or
/// appended last when the frame had none: msgfmt netstring), written as `>>>\n` … `<<<\n`
/// without NUL. A message a classic reader would refuse (an empty value) is an error.
pub fn classic_frame(frame: &[u8], keys: &AuthKeys) -> Result<Vec<u8>, WireError> {
    let msg = wire::decode(frame, keys)?;
    wire::try_encode_classic(&msg, keys)
}

/// The transmit half of a serial link: hands frames to its device thread (module doc).
pub struct SerialTx {
    shared: Arc<Shared>,
}

impl Transmit for SerialTx {
    /// Leaves `frame`, heartbeat's classic text form (`>>>\n` … `<<<\n`, see
    /// [`crate::membership::wire::encode_classic`]), for the device thread; never blocks.
    ///
    /// A frame that is not classic text, or longer than heartbeat's `MAXMSG`, is refused
    /// (`InvalidInput`): a netstring frame would be discarded by every serial reader. A
    /// frame given while the device is not open is dropped and counted, not reported as an
    /// error: the device thread logs the link going down once and retries; a send error
    /// per heartbeat would only repeat it.
    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        if !frame.starts_with(b">>>\n") || !frame.ends_with(b"\n<<<\n") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a serial line carries classic text frames (>>> … <<<) only",
            ));
        }
        if frame.len() > MAX_FRAME_LEN {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("frame of {} bytes is over {MAX_FRAME_LEN}", frame.len()),
            ));
        }
        let s = &self.shared;
        if !s.open.load(Ordering::Acquire) {
            s.dropped_while_down.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let older = s
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(frame.to_vec());
        if older.is_some() {
            s.superseded.fetch_add(1, Ordering::Relaxed);
        }
        s.ring();
        Ok(())
    }

    fn describe(&self) -> String {
        let st = self.shared.status();
        format!("{} at {} baud", st.device.display(), st.baud)
    }

    fn form(&self) -> FrameForm {
        FrameForm::ClassicText
    }

    /// The device is open and no frame waits for the line.
    fn ready(&self) -> bool {
        self.shared.open.load(Ordering::Acquire) && !self.shared.has_frame()
    }

    fn serial_status(&self) -> Option<SerialLinkStatus> {
        Some(self.shared.snapshot())
    }
}

/// Owns a serial link's device thread: status for `hactl status`, and closing. Dropping it
/// (or [`SerialLinkHandle::close`]) stops the thread, which closes the device.
pub struct SerialLinkHandle {
    shared: Arc<Shared>,
    baud: u32,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SerialLinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialLinkHandle")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl SerialLinkHandle {
    /// The link name, `serial:DEVICE`.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// State and counters, now.
    pub fn status(&self) -> SerialLinkStatus {
        self.shared.snapshot()
    }

    /// Whether the device is open.
    pub fn is_open(&self) -> bool {
        self.shared.open.load(Ordering::Acquire)
    }

    /// Whether a frame sent now would be written next: the device is open and no frame is
    /// waiting. The node may encode the classic frame only then, and skip the line the
    /// rest of the time.
    pub fn wants_frame(&self) -> bool {
        self.is_open() && !self.shared.has_frame()
    }

    /// The shortest time between two frames on this line: the line time of the last frame
    /// sent (of a typical 350-byte status before the first).
    pub fn min_interval(&self) -> Duration {
        let len = match self.shared.last_frame_len.load(Ordering::Relaxed) {
            0 => TYPICAL_FRAME,
            n => n,
        };
        serial_line_time(len, self.baud)
    }

    /// Another transmit half for this link.
    pub fn tx(&self) -> SerialTx {
        SerialTx {
            shared: self.shared.clone(),
        }
    }

    /// Waits until `pred` holds for the status or `timeout` passes; returns the status that
    /// satisfied it. The device thread wakes waiters on every change of state and of
    /// `frames_in`/`frames_out` (not of the transmit half's counters). For tests, and for a
    /// daemon that wants to wait for the first open.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&SerialLinkStatus) -> bool,
    ) -> Option<SerialLinkStatus> {
        let guard = self.shared.status();
        let (guard, result) = self
            .shared
            .changed
            .wait_timeout_while(guard, timeout, |s| {
                let mut full = s.clone();
                full.superseded = self.shared.superseded.load(Ordering::Relaxed);
                full.dropped_while_down = self.shared.dropped_while_down.load(Ordering::Relaxed);
                !pred(&full)
            })
            .unwrap_or_else(|e| e.into_inner());
        drop(guard);
        (!result.timed_out()).then(|| self.status())
    }

    /// Stops the device thread and waits for it: the device is closed when this returns.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.ring();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SerialLinkHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs first on a link's device thread. The daemon passes one that gives the thread the
/// main thread's realtime scheduling: a new thread starts as `SCHED_OTHER` (the daemon sets
/// `SCHED_RESET_ON_FORK`), and a device thread left there is starved on a busy machine
/// while the heartbeat loop is not, so the line goes silent for longer than deadtime and
/// the peer is declared dead (scripts/bench-serial.sh showed 800 ms gaps at 115200 baud).
pub type ThreadStart = fn() -> Result<(), String>;

/// Starts the serial link of `spec` (`MediumSpec::Serial`): returns its medium (named
/// `serial:DEVICE`, for the node's media list) and the handle that owns its thread.
/// `on_frame` receives every frame read from the line, on the device thread; `on_start`
/// runs first on that thread (its error is logged, the link runs anyway).
///
/// The device is opened by the thread, so a missing or busy device is not an error here:
/// it is logged and retried (see [`SerialLinkHandle::status`]).
pub fn open(
    spec: &MediumSpec,
    on_frame: FrameSink,
    on_start: Option<ThreadStart>,
) -> Result<(Medium, SerialLinkHandle), SerialError> {
    let MediumSpec::Serial { device, baud } = spec else {
        return Err(SerialError::NotSerial(spec.link_name()));
    };
    let handle = spawn(device, *baud, on_frame, on_start)?;
    let medium = Medium {
        name: handle.name().to_string(),
        tx: Box::new(handle.tx()),
    };
    Ok((medium, handle))
}

/// Starts the thread of a serial link on `device` at `baud` (see [`open`]).
pub fn spawn(
    device: &Path,
    baud: u32,
    on_frame: FrameSink,
    on_start: Option<ThreadStart>,
) -> Result<SerialLinkHandle, SerialError> {
    let name = MediumSpec::Serial {
        device: device.to_path_buf(),
        baud,
    }
    .link_name();
    let bell = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
        .map_err(|source| SerialError::Bell {
            link: name.clone(),
            source,
        })?;
    let shared = Arc::new(Shared {
        name: name.clone(),
        slot: Mutex::new(None),
        open: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        bell,
        status: Mutex::new(SerialLinkStatus {
            device: device.to_path_buf(),
            baud,
            state: SerialState::Opening,
            opened: 0,
            frames_in: 0,
            frames_out: 0,
            superseded: 0,
            dropped_while_down: 0,
            framer: FramerStats::default(),
        }),
        changed: Condvar::new(),
        superseded: AtomicU64::new(0),
        dropped_while_down: AtomicU64::new(0),
        last_frame_len: AtomicUsize::new(0),
    });
    let thread_name = thread_name(device);
    let thread = std::thread::Builder::new()
        .name(thread_name)
        .spawn({
            let shared = shared.clone();
            let device = device.to_path_buf();
            move || {
                if let Some(start) = on_start
                    && let Err(e) = start()
                {
                    tracing::warn!(link = %shared.name, "the serial thread could not switch to realtime: {e}; the line may be late on a busy machine");
                }
                device::run(&shared, &device, baud, on_frame)
            }
        })
        .map_err(|source| SerialError::Thread { link: name, source })?;
    Ok(SerialLinkHandle {
        shared,
        baud,
        thread: Some(thread),
    })
}

/// `hbd-serial-<dev>`, with the device's file name (Linux keeps 15 bytes of a thread name;
/// the standard library refuses none).
fn thread_name(device: &Path) -> String {
    let dev = device
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dev".into());
    format!("hbd-serial-{dev}")
}

#[cfg(test)]
mod tests;
