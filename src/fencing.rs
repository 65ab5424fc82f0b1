//! Fencing (STONITH): resetting a peer that died while it may have held groups, before this
//! node takes them over. A peer whose daemon was killed keeps its addresses up; without
//! fencing both nodes would answer for the VIP until it is rebooted by hand.
//!
//! The node core decides *when* (see `daemon::node::core`): a device is run only for the
//! pair's peer, only when it may hold something, and the takeover waits for success. This
//! module runs the device: a cluster-glue plugin through `stonith(8)`, as heartbeat did, or
//! an external agent called `AGENT ACTION NODE` with its parameters in the environment.
//! Each attempt runs in its own process group with a timeout; attempts are retried
//! [`RETRY_PAUSE`] apart up to the configured count.

use std::ffi::OsStr;
use std::time::Duration;

use thiserror::Error;

use crate::config::{FenceKind, FencingSpec, GlueParams, STONITH_COMMAND};
use crate::resources::script::run_with_timeout;

/// Pause between two failed attempts.
pub const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Why a peer could not be fenced.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FenceError {
    /// No device applies to this node.
    #[error("no fence device applies to node {0}")]
    NoDevice(String),
    /// Every attempt failed; the last one's reason.
    #[error("{attempts} attempt(s) failed, the last: {last}")]
    Failed {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's failure.
        last: String,
    },
}

/// The program and arguments that ask `kind` to `action` the node `peer`, and the
/// environment it gets.
pub fn command(
    kind: &FenceKind,
    action: &str,
    peer: &str,
) -> (String, Vec<String>, Vec<(String, String)>) {
    match kind {
        FenceKind::Glue { plugin, params } => {
            let mut args = vec!["-t".to_string(), plugin.clone()];
            match params {
                GlueParams::Inline(p) => args.extend(["-p".to_string(), p.clone()]),
                GlueParams::File(f) => args.extend(["-F".to_string(), f.display().to_string()]),
            }
            args.extend(["-T".to_string(), action.to_string(), peer.to_string()]);
            (STONITH_COMMAND.to_string(), args, Vec::new())
        }
        FenceKind::Agent { path, params } => (
            path.display().to_string(),
            vec![action.to_string(), peer.to_string()],
            params.clone(),
        ),
    }
}

