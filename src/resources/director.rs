//! The built-in director resource: `ldirectord`, `ldirectord::FILE.cf` and `ipvsadm` in
//! haresources.
//!
//! heartbeat groups of LVS directors end in `ipvsadm ldirectord`: load the rules, then start
//! the checker. In hbd both are one built-in: `ldirectord` starts the director (health checks
//! driving IPVS or nftables) on the node that holds the group and stops it on release, so
//! the rules follow the VIP. `ipvsadm` is accepted and does nothing, since the director
//! programs the rules itself.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::config::director::{self, DirectorConfig};
use crate::director::runtime::{self, BackendChoice, DirectorHandle, RealReport};

/// Where the director's configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectorSource {
    /// An ldirectord.cf, read at every start and reload.
    File(PathBuf),
    /// The YAML `director:` section.
    Inline(DirectorConfig),
}

/// Why the director resource failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectorResourceError {
    /// The configuration does not load.
    #[error("director configuration refused:\n{0}")]
    Config(#[source] ConfigError),
    /// A reload read a configuration that does not load: the running rules stay.
    #[error("director keeps its current rules: {0}")]
    KeptRules(#[source] ConfigError),
    /// The director could not start.
    #[error(transparent)]
    Start(#[from] runtime::DirectorError),
    /// A reload the running director refused (the dataplane cannot run it, or programming
    /// it failed): the running director goes on as it was.
    #[error("director keeps its current rules: {0}")]
    Refused(#[source] runtime::DirectorError),
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reloaded {
    /// The director does not run on this node: nothing to reload.
    NotRunning,
    /// The director runs these virtual services now, after this many dataplane changes.
    Services {
        /// Virtual services.
        virtuals: usize,
        /// Dataplane changes the reload made.
        changes: usize,
    },
}

impl std::fmt::Display for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reloaded::NotRunning => f.write_str("director not running here: nothing to reload"),
            Reloaded::Services { virtuals, changes } => write!(
                f,
                "director reloaded: {virtuals} virtual service(s), {changes} dataplane change(s)"
            ),
        }
    }
}

/// The director as a resource of a group.
#[derive(Debug)]
pub struct DirectorResource {
    inner: std::sync::Arc<Inner>,
    watcher: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
}

#[derive(Debug)]
struct Inner {
    source: std::sync::Mutex<DirectorSource>,
    backend: BackendChoice,
    max_concurrent_checks: usize,
    handle: tokio::sync::Mutex<Option<DirectorHandle>>,
}

/// How often an `autoreload = yes` file is looked at (ldirectord checks once per
/// check interval).
const AUTORELOAD_POLL: std::time::Duration = std::time::Duration::from_secs(1);

impl DirectorResource {
    /// A director resource reading `source`, on the `backend` dataplane.
    pub fn new(source: DirectorSource, backend: BackendChoice) -> DirectorResource {
        DirectorResource {
            inner: std::sync::Arc::new(Inner {
                source: std::sync::Mutex::new(source),
                backend,
                max_concurrent_checks: runtime::DEFAULT_MAX_CONCURRENT_CHECKS,
                handle: tokio::sync::Mutex::new(None),
            }),
            watcher: std::sync::Mutex::new(None),
        }
    }

    /// Where its configuration comes from.
    pub fn source(&self) -> DirectorSource {
        self.inner.source()
    }

    /// Replaces an inline (YAML `director:`) configuration, for the next start or reload;
    /// a file source is left alone (the file itself is re-read).
    pub fn set_inline(&self, config: DirectorConfig) {
        let mut source = self.inner.source.lock().unwrap_or_else(|e| e.into_inner());
        if let DirectorSource::Inline(c) = &mut *source {
            *c = config;
        }
    }

    /// Reads the configuration now; every problem is listed as `file:line: …`.
    pub fn load(&self) -> Result<DirectorConfig, ConfigError> {
        self.inner.load()
    }

    /// Starts the director (nothing to do if it runs); with `autoreload = yes` also watches
    /// the file and reloads when it changes.
    pub async fn start(&self) -> Result<(), DirectorResourceError> {
        let autoreload = self.inner.start().await?;
        if let (true, DirectorSource::File(path)) = (autoreload, self.inner.source()) {
            let inner = self.inner.clone();
            let path = path.clone();
            let task = tokio::spawn(async move {
                let stamp =
                    |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
                let mut seen = stamp(&path);
                loop {
                    tokio::time::sleep(AUTORELOAD_POLL).await;
                    let now = stamp(&path);
                    if now != seen {
                        seen = now;
                        match inner.reload().await {
                            Ok(m) => tracing::info!(file = %path.display(), "autoreload: {m}"),
                            Err(e) => tracing::error!(file = %path.display(), "autoreload: {e}"),
                        }
                    }
                }
            });
            if let Some(old) = self
                .watcher
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .replace(task.abort_handle())
            {
                old.abort();
            }
        }
        Ok(())
    }

    /// Stops the director; with `cleanstop` (the default) its services are removed.
    pub async fn stop(&self) -> Result<(), DirectorResourceError> {
        if let Some(w) = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            w.abort();
        }
        self.inner.stop().await
    }

    /// Whether it runs here.
    pub async fn is_running(&self) -> bool {
        self.inner.handle.lock().await.is_some()
    }

    /// Every real server's state, when it runs.
    pub async fn report(&self) -> Option<Vec<RealReport>> {
        self.inner
            .handle
            .lock()
            .await
            .as_ref()
            .map(DirectorHandle::report)
    }

    /// Re-reads the configuration and, if it loads, replaces the running director without
    /// tearing its services down (reals already up stay up). A configuration that does not
    /// load is refused and the running rules stay as they are. The answer is text because
    /// the daemon's reload report (`daemon::runner::ReloadFuture`) collects text.
    pub async fn reload(&self) -> Result<String, String> {
        self.inner
            .reload()
            .await
            .map(|r| r.to_string())
            .map_err(|e| e.to_string())
    }
}

