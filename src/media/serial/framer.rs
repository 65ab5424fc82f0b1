//! Reassembles heartbeat's classic text frames from the byte stream of a serial line
//! (HEARTBEAT-WIRE.md §8), without I/O: bytes in, complete `>>>\n … <<<\n` frames out.
//!
//! heartbeat's `serial_read` reads the line one byte at a time, splits it into lines at `\n`,
//! discards input until a line that starts with `>>>`, then collects lines until `<<<`. Its
//! tty is set up with `IGNCR`, so carriage returns never reach it. This framer does the
//! same, with three deliberate differences that only make it resynchronise sooner:
//!
//! * A line that **ends** in `>>>` starts a frame, and does so even while a frame is being
//!   collected. A sender that stopped in the middle of a line (killed, cable pulled, USB
//!   adapter reset) and starts again writes `…ld=5.0>>>\n`: heartbeat would glue the new
//!   frame onto the cut one and lose both; hbd loses only the cut one. The price is that a
//!   field value ending in `>>>` would cut its own frame; no heartbeat or hbd field does
//!   (names, numbers, hex, base64 and the `hbd_groups` text).
//! * A frame longer than [`MAX_FRAME_LEN`] (heartbeat `MAXMSG`) is abandoned as soon as it
//!   is too long, so line noise without a `<<<` cannot grow the buffer without bound.
//! * The 8th bit is kept (heartbeat's tty strips it with `ISTRIP`). No frame carries such
//!   a byte, so a noise byte with the 8th bit set fails the frame's authentication either
//!   way; keeping it spares us a termios flag serialport does not expose.
//!
//! What the framer hands out is only framed, not checked: the node's decoder verifies each
//! frame's inner `auth` field and drops what noise corrupted.

use crate::membership::wire::MAX_FRAME_LEN;

/// Start of a classic frame (`MSG_START`, §3.3).
const START: &[u8] = b">>>\n";
/// The line that ends a classic frame (`MSG_END` without its `\n`).
const END_LINE: &[u8] = b"<<<";
/// The marker a start line ends with.
const START_MARK: &[u8] = b">>>";

/// What the framer threw away, for `hactl status` and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FramerStats {
    /// Complete frames handed out.
    pub frames: u64,
    /// Bytes outside any frame (line noise, a peer's console chatter, a frame whose start
    /// was missed).
    pub noise_bytes: u64,
    /// Frames abandoned before their `<<<` line: a new frame started, or the device went
    /// away.
    pub cut_frames: u64,
    /// Frames abandoned for growing past [`MAX_FRAME_LEN`].
    pub oversize_frames: u64,
}

/// Where the framer is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Discarding input until a start line; counts the current line's bytes and how many
    /// `>` end it.
    Hunting { line_len: u64, trailing_gt: usize },
    /// Collecting a frame in the buffer; the current line starts at `line_start`.
    Collecting { line_start: usize },
}

/// The stream reassembler of one serial line (see the module doc).
#[derive(Debug)]
pub struct SerialFramer {
    /// The frame being collected, from its `>>>\n`.
    buf: Vec<u8>,
    state: State,
    /// Longest frame accepted, `<<<\n` included.
    max_len: usize,
    stats: FramerStats,
}

impl Default for SerialFramer {
    fn default() -> Self {
        SerialFramer::new()
    }
}

impl SerialFramer {
    /// A framer that accepts frames up to [`MAX_FRAME_LEN`].
    pub fn new() -> SerialFramer {
        SerialFramer::with_max_len(MAX_FRAME_LEN)
    }

    /// A framer that accepts frames up to `max_len` bytes (tests use a small bound).
    pub fn with_max_len(max_len: usize) -> SerialFramer {
        SerialFramer {
            buf: Vec::new(),
            state: State::Hunting {
                line_len: 0,
                trailing_gt: 0,
            },
            max_len: max_len.max(START.len() + END_LINE.len() + 1),
            stats: FramerStats::default(),
        }
    }

    /// What was handed out and thrown away so far.
    pub fn stats(&self) -> FramerStats {
        self.stats
    }

