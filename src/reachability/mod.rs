//! Reachability: ping nodes and ping groups, and heartbeat's ipfail built into the daemon.
//!
//! heartbeat watched upstream addresses as pseudo-members (`ping`, `ping6`, `ping_group`,
//! dead after `deadping`) and left the decision to a separate client, ipfail, that compared
//! both nodes' counts and gave resources up on the worse side. hbd does both itself:
//!
//! * [`targets`]: the pure state of every ping node and ping group (`Init`/`Up`/`Dead`), fed
//!   echo replies and the clock; its [`Reach`] is what the node advertises.
//! * [`policy`]: the ipfail rules as a pure state machine ([`ReachabilityPolicy`]): the worse
//!   holder hands its groups over after the hysteresis, equal counts move nothing, and a side
//!   that lost must be as good as its peer for a take-back hold before groups come back.
//! * [`wire`]: the `hbd_reach` heartbeat field that carries a node's count to its peer.
//! * [`prober`]: the ICMP edge (echo requests out, replies in), reusing the director's
//!   ping codec.
//! * [`Reachability::spawn`]: a task that runs the prober and the targets and sends a
//!   [`ReachUpdate`] on every change, for the node task to feed its policy.
//!
//! The node task owns the policy: it observes its own advertised count and the peer's (from
//! [`PeerReach`]), asks [`ReachabilityPolicy::decide`] at the policy's deadlines, and turns
//! `MoveToPeer`/`PullFromPeer` into placements. docs/operations.md ("Ping-group failover")
//! describes it for operators.

pub mod policy;
pub mod prober;
pub mod targets;
pub mod wire;

use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::Config;

pub use policy::{Decision, Holding, PolicyReport, ReachabilityPolicy, Standing};
pub use prober::{ProbeReply, Prober, ProberCounters};
pub use targets::{
    ChangeReason, MemberReport, Reach, Target, TargetEvent, TargetKind, TargetReport, TargetState,
    Targets,
};
pub use wire::{PeerReach, REACH_FIELD, ReachFieldError, encode_reach, parse_reach};

/// Shortest time between two probes of one address: bounds the echo rate at 200 per second
/// per target whatever `deadping` says.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// Longest time between two probes: a target that comes back is seen within a second even
/// with heartbeat's 30 s default deadping.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How often each address is probed: four probes per `deadping`, so one or two lost echoes
/// do not kill a target, within [`MIN_PROBE_INTERVAL`] and [`MAX_PROBE_INTERVAL`].
pub fn probe_interval(deadping: Duration) -> Duration {
    (deadping / 4).clamp(MIN_PROBE_INTERVAL, MAX_PROBE_INTERVAL)
}

/// What changed, sent by the [`Reachability`] task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachUpdate {
    /// The count to advertise and to observe now ([`Targets::advertised`]).
    pub advertised: Option<Reach>,
    /// The target changes that led to it, in order (already logged by the task).
    pub events: Vec<TargetEvent>,
}

/// Everything reachability shows in `hactl status`: each target, both counts, the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ReachabilityReport {
    /// Each ping node and ping group.
    pub targets: Vec<TargetReport>,
    /// Both counts, the standing and the holds.
    pub policy: PolicyReport,
}

impl ReachabilityReport {
    /// The report at `now`.
    pub fn new(targets: &Targets, policy: &ReachabilityPolicy, now: Instant) -> Self {
        ReachabilityReport {
            targets: targets.report(now),
            policy: policy.report(now),
        }
    }
}

/// The running prober and targets. Dropping it stops the task.
#[derive(Debug)]
pub struct ReachabilityHandle {
    reload: mpsc::UnboundedSender<Config>,
    state: watch::Receiver<Targets>,
    task: JoinHandle<()>,
}

impl ReachabilityHandle {
    /// A copy of the targets' current state (for [`ReachabilityReport::new`]).
    pub fn targets(&self) -> Targets {
        self.state.borrow().clone()
    }

    /// The count to advertise now.
    pub fn advertised(&self) -> Option<Reach> {
        self.state.borrow().advertised()
    }

