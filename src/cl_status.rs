//! heartbeat's `cl_status`, answered from hbd's status report.
//!
//! Operators' scripts and monitoring checks (Nagios, Checkmk) call `cl_status` and read its
//! one-word answers and exit codes; this module keeps them (heartbeat 3.0.6
//! `tools/cl_status.c`): `hbstatus`, `listnodes`, `nodestatus`, `nodetype`, `listhblinks`,
//! `hblinkstatus` and `rscstatus`, each with `-m` for heartbeat's human sentence. Exit codes:
//! 0 ok, 1 "normal" failure (node or link dead, daemon stopped), 11 parameter error, 12
//! timeout, 13 unknown error. Everything here is pure: [`parse`] reads the command line and
//! [`answer`] turns a status report (or its absence) into output and an exit code.
//!
//! Differences: hbd has no heartbeat API clients, so `clientstatus`, and the weight/site
//! plugins' `nodeweight` and `nodesite`, answer exit 13; `hbparameter` is not kept. The status
//! report does not list ping nodes, so `listnodes -p` prints nothing. Link names are
//! heartbeat's, the interface (`eth0`) or serial device, with media on the same interface
//! merged (up while any is up); `hblinkstatus` also takes hbd's full names
//! (`ucast:eth0:192.0.2.12`).

use std::fmt::Write as _;

use crate::control::protocol::{NodeReport, StatusReport};

/// Success.
pub const OK: u8 = 0;
/// The node or link is dead, or the daemon is not running.
pub const NORMAL_FAIL: u8 = 1;
/// A bad sub-command, option or argument.
pub const PARAMETER_ERROR: u8 = 11;
/// The daemon did not answer in time (heartbeat's 5 s alarm).
pub const TIMEOUT: u8 = 12;
/// Anything else.
pub const UNKNOWN_ERROR: u8 = 13;

/// heartbeat's usage text, printed for no arguments or `-h`.
pub const HELP: &str = "Usage: cl_status <sub-command> [<options>] [<parameters>]

Sub-commands:
hblinkstatus <node-name> <link-name>
\tShow the status of a heartbeat link
hbstatus
\tIndicate if heartbeat is running on the local system.
\tOptions:
\t\t-v\tverbose: also add \"listnodes -v\" output
listnodes [<option>]
\tList the nodes in the cluster.
\tOptions:
\t\t-p\tlist only 'ping' type nodes
\t\t-n\tlist only 'normal' type nodes
\t\t-v\tverbose: also list type and status,
\t\t\tthen add \"listhblinks -v\" output
listhblinks <node-name>
\tList the network interfaces used as hearbeat links.
\tOptions:
\t\t-v\tverbose: list link status as well
nodestatus <node-name>
\tList the node status.
nodetype <node-name>
\tList the type of a node.
rscstatus
\tShow the status of cluster resources.
";

/// A parsed `cl_status` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// What to show.
    pub command: Command,
    /// `-m`: heartbeat's human sentences instead of bare words.
    pub human: bool,
    /// `-v`: more detail (hbstatus, listnodes, listhblinks).
    pub verbose: bool,
}

/// A sub-command and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// No arguments or `-h`: print [`HELP`].
    Help,
    /// Whether hbd runs here.
    HbStatus,
    /// Cluster members; the flags restrict to ping or normal nodes.
    ListNodes {
        /// `-p`.
        ping_only: bool,
        /// `-n`.
        normal_only: bool,
    },
    /// One node's state.
    NodeStatus(String),
    /// One node's type.
    NodeType(String),
    /// One node's links.
    ListHbLinks(String),
    /// One link's state.
    HbLinkStatus(String, String),
    /// Which groups this node holds.
    RscStatus,
    /// A heartbeat sub-command hbd has no equivalent for.
    Unsupported(String),
}

impl Command {
    /// Whether answering needs the daemon (heartbeat's "needsignon").
    pub fn needs_daemon(&self) -> bool {
        !matches!(
            self,
            Command::Help | Command::HbStatus | Command::Unsupported(_)
        )
    }
}

/// What to print and the exit code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Exit code.
    pub code: u8,
}

