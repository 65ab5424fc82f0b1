//! One VRRP virtual router instance, sync groups and tracking, as plain data with pure
//! transitions (RFC 5798 §6, RFC 3768 §6, keepalived `vrrp.c` / `vrrp_sync.c` / `vrrp_track.c`).
//!
//! [`Instance::step`] takes one [`VrrpInput`] and the current [`Instant`] and returns the
//! [`VrrpAction`]s the task around it carries out: send an advert, hold or release the
//! resource group, announce the VIPs (gratuitous ARP / unsolicited NA), run a notify script,
//! and arm the one timer. Nothing here reads a clock or touches a socket, so the rules are
//! unit-tested and whole segments of routers are simulated on a made-up clock (see the tests).
//!
//! Rules, with their source:
//! * Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time; Skew_Time =
//!   ((256 − Priority) × Master_Adver_Interval) / 256 in v3 (RFC 5798 §6.1), (256 − Priority)
//!   / 256 s in v2 (RFC 3768 §6.1). v3 backups learn the master's interval (RFC 5798 §6.4.2).
//! * A backup that hears priority 0 takes over after Skew_Time only (RFC 5798 §6.4.2).
//! * A higher priority (or an equal one from a higher primary address) wins (§6.4.3).
//! * Priority 255 is the address owner: it becomes master at once and always preempts.
//! * Preempt_Mode false (`nopreempt`) keeps a backup from displacing a lower-priority master;
//!   `preempt_delay` lets a lower-priority master stand for that long first (keepalived:
//!   "seconds after startup or seeing a lower priority master until preemption").
//! * A master stopping or entering FAULT sends priority 0 (RFC 5798 §6.4.3, keepalived).
//! * A master that hears a lower priority answers with an advert and announces its VIPs
//!   again (keepalived `vrrp_garp_lower_prio_repeat`): the other side may hold them too.
//! * Beyond keepalived, a second liveness path (hbd's heartbeat media beside VRRP): while
//!   [`VrrpInput::PeerAlive`] says the peer node is still heard there, a backup that has heard
//!   a master in this run does not take over when the adverts stop; it waits for the peer to
//!   fall silent on that path too, or for an explicit priority 0. Lost adverts with a live
//!   peer mean a cut VRRP path (a firewall dropping protocol 112), not a dead master.
//! * `state MASTER` in keepalived.conf becomes master at start without waiting for the
//!   Master_Down timer (keepalived times out of BACKUP at once); the election then settles
//!   on the adverts.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::packet::{PRIORITY_OWNER, PRIORITY_STOP, Version};

/// RFC 5798 §6.4 states, plus FAULT (keepalived: a tracked interface or script is down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VrrpState {
    /// Not started, or stopped (RFC 5798 §6.4.1 Initialize).
    Init,
    /// Listening for the master (RFC 5798 §6.4.2).
    Backup,
    /// Holding the virtual addresses and advertising (RFC 5798 §6.4.3).
    Master,
    /// Unable to serve: leaves MASTER with priority 0 and waits for the fault to clear.
    Fault,
}

impl VrrpState {
    /// keepalived's word, as `notify` scripts receive it.
    pub fn name(self) -> &'static str {
        match self {
            VrrpState::Init => "STOP",
            VrrpState::Backup => "BACKUP",
            VrrpState::Master => "MASTER",
            VrrpState::Fault => "FAULT",
        }
    }
}

/// Gratuitous ARP / unsolicited NA after becoming master (keepalived `garp_master_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GarpConfig {
    /// Delay of the second burst (`garp_master_delay`, keepalived default 5 s; 0 = none).
    pub delay: Duration,
    /// Announcements per VIP in each burst (`garp_master_repeat`, default 5).
    pub repeat: u32,
    /// Period of refresh bursts while master (`garp_master_refresh`, default off).
    pub refresh: Option<Duration>,
    /// Announcements per VIP in a refresh burst (`garp_master_refresh_repeat`, default 1).
    pub refresh_repeat: u32,
    /// Announcements per VIP when a lower priority master is heard
    /// (`garp_lower_prio_repeat`; keepalived default: `garp_master_repeat`).
    pub lower_prio_repeat: u32,
}

impl Default for GarpConfig {
    /// keepalived 2.2.7's defaults (`global_data.c`: `VRRP_GARP_DELAY`, `VRRP_GARP_REP`).
    fn default() -> Self {
        GarpConfig {
            delay: Duration::from_secs(5),
            repeat: 5,
            refresh: None,
            refresh_repeat: 1,
            lower_prio_repeat: 5,
        }
    }
}

