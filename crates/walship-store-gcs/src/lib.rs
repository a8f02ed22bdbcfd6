//! The [`Store`] for Google Cloud Storage (and emulators such as fake-gcs-server), on
//! the JSON API.
//!
//! What it does:
//! - create-only puts with `ifGenerationMatch=0`: `412 Precondition Failed` becomes
//!   [`StoreError::AlreadyExists`], so an existing object is never overwritten. Bodies up
//!   to [`RESUMABLE_THRESHOLD`] go in one multipart upload (object resource and bytes in
//!   one request); larger ones in a resumable upload of [`RESUMABLE_CHUNK`] chunks whose
//!   session carries the same condition;
//! - user metadata (walship's `walship-sha256`) as the object's custom metadata; GCS has
//!   no object tags, so tags are ignored as the [`Store`] contract allows;
//! - create-only uploads in parts (base backups): each part a temporary object under
//!   [`UPLOADS_PREFIX`], joined by the compose API (32 sources a call, in a tree through
//!   intermediate objects beyond that) into the object with `ifGenerationMatch=0`, the
//!   temporary objects deleted afterwards. The upload's nonce goes into the object's
//!   metadata ([`walship_store::UPLOAD_ID_METADATA`]), so a complete that finds the key
//!   taken can tell its own earlier, unanswered compose from another writer's object.
//!   Leftovers of uploads that never ended (a killed process) are for a lifecycle rule
//!   on that prefix to delete;
//! - replacing puts (the same uploads without `ifGenerationMatch`) for the catalog files
//!   barman-cloud rewrites, and ranged reads (`Range: bytes=a-b`);
//! - get reads the object resource first and then the bytes of exactly that generation,
//!   so the metadata returned always belongs to the bytes returned;
//! - tokens from a service-account JSON key (gcp_auth's `CustomServiceAccount`, which
//!   signs the JWT assertion and posts it to the key's own `token_uri`) or from the GKE
//!   metadata server ([`auth::MetadataServer`], honouring `GCE_METADATA_HOST` as Google's
//!   own libraries do; gcp_auth hard-codes `metadata.google.internal`);
//! - the API endpoint is `endpointURL` when set, else `STORAGE_EMULATOR_HOST` (as Google's
//!   clients read it), else `https://storage.googleapis.com`; its client (walship-store's
//!   reqwest builder) trusts `endpointCA` besides the public roots;
//! - HTTP statuses go through the status mapping all stores share
//!   ([`walship_store::status`]), transport failures onto the same kinds; each request
//!   is retried by the store's [`RetryPolicy`].
//!
//! Why direct JSON-API calls rather than a GCS client crate: walship needs seven calls
//! (multipart upload, resumable upload, compose, object resource, media download, list,
//! delete) with one query parameter that matters (`ifGenerationMatch=0`). The official
//! `google-cloud-storage` crate would bring gRPC (tonic, prost) and its own credential
//! stack beside gcp_auth, which the user chose; the community `google-cloud-storage`
//! crates track Google's API at their own pace. reqwest is already in the dependency tree
//! through the Azure SDK, so the JSON API costs no new HTTP stack and keeps every
//! request, header and status visible here.
//!
//! This crate must never log, display or return a secret: the JSON key stays a `Secret`
//! (redacted in `Debug`) until gcp_auth signs with it, and is never quoted in
//! [`GcsConfigError`]; access tokens only ever go into an
//! `Authorization` header. It knows nothing of WAL, configuration files or the daemon.
//!
//! Dependencies: `gcp_auth` (the service-account key parsed and its assertions signed,
//! and the `TokenProvider` trait both token providers implement), `base64` (the signed
//! assertion's encoding), `reqwest` (HTTP, rustls), `serde`/`serde_json` (API resources,
//! the key file, token answers), `chrono` (gcp_auth's token expiry type),
//! `percent-encoding` with walship-secret's unreserved set (object names in URL paths),
//! `futures` (a body streamed from disk as it is sent: reqwest's `stream` feature; the
//! composes and deletes of a multipart upload run a few at a time),
//! `tokio` (the token request's deadline and the token cache's lock),
//! `walship-credentials` (the credential source it signs with, one type from the secret
//! to gcp_auth), `walship-secret`, `walship-store`, `async-trait`, `bytes`, `thiserror`,
//! `tracing`.

pub mod auth;
mod service_account;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use percent_encoding::utf8_percent_encode;
use serde::Deserialize;
use walship_credentials::GoogleCredentialSource;
use walship_secret::ALL_BUT_UNRESERVED;
use walship_store::status::{self, Request};
use walship_store::{
    CaBundle, ErrorKind, Metadata, MultipartUpload, ObjectInfo, PutOptions, RetryPolicy, Store,
    StoreError, UPLOAD_ID_METADATA, UploadSource, deadline, upload_nonce,
};

pub use auth::MetadataServer;

