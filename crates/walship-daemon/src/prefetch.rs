//! Prefetching restore: while PostgreSQL replays one segment, the next ones download
//! in parallel into a spool directory beside (not inside) `pg_wal`; a `wal-fetch` for a
//! spooled segment is a rename.
//!
//! Only segments are prefetched (never `.history` or `.partial`: PostgreSQL asks for
//! those to decide timelines, and a guess would be wrong). The window follows the newest
//! timeline history PostgreSQL restored through the daemon: past a switch point it
//! holds the new timeline's segments, the ones recovery will ask for. A request for a
//! segment still downloading waits for that download instead of starting another.
//! Spooled files were verified like any fetch (checksum, page header) and are written
//! atomically, so a hit is as safe as a direct download.
//!
//! One spool serves one archive: a spooled file is never handed out for another. The
//! daemon has one for its store; CloudNativePG's sidecars make one for each other store
//! they restore from.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};
use walship_metrics::Metrics;
use walship_wal::{TimelineHistory, WalName};

use walship_engine::{Archiver, FetchOutcome};

#[derive(Default)]
struct Spool {
    /// Complete, verified files in the spool.
    ready: HashSet<String>,
    /// Downloads running now.
    running: HashSet<String>,
    /// Names the archive did not have (the end of the archive, for now).
    missing: HashSet<String>,
    /// The newest timeline history restored so far: where the window crosses timelines.
    history: Option<TimelineHistory>,
    /// How often failed downloads are warned about.
    failures: Quieted,
}

/// How long after a warning about failed read-ahead downloads the next ones are only
/// counted: with the spool full or the store failing, every file of the window fails
/// for every restore request, about ten lines a segment, which would drown the log.
const QUIET_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// Lets one warning through per [`QUIET_FOR`], counting the ones held back meanwhile.
#[derive(Default)]
struct Quieted {
    quiet_until: Option<std::time::Instant>,
    held_back: u64,
}

impl Quieted {
    /// Whether to warn now; if so, how many warnings were held back since the last one.
    fn admit(&mut self, now: std::time::Instant) -> Option<u64> {
        if self.quiet_until.is_some_and(|until| now < until) {
            self.held_back += 1;
            return None;
        }
        self.quiet_until = Some(now + QUIET_FOR);
        Some(std::mem::take(&mut self.held_back))
    }
}

/// Reads segments ahead of restore requests from one archive into its spool directory.
pub struct Prefetcher {
    dir: PathBuf,
    /// Segments ahead of the latest request to keep downloaded.
    window: usize,
    /// Upper bound on spooled bytes (with the window, bounds memory and disk).
    max_bytes: u64,
    spool: Mutex<Spool>,
    /// Signalled whenever a download ends (stored, missing or failed).
    finished: Notify,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
}

