//! The backend's pure decisions, and its tasks on a paused clock with fake edges.

use std::sync::Mutex;

use super::*;

/// An instance on `iface` with one VIP 192.0.2.`vrid`.
fn instance(name: &str, iface: &str, vrid: u8, priority: u8) -> InstanceSpec {
    use crate::vrrp::packet::{Auth, Version};
    use crate::vrrp::state::{GarpConfig, InitialState};
    InstanceSpec {
        name: name.into(),
        origin: Default::default(),
        interface: iface.into(),
        vrid,
        version: Version::V3,
        priority,
        advert_int: Duration::from_secs(1),
        initial: InitialState::Backup,
        preempt: true,
        preempt_delay: Duration::ZERO,
        auth: Auth::None,
        vips: vec![super::super::config::VipSpec {
            addr: std::net::IpAddr::from([192, 0, 2, vrid]),
            prefix: 32,
            dev: None,
            label: None,
            scope: None,
        }],
        excluded_vips: Vec::new(),
        mcast_group: InstanceSpec::default_group(false),
        src_ip: None,
        unicast_peers: Vec::new(),
        track_interfaces: Vec::new(),
        track_scripts: Vec::new(),
        notify: NotifySpec::default(),
        garp: GarpConfig::default(),
    }
}

fn track(name: &str, weight: i32) -> super::super::config::TrackSpec {
    super::super::config::TrackSpec {
        name: name.into(),
        weight,
    }
}

/// What keepalived.conf would give for: script `chk` (weight −20, fall 2, rise 1); A on eth0
/// tracking chk; sync group G of B (eth0, tracking interface eth1) and C (eth1, with
/// `notify_master "/usr/bin/up now"` and `notify /usr/bin/any`), G with `notify /usr/bin/g`.
fn two_and_sync() -> VrrpConfig {
    let mut a = instance("A", "eth0", 10, 100);
    a.track_scripts = vec![track("chk", -20)];
    let mut b = instance("B", "eth0", 11, 100);
    b.track_interfaces = vec![track("eth1", 0)];
    let mut c = instance("C", "eth1", 12, 150);
    c.notify.master = Some("\"/usr/bin/up\" now".into());
    c.notify.any = Some("/usr/bin/any".into());
    VrrpConfig {
        router_id: None,
        instances: vec![a, b, c],
        sync_groups: vec![super::super::config::SyncGroupSpec {
            name: "G".into(),
            members: vec!["B".into(), "C".into()],
            notify: NotifySpec {
                any: Some("/usr/bin/g".into()),
                ..NotifySpec::default()
            },
        }],
        scripts: vec![ScriptConfig {
            name: "chk".into(),
            command: "/bin/true".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            weight: -20,
            fall: 2,
            rise: 1,
            init_fail: false,
        }],
        script_security: true,
    }
}

#[test]
fn a_sync_group_is_one_group_others_one_each() {
    let map = GroupMap::new(4, &[vec![1, 3]]);
    assert_eq!(map.of_instance, vec![0, 1, 2, 1]);
    assert_eq!(map.members, vec![vec![0], vec![1, 3], vec![2]]);
    let map = GroupMap::of(&two_and_sync());
    assert_eq!(map.members, vec![vec![0], vec![1, 2]]);
}

#[test]
fn a_group_starts_on_the_first_master_and_stops_when_the_last_leaves() {
    let mut h = Holding::new(GroupMap::new(3, &[vec![1, 2]]));
    assert_eq!(
        h.on_event(0, InstanceEvent::Announce { repeat: 5 }),
        None,
        "nothing to announce while not held"
    );
    assert_eq!(
        h.on_event(0, InstanceEvent::HoldGroup),
        Some(GroupOp::Start(0))
    );
    assert_eq!(
        h.on_event(0, InstanceEvent::Announce { repeat: 5 }),
        Some(GroupOp::Announce(0))
    );
    assert_eq!(
        h.on_event(1, InstanceEvent::HoldGroup),
        Some(GroupOp::Start(1))
    );
    assert_eq!(
        h.on_event(2, InstanceEvent::HoldGroup),
        None,
        "already held"
    );
    assert_eq!(h.on_event(1, InstanceEvent::ReleaseGroup), None);
    assert_eq!(h.held_groups(), vec![0, 1]);
    assert_eq!(
        h.on_event(2, InstanceEvent::ReleaseGroup),
        Some(GroupOp::Stop(1))
    );
    assert_eq!(
        h.on_event(0, InstanceEvent::Notify(VrrpState::Backup)),
        None
    );
    assert_eq!(
        h.on_event(0, InstanceEvent::ReleaseGroup),
        Some(GroupOp::Stop(0))
    );
    assert!(h.held_groups().is_empty());
    assert_eq!(
        h.on_event(9, InstanceEvent::HoldGroup),
        None,
        "no such instance"
    );
}

