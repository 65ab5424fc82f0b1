#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]
//! heartbeat 3.0.6 frames: the netstring form every UDP/ICMP medium carries and the classic
//! text form of the serial medium, with their authentication and the envelope fields.
//!
//! Implements HEARTBEAT-WIRE.md:
//! * §3.2 the netstring frame (`###\n` + `len:(T)name=value,`… + `%%%\n` + `len:<n> <hex>,`);
//! * §3.3 the classic text form (`>>>\n` + `name=value\n` lines + `<<<\n`; `\n` in strings as
//!   0x13, binary as base64, `(T)` only when the type is not 0, empty values refused);
//! * §3.5 receiver tolerance (a frame may end at the trailer's `,`; trailing bytes ignored);
//! * §4.3 what is hashed: the netstring trailer covers the body; the inner `auth` field
//!   (msgfmt classic) covers the NOHEAD classic text of every field but `auth`;
//! * §4.4 verification, with hbd's deliberate choice of key (see [`decode`]);
//! * §5 the envelope fields ([`stamp`]) and §7.1 the fields a received message must carry
//!   ([`read_envelope`]);
//! * §8 classic framing for the serial medium ([`encode_classic`], [`decode_classic`]).
//!
//! Nested values (`FT_STRUCT`, `FT_LIST`, `FT_COMPRESS`, `FT_UNCOMPRESS`) are opaque: they are
//! kept as the raw bytes received and written back unchanged. The heartbeat core protocol never
//! produces them; hbd only carries them so that re-encoding is exact. Whole-message
//! compression (`_compressed_payload`, §3.4) is likewise not expanded.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

use super::auth;
use super::message::{Field, FieldType, Message};
use crate::config::model::{AuthKeys, AuthMethod, MsgFormat};

/// Largest frame accepted or worth sending: heartbeat `MAXMSG` (256 KiB, §1).
pub const MAX_FRAME_LEN: usize = 256 * 1024;

/// Start of a netstring body (`MSG_START_NETSTRING`, §3.2).
const NETSTRING_START: &[u8] = b"###\n";
/// End of a netstring body (`MSG_END_NETSTRING`, §3.2).
const NETSTRING_END: &[u8] = b"%%%\n";
/// Start of a classic text message (`MSG_START`, §3.3).
const CLASSIC_START: &[u8] = b">>>\n";
/// End of a classic text message (`MSG_END`, §3.3).
const CLASSIC_END: &[u8] = b"<<<\n";
/// Stands for `\n` inside a string value in classic text (`SPECIAL_SYM`, §3.3).
const SPECIAL_SYM: u8 = 0x13;
/// Name of the inner classic authentication field (`F_AUTH`, §4.3b).
pub const AUTH_FIELD: &str = "auth";
/// Message types with this prefix carry no `seq`/`ld` and bypass sequencing (`NOSEQ_PREFIX`, §5).
pub const NOSEQ_PREFIX: &str = "NS_";
/// Longest decimal netstring length accepted: enough for [`MAX_FRAME_LEN`].
const MAX_LEN_DIGITS: usize = 7;

/// Why a received frame was refused. Each variant says what was received and where, so
/// the drop can be logged and counted usefully.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The frame is larger than heartbeat's `MAXMSG`.
    #[error("frame of {len} bytes is larger than the {MAX_FRAME_LEN}-byte limit")]
    TooLong {
        /// Received length.
        len: usize,
    },
    /// Neither `###\n` nor `>>>\n` at the start.
    #[error("not a heartbeat frame: starts with \"{start}\"")]
    NotAFrame {
        /// The first bytes received, escaped.
        start: String,
    },
    /// A netstring whose length, `:` or closing `,` is wrong or runs past the frame.
    #[error("malformed netstring at byte {offset}")]
    BadNetstring {
        /// Offset of the netstring in the frame.
        offset: usize,
    },
    /// A field whose `(T)` type is not a digit 0–5.
    #[error("field at byte {offset} has type '{}', expected a digit 0-5", (*.digit as char).escape_default())]
    BadFieldType {
        /// Offset of the field in the frame.
        offset: usize,
        /// The byte found where the type digit belongs.
        digit: u8,
    },
    /// A netstring field without `(T)`, without `=`, or with an empty or non-UTF-8 name.
    #[error("malformed field at byte {offset}: expected (T)name=value")]
    BadField {
        /// Offset of the field in the frame.
        offset: usize,
    },
    /// The body ends before `%%%\n` (netstring) or `<<<\n` (classic).
    #[error("frame ends without its end marker")]
    MissingEnd,
    /// Nothing follows `%%%\n`: heartbeat drops such frames (§3.5).
    #[error("netstring frame has no authentication trailer")]
    MissingTrailer,
    /// An authentication value that is not `<index> <hexdigest>`.
    #[error("malformed authentication value \"{value}\", expected \"<index> <hexdigest>\"")]
    BadAuthValue {
        /// The value received, escaped.
        value: String,
    },
    /// The frame was signed with a key index not configured here.
    #[error("frame signed with key index {index}, which is not in authkeys")]
    UnknownKeyIndex {
        /// Index received.
        index: u32,
    },
    /// Signed with a crc key while the active key authenticates (a leftover line of
    /// authkeys): refused, since anyone can compute a crc.
    #[error(
        "frame signed with crc key index {index}, refused: the active key authenticates and a crc can be forged by anyone"
    )]
    WeakKeyRefused {
        /// Index the frame claimed.
        index: u8,
    },
    /// The digest does not match: wrong key, or the frame was altered.
    #[error("authentication failed for key index {index}: digest mismatch")]
    BadDigest {
        /// Index the frame claimed.
        index: u8,
    },
    /// A classic text frame without the inner `auth` field it is verified by.
    #[error("classic frame has no auth field")]
    MissingAuth,
    /// A classic text line that is not `[(T)]name=value`.
    #[error("malformed classic line {line}: expected [(T)]name=value")]
    BadClassicLine {
        /// 1-based line number in the frame (`>>>` is line 1).
        line: usize,
    },
    /// A classic text field with nothing after `=`: heartbeat drops the whole message (§3.3).
    #[error("classic field \"{name}\" has an empty value")]
    EmptyValue {
        /// Field name.
        name: String,
    },
    /// A classic binary value that is not standard padded base64.
    #[error("classic field \"{name}\" is not valid base64")]
    BadBase64 {
        /// Field name.
        name: String,
    },
    /// A field every message must carry is absent (§7.1).
    #[error("message has no \"{name}\" field")]
    MissingField {
        /// Field name.
        name: &'static str,
    },
    /// A required field whose value does not parse (§7.1).
    #[error("field \"{name}\" has invalid value \"{value}\"")]
    BadFieldValue {
        /// Field name.
        name: &'static str,
        /// The value received, escaped.
        value: String,
    },
}

/// Escapes up to 64 bytes for an error message.
fn escaped(bytes: &[u8]) -> String {
    let mut s: String = bytes
        .iter()
        .take(64)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if bytes.len() > 64 {
        s.push('…');
    }
    s
}

// ---------------------------------------------------------------------------------------------
// base64 (standard alphabet, padded), as glue `base64.c` writes it for binary classic values.

/// Standard base64 alphabet.
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard padded base64 of `data`.
#[cfg(test)]
fn base64_encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    base64_encode_into(&mut out, data);
    out
}

/// Value of one base64 character.
fn base64_value(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    }))
}

/// Decodes standard padded base64; `None` unless it is exactly what [`base64_encode`] writes.
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let groups = text.len() / 4;
    for (i, g) in text.chunks(4).enumerate() {
        let pad = g.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != groups) {
            return None;
        }
        let mut n: u32 = 0;
        for &c in &g[..4 - pad] {
            n = (n << 6) | base64_value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        // Non-canonical encodings (stray bits under the padding) are refused.
        if (pad == 1 && bytes[2] != 0) || (pad == 2 && (bytes[1] != 0 || bytes[2] != 0)) {
            return None;
        }
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Fields, keys and byte sinks shared by the encoder and the decoder

/// One field, borrowed: what the encoder and the signer read, whatever holds the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldRef<'a> {
    /// Wire type.
    pub ftype: FieldType,
    /// Name: non-empty, no `=`.
    pub name: &'a str,
    /// Raw value bytes.
    pub value: &'a [u8],
}

impl<'a> FieldRef<'a> {
    /// A string field `name=value`.
    pub fn string(name: &'a str, value: &'a [u8]) -> FieldRef<'a> {
        FieldRef {
            ftype: FieldType::String,
            name,
            value,
        }
    }
}

/// An ordered list of fields: a [`Message`], a [`MessageView`] or a slice of [`FieldRef`]s.
/// Encoding, signing and [`read_envelope`] work on any of them, so a hot path can avoid
/// building an owned [`Message`].
pub trait FieldList {
    /// Number of fields.
    fn field_count(&self) -> usize;

    /// Field `i` (`i < field_count()`).
    fn field_at(&self, i: usize) -> FieldRef<'_>;

    /// Value of the first field called `name` (heartbeat lookups return the first).
    fn value_of(&self, name: &str) -> Option<&[u8]> {
        (0..self.field_count())
            .map(|i| self.field_at(i))
            .find(|f| f.name == name)
            .map(|f| f.value)
    }
}

impl FieldList for Message {
    fn field_count(&self) -> usize {
        self.fields.len()
    }

    fn field_at(&self, i: usize) -> FieldRef<'_> {
        let f = &self.fields[i];
        FieldRef {
            ftype: f.ftype,
            name: &f.name,
            value: &f.value,
        }
    }
}

impl FieldList for [FieldRef<'_>] {
    fn field_count(&self) -> usize {
        self.len()
    }

    fn field_at(&self, i: usize) -> FieldRef<'_> {
        self[i]
    }
}

/// The fields of `list` in order.
fn fields_of<L: FieldList + ?Sized>(list: &L) -> impl Iterator<Item = FieldRef<'_>> {
    (0..list.field_count()).map(move |i| list.field_at(i))
}

/// Where encoded bytes go: a buffer, or straight into a digest (nothing is copied).
trait Sink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// How many bytes a [`StagedHasher`] gathers before hashing them (eight SHA blocks).
const STAGE_LEN: usize = 512;

/// A digest fed through a stack buffer. The classic text is written in many small pieces
/// (a name, `=`, a value, `\n`), and a hash absorbs one large slice several times faster
/// than dozens of small ones, each of which it would copy into its own block buffer.
struct StagedHasher {
    /// The digest of everything flushed so far.
    hasher: auth::Hasher,
    /// Bytes written but not yet hashed, in `staged[..len]`.
    staged: [u8; STAGE_LEN],
    /// How many bytes of `staged` are used.
    len: usize,
}

impl StagedHasher {
    fn new(hasher: auth::Hasher) -> StagedHasher {
        StagedHasher {
            hasher,
            staged: [0; STAGE_LEN],
            len: 0,
        }
    }

    fn flush(&mut self) {
        self.hasher.update(&self.staged[..self.len]);
        self.len = 0;
    }

    /// The digest of every byte written.
    fn finish(mut self) -> auth::HexDigest {
        self.flush();
        self.hasher.finish()
    }
}

