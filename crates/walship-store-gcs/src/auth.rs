//! Where access tokens come from: a service-account JSON key, or the GKE metadata server.
//!
//! Both are gcp_auth [`TokenProvider`]s, so the store asks one trait for a token before
//! each request and never sees how it was made. For a key, gcp_auth parses it and signs
//! the JWT assertion, which `service_account.rs` posts to the key file's `token_uri` (as
//! Google's libraries do, which is also how tests point it at a local token endpoint)
//! once per call: gcp_auth's own client retries five times inside the store's retry
//! policy. gcp_auth's metadata provider hard-codes `metadata.google.internal`, so
//! [`MetadataServer`] implements the trait itself and honours `GCE_METADATA_HOST`. Both
//! ask through the store's HTTP client (its bounds, `endpointCA`), and both fail with a
//! [`TokenEndpointError`] whose kind comes from the one status mapping.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use gcp_auth::{CustomServiceAccount, Token, TokenProvider};
use serde::Deserialize;
use tokio::sync::Mutex;
use walship_credentials::GoogleCredentialSource;
use walship_store::status::{self, Request};
use walship_store::{ErrorKind, StoreError};

use crate::GcsConfigError;
use crate::service_account::ServiceAccount;

/// The metadata server's name inside GCE and GKE.
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";
/// A metadata-server token is replaced this long before it expires. The GKE metadata
/// server itself hands out tokens with at least five minutes left.
pub const METADATA_REFRESH_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Whether a cached token may still be used when its refresh failed: a token endpoint
/// failing must not stop archiving while the token in hand signs, so it is kept until
/// five seconds before it expires (enough for one request).
pub(crate) fn still_signs(token: &Token) -> bool {
    token.expires_at() - chrono::TimeDelta::seconds(5) > Utc::now()
}

/// The fields of a key file walship checks before handing it to gcp_auth, so that a
/// wrong file is reported by what is wrong with it.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    token_uri: Option<String>,
}

/// The token provider of `auth`: a service-account key (`applicationCredentials`), or
/// GKE Workload Identity through the metadata server (`gkeEnvironment: true`;
/// `GCE_METADATA_HOST`, else `metadata.google.internal`).
pub(crate) fn provider(
    auth: &GoogleCredentialSource,
    http: reqwest::Client,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn TokenProvider>, GcsConfigError> {
    match auth {
        // The key leaves its Secret only here, where gcp_auth signs with it.
        GoogleCredentialSource::ServiceAccountKey(json) => service_account(json.expose(), http),
        GoogleCredentialSource::GkeWorkloadIdentity => {
            let host = var("GCE_METADATA_HOST")
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| DEFAULT_METADATA_HOST.to_owned());
            Ok(Arc::new(MetadataServer::new(&host, http)?))
        }
    }
}

fn service_account(
    json: &str,
    http: reqwest::Client,
) -> Result<Arc<dyn TokenProvider>, GcsConfigError> {
    let bad = |problem: String| GcsConfigError::ServiceAccountKey(problem);
    // serde_json's syntax errors give a position, never the text around it.
    let key: KeyFile = serde_json::from_str(json).map_err(|e| {
        bad(format!(
            "is not a service-account JSON key (line {}, column {}: {}); expected the JSON \
             file downloaded for a service account's key",
            e.line(),
            e.column(),
            match e.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof =>
                    "not valid JSON",
                _ => "not a JSON object of strings",
            }
        ))
    })?;
    match key.kind.as_deref() {
        Some("service_account") => {}
        Some(other) => {
            return Err(bad(format!(
                "the key file's type is {other:?}; expected \"service_account\" (a key \
                 created for a service account; gcloud user credentials and external \
                 account configurations are not supported)"
            )));
        }
        None => {
            return Err(bad(
                "the key file has no \"type\"; expected \"service_account\"".to_owned(),
            ));
        }
    }
    for (name, value) in [
        ("client_email", &key.client_email),
        ("private_key", &key.private_key),
        ("token_uri", &key.token_uri),
    ] {
        if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
            return Err(bad(format!(
                "the key file has no {name:?}; expected the complete JSON key as downloaded"
            )));
        }
    }
    let token_uri = key.token_uri.as_deref().unwrap_or_default();
    match reqwest::Url::parse(token_uri) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
        _ => {
            return Err(bad(format!(
                "the key file's token_uri {token_uri:?} is not an http(s) URL; expected \
                 https://oauth2.googleapis.com/token"
            )));
        }
    }
    // gcp_auth's errors here name the problem ("failed to parse PKCS#8 RSA key pair",
    // "invalid private key in credentials"), never the key.
    let account = CustomServiceAccount::from_json(json).map_err(|e| match e {
        // Building the account also builds gcp_auth's HTTPS client, which loads the
        // system's root certificates: that failure is not the key's fault.
        gcp_auth::Error::Io(..) => bad(format!(
            "the token client cannot be built ({}); install the system CA certificates \
             (ca-certificates)",
            walship_store::error_chain(&e)
        )),
        _ => bad(format!(
            "the key file's private_key cannot be used ({e}); expected the PEM \"-----BEGIN \
             PRIVATE KEY-----\" RSA key of the downloaded file"
        )),
    })?;
    Ok(Arc::new(ServiceAccount::new(
        account,
        key.client_email.as_deref().unwrap_or_default(),
        token_uri,
        http,
    )))
}

