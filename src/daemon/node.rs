//! The node: the pure [`NodeCore`] and the thin plumbing that feeds it and carries out what
//! it decides.
//!
//! One loop, [`Node::run`], drives every node. Each turn it steps the core with
//! [`Input::Timer`], then waits through an [`Inputs`] source until the core's next wake or
//! until frames or mail arrive, which the source hands back as inputs. Two sources exist and
//! they differ only in how they wait:
//! * the daemon's [`ThreadInputs`] (`thread`): the node runs on a thread of its own, waits
//!   in one `ppoll` on its UDP sockets and a bell, and reads frames itself, so a heartbeat
//!   costs one lean wakeup;
//! * [`ChannelInputs`] (`channels`): a task on the runtime fed by channels, which the
//!   simulation tests run over the in-memory network on a paused clock.
//!
//! Effects are carried out here ([`Node::carry_out`]): frames go to every medium's
//! [`crate::media::Transmit`], group operations are spawned on the runtime and come back as
//! [`Mail::OpFinished`], replies go to the control caller, peer generations to the state
//! directory, events to the log and to an observer.

mod channels;
mod core;
mod fence;
mod inputs;
mod thread;

pub use channels::ChannelInputs;
pub use core::{
    AppliedOutside, Effect, Input, NodeCore, NodeEvent, NodeIdentity, OpFinished, SHUTDOWN_LIMIT,
};
pub use inputs::{InputSink, Inputs, Mail, MailSender};
pub use thread::{Bell, ThreadInputs, mailbox, run_ready};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::config::{Config, ConfigError};
use crate::control::protocol::{Request, Response};
use crate::control::server::ControlCall;
use crate::control::status::{NodeView, media_report, status_report};
use crate::daemon::runner::GroupRunner;
use crate::manager::Command;
use crate::media::{FrameForm, Inbound, InboundRef, Medium};
use crate::membership::generation::PeerGenerationWriter;
use crate::membership::liveness::fmt_ms;
use crate::reachability::{ReachUpdate, ReachabilityHandle, ReachabilityReport};

/// Everything a node needs.
pub struct NodeSetup {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Our identity.
    pub identity: NodeIdentity,
    /// Open media; an [`Inbound::link`] indexes this list.
    pub media: Vec<Medium>,
    /// Highest generation seen from each peer in earlier runs, so frames replayed from an
    /// older generation are dropped even right after we restart.
    pub peer_generations: BTreeMap<String, u64>,
    /// Where to persist peer generations; `None` keeps them in memory only.
    pub state_dir: Option<PathBuf>,
    /// Whether to report the load average (`ld`) from /proc/loadavg.
    pub report_load: bool,
    /// Where to copy every [`NodeEvent`], timestamped (simulation tests); `None` for nobody.
    pub observer: Option<mpsc::UnboundedSender<(Instant, NodeEvent)>>,
    /// Carries out group starts and stops.
    pub runner: Arc<dyn GroupRunner>,
    /// Re-reads the configuration for `hactl reload`; `None` refuses reloads.
    pub reloader: Option<Reloader>,
    /// The running prober of the ping nodes and groups, for status and reload; `None`
    /// without targets (or in the simulation).
    pub reachability: Option<ReachabilityHandle>,
    /// Its updates (our count), forwarded to the node as mail.
    pub reach_updates: Option<mpsc::UnboundedReceiver<ReachUpdate>>,
    /// The kernel watchdog (`watchdog`), petted from this loop, so a hung heartbeat loop
    /// reboots the node; closed cleanly (magic close) when the node stops.
    pub watchdog: Option<crate::watchdog::Watchdog>,
}

