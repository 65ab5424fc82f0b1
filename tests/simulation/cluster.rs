#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]
//! Membership scenarios: join, death at deadtime, warntime, wrong key, replay, restart with
//! a higher generation, one of two media lost, three nodes.

use std::ops::Bound::{Excluded, Unbounded};

use hbd::daemon::node::NodeEvent;
use hbd::media::memory::MemoryNet;
use hbd::membership::liveness::{LinkState, LivenessEvent, PeerState};
use tokio::time::Instant;

use crate::harness::*;

#[tokio::test(start_paused = true)]
async fn two_nodes_join_and_go_active() {
    let net = MemoryNet::new();
    let cfg = config(&["a", "b"], 2, fast_timing(), keys("s3cret"));
    let mut a = SimNode::start(&net, "a", &cfg, 100);
    let mut b = SimNode::start(&net, "b", &cfg, 200);
    assert!(
        a.wait_for(ms(50), peer_became("b", PeerState::Active))
            .await
            .is_some()
    );
    assert!(
        b.wait_for(ms(50), peer_became("a", PeerState::Active))
            .await
            .is_some()
    );
    let st = a.status().await;
    assert_eq!(st.state, "active");
    let peer = st.nodes.iter().find(|n| n.name == "b").unwrap();
    assert_eq!(peer.status, "up");
    assert!(peer.links.iter().all(|l| l.status == "up"), "{peer:?}");
    assert_eq!(st.counters.bad_auth, 0);
    // Each status travels on both links: one copy accepted, the other a duplicate.
    assert!(st.counters.duplicates > 0);
    a.kill(&net).await;
    b.kill(&net).await;
}

#[tokio::test(start_paused = true)]
async fn silent_peer_is_declared_dead_at_deadtime() {
    let net = MemoryNet::new();
    let cfg = config(&["a", "b"], 1, fast_timing(), keys("s3cret"));
    let (mut a, b) = pair_active(&net, &cfg, 1).await;
    tokio::time::sleep(ms(55)).await;
    // Cut b's link: its last heartbeat arrived at most one keepalive ago.
    let cut_at = tokio::time::Instant::now();
    net.cut("b", &link_name(0));
    let dead_at = a
        .wait_for(ms(200), peer_became("b", PeerState::Dead))
        .await
        .expect("b declared dead");
    let after_cut = dead_at - cut_at;
    assert!(
        after_cut <= ms(30),
        "declared dead {after_cut:?} after the cut"
    );
    assert!(
        after_cut >= ms(20),
        "declared dead too early: {after_cut:?}"
    );
    // Exactly deadtime after the last heartbeat: find the reason text.
    let st = a.status().await;
    let peer = st.nodes.iter().find(|n| n.name == "b").unwrap();
    assert_eq!(peer.status, "dead");
    assert_eq!(peer.links[0].status, "dead");
    b.kill(&net).await;
    a.kill(&net).await;
}

#[tokio::test(start_paused = true)]
async fn late_heartbeat_is_reported_with_its_interval() {
    let net = MemoryNet::new();
    // On a paused clock heartbeats are exactly 10 ms apart: one lost makes a 20 ms gap,
    // which must exceed warntime to be reported.
    let mut timing = fast_timing();
    timing.warntime = ms(15);
    let cfg = config(&["a", "b"], 1, timing, keys("s3cret"));
    let (mut a, b) = pair_active(&net, &cfg, 1).await;
    tokio::time::sleep(ms(3)).await;
    net.cut("b", &link_name(0));
    tokio::time::sleep(ms(12)).await;
    net.restore("b", &link_name(0));
    let mut interval = None;
    a.wait_for(ms(50), |e| match e {
        NodeEvent::Liveness(LivenessEvent::LateHeartbeat {
            node,
            interval: i,
            warntime,
        }) if node == "b" => {
            assert_eq!(*warntime, ms(15));
            interval = Some(*i);
            true
        }
        _ => false,
    })
    .await
    .expect("late heartbeat reported");
    let interval = interval.unwrap();
    assert!(interval > ms(15) && interval < ms(30), "{interval:?}");
    let st = a.status().await;
    let peer = st.nodes.iter().find(|n| n.name == "b").unwrap();
    assert_eq!(peer.status, "up", "a late heartbeat is not a death");
    assert_eq!(peer.late_heartbeats, 1);
    b.kill(&net).await;
    a.kill(&net).await;
}

