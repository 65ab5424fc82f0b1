//! Diagnostics: every configuration problem names the file, the line and the fix.

use std::fmt;
use std::path::{Path, PathBuf};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Nothing is wrong; a note on how hbd reads a line (e.g. `respawn … ipfail`, which hbd
    /// does itself). Logged at info level at start.
    Info,
    /// The configuration is still used; something is ignored or deprecated.
    Warning,
    /// The configuration is refused.
    Error,
}

/// One problem found in a configuration file, printed as `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// File the problem is in.
    pub file: PathBuf,
    /// 1-based line, when the problem has one.
    pub line: Option<usize>,
    /// Warning or error.
    pub severity: Severity,
    /// What is wrong, and how to fix it.
    pub message: String,
}

impl Diagnostic {
    /// An error at `file:line`.
    pub fn error(file: &Path, line: Option<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.to_path_buf(),
            line,
            severity: Severity::Error,
            message: message.into(),
        }
    }

    /// A note at `file:line` (logged at info level).
    pub fn info(file: &Path, line: Option<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.to_path_buf(),
            line,
            severity: Severity::Info,
            message: message.into(),
        }
    }

    /// A warning at `file:line`.
    pub fn warning(file: &Path, line: Option<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.to_path_buf(),
            line,
            severity: Severity::Warning,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Info => "note: ",
            Severity::Warning => "warning: ",
            Severity::Error => "",
        };
        match self.line {
            Some(line) => write!(
                f,
                "{}:{}: {}{}",
                self.file.display(),
                line,
                sev,
                self.message
            ),
            None => write!(f, "{}: {}{}", self.file.display(), sev, self.message),
        }
    }
}

/// A refused configuration: every error found (and the warnings seen on the way).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.diagnostics))]
pub struct ConfigError {
    /// All diagnostics, errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    /// Only the errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
}

fn render(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Levenshtein distance, for "did you mean" on misspelt directives (ha.cf, ldirectord.cf).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Ends a parse: sorts diagnostics by file and line; any error refuses `value` (as does a
/// `None` value, whose reason is among the diagnostics), else the value comes with its
/// warnings.
pub(crate) fn finish<T>(
    value: Option<T>,
    mut diags: Vec<Diagnostic>,
) -> Result<(T, Vec<Diagnostic>), ConfigError> {
    diags.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    match value {
        Some(value) if !diags.iter().any(|d| d.severity == Severity::Error) => Ok((value, diags)),
        _ => Err(ConfigError { diagnostics: diags }),
    }
}
