//! Objects streamed into the store from the blocking thread that writes the tar: an
//! [`ObjectWriter`] is a `Write` whose full parts become multipart parts in flight,
//! at most `jobs` at a time across the whole backup, so memory stays at jobs × part
//! size plus the part being filled, whatever the database size. Nothing is staged on
//! local disk.
//!
//! An upload that fails, or a backup that is cancelled, makes the next write fail; the
//! caller then asks [`Uploads::failure`] for the store's own error.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use walship_store::{MAX_PARTS, MIN_PART_SIZE, MultipartUpload, PutOptions, Store, StoreError};

use crate::parts::PartWriter;

/// `bytes` rounded up to whole MiB and capped at S3's largest part (5 GiB): the part
/// size a user's minimum asks for.
pub fn part_size_at_least(bytes: u64) -> usize {
    const MIB: u64 = 1 << 20;
    (bytes.div_ceil(MIB) * MIB).min(5 << 30) as usize
}

/// The part size for objects of up to `max_object` bytes: large enough that such an
/// object fits in [`MAX_PARTS`] parts, at least 16 MiB (few requests, and 4 jobs stay
/// well under 128 MiB), in whole MiB.
pub fn part_size_for(max_object: u64) -> usize {
    const MIB: u64 = 1 << 20;
    let needed = max_object.div_ceil(MAX_PARTS as u64).div_ceil(MIB) * MIB;
    needed.max(16 * MIB).max(MIN_PART_SIZE as u64) as usize
}

/// Why an object could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the data directory failed (other than a file vanishing).
    #[error("{0}")]
    Source(io::Error),
    #[error("the backup was cancelled")]
    Cancelled,
}

struct Shared {
    store: Arc<dyn Store>,
    handle: Handle,
    permits: Arc<Semaphore>,
    part_size: usize,
    /// The first failure, until someone takes it to report it.
    failed: Mutex<Option<StoreError>>,
    /// Set with the first failure, and stays.
    broken: std::sync::atomic::AtomicBool,
    cancel: CancellationToken,
    sent: AtomicU64,
}

impl Shared {
    fn fail(&self, error: StoreError) {
        self.broken.store(true, Ordering::Release);
        self.failed
            .lock()
            .expect("failure slot")
            .get_or_insert(error);
    }

    /// An error for the writer when the backup cannot go on.
    fn check(&self) -> io::Result<()> {
        if self.broken.load(Ordering::Acquire) {
            return Err(io::Error::other("an upload failed"));
        }
        if self.cancel.is_cancelled() {
            return Err(io::Error::other("the backup was cancelled"));
        }
        Ok(())
    }
}

/// The uploads of one backup.
#[derive(Clone)]
pub struct Uploads(Arc<Shared>);

/// One object once stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the object's bytes.
    pub sha256: String,
}

impl Uploads {
    /// Uploads into `store`, `jobs` parts in flight at most. Called on the runtime the
    /// uploads are to run on.
    pub fn new(
        store: Arc<dyn Store>,
        jobs: usize,
        part_size: usize,
        cancel: CancellationToken,
    ) -> Uploads {
        Uploads(Arc::new(Shared {
            store,
            handle: Handle::current(),
            permits: Arc::new(Semaphore::new(jobs.max(1))),
            part_size,
            failed: Mutex::new(None),
            broken: std::sync::atomic::AtomicBool::new(false),
            cancel,
            sent: AtomicU64::new(0),
        }))
    }

    /// The first upload failure, if any, for the one caller that reports it; later
    /// calls get a note that refers to it.
    pub fn failure(&self) -> Option<StoreError> {
        if !self.0.broken.load(Ordering::Acquire) {
            return None;
        }
        let first = self.0.failed.lock().expect("failure slot").take();
        Some(first.unwrap_or_else(|| {
            StoreError::new(
                walship_store::ErrorKind::Server,
                self.0.store.describe(),
                "an upload of this backup failed (reported above)",
            )
        }))
    }

    /// An error when the backup cannot go on (an upload failed, or it was cancelled);
    /// [`Uploads::explain`] tells which.
    pub fn check(&self) -> io::Result<()> {
        self.0.check()
    }

    /// Bytes the store has confirmed so far.
    pub fn sent(&self) -> u64 {
        self.0.sent.load(Ordering::Relaxed)
    }

    /// What a failed write meant: the store's error, a cancellation, or the source's.
    pub fn explain(&self, error: io::Error) -> CopyError {
        match (self.failure(), self.0.cancel.is_cancelled()) {
            (Some(store), _) => CopyError::Store(store),
            (None, true) => CopyError::Cancelled,
            (None, false) => CopyError::Source(error),
        }
    }

