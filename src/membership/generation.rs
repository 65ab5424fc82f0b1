//! State persisted in the state directory (`/var/lib/heartbeat` when taking over a heartbeat
//! node): this node's generation and uuid, and the last generation seen from each peer.
//!
//! Implements HEARTBEAT-WIRE.md §7.4 (`hbgenmethod file`: `hb_generation` holds
//! `"%*lu\n"` with width 15, 16 bytes; +1 per start; `time(NULL)+1` when missing) and §5
//! (`hb_uuid`: 16 raw bytes), so an existing heartbeat state directory is used unchanged and
//! peers see the generation keep rising across the switch to hbd.
//!
//! hbd adds `peer_generations` (`name generation` per line), which lets
//! [`super::seqtrack::SeqTrack::with_min_generation`] drop replays of a peer's older runs even
//! after this node restarts; heartbeat forgets them (§7.4).
//!
//! Peer generations change while the daemon runs; [`PeerGenerationWriter`] stores them from
//! one background thread so the node task never waits on a disk (fsyncs included).
//!
//! Every write is atomic: a temporary file in the same directory is written and fsynced,
//! renamed over the target, and the directory is fsynced, so a crash leaves either the old
//! or the new content. A corrupt file is an error naming the file and the fix, never a
//! silent reset: a generation that went backwards would make peers drop every frame as a
//! replay.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

/// This node's generation counter (heartbeat `/var/lib/heartbeat/hb_generation`).
pub const GENERATION_FILE: &str = "hb_generation";
/// This node's uuid, 16 raw bytes (heartbeat `/var/lib/heartbeat/hb_uuid`).
pub const UUID_FILE: &str = "hb_uuid";
/// Last generation seen per peer (hbd only).
pub const PEER_GENERATIONS_FILE: &str = "peer_generations";
/// Width of the right-aligned number in `hb_generation` (heartbeat `"%*lu\n"` with 15).
const GENERATION_WIDTH: usize = 15;

/// Why persisted membership state could not be read or written.
#[derive(Debug, Error)]
pub enum GenerationError {
    /// The file exists but could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// File path.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// The file (or its temporary copy, or the directory) could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// File path.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// The file holds something other than what hbd/heartbeat writes.
    #[error("{} is corrupt: {reason}; {fix}", path.display())]
    Corrupt {
        /// File path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// What the operator should do.
        fix: &'static str,
    },
    /// A peer name that cannot be stored in `peer_generations`.
    #[error("cannot record generation for node name {name:?}: it is empty or contains whitespace")]
    BadPeerName {
        /// The name given.
        name: String,
    },
    /// The OS random source failed while creating a uuid.
    #[error("cannot get random bytes for a new node uuid: {0}")]
    Random(String),
}

/// Fix given for a corrupt `hb_generation`.
const GENERATION_FIX: &str = "it must hold one decimal number, right-aligned in 15 characters \
    and a newline (e.g. \"     1795305412\\n\"); restore it from a backup, or write a number \
    larger than any generation this node has used (e.g. the current Unix time), since peers \
    drop frames with a lower generation as replays";
/// Fix given for a corrupt `hb_uuid`.
const UUID_FIX: &str = "it must hold exactly 16 raw bytes; restore it from a backup, or \
    remove it to make a new uuid (peers will then see this node under a new uuid)";
/// Fix given for a corrupt `peer_generations`.
const PEER_FIX: &str = "each line must be \"<node> <decimal generation>\"; correct the line \
    or remove the file (replays of peers' older runs are then only caught from their next \
    status on)";

/// Writes `contents` to `dir/name` atomically: temporary file in `dir`, fsync, rename,
/// fsync of `dir`. The temporary file is removed on failure.
fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> Result<(), GenerationError> {
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GenerationError::Write { path, source }
    };
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(write_err(&tmp))?;
        f.write_all(contents).map_err(write_err(&tmp))?;
        f.sync_all().map_err(write_err(&tmp))?;
        fs::rename(&tmp, &target).map_err(write_err(&target))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err(dir))
}

