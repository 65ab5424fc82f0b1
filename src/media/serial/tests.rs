//! Serial links over pseudo-terminals: a pty's slave is the "device" the link opens, the
//! test holds the master and plays the other end of the cable (or a relay thread joins two
//! masters into a null-modem cable between two links). Ptys need no root.
//!
//! A pty moves bytes at memory speed whatever baud is set on it; the link's own line clock
//! still paces frames at the configured baud.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::framer::tests::{capture_keys, captured_streams, split_frames};
use super::*;
use crate::membership::wire;

/// Long enough for any event of these tests on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(10);

/// One pseudo-terminal: the master (the test's end), a slave descriptor held open so the
/// master never sees a hang-up while the link re-opens, and the slave's path.
struct Pty {
    master: OwnedFd,
    _holder: OwnedFd,
    path: PathBuf,
}

fn pty() -> Pty {
    let p = nix::pty::openpty(None, None).expect("openpty");
    let path = nix::unistd::ttyname(&p.slave).expect("ttyname");
    Pty {
        master: p.master,
        _holder: p.slave,
        path,
    }
}

/// A device path the test can point at a new pty: a symlink in a temporary directory, as
/// udev's /dev/serial/by-id links are.
struct DeviceLink {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl DeviceLink {
    fn new() -> DeviceLink {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ttyHB");
        DeviceLink { _dir: dir, path }
    }

    fn point_at(&self, target: &Path) {
        let _ = std::fs::remove_file(&self.path);
        std::os::unix::fs::symlink(target, &self.path).expect("symlink");
    }
}

/// Starts a link on `device`; frames it receives arrive on the returned channel.
fn link(device: &Path, baud: u32) -> (SerialLinkHandle, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    let handle = spawn(
        device,
        baud,
        Box::new(move |f| {
            let _ = tx.send(f);
        }),
        None,
    )
    .expect("spawn");
    (handle, rx)
}

fn wait_open(h: &SerialLinkHandle, opened: u64) -> SerialLinkStatus {
    h.wait_for(WAIT, |s| s.state == SerialState::Open && s.opened == opened)
        .unwrap_or_else(|| panic!("{} not open: {:?}", h.name(), h.status()))
}

fn wait_retrying(h: &SerialLinkHandle, what: &str) -> SerialLinkStatus {
    h.wait_for(
        WAIT,
        |s| matches!(&s.state, SerialState::Retrying { error } if error.contains(what)),
    )
    .unwrap_or_else(|| panic!("{} not retrying with '{what}': {:?}", h.name(), h.status()))
}

/// Writes all of `bytes` to a (blocking) master.
fn write_all(fd: &OwnedFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(e) => panic!("write to master: {e}"),
        }
    }
}

/// Reads from a master until `n` frames arrived (framed as the link frames), or panics.
fn read_frames(fd: &OwnedFd, n: usize) -> Vec<Vec<u8>> {
    let mut framer = SerialFramer::new();
    let mut frames = Vec::new();
    let deadline = crate::clock::now() + WAIT;
    let mut buf = [0u8; 4096];
    while frames.len() < n {
        let left = deadline.saturating_duration_since(crate::clock::now());
        assert!(!left.is_zero(), "only {} of {n} frames", frames.len());
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(left.min(Duration::from_secs(1))).expect("timeout");
        if poll(&mut fds, ms).expect("poll") == 0 {
            continue;
        }
        let got = nix::unistd::read(fd, &mut buf).expect("read master");
        framer.push(&buf[..got], |f| frames.push(f));
    }
    frames
}

fn recv(rx: &mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
    rx.recv_timeout(WAIT).expect("a frame in time")
}

/// Two ptys joined master to master by a relay thread: a null-modem cable whose ends are
/// the two slaves.
struct Cable {
    a: PathBuf,
    b: PathBuf,
    _holders: [OwnedFd; 2],
    stop: Arc<EventFd>,
    relay: Option<JoinHandle<()>>,
}

impl Cable {
    fn new() -> Cable {
        let (pa, pb) = (pty(), pty());
        let stop =
            Arc::new(EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC).expect("eventfd"));
        let relay = std::thread::spawn({
            let stop = stop.clone();
            let (ma, mb) = (pa.master, pb.master);
            move || relay(&ma, &mb, &stop)
        });
        Cable {
            a: pa.path,
            b: pb.path,
            _holders: [pa._holder, pb._holder],
            stop,
            relay: Some(relay),
        }
    }
}

