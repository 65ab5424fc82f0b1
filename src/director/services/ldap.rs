//! LDAP as ldirectord's `check_ldap` runs it through Net::LDAP: a simple bind (anonymous
//! unless `login` and `passwd` are set), then a search of the base DN `request` with scope
//! base and filter `(objectClass=*)`; up when exactly one entry comes back and, if `receive`
//! is set, its DN matches it. Messages are BER as RFC 4511 §4 defines them; only the few
//! element kinds these messages use are encoded and decoded here.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::check::{Failed, MAX_ANSWER, Outcome, Passed, ServiceCheck, expect_match};

/// One BER element: `tag` then the definite length then `content`.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | u8::try_from(bytes.len() - skip).unwrap_or(0));
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn int(tag: u8, n: u8) -> Vec<u8> {
    tlv(tag, &[n])
}

/// `BindRequest` (RFC 4511 §4.2) as message `id`: version 3, simple authentication.
pub fn bind_request(id: u8, dn: &str, password: &str) -> Vec<u8> {
    let mut op = int(0x02, 3);
    op.extend(tlv(0x04, dn.as_bytes()));
    op.extend(tlv(0x80, password.as_bytes()));
    let mut msg = int(0x02, id);
    msg.extend(tlv(0x60, &op));
    tlv(0x30, &msg)
}

/// `SearchRequest` (RFC 4511 §4.5.1): base `base`, scope base, no alias dereferencing,
/// filter `(objectClass=*)`, attributes `1.1` (none: only the DN is needed).
pub fn search_request(id: u8, base: &str) -> Vec<u8> {
    let mut op = tlv(0x04, base.as_bytes());
    op.extend(int(0x0a, 0));
    op.extend(int(0x0a, 0));
    op.extend(int(0x02, 0));
    op.extend(int(0x02, 0));
    op.extend(tlv(0x01, &[0]));
    op.extend(tlv(0x87, b"objectClass"));
    op.extend(tlv(0x30, &tlv(0x04, b"1.1")));
    let mut msg = int(0x02, id);
    msg.extend(tlv(0x63, &op));
    tlv(0x30, &msg)
}

/// `UnbindRequest` (RFC 4511 §4.3).
pub fn unbind_request(id: u8) -> Vec<u8> {
    let mut msg = int(0x02, id);
    msg.extend_from_slice(&[0x42, 0x00]);
    tlv(0x30, &msg)
}

/// Splits one element off `b`: `(tag, content, rest)`.
pub fn element(b: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let tag = *b.first().ok_or("element cut short")?;
    let first = *b.get(1).ok_or("element cut short")?;
    let (len, start) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err("unsupported length form".into());
        }
        let bytes = b.get(2..2 + n).ok_or("length cut short")?;
        let len = bytes.iter().fold(0usize, |a, x| (a << 8) | usize::from(*x));
        (len, 2 + n)
    };
    let content = b.get(start..start + len).ok_or("content cut short")?;
    Ok((tag, content, &b[start + len..]))
}

/// One LDAP response: the operation's tag and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Message id.
    pub id: u8,
    /// Protocol operation tag (0x61 BindResponse, 0x64 SearchResultEntry, 0x65 Done, …).
    pub op: u8,
    /// Its content.
    pub content: Vec<u8>,
}

/// Parses one whole LDAPMessage.
pub fn response(msg: &[u8]) -> Result<Response, String> {
    let (tag, body, _) = element(msg)?;
    if tag != 0x30 {
        return Err("not an LDAPMessage".into());
    }
    let (t, id, rest) = element(body)?;
    if t != 0x02 || id.len() != 1 {
        return Err("bad message id".into());
    }
    let (op, content, _) = element(rest)?;
    Ok(Response {
        id: id[0],
        op,
        content: content.to_vec(),
    })
}

/// The resultCode and diagnosticMessage of an LDAPResult (RFC 4511 §4.1.9).
pub fn result(content: &[u8]) -> Result<(u32, String), String> {
    let (_, code, rest) = element(content)?;
    let code = code.iter().fold(0u32, |a, x| (a << 8) | u32::from(*x));
    let (_, _matched, rest) = element(rest)?;
    let (_, diag, _) = element(rest)?;
    Ok((code, String::from_utf8_lossy(diag).into_owned()))
}

/// Reads one whole LDAPMessage from `s` (bounded by [`MAX_ANSWER`]).
async fn read_message<S: AsyncRead + Unpin>(
    s: &mut S,
    step: &'static str,
) -> Result<Vec<u8>, Failed> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await.map_err(Failed::io(step))?;
    let mut msg = head.to_vec();
    let len = if head[1] < 0x80 {
        usize::from(head[1])
    } else {
        let n = usize::from(head[1] & 0x7f);
        if n == 0 || n > 4 {
            return Err(Failed::Malformed {
                step,
                why: "unsupported length form".into(),
            });
        }
        let mut l = vec![0u8; n];
        s.read_exact(&mut l).await.map_err(Failed::io(step))?;
        msg.extend_from_slice(&l);
        l.iter().fold(0usize, |a, x| (a << 8) | usize::from(*x))
    };
    if len > MAX_ANSWER {
        return Err(Failed::Malformed {
            step,
            why: format!("message of {len} bytes"),
        });
    }
    let at = msg.len();
    msg.resize(at + len, 0);
    s.read_exact(&mut msg[at..])
        .await
        .map_err(Failed::io(step))?;
    Ok(msg)
}

