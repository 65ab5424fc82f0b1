//! `hactl`: the operator's command line. Exit codes: 0 ok, 1 refused or failed, 2 usage
//! (clap's own code for a bad command line, a bad CLASS included), 3 daemon unreachable.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
pub(crate) struct Args {
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
        /// Redraw every SECS seconds (default 2) like crm_mon, until interrupted or --count.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2",
              value_parser = parse_interval, conflicts_with = "json")]
        watch: Option<Duration>,
        /// With --watch: stop after N reports.
        #[arg(long, value_name = "N", requires = "watch")]
        count: Option<u64>,
    },
    /// Move groups to this node (hb_takeover). CLASS: all (default), local (groups this
    /// node prefers), foreign (groups the other node prefers; `failback` is the same).
    /// With VRRP: every instance advertises priority 254 and preempts (`hactl auto` undoes).
    Takeover {
        /// all | local | foreign | failback
        #[arg(default_value = "all", value_parser = parse_class)]
        class: GroupClass,
    },
    /// Move groups from this node to the other one (hb_standby). CLASS as for takeover.
    /// With VRRP: masters hand over with priority 0, then advertise priority 1.
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
        /// Print weights and persistence templates as `ipvsadm -Ln --persistent-conn`.
        #[arg(long, conflicts_with_all = ["save", "json"])]
        persistent_conn: bool,
    },
    /// VRRP: drop a takeover/standby override; the instances advertise their configured
    /// and tracked priority again.
    Auto,
    /// Re-read the daemon's configuration (as SIGHUP does) and apply what can change live.
    Reload,
    /// Print the YAML equivalent of a Linux-HA directory (ha.cf, haresources, authkeys), or
    /// of a keepalived.conf (a `vrrp:` section and its virtual servers as `director:`;
    /// keywords that do not carry over are named on stderr as FILE:LINE).
    #[command(group(clap::ArgGroup::new("from").required(true).args(["ha_dir", "keepalived_conf"])))]
    Convert {
        /// The Linux-HA directory.
        #[arg(long, value_name = "DIR")]
        ha_dir: Option<PathBuf>,
        /// A keepalived.conf (its includes followed).
        #[arg(long, value_name = "FILE")]
        keepalived_conf: Option<PathBuf>,
        /// Node name to validate for, instead of `uname -n`.
        #[arg(long, value_name = "NAME")]
        node_name: Option<String>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Status {
            watch: Some(every),
            count,
            ..
        } => watch(&args.socket, every, count),
        Command::Status { json, .. } => status(&args.socket, json),
        Command::Convert {
            keepalived_conf: Some(file),
            ..
        } => convert_keepalived(&file),
        Command::Convert {
            ha_dir: Some(dir),
            node_name,
            ..
        } => convert(&dir, node_name),
        Command::Convert { .. } => unreachable!("clap requires --ha-dir or --keepalived-conf"),
        Command::Checks { json } => checks(&args.socket, json),
        Command::Ipvs {
            save,
            json,
            persistent_conn,
        } => ipvs(save.is_some(), json, persistent_conn),
        Command::Takeover { class } => {
            answer(call(&args.socket, Request::Takeover { class }), "done")
        }
        Command::Standby { class } => {
            answer(call(&args.socket, Request::Standby { class }), "done")
        }
        Command::Reload => answer(call(&args.socket, Request::Reload), "reloaded"),
        Command::Auto => answer(call(&args.socket, Request::Auto), "done"),
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
        let state = if r.fallback {
            format!("fallback {}", r.state)
        } else {
            r.state.clone()
        };
        println!(
            "{:<24} {:<22} {:<5} {:>6} {:>8.0}s {:>8} {}",
            r.virtual_service,
            r.real,
            state,
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

fn ipvs(save: bool, json: bool, persistent_conn: bool) -> ExitCode {
    use hbd::dataplane::support::{self, Severity};
    use hbd::dataplane::{Dataplane, ServiceKey, format};
    use hbd::director::runtime::{BackendChoice, open_backend};
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let listed = runtime.block_on(async {
        let mut backend = open_backend(BackendChoice::Auto)?;
        let services = backend.list().await?;
        Ok::<_, hbd::dataplane::DataplaneError>((backend, services))
    });
    let (mut backend, mut services) = match listed {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hactl: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    format::sort_like_ipvsadm(&mut services);
    let connections = if save {
        Default::default()
    } else {
        backend.connections(&services).unwrap_or_else(|e| {
            eprintln!("hactl: connection counts unavailable: {e}");
            Default::default()
        })
    };
    // What this dataplane does differently from IPVS, said beside the table.
    let kind = backend.kind();
    let notes: Vec<String> = services
        .iter()
        .flat_map(|vs| support::limitations(kind, vs))
        .filter(|l| l.severity == Severity::Approximated)
        .map(|l| format!("{}: {}", l.service, l.text))
        .collect();
    if json {
        let value: Vec<serde_json::Value> = services
            .iter()
            .map(|s| {
                let (protocol, address) = match s.key {
                    ServiceKey::Tcp(a) => ("tcp", a.to_string()),
                    ServiceKey::Udp(a) => ("udp", a.to_string()),
                    ServiceKey::Fwmark(m, _) => ("fwmark", m.to_string()),
                };
                let notes: Vec<String> = support::limitations(kind, s)
                    .into_iter()
                    .filter(|l| l.severity == Severity::Approximated)
                    .map(|l| l.text)
                    .collect();
                serde_json::json!({
                    "protocol": protocol,
                    "address": address,
                    "scheduler": s.scheduler.name(),
                    "persistent_s": s.persistence.map(|p| p.timeout.as_secs()),
                    "dataplane": kind.name(),
                    "notes": notes,
                    "reals": s.reals.iter().map(|r| {
                        let c = connections.get(&(s.key, r.addr)).copied().unwrap_or_default();
                        serde_json::json!({
                            "address": r.addr.to_string(),
                            "forwarding": r.forwarding.name(),
                            "weight": r.weight,
                            "active_conns": c.active,
                            "inactive_conns": c.inactive,
                        })
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else if save {
        print!("{}", format::save(&services));
    } else if persistent_conn {
        let header = backend.header();
        print!(
            "{}",
            format::listing_persistent(&header, &services, &connections)
        );
    } else {
        let header = backend.header();
        print!(
            "{}",
            format::listing(&header, &services, &connections, &notes)
        );
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
    let vrrp = response.vrrp.clone();
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
        // VRRP instances ride along as an extra `vrrp` key; the rest is unchanged.
        let mut value = serde_json::to_value(&report).unwrap_or_default();
        if let (Some(v), Some(map)) = (&vrrp, value.as_object_mut()) {
            map.insert("vrrp".into(), serde_json::to_value(v).unwrap_or_default());
        }
        match serde_json::to_string_pretty(&value) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("hactl: {e}");
                return ExitCode::from(EXIT_FAILED);
            }
        }
    } else {
        print!("{}", render_status(&report));
        if let Some(v) = &vrrp {
            print!("{}", render_vrrp(v));
        }
    }
    ExitCode::SUCCESS
}

/// The VRRP instances (VRRP as the membership backend).
fn render_vrrp(instances: &[hbd::control::protocol::VrrpInstanceReport]) -> String {
    use std::fmt::Write;
    let mut out = String::from("VRRP instances:\n");
    for i in instances {
        let master = match (&i.master, i.master_priority) {
            (Some(a), Some(p)) => format!("{a} (priority {p})"),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "  {:<16} {:<6} vrid {:<3} on {:<10} priority {} (base {}, {}) master {master}",
            i.name, i.state, i.vrid, i.interface, i.effective_priority, i.base_priority, i.operator
        );
        let _ = writeln!(out, "      {}", i.preempt);
        for d in &i.down {
            let _ = writeln!(out, "      {d}");
        }
        let _ = writeln!(
            out,
            "      group {}; adverts {} sent, {} received, {} dropped",
            i.group, i.sent, i.received, i.dropped
        );
    }
    out
}

/// `--watch` intervals: seconds, at least 0.1 and at most a day.
fn parse_interval(word: &str) -> Result<Duration, String> {
    match word.parse::<f64>() {
        Ok(s) if (0.1..=86_400.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "'{word}' is not a number of seconds between 0.1 and 86400"
        )),
    }
}

/// `status --watch`: the report redrawn every `every`, as crm_mon does: on a terminal the
/// screen is cleared before each one; into a pipe or file the reports follow each other,
/// each under its header line. A daemon that does not answer is shown, not fatal.
fn watch(socket: &std::path::Path, every: Duration, count: Option<u64>) -> ExitCode {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let clear = std::io::stdout().is_terminal();
    let mut shown = 0u64;
    loop {
        let answer = runtime.block_on(client::call(
            socket,
            &Request::Status,
            every.max(client::DEFAULT_TIMEOUT),
        ));
        let body = match answer {
            Ok(Response {
                status: Some(report),
                ..
            }) => render_status(&report),
            Ok(r) => format!(
                "hactl: {}\n",
                r.error.unwrap_or_else(|| "no status in the answer".into())
            ),
            Err(e) => format!("hactl: {e}\n"),
        };
        let now = hbd::clock::wall()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut frame = String::new();
        if clear {
            frame.push_str("\x1b[H\x1b[2J");
        }
        frame.push_str(&format!(
            "Every {:.1}s: hactl status (unix time {now}){}\n\n{body}",
            every.as_secs_f64(),
            if clear { ", Ctrl-C to quit" } else { "" }
        ));
        if !clear {
            frame.push('\n');
        }
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            if out
                .write_all(frame.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                // The reader went away (a closed pipe): stop quietly.
                return ExitCode::SUCCESS;
            }
        }
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(every);
    }
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
    for alarm in &r.alarms {
        let _ = writeln!(out, "ALARM: {alarm}");
    }
    let _ = writeln!(out, "Groups:");
    if !r.unstable.is_empty() {
        let _ = writeln!(out, "  (pair not stable: {})", r.unstable);
    }
    if let Some(f) = &r.fencing {
        let _ = writeln!(out, "  fencing: {f}");
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
    hbd::control::status::write_media(&mut out, &r.media);
    if let Some(reach) = &r.reachability {
        let peer = r
            .nodes
            .iter()
            .find(|n| !n.local)
            .map_or("peer", |n| &n.name);
        hbd::control::status::write_reachability(&mut out, reach, &r.node, peer);
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
        Ok(loaded) => print_converted(&loaded.warnings, config::to_yaml(&loaded.config)),
        Err(err) => print_refused(&err.diagnostics),
    }
}

/// The end of a `convert`: the load's warnings on stderr, then the YAML on stdout (or why
/// it could not be written).
fn print_converted<W: std::fmt::Display, E: std::fmt::Display>(
    warnings: &[W],
    yaml: Result<String, E>,
) -> ExitCode {
    for w in warnings {
        eprintln!("{w}");
    }
    match yaml {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hactl: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// A `convert` whose input did not load: every diagnostic on stderr.
fn print_refused<D: std::fmt::Display>(diagnostics: &[D]) -> ExitCode {
    for d in diagnostics {
        eprintln!("{d}");
    }
    ExitCode::from(EXIT_FAILED)
}

/// `hactl convert --keepalived-conf FILE`: the YAML with a `vrrp:` section on stdout; what
/// does not carry over (the load's warnings, FILE:LINE) on stderr.
fn convert_keepalived(file: &std::path::Path) -> ExitCode {
    match config::keepalived::load_keepalived(file) {
        Ok((loaded, warnings)) => print_converted(&warnings, config::keepalived_to_yaml(&loaded)),
        Err(err) => print_refused(&err.diagnostics),
    }
}
