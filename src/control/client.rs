//! The `hactl` side of the control socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{Request, Response};

/// How long `hactl` waits for an answer before calling the daemon unreachable.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("cannot reach hbd at {path}: {source} (is the daemon running? see --socket)")]
    Unreachable {
        /// Socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The daemon took too long.
    #[error("hbd at {0} did not answer within {1:?}")]
    Timeout(PathBuf, Duration),
    /// The answer was not valid.
    #[error("hbd at {path} sent a bad answer: {reason}")]
    BadAnswer {
        /// Socket path.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// Sends `request` to the daemon at `path` and waits up to `timeout` for its answer.
pub async fn call(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    tokio::time::timeout(timeout, call_inner(path, request))
        .await
        .map_err(|_| ClientError::Timeout(path.to_path_buf(), timeout))?
}

async fn call_inner(path: &Path, request: &Request) -> Result<Response, ClientError> {
    let unreachable = |source| ClientError::Unreachable {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(path).await.map_err(unreachable)?;
    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::BadAnswer {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    line.push(b'\n');
    stream.write_all(&line).await.map_err(unreachable)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).await.map_err(unreachable)?;
    serde_json::from_str(answer.trim()).map_err(|e| ClientError::BadAnswer {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
