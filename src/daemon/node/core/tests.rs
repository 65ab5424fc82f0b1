//! The core without any I/O: two cores hand each other the frames their effects carry, on
//! instants the test chooses.

use std::collections::BTreeMap;

use super::*;
use crate::config::{
    AuthKey, AuthKeys, AuthMethod, AutoFailback, GroupSpec, Logging, MediumSpec, MsgFormat,
    ResourceSpec, Timing,
};
use crate::manager::{GroupClass, GroupPhase};
use crate::membership::liveness::LocalState;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config(groups: &[(&str, &str)]) -> Config {
    let mut keys = BTreeMap::new();
    keys.insert(
        1,
        AuthKey {
            method: AuthMethod::Sha256,
            secret: b"secret".to_vec(),
        },
    );
    Config {
        cluster_name: "core".into(),
        nodes: vec!["a".into(), "b".into()],
        timing: Timing {
            keepalive: ms(10),
            deadtime: ms(30),
            warntime: ms(20),
            initdead: ms(100),
            deadping: ms(30),
        },
        media: vec![MediumSpec::Bcast {
            interface: "sim0".into(),
            port: 694,
        }],
        auth: AuthKeys { active: 1, keys },
        msgfmt: MsgFormat::Classic,
        hopfudge: 1,
        auto_failback: AutoFailback::On,
        ping_nodes: vec![],
        ping_groups: vec![],
        ping_hysteresis: ms(60),
        groups: groups
            .iter()
            .map(|(preferred, vip)| GroupSpec {
                preferred: (*preferred).into(),
                resources: vec![ResourceSpec {
                    spec: (*vip).into(),
                    kind: "IPaddr".into(),
                    args: vec![(*vip).into()],
                }],
            })
            .collect(),
        logging: Logging::default(),
        respawn: vec![],
        apiauth: vec![],
        watchdog: None,
        director: None,
        vip_announce: Default::default(),
        metrics: None,
        fencing: None,
    }
}

fn core(name: &str, config: &Config, at: Instant) -> NodeCore {
    core_of_generation(config, name, 1, &BTreeMap::new(), at)
}

/// A core named `name` at `generation`, knowing `known` as its peers' generations.
fn core_of_generation(
    cfg: &Config,
    name: &str,
    generation: u64,
    known: &BTreeMap<String, u64>,
    at: Instant,
) -> NodeCore {
    NodeCore::new(
        Arc::new(cfg.clone()),
        NodeIdentity {
            name: name.into(),
            uuid: [7; 16],
            generation,
        },
        &["link0".to_string()],
        known,
        at,
    )
}

/// Two cores and the effects each produced last.
struct Pair {
    nodes: [NodeCore; 2],
    /// Effects other than sends, per node, in order.
    done: [Vec<Effect>; 2],
    /// Whether frames cross.
    linked: bool,
    /// A node whose frames are lost on the way (one-way loss), if any.
    muted: Option<usize>,
}

impl Pair {
    fn new(config: &Config, at: Instant) -> Pair {
        Pair::of([core("a", config, at), core("b", config, at)])
    }

    /// `nodes`, linked, with no effects yet.
    fn of(nodes: [NodeCore; 2]) -> Pair {
        Pair {
            nodes,
            done: [Vec::new(), Vec::new()],
            linked: true,
            muted: None,
        }
    }

    /// A new pair run for its first `settle_ms` with every group operation asked for
    /// completed at the end.
    fn settled(config: &Config, at: Instant, settle_ms: u64) -> Pair {
        let mut pair = Pair::new(config, at);
        pair.run(at, at + ms(settle_ms));
        pair.finish_ops(at + ms(settle_ms));
        pair
    }

    /// Steps node `i` with `input` and delivers every frame it sends to the other node at
    /// the same instant, and so on until nothing more is sent.
    fn step(&mut self, i: usize, at: Instant, input: Input<'_>) {
        let mut out = Vec::new();
        self.nodes[i].step(at, input, &mut out);
        self.settle(i, at, out);
    }

    fn settle(&mut self, i: usize, at: Instant, out: Vec<Effect>) {
        let mut queue: Vec<(usize, Effect)> = out.into_iter().map(|e| (i, e)).collect();
        while !queue.is_empty() {
            let mut next = Vec::new();
            for (from, effect) in queue {
                match effect {
                    Effect::Send { frame, .. } => {
                        if self.linked && self.muted != Some(from) {
                            let mut out = Vec::new();
                            self.nodes[1 - from].step(
                                at,
                                Input::Frame {
                                    link: 0,
                                    from: None,
                                    frame: &frame,
                                },
                                &mut out,
                            );
                            next.extend(out.into_iter().map(|e| (1 - from, e)));
                        }
                        self.nodes[from].recycle(frame);
                    }
                    other => self.done[from].push(other),
                }
            }
            queue = next;
        }
    }

    fn take(&mut self, i: usize) -> Vec<Effect> {
        std::mem::take(&mut self.done[i])
    }

    /// Runs both timers from `from` to `to` in 1 ms steps.
    fn run(&mut self, from: Instant, to: Instant) {
        let mut t = from;
        while t <= to {
            for i in 0..2 {
                if self.nodes[i].wake().is_some_and(|w| w <= t) {
                    self.step(i, t, Input::Timer);
                }
            }
            t += ms(1);
        }
    }

    /// Completes every group operation the nodes asked for, successfully.
    fn finish_ops(&mut self, at: Instant) {
        for i in 0..2 {
            for effect in self.take(i) {
                let (group, start) = match effect {
                    Effect::Start(g) => (g, true),
                    Effect::Stop(g) => (g, false),
                    _ => continue,
                };
                self.step(
                    i,
                    at,
                    Input::OpFinished(OpFinished {
                        group,
                        start,
                        result: Ok(()),
                    }),
                );
            }
        }
    }
}

