//! A simulated cluster: real [`Node`] tasks over a [`MemoryNet`], observed through their
//! event channels and their control interface.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::RangeBounds;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hbd::config::{
    AuthKey, AuthKeys, AuthMethod, AutoFailback, Config, Logging, MediumSpec, MsgFormat, Timing,
};
use hbd::config::{GroupSpec, ResourceSpec};
use hbd::control::protocol::Response;
use hbd::control::protocol::{Request, StatusReport};
use hbd::control::server::ControlCall;
use hbd::daemon::node::{Node, NodeEvent, NodeIdentity, NodeSetup};
use hbd::daemon::runner::{GroupRunner, OpError, OpFuture};
use hbd::media::Medium;
use hbd::media::memory::MemoryNet;
use hbd::membership::liveness::{LivenessEvent, PeerState};
use hbd::reachability::{Reach, ReachUpdate};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The timers the project aims at: keepalive 10 ms, deadtime 30 ms.
pub fn fast_timing() -> Timing {
    Timing {
        keepalive: ms(10),
        deadtime: ms(30),
        warntime: ms(20),
        initdead: ms(100),
        deadping: ms(30),
    }
}

/// Keys with one sha256 key at index 1.
pub fn keys(secret: &str) -> AuthKeys {
    let mut keys = BTreeMap::new();
    keys.insert(
        1,
        AuthKey {
            method: AuthMethod::Sha256,
            secret: secret.as_bytes().to_vec(),
        },
    );
    AuthKeys { active: 1, keys }
}

/// A cluster configuration for `nodes` over `links` in-memory media.
pub fn config(nodes: &[&str], links: usize, timing: Timing, auth: AuthKeys) -> Config {
    Config {
        cluster_name: "sim".into(),
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        timing,
        media: (0..links)
            .map(|i| MediumSpec::Bcast {
                interface: format!("sim{i}"),
                port: 694,
            })
            .collect(),
        auth,
        msgfmt: MsgFormat::Classic,
        hopfudge: 1,
        auto_failback: AutoFailback::On,
        ping_nodes: vec![],
        ping_groups: vec![],
        ping_hysteresis: hbd::config::default_ping_hysteresis(timing.deadping),
        groups: vec![],
        logging: Logging::default(),
        respawn: vec![],
        apiauth: vec![],
        watchdog: None,
        director: None,
        vip_announce: Default::default(),
        metrics: None,
        fencing: None,
    }
}

/// Link names used on the in-memory network.
pub fn link_name(i: usize) -> String {
    format!("link{i}")
}

/// One running simulated node.
pub struct SimNode {
    /// Node name.
    pub name: String,
    /// Timestamped events.
    pub events: mpsc::UnboundedReceiver<(Instant, NodeEvent)>,
    control: mpsc::Sender<ControlCall>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    reach: mpsc::UnboundedSender<ReachUpdate>,
}

impl SimNode {
    /// Starts `name` with `config` and `generation` on `net`, with resources that do nothing.
    pub fn start(net: &MemoryNet, name: &str, config: &Config, generation: u64) -> SimNode {
        let runner = FakeRunner::new(name, &Trace::default(), config.groups.len());
        SimNode::start_with(net, name, config, generation, runner)
    }

    /// Starts `name` with a given runner.
    pub fn start_with(
        net: &MemoryNet,
        name: &str,
        config: &Config,
        generation: u64,
        runner: Arc<FakeRunner>,
    ) -> SimNode {
        SimNode::launch(net, name, config, generation, runner, None)
    }

    /// Starts `name` persisting peer generations in `state_dir`.
    pub fn start_persisting(
        net: &MemoryNet,
        name: &str,
        config: &Config,
        generation: u64,
        state_dir: PathBuf,
    ) -> SimNode {
        let runner = FakeRunner::new(name, &Trace::default(), config.groups.len());
        SimNode::launch(net, name, config, generation, runner, Some(state_dir))
    }

