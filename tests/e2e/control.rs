//! Test support: one control request to a daemon's socket, from synchronous test code.

use std::path::Path;
use std::time::Duration;

use hbd::control::client;
use hbd::control::protocol::{Request, Response};

/// Sends `request` to the daemon at `socket`; `None` if it does not answer within `timeout`.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Option<Response> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(client::call(socket, request, timeout)).ok()
}