#[tokio::test(start_paused = true)]
async fn peer_with_wrong_key_is_absent_and_counted() {
    let net = MemoryNet::new();
    let cfg = config(&["a", "b"], 1, fast_timing(), keys("right"));
    let wrong = config(&["a", "b"], 1, fast_timing(), keys("wrong"));
    let mut a = SimNode::start(&net, "a", &cfg, 1);
    let b = SimNode::start(&net, "b", &wrong, 1);
    let dead = a
        .wait_for(ms(300), peer_became("b", PeerState::Dead))
        .await
        .expect("b never authenticates, so it dies at initdead");
    let st = a.status().await;
    assert!(st.counters.bad_auth > 5, "{:?}", st.counters);
    assert_eq!(st.counters.accepted, 0);
    assert_eq!(st.nodes[1].status, "dead");
    assert!(!a.drain().iter().any(|(_, e)| matches!(
        e,
        NodeEvent::Liveness(LivenessEvent::PeerState { to, .. }) if to.is_alive()
    )));
    let _ = dead;
    b.kill(&net).await;
    a.kill(&net).await;
}

#[tokio::test(start_paused = true)]
async fn replayed_stream_does_not_revive_a_dead_peer() {
    let net = MemoryNet::new();
    let cfg = config(&["a", "b"], 1, fast_timing(), keys("s3cret"));
    let mut tap = net.tap(&link_name(0));
    let (mut a, b) = pair_active(&net, &cfg, 7).await;
    tokio::time::sleep(ms(100)).await;
    b.kill(&net).await;
    assert!(
        a.wait_for(ms(100), peer_became("b", PeerState::Dead))
            .await
            .is_some()
    );
    // Replay everything b ever sent, at the keepalive rate.
    let mut recorded = Vec::new();
    while let Ok((from, frame)) = tap.try_recv() {
        if from == "b" {
            recorded.push(frame);
        }
    }
    assert!(recorded.len() > 10);
    for frame in &recorded {
        net.inject("b", &link_name(0), frame);
        tokio::time::sleep(ms(10)).await;
    }
    let st = a.status().await;
    assert_eq!(st.nodes[1].status, "dead");
    assert!(
        st.counters.replayed as usize >= recorded.len(),
        "{:?}",
        st.counters
    );
    assert!(!a.drain().iter().any(|(_, e)| matches!(
        e,
        NodeEvent::Liveness(LivenessEvent::PeerState { to, .. }) if to.is_alive()
    )));
    a.kill(&net).await;
}

#[tokio::test(start_paused = true)]
async fn restart_with_higher_generation_is_accepted_lower_is_refused() {
    let net = MemoryNet::new();
    let cfg = config(&["a", "b"], 1, fast_timing(), keys("s3cret"));
    let (mut a, b) = pair_active(&net, &cfg, 10).await;
    b.kill(&net).await;
    assert!(
        a.wait_for(ms(100), peer_became("b", PeerState::Dead))
            .await
            .is_some()
    );
    // A node claiming b with an older generation (a replayed or stale boot) is refused.
    let old = SimNode::start(&net, "b", &cfg, 9);
    tokio::time::sleep(ms(100)).await;
    assert_eq!(a.status().await.nodes[1].status, "dead");
    assert!(a.status().await.counters.replayed > 0);
    old.kill(&net).await;
    // The real b restarts with generation + 1: accepted at once.
    let b2 = SimNode::start(&net, "b", &cfg, 11);
    let restarted = a
        .wait_for(
            ms(100),
            |e| matches!(e, NodeEvent::PeerRestarted { node, generation: 11 } if node == "b"),
        )
        .await;
    assert!(restarted.is_some());
    assert!(a.wait_for(ms(100), peer_alive("b")).await.is_some());
    b2.kill(&net).await;
    a.kill(&net).await;
}

#[tokio::test(start_paused = true)]
async fn peer_generations_are_persisted_and_flushed_on_a_clean_stop() {
    let net = MemoryNet::new();
    let cfg = config(&["a", "b"], 1, fast_timing(), keys("s3cret"));
    let dir = tempfile::tempdir().unwrap();
    let mut a = SimNode::start_persisting(&net, "a", &cfg, 1, dir.path().to_path_buf());
    let b = SimNode::start(&net, "b", &cfg, 10);
    assert!(a.wait_for(ms(100), peer_alive("b")).await.is_some());
    b.kill(&net).await;
    let b2 = SimNode::start(&net, "b", &cfg, 11);
    assert!(
        a.wait_for(
            ms(100),
            |e| matches!(e, NodeEvent::PeerRestarted { node, generation: 11 } if node == "b"),
        )
        .await
        .is_some()
    );
    b2.kill(&net).await;
    a.stop(&net).await;
    let stored = hbd::membership::generation::load_peer_generations(dir.path()).unwrap();
    assert_eq!(stored.get("b"), Some(&11), "{stored:?}");
}

