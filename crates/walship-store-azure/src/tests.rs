use super::*;
use azure_core::StatusCode;
use walship_secret::Secret;

const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const SAS: &str =
    "sv=2022-11-02&sr=c&sp=racwdl&se=2030-01-01T00%3A00%3A00Z&sig=AbCdEf%2BSecretSig%3D";

fn config(auth: AzureCredentialSource) -> AzureStoreConfig {
    AzureStoreConfig {
        endpoint: String::new(),
        account: "walship".to_owned(),
        container: "wal".to_owned(),
        auth,
        encryption_scope: None,
        ca_bundle: None,
        retry: RetryPolicy::default(),
    }
}

fn http_error(status: u16, code: Option<&str>) -> azure_core::Error {
    azure_core::Error::message(
        ErrorKind::HttpResponse {
            status: StatusCode::try_from(status).unwrap(),
            error_code: code.map(str::to_owned),
        },
        "service error",
    )
}

fn kind(err: &StoreError) -> String {
    format!("{:?}", err.kind())
}

#[test]
fn http_errors_map_onto_the_store_errors() {
    let table: &[(u16, Option<&str>, &str)] = &[
        (409, Some("BlobAlreadyExists"), "AlreadyExists"),
        (412, Some("ConditionNotMet"), "AlreadyExists"),
        (412, None, "AlreadyExists"),
        (404, Some("ContainerNotFound"), "ContainerMissing"),
        (409, Some("ContainerBeingDeleted"), "ContainerMissing"),
        (404, Some("BlobNotFound"), "NotFound"),
        (404, None, "NotFound"),
        (401, Some("NoAuthenticationInformation"), "Denied"),
        (403, Some("AuthenticationFailed"), "Denied"),
        (403, Some("AuthorizationPermissionMismatch"), "Denied"),
        (500, Some("InternalError"), "Server"),
        (503, Some("ServerBusy"), "Throttled"),
        (500, Some("OperationTimedOut"), "Server"),
        (429, None, "Throttled"),
        (408, None, "Server"),
        (400, Some("InvalidMetadata"), "Rejected"),
        (409, Some("SnapshotsPresent"), "Rejected"),
    ];
    let scrubber = Scrubber::default();
    for (status, code, expected) in table {
        // Only a create carries a precondition.
        let request = if matches!(status, 409 | 412) {
            Request::Create
        } else {
            Request::Read
        };
        let err = classify(
            "azure://a/c",
            "k",
            request,
            &http_error(*status, *code),
            &scrubber,
        );
        assert_eq!(kind(&err), *expected, "{status} {code:?}: {err}");
    }
}

#[test]
fn already_exists_names_the_key_and_store() {
    let err = classify(
        "azure://a/c",
        "wals/0000000100000000/000000010000000000000001",
        Request::Create,
        &http_error(409, Some("BlobAlreadyExists")),
        &Scrubber::default(),
    );
    let text = err.to_string();
    assert!(text.contains("000000010000000000000001"), "{text}");
    assert!(text.contains("azure://a/c"), "{text}");
}

#[test]
fn denied_says_check_the_credentials_and_shows_no_secret() {
    let scrubber = Scrubber::new(vec![KEY.to_owned()]);
    let err = classify(
        "azure://a/c",
        "k",
        Request::Read,
        &http_error(403, Some("AuthenticationFailed")),
        &scrubber,
    );
    let text = err.to_string();
    assert!(text.contains("check the credentials"), "{text}");
    assert!(text.contains("403 AuthenticationFailed"), "{text}");
    assert!(!text.contains(KEY), "{text}");
}

#[test]
fn io_errors_are_unreachable_and_scrubbed() {
    let io = std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        format!("error sending request for url (http://127.0.0.1:1/acct/c/k?{SAS})"),
    );
    let err = azure_core::Error::new(ErrorKind::Io, io);
    let (_, secrets) = sas_credentials(SAS).unwrap();
    let mapped = classify(
        "azure://a/c",
        "k",
        Request::Read,
        &err,
        &Scrubber::new(secrets),
    );
    assert_eq!(kind(&mapped), "Connection");
    assert!(mapped.is_transient());
    let text = mapped.to_string();
    assert!(!text.contains("SecretSig"), "{text}");
    assert!(!text.contains("sp=racwdl"), "{text}");
}

