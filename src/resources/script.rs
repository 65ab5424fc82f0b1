//! Script resources: heartbeat `resource.d` scripts, LSB init scripts and OCF agents.
//!
//! Lookup (heartbeat `ResourceManager scriptpath`): the configured resource directories in
//! order (hbd's own `resources/` first, then `/etc/ha.d/resource.d`), then `/etc/init.d`; the
//! first *executable* file wins. Built-in types (`IPaddr`…) never reach this module.
//!
//! Invocation: `<path> [args…] start|stop|status`, stdin closed, stdout/stderr captured and
//! logged. Unlike heartbeat, every run has a timeout; on expiry the whole process group the
//! script leads is killed.
//!
//! Status contracts:
//! * heartbeat class (resource directories): the exit code is ignored; stdout containing
//!   `not running` (any case) means stopped, else `running` (any case) or `OK` means running,
//!   anything else stopped (`ResourceManager we_own_resource`).
//! * LSB (`/etc/init.d`): exit 0 running, 3 stopped, anything else unknown (LSB 3.1 §20.2).
//! * OCF (`OCF::type::instance`): `<root>/resource.d/<provider>/<type> monitor`, exit 0
//!   running, 7 not running, 8 running as master, anything else a failure (OCF RA API 1.0).

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::task::JoinHandle;

use super::status::ResourceStatus;

/// Default time a script operation may take (heartbeat had none; pacemaker's default op
/// timeout is 20 s).
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long output is still collected after the script exited, in case a daemon it started
/// kept the pipes open.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);
/// Captured output kept per stream (the tail).
const OUTPUT_CAP: usize = 64 * 1024;
/// Characters of stderr quoted in errors.
const STDERR_TAIL: usize = 400;
/// LSB exit code of `status` for a stopped service (LSB 3.1 §20.2).
pub const LSB_NOT_RUNNING: i32 = 3;
/// OCF exit code "not running" (OCF_NOT_RUNNING).
pub const OCF_NOT_RUNNING: i32 = 7;
/// OCF exit code "running as master" (OCF_RUNNING_MASTER).
pub const OCF_RUNNING_MASTER: i32 = 8;

/// Which status contract a script follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptClass {
    /// heartbeat `resource.d`: status read from stdout.
    Heartbeat,
    /// LSB init script: status from the exit code.
    Lsb,
}

/// Where scripts are looked up; configurable so tests use temporary directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptDirs {
    /// heartbeat-class directories, searched in order.
    pub resource_dirs: Vec<PathBuf>,
    /// LSB init script directory, searched last.
    pub lsb_dir: Option<PathBuf>,
    /// OCF root (`OCF_ROOT`); agents live in `<root>/resource.d/<provider>/<type>`.
    pub ocf_root: PathBuf,
    /// Per-instance OCF parameters: `<dir>/<type>/<instance>` with `KEY=value` lines.
    pub ocf_conf_dir: PathBuf,
}

impl Default for ScriptDirs {
    /// The system locations: hbd's shipped scripts, heartbeat's resource.d, init.d, OCF.
    fn default() -> Self {
        ScriptDirs {
            resource_dirs: vec![
                PathBuf::from("/usr/lib/hbd/resources"),
                PathBuf::from("/etc/ha.d/resource.d"),
            ],
            lsb_dir: Some(PathBuf::from("/etc/init.d")),
            ocf_root: PathBuf::from("/usr/lib/ocf"),
            ocf_conf_dir: PathBuf::from("/etc/ha.d/conf/OCF"),
        }
    }
}

