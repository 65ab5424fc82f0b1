//! A simulated cluster: real [`Node`] tasks over a [`MemoryNet`], observed through their
//! event channels and their control interface.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hbd::config::{
    AuthKey, AuthKeys, AuthMethod, AutoFailback, Config, Logging, MediumSpec, MsgFormat, Timing,
};
use hbd::control::protocol::{Request, StatusReport};
use hbd::control::server::ControlCall;
use hbd::daemon::node::{Node, NodeEvent, NodeIdentity, NodeSetup};
use hbd::media::Medium;
use hbd::media::memory::MemoryNet;
use hbd::membership::liveness::{LivenessEvent, PeerState};
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
        udp_port: 694,
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
        groups: vec![],
        logging: Logging::default(),
        respawn: vec![],
        apiauth: vec![],
        watchdog: None,
        director: None,
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
}

impl SimNode {
    /// Starts `name` with `config` and `generation` on `net`.
    pub fn start(net: &MemoryNet, name: &str, config: &Config, generation: u64) -> SimNode {
        let (inbound_tx, inbound_rx) = mpsc::channel(1024);
        let media = (0..config.media.len())
            .map(|i| Medium {
                name: link_name(i),
                tx: Box::new(net.attach(name, &link_name(i), i, inbound_tx.clone())),
            })
            .collect();
        let (observer, events) = mpsc::unbounded_channel();
        let mut uuid = [0u8; 16];
        uuid[..name.len().min(16)].copy_from_slice(&name.as_bytes()[..name.len().min(16)]);
        let setup = NodeSetup {
            config: Arc::new(config.clone()),
            identity: NodeIdentity {
                name: name.to_string(),
                uuid,
                generation,
            },
            media,
            peer_generations: BTreeMap::new(),
            state_dir: None,
            report_load: false,
            observer: Some(observer),
        };
        let node = Node::new(setup, Instant::now());
        let (control, control_rx) = mpsc::channel(8);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(node.run(inbound_rx, control_rx, shutdown_rx));
        SimNode {
            name: name.to_string(),
            events,
            control,
            shutdown,
            task,
        }
    }

    /// Stops the node as a crash would: it simply falls silent.
    pub async fn kill(self, net: &MemoryNet) {
        net.detach(&self.name);
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// The node's status report.
    pub async fn status(&self) -> StatusReport {
        let (reply, answer) = oneshot::channel();
        self.control
            .send(ControlCall {
                request: Request::Status,
                reply,
            })
            .await
            .expect("node running");
        answer.await.expect("answer").status.expect("status")
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