fn sends(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Send { .. }))
        .count()
}

#[test]
fn the_first_timer_sends_a_status_and_the_peer_comes_up_from_it() {
    let t0 = crate::clock::now();
    let cfg = config(&[]);
    let mut pair = Pair::new(&cfg, t0);
    pair.step(0, t0, Input::Timer);
    let b_saw: Vec<_> = pair.take(1);
    assert!(
        b_saw.iter().any(|e| matches!(
            e,
            Effect::Event(NodeEvent::Liveness(LivenessEvent::PeerState { node, to: PeerState::Up, .. })) if node == "a"
        )),
        "{b_saw:?}"
    );
    // a's first status, then a's answer to the status b sent at once on hearing a
    assert_eq!(pair.nodes[1].membership().counters().accepted, 2);
    assert_eq!(pair.nodes[0].membership().counters().accepted, 1);
    assert!(pair.nodes[1].membership().peers()[0].state.is_alive());
}

#[test]
fn a_silent_peer_is_declared_dead_exactly_at_deadtime_and_its_group_starts_here() {
    let t0 = crate::clock::now();
    let cfg = config(&[("b", "192.0.2.10")]);
    let mut pair = Pair::settled(&cfg, t0, 50);
    assert_eq!(
        pair.nodes[1].manager().groups()[0].phase,
        GroupPhase::Running
    );
    assert_eq!(pair.nodes[0].membership().local_state(), LocalState::Active);
    // b falls silent: a's next wake is b's deadline, and at that instant b is dead.
    pair.linked = false;
    let last = pair.nodes[0].membership().peers()[0]
        .last_status
        .expect("heard b");
    let deadline = last + ms(30);
    let mut t = t0 + ms(51);
    while t < deadline {
        if pair.nodes[0].wake().is_some_and(|w| w <= t) {
            pair.step(0, t, Input::Timer);
        }
        t += ms(1);
    }
    assert!(pair.nodes[0].membership().peers()[0].state.is_alive());
    assert!(pair.nodes[0].wake().expect("awake") <= deadline);
    pair.take(0);
    pair.step(0, deadline, Input::Timer);
    let effects = pair.take(0);
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Event(NodeEvent::Liveness(LivenessEvent::PeerState {
            to: PeerState::Dead,
            ..
        }))
    )));
    assert!(effects.contains(&Effect::Start(0)), "{effects:?}");
}

#[test]
fn takeover_and_standby_move_a_group_with_one_message_and_reply() {
    let t0 = crate::clock::now();
    let cfg = config(&[("a", "192.0.2.10")]);
    let mut pair = Pair::settled(&cfg, t0, 20);
    assert_eq!(
        pair.nodes[0].manager().groups()[0].phase,
        GroupPhase::Running
    );
    let at = t0 + ms(21);
    pair.step(1, at, Input::Command(Command::Takeover(GroupClass::All)));
    let b = pair.take(1);
    assert!(
        b.iter().any(|e| matches!(e, Effect::Reply(r) if r.ok)),
        "{b:?}"
    );
    // a got b's request in the same exchange and stops the group
    assert!(pair.take(0).contains(&Effect::Stop(0)));
    pair.step(
        0,
        at,
        Input::OpFinished(OpFinished {
            group: 0,
            start: false,
            result: Ok(()),
        }),
    );
    // a's report that it let go reaches b, which starts the group at once
    assert!(pair.take(1).contains(&Effect::Start(0)));
}

#[test]
fn commands_before_the_node_is_ready_are_refused() {
    let t0 = crate::clock::now();
    let cfg = config(&[("a", "192.0.2.10")]);
    let mut a = core("a", &cfg, t0);
    let mut out = Vec::new();
    a.step(
        t0,
        Input::Command(Command::Standby(GroupClass::All)),
        &mut out,
    );
    let reply = out.iter().find_map(|e| match e {
        Effect::Reply(r) => Some((**r).clone()),
        _ => None,
    });
    let reply = reply.expect("a reply");
    assert!(!reply.ok, "{reply:?}");
}

#[test]
fn garbage_is_dropped_as_an_event_and_counted() {
    let t0 = crate::clock::now();
    let cfg = config(&[]);
    let mut a = core("a", &cfg, t0);
    let mut out = Vec::new();
    a.step(
        t0,
        Input::Frame {
            link: 0,
            from: None,
            frame: b"###\nnot a frame",
        },
        &mut out,
    );
    assert!(
        matches!(
            out.as_slice(),
            [Effect::Event(NodeEvent::Dropped {
                reason: "malformed",
                link: 0,
                ..
            })]
        ),
        "{out:?}"
    );
    assert_eq!(a.membership().counters().malformed, 1);
}