/// Bodies up to this size are sent in one multipart upload; larger ones in a resumable
/// upload. A default 16 MiB WAL segment is one request.
pub const RESUMABLE_THRESHOLD: usize = 64 * 1024 * 1024;
/// The chunk size of resumable uploads; GCS wants a multiple of 256 KiB.
pub const RESUMABLE_CHUNK: usize = 16 * 1024 * 1024;
/// The public JSON API endpoint.
pub const GOOGLE_ENDPOINT: &str = "https://storage.googleapis.com";
/// The OAuth scope walship asks tokens for: objects read, written, listed and deleted.
pub const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
/// How long getting an access token (with gcp_auth's own retries) may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Where multipart uploads keep their parts, one temporary object per part under
/// `<UPLOADS_PREFIX><nonce>/`, until they complete or abort: at the bucket's root, so
/// that no listing of walship's own keys shows them.
pub const UPLOADS_PREFIX: &str = ".walship-uploads/";
/// The most source objects one compose request takes (GCS's limit).
const MAX_COMPOSE_SOURCES: usize = 32;
/// How many requests of one multipart upload's complete or abort are in flight at once
/// (intermediate composes, deletes of its temporary objects).
const UPLOAD_CONCURRENCY: usize = 8;

/// Where the bucket is and how to reach it. Its derived `Debug` never shows the key: it
/// stays a `Secret` until gcp_auth signs with it.
#[derive(Debug, Clone)]
pub struct GcsStoreConfig {
    pub bucket: String,
    /// `endpointURL`: the JSON API's base URL (scheme, host, port). `None` falls back on
    /// `STORAGE_EMULATOR_HOST`, then on [`GOOGLE_ENDPOINT`].
    pub endpoint_url: Option<String>,
    pub auth: GoogleCredentialSource,
    /// Certificates (`endpointCA`) to trust in addition to the public roots, for an
    /// endpoint behind a private CA (the JSON API and the metadata server; gcp_auth's
    /// service-account token requests go through its own client).
    pub ca_bundle: Option<CaBundle>,
    /// How each request is retried.
    pub retry: RetryPolicy,
}

/// Why the store could not be built. Messages name the setting and what is expected,
/// never a key's contents.
#[derive(Debug, thiserror::Error)]
pub enum GcsConfigError {
    #[error("spec.configuration.destinationPath: {0}")]
    Bucket(String),
    #[error("spec.configuration.endpointURL: {0}")]
    Endpoint(String),
    #[error("STORAGE_EMULATOR_HOST: {0}")]
    EmulatorHost(String),
    #[error("spec.configuration.googleCredentials.applicationCredentials: {0}")]
    ServiceAccountKey(String),
    #[error("spec.configuration.googleCredentials.gkeEnvironment: {0}")]
    Metadata(String),
    #[error("spec.configuration.endpointCA: {0}")]
    EndpointCa(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// A bucket in Google Cloud Storage (or in an emulator). Cloning it is cheap (the HTTP
/// client and the token source are shared): each multipart upload holds a clone.
#[derive(Clone)]
pub struct GcsStore {
    http: reqwest::Client,
    endpoint: String,
    bucket: String,
    tokens: Arc<dyn gcp_auth::TokenProvider>,
    describe: String,
    resumable_threshold: usize,
    resumable_chunk: usize,
    list_page_size: Option<u32>,
    retry: RetryPolicy,
}

impl fmt::Debug for GcsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsStore")
            .field("store", &self.describe)
            .finish_non_exhaustive()
    }
}

impl GcsStore {
    /// Builds the client and its token source. Performs no request: a refused token, a
    /// missing bucket or a wrong key shows up on the first operation.
    pub fn new(config: GcsStoreConfig) -> Result<GcsStore, GcsConfigError> {
        Self::with_env(config, &|name| std::env::var(name).ok())
    }

    /// [`GcsStore::new`] reading `STORAGE_EMULATOR_HOST` and `GCE_METADATA_HOST` through
    /// `var`, so tests need not change the process environment.
    pub fn with_env(
        config: GcsStoreConfig,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GcsStore, GcsConfigError> {
        check_bucket_name(&config.bucket)?;
        let endpoint = resolve_endpoint(config.endpoint_url.as_deref(), var)?;
        // Unlike Azure's, this client keeps idle connections, as it always has: a TLS
        // handshake per request would cost more, and a request that fails on a pooled
        // connection the server dropped is a connection error, which the policy retries.
        let http = walship_store::http::client_builder(config.ca_bundle.as_ref())
            .map_err(GcsConfigError::EndpointCa)?
            // Each request below sets its own, sized for its body; this one covers the
            // rest (the token flows use this client too).
            .timeout(deadline::for_small_request())
            .build()
            .map_err(|e| GcsConfigError::Http(e.to_string()))?;
        let tokens = auth::provider(&config.auth, http.clone(), var)?;
        let describe = if endpoint == GOOGLE_ENDPOINT {
            format!("gs://{}", config.bucket)
        } else {
            format!("gs://{} at {endpoint}", config.bucket)
        };
        Ok(GcsStore {
            http,
            endpoint,
            bucket: config.bucket,
            tokens,
            describe,
            resumable_threshold: RESUMABLE_THRESHOLD,
            resumable_chunk: RESUMABLE_CHUNK,
            list_page_size: None,
            retry: config.retry,
        })
    }

    /// Uploads bodies larger than `threshold` bytes as resumable uploads in chunks of
    /// `chunk` bytes (rounded up to 256 KiB). Meant for tests that exercise resumable
    /// uploads without hundreds of megabytes.
    pub fn with_resumable_upload(mut self, threshold: usize, chunk: usize) -> Self {
        self.resumable_threshold = threshold;
        self.resumable_chunk = chunk.div_ceil(256 * 1024).max(1) * 256 * 1024;
        self
    }

    /// Lists in pages of at most `size` objects instead of the service's default (1000).
    pub fn with_list_page_size(mut self, size: u32) -> Self {
        self.list_page_size = Some(size.max(1));
        self
    }

    fn object_url(&self, key: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.endpoint,
            self.bucket,
            // RFC 3986's unreserved set stays, everything else is escaped: `/` becomes
            // `%2F`, as the JSON API wants an object name as one path segment.
            utf8_percent_encode(key, ALL_BUT_UNRESERVED)
        )
    }

