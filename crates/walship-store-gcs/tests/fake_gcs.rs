//! `GcsStore` against a real fake-gcs-server on 127.0.0.1, with tokens from the test
//! kit's OAuth token endpoint (a service-account key made for the test) or its metadata
//! server. Every test starts its own servers and stops them when it ends.

use bytes::Bytes;
use walship_credentials::GoogleCredentialSource;
use walship_secret::Secret;
use walship_store::{ErrorKind, PutOptions, Store};
use walship_store_gcs::{GcsStore, GcsStoreConfig};
use walship_testkit::{GcsServer, GoogleTokenServer, MetadataServer, TokenMode};

const BUCKET: &str = "walship-test";

fn store(gcs: &GcsServer, auth: GoogleCredentialSource, metadata_host: Option<String>) -> GcsStore {
    GcsStore::with_env(
        GcsStoreConfig {
            bucket: BUCKET.into(),
            endpoint_url: None,
            auth,
            ca_bundle: None,
            retry: walship_store::RetryPolicy::default(),
        },
        &|name| match name {
            "STORAGE_EMULATOR_HOST" => Some(gcs.host()),
            "GCE_METADATA_HOST" => metadata_host.clone(),
            _ => None,
        },
    )
    .unwrap()
}

fn options(sha: &str) -> PutOptions {
    PutOptions {
        metadata: [("walship-sha256".to_owned(), sha.to_owned())].into(),
        tags: [("ignored".to_owned(), "by-gcs".to_owned())].into(),
        ..PutOptions::default()
    }
}

