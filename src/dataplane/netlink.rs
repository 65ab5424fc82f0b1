//! Netlink framing shared by the IPVS (generic netlink) and nftables backends: message
//! headers, type-length-value attributes (nested or not), and a small blocking request
//! socket that sends one buffer and collects the kernel's answers up to a given sequence.
//!
//! Layouts from the kernel uapi `include/uapi/linux/netlink.h` (`struct nlmsghdr`,
//! `struct nlattr`, `NLA_ALIGNTO` = 4, `NLMSG_ERROR` = 2, `NLMSG_DONE` = 3).
//! The codec is hand-written so every byte sent is visible and tested; the crates
//! `netlink-packet-netfilter` 0.4 / `netlink-packet-generic` 0.5 lack the nf_tables
//! expressions hbd needs (numgen, hash, nat, verdict maps) and the IPVS family.

use std::os::fd::AsFd;

use netlink_sys::{Socket, SocketAddr};

/// `NLMSG_ERROR`: an error or (with error 0) an acknowledgement.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: end of a multipart dump.
pub const NLMSG_DONE: u16 = 3;
/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`.
pub const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`).
pub const NLM_F_DUMP: u16 = 0x300;
/// `NLM_F_CREATE`.
pub const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_APPEND`: append a rule at the end of its chain.
pub const NLM_F_APPEND: u16 = 0x800;
/// `NLA_F_NESTED`: set on the type of an attribute that contains attributes.
pub const NLA_F_NESTED: u16 = 0x8000;
/// Mask that strips `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER` from an attribute type.
pub const NLA_TYPE_MASK: u16 = 0x3fff;

/// A malformed netlink answer or attribute; decoding never panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer ended inside a header or value.
    #[error("netlink {what}: truncated at byte {at} of {len}")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
        /// Offset where decoding stopped.
        at: usize,
        /// Buffer length.
        len: usize,
    },
    /// A field had an impossible value.
    #[error("netlink {what}: {why}")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
        /// Why it is invalid.
        why: String,
    },
}

/// Round up to the 4-byte netlink alignment.
pub fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds netlink messages with attributes into one buffer (a batch may hold many).
#[derive(Debug, Default, Clone)]
pub struct MsgWriter {
    /// The bytes written so far.
    pub buf: Vec<u8>,
    nests: Vec<usize>,
    msg_start: usize,
    /// The first length that did not fit its header field (an attribute or nest over
    /// 64 KiB, a message over 4 GiB): the buffer is then unusable, [`MsgWriter::checked`] says so.
    oversized: Option<usize>,
}

impl MsgWriter {
    /// An empty writer.
    pub fn new() -> MsgWriter {
        MsgWriter::default()
    }

    /// Start a message: `struct nlmsghdr` (length patched by [`MsgWriter::end_msg`]).
    pub fn begin_msg(&mut self, ty: u16, flags: u16, seq: u32) {
        self.msg_start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
    }

    /// Finish the current message: patch its length.
    pub fn end_msg(&mut self) {
        let len: u32 = self.fit(self.buf.len() - self.msg_start);
        self.buf[self.msg_start..self.msg_start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Raw bytes (a family header such as `genlmsghdr` or `nfgenmsg`).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// One attribute with its value, padded to 4 bytes.
    pub fn attr(&mut self, kind: u16, value: &[u8]) {
        let len: u16 = self.fit(4 + value.len());
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
    }

    /// A host-order u16 attribute.
    pub fn u16(&mut self, kind: u16, v: u16) {
        self.attr(kind, &v.to_ne_bytes());
    }

    /// A host-order u32 attribute.
    pub fn u32(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_ne_bytes());
    }

    /// A network-order u32 attribute (nf_tables uses these for most integers).
    pub fn be32(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_be_bytes());
    }

    /// A NUL-terminated string attribute.
    pub fn str(&mut self, kind: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(kind, &v);
    }

    /// Open a nested attribute (`NLA_F_NESTED` is added); close with [`MsgWriter::end_nest`].
    pub fn begin_nest(&mut self, kind: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    }

    /// Close the innermost nested attribute.
    pub fn end_nest(&mut self) {
        if let Some(start) = self.nests.pop() {
            let len: u16 = self.fit(self.buf.len() - start);
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
    }

    /// The bytes written, or why they cannot be sent: a length that did not fit its field.
    pub fn checked(&self) -> Result<&[u8], NetlinkError> {
        match self.oversized {
            None => Ok(&self.buf),
            Some(len) => Err(NetlinkError::Oversized { len }),
        }
    }

    /// `len` in a header field of type `T`; a length that does not fit is remembered (the
    /// message is refused by [`MsgWriter::checked`]) rather than silently wrapped.
    fn fit<T: TryFrom<usize> + Default>(&mut self, len: usize) -> T {
        T::try_from(len).unwrap_or_else(|_| {
            self.oversized.get_or_insert(len);
            T::default()
        })
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

/// One attribute seen while decoding: its type (flags stripped) and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    /// Attribute type without `NLA_F_NESTED` / `NLA_F_NET_BYTEORDER`.
    pub kind: u16,
    /// Value bytes (without padding).
    pub value: &'a [u8],
}

impl<'a> Attr<'a> {
    /// The value as a host-order u16.
    pub fn u16(&self) -> Result<u16, DecodeError> {
        Ok(u16::from_ne_bytes(self.fixed::<2>()?))
    }
    /// The value as a host-order u32.
    pub fn u32(&self) -> Result<u32, DecodeError> {
        Ok(u32::from_ne_bytes(self.fixed::<4>()?))
    }
    /// The value as a network-order u32.
    pub fn be32(&self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.fixed::<4>()?))
    }
    /// The value as a string up to its NUL.
    pub fn str(&self) -> Result<&'a str, DecodeError> {
        let end = self
            .value
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(self.value.len());
        std::str::from_utf8(&self.value[..end]).map_err(|e| DecodeError::Invalid {
            what: "string attribute",
            why: e.to_string(),
        })
    }
    /// The nested attributes inside the value.
    pub fn nested(&self) -> Result<Vec<Attr<'a>>, DecodeError> {
        parse_attrs(self.value)
    }
    fn fixed<const N: usize>(&self) -> Result<[u8; N], DecodeError> {
        self.value.try_into().map_err(|_| DecodeError::Invalid {
            what: "fixed-size attribute",
            why: format!(
                "type {} has {} bytes, expected {N}",
                self.kind,
                self.value.len()
            ),
        })
    }
}

/// Decode a run of attributes.
pub fn parse_attrs(buf: &[u8]) -> Result<Vec<Attr<'_>>, DecodeError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let trunc = DecodeError::Truncated {
            what: "attribute",
            at,
            len: buf.len(),
        };
        let hdr = buf.get(at..at + 4).ok_or(trunc.clone())?;
        let len = usize::from(u16::from_ne_bytes([hdr[0], hdr[1]]));
        let kind = u16::from_ne_bytes([hdr[2], hdr[3]]) & NLA_TYPE_MASK;
        if len < 4 {
            return Err(DecodeError::Invalid {
                what: "attribute",
                why: format!("length {len} < 4 at byte {at}"),
            });
        }
        let value = buf.get(at + 4..at + len).ok_or(trunc)?;
        out.push(Attr { kind, value });
        at += align(len);
    }
    Ok(out)
}

/// The first attribute of a type.
pub fn find<'a, 'b>(attrs: &'b [Attr<'a>], kind: u16) -> Option<&'b Attr<'a>> {
    attrs.iter().find(|a| a.kind == kind)
}

/// One message received from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// `nlmsg_type`.
    pub ty: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// Everything after the 16-byte header.
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// For `NLMSG_ERROR`: the errno (0 = ack, negative = error).
    pub fn error_code(&self) -> Option<i32> {
        (self.ty == NLMSG_ERROR)
            .then(|| self.payload.get(..4))
            .flatten()
            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Split a datagram into messages.
pub fn parse_messages(buf: &[u8]) -> Result<Vec<Message<'_>>, DecodeError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= buf.len() {
        let h = &buf[at..at + 16];
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if len < 16 {
            return Err(DecodeError::Invalid {
                what: "message",
                why: format!("length {len} < 16 at byte {at}"),
            });
        }
        let payload = buf.get(at + 16..at + len).ok_or(DecodeError::Truncated {
            what: "message",
            at,
            len: buf.len(),
        })?;
        out.push(Message {
            ty: u16::from_ne_bytes([h[4], h[5]]),
            flags: u16::from_ne_bytes([h[6], h[7]]),
            seq: u32::from_ne_bytes([h[8], h[9], h[10], h[11]]),
            payload,
        });
        at += align(len);
    }
    Ok(out)
}

/// A failure talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// Socket creation, send or receive failed.
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel refused a request.
    #[error("kernel refused {what}: {errno}")]
    Refused {
        /// What the request was.
        what: String,
        /// The errno.
        errno: nix::errno::Errno,
    },
    /// The answer could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A request did not fit netlink's length fields (an attribute is at most 64 KiB).
    #[error(
        "a netlink attribute or message of {len} bytes does not fit its length field; split the service (fewer real servers per virtual service)"
    )]
    Oversized {
        /// The length that did not fit.
        len: usize,
    },
}

/// A blocking netlink socket for request/answer exchanges with the kernel.
#[derive(Debug)]
pub struct RequestSocket {
    sock: Socket,
    buf: Vec<u8>,
}

/// Receive buffer size: dumps arrive in datagrams of up to a few pages each.
const RECV_BUF: usize = 1 << 20;

impl RequestSocket {
    /// Open and connect a socket of a netlink protocol (`NETLINK_GENERIC`, `NETLINK_NETFILTER`).
    pub fn open(protocol: isize) -> Result<RequestSocket, NetlinkError> {
        let mut sock = Socket::new(protocol)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Big batches (10,000 reals) go out in one datagram; raise the limits (root only,
        // harmless to fail: smaller batches still fit the defaults).
        let _ = nix::sys::socket::setsockopt(
            &sock.as_fd(),
            nix::sys::socket::sockopt::SndBufForce,
            &(64 << 20),
        );
        let _ = nix::sys::socket::setsockopt(
            &sock.as_fd(),
            nix::sys::socket::sockopt::RcvBufForce,
            &(16 << 20),
        );
        Ok(RequestSocket {
            sock,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Bound every receive, so a kernel that never answers cannot hang a reconcile.
    pub fn set_recv_timeout(&self, t: std::time::Duration) -> Result<(), NetlinkError> {
        let tv = nix::sys::time::TimeVal::new(
            i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
            i64::from(t.subsec_micros()),
        );
        nix::sys::socket::setsockopt(
            &self.sock.as_fd(),
            nix::sys::socket::sockopt::ReceiveTimeout,
            &tv,
        )
        .map_err(|e| NetlinkError::Io(e.into()))
    }

    /// Send one buffer (one message or a whole batch).
    pub fn send(&self, buf: &[u8]) -> Result<(), NetlinkError> {
        self.sock.send(buf, 0)?;
        Ok(())
    }
    /// Sends a dump request `msg` (sequence `seq`) and hands the payload of every answer to
    /// `each` until the kernel's `NLMSG_DONE`; an error answer is a refusal of `what`.
    pub fn dump(
        &mut self,
        msg: &[u8],
        seq: u32,
        what: &str,
        mut each: impl FnMut(&[u8]) -> Result<(), NetlinkError>,
    ) -> Result<(), NetlinkError> {
        self.send(msg)?;
        self.recv_until(|m| {
            if m.seq != seq {
                return Ok(false);
            }
            match m.ty {
                NLMSG_DONE => Ok(true),
                NLMSG_ERROR => match m.error_code() {
                    Some(0) => Ok(true),
                    e => Err(NetlinkError::Refused {
                        what: what.into(),
                        errno: nix::errno::Errno::from_raw(-e.unwrap_or(0)),
                    }),
                },
                _ => each(m.payload).map(|()| false),
            }
        })
    }

    /// Receive datagrams and hand every message to `on_msg` until it returns `true`
    /// (done). Kernel errors are returned by `on_msg` itself.
    pub fn recv_until(
        &mut self,
        mut on_msg: impl FnMut(&Message<'_>) -> Result<bool, NetlinkError>,
    ) -> Result<(), NetlinkError> {
        loop {
            self.buf.clear();
            // MSG_TRUNC: the kernel returns the datagram's real length even when it did not
            // fit, so an oversized one is reported instead of parsed as cut short.
            let n = self.sock.recv(&mut self.buf, nix::libc::MSG_TRUNC)?;
            if n > self.buf.len() {
                return Err(DecodeError::Truncated {
                    what: "datagram",
                    at: self.buf.len(),
                    len: n,
                }
                .into());
            }
            for m in parse_messages(&self.buf)? {
                if on_msg(&m)? {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attribute_over_64_kib_is_refused_not_wrapped() {
        let mut w = MsgWriter::new();
        w.begin_msg(16, NLM_F_REQUEST, 7);
        w.attr(1, &[0; 100]);
        w.end_msg();
        assert!(w.checked().is_ok());
        w.begin_msg(16, NLM_F_REQUEST, 8);
        w.begin_nest(2);
        w.attr(1, &vec![0; 40_000]);
        w.attr(1, &vec![0; 40_000]);
        w.end_nest();
        w.end_msg();
        let err = w.checked().unwrap_err();
        assert!(
            matches!(err, NetlinkError::Oversized { len } if len > 80_000),
            "{err}"
        );
        let mut w = MsgWriter::new();
        w.attr(1, &vec![0; 70_000]);
        assert!(matches!(
            w.checked(),
            Err(NetlinkError::Oversized { len: 70_004 })
        ));
    }

    #[test]
    fn nested_attrs_round_trip() {
        let mut w = MsgWriter::new();
        w.begin_msg(16, NLM_F_REQUEST, 7);
        w.begin_nest(1);
        w.u16(1, 2);
        w.str(6, "wrr");
        w.end_nest();
        w.end_msg();
        let msgs = parse_messages(&w.buf).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].seq, 7);
        let top = parse_attrs(msgs[0].payload).unwrap();
        assert_eq!(top[0].kind, 1);
        let inner = top[0].nested().unwrap();
        assert_eq!(inner[0].u16().unwrap(), 2);
        assert_eq!(inner[1].str().unwrap(), "wrr");
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 0x1234_5678;
        for len in 0..300 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x.to_le_bytes()[0]
                })
                .collect();
            let _ = parse_attrs(&buf);
            let _ = parse_messages(&buf);
        }
        assert!(parse_attrs(&[8, 0, 1, 0, 1]).is_err());
        assert!(parse_attrs(&[2, 0, 1, 0]).is_err());
    }

    #[test]
    fn an_oversized_datagram_is_reported_as_truncated() {
        // NETLINK_ROUTE needs no privilege; an acked request answers with at least 36 bytes.
        let mut sock = RequestSocket::open(0).unwrap();
        sock.buf = Vec::with_capacity(16);
        sock.set_recv_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        let mut w = MsgWriter::new();
        w.begin_msg(NLMSG_DONE, NLM_F_REQUEST | NLM_F_ACK, 1);
        w.end_msg();
        sock.send(&w.buf).unwrap();
        let e = sock.recv_until(|_| Ok(true)).unwrap_err();
        assert!(
            matches!(
                e,
                NetlinkError::Decode(DecodeError::Truncated { what: "datagram", at: 16, len })
                    if len > 16
            ),
            "{e}"
        );
    }
}
