//! Ping nodes and ping groups as plain state: heartbeat's ping pseudo-members (`ping`,
//! `ping6`, `ping_group`), each `Init`, `Up` or `Dead`, driven by echo replies and the clock
//! the caller passes in.
//!
//! heartbeat treats every `ping` address as a node of its own and a `ping_group` as one node
//! that is up while any member answers; a ping node is declared dead when nothing came back
//! for `deadping` (heartbeat `config.c`, features §2.2). hbd does the same: a reply brings a
//! target up at once, silence for `deadping` (since its last reply, or since the start for a
//! target never heard) takes it down. Nothing here reads a clock or touches a socket.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::{Config, PingGroup};

/// Whether a target is a single address or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// `ping ADDRESS` / `ping6 ADDRESS`: one address, one pseudo-node.
    Node,
    /// `ping_group NAME ADDRESS...`: up while any address answers.
    Group,
}

/// A target's state, as heartbeat shows a ping node's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    /// Not heard yet, and `deadping` has not passed since the start: counted as neither.
    Init,
    /// Answered within the last `deadping`.
    Up,
    /// Silent for `deadping`.
    Dead,
}

impl TargetState {
    /// The word used in logs and `hactl status`.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Init => "init",
            TargetState::Up => "up",
            TargetState::Dead => "dead",
        }
    }
}

/// Why a target changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeReason {
    /// An echo reply from this address arrived.
    Reply(IpAddr),
    /// No reply from any of its addresses for this long (`deadping`).
    Silent(Duration),
}

/// One state change of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetEvent {
    /// The target's name: the address of a ping node, the name of a ping group.
    pub target: String,
    /// Node or group.
    pub kind: TargetKind,
    /// State before.
    pub from: TargetState,
    /// State after.
    pub to: TargetState,
    /// What caused it.
    pub reason: ChangeReason,
    /// When it happened (the reply's arrival, or the deadline that passed).
    pub at: Instant,
}

/// How many targets answer, out of how many: what each node tells its peer and what ipfail
/// compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Reach {
    /// Targets `Up`.
    pub reachable: u32,
    /// Targets configured.
    pub total: u32,
}

/// One ping node or ping group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The address (ping node) or group name (ping group).
    pub name: String,
    /// Node or group.
    pub kind: TargetKind,
    /// The addresses whose replies count for it.
    pub addresses: Vec<IpAddr>,
    state: TargetState,
    since: Instant,
}

impl Target {
    /// Its current state.
    pub fn state(&self) -> TargetState {
        self.state
    }

    /// When it entered that state.
    pub fn since(&self) -> Instant {
        self.since
    }
}

/// All targets of one node, with each address's last reply.
#[derive(Debug, Clone)]
pub struct Targets {
    deadping: Duration,
    targets: Vec<Target>,
    last_reply: BTreeMap<IpAddr, Instant>,
}

impl Targets {
    /// Targets for `ping`/`ping6` addresses and `ping_group`s, all `Init` at `now`.
    pub fn new(
        nodes: &[IpAddr],
        groups: &[PingGroup],
        deadping: Duration,
        now: Instant,
    ) -> Targets {
        let node = |a: &IpAddr| Target {
            name: a.to_string(),
            kind: TargetKind::Node,
            addresses: vec![*a],
            state: TargetState::Init,
            since: now,
        };
        let group = |g: &PingGroup| Target {
            name: g.name.clone(),
            kind: TargetKind::Group,
            addresses: g.addresses.clone(),
            state: TargetState::Init,
            since: now,
        };
        Targets {
            deadping,
            targets: nodes
                .iter()
                .map(node)
                .chain(groups.iter().map(group))
                .collect(),
            last_reply: BTreeMap::new(),
        }
    }

    /// The targets a configuration names, with its `deadping`.
    pub fn from_config(config: &Config, now: Instant) -> Targets {
        Targets::new(
            &config.ping_nodes,
            &config.ping_groups,
            config.timing.deadping,
            now,
        )
    }