/// Why a script could not be found, run, or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// No executable with that name in any searched directory.
    #[error("resource script {name:?} not found (or not executable) in {}", dirs_list(.searched))]
    NotFound {
        /// The script name.
        name: String,
        /// Directories searched, in order.
        searched: Vec<PathBuf>,
    },
    /// The name would escape the directories (`/`, `.`, `..`, empty).
    #[error("resource name {0:?} is not a plain file name")]
    BadName(String),
    /// The OCF parameter file has a malformed line.
    #[error("{path}:{line}: expected KEY=value with KEY made of letters, digits and _")]
    BadOcfConf {
        /// The parameter file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// The OCF parameter file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    OcfConfIo {
        /// The parameter file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The script could not be started.
    #[error("cannot run {script} {op}: {source}")]
    Spawn {
        /// Script path.
        script: PathBuf,
        /// Operation.
        op: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The script did not finish in time; its process group was killed.
    #[error("{script} {op} did not finish within {after:?}; its process group was killed")]
    Timeout {
        /// Script path.
        script: PathBuf,
        /// Operation.
        op: String,
        /// The timeout.
        after: Duration,
    },
    /// The script exited unsuccessfully.
    #[error("{script} {op} failed with {}: {stderr_tail}", code.map_or("a signal".to_string(), |c| format!("exit code {c}")))]
    Failed {
        /// Script path.
        script: PathBuf,
        /// Operation.
        op: String,
        /// Exit code, `None` when killed by a signal.
        code: Option<i32>,
        /// Last characters of stderr.
        stderr_tail: String,
    },
}

fn dirs_list(dirs: &[PathBuf]) -> String {
    let v: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    v.join(", ")
}

fn check_name(name: &str) -> Result<(), ScriptError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(ScriptError::BadName(name.to_string()));
    }
    Ok(())
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Finds a script by name in the lookup order; the first executable file wins.
pub fn find_script(name: &str, dirs: &ScriptDirs) -> Result<(PathBuf, ScriptClass), ScriptError> {
    check_name(name)?;
    let candidates = dirs
        .resource_dirs
        .iter()
        .map(|d| (d, ScriptClass::Heartbeat))
        .chain(dirs.lsb_dir.iter().map(|d| (d, ScriptClass::Lsb)));
    let mut searched = Vec::new();
    for (dir, class) in candidates {
        let path = dir.join(name);
        if is_executable(&path) {
            return Ok((path, class));
        }
        searched.push(dir.clone());
    }
    Err(ScriptError::NotFound {
        name: name.to_string(),
        searched,
    })
}

/// What a finished script run produced.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Captured stdout (tail, lossily decoded).
    pub stdout: String,
    /// Captured stderr (tail, lossily decoded).
    pub stderr: String,
}

fn push_capped(buf: &mut Vec<u8>, data: &[u8]) {
    buf.extend_from_slice(data);
    if buf.len() > OUTPUT_CAP {
        let cut = buf.len() - OUTPUT_CAP;
        buf.drain(..cut);
    }
}

fn tail(s: &str, n: usize) -> String {
    let t = s.trim();
    let start = t.len().saturating_sub(n);
    let start = (start..=t.len())
        .find(|i| t.is_char_boundary(*i))
        .unwrap_or(t.len());
    t[start..].to_string()
}

/// Runs `program args…` in its own process group with a timeout, capturing output.
pub async fn run_with_timeout(
    program: &Path,
    args: &[&OsStr],
    envs: &[(String, String)],
    op: &str,
    timeout: Duration,
) -> Result<RunOutput, ScriptError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = crate::spawn::spawn_past_busy_text(&mut cmd)
        .await
        .map_err(|source| ScriptError::Spawn {
            script: program.to_path_buf(),
            op: op.to_string(),
            source,
        })?;
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    let (out, mut out_task) = capture(child.stdout.take());
    let (err, mut err_task) = capture(child.stderr.take());
    let take = |b: &Arc<Mutex<Vec<u8>>>| {
        String::from_utf8_lossy(&b.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    };
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    let status = match waited {
        Ok(Ok(status)) => status,
        Ok(Err(source)) => {
            return Err(ScriptError::Spawn {
                script: program.to_path_buf(),
                op: op.to_string(),
                source,
            });
        }
        Err(_) => {
            if let Some(pg) = pgid {
                // Only the group this script leads (process_group(0) above).
                let _ = killpg(Pid::from_raw(pg), Signal::SIGKILL);
            }
            let _ = child.wait().await;
            out_task.abort();
            err_task.abort();
            tracing::warn!(
                script = %program.display(), op, ?timeout,
                stdout = %take(&out).trim(), stderr = %take(&err).trim(),
                "script timed out, process group killed"
            );
            return Err(ScriptError::Timeout {
                script: program.to_path_buf(),
                op: op.to_string(),
                after: timeout,
            });
        }
    };
    // A daemon started by the script may keep the pipes open: collect for a short grace.
    let readers = async {
        let _ = (&mut out_task).await;
        let _ = (&mut err_task).await;
    };
    if tokio::time::timeout(OUTPUT_GRACE, readers).await.is_err() {
        tracing::debug!(script = %program.display(), op, "output pipes still open after exit");
    }
    out_task.abort();
    err_task.abort();
    let res = RunOutput {
        status,
        stdout: take(&out),
        stderr: take(&err),
    };
    tracing::debug!(
        script = %program.display(), op, code = ?status.code(),
        stdout = %res.stdout.trim(), stderr = %res.stderr.trim(), "script finished"
    );
    Ok(res)
}

