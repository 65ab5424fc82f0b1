//! Real-server health and what the director makes of it (features §3.4, §3.5).
//!
//! * [`RealHealth`]: the per-real state machine. A down real comes up after `rise` consecutive
//!   successes, an up real goes down after `fall` consecutive failures (ldirectord
//!   `failurecount`; keepalived-style `rise` added against flapping, features §4 item 8).
//! * [`desired_service`]: the pure decision from configured reals + their health to the
//!   [`VirtualService`] the dataplane should hold: a down real is quiesced (weight 0) or
//!   removed; when no real is up the fallback real is added with weight 1 (never quiesced,
//!   always removed when the first real returns), as ldirectord's `_remove_service`,
//!   `_restore_service`, `fallback_on/off` do.
//! * [`FallbackState`]: the `fallbackcommand start|stop` edges.

use std::fmt;
use std::net::SocketAddr;

use tokio::time::Instant;

use crate::config::director::VirtualConfig;
use crate::dataplane::model::{RealServer, ServiceKey, VirtualService};
use crate::director::checks::CheckResult;

/// Whether a real server is in service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Receives new connections at its configured weight.
    Up,
    /// Quiesced or removed.
    Down,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Up => "up",
            Health::Down => "down",
        })
    }
}

/// The initial health of a real at start-up or when first configured. ldirectord (`ld_start`)
/// marks reals already in the kernel with weight > 0 up (no disruption on restart/reload) and
/// all others down until their first check passes.
pub fn initial_health(in_kernel: Option<&RealServer>) -> Health {
    match in_kernel {
        Some(r) if !r.is_quiescent() => Health::Up,
        _ => Health::Down,
    }
}

/// A health change, for the log, status and event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: Health,
    /// State after.
    pub to: Health,
    /// The reason of the check result that caused it.
    pub reason: String,
}

/// Rise/fall state machine of one real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealHealth {
    state: Health,
    rise: u32,
    fall: u32,
    /// Consecutive results contradicting the current state.
    streak: u32,
    /// Reason and finish time of the last observed result: the one place it is kept.
    last: Option<(String, Instant)>,
    since: Instant,
}

impl RealHealth {
    /// A real in `initial` state since `now`. The configuration clamps `rise` and `fall` to at
    /// least 1; a 0 acts as 1 anyway (one contradicting result is always a streak of 1).
    pub fn new(initial: Health, rise: u32, fall: u32, now: Instant) -> RealHealth {
        RealHealth {
            state: initial,
            rise,
            fall,
            streak: 0,
            last: None,
            since: now,
        }
    }

    /// Current state.
    pub fn state(&self) -> Health {
        self.state
    }

    /// When the current state began.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Reason of the last observed result.
    pub fn last_reason(&self) -> Option<&str> {
        self.last.as_ref().map(|(r, _)| r.as_str())
    }

    /// When the last observed result was taken (the `now` given to [`RealHealth::observe`]).
    pub fn last_check(&self) -> Option<Instant> {
        self.last.as_ref().map(|(_, at)| *at)
    }

    /// Consecutive results against the current state so far ("soft failure 1/3").
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Feeds one check result, taken at `now`; returns the transition when the state changes.
    pub fn observe(&mut self, result: &CheckResult, now: Instant) -> Option<Transition> {
        self.last = Some((result.reason.clone(), now));
        let (agrees, needed) = match self.state {
            Health::Up => (result.ok, self.fall),
            Health::Down => (!result.ok, self.rise),
        };
        if agrees {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak < needed {
            return None;
        }
        let from = self.state;
        self.state = match from {
            Health::Up => Health::Down,
            Health::Down => Health::Up,
        };
        self.streak = 0;
        self.since = now;
        Some(Transition {
            from,
            to: self.state,
            reason: result.reason.clone(),
        })
    }
}

/// How a virtual service reacts to down reals (ldirectord `quiescent`, `fallback`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePolicy {
    /// Down reals stay at weight 0 (true, ldirectord default) or are removed.
    pub quiescent: bool,
    /// Real added with weight 1 while no real is up.
    pub fallback: Option<RealServer>,
}

impl ServicePolicy {
    /// The policy a configured virtual service asks for (`quiescent`, `fallback` at weight 1).
    pub fn of(v: &VirtualConfig) -> ServicePolicy {
        ServicePolicy {
            quiescent: v.quiescent,
            fallback: v.fallback.as_ref().map(|f| f.to_real_server(1)),
        }
    }
}

