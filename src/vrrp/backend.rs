//! VRRP as a membership backend: instance states drive resource groups (issue 13).
//!
//! Each `vrrp_instance` drives one resource group; the instances of a `vrrp_sync_group` drive
//! one group together ([`GroupMap`]). [`Holding`] is the pure decision: the group is held
//! while any of its instances is MASTER (a sync group moves as one, so that is all of them),
//! started left to right on the first hold and stopped right to left when the last member
//! leaves MASTER. [`TrackBoard`] turns tracked scripts and interfaces into each instance's
//! effective priority or FAULT (keepalived `vrrp_track.c`); [`notify_commands`] builds the
//! notify scripts' command lines with keepalived's arguments.
//!
//! [`drive`] is the thin task: it reads the router's [`InstanceEvent`]s and hands group
//! operations to a worker that runs them one at a time, in order, so a slow start never
//! holds back the adverts. The world is reached through two traits, [`GroupDriver`] (the
//! daemon's resource runner) and [`CommandRunner`] (scripts with a timeout, process group
//! killed): this module stays below `config` and `resources` in the module graph.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::config::{InstanceSpec, NotifySpec, VrrpConfig};
use super::state::{
    ScriptConfig, ScriptTracker, Track, Tracked, VrrpInput, VrrpState, effective_priority,
};
use super::task::{InstanceEvent, InstanceView};

/// A boxed future the backend's I/O edges return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Starts, stops and announces resource groups by index (the daemon's resource runner).
pub trait GroupDriver: Send + Sync {
    /// Starts group `group` left to right; `Err` says why (rolled back).
    fn start(&self, group: usize) -> BoxFuture<Result<(), String>>;
    /// Stops group `group` right to left; `Err` says why (something may still run).
    fn stop(&self, group: usize) -> BoxFuture<Result<(), String>>;
    /// Announces the group's addresses again (gratuitous ARP / unsolicited NA).
    fn announce(&self, group: usize) -> BoxFuture<Result<(), String>>;
}

/// Runs one command line (no shell) with a timeout, killing its process group on expiry.
pub trait CommandRunner: Send + Sync {
    /// `true` when it exited 0 within `timeout`.
    fn run(&self, argv: Vec<String>, timeout: Duration) -> BoxFuture<bool>;
}

/// Which resource group each instance drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMap {
    /// Group index of each instance.
    pub of_instance: Vec<usize>,
    /// Member instances of each group, in configuration order.
    pub members: Vec<Vec<usize>>,
}

impl GroupMap {
    /// Groups in order of their first instance: a sync group is one group of its members,
    /// any other instance a group of its own.
    pub fn new(instances: usize, sync_groups: &[Vec<usize>]) -> GroupMap {
        let mut of_instance = vec![usize::MAX; instances];
        let mut members: Vec<Vec<usize>> = Vec::new();
        for idx in 0..instances {
            if of_instance[idx] != usize::MAX {
                continue;
            }
            let group = members.len();
            let mut these: Vec<usize> = sync_groups
                .iter()
                .find(|g| g.contains(&idx))
                .map(|g| g.iter().copied().filter(|&i| i < instances).collect())
                .unwrap_or_else(|| vec![idx]);
            these.sort_unstable();
            these.dedup();
            for &i in &these {
                of_instance[i] = group;
            }
            members.push(these);
        }
        GroupMap {
            of_instance,
            members,
        }
    }

    /// The groups of a configuration.
    pub fn of(config: &VrrpConfig) -> GroupMap {
        GroupMap::new(config.instances.len(), &config.group_indices())
    }
}

/// What to do to a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupOp {
    /// Start it, left to right.
    Start(usize),
    /// Stop it, right to left.
    Stop(usize),
    /// Announce its addresses.
    Announce(usize),
}

/// Which groups are held: the pure "instance events → group operations" decision.
#[derive(Debug, Clone)]
pub struct Holding {
    map: GroupMap,
    master: Vec<bool>,
}

impl Holding {
    /// Nothing held.
    pub fn new(map: GroupMap) -> Holding {
        let n = map.of_instance.len();
        Holding {
            map,
            master: vec![false; n],
        }
    }

    /// Whether group `g` is held (any member MASTER).
    pub fn held(&self, g: usize) -> bool {
        self.map
            .members
            .get(g)
            .is_some_and(|m| m.iter().any(|&i| self.master[i]))
    }

