//! What hbd does with each ha.cf directive heartbeat 3.0.6 knows (features.md §2.2, heartbeat
//! `config.c` `Directives[]`).
//!
//! One table, [`DIRECTIVES`], so no directive can be accepted silently: each one either acts
//! (and names the test that shows it), acts only in its "off" form, or is ignored with a
//! warning that says why. The ha.cf reader ([`super::hacf`]) recognises exactly these names
//! and warns from this table; a unit test walks it and fails on any entry that neither acts
//! (with an existing test) nor warns.

/// How hbd treats one directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// hbd does what the directive asks; `test` names a test function that shows it.
    Acts {
        /// Name of a test function in the source tree that shows the directive acting.
        test: &'static str,
    },
    /// Only the values in `values` are what hbd does anyway (`use_logd no`, `autojoin none`,
    /// `crm off`, `realtime on`): accepted without a word. Any other value is warned about
    /// with `why`, or refused where the reader says so (`crm on`).
    SilentFor {
        /// The accepted values, lower-case.
        values: &'static [&'static str],
        /// Why another value is not honoured.
        why: &'static str,
        /// Test function that shows the off form silent and the others named.
        test: &'static str,
    },
    /// hbd does not need it: its own behaviour already covers what the directive is for.
    /// Warned about, so the operator knows the line does nothing.
    Ignored {
        /// Why it does nothing, and what to do instead.
        why: &'static str,
    },
    /// hbd cannot do what the directive asks (yet). Warned about, so the operator does not
    /// believe a feature is there.
    Unsupported {
        /// Why, and what to do instead.
        why: &'static str,
    },
}

/// One row of the table: the directive, a valid example line, and what hbd does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Directive {
    /// The directive as written in ha.cf (lower-case).
    pub name: &'static str,
    /// A valid line using it (the directive-walk test reads it).
    pub example: &'static str,
    /// What hbd does with it.
    pub support: Support,
}

/// Boolean "off" words (heartbeat booleans, features.md §2.1).
const OFF_WORDS: &[&str] = &["false", "off", "no", "n", "0"];
/// heartbeat's words for "on" (its `cl_parse_boolean`).
const ON_WORDS: &[&str] = &["true", "on", "yes", "y", "1"];

const fn acts(name: &'static str, example: &'static str, test: &'static str) -> Directive {
    Directive {
        name,
        example,
        support: Support::Acts { test },
    }
}

const fn ignored(name: &'static str, example: &'static str, why: &'static str) -> Directive {
    Directive {
        name,
        example,
        support: Support::Ignored { why },
    }
}

const fn unsupported(name: &'static str, example: &'static str, why: &'static str) -> Directive {
    Directive {
        name,
        example,
        support: Support::Unsupported { why },
    }
}

