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
//! - every way barman-cloud authenticates: a connection string (its `BlobEndpoint` is
//!   honoured, which is how Azurite is addressed), an account key, a SAS token, AKS
//!   workload identity (the federated token file is re-read whenever a new Azure AD token
//!   is needed, because the kubelet rotates it) and the SDK's default credential chain;
//! - user metadata as blob metadata, tags as blob index tags (`x-ms-tags`), and an
//!   optional encryption scope;
//! - SDK errors are mapped onto the store's small error enum, with transient ones (5xx,
//!   throttling, timeouts, connection failures) marked as such.
//!
//! Azure metadata names must be C# identifiers, so the `-` of walship's lower-case keys
//! (`walship-sha256`) is stored as `_` and turned back into `-` when read; a key that
//! already contains `_`, or any character outside `[a-z0-9-]`, is refused.
//!
//! This crate must never log, display or return a secret: account keys, SAS tokens and
//! connection strings are redacted in `Debug`, never put in [`AzureConfigError`] messages,
//! and scrubbed from every error text that comes back from the SDK or the HTTP client
//! (whose messages may contain the request URL and thus a SAS signature). It knows
//! nothing of WAL, of configuration files or of the daemon.
//!
//! Dependencies: `azure_storage_blobs` (the blob operations), `azure_storage` (storage
//! credentials, connection-string parsing, cloud locations), `azure_core` (the HTTP
//! pipeline, retry options, the error type, base64), `azure_identity` (the Azure AD
//! token flows: federated credentials for workload identity, the default chain),
//! `reqwest` (the SDK's own HTTP client, built here only to trust a private CA from
//! `endpointCA`, for both the blob service and the token endpoint), `futures` (the SDK's pageable streams, parallel block uploads, an async mutex around
//! the token cache), `tokio` (a deadline on every operation: the SDK's HTTP client has
//! none), `walship-store`, `async-trait`, `bytes`, `thiserror`, `tracing`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
use walship_store::status::{self, Request};
use walship_store::{
    CaBundle, Metadata, ObjectInfo, PutOptions, RetryPolicy, Store, StoreError, UploadSource,
    deadline, error_chain,
};

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

/// How the store authenticates. `Debug` never shows a secret.
#[derive(Clone, PartialEq, Eq)]
pub enum AzureAuth {
    /// `connectionString`: `AccountName`/`AccountKey`, or `SharedAccessSignature`, and
    /// optionally a `BlobEndpoint` (Azurite, private endpoints) that then overrides
    /// [`AzureStoreConfig::endpoint`].
    ConnectionString(String),
    /// `storageAccount` + `storageKey`: Shared Key signing.
    SharedKey { account: String, key: String },
    /// `storageAccount` + `storageSasToken` (with or without the leading `?`).
    Sas { account: String, token: String },
    /// `inheritFromAzureAD`: AKS workload identity, from `AZURE_CLIENT_ID`,
    /// `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE` and optionally
    /// `AZURE_AUTHORITY_HOST`, as the workload identity webhook injects them.
    WorkloadIdentity,
    /// `useDefaultAzureCredentials`: workload identity when its variables are set,
    /// otherwise the SDK's default chain (environment, managed identity, Azure CLI).
    DefaultCredential,
}

impl fmt::Debug for AzureAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const REDACTED: &str = "<redacted>";
        match self {
            AzureAuth::ConnectionString(_) => {
                f.debug_tuple("ConnectionString").field(&REDACTED).finish()
            }
            AzureAuth::SharedKey { account, .. } => f
                .debug_struct("SharedKey")
                .field("account", account)
                .field("key", &REDACTED)
                .finish(),
            AzureAuth::Sas { account, .. } => f
                .debug_struct("Sas")
                .field("account", account)
                .field("token", &REDACTED)
                .finish(),
            AzureAuth::WorkloadIdentity => f.write_str("WorkloadIdentity"),
            AzureAuth::DefaultCredential => f.write_str("DefaultCredential"),
        }
    }
}

