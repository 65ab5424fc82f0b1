//! Configuration: one validated model ([`Config`]), several front doors.
//!
//! * native YAML ([`load_yaml`]), documented key by key in docs/configuration.md;
//! * an unchanged Linux-HA directory ([`load_ha_dir`]): `ha.cf`, `haresources`, `authkeys`.
//! * an unchanged keepalived.conf ([`keepalived::load_keepalived`]): VRRP and virtual servers;
//!   a YAML file with a `vrrp:` section gives the same ([`load_yaml_any`]).
//!
//! Each front door parses its text into raw structures that mirror the file, then validates
//! them into [`Config`], collecting every problem as a [`Diagnostic`] that names the file,
//! the line and the fix, so `hbd --check-config` can print them all at once. [`to_yaml`]
//! writes any [`Config`] back as YAML (`hactl convert`).
//!
//! Layout: [`time`] (heartbeat's time syntax), `source` (reading files, YAML scalars), `hacf`,
//! `authkeys`, `haresources`, `yaml` and [`director`] (`ldirectord.cf` and the YAML
//! `director:` section) — one parser per format — and `validate` (the rules they share).
//! [`diag`] is the lowest layer: every other file reports through it.

mod authkeys;
pub mod conntrackd;
pub mod diag;
pub mod director;
mod hacf;
mod haresources;
pub mod keepalived;
pub mod model;
mod source;
pub mod support;
pub mod time;
mod validate;
mod yaml;
mod yaml_vrrp;

pub use diag::{ConfigError, Diagnostic, Severity};
pub use model::*;
pub use time::{DurationError, format_duration, parse_duration};
pub use yaml::to_yaml;
pub use yaml_vrrp::{VrrpYaml, VrrpYamlError, keepalived_to_yaml};

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use diag::finish;
use source::read_text;
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
    check_conntrackd_here(&groups, &mut diags);
    let config = match draft {
        Some(mut draft) => {
            check_respawn_on_host(&draft.respawn, &mut diags);
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
            let path = director::locate_ldirectord_cf(r.args.first().map(String::as_str), dir);
            if !seen.insert(path.clone()) {
                continue;
            }
            match director::parse_ldirectord(&path) {
                Ok((_, warnings)) => diags.extend(warnings),
                Err(e) => diags.extend(e.diagnostics),
            }
        }
    }
}

/// Loads a native YAML configuration for the node named `local_node`. When the file holds
/// keys inline it must not be accessible by group or others (like authkeys). A file with a
/// `vrrp:` section is refused here: [`load_yaml_any`] reads it.
pub fn load_yaml(path: &Path, local_node: &str) -> Result<Loaded, ConfigError> {
    match load_yaml_any(path, local_node)? {
        YamlChoice::Heartbeat(loaded) => Ok(*loaded),
        YamlChoice::Vrrp { .. } => Err(ConfigError {
            diagnostics: vec![Diagnostic::error(
                path,
                None,
                "this file chooses VRRP (it has a `vrrp:` section); run it alone with `hbd --config FILE`, not beside --keepalived-conf",
            )],
        }),
    }
}

/// What a native YAML file runs: heartbeat's membership, or VRRP (a `vrrp:` section).
#[derive(Debug, Clone)]
pub enum YamlChoice {
    /// heartbeat's membership, as [`load_yaml`] gives it.
    Heartbeat(Box<Loaded>),
    /// VRRP, with the heartbeat media beside it when the file has `media`.
    Vrrp {
        /// The VRRP model, the director and the heartbeat media.
        config: Box<VrrpYaml>,
        /// Warnings met on the way.
        warnings: Vec<Diagnostic>,
    },
}

/// Loads a native YAML configuration for the node named `local_node`, whichever membership
/// it chooses (see [`YamlChoice`]).
pub fn load_yaml_any(path: &Path, local_node: &str) -> Result<YamlChoice, ConfigError> {
    let mut diags = Vec::new();
    let Some(text) = read_text(path, "configuration file", &mut diags) else {
        return finish_load(None, diags).map(|l| YamlChoice::Heartbeat(Box::new(l)));
    };
    let mut raw = match yaml::parse_raw(&text, path) {
        Ok(raw) => raw,
        Err(d) => return finish_load(None, vec![d]).map(|l| YamlChoice::Heartbeat(Box::new(l))),
    };
    match raw.take_vrrp() {
        None => {
            let config = heartbeat_yaml(raw, path, local_node, &mut diags);
            finish_load(config, diags).map(|l| YamlChoice::Heartbeat(Box::new(l)))
        }
        Some(vrrp) => {
            let config = vrrp_yaml(raw, vrrp, &text, path, local_node, &mut diags, true);
            finish(config, diags).map(|(config, warnings)| YamlChoice::Vrrp {
                config: Box::new(config),
                warnings,
            })
        }
    }
}