impl Drop for Cable {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.relay.take() {
            let _ = t.join();
        }
    }
}

/// Copies bytes between two masters until `stop` rings.
fn relay(a: &OwnedFd, b: &OwnedFd, stop: &EventFd) {
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = [
            PollFd::new(a.as_fd(), PollFlags::POLLIN),
            PollFd::new(b.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        poll(&mut fds, PollTimeout::NONE).expect("relay poll");
        let ready = |i: usize| {
            fds[i]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLIN))
        };
        if ready(2) {
            return;
        }
        for (from, to, i) in [(a, b, 0), (b, a, 1)] {
            if ready(i) {
                let n = nix::unistd::read(from, &mut buf).expect("relay read");
                write_all(to, &buf[..n]);
            }
        }
    }
}

/// The captured frames each node wrote: node1's and node2's.
fn captured_frames() -> [Vec<Vec<u8>>; 2] {
    let [a, b] = captured_streams();
    [split_frames(&a), split_frames(&b)]
}

#[test]
fn frames_cross_a_null_modem_both_ways_at_19200() {
    let cable = Cable::new();
    let (a, a_rx) = link(&cable.a, 19200);
    let (b, b_rx) = link(&cable.b, 19200);
    wait_open(&a, 1);
    wait_open(&b, 1);
    let [from_a, from_b] = captured_frames();
    let keys = capture_keys();
    let (a_tx, b_tx) = (a.tx(), b.tx());
    for i in 0..6 {
        a_tx.send(&from_a[i]).expect("send a");
        b_tx.send(&from_b[i]).expect("send b");
        let (at_b, at_a) = (recv(&b_rx), recv(&a_rx));
        assert_eq!(at_b, from_a[i]);
        assert_eq!(at_a, from_b[i]);
        // What arrives is what heartbeat wrote, and verifies.
        wire::decode(&at_b, &keys).expect("verifies");
    }
    // Counted once the read that brought the frame is done.
    let s = a
        .wait_for(WAIT, |s| s.frames_in == 6)
        .unwrap_or_else(|| panic!("{:?}", a.status()));
    assert_eq!(
        (s.frames_out, s.frames_in, s.superseded),
        (6, 6, 0),
        "{s:?}"
    );
    assert_eq!(s.framer.noise_bytes, 0);
    assert_eq!(s.baud, 19200);
    a.close();
    assert!(b.is_open());
}

#[test]
fn garbage_and_truncated_frames_between_valid_ones_are_skipped() {
    let p = pty();
    let (h, rx) = link(&p.path, 19200);
    wait_open(&h, 1);
    let [frames, _] = captured_frames();
    let (a, b, c) = (&frames[3], &frames[4], &frames[5]);
    let mut stream = b"\x00\xff\xfe\x1b[2J noise\r\n<<<\n".to_vec();
    stream.extend_from_slice(a);
    stream.extend_from_slice(&b[..b.len() / 2]); // cut mid-line
    stream.extend_from_slice(b);
    stream.extend_from_slice(&c[..30]); // cut, then garbage ends the line
    stream.extend_from_slice(b"\x80\x81garbage\n");
    stream.extend_from_slice(c);
    write_all(&p.master, &stream);
    assert_eq!(&recv(&rx), a);
    assert_eq!(&recv(&rx), b);
    assert_eq!(&recv(&rx), c);
    let s = h
        .wait_for(WAIT, |s| s.frames_in == 3)
        .expect("three frames counted");
    // The half of b and the start of c, each cut by the next start line.
    assert_eq!(s.framer.cut_frames, 2, "{s:?}");
    // The noise line (its CR ignored) and the stray end line.
    assert_eq!(s.framer.noise_bytes, 14 + 4, "{s:?}");
    assert!(rx.try_recv().is_err(), "nothing else handed on");
}

