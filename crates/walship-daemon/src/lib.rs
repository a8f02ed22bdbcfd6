//! The long-running daemon: watches `pg_wal/archive_status`, ships every `.ready` file
//! concurrently before PostgreSQL asks, remembers what the store confirmed, and answers
//! `wal-push` over a Unix socket so PostgreSQL's serial archive_command returns at once.
//!
//! Components, composed in [`Daemon::run`]:
//! - a notify watcher on `archive_status` (plus a periodic rescan as a safety net) that
//!   wakes the dispatcher, and the scan itself ([`status`]);
//! - the queue (`queue.rs`), pure bookkeeping: up to `max_parallel` uploads (one that
//!   stalls gives its slot up after [`STALLED_UPLOAD`], up to twice as many), oldest
//!   first (history files before segments, as PostgreSQL orders them), a failing file
//!   backed off with jittered exponential delays, and the acks;
//! - the upload-and-ack step (`upload.rs`): one file through the archiver, then the ack
//!   in the [`journal`](journal::Journal), written only after the store confirmed;
//! - the socket server ([`socket::server`], answering the lines of
//!   [`socket::protocol`]), where a `wal-push` for an acked file returns at once, one in
//!   flight waits for it, and an unknown one is shipped ahead of the queue.
//!
//! The other end lives here too: [`client`] is what `wal-push`, `wal-fetch` and `check`
//! do, asking the daemon through [`socket::client`] and falling back to the archiver
//! themselves when no daemon answers, so the binary only wires and maps results to exit
//! statuses.
//!
//! Nothing here renames `.ready` to `.done`: only PostgreSQL does, after wal-push exits 0.
//!
//! The rules for one file (validate, hash, compress, create-only upload, compare on
//! conflict, verify on fetch) are `walship-engine`'s [`Archiver`]; this crate decides
//! when and how many, and remembers what was confirmed. It knows nothing of clouds,
//! credentials or configuration files: the binary hands it a built archiver, and a new
//! one on reload.
//!
//! Dependencies: `walship-engine` (the archiving rules), `walship-wal` (names),
//! `walship-store` (typed errors, for the retry reasons), `walship-metrics` (counters
//! and health), `tokio` (the socket, timers, file I/O), `tokio-util` (cancellation and
//! task tracking for shutdown), `notify` (inotify on `archive_status`), `thiserror`,
//! `tracing`.

pub mod client;
pub mod journal;
mod placement;
pub mod prefetch;
mod queue;
pub mod reload;
pub mod socket;
pub mod status;
mod upload;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};
use walship_engine::Archiver;
use walship_metrics::{Health, Metrics};
use walship_wal::WalName;

use journal::{FileIdentity, Journal};
use placement::outside_data_directory;
use queue::{Claim, Queue, Ticket, backoff_delay};
use socket::{FetchReply, PushReply};
use upload::Uploader;

/// How long an upload holds one of the `max_parallel` slots. Far more than a healthy
/// segment upload takes (a 16 MiB segment needs 1.6 s at 10 MiB/s), far less than a
/// silent request's deadline (`walship_store::deadline`, 25 s and more): after it, the
/// next file starts beside the stalled one.
const STALLED_UPLOAD: Duration = Duration::from_secs(10);

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// PostgreSQL's data directory; WAL is read from `<pgdata>/pg_wal`.
    pub pgdata: PathBuf,
    /// Where acks are recorded (outside the data directory).
    pub journal_dir: PathBuf,
    /// The Unix socket `wal-push` asks; `None` disables it.
    pub socket_path: Option<PathBuf>,
    /// Uploads at once (`wal.maxParallel`).
    pub max_parallel: usize,
    /// Full rescan period, a safety net for missed notifications.
    pub rescan_interval: Duration,
    /// How long a `wal-push` request may wait for its upload.
    pub push_wait: Duration,
    /// How long shutdown waits for in-flight uploads before abandoning them.
    pub shutdown_grace: Duration,
    /// Where restore prefetches land; on the same filesystem as `pg_wal` (so a hit is a
    /// rename) but outside it. Emptied at start.
    pub spool_dir: PathBuf,
    /// Segments to prefetch ahead of the latest restore request (0 disables).
    pub prefetch_window: usize,
    /// Upper bound on the bytes the prefetch window may hold.
    pub prefetch_max_bytes: u64,
}

