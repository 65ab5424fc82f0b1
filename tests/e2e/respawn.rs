//! `respawn USER PROGRAM`: the program runs as that user, with that user's groups and none of
//! root's (needs root to switch users, like every test here).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use hbd::config::RespawnSpec;
use hbd::supervise::{RespawnPolicy, Supervisor};
use nix::unistd::{Uid, User};

#[tokio::test]
async fn respawn_runs_as_nobody_with_nobody_s_groups() {
    assert!(
        Uid::effective().is_root(),
        "this test switches users and must run as root"
    );
    let nobody = User::from_name("nobody")
        .expect("passwd")
        .expect("a `nobody` user");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = dir.path().join("ids");
    let prog = dir.path().join("whoami.sh");
    std::fs::write(
        &prog,
        format!(
            "#!/bin/sh\n{{ id -u; id -g; id -G; echo \"$HOME $USER\"; }} > {o}.tmp && mv {o}.tmp {o}\nexec sleep 60\n",
            o = out.display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let spec = RespawnSpec {
        user: "nobody".into(),
        command: vec![prog.display().to_string()],
    };
    let handle = Supervisor::spawn_with(
        &[spec],
        RespawnPolicy {
            stop_grace: Duration::from_secs(2),
            ..RespawnPolicy::default()
        },
    );
    let mut text = String::new();
    for _ in 0..500 {
        if let Ok(t) = std::fs::read_to_string(&out) {
            text = t;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.stop().await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text:?}");
    assert_eq!(lines[0], nobody.uid.to_string());
    assert_eq!(lines[1], nobody.gid.to_string());
    let groups: Vec<&str> = lines[2].split_whitespace().collect();
    assert!(!groups.contains(&"0"), "root's group kept: {groups:?}");
    assert!(
        groups.contains(&nobody.gid.to_string().as_str()),
        "{groups:?}"
    );
    assert_eq!(
        lines[3],
        format!("{} nobody", nobody.dir.display()),
        "HOME and USER are the user's"
    );
}
