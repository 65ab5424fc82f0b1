//! Liveness: who is alive, over which link, as a pure state machine.
//!
//! Implements heartbeat's dead-node detection (HEARTBEAT-WIRE.md §7.5) without its 250 ms
//! poll: every deadline is exact, so the runtime sleeps until [`Liveness::next_deadline`]
//! and a silent peer is declared dead at `last heartbeat + deadtime`, not up to 250 ms later.
//!
//! * A **node** is kept alive only by accepted `status` messages ([`Liveness::on_status`]);
//!   it is declared dead after its deadtime without one (its advertised `dt`, as heartbeat
//!   does, else ours). A node never heard from is declared dead `initdead` after start.
//! * A **link** (node × medium) is kept alive by any authenticated packet arriving on it
//!   ([`Liveness::on_packet`]), so `hactl status` can show which path failed.
//! * `warntime`: a status arriving later than warntime after the previous one is reported
//!   with how late it was.
//!
//! Inputs carry the current [`Instant`]; outputs are [`LivenessEvent`]s the runtime logs and
//! hands to the resource manager. Nothing here does I/O or reads a clock.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Timing;
use crate::membership::seqtrack::SeqTrack;

/// What a peer is, as seen from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerState {
    /// Never heard from since we started.
    Init,
    /// Heartbeats arrive; the peer reports `init` or `up`.
    Up,
    /// Heartbeats arrive; the peer reports `active` (it has heard every node).
    Active,
    /// No heartbeat within its deadtime.
    Dead,
}

impl PeerState {
    /// heartbeat's word for the state (`cl_status nodestatus`).
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Init => "init",
            PeerState::Up => "up",
            PeerState::Active => "active",
            PeerState::Dead => "dead",
        }
    }

    /// Whether heartbeats currently arrive.
    pub fn is_alive(self) -> bool {
        matches!(self, PeerState::Up | PeerState::Active)
    }
}

/// State of one link (peer × medium).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkState {
    /// Nothing received on it yet.
    Init,
    /// Packets arrive on it.
    Up,
    /// Silent for longer than deadtime.
    Dead,
}

impl LinkState {
    /// Word used in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Init => "init",
            LinkState::Up => "up",
            LinkState::Dead => "dead",
        }
    }
}

/// Our own state, as advertised in our `st` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalState {
    /// Sending heartbeats, not yet heard every node.
    Up,
    /// Heard every node, or initdead has passed.
    Active,
}

impl LocalState {
    /// The `st` value we send.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalState::Up => "up",
            LocalState::Active => "active",
        }
    }
}

/// A change worth logging and acting on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LivenessEvent {
    /// A peer's state changed; `reason` says why in words.
    PeerState {
        /// Peer name.
        node: String,
        /// Previous state.
        from: PeerState,
        /// New state.
        to: PeerState,
        /// Why, e.g. "no heartbeat for 31 ms (deadtime 30 ms)".
        reason: String,
    },
    /// A link changed state.
    LinkState {
        /// Peer name.
        node: String,
        /// Link name.
        link: String,
        /// New state.
        to: LinkState,
        /// Why.
        reason: String,
    },
    /// A heartbeat arrived later than warntime.
    LateHeartbeat {
        /// Peer name.
        node: String,
        /// Time since the previous heartbeat.
        interval: Duration,
        /// Configured warntime.
        warntime: Duration,
    },
    /// We have heard every node, or initdead passed: we now advertise `active`.
    LocalActive {
        /// Why.
        reason: String,
    },
}

/// One link's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Current state.
    pub state: LinkState,
    /// When a packet last arrived on it.
    pub last_seen: Option<Instant>,
    /// Highest sequence number delivered on this link, so a duplicate replayed on the same
    /// link does not refresh it.
    pub last_seq: Option<u64>,
}

