//! Root e2e tests of the network and resource layer, each in its own namespaces.
//!
//! VIPs are added with the library (rtnetlink) inside a namespace and checked with `ip` as
//! the oracle; announcements are captured on the wire in a peer namespace with an AF_PACKET
//! socket, and must update the peer's neighbour table. Script tests use temporary
//! directories only.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hbd::config::model::ResourceSpec;
use hbd::net::addr::{AddOutcome, DelOutcome, NetError, Netlink};
use hbd::net::arp;
use hbd::resources::group::{GroupPolicy, start_group, status_group, stop_group};
use hbd::resources::ipaddr::{AnnounceConfig, Vip, parse_vip};
use hbd::resources::script::{ScriptDirs, ScriptError};
use hbd::resources::{ResolveContext, Resource, ResourceError, ResourceStatus, resolve};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

use crate::netns::{NetNs, gone, poll_until, require_root, wait_until, write_exec};

/// Two namespaces joined by a veth pair: `dir` (director, 192.0.2.1) and `peer` (192.0.2.2),
/// both with `eth0`; IPv6 2001:db8::1 / ::2 (documentation prefix, RFC 3849) without DAD.
fn pair(prefix: &str) -> (NetNs, NetNs) {
    let (dir, peer) = crate::netns::pair(prefix, "192.0.2.1/24", "192.0.2.2/24");
    dir.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8::1/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    peer.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8::2/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    (dir, peer)
}

fn one_shot() -> AnnounceConfig {
    AnnounceConfig {
        count: 1,
        interval: Duration::from_millis(10),
        ipv6_router: false,
    }
}

/// Captures the first frame on any interface of `ns` for which `accept` holds, within 5 s;
/// signals `ready` once the socket is open. Returns the receive instant and the frame.
fn capture(
    ns: &NetNs,
    ready: mpsc::Sender<()>,
    accept: impl Fn(&[u8]) -> bool + Send,
) -> Option<(Instant, Vec<u8>)> {
    ns.run(|| async move {
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::EthAll,
        )
        .expect("AF_PACKET socket");
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 100_000)).unwrap();
        ready.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if let Ok(n) = recv(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                &mut buf,
                MsgFlags::empty(),
            ) && accept(&buf[..n])
            {
                return Some((Instant::now(), buf[..n].to_vec()));
            }
        }
        None
    })
}

fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

/// Polls the peer's neighbour entry for `ip` until it shows `mac` (bounded: 2 s); the last
/// entry seen.
fn wait_neigh(ns: &NetNs, ip: &str, mac: &str) -> String {
    let mut out = String::new();
    poll_until(Duration::from_secs(2), || {
        out = ns.ip(&["neigh", "show", ip]);
        out.contains(mac)
    });
    out
}

#[test]
fn vip_with_label_is_added_and_removed_idempotently() {
    require_root();
    let (dir, _peer) = pair("vipl");
    let spec = parse_vip("192.0.2.10/24/eth0:vip").unwrap();
    dir.run(|| async {
        let vip = Vip::new(spec, one_shot());
        assert_eq!(vip.start().await.unwrap(), AddOutcome::Added);
        let shown = dir.ip(&["-o", "-4", "addr", "show", "dev", "eth0"]);
        let line = shown
            .lines()
            .find(|l| l.contains("192.0.2.10/24"))
            .unwrap_or_else(|| panic!("VIP not on eth0: {shown}"));
        assert!(line.contains("eth0:vip"), "label missing: {line}");
        assert!(line.contains("brd 192.0.2.255"), "{line}");
        assert_eq!(vip.start().await.unwrap(), AddOutcome::AlreadyPresent);
        assert!(vip.is_present().await.unwrap());
        assert_eq!(vip.stop().await.unwrap(), DelOutcome::Removed);
        let shown = dir.ip(&["-o", "addr", "show", "dev", "eth0"]);
        assert!(!shown.contains("192.0.2.10"), "{shown}");
        assert!(
            shown.contains("192.0.2.1/24"),
            "stop removed too much: {shown}"
        );
        assert_eq!(vip.stop().await.unwrap(), DelOutcome::AlreadyAbsent);
        assert!(!vip.is_present().await.unwrap());
    });
}