    fn upload_url(&self) -> String {
        format!("{}/upload/storage/v1/b/{}/o", self.endpoint, self.bucket)
    }

    async fn token(&self, key: &str) -> Result<Arc<gcp_auth::Token>, StoreError> {
        // gcp_auth's HTTP client sets no timeout: a token endpoint that accepts the
        // connection and never answers would hang archive_command.
        match tokio::time::timeout(TOKEN_TIMEOUT, self.tokens.token(&[SCOPE])).await {
            Ok(result) => {
                result.map_err(|err| auth::classify_token_error(&self.describe, key, &err))
            }
            Err(_) => Err(StoreError::timed_out(
                &self.describe,
                format!("{key}: the Google access token request"),
                TOKEN_TIMEOUT,
            )),
        }
    }

    /// Sends the request `build` makes, with a fresh token, and reads the whole answer:
    /// one attempt. An error status is mapped through the shared status mapping; `what`
    /// names the call in messages. The attempt has the deadline `per_attempt`, the
    /// response's body included.
    async fn exchange_once(
        &self,
        key: &str,
        what: &str,
        request: Request,
        per_attempt: Duration,
        builder: reqwest::RequestBuilder,
    ) -> Result<(reqwest::header::HeaderMap, Bytes), StoreError> {
        let response = self.send_once(key, what, per_attempt, builder).await?;
        if !response.status().is_success() {
            return Err(self.status_error(key, what, request, response).await);
        }
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|err| self.transport_error(key, what, per_attempt, err))?;
        Ok((headers, body))
    }

    /// Sends the request with a fresh token, under the deadline `per_attempt`, and
    /// returns the answer whatever its status.
    async fn send_once(
        &self,
        key: &str,
        what: &str,
        per_attempt: Duration,
        builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, StoreError> {
        let token = self.token(key).await?;
        builder
            .timeout(per_attempt)
            .bearer_auth(token.as_str())
            .send()
            .await
            .map_err(|err| self.transport_error(key, what, per_attempt, err))
    }

    /// [`GcsStore::exchange_once`] for a request moving about `len` bytes, retried by
    /// the store's policy.
    async fn exchange(
        &self,
        key: &str,
        what: &str,
        request: Request,
        len: u64,
        build: &(dyn Fn() -> reqwest::RequestBuilder + Sync),
    ) -> Result<(reqwest::header::HeaderMap, Bytes), StoreError> {
        let per_attempt = deadline::for_body(len);
        self.retry
            .run(key, per_attempt, || {
                self.exchange_once(key, what, request, per_attempt, build())
            })
            .await
    }

    /// `after`: the deadline the request had, for a timeout's message.
    fn transport_error(
        &self,
        key: &str,
        what: &str,
        after: Duration,
        err: reqwest::Error,
    ) -> StoreError {
        // reqwest's messages quote the URL: endpoint, bucket and object name, nothing
        // secret (the token travels in a header).
        let detail = format!("{key}: {what}: {}", walship_store::error_chain(&err));
        // A connect timeout is a store that cannot be reached; only a timeout after the
        // request went out is a store that does not answer.
        let mapped = if err.is_timeout() && !err.is_connect() {
            StoreError::timed_out(&self.describe, format!("{what} {key}"), after)
        } else if err.is_connect() || err.is_request() {
            StoreError::new(ErrorKind::Connection, &self.describe, detail)
        } else {
            // The answer broke off or could not be decoded.
            StoreError::new(ErrorKind::Response, &self.describe, detail)
        };
        mapped.with_source(err)
    }

    async fn status_error(
        &self,
        key: &str,
        what: &str,
        request: Request,
        response: reqwest::Response,
    ) -> StoreError {
        let status = response.status().as_u16();
        let retry_after = status::retry_after(
            response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        );
        let body = response.text().await.unwrap_or_default();
        classify(&self.describe, key, what, request, status, &body).with_retry_after(retry_after)
    }

    /// One `multipart/related` request: the object resource, then the body streamed
    /// from memory or disk. Each attempt reads the body again, under a fresh boundary.
    async fn put_multipart(
        &self,
        key: &str,
        body: &Body<'_>,
        resource: &serde_json::Value,
        mode: PutMode,
    ) -> Result<(), StoreError> {
        let json = Bytes::from(serde_json::to_vec(resource).expect("a JSON value serializes"));
        let url = self.upload_url();
        let per_attempt = deadline::for_body(body.len() + json.len() as u64);
        self.retry
            .run(key, per_attempt, || async {
                let source = body.source(&self.describe).await?;
                let parts = MultipartStream::new(&self.describe, json.clone(), source);
                let content_type = format!("multipart/related; boundary={}", parts.boundary);
                let total = parts.total_len();
                let failure = parts.failure.clone();
                let builder = self
                    .http
                    .post(&url)
                    .query(&[("uploadType", "multipart")])
                    .query(mode.condition())
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .header(reqwest::header::CONTENT_LENGTH, total)
                    .body(reqwest::Body::wrap_stream(parts.into_stream()));
                let sent = self
                    .exchange_once(
                        key,
                        "multipart upload",
                        Request::Create,
                        per_attempt,
                        builder,
                    )
                    .await;
                // A body that could not be sent in full says why itself.
                match (sent, take_failure(&failure)) {
                    (_, Some(failure)) => Err(failure),
                    (result, None) => result.map(drop),
                }
            })
            .await
    }

    /// A resumable upload: a session, then the body in chunks read in order from memory
    /// or disk. A failed chunk ends the upload (the caller retries the whole put): an
    /// in-session status query would be the way to resume, and some emulators finalize
    /// on it. A file that changed after it was hashed fails before its last chunk is
    /// read, so the session is never finalized.
    async fn put_resumable(
        &self,
        key: &str,
        body: &Body<'_>,
        resource: &serde_json::Value,
        mode: PutMode,
    ) -> Result<(), StoreError> {
        let url = self.upload_url();
        let resource = serde_json::to_vec(resource).expect("a JSON value serializes");
        let total = body.len();
        let mut source = body.source(&self.describe).await?;
        let (headers, _) = self
            .exchange(key, "resumable upload start", Request::Create, 0, &|| {
                self.http
                    .post(&url)
                    .query(&[("uploadType", "resumable")])
                    .query(mode.condition())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/json; charset=UTF-8",
                    )
                    .header("X-Upload-Content-Type", "application/octet-stream")
                    .header("X-Upload-Content-Length", total.to_string())
                    .body(resource.clone())
            })
            .await?;
        let session = headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                StoreError::new(
                    ErrorKind::Response,
                    &self.describe,
                    format!("{key}: the resumable upload start returned no session URI"),
                )
            })?;
        let result = self.send_chunks(key, &session, &mut source, total).await;
        if result.is_err() {
            // Best effort: free the session; it expires on its own after a week.
            let _ = self.http.delete(&session).send().await;
        }
        result
    }

    async fn send_chunks(
        &self,
        key: &str,
        session: &str,
        source: &mut UploadSource,
        total: u64,
    ) -> Result<(), StoreError> {
        // The part of the current chunk the server has not persisted yet, and where
        // it starts in the body.
        let mut pending = Bytes::new();
        let mut offset = 0u64;
        loop {
            if pending.is_empty() {
                pending = source
                    .next_chunk(self.resumable_chunk)
                    .await?
                    .unwrap_or_default();
            }
            let end = offset + pending.len() as u64;
            let last = end == total;
            let range = if last {
                format!("bytes {offset}-{}/{total}", end.max(1) - 1)
            } else {
                format!("bytes {offset}-{}/*", end - 1)
            };
            let chunk_deadline = deadline::for_body(pending.len() as u64);
            let token = self.token(key).await?;
            let response = self
                .http
                .put(session)
                .bearer_auth(token.as_str())
                .header(reqwest::header::CONTENT_RANGE, range)
                .timeout(chunk_deadline)
                .body(pending.clone())
                .send()
                .await
                .map_err(|e| {
                    self.transport_error(key, "resumable upload chunk", chunk_deadline, e)
                })?;
            let status = response.status();
            if status.as_u16() == 308 {
                // "Resume Incomplete": the Range header says how much was persisted.
                let persisted = response
                    .headers()
                    .get(reqwest::header::RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes=0-"))
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(0, |last| last + 1);
                if last || persisted <= offset || persisted > end {
                    return Err(StoreError::new(
                        ErrorKind::Response,
                        &self.describe,
                        format!(
                            "{key}: the resumable upload stalled at byte {persisted} of {total}"
                        ),
                    ));
                }
                pending = pending.slice((persisted - offset) as usize..);
                offset = persisted;
                continue;
            }
            if status.is_success() {
                return Ok(());
            }
            return Err(self
                .status_error(key, "resumable upload chunk", Request::Create, response)
                .await);
        }
    }

    async fn put_body(
        &self,
        key: &str,
        body: Body<'_>,
        metadata: &Metadata,
        mode: PutMode,
    ) -> Result<(), StoreError> {
        let resource = serde_json::json!({
            "name": key,
            "contentType": "application/octet-stream",
            "metadata": metadata,
        });
        if body.len() > self.resumable_threshold as u64 {
            self.put_resumable(key, &body, &resource, mode).await
        } else {
            self.put_multipart(key, &body, &resource, mode).await
        }
    }

    /// Joins the objects `sources` of this bucket, in order, into `target` with
    /// `metadata` (with [`PutMode::Create`] only if no object has that name), retried by
    /// the store's policy. Compose copies nothing through walship: the service joins the
    /// bytes itself.
    async fn compose(
        &self,
        target: &str,
        sources: &[String],
        metadata: &Metadata,
        mode: PutMode,
    ) -> Result<(), StoreError> {
        let url = format!("{}/compose", self.object_url(target));
        let sources: Vec<_> = sources
            .iter()
            .map(|name| serde_json::json!({ "name": name }))
            .collect();
        let request = serde_json::json!({
            "sourceObjects": sources,
            "destination": {"contentType": "application/octet-stream", "metadata": metadata},
        });
        let request = Bytes::from(serde_json::to_vec(&request).expect("a JSON value serializes"));
        self.exchange(target, "compose", Request::Create, 0, &|| {
            self.http
                .post(&url)
                .query(mode.condition())
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/json; charset=UTF-8",
                )
                .body(request.clone())
        })
        .await
        .map(drop)
    }

    /// The object's resource, retried by the store's policy.
    async fn resource(&self, key: &str) -> Result<Option<ObjectResource>, StoreError> {
        self.retry
            .run(key, deadline::for_small_request(), || {
                self.resource_once(key)
            })
            .await
    }

    /// One attempt at the object's resource.
    async fn resource_once(&self, key: &str) -> Result<Option<ObjectResource>, StoreError> {
        let url = self.object_url(key);
        let per_attempt = deadline::for_small_request();
        let bytes = match self
            .exchange_once(
                key,
                "object get",
                Request::Read,
                per_attempt,
                self.http.get(&url),
            )
            .await
        {
            Ok((_, bytes)) => bytes,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            StoreError::new(
                ErrorKind::Response,
                &self.describe,
                format!("{key}: the object resource is not valid JSON: {e}"),
            )
        })
    }

    /// The object's resource, then the bytes of exactly that generation: one attempt at
    /// the download.
    async fn get_once(&self, key: &str) -> Result<(Bytes, ObjectInfo), StoreError> {
        // One attempt at each request: the caller's policy retries the pair.
        let Some(resource) = self.resource_once(key).await? else {
            return Err(StoreError::not_found(&self.describe, key));
        };
        let url = self.object_url(key);
        let generation = resource.generation.clone();
        let size = resource
            .size
            .as_deref()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        let (_, body) = self
            .exchange_once(
                key,
                "object download",
                Request::Read,
                deadline::for_body(size),
                {
                    let request = self.http.get(&url).query(&[("alt", "media")]);
                    match &generation {
                        Some(g) => request.query(&[("generation", g.as_str())]),
                        None => request,
                    }
                },
            )
            .await?;
        let info = resource.into_info();
        if info.size != body.len() as u64 {
            return Err(StoreError::new(
                ErrorKind::Response,
                &self.describe,
                format!(
                    "{key}: the download returned {} bytes, the object has {}",
                    body.len(),
                    info.size
                ),
            ));
        }
        Ok((body, info))
    }
}

