//! AKS workload identity, with the projected token file read again for every exchange.

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