impl Prefetcher {
    /// Prepares an empty spool: leftovers of an earlier run are removed, since nothing
    /// proves which archive they came from.
    pub fn new(
        dir: &Path,
        window: usize,
        max_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Prefetcher> {
        // Its content, not the directory itself: that may be a volume's mount point.
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if std::fs::symlink_metadata(&path)?.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(Prefetcher {
            dir: dir.to_owned(),
            window,
            max_bytes,
            spool: Mutex::new(Spool::default()),
            finished: Notify::new(),
            metrics,
            tracker: TaskTracker::new(),
        })
    }

    /// Serves a restore request: from the spool when prefetched, else from the store;
    /// then moves the window past `name`.
    pub async fn fetch(
        self: &Arc<Self>,
        archiver: &Archiver,
        name: &str,
        dest: &Path,
    ) -> Result<FetchOutcome, String> {
        let wal = WalName::parse(name).map_err(|e| e.to_string())?;
        let spooled = self.dir.join(name);
        let outcome = if self.take_spooled(name).await && move_into_place(&spooled, dest).is_ok() {
            self.metrics.restore_hits_total.inc();
            let bytes = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
            debug!(wal = %name, "restored from the prefetch spool");
            FetchOutcome::Restored {
                key: format!("spool:{name}"),
                bytes,
            }
        } else {
            self.metrics.restore_misses_total.inc();
            archiver
                .fetch(name, dest)
                .await
                .map_err(|e| e.to_string())?
        };
        if let FetchOutcome::Restored { bytes, .. } = &outcome {
            if wal.is_history() {
                self.learn_history(&wal, dest);
            } else if wal.is_segment() {
                self.advance(archiver, &wal, *bytes);
            }
        }
        Ok(outcome)
    }

    /// Whether a read-ahead found `name` missing from the archive; the answer is given
    /// once (the name is forgotten), as the file may be archived any moment.
    pub fn take_missing(&self, name: &str) -> bool {
        self.spool.lock().expect("spool lock").missing.remove(name)
    }

    /// Claims `name` from the spool, waiting first if its download is running. `false`
    /// when it is not (or no longer) there: the caller downloads it itself.
    async fn take_spooled(&self, name: &str) -> bool {
        loop {
            let finished = self.finished.notified();
            tokio::pin!(finished);
            {
                let mut spool = self.spool.lock().expect("spool lock");
                if spool.ready.remove(name) {
                    return true;
                }
                if !spool.running.contains(name) {
                    return false;
                }
                // Registered before the lock is released, so the end of the download
                // cannot slip between the check and the wait.
                finished.as_mut().enable();
            }
            finished.await;
        }
    }

    /// Remembers the timeline history in a restored `.history` file if it is the newest
    /// seen: PostgreSQL follows the newest timeline (`recovery_target_timeline =
    /// 'latest'`), and so does the window from then on.
    fn learn_history(&self, wal: &WalName, restored: &Path) {
        let Ok(text) = std::fs::read_to_string(restored) else {
            return;
        };
        let Some(history) = TimelineHistory::parse(wal.timeline(), &text) else {
            warn!(wal = %wal, "not a timeline history file; prefetch ignores it");
            return;
        };
        let mut spool = self.spool.lock().expect("spool lock");
        if spool
            .history
            .as_ref()
            .is_none_or(|h| h.newest() < history.newest())
        {
            debug!(wal = %wal, "prefetch follows timeline {}", history.newest());
            spool.history = Some(history);
        }
    }

    /// Drops spooled files behind `current` and starts downloads for the window after it.
    fn advance(self: &Arc<Self>, archiver: &Archiver, current: &WalName, segment_size: u64) {
        if segment_size == 0 || self.window == 0 {
            return;
        }
        let max_files = (self.max_bytes / segment_size).max(1) as usize;
        let window = self.window.min(max_files);
        let mut spool = self.spool.lock().expect("spool lock");
        let wanted: Vec<String> = match &spool.history {
            Some(history) if history.contains(current.timeline()) => {
                history.following_segments(current, window, segment_size)
            }
            _ => std::iter::successors(current.next_segment(segment_size), |n| {
                n.next_segment(segment_size)
            })
            .take(window)
            .collect(),
        }
        .iter()
        .map(ToString::to_string)
        .collect();
        let wanted_set: HashSet<&String> = wanted.iter().collect();
        let stale: Vec<String> = spool
            .ready
            .iter()
            .filter(|n| !wanted_set.contains(n))
            .cloned()
            .collect();
        for name in stale {
            spool.ready.remove(&name);
            let _ = std::fs::remove_file(self.dir.join(&name));
        }
        // A name missing earlier may have been archived since (a primary still running).
        spool.missing.retain(|n| wanted_set.contains(n));
        let to_start: Vec<String> = wanted
            .into_iter()
            .filter(|n| {
                !spool.ready.contains(n) && !spool.running.contains(n) && !spool.missing.contains(n)
            })
            .collect();
        for name in &to_start {
            spool.running.insert(name.clone());
        }
        drop(spool);
        for name in to_start {
            let this = Arc::clone(self);
            let archiver = archiver.clone();
            let span = info_span!("prefetch", wal = %name);
            self.tracker.spawn(
                async move {
                    let path = this.dir.join(&name);
                    let result = archiver.fetch_ahead(&name, &path).await;
                    {
                        let mut spool = this.spool.lock().expect("spool lock");
                        spool.running.remove(&name);
                        match result {
                            Ok(FetchOutcome::Restored { bytes, .. }) => {
                                this.metrics.restore_prefetched_bytes_total.inc_by(bytes);
                                spool.ready.insert(name);
                            }
                            Ok(FetchOutcome::NotFound) => {
                                spool.missing.insert(name);
                            }
                            Err(e) => match spool.failures.admit(std::time::Instant::now()) {
                                Some(0) => warn!("prefetch failed (will fetch on demand): {e}"),
                                Some(held_back) => warn!(
                                    "prefetch failed (will fetch on demand): {e}; {held_back} \
                                     more failed in the last {} s",
                                    QUIET_FOR.as_secs()
                                ),
                                None => debug!("prefetch failed (will fetch on demand): {e}"),
                            },
                        }
                    }
                    this.finished.notify_waiters();
                }
                .instrument(span),
            );
        }
    }
}

impl Drop for Prefetcher {
    /// Every download holds the prefetcher, so none is running now: what is spooled is
    /// of no use to anyone else.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Renames the spooled file onto `dest`; across filesystems, copies it durably
/// ([`walship_store::durable`]), so `dest` is never partial.
fn move_into_place(spooled: &Path, dest: &Path) -> std::io::Result<()> {
    use walship_store::durable;
    match std::fs::rename(spooled, dest) {
        Ok(()) => {
            if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
                durable::sync_dir(dir)?;
            }
            Ok(())
        }
        Err(e) if e.raw_os_error() == Some(18) => {
            // EXDEV: the spool is on another filesystem.
            durable::write(
                dest,
                durable::Publish::Replace,
                |file| std::io::copy(&mut std::fs::File::open(spooled)?, file).map(drop),
                |e| e,
            )?;
            let _ = std::fs::remove_file(spooled);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use walship_engine::ArchiverSettings;
    use walship_engine::test_support::segment_bytes;
    use walship_store::LocalStore;
    use walship_wal::Layout;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../walship-wal/testdata/pg15");

    #[test]
    fn failed_downloads_are_warned_about_once_per_quiet_period_with_the_count_held_back() {
        let mut failures = Quieted::default();
        let start = std::time::Instant::now();
        assert_eq!(
            failures.admit(start),
            Some(0),
            "the first one is warned about"
        );
        for i in 1..=9 {
            let at = start + std::time::Duration::from_secs(i);
            assert_eq!(failures.admit(at), None, "held back at {i} s");
        }
        assert_eq!(
            failures.admit(start + QUIET_FOR),
            Some(9),
            "the next warning says how many were held back"
        );
        assert_eq!(failures.admit(start + QUIET_FOR), None);
        assert_eq!(failures.admit(start + 2 * QUIET_FOR), Some(1));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_window_crosses_into_the_timeline_of_the_restored_history() {
        let dir = tempfile::tempdir().unwrap();
        let archiver = Archiver::new(
            Arc::new(LocalStore::new(dir.path().join("store"))),
            Layout::new("prefix", "pg"),
            ArchiverSettings::default(),
        );
        // Timeline 1 ended inside segment 0A (see the history file): the archive has
        // 06-09 on timeline 1 and 0A-0C on timeline 2, as after a promotion.
        let pg_wal = dir.path().join("pg_wal");
        std::fs::create_dir_all(&pg_wal).unwrap();
        let mut names: Vec<String> = ["06", "07", "08", "09"]
            .iter()
            .map(|s| format!("0000000100000000000000{s}"))
            .collect();
        names.extend(
            ["0A", "0B", "0C"]
                .iter()
                .map(|s| format!("0000000200000000000000{s}")),
        );
        for name in &names {
            std::fs::write(pg_wal.join(name), segment_bytes(name, 1)).unwrap();
        }
        std::fs::copy(
            Path::new(FIXTURES).join("00000002.history"),
            pg_wal.join("00000002.history"),
        )
        .unwrap();
        for name in names.iter().map(String::as_str).chain(["00000002.history"]) {
            archiver.push(&pg_wal.join(name)).await.unwrap();
        }

        let metrics = Arc::new(Metrics::new());
        let prefetcher = Arc::new(
            Prefetcher::new(&dir.path().join("spool"), 3, 1 << 30, metrics.clone()).unwrap(),
        );
        let restore = dir.path().join("RECOVERYXLOG");
        // What PostgreSQL asks for with recovery_target_timeline = 'latest'.
        for name in [
            "00000002.history",
            "000000010000000000000007",
            "000000010000000000000008",
            "000000010000000000000009",
            "00000002000000000000000A",
        ] {
            let outcome = prefetcher.fetch(&archiver, name, &restore).await.unwrap();
            assert!(matches!(outcome, FetchOutcome::Restored { .. }), "{name}");
            let expected = if name.ends_with(".history") {
                std::fs::read(pg_wal.join(name)).unwrap()
            } else {
                segment_bytes(name, 1)
            };
            assert!(
                std::fs::read(&restore).unwrap() == expected,
                "{name} differs"
            );
        }
        // 08, 09 and timeline 2's 0A came from the spool; the history file and the
        // first segment could not have.
        assert_eq!(metrics.restore_hits_total.get(), 3);
        assert_eq!(metrics.restore_misses_total.get(), 2);
    }
}
