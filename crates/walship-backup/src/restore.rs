//! `walship restore`: a backup's tars downloaded in ranges, several objects at once,
//! each decompressed and unpacked as it arrives (nothing staged on disk), the SHA-256
//! of every object checked against `walship.json` when the backup has one (barman's
//! backups have none), tablespaces unpacked at their recorded or remapped locations and
//! linked from `pg_tblspc`.
//!
//! A restore that fails, or whose objects do not match their recorded hashes, leaves a
//! directory PostgreSQL refuses to start on: `global/pg_control` is unpacked under
//! another name and put in place only once every object is unpacked and verified.
//!
//! Bytes damaged on the way are not a damaged backup: a restore whose download came
//! back damaged (a SHA-256 other than the recorded one, fewer bytes than listed, a tar
//! or compressed stream that does not read when no hash is recorded) empties what it
//! unpacked and downloads the backup again, [`DOWNLOADS`] times in all; only damage
//! that every download repeats is reported, as the same rule reports a WAL file.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use walship_store::{ErrorKind, Store, StoreError};

use crate::catalog::{Catalog, Entry};
use crate::compress::BackupCompression;
use crate::info::{Status, Tablespace};
use crate::take::MANIFEST_NAME;

/// The bytes one ranged read asks for.
const RANGE: u64 = 16 << 20;
/// Where `global/pg_control` waits until everything else is in place.
const PG_CONTROL_PENDING: &str = "global/pg_control.walship-restore";
/// Downloads of a backup whose bytes keep arriving damaged before the damage is
/// reported as the backup's.
pub const DOWNLOADS: usize = 3;

/// How one restore runs.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Tablespaces restored elsewhere than their recorded location, by name.
    pub tablespace_locations: BTreeMap<String, PathBuf>,
    /// Ranged reads (16 MiB each) in flight at once, across all the objects.
    pub jobs: usize,
}

/// Where a running restore stands, for a progress display.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    /// Bytes of the backup's objects.
    pub total: AtomicU64,
    /// Bytes downloaded so far.
    pub fetched: AtomicU64,
}

/// What was restored.
#[derive(Debug, Clone)]
pub struct Restored {
    pub objects: usize,
    pub bytes: u64,
    /// Whether every object was checked against a recorded SHA-256.
    pub verified: bool,
}

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("backup {0} is {1}, not DONE: it cannot be restored")]
    NotDone(String, String),
    #[error("{what} {} is not empty: a restore only goes into an empty or missing directory", path.display())]
    NotEmpty { what: String, path: PathBuf },
    #[error("{0}")]
    Local(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{key}: its SHA-256 is {actual}, but the backup recorded {expected}: the object is \
         corrupt or was replaced; nothing was put in place for PostgreSQL to start on"
    )]
    Corrupt {
        key: String,
        expected: String,
        actual: String,
    },
    /// An object's bytes, with no hash recorded, that do not read as its tar.
    #[error("{0}")]
    Damaged(String),
    /// The damage of the last of several downloads, each damaged.
    #[error("{last} (in each of {downloads} downloads)")]
    DamagedEveryTime {
        downloads: usize,
        last: Box<RestoreError>,
    },
    #[error("backup {id}: {problem}")]
    Incomplete { id: String, problem: String },
    #[error("the restore was cancelled")]
    Cancelled,
}

impl RestoreError {
    /// Whether the download came back damaged, which a fresh download may not be.
    fn is_damage(&self) -> bool {
        match self {
            RestoreError::Corrupt { .. } | RestoreError::Damaged(_) => true,
            RestoreError::Store(e) => e.kind() == ErrorKind::Response,
            _ => false,
        }
    }
}

fn local(what: impl std::fmt::Display, path: &Path, e: io::Error) -> RestoreError {
    RestoreError::Local(format!("{what} {}: {e}", path.display()))
}

/// One object to unpack: its key, size, compression, where it goes, and its hash when
/// recorded.
#[derive(Debug, Clone)]
struct Part {
    key: String,
    size: u64,
    compression: BackupCompression,
    dest: PathBuf,
    expected: Option<String>,
    is_data: bool,
}

