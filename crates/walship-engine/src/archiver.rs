use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tracing::{Instrument, debug, info, info_span, warn};
use walship_store::{ErrorKind, PutOptions, Store, StoreError};

use crate::FileIdentity;
use walship_wal::{
    Compression, HashingReader, Layout, PartialPolicy, RestorePick, TimelineHistory, WalError,
    WalName, sha256_hex, validate_segment,
};

/// Object metadata key holding the SHA-256 of the raw (uncompressed) file.
pub const META_SHA256: &str = "walship-sha256";
/// Object metadata key holding the size of the raw file in bytes.
pub const META_SIZE: &str = "walship-size";

/// How WAL is written to the archive.
#[derive(Debug, Clone, Default)]
pub struct ArchiverSettings {
    /// `wal.compression`; `None` stores files as they are.
    pub compression: Option<Compression>,
    /// `tags`: set on every WAL object.
    pub tags: BTreeMap<String, String>,
    /// `historyTags`: set on `.history` files instead of `tags`.
    pub history_tags: BTreeMap<String, String>,
}

/// Ships WAL files to one server's archive and brings them back.
#[derive(Debug, Clone)]
pub struct Archiver {
    store: Arc<dyn Store>,
    layout: Layout,
    settings: ArchiverSettings,
}

/// What a successful push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The file was uploaded to `key`; `stored_bytes` is the object's size (after
    /// compression).
    Uploaded {
        key: String,
        sha256: String,
        stored_bytes: u64,
    },
    /// An identical copy was already archived at `key` (PostgreSQL retries an
    /// archive_command whose success it did not see).
    AlreadyArchived { key: String, sha256: String },
}

/// Why a push failed. Every variant means "not archived": PostgreSQL must retry.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{path}: cannot read the file: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: is {kind}, not a regular file; PostgreSQL's WAL files are regular files \
         (is %p what archive_command was given?)"
    )]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("{path}: {source}")]
    NotWal {
        path: PathBuf,
        #[source]
        source: WalError,
    },
    #[error(transparent)]
    Compression(WalError),
    #[error(
        "{path}: the file changed while it was being archived (PostgreSQL never rewrites a \
         segment waiting for archiving: is another process writing to pg_wal?)"
    )]
    Changed { path: PathBuf },
    #[error("{name}: {source}")]
    Store {
        name: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "{name}: refusing to overwrite {key}: the archived copy differs from the file being \
         archived (archived sha256 {archived_sha256}, local sha256 {local_sha256}); the \
         archive may belong to another cluster, or the file was rewritten. Check \
         serverName and destinationPath"
    )]
    Conflict {
        name: String,
        key: String,
        archived_sha256: String,
        local_sha256: String,
    },
    #[error("{name}: the archived copy {key} cannot be compared: {source}")]
    Unreadable {
        name: String,
        key: String,
        #[source]
        source: WalError,
    },
}

/// What a successful fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// `key` was written to the destination.
    Restored { key: String, bytes: u64 },
    /// The archive has no such file (restore_command exits 1: "not found").
    NotFound,
}

/// Why a fetch failed. Unlike [`FetchOutcome::NotFound`], these must not be reported to
/// PostgreSQL as a missing file: it would end recovery early.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{name:?}: {source}")]
    BadName {
        name: String,
        #[source]
        source: WalError,
    },
    #[error("{name}: {source}")]
    Store {
        name: String,
        #[source]
        source: StoreError,
    },
    #[error("{name}: the archived copy {key} is corrupt: {problem}")]
    Corrupt {
        name: String,
        key: String,
        problem: String,
    },
    #[error("{name}: cannot write {path}: {source}")]
    Write {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FetchError {
    /// Whether the store itself failed (as opposed to bad data or a local problem).
    pub fn is_store_failure(&self) -> bool {
        matches!(self, FetchError::Store { .. })
    }
}

/// The result of [`Archiver::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// WAL objects found under `wals/` (at most the first page of a listing).
    pub wal_objects: usize,
    /// The newest WAL name found, if any.
    pub newest: Option<String>,
}

