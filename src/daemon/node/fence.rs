//! The fence gate: whether a group start may go ahead, or must wait for the peer to be
//! fenced first (see [`crate::fencing`]). Plain data with pure transitions; the core feeds
//! it peer deaths and returns, starts and fence results.
//!
//! heartbeat's rule: a peer that died while it may have held groups (it said it held some,
//! or was never heard at all) is reset before anything is taken over from it; with no
//! device configured the takeover goes ahead at once.

use tokio::time::Instant;

/// What the core does with a group start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartGate {
    /// Start it now.
    Go,
    /// Start the fence device against this peer, and hold the start until it finishes.
    FenceFirst(String),
    /// The device is already running: hold the start until it finishes.
    Hold,
}

/// The gate's state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum State {
    /// Nothing to fence: starts go through.
    #[default]
    Open,
    /// The peer died while it may have held groups: the next start fences it first.
    Required { peer: String },
    /// The device runs; `held` starts wait for it.
    Running {
        peer: String,
        held: Vec<usize>,
        since: Instant,
    },
    /// The peer was fenced in this death: starts go through until it is heard again.
    Fenced { peer: String },
    /// Every attempt failed: the next start (an operator's takeover) tries again.
    Failed { peer: String, reason: String },
}

/// See the module doc.
#[derive(Debug, Clone, Default)]
pub struct FenceGate {
    state: State,
}

impl FenceGate {
    /// The peer was declared dead; `must_fence` when it may have held groups and a device
    /// applies to us.
    pub fn on_peer_dead(&mut self, peer: &str, must_fence: bool) {
        if matches!(self.state, State::Running { .. }) {
            return;
        }
        self.state = if must_fence {
            State::Required {
                peer: peer.to_string(),
            }
        } else {
            State::Open
        };
    }

    /// The peer is heard again. A device already running is not called back (a reset in
    /// flight cannot be undone): its result still decides the held starts.
    pub fn on_peer_alive(&mut self) {
        if !matches!(self.state, State::Running { .. }) {
            self.state = State::Open;
        }
    }

    /// A start of `group` at `now`.
    pub fn on_start(&mut self, group: usize, now: Instant) -> StartGate {
        match &mut self.state {
            State::Open | State::Fenced { .. } => StartGate::Go,
            State::Running { held, .. } => {
                if !held.contains(&group) {
                    held.push(group);
                }
                StartGate::Hold
            }
            State::Required { peer } | State::Failed { peer, .. } => {
                let peer = peer.clone();
                self.state = State::Running {
                    peer: peer.clone(),
                    held: vec![group],
                    since: now,
                };
                StartGate::FenceFirst(peer)
            }
        }
    }

    /// The device finished for `peer`: the held starts, to run now (`Ok`) or to fail
    /// (`Err`). A result for a device that is not running (a late or foreign one) holds
    /// nothing.
    pub fn on_finished(&mut self, peer: &str, result: Result<(), String>) -> Vec<usize> {
        let State::Running {
            peer: running,
            held,
            ..
        } = &mut self.state
        else {
            return Vec::new();
        };
        if running != peer {
            return Vec::new();
        }
        let held = std::mem::take(held);
        let peer = peer.to_string();
        self.state = match result {
            Ok(()) => State::Fenced { peer },
            Err(reason) => State::Failed { peer, reason },
        };
        held
    }

    /// Whether `group` waits for the device.
    #[cfg(test)]
    pub fn holds(&self, group: usize) -> bool {
        matches!(&self.state, State::Running { held, .. } if held.contains(&group))
    }

    /// The gate in words for `hactl status`; `None` when there is nothing to say.
    pub fn describe(&self, now: Instant) -> Option<String> {
        match &self.state {
            State::Open => None,
            State::Required { peer } => Some(format!(
                "{peer} died while it may have held groups: it is fenced before any takeover"
            )),
            State::Running { peer, since, .. } => Some(format!(
                "fencing {peer} (for {} ms); its groups wait",
                now.saturating_duration_since(*since).as_millis()
            )),
            State::Fenced { peer } => Some(format!("{peer} fenced")),
            State::Failed { peer, reason } => Some(format!(
                "FENCING {peer} FAILED: {reason}; its groups stay stopped (`hactl takeover` tries again)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_that_may_hold_groups_is_fenced_once_and_the_starts_wait_for_it() {
        let now = crate::clock::now();
        let mut g = FenceGate::default();
        assert_eq!(g.on_start(0, now), StartGate::Go, "nothing to fence yet");
        g.on_peer_dead("n2", true);
        assert_eq!(g.on_start(0, now), StartGate::FenceFirst("n2".into()));
        assert_eq!(g.on_start(1, now), StartGate::Hold);
        assert!(g.holds(0) && g.holds(1));
        assert_eq!(g.on_finished("n2", Ok(())), vec![0, 1]);
        assert_eq!(g.on_start(2, now), StartGate::Go, "fenced in this death");
        assert_eq!(g.describe(now).as_deref(), Some("n2 fenced"));
        g.on_peer_alive();
        assert_eq!(g.describe(now), None);
    }

    #[test]
    fn a_peer_that_held_nothing_is_not_fenced() {
        let now = crate::clock::now();
        let mut g = FenceGate::default();
        g.on_peer_dead("n2", false);
        assert_eq!(g.on_start(0, now), StartGate::Go);
    }

    #[test]
    fn a_failed_fence_fails_the_held_starts_and_the_next_start_tries_again() {
        let now = crate::clock::now();
        let mut g = FenceGate::default();
        g.on_peer_dead("n2", true);
        g.on_start(0, now);
        assert_eq!(g.on_finished("n2", Err("timeout".into())), vec![0]);
        assert!(!g.holds(0));
        assert!(
            g.describe(now)
                .unwrap()
                .starts_with("FENCING n2 FAILED: timeout")
        );
        assert_eq!(g.on_start(0, now), StartGate::FenceFirst("n2".into()));
    }

    #[test]
    fn a_running_device_is_not_called_back_when_the_peer_returns() {
        let now = crate::clock::now();
        let mut g = FenceGate::default();
        g.on_peer_dead("n2", true);
        g.on_start(0, now);
        g.on_peer_alive();
        assert!(g.holds(0));
        assert_eq!(g.on_finished("n2", Ok(())), vec![0]);
    }

    #[test]
    fn a_result_for_no_running_device_holds_nothing() {
        let mut g = FenceGate::default();
        assert!(g.on_finished("n2", Ok(())).is_empty());
        g.on_peer_dead("n2", true);
        assert!(g.on_finished("n2", Ok(())).is_empty());
    }
}
