//! Loader tests over the fixture directories (tests/fixtures/config/).

use super::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

/// Copies a fixture directory into a tempdir (git does not keep modes) and sets authkeys mode.
fn copy(name: &str, authkeys_mode: u32) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for entry in fs::read_dir(fixture(name)).expect("fixture dir") {
        let entry = entry.expect("entry");
        fs::copy(entry.path(), tmp.path().join(entry.file_name())).expect("copy");
    }
    let keys = tmp.path().join("authkeys");
    if keys.exists() {
        fs::set_permissions(&keys, fs::Permissions::from_mode(authkeys_mode)).expect("chmod");
    }
    tmp
}

fn load(name: &str, node: &str) -> (Loaded, tempfile::TempDir) {
    let dir = copy(name, 0o600);
    match load_ha_dir(dir.path(), node) {
        Ok(l) => (l, dir),
        Err(e) => panic!("{name} as {node} refused:\n{e}"),
    }
}

/// The message of each warning, without the temp path.
fn messages(diags: &[Diagnostic]) -> Vec<String> {
    diags
        .iter()
        .map(|d| {
            let file = d.file.file_name().unwrap_or_default().to_string_lossy();
            match d.line {
                Some(l) => format!("{file}:{l}: {}", d.message),
                None => format!("{file}: {}", d.message),
            }
        })
        .collect()
}

/// load_yaml(to_yaml(config)) gives back the same config.
fn round_trip(config: &Config, node: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("hbd.yaml");
    let text = to_yaml(config).expect("serialises");
    fs::write(&path, &text).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    let back = match load_yaml(&path, node) {
        Ok(l) => l.config,
        Err(e) => panic!("to_yaml output refused:\n{e}\n---\n{text}"),
    };
    assert_eq!(&back, config, "round trip changed the config:\n{text}");
}

#[test]
fn seed004_loads_for_both_nodes() {
    for node in ["loadbalancer", "backup", "LoadBalancer"] {
        let (l, _dir) = load("seed004", node);
        let c = &l.config;
        assert_eq!(c.nodes, ["loadbalancer", "backup"]);
        assert_eq!(c.cluster_name, "linux-ha");
        assert_eq!(
            c.timing,
            Timing {
                keepalive: Duration::from_secs(2),
                deadtime: Duration::from_secs(30),
                warntime: Duration::from_secs(10),
                initdead: Duration::from_secs(120),
                deadping: Duration::from_secs(30),
            }
        );
        assert_eq!(
            c.media,
            vec![
                MediumSpec::Serial {
                    device: "/dev/ttyS0".into(),
                    baud: 19200
                },
                MediumSpec::Mcast {
                    interface: "eth0".into(),
                    group: "225.0.0.1".parse().unwrap(),
                    port: 694,
                    ttl: 1,
                    loopback: false
                },
            ]
        );
        assert_eq!(c.auth.active, 1);
        assert_eq!(c.auth.active_key().method, AuthMethod::Crc);
        assert_eq!(c.auto_failback, AutoFailback::On);
        assert!(c.ping_nodes.is_empty());
        assert_eq!(c.ping_groups.len(), 1);
        assert_eq!(c.ping_groups[0].name, "group1");
        assert_eq!(c.groups.len(), 1);
        let g = &c.groups[0];
        assert_eq!(g.preferred, "loadbalancer");
        assert_eq!(g.name(), "lvs");
        let kinds: Vec<&str> = g.resources.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["lvs", "IPaddr", "ipvsadm", "ldirectord"]);
        assert_eq!(g.resources[1].args, ["192.168.136.10/24/eth0"]);
        assert!(c.respawn.is_empty(), "ipfail is not respawned");
        assert_eq!(
            c.apiauth,
            vec![ApiAuth {
                client: "ipfail".into(),
                uids: vec!["root".into()],
                gids: vec!["root".into()]
            }]
        );
        assert_eq!(
            c.logging,
            Logging {
                file: Some("/var/log/ha-log".into()),
                debug_file: None,
                facility: Some("local0".into()),
                debug_level: 0
            }
        );
        let w = messages(&l.warnings);
        // Exactly these, in file order (seed004_warnings_name_what_does_not_act says why).
        assert_eq!(w.len(), 5, "{w:#?}");
        assert!(w[0].starts_with("authkeys:3: key 1 uses crc"), "{w:#?}");
        assert!(
            w[1].starts_with("ha.cf:59: ipfail is built into hbd"),
            "{w:#?}"
        );
        assert!(w[2].starts_with("ha.cf:61: 'apiauth' is ignored"), "{w:#?}");
        assert!(w[3].starts_with("ldirectord.cf:11:"), "{w:#?}");
        assert!(w[4].starts_with("ldirectord.cf:19:"), "{w:#?}");
        round_trip(c, node);
    }
}