impl Sink for StagedHasher {
    fn put(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > STAGE_LEN {
            self.flush();
        }
        if self.len == 0 && bytes.len() >= STAGE_LEN / 8 {
            // Large enough to hash as it is (and nothing staged comes before it).
            self.hasher.update(bytes);
            return;
        }
        self.staged[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
}

/// Authentication keys prepared once (the keyed HMAC states), so that signing and
/// verifying a frame cost only the hash of the frame. Build it when the configuration is
/// loaded and pass it to [`encode_with`], [`encode_stamped`] and [`decode_view`]; the
/// results are byte-identical to [`encode`] / [`decode`] with the same [`AuthKeys`].
#[derive(Debug, Clone)]
pub struct FrameKeys {
    /// Which preparation this is (a clone keeps it: same keys), so that a [`FramePrefix`]
    /// hashed under other keys is never reused.
    id: u64,
    /// Index that signs outbound frames.
    active: u8,
    /// Every configured key by index that frames are accepted with.
    keys: Vec<(u8, auth::PreparedKey)>,
    /// Indexes of crc keys left in authkeys beside an active key that authenticates: frames
    /// signed with them are refused, since anyone can compute a crc (issue #15, defect 6).
    refused: Vec<u8>,
    /// Whether the active key's method is an HMAC ([`FrameKeys::authenticates`]).
    authenticates: bool,
}

impl FrameKeys {
    /// Prepares every key of `keys`.
    pub fn new(keys: &AuthKeys) -> FrameKeys {
        static PREPARED: AtomicU64 = AtomicU64::new(0);
        let authenticating = keys
            .keys
            .get(&keys.active)
            .is_some_and(|k| k.method != AuthMethod::Crc);
        let weak = |i: &u8, method: AuthMethod| {
            authenticating && method == AuthMethod::Crc && *i != keys.active
        };
        FrameKeys {
            id: PREPARED.fetch_add(1, Ordering::Relaxed),
            active: keys.active,
            keys: keys
                .keys
                .iter()
                .filter(|(i, k)| !weak(i, k.method))
                .map(|(&i, k)| (i, auth::PreparedKey::new(k.method, &k.secret)))
                .collect(),
            refused: keys
                .keys
                .iter()
                .filter(|(i, k)| weak(i, k.method))
                .map(|(&i, _)| i)
                .collect(),
            authenticates: authenticating,
        }
    }

    /// Whether accepted frames are authenticated: the active method is an HMAC, so only a
    /// holder of a secret can sign (crc frames can be forged by anyone on the path, and what
    /// they carry must never be persisted).
    pub fn authenticates(&self) -> bool {
        self.authenticates
    }

    /// The key configured for `index`.
    fn get(&self, index: u8) -> Option<&auth::PreparedKey> {
        self.keys.iter().find(|(i, _)| *i == index).map(|(_, k)| k)
    }

    /// The active index and its key, if the keys really contain it.
    fn active(&self) -> Option<(u8, &auth::PreparedKey)> {
        self.get(self.active).map(|k| (self.active, k))
    }
}

/// An authentication value `"<index> <digest>"`, formatted on the stack.
struct AuthValue {
    /// The text in `text[..len]`.
    text: [u8; 4 + auth::MAX_DIGEST_HEX],
    /// Used length.
    len: usize,
}

impl AuthValue {
    /// `"<index> <digest>"` as `format!("{} {}")` writes it.
    fn new(index: u8, digest: &auth::HexDigest) -> AuthValue {
        let mut v = AuthValue {
            text: [0; 4 + auth::MAX_DIGEST_HEX],
            len: 0,
        };
        let digits = NumberText::new(u64::from(index));
        let d = digest.as_bytes();
        for part in [digits.as_bytes(), b" ", d] {
            v.text[v.len..v.len + part.len()].copy_from_slice(part);
            v.len += part.len();
        }
        v
    }

    /// The value bytes.
    fn as_bytes(&self) -> &[u8] {
        &self.text[..self.len]
    }
}

/// A number as decimal or lower-case hex text, on the stack.
struct NumberText {
    /// Digits in `digits[start..]`.
    digits: [u8; 20],
    /// First used byte.
    start: usize,
}

impl NumberText {
    /// `n` in decimal (`{}`).
    fn new(n: u64) -> NumberText {
        NumberText::in_base(n, 10)
    }

    /// `n` in lower-case hex without padding (`{:x}`, heartbeat `%lx`).
    fn hex(n: u64) -> NumberText {
        NumberText::in_base(n, 16)
    }

    /// `n` written in `base` (10 or 16).
    fn in_base(mut n: u64, base: u64) -> NumberText {
        let mut d = NumberText {
            digits: [0; 20],
            start: 20,
        };
        loop {
            d.start -= 1;
            d.digits[d.start] = b"0123456789abcdef"[(n % base) as usize];
            n /= base;
            if n == 0 {
                return d;
            }
        }
    }

    /// The digits.
    fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Appends `netstring(content)` = `len:content,`.
fn push_netstring(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.extend_from_slice(NumberText::new(len as u64).as_bytes());
    out.push(b':');
    for p in parts {
        out.extend_from_slice(p);
    }
    out.push(b',');
}

/// The netstring body `###\n` + `len:(T)name=value,`… + `%%%\n`, without trailer (§3.2).
///
/// This is exactly the input of the trailer digest (§4.3a).
pub fn encode_body(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame_capacity(msg));
    encode_body_with_auth(&mut out, msg, None);
    out
}

/// An upper bound of the encoded frame size of `fields`, so the output never reallocates.
fn frame_capacity<L: FieldList + ?Sized>(fields: &L) -> usize {
    let per_field: usize = fields_of(fields)
        .map(|f| f.name.len() + f.value.len() + 4 + 2 + MAX_LEN_DIGITS)
        .sum();
    // Start and end markers, an inner `auth` netstring and the trailer netstring.
    2 * 4 + per_field + 2 * (MAX_LEN_DIGITS + 2 + 9 + 4 + auth::MAX_DIGEST_HEX)
}

/// Appends [`encode_body`] of `fields` to `out`, with the first `auth` field's value
/// replaced by `auth` (or `auth` appended last when there is none): what [`add_inner_auth`]
/// followed by [`encode_body`] writes, without copying the message.
fn encode_body_with_auth<L: FieldList + ?Sized>(
    out: &mut Vec<u8>,
    fields: &L,
    auth: Option<&[u8]>,
) {
    out.extend_from_slice(NETSTRING_START);
    push_body_rest(out, fields, auth);
}

/// Appends the netstrings of `fields`, the first `auth` field's value replaced by `auth` (or
/// `auth` appended last when there is none), and the end marker: [`encode_body_with_auth`]
/// after its start marker.
fn push_body_rest<L: FieldList + ?Sized>(out: &mut Vec<u8>, fields: &L, auth: Option<&[u8]>) {
    let mut auth = auth;
    for f in fields_of(fields) {
        match auth {
            Some(value) if f.name == AUTH_FIELD => {
                push_field_netstring(out, FieldRef::string(AUTH_FIELD, value));
                auth = None;
            }
            _ => push_field_netstring(out, f),
        }
    }
    if let Some(value) = auth {
        push_field_netstring(out, FieldRef::string(AUTH_FIELD, value));
    }
    out.extend_from_slice(NETSTRING_END);
}

/// Appends one field's netstring `len:(T)name=value,` (§3.2).
fn push_field_netstring(out: &mut Vec<u8>, f: FieldRef<'_>) {
    let prefix = [b'(', b'0' + f.ftype.digit(), b')'];
    push_netstring(out, &[&prefix, f.name.as_bytes(), b"=", f.value]);
}

/// Writes standard padded base64 of `data` to `out`, in stack-sized pieces.
fn base64_encode_into(out: &mut impl Sink, data: &[u8]) {
    let mut piece = [0u8; 64];
    for block in data.chunks(48) {
        let mut n = 0;
        for chunk in block.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            piece[n] = B64[(v >> 18) as usize & 63];
            piece[n + 1] = B64[(v >> 12) as usize & 63];
            piece[n + 2] = if chunk.len() > 1 {
                B64[(v >> 6) as usize & 63]
            } else {
                b'='
            };
            piece[n + 3] = if chunk.len() > 2 {
                B64[v as usize & 63]
            } else {
                b'='
            };
            n += 4;
        }
        out.put(&piece[..n]);
    }
}

/// Writes one classic text line `[(T)]name=value\n` (§3.3).
fn push_classic_line(out: &mut impl Sink, f: FieldRef<'_>) {
    if f.ftype != FieldType::String {
        out.put(&[b'(', b'0' + f.ftype.digit(), b')']);
    }
    out.put(f.name.as_bytes());
    out.put(b"=");
    match f.ftype {
        FieldType::String => {
            let mut rest = f.value;
            while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                out.put(&rest[..nl]);
                out.put(&[SPECIAL_SYM]);
                rest = &rest[nl + 1..];
            }
            out.put(rest);
        }
        FieldType::Binary | FieldType::Compress => base64_encode_into(out, f.value),
        // Opaque nested values are written as carried (see the module doc).
        FieldType::Struct | FieldType::List | FieldType::Uncompress => out.put(f.value),
    }
    out.put(b"\n");
}

/// Writes the classic text the inner `auth` field signs (see [`classic_auth_input`]).
fn push_classic_auth_input<L: FieldList + ?Sized>(out: &mut impl Sink, fields: &L) {
    for f in fields_of(fields).filter(|f| f.name != AUTH_FIELD) {
        push_classic_line(out, f);
    }
}

/// The exact bytes the inner `auth` field signs: the NOHEAD classic text of every field
/// except those named `auth`, each line ending in `\n` (§4.3b, `msg2string_buf`).
pub fn classic_auth_input(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    push_classic_auth_input(&mut out, msg);
    out
}

/// Sets the inner `auth` field to `"<active index> <digest(classic text)>"` with
/// `ha_msg_mod` semantics: an existing `auth` field is replaced where it stands, otherwise
/// it is appended last (heartbeat `add_msg_auth`, §4.3b).
pub fn add_inner_auth(msg: &mut Message, keys: &AuthKeys) {
    if let Some(value) = inner_auth_value(msg, &FrameKeys::new(keys)) {
        msg.set(FieldType::String, AUTH_FIELD, value.as_bytes().to_vec());
    }
}

/// The inner `auth` field's value for `fields`: `"<active index> <digest(classic text)>"`.
fn inner_auth_value<L: FieldList + ?Sized>(fields: &L, keys: &FrameKeys) -> Option<AuthValue> {
    keys.active()
        .map(|(index, key)| classic_auth_after(key.hasher(), index, fields))
}

/// `"<index> <digest>"` where the digest goes on from `state` over the classic text of
/// `fields` (those named `auth` left out): the inner `auth` value, from a fresh keyed state
/// or from one that has already taken the leading fields ([`FramePrefix`]).
fn classic_auth_after<L: FieldList + ?Sized>(
    state: auth::Hasher,
    index: u8,
    fields: &L,
) -> AuthValue {
    let mut h = StagedHasher::new(state);
    push_classic_auth_input(&mut h, fields);
    AuthValue::new(index, &h.finish())
}

/// Whether heartbeat would refuse to add the inner auth field (`must_use_netstring`): the
/// message holds nested or compressed values, which have no faithful classic form.
fn must_use_netstring<L: FieldList + ?Sized>(fields: &L) -> bool {
    fields_of(fields).any(|f| {
        matches!(
            f.ftype,
            FieldType::Struct | FieldType::Compress | FieldType::Uncompress
        )
    })
}

/// Encodes `msg` as heartbeat's UDP/ICMP frame, byte-exact with heartbeat 3.0.6 (§3.1, §4.3).
///
/// With [`MsgFormat::Classic`] the inner `auth` field is (re)computed first, replacing an
/// existing one in place or else appended last, unless the message has nested values
/// (heartbeat omits it then too). The trailer is signed with the ACTIVE key. If the active
/// index is missing from `keys` (impossible for a validated config) no trailer is written,
/// as heartbeat does without an auth method, and peers will drop the frame.
pub fn encode(msg: &Message, keys: &AuthKeys, fmt: MsgFormat) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame_capacity(msg));
    encode_into(&mut out, msg, &FrameKeys::new(keys), fmt);
    out
}

