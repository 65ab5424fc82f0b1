//! What each dataplane can do with a virtual service, decided before anything is programmed.
//!
//! IPVS does everything ldirectord asks for. The nftables dataplane is DNAT in the netfilter
//! NAT hook: it cannot forward by direct routing or tunnel, and has no connection counts to
//! schedule by; it caps a real's connections only after DNAT, and keeps persistence in a
//! timed map refreshed by packets rather than by IPVS's connection entries. Some of that it
//! refuses ([`Severity::Refused`]: the service cannot run), some it approximates
//! ([`Severity::Approximated`]: it runs, differently from IPVS, and says how). Every IPVS
//! scheduler has one answer here ([`scheduler_note`]): exact, or run as another with what
//! differs named; `sip` is a persistence engine, not a scheduler, and the parser refuses it.
//!
//! [`limitations`] is a pure function of (service, backend kind): the director calls it
//! before starting or replacing anything (a reload the dataplane cannot carry out is refused
//! while the running director keeps running), `hbd --check-config` prints it with
//! `file:line`, and `hactl ipvs` prints the approximations beside the table. The nftables
//! backend itself refuses what this module refuses ([`supports`]), so the two cannot drift.

use std::fmt;
use std::net::SocketAddr;

use super::model::{Family, Forwarding, RealServer, Scheduler, ServiceKey, VirtualService};

/// Which kernel dataplane a service would run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Kernel IPVS: every scheduler, forwarding method and option.
    Ipvs,
    /// nftables DNAT in hbd's own table.
    Nftables,
    /// In memory (simulation): accepts everything.
    Memory,
}

impl BackendKind {
    /// The name operators use (`--dataplane`).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Ipvs => "ipvs",
            BackendKind::Nftables => "nftables",
            BackendKind::Memory => "memory",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a limitation stops the service from running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// It runs, but not as IPVS would run it: say so (check-config warning, `hactl ipvs`).
    Approximated,
    /// It cannot run on this dataplane.
    Refused,
}

/// One thing a dataplane cannot do as asked, for one service (and one real, when it is that
/// real's setting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limitation {
    /// Refused or approximated.
    pub severity: Severity,
    /// The service concerned.
    pub service: ServiceKey,
    /// The real concerned, when the setting is a real's.
    pub real: Option<SocketAddr>,
    /// What happens and what to do instead, in words.
    pub text: String,
}

impl fmt::Display for Limitation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Every limitation of `kind` for `vs`, refusals first within a real, in real order.
pub fn limitations(kind: BackendKind, vs: &VirtualService) -> Vec<Limitation> {
    match kind {
        BackendKind::Ipvs | BackendKind::Memory => Vec::new(),
        BackendKind::Nftables => nftables(vs),
    }
}

/// The first refusal of `kind` among `services`, as the error a backend returns.
pub fn supports(kind: BackendKind, services: &[VirtualService]) -> Result<(), Limitation> {
    match services
        .iter()
        .flat_map(|vs| limitations(kind, vs))
        .find(|l| l.severity == Severity::Refused)
    {
        Some(l) => Err(l),
        None => Ok(()),
    }
}

fn nftables(vs: &VirtualService) -> Vec<Limitation> {
    let mut out = Vec::new();
    let mut say = |severity, real, text: String| {
        out.push(Limitation {
            severity,
            service: vs.key,
            real,
            text,
        })
    };
    if vs.key.family() != Family::V4 {
        say(
            Severity::Refused,
            None,
            "IPv6 services are not implemented in the nftables dataplane (table ip); use IPVS (--dataplane ipvs, module ip_vs)".into(),
        );
    }
    if let Some(note) = scheduler_note(vs) {
        say(Severity::Approximated, None, note.to_string());
    }
    if let Some(p) = &vs.persistence {
        say(
            Severity::Approximated,
            None,
            format!(
                "persistent = {} under nftables: a timed map keeps a client (/{} source) on its real until {} s after its last packet (IPVS: after its last connection is gone, however long it idles); the clients of a quiesced or removed real move at once (IPVS keeps sending them to a quiesced real unless net.ipv4.vs.expire_quiescent_template = 1)",
                p.timeout.as_secs(),
                p.netmask.prefix,
                p.timeout.as_secs()
            ),
        );
    }
    for r in &vs.reals {
        if r.forwarding != Forwarding::Masq {
            say(
                Severity::Refused,
                Some(r.addr),
                format!(
                    "real {} uses {}: the nftables dataplane forwards by DNAT only (masq); gate and ipip need IPVS (load ip_vs and use --dataplane ipvs), or write masq and route the replies through the director",
                    r.addr,
                    r.forwarding.name()
                ),
            );
        }
        if !r.addr.is_ipv4() {
            say(
                Severity::Refused,
                Some(r.addr),
                format!("real {} is not IPv4; use IPVS", r.addr),
            );
        }
        if let Some(text) = threshold_note(r) {
            say(Severity::Approximated, Some(r.addr), text);
        }
    }
    out
}

