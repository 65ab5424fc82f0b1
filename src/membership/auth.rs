#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]
//! Frame digests: heartbeat's `crc`, `md5` and `sha1` auth plugins, plus `sha256`.
//!
//! Implements HEARTBEAT-WIRE.md §4.2: `crc` is CRC-32/POSIX without the length suffix printed
//! with `%lx` (lower-case, no zero padding); `md5`/`sha1` are RFC 2104 HMACs over the bytes
//! given, printed as lower-case hex. `sha256` (HMAC-SHA256) is hbd's own method for new
//! clusters; heartbeat 3.0.6 does not know it. Receivers compare digests as exact strings
//! (§4.4, `strcmp`), so the output here must match byte for byte.

use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;

use crate::config::model::AuthMethod;

/// CRC-32 generator polynomial, MSB-first (heartbeat `lib/plugins/HBauth/crc.c`).
const CRC_POLY: u32 = 0x04C1_1DB7;

/// The MSB-first CRC table, built at compile time.
const CRC_TABLE: [u32; 256] = crc_table();

/// Builds the 256-entry table for the non-reflected CRC-32.
const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ CRC_POLY
            } else {
                c << 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// CRC-32/POSIX without the length suffix (init 0, final complement), as heartbeat's
/// `crc_auth_calc` computes it. (Reference for the incremental [`Hasher::Crc`].)
#[cfg(test)]
fn crc32_posix(data: &[u8]) -> u32 {
    let mut crc: u32 = 0;
    for &b in data {
        crc = (crc << 8) ^ CRC_TABLE[(((crc >> 24) as u8) ^ b) as usize];
    }
    !crc
}

/// Lower-case hex digits, indexed by nibble.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Longest digest text any method writes: HMAC-SHA256 in hex.
pub const MAX_DIGEST_HEX: usize = 64;

/// A digest as heartbeat prints it (lower-case hex), held on the stack so that signing and
/// verifying a frame allocate nothing.
#[derive(Clone, Copy)]
pub struct HexDigest {
    /// The hex text in `text[..len]`.
    text: [u8; MAX_DIGEST_HEX],
    /// How many bytes of `text` are used.
    len: usize,
}

impl HexDigest {
    /// Lower-case hex of `raw` (at most 32 bytes; longer input is cut, which no method has).
    fn from_raw(raw: &[u8]) -> HexDigest {
        let raw = &raw[..raw.len().min(MAX_DIGEST_HEX / 2)];
        let mut d = HexDigest {
            text: [0; MAX_DIGEST_HEX],
            len: 2 * raw.len(),
        };
        // The output is exactly twice the input, the one thing `encode_to_slice` checks; were
        // it refused anyway, the empty digest never verifies.
        if hex::encode_to_slice(raw, &mut d.text[..d.len]).is_err() {
            d.len = 0;
        }
        d
    }

    /// `%lx` of a CRC: lower-case, no zero padding.
    fn from_crc(crc: u32) -> HexDigest {
        let mut d = HexDigest {
            text: [0; MAX_DIGEST_HEX],
            len: 0,
        };
        let digits = (8 - crc.leading_zeros() as usize / 4).max(1);
        for i in 0..digits {
            let nibble = (crc >> (4 * (digits - 1 - i))) & 0x0f;
            d.text[i] = HEX_DIGITS[nibble as usize];
        }
        d.len = digits;
        d
    }

    /// The digest text as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text[..self.len]
    }

    /// The digest text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written into `text[..len]`.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// Whether `received` is exactly this digest text, compared in constant time in the
    /// contents (a forger learns nothing from timing about how many leading characters were
    /// right); case-sensitive like heartbeat's `strcmp`.
    pub fn matches(&self, received: &[u8]) -> bool {
        if self.len != received.len() {
            return false;
        }
        // Eight bytes at a time: the differences are OR-ed together, each step hidden from
        // the optimiser so it cannot stop at the first difference, and compared once at the
        // end (`subtle`'s byte slices pay that barrier per byte).
        let mut differ = 0u64;
        for (ours, theirs) in self.as_bytes().chunks(8).zip(received.chunks(8)) {
            let mut a = [0u8; 8];
            let mut b = [0u8; 8];
            a[..ours.len()].copy_from_slice(ours);
            b[..theirs.len()].copy_from_slice(theirs);
            differ = std::hint::black_box(differ | (u64::from_ne_bytes(a) ^ u64::from_ne_bytes(b)));
        }
        bool::from(differ.ct_eq(&0))
    }
}