#[tokio::test(start_paused = true)]
async fn losing_one_of_two_media_keeps_the_peer_alive() {
    let net = MemoryNet::new();
    let cfg = config(&["a", "b"], 2, fast_timing(), keys("s3cret"));
    let (mut a, b) = pair_active(&net, &cfg, 1).await;
    net.cut("b", &link_name(1));
    let link_dead = a
        .wait_for(ms(100), |e| {
            matches!(e, NodeEvent::Liveness(LivenessEvent::LinkState { node, link, to: LinkState::Dead, .. })
                if node == "b" && link == "link1")
        })
        .await;
    assert!(link_dead.is_some());
    tokio::time::sleep(ms(200)).await;
    let st = a.status().await;
    let peer = &st.nodes[1];
    assert_eq!(peer.status, "up");
    assert_eq!(peer.links[0].status, "up");
    assert_eq!(peer.links[1].status, "dead");
    assert!(!a.drain().iter().any(|(_, e)| matches!(
        e,
        NodeEvent::Liveness(LivenessEvent::PeerState {
            to: PeerState::Dead,
            ..
        })
    )));
    // The link comes back.
    net.restore("b", &link_name(1));
    let link_up = a
        .wait_for(ms(50), |e| {
            matches!(e, NodeEvent::Liveness(LivenessEvent::LinkState { link, to: LinkState::Up, .. })
                if link == "link1")
        })
        .await;
    assert!(link_up.is_some());
    b.kill(&net).await;
    a.kill(&net).await;
}

#[tokio::test(start_paused = true)]
async fn three_nodes_one_dies() {
    let net = MemoryNet::new();
    let cfg = config(&["a", "b", "c"], 1, fast_timing(), keys("s3cret"));
    let mut a = SimNode::start(&net, "a", &cfg, 1);
    let mut b = SimNode::start(&net, "b", &cfg, 1);
    let c = SimNode::start(&net, "c", &cfg, 1);
    for node in [&mut a, &mut b] {
        let mut seen = 0;
        node.wait_for(ms(100), |e| {
            if let NodeEvent::Liveness(LivenessEvent::LocalActive { .. }) = e {
                seen += 1;
            }
            seen == 1
        })
        .await
        .expect("active");
    }
    assert_eq!(
        a.status()
            .await
            .nodes
            .iter()
            .filter(|n| n.status == "up")
            .count(),
        3
    );
    c.kill(&net).await;
    let ta = a.wait_for(ms(100), peer_became("c", PeerState::Dead)).await;
    let tb = b.wait_for(ms(100), peer_became("c", PeerState::Dead)).await;
    assert!(ta.is_some() && tb.is_some());
    let st = b.status().await;
    assert_eq!(
        st.nodes.iter().find(|n| n.name == "a").unwrap().status,
        "up"
    );
    a.kill(&net).await;
    b.kill(&net).await;
}

#[tokio::test(start_paused = true)]
async fn lone_node_goes_active_after_initdead() {
    let net = MemoryNet::new();
    let cfg = config(&["a", "b"], 1, fast_timing(), keys("s3cret"));
    let start = tokio::time::Instant::now();
    let mut a = SimNode::start(&net, "a", &cfg, 1);
    let at = a
        .wait_for(ms(500), |e| {
            matches!(e, NodeEvent::Liveness(LivenessEvent::LocalActive { .. }))
        })
        .await
        .expect("active");
    assert_eq!(at - start, ms(100));
    a.kill(&net).await;
}