    fn launch(
        net: &MemoryNet,
        name: &str,
        config: &Config,
        generation: u64,
        runner: Arc<FakeRunner>,
        state_dir: Option<PathBuf>,
    ) -> SimNode {
        let (inbound_tx, inbound_rx) = mpsc::channel(1024);
        // A `serial` medium becomes an in-memory link that carries classic text, as a
        // serial line does; the others carry the node's frames as UDP does.
        let media = config
            .media
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let tx = net.attach(name, &link_name(i), i, inbound_tx.clone());
                let tx = match spec {
                    MediumSpec::Serial { .. } => tx.carrying_classic_text(),
                    _ => tx,
                };
                Medium {
                    name: link_name(i),
                    tx: Box::new(tx),
                }
            })
            .collect();
        let (observer, events) = mpsc::unbounded_channel();
        let mut uuid = [0u8; 16];
        uuid[..name.len().min(16)].copy_from_slice(&name.as_bytes()[..name.len().min(16)]);
        let (reach, reach_updates) = mpsc::unbounded_channel();
        let setup = NodeSetup {
            reachability: None,
            reach_updates: Some(reach_updates),
            watchdog: None,
            config: Arc::new(config.clone()),
            identity: NodeIdentity {
                name: name.to_string(),
                uuid,
                generation,
            },
            media,
            peer_generations: BTreeMap::new(),
            state_dir,
            report_load: false,
            observer: Some(observer),
            runner: Arc::new(FakeHandle(runner)),
            reloader: None,
        };
        let node = Node::new(setup, Instant::now());
        let (control, control_rx) = mpsc::channel(8);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(node.run_on_channels(inbound_rx, control_rx, shutdown_rx));
        SimNode {
            name: name.to_string(),
            events,
            control,
            shutdown,
            task,
            reach,
        }
    }

    /// The node's prober reports that `reachable` of `total` ping nodes/groups answer (as
    /// the daemon's prober task does on every change).
    pub fn set_reach(&self, reachable: u32, total: u32) {
        let _ = self.reach.send(ReachUpdate {
            advertised: Some(Reach { reachable, total }),
            events: Vec::new(),
        });
    }

    /// Stops the node as a crash would: it simply falls silent, releasing nothing.
    pub async fn kill(self, net: &MemoryNet) {
        net.detach(&self.name);
        self.task.abort();
        let _ = self.task.await;
    }

    /// Stops the node as SIGTERM does: it releases its groups to the peer, then exits.
    pub async fn stop(self, net: &MemoryNet) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        net.detach(&self.name);
    }

    /// The node's status report.
    pub async fn status(&self) -> StatusReport {
        self.request(Request::Status).await.status.expect("status")
    }

    /// Sends a control request and returns the answer.
    pub async fn request(&self, request: Request) -> Response {
        let (reply, answer) = oneshot::channel();
        self.control
            .send(ControlCall { request, reply })
            .await
            .expect("node running");
        answer.await.expect("answer")
    }

    /// Waits (in simulated time, at most `limit`) for an event matching `pred`; returns
    /// when it happened.
    pub async fn wait_for(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&NodeEvent) -> bool,
    ) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((at, event))) if pred(&event) => return Some(at),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    /// Drains events seen so far.
    pub fn drain(&mut self) -> Vec<(Instant, NodeEvent)> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        out
    }
}

/// Matches "peer `node` entered `state`".
pub fn peer_became(node: &str, state: PeerState) -> impl FnMut(&NodeEvent) -> bool + '_ {
    move |e| {
        matches!(e, NodeEvent::Liveness(LivenessEvent::PeerState { node: n, to, .. })
            if n == node && *to == state)
    }
}

/// Matches "peer `node` is alive (up or active)".
pub fn peer_alive(node: &str) -> impl FnMut(&NodeEvent) -> bool + '_ {
    move |e| {
        matches!(e, NodeEvent::Liveness(LivenessEvent::PeerState { node: n, to, .. })
            if n == node && to.is_alive())
    }
}

/// One frame seen on a link: when, who sent it, the bytes.
pub type Sent = (Instant, String, Vec<u8>);

/// Every frame sent on one link, timestamped as it is sent, by a task that [`record`] starts
/// and the recording stops when it drops.
pub struct Recording {
    frames: Arc<Mutex<Vec<Sent>>>,
    task: JoinHandle<()>,
}

