//! Unit tests of each rule, then a small deterministic segment: routers exchanging adverts
//! through an in-memory bus on a made-up clock (no runtime, no sleeping).

use super::*;
use std::net::Ipv4Addr;

fn addr(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

fn cfg(name: &str, priority: u8, last: u8) -> InstanceConfig {
    InstanceConfig {
        name: name.to_string(),
        vrid: 51,
        version: Version::V3,
        priority,
        advert_int: Duration::from_secs(1),
        initial: InitialState::Backup,
        preempt: true,
        preempt_delay: Duration::ZERO,
        local_addr: addr(last),
        garp: GarpConfig::default(),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn advert(src: u8, priority: u8) -> VrrpInput {
    VrrpInput::Advert {
        src: addr(src),
        priority,
        interval: Duration::from_secs(1),
    }
}

#[test]
fn skew_and_master_down_interval_follow_the_rfcs() {
    let i = Instance::new(cfg("a", 100, 1));
    // v3: (256 − 100) × 1 s / 256 = 609.375 ms.
    assert_eq!(i.skew(), Duration::from_nanos(609_375_000));
    assert_eq!(
        i.master_down_interval(),
        Duration::from_nanos(3_609_375_000)
    );
    let mut c = cfg("a", 150, 1);
    c.version = Version::V2;
    c.advert_int = Duration::from_secs(3);
    let i = Instance::new(c);
    // v2: (256 − 150) / 256 s, whatever the interval; observed 3.45 s in the v2 capture at 1 s.
    assert_eq!(i.skew(), Duration::from_nanos(414_062_500));
    assert_eq!(
        i.master_down_interval(),
        Duration::from_nanos(9_414_062_500)
    );
}

#[test]
fn backup_becomes_master_when_master_down_runs_out() {
    let t0 = crate::clock::now();
    let mut i = Instance::new(cfg("a", 150, 1));
    let out = i.step(VrrpInput::Start, t0);
    assert_eq!(i.state(), VrrpState::Backup);
    let down = t0 + i.master_down_interval();
    assert_eq!(out.last(), Some(&VrrpAction::ArmTimer(down)));
    assert!(
        i.step(VrrpInput::Timer, down - ms(1))
            .iter()
            .all(|a| matches!(a, VrrpAction::ArmTimer(_)))
    );
    let out = i.step(VrrpInput::Timer, down);
    assert_eq!(
        &out[..4],
        &[
            VrrpAction::SendAdvert { priority: 150 },
            VrrpAction::HoldGroup,
            VrrpAction::Announce { repeat: 5 },
            VrrpAction::Notify(VrrpState::Master),
        ]
    );
    // The second GARP burst after garp_master_delay, adverts every advert_int.
    let out = i.step(VrrpInput::Timer, down + Duration::from_secs(1));
    assert!(out.contains(&VrrpAction::SendAdvert { priority: 150 }));
    let out = i.step(VrrpInput::Timer, down + Duration::from_secs(5));
    assert!(out.contains(&VrrpAction::Announce { repeat: 5 }));
}

#[test]
fn owner_and_state_master_start_as_master() {
    let t0 = crate::clock::now();
    let mut owner = Instance::new(cfg("a", 255, 1));
    owner.step(VrrpInput::Start, t0);
    assert_eq!(owner.state(), VrrpState::Master);
    let mut c = cfg("b", 100, 2);
    c.initial = InitialState::Master;
    let mut m = Instance::new(c);
    m.step(VrrpInput::Start, t0);
    assert_eq!(m.state(), VrrpState::Master);
}

#[test]
fn adverts_from_a_higher_or_equal_master_reset_the_timer() {
    let t0 = crate::clock::now();
    let mut i = Instance::new(cfg("a", 100, 1));
    i.step(VrrpInput::Start, t0);
    let t1 = t0 + Duration::from_secs(2);
    let out = i.step(advert(9, 150), t1);
    assert_eq!(
        out,
        vec![VrrpAction::ArmTimer(t1 + i.master_down_interval())]
    );
    assert_eq!(i.master(), Some((addr(9), 150)));
    assert_eq!(i.preempt_status(), PreemptStatus::MasterOutranks);
}

#[test]
fn v3_backup_learns_the_masters_interval() {
    let t0 = crate::clock::now();
    let mut i = Instance::new(cfg("a", 100, 1));
    i.step(VrrpInput::Start, t0);
    i.step(
        VrrpInput::Advert {
            src: addr(9),
            priority: 200,
            interval: ms(50),
        },
        t0,
    );
    assert_eq!(i.master_adver_int(), ms(50));
    // 3 × 50 ms + (156 × 50 ms) / 256.
    assert_eq!(
        i.master_down_interval(),
        ms(150) + Duration::from_nanos(30_468_750)
    );
}

#[test]
fn priority_zero_hands_over_after_skew_only() {
    let t0 = crate::clock::now();
    let mut i = Instance::new(cfg("a", 100, 1));
    i.step(VrrpInput::Start, t0);
    i.step(advert(9, 150), t0);
    let out = i.step(advert(9, 0), t0 + ms(10));
    assert_eq!(out, vec![VrrpAction::ArmTimer(t0 + ms(10) + i.skew())]);
}

#[test]
fn lower_priority_master_is_preempted_unless_nopreempt() {
    let t0 = crate::clock::now();
    let mut i = Instance::new(cfg("a", 150, 1));
    i.step(VrrpInput::Start, t0);
    let armed = i.deadline();
    // The lower advert is discarded: the timer is not reset.
    i.step(advert(9, 100), t0 + ms(500));
    assert_eq!(i.deadline(), armed);
    assert_eq!(i.preempt_status(), PreemptStatus::Preempting);

    let mut c = cfg("a", 150, 1);
    c.preempt = false;
    let mut i = Instance::new(c);
    i.step(VrrpInput::Start, t0);
    i.step(advert(9, 100), t0 + ms(500));
    assert_eq!(i.deadline(), Some(t0 + ms(500) + i.master_down_interval()));
    assert_eq!(i.preempt_status(), PreemptStatus::NoPreempt);
}

#[test]
fn preempt_delay_lets_a_lower_master_stand_for_that_long() {
    let t0 = crate::clock::now();
    let mut c = cfg("a", 150, 1);
    c.preempt_delay = Duration::from_secs(10);
    let mut i = Instance::new(c);
    i.step(VrrpInput::Start, t0);
    i.step(advert(9, 100), t0);
    assert_eq!(
        i.preempt_status(),
        PreemptStatus::DelayedUntil(t0 + Duration::from_secs(10))
    );
    i.step(advert(9, 100), t0 + Duration::from_secs(9));
    assert_eq!(
        i.deadline(),
        Some(t0 + Duration::from_secs(9) + i.master_down_interval())
    );
    // After the delay, lower adverts are discarded.
    let before = i.deadline();
    i.step(advert(9, 100), t0 + Duration::from_secs(11));
    assert_eq!(i.deadline(), before);
}

#[test]
fn master_yields_to_higher_priority_and_to_equal_priority_from_higher_address() {
    let t0 = crate::clock::now();
    let mut c = cfg("a", 100, 5);
    c.initial = InitialState::Master;
    let mut i = Instance::new(c.clone());
    i.step(VrrpInput::Start, t0);
    let out = i.step(advert(9, 101), t0);
    assert!(out.contains(&VrrpAction::ReleaseGroup));
    assert_eq!(i.state(), VrrpState::Backup);

    let mut i = Instance::new(c.clone());
    i.step(VrrpInput::Start, t0);
    i.step(advert(4, 100), t0);
    assert_eq!(
        i.state(),
        VrrpState::Master,
        "equal priority, lower address"
    );
    i.step(advert(6, 100), t0);
    assert_eq!(
        i.state(),
        VrrpState::Backup,
        "equal priority, higher address"
    );
}

#[test]
fn master_answers_a_competing_lower_master_and_announces_again() {
    let t0 = crate::clock::now();
    let mut c = cfg("a", 200, 5);
    c.initial = InitialState::Master;
    let mut i = Instance::new(c);
    i.step(VrrpInput::Start, t0);
    let out = i.step(advert(9, 100), t0 + ms(300));
    assert_eq!(
        &out[..2],
        &[
            VrrpAction::SendAdvert { priority: 200 },
            VrrpAction::Announce { repeat: 5 }
        ]
    );
    assert_eq!(i.state(), VrrpState::Master);
}

#[test]
fn shutdown_and_fault_send_priority_zero_from_master() {
    let t0 = crate::clock::now();
    let mut c = cfg("a", 200, 5);
    c.initial = InitialState::Master;
    let mut i = Instance::new(c.clone());
    i.step(VrrpInput::Start, t0);
    let out = i.step(VrrpInput::Shutdown, t0);
    assert_eq!(
        out,
        vec![
            VrrpAction::SendAdvert { priority: 0 },
            VrrpAction::ReleaseGroup,
            VrrpAction::Notify(VrrpState::Init)
        ]
    );
    let mut i = Instance::new(c);
    i.step(VrrpInput::Start, t0);
    let out = i.step(VrrpInput::Track(Tracked::Fault), t0);
    assert_eq!(
        out,
        vec![
            VrrpAction::SendAdvert { priority: 0 },
            VrrpAction::ReleaseGroup,
            VrrpAction::Notify(VrrpState::Fault)
        ]
    );
    let out = i.step(VrrpInput::Track(Tracked::Priority(200)), t0 + ms(1));
    assert_eq!(i.state(), VrrpState::Backup);
    assert!(out.contains(&VrrpAction::Notify(VrrpState::Backup)));
}

#[test]
fn takeover_and_standby_work_through_priority() {
    let t0 = crate::clock::now();
    let mut c = cfg("a", 100, 1);
    c.preempt = false;
    let mut i = Instance::new(c);
    i.step(VrrpInput::Start, t0);
    i.step(advert(9, 150), t0);
    let out = i.step(VrrpInput::Takeover, t0 + ms(1));
    assert_eq!(i.state(), VrrpState::Master);
    assert_eq!(out[0], VrrpAction::SendAdvert { priority: 254 });
    let out = i.step(VrrpInput::Standby, t0 + ms(2));
    assert_eq!(i.state(), VrrpState::Backup);
    assert_eq!(out[0], VrrpAction::SendAdvert { priority: 0 });
    assert_eq!(i.priority(), 1);
    i.step(VrrpInput::Auto, t0 + ms(3));
    assert_eq!(i.priority(), 100);
}

#[test]
fn tracked_items_move_priority_within_bounds() {
    let up = |weight| Track { weight, up: true };
    let down = |weight| Track { weight, up: false };
    assert_eq!(effective_priority(100, [down(-30)]), Tracked::Priority(70));
    assert_eq!(effective_priority(100, [up(-30)]), Tracked::Priority(100));
    assert_eq!(
        effective_priority(100, [up(20), down(20)]),
        Tracked::Priority(120)
    );
    assert_eq!(effective_priority(240, [up(50)]), Tracked::Priority(254));
    assert_eq!(effective_priority(10, [down(-50)]), Tracked::Priority(1));
    assert_eq!(effective_priority(100, [down(0)]), Tracked::Fault);
    assert_eq!(effective_priority(255, [down(-50)]), Tracked::Priority(255));
}

#[test]
fn script_tracker_needs_fall_failures_and_rise_successes() {
    let c = ScriptConfig {
        name: "chk".into(),
        command: "/bin/true".into(),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        weight: -30,
        fall: 3,
        rise: 2,
        init_fail: false,
    };
    let mut t = ScriptTracker::new(&c);
    assert!(t.up);
    assert!(!t.record(&c, false));
    assert!(!t.record(&c, false));
    assert!(!t.record(&c, true), "a success resets the failure run");
    assert!(!t.record(&c, false));
    assert!(!t.record(&c, false));
    assert!(t.record(&c, false));
    assert!(!t.up);
    assert!(!t.record(&c, true));
    assert!(t.record(&c, true));
    assert!(t.up);
}

// ---- the in-memory segment ----

/// One router on the simulated segment.
struct SimRouter {
    router: VrrpRouter,
    addr: IpAddr,
    alive: bool,
    holding: Vec<bool>,
}

/// Routers whose instance `i` all share one VRID, adverts delivered after 1 ms.
struct Segment {
    now: Instant,
    routers: Vec<SimRouter>,
    in_flight: Vec<(Instant, usize, usize, u8, Duration)>,
    /// (when, router, instance) of every HoldGroup.
    holds: Vec<(Instant, usize, usize)>,
    /// Whether two routers ever held one instance's group at the same instant.
    overlap: bool,
    /// Adverts are dropped on the way (a firewall dropping protocol 112).
    cut: bool,
}

const LATENCY: Duration = Duration::from_millis(1);

impl Segment {
    fn new(routers: Vec<(Vec<InstanceConfig>, Vec<Vec<usize>>)>) -> Segment {
        let t0 = crate::clock::now();
        let routers = routers
            .into_iter()
            .map(|(cfgs, groups)| {
                let addr = cfgs[0].local_addr;
                let n = cfgs.len();
                SimRouter {
                    router: VrrpRouter::new(cfgs.into_iter().map(Instance::new).collect(), groups),
                    addr,
                    alive: false,
                    holding: vec![false; n],
                }
            })
            .collect();
        Segment {
            now: t0,
            routers,
            in_flight: Vec::new(),
            holds: Vec::new(),
            overlap: false,
            cut: false,
        }
    }

    fn apply(&mut self, r: usize, actions: Vec<(usize, VrrpAction)>) {
        for (inst, a) in actions {
            match a {
                VrrpAction::SendAdvert { priority } => {
                    let int = self.routers[r].router.instances[inst].config().advert_int;
                    self.in_flight
                        .push((self.now + LATENCY, r, inst, priority, int));
                }
                VrrpAction::HoldGroup => {
                    self.routers[r].holding[inst] = true;
                    self.holds.push((self.now, r, inst));
                    let holders = self.routers.iter().filter(|x| x.holding[inst]).count();
                    if holders > 1 {
                        self.overlap = true;
                    }
                }
                VrrpAction::ReleaseGroup => self.routers[r].holding[inst] = false,
                _ => {}
            }
        }
    }

    fn input(&mut self, r: usize, inst: usize, input: VrrpInput) {
        if input == VrrpInput::Start {
            self.routers[r].alive = true;
        }
        let out = self.routers[r].router.step(inst, input, self.now);
        self.apply(r, out);
    }

    fn start(&mut self, r: usize) {
        for i in 0..self.routers[r].router.instances.len() {
            self.input(r, i, VrrpInput::Start);
        }
    }

    /// The router dies silently: no priority 0, its VIPs vanish with it.
    fn kill(&mut self, r: usize) {
        self.routers[r].alive = false;
        self.routers[r].holding.iter_mut().for_each(|h| *h = false);
    }

    /// Runs the segment until `until` (bounded by a step count).
    fn run_until(&mut self, until: Instant) {
        for _ in 0..1_000_000 {
            let timers = self
                .routers
                .iter()
                .filter(|r| r.alive)
                .filter_map(|r| r.router.deadline());
            let deliveries = self.in_flight.iter().map(|f| f.0);
            let Some(next) = timers.chain(deliveries).min() else {
                break;
            };
            if next > until {
                break;
            }
            self.now = next;
            let due: Vec<_> = self
                .in_flight
                .iter()
                .copied()
                .filter(|f| f.0 <= next)
                .collect();
            self.in_flight.retain(|f| f.0 > next);
            let cut = self.cut;
            for (_, from, inst, priority, interval) in due.into_iter().filter(|_| !cut) {
                let src = self.routers[from].addr;
                for to in 0..self.routers.len() {
                    if to != from && self.routers[to].alive {
                        let input = VrrpInput::Advert {
                            src,
                            priority,
                            interval,
                        };
                        self.input(to, inst, input);
                    }
                }
            }
            for r in 0..self.routers.len() {
                if self.routers[r].alive {
                    let out = self.routers[r].router.on_timers(next);
                    self.apply(r, out);
                }
            }
        }
        self.now = until;
    }

    fn holder(&self, inst: usize) -> Vec<usize> {
        (0..self.routers.len())
            .filter(|&r| self.routers[r].holding[inst])
            .collect()
    }

    /// When router `r` last took instance `inst`'s group, if ever.
    fn took(&self, r: usize, inst: usize) -> Option<Instant> {
        self.holds
            .iter()
            .rev()
            .find(|h| h.1 == r && h.2 == inst)
            .map(|h| h.0)
    }
}

fn pair(a: InstanceConfig, b: InstanceConfig) -> Segment {
    Segment::new(vec![(vec![a], vec![]), (vec![b], vec![])])
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn sim_election_higher_priority_wins_whoever_starts_first() {
    for first in [0, 1] {
        let mut s = pair(cfg("a", 150, 1), cfg("b", 100, 2));
        let t0 = s.now;
        s.start(first);
        s.run_until(t0 + secs(10));
        s.start(1 - first);
        s.run_until(t0 + secs(30));
        assert_eq!(s.holder(0), vec![0], "started first: {first}");
    }
    // Started together: a takes over after its own Master_Down, b never holds.
    let mut s = pair(cfg("a", 150, 1), cfg("b", 100, 2));
    let t0 = s.now;
    s.start(0);
    s.start(1);
    s.run_until(t0 + secs(30));
    assert_eq!(s.holder(0), vec![0]);
    assert_eq!(s.took(1, 0), None);
    assert!(!s.overlap);
    let a_down = Instance::new(cfg("a", 150, 1)).master_down_interval();
    assert_eq!(s.took(0, 0), Some(t0 + a_down));
}

#[test]
fn sim_master_death_backup_takes_over_within_master_down_interval() {
    let mut s = pair(cfg("a", 150, 1), cfg("b", 100, 2));
    let t0 = s.now;
    s.start(0);
    s.start(1);
    s.run_until(t0 + secs(10) + ms(500));
    let died = s.now;
    s.kill(0);
    s.run_until(t0 + secs(20));
    let took = s.took(1, 0).expect("b took over");
    let mdi = Instance::new(cfg("b", 100, 2)).master_down_interval();
    assert!(took > died);
    assert!(took - died <= mdi, "took {:?}", took - died);
    assert_eq!(s.holder(0), vec![1]);
}

#[test]
fn sim_priority_zero_hands_over_after_skew() {
    let mut s = pair(cfg("a", 150, 1), cfg("b", 100, 2));
    let t0 = s.now;
    s.start(0);
    s.start(1);
    s.run_until(t0 + secs(10));
    let stop = s.now;
    s.input(0, 0, VrrpInput::Shutdown);
    s.routers[0].alive = false;
    s.run_until(t0 + secs(20));
    let took = s.took(1, 0).unwrap();
    let skew = Instance::new(cfg("b", 100, 2)).skew();
    assert_eq!(took - stop, LATENCY + skew);
    assert!(!s.overlap);
}

#[test]
fn sim_preempt_delay_and_nopreempt() {
    // a (150) restarts while b (100) is master: with preempt_delay 10 s it waits.
    let mut a = cfg("a", 150, 1);
    a.preempt_delay = secs(10);
    let mut s = pair(a, cfg("b", 100, 2));
    let t0 = s.now;
    s.start(1);
    s.run_until(t0 + secs(10));
    assert_eq!(s.holder(0), vec![1]);
    let start = s.now;
    s.start(0);
    s.run_until(start + secs(10));
    assert_eq!(s.holder(0), vec![1], "no preemption within preempt_delay");
    s.run_until(start + secs(20));
    assert_eq!(s.holder(0), vec![0]);
    let took = s.took(0, 0).unwrap() - start;
    let mdi = Instance::new(cfg("a", 150, 1)).master_down_interval();
    assert!(took > secs(10) && took <= secs(10) + mdi, "took {took:?}");

    // nopreempt: b stays master for good.
    let mut a = cfg("a", 150, 1);
    a.preempt = false;
    let mut s = pair(a, cfg("b", 100, 2));
    let t0 = s.now;
    s.start(1);
    s.run_until(t0 + secs(10));
    s.start(0);
    s.run_until(t0 + secs(60));
    assert_eq!(s.holder(0), vec![1]);
    assert_eq!(s.took(0, 0), None);
}

#[test]
fn sim_script_failure_moves_master() {
    let mut s = pair(cfg("a", 150, 1), cfg("b", 100, 2));
    let t0 = s.now;
    s.start(0);
    s.start(1);
    s.run_until(t0 + secs(10));
    assert_eq!(s.holder(0), vec![0]);
    // a's vrrp_script (weight -60) fails: 150 − 60 = 90 < 100.
    let p = effective_priority(
        150,
        [Track {
            weight: -60,
            up: false,
        }],
    );
    s.input(0, 0, VrrpInput::Track(p));
    let failed = s.now;
    s.run_until(t0 + secs(20));
    assert_eq!(s.holder(0), vec![1]);
    let mdi = Instance::new(cfg("b", 100, 2)).master_down_interval();
    assert!(s.took(1, 0).unwrap() - failed <= mdi + LATENCY);
    // The script recovers: a preempts back.
    s.input(0, 0, VrrpInput::Track(effective_priority(150, [])));
    s.run_until(t0 + secs(30));
    assert_eq!(s.holder(0), vec![0]);
}

#[test]
fn sim_sync_group_instances_move_together() {
    let two = |prio, last| {
        let mut v1 = cfg("VI_1", prio, last);
        v1.vrid = 51;
        let mut v2 = cfg("VI_2", prio, last);
        v2.vrid = 52;
        (vec![v1, v2], vec![vec![0, 1]])
    };
    let mut s = Segment::new(vec![two(150, 1), two(100, 2)]);
    let t0 = s.now;
    s.start(0);
    s.start(1);
    s.run_until(t0 + secs(10));
    assert_eq!((s.holder(0), s.holder(1)), (vec![0], vec![0]));
    // VI_2's tracked interface goes down on a: the whole group faults and moves to b.
    s.input(0, 1, VrrpInput::Track(Tracked::Fault));
    assert_eq!(s.routers[0].router.instances[0].state(), VrrpState::Fault);
    s.run_until(t0 + secs(20));
    assert_eq!((s.holder(0), s.holder(1)), (vec![1], vec![1]));
    // Back up: a preempts both.
    s.input(0, 1, VrrpInput::Track(Tracked::Priority(150)));
    s.input(0, 0, VrrpInput::Track(Tracked::Priority(150)));
    s.run_until(t0 + secs(40));
    assert_eq!((s.holder(0), s.holder(1)), (vec![0], vec![0]));
}

// ---- heartbeat media beside VRRP (seed 002's experiment) ----

fn pair_on_segment() -> Segment {
    let mut seg = Segment::new(vec![
        (vec![cfg("v", 200, 1)], vec![]),
        (vec![cfg("v", 100, 2)], vec![]),
    ]);
    seg.start(0);
    seg.start(1);
    let t = seg.now + Duration::from_secs(10);
    seg.run_until(t);
    assert_eq!(seg.holder(0), vec![0]);
    seg
}

#[test]
fn vrrp_cut_without_another_path_makes_two_masters() {
    let mut seg = pair_on_segment();
    seg.cut = true;
    let t = seg.now + Duration::from_secs(10);
    seg.run_until(t);
    assert_eq!(seg.holder(0), vec![0, 1], "keepalived's dual master");
    assert!(seg.overlap);
}

#[test]
fn vrrp_cut_with_the_peer_heard_on_heartbeat_media_stays_single_master() {
    let mut seg = pair_on_segment();
    seg.input(0, 0, VrrpInput::PeerAlive(true));
    seg.input(1, 0, VrrpInput::PeerAlive(true));
    seg.cut = true;
    let t = seg.now + Duration::from_secs(30);
    seg.run_until(t);
    assert_eq!(seg.holder(0), vec![0]);
    assert!(!seg.overlap);
    let backup = &seg.routers[1].router.instances[0];
    assert_eq!(backup.state(), VrrpState::Backup);
    assert_eq!(backup.preempt_status(), PreemptStatus::PeerAliveElsewhere);
    // The master dies: silent on VRRP already, now on the heartbeat media too.
    seg.kill(0);
    let dead = seg.now;
    seg.input(1, 0, VrrpInput::PeerAlive(false));
    let t = seg.now + Duration::from_secs(1);
    seg.run_until(t);
    assert_eq!(seg.holder(0), vec![1]);
    assert_eq!(
        seg.took(1, 0),
        Some(dead),
        "at once: Master_Down ran out long ago"
    );
}

#[test]
fn priority_zero_hands_over_even_with_the_peer_alive() {
    let mut seg = pair_on_segment();
    seg.input(1, 0, VrrpInput::PeerAlive(true));
    let at = seg.now;
    seg.input(0, 0, VrrpInput::Standby);
    let t = seg.now + Duration::from_secs(5);
    seg.run_until(t);
    assert_eq!(seg.holder(0), vec![1]);
    let took = seg.took(1, 0).unwrap() - at;
    // Skew_Time of priority 100 at 1 s: 609 ms (+ 1 ms latency).
    assert!(took < ms(700), "{took:?}");
    assert!(!seg.overlap);
}
