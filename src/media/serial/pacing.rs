//! The serial link's two clocks, as plain data: when to try a lost device again
//! ([`Backoff`]) and when the line is free for the next frame ([`LineClock`]).

use std::time::Duration;

use tokio::time::Instant;

use crate::config::serial_line_time;

/// First wait before re-opening a device that could not be opened or went away.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between two attempts: a USB adapter plugged back in is used within 5 s.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Exponential backoff between attempts to open a device: 100 ms, doubling to 5 s; reset
/// once the device opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    /// A backoff at its first step.
    pub fn new() -> Backoff {
        Backoff {
            next: BACKOFF_FIRST,
        }
    }

    /// The wait before the next attempt; the one after is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(BACKOFF_MAX);
        d
    }

    /// The device opened: the next loss starts again from the first step.
    pub fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}

/// When the line will have sent everything written to it, from the bytes written and the
/// baud rate (10 bits a byte, 8N1).
///
/// The link writes a frame only when the line is idle, so the kernel's output buffer (4 KiB,
/// two seconds at 19200 baud) never fills with heartbeats that are stale by the time they
/// leave: the frame written is always the newest one. On a pseudo-terminal, which moves
/// bytes at memory speed whatever its baud, this also paces frames as the real line would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineClock {
    baud: u32,
    busy_until: Option<Instant>,
}

impl LineClock {
    /// An idle line at `baud`.
    pub fn new(baud: u32) -> LineClock {
        LineClock {
            baud,
            busy_until: None,
        }
    }

    /// How long the line still needs for what was written before `now` (zero when idle).
    pub fn backlog(&self, now: Instant) -> Duration {
        self.busy_until
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// `bytes` were handed to the device at `now`: they leave after what is already queued.
    pub fn wrote(&mut self, now: Instant, bytes: usize) {
        let start = self.busy_until.map_or(now, |t| t.max(now));
        self.busy_until = Some(start + serial_line_time(bytes, self.baud));
    }

    /// The device was re-opened: nothing of ours is queued on it.
    pub fn clear(&mut self) {
        self.busy_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let ms: Vec<u128> = (0..9).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_FIRST);
    }

    #[test]
    fn line_clock_queues_frames_back_to_back() {
        let t0 = crate::clock::now();
        let mut line = LineClock::new(19200);
        assert_eq!(line.backlog(t0), Duration::ZERO);
        // 192 bytes at 19200 baud: 1920 bits, 100 ms.
        line.wrote(t0, 192);
        assert_eq!(line.backlog(t0), Duration::from_millis(100));
        assert_eq!(
            line.backlog(t0 + Duration::from_millis(40)),
            Duration::from_millis(60)
        );
        // Written while busy: queued behind the first.
        line.wrote(t0 + Duration::from_millis(40), 192);
        assert_eq!(line.backlog(t0), Duration::from_millis(200));
        // Written long after: starts then.
        let later = t0 + Duration::from_secs(1);
        line.wrote(later, 1152);
        assert_eq!(line.backlog(later), Duration::from_millis(600));
        assert_eq!(line.backlog(later + Duration::from_secs(1)), Duration::ZERO);
        line.clear();
        assert_eq!(line.backlog(later), Duration::ZERO);
    }
}