#[test]
fn netlink_reads_addresses_routes_and_reports_typed_errors() {
    require_root();
    let (dir, _peer) = pair("rte");
    dir.ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.254"]);
    dir.run(|| async {
        let nl = Netlink::connect().unwrap();
        assert_eq!(
            nl.route_for("192.0.2.10".parse().unwrap()).await.unwrap(),
            Some(("eth0".to_string(), 24))
        );
        assert_eq!(
            nl.route_for("2001:db8::10".parse().unwrap()).await.unwrap(),
            Some(("eth0".to_string(), 64))
        );
        // Behind a gateway, or not routed at all: no connected route.
        assert_eq!(
            nl.route_for("198.51.100.5".parse().unwrap()).await.unwrap(),
            None
        );
        assert_eq!(
            nl.route_for("203.0.113.1".parse().unwrap()).await.unwrap(),
            None
        );
        let local = nl.local_addresses().await.unwrap();
        for want in ["192.0.2.1", "127.0.0.1", "2001:db8::1"] {
            assert!(local.contains(&want.parse().unwrap()), "{want}: {local:?}");
        }
        assert!(!local.contains(&"192.0.2.2".parse().unwrap()));
        let addrs = nl.addresses("eth0").await.unwrap();
        assert!(
            addrs
                .iter()
                .any(|a| a.ip == "192.0.2.1".parse::<IpAddr>().unwrap() && a.prefix_len == 24)
        );
        match nl.link_index("nosuch0").await {
            Err(NetError::NoSuchInterface { ifname }) => assert_eq!(ifname, "nosuch0"),
            other => panic!("{other:?}"),
        }
        let e = nl
            .add_address(
                "eth0",
                "192.0.2.9".parse().unwrap(),
                24,
                Some("bogus:x"),
                None,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, NetError::BadLabel { .. }), "{e}");

        // A bare address takes interface and prefix from the connected route.
        let vip = Vip::new(parse_vip("192.0.2.11").unwrap(), one_shot());
        vip.start().await.unwrap();
        assert!(
            nl.has_address("eth0", "192.0.2.11".parse().unwrap())
                .await
                .unwrap()
        );
        let shown = dir.ip(&["-o", "addr", "show", "dev", "eth0"]);
        assert!(shown.contains("192.0.2.11/24"), "{shown}");
        vip.stop().await.unwrap();
        let unroutable = Vip::new(parse_vip("203.0.113.7").unwrap(), one_shot());
        let e = unroutable.start().await.unwrap_err();
        assert!(e.to_string().contains("no connected route"), "{e}");

        // Cost of one add_address (add + delete cycles, averaged).
        let n = 200u32;
        let ip: IpAddr = "192.0.2.50".parse().unwrap();
        let mut add_total = Duration::ZERO;
        for _ in 0..n {
            let t = Instant::now();
            nl.add_address("eth0", ip, 24, None, None).await.unwrap();
            add_total += t.elapsed();
            nl.del_address("eth0", ip).await.unwrap();
        }
        let index = nl.link_index("eth0").await.unwrap();
        let mut at_total = Duration::ZERO;
        for _ in 0..n {
            let t = Instant::now();
            nl.add_address_at(index, "eth0", ip, 24, None, None)
                .await
                .unwrap();
            at_total += t.elapsed();
            nl.del_address("eth0", ip).await.unwrap();
        }
        eprintln!(
            "MEASURE add_address: {:?} per call incl. link lookup, add_address_at: {:?} \
             (means of {n})",
            add_total / n,
            at_total / n
        );
    });
}