/// Reads a pipe into a shared, capped buffer on a background task.
fn capture<R>(pipe: Option<R>) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let buf = Arc::new(Mutex::new(Vec::new()));
    let shared = Arc::clone(&buf);
    let task = tokio::spawn(async move {
        let Some(mut pipe) = pipe else { return };
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            push_capped(
                &mut shared.lock().unwrap_or_else(|e| e.into_inner()),
                &chunk[..n],
            );
        }
    });
    (buf, task)
}

/// Ok when `out` exited with one of `accepted`, else the failure of `op` with its code and
/// the tail of its stderr.
fn expect_exit(
    script: &Path,
    op: &str,
    out: &RunOutput,
    accepted: &[i32],
) -> Result<(), ScriptError> {
    match out.status.code() {
        Some(c) if accepted.contains(&c) => Ok(()),
        code => Err(ScriptError::Failed {
            script: script.to_path_buf(),
            op: op.to_string(),
            code,
            stderr_tail: tail(&out.stderr, STDERR_TAIL),
        }),
    }
}

/// heartbeat's status contract applied to a script's stdout (exit code ignored).
pub fn heartbeat_status(stdout: &str) -> ResourceStatus {
    let lower = stdout.to_ascii_lowercase();
    if lower.contains("not running") {
        ResourceStatus::Stopped
    } else if lower.contains("running") || stdout.contains("OK") {
        ResourceStatus::Running
    } else {
        ResourceStatus::Stopped
    }
}

/// LSB's status contract applied to an exit code.
pub fn lsb_status(code: Option<i32>) -> ResourceStatus {
    match code {
        Some(0) => ResourceStatus::Running,
        Some(LSB_NOT_RUNNING) => ResourceStatus::Stopped,
        other => ResourceStatus::Unknown(format!("LSB status exit {other:?}")),
    }
}

/// OCF's monitor contract applied to an exit code.
pub fn ocf_status(code: Option<i32>) -> ResourceStatus {
    match code {
        Some(0) | Some(OCF_RUNNING_MASTER) => ResourceStatus::Running,
        Some(OCF_NOT_RUNNING) => ResourceStatus::Stopped,
        other => ResourceStatus::Unknown(format!("OCF monitor exit {other:?}")),
    }
}

/// A heartbeat-class or LSB script with its arguments.
#[derive(Debug, Clone)]
pub struct ScriptResource {
    /// Name as written in the group.
    pub name: String,
    /// Resolved path.
    pub path: PathBuf,
    /// Arguments placed before the operation.
    pub args: Vec<String>,
    /// Status contract.
    pub class: ScriptClass,
    /// Per-operation timeout.
    pub timeout: Duration,
}

impl ScriptResource {
    /// Looks the script up and binds its arguments.
    pub fn resolve(
        name: &str,
        args: &[String],
        dirs: &ScriptDirs,
        timeout: Duration,
    ) -> Result<ScriptResource, ScriptError> {
        let (path, class) = find_script(name, dirs)?;
        Ok(ScriptResource {
            name: name.to_string(),
            path,
            args: args.to_vec(),
            class,
            timeout,
        })
    }

    async fn run(&self, op: &str) -> Result<RunOutput, ScriptError> {
        let mut argv: Vec<&OsStr> = self.args.iter().map(OsStr::new).collect();
        argv.push(OsStr::new(op));
        run_with_timeout(&self.path, &argv, &[], op, self.timeout).await
    }

    /// `<script> args… start`; success is exit 0.
    pub async fn start(&self) -> Result<(), ScriptError> {
        let out = self.run("start").await?;
        expect_exit(&self.path, "start", &out, &[0])
    }

    /// `<script> args… stop`; success is exit 0.
    pub async fn stop(&self) -> Result<(), ScriptError> {
        let out = self.run("stop").await?;
        expect_exit(&self.path, "stop", &out, &[0])
    }

    /// `<script> args… status` read with the script's class contract.
    pub async fn status(&self) -> Result<ResourceStatus, ScriptError> {
        let out = self.run("status").await?;
        Ok(match self.class {
            ScriptClass::Heartbeat => heartbeat_status(&out.stdout),
            ScriptClass::Lsb => lsb_status(out.status.code()),
        })
    }
}

