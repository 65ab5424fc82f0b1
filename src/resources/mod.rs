//! Resources: ordered groups of VIPs, scripts (heartbeat resource.d, LSB, OCF) and built-ins.
//!
//! A haresources entry becomes a [`Resource`] through [`resolve`]: `IPaddr`/`IPaddr2` (and a
//! bare address) are the built-in [`ipaddr::Vip`]; `OCF::type::instance` an
//! [`script::OcfResource`]; anything else a script found in the lookup order of
//! [`script::ScriptDirs`]. [`group`] runs a group's resources in order with rollback and
//! stop retries, generic over [`group::GroupMember`] so its policy is tested without I/O.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::model::ResourceSpec;

pub mod conntrackd;
pub mod director;
pub mod group;
pub mod ipaddr;
pub mod ipvssync;
pub mod lvsrole;
pub mod script;
mod status;

pub use status::ResourceStatus;

use ipaddr::{AnnounceConfig, Vip, VipError, VipSpecError};
use script::{OcfResource, ScriptDirs, ScriptError, ScriptResource};

/// A failed resource operation.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A VIP operation failed.
    #[error(transparent)]
    Vip(#[from] VipError),
    /// A script or agent failed, timed out or could not run.
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// The director failed.
    #[error(transparent)]
    Director(#[from] director::DirectorResourceError),
    /// The LVS role switch failed.
    #[error(transparent)]
    LvsRole(#[from] lvsrole::LvsRoleError),
    /// The IPVS sync daemon switch failed.
    #[error(transparent)]
    IpvsSync(#[from] ipvssync::IpvsSyncError),
    /// conntrackd could not be run or switched.
    #[error(transparent)]
    Conntrackd(#[from] conntrackd::ConntrackdError),
}

/// One resource of a group, ready to run.
#[derive(Debug)]
pub enum Resource {
    /// Built-in virtual IP (`IPaddr`, `IPaddr2`, bare address).
    Vip(Vip),
    /// Built-in director (`ldirectord`, `ldirectord::FILE`).
    Director(director::DirectorResource),
    /// A built-in that does nothing here (`ipvsadm`: the director programs the rules).
    Noop(String),
    /// Built-in LVS role switch (`lvs`, `tunl`): director on start, real server on stop.
    LvsRole(lvsrole::LvsRole),
    /// Built-in IPVS connection sync (`ipvssync::IFACE[::SYNCID]`): master on start,
    /// backup on stop.
    IpvsSync(ipvssync::IpvsSync),
    /// Built-in connection sync for the nftables dataplane (`conntrackd::IFACE[::…]`):
    /// conntrackd primary on start, backup on stop.
    Conntrackd(conntrackd::Conntrackd),
    /// heartbeat-class or LSB script.
    Script(ScriptResource),
    /// OCF resource agent.
    Ocf(OcfResource),
}

/// What [`resolve`] needs: where scripts live and the operation defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveContext {
    /// Script lookup directories and OCF locations.
    pub dirs: ScriptDirs,
    /// Timeout of every script or agent operation.
    pub script_timeout: Duration,
    /// How VIPs announce themselves.
    pub announce: AnnounceConfig,
    /// The Linux-HA directory, where `ldirectord::NAME` files are looked up.
    pub ha_dir: PathBuf,
    /// What a bare `ldirectord` runs when the YAML has a `director:` section: its
    /// `ldirectord_cf` file, or its inline virtual services.
    pub director: Option<director::DirectorSource>,
    /// Which dataplane the director drives.
    pub dataplane: crate::director::runtime::BackendChoice,
    /// The VIPs of the group being resolved (a bare `lvs` switches those).
    pub group_vips: Vec<std::net::IpAddr>,
    /// hbd's state directory, where `conntrackd` keeps its files.
    pub state_dir: PathBuf,
}

impl Default for ResolveContext {
    fn default() -> Self {
        ResolveContext {
            dirs: ScriptDirs::default(),
            script_timeout: script::DEFAULT_SCRIPT_TIMEOUT,
            announce: AnnounceConfig::default(),
            ha_dir: PathBuf::from("/etc/ha.d"),
            director: None,
            dataplane: crate::director::runtime::BackendChoice::Auto,
            group_vips: Vec::new(),
            // daemon::DEFAULT_STATE_DIR (the daemon sets its own).
            state_dir: PathBuf::from("/var/lib/hbd"),
        }
    }
}

/// Why a resource entry cannot be turned into a runnable resource.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// `lvs`/`tunl` without a usable VIP.
    #[error(
        "resource {spec:?}: write lvs::VIP[::DEV] (or put an IPaddr resource in the same group)"
    )]
    LvsArgs {
        /// The entry as written.
        spec: String,
    },
    /// The IPaddr argument is invalid.
    #[error("resource {spec:?}: {source}")]
    Vip {
        /// The entry as written.
        spec: String,
        /// What is wrong with it.
        #[source]
        source: VipSpecError,
    },
    /// The script or agent cannot be found or configured.
    #[error("resource {spec:?}: {source}")]
    Script {
        /// The entry as written.
        spec: String,
        /// What is wrong.
        #[source]
        source: ScriptError,
    },
    /// `ipvssync` with unusable arguments.
    #[error("resource {spec:?}: {source}")]
    IpvsSyncArgs {
        /// The entry as written.
        spec: String,
        /// What is wrong.
        #[source]
        source: ipvssync::IpvsSyncArgsError,
    },
    /// `conntrackd` with unusable arguments.
    #[error("resource {spec:?}: {source}")]
    ConntrackdArgs {
        /// The entry as written.
        spec: String,
        /// What is wrong.
        #[source]
        source: crate::config::conntrackd::ConntrackdArgsError,
    },
    /// `OCF` without exactly a type and an instance.
    #[error("resource {spec:?}: OCF resources are written OCF::type::instance")]
    OcfArgs {
        /// The entry as written.
        spec: String,
    },
}

