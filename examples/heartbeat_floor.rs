//! The cheapest possible heartbeat exchange, to measure what one costs on a machine before
//! blaming hbd for it: `scripts/bench-floor.sh` runs a pair of these in the lab.
//!
//! * `lead BIND PEER`: sends a 364-byte datagram every 10 ms from a blocking loop and reads
//!   whatever arrives in between (the pace setter's work: a timer wakeup, a send, a receive
//!   wakeup);
//! * `lazy BIND PEER`: the pace setter that sleeps through the answer: every 10 ms it wakes
//!   on its timer, drains what arrived since (non-blocking reads) and sends (one wakeup);
//! * `follow BIND PEER`: answers every datagram at once (the follower's work: one wakeup, one
//!   receive, one send).
//!
//! No authentication, no parsing, no async runtime: whatever this costs, hbd cannot cost less.
//! So the floor does no more per beat than hbd does: the socket is connected to PEER once
//! (as hbd's unicast senders are), so each beat is a plain `send` with no address to parse or
//! route, and the pace setter waits in `ppoll` rather than setting a receive timeout (a
//! `setsockopt`) every pass. Being connected, each end only hears datagrams from PEER, so the
//! peer must send from the address given here as PEER (the pair in bench-floor.sh does).

// A measuring tool: real time is what it paces and measures.
#![allow(clippy::disallowed_methods)]

use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::time::TimeSpec;

const PERIOD: Duration = Duration::from_millis(10);
/// The size of hbd's status frame in the lab.
const FRAME_LEN: usize = 364;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, role, bind, peer] = args.as_slice() else {
        eprintln!("usage: heartbeat_floor lead|lazy|follow BIND_ADDR:PORT PEER_ADDR:PORT");
        std::process::exit(2);
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(peer)?;
    let frame = [b'x'; FRAME_LEN];
    let mut buf = [0u8; 2048];
    match role.as_str() {
        "lead" => {
            socket.set_nonblocking(true)?;
            let mut next = Instant::now() + PERIOD;
            loop {
                let now = Instant::now();
                if now >= next {
                    send(&socket, &frame)?;
                    next += PERIOD;
                    continue;
                }
                let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
                // A timeout is the normal way out of the wait; a signal only shortens it.
                match ppoll(&mut fds, Some(TimeSpec::from_duration(next - now)), None) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
                if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                    received(socket.recv(&mut buf))?;
                }
            }
        }
        "lazy" => {
            socket.set_nonblocking(true)?;
            let mut next = Instant::now() + PERIOD;
            loop {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep(next - now);
                    continue;
                }
                while received(socket.recv(&mut buf))? {}
                send(&socket, &frame)?;
                next += PERIOD;
            }
        }
        "follow" => loop {
            if received(socket.recv(&mut buf))? {
                send(&socket, &frame)?;
            }
        },
        other => {
            eprintln!("unknown role {other}: lead, lazy or follow");
            std::process::exit(2);
        }
    }
}

/// Whether a receive got a datagram. Nothing to read (non-blocking) is no error, nor is a
/// refusal: on a connected socket an earlier send's ICMP port unreachable (the peer not up
/// yet) is reported by the next receive.
fn received(result: std::io::Result<usize>) -> std::io::Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sends one beat; a refusal (ICMP port unreachable while the peer is not up yet, reported
/// on a connected socket) is not an error for a bench that starts both ends in turn.
fn send(socket: &UdpSocket, frame: &[u8]) -> std::io::Result<()> {
    match socket.send(frame) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        other => other.map(drop),
    }
}