// ---------------------------------------------------------------------------------------
// The metadata server

/// GKE Workload Identity (or a GCE instance's service account): tokens from the metadata
/// server, asked with `Metadata-Flavor: Google` and accepted only from a server that
/// answers with the same header. The token is cached and replaced
/// [`METADATA_REFRESH_MARGIN`] before it expires; one request at a time refreshes it.
pub struct MetadataServer {
    http: reqwest::Client,
    base: String,
    cache: Mutex<Option<Arc<Token>>>,
}

impl fmt::Debug for MetadataServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataServer")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Why a token endpoint (the metadata server, a key's `token_uri`) gave no token: the
/// kind its answer maps to (a 4xx refuses the identity; a 5xx, a throttle or no answer
/// is the endpoint failing) and what happened.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct TokenEndpointError {
    pub kind: ErrorKind,
    pub detail: String,
}

impl TokenEndpointError {
    /// The endpoint answered `status`.
    pub(crate) fn answered(status: u16, detail: String) -> TokenEndpointError {
        TokenEndpointError {
            kind: status::kind_of(Request::Token, status, ""),
            detail,
        }
    }

    /// The endpoint answered `status` at `date` (its `Date` header): a refusal from an
    /// endpoint whose clock is far from this machine's is clock skew. Google's token
    /// endpoint refuses an assertion whose `iat` and `exp` (this machine's clock) are
    /// out of its time with a plain `400 invalid_grant`.
    pub(crate) fn answered_at(
        status: u16,
        date: Option<&str>,
        detail: String,
    ) -> TokenEndpointError {
        let clock = status::clock_offset(date, std::time::SystemTime::now());
        let kind = status::with_clock(status::kind_of(Request::Token, status, ""), clock);
        let detail = match (kind, clock) {
            (ErrorKind::ClockSkew, Some(clock)) => format!("{detail}; {clock}"),
            _ => detail,
        };
        TokenEndpointError { kind, detail }
    }

    /// No usable answer: the endpoint could not be reached, or its answer not read.
    pub(crate) fn unreachable(detail: String) -> TokenEndpointError {
        TokenEndpointError {
            kind: ErrorKind::Connection,
            detail,
        }
    }
}

impl MetadataServer {
    /// `host` is `GCE_METADATA_HOST`'s form: `host[:port]`.
    pub fn new(host: &str, http: reqwest::Client) -> Result<MetadataServer, GcsConfigError> {
        let base = format!("http://{host}/computeMetadata/v1");
        match reqwest::Url::parse(&base) {
            Ok(url)
                if url.host_str().is_some_and(|h| !h.is_empty())
                    && url.path() == "/computeMetadata/v1" => {}
            _ => {
                return Err(GcsConfigError::Metadata(format!(
                    "the metadata host {host:?} (GCE_METADATA_HOST) is not a HOST[:PORT]"
                )));
            }
        }
        Ok(MetadataServer {
            http,
            base,
            cache: Mutex::new(None),
        })
    }