    /// Applies a reloaded configuration: targets that are unchanged (same name, kind and
    /// addresses) keep their state and replies, new ones start `Init` at `now`, removed ones
    /// are forgotten.
    pub fn reconcile(&mut self, config: &Config, now: Instant) {
        let mut next = Targets::from_config(config, now);
        for t in &mut next.targets {
            if let Some(old) = self
                .targets
                .iter()
                .find(|o| o.name == t.name && o.kind == t.kind && o.addresses == t.addresses)
            {
                t.state = old.state;
                t.since = old.since;
            }
        }
        next.last_reply = std::mem::take(&mut self.last_reply);
        next.last_reply
            .retain(|a, _| next.targets.iter().any(|t| t.addresses.contains(a)));
        *self = next;
    }

    /// Every address to probe, each once, in a stable order.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut all: Vec<IpAddr> = self
            .targets
            .iter()
            .flat_map(|t| t.addresses.iter().copied())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The targets, in configuration order (ping nodes, then groups).
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// `deadping` in force.
    pub fn deadping(&self) -> Duration {
        self.deadping
    }

    /// The last reply from `address`, if any.
    pub fn last_reply(&self, address: IpAddr) -> Option<Instant> {
        self.last_reply.get(&address).copied()
    }

    /// An echo reply from `from` arrived at `at`: every target holding that address is up.
    /// A reply from an address no target holds changes nothing.
    pub fn on_reply(&mut self, from: IpAddr, at: Instant) -> Vec<TargetEvent> {
        if !self.targets.iter().any(|t| t.addresses.contains(&from)) {
            return Vec::new();
        }
        let last = self.last_reply.entry(from).or_insert(at);
        *last = (*last).max(at);
        let mut events = Vec::new();
        for t in &mut self.targets {
            if t.addresses.contains(&from) && t.state != TargetState::Up {
                events.push(change(t, TargetState::Up, ChangeReason::Reply(from), at));
            }
        }
        events
    }

    /// The clock reached `now`: every target silent for `deadping` is dead.
    pub fn on_tick(&mut self, now: Instant) -> Vec<TargetEvent> {
        let mut events = Vec::new();
        for i in 0..self.targets.len() {
            let Some(deadline) = self.deadline_of(&self.targets[i]) else {
                continue;
            };
            if deadline <= now {
                let reason = ChangeReason::Silent(self.deadping);
                let t = &mut self.targets[i];
                events.push(change(t, TargetState::Dead, reason, deadline));
            }
        }
        events
    }