impl Inner {
    fn source(&self) -> DirectorSource {
        self.source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn load(&self) -> Result<DirectorConfig, ConfigError> {
        match &self.source() {
            DirectorSource::Inline(c) => Ok(c.clone()),
            DirectorSource::File(path) => match director::parse_ldirectord(path) {
                Ok((config, warnings)) => {
                    for w in warnings {
                        tracing::warn!("{w}");
                    }
                    Ok(config)
                }
                Err(e) => Err(e),
            },
        }
    }

    /// Starts the director (nothing to do if it runs); returns whether the file asks for
    /// autoreload.
    async fn start(&self) -> Result<bool, DirectorResourceError> {
        let mut handle = self.handle.lock().await;
        if handle.is_some() {
            return Ok(false);
        }
        let config = self.load().map_err(DirectorResourceError::Config)?;
        let backend = runtime::open_backend(self.backend).map_err(runtime::DirectorError::from)?;
        *handle = Some(runtime::start(&config, backend, self.max_concurrent_checks).await?);
        Ok(config.autoreload)
    }

    async fn stop(&self) -> Result<(), DirectorResourceError> {
        if let Some(h) = self.handle.lock().await.take() {
            h.stop().await;
        }
        Ok(())
    }

    /// Reloads in place (see [`DirectorHandle::reload`]): a configuration that does not
    /// load, that the dataplane cannot run, or whose programming fails is refused, and the
    /// running director goes on exactly as it was (checks, rules, reports, stop).
    async fn reload(&self) -> Result<Reloaded, DirectorResourceError> {
        let handle = self.handle.lock().await;
        let Some(running) = handle.as_ref() else {
            return Ok(Reloaded::NotRunning);
        };
        let config = self.load().map_err(DirectorResourceError::KeptRules)?;
        let changes = running
            .reload(config.clone())
            .await
            .map_err(DirectorResourceError::Refused)?;
        Ok(Reloaded::Services {
            virtuals: config.virtuals.len(),
            changes,
        })
    }
}