/// The state keepalived.conf's `state` asks for at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialState {
    /// `state BACKUP` (the default): wait Master_Down_Interval for a master.
    Backup,
    /// `state MASTER`: become master at start.
    Master,
}

/// What the state machine needs of one instance's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    /// Instance name (`vrrp_instance NAME`).
    pub name: String,
    /// Virtual router id.
    pub vrid: u8,
    /// Protocol version (decides the skew formula).
    pub version: Version,
    /// Configured priority (1–255).
    pub priority: u8,
    /// Our advertisement interval (`advert_int`).
    pub advert_int: Duration,
    /// `state`.
    pub initial: InitialState,
    /// Preempt_Mode (`nopreempt` clears it).
    pub preempt: bool,
    /// `preempt_delay`.
    pub preempt_delay: Duration,
    /// Our primary address on the segment (the tie-break of equal priorities, RFC 5798 §6.4.3).
    pub local_addr: IpAddr,
    /// Announcements after becoming master.
    pub garp: GarpConfig,
}

/// One input to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VrrpInput {
    /// Start the instance (leave INIT).
    Start,
    /// An advert that passed the receive checks ([`crate::vrrp::packet::Expect`]).
    Advert {
        /// Sender's primary address.
        src: IpAddr,
        /// Sender's priority.
        priority: u8,
        /// Sender's advertisement interval.
        interval: Duration,
    },
    /// The armed timer is due (any due timer is handled; early calls do nothing).
    Timer,
    /// Tracked scripts and interfaces changed: the new effective priority, or a fault
    /// ([`effective_priority`]).
    Track(Tracked),
    /// `hactl takeover`: act with priority 254 (the highest below the owner) and take over now.
    Takeover,
    /// `hactl standby`: hand over with priority 0, then act with priority 1.
    Standby,
    /// Back to the configured and tracked priority.
    Auto,
    /// Stop: a master sends priority 0 and releases the group.
    Shutdown,
    /// Whether the peer node is heard on another path (heartbeat media beside VRRP).
    PeerAlive(bool),
}

/// What the task around the state machine must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VrrpAction {
    /// Send one advert with this priority (0 = stopping).
    SendAdvert {
        /// Priority to advertise.
        priority: u8,
    },
    /// Became master: start the instance's resource group, left to right.
    HoldGroup,
    /// Left master: stop the resource group, right to left.
    ReleaseGroup,
    /// Announce every VIP `repeat` times (gratuitous ARP / unsolicited NA), after the VIPs
    /// of a [`VrrpAction::HoldGroup`] are up.
    Announce {
        /// Announcements per VIP.
        repeat: u32,
    },
    /// Run the notify scripts of this state (`notify_master`, `notify_backup`,
    /// `notify_fault`, `notify_stop`, and `notify` with the state word).
    Notify(VrrpState),
    /// The one timer: call [`Instance::step`] with [`VrrpInput::Timer`] at this instant.
    ArmTimer(Instant),
}

/// The operator's override (`hactl takeover` / `standby`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// None: configured and tracked priority.
    Auto,
    /// Priority 254.
    Takeover,
    /// Priority 1.
    Standby,
}

/// Why a backup does or does not displace the current master (`hactl status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreemptStatus {
    /// We are master, or no master is known.
    NotApplicable,
    /// The master's priority is higher or equal (or higher address).
    MasterOutranks,
    /// Lower-priority master, `nopreempt`: it stays.
    NoPreempt,
    /// Lower-priority master; preempting once `preempt_delay` has run out at this instant.
    DelayedUntil(Instant),
    /// Lower-priority master ignored: taking over when Master_Down runs out.
    Preempting,
    /// The adverts stopped but the peer is heard on the heartbeat media: not taking over.
    PeerAliveElsewhere,
}

/// One virtual router instance.
#[derive(Debug, Clone)]
pub struct Instance {
    cfg: InstanceConfig,
    state: VrrpState,
    tracked: Tracked,
    operator: Operator,
    master_adver_int: Duration,
    master: Option<(IpAddr, u8)>,
    master_down_at: Option<Instant>,
    advert_at: Option<Instant>,
    preempt_at: Option<Instant>,
    garp_at: Option<Instant>,
    refresh_at: Option<Instant>,
    peer_alive: bool,
    master_heard: bool,
    held_by_peer: bool,
}

