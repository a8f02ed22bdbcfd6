//! Turning the configuration into an endpoint, an account and credentials: connection
//! strings, shared keys, SAS tokens, workload identity, the default chain, and the HTTP
//! client that trusts `endpointCA`.

use super::*;

pub(crate) fn check_container_name(name: &str) -> Result<(), AzureConfigError> {
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

/// The HTTP client of every Azure request (blobs and Azure AD tokens): walship-store's
/// (a bounded connect, where the SDK's default client has no timeout at all, and the
/// `endpointCA` certificates, already parsed, added to the public roots).
pub(crate) fn http_client(
    ca: Option<&CaBundle>,
) -> Result<Arc<dyn azure_core::HttpClient>, AzureConfigError> {
    let client = walship_store::http::client_builder(ca)
        .map_err(AzureConfigError::EndpointCa)?
        // Like the SDK's own client: no idle pooled connections, which can hang in hyper
        // (hyperium/hyper#2312).
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| {
            AzureConfigError::EndpointCa(format!(
                "an HTTP client with this CA cannot be built: {e}"
            ))
        })?;
    Ok(Arc::new(client))
}

/// The blob requests' transport: `inner`, except that an error answer carrying a
/// `Retry-After`, or a `Date` further from this machine's clock than
/// [`walship_store::status::CLOCK_TOLERANCE`], becomes the SDK's error for that answer
/// with what the headers said attached ([`ErrorAnswer`]), since the SDK's own error
/// keeps no header a caller can read. The one retry layer then waits as long as the
/// service asked, and a refusal from a server whose clock is far off is named as clock
/// skew (Azure answers a request signed too long ago with its plain
/// `AuthenticationFailed`).
#[derive(Debug)]
pub(crate) struct KeepsAnswerHeaders(pub(crate) Arc<dyn azure_core::HttpClient>);

/// What an error answer's headers said, attached to the SDK's error by
/// [`KeepsAnswerHeaders`] and read back by `errors::classify`.
#[derive(Debug)]
pub(crate) struct ErrorAnswer {
    /// The wait its `Retry-After` asked for.
    pub(crate) wait: Option<std::time::Duration>,
    /// How far the server's clock (its `Date`) was from this machine's, when further
    /// than the tolerance.
    pub(crate) clock: Option<walship_store::status::ClockOffset>,
    status: u16,
}

impl ErrorAnswer {
    #[cfg(test)]
    pub(crate) fn for_test(
        wait: Option<std::time::Duration>,
        clock: Option<walship_store::status::ClockOffset>,
        status: u16,
    ) -> ErrorAnswer {
        ErrorAnswer {
            wait,
            clock,
            status,
        }
    }
}

impl std::fmt::Display for ErrorAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(wait) = self.wait {
            write!(f, ", retry after {wait:?}")?;
        }
        if let Some(clock) = self.clock {
            write!(f, "; {clock}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ErrorAnswer {}

#[async_trait::async_trait]
impl azure_core::HttpClient for KeepsAnswerHeaders {
    async fn execute_request(
        &self,
        request: &azure_core::Request,
    ) -> azure_core::Result<azure_core::Response> {
        let response = self.0.execute_request(request).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers();
        let wait = walship_store::status::retry_after(
            headers.get_optional_str(&azure_core::headers::RETRY_AFTER),
        );
        let clock = walship_store::status::clock_offset(
            headers.get_optional_str(&azure_core::headers::DATE),
            std::time::SystemTime::now(),
        )
        .filter(|offset| offset.is_skew());
        if wait.is_none() && clock.is_none() {
            return Ok(response);
        }
        let (status, headers, body) = response.deconstruct();
        let body = body.collect().await.unwrap_or_default();
        let kind = azure_core::error::ErrorKind::http_response_from_parts(status, &headers, &body);
        Err(azure_core::Error::new(
            kind,
            ErrorAnswer {
                wait,
                clock,
                status: u16::from(status),
            },
        ))
    }
}

pub(crate) fn resolve(
    config: &AzureStoreConfig,
    http: &Arc<dyn azure_core::HttpClient>,
) -> Result<Resolved, AzureConfigError> {
    match &config.auth {
        AzureCredentialSource::ConnectionString(text) => {
            resolve_connection_string(config, text.expose())
        }
        AzureCredentialSource::SharedKey { account, key } => {
            let key = key.expose();
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
        AzureCredentialSource::Sas { account, token } => {
            let account = pick_account(account, &config.account)?;
            let (credentials, secrets) =
                sas_credentials(token.expose()).map_err(AzureConfigError::SasToken)?;
            Ok(Resolved {
                endpoint: endpoint_or_public(&config.endpoint, &account)?,
                credentials,
                account,
                secrets,
            })
        }
        AzureCredentialSource::WorkloadIdentity => {
            let account = pick_account("", &config.account)?;
            let credential =
                WorkloadIdentity::from_env(&|name| std::env::var(name).ok(), http.clone())
                    .map_err(AzureConfigError::WorkloadIdentity)?;
            Ok(Resolved {
                endpoint: endpoint_or_public(&config.endpoint, &account)?,
                credentials: StorageCredentials::token_credential(Arc::new(HeldToken::new(
                    Arc::new(credential),
                ))),
                account,
                secrets: Vec::new(),
            })
        }
        AzureCredentialSource::DefaultCredential => {
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
                credentials: StorageCredentials::token_credential(Arc::new(HeldToken::new(
                    credential,
                ))),
                account,
                secrets: Vec::new(),
            })
        }
    }
}

pub(crate) fn resolve_connection_string(
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
pub(crate) fn connection_string_problem(text: &str) -> String {
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

pub(crate) fn pick_account(
    from_credentials: &str,
    from_config: &str,
) -> Result<String, AzureConfigError> {
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

pub(crate) fn sas_credentials(token: &str) -> Result<(StorageCredentials, Vec<String>), String> {
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

pub(crate) fn endpoint_or_public(endpoint: &str, account: &str) -> Result<Url, AzureConfigError> {
    if endpoint.trim().is_empty() {
        parse_endpoint(&format!("https://{account}.blob.core.windows.net"))
            .map_err(AzureConfigError::Endpoint)
    } else {
        parse_endpoint(endpoint).map_err(AzureConfigError::Endpoint)
    }
}

/// Checks a blob service URL; the error says what is wrong, showing the URL without any
/// user info or query string.
pub(crate) fn parse_endpoint(text: &str) -> Result<Url, String> {
    let shown = walship_secret::redact::url(text);
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

pub(crate) fn describe(account: &str, container: &str, endpoint: &Url) -> String {
    let public = format!("https://{account}.blob.core.windows.net");
    let endpoint = endpoint.as_str().trim_end_matches('/');
    if endpoint == public {
        format!("azure://{account}/{container}")
    } else {
        format!(
            "azure://{account}/{container} at {}",
            walship_secret::redact::url(endpoint)
        )
    }
}
