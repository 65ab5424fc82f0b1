//! `hactl`: the operator's command line. Exit codes: 0 ok, 1 refused or failed, 2 usage
//! (clap's own code for a bad command line, a bad CLASS included), 3 daemon unreachable.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hbd::config;
use hbd::control::DEFAULT_SOCKET;
use hbd::control::client::{self, ClientError};
use hbd::control::protocol::{GroupClass, Request, Response, StatusReport};

const EXIT_FAILED: u8 = 1;
const EXIT_UNREACHABLE: u8 = 3;

/// Control and inspect a running hbd.
#[derive(Debug, Parser)]
#[command(name = "hactl", version)]
struct Args {
    /// Control socket of the daemon.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show nodes, links and groups.
    Status {
        /// Print the daemon's JSON report instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Move groups to this node (hb_takeover). CLASS: all (default), local (groups this
    /// node prefers), foreign (groups the other node prefers; `failback` is the same).
    Takeover {
        /// all | local | foreign | failback
        #[arg(default_value = "all", value_parser = parse_class)]
        class: GroupClass,
    },
    /// Move groups from this node to the other one (hb_standby). CLASS as for takeover.
    Standby {
        /// all | local | foreign | failback
        #[arg(default_value = "all", value_parser = parse_class)]
        class: GroupClass,
    },
    /// Show every real server of the directors running on this node: state, weight, last
    /// check result, time since the last change and the reason.
    Checks {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the live virtual-service table like `ipvsadm -Ln` (IPVS, or hbd's nftables table
    /// where the kernel has no IPVS). Run it in the director's network namespace.
    Ipvs {
        /// `save`: print ipvsadm-save text instead.
        #[arg(value_parser = ["save"])]
        save: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-read the daemon's configuration (as SIGHUP does) and apply what can change live.
    Reload,
    /// Print the YAML equivalent of a Linux-HA directory (ha.cf, haresources, authkeys).
    Convert {
        /// The Linux-HA directory.
        #[arg(long, value_name = "DIR")]
        ha_dir: PathBuf,
        /// Node name to validate for, instead of `uname -n`.
        #[arg(long, value_name = "NAME")]
        node_name: Option<String>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Status { json } => status(&args.socket, json),
        Command::Convert { ha_dir, node_name } => convert(&ha_dir, node_name),
        Command::Checks { json } => checks(&args.socket, json),
        Command::Ipvs { save, json } => ipvs(save.is_some(), json),
        Command::Takeover { class } => {
            answer(call(&args.socket, Request::Takeover { class }), "done")
        }
        Command::Standby { class } => {
            answer(call(&args.socket, Request::Standby { class }), "done")
        }
        Command::Reload => answer(call(&args.socket, Request::Reload), "reloaded"),
    }
}

fn checks(socket: &std::path::Path, json: bool) -> ExitCode {
    let response = match call(socket, Request::Checks) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let reals = response.checks.unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reals).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    if reals.is_empty() {
        println!("no director runs on this node");
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<24} {:<22} {:<5} {:>6} {:>9} {:>8} reason",
        "virtual", "real", "state", "weight", "changed", "checked"
    );
    for r in &reals {
        let last = r
            .last_check_s
            .map_or_else(|| "-".into(), |ago| format!("{ago:.1}s ago"));
        println!(
            "{:<24} {:<22} {:<5} {:>6} {:>8.0}s {:>8} {}",
            r.virtual_service,
            r.real,
            r.state,
            r.weight
                .map(|w| w.to_string())
                .unwrap_or_else(|| "-".into()),
            r.since_change_s,
            last,
            r.reason.as_deref().unwrap_or("-")
        );
    }
    ExitCode::SUCCESS
}

fn ipvs(save: bool, json: bool) -> ExitCode {
    use hbd::dataplane::{Dataplane, ServiceKey, format};
    use hbd::director::runtime::{BackendChoice, open_backend};
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let listed = runtime.block_on(async {
        let mut backend = open_backend(BackendChoice::Auto)?;
        backend.list().await
    });
    let services = match listed {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hactl: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    if json {
        let value: Vec<serde_json::Value> = services
            .iter()
            .map(|s| {
                let (protocol, address) = match s.key {
                    ServiceKey::Tcp(a) => ("tcp", a.to_string()),
                    ServiceKey::Udp(a) => ("udp", a.to_string()),
                    ServiceKey::Fwmark(m, _) => ("fwmark", m.to_string()),
                };
                serde_json::json!({
                    "protocol": protocol,
                    "address": address,
                    "scheduler": s.scheduler.name(),
                    "persistent_s": s.persistence.map(|p| p.timeout.as_secs()),
                    "reals": s.reals.iter().map(|r| serde_json::json!({
                        "address": r.addr.to_string(),
                        "forwarding": r.forwarding.name(),
                        "weight": r.weight,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else if save {
        print!("{}", format::save(&services));
    } else {
        print!("{}", format::table(&services));
    }
    ExitCode::SUCCESS
}

/// Prints a command's answer: the daemon's message (or `done_word`) when it was carried out,
/// the reason when refused.
fn answer(response: Result<Response, ExitCode>, done_word: &str) -> ExitCode {
    match response {
        Ok(r) if r.ok => {
            println!("{}", r.message.unwrap_or_else(|| done_word.into()));
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!("hactl: refused: {}", r.error.unwrap_or_default());
            ExitCode::from(EXIT_FAILED)
        }
        Err(code) => code,
    }
}

/// A group class as written on the command line; clap reports anything else as a usage
/// error (exit code 2).
fn parse_class(word: &str) -> Result<GroupClass, String> {
    match word.to_ascii_lowercase().as_str() {
        "all" => Ok(GroupClass::All),
        "local" => Ok(GroupClass::Local),
        // heartbeat's `failback` means the groups preferred by the other node.
        "foreign" | "failback" => Ok(GroupClass::Foreign),
        _ => Err(format!(
            "unknown group class '{word}'; use all, local, foreign or failback"
        )),
    }
}

/// The single-threaded runtime each command runs its one request on.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("hactl: cannot start the async runtime: {e}");
            ExitCode::from(EXIT_FAILED)
        })
}

fn call(socket: &std::path::Path, request: Request) -> Result<Response, ExitCode> {
    let runtime = runtime()?;
    match runtime.block_on(client::call(socket, &request, client::DEFAULT_TIMEOUT)) {
        Ok(r) => Ok(r),
        Err(e @ (ClientError::Unreachable { .. } | ClientError::Timeout(..))) => {
            eprintln!("hactl: {e}");
            Err(ExitCode::from(EXIT_UNREACHABLE))
        }
        Err(e) => {
            eprintln!("hactl: {e}");
            Err(ExitCode::from(EXIT_FAILED))
        }
    }
}

fn status(socket: &std::path::Path, json: bool) -> ExitCode {
    let response = match call(socket, Request::Status) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let Some(report) = response.status.filter(|_| response.ok) else {
        eprintln!(
            "hactl: {}",
            response
                .error
                .unwrap_or_else(|| "no status in the answer".into())
        );
        return ExitCode::from(EXIT_FAILED);
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("hactl: {e}");
                return ExitCode::from(EXIT_FAILED);
            }
        }
    } else {
        print!("{}", render_status(&report));
    }
    ExitCode::SUCCESS
}

fn render_status(r: &StatusReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Node {} ({}), generation {}",
        r.node, r.state, r.generation
    );
    let _ = writeln!(out, "Nodes:");
    for n in &r.nodes {
        let who = if n.local { " (this node)" } else { "" };
        let heard = n
            .last_heard_ms
            .map(|ms| format!(", heard {ms} ms ago"))
            .unwrap_or_default();
        let late = if n.late_heartbeats > 0 {
            format!(
                ", {} late heartbeat(s), longest gap {} ms",
                n.late_heartbeats, n.longest_gap_ms
            )
        } else {
            String::new()
        };
        let _ = writeln!(out, "  {:<20} {:<6}{who}{heard}{late}", n.name, n.state);
        for l in &n.links {
            let _ = writeln!(out, "      link {:<40} {}", l.name, l.status);
        }
    }
    let _ = writeln!(out, "Groups:");
    if !r.unstable.is_empty() {
        let _ = writeln!(out, "  (pair not stable: {})", r.unstable);
    }
    for q in &r.queued {
        let _ = writeln!(out, "  queued request: {q}");
    }
    if r.groups.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for g in &r.groups {
        let _ = writeln!(
            out,
            "  {:<30} preferred {:<12} owner {:<12} here {:<10} target {} (epoch {})",
            g.name,
            g.preferred,
            g.owner.as_deref().unwrap_or("-"),
            g.state,
            g.target,
            g.epoch
        );
        for res in &g.resources {
            let _ = writeln!(out, "      {:<40} {}", res.spec, res.state);
        }
    }
    let c = &r.counters;
    let _ = writeln!(
        out,
        "Frames: {} accepted, {} duplicate, {} bad auth, {} malformed, {} oversize, {} replayed/stale, {} unknown node, {} send errors",
        c.accepted,
        c.duplicates,
        c.bad_auth,
        c.malformed,
        c.oversize,
        c.replayed,
        c.unknown_node,
        c.send_errors
    );
    out
}

fn convert(dir: &std::path::Path, node_name: Option<String>) -> ExitCode {
    let node = match config::local_node_name(node_name.as_deref()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("hactl: {e} (--node-name)");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match config::load_ha_dir(dir, &node) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            print!("{}", config::to_yaml(&loaded.config));
            ExitCode::SUCCESS
        }
        Err(err) => {
            for d in &err.diagnostics {
                eprintln!("{d}");
            }
            ExitCode::from(EXIT_FAILED)
        }
    }
}