/// Parses an OCF parameter file: `KEY=value` lines, `#` comments, optional `export `,
/// values optionally in matching quotes. Keys get the `OCF_RESKEY_` prefix unless present.
pub fn parse_ocf_conf(path: &Path, text: &str) -> Result<Vec<(String, String)>, ScriptError> {
    let mut params = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let bad = || ScriptError::BadOcfConf {
            path: path.to_path_buf(),
            line: i + 1,
        };
        let (k, v) = line.split_once('=').ok_or_else(bad)?;
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad());
        }
        let v = v.trim();
        let v = ['"', '\'']
            .iter()
            .find_map(|q| v.strip_prefix(*q).and_then(|s| s.strip_suffix(*q)))
            .unwrap_or(v);
        let key = if k.starts_with("OCF_RESKEY_") {
            k.to_string()
        } else {
            format!("OCF_RESKEY_{k}")
        };
        params.push((key, v.to_string()));
    }
    Ok(params)
}

/// An OCF resource agent instance (`OCF::type::instance`).
#[derive(Debug, Clone)]
pub struct OcfResource {
    /// Agent type (`IPaddr2`, `Filesystem`…).
    pub agent: String,
    /// Instance name (`OCF_RESOURCE_INSTANCE`).
    pub instance: String,
    /// Provider directory the agent was found in.
    pub provider: String,
    /// Agent path.
    pub path: PathBuf,
    /// OCF_ROOT given to the agent.
    pub ocf_root: PathBuf,
    /// `OCF_RESKEY_*` parameters.
    pub params: Vec<(String, String)>,
    /// Per-operation timeout.
    pub timeout: Duration,
}