impl Outcome {
    fn out(stdout: String, code: u8) -> Outcome {
        Outcome {
            stdout,
            stderr: String::new(),
            code,
        }
    }

    fn err(stderr: impl Into<String>, code: u8) -> Outcome {
        Outcome {
            stdout: String::new(),
            stderr: stderr.into(),
            code,
        }
    }
}

/// Reads the arguments after the program name. Options may come before or after the
/// operands, as getopt lets them; each sub-command accepts heartbeat's option letters
/// only (anything else is a parameter error, [`PARAMETER_ERROR`]).
pub fn parse(args: &[String]) -> Result<Invocation, Outcome> {
    let help = Invocation {
        command: Command::Help,
        human: false,
        verbose: false,
    };
    let Some(sub) = args.first() else {
        return Ok(help);
    };
    if sub == "-h" && args.len() == 1 {
        return Ok(help);
    }
    let letters = match sub.as_str() {
        "hbstatus" | "listhblinks" => "mv",
        "listnodes" => "mpnv",
        "nodestatus" | "nodetype" | "hblinkstatus" | "rscstatus" => "m",
        "clientstatus" | "nodeweight" | "nodesite" | "hbparameter" => "",
        _ => {
            return Err(Outcome::err(
                format!("cl_status: {sub}: invalid sub-command.\n"),
                PARAMETER_ERROR,
            ));
        }
    };
    let mut flags = String::new();
    let mut operands = Vec::new();
    for a in &args[1..] {
        match a.strip_prefix('-') {
            Some(f) if !f.is_empty() && letters.is_empty() => {
                // Unsupported commands take their options unchecked.
                flags.push_str(f);
            }
            Some(f) if !f.is_empty() => {
                for c in f.chars() {
                    if !letters.contains(c) {
                        return Err(Outcome::err(
                            format!("cl_status: {sub}: invalid option -- '{c}'\n"),
                            PARAMETER_ERROR,
                        ));
                    }
                    flags.push(c);
                }
            }
            _ => operands.push(a.clone()),
        }
    }
    let operand = |i: usize, message: &str| {
        operands
            .get(i)
            .cloned()
            .ok_or_else(|| Outcome::err(format!("{message}\n"), PARAMETER_ERROR))
    };
    let command = match sub.as_str() {
        "hbstatus" => Command::HbStatus,
        "listnodes" => Command::ListNodes {
            ping_only: flags.contains('p'),
            normal_only: flags.contains('n'),
        },
        "nodestatus" => Command::NodeStatus(operand(0, "Not enough parameters.")?),
        "nodetype" => Command::NodeType(operand(0, "No enough parameter.")?),
        "listhblinks" => Command::ListHbLinks(operand(0, "No enough parameter.")?),
        "hblinkstatus" => Command::HbLinkStatus(
            operand(0, "No enough parameter.")?,
            operand(1, "No enough parameter.")?,
        ),
        "rscstatus" => Command::RscStatus,
        other => Command::Unsupported(other.to_string()),
    };
    Ok(Invocation {
        command,
        human: flags.contains('m'),
        verbose: flags.contains('v'),
    })
}

