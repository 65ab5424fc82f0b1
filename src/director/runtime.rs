//! The running director: health checks drive the dataplane, as ldirectord does, but with
//! every check concurrent and every change applied as one reconcile.
//!
//! Start: open the dataplane (IPVS, or nftables where the kernel has no IPVS), read what the
//! kernel has, mark reals already serving with a weight as up (no disruption on a restart,
//! ldirectord `ld_start`), program the desired table, then start the checks. Each check
//! result feeds that real's rise/fall state; a transition recomputes the desired services
//! (down → weight 0 when quiescent, else removed; all down → fallback in) and reconciles.
//! Stop: cancel the checks, then remove the services of the virtuals with `cleanstop = yes`
//! (each virtual's own setting); the others stay programmed as they are.
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
/// Longest time between two listings of the `maintenancedir` (shorter when a check runs
/// more often, so a maintenance file is seen by that check's next result or the one after).
const MAINTENANCE_REFRESH: Duration = Duration::from_secs(1);

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
    /// The virtual service's `servicename`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The virtual service's `comment`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
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
    fn new(v: &VirtualConfig, health: HashMap<SocketAddr, RealHealth>) -> VirtualState {
        VirtualState {
            configured: v.configured_service(),
            policy: v.policy(),
            health,
            fallback: FallbackState::default(),
            config: v.clone(),
        }
    }

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
    let ping = checks::CheckKind::Ping {
        count: c.ping_count,
    };
    let kind = match &c.kind {
        // ldirectord checks UDP services by ping when asked to connect.
        config::CheckKind::Connect if v.protocol == config::Protocol::Udp => ping,
        config::CheckKind::Connect => checks::CheckKind::Connect,
        config::CheckKind::Negotiate | config::CheckKind::Combined(_) => negotiate(),
        config::CheckKind::External { command } => checks::CheckKind::External {
            command: command.into(),
        },
        config::CheckKind::Ping => ping,
        config::CheckKind::On => checks::CheckKind::On,
        config::CheckKind::Off => checks::CheckKind::Off,
    };
    let timeout = match kind {
        // `checkcount` echos, each with the whole `checktimeout`: the timeouts add up.
        checks::CheckKind::Ping { count } => c.timeout().saturating_mul(count),
        _ => c.timeout(),
    };
    checks::CheckSpec {
        kind,
        timeout,
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
        states.push(VirtualState::new(v, health));
    }
    let owned: HashSet<ServiceKey> = states.iter().map(|s| s.configured.key).collect();
    let desired: Vec<VirtualService> = states.iter().map(VirtualState::desired).collect();
    let first_owned: HashSet<ServiceKey> = owned.union(also_owned).copied().collect();
    // Against the list read above: reconcile() would list the kernel again.
    let changes = backend
        .reconcile_with(&actual, &desired, &first_owned)
        .await?
        .changes;
    tracing::info!(
        services = desired.len(),
        changes = changes.len(),
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
    let refresh = maintenance_period(checks_to_add.iter().map(|(_, _, spec)| spec.interval));
    for (id, target, spec) in checks_to_add {
        scheduler.add(id, target, spec);
    }
    let shared: Shared = Arc::new(Mutex::new(states));
    let (stop, stop_rx) = watch::channel(Stop::Running);
    let cleanstop = cleanstop_keys(config);
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
        config.maintenance_dir.clone().map(|dir| (dir, refresh)),
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
    cleanstop: HashSet<ServiceKey>,
    maintenance: Option<(std::path::PathBuf, Duration)>,
) {
    let (maintenance_dir, period) = maintenance.unzip();
    // The names in the maintenance directory, listed off the runtime's threads on a timer
    // (the first tick is at once, and `biased` takes it before any result): a result only
    // looks its real up.
    let mut in_maintenance = HashSet::new();
    let mut refresh = tokio::time::interval(period.unwrap_or(MAINTENANCE_REFRESH));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = refresh.tick(), if maintenance_dir.is_some() => {
                if let Some(dir) = maintenance_dir.clone() {
                    in_maintenance = tokio::task::spawn_blocking(move || maintenance_names(&dir))
                        .await
                        .unwrap_or_default();
                }
                continue;
            }
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
        let mut changed = false;
        {
            let mut states = shared.lock().unwrap_or_else(|e| e.into_inner());
            for (id, result, at) in batch {
                let Some((vi, addr)) = owners.get(&id) else {
                    continue;
                };
                let s = &mut states[*vi];
                let file = maintenance_dir
                    .as_deref()
                    .and_then(|dir| maintenance_file(dir, &in_maintenance, addr));
                let result = match file {
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
    } else {
        let kept = owned.difference(&cleanstop).count();
        if !cleanstop.is_empty() {
            match backend.reconcile(&[], &cleanstop).await {
                Ok(r) => tracing::info!(
                    changes = r.changes.len(),
                    "director stopped: services removed"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "director stopped: removing services failed")
                }
            }
        }
        if kept > 0 {
            tracing::info!(
                services = kept,
                "director stopped: services with cleanstop = no left in place"
            );
        }
    }
}

/// The services removed when the director stops: those of virtuals with `cleanstop = yes`.
fn cleanstop_keys(config: &DirectorConfig) -> HashSet<ServiceKey> {
    config
        .virtuals
        .iter()
        .filter(|v| v.cleanstop)
        .map(|v| v.key)
        .collect()
}

/// How often the `maintenancedir` is listed: every [`MAINTENANCE_REFRESH`], or every check
/// interval when one is shorter (never less than 1 ms).
fn maintenance_period(intervals: impl Iterator<Item = Duration>) -> Duration {
    intervals
        .fold(MAINTENANCE_REFRESH, Duration::min)
        .max(Duration::from_millis(1))
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
/// [`maintenance_names`]) forces the real down; returns that file's path. No names (the
/// usual case) costs nothing.
fn maintenance_file(
    dir: &std::path::Path,
    names: &HashSet<String>,
    addr: &SocketAddr,
) -> Option<std::path::PathBuf> {
    if names.is_empty() {
        return None;
    }
    [addr.to_string(), addr.ip().to_string()]
        .into_iter()
        .find(|name| names.contains(name))
        .map(|name| dir.join(name))
}

/// Every real server's state at `now`.
fn reports(states: &[VirtualState], now: Instant) -> Vec<RealReport> {
    let mut out = Vec::new();
    for s in states {
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
                service_name: s.config.service_name.clone(),
                comment: s.config.comment.clone(),
            });
        }
    }
    out
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
        let states = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        reports(&states, Instant::now())
    }

    /// Stops the checks and removes the services of virtuals with `cleanstop = yes`; waits
    /// until done.
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
    fn checkcount_sets_the_echo_attempts_and_udp_connect_pings() {
        let cfg = parse(
            "checktimeout = 2\ncheckcount = 3\n\
             virtual = 192.0.2.10:80\n\treal = 192.0.2.21:80 gate\n\tchecktype = ping\n\
             virtual = 192.0.2.10:53\n\treal = 192.0.2.21:53 gate\n\tchecktype = connect\n\tcheckcount = 1\n\
             virtual = 192.0.2.10:25\n\treal = 192.0.2.21:25 gate\n\tchecktype = connect\n\tprotocol = tcp\n",
        );
        let spec = |i: usize| check_spec(&cfg.virtuals[i], &cfg.virtuals[i].reals[0]);
        let ping = spec(0);
        assert_eq!(ping.kind, checks::CheckKind::Ping { count: 3 });
        assert_eq!(ping.timeout, Duration::from_secs(6), "the timeouts add up");
        // Port 53 is UDP: connect means ping there, as in ldirectord.
        assert_eq!(cfg.virtuals[1].protocol, config::Protocol::Udp);
        let udp = spec(1);
        assert_eq!(udp.kind, checks::CheckKind::Ping { count: 1 });
        assert_eq!(udp.timeout, Duration::from_secs(2));
        assert_eq!(spec(2).kind, checks::CheckKind::Connect);
    }

    #[test]
    fn cleanstop_is_per_virtual() {
        let cfg = parse(
            "cleanstop = no\n\
             virtual = 192.0.2.10:80\n\treal = 192.0.2.21:80 gate\n\
             virtual = 192.0.2.11:80\n\treal = 192.0.2.21:80 gate\n\tcleanstop = yes\n",
        );
        assert_eq!(
            cleanstop_keys(&cfg),
            HashSet::from([ServiceKey::Tcp("192.0.2.11:80".parse().unwrap())])
        );
        let all = parse("virtual = 192.0.2.10:80\n\treal = 192.0.2.21:80 gate\n");
        assert_eq!(cleanstop_keys(&all).len(), 1, "cleanstop defaults to yes");
    }

    #[test]
    fn reports_carry_servicename_comment_and_the_last_result() {
        let cfg = parse(
            "virtual = 192.0.2.10:80\n\treal = 192.0.2.21:80 gate\n\tservicename = web\n\tcomment = \"front page\"\n\
             virtual = 192.0.2.11:80\n\treal = 192.0.2.22:80 gate\n",
        );
        let t0 = Instant::now();
        let mut states: Vec<VirtualState> = cfg
            .virtuals
            .iter()
            .map(|v| {
                let health = v
                    .reals
                    .iter()
                    .map(|r| (r.addr, RealHealth::new(Health::Down, 1, 1, t0)))
                    .collect();
                VirtualState::new(v, health)
            })
            .collect();
        let ok = checks::CheckResult {
            ok: true,
            reason: "HTTP 200".into(),
            took: Duration::ZERO,
        };
        let addr: SocketAddr = "192.0.2.21:80".parse().unwrap();
        states[0].health.get_mut(&addr).unwrap().observe(&ok, t0);
        let r = reports(&states, t0 + Duration::from_secs(2));
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].service_name.as_deref(), Some("web"));
        assert_eq!(r[0].comment.as_deref(), Some("front page"));
        assert_eq!(r[0].reason.as_deref(), Some("HTTP 200"));
        assert_eq!((r[0].state.as_str(), r[0].weight), ("up", Some(1)));
        assert_eq!(r[0].last_check_s, Some(2.0));
        assert_eq!(
            (r[1].service_name.as_deref(), r[1].reason.as_deref()),
            (None, None)
        );
        let json = serde_json::to_value(&r[1]).unwrap();
        assert!(json.get("service_name").is_none(), "{json}");
        assert_eq!(json["reason"], serde_json::Value::Null);
    }

    #[test]
    fn an_unreadable_maintenance_dir_puts_nothing_in_maintenance() {
        assert!(maintenance_names(Path::new("/nonexistent/hbd-maintenance")).is_empty());
        let real = "192.0.2.21:80".parse().unwrap();
        assert_eq!(
            maintenance_file(Path::new("/m"), &HashSet::new(), &real),
            None
        );
    }

    #[test]
    fn the_maintenance_dir_is_listed_every_second_or_every_shorter_check_interval() {
        let ms = Duration::from_millis;
        assert_eq!(maintenance_period([].into_iter()), MAINTENANCE_REFRESH);
        assert_eq!(
            maintenance_period([ms(5000), ms(2000)].into_iter()),
            MAINTENANCE_REFRESH
        );
        assert_eq!(
            maintenance_period([ms(5000), ms(250), ms(500)].into_iter()),
            ms(250)
        );
        assert_eq!(maintenance_period([ms(0)].into_iter()), ms(1));
    }
}
