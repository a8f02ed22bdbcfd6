//! `AzureStore` against a real Azurite blob service on 127.0.0.1.
//!
//! Every test starts its own in-memory Azurite on a free port, through the test kit's
//! `AzuriteServer` (the one the end-to-end tests use), and stops it when the test ends,
//! also when an assertion fails. When Azurite cannot be found the tests fail: a store
//! that was never exercised must not look green.

use std::time::{Duration, SystemTime};

use azure_storage::prelude::{BlobSasPermissions, SasToken};
use azure_storage::{CloudLocation, StorageCredentials};
use azure_storage_blobs::blob::BlockListType;
use azure_storage_blobs::prelude::{ClientBuilder, ContainerClient};
use bytes::Bytes;
use walship_credentials::AzureCredentialSource;
use walship_secret::Secret;
use walship_store::{ErrorKind, PutOptions, Store};
use walship_store_azure::{AzureStore, AzureStoreConfig, BLOCK_UPLOAD_THRESHOLD};
use walship_testkit::AzuriteServer;

const ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known, documented development key (not a secret).
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The test kit's in-memory Azurite blob service, with the SDK's own client beside the
/// store under test; stopped when dropped.
struct Azurite {
    server: AzuriteServer,
}

impl Azurite {
    fn start() -> Azurite {
        Azurite {
            server: AzuriteServer::start()
                .unwrap_or_else(|e| panic!("cannot start Azurite: {e:#}")),
        }
    }

    fn endpoint(&self) -> String {
        self.server.blob_endpoint()
    }

    fn connection_string(&self) -> String {
        self.server.connection_string()
    }

    /// The SDK's own client for a container, outside the store under test.
    fn container_client(&self, container: &str) -> ContainerClient {
        ClientBuilder::with_location(
            CloudLocation::Custom {
                account: ACCOUNT.to_owned(),
                uri: self.endpoint(),
            },
            StorageCredentials::access_key(ACCOUNT, KEY.to_owned()),
        )
        .container_client(container)
    }

    async fn create_container(&self, container: &str) -> ContainerClient {
        let client = self.container_client(container);
        client.create().await.expect("create container");
        client
    }

    fn config(&self, container: &str, auth: AzureCredentialSource) -> AzureStoreConfig {
        AzureStoreConfig {
            endpoint: self.endpoint(),
            account: ACCOUNT.to_owned(),
            container: container.to_owned(),
            auth,
            encryption_scope: None,
            ca_bundle: None,
            retry: walship_store::RetryPolicy::default(),
        }
    }

    fn shared_key_store(&self, container: &str) -> AzureStore {
        AzureStore::new(self.config(
            container,
            AzureCredentialSource::SharedKey {
                account: ACCOUNT.to_owned(),
                key: Secret::new(KEY.to_owned()),
            },
        ))
        .expect("store")
    }
}

fn meta(pairs: &[(&str, &str)]) -> PutOptions {
    PutOptions {
        metadata: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..PutOptions::default()
    }
}

