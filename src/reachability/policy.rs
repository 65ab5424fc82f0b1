//! The ipfail decision as a small state machine: who should hold the groups, given both
//! nodes' reachability counts over time.
//!
//! heartbeat's ipfail (`contrib/ipfail/ipfail.c`) compares the number of ping nodes each side
//! sees: the side that sees fewer gives its resources up (after a delay of 2 × keepalive,
//! aborted if the counts balance again), equal counts move nothing, and with auto_failback a
//! balanced pair hands foreign resources back. hbd keeps those rules and makes the delay a
//! hysteresis (`ping_hysteresis`):
//!
//! * **Move.** The node holding groups moves them to its peer once it has reached fewer
//!   targets than the peer *continuously* for the hysteresis ([`Decision::MoveToPeer`]; the
//!   peer, running the same rules on the same counts, sees [`Decision::PullFromPeer`]).
//! * **Equal** counts, an unknown count (a node still starting, a peer that says nothing or
//!   is dead) move nothing: peer death is membership's business, not this one's.
//! * **Take-back hold.** A side that was worse for the hysteresis (the episode that moves
//!   groups away from a holder) may receive groups again (auto_failback, or a pull when it is
//!   better) only after it has been at least as good as its peer, without a break, for a
//!   hold: 4 × the hysteresis at first, doubled by every further such episode before the hold
//!   is served, up to 16 × the hysteresis. A flapping upstream therefore moves the groups at
//!   most once: every dip restarts the hold, so the flapping side never gets them back while
//!   it flaps. Both nodes track both sides' holds from the same counts, so the holder and the
//!   receiver agree on it.
//!
//! Pure: every method takes `now`.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::targets::{Reach, millis};

/// The first take-back hold, in hysteresis units.
pub const TAKE_BACK_HOLD_FACTOR: u32 = 4;
/// The longest take-back hold, in hysteresis units.
pub const TAKE_BACK_HOLD_MAX_FACTOR: u32 = 16;

/// What reachability asks of the node's placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Nothing to do.
    Stay,
    /// We hold groups and have reached fewer targets than the peer for the hysteresis: hand
    /// every group we hold to the peer (ipfail's `giveup` of all resources).
    MoveToPeer,
    /// The peer holds groups and has reached fewer targets than we have for the hysteresis,
    /// and our take-back hold is served: take the peer's groups.
    PullFromPeer,
}

/// How our count compares with the peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    /// Either count is unknown.
    Unknown,
    /// We reach fewer targets.
    Worse,
    /// Both reach as many.
    Equal,
    /// We reach more.
    Better,
}

/// Which side holds groups now (a side may hold some while the other holds others).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Holding {
    /// We hold at least one group.
    pub local: bool,
    /// The peer holds at least one group.
    pub peer: bool,
}

/// A side's take-back hold: it must be not worse than the other side for `length`, counted
/// from `clean_since` (the start of its current run of not being worse; `None` while it is
/// worse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hold {
    length: Duration,
    clean_since: Option<Instant>,
}

impl Hold {
    /// When the hold is served, if the side stays not worse.
    fn ends(&self) -> Option<Instant> {
        self.clean_since.map(|s| s + self.length)
    }
}

/// The ipfail rules over both nodes' counts.
#[derive(Debug, Clone)]
pub struct ReachabilityPolicy {
    hysteresis: Duration,
    local: Option<Reach>,
    peer: Option<Reach>,
    standing: Standing,
    since: Instant,
    /// The current Worse/Better episode reached the hysteresis and its side was held.
    episode_counted: bool,
    local_hold: Option<Hold>,
    peer_hold: Option<Hold>,
}

impl ReachabilityPolicy {
    /// A policy with `hysteresis`, nothing known yet, at `now`.
    pub fn new(hysteresis: Duration, now: Instant) -> ReachabilityPolicy {
        ReachabilityPolicy {
            hysteresis,
            local: None,
            peer: None,
            standing: Standing::Unknown,
            since: now,
            episode_counted: false,
            local_hold: None,
            peer_hold: None,
        }
    }

