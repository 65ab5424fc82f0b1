//! The daemon: turns a validated configuration into a running node.
//!
//! It prepares the state directory (generation, uuid, peer generations), opens the media
//! and the control socket, runs the [`node::Node`] on a thread of its own and stops it on
//! SIGTERM/SIGINT.

pub mod node;
pub mod realtime;
pub mod runner;
pub mod vrrp;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::control::server;
use crate::media::udp;
use crate::membership::generation;
use crate::resources::ResolveContext;
use crate::resources::group::GroupPolicy;
use node::{Node, NodeIdentity, NodeSetup};
use runner::ResourceRunner;

/// Default state directory (generation, uuid, peer generations).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hbd";

/// Where this node keeps its files and who it is.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Our node name.
    pub node_name: String,
    /// State directory.
    pub state_dir: PathBuf,
    /// Control socket path.
    pub socket: PathBuf,
    /// Extra heartbeat-class resource script directories, searched before the defaults
    /// (`--resource-dir`, then `<ha-dir>/resource.d`).
    pub resource_dirs: Vec<PathBuf>,
    /// The Linux-HA directory, where `ldirectord::NAME` files are looked up.
    pub ha_dir: Option<PathBuf>,
    /// Which dataplane the director drives.
    pub dataplane: crate::director::runtime::BackendChoice,
}