impl std::fmt::Debug for HexDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key ready to sign: the HMAC state after absorbing the key pads, computed once, so each
/// frame costs only the hash of its own bytes. Build one per configured key and reuse it.
#[derive(Clone)]
pub struct PreparedKey {
    /// The keyed state each digest starts from.
    start: Hasher,
}

impl PreparedKey {
    /// Prepares `secret` for `method`.
    pub fn new(method: AuthMethod, secret: &[u8]) -> PreparedKey {
        PreparedKey {
            start: match method {
                AuthMethod::Crc => Hasher::Crc(0),
                AuthMethod::Md5 => keyed::<md5::Md5>(secret).map_or(Hasher::Broken, Hasher::Md5),
                AuthMethod::Sha1 => {
                    keyed::<sha1::Sha1>(secret).map_or(Hasher::Broken, Hasher::Sha1)
                }
                AuthMethod::Sha256 => {
                    keyed::<sha2::Sha256>(secret).map_or(Hasher::Broken, Hasher::Sha256)
                }
            },
        }
    }

    /// A fresh digest computation under this key; feed it with [`Hasher::update`].
    pub fn hasher(&self) -> Hasher {
        self.start.clone()
    }

    /// The digest of `data`, as heartbeat prints it (lower-case hex, `%lx` for `crc`).
    pub fn digest(&self, data: &[u8]) -> HexDigest {
        let mut h = self.hasher();
        h.update(data);
        h.finish()
    }
}

impl std::fmt::Debug for PreparedKey {
    /// Never prints key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PreparedKey(<redacted>)")
    }
}

/// The HMAC of `D` keyed with `secret`, before any data.
fn keyed<D>(secret: &[u8]) -> Option<Hmac<D>>
where
    Hmac<D>: KeyInit + Mac,
    D: hmac::EagerHash,
{
    // HMAC accepts keys of any length (longer ones are hashed first, RFC 2104 §2), so
    // `new_from_slice` cannot fail here; a broken key would simply never verify.
    <Hmac<D> as KeyInit>::new_from_slice(secret).ok()
}

/// An incremental digest: the data may arrive in pieces (e.g. a frame's fields one by one).
#[derive(Clone)]
pub enum Hasher {
    /// CRC-32/POSIX register so far.
    Crc(u32),
    /// HMAC-MD5 state.
    Md5(Hmac<md5::Md5>),
    /// HMAC-SHA1 state.
    Sha1(Hmac<sha1::Sha1>),
    /// HMAC-SHA256 state.
    Sha256(Hmac<sha2::Sha256>),
    /// A key HMAC refused (cannot happen): the digest is empty and never verifies.
    Broken,
}

impl Hasher {
    /// Absorbs the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Crc(crc) => {
                for &b in data {
                    *crc = (*crc << 8) ^ CRC_TABLE[(((*crc >> 24) as u8) ^ b) as usize];
                }
            }
            Hasher::Md5(mac) => mac.update(data),
            Hasher::Sha1(mac) => mac.update(data),
            Hasher::Sha256(mac) => mac.update(data),
            Hasher::Broken => {}
        }
    }

    /// The digest text of everything absorbed.
    pub fn finish(self) -> HexDigest {
        match self {
            Hasher::Crc(crc) => HexDigest::from_crc(!crc),
            Hasher::Md5(mac) => HexDigest::from_raw(&mac.finalize().into_bytes()),
            Hasher::Sha1(mac) => HexDigest::from_raw(&mac.finalize().into_bytes()),
            Hasher::Sha256(mac) => HexDigest::from_raw(&mac.finalize().into_bytes()),
            Hasher::Broken => HexDigest::from_raw(&[]),
        }
    }
}