#[test]
fn reload_applies_timers_and_keys_refuses_groups_and_names_what_waits_for_a_restart() {
    let t0 = crate::clock::now();
    let cfg = config(&[("a", "192.0.2.10")]);
    let mut a = core("a", &cfg, t0);
    let reply = |a: &mut NodeCore, config: Config| {
        let mut out = Vec::new();
        a.step(
            t0,
            Input::Reload(Box::new(config), AppliedOutside::default()),
            &mut out,
        );
        out.into_iter()
            .find_map(|e| match e {
                Effect::Reply(r) => Some(*r),
                _ => None,
            })
            .expect("a reply")
    };
    let mut groups = cfg.clone();
    groups.groups.clear();
    let r = reply(&mut a, groups);
    assert!(
        !r.ok
            && r.error
                .as_deref()
                .is_some_and(|e| e.contains("haresources groups"))
    );
    assert_eq!(a.config().groups.len(), 1, "nothing applied");

    let mut timers = cfg.clone();
    timers.timing.deadtime = ms(60);
    timers.logging.debug_level = 2;
    let r = reply(&mut a, timers);
    let text = r.message.expect("a message");
    assert!(r.ok && text.contains("timers applied"), "{text}");
    assert!(
        text.contains("not applied until hbd restarts: logging"),
        "{text}"
    );
    assert_eq!(a.config().timing.deadtime, ms(60));
    assert_eq!(a.config().logging, cfg.logging, "logging kept as it runs");

    // Fencing is read at each fencing: applied. The announce settings and the metrics
    // endpoint are taken at start: named as waiting for a restart, and kept as they run.
    let mut others = Config::clone(a.config());
    others.fencing = Some(crate::config::FencingSpec {
        devices: Vec::new(),
        action: crate::config::FenceAction::Reset,
        timeout: ms(5000),
        attempts: 2,
    });
    others.vip_announce.count += 1;
    others.metrics = Some("127.0.0.1:9107".parse().unwrap());
    let r = reply(&mut a, others.clone());
    let text = r.message.expect("a message");
    assert!(r.ok && text.contains("fencing applied"), "{text}");
    assert!(
        text.contains("not applied until hbd restarts: vip_announce, metrics"),
        "{text}"
    );
    assert_eq!(a.config().fencing, others.fencing);
    assert_eq!(a.config().vip_announce, cfg.vip_announce);
    assert_eq!(a.config().metrics, cfg.metrics);
}

#[test]
fn shutdown_releases_the_group_then_tells_the_peer_and_stops() {
    let t0 = crate::clock::now();
    let cfg = config(&[("a", "192.0.2.10")]);
    let mut pair = Pair::settled(&cfg, t0, 20);
    let at = t0 + ms(21);
    pair.step(0, at, Input::Shutdown);
    assert!(pair.take(0).contains(&Effect::Stop(0)));
    assert!(pair.nodes[0].wake().is_some(), "still stopping");
    pair.step(
        0,
        at + ms(1),
        Input::OpFinished(OpFinished {
            group: 0,
            start: false,
            result: Ok(()),
        }),
    );
    // b hears the release and takes the group at once
    assert!(pair.take(1).contains(&Effect::Start(0)));
    let mut out = Vec::new();
    pair.nodes[0].step(at + ms(2), Input::Timer, &mut out);
    assert_eq!(sends(&out), 1, "one last status: {out:?}");
    assert_eq!(out.last(), Some(&Effect::Stopped));
    assert_eq!(pair.nodes[0].wake(), None);
    // a stopped core ignores everything
    let mut after = Vec::new();
    pair.nodes[0].step(at + ms(3), Input::Timer, &mut after);
    assert!(after.is_empty());
}

#[test]
fn a_peer_with_a_newer_generation_is_persisted_and_reported_restarted() {
    let t0 = crate::clock::now();
    let cfg = config(&[]);
    let mut a = core("a", &cfg, t0);
    let mut b = core("b", &cfg, t0);
    let mut b2 = NodeCore::new(
        Arc::new(cfg.clone()),
        NodeIdentity {
            name: "b".into(),
            uuid: [7; 16],
            generation: 2,
        },
        &["link0".to_string()],
        &BTreeMap::new(),
        t0,
    );
    let frame_of = |n: &mut NodeCore| {
        let mut out = Vec::new();
        n.step(t0, Input::Timer, &mut out);
        out.into_iter()
            .find_map(|e| match e {
                Effect::Send { frame, .. } => Some(frame),
                _ => None,
            })
            .expect("a heartbeat")
    };
    let deliver = |a: &mut NodeCore, frame: &[u8]| {
        let mut out = Vec::new();
        a.step(
            t0,
            Input::Frame {
                link: 0,
                from: None,
                frame,
            },
            &mut out,
        );
        out
    };
    let first = deliver(&mut a, &frame_of(&mut b));
    assert!(first.contains(&Effect::PersistGeneration {
        peer: "b".into(),
        generation: 1
    }));
    let again = deliver(&mut a, &frame_of(&mut b2));
    assert!(again.contains(&Effect::PersistGeneration {
        peer: "b".into(),
        generation: 2
    }));
    assert!(again.contains(&Effect::Event(NodeEvent::PeerRestarted {
        node: "b".into(),
        generation: 2
    })));
}

/// Fencing for every node through an agent (never run here: the core only asks for it).
fn with_fencing(mut cfg: Config) -> Config {
    cfg.fencing = Some(crate::config::FencingSpec {
        devices: vec![crate::config::FenceDevice {
            from: None,
            kind: crate::config::FenceKind::Agent {
                path: "/usr/local/sbin/fence-peer".into(),
                params: vec![],
            },
        }],
        action: crate::config::FenceAction::Reset,
        timeout: Duration::from_secs(30),
        attempts: 3,
    });
    cfg
}

/// A pair where b holds its group, then falls silent; returns a's effects at b's death.
fn holder_dies(cfg: &Config) -> (Pair, Instant, Vec<Effect>) {
    let t0 = crate::clock::now();
    let mut pair = Pair::settled(cfg, t0, 50);
    assert_eq!(
        pair.nodes[1].manager().groups()[0].phase,
        GroupPhase::Running
    );
    pair.linked = false;
    pair.take(0);
    let dead = t0 + ms(50) + ms(40);
    pair.run(t0 + ms(51), dead);
    let effects = pair.take(0);
    (pair, dead, effects)
}

