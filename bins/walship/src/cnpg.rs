//! `walship cnpg instance`: the daemon as the Barman Cloud plugin's instance sidecar.
//! [`Sidecar`] is what each CNPG-I call does here: Archive is the daemon's push (at
//! once when the segment was shipped from `archive_status` already), Restore its fetch
//! through the prefetch spool (one file, no read-ahead, under pg_rewind), Backup the
//! base backup `walship backup` takes, Collect the daemon's own metrics.
//!
//! The ObjectStore comes from `--config` and `--secrets-dir`, as for every command: a
//! call whose Cluster names another ObjectStore or server name is refused with
//! FAILED_PRECONDITION, naming both, rather than served from the wrong archive.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use walship_cnpg::PLUGIN_NAME;
use walship_cnpg::cluster::StoreRef;
use walship_cnpg::sidecar::{ArchiveCall, BackupCall, BackupDone, CallError, RestoreCall};
use walship_daemon::Daemon;
use walship_daemon::socket::{FetchReply, PushReply};
use walship_engine::FetchOutcome;
use walship_metrics::Metrics;
use walship_store::RetryPolicy;

use crate::backups::{Outcome, backup_outcome, take_backup};
use crate::cli::BackupArgs;
use crate::daemon::Sources;
use crate::wiring::{self, Purpose, Source};

/// Where the plugin serves and who it is.
#[derive(Debug, Clone)]
pub struct Plugin {
    /// `<plugins-dir>/barman-cloud.cloudnative-pg.io`.
    pub socket: PathBuf,
    /// `POD_NAME`.
    pub pod: String,
    /// The manifest's `metadata.name`: the ObjectStore Clusters name.
    pub store: String,
    /// The server name WAL and backups go under.
    pub server: String,
}

/// The CNPG-I calls, answered by the daemon.
pub struct Sidecar {
    plugin: Plugin,
    daemon: Daemon,
    metrics: Arc<Metrics>,
    sources: Sources,
}

impl Sidecar {
    pub fn new(plugin: Plugin, daemon: Daemon, metrics: Arc<Metrics>, sources: Sources) -> Sidecar {
        Sidecar {
            plugin,
            daemon,
            metrics,
            sources,
        }
    }

    fn check_store(&self, wanted: Option<&StoreRef>, what: &str) -> Result<(), CallError> {
        match &self.sources.source {
            Source::Files { config, .. } => check_store(
                &self.plugin.store,
                &self.plugin.server,
                &config.display().to_string(),
                wanted,
                what,
            ),
            // What cannot be read from the API (a missing ObjectStore or Secret, a
            // permission the Role lacks) fails the call, naming the object.
            Source::Kube(live) => {
                let resolved = live.current().map_err(CallError::FailedPrecondition)?;
                check_store(
                    &resolved.store,
                    &resolved.server,
                    "the Kubernetes API",
                    wanted,
                    what,
                )
            }
        }
    }
}

impl Sidecar {
    async fn publish_catalog(&self, target: &wiring::Target) {
        let catalog = walship_backup::catalog::Catalog::new(
            target.store.clone(),
            &target.layout,
            &target.server,
        );
        match catalog.list().await {
            Ok(listing) => {
                let summary = walship_backup::upkeep::CatalogSummary::of(&listing);
                crate::daemon::set_catalog(&self.metrics, &summary);
                if let Source::Kube(live) = &self.sources.source {
                    live.publish(&summary).await;
                }
            }
            Err(e) => tracing::warn!("after the backup, the catalog cannot be read: {e}"),
        }
    }
}

