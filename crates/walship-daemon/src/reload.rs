//! Reloading the configuration while the daemon runs: a watcher on the manifest's and
//! the secrets' directories, and a loop that rebuilds the archiver after each change
//! and hands it to the daemon. How an archiver is built is the caller's business (the
//! binary passes its wiring in): this crate knows no configuration file format.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use walship_engine::Archiver;
use walship_metrics::{Metrics, ReloadResult};

use crate::Daemon;

/// What a rebuild produces: the archiver and `wal.maxParallel`.
pub struct Rebuilt {
    pub archiver: Archiver,
    pub max_parallel: usize,
}

/// The files a reload reads again.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The manifest.
    pub config: PathBuf,
    /// The directory Secrets are mounted under.
    pub secrets_dir: PathBuf,
}

/// Watches the manifest's directory and the secrets directory; `changed` is notified
/// at every change that may matter. Kubernetes updates a mounted ConfigMap or Secret
/// by swapping a `..data` symlink in that directory, so the directory is watched, not
/// the file. Keep the returned watcher alive for as long as reloads are wanted.
pub fn watch(
    watched: &Watched,
    changed: Arc<Notify>,
) -> Result<notify::RecommendedWatcher, String> {
    use notify::{RecursiveMode, Watcher};
    let config_dir = watched
        .config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let (config, secrets) = (watched.config.clone(), watched.secrets_dir.clone());
    let relevant_dir = config_dir.clone();
    // Other files may share the manifest's directory (logs, sockets): only the manifest,
    // Kubernetes' `..data` swaps and anything under the secrets directory count.
    let relevant = move |path: &Path| {
        path == config
            || path.starts_with(&secrets)
            || (path.parent() == Some(relevant_dir.as_path())
                && path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("..")))
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            Ok(e) if !e.kind.is_access() && e.paths.iter().any(|p| relevant(p)) => {
                changed.notify_one();
            }
            Ok(_) => {}
            // An overflow or watcher error: reloading is the safe reaction.
            Err(_) => changed.notify_one(),
        }
    })
    .map_err(|e| format!("starting the configuration watcher: {e}"))?;
    watcher
        .watch(&config_dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("watching {}: {e}", config_dir.display()))?;
    if watched.secrets_dir.is_dir() {
        watcher
            .watch(&watched.secrets_dir, RecursiveMode::Recursive)
            .map_err(|e| format!("watching {}: {e}", watched.secrets_dir.display()))?;
    } else {
        warn!(dir = %watched.secrets_dir.display(), "no secrets directory to watch");
    }
    Ok(watcher)
}

/// After each notification of `changed`, rebuilds the archiver with `rebuild` and hands
/// it to `daemon`. A rebuild that fails is logged and counted, and the last good
/// configuration stays in force. Returns when `shutdown` is cancelled.
pub async fn reload_loop<F, Fut>(
    daemon: Daemon,
    changed: Arc<Notify>,
    rebuild: F,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Rebuilt, String>>,
{
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = changed.notified() => {}
        }
        // Kubernetes writes a new secret version in several steps; let them settle so
        // one update is one reload.
        tokio::time::sleep(Duration::from_millis(300)).await;
        match rebuild().await {
            Ok(rebuilt) => {
                daemon.reconfigure(rebuilt.archiver, rebuilt.max_parallel);
                metrics.config_reloads_total.inc(ReloadResult::Applied);
                info!(
                    max_parallel = rebuilt.max_parallel,
                    "configuration reloaded"
                );
            }
            Err(e) => {
                metrics.config_reloads_total.inc(ReloadResult::Rejected);
                error!("configuration change rejected, keeping the last good one: {e}");
            }
        }
    }
}
