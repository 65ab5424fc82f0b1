//! What `hactl status` shows, rendered from the node's state.
//!
//! The node core keeps membership, ownership and configuration; this module turns them into
//! the [`StatusReport`] of the JSON contract, so the core knows nothing of how status looks.
//! The node shell adds what lives outside the core: its media ([`media_report`], serial
//! lines with their device state) and reachability. [`write_media`] and
//! [`write_reachability`] are those sections of `hactl status`'s text.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;
use crate::control::protocol::{
    GroupStatus, LinkReport, MediumReport, NodeReport, ResourceReport, StatusReport,
};
use crate::manager::{GroupPhase, Manager};
use crate::media::Medium;
use crate::media::serial::{SerialLinkStatus, SerialState};
use crate::membership::liveness::{LinkState, PeerState};
use crate::membership::receive::Membership;
use crate::reachability::{ReachabilityReport, Standing, TargetKind, TargetReport};

/// The parts of a node a status report reads.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    /// Our name.
    pub name: &'a str,
    /// This start's generation.
    pub generation: u64,
    /// The configuration in force.
    pub config: &'a Config,
    /// Peers, links, counters.
    pub membership: &'a Membership,
    /// Who holds which group.
    pub manager: &'a Manager,
    /// What an operator must know now ([`StatusReport::alarms`]).
    pub alarms: &'a [String],
}

/// The status report of `node` at `now`.
pub fn status_report(node: NodeView<'_>, now: Instant) -> StatusReport {
    let liveness = node.membership.liveness();
    let link_names = liveness.link_names();
    let mut nodes = vec![NodeReport {
        name: node.name.to_string(),
        status: "up".to_string(),
        state: liveness.local_state().as_str().to_string(),
        local: true,
        last_heard_ms: None,
        deadtime_ms: millis(node.config.timing.deadtime),
        late_heartbeats: 0,
        longest_gap_ms: 0,
        links: link_names
            .iter()
            .map(|n| LinkReport {
                name: n.clone(),
                status: "up".to_string(),
            })
            .collect(),
    }];
    for p in liveness.peers() {
        let status = match p.state {
            PeerState::Init => "init",
            PeerState::Up | PeerState::Active => "up",
            PeerState::Dead => "dead",
        };
        nodes.push(NodeReport {
            name: p.name.clone(),
            status: status.to_string(),
            state: p.state.as_str().to_string(),
            local: false,
            last_heard_ms: p
                .last_status
                .map(|t| millis(now.saturating_duration_since(t))),
            deadtime_ms: millis(p.deadtime),
            late_heartbeats: p.late_heartbeats,
            longest_gap_ms: millis(p.longest_gap),
            links: p
                .links
                .iter()
                .zip(link_names)
                .map(|(l, name)| LinkReport {
                    name: name.clone(),
                    status: match l.state {
                        LinkState::Init => "init",
                        LinkState::Up => "up",
                        LinkState::Dead => "dead",
                    }
                    .to_string(),
                })
                .collect(),
        });
    }
    let groups = node
        .manager
        .groups()
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let resource_state = match g.phase {
                GroupPhase::Running => "running",
                GroupPhase::Failed => "failed",
                GroupPhase::StopFailed => "unknown",
                GroupPhase::Starting | GroupPhase::Stopping => g.phase.as_str(),
                GroupPhase::Stopped => "stopped",
            };
            GroupStatus {
                name: g.name.clone(),
                preferred: g.preferred.clone(),
                owner: node.manager.owner(i),
                state: g.phase.as_str().to_string(),
                target: g.placement.target.clone(),
                epoch: g.placement.epoch,
                resources: node.config.groups[i]
                    .resources
                    .iter()
                    .map(|r| ResourceReport {
                        spec: r.spec.clone(),
                        state: resource_state.to_string(),
                    })
                    .collect(),
            }
        })
        .collect();
    StatusReport {
        node: node.name.to_string(),
        state: liveness.local_state().as_str().to_string(),
        generation: node.generation,
        nodes,
        groups,
        queued: node.manager.queued().map(|c| format!("{c:?}")).collect(),
        unstable: node.manager.instability(),
        counters: node.membership.counters().clone(),
        reachability: None,
        fencing: None,
        alarms: node.alarms.to_vec(),
        media: Vec::new(),
    }
}

/// Each of `media`, in link order, with a serial line's device state as its thread sees it
/// now.
pub fn media_report(media: &[Medium]) -> Vec<MediumReport> {
    media
        .iter()
        .map(|m| MediumReport {
            name: m.name.clone(),
            describe: m.tx.describe(),
            serial: m.tx.serial_status(),
        })
        .collect()
}

