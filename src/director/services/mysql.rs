//! MySQL / MariaDB as ldirectord's `check_sql` runs it through DBI: log in as `login` with
//! `passwd` to `database`, run the query `request`; up when it returns at least one row.
//!
//! The client/server protocol (MySQL internals, "Connection Phase" and "COM_QUERY"): the
//! server's HandshakeV10, a HandshakeResponse41, authentication by `mysql_native_password`
//! (SHA-1 scramble) or the fast path of `caching_sha2_password` (SHA-256 scramble; its full
//! path needs TLS or RSA and is reported as such), then COM_QUERY and the text result set,
//! rows counted until the EOF packet.

use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::check::{Failed, MAX_ANSWER, Outcome, Passed, ServiceCheck};

const CLIENT_LONG_PASSWORD: u32 = 1;
const CLIENT_CONNECT_WITH_DB: u32 = 8;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_TRANSACTIONS: u32 = 0x2000;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;

/// What hbd needs of the server's greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// Server version text.
    pub version: String,
    /// The 20-byte scramble.
    pub salt: Vec<u8>,
    /// Authentication plugin the server starts with.
    pub plugin: String,
}

/// Parses HandshakeV10 (or an error packet's message).
pub fn handshake(p: &[u8]) -> Result<Handshake, String> {
    if p.first() == Some(&0xff) {
        return Err(error_text(p));
    }
    if p.first() != Some(&10) {
        return Err("not protocol version 10".into());
    }
    let nul = p[1..]
        .iter()
        .position(|b| *b == 0)
        .ok_or("no version end")?
        + 1;
    let version = String::from_utf8_lossy(&p[1..nul]).into_owned();
    let mut i = nul + 1 + 4;
    let mut salt = p.get(i..i + 8).ok_or("cut short")?.to_vec();
    i += 8 + 1 + 2 + 1 + 2 + 2;
    let auth_len = usize::from(*p.get(i).ok_or("cut short")?);
    i += 1 + 10;
    let part2 = auth_len.saturating_sub(8).max(13);
    if let Some(b) = p.get(i..i + part2) {
        salt.extend_from_slice(&b[..b.len() - 1]);
        i += part2;
    }
    let plugin = p
        .get(i..)
        .map(|b| String::from_utf8_lossy(b.split(|x| *x == 0).next().unwrap_or(&[])).into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "mysql_native_password".into());
    Ok(Handshake {
        version,
        salt,
        plugin,
    })
}

/// The message of an ERR packet (`0xff code #state message`).
pub fn error_text(p: &[u8]) -> String {
    let code = p
        .get(1..3)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .unwrap_or(0);
    let msg = if p.get(3) == Some(&b'#') {
        p.get(9..)
    } else {
        p.get(3..)
    };
    format!(
        "error {code}: {}",
        String::from_utf8_lossy(msg.unwrap_or(&[]))
    )
}

/// `mysql_native_password`: SHA1(pw) XOR SHA1(salt + SHA1(SHA1(pw))); empty for no password.
pub fn native_scramble(password: &str, salt: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = Sha1::digest(password.as_bytes());
    let h2 = Sha1::digest(h1);
    let mut h = Sha1::new();
    h.update(salt);
    h.update(h2);
    let h3 = h.finalize();
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

/// `caching_sha2_password` fast path: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + salt).
pub fn sha2_scramble(password: &str, salt: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = Sha256::digest(password.as_bytes());
    let h2 = Sha256::digest(h1);
    let mut h = Sha256::new();
    h.update(h2);
    h.update(salt);
    let h3 = h.finalize();
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

fn scramble(plugin: &str, password: &str, salt: &[u8]) -> Result<Vec<u8>, String> {
    match plugin {
        "mysql_native_password" => Ok(native_scramble(password, salt)),
        "caching_sha2_password" => Ok(sha2_scramble(password, salt)),
        p => Err(format!("authentication plugin {p} is not supported")),
    }
}

/// HandshakeResponse41 for `user` to `database` with the auth data of `plugin`.
pub fn login_packet(user: &str, auth: &[u8], database: Option<&str>, plugin: &str) -> Vec<u8> {
    let mut caps = CLIENT_LONG_PASSWORD
        | CLIENT_PROTOCOL_41
        | CLIENT_TRANSACTIONS
        | CLIENT_SECURE_CONNECTION
        | CLIENT_PLUGIN_AUTH;
    if database.is_some() {
        caps |= CLIENT_CONNECT_WITH_DB;
    }
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&(1u32 << 24).to_le_bytes());
    p.push(45); // utf8mb4_general_ci
    p.extend_from_slice(&[0u8; 23]);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    p.push(u8::try_from(auth.len()).unwrap_or(0));
    p.extend_from_slice(auth);
    if let Some(db) = database {
        p.extend_from_slice(db.as_bytes());
        p.push(0);
    }
    p.extend_from_slice(plugin.as_bytes());
    p.push(0);
    p
}

/// A packet on the wire: 3-byte length, sequence number, payload.
pub fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(0).to_le_bytes();
    let mut f = vec![len[0], len[1], len[2], seq];
    f.extend_from_slice(payload);
    f
}

