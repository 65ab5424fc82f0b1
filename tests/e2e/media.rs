//! UDP media in namespaces: heartbeats wake the receiver, answers wait on the twin socket.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hbd::config::model::MediumSpec;
use hbd::media::udp::{self, OpenedMedia, RECV_BUFFER};

use crate::netns::{NetNs, pair, poll_until, require_root};

/// Opens `specs` inside `ns` (the sockets stay in that namespace).
fn open_in(ns: &NetNs, specs: Vec<MediumSpec>) -> OpenedMedia {
    ns.run(
        move || async move { udp::open_all(&specs, &udp::local_addresses()).expect("media open") },
    )
}

/// Sends one heartbeat and one answer from `a` to `b` over `a_spec`/`b_spec`, and checks
/// that the heartbeat reaches the socket the node waits on and the answer only the twin,
/// stamped with its receive time.
fn answers_go_to_the_twin(prefix: &str, a_spec: MediumSpec, b_spec: MediumSpec) {
    require_root();
    let (a, b) = pair(prefix, "192.0.2.1/24", "192.0.2.2/24");
    let rx = open_in(&b, vec![b_spec]);
    let tx = open_in(&a, vec![a_spec]);
    assert_eq!(rx.receivers.len(), 1);
    let receiver = &rx.receivers[0];
    assert!(receiver.splits_answers(), "IPv4 receivers have a twin");
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    tx.media[0].tx.send(b"heartbeat").unwrap();
    tx.media[0].tx.send_answer(b"answer").unwrap();
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut heartbeats = Vec::new();
    let mut answers = Vec::new();
    poll_until(Duration::from_secs(3), || {
        while let Ok(Some(frame)) = receiver.try_recv(&mut buf) {
            heartbeats.push(frame.frame.to_vec());
        }
        while let Ok(Some((answer, stamp))) = receiver.try_recv_answer(&mut buf) {
            answers.push((answer.frame.to_vec(), answer.link, answer.from, stamp));
        }
        !heartbeats.is_empty() && !answers.is_empty()
    });
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    assert_eq!(heartbeats, [b"heartbeat".to_vec()]);
    assert_eq!(answers.len(), 1, "one answer on the twin");
    let (frame, link, from, stamp) = &answers[0];
    assert_eq!(frame, b"answer");
    assert_eq!(*link, 0);
    assert_eq!(
        from.map(|f| f.ip()),
        Some("192.0.2.1".parse::<IpAddr>().unwrap())
    );
    let stamp = stamp.expect("the kernel stamps answers");
    assert!(
        before <= stamp && stamp <= after,
        "{before:?} {stamp:?} {after:?}"
    );
}

#[test]
fn ucast_answers_go_to_the_twin_socket() {
    let spec = |peer: &str| MediumSpec::Ucast {
        interface: "eth0".into(),
        peer: peer.parse().unwrap(),
        port: 694,
    };
    answers_go_to_the_twin("mdu", spec("192.0.2.2"), spec("192.0.2.1"));
}

#[test]
fn bcast_answers_go_to_the_twin_socket() {
    let spec = || MediumSpec::Bcast {
        interface: "eth0".into(),
        port: 694,
    };
    answers_go_to_the_twin("mdb", spec(), spec());
}

#[test]
fn mcast_answers_go_to_the_twin_socket() {
    let spec = || MediumSpec::Mcast {
        interface: "eth0".into(),
        group: "239.0.2.94".parse().unwrap(),
        port: 694,
        ttl: 1,
        loopback: false,
    };
    answers_go_to_the_twin("mdm", spec(), spec());
}

/// A unicast medium sends on a socket connected to the peer: while nothing listens there the
/// kernel reports each ICMP port unreachable on the next send, and the medium sends again
/// instead of losing that heartbeat; once the peer listens, frames arrive.
#[test]
fn ucast_sends_survive_a_closed_peer_port() {
    require_root();
    let (a, b) = pair("mdc", "192.0.2.1/24", "192.0.2.2/24");
    let spec = |peer: &str| MediumSpec::Ucast {
        interface: "eth0".into(),
        peer: peer.parse().unwrap(),
        port: 694,
    };
    let tx = open_in(&a, vec![spec("192.0.2.2")]);
    for i in 0..20 {
        let sent = if i % 2 == 0 {
            tx.media[0].tx.send(b"heartbeat")
        } else {
            tx.media[0].tx.send_answer(b"answer")
        };
        assert!(sent.is_ok(), "send {i}: {sent:?}");
        // time for the ICMP error of the previous frame to come back
        std::thread::sleep(Duration::from_millis(5));
    }
    let rx = open_in(&b, vec![spec("192.0.2.1")]);
    tx.media[0].tx.send(b"heartbeat").unwrap();
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut got = None;
    poll_until(Duration::from_secs(3), || {
        got = rx.receivers[0]
            .try_recv(&mut buf)
            .ok()
            .flatten()
            .map(|f| f.frame.to_vec());
        got.is_some()
    });
    assert_eq!(got, Some(b"heartbeat".to_vec()));
}