/// [`encode`] of any field list with prepared keys, appended to `out` (clear and reuse one
/// buffer to send without allocating). Output is byte-identical to [`encode`].
pub fn encode_with<L: FieldList + ?Sized>(
    out: &mut Vec<u8>,
    fields: &L,
    keys: &FrameKeys,
    fmt: MsgFormat,
) {
    out.reserve(frame_capacity(fields));
    encode_into(out, fields, keys, fmt);
}

/// The encoder behind [`encode`] and [`encode_with`].
fn encode_into<L: FieldList + ?Sized>(
    out: &mut Vec<u8>,
    fields: &L,
    keys: &FrameKeys,
    fmt: MsgFormat,
) {
    let start = out.len();
    out.extend_from_slice(NETSTRING_START);
    finish_frame(out, start, fields, fields, FrameDigests::new(keys, fmt));
}

/// Both digests of a frame being written, each taken as far as the body written so far.
#[derive(Clone, Default)]
struct FrameDigests {
    /// The inner `auth` digest over the classic text of the fields written (msgfmt classic,
    /// with an active key).
    classic: Option<auth::Hasher>,
    /// The trailer digest over the body bytes written (with an active key).
    trailer: Option<auth::Hasher>,
    /// The active key's index, which both values name.
    index: u8,
}

impl FrameDigests {
    /// Both digests before any byte, under the active key of `keys` (none without one), the
    /// inner one only in msgfmt classic.
    fn new(keys: &FrameKeys, fmt: MsgFormat) -> FrameDigests {
        let key = keys.active().map(|(_, key)| key);
        FrameDigests {
            classic: key
                .filter(|_| fmt == MsgFormat::Classic)
                .map(|k| k.hasher()),
            trailer: key.map(|k| k.hasher()),
            index: keys.active,
        }
    }
}

/// Writes the rest of a frame whose body so far is in `out` and taken by `digests` up to
/// `hashed` (the trailer digest has not seen `out[hashed..]` yet): the netstrings of `rest`,
/// the inner `auth` (unless a field of `all`, the whole message, is nested: heartbeat omits
/// it then), the end marker and the trailer.
fn finish_frame<R, A>(out: &mut Vec<u8>, hashed: usize, rest: &R, all: &A, digests: FrameDigests)
where
    R: FieldList + ?Sized,
    A: FieldList + ?Sized,
{
    let index = digests.index;
    let inner = digests
        .classic
        .filter(|_| !must_use_netstring(all))
        .map(|state| classic_auth_after(state, index, rest));
    push_body_rest(out, rest, inner.as_ref().map(AuthValue::as_bytes));
    if let Some(mut trailer) = digests.trailer {
        trailer.update(&out[hashed..]);
        let value = AuthValue::new(index, &trailer.finish());
        push_netstring(out, &[value.as_bytes()]);
    }
}

/// Encodes `msg` in classic text form for the serial medium (§8): recomputes the inner
/// `auth` field with the active key, then writes `>>>\n` lines `<<<\n`, without NUL.
///
/// Like heartbeat it writes empty values as `name=`, which receivers refuse; use
/// [`try_encode_classic`] to be told instead.
pub fn encode_classic(msg: &Message, keys: &AuthKeys) -> Vec<u8> {
    let mut m = msg.clone();
    add_inner_auth(&mut m, keys);
    let mut out = Vec::from(CLASSIC_START);
    for f in fields_of(&m) {
        push_classic_line(&mut out, f);
    }
    out.extend_from_slice(CLASSIC_END);
    out
}

/// [`encode_classic`], refusing a message a classic receiver would drop (an empty value).
pub fn try_encode_classic(msg: &Message, keys: &AuthKeys) -> Result<Vec<u8>, WireError> {
    match msg.fields.iter().find(|f| f.value.is_empty()) {
        Some(f) => Err(WireError::EmptyValue {
            name: f.name.clone(),
        }),
        None => Ok(encode_classic(msg, keys)),
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Parses a decimal number of at most `max_digits` digits.
fn parse_decimal(digits: &[u8], max_digits: usize) -> Option<u64> {
    if digits.is_empty() || digits.len() > max_digits || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Reads `len:content,` at `pos`; returns the content range and the position after the `,`
/// (`peel_netstring`).
fn peel_netstring(buf: &[u8], pos: usize) -> Result<(usize, usize, usize), WireError> {
    let bad = || WireError::BadNetstring { offset: pos };
    let rest = buf.get(pos..).ok_or_else(bad)?;
    let colon = rest
        .iter()
        .take(MAX_LEN_DIGITS + 1)
        .position(|&b| b == b':')
        .ok_or_else(bad)?;
    let len = parse_decimal(&rest[..colon], MAX_LEN_DIGITS).ok_or_else(bad)?;
    let start = pos + colon + 1;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| start.checked_add(l))
        .ok_or_else(bad)?;
    if buf.get(end) != Some(&b',') {
        return Err(bad());
    }
    Ok((start, end, end + 1))
}

/// Parses one `(T)name=value` netstring field found at `offset`.
fn parse_netstring_field(content: &[u8], offset: usize) -> Result<ViewField<'_>, WireError> {
    let bad = || WireError::BadField { offset };
    if content.len() < 3 || content[0] != b'(' || content[2] != b')' {
        return Err(bad());
    }
    let digit = content[1];
    let ftype = digit
        .checked_sub(b'0')
        .and_then(FieldType::from_digit)
        .ok_or(WireError::BadFieldType { offset, digit })?;
    let rest = &content[3..];
    let eq = rest.iter().position(|&b| b == b'=').ok_or_else(bad)?;
    let name = std::str::from_utf8(&rest[..eq]).map_err(|_| bad())?;
    if name.is_empty() {
        return Err(bad());
    }
    Ok(ViewField {
        ftype,
        name,
        value: Cow::Borrowed(&rest[eq + 1..]),
    })
}

/// Parses `"<index> <digest>"` (`sscanf("%d %s")`, strictly: one space, no sign).
fn parse_auth_value(value: &[u8]) -> Result<(u32, &[u8]), WireError> {
    let bad = || WireError::BadAuthValue {
        value: escaped(value),
    };
    let sp = value.iter().position(|&b| b == b' ').ok_or_else(bad)?;
    let index = parse_decimal(&value[..sp], 10)
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(bad)?;
    let digest = &value[sp + 1..];
    if digest.is_empty() || digest.iter().any(|b| b.is_ascii_whitespace()) {
        return Err(bad());
    }
    Ok((index, digest))
}

/// Checks `digest` over the bytes `write` produces with the key configured for `index`.
fn verify_with_index(
    keys: &FrameKeys,
    index: u32,
    write: impl FnOnce(&mut StagedHasher),
    digest: &[u8],
) -> Result<(), WireError> {
    let idx = u8::try_from(index).map_err(|_| WireError::UnknownKeyIndex { index })?;
    if keys.refused.contains(&idx) {
        return Err(WireError::WeakKeyRefused { index: idx });
    }
    let key = keys.get(idx).ok_or(WireError::UnknownKeyIndex { index })?;
    let mut h = StagedHasher::new(key.hasher());
    write(&mut h);
    if h.finish().matches(digest) {
        Ok(())
    } else {
        Err(WireError::BadDigest { index: idx })
    }
}

/// One field of a [`MessageView`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct ViewField<'a> {
    /// Wire type.
    ftype: FieldType,
    /// Name, borrowed from the frame.
    name: &'a str,
    /// Value: borrowed from a netstring frame, decoded (unescaped, base64) from classic text.
    value: Cow<'a, [u8]>,
}

/// A decoded, authenticated message that borrows its names and values from the received
/// frame: what [`decode_view`] returns, without a heap copy per field. Look fields up with
/// [`MessageView::get`]/[`MessageView::get_str`], read the envelope with [`read_envelope`],
/// or make an owned [`Message`] with [`MessageView::to_message`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageView<'a> {
    /// Fields in wire order.
    fields: Vec<ViewField<'a>>,
}

impl MessageView<'_> {
    /// Value of the first field called `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.value_of(name)
    }

    /// Value of the first field called `name`, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The message type (`t`).
    pub fn msg_type(&self) -> Option<&str> {
        self.get_str("t")
    }

    /// An owned copy, equal to what [`decode`] returns for the same frame.
    pub fn to_message(&self) -> Message {
        Message {
            fields: self
                .fields
                .iter()
                .map(|f| Field {
                    ftype: f.ftype,
                    name: f.name.to_string(),
                    value: f.value.to_vec(),
                })
                .collect(),
        }
    }
}

impl FieldList for MessageView<'_> {
    fn field_count(&self) -> usize {
        self.fields.len()
    }

    fn field_at(&self, i: usize) -> FieldRef<'_> {
        let f = &self.fields[i];
        FieldRef {
            ftype: f.ftype,
            name: f.name,
            value: &f.value,
        }
    }
}

/// Decodes and authenticates one received frame (§3.2, §3.3, §4.4).
///
/// * A netstring frame (`###\n`) is verified by its trailer. The trailer digest is checked
///   with the key of the index the frame names. heartbeat 3.0.6 (`hb_compute_authentication`)
///   instead uses the received index's *method* with its locally *active* key; in every
///   working heartbeat pair both are the same key, and using the received index's key also
///   lets a cluster roll keys over (accept the new index before switching `auth N`). The
///   inner `auth` field, if any, is carried as data and not checked, as in heartbeat.
/// * A classic text frame (`>>>\n`…`<<<\n`, accepted on UDP by heartbeat) is verified by its
///   inner `auth` field, with the received index's key (`isauthentic`).
///
/// Bytes after the trailer (or after `<<<\n`, e.g. the NUL heartbeat appends) are ignored.
/// Frames over [`MAX_FRAME_LEN`] are refused. Never panics: every malformed input becomes a
/// [`WireError`].
pub fn decode(frame: &[u8], keys: &AuthKeys) -> Result<Message, WireError> {
    decode_any(frame, &FrameKeys::new(keys)).map(|v| v.to_message())
}

/// [`decode`] with prepared keys, borrowing from `frame` instead of copying every field:
/// the same accept/reject decisions and errors, the same fields.
pub fn decode_view<'a>(frame: &'a [u8], keys: &FrameKeys) -> Result<MessageView<'a>, WireError> {
    decode_any(frame, keys)
}

/// The decoder behind [`decode`] and [`decode_view`].
fn decode_any<'a>(frame: &'a [u8], keys: &FrameKeys) -> Result<MessageView<'a>, WireError> {
    if frame.len() > MAX_FRAME_LEN {
        return Err(WireError::TooLong { len: frame.len() });
    }
    if frame.starts_with(NETSTRING_START) {
        decode_netstring(frame, keys)
    } else if frame.starts_with(CLASSIC_START) {
        decode_classic_view(frame, keys)
    } else {
        Err(WireError::NotAFrame {
            start: escaped(&frame[..frame.len().min(8)]),
        })
    }
}

/// Decodes a netstring frame and checks its trailer (see [`decode`]).
fn decode_netstring<'a>(frame: &'a [u8], keys: &FrameKeys) -> Result<MessageView<'a>, WireError> {
    let mut msg = MessageView {
        fields: Vec::with_capacity(16),
    };
    let mut pos = NETSTRING_START.len();
    loop {
        if frame[pos..].starts_with(NETSTRING_END) {
            break;
        }
        if pos >= frame.len() {
            return Err(WireError::MissingEnd);
        }
        let (start, end, next) = peel_netstring(frame, pos)?;
        msg.fields
            .push(parse_netstring_field(&frame[start..end], pos)?);
        pos = next;
    }
    let body_end = pos + NETSTRING_END.len();
    if body_end >= frame.len() {
        return Err(WireError::MissingTrailer);
    }
    let (start, end, _) = peel_netstring(frame, body_end)?;
    let (index, digest) = parse_auth_value(&frame[start..end])?;
    verify_with_index(keys, index, |h| h.put(&frame[..body_end]), digest)?;
    Ok(msg)
}

