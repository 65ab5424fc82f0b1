//! Test support: start `hbd` in a namespace, and send it one control request.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hbd::control::client;
use hbd::control::protocol::{Request, Response};

use crate::netns::NetNs;

/// Sends `request` to the daemon at `socket`; `None` if it does not answer within `timeout`.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Option<Response> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(client::call(socket, request, timeout)).ok()
}

/// Starts `hbd --ha-dir HA --node-name NODE --state-dir STATE --socket STATE/hbd.sock EXTRA…`
/// inside `ns`, appending its log to STATE/log. The namespace guard kills it (by PID) when it
/// drops; the PID is returned for tests that kill it earlier. A path ending in `.yaml` is
/// passed as `--config` instead.
pub fn spawn_hbd(ns: &NetNs, ha: &Path, node: &str, state: &Path, extra: &[&str]) -> u32 {
    let source = if ha.extension().is_some_and(|e| e == "yaml") {
        "--config"
    } else {
        "--ha-dir"
    };
    std::fs::create_dir_all(state).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.join("log"))
        .unwrap();
    let child = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            env!("CARGO_BIN_EXE_hbd"),
            source,
        ])
        .arg(ha)
        .args(["--node-name", node, "--state-dir"])
        .arg(state)
        .arg("--socket")
        .arg(socket_in(state))
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn hbd");
    let pid = child.id();
    ns.register_pid(pid);
    // Reaped by the namespace guard's kill; the handle is not needed.
    std::mem::forget(child);
    pid
}

/// The control socket of a daemon started by [`spawn_hbd`] with state directory `state`.
pub fn socket_in(state: &Path) -> PathBuf {
    state.join("hbd.sock")
}