/// A body that contains what a multipart boundary looks like, and every byte value.
fn body(len: usize) -> Bytes {
    let mut out: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
    if len > 64 {
        out[10..30].copy_from_slice(b"\r\n--walship-00000000");
    }
    Bytes::from(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gcs_store_passes_the_conformance_suite() {
    let gcs = GcsServer::start().unwrap();
    gcs.create_bucket(BUCKET).unwrap();
    let tokens = GoogleTokenServer::start().unwrap();
    let store = store(
        &gcs,
        GoogleCredentialSource::ServiceAccountKey(Secret::new(tokens.key_json().unwrap())),
        None,
    )
    .with_list_page_size(5);
    let scratch = tempfile::tempdir().unwrap();
    walship_store::conformance::run(
        std::sync::Arc::new(store),
        walship_store::conformance::Server::MultipartCompleteNotAtomic,
        scratch.path(),
    )
    .await;
}

#[tokio::test]
async fn create_only_puts_gets_lists_and_deletes() {
    let gcs = GcsServer::start().unwrap();
    gcs.create_bucket(BUCKET).unwrap();
    let tokens = GoogleTokenServer::start().unwrap();
    let store = store(
        &gcs,
        GoogleCredentialSource::ServiceAccountKey(Secret::new(tokens.key_json().unwrap())),
        None,
    )
    .with_list_page_size(2);
    let key = "pg/wals/0000000100000000/000000010000000000000001";
    let first = body(1024 * 1024);
    if let Err(e) = store.put_create(key, first.clone(), &options("aa")).await {
        panic!("{e}: refused {:?}", tokens.refused());
    }
    // A second create under the same key is refused and leaves the object alone.
    let err = store
        .put_create(key, body(10), &options("bb"))
        .await
        .unwrap_err();
    assert!(err.kind() == ErrorKind::AlreadyExists, "{err}");
    let (bytes, info) = store.get(key).await.unwrap();
    assert_eq!(bytes, first);
    assert_eq!(info.size, first.len() as u64);
    assert_eq!(
        info.metadata.get("walship-sha256").map(String::as_str),
        Some("aa")
    );
    let head = store.head(key).await.unwrap().unwrap();
    assert_eq!(head.metadata, info.metadata);
    assert!(store.head("pg/none").await.unwrap().is_none());
    let err = store.get("pg/none").await.unwrap_err();
    assert!(err.kind() == ErrorKind::NotFound, "{err}");
    // An empty object and names that need escaping.
    store
        .put_create("pg/empty", Bytes::new(), &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get("pg/empty").await.unwrap().0.len(), 0);
    for name in ["pg/wals/00000002.history", "pg/a b+c", "other/x"] {
        store
            .put_create(name, body(5), &PutOptions::default())
            .await
            .unwrap();
    }
    // Several pages of two.
    let listed: Vec<String> = store
        .list("pg/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        listed,
        ["pg/a b+c", "pg/empty", key, "pg/wals/00000002.history"]
    );
    store.delete("pg/a b+c").await.unwrap();
    store.delete("pg/a b+c").await.unwrap();
    assert_eq!(store.list("pg/").await.unwrap().len(), 3);
    assert!(tokens.granted() >= 1, "no token was asked for");
    assert!(tokens.refused().is_empty(), "{:?}", tokens.refused());
}

#[tokio::test]
async fn large_bodies_go_through_resumable_uploads() {
    let gcs = GcsServer::start().unwrap();
    gcs.create_bucket(BUCKET).unwrap();
    let metadata = MetadataServer::start().unwrap();
    let store = store(
        &gcs,
        GoogleCredentialSource::GkeWorkloadIdentity,
        Some(metadata.host()),
    )
    .with_resumable_upload(1024 * 1024, 512 * 1024);
    let large = body(3 * 1024 * 1024 + 12345);
    store
        .put_create("big", large.clone(), &options("cc"))
        .await
        .unwrap();
    let (bytes, info) = store.get("big").await.unwrap();
    assert_eq!(bytes, large);
    assert_eq!(
        info.metadata.get("walship-sha256").map(String::as_str),
        Some("cc")
    );
    // fake-gcs-server ignores ifGenerationMatch on resumable uploads, so the no-overwrite
    // rule of this path is not checked here (multipart uploads are, above).
}

#[tokio::test]
async fn a_missing_bucket_is_reported_as_such() {
    let gcs = GcsServer::start().unwrap();
    let metadata = MetadataServer::start().unwrap();
    let store = store(
        &gcs,
        GoogleCredentialSource::GkeWorkloadIdentity,
        Some(metadata.host()),
    );
    let err = store
        .put_create("k", body(3), &PutOptions::default())
        .await
        .unwrap_err();
    assert!(err.kind() == ErrorKind::ContainerMissing, "{err}");
    let err = store.list("").await.unwrap_err();
    assert!(err.kind() == ErrorKind::ContainerMissing, "{err}");
}

#[tokio::test]
async fn metadata_tokens_are_cached_and_refreshed_before_they_expire() {
    let gcs = GcsServer::start().unwrap();
    gcs.create_bucket(BUCKET).unwrap();
    let metadata = MetadataServer::start().unwrap();
    let store = store(
        &gcs,
        GoogleCredentialSource::GkeWorkloadIdentity,
        Some(metadata.host()),
    );
    store.list("").await.unwrap();
    store.list("").await.unwrap();
    assert_eq!(metadata.tokens(), 1, "an hour-long token is reused");
    // A token with less than the refresh margin left is replaced before each use.
    metadata.set_expires_in(30);
    let fresh = store_fresh(&gcs, &metadata);
    fresh.list("").await.unwrap();
    fresh.list("").await.unwrap();
    assert_eq!(metadata.tokens(), 3, "a token about to expire is replaced");
    // Refused (no bound service account): denied, and not retried as transient.
    metadata.set_refuse(true);
    let refused = store_fresh(&gcs, &metadata);
    let err = refused.list("").await.unwrap_err();
    assert!(err.kind() == ErrorKind::Denied, "{err}");
    assert!(err.to_string().contains("metadata server"), "{err}");
}

fn store_fresh(gcs: &GcsServer, metadata: &MetadataServer) -> GcsStore {
    store(
        gcs,
        GoogleCredentialSource::GkeWorkloadIdentity,
        Some(metadata.host()),
    )
}

#[tokio::test]
async fn token_failures_are_denied_or_unreachable_and_never_leak_the_key() {
    let gcs = GcsServer::start().unwrap();
    gcs.create_bucket(BUCKET).unwrap();
    let tokens = GoogleTokenServer::start().unwrap();
    // A key the token endpoint does not know: the signature check fails.
    let foreign = tokens.key_json_with_foreign_key().unwrap();
    let store_foreign = store(
        &gcs,
        GoogleCredentialSource::ServiceAccountKey(Secret::new(foreign.clone())),
        None,
    );
    let err = store_foreign.list("").await.unwrap_err();
    assert!(err.kind() == ErrorKind::Denied, "{err}");
    assert!(
        tokens.refused().iter().any(|r| r.contains("signature")),
        "{:?}",
        tokens.refused()
    );
    let pem_line = foreign_key_line(&foreign);
    assert!(!err.to_string().contains(&pem_line), "{err}");
    // The endpoint refuses a good key.
    tokens.set_mode(TokenMode::Refuse);
    let refused = store(
        &gcs,
        GoogleCredentialSource::ServiceAccountKey(Secret::new(tokens.key_json().unwrap())),
        None,
    );
    let err = refused.list("").await.unwrap_err();
    assert!(err.kind() == ErrorKind::Denied, "{err}");
    // Nobody listens at the token_uri.
    let key = tokens.key_json().unwrap();
    let uri = tokens.token_uri();
    drop(tokens);
    let unreachable = store(
        &gcs,
        GoogleCredentialSource::ServiceAccountKey(Secret::new(
            key.replace(&uri, "http://127.0.0.1:9/token"),
        )),
        None,
    );
    let err = unreachable.list("").await.unwrap_err();
    assert!(err.kind() == ErrorKind::Connection, "{err}");
}

/// A token endpoint that fails is not a refused key: the failure is the endpoint's, it
/// is retried by the store's policy alone (one token request per attempt, where
/// gcp_auth's client made five), and the store works again once the endpoint does.
#[tokio::test]
async fn a_failing_token_endpoint_is_retried_once_per_attempt_and_not_taken_for_a_refusal() {
    let gcs = GcsServer::start().unwrap();
    gcs.create_bucket(BUCKET).unwrap();
    let tokens = GoogleTokenServer::start().unwrap();
    tokens.set_mode(TokenMode::Fail(503));
    let key = tokens.key_json().unwrap();
    let failing = store(
        &gcs,
        GoogleCredentialSource::ServiceAccountKey(Secret::new(key)),
        None,
    );
    let err = failing.list("").await.unwrap_err();
    assert!(err.kind() == ErrorKind::Server, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("token endpoint") && text.contains("503"),
        "{text}"
    );
    assert!(
        !text.contains("denied") && !text.contains("refused"),
        "{text}"
    );
    let attempts = walship_store::RetryPolicy::default().max_attempts as usize;
    assert_eq!(tokens.refused().len(), attempts, "{:?}", tokens.refused());
    // The endpoint is back: the same store gets a token and lists.
    tokens.set_mode(TokenMode::Grant);
    failing.list("").await.unwrap();
    assert_eq!(tokens.granted(), 1);
}

/// A line from the middle of the key's PEM body.
fn foreign_key_line(json: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    value["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .nth(3)
        .unwrap()
        .to_owned()
}

/// More parts than one compose takes (32): 1,025 parts are joined through two levels of
/// intermediate objects (33 groups, then 2), in order, and every temporary object is
/// gone afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_of_more_than_32_parts_is_composed_in_a_tree_and_leaves_no_temporary_object() {
    use futures::{StreamExt, TryStreamExt};
    let gcs = GcsServer::start().unwrap();
    gcs.create_bucket(BUCKET).unwrap();
    let metadata = MetadataServer::start().unwrap();
    let store = store(
        &gcs,
        GoogleCredentialSource::GkeWorkloadIdentity,
        Some(metadata.host()),
    );
    // Small parts of differing lengths: compose has no minimum part size.
    let parts: Vec<Bytes> = (0..1025usize)
        .map(|i| Bytes::from(format!("<{i}:{}>", "x".repeat(i % 7))))
        .collect();
    let upload = store
        .start_multipart("base/data.tar", &options("dd"))
        .await
        .unwrap();
    futures::stream::iter(parts.iter().cloned().enumerate().rev())
        .map(|(i, part)| {
            let upload = upload.clone();
            async move { upload.put_part(i, part).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    upload.complete(parts.len()).await.unwrap();
    let (got, info) = store.get("base/data.tar").await.unwrap();
    assert!(got == parts.concat(), "the parts were not joined in order");
    assert_eq!(
        info.metadata.get("walship-sha256").map(String::as_str),
        Some("dd")
    );
    assert_eq!(
        gcs.object_names(BUCKET, "").unwrap(),
        ["base/data.tar"],
        "parts or intermediate objects were left"
    );
}

/// The rule for a complete whose first attempt succeeded unseen, seen from the caller:
/// completing again finds the upload's own object (its nonce in the metadata) and
/// succeeds, while another upload of the key is refused and leaves the object.
#[tokio::test]
async fn completing_again_finds_the_uploads_own_object_and_another_upload_is_refused() {
    let gcs = GcsServer::start().unwrap();
    gcs.create_bucket(BUCKET).unwrap();
    let metadata = MetadataServer::start().unwrap();
    let store = store(
        &gcs,
        GoogleCredentialSource::GkeWorkloadIdentity,
        Some(metadata.host()),
    );
    let key = "base/20240101T000000/data.tar";
    let first = store.start_multipart(key, &options("ee")).await.unwrap();
    first.put_part(0, body(1000)).await.unwrap();
    first.complete(1).await.unwrap();
    first.complete(1).await.unwrap();
    let head = store.head(key).await.unwrap().unwrap();
    assert!(
        head.metadata
            .contains_key(walship_store::UPLOAD_ID_METADATA),
        "{:?}",
        head.metadata
    );
    let second = store.start_multipart(key, &options("ff")).await.unwrap();
    second.put_part(0, body(10)).await.unwrap();
    let err = second.complete(1).await.unwrap_err();
    assert!(err.kind() == ErrorKind::AlreadyExists, "{err}");
    second.abort().await.unwrap();
    let (bytes, info) = store.get(key).await.unwrap();
    assert_eq!(bytes, body(1000));
    assert_eq!(
        info.metadata.get("walship-sha256").map(String::as_str),
        Some("ee")
    );
    assert_eq!(gcs.object_names(BUCKET, "").unwrap(), [key]);
}