/// Starts recording every frame sent on `link` of `net`.
pub fn record(net: &MemoryNet, link: &str) -> Recording {
    let mut tap = net.tap(link);
    let frames = Arc::new(Mutex::new(Vec::new()));
    let task = tokio::spawn({
        let frames = frames.clone();
        async move {
            while let Some((from, frame)) = tap.recv().await {
                frames.lock().unwrap().push((Instant::now(), from, frame));
            }
        }
    });
    Recording { frames, task }
}

impl Recording {
    /// The frames recorded so far, in order.
    pub fn frames(&self) -> Vec<Sent> {
        self.frames.lock().unwrap().clone()
    }

    /// When `sender` sent, within `within`.
    pub fn sent_by(&self, sender: &str, within: impl RangeBounds<Instant>) -> Vec<Instant> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, from, _)| from == sender && within.contains(t))
            .map(|(t, _, _)| *t)
            .collect()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Asserts that no two successive `times` are more than `limit` apart.
pub fn assert_paced(times: &[Instant], limit: Duration) {
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] <= limit,
            "interval {:?} over {limit:?} in {times:?}",
            w[1] - w[0]
        );
    }
}

/// A group with one VIP-like resource, preferred by `preferred`.
pub fn group(preferred: &str, name: &str) -> GroupSpec {
    GroupSpec {
        preferred: preferred.into(),
        resources: vec![ResourceSpec {
            spec: name.into(),
            kind: "IPaddr".into(),
            args: vec![name.into()],
        }],
    }
}

/// One recorded resource operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// When.
    pub at: Instant,
    /// Which node.
    pub node: String,
    /// Which group.
    pub group: usize,
    /// `start_begin`, `start_end`, `start_fail`, `stop_begin`, `stop_end`, `stop_fail`,
    /// `announce`, `crash`.
    pub event: &'static str,
}

/// Shared trace of every node's resource operations.
#[derive(Debug, Clone, Default)]
pub struct Trace(pub Arc<Mutex<Vec<TraceEntry>>>);

impl Trace {
    fn push(&self, node: &str, group: usize, event: &'static str) {
        self.0.lock().unwrap().push(TraceEntry {
            at: Instant::now(),
            node: node.to_string(),
            group,
            event,
        });
    }

    /// Records that `node` died with its machine: whatever it held is gone.
    pub fn crash(&self, node: &str, groups: usize) {
        for g in 0..groups {
            self.push(node, g, "crash");
        }
    }

    /// A copy of the entries so far.
    pub fn entries(&self) -> Vec<TraceEntry> {
        self.0.lock().unwrap().clone()
    }

    /// Intervals during which `node` may have held `group` (from a start's beginning to the
    /// end of the stop that follows; open intervals end at `until`).
    pub fn held(&self, node: &str, group: usize, until: Instant) -> Vec<(Instant, Instant)> {
        let mut out = Vec::new();
        let mut open: Option<Instant> = None;
        for e in self
            .entries()
            .iter()
            .filter(|e| e.node == node && e.group == group)
        {
            match e.event {
                "start_begin" if open.is_none() => open = Some(e.at),
                "start_fail" | "stop_end" | "crash" => {
                    if let Some(from) = open.take() {
                        out.push((from, e.at));
                    }
                }
                _ => {}
            }
        }
        if let Some(from) = open {
            out.push((from, until));
        }
        out
    }

    /// Total time both `a` and `b` held `group` within `window`.
    pub fn overlap(&self, a: &str, b: &str, group: usize, window: (Instant, Instant)) -> Duration {
        let ha = self.held(a, group, window.1);
        let hb = self.held(b, group, window.1);
        let mut total = Duration::ZERO;
        for (a0, a1) in &ha {
            for (b0, b1) in &hb {
                let from = (*a0).max(*b0).max(window.0);
                let to = (*a1).min(*b1).min(window.1);
                if to > from {
                    total += to - from;
                }
            }
        }
        total
    }

    /// When `node` last finished starting `group`.
    pub fn last(&self, node: &str, group: usize, event: &str) -> Option<Instant> {
        self.entries()
            .iter()
            .rev()
            .find(|e| e.node == node && e.group == group && e.event == event)
            .map(|e| e.at)
    }
}

