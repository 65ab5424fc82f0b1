//! DNS as ldirectord's `check_dns` runs it through Net::DNS: one recursive query for
//! `request` (type A, or PTR when `request` is an IP address) over the virtual service's
//! transport (UDP, or TCP with the two-byte length prefix of RFC 1035 §4.2.2); up when an A
//! address or a PTR name in the answer section matches `receive`.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::check::{Failed, Outcome, Passed, ServiceCheck, Transport, cut};

/// RR type A (RFC 1035 §3.2.2).
pub const TYPE_A: u16 = 1;
/// RR type PTR.
pub const TYPE_PTR: u16 = 12;

/// One answer record hbd looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// An IPv4 address.
    A(std::net::Ipv4Addr),
    /// A PTR target name.
    Ptr(String),
    /// Another type (ignored, as ldirectord ignores it).
    Other(u16),
}

/// The question for `request`: `(name, type)`; an address becomes its reverse name.
pub fn question(request: &str) -> (String, u16) {
    match request.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => {
            let o = a.octets();
            (
                format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0]),
                TYPE_PTR,
            )
        }
        Ok(IpAddr::V6(a)) => {
            let mut name = String::new();
            for b in a.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            name.push_str("ip6.arpa");
            (name, TYPE_PTR)
        }
        Err(_) => (request.trim_end_matches('.').to_string(), TYPE_A),
    }
}

/// A standard query with recursion desired (RFC 1035 §4.1).
pub fn query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut m = Vec::with_capacity(name.len() + 18);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| *l <= 63)
            .ok_or_else(|| format!("label {label:?} is longer than 63 bytes"))?;
        m.push(len);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    Ok(m)
}

fn u16_at(m: &[u8], i: usize) -> Result<u16, String> {
    m.get(i..i + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| "message cut short".to_string())
}

