//! Desired vs actual virtual services → the minimal ordered list of changes.
//!
//! Reload and check results never tear down what is already right (features §4 item 7:
//! "compute a diff against observed kernel state, apply as an ordered transaction"): an
//! unchanged real produces nothing, a weight change is an edit, not a delete + add. Only
//! services hbd owns may be deleted, so rules written by someone else survive.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::model::{Persistence, RealServer, Scheduler, ServiceKey, VirtualService};

/// The service-level part of a virtual service (what `ipvsadm -A/-E` sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceParams {
    /// Service identity.
    pub key: ServiceKey,
    /// Scheduling algorithm.
    pub scheduler: Scheduler,
    /// Persistence, if any.
    pub persistence: Option<Persistence>,
}

impl ServiceParams {
    /// The parameters of a service, without its reals.
    pub fn of(vs: &VirtualService) -> ServiceParams {
        ServiceParams {
            key: vs.key,
            scheduler: vs.scheduler,
            persistence: vs.persistence,
        }
    }
}

/// One dataplane operation, in the vocabulary of `ipvsadm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create a service (`-A`).
    AddService(ServiceParams),
    /// Change scheduler or persistence of an existing service (`-E`).
    EditService(ServiceParams),
    /// Remove a service (`-D`); its reals have been removed by earlier changes.
    DelService(ServiceKey),
    /// Add a real to a service (`-a`).
    AddReal(ServiceKey, RealServer),
    /// Change weight, thresholds or forwarding of a real (`-e`).
    EditReal(ServiceKey, RealServer),
    /// Remove a real (`-d`).
    DelReal(ServiceKey, SocketAddr),
}

impl Change {
    /// The service the change is about.
    pub fn service(&self) -> ServiceKey {
        match self {
            Change::AddService(p) | Change::EditService(p) => p.key,
            Change::DelService(k)
            | Change::AddReal(k, _)
            | Change::EditReal(k, _)
            | Change::DelReal(k, _) => *k,
        }
    }
}

/// Changes that turn `actual` into `desired`.
///
/// Order: for each desired service (in the given order) its add/edit, then added reals,
/// edited reals, removed reals (adding before removing keeps capacity); then for each
/// actual service that is no longer desired and is in `owned`, its reals and the service.
/// Services neither desired nor owned are left alone. A duplicate key or real address in
/// `desired` is ignored after its first occurrence.
pub fn diff(
    desired: &[VirtualService],
    actual: &[VirtualService],
    owned: &HashSet<ServiceKey>,
) -> Vec<Change> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for want in desired {
        if !seen.insert(want.key) {
            continue;
        }
        let have = actual.iter().find(|a| a.key == want.key);
        match have {
            None => out.push(Change::AddService(ServiceParams::of(want))),
            Some(h) if !h.same_params(want) => {
                out.push(Change::EditService(ServiceParams::of(want)))
            }
            Some(_) => {}
        }
        let mut wanted = HashSet::new();
        let mut edits = Vec::new();
        for r in &want.reals {
            if !wanted.insert(r.addr) {
                continue;
            }
            match have.and_then(|h| h.real(&r.addr)) {
                None => out.push(Change::AddReal(want.key, *r)),
                Some(cur) if cur != r => edits.push(Change::EditReal(want.key, *r)),
                Some(_) => {}
            }
        }
        out.extend(edits);
        if let Some(h) = have {
            for r in &h.reals {
                if !wanted.contains(&r.addr) {
                    out.push(Change::DelReal(want.key, r.addr));
                }
            }
        }
    }
    for have in actual {
        if seen.contains(&have.key) || !owned.contains(&have.key) {
            continue;
        }
        for r in &have.reals {
            out.push(Change::DelReal(have.key, r.addr));
        }
        out.push(Change::DelService(have.key));
    }
    out
}

/// A change that cannot be applied to a state (what the kernel would answer with an errno).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Adding a service that exists.
    #[error("service {0} already exists")]
    ServiceExists(ServiceKey),
    /// Editing or deleting a service that does not exist.
    #[error("service {0} does not exist")]
    NoService(ServiceKey),
    /// Deleting a service that still has reals.
    #[error("service {0} still has real servers")]
    ServiceNotEmpty(ServiceKey),
    /// Adding a real that exists.
    #[error("real server {1} already exists in {0}")]
    RealExists(ServiceKey, SocketAddr),
    /// Editing or deleting a real that does not exist.
    #[error("real server {1} does not exist in {0}")]
    NoReal(ServiceKey, SocketAddr),
}