#[test]
fn a_device_that_goes_away_is_reported_and_reopened() {
    let dev = DeviceLink::new();
    let first = pty();
    dev.point_at(&first.path);
    let (h, rx) = link(&dev.path, 19200);
    wait_open(&h, 1);
    let [frames, _] = captured_frames();
    write_all(&first.master, &frames[0]);
    assert_eq!(recv(&rx), frames[0]);

    // Unplugged: the other end closes. The link says so and keeps trying.
    let Pty {
        master, _holder, ..
    } = first;
    drop(master);
    drop(_holder);
    let _ = std::fs::remove_file(&dev.path);
    let s = wait_retrying(&h, "");
    assert!(!h.is_open(), "{s:?}");
    // Frames given meanwhile are dropped and counted, not errors.
    h.tx().send(&frames[1]).expect("dropped quietly");
    assert!(h.status().dropped_while_down >= 1);
    // Still gone: the error says why, and the link goes on retrying.
    wait_retrying(&h, "No such file or directory");

    // Plugged back in (a new pty behind the same path).
    let second = pty();
    dev.point_at(&second.path);
    wait_open(&h, 2);
    write_all(&second.master, &frames[2]);
    assert_eq!(recv(&rx), frames[2]);
    h.tx().send(&frames[3]).expect("send");
    assert_eq!(read_frames(&second.master, 1), vec![frames[3].clone()]);
}

#[test]
fn a_missing_device_is_retried_until_it_appears() {
    let dev = DeviceLink::new();
    let (h, _rx) = link(&dev.path, 115200);
    wait_retrying(&h, "No such file or directory");
    let p = pty();
    dev.point_at(&p.path);
    let s = wait_open(&h, 1);
    assert_eq!(s.baud, 115200);
}

#[test]
fn a_file_that_is_not_a_character_device_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notatty");
    std::fs::write(&path, b"").expect("file");
    let (h, _rx) = link(&path, 19200);
    wait_retrying(&h, "not a character device");
    // /dev/null is a character device but no tty: serialport refuses it.
    let (h, _rx) = link(Path::new("/dev/null"), 19200);
    let s = h
        .wait_for(WAIT, |s| matches!(s.state, SerialState::Retrying { .. }))
        .expect("refused");
    assert!(!h.is_open(), "{s:?}");
}

#[test]
fn the_device_is_opened_exclusively() {
    let p = pty();
    let (first, _rx1) = link(&p.path, 19200);
    wait_open(&first, 1);
    let (second, _rx2) = link(&p.path, 19200);
    let s = wait_retrying(&second, "");
    assert!(!second.is_open(), "{s:?}");
    // Once the first lets go, the second gets it.
    first.close();
    wait_open(&second, 1);
}