/// Where the container is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureStoreConfig {
    /// The blob service URL: `https://ACCOUNT.blob.core.windows.net`, or for the emulator
    /// and other path-style endpoints `http://HOST:PORT/ACCOUNT`. May be empty when a
    /// connection string supplies the endpoint.
    pub endpoint: String,
    /// The storage account. May be empty when the credentials name it (shared key, SAS,
    /// connection string).
    pub account: String,
    pub container: String,
    pub auth: AzureAuth,
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

/// A container in an Azure storage account (or in Azurite).
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
            .transport(azure_core::TransportOptions::new(http))
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
    ) -> Result<(), StoreError> {
        let body_len = body.len();
        let mut request = self
            .blob(key)
            .put_block_blob(body)
            .if_match(IfMatchCondition::NotMatch("*".to_owned()));
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
        let list = BlockList {
            blocks: ids
                .into_iter()
                .map(BlobBlockType::new_uncommitted)
                .collect(),
        };
        let mut request = blob
            .put_block_list(list)
            .if_match(IfMatchCondition::NotMatch("*".to_owned()))
            .context(context);
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
                    if http_status(&err).is_some_and(|(_, code)| code == "InvalidBlockList") =>
                {
                    Ok(Err(err))
                }
                Err(err) => Err(err),
            }
        };
        match self
            .bounded(key, "Put Block List", Request::Create, 0, commit)
            .await?
        {
            Ok(()) => Ok(()),
            Err(_) if self.head(key).await?.is_some() => {
                Err(StoreError::already_exists(&self.describe, key))
            }
            Err(err) => Err(self.map_err(key, Request::Create, &err)),
        }
    }
}

