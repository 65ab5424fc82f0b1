//! FTP as ldirectord's `check_ftp` runs it through Net::FTP: log in (`login`, default
//! `anonymous`; `passwd`, default `ldirectord@HOSTNAME`), then `CWD /`, `TYPE I`, passive
//! mode, `RETR /request`; the file's content must match `receive` (RFC 959).
//!
//! Differences, on purpose: without `request` the check passes once logged in (ldirectord
//! would `RETR /`, fail, and pass anyway on its empty `receive`); the data connection goes to
//! the real's address at the port the server names (a server behind NAT often names a wrong
//! address), and IPv6 reals use `EPSV` (RFC 2428) since `PASV` has no IPv6 form.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::check::{Failed, MAX_ANSWER, Outcome, Passed, ServiceCheck, cut, expect_match};
use super::text::Lines;

/// The data port of a `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)` reply.
pub fn pasv_port(line: &str) -> Option<u16> {
    let open = line.find('(')?;
    let close = open + line[open..].find(')')?;
    let nums: Vec<u16> = line[open + 1..close]
        .split(',')
        .map(|n| n.trim().parse::<u8>().map(u16::from))
        .collect::<Result<_, _>>()
        .ok()?;
    (nums.len() == 6).then(|| nums[4] * 256 + nums[5])
}

/// The data port of a `229 Entering Extended Passive Mode (|||port|)` reply.
pub fn epsv_port(line: &str) -> Option<u16> {
    let open = line.find("(|||")?;
    let rest = &line[open + 4..];
    rest[..rest.find('|')?].parse().ok()
}

/// Reads a reply, skipping 1xx preliminary ones (RFC 959 §4.2), and wants class `class`.
async fn final_reply<S: AsyncRead + AsyncWrite + Unpin>(
    l: &mut Lines<S>,
    step: &'static str,
    class: u16,
) -> Result<(u16, String), Failed> {
    for _ in 0..10 {
        let (code, line) = l.reply(step).await?;
        if code / 100 == 1 {
            continue;
        }
        if code / 100 == class {
            return Ok((code, line));
        }
        return Err(Failed::Answer {
            step,
            answer: cut(&line, 200),
        });
    }
    Err(Failed::Malformed {
        step,
        why: "more than 10 preliminary replies".into(),
    })
}

/// Runs the FTP check: `stream` is the control connection to `ip`.
pub async fn check<S: AsyncRead + AsyncWrite + Unpin>(
    c: &ServiceCheck,
    stream: S,
    ip: IpAddr,
) -> Outcome {
    let mut l = Lines::new(stream);
    final_reply(&mut l, "greeting", 2).await?;
    let login = c.credentials.login.as_deref().unwrap_or("anonymous");
    l.send("USER", &format!("USER {login}")).await?;
    let (code, line) = l.reply("USER").await?;
    match code {
        230 => {}
        331 | 332 => {
            let pass = c.credentials.passwd.as_deref().unwrap_or("");
            l.send("PASS", &format!("PASS {pass}")).await?;
            final_reply(&mut l, "PASS", 2).await?;
        }
        _ => {
            return Err(Failed::Answer {
                step: "USER",
                answer: cut(&line, 200),
            });
        }
    }
    let Some(file) = c.request.as_deref().filter(|r| !r.is_empty()) else {
        quit(&mut l).await;
        return Ok(Passed("logged in".into()));
    };
    // Net::FTP's `cwd("/")` result is not looked at; neither is it here.
    l.send("CWD", "CWD /").await?;
    let _ = l.reply("CWD").await?;
    l.send("TYPE", "TYPE I").await?;
    final_reply(&mut l, "TYPE", 2).await?;
    let port = if ip.is_ipv4() {
        l.send("PASV", "PASV").await?;
        let (_, line) = final_reply(&mut l, "PASV", 2).await?;
        pasv_port(&line)
    } else {
        l.send("EPSV", "EPSV").await?;
        let (_, line) = final_reply(&mut l, "EPSV", 2).await?;
        epsv_port(&line)
    };
    let port = port.ok_or_else(|| Failed::Malformed {
        step: "PASV",
        why: "no data port in the reply".into(),
    })?;
    let mut data = tokio::net::TcpStream::connect(SocketAddr::new(ip, port))
        .await
        .map_err(Failed::io("data connect"))?;
    l.send("RETR", &format!("RETR /{}", file.trim_start_matches('/')))
        .await?;
    let (code, line) = l.reply("RETR").await?;
    if code / 100 != 1 && code / 100 != 2 {
        return Err(Failed::Answer {
            step: "RETR",
            answer: cut(&line, 200),
        });
    }
    let mut content = Vec::new();
    (&mut data)
        .take(u64::try_from(MAX_ANSWER).unwrap_or(u64::MAX))
        .read_to_end(&mut content)
        .await
        .map_err(Failed::io("RETR data"))?;
    drop(data);
    if code / 100 == 1 {
        final_reply(&mut l, "RETR", 2).await?;
    }
    quit(&mut l).await;
    let text = String::from_utf8_lossy(&content);
    if let Some(r) = &c.receive {
        expect_match(r, "file", &text)?;
    }
    Ok(Passed(format!("RETR {} bytes", content.len())))
}