/// Loads a YAML file's `vrrp:` section from its text, as [`load_yaml_any`] does from `file`,
/// but reads no file: an `ldirectord_cf` or `authkeys` it names is an error instead.
pub fn load_yaml_vrrp_str(
    text: &str,
    file: &Path,
    local_node: &str,
) -> Result<(VrrpYaml, Vec<Diagnostic>), ConfigError> {
    let mut raw = match yaml::parse_raw(text, file) {
        Ok(raw) => raw,
        Err(d) => return finish(None, vec![d]),
    };
    let mut diags = Vec::new();
    let config = match raw.take_vrrp() {
        Some(vrrp) => vrrp_yaml(raw, vrrp, text, file, local_node, &mut diags, false),
        None => {
            diags.push(Diagnostic::error(
                file,
                None,
                "no `vrrp:` section; add one (docs/configuration.md)",
            ));
            None
        }
    };
    finish(config, diags)
}

/// A YAML file that chooses VRRP: the `vrrp:` section and `director:` into the model
/// `--keepalived-conf` builds, and, when it has `media`, the heartbeat node beside it.
/// `read_files`: follow `ldirectord_cf` and `authkeys` (else they are errors).
fn vrrp_yaml(
    mut raw: yaml::RawConfig,
    vrrp: serde_saphyr::Spanned<yaml_vrrp::RawVrrp>,
    text: &str,
    path: &Path,
    local_node: &str,
    diags: &mut Vec<Diagnostic>,
    read_files: bool,
) -> Option<VrrpYaml> {
    let media = raw.has_media();
    yaml_vrrp::check_top_level(text, path, media, diags);
    let mut keepalived = yaml_vrrp::build(vrrp, path, diags);
    if let Some(dir) = raw.take_director() {
        use director::{ServiceNames, YamlDirector, from_yaml};
        keepalived.director = match from_yaml(&dir, path, &ServiceNames::builtin(), diags) {
            Some(YamlDirector::Inline(config)) => Some(config),
            Some(YamlDirector::File(file, _)) if read_files => {
                match director::parse_ldirectord(&file) {
                    Ok((config, warnings)) => {
                        diags.extend(warnings);
                        Some(config)
                    }
                    Err(e) => {
                        diags.extend(e.diagnostics);
                        None
                    }
                }
            }
            Some(YamlDirector::File(file, line)) => {
                diags.push(Diagnostic::error(
                    path,
                    line,
                    format!(
                        "director.ldirectord_cf names {}, which is not read when loading from text; give the director inline",
                        file.display()
                    ),
                ));
                None
            }
            None => None,
        };
    }
    let logging = raw.take_logging(path, diags);
    let heartbeat = if media {
        if read_files {
            heartbeat_yaml(raw, path, local_node, diags)
        } else {
            let (draft, _, d) = yaml::to_draft(raw, path);
            diags.extend(d);
            validate::validate(draft, local_node, diags)
        }
    } else {
        None
    };
    if media && heartbeat.is_none() {
        return None;
    }
    Some(VrrpYaml {
        keepalived,
        heartbeat,
        logging,
    })
}