#[test]
fn a_peer_that_died_holding_a_group_is_fenced_before_the_takeover() {
    let cfg = with_fencing(config(&[("b", "192.0.2.10")]));
    let (mut pair, dead, effects) = holder_dies(&cfg);
    assert!(
        effects.contains(&Effect::Fence { peer: "b".into() }),
        "{effects:?}"
    );
    assert!(
        !effects.contains(&Effect::Start(0)),
        "started before fencing: {effects:?}"
    );
    assert!(
        pair.nodes[0]
            .fencing_status(dead)
            .unwrap()
            .starts_with("fencing b")
    );
    pair.step(
        0,
        dead + ms(5),
        Input::FenceFinished {
            peer: "b".into(),
            result: Ok(()),
        },
    );
    assert_eq!(pair.take(0), vec![Effect::Start(0)]);
    assert_eq!(
        pair.nodes[0].fencing_status(dead).as_deref(),
        Some("b fenced")
    );
}

#[test]
fn a_failed_fence_leaves_the_group_stopped_and_says_so() {
    let cfg = with_fencing(config(&[("b", "192.0.2.10")]));
    let (mut pair, dead, _) = holder_dies(&cfg);
    pair.step(
        0,
        dead + ms(5),
        Input::FenceFinished {
            peer: "b".into(),
            result: Err("power switch unreachable".into()),
        },
    );
    let effects = pair.take(0);
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Start(_))),
        "{effects:?}"
    );
    assert_eq!(
        pair.nodes[0].manager().groups()[0].phase,
        GroupPhase::Failed,
        "the group is held failed, not started"
    );
    let said = pair.nodes[0].fencing_status(dead).unwrap();
    assert!(
        said.starts_with("FENCING b FAILED: power switch unreachable"),
        "{said}"
    );
}

#[test]
fn without_fencing_or_a_peer_that_held_nothing_the_takeover_is_at_once() {
    // No device: the group starts at b's death (as heartbeat without STONITH).
    let (_, _, effects) = holder_dies(&config(&[("b", "192.0.2.10")]));
    assert!(effects.contains(&Effect::Start(0)), "{effects:?}");
    assert!(!effects.iter().any(|e| matches!(e, Effect::Fence { .. })));
    // A device, but b held nothing (the group was a's): a keeps running it, no fence.
    let cfg = with_fencing(config(&[("a", "192.0.2.10")]));
    let t0 = crate::clock::now();
    let mut pair = Pair::settled(&cfg, t0, 50);
    pair.linked = false;
    pair.take(0);
    pair.run(t0 + ms(51), t0 + ms(90));
    let effects = pair.take(0);
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Fence { .. })),
        "{effects:?}"
    );
}

/// Every effect in `effects` that is a node event.
fn events(effects: &[Effect]) -> Vec<&NodeEvent> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Event(event) => Some(event),
            _ => None,
        })
        .collect()
}

#[test]
fn a_healed_split_brain_is_logged_on_both_sides_and_resolved_within_a_keepalive() {
    let t0 = crate::clock::now();
    let cfg = config(&[("a", "192.0.2.10")]);
    let mut pair = Pair::settled(&cfg, t0, 50);
    // A partition: b declares a dead and starts the group too.
    pair.linked = false;
    pair.run(t0 + ms(51), t0 + ms(150));
    pair.finish_ops(t0 + ms(150));
    for node in &pair.nodes {
        assert_eq!(node.manager().groups()[0].phase, GroupPhase::Running);
    }
    pair.take(0);
    pair.take(1);
    // The heal: within one keepalive both have heard the other.
    pair.linked = true;
    pair.run(t0 + ms(151), t0 + ms(161));
    let (a, b) = (pair.take(0), pair.take(1));
    let found = |effects: &[Effect]| -> Vec<(String, String, String, String)> {
        events(effects)
            .into_iter()
            .filter_map(|e| match e {
                NodeEvent::SplitBrain {
                    group,
                    ours,
                    theirs,
                    keeper,
                } => Some((
                    group.clone(),
                    format!("{}@{}", ours.target, ours.epoch),
                    format!("{}@{}", theirs.target, theirs.epoch),
                    keeper.clone(),
                )),
                _ => None,
            })
            .collect()
    };
    let (fa, fb) = (found(&a), found(&b));
    assert_eq!((fa.len(), fb.len()), (1, 1), "{a:?} {b:?}");
    // Each side logs both views: its own, and the peer's as the peer's report said.
    assert_eq!(fa[0].1, "a@0", "a kept the group it held at epoch 0");
    assert_eq!(fb[0].2, "a@0", "b heard a's view");
    assert_eq!(fa[0].2, "b@1", "a heard b's view from the partition");
    for f in [&fa[0], &fb[0]] {
        assert_eq!((f.0.as_str(), f.3.as_str()), ("192.0.2.10", "a"));
    }
    assert!(
        a.contains(&Effect::Announce(0)),
        "the keeper re-announces: {a:?}"
    );
    assert!(!a.contains(&Effect::Stop(0)));
    assert!(b.contains(&Effect::Stop(0)), "the other releases: {b:?}");
}