#[async_trait]
impl Store for AzureStore {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn put_create(
        &self,
        key: &str,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<(), StoreError> {
        self.put_source(key, UploadSource::from_bytes(body), options)
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
        self.put_source(key, source, options).await
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
    ) -> Result<(), StoreError> {
        let metadata = encode_metadata(&options.metadata).map_err(|detail| {
            StoreError::new(
                walship_store::ErrorKind::Rejected,
                &self.describe,
                format!("{key}: {detail}"),
            )
        })?;
        let tags = encode_tags(&options.tags);
        if source.len() > BLOCK_UPLOAD_THRESHOLD as u64 {
            self.put_blocks(key, source, metadata, tags).await
        } else {
            let body = source
                .next_chunk(BLOCK_UPLOAD_THRESHOLD)
                .await?
                .unwrap_or_default();
            self.put_single(key, body, metadata, tags).await
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

// ---------------------------------------------------------------------------------------
// Configuration

fn check_container_name(name: &str) -> Result<(), AzureConfigError> {
    // https://learn.microsoft.com/rest/api/storageservices/naming-and-referencing-containers--blobs--and-metadata
    let valid = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if valid || name == "$root" {
        Ok(())
    } else {
        Err(AzureConfigError::Container(format!(
            "{name:?} is not a valid container name; expected 3 to 63 lower-case letters, \
             digits and single hyphens, starting and ending with a letter or digit"
        )))
    }
}

/// The SDK's default client, or one that also trusts the PEM certificates given.
/// The HTTP client of every Azure request (blobs and Azure AD tokens): a bounded
/// connect (the SDK's default client has no timeout at all) and the `endpointCA`
/// certificates, already parsed, added to the public roots.
fn http_client(ca: Option<&CaBundle>) -> Result<Arc<dyn azure_core::HttpClient>, AzureConfigError> {
    // Like the SDK's own client: no idle pooled connections, which can hang in hyper
    // (hyperium/hyper#2312).
    let mut builder = reqwest::ClientBuilder::new()
        .pool_max_idle_per_host(0)
        .connect_timeout(deadline::CONNECT);
    for der in ca.map(CaBundle::der).unwrap_or_default() {
        let certificate = reqwest::Certificate::from_der(der.as_ref()).map_err(|e| {
            AzureConfigError::EndpointCa(format!("a certificate cannot be used: {e}"))
        })?;
        builder = builder.add_root_certificate(certificate);
    }
    let client = builder.build().map_err(|e| {
        AzureConfigError::EndpointCa(format!("an HTTP client with this CA cannot be built: {e}"))
    })?;
    Ok(Arc::new(client))
}

fn resolve(
    config: &AzureStoreConfig,
    http: &Arc<dyn azure_core::HttpClient>,
) -> Result<Resolved, AzureConfigError> {
    match &config.auth {
        AzureAuth::ConnectionString(text) => resolve_connection_string(config, text),
        AzureAuth::SharedKey { account, key } => {
            let account = pick_account(account, &config.account)?;
            if key.trim().is_empty() {
                return Err(AzureConfigError::StorageKey("the key is empty".to_owned()));
            }
            if azure_core::base64::decode(key.trim()).is_err() {
                return Err(AzureConfigError::StorageKey(
                    "the key is not base64; copy it from the storage account's access keys"
                        .to_owned(),
                ));
            }
            Ok(Resolved {
                endpoint: endpoint_or_public(&config.endpoint, &account)?,
                credentials: StorageCredentials::access_key(account.clone(), key.trim().to_owned()),
                account,
                secrets: vec![key.trim().to_owned()],
            })
        }
        AzureAuth::Sas { account, token } => {
            let account = pick_account(account, &config.account)?;
            let (credentials, secrets) =
                sas_credentials(token).map_err(AzureConfigError::SasToken)?;
            Ok(Resolved {
                endpoint: endpoint_or_public(&config.endpoint, &account)?,
                credentials,
                account,
                secrets,
            })
        }
        AzureAuth::WorkloadIdentity => {
            let account = pick_account("", &config.account)?;
            let credential =
                WorkloadIdentity::from_env(&|name| std::env::var(name).ok(), http.clone())
                    .map_err(AzureConfigError::WorkloadIdentity)?;
            Ok(Resolved {
                endpoint: endpoint_or_public(&config.endpoint, &account)?,
                credentials: StorageCredentials::token_credential(Arc::new(credential)),
                account,
                secrets: Vec::new(),
            })
        }
        AzureAuth::DefaultCredential => {
            let account = pick_account("", &config.account)?;
            let credential: Arc<dyn TokenCredential> =
                match WorkloadIdentity::from_env(&|name| std::env::var(name).ok(), http.clone()) {
                    Ok(workload) => Arc::new(workload),
                    Err(_) => Arc::new(
                        DefaultAzureCredential::create(TokenCredentialOptions::default()).map_err(
                            |e| {
                                AzureConfigError::DefaultCredential(format!(
                                    "the default Azure credential chain cannot be built: {}",
                                    Scrubber::new(Vec::new()).scrub(&error_chain(&e))
                                ))
                            },
                        )?,
                    ),
                };
            Ok(Resolved {
                endpoint: endpoint_or_public(&config.endpoint, &account)?,
                credentials: StorageCredentials::token_credential(credential),
                account,
                secrets: Vec::new(),
            })
        }
    }
}

fn resolve_connection_string(
    config: &AzureStoreConfig,
    text: &str,
) -> Result<Resolved, AzureConfigError> {
    let err = |reason: String| AzureConfigError::ConnectionString(reason);
    // The SDK's parse errors quote the whole string, key included: never pass them on.
    let parsed =
        ConnectionString::new(text.trim()).map_err(|_| err(connection_string_problem(text)))?;
    let development = parsed.use_development_storage == Some(true);
    let account = match parsed.account_name {
        Some(name) => name.to_owned(),
        None if development => azure_storage::EMULATOR_ACCOUNT.to_owned(),
        None => pick_account("", &config.account)
            .map_err(|_| err("it names no AccountName and storageAccount is not set".to_owned()))?,
    };
    let mut secrets = Vec::new();
    let credentials = if let Some(sas) = parsed.sas {
        let (credentials, more) = sas_credentials(sas)
            .map_err(|reason| err(format!("its SharedAccessSignature: {reason}")))?;
        secrets.extend(more);
        credentials
    } else if let Some(key) = parsed.account_key {
        if azure_core::base64::decode(key).is_err() {
            return Err(err("its AccountKey is not base64".to_owned()));
        }
        secrets.push(key.to_owned());
        StorageCredentials::access_key(account.clone(), key.to_owned())
    } else if development {
        StorageCredentials::emulator()
    } else {
        return Err(err(
            "it has neither AccountKey nor SharedAccessSignature".to_owned()
        ));
    };
    secrets.push(text.trim().to_owned());
    let endpoint = if let Some(blob) = parsed.blob_endpoint {
        parse_endpoint(blob).map_err(|reason| err(format!("its BlobEndpoint {reason}")))?
    } else if development {
        let proxy = parsed
            .development_storage_proxy_uri
            .unwrap_or("http://127.0.0.1");
        let url = format!(
            "{}:10000/{}",
            proxy.trim_end_matches('/'),
            azure_storage::EMULATOR_ACCOUNT
        );
        parse_endpoint(&url)
            .map_err(|reason| err(format!("its DevelopmentStorageProxyUri {reason}")))?
    } else if !config.endpoint.trim().is_empty() {
        parse_endpoint(&config.endpoint).map_err(AzureConfigError::Endpoint)?
    } else {
        let protocol = parsed
            .default_endpoints_protocol
            .as_ref()
            .map_or("https".to_owned(), |p| p.to_string());
        let suffix = parsed.endpoint_suffix.unwrap_or("core.windows.net");
        parse_endpoint(&format!("{protocol}://{account}.blob.{suffix}")).map_err(|reason| {
            err(format!(
                "its AccountName/EndpointSuffix give a URL that {reason}"
            ))
        })?
    };
    Ok(Resolved {
        endpoint,
        account,
        credentials,
        secrets,
    })
}

/// Says what is wrong with a connection string the SDK refused, naming keys only.
fn connection_string_problem(text: &str) -> String {
    const KNOWN: &[&str] = &[
        "AccountName",
        "AccountKey",
        "SharedAccessSignature",
        "EndpointSuffix",
        "DefaultEndpointsProtocol",
        "UseDevelopmentStorage",
        "DevelopmentStorageProxyUri",
        "BlobEndpoint",
        "BlobSecondaryEndpoint",
        "TableEndpoint",
        "TableSecondaryEndpoint",
        "QueueEndpoint",
        "QueueSecondaryEndpoint",
        "FileEndpoint",
        "FileSecondaryEndpoint",
    ];
    for part in text.split(';').filter(|p| !p.trim().is_empty()) {
        let Some((name, value)) = part.trim().split_once('=') else {
            return "it is not a list of Name=value pairs separated by ';'".to_owned();
        };
        let name = name.trim();
        if !KNOWN.contains(&name) {
            // A name made of letters is safe to show; anything else might be a pasted
            // fragment of the key.
            return if !name.is_empty()
                && name.len() <= 40
                && name.bytes().all(|b| b.is_ascii_alphabetic())
            {
                format!(
                    "it has an unknown setting {name:?}; known: {}",
                    KNOWN.join(", ")
                )
            } else {
                "it has a setting with an unknown name".to_owned()
            };
        }
        if value.trim().is_empty() {
            return format!("its {name} has no value");
        }
        if name == "DefaultEndpointsProtocol" && !matches!(value.trim(), "http" | "https") {
            return "its DefaultEndpointsProtocol must be http or https".to_owned();
        }
        if name == "UseDevelopmentStorage" && !matches!(value.trim(), "true" | "false") {
            return "its UseDevelopmentStorage must be true or false".to_owned();
        }
    }
    "it cannot be parsed".to_owned()
}

fn pick_account(from_credentials: &str, from_config: &str) -> Result<String, AzureConfigError> {
    let account = if from_credentials.trim().is_empty() {
        from_config.trim()
    } else {
        from_credentials.trim()
    };
    if account.is_empty() {
        return Err(AzureConfigError::Account(
            "no storage account name is given".to_owned(),
        ));
    }
    if !account.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(AzureConfigError::Account(format!(
            "{account:?} is not a storage account name (letters and digits only)"
        )));
    }
    let (credentials, url) = (from_credentials.trim(), from_config.trim());
    if !credentials.is_empty() && !url.is_empty() && credentials != url {
        // The credentials' account signs and is the one addressed; a destinationPath
        // naming another is almost always a copy-paste slip that ends in 403s.
        tracing::warn!(
            "spec.configuration.azureCredentials.storageAccount is {credentials:?} but \
             destinationPath names the account {url:?}; using {credentials:?}"
        );
    }
    Ok(account.to_owned())
}

fn sas_credentials(token: &str) -> Result<(StorageCredentials, Vec<String>), String> {
    let token = token.trim().trim_start_matches('?');
    if token.is_empty() {
        return Err("the token is empty".to_owned());
    }
    let pairs: Vec<(String, String)> = Url::parse(&format!("https://x.invalid/?{token}"))
        .map_err(|_| "the token is not a URL query string".to_owned())?
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let Some((_, sig)) = pairs.iter().find(|(k, _)| k == "sig") else {
        return Err(
            "the token has no sig= parameter; expected a SAS token such as \
                    sv=...&sr=c&sp=racwl&se=...&sig=..."
                .to_owned(),
        );
    };
    let mut secrets = vec![token.to_owned(), sig.clone()];
    if let Some(raw) = token.split('&').find_map(|p| p.strip_prefix("sig=")) {
        secrets.push(raw.to_owned());
    }
    let credentials = StorageCredentials::sas_token(token)
        .map_err(|_| "the token cannot be parsed".to_owned())?;
    Ok((credentials, secrets))
}

fn endpoint_or_public(endpoint: &str, account: &str) -> Result<Url, AzureConfigError> {
    if endpoint.trim().is_empty() {
        parse_endpoint(&format!("https://{account}.blob.core.windows.net"))
            .map_err(AzureConfigError::Endpoint)
    } else {
        parse_endpoint(endpoint).map_err(AzureConfigError::Endpoint)
    }
}

/// Checks a blob service URL; the error says what is wrong, showing the URL without any
/// user info or query string.
fn parse_endpoint(text: &str) -> Result<Url, String> {
    let shown = redact_url(text);
    let url = Url::parse(text.trim())
        .map_err(|_| format!("{shown:?} is not a valid URL; expected https://ACCOUNT.blob.core.windows.net or http://HOST:PORT/ACCOUNT"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{shown:?} must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{shown:?} has no host"));
    }
    if url.query().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{shown:?} must not carry credentials or a query string; a SAS token goes in \
             storageSasToken"
        ));
    }
    Ok(url)
}

/// `https://user:pass@host/path?sig=...` must never reach a log line.
fn redact_url(text: &str) -> String {
    let text = text.trim();
    let text = text.split(['?', '#']).next().unwrap_or("");
    match text.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if path.is_empty() {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            }
        }
        None => text.rsplit_once('@').map_or(text, |(_, h)| h).to_owned(),
    }
}

