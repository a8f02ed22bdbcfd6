//! The [`Store`] for Amazon S3 and S3-compatible servers (MinIO, Ceph, Linode,
//! DigitalOcean Spaces, ...), on `aws-sdk-s3`.
//!
//! What it adds to the SDK is the part that is easy to get wrong for WAL:
//! - create-only puts with `If-None-Match: *`; a `412 Precondition Failed` becomes
//!   [`StoreError::AlreadyExists`], so an existing object is never overwritten;
//! - custom endpoints (`endpointURL`) use path-style addressing, and sign every body's
//!   SHA-256 into the request (`x-amz-content-sha256`, which S3-compatible servers check
//!   against what arrives: MinIO, Ceph RGW, s3s) instead of the SDK's default CRC
//!   trailers, which many of them reject (the barman/boto3 complaint in FIELD-NOTES).
//!   An in-memory body is hashed by the SDK's signer; a streamed file is signed with the
//!   hash the caller computed as it read the file ([`PutOptions::content_sha256`]), so
//!   no second pass over the file is needed and a file that differs from what was
//!   hashed is refused. On AWS itself the SDK's checksums stay;
//! - a private CA bundle (`endpointCA`) is added to the TLS roots of the HTTP client
//!   (the Rust SDK ignores `AWS_CA_BUNDLE`);
//! - server-side encryption (`AES256`, `aws:kms`) and object tags;
//! - SDK errors are mapped onto the store's small error enum, with transient ones
//!   (5xx, throttling, timeouts, connection failures) marked as such.
//!
//! This crate knows nothing of WAL or of where credentials come from: it is handed a
//! credentials provider.
//!
//! Dependencies: `aws-sdk-s3` and `aws-config` (the client, retries, signing),
//! `aws-smithy-http-client` (an HTTPS client with a custom trust store),
//! `aws-smithy-types` (byte streams, base64), `aws-credential-types` (the provider
//! type), `aws-sdk-sts` (only the error type of IRSA's STS call, whose status tells a
//! failing STS from a refused identity), `aws-runtime` (the signer's payload-hash
//! override), `sha2` and `hex` (hashing a file whose caller gave no hash),
//! `walship-secret` (the endpoint shown without user info, tags percent-encoded),
//! `walship-store`, `async-trait`, `bytes`,
//! `thiserror`, `tracing`, `tokio` (that hashing, off the async threads).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use bytes::Bytes;
use walship_secret::{percent_encode, redact};
use walship_store::status::{self, Request};
use walship_store::{
    CaBundle, ErrorKind, Metadata, MultipartUpload, ObjectInfo, PutOptions, RetryPolicy, Store,
    StoreError, UPLOAD_ID_METADATA, UploadSource, deadline, error_chain, metadata_from,
    upload_nonce,
};

/// Server-side encryption requested for every object written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sse {
    Aes256,
    AwsKms,
}

/// How long before expiring credentials expire they are refreshed (less a random share
/// of up to half, the SDK's jitter).
const CREDENTIALS_REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// How to reach a bucket.
#[derive(Clone)]
pub struct S3StoreConfig {
    pub bucket: String,
    /// `endpointURL`: any S3-compatible server. `None` means AWS itself.
    pub endpoint_url: Option<String>,
    /// `endpointCA`: certificates trusted in addition to the system roots.
    pub ca_bundle: Option<CaBundle>,
    /// `None` picks `us-east-1` for custom endpoints (which ignore it) and the AWS
    /// region chain otherwise.
    pub region: Option<String>,
    pub credentials: SharedCredentialsProvider,
    pub sse: Option<Sse>,
    /// How each request is retried; the SDK's own retries are off.
    pub retry: RetryPolicy,
}

// Written out rather than derived: the SDK's credentials provider would show static
// credentials' access key id, which walship treats as a secret like the rest.
impl fmt::Debug for S3StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3StoreConfig")
            .field("bucket", &self.bucket)
            .field("endpoint_url", &self.endpoint_url)
            .field("ca_bundle", &self.ca_bundle)
            .field("region", &self.region)
            .field("sse", &self.sse)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum S3ConfigError {
    #[error("spec.configuration.endpointCA: the CA bundle is not usable PEM: {0}")]
    BadCaBundle(String),
    #[error(
        "spec.configuration.endpointURL: {0:?} is not a valid URL; expected http(s)://HOST[:PORT]"
    )]
    BadEndpoint(String),
}

