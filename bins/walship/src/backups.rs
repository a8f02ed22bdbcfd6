//! `backup`, `backup-list` and `backup-show`: the manifest's store and options wired to
//! `walship_backup`, the progress shown, and the outcome turned into an [`Outcome`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use walship_backup::Catalog;
use walship_backup::catalog::Entry;
use walship_backup::catalog::KeepTarget;
use walship_backup::compress::BackupCompression;
use walship_backup::delete::{self, DeleteError, Snapshot};
use walship_backup::present;
use walship_backup::restore::{
    self, RecoveryTarget, RestoreError, RestoreOptions, RestoreProgress, TargetAction,
};
use walship_backup::retention::Policy;
use walship_backup::session::ConnParams;
use walship_backup::take::{self, BackupError, BackupOptions, Progress};
use walship_store::{ErrorKind, RetryPolicy, StoreError};

use crate::cli::{
    BackupArgs, BackupCompressionArg, Cli, KeepTargetArg, OutputFormat, RestoreArgs,
    TargetActionArg,
};
use crate::progress::{Unit, human};
use crate::wiring::{self, Purpose, Target};

/// How a catalog command ended, in barman-cloud's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The operation failed (the backup is FAILED, no such backup, archiving broken).
    Failed,
    /// PostgreSQL or the store could not be reached, or refused us.
    Unreachable,
    /// Something walship cannot go on with (an unreadable catalog).
    General,
}

async fn target(cli: &Cli, retry: RetryPolicy) -> Result<Target> {
    wiring::target(
        &wiring::Source::files(&cli.config, &cli.secrets_dir),
        cli.server_name.as_deref(),
        None,
        retry,
        Purpose::Backups,
    )
    .await
}

/// Whether a store error means the store could not be reached or refused us.
fn unreachable(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Connection
            | ErrorKind::TimedOut
            | ErrorKind::Denied
            | ErrorKind::ContainerMissing
            | ErrorKind::Server
            | ErrorKind::Throttled
    )
}

fn store_outcome(e: &StoreError) -> Outcome {
    error!("{e}");
    if unreachable(e.kind()) {
        Outcome::Unreachable
    } else {
        Outcome::Failed
    }
}

/// `walship backup`. `Err` is a bad configuration.
pub async fn backup(cli: &Cli, args: &BackupArgs) -> Result<Outcome> {
    let target = target(cli, wiring::retry_within(args.retry_seconds)).await?;
    let cancel = CancellationToken::new();
    let watch = tokio::spawn(cancel_on_signal(cancel.clone()));
    let taken = take_backup(&target, args, cancel, None).await?;
    watch.abort();
    Ok(match taken {
        Ok(taken) => {
            let size = taken.info.size.unwrap_or_default();
            info!(
                "backup {} is DONE: {} objects, {} stored, WAL {} to {}",
                taken.id,
                taken.objects.len(),
                human(size),
                taken.info.begin_wal.as_deref().unwrap_or("?"),
                taken.info.end_wal.as_deref().unwrap_or("?"),
            );
            Outcome::Done
        }
        Err(e) => {
            error!("{e}");
            backup_outcome(&e)
        }
    })
}

/// How a failed backup ends, in barman-cloud's terms.
pub fn backup_outcome(e: &BackupError) -> Outcome {
    match e {
        BackupError::Postgres(_) => Outcome::Unreachable,
        BackupError::Archiving(_) | BackupError::Cancelled => Outcome::Failed,
        BackupError::Start(s) if unreachable(s.kind()) => Outcome::Unreachable,
        BackupError::Start(_) => Outcome::Failed,
        BackupError::Failed { store, .. } => match store {
            Some(kind) if unreachable(*kind) => Outcome::Unreachable,
            _ => Outcome::Failed,
        },
    }
}

