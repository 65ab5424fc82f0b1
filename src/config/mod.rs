//! Configuration: one validated model ([`Config`]), several front doors.
//!
//! * native YAML ([`load_yaml`]), documented key by key in docs/configuration.md;
//! * an unchanged Linux-HA directory ([`load_ha_dir`]): `ha.cf`, `haresources`, `authkeys`.
//!
//! Each front door parses its text into raw structures that mirror the file, then validates
//! them into [`Config`], collecting every problem as a [`Diagnostic`] that names the file,
//! the line and the fix, so `hbd --check-config` can print them all at once. [`to_yaml`]
//! writes any [`Config`] back as YAML (`hactl convert`).
//!
//! Layout: [`time`] (heartbeat's time syntax), `hacf`, `authkeys`, `haresources`, `yaml`
//! (one parser per format), `validate` (the rules they share). Files are read here only.

mod authkeys;
pub mod diag;
mod hacf;
mod haresources;
pub mod model;
pub mod time;
mod validate;
mod yaml;

pub use diag::{ConfigError, Diagnostic, Severity};
/// Helpers the director's front doors (ldirectord.cf, YAML `director:`) share with these.
pub(crate) use hacf::parse_bool;
pub use model::*;
pub use time::{format_duration, parse_duration};
pub use yaml::to_yaml;
pub(crate) use yaml::{Scalar, line_of, quote};

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use validate::Draft;

/// A configuration that loaded, with the warnings met on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated model.
    pub config: Config,
    /// Unsupported or deprecated directives, named.
    pub warnings: Vec<Diagnostic>,
}

/// The host name could not be read, so this node's name is unknown.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the host name ({0}); give the node name explicitly")]
pub struct NodeNameError(#[source] nix::errno::Errno);

/// The name this node goes by in the configuration: `given` (an operator's override) or the
/// host name (`uname -n`), lower-cased the way `node` names are (ASCII only, as heartbeat
/// does), so both compare equal.
pub fn local_node_name(given: Option<&str>) -> Result<String, NodeNameError> {
    match given {
        Some(name) => Ok(name.to_ascii_lowercase()),
        None => nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().to_ascii_lowercase())
            .map_err(NodeNameError),
    }
}

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

/// Refuses a file holding secrets that group or others may access (heartbeat's rule).
fn check_secret_mode(path: &Path, diags: &mut Vec<Diagnostic>) {
    if let Ok(meta) = std::fs::metadata(path)
        && let Some(d) = authkeys::check_mode(path, meta.mode())
    {
        diags.push(d);
    }
}

/// Reads and parses an authkeys file, mode check included.
fn load_authkeys(path: &Path, diags: &mut Vec<Diagnostic>) -> Option<AuthKeys> {
    let text = read_text(path, "authkeys file", diags)?;
    check_secret_mode(path, diags);
    let (keys, d) = authkeys::parse(&text, path);
    diags.extend(d);
    keys
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

/// Ends a load of the whole configuration ([`finish`] into a [`Loaded`]).
fn finish_load(config: Option<Config>, diags: Vec<Diagnostic>) -> Result<Loaded, ConfigError> {
    finish(config, diags).map(|(config, warnings)| Loaded { config, warnings })
}

/// Loads an unchanged Linux-HA directory (`ha.cf`, `haresources`, `authkeys`) for the node
/// named `local_node`. `haresources` is optional (no groups); the other two are required.
/// Every problem in the three files is reported, not just the first.
pub fn load_ha_dir(dir: &Path, local_node: &str) -> Result<Loaded, ConfigError> {
    let mut diags = Vec::new();
    let hacf_path = dir.join("ha.cf");
    let draft = read_text(&hacf_path, "ha.cf file", &mut diags).map(|text| {
        let (draft, d) = hacf::parse(&text, &hacf_path);
        diags.extend(d);
        draft
    });
    let auth = load_authkeys(&dir.join("authkeys"), &mut diags);
    let hr_path = dir.join("haresources");
    let groups = if hr_path.exists() {
        read_text(&hr_path, "haresources file", &mut diags).map(|text| {
            let (groups, d) = haresources::parse(&text, &hr_path);
            diags.extend(d);
            groups
        })
    } else {
        Some(Vec::new())
    };
    let groups = groups.unwrap_or_default();
    check_director_files(&groups, dir, &mut diags);
    let config = match draft {
        Some(mut draft) => {
            draft.auth = auth;
            draft.groups = groups;
            validate::validate(draft, local_node, &mut diags)
        }
        None => None,
    };
    finish_load(config, diags)
}

/// Checks every ldirectord.cf the groups name (`ldirectord`, `ldirectord::FILE`), so
/// `hbd --check-config` reports their problems too; the director reads them again at start.
fn check_director_files(
    groups: &[validate::At<GroupSpec>],
    dir: &Path,
    diags: &mut Vec<Diagnostic>,
) {
    let mut seen = std::collections::BTreeSet::new();
    for g in groups {
        for r in g.value.resources.iter().filter(|r| r.kind == "ldirectord") {
            let path =
                crate::director::locate_ldirectord_cf(r.args.first().map(String::as_str), dir);
            if !seen.insert(path.clone()) {
                continue;
            }
            match crate::director::parse_ldirectord(&path) {
                Ok((_, warnings)) => diags.extend(warnings),
                Err(e) => diags.extend(e.diagnostics),
            }
        }
    }
}

/// Loads a native YAML configuration for the node named `local_node`. When the file holds
/// keys inline it must not be accessible by group or others (like authkeys).
pub fn load_yaml(path: &Path, local_node: &str) -> Result<Loaded, ConfigError> {
    let mut diags = Vec::new();
    let Some(text) = read_text(path, "configuration file", &mut diags) else {
        return finish_load(None, diags);
    };
    let raw = match yaml::parse_raw(&text, path) {
        Ok(raw) => raw,
        Err(d) => return finish_load(None, vec![d]),
    };
    let (mut draft, source, d): (Draft, _, _) = yaml::to_draft(raw, path);
    diags.extend(d);
    match source {
        yaml::AuthSource::Inline => check_secret_mode(path, &mut diags),
        yaml::AuthSource::File(file, loc) => {
            if file.exists() {
                draft.auth = load_authkeys(&file, &mut diags);
            } else {
                diags.push(loc.error(format!(
                    "auth.authkeys names {}, which does not exist; fix the path (relative paths are read from the YAML file's directory)",
                    file.display()
                )));
            }
        }
        yaml::AuthSource::Missing => {}
    }
    if let Some(spec) = &mut draft.director
        && let Some(path) = &spec.ldirectord_cf
    {
        match crate::director::parse_ldirectord(path) {
            Ok((config, warnings)) => {
                spec.config = config;
                diags.extend(warnings);
            }
            Err(e) => diags.extend(e.diagnostics),
        }
    }
    let config = validate::validate(draft, local_node, &mut diags);
    finish_load(config, diags)
}

#[cfg(test)]
mod tests;