/// Seed 004's ha.cf: every line hbd does not act on is named at its line (apiauth), ipfail
/// gets an info note, and the lines hbd acts on (logfile, logfacility, timers, udpport,
/// baud, serial, mcast, ping_group, auto_failback, node) get nothing.
#[test]
fn seed004_warnings_name_what_does_not_act() {
    let (l, _dir) = load("seed004", "loadbalancer");
    let hacf: Vec<(usize, Severity, String)> = l
        .warnings
        .iter()
        .filter(|d| d.file.ends_with("ha.cf"))
        .map(|d| (d.line.unwrap_or(0), d.severity, d.message.clone()))
        .collect();
    let named: Vec<(usize, Severity, &str)> = hacf
        .iter()
        .map(|(line, sev, m)| (*line, *sev, m.split(" is ").next().unwrap_or(m)))
        .collect();
    assert_eq!(
        named,
        [
            (59, Severity::Info, "ipfail"),
            (61, Severity::Warning, "'apiauth'"),
        ],
        "{hacf:#?}"
    );
    assert_eq!(
        hacf[0].2,
        "ipfail is built into hbd (ping nodes/groups drive failover); it is not started, and this line can go"
    );
    // Lines that act: logfile 3, logfacility 5, keepalive 7, deadtime 9, warntime 11,
    // initdead 13, udpport 15, baud 17, serial 19, mcast 21, auto_failback 25, node 44 and
    // 46, ping_group 57.
    for line in [3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 25, 44, 46, 57] {
        assert!(
            !hacf.iter().any(|(l, _, _)| *l == line),
            "line {line} acts, yet: {hacf:#?}"
        );
    }
    // The note is not a warning: hbd logs it at info level.
    assert_eq!(
        l.warnings
            .iter()
            .filter(|d| d.severity == Severity::Info)
            .count(),
        1
    );
}

/// A `respawn` user or program this host does not have refuses the configuration at its
/// line, with the fix; ipfail is exempt (hbd never starts it).
#[test]
fn respawn_user_and_program_must_exist_here() {
    let dir = copy("seed004", 0o600);
    let hacf = dir.path().join("ha.cf");
    let mut text = fs::read_to_string(&hacf).expect("read");
    let plain = dir.path().join("haresources");
    let plain = plain.display();
    text.push_str(&format!(
        "respawn no-such-user-hbd /bin/true\nrespawn root /no/such/program\nrespawn root {plain}\n\
         respawn nobody /bin/true\nrespawn root relative/prog\n",
    ));
    fs::write(&hacf, &text).expect("write");
    let e = load_ha_dir(dir.path(), "backup").expect_err("missing user and program");
    let m = messages(&e.diagnostics);
    let base = text.lines().count() - 5;
    for (line, want) in [
        (
            base + 1,
            "respawn user 'no-such-user-hbd' does not exist on this host; create it",
        ),
        (
            base + 2,
            "respawn program /no/such/program cannot be used (No such file or directory",
        ),
        (
            base + 3,
            &format!("respawn program {plain} is not an executable file; `chmod +x {plain}`"),
        ),
        (
            base + 5,
            "respawn program 'relative/prog' is not an absolute path",
        ),
    ] {
        let want = format!("ha.cf:{line}: {want}");
        assert!(m.iter().any(|m| m.starts_with(&want)), "{want}\n{m:#?}");
    }
    assert_eq!(e.errors().count(), 4, "{m:#?}");
}

