//! Per-frame cost of a heartbeat `status`: building + encoding one lab-sized frame, and
//! decoding + verifying + reading its envelope, in ns/op and heap allocations/op.
//!
//! Run with `cargo bench --bench wire` (plain `main`, no harness; a number argument sets the
//! iterations). Without `--bench`, as `cargo test --all-targets` runs it, it only checks the
//! paths with 100 iterations each. The frame is what `daemon::node` sends every keepalive:
//! `t=status`, `st`, `dt`, `protocol`, `hbd_groups`, then the envelope, signed with a sha1
//! (then sha256) key in msgfmt classic. Each cost is
//! measured twice: through the owned [`Message`] API (`stamp` + `encode`, `decode`), the
//! baseline, and through the borrowed one (`encode_stamped`, `decode_view`), and the send
//! once more with the leading fields kept encoded and hashed (`encode_stamped_prefixed`,
//! what `daemon::node` sends with).

// A benchmark: real time is what it measures.
#![allow(clippy::disallowed_methods)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hbd::config::model::{AuthKey, AuthKeys, AuthMethod, MsgFormat};
use hbd::manager::{self, GroupReport, Placement};
use hbd::membership::message::Message;
use hbd::membership::wire::{self, EnvelopeRef, FieldList, FieldRef, FrameKeys, FramePrefix};

/// Counts allocations (and reallocations) made through the global allocator.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds the GlobalAlloc
// contract; the counters have no effect on the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout, as the caller promised it is valid.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: `ptr` was returned by `System` with `layout`; forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Everything `send_status` + `send` use, owned by the node.
struct Node {
    name: String,
    uuid: [u8; 16],
    generation: u64,
    load: String,
    reports: Vec<GroupReport>,
    keys: AuthKeys,
    seq: u64,
}

impl Node {
    fn lab(method: AuthMethod) -> Node {
        Node {
            name: "loadbalancer".into(),
            uuid: *b"\x8f\x1e\x02\x6b\x9c\x44\x4e\x5d\xa1\x0b\x33\x7c\x2a\x90\x11\xee",
            generation: 0x6b02_2fab,
            load: "0.00 0.01 0.05 1/123 4567".into(),
            reports: vec![GroupReport {
                group: "lvs".into(),
                holds: true,
                failed: false,
                placement: Placement {
                    target: "loadbalancer".into(),
                    epoch: 3,
                },
            }],
            keys: AuthKeys {
                active: 1,
                keys: BTreeMap::from([(
                    1,
                    AuthKey {
                        method,
                        secret: b"change-me-to-a-long-random-secret".to_vec(),
                    },
                )]),
            },
            seq: 0x1c,
        }
    }

    /// The status frame `daemon::node::send_status` hands to the media, built through the
    /// owned [`Message`] API (the baseline for [`Node::status_frame_fast`]).
    fn status_frame(&mut self) -> Vec<u8> {
        let mut msg = Message::with_type("status");
        msg.add_str("st", "active");
        msg.add_str("dt", &format!("{:x}", 30u128));
        msg.add_str("protocol", "1");
        msg.add_str("hbd_groups", &manager::encode_reports(&self.reports));
        let env = self.next_envelope();
        wire::stamp(&mut msg, &env);
        wire::encode(&msg, &self.keys, MsgFormat::Classic)
    }
}

impl Node {
    /// The envelope of the next frame: a fresh sequence number, the rest fixed.
    fn next_envelope(&mut self) -> EnvelopeRef<'_> {
        let seq = self.seq;
        self.seq += 1;
        EnvelopeRef {
            src: &self.name,
            srcuuid: self.uuid,
            seq: Some(seq),
            generation: self.generation,
            ts: 0x6b02_2fbd,
            load: Some(&self.load),
            ttl: 3,
            dest_uuid: None,
        }
    }

    /// The same frame through the allocation-free API: prepared keys, borrowed fields and
    /// envelope, one reused output buffer; with a `prefix`, the leading fields encoded and
    /// hashed once (what `send_status` does).
    fn status_frame_fast(
        &mut self,
        keys: &FrameKeys,
        groups: &str,
        out: &mut Vec<u8>,
        prefix: Option<&mut FramePrefix>,
    ) {
        let dt = format!("{:x}", 30u128);
        let specific = [
            FieldRef::string("t", b"status"),
            FieldRef::string("st", b"active"),
            FieldRef::string("dt", dt.as_bytes()),
            FieldRef::string("protocol", b"1"),
            FieldRef::string("hbd_groups", groups.as_bytes()),
        ];
        let env = self.next_envelope();
        out.clear();
        match prefix {
            Some(prefix) => wire::encode_stamped_prefixed(
                out,
                &specific,
                &env,
                keys,
                MsgFormat::Classic,
                prefix,
            ),
            None => wire::encode_stamped(out, &specific, &env, keys, MsgFormat::Classic),
        }
    }
}

