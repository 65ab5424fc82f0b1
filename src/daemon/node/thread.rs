//! The node on a thread of its own: the daemon's heartbeat loop.
//!
//! At keepalive 10 ms a node wakes a hundred or more times a second, and on an idle machine
//! each wakeup starts with cold caches: what it costs is mostly how much code and memory it
//! touches. On its own thread the node waits in one `ppoll` on its receive sockets and a
//! bell, reads frames itself and sends from the same wakeup; the async runtime (control
//! socket, resource operations, director checks) sleeps through heartbeats entirely.
//!
//! Answers to our heartbeats that say nothing new wait on each receiver's twin socket (see
//! [`crate::media::udp`]): the thread reads them when something else wakes it (the peer's
//! next heartbeat) or when a liveness deadline is due, each dated by its kernel receive
//! time, so a pair taking turns costs each node one wakeup per keepalive instead of one and
//! a half, and a peer is still declared dead at exactly its deadtime.
//!
//! Everything else reaches the node as [`Mail`] through a channel whose sender rings the
//! bell (an eventfd): control calls, finished group operations and the shutdown request,
//! forwarded from the runtime by one small task.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::time::TimeSpec;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{Mail, Node, OpDone};
use crate::control::server::ControlCall;
use crate::media::udp::{RECV_BUFFER, ReceiveSocket};

/// Most answers read from one twin socket at a time (a flood of forged answers cannot keep
/// the node from its timers: the rest is read next time).
const ANSWERS_PER_READ: usize = 64;

/// The wall clock as the kernel stamps received frames (since the Unix epoch).
fn wall_clock() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// When a frame the kernel stamped `stamp` (wall clock) arrived, on the node's clock: `now`
/// less its age, never before `since` (it was not there at the previous read, so a stepped
/// wall clock cannot make it older) nor after `now`; `now` without a stamp.
fn arrival(now: Instant, wall_now: Duration, stamp: Option<Duration>, since: Instant) -> Instant {
    let Some(stamp) = stamp else {
        return now;
    };
    let age = wall_now.saturating_sub(stamp);
    now.checked_sub(age).unwrap_or(since).max(since).min(now)
}

/// An eventfd the node thread waits on; ringing it wakes the thread.
#[derive(Debug)]
pub struct Bell(EventFd);

impl Bell {
    /// A new, silent bell.
    pub fn new() -> std::io::Result<Bell> {
        EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map(Bell)
            .map_err(std::io::Error::from)
    }

    /// Wakes the thread (rings accumulate until it drains them).
    pub fn ring(&self) {
        // EAGAIN only when the counter is about to overflow: it is ringing already.
        let _ = self.0.write(1);
    }

    fn drain(&self) {
        let _ = self.0.read();
    }
}

/// Forwards the runtime's inputs to the node thread, ringing the bell for each.
async fn forward_mail(
    mut control: mpsc::Receiver<ControlCall>,
    mut op_rx: mpsc::UnboundedReceiver<OpDone>,
    mut shutdown: watch::Receiver<bool>,
    mail: std_mpsc::Sender<Mail>,
    bell: Arc<Bell>,
) {
    let mut control_open = true;
    let mut shutdown_open = true;
    loop {
        let next = tokio::select! {
            changed = shutdown.changed(), if shutdown_open => {
                if changed.is_err() {
                    shutdown_open = false;
                    Some(Mail::Shutdown)
                } else if *shutdown.borrow() {
                    Some(Mail::Shutdown)
                } else {
                    None
                }
            }
            Some(done) = op_rx.recv() => Some(Mail::OpDone(done)),
            call = control.recv(), if control_open => match call {
                Some(call) => Some(Mail::Call(call)),
                None => {
                    control_open = false;
                    None
                }
            },
            else => return,
        };
        if let Some(m) = next {
            if mail.send(m).is_err() {
                return;
            }
            bell.ring();
        }
    }
}