/// Parses a classic text frame (`>>>\n`…`<<<\n`) without authenticating it.
fn parse_classic(frame: &[u8]) -> Result<MessageView<'_>, WireError> {
    if frame.len() > MAX_FRAME_LEN {
        return Err(WireError::TooLong { len: frame.len() });
    }
    if !frame.starts_with(CLASSIC_START) {
        return Err(WireError::NotAFrame {
            start: escaped(&frame[..frame.len().min(8)]),
        });
    }
    let mut msg = MessageView::default();
    let mut pos = CLASSIC_START.len();
    let mut line_no = 1;
    loop {
        let rest = &frame[pos..];
        // A line counts only when complete: a frame cut before `<<<\n` is refused.
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(WireError::MissingEnd)?;
        let line = &rest[..nl];
        pos += nl + 1;
        line_no += 1;
        if line == &CLASSIC_END[..3] {
            return Ok(msg);
        }
        // heartbeat skips stray CR/LF between lines.
        if line.is_empty() || line == b"\r" {
            continue;
        }
        msg.fields.push(parse_classic_line(line, line_no)?);
    }
}

/// Parses one `[(T)]name=value` classic line (`ha_msg_add_nv_depth`).
fn parse_classic_line(line: &[u8], line_no: usize) -> Result<ViewField<'_>, WireError> {
    let bad = || WireError::BadClassicLine { line: line_no };
    let eq = line.iter().position(|&b| b == b'=').ok_or_else(bad)?;
    let (mut name, value) = (&line[..eq], &line[eq + 1..]);
    let mut ftype = FieldType::String;
    if name.len() >= 3 && name[0] == b'(' && name[2] == b')' {
        let digit = name[1];
        ftype = digit
            .checked_sub(b'0')
            .and_then(FieldType::from_digit)
            .ok_or(WireError::BadFieldType {
                offset: line_no,
                digit,
            })?;
        name = &name[3..];
    }
    let name = std::str::from_utf8(name).map_err(|_| bad())?;
    if name.is_empty() {
        return Err(bad());
    }
    if value.is_empty() {
        return Err(WireError::EmptyValue {
            name: name.to_string(),
        });
    }
    let value = match ftype {
        FieldType::String if value.contains(&SPECIAL_SYM) => Cow::Owned(
            value
                .iter()
                .map(|&b| if b == SPECIAL_SYM { b'\n' } else { b })
                .collect(),
        ),
        FieldType::String => Cow::Borrowed(value),
        FieldType::Binary | FieldType::Compress => {
            Cow::Owned(base64_decode(value).ok_or_else(|| WireError::BadBase64 {
                name: name.to_string(),
            })?)
        }
        FieldType::Struct | FieldType::List | FieldType::Uncompress => Cow::Borrowed(value),
    };
    Ok(ViewField { ftype, name, value })
}

/// Decodes a classic text frame (serial medium, §8, or classic UDP) and verifies its inner
/// `auth` field with the key of the index it names. Bytes after `<<<\n` are ignored.
/// ([`WireError::BadFieldType`] carries the line number as its offset here.)
pub fn decode_classic(frame: &[u8], keys: &AuthKeys) -> Result<Message, WireError> {
    decode_classic_view(frame, &FrameKeys::new(keys)).map(|v| v.to_message())
}

/// [`decode_classic`], borrowing from the frame.
fn decode_classic_view<'a>(
    frame: &'a [u8],
    keys: &FrameKeys,
) -> Result<MessageView<'a>, WireError> {
    let msg = parse_classic(frame)?;
    let auth_value = msg.get(AUTH_FIELD).ok_or(WireError::MissingAuth)?;
    let (index, digest) = parse_auth_value(auth_value)?;
    verify_with_index(keys, index, |h| push_classic_auth_input(h, &msg), digest)?;
    Ok(msg)
}

// ---------------------------------------------------------------------------------------------
// Envelope (§5, §7.1)

/// The fields heartbeat's master process adds to every outbound message
/// (`add_control_msg_fields`, §5), borrowing its texts so a sender need not clone its name
/// and load line for every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeRef<'a> {
    /// Local node name (`src`).
    pub src: &'a str,
    /// Local node uuid (`srcuuid`, 16 raw bytes).
    pub srcuuid: [u8; 16],
    /// Sequence number (`seq`, hex); ignored for `NS_*` messages, which have none.
    pub seq: Option<u64>,
    /// This start's generation (`hg`, hex).
    pub generation: u64,
    /// Send time, seconds since the epoch (`ts`, hex); kept unchanged on retransmission.
    pub ts: u64,
    /// First line of `/proc/loadavg` (`ld`), `n/a` if unreadable; ignored for `NS_*`.
    pub load: Option<&'a str>,
    /// `hopfudge + nodecount` (`ttl`, decimal); vestigial but sent.
    pub ttl: u32,
    /// Destination node's uuid (`destuuid`), written only if the message has `dest`.
    pub dest_uuid: Option<[u8; 16]>,
}

/// Whether a message type bypasses sequencing (`NS_*`, §5).
pub fn is_unsequenced(msg_type: &str) -> bool {
    msg_type.starts_with(NOSEQ_PREFIX)
}

/// The envelope fields for one message: the numbers as text on the stack, and which
/// optional fields the message takes. Built once by [`stamp`] and [`encode_stamped`]; the
/// field values borrow from it, so it lives in the caller's frame.
struct EnvelopeFields<'e> {
    /// The envelope.
    env: EnvelopeRef<'e>,
    /// `seq` in hex.
    seq: Option<NumberText>,
    /// `hg` in hex.
    generation: NumberText,
    /// `ts` in hex.
    ts: NumberText,
    /// `ttl` in decimal.
    ttl: NumberText,
    /// The message has a `dest` field, so `destuuid` is written.
    has_dest: bool,
    /// The message type is sequenced (not `NS_*`), so `seq` and `ld` are written.
    sequenced: bool,
}

impl<'e> EnvelopeFields<'e> {
    /// The envelope `env` for a message whose own fields are `fields`.
    fn new<L: FieldList + ?Sized>(env: &EnvelopeRef<'e>, fields: &L) -> EnvelopeFields<'e> {
        let msg_type = fields
            .value_of("t")
            .and_then(|v| std::str::from_utf8(v).ok());
        EnvelopeFields {
            env: *env,
            seq: env.seq.map(NumberText::hex),
            generation: NumberText::hex(env.generation),
            ts: NumberText::hex(env.ts),
            ttl: NumberText::new(u64::from(env.ttl)),
            has_dest: fields.value_of("dest").is_some(),
            sequenced: !msg_type.is_some_and(is_unsequenced),
        }
    }

    /// Calls `set` for each envelope field in heartbeat's order (see [`stamp`]).
    fn for_each<'s>(&'s self, mut set: impl FnMut(FieldType, &'static str, &'s [u8])) {
        let env = &self.env;
        if self.has_dest
            && let Some(uuid) = &env.dest_uuid
        {
            set(FieldType::Binary, "destuuid", uuid);
        }
        set(FieldType::String, "src", env.src.as_bytes());
        set(FieldType::Binary, "srcuuid", &env.srcuuid);
        if self.sequenced
            && let Some(seq) = &self.seq
        {
            set(FieldType::String, "seq", seq.as_bytes());
        }
        set(FieldType::String, "hg", self.generation.as_bytes());
        set(FieldType::String, "ts", self.ts.as_bytes());
        if self.sequenced
            && let Some(load) = env.load
        {
            set(FieldType::String, "ld", load.as_bytes());
        }
        set(FieldType::String, "ttl", self.ttl.as_bytes());
    }
}

/// Adds the envelope fields in heartbeat's order with `ha_msg_mod` semantics: fields already
/// present keep their position, missing ones are appended as `destuuid` (only if `dest` is
/// present), `src`, `srcuuid`, `seq` (not for `NS_*`), `hg`, `ts`, `ld` (not for `NS_*`),
/// `ttl` (§5). The inner `auth` field is added later by [`encode`].
pub fn stamp(msg: &mut Message, env: &EnvelopeRef<'_>) {
    EnvelopeFields::new(env, msg)
        .for_each(|ftype, name, value| msg.set(ftype, name, value.to_vec()));
}

/// [`stamp`] then [`encode_with`], without building a [`Message`]: `specific` are the
/// message's own fields (e.g. `t`, `st`, ... of a `status`), the envelope is applied to a
/// borrowed copy of them, and the frame is appended to `out`. Byte-identical to
/// `stamp(&mut msg, env)` followed by `encode(&msg, keys, fmt)`; clear and reuse `out` to
/// send a heartbeat with a single small allocation.
pub fn encode_stamped(
    out: &mut Vec<u8>,
    specific: &[FieldRef<'_>],
    env: &EnvelopeRef<'_>,
    keys: &FrameKeys,
    fmt: MsgFormat,
) {
    let envelope = EnvelopeFields::new(env, specific);
    let fields = stamped_fields(specific, &envelope);
    encode_with(out, fields.as_slice(), keys, fmt);
}

/// `specific` with the envelope applied as [`stamp`] applies it (`ha_msg_mod`).
fn stamped_fields<'a>(
    specific: &[FieldRef<'a>],
    envelope: &'a EnvelopeFields<'_>,
) -> Vec<FieldRef<'a>> {
    let mut fields: Vec<FieldRef<'a>> = Vec::with_capacity(specific.len() + 9);
    fields.extend_from_slice(specific);
    envelope.for_each(|ftype, name, value| {
        // `ha_msg_mod`, as `Message::set`.
        match fields.iter_mut().find(|f| f.name == name) {
            Some(f) => {
                f.ftype = ftype;
                f.value = value;
            }
            None => fields.push(FieldRef { ftype, name, value }),
        }
    });
    fields
}

/// The leading fields of the frames a sender writes, kept encoded and hashed between frames.
///
/// A node's heartbeats differ from one to the next only from `seq` on (`t`, `st`, `dt`, the
/// group reports, `src` and `srcuuid` come first and rarely change), so
/// [`encode_stamped_prefixed`] copies the encoded leading fields and resumes both digests
/// (the inner `auth` and the trailer) from their state after them: a frame costs the
/// encoding and hashing of its tail only. Whatever differs (a leading field, the keys, the
/// format) makes it rebuild first, so the frame is always byte-identical to
/// [`encode_stamped`]'s. One per sender; start from `FramePrefix::default()`.
#[derive(Default)]
pub struct FramePrefix {
    /// The [`FrameKeys`] id and format it was built under; `None` before the first frame.
    built_for: Option<(u64, MsgFormat)>,
    /// The leading fields it holds: type, name and value.
    fields: Vec<(FieldType, String, Vec<u8>)>,
    /// `###\n` and the leading fields' netstrings.
    body: Vec<u8>,
    /// Both digests after the leading fields: the inner one after their classic lines, the
    /// trailer after `body`.
    digests: FrameDigests,
    /// How many times it was built (the tests check that frames reuse it).
    builds: u64,
}

impl std::fmt::Debug for FramePrefix {
    /// The digest states are keyed: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramePrefix")
            .field("fields", &self.fields.len())
            .field("body_len", &self.body.len())
            .field("builds", &self.builds)
            .finish_non_exhaustive()
    }
}

