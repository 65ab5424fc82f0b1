//! The arguments of the built-in `conntrackd` resource, checked where the configuration is
//! read so that `hbd --check-config` names a bad one with its file and line.
//!
//! ```text
//! conntrackd::IFACE                    multicast to 225.0.0.50, port 3780, on IFACE
//! conntrackd::IFACE::GROUP             multicast to GROUP (224.0.0.0/4)
//! conntrackd::IFACE::ADDR[::ADDR]      UDP unicast: the directors' addresses on IFACE; each
//!                                      node sends to the one it does not hold
//! conntrackd::IFACE::…::PORT           another UDP port (multicast: the `Group` port)
//! conntrackd::/PATH/conntrackd.conf    the operator's own file, used as it is
//! ```
//!
//! The defaults are conntrack-tools' own (Debian's `examples/sync/ftfw/conntrackd.conf`:
//! `IPv4_address 225.0.0.50`, `Group 3780`). Addresses are IPv4: haresources separates
//! arguments with `::`, which an IPv6 address cannot cross; an IPv6 sync link takes the
//! operator's own file. The resource itself is `crate::resources::conntrackd`.

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::diag::Diagnostic;
use super::model::GroupSpec;
use super::validate::At;

/// Where Debian's conntrackd package installs the daemon (package `conntrackd`, from
/// conntrack-tools).
pub const CONNTRACKD_BIN: &str = "/usr/sbin/conntrackd";

/// conntrack-tools' example multicast group (`examples/sync/ftfw/conntrackd.conf`).
pub const DEFAULT_MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(225, 0, 0, 50);

/// conntrack-tools' example port (multicast `Group`, UDP `Port`).
pub const DEFAULT_PORT: u16 = 3780;

/// Longest interface name the kernel takes (`IFNAMSIZ` 16, with its NUL).
const IFNAME_MAX: usize = 15;

/// How the daemon is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConntrackdSpec {
    /// hbd writes the node's conntrackd.conf (FTFW over the dedicated link).
    Generated(SyncLink),
    /// The operator's own conntrackd.conf, used as it is.
    OwnFile(PathBuf),
}

/// The dedicated link the two directors sync over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncLink {
    /// The interface the messages leave by.
    pub interface: String,
    /// Multicast or unicast.
    pub transport: SyncTransport,
    /// UDP port (multicast: conntrackd's `Group`).
    pub port: u16,
}

/// How sync messages reach the other director.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncTransport {
    /// To a multicast group, joined on the interface.
    Multicast(Ipv4Addr),
    /// UDP unicast to the other director: one address (the peer's), or both directors'
    /// (the same haresources line on both nodes; each sends to the one it does not hold).
    Unicast(Vec<Ipv4Addr>),
}

/// Why `conntrackd` arguments are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConntrackdArgsError {
    /// Nothing after `conntrackd`.
    #[error(
        "name the sync link: write conntrackd::IFACE[::ADDR[::ADDR]][::PORT] or conntrackd::/PATH/conntrackd.conf"
    )]
    Missing,
    /// The interface name is empty, too long or holds a `/`.
    #[error("interface {0:?} is not a usable name (1-{IFNAME_MAX} characters, no '/')")]
    Interface(String),
    /// A word after the interface that is neither an IPv4 address nor a port.
    #[error(
        "{0:?} is neither an IPv4 address nor a port (IPv6 sync links need your own conntrackd.conf)"
    )]
    Word(String),
    /// The port is 0 or above 65535.
    #[error("port {0:?} is not a number from 1 to 65535")]
    Port(String),
    /// Three addresses, or words after the port.
    #[error("too many arguments: at most two addresses, then a port")]
    TooMany,
    /// A multicast group beside another address.
    #[error("{0} is a multicast group: write it alone (conntrackd::IFACE::GROUP)")]
    MixedMulticast(Ipv4Addr),
    /// The same unicast address twice.
    #[error("{0} is given twice: write both directors' addresses on the sync link")]
    SameAddress(Ipv4Addr),
    /// An own file given as a relative path, or followed by more words.
    #[error("the own conntrackd.conf is written alone, as an absolute path: conntrackd::/PATH")]
    OwnFile,
}