/// What the nftables dataplane does with a real's connection thresholds, when it has any.
///
/// IPVS (`ip_vs_bind_dest`/`ip_vs_unbind_dest`) marks a real overloaded once it holds `u`
/// connections and gives it no new ones until it is below `l` (below 3/4 of `u` when `l` is
/// 0); the schedulers skip it meanwhile. nftables caps the real at `u` by dropping the new
/// connection that would exceed it (a `ct count` rule after DNAT); it cannot skip the real
/// at balancing time nor keep it out until `l`.
fn threshold_note(r: &RealServer) -> Option<String> {
    let (l, u) = (r.lower_threshold, r.upper_threshold);
    match (l, u) {
        (0, 0) => None,
        (_, 0) => Some(format!(
            "real {}: <l:{l}> without <u:N> has no effect (as in IPVS)",
            r.addr
        )),
        _ => Some(format!(
            "real {}: <u:{u}> is a hard cap under nftables: a new connection beyond its {u} live ones is dropped after DNAT and the client's SYN retransmission (about 1 s later) is balanced afresh, where IPVS passes it to another real at once; {}connections opened before the cap was programmed are not counted; use IPVS for exact thresholds",
            r.addr,
            if l > 0 {
                format!(
                    "<l:{l}> has no effect (no hysteresis: the real takes new connections again as soon as it holds fewer than {u}); "
                )
            } else {
                format!(
                    "there is no hysteresis (IPVS waits until it holds fewer than 3/4 of {u}); "
                )
            }
        )),
    }
}

/// How the nftables dataplane runs a scheduler it cannot run as IPVS does: which one it
/// runs instead (if any) and what differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerNote {
    /// The scheduler asked for.
    pub asked: Scheduler,
    /// The scheduler nftables runs instead; `None` when it runs the same one, differently.
    pub runs_as: Option<Scheduler>,
    /// What differs from IPVS, and what to do about it.
    pub differs: String,
}

impl fmt::Display for SchedulerNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.runs_as {
            Some(y) => write!(
                f,
                "scheduler {} approximated as {y} under nftables: {}",
                self.asked, self.differs
            ),
            None => write!(
                f,
                "scheduler {} approximated under nftables: {}",
                self.asked, self.differs
            ),
        }
    }
}

