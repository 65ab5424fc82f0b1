//! How a node tells its peer its reachability: the `hbd_reach` field of its `status`
//! heartbeats, `REACHABLE/TOTAL` in decimal (`2/3`).
//!
//! ipfail asked its peer with a `num_ping_nodes` message on each ping-node event; hbd puts the
//! count in every heartbeat instead, so the peer's view is never older than a keepalive and
//! no extra message can be lost. heartbeat 3.0.6 ignores fields it does not know. A node
//! whose count is not settled yet (targets still `Init`) or that has no targets sends no
//! field, which the peer reads as "unknown". The field changes rarely, so it belongs among
//! the fields a sender keeps pre-encoded.

use super::targets::Reach;

/// The heartbeat field that carries a node's count.
pub const REACH_FIELD: &str = "hbd_reach";

/// Most targets a count may name; anything larger is malformed (a configuration never holds
/// that many ping nodes, and the bound keeps a number from overflowing).
pub const MAX_TARGETS: u32 = 65_535;

/// Why an `hbd_reach` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReachFieldError {
    /// Not two decimal numbers around one `/`.
    #[error("hbd_reach {0:?} is not REACHABLE/TOTAL in decimal")]
    Syntax(String),
    /// Numbers that cannot be a count.
    #[error(
        "hbd_reach {text:?}: {reachable} reachable of {total} is not a count (at most {MAX_TARGETS} targets, none reachable beyond the total, at least one target)"
    )]
    Range {
        /// The value as received (lossy UTF-8).
        text: String,
        /// Reachable targets it says.
        reachable: u64,
        /// Targets it says.
        total: u64,
    },
}

/// The field's value for `reach`.
pub fn encode_reach(reach: Reach) -> String {
    format!("{}/{}", reach.reachable, reach.total)
}

/// Reads an `hbd_reach` value. Only the form [`encode_reach`] writes is accepted: ASCII
/// digits without sign, spaces or leading zeros, `reachable ≤ total`, `1 ≤ total ≤
/// MAX_TARGETS`.
pub fn parse_reach(value: &[u8]) -> Result<Reach, ReachFieldError> {
    let text = || String::from_utf8_lossy(value).into_owned();
    let number = |part: &[u8]| -> Option<u64> {
        let canonical = match part {
            [] => false,
            [b'0'] => true,
            [first, ..] => *first != b'0',
        };
        if !canonical || part.len() > 10 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter().try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
    };
    let mut parts = value.splitn(2, |b| *b == b'/');
    let (Some(a), Some(b)) = (parts.next(), parts.next()) else {
        return Err(ReachFieldError::Syntax(text()));
    };
    let (Some(reachable), Some(total)) = (number(a), number(b)) else {
        return Err(ReachFieldError::Syntax(text()));
    };
    let fits = |n: u64| u32::try_from(n).ok().filter(|n| *n <= MAX_TARGETS);
    match (fits(reachable), fits(total)) {
        (Some(r), Some(t)) if t >= 1 && r <= t => Ok(Reach {
            reachable: r,
            total: t,
        }),
        _ => Err(ReachFieldError::Range {
            text: text(),
            reachable,
            total,
        }),
    }
}

/// The peer's count as its heartbeats say it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerReach {
    current: Option<Reach>,
    malformed: u64,
}

impl PeerReach {
    /// A peer not heard yet.
    pub fn new() -> PeerReach {
        PeerReach::default()
    }

    /// A `status` heartbeat of the peer arrived with `field` (the `hbd_reach` value, `None`
    /// when absent). Absent means the peer has no count (starting, or no targets). A
    /// malformed value is ignored as a whole (the count stays as it was), counted, and
    /// returned as the error for the caller to log. `Ok(true)` when the count changed.
    pub fn on_status(&mut self, field: Option<&[u8]>) -> Result<bool, ReachFieldError> {
        let next = match field.map(parse_reach).transpose() {
            Ok(next) => next,
            Err(e) => {
                self.malformed += 1;
                return Err(e);
            }
        };
        let changed = next != self.current;
        self.current = next;
        Ok(changed)
    }

    /// The peer was declared dead: its count is unknown until it speaks again.
    pub fn on_peer_dead(&mut self) {
        self.current = None;
    }

    /// The peer's count, if it said one.
    pub fn current(&self) -> Option<Reach> {
        self.current
    }

    /// How many malformed values were ignored.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(reachable: u32, total: u32) -> Reach {
        Reach { reachable, total }
    }

    #[test]
    fn counts_round_trip() {
        for (r, t) in [(0, 1), (1, 1), (2, 3), (0, 65_535), (65_535, 65_535)] {
            let text = encode_reach(reach(r, t));
            assert_eq!(parse_reach(text.as_bytes()), Ok(reach(r, t)), "{text}");
        }
        assert_eq!(encode_reach(reach(2, 3)), "2/3");
    }

    #[test]
    fn every_count_round_trips_and_nothing_else_parses() {
        // Every value that parses is exactly what encode writes for it.
        let alphabet = b"0123456789/ +-x";
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let len = usize::try_from(seed >> 60).unwrap_or(0);
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    alphabet[usize::try_from((seed >> (i * 4)) & 0xf).unwrap_or(0) % alphabet.len()]
                })
                .collect();
            if let Ok(r) = parse_reach(&bytes) {
                assert_eq!(encode_reach(r).as_bytes(), &bytes[..]);
                assert!(r.reachable <= r.total && r.total >= 1);
            }
        }
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "/",
            "1",
            "1/",
            "/1",
            "1/2/3",
            " 1/2",
            "1/2 ",
            "+1/2",
            "-1/2",
            "01/2",
            "1/02",
            "a/b",
            "1.0/2",
            "1/0",
            "0/0",
            "3/2",
            "1/65536",
            "99999999999/1",
            "1/99999999999999999999",
        ] {
            assert!(parse_reach(bad.as_bytes()).is_err(), "{bad:?} parsed");
        }
        assert!(parse_reach(b"\xff/1").is_err());
        assert_eq!(
            parse_reach(b"3/2").unwrap_err().to_string(),
            "hbd_reach \"3/2\": 3 reachable of 2 is not a count (at most 65535 targets, none reachable beyond the total, at least one target)"
        );
    }

    #[test]
    fn the_peer_count_is_never_half_applied() {
        let mut p = PeerReach::new();
        assert_eq!(p.on_status(Some(b"2/3")), Ok(true));
        assert_eq!(p.on_status(Some(b"2/3")), Ok(false));
        assert!(p.on_status(Some(b"2/x")).is_err());
        assert_eq!(p.current(), Some(reach(2, 3)), "kept as it was");
        assert_eq!(p.malformed(), 1);
        assert_eq!(p.on_status(None), Ok(true), "absent: unknown");
        assert_eq!(p.current(), None);
        p.on_status(Some(b"1/3")).unwrap();
        p.on_peer_dead();
        assert_eq!(p.current(), None);
    }
}