/// Built-in resource types handled without a script.
pub const BUILTIN_VIP_TYPES: [&str; 2] = ["IPaddr", "IPaddr2"];

/// Turns one haresources entry into a runnable resource.
pub fn resolve(spec: &ResourceSpec, ctx: &ResolveContext) -> Result<Resource, ResolveError> {
    match spec.kind.as_str() {
        "ldirectord" => {
            let source = match (spec.args.first(), &ctx.director) {
                (None, Some(source)) => source.clone(),
                (arg, _) => {
                    director::DirectorSource::File(crate::config::director::locate_ldirectord_cf(
                        arg.map(String::as_str),
                        &ctx.ha_dir,
                    ))
                }
            };
            return Ok(Resource::Director(director::DirectorResource::new(
                source,
                ctx.dataplane,
            )));
        }
        "ipvsadm" => return Ok(Resource::Noop(spec.spec.clone())),
        "ipvssync" => {
            return ipvssync::IpvsSync::from_args(&spec.args)
                .map(Resource::IpvsSync)
                .map_err(|source| ResolveError::IpvsSyncArgs {
                    spec: spec.spec.clone(),
                    source,
                });
        }
        "conntrackd" => {
            return crate::config::conntrackd::ConntrackdSpec::from_args(&spec.args)
                .map(|c| {
                    Resource::Conntrackd(conntrackd::Conntrackd::new(
                        c,
                        &ctx.state_dir,
                        ctx.group_vips.clone(),
                        ctx.script_timeout,
                    ))
                })
                .map_err(|source| ResolveError::ConntrackdArgs {
                    spec: spec.spec.clone(),
                    source,
                });
        }
        "lvs" | "tunl" => {
            let default_dev = if spec.kind == "tunl" { "tunl0" } else { "lo" };
            let vips = match spec.args.first() {
                Some(vip) => vec![vip.parse().map_err(|_| ResolveError::LvsArgs {
                    spec: spec.spec.clone(),
                })?],
                None => ctx.group_vips.clone(),
            };
            if vips.is_empty() {
                return Err(ResolveError::LvsArgs {
                    spec: spec.spec.clone(),
                });
            }
            let dev = spec
                .args
                .get(1)
                .cloned()
                .unwrap_or_else(|| default_dev.to_string());
            return Ok(Resource::LvsRole(lvsrole::LvsRole::new(
                vips,
                dev,
                spec.kind == "tunl",
            )));
        }
        _ => {}
    }
    if BUILTIN_VIP_TYPES.contains(&spec.kind.as_str()) {
        let args = spec.args.len();
        let vip = match spec.args.as_slice() {
            [one] => ipaddr::parse_vip(one),
            _ => Err(VipSpecError::ArgCount(args)),
        }
        .map_err(|source| ResolveError::Vip {
            spec: spec.spec.clone(),
            source,
        })?;
        return Ok(Resource::Vip(Vip::new(vip, ctx.announce)));
    }
    if spec.kind == "OCF" {
        let [agent, instance] = spec.args.as_slice() else {
            return Err(ResolveError::OcfArgs {
                spec: spec.spec.clone(),
            });
        };
        return OcfResource::resolve(agent, instance, &ctx.dirs, ctx.script_timeout)
            .map(Resource::Ocf)
            .map_err(|source| ResolveError::Script {
                spec: spec.spec.clone(),
                source,
            });
    }
    ScriptResource::resolve(&spec.kind, &spec.args, &ctx.dirs, ctx.script_timeout)
        .map(Resource::Script)
        .map_err(|source| ResolveError::Script {
            spec: spec.spec.clone(),
            source,
        })
}