/// The "Media" section of `hactl status`: one line per medium; a serial line says whether
/// its device is open or retrying (and why), and what went over it.
pub fn write_media(out: &mut String, media: &[MediumReport]) {
    use std::fmt::Write;
    if media.is_empty() {
        return;
    }
    let _ = writeln!(out, "Media:");
    for m in media {
        match &m.serial {
            None => {
                let _ = writeln!(out, "  {:<40} {}", m.name, m.describe);
            }
            Some(s) => {
                let _ = writeln!(out, "  {:<40} {}", m.name, device_state(s));
                let _ = writeln!(
                    out,
                    "      {} frames in, {} out, {} superseded, {} dropped while down, opened {} time(s); line noise {} bytes, {} cut, {} oversize",
                    s.frames_in,
                    s.frames_out,
                    s.superseded,
                    s.dropped_while_down,
                    s.opened,
                    s.framer.noise_bytes,
                    s.framer.cut_frames,
                    s.framer.oversize_frames
                );
            }
        }
    }
}

/// `open /dev/ttyS0 at 19200 baud`, `RETRYING /dev/ttyUSB0 at 19200 baud: No such file or
/// directory (os error 2)`, …: the state in capitals when the line is not usable.
fn device_state(s: &SerialLinkStatus) -> String {
    let device = s.device.display();
    match &s.state {
        SerialState::Opening => format!("opening {device} at {} baud", s.baud),
        SerialState::Open => format!("open {device} at {} baud", s.baud),
        SerialState::Retrying { error } => {
            format!("RETRYING {device} at {} baud: {error}", s.baud)
        }
        SerialState::Stopped => format!("stopped {device}"),
    }
}

/// The "Reachability" section of `hactl status`: both nodes' counts (ours from our targets,
/// the peer's from its heartbeats' `hbd_reach`), how they compare and for how long, the
/// take-back holds, then each ping node and ping group with its state and addresses.
pub fn write_reachability(out: &mut String, r: &ReachabilityReport, node: &str, peer: &str) {
    use std::fmt::Write;
    let p = &r.policy;
    let count = |c: Option<crate::reachability::Reach>| {
        c.map_or("unknown".to_string(), |c| {
            format!("{} of {}", c.reachable, c.total)
        })
    };
    let _ = writeln!(
        out,
        "Reachability (ping_hysteresis {} ms):",
        p.hysteresis_ms
    );
    let _ = writeln!(
        out,
        "  {node} (this node) reaches {}; {peer} reaches {}",
        count(p.local),
        count(p.peer)
    );
    let standing = match p.standing {
        Standing::Unknown => "unknown (a count is missing: nothing moves)",
        Standing::Worse => "worse than the peer",
        Standing::Equal => "equal (nothing moves)",
        Standing::Better => "better than the peer",
    };
    let _ = writeln!(out, "  this node is {standing} for {} ms", p.for_ms);
    for (who, hold) in [(node, p.local_hold_ms), (peer, p.peer_hold_ms)] {
        if let Some(ms) = hold {
            let _ = writeln!(
                out,
                "  {who} may take groups back after {ms} ms more at least as good as the other"
            );
        }
    }
    for t in &r.targets {
        let _ = writeln!(out, "  {}", target_line(t));
    }
}