impl Archiver {
    pub fn new(store: Arc<dyn Store>, layout: Layout, settings: ArchiverSettings) -> Archiver {
        Archiver {
            store,
            layout,
            settings,
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Archives the file at `path` (PostgreSQL's `%p`). Returns only once the store has
    /// confirmed the object, or an identical copy was already there.
    pub async fn push(&self, path: &Path) -> Result<PushOutcome, PushError> {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let span = info_span!("wal_push", wal = %file_name);
        self.push_inner(path, &file_name).instrument(span).await
    }

    async fn push_inner(&self, path: &Path, file_name: &str) -> Result<PushOutcome, PushError> {
        let name = WalName::parse(file_name).map_err(|source| PushError::NotWal {
            path: path.to_owned(),
            source,
        })?;
        // One pass over the file, off the async threads: validate, hash, compress. At
        // most one pass per CPU at a time, whatever maxParallel is: more would not go
        // faster, and each holds a compressor's state and a growing output buffer.
        let prepared = {
            let (path, compression) = (path.to_owned(), self.settings.compression);
            on_cpu(move || prepare(&path, &name, compression)).await?
        };
        let Prepared {
            len,
            sha256,
            compressed,
            stamp,
        } = prepared;
        let key = self.layout.wal_key(&name, self.settings.compression);

        // The same file may already be archived, under this key or under another
        // compression's (barman-cloud, or an earlier configuration). Compare first, so
        // that two copies with different contents can never coexist.
        let existing = self
            .store
            .list(&self.layout.restore_listing_prefix(&name))
            .await
            .map_err(|source| PushError::Store {
                name: file_name.to_owned(),
                source,
            })?;
        for object in &existing {
            if let Some((found, compression)) = self.layout.parse_wal_key(&object.key)
                && found == name
            {
                return self
                    .compare_existing(&name, &object.key, compression, &sha256, len)
                    .await;
            }
        }

        let mut options = PutOptions::default();
        options
            .metadata
            .insert(META_SHA256.to_owned(), sha256.clone());
        options
            .metadata
            .insert(META_SIZE.to_owned(), len.to_string());
        options.tags = if name.is_history() {
            self.settings.history_tags.clone()
        } else {
            self.settings.tags.clone()
        };
        let (stored_bytes, put) = match compressed {
            Some(body) => (
                body.len() as u64,
                self.store.put_create(&key, body, &options).await,
            ),
            // Uncompressed: the store streams the file itself, and the checksum of the
            // pass above lets the server refuse a body that is not what was hashed.
            None => {
                options.content_sha256 = Some(sha256.clone());
                (
                    len,
                    self.store.put_create_file(&key, path, len, &options).await,
                )
            }
        };
        match put {
            Ok(()) => {
                if FileIdentity::of(path).ok() != Some(stamp) {
                    // PostgreSQL never rewrites a segment waiting to be archived; if
                    // something did, what was stored may not match the checksum. Not
                    // acknowledged: the retry compares and reports the difference.
                    return Err(PushError::Changed {
                        path: path.to_owned(),
                    });
                }
                info!(key = %key, bytes = len, stored_bytes, "archived");
                Ok(PushOutcome::Uploaded {
                    key,
                    sha256,
                    stored_bytes,
                })
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                // Someone (a concurrent push, a retry whose reply was lost) won the race.
                self.compare_existing(&name, &key, self.settings.compression, &sha256, len)
                    .await
            }
            Err(source) => Err(PushError::Store {
                name: file_name.to_owned(),
                source,
            }),
        }
    }

    async fn compare_existing(
        &self,
        name: &WalName,
        key: &str,
        compression: Option<Compression>,
        sha256: &str,
        len: u64,
    ) -> Result<PushOutcome, PushError> {
        let store_err = |source| PushError::Store {
            name: name.to_string(),
            source,
        };
        let head = self.store.head(key).await.map_err(store_err)?;
        let archived_sha256 = match head.as_ref().and_then(|h| h.metadata.get(META_SHA256)) {
            Some(sha) => sha.clone(),
            None => {
                // Written by barman-cloud (no metadata), or metadata was lost: compare
                // the decompressed content itself.
                let (body, _) = self.store.get(key).await.map_err(store_err)?;
                on_cpu(move || match compression {
                    None => Ok(sha256_hex(&body)),
                    Some(codec) => codec.decompress(&body).map(|content| sha256_hex(&content)),
                })
                .await
                .map_err(|source| PushError::Unreadable {
                    name: name.to_string(),
                    key: key.to_owned(),
                    source,
                })?
            }
        };
        if archived_sha256 == sha256 {
            debug!(key, "already archived with identical content");
            info!(key = %key, bytes = len, "already archived (identical)");
            Ok(PushOutcome::AlreadyArchived {
                key: key.to_owned(),
                sha256: sha256.to_owned(),
            })
        } else {
            Err(PushError::Conflict {
                name: name.to_string(),
                key: key.to_owned(),
                archived_sha256,
                local_sha256: sha256.to_owned(),
            })
        }
    }

    /// Restores the archived file `name` (PostgreSQL's `%f`) to `dest` (`%p`).
    /// [`FetchOutcome::NotFound`] is answered only after every key the file can have
    /// was asked for by name, beyond the listing: not found ends a recovery.
    pub async fn fetch(&self, name: &str, dest: &Path) -> Result<FetchOutcome, FetchError> {
        let span = info_span!("wal_fetch", wal = %name);
        self.fetch_inner(name, dest, Missing::Confirmed)
            .instrument(span)
            .await
    }

    /// [`Archiver::fetch`] for a read-ahead, where not found means only "not fetched
    /// ahead" (the restore itself asks again, and confirms): the listing decides it,
    /// so a window of files not yet archived costs one listing each, not seven more
    /// requests.
    pub async fn fetch_ahead(&self, name: &str, dest: &Path) -> Result<FetchOutcome, FetchError> {
        let span = info_span!("wal_fetch_ahead", wal = %name);
        self.fetch_inner(name, dest, Missing::Listed)
            .instrument(span)
            .await
    }

    async fn fetch_inner(
        &self,
        wanted: &str,
        dest: &Path,
        missing: Missing,
    ) -> Result<FetchOutcome, FetchError> {
        let name = WalName::parse(wanted).map_err(|source| FetchError::BadName {
            name: wanted.to_owned(),
            source,
        })?;
        let store_err = |source| FetchError::Store {
            name: wanted.to_owned(),
            source,
        };
        let listing = self
            .store
            .list(&self.layout.restore_listing_prefix(&name))
            .await
            .map_err(store_err)?;
        let keys: Vec<String> = listing.into_iter().map(|o| o.key).collect();
        let pick = match self.layout.pick_restore(&name, &keys, PartialPolicy::Never) {
            found @ RestorePick::Found { .. } => found,
            not_found @ RestorePick::NotFound { .. } if missing == Missing::Listed => not_found,
            // "Not found" ends a recovery, so a listing alone never decides it: a store
            // whose listings lag behind its writes, or an answer damaged on the way that
            // still parses, would end it at a gap. Each key the file can have is asked
            // for by name, which every store answers from the object itself.
            listed @ RestorePick::NotFound { .. } => {
                let mut held = Vec::new();
                for compression in std::iter::once(None).chain(Compression::ALL.map(Some)) {
                    let key = self.layout.wal_key(&name, compression);
                    if self.store.head(&key).await.map_err(store_err)?.is_some() {
                        held.push(key);
                    }
                }
                match self.layout.pick_restore(&name, &held, PartialPolicy::Never) {
                    found @ RestorePick::Found { .. } => {
                        warn!("the archive's listing missed this file; found by its name");
                        found
                    }
                    // Missing indeed; what the listing said of a .partial copy holds.
                    RestorePick::NotFound { .. } => listed,
                }
            }
        };
        let (key, compression) = match pick {
            RestorePick::Found {
                key, compression, ..
            } => (key, compression),
            RestorePick::NotFound { skipped_partial } => {
                if let Some(partial) = skipped_partial {
                    info!(partial = %partial, "not archived; only a .partial copy exists");
                } else {
                    debug!("not in the archive");
                }
                return Ok(FetchOutcome::NotFound);
            }
        };
        // A copy that fails its check may have been damaged on the way (a flipped bit,
        // a cut body): it is downloaded again, and only a failure that every download
        // repeats is reported as a corrupt archived copy, which stops recovery.
        let mut problems = Vec::new();
        let content = loop {
            let (body, info) = match self.store.get(&key).await {
                Ok(found) => found,
                // Listed a moment ago: deleted in between (retention) counts as not found.
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(FetchOutcome::NotFound),
                Err(source) => return Err(store_err(source)),
            };
            match verified(
                name,
                compression,
                body,
                info.metadata.get(META_SHA256).cloned(),
            )
            .await
            {
                Ok(content) => break content,
                Err(problem) if problems.len() + 1 < DOWNLOADS_OF_A_FAILING_COPY => {
                    warn!(
                        key = %key,
                        attempt = problems.len() + 1,
                        "the downloaded copy failed its check ({problem}); downloading it again"
                    );
                    problems.push(problem);
                }
                Err(problem) => {
                    problems.push(problem);
                    return Err(FetchError::Corrupt {
                        name: wanted.to_owned(),
                        key: key.clone(),
                        problem: format!(
                            "{} (in each of {} downloads)",
                            problems.join("; then "),
                            problems.len()
                        ),
                    });
                }
            }
        };
        let bytes = content.len() as u64;
        let dest_owned = dest.to_owned();
        tokio::task::spawn_blocking(move || write_atomically(&dest_owned, &content))
            .await
            .expect("write task panicked")
            .map_err(|source| FetchError::Write {
                name: wanted.to_owned(),
                path: dest.to_owned(),
                source,
            })?;
        info!(key = %key, bytes, "restored");
        Ok(FetchOutcome::Restored { key, bytes })
    }

    /// Checks that the archive can be listed and reports what it holds, counting only
    /// WAL of timelines from `min_timeline` on (barman-cloud-check-wal-archive's
    /// `--timeline`: after a promotion the new timeline may continue an archive). Fails
    /// on any store error (wrong credentials, missing bucket, unreachable endpoint).
    pub async fn check(&self, min_timeline: Option<u32>) -> Result<CheckReport, StoreError> {
        let objects = self.store.list(&self.layout.wals_prefix()).await?;
        let mut names: Vec<WalName> = objects
            .iter()
            .filter_map(|o| self.layout.parse_wal_key(&o.key).map(|(n, _)| n))
            .filter(|n| min_timeline.is_none_or(|min| n.timeline() >= min))
            .collect();
        names.sort_by_key(|n| n.to_string());
        if names.is_empty() && !objects.is_empty() {
            warn!(
                objects = objects.len(),
                "objects under wals/ that are not WAL files"
            );
        }
        Ok(CheckReport {
            wal_objects: names.len(),
            newest: names
                .iter()
                .filter(|n| n.is_segment())
                .max_by_key(|n| n.segment_parts())
                .map(|n| n.to_string()),
        })
    }
}

/// How sure a fetch must be before it answers not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// The listing and then every possible key asked for by name.
    Confirmed,
    /// The listing.
    Listed,
}

/// Downloads of one archived copy before its failing check is believed: a damaged
/// transfer rarely repeats, a damaged object always does.
const DOWNLOADS_OF_A_FAILING_COPY: usize = 3;

/// Decompresses, hashes and validates a downloaded copy in one pass off the async
/// threads, at most one per CPU at a time as on the way out: a prefetch window of many
/// segments must not run that many decompressions at once. `Err` says what failed.
async fn verified(
    name: WalName,
    compression: Option<Compression>,
    body: Bytes,
    expected: Option<String>,
) -> Result<Vec<u8>, String> {
    on_cpu(move || -> Result<Vec<u8>, String> {
        let content = match compression {
            None => body.to_vec(),
            Some(codec) => codec.decompress(&body).map_err(|e| e.to_string())?,
        };
        if let Some(expected) = expected {
            let actual = sha256_hex(&content);
            if actual != expected {
                return Err(format!(
                    "content sha256 {actual} does not match the sha256 recorded at upload, \
                     {expected}"
                ));
            }
        }
        if name.has_page_headers() {
            validate_segment(&name, content.len() as u64, &content).map_err(|e| e.to_string())?;
        }
        Ok(content)
    })
    .await
}

/// What one pass over a file to archive yields.
struct Prepared {
    len: u64,
    sha256: String,
    /// The compressed object; `None` when the file is stored as it is, and streamed
    /// from disk by the store.
    compressed: Option<Bytes>,
    stamp: FileIdentity,
}

/// Bytes read to check a segment's first page header before anything is shipped.
const FIRST_PAGE_PEEK: u64 = 8192;

/// Permits for the CPU-bound passes ([`on_cpu`]): over a file to ship ([`prepare`]) and
/// over a restored object (decompress, hash, validate). One per CPU this process may
/// use, shared by every archiver in the process (a reload makes a new one).
static CPU_SLOTS: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::sync::Semaphore::new(cpus)
});