    /// The group operation an instance's event calls for, if any.
    pub fn on_event(&mut self, idx: usize, event: InstanceEvent) -> Option<GroupOp> {
        let &g = self.map.of_instance.get(idx)?;
        let before = self.held(g);
        match event {
            InstanceEvent::HoldGroup => self.master[idx] = true,
            InstanceEvent::ReleaseGroup => self.master[idx] = false,
            InstanceEvent::Announce { .. } => return before.then_some(GroupOp::Announce(g)),
            InstanceEvent::Notify(_) => return None,
        }
        match (before, self.held(g)) {
            (false, true) => Some(GroupOp::Start(g)),
            (true, false) => Some(GroupOp::Stop(g)),
            _ => None,
        }
    }

    /// Every held group, for a last stop.
    pub fn held_groups(&self) -> Vec<usize> {
        (0..self.map.members.len())
            .filter(|&g| self.held(g))
            .collect()
    }
}

/// A tracked item.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TrackedItem {
    /// A `vrrp_script`, by name.
    Script(String),
    /// An interface's link, by name.
    Interface(String),
}

/// Tracked items, their current state, and each instance's effective priority.
#[derive(Debug, Clone)]
pub struct TrackBoard {
    /// Per instance: base priority and its items with their weights.
    instances: Vec<(u8, Vec<(TrackedItem, i32)>)>,
    /// Current state of every item (true = up).
    up: BTreeMap<TrackedItem, bool>,
}

impl TrackBoard {
    /// Items of every instance: its `track_script` and `track_interface` lines, and its own
    /// interface with weight 0 (keepalived tracks the instance's interface unless
    /// `dont_track_primary`). Scripts start as their `init_fail` says; interfaces up.
    pub fn new(config: &VrrpConfig) -> TrackBoard {
        let mut up = BTreeMap::new();
        let instances = config
            .instances
            .iter()
            .map(|i| {
                let mut items = vec![(TrackedItem::Interface(i.interface.clone()), 0)];
                items.extend(
                    i.track_interfaces
                        .iter()
                        .map(|t| (TrackedItem::Interface(t.name.clone()), t.weight)),
                );
                items.extend(
                    i.track_scripts
                        .iter()
                        .map(|t| (TrackedItem::Script(t.name.clone()), t.weight)),
                );
                for (item, _) in &items {
                    let initial = match item {
                        TrackedItem::Script(s) => config.script(s).is_none_or(|c| !c.init_fail),
                        TrackedItem::Interface(_) => true,
                    };
                    up.entry(item.clone()).or_insert(initial);
                }
                (i.priority, items)
            })
            .collect();
        TrackBoard { instances, up }
    }

    /// Every item tracked by some instance.
    pub fn items(&self) -> Vec<TrackedItem> {
        self.up.keys().cloned().collect()
    }

    /// Whether an item is up now.
    pub fn is_up(&self, item: &TrackedItem) -> Option<bool> {
        self.up.get(item).copied()
    }

    /// Instance `idx`'s effective priority (or FAULT) from its items now.
    pub fn tracked(&self, idx: usize) -> Tracked {
        let Some((base, items)) = self.instances.get(idx) else {
            return Tracked::Fault;
        };
        effective_priority(
            *base,
            items.iter().map(|(item, weight)| Track {
                weight: *weight,
                up: self.up.get(item).copied().unwrap_or(true),
            }),
        )
    }

    /// Records an item's state; returns each instance whose outcome changed, with the new one.
    pub fn set(&mut self, item: &TrackedItem, up: bool) -> Vec<(usize, Tracked)> {
        let before: Vec<Tracked> = (0..self.instances.len()).map(|i| self.tracked(i)).collect();
        match self.up.get_mut(item) {
            Some(state) if *state != up => *state = up,
            _ => return Vec::new(),
        }
        (0..self.instances.len())
            .filter_map(|i| {
                let now = self.tracked(i);
                (now != before[i]).then_some((i, now))
            })
            .collect()
    }