#[test]
fn tracking_moves_priority_by_weight_and_faults_on_the_primary_interface() {
    let cfg = two_and_sync();
    let mut board = TrackBoard::new(&cfg);
    assert_eq!(board.tracked(0), Tracked::Priority(100));
    let chk = TrackedItem::Script("chk".into());
    assert_eq!(board.set(&chk, false), vec![(0, Tracked::Priority(80))]);
    assert_eq!(board.set(&chk, false), vec![], "no change, no update");
    assert_eq!(board.down_items(0), vec!["script chk down (weight -20)"]);
    // eth1 is B's tracked interface (weight 0) and C's own: both FAULT.
    let eth1 = TrackedItem::Interface("eth1".into());
    assert_eq!(
        board.set(&eth1, false),
        vec![(1, Tracked::Fault), (2, Tracked::Fault)]
    );
    assert_eq!(
        board.set(&eth1, true),
        vec![(1, Tracked::Priority(100)), (2, Tracked::Priority(150))]
    );
    assert_eq!(
        board.set(&TrackedItem::Script("nope".into()), false),
        vec![]
    );
}

#[test]
fn notify_runs_the_state_script_then_notify_with_keepalived_arguments() {
    let cfg = two_and_sync();
    let c = &cfg.instances[2];
    let argv = notify_commands(
        &c.notify,
        NotifyScope::Instance,
        &c.name,
        VrrpState::Master,
        150,
    );
    assert_eq!(
        argv,
        vec![
            vec!["/usr/bin/up".to_string(), "now".into()],
            vec![
                "/usr/bin/any".to_string(),
                "INSTANCE".into(),
                "C".into(),
                "MASTER".into(),
                "150".into()
            ],
        ]
    );
    let stop = notify_commands(&c.notify, NotifyScope::Instance, "C", VrrpState::Init, 0);
    assert_eq!(stop[0][3], "STOP");
    let g = &cfg.sync_groups[0];
    let argv = notify_commands(&g.notify, NotifyScope::Group, "G", VrrpState::Fault, 100);
    assert_eq!(argv, vec![vec!["/usr/bin/g", "GROUP", "G", "FAULT", "100"]]);
}

#[test]
fn script_lines_split_like_keepalived() {
    assert_eq!(
        split_command(r#"/bin/sh -c "exit 1"  'a b' """#),
        vec!["/bin/sh", "-c", "exit 1", "a b", ""]
    );
    assert!(split_command("   ").is_empty());
}

/// Answers from a list, one per run, recording each command line.
struct Scripted {
    answers: Mutex<Vec<bool>>,
    runs: Mutex<Vec<Vec<String>>>,
}

impl CommandRunner for Scripted {
    fn run(&self, argv: Vec<String>, _timeout: Duration) -> BoxFuture<bool> {
        self.runs.lock().unwrap().push(argv);
        let mut a = self.answers.lock().unwrap();
        let ok = if a.is_empty() { true } else { a.remove(0) };
        Box::pin(async move { ok })
    }
}

#[tokio::test(start_paused = true)]
async fn a_script_goes_down_after_fall_failures_and_up_after_rise() {
    let cfg = two_and_sync().scripts[0].clone();
    let runner = Arc::new(Scripted {
        answers: Mutex::new(vec![true, false, true, false, false, true]),
        runs: Mutex::new(Vec::new()),
    });
    let (tx, mut rx) = mpsc::channel(8);
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_script(cfg, runner.clone(), tx, stop_rx));
    let start = crate::clock::now();
    // fall 2: the lone failure (run 2) does not count; runs 4 and 5 do.
    let (item, up) = rx.recv().await.unwrap();
    assert_eq!((item, up), (TrackedItem::Script("chk".into()), false));
    assert_eq!(crate::clock::since(start), Duration::from_secs(4));
    // rise 1: run 6 brings it back.
    assert!(rx.recv().await.unwrap().1);
    assert_eq!(crate::clock::since(start), Duration::from_secs(5));
    stop_tx.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(runner.runs.lock().unwrap()[0], vec!["/bin/true"]);
}

