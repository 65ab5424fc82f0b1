//! The running director: health checks drive the dataplane, as ldirectord does, but with
//! every check concurrent and every change applied as one reconcile.
//!
//! Start: open the dataplane (IPVS, or nftables where the kernel has no IPVS), read what the
//! kernel has, mark reals already serving with a weight as up (no disruption on a restart,
//! ldirectord `ld_start`), program the desired table, then start the checks. Each check
//! result feeds that real's rise/fall state; a transition recomputes the desired services
//! (down → weight 0 when quiescent, else removed; all down → fallback in) and reconciles.
//! Stop: cancel the checks, then remove the services this director owns (`cleanstop`).
//!
//! The decisions are [`super::health`]'s pure functions; this module is the task around them.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::checks::{self, CheckTarget, CheckVip, Checker, HttpCheck, HttpStatus};
use super::config::{self, DirectorConfig, Service, VirtualConfig};
use super::health::{self, FallbackEvent, FallbackState, Health, RealHealth, ServicePolicy};
use super::scheduler::{CheckReport, CheckScheduler, TargetId};
use crate::dataplane::{
    Dataplane, DataplaneBackend, DataplaneError, RealServer, ServiceKey, VirtualService, ipvs, nft,
};

/// Default name of hbd's own nftables table.
pub const NFT_TABLE: &str = "hbd";
/// Checks allowed to run at once.
pub const DEFAULT_MAX_CONCURRENT_CHECKS: usize = 256;
/// How long a `fallbackcommand` may run.
const FALLBACK_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Which kernel dataplane to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// IPVS when the kernel has it, else nftables.
    #[default]
    Auto,
    /// IPVS only; a kernel without IPVS is an error naming the nftables backend.
    Ipvs,
    /// nftables only.
    Nftables,
}

/// Opens the chosen dataplane backend.
pub fn open_backend(choice: BackendChoice) -> Result<DataplaneBackend, DataplaneError> {
    match choice {
        BackendChoice::Ipvs => ipvs::Ipvs::open().map(DataplaneBackend::Ipvs),
        BackendChoice::Nftables => nft::Nft::open(NFT_TABLE).map(DataplaneBackend::Nft),
        BackendChoice::Auto => match ipvs::Ipvs::open() {
            Ok(i) => Ok(DataplaneBackend::Ipvs(i)),
            Err(DataplaneError::NoIpvs) => {
                tracing::info!("the kernel has no IPVS: using the nftables dataplane");
                nft::Nft::open(NFT_TABLE).map(DataplaneBackend::Nft)
            }
            Err(e) => Err(e),
        },
    }
}

/// Why the director could not start.
#[derive(Debug, thiserror::Error)]
pub enum DirectorError {
    /// The dataplane failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// The HTTP client could not be created.
    #[error("cannot create the health checker: {0}")]
    Checker(String),
}

/// One real server's state, for `hactl checks`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RealReport {
    /// The virtual service (`tcp 192.0.2.10:80`).
    pub virtual_service: String,
    /// The real server (`192.0.2.21:80`).
    pub real: String,
    /// `up` or `down`.
    pub state: String,
    /// Weight programmed now.
    pub weight: Option<u32>,
    /// Seconds since the last state change.
    pub since_change_s: f64,
    /// Seconds since the last check finished.
    pub last_check_s: Option<f64>,
    /// Outcome of the last check, e.g. "HTTP 200" or "connect refused": why it is in its state.
    pub reason: Option<String>,
}

/// What the director task reads and writes, shared with status queries.
struct VirtualState {
    config: VirtualConfig,
    configured: VirtualService,
    policy: ServicePolicy,
    health: HashMap<SocketAddr, RealHealth>,
    fallback: FallbackState,
}

impl VirtualState {
    fn desired(&self) -> VirtualService {
        health::desired_service(
            &self.configured,
            |a| self.health.get(a).map_or(Health::Down, RealHealth::state),
            &self.policy,
        )
    }

    fn any_up(&self) -> bool {
        health::any_up(&self.configured, |a| {
            self.health.get(a).map_or(Health::Down, RealHealth::state)
        })
    }
}