#[test]
fn a_node_its_peer_holds_dead_although_it_hears_the_peer_releases_its_groups_until_heard() {
    // One-way loss (issue #15 fault matrix): b stops hearing a and takes a's group; a
    // still hears b, so only a can end the split brain. b names a dead in its heartbeats;
    // after two keepalives of that, a releases and holds nothing until b hears it again.
    let t0 = crate::clock::now();
    let cfg = config(&[("a", "192.0.2.10")]);
    let mut pair = Pair::settled(&cfg, t0, 50);
    assert!(pair.nodes[0].manager().groups()[0].phase.holds());
    pair.muted = Some(0);
    // b declares a dead at deadtime (30 ms) and starts the group.
    pair.run(t0 + ms(51), t0 + ms(85));
    let b = pair.take(1);
    assert!(b.contains(&Effect::Start(0)), "{b:?}");
    pair.done[1] = b;
    pair.finish_ops(t0 + ms(85));
    // Two keepalives of b naming a dead (and a frame to notice it on): a releases.
    pair.run(t0 + ms(86), t0 + ms(115));
    let a = pair.take(0);
    assert!(a.contains(&Effect::Stop(0)), "a releases: {a:?}");
    assert!(
        events(&a)
            .iter()
            .any(|e| matches!(e, NodeEvent::Unheard { peer, unheard: true } if peer == "b")),
        "{a:?}"
    );
    pair.done[0] = a;
    pair.finish_ops(t0 + ms(115));
    assert!(pair.nodes[0].manager().is_unheard());
    assert!(!pair.nodes[0].manager().holds_any());
    assert!(pair.nodes[1].manager().holds_any());
    let alarms = pair.nodes[0].alarms();
    assert!(
        alarms.iter().any(|a| a.contains("one-way loss")),
        "{alarms:?}"
    );
    // An operator cannot take the group back meanwhile, and is told why.
    let mut out = Vec::new();
    pair.nodes[0].step(
        t0 + ms(116),
        Input::Command(Command::Takeover(GroupClass::All)),
        &mut out,
    );
    assert!(
        out.iter().any(|e| matches!(e, Effect::Reply(r) if !r.ok)),
        "{out:?}"
    );
    // Nothing changes while the loss lasts.
    pair.run(t0 + ms(117), t0 + ms(300));
    pair.finish_ops(t0 + ms(300));
    assert!(!pair.nodes[0].manager().holds_any());
    // The heal: b hears a, a is heard again, and the group goes home (auto_failback on).
    pair.muted = None;
    pair.take(1);
    let mut b: Vec<NodeEvent> = Vec::new();
    for at in [320, 340, 360, 380] {
        pair.run(t0 + ms(at - 19), t0 + ms(at));
        let effects = pair.take(1);
        b.extend(events(&effects).into_iter().cloned());
        pair.done[1] = effects;
        pair.finish_ops(t0 + ms(at));
    }
    // b learns a heard it all along, and says the group ran on both.
    assert!(
        b.iter()
            .any(|e| matches!(e, NodeEvent::SplitBrain { keeper, .. } if keeper == "a")),
        "{b:?}"
    );
    assert!(!pair.nodes[0].manager().is_unheard());
    assert_eq!(
        pair.nodes[0].manager().groups()[0].phase,
        GroupPhase::Running
    );
    assert!(!pair.nodes[1].manager().holds_any());
    assert!(
        pair.nodes[0].alarms().is_empty(),
        "{:?}",
        pair.nodes[0].alarms()
    );
}

#[test]
fn a_partition_heal_where_the_first_frames_name_us_dead_releases_nothing() {
    // Both sides held each other dead; after the heal each one's first frame still names
    // the other dead, until the answer gets through (at once): nobody is "unheard".
    let t0 = crate::clock::now();
    let cfg = config(&[("a", "192.0.2.10")]);
    let mut pair = Pair::settled(&cfg, t0, 50);
    pair.linked = false;
    pair.run(t0 + ms(51), t0 + ms(150));
    pair.finish_ops(t0 + ms(150));
    pair.take(0);
    pair.take(1);
    pair.linked = true;
    pair.run(t0 + ms(151), t0 + ms(250));
    let (a, b) = (pair.take(0), pair.take(1));
    for effects in [&a, &b] {
        assert!(
            !events(effects)
                .iter()
                .any(|e| matches!(e, NodeEvent::Unheard { .. })),
            "{effects:?}"
        );
    }
    assert!(!a.contains(&Effect::Stop(0)), "the keeper keeps it: {a:?}");
}

/// a, knowing `known` for b, and b booted at generation 5 (an `hb_generation` restored from
/// a backup when `known` says more).
fn stale_pair(cfg: &Config, known: &BTreeMap<String, u64>, at: Instant) -> Pair {
    Pair::of([
        core_of_generation(cfg, "a", 1, known, at),
        core_of_generation(cfg, "b", 5, &BTreeMap::new(), at),
    ])
}

