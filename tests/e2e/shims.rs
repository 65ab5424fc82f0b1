//! heartbeat's commands and the service plumbing against a running pair: `cl_status`
//! answers and exit codes, `hb_standby` / `hb_takeover` moving the group, `hactl status
//! --watch`, systemd's READY/WATCHDOG/STOPPING notifications on a socket the test listens
//! on, and the Prometheus endpoint validated by `promtool check metrics`.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::control::{log_in, socket_in, spawn_hbd, wait_owner, wait_peer};
use crate::netns::{NetNs, pair};

/// Where both nodes serve metrics, each on its own namespace's loopback.
const METRICS: &str = "127.0.0.1:9694";

/// Nodes `n1` (192.0.2.11, preferred for the group) and `n2` (192.0.2.12) from one YAML file.
struct YamlPair {
    a: NetNs,
    b: NetNs,
    dir: tempfile::TempDir,
    yaml: PathBuf,
}

impl YamlPair {
    fn new(prefix: &str) -> YamlPair {
        let (a, b) = pair(prefix, "192.0.2.11/24", "192.0.2.12/24");
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("hbd.yaml");
        std::fs::write(
            &yaml,
            format!(
                "nodes: [n1, n2]\n\
                 timing: {{ keepalive: 100ms, deadtime: 400ms, warntime: 200ms, initdead: 2s }}\n\
                 media:\n  - ucast: {{ interface: eth0, peer: 192.0.2.11 }}\n  \
                 - ucast: {{ interface: eth0, peer: 192.0.2.12 }}\n\
                 auth: {{ keys: [ {{ id: 1, method: sha256, key: \"shim-test\" }} ] }}\n\
                 auto_failback: on\n\
                 groups:\n  - preferred: n1\n    resources: [\"IPaddr::192.0.2.100/24/eth0\", ldirectord]\n\
                 director:\n  virtual_services:\n    - virtual: \"192.0.2.100:80\"\n      \
                 checktype: connect\n      checkinterval: 1\n      \
                 reals:\n        - {{ address: \"192.0.2.13:80\", forwarding: masq, weight: 1 }}\n\
                 metrics: {METRICS}\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&yaml, std::fs::Permissions::from_mode(0o600)).unwrap();
        YamlPair { a, b, dir, yaml }
    }

    fn state(&self, node: &str) -> PathBuf {
        self.dir.path().join(node)
    }

    fn socket(&self, node: &str) -> PathBuf {
        socket_in(&self.state(node))
    }

    fn logs(&self) -> String {
        format!(
            "--- n1:\n{}\n--- n2:\n{}",
            log_in(&self.state("n1")),
            log_in(&self.state("n2"))
        )
    }

    /// Starts n2 plainly (as `spawn_hbd` does).
    fn start_n2(&self) -> u32 {
        spawn_hbd(&self.b, &self.yaml, "n2", &self.state("n2"), &[])
    }

    /// Starts n1 as systemd would under `Type=notify` with `WatchdogSec=`: `NOTIFY_SOCKET`
    /// names `notify`, `WATCHDOG_USEC` the watchdog period, and `JOURNAL_STREAM` names its
    /// stderr (the log file standing in for journald's stream).
    fn start_n1_notifying(&self, notify: &Path, watchdog: Duration) -> u32 {
        use std::os::unix::fs::MetadataExt;
        let state = self.state("n1");
        std::fs::create_dir_all(&state).unwrap();
        let log = std::fs::File::create(state.join("log")).unwrap();
        let meta = log.metadata().unwrap();
        let cmd: Vec<String> = vec![
            "env".into(),
            format!("NOTIFY_SOCKET={}", notify.display()),
            format!("WATCHDOG_USEC={}", watchdog.as_micros()),
            format!("JOURNAL_STREAM={}:{}", meta.dev(), meta.ino()),
            env!("CARGO_BIN_EXE_hbd").into(),
            "--config".into(),
            self.yaml.display().to_string(),
            "--node-name".into(),
            "n1".into(),
            "--state-dir".into(),
            state.display().to_string(),
            "--socket".into(),
            self.socket("n1").display().to_string(),
        ];
        self.a.spawn(&cmd, Stdio::from(log))
    }
}

/// Runs `cl_status ARGS…` against the daemon at `socket`.
fn cl_status(socket: &Path, args: &[&str]) -> (String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_cl_status"))
        .env("HBD_SOCKET", socket)
        .args(args)
        .output()
        .expect("run cl_status");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// Runs one of the packaged shell wrappers (`hb_standby`, `hb_takeover`) with this run's
/// hactl, against the daemon at `socket`.
fn wrapper(name: &str, socket: &Path, args: &[&str]) -> Output {
    Command::new("sh")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("packaging")
                .join(name),
        )
        .args(args)
        .env("HACTL", env!("CARGO_BIN_EXE_hactl"))
        .env("HBD_SOCKET", socket)
        .output()
        .expect("run the wrapper")
}

#[test]
fn cl_status_and_hb_commands_against_a_pair() {
    let p = YamlPair::new("shc");
    let n1 = spawn_hbd(&p.a, &p.yaml, "n1", &p.state("n1"), &[]);
    let n2 = p.start_n2();
    let (s1, s2) = (p.socket("n1"), p.socket("n2"));
    wait_peer(&s1, "n2", "up", Duration::from_secs(5), || p.logs());
    wait_peer(&s2, "n1", "up", Duration::from_secs(5), || p.logs());
    wait_owner(&s1, "n1", Duration::from_secs(10), || p.logs());

    assert_eq!(
        cl_status(&s1, &["hbstatus"]),
        ("Heartbeat is running on this machine.\n".into(), 0)
    );
    let nowhere = p.dir.path().join("nobody.sock");
    assert_eq!(
        cl_status(&nowhere, &["hbstatus"]),
        ("Heartbeat is stopped on this machine.\n".into(), 1)
    );
    assert_eq!(cl_status(&nowhere, &["listnodes"]).1, 1, "no signon");
    assert_eq!(cl_status(&s1, &["listnodes"]), ("n1\nn2\n".into(), 0));
    let (state, code) = cl_status(&s1, &["nodestatus", "n2"]);
    assert!(state == "up\n" || state == "active\n", "{state}");
    assert_eq!(code, 0);
    assert_eq!(cl_status(&s1, &["nodetype", "n2"]), ("normal\n".into(), 0));
    assert_eq!(cl_status(&s1, &["nodestatus", "nobody"]).1, 11);
    assert_eq!(
        cl_status(&s1, &["listhblinks", "n2"]),
        ("\teth0\n".into(), 0)
    );
    assert_eq!(
        cl_status(&s1, &["hblinkstatus", "n2", "eth0"]),
        ("up\n".into(), 0)
    );
    assert_eq!(cl_status(&s1, &["rscstatus"]), ("local\n".into(), 0));
    assert_eq!(cl_status(&s2, &["rscstatus"]), ("none\n".into(), 0));
    assert_eq!(cl_status(&s1, &["bogus"]).1, 11);

    // hb_standby on n1 gives the group to n2; hb_takeover brings it back.
    let usage = wrapper("hb_standby", &s1, &["sideways"]);
    assert_eq!(usage.status.code(), Some(2), "{usage:?}");
    let out = wrapper("hb_standby", &s1, &[]);
    assert!(out.status.success(), "{out:?}\n{}", p.logs());
    wait_owner(&s2, "n2", Duration::from_secs(10), || p.logs());
    wait_owner(&s1, "n2", Duration::from_secs(10), || p.logs());
    assert_eq!(cl_status(&s2, &["rscstatus"]), ("foreign\n".into(), 0));
    let out = wrapper("hb_takeover", &s1, &["local"]);
    assert!(out.status.success(), "{out:?}\n{}", p.logs());
    wait_owner(&s1, "n1", Duration::from_secs(10), || p.logs());
    let unreachable = wrapper("hb_takeover", &nowhere, &["all"]);
    assert_eq!(unreachable.status.code(), Some(3), "{unreachable:?}");

    // hactl status --watch: one report per interval, headers, no screen clearing in a pipe.
    let started = Instant::now();
    let watch = Command::new(env!("CARGO_BIN_EXE_hactl"))
        .arg("--socket")
        .arg(&s1)
        .args(["status", "--watch", "0.2", "--count", "3"])
        .output()
        .expect("run hactl");
    assert!(watch.status.success(), "{watch:?}");
    let text = String::from_utf8_lossy(&watch.stdout);
    assert_eq!(
        text.matches("Every 0.2s: hactl status").count(),
        3,
        "{text}"
    );
    assert_eq!(text.matches("Node n1 (").count(), 3, "{text}");
    assert!(
        !text.contains('\x1b'),
        "no escape codes into a pipe: {text:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));

    // n2 dies: cl_status sees it and its link dead, and n1 holds everything.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(n2.cast_signed()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_peer(&s1, "n2", "dead", Duration::from_secs(5), || p.logs());
    assert_eq!(cl_status(&s1, &["nodestatus", "n2"]), ("dead\n".into(), 1));
    assert_eq!(
        cl_status(&s1, &["hblinkstatus", "n2", "eth0"]),
        ("dead\n".into(), 1)
    );
    assert_eq!(
        cl_status(&s1, &["nodestatus", "-m", "n2"]),
        ("The cluster node n2 is dead\n".into(), 1)
    );
    assert_eq!(cl_status(&s1, &["rscstatus"]), ("all\n".into(), 0));
    let _ = n1;
}

/// Datagrams received on `listener` until `want` arrives (at most `limit`), in order.
fn receive_until(listener: &UnixDatagram, want: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        listener
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 4096];
        match listener.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = text == want;
                seen.push(text);
                if done {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no {want} within {limit:?}; received {seen:?}");
}

/// `promtool`: on the PATH, or where scripts/setup.sh unpacks it.
fn promtool() -> PathBuf {
    let unpacked = PathBuf::from("/opt/hbd-tools/usr/bin/promtool");
    if unpacked.exists() {
        return unpacked;
    }
    let found = Command::new("sh")
        .args(["-c", "command -v promtool"])
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "promtool is missing: run scripts/setup.sh (it unpacks Debian's)"
    );
    PathBuf::from(path)
}

/// `GET /metrics` from inside `ns`.
fn scrape(ns: &NetNs) -> String {
    ns.run(|| async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(METRICS)
            .await
            .expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: hbd\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        answer
    })
}

#[test]
fn systemd_notifications_and_metrics_from_a_running_pair() {
    let p = YamlPair::new("shn");
    let notify_path = p.dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let watchdog = Duration::from_millis(400);
    p.start_n2();
    let n1 = p.start_n1_notifying(&notify_path, watchdog);
    let s1 = p.socket("n1");
    // READY=1 comes only once the peer has been heard and the group settled.
    let before_ready = receive_until(&notify, "READY=1", Duration::from_secs(10));
    let report = crate::control::status(&s1).expect("n1 answers");
    assert!(
        report.nodes.iter().all(|n| n.state != "init") && report.unstable.is_empty(),
        "READY=1 sent before the pair settled: {report:#?}"
    );
    assert!(
        before_ready
            .iter()
            .any(|m| m.starts_with("STATUS=starting")),
        "{before_ready:?}"
    );
    // The watchdog is fed at half its period.
    let t = Instant::now();
    receive_until(&notify, "WATCHDOG=1", watchdog * 2);
    receive_until(&notify, "WATCHDOG=1", watchdog * 2);
    assert!(
        t.elapsed() <= watchdog * 2,
        "pings too far apart: {:?}",
        t.elapsed()
    );

    // Metrics: valid exposition text with the pair's state in it.
    let answer = scrape(&p.a);
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    for line in [
        "hbd_up 1",
        "hbd_link_state{node=\"n2\",link=\"ucast:eth0:192.0.2.12\",state=\"up\"} 1",
    ] {
        assert!(body.lines().any(|l| l == line), "no '{line}' in\n{body}");
    }
    assert!(
        body.lines()
            .any(|l| l.starts_with("hbd_frames_total{outcome=\"accepted\"} ") && !l.ends_with(" 0")),
        "{body}"
    );
    assert!(
        body.lines().any(|l| l.starts_with("hbd_group_owner{")
            && l.ends_with(",owner=\"n1\",preferred=\"n1\"} 1")),
        "{body}"
    );
    // The heartbeat loop feeds the interval histogram: the peer's gaps are counted.
    assert!(
        body.lines().any(
            |l| l.starts_with("hbd_heartbeat_interval_seconds_count{node=\"n2\"} ")
                && !l.ends_with(" 0")
        ),
        "{body}"
    );
    // The director feeds check latencies and dataplane apply times (its one real, where
    // nothing answers, is checked every second).
    let fed = |body: &str, name: &str| {
        body.lines()
            .any(|l| l.starts_with(&format!("{name}_count ")) && !l.ends_with(" 0"))
    };
    let mut body = body.to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(fed(&body, "hbd_check_duration_seconds") && fed(&body, "hbd_dataplane_apply_seconds"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
        let answer = scrape(&p.a);
        body = answer
            .split_once("\r\n\r\n")
            .expect("an HTTP answer")
            .1
            .to_string();
    }
    for name in ["hbd_check_duration_seconds", "hbd_dataplane_apply_seconds"] {
        assert!(fed(&body, name), "{name} not fed:\n{body}");
    }
    let file = p.dir.path().join("metrics.txt");
    std::fs::write(&file, &body).unwrap();
    let check = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' check metrics < '{}' 2>&1",
            promtool().display(),
            file.display()
        ))
        .output()
        .expect("run promtool");
    assert!(
        check.status.success(),
        "promtool check metrics: {}\n{body}",
        String::from_utf8_lossy(&check.stdout)
    );