/// Apply changes to an in-memory state with the kernel's rules (used by the nftables
/// backend to compute the services to rebuild, and by the in-memory dataplane).
/// Stops at the first change that cannot be applied; earlier ones stay applied.
pub fn apply_changes(
    state: &mut Vec<VirtualService>,
    changes: &[Change],
) -> Result<(), ApplyError> {
    fn svc(state: &mut [VirtualService], k: ServiceKey) -> Result<&mut VirtualService, ApplyError> {
        state
            .iter_mut()
            .find(|s| s.key == k)
            .ok_or(ApplyError::NoService(k))
    }
    for c in changes {
        match c {
            Change::AddService(p) => {
                if state.iter().any(|s| s.key == p.key) {
                    return Err(ApplyError::ServiceExists(p.key));
                }
                state.push(VirtualService {
                    key: p.key,
                    scheduler: p.scheduler,
                    persistence: p.persistence,
                    reals: vec![],
                });
            }
            Change::EditService(p) => {
                let s = svc(state, p.key)?;
                s.scheduler = p.scheduler;
                s.persistence = p.persistence;
            }
            Change::DelService(k) => {
                let i = state
                    .iter()
                    .position(|s| s.key == *k)
                    .ok_or(ApplyError::NoService(*k))?;
                if !state[i].reals.is_empty() {
                    return Err(ApplyError::ServiceNotEmpty(*k));
                }
                state.remove(i);
            }
            Change::AddReal(k, r) => {
                let s = svc(state, *k)?;
                if s.real(&r.addr).is_some() {
                    return Err(ApplyError::RealExists(*k, r.addr));
                }
                s.reals.push(*r);
            }
            Change::EditReal(k, r) => {
                let s = svc(state, *k)?;
                let x = s
                    .reals
                    .iter_mut()
                    .find(|x| x.addr == r.addr)
                    .ok_or(ApplyError::NoReal(*k, r.addr))?;
                *x = *r;
            }
            Change::DelReal(k, a) => {
                let s = svc(state, *k)?;
                let i = s
                    .reals
                    .iter()
                    .position(|x| x.addr == *a)
                    .ok_or(ApplyError::NoReal(*k, *a))?;
                s.reals.remove(i);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::model::{Family, Forwarding, Netmask};
    use std::time::Duration;

    fn key(s: &str) -> ServiceKey {
        ServiceKey::Tcp(s.parse().unwrap())
    }
    fn real(s: &str, w: u32) -> RealServer {
        RealServer {
            weight: w,
            ..RealServer::new(s.parse().unwrap(), Forwarding::Masq)
        }
    }
    fn svc(k: &str, reals: &[(&str, u32)]) -> VirtualService {
        VirtualService {
            reals: reals.iter().map(|(a, w)| real(a, *w)).collect(),
            ..VirtualService::new(key(k), Scheduler::Wrr)
        }
    }
    fn owned(keys: &[ServiceKey]) -> HashSet<ServiceKey> {
        keys.iter().copied().collect()
    }

    #[test]
    fn identical_states_give_no_changes() {
        let s = vec![svc(
            "192.0.2.10:80",
            &[("198.51.100.1:80", 1), ("198.51.100.2:80", 3)],
        )];
        assert!(diff(&s, &s, &owned(&[s[0].key])).is_empty());
    }

    #[test]
    fn real_order_is_irrelevant() {
        let a = vec![svc(
            "192.0.2.10:80",
            &[("198.51.100.1:80", 1), ("198.51.100.2:80", 3)],
        )];
        let b = vec![svc(
            "192.0.2.10:80",
            &[("198.51.100.2:80", 3), ("198.51.100.1:80", 1)],
        )];
        assert!(diff(&a, &b, &HashSet::new()).is_empty());
    }

    #[test]
    fn new_service_comes_before_its_reals() {
        let want = vec![svc("192.0.2.10:80", &[("198.51.100.1:80", 2)])];
        let ch = diff(&want, &[], &HashSet::new());
        assert_eq!(
            ch,
            vec![
                Change::AddService(ServiceParams::of(&want[0])),
                Change::AddReal(key("192.0.2.10:80"), real("198.51.100.1:80", 2)),
            ]
        );
    }

    #[test]
    fn weight_change_is_an_edit_not_delete_add() {
        let have = vec![svc(
            "192.0.2.10:80",
            &[("198.51.100.1:80", 2), ("198.51.100.2:80", 1)],
        )];
        let want = vec![svc(
            "192.0.2.10:80",
            &[("198.51.100.1:80", 0), ("198.51.100.2:80", 1)],
        )];
        assert_eq!(
            diff(&want, &have, &HashSet::new()),
            vec![Change::EditReal(
                key("192.0.2.10:80"),
                real("198.51.100.1:80", 0)
            )]
        );
    }

    #[test]
    fn threshold_and_forwarding_changes_are_edits() {
        let have = vec![svc("192.0.2.10:80", &[("198.51.100.1:80", 1)])];
        let mut want = have.clone();
        want[0].reals[0].upper_threshold = 100;
        want[0].reals[0].forwarding = Forwarding::Gate;
        let ch = diff(&want, &have, &HashSet::new());
        assert_eq!(ch, vec![Change::EditReal(want[0].key, want[0].reals[0])]);
    }

    #[test]
    fn removed_real_is_deleted_after_additions() {
        let have = vec![svc("192.0.2.10:80", &[("198.51.100.1:80", 1)])];
        let want = vec![svc("192.0.2.10:80", &[("198.51.100.2:80", 1)])];
        let k = key("192.0.2.10:80");
        assert_eq!(
            diff(&want, &have, &HashSet::new()),
            vec![
                Change::AddReal(k, real("198.51.100.2:80", 1)),
                Change::DelReal(k, "198.51.100.1:80".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn service_param_change_is_an_edit() {
        let have = vec![svc("192.0.2.10:80", &[("198.51.100.1:80", 1)])];
        let mut want = have.clone();
        want[0].scheduler = Scheduler::Sh;
        want[0].persistence = Some(Persistence {
            timeout: Duration::from_secs(300),
            netmask: Netmask::host(Family::V4),
        });
        assert_eq!(
            diff(&want, &have, &HashSet::new()),
            vec![Change::EditService(ServiceParams::of(&want[0]))]
        );
    }

    #[test]
    fn owned_service_no_longer_desired_is_removed_reals_first() {
        let have = vec![svc(
            "192.0.2.10:80",
            &[("198.51.100.1:80", 1), ("198.51.100.2:80", 1)],
        )];
        let k = have[0].key;
        assert_eq!(
            diff(&[], &have, &owned(&[k])),
            vec![
                Change::DelReal(k, "198.51.100.1:80".parse().unwrap()),
                Change::DelReal(k, "198.51.100.2:80".parse().unwrap()),
                Change::DelService(k),
            ]
        );
    }

    #[test]
    fn foreign_service_is_never_removed() {
        let have = vec![
            svc("192.0.2.10:80", &[("198.51.100.1:80", 1)]),
            svc("192.0.2.99:25", &[("198.51.100.9:25", 1)]),
        ];
        let k = have[0].key;
        let ch = diff(&[], &have, &owned(&[k]));
        assert!(ch.iter().all(|c| c.service() == k), "{ch:?}");
        assert_eq!(ch.len(), 2);
    }

    #[test]
    fn tcp_and_udp_on_same_address_are_distinct() {
        let a: SocketAddr = "192.0.2.10:53".parse().unwrap();
        let have = vec![VirtualService::new(ServiceKey::Tcp(a), Scheduler::Rr)];
        let want = vec![VirtualService::new(ServiceKey::Udp(a), Scheduler::Rr)];
        let ch = diff(&want, &have, &owned(&[ServiceKey::Tcp(a)]));
        assert_eq!(
            ch,
            vec![
                Change::AddService(ServiceParams::of(&want[0])),
                Change::DelService(ServiceKey::Tcp(a)),
            ]
        );
    }

    #[test]
    fn duplicates_in_desired_are_ignored() {
        let mut s = svc(
            "192.0.2.10:80",
            &[("198.51.100.1:80", 1), ("198.51.100.1:80", 5)],
        );
        let want = vec![s.clone(), svc("192.0.2.10:80", &[])];
        let ch = diff(&want, &[], &HashSet::new());
        s.reals.truncate(1);
        assert_eq!(
            ch,
            vec![
                Change::AddService(ServiceParams::of(&s)),
                Change::AddReal(s.key, s.reals[0]),
            ]
        );
    }

    #[test]
    fn apply_changes_enforces_kernel_rules() {
        let k = key("192.0.2.10:80");
        let mut st = vec![svc("192.0.2.10:80", &[("198.51.100.1:80", 1)])];
        assert_eq!(
            apply_changes(&mut st, &[Change::DelService(k)]),
            Err(ApplyError::ServiceNotEmpty(k))
        );
        let a: SocketAddr = "198.51.100.9:80".parse().unwrap();
        assert_eq!(
            apply_changes(&mut st, &[Change::DelReal(k, a)]),
            Err(ApplyError::NoReal(k, a))
        );
        let again = Change::AddService(ServiceParams::of(&st[0]));
        assert_eq!(
            apply_changes(&mut st, &[again]),
            Err(ApplyError::ServiceExists(k))
        );
    }

    #[test]
    fn applying_the_diff_reaches_desired() {
        // A tiny in-memory dataplane: applying the changes must yield the desired state,
        // and diffing again must give nothing.
        let have = vec![
            svc(
                "192.0.2.10:80",
                &[("198.51.100.1:80", 1), ("198.51.100.2:80", 1)],
            ),
            svc("192.0.2.11:80", &[("198.51.100.3:80", 1)]),
            svc("192.0.2.12:80", &[]),
        ];
        let mut want = vec![
            svc(
                "192.0.2.10:80",
                &[("198.51.100.2:80", 4), ("198.51.100.4:80", 1)],
            ),
            svc("192.0.2.13:443", &[("198.51.100.5:443", 1)]),
        ];
        want[0].scheduler = Scheduler::Rr;
        let own = owned(&[have[0].key, have[1].key]);
        let ch = diff(&want, &have, &own);
        let mut state = have.clone();
        apply_changes(&mut state, &ch).unwrap();
        // the foreign 192.0.2.12 service stays
        assert!(state.iter().any(|s| s.key == key("192.0.2.12:80")));
        state.retain(|s| s.key != key("192.0.2.12:80"));
        assert!(diff(&want, &state, &own).is_empty());
        assert_eq!(state.len(), 2);
    }
}