#[test]
fn send_refuses_netstring_frames_and_never_blocks() {
    let p = pty();
    let (h, _rx) = link(&p.path, 19200);
    wait_open(&h, 1);
    let tx = h.tx();
    let err = tx
        .send(b"###\n11:(0)t=status,%%%\n")
        .expect_err("netstring refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let mut huge = b">>>\n".to_vec();
    huge.resize(wire::MAX_FRAME_LEN, b'x');
    huge.extend_from_slice(b"\n<<<\n");
    assert!(tx.send(&huge).is_err());
    assert_eq!(tx.describe(), format!("{} at 19200 baud", p.path.display()));
    // Nobody reads the master: the line fills, sends still return at once.
    let [frames, _] = captured_frames();
    let start = crate::clock::now();
    for i in 0..200 {
        tx.send(&frames[i % frames.len()]).expect("send");
    }
    assert!(crate::clock::since(start) < Duration::from_secs(1));
}

#[test]
fn a_busy_line_sends_the_newest_frame_and_skips_the_rest() {
    let p = pty();
    // 9600 baud: a 195-byte frame holds the line for 203 ms.
    let (h, _rx) = link(&p.path, 9600);
    wait_open(&h, 1);
    let [frames, _] = captured_frames();
    let tx = h.tx();
    tx.send(&frames[0]).expect("send");
    h.wait_for(WAIT, |s| s.frames_out == 1)
        .expect("the first is taken at once");
    for f in &frames[1..10] {
        tx.send(f).expect("send");
    }
    // Of the nine sent while the line is busy with the first, only the last is still
    // waiting when it is free.
    let got = read_frames(&p.master, 2);
    assert_eq!(got[0], frames[0]);
    assert_eq!(got[1], frames[9]);
    let s = h.status();
    assert_eq!(s.superseded, 8, "{s:?}");
    assert!(
        h.min_interval() >= Duration::from_millis(150),
        "{:?}",
        h.min_interval()
    );
    // The line clock kept the second frame back until the first had gone.
    let s = h.wait_for(WAIT, |s| s.frames_out == 2).expect("two out");
    assert_eq!(s.frames_out, 2);
}

#[test]
fn open_names_the_medium_and_refuses_other_media() {
    let p = pty();
    let spec = MediumSpec::Serial {
        device: p.path.clone(),
        baud: 38400,
    };
    let (medium, handle) = open(&spec, Box::new(|_| {}), None).expect("open");
    assert_eq!(medium.name, format!("serial:{}", p.path.display()));
    assert_eq!(handle.name(), medium.name);
    wait_open(&handle, 1);
    let udp = MediumSpec::Bcast {
        interface: "eth0".into(),
        port: 694,
    };
    assert!(matches!(
        open(&udp, Box::new(|_| {}), None),
        Err(SerialError::NotSerial(_))
    ));
    // Closing stops the thread and frees the device.
    handle.close();
    let (again, _rx) = link(&p.path, 38400);
    wait_open(&again, 1);
}

/// Two director groups, as a typical LVS pair has.
fn director_groups() -> [crate::config::GroupSpec; 2] {
    use crate::config::{GroupSpec, ResourceSpec};
    let group = |spec: &str| GroupSpec {
        preferred: "director1".into(),
        resources: vec![ResourceSpec {
            spec: spec.into(),
            kind: "IPaddr".into(),
            args: vec![spec.into()],
        }],
    };
    [
        group("IPaddr::192.0.2.100/24/eth0"),
        group("IPaddr::198.51.100.7/24/eth1"),
    ]
}

/// An hbd status of `director1` signed with `method`, carrying `groups`, in classic text.
fn status_frame(method: crate::config::AuthMethod, groups: &[crate::config::GroupSpec]) -> Vec<u8> {
    use crate::config::{AuthKey, AuthKeys};
    use crate::membership::message::{FieldType, Message};
    let keys = AuthKeys {
        active: 1,
        keys: [(
            1,
            AuthKey {
                method,
                secret: b"secret".to_vec(),
            },
        )]
        .into(),
    };
    let reports: Vec<String> = groups
        .iter()
        .map(|g| format!("{}|1|0|director1|12", g.name()))
        .collect();
    let reports = reports.join(";");
    let mut m = Message::new();
    for (name, value) in [
        ("t", "status"),
        ("st", "active"),
        ("dt", "7530"),
        ("protocol", "1"),
        ("hbd_groups", reports.as_str()),
        ("src", "director1"),
    ] {
        if !value.is_empty() {
            m.add(FieldType::String, name, value.as_bytes().to_vec());
        }
    }
    m.add(FieldType::Binary, "srcuuid", vec![0xab; 16]);
    for (name, value) in [
        ("seq", "1a2b3c"),
        ("hg", "6b022f68"),
        ("ts", "6b022f6e"),
        ("ld", "0.52 0.61 0.74 3/312 45123"),
        ("ttl", "3"),
    ] {
        m.add(FieldType::String, name, value.as_bytes().to_vec());
    }
    wire::encode_classic(&m, &keys)
}

#[test]
fn the_frame_estimate_covers_real_status_frames() {
    use crate::config::AuthMethod;
    let groups = director_groups();
    let nodes = ["director1".to_string(), "director2".to_string()];
    for method in [
        AuthMethod::Crc,
        AuthMethod::Md5,
        AuthMethod::Sha1,
        AuthMethod::Sha256,
    ] {
        for g in [&groups[..0], &groups[..]] {
            let real = status_frame(method, g).len();
            let estimate = crate::config::status_frame_bytes(&nodes, method, g);
            assert!(
                estimate >= real && estimate <= real + real / 5,
                "{method:?}, {} groups: estimate {estimate}, real {real}",
                g.len()
            );
            if method == AuthMethod::Sha256 && !g.is_empty() {
                // The "about 350 bytes" the docs and check-config speak of.
                assert!((330..=370).contains(&real), "{real}");
            }
        }
    }
}

/// The time one status frame takes from one link's `send` to the other's callback, over
/// the relay cable. Run by hand: `cargo test --lib media::serial::tests::measure -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_one_frame_across_a_pty_cable() {
    let [frames, _] = captured_frames();
    let hbd = status_frame(crate::config::AuthMethod::Sha256, &director_groups());
    for (baud, frame) in [
        (19200, &frames[2]),
        (19200, &hbd),
        (115200, &frames[2]),
        (115200, &hbd),
    ] {
        let cable = Cable::new();
        let (a, _a_rx) = link(&cable.a, baud);
        let (b, b_rx) = link(&cable.b, baud);
        wait_open(&a, 1);
        wait_open(&b, 1);
        let tx = a.tx();
        let mut times = Vec::new();
        for _ in 0..50 {
            let start = crate::clock::now();
            tx.send(frame).expect("send");
            recv(&b_rx);
            times.push(crate::clock::since(start));
            // Let the line clock run out so each frame goes at once.
            std::thread::sleep(serial_line_time(frame.len(), baud));
        }
        times.sort();
        println!(
            "{baud} baud, {} bytes: median {:?}, max {:?} (the line itself would take {:?})",
            frame.len(),
            times[times.len() / 2],
            times[times.len() - 1],
            serial_line_time(frame.len(), baud)
        );
    }
}

