//! Negotiate checks of the services beyond HTTP, as ldirectord runs them (its `check_dns`,
//! `check_ftp`, `check_imap`, `check_ldap`, `check_sql`, `check_pop`, `check_radius`,
//! `check_simpletcp`, `check_sip`, `check_smtp`): the same request, the same answer expected,
//! the same `request` / `receive` / `login` / `passwd` / `database` / `secret` options.
//!
//! Each protocol is its own module: the bytes it sends and the parsing of what comes back are
//! pure functions, unit-tested without sockets; one `async fn` per protocol runs the exchange
//! over any stream (so the tests drive it over an in-memory pipe). Nothing here blocks: every
//! read is an await inside the check's total deadline ([`super::checks`] wraps each check in
//! `tokio::time::timeout`), and every read is bounded in size ([`MAX_LINE`], [`MAX_ANSWER`]).
//!
//! The outcome is typed: [`Passed`] with what was seen, or [`Failed`] naming the step and the
//! answer that failed it; its text is the reason `hactl checks` shows.

pub mod check;
pub mod dns;
pub mod ftp;
pub mod imap;
pub mod ldap;
pub mod mysql;
pub mod pgsql;
pub mod pop;
pub mod radius;
pub mod simpletcp;
pub mod sip;
pub mod smtp;
pub mod text;

use std::net::SocketAddr;

pub use check::{
    Failed, MAX_ANSWER, MAX_LINE, Outcome, Passed, ServiceCheck, Transport, connect, cut,
    expect_match, udp,
};

use crate::config::director::NegotiatedService;

/// Runs `check` against `addr` (the real's check address). Bounded in time only by the
/// caller's deadline.
pub async fn negotiate(check: &ServiceCheck, addr: SocketAddr) -> Outcome {
    use NegotiatedService as N;
    match check.service {
        N::Dns => dns::check(check, addr).await,
        N::Ftp => {
            let s = connect(addr).await?;
            ftp::check(check, s, addr.ip()).await
        }
        N::Imap => imap::check(check, connect(addr).await?).await,
        N::Ldap => ldap::check(check, connect(addr).await?).await,
        N::Mysql => mysql::check(check, connect(addr).await?).await,
        N::Pgsql => pgsql::check(check, connect(addr).await?).await,
        N::Pop => pop::check(check, connect(addr).await?).await,
        N::Radius => radius::check(check, addr).await,
        N::Simpletcp => simpletcp::check(check, connect(addr).await?).await,
        N::Sip => sip::check(check, addr).await,
        N::Smtp | N::Submission => smtp::check(check, connect(addr).await?).await,
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A scripted server over an in-memory pipe: it expects lines (or bytes) and answers.

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::config::director::Credentials;

    /// A check with defaults for `service`.
    pub fn sample(service: NegotiatedService) -> ServiceCheck {
        ServiceCheck {
            service,
            transport: Transport::Tcp,
            request: None,
            receive: None,
            credentials: Credentials::default(),
            hostname: "director.example".into(),
        }
    }

    /// One step of a scripted server.
    pub enum Step {
        /// Send these bytes.
        Send(Vec<u8>),
        /// Read until these bytes have arrived (asserting they are what came).
        Expect(Vec<u8>),
        /// Read exactly this many bytes, whatever they are.
        Skip(usize),
    }

    /// `Send` of text.
    pub fn send(t: &str) -> Step {
        Step::Send(t.as_bytes().to_vec())
    }

    /// `Expect` of text.
    pub fn expect(t: &str) -> Step {
        Step::Expect(t.as_bytes().to_vec())
    }

    /// The client end of a pipe whose server end plays `script`, then closes. The server
    /// panics (failing the test) on an unexpected byte; its handle is returned to be awaited.
    pub fn scripted(script: Vec<Step>) -> (DuplexStream, tokio::task::JoinHandle<()>) {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(async move {
            for step in script {
                match step {
                    Step::Send(b) => server.write_all(&b).await.unwrap(),
                    Step::Expect(b) => {
                        let mut got = vec![0u8; b.len()];
                        server.read_exact(&mut got).await.unwrap();
                        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&b));
                    }
                    Step::Skip(n) => {
                        let mut got = vec![0u8; n];
                        server.read_exact(&mut got).await.unwrap();
                    }
                }
            }
        });
        (client, task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::director::Receive;

    #[test]
    fn reasons_name_the_step() {
        let e = Failed::Io {
            step: "connect",
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(e.to_string(), "connect refused");
        let e = Failed::Answer {
            step: "EHLO",
            answer: "550 no".into(),
        };
        assert_eq!(e.to_string(), "EHLO: answer \"550 no\"");
        assert_eq!(cut("abcdef", 3), "abc…");
        assert_eq!(cut("é", 1), "…");
    }

    #[test]
    fn mismatch_says_what_and_pattern() {
        let r = Receive::new("^192\\.0\\.2\\.1$").unwrap();
        assert!(expect_match(&r, "A record", "192.0.2.1").is_ok());
        let e = expect_match(&r, "A record", "192.0.2.7").unwrap_err();
        assert_eq!(
            e.to_string(),
            "A record \"192.0.2.7\" does not match receive \"^192\\\\.0\\\\.2\\\\.1$\""
        );
    }
}
