//! `walship daemon`: wiring of the daemon, its reload loop (with this binary's wiring as
//! the rebuild), the metrics server and signals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::info;
use walship_daemon::{Daemon, DaemonConfig, reload};
use walship_engine::Archiver;
use walship_metrics::{Health, Metrics};

/// Where the configuration comes from, to rebuild it on reload.
#[derive(Clone)]
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
    let changed = Arc::new(Notify::new());
    let watched = reload::Watched {
        config: sources.config.clone(),
        secrets_dir: sources.secrets_dir.clone(),
    };
    let _reload_watcher = reload::watch(&watched, changed.clone()).map_err(anyhow::Error::msg)?;
    let rebuild = {
        let metrics = metrics.clone();
        move || {
            let (sources, metrics) = (sources.clone(), metrics.clone());
            async move {
                crate::wiring::archiver(
                    &sources.config,
                    &sources.secrets_dir,
                    sources.server_name.as_deref(),
                    Some(credential_observer(&metrics)),
                    walship_store::RetryPolicy::default(),
                )
                .await
                .map(|wired| reload::Rebuilt {
                    archiver: wired.archiver,
                    max_parallel: wired.max_parallel,
                })
                .map_err(|e| format!("{e:#}"))
            }
        }
    };
    let reloader = tokio::spawn(reload::reload_loop(
        daemon.clone(),
        changed,
        rebuild,
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
