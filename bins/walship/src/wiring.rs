//! From an ObjectStore manifest to an [`Archiver`]: the one place that knows every crate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use walship_config::{Destination, Encryption, Manifest, ObjectStore, Secrets};
use walship_credentials::RefreshObserver;
use walship_engine::{Archiver, ArchiverSettings};
use walship_store::{CaBundle, LocalStore, RetryPolicy, Store};
use walship_store_azure::{AzureStore, AzureStoreConfig};
use walship_store_gcs::{GcsStore, GcsStoreConfig};
use walship_store_s3::{S3Store, S3StoreConfig, Sse};
use walship_wal::{Compression, Layout};

/// What the commands need from a manifest.
pub struct Wired {
    pub archiver: Archiver,
    /// `wal.maxParallel` (the plugin's default, 1, when unset).
    pub max_parallel: usize,
}

/// Which objects a store is built for: the server-side encryption of WAL comes from
/// `wal.encryption`, that of base backups from `data.encryption`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Wal,
    Backups,
}

/// A manifest's store, where the server's objects are in it, and the manifest itself.
#[derive(Clone)]
pub struct Target {
    pub store: Arc<dyn Store>,
    pub layout: Layout,
    pub server: String,
    pub doc: Manifest,
}

/// Where the ObjectStore and its Secrets come from.
#[derive(Clone)]
pub enum Source {
    /// `--config` and `--secrets-dir`, read again at every use.
    Files {
        config: PathBuf,
        secrets_dir: PathBuf,
    },
    /// The Kubernetes API (`walship cnpg instance`), as last read.
    Kube(Arc<crate::kubeconf::Live>),
}

impl Source {
    pub fn files(config: &Path, secrets_dir: &Path) -> Source {
        Source::Files {
            config: config.to_owned(),
            secrets_dir: secrets_dir.to_owned(),
        }
    }

    /// The manifest, its Secrets and the server name (`server_override` over the
    /// manifest's for files; the Kubernetes source applied it when it read the Cluster).
    fn load(&self, server_override: Option<&str>) -> Result<(Manifest, Secrets, String)> {
        match self {
            Source::Files {
                config,
                secrets_dir,
            } => {
                let doc = walship_config::load(config).map_err(|errors| {
                    anyhow::anyhow!("invalid configuration in {}:\n{errors}", config.display())
                })?;
                let server = doc
                    .server_name(server_override)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok((doc, Secrets::dir(secrets_dir), server))
            }
            Source::Kube(live) => {
                let resolved = live.current().map_err(anyhow::Error::msg)?;
                Ok((
                    resolved.loaded.manifest.clone(),
                    resolved.loaded.secrets.clone(),
                    resolved.server.clone(),
                ))
            }
        }
    }
}

/// The retry policy of a command given `seconds` to retry each request in: with 0,
/// retries only within one request's own deadline.
pub fn retry_within(seconds: u64) -> RetryPolicy {
    match seconds {
        0 => RetryPolicy::default(),
        n => RetryPolicy::within(std::time::Duration::from_secs(n)),
    }
}

/// Loads the manifest and builds its store. `on_credentials` (the daemon's metrics) is
/// told of every credential load the store's SDK makes; `retry` is the one retry policy
/// of every request the store makes.
pub async fn target(
    source: &Source,
    server_override: Option<&str>,
    on_credentials: Option<RefreshObserver>,
    retry: RetryPolicy,
    purpose: Purpose,
) -> Result<Target> {
    let (doc, secrets, server) = source.load(server_override)?;
    let destination = doc.destination();
    let store = store_for(&doc, destination, &secrets, on_credentials, retry, purpose).await?;
    Ok(Target {
        store,
        layout: Layout::new(destination.prefix(), &server),
        server,
        doc,
    })
}

/// Builds the archiver a manifest describes (see [`target`]).
pub async fn archiver(
    source: &Source,
    server_override: Option<&str>,
    on_credentials: Option<RefreshObserver>,
    retry: RetryPolicy,
) -> Result<Wired> {
    let target = target(source, server_override, on_credentials, retry, Purpose::Wal).await?;
    let configuration = &target.doc.spec.configuration;
    let settings = ArchiverSettings {
        compression: configuration.wal_compression().map(codec),
        tags: configuration.tags.clone().into_iter().collect(),
        history_tags: configuration.history_tags.clone().into_iter().collect(),
    };
    Ok(Wired {
        max_parallel: configuration.wal_max_parallel().max(1) as usize,
        archiver: Archiver::new(target.store, target.layout, settings),
    })
}

/// The codec of a `wal.compression` value, matched rather than looked up by name: a
/// value the manifest accepts without a codec does not compile.
fn codec(compression: walship_config::Compression) -> Compression {
    use walship_config::Compression as Configured;
    match compression {
        Configured::Bzip2 => Compression::Bzip2,
        Configured::Gzip => Compression::Gzip,
        Configured::Lz4 => Compression::Lz4,
        Configured::Snappy => Compression::Snappy,
        Configured::Xz => Compression::Xz,
        Configured::Zstd => Compression::Zstd,
    }
}