#[test]
fn an_answer_that_does_not_read_is_a_bad_answer_tried_again_not_a_refusal() {
    // What the SDK says of a listing damaged on the way.
    let err = azure_core::Error::message(
        ErrorKind::DataConversion,
        "failed to deserialize the following xml into a ListBlobsResponseInternal",
    );
    let mapped = classify(
        "azure://a/c",
        "wals/",
        Request::Read,
        &err,
        &Scrubber::default(),
    );
    assert_eq!(kind(&mapped), "Response");
    assert!(mapped.is_transient());
    assert!(
        mapped.to_string().contains("answer cannot be read"),
        "{mapped}"
    );
}

#[test]
fn unknown_sas_signatures_are_scrubbed_too() {
    let text = Scrubber::default()
        .scrub("GET http://h/c/k?sv=1&sig=abc%2Bdef&se=2 failed (url http://h/?sig=xyz)");
    assert_eq!(
        text,
        "GET http://h/c/k?sv=1&sig=<redacted>&se=2 failed (url http://h/?sig=<redacted>)"
    );
}

#[test]
fn credential_errors_are_denied_or_unreachable() {
    let refused = azure_core::Error::full(
        ErrorKind::Credential,
        http_error(400, Some("invalid_client")),
        "Azure AD refused the federated token exchange",
    );
    assert_eq!(
        kind(&classify(
            "s",
            "k",
            Request::Read,
            &refused,
            &Scrubber::default()
        )),
        "Denied"
    );
    let io = azure_core::Error::full(
        ErrorKind::Credential,
        azure_core::Error::new(
            ErrorKind::Io,
            std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
        ),
        "request token error",
    );
    assert_eq!(
        kind(&classify(
            "s",
            "k",
            Request::Read,
            &io,
            &Scrubber::default()
        )),
        "Connection"
    );
    let busy = azure_core::Error::full(
        ErrorKind::Credential,
        http_error(503, None),
        "request token error",
    );
    assert_eq!(
        kind(&classify(
            "s",
            "k",
            Request::Read,
            &busy,
            &Scrubber::default()
        )),
        "Server"
    );
}