#[test]
fn seed004_lab_loads() {
    let (l, _dir) = load("seed004-lab", "backup");
    assert_eq!(
        l.config.ping_groups[0].addresses[0].to_string(),
        "192.0.2.1"
    );
    assert_eq!(
        l.config.groups[0].resources[1].spec,
        "IPaddr::192.0.2.10/24/eth0"
    );
    round_trip(&l.config, "backup");
}

#[test]
fn lab_configs_load() {
    let dirs = [
        "bcast_crc_netstring",
        "inject",
        "mcast_sha1_ping",
        "serial_md5",
        "ucast_legacy",
        "ucast_md5",
    ];
    for name in dirs {
        let (l, _dir) = load(&format!("lab/{name}"), "node1");
        let c = &l.config;
        assert_eq!(c.nodes, ["node1", "node2"], "{name}");
        assert_eq!(c.timing.deadtime, Duration::from_secs(8), "{name}");
        assert_eq!(c.timing.initdead, Duration::from_secs(16), "{name}");
        assert_eq!(c.timing.warntime, Duration::from_secs(4), "{name}");
        assert_eq!(c.media.len(), 1, "{name}");
        assert_eq!(c.groups[0].name(), "wiredummy", "{name}");
        assert_eq!(c.logging.facility, None, "{name}");
        // `realtime off` is the only ignored directive in the lab files (crc adds one).
        let w = messages(&l.warnings);
        assert!(
            w.iter().any(|w| w.contains("'realtime off' is ignored")),
            "{name}: {w:#?}"
        );
        round_trip(c, "node1");
        // The same files serve node2.
        let dir = copy(&format!("lab/{name}"), 0o600);
        assert!(load_ha_dir(dir.path(), "node2").is_ok(), "{name} as node2");
    }
    let (l, _d) = load("lab/ucast_legacy", "node1");
    assert_eq!(l.config.auto_failback, AutoFailback::Legacy);
    let (l, _d) = load("lab/bcast_crc_netstring", "node1");
    assert_eq!(l.config.msgfmt, MsgFormat::Netstring);
    assert_eq!(l.config.auth.active, 3);
    let (l, _d) = load("lab/mcast_sha1_ping", "node1");
    assert_eq!(l.config.ping_nodes.len(), 1);
    assert_eq!(l.config.auth.active_key().secret, b"wirelab-sha1-key");
}

#[test]
fn unknown_local_node_is_refused() {
    let dir = copy("seed004", 0o600);
    let e = load_ha_dir(dir.path(), "web1").expect_err("not a member");
    let m = messages(&e.diagnostics);
    assert!(
        m.iter().any(|m| m.starts_with(
            "ha.cf: this node 'web1' is not listed as a node (listed: loadbalancer, backup)"
        )),
        "{m:#?}"
    );
}

#[test]
fn authkeys_mode_is_enforced() {
    let dir = copy("seed004", 0o644);
    let e = load_ha_dir(dir.path(), "backup").expect_err("mode 644");
    let m = messages(&e.diagnostics);
    assert_eq!(e.errors().count(), 1, "{m:#?}");
    assert!(
        m.iter()
            .any(|m| m.contains("mode 644") && m.contains("chmod 600")),
        "{m:#?}"
    );
}

#[test]
fn haresources_is_optional_and_others_are_not() {
    let dir = copy("lab/ucast_md5", 0o600);
    fs::remove_file(dir.path().join("haresources")).expect("rm");
    let l = load_ha_dir(dir.path(), "node1").expect("no haresources is fine");
    assert!(l.config.groups.is_empty());
    fs::remove_file(dir.path().join("authkeys")).expect("rm");
    fs::remove_file(dir.path().join("ha.cf")).expect("rm");
    let e = load_ha_dir(dir.path(), "node1").expect_err("missing files");
    let m = messages(&e.diagnostics);
    assert_eq!(m.len(), 2, "{m:#?}");
    assert!(
        m[0].starts_with("authkeys: cannot read the authkeys file"),
        "{m:#?}"
    );
    assert!(
        m[1].starts_with("ha.cf: cannot read the ha.cf file"),
        "{m:#?}"
    );
}

