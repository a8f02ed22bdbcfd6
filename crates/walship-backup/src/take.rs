//! `walship backup`: one online base backup, from the session's start to `backup.info`
//! DONE, in barman-cloud-backup's order and layout.
//!
//! 1. Connect, read the server's facts, refuse when WAL archiving cannot deliver the
//!    backup's WAL (barman does not check, and its backup then ends DONE and cannot be
//!    restored).
//! 2. `pg_backup_start`; `backup.info` STARTED, create-only (a second backup with the
//!    same id fails here, before anything else is written).
//! 3. One tar per tablespace (`<oid>.tar`), then the data directory (`data.tar`), each
//!    cut between files at the maximum archive size (`data_0001.tar`, …), streamed
//!    through the compression into multipart uploads; `global/pg_control` last.
//! 4. `pg_backup_stop`, which returns once PostgreSQL has archived the WAL the backup
//!    ends in; meanwhile a second session watches `pg_stat_archiver`, and a stop whose
//!    archiving keeps failing ends the backup with that reason instead of waiting
//!    forever.
//! 5. `backup_label` into the last data tar; every object completed.
//! 6. `walship.json` (each object's size and SHA-256, which barman ignores and walship's
//!    restore checks), then `backup.info` DONE.
//!
//! After step 2 every failure, a cancellation included, rewrites `backup.info` as
//! FAILED, aborts the uploads in flight, and ends the session, which makes PostgreSQL
//! end the backup. Nothing ever marks a backup DONE before all of it is stored.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use walship_store::{ErrorKind, PutOptions, Store, StoreError};

use crate::catalog::Catalog;
use crate::compress::{BackupCompression, Encoder};
use crate::info::{BackupInfo, Tablespace};
use crate::pgdata::{self, Rule};
use crate::pyrepr::PyValue;
use crate::record;
use crate::session::{ConnParams, ServerFacts, Session, SessionError, Stopped};
use crate::tarball::{Appended, TarOut};
use crate::upload::{CopyError, ObjectWriter, StoredObject, Uploads, part_size_for};
use crate::walk::{self, Entry};

/// barman-cloud-backup's default maximum archive size (`--max-archive-size 100GB`).
pub const DEFAULT_MAX_ARCHIVE_SIZE: u64 = 100 * 1024 * 1024 * 1024;

/// The name of walship's own record of a backup's objects, beside `backup.info`.
pub const MANIFEST_NAME: &str = "walship.json";

/// How one backup is taken.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// `--name`: the backup's name, besides its id.
    pub name: Option<String>,
    pub compression: BackupCompression,
    /// Parts in flight at once, and the cores gzip deflates on.
    pub jobs: usize,
    pub immediate_checkpoint: bool,
    /// A tar is cut (between files) once it holds more than this many bytes.
    pub max_archive_size: u64,
    /// Parts are at least this large (barman's `--min-chunk-size`); walship's own
    /// floor, 16 MiB, when smaller. Memory grows with it: (jobs + 1) parts.
    pub min_part_size: u64,
    /// Tags put on every object.
    pub tags: BTreeMap<String, String>,
    /// How long archiving may keep failing, with no success, while the backup waits
    /// for its WAL, before the backup gives up.
    pub archive_stall: Duration,
    /// What else must be stored before the backup is DONE (an offsite copy's WAL).
    pub before_done: Option<BeforeDone>,
}

/// Work a backup is not DONE without, beyond its own objects, given its record as it
/// will be marked DONE (begin and end WAL known): a backup sent to another store than
/// the WAL archive needs its WAL copied there to be restorable from that store alone.
/// An `Err` ends the backup FAILED.
#[derive(Clone)]
pub struct BeforeDone(
    pub  Arc<
        dyn Fn(BackupInfo) -> futures::future::BoxFuture<'static, Result<(), Unfinished>>
            + Send
            + Sync,
    >,
);

/// Why [`BeforeDone`] work failed.
#[derive(Debug)]
pub struct Unfinished {
    pub message: String,
    /// The store's kind of error, when a store failed.
    pub store: Option<ErrorKind>,
}