#[test]
fn debug_redacts_every_secret() {
    let conn = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    );
    let auths = [
        AzureCredentialSource::ConnectionString(Secret::new(conn)),
        AzureCredentialSource::SharedKey {
            account: "walship".to_owned(),
            key: Secret::new(KEY.to_owned()),
        },
        AzureCredentialSource::Sas {
            account: "walship".to_owned(),
            token: Secret::new(SAS.to_owned()),
        },
    ];
    for auth in auths {
        let config = config(auth.clone());
        for text in [format!("{auth:?}"), format!("{config:?}")] {
            assert!(!text.contains(KEY), "{text}");
            assert!(!text.contains("SecretSig"), "{text}");
            assert!(!text.contains("AccountKey"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
        let store = AzureStore::new(config).unwrap();
        let text = format!("{store:?} {}", store.describe());
        assert!(!text.contains(KEY), "{text}");
        assert!(!text.contains("SecretSig"), "{text}");
    }
    assert_eq!(
        format!("{:?}", AzureCredentialSource::WorkloadIdentity),
        "WorkloadIdentity"
    );
}

#[test]
fn describe_names_account_and_container_and_custom_endpoints() {
    let store = AzureStore::new(config(AzureCredentialSource::SharedKey {
        account: "walship".to_owned(),
        key: Secret::new(KEY.to_owned()),
    }))
    .unwrap();
    assert_eq!(store.describe(), "azure://walship/wal");

    let mut emulator = config(AzureCredentialSource::SharedKey {
        account: "devstoreaccount1".to_owned(),
        key: Secret::new(KEY.to_owned()),
    });
    emulator.endpoint = "http://127.0.0.1:10000/devstoreaccount1".to_owned();
    let store = AzureStore::new(emulator).unwrap();
    assert_eq!(
        store.describe(),
        "azure://devstoreaccount1/wal at http://127.0.0.1:10000/devstoreaccount1"
    );
}

#[test]
fn connection_strings_honour_their_blob_endpoint() {
    let conn = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};BlobEndpoint=http://127.0.0.1:4321/devstoreaccount1;"
    );
    let mut config = config(AzureCredentialSource::ConnectionString(Secret::new(conn)));
    config.endpoint = "https://ignored.blob.core.windows.net".to_owned();
    let store = AzureStore::new(config).unwrap();
    assert_eq!(
        store.describe(),
        "azure://devstoreaccount1/wal at http://127.0.0.1:4321/devstoreaccount1"
    );
    assert_eq!(
        store.container.url().unwrap().as_str(),
        "http://127.0.0.1:4321/devstoreaccount1/wal"
    );

    let dev = AzureStore::new(self::config(AzureCredentialSource::ConnectionString(
        Secret::new("UseDevelopmentStorage=true".to_owned()),
    )))
    .unwrap();
    assert_eq!(
        dev.describe(),
        "azure://devstoreaccount1/wal at http://127.0.0.1:10000/devstoreaccount1"
    );

    let public = AzureStore::new(self::config(AzureCredentialSource::ConnectionString(Secret::new(format!(
        "DefaultEndpointsProtocol=https;AccountName=prod;AccountKey={KEY};EndpointSuffix=core.windows.net"
    )))))
    .unwrap();
    assert_eq!(public.describe(), "azure://prod/wal");
}

#[test]
fn config_errors_name_the_field_and_never_the_secret() {
    let cases: Vec<(AzureStoreConfig, &str)> = vec![
        (
            config(AzureCredentialSource::ConnectionString(Secret::new(
                format!("AccountName=a;AccountKey={KEY};Bogus=1"),
            ))),
            "azureCredentials.connectionString: it has an unknown setting \"Bogus\"",
        ),
        (
            config(AzureCredentialSource::ConnectionString(Secret::new(
                format!("AccountName=a;{KEY}"),
            ))),
            "azureCredentials.connectionString",
        ),
        (
            config(AzureCredentialSource::ConnectionString(Secret::new(
                format!("{KEY}=x"),
            ))),
            "azureCredentials.connectionString: it has a setting with an unknown name",
        ),
        (
            config(AzureCredentialSource::ConnectionString(Secret::new(
                "AccountName=a".to_owned(),
            ))),
            "azureCredentials.connectionString: it has neither AccountKey nor SharedAccessSignature",
        ),
        (
            config(AzureCredentialSource::SharedKey {
                account: "a".to_owned(),
                key: Secret::new("not base64 at all!".to_owned()),
            }),
            "azureCredentials.storageKey: the key is not base64",
        ),
        (
            config(AzureCredentialSource::Sas {
                account: "a".to_owned(),
                token: Secret::new("sv=2022-11-02&sp=r&se=2030-01-01".to_owned()),
            }),
            "azureCredentials.storageSasToken: the token has no sig= parameter",
        ),
        (
            AzureStoreConfig {
                account: String::new(),
                ..config(AzureCredentialSource::WorkloadIdentity)
            },
            "azureCredentials.storageAccount: no storage account name",
        ),
        (
            AzureStoreConfig {
                container: "Bad_Name".to_owned(),
                ..config(AzureCredentialSource::SharedKey {
                    account: "a".to_owned(),
                    key: Secret::new(KEY.to_owned()),
                })
            },
            "destinationPath: \"Bad_Name\" is not a valid container name",
        ),
        (
            AzureStoreConfig {
                endpoint: format!("https://a.blob.core.windows.net/?{SAS}"),
                ..config(AzureCredentialSource::SharedKey {
                    account: "a".to_owned(),
                    key: Secret::new(KEY.to_owned()),
                })
            },
            "destinationPath: \"https://a.blob.core.windows.net\" must not carry credentials",
        ),
    ];
    for (config, expected) in cases {
        let err = AzureStore::new(config).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}\n  expected: {expected}");
        assert!(err.starts_with("spec.configuration."), "{err}");
        assert!(!err.contains(KEY), "{err}");
        assert!(!err.contains("SecretSig"), "{err}");
    }
}