#[test]
fn broken_reports_everything_at_once() {
    let dir = copy("broken", 0o644);
    let e = load_ha_dir(dir.path(), "node2").expect_err("broken");
    let m = messages(&e.diagnostics);
    let all = m.join("\n");
    for want in [
        "authkeys: the file holds secrets but has mode 644",
        "authkeys:3: key 1: md5 needs a secret",
        "ha.cf: this node 'node2' is not listed as a node",
        "ha.cf:4: deadtime (500ms) must be more than twice keepalive (300ms); raise deadtime to at least 601ms or lower keepalive",
        "ha.cf:5: initdead (100ms) must be at least deadtime (500ms)",
        "ha.cf:8: mcast group 10.0.0.1 is not a multicast address",
        "ha.cf:9: baud 1200 is not a serial speed heartbeat supports",
        "ha.cf:12: 'crm respawn' asks for Pacemaker",
        "ha.cf:13: STONITH configuration file /etc/ha.d/conf/stonith.baytech does not exist",
        "ha.cf:14: unknown directive 'keepaliv'; did you mean 'keepalive'?",
        "ha.cf:15: auto_failback 'maybe' is unknown",
        "haresources:3: preferred node 'node3' is not a cluster node",
        "haresources:4: group key 'lvs' (the first resource) is already used by the group on line 2",
    ] {
        assert!(all.contains(want), "missing {want} in\n{all}");
    }
    assert!(
        !all.contains("deadping"),
        "deadping defaults to deadtime: no second error\n{all}"
    );
    // Printed form: file:line: message, warnings marked.
    let text = e.to_string();
    assert!(
        text.contains("/ha.cf: warning: auto_failback is not set"),
        "{text}"
    );
    assert!(
        text.contains("/ha.cf:13: STONITH configuration file"),
        "{text}"
    );
    assert!(text.contains("/ha.cf:4: deadtime (500ms)"), "{text}");
}

#[test]
fn yaml_with_authkeys_file_and_modes() {
    let tmp = copy("lab/ucast_md5", 0o600);
    let yaml = tmp.path().join("hbd.yaml");
    fs::write(
        &yaml,
        "nodes: [node1, node2]\ntiming: { keepalive: 10ms, deadtime: 30ms, initdead: 30ms }\n\
         media:\n  - ucast: { interface: eth0, peer: 192.0.2.12 }\nauth: { authkeys: authkeys }\nauto_failback: on\n",
    )
    .expect("write");
    fs::set_permissions(&yaml, fs::Permissions::from_mode(0o644)).expect("chmod");
    let l = load_yaml(&yaml, "node1").expect("world-readable YAML is fine without inline keys");
    assert_eq!(l.config.timing.keepalive, Duration::from_millis(10));
    assert_eq!(l.config.timing.warntime, Duration::from_millis(15));
    assert_eq!(l.config.auth.active_key().secret, b"wirelab-secret");
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);

    fs::set_permissions(
        tmp.path().join("authkeys"),
        fs::Permissions::from_mode(0o640),
    )
    .expect("chmod");
    let e = load_yaml(&yaml, "node1").expect_err("authkeys mode");
    assert!(e.to_string().contains("chmod 600"), "{e}");

    fs::write(
        &yaml,
        "nodes: [node1]\nmedia: [ { bcast: { interface: eth0 } } ]\nauth: { keys: [ { id: 1, method: sha256, key: s } ] }\nauto_failback: off\n",
    )
    .expect("write");
    let e = load_yaml(&yaml, "node1").expect_err("inline keys in a 644 file");
    assert!(e.to_string().contains("mode 644"), "{e}");
    fs::set_permissions(&yaml, fs::Permissions::from_mode(0o600)).expect("chmod");
    let l = load_yaml(&yaml, "node1").expect("600 is fine");
    assert_eq!(l.config.auth.active, 1);
    assert_eq!(l.config.timing, Timing::default());

    fs::write(&yaml, "nodes: [node1]\nauth: { authkeys: nowhere }\n").expect("write");
    let e = load_yaml(&yaml, "node1").expect_err("missing file");
    let m = messages(&e.diagnostics);
    assert!(
        m.iter()
            .any(|m| m.starts_with("hbd.yaml:3: auth.authkeys names")
                || m.starts_with("hbd.yaml:2: auth.authkeys names")),
        "{m:#?}"
    );
    assert!(
        m.iter()
            .any(|m| m.starts_with("hbd.yaml: no heartbeat media defined")),
        "{m:#?}"
    );
}

