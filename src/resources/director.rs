//! The built-in director resource: `ldirectord`, `ldirectord::FILE.cf` and `ipvsadm` in
//! haresources.
//!
//! heartbeat groups of LVS directors end in `ipvsadm ldirectord`: load the rules, then start
//! the checker. In hbd both are one built-in: `ldirectord` starts the director (health checks
//! driving IPVS or nftables) on the node that holds the group and stops it on release, so
//! the rules follow the VIP. `ipvsadm` is accepted and does nothing, since the director
//! programs the rules itself.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::director::runtime::{self, BackendChoice, DirectorHandle, RealReport};
use crate::director::{self, DirectorConfig};

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
    Config(String),
    /// The director could not start.
    #[error(transparent)]
    Start(#[from] runtime::DirectorError),
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
    pub fn load(&self) -> Result<DirectorConfig, String> {
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
    /// load is refused and the running rules stay as they are.
    pub async fn reload(&self) -> Result<String, String> {
        self.inner.reload().await
    }
}

impl Inner {
    fn source(&self) -> DirectorSource {
        self.source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn load(&self) -> Result<DirectorConfig, String> {
        match &self.source() {
            DirectorSource::Inline(c) => Ok(c.clone()),
            DirectorSource::File(path) => match director::parse_ldirectord(path) {
                Ok((config, warnings)) => {
                    for w in warnings {
                        tracing::warn!("{w}");
                    }
                    Ok(config)
                }
                Err(e) => Err(e.to_string()),
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
        *handle = Some(
            runtime::start(
                &config,
                backend,
                self.max_concurrent_checks,
                &HashSet::new(),
            )
            .await?,
        );
        Ok(config.autoreload)
    }

    async fn stop(&self) -> Result<(), DirectorResourceError> {
        if let Some(h) = self.handle.lock().await.take() {
            h.stop().await;
        }
        Ok(())
    }

    async fn reload(&self) -> Result<String, String> {
        let mut handle = self.handle.lock().await;
        let Some(old) = handle.take() else {
            return Ok("director not running here: nothing to reload".into());
        };
        let config = match self.load() {
            Ok(c) => c,
            Err(e) => {
                *handle = Some(old);
                return Err(format!("director keeps its current rules: {e}"));
            }
        };
        let previous = old.stop_keep().await;
        let backend = runtime::open_backend(self.backend).map_err(|e| e.to_string())?;
        let new = runtime::start(&config, backend, self.max_concurrent_checks, &previous)
            .await
            .map_err(|e| e.to_string())?;
        *handle = Some(new);
        Ok(format!(
            "director reloaded: {} virtual service(s)",
            config.virtuals.len()
        ))
    }
}
