//! The director: virtual services, their real servers, and how those are checked — the part
//! of hbd that replaces ldirectord (features §3).
//!
//! * [`config`]: `ldirectord.cf` (unchanged) and the YAML `director:` section → one validated
//!   [`DirectorConfig`], with ldirectord's defaults and rules.
//! * [`checks`]: one health check (connect, HTTP/HTTPS with a total deadline, external, ping).
//! * [`http`]: the small HTTP/1.1 client of HTTP checks (request bytes, response parser).
//! * [`scheduler`]: thousands of checks with bounded concurrency, jittered starts, shared
//!   identical checks.
//! * [`health`]: rise/fall per real server and the desired service (quiescent, fallback), pure.
//! * [`runtime`]: the running director: check results drive the dataplane.

pub mod checks;
pub mod config;
pub mod health;
pub mod http;
pub mod ping;
pub mod runtime;
pub mod scheduler;

pub use config::{
    CheckKind, CheckSpec, DirectorConfig, HttpMethod, Protocol, RealConfig, Receive, Service,
    VirtualConfig, locate_ldirectord_cf, parse_ldirectord, parse_ldirectord_str,
};