    /// Forgets a frame in progress (the device was closed or re-opened): its rest will never
    /// come, and whatever the device sends next starts a new stream.
    pub fn reset(&mut self) {
        if let State::Collecting { .. } = self.state {
            self.stats.cut_frames += 1;
        }
        self.hunt();
    }

    /// Feeds `bytes` read from the line; calls `on_frame` with each frame completed, in
    /// order. A frame split over several calls is carried over.
    pub fn push(&mut self, bytes: &[u8], mut on_frame: impl FnMut(Vec<u8>)) {
        for &b in bytes {
            if let Some(frame) = self.push_byte(b) {
                on_frame(frame);
            }
        }
    }

    /// One byte of the stream; returns a frame when `b` completed one.
    fn push_byte(&mut self, b: u8) -> Option<Vec<u8>> {
        // heartbeat's tty has IGNCR: a CR never reaches the reader.
        if b == b'\r' {
            return None;
        }
        match self.state {
            State::Hunting {
                line_len,
                trailing_gt,
            } => {
                if b == b'\n' {
                    if trailing_gt >= START_MARK.len() {
                        // Whatever stood before the marker on this line was noise.
                        self.stats.noise_bytes += line_len - START_MARK.len() as u64;
                        self.start_frame();
                    } else {
                        self.stats.noise_bytes += line_len + 1;
                        self.hunt();
                    }
                } else {
                    self.state = State::Hunting {
                        line_len: line_len + 1,
                        trailing_gt: if b == b'>' { trailing_gt + 1 } else { 0 },
                    };
                }
                None
            }
            State::Collecting { line_start } => {
                self.buf.push(b);
                if b == b'\n' {
                    let line = &self.buf[line_start..self.buf.len() - 1];
                    if line == END_LINE {
                        self.stats.frames += 1;
                        let frame = std::mem::take(&mut self.buf);
                        self.hunt();
                        return Some(frame);
                    }
                    if line.ends_with(START_MARK) {
                        // The sender started over before finishing this frame.
                        self.stats.cut_frames += 1;
                        self.start_frame();
                        return None;
                    }
                    self.state = State::Collecting {
                        line_start: self.buf.len(),
                    };
                }
                if self.buf.len() >= self.max_len {
                    // Not complete at the limit, so longer than it: give it up, and free
                    // the memory a burst of noise may have taken.
                    self.stats.oversize_frames += 1;
                    self.buf = Vec::new();
                    self.hunt();
                }
                None
            }
        }
    }

    /// Starts collecting a frame: the buffer holds `>>>\n`.
    fn start_frame(&mut self) {
        self.buf.clear();
        self.buf.extend_from_slice(START);
        self.state = State::Collecting {
            line_start: self.buf.len(),
        };
    }

    /// Discards input until the next start line.
    fn hunt(&mut self) {
        self.buf.clear();
        self.state = State::Hunting {
            line_len: 0,
            trailing_gt: 0,
        };
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // random test input: truncation is the point
pub(crate) mod tests {
    use super::*;

    /// The two directions of the captured heartbeat 3.0.6 serial link (socat -x hex dump,
    /// HEARTBEAT-WIRE.md §8): what node1 wrote and what node2 wrote.
    pub(crate) fn captured_streams() -> [Vec<u8>; 2] {
        let text = include_str!("../../../tests/fixtures/wire/serial_md5/serial_socat_x.txt");
        let mut streams = [Vec::new(), Vec::new()];
        let mut dir = 0;
        // Headers `> date length=…` / `< …`, hex lines starting with a space, and socat's
        // own log line at the end.
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix('>') {
                assert!(rest.contains("length="), "{line}");
                dir = 0;
            } else if let Some(rest) = line.strip_prefix('<') {
                assert!(rest.contains("length="), "{line}");
                dir = 1;
            } else if line.starts_with(' ') {
                for hex in line.split_whitespace() {
                    streams[dir].push(u8::from_str_radix(hex, 16).expect("hex byte"));
                }
            }
        }
        streams
    }

    /// The frames of a stream cut at each `<<<\n`: what a framer must hand out.
    pub(crate) fn split_frames(stream: &[u8]) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut start = 0;
        for i in 0..stream.len() {
            if stream[..=i].ends_with(b"\n<<<\n") {
                frames.push(stream[start..=i].to_vec());
                start = i + 1;
            }
        }
        assert_eq!(start, stream.len(), "stream ends with a whole frame");
        frames
    }