impl ConntrackdSpec {
    /// From the haresources arguments (the words after `conntrackd::`).
    pub fn from_args(args: &[String]) -> Result<ConntrackdSpec, ConntrackdArgsError> {
        let Some((first, rest)) = args.split_first() else {
            return Err(ConntrackdArgsError::Missing);
        };
        if first.starts_with('/') {
            return if rest.is_empty() {
                Ok(ConntrackdSpec::OwnFile(PathBuf::from(first)))
            } else {
                Err(ConntrackdArgsError::OwnFile)
            };
        }
        if first.is_empty() || first.len() > IFNAME_MAX || first.contains('/') {
            return Err(ConntrackdArgsError::Interface(first.clone()));
        }
        let mut addresses: Vec<Ipv4Addr> = Vec::new();
        let mut port = None;
        for word in rest {
            if port.is_some() {
                return Err(ConntrackdArgsError::TooMany);
            }
            if let Ok(a) = word.parse::<Ipv4Addr>() {
                if addresses.len() == 2 {
                    return Err(ConntrackdArgsError::TooMany);
                }
                if addresses.contains(&a) {
                    return Err(ConntrackdArgsError::SameAddress(a));
                }
                addresses.push(a);
            } else if word.bytes().all(|b| b.is_ascii_digit()) && !word.is_empty() {
                port = Some(match word.parse::<u16>() {
                    Ok(p) if p > 0 => p,
                    _ => return Err(ConntrackdArgsError::Port(word.clone())),
                });
            } else {
                return Err(ConntrackdArgsError::Word(word.clone()));
            }
        }
        let transport = match addresses.as_slice() {
            [] => SyncTransport::Multicast(DEFAULT_MULTICAST_GROUP),
            [group] if group.is_multicast() => SyncTransport::Multicast(*group),
            _ => {
                if let Some(group) = addresses.iter().find(|a| a.is_multicast()) {
                    return Err(ConntrackdArgsError::MixedMulticast(*group));
                }
                SyncTransport::Unicast(addresses)
            }
        };
        Ok(ConntrackdSpec::Generated(SyncLink {
            interface: first.clone(),
            transport,
            port: port.unwrap_or(DEFAULT_PORT),
        }))
    }
}

/// Reports every `conntrackd` resource whose arguments are unusable, and a second one: a
/// node runs one conntrackd, which syncs every translated connection of the node.
pub(crate) fn check_groups(groups: &[At<GroupSpec>], diags: &mut Vec<Diagnostic>) {
    let mut first_line: Option<Option<usize>> = None;
    for g in groups {
        check_order(g, diags);
        for r in g.value.resources.iter().filter(|r| r.kind == "conntrackd") {
            if let Err(e) = ConntrackdSpec::from_args(&r.args) {
                diags.push(g.loc.error(format!("resource '{}': {e}", r.spec)));
            }
            match first_line {
                None => first_line = Some(g.loc.line),
                Some(line) => diags.push(g.loc.error(format!(
                    "resource '{}': a second conntrackd resource (the first is on line {}); one \
                     conntrackd per node syncs every connection: keep one, in the group whose \
                     VIPs carry the translated connections",
                    r.spec,
                    line.map_or_else(|| "?".to_string(), |l| l.to_string())
                ))),
            }
        }
    }
}

/// Warns when the group's order would reset synced connections at a failover: the
/// director's rules must be in place when conntrackd commits (the kernel translates a
/// committed connection only while the nat chain holds a `dnat`), and the VIPs must move
/// after the commit and go before the rules (a packet for a VIP held without its rule
/// reaches the node's own stack, which answers with a reset). Hence
/// `ldirectord conntrackd::… VIP…`.
fn check_order(g: &At<GroupSpec>, diags: &mut Vec<Diagnostic>) {
    let resources = &g.value.resources;
    let Some(at) = resources.iter().position(|r| r.kind == "conntrackd") else {
        return;
    };
    let vip_before = resources[..at]
        .iter()
        .find(|r| r.kind == "IPaddr" || r.kind == "IPaddr2");
    let director_after = resources[at..].iter().find(|r| r.kind == "ldirectord");
    if let Some(r) = director_after.or(vip_before) {
        diags.push(g.loc.warning(format!(
            "resource '{}' comes {} '{}': synced connections are reset at a failover unless \
             the director's rules come first and the VIPs last; write `ldirectord \
             {} VIP…`",
            resources[at].spec,
            if director_after.is_some() {
                "before"
            } else {
                "after"
            },
            r.spec,
            resources[at].spec
        )));
    }
}

