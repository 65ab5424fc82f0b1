//! The ordered resource-group executor (heartbeat `ResourceManager takegroup/givegroup`).
//!
//! * [`start_group`]: left to right; a member whose status already says running is skipped
//!   (heartbeat `acquireresourcegroup`). On the first failed start, the failed member and
//!   every member before it are stopped right to left, and the error names the member.
//! * [`stop_group`]: right to left; each stop is retried ([`GroupPolicy`]). If it still fails
//!   while status says running (or cannot tell), the group is *stuck*: [`GroupError::StopFailed`]
//!   is returned at once and the members to its left are left alone (they may be what the
//!   stuck member depends on). The caller must then hold the group failed and never let the
//!   peer start it — heartbeat reboots the node here instead. A failed stop whose status says
//!   stopped is logged ("probably not LSB-compliant") and counted as stopped.
//!
//! Generic over [`GroupMember`], so the policy is unit-tested with fakes on a paused clock.

use std::future::Future;
use std::time::Duration;

use super::Resource;
use super::status::ResourceStatus;

/// Boxed error of a member operation.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Stop attempts per member before giving up (heartbeat `HA_STOPRETRYMAX` is 10, 1 s apart;
/// hbd defaults to 5 × 500 ms so a stuck member is reported within ~2 s of takeover work).
pub const DEFAULT_STOP_ATTEMPTS: u32 = 5;
/// Pause between stop attempts.
pub const DEFAULT_STOP_RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// Retry policy of [`stop_group`] (and of the rollback in [`start_group`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupPolicy {
    /// Stop attempts per member (at least one is always made).
    pub stop_attempts: u32,
    /// Pause between attempts.
    pub stop_retry_interval: Duration,
}

impl Default for GroupPolicy {
    fn default() -> Self {
        GroupPolicy {
            stop_attempts: DEFAULT_STOP_ATTEMPTS,
            stop_retry_interval: DEFAULT_STOP_RETRY_INTERVAL,
        }
    }
}

/// One member of a group as the executor sees it.
pub trait GroupMember {
    /// Name used in logs and errors.
    fn name(&self) -> String;
    /// Starts the member.
    fn start(&self) -> impl Future<Output = Result<(), BoxError>> + Send;
    /// Stops the member.
    fn stop(&self) -> impl Future<Output = Result<(), BoxError>> + Send;
    /// Checks the member.
    fn status(&self) -> impl Future<Output = Result<ResourceStatus, BoxError>> + Send;
}

impl GroupMember for Resource {
    fn name(&self) -> String {
        Resource::name(self)
    }
    async fn start(&self) -> Result<(), BoxError> {
        Resource::start(self).await.map_err(Into::into)
    }
    async fn stop(&self) -> Result<(), BoxError> {
        Resource::stop(self).await.map_err(Into::into)
    }
    async fn status(&self) -> Result<ResourceStatus, BoxError> {
        Resource::status(self).await.map_err(Into::into)
    }
}

/// Why a group operation did not complete.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// A member failed to start; the members started so far were stopped again.
    #[error("giving up group: start of {resource} failed: {source}{}", rollback_note(.rollback))]
    StartFailed {
        /// The member that failed.
        resource: String,
        /// Its error.
        #[source]
        source: BoxError,
        /// Set when the rollback itself got stuck (the group must be held failed).
        rollback: Option<Box<GroupError>>,
    },
    /// A member could not be stopped and still (or possibly) runs: hold the group failed.
    #[error(
        "stop of {resource} failed {attempts} times and it is still {status:?}: \
         the group is held failed and must not be started elsewhere: {source}"
    )]
    StopFailed {
        /// The stuck member.
        resource: String,
        /// Stop attempts made.
        attempts: u32,
        /// Status after the last attempt.
        status: ResourceStatus,
        /// The last stop error.
        #[source]
        source: BoxError,
    },
}

fn rollback_note(rollback: &Option<Box<GroupError>>) -> String {
    match rollback {
        Some(e) => format!("; rollback got stuck: {e}"),
        None => String::new(),
    }
}

impl GroupError {
    /// Whether some member may still run after this error, so the group must be held
    /// failed here and never started on the peer.
    pub fn holds_group_failed(&self) -> bool {
        match self {
            GroupError::StopFailed { .. } => true,
            GroupError::StartFailed { rollback, .. } => rollback.is_some(),
        }
    }
}

