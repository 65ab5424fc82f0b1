//! The rest of ha.cf in a running `hbd`: `logfile`/`debugfile` get plain lines, `respawn`
//! keeps a program running and stops it with the daemon, `watchdog` is petted every
//! keepalive and closed with the magic `V`, and the directives hbd does not act on are
//! named in the log at start. (The watchdog is a plain file here: the kernel's softdog is not
//! built on the test machines.)

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::{gone, pair, wait_until, write_exec};

#[test]
fn hbd_logs_to_files_respawns_and_closes_the_watchdog_cleanly() {
    let (a, _b) = pair("hbh", "192.0.2.21/24", "192.0.2.22/24");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ha_log = dir.join("ha-log");
    let ha_debug = dir.join("ha-debug");
    let dog = dir.join("watchdog");
    std::fs::write(&dog, b"").expect("watchdog file");
    let pidfile = dir.join("respawned.pid");
    let prog = dir.join("keeper.sh");
    write_exec(
        &prog,
        &format!(
            "#!/bin/sh\necho \"$$\" > {p}.tmp && mv {p}.tmp {p}\necho keeper up\nexec sleep 60\n",
            p = pidfile.display()
        ),
    );
    let ha = crate::control::write_ha_dir(
        dir,
        &format!(
            "logfile {}\ndebugfile {}\ndebug 1\nlogfacility local0\nkeepalive 50ms\ndeadtime 300ms\n\
             initdead 1\nucast eth0 192.0.2.22\nauto_failback on\nnode n1\nnode n2\ncluster lab\n\
             respawn root {}\nwatchdog {}\n",
            ha_log.display(),
            ha_debug.display(),
            prog.display(),
            dog.display()
        ),
        "",
        "auth 1\n1 sha256 e2e-hacf\n",
    );
    let state = dir.join("n1");
    let pid = crate::control::spawn_hbd(&a, &ha, "n1", &state, &["--no-realtime"]);
    let log = || crate::control::log_in(&state);
    wait_until(
        Duration::from_secs(10),
        "the respawned program runs",
        || pidfile.exists(),
    );
    let child: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid number");
    wait_until(Duration::from_secs(5), "a few watchdog pets", || {
        std::fs::metadata(&dog).map_or(0, |m| m.len()) >= 3
    });
    // A clean stop.
    kill(
        Pid::from_raw(i32::try_from(pid).expect("pid")),
        Signal::SIGTERM,
    )
    .expect("SIGTERM");
    wait_until(Duration::from_secs(15), "hbd stops", || {
        gone(i32::try_from(pid).expect("pid"))
    });
    assert!(gone(child), "the respawned program outlived hbd\n{}", log());

    let stderr = log();
    let file = std::fs::read_to_string(&ha_log).expect("logfile written");
    let debug = std::fs::read_to_string(&ha_debug).expect("debugfile written");
    for text in [&file, &debug] {
        assert!(
            !text.contains('\u{1b}'),
            "colour codes in a log file:\n{text}"
        );
        assert!(text.contains("respawn: started"), "{text}");
        assert!(text.contains("respawn: keeper up"), "{text}");
        assert!(
            text.contains("watchdog closed cleanly (magic close)"),
            "{text}"
        );
    }
    assert!(
        !file.contains(" DEBUG "),
        "logfile has no debug lines:\n{file}"
    );
    // Warnings at start name the file and line (cluster is line 12).
    let warned = format!(
        "{}:12: warning: 'cluster' is ignored",
        ha.join("ha.cf").display()
    );
    assert!(file.contains(&warned), "{warned}\n{file}");
    assert!(stderr.contains(&warned), "{stderr}");

    // Pets are NULs; the last byte is the magic V.
    let bytes = std::fs::read(&dog).expect("watchdog file");
    let (last, pets) = bytes.split_last().expect("bytes");
    assert_eq!(*last, b'V', "{bytes:?}");
    assert!(pets.len() >= 3 && pets.iter().all(|b| *b == 0), "{bytes:?}");
}

/// Two daemons over an IPv6 medium (`ucast6` or `mcast6`) in namespaces addressed from the
/// documentation prefix 2001:db8::/32: each sees the other, and a cut link is noticed.
fn two_daemons_over_ipv6(prefix: &str, media: &str) {
    let (a, b) = pair(prefix, "192.0.2.31/24", "192.0.2.32/24");
    for (ns, addr) in [(&a, "2001:db8::31/64"), (&b, "2001:db8::32/64")] {
        ns.ip(&["-6", "addr", "add", addr, "dev", "eth0", "nodad"]);
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let ha = crate::control::write_ha_dir(
        tmp.path(),
        &format!(
            "keepalive 100ms\ndeadtime 400ms\nwarntime 200ms\ninitdead 2\n{media}\nauto_failback on\nnode n1\nnode n2\n"
        ),
        "",
        "auth 2\n2 sha256 e2e-ipv6\n",
    );
    let (s1, s2) = (tmp.path().join("n1"), tmp.path().join("n2"));
    crate::control::spawn_hbd(&a, &ha, "n1", &s1, &["--no-realtime"]);
    crate::control::spawn_hbd(&b, &ha, "n2", &s2, &["--no-realtime"]);
    let (sock1, sock2) = (
        crate::control::socket_in(&s1),
        crate::control::socket_in(&s2),
    );
    let limit = Duration::from_secs(5);
    crate::control::wait_peer(&sock1, "n2", "up", limit, || crate::control::log_in(&s1));
    crate::control::wait_peer(&sock2, "n1", "up", limit, || crate::control::log_in(&s2));
    a.ip(&["link", "set", "eth0", "down"]);
    crate::control::wait_peer(&sock2, "n1", "dead", limit, || crate::control::log_in(&s2));
}

#[test]
fn two_daemons_over_ucast6() {
    two_daemons_over_ipv6("hb6u", "ucast6 eth0 2001:db8::31\nucast6 eth0 2001:db8::32");
}

#[test]
fn two_daemons_over_mcast6() {
    two_daemons_over_ipv6("hb6m", "mcast6 eth0 ff12::1:694 694 1 0");
}