/// The answer to `inv` given the daemon's status report (`None`: the daemon is not
/// running or did not answer).
pub fn answer(inv: &Invocation, report: Option<&StatusReport>) -> Outcome {
    let Some(r) = report else {
        return match &inv.command {
            Command::Help => Outcome::out(HELP.to_string(), OK),
            Command::HbStatus => Outcome::out(
                "Heartbeat is stopped on this machine.\n".into(),
                NORMAL_FAIL,
            ),
            Command::Unsupported(sub) => unsupported(sub),
            _ => Outcome::err(
                "cl_status: Cannot signon with heartbeat\n\
                 cl_status: REASON: hbd is not running (no answer on its control socket)\n",
                NORMAL_FAIL,
            ),
        };
    };
    let human = inv.human;
    match &inv.command {
        Command::Help => Outcome::out(HELP.to_string(), OK),
        Command::Unsupported(sub) => unsupported(sub),
        Command::HbStatus if !inv.verbose => {
            Outcome::out("Heartbeat is running on this machine.\n".into(), OK)
        }
        Command::HbStatus => {
            let version = env!("CARGO_PKG_VERSION");
            let mut out = if human {
                format!(
                    "Heartbeat version hbd {version}\nResources controlled by \"haresources\"\n"
                )
            } else {
                format!("version:\thbd {version}\nmanaged by:\t\"haresources\"\n")
            };
            out.push_str(&list_nodes(r, false, false, true, human));
            Outcome::out(out, OK)
        }
        Command::ListNodes {
            ping_only,
            normal_only,
        } => Outcome::out(
            list_nodes(r, *normal_only, *ping_only, inv.verbose, human),
            OK,
        ),
        Command::NodeStatus(name) => {
            let Some(n) = find(r, name) else {
                return Outcome::err(
                    "Error. May be due to incorrect node name\n",
                    PARAMETER_ERROR,
                );
            };
            let out = if human {
                format!("The cluster node {name} is {}\n", n.state)
            } else {
                format!("{}\n", n.state)
            };
            let code = if matches!(n.state.as_str(), "active" | "up" | "ping") {
                OK
            } else {
                NORMAL_FAIL
            };
            Outcome::out(out, code)
        }
        Command::NodeType(name) => {
            if find(r, name).is_none() {
                return Outcome::err(
                    "Error. May be due to incorrect node name\n",
                    PARAMETER_ERROR,
                );
            }
            let out = if human {
                format!("The node {name}'s type: normal\n")
            } else {
                "normal\n".to_string()
            };
            Outcome::out(out, OK)
        }
        Command::ListHbLinks(name) => match find(r, name) {
            Some(n) => {
                let mut out = String::new();
                if human {
                    out.push_str("\tthis node has the following heartbeat links:\n");
                }
                out.push_str(&list_links(n, inv.verbose));
                Outcome::out(out, OK)
            }
            None => Outcome::err(
                "cl_status: Cannot start heartbeat link interface walk.\n\
                 cl_status: REASON: no such node\n",
                UNKNOWN_ERROR,
            ),
        },
        Command::HbLinkStatus(name, link) => {
            let Some(status) = find(r, name).and_then(|n| link_status(n, link)) else {
                return Outcome::err(
                    "cl_status: Cannot get heartbeat link status\n\
                     cl_status: REASON: no such node or link\n",
                    UNKNOWN_ERROR,
                );
            };
            let out = if human {
                format!("The node {name}'s heartbeat link {link} is {status}\n")
            } else {
                format!("{status}\n")
            };
            Outcome::out(out, if status == "up" { OK } else { NORMAL_FAIL })
        }
        Command::RscStatus => {
            let held = resources_held(r);
            let out = if human {
                format!("This node is holding {held} resources.\n")
            } else {
                format!("{held}\n")
            };
            Outcome::out(out, OK)
        }
    }
}

fn unsupported(sub: &str) -> Outcome {
    Outcome::err(
        format!(
            "cl_status: {sub}: hbd has no heartbeat API clients or node weights; \
             see hactl status\n"
        ),
        UNKNOWN_ERROR,
    )
}

/// A member by name; heartbeat compares node names case-insensitively.
fn find<'a>(r: &'a StatusReport, name: &str) -> Option<&'a NodeReport> {
    r.nodes.iter().find(|n| n.name.eq_ignore_ascii_case(name))
}

/// `listnodes` (and the tail of `hbstatus -v`).
fn list_nodes(
    r: &StatusReport,
    normal_only: bool,
    ping_only: bool,
    verbose: bool,
    human: bool,
) -> String {
    let mut out = String::new();
    if human {
        out.push_str("The nodes are as follow:\n");
    }
    // Both flags together mean neither, as in heartbeat.
    if ping_only && !normal_only {
        return out;
    }
    for n in &r.nodes {
        if verbose {
            let _ = writeln!(out, "\n{}\t{}\t(nodetype: normal)", n.name, n.state);
            out.push_str(&list_links(n, true));
        } else {
            let _ = writeln!(out, "{}", n.name);
        }
    }
    out
}