/// One peer's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Node name.
    pub name: String,
    /// Current state.
    pub state: PeerState,
    /// When its last accepted status arrived.
    pub last_status: Option<Instant>,
    /// Deadtime applied to it: its advertised `dt`, else ours.
    pub deadtime: Duration,
    /// One record per medium, in config order.
    pub links: Vec<Link>,
    /// Late heartbeats seen (warntime exceeded).
    pub late_heartbeats: u64,
    /// Longest gap between two heartbeats while it was alive.
    pub longest_gap: Duration,
    /// Generation and sequence tracking of its frames (replays and stale frames are
    /// dropped before they reach the fields above).
    pub sequence: SeqTrack,
}

/// The liveness state machine for one node.
#[derive(Debug, Clone)]
pub struct Liveness {
    timing: Timing,
    started: Instant,
    local: LocalState,
    peers: Vec<Peer>,
    link_names: Vec<String>,
}

/// Deadtimes a peer may advertise are clamped to this range, so a forged or broken `dt` can
/// neither make us declare it dead instantly nor keep it alive for hours.
const MIN_ADVERTISED_DEADTIME: Duration = Duration::from_millis(1);
const MAX_ADVERTISED_DEADTIME: Duration = Duration::from_secs(3600);

impl Liveness {
    /// A fresh state at `now` for `peers` (the other nodes, each with its sequence tracking,
    /// seeded from a persisted generation or new) over `link_names` (one per medium).
    pub fn new(
        timing: Timing,
        peers: Vec<(String, SeqTrack)>,
        link_names: &[String],
        now: Instant,
    ) -> Liveness {
        let peers = peers
            .into_iter()
            .map(|(name, sequence)| Peer {
                name,
                state: PeerState::Init,
                last_status: None,
                deadtime: timing.deadtime,
                links: link_names
                    .iter()
                    .map(|_| Link {
                        state: LinkState::Init,
                        last_seen: None,
                        last_seq: None,
                    })
                    .collect(),
                late_heartbeats: 0,
                longest_gap: Duration::ZERO,
                sequence,
            })
            .collect();
        let mut liveness = Liveness {
            timing,
            started: now,
            local: LocalState::Up,
            peers,
            link_names: link_names.to_vec(),
        };
        if liveness.peers.is_empty() {
            liveness.local = LocalState::Active;
        }
        liveness
    }

    /// Applies new timers (a reload). Peers keep their advertised deadtime until their next
    /// heartbeat; deadlines already computed use the new values from now on.
    pub fn set_timing(&mut self, timing: Timing) {
        for p in &mut self.peers {
            if p.deadtime == self.timing.deadtime {
                p.deadtime = timing.deadtime;
            }
        }
        self.timing = timing;
    }

    /// Our advertised state.
    pub fn local_state(&self) -> LocalState {
        self.local
    }

    /// All peers, in config order.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// Link names, one per medium.
    pub fn link_names(&self) -> &[String] {
        &self.link_names
    }

    /// Index of the peer called `name`.
    pub fn peer_index(&self, name: &str) -> Option<usize> {
        self.peers.iter().position(|p| p.name == name)
    }

    /// The peer called `name`.
    pub fn peer(&self, name: &str) -> Option<&Peer> {
        self.peers.iter().find(|p| p.name == name)
    }

    /// The peer at `index`, to classify a frame against its sequence tracking.
    pub fn peer_mut(&mut self, index: usize) -> &mut Peer {
        &mut self.peers[index]
    }

    /// An authenticated, non-replayed packet with sequence `seq` arrived from `peer` on
    /// `link`. Refreshes the link, unless this link already delivered that sequence number
    /// (a packet replayed on the same link).
    pub fn on_packet(
        &mut self,
        now: Instant,
        peer: usize,
        link: usize,
        seq: Option<u64>,
    ) -> Vec<LivenessEvent> {
        let mut events = Vec::new();
        let p = &mut self.peers[peer];
        let deadtime = p.deadtime;
        let Some(rec) = p.links.get_mut(link) else {
            return events;
        };
        if let (Some(seq), Some(last)) = (seq, rec.last_seq)
            && seq <= last
        {
            return events;
        }
        if seq.is_some() {
            rec.last_seq = seq;
        }
        let silent = rec.last_seen.map(|t| now.saturating_duration_since(t));
        rec.last_seen = Some(now);
        if rec.state != LinkState::Up {
            rec.state = LinkState::Up;
            let reason = match silent {
                Some(gap) if gap > deadtime => {
                    format!("packets again after {} silent", fmt_ms(gap))
                }
                _ => "first packet".to_string(),
            };
            events.push(LivenessEvent::LinkState {
                node: p.name.clone(),
                link: self.link_names[link].clone(),
                to: LinkState::Up,
                reason,
            });
        }
        events
    }