impl Instance {
    /// A stopped instance.
    pub fn new(cfg: InstanceConfig) -> Instance {
        let advert_int = cfg.advert_int;
        let tracked = Tracked::Priority(cfg.priority);
        Instance {
            cfg,
            state: VrrpState::Init,
            tracked,
            operator: Operator::Auto,
            master_adver_int: advert_int,
            master: None,
            master_down_at: None,
            advert_at: None,
            preempt_at: None,
            garp_at: None,
            refresh_at: None,
            peer_alive: false,
            master_heard: false,
            held_by_peer: false,
        }
    }

    /// Configuration.
    pub fn config(&self) -> &InstanceConfig {
        &self.cfg
    }

    /// Current state.
    pub fn state(&self) -> VrrpState {
        self.state
    }

    /// The priority we advertise now: the operator's override, else the tracked priority.
    pub fn priority(&self) -> u8 {
        if self.cfg.priority == PRIORITY_OWNER {
            return PRIORITY_OWNER;
        }
        match (self.operator, self.tracked) {
            (Operator::Takeover, _) => PRIORITY_OWNER - 1,
            (Operator::Standby, _) => 1,
            (Operator::Auto, Tracked::Priority(p)) => p,
            (Operator::Auto, Tracked::Fault) => self.cfg.priority,
        }
    }

    /// The operator's override (`hactl takeover` / `standby`), if any.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The outcome of tracking: priority, or FAULT.
    pub fn tracked(&self) -> Tracked {
        self.tracked
    }

    /// The last master heard (address, priority), while BACKUP.
    pub fn master(&self) -> Option<(IpAddr, u8)> {
        self.master
    }

    /// The master's advertisement interval as learned (v3) or configured (v2).
    pub fn master_adver_int(&self) -> Duration {
        self.master_adver_int
    }

    /// Skew_Time: RFC 5798 §6.1 (v3), RFC 3768 §6.1 (v2).
    pub fn skew(&self) -> Duration {
        let weight = 256 - u32::from(self.priority());
        match self.cfg.version {
            Version::V3 => self.master_adver_int * weight / 256,
            Version::V2 => Duration::from_secs(1) * weight / 256,
        }
    }