/// The desired service: `configured` holds the reals with their configured weights; `health`
/// says which are up (reals it does not know are down). A fallback whose address is also a
/// configured real is not added (the real's own entry wins).
pub fn desired_service(
    configured: &VirtualService,
    health: impl Fn(&SocketAddr) -> Health,
    policy: &ServicePolicy,
) -> VirtualService {
    let mut out = VirtualService {
        key: configured.key,
        scheduler: configured.scheduler,
        persistence: configured.persistence,
        reals: Vec::with_capacity(configured.reals.len() + 1),
    };
    let mut any_up = false;
    for real in &configured.reals {
        match health(&real.addr) {
            Health::Up => {
                any_up = true;
                out.reals.push(*real);
            }
            Health::Down if policy.quiescent => out.reals.push(RealServer { weight: 0, ..*real }),
            Health::Down => {}
        }
    }
    if !any_up
        && let Some(fb) = &policy.fallback
        && configured.real(&fb.addr).is_none()
    {
        out.reals.push(RealServer { weight: 1, ..*fb });
    }
    out
}

/// True when at least one configured real is up (the fallback is then inactive).
pub fn any_up(configured: &VirtualService, health: impl Fn(&SocketAddr) -> Health) -> bool {
    configured
        .reals
        .iter()
        .any(|r| health(&r.addr) == Health::Up)
}

/// A `fallbackcommand` edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackEvent {
    /// The last real went down: run `fallbackcommand start vip:port proto`.
    Start,
    /// The first real came back: run `fallbackcommand stop vip:port proto`.
    Stop,
}

impl FallbackEvent {
    /// The command arguments ldirectord passes: `start|stop vip:port proto`
    /// (`7 fwm` for a fwmark service).
    pub fn args(&self, key: &ServiceKey) -> [String; 3] {
        let verb = match self {
            FallbackEvent::Start => "start",
            FallbackEvent::Stop => "stop",
        };
        let (svc, proto) = match key {
            ServiceKey::Tcp(a) => (a.to_string(), "tcp"),
            ServiceKey::Udp(a) => (a.to_string(), "udp"),
            ServiceKey::Fwmark(m, _) => (m.to_string(), "fwm"),
        };
        [verb.to_string(), svc, proto.to_string()]
    }
}

/// Edge detector for `fallbackcommand`: starts inactive, so a service that begins with no real
/// up gets one `Start` (as ldirectord's start-up, which sets reals down then calls
/// `fallback_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FallbackState {
    active: bool,
}

impl FallbackState {
    /// Whether the fallback is currently on.
    pub fn active(&self) -> bool {
        self.active
    }