    /// Begins the object `key`. Blocking: call it from the writing thread.
    pub fn start(&self, key: &str, options: &PutOptions) -> Result<ObjectWriter, CopyError> {
        let shared = self.0.clone();
        let upload = shared
            .handle
            .block_on(shared.store.start_multipart(key, options))?;
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let sink = {
            let (shared, upload, tasks) = (shared.clone(), upload.clone(), tasks.clone());
            move |index: usize, body: Bytes| -> io::Result<()> {
                shared.check()?;
                // Waiting for a free slot is what bounds memory: the writer stops
                // filling parts while `jobs` are in flight.
                let permit = shared.handle.block_on(async {
                    tokio::select! {
                        permit = shared.permits.clone().acquire_owned() => permit.ok(),
                        () = shared.cancel.cancelled() => None,
                    }
                });
                let Some(permit) = permit else {
                    return Err(io::Error::other("the backup was cancelled"));
                };
                let (task_shared, upload) = (shared.clone(), upload.clone());
                let len = body.len() as u64;
                let task = shared.handle.spawn(async move {
                    let stored = upload.put_part(index, body).await;
                    drop(permit);
                    match stored {
                        Ok(()) => {
                            task_shared.sent.fetch_add(len, Ordering::Relaxed);
                        }
                        Err(e) => task_shared.fail(e),
                    }
                });
                let mut tasks = tasks.lock().expect("part tasks");
                tasks.retain(|t| !t.is_finished());
                tasks.push(task);
                Ok(())
            }
        };
        Ok(ObjectWriter {
            key: key.to_owned(),
            parts: PartWriter::new(shared.part_size, Box::new(sink)),
            upload,
            tasks,
            uploads: self.clone(),
        })
    }
}

/// One object being written; see the module's notes.
pub struct ObjectWriter {
    key: String,
    parts: PartWriter<'static>,
    upload: Arc<dyn MultipartUpload>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    uploads: Uploads,
}

impl ObjectWriter {
    /// Bytes written into the object so far.
    pub fn written(&self) -> u64 {
        self.parts.written()
    }

    /// Sends the last part, waits for every part and completes the object
    /// (create-only). Blocking.
    pub fn finish(self) -> Result<StoredObject, CopyError> {
        let ObjectWriter {
            key,
            parts,
            upload,
            tasks,
            uploads,
        } = self;
        let written = parts.finish();
        let handle = &uploads.0.handle;
        wait_for(&tasks, handle);
        let abort = || {
            let _ = handle.block_on(upload.abort());
        };
        let written = match written {
            Ok(written) => written,
            Err(e) => {
                abort();
                return Err(uploads.explain(e));
            }
        };
        if let Some(e) = uploads.failure() {
            abort();
            return Err(e.into());
        }
        if let Err(e) = handle.block_on(upload.complete(written.parts)) {
            abort();
            return Err(e.into());
        }
        Ok(StoredObject {
            key,
            size: written.bytes,
            sha256: written.sha256,
        })
    }

    /// Gives the object up: the parts in flight end, the stored ones are discarded.
    pub fn abort(self) {
        let handle = &self.uploads.0.handle;
        wait_for(&self.tasks, handle);
        let _ = handle.block_on(self.upload.abort());
    }
}

fn wait_for(tasks: &Mutex<Vec<JoinHandle<()>>>, handle: &Handle) {
    let tasks = std::mem::take(&mut *tasks.lock().expect("part tasks"));
    for task in tasks {
        let _ = handle.block_on(task);
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.parts.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use walship_store::LocalStore;

    #[test]
    fn the_part_size_fits_the_largest_object_in_ten_thousand_parts() {
        assert_eq!(part_size_for(1 << 30), 16 << 20);
        let hundred_gb = 100_000_000_000u64;
        let size = part_size_for(hundred_gb + (2 << 30)) as u64;
        assert!(size * MAX_PARTS as u64 >= hundred_gb + (2 << 30));
        assert_eq!(size % (1 << 20), 0);
    }

    #[test]
    fn an_object_written_from_a_blocking_thread_is_stored_whole_with_its_hash() {
        use sha2::Digest;
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
        let uploads = runtime.block_on(async {
            Uploads::new(store.clone(), 2, MIN_PART_SIZE, CancellationToken::new())
        });
        let data: Vec<u8> = (0..(3 * MIN_PART_SIZE + 777) as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let stored = std::thread::scope(|s| {
            s.spawn(|| {
                let mut w = uploads.start("base/x/data.tar", &PutOptions::default())?;
                for chunk in data.chunks(100_000) {
                    w.write_all(chunk).map_err(|e| uploads.explain(e))?;
                }
                w.finish()
            })
            .join()
            .unwrap()
        })
        .unwrap();
        assert_eq!(stored.size, data.len() as u64);
        assert_eq!(stored.sha256, hex::encode(sha2::Sha256::digest(&data)));
        assert_eq!(uploads.sent(), data.len() as u64);
        let (body, _) = runtime.block_on(store.get("base/x/data.tar")).unwrap();
        assert!(body[..] == data[..]);
    }

    #[test]
    fn a_cancelled_backup_stops_the_writer_and_stores_nothing() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
        let cancel = CancellationToken::new();
        let uploads = runtime
            .block_on(async { Uploads::new(store.clone(), 1, MIN_PART_SIZE, cancel.clone()) });
        let outcome = std::thread::scope(|s| {
            s.spawn(|| {
                let mut w = uploads.start("base/x/data.tar", &PutOptions::default())?;
                w.write_all(&vec![1u8; MIN_PART_SIZE])
                    .map_err(|e| uploads.explain(e))?;
                cancel.cancel();
                match w.write_all(&vec![2u8; MIN_PART_SIZE]) {
                    Ok(()) => w.finish(),
                    Err(e) => {
                        w.abort();
                        Err(uploads.explain(e))
                    }
                }
            })
            .join()
            .unwrap()
        });
        assert!(matches!(outcome, Err(CopyError::Cancelled)), "{outcome:?}");
        assert!(
            runtime
                .block_on(store.head("base/x/data.tar"))
                .unwrap()
                .is_none()
        );
    }
}
