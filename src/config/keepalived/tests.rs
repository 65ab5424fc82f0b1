//! keepalived.conf tests over the seeds' files (tests/fixtures/keepalived/, adapted as its
//! README says) and over broken inputs written to a temporary directory.

use super::*;
use crate::config::Severity;
use std::net::{Ipv4Addr, SocketAddr};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keepalived")
        .join(rel)
}

fn load(rel: &str) -> (KeepalivedConfig, Vec<Diagnostic>) {
    load_keepalived(&fixture(rel)).unwrap_or_else(|e| panic!("{rel} refused:\n{e}"))
}

fn warned(w: &[Diagnostic], file_end: &str, line: usize, text: &str) -> bool {
    w.iter().any(|d| {
        d.severity == Severity::Warning
            && d.file.ends_with(file_end)
            && d.line == Some(line)
            && d.message.contains(text)
    })
}

fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn seed_001_node1_loads_with_its_script() {
    let (c, w) = load("001/node1.conf");
    assert!(c.director.is_none());
    let v = &c.vrrp;
    assert_eq!(v.router_id.as_deref(), Some("LVS01"));
    assert_eq!(v.scripts.len(), 1);
    let s = &v.scripts[0];
    assert_eq!(
        (
            s.name.as_str(),
            s.command.as_str(),
            s.weight,
            s.fall,
            s.rise
        ),
        ("check_down", "/etc/keepalived/ng.sh", -30, 3, 2)
    );
    assert_eq!(
        (s.interval, s.timeout),
        (Duration::from_secs(1), Duration::from_secs(2))
    );
    let i = &v.instances[0];
    assert_eq!((i.name.as_str(), i.interface.as_str()), ("VI_1", "eth0"));
    assert_eq!((i.vrid, i.priority, i.version), (51, 100, Version::V2));
    assert_eq!(i.initial, InitialState::Master);
    assert_eq!(i.auth, Auth::pass("1111"));
    assert_eq!(i.vips[0].addr, v4("192.0.2.188"));
    assert_eq!(i.vips[0].prefix, 32);
    assert_eq!(i.mcast_group, v4("224.0.0.18"));
    assert_eq!(
        i.track_scripts,
        vec![TrackSpec {
            name: "check_down".into(),
            weight: -30
        }]
    );
    // Unsupported global keywords are named with their line.
    for (line, word) in [
        (3, "notification_email"),
        (8, "notification_email_from"),
        (9, "smtp_server"),
        (10, "smtp_connect_timeout"),
        (14, "vrrp_garp_interval"),
        (15, "vrrp_gna_interval"),
    ] {
        assert!(
            warned(&w, "node1.conf", line, word),
            "no warning for {word}: {w:?}"
        );
    }
    assert_eq!(w.len(), 6, "{w:#?}");
}

#[test]
fn seed_001_node2_tracks_an_undefined_script_with_a_warning() {
    let (c, w) = load("001/node2.conf");
    let i = &c.vrrp.instances[0];
    assert_eq!(i.priority, 80);
    assert!(i.track_scripts.is_empty());
    assert!(warned(
        &w,
        "node2.conf",
        31,
        "vrrp_script check_down is not defined"
    ));
}

#[test]
fn seed_002_master_and_backup_load() {
    let (m, _) = load("002/master.conf");
    let (b, w) = load("002/backup.conf");
    let (mi, bi) = (&m.vrrp.instances[0], &b.vrrp.instances[0]);
    assert_eq!((mi.priority, bi.priority), (100, 90));
    assert_eq!(
        (mi.initial, bi.initial),
        (InitialState::Master, InitialState::Backup)
    );
    assert_eq!(mi.auth, Auth::pass("aminglinux>com"), "cut at 8 bytes");
    assert_eq!(mi.auth, Auth::Pass(*b"aminglin"));
    assert_eq!(b.vrrp.scripts[0].interval, Duration::from_secs(3));
    assert_eq!(bi.track_scripts[0].weight, 0, "no weight: FAULT on failure");
    assert!(warned(&w, "backup.conf", 22, "longer than 8"));
}