/// A directory to restore into must be missing or empty; it is created (mode 0700).
fn prepare(what: &str, path: &Path) -> Result<(), RestoreError> {
    match fs::read_dir(path) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RestoreError::NotEmpty {
                    what: what.to_owned(),
                    path: path.to_owned(),
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(path).map_err(|e| local("creating", path, e))?;
        }
        Err(e) => return Err(local("reading", path, e)),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(|e| local("setting the mode of", path, e))
}

/// Removes everything in `path`, which [`prepare`] found missing or empty: only what
/// this restore unpacked.
fn empty(path: &Path) -> Result<(), RestoreError> {
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(local("reading", path, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| local("reading", path, e))?;
        let found = entry.path();
        let removed = match entry.file_type() {
            Ok(kind) if kind.is_dir() => fs::remove_dir_all(&found),
            _ => fs::remove_file(&found),
        };
        removed.map_err(|e| local("removing", &found, e))?;
    }
    Ok(())
}

/// The hashes `walship.json` records, by object name within the backup.
fn recorded_hashes(manifest: &[u8]) -> Option<BTreeMap<String, String>> {
    let value: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    let objects = value.get("objects")?.as_object()?;
    objects
        .iter()
        .map(|(name, o)| Some((name.clone(), o.get("sha256")?.as_str()?.to_owned())))
        .collect()
}

/// The base name of a backup object (`data`, `16385`), as barman matches them:
/// `<base>.tar…` or `<base>_NNNN.tar…`.
fn base_of(name: &str) -> Option<&str> {
    let stem = &name[..name.find(".tar")?];
    BackupCompression::of_object(name)?;
    Some(match stem.rsplit_once('_') {
        Some((base, n)) if n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => stem,
    })
}

