//! The director: virtual services, their real servers, and how those are checked — the part
//! of hbd that replaces ldirectord (features §3).
//!
//! * [`config`]: `ldirectord.cf` (unchanged) and the YAML `director:` section → one validated
//!   [`DirectorConfig`], with ldirectord's defaults and rules.

pub mod config;

pub use config::{
    CheckKind, CheckSpec, DirectorConfig, HttpMethod, Protocol, RealConfig, Receive, Service,
    VirtualConfig, locate_ldirectord_cf, parse_ldirectord, parse_ldirectord_str,
};