/// Every directive heartbeat 3.0.6 knows, in the order of features.md §2.2.
pub const DIRECTIVES: &[Directive] = &[
    // Media.
    acts("udpport", "udpport 694", "media_and_order"),
    acts("bcast", "bcast eth0", "two_daemons_over_bcast"),
    acts("udp", "udp eth0", "media_and_order"),
    acts(
        "mcast",
        "mcast eth0 239.192.0.1 694 1 0",
        "two_daemons_over_mcast",
    ),
    acts(
        "mcast6",
        "mcast6 eth0 ff12::1 694 1 0",
        "two_daemons_over_mcast6",
    ),
    acts("ucast", "ucast eth0 192.0.2.12", "two_daemons_over_ucast"),
    acts(
        "ucast6",
        "ucast6 eth0 2001:db8::12",
        "two_daemons_over_ucast6",
    ),
    acts(
        "serial",
        "serial /dev/ttyS0",
        "serial_line_keeps_the_pair_together_while_udp_is_cut",
    ),
    acts(
        "baud",
        "baud 19200",
        "frames_cross_a_null_modem_both_ways_at_19200",
    ),
    acts(
        "hopfudge",
        "hopfudge 1",
        "frames_carry_heartbeats_ttl_from_the_configuration",
    ),
    acts(
        "msgfmt",
        "msgfmt netstring",
        "all_captured_vectors_decode_verify_and_reencode_exactly",
    ),
    ignored(
        "compression",
        "compression zlib",
        "hbd never compresses the heartbeat frames it sends",
    ),
    ignored(
        "compression_threshold",
        "compression_threshold 2",
        "hbd never compresses the heartbeat frames it sends",
    ),
    ignored(
        "traditional_compression",
        "traditional_compression off",
        "hbd never compresses the heartbeat frames it sends",
    ),
    ignored(
        "max_rexmit_delay",
        "max_rexmit_delay 250",
        "hbd does not ask for retransmissions: heartbeats repeat every keepalive",
    ),
    // Membership and identity.
    acts("node", "node alpha beta", "two_nodes_join_and_go_active"),
    Directive {
        name: "autojoin",
        example: "autojoin any",
        support: Support::SilentFor {
            values: &["none"],
            why: "only the listed `node`s are members; add a `node` line for each member",
            test: "off_forms_are_silent_and_the_others_are_named",
        },
    },
    ignored(
        "uuidfrom",
        "uuidfrom file",
        "hbd identifies nodes by name and keeps its own uuid in the state directory",
    ),
    ignored(
        "cluster",
        "cluster lab",
        "hbd does not use the cluster name: the members are the `node` lines that share the authkeys; remove the line",
    ),
    ignored(
        "hbgenmethod",
        "hbgenmethod file",
        "hbd keeps its own generation numbers in the state directory",
    ),
    unsupported(
        "quorum_server",
        "quorum_server q1",
        "quorum servers are a Pacemaker/CCM feature",
    ),
    // Timing.
    acts(
        "keepalive",
        "keepalive 2",
        "timer_alone_sends_every_keepalive_without_bursts",
    ),
    acts(
        "deadtime",
        "deadtime 30",
        "peer_declared_dead_exactly_at_deadtime",
    ),
    acts(
        "warntime",
        "warntime 10",
        "late_heartbeat_is_reported_with_its_interval",
    ),
    acts(
        "initdead",
        "initdead 120",
        "never_heard_peer_dies_at_initdead_and_we_go_active",
    ),
    acts(
        "deadping",
        "deadping 30",
        "ping_targets_die_when_cut_and_come_back_when_restored",
    ),
    // hbd's own: how long a worse reach must last before groups move (not in heartbeat).
    acts(
        "ping_hysteresis",
        "ping_hysteresis 2",
        "a_lost_upstream_moves_the_group_to_the_peer_and_back",
    ),
    // Resources and failover.
    acts(
        "auto_failback",
        "auto_failback on",
        "failback_follows_auto_failback",
    ),
    acts("nice_failback", "nice_failback on", "nice_failback_maps"),
    Directive {
        name: "crm",
        example: "crm on",
        support: Support::SilentFor {
            values: OFF_WORDS,
            why: "hbd does not run Pacemaker: it manages the haresources groups itself",
            test: "off_forms_are_silent_and_the_others_are_named",
        },
    },
    Directive {
        name: "pacemaker",
        example: "pacemaker respawn",
        support: Support::SilentFor {
            values: OFF_WORDS,
            why: "hbd does not run Pacemaker: it manages the haresources groups itself",
            test: "off_forms_are_silent_and_the_others_are_named",
        },
    },
    ignored(
        "crm_daemon_dir",
        "crm_daemon_dir /usr/lib/heartbeat",
        "it is Pacemaker plumbing and hbd manages haresources groups itself; remove the line",
    ),
    ignored(
        "crmd_spawns_pengine",
        "crmd_spawns_pengine on",
        "it is Pacemaker plumbing and hbd manages haresources groups itself; remove the line",
    ),
    ignored(
        "record_config_changes",
        "record_config_changes on",
        "it is Pacemaker plumbing and hbd manages haresources groups itself; remove the line",
    ),
    ignored(
        "record_pengine_inputs",
        "record_pengine_inputs on",
        "it is Pacemaker plumbing and hbd manages haresources groups itself; remove the line",
    ),
    ignored(
        "enable_config_writes",
        "enable_config_writes on",
        "it is Pacemaker plumbing and hbd manages haresources groups itself; remove the line",
    ),
    // Fencing, watchdog, reachability, clients.
    acts(
        "stonith",
        "stonith baytech /etc/ha.d/conf/stonith.baytech",
        "stonith_lines_reset_the_peer_through_cluster_glue",
    ),
    acts(
        "stonith_host",
        "stonith_host * baytech 10.0.0.3 login secret",
        "stonith_lines_reset_the_peer_through_cluster_glue",
    ),
    acts(
        "watchdog",
        "watchdog /dev/watchdog",
        "magic_close_writes_v_after_the_pets",
    ),
    acts(
        "ping",
        "ping 192.0.2.1",
        "ping_targets_die_when_cut_and_come_back_when_restored",
    ),
    acts("ping6", "ping6 2001:db8::1", "ipv6_replies_are_read"),
    acts(
        "ping_group",
        "ping_group g1 192.0.2.1 192.0.2.2",
        "a_lost_upstream_moves_the_group_to_the_peer_and_back",
    ),
    unsupported(
        "hbaping",
        "hbaping fc-card",
        "use ping or ping_group for reachability",
    ),
    acts(
        "respawn",
        "respawn root /bin/true",
        "a_program_that_exits_is_restarted_and_stopped_on_shutdown",
    ),
    unsupported(
        "failfast",
        "failfast hacluster /bin/x",
        "hbd does not reboot the node when a client dies; use `respawn` to keep it running, or remove the line",
    ),
    ignored(
        "apiauth",
        "apiauth ipfail uid=hacluster",
        "hbd has no heartbeat client API: hactl talks to the control socket (root only, mode 0600)",
    ),
    unsupported(
        "env",
        "env A=b",
        "hbd does not pass extra environment to respawned programs or scripts; set it in a wrapper script",
    ),
    // Logging and runtime.
    acts(
        "logfacility",
        "logfacility local0",
        "syslog_lines_are_rfc3164_with_the_facility",
    ),
    acts(
        "logfile",
        "logfile /var/log/ha-log",
        "files_get_their_levels_without_colour_and_follow_rotation",
    ),
    acts(
        "debugfile",
        "debugfile /var/log/ha-debug",
        "files_get_their_levels_without_colour_and_follow_rotation",
    ),
    acts("debug", "debug 1", "debug_levels_map_onto_filters"),
    Directive {
        name: "use_logd",
        example: "use_logd yes",
        support: Support::SilentFor {
            values: OFF_WORDS,
            why: "hbd writes logfile, debugfile and syslog itself",
            test: "off_forms_are_silent_and_the_others_are_named",
        },
    },
    ignored(
        "conn_logd_time",
        "conn_logd_time 60",
        "hbd does not use ha_logd",
    ),
    Directive {
        name: "realtime",
        example: "realtime off",
        support: Support::SilentFor {
            values: ON_WORDS,
            why: "hbd always runs realtime (SCHED_FIFO 40, memory locked); start it with --no-realtime instead of `realtime off`",
            test: "off_forms_are_silent_and_the_others_are_named",
        },
    },
    unsupported(
        "rtprio",
        "rtprio 5",
        "hbd's realtime priority is fixed at 40",
    ),
    ignored(
        "coredumps",
        "coredumps true",
        "core dumps follow the system settings (ulimit, core_pattern)",
    ),
    ignored(
        "coreroot",
        "coreroot /var/lib/heartbeat/cores",
        "core dumps follow the system settings (ulimit, core_pattern)",
    ),
    ignored(
        "log_badpack",
        "log_badpack true",
        "hbd always counts and logs bad packets",
    ),
    ignored(
        "syslogmsgfmt",
        "syslogmsgfmt true",
        "hbd writes its own line format (timestamped lines in files, RFC 3164 to syslog)",
    ),
    unsupported(
        "use_apphbd",
        "use_apphbd yes",
        "hbd does not use the application heartbeat daemon",
    ),
    ignored(
        "memreserve",
        "memreserve 6500",
        "hbd locks its memory as it touches it (mlockall); nothing to reserve",
    ),
    ignored(
        "normalpoll",
        "normalpoll true",
        "hbd always uses the kernel's poll",
    ),
];