/// Fences `peer` with the device `us` uses: `spec.attempts` tries, each bounded by
/// `spec.timeout`; `Ok` once one succeeded (exit status 0).
pub async fn fence(spec: &FencingSpec, us: &str, peer: &str) -> Result<(), FenceError> {
    let device = spec
        .device_for(us)
        .ok_or_else(|| FenceError::NoDevice(us.to_string()))?;
    let (program, args, env) = command(&device.kind, spec.action.as_str(), peer);
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let mut last = String::new();
    for attempt in 1..=spec.attempts {
        tracing::warn!(%peer, attempt, action = spec.action.as_str(), program = %program, "fencing the peer");
        match run_with_timeout(program.as_ref(), &args, &env, "fence", spec.timeout).await {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                last = format!(
                    "{program} exited with {}{}",
                    out.status
                        .code()
                        .map_or_else(|| "a signal".to_string(), |c| c.to_string()),
                    [out.stderr.trim(), out.stdout.trim()]
                        .iter()
                        .find(|t| !t.is_empty())
                        .map(|t| format!(": {t}"))
                        .unwrap_or_default()
                );
            }
            Err(e) => last = e.to_string(),
        }
        tracing::error!(%peer, attempt, reason = %last, "fencing attempt failed");
        if attempt < spec.attempts {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
    Err(FenceError::Failed {
        attempts: spec.attempts,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FenceAction, FenceDevice};
    use std::path::PathBuf;

    fn spec(devices: Vec<FenceDevice>) -> FencingSpec {
        FencingSpec {
            devices,
            action: FenceAction::Reset,
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }

    #[test]
    fn glue_devices_go_through_stonith_with_inline_params_or_a_file() {
        let inline = FenceKind::Glue {
            plugin: "external/ipmi".into(),
            params: GlueParams::Inline("n2 192.0.2.50 admin secret lan".into()),
        };
        let (program, args, env) = command(&inline, "reset", "n2");
        assert_eq!(program, STONITH_COMMAND);
        assert_eq!(
            args,
            [
                "-t",
                "external/ipmi",
                "-p",
                "n2 192.0.2.50 admin secret lan",
                "-T",
                "reset",
                "n2"
            ]
        );
        assert!(env.is_empty());
        let file = FenceKind::Glue {
            plugin: "baytech".into(),
            params: GlueParams::File(PathBuf::from("/etc/ha.d/conf/stonith.baytech")),
        };
        assert_eq!(
            command(&file, "off", "n2").1,
            [
                "-t",
                "baytech",
                "-F",
                "/etc/ha.d/conf/stonith.baytech",
                "-T",
                "off",
                "n2"
            ]
        );
    }

    #[test]
    fn agents_get_action_and_node_as_arguments_and_params_in_the_environment() {
        let agent = FenceKind::Agent {
            path: PathBuf::from("/usr/local/sbin/fence-peer"),
            params: vec![("ipaddr".into(), "192.0.2.50".into())],
        };
        let (program, args, env) = command(&agent, "reset", "n2");
        assert_eq!(program, "/usr/local/sbin/fence-peer");
        assert_eq!(args, ["reset", "n2"]);
        assert_eq!(env, [("ipaddr".to_string(), "192.0.2.50".to_string())]);
    }

    #[test]
    fn the_device_named_for_this_node_wins_over_the_one_for_every_node() {
        let glue = |plugin: &str, from: Option<&str>| FenceDevice {
            from: from.map(str::to_string),
            kind: FenceKind::Glue {
                plugin: plugin.into(),
                params: GlueParams::Inline(String::new()),
            },
        };
        let s = spec(vec![glue("any", None), glue("mine", Some("n1"))]);
        let plugin = |d: Option<&FenceDevice>| match d.map(|d| &d.kind) {
            Some(FenceKind::Glue { plugin, .. }) => Some(plugin.clone()),
            _ => None,
        };
        assert_eq!(plugin(s.device_for("n1")).as_deref(), Some("mine"));
        assert_eq!(plugin(s.device_for("n2")).as_deref(), Some("any"));
        let only_n1 = spec(vec![glue("mine", Some("n1"))]);
        assert!(only_n1.device_for("n2").is_none());
    }

    /// An agent script in a temporary directory.
    fn agent(dir: &tempfile::TempDir, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join("agent");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn a_succeeding_agent_fences_with_its_arguments_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let path = agent(
            &dir,
            &format!("echo \"$1 $2 $ipaddr\" >> '{}'", log.display()),
        );
        let s = spec(vec![FenceDevice {
            from: None,
            kind: FenceKind::Agent {
                path,
                params: vec![("ipaddr".into(), "192.0.2.50".into())],
            },
        }]);
        fence(&s, "n1", "n2").await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "reset n2 192.0.2.50\n"
        );
    }

    #[tokio::test]
    async fn a_failing_agent_is_tried_every_attempt_and_its_words_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let path = agent(
            &dir,
            &format!(
                "echo try >> '{}'; echo 'power switch unreachable' >&2; exit 3",
                log.display()
            ),
        );
        let s = spec(vec![FenceDevice {
            from: None,
            kind: FenceKind::Agent {
                path,
                params: vec![],
            },
        }]);
        let e = fence(&s, "n1", "n2").await.unwrap_err();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "try\ntry\n");
        match e {
            FenceError::Failed { attempts, last } => {
                assert_eq!(attempts, 2);
                assert!(
                    last.contains("exited with 3: power switch unreachable"),
                    "{last}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// ha.cf's `stonith_host` lines, loaded as the daemon loads them, drive cluster-glue's
    /// real stonith(8) (its `null` plugin, which accepts any reset). scripts/setup.sh
    /// installs cluster-glue.
    #[tokio::test]
    async fn stonith_lines_reset_the_peer_through_cluster_glue() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ha.cf"),
            "keepalive 100ms\ndeadtime 1\nucast eth0 192.0.2.12\nnode dir1\nnode dir2\n\
             stonith_host dir2 external/ipmi dir1 192.0.2.50 admin secret lan\n\
             stonith_host * null dir1 dir2\n",
        )
        .unwrap();
        let keys = dir.path().join("authkeys");
        std::fs::write(&keys, "auth 1\n1 sha256 fence\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
        let loaded = crate::config::load_ha_dir(dir.path(), "dir1").expect("loads");
        let spec = loaded.config.fencing.clone().expect("fencing configured");
        // dir1 uses the `*` line; dir2 its own.
        let (program, args, _) = command(&spec.device_for("dir1").unwrap().kind, "reset", "dir2");
        assert_eq!(
            (program.as_str(), &args[..2]),
            (STONITH_COMMAND, &["-t".to_string(), "null".to_string()][..])
        );
        assert!(matches!(
            &spec.device_for("dir2").unwrap().kind,
            FenceKind::Glue { plugin, .. } if plugin == "external/ipmi"
        ));
        fence(&spec, "dir1", "dir2")
            .await
            .expect("stonith -t null resets dir2");
    }

    #[tokio::test]
    async fn no_device_for_this_node_is_an_error_not_a_silent_success() {
        let s = spec(vec![FenceDevice {
            from: Some("n2".into()),
            kind: FenceKind::Agent {
                path: PathBuf::from("/bin/true"),
                params: vec![],
            },
        }]);
        assert_eq!(
            fence(&s, "n1", "n2").await,
            Err(FenceError::NoDevice("n1".into()))
        );
    }
}
