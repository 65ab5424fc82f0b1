//! The command-line front doors: `hbd --check-config` on the seed's files and on broken ones,
//! `hactl convert`, and hactl's exit codes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::control::hactl;

/// Copies a fixture directory into a temp dir with authkeys at mode 600 (git does not keep
/// modes, and hbd refuses a key file others can read, as heartbeat does).
fn fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name);
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    let keys = dst.join("authkeys");
    if keys.exists() {
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    (dir, dst)
}

fn hbd(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hbd"))
        .args(args)
        .arg("--ha-dir")
        .arg(dir)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn check_config_accepts_the_seed_for_both_nodes() {
    let (_tmp, dir) = fixture("seed004");
    for node in ["loadbalancer", "backup"] {
        let out = hbd(&["--check-config", "--node-name", node], &dir);
        assert_eq!(out.status.code(), Some(0), "{node}: {}", text(&out));
        let t = text(&out);
        assert!(t.contains("configuration OK"), "{t}");
        // The seed's unsupported bits are named, not silently ignored.
        assert!(t.contains("ipfail"), "{t}");
        assert!(t.contains("crc"), "{t}");
    }
}

#[test]
fn check_config_rejects_broken_files_with_file_and_line() {
    let (_tmp, dir) = fixture("broken");
    let out = hbd(&["--check-config", "--node-name", "node1"], &dir);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    let ha_cf = dir.join("ha.cf");
    // Every mistake is reported in one run, each with file:line.
    for (line, what) in [
        (4, "deadtime"),
        (5, "initdead"),
        (8, "not a multicast address"),
        (9, "baud"),
        (12, "crm"),
        (14, "keepaliv"),
        (15, "auto_failback"),
    ] {
        let prefix = format!("{}:{line}:", ha_cf.display());
        assert!(
            t.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(what)),
            "no '{prefix} … {what}' in:\n{t}"
        );
    }
    assert!(
        t.contains(&format!("{}:", dir.join("haresources").display())),
        "{t}"
    );
    assert!(
        t.contains(&format!("{}:", dir.join("authkeys").display())),
        "{t}"
    );
}

#[test]
fn check_config_refuses_a_readable_authkeys() {
    let (_tmp, dir) = fixture("seed004");
    std::fs::set_permissions(dir.join("authkeys"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = hbd(&["--check-config", "--node-name", "loadbalancer"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("chmod 600"), "{}", text(&out));
}

#[test]
fn hactl_convert_prints_yaml_that_loads_back() {
    let (tmp, dir) = fixture("seed004-lab");
    // convert reads files only: the socket is never opened.
    let unused = tmp.path().join("none.sock");
    let ha_dir = dir.to_str().unwrap();
    let out = hactl(
        &unused,
        &["convert", "--node-name", "loadbalancer", "--ha-dir", ha_dir],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let yaml = tmp.path().join("hbd.yaml");
    std::fs::write(&yaml, &out.stdout).unwrap();
    std::fs::set_permissions(&yaml, std::fs::Permissions::from_mode(0o600)).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_hbd"))
        .args(["--check-config", "--node-name", "loadbalancer", "--config"])
        .arg(&yaml)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
}

/// hactl's exit codes: 2 for a usage error (an unknown command or group class), 3 when the
/// daemon is unreachable.
#[test]
fn hactl_exit_codes_for_usage_errors_and_an_unreachable_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let out = hactl(&sock, &["status"]);
    assert_eq!(out.status.code(), Some(3), "daemon unreachable");
    let out = hactl(&sock, &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "usage error");
    let out = hactl(&sock, &["takeover", "sideways"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("unknown group class 'sideways'"),
        "{}",
        text(&out)
    );
    // A valid class (any case, `failback` included) reaches the daemon: here, none.
    for class in ["FailBack", "local"] {
        let out = hactl(&sock, &["standby", class]);
        assert_eq!(out.status.code(), Some(3), "{class}: {}", text(&out));
    }
    let out = hactl(&sock, &["reload"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}