/// Runs the CPU-bound `work` off the async threads, holding one of [`CPU_SLOTS`].
async fn on_cpu<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let _cpu = CPU_SLOTS
        .acquire()
        .await
        .expect("the CPU semaphore is never closed");
    tokio::task::spawn_blocking(work)
        .await
        .expect("a CPU task panicked")
}

/// A history file holds a line per ancestor timeline: kilobytes. Anything much larger
/// is not one (and fails validation as such rather than filling memory).
const MAX_HISTORY_BYTES: u64 = 16 << 20;

/// What a file that is not a regular file is, for the refusal; `None` for a regular file.
fn file_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_char_device() || t.is_block_device() {
        Some("a device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// Reads `path` once: checks the page header of a segment, hashes the whole file and,
/// with a codec, compresses it. Only the compressed output is held in memory.
fn prepare(
    path: &Path,
    name: &WalName,
    compression: Option<Compression>,
) -> Result<Prepared, PushError> {
    use std::io::Read;
    let read_err = |source| PushError::Read {
        path: path.to_owned(),
        source,
    };
    // Anything but a regular file is refused before it is opened: opening a FIFO for
    // reading waits for a writer, and reading a device need never end. The file is
    // opened without blocking and checked again, in case it was swapped meanwhile.
    let not_a_file = |meta: &std::fs::Metadata| {
        let kind = file_kind(meta)?;
        Some(PushError::NotAFile {
            path: path.to_owned(),
            kind,
        })
    };
    if let Some(err) = not_a_file(&std::fs::metadata(path).map_err(read_err)?) {
        return Err(err);
    }
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(read_err)?
    };
    let meta = file.metadata().map_err(read_err)?;
    if let Some(err) = not_a_file(&meta) {
        return Err(err);
    }
    let (len, stamp) = (meta.len(), FileIdentity::of_metadata(&meta));
    let mut reader = HashingReader::new(std::io::BufReader::with_capacity(256 * 1024, file));
    let mut first_page = Vec::new();
    if name.has_page_headers() {
        (&mut reader)
            .take(FIRST_PAGE_PEEK.min(len))
            .read_to_end(&mut first_page)
            .map_err(read_err)?;
        validate_segment(name, len, &first_page).map_err(|source| PushError::NotWal {
            path: path.to_owned(),
            source,
        })?;
    }
    if name.is_history() {
        // A history file is a few lines that recovery reads back to pick timelines:
        // read it whole (hashing it) and refuse what PostgreSQL would not have written.
        (&mut reader)
            .take(MAX_HISTORY_BYTES)
            .read_to_end(&mut first_page)
            .map_err(read_err)?;
        TimelineHistory::validate(name, &first_page).map_err(|source| PushError::NotWal {
            path: path.to_owned(),
            source,
        })?;
    }
    // The peeked bytes were hashed as they were read; the codec still needs them.
    let mut rest = std::io::Cursor::new(first_page).chain(&mut reader);
    let compressed = match compression {
        Some(codec) => {
            let out = Vec::with_capacity((len / 4) as usize + 64);
            Some(Bytes::from(
                codec
                    .compress_stream(&mut rest, out)
                    .map_err(PushError::Compression)?,
            ))
        }
        None => {
            std::io::copy(&mut rest, &mut std::io::sink()).map_err(read_err)?;
            None
        }
    };
    if reader.count() != len {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("expected {len} bytes, read {}", reader.count()),
        )));
    }
    Ok(Prepared {
        len,
        sha256: reader.finish(),
        compressed,
        stamp,
    })
}

