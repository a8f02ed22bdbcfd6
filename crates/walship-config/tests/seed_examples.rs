//! Every ObjectStore example from the plugin's "Object Store Providers" page,
//! completed as users write them (see `deploy/cnpg/object-stores/README.md`, where
//! operators find them beside the manifests), must load,
//! validate and point at the right place.

use std::path::{Path, PathBuf};

use walship_config::{Destination, load};

fn seed(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/cnpg/object-stores")
        .join(name)
}

fn s3(bucket: &str, prefix: &str) -> Destination {
    Destination::S3 {
        bucket: bucket.into(),
        prefix: prefix.into(),
    }
}

fn azure_account(prefix: &str) -> Destination {
    Destination::Azure {
        url: format!("https://mystorageaccount.blob.core.windows.net/backups/{prefix}"),
        endpoint: "https://mystorageaccount.blob.core.windows.net".into(),
        account: "mystorageaccount".into(),
        container: "backups".into(),
        prefix: prefix.into(),
        emulator: false,
    }
}

fn gcs() -> Destination {
    Destination::Gcs {
        bucket: "my-backup-bucket".into(),
        prefix: "pg-folder".into(),
    }
}

#[test]
fn every_seed_example_loads_with_the_right_destination() {
    let cases = [
        ("aws-access-keys.yaml", s3("BUCKET_NAME", "path/to/folder")),
        (
            "aws-access-keys-session-token.yaml",
            s3("BUCKET_NAME", "path/to/folder"),
        ),
        ("aws-irsa.yaml", s3("BUCKET_NAME", "path/to/folder")),
        ("linode.yaml", s3("BUCKET_NAME", "")),
        ("digitalocean.yaml", s3("BUCKET_NAME", "path/to/folder")),
        ("minio-private-ca.yaml", s3("BUCKET_NAME", "")),
        ("minio-gateway.yaml", s3("BUCKET_NAME", "")),
        ("azure-workload-identity.yaml", azure_account("pg")),
        ("azure-connection-string.yaml", azure_account("pg")),
        ("azure-storage-key.yaml", azure_account("pg")),
        ("azure-sas-token.yaml", azure_account("pg")),
        (
            "azurite-emulator.yaml",
            Destination::Azure {
                url: "http://azurite.default.svc:10000/devstoreaccount1/backups/pg".into(),
                endpoint: "http://azurite.default.svc:10000/devstoreaccount1".into(),
                account: "devstoreaccount1".into(),
                container: "backups".into(),
                prefix: "pg".into(),
                emulator: true,
            },
        ),
        ("google-gke.yaml", gcs()),
        ("google-service-account.yaml", gcs()),
        (
            "walship-local-file.yaml",
            Destination::File {
                root: "/var/lib/walship/archive".into(),
                prefix: String::new(),
            },
        ),
    ];
    for (file, want) in cases {
        let store = load(&seed(file)).unwrap_or_else(|e| panic!("{file}:\n{e}"));
        assert_eq!(store.api_version, "barmancloud.cnpg.io/v1", "{file}");
        assert_eq!(store.kind, "ObjectStore", "{file}");
        assert_eq!(store.destination(), &want, "{file}");
        let prefix = store.destination().prefix().to_string();
        assert!(
            !prefix.starts_with('/') && !prefix.ends_with('/'),
            "{file}: {prefix}"
        );
    }
}

#[test]
fn every_seed_file_is_covered() {
    let listed = std::fs::read_dir(seed(""))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .count();
    // 15 good documents above plus the one rejected on purpose.
    assert_eq!(listed, 16);
}

#[test]
fn seed_details_survive_parsing() {
    let minio = load(&seed("minio-private-ca.yaml")).unwrap();
    let c = &minio.spec.configuration;
    assert_eq!(
        c.endpoint_url.as_deref(),
        Some("https://minio.minio.svc.cluster.local:9000")
    );
    let ca = c.endpoint_ca.as_ref().unwrap();
    assert_eq!(
        (ca.name.as_str(), ca.key.as_str()),
        ("my-ca-secret", "ca.crt")
    );

    let irsa = load(&seed("aws-irsa.yaml")).unwrap();
    let s3 = irsa.spec.configuration.s3_credentials.as_ref().unwrap();
    assert!(s3.inherit_from_iam_role);
    assert!(s3.access_key_id.is_none());

    let token = load(&seed("aws-access-keys-session-token.yaml"))
        .unwrap()
        .into_document();
    let s3 = token.spec.configuration.s3_credentials.unwrap();
    assert_eq!(s3.session_token.unwrap().key, "ACCESS_SESSION_TOKEN");

    let gke = load(&seed("google-gke.yaml")).unwrap().into_document();
    assert!(
        gke.spec
            .configuration
            .google_credentials
            .unwrap()
            .gke_environment
    );

    let local = load(&seed("walship-local-file.yaml")).unwrap();
    assert_eq!(local.server_name(None).unwrap(), "pg-main");
    assert_eq!(local.spec.configuration.wal_max_parallel(), 4);
}

#[test]
fn the_pages_all_four_azure_block_is_rejected_naming_both_fields() {
    let errs = load(&seed("azure-all-four.rejected.yaml")).unwrap_err();
    let text = errs.to_string();
    for field in ["storageAccount", "storageKey", "storageSasToken"] {
        let want =
            format!("spec.configuration.azureCredentials.{field}: conflicts with connectionString");
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    assert_eq!(errs.len(), 3, "{text}");
}