type Shared = Arc<Mutex<Vec<VirtualState>>>;

/// A running director; dropping it does not stop it, [`DirectorHandle::stop`] does.
pub struct DirectorHandle {
    shared: Shared,
    stop: watch::Sender<Stop>,
    task: JoinHandle<()>,
    keys: HashSet<ServiceKey>,
}

impl std::fmt::Debug for DirectorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectorHandle").finish_non_exhaustive()
    }
}

fn key_text(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Tcp(a) => format!("tcp {a}"),
        ServiceKey::Udp(a) => format!("udp {a}"),
        ServiceKey::Fwmark(m, _) => format!("fwmark {m}"),
    }
}

/// The check a virtual's config asks for, for one real. Infallible: the `receive` regex was
/// compiled, counts were checked (≥ 1) and negotiate checks of services hbd cannot negotiate
/// were refused when the configuration was read ([`config`]).
fn check_spec(v: &VirtualConfig, real: &config::RealConfig) -> checks::CheckSpec {
    let c = &v.check;
    let negotiate = || match &c.service {
        Service::Http | Service::Https => checks::CheckKind::Http(HttpCheck {
            https: c.service == Service::Https,
            method: c.http_method,
            request: real
                .request
                .clone()
                .or_else(|| c.request.clone())
                .unwrap_or_else(|| "/".to_string()),
            receive: real.receive.as_ref().or(c.receive.as_ref()).cloned(),
            virtual_host: c.virtual_host.clone(),
            status: c.status_code.map_or(HttpStatus::Any2xx, HttpStatus::Code),
        }),
        // `none` only connects; an unsupported service never gets here from a parsed
        // configuration (refused there), and a hand-built one is checked by connecting.
        Service::None | Service::Unsupported(_) => checks::CheckKind::Connect,
    };
    let kind = match &c.kind {
        config::CheckKind::Connect => checks::CheckKind::Connect,
        config::CheckKind::Negotiate | config::CheckKind::Combined(_) => negotiate(),
        config::CheckKind::External { command } => checks::CheckKind::External {
            command: command.into(),
        },
        config::CheckKind::Ping => checks::CheckKind::Ping,
        config::CheckKind::On => checks::CheckKind::On,
        config::CheckKind::Off => checks::CheckKind::Off,
    };
    checks::CheckSpec {
        kind,
        timeout: c.timeout(),
        interval: c.interval,
        rise: c.rise,
        fall: c.fall,
    }
}