/// Refuses a call for another ObjectStore or server name than the one this sidecar
/// serves, naming both.
fn check_store(
    store: &str,
    server: &str,
    from: &str,
    wanted: Option<&StoreRef>,
    what: &str,
) -> Result<(), CallError> {
    let Some(wanted) = wanted else {
        return Err(CallError::FailedPrecondition(format!(
            "the Cluster names no ObjectStore to {what} with: set \
             parameters.barmanObjectName in its {PLUGIN_NAME} plugin entry"
        )));
    };
    if wanted.object_store != store || wanted.server_name != server {
        return Err(CallError::FailedPrecondition(format!(
            "the Cluster asks to {what} with ObjectStore {:?}, server name {:?}; this \
             sidecar serves ObjectStore {store:?}, server name {server:?} (from {from})",
            wanted.object_store, wanted.server_name,
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl walship_cnpg::sidecar::Sidecar for Sidecar {
    async fn archive(&self, call: ArchiveCall) -> Result<(), CallError> {
        self.check_store(call.cluster.archive.as_ref(), "archive WAL")?;
        if call.check_empty_archive == Some(true) {
            let checked = walship_daemon::client::check(
                &self.daemon.archiver(),
                true,
                None,
                Duration::from_secs(60),
            )
            .await;
            if !checked.usable {
                return Err(CallError::FailedPrecondition(
                    checked
                        .problem
                        .unwrap_or_else(|| "the WAL archive is not empty".to_owned()),
                ));
            }
        }
        match self.daemon.request_push(&call.path).await {
            PushReply::Archived { .. } => Ok(()),
            PushReply::Failed(reason) => Err(CallError::Unavailable(reason)),
            PushReply::NotMine(reason) => Err(CallError::InvalidArgument(reason)),
        }
    }

    async fn restore(&self, call: RestoreCall) -> Result<(), CallError> {
        self.check_store(call.cluster.restore_store(&self.plugin.pod), "restore WAL")?;
        if call.rewind {
            // pg_rewind walks WAL backwards: this file only, nothing read ahead.
            return fetch_one(&self.daemon.archiver(), &call.name, &call.dest).await;
        }
        // The plugin's end-of-WAL rule: where a standby could stream instead, a file the
        // read-ahead already found missing is answered OUT_OF_RANGE once, so PostgreSQL
        // turns to streaming at once instead of asking the archive again; the next ask
        // for it goes to the store. Scoped by name (a timeline change cannot trip it),
        // never under pg_rewind, never where nothing can be streamed.
        if call.cluster.can_stream(&self.plugin.pod) && self.daemon.take_known_missing(&call.name) {
            return Err(CallError::OutOfRange(format!(
                "end of WAL reached: {} was not in the archive when read ahead",
                call.name
            )));
        }
        match self.daemon.request_fetch(&call.name, &call.dest).await {
            FetchReply::Restored { .. } => Ok(()),
            FetchReply::NotFound => Err(CallError::NotFound(format!(
                "{} is not in the archive",
                call.name
            ))),
            // Never NOT_FOUND for a failure: recovery would end early at a gap.
            FetchReply::Failed(reason) => Err(CallError::Unavailable(reason)),
        }
    }

    async fn backup(&self, call: BackupCall) -> Result<BackupDone, CallError> {
        self.check_store(call.cluster.archive.as_ref(), "take a backup")?;
        let target = wiring::target(
            &self.sources.source,
            self.sources.server_name.as_deref(),
            None,
            RetryPolicy::default(),
            Purpose::Backups,
        )
        .await
        .map_err(|e| CallError::FailedPrecondition(format!("{e:#}")))?;
        let args = BackupArgs {
            name: Some(call.backup_name.clone()),
            immediate_checkpoint: false,
            jobs: None,
            compression: None,
            max_archive_size: None,
            host: None,
            port: None,
            user: None,
            dbname: None,
            archive_stall_seconds: 120,
        };
        let taken = take_backup(&target, &args, CancellationToken::new())
            .await
            .map_err(|e| CallError::FailedPrecondition(format!("{e:#}")))?;
        // Done or failed, the catalog changed: its figures go to the metrics and, from
        // the Kubernetes API, to the ObjectStore's status, as the plugin writes them.
        self.publish_catalog(&target).await;
        let taken = taken.map_err(|e| match backup_outcome(&e) {
            Outcome::Unreachable => CallError::Unavailable(e.to_string()),
            _ => CallError::Internal(e.to_string()),
        })?;
        let info = &taken.info;
        let seconds =
            |t: &Option<walship_backup::info::InfoTime>| t.as_ref().map_or(0, |t| t.0.timestamp());
        Ok(BackupDone {
            backup_id: taken.id.clone(),
            backup_name: info.backup_name.clone().unwrap_or(call.backup_name),
            started_at: seconds(&info.begin_time),
            stopped_at: seconds(&info.end_time),
            begin_wal: info.begin_wal.clone().unwrap_or_default(),
            end_wal: info.end_wal.clone().unwrap_or_default(),
            begin_lsn: info.begin_xlog.clone().unwrap_or_default(),
            end_lsn: info.end_xlog.clone().unwrap_or_default(),
            timeline: info.timeline.unwrap_or_default(),
            version: info.version.unwrap_or_default(),
            backup_label: Vec::new(),
            tablespace_map: Vec::new(),
        })
    }

    /// Ready whenever the socket serves, as the plugin's sidecar answers. Not the
    /// daemon's `/readyz`: that fails while the store cannot be reached, and CloudNativePG
    /// probes before every call, Collect included; the metrics an alert needs must not
    /// vanish exactly while the store is down. Each call says what fails instead
    /// (UNAVAILABLE).
    fn ready(&self) -> bool {
        true
    }

    fn metrics(&self) -> Vec<walship_metrics::Family> {
        self.metrics.snapshot()
    }

    fn pod_name(&self) -> String {
        self.plugin.pod.clone()
    }
}

/// `walship cnpg restore`: the restore job's sidecar, until SIGTERM.
pub async fn run_restore_job(
    cli: &crate::cli::Cli,
    args: &crate::cli::CnpgRestoreArgs,
) -> anyhow::Result<crate::Ending> {
    let server_name = cli.server_name.clone().or(args.cluster_name.clone());
    let source = wiring::Source::files(&cli.config, &cli.secrets_dir);
    let target = wiring::target(
        &source,
        server_name.as_deref(),
        None,
        RetryPolicy::default(),
        Purpose::Backups,
    )
    .await?;
    let archiver = wiring::archiver(
        &source,
        server_name.as_deref(),
        None,
        RetryPolicy::default(),
    )
    .await?
    .archiver;
    let plugin = Plugin {
        socket: args.plugins.plugins_dir.join(PLUGIN_NAME),
        pod: args.pod_name.clone(),
        store: target.doc.metadata.name.clone(),
        server: target.server.clone(),
    };
    let job = RestoreJob {
        plugin: plugin.clone(),
        target,
        archiver,
        pgdata: args.pgdata.clone(),
        wal_dir: args.wal_dir.clone(),
        restore_command: args.restore_command.clone(),
        jobs: args.jobs.max(1) as usize,
        source,
    };
    let shutdown = CancellationToken::new();
    let signals = crate::daemon::shut_down_on_signals(shutdown.clone());
    let settings = walship_cnpg::server::Settings {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pgdata: args.pgdata.clone(),
    };
    let served =
        walship_cnpg::server::serve_restore_job(&plugin.socket, Arc::new(job), settings, shutdown)
            .await;
    signals.abort();
    Ok(match served {
        Ok(()) => crate::Ending::DaemonStopped,
        Err(e) => {
            tracing::error!(socket = %plugin.socket.display(), "cannot serve the plugin's socket: {e}");
            crate::Ending::DaemonFailed
        }
    })
}

/// The restore job's calls: the data directory from the recovery store's catalog,
/// then WAL from the same store.
struct RestoreJob {
    plugin: Plugin,
    target: wiring::Target,
    archiver: walship_engine::Archiver,
    pgdata: PathBuf,
    wal_dir: PathBuf,
    restore_command: String,
    jobs: usize,
    source: wiring::Source,
}

impl RestoreJob {
    fn check_store(&self, wanted: Option<&StoreRef>, what: &str) -> Result<(), CallError> {
        check_store(
            &self.plugin.store,
            &self.plugin.server,
            "the files it was given",
            wanted,
            what,
        )
    }

    /// Moves pg_wal's content to `wal_dir` and links pg_wal to it, as the plugin does
    /// for a Cluster with `spec.walStorage`.
    fn link_wal_dir(&self) -> std::io::Result<()> {
        let pg_wal = self.pgdata.join("pg_wal");
        if std::fs::read_link(&pg_wal).is_ok_and(|to| to == self.wal_dir) {
            return Ok(());
        }
        std::fs::create_dir_all(&self.wal_dir)?;
        for entry in std::fs::read_dir(&pg_wal)? {
            let entry = entry?;
            std::fs::rename(entry.path(), self.wal_dir.join(entry.file_name()))?;
        }
        std::fs::remove_dir(&pg_wal)?;
        std::os::unix::fs::symlink(&self.wal_dir, &pg_wal)
    }
}

#[tonic::async_trait]
impl walship_cnpg::sidecar::Recovery for RestoreJob {
    async fn restore_job(
        &self,
        call: walship_cnpg::sidecar::RestoreJobCall,
    ) -> Result<walship_cnpg::sidecar::RestoreJobDone, CallError> {
        use walship_backup::catalog::{Catalog, RecoveryPick, pick_for_recovery};
        self.check_store(call.cluster.recovery.as_ref(), "recover")?;
        // The new cluster's own archive must be empty when the operator asks; this
        // sidecar can check it only when it is the store it serves.
        if call.check_empty_archive == Some(true) {
            match &call.cluster.archive {
                Some(own) if own.object_store == self.plugin.store => {
                    let archiver = wiring::archiver(
                        &self.source,
                        Some(&own.server_name),
                        None,
                        RetryPolicy::default(),
                    )
                    .await
                    .map_err(|e| CallError::FailedPrecondition(format!("{e:#}")))?
                    .archiver;
                    let checked = walship_daemon::client::check(
                        &archiver,
                        true,
                        None,
                        Duration::from_secs(60),
                    )
                    .await;
                    if !checked.usable {
                        return Err(CallError::FailedPrecondition(
                            checked.problem.unwrap_or_else(|| {
                                "the new cluster's WAL archive is not empty".to_owned()
                            }),
                        ));
                    }
                }
                Some(own) => tracing::warn!(
                    "the new cluster archives to ObjectStore {:?}, which this sidecar does \
                     not serve: its emptiness is not checked",
                    own.object_store
                ),
                None => {}
            }
        }
        let catalog = Catalog::new(
            self.target.store.clone(),
            &self.target.layout,
            &self.target.server,
        );
        let listing = catalog
            .list()
            .await
            .map_err(|e| CallError::Unavailable(e.to_string()))?;
        let target = call.cluster.recovery_target.clone().unwrap_or_default();
        let pick = RecoveryPick {
            backup_id: target.backup_id,
            time: target.target_time,
            lsn: target.target_lsn,
            timeline: target.target_tli,
        };
        let entry = pick_for_recovery(&listing.backups, &pick)
            .map_err(CallError::FailedPrecondition)?
            .clone();
        tracing::info!(backup = %entry.id, "restoring into {}", self.pgdata.display());
        // The backup's first WAL must be in the archive, or recovery cannot even start.
        let begin_wal = entry.info.begin_wal.clone().unwrap_or_default();
        // Fetched beside PGDATA (the root filesystem is read-only), then removed.
        let probe = self
            .pgdata
            .with_file_name(format!(".walship-probe-{begin_wal}"));
        let fetched = fetch_one(&self.archiver, &begin_wal, &probe).await;
        let _ = std::fs::remove_file(&probe);
        match fetched {
            Ok(()) => {}
            Err(CallError::NotFound(_)) => {
                return Err(CallError::FailedPrecondition(format!(
                    "backup {}: its first WAL file {begin_wal} is not in the archive",
                    entry.id
                )));
            }
            Err(e) => return Err(e),
        }
        let options = walship_backup::restore::RestoreOptions {
            tablespace_locations: Default::default(),
            jobs: self.jobs,
        };
        walship_backup::restore::restore(
            self.target.store.clone(),
            &catalog,
            &entry,
            &self.pgdata,
            &options,
            Arc::new(walship_backup::restore::RestoreProgress::default()),
            CancellationToken::new(),
        )
        .await
        .map_err(|e| match e {
            walship_backup::restore::RestoreError::Store(s) => {
                CallError::Unavailable(s.to_string())
            }
            other => CallError::Internal(other.to_string()),
        })?;
        if call.cluster.wal_storage {
            self.link_wal_dir()
                .map_err(|e| CallError::Internal(format!("linking pg_wal: {e}")))?;
        }
        Ok(walship_cnpg::sidecar::RestoreJobDone {
            restore_config: format!(
                "recovery_target_action = promote\nrestore_command = '{}'\n",
                self.restore_command.replace('\'', "''")
            ),
            envs: Vec::new(),
        })
    }

    async fn restore(&self, call: RestoreCall) -> Result<(), CallError> {
        self.check_store(call.cluster.restore_store(&self.plugin.pod), "restore WAL")?;
        fetch_one(&self.archiver, &call.name, &call.dest).await
    }
}

/// One file fetched from the store itself, no read-ahead: NOT_FOUND only when the
/// archive has no such file, UNAVAILABLE when the store failed, INTERNAL otherwise (a
/// corrupt object, a local write).
async fn fetch_one(
    archiver: &walship_engine::Archiver,
    name: &str,
    dest: &std::path::Path,
) -> Result<(), CallError> {
    match archiver.fetch(name, dest).await {
        Ok(FetchOutcome::Restored { .. }) => Ok(()),
        Ok(FetchOutcome::NotFound) => {
            Err(CallError::NotFound(format!("{name} is not in the archive")))
        }
        Err(e) if e.is_store_failure() => Err(CallError::Unavailable(e.to_string())),
        Err(e) => Err(CallError::Internal(e.to_string())),
    }
}