    // Logs: journald lines for n1 (priority prefix, no time, no colour), plain lines for n2
    // (its stderr is a file), never escape codes.
    let journal = log_in(&p.state("n1"));
    assert!(!journal.is_empty());
    assert!(
        journal
            .lines()
            .all(|l| l.starts_with('<') && l[1..2].parse::<u8>().is_ok() && &l[2..3] == ">"),
        "{journal}"
    );
    assert!(journal.contains("<6>"), "{journal}");
    let plain = log_in(&p.state("n2"));
    assert!(plain.contains(" INFO "), "{plain}");
    assert!(!plain.starts_with('<'), "{plain}");
    assert!(
        !format!("{journal}{plain}").contains('\x1b'),
        "escape codes in a log file"
    );

    // A clean stop says STOPPING=1.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(n1.cast_signed()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    receive_until(&notify, "STOPPING=1", Duration::from_secs(10));

    // n2 takes the group over: a takeover counted, with its duration.
    let taken = |body: &str| {
        body.lines()
            .any(|l| l == "hbd_failover_duration_seconds_count 1")
            && body
                .lines()
                .any(|l| l.starts_with("hbd_failovers_total{group=") && l.ends_with("} 1"))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut body = String::new();
    while Instant::now() < deadline {
        body = scrape(&p.b);
        if taken(&body) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        taken(&body),
        "no takeover counted on n2:\n{body}\n{}",
        p.logs()
    );
}