    /// A new (not duplicate) `status` from `peer` arrived on `link`, reporting `st` and
    /// advertising deadtime `dt`.
    pub fn on_status(
        &mut self,
        now: Instant,
        peer: usize,
        link: usize,
        seq: Option<u64>,
        st: &str,
        dt: Option<Duration>,
    ) -> Vec<LivenessEvent> {
        let mut events = self.on_packet(now, peer, link, seq);
        let warntime = self.timing.warntime;
        let p = &mut self.peers[peer];
        if let Some(dt) = dt {
            p.deadtime = dt.clamp(MIN_ADVERTISED_DEADTIME, MAX_ADVERTISED_DEADTIME);
        }
        if let Some(last) = p.last_status
            && p.state.is_alive()
        {
            let gap = now.saturating_duration_since(last);
            p.longest_gap = p.longest_gap.max(gap);
            if gap > warntime {
                p.late_heartbeats += 1;
                events.push(LivenessEvent::LateHeartbeat {
                    node: p.name.clone(),
                    interval: gap,
                    warntime,
                });
            }
        }
        p.last_status = Some(now);
        let to = if st == "active" {
            PeerState::Active
        } else {
            PeerState::Up
        };
        if p.state != to {
            let reason = match p.state {
                PeerState::Init => format!("first heartbeat (on {})", self.link_names[link]),
                PeerState::Dead => {
                    format!(
                        "heartbeats again (on {}) after being dead",
                        self.link_names[link]
                    )
                }
                _ => format!("it reports '{st}'"),
            };
            events.push(LivenessEvent::PeerState {
                node: p.name.clone(),
                from: p.state,
                to,
                reason,
            });
            p.state = to;
        }
        self.check_local_active(now, &mut events);
        events
    }

    /// The peer restarted (a higher generation): forget per-link sequence numbers so its new
    /// sequence space refreshes links again.
    pub fn on_restart(&mut self, peer: usize) {
        for link in &mut self.peers[peer].links {
            link.last_seq = None;
        }
    }

    /// The earliest instant at which [`Liveness::on_tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for p in &self.peers {
            if p.state != PeerState::Dead {
                consider(self.peer_deadline(p));
            }
            for l in &p.links {
                if l.state != LinkState::Dead {
                    consider(self.link_deadline(p, l));
                }
            }
        }
        if self.local == LocalState::Up {
            consider(self.started + self.timing.initdead);
        }
        next
    }

    fn peer_deadline(&self, p: &Peer) -> Instant {
        match p.last_status {
            Some(t) => t + p.deadtime,
            None => self.started + self.timing.initdead,
        }
    }

    fn link_deadline(&self, p: &Peer, l: &Link) -> Instant {
        match l.last_seen {
            Some(t) => t + p.deadtime,
            None => self.started + self.timing.initdead,
        }
    }

    /// Applies every deadline that has passed at `now`.
    pub fn on_tick(&mut self, now: Instant) -> Vec<LivenessEvent> {
        let mut events = Vec::new();
        for i in 0..self.peers.len() {
            for j in 0..self.link_names.len() {
                let p = &self.peers[i];
                let l = &p.links[j];
                if l.state != LinkState::Dead && now >= self.link_deadline(p, l) {
                    let reason = match l.last_seen {
                        Some(t) => format!(
                            "nothing received for {} (deadtime {})",
                            fmt_ms(now.saturating_duration_since(t)),
                            fmt_ms(p.deadtime)
                        ),
                        None => format!(
                            "nothing received within initdead ({})",
                            fmt_ms(self.timing.initdead)
                        ),
                    };
                    events.push(LivenessEvent::LinkState {
                        node: p.name.clone(),
                        link: self.link_names[j].clone(),
                        to: LinkState::Dead,
                        reason,
                    });
                    self.peers[i].links[j].state = LinkState::Dead;
                }
            }
            let p = &self.peers[i];
            if p.state != PeerState::Dead && now >= self.peer_deadline(p) {
                let reason = match p.last_status {
                    Some(t) => format!(
                        "no heartbeat on any link for {} (deadtime {})",
                        fmt_ms(now.saturating_duration_since(t)),
                        fmt_ms(p.deadtime)
                    ),
                    None => format!(
                        "never heard within initdead ({})",
                        fmt_ms(self.timing.initdead)
                    ),
                };
                events.push(LivenessEvent::PeerState {
                    node: p.name.clone(),
                    from: p.state,
                    to: PeerState::Dead,
                    reason,
                });
                self.peers[i].state = PeerState::Dead;
                // From now on a status not newer than the last one is stale, a newer one is
                // the peer returning after a partition.
                self.peers[i].sequence.mark_dead();
            }
        }
        self.check_local_active(now, &mut events);
        events
    }

    fn check_local_active(&mut self, now: Instant, events: &mut Vec<LivenessEvent>) {
        if self.local == LocalState::Active {
            return;
        }
        let all_heard = self.peers.iter().all(|p| p.state.is_alive());
        let initdead_passed = now >= self.started + self.timing.initdead;
        if all_heard || initdead_passed {
            self.local = LocalState::Active;
            let reason = if all_heard {
                "heard every node".to_string()
            } else {
                format!("initdead ({}) passed", fmt_ms(self.timing.initdead))
            };
            events.push(LivenessEvent::LocalActive { reason });
        }
    }
}