#[async_trait]
impl Store for GcsStore {
    /// An upload without `ifGenerationMatch`: a new generation with only the new
    /// metadata replaces the object.
    async fn put_replace(
        &self,
        key: &str,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<(), StoreError> {
        self.put_body(key, Body::Memory(body), &options.metadata, PutMode::Replace)
            .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        if range.is_empty() {
            // No byte to ask for; the object must still exist.
            return match self.resource(key).await? {
                Some(_) => Ok(Bytes::new()),
                None => Err(StoreError::not_found(&self.describe, key)),
            };
        }
        let url = self.object_url(key);
        let bytes = format!("bytes={}-{}", range.start, range.end - 1);
        let per_attempt = deadline::for_body(range.end - range.start);
        let what = "ranged download";
        self.retry
            .run(key, per_attempt, || async {
                let request = self
                    .http
                    .get(&url)
                    .query(&[("alt", "media")])
                    .header(reqwest::header::RANGE, &bytes);
                let response = self.send_once(key, what, per_attempt, request).await?;
                let status = response.status().as_u16();
                match status {
                    // The range starts at or past the end of the object.
                    416 => return Ok(Bytes::new()),
                    200 | 206 => {}
                    _ => return Err(self.status_error(key, what, Request::Read, response).await),
                }
                let body = response
                    .bytes()
                    .await
                    .map_err(|err| self.transport_error(key, what, per_attempt, err))?;
                Ok(match status {
                    // A server that ignores Range sends the whole object.
                    200 => {
                        let len = body.len() as u64;
                        body.slice(range.start.min(len) as usize..range.end.min(len) as usize)
                    }
                    _ => body,
                })
            })
            .await
    }

    /// Parts are temporary objects under [`UPLOADS_PREFIX`], joined by compose.
    async fn start_multipart(
        &self,
        key: &str,
        options: &PutOptions,
    ) -> Result<Arc<dyn MultipartUpload>, StoreError> {
        let nonce = upload_nonce();
        let mut metadata = options.metadata.clone();
        metadata.insert(UPLOAD_ID_METADATA.to_owned(), nonce.clone());
        Ok(Arc::new(GcsUpload {
            store: self.clone(),
            key: key.to_owned(),
            staging: format!("{UPLOADS_PREFIX}{nonce}/"),
            nonce,
            metadata,
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
        self.put_body(key, Body::Memory(body), &options.metadata, PutMode::Create)
            .await
    }

    /// Streams the file from disk, checked against the declared SHA-256 as it is sent.
    async fn put_create_file(
        &self,
        key: &str,
        path: &Path,
        len: u64,
        options: &PutOptions,
    ) -> Result<(), StoreError> {
        let body = Body::File {
            path,
            len,
            sha256: options.content_sha256.as_deref(),
        };
        self.put_body(key, body, &options.metadata, PutMode::Create)
            .await
    }

    async fn get(&self, key: &str) -> Result<(Bytes, ObjectInfo), StoreError> {
        // A failed download starts over from the resource, so that a retry never pairs
        // one generation's metadata with another's bytes.
        self.retry
            .run(key, deadline::for_small_request(), || self.get_once(key))
            .await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        Ok(self.resource(key).await?.map(ObjectResource::into_info))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let url = format!("{}/storage/v1/b/{}/o", self.endpoint, self.bucket);
        let mut out = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let (_, bytes) = self
                .exchange(prefix, "list", Request::List, 0, &|| {
                    let mut request = self.http.get(&url);
                    if !prefix.is_empty() {
                        request = request.query(&[("prefix", prefix)]);
                    }
                    if let Some(size) = self.list_page_size {
                        request = request.query(&[("maxResults", size.to_string())]);
                    }
                    if let Some(token) = &page_token {
                        request = request.query(&[("pageToken", token.as_str())]);
                    }
                    request
                })
                .await?;
            let page: ListPage = serde_json::from_slice(&bytes).map_err(|e| {
                StoreError::new(
                    ErrorKind::Response,
                    &self.describe,
                    format!("{prefix}: the object list is not valid JSON: {e}"),
                )
            })?;
            out.extend(page.items.into_iter().map(ObjectResource::into_info));
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(token) => page_token = Some(token),
                None => break,
            }
        }
        // Multipart uploads' temporary objects are not objects of the store, as the
        // local store's staging directory is not.
        if !prefix.starts_with(UPLOADS_PREFIX) {
            out.retain(|o| !o.key.starts_with(UPLOADS_PREFIX));
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let url = self.object_url(key);
        match self
            .exchange(key, "delete", Request::Read, 0, &|| self.http.delete(&url))
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Multipart uploads

/// Whether a put may replace an object. WAL and backup data are only ever created; the
/// catalog files barman-cloud rewrites in place (`backup.info`) and the temporary
/// objects of a multipart upload are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PutMode {
    /// `ifGenerationMatch=0`: an existing object is never overwritten.
    Create,
    /// No condition: a new generation replaces the object, metadata and all.
    Replace,
}

impl PutMode {
    /// The query parameters of the condition.
    fn condition(self) -> &'static [(&'static str, &'static str)] {
        match self {
            PutMode::Create => &[("ifGenerationMatch", "0")],
            PutMode::Replace => &[],
        }
    }
}

/// A create-only upload in parts. Each part is a temporary object
/// `<staging><index:05>`; `complete` joins them with compose, 32 sources at a time:
/// groups of 32 into intermediate objects `<staging>join-<level>-<index:05>`, level by
/// level, until at most 32 remain, and those into the object with
/// `ifGenerationMatch=0`. The temporary objects are deleted afterwards; abort deletes
/// them. They live under [`UPLOADS_PREFIX`] at the bucket's root, outside the key's own
/// prefix, so no listing of walship's keys shows them (and [`Store::list`] leaves them
/// out). An upload that never completes nor aborts leaves them to a lifecycle rule on
/// that prefix, as an S3 bucket leaves unfinished multipart uploads to one.
///
/// Why compose rather than one resumable upload: parts arrive concurrently and in any
/// order, while a resumable session takes its bytes in order only (and in multiples of
/// 256 KiB), so it would have to hold early parts in memory until their predecessors
/// are sent. Compose takes each part as it comes and joins them on the server.
///
/// fake-gcs-server (1.54, the test suite's emulator) ignores `ifGenerationMatch` on
/// compose and overwrites the destination (as it does on resumable uploads; only its
/// single-request multipart upload honours the condition). GCS honours it, and that is
/// what makes the complete create-only; the look before the compose (needed anyway: a
/// complete whose earlier call succeeded unseen finds the object and its parts gone)
/// only means that on such a server an object created before the complete is left
/// alone, and one created in the instant between the look and the compose is not.
struct GcsUpload {
    store: GcsStore,
    key: String,
    nonce: String,
    /// `<UPLOADS_PREFIX><nonce>/`: every temporary object of this upload.
    staging: String,
    /// The object's metadata: the caller's and the upload's nonce.
    metadata: Metadata,
}

impl fmt::Debug for GcsUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsUpload")
            .field("store", &self.store.describe)
            .field("key", &self.key)
            .field("staging", &self.staging)
            .finish_non_exhaustive()
    }
}

/// One compose of a join level: `sources` into `target`. A group of one source is not
/// composed: that source goes up a level as it is.
#[derive(Debug, PartialEq, Eq)]
struct Join {
    target: String,
    sources: Vec<String>,
}

/// The composes that join `sources` into at most `MAX_COMPOSE_SOURCES` objects, in
/// order: consecutive groups of 32, each into the intermediate object
/// `<staging>join-<level>-<group:05>`.
fn join_level(staging: &str, level: usize, sources: Vec<String>) -> Vec<Join> {
    sources
        .chunks(MAX_COMPOSE_SOURCES)
        .enumerate()
        .map(|(group, sources)| Join {
            target: match sources {
                [only] => only.clone(),
                _ => format!("{staging}join-{level}-{group:05}"),
            },
            sources: sources.to_vec(),
        })
        .collect()
}

impl GcsUpload {
    fn part_name(&self, index: usize) -> String {
        format!("{}{index:05}", self.staging)
    }

