//! The [`Store`] for Azure Blob Storage (and the Azurite emulator), on the 0.21 Azure SDK
//! for Rust (`azure_storage_blobs`).
//!
//! What it adds to the SDK is the part that is easy to get wrong for WAL:
//! - create-only puts with `If-None-Match: *`; `409 BlobAlreadyExists` and
//!   `412 Precondition Failed` become [`StoreError::AlreadyExists`], so an existing blob
//!   is never overwritten. Bodies above [`BLOCK_UPLOAD_THRESHOLD`] are uploaded as blocks
//!   in parallel and committed with one `Put Block List` that carries the same condition;
//!   every upload uses its own block ids, so two writers racing on one key can never mix
//!   their blocks;
//! - create-only uploads in parts (base backups): each part is a block staged with an id
//!   of the upload's nonce and the part's index (every block id of a blob must have the
//!   same length, and these always do), and complete is a `Put Block List` with the same
//!   `If-None-Match: *`. The upload's nonce goes into the blob's metadata
//!   ([`walship_store::UPLOAD_ID_METADATA`]), so a complete that finds the key taken can
//!   tell its own earlier, unanswered commit from another writer's blob. Abort sends
//!   nothing: Azure cannot delete uncommitted blocks, which stay invisible and expire
//!   after a week;
//! - replacing puts (a `Put Blob` without condition) for the catalog files barman-cloud
//!   rewrites, and ranged reads (one ranged `Get Blob`);
//! - every way barman-cloud authenticates: a connection string (its `BlobEndpoint` is
//!   honoured, which is how Azurite is addressed), an account key, a SAS token, AKS
//!   workload identity (the federated token file is re-read whenever a new Azure AD token
//!   is needed, because the kubelet rotates it) and the SDK's default credential chain;
//! - user metadata as blob metadata, tags as blob index tags (`x-ms-tags`), and an
//!   optional encryption scope;
//! - SDK errors are mapped onto the store's error kinds through the status mapping all
//!   stores share; each request is retried by the store's `RetryPolicy`, the SDK's own
//!   retries being off.
//!
//! The crate's modules: `config` (configuration → endpoint, account, credentials, the
//! HTTP client), `identity` (AKS workload identity), `blocks` (block ids, metadata and
//! tags in Azure's forms), `errors` (classification and the secret scrubber); the store
//! itself is here.
//!
//! Azure metadata names must be C# identifiers, so the `-` of walship's lower-case keys
//! (`walship-sha256`) is stored as `_` and turned back into `-` when read; a key that
//! already contains `_`, or any character outside `[a-z0-9-]`, is refused.
//!
//! This crate must never log, display or return a secret: account keys, SAS tokens and
//! connection strings stay walship-secret `Secret`s (redacted in `Debug`) until the SDK's
//! credentials are built from them, are never put in [`AzureConfigError`] messages,
//! and scrubbed from every error text that comes back from the SDK or the HTTP client
//! (whose messages may contain the request URL and thus a SAS signature). It knows
//! nothing of WAL, of configuration files or of the daemon.
//!
//! Dependencies: `azure_storage_blobs` (the blob operations), `azure_storage` (storage
//! credentials, connection-string parsing, cloud locations), `azure_core` (the HTTP
//! pipeline, retry options, the error type, base64), `azure_identity` (the Azure AD
//! token flows: federated credentials for workload identity, the default chain),
//! `reqwest` (the SDK's own HTTP client, built here only to trust a private CA from
//! `endpointCA`, for both the blob service and the token endpoint), `futures` (the SDK's pageable streams,
//! parallel block uploads, an async mutex around the token cache), `tokio` (a deadline on every operation: the SDK's HTTP client has
//! none), `walship-credentials` (the credential source it signs with, one type from the
//! secrets to the SDK), `walship-secret` (the endpoint shown without user info or query),
//! `walship-store`, `async-trait`, `bytes`, `thiserror`, `tracing`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::num::NonZeroU32;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use azure_core::auth::{AccessToken, TokenCredential};
use azure_core::error::ErrorKind;
use azure_core::request_options::{IfMatchCondition, Metadata as AzureMetadata};
use azure_core::{RetryOptions, Url};
use azure_identity::{DefaultAzureCredential, TokenCredentialOptions};
use azure_storage::{CloudLocation, ConnectionString, StorageCredentials};
use azure_storage_blobs::blob::{BlobBlockType, BlockList};
use azure_storage_blobs::prelude::{BlobClient, ClientBuilder, ContainerClient, Tags};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use walship_credentials::AzureCredentialSource;
use walship_store::status::{self, Request};
use walship_store::{
    CaBundle, Metadata, MultipartUpload, ObjectInfo, PutOptions, RetryPolicy, Store, StoreError,
    UPLOAD_ID_METADATA, UploadSource, deadline, error_chain,
};