#[test]
fn workload_identity_names_the_missing_variable() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let err = WorkloadIdentity::from_env(
        &env(&[("AZURE_CLIENT_ID", "c")]),
        azure_core::new_http_client(),
    )
    .unwrap_err();
    assert!(err.contains("AZURE_TENANT_ID"), "{err}");
    let ok = WorkloadIdentity::from_env(
        &env(&[
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_TENANT_ID", "t"),
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                "/var/run/secrets/azure/tokens/azure-identity-token",
            ),
            ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/"),
        ]),
        azure_core::new_http_client(),
    )
    .unwrap();
    assert_eq!(ok.authority.as_str(), "https://login.microsoftonline.us/");
}

#[test]
fn metadata_keys_round_trip_through_azure_names() {
    let mut metadata = Metadata::new();
    metadata.insert("walship-sha256".to_owned(), "ab12".to_owned());
    metadata.insert("plain".to_owned(), "v".to_owned());
    let encoded = encode_metadata(&metadata).unwrap().unwrap();
    let as_map: HashMap<String, String> = encoded
        .iter()
        .map(|m| {
            let header = azure_core::headers::Header::name(&m);
            let name = header.as_str().trim_start_matches("x-ms-meta-").to_owned();
            let value = azure_core::headers::Header::value(&m).as_str().to_owned();
            (name, value)
        })
        .collect();
    assert_eq!(
        as_map.get("walship_sha256").map(String::as_str),
        Some("ab12")
    );
    assert_eq!(decode_metadata(Some(&as_map)), metadata);
    assert!(encode_metadata(&Metadata::new()).unwrap().is_none());

    for bad in ["has_underscore", "Upper", "1digit", "sp ace", ""] {
        let mut m = Metadata::new();
        m.insert(bad.to_owned(), "v".to_owned());
        assert!(encode_metadata(&m).is_err(), "{bad:?} accepted");
    }
    let mut m = Metadata::new();
    m.insert("k".to_owned(), "caf\u{e9}".to_owned());
    assert!(encode_metadata(&m).is_err());
}

#[test]
fn block_ids_have_one_length_and_differ_between_uploads() {
    let a = upload_nonce();
    let b = upload_nonce();
    assert_ne!(a, b);
    assert_eq!(block_id(&a, 0).len(), block_id(&b, 49_999).len());
    assert!(block_id(&a, 0).len() <= 64);
    // Every part of a multipart upload, whatever its index: Azure refuses a block whose
    // id differs in length from the blob's other blocks, uncommitted ones included.
    let len = block_id(&a, 0).len();
    assert!((0..walship_store::MAX_PARTS).all(|index| block_id(&a, index).len() == len));
}

#[test]
fn a_wait_the_service_asked_for_is_kept_with_the_error() {
    let asked = azure_core::Error::new(
        ErrorKind::HttpResponse {
            status: StatusCode::try_from(503).unwrap(),
            error_code: Some("ServerBusy".to_owned()),
        },
        config::ErrorAnswer::for_test(Some(Duration::from_secs(4)), None, 503),
    );
    // As the SDK passes it on: wrapped in context.
    let asked = asked.context("put blob");
    let scrubber = Scrubber::default();
    let err = errors::classify("azure://wal", "k", Request::Create, &asked, &scrubber);
    assert_eq!(kind(&err), "Throttled");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(4)));
    let plain = errors::classify(
        "azure://wal",
        "k",
        Request::Create,
        &http_error(503, Some("ServerBusy")),
        &scrubber,
    );
    assert_eq!(plain.retry_after(), None);
}

