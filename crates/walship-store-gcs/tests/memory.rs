//! A large file streamed to the GCS store is never held in memory, in one multipart
//! upload (the threshold raised above the file) and in a resumable one. A test binary
//! of its own: the check reads this process's peak resident memory, so the two uploads
//! run one after the other.

use walship_credentials::GoogleCredentialSource;
use walship_secret::Secret;
use walship_store::RetryPolicy;
use walship_store::conformance::{
    LARGE_FILE, a_large_streamed_put_does_not_hold_the_file_in_memory,
};
use walship_store_gcs::{GcsStore, GcsStoreConfig};
use walship_testkit::{GcsServer, GoogleTokenServer};

#[tokio::test(flavor = "multi_thread")]
async fn a_large_file_is_streamed_to_gcs_without_being_held_in_memory() {
    let gcs = GcsServer::start().unwrap();
    gcs.create_bucket("memory").unwrap();
    let tokens = GoogleTokenServer::start().unwrap();
    let store = || {
        GcsStore::with_env(
            GcsStoreConfig {
                bucket: "memory".into(),
                endpoint_url: None,
                auth: GoogleCredentialSource::ServiceAccountKey(Secret::new(
                    tokens.key_json().unwrap(),
                )),
                ca_bundle: None,
                retry: RetryPolicy::default(),
            },
            &|name| (name == "STORAGE_EMULATOR_HOST").then(|| gcs.host()),
        )
        .unwrap()
    };
    let scratch = tempfile::tempdir().unwrap();
    let multipart = store().with_resumable_upload(2 * LARGE_FILE as usize, 16 << 20);
    a_large_streamed_put_does_not_hold_the_file_in_memory(&multipart, scratch.path(), "multipart/")
        .await;
    let resumable = store().with_resumable_upload(8 << 20, 8 << 20);
    a_large_streamed_put_does_not_hold_the_file_in_memory(&resumable, scratch.path(), "resumable/")
        .await;
}