    /// When the next target would be declared dead, if none answers before; `None` when
    /// every target is already dead (or there are none).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.targets
            .iter()
            .filter_map(|t| self.deadline_of(t))
            .min()
    }

    /// The dead line of a target that is not dead yet: its latest reply (or, never heard,
    /// when it was configured) plus `deadping`.
    fn deadline_of(&self, t: &Target) -> Option<Instant> {
        if t.state == TargetState::Dead {
            return None;
        }
        let heard = t
            .addresses
            .iter()
            .filter_map(|a| self.last_reply.get(a))
            .max()
            .copied()
            .unwrap_or(t.since);
        Some(heard + self.deadping)
    }

    /// How many targets are up, out of all.
    pub fn reach(&self) -> Reach {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Reach {
            reachable: count(
                self.targets
                    .iter()
                    .filter(|t| t.state == TargetState::Up)
                    .count(),
            ),
            total: count(self.targets.len()),
        }
    }

    /// The count this node stands on and tells its peer: `None` while any target is still
    /// `Init` (a node just started must not look worse than its peer) or when it has no
    /// targets at all (it then takes no part in reachability decisions).
    pub fn advertised(&self) -> Option<Reach> {
        let settled = self.targets.iter().all(|t| t.state != TargetState::Init);
        (settled && !self.targets.is_empty()).then(|| self.reach())
    }

    /// Each target with its state and its members' last replies, for `hactl status`.
    pub fn report(&self, now: Instant) -> Vec<TargetReport> {
        self.targets
            .iter()
            .map(|t| TargetReport {
                name: t.name.clone(),
                kind: t.kind,
                state: t.state,
                for_ms: millis(now.saturating_duration_since(t.since)),
                members: t
                    .addresses
                    .iter()
                    .map(|a| {
                        let last = self.last_reply.get(a).copied();
                        MemberReport {
                            address: *a,
                            answering: last.is_some_and(|l| l + self.deadping > now),
                            last_reply_ms_ago: last
                                .map(|l| millis(now.saturating_duration_since(l))),
                        }
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Moves `t` to `to` and describes the move.
fn change(t: &mut Target, to: TargetState, reason: ChangeReason, at: Instant) -> TargetEvent {
    let from = t.state;
    t.state = to;
    t.since = at;
    TargetEvent {
        target: t.name.clone(),
        kind: t.kind,
        from,
        to,
        reason,
        at,
    }
}

/// Whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One target in `hactl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TargetReport {
    /// Address (ping node) or group name.
    pub name: String,
    /// `node` or `group`.
    pub kind: TargetKind,
    /// `init`, `up` or `dead`.
    pub state: TargetState,
    /// How long it has been in that state, in ms.
    pub for_ms: u64,
    /// Its addresses (one for a ping node).
    pub members: Vec<MemberReport>,
}

/// One address of a target in `hactl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MemberReport {
    /// The address probed.
    pub address: IpAddr,
    /// Whether it answered within the last `deadping`.
    pub answering: bool,
    /// How long ago its last reply came, in ms; `None` if it never answered.
    pub last_reply_ms_ago: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn lab(now: Instant) -> Targets {
        let group = PingGroup {
            name: "upstream".into(),
            addresses: vec![ip("203.0.113.2"), ip("203.0.113.3")],
        };
        Targets::new(
            &[ip("203.0.113.1"), ip("2001:db8::1")],
            &[group],
            ms(100),
            now,
        )
    }

    #[test]
    fn targets_start_init_and_are_not_advertised() {
        let t0 = crate::clock::now();
        let t = lab(t0);
        assert_eq!(t.targets().len(), 3);
        assert!(t.targets().iter().all(|t| t.state() == TargetState::Init));
        assert_eq!(
            t.reach(),
            Reach {
                reachable: 0,
                total: 3
            }
        );
        assert_eq!(t.advertised(), None, "a node just started has no count yet");
        assert_eq!(t.next_deadline(), Some(t0 + ms(100)));
        assert_eq!(
            t.addresses(),
            [
                ip("203.0.113.1"),
                ip("203.0.113.2"),
                ip("203.0.113.3"),
                ip("2001:db8::1")
            ]
        );
    }

    #[test]
    fn a_reply_brings_a_target_up_and_silence_for_deadping_takes_it_down() {
        let t0 = crate::clock::now();
        let mut t = lab(t0);
        let ev = t.on_reply(ip("203.0.113.1"), t0 + ms(10));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].target, "203.0.113.1");
        assert_eq!((ev[0].from, ev[0].to), (TargetState::Init, TargetState::Up));
        assert_eq!(ev[0].reason, ChangeReason::Reply(ip("203.0.113.1")));
        assert!(
            t.on_reply(ip("203.0.113.1"), t0 + ms(20)).is_empty(),
            "no change"
        );

        // The others were never heard: dead at start + deadping.
        assert_eq!(t.next_deadline(), Some(t0 + ms(100)));
        assert!(t.on_tick(t0 + ms(99)).is_empty());
        let ev = t.on_tick(t0 + ms(100));
        let names: Vec<&str> = ev.iter().map(|e| e.target.as_str()).collect();
        assert_eq!(names, ["2001:db8::1", "upstream"]);
        assert!(ev.iter().all(|e| e.to == TargetState::Dead));
        assert_eq!(ev[0].reason, ChangeReason::Silent(ms(100)));
        assert_eq!(
            t.advertised(),
            Some(Reach {
                reachable: 1,
                total: 3
            })
        );

        // The ping node is dead deadping after its last reply, not before.
        assert_eq!(t.next_deadline(), Some(t0 + ms(120)));
        assert!(t.on_tick(t0 + ms(119)).is_empty());
        let ev = t.on_tick(t0 + ms(125));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].at, t0 + ms(120), "dated at its deadline");
        assert_eq!(t.next_deadline(), None, "all dead: nothing to wait for");

        // Up again on a reply.
        let ev = t.on_reply(ip("203.0.113.1"), t0 + ms(500));
        assert_eq!((ev[0].from, ev[0].to), (TargetState::Dead, TargetState::Up));
    }

    #[test]
    fn a_group_is_up_while_any_member_answers() {
        let t0 = crate::clock::now();
        let mut t = lab(t0);
        t.on_reply(ip("203.0.113.2"), t0 + ms(10));
        t.on_reply(ip("203.0.113.3"), t0 + ms(50));
        // Member .2 stops at 10 ms; .3 keeps answering every 50 ms.
        for k in 2..10 {
            let now = t0 + ms(50 * k);
            let ev = t.on_tick(now);
            assert!(
                ev.iter().all(|e| e.target != "upstream"),
                "group stays up: {ev:?}"
            );
            t.on_reply(ip("203.0.113.3"), now);
        }
        let g = &t.report(t0 + ms(450))[2];
        assert_eq!(g.state, TargetState::Up);
        assert!(!g.members[0].answering && g.members[1].answering, "{g:?}");
        // .3 stops too: the group dies deadping after .3's last reply.
        let ev = t.on_tick(t0 + ms(450 + 100));
        assert!(
            ev.iter()
                .any(|e| e.target == "upstream" && e.to == TargetState::Dead)
        );
    }

    #[test]
    fn replies_from_unknown_addresses_change_nothing() {
        let t0 = crate::clock::now();
        let mut t = lab(t0);
        assert!(t.on_reply(ip("198.51.100.9"), t0).is_empty());
        assert_eq!(t.last_reply(ip("198.51.100.9")), None);
    }

    #[test]
    fn a_late_reply_does_not_move_the_last_reply_back() {
        let t0 = crate::clock::now();
        let mut t = lab(t0);
        t.on_reply(ip("203.0.113.1"), t0 + ms(50));
        t.on_reply(ip("203.0.113.1"), t0 + ms(30));
        assert_eq!(t.last_reply(ip("203.0.113.1")), Some(t0 + ms(50)));
    }

    #[test]
    fn an_address_in_a_node_and_a_group_counts_for_both() {
        let t0 = crate::clock::now();
        let g = PingGroup {
            name: "g".into(),
            addresses: vec![ip("203.0.113.1")],
        };
        let mut t = Targets::new(&[ip("203.0.113.1")], &[g], ms(100), t0);
        assert_eq!(t.on_reply(ip("203.0.113.1"), t0).len(), 2);
        assert_eq!(t.reach().reachable, 2);
    }

    #[test]
    fn no_targets_takes_no_part() {
        let t0 = crate::clock::now();
        let mut t = Targets::new(&[], &[], ms(100), t0);
        assert_eq!(t.advertised(), None);
        assert_eq!(t.next_deadline(), None);
        assert!(t.on_tick(t0 + ms(1000)).is_empty());
    }

    #[test]
    fn reconcile_keeps_unchanged_targets() {
        let t0 = crate::clock::now();
        let mut t = lab(t0);
        t.on_reply(ip("203.0.113.1"), t0 + ms(10));
        let config = crate::reachability::test_config(
            "timing: { keepalive: 10ms, deadtime: 100ms, deadping: 100ms }\n\
             ping: [203.0.113.1, 198.51.100.7]\n",
        );
        t.reconcile(&config, t0 + ms(20));
        assert_eq!(t.targets().len(), 2);
        assert_eq!(t.targets()[0].state(), TargetState::Up, "kept");
        assert_eq!(t.targets()[1].state(), TargetState::Init, "new");
        assert_eq!(t.targets()[1].since(), t0 + ms(20));
        assert_eq!(t.last_reply(ip("203.0.113.1")), Some(t0 + ms(10)));
        // The new one gets its own deadping from when it was added.
        assert_eq!(t.next_deadline(), Some(t0 + ms(110)));
        let ev = t.on_tick(t0 + ms(110));
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].target, "203.0.113.1");
        assert!(t.on_tick(t0 + ms(119)).is_empty());
        assert_eq!(t.on_tick(t0 + ms(120))[0].target, "198.51.100.7");
    }
}