/// Restores `entry` from `catalog`'s store into `dest`.
pub async fn restore(
    store: Arc<dyn Store>,
    catalog: &Catalog,
    entry: &Entry,
    dest: &Path,
    options: &RestoreOptions,
    progress: Arc<RestoreProgress>,
    cancel: CancellationToken,
) -> Result<Restored, RestoreError> {
    let info = &entry.info;
    if info.status != Some(Status::Done) {
        let status = info.status.map_or("without a status", Status::as_str);
        return Err(RestoreError::NotDone(entry.id.clone(), status.to_owned()));
    }
    let locations: Vec<(Tablespace, PathBuf)> = info
        .tablespaces
        .iter()
        .map(|ts| {
            let location = options
                .tablespace_locations
                .get(&ts.name)
                .cloned()
                .unwrap_or_else(|| PathBuf::from(&ts.location));
            (ts.clone(), location)
        })
        .collect();
    for name in options.tablespace_locations.keys() {
        if !info.tablespaces.iter().any(|ts| &ts.name == name) {
            return Err(RestoreError::Local(format!(
                "--tablespace {name}:…: backup {} has no tablespace named {name:?}",
                entry.id
            )));
        }
    }
    prepare("the destination", dest)?;
    for (ts, location) in &locations {
        prepare(&format!("tablespace {}'s location", ts.name), location)?;
    }

    let prefix = catalog.backup_prefix(&entry.id);
    let objects = store.list(&prefix).await?;
    let hashes = match objects
        .iter()
        .any(|o| o.key == format!("{prefix}{MANIFEST_NAME}"))
    {
        true => {
            let (body, _) = store.get(&format!("{prefix}{MANIFEST_NAME}")).await?;
            Some(
                recorded_hashes(&body).ok_or_else(|| RestoreError::Incomplete {
                    id: entry.id.clone(),
                    problem: format!("{MANIFEST_NAME} cannot be read"),
                })?,
            )
        }
        false => None,
    };
    let mut parts = Vec::new();
    for object in &objects {
        let Some(name) = object.key.strip_prefix(&prefix) else {
            continue;
        };
        let (Some(base), Some(compression)) = (base_of(name), BackupCompression::of_object(name))
        else {
            continue;
        };
        let dest = if base == "data" {
            dest.to_owned()
        } else {
            match locations.iter().find(|(ts, _)| ts.oid.to_string() == base) {
                Some((_, location)) => location.clone(),
                // Not a tar of this backup's (barman skips them too).
                None => continue,
            }
        };
        let expected = match &hashes {
            Some(hashes) => {
                Some(
                    hashes
                        .get(name)
                        .cloned()
                        .ok_or_else(|| RestoreError::Incomplete {
                            id: entry.id.clone(),
                            problem: format!("{name} is not in {MANIFEST_NAME}"),
                        })?,
                )
            }
            None => None,
        };
        parts.push(Part {
            key: object.key.clone(),
            size: object.size,
            compression,
            dest,
            expected,
            is_data: base == "data",
        });
    }
    // Everything recorded must be there, and the data directory at the least.
    if let Some(hashes) = &hashes {
        for name in hashes.keys() {
            if !parts.iter().any(|p| p.key == format!("{prefix}{name}")) {
                return Err(RestoreError::Incomplete {
                    id: entry.id.clone(),
                    problem: format!("{name} is recorded in {MANIFEST_NAME} but missing"),
                });
            }
        }
    }
    if !parts.iter().any(|p| p.is_data) {
        return Err(RestoreError::Incomplete {
            id: entry.id.clone(),
            problem: "it has no data.tar".to_owned(),
        });
    }
    progress
        .total
        .store(parts.iter().map(|p| p.size).sum(), Ordering::Relaxed);
    let bytes = parts.iter().map(|p| p.size).sum();
    let count = parts.len();
    let verified = parts.iter().all(|p| p.expected.is_some());
    let jobs = options.jobs.max(1);
    let mut downloads = 0;
    loop {
        downloads += 1;
        match download(&store, &parts, jobs, &progress, &cancel).await {
            Ok(()) => break,
            Err(e) if e.is_damage() && downloads < DOWNLOADS => {
                tracing::warn!(
                    "{e}; downloading backup {} again ({} of {DOWNLOADS} downloads)",
                    entry.id,
                    downloads + 1
                );
                progress.fetched.store(0, Ordering::Relaxed);
                // Every part of the attempt has ended (see `download`), so nothing
                // writes into what is being emptied.
                let (dest, locations) = (dest.to_owned(), locations.clone());
                tokio::task::spawn_blocking(move || {
                    empty(&dest)?;
                    for (ts, location) in &locations {
                        empty(location)?;
                        prepare(&format!("tablespace {}'s location", ts.name), location)?;
                    }
                    Ok::<(), RestoreError>(())
                })
                .await
                .map_err(|e| RestoreError::Local(format!("emptying the destination: {e}")))??;
            }
            Err(e) if e.is_damage() => {
                return Err(RestoreError::DamagedEveryTime {
                    downloads,
                    last: Box::new(e),
                });
            }
            Err(e) => return Err(e),
        }
    }

    // Everything is in place and verified: the tablespaces' links, then pg_control.
    let tblspc = dest.join("pg_tblspc");
    fs::create_dir_all(&tblspc).map_err(|e| local("creating", &tblspc, e))?;
    for (ts, location) in &locations {
        let link = tblspc.join(ts.oid.to_string());
        std::os::unix::fs::symlink(location, &link)
            .map_err(|e| local("linking the tablespace at", &link, e))?;
    }
    let wal = dest.join("pg_wal/archive_status");
    fs::create_dir_all(&wal).map_err(|e| local("creating", &wal, e))?;
    let pending = dest.join(PG_CONTROL_PENDING);
    let control = dest.join("global/pg_control");
    fs::rename(&pending, &control).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => RestoreError::Incomplete {
            id: entry.id.clone(),
            problem: "its data tar holds no global/pg_control".to_owned(),
        },
        _ => local("putting in place", &control, e),
    })?;
    Ok(Restored {
        objects: count,
        bytes,
        verified,
    })
}