    /// Changes the hysteresis (reload); the running episode is measured against the new one.
    pub fn set_hysteresis(&mut self, hysteresis: Duration) {
        self.hysteresis = hysteresis;
    }

    /// The hysteresis in force.
    pub fn hysteresis(&self) -> Duration {
        self.hysteresis
    }

    /// Both counts as known at `now`: ours ([`super::Targets::advertised`]) and the peer's
    /// (its last `hbd_reach`, `None` when it said none or is dead). Call it whenever either
    /// changes; calling it with the same counts again changes nothing.
    pub fn observe(&mut self, local: Option<Reach>, peer: Option<Reach>, now: Instant) {
        self.settle(now);
        self.local = local;
        self.peer = peer;
        let standing = match (local, peer) {
            (Some(l), Some(p)) => match l.reachable.cmp(&p.reachable) {
                std::cmp::Ordering::Less => Standing::Worse,
                std::cmp::Ordering::Equal => Standing::Equal,
                std::cmp::Ordering::Greater => Standing::Better,
            },
            _ => Standing::Unknown,
        };
        if standing == self.standing {
            return;
        }
        // The side that was worse starts a clean run; the side that becomes worse breaks its.
        match self.standing {
            Standing::Worse => start_clean(&mut self.local_hold, now),
            Standing::Better => start_clean(&mut self.peer_hold, now),
            _ => {}
        }
        match standing {
            Standing::Worse => break_clean(&mut self.local_hold),
            Standing::Better => break_clean(&mut self.peer_hold),
            _ => {}
        }
        self.standing = standing;
        self.since = now;
        self.episode_counted = false;
    }

    /// What to do at `now`, given who holds groups. Returns the same answer until the facts
    /// change, so a node may ask at every wakeup.
    pub fn decide(&mut self, holding: Holding, now: Instant) -> Decision {
        self.settle(now);
        let lasted = now >= self.since + self.hysteresis;
        match self.standing {
            Standing::Worse if holding.local && lasted => Decision::MoveToPeer,
            Standing::Better if holding.peer && lasted && self.may_take_back(now) => {
                Decision::PullFromPeer
            }
            _ => Decision::Stay,
        }
    }

    /// Whether groups may come to us for any reason but the peer's death (auto_failback, a
    /// takeover the manager decides on): we are not worse than the peer, and any take-back
    /// hold is served. Always true while a count is unknown.
    pub fn may_take_back(&self, now: Instant) -> bool {
        self.standing != Standing::Worse && served(self.local_hold, now)
    }

    /// The same question for the peer, so the node holding the peer's preferred groups knows
    /// whether auto_failback may hand them back yet.
    pub fn peer_may_take_back(&self, now: Instant) -> bool {
        self.standing != Standing::Better && served(self.peer_hold, now)
    }

    /// The next instant after `now` at which [`decide`](Self::decide),
    /// [`may_take_back`](Self::may_take_back) or
    /// [`peer_may_take_back`](Self::peer_may_take_back) may answer differently without a
    /// new count; `None` when only a new count can change them.
    pub fn next_deadline(&self, holding: Holding, now: Instant) -> Option<Instant> {
        let episode = match self.standing {
            Standing::Worse if holding.local => Some(self.since + self.hysteresis),
            Standing::Better if holding.peer => Some(self.since + self.hysteresis),
            _ => None,
        };
        [
            episode,
            self.local_hold.and_then(|h| h.ends()),
            self.peer_hold.and_then(|h| h.ends()),
        ]
        .into_iter()
        .flatten()
        .filter(|t| *t > now)
        .min()
    }

    /// The current comparison.
    pub fn standing(&self) -> Standing {
        self.standing
    }