/// Resources that take a fixed time and record what they do.
pub struct FakeRunner {
    node: String,
    trace: Trace,
    /// Time a start takes.
    pub start_delay: Duration,
    /// Time a stop takes.
    pub stop_delay: Duration,
    /// Make starts fail.
    pub fail_start: AtomicBool,
    /// Make stops fail.
    pub fail_stop: AtomicBool,
    /// Make failed starts report a stuck rollback (resources may still run here).
    pub stuck_rollback: AtomicBool,
    running: Mutex<Vec<bool>>,
}

impl FakeRunner {
    /// A runner for `node` with 1 ms operations.
    pub fn new(node: &str, trace: &Trace, groups: usize) -> Arc<FakeRunner> {
        Arc::new(FakeRunner {
            node: node.to_string(),
            trace: trace.clone(),
            start_delay: ms(1),
            stop_delay: ms(1),
            fail_start: AtomicBool::new(false),
            fail_stop: AtomicBool::new(false),
            stuck_rollback: AtomicBool::new(false),
            running: Mutex::new(vec![false; groups]),
        })
    }

    /// A runner whose groups are found running at start (left behind by a killed daemon).
    pub fn left_running(node: &str, trace: &Trace, groups: usize) -> Arc<FakeRunner> {
        let r = FakeRunner::new(node, trace, groups);
        r.running.lock().unwrap().iter_mut().for_each(|g| *g = true);
        r
    }
}

/// The shareable handle the node holds.
struct FakeHandle(Arc<FakeRunner>);

impl FakeHandle {
    /// A start (`start` true) or a stop: traced begin, its delay, then the traced failure
    /// when its failure flag is set, or else the group's new running state and the traced end.
    fn op(&self, group: usize, start: bool) -> OpFuture {
        let me = self.0.clone();
        Box::pin(async move {
            let (delay, failing, [begin, fail, end]) = if start {
                let events = ["start_begin", "start_fail", "start_end"];
                (me.start_delay, &me.fail_start, events)
            } else {
                let events = ["stop_begin", "stop_fail", "stop_end"];
                (me.stop_delay, &me.fail_stop, events)
            };
            me.trace.push(&me.node, group, begin);
            tokio::time::sleep(delay).await;
            if failing.load(Ordering::SeqCst) {
                me.trace.push(&me.node, group, fail);
                if !start {
                    // A failed stop leaves the group held here.
                    return Err(OpError::held("simulated stop failure"));
                }
                if me.stuck_rollback.load(Ordering::SeqCst) {
                    me.running.lock().unwrap()[group] = true;
                    return Err(OpError::held("simulated start failure, rollback stuck"));
                }
                return Err(OpError::clean("simulated start failure"));
            }
            me.running.lock().unwrap()[group] = start;
            me.trace.push(&me.node, group, end);
            Ok(())
        })
    }
}

impl GroupRunner for FakeHandle {
    fn start(&self, group: usize) -> OpFuture {
        self.op(group, true)
    }

    fn stop(&self, group: usize) -> OpFuture {
        self.op(group, false)
    }

    fn announce(&self, group: usize) -> OpFuture {
        let me = self.0.clone();
        Box::pin(async move {
            me.trace.push(&me.node, group, "announce");
            Ok(())
        })
    }

    fn probe(&self, group: usize) -> Pin<Box<dyn Future<Output = bool> + Send>> {
        let running = self.0.running.lock().unwrap()[group];
        if running {
            // What it left behind counts as held from now on.
            self.0.trace.push(&self.0.node, group, "start_begin");
        }
        Box::pin(async move { running })
    }
}

/// Starts nodes `a` (generation 1) and `b` (generation `b_generation`) with `cfg` and waits
/// until `a` sees `b` active.
pub async fn pair_active(net: &MemoryNet, cfg: &Config, b_generation: u64) -> (SimNode, SimNode) {
    let mut a = SimNode::start(net, "a", cfg, 1);
    let b = SimNode::start(net, "b", cfg, b_generation);
    assert!(
        a.wait_for(ms(50), peer_became("b", PeerState::Active))
            .await
            .is_some(),
        "a never saw b active"
    );
    (a, b)
}
