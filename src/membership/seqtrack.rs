//! Per-peer receive state: the generation and sequence checks that drop replayed, stale and
//! duplicate frames and detect lost ones.
//!
//! Implements heartbeat's `should_drop_message` (HEARTBEAT-WIRE.md §7.3 steps 3–7, with the
//! generation rules of §7.4) as a pure state machine: the caller passes the authenticated
//! frame's `hg` and `seq` (see [`super::wire::read_envelope`]) and acts on the
//! [`SeqVerdict`] (process, refresh the link, log, schedule `NS_rexmit` for
//! [`SeqTrack::missing`]). `NS_*` messages bypass this tracking entirely (§7.3 step 1).
//!
//! Differences from heartbeat, all deliberate:
//! * A higher generation restarts tracking whatever the message type; heartbeat only does it
//!   for `status`. A restarted node's first frames are always `status` (seq 1–3), so the only
//!   effect is that a reordered non-status frame of the new run is not dropped.
//! * The known generation can be seeded ([`SeqTrack::with_min_generation`]) from the value the
//!   daemon persisted, so replays of an older run are dropped even after the receiver itself
//!   restarts (heartbeat forgets, §7.4). Frames of the *current* run can still be replayed to
//!   a freshly restarted receiver; the peer's next status then moves the sequence on.
//! * When more than [`MAX_MISSING`] seqs are outstanding the oldest are forgotten (heartbeat
//!   refuses to record new ones).

use std::collections::BTreeSet;

/// Most missing seqs remembered per peer (heartbeat `MAXMISSING`).
pub const MAX_MISSING: usize = 500;

/// A gap larger than this resets tracking instead of requesting retransmissions (heartbeat
/// `FLOWCONTROL_LIMIT`, §7.3 step 6).
pub const FLOWCONTROL_LIMIT: u64 = 250;

/// What to do with a sequenced frame, from [`SeqTrack::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// In order (or the first frame heard in this generation): process it.
    Accept,
    /// A higher generation: the peer restarted. Tracking was reset; process it and log
    /// "Heartbeat restart on node X".
    Restart {
        /// The generation known before, if any.
        previous: u64,
    },
    /// A newer `status` from a peer we consider dead, same generation: it is returning after
    /// a partition (§7.3 step 3). Tracking was reset to this seq; process it.
    Rejoin,
    /// The seq we last accepted, again (several media, multicast loop): do not process, but
    /// it refreshes the link it came on.
    Duplicate,
    /// A seq we had recorded as missing arrived late (reordering or retransmission): process
    /// it; cancel its retransmission request.
    Late,
    /// Lower generation than known: drop and log "attempted replay attack".
    Replay {
        /// The generation known for this peer.
        known: u64,
    },
    /// An older seq that is not missing (an old duplicate), or a status not newer than the
    /// last one from a dead peer: drop.
    Stale,
    /// Ahead of the next expected seq by `missing` frames, which are now recorded: process it
    /// (recorded as missing, so each can still arrive late) ("N lost packet(s)").
    Gap {
        /// How many seqs were skipped.
        missing: u64,
    },
    /// Ahead by more than [`FLOWCONTROL_LIMIT`]: too many to retransmit, tracking was reset to
    /// this seq; process it.
    Resync {
        /// How many seqs were skipped.
        lost: u64,
    },
}

impl SeqVerdict {
    /// Whether the frame should be processed (heartbeat KEEPIT).
    pub fn is_accepted(self) -> bool {
        !matches!(
            self,
            SeqVerdict::Duplicate | SeqVerdict::Replay { .. } | SeqVerdict::Stale
        )
    }
}

/// Receive state for one peer (heartbeat `struct seqtrack` plus `status_seqno`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqTrack {
    /// Highest generation seen (or seeded); frames below it are replays.
    generation: Option<u64>,
    /// Highest seq accepted in this generation.
    last_seq: Option<u64>,
    /// Seq of the last accepted `status`, to refuse stale ones after a partition.
    last_status_seq: Option<u64>,
    /// Seqs skipped over and not yet received, at most [`MAX_MISSING`].
    missing: BTreeSet<u64>,
}

impl SeqTrack {
    /// State for a peer never heard from: its first frame is accepted whatever its generation.
    pub fn new() -> SeqTrack {
        SeqTrack::default()
    }

    /// State for a peer whose last generation was persisted (`peer_generations`): frames
    /// from an older generation are replays even though this receiver restarted.
    pub fn with_min_generation(generation: u64) -> SeqTrack {
        SeqTrack {
            generation: Some(generation),
            ..SeqTrack::default()
        }
    }

    /// The peer's known generation, to persist for [`SeqTrack::with_min_generation`].
    pub fn generation(&self) -> Option<u64> {
        self.generation
    }

