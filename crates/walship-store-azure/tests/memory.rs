//! A large file streamed to the Azure store is never held in memory. A test binary of
//! its own: the check reads this process's peak resident memory.

use walship_credentials::AzureCredentialSource;
use walship_secret::Secret;
use walship_store::RetryPolicy;
use walship_store_azure::{AzureStore, AzureStoreConfig};
use walship_testkit::{AZURITE_ACCOUNT, AZURITE_KEY, AzuriteServer};

#[tokio::test(flavor = "multi_thread")]
async fn a_large_file_is_streamed_to_azure_without_being_held_in_memory() {
    let azurite = AzuriteServer::start().unwrap();
    azurite.create_container("memory").unwrap();
    let store = AzureStore::new(AzureStoreConfig {
        endpoint: azurite.blob_endpoint(),
        account: AZURITE_ACCOUNT.to_owned(),
        container: "memory".to_owned(),
        auth: AzureCredentialSource::SharedKey {
            account: AZURITE_ACCOUNT.to_owned(),
            key: Secret::new(AZURITE_KEY.to_owned()),
        },
        encryption_scope: None,
        ca_bundle: None,
        retry: RetryPolicy::default(),
    })
    .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    walship_store::conformance::a_large_streamed_put_does_not_hold_the_file_in_memory(
        &store,
        scratch.path(),
        "memory/",
    )
    .await;
}
