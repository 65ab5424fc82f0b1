//! Ownership scenarios on a paused clock with resources that take 1 ms: boot, failover,
//! auto_failback on/off/legacy, standby and takeover from either side, commands while
//! unstable, failed start, failed stop, a healed partition and a killed-and-restarted daemon.
//! Every scenario checks from the trace that a group never ran on both nodes while they
//! could hear each other.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use hbd::config::AutoFailback;
use hbd::control::protocol::{GroupClass, Request};
use hbd::daemon::node::NodeEvent;
use hbd::media::memory::MemoryNet;
use hbd::membership::liveness::PeerState;
use hbd::membership::reports::GROUPS_FIELD;
use tokio::time::Instant;

use crate::harness::*;

struct Lab {
    net: MemoryNet,
    trace: Trace,
    cfg: hbd::config::Config,
    p: Option<SimNode>,
    b: Option<SimNode>,
    rp: Arc<FakeRunner>,
    t0: Instant,
}

impl Lab {
    async fn boot(policy: AutoFailback) -> Lab {
        let net = MemoryNet::new();
        let trace = Trace::default();
        let mut cfg = config(&["p", "b"], 2, fast_timing(), keys("s3cret"));
        cfg.auto_failback = policy;
        cfg.groups = vec![group("p", "vip1")];
        let rp = FakeRunner::new("p", &trace, 1);
        let rb = FakeRunner::new("b", &trace, 1);
        let t0 = Instant::now();
        let p = SimNode::start_with(&net, "p", &cfg, 1, rp.clone());
        let b = SimNode::start_with(&net, "b", &cfg, 1, rb);
        let mut lab = Lab {
            net,
            trace,
            cfg,
            p: Some(p),
            b: Some(b),
            rp,
            t0,
        };
        lab.settle().await;
        assert!(
            lab.trace.last("p", 0, "start_end").is_some(),
            "{:?}",
            lab.trace.entries()
        );
        assert!(lab.trace.last("b", 0, "start_begin").is_none());
        lab
    }

    async fn settle(&mut self) {
        tokio::time::sleep(ms(200)).await;
    }

    fn p(&self) -> &SimNode {
        self.p.as_ref().unwrap()
    }

    fn b(&self) -> &SimNode {
        self.b.as_ref().unwrap()
    }

    /// No overlap at all between `from` and now.
    fn assert_exclusive_since(&self, from: Instant) {
        let overlap = self.trace.overlap("p", "b", 0, (from, Instant::now()));
        assert!(
            overlap.is_zero(),
            "group held on both nodes for {overlap:?}: {:#?}",
            self.trace.entries()
        );
    }

    async fn state(&self, node: &SimNode) -> String {
        node.status().await.groups[0].state.clone()
    }

