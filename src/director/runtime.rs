//! The running director: health checks drive the dataplane, as ldirectord does, but with
//! every check concurrent and every change applied as one reconcile.
//!
//! Start: open the dataplane (IPVS, or nftables where the kernel has no IPVS), read what the
//! kernel has, mark reals already serving with a weight as up (no disruption on a restart,
//! ldirectord `ld_start`), program the desired table, then start the checks. Each check
//! result feeds that real's rise/fall state; a transition recomputes the desired services
//! (down → weight 0 when quiescent, else removed; all down → fallback in) and reconciles.
//! Every check interval (1-10 s) without another reconcile, the kernel's table is compared
//! with what the director means and anything changed by hand in its own services is put back
//! ([`repair_period`], [`repair_timer`]).
//! Stop: cancel the checks, then remove the services of the virtuals with `cleanstop = yes`
//! (each virtual's own setting); the others stay programmed as they are.
//!
//! Reload happens in place and is all or nothing (keepalived's `migrate_checkers`): the new
//! configuration is checked against the dataplane ([`super::support`]), planned against the
//! running state ([`plan`]: a real whose check is unchanged keeps its health, its "changed"
//! time and its running check), and programmed in one reconcile. Only when that succeeded are
//! the checks swapped; a refusal at any step leaves the running director exactly as it was.
//!
//! The decisions are [`super::health`]'s pure functions; this module is the task around them.

pub use super::report::RealReport;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::checks::{self, CheckTarget, CheckVip, Checker};
use super::health::{self, FallbackEvent, FallbackState, Health, RealHealth, ServicePolicy};
use super::http::{HttpCheck, HttpStatus};
use super::scheduler::{CheckReport, CheckScheduler, TargetId};
use super::services;
use crate::clock;
use crate::config::director::{self as config, DirectorConfig, Service, VirtualConfig};
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

/// The kind of dataplane `choice` opens on this kernel (`Auto`: IPVS when the generic
/// netlink family resolves), without keeping it open; for `hbd --check-config`.
pub fn backend_kind(choice: BackendChoice) -> crate::dataplane::BackendKind {
    use crate::dataplane::BackendKind;
    match choice {
        BackendChoice::Ipvs => BackendKind::Ipvs,
        BackendChoice::Nftables => BackendKind::Nftables,
        BackendChoice::Auto => match ipvs::Ipvs::open() {
            Err(DataplaneError::NoIpvs) => BackendKind::Nftables,
            _ => BackendKind::Ipvs,
        },
    }
}

/// Why the director could not start, or a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum DirectorError {
    /// The dataplane cannot run this configuration (`file:line: why and the fix`).
    #[error("{0}")]
    Unsupported(crate::config::Diagnostic),
    /// The director task is gone (it panicked); the group must be restarted.
    #[error("the director task has ended")]
    Gone,
    /// The dataplane failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// The HTTP client could not be created.
    #[error("cannot create the health checker: {0}")]
    Checker(String),
}

/// What the director task reads and writes, shared with status queries.
#[derive(Debug, Clone)]
struct VirtualState {
    config: VirtualConfig,
    configured: VirtualService,
    policy: ServicePolicy,
    health: HashMap<SocketAddr, RealHealth>,
    fallback: FallbackState,
    /// When the fallback last went in or out (for `hactl checks`).
    fallback_changed: Option<Instant>,
}