/// The heartbeat configuration of a parsed YAML file: keys inline (the file's mode checked)
/// or from its authkeys file, the director's ldirectord.cf read, then validated.
fn heartbeat_yaml(
    raw: yaml::RawConfig,
    path: &Path,
    local_node: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Config> {
    let (mut draft, source, d): (Draft, _, _) = yaml::to_draft(raw, path);
    diags.extend(d);
    match source {
        yaml::AuthSource::Inline => check_secret_mode(path, diags),
        yaml::AuthSource::File(file, loc) => {
            if file.exists() {
                draft.auth = load_authkeys(&file, diags);
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
        match director::parse_ldirectord(path) {
            Ok((config, warnings)) => {
                spec.config = config;
                diags.extend(warnings);
            }
            Err(e) => diags.extend(e.diagnostics),
        }
    }
    check_respawn_on_host(&draft.respawn, diags);
    check_conntrackd_here(&draft.groups, diags);
    validate::validate(draft, local_node, diags)
}

/// The `conntrackd` resources' arguments, and, for a configuration read from this host's
/// files, that conntrackd is installed here (the text loaders check the arguments only).
fn check_conntrackd_here(groups: &[validate::At<GroupSpec>], diags: &mut Vec<Diagnostic>) {
    conntrackd::check_groups(groups, diags);
    conntrackd::check_on_host(groups, Path::new(conntrackd::CONNTRACKD_BIN), diags);
}

/// Checks that each `respawn` user exists and each program is an executable file on this
/// host, as heartbeat does before it starts (config.c refuses an unknown uid; a program that
/// cannot run is never started): a supervised program that can never start is an error
/// naming the line and the fix, not a surprise at run time.
fn check_respawn_on_host(respawn: &[validate::At<RespawnSpec>], diags: &mut Vec<Diagnostic>) {
    for r in respawn {
        let user = &r.value.user;
        match nix::unistd::User::from_name(user) {
            Ok(Some(_)) => {}
            Ok(None) => diags.push(r.loc.error(format!(
                "respawn user '{user}' does not exist on this host; create it (e.g. `useradd --system {user}`) or name an existing user"
            ))),
            Err(e) => diags.push(r.loc.error(format!(
                "respawn user '{user}' cannot be looked up ({e}); check /etc/passwd and nsswitch.conf"
            ))),
        }
        let Some(program) = r.value.command.first() else {
            continue;
        };
        match std::fs::metadata(program) {
            Ok(m) if m.is_file() && m.mode() & 0o111 != 0 => {}
            Ok(_) => diags.push(r.loc.error(format!(
                "respawn program {program} is not an executable file; `chmod +x {program}` or fix the path"
            ))),
            Err(e) => diags.push(r.loc.error(format!(
                "respawn program {program} cannot be used ({e}); install it or fix the path"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Front doors from text: the same parsers and rules, no file system (fuzz targets, tests).

/// The texts of a Linux-HA directory, for [`load_ha_text`].
#[derive(Debug, Clone, Copy)]
pub struct HaTexts<'a> {
    /// `ha.cf`.
    pub hacf: &'a str,
    /// `authkeys`.
    pub authkeys: &'a str,
    /// `haresources`, when there is one.
    pub haresources: Option<&'a str>,
}

/// Loads a Linux-HA configuration from its texts, as [`load_ha_dir`] does from `dir`, but
/// reads no file: the `ldirectord.cf` files the groups name, the authkeys mode and the
/// `respawn` programs on this host are not checked. Diagnostics name the files in `dir`.
pub fn load_ha_text(
    texts: HaTexts<'_>,
    dir: &Path,
    local_node: &str,
) -> Result<Loaded, ConfigError> {
    let mut diags = Vec::new();
    let (mut draft, d) = hacf::parse(texts.hacf, &dir.join("ha.cf"));
    diags.extend(d);
    let (auth, d) = authkeys::parse(texts.authkeys, &dir.join("authkeys"));
    diags.extend(d);
    let groups = texts.haresources.map_or_else(Vec::new, |text| {
        let (groups, d) = haresources::parse(text, &dir.join("haresources"));
        diags.extend(d);
        groups
    });
    conntrackd::check_groups(&groups, &mut diags);
    draft.auth = auth;
    draft.groups = groups;
    let config = validate::validate(draft, local_node, &mut diags);
    finish_load(config, diags)
}

/// Loads a native YAML configuration from its text, as [`load_yaml`] does from `file`, but
/// reads no file: an `auth.authkeys` file or a `director.ldirectord_cf` it names is reported
/// as an error instead of read, and `respawn` programs are not checked on this host.
pub fn load_yaml_str(text: &str, file: &Path, local_node: &str) -> Result<Loaded, ConfigError> {
    let mut raw = match yaml::parse_raw(text, file) {
        Ok(raw) => raw,
        Err(d) => return finish_load(None, vec![d]),
    };
    if raw.take_vrrp().is_some() {
        return finish_load(
            None,
            vec![Diagnostic::error(
                file,
                None,
                "this file chooses VRRP (it has a `vrrp:` section); load it with load_yaml_vrrp_str",
            )],
        );
    }
    let (draft, source, mut diags): (Draft, _, _) = yaml::to_draft(raw, file);
    if let yaml::AuthSource::File(path, loc) = source {
        diags.push(loc.error(format!(
            "auth.authkeys names {}, which is not read when loading from text; give the keys inline",
            path.display()
        )));
    }
    if let Some(path) = draft
        .director
        .as_ref()
        .and_then(|s| s.ldirectord_cf.as_ref())
    {
        diags.push(Diagnostic::error(
            file,
            None,
            format!(
                "director.ldirectord_cf names {}, which is not read when loading from text; give the director inline",
                path.display()
            ),
        ));
    }
    let config = validate::validate(draft, local_node, &mut diags);
    finish_load(config, diags)
}

#[cfg(test)]
mod tests;