    async fn fetch(&self, path: &str) -> Result<bytes::Bytes, TokenEndpointError> {
        let url = format!("{}/{path}", self.base);
        let response = self
            .http
            .get(&url)
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .map_err(|e| {
                TokenEndpointError::unreachable(format!(
                    "cannot reach the metadata server at {}: {}",
                    self.base,
                    walship_store::error_chain(&e)
                ))
            })?;
        let status = response.status();
        let flavored = response
            .headers()
            .get("Metadata-Flavor")
            .is_some_and(|v| v.as_bytes() == b"Google");
        if !status.is_success() {
            return Err(TokenEndpointError::answered(
                status.as_u16(),
                format!(
                    "the metadata server at {} answered HTTP {} for {path}; on GKE, check that \
                     the Kubernetes service account is bound to a Google service account \
                     (iam.gke.io/gcp-service-account)",
                    self.base,
                    status.as_u16()
                ),
            ));
        }
        if !flavored {
            return Err(TokenEndpointError::unreachable(format!(
                "{} answered without \"Metadata-Flavor: Google\": not a metadata server",
                self.base
            )));
        }
        response.bytes().await.map_err(|e| {
            TokenEndpointError::unreachable(format!(
                "reading the metadata server's answer failed: {}",
                walship_store::error_chain(&e)
            ))
        })
    }

    async fn fetch_token(&self) -> Result<Token, TokenEndpointError> {
        let body = self
            .fetch("instance/service-accounts/default/token")
            .await?;
        serde_json::from_slice::<Token>(&body).map_err(|e| {
            TokenEndpointError::unreachable(format!(
                "the metadata server's token answer is not the expected JSON \
                 (access_token, expires_in): {}",
                e.classify_message()
            ))
        })
    }
}

/// serde_json's message without the input it may quote (an access token, here).
trait ClassifyMessage {
    fn classify_message(&self) -> String;
}

impl ClassifyMessage for serde_json::Error {
    fn classify_message(&self) -> String {
        format!(
            "{:?} at line {} column {}",
            self.classify(),
            self.line(),
            self.column()
        )
    }
}

fn metadata_error(err: TokenEndpointError) -> gcp_auth::Error {
    gcp_auth::Error::Other("no token from the GKE metadata server", Box::new(err))
}

#[async_trait]
impl TokenProvider for MetadataServer {
    async fn token(&self, _scopes: &[&str]) -> Result<Arc<Token>, gcp_auth::Error> {
        let mut cache = self.cache.lock().await;
        if let Some(token) = cache.as_ref()
            && token.expires_at() - METADATA_REFRESH_MARGIN > Utc::now()
        {
            return Ok(token.clone());
        }
        let token = match self.fetch_token().await {
            Ok(token) => Arc::new(token),
            Err(e) => match cache.as_ref() {
                Some(token) if still_signs(token) => {
                    tracing::warn!(
                        expires_at = %token.expires_at(),
                        "cannot refresh the access token from the metadata server ({e}); \
                         using the current one until it expires"
                    );
                    return Ok(token.clone());
                }
                _ => return Err(metadata_error(e)),
            },
        };
        *cache = Some(token.clone());
        Ok(token)
    }

    async fn project_id(&self) -> Result<Arc<str>, gcp_auth::Error> {
        let body = self
            .fetch("project/project-id")
            .await
            .map_err(metadata_error)?;
        let text = String::from_utf8_lossy(&body).trim().to_owned();
        Ok(Arc::from(text))
    }
}

// ---------------------------------------------------------------------------------------
// Errors

/// Maps a token failure onto the store's error kinds: the endpoint's answer decides (a
/// 4xx refuses the identity, anything else is the endpoint failing), and a failure
/// that is not the endpoint's (a key that cannot sign) is the configuration's.
pub(crate) fn classify_token_error(store: &str, key: &str, err: &gcp_auth::Error) -> StoreError {
    let detail = format!(
        "{key}: cannot obtain a Google access token: {}",
        walship_store::error_chain(err)
    );
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(t) = e.downcast_ref::<TokenEndpointError>() {
            return StoreError::credentials(t.kind, store, detail);
        }
        source = e.source();
    }
    StoreError::new(ErrorKind::Rejected, store, detail)
}