    /// The highest seq accepted in the current generation.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// Seqs still missing, oldest first (what an `NS_rexmit` asks for).
    pub fn missing(&self) -> impl Iterator<Item = u64> + '_ {
        self.missing.iter().copied()
    }

    /// How many seqs are still missing (heartbeat acknowledges only when none is).
    pub fn missing_count(&self) -> usize {
        self.missing.len()
    }

    /// Forgets the sequence position but keeps the generation and the last status seq, as
    /// heartbeat does when it declares the peer dead (§7.5): the next frame is accepted as
    /// a first one, and a stale status is still refused.
    pub fn mark_dead(&mut self) {
        self.last_seq = None;
        self.missing.clear();
    }

    /// Classifies one sequenced frame from this peer and updates the state.
    ///
    /// `is_status` says the frame is a `status` message; `peer_dead` that the caller currently
    /// considers the peer dead (enables the returning-after-partition check).
    pub fn check(
        &mut self,
        generation: u64,
        seq: u64,
        is_status: bool,
        peer_dead: bool,
    ) -> SeqVerdict {
        let verdict = match self.generation {
            Some(known) if generation < known => return SeqVerdict::Replay { known },
            Some(known) if generation > known => {
                self.reset_to(generation, seq);
                self.last_status_seq = None;
                SeqVerdict::Restart { previous: known }
            }
            None => {
                self.reset_to(generation, seq);
                SeqVerdict::Accept
            }
            Some(_) if is_status && peer_dead => {
                if self.last_status_seq.is_some_and(|s| seq <= s) {
                    return SeqVerdict::Stale;
                }
                self.reset_to(generation, seq);
                SeqVerdict::Rejoin
            }
            Some(_) => self.check_seq(seq),
        };
        if is_status && verdict.is_accepted() {
            self.last_status_seq = Some(self.last_status_seq.map_or(seq, |s| s.max(seq)));
        }
        verdict
    }

    /// Starts tracking afresh at `seq` in `generation`.
    fn reset_to(&mut self, generation: u64, seq: u64) {
        self.generation = Some(generation);
        self.last_seq = Some(seq);
        self.missing.clear();
    }

    /// The seq checks within one generation (§7.3 steps 4–7).
    fn check_seq(&mut self, seq: u64) -> SeqVerdict {
        let Some(last) = self.last_seq else {
            self.last_seq = Some(seq);
            return SeqVerdict::Accept;
        };
        if seq == last {
            return SeqVerdict::Duplicate;
        }
        if seq < last {
            return if self.missing.remove(&seq) {
                SeqVerdict::Late
            } else {
                SeqVerdict::Stale
            };
        }
        self.last_seq = Some(seq);
        let skipped = seq - last - 1;
        if skipped == 0 {
            SeqVerdict::Accept
        } else if skipped > FLOWCONTROL_LIMIT {
            self.missing.clear();
            SeqVerdict::Resync { lost: skipped }
        } else {
            self.missing.extend(last + 1..seq);
            while self.missing.len() > MAX_MISSING {
                self.missing.pop_first();
            }
            SeqVerdict::Gap { missing: skipped }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HG: u64 = 0x6b02_2fab;

    fn in_order(t: &mut SeqTrack, seqs: std::ops::RangeInclusive<u64>) {
        for s in seqs {
            let v = t.check(HG, s, true, false);
            assert!(v.is_accepted(), "seq {s}: {v:?}");
        }
    }

    #[test]
    fn first_frame_then_in_order() {
        let mut t = SeqTrack::new();
        assert_eq!(t.check(HG, 7, false, false), SeqVerdict::Accept);
        assert_eq!(t.check(HG, 8, true, false), SeqVerdict::Accept);
        assert_eq!((t.generation(), t.last_seq()), (Some(HG), Some(8)));
    }

    #[test]
    fn duplicate_refreshes_link_only() {
        let mut t = SeqTrack::new();
        in_order(&mut t, 1..=3);
        let v = t.check(HG, 3, true, false);
        assert_eq!(v, SeqVerdict::Duplicate);
        assert!(!v.is_accepted());
    }

    #[test]
    fn gap_records_missing_and_late_arrivals_are_accepted_once() {
        let mut t = SeqTrack::new();
        in_order(&mut t, 1..=0xd);
        // node1 sent seq=e before seq=d... here 0x10 before 0xe and 0xf (captured reorder).
        assert_eq!(
            t.check(HG, 0x10, false, false),
            SeqVerdict::Gap { missing: 2 }
        );
        assert_eq!(t.missing().collect::<Vec<_>>(), [0xe, 0xf]);
        assert_eq!(t.check(HG, 0xe, false, false), SeqVerdict::Late);
        assert_eq!(t.check(HG, 0xe, false, false), SeqVerdict::Stale);
        assert_eq!(t.check(HG, 0xf, false, false), SeqVerdict::Late);
        assert_eq!(t.missing().count(), 0);
        assert_eq!(t.check(HG, 0xf, false, false), SeqVerdict::Stale);
        assert_eq!(t.check(HG, 0x5, false, false), SeqVerdict::Stale);
        assert_eq!(t.check(HG, 0x11, false, false), SeqVerdict::Accept);
    }

    #[test]
    fn gap_over_flowcontrol_limit_resyncs() {
        let mut t = SeqTrack::new();
        in_order(&mut t, 1..=2);
        assert_eq!(
            t.check(HG, 3 + 250, false, false),
            SeqVerdict::Gap { missing: 250 }
        );
        assert_eq!(t.missing().count(), 250);
        assert_eq!(
            t.check(HG, 253 + 252, false, false),
            SeqVerdict::Resync { lost: 251 }
        );
        assert_eq!(t.missing().count(), 0);
        assert_eq!(t.last_seq(), Some(505));
    }

    #[test]
    fn missing_set_is_bounded() {
        let mut t = SeqTrack::new();
        let mut seq = 1;
        t.check(HG, seq, false, false);
        for _ in 0..4 {
            seq += 201;
            assert_eq!(
                t.check(HG, seq, false, false),
                SeqVerdict::Gap { missing: 200 }
            );
        }
        assert_eq!(t.missing().count(), MAX_MISSING);
        // The oldest were forgotten: seq 2 is now merely stale, the newest are still awaited.
        assert_eq!(t.check(HG, 2, false, false), SeqVerdict::Stale);
        assert_eq!(t.check(HG, seq - 1, false, false), SeqVerdict::Late);
    }

    #[test]
    fn higher_generation_is_a_restart() {
        let mut t = SeqTrack::new();
        in_order(&mut t, 1..=40);
        assert_eq!(
            t.check(HG + 1, 1, true, false),
            SeqVerdict::Restart { previous: HG }
        );
        assert_eq!((t.generation(), t.last_seq()), (Some(HG + 1), Some(1)));
        assert_eq!(t.check(HG + 1, 2, true, false), SeqVerdict::Accept);
        // The old run's frames are now replays.
        assert_eq!(
            t.check(HG, 41, true, false),
            SeqVerdict::Replay { known: HG + 1 }
        );
    }

    #[test]
    fn captured_then_replayed_stream_is_dropped() {
        // A peer's stream as captured: status seq 1..=3 at start, then mixed traffic with
        // a reordering, all in one generation.
        let stream: Vec<(u64, u64, bool)> = (1..=30)
            .map(|s| (HG, s, s % 3 != 0))
            .chain([(HG, 32, false), (HG, 31, false), (HG, 33, true)])
            .collect();
        let mut t = SeqTrack::new();
        for &(g, s, st) in &stream {
            assert!(t.check(g, s, st, false).is_accepted(), "live seq {s}");
        }
        // The same frames replayed while the peer is still in this run: none is processed.
        for &(g, s, st) in &stream {
            let v = t.check(g, s, st, false);
            assert!(!v.is_accepted(), "replayed seq {s}: {v:?}");
        }
        // After the peer restarts, the whole old stream is a replay.
        assert!(t.check(HG + 1, 1, true, false).is_accepted());
        for &(g, s, st) in &stream {
            assert_eq!(
                t.check(g, s, st, false),
                SeqVerdict::Replay { known: HG + 1 }
            );
        }
        // And after the RECEIVER restarts with the persisted generation, still a replay.
        let mut fresh = SeqTrack::with_min_generation(t.generation().unwrap());
        for &(g, s, st) in &stream {
            assert_eq!(
                fresh.check(g, s, st, false),
                SeqVerdict::Replay { known: HG + 1 }
            );
        }
        // The peer's live frames of its current run are accepted by the fresh receiver.
        assert_eq!(fresh.check(HG + 1, 9, true, false), SeqVerdict::Accept);
    }

    #[test]
    fn seeded_generation_accepts_same_and_restart() {
        let mut same = SeqTrack::with_min_generation(HG);
        assert_eq!(same.check(HG, 100, true, false), SeqVerdict::Accept);
        let mut higher = SeqTrack::with_min_generation(HG);
        assert_eq!(
            higher.check(HG + 5, 1, true, false),
            SeqVerdict::Restart { previous: HG }
        );
    }

    #[test]
    fn dead_peer_returning_after_partition() {
        let mut t = SeqTrack::new();
        in_order(&mut t, 1..=10);
        t.mark_dead();
        // A status not newer than the last one is stale (e.g. a delayed copy).
        assert_eq!(t.check(HG, 10, true, true), SeqVerdict::Stale);
        assert_eq!(t.check(HG, 4, true, true), SeqVerdict::Stale);
        // A newer one: the partition healed.
        assert_eq!(t.check(HG, 60, true, true), SeqVerdict::Rejoin);
        assert_eq!(t.last_seq(), Some(60));
        assert_eq!(t.missing().count(), 0);
        // Once the caller marks it alive again, normal tracking continues.
        assert_eq!(t.check(HG, 61, true, false), SeqVerdict::Accept);
        // Non-status frames from a dead peer go through the normal checks.
        t.mark_dead();
        assert_eq!(t.check(HG, 62, false, true), SeqVerdict::Accept);
        assert_eq!(t.check(HG, 62, false, true), SeqVerdict::Duplicate);
    }

    #[test]
    fn verdict_classification() {
        use SeqVerdict::*;
        for v in [
            Accept,
            Restart { previous: 1 },
            Rejoin,
            Late,
            Gap { missing: 1 },
            Resync { lost: 300 },
        ] {
            assert!(v.is_accepted(), "{v:?}");
        }
        for v in [Replay { known: 1 }, Stale] {
            assert!(!v.is_accepted(), "{v:?}");
        }
    }
}