/// Stops one member with retries; see the module docs for the stuck case.
pub async fn stop_member<R: GroupMember>(m: &R, policy: GroupPolicy) -> Result<(), GroupError> {
    let attempts = policy.stop_attempts.max(1);
    let mut last: Option<BoxError> = None;
    for attempt in 1..=attempts {
        match m.stop().await {
            Ok(()) => {
                tracing::info!(resource = %m.name(), attempt, "resource stopped");
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(resource = %m.name(), attempt, attempts, error = %e, "stop failed");
                last = Some(e);
            }
        }
        if attempt < attempts {
            tokio::time::sleep(policy.stop_retry_interval).await;
        }
    }
    let status = match m.status().await {
        Ok(s) => s,
        Err(e) => ResourceStatus::Unknown(e.to_string()),
    };
    let source = last.unwrap_or_else(|| "stop failed".into());
    if status == ResourceStatus::Stopped {
        tracing::warn!(
            resource = %m.name(), error = %source,
            "stop failed but status says stopped: probably not LSB-compliant; counted as stopped"
        );
        return Ok(());
    }
    Err(GroupError::StopFailed {
        resource: m.name(),
        attempts,
        status,
        source,
    })
}

/// Starts the members left to right; on failure rolls back right to left (see module docs).
pub async fn start_group<R: GroupMember>(
    members: &[R],
    policy: GroupPolicy,
) -> Result<(), GroupError> {
    for (i, m) in members.iter().enumerate() {
        if let Ok(ResourceStatus::Running) = m.status().await {
            tracing::info!(resource = %m.name(), "already running, not started again");
            continue;
        }
        if let Err(source) = m.start().await {
            tracing::error!(resource = %m.name(), error = %source, "start failed, giving up the group");
            let mut rollback = None;
            for earlier in members[..=i].iter().rev() {
                if let Err(e) = stop_member(earlier, policy).await {
                    rollback = Some(Box::new(e));
                    break;
                }
            }
            return Err(GroupError::StartFailed {
                resource: m.name(),
                source,
                rollback,
            });
        }
        tracing::info!(resource = %m.name(), "resource started");
    }
    Ok(())
}

/// Stops the members right to left, each with retries; stops at the first stuck member.
pub async fn stop_group<R: GroupMember>(
    members: &[R],
    policy: GroupPolicy,
) -> Result<(), GroupError> {
    for m in members.iter().rev() {
        stop_member(m, policy).await?;
    }
    Ok(())
}

