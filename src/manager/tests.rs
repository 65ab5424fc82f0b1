//! Two managers wired back to back with instant resources: every step checks that no group
//! is held by both nodes while they hear each other.

use super::*;
use crate::config::{GroupSpec, ResourceSpec};

fn group(preferred: &str, name: &str) -> GroupSpec {
    GroupSpec {
        preferred: preferred.into(),
        resources: vec![ResourceSpec {
            spec: name.into(),
            kind: "IPaddr".into(),
            args: vec![name.into()],
        }],
    }
}

/// The peer of node `i` of a [`Pair`] ("p" is node 0, "b" node 1).
fn peer_of(i: usize) -> &'static str {
    if i == 0 { "b" } else { "p" }
}

/// Start results to inject: `fail_start[node][group]`.
struct Pair {
    m: [Manager; 2],
    connected: bool,
    fail_start: [Vec<bool>; 2],
    fail_stop: [Vec<bool>; 2],
    /// Starts that fail with a stuck rollback: `stuck_start[node][group]`.
    stuck_start: [Vec<bool>; 2],
    announced: Vec<(usize, usize)>,
    /// Split brains each node reported: `(node, what it said)`.
    split_brains: Vec<(usize, SplitBrain)>,
    pending: Vec<(usize, Action)>,
    /// Set while a healed partition is being resolved: both may hold until the loser stops.
    healing: bool,
}

impl Pair {
    fn new(policy: AutoFailback, groups: &[GroupSpec]) -> Pair {
        let nodes = vec!["p".to_string(), "b".to_string()];
        let n = groups.len();
        Pair {
            m: [
                Manager::new("p", &nodes, groups, policy),
                Manager::new("b", &nodes, groups, policy),
            ],
            connected: true,
            fail_start: [vec![false; n], vec![false; n]],
            fail_stop: [vec![false; n], vec![false; n]],
            stuck_start: [vec![false; n], vec![false; n]],
            announced: Vec::new(),
            split_brains: Vec::new(),
            pending: Vec::new(),
            healing: false,
        }
    }

    fn push(&mut self, node: usize, actions: Vec<Action>) {
        self.pending.extend(actions.into_iter().map(|a| (node, a)));
    }

    fn check_exclusive(&self) {
        if !self.connected || self.healing {
            return;
        }
        for g in 0..self.m[0].groups().len() {
            let both = self.m[0].groups()[g].phase.holds() && self.m[1].groups()[g].phase.holds();
            assert!(
                !both,
                "group {g} held on both nodes: {:?} / {:?}",
                self.m[0].groups()[g],
                self.m[1].groups()[g]
            );
        }
    }

    /// Runs pending actions one by one until nothing is left (bounded).
    fn settle(&mut self) {
        for _ in 0..1000 {
            self.check_exclusive();
            if self.pending.is_empty() {
                self.healing = false;
                self.check_exclusive();
                return;
            }
            let (node, action) = self.pending.remove(0);
            let next = match action {
                Action::Start(g) => {
                    let outcome = if self.stuck_start[node][g] {
                        StartOutcome::Stuck
                    } else if self.fail_start[node][g] {
                        StartOutcome::Failed
                    } else {
                        StartOutcome::Running
                    };
                    self.m[node].on_started(g, outcome)
                }
                Action::Stop(g) => {
                    let ok = !self.fail_stop[node][g];
                    self.m[node].on_stopped(g, ok)
                }
                Action::Announce(g) => {
                    self.announced.push((node, g));
                    Vec::new()
                }
                Action::SplitBrain(found) => {
                    self.split_brains.push((node, found));
                    Vec::new()
                }
                Action::SendReport => {
                    if self.connected {
                        let reports = self.m[node].reports();
                        let other = 1 - node;
                        let actions = self.m[other].on_peer_reports(&reports);
                        self.push(other, actions);
                    }
                    Vec::new()
                }
            };
            self.push(node, next);
        }
        panic!("did not settle");
    }

    /// Both nodes start, hear each other and exchange one report each.
    fn boot(&mut self) {
        for i in 0..2 {
            let a = self.m[i].on_peer_alive(peer_of(i));
            self.push(i, a);
            let a = self.m[i].on_ready();
            self.push(i, a);
        }
        for i in 0..2 {
            let r = self.m[i].reports();
            let a = self.m[1 - i].on_peer_reports(&r);
            self.push(1 - i, a);
        }
        self.settle();
    }

    fn phase(&self, node: usize, g: usize) -> GroupPhase {
        self.m[node].groups()[g].phase
    }