    /// Whether an object found under the key is this upload's (complete succeeded
    /// before, its answer lost) rather than another writer's.
    fn is_ours(&self, found: &ObjectResource) -> bool {
        found
            .metadata
            .as_ref()
            .and_then(|m| m.get(UPLOAD_ID_METADATA))
            == Some(&self.nonce)
    }

    /// The object exists: this upload's, or another writer's.
    async fn found(&self, found: &ObjectResource) -> Result<(), StoreError> {
        if !self.is_ours(found) {
            return Err(StoreError::already_exists(&self.store.describe, &self.key));
        }
        // Done before; only the temporary objects may be left.
        self.discard_after_complete().await;
        Ok(())
    }

    /// Deletes every temporary object of this upload.
    async fn discard(&self) -> Result<(), StoreError> {
        let store = &self.store;
        let temporary = store.list(&self.staging).await?;
        futures::stream::iter(temporary)
            .map(|object| async move { store.delete(&object.key).await })
            .buffer_unordered(UPLOAD_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }

    /// [`GcsUpload::discard`] once the object is stored: a failure leaves garbage
    /// under [`UPLOADS_PREFIX`], not a failed upload.
    async fn discard_after_complete(&self) {
        if let Err(err) = self.discard().await {
            tracing::warn!(
                store = %self.store.describe,
                key = %self.key,
                staging = %self.staging,
                error = %err,
                "the object is stored, but its temporary parts could not all be deleted"
            );
        }
    }
}

#[async_trait]
impl MultipartUpload for GcsUpload {
    async fn put_part(&self, index: usize, body: Bytes) -> Result<(), StoreError> {
        self.store
            .put_body(
                &self.part_name(index),
                Body::Memory(body),
                &Metadata::new(),
                PutMode::Replace,
            )
            .await
    }