/// The packet stream of one connection.
struct Conn<S> {
    s: S,
    seq: u8,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    async fn read(&mut self, step: &'static str) -> Result<Vec<u8>, Failed> {
        let mut h = [0u8; 4];
        self.s
            .read_exact(&mut h)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Failed::Closed { step },
                _ => Failed::Io { step, source: e },
            })?;
        let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        if len > MAX_ANSWER {
            return Err(Failed::Malformed {
                step,
                why: format!("packet of {len} bytes"),
            });
        }
        self.seq = h[3].wrapping_add(1);
        let mut p = vec![0u8; len];
        self.s.read_exact(&mut p).await.map_err(Failed::io(step))?;
        Ok(p)
    }

    async fn write(&mut self, step: &'static str, payload: &[u8]) -> Result<(), Failed> {
        let f = frame(self.seq, payload);
        self.seq = self.seq.wrapping_add(1);
        self.s.write_all(&f).await.map_err(Failed::io(step))
    }
}

/// Runs the MySQL check over `s`.
pub async fn check<S: AsyncRead + AsyncWrite + Unpin>(c: &ServiceCheck, s: S) -> Outcome {
    let user = c
        .credentials
        .login
        .as_deref()
        .ok_or_else(|| Failed::Config("mysql needs login".into()))?;
    let query = c
        .request
        .as_deref()
        .ok_or_else(|| Failed::Config("mysql needs request".into()))?;
    let pass = c.credentials.passwd.as_deref().unwrap_or("");
    let mut conn = Conn { s, seq: 0 };
    let hs = handshake(&conn.read("greeting").await?).map_err(|answer| Failed::Answer {
        step: "greeting",
        answer,
    })?;
    let auth = scramble(&hs.plugin, pass, &hs.salt)
        .map_err(|why| Failed::Malformed { step: "login", why })?;
    conn.write(
        "login",
        &login_packet(user, &auth, c.credentials.database.as_deref(), &hs.plugin),
    )
    .await?;
    for _ in 0..5 {
        let p = conn.read("login").await?;
        match p.first() {
            Some(0x00) => break,
            Some(0xff) => {
                return Err(Failed::Answer {
                    step: "login",
                    answer: error_text(&p),
                });
            }
            // AuthSwitchRequest: another plugin, with its own scramble.
            Some(0xfe) => {
                let rest = &p[1..];
                let nul = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                let plugin = String::from_utf8_lossy(&rest[..nul]).into_owned();
                let salt: Vec<u8> = rest
                    .get(nul + 1..)
                    .unwrap_or(&[])
                    .iter()
                    .copied()
                    .filter(|b| *b != 0)
                    .collect();
                let auth = scramble(&plugin, pass, &salt)
                    .map_err(|why| Failed::Malformed { step: "login", why })?;
                conn.write("login", &auth).await?;
            }
            // caching_sha2_password: 0x01 0x03 fast auth succeeded (OK follows); 0x01 0x04
            // wants the full exchange over TLS or RSA.
            Some(0x01) if p.get(1) == Some(&3) => {}
            Some(0x01) => {
                return Err(Failed::Answer {
                    step: "login",
                    answer: "caching_sha2_password full authentication (needs TLS); log in once with a MySQL client to fill the server's cache, or use mysql_native_password".into(),
                });
            }
            _ => {
                return Err(Failed::Malformed {
                    step: "login",
                    why: "unknown packet".into(),
                });
            }
        }
    }
    conn.seq = 0;
    let mut q = vec![0x03];
    q.extend_from_slice(query.as_bytes());
    conn.write("query", &q).await?;
    let first = conn.read("query").await?;
    match first.first() {
        Some(0xff) => {
            return Err(Failed::Answer {
                step: "query",
                answer: error_text(&first),
            });
        }
        Some(0x00) => {
            return Err(Failed::Answer {
                step: "query",
                answer: "no result set (0 rows)".into(),
            });
        }
        _ => {}
    }
    // Column definitions until EOF, then rows until EOF (CLIENT_DEPRECATE_EOF not asked).
    let is_eof = |p: &[u8]| p.first() == Some(&0xfe) && p.len() < 9;
    let mut eofs = 0;
    let mut rows = 0u64;
    for _ in 0..1_000_000 {
        let p = conn.read("query").await?;
        if p.first() == Some(&0xff) {
            return Err(Failed::Answer {
                step: "query",
                answer: error_text(&p),
            });
        }
        if is_eof(&p) {
            eofs += 1;
            if eofs == 2 {
                break;
            }
        } else if eofs == 1 {
            rows += 1;
        }
    }
    let _ = conn.write("quit", &[0x01]).await;
    if rows == 0 {
        return Err(Failed::no_rows(query));
    }
    Ok(Passed(format!("{rows} rows")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::director::NegotiatedService;
    use crate::director::services::testing::*;

    fn greeting(plugin: &str) -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"10.11.6-MariaDB\0");
        p.extend_from_slice(&[1, 0, 0, 0]);
        p.extend_from_slice(b"abcdefgh");
        p.push(0);
        p.extend_from_slice(&[0xff, 0xf7, 45, 2, 0, 0xff, 0x81, 21]);
        p.extend_from_slice(&[0u8; 10]);
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(plugin.as_bytes());
        p.push(0);
        p
    }

    #[test]
    fn greeting_and_scrambles() {
        let hs = handshake(&greeting("mysql_native_password")).unwrap();
        assert_eq!(hs.version, "10.11.6-MariaDB");
        assert_eq!(hs.salt, b"abcdefghijklmnopqrst");
        assert_eq!(hs.plugin, "mysql_native_password");
        assert_eq!(native_scramble("", &hs.salt), Vec::<u8>::new());
        assert_eq!(native_scramble("pw", &hs.salt).len(), 20);
        assert_eq!(sha2_scramble("pw", &hs.salt).len(), 32);
        let err = [
            0xff, 0x15, 0x04, b'#', b'2', b'8', b'0', b'0', b'0', b'n', b'o',
        ];
        assert_eq!(handshake(&err).unwrap_err(), "error 1045: no");
        let g = greeting("x");
        for n in 0..g.len() {
            let _ = handshake(&g[..n]);
        }
    }

    fn check_of() -> ServiceCheck {
        let mut c = sample(NegotiatedService::Mysql);
        c.credentials.login = Some("hbd".into());
        c.credentials.passwd = Some("pw".into());
        c.request = Some("SELECT 1".into());
        c
    }

    #[tokio::test]
    async fn login_query_and_count_rows() {
        let g = greeting("mysql_native_password");
        let auth = native_scramble("pw", b"abcdefghijklmnopqrst");
        let login = login_packet("hbd", &auth, None, "mysql_native_password");
        let eof = [0xfe, 0, 0, 2, 0];
        let (s, _srv) = scripted(vec![
            Step::Send(frame(0, &g)),
            Step::Expect(frame(1, &login)),
            Step::Send(frame(2, &[0, 0, 0, 2, 0, 0, 0])),
            Step::Expect(frame(0, b"\x03SELECT 1")),
            Step::Send(frame(1, &[1])),
            Step::Send(frame(
                2,
                b"\x03def\0\0\0\x011\0\x0c?\0\x01\0\0\0\x08\x81\0\0\0\0",
            )),
            Step::Send(frame(3, &eof)),
            Step::Send(frame(4, b"\x011")),
            Step::Send(frame(5, &eof)),
            Step::Expect(frame(1, &[1])),
        ]);
        assert_eq!(super::check(&check_of(), s).await.unwrap().0, "1 rows");
    }

    #[tokio::test]
    async fn refused_login_and_empty_result() {
        let (s, _srv) = scripted(vec![
            Step::Send(frame(0, &greeting("mysql_native_password"))),
            Step::Skip(4 + login_packet("hbd", &[0; 20], None, "mysql_native_password").len()),
            Step::Send(frame(2, b"\xff\x15\x04#28000Access denied")),
        ]);
        let e = super::check(&check_of(), s).await.unwrap_err();
        assert_eq!(e.to_string(), "login: answer \"error 1045: Access denied\"");
        let eof = [0xfe, 0, 0, 2, 0];
        let (s, _srv) = scripted(vec![
            Step::Send(frame(0, &greeting("mysql_native_password"))),
            Step::Skip(4 + login_packet("hbd", &[0; 20], None, "mysql_native_password").len()),
            Step::Send(frame(2, &[0, 0, 0, 2, 0, 0, 0])),
            Step::Skip(4 + 9),
            Step::Send(frame(1, &[1])),
            Step::Send(frame(2, b"col")),
            Step::Send(frame(3, &eof)),
            Step::Send(frame(4, &eof)),
        ]);
        let e = super::check(&check_of(), s).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "query: answer \"0 rows from \\\"SELECT 1\\\"\""
        );
    }
}
