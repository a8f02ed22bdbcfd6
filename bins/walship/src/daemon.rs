//! `walship daemon`: wiring of the daemon, its reload loop (with this binary's wiring as
//! the rebuild), the retention loop, the metrics server and signals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use walship_backup::retention::Policy;
use walship_backup::upkeep::{self, CatalogSummary, Role};
use walship_daemon::{Daemon, DaemonConfig, reload};
use walship_engine::Archiver;
use walship_metrics::{Health, Metrics, RetentionResult};

use crate::wiring::{self, Purpose};

/// The plugin's wait before the next round after one that failed.
const RETENTION_AFTER_ERROR: Duration = Duration::from_secs(300);

/// The retention loop's settings from the command line.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Overrides the manifest's `instanceSidecarConfiguration.retentionPolicyIntervalSeconds`;
    /// `Some(0)` turns the loop off.
    pub interval_seconds: Option<u64>,
    /// Overrides the manifest's `retentionPolicy` (barman's syntax or the plugin's).
    pub policy: Option<Policy>,
}

/// What the daemon serves besides archiving.
pub struct Serving {
    /// `/metrics`, `/healthz` and `/readyz`.
    pub metrics_addr: SocketAddr,
    /// `/readyz` fails after uploads failed this long.
    pub unready_after_seconds: u64,
    /// Wait for PGDATA's archive_status to appear rather than fail without it.
    pub wait_for_pgdata: bool,
    /// CloudNativePG's plugin socket (`walship cnpg instance`).
    pub plugin: Option<crate::cnpg::Plugin>,
}

/// Where the configuration comes from, to rebuild it on reload.
#[derive(Clone)]
pub struct Sources {
    pub source: wiring::Source,
    pub server_name: Option<String>,
}

