//! The daemon with VRRP as the membership backend (`hbd --keepalived-conf FILE`).
//!
//! keepalived.conf's instances run in one [`crate::vrrp::task::run_router_observed`]; each
//! instance, or sync group, drives one resource group
//! ([`crate::config::keepalived::KeepalivedConfig::resource_groups`]) through the same
//! [`ResourceRunner`] the heartbeat node uses: MASTER starts it left to right, leaving
//! MASTER stops it right to left ([`crate::vrrp::backend`]). Tracked scripts run with their
//! timeout (process group killed); tracked interfaces follow the kernel's link announcements
//! (rtnetlink `RTNLGRP_LINK`, as keepalived does), read again every [`LINK_REREAD`]. The control socket answers `status`, `takeover`, `standby`, `auto`,
//! `reload` and `checks` through the same [`server::ControlCall`] mailbox as the node.
//!
//! Stopping (SIGTERM/SIGINT) sends priority 0 from every master (the backup takes over
//! after its skew time), releases the groups right to left and waits for the stops.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::DaemonOptions;
use super::runner::{GroupRunner, ResourceRunner};
use crate::config::ConfigError;
use crate::config::keepalived::KeepalivedConfig;
use crate::control::protocol::{
    GroupStatus, Request, ResourceReport, Response, StatusReport, VrrpInstanceReport,
};
use crate::control::server::{self, ControlCall};
use crate::net::addr::{LinkChange, LinkEvents, NetError, Netlink};
use crate::resources::group::GroupPolicy;
use crate::vrrp::backend::{
    self, BoxFuture, CommandRunner, Drive, GroupDriver, GroupMap, GroupOp, GroupPhase, TrackBoard,
    TrackedItem,
};
use crate::vrrp::config::{InstanceSpec, VrrpConfig};
use crate::vrrp::socket::{SocketError, VrrpSocket};
use crate::vrrp::state::{Instance, Operator, PreemptStatus, Tracked, VrrpInput, VrrpRouter};
use crate::vrrp::task::{AdvertPlan, InstanceView, run_router_observed};

/// How often the tracked interfaces are read again beside the kernel's link announcements:
/// only the safety net for an announcement lost, so it can be slow.
pub const LINK_REREAD: Duration = Duration::from_secs(5);
/// How often they are read when the announcements cannot be subscribed to.
pub const LINK_POLL: Duration = Duration::from_millis(200);
/// Longest wait for the groups to stop at shutdown.
const STOP_LIMIT: Duration = Duration::from_secs(120);

/// Re-reads the keepalived.conf for `hactl reload` and SIGHUP.
pub type KeepalivedReloader = Arc<dyn Fn() -> Result<KeepalivedConfig, ConfigError> + Send + Sync>;

/// Why the VRRP daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum VrrpDaemonError {
    /// The control socket could not be opened.
    #[error(transparent)]
    Control(#[from] server::ControlError),
    /// rtnetlink could not be reached.
    #[error(transparent)]
    Netlink(#[from] NetError),
    /// The instance's interface has no address to send adverts from.
    #[error(
        "vrrp_instance {instance}: interface {interface} has no {family} address to send adverts from; add one or set unicast_src_ip"
    )]
    NoAddress {
        /// Instance.
        instance: String,
        /// Interface.
        interface: String,
        /// `IPv4` or `IPv6 link-local`.
        family: &'static str,
    },
    /// The raw socket could not be opened.
    #[error("vrrp_instance {instance}: {source}")]
    Socket {
        /// Instance.
        instance: String,
        /// Cause.
        source: SocketError,
    },
    /// The configuration has no `vrrp_instance`.
    #[error("the keepalived.conf has no vrrp_instance: nothing to run")]
    NoInstances,
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    /// VRRP stopped on its own (a socket failed); the groups were released.
    #[error("VRRP stopped: {0}; the groups were released")]
    Stopped(String),
}

/// [`GroupDriver`] over the daemon's [`ResourceRunner`].
struct Groups(Arc<ResourceRunner>);