    /// Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time (RFC 5798 §6.1).
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_int * 3 + self.skew()
    }

    /// Why a lower-priority master is or is not displaced.
    pub fn preempt_status(&self) -> PreemptStatus {
        if self.held_by_peer && self.state == VrrpState::Backup {
            return PreemptStatus::PeerAliveElsewhere;
        }
        let Some((src, prio)) = self.master else {
            return PreemptStatus::NotApplicable;
        };
        if self.state != VrrpState::Backup {
            return PreemptStatus::NotApplicable;
        }
        if !self.outranks(src, prio) {
            return PreemptStatus::MasterOutranks;
        }
        if !self.may_preempt() {
            return PreemptStatus::NoPreempt;
        }
        match self.preempt_at {
            Some(at) => PreemptStatus::DelayedUntil(at),
            None => PreemptStatus::Preempting,
        }
    }

    /// The earliest armed deadline.
    pub fn deadline(&self) -> Option<Instant> {
        [
            self.master_down_at,
            self.advert_at,
            self.garp_at,
            self.refresh_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether we beat an advert of `priority` from `src` (RFC 5798 §6.4.3: priority, then the
    /// primary address).
    fn outranks(&self, src: IpAddr, priority: u8) -> bool {
        let ours = self.priority();
        ours > priority || (ours == priority && self.cfg.local_addr > src)
    }

    fn may_preempt(&self) -> bool {
        self.cfg.preempt
            || self.cfg.priority == PRIORITY_OWNER
            || self.operator == Operator::Takeover
    }

    /// Feeds one input; returns the actions to carry out, ending with the timer to arm.
    pub fn step(&mut self, input: VrrpInput, now: Instant) -> Vec<VrrpAction> {
        let mut out = Vec::new();
        match input {
            VrrpInput::Start => {
                if self.state == VrrpState::Init {
                    self.start(now, &mut out);
                }
            }
            VrrpInput::Advert {
                src,
                priority,
                interval,
            } => self.on_advert(src, priority, interval, now, &mut out),
            VrrpInput::Timer => self.on_timer(now, &mut out),
            VrrpInput::Track(t) => self.on_track(t, now, &mut out),
            VrrpInput::Takeover => {
                self.operator = Operator::Takeover;
                match self.state {
                    VrrpState::Backup => self.become_master(now, &mut out),
                    VrrpState::Master => out.push(self.advert(now)),
                    _ => {}
                }
            }
            VrrpInput::Standby => {
                self.operator = Operator::Standby;
                if self.state == VrrpState::Master {
                    out.push(VrrpAction::SendAdvert {
                        priority: PRIORITY_STOP,
                    });
                    self.become_backup(now, &mut out);
                }
            }
            VrrpInput::Auto => {
                self.operator = Operator::Auto;
                if self.state == VrrpState::Master {
                    out.push(self.advert(now));
                }
            }
            VrrpInput::PeerAlive(alive) => {
                self.peer_alive = alive;
                if !alive && self.held_by_peer {
                    // Silent on every path now: Master_Down has long run out.
                    self.held_by_peer = false;
                    if self.state == VrrpState::Backup {
                        self.master_down_at = Some(now);
                    }
                }
            }
            VrrpInput::Shutdown => {
                if self.state == VrrpState::Master {
                    out.push(VrrpAction::SendAdvert {
                        priority: PRIORITY_STOP,
                    });
                    out.push(VrrpAction::ReleaseGroup);
                }
                if self.state != VrrpState::Init {
                    self.enter(VrrpState::Init, &mut out);
                }
                self.clear_timers();
            }
        }
        if let Some(at) = self.deadline() {
            out.push(VrrpAction::ArmTimer(at));
        }
        out
    }

    fn start(&mut self, now: Instant, out: &mut Vec<VrrpAction>) {
        if self.tracked == Tracked::Fault {
            self.enter(VrrpState::Fault, out);
        } else if self.priority() == PRIORITY_OWNER || self.cfg.initial == InitialState::Master {
            self.become_master(now, out);
        } else {
            self.become_backup(now, out);
        }
    }

    fn on_advert(
        &mut self,
        src: IpAddr,
        priority: u8,
        interval: Duration,
        now: Instant,
        out: &mut Vec<VrrpAction>,
    ) {
        match self.state {
            VrrpState::Backup => {
                if priority == PRIORITY_STOP {
                    // RFC 5798 §6.4.2: take over after Skew_Time. The master said it stops:
                    // a live peer on the heartbeat media does not hold this back.
                    self.master_heard = false;
                    self.held_by_peer = false;
                    self.master = None;
                    self.preempt_at = None;
                    self.master_down_at = Some(now + self.skew());
                    return;
                }
                let lower = self.outranks(src, priority);
                let stands = !lower
                    || !self.may_preempt()
                    || (!self.cfg.preempt_delay.is_zero()
                        && *self.preempt_at.get_or_insert(now + self.cfg.preempt_delay) > now);
                if !lower {
                    self.preempt_at = None;
                }
                self.master = Some((src, priority));
                self.master_heard = true;
                self.held_by_peer = false;
                if stands {
                    if self.cfg.version == Version::V3 && !interval.is_zero() {
                        self.master_adver_int = interval;
                    }
                    self.master_down_at = Some(now + self.master_down_interval());
                }
                // Otherwise: discard, Master_Down runs out and we preempt.
            }
            VrrpState::Master => {
                if priority == PRIORITY_STOP {
                    out.push(self.advert(now));
                } else if self.outranks(src, priority) {
                    // A competing master of lower rank: assert ourselves, re-announce.
                    out.push(self.advert(now));
                    if self.cfg.garp.lower_prio_repeat > 0 {
                        out.push(VrrpAction::Announce {
                            repeat: self.cfg.garp.lower_prio_repeat,
                        });
                    }
                } else {
                    if self.cfg.version == Version::V3 && !interval.is_zero() {
                        self.master_adver_int = interval;
                    }
                    self.master = Some((src, priority));
                    self.master_heard = true;
                    self.become_backup(now, out);
                }
            }
            VrrpState::Init | VrrpState::Fault => {}
        }
    }

    fn on_timer(&mut self, now: Instant, out: &mut Vec<VrrpAction>) {
        if self.state == VrrpState::Backup && self.master_down_at.is_some_and(|t| t <= now) {
            if self.peer_alive && self.master_heard {
                // The adverts stopped, the peer did not: hold on, check again.
                self.held_by_peer = true;
                self.master_down_at = Some(now + self.master_down_interval());
                return;
            }
            self.become_master(now, out);
            return;
        }
        if self.state != VrrpState::Master {
            return;
        }
        if self.advert_at.is_some_and(|t| t <= now) {
            out.push(self.advert(now));
        }
        if self.garp_at.is_some_and(|t| t <= now) {
            self.garp_at = None;
            out.push(VrrpAction::Announce {
                repeat: self.cfg.garp.repeat,
            });
        }
        if let (Some(at), Some(every)) = (self.refresh_at, self.cfg.garp.refresh)
            && at <= now
        {
            self.refresh_at = Some(now + every);
            out.push(VrrpAction::Announce {
                repeat: self.cfg.garp.refresh_repeat,
            });
        }
    }

    fn on_track(&mut self, t: Tracked, now: Instant, out: &mut Vec<VrrpAction>) {
        let before = self.priority();
        self.tracked = t;
        match (t, self.state) {
            (Tracked::Fault, VrrpState::Master) => {
                out.push(VrrpAction::SendAdvert {
                    priority: PRIORITY_STOP,
                });
                out.push(VrrpAction::ReleaseGroup);
                self.clear_timers();
                self.enter(VrrpState::Fault, out);
            }
            (Tracked::Fault, VrrpState::Backup) => {
                self.clear_timers();
                self.enter(VrrpState::Fault, out);
            }
            (Tracked::Priority(_), VrrpState::Fault) => {
                self.become_backup(now, out);
            }
            (Tracked::Priority(_), VrrpState::Master) if self.priority() != before => {
                // Tell the backups at once, so one with preempt can take over.
                out.push(self.advert(now));
            }
            _ => {}
        }
    }

    /// The advert with our priority, re-arming the advert timer.
    fn advert(&mut self, now: Instant) -> VrrpAction {
        self.advert_at = Some(now + self.cfg.advert_int);
        VrrpAction::SendAdvert {
            priority: self.priority(),
        }
    }

    fn become_master(&mut self, now: Instant, out: &mut Vec<VrrpAction>) {
        self.clear_timers();
        self.master = None;
        out.push(self.advert(now));
        out.push(VrrpAction::HoldGroup);
        if self.cfg.garp.repeat > 0 {
            out.push(VrrpAction::Announce {
                repeat: self.cfg.garp.repeat,
            });
            if !self.cfg.garp.delay.is_zero() {
                self.garp_at = Some(now + self.cfg.garp.delay);
            }
        }
        self.refresh_at = self.cfg.garp.refresh.map(|r| now + r);
        self.enter(VrrpState::Master, out);
    }

    fn become_backup(&mut self, now: Instant, out: &mut Vec<VrrpAction>) {
        if self.state == VrrpState::Master {
            out.push(VrrpAction::ReleaseGroup);
        }
        self.clear_timers();
        self.master_down_at = Some(now + self.master_down_interval());
        self.enter(VrrpState::Backup, out);
    }

    fn enter(&mut self, to: VrrpState, out: &mut Vec<VrrpAction>) {
        if self.state != to {
            self.state = to;
            out.push(VrrpAction::Notify(to));
        }
    }

    fn clear_timers(&mut self) {
        self.master_down_at = None;
        self.advert_at = None;
        self.preempt_at = None;
        self.garp_at = None;
        self.refresh_at = None;
    }

    /// Moves this instance to `to` because another member of its sync group did
    /// (keepalived `vrrp_sync.c`). The group moves together; the forced move does not
    /// propagate again.
    pub fn follow(&mut self, to: VrrpState, now: Instant) -> Vec<VrrpAction> {
        let mut out = Vec::new();
        if self.state != to && self.state != VrrpState::Init {
            match to {
                VrrpState::Master if self.state != VrrpState::Fault => {
                    self.become_master(now, &mut out)
                }
                VrrpState::Backup if self.state == VrrpState::Master => {
                    self.become_backup(now, &mut out)
                }
                VrrpState::Fault => {
                    if self.state == VrrpState::Master {
                        out.push(VrrpAction::SendAdvert {
                            priority: PRIORITY_STOP,
                        });
                        out.push(VrrpAction::ReleaseGroup);
                    }
                    self.clear_timers();
                    self.enter(VrrpState::Fault, &mut out);
                }
                _ => {}
            }
        }
        if let Some(at) = self.deadline() {
            out.push(VrrpAction::ArmTimer(at));
        }
        out
    }
}

/// The instances of one router, with their sync groups (keepalived `vrrp_sync_group`):
/// a member entering MASTER, BACKUP (from MASTER) or FAULT takes the other members along.
#[derive(Debug, Clone)]
pub struct VrrpRouter {
    /// The instances, in configuration order.
    pub instances: Vec<Instance>,
    /// Each sync group as indices into `instances`.
    pub groups: Vec<Vec<usize>>,
}

impl VrrpRouter {
    /// A router with `instances` and sync `groups` (indices; an instance in at most one group).
    pub fn new(instances: Vec<Instance>, groups: Vec<Vec<usize>>) -> VrrpRouter {
        VrrpRouter { instances, groups }
    }

    /// Steps instance `idx` and its sync group; returns `(instance, action)` pairs in order.
    pub fn step(&mut self, idx: usize, input: VrrpInput, now: Instant) -> Vec<(usize, VrrpAction)> {
        let Some(inst) = self.instances.get_mut(idx) else {
            return Vec::new();
        };
        let before = inst.state();
        let mut out: Vec<(usize, VrrpAction)> = inst
            .step(input, now)
            .into_iter()
            .map(|a| (idx, a))
            .collect();
        let after = inst.state();
        let moves = before != after
            && (after == VrrpState::Master
                || after == VrrpState::Fault
                || (before == VrrpState::Master && after == VrrpState::Backup));
        if moves && let Some(group) = self.groups.iter().find(|g| g.contains(&idx)) {
            for &other in group.iter().filter(|&&o| o != idx) {
                if let Some(o) = self.instances.get_mut(other) {
                    out.extend(o.follow(after, now).into_iter().map(|a| (other, a)));
                }
            }
        }
        out
    }

    /// Steps every instance whose timer is due at `now`.
    pub fn on_timers(&mut self, now: Instant) -> Vec<(usize, VrrpAction)> {
        let mut out = Vec::new();
        for idx in 0..self.instances.len() {
            if self.instances[idx].deadline().is_some_and(|t| t <= now) {
                out.extend(self.step(idx, VrrpInput::Timer, now));
            }
        }
        out
    }

    /// The earliest timer of all instances.
    pub fn deadline(&self) -> Option<Instant> {
        self.instances.iter().filter_map(Instance::deadline).min()
    }
}

/// The outcome of tracking for one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    /// Serve with this priority.
    Priority(u8),
    /// A tracked item without weight is down: FAULT.
    Fault,
}

/// One tracked item (script or interface) as it stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    /// keepalived `weight`: 0 = FAULT when down; > 0 added while up; < 0 added while down.
    pub weight: i32,
    /// Whether the script passes / the interface is up.
    pub up: bool,
}