fn describe(account: &str, container: &str, endpoint: &Url) -> String {
    let public = format!("https://{account}.blob.core.windows.net");
    let endpoint = endpoint.as_str().trim_end_matches('/');
    if endpoint == public {
        format!("azure://{account}/{container}")
    } else {
        format!("azure://{account}/{container} at {}", redact_url(endpoint))
    }
}

// ---------------------------------------------------------------------------------------
// Workload identity

/// AKS workload identity: exchanges the projected service-account token for an Azure AD
/// token. Unlike the SDK's `WorkloadIdentityCredential`, which reads the token file once,
/// this reads it again for every exchange, because the kubelet rotates it (hourly by
/// default) and a daemon outlives any single copy.
struct WorkloadIdentity {
    http: Arc<dyn azure_core::HttpClient>,
    authority: Url,
    tenant_id: String,
    client_id: String,
    token_file: PathBuf,
    cache: futures::lock::Mutex<Option<(String, AccessToken)>>,
}

impl fmt::Debug for WorkloadIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadIdentity")
            .field("authority", &self.authority.as_str())
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("token_file", &self.token_file)
            .finish_non_exhaustive()
    }
}

impl WorkloadIdentity {
    fn from_env(
        var: &dyn Fn(&str) -> Option<String>,
        http: Arc<dyn azure_core::HttpClient>,
    ) -> Result<WorkloadIdentity, String> {
        let need = |name: &str| {
            var(name).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                format!(
                    "workload identity needs the environment variable {name}, which the Azure \
                     workload identity webhook sets in pods whose service account is labelled \
                     azure.workload.identity/use=true"
                )
            })
        };
        let client_id = need("AZURE_CLIENT_ID")?;
        let tenant_id = need("AZURE_TENANT_ID")?;
        let token_file = PathBuf::from(need("AZURE_FEDERATED_TOKEN_FILE")?);
        let authority_text = var("AZURE_AUTHORITY_HOST")
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "https://login.microsoftonline.com".to_owned());
        let authority = Url::parse(authority_text.trim())
            .map_err(|_| format!("AZURE_AUTHORITY_HOST {authority_text:?} is not a URL"))?;
        Ok(WorkloadIdentity {
            http,
            authority,
            tenant_id,
            client_id,
            token_file,
            cache: futures::lock::Mutex::new(None),
        })
    }

    async fn exchange(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        let assertion = std::fs::read_to_string(&self.token_file).map_err(|e| {
            azure_core::Error::full(
                ErrorKind::Credential,
                e,
                format!(
                    "cannot read the federated token file {} (AZURE_FEDERATED_TOKEN_FILE)",
                    self.token_file.display()
                ),
            )
        })?;
        let response = azure_identity::federated_credentials_flow::perform(
            self.http.clone(),
            &self.client_id,
            assertion.trim(),
            scopes,
            &self.tenant_id,
            &self.authority,
        )
        .await
        .map_err(|e| {
            azure_core::Error::full(
                ErrorKind::Credential,
                e,
                "Azure AD refused the federated token exchange",
            )
        })?;
        let expires = SystemTime::now() + Duration::from_secs(response.expires_in);
        Ok(AccessToken::new(
            response.access_token().clone(),
            expires.into(),
        ))
    }
}