    /// The capture's authkeys (`auth 1`, `1 md5 wirelab-secret`, as in
    /// tests/fixtures/wire/serial_md5/node1.authkeys).
    pub(crate) fn capture_keys() -> crate::config::AuthKeys {
        use crate::config::{AuthKey, AuthKeys, AuthMethod};
        let text = include_str!("../../../tests/fixtures/wire/serial_md5/node1.authkeys");
        assert!(text.contains("1 md5 wirelab-secret"), "{text}");
        AuthKeys {
            active: 1,
            keys: [(
                1,
                AuthKey {
                    method: AuthMethod::Md5,
                    secret: b"wirelab-secret".to_vec(),
                },
            )]
            .into(),
        }
    }

    fn feed_all(framer: &mut SerialFramer, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for c in chunks {
            framer.push(c, |f| out.push(f));
        }
        out
    }

    #[test]
    fn captured_streams_reassemble_at_every_split() {
        let streams = captured_streams();
        let mut total = 0;
        for stream in &streams {
            let expected = split_frames(stream);
            assert!(expected.iter().all(|f| f.starts_with(START)));
            total += expected.len();
            // In one piece, and byte by byte.
            let mut f = SerialFramer::new();
            assert_eq!(feed_all(&mut f, &[stream]), expected);
            assert_eq!(f.stats().frames, expected.len() as u64);
            assert_eq!(f.stats().noise_bytes, 0);
            let mut f = SerialFramer::new();
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            assert_eq!(feed_all(&mut f, &bytes), expected);
        }
        // The 123 frames the reference tool verified.
        assert_eq!(total, 123);
        // Split in two at every byte boundary of the first 1200 bytes (several frames).
        let stream = &streams[0][..];
        let head = &stream[..split_frames(stream)[..6]
            .iter()
            .map(Vec::len)
            .sum::<usize>()];
        let expected = split_frames(head);
        for at in 0..=head.len() {
            let mut f = SerialFramer::new();
            let got = feed_all(&mut f, &[&head[..at], &head[at..]]);
            assert_eq!(got, expected, "split at {at}");
        }
    }

    #[test]
    fn captured_frames_decode_after_framing() {
        let keys = capture_keys();
        for stream in captured_streams() {
            let mut f = SerialFramer::new();
            let frames = feed_all(&mut f, &[&stream]);
            for frame in &frames {
                let msg = crate::membership::wire::decode(frame, &keys).expect("verifies");
                // encode_classic writes exactly what heartbeat wrote on the line.
                assert_eq!(&crate::membership::wire::encode_classic(&msg, &keys), frame);
            }
        }
    }

    #[test]
    fn noise_and_cut_frames_between_valid_ones() {
        let streams = captured_streams();
        let frames = split_frames(&streams[0]);
        let (a, b, c) = (&frames[0], &frames[1], &frames[2]);
        let mut stream = Vec::new();
        stream.extend_from_slice(b"\x00\xff\xfe garbage <<<\n>>\n");
        stream.extend_from_slice(a);
        // Line noise, a stray end marker, binary garbage.
        stream.extend_from_slice(b"~~\x1b[0m\r\n<<<\n\x80\x81\x00");
        // A frame cut in the middle of a line, then a new one glued to it.
        stream.extend_from_slice(&b[..b.len() / 2]);
        stream.extend_from_slice(b);
        // A frame cut at a line boundary, then a new one.
        let cut = b.iter().position(|&x| x == b'\n').unwrap() + 1;
        stream.extend_from_slice(&a[..cut + 10]);
        stream.extend_from_slice(b"\n");
        stream.extend_from_slice(c);
        // CRs are ignored anywhere (IGNCR).
        let with_cr: Vec<u8> = a
            .iter()
            .flat_map(|&x| if x == b'\n' { vec![b'\r', x] } else { vec![x] })
            .collect();
        stream.extend_from_slice(&with_cr);
        // Noise before the marker on the start line.
        stream.extend_from_slice(b"junk");
        stream.extend_from_slice(c);

        for chunk in [1, 7, stream.len()] {
            let mut f = SerialFramer::new();
            let pieces: Vec<&[u8]> = stream.chunks(chunk).collect();
            let got = feed_all(&mut f, &pieces);
            assert_eq!(
                got,
                vec![a.clone(), b.clone(), c.clone(), a.clone(), c.clone()]
            );
            let s = f.stats();
            assert_eq!(s.frames, 5);
            assert_eq!(s.cut_frames, 2);
            assert_eq!(s.oversize_frames, 0);
            assert!(s.noise_bytes >= 20, "{s:?}");
        }
    }

