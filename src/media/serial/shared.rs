//! What a serial link's device thread and its handles share: the frame slot, the state and
//! the counters. Below both [`super::device`] and the link's handles, so neither imports the
//! other.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use nix::sys::eventfd::EventFd;

pub use crate::media::serial_status::{SerialLinkStatus, SerialState};

/// Receives each complete frame read from the line, on the device thread.
pub type FrameSink = Box<dyn FnMut(Vec<u8>) + Send>;

/// What the device thread and the handles share.
pub(super) struct Shared {
    /// Link name, `serial:DEVICE`.
    pub(super) name: String,
    /// The newest frame not yet taken by the device thread.
    pub(super) slot: Mutex<Option<Vec<u8>>>,
    /// Whether the device is open (read without a lock on every send).
    pub(super) open: AtomicBool,
    /// Set when the link is closed.
    pub(super) stop: AtomicBool,
    /// Wakes the device thread: a frame in the slot, or stop.
    pub(super) bell: EventFd,
    /// State and the thread's counters; `changed` is notified on every update.
    pub(super) status: Mutex<SerialLinkStatus>,
    pub(super) changed: Condvar,
    pub(super) superseded: AtomicU64,
    pub(super) dropped_while_down: AtomicU64,
    /// Length of the last frame sent, for [`SerialLinkHandle::min_interval`].
    pub(super) last_frame_len: AtomicUsize,
}

impl Shared {
    pub(super) fn ring(&self) {
        // EAGAIN only when the counter is about to overflow: it is ringing already.
        let _ = self.bell.write(1);
    }

    /// The status, for the device thread to update (then [`Shared::notify`]).
    pub(super) fn status(&self) -> MutexGuard<'_, SerialLinkStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn notify(&self) {
        self.changed.notify_all();
    }

    pub(super) fn take_frame(&self) -> Option<Vec<u8>> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub(super) fn has_frame(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    pub(super) fn snapshot(&self) -> SerialLinkStatus {
        let mut s = self.status().clone();
        s.superseded = self.superseded.load(Ordering::Relaxed);
        s.dropped_while_down = self.dropped_while_down.load(Ordering::Relaxed);
        s
    }
}