#[async_trait]
impl TokenCredential for WorkloadIdentity {
    async fn get_token(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        let wanted = scopes.join(" ");
        let mut cache = self.cache.lock().await;
        if let Some((cached_scopes, token)) = cache.as_ref()
            && *cached_scopes == wanted
            && SystemTime::from(token.expires_on) > SystemTime::now() + TOKEN_REFRESH_MARGIN
        {
            return Ok(token.clone());
        }
        let token = self.exchange(scopes).await?;
        *cache = Some((wanted, token.clone()));
        Ok(token)
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        *self.cache.lock().await = None;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Blocks, metadata, tags

/// A value no other upload of the same key uses at the same time: process, time and a
/// counter. Block ids of one blob must all have the same length, so it is fixed-width.
fn upload_nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:08x}{:016x}{:08x}",
        std::process::id(),
        nanos,
        count as u32
    )
}

fn block_id(nonce: &str, index: usize) -> Bytes {
    Bytes::from(format!("{nonce}-{index:06}"))
}

/// Walship's metadata keys (`walship-sha256`) as Azure metadata names (C# identifiers).
fn encode_metadata(metadata: &Metadata) -> Result<Option<AzureMetadata>, String> {
    if metadata.is_empty() {
        return Ok(None);
    }
    let mut out = AzureMetadata::new();
    for (key, value) in metadata {
        let valid_key = !key.is_empty()
            && key.as_bytes()[0].is_ascii_lowercase()
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_key {
            return Err(format!(
                "metadata key {key:?} cannot be stored in Azure: keys must start with a \
                 lower-case letter and contain only a-z, 0-9 and '-'"
            ));
        }
        if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return Err(format!(
                "the value of metadata key {key:?} cannot be stored in Azure: only printable \
                 ASCII is allowed"
            ));
        }
        out.insert(key.replace('-', "_"), value.clone());
    }
    Ok(Some(out))
}

