//! The daemon side of the control socket.
//!
//! The socket is open to local clients that may misbehave, so it holds few resources for
//! them (issue #15, defect 2: 1,100 idle connections exhausted the descriptors, the accept
//! loop spun logging 16 million warnings, and the next failover could not open a socket):
//! at most [`Limits::max_connections`] connections at once, the oldest one still silent
//! closed to make room; a request line must arrive within [`Limits::request_timeout`];
//! accept errors back off and are logged at most once per [`ACCEPT_LOG_INTERVAL`].

use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinHandle};

use super::protocol::{Request, Response};
use crate::logging::RateLimit;

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

/// How many clients the socket serves at once, and how long a silent one may stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; each holds a descriptor the daemon needs for failover.
    pub max_connections: usize,
    /// Time a client has to send its request line (hactl sends it at once).
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 32,
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// Longest pause between accept attempts after errors (EMFILE, ENFILE, ENOBUFS): the
/// pause doubles from [`ACCEPT_BACKOFF_FIRST`] up to this, and resets on success.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// First pause after an accept error.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(10);
/// At most one "accept failed" line per this interval, with how many were left out.
pub const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Binds the control socket at `path` (creating its directory, replacing a stale socket,
/// mode 0600) and serves requests by forwarding them to `calls`, within [`Limits::default`].
pub async fn serve(
    path: &Path,
    calls: mpsc::Sender<ControlCall>,
) -> Result<JoinHandle<()>, ControlError> {
    serve_with(path, calls, Limits::default()).await
}

/// [`serve`] within `limits`.
pub async fn serve_with(
    path: &Path,
    calls: mpsc::Sender<ControlCall>,
    limits: Limits,
) -> Result<JoinHandle<()>, ControlError> {
    let io = |what: &'static str| {
        let path = path.to_path_buf();
        move |source| ControlError::Io { path, what, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating directory"))?;
    }
    if path.exists() {
        if probe(path, IN_USE_PROBE_TIMEOUT).await == Probe::Held {
            return Err(ControlError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io("removing stale socket"))?;
    }
    let listener = UnixListener::bind(path).map_err(io("binding"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("setting mode 0600"))?;
    Ok(tokio::spawn(accept_loop(listener, calls, limits)))
}

/// How long a socket that accepted the probe's connection has to answer it before it is
/// taken as held by a live daemon that is slow to answer.
const IN_USE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What is behind an existing socket file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// Nobody: the connection was refused, or the listener closed it without an answer.
    Stale,
    /// A daemon that answered, or that kept the connection open without answering.
    Held,
}

/// Asks whatever listens on `path` for its status. A connection alone proves nothing: a
/// daemon that was just SIGKILLed still holds its listening socket while the kernel tears
/// the process down, and the kernel accepts connections into its backlog until then; it
/// resets them when the socket closes. So the probe sends a request and waits for the first
/// byte of an answer, an end of stream or a reset, and counts silence as held.
async fn probe(path: &Path, timeout: Duration) -> Probe {
    let Ok(mut stream) = UnixStream::connect(path).await else {
        return Probe::Stale;
    };
    let Ok(line) = Request::Status.to_line() else {
        return Probe::Held;
    };
    let answer = async {
        stream.write_all(&line).await?;
        let mut first = [0u8; 1];
        stream.read(&mut first).await
    };
    match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(n)) if n > 0 => Probe::Held,
        Ok(_) => Probe::Stale,
        Err(_) => Probe::Held,
    }
}

/// One open connection: whether it is still waiting for its request, and its task.
struct Connection {
    silent: Arc<AtomicBool>,
    task: AbortHandle,
}

