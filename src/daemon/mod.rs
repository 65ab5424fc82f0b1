//! The daemon: turns a validated configuration into a running node.
//!
//! It prepares the state directory (generation, uuid, peer generations), opens the media
//! and the control socket, runs the [`node::Node`] on a thread of its own and stops it on
//! SIGTERM/SIGINT.

pub mod node;
pub mod realtime;
pub mod runner;

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
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs the node until SIGTERM or SIGINT. `reloader` re-reads the configuration for
/// `hactl reload` and SIGHUP.
pub async fn run(
    config: Config,
    options: DaemonOptions,
    reloader: Option<node::Reloader>,
) -> Result<(), DaemonError> {
    std::fs::create_dir_all(&options.state_dir).map_err(|source| DaemonError::StateDir {
        path: options.state_dir.clone(),
        source,
    })?;
    let generation = generation::next_generation(&options.state_dir)?;
    let uuid = generation::load_or_create_uuid(&options.state_dir)?;
    let peer_generations = generation::load_peer_generations(&options.state_dir)?;

    let opened = udp::open_all(&config.media, &udp::local_addresses())?;
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

    let mut ctx = ResolveContext::default();
    let mut dirs = options.resource_dirs.clone();
    dirs.append(&mut ctx.dirs.resource_dirs);
    ctx.dirs.resource_dirs = dirs;
    if let Some(dir) = &options.ha_dir {
        ctx.ha_dir = dir.clone();
    }
    ctx.director = config.director.as_ref().map(|d| match &d.ldirectord_cf {
        Some(path) => crate::resources::director::DirectorSource::File(path.clone()),
        None => crate::resources::director::DirectorSource::Inline(d.config.clone()),
    });
    ctx.announce.count = config.vip_announce.count;
    ctx.announce.interval = config.vip_announce.interval;
    ctx.dataplane = options.dataplane;
    let runner = ResourceRunner::new(&config.groups, &ctx, GroupPolicy::default());
    for (group, reason) in runner.unresolved() {
        tracing::error!(group = %config.groups[group].name(), "group cannot run here: {reason}");
    }
    let setup = NodeSetup {
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
    let mut node = Node::new(setup, tokio::time::Instant::now());
    node.prepare().await;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let bell = Arc::new(node::Bell::new().map_err(DaemonError::NodeThread)?);
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
                node.run_on_thread(receivers, control_rx, shutdown_rx, bell);
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