impl FramePrefix {
    /// Whether it holds exactly `head`, encoded and hashed under `keys` and `fmt`.
    fn holds(&self, head: &[FieldRef<'_>], keys: &FrameKeys, fmt: MsgFormat) -> bool {
        self.built_for == Some((keys.id, fmt))
            && self.fields.len() == head.len()
            && self
                .fields
                .iter()
                .zip(head)
                .all(|((ftype, name, value), f)| {
                    *ftype == f.ftype && name == f.name && value.as_slice() == f.value
                })
    }

    /// Encodes and hashes `head` (which holds no `auth` field) under `keys` and `fmt`.
    fn build(&mut self, head: &[FieldRef<'_>], keys: &FrameKeys, fmt: MsgFormat) {
        self.fields.clear();
        self.fields.extend(
            head.iter()
                .map(|f| (f.ftype, f.name.to_string(), f.value.to_vec())),
        );
        self.body.clear();
        self.body.extend_from_slice(NETSTRING_START);
        for f in head {
            push_field_netstring(&mut self.body, *f);
        }
        let mut digests = FrameDigests::new(keys, fmt);
        digests.classic = digests.classic.map(|state| {
            let mut h = StagedHasher::new(state);
            push_classic_auth_input(&mut h, head);
            h.flush();
            h.hasher
        });
        if let Some(trailer) = &mut digests.trailer {
            trailer.update(&self.body);
        }
        self.digests = digests;
        self.built_for = Some((keys.id, fmt));
        self.builds += 1;
    }
}

/// [`encode_stamped`] for a sender that keeps a [`FramePrefix`]: the same bytes, with the
/// fields before `seq` taken from `prefix` (rebuilt first when they changed). A message
/// without `seq` (`NS_*`), or with an `auth` field before it, is encoded in full.
pub fn encode_stamped_prefixed(
    out: &mut Vec<u8>,
    specific: &[FieldRef<'_>],
    env: &EnvelopeRef<'_>,
    keys: &FrameKeys,
    fmt: MsgFormat,
    prefix: &mut FramePrefix,
) {
    let envelope = EnvelopeFields::new(env, specific);
    let fields = stamped_fields(specific, &envelope);
    let split = fields.iter().position(|f| f.name == "seq");
    let Some(split) = split.filter(|&n| !fields[..n].iter().any(|f| f.name == AUTH_FIELD)) else {
        encode_with(out, fields.as_slice(), keys, fmt);
        return;
    };
    let (head, tail) = fields.split_at(split);
    if !prefix.holds(head, keys, fmt) {
        prefix.build(head, keys, fmt);
    }
    out.reserve(frame_capacity(fields.as_slice()));
    out.extend_from_slice(&prefix.body);
    finish_frame(
        out,
        out.len(),
        tail,
        fields.as_slice(),
        prefix.digests.clone(),
    );
}

/// Parses a `%lx` value as heartbeat writes it: 1–16 hex digits, nothing else.
pub fn parse_hex_u64(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 16 {
        return None;
    }
    value.iter().try_fold(0u64, |n, &c| {
        let digit = char::from(c).to_digit(16)?;
        Some((n << 4) | u64::from(digit))
    })
}

/// The envelope of a received message, checked as `process_clustermsg` does (§7.1). Its
/// texts borrow from the message it was read from, so reading it allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEnvelope<'a> {
    /// Message type (`t`).
    pub msg_type: &'a str,
    /// Sender node name (`src`).
    pub src: &'a str,
    /// Sender uuid, if present and 16 bytes (heartbeat ignores a malformed one).
    pub srcuuid: Option<[u8; 16]>,
    /// Sequence number; `None` only for `NS_*` messages.
    pub seq: Option<u64>,
    /// Sender generation (`hg`); `None` only for `NS_*` messages without it (e.g. `NS_st`).
    pub generation: Option<u64>,
    /// Send time (`ts`), non-zero.
    pub ts: u64,
    /// Destination node name (`dest`), if addressed.
    pub dest: Option<String>,
    /// Destination uuid, if present and 16 bytes; takes precedence over `dest` (§7.3 step 8).
    pub dest_uuid: Option<[u8; 16]>,
}

impl ReceivedEnvelope<'_> {
    /// Whether the message bypasses sequencing (`NS_*`).
    pub fn is_unsequenced(&self) -> bool {
        is_unsequenced(self.msg_type)
    }

    /// `(seq, generation)` of a sequenced message, `None` for `NS_*` ones (whatever they
    /// carry: they bypass sequencing). [`read_envelope`] guarantees both for the others.
    pub fn sequence(&self) -> Option<(u64, u64)> {
        if self.is_unsequenced() {
            return None;
        }
        self.seq.zip(self.generation)
    }
}

/// A required UTF-8 field.
fn required_str<'a, L: FieldList + ?Sized>(
    msg: &'a L,
    name: &'static str,
) -> Result<&'a str, WireError> {
    let v = msg.value_of(name).ok_or(WireError::MissingField { name })?;
    std::str::from_utf8(v).map_err(|_| WireError::BadFieldValue {
        name,
        value: escaped(v),
    })
}

/// An optional hex field; present but malformed is an error.
fn hex_field<L: FieldList + ?Sized>(msg: &L, name: &'static str) -> Result<Option<u64>, WireError> {
    match msg.value_of(name) {
        None => Ok(None),
        Some(v) => parse_hex_u64(v)
            .map(Some)
            .ok_or_else(|| WireError::BadFieldValue {
                name,
                value: escaped(v),
            }),
    }
}

/// A 16-byte uuid field, if present with the right length.
fn uuid_field<L: FieldList + ?Sized>(msg: &L, name: &str) -> Option<[u8; 16]> {
    msg.value_of(name)
        .and_then(|v| <[u8; 16]>::try_from(v).ok())
}

