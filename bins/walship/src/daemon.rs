//! `walship daemon`: wiring of the engine's daemon, the metrics server and signals.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use walship_daemon::{Daemon, DaemonConfig};
use walship_engine::Archiver;
use walship_metrics::{Health, Metrics, ReloadResult};

/// Where the configuration comes from, to rebuild it on reload.
pub struct Sources {
    pub config: PathBuf,
    pub secrets_dir: PathBuf,
    pub server_name: Option<String>,
}

pub async fn run(
    config: DaemonConfig,
    archiver: Archiver,
    sources: Sources,
    metrics: Arc<Metrics>,
    metrics_addr: SocketAddr,
    unready_after_seconds: u64,
) -> Result<()> {
    let health = Arc::new(Health::new(Duration::from_secs(unready_after_seconds)));
    health.set_config_loaded(true);
    let shutdown = CancellationToken::new();

    let listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("--metrics-addr {metrics_addr}: cannot listen"))?;
    info!(addr = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    let server = tokio::spawn(walship_metrics::serve(
        listener,
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    ));

    let daemon = Daemon::new(config, archiver, metrics.clone(), health)?;
    let _reload_watcher = watch_for_reload(&sources)?;
    let reloader = tokio::spawn(reload_loop(
        daemon.clone(),
        sources,
        metrics,
        shutdown.clone(),
    ));
    let signals = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: shutting down"),
                _ = int.recv() => info!("SIGINT: shutting down"),
            }
            shutdown.cancel();
        })
    };
    let result = daemon.run(shutdown.clone()).await;
    shutdown.cancel();
    signals.abort();
    reloader.abort();
    let _ = server.await;
    result?;
    info!("stopped");
    Ok(())
}

/// Set by the file watcher whenever the configuration or a secret may have changed.
fn reload_requested() -> &'static Notify {
    static NOTIFY: OnceLock<Notify> = OnceLock::new();
    NOTIFY.get_or_init(Notify::new)
}

/// Watches the manifest's directory and the secrets directory. Kubernetes updates a
/// mounted ConfigMap or Secret by swapping a `..data` symlink in that directory, so the
/// directory is watched, not the file, and any event there asks for a reload.
fn watch_for_reload(sources: &Sources) -> Result<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let config_dir = sources
        .config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let (config, secrets) = (sources.config.clone(), sources.secrets_dir.clone());
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
                reload_requested().notify_one();
            }
            Ok(_) => {}
            // An overflow or watcher error: reloading is the safe reaction.
            Err(_) => reload_requested().notify_one(),
        }
    })
    .context("starting the configuration watcher")?;
    watcher
        .watch(&config_dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", config_dir.display()))?;
    if sources.secrets_dir.is_dir() {
        watcher
            .watch(&sources.secrets_dir, RecursiveMode::Recursive)
            .with_context(|| format!("watching {}", sources.secrets_dir.display()))?;
    } else {
        warn!(dir = %sources.secrets_dir.display(), "no secrets directory to watch");
    }
    Ok(watcher)
}

/// Rebuilds the archiver from the manifest and secrets after each change. An invalid
/// change is logged and the last good configuration stays in force.
async fn reload_loop(
    daemon: Daemon,
    sources: Sources,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = reload_requested().notified() => {}
        }
        // Kubernetes writes a new secret version in several steps; let them settle so
        // one update is one reload.
        tokio::time::sleep(Duration::from_millis(300)).await;
        match crate::wiring::archiver(
            &sources.config,
            &sources.secrets_dir,
            sources.server_name.as_deref(),
            Some(credential_observer(&metrics)),
        )
        .await
        {
            Ok(wired) => {
                daemon.reconfigure(wired.archiver, wired.max_parallel);
                metrics.config_reloads_total.inc(ReloadResult::Applied);
                info!(max_parallel = wired.max_parallel, "configuration reloaded");
            }
            Err(e) => {
                metrics.config_reloads_total.inc(ReloadResult::Rejected);
                error!("configuration change rejected, keeping the last good one: {e:#}");
            }
        }
    }
}

/// Feeds the credential refresh counters from the store's credential provider.
pub fn credential_observer(metrics: &Arc<Metrics>) -> walship_credentials::RefreshObserver {
    let metrics = metrics.clone();
    Arc::new(move |ok| {
        if ok {
            metrics.credential_refreshes_total.inc();
        } else {
            metrics.credential_refresh_failures_total.inc();
        }
    })
}
