//! The typed ObjectStore model, mirroring the plugin's `ObjectStore` CRD and
//! barman-cloud's `BarmanObjectStoreConfiguration` field for field.
//!
//! Values of these types normally come from [`crate::parse`] or [`crate::load`],
//! which check the document against the schema and the plugin's rules first;
//! the serde derives alone do not validate anything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::destination::Destination;
use crate::error::ConfigError;

/// The only accepted `apiVersion`.
pub const API_VERSION: &str = "barmancloud.cnpg.io/v1";
/// The only accepted `kind`.
pub const KIND: &str = "ObjectStore";
/// WAL files archived or restored at once when `wal.maxParallel` is unset
/// (barman-cloud and the plugin process one file at a time by default).
pub const DEFAULT_WAL_MAX_PARALLEL: u32 = 1;
/// The plugin's default for `instanceSidecarConfiguration.retentionPolicyIntervalSeconds`.
pub const DEFAULT_RETENTION_POLICY_INTERVAL_SECONDS: u32 = 1800;

/// A `barmancloud.cnpg.io/v1` `ObjectStore` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStore {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ObjectStoreSpec,
}

/// The parts of Kubernetes object metadata walship keeps. Other standard
/// metadata fields (uid, resourceVersion, managedFields, ...) are accepted and
/// dropped, so `kubectl get -o yaml` output can be used as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `spec` of an ObjectStore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreSpec {
    #[serde(default)]
    pub configuration: BarmanObjectStoreConfiguration,
    /// `^[1-9][0-9]*[dwm]$`, see [`RetentionPolicy`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_sidecar_configuration: Option<InstanceSidecarConfiguration>,
}

/// `spec.instanceSidecarConfiguration`. walship has no sidecar of its own to
/// configure; the fields are kept so the plugin's documents parse, and so
/// `logLevel` and the retention interval can be honoured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSidecarConfiguration {
    /// Kubernetes `EnvVar` objects, kept as they were written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<serde_json::Value>,
    /// A Kubernetes `ResourceRequirements` object, kept as it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy_interval_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_container_args: Vec<String>,
    /// One of `error`, `warning`, `info`, `debug`, `trace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

impl InstanceSidecarConfiguration {
    /// The retention check interval, with the plugin's default of 1800 s.
    pub fn retention_policy_interval_seconds(&self) -> u32 {
        self.retention_policy_interval_seconds
            .unwrap_or(DEFAULT_RETENTION_POLICY_INTERVAL_SECONDS)
    }
}

/// `spec.configuration`: where the archive is and how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BarmanObjectStoreConfiguration {
    /// `s3://BUCKET[/PREFIX]`, `gs://BUCKET[/PREFIX]`, an Azure blob URL, or
    /// walship's own `file:///ABSOLUTE/PATH`. See [`Destination`].
    #[serde(default)]
    pub destination_path: String,
    #[serde(
        rename = "endpointURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_url: Option<String>,
    #[serde(
        rename = "endpointCA",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_ca: Option<SecretRef>,
    /// The plugin's CRD forbids this field (the server name is a Cluster
    /// parameter there); walship has no Cluster resource, so it accepts it as
    /// the default for `--server-name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_credentials: Option<S3Credentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_credentials: Option<AzureCredentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_credentials: Option<GoogleCredentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataConfig>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub history_tags: BTreeMap<String, String>,
}

impl BarmanObjectStoreConfiguration {
    /// The parsed `destinationPath`, or the error validation would report. A
    /// [`crate::Manifest`] holds it parsed once and for all.
    pub fn try_destination(&self) -> Result<Destination, ConfigError> {
        Destination::parse(&self.destination_path)
    }

    /// `wal.maxParallel`, or 1 when unset.
    pub fn wal_max_parallel(&self) -> u32 {
        self.wal
            .as_ref()
            .map_or(DEFAULT_WAL_MAX_PARALLEL, WalConfig::max_parallel)
    }

    /// `wal.compression`, or `None` (store WAL uncompressed).
    pub fn wal_compression(&self) -> Option<Compression> {
        self.wal.as_ref().and_then(WalConfig::compression)
    }

    /// The Azure encryption scope for WAL. The plugin has no field for it: users pass
    /// barman-cloud-wal-archive's own `--encryption-scope NAME` (or
    /// `--encryption-scope=NAME`) in `wal.archiveAdditionalCommandArgs`, so that is
    /// where walship reads it. The last one given wins, as with argparse.
    pub fn wal_encryption_scope(&self) -> Option<String> {
        let args = &self.wal.as_ref()?.archive_additional_command_args;
        let mut scope = None;
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            if let Some(value) = arg.strip_prefix("--encryption-scope=") {
                scope = Some(value.trim().to_owned());
            } else if arg == "--encryption-scope"
                && let Some(value) = iter.next()
            {
                scope = Some(value.trim().to_owned());
            }
        }
        scope.filter(|s| !s.is_empty())
    }
}

/// A reference to one key of a Kubernetes Secret (`SecretKeySelector`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SecretRef {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub key: String,
}

impl SecretRef {
    /// Convenience constructor.
    pub fn new(name: impl Into<String>, key: impl Into<String>) -> Self {
        SecretRef {
            name: name.into(),
            key: key.into(),
        }
    }
}

/// `s3Credentials`: static keys, or the pod's IAM role (IRSA).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Credentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<SecretRef>,
    #[serde(
        rename = "inheritFromIAMRole",
        default,
        skip_serializing_if = "is_false"
    )]
    pub inherit_from_iam_role: bool,
}