/// One download of every part, `jobs` objects at a time. At the first failure the
/// other parts are told to stop, and this returns only once every one of them has
/// ended, its unpacking thread included: a download tried again empties the
/// destination first, which must not race a thread still writing into it.
async fn download(
    store: &Arc<dyn Store>,
    parts: &[Part],
    jobs: usize,
    progress: &Arc<RestoreProgress>,
    cancel: &CancellationToken,
) -> Result<(), RestoreError> {
    let attempt = cancel.child_token();
    let reads = Arc::new(Semaphore::new(jobs));
    let mut unpacked = futures::stream::iter(parts.iter().cloned())
        .map(|part| {
            unpack_object(
                store.clone(),
                part,
                reads.clone(),
                jobs,
                progress.clone(),
                attempt.clone(),
            )
        })
        .buffer_unordered(jobs);
    let mut first = None;
    while let Some(result) = unpacked.next().await {
        if let Err(e) = result {
            attempt.cancel();
            // The first failure is the cause; the others are its `Cancelled` echoes.
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Downloads one object in ranges (in order, as many in flight as `reads` allows)
/// and unpacks it on a blocking thread as the bytes arrive. `reads` is shared by all
/// the objects of a restore: `jobs` ranged reads at once whether the backup is one
/// large tar or many, and each read's permit travels with its bytes until the
/// unpacking has consumed them, so at most `jobs` ranges are held anywhere (in flight,
/// waiting their turn, queued for the unpacking or being unpacked).
///
/// No deadlock: the semaphore hands out permits in the order they were asked for, and
/// an object asks for its ranges in order, so the range its unpacking waits for never
/// waits behind later ranges of its own; other objects' permits come back as their
/// own unpacking goes on.
async fn unpack_object(
    store: Arc<dyn Store>,
    part: Part,
    reads: Arc<Semaphore>,
    jobs: usize,
    progress: Arc<RestoreProgress>,
    cancel: CancellationToken,
) -> Result<(), RestoreError> {
    let (tx, rx) = mpsc::channel::<(Bytes, Option<OwnedSemaphorePermit>)>(1);
    let ranges: Vec<Range<u64>> = (0..part.size.div_ceil(RANGE))
        .map(|i| i * RANGE..((i + 1) * RANGE).min(part.size))
        .collect();
    let key = part.key.clone();
    let fetch = {
        let store = store.clone();
        async move {
            let mut stream = futures::stream::iter(ranges)
                .map(|range| {
                    let (store, key, reads) = (store.clone(), key.clone(), reads.clone());
                    async move {
                        let permit = reads.acquire_owned().await.ok();
                        Ok::<_, StoreError>((store.get_range(&key, range).await?, permit))
                    }
                })
                .buffered(jobs);
            while let Some(chunk) = stream.next().await {
                let (chunk, permit) = chunk?;
                progress
                    .fetched
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if tx.send((chunk, permit)).await.is_err() {
                    // The unpacking stopped; its error is the one to report.
                    break;
                }
            }
            Ok::<(), StoreError>(())
        }
    };
    let mut unpack = tokio::task::spawn_blocking(move || unpack_stream(&part, rx));
    let (fetched, unpacked) = tokio::select! {
        both = async { tokio::join!(fetch, &mut unpack) } => both,
        () = cancel.cancelled() => {
            // The download is dropped with its sender, so the unpacking sees its
            // stream end and stops; wait for it, as it may still be writing files.
            let _ = unpack.await;
            return Err(RestoreError::Cancelled);
        }
    };
    let unpacked = unpacked.map_err(|e| RestoreError::Local(format!("unpacking: {e}")))?;
    // A failed download ends the stream early, which the unpacking sees as a short
    // archive: the store's error is the cause.
    fetched?;
    unpacked
}

/// Reads chunks from a channel, hashing them. Each chunk's read permit is let go once
/// the chunk is consumed.
struct ChannelReader {
    rx: mpsc::Receiver<(Bytes, Option<OwnedSemaphorePermit>)>,
    current: Bytes,
    _permit: Option<OwnedSemaphorePermit>,
    hasher: Sha256,
    read: u64,
}

impl ChannelReader {
    /// The next whole chunk, hashed, with its read permit: the uncompressed case hands
    /// the downloaded bytes on without a copy.
    fn next_chunk(&mut self) -> Option<(Bytes, Option<OwnedSemaphorePermit>)> {
        let (chunk, permit) = if self.current.is_empty() {
            self.rx.blocking_recv()?
        } else {
            (std::mem::take(&mut self.current), self._permit.take())
        };
        self.hasher.update(&chunk);
        self.read += chunk.len() as u64;
        Some((chunk, permit))
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            // The consumed chunk's permit goes first: the next range may need it.
            self._permit = None;
            match self.rx.blocking_recv() {
                Some((chunk, permit)) => {
                    self.current = chunk;
                    self._permit = permit;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        let taken = self.current.split_to(n);
        self.hasher.update(&taken);
        self.read += n as u64;
        buf[..n].copy_from_slice(&taken);
        Ok(n)
    }
}

/// Decoded bytes handed from the decoding thread to the unpacking one at a time, and
/// how many may wait between them.
const DECODED_CHUNK: usize = 1 << 20;
const DECODED_QUEUE: usize = 4;

/// Bytes on their way from the decoding thread to the tar reader.
enum Piece {
    /// Downloaded bytes passed on as they are (no compression), with their read permit
    /// (let go when the piece is).
    Shared {
        bytes: Bytes,
        _permit: Option<OwnedSemaphorePermit>,
    },
    /// Decompressed bytes in a buffer that goes back to the decoding thread once read.
    Owned(Vec<u8>),
}

impl Piece {
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Shared { bytes, .. } => bytes,
            Piece::Owned(vec) => vec,
        }
    }
}

/// Unpacks one object on two threads: this one writes the files (the tar reader and
/// the file system's work), a scoped second one hashes and decompresses, so a restore
/// of one compressed tar uses two cores, not one.
fn unpack_stream(
    part: &Part,
    rx: mpsc::Receiver<(Bytes, Option<OwnedSemaphorePermit>)>,
) -> Result<(), RestoreError> {
    let compression = part.compression;
    let (unpacked, decoded) = std::thread::scope(|scope| {
        let (tx, decoded_rx) = std::sync::mpsc::sync_channel(DECODED_QUEUE);
        // Read buffers come back to be filled again: no new zeroed megabyte per chunk.
        let (recycle, recycled) = std::sync::mpsc::sync_channel(DECODED_QUEUE + 2);
        let decoder = scope.spawn(move || decode(compression, rx, tx, recycled));
        // The tar reader is dropped when it returns, which stops the decoding early
        // if the unpacking failed.
        let unpacked = unpack_tar(
            DecodedReader {
                rx: decoded_rx,
                recycle,
                current: None,
                at: 0,
            },
            &part.dest,
            part.is_data,
        );
        (unpacked, decoder.join())
    });
    let Decoded {
        actual,
        read,
        drained,
    } = decoded.map_err(|_| RestoreError::Local(format!("decoding {} panicked", part.key)))?;
    // A corrupt object is reported as such even when it also broke the unpacking.
    if let Some(expected) = &part.expected
        && drained.is_ok()
        && read == part.size
        && !actual.eq_ignore_ascii_case(expected)
    {
        return Err(RestoreError::Corrupt {
            key: part.key.clone(),
            expected: expected.clone(),
            actual,
        });
    }
    // Fewer bytes than listed is the cause of whatever the unpacking made of them:
    // the decoding reads every byte that arrives, whether the unpacking needed it or not.
    if read != part.size {
        return Err(RestoreError::Store(StoreError::new(
            ErrorKind::Response,
            &part.key,
            format!("{read} of its {} bytes arrived", part.size),
        )));
    }
    unpacked.map_err(|e| {
        let message = format!("unpacking {}: {}", part.key, walship_store::error_chain(&e));
        // With the hash recorded and matching, the bytes were the backup's: the failure
        // is here. Without one, a stream that does not read may have been damaged on
        // the way; the file system's own failures (no space, no permission) keep
        // their kinds.
        let unreadable = matches!(
            e.kind(),
            io::ErrorKind::InvalidData
                | io::ErrorKind::InvalidInput
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::Other
        );
        match part.expected.is_none() && unreadable {
            true => RestoreError::Damaged(message),
            false => RestoreError::Local(message),
        }
    })?;
    Ok(())
}

/// What the decoding thread read: the object's SHA-256, its length, and whether what
/// the tar did not need (its end padding) could still be read for the hash.
struct Decoded {
    actual: String,
    read: u64,
    drained: io::Result<u64>,
}

/// Hashes and decompresses the object's bytes from `rx` into `tx`, then reads the rest
/// of the object (what the unpacking did not ask for) for the hash. A decoding error is
/// handed on for the tar reader to report.
fn decode(
    compression: BackupCompression,
    rx: mpsc::Receiver<(Bytes, Option<OwnedSemaphorePermit>)>,
    tx: std::sync::mpsc::SyncSender<io::Result<Piece>>,
    recycled: std::sync::mpsc::Receiver<Vec<u8>>,
) -> Decoded {
    let mut reader = ChannelReader {
        rx,
        current: Bytes::new(),
        _permit: None,
        hasher: Sha256::new(),
        read: 0,
    };
    if compression == BackupCompression::None {
        while let Some((chunk, permit)) = reader.next_chunk() {
            let piece = Piece::Shared {
                bytes: chunk,
                _permit: permit,
            };
            if tx.send(Ok(piece)).is_err() {
                break;
            }
        }
    } else {
        let mut decoder: Box<dyn Read> = match compression {
            BackupCompression::None => unreachable!("handled above"),
            // Multi-member: a stream of several gzip members is one archive, as
            // Python's gzip module reads it.
            BackupCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut reader)),
            BackupCompression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(&mut reader)),
            BackupCompression::Snappy => Box::new(snap::read::FrameDecoder::new(&mut reader)),
            BackupCompression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(&mut reader)),
        };
        loop {
            let mut chunk = recycled.try_recv().unwrap_or_default();
            chunk.resize(DECODED_CHUNK, 0);
            let filled = match fill(&mut decoder, &mut chunk) {
                Ok(filled) => filled,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    break;
                }
            };
            if filled == 0 {
                break;
            }
            chunk.truncate(filled);
            if tx.send(Ok(Piece::Owned(chunk))).is_err() {
                // The unpacking stopped; the rest is only hashed.
                break;
            }
        }
    }
    drop(tx);
    // Whatever the tar reader left unread (its end padding) still counts for the hash.
    let drained = io::copy(&mut reader, &mut io::sink());
    Decoded {
        actual: hex::encode(reader.hasher.finalize()),
        read: reader.read,
        drained,
    }
}