#[test]
fn yaml_syntax_error_names_the_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let yaml = tmp.path().join("hbd.yaml");
    fs::write(&yaml, "nodes: [a\nmedia: {\n").expect("write");
    let e = load_yaml(&yaml, "a").expect_err("syntax");
    assert_eq!(e.diagnostics.len(), 1);
    assert!(e.diagnostics[0].line.is_some(), "{e}");
    assert!(load_yaml(&tmp.path().join("missing.yaml"), "a").is_err());
}

#[test]
fn documented_yaml_example_loads() {
    let tmp = copy("yaml", 0o600);
    let path = tmp.path().join("lvs-pair.yaml");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    for node in ["loadbalancer", "backup"] {
        let l = load_yaml(&path, node).unwrap_or_else(|e| panic!("{e}"));
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let c = &l.config;
        assert_eq!(c.timing.keepalive, Duration::from_millis(10));
        assert_eq!(c.timing.initdead, Duration::from_secs(1));
        assert_eq!(c.media.len(), 3);
        assert_eq!(c.auth.active_key().method, AuthMethod::Sha256);
        assert_eq!(c.groups[0].resources.len(), 4);
        assert_eq!(
            c.vip_announce,
            VipAnnounce {
                count: 3,
                interval: Duration::from_millis(100)
            }
        );
        round_trip(c, node);
    }
}

#[test]
fn garbage_never_panics() {
    // Deterministic pseudo-random lines built from ha.cf-ish words and odd bytes.
    let words = [
        "node",
        "ucast",
        "mcast",
        "mcast6",
        "bcast",
        "serial",
        "baud",
        "udpport",
        "auth",
        "1",
        "md5",
        "crc",
        "::",
        "1.2.3.4",
        "ff12::1",
        "\\",
        "#",
        "=",
        "uid=",
        "gid=,",
        "é",
        "\u{FFFD}",
        "-1",
        "99999999999999999999",
        "ping_group",
        "respawn",
        "apiauth",
        "keepalive",
        "1.5ms",
        ".",
        "..",
        "a::b::",
        "deadtime",
        "crm",
        "",
        "\t",
    ];
    let mut seed: u64 = 0x5eed;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        usize::try_from(seed >> 33).unwrap_or(0)
    };
    for _ in 0..300 {
        let mut text = String::new();
        for _ in 0..(next() % 8) {
            for _ in 0..(next() % 7) {
                text.push_str(words[next() % words.len()]);
                text.push(if next() % 5 == 0 { '\n' } else { ' ' });
            }
            text.push('\n');
        }
        let p = Path::new("x");
        let _ = hacf::parse(&text, p);
        let _ = authkeys::parse(&text, p);
        let _ = haresources::parse(&text, p);
        let _ = yaml::parse_raw(&text, p);
        let _ = parse_duration(&text);
    }
}

#[test]
fn empty_yaml_is_reported_not_accepted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (name, text) in [("empty.yaml", ""), ("comments.yaml", "# nothing\n")] {
        let path = tmp.path().join(name);
        fs::write(&path, text).expect("write");
        let e = load_yaml(&path, "a").expect_err("empty");
        assert!(e.errors().count() >= 1, "{e}");
    }
}

#[test]
fn local_node_name_is_lowercased_like_node_names() {
    assert_eq!(
        local_node_name(Some("LoadBalancer")).expect("given"),
        "loadbalancer"
    );
    // ASCII only, as `node` names are lower-cased: a non-ASCII letter is kept as written.
    assert_eq!(local_node_name(Some("ÄB")).expect("given"), "Äb");
    let host = nix::unistd::gethostname().expect("hostname");
    assert_eq!(
        local_node_name(None).expect("host name"),
        host.to_string_lossy().to_ascii_lowercase()
    );
}