    /// Items of instance `idx` that are down, for `hactl status`.
    pub fn down_items(&self, idx: usize) -> Vec<String> {
        self.instances
            .get(idx)
            .map(|(_, items)| {
                items
                    .iter()
                    .filter(|(item, _)| self.up.get(item) == Some(&false))
                    .map(|(item, w)| match item {
                        TrackedItem::Script(s) => format!("script {s} down (weight {w})"),
                        TrackedItem::Interface(i) => format!("interface {i} down (weight {w})"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Splits a keepalived script line into words: blanks separate, `"…"` and `'…'` group.
pub fn split_command(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                started = false;
            }
            (None, c) => word.push(c),
        }
    }
    if started || !word.is_empty() {
        words.push(word);
    }
    words
}

/// Whether the notify scripts name an instance or a sync group (`notify`'s first argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyScope {
    /// `INSTANCE`.
    Instance,
    /// `GROUP`.
    Group,
}

/// The command lines keepalived runs when `name` enters `state`: the state's own script
/// (`notify_master`, `notify_backup`, `notify_fault`, `notify_stop`) as written, then
/// `notify` with `INSTANCE|GROUP NAME STATE PRIORITY` appended.
pub fn notify_commands(
    spec: &NotifySpec,
    scope: NotifyScope,
    name: &str,
    state: VrrpState,
    priority: u8,
) -> Vec<Vec<String>> {
    let own = match state {
        VrrpState::Master => &spec.master,
        VrrpState::Backup => &spec.backup,
        VrrpState::Fault => &spec.fault,
        VrrpState::Init => &spec.stop,
    };
    let mut out = Vec::new();
    if let Some(line) = own {
        out.push(split_command(line));
    }
    if let Some(line) = &spec.any {
        let mut argv = split_command(line);
        argv.push(
            match scope {
                NotifyScope::Instance => "INSTANCE",
                NotifyScope::Group => "GROUP",
            }
            .to_string(),
        );
        argv.push(name.to_string());
        argv.push(state.name().to_string());
        argv.push(priority.to_string());
        out.push(argv);
    }
    out.retain(|a| !a.is_empty());
    out
}

/// How long a notify script may run (keepalived kills notify scripts after
/// `script_user`'s default timeout too; it has no per-script setting).
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one `vrrp_script` every `interval` with its timeout until `stop` flips, reporting
/// each change of its rise/fall state (keepalived `vrrp_script`).
pub async fn run_script(
    cfg: ScriptConfig,
    runner: Arc<dyn CommandRunner>,
    changes: mpsc::Sender<(TrackedItem, bool)>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tracker = ScriptTracker::new(&cfg);
    let argv = split_command(&cfg.command);
    let item = TrackedItem::Script(cfg.name.clone());
    let mut next = crate::clock::now();
    // Bounded by `stop`: each turn waits one interval.
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        next += cfg.interval;
        let ok = runner.run(argv.clone(), cfg.timeout).await;
        if tracker.record(&cfg, ok) {
            tracing::info!(script = %cfg.name, up = tracker.up, "VRRP script {}", if tracker.up { "succeeded: up" } else { "failed: down" });
            if changes.send((item.clone(), tracker.up)).await.is_err() {
                return;
            }
        }
        let now = crate::clock::now();
        if next < now {
            next = now;
        }
    }
}

/// The groups' states for `hactl status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupPhase {
    /// Not held.
    Stopped,
    /// Starting.
    Starting,
    /// Held and started.
    Running,
    /// Stopping.
    Stopping,
    /// The last start failed (rolled back) or a stop failed.
    Failed,
}

impl GroupPhase {
    /// The word `hactl status` prints (as the node's groups).
    pub fn name(self) -> &'static str {
        match self {
            GroupPhase::Stopped => "stopped",
            GroupPhase::Starting => "starting",
            GroupPhase::Running => "running",
            GroupPhase::Stopping => "stopping",
            GroupPhase::Failed => "failed",
        }
    }
}

