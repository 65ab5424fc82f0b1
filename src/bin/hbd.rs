//! `hbd`: the cluster daemon. Runs in the foreground and logs to stderr (journald picks it
//! up under systemd), and to the `logfile`, `debugfile` and syslog facility the
//! configuration names (`hbd::logging`). Under `Type=notify` it tells systemd when it is
//! ready and keeps the watchdog fed (see [`watch_for_systemd`]); with `metrics:` set it
//! serves Prometheus metrics.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{ArgGroup, Parser};
use hbd::config::{self, ConfigError, Loaded, Severity, VrrpYaml, YamlChoice};
use hbd::control::DEFAULT_SOCKET;
use hbd::daemon::{self, DEFAULT_STATE_DIR, DaemonOptions};
use hbd::director::runtime::BackendChoice;
use hbd::logging::LogHandle;
use hbd::supervise::Supervisor;
use hbd::watchdog::Watchdog;
use hbd::{metrics, sdnotify};

/// Cluster resource manager for LVS director pairs (heartbeat + ldirectord successor).
#[derive(Debug, Parser)]
#[command(name = "hbd", version)]
#[command(group(ArgGroup::new("source").required(true).multiple(true).args(["config", "ha_dir", "keepalived_conf"])))]
pub(crate) struct Args {
    /// Native YAML configuration file.
    #[arg(long, value_name = "FILE", conflicts_with = "ha_dir")]
    config: Option<PathBuf>,
    /// Unchanged Linux-HA directory holding ha.cf, haresources and authkeys.
    #[arg(long, value_name = "DIR")]
    ha_dir: Option<PathBuf>,
    /// Unchanged keepalived.conf: VRRP is the membership backend; each vrrp_instance (or
    /// vrrp_sync_group) drives a resource group of its addresses and virtual servers. With
    /// --config or --ha-dir as well, their heartbeat media run beside VRRP as a second
    /// liveness path (control socket PATH.heartbeat): a backup that still hears its peer
    /// there does not take over when the adverts stop.
    #[arg(long, value_name = "FILE")]
    keepalived_conf: Option<PathBuf>,
    /// Check the configuration, print every problem as file:line, and exit (0 = valid).
    #[arg(long)]
    check_config: bool,
    /// Node name to use instead of `uname -n`.
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// Directory for the generation number, node uuid and peer generations.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Control socket path.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Directory of heartbeat-class resource scripts searched first (repeatable); then
    /// `<ha-dir>/resource.d`, hbd's own scripts, /etc/ha.d/resource.d and /etc/init.d.
    #[arg(long, value_name = "DIR")]
    resource_dir: Vec<PathBuf>,
    /// Dataplane the director drives: auto (IPVS when the kernel has it, else nftables),
    /// ipvs, or nftables.
    #[arg(long, value_name = "KIND", default_value = "auto", value_parser = parse_dataplane)]
    dataplane: BackendChoice,
    /// Do not switch to realtime scheduling and locked memory (heartbeat `realtime off`).
    #[arg(long)]
    no_realtime: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let log = match hbd::logging::init() {
        Ok(log) => log,
        Err(e) => {
            eprintln!("hbd: {e}");
            return ExitCode::from(1);
        }
    };
    let node_name = match config::local_node_name(args.node_name.as_deref()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("hbd: {e} (--node-name)");
            return ExitCode::from(1);
        }
    };
    let source = match (&args.config, &args.ha_dir) {
        (Some(file), _) => Some(Source::Yaml(file.clone())),
        (None, Some(dir)) => Some(Source::HaDir(dir.clone())),
        (None, None) => None,
    };
    if let Some(file) = &args.keepalived_conf {
        return keepalived(&args, file, node_name, source);
    }
    let Some(source) = source else {
        unreachable!("clap requires one source; keepalived_conf returned above")
    };
    let loaded = match &source {
        // A YAML file may choose VRRP (a `vrrp:` section): the keepalived.conf path runs it.
        Source::Yaml(file) => match config::load_yaml_any(file, &node_name) {
            Ok(YamlChoice::Heartbeat(l)) => Ok(*l),
            Ok(YamlChoice::Vrrp { config, warnings }) => {
                return vrrp_yaml(&args, file, *config, &warnings, node_name, &log);
            }
            Err(err) => Err(err),
        },
        Source::HaDir(_) => source.load(&node_name),
    };
    let Loaded { config, warnings } = match loaded {
        Ok(l) => l,
        Err(err) => return refused(&err, args.check_config),
    };
    if args.check_config {
        for w in &warnings {
            println!("{w}");
        }
        if let Err(code) = print_fit(&director_fit(
            &config,
            args.ha_dir.as_deref(),
            args.dataplane,
        )) {
            return code;
        }
        println!(
            "configuration OK for node {node_name}: {} node(s), {} medium/media, {} group(s)",
            config.nodes.len(),
            config.media.len(),
            config.groups.len()
        );
        return ExitCode::SUCCESS;
    }
    // The configured outputs first, so the warnings below reach them too.
    match log.apply(&config.logging) {
        Ok(changed) if !changed.is_empty() => {
            tracing::info!("logging: {}", changed.join(", "));
        }
        Ok(_) => {}
        Err(e) => {
            eprintln!("hbd: {e}");
            return ExitCode::from(1);
        }
    }
    for w in &warnings {
        match w.severity {
            Severity::Info => tracing::info!("{w}"),
            Severity::Warning => tracing::warn!("{w}"),
            Severity::Error => tracing::error!("{w}"),
        }
    }
    // Open the watchdog before anything else runs, so a missing device stops the start.
    let watchdog = match &config.watchdog {
        Some(path) => match Watchdog::open(path) {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!("hbd: {e}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    if !args.no_realtime {
        let rt = hbd::daemon::realtime::enable();
        match (&rt.scheduler, &rt.memory_locked) {
            (Ok(()), Ok(())) => tracing::info!(
                priority = hbd::daemon::realtime::REALTIME_PRIORITY,
                "realtime scheduling (SCHED_FIFO) and locked memory"
            ),
            _ => tracing::warn!(
                scheduler = ?rt.scheduler,
                memory_locked = ?rt.memory_locked,
                "could not fully switch to realtime; heartbeats may be late on a busy machine"
            ),
        }
    }
    let mut resource_dirs = args.resource_dir.clone();
    if let Some(dir) = &args.ha_dir {
        resource_dirs.push(dir.join("resource.d"));
    }
    let options = DaemonOptions {
        node_name,
        state_dir: args.state_dir,
        socket: args.socket,
        resource_dirs,
        ha_dir: args.ha_dir.clone(),
        dataplane: args.dataplane,
    };
    let reloader: hbd::daemon::node::Reloader = {
        let node = options.node_name.clone();
        std::sync::Arc::new(move || source.load(&node).map(|l| l.config))
    };
    match run(config, options, reloader, log, watchdog) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hbd: {}", hbd::logging::error_chain(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

/// `--keepalived-conf FILE`: check it, or run its VRRP instances (`hbd::daemon::vrrp`).
fn keepalived(
    args: &Args,
    file: &std::path::Path,
    node_name: String,
    heartbeat: Option<Source>,
) -> ExitCode {
    let heartbeat = match heartbeat.map(|s| s.load(&node_name)) {
        None => None,
        Some(Ok(Loaded { config, warnings })) => {
            for w in &warnings {
                if args.check_config {
                    println!("{w}");
                } else {
                    eprintln!("{w}");
                }
            }
            Some(config)
        }
        Some(Err(err)) => {
            for d in &err.diagnostics {
                println!("{d}");
            }
            eprintln!(
                "hbd: heartbeat configuration refused ({} error(s))",
                err.errors().count()
            );
            return ExitCode::from(1);
        }
    };
    let (loaded, warnings) = match config::keepalived::load_keepalived(file) {
        Ok(l) => l,
        Err(err) => return refused(&err, args.check_config),
    };
    let reloader: daemon::vrrp::KeepalivedReloader = {
        let file = file.to_path_buf();
        std::sync::Arc::new(move || config::keepalived::load_keepalived(&file).map(|(c, _)| c))
    };
    run_vrrp(args, loaded, &warnings, node_name, heartbeat, reloader)
}

/// `--config FILE` with a `vrrp:` section: the same VRRP daemon as `--keepalived-conf`, its
/// logging applied, and its heartbeat media (when it has `media`) beside VRRP.
fn vrrp_yaml(
    args: &Args,
    file: &std::path::Path,
    loaded: VrrpYaml,
    warnings: &[config::Diagnostic],
    node_name: String,
    log: &LogHandle,
) -> ExitCode {
    if !args.check_config {
        match log.apply(&loaded.logging) {
            Ok(changed) if !changed.is_empty() => tracing::info!("logging: {}", changed.join(", ")),
            Ok(_) => {}
            Err(e) => {
                eprintln!("hbd: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if args.check_config
        && let Some(hb) = &loaded.heartbeat
    {
        println!(
            "heartbeat media beside VRRP: {} node(s), {} medium/media",
            hb.nodes.len(),
            hb.media.len()
        );
    }
    let reloader: daemon::vrrp::KeepalivedReloader = {
        let file = file.to_path_buf();
        let node = node_name.clone();
        std::sync::Arc::new(move || match config::load_yaml_any(&file, &node)? {
            YamlChoice::Vrrp { config, .. } => Ok(config.keepalived),
            YamlChoice::Heartbeat(_) => Err(ConfigError {
                diagnostics: vec![config::Diagnostic::error(
                    &file,
                    None,
                    "the `vrrp:` section was removed; switching from VRRP to heartbeat needs a restart",
                )],
            }),
        })
    };
    run_vrrp(
        args,
        loaded.keepalived,
        warnings,
        node_name,
        loaded.heartbeat,
        reloader,
    )
}

/// Checks (`--check-config`) or runs the VRRP instances of `loaded`, with the heartbeat
/// node of `heartbeat` beside them.
fn run_vrrp(
    args: &Args,
    loaded: config::keepalived::KeepalivedConfig,
    warnings: &[config::Diagnostic],
    node_name: String,
    heartbeat: Option<config::Config>,
    reloader: daemon::vrrp::KeepalivedReloader,
) -> ExitCode {
    if args.check_config {
        for w in warnings {
            println!("{w}");
        }
        if let Err(code) = print_fit(&fit_here(loaded.director.iter(), args.dataplane)) {
            return code;
        }
        println!(
            "configuration OK for node {node_name}: {} vrrp_instance(s), {} sync group(s), {} resource group(s), {} virtual server(s)",
            loaded.vrrp.instances.len(),
            loaded.vrrp.sync_groups.len(),
            loaded.resource_groups(&node_name).len(),
            loaded.director.as_ref().map_or(0, |d| d.virtuals.len()),
        );
        return ExitCode::SUCCESS;
    }
    for w in warnings {
        match w.severity {
            Severity::Info => tracing::info!("{w}"),
            Severity::Warning => tracing::warn!("{w}"),
            Severity::Error => tracing::error!("{w}"),
        }
    }
    let options = DaemonOptions {
        node_name,
        state_dir: args.state_dir.clone(),
        socket: args.socket.clone(),
        resource_dirs: args.resource_dir.clone(),
        ha_dir: None,
        dataplane: args.dataplane,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hbd: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        // systemd's READY=1 and watchdog, as for the heartbeat daemon: the VRRP control
        // socket answers `status` the same way.
        let watcher = tokio::spawn(watch_for_systemd(options.socket.clone()));
        let mut peer = None;
        let mut heartbeat_task = None;
        if let Some(hb) = heartbeat {
            // The heartbeat node runs beside VRRP with its media and its own socket; its
            // groups (usually none) are its own.
            let mut hb_options = options.clone();
            hb_options.socket = heartbeat_socket(&options.socket);
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(daemon::vrrp::follow_heartbeat_peer(
                hb_options.socket.clone(),
                tx,
            ));
            heartbeat_task = Some(tokio::spawn(daemon::run(hb, hb_options, None, None)));
            peer = Some(rx);
        }
        let r = daemon::vrrp::run(loaded, options, Some(reloader), peer).await;
        watcher.abort();
        sdnotify::notify_stopping();
        if let Some(t) = heartbeat_task {
            // It stops on the same SIGTERM.
            match t.await {
                Ok(Err(e)) => eprintln!("hbd: heartbeat beside VRRP: {e}"),
                Err(e) => eprintln!("hbd: heartbeat beside VRRP: {e}"),
                Ok(Ok(())) => {}
            }
        }
        r
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hbd: {e}");
            ExitCode::from(1)
        }
    }
}

/// The heartbeat node's control socket beside VRRP's: `PATH.heartbeat`.
fn heartbeat_socket(vrrp: &std::path::Path) -> PathBuf {
    let mut s = vrrp.as_os_str().to_owned();
    s.push(".heartbeat");
    PathBuf::from(s)
}

/// The director configurations against the dataplane they would run on here
/// (`director::support`): with `--dataplane nftables` or `ipvs` a refusal is an error; with
/// `auto` the kernel decides, and a refusal only on this kernel is a warning saying so (the
/// file may be meant for a director with IPVS).
fn director_fit(
    config: &config::Config,
    ha_dir: Option<&std::path::Path>,
    choice: BackendChoice,
) -> Vec<config::Diagnostic> {
    let mut configs = Vec::new();
    if let Some(spec) = &config.director {
        configs.push(spec.config.clone());
    }
    let ha_dir = ha_dir.unwrap_or(std::path::Path::new("/etc/ha.d"));
    let mut seen = std::collections::BTreeSet::new();
    for r in config
        .groups
        .iter()
        .flat_map(|g| &g.resources)
        .filter(|r| r.kind == "ldirectord")
    {
        if r.args.is_empty() && config.director.is_some() {
            continue;
        }
        let path =
            hbd::config::director::locate_ldirectord_cf(r.args.first().map(String::as_str), ha_dir);
        // A file that does not parse was reported with the rest of the configuration.
        if seen.insert(path.clone())
            && let Ok((c, _)) = hbd::config::director::parse_ldirectord(&path)
        {
            configs.push(c);
        }
    }
    fit_here(configs.iter(), choice)
}

/// The director configurations against the dataplane `choice` gives here; with `auto` a
/// refusal is a warning (see [`director_fit`]).
fn fit_here<'a>(
    configs: impl Iterator<Item = &'a hbd::director::DirectorConfig>,
    choice: BackendChoice,
) -> Vec<config::Diagnostic> {
    let kind = hbd::director::runtime::backend_kind(choice);
    let mut out: Vec<config::Diagnostic> = configs
        .flat_map(|c| hbd::director::support::diagnostics(c, kind))
        .collect();
    if choice == BackendChoice::Auto {
        for d in out.iter_mut().filter(|d| d.severity == Severity::Error) {
            d.severity = Severity::Warning;
            d.message.push_str(" (this kernel has no IPVS, so --dataplane auto uses nftables here and the director will not start)");
        }
    }
    out
}

/// `--check-config`: prints the dataplane fit; any error refuses the configuration.
fn print_fit(fit: &[config::Diagnostic]) -> Result<(), ExitCode> {
    for d in fit {
        println!("{d}");
    }
    let errors = fit.iter().filter(|d| d.severity == Severity::Error).count();
    if errors > 0 {
        eprintln!("hbd: configuration refused ({errors} error(s))");
        return Err(ExitCode::from(1));
    }
    Ok(())
}

/// A configuration that did not load: every diagnostic (to stdout under `--check-config`,
/// else stderr), then the count.
fn refused(err: &ConfigError, check_config: bool) -> ExitCode {
    for d in &err.diagnostics {
        if check_config {
            println!("{d}");
        } else {
            eprintln!("{d}");
        }
    }
    let errors = err.errors().count();
    eprintln!("hbd: configuration refused ({errors} error(s))");
    ExitCode::from(1)
}

/// Where the configuration is read from, at start and on every reload.
enum Source {
    /// `--config FILE`.
    Yaml(PathBuf),
    /// `--ha-dir DIR`.
    HaDir(PathBuf),
}

impl Source {
    fn load(&self, node_name: &str) -> Result<Loaded, ConfigError> {
        match self {
            Source::Yaml(file) => config::load_yaml(file, node_name),
            Source::HaDir(dir) => config::load_ha_dir(dir, node_name),
        }
    }
}

fn run(
    config: config::Config,
    options: DaemonOptions,
    reloader: hbd::daemon::node::Reloader,
    log: LogHandle,
    watchdog: Option<Watchdog>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // SIGHUP reopens the log files (logrotate's postrotate) besides the reload the
        // daemon does on it.
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if let Err(e) = log.reopen() {
                    tracing::warn!("SIGHUP: {e}");
                }
            }
        });
        if let Some(addr) = config.metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics: cannot listen on {addr}"))?;
            tracing::info!(%addr, "serving Prometheus metrics on /metrics");
            tokio::spawn(metrics::serve(
                listener,
                metrics::registry(),
                Some(options.socket.clone()),
            ));
        }
        let watcher = tokio::spawn(watch_for_systemd(options.socket.clone()));
        let respawn = Supervisor::spawn(&config.respawn);
        // The node thread pets the watchdog and closes it cleanly when it stops.
        let result = daemon::run(config, options, Some(reloader), watchdog).await;
        watcher.abort();
        sdnotify::notify_stopping();
        respawn.stop().await;
        result.map_err(anyhow::Error::from)
    })
}