/// How the nftables dataplane runs `vs`'s scheduler: `None` when exactly (rr, wrr: the
/// `numgen` slots follow the weights; sh, dh: a `jhash` of the source or destination keeps
/// each client or destination on one real while the live reals are unchanged; fo: every new
/// connection to the live real of highest weight), else a [`SchedulerNote`]. IPVS's own
/// description of each scheduler is in `ipvsadm(8)`.
pub fn scheduler_note(vs: &VirtualService) -> Option<SchedulerNote> {
    let asked = vs.scheduler;
    let note = |runs_as: Option<Scheduler>, differs: String| {
        Some(SchedulerNote {
            asked,
            runs_as,
            differs,
        })
    };
    match asked {
        Scheduler::Rr | Scheduler::Wrr | Scheduler::Sh | Scheduler::Dh => None,
        Scheduler::Fo => {
            // The only difference: which of several reals of the same highest weight wins.
            let top = vs.reals.iter().map(|r| r.weight).max().unwrap_or(0);
            let tied = vs.reals.iter().filter(|r| r.weight == top).count();
            if top == 0 || tied < 2 {
                return None;
            }
            note(
                None,
                format!(
                    "{tied} reals share the highest weight {top}; nftables gives every new connection to the lowest address among them, IPVS to the one added first; give them different weights to choose"
                ),
            )
        }
        Scheduler::Ovf => note(
            Some(Scheduler::Fo),
            "every new connection goes to the live real of highest weight, which never overflows to the next real (nftables cannot see a real's active connections); use IPVS for ovf, or write scheduler = fo".into(),
        ),
        Scheduler::Mh => note(
            Some(Scheduler::Sh),
            "a source hash; reals added or removed move more clients than Maglev would; use IPVS for mh".into(),
        ),
        Scheduler::Lc => note(
            Some(Scheduler::Rr),
            "weights are ignored, as lc ignores them, but nftables cannot see connection counts, so a real with long connections is not spared; use IPVS for lc, or write scheduler = rr".into(),
        ),
        Scheduler::Wlc | Scheduler::Sed | Scheduler::Nq => note(
            Some(Scheduler::Wrr),
            format!(
                "new connections in proportion to the weights; nftables cannot see connection counts, so a real with long or slow connections is not spared; use IPVS for {asked}, or write scheduler = wrr"
            ),
        ),
        Scheduler::Lblc | Scheduler::Lblcr => note(
            Some(Scheduler::Dh),
            format!(
                "a destination hash keeps each destination on one real, but nftables cannot see connection counts, so an overloaded real keeps its destinations{}; use IPVS for {asked}, or write scheduler = dh",
                if asked == Scheduler::Lblcr {
                    " and no destination is served by a set of reals"
                } else {
                    ""
                }
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{Netmask, Persistence, RealServer};
    use std::time::Duration;

    fn service(sched: Scheduler, fwd: &[Forwarding]) -> VirtualService {
        let mut vs = VirtualService::new(ServiceKey::Tcp("192.0.2.10:80".parse().unwrap()), sched);
        vs.reals = fwd
            .iter()
            .enumerate()
            .map(|(i, f)| RealServer::new(format!("198.51.100.{}:80", i + 1).parse().unwrap(), *f))
            .collect();
        vs
    }

    #[test]
    fn ipvs_takes_everything() {
        let mut vs = service(Scheduler::Lblcr, &[Forwarding::Ipip, Forwarding::Gate]);
        vs.reals[0].upper_threshold = 10;
        assert!(limitations(BackendKind::Ipvs, &vs).is_empty());
        assert_eq!(supports(BackendKind::Ipvs, &[vs]), Ok(()));
    }

    #[test]
    fn nftables_refuses_gate_and_ipip_naming_the_real_and_the_fix() {
        let vs = service(
            Scheduler::Wrr,
            &[Forwarding::Masq, Forwarding::Ipip, Forwarding::Gate],
        );
        let l = limitations(BackendKind::Nftables, &vs);
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(l.iter().all(|l| l.severity == Severity::Refused));
        assert_eq!(l[0].real, Some("198.51.100.2:80".parse().unwrap()));
        assert!(l[0].text.contains("ipip") && l[0].text.contains("--dataplane ipvs"));
        let e = supports(BackendKind::Nftables, &[vs]).unwrap_err();
        assert_eq!(e, l[0]);
        let ok = service(Scheduler::Wrr, &[Forwarding::Masq]);
        assert_eq!(supports(BackendKind::Nftables, &[ok]), Ok(()));
    }

    /// Every IPVS scheduler has a stated nftables behaviour: exact (no note), or run as
    /// another with what differs named. (`sip` is not a scheduler: the parser refuses it.)
    #[test]
    fn every_scheduler_is_exact_or_names_what_it_runs_as() {
        use Scheduler::*;
        let want: [(Scheduler, Option<Scheduler>); 13] = [
            (Rr, None),
            (Wrr, None),
            (Sh, None),
            (Dh, None),
            (Fo, None),
            (Ovf, Some(Fo)),
            (Mh, Some(Sh)),
            (Lc, Some(Rr)),
            (Wlc, Some(Wrr)),
            (Sed, Some(Wrr)),
            (Nq, Some(Wrr)),
            (Lblc, Some(Dh)),
            (Lblcr, Some(Dh)),
        ];
        assert_eq!(want.len(), Scheduler::ALL.len());
        for (s, runs_as) in want {
            let vs = service(s, &[Forwarding::Masq, Forwarding::Masq]);
            let mut weighted = vs.clone();
            weighted.reals[0].weight = 3;
            let l = limitations(BackendKind::Nftables, &weighted);
            match runs_as {
                None => assert!(l.is_empty(), "{s}: {l:?}"),
                Some(y) => {
                    assert_eq!(l.len(), 1, "{s}: {l:?}");
                    assert_eq!(l[0].severity, Severity::Approximated);
                    let head = format!("scheduler {s} approximated as {y} under nftables: ");
                    assert!(l[0].text.starts_with(&head), "{}", l[0]);
                    assert!(l[0].text.contains("use IPVS for"), "{}", l[0]);
                }
            }
        }
        // fo is exact unless two reals share the highest weight (then the tie-break differs).
        let tied = service(Fo, &[Forwarding::Masq, Forwarding::Masq]);
        let l = limitations(BackendKind::Nftables, &tied);
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(
            l[0].text
                .starts_with("scheduler fo approximated under nftables: 2 reals share"),
            "{}",
            l[0]
        );
    }

    #[test]
    fn persistence_and_thresholds_say_what_differs() {
        let mut vs = service(Scheduler::Wrr, &[Forwarding::Masq]);
        vs.persistence = Some(Persistence {
            timeout: Duration::from_secs(300),
            netmask: Netmask { prefix: 24 },
        });
        vs.reals[0].lower_threshold = 5;
        vs.reals[0].upper_threshold = 50;
        let l = limitations(BackendKind::Nftables, &vs);
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(l[0].text.contains("persistent = 300"), "{}", l[0]);
        assert!(l[0].text.contains("/24") && l[0].text.contains("after its last packet"));
        assert!(
            l[1].text.contains("<u:50> is a hard cap") && l[1].text.contains("<l:5> has no effect"),
            "{}",
            l[1]
        );
        assert_eq!(l[1].real, Some(vs.reals[0].addr));
        assert_eq!(
            supports(BackendKind::Nftables, &[vs]),
            Ok(()),
            "approximations run"
        );
    }

    #[test]
    fn nftables_refuses_ipv6() {
        let vs = VirtualService::new(
            ServiceKey::Tcp("[2001:db8::1]:80".parse().unwrap()),
            Scheduler::Rr,
        );
        assert!(supports(BackendKind::Nftables, &[vs]).is_err());
    }
}