impl VirtualState {
    fn new(v: &VirtualConfig, health: HashMap<SocketAddr, RealHealth>) -> VirtualState {
        VirtualState {
            configured: v.configured_service(),
            policy: ServicePolicy::of(v),
            health,
            fallback: FallbackState::default(),
            fallback_changed: None,
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

    /// Moves the fallback with the reals' health; the edge, if any, for its command.
    fn update_fallback(&mut self, now: Instant) -> Option<FallbackEvent> {
        let any = self.any_up();
        let event = self.fallback.update(any);
        if event.is_some() {
            self.fallback_changed = Some(now);
        }
        event
    }
}

type Shared = Arc<Mutex<Vec<VirtualState>>>;

/// The table the director means for `states`.
fn desired_of(states: &[VirtualState]) -> Vec<VirtualService> {
    states.iter().map(VirtualState::desired).collect()
}

/// Moves every virtual's fallback with its reals' health: the edges, each with its
/// virtual's configuration, for [`run_fallback_command`] once the states are unlocked.
fn fallback_edges(
    states: &mut [VirtualState],
    now: Instant,
) -> Vec<(VirtualConfig, FallbackEvent)> {
    states
        .iter_mut()
        .filter_map(|s| s.update_fallback(now).map(|e| (s.config.clone(), e)))
        .collect()
}

/// A running director; dropping it does not stop it, [`DirectorHandle::stop`] does.
pub struct DirectorHandle {
    shared: Shared,
    stop: watch::Sender<Stop>,
    reload: mpsc::Sender<ReloadRequest>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for DirectorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectorHandle").finish_non_exhaustive()
    }
}

/// A new configuration for the running director, and where to say how it went.
struct ReloadRequest {
    config: DirectorConfig,
    reply: oneshot::Sender<Result<usize, DirectorError>>,
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
/// (or that lack what they need) were refused when the configuration was read ([`config`]).
fn check_spec(v: &VirtualConfig, real: &config::RealConfig) -> checks::CheckSpec {
    let c = &v.check;
    let request = real.request.clone().or_else(|| c.request.clone());
    let receive = real.receive.as_ref().or(c.receive.as_ref()).cloned();
    let negotiate = || match &c.service {
        Service::Http | Service::Https => checks::CheckKind::Http(HttpCheck {
            https: c.service == Service::Https,
            method: c.http_method,
            request: request.clone().unwrap_or_else(|| "/".to_string()),
            receive: receive.clone(),
            virtual_host: c.virtual_host.clone(),
            status: c.status_code.map_or(HttpStatus::Any2xx, HttpStatus::Code),
        }),
        Service::Negotiated(n) => checks::CheckKind::Service(service_check(
            *n,
            v.protocol,
            request.clone(),
            receive.clone(),
            &c.credentials,
        )),
        // `none` only connects; an unsupported service never gets here from a parsed
        // configuration (refused there), and a hand-built one is checked by connecting.
        Service::None | Service::Unsupported(_) => checks::CheckKind::Connect,
    };
    let ping = checks::CheckKind::Ping {
        count: c.ping_count,
    };
    // ldirectord checks UDP services by ping when asked to connect.
    let connect = if v.protocol == config::Protocol::Udp {
        ping.clone()
    } else {
        checks::CheckKind::Connect
    };
    let kind = match &c.kind {
        config::CheckType::Connect => connect,
        config::CheckType::Negotiate => negotiate(),
        config::CheckType::Combined(n) => checks::CheckKind::Combined {
            connects: *n,
            connect_timeout: match connect {
                checks::CheckKind::Ping { count } => c.check_timeout.saturating_mul(count),
                _ => c.check_timeout,
            },
            connect: Box::new(connect),
            negotiate: Box::new(negotiate()),
        },
        config::CheckType::External { command } => checks::CheckKind::External {
            command: command.into(),
        },
        config::CheckType::Ping => ping,
        config::CheckType::On => checks::CheckKind::On,
        config::CheckType::Off => checks::CheckKind::Off,
    };
    let timeout = match &kind {
        // `checkcount` echos, each with the whole `checktimeout`: the timeouts add up.
        checks::CheckKind::Ping { count } => c.timeout().saturating_mul(*count),
        // Either step may run: the longer of the two bounds the check.
        checks::CheckKind::Combined {
            connect_timeout, ..
        } => c.negotiate_timeout.max(*connect_timeout),
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

/// This host's name, as ldirectord's `$HOSTNAME` (EHLO, and the ftp/sip defaults).
fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A negotiated service's check with ldirectord's defaults: ftp logs in as `anonymous`
/// with password `ldirectord@HOSTNAME`, sip asks for `ldirectord@HOSTNAME`; `request` loses
/// ldirectord's leading `/`.
fn service_check(
    service: config::NegotiatedService,
    protocol: config::Protocol,
    request: Option<String>,
    receive: Option<config::Receive>,
    credentials: &config::Credentials,
) -> services::ServiceCheck {
    use config::NegotiatedService as N;
    let hostname = hostname();
    let mut credentials = credentials.clone();
    match service {
        N::Ftp => {
            credentials.login.get_or_insert_with(|| "anonymous".into());
            credentials
                .passwd
                .get_or_insert_with(|| format!("ldirectord@{hostname}"));
        }
        N::Sip => {
            credentials
                .login
                .get_or_insert_with(|| format!("ldirectord@{hostname}"));
        }
        _ => {}
    }
    let request = request.map(|r| r.strip_prefix('/').map(str::to_string).unwrap_or(r));
    services::ServiceCheck {
        service,
        transport: match protocol {
            config::Protocol::Udp => services::Transport::Udp,
            _ => services::Transport::Tcp,
        },
        request,
        receive,
        credentials,
        hostname,
    }
}

/// One check the director runs: its id in the scheduler, what it probes and how.
#[derive(Debug, Clone, PartialEq)]
struct PlannedCheck {
    id: TargetId,
    target: CheckTarget,
    spec: checks::CheckSpec,
}

/// A real server of a virtual service: the key of its check and health.
type RealKey = (ServiceKey, SocketAddr);

/// A configuration turned into the director's states and checks, before anything runs:
/// built at start and for every reload.
#[derive(Debug)]
struct Plan {
    states: Vec<VirtualState>,
    checks: HashMap<RealKey, PlannedCheck>,
    owners: HashMap<TargetId, (usize, SocketAddr)>,
    owned: HashSet<ServiceKey>,
    next_id: u64,
}

/// The running state a reload plans against.
struct Previous<'a> {
    states: &'a [VirtualState],
    checks: &'a HashMap<RealKey, PlannedCheck>,
}

/// Plans `config` (pure). A real whose check (target and spec) is the same as in `previous`
/// keeps its check id and its health (state, "changed" time, last result); the others get a
/// new id (from `next_id` on) and start from what the kernel has (`actual`): up when it
/// serves with a weight, as ldirectord's `ld_start`. A virtual keeps its fallback state.
fn plan(
    config: &DirectorConfig,
    actual: &[VirtualService],
    previous: Option<Previous<'_>>,
    mut next_id: u64,
    now: Instant,
) -> Plan {
    let in_kernel = |key: &ServiceKey, addr: &SocketAddr| -> Option<RealServer> {
        actual
            .iter()
            .find(|s| s.key == *key)
            .and_then(|s| s.real(addr).copied())
    };
    let mut states = Vec::with_capacity(config.virtuals.len());
    let mut planned = HashMap::new();
    let mut owners = HashMap::new();
    for (vi, v) in config.virtuals.iter().enumerate() {
        let before = previous
            .as_ref()
            .and_then(|p| p.states.iter().find(|s| s.configured.key == v.key));
        let mut health = HashMap::new();
        for real in &v.reals {
            let spec = check_spec(v, real);
            let vip = match v.key {
                ServiceKey::Tcp(a) | ServiceKey::Udp(a) => CheckVip::Addr(a),
                ServiceKey::Fwmark(m, _) => CheckVip::Fwmark(m),
            };
            let target = CheckTarget {
                real: real.addr,
                vip,
                check_port: v.check.check_port,
            };
            let kept = previous
                .as_ref()
                .and_then(|p| p.checks.get(&(v.key, real.addr)))
                .filter(|c| c.target == target && c.spec == spec)
                .and_then(|c| Some((c.id, before?.health.get(&real.addr)?.clone())));
            let (id, h) = match kept {
                Some(kept) => kept,
                None => {
                    let initial = match spec.kind {
                        checks::CheckKind::On => Health::Up,
                        checks::CheckKind::Off => Health::Down,
                        _ => health::initial_health(in_kernel(&v.key, &real.addr).as_ref()),
                    };
                    let id = TargetId(next_id);
                    next_id += 1;
                    (id, RealHealth::new(initial, spec.rise, spec.fall, now))
                }
            };
            health.insert(real.addr, h);
            owners.insert(id, (vi, real.addr));
            planned.insert((v.key, real.addr), PlannedCheck { id, target, spec });
        }
        let mut state = VirtualState::new(v, health);
        if let Some(b) = before {
            state.fallback = b.fallback;
            state.fallback_changed = b.fallback_changed;
        }
        states.push(state);
    }
    Plan {
        owned: states.iter().map(|s| s.configured.key).collect(),
        states,
        checks: planned,
        owners,
        next_id,
    }
}

/// Starts the director for `config` on `backend`: refused before anything is touched when
/// the backend cannot run it.
pub async fn start(
    config: &DirectorConfig,
    mut backend: DataplaneBackend,
    max_concurrent_checks: usize,
) -> Result<DirectorHandle, DirectorError> {
    super::support::supports(config, backend.kind()).map_err(DirectorError::Unsupported)?;
    log_approximations(config, backend.kind());
    let now = crate::clock::now();
    let actual = backend.list().await?;
    let Plan {
        mut states,
        checks: planned,
        owners,
        owned,
        next_id,
    } = plan(config, &actual, None, 0, now);
    let desired = desired_of(&states);
    // Against the list read above: reconcile() would list the kernel again.
    let changes = backend
        .reconcile_with(&actual, &desired, &owned)
        .await?
        .changes;
    tracing::info!(
        services = desired.len(),
        changes = changes.len(),
        "director: dataplane programmed"
    );
    for (v, e) in fallback_edges(&mut states, now) {
        run_fallback_command(&v, e);
    }

    if let Err(e) = checks::raise_fd_limit() {
        tracing::warn!(error = %e, "cannot raise the descriptor limit for kept-alive checks");
    }
    let (tx, rx) = mpsc::channel(4096);
    let scheduler = new_scheduler(config.http_keepalive, max_concurrent_checks, tx.clone())?;
    let mut director = Running {
        shared: Arc::new(Mutex::new(states)),
        checks: HashMap::new(),
        owners,
        owned,
        cleanstop: cleanstop_keys(config),
        next_id,
        maintenance: maintenance_of(config, &planned),
        keepalive: config.http_keepalive,
        scheduler,
        tx,
        max_concurrent_checks,
        backend,
    };
    director.swap_checks(planned);
    let shared = director.shared.clone();
    let (stop, stop_rx) = watch::channel(Stop::Running);
    let (reload, reload_rx) = mpsc::channel(1);
    let task = tokio::spawn(run(director, rx, stop_rx, reload_rx));
    Ok(DirectorHandle {
        shared,
        stop,
        reload,
        task,
    })
}

/// Logs what the backend approximates for `config` (check-config shows the same).
fn log_approximations(config: &DirectorConfig, kind: crate::dataplane::BackendKind) {
    for d in super::support::diagnostics(config, kind) {
        tracing::warn!("{d}");
    }
}

fn new_scheduler(
    keepalive: bool,
    max_concurrent_checks: usize,
    tx: mpsc::Sender<CheckReport>,
) -> Result<CheckScheduler<Checker>, DirectorError> {
    let checker = Checker::new()
        .map_err(|e| DirectorError::Checker(e.to_string()))?
        .with_keepalive(keepalive);
    Ok(CheckScheduler::new(
        Arc::new(checker),
        max_concurrent_checks,
        tx,
    ))
}

/// The `maintenancedir` and how often to list it (see [`maintenance_period`]).
fn maintenance_of(
    config: &DirectorConfig,
    checks: &HashMap<RealKey, PlannedCheck>,
) -> Option<(std::path::PathBuf, Duration)> {
    let period = maintenance_period(checks.values().map(|c| c.spec.interval));
    config.maintenance_dir.clone().map(|dir| (dir, period))
}

/// How the director task should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    /// Remove the services if `cleanstop` says so (the group is released).
    Release,
}

/// The director task's own state.
struct Running {
    shared: Shared,
    checks: HashMap<RealKey, PlannedCheck>,
    owners: HashMap<TargetId, (usize, SocketAddr)>,
    owned: HashSet<ServiceKey>,
    cleanstop: HashSet<ServiceKey>,
    next_id: u64,
    maintenance: Option<(std::path::PathBuf, Duration)>,
    keepalive: bool,
    scheduler: CheckScheduler<Checker>,
    tx: mpsc::Sender<CheckReport>,
    max_concurrent_checks: usize,
    backend: DataplaneBackend,
}

impl Running {
    /// Makes the scheduler run exactly `next`: checks kept by the plan keep running,
    /// the others are removed or added.
    fn swap_checks(&mut self, next: HashMap<RealKey, PlannedCheck>) {
        for (key, old) in &self.checks {
            if next.get(key).map(|c| c.id) != Some(old.id) {
                self.scheduler.remove(old.id);
            }
        }
        for (key, new) in &next {
            if self.checks.get(key).map(|c| c.id) != Some(new.id) {
                self.scheduler.add(new.id, new.target, new.spec.clone());
            }
        }
        self.checks = next;
    }