/// Reads the (possibly compressed, RFC 1035 §4.1.4) name at `i`; returns it and the index
/// after it in the original position.
pub fn name_at(m: &[u8], mut i: usize) -> Result<(String, usize), String> {
    let mut name = String::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *m.get(i).ok_or("name cut short")?;
        match len {
            0 => {
                return Ok((name, end.unwrap_or(i + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let ptr = usize::from(u16_at(m, i)? & 0x3fff);
                end.get_or_insert(i + 2);
                i = ptr;
            }
            l if l & 0xc0 == 0 => {
                let l = usize::from(l);
                let label = m.get(i + 1..i + 1 + l).ok_or("label cut short")?;
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(&String::from_utf8_lossy(label));
                i += 1 + l;
            }
            _ => return Err("unknown label type".into()),
        }
    }
    Err("name with more than 128 labels or a pointer loop".into())
}

/// The answer records of a response to query `id` (RFC 1035 §4.1.1); an error names a
/// wrong id, a failure code or a malformed message.
pub fn answers(m: &[u8], id: u16) -> Result<Vec<Record>, String> {
    if u16_at(m, 0)? != id {
        return Err("answer to another query".into());
    }
    let flags = u16_at(m, 2)?;
    if flags & 0x8000 == 0 {
        return Err("not a response".into());
    }
    let rcode = flags & 0x000f;
    if rcode != 0 {
        let name = match rcode {
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            _ => "error",
        };
        return Err(format!("rcode {rcode} ({name})"));
    }
    let (qd, an) = (u16_at(m, 4)?, u16_at(m, 6)?);
    let mut i = 12;
    for _ in 0..qd {
        i = name_at(m, i)?.1 + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = name_at(m, i)?.1;
        let rtype = u16_at(m, i)?;
        let rdlen = usize::from(u16_at(m, i + 8)?);
        let rdata = i + 10;
        if m.len() < rdata + rdlen {
            return Err("record cut short".into());
        }
        out.push(match rtype {
            TYPE_A if rdlen == 4 => Record::A(std::net::Ipv4Addr::new(
                m[rdata],
                m[rdata + 1],
                m[rdata + 2],
                m[rdata + 3],
            )),
            TYPE_PTR => Record::Ptr(name_at(m, rdata)?.0),
            t => Record::Other(t),
        });
        i = rdata + rdlen;
    }
    Ok(out)
}

/// Up when an A address or PTR name matches `receive` (ldirectord looks at no other type).
pub fn judge(c: &ServiceCheck, records: &[Record]) -> Outcome {
    let seen: Vec<String> = records
        .iter()
        .filter_map(|r| match r {
            Record::A(a) => Some(a.to_string()),
            Record::Ptr(n) => Some(n.clone()),
            Record::Other(_) => None,
        })
        .collect();
    let Some(receive) = &c.receive else {
        return Err(Failed::Config("dns needs receive".into()));
    };
    match seen.iter().find(|s| receive.is_match(s)) {
        Some(s) => Ok(Passed(format!("answer {s}"))),
        None if seen.is_empty() => Err(Failed::Answer {
            step: "query",
            answer: "no A or PTR record".into(),
        }),
        None => Err(Failed::Mismatch {
            what: "answer",
            got: cut(&seen.join(" "), 200),
            pattern: receive.as_str().to_string(),
        }),
    }
}

/// Runs the DNS check against `addr`.
pub async fn check(c: &ServiceCheck, addr: SocketAddr) -> Outcome {
    let (name, qtype) = question(c.request.as_deref().unwrap_or(""));
    let mut idb = [0u8; 2];
    let _ = getrandom::fill(&mut idb);
    let id = u16::from_be_bytes(idb);
    let q = query(id, &name, qtype).map_err(Failed::Config)?;
    let bad = |why: String| Failed::Malformed { step: "query", why };
    let answer = match c.transport {
        Transport::Udp => {
            let sock = super::check::udp(addr).await?;
            sock.send(&q).await.map_err(Failed::io("query"))?;
            let mut buf = vec![0u8; 4096];
            // Datagrams of other ids (late answers, spoofs) are skipped.
            let mut found = None;
            for _ in 0..10 {
                let n = sock.recv(&mut buf).await.map_err(Failed::io("query"))?;
                if n >= 2 && u16_at(&buf, 0).ok() == Some(id) {
                    found = Some(buf[..n].to_vec());
                    break;
                }
            }
            found.ok_or_else(|| bad("no answer with the query's id".into()))?
        }
        Transport::Tcp => {
            let mut s = super::check::connect(addr).await?;
            let len = u16::try_from(q.len()).map_err(|_| bad("query too long".into()))?;
            let mut framed = len.to_be_bytes().to_vec();
            framed.extend_from_slice(&q);
            s.write_all(&framed).await.map_err(Failed::io("query"))?;
            let n = s.read_u16().await.map_err(Failed::io("answer"))?;
            let mut m = vec![0u8; usize::from(n)];
            s.read_exact(&mut m).await.map_err(Failed::io("answer"))?;
            m
        }
    };
    let records = answers(&answer, id).map_err(|why| match why.starts_with("rcode") {
        true => Failed::Answer {
            step: "query",
            answer: why,
        },
        false => bad(why),
    })?;
    judge(c, &records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::director::{NegotiatedService, Receive};
    use crate::director::services::testing;

    /// A response to `q` with one A record (compressed name) and one PTR record.
    fn response(q: &[u8], rcode: u8) -> Vec<u8> {
        let mut m = q.to_vec();
        m[2] = 0x81;
        m[3] = 0x80 | rcode;
        m[7] = 2;
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
        m.extend_from_slice(&[0xc0, 12, 0, 12, 0, 1, 0, 0, 0, 60, 0, 6]);
        m.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 12]);
        m
    }

    #[test]
    fn questions_and_queries() {
        assert_eq!(
            question("www.example.org."),
            ("www.example.org".into(), TYPE_A)
        );
        assert_eq!(
            question("192.0.2.7"),
            ("7.2.0.192.in-addr.arpa".into(), TYPE_PTR)
        );
        assert!(
            question("2001:db8::1")
                .0
                .ends_with(".8.b.d.0.1.0.0.2.ip6.arpa")
        );
        let q = query(0x1234, "a.example", TYPE_A).unwrap();
        assert_eq!(
            q,
            [
                0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 7, b'e', b'x', b'a', b'm', b'p',
                b'l', b'e', 0, 0, 1, 0, 1
            ]
        );
        assert!(query(1, &"x".repeat(64), TYPE_A).is_err());
    }

    #[test]
    fn answers_with_compression_and_errors() {
        let q = query(7, "a.example", TYPE_A).unwrap();
        let r = answers(&response(&q, 0), 7).unwrap();
        assert_eq!(
            r,
            [
                Record::A("192.0.2.7".parse().unwrap()),
                Record::Ptr("www.a.example".into())
            ]
        );
        assert_eq!(
            answers(&response(&q, 3), 7).unwrap_err(),
            "rcode 3 (NXDOMAIN)"
        );
        assert_eq!(
            answers(&response(&q, 0), 8).unwrap_err(),
            "answer to another query"
        );
        // Every truncation is an error, never a panic; a pointer loop too.
        let full = response(&q, 0);
        for n in 0..full.len() {
            let _ = answers(&full[..n], 7);
        }
        assert!(name_at(&[0xc0, 0], 0).is_err());
    }

    #[test]
    fn judged_against_receive() {
        let mut c = testing::sample(NegotiatedService::Dns);
        c.receive = Some(Receive::new("^192\\.0\\.2\\.7$").unwrap());
        let recs = [Record::Other(5), Record::A("192.0.2.7".parse().unwrap())];
        assert_eq!(judge(&c, &recs).unwrap().0, "answer 192.0.2.7");
        c.receive = Some(Receive::new("^198\\.").unwrap());
        let e = judge(&c, &recs).unwrap_err();
        assert_eq!(
            e.to_string(),
            "answer \"192.0.2.7\" does not match receive \"^198\\\\.\""
        );
        assert_eq!(
            judge(&c, &[]).unwrap_err().to_string(),
            "query: answer \"no A or PTR record\""
        );
    }
}