    fn command(&mut self, node: usize, c: Command) -> CommandOutcome {
        let (outcome, actions) = self.m[node].on_command(c).expect("accepted");
        self.push(node, actions);
        self.settle();
        outcome
    }

    fn partition(&mut self) {
        self.connected = false;
        for i in 0..2 {
            let a = self.m[i].on_peer_dead(peer_of(i));
            self.push(i, a);
        }
        self.settle();
    }

    fn heal(&mut self) {
        self.connected = true;
        self.healing = true;
        for i in 0..2 {
            let a = self.m[i].on_peer_alive(peer_of(i));
            self.push(i, a);
        }
        // First heartbeats of each side cross.
        let r0 = self.m[0].reports();
        let r1 = self.m[1].reports();
        let a = self.m[1].on_peer_reports(&r0);
        self.push(1, a);
        let a = self.m[0].on_peer_reports(&r1);
        self.push(0, a);
    }
}

#[test]
fn preferred_node_acquires_on_boot() {
    let mut p = Pair::new(AutoFailback::On, &[group("p", "vip1"), group("b", "vip2")]);
    p.boot();
    assert_eq!(p.phase(0, 0), GroupPhase::Running);
    assert_eq!(p.phase(1, 0), GroupPhase::Stopped);
    assert_eq!(p.phase(1, 1), GroupPhase::Running);
    assert_eq!(p.phase(0, 1), GroupPhase::Stopped);
    assert_eq!(p.m[1].owner(0).as_deref(), Some("p"));
}

#[test]
fn standby_and_takeover_move_groups_without_overlap() {
    let mut p = Pair::new(AutoFailback::On, &[group("p", "vip1")]);
    p.boot();
    let out = p.command(0, Command::Standby(GroupClass::All));
    assert_eq!(out, CommandOutcome::Applied(vec!["vip1".into()]));
    assert_eq!(p.phase(0, 0), GroupPhase::Stopped);
    assert_eq!(p.phase(1, 0), GroupPhase::Running);
    // Takeover from p brings it back ("local" from p's point of view).
    p.command(0, Command::Takeover(GroupClass::Local));
    assert_eq!(p.phase(0, 0), GroupPhase::Running);
    assert_eq!(p.phase(1, 0), GroupPhase::Stopped);
    // Takeover from b of p's group ("foreign" from b's point of view).
    p.command(1, Command::Takeover(GroupClass::Foreign));
    assert_eq!(p.phase(1, 0), GroupPhase::Running);
    // Standby local on b does not touch p's group.
    let out = p.command(1, Command::Standby(GroupClass::Local));
    assert!(matches!(out, CommandOutcome::NothingToDo(_)), "{out:?}");
    assert_eq!(p.phase(1, 0), GroupPhase::Running);
}

#[test]
fn peer_death_moves_groups_and_failback_follows_policy() {
    for (policy, back) in [
        (AutoFailback::On, true),
        (AutoFailback::Legacy, true),
        (AutoFailback::Off, false),
    ] {
        let mut p = Pair::new(policy, &[group("p", "vip1")]);
        p.boot();
        // p dies: b takes over.
        p.connected = false;
        let a = p.m[1].on_peer_dead("p");
        p.push(1, a);
        p.settle();
        assert_eq!(p.phase(1, 0), GroupPhase::Running);
        // p comes back as a fresh process.
        let groups = [group("p", "vip1")];
        p.m[0] = Manager::new("p", &["p".into(), "b".into()], &groups, policy);
        p.connected = true;
        let a = p.m[0].on_peer_alive("b");
        p.push(0, a);
        let a = p.m[1].on_peer_alive("p");
        p.push(1, a);
        let r = p.m[1].reports();
        let a = p.m[0].on_peer_reports(&r);
        p.push(0, a);
        let a = p.m[0].on_ready();
        p.push(0, a);
        p.settle();
        assert_eq!(p.phase(0, 0) == GroupPhase::Running, back, "{policy:?}");
        assert_eq!(p.phase(1, 0) == GroupPhase::Running, !back, "{policy:?}");
    }
}

#[test]
fn healed_partition_keeps_one_holder_and_reannounces() {
    for (policy, keeper) in [(AutoFailback::On, 0), (AutoFailback::Off, 1)] {
        let mut p = Pair::new(policy, &[group("p", "vip1")]);
        p.boot();
        p.partition();
        assert_eq!(p.phase(0, 0), GroupPhase::Running);
        assert_eq!(p.phase(1, 0), GroupPhase::Running);
        p.heal();
        p.settle();
        assert_eq!(p.phase(keeper, 0), GroupPhase::Running, "{policy:?}");
        assert_eq!(p.phase(1 - keeper, 0), GroupPhase::Stopped, "{policy:?}");
        assert!(
            p.announced.contains(&(keeper, 0)),
            "{policy:?}: {:?}",
            p.announced
        );
        assert_eq!(
            p.m[0].groups()[0].placement,
            p.m[1].groups()[0].placement,
            "placements agree"
        );
    }
}

