//! Configuration: one validated model ([`Config`]), several front doors.
//!
//! * native YAML ([`load_yaml`]), documented directive by directive in docs/configuration.md;
//! * an unchanged Linux-HA directory ([`load_ha_dir`]): `ha.cf`, `haresources`, `authkeys`.
//!
//! Each front door parses its text into raw structures that mirror the file, then validates
//! them into [`Config`], collecting every problem as a [`Diagnostic`] that names the file,
//! the line and the fix, so `hbd --check-config` can print them all at once.

pub mod diag;
pub mod model;

pub use diag::{ConfigError, Diagnostic, Severity};
pub use model::*;

use std::path::Path;

/// A configuration that loaded, with the warnings met on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated model.
    pub config: Config,
    /// Unsupported or deprecated directives, named.
    pub warnings: Vec<Diagnostic>,
}

/// Loads an unchanged Linux-HA directory (`ha.cf`, `haresources`, `authkeys`) for the node
/// named `local_node`.
pub fn load_ha_dir(dir: &Path, local_node: &str) -> Result<Loaded, ConfigError> {
    Err(ConfigError {
        diagnostics: vec![Diagnostic::error(
            dir,
            None,
            format!("Linux-HA directory loading is not built yet (node {local_node})"),
        )],
    })
}

/// Loads a native YAML configuration for the node named `local_node`.
pub fn load_yaml(path: &Path, local_node: &str) -> Result<Loaded, ConfigError> {
    Err(ConfigError {
        diagnostics: vec![Diagnostic::error(
            path,
            None,
            format!("YAML loading is not built yet (node {local_node})"),
        )],
    })
}

/// The YAML equivalent of a configuration (placeholder until the YAML front door lands).
pub fn to_yaml(config: &Config) -> String {
    format!("# {} node(s)\n", config.nodes.len())
}