/// Bytes that differ from block to block, so a misordered or mixed upload shows.
fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i % 4] ^ seed)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_head_delete_and_create_only() {
    let azurite = Azurite::start();
    azurite.create_container("wal").await;
    let store = azurite.shared_key_store("wal");
    let key = "pg/main/wals/0000000100000000/000000010000000000000001";
    let body = Bytes::from_static(b"segment bytes");
    let options = meta(&[("walship-sha256", "ab12cd"), ("codec", "zstd")]);

    assert!(
        store.head(key).await.unwrap().is_none(),
        "head of a missing blob"
    );
    store.put_create(key, body.clone(), &options).await.unwrap();

    let (got, info) = store.get(key).await.unwrap();
    assert_eq!(got, body);
    assert_eq!(info.size, body.len() as u64);
    assert_eq!(info.metadata, options.metadata);

    let head = store.head(key).await.unwrap().expect("head after put");
    assert_eq!(head.size, body.len() as u64);
    assert_eq!(head.metadata, options.metadata);

    // Create-only: a second put fails with AlreadyExists and leaves the blob as it was.
    let err = store
        .put_create(key, Bytes::from_static(b"other bytes"), &Default::default())
        .await
        .unwrap_err();
    assert!(
        err.kind() == ErrorKind::AlreadyExists,
        "second put: {err:?}"
    );
    let (again, info) = store.get(key).await.unwrap();
    assert_eq!(again, body);
    assert_eq!(info.metadata, options.metadata);

    // A missing blob: NotFound on get, None on head.
    let err = store.get("no/such/blob").await.unwrap_err();
    assert!(err.kind() == ErrorKind::NotFound, "{err:?}");
    assert!(store.head("no/such/blob").await.unwrap().is_none());

    // Delete is idempotent.
    store.delete(key).await.unwrap();
    assert!(store.head(key).await.unwrap().is_none());
    store.delete(key).await.unwrap();
    store.delete("never/existed").await.unwrap();

    // An empty blob round-trips too.
    store
        .put_create("empty", Bytes::new(), &Default::default())
        .await
        .unwrap();
    let (empty, info) = store.get("empty").await.unwrap();
    assert!(empty.is_empty());
    assert_eq!(info.size, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_create_only_puts_have_exactly_one_winner() {
    let azurite = Azurite::start();
    azurite.create_container("race").await;
    let store = std::sync::Arc::new(azurite.shared_key_store("race"));

    for (key, len) in [("small", 4096usize), ("large", BLOCK_UPLOAD_THRESHOLD + 1)] {
        let writers = if len > BLOCK_UPLOAD_THRESHOLD { 4 } else { 8 };
        let mut tasks = Vec::new();
        for writer in 0..writers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let body = pattern(len, writer as u8);
                let result = store
                    .put_create(key, body.clone(), &Default::default())
                    .await;
                (body, result)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (body, result) = task.await.unwrap();
            match result {
                Ok(()) => winners.push(body),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(other) => panic!("{key}: unexpected error {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "{key}: exactly one writer must win");
        let (stored, _) = store.get(key).await.unwrap();
        assert!(
            stored == winners[0],
            "{key}: the stored blob is the winner's"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_azure_store_passes_the_conformance_suite() {
    let azurite = Azurite::start();
    azurite.create_container("conformance").await;
    let store = azurite
        .shared_key_store("conformance")
        .with_list_page_size(5);
    let scratch = tempfile::tempdir().unwrap();
    walship_store::conformance::run(
        std::sync::Arc::new(store),
        walship_store::conformance::Server::Faithful,
        scratch.path(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_by_prefix_reads_every_page_in_key_order() {
    let azurite = Azurite::start();
    azurite.create_container("list").await;
    let store = azurite.shared_key_store("list").with_list_page_size(3);
    let mut keys: Vec<String> = (0..11)
        .rev()
        .map(|i| format!("pg/wals/0000000100000000/0000000100000000000000{i:02X}"))
        .collect();
    keys.push("pg/wals/00000002.history".to_owned());
    keys.push("pg/base/20240101T000000/backup.info".to_owned());
    keys.push("other/thing".to_owned());
    for key in &keys {
        store
            .put_create(
                key,
                Bytes::from(key.clone()),
                &meta(&[("walship-sha256", "x")]),
            )
            .await
            .unwrap();
    }

    let wals = store.list("pg/wals/").await.unwrap();
    let mut expected: Vec<&String> = keys.iter().filter(|k| k.starts_with("pg/wals/")).collect();
    expected.sort();
    assert_eq!(wals.len(), 12);
    assert_eq!(wals.iter().map(|o| &o.key).collect::<Vec<_>>(), expected);
    assert!(wals.iter().all(|o| o.size == o.key.len() as u64));

    assert_eq!(store.list("").await.unwrap().len(), keys.len());
    assert!(store.list("nothing/").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_container_is_reported_as_such() {
    let azurite = Azurite::start();
    let store = azurite.shared_key_store("absent");
    let put = store
        .put_create("k", Bytes::from_static(b"x"), &Default::default())
        .await
        .unwrap_err();
    let get = store.get("k").await.unwrap_err();
    let head = store.head("k").await.unwrap_err();
    let list = store.list("").await.unwrap_err();
    for err in [put, get, head, list] {
        assert!(
            err.kind() == ErrorKind::ContainerMissing,
            "expected ContainerMissing, got {err:?}"
        );
        assert!(!err.is_transient());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_shared_key_is_denied_without_showing_the_key() {
    let azurite = Azurite::start();
    azurite.create_container("wal").await;
    let wrong = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXlXcm9uZ0tleQ==";
    let store = AzureStore::new(azurite.config(
        "wal",
        AzureCredentialSource::SharedKey {
            account: ACCOUNT.to_owned(),
            key: Secret::new(wrong.to_owned()),
        },
    ))
    .unwrap();
    let err = store
        .put_create("k", Bytes::from_static(b"x"), &Default::default())
        .await
        .unwrap_err();
    assert!(err.kind() == ErrorKind::Denied, "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("check the credentials"), "{text}");
    assert!(!text.contains(wrong), "{text}");
    assert!(!text.contains(KEY), "{text}");
    let err = store.head("k").await.unwrap_err();
    assert!(err.kind() == ErrorKind::Denied, "head: {err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_sas_token_authenticates() {
    let azurite = Azurite::start();
    let container = azurite.create_container("sas").await;
    let expiry = SystemTime::now() + Duration::from_secs(3600);
    let all = BlobSasPermissions {
        read: true,
        add: true,
        create: true,
        write: true,
        delete: true,
        list: true,
        ..Default::default()
    };
    let token = container
        .shared_access_signature(all, expiry.into())
        .await
        .unwrap()
        .token()
        .unwrap();
    let store = AzureStore::new(azurite.config(
        "sas",
        AzureCredentialSource::Sas {
            account: ACCOUNT.to_owned(),
            token: Secret::new(format!("?{token}")),
        },
    ))
    .unwrap();
    let options = meta(&[("walship-sha256", "00ff")]);
    store
        .put_create("a/1", Bytes::from_static(b"one"), &options)
        .await
        .unwrap();
    let (body, info) = store.get("a/1").await.unwrap();
    assert_eq!(&body[..], b"one");
    assert_eq!(info.metadata, options.metadata);
    assert_eq!(store.list("a/").await.unwrap().len(), 1);
    let err = store
        .put_create("a/1", Bytes::from_static(b"two"), &Default::default())
        .await
        .unwrap_err();
    assert!(err.kind() == ErrorKind::AlreadyExists, "{err:?}");
    store.delete("a/1").await.unwrap();

    // A read-only SAS cannot write: Denied, and the signature is not in the message.
    let read_only = container
        .shared_access_signature(
            BlobSasPermissions {
                read: true,
                ..Default::default()
            },
            expiry.into(),
        )
        .await
        .unwrap()
        .token()
        .unwrap();
    let sig = read_only
        .split('&')
        .find_map(|p| p.strip_prefix("sig="))
        .unwrap()
        .to_owned();
    let store = AzureStore::new(azurite.config(
        "sas",
        AzureCredentialSource::Sas {
            account: ACCOUNT.to_owned(),
            token: Secret::new(read_only),
        },
    ))
    .unwrap();
    let err = store
        .put_create("a/2", Bytes::from_static(b"x"), &Default::default())
        .await
        .unwrap_err();
    assert!(err.kind() == ErrorKind::Denied, "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(&sig), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_string_with_a_blob_endpoint_works() {
    let azurite = Azurite::start();
    azurite.create_container("conn").await;
    let mut config = azurite.config(
        "conn",
        AzureCredentialSource::ConnectionString(Secret::new(azurite.connection_string())),
    );
    // The connection string's BlobEndpoint wins over whatever endpoint was derived.
    config.endpoint = String::new();
    config.account = String::new();
    let store = AzureStore::new(config).unwrap();
    assert!(
        store
            .describe()
            .starts_with("azure://devstoreaccount1/conn")
    );
    store
        .put_create("k", Bytes::from_static(b"v"), &Default::default())
        .await
        .unwrap();
    assert_eq!(&store.get("k").await.unwrap().0[..], b"v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_goes_through_blocks_and_round_trips() {
    let azurite = Azurite::start();
    let container = azurite.create_container("big").await;
    let store = azurite.shared_key_store("big");
    let len = BLOCK_UPLOAD_THRESHOLD + 1024 * 1024 + 123;
    let body = pattern(len, 7);
    let options = meta(&[("walship-sha256", "beef")]);
    store
        .put_create("big/1", body.clone(), &options)
        .await
        .unwrap();

    let blocks = container
        .blob_client("big/1")
        .get_block_list()
        .block_list_type(BlockListType::Committed)
        .await
        .unwrap()
        .block_with_size_list
        .blocks;
    assert_eq!(blocks.len(), 3, "9 MiB in 4 MiB blocks");

    let (got, info) = store.get("big/1").await.unwrap();
    assert_eq!(got.len(), len);
    assert!(got == body, "content differs after the block upload");
    assert_eq!(info.metadata, options.metadata);

    let err = store
        .put_create("big/1", pattern(len, 9), &Default::default())
        .await
        .unwrap_err();
    assert!(err.kind() == ErrorKind::AlreadyExists, "{err:?}");
    assert!(store.get("big/1").await.unwrap().0 == body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_written_as_blob_index_tags() {
    let azurite = Azurite::start();
    let container = azurite.create_container("tags").await;
    let store = azurite.shared_key_store("tags");
    let mut options = meta(&[]);
    options
        .tags
        .insert("backupRetentionPolicy".to_owned(), "expire".to_owned());
    store
        .put_create("t/1", Bytes::from_static(b"x"), &options)
        .await
        .unwrap();
    store
        .put_create("t/2", pattern(BLOCK_UPLOAD_THRESHOLD + 1, 1), &options)
        .await
        .unwrap();
    for key in ["t/1", "t/2"] {
        let tags = container.blob_client(key).get_tags().await.unwrap().tags;
        let pairs: Vec<(String, String)> = tags
            .tag_set
            .tags
            .into_iter()
            .map(|t| (t.key, t.value))
            .collect();
        assert_eq!(
            pairs,
            vec![("backupRetentionPolicy".to_owned(), "expire".to_owned())],
            "{key}"
        );
    }
}

/// The rule for a complete whose first attempt succeeded unseen, seen from the caller:
/// completing again finds the upload's own blob (its nonce in the metadata) and
/// succeeds, while another upload of the key is refused and leaves the blob. The tags
/// go onto the blob with the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completing_again_finds_the_uploads_own_blob_and_another_upload_is_refused() {
    let azurite = Azurite::start();
    let container = azurite.create_container("again").await;
    let store = azurite.shared_key_store("again");
    let key = "base/20240101T000000/data.tar";
    let mut options = meta(&[("walship-sha256", "aa")]);
    options
        .tags
        .insert("backupRetentionPolicy".to_owned(), "keep".to_owned());
    let first = store.start_multipart(key, &options).await.unwrap();
    first.put_part(1, pattern(10, 2)).await.unwrap();
    first.put_part(0, pattern(1000, 1)).await.unwrap();
    first.complete(2).await.unwrap();
    first.complete(2).await.unwrap();
    let second = store.start_multipart(key, &meta(&[])).await.unwrap();
    second.put_part(0, pattern(10, 3)).await.unwrap();
    let err = second.complete(1).await.unwrap_err();
    assert!(err.kind() == ErrorKind::AlreadyExists, "{err:?}");
    second.abort().await.unwrap();
    let (got, info) = store.get(key).await.unwrap();
    assert!(got == [pattern(1000, 1), pattern(10, 2)].concat());
    assert_eq!(
        info.metadata.get("walship-sha256").map(String::as_str),
        Some("aa")
    );
    assert!(
        info.metadata
            .contains_key(walship_store::UPLOAD_ID_METADATA),
        "{:?}",
        info.metadata
    );
    let tags = container.blob_client(key).get_tags().await.unwrap().tags;
    let pairs: Vec<(String, String)> = tags
        .tag_set
        .tags
        .into_iter()
        .map(|t| (t.key, t.value))
        .collect();
    assert_eq!(
        pairs,
        vec![("backupRetentionPolicy".to_owned(), "keep".to_owned())]
    );
}

/// A replacing put of a body large enough for blocks replaces bytes and metadata too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacing_put_through_blocks_replaces_bytes_and_metadata() {
    let azurite = Azurite::start();
    azurite.create_container("replace").await;
    let store = azurite.shared_key_store("replace");
    let len = BLOCK_UPLOAD_THRESHOLD + 5;
    store
        .put_replace("r", pattern(len, 1), &meta(&[("a", "1")]))
        .await
        .unwrap();
    store
        .put_replace("r", pattern(len, 2), &meta(&[("b", "2")]))
        .await
        .unwrap();
    let (got, info) = store.get("r").await.unwrap();
    assert!(got == pattern(len, 2), "the blob was not replaced");
    assert_eq!(info.metadata, meta(&[("b", "2")]).metadata);
}