/// Starts the director for `config` on `backend`. `also_owned` names services a previous
/// configuration owned (a reload): they are removed if the new one no longer has them.
pub async fn start(
    config: &DirectorConfig,
    mut backend: DataplaneBackend,
    max_concurrent_checks: usize,
    also_owned: &HashSet<ServiceKey>,
) -> Result<DirectorHandle, DirectorError> {
    let now = Instant::now();
    let actual = backend.list().await?;
    let in_kernel = |key: &ServiceKey, addr: &SocketAddr| -> Option<RealServer> {
        actual
            .iter()
            .find(|s| s.key == *key)
            .and_then(|s| s.real(addr).copied())
    };
    let mut states = Vec::with_capacity(config.virtuals.len());
    let mut checks_to_add = Vec::new();
    let mut next_id = 0u64;
    let mut owners: HashMap<TargetId, (usize, SocketAddr)> = HashMap::new();
    for (vi, v) in config.virtuals.iter().enumerate() {
        let mut health = HashMap::new();
        for real in &v.reals {
            let spec = check_spec(v, real);
            let initial = match spec.kind {
                checks::CheckKind::On => Health::Up,
                checks::CheckKind::Off => Health::Down,
                _ => health::initial_health(in_kernel(&v.key, &real.addr).as_ref()),
            };
            health.insert(
                real.addr,
                RealHealth::new(initial, spec.rise, spec.fall, now),
            );
            let vip = match v.key {
                ServiceKey::Tcp(a) | ServiceKey::Udp(a) => CheckVip::Addr(a),
                ServiceKey::Fwmark(m, _) => CheckVip::Fwmark(m),
            };
            let target = CheckTarget {
                real: real.addr,
                vip,
                check_port: v.check.check_port,
            };
            let id = TargetId(next_id);
            next_id += 1;
            owners.insert(id, (vi, real.addr));
            checks_to_add.push((id, target, spec));
        }
        states.push(VirtualState {
            configured: v.configured_service(),
            policy: v.policy(),
            health,
            fallback: FallbackState::default(),
            config: v.clone(),
        });
    }
    let owned: HashSet<ServiceKey> = states.iter().map(|s| s.configured.key).collect();
    let desired: Vec<VirtualService> = states.iter().map(VirtualState::desired).collect();
    let first_owned: HashSet<ServiceKey> = owned.union(also_owned).copied().collect();
    let report = backend.reconcile(&desired, &first_owned).await?;
    tracing::info!(
        services = desired.len(),
        changes = report.changes.len(),
        "director: dataplane programmed"
    );
    for s in &mut states {
        let any = s.any_up();
        if let Some(event) = s.fallback.update(any) {
            run_fallback_command(&s.config, event);
        }
    }

    if let Err(e) = checks::raise_fd_limit() {
        tracing::warn!(error = %e, "cannot raise the descriptor limit for kept-alive checks");
    }
    let checker = Checker::new()
        .map_err(|e| DirectorError::Checker(e.to_string()))?
        .with_keepalive(config.http_keepalive);
    let (tx, rx) = mpsc::channel(4096);
    let mut scheduler = CheckScheduler::new(Arc::new(checker), max_concurrent_checks, tx);
    for (id, target, spec) in checks_to_add {
        scheduler.add(id, target, spec);
    }
    let shared: Shared = Arc::new(Mutex::new(states));
    let (stop, stop_rx) = watch::channel(Stop::Running);
    let cleanstop = config.virtuals.iter().all(|v| v.cleanstop);
    let keys = owned.clone();
    let task = tokio::spawn(run(
        shared.clone(),
        backend,
        scheduler,
        rx,
        owners,
        owned,
        stop_rx,
        cleanstop,
        config.maintenance_dir.clone(),
    ));
    Ok(DirectorHandle {
        shared,
        stop,
        task,
        keys,
    })
}

/// How the director task should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    /// Remove the services if `cleanstop` says so (the group is released).
    Release,
    /// Leave the services as they are (a reload replaces this director).
    Keep,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    shared: Shared,
    mut backend: DataplaneBackend,
    scheduler: CheckScheduler<Checker>,
    mut rx: mpsc::Receiver<CheckReport>,
    owners: HashMap<TargetId, (usize, SocketAddr)>,
    owned: HashSet<ServiceKey>,
    mut stop: watch::Receiver<Stop>,
    cleanstop: bool,
    maintenance_dir: Option<std::path::PathBuf>,
) {
    loop {
        let first = tokio::select! {
            _ = stop.changed() => break,
            r = rx.recv() => match r {
                Some(r) => r,
                None => break,
            },
        };
        // Take every result already waiting, so a burst of changes is one reconcile.
        let mut batch = vec![first];
        while let Ok(r) = rx.try_recv() {
            batch.push(r);
        }
        // The maintenance directory is read once per batch, off the runtime's threads and
        // before the lock is taken: a batch may hold thousands of results.
        let maintenance = match &maintenance_dir {
            Some(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || maintenance_names(&dir))
                    .await
                    .unwrap_or_default()
            }
            None => HashSet::new(),
        };
        let mut changed = false;
        {
            let mut states = shared.lock().unwrap_or_else(|e| e.into_inner());
            for (id, result, at) in batch {
                let Some((vi, addr)) = owners.get(&id) else {
                    continue;
                };
                let s = &mut states[*vi];
                let in_maintenance = maintenance_dir
                    .as_deref()
                    .and_then(|dir| maintenance_file(dir, &maintenance, addr));
                let result = match in_maintenance {
                    Some(file) => checks::CheckResult {
                        ok: false,
                        reason: format!("in maintenance ({})", file.display()),
                        took: result.took,
                    },
                    None => result,
                };
                let Some(h) = s.health.get_mut(addr) else {
                    continue;
                };
                if let Some(t) = h.observe(&result, at) {
                    changed = true;
                    tracing::info!(
                        virtual_service = %key_text(&s.configured.key),
                        real = %addr,
                        from = %t.from,
                        to = %t.to,
                        "real server {}: {}",
                        t.to,
                        t.reason
                    );
                }
            }
        }
        if changed {
            let (desired, events) = {
                let mut states = shared.lock().unwrap_or_else(|e| e.into_inner());
                let desired: Vec<VirtualService> =
                    states.iter().map(VirtualState::desired).collect();
                let mut events = Vec::new();
                for s in states.iter_mut() {
                    let any = s.any_up();
                    if let Some(e) = s.fallback.update(any) {
                        events.push((s.config.clone(), e));
                    }
                }
                (desired, events)
            };
            match backend.reconcile(&desired, &owned).await {
                Ok(r) => tracing::info!(changes = r.changes.len(), "director: dataplane updated"),
                Err(e) => tracing::error!(error = %e, "director: dataplane update failed"),
            }
            for (v, e) in events {
                run_fallback_command(&v, e);
            }
        }
    }
    drop(scheduler);
    let how = *stop.borrow();
    if how == Stop::Keep {
        tracing::info!("director replaced: services kept for the new configuration");
    } else if cleanstop {
        match backend.reconcile(&[], &owned).await {
            Ok(r) => tracing::info!(
                changes = r.changes.len(),
                "director stopped: services removed"
            ),
            Err(e) => tracing::error!(error = %e, "director stopped: removing services failed"),
        }
    } else {
        tracing::info!("director stopped: services left in place (cleanstop = no)");
    }
}

