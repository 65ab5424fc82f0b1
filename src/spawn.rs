//! Spawning child programs (resource scripts, fence agents, external checks) so that a
//! transient "text file busy" does not fail an operation. A leaf: no hbd imports.

use std::time::Duration;

use tokio::process::{Child, Command};

/// How many times a spawn refused with ETXTBSY is tried again, and the first pause.
const BUSY_TEXT_TRIES: u32 = 8;
const BUSY_TEXT_FIRST_PAUSE: Duration = Duration::from_millis(2);

/// Spawns `cmd`, trying again a few times (2, 4 … 128 ms apart, about 0.25 s in all) while
/// exec fails with ETXTBSY: the script is still open for writing somewhere, typically because
/// a process forked while its writer held it open (another thread of this daemon spawning, a
/// configuration tool rewriting it in place). The descriptor goes at that child's exec, so
/// the condition passes by itself; failing the operation would move a group for nothing.
pub async fn spawn_past_busy_text(cmd: &mut Command) -> std::io::Result<Child> {
    let mut pause = BUSY_TEXT_FIRST_PAUSE;
    for _ in 1..BUSY_TEXT_TRIES {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) => {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
    cmd.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn a_script_still_open_for_writing_is_run_once_its_writer_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = Command::new(&path);
        // The writer closes only after the first attempt has been refused and is pausing.
        let (child, ()) = tokio::join!(spawn_past_busy_text(&mut cmd), async move {
            tokio::task::yield_now().await;
            drop(file);
        });
        let status = child.unwrap().wait().await.unwrap();
        assert!(status.success());
    }

    #[tokio::test(start_paused = true)]
    async fn a_script_that_stays_busy_fails_with_etxtbsy_after_the_last_try() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = spawn_past_busy_text(&mut Command::new(&path))
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::ETXTBSY));
        drop(file);
    }
}