/// Reads and checks the envelope of an authenticated message (§7.1, §7.3 step 2): `t`, `src`
/// and a non-zero hex `ts` are required; `seq` and `hg` (hex) are required except for
/// `NS_*` types.
pub fn read_envelope<L: FieldList + ?Sized>(msg: &L) -> Result<ReceivedEnvelope<'_>, WireError> {
    let msg_type = required_str(msg, "t")?;
    let src = required_str(msg, "src")?;
    if src.is_empty() {
        return Err(WireError::BadFieldValue {
            name: "src",
            value: String::new(),
        });
    }
    let ts = hex_field(msg, "ts")?.ok_or(WireError::MissingField { name: "ts" })?;
    if ts == 0 {
        return Err(WireError::BadFieldValue {
            name: "ts",
            value: "0".to_string(),
        });
    }
    let seq = hex_field(msg, "seq")?;
    let generation = hex_field(msg, "hg")?;
    if !is_unsequenced(msg_type) {
        if seq.is_none() {
            return Err(WireError::MissingField { name: "seq" });
        }
        if generation.is_none() {
            return Err(WireError::MissingField { name: "hg" });
        }
    }
    let dest = msg
        .value_of("dest")
        .map(|v| String::from_utf8_lossy(v).into_owned());
    Ok(ReceivedEnvelope {
        msg_type,
        src,
        srcuuid: uuid_field(msg, "srcuuid"),
        seq,
        generation,
        ts,
        dest,
        dest_uuid: uuid_field(msg, "destuuid"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_digest_equals_the_digest_of_the_whole_text() {
        let key = auth::PreparedKey::new(crate::config::model::AuthMethod::Sha1, b"stage");
        let text: Vec<u8> = (0..3 * STAGE_LEN as u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let whole = key.digest(&text);
        // Pieces of every size class: tiny, under and over the direct-hash size, a stage.
        for piece in [
            1,
            3,
            63,
            64,
            65,
            200,
            STAGE_LEN - 1,
            STAGE_LEN,
            STAGE_LEN + 1,
        ] {
            let mut staged = StagedHasher::new(key.hasher());
            for chunk in text.chunks(piece) {
                staged.put(chunk);
            }
            assert_eq!(
                staged.finish().as_str(),
                whole.as_str(),
                "pieces of {piece}"
            );
        }
        // Mixed sizes in one text.
        let mut staged = StagedHasher::new(key.hasher());
        let (mut at, mut size) = (0, 1);
        while at < text.len() {
            let end = (at + size).min(text.len());
            staged.put(&text[at..end]);
            at = end;
            size = size * 5 % 700 + 1;
        }
        assert_eq!(staged.finish().as_str(), whole.as_str());
    }
    use crate::config::model::{AuthKey, AuthMethod};
    use std::collections::BTreeMap;

    /// The captured test vectors (copied from shared/wire/captures/testvectors.json).
    const VECTORS: &str = include_str!("../../tests/fixtures/wire/testvectors.json");

    /// Test-only parser for the simple `auth N` / `N method [key]` text in the vectors.
    fn authkeys(text: &str) -> AuthKeys {
        let mut active = None;
        let mut keys = BTreeMap::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words[0] == "auth" {
                active = Some(words[1].parse().unwrap());
                continue;
            }
            let method = match words[1] {
                "crc" => AuthMethod::Crc,
                "md5" => AuthMethod::Md5,
                "sha1" => AuthMethod::Sha1,
                "sha256" => AuthMethod::Sha256,
                m => panic!("method {m}"),
            };
            let secret = words
                .get(2)
                .map(|k| k.as_bytes().to_vec())
                .unwrap_or_default();
            keys.insert(words[0].parse().unwrap(), AuthKey { method, secret });
        }
        AuthKeys {
            active: active.unwrap(),
            keys,
        }
    }

    fn one_key(index: u8, method: AuthMethod, secret: &[u8]) -> AuthKeys {
        AuthKeys {
            active: index,
            keys: BTreeMap::from([(
                index,
                AuthKey {
                    method,
                    secret: secret.to_vec(),
                },
            )]),
        }
    }

    struct Vector {
        name: String,
        serial: bool,
        netstring_fmt: bool,
        payload: Vec<u8>,
        keys: AuthKeys,
        fields: Option<Vec<Field>>,
        trailer_auth: Option<String>,
        inner_auth: Option<String>,
        classic_input: Vec<u8>,
    }

    fn vectors() -> Vec<Vector> {
        let json: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
        json.as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
                let capture = s("capture").unwrap();
                let fields = v.get("fields").map(|fs| {
                    fs.as_array()
                        .unwrap()
                        .iter()
                        .map(|f| {
                            let ftype =
                                FieldType::from_digit(f[0].as_u64().unwrap() as u8).unwrap();
                            let raw = f[2].as_str().unwrap();
                            let value = if ftype == FieldType::Binary {
                                hex::decode(raw).unwrap()
                            } else {
                                raw.as_bytes().to_vec()
                            };
                            Field {
                                ftype,
                                name: f[1].as_str().unwrap().to_string(),
                                value,
                            }
                        })
                        .collect()
                });
                Vector {
                    name: format!(
                        "{capture}#{}",
                        v.get("frame").map_or(0, |f| f.as_u64().unwrap())
                    ),
                    serial: s("medium").as_deref() == Some("serial"),
                    netstring_fmt: capture.starts_with("bcast_crc_netstring"),
                    payload: hex::decode(s("payload_hex").unwrap()).unwrap(),
                    keys: authkeys(&s("authkeys").unwrap()),
                    fields,
                    trailer_auth: s("trailer_auth"),
                    inner_auth: s("inner_auth"),
                    classic_input: hex::decode(s("classic_auth_input_hex").unwrap_or_default())
                        .unwrap(),
                }
            })
            .collect()
    }

    #[test]
    fn all_captured_vectors_decode_verify_and_reencode_exactly() {
        let vs = vectors();
        assert_eq!(vs.len(), 40);
        let (mut crc, mut md5, mut sha1, mut serial) = (0, 0, 0, 0);
        for v in &vs {
            let msg = decode(&v.payload, &v.keys).unwrap_or_else(|e| panic!("{}: {e}", v.name));
            match v.keys.active_key().method {
                AuthMethod::Crc => crc += 1,
                AuthMethod::Md5 => md5 += 1,
                AuthMethod::Sha1 => sha1 += 1,
                AuthMethod::Sha256 => {}
            }
            if let Some(fields) = &v.fields {
                assert_eq!(&msg.fields, fields, "{}", v.name);
            }
            assert_eq!(
                msg.get_str(AUTH_FIELD),
                v.inner_auth.as_deref(),
                "{}",
                v.name
            );
            if v.inner_auth.is_some() {
                assert_eq!(classic_auth_input(&msg), v.classic_input, "{}", v.name);
            }
            let again = if v.serial {
                serial += 1;
                assert!(decode_classic(&v.payload, &v.keys).is_ok());
                encode_classic(&msg, &v.keys)
            } else {
                let fmt = if v.netstring_fmt {
                    MsgFormat::Netstring
                } else {
                    MsgFormat::Classic
                };
                // Check the trailer we compute is the captured one.
                let body = encode_body(&msg);
                let key = v.keys.active_key();
                assert_eq!(
                    Some(format!(
                        "{} {}",
                        v.keys.active,
                        auth::digest(key.method, &key.secret, &body)
                    )),
                    v.trailer_auth,
                    "{}",
                    v.name
                );
                encode(&msg, &v.keys, fmt)
            };
            assert_eq!(again, v.payload, "{}", v.name);
            // Re-encoding with the inner auth stripped gives it back in the same place.
            if v.inner_auth.is_some() && !v.serial {
                let mut stripped = msg.clone();
                stripped.remove(AUTH_FIELD);
                assert_eq!(encode(&stripped, &v.keys, MsgFormat::Classic), v.payload);
            }
        }
        assert_eq!((crc, md5, sha1, serial), (8, 22, 10, 3));
    }

    #[test]
    fn tampered_byte_and_wrong_key_fail() {
        for v in vectors() {
            // Flip a byte inside the first field value ("status", "NS_ackmsg", ...).
            let at = if v.serial { 6 } else { 12 };
            let mut bad = v.payload.clone();
            bad[at] ^= 0x01;
            let index = v.keys.active;
            assert_eq!(
                decode(&bad, &v.keys),
                Err(WireError::BadDigest { index }),
                "{}",
                v.name
            );
            let mut wrong = v.keys.clone();
            let key = wrong.keys.get_mut(&index).unwrap();
            if key.method == AuthMethod::Crc {
                key.method = AuthMethod::Md5;
            }
            key.secret = b"not-the-secret".to_vec();
            assert_eq!(
                decode(&v.payload, &wrong),
                Err(WireError::BadDigest { index }),
                "{}",
                v.name
            );
            let other = one_key(index.wrapping_add(1) % 16, AuthMethod::Md5, b"x");
            assert_eq!(
                decode(&v.payload, &other),
                Err(WireError::UnknownKeyIndex {
                    index: u32::from(index)
                }),
                "{}",
                v.name
            );
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for v in vectors() {
            for len in 0..v.payload.len() {
                assert!(
                    decode(&v.payload[..len], &v.keys).is_err(),
                    "{} len {len}",
                    v.name
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_are_ignored() {
        for v in vectors() {
            let mut p = v.payload.clone();
            p.extend_from_slice(b"\0garbage");
            assert!(decode(&p, &v.keys).is_ok(), "{}", v.name);
        }
    }

    #[test]
    fn oversize_frame_is_refused() {
        let keys = one_key(1, AuthMethod::Md5, b"k");
        let mut msg = Message::with_type("status");
        msg.add(FieldType::Binary, "blob", vec![7; MAX_FRAME_LEN]);
        let frame = encode(&msg, &keys, MsgFormat::Netstring);
        assert_eq!(
            decode(&frame, &keys),
            Err(WireError::TooLong { len: frame.len() })
        );
        assert!(matches!(
            decode_classic(&vec![b'>'; MAX_FRAME_LEN + 1], &keys),
            Err(WireError::TooLong { .. })
        ));
    }

    /// Fixed-seed xorshift64 for bounded pseudo-random tests.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn bytes(&mut self, len: usize, alphabet: &[u8]) -> Vec<u8> {
            (0..len)
                .map(|_| alphabet[self.below(alphabet.len() as u64) as usize])
                .collect()
        }
    }

    #[test]
    fn random_garbage_and_mutations_never_panic() {
        let vs = vectors();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let all: Vec<u8> = (0..=255).collect();
        let netstringish = b"###\n%%%<>,:=()0123456789 abcdef\n\x13";
        for i in 0..20_000 {
            let frame = match i % 4 {
                0 => {
                    let n = rng.below(400) as usize;
                    rng.bytes(n, &all)
                }
                1 => {
                    let mut f = b"###\n".to_vec();
                    let n = rng.below(300) as usize;
                    f.extend(rng.bytes(n, netstringish));
                    f
                }
                2 => {
                    let mut f = b">>>\n".to_vec();
                    let n = rng.below(300) as usize;
                    f.extend(rng.bytes(n, netstringish));
                    f
                }
                _ => {
                    let v = &vs[rng.below(vs.len() as u64) as usize];
                    let mut f = v.payload.clone();
                    for _ in 0..=rng.below(4) {
                        let at = rng.below(f.len() as u64) as usize;
                        f[at] = rng.next() as u8;
                    }
                    let _ = decode(&f, &v.keys);
                    continue;
                }
            };
            let keys = &vs[i % vs.len()].keys;
            let _ = decode(&frame, keys);
        }
    }

    fn random_message(rng: &mut XorShift, classic_safe: bool) -> Message {
        let name_chars = b"abcdefghijklmnopqrstuvwxyz0123456789_-.";
        let all: Vec<u8> = (0..=255).collect();
        let text: Vec<u8> = (0x20..0x7f).chain([b'\n', b'\t']).collect();
        let mut msg = Message::with_type("random");
        for _ in 0..rng.below(12) {
            let nlen = 1 + rng.below(10) as usize;
            let name = String::from_utf8(rng.bytes(nlen, name_chars)).unwrap();
            if name == AUTH_FIELD {
                continue;
            }
            let vlen = rng.below(40) as usize + usize::from(classic_safe);
            if rng.below(3) == 0 {
                let v = rng.bytes(vlen, &all);
                msg.add(FieldType::Binary, &name, v);
            } else {
                let v = rng.bytes(vlen, if classic_safe { &text } else { &all });
                msg.add(FieldType::String, &name, v);
            }
        }
        msg
    }

    fn random_keys(rng: &mut XorShift) -> AuthKeys {
        let method = [
            AuthMethod::Crc,
            AuthMethod::Md5,
            AuthMethod::Sha1,
            AuthMethod::Sha256,
        ][rng.below(4) as usize];
        let secret = if method == AuthMethod::Crc {
            Vec::new()
        } else {
            let n = 1 + rng.below(80) as usize;
            rng.bytes(n, b"abcdefXYZ0123-_")
        };
        one_key(rng.below(16) as u8, method, &secret)
    }

    #[test]
    fn random_messages_round_trip() {
        let mut rng = XorShift(0x0123_4567_89ab_cdef);
        for _ in 0..2_000 {
            let keys = random_keys(&mut rng);
            // Netstring form carries arbitrary bytes.
            let msg = random_message(&mut rng, false);
            let frame = encode(&msg, &keys, MsgFormat::Netstring);
            assert_eq!(decode(&frame, &keys).unwrap(), msg);
            // msgfmt classic: the decoded message has the inner auth appended.
            let msg = random_message(&mut rng, true);
            let frame = encode(&msg, &keys, MsgFormat::Classic);
            let decoded = decode(&frame, &keys).unwrap();
            let mut expected = msg.clone();
            add_inner_auth(&mut expected, &keys);
            assert_eq!(decoded, expected);
            assert_eq!(decoded.fields.last().unwrap().name, AUTH_FIELD);
            // Serial / classic text.
            let text = try_encode_classic(&msg, &keys).unwrap();
            assert_eq!(decode(&text, &keys).unwrap(), expected);
        }
    }

    #[test]
    fn sha256_round_trip() {
        let keys = one_key(5, AuthMethod::Sha256, b"a-long-sha256-secret");
        let mut msg = Message::with_type("status");
        msg.add_str("st", "active");
        msg.add(
            FieldType::Binary,
            "srcuuid",
            vec![0, b',', b':', b'\n', 0xff],
        );
        let frame = encode(&msg, &keys, MsgFormat::Classic);
        let trailer_start = frame.windows(4).position(|w| w == b"%%%\n").unwrap() + 4;
        // "66:5 <64 hex>,"
        assert_eq!(frame.len() - trailer_start, 3 + 2 + 64 + 1);
        let decoded = decode(&frame, &keys).unwrap();
        assert_eq!(decoded.get("srcuuid"), msg.get("srcuuid"));
        assert!(decoded.get_str(AUTH_FIELD).unwrap().starts_with("5 "));
        assert_eq!(decoded.get_str(AUTH_FIELD).unwrap().len(), 2 + 64);
    }

    #[test]
    fn received_key_index_is_used_for_rollover() {
        // Node A already signs with the new index 2; node B still signs with 1 but knows 2.
        let mut b_keys = one_key(1, AuthMethod::Sha1, b"old");
        b_keys.keys.insert(
            2,
            AuthKey {
                method: AuthMethod::Sha256,
                secret: b"new".to_vec(),
            },
        );
        let a_keys = one_key(2, AuthMethod::Sha256, b"new");
        let msg = Message::with_type("status");
        for fmt in [MsgFormat::Classic, MsgFormat::Netstring] {
            assert!(decode(&encode(&msg, &a_keys, fmt), &b_keys).is_ok());
        }
        assert!(decode(&encode_classic(&msg, &a_keys), &b_keys).is_ok());
    }

    #[test]
    fn inner_auth_replaced_in_place() {
        let keys = one_key(1, AuthMethod::Md5, b"k");
        let mut msg = Message::with_type("x");
        msg.add_str(AUTH_FIELD, "1 stale");
        msg.add_str("later", "v");
        add_inner_auth(&mut msg, &keys);
        assert_eq!(msg.fields[1].name, AUTH_FIELD);
        assert_ne!(msg.get_str(AUTH_FIELD), Some("1 stale"));
        let frame = encode(&msg, &keys, MsgFormat::Classic);
        assert_eq!(decode(&frame, &keys).unwrap(), msg);
    }

    #[test]
    fn nested_values_are_opaque_and_skip_inner_auth() {
        let keys = one_key(1, AuthMethod::Md5, b"k");
        let mut child = Message::with_type("inner");
        child.add_str("a", "b");
        let mut msg = Message::with_type("crmd");
        msg.add(FieldType::Struct, "child", encode_body(&child));
        msg.add(FieldType::List, "list", b"1:a,2:bc,".to_vec());
        let frame = encode(&msg, &keys, MsgFormat::Classic);
        let decoded = decode(&frame, &keys).unwrap();
        assert_eq!(decoded, msg, "no inner auth added, values kept raw");
    }

    #[test]
    fn classic_form_details() {
        let keys = one_key(1, AuthMethod::Md5, b"wirelab-secret");
        let mut msg = Message::with_type("status");
        msg.add_str("multi", "line1\nline2");
        msg.add(FieldType::Binary, "srcuuid", (0u8..16).collect());
        let text = encode_classic(&msg, &keys);
        let s = String::from_utf8(text.clone()).unwrap();
        assert!(s.starts_with(
            ">>>\nt=status\nmulti=line1\x13line2\n(1)srcuuid=AAECAwQFBgcICQoLDA0ODw==\nauth=1 "
        ));
        assert!(s.ends_with("\n<<<\n"));
        assert_eq!(
            decode_classic(&text, &keys).unwrap().get("multi"),
            Some(&b"line1\nline2"[..])
        );
        // Empty values are refused both ways.
        let mut empty = msg.clone();
        empty.add_str("delnodelist", "");
        assert_eq!(
            try_encode_classic(&empty, &keys),
            Err(WireError::EmptyValue {
                name: "delnodelist".into()
            })
        );
        assert_eq!(
            decode_classic(&encode_classic(&empty, &keys), &keys),
            Err(WireError::EmptyValue {
                name: "delnodelist".into()
            })
        );
        // Missing auth, bad line, bad base64, bad type digit.
        assert_eq!(
            decode(b">>>\nt=x\n<<<\n", &keys),
            Err(WireError::MissingAuth)
        );
        assert_eq!(
            decode(b">>>\nt=x\nnoequals\n<<<\n", &keys),
            Err(WireError::BadClassicLine { line: 3 })
        );
        assert_eq!(
            decode(b">>>\n(1)u=@@@@\n<<<\n", &keys),
            Err(WireError::BadBase64 { name: "u".into() })
        );
        assert!(matches!(
            decode(b">>>\n(9)u=x\n<<<\n", &keys),
            Err(WireError::BadFieldType { digit: b'9', .. })
        ));
        // Stray CR/LF between lines is skipped; classic-over-UDP NUL is ignored.
        let mut crlf = text.clone();
        crlf.splice(4..4, b"\r\n\n".iter().copied());
        crlf.push(0);
        assert!(decode(&crlf, &keys).is_ok());
    }

    #[test]
    fn netstring_errors_name_what_was_received() {
        let keys = one_key(1, AuthMethod::Crc, b"");
        assert_eq!(
            decode(b"hello", &keys),
            Err(WireError::NotAFrame {
                start: "hello".into()
            })
        );
        assert_eq!(decode(b"###\n", &keys), Err(WireError::MissingEnd));
        assert_eq!(decode(b"###\n%%%\n", &keys), Err(WireError::MissingTrailer));
        assert_eq!(
            decode(b"###\n5:(0)t=x,%%%\n", &keys),
            Err(WireError::BadNetstring { offset: 4 })
        );
        assert_eq!(
            decode(b"###\n6:(7)t=x,%%%\n", &keys),
            Err(WireError::BadFieldType {
                offset: 4,
                digit: b'7'
            })
        );
        assert_eq!(
            decode(b"###\n5:(0)tx,%%%\n", &keys),
            Err(WireError::BadField { offset: 4 })
        );
        assert_eq!(
            decode(b"###\n4:(0)=,%%%\n", &keys),
            Err(WireError::BadField { offset: 4 })
        );
        assert_eq!(
            decode(b"###\n%%%\n3:abc,", &keys),
            Err(WireError::BadAuthValue {
                value: "abc".into()
            })
        );
        assert_eq!(
            decode(b"###\n%%%\n12:99999 abcdef,", &keys),
            Err(WireError::UnknownKeyIndex { index: 99999 })
        );
        assert_eq!(
            decode(b"###\n%%%\n99999999:1 x,", &keys),
            Err(WireError::BadNetstring { offset: 8 })
        );
        let ok = encode(&Message::with_type("t"), &keys, MsgFormat::Netstring);
        assert!(decode(&ok, &keys).is_ok());
        // Upper-case hex is refused like heartbeat's strcmp.
        let upper = String::from_utf8(ok).unwrap();
        let (body, trailer) = upper.split_at(upper.find("%%%\n").unwrap() + 4);
        let up = format!("{body}{}", trailer.to_uppercase());
        if up.as_bytes() != upper.as_bytes() {
            assert!(matches!(
                decode(up.as_bytes(), &keys),
                Err(WireError::BadDigest { .. })
            ));
        }
    }

    #[test]
    fn base64_round_trip_and_strictness() {
        let mut rng = XorShift(42);
        let all: Vec<u8> = (0..=255).collect();
        for len in 0..64 {
            let data = rng.bytes(len, &all);
            assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
        }
        assert_eq!(base64_encode(b"f"), b"Zg==");
        assert_eq!(base64_encode(b"foobar"), b"Zm9vYmFy");
        for bad in [&b"Zg="[..], b"Zh==", b"Z===", b"Zg==Zg==", b"Zm9v!mFy"] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    fn captured(name_prefix: &str, frame: u64) -> Message {
        let json: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
        let v = json
            .as_array()
            .unwrap()
            .iter()
            .find(|v| {
                v["capture"].as_str().unwrap().starts_with(name_prefix)
                    && v["frame"].as_u64() == Some(frame)
            })
            .unwrap();
        let keys = authkeys(v["authkeys"].as_str().unwrap());
        decode(
            &hex::decode(v["payload_hex"].as_str().unwrap()).unwrap(),
            &keys,
        )
        .unwrap()
    }

    /// Rebuilds a captured message from its message-specific fields and its envelope.
    fn restamp(original: &Message, specific: &[&str]) -> Message {
        let env = read_envelope(original).unwrap();
        let mut msg = Message::new();
        for f in original
            .fields
            .iter()
            .filter(|f| specific.contains(&f.name.as_str()))
        {
            msg.fields.push(f.clone());
        }
        stamp(
            &mut msg,
            &EnvelopeRef {
                src: env.src,
                srcuuid: env.srcuuid.unwrap(),
                seq: env.seq.or(Some(99)),
                generation: env.generation.unwrap(),
                ts: env.ts,
                load: original.get_str("ld").or(Some("n/a")),
                ttl: original.get_str("ttl").unwrap().parse().unwrap(),
                dest_uuid: env.dest_uuid.or(Some([9; 16])),
            },
        );
        msg
    }

    #[test]
    fn stamp_reproduces_captured_envelopes() {
        let mut status = captured("ucast_md5", 3);
        status.remove(AUTH_FIELD);
        assert_eq!(restamp(&status, &["t", "st", "dt", "protocol"]), status);

        // NS_ackmsg: destuuid after the specific fields, no seq, no ld.
        let mut ack = captured("ucast_md5", 15);
        ack.remove(AUTH_FIELD);
        assert_eq!(restamp(&ack, &["t", "dest", "ackseq"]), ack);
        let env = read_envelope(&ack).unwrap();
        assert!(env.is_unsequenced());
        assert_eq!(env.seq, None);
        assert_eq!(env.dest.as_deref(), Some("node2"));

        // repnodes starts with dest; existing fields keep their place.
        let mut rep = captured("ucast_md5", 78);
        rep.remove(AUTH_FIELD);
        let specific: Vec<&str> = rep
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .take_while(|n| *n != "destuuid" && *n != "src")
            .collect();
        assert_eq!(restamp(&rep, &specific), rep);
    }

    #[test]
    fn stamp_without_dest_adds_no_destuuid_and_keeps_positions() {
        let mut msg = Message::with_type("status");
        msg.add_str("ts", "1");
        let env = EnvelopeRef {
            src: "node1",
            srcuuid: [1; 16],
            seq: Some(0x1c),
            generation: 0x6b02_2fab,
            ts: 0x6b02_2fbd,
            load: Some("0.00 0.00 0.00 1/1 1"),
            ttl: 3,
            dest_uuid: Some([2; 16]),
        };
        stamp(&mut msg, &env);
        let names: Vec<&str> = msg.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["t", "ts", "src", "srcuuid", "seq", "hg", "ld", "ttl"]
        );
        assert_eq!(msg.get_str("ts"), Some("6b022fbd"));
        assert_eq!(msg.get_str("seq"), Some("1c"));
        assert_eq!(msg.get_str("hg"), Some("6b022fab"));
        assert_eq!(msg.get_str("ttl"), Some("3"));
        let r = read_envelope(&msg).unwrap();
        assert_eq!(
            (r.seq, r.generation, r.ts, r.srcuuid, r.dest_uuid),
            (
                Some(0x1c),
                Some(0x6b02_2fab),
                0x6b02_2fbd,
                Some([1; 16]),
                None
            )
        );
    }

    #[test]
    fn read_envelope_requires_heartbeat_fields() {
        let base = captured("ucast_md5", 3);
        assert!(read_envelope(&base).is_ok());
        for (name, expected) in [
            ("t", WireError::MissingField { name: "t" }),
            ("src", WireError::MissingField { name: "src" }),
            ("ts", WireError::MissingField { name: "ts" }),
            ("seq", WireError::MissingField { name: "seq" }),
            ("hg", WireError::MissingField { name: "hg" }),
        ] {
            let mut m = base.clone();
            m.remove(name);
            assert_eq!(read_envelope(&m), Err(expected));
        }
        for (name, value) in [
            ("ts", "0"),
            ("ts", "zz"),
            ("seq", "-1"),
            ("hg", "0x5"),
            ("seq", ""),
        ] {
            let mut m = base.clone();
            m.set_str(name, value);
            assert!(
                matches!(read_envelope(&m), Err(WireError::BadFieldValue { .. })),
                "{name}={value}"
            );
        }
        // NS_st (ping reply payload) has neither seq nor hg and is fine.
        let ping = captured("mcast_sha1_ping/ping_icmp", 3);
        let env = read_envelope(&ping).unwrap();
        assert_eq!((env.seq, env.generation), (None, None));
        assert_eq!(env.src, "192.0.2.1");
        assert_eq!(env.sequence(), None);
        // A sequenced message has both; an NS_* one stays unsequenced even with a seq.
        assert_eq!(
            read_envelope(&base).unwrap().sequence(),
            Some((
                parse_hex_u64(base.get("seq").unwrap()).unwrap(),
                parse_hex_u64(base.get("hg").unwrap()).unwrap()
            ))
        );
        let mut ns = base.clone();
        ns.set_str("t", "NS_ackmsg");
        let env = read_envelope(&ns).unwrap();
        assert!(env.seq.is_some());
        assert_eq!(env.sequence(), None);
    }

    #[test]
    fn parse_hex_u64_is_strict() {
        assert_eq!(parse_hex_u64(b"6b022fab"), Some(0x6b02_2fab));
        assert_eq!(parse_hex_u64(b"FF"), Some(255));
        assert_eq!(parse_hex_u64(b"ffffffffffffffff"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b" 1",
            b"1 ",
            b"0x1",
            b"-1",
            b"+1",
            b"g",
            b"10000000000000000",
        ] {
            assert_eq!(parse_hex_u64(bad), None, "{bad:?}");
        }
    }

    /// The encoder as it was before the borrowed/prepared fast path (format!-based), kept
    /// as the oracle the fast path must match byte for byte.
    fn reference_encode(msg: &Message, keys: &AuthKeys, fmt: MsgFormat) -> Vec<u8> {
        fn netstring(out: &mut Vec<u8>, content: &[u8]) {
            out.extend_from_slice(content.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(content);
            out.push(b',');
        }
        let mut m = msg.clone();
        let key = keys.keys.get(&keys.active);
        if fmt == MsgFormat::Classic
            && !m.fields.iter().any(|f| {
                matches!(
                    f.ftype,
                    FieldType::Struct | FieldType::Compress | FieldType::Uncompress
                )
            })
            && let Some(key) = key
        {
            let mut text = Vec::new();
            for f in m.fields.iter().filter(|f| f.name != AUTH_FIELD) {
                if f.ftype != FieldType::String {
                    text.extend(format!("({})", f.ftype.digit()).bytes());
                }
                text.extend(f.name.bytes());
                text.push(b'=');
                match f.ftype {
                    FieldType::String => text.extend(
                        f.value
                            .iter()
                            .map(|&b| if b == b'\n' { SPECIAL_SYM } else { b }),
                    ),
                    FieldType::Binary | FieldType::Compress => text.extend(base64_encode(&f.value)),
                    _ => text.extend(&f.value),
                }
                text.push(b'\n');
            }
            let value = format!(
                "{} {}",
                keys.active,
                auth::digest(key.method, &key.secret, &text)
            );
            m.set(FieldType::String, AUTH_FIELD, value.into_bytes());
        }
        let mut out = b"###\n".to_vec();
        for f in &m.fields {
            let mut content = format!("({}){}=", f.ftype.digit(), f.name).into_bytes();
            content.extend(&f.value);
            netstring(&mut out, &content);
        }
        out.extend(b"%%%\n");
        if let Some(key) = key {
            let trailer = format!(
                "{} {}",
                keys.active,
                auth::digest(key.method, &key.secret, &out)
            );
            netstring(&mut out, trailer.as_bytes());
        }
        out
    }

    /// Every frame, good or bad: the fast decoder gives the same message or error.
    fn assert_decoders_agree(frame: &[u8], keys: &AuthKeys) {
        let prepared = FrameKeys::new(keys);
        let slow = decode(frame, keys);
        let fast = decode_view(frame, &prepared);
        assert_eq!(
            fast.as_ref().map(MessageView::to_message),
            slow.as_ref().cloned()
        );
        if let (Ok(view), Ok(msg)) = (&fast, &slow) {
            assert_eq!(read_envelope(view), read_envelope(msg));
            for name in ["t", "st", "src", "auth", "missing"] {
                assert_eq!(view.get(name), msg.get(name));
                assert_eq!(view.get_str(name), msg.get_str(name));
            }
            assert_eq!(view.msg_type(), msg.msg_type());
        }
    }

    #[test]
    fn fast_paths_match_the_reference_on_captures() {
        for v in vectors() {
            let msg = decode(&v.payload, &v.keys).unwrap();
            let prepared = FrameKeys::new(&v.keys);
            for fmt in [MsgFormat::Classic, MsgFormat::Netstring] {
                let expected = reference_encode(&msg, &v.keys, fmt);
                assert_eq!(encode(&msg, &v.keys, fmt), expected, "{}", v.name);
                let mut out = b"stale".to_vec();
                out.clear();
                encode_with(&mut out, &msg, &prepared, fmt);
                assert_eq!(out, expected, "{}", v.name);
            }
            assert_decoders_agree(&v.payload, &v.keys);
            let mut bad = v.payload.clone();
            let at = bad.len() / 2;
            bad[at] ^= 0x20;
            assert_decoders_agree(&bad, &v.keys);
        }
    }

    #[test]
    fn fast_paths_match_the_reference_on_random_messages() {
        let mut rng = XorShift(0x5eed_f00d_1234_5678);
        let vs = vectors();
        for i in 0..1_500 {
            let keys = random_keys(&mut rng);
            let prepared = FrameKeys::new(&keys);
            let mut msg = random_message(&mut rng, i % 2 == 0);
            if i % 5 == 0 {
                // A stale inner auth somewhere in the middle is replaced in place.
                msg.fields.insert(
                    msg.fields.len() / 2,
                    Field {
                        ftype: FieldType::String,
                        name: AUTH_FIELD.into(),
                        value: b"1 stale".to_vec(),
                    },
                );
            }
            if i % 7 == 0 {
                msg.add(FieldType::List, "list", b"1:a,".to_vec());
            }
            if i % 11 == 0 {
                msg.add(FieldType::Struct, "child", b"###\n%%%\n".to_vec());
            }
            for fmt in [MsgFormat::Classic, MsgFormat::Netstring] {
                let expected = reference_encode(&msg, &keys, fmt);
                assert_eq!(encode(&msg, &keys, fmt), expected);
                let mut out = Vec::new();
                encode_with(&mut out, &msg, &prepared, fmt);
                assert_eq!(out, expected);
                assert_decoders_agree(&expected, &keys);
                // Mutated and truncated frames are refused (or accepted) alike.
                let mut bad = expected.clone();
                let at = rng.below(bad.len() as u64) as usize;
                bad[at] = rng.next() as u8;
                assert_decoders_agree(&bad, &keys);
                let cut = rng.below(expected.len() as u64) as usize;
                assert_decoders_agree(&expected[..cut], &keys);
            }
            if let Ok(text) = try_encode_classic(&msg, &keys) {
                assert_decoders_agree(&text, &keys);
            }
            // A frame signed under other keys.
            let other = &vs[i % vs.len()].keys;
            assert_decoders_agree(&encode(&msg, other, MsgFormat::Classic), &keys);
        }
    }

    #[test]
    fn encode_stamped_matches_stamp_then_encode() {
        let mut rng = XorShift(77);
        let keys = one_key(3, AuthMethod::Sha1, b"stamp-secret");
        let prepared = FrameKeys::new(&keys);
        let shapes: [&[(&str, &str)]; 5] = [
            &[
                ("t", "status"),
                ("st", "active"),
                ("dt", "1e"),
                ("protocol", "1"),
            ],
            &[("t", "NS_ackmsg"), ("dest", "node2"), ("ackseq", "1c")],
            &[
                ("t", "repnodes"),
                ("dest", "b"),
                ("src", "old"),
                ("ttl", "9"),
            ],
            &[("t", "status"), ("ts", "1"), ("hbd_groups", "lvs|1|0|a|3")],
            &[("st", "no type")],
        ];
        for (i, shape) in shapes.iter().enumerate() {
            for round in 0..40u64 {
                let env = EnvelopeRef {
                    src: "loadbalancer",
                    srcuuid: [i as u8; 16],
                    seq: (round % 3 != 0).then(|| rng.next() >> (round % 64)),
                    generation: rng.next() >> (round % 64),
                    ts: rng.next() >> 30,
                    load: (round % 4 != 0).then_some("0.00 0.01 0.05 1/123 4567"),
                    ttl: (rng.next() % 300) as u32,
                    dest_uuid: (round % 2 == 0).then_some([0xd5; 16]),
                };
                let mut msg = Message::new();
                for (n, v) in shape.iter() {
                    msg.add_str(n, v);
                }
                let specific: Vec<FieldRef<'_>> = fields_of(&msg).collect();
                let mut out = Vec::new();
                for fmt in [MsgFormat::Classic, MsgFormat::Netstring] {
                    out.clear();
                    encode_stamped(&mut out, &specific, &env, &prepared, fmt);
                    let mut stamped = msg.clone();
                    stamp(&mut stamped, &env);
                    assert_eq!(out, encode(&stamped, &keys, fmt), "{shape:?} {round}");
                    assert_eq!(out, reference_encode(&stamped, &keys, fmt));
                }
            }
        }
    }

    /// A run of heartbeats through one [`FramePrefix`]: every frame must equal
    /// [`encode_stamped`]'s, under every method and format, across changes of the leading
    /// fields, of the keys (same index, another secret), and messages the prefix cannot
    /// serve (no `seq`, an `auth` field before it, a nested value).
    #[test]
    fn prefixed_frames_equal_encode_stamped_and_reuse_the_prefix() {
        let methods = [
            AuthMethod::Crc,
            AuthMethod::Md5,
            AuthMethod::Sha1,
            AuthMethod::Sha256,
        ];
        for method in methods {
            for fmt in [MsgFormat::Classic, MsgFormat::Netstring] {
                let first = one_key(2, method, b"first-secret");
                let second = one_key(2, method, b"second-secret");
                let (first_prepared, second_prepared) =
                    (FrameKeys::new(&first), FrameKeys::new(&second));
                let mut prefix = FramePrefix::default();
                let (mut out, mut expected) = (Vec::new(), Vec::new());
                for round in 0..80u64 {
                    let (keys, prepared) = if round < 60 {
                        (&first, &first_prepared)
                    } else {
                        (&second, &second_prepared)
                    };
                    let st = if round < 20 { "active" } else { "standby" };
                    let groups = if round < 40 {
                        "lvs|1|0|a|3"
                    } else {
                        "lvs|0|0|b|4"
                    };
                    let mut msg = Message::new();
                    match round {
                        // Encoded in full: no `seq`, then an `auth` field before it; then
                        // a nested value (through a prefix of its own, and no inner auth).
                        25 => msg.add_str("t", "NS_ackmsg"),
                        26 => {
                            msg.add_str("t", "status");
                            msg.add_str("auth", "1 0");
                        }
                        27 => {
                            msg.add_str("t", "status");
                            msg.set(FieldType::Struct, "nested", b"5:(0)a=b,".to_vec());
                        }
                        _ => {
                            msg.add_str("t", "status");
                            msg.add_str("st", st);
                            msg.add_str("dt", "1e");
                            msg.add_str("protocol", "1");
                            msg.add_str("hbd_groups", groups);
                        }
                    }
                    let load = format!("0.{:02} 0.01 0.05 1/123 4567", round % 7);
                    let env = EnvelopeRef {
                        src: "loadbalancer",
                        srcuuid: [0x5a; 16],
                        seq: Some(0x1c + round),
                        generation: 0x6b02_2fab,
                        ts: 0x6b02_2fbd + round / 10,
                        load: Some(&load),
                        ttl: 3,
                        dest_uuid: None,
                    };
                    let specific: Vec<FieldRef<'_>> = fields_of(&msg).collect();
                    let builds_before = prefix.builds;
                    out.clear();
                    encode_stamped_prefixed(&mut out, &specific, &env, prepared, fmt, &mut prefix);
                    expected.clear();
                    encode_stamped(&mut expected, &specific, &env, prepared, fmt);
                    let what = format!("{method:?} {fmt:?} round {round}");
                    assert_eq!(out, expected, "{what}");
                    let mut stamped = msg.clone();
                    stamp(&mut stamped, &env);
                    assert_eq!(out, reference_encode(&stamped, keys, fmt), "{what}");
                    assert!(decode(&out, keys).is_ok(), "{what}");
                    // The prefix is rebuilt exactly when the leading fields or keys change.
                    let rebuilds = matches!(round, 0 | 20 | 27 | 28 | 40 | 60);
                    assert_eq!(prefix.builds - builds_before, u64::from(rebuilds), "{what}");
                }
            }
        }
    }

    /// Random messages (any names, types and values) through one [`FramePrefix`], each sent
    /// twice with a new envelope: byte-identical to [`encode_stamped`] every time.
    #[test]
    fn prefixed_frames_of_random_messages_equal_encode_stamped() {
        let mut rng = XorShift(0x5eed_f00d);
        let mut prefix = FramePrefix::default();
        for case in 0..300u64 {
            let keys = random_keys(&mut rng);
            let prepared = FrameKeys::new(&keys);
            let msg = random_message(&mut rng, case % 2 == 0);
            let specific: Vec<FieldRef<'_>> = fields_of(&msg).collect();
            for fmt in [MsgFormat::Classic, MsgFormat::Netstring] {
                for seq in [case, case + 1] {
                    let env = EnvelopeRef {
                        src: "n1",
                        srcuuid: [case as u8; 16],
                        seq: Some(seq),
                        generation: rng.next() >> 20,
                        ts: rng.next() >> 30,
                        load: (seq % 3 != 0).then_some("0.10 0.20 0.30 1/99 42"),
                        ttl: 4,
                        dest_uuid: (case % 5 == 0).then_some([0xd5; 16]),
                    };
                    let (mut out, mut expected) = (Vec::new(), Vec::new());
                    encode_stamped_prefixed(&mut out, &specific, &env, &prepared, fmt, &mut prefix);
                    encode_stamped(&mut expected, &specific, &env, &prepared, fmt);
                    assert_eq!(out, expected, "case {case} {fmt:?} seq {seq}: {msg:?}");
                }
            }
        }
    }

    #[test]
    fn stamp_numbers_are_printed_like_format() {
        for n in [
            0u64,
            1,
            9,
            10,
            15,
            16,
            255,
            0x6b02_2fab,
            u64::MAX,
            u64::MAX - 1,
        ] {
            assert_eq!(NumberText::new(n).as_bytes(), n.to_string().as_bytes());
            assert_eq!(NumberText::hex(n).as_bytes(), format!("{n:x}").as_bytes());
        }
        let d = auth::PreparedKey::new(AuthMethod::Sha256, b"k").digest(b"x");
        for index in [0u8, 7, 15, 200, 255] {
            assert_eq!(
                AuthValue::new(index, &d).as_bytes(),
                format!("{index} {}", d.as_str()).as_bytes()
            );
        }
    }
}