/// Reads into `buf` until it is full or the input ends; the bytes read.
fn fill(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The decoded bytes, read by the tar reader on the unpacking thread.
struct DecodedReader {
    rx: std::sync::mpsc::Receiver<io::Result<Piece>>,
    recycle: std::sync::mpsc::SyncSender<Vec<u8>>,
    current: Option<Piece>,
    at: usize,
}

impl DecodedReader {
    /// Some bytes from the current piece, or from the next one.
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self
            .current
            .as_ref()
            .is_none_or(|piece| self.at == piece.bytes().len())
        {
            // A read piece's buffer goes back, its permit (if any) is let go.
            if let Some(Piece::Owned(vec)) = self.current.take() {
                let _ = self.recycle.try_send(vec);
            }
            match self.rx.recv() {
                Ok(Ok(piece)) => {
                    self.current = Some(piece);
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let bytes = self.current.as_ref().map_or(&[][..], Piece::bytes);
        let n = buf.len().min(bytes.len() - self.at);
        buf[..n].copy_from_slice(&bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Read for DecodedReader {
    /// Fills `buf` across pieces, short only at the end. The tar reader copies a file
    /// in reads of one size, so each write then starts on a page boundary of the file:
    /// a write that stops mid-page makes ext4 zero the rest of a fresh page-cache
    /// folio, only for the next write to overwrite it (measured: as much CPU as the
    /// copy itself when reads ended where the download's pieces did).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.read_some(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    }
}

fn unpack_tar(reader: impl Read, dest: &Path, is_data: bool) -> io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    // As root (a test, or an operator restoring for another user), files keep the
    // owners they had; as anyone else they belong to whoever restores.
    archive.set_preserve_ownerships(is_root());
    archive.set_overwrite(false);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let path = path.strip_prefix(".").unwrap_or(&path).to_owned();
        if is_data && path == Path::new("global/pg_control") {
            entry.unpack(dest.join(PG_CONTROL_PENDING))?;
        } else if path.as_os_str().is_empty() {
            // The root entry: the directory exists; it only carries its mode.
            fs::set_permissions(dest, fs::Permissions::from_mode(0o700))?;
        } else {
            entry.unpack_in(dest)?;
        }
    }
    Ok(())
}

/// Where a point-in-time recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// `recovery_target_time`, in any form PostgreSQL accepts (it parses it).
    Time(String),
    /// `recovery_target_lsn`.
    Lsn(String),
    /// `recovery_target_name`: a restore point.
    Name(String),
    /// `recovery_target = 'immediate'`: stop as soon as the backup is consistent.
    Immediate,
}

/// `recovery_target_timeline`: which timeline the recovery follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeline {
    /// The backup's own.
    Current,
    /// The newest found in the archive (PostgreSQL's default).
    Latest,
    /// This one.
    Id(u32),
}

impl Timeline {
    /// `current`, `latest`, or a timeline id, in decimal or with `0x` in hexadecimal
    /// (as PostgreSQL reads it).
    pub fn parse(text: &str) -> Result<Timeline, String> {
        let text = text.trim();
        let id = match text.to_ascii_lowercase().as_str() {
            "current" => return Ok(Timeline::Current),
            "latest" => return Ok(Timeline::Latest),
            lower => match lower.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => lower.parse().ok(),
            },
        };
        id.filter(|id| *id >= 1).map(Timeline::Id).ok_or_else(|| {
            format!(
                "{text:?} is not a timeline; expected current, latest or a timeline id such as 2"
            )
        })
    }

    fn as_conf(self) -> String {
        match self {
            Timeline::Current => "current".to_owned(),
            Timeline::Latest => "latest".to_owned(),
            Timeline::Id(id) => id.to_string(),
        }
    }
}

/// What PostgreSQL does once it reaches the target (`recovery_target_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetAction {
    Pause,
    Promote,
    Shutdown,
}