#[test]
fn after_a_heal_the_keeper_yields_to_a_peer_whose_copy_will_not_stop() {
    // The loser of a healed split brain cannot stop its copy (stop_failed): the keeper's
    // copy goes instead, so one copy is left, where it is stuck (found by the property
    // `after_a_heal_one_node_keeps_each_group`).
    for policy in [AutoFailback::On, AutoFailback::Off] {
        let mut p = Pair::new(policy, &[group("p", "vip1")]);
        p.boot();
        p.partition();
        let loser = if policy == AutoFailback::On { 1 } else { 0 };
        p.fail_stop[loser][0] = true;
        p.heal();
        p.settle();
        assert_eq!(p.phase(loser, 0), GroupPhase::StopFailed, "{policy:?}");
        assert_eq!(p.phase(1 - loser, 0), GroupPhase::Stopped, "{policy:?}");
        assert!(p.m[loser].reports()[0].holds && p.m[loser].reports()[0].failed);
        assert_eq!(
            p.m[0].groups()[0].placement,
            p.m[1].groups()[0].placement,
            "placements agree"
        );
    }
}

#[test]
fn a_healed_split_brain_is_reported_once_on_each_side_with_both_views() {
    for (policy, keeper) in [(AutoFailback::On, "p"), (AutoFailback::Off, "b")] {
        let mut p = Pair::new(policy, &[group("p", "vip1")]);
        p.boot();
        p.partition();
        p.heal();
        p.settle();
        let resolved = p.m[0].groups()[0].placement.clone();
        assert_eq!(resolved.target, keeper, "{policy:?}");
        let said = |node: usize| -> Vec<&SplitBrain> {
            p.split_brains
                .iter()
                .filter(|(n, _)| *n == node)
                .map(|(_, s)| s)
                .collect()
        };
        let (sp, sb) = (said(0), said(1));
        assert_eq!((sp.len(), sb.len()), (1, 1), "{policy:?}: {sp:?} {sb:?}");
        // each side's view is the other's report of it
        assert_eq!(sp[0].ours, sb[0].theirs, "{policy:?}");
        assert_eq!(sp[0].theirs, sb[0].ours, "{policy:?}");
        assert_ne!(sp[0].ours, sp[0].theirs, "{policy:?}");
        for s in [sp[0], sb[0]] {
            assert_eq!(s.keeper, keeper, "{policy:?}");
            assert_eq!(s.resolved, resolved, "{policy:?}");
        }
    }
}

#[test]
fn a_report_naming_a_stranger_or_a_huge_epoch_is_refused_and_commands_still_move() {
    // Issue #15, defect 1: one such report left the group on neither node and made every
    // takeover print "moving" while nothing moved.
    let mut p = Pair::new(AutoFailback::On, &[group("p", "vip1")]);
    p.boot();
    let before = p.m[1].groups()[0].clone();
    for (target, epoch) in [("x", 1), ("b", u64::MAX), ("p", MAX_EPOCH + 1)] {
        let text = format!("vip1|0|0|{target}|{epoch}");
        let refused = p.m[1].on_peer_reports_checked(&text);
        assert!(
            matches!(
                refused,
                Err(ReportError::UnknownTarget { .. } | ReportError::EpochTooHigh { .. })
            ),
            "{text}: {refused:?}"
        );
        assert_eq!(p.m[1].groups()[0], before, "{text}");
    }
    assert_eq!(
        p.command(1, Command::Takeover(GroupClass::All)),
        CommandOutcome::Applied(vec!["vip1".into()])
    );
    assert_eq!(p.phase(1, 0), GroupPhase::Running);
    assert_eq!(p.phase(0, 0), GroupPhase::Stopped);
}

#[test]
fn a_command_that_cannot_outrank_the_placement_says_why() {
    let nodes = ["p".to_string(), "b".to_string()];
    let mut m = Manager::new("p", &nodes, &[group("b", "vip1")], AutoFailback::On);
    m.on_ready();
    m.groups[0].placement.epoch = MAX_EPOCH;
    let refused = m.on_command(Command::Takeover(GroupClass::All));
    assert!(
        matches!(&refused, Err(CommandError::EpochExhausted { group, .. }) if group == "vip1"),
        "{refused:?}"
    );
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .contains("stop hbd on both nodes")
    );
}