/// A transport that answers every request 503 with `Retry-After: 3`.
#[derive(Debug)]
struct Busy;

#[async_trait::async_trait]
impl azure_core::HttpClient for Busy {
    async fn execute_request(
        &self,
        _request: &azure_core::Request,
    ) -> azure_core::Result<azure_core::Response> {
        let mut headers = azure_core::headers::Headers::new();
        headers.insert("retry-after", "3");
        headers.insert("x-ms-error-code", "ServerBusy");
        let body: Bytes = Bytes::from_static(b"<Error><Code>ServerBusy</Code></Error>");
        Ok(azure_core::Response::new(
            StatusCode::ServiceUnavailable,
            headers,
            Box::pin(futures::stream::once(async move { Ok(body) })),
        ))
    }
}

/// What a create-only put of one blob becomes through the SDK (its retries off) when
/// `transport`, behind [`config::KeepsAnswerHeaders`], answers it.
async fn put_answered_by(transport: impl azure_core::HttpClient + 'static) -> StoreError {
    let container = ClientBuilder::with_location(
        CloudLocation::Custom {
            account: "walship".to_owned(),
            uri: "http://127.0.0.1:9".to_owned(),
        },
        StorageCredentials::anonymous(),
    )
    .retry(RetryOptions::none())
    .transport(azure_core::TransportOptions::new(Arc::new(
        config::KeepsAnswerHeaders(Arc::new(transport)),
    )))
    .container_client("wal");
    let err = container
        .blob_client("k")
        .put_block_blob(Bytes::from_static(b"x"))
        .into_future()
        .await
        .expect_err("the transport answers with an error");
    errors::classify(
        "azure://wal",
        "k",
        Request::Create,
        &err,
        &Scrubber::default(),
    )
}

#[tokio::test]
async fn the_wait_a_busy_service_asks_for_reaches_the_store_error_through_the_sdk() {
    let err = put_answered_by(Busy).await;
    assert_eq!(kind(&err), "Throttled");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)), "{err}");
}

/// A transport that refuses every request as Azure refuses a request signed too far
/// from its clock (`403 AuthenticationFailed`), from a server whose clock is `ahead`
/// seconds ahead of this machine's.
#[derive(Debug)]
struct RefusesAt {
    ahead: u64,
}

#[async_trait::async_trait]
impl azure_core::HttpClient for RefusesAt {
    async fn execute_request(
        &self,
        _request: &azure_core::Request,
    ) -> azure_core::Result<azure_core::Response> {
        let mut headers = azure_core::headers::Headers::new();
        let server = std::time::SystemTime::now() + Duration::from_secs(self.ahead);
        headers.insert("date", httpdate::fmt_http_date(server));
        headers.insert("x-ms-error-code", "AuthenticationFailed");
        let body: Bytes = Bytes::from_static(
            b"<Error><Code>AuthenticationFailed</Code><AuthenticationErrorDetail>Request date \
              header too old</AuthenticationErrorDetail></Error>",
        );
        Ok(azure_core::Response::new(
            StatusCode::Forbidden,
            headers,
            Box::pin(futures::stream::once(async move { Ok(body) })),
        ))
    }
}

#[tokio::test]
async fn a_refusal_from_a_server_whose_clock_is_far_off_is_clock_skew_and_from_one_on_time_is_denied()
 {
    let skewed = put_answered_by(RefusesAt { ahead: 20 * 60 }).await;
    assert_eq!(kind(&skewed), "ClockSkew");
    let text = skewed.to_string();
    assert!(
        text.contains("HTTP 403 AuthenticationFailed")
            && text.contains("the server's clock is 20 minutes ahead of this machine's"),
        "{text}"
    );
    let on_time = put_answered_by(RefusesAt { ahead: 0 }).await;
    assert_eq!(kind(&on_time), "Denied", "{on_time}");
}