impl GroupDriver for Groups {
    fn start(&self, group: usize) -> BoxFuture<Result<(), String>> {
        let op = self.0.start(group);
        Box::pin(async move { op.await.map_err(|e| e.reason) })
    }
    fn stop(&self, group: usize) -> BoxFuture<Result<(), String>> {
        let op = self.0.stop(group);
        Box::pin(async move { op.await.map_err(|e| e.reason) })
    }
    fn announce(&self, group: usize) -> BoxFuture<Result<(), String>> {
        let op = self.0.announce(group);
        Box::pin(async move { op.await.map_err(|e| e.reason) })
    }
}

/// [`CommandRunner`] over [`crate::resources::script::run_with_timeout`].
struct Scripts;

impl CommandRunner for Scripts {
    fn run(&self, argv: Vec<String>, timeout: Duration) -> BoxFuture<bool> {
        Box::pin(async move {
            let Some((program, args)) = argv.split_first() else {
                return false;
            };
            let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
            match crate::resources::script::run_with_timeout(
                Path::new(program),
                &args,
                &[],
                "vrrp",
                timeout,
            )
            .await
            {
                Ok(out) => out.status.success(),
                Err(e) => {
                    tracing::debug!("{e}");
                    false
                }
            }
        })
    }
}

/// The address adverts go out from: `unicast_src_ip`, else the interface's first IPv4
/// address that is not one of its VIPs, else (IPv6) its link-local address (RFC 5798 §5.1.2.1).
async fn source_address(nl: &Netlink, spec: &InstanceSpec) -> Result<IpAddr, VrrpDaemonError> {
    if let Some(src) = spec.src_ip {
        return Ok(src);
    }
    let v6 = spec.is_ipv6();
    let vips: Vec<IpAddr> = spec.vips.iter().map(|v| v.addr).collect();
    let found = nl
        .addresses(&spec.interface)
        .await?
        .into_iter()
        .map(|a| a.ip)
        .find(|ip| match ip {
            IpAddr::V4(_) => !v6 && !vips.contains(ip),
            IpAddr::V6(a) => v6 && a.segments()[0] & 0xffc0 == 0xfe80,
        });
    found.ok_or_else(|| VrrpDaemonError::NoAddress {
        instance: spec.name.clone(),
        interface: spec.interface.clone(),
        family: if v6 { "IPv6 link-local" } else { "IPv4" },
    })
}

/// Whether a link is up with carrier; a missing interface is down.
async fn link_running(nl: &Netlink, ifname: &str) -> bool {
    nl.link(ifname).await.is_ok_and(|l| l.running)
}

/// Follows the tracked interfaces, reporting each change from `up` (their states at start):
/// at once from the kernel's link announcements (`events`, subscribed before `up` was read),
/// and by reading every link again each [`LINK_REREAD`], the safety net for an announcement
/// lost (a full socket buffer). Without `events` (the subscription failed) every
/// [`LINK_POLL`].
async fn watch_links(
    nl: Netlink,
    mut events: Option<LinkEvents>,
    mut up: std::collections::BTreeMap<String, bool>,
    changes: mpsc::Sender<(TrackedItem, bool)>,
    mut stop: watch::Receiver<bool>,
) {
    let period = if events.is_some() {
        LINK_REREAD
    } else {
        LINK_POLL
    };
    let mut reread = tokio::time::interval_at(crate::clock::now() + period, period);
    reread.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Bounded by `stop`: each turn waits on an announcement, the re-read or the stop.
    loop {
        let seen: Vec<(String, bool)> = tokio::select! {
            _ = stop.changed() => return,
            change = next_link_change(&mut events) => match change {
                Some(c) => vec![(c.ifname, c.running)],
                None => {
                    tracing::warn!("link announcements stopped; reading the tracked interfaces every {LINK_POLL:?}");
                    events = None;
                    reread = tokio::time::interval(LINK_POLL);
                    continue;
                }
            },
            _ = reread.tick() => {
                let mut all = Vec::new();
                for ifname in up.keys() {
                    all.push((ifname.clone(), link_running(&nl, ifname).await));
                }
                all
            }
        };
        for (ifname, now) in changed_links(&mut up, seen) {
            tracing::info!(interface = %ifname, up = now, "tracked interface changed");
            let item = TrackedItem::Interface(ifname);
            if changes.send((item, now)).await.is_err() {
                return;
            }
        }
    }
}

