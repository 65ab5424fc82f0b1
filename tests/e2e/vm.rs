//! The IPVS tier (issue 16): scripts/vm-ipvs.sh boots Debian's kernel under qemu (TCG) once
//! and runs every scenario of scripts/vm/ in the guest; this test names each check the
//! guest must pass, so a scenario that stops early (or a check renamed) fails here.
//!
//! `#[ignore]`: the guest takes most of a core for a minute or more, which would skew the
//! timing of the other e2e tests running beside it, so scripts/test.sh runs it on its own
//! after them, one guest at a time (`cargo test --test e2e vm:: -- --ignored
//! --test-threads=1`).

/// Scenario `rules` (scripts/vm/rules.sh): one director, every kind of service.
const RULES: &[&str] = &[
    "programmed",
    "rules-as-meant",
    "thresholds",
    "foreign-service-kept",
    "hactl-ipvs-equals-ipvsadm-Ln",
    "hactl-persistent-conn-equals-ipvsadm",
    "version-line",
    "hactl-save-equals-ipvsadm-Sn",
    "hand-changes-put-back",
    "hand-changes-logged",
    "foreign-service-kept-by-repair",
    "reload-applied",
    "bad-reload-refused",
    "rules-kept-after-refusal",
    "rules-survive-a-crash",
    "restart-adopts-without-changes",
    "rules-as-meant-after-restart",
    "hbd-stopped",
    "stop-removes-only-its-own",
];

/// Scenario `packets` (scripts/vm/packets.sh): a director pair, three reals, a client.
const PACKETS: &[&str] = &[
    "pair-d1-programs-the-rules",
    "pair-d1-holds-the-vip",
    "pair-standby-has-no-rules",
    "sync-backup-on-standby",
    "sync-master-on-active",
    "first-request-through-the-vip",
    "dr-weights-3-2-1",
    "tun-weights-1-2-3",
    "down-real-quiesced",
    "down-real-gets-no-new-connections",
    "pair-no-false-failover",
    "long-connection-open",
    "connection-synced-to-standby",
    "rules-follow-the-vip-to-d2",
    "rules-leave-d1",
    "vip-on-d2",
    "sync-master-follows-to-d2",
    "sync-backup-on-d1-after-standby",
    "new-connections-through-d2",
    "long-connection-survives-failover",
    "connection-synced-back-to-d1",
    "sigkill-d1-takes-the-vip",
    "sigkill-rules-on-d1",
    "sigkill-sync-master-on-d1",
    "long-connection-survives-sigkill",
    "new-connections-after-sigkill",
];

#[test]
#[ignore = "the VM tier: scripts/test.sh runs it alone, after the other e2e tests"]
fn ipvs_rules_in_a_vm() {
    run_in_a_vm("rules", RULES);
}

/// Real packets through a director pair, with a failover asked for and one by SIGKILL.
#[test]
#[ignore = "the VM tier: scripts/test.sh runs it alone, after the other e2e tests"]
fn ipvs_packets_in_a_vm() {
    run_in_a_vm("packets", PACKETS);
}

/// Boots the guest for scenario `only` (`HBD_VM_ONLY`) and checks each of `names` passed.
fn run_in_a_vm(only: &str, names: &[&str]) {
    crate::netns::require_root();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/vm-ipvs.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .env("HBD_VM_ONLY", only)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("every IPVS check passed"), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    for name in names {
        assert!(
            text.lines()
                .any(|l| l.trim_end() == format!("VM-CHECK {name} PASS")),
            "check {name} did not pass:\n{text}"
        );
    }
    // The figures the guest measured, for the log (`--nocapture`).
    for line in text.lines().filter(|l| l.starts_with("VM-STEP")) {
        println!("{line}");
    }
}
