//! Runs thousands of checks on their intervals with bounded concurrency.
//!
//! * **Shared checks** (features §4 item 10): checks with the same [`CheckKey`] — same probed
//!   address, same check and timing — run once per interval however many virtual services
//!   list that real; each result is fanned out to every subscribed [`TargetId`].
//! * **Jittered first start**: a check first runs at an offset in `[0, interval)` derived from
//!   a hash of its key, so 5,000 reals configured at once do not fire in the same millisecond,
//!   and a given configuration always produces the same schedule (repeatable tests).
//! * **Fixed rate**: a check starts every `interval` from its first start (not `interval` after
//!   the previous one ended). A start held back by the concurrency bound runs late; a whole
//!   interval missed is skipped (counted), so a real is never checked twice back-to-back.
//! * **Bounded concurrency**: at most `max_concurrent` checks run at once (a tokio
//!   [`Semaphore`]); this bounds sockets, processes and memory.
//! * **Cancellable**: removing the last subscriber of a check aborts its task; dropping the
//!   scheduler aborts all of them.
//!
//! Results arrive on an mpsc channel as `(TargetId, CheckResult, Instant)` (completion time);
//! a slow receiver applies back-pressure to the checks rather than growing a queue.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::clock;
use crate::director::checks::{
    CheckKind, CheckResult, CheckSession, CheckSpec, CheckTarget, CheckVip, Probe,
};

/// The caller's name for one (virtual service, real) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(pub u64);

/// One delivered result: who, what, and when the check finished.
pub type CheckReport = (TargetId, CheckResult, Instant);

/// What makes two checks the same check: the normalised target (only external commands see
/// the virtual service; ping ignores ports), the check kind, its timeout and interval.
/// Rise/fall are per subscriber and not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckKey {
    target: CheckTarget,
    kind: CheckKind,
    timeout: Duration,
    interval: Duration,
}

impl CheckKey {
    /// The key of `spec` applied to `target`.
    pub fn new(spec: &CheckSpec, target: &CheckTarget) -> CheckKey {
        let mut real = target.check_addr();
        let vip = match spec.kind {
            CheckKind::External { .. } => target.vip,
            _ => CheckVip::Fwmark(0),
        };
        if matches!(
            spec.kind,
            CheckKind::Ping { .. } | CheckKind::On | CheckKind::Off
        ) {
            real.set_port(0);
        }
        CheckKey {
            target: CheckTarget {
                real,
                vip,
                check_port: None,
            },
            kind: spec.kind.clone(),
            timeout: spec.timeout,
            interval: spec.interval,
        }
    }

    /// Deterministic first-start offset in `[0, interval)`, in whole milliseconds (the
    /// tokio timer's resolution).
    pub fn jitter(&self) -> Duration {
        let millis = self.interval.as_millis();
        if millis == 0 {
            return Duration::ZERO;
        }
        // DefaultHasher::new() uses fixed keys: the same key gives the same offset every run.
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        let off = u128::from(h.finish()) % millis;
        Duration::from_millis(u64::try_from(off).unwrap_or(0))
    }
}

/// Counters for status and the benchmark.
#[derive(Debug, Default)]
struct Counters {
    checks: AtomicU64,
    skipped: AtomicU64,
    max_lateness_ns: AtomicU64,
}

/// A snapshot of the scheduler's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchedulerStats {
    /// Checks completed.
    pub checks: u64,
    /// Whole intervals skipped because a check started more than one interval late.
    pub skipped: u64,
    /// Largest delay between a check's scheduled and actual start.
    pub max_lateness: Duration,
}

/// Who receives one check's results. Copy-on-write: `add`/`remove` (rare) build a new list,
/// each result (thousands per second) takes a reference to the current one, no copy.
type Subscribers = Arc<Mutex<Arc<[TargetId]>>>;

struct SharedCheck {
    subscribers: Subscribers,
    task: AbortHandle,
}

/// Runs checks on their intervals (module docs). Must be used inside a tokio runtime.
pub struct CheckScheduler<P: Probe> {
    probe: Arc<P>,
    limit: Arc<Semaphore>,
    tx: mpsc::Sender<CheckReport>,
    checks: HashMap<CheckKey, SharedCheck>,
    by_id: HashMap<TargetId, CheckKey>,
    counters: Arc<Counters>,
}