impl Resource {
    /// A short name for logs and errors (`192.0.2.10`, `lvs`, `OCF::IPaddr2::vip`).
    pub fn name(&self) -> String {
        match self {
            Resource::Vip(v) => v.spec().ip.to_string(),
            Resource::Director(_) => "ldirectord".to_string(),
            Resource::LvsRole(r) => format!("lvs on {}", r.target().1),
            Resource::IpvsSync(s) => format!("ipvssync on {}", s.interface()),
            Resource::Conntrackd(c) => c.name(),
            Resource::Noop(name) => name.clone(),
            Resource::Script(s) => std::iter::once(s.name.as_str())
                .chain(s.args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join("::"),
            Resource::Ocf(o) => format!("OCF::{}::{}", o.agent, o.instance),
        }
    }

    /// Starts the resource.
    pub async fn start(&self) -> Result<(), ResourceError> {
        match self {
            Resource::Vip(v) => v.start().await.map(|_| ()).map_err(Into::into),
            Resource::Director(d) => d.start().await.map_err(Into::into),
            Resource::Noop(_) => Ok(()),
            Resource::LvsRole(r) => r.start().await.map_err(Into::into),
            Resource::IpvsSync(s) => s.start().await.map_err(Into::into),
            Resource::Conntrackd(c) => c.start().await.map_err(Into::into),
            Resource::Script(s) => s.start().await.map_err(Into::into),
            Resource::Ocf(o) => o.start().await.map_err(Into::into),
        }
    }

    /// Stops the resource (idempotent for VIPs; scripts should be too).
    pub async fn stop(&self) -> Result<(), ResourceError> {
        match self {
            Resource::Vip(v) => v.stop().await.map(|_| ()).map_err(Into::into),
            Resource::Director(d) => d.stop().await.map_err(Into::into),
            Resource::Noop(_) => Ok(()),
            Resource::LvsRole(r) => r.stop().await.map_err(Into::into),
            Resource::IpvsSync(s) => s.stop().await.map_err(Into::into),
            Resource::Conntrackd(c) => c.stop().await.map_err(Into::into),
            Resource::Script(s) => s.stop().await.map_err(Into::into),
            Resource::Ocf(o) => o.stop().await.map_err(Into::into),
        }
    }

    /// Checks the resource with its class's contract.
    pub async fn status(&self) -> Result<ResourceStatus, ResourceError> {
        match self {
            Resource::Vip(v) => Ok(if v.is_present().await? {
                ResourceStatus::Running
            } else {
                ResourceStatus::Stopped
            }),
            Resource::Director(d) => Ok(if d.is_running().await {
                ResourceStatus::Running
            } else {
                ResourceStatus::Stopped
            }),
            Resource::Noop(_) => Ok(ResourceStatus::Stopped),
            Resource::LvsRole(r) => Ok(if r.is_running().await? {
                ResourceStatus::Running
            } else {
                ResourceStatus::Stopped
            }),
            Resource::IpvsSync(s) => Ok(if s.is_running().await? {
                ResourceStatus::Running
            } else {
                ResourceStatus::Stopped
            }),
            Resource::Conntrackd(c) => Ok(if c.is_running().await? {
                ResourceStatus::Running
            } else {
                ResourceStatus::Stopped
            }),
            Resource::Script(s) => s.status().await.map_err(Into::into),
            Resource::Ocf(o) => o.status().await.map_err(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(spec: &str, kind: &str, args: &[&str]) -> ResourceSpec {
        ResourceSpec {
            spec: spec.into(),
            kind: kind.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn builtins_and_errors() {
        let ctx = ResolveContext::default();
        let r = resolve(&rs("192.0.2.10", "IPaddr", &["192.0.2.10"]), &ctx).unwrap();
        assert_eq!(r.name(), "192.0.2.10");
        assert!(matches!(r, Resource::Vip(_)));
        let r = resolve(
            &rs(
                "IPaddr2::192.0.2.10/24/eth0:v",
                "IPaddr2",
                &["192.0.2.10/24/eth0:v"],
            ),
            &ctx,
        )
        .unwrap();
        assert!(matches!(r, Resource::Vip(_)));
        let e = resolve(&rs("IPaddr::a::b", "IPaddr", &["a", "b"]), &ctx).unwrap_err();
        assert!(e.to_string().contains("IPaddr::a::b"), "{e}");
        let e = resolve(&rs("OCF::x", "OCF", &["x"]), &ctx).unwrap_err();
        assert!(matches!(e, ResolveError::OcfArgs { .. }));
    }

    #[test]
    fn scripts_from_configured_dirs() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("ipvsadm");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ctx = ResolveContext {
            dirs: ScriptDirs {
                resource_dirs: vec![tmp.path().to_path_buf()],
                lsb_dir: None,
                ocf_root: tmp.path().join("ocf"),
                ocf_conf_dir: tmp.path().join("conf"),
            },
            ..ResolveContext::default()
        };
        // ipvsadm and ldirectord are built-ins, found before any script of that name.
        let r = resolve(&rs("ipvsadm::x", "ipvsadm", &["x"]), &ctx).unwrap();
        assert!(matches!(r, Resource::Noop(_)), "{r:?}");
        let r = resolve(&rs("ldirectord", "ldirectord", &[]), &ctx).unwrap();
        assert!(matches!(r, Resource::Director(_)), "{r:?}");
        let r = resolve(&rs("ldirectord::lb.cf", "ldirectord", &["lb.cf"]), &ctx).unwrap();
        let Resource::Director(d) = r else { panic!() };
        assert_eq!(
            d.source(),
            director::DirectorSource::File(std::path::PathBuf::from("lb.cf"))
        );
        let e = resolve(&rs("OCF::Dummy::d", "OCF", &["Dummy", "d"]), &ctx).unwrap_err();
        assert!(e.to_string().contains("resource.d"), "{e}");
    }
}