/// Loads the configuration again from where it came from.
pub type Reloader = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// The forwarding tasks of [`Node::plumb`], aborted when the loop ends.
struct Plumbing(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Plumbing {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Rate limit for repeated log lines of one kind: at most one line per kind per interval,
/// so a flood of forged packets cannot flood the log.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// How often the watchdog is petted at most: its timeout is at least a second (deadtime
/// rounded up), so this keeps it fed with a write every tenth of it, not one per heartbeat.
const WATCHDOG_PET_EVERY: Duration = Duration::from_millis(100);

/// How often the load average and wall clock in our heartbeats are refreshed.
const AMBIENT_REFRESH: Duration = Duration::from_secs(1);

/// Per-kind log rate limit.
#[derive(Default)]
struct LogLimit {
    seen: BTreeMap<&'static str, (Instant, u64)>,
}

impl LogLimit {
    /// Returns how many were suppressed since the last line if a line should be logged now.
    fn allow(&mut self, kind: &'static str, now: Instant) -> Option<u64> {
        match self.seen.get_mut(kind) {
            Some((last, suppressed)) if now.saturating_duration_since(*last) < LOG_INTERVAL => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                let n = *suppressed;
                *last = now;
                *suppressed = 0;
                Some(n)
            }
            None => {
                self.seen.insert(kind, (now, 0));
                Some(0)
            }
        }
    }
}

/// A node: its core and the handles its effects need.
pub struct Node {
    core: NodeCore,
    media: Vec<Medium>,
    runner: Arc<dyn GroupRunner>,
    /// Where finished operations go; set by the loop's input source.
    mail: Option<MailSender>,
    /// Persists peer generations off the heartbeat path; `None` keeps them in memory only.
    generation_writer: Option<PeerGenerationWriter>,
    observer: Option<mpsc::UnboundedSender<(Instant, NodeEvent)>>,
    reloader: Option<Reloader>,
    reachability: Option<ReachabilityHandle>,
    reach_updates: Option<mpsc::UnboundedReceiver<ReachUpdate>>,
    watchdog: Option<(crate::watchdog::Watchdog, Option<Instant>)>,
    report_load: bool,
    ambient_at: Option<Instant>,
    log_limit: LogLimit,
    /// Effects of the step being carried out, reused.
    effects: Vec<Effect>,
    /// Per peer: its last status as last seen, and its heartbeat-gap histogram (atomics
    /// only), so each gap between two statuses lands in the metrics.
    gaps: Vec<(Option<Instant>, Arc<crate::telemetry::Histogram>)>,
    /// Per group: when the core decided to start it here, for the failover-duration metric.
    takeovers: Vec<Option<Instant>>,
}

impl Node {
    /// Builds the node at `now`; nothing is sent until [`Node::run`].
    pub fn new(setup: NodeSetup, now: Instant) -> Node {
        let link_names: Vec<String> = setup.media.iter().map(|m| m.name.clone()).collect();
        let core = NodeCore::new(
            setup.config,
            setup.identity,
            &link_names,
            &setup.peer_generations,
            now,
        );
        let generation_writer =
            setup
                .state_dir
                .and_then(|dir| match PeerGenerationWriter::spawn(dir) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the peer generation writer: peer generations are not persisted");
                        None
                    }
                });
        let takeovers = vec![None; core.config().groups.len()];
        let telemetry = crate::telemetry::global();
        let gaps = core
            .membership()
            .peers()
            .iter()
            .map(|p| (None, telemetry.heartbeat_gaps(&p.name)))
            .collect();
        Node {
            core,
            media: setup.media,
            runner: setup.runner,
            mail: None,
            generation_writer,
            observer: setup.observer,
            reloader: setup.reloader,
            reachability: setup.reachability,
            reach_updates: setup.reach_updates,
            watchdog: setup.watchdog.map(|w| (w, None)),
            report_load: setup.report_load,
            ambient_at: None,
            log_limit: LogLimit::default(),
            effects: Vec::new(),
            gaps,
            takeovers,
        }
    }

    /// The core, for status and tests.
    pub fn core(&self) -> &NodeCore {
        &self.core
    }

    /// Logs the start and adopts groups an earlier run left running: they are held until
    /// the rules say otherwise. Called once, on the runtime, before [`Node::run`].
    pub async fn prepare(&mut self) {
        let config = self.core.config().clone();
        tracing::info!(
            node = %self.core.identity().name,
            generation = self.core.identity().generation,
            links = ?self.core.membership().liveness().link_names(),
            keepalive = %fmt_ms(config.timing.keepalive),
            deadtime = %fmt_ms(config.timing.deadtime),
            "node starting"
        );
        for i in 0..config.groups.len() {
            if self.runner.probe(i).await {
                tracing::warn!(
                    group = %config.groups[i].name(),
                    "group found running at start (left behind): adopting it"
                );
                self.core.adopt_running(i);
            }
        }
    }

    /// The node's loop, the same for the daemon and the simulation: step the core's timer,
    /// wait for inputs until its next wake, apply them; until the core has stopped (every
    /// group released after [`Mail::Shutdown`]) or the inputs are gone.
    pub async fn run<I: Inputs>(mut self, mut inputs: I) {
        loop {
            let mut now = crate::clock::now();
            if self.core.liveness_due(now) || self.core.awaits_a_return() {
                // A liveness deadline is decided on everything received; and a peer or link
                // that is down may be back in an answer waiting unread (issue #15, defect 3).
                inputs.read_waiting(&mut self);
                now = crate::clock::now();
            }
            self.step(now, Input::Timer);
            let Some(wake) = self.core.wake() else {
                break;
            };
            if !inputs.wait(&mut self, wake).await {
                break;
            }
        }
        if let Some(writer) = self.generation_writer.take() {
            writer.close_blocking();
        }
        if let Some((watchdog, _)) = self.watchdog.take() {
            match watchdog.close_clean() {
                Ok(()) => tracing::info!("watchdog closed cleanly (magic close)"),
                Err(e) => tracing::error!("{e}"),
            }
        }
        tracing::info!(node = %self.core.identity().name, "node stopped");
    }

    /// Runs the node as a task fed by channels (the simulation tests): `inbound` frames,
    /// `control` calls, and `shutdown` to stop. Prepares it first.
    pub async fn run_on_channels(
        mut self,
        inbound: mpsc::Receiver<Inbound>,
        control: mpsc::Receiver<ControlCall>,
        shutdown: watch::Receiver<bool>,
    ) {
        let (inputs, mail) = ChannelInputs::new(inbound);
        let _plumbing = self.plumb(mail, control, shutdown);
        self.prepare().await;
        self.run(inputs).await;
    }

    /// Runs the node on the calling thread until it stops (the daemon starts a thread for
    /// it): waits on `receivers`, `bell` and the [`mailbox`] ([`ThreadInputs`]). The thread must have entered
    /// the runtime (`Handle::enter`): group operations, slow control answers and the mail
    /// forwarder are spawned onto it. Call [`Node::prepare`] first.
    pub fn run_on_thread(
        mut self,
        receivers: &[crate::media::udp::ReceiveSocket],
        control: mpsc::Receiver<ControlCall>,
        shutdown: watch::Receiver<bool>,
        bell: &Arc<Bell>,
        (mail, inbox): (MailSender, std::sync::mpsc::Receiver<Mail>),
    ) {
        let inputs = ThreadInputs::new(receivers, bell, inbox);
        let _plumbing = self.plumb(mail, control, shutdown);
        run_ready(self.run(inputs));
    }

    /// Applies what of a reloaded configuration lives outside the core: the log outputs
    /// (when hbd's logging is installed) and the prober's targets (when it runs). An error
    /// leaves everything as it was (a log file that cannot be opened changes nothing).
    fn apply_outside(
        &self,
        config: &Config,
    ) -> Result<AppliedOutside, crate::logging::LoggingError> {
        let logging = match crate::logging::installed() {
            Some(log) => Some(log.apply(&config.logging)?),
            None => None,
        };
        let ping_targets = match &self.reachability {
            Some(reach) => {
                reach.reload(config);
                true
            }
            None => false,
        };
        Ok(AppliedOutside {
            logging,
            ping_targets,
        })
    }

    /// Connects the node to its mail, whichever input source delivers it: finished
    /// operations go there, and two small tasks on the runtime forward control calls, the
    /// stop request and the prober's counts into it. They end when the plumbing drops.
    fn plumb(
        &mut self,
        mail: MailSender,
        control: mpsc::Receiver<ControlCall>,
        shutdown: watch::Receiver<bool>,
    ) -> Plumbing {
        self.mail = Some(mail.clone());
        let mut tasks = Vec::with_capacity(2);
        if let Some(mut updates) = self.reach_updates.take() {
            let mail = mail.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(update) = updates.recv().await {
                    mail(Mail::Reach(update.advertised));
                }
            }));
        }
        tasks.push(tokio::spawn(forward_mail(control, shutdown, mail)));
        Plumbing(tasks)
    }

    /// Steps the core and carries out its effects.
    fn step(&mut self, now: Instant, input: Input<'_>) -> Option<Response> {
        if matches!(input, Input::Timer) {
            self.refresh_ambient(now);
            self.pet_watchdog(now);
        }
        let mut effects = std::mem::take(&mut self.effects);
        self.core.step(now, input, &mut effects);
        let reply = self.carry_out(now, &mut effects);
        self.effects = effects;
        reply
    }

    /// Pets the watchdog from the heartbeat loop, at most every [`WATCHDOG_PET_EVERY`].
    fn pet_watchdog(&mut self, now: Instant) {
        let Some((watchdog, last)) = &mut self.watchdog else {
            return;
        };
        if last.is_some_and(|t| now.saturating_duration_since(t) < WATCHDOG_PET_EVERY) {
            return;
        }
        *last = Some(now);
        if let Err(e) = watchdog.pet()
            && let Some(suppressed) = self.log_limit.allow("watchdog", now)
        {
            tracing::error!(suppressed, "{e}");
        }
    }

    /// The load line and wall clock our heartbeats carry, re-read at most every
    /// [`AMBIENT_REFRESH`].
    fn refresh_ambient(&mut self, now: Instant) {
        if self
            .ambient_at
            .is_some_and(|at| now.saturating_duration_since(at) < AMBIENT_REFRESH)
        {
            return;
        }
        self.ambient_at = Some(now);
        let wall = crate::clock::wall()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1);
        self.core.set_wall_clock(now, wall);
        if self.report_load {
            let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            let line = text.lines().next().unwrap_or("").trim();
            self.core.set_load(if line.is_empty() {
                "n/a".to_string()
            } else {
                line.to_string()
            });
        }
    }

    /// Carries out the core's effects; returns its reply, if it gave one.
    fn carry_out(&mut self, now: Instant, effects: &mut Vec<Effect>) -> Option<Response> {
        let mut reply = None;
        for effect in effects.drain(..) {
            match effect {
                Effect::Send { frame, answer } => {
                    // The classic text a serial line carries, encoded at most once per send
                    // and only for a line ready to take it.
                    let mut classic: Option<Vec<u8>> = None;
                    for medium in &self.media {
                        if !medium.tx.ready() {
                            continue;
                        }
                        let sent = match medium.tx.form() {
                            FrameForm::Datagram if answer => medium.tx.send_answer(&frame),
                            FrameForm::Datagram => medium.tx.send(&frame),
                            FrameForm::ClassicText => {
                                if classic.is_none() {
                                    classic = classic_text(
                                        &frame,
                                        &self.core.config().auth,
                                        &mut self.log_limit,
                                    );
                                }
                                match &classic {
                                    Some(text) => medium.tx.send(text),
                                    None => continue,
                                }
                            }
                        };
                        if let Err(e) = sent {
                            self.core.count_send_error();
                            if let Some(suppressed) = self.log_limit.allow("send", now) {
                                tracing::warn!(link = %medium.name, error = %e, suppressed, "heartbeat send failed");
                            }
                        }
                    }
                    self.core.recycle(frame);
                }
                Effect::Start(g) => {
                    // Once a peer has been heard a start is a takeover (a failover or a
                    // planned move), not the first start of a lone node.
                    let peer_heard = self
                        .core
                        .membership()
                        .peers()
                        .iter()
                        .any(|p| p.last_status.is_some());
                    if peer_heard && let Some(t) = self.takeovers.get_mut(g) {
                        *t = Some(now);
                    }
                    self.spawn_op(g, true);
                }
                Effect::Stop(g) => self.spawn_op(g, false),
                Effect::Announce(g) => {
                    let name = self.core.config().groups[g].name().to_string();
                    let op = self.runner.announce(g);
                    tokio::spawn(async move {
                        if let Err(e) = op.await {
                            tracing::warn!(group = %name, "re-announce failed: {e}");
                        }
                    });
                }
                Effect::Reply(response) => reply = Some(*response),
                Effect::PersistGeneration { peer, generation } => {
                    if let Some(writer) = &self.generation_writer {
                        writer.store(&peer, generation);
                    }
                }
                Effect::PersistOwnGeneration(generation) => {
                    if let Some(writer) = &self.generation_writer {
                        writer.store_own(generation);
                    }
                }
                Effect::Event(event) => {
                    self.log_event(now, &event);
                    if let Some(observer) = &self.observer
                        && observer.send((now, event)).is_err()
                    {
                        self.observer = None;
                    }
                }
                Effect::Stopped => {}
                Effect::Fence { peer } => self.spawn_fence(peer),
            }
        }
        reply
    }

    fn log_event(&mut self, now: Instant, event: &NodeEvent) {
        match event {
            NodeEvent::Liveness(e) => core::log_liveness(e),
            // Logged by the core where they are decided.
            NodeEvent::PeerRestarted { .. }
            | NodeEvent::SplitBrain { .. }
            | NodeEvent::PeerGenerationStale { .. }
            | NodeEvent::OwnGenerationStale { .. }
            | NodeEvent::Unheard { .. } => {}
            NodeEvent::Dropped {
                reason,
                detail,
                link,
                from,
            } => {
                if let Some(suppressed) = self.log_limit.allow(reason, now) {
                    let link = self.media.get(*link).map_or("?", |m| m.name.as_str());
                    let from = from.map_or_else(|| "-".to_string(), |a| a.to_string());
                    tracing::warn!(%link, %from, suppressed, "dropped frame: {reason}: {detail}");
                }
            }
        }
    }

    /// Runs the fence device against `peer` on the runtime; its result comes back as mail.
    fn spawn_fence(&self, peer: String) {
        let Some(spec) = self.core.config().fencing.clone() else {
            // The core fences only with a device configured; answer so nothing waits.
            if let Some(mail) = &self.mail {
                mail(Mail::Fenced {
                    peer,
                    result: Err("no fencing configured".to_string()),
                });
            }
            return;
        };
        let us = self.core.identity().name.clone();
        let mail = self.mail.clone();
        tokio::spawn(async move {
            let result = crate::fencing::fence(&spec, &us, &peer)
                .await
                .map_err(|e| e.to_string());
            if let Some(mail) = mail {
                mail(Mail::Fenced { peer, result });
            }
        });
    }

    /// Runs a group start or stop on the runtime; its result comes back as mail.
    fn spawn_op(&self, group: usize, start: bool) {
        let op = if start {
            self.runner.start(group)
        } else {
            self.runner.stop(group)
        };
        let mail = self.mail.clone();
        tokio::spawn(async move {
            let result = op.await;
            if let Some(mail) = mail {
                mail(Mail::OpFinished(OpFinished {
                    group,
                    start,
                    result,
                }));
            }
        });
    }

    /// Answers one control call; requests that wait on resources are answered from a task
    /// so the node never stops heartbeating.
    fn on_call(&mut self, now: Instant, call: ControlCall) {
        let ControlCall { request, reply } = call;
        match request {
            Request::Status => {
                let core = &self.core;
                let mut status = status_report(
                    NodeView {
                        name: &core.identity().name,
                        generation: core.identity().generation,
                        config: core.config(),
                        membership: core.membership(),
                        manager: core.manager(),
                        alarms: core.alarms(),
                    },
                    now,
                );
                status.reachability = self
                    .reachability
                    .as_ref()
                    .map(|r| ReachabilityReport::new(&r.targets(), core.reach_policy(), now));
                status.fencing = core.fencing_status(now);
                status.media = media_report(&self.media);
                let _ = reply.send(Response {
                    ok: true,
                    error: None,
                    status: Some(status),
                    message: None,
                    checks: None,
                    vrrp: None,
                });
            }
            Request::Checks => {
                let reports = self.runner.director_reports();
                tokio::spawn(async move {
                    let checks = reports.await;
                    let mut response = Response::done(format!("{} real server(s)", checks.len()));
                    response.checks = Some(checks);
                    let _ = reply.send(response);
                });
            }
            Request::Takeover { class } => self.command(now, Command::Takeover(class), reply),
            Request::Standby { class } => self.command(now, Command::Standby(class), reply),
            Request::Reload => self.reload(now, reply),
            Request::Auto => {
                let _ = reply.send(Response::refused(
                    "auto applies to VRRP instances; this node runs heartbeat membership",
                ));
            }
        }
    }

    fn command(&mut self, now: Instant, command: Command, reply: oneshot::Sender<Response>) {
        let _ = reply.send(self.answer(now, Input::Command(command)));
    }

    /// Steps the core with an input it answers (a command, a reload) and returns the answer.
    fn answer(&mut self, now: Instant, input: Input<'_>) -> Response {
        self.step(now, input)
            .unwrap_or_else(|| Response::refused("the node has stopped"))
    }

    /// Loads the configuration again, lets the core apply what it can, then reloads the
    /// directors; the answer has one line per part and is a refusal if any part failed.
    fn reload(&mut self, now: Instant, reply: oneshot::Sender<Response>) {
        let first = match &self.reloader {
            None => Response::refused("this node cannot reload its configuration"),
            Some(reloader) => match reloader() {
                Err(e) => Response::refused(format!(
                    "the new configuration is refused, the old one stays:\n{e}"
                )),
                // A change only a restart applies is refused by the core before anything,
                // so nothing outside it is touched either.
                Ok(config) => if self.core.needs_restart(&config).is_empty() {
                    self.apply_outside(&config)
                } else {
                    Ok(AppliedOutside::default())
                }
                .map_or_else(
                    |e| Response::refused(format!("nothing applied: {e}")),
                    |outside| self.answer(now, Input::Reload(Box::new(config), outside)),
                ),
            },
        };
        let inline = self
            .core
            .config()
            .director
            .as_ref()
            .and_then(|d| d.ldirectord_cf.is_none().then(|| d.config.clone()));
        let directors = self.runner.reload_directors(inline);
        tokio::spawn(async move {
            let mut ok = first.ok;
            let mut lines: Vec<String> = first.message.into_iter().chain(first.error).collect();
            for r in directors.await {
                match r {
                    Ok(m) => lines.push(m),
                    Err(e) => {
                        ok = false;
                        tracing::error!("{e}");
                        lines.push(e);
                    }
                }
            }
            let text = lines.join("\n");
            let _ = reply.send(if ok {
                Response::done(text)
            } else {
                Response::refused(text)
            });
        });
    }
}