/// Runs group operations one at a time in order, publishing each group's phase; ends when
/// `ops` closes and every queued operation is done.
pub async fn run_groups(
    groups: Arc<dyn GroupDriver>,
    mut ops: mpsc::UnboundedReceiver<GroupOp>,
    phases: watch::Sender<Vec<GroupPhase>>,
) {
    let set = |g: usize, p: GroupPhase| {
        phases.send_modify(|v| {
            if let Some(slot) = v.get_mut(g) {
                *slot = p;
            }
        })
    };
    while let Some(op) = ops.recv().await {
        match op {
            GroupOp::Start(g) => {
                set(g, GroupPhase::Starting);
                match groups.start(g).await {
                    Ok(()) => set(g, GroupPhase::Running),
                    Err(e) => {
                        tracing::error!(group = g, "VRRP group start failed: {e}");
                        set(g, GroupPhase::Failed);
                    }
                }
            }
            GroupOp::Stop(g) => {
                set(g, GroupPhase::Stopping);
                match groups.stop(g).await {
                    Ok(()) => set(g, GroupPhase::Stopped),
                    Err(e) => {
                        tracing::error!(group = g, "VRRP group stop failed: {e}");
                        set(g, GroupPhase::Failed);
                    }
                }
            }
            GroupOp::Announce(g) => {
                if let Err(e) = groups.announce(g).await {
                    tracing::warn!(group = g, "VRRP announcement failed: {e}");
                }
            }
        }
    }
}

/// What [`drive`] needs besides the events.
pub struct Drive {
    /// The configuration (instances, sync groups and their notify scripts).
    pub config: Arc<VrrpConfig>,
    /// Where group operations go (a [`run_groups`] worker).
    pub ops: mpsc::UnboundedSender<GroupOp>,
    /// Runs notify scripts.
    pub commands: Arc<dyn CommandRunner>,
    /// The instances as they stand (their priority is `notify`'s last argument).
    pub views: watch::Receiver<Vec<InstanceView>>,
}

/// Reads the router's events until it ends: group operations to the worker, notify scripts
/// started (not awaited: a slow script never delays the next state). Returns the groups
/// still held when the events ended (none after a clean shutdown).
pub async fn drive(mut events: mpsc::Receiver<(usize, InstanceEvent)>, d: Drive) -> Vec<usize> {
    let map = GroupMap::of(&d.config);
    let mut holding = Holding::new(map);
    while let Some((idx, event)) = events.recv().await {
        if let Some(op) = holding.on_event(idx, event) {
            let _ = d.ops.send(op);
        }
        if let InstanceEvent::Notify(state) = event {
            notify(&d, idx, state);
        }
    }
    holding.held_groups()
}

fn notify(d: &Drive, idx: usize, state: VrrpState) {
    let Some(spec) = d.config.instances.get(idx) else {
        return;
    };
    let priority = d
        .views
        .borrow()
        .get(idx)
        .map_or(spec.priority, |v| v.priority);
    let mut commands = notify_commands(
        &spec.notify,
        NotifyScope::Instance,
        &spec.name,
        state,
        priority,
    );
    if let Some(g) = sync_group_led_by(&d.config, spec) {
        commands.extend(notify_commands(
            &g.notify,
            NotifyScope::Group,
            &g.name,
            state,
            priority,
        ));
    }
    tracing::info!(instance = %spec.name, "VRRP instance entered {}", state.name());
    for argv in commands {
        let runner = Arc::clone(&d.commands);
        tokio::spawn(async move {
            let line = argv.join(" ");
            if !runner.run(argv, NOTIFY_TIMEOUT).await {
                tracing::warn!(command = %line, "VRRP notify script failed");
            }
        });
    }
}

/// The sync group whose notify scripts run for this instance: the group's scripts run once,
/// when its first member changes state (the others follow it).
fn sync_group_led_by<'a>(
    config: &'a VrrpConfig,
    spec: &InstanceSpec,
) -> Option<&'a super::config::SyncGroupSpec> {
    config
        .sync_groups
        .iter()
        .find(|g| g.members.first() == Some(&spec.name))
}

/// Feeds tracking changes to the router: each item change becomes a
/// [`VrrpInput::Track`] for the instances it moves. Ends when `changes` closes.
pub async fn track(
    mut board: TrackBoard,
    mut changes: mpsc::Receiver<(TrackedItem, bool)>,
    inputs: mpsc::Sender<(usize, VrrpInput)>,
    published: watch::Sender<TrackBoard>,
) {
    while let Some((item, up)) = changes.recv().await {
        for (idx, t) in board.set(&item, up) {
            if inputs.send((idx, VrrpInput::Track(t))).await.is_err() {
                return;
            }
        }
        published.send_replace(board.clone());
    }
}

#[cfg(test)]
mod tests;
