//! What the daemon counts as things happen: heartbeat gaps, takeovers and their durations,
//! real-server check latencies and dataplane apply times. `metrics` renders it; the node, the
//! director and the dataplane feed it. It depends on nothing else in hbd, so anything can
//! feed it without an import circle through what renders it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// The process's telemetry (one daemon per process).
pub fn global() -> Arc<Telemetry> {
    static GLOBAL: OnceLock<Arc<Telemetry>> = OnceLock::new();
    GLOBAL.get_or_init(|| Arc::new(Telemetry::new())).clone()
}

/// Bucket bounds (seconds) for gaps between heartbeats: keepalives from 10 ms to 2 s, and
/// the late ones beyond.
const HEARTBEAT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];
/// Bucket bounds (seconds) for failovers: from a fast ucast pair's tenths to slow scripts.
const FAILOVER_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Bucket bounds (seconds) for health checks, up to ldirectord's default 5 s timeout and a
/// little beyond.
const CHECK_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bucket bounds (seconds) for applying a change to IPVS or nftables.
const APPLY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A histogram of durations with fixed bucket bounds; observing is two atomic adds.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in seconds, ascending.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: Box<[AtomicU64]>,
    /// Sum of all observations, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        let bucket = self.bounds.partition_point(|&b| b < seconds);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Cumulative counts per upper bound (`None` is `+Inf`), as the exposition format wants.
    pub fn cumulative(&self) -> Vec<(Option<f64>, u64)> {
        let mut total = 0;
        self.counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                total += c.load(Ordering::Relaxed);
                (self.bounds.get(i).copied(), total)
            })
            .collect()
    }

    /// Sum of all observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// The counters and histograms; observing is a few atomic adds (a map lookup for the
/// per-peer and per-group ones).
#[derive(Debug)]
pub struct Telemetry {
    heartbeat_gaps: Mutex<BTreeMap<String, Arc<Histogram>>>,
    failovers: Mutex<BTreeMap<String, u64>>,
    last_failover_nanos: AtomicU64,
    /// Takeovers here, from decision to running.
    pub failover_durations: Histogram,
    /// Real-server checks, from start to result.
    pub check_latency: Histogram,
    /// Changes applied to IPVS or nftables.
    pub dataplane_apply: Histogram,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

/// Locks a mutex even if a panicking holder poisoned it: the data are counters, still
/// worth showing.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Telemetry {
    /// Nothing counted yet.
    pub fn new() -> Telemetry {
        Telemetry {
            heartbeat_gaps: Mutex::new(BTreeMap::new()),
            failovers: Mutex::new(BTreeMap::new()),
            last_failover_nanos: AtomicU64::new(0),
            failover_durations: Histogram::new(FAILOVER_BUCKETS),
            check_latency: Histogram::new(CHECK_BUCKETS),
            dataplane_apply: Histogram::new(APPLY_BUCKETS),
        }
    }

    /// The gap histogram for heartbeats from `peer`; a node keeps the handle so observing a
    /// gap is atomics only.
    pub fn heartbeat_gaps(&self, peer: &str) -> Arc<Histogram> {
        lock(&self.heartbeat_gaps)
            .entry(peer.to_string())
            .or_insert_with(|| Arc::new(Histogram::new(HEARTBEAT_BUCKETS)))
            .clone()
    }

    /// Counts the gap between two heartbeats from `peer` (late beats land in the high
    /// buckets).
    pub fn observe_heartbeat_gap(&self, peer: &str, gap: Duration) {
        self.heartbeat_gaps(peer).observe(gap);
    }

    /// Counts a failover of `group` to this node, which took `took` from the decision (peer
    /// declared dead, or standby asked) to the group running here.
    pub fn observe_failover(&self, group: &str, took: Duration) {
        *lock(&self.failovers).entry(group.to_string()).or_default() += 1;
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.last_failover_nanos.store(nanos, Ordering::Relaxed);
        self.failover_durations.observe(took);
    }

    /// Counts one finished real-server check and how long it took.
    pub fn observe_check(&self, took: Duration) {
        self.check_latency.observe(took);
    }

    /// Counts one change applied to IPVS or nftables and how long it took.
    pub fn observe_dataplane_apply(&self, took: Duration) {
        self.dataplane_apply.observe(took);
    }

    /// Every peer's gap histogram, by peer name.
    pub fn heartbeat_gaps_by_peer(&self) -> Vec<(String, Arc<Histogram>)> {
        lock(&self.heartbeat_gaps)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Takeovers so far, by group.
    pub fn failovers_by_group(&self) -> Vec<(String, u64)> {
        lock(&self.failovers)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// How long the last takeover took, in seconds (0 when none yet).
    pub fn last_failover_seconds(&self) -> f64 {
        self.last_failover_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}