/// Every member's status, left to right; a failed check is reported as `Unknown`.
pub async fn status_group<R: GroupMember>(members: &[R]) -> Vec<(String, ResourceStatus)> {
    let mut out = Vec::with_capacity(members.len());
    for m in members {
        let s = match m.status().await {
            Ok(s) => s,
            Err(e) => ResourceStatus::Unknown(e.to_string()),
        };
        out.push((m.name(), s));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    type Log = Arc<Mutex<Vec<(String, Duration)>>>;

    /// A fake member: start fails when `start_fails`; the first `stop_failures` stops fail;
    /// status is whatever `running` says (start sets it, a successful stop clears it).
    struct Fake {
        name: &'static str,
        start_fails: bool,
        stop_failures: Mutex<u32>,
        stop_leaves_running: bool,
        running: Mutex<bool>,
        log: Log,
        t0: Instant,
    }

    impl Fake {
        fn new(name: &'static str, log: &Log, t0: Instant) -> Fake {
            Fake {
                name,
                start_fails: false,
                stop_failures: Mutex::new(0),
                stop_leaves_running: true,
                running: Mutex::new(false),
                log: Arc::clone(log),
                t0,
            }
        }
        fn note(&self, what: &str) {
            self.log
                .lock()
                .unwrap()
                .push((format!("{what} {}", self.name), clock::since(self.t0)));
        }
    }

    impl GroupMember for Fake {
        fn name(&self) -> String {
            self.name.to_string()
        }
        async fn start(&self) -> Result<(), BoxError> {
            self.note("start");
            if self.start_fails {
                return Err("boom".into());
            }
            *self.running.lock().unwrap() = true;
            Ok(())
        }
        async fn stop(&self) -> Result<(), BoxError> {
            self.note("stop");
            let mut f = self.stop_failures.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                if !self.stop_leaves_running {
                    *self.running.lock().unwrap() = false;
                }
                return Err("stop refused".into());
            }
            *self.running.lock().unwrap() = false;
            Ok(())
        }
        async fn status(&self) -> Result<ResourceStatus, BoxError> {
            Ok(if *self.running.lock().unwrap() {
                ResourceStatus::Running
            } else {
                ResourceStatus::Stopped
            })
        }
    }

    fn names(log: &Log) -> Vec<String> {
        log.lock().unwrap().iter().map(|(n, _)| n.clone()).collect()
    }

    fn policy() -> GroupPolicy {
        GroupPolicy {
            stop_attempts: 3,
            stop_retry_interval: Duration::from_secs(1),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn start_left_to_right_stop_right_to_left() {
        let log = Log::default();
        let t0 = clock::now();
        let g = [
            Fake::new("a", &log, t0),
            Fake::new("b", &log, t0),
            Fake::new("c", &log, t0),
        ];
        start_group(&g, policy()).await.unwrap();
        stop_group(&g, policy()).await.unwrap();
        assert_eq!(
            names(&log),
            [
                "start a", "start b", "start c", "stop c", "stop b", "stop a"
            ]
        );
        let st = status_group(&g).await;
        assert!(st.iter().all(|(_, s)| *s == ResourceStatus::Stopped));
    }

    #[tokio::test(start_paused = true)]
    async fn running_members_are_not_started_again() {
        let log = Log::default();
        let t0 = clock::now();
        let g = [Fake::new("a", &log, t0), Fake::new("b", &log, t0)];
        *g[0].running.lock().unwrap() = true;
        start_group(&g, policy()).await.unwrap();
        assert_eq!(names(&log), ["start b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_start_rolls_back_in_reverse_and_names_the_member() {
        let log = Log::default();
        let t0 = clock::now();
        let mut c = Fake::new("c", &log, t0);
        c.start_fails = true;
        let g = [
            Fake::new("a", &log, t0),
            Fake::new("b", &log, t0),
            c,
            Fake::new("d", &log, t0),
        ];
        let e = start_group(&g, policy()).await.unwrap_err();
        assert_eq!(
            names(&log),
            [
                "start a", "start b", "start c", "stop c", "stop b", "stop a"
            ]
        );
        assert!(e.to_string().contains("start of c failed"), "{e}");
        assert!(!e.holds_group_failed());
    }

    #[tokio::test(start_paused = true)]
    async fn stop_is_retried_at_the_configured_interval() {
        let log = Log::default();
        let t0 = clock::now();
        let g = [Fake::new("a", &log, t0), Fake::new("b", &log, t0)];
        start_group(&g, policy()).await.unwrap();
        *g[1].stop_failures.lock().unwrap() = 2;
        stop_group(&g, policy()).await.unwrap();
        let l = log.lock().unwrap().clone();
        let stops: Vec<_> = l.iter().filter(|(n, _)| n.starts_with("stop")).collect();
        assert_eq!(stops.len(), 4);
        assert_eq!(stops[0], &("stop b".to_string(), Duration::ZERO));
        assert_eq!(stops[1], &("stop b".to_string(), Duration::from_secs(1)));
        assert_eq!(stops[2], &("stop b".to_string(), Duration::from_secs(2)));
        assert_eq!(stops[3], &("stop a".to_string(), Duration::from_secs(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn stuck_member_is_stop_failed_and_left_members_untouched() {
        let log = Log::default();
        let t0 = clock::now();
        let g = [
            Fake::new("a", &log, t0),
            Fake::new("b", &log, t0),
            Fake::new("c", &log, t0),
        ];
        start_group(&g, policy()).await.unwrap();
        *g[1].stop_failures.lock().unwrap() = 99;
        let e = stop_group(&g, policy()).await.unwrap_err();
        assert!(e.holds_group_failed());
        match &e {
            GroupError::StopFailed {
                resource,
                attempts,
                status,
                ..
            } => {
                assert_eq!(resource, "b");
                assert_eq!(*attempts, 3);
                assert_eq!(*status, ResourceStatus::Running);
            }
            other => panic!("{other}"),
        }
        assert_eq!(names(&log)[3..], ["stop c", "stop b", "stop b", "stop b"]);
        assert_eq!(clock::since(t0), Duration::from_secs(2));
        assert!(*g[0].running.lock().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_stop_with_stopped_status_counts_as_stopped() {
        let log = Log::default();
        let t0 = clock::now();
        let mut b = Fake::new("b", &log, t0);
        b.stop_leaves_running = false;
        *b.stop_failures.lock().unwrap() = 99;
        let g = [Fake::new("a", &log, t0), b];
        start_group(&g, policy()).await.unwrap();
        stop_group(&g, policy()).await.unwrap();
        assert_eq!(names(&log).last().unwrap(), "stop a");
    }

    #[tokio::test(start_paused = true)]
    async fn stuck_rollback_holds_the_group_failed() {
        let log = Log::default();
        let t0 = clock::now();
        let a = Fake::new("a", &log, t0);
        *a.stop_failures.lock().unwrap() = 99;
        let mut b = Fake::new("b", &log, t0);
        b.start_fails = true;
        let g = [a, b];
        let e = start_group(&g, policy()).await.unwrap_err();
        assert!(e.holds_group_failed(), "{e}");
        assert!(e.to_string().contains("rollback got stuck"), "{e}");
    }
}