impl TargetAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetAction::Pause => "pause",
            TargetAction::Promote => "promote",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

/// A value quoted for `postgresql.conf`.
fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Makes the next start of the restored server a point-in-time recovery: the recovery
/// settings appended to `postgresql.auto.conf` (which wins over `postgresql.conf`),
/// then `recovery.signal`.
pub fn prepare_recovery(
    dest: &Path,
    restore_command: &str,
    target: &RecoveryTarget,
    action: TargetAction,
    timeline: Option<Timeline>,
) -> Result<(), RestoreError> {
    if let RecoveryTarget::Lsn(lsn) = target
        && crate::session::parse_lsn(lsn).is_none()
    {
        return Err(RestoreError::Local(format!(
            "--target-lsn {lsn:?} is not an LSN; expected e.g. 0/3000060"
        )));
    }
    let (name, value) = match target {
        RecoveryTarget::Time(t) => ("recovery_target_time", t.as_str()),
        RecoveryTarget::Lsn(l) => ("recovery_target_lsn", l.as_str()),
        RecoveryTarget::Name(n) => ("recovery_target_name", n.as_str()),
        RecoveryTarget::Immediate => ("recovery_target", "immediate"),
    };
    let timeline = timeline.map_or(String::new(), |t| {
        format!("recovery_target_timeline = {}\n", conf_quote(&t.as_conf()))
    });
    let text = format!(
        "\n# Added by walship restore: a point-in-time recovery.\n\
         restore_command = {}\n{name} = {}\n{timeline}recovery_target_action = {}\n",
        conf_quote(restore_command),
        conf_quote(value),
        conf_quote(action.as_str()),
    );
    let auto = dest.join("postgresql.auto.conf");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&auto)
        .map_err(|e| local("opening", &auto, e))?;
    io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| local("writing", &auto, e))?;
    let signal = dest.join("recovery.signal");
    fs::write(&signal, b"").map_err(|e| local("creating", &signal, e))?;
    fs::set_permissions(&signal, fs::Permissions::from_mode(0o600))
        .map_err(|e| local("setting the mode of", &signal, e))?;
    if is_root() {
        // Owned as the data directory, as PostgreSQL needs.
        use std::os::unix::fs::MetadataExt;
        let owner = fs::metadata(dest).map_err(|e| local("reading", dest, e))?;
        for path in [&signal, &auto] {
            std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid()))
                .map_err(|e| local("giving to the data directory's owner", path, e))?;
        }
    }
    Ok(())
}