#[test]
fn a_node_restored_from_backup_is_told_its_generation_is_stale_and_holds_nothing() {
    // Issue #15, defect 5: a knows generation 0x100 for b; b restarts from an older
    // hb_generation (5) and would hold the group a also holds, unheard. a drops b's frames
    // as replays and says so in its heartbeats; b releases everything, records 0x101 for
    // its next start and raises an alarm, as a does. Restarted at 0x101, b rejoins.
    let t0 = crate::clock::now();
    let cfg = config(&[("b", "192.0.2.10")]);
    let known = BTreeMap::from([("b".to_string(), 0x100)]);
    let node = |name: &str, generation: u64, known: &BTreeMap<String, u64>| {
        core_of_generation(&cfg, name, generation, known, t0)
    };
    let mut pair = stale_pair(&cfg, &known, t0);
    pair.run(t0, t0 + ms(150));
    let (a, b) = (pair.take(0), pair.take(1));
    // hand the group operations back to be finished
    for (i, effects) in [(0, &a), (1, &b)] {
        for e in effects.iter() {
            match e {
                Effect::Start(g) => pair.done[i].push(Effect::Start(*g)),
                Effect::Stop(g) => pair.done[i].push(Effect::Stop(*g)),
                _ => {}
            }
        }
    }
    pair.finish_ops(t0 + ms(150));
    pair.run(t0 + ms(151), t0 + ms(200));
    // a start b began before it heard it was stale is undone once it finishes
    pair.finish_ops(t0 + ms(200));
    pair.run(t0 + ms(201), t0 + ms(210));
    pair.finish_ops(t0 + ms(210));
    assert!(
        events(&a).iter().any(|e| matches!(
            e,
            NodeEvent::PeerGenerationStale { node, received: 5, known: 0x100 } if node == "b"
        )),
        "{a:?}"
    );
    assert!(
        events(&b).iter().any(|e| matches!(
            e,
            NodeEvent::OwnGenerationStale { peer, was: 5, known: 0x100, next_start: 0x101 } if peer == "a"
        )),
        "{b:?}"
    );
    assert!(b.contains(&Effect::PersistOwnGeneration(0x101)), "{b:?}");
    // only a holds the group (b's preferred one: a took it, b hears that it may not)
    assert!(pair.nodes[1].manager().is_barred());
    assert!(!pair.nodes[1].manager().holds_any());
    assert!(pair.nodes[0].manager().holds_any());
    for (i, says) in [(0, "dropping frames of b"), (1, "a drops our frames")] {
        let alarms = pair.nodes[i].alarms();
        assert!(alarms.iter().any(|a| a.contains(says)), "{alarms:?}");
    }
    // b restarted past it: a accepts it at once, its alarm clears, the group goes home.
    pair.nodes[1] = node("b", 0x101, &BTreeMap::new());
    pair.run(t0 + ms(211), t0 + ms(260));
    let a = pair.take(0);
    assert!(a.contains(&Effect::PersistGeneration {
        peer: "b".into(),
        generation: 0x101
    }));
    assert!(pair.nodes[0].membership().peers()[0].state.is_alive());
    assert!(
        pair.nodes[0].alarms().is_empty(),
        "{:?}",
        pair.nodes[0].alarms()
    );
}

#[test]
fn reloading_to_crc_warns_in_the_reply() {
    let t0 = crate::clock::now();
    let cfg = config(&[]);
    let mut a = core("a", &cfg, t0);
    let mut crc = cfg.clone();
    crc.auth.keys.insert(
        2,
        AuthKey {
            method: AuthMethod::Crc,
            secret: Vec::new(),
        },
    );
    crc.auth.active = 2;
    let mut out = Vec::new();
    a.step(
        t0,
        Input::Reload(Box::new(crc), AppliedOutside::default()),
        &mut out,
    );
    let reply = out
        .into_iter()
        .find_map(|e| match e {
            Effect::Reply(r) => Some(*r),
            _ => None,
        })
        .expect("a reply");
    let text = reply.message.expect("a message");
    assert!(
        reply.ok && text.contains("WARNING") && text.contains("crc"),
        "{text}"
    );
}

#[test]
fn a_dead_peer_has_its_waiting_answers_read_at_every_wake() {
    // Issue #15, defect 3: its heartbeats may all be answers, which wait unread unless a
    // liveness deadline is due, and a dead peer has none.
    let t0 = crate::clock::now();
    let cfg = config(&[]);
    let mut pair = Pair::new(&cfg, t0);
    assert!(pair.nodes[0].awaits_a_return(), "b not heard yet");
    pair.run(t0, t0 + ms(20));
    assert!(!pair.nodes[0].awaits_a_return(), "b and its link are up");
    pair.linked = false;
    pair.run(t0 + ms(21), t0 + ms(80));
    assert!(!pair.nodes[0].membership().peers()[0].state.is_alive());
    assert!(pair.nodes[0].awaits_a_return());
    assert!(
        !pair.nodes[0].liveness_due(t0 + ms(81)),
        "no deadline would read them"
    );
}

#[test]
fn a_node_held_out_for_a_stale_generation_still_takes_over_when_its_peer_dies() {
    // As above: b booted from an older hb_generation and is held out by a. Then a dies: the
    // groups must not be lost, b takes them over as any survivor does.
    let t0 = crate::clock::now();
    let cfg = config(&[("b", "192.0.2.10")]);
    let known = BTreeMap::from([("b".to_string(), 0x100)]);
    let mut pair = stale_pair(&cfg, &known, t0);
    pair.run(t0, t0 + ms(150));
    for t in [150, 200, 210] {
        pair.finish_ops(t0 + ms(t));
        pair.run(t0 + ms(t + 1), t0 + ms(t + 10));
    }
    pair.finish_ops(t0 + ms(220));
    assert!(pair.nodes[1].manager().is_barred());
    assert!(!pair.nodes[1].manager().holds_any());
    assert!(pair.nodes[0].manager().holds_any());
    // a dies (nothing crosses any more): b declares it dead and starts the group.
    pair.linked = false;
    pair.take(1);
    let mut t = t0 + ms(221);
    while t <= t0 + ms(300) {
        if pair.nodes[1].wake().is_some_and(|w| w <= t) {
            pair.step(1, t, Input::Timer);
        }
        t += ms(1);
    }
    let b = pair.take(1);
    assert!(
        b.contains(&Effect::Start(0)),
        "the survivor left the group down: {b:?}"
    );
    assert!(!pair.nodes[1].manager().is_barred());
}

// ---- heartbeat's classic protocol towards a heartbeat peer (issue #14) ----
//
// Node "a" is a real heartbeat node, played here by frames written as heartbeat writes them
// (no `hbd_groups`); node "b" is the core under test.