/// The names in the `maintenancedir` now (empty when it cannot be read).
fn maintenance_names(dir: &std::path::Path) -> HashSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// ldirectord `maintenancedir`: a file named `IP:PORT` or `IP` there (`names`, read by
/// [`maintenance_names`]) forces the real down; returns that file's path.
fn maintenance_file(
    dir: &std::path::Path,
    names: &HashSet<String>,
    addr: &SocketAddr,
) -> Option<std::path::PathBuf> {
    [addr.to_string(), addr.ip().to_string()]
        .into_iter()
        .find(|name| names.contains(name))
        .map(|name| dir.join(name))
}

fn run_fallback_command(v: &VirtualConfig, event: FallbackEvent) {
    match event {
        FallbackEvent::Start => tracing::warn!(
            virtual_service = %key_text(&v.key),
            "no real server is up{}",
            if v.fallback.is_some() { ": fallback server in" } else { "" }
        ),
        FallbackEvent::Stop => tracing::info!(
            virtual_service = %key_text(&v.key),
            "a real server is up again{}",
            if v.fallback.is_some() { ": fallback server out" } else { "" }
        ),
    }
    let Some(command) = v.fallback_command.clone() else {
        return;
    };
    let args = event.args(&v.key);
    tokio::spawn(async move {
        let run = tokio::process::Command::new(&command)
            .args(&args)
            .kill_on_drop(true)
            .status();
        match tokio::time::timeout(FALLBACK_COMMAND_TIMEOUT, run).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => tracing::warn!(%command, ?args, %status, "fallbackcommand failed"),
            Ok(Err(e)) => tracing::warn!(%command, error = %e, "fallbackcommand could not run"),
            Err(_) => tracing::warn!(%command, "fallbackcommand timed out"),
        }
    });
}

impl DirectorHandle {
    /// Every real server's state.
    pub fn report(&self) -> Vec<RealReport> {
        let now = Instant::now();
        let states = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for s in states.iter() {
            let desired = s.desired();
            for real in &s.configured.reals {
                let h = &s.health[&real.addr];
                out.push(RealReport {
                    virtual_service: key_text(&s.configured.key),
                    real: real.addr.to_string(),
                    state: h.state().to_string(),
                    weight: desired.real(&real.addr).map(|r| r.weight),
                    since_change_s: now.saturating_duration_since(h.since()).as_secs_f64(),
                    last_check_s: h
                        .last_check()
                        .map(|at| now.saturating_duration_since(at).as_secs_f64()),
                    reason: h.last_reason().map(str::to_string),
                });
            }
        }
        out
    }