impl DaemonOptions {
    /// Where resources are looked up on this node: our script directories before the
    /// defaults, our Linux-HA directory, dataplane and `director`.
    pub(crate) fn resolve_context(
        &self,
        director: Option<crate::resources::director::DirectorSource>,
    ) -> ResolveContext {
        let mut ctx = ResolveContext::default();
        let mut dirs = self.resource_dirs.clone();
        dirs.append(&mut ctx.dirs.resource_dirs);
        ctx.dirs.resource_dirs = dirs;
        if let Some(dir) = &self.ha_dir {
            ctx.ha_dir = dir.clone();
        }
        ctx.director = director;
        ctx.dataplane = self.dataplane;
        ctx.state_dir = self.state_dir.clone();
        ctx
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state directory is unusable.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Generation or uuid files are unusable.
    #[error(transparent)]
    Generation(#[from] generation::GenerationError),
    /// A medium could not be opened.
    #[error(transparent)]
    Media(#[from] udp::MediaError),
    /// No medium could be opened at all.
    #[error("no heartbeat medium could be opened (skipped: {0}); check the media lines")]
    NoMedia(String),
    /// The control socket could not be opened.
    #[error(transparent)]
    Control(#[from] server::ControlError),
    /// The node's thread or its wakeup descriptor could not be created.
    #[error("starting the node thread: {0}")]
    NodeThread(std::io::Error),
    /// A serial line could not be started (its device is opened, and retried, by its own
    /// thread: a missing device is not this error).
    #[error(transparent)]
    Serial(#[from] crate::media::serial::SerialError),
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, so that a failover (an `AF_PACKET`
/// socket per announce, netlink sockets, resource scripts) finds descriptors even when the
/// limit the daemon was started under is low; the control socket caps its own share
/// ([`server::Limits`]). Issue #15, defect 2.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(error = %e, soft, "cannot raise the open-file limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

/// Runs the node until SIGTERM or SIGINT. `reloader` re-reads the configuration for
/// `hactl reload` and SIGHUP.
pub async fn run(
    config: Config,
    options: DaemonOptions,
    reloader: Option<node::Reloader>,
    watchdog: Option<crate::watchdog::Watchdog>,
) -> Result<(), DaemonError> {
    raise_fd_limit();
    std::fs::create_dir_all(&options.state_dir).map_err(|source| DaemonError::StateDir {
        path: options.state_dir.clone(),
        source,
    })?;
    let leftovers = generation::remove_leftover_temporaries(&options.state_dir);
    if leftovers > 0 {
        tracing::info!(
            count = leftovers,
            "removed temporary files an earlier run left in the state directory"
        );
    }
    let from_clock = generation::read_generation(&options.state_dir)?.is_none();
    let generation = generation::next_generation(&options.state_dir)?;
    if from_clock {
        // A quick restart without `hb_generation` must not reuse this generation (#15).
        let wait = generation::wait_for_clock_generation(generation, crate::clock::wall());
        tracing::info!(
            generation,
            wait_ms = wait.as_millis(),
            "no hb_generation: starting at the wall clock's next second"
        );
        tokio::time::sleep(wait).await;
    }
    let uuid = generation::load_or_create_uuid(&options.state_dir)?;
    let peer_generations = generation::load_peer_generations(&options.state_dir)?;

    // The node thread's bell and mailbox come first: a serial line's reader thread mails
    // its frames there.
    let bell = Arc::new(node::Bell::new().map_err(DaemonError::NodeThread)?);
    let (mail, inbox) = node::mailbox(&bell);
    let mut opened = udp::open_all(&config.media, &udp::local_addresses())?;
    // Serial lines after the UDP media: each is one more link, its frames read by a thread
    // of its own. A missing device is not an error: the link retries it.
    let mut serial_links = Vec::new();
    for spec in config
        .media
        .iter()
        .filter(|m| matches!(m, crate::config::MediumSpec::Serial { .. }))
    {
        let link = opened.media.len();
        let mail = mail.clone();
        let sink: crate::media::serial::FrameSink = Box::new(move |frame| {
            mail(node::Mail::Frame(crate::media::Inbound {
                link,
                frame,
                from: None,
            }))
        });
        // The line's thread follows the main thread's realtime scheduling, as the node's does.
        let (medium, handle) =
            crate::media::serial::open(spec, sink, Some(realtime::follow_main_thread))?;
        opened.media.push(medium);
        serial_links.push(handle);
    }
    for medium in &opened.media {
        tracing::info!(link = %medium.name, "medium open: {}", medium.tx.describe());
    }
    for (medium, reason) in &opened.skipped {
        tracing::info!(%medium, "medium skipped: {reason}");
    }
    if opened.media.is_empty() {
        let skipped: Vec<String> = opened
            .skipped
            .iter()
            .map(|(m, r)| format!("{m}: {r}"))
            .collect();
        return Err(DaemonError::NoMedia(skipped.join("; ")));
    }

    let (control_tx, control_rx) = mpsc::channel(64);
    let hup_tx = control_tx.clone();
    let control_task = server::serve(&options.socket, control_tx).await?;

    let mut ctx =
        options.resolve_context(config.director.as_ref().map(|d| match &d.ldirectord_cf {
            Some(path) => crate::resources::director::DirectorSource::File(path.clone()),
            None => crate::resources::director::DirectorSource::Inline(d.config.clone()),
        }));
    ctx.announce.count = config.vip_announce.count;
    ctx.announce.interval = config.vip_announce.interval;
    let runner = ResourceRunner::new(&config.groups, &ctx, GroupPolicy::default());
    for (group, reason) in runner.unresolved() {
        tracing::error!(group = %config.groups[group].name(), "group cannot run here: {reason}");
    }
    // Ping nodes and ping groups: the prober runs on the runtime and mails our count to
    // the node (ipfail's rules are the node core's).
    let (reachability, reach_updates) =
        if config.ping_nodes.is_empty() && config.ping_groups.is_empty() {
            (None, None)
        } else {
            let (handle, updates) = crate::reachability::Reachability::spawn(&config);
            (Some(handle), Some(updates))
        };
    if let Some(w) = &watchdog {
        match w.set_timeout(crate::watchdog::timeout_for(config.timing.deadtime)) {
            Ok(t) => {
                tracing::info!(device = %w.path().display(), "watchdog armed: {t:?} without a pet reboots this node")
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
    let setup = NodeSetup {
        watchdog,
        reachability,
        reach_updates,
        runner: Arc::new(runner),
        config: Arc::new(config),
        identity: NodeIdentity {
            name: options.node_name.clone(),
            uuid,
            generation,
        },
        media: opened.media,
        peer_generations,
        state_dir: Some(options.state_dir.clone()),
        report_load: true,
        observer: None,
        reloader,
    };
    let mut node = Node::new(setup, crate::clock::now());
    node.prepare().await;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let handle = tokio::runtime::Handle::current();
    let receivers = opened.receivers;
    let node_thread = std::thread::Builder::new()
        .name("hbd-node".into())
        .spawn({
            let bell = bell.clone();
            move || {
                if let Err(e) = realtime::follow_main_thread() {
                    tracing::warn!("the node thread could not switch to realtime: {e}; heartbeats may be late on a busy machine");
                }
                let _runtime = handle.enter();
                node.run_on_thread(&receivers, control_rx, shutdown_rx, &bell, (mail, inbox));
            }
        })
        .map_err(DaemonError::NodeThread)?;

    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = hup.recv() => {
                // heartbeat re-reads its configuration on SIGHUP; so does hbd.
                tracing::info!("SIGHUP: reloading the configuration");
                let (reply, answer) = tokio::sync::oneshot::channel();
                let call = server::ControlCall { request: crate::control::protocol::Request::Reload, reply };
                if hup_tx.send(call).await.is_ok()
                    && let Ok(r) = answer.await
                {
                    match (r.ok, r.message, r.error) {
                        (true, Some(m), _) => tracing::info!("{m}"),
                        (_, _, Some(e)) => tracing::warn!("reload refused: {e}"),
                        _ => {}
                    }
                }
            }
        }
    }
    let _ = shutdown_tx.send(true);
    // The node thread stops once its groups are released (bounded by its stop limit).
    if tokio::task::spawn_blocking(move || node_thread.join())
        .await
        .map_or(true, |joined| joined.is_err())
    {
        tracing::error!("the node thread ended abnormally");
    }
    control_task.abort();
    let _ = std::fs::remove_file(&options.socket);
    Ok(())
}