/// The tracked links whose state `seen` changes, recorded in `up`: announcements about
/// other links, and repeats of a known state (the kernel announces every flag change), are
/// not changes.
fn changed_links(
    up: &mut std::collections::BTreeMap<String, bool>,
    seen: Vec<(String, bool)>,
) -> Vec<(String, bool)> {
    seen.into_iter()
        .filter(|(ifname, now)| match up.get_mut(ifname) {
            Some(was) if *was != *now => {
                *was = *now;
                true
            }
            _ => false,
        })
        .collect()
}

/// The next announced link change, or never when there is no subscription.
async fn next_link_change(events: &mut Option<LinkEvents>) -> Option<LinkChange> {
    match events {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

/// How often [`follow_heartbeat_peer`] asks the heartbeat node about its peer.
pub const PEER_POLL: Duration = Duration::from_millis(100);

/// Publishes whether the heartbeat node answering on `socket` hears a peer (any other node
/// `up`): the second liveness path beside VRRP. An unanswered query counts as not heard, so
/// a stopped heartbeat node never holds a takeover back.
pub async fn follow_heartbeat_peer(socket: std::path::PathBuf, alive: watch::Sender<bool>) {
    use crate::control::client;
    // Bounded by the receivers: it ends when nobody listens.
    while !alive.is_closed() {
        let heard = match client::call(&socket, &Request::Status, PEER_POLL * 5).await {
            Ok(Response {
                status: Some(r), ..
            }) => r.nodes.iter().any(|n| !n.local && n.status == "up"),
            _ => false,
        };
        alive.send_if_modified(|a| std::mem::replace(a, heard) != heard);
        tokio::time::sleep(PEER_POLL).await;
    }
}

/// Runs the VRRP instances of `config` until SIGTERM or SIGINT. `peer`, when set, says
/// whether the peer is heard on the heartbeat media ([`follow_heartbeat_peer`]): a backup
/// that has heard a master does not take over while it is.
pub async fn run(
    config: KeepalivedConfig,
    options: DaemonOptions,
    reloader: Option<KeepalivedReloader>,
    peer: Option<watch::Receiver<bool>>,
) -> Result<(), VrrpDaemonError> {
    if config.vrrp.instances.is_empty() {
        return Err(VrrpDaemonError::NoInstances);
    }
    let vrrp = Arc::new(config.vrrp.clone());
    let specs = config.resource_groups(&options.node_name);
    let group_names: Vec<String> = specs.iter().map(|g| g.name().to_string()).collect();
    let group_resources: Vec<Vec<String>> = specs
        .iter()
        .map(|g| g.resources.iter().map(|r| r.spec.clone()).collect())
        .collect();
    let ctx = options.resolve_context(
        config
            .director
            .clone()
            .map(crate::resources::director::DirectorSource::Inline),
    );
    let runner = Arc::new(ResourceRunner::new(&specs, &ctx, GroupPolicy::default()));
    for (group, reason) in runner.unresolved() {
        tracing::error!(group = %group_names[group], "group cannot run here: {reason}");
    }
    // Whatever a previous run left behind goes first: only a master holds its group.
    for (g, name) in group_names.iter().enumerate() {
        if runner.probe(g).await {
            tracing::warn!(group = %name, "group found running at start: stopping it until this node is master");
            if let Err(e) = runner.stop(g).await {
                tracing::error!(group = %name, "{e}");
            }
        }
    }

    let nl = Netlink::connect()?;
    let mut board = TrackBoard::new(&vrrp);
    let tracks_links = board
        .items()
        .iter()
        .any(|i| matches!(i, TrackedItem::Interface(_)));
    // Subscribed before the first read, so no change falls between the two.
    let link_events = if tracks_links {
        match LinkEvents::subscribe() {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!("{e}: reading the tracked interfaces every {LINK_POLL:?} instead");
                None
            }
        }
    } else {
        None
    };
    for item in board.items() {
        if let TrackedItem::Interface(ifname) = &item {
            let up = link_running(&nl, ifname).await;
            board.set(&item, up);
        }
    }
    let mut instances = Vec::new();
    let mut sockets = Vec::new();
    let mut plans = Vec::new();
    let now = crate::clock::now();
    for (idx, spec) in vrrp.instances.iter().enumerate() {
        let src = source_address(&nl, spec).await?;
        let group = spec.unicast_peers.is_empty().then_some(spec.mcast_group);
        let socket = VrrpSocket::open(&spec.interface, src, group).map_err(|source| {
            VrrpDaemonError::Socket {
                instance: spec.name.clone(),
                source,
            }
        })?;
        let mut instance = Instance::new(spec.machine(src));
        let tracked = board.tracked(idx);
        if tracked != Tracked::Priority(spec.priority) {
            instance.step(VrrpInput::Track(tracked), now);
        }
        plans.push(AdvertPlan {
            destinations: if spec.unicast_peers.is_empty() {
                vec![spec.mcast_group]
            } else {
                spec.unicast_peers.clone()
            },
            addrs: spec.vips.iter().map(|v| v.addr).collect(),
            auth: spec.auth.wire(),
            expect: spec.expect(),
        });
        tracing::info!(
            instance = %spec.name, interface = %spec.interface, vrid = spec.vrid,
            priority = spec.priority, %src, "VRRP instance starting"
        );
        instances.push(instance);
        sockets.push(socket);
    }
    let n_instances = instances.len();
    let router = VrrpRouter::new(instances, vrrp.group_indices());

    let (control_tx, mut control_rx) = mpsc::channel(64);
    let control_task = server::serve(&options.socket, control_tx.clone()).await?;

    let (in_tx, in_rx) = mpsc::channel(64);
    let (ev_tx, ev_rx) = mpsc::channel(256);
    let (views_tx, views) = watch::channel(Vec::<InstanceView>::new());
    let mut router_task = tokio::spawn(run_router_observed(
        router, sockets, plans, in_rx, ev_tx, views_tx,
    ));
    let (ops_tx, ops_rx) = mpsc::unbounded_channel();
    let (phases_tx, phases) = watch::channel(vec![GroupPhase::Stopped; specs.len()]);
    let worker = tokio::spawn(backend::run_groups(
        Arc::new(Groups(Arc::clone(&runner))),
        ops_rx,
        phases_tx,
    ));
    let commands: Arc<dyn CommandRunner> = Arc::new(Scripts);
    let driver = tokio::spawn(backend::drive(
        ev_rx,
        Drive {
            config: Arc::clone(&vrrp),
            ops: ops_tx.clone(),
            commands: Arc::clone(&commands),
            views: views.clone(),
        },
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (track_tx, track_rx) = mpsc::channel(64);
    for item in board.items() {
        match &item {
            TrackedItem::Script(name) => match vrrp.script(name) {
                Some(cfg) => {
                    tokio::spawn(backend::run_script(
                        cfg.clone(),
                        Arc::clone(&commands),
                        track_tx.clone(),
                        stop_rx.clone(),
                    ));
                }
                None => tracing::warn!(script = %name, "track_script names no vrrp_script"),
            },
            TrackedItem::Interface(_) => {}
        }
    }
    if tracks_links {
        let up = board
            .items()
            .iter()
            .filter_map(|item| match item {
                TrackedItem::Interface(ifname) => {
                    Some((ifname.clone(), board.is_up(item).unwrap_or(true)))
                }
                TrackedItem::Script(_) => None,
            })
            .collect();
        tokio::spawn(watch_links(
            nl.clone(),
            link_events,
            up,
            track_tx.clone(),
            stop_rx.clone(),
        ));
    }
    drop(track_tx);
    if let Some(mut peer) = peer {
        let inputs = in_tx.clone();
        tokio::spawn(async move {
            let mut last = false;
            // Bounded by the sender: ends when the heartbeat follower stops.
            loop {
                let now = *peer.borrow_and_update();
                if now != last {
                    last = now;
                    tracing::info!(alive = now, "peer on the heartbeat media");
                    if !to_every_instance(&inputs, n_instances, VrrpInput::PeerAlive(now)).await {
                        return;
                    }
                }
                if peer.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    let (board_tx, board_rx) = watch::channel(board.clone());
    tokio::spawn(backend::track(board, track_rx, in_tx.clone(), board_tx));

    let view = StatusView {
        node: options.node_name.clone(),
        vrrp: Arc::clone(&vrrp),
        map: GroupMap::of(&vrrp),
        group_names,
        group_resources,
        views,
        phases,
        board: board_rx,
    };
    let mut current = config;

    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(VrrpDaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(VrrpDaemonError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(VrrpDaemonError::Signals)?;
    // Bounded by the signals: every turn waits on a request, a signal or the router's end.
    let router_result = loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break None; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break None; }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                let r = reload(&mut current, reloader.as_ref(), &runner).await;
                match (r.ok, r.message, r.error) {
                    (true, Some(m), _) => tracing::info!("{m}"),
                    (_, _, Some(e)) => tracing::warn!("reload refused: {e}"),
                    _ => {}
                }
            }
            done = &mut router_task => break Some(done),
            call = control_rx.recv() => {
                let Some(ControlCall { request, reply }) = call else { continue };
                let response = match request {
                    Request::Status => view.response(),
                    Request::Takeover { .. } => operator(&in_tx, n_instances, VrrpInput::Takeover, "takeover: every instance advertises priority 254 and preempts; `hactl auto` drops the override").await,
                    Request::Standby { .. } => operator(&in_tx, n_instances, VrrpInput::Standby, "standby: every master hands over with priority 0 and the instances advertise priority 1; `hactl auto` drops the override").await,
                    Request::Auto => operator(&in_tx, n_instances, VrrpInput::Auto, "auto: the instances advertise their configured and tracked priority again").await,
                    Request::Reload => reload(&mut current, reloader.as_ref(), &runner).await,
                    Request::Checks => {
                        let checks = runner.director_reports().await;
                        let mut r = Response::done(format!("{} real server(s)", checks.len()));
                        r.checks = Some(checks);
                        r
                    }
                };
                let _ = reply.send(response);
            }
        }
    };
    // Priority 0 from every master, groups released right to left.
    let router_result = match router_result {
        Some(r) => r,
        None => {
            // A failed send means the router has ended, so every later one would fail too.
            let _ = to_every_instance(&in_tx, n_instances, VrrpInput::Shutdown).await;
            router_task.await
        }
    };
    let failure = match router_result {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(format!("the VRRP task ended abnormally: {e}")),
    };
    let _ = stop_tx.send(true);
    // The router has ended, so its events end; anything still held is stopped.
    if let Ok(held) = driver.await {
        for g in held {
            let _ = ops_tx.send(GroupOp::Stop(g));
        }
    }
    drop(ops_tx);
    if tokio::time::timeout(STOP_LIMIT, worker).await.is_err() {
        tracing::error!("groups still stopping after {STOP_LIMIT:?}; exiting anyway");
    }
    control_task.abort();
    let _ = std::fs::remove_file(&options.socket);
    match failure {
        Some(e) => Err(VrrpDaemonError::Stopped(e)),
        None => Ok(()),
    }
}

/// Sends an operator input to every instance.
async fn operator(
    inputs: &mpsc::Sender<(usize, VrrpInput)>,
    n: usize,
    input: VrrpInput,
    what: &str,
) -> Response {
    if !to_every_instance(inputs, n, input).await {
        return Response::refused("VRRP has stopped");
    }
    Response::done(what)
}

/// Sends `input` to each of the `n` instances; `false` once the router has stopped.
async fn to_every_instance(
    inputs: &mpsc::Sender<(usize, VrrpInput)>,
    n: usize,
    input: VrrpInput,
) -> bool {
    for idx in 0..n {
        if inputs.send((idx, input)).await.is_err() {
            return false;
        }
    }
    true
}

/// Re-reads the keepalived.conf: a changed director is reloaded in place; changed VRRP
/// instances, sync groups or scripts need a restart, and the answer names them.
async fn reload(
    current: &mut KeepalivedConfig,
    reloader: Option<&KeepalivedReloader>,
    runner: &ResourceRunner,
) -> Response {
    let Some(reloader) = reloader else {
        return Response::refused("no configuration file to reload");
    };
    let new = match reloader() {
        Ok(c) => c,
        Err(e) => {
            return Response::refused(format!("configuration refused, nothing changed:\n{e}"));
        }
    };
    let restart = restart_needed(&current.vrrp, &new.vrrp);
    let mut lines = Vec::new();
    if new.director != current.director {
        match &new.director {
            Some(d) => {
                for r in runner.reload_directors(Some(d.clone())).await {
                    lines.push(r.unwrap_or_else(|e| format!("director: {e}")));
                }
                if lines.is_empty() {
                    lines.push("virtual servers updated; applied when the director starts".into());
                }
                current.director = new.director.clone();
            }
            None => lines
                .push("needs a restart to apply: the virtual_server blocks were removed".into()),
        }
    }
    if !restart.is_empty() {
        lines.push(format!(
            "needs a restart to apply (nothing else changed): {}",
            restart.join("; ")
        ));
    }
    if lines.is_empty() {
        lines.push("nothing changed".into());
    }
    Response::done(lines.join("\n"))
}

/// What changed in the VRRP part of the configuration, in words; empty when nothing did.
pub fn restart_needed(old: &VrrpConfig, new: &VrrpConfig) -> Vec<String> {
    let mut out = Vec::new();
    for i in &new.instances {
        match old.instances.iter().find(|o| o.name == i.name) {
            None => out.push(format!("vrrp_instance {} added", i.name)),
            Some(o) if strip(o) != strip(i) => {
                out.push(format!("vrrp_instance {} changed", i.name))
            }
            Some(_) => {}
        }
    }
    for o in &old.instances {
        if !new.instances.iter().any(|i| i.name == o.name) {
            out.push(format!("vrrp_instance {} removed", o.name));
        }
    }
    if old.sync_groups != new.sync_groups {
        out.push("vrrp_sync_group changed".into());
    }
    if old.scripts != new.scripts {
        out.push("vrrp_script changed".into());
    }
    out
}

/// An instance without where it was declared (moving a block is not a change).
fn strip(i: &InstanceSpec) -> InstanceSpec {
    InstanceSpec {
        origin: Default::default(),
        ..i.clone()
    }
}

/// What `hactl status` reads.
struct StatusView {
    node: String,
    vrrp: Arc<VrrpConfig>,
    map: GroupMap,
    group_names: Vec<String>,
    group_resources: Vec<Vec<String>>,
    views: watch::Receiver<Vec<InstanceView>>,
    phases: watch::Receiver<Vec<GroupPhase>>,
    board: watch::Receiver<TrackBoard>,
}

impl StatusView {
    fn response(&self) -> Response {
        let views = self.views.borrow().clone();
        let phases = self.phases.borrow().clone();
        let board = self.board.borrow().clone();
        let now = crate::clock::now();
        let instances = self
            .vrrp
            .instances
            .iter()
            .enumerate()
            .map(|(idx, spec)| {
                let v = views.get(idx);
                let group = self.map.of_instance.get(idx).copied().unwrap_or(0);
                VrrpInstanceReport {
                    name: spec.name.clone(),
                    interface: spec.interface.clone(),
                    vrid: spec.vrid,
                    state: v
                        .map_or("INIT", |v| match v.state {
                            crate::vrrp::state::VrrpState::Init => "INIT",
                            s => s.name(),
                        })
                        .to_string(),
                    base_priority: spec.priority,
                    effective_priority: v.map_or(spec.priority, |v| v.priority),
                    master: v.and_then(|v| v.master).map(|(a, _)| a.to_string()),
                    master_priority: v.and_then(|v| v.master).map(|(_, p)| p),
                    preempt: v.map_or_else(String::new, |v| preempt_words(v, spec, now)),
                    operator: v
                        .map_or("auto", |v| match v.operator {
                            Operator::Auto => "auto",
                            Operator::Takeover => "takeover",
                            Operator::Standby => "standby",
                        })
                        .to_string(),
                    down: board.down_items(idx),
                    group: self.group_names.get(group).cloned().unwrap_or_default(),
                    sent: v.map_or(0, |v| v.counters.sent),
                    received: v.map_or(0, |v| v.counters.received),
                    dropped: v.map_or(0, |v| v.counters.dropped.total()),
                }
            })
            .collect();
        let groups = self
            .group_names
            .iter()
            .enumerate()
            .map(|(g, name)| {
                let phase = phases.get(g).copied().unwrap_or(GroupPhase::Stopped);
                let running = phase == GroupPhase::Running;
                GroupStatus {
                    name: name.clone(),
                    preferred: self.node.clone(),
                    owner: running.then(|| self.node.clone()),
                    state: phase.name().to_string(),
                    target: String::new(),
                    epoch: 0,
                    resources: self.group_resources[g]
                        .iter()
                        .map(|spec| ResourceReport {
                            spec: spec.clone(),
                            state: if running { "running" } else { "stopped" }.to_string(),
                        })
                        .collect(),
                }
            })
            .collect();
        let mut r = Response::done("status");
        r.message = None;
        r.status = Some(StatusReport {
            node: self.node.clone(),
            state: "vrrp".into(),
            generation: 0,
            nodes: Vec::new(),
            groups,
            queued: Vec::new(),
            unstable: String::new(),
            counters: Default::default(),
            reachability: None,
            fencing: None,
            alarms: Vec::new(),
            media: Vec::new(),
        });
        r.vrrp = Some(instances);
        r
    }
}

/// Why an instance is or is not preempting, for `hactl status`.
fn preempt_words(v: &InstanceView, spec: &InstanceSpec, now: tokio::time::Instant) -> String {
    use crate::vrrp::state::VrrpState;
    match (v.state, v.preempt) {
        (VrrpState::Master, _) => "master".into(),
        (VrrpState::Fault, _) => "fault: a tracked item without weight is down".into(),
        (VrrpState::Init, _) => "stopped".into(),
        (_, PreemptStatus::NotApplicable) => {
            "no master heard yet: taking over when Master_Down runs out".into()
        }
        (_, PreemptStatus::MasterOutranks) => {
            "not preempting: the master's priority is higher (or equal with a higher address)"
                .into()
        }
        (_, PreemptStatus::NoPreempt) => {
            "not preempting: nopreempt, the lower-priority master stays".into()
        }
        (_, PreemptStatus::DelayedUntil(at)) => format!(
            "preempting in {:.1}s (preempt_delay {:?})",
            at.saturating_duration_since(now).as_secs_f64(),
            spec.preempt_delay
        ),
        (_, PreemptStatus::PeerAliveElsewhere) => "not taking over: the adverts stopped but the peer is heard on the heartbeat media (a cut VRRP path, not a dead master)".into(),
        (_, PreemptStatus::Preempting) => {
            "preempting: ignoring the lower-priority master until Master_Down runs out".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_tracked_link_changing_state_is_a_change() {
        let mut up = std::collections::BTreeMap::from([
            ("eth0".to_string(), true),
            ("eth1".to_string(), true),
        ]);
        let seen = |v: &[(&str, bool)]| v.iter().map(|(n, b)| (n.to_string(), *b)).collect();
        // An untracked link, and a tracked one announced unchanged: nothing.
        assert!(changed_links(&mut up, seen(&[("veth9", false), ("eth0", true)])).is_empty());
        // eth1 goes down, then is announced down again (another flag changed): one change.
        assert_eq!(
            changed_links(&mut up, seen(&[("eth1", false)])),
            [("eth1".to_string(), false)]
        );
        assert!(changed_links(&mut up, seen(&[("eth1", false)])).is_empty());
        // A re-read of every link reports only what moved.
        assert_eq!(
            changed_links(&mut up, seen(&[("eth0", true), ("eth1", true)])),
            [("eth1".to_string(), true)]
        );
    }
}