    /// Stops the checks and, with `cleanstop`, removes the services; waits until done.
    pub async fn stop(self) {
        let _ = self.stop.send(Stop::Release);
        let _ = self.task.await;
    }

    /// Stops the checks and leaves the services programmed, for a replacement director
    /// (reload); returns the services this one owned.
    pub async fn stop_keep(self) -> HashSet<ServiceKey> {
        let _ = self.stop.send(Stop::Keep);
        let _ = self.task.await;
        self.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn maintenance_files_name_a_real_or_its_address() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "192.0.2.21:80",
            "192.0.2.22",
            "[2001:db8::1]:80",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let names = maintenance_names(dir.path());
        assert_eq!(names.len(), 4);
        let file = |a: &str| maintenance_file(dir.path(), &names, &a.parse().unwrap());
        assert_eq!(
            file("192.0.2.21:80"),
            Some(dir.path().join("192.0.2.21:80"))
        );
        assert_eq!(file("192.0.2.21:8080"), None, "another port of the same IP");
        assert_eq!(file("192.0.2.22:8080"), Some(dir.path().join("192.0.2.22")));
        assert_eq!(
            file("[2001:db8::1]:80"),
            Some(dir.path().join("[2001:db8::1]:80"))
        );
        assert_eq!(file("192.0.2.23:80"), None);
        // Removing the file ends the maintenance at the next read.
        std::fs::remove_file(dir.path().join("192.0.2.22")).unwrap();
        let names = maintenance_names(dir.path());
        assert_eq!(
            maintenance_file(dir.path(), &names, &"192.0.2.22:80".parse().unwrap()),
            None
        );
    }

    fn parse(text: &str) -> DirectorConfig {
        config::parse_ldirectord_str(text, Path::new("ld.cf"), &config::ServiceNames::builtin())
            .unwrap()
            .0
    }

    #[test]
    fn http_checks_carry_the_configured_receive_with_per_real_overrides() {
        let cfg = parse(
            "virtual = 192.0.2.10:80\n\treal = 192.0.2.21:80 gate\n\treal = 192.0.2.22:80 gate 1 \"/h\", \"UP\"\n\tservice = http\n\treceive = \"OK\"\n",
        );
        let v = &cfg.virtuals[0];
        let receive = |i: usize| match check_spec(v, &v.reals[i]).kind {
            checks::CheckKind::Http(h) => h.receive,
            k => panic!("{k:?}"),
        };
        assert_eq!(receive(0), v.check.receive);
        assert_eq!(receive(0).unwrap().as_str(), "OK");
        assert_eq!(receive(1), v.reals[1].receive);
        assert_eq!(receive(1).unwrap().as_str(), "UP");
        assert!(receive(1).unwrap().is_match("status: UP"));
    }

    #[test]
    fn check_specs_take_the_parsed_method_and_counts_and_never_fail() {
        let mut cfg = parse(
            "virtual = 192.0.2.10:80\n\treal = 192.0.2.21:80 gate\n\tservice = http\n\thttpmethod = HEAD\n\tfailurecount = 3\n\trisecount = 2\n",
        );
        let v = &mut cfg.virtuals[0];
        let spec = check_spec(v, &v.reals[0]);
        assert_eq!((spec.rise, spec.fall), (2, 3));
        match spec.kind {
            checks::CheckKind::Http(h) => assert_eq!(h.method, checks::HttpMethod::Head),
            k => panic!("{k:?}"),
        }
        // The parser refuses this; a hand-built configuration gets a connect check.
        v.check.service = Service::Unsupported("ftp".into());
        assert_eq!(check_spec(v, &v.reals[0]).kind, checks::CheckKind::Connect);
    }

    #[test]
    fn an_unreadable_maintenance_dir_puts_nothing_in_maintenance() {
        assert!(maintenance_names(Path::new("/nonexistent/hbd-maintenance")).is_empty());
    }
}