mod classic {
    use super::*;
    use crate::membership::message::Message;

    /// A heartbeat node "a" as seen on the wire.
    struct Heartbeat {
        seq: u64,
        cfg: Config,
    }

    impl Heartbeat {
        fn frame(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
            let mut m = Message::new();
            for (n, v) in fields {
                m.add_str(n, v);
            }
            let sequenced = !fields[0].1.starts_with("NS_");
            if sequenced {
                self.seq += 1;
            }
            wire::stamp(
                &mut m,
                &EnvelopeRef {
                    src: "a",
                    srcuuid: [3; 16],
                    seq: sequenced.then_some(self.seq),
                    generation: 5,
                    ts: 1,
                    load: None,
                    ttl: 3,
                    dest_uuid: None,
                },
            );
            wire::encode(&m, &self.cfg.auth, MsgFormat::Classic)
        }

        fn status(&mut self) -> Vec<u8> {
            // dt 10 s: it stays alive however long a test steps.
            self.frame(&[
                ("t", "status"),
                ("st", "active"),
                ("dt", "2710"),
                ("protocol", "1"),
            ])
        }
    }

    /// Feeds `frame` to `b` at `at`; returns what it sent (decoded) and did.
    fn feed(b: &mut NodeCore, at: Instant, frame: &[u8]) -> (Vec<Message>, Vec<Effect>) {
        let mut out = Vec::new();
        b.step(
            at,
            Input::Frame {
                link: 0,
                from: None,
                frame,
            },
            &mut out,
        );
        split(b, out)
    }

    fn split(b: &NodeCore, out: Vec<Effect>) -> (Vec<Message>, Vec<Effect>) {
        let mut sent = Vec::new();
        let mut other = Vec::new();
        for e in out {
            match e {
                Effect::Send { frame, .. } => {
                    sent.push(wire::decode(&frame, &b.config().auth).expect("our frame"))
                }
                e => other.push(e),
            }
        }
        (sent, other)
    }