async fn accept_loop(listener: UnixListener, calls: mpsc::Sender<ControlCall>, limits: Limits) {
    let mut open: VecDeque<Connection> = VecDeque::new();
    let mut backoff = ACCEPT_BACKOFF_FIRST;
    let mut log_limit = RateLimit::new(ACCEPT_LOG_INTERVAL);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF_FIRST;
                open.retain(|c| !c.task.is_finished());
                if open.len() >= limits.max_connections {
                    // Make room: close the oldest client that has not said anything yet.
                    match open.iter().position(|c| c.silent.load(Ordering::Acquire)) {
                        Some(i) => {
                            if let Some(c) = open.remove(i) {
                                c.task.abort();
                            }
                        }
                        None => {
                            tokio::spawn(refuse_busy(stream, limits.request_timeout));
                            continue;
                        }
                    }
                }
                let silent = Arc::new(AtomicBool::new(true));
                let task = tokio::spawn(handle(
                    stream,
                    calls.clone(),
                    silent.clone(),
                    limits.request_timeout,
                ));
                open.push_back(Connection {
                    silent,
                    task: task.abort_handle(),
                });
            }
            Err(e) => {
                if let Some(suppressed) = log_limit.allow(crate::clock::now()) {
                    tracing::warn!(error = %e, suppressed, pause = ?backoff, "control socket accept failed; pausing before the next attempt");
                }
                // Without the pause a lasting error (EMFILE) spins the loop on one core.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// Tells a client over the limit that the daemon is busy, then closes.
async fn refuse_busy(mut stream: UnixStream, within: Duration) {
    let busy = Response::refused("too many control connections; try again");
    send_response(&mut stream, &busy, within).await;
}

/// Writes `response` as one JSON line, giving up on a client that does not read it
/// `within`.
async fn send_response(
    write: &mut (impl AsyncWrite + Unpin),
    response: &Response,
    within: Duration,
) {
    let mut out = serde_json::to_vec(response).unwrap_or_default();
    out.push(b'\n');
    let _ = tokio::time::timeout(within, write.write_all(&out)).await;
}

async fn handle(
    stream: UnixStream,
    calls: mpsc::Sender<ControlCall>,
    silent: Arc<AtomicBool>,
    request_timeout: Duration,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
    let mut line = String::new();
    let Ok(read) = tokio::time::timeout(request_timeout, reader.read_line(&mut line)).await else {
        return;
    };
    silent.store(false, Ordering::Release);
    let response = match read {
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
    send_response(&mut write, &response, request_timeout).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::client;

    /// Answers every call with "done" until the sender goes.
    fn answer_all(mut calls: mpsc::Receiver<ControlCall>) {
        tokio::spawn(async move {
            while let Some(call) = calls.recv().await {
                let _ = call.reply.send(Response::done("ok"));
            }
        });
    }

    #[tokio::test]
    async fn a_live_daemon_keeps_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hbd.sock");
        let (tx, rx) = mpsc::channel(8);
        answer_all(rx);
        let first = serve(&path, tx.clone()).await.unwrap();
        let second = serve(&path, tx).await.unwrap_err();
        assert!(matches!(second, ControlError::InUse(_)), "{second}");
        first.abort();
    }

    #[tokio::test]
    async fn a_socket_whose_owner_is_dying_is_taken_over() {
        // A SIGKILLed daemon's listener still accepts into its backlog until the kernel
        // closes it; the connection then ends unanswered. The CI failure this fixes: a
        // restarted daemon refused to start, "another hbd is already listening".
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hbd.sock");
        let dying = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(dying);
        });
        let (tx, rx) = mpsc::channel(8);
        answer_all(rx);
        let server = serve(&path, tx)
            .await
            .expect("the dying owner's socket is taken over");
        closer.join().unwrap();
        let answer = client::call(&path, &Request::Status, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(answer.ok, "{answer:?}");
        server.abort();
    }

    #[tokio::test]
    async fn a_socket_held_open_without_an_answer_counts_as_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hbd.sock");
        let silent = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(probe(&path, Duration::from_millis(200)).await, Probe::Held);
        drop(silent);
        assert_eq!(probe(&path, Duration::from_millis(200)).await, Probe::Stale);
    }

    #[tokio::test]
    async fn idle_clients_cannot_crowd_out_a_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hbd.sock");
        let (tx, rx) = mpsc::channel(8);
        answer_all(rx);
        let limits = Limits {
            max_connections: 4,
            request_timeout: Duration::from_millis(300),
        };
        let server = serve_with(&path, tx, limits).await.unwrap();
        let mut idle = Vec::new();
        for _ in 0..64 {
            idle.push(UnixStream::connect(&path).await.unwrap());
        }
        let answer = client::call(&path, &Request::Status, Duration::from_secs(2))
            .await
            .expect("answered despite 64 idle clients");
        assert!(answer.ok, "{answer:?}");
        // the silent ones are closed: at the limit, or after the request timeout
        let mut closed = 0;
        for mut s in idle {
            let mut buf = [0u8; 1];
            if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await
            {
                closed += 1;
            }
        }
        assert_eq!(closed, 64);
        server.abort();
    }
}
