//! A large file streamed to the S3 store is never held in memory. A test binary of its
//! own: the check reads this process's peak resident memory.

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use walship_store::RetryPolicy;
use walship_store_s3::{S3Store, S3StoreConfig};
use walship_testkit::S3Server;

#[tokio::test(flavor = "multi_thread")]
async fn a_large_file_is_streamed_to_s3_without_being_held_in_memory() {
    let server = S3Server::start().unwrap();
    server.create_bucket("memory").unwrap();
    let store = S3Store::new(S3StoreConfig {
        bucket: "memory".to_owned(),
        endpoint_url: Some(server.endpoint()),
        ca_bundle: None,
        region: None,
        credentials: SharedCredentialsProvider::new(Credentials::new(
            server.access_key(),
            server.secret_key(),
            None,
            None,
            "test",
        )),
        sse: None,
        retry: RetryPolicy::default(),
    })
    .await
    .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    walship_store::conformance::a_large_streamed_put_does_not_hold_the_file_in_memory(
        &store,
        scratch.path(),
        "memory/",
    )
    .await;
}