#[test]
fn failed_start_lets_the_peer_try_without_ping_pong() {
    let mut p = Pair::new(AutoFailback::On, &[group("p", "vip1")]);
    p.fail_start[0][0] = true;
    p.boot();
    assert_eq!(p.phase(0, 0), GroupPhase::Failed);
    assert_eq!(p.phase(1, 0), GroupPhase::Running);

    let mut q = Pair::new(AutoFailback::On, &[group("p", "vip1")]);
    q.fail_start = [vec![true], vec![true]];
    q.boot();
    assert_eq!(q.phase(0, 0), GroupPhase::Failed);
    assert_eq!(q.phase(1, 0), GroupPhase::Failed);
}

#[test]
fn failed_stop_holds_the_group_and_the_peer_never_starts_it() {
    let mut p = Pair::new(AutoFailback::On, &[group("p", "vip1")]);
    p.boot();
    p.fail_stop[0][0] = true;
    p.command(0, Command::Standby(GroupClass::All));
    assert_eq!(p.phase(0, 0), GroupPhase::StopFailed);
    assert_eq!(p.phase(1, 0), GroupPhase::Stopped);
    assert_eq!(p.m[1].owner(0).as_deref(), Some("p"));
}

#[test]
fn stuck_rollback_holds_the_group_and_the_peer_never_starts_it() {
    let mut p = Pair::new(AutoFailback::On, &[group("p", "vip1")]);
    p.stuck_start[0][0] = true;
    p.boot();
    assert_eq!(p.phase(0, 0), GroupPhase::StopFailed);
    assert_eq!(p.phase(1, 0), GroupPhase::Stopped);
    assert_eq!(p.m[1].owner(0).as_deref(), Some("p"));
    assert!(p.m[0].reports()[0].holds);
}

#[test]
fn command_during_transition_is_queued_then_run() {
    let mut p = Pair::new(AutoFailback::On, &[group("p", "vip1")]);
    p.boot();
    // Start a standby but do not let it settle: p is stopping.
    let (_, actions) = p.m[0]
        .on_command(Command::Standby(GroupClass::All))
        .unwrap();
    p.push(0, actions);
    assert_eq!(p.phase(0, 0), GroupPhase::Stopping);
    let (outcome, actions) = p.m[0]
        .on_command(Command::Takeover(GroupClass::All))
        .unwrap();
    assert!(
        matches!(outcome, CommandOutcome::Queued(ref why) if why.contains("stopping")),
        "{outcome:?}"
    );
    assert_eq!(p.m[0].queued().count(), 1);
    p.push(0, actions);
    p.settle();
    assert_eq!(p.m[0].queued().count(), 0);
    assert_eq!(p.phase(0, 0), GroupPhase::Running, "queued takeover ran");
    assert_eq!(p.phase(1, 0), GroupPhase::Stopped);
}

#[test]
fn standby_refused_when_peer_dead() {
    let mut p = Pair::new(AutoFailback::On, &[group("p", "vip1")]);
    p.boot();
    p.partition();
    assert_eq!(
        p.m[0]
            .on_command(Command::Standby(GroupClass::All))
            .unwrap_err(),
        CommandError::PeerNotAlive
    );
}

#[test]
fn adopted_group_is_kept_when_peer_agrees() {
    let groups = [group("p", "vip1")];
    let nodes = ["p".to_string(), "b".to_string()];
    let mut p = Pair::new(AutoFailback::On, &groups);
    p.m[0] = Manager::new("p", &nodes, &groups, AutoFailback::On);
    p.m[0].adopt_running(0);
    p.boot();
    assert_eq!(p.phase(0, 0), GroupPhase::Running);
    assert_eq!(p.phase(1, 0), GroupPhase::Stopped);
}

#[test]
fn reports_round_trip_and_reject_garbage() {
    let reports = vec![
        GroupReport {
            group: "IPaddr::192.0.2.10/24|x;y%".into(),
            holds: true,
            failed: false,
            placement: Placement {
                target: "b".into(),
                epoch: 7,
            },
        },
        GroupReport {
            group: "lvs".into(),
            holds: false,
            failed: true,
            placement: Placement {
                target: "p".into(),
                epoch: 0,
            },
        },
    ];
    let text = encode_reports(&reports);
    assert_eq!(decode_reports(&text), Some(reports));
    assert_eq!(decode_reports(""), Some(vec![]));
    for bad in [
        "a|1|0|b",
        "a|2|0|b|1",
        "a|1|0|b|x",
        "a%zz|1|0|b|1",
        "a%4|1|0|b|1",
    ] {
        assert_eq!(decode_reports(bad), None, "{bad}");
    }
}