/// One base backup into `target` with `args` over the manifest's options (`walship
/// backup`, and the CloudNativePG sidecar's Backup call). The outer `Err` is a bad
/// configuration.
pub async fn take_backup(
    target: &Target,
    args: &BackupArgs,
    cancel: CancellationToken,
    before_done: Option<take::BeforeDone>,
) -> Result<Result<take::Taken, BackupError>> {
    let data = target
        .doc
        .spec
        .configuration
        .data
        .clone()
        .unwrap_or_default();
    // The command line, then the manifest's fields, then data.additionalCommandArgs,
    // as the plugin lets its own options win over the ones users add.
    let extra = data.backup_args().map_err(|e| anyhow::anyhow!("{e}"))?;
    for (arg, why) in &extra.without_effect {
        warn!("data.additionalCommandArgs: {arg} has no effect in walship: {why}");
    }
    let compression = match args.compression {
        Some(BackupCompressionArg::None) => BackupCompression::None,
        Some(BackupCompressionArg::Gzip) => BackupCompression::Gzip,
        Some(BackupCompressionArg::Bzip2) => BackupCompression::Bzip2,
        Some(BackupCompressionArg::Snappy) => BackupCompression::Snappy,
        Some(BackupCompressionArg::Lz4) => BackupCompression::Lz4,
        None => match data.compression.or(extra.compression) {
            None => BackupCompression::None,
            Some(c) => BackupCompression::from_name(c.as_str()).ok_or_else(|| {
                anyhow::anyhow!(
                    "spec.configuration.data.compression: {c} is not a base backup \
                     compression; expected gzip, bzip2, snappy or lz4"
                )
            })?,
        },
    };
    let name = args.name.clone().or(extra.name);
    if let Some(name) = &name {
        walship_backup::catalog::check_backup_name(name).map_err(anyhow::Error::msg)?;
    }
    let mut tags: std::collections::BTreeMap<String, String> = target
        .doc
        .spec
        .configuration
        .tags
        .clone()
        .into_iter()
        .collect();
    tags.extend(extra.tags);
    let options = BackupOptions {
        name,
        compression,
        jobs: args.jobs.or(data.jobs).or(extra.jobs).unwrap_or(2).max(1) as usize,
        immediate_checkpoint: args.immediate_checkpoint
            || data.immediate_checkpoint
            || extra.immediate_checkpoint,
        max_archive_size: args
            .max_archive_size
            .or(extra.max_archive_size)
            .unwrap_or(take::DEFAULT_MAX_ARCHIVE_SIZE),
        min_part_size: extra.min_chunk_size.unwrap_or(0),
        tags,
        archive_stall: Duration::from_secs(args.archive_stall_seconds),
        before_done,
    };
    let mut params =
        ConnParams::from_env(&|name| std::env::var(name).ok()).map_err(anyhow::Error::msg)?;
    // Options beat libpq's environment, as on barman-cloud-backup's command line.
    for (given, field) in [
        (args.host.clone().or(extra.host), &mut params.host),
        (args.user.clone().or(extra.user), &mut params.user),
        (args.dbname.clone().or(extra.dbname), &mut params.dbname),
    ] {
        if let Some(value) = given {
            *field = value;
        }
    }
    if let Some(port) = args.port.or(extra.port) {
        params.port = port;
    }
    let catalog = Catalog::new(target.store.clone(), &target.layout, &target.server);
    let progress = Arc::new(Progress::default());
    let ticker = {
        let progress = progress.clone();
        crate::progress::start("backup: read", Unit::Bytes, move || {
            let stored = progress.stored.load(Ordering::Relaxed);
            (
                progress.read.load(Ordering::Relaxed),
                progress.total.load(Ordering::Relaxed),
                format!(", stored {}", human(stored)),
            )
        })
    };
    let taken = take::take(
        target.store.clone(),
        &catalog,
        &params,
        &options,
        progress,
        cancel,
    )
    .await;
    drop(ticker);
    Ok(taken)
}

/// SIGTERM or SIGINT cancels the backup, which then ends FAILED.
async fn cancel_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    error!("signal received: cancelling the backup");
    cancel.cancel();
}

/// `walship backup-list`.
pub async fn list(cli: &Cli, format: OutputFormat) -> Result<Outcome> {
    let target = target(cli, RetryPolicy::default()).await?;
    let catalog = Catalog::new(target.store.clone(), &target.layout, &target.server);
    let listing = match catalog.list().await {
        Ok(listing) => listing,
        Err(e) => return Ok(store_outcome(&e)),
    };
    for (id, why) in &listing.unreadable {
        error!("backup {id}: {why}");
    }
    match format {
        OutputFormat::Json => println!("{}", present::list_json(&listing.backups)),
        OutputFormat::Console => {
            let mut keeps = std::collections::BTreeMap::<String, KeepTarget>::new();
            for entry in &listing.backups {
                match catalog.keep_target(&entry.id).await {
                    Ok(Some(keep)) => {
                        keeps.insert(entry.id.clone(), keep);
                    }
                    Ok(None) => {}
                    Err(e) => return Ok(store_outcome(&e)),
                }
            }
            print!(
                "{}",
                present::list_console(&listing.backups, &|id| keeps.get(id).copied())
            );
        }
    }
    Ok(if listing.unreadable.is_empty() {
        Outcome::Done
    } else {
        Outcome::General
    })
}

/// The manifest's store and catalog, and the backup `which` names (an id, a name,
/// `latest`, …); `Err(outcome)` when the catalog cannot be listed or nothing matches.
/// `Err` outside is a bad configuration.
async fn resolve(
    cli: &Cli,
    which: &str,
    retry: RetryPolicy,
) -> Result<Result<(Target, Catalog, Entry), Outcome>> {
    let target = target(cli, retry).await?;
    let catalog = Catalog::new(target.store.clone(), &target.layout, &target.server);
    let listing = match catalog.list().await {
        Ok(listing) => listing,
        Err(e) => return Ok(Err(store_outcome(&e))),
    };
    let entry = match catalog.resolve(&listing, which) {
        Ok(entry) => entry.clone(),
        Err(e) => {
            error!("{e}");
            return Ok(Err(Outcome::Failed));
        }
    };
    Ok(Ok((target, catalog, entry)))
}