impl InputSink for Node {
    /// Applies a frame received at `at`.
    fn on_frame(&mut self, at: Instant, inbound: InboundRef<'_>) {
        self.step(
            at,
            Input::Frame {
                link: inbound.link,
                from: inbound.from,
                frame: inbound.frame,
            },
        );
        // The gap since the sender's previous status, for the metrics histogram.
        for (peer, (seen, histogram)) in self.core.membership().peers().iter().zip(&mut self.gaps) {
            if peer.last_status != *seen {
                if let (Some(before), Some(now)) = (*seen, peer.last_status) {
                    histogram.observe(now.saturating_duration_since(before));
                }
                *seen = peer.last_status;
            }
        }
    }

    /// Applies one piece of mail at `now`.
    fn on_mail(&mut self, now: Instant, mail: Mail) {
        match mail {
            Mail::Call(call) => self.on_call(now, call),
            Mail::OpFinished(done) => {
                if done.start
                    && let Some(decided) = self.takeovers.get_mut(done.group).and_then(Option::take)
                    && done.result.is_ok()
                {
                    let name = self.core.config().groups[done.group].name();
                    crate::telemetry::global()
                        .observe_failover(name, now.saturating_duration_since(decided));
                }
                self.step(now, Input::OpFinished(done));
            }
            Mail::Frame(inbound) => self.on_frame(now, inbound.as_ref()),
            Mail::Reach(local) => {
                self.step(now, Input::Reach(local));
            }
            Mail::Fenced { peer, result } => {
                self.step(now, Input::FenceFinished { peer, result });
            }
            Mail::Shutdown => {
                // systemd shows "deactivating" while the groups are released.
                crate::sdnotify::notify_stopping();
                self.step(now, Input::Shutdown);
            }
        }
    }

