//! `hbd`: the cluster daemon. Runs in the foreground and logs to stderr (journald picks it
//! up under systemd).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{ArgGroup, Parser};
use hbd::config::{self, ConfigError, Loaded, Severity};
use hbd::control::DEFAULT_SOCKET;
use hbd::daemon::{self, DEFAULT_STATE_DIR, DaemonOptions};
use hbd::director::runtime::BackendChoice;

/// Cluster resource manager for LVS director pairs (heartbeat + ldirectord successor).
#[derive(Debug, Parser)]
#[command(name = "hbd", version)]
#[command(group(ArgGroup::new("source").required(true).args(["config", "ha_dir"])))]
struct Args {
    /// Native YAML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Unchanged Linux-HA directory holding ha.cf, haresources and authkeys.
    #[arg(long, value_name = "DIR")]
    ha_dir: Option<PathBuf>,
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
    init_logging();
    let node_name = match config::local_node_name(args.node_name.as_deref()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("hbd: {e} (--node-name)");
            return ExitCode::from(1);
        }
    };
    let source = match (&args.config, &args.ha_dir) {
        (Some(file), _) => Source::Yaml(file.clone()),
        (None, Some(dir)) => Source::HaDir(dir.clone()),
        (None, None) => unreachable!("clap requires one source"),
    };
    let Loaded { config, warnings } = match source.load(&node_name) {
        Ok(l) => l,
        Err(err) => {
            for d in &err.diagnostics {
                if args.check_config {
                    println!("{d}");
                } else {
                    eprintln!("{d}");
                }
            }
            let errors = err.errors().count();
            eprintln!("hbd: configuration refused ({errors} error(s))");
            return ExitCode::from(1);
        }
    };
    if args.check_config {
        for w in &warnings {
            println!("{w}");
        }
        println!(
            "configuration OK for node {node_name}: {} node(s), {} medium/media, {} group(s)",
            config.nodes.len(),
            config.media.len(),
            config.groups.len()
        );
        return ExitCode::SUCCESS;
    }
    for w in warnings.iter().filter(|w| w.severity == Severity::Warning) {
        tracing::warn!("{w}");
    }
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
        std::sync::Arc::new(move || {
            source
                .load(&node)
                .map(|l| l.config)
                .map_err(|e| format!("the new configuration is refused, the old one stays:\n{e}"))
        })
    };
    match run(config, options, reloader) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hbd: {e:#}");
            ExitCode::from(1)
        }
    }
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
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(daemon::run(config, options, Some(reloader)))?;
    Ok(())
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

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HBD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
