//! Reliable delivery as heartbeat does it (HEARTBEAT-WIRE.md §7.3, `hb_rexmit.c`), as plain
//! data: the history of our sequenced frames, when to acknowledge a peer's frames, and the
//! retransmission requests for the peer's frames we miss.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Frames kept for retransmission (heartbeat `MAXMSGHIST`).
pub const MAX_HISTORY: usize = 500;

/// At most this many frames answer one `NS_rexmit` (heartbeat `MAX_REXMIT_BATCH`).
pub const MAX_REXMIT_BATCH: u64 = 50;

/// heartbeat's default `max_rexmit_delay`: a missing frame is asked for again this often,
/// and a frame is resent at most once per this interval less 10 ms.
pub const REXMIT_DELAY: Duration = Duration::from_millis(250);

/// The first request for a missing frame waits this long: heartbeat waits a random
/// 50–250 ms, since reordered frames (its FIFO clients overtake the master) usually arrive
/// in that time.
pub const FIRST_REQUEST_DELAY: Duration = Duration::from_millis(100);

/// Our sequenced frames as sent, by seq, oldest first, at most [`MAX_HISTORY`].
#[derive(Debug, Default)]
pub struct SentHistory {
    frames: VecDeque<Sent>,
}

#[derive(Debug)]
struct Sent {
    seq: u64,
    frame: Vec<u8>,
    /// When it was last resent, to resend it at most once per [`REXMIT_DELAY`].
    resent: Option<Instant>,
}

/// The answer to a retransmission request for one seq.
#[derive(Debug, PartialEq, Eq)]
pub enum RexmitAnswer<'a> {
    /// Resend these exact bytes (the original `ts` included).
    Resend(&'a [u8]),
    /// Resent moments ago: nothing now.
    TooSoon,
    /// Not in the history: answer `NS_nak_rexmit`.
    Gone,
}

impl SentHistory {
    /// Remembers a sequenced frame we sent.
    pub fn record(&mut self, seq: u64, frame: &[u8]) {
        if self.frames.len() == MAX_HISTORY {
            self.frames.pop_front();
        }
        self.frames.push_back(Sent {
            seq,
            frame: frame.to_vec(),
            resent: None,
        });
    }

    /// How many frames are kept.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// What to do for a request of `seq` at `now`.
    pub fn answer(&mut self, seq: u64, now: Instant) -> RexmitAnswer<'_> {
        let Some(sent) = self.frames.iter_mut().find(|s| s.seq == seq) else {
            return RexmitAnswer::Gone;
        };
        let min_gap = REXMIT_DELAY - Duration::from_millis(10);
        if sent.resent.is_some_and(|t| now < t + min_gap) {
            return RexmitAnswer::TooSoon;
        }
        sent.resent = Some(now);
        RexmitAnswer::Resend(&sent.frame)
    }
}

/// The seqs one `NS_rexmit firstseq lastseq` asks for, at most [`MAX_REXMIT_BATCH`].
pub fn requested(first: u64, last: u64) -> impl Iterator<Item = u64> {
    let last = last
        .max(first)
        .min(first.saturating_add(MAX_REXMIT_BATCH - 1));
    first..=last
}

/// Whether to acknowledge a peer's frame `seq` (`send_ack_if_needed`): heartbeat acks every
/// tenth seq, at a per-peer offset (`ack_trigger`), when nothing is missing.
pub fn should_ack(seq: u64, trigger: u64, missing: usize) -> bool {
    missing == 0 && seq % 10 == trigger % 10
}

/// Retransmission requests for one peer's missing frames: seq → when to ask (again).
#[derive(Debug, Default)]
pub struct RexmitRequests {
    due: BTreeMap<u64, Instant>,
}

impl RexmitRequests {
    /// Frames `seqs` went missing at `now`: ask for each after [`FIRST_REQUEST_DELAY`].
    pub fn on_gap(&mut self, seqs: impl IntoIterator<Item = u64>, now: Instant) {
        for s in seqs {
            self.due.entry(s).or_insert(now + FIRST_REQUEST_DELAY);
        }
    }

    /// Frame `seq` arrived: no more requests for it.
    pub fn on_arrived(&mut self, seq: u64) {
        self.due.remove(&seq);
    }

    /// Forget everything (the peer restarted, died or resynchronised).
    pub fn clear(&mut self) {
        self.due.clear();
    }

    /// The earliest request due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// The seqs to ask for at `now`; each is asked again [`REXMIT_DELAY`] later.
    pub fn due(&mut self, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        for (seq, at) in self.due.iter_mut() {
            if *at <= now {
                out.push(*seq);
                *at = now + REXMIT_DELAY;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_answers_with_the_original_bytes_once_per_interval() {
        let t0 = crate::clock::now();
        let mut h = SentHistory::default();
        for seq in 1..=(MAX_HISTORY as u64 + 2) {
            h.record(seq, format!("frame {seq}").as_bytes());
        }
        assert_eq!(h.len(), MAX_HISTORY);
        assert_eq!(h.answer(1, t0), RexmitAnswer::Gone);
        assert_eq!(h.answer(3, t0), RexmitAnswer::Resend(b"frame 3"));
        assert_eq!(
            h.answer(3, t0 + Duration::from_millis(100)),
            RexmitAnswer::TooSoon
        );
        assert_eq!(
            h.answer(3, t0 + REXMIT_DELAY),
            RexmitAnswer::Resend(b"frame 3")
        );
    }

    #[test]
    fn a_request_is_bounded_to_one_batch() {
        assert_eq!(requested(7, 7).collect::<Vec<_>>(), [7]);
        assert_eq!(requested(1, 1000).count() as u64, MAX_REXMIT_BATCH);
        assert_eq!(requested(9, 3).collect::<Vec<_>>(), [9]);
    }

    #[test]
    fn acks_every_tenth_seq_at_the_trigger_when_nothing_is_missing() {
        let acked: Vec<u64> = (1..=30).filter(|s| should_ack(*s, 3, 0)).collect();
        assert_eq!(acked, [3, 13, 23]);
        assert!(!should_ack(13, 3, 1));
    }

    #[test]
    fn missing_frames_are_asked_for_after_a_delay_then_every_interval_until_they_arrive() {
        let t0 = crate::clock::now();
        let mut r = RexmitRequests::default();
        r.on_gap([5, 6], t0);
        assert!(r.due(t0).is_empty());
        assert_eq!(r.next_due(), Some(t0 + FIRST_REQUEST_DELAY));
        assert_eq!(r.due(t0 + FIRST_REQUEST_DELAY), [5, 6]);
        r.on_arrived(5);
        let again = t0 + FIRST_REQUEST_DELAY + REXMIT_DELAY;
        assert_eq!(r.due(again), [6]);
        r.clear();
        assert_eq!(r.next_due(), None);
    }
}