/// How often [`watch_for_systemd`] asks the daemon for its status before it is ready.
const READY_POLL: std::time::Duration = std::time::Duration::from_millis(100);
/// When [`watch_for_systemd`] sends READY=1 even if the pair has not settled: well within
/// the unit's `TimeoutStartSec=90s`.
const READY_AT_THE_LATEST: std::time::Duration = std::time::Duration::from_secs(60);
/// How often the `systemctl status` line is refreshed when no watchdog sets the pace.
const STATUS_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// Tells systemd `READY=1` once the daemon answers on its control socket with every peer
/// past `init` (heard, or declared dead after initdead) and no group in flux (or, at the
/// latest, [`READY_AT_THE_LATEST`] after start, with a warning), then answers
/// the watchdog at half its period for as long as status queries, which the node task
/// answers, keep coming back. A hung node task thus stops the pings and systemd restarts
/// hbd. Outside systemd (no `NOTIFY_SOCKET`) the notifications go nowhere.
async fn watch_for_systemd(socket: PathBuf) {
    use hbd::control::client;
    use hbd::control::protocol::Request;
    if !sdnotify::enabled() {
        return;
    }
    let started = hbd::clock::now();
    let mut ready = false;
    let mut pacer = sdnotify::WatchdogPacer::from_env(hbd::clock::now());
    sdnotify::notify_status("starting: waiting for the peers and the groups to settle");
    loop {
        let now = hbd::clock::now();
        let deadline = match &pacer {
            _ if !ready => now + READY_POLL,
            Some(p) => p.next_due(),
            None => now + STATUS_REFRESH,
        };
        tokio::time::sleep_until(deadline).await;
        let Ok(response) = client::call(&socket, &Request::Status, READY_POLL * 10).await else {
            continue;
        };
        let Some(report) = response.status else {
            continue;
        };
        if !ready && settled(&report) {
            ready = true;
            sdnotify::notify_ready();
            tracing::debug!("told systemd READY=1");
        } else if !ready && hbd::clock::since(started) >= READY_AT_THE_LATEST {
            // Never let systemd's start timeout kill a running node over a pair that stays
            // unsettled (a peer stuck in init, a group that keeps failing): that would
            // restart it in a loop. Say why instead.
            ready = true;
            sdnotify::notify_ready();
            tracing::warn!(
                unstable = %report.unstable,
                "told systemd READY=1 although the pair has not settled after {READY_AT_THE_LATEST:?}"
            );
        }
        if ready {
            sdnotify::notify_status(&summary(&report));
            if let Some(p) = &mut pacer
                && p.due(hbd::clock::now())
            {
                sdnotify::notify_watchdog();
            }
        }
    }
}