#[test]
fn yaml_serial_lines_follow_the_same_rules_as_ha_cf() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("hbd.yaml");
    let write = |timing: &str, baud: u32| {
        let text = format!(
            "nodes: [a, b]\ntiming: {timing}\nmedia:\n  - bcast: {{ interface: eth0 }}\n  \
             - serial: {{ device: /dev/ttyS1, baud: {baud} }}\n\
             auth: {{ active: 1, keys: [ {{ id: 1, method: sha256, key: k }} ] }}\nauto_failback: on\n"
        );
        fs::write(&path, text).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    };
    // Too short for the line: an error at the serial entry's line.
    write("{ keepalive: 10ms, deadtime: 100ms, initdead: 12s }", 19200);
    let e = load_yaml(&path, "a").expect_err("deadtime too short for the line");
    let m = messages(&e.diagnostics);
    assert!(
        m.iter().any(|m| m.starts_with(
            "hbd.yaml:5: deadtime (100ms) is too short for the serial line /dev/ttyS1 at 19200 baud"
        )),
        "{m:#?}"
    );
    // Long enough, keepalive faster than the line: loads, with the warning.
    write("{ keepalive: 10ms, deadtime: 500ms, initdead: 12s }", 19200);
    let l = load_yaml(&path, "a").expect("loads");
    let m = messages(&l.warnings);
    assert!(
        m.iter()
            .any(|m| m
                .starts_with("hbd.yaml:5: keepalive (10ms) is shorter than the 128ms a heartbeat")),
        "{m:#?}"
    );
    assert_eq!(
        l.config.media[1],
        MediumSpec::Serial {
            device: "/dev/ttyS1".into(),
            baud: 19200
        }
    );
    // At 115200 the same timers need no word.
    write(
        "{ keepalive: 30ms, deadtime: 100ms, initdead: 12s }",
        115200,
    );
    let l = load_yaml(&path, "a").expect("loads");
    assert!(
        !messages(&l.warnings).iter().any(|m| m.contains("serial")),
        "{:#?}",
        l.warnings
    );
}

#[test]
fn seed004_serial_line_refuses_timers_it_cannot_carry() {
    // The seed's own timers (keepalive 2 s, deadtime 30 s) fit 19200 baud without a word.
    let (l, _dir) = load("seed004", "loadbalancer");
    assert!(
        !messages(&l.warnings).iter().any(|m| m.contains("serial")),
        "{:#?}",
        l.warnings
    );
    // Fast UDP timers with the seed's serial line: refused, at the serial line.
    let dir = copy("seed004", 0o600);
    let path = dir.path().join("ha.cf");
    let text = fs::read_to_string(&path).expect("ha.cf");
    let fast = text
        .replace("keepalive 2", "keepalive 10ms")
        .replace("deadtime 30", "deadtime 200ms")
        .replace("warntime 10", "warntime 100ms");
    fs::write(&path, fast).expect("write");
    let e = load_ha_dir(dir.path(), "loadbalancer").expect_err("too fast for the line");
    let serial_line = text
        .lines()
        .position(|l| l.starts_with("serial "))
        .expect("serial line")
        + 1;
    let m = messages(&e.diagnostics);
    let want = format!(
        "ha.cf:{serial_line}: deadtime (200ms) is too short for the serial line /dev/ttyS0 at 19200 baud"
    );
    assert!(m.iter().any(|m| m.starts_with(&want)), "{want}\n{m:#?}");
}

/// Every fixture configuration converts (`hactl convert`) and loads back equal: the YAML
/// writer is serde serialisation of a file form, so this is what keeps the form and the
/// reader in step.
#[test]
fn every_fixture_converts_and_loads_back() {
    let mut dirs = vec!["seed004".to_string(), "seed004-lab".to_string()];
    for entry in fs::read_dir(fixture("lab")).expect("lab fixtures") {
        let name = entry.expect("entry").file_name();
        dirs.push(format!("lab/{}", name.to_string_lossy()));
    }
    for name in &dirs {
        let node = if name.starts_with("lab/") {
            "node1"
        } else {
            "backup"
        };
        let (l, _dir) = load(name, node);
        round_trip(&l.config, node);
    }
}