/// Records group operations.
#[derive(Default)]
struct Recorder {
    trace: Mutex<Vec<GroupOp>>,
    fail_start: bool,
}

impl GroupDriver for Recorder {
    fn start(&self, group: usize) -> BoxFuture<Result<(), String>> {
        self.trace.lock().unwrap().push(GroupOp::Start(group));
        let fail = self.fail_start;
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if fail { Err("no".into()) } else { Ok(()) }
        })
    }
    fn stop(&self, group: usize) -> BoxFuture<Result<(), String>> {
        self.trace.lock().unwrap().push(GroupOp::Stop(group));
        Box::pin(async { Ok(()) })
    }
    fn announce(&self, group: usize) -> BoxFuture<Result<(), String>> {
        self.trace.lock().unwrap().push(GroupOp::Announce(group));
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(start_paused = true)]
async fn drive_orders_group_operations_and_runs_notify_scripts() {
    let cfg = Arc::new(two_and_sync());
    let groups = Arc::new(Recorder::default());
    let commands = Arc::new(Scripted {
        answers: Mutex::new(Vec::new()),
        runs: Mutex::new(Vec::new()),
    });
    let (ops_tx, ops_rx) = mpsc::unbounded_channel();
    let (phase_tx, phase_rx) = watch::channel(vec![GroupPhase::Stopped; 2]);
    let worker = tokio::spawn(run_groups(groups.clone(), ops_rx, phase_tx));
    let (ev_tx, ev_rx) = mpsc::channel(16);
    let (_views_tx, views) = watch::channel(Vec::new());
    let driver = tokio::spawn(drive(
        ev_rx,
        Drive {
            config: cfg,
            ops: ops_tx,
            commands: commands.clone(),
            views,
        },
    ));
    for e in [
        (1, InstanceEvent::HoldGroup),
        (1, InstanceEvent::Announce { repeat: 5 }),
        (2, InstanceEvent::HoldGroup),
        (2, InstanceEvent::Notify(VrrpState::Master)),
        (1, InstanceEvent::ReleaseGroup),
        (2, InstanceEvent::ReleaseGroup),
    ] {
        ev_tx.send(e).await.unwrap();
    }
    drop(ev_tx);
    assert!(driver.await.unwrap().is_empty());
    worker.await.unwrap();
    assert_eq!(
        *groups.trace.lock().unwrap(),
        vec![GroupOp::Start(1), GroupOp::Announce(1), GroupOp::Stop(1)]
    );
    assert_eq!(phase_rx.borrow()[1], GroupPhase::Stopped);
    tokio::task::yield_now().await;
    let runs = commands.runs.lock().unwrap();
    assert!(
        runs.contains(&vec!["/usr/bin/up".to_string(), "now".into()]),
        "{runs:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_start_shows_as_failed() {
    let groups = Arc::new(Recorder {
        fail_start: true,
        ..Recorder::default()
    });
    let (ops_tx, ops_rx) = mpsc::unbounded_channel();
    let (phase_tx, phase_rx) = watch::channel(vec![GroupPhase::Stopped]);
    ops_tx.send(GroupOp::Start(0)).unwrap();
    drop(ops_tx);
    run_groups(groups, ops_rx, phase_tx).await;
    assert_eq!(phase_rx.borrow()[0], GroupPhase::Failed);
}
