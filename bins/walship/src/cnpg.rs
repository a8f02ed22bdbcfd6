//! `walship cnpg instance`: the daemon as the Barman Cloud plugin's instance sidecar.
//! [`Sidecar`] is what each CNPG-I call does here: Archive is the daemon's push (at
//! once when the segment was shipped from `archive_status` already), Restore its fetch
//! through the prefetch spool (one file, no read-ahead, under pg_rewind), Backup the
//! base backup `walship backup` takes, Collect the daemon's own metrics.
//!
//! The daemon ships to one store: the pod's own, from the Kubernetes API (or from
//! `--config` and `--secrets-dir`). A call naming another ObjectStore is served from
//! [`Stores`] under Kubernetes (a replica cluster's source, a Backup's own
//! `barmanObjectName`), and refused with FAILED_PRECONDITION, naming both, from files.
//! `walship cnpg restore` (the restore job) serves every call from [`Stores`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use walship_backup::take::{BeforeDone, Unfinished};
use walship_cnpg::PLUGIN_NAME;
use walship_cnpg::cluster::StoreRef;
use walship_cnpg::sidecar::{ArchiveCall, BackupCall, BackupDone, CallError, RestoreCall};
use walship_daemon::Daemon;
use walship_daemon::socket::{FetchReply, PushReply};
use walship_engine::{Archiver, FetchOutcome};
use walship_metrics::Metrics;

use crate::backups::{Outcome, backup_outcome, take_backup};
use crate::cli::BackupArgs;
use crate::daemon::Sources;
use crate::stores::{ReadAhead, Served, Stores};
use crate::wiring::{self, Purpose, Source};

/// Where the plugin serves and who it is.
#[derive(Debug, Clone)]
pub struct Plugin {
    /// `<plugins-dir>/barman-cloud.cloudnative-pg.io`.
    pub socket: PathBuf,
    /// `POD_NAME`.
    pub pod: String,
    /// The manifest's `metadata.name`: the ObjectStore Clusters name (from files).
    pub store: String,
    /// The server name WAL and backups go under (from files).
    pub server: String,
}

/// The CNPG-I calls, answered by the daemon.
pub struct Sidecar {
    plugin: Plugin,
    daemon: Daemon,
    metrics: Arc<Metrics>,
    sources: Sources,
    /// The stores besides the daemon's (from the Kubernetes API only).
    others: Option<Stores>,
    /// How WAL is read ahead from other stores; its directory (the daemon's spool) is
    /// also where WAL copied to another store passes through.
    read_ahead: ReadAhead,
}

/// Which store a call is served from.
enum Which {
    /// The daemon's.
    Own,
    /// Another ObjectStore the call names.
    Other(Arc<Served>),
}

impl Sidecar {
    pub fn new(
        plugin: Plugin,
        daemon: Daemon,
        metrics: Arc<Metrics>,
        sources: Sources,
        read_ahead: ReadAhead,
    ) -> Sidecar {
        let others = match &sources.source {
            Source::Kube(live) => Some(Stores::kube(live.kube().clone(), Some(read_ahead.clone()))),
            Source::Files { .. } => None,
        };
        Sidecar {
            plugin,
            daemon,
            metrics,
            sources,
            others,
            read_ahead,
        }
    }

    /// The store the daemon ships to, and where that was read.
    fn own(&self) -> Result<(StoreRef, String), CallError> {
        match &self.sources.source {
            Source::Files { config, .. } => Ok((
                StoreRef {
                    object_store: self.plugin.store.clone(),
                    server_name: self.plugin.server.clone(),
                },
                config.display().to_string(),
            )),
            // What cannot be read from the API (a missing ObjectStore or Secret, a
            // permission the Role lacks) fails the call, naming the object.
            Source::Kube(live) => {
                let resolved = live.current().map_err(CallError::FailedPrecondition)?;
                Ok((
                    StoreRef {
                        object_store: resolved.store.clone(),
                        server_name: resolved.server.clone(),
                    },
                    "the Kubernetes API".to_owned(),
                ))
            }
        }
    }

    /// The daemon's store when `wanted` is it; otherwise another store (under
    /// Kubernetes), or FAILED_PRECONDITION naming both.
    async fn which(&self, wanted: Option<&StoreRef>, what: &str) -> Result<Which, CallError> {
        let (own, from) = self.own()?;
        let wanted = wanted.ok_or_else(|| no_store(what))?;
        if *wanted == own {
            return Ok(Which::Own);
        }
        match &self.others {
            Some(others) => Ok(Which::Other(others.get(Some(wanted), what).await?)),
            None => check_store(&own, &from, wanted, what).map(|()| Which::Own),
        }
    }