impl<P: Probe> CheckScheduler<P> {
    /// A scheduler running at most `max_concurrent` (at least 1) checks at once and sending
    /// results to `tx`.
    pub fn new(probe: Arc<P>, max_concurrent: usize, tx: mpsc::Sender<CheckReport>) -> Self {
        CheckScheduler {
            probe,
            limit: Arc::new(Semaphore::new(max_concurrent.max(1))),
            tx,
            checks: HashMap::new(),
            by_id: HashMap::new(),
            counters: Arc::new(Counters::default()),
        }
    }

    /// Starts checking `target` with `spec` for `id` (replacing what `id` had). If an identical
    /// check already runs, `id` joins it. Returns true when a new check task was started.
    pub fn add(&mut self, id: TargetId, target: CheckTarget, spec: CheckSpec) -> bool {
        self.remove(id);
        let key = CheckKey::new(&spec, &target);
        self.by_id.insert(id, key.clone());
        if let Some(shared) = self.checks.get(&key) {
            let mut subs = shared.subscribers.lock().unwrap_or_else(|e| e.into_inner());
            *subs = subs.iter().copied().chain([id]).collect();
            return false;
        }
        let subscribers: Subscribers = Arc::new(Mutex::new(Arc::from([id])));
        let first = clock::now() + key.jitter();
        let task = tokio::spawn(run(
            self.probe.clone(),
            self.limit.clone(),
            self.tx.clone(),
            subscribers.clone(),
            self.counters.clone(),
            spec,
            target,
            first,
        ))
        .abort_handle();
        self.checks.insert(key, SharedCheck { subscribers, task });
        true
    }

    /// Stops delivering results for `id`; the check itself stops when nobody else shares it.
    pub fn remove(&mut self, id: TargetId) {
        let Some(key) = self.by_id.remove(&id) else {
            return;
        };
        let empty = match self.checks.get(&key) {
            Some(shared) => {
                let mut subs = shared.subscribers.lock().unwrap_or_else(|e| e.into_inner());
                *subs = subs.iter().copied().filter(|s| *s != id).collect();
                subs.is_empty()
            }
            None => false,
        };
        if empty && let Some(shared) = self.checks.remove(&key) {
            shared.task.abort();
        }
    }

    /// Number of distinct checks running (after sharing).
    pub fn running(&self) -> usize {
        self.checks.len()
    }

    /// Number of subscribed targets.
    pub fn targets(&self) -> usize {
        self.by_id.len()
    }

    /// Counters so far.
    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            checks: self.counters.checks.load(Ordering::Relaxed),
            skipped: self.counters.skipped.load(Ordering::Relaxed),
            max_lateness: Duration::from_nanos(
                self.counters.max_lateness_ns.load(Ordering::Relaxed),
            ),
        }
    }
}

impl<P: Probe> CheckScheduler<P> {
    /// Restarts the max-lateness measurement (e.g. after a warm-up or a reload).
    pub fn reset_max_lateness(&self) {
        self.counters.max_lateness_ns.store(0, Ordering::Relaxed);
    }
}