    /// Logs a receive error at a limited rate (a read that returned nothing is quiet).
    fn receive_failed(&mut self, e: &std::io::Error) {
        use std::io::ErrorKind::{Interrupted, WouldBlock};
        if matches!(e.kind(), WouldBlock | Interrupted) {
            return;
        }
        if let Some(suppressed) = self.log_limit.allow("receive", crate::clock::now()) {
            tracing::warn!(error = %e, suppressed, "heartbeat receive failed");
        }
    }
}

/// Our frame as heartbeat's classic text for a serial line (`serial_write`: decoded, inner
/// auth recomputed, `>>>` … `<<<`); `None`, logged at a limited rate, if it cannot be
/// written so.
fn classic_text(
    frame: &[u8],
    keys: &crate::config::AuthKeys,
    log_limit: &mut LogLimit,
) -> Option<Vec<u8>> {
    match crate::media::serial::classic_frame(frame, keys) {
        Ok(text) => Some(text),
        Err(e) => {
            if let Some(suppressed) = log_limit.allow("classic", crate::clock::now()) {
                tracing::warn!(error = %e, suppressed, "cannot write our heartbeat as classic text for a serial line");
            }
            None
        }
    }
}

/// Forwards the runtime's inputs to a node's mail: control calls, and the stop request when
/// `shutdown` turns true (or its sender goes away). Both sources run it.
pub async fn forward_mail(
    mut control: mpsc::Receiver<ControlCall>,
    mut shutdown: watch::Receiver<bool>,
    mail: MailSender,
) {
    let mut control_open = true;
    let mut shutdown_open = true;
    loop {
        let next = tokio::select! {
            biased;
            changed = shutdown.changed(), if shutdown_open => {
                if changed.is_err() {
                    shutdown_open = false;
                    Some(Mail::Shutdown)
                } else {
                    (*shutdown.borrow()).then_some(Mail::Shutdown)
                }
            }
            call = control.recv(), if control_open => match call {
                Some(call) => Some(Mail::Call(call)),
                None => {
                    control_open = false;
                    None
                }
            },
            else => return,
        };
        if let Some(m) = next {
            mail(m);
        }
    }
}