#[tokio::test(start_paused = true)]
async fn frames_carry_heartbeats_ttl_from_the_configuration() {
    let net = MemoryNet::new();
    let mut cfg = config(&["a", "b"], 1, fast_timing(), keys("s3cret"));
    cfg.ping_nodes = vec!["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()];
    let mut tap = net.tap(&link_name(0));
    let a = SimNode::start(&net, "a", &cfg, 1);
    tokio::time::sleep(ms(15)).await;
    let (_, frame) = tap.recv().await.expect("a heartbeat");
    let msg = hbd::membership::wire::decode(&frame, &cfg.auth).expect("decodes");
    // hopfudge 1 + 2 nodes + 2 ping nodes, as heartbeat counts them (HEARTBEAT-WIRE.md §5).
    assert_eq!(msg.get_str("ttl"), Some("5"));
    a.kill(&net).await;
}

/// b paces its heartbeats on a's (the lower name): after locking on, b sends in the same
/// instant a's heartbeat arrives, one per a heartbeat; every interval stays within 1.25
/// keepalive; when a dies, b's own timer carries on every keepalive.
#[tokio::test(start_paused = true)]
async fn follower_sends_with_the_pace_setters_heartbeat() {
    let net = MemoryNet::new();
    let cfg = config(&["a", "b"], 1, fast_timing(), keys("s3cret"));
    let sends = record(&net, &link_name(0));
    let (a, b) = pair_active(&net, &cfg, 7).await;
    tokio::time::sleep(ms(50)).await;
    let from = Instant::now();
    tokio::time::sleep(ms(200)).await;
    let (sa, sb) = (sends.sent_by("a", from..), sends.sent_by("b", from..));
    assert!(sa.len() >= 19, "{sa:?}");
    assert_eq!(sa, sb, "b sends exactly when a's heartbeat arrives");
    for s in [&sa, &sb] {
        assert_paced(s, ms(10) + ms(10) / 4);
    }
    // a dies: b keeps sending every keepalive on its own timer
    a.kill(&net).await;
    let killed = Instant::now();
    tokio::time::sleep(ms(100)).await;
    let after = sends.sent_by("b", (Excluded(killed), Unbounded));
    assert!(after.len() >= 9, "{after:?}");
    assert_paced(&after, ms(10) + ms(10) / 4);
    b.kill(&net).await;
}

/// A serial line beside UDP: its link carries heartbeat's classic text (`>>>` … `<<<`, the
/// inner auth, no NUL), and while UDP is cut the pair keeps hearing each other over it:
/// nobody is declared dead. Cutting the serial line too kills the peer at deadtime.
#[tokio::test(start_paused = true)]
async fn serial_line_keeps_the_pair_together_while_udp_is_cut() {
    let net = MemoryNet::new();
    let mut cfg = config(&["a", "b"], 2, fast_timing(), keys("s3cret"));
    cfg.media[1] = hbd::config::MediumSpec::Serial {
        device: "/dev/ttyS0".into(),
        baud: 115200,
    };
    let serial = record(&net, &link_name(1));
    let (mut a, b) = pair_active(&net, &cfg, 1).await;
    let frames = serial.frames();
    assert!(!frames.is_empty(), "nothing on the serial link");
    for (_, from, frame) in &frames {
        assert!(
            frame.starts_with(b">>>\n") && frame.ends_with(b"\n<<<\n"),
            "{from} sent a frame that is not classic text: {:?}",
            String::from_utf8_lossy(frame)
        );
        assert!(frame.windows(6).any(|w| w == b"\nauth="), "no inner auth");
    }
    // UDP is cut: the serial line alone carries the heartbeats.
    net.cut("b", &link_name(0));
    let udp_dead = a
        .wait_for(ms(100), |e| {
            matches!(e, NodeEvent::Liveness(LivenessEvent::LinkState { node, link, to: LinkState::Dead, .. })
                if node == "b" && link == "link0")
        })
        .await;
    assert!(udp_dead.is_some(), "the cut UDP link is seen dead");
    tokio::time::sleep(ms(300)).await;
    assert!(!a.drain().iter().any(|(_, e)| matches!(
        e,
        NodeEvent::Liveness(LivenessEvent::PeerState {
            to: PeerState::Dead,
            ..
        })
    )));
    let st = a.status().await;
    assert_eq!(st.nodes[1].status, "up");
    assert_eq!(st.nodes[1].links[1].status, "up", "{:?}", st.nodes[1].links);
    // The serial line is cut too: b is dead at deadtime.
    let cut = Instant::now();
    net.cut("b", &link_name(1));
    let at = a
        .wait_for(ms(100), peer_became("b", PeerState::Dead))
        .await
        .expect("b declared dead once both paths are cut");
    assert!(at - cut <= ms(30), "dead {:?} after the cut", at - cut);
    b.kill(&net).await;
}
