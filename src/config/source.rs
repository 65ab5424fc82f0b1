//! The text of configuration files, shared by every front door: reading a file (invalid
//! UTF-8 replaced, a failure reported as a diagnostic), YAML scalars kept as text with the
//! line they were written on, and the boolean words every format accepts.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_saphyr::Spanned;

use super::diag::Diagnostic;

/// Reads a configuration file as text. heartbeat files from old systems may hold comments in
/// legacy encodings, so invalid UTF-8 is replaced rather than refused (a damaged directive
/// then fails to parse and is reported at its line). `what` names the file in the error.
pub(crate) fn read_text(path: &Path, what: &str, diags: &mut Vec<Diagnostic>) -> Option<String> {
    match std::fs::read(path) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => {
            diags.push(Diagnostic::error(
                path,
                None,
                format!("cannot read the {what}: {e}; check the path and permissions"),
            ));
            None
        }
    }
}

/// A YAML scalar kept as text, so `3`, `"3"`, `yes` and `true` reach the same parser:
/// durations may be written `10ms`, `1.5` or `2`, and `auto_failback` as `on` or `true`.
/// YAML 1.1 reads `on`/`off` (and `yes`/`no`) as booleans; they come back as `on`/`off`,
/// which every boolean setting accepts (and which the director's `checktype: on|off` means).
#[derive(Debug, Clone)]
pub(crate) struct Scalar(pub(crate) String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(if v { "on" } else { "off" }.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The 1-based line a spanned YAML value was written on, when serde-saphyr knows it.
pub(crate) fn line_of<T>(s: &Spanned<T>) -> Option<usize> {
    let l = s.referenced.line();
    (l > 0).then(|| usize::try_from(l).unwrap_or(usize::MAX))
}

/// heartbeat booleans: `true on yes y 1` / `false off no n 0`, case-insensitive.
pub(crate) fn parse_bool(word: &str) -> Option<bool> {
    match word.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "y" | "1" => Some(true),
        "false" | "off" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}
