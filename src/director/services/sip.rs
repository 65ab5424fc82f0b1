//! SIP as ldirectord's `check_sip` runs it: an `OPTIONS sip:LOGIN` request (RFC 3261 §11)
//! over the virtual service's transport; up when the final answer is `SIP/2.0 200`.
//! Provisional 1xx answers are skipped (ldirectord would fail on them).

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::check::{Failed, MAX_LINE, Outcome, Passed, ServiceCheck, Transport, cut};
use super::text::Lines;

/// The OPTIONS request ldirectord sends, from `local`, for `login`, with `call_id`.
pub fn request(login: &str, local: SocketAddr, transport: Transport, call_id: &str) -> String {
    let t = match transport {
        Transport::Tcp => "TCP",
        Transport::Udp => "UDP",
    };
    format!(
        "OPTIONS sip:{login} SIP/2.0\r\n\
         Via: SIP/2.0/{t} {local};branch=z9hG4bK{call_id}\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:{login}>\r\n\
         From: <sip:{login}>;tag={call_id}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 63104 OPTIONS\r\n\
         Contact: <sip:{login}>\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The status code of a SIP status line (`SIP/2.0 200 OK`).
pub fn status(line: &str) -> Option<u16> {
    let rest = line.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

/// What one answer's status line says: done (`Ok`/`Err`) or provisional (`None`).
fn judge(line: &str) -> Option<Outcome> {
    match status(line) {
        Some(c) if (100..200).contains(&c) => None,
        Some(200) => Some(Ok(Passed(cut(line, 80)))),
        _ => Some(Err(Failed::Answer {
            step: "OPTIONS",
            answer: cut(line, 200),
        })),
    }
}

fn call_id() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// Runs the SIP check against `addr`.
pub async fn check(c: &ServiceCheck, addr: SocketAddr) -> Outcome {
    let default_login = format!("ldirectord@{}", c.hostname);
    let login = c.credentials.login.as_deref().unwrap_or(&default_login);
    match c.transport {
        Transport::Udp => {
            let sock = super::check::udp(addr).await?;
            let local = sock.local_addr().map_err(Failed::io("bind"))?;
            let req = request(login, local, Transport::Udp, &call_id());
            sock.send(req.as_bytes())
                .await
                .map_err(Failed::io("OPTIONS"))?;
            let mut buf = vec![0u8; MAX_LINE];
            for _ in 0..10 {
                let n = sock.recv(&mut buf).await.map_err(Failed::io("OPTIONS"))?;
                let text = String::from_utf8_lossy(&buf[..n]);
                let first = text.lines().next().unwrap_or("");
                if let Some(o) = judge(first) {
                    return o;
                }
            }
            Err(Failed::Malformed {
                step: "OPTIONS",
                why: "more than 10 provisional answers".into(),
            })
        }
        Transport::Tcp => {
            let s = super::check::connect(addr).await?;
            let local = s.local_addr().map_err(Failed::io("connect"))?;
            over_stream(login, local, s).await
        }
    }
}

/// The TCP exchange over any stream (`local`: the address written in `Via`).
pub async fn over_stream<S: AsyncRead + AsyncWrite + Unpin>(
    login: &str,
    local: SocketAddr,
    mut s: S,
) -> Outcome {
    let req = request(login, local, Transport::Tcp, &call_id());
    s.write_all(req.as_bytes())
        .await
        .map_err(Failed::io("OPTIONS"))?;
    let mut l = Lines::new(s);
    for _ in 0..10 {
        let first = l.line("OPTIONS").await?;
        // Skip the rest of this answer's head (and no body: Content-Length 0 expected).
        for _ in 0..200 {
            if l.line("OPTIONS").await?.is_empty() {
                break;
            }
        }
        if let Some(o) = judge(&first) {
            return o;
        }
    }
    Err(Failed::Malformed {
        step: "OPTIONS",
        why: "more than 10 provisional answers".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::services::testing::*;

    #[test]
    fn the_request_is_ldirectords() {
        let r = request(
            "ldirectord@d",
            "192.0.2.1:5070".parse().unwrap(),
            Transport::Udp,
            "ab",
        );
        assert!(r.starts_with("OPTIONS sip:ldirectord@d SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKab\r\n"));
        assert!(r.ends_with("Content-Length: 0\r\n\r\n"));
        assert_eq!(status("SIP/2.0 200 OK"), Some(200));
        assert_eq!(status("HTTP/1.1 200 OK"), None);
    }

    #[tokio::test]
    async fn provisional_then_ok_over_a_stream() {
        let (s, _srv) = scripted(vec![
            Step::Skip(60),
            send("SIP/2.0 100 Trying\r\nVia: x\r\n\r\nSIP/2.0 200 OK\r\nVia: x\r\n\r\n"),
        ]);
        let r = over_stream("u@d", "192.0.2.1:1".parse().unwrap(), s).await;
        assert_eq!(r.unwrap().0, "SIP/2.0 200 OK");
        let (s, _srv) = scripted(vec![Step::Skip(60), send("SIP/2.0 503 Busy\r\n\r\n")]);
        let e = over_stream("u@d", "192.0.2.1:1".parse().unwrap(), s)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "OPTIONS: answer \"SIP/2.0 503 Busy\"");
    }
}