    fn of_type<'m>(sent: &'m [Message], t: &str) -> Vec<&'m Message> {
        sent.iter().filter(|m| m.msg_type() == Some(t)).collect()
    }

    /// `b` with a heartbeat peer "a" that is up and active.
    fn setup(groups: &[(&str, &str)]) -> (NodeCore, Heartbeat, Instant) {
        let t0 = crate::clock::now();
        let cfg = config(groups);
        let mut b = core("b", &cfg, t0);
        let mut hb = Heartbeat { seq: 0, cfg };
        let first = hb.status();
        feed(&mut b, t0, &first);
        (b, hb, t0)
    }

    #[test]
    fn reqnodes_is_answered_with_repnodes_as_heartbeat_writes_it() {
        let (mut b, mut hb, t0) = setup(&[("a", "192.0.2.100")]);
        let req = hb.frame(&[("t", "reqnodes"), ("dest", "b")]);
        let (sent, _) = feed(&mut b, t0, &req);
        let rep = of_type(&sent, "repnodes");
        assert_eq!(rep.len(), 1, "{sent:?}");
        assert_eq!(rep[0].fields[0].name, "dest");
        assert_eq!(rep[0].get_str("dest"), Some("a"));
        assert_eq!(rep[0].get_str("nodelist"), Some("a b "));
        assert_eq!(rep[0].get_str("delnodelist"), Some(" "));
        // addressed to another node: not ours to answer
        let other = hb.frame(&[("t", "reqnodes"), ("dest", "c")]);
        assert!(of_type(&feed(&mut b, t0, &other).0, "repnodes").is_empty());
    }

    #[test]
    fn every_tenth_frame_is_acknowledged_and_gaps_are_asked_for() {
        let (mut b, mut hb, t0) = setup(&[("a", "192.0.2.100")]);
        let mut acks = Vec::new();
        for _ in 2..=20 {
            let f = hb.status();
            let (sent, _) = feed(&mut b, t0, &f);
            acks.extend(
                of_type(&sent, "NS_ackmsg")
                    .iter()
                    .map(|m| m.get_str("ackseq").unwrap().to_string()),
            );
        }
        assert_eq!(acks, ["a", "14"]);
        // seqs 21 and 22 are lost: 23 arrives, then both are asked for after a delay
        hb.seq += 2;
        let f = hb.status();
        feed(&mut b, t0, &f);
        let due = b.wake().unwrap();
        assert!(due > t0 && due <= t0 + ms(100), "{due:?}");
        let mut out = Vec::new();
        b.step(t0 + ms(100), Input::Timer, &mut out);
        let (sent, _) = split(&b, out);
        let asked: Vec<_> = of_type(&sent, "NS_rexmit")
            .iter()
            .map(|m| m.get_str("firstseq").unwrap().to_string())
            .collect();
        assert_eq!(asked, ["21", "22"]);
    }

    #[test]
    fn a_retransmission_request_gets_the_original_frame_or_a_nak() {
        let (mut b, mut hb, t0) = setup(&[("a", "192.0.2.100")]);
        let mut out = Vec::new();
        for n in 1..=50 {
            b.step(t0 + ms(n), Input::Timer, &mut out);
        }
        let ours: Vec<(u64, Vec<u8>)> = out
            .iter()
            .filter_map(|e| match e {
                Effect::Send { frame, .. } => {
                    let m = wire::decode(frame, &b.config().auth).ok()?;
                    let seq = wire::parse_hex_u64(m.get("seq")?)?;
                    Some((seq, frame.clone()))
                }
                _ => None,
            })
            .collect();
        let (seq, original) = ours.last().expect("a sequenced frame").clone();
        let ask = hb.frame(&[
            ("t", "NS_rexmit"),
            ("dest", "b"),
            ("firstseq", &seq.to_string()),
            ("lastseq", &seq.to_string()),
        ]);
        let mut out = Vec::new();
        b.step(
            t0 + ms(60),
            Input::Frame {
                link: 0,
                from: None,
                frame: &ask,
            },
            &mut out,
        );
        assert!(
            out.iter()
                .any(|e| matches!(e, Effect::Send { frame, .. } if *frame == original)),
            "the original bytes again"
        );
        let gone = hb.frame(&[
            ("t", "NS_rexmit"),
            ("dest", "b"),
            ("firstseq", "999"),
            ("lastseq", "999"),
        ]);
        let (sent, _) = feed(&mut b, t0 + ms(70), &gone);
        let nak = of_type(&sent, "NS_nak_rexmit");
        assert_eq!(nak.len(), 1);
        assert_eq!(nak[0].get_str("firstseq"), Some("3e7"));
    }

    #[test]
    fn starting_is_answered_with_what_we_hold_and_the_peers_group_stays_there() {
        let (mut b, mut hb, t0) = setup(&[("a", "192.0.2.100")]);
        let starting = hb.frame(&[("t", "starting")]);
        let (sent, _) = feed(&mut b, t0, &starting);
        let res = of_type(&sent, "resource");
        let last = res.last().expect("a resource message");
        assert_eq!(last.get_str("rsc_hold"), Some("none"));
        assert_eq!(last.get_str("rtype"), Some("full"));
        assert_eq!(last.get_str("isstable"), Some("1"));
        let holds = hb.frame(&[
            ("t", "resource"),
            ("rsc_hold", "local"),
            ("rtype", "full"),
            ("isstable", "1"),
        ]);
        let (_, done) = feed(&mut b, t0, &holds);
        assert!(
            !done.iter().any(|e| matches!(e, Effect::Start(_))),
            "{done:?}"
        );
        assert_eq!(b.manager().owner(0).as_deref(), Some("a"));
    }

    #[test]
    fn shutdone_hands_the_group_over_at_once_not_after_deadtime() {
        let (mut b, mut hb, t0) = setup(&[("a", "192.0.2.100")]);
        let holds = hb.frame(&[
            ("t", "resource"),
            ("rsc_hold", "local"),
            ("rtype", "full"),
            ("isstable", "1"),
        ]);
        feed(&mut b, t0, &holds);
        // Said before releasing: nothing starts yet.
        let giving_up = hb.frame(&[
            ("t", "resource"),
            ("rsc_hold", "none"),
            ("rtype", "full"),
            ("isstable", "0"),
            ("info", "shutdown"),
        ]);
        let (_, done) = feed(&mut b, t0, &giving_up);
        assert!(
            !done.iter().any(|e| matches!(e, Effect::Start(_))),
            "{done:?}"
        );
        let shutdone = hb.frame(&[("t", "shutdone"), ("st", "dead")]);
        let (_, done) = feed(&mut b, t0 + ms(1), &shutdone);
        assert!(done.contains(&Effect::Start(0)), "{done:?}");
    }

    #[test]
    fn the_peers_standby_is_answered_other_and_its_done_starts_the_group() {
        let (mut b, mut hb, t0) = setup(&[("a", "192.0.2.100")]);
        let holds = hb.frame(&[
            ("t", "resource"),
            ("rsc_hold", "local"),
            ("rtype", "full"),
            ("isstable", "1"),
        ]);
        feed(&mut b, t0, &holds);
        let me = hb.frame(&[("t", "ask_resources"), ("rsc_hold", "all"), ("info", "me")]);
        let (sent, done) = feed(&mut b, t0, &me);
        let other = of_type(&sent, "ask_resources");
        assert_eq!(other.len(), 1, "{sent:?}");
        assert_eq!(other[0].get_str("info"), Some("other"));
        assert!(!done.iter().any(|e| matches!(e, Effect::Start(_))));
        let standby = hb.frame(&[
            ("t", "resource"),
            ("rsc_hold", "none"),
            ("rtype", "full"),
            ("isstable", "0"),
            ("info", "standby"),
        ]);
        let (_, done) = feed(&mut b, t0, &standby);
        assert!(
            !done.iter().any(|e| matches!(e, Effect::Start(_))),
            "released only at done"
        );
        let released = hb.frame(&[
            ("t", "ask_resources"),
            ("rsc_hold", "all"),
            ("info", "done"),
        ]);
        let (_, done) = feed(&mut b, t0, &released);
        assert!(done.contains(&Effect::Start(0)), "{done:?}");
        // Running: our own done follows.
        let mut out = Vec::new();
        b.step(
            t0 + ms(1),
            Input::OpFinished(OpFinished {
                group: 0,
                start: true,
                result: Ok(()),
            }),
            &mut out,
        );
        let (sent, _) = split(&b, out);
        let ours = of_type(&sent, "ask_resources");
        assert_eq!(ours.len(), 1, "{sent:?}");
        assert_eq!(ours[0].get_str("info"), Some("done"));
    }

    #[test]
    fn an_hbd_peer_hears_none_of_it() {
        let t0 = crate::clock::now();
        let cfg = config(&[("a", "192.0.2.100")]);
        let mut pair = Pair::new(&cfg, t0);
        pair.run(t0, t0 + ms(300));
        for i in 0..2 {
            assert!(
                !pair.nodes[i].classic.any(),
                "node {i} took its hbd peer for heartbeat"
            );
        }
    }
}
