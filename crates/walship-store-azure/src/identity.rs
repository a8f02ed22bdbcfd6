//! AKS workload identity, with the projected token file read again for every exchange;
//! and [`HeldToken`], which keeps any credential's last token while its refresh fails.

use super::*;

/// AKS workload identity: exchanges the projected service-account token for an Azure AD
/// token. Unlike the SDK's `WorkloadIdentityCredential`, which reads the token file once,
/// this reads it again for every exchange, because the kubelet rotates it (hourly by
/// default) and a daemon outlives any single copy.
pub(crate) struct WorkloadIdentity {
    http: Arc<dyn azure_core::HttpClient>,
    pub(crate) authority: Url,
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
    pub(crate) fn from_env(
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

    pub(crate) async fn exchange(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
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
                "the federated token exchange with Azure AD failed",
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

/// A token credential whose last token outlives a failed refresh until it expires.
///
/// Azure AD tokens are refreshed minutes before they expire ([`TOKEN_REFRESH_MARGIN`];
/// azure_identity's own credentials keep theirs in a cache of their own), and a refresh
/// that fails there is an error: a few minutes of Azure AD or the instance metadata
/// service failing would stop archiving while the token in hand still signs. Behind
/// this a failed refresh hands back the last token for the same scopes while it has
/// [`STILL_VALID_FOR`](walship_credentials::STILL_VALID_FOR) left, with a warning, and
/// asks again at most every [`HeldToken::ASK_AGAIN_AFTER`] meanwhile, so an outage
/// is not met with a token request per blob request. Past that, the failure, which
/// names Azure AD.
pub(crate) struct HeldToken {
    inner: Arc<dyn TokenCredential>,
    held: std::sync::Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// The last token handed out and the scopes it was for.
    last: Option<(String, AccessToken)>,
    /// When the last refresh failed, while the last token is handed out instead.
    failed_at: Option<std::time::Instant>,
}

impl HeldToken {
    /// How long a failed refresh is not tried again while the last token is valid.
    pub(crate) const ASK_AGAIN_AFTER: Duration = Duration::from_secs(5);

    pub(crate) fn new(inner: Arc<dyn TokenCredential>) -> HeldToken {
        HeldToken {
            inner,
            held: std::sync::Mutex::new(Held::default()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last token for `scopes`, if it still signs, and how long it has left.
    fn still_valid(&self, scopes: &str) -> Option<(AccessToken, Duration)> {
        let held = self.held();
        let (for_scopes, token) = held.last.as_ref()?;
        let left = SystemTime::from(token.expires_on)
            .duration_since(SystemTime::now())
            .ok()?;
        (for_scopes == scopes && left >= walship_credentials::STILL_VALID_FOR)
            .then(|| (token.clone(), left))
    }
}

impl fmt::Debug for HeldToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldToken").finish_non_exhaustive()
    }
}

#[async_trait]
impl TokenCredential for HeldToken {
    async fn get_token(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        let wanted = scopes.join(" ");
        let resting = self
            .held()
            .failed_at
            .is_some_and(|at| at.elapsed() < Self::ASK_AGAIN_AFTER);
        if resting && let Some((token, _)) = self.still_valid(&wanted) {
            return Ok(token);
        }
        match self.inner.get_token(scopes).await {
            Ok(token) => {
                let mut held = self.held();
                held.last = Some((wanted, token.clone()));
                held.failed_at = None;
                Ok(token)
            }
            Err(e) => match self.still_valid(&wanted) {
                Some((token, left)) => {
                    tracing::warn!(
                        "refreshing the Azure AD token failed ({}); using the current one until \
                         it expires in {} s",
                        error_chain(&e),
                        left.as_secs()
                    );
                    self.held().failed_at = Some(std::time::Instant::now());
                    Ok(token)
                }
                None => Err(e),
            },
        }
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        self.inner.clear_cache().await
    }
}

#[cfg(test)]
mod held_tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Hands out tokens valid for `valid_for` while `failing` is off.
    #[derive(Debug)]
    struct Endpoint {
        valid_for: Duration,
        failing: std::sync::atomic::AtomicBool,
        asked: AtomicU32,
    }

    #[async_trait]
    impl TokenCredential for Endpoint {
        async fn get_token(&self, _: &[&str]) -> azure_core::Result<AccessToken> {
            let n = self.asked.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err(azure_core::Error::message(
                    ErrorKind::Credential,
                    "the token endpoint answered HTTP 503",
                ));
            }
            Ok(AccessToken::new(
                format!("token-{n}"),
                (SystemTime::now() + self.valid_for).into(),
            ))
        }

        async fn clear_cache(&self) -> azure_core::Result<()> {
            Ok(())
        }
    }

    fn held(valid_for: Duration) -> (Arc<Endpoint>, HeldToken) {
        let endpoint = Arc::new(Endpoint {
            valid_for,
            failing: false.into(),
            asked: AtomicU32::new(0),
        });
        (endpoint.clone(), HeldToken::new(endpoint))
    }

    const SCOPES: &[&str] = &["https://storage.azure.com/.default"];

    #[tokio::test]
    async fn a_failed_refresh_hands_back_the_valid_token_and_asks_again_only_after_a_rest() {
        let (endpoint, held) = held(Duration::from_secs(120));
        let first = held.get_token(SCOPES).await.unwrap();
        endpoint.failing.store(true, Ordering::SeqCst);
        let kept = held.get_token(SCOPES).await.unwrap();
        assert_eq!(kept.token.secret(), first.token.secret());
        assert_eq!(endpoint.asked.load(Ordering::SeqCst), 2);
        // Resting: the endpoint is not asked again for every request.
        for _ in 0..10 {
            held.get_token(SCOPES).await.unwrap();
        }
        assert_eq!(endpoint.asked.load(Ordering::SeqCst), 2);
        // Another scope has no token in hand: the failure.
        let other = held.get_token(&["https://other/.default"]).await;
        assert!(other.is_err());
        // Answering again: a fresh token, and no more resting.
        endpoint.failing.store(false, Ordering::SeqCst);
        let fresh = held.get_token(&["https://other/.default"]).await.unwrap();
        assert_ne!(fresh.token.secret(), first.token.secret());
    }

    #[tokio::test]
    async fn a_token_about_to_expire_is_not_handed_back_and_the_failure_says_why() {
        let (endpoint, held) = held(walship_credentials::STILL_VALID_FOR / 2);
        held.get_token(SCOPES).await.unwrap();
        endpoint.failing.store(true, Ordering::SeqCst);
        let failed = held.get_token(SCOPES).await.unwrap_err();
        assert!(failed.to_string().contains("HTTP 503"), "{failed}");
    }
}
