//! Service-account tokens: the JWT-bearer grant (RFC 7523) against the key file's
//! `token_uri`, asked once per call.
//!
//! gcp_auth parses the key and signs the assertion (its `Signer`); the exchange itself is
//! made here because gcp_auth's own client retries every token request five times, and
//! the store's retry policy already retries each request, token included: the two
//! nested made up to twenty token requests for one failing put, and gcp_auth's error
//! for a failing endpoint does not keep the status, so a 503 read as a refused key.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use gcp_auth::{CustomServiceAccount, Token, TokenProvider};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::auth::TokenEndpointError;

/// A token is replaced this long before it expires.
const REFRESH_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// How long an assertion is valid: Google accepts at most an hour.
const ASSERTION_LIFETIME: i64 = 3600;

/// Tokens for one service account's key, cached until [`REFRESH_MARGIN`] before they
/// expire (and, while the token endpoint fails, until `auth::still_signs` says no); one
/// request at a time refreshes.
pub(crate) struct ServiceAccount {
    account: CustomServiceAccount,
    client_email: String,
    token_uri: String,
    http: reqwest::Client,
    cache: Mutex<Option<(String, Arc<Token>)>>,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// The token endpoint's answer to a refused grant.
#[derive(Deserialize)]
struct OAuthError {
    error: Option<String>,
    error_description: Option<String>,
}

impl ServiceAccount {
    /// `account` is the parsed key; `client_email` and `token_uri` come from the same
    /// file and were checked by the caller.
    pub(crate) fn new(
        account: CustomServiceAccount,
        client_email: &str,
        token_uri: &str,
        http: reqwest::Client,
    ) -> ServiceAccount {
        ServiceAccount {
            account,
            client_email: client_email.to_owned(),
            token_uri: token_uri.to_owned(),
            http,
            cache: Mutex::new(None),
        }
    }

    /// The signed assertion for `scopes`, valid from now for an hour.
    fn assertion(&self, scopes: &str) -> Result<String, TokenEndpointError> {
        let now = Utc::now().timestamp();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": scopes,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{claims}");
        let signature =
            self.account
                .signer()
                .sign(signed.as_bytes())
                .map_err(|e| TokenEndpointError {
                    kind: walship_store::ErrorKind::Rejected,
                    detail: format!("the key cannot sign the token request: {e}"),
                })?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    async fn fetch(&self, scopes: &str) -> Result<Token, TokenEndpointError> {
        let assertion = self.assertion(scopes)?;
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ];
        let body = form_urlencoded(&form);
        let response = self
            .http
            .post(&self.token_uri)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                TokenEndpointError::unreachable(format!(
                    "cannot reach the token endpoint {}: {}",
                    self.token_uri,
                    walship_store::error_chain(&e)
                ))
            })?;
        let status = response.status();
        let date = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|d| d.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await.map_err(|e| {
            TokenEndpointError::unreachable(format!(
                "reading the token endpoint's answer failed: {}",
                walship_store::error_chain(&e)
            ))
        })?;
        if !status.is_success() {
            // OAuth's error and description name the problem (invalid_grant, "Invalid
            // JWT Signature."); they never hold the assertion or a token.
            let reason = serde_json::from_slice::<OAuthError>(&bytes)
                .ok()
                .map(|e| {
                    [e.error, e.error_description]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(": ")
                })
                .filter(|r| !r.is_empty());
            return Err(TokenEndpointError::answered_at(
                status.as_u16(),
                date.as_deref(),
                format!(
                    "the token endpoint {} answered HTTP {}{}",
                    self.token_uri,
                    status.as_u16(),
                    reason.map(|r| format!(" ({r})")).unwrap_or_default()
                ),
            ));
        }
        serde_json::from_slice::<Token>(&bytes).map_err(|e| {
            TokenEndpointError::unreachable(format!(
                "the token endpoint's answer is not the expected JSON (access_token, \
                 expires_in): {:?} at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }
}

/// `application/x-www-form-urlencoded` for the two fields of the grant.
fn form_urlencoded(form: &[(&str, &str)]) -> String {
    use percent_encoding::utf8_percent_encode;
    use walship_secret::ALL_BUT_UNRESERVED;
    form.iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, ALL_BUT_UNRESERVED),
                utf8_percent_encode(v, ALL_BUT_UNRESERVED)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[async_trait]
impl TokenProvider for ServiceAccount {
    async fn token(&self, scopes: &[&str]) -> Result<Arc<Token>, gcp_auth::Error> {
        let wanted = scopes.join(" ");
        let mut cache = self.cache.lock().await;
        if let Some((cached_scopes, token)) = cache.as_ref()
            && *cached_scopes == wanted
            && token.expires_at() - REFRESH_MARGIN > Utc::now()
        {
            return Ok(token.clone());
        }
        let token = match self.fetch(&wanted).await {
            Ok(token) => Arc::new(token),
            // The endpoint failing must not stop archiving while the token in hand
            // still signs: it is kept until it expires.
            Err(e) => match cache.as_ref() {
                Some((cached_scopes, token))
                    if *cached_scopes == wanted && crate::auth::still_signs(token) =>
                {
                    tracing::warn!(
                        expires_at = %token.expires_at(),
                        "cannot refresh the access token ({e}); using the current one until it expires"
                    );
                    return Ok(token.clone());
                }
                _ => {
                    return Err(gcp_auth::Error::Other(
                        "no token from the service account's token endpoint",
                        Box::new(e),
                    ));
                }
            },
        };
        *cache = Some((wanted, token.clone()));
        Ok(token)
    }

    async fn project_id(&self) -> Result<Arc<str>, gcp_auth::Error> {
        self.account
            .project_id()
            .map(Arc::from)
            .ok_or(gcp_auth::Error::Str(
                "the service-account key names no project_id",
            ))
    }
}