    /// Applies a reloaded configuration: new targets, `deadping` and probe rate. Unchanged
    /// targets keep their state.
    pub fn reload(&self, config: &Config) {
        let _ = self.reload.send(config.clone());
    }
}

impl Drop for ReachabilityHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The reachability task.
pub struct Reachability;

impl Reachability {
    /// Starts probing the configuration's ping nodes and ping groups on the current tokio
    /// runtime. Every change of a target is logged and sent as a [`ReachUpdate`]; the
    /// channel ends when the handle is dropped. With no targets the task only waits for a
    /// reload.
    pub fn spawn(config: &Config) -> (ReachabilityHandle, mpsc::UnboundedReceiver<ReachUpdate>) {
        let now = crate::clock::now();
        let targets = Targets::from_config(config, now);
        let (state_tx, state) = watch::channel(targets);
        let (updates_tx, updates) = mpsc::unbounded_channel();
        let (reload, reload_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(state_tx, updates_tx, reload_rx));
        (
            ReachabilityHandle {
                reload,
                state,
                task,
            },
            updates,
        )
    }
}

/// The task: probe rounds, replies, deadlines and reloads, one at a time. The targets live
/// in the watch channel the handle reads, changed in place, so a snapshot always has the
/// latest replies and no reply costs a copy.
async fn run(
    state: watch::Sender<Targets>,
    updates: mpsc::UnboundedSender<ReachUpdate>,
    mut reload: mpsc::UnboundedReceiver<Config>,
) {
    let (addresses, deadping) = {
        let t = state.borrow();
        (t.addresses(), t.deadping())
    };
    let mut prober = Prober::new(addresses, deadping);
    let mut rounds = tokio::time::interval(probe_interval(deadping));
    rounds.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut advertised = state.borrow().advertised();
    loop {
        let (deadline, probing) = {
            let t = state.borrow();
            (t.next_deadline(), !t.targets().is_empty())
        };
        let mut events = Vec::new();
        tokio::select! {
            _ = rounds.tick(), if probing => prober.send_round(),
            got = prober.recv(), if probing => {
                if let Ok(reply) = got {
                    state.send_modify(|t| events = t.on_reply(reply.from, reply.at));
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                state.send_modify(|t| events = t.on_tick(crate::clock::now()));
            }
            config = reload.recv() => match config {
                Some(config) => {
                    state.send_modify(|t| t.reconcile(&config, crate::clock::now()));
                    let (addresses, deadping) = {
                        let t = state.borrow();
                        (t.addresses(), t.deadping())
                    };
                    prober.set_addresses(addresses, deadping);
                    rounds = tokio::time::interval(probe_interval(deadping));
                    rounds.set_missed_tick_behavior(MissedTickBehavior::Delay);
                }
                None => return,
            },
        }
        for e in &events {
            log_event(e);
        }
        let now_advertised = state.borrow().advertised();
        if events.is_empty() && now_advertised == advertised {
            continue;
        }
        advertised = now_advertised;
        if updates.send(ReachUpdate { advertised, events }).is_err() {
            return;
        }
    }
}

/// Sleeps until `deadline` (forever when `None`; the branch is disabled then anyway).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// One log line per target change: dead is a warning (it may move groups), up is info.
fn log_event(e: &TargetEvent) {
    let kind = match e.kind {
        TargetKind::Node => "ping node",
        TargetKind::Group => "ping group",
    };
    match e.reason {
        ChangeReason::Reply(from) => tracing::info!(
            target_name = %e.target,
            from = e.from.as_str(),
            %from,
            "{kind} up: echo reply"
        ),
        ChangeReason::Silent(d) => tracing::warn!(
            target_name = %e.target,
            from = e.from.as_str(),
            "{kind} dead: no echo reply for {}",
            crate::config::format_duration(d)
        ),
    }
}

/// A configuration from YAML text added to a minimal valid one (node `a`, a bcast medium,
/// inline keys), for tests.
#[cfg(test)]
pub(crate) fn test_config(extra: &str) -> Config {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hbd.yaml");
    let text = format!(
        "nodes: [a, b]\nauto_failback: on\nmedia: [ {{ bcast: {{ interface: eth0 }} }} ]\n\
         auth: {{ active: 1, keys: [ {{ id: 1, method: sha1, key: k }} ] }}\n{extra}"
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    crate::config::load_yaml(&path, "a")
        .unwrap_or_else(|e| panic!("{e}"))
        .config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_interval_is_a_quarter_of_deadping_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(probe_interval(ms(100)), ms(25));
        assert_eq!(probe_interval(ms(3)), MIN_PROBE_INTERVAL);
        assert_eq!(probe_interval(Duration::from_secs(30)), MAX_PROBE_INTERVAL);
    }

    #[test]
    fn the_report_serialises_with_stable_names() {
        let config = test_config(
            "timing: { keepalive: 10ms, deadtime: 100ms, deadping: 100ms }\nping: [203.0.113.1]\n",
        );
        let t0 = crate::clock::now();
        let mut targets = Targets::from_config(&config, t0);
        targets.on_reply("203.0.113.1".parse().unwrap(), t0);
        let mut policy = ReachabilityPolicy::new(config.ping_hysteresis, t0);
        policy.observe(targets.advertised(), None, t0);
        let json = serde_json::to_value(ReachabilityReport::new(&targets, &policy, t0)).unwrap();
        assert_eq!(json["targets"][0]["name"], "203.0.113.1");
        assert_eq!(json["targets"][0]["kind"], "node");
        assert_eq!(json["targets"][0]["state"], "up");
        assert_eq!(json["targets"][0]["members"][0]["answering"], true);
        assert_eq!(json["policy"]["local"]["reachable"], 1);
        assert_eq!(json["policy"]["peer"], serde_json::Value::Null);
        assert_eq!(json["policy"]["standing"], "unknown");
        assert_eq!(json["policy"]["hysteresis_ms"], 200);
    }

    #[tokio::test]
    async fn the_task_reports_loopback_up_and_an_unused_address_dead() {
        // 127.0.0.1 answers. Every 127/8 address answers on Linux, and test traffic stays on
        // this host, so the silent target is the limited broadcast address: the kernel
        // refuses to send to it without SO_BROADCAST (a counted send error, nothing leaves).
        let config = test_config(
            "timing: { keepalive: 10ms, deadtime: 100ms, deadping: 100ms }\n\
             ping: [127.0.0.1]\nping_groups: [ { name: gone, addresses: [255.255.255.255] } ]\n",
        );
        let (handle, mut updates) = Reachability::spawn(&config);
        let mut up = false;
        let mut dead = false;
        let mut advertised = None;
        while !(up && dead && advertised.is_some()) {
            let u = tokio::time::timeout(Duration::from_secs(5), updates.recv())
                .await
                .expect("an update within 5 s")
                .expect("task alive");
            for e in &u.events {
                up |= e.target == "127.0.0.1" && e.to == TargetState::Up;
                dead |= e.target == "gone" && e.to == TargetState::Dead;
            }
            advertised = u.advertised;
        }
        assert_eq!(
            advertised,
            Some(Reach {
                reachable: 1,
                total: 2
            })
        );
        assert_eq!(handle.advertised(), advertised);
        assert_eq!(handle.targets().targets().len(), 2);

        // A reload drops the silent group; the loopback node keeps its state.
        handle.reload(&test_config(
            "timing: { keepalive: 10ms, deadtime: 100ms, deadping: 100ms }\nping: [127.0.0.1]\n",
        ));
        let one = Some(Reach {
            reachable: 1,
            total: 1,
        });
        let u = tokio::time::timeout(Duration::from_secs(5), updates.recv())
            .await
            .expect("an update after the reload")
            .expect("task alive");
        assert_eq!(u.advertised, one);
        assert!(u.events.is_empty(), "{:?}", u.events);
        assert_eq!(handle.targets().targets()[0].state(), TargetState::Up);
    }
}