mod blocks;
mod config;
mod errors;
mod identity;

use blocks::*;
use config::*;
use errors::*;
use identity::*;

/// Bodies larger than this are uploaded as blocks in parallel; smaller ones in one
/// `Put Blob`.
pub const BLOCK_UPLOAD_THRESHOLD: usize = 8 * 1024 * 1024;
/// The size of each block of a block upload (the last one may be shorter).
pub const BLOCK_SIZE: usize = 4 * 1024 * 1024;
/// How many blocks of one upload are in flight at once.
const BLOCK_CONCURRENCY: usize = 4;
/// Downloads are read in chunks of this size: a default 16 MiB WAL segment in one request.
const DOWNLOAD_CHUNK: u64 = 16 * 1024 * 1024;
/// Azure AD tokens are refreshed this long before they expire.
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Where the container is and how to reach it. Its derived `Debug` never shows a secret:
/// the credentials stay `Secret`s until the SDK's credentials are built from them.
#[derive(Debug, Clone)]
pub struct AzureStoreConfig {
    /// The blob service URL: `https://ACCOUNT.blob.core.windows.net`, or for the emulator
    /// and other path-style endpoints `http://HOST:PORT/ACCOUNT`. May be empty when a
    /// connection string supplies the endpoint.
    pub endpoint: String,
    /// The storage account. May be empty when the credentials name it (shared key, SAS,
    /// connection string).
    pub account: String,
    pub container: String,
    /// How the store authenticates: a connection string (its `BlobEndpoint`, Azurite's
    /// or a private endpoint's, then overrides [`AzureStoreConfig::endpoint`]), a shared
    /// key, a SAS token (with or without its leading `?`), AKS workload identity (from
    /// `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE` and optionally
    /// `AZURE_AUTHORITY_HOST`, as the webhook injects them), or the default chain
    /// (workload identity when its variables are set, else the SDK's chain).
    pub auth: AzureCredentialSource,
    /// An encryption scope applied to every blob written.
    pub encryption_scope: Option<String>,
    /// Certificates (`endpointCA`) to trust in addition to the public roots, for an
    /// endpoint behind a private CA. They are trusted by the token endpoint's client too.
    pub ca_bundle: Option<CaBundle>,
    /// How each request is retried; the SDK's own retries are off.
    pub retry: RetryPolicy,
}

/// Why the store could not be built. Messages name the setting, never its value.
#[derive(Debug, thiserror::Error)]
pub enum AzureConfigError {
    #[error("spec.configuration.azureCredentials.connectionString: {0}")]
    ConnectionString(String),
    #[error("spec.configuration.azureCredentials.storageKey: {0}")]
    StorageKey(String),
    #[error("spec.configuration.azureCredentials.storageSasToken: {0}")]
    SasToken(String),
    #[error("spec.configuration.azureCredentials.storageAccount: {0}")]
    Account(String),
    #[error("spec.configuration.destinationPath: {0}")]
    Endpoint(String),
    #[error("spec.configuration.destinationPath: {0}")]
    Container(String),
    #[error("spec.configuration.azureCredentials.inheritFromAzureAD: {0}")]
    WorkloadIdentity(String),
    #[error("spec.configuration.azureCredentials.useDefaultAzureCredentials: {0}")]
    DefaultCredential(String),
    #[error("spec.configuration.endpointCA: {0}")]
    EndpointCa(String),
}

