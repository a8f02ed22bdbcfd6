//! `file:///PATH`: a store in a local directory, walship's embedded default.
//!
//! Durability follows the usual POSIX recipe: write a temporary file, fsync it, publish
//! it, fsync the directory. Publishing uses `link(2)`, which (unlike `rename(2)`) fails
//! when the target exists, so create-only puts are atomic even between processes.
//! Metadata lives beside the objects under `.walship-meta/`, written after the object is
//! published: a crash in between leaves an object without metadata, which callers treat
//! like an object written by another tool (they compare contents instead).

use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    ErrorKind, Metadata, MultipartUpload, ObjectInfo, PutOptions, Store, StoreError, durable,
};

const META_DIR: &str = ".walship-meta";
/// Where multipart uploads stage their parts until they complete or abort.
const UPLOADS_DIR: &str = ".walship-uploads";

/// A store rooted at a directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root`, which is created when missing.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        // Keys come from our own layout code, but a key that escapes the root would be a
        // bug with consequences, so refuse it outright.
        if key.is_empty()
            || key.starts_with('/')
            || key.split('/').any(|part| {
                part.is_empty()
                    || part == "."
                    || part == ".."
                    || part == META_DIR
                    || part == UPLOADS_DIR
            })
        {
            return Err(StoreError::new(
                ErrorKind::Rejected,
                self.describe(),
                format!("{key:?} is not a valid object key"),
            ));
        }
        Ok(self.root.join(key))
    }

    fn meta_path_of(&self, key: &str) -> PathBuf {
        self.root.join(META_DIR).join(key)
    }

    /// A file system call of the store failed: the directory did not serve the request.
    fn io_error(&self, what: &str, path: &Path, err: io::Error) -> StoreError {
        StoreError::new(
            ErrorKind::Server,
            self.describe(),
            format!("{what} {}: {err}", path.display()),
        )
        .with_source(err)
    }

    /// Creates the object `key` with the content `fill` writes, durably and only if the
    /// name is free ([`durable::Publish::CreateOnly`]).
    fn put_blocking(
        &self,
        key: &str,
        fill: &mut dyn FnMut(&mut std::fs::File) -> Result<(), StoreError>,
        options: &PutOptions,
    ) -> Result<(), StoreError> {
        self.create_blocking(key, &options.metadata, |target| {
            durable::write(target, durable::Publish::CreateOnly, fill, |e| {
                self.create_error(key, "writing", target, e)
            })
        })
    }

    /// Publishes the finished, fsynced file at `staged` (on this store's file system)
    /// as `key`, create-only, as [`LocalStore::put_blocking`] publishes its own.
    fn publish_blocking(
        &self,
        key: &str,
        staged: &Path,
        metadata: &Metadata,
    ) -> Result<(), StoreError> {
        self.create_blocking(key, metadata, |target| {
            durable::link_new(staged, target)
                .map_err(|e| self.create_error(key, "publishing", target, e))
        })
    }

    /// The steps every new object takes: its directory, `create` (which must fail with
    /// `AlreadyExists` if the name is taken), then its metadata.
    fn create_blocking(
        &self,
        key: &str,
        metadata: &Metadata,
        create: impl FnOnce(&Path) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let target = self.path_of(key)?;
        let dir = target
            .parent()
            .expect("a key always has a parent")
            .to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| self.io_error("creating", &dir, e))?;
        create(&target)?;
        if !metadata.is_empty() {
            self.write_meta(key, metadata)?;
        }
        Ok(())
    }

    /// A failed creation: the name taken, or another I/O error.
    fn create_error(&self, key: &str, what: &str, target: &Path, e: io::Error) -> StoreError {
        if e.kind() == io::ErrorKind::AlreadyExists {
            StoreError::already_exists(self.describe(), key)
        } else {
            self.io_error(what, target, e)
        }
    }

    fn write_meta(&self, key: &str, metadata: &Metadata) -> Result<(), StoreError> {
        let path = self.meta_path_of(key);
        let dir = path
            .parent()
            .expect("a key always has a parent")
            .to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| self.io_error("creating", &dir, e))?;
        let mut text = String::new();
        for (k, v) in metadata {
            text.push_str(k);
            text.push('=');
            text.push_str(v);
            text.push('\n');
        }
        let io_error = |e| self.io_error("writing", &path, e);
        durable::write(
            &path,
            durable::Publish::Replace,
            |file| file.write_all(text.as_bytes()).map_err(io_error),
            io_error,
        )
    }

    fn read_meta(&self, key: &str) -> Metadata {
        let Ok(text) = std::fs::read_to_string(self.meta_path_of(key)) else {
            return Metadata::new();
        };
        text.lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn info_blocking(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let path = self.path_of(key)?;
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: m.len(),
                metadata: self.read_meta(key),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error("reading", &path, e)),
        }
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        // Walk only the directory that can contain matches.
        let start = match prefix.rfind('/') {
            Some(i) => self.root.join(&prefix[..i]),
            None => self.root.clone(),
        };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io_error("listing", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.io_error("listing", &dir, e))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name == META_DIR || name == UPLOADS_DIR || name.starts_with(durable::TEMP_PREFIX)
                {
                    continue;
                }
                let path = entry.path();
                let file_type = entry
                    .file_type()
                    .map_err(|e| self.io_error("listing", &path, e))?;
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let key = rel.to_string_lossy().replace('\\', "/");
                if file_type.is_dir() {
                    if key.starts_with(prefix) || prefix.starts_with(&format!("{key}/")) {
                        stack.push(path);
                    }
                } else if file_type.is_file() && key.starts_with(prefix) {
                    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    let metadata = self.read_meta(&key);
                    out.push(ObjectInfo {
                        key,
                        size,
                        metadata,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// Copies `len` bytes of the file at `from` into `to` in pieces, checking that the file
/// has exactly that length and, when `sha256` is given, that hash.
fn copy_checked(
    store: &str,
    from: &Path,
    len: u64,
    sha256: Option<&str>,
    to: &mut std::fs::File,
) -> Result<(), StoreError> {
    use sha2::Digest;
    use std::io::Read;
    let source_error = |detail: String| StoreError::source_file(store, from, &detail);
    let mut file = std::fs::File::open(from).map_err(|e| source_error(e.to_string()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| source_error(e.to_string()))?;
        if n == 0 {
            break;
        }
        copied += n as u64;
        if copied > len {
            return Err(source_error(format!(
                "expected {len} bytes, the file is longer; it changed"
            )));
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n]).map_err(|e| {
            StoreError::new(
                ErrorKind::Server,
                store,
                format!("writing a copy of {}: {e}", from.display()),
            )
        })?;
    }
    if copied != len {
        return Err(source_error(format!(
            "expected {len} bytes, the file ended after {copied}"
        )));
    }
    if let Some(expected) = sha256 {
        let actual = hex::encode(hasher.finalize());
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(source_error(format!(
                "its SHA-256 is {actual}, not the {expected} it had when it was read; the \
                 file changed"
            )));
        }
    }
    Ok(())
}

#[async_trait]
impl Store for LocalStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn put_create(
        &self,
        key: &str,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<(), StoreError> {
        let (this, key, options) = (self.clone(), key.to_string(), options.clone());
        spawn(move || {
            let dir = this.root.clone();
            let mut fill = |file: &mut std::fs::File| {
                file.write_all(&body)
                    .map_err(|e| this.io_error("writing into", &dir, e))
            };
            this.put_blocking(&key, &mut fill, &options)
        })
        .await
    }

    /// Copies the file in pieces, never holding it in memory, checking its length and
    /// the declared SHA-256 before the copy is published.
    async fn put_create_file(
        &self,
        key: &str,
        path: &Path,
        len: u64,
        options: &PutOptions,
    ) -> Result<(), StoreError> {
        let (this, key, path, options) = (
            self.clone(),
            key.to_string(),
            path.to_owned(),
            options.clone(),
        );
        spawn(move || {
            let store = this.describe();
            let sha256 = options.content_sha256.clone();
            let mut fill = |file: &mut std::fs::File| {
                copy_checked(&store, &path, len, sha256.as_deref(), file)
            };
            this.put_blocking(&key, &mut fill, &options)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<(Bytes, ObjectInfo), StoreError> {
        let (this, key) = (self.clone(), key.to_string());
        spawn(move || {
            let path = this.path_of(&key)?;
            match std::fs::read(&path) {
                Ok(body) => {
                    let info = ObjectInfo {
                        key: key.clone(),
                        size: body.len() as u64,
                        metadata: this.read_meta(&key),
                    };
                    Ok((Bytes::from(body), info))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Err(StoreError::not_found(this.describe(), &key))
                }
                Err(e) => Err(this.io_error("reading", &path, e)),
            }
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let (this, key) = (self.clone(), key.to_string());
        spawn(move || this.info_blocking(&key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let (this, prefix) = (self.clone(), prefix.to_string());
        spawn(move || this.list_blocking(&prefix)).await
    }

    async fn put_replace(
        &self,
        key: &str,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<(), StoreError> {
        let (this, key, options) = (self.clone(), key.to_string(), options.clone());
        spawn(move || {
            let target = this.path_of(&key)?;
            let dir = target.parent().expect("a key always has a parent");
            std::fs::create_dir_all(dir).map_err(|e| this.io_error("creating", dir, e))?;
            let io_error = |e| this.io_error("writing", &target, e);
            durable::write(
                &target,
                durable::Publish::Replace,
                |file| file.write_all(&body).map_err(io_error),
                io_error,
            )?;
            // Metadata of the object replaced must not stay with the new one.
            match options.metadata.is_empty() {
                true => match std::fs::remove_file(this.meta_path_of(&key)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        Err(this.io_error("removing", &this.meta_path_of(&key), e))
                    }
                    _ => Ok(()),
                },
                false => this.write_meta(&key, &options.metadata),
            }
        })
        .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let (this, key) = (self.clone(), key.to_string());
        spawn(move || {
            use std::io::{Read, Seek, SeekFrom};
            let path = this.path_of(&key)?;
            let mut file = match std::fs::File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(StoreError::not_found(this.describe(), &key));
                }
                Err(e) => return Err(this.io_error("reading", &path, e)),
            };
            let read = |e| this.io_error("reading", &path, e);
            let len = file.metadata().map_err(read)?.len();
            let (start, end) = (range.start.min(len), range.end.min(len));
            file.seek(SeekFrom::Start(start)).map_err(read)?;
            let mut body = vec![0u8; end.saturating_sub(start) as usize];
            file.read_exact(&mut body).map_err(read)?;
            Ok(Bytes::from(body))
        })
        .await
    }

    async fn start_multipart(
        &self,
        key: &str,
        options: &PutOptions,
    ) -> Result<Arc<dyn MultipartUpload>, StoreError> {
        self.path_of(key)?;
        let staging = self.root.join(UPLOADS_DIR).join(crate::upload_nonce());
        let this = self.clone();
        let dir = staging.clone();
        let slots = spawn(move || {
            std::fs::create_dir_all(&dir).map_err(|e| this.io_error("creating", &dir, e))?;
            let path = dir.join(SLOTS_FILE);
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| this.io_error("creating", &path, e))
        })
        .await?;
        Ok(Arc::new(LocalUpload {
            store: self.clone(),
            key: key.to_owned(),
            staging,
            metadata: options.metadata.clone(),
            slots: Arc::new(slots),
            parts: Arc::new(std::sync::Mutex::new(Staged::default())),
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let (this, key) = (self.clone(), key.to_string());
        spawn(move || {
            let path = this.path_of(&key)?;
            for p in [path, this.meta_path_of(&key)] {
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(this.io_error("removing", &p, e)),
                }
            }
            Ok(())
        })
        .await
    }
}

/// The staging file of an upload's equal-sized parts, each at `index × stride`.
const SLOTS_FILE: &str = "slots";

/// Where each part of an upload was staged.
#[derive(Debug, Default)]
struct Staged {
    /// The size of the slots: the first non-empty part's length.
    stride: Option<u64>,
    /// Each part: its length and whether it is in its slot (else in a file of its own).
    parts: std::collections::BTreeMap<usize, (u64, bool)>,
}

/// An upload's parts staged under `.walship-uploads/<nonce>/`. A part as long as the
/// first one is written in place in one file (`slots`, at `index × stride`), so that
/// when every part but the last is in its slot, complete writes only the last part and
/// publishes that very file with `link(2)`, as every create-only put is published: the
/// backup's bytes are written once, as pg_basebackup writes them. Parts of other sizes
/// go to files of their own, and an upload of uneven parts is joined by a copy at
/// complete. Nothing is fsynced before complete: an upload that did not complete is
/// not an object, whatever a crash leaves of it.
#[derive(Debug)]
struct LocalUpload {
    store: LocalStore,
    key: String,
    staging: PathBuf,
    metadata: Metadata,
    slots: Arc<std::fs::File>,
    parts: Arc<std::sync::Mutex<Staged>>,
}

impl LocalUpload {
    fn part_path(&self, index: usize) -> PathBuf {
        self.staging.join(format!("{index:05}"))
    }
}

#[async_trait]
impl MultipartUpload for LocalUpload {
    async fn put_part(&self, index: usize, body: Bytes) -> Result<(), StoreError> {
        let len = body.len() as u64;
        let slot = {
            let mut staged = self
                .parts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match staged.stride {
                None if len > 0 => {
                    staged.stride = Some(len);
                    Some(len)
                }
                Some(stride) if stride == len => Some(stride),
                _ => None,
            }
        };
        let (path, store, slots) = (
            self.part_path(index),
            self.store.clone(),
            self.slots.clone(),
        );
        let slots_path = self.staging.join(SLOTS_FILE);
        spawn(move || match slot {
            Some(stride) => {
                use std::os::unix::fs::FileExt;
                // Synced part by part, as the parts come, so that complete's sync has
                // only the last part left to wait for.
                slots
                    .write_all_at(&body, index as u64 * stride)
                    .and_then(|()| slots.sync_data())
                    .map_err(|e| store.io_error("writing", &slots_path, e))
            }
            None => std::fs::write(&path, &body).map_err(|e| store.io_error("writing", &path, e)),
        })
        .await?;
        self.parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .parts
            .insert(index, (len, slot.is_some()));
        Ok(())
    }

    async fn complete(&self, parts: usize) -> Result<(), StoreError> {
        let (stride, layout) = {
            let staged = self
                .parts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let layout: Vec<Option<(u64, bool)>> =
                (0..parts).map(|i| staged.parts.get(&i).copied()).collect();
            (staged.stride.unwrap_or(0), layout)
        };
        if let Some(missing) = layout.iter().position(Option::is_none) {
            return Err(StoreError::new(
                ErrorKind::NotFound,
                self.store.describe(),
                format!("{}: part {missing} of {parts} was never uploaded", self.key),
            ));
        }
        let layout: Vec<(u64, bool)> = layout.into_iter().flatten().collect();
        let in_place = layout
            .iter()
            .take(parts.saturating_sub(1))
            .all(|(_, slotted)| *slotted);
        let (store, key, staging) = (self.store.clone(), self.key.clone(), self.staging.clone());
        let part_paths: Vec<PathBuf> = (0..parts).map(|i| self.part_path(i)).collect();
        let slots = self.slots.clone();
        let metadata = self.metadata.clone();
        spawn(move || {
            use std::os::unix::fs::FileExt;
            let slots_path = staging.join(SLOTS_FILE);
            if in_place {
                // Every part but the last is in its slot: the last joins them, the
                // file ends where it ends, and the staging file itself is published.
                let mut total = 0;
                if let Some(&(len, slotted)) = layout.last() {
                    let at = (layout.len() as u64 - 1) * stride;
                    if !slotted {
                        let last = &part_paths[layout.len() - 1];
                        let body = std::fs::read(last)
                            .map_err(|e| store.io_error("reading the staged part", last, e))?;
                        slots
                            .write_all_at(&body, at)
                            .map_err(|e| store.io_error("writing", &slots_path, e))?;
                    }
                    total = at + len;
                }
                slots
                    .set_len(total)
                    .and_then(|()| slots.sync_all())
                    .map_err(|e| store.io_error("writing", &slots_path, e))?;
                store.publish_blocking(&key, &slots_path, &metadata)?;
            } else {
                let mut fill = |file: &mut std::fs::File| {
                    for (i, &(len, slotted)) in layout.iter().enumerate() {
                        if slotted {
                            let mut source = Slot {
                                file: &slots,
                                at: i as u64 * stride,
                                left: len,
                            };
                            io::copy(&mut source, file).map_err(|e| {
                                store.io_error("copying a staged part", &slots_path, e)
                            })?;
                        } else {
                            let part = &part_paths[i];
                            let mut from = std::fs::File::open(part)
                                .map_err(|e| store.io_error("reading the staged part", part, e))?;
                            io::copy(&mut from, file)
                                .map_err(|e| store.io_error("copying the staged part", part, e))?;
                        }
                    }
                    Ok(())
                };
                let options = PutOptions {
                    metadata: metadata.clone(),
                    ..PutOptions::default()
                };
                store.put_blocking(&key, &mut fill, &options)?;
            }
            let _ = std::fs::remove_dir_all(&staging);
            Ok(())
        })
        .await
    }

    async fn abort(&self) -> Result<(), StoreError> {
        let (store, staging) = (self.store.clone(), self.staging.clone());
        spawn(move || match std::fs::remove_dir_all(&staging) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(store.io_error("removing", &staging, e))
            }
            _ => Ok(()),
        })
        .await
    }
}

/// One part's bytes in the slots file, read where they are.
struct Slot<'a> {
    file: &'a std::fs::File,
    at: u64,
    left: u64,
}

impl io::Read for Slot<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.at += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

async fn spawn<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError::new(
            ErrorKind::Server,
            "file",
            format!("local store task failed: {e}"),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn upload_parts(store: &LocalStore, key: &str, parts: &[Bytes]) -> Vec<u8> {
        let upload = store
            .start_multipart(key, &PutOptions::default())
            .await
            .unwrap();
        for (i, part) in parts.iter().enumerate() {
            upload.put_part(i, part.clone()).await.unwrap();
        }
        upload.complete(parts.len()).await.unwrap();
        let (got, _) = store.get(key).await.unwrap();
        let expected: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(got.len(), expected.len(), "{key}: length");
        assert!(
            got[..] == expected[..],
            "{key}: the parts were not joined in order"
        );
        got.to_vec()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn equal_parts_are_written_in_place_once_and_uneven_ones_still_join_in_order() {
        let root = tempfile::tempdir().unwrap();
        let store = LocalStore::new(root.path().to_owned());
        let part = |len: usize, seed: u8| {
            Bytes::from((0..len).map(|i| (i as u8) ^ seed).collect::<Vec<u8>>())
        };
        // Equal parts and a short last one: published from the slots file itself.
        upload_parts(
            &store,
            "a/in-place",
            &[part(4096, 1), part(4096, 2), part(4096, 3), part(100, 4)],
        )
        .await;
        // A middle part of another size: joined by a copy, slotted parts read in place.
        upload_parts(
            &store,
            "a/uneven",
            &[part(4096, 5), part(1000, 6), part(4096, 7), part(10, 8)],
        )
        .await;
        // A part never sent is a missing part, not a short object.
        let upload = store
            .start_multipart("a/missing", &PutOptions::default())
            .await
            .unwrap();
        upload.put_part(0, part(4096, 9)).await.unwrap();
        upload.put_part(2, part(10, 9)).await.unwrap();
        let err = upload.complete(3).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(store.head("a/missing").await.unwrap().is_none());
        upload.abort().await.unwrap();
        let staging = std::fs::read_dir(root.path().join(UPLOADS_DIR))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(staging, 0, "uploads left staging files behind");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_large_file_is_copied_into_the_local_store_without_being_held_in_memory() {
        let root = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let store = LocalStore::new(root.path().to_owned());
        crate::conformance::a_large_streamed_put_does_not_hold_the_file_in_memory(
            &store,
            scratch.path(),
            "memory/",
        )
        .await;
    }

    /// A store that takes the trait's default streamed put, which reads the file into
    /// memory: the memory check must catch it.
    #[derive(Debug)]
    struct Buffering(LocalStore);

    #[async_trait]
    impl Store for Buffering {
        fn describe(&self) -> String {
            self.0.describe()
        }
        async fn put_create(
            &self,
            key: &str,
            body: Bytes,
            options: &PutOptions,
        ) -> Result<(), StoreError> {
            self.0.put_create(key, body, options).await
        }
        async fn get(&self, key: &str) -> Result<(Bytes, ObjectInfo), StoreError> {
            self.0.get(key).await
        }
        async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
            self.0.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
            self.0.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.0.delete(key).await
        }
        async fn put_replace(
            &self,
            key: &str,
            body: Bytes,
            options: &PutOptions,
        ) -> Result<(), StoreError> {
            self.0.put_replace(key, body, options).await
        }
        async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
            self.0.get_range(key, range).await
        }
        async fn start_multipart(
            &self,
            key: &str,
            options: &PutOptions,
        ) -> Result<Arc<dyn MultipartUpload>, StoreError> {
            self.0.start_multipart(key, options).await
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    #[should_panic(expected = "peak resident memory grew by")]
    async fn the_memory_check_catches_a_store_that_holds_the_file() {
        let root = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let store = Buffering(LocalStore::new(root.path().to_owned()));
        crate::conformance::a_large_streamed_put_does_not_hold_the_file_in_memory(
            &store,
            scratch.path(),
            "memory/",
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_local_store_passes_the_conformance_suite() {
        let root = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(LocalStore::new(root.path().to_owned()));
        crate::conformance::run(store, crate::conformance::Server::Faithful, scratch.path()).await;
    }

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("archive"));
        (dir, store)
    }

    fn opts(sha: &str) -> PutOptions {
        let mut o = PutOptions::default();
        o.metadata.insert("walship-sha256".into(), sha.into());
        o
    }

    #[tokio::test]
    async fn put_get_head_round_trip_with_metadata() {
        let (_dir, s) = store();
        s.put_create(
            "p/srv/wals/a/b.gz",
            Bytes::from_static(b"hello"),
            &opts("abc"),
        )
        .await
        .unwrap();
        let (body, info) = s.get("p/srv/wals/a/b.gz").await.unwrap();
        assert_eq!(&body[..], b"hello");
        assert_eq!(info.size, 5);
        assert_eq!(info.metadata.get("walship-sha256").unwrap(), "abc");
        let head = s.head("p/srv/wals/a/b.gz").await.unwrap().unwrap();
        assert_eq!(head, info);
        assert!(s.head("p/srv/wals/a/missing").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn create_only_never_overwrites() {
        let (_dir, s) = store();
        s.put_create("k/x", Bytes::from_static(b"first"), &opts("1"))
            .await
            .unwrap();
        let err = s
            .put_create("k/x", Bytes::from_static(b"second"), &opts("2"))
            .await
            .unwrap_err();
        assert!(err.kind() == ErrorKind::AlreadyExists, "{err}");
        let (body, info) = s.get("k/x").await.unwrap();
        assert_eq!(&body[..], b"first");
        assert_eq!(info.metadata.get("walship-sha256").unwrap(), "1");
    }

    #[tokio::test]
    async fn concurrent_creates_have_exactly_one_winner() {
        let (_dir, s) = store();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.put_create(
                    "race/key",
                    Bytes::from(vec![i as u8; 1000]),
                    &PutOptions::default(),
                )
                .await
            }));
        }
        let mut winners = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => winners += 1,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(winners, 1);
        // No temporary files are left behind.
        let listed = s.list("race/").await.unwrap();
        assert_eq!(listed.len(), 1);
        let leftovers: Vec<_> = std::fs::read_dir(s.root().join("race"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[tokio::test]
    async fn list_filters_by_prefix_and_hides_internal_files() {
        let (_dir, s) = store();
        for key in [
            "a/wals/1/x",
            "a/wals/1/y",
            "a/wals/2/z",
            "a/base/q",
            "ab/wals/1/x",
        ] {
            s.put_create(key, Bytes::from_static(b"."), &opts("s"))
                .await
                .unwrap();
        }
        let keys: Vec<_> = s
            .list("a/wals/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["a/wals/1/x", "a/wals/1/y", "a/wals/2/z"]);
        let keys: Vec<_> = s
            .list("a")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys.len(), 5);
        assert!(s.list("nothing/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn get_missing_is_not_found_and_delete_is_idempotent() {
        let (_dir, s) = store();
        assert!(s.get("x/y").await.unwrap_err().kind() == ErrorKind::NotFound);
        s.put_create("x/y", Bytes::from_static(b"1"), &opts("s"))
            .await
            .unwrap();
        s.delete("x/y").await.unwrap();
        s.delete("x/y").await.unwrap();
        assert!(s.head("x/y").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_root() {
        let (_dir, s) = store();
        for key in [
            "../x",
            "/etc/passwd",
            "a//b",
            "a/./b",
            ".walship-meta/x",
            "",
        ] {
            let err = s
                .put_create(key, Bytes::from_static(b"."), &PutOptions::default())
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("not a valid object key"),
                "{key}: {err}"
            );
        }
    }
}
