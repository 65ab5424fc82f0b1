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

use std::net::UdpSocket;
use std::time::{Duration, Instant};

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
    let frame = [b'x'; FRAME_LEN];
    let mut buf = [0u8; 2048];
    match role.as_str() {
        "lead" => {
            let mut next = Instant::now() + PERIOD;
            loop {
                let now = Instant::now();
                if now >= next {
                    socket.send_to(&frame, peer)?;
                    next += PERIOD;
                    continue;
                }
                socket.set_read_timeout(Some(next - now))?;
                // A timeout is the normal way out of the wait.
                let _ = socket.recv_from(&mut buf);
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
                while socket.recv_from(&mut buf).is_ok() {}
                socket.send_to(&frame, peer)?;
                next += PERIOD;
            }
        }
        "follow" => loop {
            socket.recv_from(&mut buf)?;
            socket.send_to(&frame, peer)?;
        },
        other => {
            eprintln!("unknown role {other}: lead, lazy or follow");
            std::process::exit(2);
        }
    }
}