impl Node {
    /// Runs the node on the calling thread until `shutdown` turns true: the daemon starts a
    /// thread for it (see the module doc). The thread must have entered the runtime
    /// (`Handle::enter`): group operations and slow control answers are spawned onto it.
    /// Call [`Node::prepare`] first.
    pub fn run_on_thread(
        mut self,
        receivers: Vec<ReceiveSocket>,
        control: mpsc::Receiver<ControlCall>,
        shutdown: watch::Receiver<bool>,
        bell: Arc<Bell>,
    ) {
        let op_rx = self.op_rx.take().expect("run_on_thread is called once");
        let (mail_tx, mail) = std_mpsc::channel();
        let forwarder = tokio::spawn(forward_mail(
            control,
            op_rx,
            shutdown,
            mail_tx,
            bell.clone(),
        ));
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut fds: Vec<PollFd> = std::iter::once(bell.0.as_fd())
            .chain(receivers.iter().map(ReceiveSocket::fd))
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        let mut stop_deadline = None;
        let mut wait_errors = 0u64;
        let mut answers_read_at = Instant::now();
        loop {
            let mut now = Instant::now();
            // A liveness deadline is decided on everything received, answers included.
            if self.liveness.next_deadline().is_some_and(|d| d <= now) {
                answers_read_at = self.read_answers(&receivers, &mut buf, answers_read_at);
                now = Instant::now();
            }
            let Some(wake) = self.turn(now, stop_deadline) else {
                break;
            };
            // From after the turn (its sends take time), so the wait ends at `wake`.
            let timeout = TimeSpec::from(wake.saturating_duration_since(Instant::now()));
            match ppoll(&mut fds, Some(timeout), None) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => {
                    // Not expected with valid descriptors; never spin on it.
                    wait_errors += 1;
                    if wait_errors.is_power_of_two() {
                        tracing::error!(error = %e, count = wait_errors, "waiting for heartbeats failed");
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    continue;
                }
            }
            if fds[1..].iter().any(|fd| fd.any() == Some(true)) {
                // Answers first: they are older than what woke us.
                answers_read_at = self.read_answers(&receivers, &mut buf, answers_read_at);
            }
            for (i, socket) in receivers.iter().enumerate() {
                if fds[i + 1].any() == Some(true) {
                    self.read_frame(socket, &mut buf);
                }
            }
            if fds[0].any() == Some(true) {
                bell.drain();
                while let Ok(m) = mail.try_recv() {
                    self.on_mail(Instant::now(), m, &mut stop_deadline);
                }
            }
        }
        forwarder.abort();
        if let Some(writer) = self.generation_writer.take() {
            writer.close_blocking();
        }
        tracing::info!(node = %self.identity.name, "node stopped");
    }

    /// Reads and applies every answer queued on the receivers' twins, each at the instant
    /// the kernel received it (no earlier than `since`, the previous read). Returns when
    /// this read started, the next one's `since`.
    fn read_answers(
        &mut self,
        receivers: &[ReceiveSocket],
        buf: &mut [u8],
        since: Instant,
    ) -> Instant {
        let started = Instant::now();
        for socket in receivers {
            for _ in 0..ANSWERS_PER_READ {
                match socket.try_recv_answer(buf) {
                    Ok(Some((inbound, stamp))) => {
                        let at = arrival(Instant::now(), wall_clock(), stamp, since);
                        self.on_frame(at, inbound);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.receive_failed(&e);
                        break;
                    }
                }
            }
        }
        started
    }

    /// Reads and applies one frame of `socket`. One per wakeup: the wait that follows
    /// returns at once while more are queued, and in the usual case of one frame the read
    /// that would only have said "nothing more" is saved.
    fn read_frame(&mut self, socket: &ReceiveSocket, buf: &mut [u8]) {
        match socket.try_recv(buf) {
            Ok(Some(inbound)) => self.on_frame(Instant::now(), inbound),
            Ok(None) => {}
            Err(e) => self.receive_failed(&e),
        }
    }

    /// A read that returned no frame: nothing queued (quiet), or an error, logged at a
    /// limited rate (e.g. ECONNREFUSED after an ICMP error: nothing to read, try next time).
    fn receive_failed(&mut self, e: &std::io::Error) {
        use std::io::ErrorKind::{Interrupted, WouldBlock};
        if matches!(e.kind(), WouldBlock | Interrupted) {
            return;
        }
        if let Some(suppressed) = self.drop_log.allow("receive", Instant::now()) {
            tracing::warn!(error = %e, suppressed, "heartbeat receive failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_answer_is_dated_by_its_kernel_stamp_within_the_read_window() {
        let since = Instant::now();
        let now = since + 10 * MS;
        let wall = Duration::from_secs(1_700_000_000);
        // received 8 ms ago
        assert_eq!(arrival(now, wall, Some(wall - 8 * MS), since), now - 8 * MS);
        // a stamp from before the previous read (the wall clock was stepped back)
        assert_eq!(arrival(now, wall, Some(wall - 60 * MS), since), since);
        // a stamp in the future (the wall clock was stepped forward)
        assert_eq!(arrival(now, wall, Some(wall + 5 * MS), since), now);
        // no stamp: now
        assert_eq!(arrival(now, wall, None, since), now);
    }
}