    /// Our count and the peer's, as last observed.
    pub fn counts(&self) -> (Option<Reach>, Option<Reach>) {
        (self.local, self.peer)
    }

    /// What `hactl status` shows of the decision.
    pub fn report(&self, now: Instant) -> PolicyReport {
        let left = |h: Option<Hold>| {
            h.map(|h| match h.ends() {
                Some(end) => millis(end.saturating_duration_since(now)),
                None => millis(h.length),
            })
            .filter(|ms| *ms > 0)
        };
        PolicyReport {
            local: self.local,
            peer: self.peer,
            standing: self.standing,
            for_ms: millis(now.saturating_duration_since(self.since)),
            hysteresis_ms: millis(self.hysteresis),
            local_hold_ms: left(self.local_hold),
            peer_hold_ms: left(self.peer_hold),
        }
    }

    /// Brings the holds up to `now`: an episode that lasted the hysteresis holds its side;
    /// a served hold is forgotten.
    fn settle(&mut self, now: Instant) {
        if !self.episode_counted && now >= self.since + self.hysteresis {
            let first = self.hysteresis * TAKE_BACK_HOLD_FACTOR;
            let max = self.hysteresis * TAKE_BACK_HOLD_MAX_FACTOR;
            let held = match self.standing {
                Standing::Worse => Some(&mut self.local_hold),
                Standing::Better => Some(&mut self.peer_hold),
                _ => None,
            };
            if let Some(hold) = held {
                let length = hold.map_or(first, |h| (h.length * 2).min(max));
                *hold = Some(Hold {
                    length,
                    clean_since: None,
                });
                self.episode_counted = true;
            }
        }
        for hold in [&mut self.local_hold, &mut self.peer_hold] {
            if hold.and_then(|h| h.ends()).is_some_and(|end| end <= now) {
                *hold = None;
            }
        }
    }
}

/// A side stops being worse at `now`: its hold's clean run starts.
fn start_clean(hold: &mut Option<Hold>, now: Instant) {
    if let Some(h) = hold {
        h.clean_since = Some(now);
    }
}

/// A side becomes worse: its hold's clean run is broken.
fn break_clean(hold: &mut Option<Hold>) {
    if let Some(h) = hold {
        h.clean_since = None;
    }
}

/// No hold, or one already served at `now`.
fn served(hold: Option<Hold>, now: Instant) -> bool {
    hold.is_none_or(|h| h.ends().is_some_and(|end| end <= now))
}

