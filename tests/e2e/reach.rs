//! Ping nodes and ping groups against a real ICMP path: a "router" namespace holds the
//! targets (203.0.113.1-3, answered by its kernel), a node namespace runs the reachability
//! task over a veth to it, and nftables in the router cuts and restores echo requests.
//! `nft` is the test's tool only; the code under test never runs it.

use std::time::Duration;

use hbd::config::{Config, load_yaml};
use hbd::reachability::{
    Reach, ReachUpdate, Reachability, TargetEvent, TargetState, probe_interval,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::netns::pair;

const DEADPING: Duration = Duration::from_millis(100);

/// `nft COMMAND` in the namespace named `ns`; panics with nft's stderr when it fails.
fn nft(ns: &str, command: &str) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", command])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`nft {command}` in {ns} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `nft COMMAND` in `ns` from the blocking pool, so the prober on this runtime keeps running
/// while nft does.
async fn nft_async(ns: &str, command: String) {
    let ns = ns.to_string();
    tokio::task::spawn_blocking(move || nft(&ns, &command))
        .await
        .unwrap_or_else(|p| std::panic::resume_unwind(p.into_panic()));
}

/// Drops echo requests to `address` at the router.
async fn cut(router: &str, address: &str) {
    let rule =
        format!("add rule inet hbdreach input ip daddr {address} icmp type echo-request drop");
    nft_async(router, rule).await;
}

/// The node's configuration: one ping node and one ping group of two.
fn config(dir: &std::path::Path) -> Config {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("hbd.yaml");
    std::fs::write(
        &path,
        "nodes: [a, b]\nauto_failback: on\nmedia: [ { bcast: { interface: eth0 } } ]\n\
         auth: { active: 1, keys: [ { id: 1, method: sha256, key: k } ] }\n\
         timing: { keepalive: 20ms, deadtime: 100ms, deadping: 100ms }\n\
         ping: [203.0.113.1]\n\
         ping_groups: [ { name: upstream, addresses: [203.0.113.2, 203.0.113.3] } ]\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    load_yaml(&path, "a")
        .unwrap_or_else(|e| panic!("{e}"))
        .config
}

/// The next update whose events hold one that `want` accepts (earlier updates are kept in
/// `seen`); panics after `limit`.
async fn wait_event(
    updates: &mut UnboundedReceiver<ReachUpdate>,
    seen: &mut Vec<TargetEvent>,
    limit: Duration,
    what: &str,
    want: impl Fn(&TargetEvent) -> bool,
) -> (TargetEvent, Instant) {
    let until = Instant::now() + limit;
    loop {
        let u = tokio::time::timeout_at(until, updates.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: not within {limit:?}; events so far: {seen:#?}"))
            .expect("reachability task alive");
        let received = Instant::now();
        for e in u.events {
            let hit = want(&e);
            seen.push(e.clone());
            if hit {
                return (e, received);
            }
        }
    }
}

#[test]
fn ping_targets_die_when_cut_and_come_back_when_restored() {
    let (router, node) = pair("rch", "203.0.113.1/24", "203.0.113.10/24");
    router.ip(&["addr", "add", "203.0.113.2/24", "dev", "eth0"]);
    router.ip(&["addr", "add", "203.0.113.3/24", "dev", "eth0"]);
    let rname = router.name();
    nft(rname, "add table inet hbdreach");
    nft(
        rname,
        "add chain inet hbdreach input { type filter hook input priority 0 ; }",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let probe = probe_interval(DEADPING);

    node.run(|| async {
        let (handle, mut updates) = Reachability::spawn(&config);
        let mut seen = Vec::new();
        let all = Reach {
            reachable: 2,
            total: 2,
        };
        // Both targets come up.
        let limit = Duration::from_secs(5);
        while handle.advertised() != Some(all) {
            wait_event(&mut updates, &mut seen, limit, "targets up", |_| true).await;
        }
        // A few rounds, so every address has answered recently.
        tokio::time::sleep(probe * 3).await;

        // Cut the ping node and one member of the group: the node dies within deadping and
        // one probe interval; the group stays up on its other member.
        let cut_start = Instant::now();
        cut(rname, "203.0.113.1").await;
        cut(rname, "203.0.113.2").await;
        let cut_done = Instant::now();
        let (dead, received) = wait_event(
            &mut updates,
            &mut seen,
            Duration::from_secs(2),
            "ping node dead",
            |e| e.target == "203.0.113.1" && e.to == TargetState::Dead,
        )
        .await;
        let after = dead.at.saturating_duration_since(cut_start);
        eprintln!(
            "ping node dead {after:?} after the cut (event received {:?} after it; nft took {:?})",
            received.saturating_duration_since(cut_start),
            cut_done - cut_start
        );
        assert!(
            dead.at <= cut_done + DEADPING + probe,
            "dead {after:?} after the cut; want at most deadping + one probe interval"
        );
        assert!(
            dead.at >= cut_start + DEADPING - probe,
            "dead only {after:?} after the cut: too early"
        );
        assert_eq!(
            handle.advertised(),
            Some(Reach {
                reachable: 1,
                total: 2
            })
        );
        // Three more deadpings: the group never dies while 203.0.113.3 answers.
        tokio::time::sleep(DEADPING * 3).await;
        while let Ok(u) = updates.try_recv() {
            seen.extend(u.events);
        }
        assert!(
            !seen
                .iter()
                .any(|e| e.target == "upstream" && e.to == TargetState::Dead),
            "the group died with one member answering: {seen:#?}"
        );
        let group = &handle.targets().report(Instant::now())[1];
        assert_eq!(group.state, TargetState::Up);
        assert!(
            !group.members[0].answering && group.members[1].answering,
            "{group:?}"
        );

        // Cut the last member: the group dies.
        let last_cut = Instant::now();
        cut(rname, "203.0.113.3").await;
        let (dead, _) = wait_event(
            &mut updates,
            &mut seen,
            Duration::from_secs(2),
            "group dead",
            |e| e.target == "upstream" && e.to == TargetState::Dead,
        )
        .await;
        assert!(dead.at <= Instant::now() && dead.at <= last_cut + DEADPING * 2 + probe);
        assert_eq!(
            handle.advertised(),
            Some(Reach {
                reachable: 0,
                total: 2
            })
        );

        // Restore: both up again within a probe interval or two.
        let restored = Instant::now();
        nft_async(rname, "flush chain inet hbdreach input".into()).await;
        let limit = Duration::from_secs(2);
        while handle.advertised() != Some(all) {
            wait_event(&mut updates, &mut seen, limit, "targets up again", |_| true).await;
        }
        let back = restored.elapsed();
        eprintln!("both targets up {back:?} after the restore");
        assert!(back <= probe * 4 + Duration::from_millis(100), "{back:?}");
        drop(handle);
        let drained = async { while updates.recv().await.is_some() {} };
        assert!(
            tokio::time::timeout(Duration::from_secs(1), drained)
                .await
                .is_ok(),
            "dropping the handle ends the task"
        );
    });
}
