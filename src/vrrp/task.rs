//! The task around a router's instances: sockets, timer and state machines.
//!
//! [`run_router`] owns a [`VrrpRouter`] (instances and their sync groups) and one
//! [`VrrpSocket`] per instance. It feeds each instance the adverts that pass its [`Expect`]
//! (drops are counted), its timer, and the operator's and tracking's inputs; sends the adverts
//! the instances ask for; and hands every other action to the caller as an
//! `(instance index, InstanceEvent)`: holding or releasing the group, announcing the VIPs,
//! running notify scripts. The membership backend consumes those events; this task never
//! touches addresses or scripts itself. [`run_instance`] is the one-instance form.
//!
//! Each socket has a small reader task feeding one channel, so the loop waits on three
//! things only: the earliest timer, the inputs, the received packets. The task ends when
//! every instance has been shut down ([`VrrpInput::Shutdown`], priority 0 sent by a master) or
//! the input channel closes (a shutdown of every instance); the readers end with it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::packet::{Advert, DropCounters, DropReason, Expect, Version, encode};
use super::socket::{Received, SocketError, VrrpSocket};
use super::state::{
    Instance, Operator, PreemptStatus, Tracked, VrrpAction, VrrpInput, VrrpRouter, VrrpState,
};

/// What an instance asks of the world besides adverts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceEvent {
    /// Start the resource group (left to right); became master.
    HoldGroup,
    /// Stop the resource group (right to left); left master.
    ReleaseGroup,
    /// Announce the VIPs `repeat` times (net::arp / net::ndisc).
    Announce {
        /// Announcements per VIP.
        repeat: u32,
    },
    /// Entered this state: run its notify scripts.
    Notify(VrrpState),
}

/// Where an instance's adverts go and what they carry besides the priority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertPlan {
    /// The multicast group, or the unicast peers (one copy each).
    pub destinations: Vec<IpAddr>,
    /// The virtual addresses advertised.
    pub addrs: Vec<IpAddr>,
    /// v2 auth type and data.
    pub auth: (u8, [u8; 8]),
    /// Receive rules.
    pub expect: Expect,
}

/// Counters of one running instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstanceCounters {
    /// Adverts sent.
    pub sent: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// Adverts accepted.
    pub received: u64,
    /// Packets dropped, by reason.
    pub dropped: DropCounters,
}

/// One instance as it stands, for `hactl status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    /// Instance name.
    pub name: String,
    /// State.
    pub state: VrrpState,
    /// Configured priority.
    pub base_priority: u8,
    /// Priority advertised now (tracking and the operator's override applied).
    pub priority: u8,
    /// The tracking outcome.
    pub tracked: Tracked,
    /// The operator's override.
    pub operator: Operator,
    /// The master: ourselves while MASTER, else the last one heard.
    pub master: Option<(IpAddr, u8)>,
    /// Why a lower master is or is not displaced.
    pub preempt: PreemptStatus,
    /// The master's advertisement interval (learned in v3).
    pub master_adver_int: Duration,
    /// Counters.
    pub counters: InstanceCounters,
}

impl InstanceView {
    /// The view of one instance.
    pub fn of(i: &Instance, counters: InstanceCounters) -> InstanceView {
        let master = match i.state() {
            VrrpState::Master => Some((i.config().local_addr, i.priority())),
            VrrpState::Backup => i.master(),
            _ => None,
        };
        InstanceView {
            name: i.config().name.clone(),
            state: i.state(),
            base_priority: i.config().priority,
            priority: i.priority(),
            tracked: i.tracked(),
            operator: i.operator(),
            master,
            preempt: i.preempt_status(),
            master_adver_int: i.master_adver_int(),
            counters,
        }
    }
}

/// Runs one instance until shutdown; returns its counters.
pub async fn run_instance(
    instance: Instance,
    socket: VrrpSocket,
    plan: AdvertPlan,
    mut inputs: mpsc::Receiver<VrrpInput>,
    events: mpsc::Sender<InstanceEvent>,
) -> Result<InstanceCounters, SocketError> {
    let (in_tx, in_rx) = mpsc::channel(8);
    let (ev_tx, mut ev_rx) = mpsc::channel(64);
    let forward_in = async move {
        // Ends when the caller closes its sender or the router stops listening.
        loop {
            tokio::select! {
                i = inputs.recv() => match i {
                    Some(i) if in_tx.send((0, i)).await.is_ok() => {}
                    _ => break,
                },
                _ = in_tx.closed() => break,
            }
        }
    };
    let forward_ev = async move {
        while let Some((_, e)) = ev_rx.recv().await {
            let _ = events.send(e).await;
        }
    };
    let router = VrrpRouter::new(vec![instance], Vec::new());
    let run = run_router(router, vec![socket], vec![plan], in_rx, ev_tx);
    let (counters, (), ()) = tokio::join!(run, forward_in, forward_ev);
    Ok(counters?.pop().unwrap_or_default())
}

/// Runs a router's instances until each is shut down; returns their counters, by index.
/// `sockets[i]` and `plans[i]` belong to `router.instances[i]`.
pub async fn run_router(
    router: VrrpRouter,
    sockets: Vec<VrrpSocket>,
    plans: Vec<AdvertPlan>,
    inputs: mpsc::Receiver<(usize, VrrpInput)>,
    events: mpsc::Sender<(usize, InstanceEvent)>,
) -> Result<Vec<InstanceCounters>, SocketError> {
    let (views, _) = watch::channel(Vec::new());
    run_router_observed(router, sockets, plans, inputs, events, views).await
}