/// heartbeat's name for a link: its interface or serial device.
pub fn heartbeat_link_name(hbd_name: &str) -> &str {
    let mut parts = hbd_name.splitn(3, ':');
    match (parts.next(), parts.next()) {
        (Some("ucast" | "mcast" | "bcast" | "serial"), Some(device)) => device,
        _ => hbd_name,
    }
}

/// A node's links under heartbeat's names, in first-seen order, with their merged state.
fn links(n: &NodeReport) -> Vec<(String, &'static str)> {
    let mut merged: Vec<(String, &'static str)> = Vec::new();
    for l in &n.links {
        let name = heartbeat_link_name(&l.name);
        let state = match l.status.as_str() {
            "up" => "up",
            "dead" => "dead",
            _ => "init",
        };
        match merged.iter_mut().find(|(m, _)| m == name) {
            Some((_, s)) => *s = merge(s, state),
            None => merged.push((name.to_string(), state)),
        }
    }
    merged
}

/// Several media on one interface: up while any is up, dead once one is dead and none up.
fn merge(a: &'static str, b: &'static str) -> &'static str {
    if a == "up" || b == "up" {
        "up"
    } else if a == "dead" || b == "dead" {
        "dead"
    } else {
        "init"
    }
}

fn list_links(n: &NodeReport, verbose: bool) -> String {
    let mut out = String::new();
    for (name, state) in links(n) {
        if verbose {
            let _ = writeln!(out, "\t{name}\t{state}");
        } else {
            let _ = writeln!(out, "\t{name}");
        }
    }
    out
}

/// The state of `link` (heartbeat's or hbd's name) to node `n`.
fn link_status(n: &NodeReport, link: &str) -> Option<&'static str> {
    if let Some(l) = n.links.iter().find(|l| l.name == link) {
        return Some(match l.status.as_str() {
            "up" => "up",
            "dead" => "dead",
            _ => "init",
        });
    }
    links(n)
        .into_iter()
        .find(|(name, _)| name == link)
        .map(|(_, s)| s)
}