/// Runs the LDAP check over `s`.
pub async fn check<S: AsyncRead + AsyncWrite + Unpin>(c: &ServiceCheck, mut s: S) -> Outcome {
    let bad = |step: &'static str| move |why: String| Failed::Malformed { step, why };
    let (dn, pw) = match (&c.credentials.login, &c.credentials.passwd) {
        (Some(l), Some(p)) => (l.as_str(), p.as_str()),
        _ => ("", ""),
    };
    s.write_all(&bind_request(1, dn, pw))
        .await
        .map_err(Failed::io("bind"))?;
    let r = response(&read_message(&mut s, "bind").await?).map_err(bad("bind"))?;
    if r.op != 0x61 {
        return Err(Failed::Malformed {
            step: "bind",
            why: format!("operation 0x{:02x}", r.op),
        });
    }
    let (code, diag) = result(&r.content).map_err(bad("bind"))?;
    if code != 0 {
        return Err(Failed::Answer {
            step: "bind",
            answer: format!("result {code} {diag}"),
        });
    }
    let base = c.request.as_deref().unwrap_or("");
    s.write_all(&search_request(2, base))
        .await
        .map_err(Failed::io("search"))?;
    let mut dns = Vec::new();
    for _ in 0..1000 {
        let r = response(&read_message(&mut s, "search").await?).map_err(bad("search"))?;
        match r.op {
            0x64 => {
                let (_, dn, _) = element(&r.content).map_err(bad("search"))?;
                dns.push(String::from_utf8_lossy(dn).into_owned());
            }
            0x65 => {
                let (code, diag) = result(&r.content).map_err(bad("search"))?;
                let _ = s.write_all(&unbind_request(3)).await;
                if code != 0 {
                    return Err(Failed::Answer {
                        step: "search",
                        answer: format!("result {code} {diag}"),
                    });
                }
                if dns.len() != 1 {
                    return Err(Failed::Answer {
                        step: "search",
                        answer: format!("{} entries, not 1", dns.len()),
                    });
                }
                if let Some(receive) = &c.receive {
                    expect_match(receive, "DN", &dns[0])?;
                }
                return Ok(Passed(format!("entry {}", dns[0])));
            }
            // Search result references and intermediate responses are skipped.
            _ => {}
        }
    }
    Err(Failed::Malformed {
        step: "search",
        why: "more than 1000 responses".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::director::{NegotiatedService, Receive};
    use crate::director::services::testing::*;

    fn ldap_result(id: u8, op: u8, code: u8) -> Vec<u8> {
        let mut r = int(0x0a, code);
        r.extend(tlv(0x04, b""));
        r.extend(tlv(0x04, b""));
        let mut m = int(0x02, id);
        m.extend(tlv(op, &r));
        tlv(0x30, &m)
    }

    fn entry(id: u8, dn: &str) -> Vec<u8> {
        let mut e = tlv(0x04, dn.as_bytes());
        e.extend(tlv(0x30, &[]));
        let mut m = int(0x02, id);
        m.extend(tlv(0x64, &e));
        tlv(0x30, &m)
    }

    #[test]
    fn encodings() {
        assert_eq!(
            bind_request(1, "", ""),
            [
                0x30, 0x0c, 0x02, 0x01, 0x01, 0x60, 0x07, 0x02, 0x01, 0x03, 0x04, 0x00, 0x80, 0x00
            ]
        );
        let long = tlv(0x04, &[0u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let (t, c, rest) = element(&long).unwrap();
        assert_eq!((t, c.len(), rest.len()), (0x04, 300, 0));
        let s = search_request(2, "dc=example,dc=org");
        let r = response(&s).unwrap();
        assert_eq!((r.id, r.op), (2, 0x63));
        for n in 0..s.len() {
            let _ = response(&s[..n]);
        }
    }

    fn check_of(receive: Option<&str>) -> ServiceCheck {
        let mut c = sample(NegotiatedService::Ldap);
        c.request = Some("dc=example,dc=org".into());
        c.receive = receive.map(|r| Receive::new(r).unwrap());
        c
    }

    #[tokio::test]
    async fn bind_search_one_entry() {
        let req = search_request(2, "dc=example,dc=org");
        let (s, _srv) = scripted(vec![
            Step::Expect(bind_request(1, "", "")),
            Step::Send(ldap_result(1, 0x61, 0)),
            Step::Expect(req),
            Step::Send(entry(2, "dc=example,dc=org")),
            Step::Send(ldap_result(2, 0x65, 0)),
        ]);
        let r = super::check(&check_of(Some("example")), s).await.unwrap();
        assert_eq!(r.0, "entry dc=example,dc=org");
    }

    #[tokio::test]
    async fn refused_bind_and_no_entry() {
        let (s, _srv) = scripted(vec![Step::Skip(14), Step::Send(ldap_result(1, 0x61, 49))]);
        let e = super::check(&check_of(None), s).await.unwrap_err();
        assert_eq!(e.to_string(), "bind: answer \"result 49 \"");
        let (s, _srv) = scripted(vec![
            Step::Skip(14),
            Step::Send(ldap_result(1, 0x61, 0)),
            Step::Skip(search_request(2, "dc=example,dc=org").len()),
            Step::Send(ldap_result(2, 0x65, 32)),
        ]);
        let e = super::check(&check_of(None), s).await.unwrap_err();
        assert_eq!(e.to_string(), "search: answer \"result 32 \"");
    }
}