    /// Replaces the configuration in place, all or nothing: on `Err` nothing has changed
    /// (the number of dataplane changes on `Ok`).
    async fn reload(&mut self, config: DirectorConfig) -> Result<usize, DirectorError> {
        let kind = self.backend.kind();
        super::support::supports(&config, kind).map_err(DirectorError::Unsupported)?;
        // A new HTTP client only when the keep-alive setting changed (made first: it can fail).
        let scheduler = if config.http_keepalive != self.keepalive {
            Some(new_scheduler(
                config.http_keepalive,
                self.max_concurrent_checks,
                self.tx.clone(),
            )?)
        } else {
            None
        };
        let now = crate::clock::now();
        let actual = self.backend.list().await?;
        let next = {
            let states = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            plan(
                &config,
                &actual,
                Some(Previous {
                    states: &states,
                    checks: &self.checks,
                }),
                self.next_id,
                now,
            )
        };
        let desired = desired_of(&next.states);
        let owned: HashSet<ServiceKey> = next.owned.union(&self.owned).copied().collect();
        let changes = match self.backend.reconcile_with(&actual, &desired, &owned).await {
            Ok(r) => r.changes.len(),
            Err(e) => {
                // nftables commits all or nothing; IPVS may have applied part: put the
                // running configuration's table back.
                let old = self.desired();
                if let Err(again) = self.backend.reconcile(&old, &owned).await {
                    tracing::error!(error = %again, "director: restoring the running table failed");
                }
                return Err(e.into());
            }
        };
        // Committed: from here on nothing fails.
        log_approximations(&config, kind);
        let Plan {
            mut states,
            checks: planned,
            owners,
            owned,
            next_id,
        } = next;
        let events = fallback_edges(&mut states, now);
        if let Some(scheduler) = scheduler {
            // Every check is added again to the new client's scheduler (same ids).
            self.scheduler = scheduler;
            self.checks.clear();
        }
        self.maintenance = maintenance_of(&config, &planned);
        self.swap_checks(planned);
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = states;
        self.owners = owners;
        self.owned = owned;
        self.cleanstop = cleanstop_keys(&config);
        self.next_id = next_id;
        self.keepalive = config.http_keepalive;
        for (v, e) in events {
            run_fallback_command(&v, e);
        }
        Ok(changes)
    }
}

/// The drift-repair timer: its first tick one period from now. Made again after every
/// reconcile of the whole table (start, reload, a check result, a repair), so the kernel is
/// listed for repair only after a period in which nothing else listed it.
fn repair_timer(period: Duration) -> tokio::time::Interval {
    let mut repair = tokio::time::interval_at(clock::now() + period, period);
    repair.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    repair
}

/// How often the kernel's table is compared with what the director means: every
/// `checkinterval` (the shortest of the virtuals, checked or not), between [`REPAIR_MIN`] and [`REPAIR_MAX`]. ldirectord re-reads
/// ipvsadm on each check cycle; hbd changes nothing unless something differs.
fn repair_period(intervals: impl Iterator<Item = Duration>) -> Duration {
    intervals
        .fold(REPAIR_MAX, Duration::min)
        .clamp(REPAIR_MIN, REPAIR_MAX)
}

/// The shortest drift-repair period: a dump of a 10,000-real table a second is cheap.
const REPAIR_MIN: Duration = Duration::from_secs(1);
/// The longest drift-repair period, when no check runs more often.
const REPAIR_MAX: Duration = Duration::from_secs(10);

impl Running {
    /// The table the director means now.
    fn desired(&self) -> Vec<VirtualService> {
        desired_of(&self.shared.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn repair_period(&self) -> Duration {
        let states = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        repair_period(states.iter().map(|s| s.config.check.interval))
    }

    /// Puts back what someone changed by hand in the director's own services (a real or a
    /// service deleted, a weight or scheduler changed): one reconcile against the kernel.
    /// Services the director does not own are never touched.
    async fn repair_drift(&mut self) {
        let desired = self.desired();
        match self.backend.reconcile(&desired, &self.owned).await {
            Ok(r) if !r.changes.is_empty() => tracing::warn!(
                changes = r.changes.len(),
                "director: the dataplane differed from what the director means (changed by \
                 hand?): put back"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "director: drift repair failed"),
        }
    }
}

fn refresh_timer(period: Option<Duration>) -> tokio::time::Interval {
    let mut refresh = tokio::time::interval(period.unwrap_or(MAINTENANCE_REFRESH));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh
}

async fn run(
    mut d: Running,
    mut rx: mpsc::Receiver<CheckReport>,
    mut stop: watch::Receiver<Stop>,
    mut reloads: mpsc::Receiver<ReloadRequest>,
) {
    // The names in the maintenance directory, listed off the runtime's threads on a timer
    // (the first tick is at once, and `biased` takes it before any result): a result only
    // looks its real up.
    let mut in_maintenance = HashSet::new();
    let mut refresh = refresh_timer(d.maintenance.as_ref().map(|m| m.1));
    let mut repair = repair_timer(d.repair_period());
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(request) = reloads.recv() => {
                let period = d.maintenance.as_ref().map(|m| m.1);
                let outcome = d.reload(request.config).await;
                if d.maintenance.as_ref().map(|m| m.1) != period {
                    refresh = refresh_timer(d.maintenance.as_ref().map(|m| m.1));
                }
                if outcome.is_ok() {
                    // The reload listed and reconciled the whole table: drift is repaired.
                    repair = repair_timer(d.repair_period());
                }
                let _ = request.reply.send(outcome);
                continue;
            }
            _ = repair.tick() => {
                d.repair_drift().await;
                // One period from the end of this listing, not its start: a listing slower
                // than the period (10,000 reals on a slow kernel) would otherwise run back
                // to back.
                repair = repair_timer(d.repair_period());
                continue;
            }
            _ = refresh.tick(), if d.maintenance.is_some() => {
                if let Some((dir, _)) = d.maintenance.clone() {
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
        let telemetry = crate::telemetry::global();
        {
            let mut states = d.shared.lock().unwrap_or_else(|e| e.into_inner());
            for (id, result, at) in batch {
                telemetry.observe_check(result.took);
                let Some((vi, addr)) = d.owners.get(&id) else {
                    continue;
                };
                let s = &mut states[*vi];
                let file = d
                    .maintenance
                    .as_ref()
                    .and_then(|(dir, _)| maintenance_file(dir, &in_maintenance, addr));
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
            let now = crate::clock::now();
            let (desired, events) = {
                let mut states = d.shared.lock().unwrap_or_else(|e| e.into_inner());
                (desired_of(&states), fallback_edges(&mut states, now))
            };
            match d.backend.reconcile(&desired, &d.owned).await {
                Ok(r) => {
                    tracing::info!(changes = r.changes.len(), "director: dataplane updated");
                    // That reconcile listed the table and put back any drift: the next
                    // repair is one period from now.
                    repair = repair_timer(d.repair_period());
                }
                Err(e) => tracing::error!(error = %e, "director: dataplane update failed"),
            }
            for (v, e) in events {
                run_fallback_command(&v, e);
            }
        }
    }
    let Running {
        scheduler,
        mut backend,
        owned,
        cleanstop,
        ..
    } = d;
    drop(scheduler);
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

/// Every real server's state at `now`, and each virtual's fallback.
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
                fallback: false,
            });
        }
        if let Some(f) = &s.config.fallback {
            let serving = s.fallback.active();
            out.push(RealReport {
                virtual_service: key_text(&s.configured.key),
                real: f.addr.to_string(),
                state: if serving { "serving" } else { "idle" }.to_string(),
                weight: desired.real(&f.addr).map(|r| r.weight),
                since_change_s: s
                    .fallback_changed
                    .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64()),
                last_check_s: None,
                reason: Some(
                    if serving {
                        "no real server is up"
                    } else {
                        "a real server is up"
                    }
                    .to_string(),
                ),
                service_name: s.config.service_name.clone(),
                comment: s.config.comment.clone(),
                fallback: true,
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
        reports(&states, clock::now())
    }

    /// Replaces the running configuration in place, all or nothing: `Err` (the dataplane
    /// cannot run it, or refused the change) leaves this director exactly as it was. `Ok`
    /// is the number of dataplane changes made.
    pub async fn reload(&self, config: DirectorConfig) -> Result<usize, DirectorError> {
        let (reply, answer) = oneshot::channel();
        self.reload
            .send(ReloadRequest { config, reply })
            .await
            .map_err(|_| DirectorError::Gone)?;
        answer.await.map_err(|_| DirectorError::Gone)?
    }

    /// Stops the checks and removes the services of virtuals with `cleanstop = yes`; waits
    /// until done.
    pub async fn stop(self) {
        let _ = self.stop.send(Stop::Release);
        let _ = self.task.await;
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
            checks::CheckKind::Http(h) => assert_eq!(h.method, config::HttpMethod::Head),
            k => panic!("{k:?}"),
        }
        // The parser refuses this; a hand-built configuration gets a connect check.
        v.check.service = Service::Unsupported("ftp".into());
        assert_eq!(check_spec(v, &v.reals[0]).kind, checks::CheckKind::Connect);
    }

    #[test]
    fn negotiated_services_get_ldirectords_defaults_and_checktype_n() {
        let cfg = parse(
            "checktimeout = 2\nnegotiatetimeout = 7\n\
             virtual = 192.0.2.10:21\n\treal = 192.0.2.21:21 gate\n\trequest = \"/health.txt\"\n\tchecktype = 3\n\
             virtual = 192.0.2.10:5060\n\treal = 192.0.2.21:5060 gate\n\tprotocol = udp\n\tchecktype = 2\n",
        );
        let ftp = check_spec(&cfg.virtuals[0], &cfg.virtuals[0].reals[0]);
        assert_eq!(ftp.timeout, Duration::from_secs(7));
        let checks::CheckKind::Combined {
            connects,
            connect,
            connect_timeout,
            negotiate,
        } = ftp.kind
        else {
            panic!("{:?}", ftp.kind)
        };
        assert_eq!(
            (connects, *connect, connect_timeout),
            (3, checks::CheckKind::Connect, Duration::from_secs(2))
        );
        let checks::CheckKind::Service(s) = *negotiate else {
            panic!("{negotiate:?}")
        };
        assert_eq!(
            s.request.as_deref(),
            Some("health.txt"),
            "ldirectord's leading / is dropped"
        );
        assert_eq!(s.credentials.login.as_deref(), Some("anonymous"));
        assert!(
            s.credentials
                .passwd
                .as_deref()
                .unwrap()
                .starts_with("ldirectord@")
        );
        // A UDP service's connect steps ping, as its connect checks do.
        let sip = check_spec(&cfg.virtuals[1], &cfg.virtuals[1].reals[0]);
        let checks::CheckKind::Combined {
            connect, negotiate, ..
        } = sip.kind
        else {
            panic!("{:?}", sip.kind)
        };
        assert_eq!(*connect, checks::CheckKind::Ping { count: 1 });
        let checks::CheckKind::Service(s) = *negotiate else {
            panic!("{negotiate:?}")
        };
        assert_eq!(s.transport, services::Transport::Udp);
        assert!(
            s.credentials
                .login
                .as_deref()
                .unwrap()
                .starts_with("ldirectord@")
        );
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
        let t0 = clock::now();
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
    fn a_reload_plan_keeps_unchanged_reals_with_their_check_and_history() {
        let t0 = crate::clock::now();
        let key = ServiceKey::Tcp("192.0.2.10:80".parse().unwrap());
        let (a21, a22, a23): (SocketAddr, SocketAddr, SocketAddr) = (
            "192.0.2.21:80".parse().unwrap(),
            "192.0.2.22:80".parse().unwrap(),
            "192.0.2.23:80".parse().unwrap(),
        );
        let old = parse(
            "fallback = 127.0.0.1:80 masq\nvirtual = 192.0.2.10:80\n\treal = 192.0.2.21:80 masq\n\treal = 192.0.2.22:80 masq\n\tservice = http\n",
        );
        let first = plan(&old, &[], None, 0, t0);
        assert_eq!(first.next_id, 2);
        let mut states = first.states.clone();
        let ok = checks::CheckResult {
            ok: true,
            reason: "HTTP 200".into(),
            took: Duration::ZERO,
        };
        let up_at = t0 + Duration::from_secs(1);
        assert!(
            states[0]
                .health
                .get_mut(&a21)
                .unwrap()
                .observe(&ok, up_at)
                .is_some()
        );
        assert_eq!(states[0].update_fallback(up_at), None, "never in: no edge");
        // .21's weight changes (same check), .22 gets its own request (a new check), .23 is new.
        let new = parse(
            "fallback = 127.0.0.1:80 masq\nvirtual = 192.0.2.10:80\n\treal = 192.0.2.21:80 masq 3\n\treal = 192.0.2.22:80 masq 1 \"/other\", \"x\"\n\treal = 192.0.2.23:80 masq\n\tservice = http\n",
        );
        let later = t0 + Duration::from_secs(5);
        let second = plan(
            &new,
            &[],
            Some(Previous {
                states: &states,
                checks: &first.checks,
            }),
            first.next_id,
            later,
        );
        let id = |p: &Plan, a: SocketAddr| p.checks[&(key, a)].id;
        assert_eq!(
            id(&second, a21),
            id(&first, a21),
            "unchanged check keeps running"
        );
        let h21 = &second.states[0].health[&a21];
        assert_eq!(
            (h21.state(), h21.since()),
            (Health::Up, up_at),
            "history kept"
        );
        assert_eq!(h21.last_reason(), Some("HTTP 200"));
        assert!(id(&second, a22).0 >= 2 && id(&second, a23).0 >= 2);
        assert_ne!(id(&second, a22), id(&second, a23));
        assert_eq!(second.states[0].health[&a22].since(), later);
        assert_eq!(second.next_id, 4);
        assert_eq!(second.owners[&id(&second, a21)], (0, a21));
        // The fallback row is listed with the reals.
        let r = reports(&second.states, later);
        let fb = r.iter().find(|r| r.fallback).expect("fallback row");
        assert_eq!(
            (fb.real.as_str(), fb.state.as_str()),
            ("127.0.0.1:80", "idle")
        );
        assert_eq!(r.len(), 4);
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
    fn drift_is_repaired_every_check_interval_between_one_and_ten_seconds() {
        let ms = Duration::from_millis;
        assert_eq!(repair_period([].into_iter()), REPAIR_MAX);
        assert_eq!(repair_period([ms(2000), ms(5000)].into_iter()), ms(2000));
        assert_eq!(repair_period([ms(100)].into_iter()), REPAIR_MIN);
        assert_eq!(repair_period([ms(60_000)].into_iter()), REPAIR_MAX);
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