/// Whether the node is up and its groups settled: no peer still in `init`, the pair stable
/// and no group starting or stopping.
fn settled(r: &hbd::control::protocol::StatusReport) -> bool {
    r.nodes.iter().all(|n| n.state != "init")
        && r.unstable.is_empty()
        && r.groups
            .iter()
            .all(|g| g.state != "starting" && g.state != "stopping")
}

/// The line `systemctl status hbd` shows: peers and groups held here.
fn summary(r: &hbd::control::protocol::StatusReport) -> String {
    let peers: Vec<String> = r
        .nodes
        .iter()
        .filter(|n| !n.local)
        .map(|n| format!("{} {}", n.name, n.state))
        .collect();
    let here = r
        .groups
        .iter()
        .filter(|g| g.owner.as_deref() == Some(r.node.as_str()))
        .count();
    format!(
        "{} {}; peers: {}; {here}/{} group(s) here",
        r.node,
        r.state,
        if peers.is_empty() {
            "none".to_string()
        } else {
            peers.join(", ")
        },
        r.groups.len()
    )
}

fn parse_dataplane(word: &str) -> Result<BackendChoice, String> {
    match word {
        "auto" => Ok(BackendChoice::Auto),
        "ipvs" => Ok(BackendChoice::Ipvs),
        "nftables" | "nft" => Ok(BackendChoice::Nftables),
        _ => Err(format!(
            "unknown dataplane '{word}'; use auto, ipvs or nftables"
        )),
    }
}