    #[test]
    fn oversize_frame_is_abandoned_and_the_next_one_kept() {
        let frames = split_frames(&captured_streams()[1]);
        let good = &frames[0];
        let mut f = SerialFramer::with_max_len(good.len());
        let mut stream = b">>>\n".to_vec();
        for i in 0..200 {
            stream.extend_from_slice(format!("field{i}=value\n").as_bytes());
        }
        stream.extend_from_slice(b"<<<\n");
        stream.extend_from_slice(good);
        let got = feed_all(&mut f, &[&stream]);
        assert_eq!(got, vec![good.clone()]);
        assert_eq!(f.stats().oversize_frames, 1);
        // A frame exactly at the limit passes.
        let mut f = SerialFramer::with_max_len(good.len());
        assert_eq!(feed_all(&mut f, &[good]), vec![good.clone()]);
        // One byte over it does not.
        let mut f = SerialFramer::with_max_len(good.len() - 1);
        assert!(feed_all(&mut f, &[good]).is_empty());
        assert_eq!(f.stats().oversize_frames, 1);
    }

    #[test]
    fn the_real_limit_is_heartbeats_maxmsg() {
        let mut f = SerialFramer::new();
        let mut stream = b">>>\n".to_vec();
        stream.resize(MAX_FRAME_LEN + 10, b'x');
        stream.extend_from_slice(b"\n<<<\n");
        assert!(feed_all(&mut f, &[&stream]).is_empty());
        assert_eq!(f.stats().oversize_frames, 1);
        assert!(f.buf.capacity() < MAX_FRAME_LEN, "memory given back");
    }

    #[test]
    fn reset_forgets_a_frame_in_progress() {
        let frames = split_frames(&captured_streams()[0]);
        let a = &frames[0];
        let mut f = SerialFramer::new();
        assert!(feed_all(&mut f, &[&a[..40]]).is_empty());
        f.reset();
        // The rest of the old frame is noise; the next frame is whole.
        let got = feed_all(&mut f, &[&a[40..], a]);
        assert_eq!(got, vec![a.clone()]);
        assert_eq!(f.stats().cut_frames, 1);
        assert_eq!(f.stats().noise_bytes, (a.len() - 40) as u64);
    }

    #[test]
    fn random_noise_never_panics_and_valid_frames_survive() {
        let frames = split_frames(&captured_streams()[0]);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"<>\n\r=x\x00\xff";
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for frame in frames.iter().take(40) {
            let n = rnd() % 30;
            for _ in 0..n {
                stream.push(alphabet[(rnd() % alphabet.len() as u64) as usize]);
            }
            // A newline ends any noise line, so the frame's start line stands alone.
            stream.push(b'\n');
            stream.extend_from_slice(frame);
            expected.push(frame.clone());
        }
        let mut f = SerialFramer::new();
        let got = feed_all(&mut f, &[&stream]);
        // Noise may itself hold a tiny `>>>`…`<<<` frame; the decoder refuses those.
        let real: Vec<Vec<u8>> = got.into_iter().filter(|f| f.len() > 100).collect();
        assert_eq!(real, expected);
    }
}