#[test]
fn seed_003_include_unicast_and_embedded_lvs() {
    let (c, w) = load("003/ka01/keepalived.conf");
    let i = &c.vrrp.instances[0];
    assert_eq!(c.vrrp.router_id.as_deref(), Some("192.0.2.136"));
    assert_eq!(i.mcast_group, v4("230.0.0.0"));
    assert_eq!((i.interface.as_str(), i.priority), ("eth1", 100));
    assert_eq!(i.advert_int, Duration::from_secs(3));
    assert!(i.preempt);
    assert_eq!(i.preempt_delay, Duration::from_secs(10));
    assert_eq!(i.src_ip, Some(v4("198.51.100.1")));
    assert_eq!(i.unicast_peers, vec![v4("198.51.100.2")]);
    assert!(i.expect().unicast);
    let vip = &i.vips[0];
    assert_eq!((vip.addr, vip.prefix), (v4("192.0.2.100"), 24));
    assert_eq!(
        (vip.dev.as_deref(), vip.label.as_deref()),
        (Some("eth0"), Some("eth0:1"))
    );
    assert_eq!(
        i.notify.master.as_deref(),
        Some("/apps/keepalived/bin/notify.sh master")
    );
    assert!(i.notify.fault.is_some() && i.notify.backup.is_some());
    // The included file's lines are named in its warnings.
    assert!(warned(
        &w,
        "conf.d/www.ming.org.conf",
        26,
        "accept has no effect"
    ));

    let d = c.director.expect("virtual_server");
    assert_eq!(d.virtuals.len(), 1);
    let vs = &d.virtuals[0];
    assert_eq!(
        vs.key,
        ServiceKey::Tcp(SocketAddr::new(v4("192.0.2.100"), 80))
    );
    assert_eq!(vs.scheduler, Scheduler::Wrr);
    assert_eq!(vs.persistence, None);
    assert_eq!(vs.reals.len(), 2);
    assert_eq!(
        (vs.reals[0].addr, vs.reals[0].weight, vs.reals[0].forwarding),
        (SocketAddr::new(v4("192.0.2.138"), 80), 2, Forwarding::Gate)
    );
    assert_eq!(vs.reals[1].weight, 1);
    let fb = vs.fallback.as_ref().expect("sorry_server");
    assert_eq!(
        fb.addr,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 80)
    );
    let ck = &vs.check;
    assert_eq!(
        (&ck.kind, &ck.service),
        (&CheckType::Negotiate, &Service::Http)
    );
    assert_eq!(ck.request.as_deref(), Some("/index.html"));
    assert_eq!(ck.status_code, Some(200));
    assert_eq!(ck.negotiate_timeout, Duration::from_secs(1));
    assert_eq!(ck.fall, 3);
    assert_eq!(ck.interval, Duration::from_secs(6));
    assert!(
        !vs.quiescent,
        "keepalived removes failed reals unless inhibit_on_failure"
    );
    assert!(warned(
        &w,
        "conf.d/www.ming.org.conf",
        47,
        "delay_before_retry"
    ));
}

#[test]
fn seed_003_ka02_keeps_the_typo_as_a_warning() {
    let (c, w) = load("003/ka02/keepalived.conf");
    let i = &c.vrrp.instances[0];
    assert_eq!(i.priority, 90);
    assert_eq!(i.src_ip, None, "`unicast src_ip` is not unicast_src_ip");
    assert_eq!(i.unicast_peers, vec![v4("198.51.100.1")]);
    assert!(warned(
        &w,
        "conf.d/www.ming.org.conf",
        15,
        "keyword unicast is not supported"
    ));
}

