//! The director: virtual services, their real servers, and how those are checked — the part
//! of hbd that replaces ldirectord (features §3).
//!
//! Its configuration (`ldirectord.cf` unchanged, or the YAML `director:` section → one
//! validated [`DirectorConfig`]) is read by [`crate::config::director`], like every other file.
//!
//! * [`checks`]: one health check (connect, HTTP/HTTPS with a total deadline, external, ping).
//! * [`http`]: the small HTTP/1.1 client of HTTP checks (request bytes, response parser).
//! * [`services`]: negotiate checks of dns, ftp, imap, ldap, mysql, pgsql, pop, radius, sip,
//!   smtp and simpletcp, as ldirectord runs them.
//! * [`scheduler`]: thousands of checks with bounded concurrency, jittered starts, shared
//!   identical checks.
//! * [`health`]: rise/fall per real server and the desired service (quiescent, fallback), pure.
//! * [`report`]: what `hactl checks` shows of one real server (plain data for the control protocol).
//! * [`runtime`]: the running director: check results drive the dataplane.
//! * [`support`]: the configuration against the dataplane it runs on (refused, approximated).

pub mod checks;
pub mod health;
pub mod http;
pub mod ping;
pub mod report;
pub mod runtime;
pub mod scheduler;
pub mod services;
pub mod support;

/// What the director runs, as read by [`crate::config::director`].
pub use crate::config::director::DirectorConfig;
