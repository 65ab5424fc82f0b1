//! RADIUS as ldirectord's `check_radius` runs it through Authen::Radius `check_pwd`: an
//! Access-Request for `login` with `passwd` hidden by `secret` (RFC 2865 §5.2), up on an
//! Access-Accept whose Response Authenticator verifies (RFC 2865 §3). Access-Reject is down.
//! The request also carries NAS-IP-Address (RFC 2865 §4.1 needs a NAS identification) and a
//! Message-Authenticator (RFC 3579 §3.2), which current FreeRADIUS wants from its clients.

use std::net::{IpAddr, SocketAddr};

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};

use super::check::{Failed, Outcome, Passed, ServiceCheck};

/// Access-Request code.
pub const ACCESS_REQUEST: u8 = 1;
/// Access-Accept code.
pub const ACCESS_ACCEPT: u8 = 2;
/// Access-Reject code.
pub const ACCESS_REJECT: u8 = 3;

fn attr(t: u8, v: &[u8]) -> Result<Vec<u8>, String> {
    let len =
        u8::try_from(v.len() + 2).map_err(|_| format!("attribute {t} longer than 253 bytes"))?;
    let mut a = vec![t, len];
    a.extend_from_slice(v);
    Ok(a)
}

/// User-Password hidden as RFC 2865 §5.2 says: padded to 16, each block XORed with
/// MD5(secret + previous block), the first with the Request Authenticator.
pub fn hide_password(password: &[u8], secret: &[u8], authenticator: &[u8; 16]) -> Vec<u8> {
    let mut p = password.to_vec();
    let pad = (16 - p.len() % 16) % 16;
    p.extend(std::iter::repeat_n(
        0u8,
        if p.is_empty() { 16 } else { pad },
    ));
    let mut out = Vec::with_capacity(p.len());
    let mut prev: Vec<u8> = authenticator.to_vec();
    for block in p.chunks(16) {
        let mut h = Md5::new();
        h.update(secret);
        h.update(&prev);
        let b = h.finalize();
        let c: Vec<u8> = block.iter().zip(b.iter()).map(|(x, y)| x ^ y).collect();
        out.extend_from_slice(&c);
        prev = c;
    }
    out
}

/// The Access-Request: `id`, `authenticator`, User-Name, User-Password, NAS address,
/// Message-Authenticator.
pub fn access_request(
    id: u8,
    authenticator: &[u8; 16],
    user: &str,
    password: &str,
    secret: &str,
    nas: IpAddr,
) -> Result<Vec<u8>, String> {
    let mut attrs = attr(1, user.as_bytes())?;
    attrs.extend(attr(
        2,
        &hide_password(password.as_bytes(), secret.as_bytes(), authenticator),
    )?);
    match nas {
        IpAddr::V4(a) => attrs.extend(attr(4, &a.octets())?),
        IpAddr::V6(a) => attrs.extend(attr(95, &a.octets())?),
    }
    let ma_at = 20 + attrs.len() + 2;
    attrs.extend(attr(80, &[0u8; 16])?);
    let len = u16::try_from(20 + attrs.len()).map_err(|_| "request too long".to_string())?;
    let mut p = vec![ACCESS_REQUEST, id];
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(authenticator);
    p.extend_from_slice(&attrs);
    let mut mac = <Hmac<Md5> as KeyInit>::new_from_slice(secret.as_bytes())
        .map_err(|_| "bad secret".to_string())?;
    mac.update(&p);
    p[ma_at..ma_at + 16].copy_from_slice(&mac.finalize().into_bytes());
    Ok(p)
}

/// Checks an answer to request `id`/`authenticator`: its code when the Response
/// Authenticator (MD5 of the answer with the request's authenticator, then the secret) is
/// right.
pub fn answer_code(p: &[u8], id: u8, authenticator: &[u8; 16], secret: &str) -> Result<u8, String> {
    if p.len() < 20 {
        return Err("answer shorter than 20 bytes".into());
    }
    let len = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if len < 20 || len > p.len() {
        return Err("bad length".into());
    }
    if p[1] != id {
        return Err("answer to another request".into());
    }
    let mut h = Md5::new();
    h.update(&p[..4]);
    h.update(authenticator);
    h.update(&p[20..len]);
    h.update(secret.as_bytes());
    if h.finalize().as_slice() != &p[4..20] {
        return Err("bad Response Authenticator (wrong secret?)".into());
    }
    Ok(p[0])
}

