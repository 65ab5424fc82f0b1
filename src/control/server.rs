//! The daemon side of the control socket.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::protocol::{Request, Response};

/// Longest request line accepted; anything longer is refused, not buffered.
const MAX_REQUEST: usize = 64 * 1024;

/// A request waiting for the node's answer.
#[derive(Debug)]
pub struct ControlCall {
    /// What was asked.
    pub request: Request,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Response>,
}

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another daemon answers on the socket.
    #[error("another hbd is already listening on {0}; stop it or pass a different --socket")]
    InUse(PathBuf),
    /// A file system or socket operation failed.
    #[error("control socket {path}: {what}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Binds the control socket at `path` (creating its directory, replacing a stale socket,
/// mode 0600) and serves requests by forwarding them to `calls`.
pub async fn serve(
    path: &Path,
    calls: mpsc::Sender<ControlCall>,
) -> Result<JoinHandle<()>, ControlError> {
    let io = |what: &'static str| {
        let path = path.to_path_buf();
        move |source| ControlError::Io { path, what, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating directory"))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ControlError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io("removing stale socket"))?;
    }
    let listener = UnixListener::bind(path).map_err(io("binding"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("setting mode 0600"))?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(handle(stream, calls.clone()));
                }
                Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
            }
        }
    }))
}

async fn handle(stream: UnixStream, calls: mpsc::Sender<ControlCall>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
    let mut line = String::new();
    let response = match reader.read_line(&mut line).await {
        Ok(0) => return,
        Ok(_) if !line.ends_with('\n') && line.len() >= MAX_REQUEST => {
            Response::refused("request too long")
        }
        Ok(_) => match serde_json::from_str::<Request>(line.trim()) {
            Ok(request) => {
                let (reply, answer) = oneshot::channel();
                if calls.send(ControlCall { request, reply }).await.is_err() {
                    Response::refused("the daemon is shutting down")
                } else {
                    answer
                        .await
                        .unwrap_or_else(|_| Response::refused("the daemon is shutting down"))
                }
            }
            Err(e) => Response::refused(format!("bad request: {e}")),
        },
        Err(e) => Response::refused(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    let _ = write.write_all(&out).await;
}