/// Writes `content` to `dest` durably ([`walship_store::durable`]): `dest` is either
/// absent or complete.
fn write_atomically(dest: &Path, content: &[u8]) -> std::io::Result<()> {
    walship_store::durable::write(
        dest,
        walship_store::durable::Publish::Replace,
        |file| file.write_all(content),
        |e| e,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::segment_bytes;
    use walship_store::LocalStore;

    const SEG: &str = "000000010000000000000006";

    struct Fixture {
        _dir: tempfile::TempDir,
        pg_wal: PathBuf,
        store_root: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pg_wal = dir.path().join("pg_wal");
        let store_root = dir.path().join("store");
        std::fs::create_dir_all(&pg_wal).unwrap();
        Fixture {
            _dir: dir,
            pg_wal,
            store_root,
        }
    }

    fn archiver(f: &Fixture, compression: Option<Compression>) -> Archiver {
        Archiver::new(
            Arc::new(LocalStore::new(&f.store_root)),
            Layout::new("prefix", "pg"),
            ArchiverSettings {
                compression,
                ..Default::default()
            },
        )
    }

    fn write(f: &Fixture, name: &str, data: &[u8]) -> PathBuf {
        let path = f.pg_wal.join(name);
        std::fs::write(&path, data).unwrap();
        path
    }

    #[tokio::test]
    async fn push_then_fetch_round_trips_with_every_codec() {
        for codec in [None]
            .into_iter()
            .chain(Compression::ALL.iter().copied().map(Some))
        {
            let f = fixture();
            let a = archiver(&f, codec);
            let data = segment_bytes(SEG, 1);
            let path = write(&f, SEG, &data);
            let out = a.push(&path).await.unwrap();
            let PushOutcome::Uploaded { key, sha256, .. } = out else {
                panic!("{codec:?}: expected an upload, got {out:?}")
            };
            assert_eq!(sha256, sha256_hex(&data));
            let ext = codec.map_or("", |c| c.extension());
            assert_eq!(key, format!("prefix/pg/wals/0000000100000000/{SEG}{ext}"));
            assert!(f.store_root.join(&key).is_file());
            let dest = f.pg_wal.join("RECOVERYXLOG");
            let got = a.fetch(SEG, &dest).await.unwrap();
            assert_eq!(
                got,
                FetchOutcome::Restored {
                    key,
                    bytes: data.len() as u64
                }
            );
            assert!(
                std::fs::read(&dest).unwrap() == data,
                "{codec:?}: content differs"
            );
        }
    }

    #[tokio::test]
    async fn repushing_identical_content_succeeds_and_different_content_conflicts() {
        let f = fixture();
        let a = archiver(&f, Some(Compression::Gzip));
        let data = segment_bytes(SEG, 1);
        let path = write(&f, SEG, &data);
        a.push(&path).await.unwrap();
        let again = a.push(&path).await.unwrap();
        assert!(
            matches!(again, PushOutcome::AlreadyArchived { .. }),
            "{again:?}"
        );

        // Same name, other content (another cluster writing to the same place).
        let other = segment_bytes(SEG, 2);
        let path = write(&f, SEG, &other);
        let err = a.push(&path).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, PushError::Conflict { .. }), "{text}");
        assert!(text.contains(&sha256_hex(&data)), "{text}");
        assert!(text.contains(&sha256_hex(&other)), "{text}");
        // The archived copy is untouched.
        let dest = f.pg_wal.join("RESTORED");
        a.fetch(SEG, &dest).await.unwrap();
        assert!(std::fs::read(&dest).unwrap() == data);
    }

    #[tokio::test]
    async fn a_copy_under_another_compression_is_compared_not_duplicated() {
        let f = fixture();
        let data = segment_bytes(SEG, 1);
        let path = write(&f, SEG, &data);
        archiver(&f, Some(Compression::Bzip2))
            .push(&path)
            .await
            .unwrap();
        let again = archiver(&f, Some(Compression::Zstd))
            .push(&path)
            .await
            .unwrap();
        assert_eq!(
            again,
            PushOutcome::AlreadyArchived {
                key: format!("prefix/pg/wals/0000000100000000/{SEG}.bz2"),
                sha256: sha256_hex(&data)
            }
        );
        let other = write(&f, SEG, &segment_bytes(SEG, 3));
        let err = archiver(&f, Some(Compression::Zstd)).push(&other).await;
        assert!(matches!(err, Err(PushError::Conflict { .. })), "{err:?}");
    }

    #[tokio::test]
    async fn objects_without_metadata_are_compared_by_content() {
        // What barman-cloud-wal-archive leaves: a compressed object, no metadata.
        let f = fixture();
        let data = segment_bytes(SEG, 1);
        let key = format!("prefix/pg/wals/0000000100000000/{SEG}.gz");
        let store = LocalStore::new(&f.store_root);
        store
            .put_create(
                &key,
                Bytes::from(Compression::Gzip.compress(&data).unwrap()),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        let path = write(&f, SEG, &data);
        let a = archiver(&f, Some(Compression::Gzip));
        assert!(matches!(
            a.push(&path).await.unwrap(),
            PushOutcome::AlreadyArchived { .. }
        ));
        let path = write(&f, SEG, &segment_bytes(SEG, 9));
        assert!(matches!(
            a.push(&path).await,
            Err(PushError::Conflict { .. })
        ));
        let dest = f.pg_wal.join("X");
        a.fetch(SEG, &dest).await.unwrap();
        assert!(std::fs::read(&dest).unwrap() == data);
    }

    #[tokio::test]
    async fn truncated_zeroed_and_foreign_files_are_never_shipped() {
        let f = fixture();
        let a = archiver(&f, None);
        let data = segment_bytes(SEG, 1);
        let truncated = write(&f, SEG, &data[..data.len() - 8192]);
        let err = a.push(&truncated).await.unwrap_err().to_string();
        assert!(err.contains("power of two"), "{err}");
        let zeroed = write(&f, SEG, &vec![0u8; 1 << 20]);
        let err = a.push(&zeroed).await.unwrap_err().to_string();
        assert!(err.contains("all zeros"), "{err}");
        let foreign = write(&f, "notes.txt", b"hello");
        let err = a.push(&foreign).await.unwrap_err().to_string();
        assert!(err.contains("not a WAL file name"), "{err}");
        // A valid page under the wrong name (renamed file).
        let renamed = write(&f, "000000010000000000000007", &data);
        let err = a.push(&renamed).await.unwrap_err().to_string();
        assert!(err.contains("page address"), "{err}");
        assert!(std::fs::read_dir(&f.store_root).map_or(true, |mut d| {
            d.all(|e| e.unwrap().file_name() == ".walship-meta")
        }));
    }

    #[tokio::test]
    async fn history_files_go_directly_under_wals_and_round_trip() {
        let f = fixture();
        let a = archiver(&f, Some(Compression::Zstd));
        let history = b"1\t0/9000000\tno recovery target specified\n";
        let path = write(&f, "00000002.history", history);
        let out = a.push(&path).await.unwrap();
        let PushOutcome::Uploaded { key, sha256, .. } = out else {
            panic!("expected an upload, got {out:?}")
        };
        assert_eq!(key, "prefix/pg/wals/00000002.history.zst");
        assert_eq!(sha256, sha256_hex(history));
        let path = write(&f, "00000002.history", b"1\t0/A000000\tother\n");
        assert!(matches!(
            a.push(&path).await,
            Err(PushError::Conflict { .. })
        ));
        let dest = f.pg_wal.join("RECOVERYHISTORY");
        a.fetch("00000002.history", &dest).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), history);
    }

    #[tokio::test]
    async fn fetch_reports_missing_files_as_not_found() {
        let f = fixture();
        let a = archiver(&f, None);
        let dest = f.pg_wal.join("RECOVERYXLOG");
        assert_eq!(a.fetch(SEG, &dest).await.unwrap(), FetchOutcome::NotFound);
        assert_eq!(
            a.fetch("00000003.history", &dest).await.unwrap(),
            FetchOutcome::NotFound
        );
        assert!(!dest.exists());
        let err = a.fetch("../../etc/passwd", &dest).await.unwrap_err();
        assert!(matches!(err, FetchError::BadName { .. }), "{err}");
    }

    #[tokio::test]
    async fn corrupt_archived_copies_are_refused_not_restored() {
        let f = fixture();
        let a = archiver(&f, Some(Compression::Gzip));
        let data = segment_bytes(SEG, 1);
        let path = write(&f, SEG, &data);
        let PushOutcome::Uploaded { key, .. } = a.push(&path).await.unwrap() else {
            panic!()
        };
        // Swap the archived object for a well-formed gzip of other content: only the
        // recorded checksum can tell.
        let object = f.store_root.join(&key);
        std::fs::write(
            &object,
            Compression::Gzip.compress(&segment_bytes(SEG, 5)).unwrap(),
        )
        .unwrap();
        let dest = f.pg_wal.join("RECOVERYXLOG");
        let err = a.fetch(SEG, &dest).await.unwrap_err();
        assert!(matches!(err, FetchError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("sha256"), "{err}");
        // A truncated compressed object.
        let good = Compression::Gzip.compress(&data).unwrap();
        std::fs::write(&object, &good[..good.len() / 2]).unwrap();
        let err = a.fetch(SEG, &dest).await.unwrap_err();
        assert!(matches!(err, FetchError::Corrupt { .. }), "{err}");
        assert!(!dest.exists(), "nothing may be left at the destination");
    }

    #[tokio::test]
    async fn check_reports_the_newest_segment() {
        let f = fixture();
        let a = archiver(&f, None);
        assert_eq!(
            a.check(None).await.unwrap(),
            CheckReport {
                wal_objects: 0,
                newest: None
            }
        );
        for seg in ["000000010000000000000006", "000000010000000000000008"] {
            let path = write(&f, seg, &segment_bytes(seg, 1));
            a.push(&path).await.unwrap();
        }
        let report = a.check(None).await.unwrap();
        assert_eq!(report.wal_objects, 2);
        assert_eq!(report.newest.as_deref(), Some("000000010000000000000008"));
        // Only timeline 2 and later: as good as empty.
        assert_eq!(a.check(Some(2)).await.unwrap().wal_objects, 0);
        assert_eq!(a.check(Some(1)).await.unwrap().wal_objects, 2);
    }
}