/// A container in an Azure storage account (or in Azurite). Cloning it is cheap (the
/// SDK's pipeline is shared): each multipart upload holds a clone.
#[derive(Clone)]
pub struct AzureStore {
    container: ContainerClient,
    encryption_scope: Option<String>,
    describe: String,
    scrubber: Scrubber,
    list_page_size: Option<NonZeroU32>,
    retry: RetryPolicy,
}

impl fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureStore")
            .field("store", &self.describe)
            .finish_non_exhaustive()
    }
}

/// What the configuration resolves to before a client is built.
struct Resolved {
    endpoint: Url,
    account: String,
    credentials: StorageCredentials,
    secrets: Vec<String>,
}

impl AzureStore {
    /// Builds the client. Performs no request: a wrong key or a missing container shows up
    /// on the first operation, as [`StoreError::Denied`] or
    /// [`StoreError::ContainerMissing`].
    pub fn new(config: AzureStoreConfig) -> Result<AzureStore, AzureConfigError> {
        check_container_name(&config.container)?;
        let http = http_client(config.ca_bundle.as_ref())?;
        let resolved = resolve(&config, &http)?;
        let location = CloudLocation::Custom {
            account: resolved.account.clone(),
            uri: resolved.endpoint.as_str().trim_end_matches('/').to_owned(),
        };
        // walship_store's policy retries each request; an SDK retry inside it would
        // multiply the attempts and stretch the deadlines.
        let container = ClientBuilder::with_location(location, resolved.credentials)
            .retry(RetryOptions::none())
            .transport(azure_core::TransportOptions::new(Arc::new(
                config::KeepsAnswerHeaders(http),
            )))
            .container_client(config.container.clone());
        let describe = describe(&resolved.account, &config.container, &resolved.endpoint);
        Ok(AzureStore {
            container,
            encryption_scope: config.encryption_scope.filter(|s| !s.is_empty()),
            describe,
            scrubber: Scrubber::new(resolved.secrets),
            list_page_size: None,
            retry: config.retry,
        })
    }

    /// Lists in pages of at most `size` blobs instead of the service's default (5000).
    /// Meant for tests that need several pages without thousands of blobs.
    pub fn with_list_page_size(mut self, size: u32) -> Self {
        self.list_page_size = NonZeroU32::new(size);
        self
    }

    /// A request context that adds `x-ms-encryption-scope` when one is configured.
    fn scope_context(&self) -> azure_core::Context {
        let mut context = azure_core::Context::new();
        if let Some(scope) = &self.encryption_scope {
            let mut headers = azure_core::headers::Headers::new();
            headers.insert("x-ms-encryption-scope", scope.clone());
            context.insert(azure_core::CustomHeaders::from(headers));
        }
        context
    }

    fn blob(&self, key: &str) -> BlobClient {
        self.container.blob_client(key)
    }

    fn map_err(&self, key: &str, request: Request, err: &azure_core::Error) -> StoreError {
        classify(&self.describe, key, request, err, &self.scrubber)
    }

    /// Sends the request `make` builds, each attempt under the deadline of a request
    /// that moves about `len` bytes (the SDK's HTTP client sets no timeout at all, so
    /// without it a store that accepts the connection and never answers would hang
    /// `archive_command`), retried by the store's policy.
    async fn bounded<T, F, Fut>(
        &self,
        key: &str,
        what: &str,
        request: Request,
        len: u64,
        make: F,
    ) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = azure_core::Result<T>>,
    {
        let after = deadline::for_body(len);
        self.retry
            .run(key, after, || async {
                match tokio::time::timeout(after, make()).await {
                    Ok(Ok(value)) => Ok(value),
                    Ok(Err(err)) => Err(self.map_err(key, request, &err)),
                    Err(_) => Err(StoreError::timed_out(
                        &self.describe,
                        format!("{what} {key}"),
                        after,
                    )),
                }
            })
            .await
    }

