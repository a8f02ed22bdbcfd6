//! A file read for upload in chunks, hashed as it is read, for stores that stream.
//!
//! The archiver hashed the file when it read it; the store uploads it from disk later.
//! If the file changed in between, the bytes sent are not the bytes hashed. An
//! [`UploadSource`] hashes what it hands out and checks the total against the SHA-256
//! the caller declared before it hands out the last chunk, so a store that sends chunks
//! in order never completes an upload of bytes that differ (the request is cut off, the
//! block list never committed) and nothing is stored. It holds one chunk at a time.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::StoreError;

/// A value no other upload of this process uses at the same time, and no upload of
/// another process in practice: process id, time and a counter, 32 hex digits always
/// (Azure's block ids of one blob must all have the same length; GCS multipart
/// boundaries take it too).
pub fn upload_nonce() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:08x}{nanos:016x}{count:08x}", std::process::id())
}

/// A body being read for one upload attempt: a file, or bytes already in memory.
pub struct UploadSource {
    store: String,
    path: PathBuf,
    from: From,
    len: u64,
    sent: u64,
    hasher: Sha256,
    expected_sha256: Option<String>,
    checked: bool,
}

enum From {
    File(tokio::fs::File),
    Memory(Bytes),
}

impl UploadSource {
    /// Opens `path`, which must be `len` bytes long; `expected_sha256` (lower-case hex),
    /// when given, is checked before the last chunk is handed out. `store` names the
    /// store in errors.
    pub async fn open(
        store: &str,
        path: &Path,
        len: u64,
        expected_sha256: Option<&str>,
    ) -> Result<UploadSource, StoreError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| StoreError::source_file(store, path, &e.to_string()).with_source(e))?;
        Ok(UploadSource {
            store: store.to_owned(),
            path: path.to_owned(),
            from: From::File(file),
            len,
            sent: 0,
            hasher: Sha256::new(),
            expected_sha256: expected_sha256.map(str::to_ascii_lowercase),
            checked: false,
        })
    }

    /// A body already in memory, handed out in slices (no copy, no hash: the caller
    /// holds the very bytes it declared).
    pub fn from_bytes(body: Bytes) -> UploadSource {
        UploadSource {
            store: String::new(),
            path: PathBuf::new(),
            len: body.len() as u64,
            from: From::Memory(body),
            sent: 0,
            hasher: Sha256::new(),
            expected_sha256: None,
            checked: true,
        }
    }

    /// The file's length, as declared.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many bytes were handed out so far.
    pub fn position(&self) -> u64 {
        self.sent
    }

    /// The next chunk of at most `max` bytes (fewer only for the last one), or `None`
    /// once the whole file was handed out. Fails when the file is shorter or longer
    /// than declared, or, before the last chunk, when its SHA-256 differs from the one
    /// declared.
    pub async fn next_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StoreError> {
        if self.sent == self.len {
            if !self.checked {
                // An empty file: its checks have not run yet.
                self.checked = true;
                self.finish().await?;
            }
            return Ok(None);
        }
        let want = (self.len - self.sent).min(max.max(1) as u64) as usize;
        let file = match &mut self.from {
            From::Memory(body) => {
                let start = self.sent as usize;
                self.sent += want as u64;
                return Ok(Some(body.slice(start..start + want)));
            }
            From::File(file) => file,
        };
        let mut chunk = BytesMut::zeroed(want);
        let mut filled = 0;
        while filled < want {
            let n = file
                .read(&mut chunk[filled..])
                .await
                .map_err(|e| StoreError::source_file(&self.store, &self.path, &e.to_string()))?;
            if n == 0 {
                return Err(self.error(&format!(
                    "expected {} bytes, the file ended after {}",
                    self.len,
                    self.sent + filled as u64
                )));
            }
            filled += n;
        }
        self.hasher.update(&chunk);
        self.sent += want as u64;
        if self.sent == self.len {
            self.checked = true;
            self.finish().await?;
        }
        Ok(Some(chunk.freeze()))
    }

    /// At the end: nothing more in the file, and the hash as declared.
    async fn finish(&mut self) -> Result<(), StoreError> {
        let From::File(file) = &mut self.from else {
            return Ok(());
        };
        let mut probe = [0u8; 1];
        let more = file.read(&mut probe).await;
        let more = more.map_err(|e| self.error(&e.to_string()))?;
        if more != 0 {
            return Err(self.error(&format!(
                "expected {} bytes, the file is longer; it changed",
                self.len
            )));
        }
        if let Some(expected) = &self.expected_sha256 {
            let actual = hex::encode(self.hasher.clone().finalize());
            if &actual != expected {
                return Err(self.error(&format!(
                    "its SHA-256 is {actual}, not the {expected} it had when it was read; \
                     the file changed"
                )));
            }
        }
        Ok(())
    }

    fn error(&self, detail: &str) -> StoreError {
        StoreError::source_file(&self.store, &self.path, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    async fn drain(source: &mut UploadSource, max: usize) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        while let Some(chunk) = source.next_chunk(max).await? {
            assert!(chunk.len() <= max);
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_file_is_handed_out_whole_in_chunks_of_at_most_the_size_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let body: Vec<u8> = (0..10_007u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &body).unwrap();
        let mut source = UploadSource::open("s", &path, body.len() as u64, Some(&sha(&body)))
            .await
            .unwrap();
        assert_eq!(drain(&mut source, 1000).await.unwrap(), body);
        assert_eq!(source.position(), body.len() as u64);
    }

    #[tokio::test]
    async fn a_file_that_differs_from_its_hash_fails_before_its_last_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 2500]).unwrap();
        let mut source = UploadSource::open("s", &path, 2500, Some(&sha(b"other")))
            .await
            .unwrap();
        assert_eq!(source.next_chunk(1000).await.unwrap().unwrap().len(), 1000);
        assert_eq!(source.next_chunk(1000).await.unwrap().unwrap().len(), 1000);
        let err = source.next_chunk(1000).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Source);
        assert!(err.to_string().contains("the file changed"), "{err}");
    }

    #[tokio::test]
    async fn a_file_shorter_or_longer_than_declared_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 100]).unwrap();
        for declared in [99, 101] {
            let mut source = UploadSource::open("s", &path, declared, None)
                .await
                .unwrap();
            let err = drain(&mut source, 64).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Source, "{declared}: {err}");
        }
    }

    #[tokio::test]
    async fn an_empty_file_has_no_chunk_and_is_still_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        let mut source = UploadSource::open("s", &path, 0, Some(&sha(b"")))
            .await
            .unwrap();
        assert!(source.next_chunk(10).await.unwrap().is_none());
        let mut source = UploadSource::open("s", &path, 0, Some(&sha(b"x")))
            .await
            .unwrap();
        assert!(source.next_chunk(10).await.is_err());
    }

    #[test]
    fn upload_nonces_have_one_width_and_never_repeat() {
        let a = upload_nonce();
        let b = upload_nonce();
        assert_eq!(a.len(), 32);
        assert_eq!(b.len(), 32);
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn bytes_in_memory_are_handed_out_in_slices() {
        let body = Bytes::from_static(b"0123456789");
        let mut source = UploadSource::from_bytes(body.clone());
        assert_eq!(drain(&mut source, 4).await.unwrap(), &body[..]);
    }
}