struct Inner {
    config: DaemonConfig,
    pg_wal: PathBuf,
    /// Replaced as a whole on reload; each upload keeps the one it started with.
    archiver: RwLock<Archiver>,
    max_parallel: AtomicUsize,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    queue: Mutex<Queue>,
    uploader: Uploader,
    /// Wakes the dispatcher: a notification, a finished upload, shutdown.
    wake: Notify,
    /// Set when `archive_status` may have changed.
    rescan: std::sync::atomic::AtomicBool,
    /// Scans of `archive_status` so far (a scan costs a directory read and a stat per
    /// file; tests check that an idle daemon does not scan in a loop).
    scans: std::sync::atomic::AtomicU64,
    tracker: TaskTracker,
    prefetch: Arc<prefetch::Prefetcher>,
}

/// The daemon. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

/// The longest path a Unix socket can have on Linux: `sun_path`'s 108 bytes, less the
/// terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("watching {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("socket {path}: another walship daemon is already listening there")]
    SocketInUse { path: PathBuf },
    #[error(
        "--socket {path}: {len} bytes long; a Unix socket's path can be at most \
         {MAX_SOCKET_PATH} bytes: choose a shorter one"
    )]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error(
        "{flag} {path}: is inside {inside} ({what}); expected a directory outside the \
         data directory and pg_wal: what lies there is copied into base backups, replicas \
         and restores, where a stale journal or spool would be taken as this server's"
    )]
    InsideDataDirectory {
        flag: &'static str,
        path: PathBuf,
        inside: PathBuf,
        what: &'static str,
    },
}

impl Daemon {
    /// Loads the journal and prepares the daemon; nothing runs until [`Daemon::run`].
    pub fn new(
        config: DaemonConfig,
        archiver: Archiver,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Daemon, DaemonError> {
        let pg_wal = config.pgdata.join("pg_wal");
        if !pg_wal.join("archive_status").is_dir() {
            return Err(DaemonError::Io {
                path: pg_wal.join("archive_status"),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not a PostgreSQL data directory's archive_status (check --pgdata)",
                ),
            });
        }
        for (flag, dir) in [
            ("--journal-dir", &config.journal_dir),
            ("--spool-dir", &config.spool_dir),
        ] {
            outside_data_directory(flag, dir, &config.pgdata, &pg_wal)?;
        }
        let (journal, acked) =
            Journal::open(&config.journal_dir).map_err(|source| DaemonError::Io {
                path: config.journal_dir.clone(),
                source,
            })?;
        info!(acked = acked.len(), journal = %config.journal_dir.display(), "journal loaded");
        let prefetch = prefetch::Prefetcher::new(
            &config.spool_dir,
            config.prefetch_window,
            config.prefetch_max_bytes,
            metrics.clone(),
        )
        .map_err(|source| DaemonError::Io {
            path: config.spool_dir.clone(),
            source,
        })?;
        // Every request a store of this process tries again counts, not only the files
        // the dispatcher retries: the store's own retries are where throttling and
        // resets show first.
        walship_store::retry::observe_retries({
            let metrics = metrics.clone();
            move |kind| metrics.retries_total.inc(upload::retry_reason_of(kind))
        });
        Ok(Daemon {
            inner: Arc::new(Inner {
                max_parallel: AtomicUsize::new(config.max_parallel.max(1)),
                config,
                pg_wal: pg_wal.clone(),
                archiver: RwLock::new(archiver),
                queue: Mutex::new(Queue::new(acked, backoff_delay, STALLED_UPLOAD)),
                uploader: Uploader {
                    pg_wal,
                    journal,
                    metrics: metrics.clone(),
                    health: health.clone(),
                },
                metrics,
                health,
                wake: Notify::new(),
                rescan: std::sync::atomic::AtomicBool::new(true),
                scans: std::sync::atomic::AtomicU64::new(0),
                tracker: TaskTracker::new(),
                prefetch: Arc::new(prefetch),
            }),
        })
    }