/// Formats a duration as milliseconds with up to one decimal, for log lines.
pub fn fmt_ms(d: Duration) -> String {
    let us = d.as_micros();
    if us.is_multiple_of(1000) {
        format!("{} ms", us / 1000)
    } else {
        format!("{:.1} ms", us as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn timing() -> Timing {
        Timing {
            keepalive: ms(10),
            deadtime: ms(30),
            warntime: ms(20),
            initdead: ms(100),
            deadping: ms(30),
        }
    }

    fn two_links() -> Liveness {
        Liveness::new(
            timing(),
            vec![("b".to_string(), SeqTrack::new())],
            &["ucast".to_string(), "mcast".to_string()],
            crate::clock::now(),
        )
    }

    #[test]
    fn first_status_brings_peer_up_and_local_active() {
        let mut l = two_links();
        let t0 = crate::clock::now();
        let ev = l.on_status(t0, 0, 0, Some(1), "up", None);
        assert!(ev.iter().any(|e| matches!(
            e,
            LivenessEvent::PeerState {
                to: PeerState::Up,
                ..
            }
        )));
        assert!(
            ev.iter()
                .any(|e| matches!(e, LivenessEvent::LocalActive { .. }))
        );
        assert_eq!(l.local_state(), LocalState::Active);
        let ev = l.on_status(t0 + ms(10), 0, 0, Some(2), "active", None);
        assert!(matches!(
            ev.as_slice(),
            [LivenessEvent::PeerState {
                to: PeerState::Active,
                ..
            }]
        ));
    }

    #[test]
    fn peer_declared_dead_exactly_at_deadtime() {
        let mut l = two_links();
        let t0 = crate::clock::now();
        l.on_status(t0, 0, 0, Some(1), "active", None);
        assert_eq!(l.next_deadline(), Some(t0 + ms(30)));
        assert!(l.on_tick(t0 + ms(29)).is_empty());
        let ev = l.on_tick(t0 + ms(30));
        assert!(ev.iter().any(|e| matches!(
            e,
            LivenessEvent::PeerState { to: PeerState::Dead, reason, .. } if reason.contains("30 ms")
        )));
        assert_eq!(l.peers()[0].state, PeerState::Dead);
    }

    #[test]
    fn never_heard_peer_dies_at_initdead_and_we_go_active() {
        let t0 = crate::clock::now();
        let mut l = Liveness::new(
            timing(),
            vec![("b".into(), SeqTrack::new())],
            &["u".into()],
            t0,
        );
        assert_eq!(l.next_deadline(), Some(t0 + ms(100)));
        let ev = l.on_tick(t0 + ms(100));
        assert!(
            ev.iter()
                .any(|e| matches!(e, LivenessEvent::LocalActive { .. }))
        );
        assert!(ev.iter().any(|e| matches!(
            e,
            LivenessEvent::PeerState {
                from: PeerState::Init,
                to: PeerState::Dead,
                ..
            }
        )));
        assert_eq!(l.next_deadline(), None);
    }

    #[test]
    fn late_heartbeat_reports_interval() {
        let mut l = two_links();
        let t0 = crate::clock::now();
        l.on_status(t0, 0, 0, Some(1), "active", None);
        let ev = l.on_status(t0 + ms(25), 0, 0, Some(2), "active", None);
        assert_eq!(
            ev,
            vec![LivenessEvent::LateHeartbeat {
                node: "b".into(),
                interval: ms(25),
                warntime: ms(20)
            }]
        );
        assert_eq!(l.peers()[0].late_heartbeats, 1);
    }

    #[test]
    fn one_link_lost_keeps_peer_alive() {
        let mut l = two_links();
        let t0 = crate::clock::now();
        l.on_status(t0, 0, 0, Some(1), "active", None);
        l.on_packet(t0, 0, 1, Some(1));
        // Only the first medium keeps delivering.
        let mut t = t0;
        let mut events = Vec::new();
        for seq in 2..10 {
            t += ms(10);
            events.extend(l.on_tick(t));
            events.extend(l.on_status(t, 0, 0, Some(seq), "active", None));
        }
        assert_eq!(l.peers()[0].state, PeerState::Active);
        assert_eq!(l.peers()[0].links[1].state, LinkState::Dead);
        assert_eq!(l.peers()[0].links[0].state, LinkState::Up);
        assert!(events.iter().any(|e| matches!(
            e,
            LivenessEvent::LinkState { link, to: LinkState::Dead, .. } if link == "mcast"
        )));
    }

    #[test]
    fn replayed_sequence_on_same_link_does_not_refresh_it() {
        let mut l = two_links();
        let t0 = crate::clock::now();
        l.on_status(t0, 0, 1, Some(5), "active", None);
        // Duplicate of seq 5 on the same link later: no refresh.
        l.on_packet(t0 + ms(20), 0, 1, Some(5));
        assert_eq!(l.peers()[0].links[1].last_seen, Some(t0));
        // Same seq first seen on the other link: refreshes that link.
        l.on_packet(t0 + ms(20), 0, 0, Some(5));
        assert_eq!(l.peers()[0].links[0].last_seen, Some(t0 + ms(20)));
    }

    #[test]
    fn advertised_deadtime_is_used_and_clamped() {
        let mut l = two_links();
        let t0 = crate::clock::now();
        l.on_status(t0, 0, 0, Some(1), "active", Some(ms(50)));
        assert_eq!(l.peers()[0].deadtime, ms(50));
        l.on_status(
            t0,
            0,
            0,
            Some(2),
            "active",
            Some(Duration::from_secs(100_000)),
        );
        assert_eq!(l.peers()[0].deadtime, MAX_ADVERTISED_DEADTIME);
    }

    #[test]
    fn dead_peer_returns() {
        let mut l = two_links();
        let t0 = crate::clock::now();
        l.on_status(t0, 0, 0, Some(1), "active", None);
        l.on_tick(t0 + ms(40));
        let ev = l.on_status(t0 + ms(50), 0, 0, Some(2), "active", None);
        assert!(ev.iter().any(|e| matches!(
            e,
            LivenessEvent::PeerState {
                from: PeerState::Dead,
                to: PeerState::Active,
                ..
            }
        )));
        // No late-heartbeat warning for the return itself.
        assert!(
            !ev.iter()
                .any(|e| matches!(e, LivenessEvent::LateHeartbeat { .. }))
        );
    }

    #[test]
    fn fmt_ms_formats() {
        assert_eq!(fmt_ms(ms(30)), "30 ms");
        assert_eq!(fmt_ms(Duration::from_micros(1500)), "1.5 ms");
    }
}