/// The effective priority from the base and the tracked items (keepalived `vrrp_track.c`):
/// a zero-weight item down is a FAULT; weights move the priority within 1–254; the owner
/// (255) keeps 255.
pub fn effective_priority(base: u8, tracks: impl IntoIterator<Item = Track>) -> Tracked {
    let mut p = i32::from(base);
    for t in tracks {
        match (t.weight, t.up) {
            (0, false) => return Tracked::Fault,
            (w, true) if w > 0 => p += w,
            (w, false) if w < 0 => p += w,
            _ => {}
        }
    }
    if base == PRIORITY_OWNER {
        return Tracked::Priority(PRIORITY_OWNER);
    }
    Tracked::Priority(u8::try_from(p.clamp(1, 254)).unwrap_or(1))
}

/// A `vrrp_script` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptConfig {
    /// Script name (`vrrp_script NAME`).
    pub name: String,
    /// Command line (`script`).
    pub command: String,
    /// Time between runs (`interval`, default 1 s).
    pub interval: Duration,
    /// A run lasting longer fails (`timeout`, default: `interval`).
    pub timeout: Duration,
    /// Priority change (`weight`, default 0 = FAULT on failure).
    pub weight: i32,
    /// Failures in a row before the script counts as down (`fall`, default 1).
    pub fall: u32,
    /// Successes in a row before it counts as up again (`rise`, default 1).
    pub rise: u32,
    /// Starts down (`init_fail`).
    pub init_fail: bool,
}

/// The rise/fall state of one tracked script (keepalived `vrrp_script` result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptTracker {
    /// Whether the script counts as up.
    pub up: bool,
    run: u32,
}

impl ScriptTracker {
    /// A tracker before any run: up unless `init_fail`.
    pub fn new(cfg: &ScriptConfig) -> ScriptTracker {
        ScriptTracker {
            up: !cfg.init_fail,
            run: 0,
        }
    }

    /// Records one run (exit 0 within the timeout = success); returns whether `up` changed.
    pub fn record(&mut self, cfg: &ScriptConfig, success: bool) -> bool {
        if success == self.up {
            self.run = 0;
            return false;
        }
        self.run += 1;
        let needed = if success { cfg.rise } else { cfg.fall }.max(1);
        if self.run >= needed {
            self.up = success;
            self.run = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests;