/// The converted file reads like the documented one: header, then the keys in the order
/// docs/configuration.md gives them, short lists and media on one line each.
#[test]
fn converted_yaml_reads_well() {
    let (l, _dir) = load("seed004-lab", "backup");
    let text = to_yaml(&l.config).expect("serialises");
    assert!(text.starts_with("# hbd configuration"), "{text}");
    let order = [
        "cluster:", "nodes:", "timing:", "media:", "auth:", "groups:", "logging:",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|k| {
            text.find(&format!("\n{k}"))
                .unwrap_or_else(|| panic!("{k} missing:\n{text}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "key order:\n{text}");
    assert!(text.contains("nodes: [loadbalancer, backup]"), "{text}");
    assert!(text.contains("  keepalive: "), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("- ucast: {")
                || l.trim_start().starts_with("- bcast: {")
                || l.trim_start().starts_with("- mcast: {")),
        "{text}"
    );
}

#[test]
fn metrics_address_round_trips() {
    let tmp = copy("yaml", 0o600);
    let path = tmp.path().join("lvs-pair.yaml");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut c = load_yaml(&path, "backup")
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    assert_eq!(c.metrics, None);
    for addr in ["127.0.0.1:9694", "[::1]:9694"] {
        c.metrics = Some(addr.parse().unwrap());
        round_trip(&c, "backup");
    }
}

// ---------------------------------------------------------------------------------------------
// The front doors from text (fuzz targets): the same result as from files, and no file read.

#[test]
fn ha_texts_load_like_the_directory() {
    for (name, node) in [
        ("lab/ucast_md5", "node1"),
        ("lab/mcast_sha1_ping", "node1"),
        ("seed004-lab", "loadbalancer"),
    ] {
        let (from_dir, dir) = load(name, node);
        let read = |f: &str| fs::read_to_string(dir.path().join(f)).expect("fixture file");
        let haresources = read("haresources");
        let texts = HaTexts {
            hacf: &read("ha.cf"),
            authkeys: &read("authkeys"),
            haresources: Some(&haresources),
        };
        let from_text = load_ha_text(texts, dir.path(), node)
            .unwrap_or_else(|e| panic!("{name} refused from text:\n{e}"));
        assert_eq!(from_text.config, from_dir.config, "{name}");
    }
}

#[test]
fn yaml_text_loads_like_the_file_and_reads_no_other_file() {
    let text = fs::read_to_string(fixture("yaml/lvs-pair.yaml")).expect("fixture");
    // It holds keys inline: the file loader wants it private.
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("hbd.yaml");
    fs::write(&file, &text).expect("write");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod");
    let node = load_yaml(&file, "loadbalancer")
        .expect("fixture loads")
        .config;
    let from_text = load_yaml_str(&text, &file, "loadbalancer").expect("loads from text");
    assert_eq!(from_text.config, node);
    let with_file = "auth:\n  authkeys: /etc/shadow\n";
    let err = load_yaml_str(with_file, &file, "loadbalancer").expect_err("refused");
    assert!(
        err.to_string().contains("not read when loading from text"),
        "{err}"
    );
}

#[test]
fn keepalived_text_loads_like_the_file_and_follows_no_include() {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keepalived/001/node1.conf");
    let text = fs::read_to_string(&file).expect("fixture");
    let from_file = keepalived::load_keepalived(&file).expect("fixture loads").0;
    let from_text = keepalived::load_keepalived_str(&text, &file)
        .expect("loads from text")
        .0;
    assert_eq!(from_text, from_file);
    let err = keepalived::load_keepalived_str("include /etc/passwd\n", &file).expect_err("refused");
    assert!(err.to_string().contains("include is not followed"), "{err}");
}

/// Found by the `yaml` fuzz target: a group whose only resource is refused (or an empty
/// list) reached the serial-line frame sizing with no resources and panicked on its name.
#[test]
fn a_yaml_group_left_without_resources_is_an_error_not_a_panic() {
    let file = Path::new("/etc/hbd/hbd.yaml");
    for resources in ["[]", "[\"two words\"]"] {
        let text = format!(
            "cluster: c\nnodes: [a, b]\n\
             media:\n  - ucast: {{ interface: eth0, peer: 192.0.2.11 }}\n\
             auth: {{ active: 1, keys: [ {{ id: 1, method: sha256, key: k }} ] }}\n\
             groups:\n  - {{ preferred: a, resources: {resources} }}\n"
        );
        let err = load_yaml_str(&text, file, "a").expect_err("refused");
        assert!(
            err.to_string().contains("has no resources"),
            "{resources}: {err}"
        );
    }
}