/// `azureCredentials`: a connection string, or a storage account with a key,
/// a SAS token, workload identity or the default Azure credential chain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AzureCredentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_string: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_account: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_key: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_sas_token: Option<SecretRef>,
    #[serde(
        rename = "inheritFromAzureAD",
        default,
        skip_serializing_if = "is_false"
    )]
    pub inherit_from_azure_ad: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_default_azure_credentials: bool,
}

/// `googleCredentials`: a service-account JSON key, or GKE workload identity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GoogleCredentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_credentials: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub gke_environment: bool,
}

/// `wal`: how WAL segments are stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub archive_additional_command_args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_additional_command_args: Vec<String>,
}

impl WalConfig {
    /// WAL files to archive or restore at once; 1 when unset, as in barman-cloud.
    pub fn max_parallel(&self) -> u32 {
        self.max_parallel.unwrap_or(DEFAULT_WAL_MAX_PARALLEL)
    }

    /// The WAL compression, `None` meaning uncompressed.
    pub fn compression(&self) -> Option<Compression> {
        self.compression
    }
}

/// `data`: how base backups are stored (kept for compatibility; walship's
/// WAL path does not use it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataConfig {
    /// Only gzip, bzip2, lz4 and snappy are allowed here, as in the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub immediate_checkpoint: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_command_args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_additional_command_args: Vec<String>,
}

impl DataConfig {
    /// `additionalCommandArgs` as walship carries them out (see
    /// [`crate::BackupCommandArgs`]); an error names the item, its value and what is
    /// accepted. Only `walship backup` asks: a bad backup option fails the backup, never
    /// the manifest (WAL archiving goes on).
    pub fn backup_args(&self) -> Result<crate::BackupCommandArgs, crate::ConfigError> {
        crate::parse_backup_args(
            &self.additional_command_args,
            "spec.configuration.data.additionalCommandArgs",
        )
    }
}

/// Compression algorithms of barman-cloud (the plugin's WAL enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Bzip2,
    Gzip,
    Lz4,
    Snappy,
    Xz,
    Zstd,
}

impl Compression {
    /// Every value, in the plugin's order.
    pub const ALL: [Compression; 6] = [
        Compression::Bzip2,
        Compression::Gzip,
        Compression::Lz4,
        Compression::Snappy,
        Compression::Xz,
        Compression::Zstd,
    ];

    /// The spelling used in the YAML and by barman-cloud.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Bzip2 => "bzip2",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
            Compression::Snappy => "snappy",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Server-side encryption to request from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Encryption {
    #[serde(rename = "AES256")]
    Aes256,
    #[serde(rename = "aws:kms")]
    AwsKms,
}

impl Encryption {
    /// The spelling used in the YAML and by S3.
    pub fn as_str(self) -> &'static str {
        match self {
            Encryption::Aes256 => "AES256",
            Encryption::AwsKms => "aws:kms",
        }
    }
}

impl std::fmt::Display for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed `retentionPolicy` (`RECOVERY WINDOW OF N DAYS|WEEKS|MONTHS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub count: u32,
    pub unit: RetentionUnit,
}

/// The unit of a [`RetentionPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionUnit {
    Days,
    Weeks,
    Months,
}

impl RetentionPolicy {
    /// Parse `^[1-9][0-9]*[dwm]$`; `None` when it does not match (or overflows).
    pub fn parse(s: &str) -> Option<RetentionPolicy> {
        let (digits, unit) = s.split_at_checked(s.len().checked_sub(1)?)?;
        let unit = match unit {
            "d" => RetentionUnit::Days,
            "w" => RetentionUnit::Weeks,
            "m" => RetentionUnit::Months,
            _ => return None,
        };
        if digits.is_empty()
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(RetentionPolicy {
            count: digits.parse().ok()?,
            unit,
        })
    }
}

impl ObjectStoreSpec {
    /// The parsed `retentionPolicy`, if set (always parseable after validation).
    pub fn retention_policy(&self) -> Option<RetentionPolicy> {
        self.retention_policy
            .as_deref()
            .and_then(RetentionPolicy::parse)
    }
}

impl ObjectStore {
    /// The server name (the directory under the prefix): `cli_override`, else
    /// `spec.configuration.serverName`, else `metadata.name`, else an error asking for one.
    /// (Under CloudNativePG the plugin uses the Cluster's name: pass it with
    /// `--server-name`.)
    pub fn server_name(&self, cli_override: Option<&str>) -> Result<String, ConfigError> {
        let (path, name) = match (cli_override, self.spec.configuration.server_name.as_deref()) {
            (Some(name), _) => ("--server-name", name),
            (None, Some(name)) => ("spec.configuration.serverName", name),
            (None, None) if !self.metadata.name.is_empty() => {
                ("metadata.name", &*self.metadata.name)
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "spec.configuration.serverName",
                    "no server name given",
                    "--server-name NAME (the plugin uses the Cluster's name),                      spec.configuration.serverName or metadata.name",
                ));
            }
        };
        check_server_name(path, name)?;
        Ok(name.to_string())
    }
}

/// A server name becomes one path component of every key: it must not be
/// empty, contain `/`, or be `.`/`..`.
pub(crate) fn check_server_name(path: &str, name: &str) -> Result<(), ConfigError> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name == "." || name == ".." {
        Some("is a relative path component")
    } else if name.chars().any(char::is_control) {
        Some("contains control characters")
    } else {
        None
    };
    match problem {
        Some(p) => Err(ConfigError::with_value(
            path,
            name,
            p,
            "a server name such as the Cluster's name (one path component, no '/')",
        )),
        None => Ok(()),
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}