/// `walship backup-show`.
pub async fn show(cli: &Cli, which: &str, format: OutputFormat) -> Result<Outcome> {
    let (_, catalog, entry) = match resolve(cli, which, RetryPolicy::default()).await? {
        Ok(found) => found,
        Err(outcome) => return Ok(outcome),
    };
    let entry = &entry;
    match format {
        OutputFormat::Json => println!("{}", present::show_json(entry)),
        OutputFormat::Console => {
            let keep = match catalog.keep_target(&entry.id).await {
                Ok(keep) => keep,
                Err(e) => return Ok(store_outcome(&e)),
            };
            print!("{}", present::show_console(entry, keep));
        }
    }
    Ok(Outcome::Done)
}

/// `walship restore`. `Err` is a bad configuration.
pub async fn restore(cli: &Cli, args: &RestoreArgs) -> Result<Outcome> {
    let retry = wiring::retry_within(args.retry_seconds);
    let (target, catalog, entry) = match resolve(cli, &args.backup, retry).await? {
        Ok(found) => found,
        Err(outcome) => return Ok(outcome),
    };
    let options = RestoreOptions {
        tablespace_locations: args.tablespaces.iter().cloned().collect(),
        jobs: args.jobs as usize,
    };
    let progress = Arc::new(RestoreProgress::default());
    let cancel = CancellationToken::new();
    let watch = tokio::spawn(cancel_on_signal(cancel.clone()));
    let ticker = {
        let progress = progress.clone();
        crate::progress::start("restore: fetched", Unit::Bytes, move || {
            (
                progress.fetched.load(Ordering::Relaxed),
                progress.total.load(Ordering::Relaxed),
                String::new(),
            )
        })
    };
    let restored = restore::restore(
        target.store.clone(),
        &catalog,
        &entry,
        &args.dest,
        &options,
        progress,
        cancel,
    )
    .await;
    drop(ticker);
    watch.abort();
    let restored = match restored {
        Ok(restored) => restored,
        Err(e) => {
            error!(
                "restoring backup {} into {}: {e}",
                entry.id,
                args.dest.display()
            );
            return Ok(match &e {
                RestoreError::Store(s) if unreachable(s.kind()) => Outcome::Unreachable,
                _ => Outcome::Failed,
            });
        }
    };
    info!(
        "restored backup {} into {}: {} objects, {}{}",
        entry.id,
        args.dest.display(),
        restored.objects,
        human(restored.bytes),
        if restored.verified {
            ", every object's SHA-256 checked"
        } else {
            " (a backup without recorded checksums: barman-cloud's)"
        }
    );
    let recovery_target = match (&args.target_time, &args.target_lsn, &args.target_name) {
        (Some(t), _, _) => Some(RecoveryTarget::Time(t.clone())),
        (_, Some(l), _) => Some(RecoveryTarget::Lsn(l.clone())),
        (_, _, Some(n)) => Some(RecoveryTarget::Name(n.clone())),
        _ if args.target_immediate => Some(RecoveryTarget::Immediate),
        _ => None,
    };
    if let Some(recovery_target) = recovery_target {
        let action = match args.target_action {
            TargetActionArg::Pause => TargetAction::Pause,
            TargetActionArg::Promote => TargetAction::Promote,
            TargetActionArg::Shutdown => TargetAction::Shutdown,
        };
        let command = restore_command(cli)?;
        if let Err(e) = restore::prepare_recovery(
            &args.dest,
            &command,
            &recovery_target,
            action,
            args.target_tli,
        ) {
            error!("{e}");
            return Ok(Outcome::Failed);
        }
        info!(
            "recovery prepared: start PostgreSQL on {}",
            args.dest.display()
        );
    }
    Ok(Outcome::Done)
}

/// `restore_command`: this binary's `wal-fetch` with the same global options.
fn restore_command(cli: &Cli) -> Result<String> {
    let exe = std::env::current_exe()?;
    let mut words = vec![
        shell_quote(&exe.display().to_string()),
        "--config".to_owned(),
        shell_quote(&absolute(&cli.config)?.display().to_string()),
        "--secrets-dir".to_owned(),
        shell_quote(&absolute(&cli.secrets_dir)?.display().to_string()),
    ];
    if let Some(server) = &cli.server_name {
        words.push("--server-name".to_owned());
        words.push(shell_quote(server));
    }
    words.extend(["wal-fetch", "%f", "%p"].map(str::to_owned));
    Ok(words.join(" "))
}