    async fn shutdown(mut self) {
        if let Some(p) = self.p.take() {
            p.kill(&self.net).await;
        }
        if let Some(b) = self.b.take() {
            b.kill(&self.net).await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn boot_puts_the_group_on_the_preferred_node_only() {
    let lab = Lab::boot(AutoFailback::On).await;
    assert_eq!(lab.state(lab.p()).await, "running");
    assert_eq!(lab.state(lab.b()).await, "stopped");
    let st = lab.b().status().await;
    assert_eq!(st.groups[0].owner.as_deref(), Some("p"));
    lab.assert_exclusive_since(lab.t0);
    lab.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn node_death_moves_the_group_after_deadtime() {
    let mut lab = Lab::boot(AutoFailback::On).await;
    let killed = Instant::now();
    lab.p.take().unwrap().kill(&lab.net).await;
    lab.settle().await;
    let started = lab.trace.last("b", 0, "start_end").expect("b took over");
    let took = started - killed;
    // Deadtime (30 ms) after p's last heartbeat, plus the 1 ms start.
    assert!(took <= ms(31), "took over {took:?} after the kill");
    assert!(took >= ms(21), "took over too early: {took:?}");
    assert_eq!(lab.state(lab.b()).await, "running");
    lab.shutdown().await;
}

async fn restart_p(lab: &mut Lab, left_running: bool) {
    lab.rp = if left_running {
        FakeRunner::left_running("p", &lab.trace, 1)
    } else {
        FakeRunner::new("p", &lab.trace, 1)
    };
    lab.p = Some(SimNode::start_with(
        &lab.net,
        "p",
        &lab.cfg,
        2,
        lab.rp.clone(),
    ));
    lab.settle().await;
}

#[tokio::test(start_paused = true)]
async fn failback_follows_auto_failback() {
    for (policy, back) in [
        (AutoFailback::On, true),
        (AutoFailback::Legacy, true),
        (AutoFailback::Off, false),
    ] {
        let mut lab = Lab::boot(policy).await;
        lab.p.take().unwrap().kill(&lab.net).await;
        lab.trace.crash("p", 1);
        lab.settle().await;
        assert_eq!(lab.state(lab.b()).await, "running", "{policy:?}");
        let rejoin = Instant::now();
        restart_p(&mut lab, false).await;
        let (on_p, on_b) = (lab.state(lab.p()).await, lab.state(lab.b()).await);
        if back {
            assert_eq!(
                (on_p.as_str(), on_b.as_str()),
                ("running", "stopped"),
                "{policy:?}"
            );
        } else {
            assert_eq!(
                (on_p.as_str(), on_b.as_str()),
                ("stopped", "running"),
                "{policy:?}"
            );
        }
        lab.assert_exclusive_since(rejoin);
        lab.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn standby_and_takeover_from_either_side() {
    let mut lab = Lab::boot(AutoFailback::On).await;
    let t = Instant::now();
    // Standby on the active node: one message, the 1 ms stop and the 1 ms start.
    let r = lab
        .p()
        .request(Request::Standby {
            class: GroupClass::All,
        })
        .await;
    assert!(r.ok, "{r:?}");
    lab.settle().await;
    assert_eq!(lab.state(lab.b()).await, "running");
    let stopped = lab.trace.last("p", 0, "stop_end").unwrap();
    let started = lab.trace.last("b", 0, "start_end").unwrap();
    assert!(started - t <= ms(3), "planned move took {:?}", started - t);
    assert!(started >= stopped);
    // Takeover from p (local from p's side): one round trip.
    let t2 = Instant::now();
    let r = lab
        .p()
        .request(Request::Takeover {
            class: GroupClass::Local,
        })
        .await;
    assert!(r.ok, "{r:?}");
    lab.settle().await;
    assert_eq!(lab.state(lab.p()).await, "running");
    let back = lab.trace.last("p", 0, "start_end").unwrap();
    assert!(back - t2 <= ms(3), "takeover took {:?}", back - t2);
    // Takeover from b ("foreign" from b's side) and standby from b.
    lab.b()
        .request(Request::Takeover {
            class: GroupClass::Foreign,
        })
        .await;
    lab.settle().await;
    assert_eq!(lab.state(lab.b()).await, "running");
    lab.b()
        .request(Request::Standby {
            class: GroupClass::All,
        })
        .await;
    lab.settle().await;
    assert_eq!(lab.state(lab.p()).await, "running");
    assert_eq!(lab.state(lab.b()).await, "stopped");
    lab.assert_exclusive_since(lab.t0);
    lab.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn request_while_unstable_is_queued_and_shown() {
    let mut lab = Lab::boot(AutoFailback::On).await;
    let r = lab
        .p()
        .request(Request::Standby {
            class: GroupClass::All,
        })
        .await;
    assert!(r.ok);
    // Immediately ask for it back: p is stopping, so it is queued, not dropped.
    let r = lab
        .p()
        .request(Request::Takeover {
            class: GroupClass::All,
        })
        .await;
    assert!(r.ok, "{r:?}");
    let msg = r.message.unwrap();
    assert!(msg.contains("queued"), "{msg}");
    let st = lab.p().status().await;
    assert_eq!(st.queued.len(), 1, "{st:?}");
    assert!(!st.unstable.is_empty());
    lab.settle().await;
    let st = lab.p().status().await;
    assert!(st.queued.is_empty());
    assert_eq!(st.groups[0].state, "running", "the queued takeover ran");
    lab.assert_exclusive_since(lab.t0);
    lab.shutdown().await;
}

/// The pair p/b with one group preferring p, whose start fails on p; with `stuck_rollback`
/// the rollback of that start cannot stop what it started. (Not `Lab::boot`, which asserts
/// that p started the group.)
fn pair_whose_start_fails_on_p(stuck_rollback: bool) -> (MemoryNet, Trace, SimNode, SimNode) {
    let net = MemoryNet::new();
    let trace = Trace::default();
    let mut cfg = config(&["p", "b"], 1, fast_timing(), keys("s3cret"));
    cfg.auto_failback = AutoFailback::On;
    cfg.groups = vec![group("p", "vip1")];
    let rp = FakeRunner::new("p", &trace, 1);
    rp.fail_start.store(true, Ordering::SeqCst);
    rp.stuck_rollback.store(stuck_rollback, Ordering::SeqCst);
    let rb = FakeRunner::new("b", &trace, 1);
    let p = SimNode::start_with(&net, "p", &cfg, 1, rp);
    let b = SimNode::start_with(&net, "b", &cfg, 1, rb);
    (net, trace, p, b)
}

#[tokio::test(start_paused = true)]
async fn failed_start_lets_the_peer_take_the_group() {
    let (net, _trace, p, b) = pair_whose_start_fails_on_p(false);
    tokio::time::sleep(ms(200)).await;
    assert_eq!(p.status().await.groups[0].state, "failed");
    assert_eq!(b.status().await.groups[0].state, "running");
    p.kill(&net).await;
    b.kill(&net).await;
}

/// When the pace setter's status changes who should hold a group, the follower answers with
/// one status that already says so, not a stale pacing reply followed by a fresh one.
#[tokio::test(start_paused = true)]
async fn an_ownership_change_is_answered_by_one_fresh_status() {
    let mut lab = Lab::boot(AutoFailback::On).await;
    let recording = record(&lab.net, &link_name(0));
    // b (the lower name) paces p; b takes the group over.
    lab.b()
        .request(Request::Takeover {
            class: GroupClass::All,
        })
        .await;
    lab.settle().await;
    assert_eq!(lab.state(lab.b()).await, "running");
    let sends: Vec<(Instant, String)> = recording
        .frames()
        .into_iter()
        .filter(|(_, from, _)| from == "p")
        .map(|(t, _, frame)| {
            let msg = hbd::membership::wire::decode(&frame, &lab.cfg.auth).expect("decodes");
            let text = msg.get_str(GROUPS_FIELD).expect("groups field");
            let reports = hbd::manager::decode_reports(text).expect("reports");
            (t, reports[0].placement.target.clone())
        })
        .collect();
    let first_new = sends
        .iter()
        .find(|(_, target)| target == "b")
        .expect("p reported the new placement")
        .0;
    let at_that_instant: Vec<&String> = sends
        .iter()
        .filter(|(t, _)| *t == first_new)
        .map(|(_, target)| target)
        .collect();
    assert_eq!(at_that_instant, ["b"], "{sends:?}");
    lab.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn stuck_rollback_holds_the_group_and_the_peer_never_starts_it() {
    let (net, trace, p, b) = pair_whose_start_fails_on_p(true);
    tokio::time::sleep(ms(500)).await;
    assert!(
        trace.last("p", 0, "start_fail").is_some(),
        "{:?}",
        trace.entries()
    );
    assert_eq!(p.status().await.groups[0].state, "stop_failed");
    assert_eq!(b.status().await.groups[0].state, "stopped");
    assert!(trace.last("b", 0, "start_begin").is_none());
    assert_eq!(b.status().await.groups[0].owner.as_deref(), Some("p"));
    p.kill(&net).await;
    b.kill(&net).await;
}

#[tokio::test(start_paused = true)]
async fn failed_stop_holds_the_group_and_the_peer_never_starts_it() {
    let mut lab = Lab::boot(AutoFailback::On).await;
    lab.rp.fail_stop.store(true, Ordering::SeqCst);
    lab.p()
        .request(Request::Standby {
            class: GroupClass::All,
        })
        .await;
    lab.settle().await;
    tokio::time::sleep(ms(500)).await;
    assert_eq!(lab.state(lab.p()).await, "stop_failed");
    assert_eq!(lab.state(lab.b()).await, "stopped");
    assert!(lab.trace.last("b", 0, "start_begin").is_none());
    assert_eq!(lab.b().status().await.groups[0].owner.as_deref(), Some("p"));
    lab.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn healed_partition_resolves_within_one_keepalive() {
    let mut lab = Lab::boot(AutoFailback::On).await;
    for l in 0..2 {
        lab.net.cut("p", &link_name(l));
    }
    lab.settle().await;
    assert_eq!(lab.state(lab.p()).await, "running");
    assert_eq!(
        lab.state(lab.b()).await,
        "running",
        "b took over during the partition"
    );
    let healed = Instant::now();
    for l in 0..2 {
        lab.net.restore("p", &link_name(l));
    }
    lab.settle().await;
    assert_eq!(
        lab.state(lab.p()).await,
        "running",
        "preferred node keeps it"
    );
    assert_eq!(lab.state(lab.b()).await, "stopped");
    let overlap = lab.trace.overlap("p", "b", 0, (healed, Instant::now()));
    assert!(
        overlap <= ms(10) + ms(1),
        "both held it {overlap:?} after the heal"
    );
    let announced = lab
        .trace
        .entries()
        .iter()
        .any(|e| e.node == "p" && e.event == "announce" && e.at >= healed);
    assert!(
        announced,
        "the keeper re-announces: {:#?}",
        lab.trace.entries()
    );
    lab.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_healed_split_brain_is_logged_on_both_sides_with_both_views() {
    for (policy, keeper) in [(AutoFailback::On, "p"), (AutoFailback::Off, "b")] {
        let mut lab = Lab::boot(policy).await;
        for l in 0..2 {
            lab.net.cut("p", &link_name(l));
        }
        lab.settle().await;
        lab.p.as_mut().unwrap().drain();
        lab.b.as_mut().unwrap().drain();
        let healed = Instant::now();
        for l in 0..2 {
            lab.net.restore("p", &link_name(l));
        }
        lab.settle().await;
        let mut views = Vec::new();
        for node in [lab.p.as_mut().unwrap(), lab.b.as_mut().unwrap()] {
            let found: Vec<_> = node
                .drain()
                .into_iter()
                .filter_map(|(at, e)| match e {
                    NodeEvent::SplitBrain {
                        ours,
                        theirs,
                        keeper,
                        ..
                    } => Some((at, ours, theirs, keeper)),
                    _ => None,
                })
                .collect();
            assert_eq!(found.len(), 1, "{policy:?}: {found:?}");
            let (at, ours, theirs, k) = found.into_iter().next().unwrap();
            assert_eq!(k, keeper, "{policy:?}");
            assert!(
                at - healed <= ms(10) + ms(1),
                "{policy:?}: found {:?} after the heal",
                at - healed
            );
            views.push((ours, theirs));
        }
        assert_ne!(views[0].0, views[0].1, "{policy:?}: {views:?}");
        let loser = if keeper == "p" { "b" } else { "p" };
        assert_eq!(
            lab.state(if keeper == "p" { lab.p() } else { lab.b() })
                .await,
            "running"
        );
        assert_eq!(
            lab.state(if loser == "p" { lab.p() } else { lab.b() })
                .await,
            "stopped"
        );
        let overlap = lab.trace.overlap("p", "b", 0, (healed, Instant::now()));
        assert!(
            overlap <= ms(10) + ms(1),
            "{policy:?}: both held it {overlap:?} after the heal"
        );
        let announced = lab
            .trace
            .entries()
            .iter()
            .any(|e| e.node == keeper && e.event == "announce" && e.at >= healed);
        assert!(announced, "{policy:?}: the keeper re-announces");
        lab.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn killed_daemon_restarted_adopts_or_releases_without_a_gap() {
    let mut lab = Lab::boot(AutoFailback::On).await;
    // The daemon dies but its VIP stays configured in the kernel.
    lab.p.take().unwrap().kill(&lab.net).await;
    lab.settle().await;
    assert_eq!(lab.state(lab.b()).await, "running");
    let restarted = Instant::now();
    restart_p(&mut lab, true).await;
    assert_eq!(lab.state(lab.p()).await, "running");
    assert_eq!(lab.state(lab.b()).await, "stopped");
    // p never stopped what it left behind: no gap on its side.
    assert!(
        lab.trace
            .entries()
            .iter()
            .all(|e| !(e.node == "p" && e.event == "stop_begin" && e.at >= restarted)),
        "{:#?}",
        lab.trace.entries()
    );
    let p_events = lab.p.as_mut().unwrap().drain();
    assert!(p_events.iter().any(|(_, e)| matches!(
        e,
        NodeEvent::Liveness(hbd::membership::liveness::LivenessEvent::PeerState {
            to: PeerState::Active,
            ..
        })
    )));
    lab.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn graceful_stop_hands_the_group_over_at_once() {
    let mut lab = Lab::boot(AutoFailback::On).await;
    let t = Instant::now();
    lab.p.take().unwrap().stop(&lab.net).await;
    lab.settle().await;
    let started = lab.trace.last("b", 0, "start_end").expect("b took over");
    // One message after p's 1 ms stop, plus b's 1 ms start: not a deadtime.
    assert!(started - t <= ms(3), "took {:?}", started - t);
    assert!(lab.trace.last("p", 0, "stop_end").unwrap() <= started);
    lab.assert_exclusive_since(lab.t0);
    assert_eq!(lab.state(lab.b()).await, "running");
    lab.shutdown().await;
}

/// ipfail built in: the holder that reaches fewer ping nodes than its peer for
/// `ping_hysteresis` hands its group over; equal reach moves nothing; once reach is even
/// again and the take-back hold (4 × the hysteresis) is served, auto_failback `on` brings
/// it back. The group never runs on both nodes.
#[tokio::test(start_paused = true)]
async fn a_lost_upstream_moves_the_group_to_the_peer_and_back() {
    let mut lab = Lab::boot(AutoFailback::On).await;
    let hysteresis = lab.cfg.ping_hysteresis;
    lab.p().set_reach(2, 2);
    lab.b().set_reach(2, 2);
    lab.settle().await;
    assert!(
        lab.trace.last("b", 0, "start_begin").is_none(),
        "equal reach moves nothing: {:#?}",
        lab.trace.entries()
    );
    let lost = Instant::now();
    lab.p().set_reach(1, 2);
    lab.settle().await;
    let moved = lab
        .trace
        .last("b", 0, "start_end")
        .expect("b took the group");
    let took = moved - lost;
    assert!(
        took >= hysteresis && took <= hysteresis + ms(10),
        "moved {took:?} after the loss (hysteresis {hysteresis:?})"
    );
    assert_eq!(lab.state(lab.p()).await, "stopped");
    let st = lab.p().status().await;
    assert!(st.groups[0].epoch > 0);
    // The upstream returns: the group comes back once the hold is served, not before.
    let restored = Instant::now();
    lab.p().set_reach(2, 2);
    tokio::time::sleep(hysteresis * 4 + ms(100)).await;
    let back = lab.trace.last("p", 0, "start_end").expect("p took it back");
    assert!(
        back - restored >= hysteresis * 4,
        "back {:?} after the restore, before the hold",
        back - restored
    );
    assert_eq!(lab.state(lab.p()).await, "running");
    assert_eq!(lab.state(lab.b()).await, "stopped");
    lab.assert_exclusive_since(lab.t0);
    lab.shutdown().await;
}

/// With auto_failback `off` a group moved for reachability stays where it went.
#[tokio::test(start_paused = true)]
async fn with_auto_failback_off_a_group_moved_for_reach_stays() {
    let mut lab = Lab::boot(AutoFailback::Off).await;
    let hysteresis = lab.cfg.ping_hysteresis;
    lab.p().set_reach(1, 2);
    lab.b().set_reach(2, 2);
    lab.settle().await;
    assert!(
        lab.trace.last("b", 0, "start_end").is_some(),
        "b took the group"
    );
    lab.p().set_reach(2, 2);
    tokio::time::sleep(hysteresis * 20).await;
    assert_eq!(lab.state(lab.b()).await, "running");
    assert_eq!(lab.state(lab.p()).await, "stopped");
    lab.assert_exclusive_since(lab.t0);
    lab.shutdown().await;
}
