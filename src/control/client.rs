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
    /// The socket is there but this user may not use it (mode 0600, owned by root).
    #[error(
        "permission denied on {path}: hactl needs read and write access to the control socket (run it as root, or as the user hbd runs as)"
    )]
    PermissionDenied {
        /// Socket path.
        path: PathBuf,
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

/// Why the socket at `path` could not be used: a user without access is told so, rather
/// than asked whether the daemon runs.
fn connect_error(path: &Path, source: std::io::Error) -> ClientError {
    if source.kind() == std::io::ErrorKind::PermissionDenied {
        ClientError::PermissionDenied {
            path: path.to_path_buf(),
        }
    } else {
        ClientError::Unreachable {
            path: path.to_path_buf(),
            source,
        }
    }
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
    let unreachable = |source| connect_error(path, source);
    let mut stream = UnixStream::connect(path).await.map_err(unreachable)?;
    let line = request.to_line().map_err(|e| ClientError::BadAnswer {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;

    stream.write_all(&line).await.map_err(unreachable)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).await.map_err(unreachable)?;
    serde_json::from_str(answer.trim()).map_err(|e| ClientError::BadAnswer {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_socket_without_access_says_permission_denied() {
        // Issue #15, defect 7: this said "is the daemon running?". Root passes any mode
        // check, so the error the kernel gives a user without access (EACCES) is mapped here.
        let path = Path::new("/run/hbd/hbd.sock");
        let denied = connect_error(path, std::io::Error::from_raw_os_error(13));
        assert!(denied.to_string().contains("permission denied"), "{denied}");
        assert!(!denied.to_string().contains("daemon running"), "{denied}");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.sock");
        let err = call(&missing, &Request::Status, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("is the daemon running"), "{err}");
    }
}
