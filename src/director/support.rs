//! A director configuration against the dataplane it will run on, as `file:line`
//! diagnostics.
//!
//! [`crate::dataplane::support`] says what a backend refuses or approximates for one
//! service; this module asks it about every virtual service of a [`DirectorConfig`] (the
//! fallback included: it is programmed when every real is down) and names the line of the
//! `real =` or `virtual =` concerned. Pure: the same (configuration, backend kind) always
//! gives the same answer, so `hbd --check-config`, a start and a reload agree.

use std::path::Path;

use crate::config::Diagnostic;
use crate::dataplane::support::{self, BackendKind, Severity};

use crate::config::director::DirectorConfig;

/// Every refusal (error) and approximation (warning) of `kind` for `config`, in file order.
pub fn diagnostics(config: &DirectorConfig, kind: BackendKind) -> Vec<Diagnostic> {
    let file = config
        .file
        .0
        .as_deref()
        .unwrap_or(Path::new("director configuration"));
    let mut out = Vec::new();
    for v in &config.virtuals {
        let mut vs = v.configured_service();
        if let Some(f) = &v.fallback
            && vs.real(&f.addr).is_none()
        {
            vs.reals.push(f.to_real_server(1));
        }
        for l in support::limitations(kind, &vs) {
            let line = l
                .real
                .and_then(|a| {
                    v.reals
                        .iter()
                        .chain(v.fallback.as_ref())
                        .find(|r| r.addr == a)
                })
                .map_or(v.line.0, |r| r.line.0)
                .or(v.line.0);
            let message = format!(
                "virtual service {} on the {kind} dataplane: {}",
                crate::config::director::describe(&v.key),
                l.text
            );
            out.push(match l.severity {
                Severity::Refused => Diagnostic::error(file, line, message),
                Severity::Approximated => Diagnostic::warning(file, line, message),
            });
        }
    }
    out
}

/// The first refusal of `kind` for `config`: `Err` says which line and why, and the
/// configuration must not replace a running one.
pub fn supports(config: &DirectorConfig, kind: BackendKind) -> Result<(), Diagnostic> {
    match diagnostics(config, kind)
        .into_iter()
        .find(|d| d.severity == crate::config::Severity::Error)
    {
        Some(d) => Err(d),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Severity as DiagSeverity;
    use crate::config::director::{ServiceNames, parse_ldirectord_str};

    fn parse(text: &str) -> DirectorConfig {
        parse_ldirectord_str(
            text,
            Path::new("/etc/ha.d/ldirectord.cf"),
            &ServiceNames::builtin(),
        )
        .unwrap()
        .0
    }

    #[test]
    fn an_ipip_real_is_an_error_at_its_line_under_nftables_only() {
        let cfg = parse(
            "virtual = 192.0.2.10:80\n\treal = 198.51.100.1:80 masq\n\treal = 198.51.100.2:80 ipip\n\tfallback = 127.0.0.1:80 masq\n\tchecktype = on\n",
        );
        assert!(diagnostics(&cfg, BackendKind::Ipvs).is_empty());
        let d = diagnostics(&cfg, BackendKind::Nftables);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].severity, DiagSeverity::Error);
        let text = d[0].to_string();
        assert!(text.starts_with("/etc/ha.d/ldirectord.cf:3:"), "{text}");
        assert!(
            text.contains("ipip") && text.contains("--dataplane ipvs"),
            "{text}"
        );
        assert_eq!(supports(&cfg, BackendKind::Nftables).unwrap_err(), d[0]);
        assert_eq!(supports(&cfg, BackendKind::Ipvs), Ok(()));
    }

    #[test]
    fn the_fallback_counts_it_is_programmed_when_every_real_is_down() {
        // ldirectord's default forwarding is gate, the fallback's too.
        let cfg = parse(
            "fallback = 127.0.0.1:80\nvirtual = 192.0.2.10:80\n\treal = 198.51.100.1:80 masq\n\tchecktype = on\n",
        );
        let d = diagnostics(&cfg, BackendKind::Nftables);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].line, Some(1), "{}", d[0]);
        assert!(d[0].message.contains("127.0.0.1:80 uses gate"), "{}", d[0]);
    }

    #[test]
    fn approximations_are_warnings_at_the_virtual_line() {
        let cfg = parse(
            "\nvirtual = 192.0.2.10:80\n\treal = 198.51.100.1:80 masq\n\tscheduler = wlc\n\tchecktype = on\n",
        );
        let d = diagnostics(&cfg, BackendKind::Nftables);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].severity, d[0].line), (DiagSeverity::Warning, Some(2)));
        assert!(
            d[0].message.contains("scheduler wlc approximated as wrr"),
            "{}",
            d[0]
        );
        assert_eq!(supports(&cfg, BackendKind::Nftables), Ok(()));
    }
}