    /// Runs until `shutdown` is cancelled, then stops taking work, waits up to the grace
    /// period for in-flight uploads and returns.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), DaemonError> {
        let inner = &self.inner;
        let _watcher = self.watch_archive_status()?;
        let socket = match &inner.config.socket_path {
            Some(path) => Some(socket::Server::bind(path).await?),
            None => None,
        };
        let socket_task = socket.map(|server| {
            let daemon = self.clone();
            let token = shutdown.clone();
            tokio::spawn(async move { server.serve(daemon, token).await })
        });
        self.probe_store().await;
        let mut next_rescan = Instant::now();
        while !shutdown.is_cancelled() {
            if Instant::now() >= next_rescan {
                inner.rescan.store(true, Ordering::SeqCst);
                next_rescan = Instant::now() + inner.config.rescan_interval;
            }
            if inner.rescan.swap(false, Ordering::SeqCst) {
                self.scan();
            }
            let wait = self
                .dispatch()
                .min(next_rescan.saturating_duration_since(Instant::now()));
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = inner.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        info!(
            in_flight = self.in_flight_count(),
            "shutting down: no new uploads; waiting for those in flight"
        );
        inner.tracker.close();
        if tokio::time::timeout(inner.config.shutdown_grace, inner.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                in_flight = self.in_flight_count(),
                "grace period over: abandoning uploads in flight (none of them was acknowledged)"
            );
        }
        // The socket server removes its socket as it stops: wait for that, so a wal-push
        // started after we exit uploads directly instead of finding a stale socket.
        if let Some(task) = socket_task {
            let _ = task.await;
        }
        Ok(())
    }

    /// Uses `archiver` (a reloaded configuration) for every upload from now on; uploads
    /// in flight finish with the one they started with.
    pub fn reconfigure(&self, archiver: Archiver, max_parallel: usize) {
        *self.inner.archiver.write().expect("archiver lock") = archiver;
        self.inner
            .max_parallel
            .store(max_parallel.max(1), Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    /// What `/readyz` answers from.
    pub fn health(&self) -> &Arc<Health> {
        &self.inner.health
    }

    /// The archiver in use now (a reload replaces it).
    pub fn archiver(&self) -> Archiver {
        self.inner.archiver.read().expect("archiver lock").clone()
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inner.queue.lock().expect("queue lock")
    }

    fn in_flight_count(&self) -> usize {
        self.queue().in_flight()
    }

    /// One notify watcher on `archive_status`; every event just asks for a rescan,
    /// which also covers overflows (a rescan finds whatever was missed).
    fn watch_archive_status(&self) -> Result<notify::RecommendedWatcher, DaemonError> {
        use notify::{RecursiveMode, Watcher};
        let path = self.inner.pg_wal.join("archive_status");
        let weak = Arc::downgrade(&self.inner);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                match &event {
                    Err(e) => warn!("archive_status watcher: {e}; rescanning"),
                    // inotify also reports opens and reads, and every scan opens the
                    // directory: reacting to those would rescan in a loop. Only a
                    // change to the directory's entries matters.
                    Ok(event) if event.kind.is_access() => return,
                    Ok(_) => {}
                }
                if let Some(inner) = weak.upgrade() {
                    inner.rescan.store(true, Ordering::SeqCst);
                    inner.wake.notify_one();
                }
            })
            .map_err(|source| DaemonError::Watch {
                path: path.clone(),
                source,
            })?;
        watcher
            .watch(&path, RecursiveMode::NonRecursive)
            .map_err(|source| DaemonError::Watch {
                path: path.clone(),
                source,
            })?;
        Ok(watcher)
    }

    /// A cheap reachability and authorization check: a HEAD of a key that does not
    /// exist (listing a large archive would take many requests).
    async fn probe_store(&self) {
        let archiver = self.archiver();
        let probe = format!("{}walship-probe", archiver.layout().wals_prefix());
        match archiver.store().head(&probe).await {
            Ok(_) => {
                info!(store = %archiver.store().describe(), "store reachable");
                self.inner.health.record_store_probe(true);
            }
            Err(e) => {
                error!("store probe failed: {e}");
                self.inner.health.record_store_probe(false);
            }
        }
    }

    /// Re-reads `archive_status`: rebuilds the queue, forgets acks PostgreSQL has marked
    /// done, and updates the backlog gauges.
    fn scan(&self) {
        let inner = &self.inner;
        inner.scans.fetch_add(1, Ordering::Relaxed);
        if let Some(socket) = &inner.config.socket_path {
            let fallbacks = socket::take_fallbacks(socket);
            if fallbacks > 0 {
                warn!(
                    fallbacks,
                    "wal-push uploaded segments itself while this daemon was not answering"
                );
                inner
                    .metrics
                    .wal_push_fallback_uploads_total
                    .inc_by(fallbacks as u64);
            }
        }
        let ready = match status::scan(&inner.pg_wal) {
            Ok(r) => r,
            Err(e) => {
                error!(
                    "scanning {}: {e}",
                    inner.pg_wal.join("archive_status").display()
                );
                return;
            }
        };
        let refreshed = self.queue().refresh(&ready);
        for name in &refreshed.done {
            if let Err(e) = inner.uploader.journal.forget(name) {
                warn!(wal = %name, "cannot drop the journal record: {e}");
            }
        }
        inner
            .metrics
            .ready_backlog_files
            .set(refreshed.backlog_files);
        inner
            .metrics
            .ready_backlog_bytes
            .set(refreshed.backlog_bytes);
        inner.metrics.oldest_ready_age_seconds.set(
            refreshed
                .oldest_ready
                .and_then(|o| SystemTime::now().duration_since(o).ok())
                .map_or(0.0, |d| d.as_secs_f64()),
        );
    }

    /// Starts uploads while there is room; returns how long until a backed-off file is
    /// due (or a long time when none is).
    fn dispatch(&self) -> Duration {
        let max_parallel = self.inner.max_parallel.load(Ordering::SeqCst);
        let (started, next_due) = self.queue().start_due(max_parallel, Instant::now());
        for ticket in started {
            self.spawn_upload(ticket);
        }
        next_due
    }

    /// Runs the upload-and-ack step for `ticket` and hands the result back to the queue
    /// (and then to whoever waits for it).
    fn spawn_upload(&self, ticket: Ticket) {
        let daemon = self.clone();
        let span = info_span!("upload", wal = %ticket.name());
        self.inner.tracker.spawn(
            async move {
                let inner = &daemon.inner;
                if let Some(not_before) = ticket.not_before() {
                    tokio::time::sleep_until(not_before.into()).await;
                }
                let archiver = daemon.archiver();
                let result = inner.uploader.upload(&archiver, ticket.name()).await;
                let outcome = match &result {
                    Ok(record) => Ok(record.clone()),
                    Err(failed) => Err(failed.retry_after),
                };
                let attempts = daemon.queue().finish(&ticket, outcome, Instant::now());
                if let Some(attempts) = attempts {
                    debug!(attempts, "will retry");
                }
                ticket.complete(
                    result
                        .map(|record| record.sha256)
                        .map_err(|failed| failed.message),
                );
                inner.wake.notify_one();
            }
            .instrument(span),
        );
    }

    /// What `wal-fetch` gets: `name` restored to `dest` from the prefetch spool or the
    /// store, and the window moved on.
    pub async fn request_fetch(&self, name: &str, dest: &Path) -> FetchReply {
        let archiver = self.archiver();
        match self.inner.prefetch.fetch(&archiver, name, dest).await {
            Ok(walship_engine::FetchOutcome::Restored { key, .. }) => FetchReply::Restored { key },
            Ok(walship_engine::FetchOutcome::NotFound) => FetchReply::NotFound,
            Err(e) => FetchReply::Failed(e),
        }
    }

    /// Whether reading ahead found `name` missing from the archive (the end of the
    /// archive, for now). Answered once per finding: the next ask goes to the store.
    pub fn take_known_missing(&self, name: &str) -> bool {
        self.inner.prefetch.take_missing(name)
    }

    /// What `wal-push` gets for `path`: answered from the journal when the same file is
    /// acked, else after waiting (at most `push_wait`) for its upload, started now if it
    /// was not running.
    pub async fn request_push(&self, path: &Path) -> PushReply {
        let started = Instant::now();
        let reply = self.request_push_inner(path).await;
        self.inner
            .metrics
            .archive_command_ack_seconds
            .observe(started.elapsed().as_secs_f64());
        reply
    }

    async fn request_push_inner(&self, path: &Path) -> PushReply {
        let inner = &self.inner;
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return PushReply::NotMine("no file name".to_owned());
        };
        if WalName::parse(name).is_err() {
            return PushReply::NotMine(format!("{name:?} is not a WAL file name"));
        }
        let ours = inner.pg_wal.join(name);
        let same_dir = match (
            path.parent().map(Path::canonicalize),
            inner.pg_wal.canonicalize(),
        ) {
            (Some(Ok(a)), Ok(b)) => a == b,
            _ => false,
        };
        if !same_dir {
            return PushReply::NotMine(format!(
                "{} is not in this daemon's {}",
                path.display(),
                inner.pg_wal.display()
            ));
        }
        let identity = match FileIdentity::of(&ours) {
            Ok(id) => id,
            Err(e) => return PushReply::Failed(format!("{}: {e}", ours.display())),
        };
        let claim = self.queue().claim(name, &identity, Instant::now());
        let mut rx = match claim {
            Claim::Acked { sha256 } => return PushReply::Archived { sha256 },
            Claim::Running(rx) => rx,
            Claim::Start(ticket, rx) => {
                self.spawn_upload(ticket);
                rx
            }
        };
        match tokio::time::timeout(inner.config.push_wait, rx.wait_for(Option::is_some)).await {
            Ok(Ok(result)) => match result.clone() {
                Some(Ok(sha256)) => PushReply::Archived { sha256 },
                Some(Err(e)) => PushReply::Failed(e),
                None => PushReply::Failed("upload ended without a result".to_owned()),
            },
            Ok(Err(_)) => PushReply::Failed("the upload was abandoned".to_owned()),
            Err(_) => PushReply::Failed(format!(
                "still uploading after {:?}; PostgreSQL will ask again",
                inner.config.push_wait
            )),
        }
    }
}