#[test]
fn seed_003_tcp_check_and_fwmark_services() {
    let (c, _) = load("003/ka01-tcp/keepalived.conf");
    let ck = &c.director.unwrap().virtuals[0].check;
    assert_eq!(ck.kind, CheckType::Connect);
    assert_eq!(
        (ck.check_port, ck.check_timeout),
        (Some(80), Duration::from_secs(5))
    );

    let (c, _) = load("003/ka01-fwmark/keepalived.conf");
    let d = c.director.unwrap();
    let keys: Vec<_> = d.virtuals.iter().map(|v| v.key).collect();
    assert_eq!(
        keys,
        vec![
            ServiceKey::Fwmark(6, Family::V4),
            ServiceKey::Fwmark(7, Family::V4)
        ]
    );
    assert_eq!(d.virtuals[0].protocol, Protocol::Fwm);
    assert_eq!(d.virtuals[1].scheduler, Scheduler::Rr);
    assert_eq!(
        d.virtuals[1].check.request.as_deref(),
        Some("/index222.html")
    );
}

#[test]
fn seed_003_sync_group() {
    let (c, _) = load("003/sync/keepalived.conf");
    let v = &c.vrrp;
    assert_eq!(v.sync_groups.len(), 1);
    assert_eq!(v.sync_groups[0].members, vec!["VI_1", "VI_2"]);
    assert_eq!(v.group_indices(), vec![vec![0, 1]]);
    assert!(v.sync_groups[0].notify.master.is_some());
    assert_eq!(v.instances[1].vips[0].addr, v4("198.51.100.254"));
}

#[test]
fn capture_lab_configs_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vrrp");
    let (c, _) = load_keepalived(&dir.join("v2/ka1.keepalived.conf")).unwrap();
    assert_eq!(c.vrrp.instances[0].auth, Auth::pass("wire1234"));
    assert!(c.vrrp.script_security);
    let (c, w) = load_keepalived(&dir.join("v3/ka1.keepalived.conf")).unwrap();
    let i = &c.vrrp.instances[0];
    assert_eq!((i.version, i.vips.len()), (Version::V3, 2));
    assert!(w.iter().any(|d| d.message.contains("use_vmac")));
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}

fn errors_of(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "keepalived.conf", text);
    match load_keepalived(&p) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .errors()
            .map(|d| format!("{}:{}", d.line.unwrap_or(0), d.message))
            .collect(),
    }
}

const OK_INSTANCE: &str = "vrrp_instance V {\n interface eth0\n virtual_router_id 9\n virtual_ipaddress {\n 192.0.2.9\n }\n";

#[test]
fn broken_inputs_are_refused_at_their_line() {
    let e = errors_of(&format!("{OK_INSTANCE} unicast_peer {{\n }}\n}}\n"));
    assert!(
        e.iter()
            .any(|m| m.starts_with("7:") && m.contains("unicast_peer is empty")),
        "{e:?}"
    );
    let e = errors_of(&format!("{OK_INSTANCE} unicast_src_ip 192.0.2.1\n}}\n"));
    assert!(
        e.iter()
            .any(|m| m.starts_with("7:") && m.contains("without unicast_peer")),
        "{e:?}"
    );
    let e = errors_of(&format!("{OK_INSTANCE} advert_int 0.5\n}}\n"));
    assert!(
        e.iter()
            .any(|m| m.starts_with("7:") && m.contains("whole seconds")),
        "{e:?}"
    );
    assert!(errors_of(&format!("{OK_INSTANCE} advert_int 0.05\n version 3\n}}\n")).is_empty());
    let e = errors_of("vrrp_instance V {\n interface eth0\n virtual_router_id 300\n}\n");
    assert!(
        e.iter()
            .any(|m| m.starts_with("3:") && m.contains("1 to 255")),
        "{e:?}"
    );
    let e = errors_of("vrrp_instance V {\n virtual_router_id 3\n}\n");
    assert!(
        e.iter()
            .any(|m| m.starts_with("1:") && m.contains("no interface")),
        "{e:?}"
    );
    let e = errors_of(&format!(
        "{OK_INSTANCE} authentication {{\n auth_type AH\n auth_pass x\n }}\n}}\n"
    ));
    assert!(
        e.iter()
            .any(|m| m.starts_with("8:") && m.contains("AH is not supported")),
        "{e:?}"
    );
    let e = errors_of(&format!("{OK_INSTANCE}\n"));
    assert!(e.iter().any(|m| m.contains("not closed")), "{e:?}");
    let e = errors_of("}\n");
    assert!(
        e.iter()
            .any(|m| m.starts_with("1:") && m.contains("without a matching")),
        "{e:?}"
    );
    let e = errors_of(&format!(
        "{OK_INSTANCE}}}\nvrrp_sync_group G {{\n group {{\n V\n W\n }}\n}}\n"
    ));
    assert!(
        e.iter()
            .any(|m| m.starts_with("8:") && m.contains("W, which is not defined")),
        "{e:?}"
    );
    let e = errors_of(&format!(
        "{OK_INSTANCE}}}\n{}}}\n",
        OK_INSTANCE.replace("V {", "W {")
    ));
    assert!(
        e.iter()
            .any(|m| m.starts_with("8:") && m.contains("virtual_router_id 9")),
        "{e:?}"
    );
    let e = errors_of("virtual_server 192.0.2.1 80 {\n lb_algo xyz\n lb_kind FOO\n}\n");
    assert!(
        e.iter()
            .any(|m| m.starts_with("2:") && m.contains("unknown scheduler")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("3:") && m.contains("NAT, DR or TUN")),
        "{e:?}"
    );
}