/// `ping 192.0.2.1  up for 1200 ms` or `ping_group upstream  dead for 300 ms: 203.0.113.2
/// silent, 203.0.113.3 silent`.
fn target_line(t: &TargetReport) -> String {
    let kind = match t.kind {
        TargetKind::Node => "ping",
        TargetKind::Group => "ping_group",
    };
    let mut line = format!(
        "{kind:<10} {:<24} {:<5} for {} ms",
        t.name,
        t.state.as_str(),
        t.for_ms
    );
    if t.kind == TargetKind::Group || t.members.len() > 1 {
        let members: Vec<String> = t
            .members
            .iter()
            .map(|m| match (m.answering, m.last_reply_ms_ago) {
                (true, Some(ago)) => format!("{} answering ({ago} ms ago)", m.address),
                (true, None) => format!("{} answering", m.address),
                (false, Some(ago)) => format!("{} silent (last reply {ago} ms ago)", m.address),
                (false, None) => format!("{} silent (never answered)", m.address),
            })
            .collect();
        line.push_str(": ");
        line.push_str(&members.join(", "));
    } else if let Some(m) = t.members.first()
        && !m.answering
    {
        match m.last_reply_ms_ago {
            Some(ago) => line.push_str(&format!(" (last reply {ago} ms ago)")),
            None => line.push_str(" (never answered)"),
        }
    }
    line
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::serial::FramerStats;
    use crate::reachability::{MemberReport, PolicyReport, Reach, TargetState};

    fn serial(state: SerialState) -> MediumReport {
        MediumReport {
            name: "serial:/dev/ttyUSB0".into(),
            describe: "/dev/ttyUSB0 at 19200 baud".into(),
            serial: Some(SerialLinkStatus {
                device: "/dev/ttyUSB0".into(),
                baud: 19200,
                state,
                opened: 2,
                frames_in: 40,
                frames_out: 41,
                superseded: 3,
                dropped_while_down: 5,
                framer: FramerStats {
                    frames: 40,
                    noise_bytes: 7,
                    cut_frames: 1,
                    oversize_frames: 0,
                },
            }),
        }
    }

    fn udp() -> MediumReport {
        MediumReport {
            name: "ucast:eth0:192.0.2.12".into(),
            describe: "sending to 192.0.2.12:694".into(),
            serial: None,
        }
    }

    #[test]
    fn media_show_every_medium_and_a_serial_lines_device_state() {
        let mut out = String::new();
        write_media(&mut out, &[udp(), serial(SerialState::Open)]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "Media:");
        assert!(lines[1].starts_with("  ucast:eth0:192.0.2.12"), "{out}");
        assert!(lines[1].ends_with("sending to 192.0.2.12:694"), "{out}");
        assert!(lines[2].starts_with("  serial:/dev/ttyUSB0"), "{out}");
        assert!(
            lines[2].ends_with("open /dev/ttyUSB0 at 19200 baud"),
            "{out}"
        );
        assert_eq!(
            lines[3].trim(),
            "40 frames in, 41 out, 3 superseded, 5 dropped while down, opened 2 time(s); line noise 7 bytes, 1 cut, 0 oversize"
        );
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn a_serial_device_that_went_away_shows_retrying_and_its_last_error() {
        let mut out = String::new();
        let error = "No such file or directory (os error 2)".to_string();
        write_media(&mut out, &[serial(SerialState::Retrying { error })]);
        assert!(
            out.contains(
                "RETRYING /dev/ttyUSB0 at 19200 baud: No such file or directory (os error 2)"
            ),
            "{out}"
        );
        let mut out = String::new();
        write_media(&mut out, &[]);
        assert_eq!(out, "", "no media, no section");
    }

    #[test]
    fn serial_state_keeps_its_json_form() {
        let s = serial(SerialState::Retrying {
            error: "gone".into(),
        });
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["serial"]["state"], "retrying");
        assert_eq!(json["serial"]["error"], "gone");
        assert_eq!(json["serial"]["baud"], 19200);
        assert_eq!(json["serial"]["framer"]["noise_bytes"], 7);
        let back: MediumReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
        let json = serde_json::to_value(udp()).unwrap();
        assert!(json.get("serial").is_none(), "{json}");
    }

    fn member(address: &str, answering: bool, ago: Option<u64>) -> MemberReport {
        MemberReport {
            address: address.parse().unwrap(),
            answering,
            last_reply_ms_ago: ago,
        }
    }

    fn reach(reachable: u32, total: u32) -> Option<Reach> {
        Some(Reach { reachable, total })
    }

    fn report(standing: Standing, peer: Option<Reach>) -> ReachabilityReport {
        ReachabilityReport {
            targets: vec![
                TargetReport {
                    name: "192.0.2.1".into(),
                    kind: TargetKind::Node,
                    state: TargetState::Dead,
                    for_ms: 300,
                    members: vec![member("192.0.2.1", false, Some(450))],
                },
                TargetReport {
                    name: "upstream".into(),
                    kind: TargetKind::Group,
                    state: TargetState::Up,
                    for_ms: 5000,
                    members: vec![
                        member("203.0.113.2", true, Some(12)),
                        member("203.0.113.3", false, None),
                    ],
                },
            ],
            policy: PolicyReport {
                local: reach(1, 2),
                peer,
                standing,
                for_ms: 250,
                hysteresis_ms: 1000,
                local_hold_ms: Some(4000),
                peer_hold_ms: None,
            },
        }
    }

    #[test]
    fn reachability_shows_both_counts_the_standing_and_every_target() {
        let mut out = String::new();
        write_reachability(&mut out, &report(Standing::Worse, reach(2, 2)), "n1", "n2");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "Reachability (ping_hysteresis 1000 ms):");
        assert_eq!(
            lines[1],
            "  n1 (this node) reaches 1 of 2; n2 reaches 2 of 2"
        );
        assert_eq!(lines[2], "  this node is worse than the peer for 250 ms");
        assert_eq!(
            lines[3],
            "  n1 may take groups back after 4000 ms more at least as good as the other"
        );
        assert!(lines[4].starts_with("  ping       192.0.2.1"), "{out}");
        assert!(
            lines[4].ends_with("dead  for 300 ms (last reply 450 ms ago)"),
            "{out}"
        );
        assert!(lines[5].starts_with("  ping_group upstream"), "{out}");
        assert!(
            lines[5].ends_with(
                "up    for 5000 ms: 203.0.113.2 answering (12 ms ago), 203.0.113.3 silent (never answered)"
            ),
            "{out}"
        );
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn an_unknown_peer_count_says_so() {
        let mut out = String::new();
        write_reachability(&mut out, &report(Standing::Unknown, None), "n1", "n2");
        assert!(out.contains("n2 reaches unknown"), "{out}");
        assert!(
            out.contains("this node is unknown (a count is missing: nothing moves)"),
            "{out}"
        );
    }
}