impl<P: Probe> Drop for CheckScheduler<P> {
    fn drop(&mut self) {
        for shared in self.checks.values() {
            shared.task.abort();
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run<P: Probe>(
    probe: Arc<P>,
    limit: Arc<Semaphore>,
    tx: mpsc::Sender<CheckReport>,
    subscribers: Subscribers,
    counters: Arc<Counters>,
    spec: CheckSpec,
    target: CheckTarget,
    first: Instant,
) {
    let interval = spec.interval.max(Duration::from_millis(1));
    let mut next = first;
    // What this check keeps between runs (a kept-alive connection); dropped with the task.
    let mut session = CheckSession::default();
    // One timer for the task's life, moved on after each run rather than made anew.
    let timer = tokio::time::sleep_until(next);
    tokio::pin!(timer);
    loop {
        timer.as_mut().reset(next);
        timer.as_mut().await;
        let Ok(permit) = limit.acquire().await else {
            return;
        };
        let began = clock::now();
        let late = u64::try_from((began - next).as_nanos()).unwrap_or(u64::MAX);
        counters.max_lateness_ns.fetch_max(late, Ordering::Relaxed);
        let result = probe.probe_in(&spec, &target, &mut session).await;
        drop(permit);
        let done = clock::now();
        counters.checks.fetch_add(1, Ordering::Relaxed);
        let subs = Arc::clone(&subscribers.lock().unwrap_or_else(|e| e.into_inner()));
        // A copy of the result for each subscriber but the last, which takes it (usually the
        // only one: no copy at all).
        if let Some((&last, others)) = subs.split_last() {
            for &id in others {
                if tx.send((id, result.clone(), done)).await.is_err() {
                    return;
                }
            }
            if tx.send((last, result, done)).await.is_err() {
                return;
            }
        }
        next += interval;
        let now = clock::now();
        while next + interval <= now {
            next += interval;
            counters.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::director::HttpMethod;
    use crate::director::http::{HttpCheck, HttpStatus};
    use futures::future::BoxFuture;
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::path::PathBuf;

    /// Records when each probed address was checked and how many checks overlapped.
    #[derive(Default)]
    struct FakeProbe {
        took: Duration,
        starts: Mutex<BTreeMap<SocketAddr, Vec<Instant>>>,
        in_flight: AtomicU64,
        max_in_flight: AtomicU64,
    }

    impl Probe for FakeProbe {
        fn probe<'a>(
            &'a self,
            _spec: &'a CheckSpec,
            target: &'a CheckTarget,
        ) -> BoxFuture<'a, CheckResult> {
            Box::pin(async move {
                self.starts
                    .lock()
                    .unwrap()
                    .entry(target.check_addr())
                    .or_default()
                    .push(clock::now());
                let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_in_flight.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(self.took).await;
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                CheckResult {
                    ok: true,
                    reason: "fake".into(),
                    took: self.took,
                }
            })
        }
    }

    fn target(i: u16) -> CheckTarget {
        CheckTarget {
            real: SocketAddr::from(([192, 0, 2, 1], 1000 + i)),
            vip: CheckVip::Addr("198.51.100.10:80".parse().unwrap()),
            check_port: None,
        }
    }

    fn spec(interval_ms: u64) -> CheckSpec {
        CheckSpec {
            kind: CheckKind::Connect,
            timeout: Duration::from_millis(500),
            interval: Duration::from_millis(interval_ms),
            rise: 1,
            fall: 1,
        }
    }

    fn drain(mut rx: mpsc::Receiver<CheckReport>) -> tokio::task::JoinHandle<Vec<CheckReport>> {
        tokio::spawn(async move {
            let mut v = Vec::new();
            while let Some(r) = rx.recv().await {
                v.push(r);
            }
            v
        })
    }

    #[tokio::test(start_paused = true)]
    async fn checks_run_once_per_interval_after_a_deterministic_jitter() {
        let probe = Arc::new(FakeProbe {
            took: Duration::from_millis(10),
            ..Default::default()
        });
        let (tx, rx) = mpsc::channel(1000);
        let mut s = CheckScheduler::new(probe.clone(), 100, tx);
        let t0 = clock::now();
        for i in 0..20 {
            assert!(s.add(TargetId(u64::from(i)), target(i), spec(1000)));
        }
        tokio::time::sleep(Duration::from_millis(5500)).await;
        let starts = probe.starts.lock().unwrap().clone();
        assert_eq!(starts.len(), 20);
        let mut offsets = Vec::new();
        for (i, (addr, times)) in starts.iter().enumerate() {
            let key = CheckKey::new(&spec(1000), &target(addr.port() - 1000));
            let off = times[0] - t0;
            assert_eq!(off, key.jitter(), "target {i}: first start at its jitter");
            assert!(off < Duration::from_secs(1));
            offsets.push(off);
            assert!(
                times.len() == 5 || times.len() == 6,
                "{addr}: {}",
                times.len()
            );
            for w in times.windows(2) {
                assert_eq!(w[1] - w[0], Duration::from_secs(1), "{addr}: fixed rate");
            }
        }
        offsets.sort();
        offsets.dedup();
        assert!(offsets.len() >= 18, "first starts are spread: {offsets:?}");
        assert_eq!(s.stats().max_lateness, Duration::ZERO);
        assert_eq!(s.stats().skipped, 0);
        drop(s);
        let reports = drain(rx).await.unwrap();
        assert_eq!(
            reports.len() as u64,
            probe
                .starts
                .lock()
                .unwrap()
                .values()
                .map(|v| v.len() as u64)
                .sum::<u64>()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded_and_late_checks_are_counted() {
        let probe = Arc::new(FakeProbe {
            took: Duration::from_millis(100),
            ..Default::default()
        });
        let (tx, rx) = mpsc::channel(10_000);
        let reports = drain(rx);
        let mut s = CheckScheduler::new(probe.clone(), 5, tx);
        for i in 0..100 {
            s.add(TargetId(u64::from(i)), target(i), spec(1000));
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(probe.max_in_flight.load(Ordering::SeqCst), 5);
        // 5 slots × 100 ms = 50 checks/s for 100 checks/s wanted: starts run late.
        let st = s.stats();
        assert!(st.max_lateness > Duration::from_millis(500), "{st:?}");
        assert!((150..=210).contains(&st.checks), "{st:?}");
        drop(s);
        assert!(!reports.await.unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn identical_checks_are_shared_and_fanned_out() {
        let probe = Arc::new(FakeProbe::default());
        let (tx, rx) = mpsc::channel(1000);
        let reports = drain(rx);
        let mut s = CheckScheduler::new(probe.clone(), 10, tx);
        // Same real behind two virtual services: one check.
        let mut other_vip = target(1);
        other_vip.vip = CheckVip::Fwmark(7);
        assert!(s.add(TargetId(1), target(1), spec(1000)));
        assert!(!s.add(TargetId(2), other_vip, spec(1000)));
        // A checkport equal to the real port is the same probe too.
        let mut same_port = target(1);
        same_port.check_port = Some(1001);
        assert!(!s.add(TargetId(3), same_port, spec(1000)));
        // A different interval is a different check.
        assert!(s.add(TargetId(4), target(1), spec(2000)));
        assert_eq!((s.running(), s.targets()), (2, 4));
        tokio::time::sleep(Duration::from_millis(3999)).await;
        let n = probe.starts.lock().unwrap()[&target(1).real].len();
        assert!((5..=6).contains(&n), "3-4 runs at 1 s + 2 at 2 s, got {n}");
        drop(s);
        let reports = reports.await.unwrap();
        let count = |id| reports.iter().filter(|r| r.0 == TargetId(id)).count();
        assert_eq!(count(1), count(2));
        assert_eq!(count(1), count(3));
        assert!(count(1) >= 3 && count(4) == 2, "{} {}", count(1), count(4));
    }

    #[test]
    fn external_checks_are_shared_only_for_the_same_virtual_service() {
        let ext = CheckSpec {
            kind: CheckKind::External {
                command: PathBuf::from("/bin/true"),
            },
            ..spec(1000)
        };
        let mut other = target(1);
        other.vip = CheckVip::Fwmark(7);
        assert_ne!(CheckKey::new(&ext, &target(1)), CheckKey::new(&ext, &other));
        let http = CheckSpec {
            kind: CheckKind::Http(HttpCheck {
                https: false,
                method: HttpMethod::Get,
                request: "/".into(),
                receive: None,
                virtual_host: None,
                status: HttpStatus::Any2xx,
            }),
            ..spec(1000)
        };
        assert_eq!(
            CheckKey::new(&http, &target(1)),
            CheckKey::new(&http, &other)
        );
        // Ping ignores ports; rise/fall do not matter.
        let ping = CheckSpec {
            kind: CheckKind::Ping { count: 1 },
            rise: 3,
            ..spec(1000)
        };
        assert_eq!(
            CheckKey::new(&ping, &target(1)),
            CheckKey::new(
                &CheckSpec {
                    kind: CheckKind::Ping { count: 1 },
                    ..spec(1000)
                },
                &target(2)
            )
        );
    }

    #[tokio::test(start_paused = true)]
    async fn removing_the_last_subscriber_and_dropping_stop_the_checks() {
        let probe = Arc::new(FakeProbe::default());
        let (tx, rx) = mpsc::channel(1000);
        let reports = drain(rx);
        let mut s = CheckScheduler::new(probe.clone(), 10, tx);
        s.add(TargetId(1), target(1), spec(100));
        s.add(TargetId(2), target(1), spec(100));
        s.add(TargetId(3), target(3), spec(100));
        tokio::time::sleep(Duration::from_secs(1)).await;
        s.remove(TargetId(1));
        assert_eq!(s.running(), 2, "still shared by 2");
        s.remove(TargetId(2));
        assert_eq!(s.running(), 1);
        let n1 = probe.starts.lock().unwrap()[&target(1).real].len();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(probe.starts.lock().unwrap()[&target(1).real].len(), n1);
        drop(s);
        let n3 = probe.starts.lock().unwrap()[&target(3).real].len();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(probe.starts.lock().unwrap()[&target(3).real].len(), n3);
        // Every sender is gone: the drain finishes.
        let reports = reports.await.unwrap();
        assert!(reports.iter().all(|r| r.1.ok));
    }
}