pub async fn run(
    config: DaemonConfig,
    archiver: Archiver,
    sources: Sources,
    retention: Retention,
    metrics: Arc<Metrics>,
    serving: Serving,
) -> Result<()> {
    let Serving {
        metrics_addr,
        unready_after_seconds,
        wait_for_pgdata,
        plugin,
    } = serving;
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

    let signals = shut_down_on_signals(shutdown.clone());
    if wait_for_pgdata && !wait_for_archive_status(&config.pgdata, &health, &shutdown).await {
        signals.abort();
        let _ = server.await;
        info!("stopped before PostgreSQL's data directory appeared");
        return Ok(());
    }
    let pgdata = config.pgdata.clone();
    // Other stores CloudNativePG's calls name are read ahead as the daemon's own is.
    let read_ahead = crate::stores::ReadAhead {
        dir: config.spool_dir.clone(),
        window: config.prefetch_window,
        max_bytes: config.prefetch_max_bytes,
        metrics: metrics.clone(),
    };
    let daemon = Daemon::new(config, archiver, metrics.clone(), health)?;
    // CloudNativePG's sidecar: the plugin's services on its socket, answered by this
    // daemon. A socket that cannot be served stops the daemon (the pod restarts it).
    let plugin = plugin.map(|plugin| {
        let sidecar = crate::cnpg::Sidecar::new(
            plugin.clone(),
            daemon.clone(),
            metrics.clone(),
            sources.clone(),
            read_ahead.clone(),
        );
        let settings = walship_cnpg::server::Settings {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pgdata: pgdata.clone(),
        };
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let served = walship_cnpg::server::serve(
                &plugin.socket,
                Arc::new(sidecar),
                settings,
                shutdown.clone(),
            )
            .await;
            if let Err(e) = served {
                error!(socket = %plugin.socket.display(), "cannot serve the plugin's socket: {e}");
                shutdown.cancel();
            }
        })
    });
    let retention = (retention.interval_seconds != Some(0)).then(|| {
        tokio::spawn(retention_loop(
            sources.clone(),
            pgdata,
            retention,
            metrics.clone(),
            shutdown.clone(),
        ))
    });
    // Files are watched here; the Kubernetes source watches the API itself.
    let (changed, _reload_watcher) = match &sources.source {
        wiring::Source::Files {
            config,
            secrets_dir,
        } => {
            let changed = Arc::new(Notify::new());
            let watched = reload::Watched {
                config: config.clone(),
                secrets_dir: secrets_dir.clone(),
            };
            let watcher = reload::watch(&watched, changed.clone()).map_err(anyhow::Error::msg)?;
            (changed, Some(watcher))
        }
        wiring::Source::Kube(live) => (live.changed(), None),
    };
    let rebuild = {
        let metrics = metrics.clone();
        move || {
            let (sources, metrics) = (sources.clone(), metrics.clone());
            async move {
                crate::wiring::archiver(
                    &sources.source,
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
    let result = daemon.run(shutdown.clone()).await;
    shutdown.cancel();
    if let Some(plugin) = plugin {
        let _ = plugin.await;
    }
    signals.abort();
    reloader.abort();
    if let Some(retention) = retention {
        retention.abort();
    }
    let _ = server.await;
    result?;
    info!("stopped");
    Ok(())
}

/// Waits until `<pgdata>/pg_wal/archive_status` is a directory (PostgreSQL's first
/// initdb made it), failing `/readyz` meanwhile; `false` when `shutdown` came first.
async fn wait_for_archive_status(
    pgdata: &std::path::Path,
    health: &Health,
    shutdown: &CancellationToken,
) -> bool {
    let status = pgdata.join("pg_wal").join("archive_status");
    if status.is_dir() {
        return true;
    }
    info!(path = %status.display(), "waiting for PostgreSQL's data directory (--wait-for-pgdata)");
    health.set_waiting_for(Some(format!("{} (no initdb yet)", status.display())));
    let mut waited = Duration::ZERO;
    while !status.is_dir() {
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        waited += Duration::from_secs(1);
        if waited.as_secs().is_multiple_of(60) {
            info!(path = %status.display(), waited_seconds = waited.as_secs(), "still waiting for PostgreSQL's data directory");
        }
    }
    health.set_waiting_for(None);
    info!(path = %status.display(), "PostgreSQL's data directory is there: archiving");
    true
}

/// SIGTERM or SIGINT cancels `shutdown` (the daemon's and the sidecars' way to stop).
pub fn shut_down_on_signals(shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
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
}

/// Every interval, one [`upkeep::round`]: the retention policy applied on the primary,
/// then the catalog's figures into the metrics. The first round runs at start, so the
/// backup gauges are right from the first scrapes; each round reads the manifest again,
/// so a reloaded policy or interval applies from the next one.
async fn retention_loop(
    sources: Sources,
    pgdata: PathBuf,
    settings: Retention,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let wait = match retention_round(&sources, &pgdata, &settings, &metrics).await {
            Ok(interval) => interval,
            Err(interval) => interval.min(RETENTION_AFTER_ERROR),
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// One round; the wait until the next, as `Err` when the round failed.
async fn retention_round(
    sources: &Sources,
    pgdata: &std::path::Path,
    settings: &Retention,
    metrics: &Metrics,
) -> Result<Duration, Duration> {
    let target = match wiring::target(
        &sources.source,
        sources.server_name.as_deref(),
        None,
        walship_store::RetryPolicy::default(),
        Purpose::Backups,
    )
    .await
    {
        Ok(target) => target,
        Err(e) => {
            error!("retention: {e:#}");
            metrics.retention_runs_total.inc(RetentionResult::Failed);
            return Err(RETENTION_AFTER_ERROR);
        }
    };
    let interval = Duration::from_secs(settings.interval_seconds.unwrap_or_else(|| {
        target
            .doc
            .spec
            .instance_sidecar_configuration
            .as_ref()
            .map_or(
                walship_config::DEFAULT_RETENTION_POLICY_INTERVAL_SECONDS,
                |s| s.retention_policy_interval_seconds(),
            )
            .into()
    }));
    let policy = match (settings.policy, target.doc.spec.retention_policy.as_deref()) {
        (Some(policy), _) => Some(policy),
        // The manifest's was validated when it was loaded.
        (None, Some(text)) => Policy::parse(text).ok(),
        (None, None) => None,
    };
    // A standby or a server in recovery reads the catalog but deletes nothing: only
    // the primary applies retention, as with the plugin.
    let in_recovery = ["standby.signal", "recovery.signal"]
        .iter()
        .any(|signal| pgdata.join(signal).exists());
    let role = if in_recovery {
        Role::Standby
    } else {
        Role::Primary
    };
    metrics.retention_recovery_window_seconds.set(
        policy
            .and_then(|p| p.window())
            .map_or(0, |w| w.num_seconds()),
    );
    let now = chrono::Local::now().fixed_offset();
    let applies = policy.is_some() && role == Role::Primary;
    match upkeep::round(
        &target.store,
        &target.layout,
        &target.server,
        policy,
        role,
        now,
    )
    .await
    {
        Ok(round) => {
            if round.deleted_backups + round.deleted_wal > 0 {
                info!(
                    "retention ({}): deleted {} backups and {} WAL files",
                    policy.map(|p| p.to_string()).unwrap_or_default(),
                    round.deleted_backups,
                    round.deleted_wal
                );
            }
            count_deleted(metrics, round.deleted_backups, round.deleted_wal);
            set_catalog(metrics, &round.summary);
            if let wiring::Source::Kube(live) = &sources.source {
                live.publish(&round.summary).await;
                // The primary, with the catalog read whole: Backup resources whose
                // backup is gone go too, as with the plugin.
                if role == Role::Primary {
                    live.delete_backups_not_in_catalog(&round.ids).await;
                }
            }
            metrics.retention_runs_total.inc(if applies {
                RetentionResult::Applied
            } else {
                RetentionResult::Skipped
            });
            Ok(interval)
        }
        Err(e) => {
            warn!(
                "retention: {e} (after deleting {} backups and {} WAL files; the next round \
                 goes on)",
                e.deleted_backups, e.deleted_wal
            );
            count_deleted(metrics, e.deleted_backups, e.deleted_wal);
            metrics.retention_runs_total.inc(RetentionResult::Failed);
            Err(interval)
        }
    }
}

fn count_deleted(metrics: &Metrics, backups: usize, wal: usize) {
    metrics
        .retention_deleted_backups_total
        .inc_by(backups as u64);
    metrics.retention_deleted_wal_total.inc_by(wal as u64);
}

/// The catalog's figures as the gauges export them: unix seconds, 0 for none (as the
/// plugin's gauges).
pub fn set_catalog(metrics: &Metrics, summary: &CatalogSummary) {
    let seconds = |t: Option<chrono::DateTime<chrono::FixedOffset>>| {
        t.map_or(0.0, |t| t.timestamp_micros() as f64 / 1e6)
    };
    metrics
        .first_recoverability_point_seconds
        .set(seconds(summary.first_recoverability_point));
    metrics
        .last_available_backup_timestamp_seconds
        .set(seconds(summary.last_successful_backup));
    metrics
        .last_failed_backup_timestamp_seconds
        .set(seconds(summary.last_failed_backup));
    metrics
        .last_backup_duration_seconds
        .set(summary.last_backup_seconds.unwrap_or(0.0));
    metrics
        .last_backup_size_bytes
        .set(i64::try_from(summary.last_backup_bytes.unwrap_or(0)).unwrap_or(i64::MAX));
    metrics
        .backups_available
        .set(i64::try_from(summary.done_backups).unwrap_or(i64::MAX));
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
