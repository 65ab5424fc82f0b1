//! One service check: what it asks ([`ServiceCheck`]) and how it ends ([`Passed`] or a
//! typed [`Failed`]), with the socket helpers every protocol module shares.

use std::net::SocketAddr;

use crate::config::director::{Credentials, NegotiatedService, Receive};

/// Longest line read from a text protocol (SMTP, FTP, POP, IMAP, SIP, simpletcp).
pub const MAX_LINE: usize = 8 * 1024;
/// Most bytes read of one answer (an FTP file, a simpletcp answer, a DNS message, a result set).
pub const MAX_ANSWER: usize = 1 << 20;

/// The transport of the virtual service (`protocol =`): DNS and SIP run over either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// One negotiate check of a service other than HTTP, with ldirectord's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceCheck {
    /// Which conversation.
    pub service: NegotiatedService,
    /// TCP or UDP (the virtual service's protocol).
    pub transport: Transport,
    /// `request` without ldirectord's leading `/`: a name (dns), a file (ftp), a base DN
    /// (ldap), a query (mysql, pgsql), the text to send (simpletcp).
    pub request: Option<String>,
    /// `receive`: the regex the answer must match.
    pub receive: Option<Receive>,
    /// `login`, `passwd`, `database`, `secret`.
    pub credentials: Credentials,
    /// This host's name, for EHLO (smtp) and the SIP Via/From default.
    pub hostname: String,
}

/// The check passed; the text says what was seen ("220 greeting, EHLO 250").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed(pub String);

/// Why a service check failed; the text is the check's reason.
#[derive(Debug, thiserror::Error)]
pub enum Failed {
    /// The transport failed at `step` (connect refused, reset, …).
    #[error("{}", io_text(step, source))]
    Io {
        /// What was being done.
        step: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The server closed the connection at `step`.
    #[error("{step}: connection closed by the server")]
    Closed {
        /// What was being done.
        step: &'static str,
    },
    /// The server answered, but not what the check needs.
    #[error("{step}: answer {answer:?}")]
    Answer {
        /// What was being done.
        step: &'static str,
        /// The answer (first line, or a summary).
        answer: String,
    },
    /// The answer could not be parsed.
    #[error("{step}: malformed answer ({why})")]
    Malformed {
        /// What was being done.
        step: &'static str,
        /// What was wrong.
        why: String,
    },
    /// The answer arrived but does not match `receive`.
    #[error("{what} {got:?} does not match receive {pattern:?}")]
    Mismatch {
        /// What was compared ("A record", "file", …).
        what: &'static str,
        /// What came back (cut to 200 bytes).
        got: String,
        /// The `receive` pattern.
        pattern: String,
    },
    /// The check cannot be made as configured (refused at check-config for parsed files).
    #[error("{0}")]
    Config(String),
}

fn io_text(step: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => format!("{step} refused"),
        std::io::ErrorKind::ConnectionReset => format!("{step}: connection reset"),
        _ => format!("{step}: {e}"),
    }
}

impl Failed {
    /// A transport error at `step`.
    pub fn io(step: &'static str) -> impl FnOnce(std::io::Error) -> Failed {
        move |source| Failed::Io { step, source }
    }

    /// A database `query` that answered no rows: ldirectord's mysql and pgsql checks fail
    /// then, as for an error.
    pub fn no_rows(query: &str) -> Failed {
        Failed::Answer {
            step: "query",
            answer: format!("0 rows from {:?}", cut(query, 80)),
        }
    }
}

/// The outcome of one service check.
pub type Outcome = Result<Passed, Failed>;

/// Text cut to `n` bytes (at a char boundary) for a reason.
pub fn cut(text: &str, n: usize) -> String {
    if text.len() <= n {
        return text.to_string();
    }
    let mut end = n;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `receive` matched against `got`, or a [`Failed::Mismatch`].
pub fn expect_match(receive: &Receive, what: &'static str, got: &str) -> Result<(), Failed> {
    if receive.is_match(got) {
        Ok(())
    } else {
        Err(Failed::Mismatch {
            what,
            got: cut(got, 200),
            pattern: receive.as_str().to_string(),
        })
    }
}

/// Opens the TCP connection of a check (no Nagle delay: every request is one small write).
pub async fn connect(addr: SocketAddr) -> Result<tokio::net::TcpStream, Failed> {
    let s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(Failed::io("connect"))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// A UDP socket of the check's family, connected to `addr` (only its answers are read).
pub async fn udp(addr: SocketAddr) -> Result<tokio::net::UdpSocket, Failed> {
    let local: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(Failed::io("bind"))?;
    s.connect(addr).await.map_err(Failed::io("connect"))?;
    Ok(s)
}