/// Reports, for the groups with a `conntrackd` resource, a daemon that is not installed at
/// `binary` and an own conntrackd.conf that does not exist: the group could never start.
pub(crate) fn check_on_host(groups: &[At<GroupSpec>], binary: &Path, diags: &mut Vec<Diagnostic>) {
    for g in groups {
        for r in g.value.resources.iter().filter(|r| r.kind == "conntrackd") {
            match std::fs::metadata(binary) {
                Ok(m) if m.is_file() && m.mode() & 0o111 != 0 => {}
                _ => diags.push(g.loc.error(format!(
                    "resource '{}': conntrackd is not installed ({} is missing); install \
                     Debian's conntrackd package (`apt-get install conntrackd`)",
                    r.spec,
                    binary.display()
                ))),
            }
            if let Ok(ConntrackdSpec::OwnFile(path)) = ConntrackdSpec::from_args(&r.args)
                && !path.is_file()
            {
                diags.push(g.loc.error(format!(
                    "resource '{}': {} does not exist; write it, or let hbd write one \
                     (conntrackd::IFACE[::ADDR[::ADDR]])",
                    r.spec,
                    path.display()
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::ResourceSpec;
    use crate::config::validate::Loc;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    fn parse(words: &[&str]) -> Result<ConntrackdSpec, ConntrackdArgsError> {
        ConntrackdSpec::from_args(&args(words))
    }

    fn link(interface: &str, transport: SyncTransport, port: u16) -> ConntrackdSpec {
        ConntrackdSpec::Generated(SyncLink {
            interface: interface.into(),
            transport,
            port,
        })
    }

    #[test]
    fn the_interface_alone_multicasts_to_conntrack_tools_defaults() {
        assert_eq!(
            parse(&["eth2"]),
            Ok(link(
                "eth2",
                SyncTransport::Multicast(Ipv4Addr::new(225, 0, 0, 50)),
                3780
            ))
        );
        assert_eq!(
            parse(&["eth2", "239.1.2.3", "3790"]),
            Ok(link(
                "eth2",
                SyncTransport::Multicast(Ipv4Addr::new(239, 1, 2, 3)),
                3790
            ))
        );
    }

    #[test]
    fn one_or_two_unicast_addresses_and_a_port() {
        let a: Ipv4Addr = "192.0.2.1".parse().unwrap();
        let b: Ipv4Addr = "192.0.2.2".parse().unwrap();
        assert_eq!(
            parse(&["eth2", "192.0.2.2"]),
            Ok(link("eth2", SyncTransport::Unicast(vec![b]), 3780))
        );
        assert_eq!(
            parse(&["eth2", "192.0.2.1", "192.0.2.2", "4000"]),
            Ok(link("eth2", SyncTransport::Unicast(vec![a, b]), 4000))
        );
    }

    #[test]
    fn an_absolute_path_is_the_operators_own_file() {
        assert_eq!(
            parse(&["/etc/conntrackd/conntrackd.conf"]),
            Ok(ConntrackdSpec::OwnFile(
                "/etc/conntrackd/conntrackd.conf".into()
            ))
        );
        assert_eq!(
            parse(&["/etc/c.conf", "eth0"]),
            Err(ConntrackdArgsError::OwnFile)
        );
    }

    #[test]
    fn unusable_arguments_are_named() {
        use ConntrackdArgsError as E;
        assert_eq!(parse(&[]), Err(E::Missing));
        assert_eq!(parse(&[""]), Err(E::Interface(String::new())));
        assert_eq!(
            parse(&["a-very-long-interface"]),
            Err(E::Interface("a-very-long-interface".into()))
        );
        assert_eq!(parse(&["eth2", "peer"]), Err(E::Word("peer".into())));
        assert_eq!(parse(&["eth2", "0"]), Err(E::Port("0".into())));
        assert_eq!(parse(&["eth2", "65536"]), Err(E::Port("65536".into())));
        assert_eq!(
            parse(&["eth2", "192.0.2.1", "192.0.2.2", "192.0.2.3"]),
            Err(E::TooMany)
        );
        assert_eq!(parse(&["eth2", "3780", "192.0.2.1"]), Err(E::TooMany));
        assert_eq!(
            parse(&["eth2", "192.0.2.1", "225.0.0.50"]),
            Err(E::MixedMulticast("225.0.0.50".parse().unwrap()))
        );
        assert_eq!(
            parse(&["eth2", "192.0.2.1", "192.0.2.1"]),
            Err(E::SameAddress("192.0.2.1".parse().unwrap()))
        );
    }

    fn group(line: usize, words: &[&str]) -> At<GroupSpec> {
        let resources = words
            .iter()
            .map(|w| {
                crate::config::haresources::parse_resource(w).unwrap_or_else(|e| panic!("{w}: {e}"))
            })
            .collect::<Vec<ResourceSpec>>();
        At::new(
            GroupSpec {
                preferred: "dir1".into(),
                resources,
            },
            Loc::new(Path::new("haresources"), Some(line)),
        )
    }

    #[test]
    fn check_config_names_the_line_of_a_bad_or_second_resource() {
        let mut diags = Vec::new();
        check_groups(
            &[
                group(1, &["conntrackd::eth2::nowhere", "192.0.2.10"]),
                group(3, &["conntrackd::eth2", "192.0.2.20"]),
            ],
            &mut diags,
        );
        let all: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(
            all[0].starts_with("haresources:1: resource 'conntrackd::eth2::nowhere': \"nowhere\""),
            "{all:?}"
        );
        assert!(
            all[1].starts_with("haresources:3: resource 'conntrackd::eth2': a second conntrackd resource (the first is on line 1)"),
            "{all:?}"
        );
    }

    #[test]
    fn check_config_warns_of_an_order_that_resets_synced_connections() {
        let warned = |words: &[&str]| {
            let mut diags = Vec::new();
            check_groups(&[group(4, words)], &mut diags);
            diags.iter().map(|d| d.to_string()).collect::<Vec<_>>()
        };
        assert!(
            warned(&["ldirectord", "conntrackd::eth2", "192.0.2.10"]).is_empty(),
            "the advised order"
        );
        let vip_first = warned(&["192.0.2.10", "ldirectord", "conntrackd::eth2"]);
        assert_eq!(vip_first.len(), 1, "{vip_first:?}");
        assert!(
            vip_first[0].starts_with(
                "haresources:4: warning: resource 'conntrackd::eth2' comes after '192.0.2.10'"
            ),
            "{vip_first:?}"
        );
        assert!(vip_first[0].contains("write `ldirectord conntrackd::eth2 VIP…`"));
        let director_last = warned(&["conntrackd::eth2", "192.0.2.10", "ldirectord::lb.cf"]);
        assert!(
            director_last[0].contains("comes before 'ldirectord::lb.cf'"),
            "{director_last:?}"
        );
    }

    #[test]
    fn check_config_says_when_conntrackd_is_not_installed() {
        let dir = tempfile::tempdir().unwrap();
        let mut diags = Vec::new();
        let groups = [group(2, &["192.0.2.10", "conntrackd::/nonexistent/c.conf"])];
        check_on_host(&groups, &dir.path().join("conntrackd"), &mut diags);
        let all: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all[0].contains("haresources:2:"), "{all:?}");
        assert!(all[0].contains("apt-get install conntrackd"), "{all:?}");
        assert!(
            all[1].contains("/nonexistent/c.conf does not exist"),
            "{all:?}"
        );
        // Installed (any executable file there) and no own file: nothing to say.
        let bin = dir.path().join("conntrackd");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut diags = Vec::new();
        check_on_host(&[group(2, &["conntrackd::eth2"])], &bin, &mut diags);
        assert!(diags.is_empty(), "{diags:?}");
    }
}