/// The digest heartbeat would put in a trailer or inner `auth` field for `data`.
///
/// Lower-case hex; `crc` ignores `secret` and is printed without zero padding (`%lx`), so it
/// can be shorter than 8 characters (e.g. `b644cf5`). The reference the tests check
/// [`PreparedKey`] against; hbd itself signs through prepared keys.
#[cfg(test)]
pub fn digest(method: AuthMethod, secret: &[u8], data: &[u8]) -> String {
    PreparedKey::new(method, secret)
        .digest(data)
        .as_str()
        .to_string()
}

/// Whether `received` is exactly the digest of `data`.
///
/// The comparison is constant-time in the digest contents, so a forger learns nothing from
/// timing about how many leading characters of a keyed digest were right. Like heartbeat's
/// `strcmp` it is case-sensitive. For the tests, like [`digest`].
#[cfg(test)]
pub fn verify(method: AuthMethod, secret: &[u8], data: &[u8], received: &[u8]) -> bool {
    PreparedKey::new(method, secret)
        .digest(data)
        .matches(received)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_check_value_and_no_padding() {
        assert_eq!(digest(AuthMethod::Crc, b"", b"123456789"), "765e7680");
        assert_eq!(
            digest(AuthMethod::Crc, b"ignored", b"123456789"),
            "765e7680"
        );
        // Empty input: !0 = ffffffff.
        assert_eq!(digest(AuthMethod::Crc, b"", b""), "ffffffff");
        // Some input must give a digest with a leading zero nibble, printed without padding.
        let short = (0u32..10_000)
            .map(|i| digest(AuthMethod::Crc, b"", &i.to_be_bytes()))
            .find(|d| d.len() < 8);
        assert!(short.is_some());
        assert!(!short.unwrap().starts_with('0'));
    }

    #[test]
    fn rfc2202_hmac_md5() {
        // Test cases 1, 2 and 6 (key longer than the block).
        assert_eq!(
            digest(AuthMethod::Md5, &[0x0b; 16], b"Hi There"),
            "9294727a3638bb1c13f48ef8158bfc9d"
        );
        assert_eq!(
            digest(AuthMethod::Md5, b"Jefe", b"what do ya want for nothing?"),
            "750c783e6ab0b503eaa86e310a5db738"
        );
        assert_eq!(
            digest(
                AuthMethod::Md5,
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd"
        );
    }

    #[test]
    fn rfc2202_hmac_sha1() {
        assert_eq!(
            digest(AuthMethod::Sha1, &[0x0b; 20], b"Hi There"),
            "b617318655057264e28bc0b6fb378c8ef146be00"
        );
        assert_eq!(
            digest(AuthMethod::Sha1, b"Jefe", b"what do ya want for nothing?"),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            digest(
                AuthMethod::Sha1,
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
    }

    #[test]
    fn rfc4231_hmac_sha256() {
        assert_eq!(
            digest(AuthMethod::Sha256, &[0x0b; 20], b"Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            digest(AuthMethod::Sha256, b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verify_accepts_exact_and_refuses_anything_else() {
        let d = digest(AuthMethod::Md5, b"k", b"data");
        assert!(verify(AuthMethod::Md5, b"k", b"data", d.as_bytes()));
        assert!(!verify(AuthMethod::Md5, b"other", b"data", d.as_bytes()));
        assert!(!verify(AuthMethod::Md5, b"k", b"datb", d.as_bytes()));
        assert!(!verify(
            AuthMethod::Md5,
            b"k",
            b"data",
            d.to_uppercase().as_bytes()
        ));
        assert!(!verify(AuthMethod::Md5, b"k", b"data", &d.as_bytes()[1..]));
        assert!(!verify(AuthMethod::Md5, b"k", b"data", b""));
        assert!(verify(AuthMethod::Crc, b"", b"123456789", b"765e7680"));
    }

    #[test]
    fn matches_finds_a_difference_in_any_byte() {
        // Lengths that are and are not a multiple of the 8-byte step, including a short crc.
        for method in [
            AuthMethod::Crc,
            AuthMethod::Md5,
            AuthMethod::Sha1,
            AuthMethod::Sha256,
        ] {
            for data in [&b"123456789"[..], b"0", b"frame"] {
                let d = PreparedKey::new(method, b"k").digest(data);
                let text = d.as_bytes().to_vec();
                assert!(d.matches(&text), "{method:?}");
                for i in 0..text.len() {
                    let mut wrong = text.clone();
                    wrong[i] ^= 0x01;
                    assert!(!d.matches(&wrong), "{method:?} byte {i}");
                }
                let mut longer = text.clone();
                longer.push(b'0');
                assert!(!d.matches(&longer));
            }
        }
    }

    /// The straightforward implementation the stack/prepared one replaced.
    fn reference_digest(method: AuthMethod, secret: &[u8], data: &[u8]) -> String {
        fn hmac_hex<D>(secret: &[u8], data: &[u8]) -> String
        where
            Hmac<D>: KeyInit + Mac,
            D: hmac::EagerHash,
        {
            let mut mac = <Hmac<D> as KeyInit>::new_from_slice(secret).unwrap();
            mac.update(data);
            hex::encode(mac.finalize().into_bytes())
        }
        match method {
            AuthMethod::Crc => format!("{:x}", crc32_posix(data)),
            AuthMethod::Md5 => hmac_hex::<md5::Md5>(secret, data),
            AuthMethod::Sha1 => hmac_hex::<sha1::Sha1>(secret, data),
            AuthMethod::Sha256 => hmac_hex::<sha2::Sha256>(secret, data),
        }
    }

    const METHODS: [AuthMethod; 4] = [
        AuthMethod::Crc,
        AuthMethod::Md5,
        AuthMethod::Sha1,
        AuthMethod::Sha256,
    ];

    #[test]
    fn prepared_and_incremental_digests_match_the_reference() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..400 {
            let secret: Vec<u8> = (0..next() % 100).map(|_| next() as u8).collect();
            let data: Vec<u8> = (0..next() % 700).map(|_| next() as u8).collect();
            let method = METHODS[round % 4];
            let expected = reference_digest(method, &secret, &data);
            assert_eq!(digest(method, &secret, &data), expected);
            let key = PreparedKey::new(method, &secret);
            // The prepared state is reusable: the same digest twice, then in pieces.
            assert_eq!(key.digest(&data).as_str(), expected);
            assert_eq!(key.digest(&data).as_bytes(), expected.as_bytes());
            let mut h = key.hasher();
            let mut rest = &data[..];
            while !rest.is_empty() {
                let n = (next() as usize % 70).min(rest.len());
                h.update(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(h.finish().as_str(), expected);
            assert!(verify(method, &secret, &data, expected.as_bytes()));
        }
        // CRC values with leading zero nibbles print without padding, zero prints "0".
        for crc in [0u32, 1, 0xf, 0x10, 0x0b64_4cf5, 0xffff_ffff, 0x8000_0000] {
            assert_eq!(HexDigest::from_crc(crc).as_str(), format!("{crc:x}"));
        }
    }

    #[test]
    fn verify_rejects_near_misses_for_every_method() {
        for method in METHODS {
            let good = digest(method, b"secret", b"frame bytes");
            let ok = |r: &[u8]| verify(method, b"secret", b"frame bytes", r);
            assert!(ok(good.as_bytes()), "{method:?}");
            // Wrong digest of the right length (last digit changed).
            let mut wrong = good.clone().into_bytes();
            let last = wrong.len() - 1;
            wrong[last] = if wrong[last] == b'0' { b'1' } else { b'0' };
            assert!(!ok(&wrong), "{method:?}");
            // Wrong lengths: cut, extended, empty.
            assert!(!ok(&good.as_bytes()[..good.len() - 1]), "{method:?}");
            assert!(!ok(format!("{good}0").as_bytes()), "{method:?}");
            assert!(!ok(format!("0{good}").as_bytes()), "{method:?}");
            assert!(!ok(b""), "{method:?}");
            // Upper-case hex is refused (when the digest has a letter at all).
            let upper = good.to_uppercase();
            if upper != good {
                assert!(!ok(upper.as_bytes()), "{method:?}");
            }
            // The raw digest bytes instead of hex are refused.
            if method != AuthMethod::Crc {
                assert!(!ok(&hex::decode(&good).unwrap()), "{method:?}");
            }
        }
    }
}
