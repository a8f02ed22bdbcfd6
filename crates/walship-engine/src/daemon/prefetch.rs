//! Prefetching restore: while PostgreSQL replays one segment, the next ones download
//! in parallel into a spool directory beside (not inside) `pg_wal`; a `wal-fetch` for a
//! spooled segment is a rename.
//!
//! Only segments are prefetched (never `.history` or `.partial`: PostgreSQL asks for
//! those to decide timelines, and a guess would be wrong), following the timeline of the
//! latest request, so a timeline switch read from a `.history` file redirects the window
//! at the next request. Spooled files were verified like any fetch (checksum, page
//! header) and are written atomically, so a hit is as safe as a direct download.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};
use walship_metrics::Metrics;
use walship_wal::WalName;

use crate::{Archiver, FetchOutcome};

#[derive(Default)]
struct Spool {
    /// Complete, verified files in the spool.
    ready: HashSet<String>,
    /// Downloads running now.
    running: HashSet<String>,
    /// Names the archive did not have (the end of the archive, for now).
    missing: HashSet<String>,
}

pub(super) struct Prefetcher {
    dir: PathBuf,
    /// Segments ahead of the latest request to keep downloaded.
    window: usize,
    /// Upper bound on spooled bytes (with the window, bounds memory and disk).
    max_bytes: u64,
    spool: Mutex<Spool>,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
}

impl Prefetcher {
    /// Prepares an empty spool: leftovers of an earlier run are removed, since nothing
    /// proves which archive they came from.
    pub(super) fn new(
        dir: &Path,
        window: usize,
        max_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Prefetcher> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        Ok(Prefetcher {
            dir: dir.to_owned(),
            window,
            max_bytes,
            spool: Mutex::new(Spool::default()),
            metrics,
            tracker: TaskTracker::new(),
        })
    }

    /// Serves a restore request: from the spool when prefetched, else from the store;
    /// then moves the window past `name`.
    pub(super) async fn fetch(
        self: &Arc<Self>,
        archiver: &Archiver,
        name: &str,
        dest: &Path,
    ) -> Result<FetchOutcome, String> {
        let wal = WalName::parse(name).map_err(|e| e.to_string())?;
        let spooled = self.dir.join(name);
        let hit = self.spool.lock().expect("spool lock").ready.remove(name);
        let outcome = if hit && move_into_place(&spooled, dest).is_ok() {
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
        if let (true, FetchOutcome::Restored { bytes, .. }) = (wal.is_segment(), &outcome) {
            self.advance(archiver, &wal, *bytes);
        }
        Ok(outcome)
    }

    /// Drops spooled files behind `current` and starts downloads for the window after it.
    fn advance(self: &Arc<Self>, archiver: &Archiver, current: &WalName, segment_size: u64) {
        if segment_size == 0 || self.window == 0 {
            return;
        }
        let max_files = (self.max_bytes / segment_size).max(1) as usize;
        let window = self.window.min(max_files);
        let mut wanted = Vec::with_capacity(window);
        let mut next = *current;
        for _ in 0..window {
            match next.next_segment(segment_size) {
                Some(n) => {
                    wanted.push(n.to_string());
                    next = n;
                }
                None => break,
            }
        }
        let wanted_set: HashSet<&String> = wanted.iter().collect();
        let mut spool = self.spool.lock().expect("spool lock");
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
                    let result = archiver.fetch(&name, &path).await;
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
                        Err(e) => warn!("prefetch failed (will fetch on demand): {e}"),
                    }
                }
                .instrument(span),
            );
        }
    }
}

/// Renames the spooled file onto `dest`; across filesystems, copies next to `dest`,
/// fsyncs and renames, so `dest` is never partial.
fn move_into_place(spooled: &Path, dest: &Path) -> std::io::Result<()> {
    match std::fs::rename(spooled, dest) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(18) => {
            // EXDEV: the spool is on another filesystem.
            let tmp = dest.with_extension("walship-copy");
            std::fs::copy(spooled, &tmp)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, dest)?;
            let _ = std::fs::remove_file(spooled);
        }
        Err(e) => return Err(e),
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