/// heartbeat's `rscstatus`: which classes of groups this node holds. `local` groups prefer
/// this node, `foreign` ones the other; a node alone (every peer dead) that holds its
/// class holds `all`, as heartbeat's did after taking the dead node's share; `transition`
/// while the pair is unstable or a group is starting or stopping.
pub fn resources_held(r: &StatusReport) -> &'static str {
    let in_flux = !r.unstable.is_empty()
        || r.groups
            .iter()
            .any(|g| g.state == "starting" || g.state == "stopping");
    if in_flux {
        return "transition";
    }
    let alone = r
        .nodes
        .iter()
        .filter(|n| !n.local)
        .all(|n| n.state == "dead");
    // Per class (local: preferred here; foreign: preferred elsewhere): how many groups,
    // and how many of them run here.
    let (mut local, mut foreign) = ((0, 0), (0, 0));
    for g in &r.groups {
        let class = if g.preferred == r.node {
            &mut local
        } else {
            &mut foreign
        };
        class.0 += 1;
        if g.owner.as_deref() == Some(r.node.as_str()) {
            class.1 += 1;
        }
    }
    // A class is held when all its groups run here; an empty class goes with the other
    // when this node is alone (it would hold it), else it is not held.
    let holds = |(total, here): (usize, usize)| total > 0 && here == total;
    let (mut has_local, mut has_foreign) = (holds(local), holds(foreign));
    if alone {
        has_local |= local.0 == 0 && has_foreign;
        has_foreign |= foreign.0 == 0 && has_local;
    }
    match (has_local, has_foreign) {
        (true, true) => "all",
        (true, false) => "local",
        (false, true) => "foreign",
        (false, false) => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    fn run(line: &str, r: Option<&StatusReport>) -> Outcome {
        match parse(&args(line)) {
            Ok(inv) => answer(&inv, r),
            Err(o) => o,
        }
    }

    // Reports are built from JSON, the control protocol's public form, so these tests
    // depend on field names only.
    fn node(name: &str, state: &str, local: bool, links: &[(&str, &str)]) -> Value {
        let links: Vec<Value> = links
            .iter()
            .map(|(n, s)| json!({ "name": n, "status": s }))
            .collect();
        json!({
            "name": name,
            "status": if state == "active" { "up" } else { state },
            "state": state,
            "local": local,
            "deadtime_ms": 400,
            "late_heartbeats": 0,
            "longest_gap_ms": 0,
            "links": links,
        })
    }

    fn group(name: &str, preferred: &str, owner: Option<&str>, state: &str) -> Value {
        json!({
            "name": name,
            "preferred": preferred,
            "owner": owner,
            "state": state,
            "target": preferred,
            "epoch": 1,
            "resources": [],
        })
    }

    fn pair(peer_state: &str, groups: Vec<Value>) -> StatusReport {
        let links = [
            ("ucast:eth0:192.0.2.11", "up"),
            ("ucast:eth0:192.0.2.12", "dead"),
            ("mcast:eth1:239.0.2.94", peer_state),
        ];
        serde_json::from_value(json!({
            "node": "n1",
            "state": "active",
            "generation": 3,
            "nodes": [
                node("n1", "active", true, &links.map(|(n, _)| (n, "up"))),
                node("n2", peer_state, false, &links),
            ],
            "groups": groups,
            "queued": [],
            "unstable": "",
            "counters": {
                "accepted": 0, "duplicates": 0, "bad_auth": 0, "malformed": 0,
                "oversize": 0, "replayed": 0, "unknown_node": 0, "send_errors": 0,
            },
        }))
        .expect("a status report")
    }

    #[test]
    fn hbstatus_says_whether_the_daemon_runs() {
        let r = pair("up", vec![]);
        assert_eq!(
            run("hbstatus", Some(&r)),
            Outcome::out("Heartbeat is running on this machine.\n".into(), 0)
        );
        assert_eq!(
            run("hbstatus", None),
            Outcome::out("Heartbeat is stopped on this machine.\n".into(), 1)
        );
        let v = run("hbstatus -v", Some(&r));
        assert!(v.stdout.starts_with("version:\thbd "), "{v:?}");
        assert!(
            v.stdout.contains(
                "managed by:\t\"haresources\"\n\nn1\tactive\t(nodetype: normal)\n\teth0\tup\n"
            ),
            "{v:?}"
        );
    }

    #[test]
    fn listnodes_and_nodetype() {
        let r = pair("up", vec![]);
        assert_eq!(run("listnodes", Some(&r)).stdout, "n1\nn2\n");
        assert_eq!(run("listnodes -n", Some(&r)).stdout, "n1\nn2\n");
        assert_eq!(run("listnodes -p", Some(&r)).stdout, "");
        assert_eq!(run("listnodes -pn", Some(&r)).stdout, "n1\nn2\n");
        assert_eq!(
            run("listnodes -m", Some(&r)).stdout,
            "The nodes are as follow:\nn1\nn2\n"
        );
        assert_eq!(
            run("nodetype n2", Some(&r)),
            Outcome::out("normal\n".into(), 0)
        );
        assert_eq!(
            run("nodetype -m N2", Some(&r)).stdout,
            "The node N2's type: normal\n"
        );
        assert_eq!(run("nodetype n9", Some(&r)).code, PARAMETER_ERROR);
        assert_eq!(run("listnodes -x", Some(&r)).code, PARAMETER_ERROR);
        assert_eq!(run("listnodes", None).code, NORMAL_FAIL);
    }

    #[test]
    fn nodestatus_exit_codes() {
        let up = pair("up", vec![]);
        let dead = pair("dead", vec![]);
        assert_eq!(
            run("nodestatus n1", Some(&up)),
            Outcome::out("active\n".into(), 0)
        );
        assert_eq!(
            run("nodestatus n2", Some(&up)),
            Outcome::out("up\n".into(), 0)
        );
        assert_eq!(
            run("nodestatus n2", Some(&dead)),
            Outcome::out("dead\n".into(), 1)
        );
        assert_eq!(
            run("nodestatus -m n2", Some(&dead)).stdout,
            "The cluster node n2 is dead\n"
        );
        let init = pair("init", vec![]);
        assert_eq!(run("nodestatus n2", Some(&init)).code, 1);
        assert_eq!(run("nodestatus nobody", Some(&up)).code, PARAMETER_ERROR);
        assert_eq!(run("nodestatus", Some(&up)).code, PARAMETER_ERROR);
    }

    #[test]
    fn links_use_heartbeat_names_merged_per_interface() {
        let r = pair("dead", vec![]);
        assert_eq!(run("listhblinks n2", Some(&r)).stdout, "\teth0\n\teth1\n");
        assert_eq!(
            run("listhblinks -v n2", Some(&r)).stdout,
            "\teth0\tup\n\teth1\tdead\n"
        );
        assert_eq!(
            run("hblinkstatus n2 eth0", Some(&r)),
            Outcome::out("up\n".into(), 0)
        );
        assert_eq!(
            run("hblinkstatus n2 eth1", Some(&r)),
            Outcome::out("dead\n".into(), 1)
        );
        assert_eq!(
            run("hblinkstatus n2 ucast:eth0:192.0.2.12", Some(&r)),
            Outcome::out("dead\n".into(), 1)
        );
        assert_eq!(
            run("hblinkstatus -m n2 eth1", Some(&r)).stdout,
            "The node n2's heartbeat link eth1 is dead\n"
        );
        assert_eq!(run("hblinkstatus n2 eth7", Some(&r)).code, UNKNOWN_ERROR);
        assert_eq!(run("hblinkstatus n2", Some(&r)).code, PARAMETER_ERROR);
        assert_eq!(run("listhblinks nobody", Some(&r)).code, UNKNOWN_ERROR);
        assert_eq!(heartbeat_link_name("serial:/dev/ttyS0"), "/dev/ttyS0");
        assert_eq!(heartbeat_link_name("bcast:eth2"), "eth2");
    }

    #[test]
    fn rscstatus_classes() {
        let g = |pref: &str, owner: Option<&str>| group("g", pref, owner, "running");
        let held = |peer: &str, groups| resources_held(&pair(peer, groups));
        assert_eq!(
            held("up", vec![g("n1", Some("n1")), g("n2", Some("n2"))]),
            "local"
        );
        assert_eq!(
            held("up", vec![g("n1", Some("n2")), g("n2", Some("n2"))]),
            "none"
        );
        assert_eq!(
            held("up", vec![g("n1", Some("n1")), g("n2", Some("n1"))]),
            "all"
        );
        assert_eq!(
            held("up", vec![g("n1", Some("n2")), g("n2", Some("n1"))]),
            "foreign"
        );
        assert_eq!(held("up", vec![g("n1", Some("n1"))]), "local");
        assert_eq!(held("dead", vec![g("n1", Some("n1"))]), "all");
        assert_eq!(held("dead", vec![g("n2", Some("n1"))]), "all");
        assert_eq!(held("up", vec![]), "none");
        let starting = group("g", "n1", Some("n1"), "starting");
        assert_eq!(held("up", vec![starting]), "transition");
        let mut r = pair("up", vec![g("n1", Some("n1"))]);
        r.unstable = "peer init".into();
        assert_eq!(resources_held(&r), "transition");
        let r = pair("up", vec![g("n1", Some("n1"))]);
        assert_eq!(
            run("rscstatus -m", Some(&r)).stdout,
            "This node is holding local resources.\n"
        );
    }

    #[test]
    fn help_and_bad_sub_commands() {
        assert_eq!(run("", None).stdout, HELP);
        assert_eq!(run("-h", None).code, 0);
        let bad = run("frobnicate", None);
        assert_eq!(bad.code, PARAMETER_ERROR);
        assert!(bad.stderr.contains("invalid sub-command"), "{bad:?}");
        assert_eq!(run("clientstatus n1 ipfail", None).code, UNKNOWN_ERROR);
        assert!(parse(&args("rscstatus")).unwrap().command.needs_daemon());
        assert!(!parse(&args("hbstatus")).unwrap().command.needs_daemon());
    }
}
