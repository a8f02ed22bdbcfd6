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
use walship_metrics::{Health, Metrics};
use walship_store::RetryPolicy;

use crate::backups::{Outcome, backup_outcome, take_backup};
use crate::cli::BackupArgs;
use crate::daemon::Sources;
use crate::wiring::{self, Purpose};

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
    health: Arc<Health>,
    sources: Sources,
}

impl Sidecar {
    pub fn new(
        plugin: Plugin,
        daemon: Daemon,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        sources: Sources,
    ) -> Sidecar {
        Sidecar {
            plugin,
            daemon,
            metrics,
            health,
            sources,
        }
    }

    /// Refuses a call for another ObjectStore or server than this sidecar's.
    fn check_store(&self, wanted: Option<&StoreRef>, what: &str) -> Result<(), CallError> {
        let (store, server) = (&self.plugin.store, &self.plugin.server);
        let Some(wanted) = wanted else {
            return Err(CallError::FailedPrecondition(format!(
                "the Cluster names no ObjectStore to {what} with: set \
                 parameters.barmanObjectName in its {PLUGIN_NAME} plugin entry"
            )));
        };
        if &wanted.object_store != store || &wanted.server_name != server {
            return Err(CallError::FailedPrecondition(format!(
                "the Cluster asks to {what} with ObjectStore {:?}, server name {:?}; this \
                 sidecar serves ObjectStore {store:?}, server name {server:?} (from {})",
                wanted.object_store,
                wanted.server_name,
                self.sources.config.display()
            )));
        }
        Ok(())
    }
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
            return match self.daemon.archiver().fetch(&call.name, &call.dest).await {
                Ok(FetchOutcome::Restored { .. }) => Ok(()),
                Ok(FetchOutcome::NotFound) => Err(CallError::NotFound(format!(
                    "{} is not in the archive",
                    call.name
                ))),
                Err(e) if e.is_store_failure() => Err(CallError::Unavailable(e.to_string())),
                Err(e) => Err(CallError::Internal(e.to_string())),
            };
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
            &self.sources.config,
            &self.sources.secrets_dir,
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

    fn ready(&self) -> bool {
        self.health.readiness().is_ok()
    }

    fn metrics(&self) -> Vec<walship_metrics::Family> {
        self.metrics.snapshot()
    }

    fn pod_name(&self) -> String {
        self.plugin.pod.clone()
    }
}