impl std::fmt::Debug for BeforeDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeDone(..)")
    }
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            name: None,
            compression: BackupCompression::None,
            jobs: 2,
            immediate_checkpoint: false,
            max_archive_size: DEFAULT_MAX_ARCHIVE_SIZE,
            min_part_size: 0,
            tags: BTreeMap::new(),
            archive_stall: Duration::from_secs(120),
            before_done: None,
        }
    }
}

/// Where a running backup stands, for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes of files the walk found to copy (known shortly after the start).
    pub total: AtomicU64,
    /// Bytes of files read so far.
    pub read: AtomicU64,
    /// Bytes the store confirmed so far (compressed).
    pub stored: AtomicU64,
}

/// A backup that ended DONE.
#[derive(Debug, Clone)]
pub struct Taken {
    pub id: String,
    pub info: BackupInfo,
    pub objects: Vec<StoredObject>,
}

/// Why a backup did not end DONE.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// PostgreSQL could not be reached or refused the backup; nothing was stored.
    #[error("{0}")]
    Postgres(#[from] SessionError),
    /// The server cannot deliver the WAL a backup needs; nothing was stored.
    #[error("refusing to take a backup that could not be restored: {0}")]
    Archiving(String),
    /// Cancelled before the backup's first record; nothing was stored.
    #[error("the backup was cancelled before anything was stored")]
    Cancelled,
    /// The store did not take the backup's first record; nothing else was stored.
    #[error("cannot record the backup's start: {0}")]
    Start(StoreError),
    /// The backup began and failed; `backup.info` says FAILED when `recorded`.
    #[error("backup {id} failed {step}: {detail}{}", if *recorded { "" } else { " (and its backup.info could not be marked FAILED)" })]
    Failed {
        id: String,
        step: &'static str,
        detail: String,
        recorded: bool,
        /// Whether the cause was the store being unreachable or failing.
        store: Option<ErrorKind>,
    },
}

/// A failure after the start: the step (in barman's words) and its cause.
struct StepError {
    step: &'static str,
    message: String,
    /// The store's kind of error, when the store failed.
    store: Option<ErrorKind>,
}

/// What a step's error says, and whether the store said it.
trait Cause {
    fn cause(self) -> (String, Option<ErrorKind>);
}

impl Cause for CopyError {
    fn cause(self) -> (String, Option<ErrorKind>) {
        match self {
            CopyError::Store(e) => e.cause(),
            other => (other.to_string(), None),
        }
    }
}

impl Cause for StoreError {
    fn cause(self) -> (String, Option<ErrorKind>) {
        (self.to_string(), Some(self.kind()))
    }
}

impl Cause for String {
    fn cause(self) -> (String, Option<ErrorKind>) {
        (self, None)
    }
}

fn step<E: Cause>(step: &'static str) -> impl FnOnce(E) -> StepError {
    move |e| {
        let (message, store) = e.cause();
        StepError {
            step,
            message,
            store,
        }
    }
}