fn decode_metadata(metadata: Option<&HashMap<String, String>>) -> Metadata {
    metadata
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.to_ascii_lowercase().replace('_', "-"), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn encode_tags(tags: &BTreeMap<String, String>) -> Option<Tags> {
    if tags.is_empty() {
        return None;
    }
    let mut out = Tags::new();
    for (k, v) in tags {
        out.insert(k.clone(), v.clone());
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// Errors

/// Removes secrets from text that came back from the SDK or the HTTP client.
#[derive(Clone, Default)]
struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    fn new(secrets: Vec<String>) -> Scrubber {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 4).collect();
        // Longest first, so a token is removed whole before its signature alone.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Scrubber { secrets }
    }

    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "<redacted>");
            }
        }
        // Any SAS signature in a URL, known or not (a user-delegation SAS, say).
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find("sig=") {
            result.push_str(&rest[..at + 4]);
            let tail = &rest[at + 4..];
            let end = tail
                .find(|c: char| c == '&' || c == ')' || c == '"' || c == '\'' || c.is_whitespace())
                .unwrap_or(tail.len());
            if end > 0 {
                result.push_str("<redacted>");
            }
            rest = &tail[end..];
        }
        result.push_str(rest);
        result
    }
}

fn is_invalid_range(err: &azure_core::Error) -> bool {
    matches!(err.kind(), ErrorKind::HttpResponse { status, .. } if u16::from(*status) == 416)
}