/// Whether this process runs as root: `/proc/self` belongs to the process's
/// effective user.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_grouped_by_barmans_base_names() {
        assert_eq!(base_of("data.tar"), Some("data"));
        assert_eq!(base_of("data_0001.tar.gz"), Some("data"));
        assert_eq!(base_of("16385.tar.lz4"), Some("16385"));
        assert_eq!(base_of("16385_0012.tar"), Some("16385"));
        assert_eq!(base_of("backup.info"), None);
        assert_eq!(base_of("walship.json"), None);
        assert_eq!(base_of("data.tar.zst"), None);
    }

    #[test]
    fn recovery_settings_are_quoted_and_a_bad_lsn_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("postgresql.auto.conf"),
            "work_mem = '4MB'\n",
        )
        .unwrap();
        prepare_recovery(
            dir.path(),
            "'/usr/bin/walship' --config '/etc/it''s.yaml' wal-fetch %f %p",
            &RecoveryTarget::Time("2026-11-30T01:19:58.9+00:00".into()),
            TargetAction::Promote,
            None,
        )
        .unwrap();
        let auto = fs::read_to_string(dir.path().join("postgresql.auto.conf")).unwrap();
        assert!(auto.starts_with("work_mem = '4MB'\n"), "{auto}");
        assert!(
            auto.contains(
                "restore_command = '''/usr/bin/walship'' --config ''/etc/it''''s.yaml'' \
                 wal-fetch %f %p'\n"
            ),
            "{auto}"
        );
        assert!(auto.contains("recovery_target_time = '2026-11-30T01:19:58.9+00:00'\n"));
        assert!(auto.contains("recovery_target_action = 'promote'\n"));
        assert!(dir.path().join("recovery.signal").exists());
        let err = prepare_recovery(
            dir.path(),
            "x",
            &RecoveryTarget::Lsn("12345".into()),
            TargetAction::Pause,
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("is not an LSN"), "{err}");
        assert!(!auto.contains("recovery_target_timeline"), "{auto}");
    }

    #[test]
    fn an_immediate_target_and_a_timeline_are_written_as_postgresql_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        prepare_recovery(
            dir.path(),
            "walship wal-fetch %f %p",
            &RecoveryTarget::Immediate,
            TargetAction::Shutdown,
            Some(Timeline::parse("0x2").unwrap()),
        )
        .unwrap();
        let auto = fs::read_to_string(dir.path().join("postgresql.auto.conf")).unwrap();
        assert!(auto.contains("recovery_target = 'immediate'\n"), "{auto}");
        assert!(auto.contains("recovery_target_timeline = '2'\n"), "{auto}");
        assert!(
            auto.contains("recovery_target_action = 'shutdown'\n"),
            "{auto}"
        );
        assert_eq!(Timeline::parse("current"), Ok(Timeline::Current));
        assert_eq!(Timeline::parse("LATEST"), Ok(Timeline::Latest));
        assert_eq!(Timeline::parse("12"), Ok(Timeline::Id(12)));
        for bad in ["0", "two", "", "0xg", "-1"] {
            let err = Timeline::parse(bad).unwrap_err();
            assert!(err.contains("expected current, latest"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_destination_must_be_missing_or_empty() {
        let dir = tempfile::tempdir().unwrap();
        prepare("the destination", &dir.path().join("new")).unwrap();
        prepare("the destination", &dir.path().join("new")).unwrap();
        fs::write(dir.path().join("new/PG_VERSION"), "15").unwrap();
        let err = prepare("the destination", &dir.path().join("new")).unwrap_err();
        assert!(err.to_string().contains("is not empty"), "{err}");
    }
}