impl OcfResource {
    /// Finds the agent (provider `heartbeat` first, then the others in name order) and reads
    /// its instance parameters; an absent parameter file means no parameters.
    pub fn resolve(
        agent: &str,
        instance: &str,
        dirs: &ScriptDirs,
        timeout: Duration,
    ) -> Result<OcfResource, ScriptError> {
        check_name(agent)?;
        check_name(instance)?;
        let base = dirs.ocf_root.join("resource.d");
        let mut providers: Vec<String> = std::fs::read_dir(&base)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        providers.sort_by_key(|p| (p != "heartbeat", p.clone()));
        let found = providers
            .iter()
            .find(|p| is_executable(&base.join(p).join(agent)));
        let Some(provider) = found else {
            let searched = if providers.is_empty() {
                vec![base]
            } else {
                providers.iter().map(|p| base.join(p)).collect()
            };
            return Err(ScriptError::NotFound {
                name: agent.to_string(),
                searched,
            });
        };
        let conf = dirs.ocf_conf_dir.join(agent).join(instance);
        let params = match std::fs::read_to_string(&conf) {
            Ok(text) => parse_ocf_conf(&conf, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(ScriptError::OcfConfIo { path: conf, source }),
        };
        Ok(OcfResource {
            agent: agent.to_string(),
            instance: instance.to_string(),
            provider: provider.clone(),
            path: base.join(provider).join(agent),
            ocf_root: dirs.ocf_root.clone(),
            params,
            timeout,
        })
    }

    async fn run(&self, op: &str) -> Result<RunOutput, ScriptError> {
        let mut env = vec![
            ("OCF_ROOT".to_string(), self.ocf_root.display().to_string()),
            ("OCF_RA_VERSION_MAJOR".to_string(), "1".to_string()),
            ("OCF_RA_VERSION_MINOR".to_string(), "0".to_string()),
            ("OCF_RESOURCE_INSTANCE".to_string(), self.instance.clone()),
            ("OCF_RESOURCE_TYPE".to_string(), self.agent.clone()),
            ("OCF_RESOURCE_PROVIDER".to_string(), self.provider.clone()),
            (
                "OCF_RESKEY_CRM_meta_timeout".to_string(),
                self.timeout.as_millis().to_string(),
            ),
        ];
        env.extend(self.params.iter().cloned());
        run_with_timeout(&self.path, &[OsStr::new(op)], &env, op, self.timeout).await
    }

    /// `start`; success is exit 0.
    pub async fn start(&self) -> Result<(), ScriptError> {
        let out = self.run("start").await?;
        expect_exit(&self.path, "start", &out, &[0])
    }

    /// `stop`; success is exit 0 (7, "not running", is accepted too).
    pub async fn stop(&self) -> Result<(), ScriptError> {
        let out = self.run("stop").await?;
        expect_exit(&self.path, "stop", &out, &[0, OCF_NOT_RUNNING])
    }

    /// `monitor` read with the OCF contract.
    pub async fn status(&self) -> Result<ResourceStatus, ScriptError> {
        let out = self.run("monitor").await?;
        Ok(ocf_status(out.status.code()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_contract() {
        assert_eq!(heartbeat_status("lvs is running"), ResourceStatus::Running);
        assert_eq!(heartbeat_status("OK"), ResourceStatus::Running);
        assert_eq!(heartbeat_status("ok"), ResourceStatus::Stopped);
        assert_eq!(
            heartbeat_status("lvs is NOT Running"),
            ResourceStatus::Stopped
        );
        assert_eq!(
            heartbeat_status("Running? no: not running"),
            ResourceStatus::Stopped
        );
        assert_eq!(heartbeat_status(""), ResourceStatus::Stopped);
        assert_eq!(heartbeat_status("stopped"), ResourceStatus::Stopped);
    }

    #[test]
    fn lsb_and_ocf_contracts() {
        assert_eq!(lsb_status(Some(0)), ResourceStatus::Running);
        assert_eq!(lsb_status(Some(3)), ResourceStatus::Stopped);
        assert!(matches!(lsb_status(Some(1)), ResourceStatus::Unknown(_)));
        assert!(matches!(lsb_status(None), ResourceStatus::Unknown(_)));
        assert_eq!(ocf_status(Some(0)), ResourceStatus::Running);
        assert_eq!(ocf_status(Some(8)), ResourceStatus::Running);
        assert_eq!(ocf_status(Some(7)), ResourceStatus::Stopped);
        assert!(matches!(ocf_status(Some(1)), ResourceStatus::Unknown(_)));
    }

    #[test]
    fn ocf_conf_lines() {
        let p = Path::new("/etc/ha.d/conf/OCF/IPaddr2/vip");
        let got = parse_ocf_conf(
            p,
            "# comment\n\nip=192.0.2.10\nexport cidr_netmask='24'\nOCF_RESKEY_nic=\"eth0\"\n",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("OCF_RESKEY_ip".into(), "192.0.2.10".into()),
                ("OCF_RESKEY_cidr_netmask".into(), "24".into()),
                ("OCF_RESKEY_nic".into(), "eth0".into()),
            ]
        );
        let e = parse_ocf_conf(p, "ip=1\nno equals here\n").unwrap_err();
        assert!(e.to_string().contains("IPaddr2/vip:2"), "{e}");
        assert!(parse_ocf_conf(p, "a-b=1").is_err());
    }

    #[test]
    fn names_cannot_escape() {
        let dirs = ScriptDirs::default();
        for bad in ["", ".", "..", "../x", "a/b"] {
            assert!(matches!(
                find_script(bad, &dirs),
                Err(ScriptError::BadName(_))
            ));
        }
    }

    #[test]
    fn lookup_order_and_executability() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let (own, rd, initd) = (
            tmp.path().join("own"),
            tmp.path().join("resource.d"),
            tmp.path().join("init.d"),
        );
        for d in [&own, &rd, &initd] {
            std::fs::create_dir(d).unwrap();
        }
        let write = |p: &Path, mode: u32| {
            std::fs::write(p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(&own.join("lvs"), 0o644); // not executable: skipped
        write(&rd.join("lvs"), 0o755);
        write(&initd.join("lvs"), 0o755);
        write(&initd.join("httpd"), 0o755);
        let dirs = ScriptDirs {
            resource_dirs: vec![own.clone(), rd.clone()],
            lsb_dir: Some(initd.clone()),
            ..ScriptDirs::default()
        };
        assert_eq!(
            find_script("lvs", &dirs).unwrap(),
            (rd.join("lvs"), ScriptClass::Heartbeat)
        );
        assert_eq!(
            find_script("httpd", &dirs).unwrap(),
            (initd.join("httpd"), ScriptClass::Lsb)
        );
        let e = find_script("nope", &dirs).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("nope") && msg.contains("init.d"), "{msg}");
        match e {
            ScriptError::NotFound { searched, .. } => assert_eq!(searched, vec![own, rd, initd]),
            other => panic!("{other}"),
        }
    }
}