async fn store_for(
    doc: &ObjectStore,
    destination: &Destination,
    secrets: &Secrets,
    on_credentials: Option<RefreshObserver>,
    retry: RetryPolicy,
    purpose: Purpose,
) -> Result<Arc<dyn Store>> {
    let configuration = &doc.spec.configuration;
    // barman-cloud-backup's -e and --encryption-scope in data.additionalCommandArgs;
    // `walship backup` reports a bad one before any store is asked anything.
    let backup_args = match (purpose, &configuration.data) {
        (Purpose::Backups, Some(data)) => data.backup_args().unwrap_or_default(),
        _ => walship_config::BackupCommandArgs::default(),
    };
    match destination {
        Destination::File { root, .. } => Ok(Arc::new(LocalStore::new(root.clone()))),
        Destination::S3 { bucket, .. } => {
            let access =
                walship_credentials::s3_access(configuration.s3_credentials.as_ref(), secrets)?;
            let ca_bundle = endpoint_ca(doc, secrets)?;
            let encryption = match purpose {
                Purpose::Wal => configuration.wal.as_ref().and_then(|w| w.encryption),
                Purpose::Backups => configuration
                    .data
                    .as_ref()
                    .and_then(|d| d.encryption)
                    .or(backup_args.encryption),
            };
            let sse = encryption.map(|e| match e {
                Encryption::Aes256 => Sse::Aes256,
                Encryption::AwsKms => Sse::AwsKms,
            });
            let store = S3Store::new(S3StoreConfig {
                bucket: bucket.clone(),
                endpoint_url: configuration.endpoint_url.clone(),
                ca_bundle,
                region: access.region.clone(),
                // A refresh that fails while the credentials in hand still sign must not
                // stop archiving: they are kept until they expire (outside the observer,
                // which counts the failed refresh as one).
                credentials: walship_credentials::held_until_expiry(match on_credentials {
                    Some(observer) => {
                        walship_credentials::observed_s3_provider(access.provider().await, observer)
                    }
                    None => access.provider().await,
                }),
                sse,
                retry: retry.clone(),
            })
            .await?;
            Ok(Arc::new(store))
        }
        Destination::Azure {
            endpoint,
            account,
            container,
            ..
        } => {
            let creds = configuration.azure_credentials.as_ref().context(
                "spec.configuration.azureCredentials: required for an Azure destinationPath",
            )?;
            // The secrets stay Secrets until the store builds the SDK's credentials.
            let auth = walship_credentials::azure_access(creds, secrets)?;
            let store = AzureStore::new(AzureStoreConfig {
                endpoint: endpoint.clone(),
                account: account.clone(),
                container: container.clone(),
                auth,
                encryption_scope: match purpose {
                    Purpose::Wal => configuration.wal_encryption_scope(),
                    Purpose::Backups => backup_args
                        .encryption_scope
                        .clone()
                        .or_else(|| configuration.wal_encryption_scope()),
                },
                ca_bundle: endpoint_ca(doc, secrets)?,
                retry: retry.clone(),
            })?;
            Ok(Arc::new(store))
        }
        Destination::Gcs { bucket, .. } => {
            let creds = configuration.google_credentials.as_ref().context(
                "spec.configuration.googleCredentials: required for a gs:// destinationPath",
            )?;
            // The key stays in memory, a Secret until gcp_auth signs with it; nothing
            // writes it out.
            let auth = walship_credentials::google_access(creds, secrets)?;
            let store = GcsStore::new(GcsStoreConfig {
                bucket: bucket.clone(),
                endpoint_url: configuration.endpoint_url.clone(),
                auth,
                ca_bundle: endpoint_ca(doc, secrets)?,
                retry: retry.clone(),
            })?;
            Ok(Arc::new(store))
        }
    }
}

/// The certificates `endpointCA` names, if any, parsed in full: an HTTP client is only
/// ever handed certificates that parsed (an SDK panics on some it cannot decode).
fn endpoint_ca(doc: &ObjectStore, secrets: &Secrets) -> Result<Option<CaBundle>> {
    let Some(r) = &doc.spec.configuration.endpoint_ca else {
        return Ok(None);
    };
    let pem = secrets
        .read_bytes(r)
        .map_err(|e| anyhow::anyhow!("spec.configuration.endpointCA: {e}"))?;
    CaBundle::from_pem(pem.expose())
        .map(Some)
        .map_err(|problem| {
            anyhow::anyhow!(
                "spec.configuration.endpointCA: the secret {:?}, key {:?}, {problem}",
                r.name,
                r.key
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configured_compression_has_the_codec_of_its_name() {
        use walship_config::Compression as Configured;
        for configured in [
            Configured::Bzip2,
            Configured::Gzip,
            Configured::Lz4,
            Configured::Snappy,
            Configured::Xz,
            Configured::Zstd,
        ] {
            assert_eq!(
                Some(codec(configured)),
                Compression::from_name(configured.as_str()),
                "{configured:?}"
            );
        }
    }
}