#[test]
fn vip_start_sends_gratuitous_arp_that_updates_the_peer() {
    require_root();
    let (dir, peer) = pair("garp");
    let vip_ip = Ipv4Addr::new(192, 0, 2, 10);
    let dir_mac = dir.mac("eth0");
    peer.ip(&[
        "neigh",
        "add",
        "192.0.2.10",
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "eth0",
        "nud",
        "stale",
    ]);
    let spec = parse_vip("192.0.2.10/24/eth0").unwrap();
    let (tx, rx) = mpsc::channel();
    let (captured, started) = std::thread::scope(|s| {
        let cap = s.spawn(|| {
            capture(&peer, tx, |f| {
                f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[28..32] == vip_ip.octets()
            })
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("capture ready");
        let started = dir.run(|| async {
            // Warm start: the daemon keeps its netlink handle, so connect it beforehand
            // (the Vip connects lazily on first use).
            let vip = Vip::new(spec, AnnounceConfig::default());
            assert!(!vip.is_present().await.unwrap());
            let t0 = Instant::now();
            vip.start().await.unwrap();
            let returned = t0.elapsed();
            vip.stop().await.unwrap();
            (t0, returned)
        });
        (cap.join().unwrap(), started)
    });
    let (seen_at, frame) = captured.expect("no gratuitous ARP seen by the peer");
    let expected = arp::frame(parse_mac(&dir_mac), vip_ip);
    assert_eq!(&frame[..42], &expected[..], "frame on the wire differs");
    eprintln!(
        "MEASURE Vip::start -> first GARP on the wire: {:?} (start returned after {:?})",
        seen_at.duration_since(started.0),
        started.1
    );
    let neigh = wait_neigh(&peer, "192.0.2.10", &dir_mac);
    assert!(neigh.contains(&dir_mac), "peer cache not updated: {neigh}");
}

#[test]
fn ipv6_vip_sends_unsolicited_na_that_updates_the_peer() {
    require_root();
    let (dir, peer) = pair("na6");
    let dir_mac = dir.mac("eth0");
    peer.ip(&[
        "-6",
        "neigh",
        "add",
        "2001:db8::10",
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "eth0",
        "nud",
        "stale",
    ]);
    let target: std::net::Ipv6Addr = "2001:db8::10".parse().unwrap();
    let spec = parse_vip("2001:db8::10/64/eth0").unwrap();
    let (tx, rx) = mpsc::channel();
    let captured = std::thread::scope(|s| {
        let cap = s.spawn(|| {
            capture(&peer, tx, |f| {
                f.len() >= 14 + 40 + 32
                    && f[12..14] == [0x86, 0xdd]
                    && f[14 + 6] == 58
                    && f[54] == 136
                    && f[62..78] == target.octets()
            })
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("capture ready");
        dir.run(|| async {
            let vip = Vip::new(spec, one_shot());
            vip.start().await.unwrap();
            let shown = dir.ip(&["-o", "-6", "addr", "show", "dev", "eth0"]);
            let line = shown
                .lines()
                .find(|l| l.contains("2001:db8::10/64"))
                .unwrap_or_else(|| panic!("VIP not on eth0: {shown}"));
            assert!(!line.contains("tentative"), "VIP must skip DAD: {line}");
            vip.stop().await.unwrap();
        });
        cap.join().unwrap()
    });
    let (_, f) = captured.expect("no neighbour advertisement seen by the peer");
    assert_eq!(f[14 + 7], 255, "hop limit must be 255");
    assert_eq!(
        &f[38..54],
        &"ff02::1".parse::<std::net::Ipv6Addr>().unwrap().octets()
    );
    assert_eq!(f[58] & 0xe0, 0x20, "O set, R and S clear");
    assert_eq!(&f[78..80], &[2, 1]);
    assert_eq!(f[80..86], parse_mac(&dir_mac));
    let neigh = wait_neigh(&peer, "2001:db8::10", &dir_mac);
    assert!(neigh.contains(&dir_mac), "peer cache not updated: {neigh}");
}

fn ctx_for(root: &Path, timeout: Duration) -> ResolveContext {
    let rd = root.join("resource.d");
    let initd = root.join("init.d");
    std::fs::create_dir_all(&rd).unwrap();
    std::fs::create_dir_all(&initd).unwrap();
    ResolveContext {
        dirs: ScriptDirs {
            resource_dirs: vec![rd],
            lsb_dir: Some(initd),
            ocf_root: root.join("ocf"),
            ocf_conf_dir: root.join("conf"),
        },
        script_timeout: timeout,
        announce: one_shot(),
        ..ResolveContext::default()
    }
}

fn rspec(spec: &str) -> ResourceSpec {
    let mut parts = spec.split("::");
    let kind = parts.next().unwrap().to_string();
    ResourceSpec {
        spec: spec.to_string(),
        kind,
        args: parts.map(String::from).collect(),
    }
}

/// A heartbeat-class script keeping its state in a file given as its first argument.
const STATEFUL: &str = r#"#!/bin/sh
state="$1"
case "$2" in
  start) echo started > "$state" ;;
  stop) rm -f "$state" ;;
  status) if [ -e "$state" ]; then echo "svc is running"; else echo "svc is not running"; fi ;;
  *) echo "usage" >&2; exit 2 ;;
esac
"#;

