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
//! forwarded from the runtime by one small task ([`super::forward_mail`]).
//!
//! The loop itself is [`Node::run`], the same the simulation runs; here it is driven by
//! [`run_ready`], since every wait blocks this thread instead of returning `Pending`.

use std::future::Future;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, UNIX_EPOCH};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::time::TimeSpec;
use tokio::time::Instant;

use super::inputs::{InputSink, Inputs, Mail, MailSender};
use crate::media::udp::{RECV_BUFFER, ReceiveSocket};

/// Most answers read from one twin socket at a time (a flood of forged answers cannot keep
/// the node from its timers: the rest is read next time).
const ANSWERS_PER_READ: usize = 64;

/// The wall clock as the kernel stamps received frames (since the Unix epoch).
fn wall_clock() -> Duration {
    crate::clock::wall()
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

/// Runs a future that never waits (the daemon's node loop over [`ThreadInputs`], whose
/// waits block the thread in `ppoll` instead) to completion on the calling thread.
pub fn run_ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        // Not expected: every wait of ThreadInputs is ready at once. Never spin hot on it.
        std::thread::yield_now();
    }
}

/// The node thread's mailbox: the sender rings `bell` with each piece of mail, so the thread
/// wakes for it; the receiver goes to [`ThreadInputs::new`]. Made before the media, so a
/// medium read by a thread of its own (a serial line) can mail its frames.
pub fn mailbox(bell: &Arc<Bell>) -> (MailSender, std_mpsc::Receiver<Mail>) {
    let (tx, mail) = std_mpsc::channel();
    let ring = bell.clone();
    let sender: MailSender = Arc::new(move |m: Mail| {
        if tx.send(m).is_ok() {
            ring.ring();
        }
    });
    (sender, mail)
}

/// The daemon's inputs: the UDP receive sockets and the bell, waited on in one `ppoll` on
/// the node's own thread; mail (control calls, finished operations, frames of media read
/// by threads of their own, the stop request) arrives through a channel whose sender rings
/// the bell.
pub struct ThreadInputs<'a> {
    receivers: &'a [ReceiveSocket],
    fds: Vec<PollFd<'a>>,
    bell: Arc<Bell>,
    mail: std_mpsc::Receiver<Mail>,
    buf: Vec<u8>,
    wait_errors: u64,
    answers_read_at: Instant,
}

impl<'a> ThreadInputs<'a> {
    /// Inputs over `receivers`, `bell` and the mailbox's receiving end (see [`mailbox`]).
    pub fn new(
        receivers: &'a [ReceiveSocket],
        bell: &'a Arc<Bell>,
        mail: std_mpsc::Receiver<Mail>,
    ) -> ThreadInputs<'a> {
        let fds = std::iter::once(bell.0.as_fd())
            .chain(receivers.iter().map(ReceiveSocket::fd))
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        ThreadInputs {
            receivers,
            fds,
            bell: bell.clone(),
            mail,
            buf: vec![0u8; RECV_BUFFER],
            wait_errors: 0,
            answers_read_at: crate::clock::now(),
        }
    }

    /// Reads and applies every answer queued on the receivers' twins, each at the instant
    /// the kernel received it (no earlier than the previous read).
    fn read_answers<S: InputSink>(&mut self, node: &mut S) {
        let started = crate::clock::now();
        let since = self.answers_read_at;
        for socket in self.receivers {
            for _ in 0..ANSWERS_PER_READ {
                match socket.try_recv_answer(&mut self.buf) {
                    Ok(Some((inbound, stamp))) => {
                        let at = arrival(crate::clock::now(), wall_clock(), stamp, since);
                        node.on_frame(at, inbound);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        node.receive_failed(&e);
                        break;
                    }
                }
            }
        }
        self.answers_read_at = started;
    }
}

impl Inputs for ThreadInputs<'_> {
    fn read_waiting<S: InputSink>(&mut self, node: &mut S) {
        self.read_answers(node);
    }

    async fn wait<S: InputSink>(&mut self, node: &mut S, wake: Instant) -> bool {
        // From after the turn (its sends take time), so the wait ends at `wake`.
        let timeout = TimeSpec::from(wake.saturating_duration_since(crate::clock::now()));
        match ppoll(&mut self.fds, Some(timeout), None) {
            Ok(0) | Err(Errno::EINTR) => return true,
            Ok(_) => {}
            Err(e) => {
                // Not expected with valid descriptors; never spin on it.
                self.wait_errors += 1;
                if self.wait_errors.is_power_of_two() {
                    tracing::error!(error = %e, count = self.wait_errors, "waiting for heartbeats failed");
                }
                std::thread::sleep(Duration::from_millis(1));
                return true;
            }
        }
        if self.fds[1..].iter().any(|fd| fd.any() == Some(true)) {
            // Answers first: they are older than what woke us.
            self.read_answers(node);
        }
        for (i, socket) in self.receivers.iter().enumerate() {
            if self.fds[i + 1].any() == Some(true) {
                // One frame per wakeup: the next wait returns at once while more are
                // queued, and in the usual case of one frame the read that would only have
                // said "nothing more" is saved.
                match socket.try_recv(&mut self.buf) {
                    Ok(Some(inbound)) => node.on_frame(crate::clock::now(), inbound),
                    Ok(None) => {}
                    Err(e) => node.receive_failed(&e),
                }
            }
        }
        if self.fds[0].any() == Some(true) {
            self.bell.drain();
            while let Ok(m) = self.mail.try_recv() {
                node.on_mail(crate::clock::now(), m);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_answer_is_dated_by_its_kernel_stamp_within_the_read_window() {
        let since = crate::clock::now();
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