    async fn complete(&self, parts: usize) -> Result<(), StoreError> {
        let store = &self.store;
        if let Some(found) = store.resource(&self.key).await? {
            return self.found(&found).await;
        }
        let mut sources: Vec<String> = (0..parts).map(|i| self.part_name(i)).collect();
        let mut level = 0;
        while sources.len() > MAX_COMPOSE_SOURCES {
            level += 1;
            sources = futures::stream::iter(join_level(&self.staging, level, sources))
                .map(|join| async move {
                    if join.sources.len() > 1 {
                        store
                            .compose(
                                &join.target,
                                &join.sources,
                                &Metadata::new(),
                                PutMode::Replace,
                            )
                            .await?;
                    }
                    Ok::<_, StoreError>(join.target)
                })
                .buffered(UPLOAD_CONCURRENCY)
                .try_collect()
                .await?;
        }
        let created = if sources.is_empty() {
            // Nothing to compose: the object is empty.
            store
                .put_body(
                    &self.key,
                    Body::Memory(Bytes::new()),
                    &self.metadata,
                    PutMode::Create,
                )
                .await
        } else {
            store
                .compose(&self.key, &sources, &self.metadata, PutMode::Create)
                .await
        };
        match created {
            Ok(()) => {
                self.discard_after_complete().await;
                Ok(())
            }
            // Taken since the look above, or by an attempt of this very compose whose
            // answer was lost (the policy retried it).
            Err(err) if err.kind() == ErrorKind::AlreadyExists => {
                match store.resource(&self.key).await? {
                    Some(found) => self.found(&found).await,
                    None => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    }

    async fn abort(&self) -> Result<(), StoreError> {
        self.discard().await
    }
}

// ---------------------------------------------------------------------------------------
// API resources

/// The parts of an object resource walship reads. Sizes and generations are int64 values,
/// which the JSON API sends as strings.
#[derive(Debug, Deserialize)]
struct ObjectResource {
    name: String,
    #[serde(default)]
    size: Option<String>,
    #[serde(default)]
    generation: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

impl ObjectResource {
    fn into_info(self) -> ObjectInfo {
        ObjectInfo {
            key: self.name,
            size: self.size.and_then(|s| s.parse().ok()).unwrap_or(0),
            metadata: walship_store::metadata_from(self.metadata.unwrap_or_default()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPage {
    #[serde(default)]
    items: Vec<ObjectResource>,
    #[serde(default)]
    next_page_token: Option<String>,
}

/// The `error` object of a JSON API error answer.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorItem {
    #[serde(default)]
    reason: String,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

/// What a put uploads: bytes already in memory, or a file read as it is sent.
enum Body<'a> {
    Memory(Bytes),
    File {
        path: &'a Path,
        len: u64,
        sha256: Option<&'a str>,
    },
}

impl Body<'_> {
    fn len(&self) -> u64 {
        match self {
            Body::Memory(bytes) => bytes.len() as u64,
            Body::File { len, .. } => *len,
        }
    }

    /// A fresh reading of the body, for one attempt.
    async fn source(&self, store: &str) -> Result<UploadSource, StoreError> {
        match self {
            Body::Memory(bytes) => Ok(UploadSource::from_bytes(bytes.clone())),
            Body::File { path, len, sha256 } => {
                UploadSource::open(store, path, *len, *sha256).await
            }
        }
    }
}

/// The pieces of a streamed body are read this large.
const STREAM_CHUNK: usize = 1 << 20;

/// A `multipart/related` body streamed as it is sent: the object resource as JSON,
/// then the bytes, under a boundary the bytes are checked not to contain. Why the
/// stream failed, when it did, is left in `failure` for the request's error.
struct MultipartStream {
    store: String,
    boundary: String,
    head: Bytes,
    source: UploadSource,
    tail: Bytes,
    /// The end of the bytes sent so far, to find a boundary across two chunks.
    carry: Vec<u8>,
    failure: Arc<std::sync::Mutex<Option<StoreError>>>,
}

impl MultipartStream {
    fn new(store: &str, json: Bytes, source: UploadSource) -> MultipartStream {
        let boundary = format!("walship-{}", upload_nonce());
        let mut head = BytesMut::with_capacity(json.len() + 160);
        head.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n")
                .as_bytes(),
        );
        head.extend_from_slice(&json);
        head.extend_from_slice(
            format!("\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n")
                .as_bytes(),
        );
        let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        MultipartStream {
            store: store.to_owned(),
            boundary,
            head: head.freeze(),
            source,
            tail,
            carry: Vec::new(),
            failure: Arc::default(),
        }
    }

    fn total_len(&self) -> u64 {
        self.head.len() as u64 + self.source.len() + self.tail.len() as u64
    }

    fn fail(&self, err: StoreError) -> std::io::Error {
        let text = err.to_string();
        if let Ok(mut slot) = self.failure.lock() {
            *slot = Some(err);
        }
        std::io::Error::other(text)
    }

    /// The next piece of the body, or why there is none.
    async fn next_piece(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if !self.head.is_empty() {
            return Some(Ok(std::mem::take(&mut self.head)));
        }
        match self.source.next_chunk(STREAM_CHUNK).await {
            Ok(Some(chunk)) => {
                // The boundary must not occur in the content; a random one practically
                // never does, but WAL is arbitrary bytes, so make sure. The attempt
                // fails, and the next one draws another boundary.
                let needle = self.boundary.as_bytes();
                let edge = &chunk[..chunk.len().min(needle.len())];
                let across = [self.carry.as_slice(), edge].concat();
                if contains(&chunk, needle) || contains(&across, needle) {
                    let err = StoreError::new(
                        ErrorKind::Conflict,
                        &self.store,
                        "the body contains the multipart boundary; trying another",
                    );
                    return Some(Err(self.fail(err)));
                }
                // The last bytes sent, to search across the next edge.
                let keep = needle.len().saturating_sub(1);
                let mut sent = std::mem::take(&mut self.carry);
                sent.extend_from_slice(&chunk[chunk.len().saturating_sub(keep)..]);
                self.carry = sent[sent.len().saturating_sub(keep)..].to_vec();
                Some(Ok(chunk))
            }
            Ok(None) if !self.tail.is_empty() => Some(Ok(std::mem::take(&mut self.tail))),
            Ok(None) => None,
            Err(err) => Some(Err(self.fail(err))),
        }
    }

    fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        futures::stream::unfold(self, |mut parts| async move {
            let piece = parts.next_piece().await?;
            Some((piece, parts))
        })
    }
}

fn take_failure(slot: &std::sync::Mutex<Option<StoreError>>) -> Option<StoreError> {
    slot.lock().ok().and_then(|mut s| s.take())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, _)) = needle.split_first() else {
        return true;
    };
    haystack
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == first)
        .any(|(i, _)| haystack[i..].starts_with(needle))
}

// ---------------------------------------------------------------------------------------
// Configuration

/// Bucket names: 3 to 63 characters (222 with dots) of lower-case letters, digits,
/// `-`, `_` and `.`, starting and ending with a letter or digit.
fn check_bucket_name(name: &str) -> Result<(), GcsConfigError> {
    let max = if name.contains('.') { 222 } else { 63 };
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let valid = (3..=max).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && edge(name.as_bytes().first())
        && edge(name.as_bytes().last());
    if valid {
        Ok(())
    } else {
        Err(GcsConfigError::Bucket(format!(
            "{name:?} is not a valid bucket name; expected 3 to 63 lower-case letters, digits, \
             '-', '_' and '.', starting and ending with a letter or digit"
        )))
    }
}

/// `endpointURL`, else `STORAGE_EMULATOR_HOST` (`host:port` or a URL, as Google's clients
/// accept it), else the public endpoint. Returned without a trailing `/`.
fn resolve_endpoint(
    endpoint_url: Option<&str>,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<String, GcsConfigError> {
    if let Some(url) = endpoint_url.map(str::trim).filter(|u| !u.is_empty()) {
        return check_url(url).map_err(GcsConfigError::Endpoint);
    }
    if let Some(host) = var("STORAGE_EMULATOR_HOST")
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
    {
        let url = if host.contains("://") {
            host
        } else {
            format!("http://{host}")
        };
        return check_url(&url).map_err(GcsConfigError::EmulatorHost);
    }
    Ok(GOOGLE_ENDPOINT.to_owned())
}

fn check_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|_| {
        format!("{text:?} is not a valid URL; expected http(s)://HOST[:PORT] of the JSON API")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if url.query().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{text:?} must not carry credentials or a query string"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

// ---------------------------------------------------------------------------------------
// Errors

/// Maps an HTTP error answer onto the store's error kinds, through the status mapping
/// every store shares. Pure, so that it can be tested without a server.
fn classify(
    store: &str,
    key: &str,
    what: &str,
    request: Request,
    status: u16,
    body: &str,
) -> StoreError {
    let parsed = serde_json::from_str::<ErrorEnvelope>(body)
        .map(|e| e.error)
        .unwrap_or_default();
    let reason = parsed
        .errors
        .first()
        .map(|e| e.reason.clone())
        .unwrap_or_default();
    let message: String = parsed
        .message
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(300)
        .collect();
    let short = format!("HTTP {status} {reason}").trim_end().to_owned();
    let detail = if message.is_empty() {
        format!("{key}: {what}: {short}")
    } else {
        format!("{key}: {what}: {short}: {message}")
    };
    // GCS gives a missing bucket and a missing object the same reason, `notFound`; only
    // the message tells them apart.
    let bucket_missing = status == 404
        && message
            .to_ascii_lowercase()
            .contains("bucket does not exist");
    match status::kind_of(request, status, &reason) {
        _ if bucket_missing => StoreError::new(ErrorKind::ContainerMissing, store, detail),
        ErrorKind::AlreadyExists => StoreError::already_exists(store, key),
        ErrorKind::NotFound => StoreError::not_found(store, key),
        kind => StoreError::new(kind, store, detail),
    }
}

#[cfg(test)]
mod tests;