    /// Updates with whether any real is up; returns the edge, if any.
    pub fn update(&mut self, any_up: bool) -> Option<FallbackEvent> {
        match (self.active, any_up) {
            (false, false) => {
                self.active = true;
                Some(FallbackEvent::Start)
            }
            (true, true) => {
                self.active = false;
                Some(FallbackEvent::Stop)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;
    use crate::dataplane::model::{Forwarding, Scheduler};
    use std::collections::HashMap;
    use std::time::Duration;

    fn res(ok: bool, reason: &str) -> CheckResult {
        CheckResult {
            ok,
            reason: reason.into(),
            took: Duration::ZERO,
        }
    }

    #[test]
    fn fall_needs_consecutive_failures() {
        let t0 = clock::now();
        let mut h = RealHealth::new(Health::Up, 2, 3, t0);
        assert_eq!(h.observe(&res(false, "HTTP 503"), t0), None);
        assert_eq!(h.observe(&res(false, "HTTP 503"), t0), None);
        assert_eq!(h.streak(), 2);
        // A success resets the count.
        assert_eq!(h.observe(&res(true, "HTTP 200"), t0), None);
        assert_eq!(h.streak(), 0);
        assert_eq!(h.observe(&res(false, "a"), t0), None);
        assert_eq!(h.observe(&res(false, "b"), t0), None);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            h.observe(&res(false, "timeout after 3s"), t1),
            Some(Transition {
                from: Health::Up,
                to: Health::Down,
                reason: "timeout after 3s".into()
            })
        );
        assert_eq!(h.state(), Health::Down);
        assert_eq!(h.since(), t1);
        assert_eq!(h.last_reason(), Some("timeout after 3s"));
        assert_eq!(h.last_check(), Some(t1));
        // Further failures change nothing.
        assert_eq!(h.observe(&res(false, "c"), t1), None);
    }

    #[test]
    fn rise_needs_consecutive_successes() {
        let t0 = clock::now();
        let mut h = RealHealth::new(Health::Down, 2, 1, t0);
        assert_eq!(h.observe(&res(true, "ok"), t0), None);
        assert_eq!(h.observe(&res(false, "no"), t0), None);
        assert_eq!(h.observe(&res(true, "ok"), t0), None);
        let t = h.observe(&res(true, "HTTP 200"), t0).unwrap();
        assert_eq!(
            (t.from, t.to, t.reason.as_str()),
            (Health::Down, Health::Up, "HTTP 200")
        );
        // fall = 1: one failure takes it down.
        let t = h.observe(&res(false, "connect refused"), t0).unwrap();
        assert_eq!(t.to, Health::Down);
    }

    #[test]
    fn the_last_result_is_kept_with_its_time() {
        let t0 = clock::now();
        let mut h = RealHealth::new(Health::Up, 1, 2, t0);
        assert_eq!((h.last_reason(), h.last_check()), (None, None));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(h.observe(&res(false, "HTTP 503"), t1), None);
        assert_eq!(h.last_reason(), Some("HTTP 503"));
        assert_eq!(h.last_check(), Some(t1));
        assert_eq!(h.since(), t0, "no transition yet");
    }

    #[test]
    fn zero_thresholds_behave_as_one() {
        let t0 = clock::now();
        let mut h = RealHealth::new(Health::Down, 0, 0, t0);
        assert!(h.observe(&res(true, "ok"), t0).is_some());
        assert!(h.observe(&res(false, "no"), t0).is_some());
    }

    #[test]
    fn initial_health_follows_ld_start() {
        let a: SocketAddr = "192.0.2.21:80".parse().unwrap();
        let mut r = RealServer::new(a, Forwarding::Gate);
        assert_eq!(initial_health(Some(&r)), Health::Up);
        r.weight = 0;
        assert_eq!(initial_health(Some(&r)), Health::Down);
        assert_eq!(initial_health(None), Health::Down);
    }

    fn service(weights: &[(&str, u32)]) -> VirtualService {
        let mut vs = VirtualService::new(
            ServiceKey::Tcp("198.51.100.10:80".parse().unwrap()),
            Scheduler::Wrr,
        );
        for (a, w) in weights {
            let mut r = RealServer::new(a.parse().unwrap(), Forwarding::Masq);
            r.weight = *w;
            r.upper_threshold = 100;
            vs.reals.push(r);
        }
        vs
    }

    fn health_map(up: &[&str]) -> impl Fn(&SocketAddr) -> Health {
        let m: HashMap<SocketAddr, Health> = up
            .iter()
            .map(|a| (a.parse().unwrap(), Health::Up))
            .collect();
        move |a| m.get(a).copied().unwrap_or(Health::Down)
    }

    fn weights(vs: &VirtualService) -> Vec<(String, u32)> {
        vs.reals
            .iter()
            .map(|r| (r.addr.to_string(), r.weight))
            .collect()
    }

    fn fallback() -> RealServer {
        RealServer::new("127.0.0.1:80".parse().unwrap(), Forwarding::Gate)
    }

    #[test]
    fn all_up_keeps_configured_weights() {
        let vs = service(&[("192.0.2.21:80", 3), ("192.0.2.22:80", 1)]);
        let p = ServicePolicy {
            quiescent: true,
            fallback: Some(fallback()),
        };
        let d = desired_service(&vs, health_map(&["192.0.2.21:80", "192.0.2.22:80"]), &p);
        assert_eq!(d, vs);
    }

    #[test]
    fn down_real_is_quiesced_keeping_its_other_parameters() {
        let vs = service(&[("192.0.2.21:80", 3), ("192.0.2.22:80", 1)]);
        let p = ServicePolicy {
            quiescent: true,
            fallback: Some(fallback()),
        };
        let d = desired_service(&vs, health_map(&["192.0.2.21:80"]), &p);
        assert_eq!(
            weights(&d),
            [("192.0.2.21:80".into(), 3), ("192.0.2.22:80".into(), 0)]
        );
        assert_eq!(d.reals[1].upper_threshold, 100);
        assert_eq!(d.reals[1].forwarding, Forwarding::Masq);
    }

    #[test]
    fn down_real_is_removed_when_not_quiescent() {
        let vs = service(&[("192.0.2.21:80", 3), ("192.0.2.22:80", 1)]);
        let p = ServicePolicy {
            quiescent: false,
            fallback: None,
        };
        let d = desired_service(&vs, health_map(&["192.0.2.22:80"]), &p);
        assert_eq!(weights(&d), [("192.0.2.22:80".into(), 1)]);
    }

    #[test]
    fn all_down_adds_the_fallback_with_weight_one() {
        let vs = service(&[("192.0.2.21:80", 3), ("192.0.2.22:80", 1)]);
        let mut fb = fallback();
        fb.weight = 9;
        let p = ServicePolicy {
            quiescent: true,
            fallback: Some(fb),
        };
        let d = desired_service(&vs, health_map(&[]), &p);
        assert_eq!(
            weights(&d),
            [
                ("192.0.2.21:80".into(), 0),
                ("192.0.2.22:80".into(), 0),
                ("127.0.0.1:80".into(), 1)
            ]
        );
        assert_eq!(d.reals[2].forwarding, Forwarding::Gate);
        let p = ServicePolicy {
            quiescent: false,
            fallback: Some(fallback()),
        };
        assert_eq!(
            weights(&desired_service(&vs, health_map(&[]), &p)),
            [("127.0.0.1:80".into(), 1)]
        );
    }

    #[test]
    fn first_real_up_removes_the_fallback() {
        let vs = service(&[("192.0.2.21:80", 3), ("192.0.2.22:80", 1)]);
        let p = ServicePolicy {
            quiescent: true,
            fallback: Some(fallback()),
        };
        let d = desired_service(&vs, health_map(&["192.0.2.22:80"]), &p);
        assert!(d.real(&"127.0.0.1:80".parse().unwrap()).is_none());
    }

    #[test]
    fn up_real_with_configured_weight_zero_still_counts_as_up() {
        let vs = service(&[("192.0.2.21:80", 0)]);
        let p = ServicePolicy {
            quiescent: true,
            fallback: Some(fallback()),
        };
        let d = desired_service(&vs, health_map(&["192.0.2.21:80"]), &p);
        assert_eq!(weights(&d), [("192.0.2.21:80".into(), 0)]);
        assert!(any_up(&vs, health_map(&["192.0.2.21:80"])));
    }

    #[test]
    fn empty_service_gets_the_fallback_and_a_fallback_equal_to_a_real_is_skipped() {
        let vs = service(&[]);
        let p = ServicePolicy {
            quiescent: true,
            fallback: Some(fallback()),
        };
        assert_eq!(
            weights(&desired_service(&vs, health_map(&[]), &p)),
            [("127.0.0.1:80".into(), 1)]
        );
        let vs = service(&[("127.0.0.1:80", 5)]);
        assert_eq!(
            weights(&desired_service(&vs, health_map(&[]), &p)),
            [("127.0.0.1:80".into(), 0)]
        );
    }

    #[test]
    fn fallback_command_edges() {
        let mut f = FallbackState::default();
        assert_eq!(f.update(true), None);
        assert_eq!(f.update(false), Some(FallbackEvent::Start));
        assert!(f.active());
        assert_eq!(f.update(false), None);
        assert_eq!(f.update(true), Some(FallbackEvent::Stop));
        assert_eq!(f.update(true), None);
        let mut g = FallbackState::default();
        assert_eq!(
            g.update(false),
            Some(FallbackEvent::Start),
            "start-up with none up"
        );
    }

    #[test]
    fn fallback_command_arguments() {
        let k = ServiceKey::Tcp("198.51.100.10:80".parse().unwrap());
        assert_eq!(
            FallbackEvent::Start.args(&k),
            ["start", "198.51.100.10:80", "tcp"]
        );
        let k = ServiceKey::Fwmark(7, crate::dataplane::model::Family::V4);
        assert_eq!(FallbackEvent::Stop.args(&k), ["stop", "7", "fwm"]);
    }

    #[test]
    fn scenario_flapping_real_with_quiescent_and_fallback() {
        // One real, rise 2 / fall 2: the decision only changes on state transitions.
        let vs = service(&[("192.0.2.21:80", 5)]);
        let p = ServicePolicy {
            quiescent: true,
            fallback: Some(fallback()),
        };
        let t0 = clock::now();
        let mut h = RealHealth::new(initial_health(None), 2, 2, t0);
        let mut fb = FallbackState::default();
        let mut edges = Vec::new();
        let mut plans = Vec::new();
        for ok in [false, true, true, false, true, false, false, true, true] {
            h.observe(&res(ok, "x"), t0);
            let state = h.state();
            let f = |_: &SocketAddr| state;
            if let Some(e) = fb.update(any_up(&vs, f)) {
                edges.push(e);
            }
            plans.push(weights(&desired_service(&vs, f, &p)).len());
        }
        assert_eq!(
            edges,
            [
                FallbackEvent::Start,
                FallbackEvent::Stop,
                FallbackEvent::Start,
                FallbackEvent::Stop
            ]
        );
        assert_eq!(plans, [2, 2, 1, 1, 1, 1, 2, 2, 1]);
    }
}