#[test]
fn classic_frame_turns_a_udp_frame_into_what_heartbeat_writes_on_the_line() {
    use crate::config::MsgFormat;
    let keys = capture_keys();
    let [a, b] = captured_frames();
    for serial in a.iter().chain(&b) {
        let msg = wire::decode(serial, &keys).expect("verifies");
        // What a node sends on UDP with msgfmt classic (inner auth in place) and netstring
        // (none: appended last, where heartbeat puts it).
        let mut bare = msg.clone();
        bare.remove(wire::AUTH_FIELD);
        for (m, fmt) in [(&msg, MsgFormat::Classic), (&bare, MsgFormat::Netstring)] {
            let udp = wire::encode(m, &keys, fmt);
            assert!(udp.starts_with(b"###\n"));
            assert_eq!(&classic_frame(&udp, &keys).expect("converts"), serial);
        }
    }
    // A forged or foreign frame is not signed anew.
    let udp = wire::encode(
        &wire::decode(&a[0], &keys).unwrap(),
        &keys,
        MsgFormat::Classic,
    );
    let mut bad = udp.clone();
    bad[12] ^= 1;
    assert!(classic_frame(&bad, &keys).is_err());
}

#[test]
fn status_reads_as_one_line() {
    let mut s = SerialLinkStatus {
        device: "/dev/ttyS0".into(),
        baud: 19200,
        state: SerialState::Open,
        opened: 1,
        frames_in: 12,
        frames_out: 11,
        superseded: 2,
        dropped_while_down: 0,
        framer: FramerStats::default(),
    };
    assert_eq!(
        s.to_string(),
        "open at 19200 baud, 12 frames in, 11 out, 2 superseded, 0 dropped while down, 0 noise bytes, 0 cut, 0 oversize"
    );
    s.state = SerialState::Retrying {
        error: "No such file or directory (os error 2)".into(),
    };
    assert!(
        s.to_string()
            .starts_with("retrying (No such file or directory (os error 2)), 12 frames in")
    );
}

/// The thread name `on_start` ran on, set by [`record_start`].
static STARTED_ON: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn record_start() -> Result<(), String> {
    let name = std::thread::current().name().map(str::to_string);
    *STARTED_ON.lock().unwrap() = name;
    Err("not allowed here".into())
}

#[test]
fn on_start_runs_on_the_device_thread_and_its_error_does_not_stop_the_link() {
    let p = pty();
    let spec = MediumSpec::Serial {
        device: p.path.clone(),
        baud: 19200,
    };
    let (_medium, handle) = open(&spec, Box::new(|_| {}), Some(record_start)).expect("open");
    wait_open(&handle, 1);
    let name = STARTED_ON.lock().unwrap().clone();
    assert_eq!(name.as_deref(), Some(thread_name(&p.path).as_str()));
    handle.close();
}
