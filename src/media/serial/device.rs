//! The device thread of one serial link: opens the device, reads and frames what arrives,
//! writes what [`super::SerialTx`] leaves, and opens the device again with backoff when it
//! cannot be opened or goes away.

use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::time::TimeSpec;
use serialport::SerialPort;

use super::framer::SerialFramer;
use super::pacing::{Backoff, LineClock};
use super::shared::{FrameSink, SerialState, Shared};

/// Bytes read from the device at a time (a second of the fastest line).
const READ_CHUNK: usize = 4096;
/// Reads in one wakeup at most, so a device that never runs dry cannot starve the writes.
const READS_PER_WAKEUP: usize = 16;

/// Why a session with an open device ended.
enum Ended {
    /// The link was closed.
    Stop,
    /// The device went away, or failed.
    Lost(String),
}

/// The thread's body: until the link is closed, open the device and serve it; between
/// attempts, wait with backoff. Each state change is logged once.
pub(super) fn run(shared: &Shared, device: &Path, baud: u32, mut on_frame: FrameSink) {
    let mut backoff = Backoff::new();
    let mut framer = SerialFramer::new();
    let mut last_error: Option<String> = None;
    while !shared.stop.load(Ordering::Acquire) {
        let error = match open_device(device, baud) {
            Ok(fd) => {
                backoff.reset();
                // Frames given while it was down are stale by now.
                shared.take_frame();
                // Open before the state says so: whoever sees `Open` may send at once.
                shared.open.store(true, Ordering::Release);
                set_state(shared, SerialState::Open, &framer, true);
                tracing::info!(link = %shared.name, "serial link open at {baud} baud");
                last_error = None;
                let ended = serve(shared, &fd, baud, &mut framer, &mut on_frame);
                shared.open.store(false, Ordering::Release);
                framer.reset();
                drop(fd);
                match ended {
                    Ended::Stop => break,
                    Ended::Lost(e) => e,
                }
            }
            Err(e) => e,
        };
        if last_error.as_deref() != Some(error.as_str()) {
            tracing::warn!(link = %shared.name, %error, "serial link down; retrying with backoff");
        }
        set_state(
            shared,
            SerialState::Retrying {
                error: error.clone(),
            },
            &framer,
            false,
        );
        last_error = Some(error);
        if wait_bell(shared, backoff.next_delay()) {
            break;
        }
    }
    shared.open.store(false, Ordering::Release);
    set_state(shared, SerialState::Stopped, &framer, false);
    tracing::debug!(link = %shared.name, "serial link closed");
}

/// Records a new state (and the framer's counters); `opened` counts an open.
fn set_state(shared: &Shared, state: SerialState, framer: &SerialFramer, opened: bool) {
    let mut s = shared.status();
    s.state = state;
    s.framer = framer.stats();
    if opened {
        s.opened += 1;
    }
    drop(s);
    shared.notify();
}

/// Opens `device` as heartbeat's `ttysetup` would, less what serialport does not offer:
/// a character device, raw 8N1 at `baud`, no flow control, exclusive, stale input and
/// output flushed; then non-blocking, so the thread never waits anywhere but in `ppoll`.
fn open_device(device: &Path, baud: u32) -> Result<OwnedFd, String> {
    let meta = std::fs::metadata(device).map_err(|e| e.to_string())?;
    if !meta.file_type().is_char_device() {
        return Err("not a character device".into());
    }
    let path = device
        .to_str()
        .ok_or_else(|| "device path is not UTF-8".to_string())?;
    let port = serialport::new(path, baud)
        .data_bits(serialport::DataBits::Eight)
        .parity(serialport::Parity::None)
        .stop_bits(serialport::StopBits::One)
        .flow_control(serialport::FlowControl::None)
        .timeout(Duration::ZERO)
        .open_native()
        .map_err(|e| e.to_string())?;
    port.clear(serialport::ClearBuffer::All)
        .map_err(|e| format!("flushing: {e}"))?;
    let raw = port.into_raw_fd();
    // SAFETY: `TTYPort::into_raw_fd` gives up the open descriptor without closing it (the
    // port forgets itself), so `raw` is open and owned by nobody else; the OwnedFd becomes
    // its only owner and closes it once.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(|e| format!("F_GETFL: {e}"))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(&fd, FcntlArg::F_SETFL(flags)).map_err(|e| format!("F_SETFL: {e}"))?;
    Ok(fd)
}