/// A bucket on S3 or an S3-compatible server. Cloning shares the client.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    custom_endpoint: bool,
    sse: Option<Sse>,
    retry: RetryPolicy,
    describe: String,
    list_page_size: Option<i32>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("store", &self.describe)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// A create-only PutObject for `key` with everything but the body.
    fn put_request(&self, key: &str, len: u64, options: &PutOptions) -> PutObjectFluentBuilder {
        self.put_request_replacing(key, len, options)
            .if_none_match("*")
    }

    /// A PutObject for `key` that replaces any object there, with everything but the
    /// body.
    fn put_request_replacing(
        &self,
        key: &str,
        len: u64,
        options: &PutOptions,
    ) -> PutObjectFluentBuilder {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(len as i64)
            .set_tagging(tagging(&options.tags));
        for (k, v) in &options.metadata {
            request = request.metadata(k, v);
        }
        match self.sse {
            Some(Sse::Aes256) => request.server_side_encryption(ServerSideEncryption::Aes256),
            Some(Sse::AwsKms) => request.server_side_encryption(ServerSideEncryption::AwsKms),
            None => request,
        }
    }

    pub async fn new(config: S3StoreConfig) -> Result<S3Store, S3ConfigError> {
        let custom_endpoint = config.endpoint_url.is_some();
        if let Some(url) = &config.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(S3ConfigError::BadEndpoint(url.clone()));
        }
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .credentials_provider(config.credentials.clone())
            // Expiring credentials (IRSA's, an instance role's) are refreshed 30 to 60 s
            // before they expire (the SDK takes off a random share of the buffer), not
            // 5 to 10 s: a slow or failing STS then has half a minute or more in which
            // the credentials in hand still sign (`walship_credentials::held_until_expiry`
            // keeps them).
            .identity_cache(
                aws_config::identity::IdentityCache::lazy()
                    .buffer_time(CREDENTIALS_REFRESH_MARGIN)
                    .build(),
            );
        loader = match (&config.region, custom_endpoint) {
            (Some(region), _) => loader.region(Region::new(region.clone())),
            // Custom endpoints ignore the region, and probing the instance metadata for
            // one would only add a timeout off AWS.
            (None, true) => loader.region(Region::from_static("us-east-1")),
            (None, false) => loader,
        };
        if let Some(bundle) = &config.ca_bundle {
            loader = loader.http_client(https_client_trusting(bundle)?);
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .timeout_config(timeouts(deadline::for_small_request()))
            // walship_store's policy retries each request; an SDK retry inside it would
            // multiply the attempts and stretch the deadlines.
            .retry_config(aws_config::retry::RetryConfig::disabled());
        if shared.region().is_none() {
            builder = builder.region(Region::from_static("us-east-1"));
        }
        if let Some(url) = &config.endpoint_url {
            builder = builder
                .endpoint_url(url.trim_end_matches('/'))
                .force_path_style(true)
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        let describe = match &config.endpoint_url {
            Some(url) => format!("s3://{} at {}", config.bucket, redact::url(url)),
            None => format!("s3://{}", config.bucket),
        };
        Ok(S3Store {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket,
            custom_endpoint,
            sse: config.sse,
            retry: config.retry,
            describe,
            list_page_size: None,
        })
    }

    /// Sends `body` with the PutObject `request` builds, each attempt bounded by the
    /// body's deadline; the signer hashes an in-memory body into the request itself.
    /// `kind` is what a failure means (a create's 412 is the object existing).
    async fn put_bytes(
        &self,
        key: &str,
        body: Bytes,
        kind: Request,
        request: impl Fn() -> PutObjectFluentBuilder,
    ) -> Result<(), StoreError> {
        let attempt = deadline::for_body(body.len() as u64);
        self.retry
            .run(key, attempt, || async {
                request()
                    .body(ByteStream::from(body.clone()))
                    .customize()
                    .config_override(
                        aws_sdk_s3::config::Builder::new().timeout_config(timeouts(attempt)),
                    )
                    .send()
                    .await
                    .map_err(|e| self.map_err(key, kind, attempt, e))
            })
            .await?;
        Ok(())
    }

    /// Lists in pages of at most `size` keys instead of the service's default (1000).
    /// Meant for tests that need several pages without thousands of objects.
    pub fn with_list_page_size(mut self, size: i32) -> Self {
        self.list_page_size = Some(size.max(1));
        self
    }

    /// Maps a failed request for `key` (whose attempt had the deadline `after`) onto
    /// the store's error kinds, through the one status mapping every store shares.
    fn map_err<E, R>(
        &self,
        key: &str,
        request: Request,
        after: Duration,
        err: SdkError<E, R>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: fmt::Debug + HttpResponseParts + Send + Sync + 'static,
    {
        let store = &self.describe;
        let mapped = match &err {
            SdkError::ServiceError(service) => {
                let status = service.raw().status();
                let code = service.err().code().unwrap_or("").to_owned();
                let message = service.err().message().unwrap_or("").to_owned();
                let detail = if message.is_empty() {
                    format!("HTTP {status} {code}")
                } else {
                    format!("HTTP {status} {code}: {message}")
                };
                let retry_after = status::retry_after(service.raw().header("retry-after"));
                let clock = status::clock_offset(
                    service.raw().header("date"),
                    std::time::SystemTime::now(),
                );
                match status::with_clock(status::kind_of(request, status, &code), clock) {
                    ErrorKind::AlreadyExists => StoreError::already_exists(store, key),
                    ErrorKind::NotFound => StoreError::not_found(store, key),
                    ErrorKind::Denied if status::is_expired_credentials(&code) => {
                        StoreError::expired_credentials(store, detail)
                    }
                    ErrorKind::ClockSkew => StoreError::clock_skew(store, detail, clock),
                    kind => StoreError::new(kind, store, detail),
                }
                .with_retry_after(retry_after)
            }
            SdkError::TimeoutError(_) => StoreError::timed_out(store, key, after),
            _ => match credentials_failure(&err) {
                Some(failure) => failure.into_error(store, &err),
                None => match &err {
                    SdkError::DispatchFailure(_) => {
                        StoreError::new(ErrorKind::Connection, store, error_chain(&err))
                    }
                    // The answer could not be read or parsed (a connection cut mid-answer).
                    SdkError::ResponseError(_) => {
                        StoreError::new(ErrorKind::Response, store, error_chain(&err))
                    }
                    _ => StoreError::new(ErrorKind::Rejected, store, error_chain(&err)),
                },
            },
        };
        mapped.with_source(err)
    }
}

/// How much of a file one body chunk holds.
const BODY_CHUNK: usize = 1024 * 1024;

/// The file as the SDK sends it, read chunk by chunk through an [`UploadSource`], which
/// refuses to hand out the last chunk when what was read differs from the declared
/// SHA-256: the request is cut off before its end and nothing is stored. This holds on
/// AWS too, whose own checksums cover the bytes as sent, not the bytes the archiver
/// hashed. The source's error goes into `failed`, since the SDK reports only that the
/// body failed.
fn streamed(source: UploadSource, failed: Arc<Mutex<Option<StoreError>>>) -> ByteStream {
    use http_body::Frame;
    let chunks = futures::stream::unfold(Some(source), move |state| {
        let failed = failed.clone();
        async move {
            let mut source = state?;
            match source.next_chunk(BODY_CHUNK).await {
                Ok(Some(chunk)) => Some((Ok(Frame::data(chunk)), Some(source))),
                Ok(None) => None,
                Err(e) => {
                    let message = e.to_string();
                    *failed.lock().expect("body error slot") = Some(e);
                    Some((Err(std::io::Error::other(message)), None))
                }
            }
        }
    });
    ByteStream::from_body_1_x(http_body_util::StreamBody::new(chunks))
}

/// The SDK's timeouts for a request that may take `attempt`: see
/// [`walship_store::deadline`]. The SDK makes one attempt; the retry policy around it
/// decides about another. The connect timeout is the same for every operation: the SDK
/// keeps one connection pool per connector setting.
fn timeouts(attempt: Duration) -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(deadline::CONNECT)
        .operation_attempt_timeout(attempt)
        .operation_timeout(attempt)
        .build()
}