async fn quit<S: AsyncRead + AsyncWrite + Unpin>(l: &mut Lines<S>) {
    if l.send("QUIT", "QUIT").await.is_ok() {
        let _ = l.next("QUIT").await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::director::{NegotiatedService, Receive};
    use crate::director::services::testing::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn passive_ports() {
        assert_eq!(
            pasv_port("227 Entering Passive Mode (192,0,2,1,195,80)."),
            Some(195 * 256 + 80)
        );
        assert_eq!(
            pasv_port("227 Entering Passive Mode (192,0,2,1,999,80)"),
            None
        );
        assert_eq!(pasv_port("227 nothing"), None);
        assert_eq!(
            epsv_port("229 Entering Extended Passive Mode (|||6446|)"),
            Some(6446)
        );
        assert_eq!(epsv_port("229 (|||x|)"), None);
    }

    #[tokio::test]
    async fn login_only_without_request() {
        let c = sample(NegotiatedService::Ftp);
        let (s, _srv) = scripted(vec![
            send("220 (vsFTPd)\r\n"),
            expect("USER anonymous\r\n"),
            send("331 pw\r\n"),
            expect("PASS \r\n"),
            send("230 ok\r\n"),
            expect("QUIT\r\n"),
        ]);
        let r = super::check(&c, s, "127.0.0.1".parse().unwrap()).await;
        assert_eq!(r.unwrap().0, "logged in");
    }

    #[tokio::test]
    async fn retrieves_and_matches_the_file() {
        let data = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = data.local_addr().unwrap().port();
        let feeder = tokio::spawn(async move {
            let (mut d, _) = data.accept().await.unwrap();
            d.write_all(b"all is well\n").await.unwrap();
        });
        let mut c = sample(NegotiatedService::Ftp);
        c.request = Some("health.txt".into());
        c.receive = Some(Receive::new("well").unwrap());
        c.credentials.login = Some("u".into());
        c.credentials.passwd = Some("p".into());
        let (s, _srv) = scripted(vec![
            send("220-hello\r\n220 ready\r\n"),
            expect("USER u\r\n"),
            send("331 pw\r\n"),
            expect("PASS p\r\n"),
            send("230 ok\r\n"),
            expect("CWD /\r\n"),
            send("250 ok\r\n"),
            expect("TYPE I\r\n"),
            send("200 binary\r\n"),
            expect("PASV\r\n"),
            send(&format!(
                "227 Entering Passive Mode (127,0,0,1,{},{})\r\n",
                port / 256,
                port % 256
            )),
            expect("RETR /health.txt\r\n"),
            send("150 here\r\n"),
            send("226 done\r\n"),
            expect("QUIT\r\n"),
        ]);
        let r = super::check(&c, s, "127.0.0.1".parse().unwrap()).await;
        assert_eq!(r.unwrap().0, "RETR 12 bytes");
        feeder.await.unwrap();
    }

    #[tokio::test]
    async fn a_refused_login_fails() {
        let c = sample(NegotiatedService::Ftp);
        let (s, _srv) = scripted(vec![
            send("220 ready\r\n"),
            expect("USER anonymous\r\n"),
            send("331 pw\r\n"),
            Step::Skip(7),
            send("530 Login incorrect.\r\n"),
        ]);
        let e = super::check(&c, s, "127.0.0.1".parse().unwrap())
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "PASS: answer \"530 Login incorrect.\"");
    }
}
