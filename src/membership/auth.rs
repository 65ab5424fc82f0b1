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
/// `crc_auth_calc` computes it.
fn crc32_posix(data: &[u8]) -> u32 {
    let mut crc: u32 = 0;
    for &b in data {
        crc = (crc << 8) ^ CRC_TABLE[(((crc >> 24) as u8) ^ b) as usize];
    }
    !crc
}

/// Lower-case hex HMAC of `data` under `secret` with hash `D`.
fn hmac_hex<D>(secret: &[u8], data: &[u8]) -> String
where
    Hmac<D>: KeyInit + Mac,
    D: hmac::EagerHash,
{
    // HMAC accepts keys of any length (longer ones are hashed first, RFC 2104 §2), so
    // `new_from_slice` cannot fail here; an empty digest would simply never verify.
    match <Hmac<D> as KeyInit>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(data);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// The digest heartbeat would put in a trailer or inner `auth` field for `data`.
///
/// Lower-case hex; `crc` ignores `secret` and is printed without zero padding (`%lx`), so it
/// can be shorter than 8 characters (e.g. `b644cf5`).
pub fn digest(method: AuthMethod, secret: &[u8], data: &[u8]) -> String {
    match method {
        AuthMethod::Crc => format!("{:x}", crc32_posix(data)),
        AuthMethod::Md5 => hmac_hex::<md5::Md5>(secret, data),
        AuthMethod::Sha1 => hmac_hex::<sha1::Sha1>(secret, data),
        AuthMethod::Sha256 => hmac_hex::<sha2::Sha256>(secret, data),
    }
}

/// Whether `received` is exactly the digest of `data`.
///
/// The comparison is constant-time in the digest contents, so a forger learns nothing from
/// timing about how many leading characters of a keyed digest were right. Like heartbeat's
/// `strcmp` it is case-sensitive.
pub fn verify(method: AuthMethod, secret: &[u8], data: &[u8], received: &[u8]) -> bool {
    let expected = digest(method, secret, data);
    expected.len() == received.len() && bool::from(expected.as_bytes().ct_eq(received))
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
}