#[tokio::test]
async fn heartbeat_script_start_status_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = ctx_for(tmp.path(), Duration::from_secs(10));
    write_exec(&tmp.path().join("resource.d/svc"), STATEFUL);
    let state = tmp.path().join("svc.state");
    let r = resolve(&rspec(&format!("svc::{}", state.display())), &ctx).unwrap();
    assert_eq!(r.status().await.unwrap(), ResourceStatus::Stopped);
    r.start().await.unwrap();
    assert!(state.exists());
    assert_eq!(r.status().await.unwrap(), ResourceStatus::Running);
    r.stop().await.unwrap();
    assert_eq!(r.status().await.unwrap(), ResourceStatus::Stopped);

    // Exit code is what start/stop report; stderr is quoted.
    write_exec(
        &tmp.path().join("resource.d/broken"),
        "#!/bin/sh\necho 'cannot frob the widget' >&2\nexit 4\n",
    );
    let b = resolve(&rspec("broken"), &ctx).unwrap();
    match b.start().await {
        Err(ResourceError::Script(ScriptError::Failed {
            code, stderr_tail, ..
        })) => {
            assert_eq!(code, Some(4));
            assert!(stderr_tail.contains("frob"), "{stderr_tail}");
        }
        other => panic!("{other:?}"),
    }
    // heartbeat class ignores the exit code of status.
    assert_eq!(b.status().await.unwrap(), ResourceStatus::Stopped);

    // LSB scripts from init.d use exit codes.
    write_exec(
        &tmp.path().join("init.d/lsbsvc"),
        "#!/bin/sh\n[ \"$1\" = status ] && { echo running; exit 3; }\nexit 0\n",
    );
    let l = resolve(&rspec("lsbsvc"), &ctx).unwrap();
    assert_eq!(l.status().await.unwrap(), ResourceStatus::Stopped);
}

#[tokio::test]
async fn script_timeout_kills_the_whole_process_group() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = ctx_for(tmp.path(), Duration::from_millis(300));
    let pidfile = tmp.path().join("bg.pid");
    write_exec(
        &tmp.path().join("resource.d/hang"),
        &format!(
            "#!/bin/sh\nsleep 30 &\necho $! > {}\necho starting\nsleep 30\n",
            pidfile.display()
        ),
    );
    let r = resolve(&rspec("hang"), &ctx).unwrap();
    let t = Instant::now();
    let e = r.start().await.unwrap_err();
    assert!(
        matches!(e, ResourceError::Script(ScriptError::Timeout { .. })),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let bg: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The background child was in the script's process group: it must be gone (or a zombie
    // waiting for init, which /proc shows as state Z).
    wait_until(
        Duration::from_secs(2),
        &format!("background child {bg} gone"),
        || gone(bg),
    );
}

#[tokio::test]
async fn ocf_agent_gets_instance_and_parameters() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = ctx_for(tmp.path(), Duration::from_secs(10));
    let agent_dir = tmp.path().join("ocf/resource.d/test");
    std::fs::create_dir_all(&agent_dir).unwrap();
    write_exec(
        &agent_dir.join("Dummy"),
        r#"#!/bin/sh
: "${OCF_ROOT:?}"
case "$1" in
  start) echo "$OCF_RESOURCE_INSTANCE $OCF_RESKEY_colour" > "$OCF_RESKEY_state"; exit 0 ;;
  stop) rm -f "$OCF_RESKEY_state"; exit 0 ;;
  monitor) [ -e "$OCF_RESKEY_state" ] && exit 0; exit 7 ;;
  *) exit 3 ;;
esac
"#,
    );
    let state = tmp.path().join("dummy.state");
    let conf = tmp.path().join("conf/Dummy");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("d1"),
        format!("# params\nstate={}\ncolour=\"blue\"\n", state.display()),
    )
    .unwrap();
    let r = resolve(&rspec("OCF::Dummy::d1"), &ctx).unwrap();
    assert!(matches!(r, Resource::Ocf(_)));
    assert_eq!(r.status().await.unwrap(), ResourceStatus::Stopped);
    r.start().await.unwrap();
    assert_eq!(std::fs::read_to_string(&state).unwrap().trim(), "d1 blue");
    assert_eq!(r.status().await.unwrap(), ResourceStatus::Running);
    r.stop().await.unwrap();
    assert_eq!(r.status().await.unwrap(), ResourceStatus::Stopped);
}

