//! Media: the paths heartbeat frames travel, several at once.
//!
//! A medium has a transmit half ([`Transmit`], called by the node, never blocking) and a
//! receive half that yields frames ([`InboundRef`], [`Inbound`]) tagged with the link index the frame arrived
//! on: UDP sockets the node's thread reads itself ([`udp::ReceiveSocket`]), or the node's
//! channel for the in-memory network. A peer is alive while any medium carries its
//! heartbeats.
//!
//! * [`udp`]: ucast, mcast and bcast over UDP (heartbeat's port 694 by default), each bound to
//!   its interface.
//! * [`memory`]: an in-memory network for deterministic simulation, with cuts and taps.

pub mod memory;
pub mod serial;
pub mod serial_status;
pub mod udp;

use std::net::SocketAddr;

/// A frame received on a link, owned: what the in-memory network queues.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Index of the link (medium) it arrived on.
    pub link: usize,
    /// The raw frame.
    pub frame: Vec<u8>,
    /// Sender address, when the medium has one.
    pub from: Option<SocketAddr>,
}

impl Inbound {
    /// The frame as the node reads it.
    pub fn as_ref(&self) -> InboundRef<'_> {
        InboundRef {
            link: self.link,
            frame: &self.frame,
            from: self.from,
        }
    }
}

/// A frame received on a link, borrowed from the buffer it was read into: the node reads
/// UDP frames into one reused buffer and applies them in place.
#[derive(Debug, Clone, Copy)]
pub struct InboundRef<'a> {
    /// Index of the link (medium) it arrived on.
    pub link: usize,
    /// The raw frame.
    pub frame: &'a [u8],
    /// Sender address, when the medium has one.
    pub from: Option<SocketAddr>,
}

/// Sends one frame on a medium without blocking; a frame that cannot be sent at once is
/// dropped and reported, since a heartbeat late is as good as lost.
pub trait Transmit: Send + Sync {
    /// Sends `frame` to every peer this medium reaches.
    fn send(&self, frame: &[u8]) -> std::io::Result<()>;

    /// Sends `frame`, an answer to a peer's heartbeat that says nothing new: the peer may
    /// read it later, when it wakes anyway (see [`udp`]). By default, as any frame.
    fn send_answer(&self, frame: &[u8]) -> std::io::Result<()> {
        self.send(frame)
    }

    /// Where frames go, for logs.
    fn describe(&self) -> String {
        String::new()
    }

    /// The form of frame this medium carries: what UDP media carry (the node's frame as
    /// built), or heartbeat's classic text (a serial line).
    fn form(&self) -> FrameForm {
        FrameForm::Datagram
    }

    /// Whether a frame given now would go out soon: a slow line that is still busy with the
    /// previous frame (or down) says no, and the node skips it this time instead of encoding
    /// a frame that would only be superseded.
    fn ready(&self) -> bool {
        true
    }

    /// A serial line's device state and counters, for `hactl status`; `None` for media
    /// without a device of their own (UDP).
    fn serial_status(&self) -> Option<serial_status::SerialLinkStatus> {
        None
    }
}

/// The form of frame a medium carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameForm {
    /// The node's frame as built (netstring or classic, per `msgfmt`): UDP media.
    Datagram,
    /// heartbeat's classic text with the inner auth, no NUL (HEARTBEAT-WIRE.md §8): serial.
    ClassicText,
}

/// An open medium: its link name and its transmit half (the receive half is separate: one
/// socket may receive for several media).
pub struct Medium {
    /// Link name shown in status and logs.
    pub name: String,
    /// Transmit half.
    pub tx: Box<dyn Transmit>,
}

impl std::fmt::Debug for Medium {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Medium").field("name", &self.name).finish()
    }
}