/// The decision's part of `hactl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PolicyReport {
    /// Our count (`None` while starting, or without targets).
    pub local: Option<Reach>,
    /// The peer's count from its heartbeats (`None` when it says none or is dead).
    pub peer: Option<Reach>,
    /// How ours compares.
    pub standing: Standing,
    /// For how long, in ms.
    pub for_ms: u64,
    /// `ping_hysteresis` in ms.
    pub hysteresis_ms: u64,
    /// Our take-back hold still to serve, in ms (its full length while we are worse).
    pub local_hold_ms: Option<u64>,
    /// The peer's take-back hold still to serve, in ms.
    pub peer_hold_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn r(reachable: u32) -> Option<Reach> {
        Some(Reach {
            reachable,
            total: 2,
        })
    }

    const HOLDER: Holding = Holding {
        local: true,
        peer: false,
    };
    const PEER_HOLDS: Holding = Holding {
        local: false,
        peer: true,
    };

    #[test]
    fn the_worse_holder_moves_after_the_hysteresis_and_not_before() {
        let t0 = crate::clock::now();
        let mut p = ReachabilityPolicy::new(ms(200), t0);
        p.observe(r(2), r(2), t0);
        assert_eq!(p.decide(HOLDER, t0 + ms(1000)), Decision::Stay);
        p.observe(r(1), r(2), t0 + ms(1000));
        assert_eq!(p.standing(), Standing::Worse);
        assert_eq!(p.next_deadline(HOLDER, t0 + ms(1000)), Some(t0 + ms(1200)));
        assert_eq!(p.decide(HOLDER, t0 + ms(1199)), Decision::Stay);
        assert_eq!(p.decide(HOLDER, t0 + ms(1200)), Decision::MoveToPeer);
        assert_eq!(
            p.decide(HOLDER, t0 + ms(1300)),
            Decision::MoveToPeer,
            "stable"
        );
        // Not holding: nothing to give.
        assert_eq!(p.decide(Holding::default(), t0 + ms(1300)), Decision::Stay);
    }

    #[test]
    fn worse_must_be_continuous() {
        let t0 = crate::clock::now();
        let mut p = ReachabilityPolicy::new(ms(200), t0);
        p.observe(r(1), r(2), t0);
        p.observe(r(2), r(2), t0 + ms(150));
        p.observe(r(1), r(2), t0 + ms(160));
        assert_eq!(p.decide(HOLDER, t0 + ms(300)), Decision::Stay);
        assert_eq!(p.decide(HOLDER, t0 + ms(360)), Decision::MoveToPeer);
    }

    #[test]
    fn a_change_of_counts_while_worse_keeps_the_episode() {
        let t0 = crate::clock::now();
        let mut p = ReachabilityPolicy::new(ms(200), t0);
        p.observe(r(1), r(2), t0);
        p.observe(r(0), r(2), t0 + ms(100));
        assert_eq!(p.decide(HOLDER, t0 + ms(200)), Decision::MoveToPeer);
    }

    #[test]
    fn equal_reach_moves_nothing() {
        let t0 = crate::clock::now();
        let mut p = ReachabilityPolicy::new(ms(200), t0);
        for n in [2, 1, 0] {
            p.observe(r(n), r(n), t0);
            for h in [HOLDER, PEER_HOLDS] {
                assert_eq!(p.decide(h, t0 + ms(10_000)), Decision::Stay);
            }
        }
        assert_eq!(p.next_deadline(HOLDER, t0), None);
    }

    #[test]
    fn an_unknown_count_moves_nothing() {
        let t0 = crate::clock::now();
        let mut p = ReachabilityPolicy::new(ms(200), t0);
        p.observe(r(0), None, t0);
        assert_eq!(p.decide(HOLDER, t0 + ms(10_000)), Decision::Stay);
        p.observe(None, r(2), t0);
        assert_eq!(p.decide(HOLDER, t0 + ms(10_000)), Decision::Stay);
        assert!(p.may_take_back(t0) && p.peer_may_take_back(t0));
    }

    #[test]
    fn the_better_side_pulls_from_a_worse_holder() {
        let t0 = crate::clock::now();
        let mut p = ReachabilityPolicy::new(ms(200), t0);
        p.observe(r(2), r(1), t0);
        assert_eq!(p.decide(PEER_HOLDS, t0 + ms(199)), Decision::Stay);
        assert_eq!(p.next_deadline(PEER_HOLDS, t0), Some(t0 + ms(200)));
        assert_eq!(p.decide(PEER_HOLDS, t0 + ms(200)), Decision::PullFromPeer);
        assert_eq!(p.decide(HOLDER, t0 + ms(200)), Decision::Stay);
        assert!(!p.peer_may_take_back(t0 + ms(200)), "the peer is worse");
    }

    #[test]
    fn a_side_that_lost_waits_out_its_hold_before_taking_back() {
        let t0 = crate::clock::now();
        let mut p = ReachabilityPolicy::new(ms(100), t0);
        p.observe(r(1), r(2), t0);
        assert_eq!(p.decide(HOLDER, t0 + ms(100)), Decision::MoveToPeer);
        assert!(!p.may_take_back(t0 + ms(100)));
        // Restored at 500 ms: the hold is 4 × 100 ms from there.
        p.observe(r(2), r(2), t0 + ms(500));
        assert!(!p.may_take_back(t0 + ms(899)));
        assert_eq!(
            p.next_deadline(PEER_HOLDS, t0 + ms(500)),
            Some(t0 + ms(900))
        );
        assert!(p.may_take_back(t0 + ms(900)));
        // The peer sees the same from its side.
        let mut q = ReachabilityPolicy::new(ms(100), t0);
        q.observe(r(2), r(1), t0);
        q.observe(r(2), r(2), t0 + ms(500));
        assert!(!q.peer_may_take_back(t0 + ms(899)));
        assert!(q.peer_may_take_back(t0 + ms(900)));
        let rep = q.report(t0 + ms(600));
        assert_eq!(rep.peer_hold_ms, Some(300));
        assert_eq!(rep.local_hold_ms, None);
    }

    #[test]
    fn a_hold_doubles_with_each_dip_before_it_is_served() {
        let t0 = crate::clock::now();
        let mut p = ReachabilityPolicy::new(ms(100), t0);
        let mut now = t0;
        let dip = |p: &mut ReachabilityPolicy, now: &mut Instant, worse: u64, clean: u64| {
            p.observe(r(1), r(2), *now);
            *now += ms(worse);
            p.observe(r(2), r(2), *now);
            *now += ms(clean);
        };
        dip(&mut p, &mut now, 100, 300); // hold 400, not served
        dip(&mut p, &mut now, 100, 700); // hold 800, not served
        assert!(!p.may_take_back(now));
        assert_eq!(p.report(now).local_hold_ms, Some(100));
        dip(&mut p, &mut now, 50, 0); // a short dip breaks the run, no doubling
        assert_eq!(p.report(now).local_hold_ms, Some(800));
        now += ms(800);
        assert!(p.may_take_back(now));
        // Served: the next loss starts again at 4 × hysteresis.
        dip(&mut p, &mut now, 100, 0);
        assert_eq!(p.report(now).local_hold_ms, Some(400));
    }

    #[test]
    fn the_hold_stops_growing_at_its_cap() {
        let t0 = crate::clock::now();
        let mut p = ReachabilityPolicy::new(ms(10), t0);
        let mut now = t0;
        for _ in 0..20 {
            p.observe(r(0), r(2), now);
            now += ms(10);
            p.observe(r(2), r(2), now);
            now += ms(1);
        }
        assert_eq!(p.report(now).local_hold_ms, Some(160 - 1));
    }

    /// One node of the simulated pair: its targets' state is reduced to "the upstream
    /// answers", probed every `probe`, dead after `deadping`.
    struct SimNode {
        policy: ReachabilityPolicy,
        targets: super::super::Targets,
        upstream: std::net::IpAddr,
    }

    /// Runs a pair on a simulated timeline: `a_path_up(t)` says whether A's path to the
    /// upstream works at `t` (B's always does). Counts travel in heartbeats every
    /// `keepalive`. The group starts on A (its preferred node); with `auto_failback` it goes
    /// back to A whenever B's policy lets A take back. Returns the instants of every move.
    fn simulate(
        a_path_up: impl Fn(Duration) -> bool,
        until: Duration,
        auto_failback: bool,
    ) -> Vec<(Duration, &'static str)> {
        let t0 = crate::clock::now();
        let deadping = ms(100);
        let hysteresis = crate::config::default_ping_hysteresis(deadping);
        let probe = super::super::probe_interval(deadping);
        let keepalive = ms(20);
        let upstream: std::net::IpAddr = "203.0.113.1".parse().unwrap();
        let node = || SimNode {
            policy: ReachabilityPolicy::new(hysteresis, t0),
            targets: super::super::Targets::new(&[upstream], &[], deadping, t0),
            upstream,
        };
        let (mut a, mut b) = (node(), node());
        let mut on_a = true;
        let mut moves = Vec::new();
        // Counts as last heard by the other node.
        let (mut a_said, mut b_said) = (None, None);
        let step = ms(1);
        let mut t = Duration::ZERO;
        while t <= until {
            let now = t0 + t;
            if t.as_micros().is_multiple_of(probe.as_micros()) {
                if a_path_up(t) {
                    a.targets.on_reply(a.upstream, now);
                }
                b.targets.on_reply(b.upstream, now);
            }
            a.targets.on_tick(now);
            b.targets.on_tick(now);
            if t.as_micros().is_multiple_of(keepalive.as_micros()) {
                a_said = a.targets.advertised();
                b_said = b.targets.advertised();
            }
            a.policy.observe(a.targets.advertised(), b_said, now);
            b.policy.observe(b.targets.advertised(), a_said, now);
            let holding_a = Holding {
                local: on_a,
                peer: !on_a,
            };
            let holding_b = Holding {
                local: !on_a,
                peer: on_a,
            };
            let da = a.policy.decide(holding_a, now);
            let db = b.policy.decide(holding_b, now);
            if on_a && (da == Decision::MoveToPeer || db == Decision::PullFromPeer) {
                on_a = false;
                moves.push((t, "to b"));
            } else if !on_a
                && (da == Decision::PullFromPeer
                    || db == Decision::MoveToPeer
                    || (auto_failback
                        && b.policy.standing() == Standing::Equal
                        && b.policy.peer_may_take_back(now)))
            {
                on_a = true;
                moves.push((t, "to a"));
            }
            t += step;
        }
        moves
    }

    #[test]
    fn a_flapping_upstream_moves_the_groups_at_most_once() {
        // A's path flaps every 300 ms for 10 s (after 1 s of calm), then stays up.
        let flap = |t: Duration| {
            let ms = t.as_millis();
            !(1000..11_000).contains(&ms) || ((ms - 1000) / 300) % 2 == 1
        };
        for auto_failback in [false, true] {
            let moves = simulate(flap, Duration::from_secs(20), auto_failback);
            let during: Vec<_> = moves
                .iter()
                .filter(|(t, _)| *t < Duration::from_millis(11_000))
                .collect();
            assert!(
                during.len() <= 1,
                "auto_failback {auto_failback}: {moves:?}"
            );
            if auto_failback && !during.is_empty() {
                // Once it is calm again, the group goes home exactly once.
                assert_eq!(moves.len(), 2, "{moves:?}");
                assert_eq!(moves[1].1, "to a");
            } else {
                assert_eq!(moves.len(), during.len(), "{moves:?}");
            }
        }
    }

    #[test]
    fn a_lost_upstream_moves_within_deadping_and_hysteresis() {
        let cut = |t: Duration| t < Duration::from_secs(1);
        let moves = simulate(cut, Duration::from_secs(3), false);
        assert_eq!(moves.len(), 1, "{moves:?}");
        let (at, to) = moves[0];
        assert_eq!(to, "to b");
        // deadping 100 + hysteresis 200 (+ the count's trip in a heartbeat, 20 ms).
        assert!(at <= Duration::from_millis(1000 + 100 + 200 + 20), "{at:?}");
        assert!(at >= Duration::from_millis(1000 + 200), "{at:?}");
    }

    #[test]
    fn losing_the_upstream_on_both_nodes_moves_nothing() {
        let t0 = crate::clock::now();
        let mut a = ReachabilityPolicy::new(ms(200), t0);
        // Both lose it; A notices (and B hears of it) up to one probe + one keepalive apart.
        a.observe(r(1), r(1), t0);
        a.observe(r(0), r(1), t0 + ms(1000));
        a.observe(r(0), r(0), t0 + ms(1045));
        assert_eq!(a.decide(HOLDER, t0 + ms(5000)), Decision::Stay);
        assert!(a.may_take_back(t0 + ms(5000)), "a short dip holds nothing");
    }
}