    /// The catalog's figures after a backup: to the metrics for the daemon's store, and
    /// from the Kubernetes API to the ObjectStore's status, as the plugin writes them.
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

/// After a backup to another store than the archive: that store's retention policy
/// applied when the backup is DONE, then its figures to its own status (the gauges
/// stay the archive's). The backups a cluster sends there are all that is written to
/// it, so the pod that took one applies the policy, as the primary applies the
/// archive's; nothing runs in between, when nothing there changes but the clock.
async fn upkeep_other(served: &Served, done: bool) {
    use walship_backup::retention::Policy;
    use walship_backup::upkeep::{Role, round};
    let target = &served.target;
    let policy = target
        .doc
        .spec
        .retention_policy
        .as_deref()
        .filter(|_| done)
        .and_then(|text| Policy::parse(text).ok());
    let now = chrono::Local::now().fixed_offset();
    let name = &target.doc.metadata.name;
    match round(
        &target.store,
        &target.layout,
        &target.server,
        policy,
        Role::Primary,
        now,
    )
    .await
    {
        Ok(round) => {
            if round.deleted_backups + round.deleted_wal > 0 {
                tracing::info!(
                    "retention of ObjectStore {name:?} ({}): deleted {} backups and {} WAL \
                     files",
                    policy.map(|p| p.to_string()).unwrap_or_default(),
                    round.deleted_backups,
                    round.deleted_wal
                );
            }
            if let Some(live) = &served.live {
                live.publish(&round.summary).await;
            }
        }
        Err(e) => tracing::warn!(
            "retention of ObjectStore {name:?}: {e} (after deleting {} backups and {} WAL \
             files; the next backup there tries again)",
            e.deleted_backups,
            e.deleted_wal
        ),
    }
}

/// The error of a call whose Cluster names no store for it.
pub fn no_store(what: &str) -> CallError {
    CallError::FailedPrecondition(format!(
        "the Cluster names no ObjectStore to {what} with: set \
         parameters.barmanObjectName in its {PLUGIN_NAME} plugin entry"
    ))
}

/// Refuses a call for another ObjectStore or server name than `served`, naming both.
pub fn check_store(
    served: &StoreRef,
    from: &str,
    wanted: &StoreRef,
    what: &str,
) -> Result<(), CallError> {
    if wanted != served {
        return Err(CallError::FailedPrecondition(format!(
            "the Cluster asks to {what} with ObjectStore {:?}, server name {:?}; this \
             sidecar serves ObjectStore {:?}, server name {:?} (from {from})",
            wanted.object_store, wanted.server_name, served.object_store, served.server_name,
        )));
    }
    Ok(())
}

/// The store a Backup goes to: its own `barmanObjectName` parameter (and `serverName`,
/// else the archive's server name) when it has one, else the Cluster's archive.
fn backup_store(call: &BackupCall) -> Option<StoreRef> {
    match call.parameters.get("barmanObjectName") {
        Some(store) if !store.is_empty() => Some(StoreRef {
            object_store: store.clone(),
            server_name: call
                .parameters
                .get("serverName")
                .filter(|s| !s.is_empty())
                .cloned()
                .or_else(|| call.cluster.archive.as_ref().map(|a| a.server_name.clone()))
                .unwrap_or_else(|| call.cluster.cluster_name.clone()),
        }),
        _ => call.cluster.archive.clone(),
    }
}

/// Copies the WAL a backup needs, from its first segment to its last (and its
/// timeline's history), from the archive `from` to `to`, passing each file through
/// `scratch`: a backup in a store that is not the WAL archive is then restorable from
/// that store alone. Copies are create-only: an identical copy already there is fine,
/// a different one fails the backup.
fn copy_wal(from: Archiver, to: Archiver, scratch: PathBuf) -> BeforeDone {
    BeforeDone(Arc::new(move |info| {
        let (from, to, scratch) = (from.clone(), to.clone(), scratch.clone());
        Box::pin(async move {
            let names = wal_needed(&info).map_err(|message| Unfinished {
                message,
                store: None,
            })?;
            // A directory of this copy's own: no other copy removes it under it.
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = scratch.join(format!(".walship-copy-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| Unfinished {
                message: format!("cannot create {}: {e}", dir.display()),
                store: None,
            })?;
            let copied = copy_files(&from, &to, &dir, &names).await;
            let _ = std::fs::remove_dir_all(&dir);
            copied
        })
    }))
}

/// The names [`copy_wal`] copies: the timeline's history (optional), then every
/// segment from the backup's begin WAL to its end WAL.
fn wal_needed(info: &walship_backup::BackupInfo) -> Result<Vec<(String, bool)>, String> {
    use walship_wal::WalName;
    let size = info.xlog_segment_size.unwrap_or(16 << 20);
    let parse = |what: &str, name: &Option<String>| {
        let name = name.as_deref().unwrap_or_default();
        WalName::parse(name)
            .ok()
            .filter(|n| n.is_segment())
            .ok_or_else(|| format!("the backup's {what} WAL {name:?} is not a segment name"))
    };
    let begin = parse("begin", &info.begin_wal)?;
    let end = parse("end", &info.end_wal)?;
    if begin.timeline() != end.timeline() {
        return Err(format!(
            "the backup's WAL spans timelines {} to {}: it cannot be copied to another store",
            begin.timeline(),
            end.timeline()
        ));
    }
    let mut names = Vec::new();
    if begin.timeline() > 1 {
        names.push((format!("{:08X}.history", begin.timeline()), false));
    }
    let number = |n: &WalName| {
        n.segment_number(size)
            .ok_or_else(|| format!("{n}: not a segment of {size}-byte segments"))
    };
    let (first, last) = (number(&begin)?, number(&end)?);
    if last < first {
        return Err(format!(
            "the backup's end WAL {end} precedes its begin WAL {begin}"
        ));
    }
    for n in first..=last {
        let name = WalName::from_segment_number(begin.timeline(), n, size)
            .ok_or_else(|| format!("no segment {n} of timeline {}", begin.timeline()))?;
        names.push((name.to_string(), true));
    }
    Ok(names)
}

/// Fetches each `(name, required)` from `from` into `dir` and pushes it to `to`.
async fn copy_files(
    from: &Archiver,
    to: &Archiver,
    dir: &std::path::Path,
    names: &[(String, bool)],
) -> Result<(), Unfinished> {
    for (name, required) in names {
        let path = dir.join(name);
        match from.fetch(name, &path).await {
            Ok(FetchOutcome::Restored { .. }) => {}
            Ok(FetchOutcome::NotFound) if !required => continue,
            Ok(FetchOutcome::NotFound) => {
                return Err(Unfinished {
                    message: format!("{name} is not in the WAL archive"),
                    store: None,
                });
            }
            Err(e) => {
                return Err(Unfinished {
                    store: match &e {
                        walship_engine::FetchError::Store { source, .. } => Some(source.kind()),
                        _ => None,
                    },
                    message: format!("reading from the WAL archive: {e}"),
                });
            }
        }
        let pushed = to.push(&path).await;
        let _ = std::fs::remove_file(&path);
        if let Err(e) = pushed {
            return Err(Unfinished {
                store: match &e {
                    walship_engine::PushError::Store { source, .. } => Some(source.kind()),
                    _ => None,
                },
                message: format!("copying to the backup's store: {e}"),
            });
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl walship_cnpg::sidecar::Sidecar for Sidecar {
    async fn archive(&self, call: ArchiveCall) -> Result<(), CallError> {
        // WAL goes where the daemon ships it, nowhere else.
        let (own, from) = self.own()?;
        let wanted = call.cluster.archive.as_ref();
        check_store(
            &own,
            &from,
            wanted.ok_or_else(|| no_store("archive WAL"))?,
            "archive WAL",
        )?;
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
        let wanted = call.cluster.restore_store(&self.plugin.pod);
        // The daemon's store, or another (a replica cluster's source), read ahead in a
        // spool of its own.
        let other = match self.which(wanted, "restore WAL").await? {
            Which::Own => None,
            Which::Other(served) => Some(served),
        };
        if call.rewind {
            // pg_rewind walks WAL backwards: this file only, nothing read ahead.
            let archiver = other
                .as_ref()
                .map_or_else(|| self.daemon.archiver(), |s| s.archiver.clone());
            return fetch_one(&archiver, &call.name, &call.dest).await;
        }
        // The plugin's end-of-WAL rule: where a standby could stream instead, a file the
        // read-ahead already found missing is answered OUT_OF_RANGE once, so PostgreSQL
        // turns to streaming at once instead of asking the archive again; the next ask
        // for it goes to the store. Scoped by name (a timeline change cannot trip it),
        // never under pg_rewind, never where nothing can be streamed.
        if call.cluster.can_stream(&self.plugin.pod)
            && match &other {
                None => self.daemon.take_known_missing(&call.name),
                Some(served) => served.known_missing(&call.name),
            }
        {
            return Err(CallError::OutOfRange(format!(
                "end of WAL reached: {} was not in the archive when read ahead",
                call.name
            )));
        }
        if let Some(served) = other {
            return served.restore(&call.name, &call.dest).await;
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
        let wanted = backup_store(&call);
        let (target, other) = match self.which(wanted.as_ref(), "take a backup").await? {
            Which::Own => {
                let target = wiring::target(
                    &self.sources.source,
                    self.sources.server_name.as_deref(),
                    None,
                    wiring::retry_within(crate::cli::LONG_OPERATION_RETRY_SECONDS),
                    Purpose::Backups,
                )
                .await
                .map_err(|e| CallError::FailedPrecondition(format!("{e:#}")))?;
                (target, None)
            }
            Which::Other(served) => (served.target.clone(), Some(served)),
        };
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
            retry_seconds: crate::cli::LONG_OPERATION_RETRY_SECONDS,
        };
        // A backup in another store than the WAL archive is DONE only once the WAL it
        // needs is there too.
        let before_done = other.as_ref().map(|served| {
            copy_wal(
                self.daemon.archiver(),
                served.archiver.clone(),
                self.read_ahead.dir.clone(),
            )
        });
        let taken = take_backup(&target, &args, CancellationToken::new(), before_done)
            .await
            .map_err(|e| CallError::FailedPrecondition(format!("{e:#}")))?;
        // Done or failed, the catalog changed: its figures go to the metrics and, from
        // the Kubernetes API, to the ObjectStore's status, as the plugin writes them.
        match &other {
            None => self.publish_catalog(&target).await,
            Some(served) => upkeep_other(served, taken.is_ok()).await,
        }
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
        self.metrics.observe_readiness(self.daemon.health());
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
    // Recovery's WAL is read ahead into the spool volume, when there is one (the root
    // filesystem is read-only); without, each file is fetched when asked.
    let metrics = Arc::new(Metrics::new());
    let read_ahead = args.spool_dir.as_ref().map(|dir| ReadAhead {
        dir: dir.clone(),
        window: args.prefetch,
        max_bytes: args.prefetch_max_mib.saturating_mul(1 << 20),
        metrics: metrics.clone(),
    });
    let stores = match args.from.config_from {
        crate::cli::ConfigFrom::Files => {
            let server_name = cli.server_name.clone().or(args.cluster_name.clone());
            let source = wiring::Source::files(&cli.config, &cli.secrets_dir);
            Stores::files(&source, server_name.as_deref(), read_ahead.as_ref()).await?
        }
        // Each call's Cluster names the stores (the recovery source, the new cluster's
        // archive); they are read from the API when first named.
        crate::cli::ConfigFrom::Kubernetes => {
            Stores::kube(crate::connect_kube(&args.from).await?, read_ahead)
        }
    };
    let socket = args.plugins.plugins_dir.join(PLUGIN_NAME);
    let job = RestoreJob {
        pod: args.pod_name.clone(),
        stores,
        pgdata: args.pgdata.clone(),
        wal_dir: args.wal_dir.clone(),
        restore_command: args.restore_command.clone(),
        jobs: args.jobs.max(1) as usize,
    };
    let shutdown = CancellationToken::new();
    let signals = crate::daemon::shut_down_on_signals(shutdown.clone());
    let settings = walship_cnpg::server::Settings {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pgdata: args.pgdata.clone(),
    };
    let served =
        walship_cnpg::server::serve_restore_job(&socket, Arc::new(job), settings, shutdown).await;
    signals.abort();
    // What recovery asked of this job, for whoever reads its log afterwards.
    let (hits, misses) = (
        metrics.restore_hits_total.get(),
        metrics.restore_misses_total.get(),
    );
    tracing::info!(
        "WAL restored for recovery: {} files, {hits} of them read ahead",
        hits + misses
    );
    Ok(match served {
        Ok(()) => crate::Ending::DaemonStopped,
        Err(e) => {
            tracing::error!(socket = %socket.display(), "cannot serve the plugin's socket: {e}");
            crate::Ending::DaemonFailed
        }
    })
}

/// The restore job's calls: the data directory from the recovery store's catalog,
/// then WAL from the same store.
struct RestoreJob {
    pod: String,
    stores: Stores,
    pgdata: PathBuf,
    wal_dir: PathBuf,
    restore_command: String,
    jobs: usize,
}

impl RestoreJob {
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

    /// Refuses the job when the new cluster's own archive holds WAL already (its
    /// history would mix with another's). From files, only the store served can be
    /// checked.
    async fn check_empty(&self, own: Option<&StoreRef>) -> Result<(), CallError> {
        let Some(own) = own else {
            return Ok(());
        };
        if !self.stores.serves(own) {
            tracing::warn!(
                "the new cluster archives to ObjectStore {:?}, which this sidecar does not \
                 serve: its emptiness is not checked",
                own.object_store
            );
            return Ok(());
        }
        let served = self.stores.get(Some(own), "archive WAL").await?;
        let checked =
            walship_daemon::client::check(&served.archiver, true, None, Duration::from_secs(60))
                .await;
        if !checked.usable {
            return Err(CallError::FailedPrecondition(
                checked
                    .problem
                    .unwrap_or_else(|| "the new cluster's WAL archive is not empty".to_owned()),
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl walship_cnpg::sidecar::Recovery for RestoreJob {
    async fn restore_job(
        &self,
        call: walship_cnpg::sidecar::RestoreJobCall,
    ) -> Result<walship_cnpg::sidecar::RestoreJobDone, CallError> {
        use walship_backup::catalog::{Catalog, RecoveryPick, pick_for_recovery};
        let source = self
            .stores
            .get(call.cluster.recovery.as_ref(), "recover")
            .await?;
        // The new cluster's own archive must be empty when the operator asks.
        if call.check_empty_archive == Some(true) {
            self.check_empty(call.cluster.archive.as_ref()).await?;
        }
        let catalog = Catalog::new(
            source.target.store.clone(),
            &source.target.layout,
            &source.target.server,
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
        let fetched = fetch_one(&source.archiver, &begin_wal, &probe).await;
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
            source.target.store.clone(),
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
        let served = self
            .stores
            .get(call.cluster.restore_store(&self.pod), "restore WAL")
            .await?;
        if call.rewind {
            return fetch_one(&served.archiver, &call.name, &call.dest).await;
        }
        served.restore(&call.name, &call.dest).await
    }
}

/// One file fetched from the store itself, no read-ahead: NOT_FOUND only when the
/// archive has no such file, UNAVAILABLE when the store failed, INTERNAL otherwise (a
/// corrupt object, a local write).
pub async fn fetch_one(
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

#[cfg(test)]
mod tests {
    use super::wal_needed;
    use walship_backup::BackupInfo;

    fn info(begin: &str, end: &str, size: u64) -> BackupInfo {
        BackupInfo {
            begin_wal: Some(begin.to_owned()),
            end_wal: Some(end.to_owned()),
            xlog_segment_size: Some(size),
            ..BackupInfo::default()
        }
    }

    #[test]
    fn the_wal_an_offsite_backup_needs_is_every_segment_from_begin_to_end_and_its_timelines_history()
     {
        let names = |i: &BackupInfo| -> Vec<String> {
            wal_needed(i)
                .expect("copyable")
                .into_iter()
                .map(|(name, required)| format!("{name}{}", if required { "" } else { "?" }))
                .collect()
        };
        // 16 MiB segments cross a log id after ...FF.
        assert_eq!(
            names(&info(
                "0000000100000000000000FE",
                "000000010000000100000000",
                16 << 20
            )),
            [
                "0000000100000000000000FE",
                "0000000100000000000000FF",
                "000000010000000100000000"
            ]
        );
        // 1 MiB segments: ...0FFF is the last of log id 0.
        assert_eq!(
            names(&info(
                "000000030000000000000FFF",
                "000000030000000100000000",
                1 << 20
            )),
            [
                "00000003.history?",
                "000000030000000000000FFF",
                "000000030000000100000000"
            ]
        );
        assert_eq!(
            names(&info(
                "000000010000000000000005",
                "000000010000000000000005",
                16 << 20
            )),
            ["000000010000000000000005"]
        );
    }

    #[test]
    fn wal_that_cannot_be_copied_is_refused_with_the_reason() {
        for (begin, end, said) in [
            (
                "000000010000000000000005",
                "000000020000000000000006",
                "spans timelines",
            ),
            (
                "000000010000000000000006",
                "000000010000000000000005",
                "precedes",
            ),
            (
                "00000001.history",
                "000000010000000000000005",
                "not a segment name",
            ),
            ("000000010000000000000005", "", "not a segment name"),
            // Segment 0x100 does not exist in 16 MiB segments.
            (
                "000000010000000000000100",
                "000000010000000100000001",
                "not a segment of",
            ),
        ] {
            let error = wal_needed(&info(begin, end, 16 << 20)).expect_err(said);
            assert!(error.contains(said), "{begin} {end}: {error}");
        }
    }
}