/// Runs the RADIUS check against `addr` (UDP).
pub async fn check(c: &ServiceCheck, addr: SocketAddr) -> Outcome {
    let cfg = |m: &str| Failed::Config(m.to_string());
    let user = c
        .credentials
        .login
        .as_deref()
        .ok_or_else(|| cfg("radius needs login"))?;
    let secret = c
        .credentials
        .secret
        .as_deref()
        .ok_or_else(|| cfg("radius needs secret"))?;
    let pass = c.credentials.passwd.as_deref().unwrap_or("");
    let sock = super::check::udp(addr).await?;
    let local = sock.local_addr().map_err(Failed::io("bind"))?;
    let mut random = [0u8; 17];
    let _ = getrandom::fill(&mut random);
    let id = random[16];
    let mut auth = [0u8; 16];
    auth.copy_from_slice(&random[..16]);
    let req = access_request(id, &auth, user, pass, secret, local.ip()).map_err(Failed::Config)?;
    sock.send(&req)
        .await
        .map_err(Failed::io("Access-Request"))?;
    let mut buf = vec![0u8; 4096];
    let mut last = String::new();
    for _ in 0..10 {
        let n = sock
            .recv(&mut buf)
            .await
            .map_err(Failed::io("Access-Request"))?;
        match answer_code(&buf[..n], id, &auth, secret) {
            Ok(ACCESS_ACCEPT) => return Ok(Passed("Access-Accept".into())),
            Ok(ACCESS_REJECT) => {
                return Err(Failed::Answer {
                    step: "Access-Request",
                    answer: "Access-Reject".into(),
                });
            }
            Ok(code) => {
                return Err(Failed::Answer {
                    step: "Access-Request",
                    answer: format!("code {code}"),
                });
            }
            // A datagram that does not verify is skipped (late answer, spoof); say why at the end.
            Err(why) => last = why,
        }
    }
    Err(Failed::Malformed {
        step: "Access-Request",
        why: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hiding_round_trips() {
        let auth = [7u8; 16];
        let hidden = hide_password(b"a password longer than 16", b"s3cret", &auth);
        assert_eq!(hidden.len(), 32);
        // Undo it as a server would.
        let mut prev = auth.to_vec();
        let mut plain = Vec::new();
        for block in hidden.chunks(16) {
            let mut h = Md5::new();
            h.update(b"s3cret");
            h.update(&prev);
            let b = h.finalize();
            plain.extend(block.iter().zip(b.iter()).map(|(x, y)| x ^ y));
            prev = block.to_vec();
        }
        assert_eq!(&plain[..25], b"a password longer than 16");
        assert!(plain[25..].iter().all(|b| *b == 0));
        assert_eq!(hide_password(b"", b"s", &auth).len(), 16);
    }

    #[test]
    fn request_layout_and_message_authenticator() {
        let auth = [1u8; 16];
        let p = access_request(9, &auth, "u", "p", "k", "192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!((p[0], p[1]), (ACCESS_REQUEST, 9));
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
        assert_eq!(&p[20..23], &[1, 3, b'u']);
        // The Message-Authenticator is the HMAC-MD5 of the packet with itself zeroed.
        let at = p.len() - 16;
        assert_eq!(&p[at - 2..at], &[80, 18]);
        let mut zeroed = p.clone();
        zeroed[at..].fill(0);
        let mut mac = <Hmac<Md5> as KeyInit>::new_from_slice(b"k").unwrap();
        mac.update(&zeroed);
        assert_eq!(&p[at..], mac.finalize().into_bytes().as_slice());
    }

    #[test]
    fn answers_verify_with_the_secret() {
        let auth = [3u8; 16];
        let mut a = vec![ACCESS_ACCEPT, 5, 0, 20];
        let mut h = Md5::new();
        h.update(&a);
        h.update(auth);
        h.update(b"k");
        a.extend_from_slice(&h.finalize());
        assert_eq!(answer_code(&a, 5, &auth, "k"), Ok(ACCESS_ACCEPT));
        assert!(
            answer_code(&a, 5, &auth, "wrong")
                .unwrap_err()
                .contains("wrong secret")
        );
        assert!(answer_code(&a, 6, &auth, "k").is_err());
        assert!(answer_code(&a[..10], 5, &auth, "k").is_err());
    }
}