/// Why the credentials a request needed could not be loaded, when that is why it failed
/// rather than something on its way to the store.
enum CredentialsFailure {
    /// The chain found no identity, or its provider failed in a way that does not name
    /// the credential endpoint.
    NotLoaded,
    /// The credential endpoint (STS, for IRSA) answered, failed or could not be reached:
    /// its kind comes from its answer, as for every other request.
    Endpoint { kind: ErrorKind, detail: String },
}

impl CredentialsFailure {
    fn into_error(self, store: &str, err: &(dyn std::error::Error + 'static)) -> StoreError {
        match self {
            CredentialsFailure::NotLoaded => StoreError::new(
                ErrorKind::Denied,
                store,
                format!(
                    "no AWS credentials could be loaded: {}. With inheritFromIAMRole the pod \
                     needs its identity's environment: IRSA's AWS_ROLE_ARN and \
                     AWS_WEB_IDENTITY_TOKEN_FILE (a service account annotated with \
                     eks.amazonaws.com/role-arn), or an instance role",
                    error_chain(err)
                ),
            ),
            CredentialsFailure::Endpoint { kind, detail } => {
                StoreError::credentials(kind, store, detail)
            }
        }
    }
}

/// Looks through `err`'s sources for a failure to load credentials and, for STS (IRSA's
/// `AssumeRoleWithWebIdentity`), for the answer STS gave: a 5xx or an unreachable STS is
/// the endpoint failing and is retried like any store request; only its 4xx refuses
/// the identity.
fn credentials_failure(err: &(dyn std::error::Error + 'static)) -> Option<CredentialsFailure> {
    use aws_credential_types::provider::error::CredentialsError;
    use aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityError;
    type StsError = aws_sdk_sts::error::SdkError<
        AssumeRoleWithWebIdentityError,
        aws_sdk_sts::config::http::HttpResponse,
    >;
    let mut source = Some(err);
    let mut loading = None;
    while let Some(e) = source {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            if let CredentialsError::ProviderTimedOut(_) = c {
                return Some(CredentialsFailure::Endpoint {
                    kind: ErrorKind::TimedOut,
                    detail: format!("the AWS credentials provider timed out: {}", error_chain(c)),
                });
            }
            loading.get_or_insert(c);
        }
        if let Some(sts) = e.downcast_ref::<StsError>() {
            let (kind, detail) = match sts {
                aws_sdk_sts::error::SdkError::ServiceError(service) => {
                    let status = service.raw().status().as_u16();
                    let code = service.err().code().unwrap_or("");
                    let message = service.err().message().unwrap_or("");
                    (
                        status::kind_of(Request::Token, status, code),
                        format!(
                            "STS answered AssumeRoleWithWebIdentity with HTTP {status} {code}: \
                             {message}"
                        ),
                    )
                }
                aws_sdk_sts::error::SdkError::TimeoutError(_) => (
                    ErrorKind::TimedOut,
                    "STS did not answer AssumeRoleWithWebIdentity in time".to_owned(),
                ),
                aws_sdk_sts::error::SdkError::DispatchFailure(_) => (
                    ErrorKind::Connection,
                    format!("cannot reach STS: {}", error_chain(sts)),
                ),
                _ => (
                    ErrorKind::Response,
                    format!("STS's answer could not be read: {}", error_chain(sts)),
                ),
            };
            return Some(CredentialsFailure::Endpoint { kind, detail });
        }
        source = e.source();
    }
    loading.map(|_| CredentialsFailure::NotLoaded)
}

/// The parts of a raw response that error mapping reads.
trait HttpResponseParts {
    fn status(&self) -> u16;
    fn header(&self, name: &str) -> Option<&str>;
}

impl HttpResponseParts for aws_smithy_runtime_api_shim::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers().get(name)
    }
}