/// [`run_router`], publishing every instance's [`InstanceView`] after each turn.
pub async fn run_router_observed(
    mut router: VrrpRouter,
    sockets: Vec<VrrpSocket>,
    plans: Vec<AdvertPlan>,
    mut inputs: mpsc::Receiver<(usize, VrrpInput)>,
    events: mpsc::Sender<(usize, InstanceEvent)>,
    views: watch::Sender<Vec<InstanceView>>,
) -> Result<Vec<InstanceCounters>, SocketError> {
    let n = router.instances.len();
    let mut counters = vec![InstanceCounters::default(); n];
    let sockets: Vec<Arc<VrrpSocket>> = sockets.into_iter().map(Arc::new).collect();
    let (rx_tx, mut rx_rx) =
        mpsc::channel::<(usize, Result<Result<Received, DropReason>, SocketError>)>(64);
    let mut readers = JoinSet::new();
    for (idx, sock) in sockets.iter().enumerate() {
        let sock = Arc::clone(sock);
        let tx = rx_tx.clone();
        readers.spawn(async move {
            loop {
                let got = sock.recv().await;
                let failed = got.is_err();
                if tx.send((idx, got)).await.is_err() || failed {
                    break;
                }
            }
        });
    }
    drop(rx_tx);
    let now = crate::clock::now();
    let mut pending = Vec::new();
    for idx in 0..n {
        pending.extend(router.step(idx, VrrpInput::Start, now));
    }
    let mut stopped = vec![false; n];
    // Bounded by the inputs: every turn waits on a timer, the inputs or a packet.
    loop {
        for (idx, a) in pending.drain(..) {
            let event = match a {
                VrrpAction::SendAdvert { priority } => {
                    if let (Some(sock), Some(plan), Some(c)) =
                        (sockets.get(idx), plans.get(idx), counters.get_mut(idx))
                    {
                        send(&router.instances[idx], sock, plan, priority, c);
                    }
                    continue;
                }
                VrrpAction::HoldGroup => InstanceEvent::HoldGroup,
                VrrpAction::ReleaseGroup => InstanceEvent::ReleaseGroup,
                VrrpAction::Announce { repeat } => InstanceEvent::Announce { repeat },
                VrrpAction::Notify(s) => InstanceEvent::Notify(s),
                VrrpAction::ArmTimer(_) => continue,
            };
            // A closed receiver means nobody acts on events; adverts go on regardless.
            let _ = events.send((idx, event)).await;
        }
        views.send_if_modified(|v| {
            let now: Vec<InstanceView> = router
                .instances
                .iter()
                .zip(&counters)
                .map(|(i, c)| InstanceView::of(i, *c))
                .collect();
            let changed = *v != now;
            *v = now;
            changed
        });
        if stopped.iter().all(|s| *s) {
            readers.abort_all();
            return Ok(counters);
        }
        let deadline = router.deadline();
        tokio::select! {
            _ = sleep_until(deadline) => {
                pending = router.on_timers(crate::clock::now());
            }
            input = inputs.recv() => {
                let now = crate::clock::now();
                match input {
                    Some((idx, input)) if idx < n => {
                        stopped[idx] |= input == VrrpInput::Shutdown;
                        pending = router.step(idx, input, now);
                    }
                    Some(_) => {}
                    None => {
                        for (idx, s) in stopped.iter_mut().enumerate() {
                            *s = true;
                            pending.extend(router.step(idx, VrrpInput::Shutdown, now));
                        }
                    }
                }
            }
            got = rx_rx.recv() => {
                let Some((idx, got)) = got else {
                    // Unreachable while looping: readers end only after passing on a socket
                    // error (returned below) or when aborted on return.
                    return Ok(counters);
                };
                let (Some(c), Some(plan)) = (counters.get_mut(idx), plans.get(idx)) else {
                    continue;
                };
                match got {
                    Err(e) => {
                        readers.abort_all();
                        return Err(e);
                    }
                    Ok(Err(reason)) => c.dropped.count(&reason),
                    Ok(Ok(r)) => match plan.expect.accept(&r.payload, &r.env) {
                        Err(reason) => c.dropped.count(&reason),
                        Ok(advert) => {
                            c.received += 1;
                            let input = VrrpInput::Advert {
                                src: r.env.src,
                                priority: advert.priority,
                                interval: Duration::from_millis(u64::from(advert.interval_cs) * 10),
                            };
                            pending = router.step(idx, input, crate::clock::now());
                        }
                    },
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn send(
    instance: &Instance,
    socket: &VrrpSocket,
    plan: &AdvertPlan,
    priority: u8,
    counters: &mut InstanceCounters,
) {
    let cfg = instance.config();
    let v2 = cfg.version == Version::V2;
    let advert = Advert {
        version: cfg.version,
        vrid: cfg.vrid,
        priority,
        interval_cs: u16::try_from(cfg.advert_int.as_millis() / 10).unwrap_or(u16::MAX),
        addrs: plan.addrs.clone(),
        auth_type: if v2 { plan.auth.0 } else { 0 },
        auth_data: if v2 { plan.auth.1 } else { [0; 8] },
    };
    for dst in &plan.destinations {
        match encode(&advert, socket.src(), *dst) {
            Ok(bytes) => match socket.send(&bytes, *dst) {
                Ok(()) => counters.sent += 1,
                Err(e) => {
                    counters.send_errors += 1;
                    tracing::warn!(instance = %cfg.name, error = %e, "VRRP advert not sent");
                }
            },
            Err(e) => {
                counters.send_errors += 1;
                tracing::warn!(instance = %cfg.name, error = %e, "VRRP advert cannot be encoded");
            }
        }
    }
}
