//! The one storage interface every backend implements, plus the local-filesystem store.
//!
//! walship talks to S3, Azure Blob Storage, Google Cloud Storage and a plain directory
//! through the [`Store`] trait. The trait is deliberately small (create-only put, get,
//! head, list, delete) so that each cloud maps it onto its own primitives, and "the
//! object already exists" is a typed error ([`StoreError::AlreadyExists`]) rather than a
//! string: the no-overwrite rule of WAL archiving is built on it.
//!
//! This crate knows nothing of WAL, configuration or any cloud SDK. Keys are relative to
//! the store's root (the bucket, the container or the directory) and always use `/`.
//!
//! Dependencies: `sha2` and `hex` (the default streamed put checks the SHA-256 its
//! caller declared), `async-trait` (object-safe async trait, so the binary can hold a
//! `Box<dyn Store>` chosen at run time), `bytes` (cheap shared object bodies), `tokio`
//! (the local store's blocking file work runs on its blocking pool), `thiserror`;
//! `rustls-pki-types`, `rustls-webpki` and `base64` parse a private CA bundle in full
//! before any HTTP client sees it ([`CaBundle`]): some SDKs panic on what they cannot
//! decode. `reqwest`, with the feature `http` only: the one client builder (bounded
//! connect, `endpointCA` trusted) of the stores that run on reqwest (Azure, GCS).
//! `httpdate` reads an error answer's `Date` header, the server's clock, so that a
//! refusal from a server whose clock is far from this machine's is named as clock
//! skew ([`status::clock_offset`]) without reading the answer's text.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod deadline;
pub mod durable;
mod error;
#[cfg(any(test, feature = "http"))]
pub mod http;
mod local;
mod metadata;
pub mod retry;
pub mod status;
mod tls;
mod unconfigured;
mod upload;

pub use error::{BoxError, ErrorKind, StoreError, error_chain};
pub use local::LocalStore;
pub use metadata::{Metadata, metadata_from};
pub use retry::RetryPolicy;
pub use tls::CaBundle;
pub use unconfigured::Unconfigured;
pub use upload::{UploadSource, upload_nonce};

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

/// What a create-only put carries besides the body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Stored with the object; walship puts the raw segment's SHA-256 here.
    pub metadata: Metadata,
    /// Object tags (S3 tags, Azure blob index tags); stores without tags ignore them.
    pub tags: BTreeMap<String, String>,
    /// The SHA-256 (lower-case hex) of exactly the bytes to store, when the caller
    /// already has it. A store whose server can check it sends it (S3: the signed
    /// payload hash), so a body that differs is refused rather than stored; others
    /// ignore it.
    pub content_sha256: Option<String>,
}

/// An object as seen by `head` or `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// User metadata. `list` may leave it empty on stores that do not return it there.
    pub metadata: Metadata,
}

/// An object store rooted at a bucket, a container or a directory.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// A short description for logs and errors, such as `s3://bucket` (never credentials).
    fn describe(&self) -> String;

    /// Stores `body` under `key` only if no object has that key yet. When one exists the
    /// call fails with [`StoreError::AlreadyExists`] and the existing object is untouched.
    /// Returns only once the store has durably accepted the object.
    async fn put_create(
        &self,
        key: &str,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<(), StoreError>;

    /// [`Store::put_create`] with the body read from the file at `path`, which must be
    /// `len` bytes long and not change meanwhile. When `options.content_sha256` is set,
    /// a body that does not match it is refused and nothing is stored. Stores that can
    /// stream a file override this so an upload does not hold the whole file in memory;
    /// the default reads it and checks the hash itself.
    async fn put_create_file(
        &self,
        key: &str,
        path: &Path,
        len: u64,
        options: &PutOptions,
    ) -> Result<(), StoreError> {
        let body = tokio::fs::read(path)
            .await
            .map_err(|e| StoreError::source_file(self.describe(), path, &e.to_string()))?;
        if body.len() as u64 != len {
            return Err(StoreError::source_file(
                self.describe(),
                path,
                &format!("expected {len} bytes, read {}", body.len()),
            ));
        }
        if let Some(expected) = &options.content_sha256 {
            use sha2::Digest;
            let actual = hex::encode(sha2::Sha256::digest(&body));
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(StoreError::source_file(
                    self.describe(),
                    path,
                    &format!(
                        "its SHA-256 is {actual}, not the {expected} it had when it was read; \
                         the file changed"
                    ),
                ));
            }
        }
        self.put_create(key, Bytes::from(body), options).await
    }

    /// The whole object, or [`StoreError::NotFound`].
    async fn get(&self, key: &str) -> Result<(Bytes, ObjectInfo), StoreError>;

    /// The object's size and metadata, or `None` when there is no such object.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError>;

    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;

    /// Removes the object; removing a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Stores `body` under `key` whether or not an object has that key, replacing it
    /// whole. Only for the catalog files barman-cloud itself rewrites in place (a
    /// backup's `backup.info` going from STARTED to DONE or FAILED, keep annotations);
    /// WAL and backup data are only ever written with the create-only calls.
    async fn put_replace(
        &self,
        key: &str,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<(), StoreError>;

    /// The bytes `range` of the object (a range running past its end is cut at the
    /// end), or [`StoreError::NotFound`]. Restores read large objects through this, a
    /// few ranges at a time, so no object is ever held whole.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError>;

    /// Begins a create-only upload of `key` in parts, for objects too large to hold
    /// (a base backup's tar). Nothing is visible under `key` until
    /// [`MultipartUpload::complete`], which fails with [`StoreError::AlreadyExists`]
    /// when an object took the key meanwhile, leaving that object untouched.
    /// `options.content_sha256` is ignored (the whole object's hash is known only at the
    /// end); `options.metadata` and `options.tags` go onto the object.
    async fn start_multipart(
        &self,
        key: &str,
        options: &PutOptions,
    ) -> Result<Arc<dyn MultipartUpload>, StoreError>;
}

/// The smallest part a [`MultipartUpload`] takes, the last part excepted (S3's floor).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// The most parts one [`MultipartUpload`] takes (S3's ceiling; Azure allows 50,000
/// blocks).
pub const MAX_PARTS: usize = 10_000;

/// A create-only upload in parts, begun by [`Store::start_multipart`]. Parts may be
/// sent concurrently and in any order; each call is retried inside, as every store
/// request is. Dropping an upload without [`complete`](MultipartUpload::complete) or
/// [`abort`](MultipartUpload::abort) leaves its parts to the store's own cleanup (S3
/// lifecycle rules, Azure's seven-day expiry of uncommitted blocks).
#[async_trait]
pub trait MultipartUpload: Send + Sync + fmt::Debug {
    /// Stores part `index` (from 0). Every part but the last is at least
    /// [`MIN_PART_SIZE`] bytes long, and `index` is below [`MAX_PARTS`]. Sending the
    /// same index again replaces that part.
    async fn put_part(&self, index: usize, body: Bytes) -> Result<(), StoreError>;

    /// Joins parts `0..parts`, each of which was stored, into the object, only if no
    /// object has the key; returns once the object is durably stored. A complete whose
    /// first attempt succeeded unseen and whose retry then finds the object reports
    /// success only when the object found is this upload's.
    async fn complete(&self, parts: usize) -> Result<(), StoreError>;

    /// Discards the parts stored so far; the object is not created. Idempotent.
    async fn abort(&self) -> Result<(), StoreError>;
}

/// The metadata key under which a multipart upload records its nonce on the object,
/// so that a retried complete can tell its own object from another writer's.
pub const UPLOAD_ID_METADATA: &str = "walship-upload";