#[test]
fn includes_follow_globs_relative_to_the_including_file() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "etc/keepalived.conf",
        "include sub/*.conf\ninclude none/*.conf\n",
    );
    write(
        dir.path(),
        "etc/sub/b.conf",
        &format!("{OK_INSTANCE}}}\n")
            .replace("V {", "B {")
            .replace("id 9", "id 2"),
    );
    write(
        dir.path(),
        "etc/sub/a.conf",
        &format!("{OK_INSTANCE} bogus_word 1\n}}\n"),
    );
    write(dir.path(), "etc/sub/skip.txt", "garbage {\n");
    let (c, w) = load_keepalived(&main).unwrap();
    let names: Vec<_> = c.vrrp.instances.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, vec!["V", "B"], "sorted glob order");
    assert!(warned(&w, "sub/a.conf", 7, "bogus_word"));
    assert!(warned(&w, "keepalived.conf", 2, "matches no file"));
}

#[test]
fn split_line_follows_keepalived() {
    assert_eq!(split_line("unicast_peer{"), vec!["unicast_peer", "{"]);
    assert_eq!(
        split_line("  script \"/bin/x a b\" # comment"),
        vec!["script", "/bin/x a b"]
    );
    assert_eq!(split_line("! comment"), Vec::<String>::new());
    assert_eq!(split_line("group {  # x"), vec!["group", "{"]);
    assert_eq!(split_line("a}"), vec!["a", "}"]);
    assert!(wildcard(b"*.conf", b"x.conf") && !wildcard(b"*.conf", b"x.txt"));
}

#[test]
fn instances_map_onto_resource_groups_with_the_director_where_its_addresses_are() {
    let (c, _) = load("003/sync/keepalived.conf");
    let groups = c.resource_groups("n1");
    assert_eq!(groups.len(), 1, "one sync group, one resource group");
    let kinds: Vec<&str> = groups[0]
        .resources
        .iter()
        .map(|r| r.kind.as_str())
        .collect();
    assert!(kinds.iter().all(|k| *k == "IPaddr2"), "{kinds:?}");
    assert!(
        groups[0]
            .resources
            .iter()
            .any(|r| r.args[0].starts_with("198.51.100.254/")),
        "{groups:?}"
    );
    let (c, _) = load("003/ka01/keepalived.conf");
    let groups = c.resource_groups("n1");
    let last = groups[0].resources.last().unwrap();
    assert_eq!(last.kind, "ldirectord", "{groups:?}");
    assert_eq!(groups[0].resources[0].args[0], "192.0.2.100/24/eth0:1");
}
