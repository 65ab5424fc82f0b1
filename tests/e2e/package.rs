//! The Debian package: `scripts/build-deb.sh` packages the binaries this test run built, the
//! package installs into a throwaway root (`dpkg --root`), its example configuration passes
//! `hbd --check-config`, the unit passes `systemd-analyze verify` (man pages included), and
//! `dpkg -r` then `dpkg --purge` leave nothing behind but dpkg's own records.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::netns::require_root;

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The directory holding the binaries cargo built for this test run (hbd, hactl, cl_status).
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_hbd"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds the package from this run's binaries and returns its path.
fn build_deb(out: &Path) -> PathBuf {
    let bins = bin_dir();
    assert!(
        bins.join("examples/gen-manpages").exists(),
        "{}/examples/gen-manpages is missing: build it with `cargo build --example \
         gen-manpages` (scripts/test.sh does)",
        bins.display()
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = run(Command::new("bash")
        .arg(repo.join("scripts/build-deb.sh"))
        .arg("--prebuilt")
        .arg(&bins)
        .arg("--out")
        .arg(out)
        .args(["--compression", "none"]));
    let text = String::from_utf8_lossy(&built.stdout);
    PathBuf::from(
        text.lines()
            .last()
            .expect("the script prints the package path"),
    )
}

/// `dpkg --root ROOT` with what a root without a base system needs: no dependency check, and
/// maintainer scripts run without chroot (they honour `DPKG_ROOT`).
fn dpkg(root: &Path, args: &[&str]) -> Output {
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-not-root",
            "--force-depends",
            "--force-script-chrootless",
        ])
        .args(args))
}

/// Every file and symlink under `root` outside dpkg's own records, relative to `root`.
fn files_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel.starts_with("var/lib/dpkg") || rel == "var/log/dpkg.log" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                dirs.push(path);
            } else {
                found.push(rel);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn deb_builds_installs_checks_config_and_purges_cleanly() {
    require_root();
    let work = tempfile::tempdir().unwrap();
    let deb = build_deb(&work.path().join("out"));

    // Metadata and the layout operators rely on.
    let info =
        String::from_utf8(run(Command::new("dpkg-deb").arg("--info").arg(&deb)).stdout).unwrap();
    for want in [
        "Package: hbd",
        "Depends: libc6 (>= 2.34), libgcc-s1",
        "Conflicts: heartbeat",
    ] {
        assert!(info.contains(want), "no '{want}' in\n{info}");
    }
    let listing =
        String::from_utf8(run(Command::new("dpkg-deb").arg("--contents").arg(&deb)).stdout)
            .unwrap();
    for path in [
        "./usr/sbin/hbd",
        "./usr/sbin/hactl",
        "./usr/bin/cl_status",
        "./usr/sbin/hb_standby",
        "./usr/sbin/hb_takeover",
        "./usr/lib/hbd/resources/lvs",
        "./usr/lib/hbd/resources/tunl",
        "./etc/hbd/hbd.yaml",
        "./lib/systemd/system/hbd.service",
        "./usr/share/man/man8/hbd.8.gz",
        "./usr/share/man/man8/hactl.8.gz",
        "./usr/share/man/man8/hactl-status.8.gz",
        "./usr/share/man/man8/cl_status.8.gz",
        "./usr/share/man/man5/hbd.yaml.5.gz",
        "./usr/share/bash-completion/completions/hactl",
        "./usr/share/zsh/vendor-completions/_hactl",
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.ends_with(path) || l.contains(&format!("{path} -> "))),
            "{path} not in the package:\n{listing}"
        );
    }

    // Install into an empty root.
    let root = work.path().join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(f), "").unwrap();
    }
    dpkg(&root, &["-i", deb.to_str().unwrap()]);
    let conffiles = std::fs::read_to_string(root.join("var/lib/dpkg/info/hbd.conffiles")).unwrap();
    assert_eq!(conffiles, "/etc/hbd/hbd.yaml\n");
    let yaml = root.join("etc/hbd/hbd.yaml");
    let mode = std::fs::metadata(&yaml).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the example holds a key");

    // The shipped example passes the shipped daemon's check.
    let check = run(Command::new(root.join("usr/sbin/hbd"))
        .args(["--check-config", "--node-name", "loadbalancer", "--config"])
        .arg(&yaml));
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains("configuration OK for node loadbalancer"),
        "{said}"
    );
    run(Command::new(root.join("usr/bin/cl_status")).arg("-h"));
    let help = run(Command::new(root.join("usr/sbin/hactl")).arg("--version"));
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("hactl "));

    // The unit verifies, its binaries pointed into the root and its man pages found there.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/hbd.service")).unwrap();
    let verify_dir = tempfile::tempdir().unwrap();
    let rooted = verify_dir.path().join("hbd.service");
    let sbin = root.join("usr/sbin");
    std::fs::write(
        &rooted,
        unit.replace("/usr/sbin/", &format!("{}/", sbin.display())),
    )
    .unwrap();
    run(Command::new("systemd-analyze")
        .env("MANPATH", root.join("usr/share/man"))
        .arg("verify")
        .arg(&rooted));
    // The man pages render without groff warnings.
    for page in [
        "man8/hbd.8.gz",
        "man8/hactl.8.gz",
        "man5/hbd.yaml.5.gz",
        "man8/cl_status.8.gz",
    ] {
        let rendered = run(Command::new("sh").arg("-c").arg(format!(
            "zcat '{}' | groff -man -Tutf8 -ww -z 2>&1",
            root.join("usr/share/man").join(page).display()
        )));
        assert!(
            rendered.stdout.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&rendered.stdout)
        );
    }

    // Remove: the binaries go, the conffile stays.
    dpkg(&root, &["-r", "hbd"]);
    assert!(!root.join("usr/sbin/hbd").exists());
    assert_eq!(files_under(&root), ["etc/hbd/hbd.yaml"]);
    // State hbd would have written while it ran goes with the purge.
    std::fs::create_dir_all(root.join("var/lib/hbd")).unwrap();
    std::fs::write(root.join("var/lib/hbd/hb_generation"), "              7\n").unwrap();
    dpkg(&root, &["--purge", "hbd"]);
    assert_eq!(files_under(&root), Vec::<String>::new());
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert!(!status.contains("Package: hbd"), "{status}");
}