    async fn put_single(
        &self,
        key: &str,
        body: Bytes,
        metadata: Option<AzureMetadata>,
        tags: Option<Tags>,
        mode: PutMode,
    ) -> Result<(), StoreError> {
        let body_len = body.len();
        let mut request = self.blob(key).put_block_blob(body);
        if mode == PutMode::Create {
            request = request.if_match(IfMatchCondition::NotMatch("*".to_owned()));
        }
        if let Some(metadata) = metadata {
            request = request.metadata(metadata);
        }
        if let Some(tags) = tags {
            request = request.tags(tags);
        }
        if let Some(scope) = &self.encryption_scope {
            request = request.encryption_scope(scope.clone());
        }
        let len = body_len as u64;
        self.bounded(key, "Put Blob", Request::Create, len, || {
            request.clone().into_future()
        })
        .await
        .map(drop)
    }

    /// Uploads `source` as blocks, [`BLOCK_CONCURRENCY`] at a time, and commits them.
    /// Blocks are read from the source in order, one ahead of those in flight, so an
    /// upload holds a few blocks in memory whatever the size of the body; a source that
    /// fails (a file that changed after it was hashed) fails before its last block is
    /// read, and the blocks sent are never committed.
    async fn put_blocks(
        &self,
        key: &str,
        source: UploadSource,
        metadata: Option<AzureMetadata>,
        tags: Option<Tags>,
        mode: PutMode,
    ) -> Result<(), StoreError> {
        let blob = self.blob(key);
        let nonce = upload_nonce();
        let count = source.len().div_ceil(BLOCK_SIZE as u64) as usize;
        let ids: Vec<Bytes> = (0..count).map(|index| block_id(&nonce, index)).collect();
        // The 0.21 SDK has no encryption-scope setter on Put Block and Put Block List, so
        // the header rides in the request context; the pipeline adds it before signing.
        let context = self.scope_context();
        let chunks =
            futures::stream::try_unfold((source, 0usize), |(mut source, index)| async move {
                Ok(source
                    .next_chunk(BLOCK_SIZE)
                    .await?
                    .map(|chunk| ((index, chunk), (source, index + 1))))
            });
        chunks
            .map_ok(|(index, chunk)| {
                let len = chunk.len() as u64;
                let request = blob
                    .put_block(ids[index].clone(), chunk)
                    .context(context.clone());
                async move {
                    self.bounded(key, "Put Block", Request::Create, len, || {
                        request.clone().into_future()
                    })
                    .await
                    .map(drop)
                }
            })
            .try_buffer_unordered(BLOCK_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        self.commit_blocks(key, ids, metadata, tags, mode, None)
            .await
    }

    /// Commits the uncommitted blocks `ids`, in that order, as the blob `key`: with
    /// [`PutMode::Create`] only if no blob has the key. `upload` is the nonce a
    /// multipart upload records under [`UPLOAD_ID_METADATA`]: a blob found under the
    /// key with that nonce is this very commit, which succeeded on an attempt whose
    /// answer was lost, and not another writer's.
    async fn commit_blocks(
        &self,
        key: &str,
        ids: Vec<Bytes>,
        metadata: Option<AzureMetadata>,
        tags: Option<Tags>,
        mode: PutMode,
        upload: Option<&str>,
    ) -> Result<(), StoreError> {
        let list = BlockList {
            blocks: ids
                .into_iter()
                .map(BlobBlockType::new_uncommitted)
                .collect(),
        };
        let mut request = self
            .blob(key)
            .put_block_list(list)
            .context(self.scope_context());
        if mode == PutMode::Create {
            request = request.if_match(IfMatchCondition::NotMatch("*".to_owned()));
        }
        if let Some(metadata) = metadata {
            request = request.metadata(metadata);
        }
        if let Some(tags) = tags {
            request = request.tags(tags);
        }
        // When another writer committed the blob while our blocks were in flight, the
        // service discarded our uncommitted blocks and may answer InvalidBlockList
        // before it evaluates the condition: the blob exists, which is what counts.
        let commit = || async {
            match request.clone().into_future().await {
                Ok(_) => Ok(Ok(())),
                Err(err)
                    if mode == PutMode::Create
                        && http_status(&err)
                            .is_some_and(|(_, code)| code == "InvalidBlockList") =>
                {
                    Ok(Err(err))
                }
                Err(err) => Err(err),
            }
        };
        let refused = match self
            .bounded(key, "Put Block List", Request::Create, 0, commit)
            .await
        {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(invalid)) => self.map_err(key, Request::Create, &invalid),
            // Whose blob took the key matters only to a multipart upload.
            Err(err)
                if upload.is_some() && err.kind() == walship_store::ErrorKind::AlreadyExists =>
            {
                err
            }
            Err(err) => return Err(err),
        };
        match self.head(key).await? {
            Some(info) if upload.is_some_and(|nonce| is_upload(&info, nonce)) => Ok(()),
            Some(_) => Err(StoreError::already_exists(&self.describe, key)),
            // Refused, yet no blob: an invalid list of our own, or a blob deleted since.
            None => Err(refused),
        }
    }