/// Removes temporary files [`write_atomic`] left in `state_dir` when an earlier run died
/// between writing and renaming one (a crash or SIGKILL): the target kept its old content,
/// and the orphan would otherwise stay for good. Returns how many were removed. Run at
/// start, before this run writes any.
pub fn remove_leftover_temporaries(state_dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(state_dir) else {
        return 0;
    };
    let ours = [GENERATION_FILE, UUID_FILE, PEER_GENERATIONS_FILE];
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let leftover = ours.iter().any(|f| {
            name.strip_prefix('.')
                .and_then(|n| n.strip_prefix(f))
                .and_then(|n| n.strip_prefix(".tmp."))
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        });
        if leftover && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Reads `dir/name`, `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, GenerationError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(GenerationError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The `hb_generation` contents for `generation`: `"%15lu\n"`.
pub fn format_generation(generation: u64) -> String {
    format!("{generation:>GENERATION_WIDTH$}\n")
}

/// Parses `hb_generation` contents: optional leading spaces, decimal digits, optional
/// newline (what heartbeat's `sscanf("%lu")` reads back from what it writes).
fn parse_generation(bytes: &[u8]) -> Result<u64, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "it is not text".to_string())?;
    let digits = text
        .strip_suffix('\n')
        .unwrap_or(text)
        .trim_start_matches(' ');
    if digits.is_empty() {
        return Err("it holds no number".to_string());
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "\"{}\" is not a decimal number",
            text.escape_debug()
        ));
    }
    digits.parse().map_err(|_| format!("{digits} is too large"))
}

/// This node's stored generation, `None` if `hb_generation` does not exist.
pub fn read_generation(state_dir: &Path) -> Result<Option<u64>, GenerationError> {
    let path = state_dir.join(GENERATION_FILE);
    read_optional(&path)?
        .map(|b| {
            parse_generation(&b).map_err(|reason| GenerationError::Corrupt {
                path: path.clone(),
                reason,
                fix: GENERATION_FIX,
            })
        })
        .transpose()
}

/// The generation for this start (heartbeat `IncrGeneration`): the stored one + 1, or
/// `now_secs + 1` when there is none; written back atomically before it is returned.
pub fn next_generation_at(state_dir: &Path, now_secs: u64) -> Result<u64, GenerationError> {
    let next = match read_generation(state_dir)? {
        Some(g) => g.checked_add(1).ok_or_else(|| GenerationError::Corrupt {
            path: state_dir.join(GENERATION_FILE),
            reason: format!("{g} cannot be incremented"),
            fix: GENERATION_FIX,
        })?,
        None => now_secs.saturating_add(1),
    };
    write_atomic(
        state_dir,
        GENERATION_FILE,
        format_generation(next).as_bytes(),
    )?;
    Ok(next)
}

/// [`next_generation_at`] with the wall clock (seconds since the epoch, as `time(NULL)`).
pub fn next_generation(state_dir: &Path) -> Result<u64, GenerationError> {
    let now = crate::clock::wall()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    next_generation_at(state_dir, now)
}

/// How long a generation taken from the wall clock (`hb_generation` missing: `now + 1`)
/// must wait before the node uses it: until the clock reads `generation` seconds, so the
/// second it was derived in is over. A run killed after that and started again without
/// `hb_generation` (state directory lost) then reads a later second and gets a higher
/// generation, which its peer takes as a restart; within the same second it would get the
/// same one, and the peer would drop its first frames as old ones of the run it knew.
/// Zero when the clock is already there (or `generation` came from the file, usually far
/// from the clock); never more than a second plus what the clock is behind.
pub fn wait_for_clock_generation(generation: u64, wall: SystemTime) -> Duration {
    let now = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    Duration::from_secs(generation)
        .saturating_sub(now)
        .min(Duration::from_secs(1))
}

/// This node's uuid from `hb_uuid`; a new random (RFC 4122 version 4) one is created and
/// stored atomically when the file does not exist.
pub fn load_or_create_uuid(state_dir: &Path) -> Result<[u8; 16], GenerationError> {
    let path = state_dir.join(UUID_FILE);
    if let Some(bytes) = read_optional(&path)? {
        return <[u8; 16]>::try_from(bytes.as_slice()).map_err(|_| GenerationError::Corrupt {
            path,
            reason: format!("it holds {} bytes", bytes.len()),
            fix: UUID_FIX,
        });
    }
    let mut uuid = [0u8; 16];
    getrandom::fill(&mut uuid).map_err(|e| GenerationError::Random(e.to_string()))?;
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    write_atomic(state_dir, UUID_FILE, &uuid)?;
    Ok(uuid)
}

/// The last generation seen from each peer; empty when `peer_generations` does not exist.
pub fn load_peer_generations(state_dir: &Path) -> Result<BTreeMap<String, u64>, GenerationError> {
    let path = state_dir.join(PEER_GENERATIONS_FILE);
    let Some(bytes) = read_optional(&path)? else {
        return Ok(BTreeMap::new());
    };
    let corrupt = |reason: String| GenerationError::Corrupt {
        path: path.clone(),
        reason,
        fix: PEER_FIX,
    };
    let text = String::from_utf8(bytes).map_err(|_| corrupt("it is not text".to_string()))?;
    let mut peers = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            [name, generation] => {
                let g = generation.parse().map_err(|_| {
                    corrupt(format!("line {}: bad generation {generation:?}", i + 1))
                })?;
                peers.insert((*name).to_string(), g);
            }
            _ => return Err(corrupt(format!("line {}: {line:?}", i + 1))),
        }
    }
    Ok(peers)
}

/// Raises the stored `hb_generation` to `generation` (never lowers it): a peer said it knows
/// a higher one for us, so the file had gone backwards (restored from a backup).
pub fn store_generation_at_least(state_dir: &Path, generation: u64) -> Result<(), GenerationError> {
    if read_generation(state_dir)?.is_some_and(|g| g >= generation) {
        return Ok(());
    }
    write_atomic(
        state_dir,
        GENERATION_FILE,
        format_generation(generation).as_bytes(),
    )
}

/// Records `generation` for `peer` (keeping the higher of the stored and given values) and
/// rewrites `peer_generations` atomically.
pub fn store_peer_generation(
    state_dir: &Path,
    peer: &str,
    generation: u64,
) -> Result<(), GenerationError> {
    if peer.is_empty() || peer.chars().any(char::is_whitespace) {
        return Err(GenerationError::BadPeerName {
            name: peer.to_string(),
        });
    }
    let mut peers = load_peer_generations(state_dir)?;
    let entry = peers.entry(peer.to_string()).or_insert(generation);
    *entry = (*entry).max(generation);
    let text: String = peers.iter().map(|(n, g)| format!("{n} {g}\n")).collect();
    write_atomic(state_dir, PEER_GENERATIONS_FILE, text.as_bytes())
}

/// Stores peer generations with [`store_peer_generation`] from one background thread, so
/// the caller (the node task, on the async runtime) never blocks on the file system. A single
/// writer, because the temporary file's name depends only on the pid.
pub struct PeerGenerationWriter {
    tx: mpsc::Sender<(String, u64)>,
    thread: JoinHandle<()>,
}

/// The name [`PeerGenerationWriter`] queues our own generation under: not a valid node name
/// (it holds whitespace), so it can never be a peer's.
const OWN: &str = " own";

impl PeerGenerationWriter {
    /// Starts the writer thread for `state_dir`.
    pub fn spawn(state_dir: PathBuf) -> io::Result<PeerGenerationWriter> {
        let (tx, rx) = mpsc::channel::<(String, u64)>();
        let thread = std::thread::Builder::new()
            .name("hbd-peer-gen".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // Coalesce what queued up meanwhile: one write per peer, highest value.
                    let mut batch = BTreeMap::new();
                    for (peer, generation) in std::iter::once(first).chain(rx.try_iter()) {
                        let g = batch.entry(peer).or_insert(generation);
                        *g = (*g).max(generation);
                    }
                    for (peer, generation) in batch {
                        if peer == OWN {
                            if let Err(e) = store_generation_at_least(&state_dir, generation) {
                                tracing::error!(error = %e, "cannot persist our new generation");
                            }
                            continue;
                        }
                        if let Err(e) = store_peer_generation(&state_dir, &peer, generation) {
                            tracing::warn!(node = %peer, error = %e, "cannot persist peer generation");
                        }
                    }
                }
            })?;
        Ok(PeerGenerationWriter { tx, thread })
    }

    /// Queues `generation` for `peer`; returns at once.
    pub fn store(&self, peer: &str, generation: u64) {
        if self.tx.send((peer.to_string(), generation)).is_err() {
            tracing::warn!(node = %peer, "cannot persist peer generation: the writer thread is gone");
        }
    }

    /// Queues our own new generation (see [`store_generation_at_least`]); returns at once.
    pub fn store_own(&self, generation: u64) {
        if self.tx.send((OWN.to_string(), generation)).is_err() {
            tracing::error!("cannot persist our new generation: the writer thread is gone");
        }
    }

    /// Writes what is still queued and stops the thread, waiting for it here: for callers
    /// on a thread of their own (the node thread), where blocking holds up nothing else.
    pub fn close_blocking(self) {
        let PeerGenerationWriter { tx, thread } = self;
        drop(tx);
        if thread.join().is_err() {
            tracing::warn!("the peer generation writer did not finish cleanly");
        }
    }

    /// Writes what is still queued and stops the thread, without blocking the runtime.
    /// (Dropping the writer instead lets the thread finish the queue on its own.)
    pub async fn close(self) {
        let PeerGenerationWriter { tx, thread } = self;
        drop(tx);
        if tokio::task::spawn_blocking(move || thread.join())
            .await
            .is_err()
        {
            tracing::warn!("the peer generation writer did not finish cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// heartbeat's own file from the ucast_md5 capture.
    const CAPTURED: &[u8] = include_bytes!("../../tests/fixtures/wire/node1.hb_generation");

    fn only_expected_files(dir: &Path, expected: &[&str]) {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(names, want, "no temporary files left behind");
    }

    #[test]
    fn format_is_byte_exact_with_heartbeat() {
        assert_eq!(CAPTURED, b"     1795305412\n");
        assert_eq!(format_generation(1_795_305_412).as_bytes(), CAPTURED);
        assert_eq!(format_generation(1).len(), 16);
        assert_eq!(parse_generation(CAPTURED), Ok(1_795_305_412));
    }

    #[test]
    fn increments_the_captured_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(GENERATION_FILE), CAPTURED).unwrap();
        assert_eq!(next_generation(dir.path()).unwrap(), 1_795_305_413);
        assert_eq!(
            fs::read(dir.path().join(GENERATION_FILE)).unwrap(),
            b"     1795305413\n"
        );
        assert_eq!(next_generation(dir.path()).unwrap(), 1_795_305_414);
        assert_eq!(read_generation(dir.path()).unwrap(), Some(1_795_305_414));
        only_expected_files(dir.path(), &[GENERATION_FILE]);
    }

    #[test]
    fn missing_file_starts_at_time_plus_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_generation(dir.path()).unwrap(), None);
        assert_eq!(
            next_generation_at(dir.path(), 1_795_305_000).unwrap(),
            1_795_305_001
        );
        assert_eq!(
            fs::read(dir.path().join(GENERATION_FILE)).unwrap(),
            b"     1795305001\n"
        );
        // The wall-clock variant gives something after the capture date.
        let other = tempfile::tempdir().unwrap();
        assert!(next_generation(other.path()).unwrap() > 1_795_305_412);
        only_expected_files(dir.path(), &[GENERATION_FILE]);
    }

    #[test]
    fn a_generation_from_the_clock_waits_for_its_second_so_a_quick_restart_gets_a_higher_one() {
        let at =
            |secs: u64, ms: u64| UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms);
        let dir = tempfile::tempdir().unwrap();
        // Derived at 1000.3 s: generation 1001, usable from 1001.0 s.
        let first = next_generation_at(dir.path(), 1000).unwrap();
        assert_eq!(first, 1001);
        assert_eq!(
            wait_for_clock_generation(first, at(1000, 300)),
            Duration::from_millis(700)
        );
        // Used from 1001.0 s on, killed, the state directory lost: the restart reads 1001 or
        // later and gets a higher generation than the run its peer knew.
        assert_eq!(
            wait_for_clock_generation(first, at(1001, 0)),
            Duration::ZERO
        );
        let again = tempfile::tempdir().unwrap();
        assert!(next_generation_at(again.path(), 1001).unwrap() > first);
        // A stored generation far from the clock never waits more than a second.
        assert_eq!(
            wait_for_clock_generation(u64::MAX / 2, at(1000, 0)),
            Duration::from_secs(1)
        );
        assert_eq!(wait_for_clock_generation(10, at(1000, 0)), Duration::ZERO);
    }

    #[test]
    fn tolerant_of_what_sscanf_reads() {
        assert_eq!(parse_generation(b"5\n"), Ok(5));
        assert_eq!(parse_generation(b"   42"), Ok(42));
    }

    #[test]
    fn corrupt_file_is_an_error_naming_file_and_fix() {
        for bad in [
            &b""[..],
            b"\n",
            b"     12a4\n",
            b"-5\n",
            b"\xff\xfe",
            b"99999999999999999999999\n",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(GENERATION_FILE);
            fs::write(&path, bad).unwrap();
            let err = next_generation(dir.path()).unwrap_err();
            assert!(
                matches!(err, GenerationError::Corrupt { .. }),
                "{bad:?}: {err}"
            );
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("right-aligned"), "{text}");
            // A plain message: no Rust debug dump (issue #15, defect 7).
            for dump in ["EscapeDebug", "Chain", "{", "Some("] {
                assert!(!text.contains(dump), "{text}");
            }
            // Never silently reset.
            assert_eq!(fs::read(&path).unwrap(), bad);
        }
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(GENERATION_FILE),
            format_generation(u64::MAX),
        )
        .unwrap();
        assert!(matches!(
            next_generation(dir.path()),
            Err(GenerationError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_generation_found_stale_is_raised_never_lowered() {
        let dir = tempfile::tempdir().unwrap();
        store_generation_at_least(dir.path(), 9).unwrap();
        assert_eq!(read_generation(dir.path()).unwrap(), Some(9));
        store_generation_at_least(dir.path(), 4).unwrap();
        assert_eq!(read_generation(dir.path()).unwrap(), Some(9));
        assert_eq!(next_generation(dir.path()).unwrap(), 10);
    }

    #[test]
    fn temporaries_left_by_a_crash_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        next_generation_at(d, 100).unwrap();
        for name in [".hb_generation.tmp.4242", ".peer_generations.tmp.7"] {
            fs::write(d.join(name), "partial").unwrap();
        }
        for keep in [".hb_generation.tmp.", ".other.tmp.1", "notes"] {
            fs::write(d.join(keep), "x").unwrap();
        }
        assert_eq!(remove_leftover_temporaries(d), 2);
        let mut left: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".hb_generation.tmp.",
                ".other.tmp.1",
                "hb_generation",
                "notes"
            ]
        );
        assert_eq!(read_generation(d).unwrap(), Some(101));
    }

    #[test]
    fn unwritable_dir_is_a_write_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nonexistent");
        let err = next_generation(&missing).unwrap_err();
        assert!(matches!(err, GenerationError::Write { .. }), "{err}");
        assert!(err.to_string().contains("nonexistent"));
    }

    #[test]
    fn uuid_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_uuid(dir.path()).unwrap();
        assert_eq!(a[6] >> 4, 4, "version 4");
        assert_eq!(a[8] >> 6, 2, "RFC 4122 variant");
        assert_eq!(fs::read(dir.path().join(UUID_FILE)).unwrap(), a);
        assert_eq!(load_or_create_uuid(dir.path()).unwrap(), a);
        only_expected_files(dir.path(), &[UUID_FILE]);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create_uuid(other.path()).unwrap(), a);
        // heartbeat's own raw uuid is read as is.
        let raw: [u8; 16] = *b"\xfdEx\xb8\xc9\x9dN_\x8f\xd2\xf5\xd5\x91\x94\xb6F";
        fs::write(other.path().join(UUID_FILE), raw).unwrap();
        assert_eq!(load_or_create_uuid(other.path()).unwrap(), raw);
        fs::write(other.path().join(UUID_FILE), b"short").unwrap();
        let err = load_or_create_uuid(other.path()).unwrap_err();
        assert!(err.to_string().contains("5 bytes"), "{err}");
    }

    #[test]
    fn peer_generations_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_peer_generations(dir.path()).unwrap().is_empty());
        store_peer_generation(dir.path(), "node2", 0x6b02_2fab).unwrap();
        store_peer_generation(dir.path(), "node1", 7).unwrap();
        store_peer_generation(dir.path(), "node2", 0x6b02_2fac).unwrap();
        // A lower value never lowers the stored one.
        store_peer_generation(dir.path(), "node2", 3).unwrap();
        let peers = load_peer_generations(dir.path()).unwrap();
        assert_eq!(
            peers,
            BTreeMap::from([("node1".to_string(), 7), ("node2".to_string(), 0x6b02_2fac)])
        );
        assert_eq!(
            fs::read_to_string(dir.path().join(PEER_GENERATIONS_FILE)).unwrap(),
            "node1 7\nnode2 1795305388\n"
        );
        only_expected_files(dir.path(), &[PEER_GENERATIONS_FILE]);
        assert!(matches!(
            store_peer_generation(dir.path(), "two words", 1),
            Err(GenerationError::BadPeerName { .. })
        ));
        fs::write(dir.path().join(PEER_GENERATIONS_FILE), "node1 x\n").unwrap();
        let err = load_peer_generations(dir.path()).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[tokio::test]
    async fn writer_stores_in_the_background_and_close_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let direct = tempfile::tempdir().unwrap();
        let writer = PeerGenerationWriter::spawn(dir.path().to_path_buf()).unwrap();
        for (peer, g) in [("node2", 7), ("node3", 9), ("node2", 12), ("node2", 10)] {
            writer.store(peer, g);
            store_peer_generation(direct.path(), peer, g).unwrap();
        }
        writer.close().await;
        let read = |d: &Path| fs::read(d.join(PEER_GENERATIONS_FILE)).unwrap();
        assert_eq!(
            read(dir.path()),
            read(direct.path()),
            "same data as written inline"
        );
        assert_eq!(read(dir.path()), b"node2 12\nnode3 9\n");
        only_expected_files(dir.path(), &[PEER_GENERATIONS_FILE]);
    }
}