/// The row for `name` (lower-case), if heartbeat knows the directive.
pub fn lookup(name: &str) -> Option<&'static Directive> {
    DIRECTIVES.iter().find(|d| d.name == name)
}

/// The warning for a line that names `directive` and does nothing, or `None` when hbd acts
/// on the line as written (`value` is the line's first word after the directive).
pub(crate) fn warning_for(directive: &str, value: Option<&str>) -> Option<String> {
    match lookup(directive)?.support {
        Support::Acts { .. } => None,
        Support::SilentFor { values, why, .. } => {
            let v = value.unwrap_or_default();
            if values.contains(&v.to_ascii_lowercase().as_str()) {
                None
            } else {
                Some(format!("'{directive} {v}' is ignored: {why}"))
            }
        }
        Support::Ignored { why } => Some(format!("'{directive}' is ignored: {why}")),
        Support::Unsupported { why } => Some(format!(
            "'{directive}' is not supported by hbd yet and is ignored; {why}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::diag::Severity;
    use super::super::hacf;
    use super::*;
    use std::path::{Path, PathBuf};

    /// Every `.rs` file under src/ and tests/.
    fn sources() -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut todo = vec![root.join("src"), root.join("tests")];
        let mut files = Vec::new();
        while let Some(dir) = todo.pop() {
            for entry in std::fs::read_dir(&dir).expect("source dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    todo.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        files
    }

    /// Whether a test function called `name` exists: `fn name(` with a test attribute in
    /// the few lines above it.
    fn test_exists(texts: &[String], name: &str) -> bool {
        let needle = format!("fn {name}(");
        texts.iter().any(|t| {
            t.match_indices(&needle).any(|(at, _)| {
                let before = &t[..at];
                let head: Vec<&str> = before.lines().rev().take(4).collect();
                head.iter()
                    .any(|l| l.contains("#[test]") || l.contains("#[tokio::test"))
            })
        })
    }

    fn parse(text: &str) -> Vec<(usize, Severity, String)> {
        let (_, diags) = hacf::parse(text, Path::new("ha.cf"));
        diags
            .into_iter()
            .map(|d| (d.line.unwrap_or(0), d.severity, d.message))
            .collect()
    }

    /// The directive walk (issue 12): every ha.cf directive hbd knows either acts, naming a
    /// test function that exists and shows it, or is named in a warning (or refused) when
    /// written. A new directive cannot be added without choosing one.
    #[test]
    fn every_directive_acts_or_is_named() {
        let texts: Vec<String> = sources()
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("read source"))
            .collect();
        let mut missing = Vec::new();
        for d in DIRECTIVES {
            let lines = hacf::lex(d.example);
            assert_eq!(lines.len(), 1, "{}: example is one line", d.name);
            assert_eq!(lines[0].directive, d.name, "{}: example names it", d.name);
            let diags = parse(d.example);
            let quoted = format!("'{}", d.name);
            let named_at_line_1 = |sev: Severity| {
                diags
                    .iter()
                    .any(|(l, s, m)| *l == 1 && *s == sev && m.starts_with(&quoted))
            };
            match d.support {
                Support::Acts { test } => {
                    if !test_exists(&texts, test) {
                        missing.push(format!("{}: no test function `{test}`", d.name));
                    }
                    assert!(
                        !diags.iter().any(|(_, s, _)| *s == Severity::Error),
                        "{}: its example is refused: {diags:?}",
                        d.name
                    );
                }
                Support::SilentFor { values, test, .. } => {
                    if !test_exists(&texts, test) {
                        missing.push(format!("{}: no test function `{test}`", d.name));
                    }
                    assert!(
                        named_at_line_1(Severity::Warning) || named_at_line_1(Severity::Error),
                        "{}: `{}` is accepted silently: {diags:?}",
                        d.name,
                        d.example
                    );
                    for word in values {
                        let quiet = parse(&format!("{} {word}", d.name));
                        assert!(quiet.is_empty(), "{} {word}: {quiet:?}", d.name);
                    }
                }
                Support::Ignored { .. } | Support::Unsupported { .. } => {
                    assert!(
                        named_at_line_1(Severity::Warning),
                        "{}: `{}` is not warned about: {diags:?}",
                        d.name,
                        d.example
                    );
                }
            }
        }
        assert!(missing.is_empty(), "{missing:#?}");
    }

    /// Every directive has its row in the operator's reference, written `` `name` `` or
    /// `` `name ARGS` ``, so docs/configuration.md cannot fall behind the table.
    #[test]
    fn every_directive_is_in_configuration_md() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let doc = std::fs::read_to_string(&path).expect("read docs/configuration.md");
        let missing: Vec<&str> = DIRECTIVES
            .iter()
            .map(|d| d.name)
            .filter(|n| !doc.contains(&format!("`{n}`")) && !doc.contains(&format!("`{n} ")))
            .collect();
        assert!(
            missing.is_empty(),
            "not in docs/configuration.md: {missing:?}"
        );
    }

    /// Names are unique and lower-case, and a word outside the table is an error.
    #[test]
    fn the_table_is_the_reader_s_whole_vocabulary() {
        let mut names: Vec<&str> = DIRECTIVES.iter().map(|d| d.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a directive is listed twice");
        assert!(names.iter().all(|n| *n == n.to_ascii_lowercase()));
        let diags = parse("udp_port 694\nlogd yes\n");
        assert_eq!(diags.len(), 2, "{diags:?}");
        assert!(
            diags
                .iter()
                .all(|(_, s, m)| *s == Severity::Error && m.starts_with("unknown directive"))
        );
    }

    /// `use_logd`, `autojoin`, `crm` and `pacemaker` in their off form, and `realtime` on, ask
    /// for what hbd does anyway and are silent; any other value is named (a warning, or for
    /// Pacemaker an error).
    #[test]
    fn off_forms_are_silent_and_the_others_are_named() {
        for quiet in [
            "use_logd no",
            "use_logd OFF",
            "autojoin none",
            "crm off",
            "pacemaker false",
            "realtime on",
            "realtime yes",
        ] {
            assert_eq!(parse(quiet), [], "{quiet}");
        }
        assert_eq!(
            parse("use_logd yes\nautojoin other\n"),
            [
                (
                    1,
                    Severity::Warning,
                    "'use_logd yes' is ignored: hbd writes logfile, debugfile and syslog itself"
                        .to_string()
                ),
                (
                    2,
                    Severity::Warning,
                    "'autojoin other' is ignored: only the listed `node`s are members; add a `node` line for each member"
                        .to_string()
                ),
            ]
        );
        let crm = parse("crm respawn\npacemaker on\n");
        assert_eq!(crm.len(), 2, "{crm:?}");
        assert!(crm.iter().all(|(_, s, m)| *s == Severity::Error
            && m.contains("asks for Pacemaker, which hbd does not run")));
    }
}