/// The HTTP status and error code of an error, looking through credential errors that
/// wrap the token endpoint's answer.
fn http_status(err: &azure_core::Error) -> Option<(u16, String)> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(azure) = e.downcast_ref::<azure_core::Error>()
            && let ErrorKind::HttpResponse { status, error_code } = azure.kind()
        {
            return Some((u16::from(*status), error_code.clone().unwrap_or_default()));
        }
        current = e.source();
    }
    None
}

fn has_io_cause(err: &azure_core::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(azure) = e.downcast_ref::<azure_core::Error>()
            && matches!(azure.kind(), ErrorKind::Io)
        {
            return true;
        }
        if e.is::<std::io::Error>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Maps an SDK error onto the store's error kinds, through the one status mapping every
/// store shares. Pure, so that it can be tested without a server. The SDK's error is
/// not kept as the source: its text can quote a SAS URL.
fn classify(
    store: &str,
    key: &str,
    request: Request,
    err: &azure_core::Error,
    scrubber: &Scrubber,
) -> StoreError {
    use walship_store::ErrorKind as Kind;
    match err.kind() {
        ErrorKind::HttpResponse { status, error_code } => {
            let status = u16::from(*status);
            let code = error_code.clone().unwrap_or_default();
            let message = err
                .as_http_error()
                .and_then(|h| h.error_message())
                .and_then(|m| m.lines().next())
                .map(|m| scrubber.scrub(m.trim()))
                .unwrap_or_default();
            let short = format!("HTTP {status} {code}").trim_end().to_owned();
            let detail = if message.is_empty() {
                short.clone()
            } else {
                format!("{short}: {message}")
            };
            match status::kind_of(request, status, &code) {
                Kind::AlreadyExists => StoreError::already_exists(store, key),
                Kind::NotFound => StoreError::not_found(store, key),
                Kind::ContainerMissing => StoreError::new(Kind::ContainerMissing, store, detail),
                // The service's own message for authentication failures can quote the
                // string it signed; the code says enough.
                Kind::Denied => StoreError::new(Kind::Denied, store, format!("{key}: {short}")),
                kind => StoreError::new(kind, store, format!("{key}: {detail}")),
            }
        }
        ErrorKind::Io => StoreError::new(
            Kind::Connection,
            store,
            format!("{key}: {}", scrubber.scrub(&error_chain(err))),
        ),
        ErrorKind::Credential => {
            let detail = format!(
                "{key}: cannot obtain an Azure AD token: {}",
                scrubber.scrub(&error_chain(err))
            );
            // The token endpoint's own answer, when there was one: a 4xx refuses the
            // identity, anything else is the endpoint failing (and passes).
            let kind = match http_status(err) {
                Some((status, _)) if (400..500).contains(&status) && status != 429 => Kind::Denied,
                Some((429, _)) => Kind::Throttled,
                Some(_) => Kind::Server,
                None if has_io_cause(err) => Kind::Connection,
                None => Kind::Denied,
            };
            StoreError::new(kind, store, detail)
        }
        _ => StoreError::new(
            Kind::Rejected,
            store,
            format!("{key}: {}", scrubber.scrub(&error_chain(err))),
        ),
    }
}

#[cfg(test)]
mod tests;
