//! heartbeat's time syntax (glue `cl_get_msec`, HEARTBEAT-WIRE.md §7.5).
//!
//! A bare number means **seconds** and may be fractional (`1.5`); `ms` and `us` suffixes give
//! milliseconds and microseconds (`500ms`, `250us`). hbd also accepts an `s` suffix (`2s`),
//! which heartbeat itself rejects. Values are held to microsecond precision, so
//! [`format_duration`] gives back a text that parses to the same value.

use std::time::Duration;

/// Largest value accepted, in microseconds (about 31 years): beyond any sane timer, and far
/// from overflow.
const MAX_MICROS: u128 = 1_000_000_000_000_000;

/// Why a text is not a time value; the message names the text and the fix, for use in a
/// `file:line:` diagnostic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a number with an optional `s`, `ms` or `us` suffix.
    #[error(
        "'{0}' is not a time value; write seconds (`2`, `1.5`, `2s`), milliseconds (`500ms`) or microseconds (`250us`)"
    )]
    NotATime(String),
    /// Above about 31 years.
    #[error("'{0}' is too large for a time value")]
    TooLarge(String),
    /// Holds a fraction of a microsecond.
    #[error("'{0}' is finer than a microsecond; round it to whole microseconds")]
    FinerThanMicrosecond(String),
}

/// Parses a heartbeat time value (`2`, `1.5`, `500ms`, `250us`, `2s`) into a [`Duration`].
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    let (number, unit_micros): (&str, u128) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1_000)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1_000_000)
    } else {
        (t, 1_000_000)
    };
    let number = number.trim_end();
    let bad = || DurationError::NotATime(text.to_string());
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(bad());
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    // Exact decimal arithmetic in units of 1e-18 of the unit would overflow; work in
    // microseconds: value_us = int * unit + frac * unit / 10^len.
    let too_big = || DurationError::TooLarge(text.to_string());
    let mut micros: u128 = 0;
    for b in int_part.bytes() {
        micros = micros
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(b - b'0')))
            .ok_or_else(too_big)?;
        if micros > MAX_MICROS {
            return Err(too_big());
        }
    }
    micros = micros.checked_mul(unit_micros).ok_or_else(too_big)?;
    // Fraction: only the digits that can matter at microsecond precision (unit ≤ 1e6 → 6).
    let mut scale: u128 = 1;
    let mut frac: u128 = 0;
    for b in frac_part.bytes().take(6) {
        frac = frac * 10 + u128::from(b - b'0');
        scale *= 10;
    }
    let frac_micros = frac * unit_micros / scale;
    if !(frac * unit_micros).is_multiple_of(scale) || frac_part.bytes().skip(6).any(|b| b != b'0') {
        return Err(DurationError::FinerThanMicrosecond(text.to_string()));
    }
    micros += frac_micros;
    if micros > MAX_MICROS {
        return Err(too_big());
    }
    let micros = u64::try_from(micros).map_err(|_| too_big())?;
    Ok(Duration::from_micros(micros))
}

/// Formats a duration in the ms form (`1500ms`), or `us` when it is not a whole number of
/// milliseconds; [`parse_duration`] reads it back to the same value (at µs precision).
pub fn format_duration(d: Duration) -> String {
    let micros = d.as_micros();
    if micros.is_multiple_of(1_000) {
        format!("{}ms", micros / 1_000)
    } else {
        format!("{micros}us")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_numbers_are_seconds() {
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1.7"), Ok(Duration::from_millis(1700)));
        assert_eq!(parse_duration(".5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 30 "), Ok(Duration::from_secs(30)));
    }

    #[test]
    fn suffixes() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5ms"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("10 ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_duration("0.000001"), Ok(Duration::from_micros(1)));
        assert_eq!(parse_duration("1.000000000"), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "", "ms", "-1", "1e3", "abc", "1.2.3", "1m", "1h", "1 s s", "+1", ".",
        ] {
            let err = parse_duration(bad).expect_err(bad).to_string();
            assert!(
                err.contains("time value") || err.contains("microsecond"),
                "{err}"
            );
        }
        assert!(
            parse_duration("0.0000001")
                .unwrap_err()
                .to_string()
                .contains("microsecond")
        );
        assert!(
            parse_duration("1.5us")
                .unwrap_err()
                .to_string()
                .contains("microsecond")
        );
        assert!(
            parse_duration("99999999999999999999999999999")
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(1),
            Duration::from_millis(1500),
            Duration::from_secs(30),
            Duration::from_micros(1234),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(2)), "2000ms");
        assert_eq!(format_duration(Duration::from_micros(250)), "250us");
    }
}