/// The work `daemon::node::on_frame` does on a decoded status up to the seqtrack check.
fn sequence_of<L: FieldList + ?Sized>(msg: &L) -> u64 {
    let env = wire::read_envelope(msg).expect("envelope");
    let (seq, _) = env.sequence().expect("sequenced");
    seq + u64::from(env.msg_type == "status")
}

/// Like [`sequence_of`], plus the status fields the node reads afterwards.
fn status_of<L: FieldList + ?Sized>(msg: &L) -> usize {
    let env = wire::read_envelope(msg).expect("envelope");
    let text = |name| msg.value_of(name).and_then(|v| std::str::from_utf8(v).ok());
    let st = text("st").unwrap_or("up");
    let dt = msg.value_of("dt").and_then(wire::parse_hex_u64);
    let reports = text("hbd_groups")
        .and_then(manager::decode_reports)
        .expect("reports");
    st.len()
        + usize::try_from(dt.unwrap_or(0)).unwrap_or(usize::MAX)
        + reports.len()
        + env.src.len()
}

/// Decode and verify through the owned [`Message`] API (the baseline), then [`sequence_of`].
fn receive(frame: &[u8], keys: &AuthKeys) -> u64 {
    sequence_of(&wire::decode(frame, keys).expect("decodes"))
}

/// [`receive`] plus [`status_of`].
fn receive_status(frame: &[u8], keys: &AuthKeys) -> usize {
    status_of(&wire::decode(frame, keys).expect("decodes"))
}

/// [`receive`] through [`wire::decode_view`] with prepared keys (what the node does).
fn receive_fast(frame: &[u8], keys: &FrameKeys) -> u64 {
    sequence_of(&wire::decode_view(frame, keys).expect("decodes"))
}

/// [`receive_status`] through [`wire::decode_view`] with prepared keys.
fn receive_status_fast(frame: &[u8], keys: &FrameKeys) -> usize {
    status_of(&wire::decode_view(frame, keys).expect("decodes"))
}

/// Runs `f` `iters` times; prints ns/op and allocations/op.
fn bench<R>(label: &str, iters: u64, mut f: impl FnMut() -> R) {
    for _ in 0..iters / 10 {
        black_box(f());
    }
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    let start = Instant::now();
    for _ in 0..iters {
        black_box(f());
    }
    let elapsed = start.elapsed();
    let allocs = ALLOCS.load(Ordering::Relaxed) - a0;
    let bytes = BYTES.load(Ordering::Relaxed) - b0;
    println!(
        "{label:<44} {:>8.0} ns/op {:>6.1} allocs/op {:>7.0} bytes/op",
        elapsed.as_nanos() as f64 / iters as f64,
        allocs as f64 / iters as f64,
        bytes as f64 / iters as f64,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this without it, as a
    // check that every path still works and agrees, where a measurement would only cost time.
    let measuring = std::env::args().any(|a| a == "--bench");
    let iters: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if measuring { 200_000 } else { 100 });
    if !measuring {
        println!("check run ({iters} iterations, no --bench): the figures are not measurements");
    }
    for method in [AuthMethod::Sha1, AuthMethod::Sha256] {
        let mut node = Node::lab(method);
        let frame = node.status_frame();
        if method == AuthMethod::Sha1 {
            println!(
                "status frame: {} bytes: {}",
                frame.len(),
                String::from_utf8_lossy(&frame).escape_debug()
            );
        }
        let keys = node.keys.clone();
        bench(&format!("{method:?}: build + encode status"), iters, || {
            node.status_frame()
        });
        bench(
            &format!("{method:?}: decode + verify + read_envelope"),
            iters,
            || receive(&frame, &keys),
        );
        bench(
            &format!("{method:?}: ... + st, dt, hbd_groups"),
            iters,
            || receive_status(&frame, &keys),
        );
        let prepared = FrameKeys::new(&keys);
        let groups = manager::encode_reports(&node.reports);
        let mut out = Vec::new();
        let mut prefix = FramePrefix::default();
        let seq = node.seq;
        node.status_frame_fast(&prepared, &groups, &mut out, None);
        node.seq = seq;
        assert_eq!(out, node.status_frame(), "fast path is byte-identical");
        node.seq = seq;
        node.status_frame_fast(&prepared, &groups, &mut out, Some(&mut prefix));
        node.seq = seq;
        assert_eq!(out, node.status_frame(), "prefixed path is byte-identical");
        for with_prefix in [false, true] {
            let label = if with_prefix {
                "fast: encode_stamped_prefixed"
            } else {
                "fast: encode_stamped (reused buf)"
            };
            bench(&format!("{method:?}: {label}"), iters, || {
                let prefix = with_prefix.then_some(&mut prefix);
                node.status_frame_fast(&prepared, &groups, &mut out, prefix);
                out.len()
            });
        }
        bench(
            &format!("{method:?}: fast: decode_view + read_envelope"),
            iters,
            || receive_fast(&frame, &prepared),
        );
        bench(
            &format!("{method:?}: fast: ... + st, dt, hbd_groups"),
            iters,
            || receive_status_fast(&frame, &prepared),
        );
    }
}
