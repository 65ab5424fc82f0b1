//! `cl_status`: heartbeat's status tool over hbd's control socket (see `hbd::cl_status`).
//! The socket is `HBD_SOCKET` or hbd's default; like heartbeat's, the tool gives up after
//! 5 s with exit code 12.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use hbd::cl_status::{self, TIMEOUT, UNKNOWN_ERROR};
use hbd::control::DEFAULT_SOCKET;
use hbd::control::client::{self, ClientError};
use hbd::control::protocol::Request;

/// heartbeat's `DEFAULT_TIMEOUT` (an `alarm(5)`).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match cl_status::parse(&args) {
        Ok(inv) => match status(&inv) {
            Ok(report) => cl_status::answer(&inv, report.as_ref()),
            Err(code) => return ExitCode::from(code),
        },
        Err(outcome) => outcome,
    };
    let _ = std::io::stdout().write_all(outcome.stdout.as_bytes());
    let _ = std::io::stderr().write_all(outcome.stderr.as_bytes());
    ExitCode::from(outcome.code)
}

/// The daemon's report when the command needs one: `Ok(None)` when hbd is not running,
/// `Err(code)` when it timed out or answered nonsense.
fn status(inv: &cl_status::Invocation) -> Result<Option<hbd::control::protocol::StatusReport>, u8> {
    if matches!(
        inv.command,
        cl_status::Command::Help | cl_status::Command::Unsupported(_)
    ) {
        return Ok(None);
    }
    let socket = std::env::var_os("HBD_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cl_status: cannot start the async runtime: {e}");
            UNKNOWN_ERROR
        })?;
    match runtime.block_on(client::call(&socket, &Request::Status, ANSWER_TIMEOUT)) {
        Ok(r) if r.ok => Ok(r.status),
        Ok(r) => {
            eprintln!("cl_status: {}", r.error.unwrap_or_default());
            Err(UNKNOWN_ERROR)
        }
        Err(ClientError::Unreachable { .. }) => Ok(None),
        Err(e @ ClientError::Timeout(..)) => {
            eprintln!("cl_status: {e}");
            Err(TIMEOUT)
        }
        Err(e) => {
            eprintln!("cl_status: {e}");
            Err(UNKNOWN_ERROR)
        }
    }
}