/// Waits `delay` or until the bell rings; true when the link is being closed.
fn wait_bell(shared: &Shared, delay: Duration) -> bool {
    let deadline = crate::clock::now() + delay;
    // Bounded: each turn either returns or sleeps until the deadline.
    for _ in 0..1000 {
        if shared.stop.load(Ordering::Acquire) {
            return true;
        }
        let left = deadline.saturating_duration_since(crate::clock::now());
        if left.is_zero() {
            return false;
        }
        let mut fds = [PollFd::new(shared.bell.as_fd(), PollFlags::POLLIN)];
        let _ = ppoll(&mut fds, Some(TimeSpec::from_duration(left)), None);
        // Rings of frames sent while down are of no interest: drain them.
        let _ = shared.bell.read();
    }
    shared.stop.load(Ordering::Acquire)
}

/// A frame being written: the bytes and how many have gone.
struct InFlight {
    frame: Vec<u8>,
    written: usize,
}

/// Serves an open device until it goes away or the link is closed.
fn serve(
    shared: &Shared,
    fd: &OwnedFd,
    baud: u32,
    framer: &mut SerialFramer,
    on_frame: &mut FrameSink,
) -> Ended {
    let mut line = LineClock::new(baud);
    let mut in_flight: Option<InFlight> = None;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return Ended::Stop;
        }
        let now = crate::clock::now();
        // Take the newest frame once the line has sent the last one.
        if in_flight.is_none() && line.backlog(now).is_zero() {
            in_flight = shared
                .take_frame()
                .map(|frame| InFlight { frame, written: 0 });
        }
        if let Some(f) = &mut in_flight {
            match nix::unistd::write(fd, &f.frame[f.written..]) {
                Ok(n) => f.written += n,
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(e) => return Ended::Lost(format!("write: {e}")),
            }
            if f.written == f.frame.len() {
                line.wrote(now, f.frame.len());
                shared
                    .last_frame_len
                    .store(f.frame.len(), Ordering::Relaxed);
                in_flight = None;
                shared.status().frames_out += 1;
                shared.notify();
                continue;
            }
        }

        // Wait for input, the bell, room for the rest of a frame, or the line to be free
        // for a waiting frame.
        let mut events = PollFlags::POLLIN;
        if in_flight.is_some() {
            events |= PollFlags::POLLOUT;
        }
        let timeout = (in_flight.is_none() && shared.has_frame())
            .then(|| TimeSpec::from_duration(line.backlog(now)));
        let mut fds = [
            PollFd::new(fd.as_fd(), events),
            PollFd::new(shared.bell.as_fd(), PollFlags::POLLIN),
        ];
        match ppoll(&mut fds, timeout, None) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Ended::Lost(format!("poll: {e}")),
        }
        let dev = fds[0].revents().unwrap_or(PollFlags::empty());
        let bell = fds[1].revents().unwrap_or(PollFlags::empty());
        if bell.contains(PollFlags::POLLIN) {
            let _ = shared.bell.read();
        }
        if dev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            let (got, lost) = read_available(shared, fd, &mut buf, framer, on_frame);
            if let Some(lost) = lost {
                return Ended::Lost(lost);
            }
            // A hang-up that reads nothing would wake us forever.
            if got == 0 && dev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                return Ended::Lost("hang-up".into());
            }
        }
        if dev.contains(PollFlags::POLLNVAL) {
            return Ended::Lost("device descriptor invalid".into());
        }
    }
}

/// Reads what the device holds and frames it: the bytes read, and why the device went
/// away if it did.
fn read_available(
    shared: &Shared,
    fd: &OwnedFd,
    buf: &mut [u8],
    framer: &mut SerialFramer,
    on_frame: &mut FrameSink,
) -> (usize, Option<String>) {
    let mut frames = 0u64;
    let mut got = 0;
    let mut lost = None;
    for _ in 0..READS_PER_WAKEUP {
        match nix::unistd::read(fd, buf) {
            // A tty reads 0 only once its other end hung up.
            Ok(0) => {
                lost = Some("hang-up (end of file)".to_string());
                break;
            }
            Ok(n) => {
                got += n;
                framer.push(&buf[..n], |frame| {
                    frames += 1;
                    on_frame(frame);
                });
            }
            Err(Errno::EAGAIN) => break,
            Err(Errno::EINTR) => {}
            Err(e) => {
                lost = Some(format!("read: {e}"));
                break;
            }
        }
    }
    let mut s = shared.status();
    s.frames_in += frames;
    s.framer = framer.stats();
    drop(s);
    if frames > 0 {
        shared.notify();
    }
    (got, lost)
}