#[test]
fn group_of_script_and_vip_starts_in_order_and_rolls_back() {
    require_root();
    let (dir, _peer) = pair("grp");
    let tmp = tempfile::tempdir().unwrap();
    let ctx = ctx_for(tmp.path(), Duration::from_secs(10));
    write_exec(&tmp.path().join("resource.d/svc"), STATEFUL);
    write_exec(
        &tmp.path().join("resource.d/fails"),
        "#!/bin/sh\n[ \"$1\" = start ] && exit 1\nexit 0\n",
    );
    let state = tmp.path().join("svc.state");
    let svc = format!("svc::{}", state.display());
    let policy = GroupPolicy {
        stop_attempts: 2,
        stop_retry_interval: Duration::from_millis(50),
    };
    dir.run(|| async {
        let group: Vec<Resource> = [svc.as_str(), "IPaddr::192.0.2.10/24/eth0"]
            .iter()
            .map(|s| resolve(&rspec(s), &ctx).unwrap())
            .collect();
        start_group(&group, policy).await.unwrap();
        let st = status_group(&group).await;
        assert!(
            st.iter().all(|(_, s)| *s == ResourceStatus::Running),
            "{st:?}"
        );
        stop_group(&group, policy).await.unwrap();
        assert!(!state.exists());
        let shown = dir.ip(&["-o", "addr", "show", "dev", "eth0"]);
        assert!(!shown.contains("192.0.2.10"), "{shown}");

        let failing: Vec<Resource> = ["IPaddr::192.0.2.10/24/eth0", svc.as_str(), "fails"]
            .iter()
            .map(|s| resolve(&rspec(s), &ctx).unwrap())
            .collect();
        let e = start_group(&failing, policy).await.unwrap_err();
        assert!(e.to_string().contains("start of fails failed"), "{e}");
        assert!(!e.holds_group_failed());
        assert!(!state.exists(), "svc not rolled back");
        let shown = dir.ip(&["-o", "addr", "show", "dev", "eth0"]);
        assert!(
            !shown.contains("192.0.2.10"),
            "VIP not rolled back: {shown}"
        );
    });
}

#[test]
fn lvs_and_tunl_switch_roles_in_a_namespace() {
    require_root();
    use hbd::net::sysctl::Sysctl;
    let (dir, _peer) = pair("lvs");
    let host_before = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/arp_ignore").unwrap();
    let ctx = ResolveContext {
        dirs: ScriptDirs {
            resource_dirs: vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("resources")],
            lsb_dir: None,
            ..ScriptDirs::default()
        },
        script_timeout: Duration::from_secs(10),
        announce: one_shot(),
        ..ResolveContext::default()
    };
    dir.run(|| async {
        let on_lo = || {
            dir.ip(&["-o", "-4", "addr", "show", "dev", "lo"])
                .contains("192.0.2.10/32")
        };
        let lvs = resolve(&rspec("lvs::192.0.2.10::lo"), &ctx).unwrap();
        assert_eq!(lvs.status().await.unwrap(), ResourceStatus::Stopped);
        // stop = prepare as real server: VIP on lo, hidden from ARP.
        lvs.stop().await.unwrap();
        assert!(on_lo());
        assert_eq!(Sysctl::ArpIgnore("all".into()).read().unwrap(), "1");
        assert_eq!(Sysctl::ArpAnnounce("all".into()).read().unwrap(), "2");
        assert_eq!(lvs.status().await.unwrap(), ResourceStatus::Stopped);
        // start = prepare as director.
        lvs.start().await.unwrap();
        assert!(!on_lo());
        assert_eq!(Sysctl::IpForward.read().unwrap(), "1");
        assert_eq!(Sysctl::ArpIgnore("all".into()).read().unwrap(), "0");
        assert_eq!(lvs.status().await.unwrap(), ResourceStatus::Running);

        let tunl = resolve(&rspec("tunl::192.0.2.10::lo"), &ctx).unwrap();
        assert_eq!(tunl.status().await.unwrap(), ResourceStatus::Stopped);
        tunl.start().await.unwrap();
        assert!(on_lo());
        assert_eq!(Sysctl::ArpAnnounce("lo".into()).read().unwrap(), "2");
        assert_eq!(tunl.status().await.unwrap(), ResourceStatus::Running);
        tunl.start().await.unwrap(); // idempotent
        tunl.stop().await.unwrap();
        assert!(!on_lo());
        assert_eq!(tunl.status().await.unwrap(), ResourceStatus::Stopped);
        Sysctl::RpFilter("lo".into()).write("2").unwrap();
        assert_eq!(Sysctl::RpFilter("lo".into()).read().unwrap(), "2");
    });
    let host_after = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/arp_ignore").unwrap();
    assert_eq!(host_before, host_after, "the host namespace was modified");
}