/// Takes one backup of the server `params` reaches into `catalog`'s store.
pub async fn take(
    store: Arc<dyn Store>,
    catalog: &Catalog,
    params: &ConnParams,
    options: &BackupOptions,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<Taken, BackupError> {
    let mut session = Session::connect(params).await?;
    let facts = session.facts().await?.clone();
    let archiver = session.archiving().await?;
    if let Some(problem) = archiver.problem {
        return Err(BackupError::Archiving(problem));
    }
    let id = free_id(catalog, &*store)
        .await
        .map_err(BackupError::Start)?;
    let label = format!("Barman backup cloud {id}");
    // A spread checkpoint can take minutes; a signal meanwhile ends the session, and
    // PostgreSQL the backup, before anything is stored.
    let started = tokio::select! {
        started = session.start(&label, options.immediate_checkpoint) => started?,
        () = cancel.cancelled() => return Err(BackupError::Cancelled),
    };
    let info = record::started(&facts, &started, options.name.as_deref());
    let info_key = catalog.info_key(&id);
    // Create-only: of two backups given one id, the second stops here.
    put_once(&*store, &info_key, Bytes::from(info.render()))
        .await
        .map_err(BackupError::Start)?;
    let clock = Instant::now();
    let copied = copy_and_stop(
        &store,
        catalog,
        &id,
        &facts,
        &mut session,
        params,
        options,
        progress,
        cancel,
    )
    .await;
    // The session ends here whatever happened: a backup PostgreSQL still runs ends
    // with it.
    drop(session);
    let outcome = match copied {
        Ok((stopped, objects)) => {
            let finished = finish(
                &*store,
                catalog,
                &id,
                info.clone(),
                &stopped,
                &objects,
                options,
                clock,
            )
            .await;
            match finished {
                Ok(info) => {
                    return Ok(Taken { id, info, objects });
                }
                Err(e) => e,
            }
        }
        Err(e) => e,
    };
    let failed = record::failed(info, outcome.step, &outcome.message);
    let recorded = store
        .put_replace(
            &info_key,
            Bytes::from(failed.render()),
            &PutOptions::default(),
        )
        .await
        .is_ok();
    Err(BackupError::Failed {
        id,
        step: outcome.step,
        detail: outcome.message,
        recorded,
        store: outcome.store,
    })
}

/// A backup id (local time, barman's form) no backup of the server has yet.
async fn free_id(catalog: &Catalog, store: &dyn Store) -> Result<String, StoreError> {
    loop {
        let id = chrono::Local::now().format("%Y%m%dT%H%M%S").to_string();
        if store.head(&catalog.info_key(&id)).await?.is_none() {
            return Ok(id);
        }
        // Another backup began this very second: the next second's id is free.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn copy_and_stop(
    store: &Arc<dyn Store>,
    catalog: &Catalog,
    id: &str,
    facts: &ServerFacts,
    session: &mut Session,
    params: &ConnParams,
    options: &BackupOptions,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<(Stopped, Vec<StoredObject>), StepError> {
    let part_size = part_size_for(options.max_archive_size.saturating_add(2 << 30))
        .max(crate::upload::part_size_at_least(options.min_part_size));
    let uploads = Uploads::new(store.clone(), options.jobs, part_size, cancel.clone());
    let producer = Producer {
        uploads: uploads.clone(),
        prefix: catalog.backup_prefix(id),
        compression: options.compression,
        threads: options.jobs,
        max_archive_size: options.max_archive_size,
        tags: options.tags.clone(),
        stored: Vec::new(),
        progress: progress.clone(),
        owner: (0, 0),
    };
    let facts_copy = facts.clone();
    let (producer, open) = blocking(move || {
        let mut producer = producer;
        let open = producer.copy(&facts_copy)?;
        Ok((producer, open))
    })
    .await
    .map_err(step("uploading data"))?;
    progress.stored.store(uploads.sent(), Ordering::Relaxed);
    let stopped = tokio::select! {
        stopped = session.stop() => stopped.map_err(|e| e.to_string()),
        stalled = watch_archiving(params, options.archive_stall) => Err(stalled),
        () = cancel.cancelled() => Err("the backup was cancelled".to_owned()),
    };
    let stopped = match stopped {
        Ok(stopped) => stopped,
        Err(e) => {
            let _ = blocking(move || {
                open.abort();
                Ok(())
            })
            .await;
            return Err(step("stopping the backup")(e));
        }
    };
    let label = stopped.label.clone();
    let objects = blocking(move || {
        let mut producer = producer;
        producer.close_with_label(open, &label)?;
        Ok(producer.stored)
    })
    .await
    .map_err(step("uploading data"))?;
    progress.stored.store(uploads.sent(), Ordering::Relaxed);
    Ok((stopped, objects))
}

/// Polls `pg_stat_archiver` on a session of its own while the backup waits for its
/// WAL, and returns (ending the wait) once archiving has failed with no success for
/// `stall`. Never returns while archiving works.
async fn watch_archiving(params: &ConnParams, stall: Duration) -> String {
    let poll = Duration::from_secs(2).min(stall);
    let Ok(watcher) = Session::connect(params).await else {
        return std::future::pending().await;
    };
    let Ok(first) = watcher.archiving().await else {
        return std::future::pending().await;
    };
    let mut last_success = (first.archived, Instant::now());
    let mut failing_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(poll).await;
        let Ok(now) = watcher.archiving().await else {
            continue;
        };
        if now.archived != last_success.0 {
            last_success = (now.archived, Instant::now());
            failing_since = None;
        } else if now.failed > first.failed {
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= stall {
                return format!(
                    "WAL archiving is failing: PostgreSQL could not archive {} ({} failed \
                     attempts while the backup waited {}s for its WAL, none succeeded; see \
                     pg_stat_archiver and the server log)",
                    now.last_failed_wal,
                    now.failed - first.failed,
                    last_success.1.elapsed().as_secs()
                );
            }
        }
    }
}

/// `body` stored under `key`, create-only. An object already there with exactly these
/// bytes is this backup's own earlier attempt whose answer was lost (the connection
/// reset after the store had done it, and the retry found the key taken): stored. Any
/// other object under the key stays an [`ErrorKind::AlreadyExists`] error, untouched.
async fn put_once(store: &dyn Store, key: &str, body: Bytes) -> Result<(), StoreError> {
    match store
        .put_create(key, body.clone(), &PutOptions::default())
        .await
    {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => match store.get(key).await {
            Ok((existing, _)) if existing == body => Ok(()),
            _ => Err(e),
        },
        stored => stored,
    }
}

/// Stores `walship.json` and `backup.info` DONE.
#[allow(clippy::too_many_arguments)]
async fn finish(
    store: &dyn Store,
    catalog: &Catalog,
    id: &str,
    info: BackupInfo,
    stopped: &Stopped,
    objects: &[StoredObject],
    options: &BackupOptions,
    clock: Instant,
) -> Result<BackupInfo, StepError> {
    let manifest = manifest(objects, &catalog.backup_prefix(id));
    put_once(
        store,
        &format!("{}{MANIFEST_NAME}", catalog.backup_prefix(id)),
        Bytes::from(manifest),
    )
    .await
    .map_err(step("uploading data"))?;
    let size = objects.iter().map(|o| o.size).sum();
    let mut done = record::done(info, stopped, size);
    done.copy_stats = Some(copy_stats(clock.elapsed(), options.jobs));
    if let Some(BeforeDone(work)) = &options.before_done {
        work(done.clone())
            .await
            .map_err(|Unfinished { message, store }| StepError {
                step: "storing the WAL it needs",
                message,
                store,
            })?;
    }
    store
        .put_replace(
            &catalog.info_key(id),
            Bytes::from(done.render()),
            &PutOptions::default(),
        )
        .await
        .map_err(step("uploading data"))?;
    Ok(done)
}

/// `x` to the microsecond (as barman's `total_seconds` gives times) in Python's
/// `repr(float)` form: the shortest text that reads back as the same float, with a
/// `.0` on integral values and a two-digit exponent below 1e-4 (`1.23073`, `5.0`,
/// `5e-05`). barman reads `backup.info` and prints the float again, so any other
/// form (`1.230730`) makes its JSON differ from walship's.
fn python_float(x: f64) -> String {
    let x = (x * 1e6).round() / 1e6;
    if x != 0.0 && x.abs() < 1e-4 {
        let text = format!("{x:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(digits) => ("-", digits),
            None => ("+", exponent),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    let text = format!("{x}");
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

/// barman's `copy_stats`, with the figures walship has.
fn copy_stats(elapsed: Duration, jobs: usize) -> PyValue {
    let seconds = PyValue::Float(python_float(elapsed.as_secs_f64()));
    let key = |k: &str| PyValue::Str(k.to_owned());
    PyValue::Dict(vec![
        (key("total_time"), seconds.clone()),
        (key("number_of_workers"), PyValue::Int(jobs as i64)),
        (key("analysis_time"), PyValue::Int(0)),
        (key("analysis_time_per_item"), PyValue::Dict(Vec::new())),
        (key("copy_time_per_item"), PyValue::Dict(Vec::new())),
        (
            key("serialized_copy_time_per_item"),
            PyValue::Dict(Vec::new()),
        ),
        (key("copy_time"), seconds),
    ])
}

/// `walship.json`: `{"format": 1, "objects": {"data.tar.gz": {"size": N, "sha256":
/// "…"}, …}}`, by name within the backup.
pub fn manifest(objects: &[StoredObject], prefix: &str) -> String {
    let objects: serde_json::Map<String, serde_json::Value> = objects
        .iter()
        .map(|o| {
            (
                o.key.strip_prefix(prefix).unwrap_or(&o.key).to_owned(),
                serde_json::json!({"size": o.size, "sha256": o.sha256}),
            )
        })
        .collect();
    let document = serde_json::json!({"format": 1, "objects": objects});
    format!("{document:#}\n")
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CopyError> + Send + 'static,
) -> Result<T, CopyError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(CopyError::Source(std::io::Error::other(e.to_string()))))
}

/// One tar being written: `data` or a tablespace's oid, and how many were cut before.
pub struct OpenTar {
    name: String,
    count: usize,
    tar: TarOut<Encoder<ObjectWriter>>,
}

impl OpenTar {
    fn written(&self) -> u64 {
        self.tar.get_ref().get_ref().written()
    }

    /// Gives the tar up (its upload aborted).
    fn abort(self) {
        if let Ok(encoder) = self.tar.finish()
            && let Ok(writer) = encoder.finish()
        {
            writer.abort();
        }
    }
}

/// The blocking side: walks, tars, compresses and hands parts to the uploads.
struct Producer {
    uploads: Uploads,
    /// `<prefix>/<server>/base/<id>/`.
    prefix: String,
    compression: BackupCompression,
    /// Cores the compression may use: `--jobs`, the parallelism the user chose.
    threads: usize,
    max_archive_size: u64,
    tags: BTreeMap<String, String>,
    stored: Vec<StoredObject>,
    progress: Arc<Progress>,
    /// The data directory's owner (uid, gid), which `backup_label` gets.
    owner: (u32, u32),
}

impl Producer {
    /// barman's object name: `data.tar`, then `data_0001.tar`, … when cut.
    fn key(&self, name: &str, count: usize) -> String {
        let cut = if count > 0 {
            format!("_{count:04}")
        } else {
            String::new()
        };
        format!(
            "{}{name}{cut}.tar{}",
            self.prefix,
            self.compression.extension()
        )
    }

    fn open(&self, name: &str, count: usize) -> Result<OpenTar, CopyError> {
        let options = PutOptions {
            tags: self.tags.clone(),
            ..PutOptions::default()
        };
        let writer = self.uploads.start(&self.key(name, count), &options)?;
        Ok(OpenTar {
            name: name.to_owned(),
            count,
            tar: TarOut::new(self.compression.writer(writer, self.threads)),
        })
    }

    fn close(&mut self, open: OpenTar) -> Result<(), CopyError> {
        let io = |e| self.uploads.explain(e);
        let writer = open.tar.finish().map_err(io)?.finish().map_err(io)?;
        self.stored.push(writer.finish()?);
        Ok(())
    }

    /// The tar to add the next file to: `open`, or its successor once `open` holds
    /// more than the maximum archive size.
    fn room(&mut self, open: OpenTar) -> Result<OpenTar, CopyError> {
        if open.written() <= self.max_archive_size {
            return Ok(open);
        }
        let (name, count) = (open.name.clone(), open.count + 1);
        self.close(open)?;
        self.open(&name, count)
    }

    /// Copies one directory tree into tars named `name`, with `rule`. Returns the open
    /// tar and the entries kept for last.
    fn tree(
        &mut self,
        root: &Path,
        name: &str,
        rule: &dyn Fn(&str, bool) -> Rule,
    ) -> Result<(OpenTar, Vec<Entry>), CopyError> {
        let mut open = Some(self.open(name, 0)?);
        let root_meta = fs::metadata(root).map_err(CopyError::Source)?;
        let io = |uploads: &Uploads, e| uploads.explain(e);
        open.as_mut()
            .expect("open")
            .tar
            .root(&root_meta)
            .map_err(|e| io(&self.uploads, e))?;
        let mut failure = None;
        let last = walk::walk(root, rule, &mut |entry| {
            let mut tar = match self.room(open.take().expect("open")) {
                Ok(tar) => tar,
                Err(e) => {
                    failure = Some(e);
                    return Err(std::io::Error::other("stopped"));
                }
            };
            let added = self.add(&mut tar, entry);
            open = Some(tar);
            added
        });
        if let Some(e) = failure {
            return Err(e);
        }
        let last = last.map_err(|e| self.uploads.explain(e))?;
        Ok((open.expect("open"), last))
    }

    fn add(&self, open: &mut OpenTar, entry: Entry) -> std::io::Result<()> {
        // A cancellation or a failed upload stops the copy at the next file, not only
        // at the next full part.
        self.uploads.check()?;
        match entry {
            Entry::Dir { rel, meta } => open.tar.dir(&rel, &meta),
            Entry::Symlink { rel, target, meta } => open.tar.symlink(&rel, &target, &meta),
            Entry::File { rel, path } => {
                if let Appended::Copied(size) = open.tar.file(&rel, &path)? {
                    self.progress.read.fetch_add(size, Ordering::Relaxed);
                }
                Ok(())
            }
        }
    }

    /// Every tablespace, then the data directory up to `global/pg_control`; returns
    /// the data tar still open for `backup_label`.
    fn copy(&mut self, facts: &ServerFacts) -> Result<OpenTar, CopyError> {
        let pgdata = PathBuf::from(&facts.data_directory);
        let major = facts.version / 10000;
        let meta = fs::metadata(&pgdata).map_err(CopyError::Source)?;
        self.owner = (meta.uid(), meta.gid());
        self.progress.total.store(
            estimate(&pgdata, &facts.tablespaces, major),
            Ordering::Relaxed,
        );
        for tablespace in &facts.tablespaces {
            let rule = move |path: &str, is_dir: bool| pgdata::tablespace_rule(major, path, is_dir);
            let (open, _) = self.tree(
                Path::new(&tablespace.location),
                &tablespace.oid.to_string(),
                &rule,
            )?;
            self.close(open)?;
        }
        let (mut open, last) = self.tree(&pgdata, "data", &pgdata::rule)?;
        for entry in last {
            open = self.room(open)?;
            self.add(&mut open, entry)
                .map_err(|e| self.uploads.explain(e))?;
        }
        // Configuration files outside the data directory go in under their own name,
        // as barman puts them (Debian keeps them in /etc/postgresql).
        for file in [&facts.config_file, &facts.hba_file, &facts.ident_file] {
            let path = Path::new(file);
            if file.is_empty() || path.starts_with(&pgdata) {
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            open = self.room(open)?;
            open.tar
                .file(name, path)
                .map_err(|e| self.uploads.explain(e))?;
        }
        Ok(open)
    }

    /// `backup_label` (mode 0644, time 0, owned as the data directory) as the data
    /// tar's last member, then every object completed.
    fn close_with_label(&mut self, mut open: OpenTar, label: &str) -> Result<(), CopyError> {
        open.tar
            .bytes("backup_label", label.as_bytes(), 0o644, 0, self.owner)
            .map_err(|e| self.uploads.explain(e))?;
        self.close(open)
    }
}

/// The bytes the walk will read: the files' sizes now, for the progress display.
fn estimate(pgdata: &Path, tablespaces: &[Tablespace], major: u32) -> u64 {
    let mut total = 0u64;
    let mut count = |root: &Path, rule: &dyn Fn(&str, bool) -> Rule| {
        let _ = walk::walk(root, rule, &mut |entry| {
            if let Entry::File { path, .. } = entry {
                total += fs::symlink_metadata(path).map_or(0, |m| m.size());
            }
            Ok(())
        });
    };
    for tablespace in tablespaces {
        let rule = move |path: &str, is_dir: bool| pgdata::tablespace_rule(major, path, is_dir);
        count(Path::new(&tablespace.location), &rule);
    }
    count(pgdata, &pgdata::rule);
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_written_as_python_writes_a_float() {
        assert_eq!(python_float(1.230730), "1.23073");
        assert_eq!(python_float(5.0), "5.0");
        assert_eq!(python_float(0.0), "0.0");
        assert_eq!(python_float(12.3456789), "12.345679");
        assert_eq!(python_float(0.00005), "5e-05");
    }

    #[tokio::test]
    async fn a_key_found_holding_exactly_our_bytes_is_our_lost_answer_and_anything_else_is_refused()
    {
        let dir = tempfile::tempdir().unwrap();
        let store = walship_store::LocalStore::new(dir.path());
        let ours = Bytes::from_static(b"status=STARTED\n");
        put_once(&store, "base/x/backup.info", ours.clone())
            .await
            .unwrap();
        // The same put again, as a retry after a reset finds it: stored.
        put_once(&store, "base/x/backup.info", ours.clone())
            .await
            .unwrap();
        // Another writer's object under the key: refused, and left as it was.
        let err = put_once(
            &store,
            "base/x/backup.info",
            Bytes::from_static(b"status=DONE\n"),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        let (kept, _) = store.get("base/x/backup.info").await.unwrap();
        assert_eq!(kept, ours);
    }
}
