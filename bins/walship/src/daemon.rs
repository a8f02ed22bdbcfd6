//! `walship daemon`: wiring of the engine's daemon, the metrics server and signals.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use tracing::info;
use walship_engine::Archiver;
use walship_engine::daemon::{Daemon, DaemonConfig};
use walship_metrics::{Health, Metrics};

pub async fn run(
    config: DaemonConfig,
    archiver: Archiver,
    metrics_addr: SocketAddr,
    unready_after_seconds: u64,
) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
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

    let daemon = Daemon::new(config, archiver, metrics, health)?;
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
    let _ = server.await;
    result?;
    info!("stopped");
    Ok(())
}