#[test]
fn stale_reports_after_a_heal_neither_escalate_nor_reannounce() {
    for policy in [AutoFailback::On, AutoFailback::Off] {
        let mut p = Pair::new(policy, &[group("p", "vip1")]);
        p.boot();
        p.partition();
        // p keeps hearing b's report from before b learns anything (b cannot hear p yet).
        let stale = p.m[1].reports();
        let mut announces = 0;
        let mut epochs = Vec::new();
        for _ in 0..50 {
            let actions = p.m[0].on_peer_reports(&stale);
            announces += actions
                .iter()
                .filter(|a| matches!(a, Action::Announce(_)))
                .count();
            epochs.push(p.m[0].groups()[0].placement.epoch);
        }
        assert!(announces <= 1, "{policy:?}: {announces} announces");
        assert!(
            epochs.windows(2).all(|w| w[0] == w[1]),
            "{policy:?}: {epochs:?}"
        );
    }
}

#[test]
fn reports_text_follows_every_change_of_the_reports() {
    let nodes = ["p".to_string(), "b".to_string()];
    let groups = [group("p", "192.0.2.10"), group("b", "192.0.2.11")];
    let mut m = Manager::new("p", &nodes, &groups, AutoFailback::On);
    let expected = encode_reports(&m.reports());
    assert_eq!(m.reports_text().0, expected);
    let before = m.reports_text().0.to_string();
    m.on_ready();
    // the group preferred here is starting: the text says it holds it now
    let expected = encode_reports(&m.reports());
    assert_eq!(m.reports_text().0, expected);
    assert_ne!(expected, before);
    m.on_started(0, StartOutcome::Running);
    m.on_peer_dead("b");
    let expected = encode_reports(&m.reports());
    assert_eq!(m.reports_text().0, expected);
}

#[test]
fn peer_reports_as_text_apply_like_decoded_ones_and_a_malformed_text_changes_nothing() {
    let nodes = ["p".to_string(), "b".to_string()];
    let groups = [group("p", "192.0.2.10")];
    let mut p = Manager::new("p", &nodes, &groups, AutoFailback::On);
    let mut b = Manager::new("b", &nodes, &groups, AutoFailback::On);
    p.on_peer_alive("b");
    b.on_peer_alive("p");
    p.on_ready();
    p.on_started(0, StartOutcome::Running);
    let text = p.reports_text().0.to_string();
    let mut by_value = Manager::new("b", &nodes, &groups, AutoFailback::On);
    by_value.on_peer_alive("p");
    let decoded = decode_reports(&text).expect("valid text");
    assert_eq!(
        b.on_peer_reports_text(&text),
        Some(by_value.on_peer_reports(&decoded))
    );
    // the same text again: the same answer as the decoded reports give
    assert_eq!(
        b.on_peer_reports_text(&text),
        Some(by_value.on_peer_reports(&decoded))
    );
    let before = b.reports();
    assert_eq!(b.on_peer_reports_text("not|a|report"), None);
    assert_eq!(b.reports(), before);
    // the reports kept from the last good text still count
    assert_eq!(
        b.on_peer_reports_text(&text),
        Some(by_value.on_peer_reports(&decoded))
    );
}

#[test]
fn only_the_peer_moves_groups() {
    // Liveness events of a node that is not the pair's peer decide nothing.
    let nodes = ["p".to_string(), "b".to_string()];
    let groups = [group("b", "192.0.2.10")];
    let mut p = Manager::new("p", &nodes, &groups, AutoFailback::On);
    p.on_peer_alive("b");
    p.on_ready();
    assert!(p.on_peer_dead("stranger").is_empty());
    assert_eq!(p.groups()[0].placement.target, "b");
    assert_eq!(p.peer(), Some("b"));
    assert_eq!(
        p.on_peer_dead("b"),
        vec![Action::Start(0), Action::SendReport]
    );
}

#[test]
fn a_barred_node_releases_everything_and_refuses_commands() {
    let mut p = Pair::new(AutoFailback::On, &[group("p", "vip1")]);
    p.boot();
    assert_eq!(p.phase(0, 0), GroupPhase::Running);
    let actions = p.m[0].on_barred();
    assert!(actions.contains(&Action::Stop(0)), "{actions:?}");
    assert_eq!(
        p.m[0].on_command(Command::Takeover(GroupClass::All)),
        Err(CommandError::Barred)
    );
}