/// `aws-sdk-s3` re-exports the runtime API's response type under this path.
mod aws_smithy_runtime_api_shim {
    pub use aws_sdk_s3::config::http::HttpResponse;
}

fn https_client_trusting(
    bundle: &CaBundle,
) -> Result<aws_sdk_s3::config::SharedHttpClient, S3ConfigError> {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
    // Only the re-encoding of certificates that parsed reaches the SDK, whose trust
    // store panics on a block it cannot decode.
    let context = TlsContext::builder()
        .with_trust_store(TrustStore::default().with_pem_certificate(bundle.pem()))
        .build()
        .map_err(|e| S3ConfigError::BadCaBundle(e.to_string()))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https())
}

fn tagging(tags: &BTreeMap<String, String>) -> Option<String> {
    if tags.is_empty() {
        return None;
    }
    Some(
        tags.iter()
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&"),
    )
}

/// The user metadata S3 returned (without its `x-amz-meta-` prefix), as the store's.
fn metadata_of(map: Option<&std::collections::HashMap<String, String>>) -> Metadata {
    map.map(|m| metadata_from(m.iter().map(|(k, v)| (k, v.clone()))))
        .unwrap_or_default()
}

#[async_trait]
impl Store for S3Store {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn put_create(
        &self,
        key: &str,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<(), StoreError> {
        let len = body.len() as u64;
        self.put_bytes(key, body, Request::Create, || {
            self.put_request(key, len, options)
        })
        .await
    }

    /// Streams the file: each attempt reads it in chunks as it sends, so an upload holds
    /// no copy of the segment.
    async fn put_create_file(
        &self,
        key: &str,
        path: &Path,
        len: u64,
        options: &PutOptions,
    ) -> Result<(), StoreError> {
        let source_err =
            |detail: String| StoreError::source_file(self.describe.clone(), path, &detail);
        let payload_sha256 = match (&options.content_sha256, self.custom_endpoint) {
            (_, false) => None,
            (Some(hash), true) => Some(hash.clone()),
            (None, true) => {
                let owned = path.to_owned();
                let hash = tokio::task::spawn_blocking(move || sha256_of_file(&owned))
                    .await
                    .map_err(|e| source_err(e.to_string()))?
                    .map_err(|e| source_err(e.to_string()))?;
                Some(hash)
            }
        };
        // What the file is checked against as it is sent: the hash declared, or the one
        // just computed to sign it.
        let expected = options.content_sha256.clone().or(payload_sha256.clone());
        let attempt = deadline::for_body(len);
        self.retry
            .run(key, attempt, || async {
                let source =
                    UploadSource::open(&self.describe, path, len, expected.as_deref()).await?;
                let failed = Arc::new(Mutex::new(None));
                let body = streamed(source, failed.clone());
                let mut request = self
                    .put_request(key, len, options)
                    .body(body)
                    .customize()
                    .config_override(
                        aws_sdk_s3::config::Builder::new().timeout_config(timeouts(attempt)),
                    );
                if let Some(hash) = &payload_sha256 {
                    request = request.interceptor(SignPayloadHash(hash.clone()));
                }
                request.send().await.map_err(|e| {
                    // The file's own failure (it changed, it is shorter) is the error, not
                    // the SDK's report that the body failed.
                    match failed.lock().expect("body error slot").take() {
                        Some(source) => source,
                        None => self.map_err(key, Request::Create, attempt, e),
                    }
                })
            })
            .await?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<(Bytes, ObjectInfo), StoreError> {
        self.retry
            .run(key, deadline::for_small_request(), || {
                self.get_once(key, None)
            })
            .await
    }

    async fn put_replace(
        &self,
        key: &str,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<(), StoreError> {
        let len = body.len() as u64;
        self.put_bytes(key, body, Request::Read, || {
            self.put_request_replacing(key, len, options)
        })
        .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        let attempt = deadline::for_body(range.end - range.start);
        self.retry
            .run(key, attempt, || async {
                Ok(self.get_once(key, Some(range.clone())).await?.0)
            })
            .await
    }

    async fn start_multipart(
        &self,
        key: &str,
        options: &PutOptions,
    ) -> Result<Arc<dyn MultipartUpload>, StoreError> {
        let nonce = upload_nonce();
        let attempt = deadline::for_small_request();
        let created = self
            .retry
            .run(key, attempt, || async {
                let mut request = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .set_tagging(tagging(&options.tags))
                    .metadata(UPLOAD_ID_METADATA, &nonce);
                for (k, v) in &options.metadata {
                    request = request.metadata(k, v);
                }
                request = match self.sse {
                    Some(Sse::Aes256) => {
                        request.server_side_encryption(ServerSideEncryption::Aes256)
                    }
                    Some(Sse::AwsKms) => {
                        request.server_side_encryption(ServerSideEncryption::AwsKms)
                    }
                    None => request,
                };
                request
                    .send()
                    .await
                    .map_err(|e| self.map_err(key, Request::Create, attempt, e))
            })
            .await?;
        let Some(upload_id) = created.upload_id() else {
            return Err(StoreError::new(
                ErrorKind::Response,
                &self.describe,
                format!("{key}: CreateMultipartUpload answered without an upload id"),
            ));
        };
        Ok(Arc::new(S3Upload {
            store: self.clone(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            nonce,
            etags: Mutex::new(BTreeMap::new()),
            aborted: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let attempt = deadline::for_small_request();
        let found = self
            .retry
            .run(key, attempt, || async {
                self.client
                    .head_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| self.map_err(key, Request::Read, attempt, e))
            })
            .await;
        match found {
            Ok(out) => Ok(Some(ObjectInfo {
                key: key.to_owned(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                metadata: metadata_of(out.metadata()),
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let attempt = deadline::for_small_request();
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // Each page is one request, retried on its own.
            let page = self
                .retry
                .run(prefix, attempt, || async {
                    self.client
                        .list_objects_v2()
                        .bucket(&self.bucket)
                        .prefix(prefix)
                        .set_max_keys(self.list_page_size)
                        .set_continuation_token(token.clone())
                        .send()
                        .await
                        .map_err(|e| self.map_err(prefix, Request::List, attempt, e))
                })
                .await?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    out.push(ObjectInfo {
                        key: key.to_owned(),
                        size: object.size().unwrap_or(0).max(0) as u64,
                        metadata: Metadata::new(),
                    });
                }
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let attempt = deadline::for_small_request();
        self.retry
            .run(key, attempt, || async {
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| self.map_err(key, Request::Read, attempt, e))
            })
            .await?;
        Ok(())
    }
}

/// One multipart upload: S3's own, completed with `If-None-Match: *`.
struct S3Upload {
    store: S3Store,
    key: String,
    upload_id: String,
    /// Recorded in the object's metadata ([`UPLOAD_ID_METADATA`]): the object found
    /// after a retried complete is this upload's only when it carries this.
    nonce: String,
    /// Each stored part's ETag and length by index, which the complete lists.
    etags: Mutex<BTreeMap<usize, (String, u64)>>,
    /// Set once an abort succeeded: a second abort sends nothing (S3 answers it 404
    /// NoSuchUpload, which counts as done, but s3s-fs answers 403).
    aborted: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for S3Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Upload")
            .field("store", &self.store.describe)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl S3Upload {
    /// Whether the object now under the key is the one this upload completed.
    async fn is_ours(&self) -> Result<bool, StoreError> {
        Ok(self
            .store
            .head(&self.key)
            .await?
            .is_some_and(|info| info.metadata.get(UPLOAD_ID_METADATA) == Some(&self.nonce)))
    }
}

#[async_trait]
impl MultipartUpload for S3Upload {
    async fn put_part(&self, index: usize, body: Bytes) -> Result<(), StoreError> {
        let store = &self.store;
        let attempt = deadline::for_body(body.len() as u64);
        let out = store
            .retry
            .run(&self.key, attempt, || async {
                // An in-memory body: the signer hashes it into the request, so a part
                // damaged on the way is refused.
                store
                    .client
                    .upload_part()
                    .bucket(&store.bucket)
                    .key(&self.key)
                    .upload_id(&self.upload_id)
                    .part_number(index as i32 + 1)
                    .content_length(body.len() as i64)
                    .body(ByteStream::from(body.clone()))
                    .customize()
                    .config_override(
                        aws_sdk_s3::config::Builder::new().timeout_config(timeouts(attempt)),
                    )
                    .send()
                    .await
                    .map_err(|e| store.map_err(&self.key, Request::Create, attempt, e))
            })
            .await?;
        let Some(etag) = out.e_tag() else {
            return Err(StoreError::new(
                ErrorKind::Response,
                &store.describe,
                format!("{}: part {index} was answered without an ETag", self.key),
            ));
        };
        self.etags
            .lock()
            .expect("etags")
            .insert(index, (etag.to_owned(), body.len() as u64));
        Ok(())
    }

    async fn complete(&self, parts: usize) -> Result<(), StoreError> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let store = &self.store;
        let (listed, total): (Vec<CompletedPart>, u64) = {
            let etags = self.etags.lock().expect("etags");
            let mut listed = Vec::with_capacity(parts);
            let mut total = 0;
            for index in 0..parts {
                let Some((etag, len)) = etags.get(&index) else {
                    return Err(StoreError::new(
                        ErrorKind::Rejected,
                        &store.describe,
                        format!("{}: part {index} of {parts} was never stored", self.key),
                    ));
                };
                listed.push(
                    CompletedPart::builder()
                        .part_number(index as i32 + 1)
                        .e_tag(etag)
                        .build(),
                );
                total += len;
            }
            (listed, total)
        };
        // Servers that ignore `If-None-Match` on the complete (s3s-fs, older MinIO)
        // would replace an object created meanwhile; this check narrows that to the
        // moment between it and the complete. S3 itself checks atomically.
        if store.head(&self.key).await?.is_some() {
            return Err(StoreError::already_exists(&store.describe, &self.key));
        }
        // S3 may take a while to join a large object's parts before it answers.
        let attempt = deadline::for_body(total);
        let completed = store
            .retry
            .run(&self.key, attempt, || async {
                store
                    .client
                    .complete_multipart_upload()
                    .bucket(&store.bucket)
                    .key(&self.key)
                    .upload_id(&self.upload_id)
                    .if_none_match("*")
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(listed.clone()))
                            .build(),
                    )
                    .customize()
                    .config_override(
                        aws_sdk_s3::config::Builder::new().timeout_config(timeouts(attempt)),
                    )
                    .send()
                    .await
                    .map_err(|e| store.map_err(&self.key, Request::Create, attempt, e))
            })
            .await;
        match completed {
            Ok(_) => Ok(()),
            // A retry after an attempt that succeeded unseen (its answer lost) finds the
            // key taken (412) or the upload gone (S3's NoSuchUpload; s3s-fs answers
            // 403), and an attempt that timed out may have succeeded too: whatever the
            // last answer, the upload is complete if the object under the key is this
            // upload's. Only the nonce says so; any other object is not ours.
            Err(e) => match self.is_ours().await {
                Ok(true) => Ok(()),
                _ => Err(e),
            },
        }
    }

    async fn abort(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        if self.aborted.load(Ordering::Acquire) {
            return Ok(());
        }
        let store = &self.store;
        let attempt = deadline::for_small_request();
        let aborted = store
            .retry
            .run(&self.key, attempt, || async {
                store
                    .client
                    .abort_multipart_upload()
                    .bucket(&store.bucket)
                    .key(&self.key)
                    .upload_id(&self.upload_id)
                    .send()
                    .await
                    .map_err(|e| store.map_err(&self.key, Request::Create, attempt, e))
            })
            .await;
        match aborted {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => {
                self.aborted.store(true, Ordering::Release);
                Ok(())
            }
        }
    }
}

/// The length a `Content-Range: bytes <first>-<last>/<size>` answer carries.
fn content_range_len(header: &str) -> Option<u64> {
    let (first, last) = header
        .strip_prefix("bytes ")?
        .split_once('/')?
        .0
        .split_once('-')?;
    let (first, last): (u64, u64) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    last.checked_sub(first)?.checked_add(1)
}

impl S3Store {
    /// One GetObject (of `range` only, when given), its body included.
    async fn get_once(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(Bytes, ObjectInfo), StoreError> {
        let ranged = range.is_some();
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range.map(|r| format!("bytes={}-{}", r.start, r.end - 1)))
            .send()
            .await
        {
            Ok(out) => out,
            // 416: the range starts at or past the end, so nothing of it is there.
            Err(SdkError::ServiceError(e)) if ranged && e.raw().status().as_u16() == 416 => {
                let info = ObjectInfo {
                    key: key.to_owned(),
                    size: 0,
                    metadata: Metadata::new(),
                };
                return Ok((Bytes::new(), info));
            }
            Err(e) => {
                return Err(self.map_err(key, Request::Read, deadline::for_small_request(), e));
            }
        };
        let metadata = metadata_of(out.metadata());
        // A range's length is what `Content-Range` says was sent; a `Content-Length`
        // cut short on the way agrees with a body cut short, this does not.
        let expected = out
            .content_range()
            .and_then(content_range_len)
            .or_else(|| out.content_length().map(|l| l.max(0) as u64));
        // The SDK's timeouts end with the response's headers; the body gets its own
        // deadline, sized by its announced length.
        let body_deadline = deadline::for_body(expected.unwrap_or(0));
        let body = match tokio::time::timeout(body_deadline, read_body(out.body, expected)).await {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => {
                return Err(StoreError::new(
                    ErrorKind::Response,
                    &self.describe,
                    format!("{key}: reading the object failed: {}", error_chain(&e)),
                )
                .with_source(e));
            }
            Err(_) => {
                return Err(StoreError::timed_out(
                    &self.describe,
                    format!("{key} (reading the object's body)"),
                    body_deadline,
                ));
            }
        };
        if let Some(expected) = expected
            && expected != body.len() as u64
        {
            return Err(StoreError::new(
                ErrorKind::Response,
                &self.describe,
                format!(
                    "{key}: got {} bytes but the object is {expected} bytes long",
                    body.len()
                ),
            ));
        }
        let info = ObjectInfo {
            key: key.to_owned(),
            size: body.len() as u64,
            metadata,
        };
        Ok((body, info))
    }
}

/// Has the signer put `self.0`, the SHA-256 of a streamed body, into the request
/// (`x-amz-content-sha256`) instead of `UNSIGNED-PAYLOAD`: the server then hashes what
/// arrives and refuses a mismatch.
#[derive(Debug)]
struct SignPayloadHash(String);

impl aws_sdk_s3::config::Intercept for SignPayloadHash {
    fn name(&self) -> &'static str {
        "SignPayloadHash"
    }

    fn modify_before_signing(
        &self,
        _context: &mut aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        cfg.interceptor_state()
            .store_put(aws_runtime::auth::PayloadSigningOverride::Precomputed(
                self.0.clone(),
            ));
        Ok(())
    }
}

/// The SHA-256 (hex) of a file, read in chunks.
fn sha256_of_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(hex::encode(hasher.finalize())),
            n => hasher.update(&buf[..n]),
        }
    }
}

/// A response body read into one buffer sized by its announced length: the SDK's
/// `collect` keeps every segment and then copies them into one, twice the body at the
/// peak (a restore holds `jobs` 16 MiB ranges at once).
async fn read_body(
    mut body: aws_sdk_s3::primitives::ByteStream,
    expected: Option<u64>,
) -> Result<Bytes, aws_sdk_s3::primitives::ByteStreamError> {
    // A lying or huge length must not reserve memory up front beyond what a read needs.
    const MAX_RESERVE: u64 = 64 << 20;
    let mut buf = bytes::BytesMut::with_capacity(expected.unwrap_or(0).min(MAX_RESERVE) as usize);
    while let Some(chunk) = body.try_next().await? {
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_url_encoded() {
        let mut tags = BTreeMap::new();
        tags.insert("backupRetentionPolicy".to_owned(), "expire".to_owned());
        tags.insert("a b".to_owned(), "c&d=e".to_owned());
        assert_eq!(
            tagging(&tags).unwrap(),
            "a%20b=c%26d%3De&backupRetentionPolicy=expire"
        );
        assert_eq!(tagging(&BTreeMap::new()), None);
    }

    #[test]
    fn a_ranges_length_is_read_from_its_content_range() {
        assert_eq!(
            content_range_len("bytes 0-16777215/51589120"),
            Some(16 << 20)
        );
        assert_eq!(content_range_len("bytes 5-5/6"), Some(1));
        // Not a range S3 would answer: the Content-Length decides.
        assert_eq!(content_range_len("bytes */6"), None);
        assert_eq!(content_range_len("bytes 9-3/6"), None);
        assert_eq!(content_range_len("items 0-1/2"), None);
    }
}