fn absolute(path: &std::path::Path) -> Result<std::path::PathBuf> {
    Ok(std::path::absolute(path)?)
}

/// `text` as one word for `sh`, which runs restore_command.
fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-=:".contains(&b))
    {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn delete_outcome(e: &DeleteError) -> Outcome {
    match e {
        DeleteError::Store(s) => store_outcome(s),
        other => {
            error!("{other}");
            Outcome::Failed
        }
    }
}

/// `walship backup-delete`. `Err` is a bad configuration or usage.
pub async fn delete(
    cli: &Cli,
    backup_id: Option<&str>,
    policy: Option<&str>,
    minimum_redundancy: u32,
    dry_run: bool,
) -> Result<Outcome> {
    let target = target(cli, RetryPolicy::default()).await?;
    let policy = match (backup_id, policy) {
        (Some(_), _) => None,
        (None, Some(text)) => Some(Policy::parse(text).map_err(anyhow::Error::msg)?),
        (None, None) => match target.doc.spec.retention_policy.as_deref() {
            Some(text) => Some(
                Policy::parse(text).map_err(|e| anyhow::anyhow!("spec.retentionPolicy: {e}"))?,
            ),
            None => anyhow::bail!(
                "nothing to delete: give -b BACKUP or --retention-policy, or set \
                 spec.retentionPolicy in the manifest"
            ),
        },
    };
    let catalog = Catalog::new(target.store.clone(), &target.layout, &target.server);
    let snapshot = match Snapshot::read(&*target.store, &catalog, &target.layout).await {
        Ok(snapshot) => snapshot,
        Err(e) => return Ok(delete_outcome(&e)),
    };
    let plan = match (policy, backup_id) {
        (Some(policy), _) => {
            let now = chrono::Local::now().fixed_offset();
            info!("applying {policy}");
            snapshot.plan_policy(&catalog, policy, minimum_redundancy, now)
        }
        (None, Some(which)) => match snapshot.plan_one(&catalog, which, minimum_redundancy) {
            Ok(plan) => plan,
            Err(e) => return Ok(delete_outcome(&e)),
        },
        (None, None) => unreachable!("a policy or a backup was required above"),
    };
    if dry_run {
        for backup in &plan.backups {
            println!("backup {}", backup.id);
        }
        for wal in &plan.wal {
            println!("wal {}", wal.name);
        }
        return Ok(Outcome::Done);
    }
    let objects = plan.backups.iter().map(|b| b.objects.len()).sum::<usize>() + plan.wal.len();
    let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = {
        let counted = counted.clone();
        crate::progress::start("backup-delete: deleted", Unit::Objects, move || {
            (
                counted.load(Ordering::Relaxed),
                objects as u64,
                String::new(),
            )
        })
    };
    let done = delete::execute(&target.store, &plan, &mut |_| {
        counted.fetch_add(1, Ordering::Relaxed);
    })
    .await;
    drop(ticker);
    let deleted = counted.load(Ordering::Relaxed);
    for backup in &plan.backups {
        info!("deleting backup {}", backup.id);
    }
    match done {
        Ok(()) => {
            info!(
                "deleted {} backups and {} WAL files ({deleted} objects)",
                plan.backups.len(),
                plan.wal.len()
            );
            Ok(Outcome::Done)
        }
        Err(e) => {
            error!("after {deleted} objects: {e}; run the deletion again to finish it");
            Ok(if unreachable(e.kind()) {
                Outcome::Unreachable
            } else {
                Outcome::Failed
            })
        }
    }
}

/// `walship backup-keep`.
pub async fn keep(
    cli: &Cli,
    which: &str,
    keep_target: Option<KeepTargetArg>,
    release: bool,
    status: bool,
) -> Result<Outcome> {
    let (target, catalog, entry) = match resolve(cli, which, RetryPolicy::default()).await? {
        Ok(found) => found,
        Err(outcome) => return Ok(outcome),
    };
    let entry = &entry;
    let done = if release {
        delete::release(&*target.store, &catalog, &entry.id).await
    } else if status {
        match catalog.keep_target(&entry.id).await {
            Ok(keep) => {
                println!("Keep: {}", keep.map_or("nokeep", KeepTarget::as_str));
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    } else {
        let Some(keep_target) = keep_target else {
            anyhow::bail!("give --target full|standalone, --release or --status");
        };
        let keep_target = match keep_target {
            KeepTargetArg::Full => KeepTarget::Full,
            KeepTargetArg::Standalone => KeepTarget::Standalone,
        };
        delete::keep(&*target.store, &catalog, entry, keep_target).await
    };
    Ok(match done {
        Ok(()) => Outcome::Done,
        Err(e) => delete_outcome(&e),
    })
}