/// The socket server answers through the daemon's own request methods.
impl socket::Handler for Daemon {
    fn push(&self, path: &Path) -> impl Future<Output = PushReply> + Send {
        self.request_push(path)
    }

    fn fetch(&self, name: &str, dest: &Path) -> impl Future<Output = FetchReply> + Send {
        self.request_fetch(name, dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use walship_engine::ArchiverSettings;
    use walship_engine::test_support::segment_bytes;
    use walship_store::LocalStore;
    use walship_wal::Layout;

    /// inotify reports the daemon's own opens of `archive_status`; a watcher that
    /// rescanned on those kept one core busy while idle. Scans are counted, not timed:
    /// with the periodic rescan an hour away, only real changes may cause one.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_idle_daemon_scans_only_when_archive_status_changes() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("pgdata");
        let pg_wal = pgdata.join("pg_wal");
        std::fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
        let archiver = Archiver::new(
            Arc::new(LocalStore::new(dir.path().join("store"))),
            Layout::new("prefix", "pg"),
            ArchiverSettings::default(),
        );
        let config = DaemonConfig {
            pgdata,
            journal_dir: dir.path().join("journal"),
            socket_path: None,
            max_parallel: 2,
            rescan_interval: Duration::from_secs(3600),
            push_wait: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            spool_dir: dir.path().join("spool"),
            prefetch_window: 0,
            prefetch_max_bytes: 0,
        };
        let daemon = Daemon::new(
            config,
            archiver,
            Arc::new(Metrics::new()),
            Arc::new(walship_metrics::Health::new(Duration::from_secs(60))),
        )
        .unwrap();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn({
            let (daemon, shutdown) = (daemon.clone(), shutdown.clone());
            async move { daemon.run(shutdown).await }
        });
        let scans = || daemon.inner.scans.load(Ordering::Relaxed);
        let wait_for = |what: &str, done: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !done() {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_for("the first scan", &|| scans() >= 1);
        // Idle: give a looping watcher ample time to show itself.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let idle = scans();
        assert!(idle <= 2, "{idle} scans of an unchanged archive_status");

        // A new .ready file is still noticed, through the watcher alone.
        let name = "000000010000000000000006";
        std::fs::write(pg_wal.join(name), segment_bytes(name, 1)).unwrap();
        std::fs::write(pg_wal.join(format!("archive_status/{name}.ready")), b"").unwrap();
        let acked = || daemon.inner.queue.lock().unwrap().is_acked(name);
        wait_for("the new segment's upload", &acked);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let after = scans() - idle;
        assert!(
            (1..=6).contains(&after),
            "{after} scans for one new .ready file"
        );
        shutdown.cancel();
        running.await.unwrap().unwrap();
    }

    /// A journal or spool inside the data directory travels into base backups, replicas
    /// and restores; so does one inside pg_wal, even when pg_wal is a link elsewhere.
    #[test]
    fn a_journal_or_spool_inside_the_data_directory_or_pg_wal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("pgdata");
        let wal_volume = dir.path().join("wal-volume");
        std::fs::create_dir_all(wal_volume.join("archive_status")).unwrap();
        std::fs::create_dir_all(&pgdata).unwrap();
        std::os::unix::fs::symlink(&wal_volume, pgdata.join("pg_wal")).unwrap();
        let daemon_with = |journal: PathBuf, spool: PathBuf| {
            let config = DaemonConfig {
                pgdata: pgdata.clone(),
                journal_dir: journal,
                socket_path: None,
                max_parallel: 1,
                rescan_interval: Duration::from_secs(3600),
                push_wait: Duration::from_secs(30),
                shutdown_grace: Duration::from_secs(5),
                spool_dir: spool,
                prefetch_window: 0,
                prefetch_max_bytes: 0,
            };
            let archiver = Archiver::new(
                Arc::new(LocalStore::new(dir.path().join("store"))),
                Layout::new("prefix", "pg"),
                ArchiverSettings::default(),
            );
            Daemon::new(
                config,
                archiver,
                Arc::new(Metrics::new()),
                Arc::new(walship_metrics::Health::new(Duration::from_secs(60))),
            )
            .map(drop)
            .map_err(|e| e.to_string())
        };
        let outside = |name: &str| dir.path().join(name);
        for (journal, spool, flag, inside) in [
            (
                pgdata.join("walship-journal"),
                outside("spool"),
                "--journal-dir",
                "the data directory",
            ),
            (
                pgdata.join("x/../y/journal"),
                outside("spool"),
                "--journal-dir",
                "the data directory",
            ),
            (
                outside("journal"),
                pgdata.join("pg_wal/spool"),
                "--spool-dir",
                "pg_wal",
            ),
            (
                outside("journal"),
                wal_volume.join("spool"),
                "--spool-dir",
                "pg_wal",
            ),
            (
                outside("journal"),
                pgdata.clone(),
                "--spool-dir",
                "the data directory",
            ),
        ] {
            let err = daemon_with(journal.clone(), spool.clone()).unwrap_err();
            assert!(err.starts_with(flag), "{journal:?} {spool:?}: {err}");
            assert!(err.contains(inside), "{journal:?} {spool:?}: {err}");
            assert!(
                !journal.exists() || !journal.starts_with(&pgdata),
                "created {journal:?}"
            );
        }
        daemon_with(outside("journal"), outside("spool")).unwrap();
    }
}