    /// walship's metadata in Azure's form, or why it cannot be stored.
    fn azure_metadata(
        &self,
        key: &str,
        metadata: &Metadata,
    ) -> Result<Option<AzureMetadata>, StoreError> {
        encode_metadata(metadata).map_err(|detail| {
            StoreError::new(
                walship_store::ErrorKind::Rejected,
                &self.describe,
                format!("{key}: {detail}"),
            )
        })
    }
}

/// Whether `info` is the blob the multipart upload with `nonce` committed.
fn is_upload(info: &ObjectInfo, nonce: &str) -> bool {
    info.metadata
        .get(UPLOAD_ID_METADATA)
        .is_some_and(|v| v == nonce)
}

/// Whether a put may replace an object. WAL and backup data are only ever created; the
/// catalog files barman-cloud rewrites in place (`backup.info`) are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PutMode {
    /// `If-None-Match: *`: an existing blob is never overwritten.
    Create,
    /// No condition: the blob, its metadata and its tags are replaced whole.
    Replace,
}

#[async_trait]
impl Store for AzureStore {
    /// One Put Blob without condition (or blocks committed without one), which replaces
    /// the blob's bytes and its metadata whole.
    async fn put_replace(
        &self,
        key: &str,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<(), StoreError> {
        self.put_source(
            key,
            UploadSource::from_bytes(body),
            options,
            PutMode::Replace,
        )
        .await
    }

    /// One ranged Get Blob.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        if range.is_empty() {
            // No byte to ask for; the blob must still exist.
            return match self.head(key).await? {
                Some(_) => Ok(Bytes::new()),
                None => Err(StoreError::not_found(&self.describe, key)),
            };
        }
        let len = range.end - range.start;
        // One chunk as long as the range, so the SDK's stream sends one request.
        let request = self.blob(key).get().range(range).chunk_size(len);
        self.bounded(key, "Get Blob", Request::Read, len, || async {
            match request.clone().into_stream().next().await {
                Some(Ok(response)) => response.data.collect().await,
                // The range starts at or past the end of the blob.
                Some(Err(err)) if is_invalid_range(&err) => Ok(Bytes::new()),
                Some(Err(err)) => Err(err),
                None => Ok(Bytes::new()),
            }
        })
        .await
    }

    /// Parts are blocks of the blob, staged uncommitted (invisible) until `complete`
    /// commits them with `Put Block List`.
    async fn start_multipart(
        &self,
        key: &str,
        options: &PutOptions,
    ) -> Result<Arc<dyn MultipartUpload>, StoreError> {
        let nonce = upload_nonce();
        let mut metadata = options.metadata.clone();
        metadata.insert(UPLOAD_ID_METADATA.to_owned(), nonce.clone());
        Ok(Arc::new(AzureUpload {
            metadata: self.azure_metadata(key, &metadata)?,
            tags: encode_tags(&options.tags),
            store: self.clone(),
            key: key.to_owned(),
            nonce,
        }))
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn put_create(
        &self,
        key: &str,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<(), StoreError> {
        self.put_source(
            key,
            UploadSource::from_bytes(body),
            options,
            PutMode::Create,
        )
        .await
    }

    /// Streams the file: bodies up to [`BLOCK_UPLOAD_THRESHOLD`] are read whole (and
    /// checked against the declared SHA-256) before one Put Blob; larger ones go as
    /// blocks read from disk as they are sent.
    async fn put_create_file(
        &self,
        key: &str,
        path: &Path,
        len: u64,
        options: &PutOptions,
    ) -> Result<(), StoreError> {
        let source =
            UploadSource::open(&self.describe, path, len, options.content_sha256.as_deref())
                .await?;
        self.put_source(key, source, options, PutMode::Create).await
    }

    async fn get(&self, key: &str) -> Result<(Bytes, ObjectInfo), StoreError> {
        // A download is a series of ranged requests; a failed one starts it over.
        self.retry
            .run(key, deadline::for_body(DOWNLOAD_CHUNK), || {
                self.get_once(key)
            })
            .await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let request = self.blob(key).get_properties();
        match self
            .bounded(key, "Get Blob Properties", Request::Read, 0, || {
                request.clone().into_future()
            })
            .await
        {
            Ok(response) => Ok(Some(ObjectInfo {
                key: key.to_owned(),
                size: response.blob.properties.content_length,
                metadata: decode_metadata(response.blob.metadata.as_ref()),
            })),
            Err(e) if e.kind() == walship_store::ErrorKind::NotFound => Ok(None),
            Err(other) => Err(other),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        // A listing is a series of paged requests; a failed one starts it over.
        self.retry
            .run(prefix, deadline::for_small_request(), || {
                self.list_once(prefix)
            })
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let request = self.blob(key).delete();
        match self
            .bounded(key, "Delete Blob", Request::Read, 0, || {
                request.clone().into_future()
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == walship_store::ErrorKind::NotFound => Ok(()),
            Err(other) => Err(other),
        }
    }
}

impl AzureStore {
    async fn put_source(
        &self,
        key: &str,
        mut source: UploadSource,
        options: &PutOptions,
        mode: PutMode,
    ) -> Result<(), StoreError> {
        let metadata = self.azure_metadata(key, &options.metadata)?;
        let tags = encode_tags(&options.tags);
        if source.len() > BLOCK_UPLOAD_THRESHOLD as u64 {
            self.put_blocks(key, source, metadata, tags, mode).await
        } else {
            let body = source
                .next_chunk(BLOCK_UPLOAD_THRESHOLD)
                .await?
                .unwrap_or_default();
            let single = self
                .put_single(key, body.clone(), metadata.clone(), tags.clone(), mode)
                .await;
            match single {
                // Azurite (3.35) refuses a create-only Put Blob over a blob that has only
                // uncommitted blocks (a multipart upload of the key in flight) as if it
                // existed, though nothing is found or listed under the key. Put Block List
                // evaluates `If-None-Match: *` against the committed blob only, so the
                // body goes that way, under the same condition.
                Err(err)
                    if err.kind() == walship_store::ErrorKind::AlreadyExists
                        && self.head(key).await?.is_none() =>
                {
                    let source = UploadSource::from_bytes(body);
                    self.put_blocks(key, source, metadata, tags, mode).await
                }
                other => other,
            }
        }
    }

    /// One download, each ranged request under its own deadline.
    async fn get_once(&self, key: &str) -> Result<(Bytes, ObjectInfo), StoreError> {
        let mut stream = self
            .blob(key)
            .get()
            .chunk_size(DOWNLOAD_CHUNK)
            .into_stream();
        let mut body = Vec::new();
        let mut metadata = None;
        loop {
            // Each ranged request of the download: its headers, then its chunk below.
            let after = deadline::for_small_request();
            let next = match tokio::time::timeout(after, stream.next()).await {
                Ok(next) => next,
                Err(_) => {
                    return Err(StoreError::timed_out(
                        &self.describe,
                        format!("Get Blob {key}"),
                        after,
                    ));
                }
            };
            let Some(response) = next else { break };
            let response = match response {
                Ok(response) => response,
                // An empty blob has no byte 0 to start a ranged read at.
                Err(err) if is_invalid_range(&err) && body.is_empty() => {
                    return match self.head(key).await? {
                        Some(info) if info.size == 0 => Ok((Bytes::new(), info)),
                        Some(_) => Err(self.map_err(key, Request::Read, &err)),
                        None => Err(StoreError::not_found(&self.describe, key)),
                    };
                }
                Err(err) => return Err(self.map_err(key, Request::Read, &err)),
            };
            if metadata.is_none() {
                metadata = Some(decode_metadata(response.blob.metadata.as_ref()));
            }
            let chunk_deadline = deadline::for_body(DOWNLOAD_CHUNK);
            let chunk = tokio::time::timeout(chunk_deadline, response.data.collect())
                .await
                .map_err(|_| {
                    StoreError::timed_out(
                        &self.describe,
                        format!("{key} (reading the blob's body)"),
                        chunk_deadline,
                    )
                })?
                .map_err(|err| {
                    StoreError::new(
                        walship_store::ErrorKind::Response,
                        &self.describe,
                        format!(
                            "{key}: reading the blob failed: {}",
                            self.scrubber.scrub(&error_chain(&err))
                        ),
                    )
                })?;
            body.extend_from_slice(&chunk);
        }
        let info = ObjectInfo {
            key: key.to_owned(),
            size: body.len() as u64,
            metadata: metadata.unwrap_or_default(),
        };
        Ok((Bytes::from(body), info))
    }

    /// One listing, each page under its own deadline.
    async fn list_once(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut request = self.container.list_blobs().include_metadata(true);
        if !prefix.is_empty() {
            request = request.prefix(prefix.to_owned());
        }
        if let Some(size) = self.list_page_size {
            request = request.max_results(size);
        }
        let mut pages = request.into_stream();
        let mut out = Vec::new();
        loop {
            let after = deadline::for_small_request();
            let page = match tokio::time::timeout(after, pages.next()).await {
                Ok(Some(page)) => page.map_err(|err| self.map_err(prefix, Request::List, &err))?,
                Ok(None) => break,
                Err(_) => {
                    return Err(StoreError::timed_out(
                        &self.describe,
                        format!("List Blobs {prefix}"),
                        after,
                    ));
                }
            };
            for blob in page.blobs.blobs() {
                out.push(ObjectInfo {
                    key: blob.name.clone(),
                    size: blob.properties.content_length,
                    metadata: decode_metadata(blob.metadata.as_ref()),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// A multipart upload: part `i` is the block `block_id(nonce, i)` of the blob, and
/// `complete` commits blocks `0..parts` with the upload's metadata (its nonce among it)
/// and tags.
struct AzureUpload {
    store: AzureStore,
    key: String,
    nonce: String,
    metadata: Option<AzureMetadata>,
    tags: Option<Tags>,
}

impl fmt::Debug for AzureUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureUpload")
            .field("store", &self.store.describe)
            .field("key", &self.key)
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl MultipartUpload for AzureUpload {
    async fn put_part(&self, index: usize, body: Bytes) -> Result<(), StoreError> {
        let len = body.len() as u64;
        let request = self
            .store
            .blob(&self.key)
            .put_block(block_id(&self.nonce, index), body)
            .context(self.store.scope_context());
        self.store
            .bounded(&self.key, "Put Block", Request::Create, len, || {
                request.clone().into_future()
            })
            .await
            .map(drop)
    }

    async fn complete(&self, parts: usize) -> Result<(), StoreError> {
        let ids = (0..parts)
            .map(|index| block_id(&self.nonce, index))
            .collect();
        self.store
            .commit_blocks(
                &self.key,
                ids,
                self.metadata.clone(),
                self.tags.clone(),
                PutMode::Create,
                Some(&self.nonce),
            )
            .await
    }

    /// Nothing to send: Azure has no call that discards uncommitted blocks. They are
    /// invisible (a blob that has only uncommitted blocks is neither listed nor found)
    /// and the service drops them when no block of the blob was put or committed for a
    /// week.
    async fn abort(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
