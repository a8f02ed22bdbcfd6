//! walship-kube: the configuration of CloudNativePG's sidecar, read from the Kubernetes
//! API as the Barman Cloud plugin's sidecar reads it, and the ObjectStore's status
//! written back.
//!
//! - [`Kube::cluster`]: the Cluster the pod belongs to (its `spec.plugins[]` entry names
//!   the ObjectStore and the server name).
//! - [`Kube::object_store`]: the ObjectStore, validated by walship-config's rules, with
//!   every Secret it names read into memory ([`walship_config::Secrets::fetched`]):
//!   nothing is written to disk.
//! - [`Kube::wait_for_change`]: watches the Cluster, the ObjectStore and its Secrets, one
//!   field-selected watch each (the plugin's Role grants get, list and watch on those
//!   names only), so a caller reloads when one changes.
//! - [`Kube::set_recovery_window`]: `status.serverRecoveryWindow.<server>`, by a read
//!   and a replace of the status subresource (the Role grants `update` on
//!   `objectstores/status`, not `patch`), retried on a conflict.
//! - [`Kube::delete_backups_not_in_catalog`]: after retention, the Cluster's completed
//!   plugin Backup resources whose backup is no longer in the catalog, as the plugin's
//!   sidecar deletes them (with the pod's own service account: CloudNativePG's Role for
//!   the instance grants list and delete on backups).
//!
//! Every error names the object (kind, namespace, name) and says whether it is missing,
//! forbidden or unreachable; none carries a Secret value.
//!
//! # What this crate must never do
//!
//! - Write a Secret value anywhere, or put one into an error or a log line.
//! - Write anything but the ObjectStore's `status.serverRecoveryWindow` entry of the
//!   server it is given, or delete anything but a Backup resource of this Cluster, taken
//!   by this plugin, completed, whose backup the catalog no longer has.
//! - Ask for more than the plugin's Role grants (get, list and watch on the named
//!   objects; update on `objectstores/status`).
//!
//! # Dependencies and why
//!
//! - `kube` (client only, rustls on aws-lc-rs, the provider the AWS SDK already
//!   brings): the user's choice for the Kubernetes API; in-cluster configuration or a
//!   kubeconfig, bearer tokens and their refresh.
//! - `k8s-openapi`: the Secret type, and the types kube's API is written in.
//! - `walship-config`: the ObjectStore model and its validation, and [`Secrets`].
//! - `futures`: merging the watch streams.
//! - `chrono`: the status' times.
//! - `serde_json`: objects this crate reads without a typed model (the Cluster, the
//!   ObjectStore's status).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, PostParams, WatchEvent, WatchParams};
use kube::core::GroupVersionKind;
use tracing::{debug, warn};
use walship_config::{Manifest, ObjectStore, SecretRef, Secrets};

/// The ObjectStore's group and version.
pub const OBJECT_STORE_GROUP: &str = "barmancloud.cnpg.io";
pub const OBJECT_STORE_VERSION: &str = "v1";

/// The Cluster's default group and version (`CUSTOM_CNPG_GROUP`, `CUSTOM_CNPG_VERSION`
/// name others).
pub const CNPG_GROUP: &str = "postgresql.cnpg.io";
pub const CNPG_VERSION: &str = "v1";

/// How long one watch request lasts before it is asked again (the API server ends
/// watches by itself after a while too).
const WATCH_SECONDS: u32 = 290;

/// Why something could not be read from or written to the API. Each names the object.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("Kubernetes client configuration: {0}")]
    Config(String),
    #[error("{kind} {namespace:?}/{name:?} does not exist (HTTP 404 from the Kubernetes API)")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{kind} {namespace:?}/{name:?}: access forbidden to {verb} it ({message}); {grant}")]
    Forbidden {
        kind: &'static str,
        namespace: String,
        name: String,
        verb: &'static str,
        message: String,
        /// Who grants what, for this kind.
        grant: &'static str,
    },
    #[error("{kind} {namespace:?}/{name:?}: the Kubernetes API answered {code}: {message}")]
    Api {
        kind: &'static str,
        namespace: String,
        name: String,
        code: u16,
        message: String,
    },
    #[error("{kind} {namespace:?}/{name:?}: cannot reach the Kubernetes API: {source}")]
    Unreachable {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("ObjectStore {namespace:?}/{name:?} is not valid:\n{errors}")]
    Invalid {
        namespace: String,
        name: String,
        errors: walship_config::ConfigErrors,
    },
}

impl KubeError {
    /// Whether the object is missing or may not be read (as opposed to an API that
    /// could not be reached or failed): a FAILED_PRECONDITION to CloudNativePG.
    pub fn is_precondition(&self) -> bool {
        matches!(
            self,
            KubeError::Config(_)
                | KubeError::NotFound { .. }
                | KubeError::Forbidden { .. }
                | KubeError::Invalid { .. }
        )
    }
}

/// The ObjectStore as read, with its Secrets.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub manifest: Manifest,
    pub secrets: Secrets,
}

/// The objects a configuration was read from, and the versions read, to watch them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watched {
    /// (kind, name) → resourceVersion.
    pub versions: BTreeMap<(Kind, String), String>,
}

/// The kinds this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Cluster,
    ObjectStore,
    Secret,
    Backup,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Cluster => "Cluster",
            Kind::ObjectStore => "ObjectStore",
            Kind::Secret => "Secret",
            Kind::Backup => "Backup",
        }
    }

    /// Who grants access to this kind, for an error that says what is missing.
    fn grant(self) -> &'static str {
        match self {
            Kind::Backup => {
                "CloudNativePG's Role for the instance (the pod's service account) grants \
                 list and delete on backups"
            }
            _ => {
                "the Barman Cloud plugin's Role `<cluster>-barman-cloud` grants get, list and \
                 watch on the ObjectStores and Secrets the Cluster names, and update on \
                 objectstores/status"
            }
        }
    }
}

/// One server's entry of `status.serverRecoveryWindow`; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecoveryWindow {
    pub first_recoverability_point: Option<DateTime<Utc>>,
    pub last_successful_backup_time: Option<DateTime<Utc>>,
    pub last_failed_backup_time: Option<DateTime<Utc>>,
}

/// A client for one namespace.
#[derive(Clone)]
pub struct Kube {
    client: kube::Client,
    namespace: String,
    cluster: ApiResource,
    object_store: ApiResource,
    backup: ApiResource,
}

impl Kube {
    /// In-cluster configuration (the pod's service account), or the kubeconfig
    /// `KUBECONFIG` names when it is set. `cnpg_group` and `cnpg_version` are the
    /// Cluster's (`CUSTOM_CNPG_GROUP`, `CUSTOM_CNPG_VERSION`).
    pub async fn connect(
        namespace: &str,
        cnpg_group: &str,
        cnpg_version: &str,
    ) -> Result<Kube, KubeError> {
        let config = if std::env::var_os("KUBECONFIG").is_some() {
            kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| KubeError::Config(format!("KUBECONFIG: {e}")))?
        } else {
            kube::Config::incluster().map_err(|e| {
                KubeError::Config(format!(
                    "in-cluster configuration (no KUBECONFIG is set): {e}"
                ))
            })?
        };
        let client =
            kube::Client::try_from(config).map_err(|e| KubeError::Config(e.to_string()))?;
        Ok(Kube {
            client,
            namespace: namespace.to_owned(),
            cluster: ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(cnpg_group, cnpg_version, "Cluster"),
                "clusters",
            ),
            object_store: ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(OBJECT_STORE_GROUP, OBJECT_STORE_VERSION, "ObjectStore"),
                "objectstores",
            ),
            backup: ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(cnpg_group, cnpg_version, "Backup"),
                "backups",
            ),
        })
    }

    /// The namespace read.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn dynamic(&self, kind: Kind) -> Api<DynamicObject> {
        let resource = match kind {
            Kind::Cluster => &self.cluster,
            Kind::Backup => &self.backup,
            _ => &self.object_store,
        };
        Api::namespaced_with(self.client.clone(), &self.namespace, resource)
    }

    fn error(&self, of: Kind, name: &str, verb: &'static str, e: kube::Error) -> KubeError {
        let (kind, namespace, name) = (of.name(), self.namespace.clone(), name.to_owned());
        match e {
            kube::Error::Api(status) if status.code == 404 => KubeError::NotFound {
                kind,
                namespace,
                name,
            },
            kube::Error::Api(status) if status.code == 403 || status.code == 401 => {
                KubeError::Forbidden {
                    kind: of.name(),
                    namespace,
                    name,
                    verb,
                    message: status.message,
                    grant: of.grant(),
                }
            }
            kube::Error::Api(status) => KubeError::Api {
                kind,
                namespace,
                name,
                code: status.code,
                message: status.message,
            },
            source => KubeError::Unreachable {
                kind,
                namespace,
                name,
                source,
            },
        }
    }

    /// The Cluster `name` as its JSON bytes (as CNPG-I calls carry it), and its
    /// resourceVersion.
    pub async fn cluster(&self, name: &str) -> Result<(Vec<u8>, String), KubeError> {
        let object = self
            .dynamic(Kind::Cluster)
            .get(name)
            .await
            .map_err(|e| self.error(Kind::Cluster, name, "get", e))?;
        let version = object.metadata.resource_version.clone().unwrap_or_default();
        let value = serde_json::to_vec(&object).map_err(|e| KubeError::Api {
            kind: "Cluster",
            namespace: self.namespace.clone(),
            name: name.to_owned(),
            code: 200,
            message: format!("cannot be read as JSON: {e}"),
        })?;
        Ok((value, version))
    }

    /// The ObjectStore `name`, validated, with its Secrets; `watched` gains their
    /// versions.
    pub async fn object_store(
        &self,
        name: &str,
        watched: &mut Watched,
    ) -> Result<Loaded, KubeError> {
        let object = self
            .dynamic(Kind::ObjectStore)
            .get(name)
            .await
            .map_err(|e| self.error(Kind::ObjectStore, name, "get", e))?;
        watched.versions.insert(
            (Kind::ObjectStore, name.to_owned()),
            object.metadata.resource_version.clone().unwrap_or_default(),
        );
        let value = serde_json::to_value(&object).unwrap_or_default();
        let manifest =
            walship_config::parse_value(&value).map_err(|errors| KubeError::Invalid {
                namespace: self.namespace.clone(),
                name: name.to_owned(),
                errors,
            })?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut values = BTreeMap::new();
        for secret_name in secret_names(&manifest) {
            let secret = secrets
                .get(&secret_name)
                .await
                .map_err(|e| self.error(Kind::Secret, &secret_name, "get", e))?;
            watched.versions.insert(
                (Kind::Secret, secret_name.clone()),
                secret.metadata.resource_version.clone().unwrap_or_default(),
            );
            let mut keys: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(key, value)| (key, value.0))
                .collect();
            // stringData is write-only in the API, but a stand-in or an old server may
            // serve it; data wins where both have a key, as the API server merges them.
            for (key, value) in secret.string_data.unwrap_or_default() {
                keys.entry(key).or_insert_with(|| value.into_bytes());
            }
            values.insert(secret_name, keys);
        }
        Ok(Loaded {
            manifest,
            secrets: Secrets::fetched(format!("namespace {:?}", self.namespace), values),
        })
    }

    /// Returns when one of the `watched` objects changed from the version read (or was
    /// deleted), or when a watch ended by itself: the caller reads them all again and
    /// compares. `Err` when no watch could be started.
    pub async fn wait_for_change(&self, watched: &Watched) -> Result<(), KubeError> {
        let mut streams = Vec::new();
        for ((kind, name), version) in &watched.versions {
            let params = WatchParams::default()
                .fields(&format!("metadata.name={name}"))
                .timeout(WATCH_SECONDS);
            let stream = match kind {
                Kind::Secret => {
                    let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
                    api.watch(&params, version).await.map(|s| {
                        s.map(|e| {
                            e.map(|e| {
                                event_version(&e, |s: &Secret| s.metadata.resource_version.clone())
                            })
                        })
                        .boxed()
                    })
                }
                _ => self.dynamic(*kind).watch(&params, version).await.map(|s| {
                    s.map(|e| {
                        e.map(|e| {
                            event_version(&e, |o: &DynamicObject| {
                                o.metadata.resource_version.clone()
                            })
                        })
                    })
                    .boxed()
                }),
            }
            .map_err(|e| self.error(*kind, name, "watch", e))?;
            let (kind, name, version) = (*kind, name.clone(), version.clone());
            streams.push(
                stream
                    .map(move |event| (kind, name.clone(), version.clone(), event))
                    .boxed(),
            );
        }
        if streams.is_empty() {
            return Ok(());
        }
        let mut all = futures::stream::select_all(streams);
        while let Some((kind, name, version, event)) = all.next().await {
            match event {
                Ok(Seen::Version(Some(seen))) if seen == version => continue,
                Ok(Seen::Version(_)) => {
                    debug!("{} {name:?} changed", kind.name());
                    return Ok(());
                }
                Ok(Seen::Bookmark) => continue,
                Ok(Seen::Error(message)) => {
                    // 410 Gone and the like: read everything again.
                    debug!("watch of {} {name:?} ended: {message}", kind.name());
                    return Ok(());
                }
                Err(e) => {
                    warn!("watch of {} {name:?} failed: {e}", kind.name());
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Sets `status.serverRecoveryWindow.<server>`'s fields that `window` has, keeping
    /// the rest of the status; retried while another writer's update conflicts.
    pub async fn set_recovery_window(
        &self,
        store: &str,
        server: &str,
        window: &RecoveryWindow,
    ) -> Result<(), KubeError> {
        let api = self.dynamic(Kind::ObjectStore);
        let mut conflicts = 0;
        loop {
            let mut object = api
                .get_status(store)
                .await
                .map_err(|e| self.error(Kind::ObjectStore, store, "get", e))?;
            set_window(&mut object.data, server, window);
            match api
                .replace_status(store, &PostParams::default(), &object)
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 && conflicts < 5 => {
                    conflicts += 1;
                    tokio::time::sleep(Duration::from_millis(100 * conflicts)).await;
                }
                Err(e) => {
                    return Err(self.error(Kind::ObjectStore, store, "update the status of", e));
                }
            }
        }
    }
}

impl Kube {
    /// Deletes the Backup resources of Cluster `cluster` (uid `cluster_uid`) whose
    /// backup `catalog` (every id in the store's catalog) no longer has, as the plugin's
    /// sidecar does after retention: only completed ones, taken with the plugin method
    /// by this plugin for this very Cluster (its uid in the Backup's plugin metadata),
    /// so another cluster's, another tool's or a running backup is never touched. The
    /// names deleted; every deletion is tried, and the first error is returned after.
    pub async fn delete_backups_not_in_catalog(
        &self,
        cluster: &str,
        cluster_uid: &str,
        plugin: &str,
        catalog: &BTreeSet<String>,
    ) -> Result<Vec<String>, KubeError> {
        let api = self.dynamic(Kind::Backup);
        let listed = api
            .list(&kube::api::ListParams::default())
            .await
            .map_err(|e| self.error(Kind::Backup, "*", "list", e))?;
        let mut deleted = Vec::new();
        let mut first_error = None;
        for backup in listed.items {
            let Some(name) = backup.metadata.name.clone() else {
                continue;
            };
            if !obsolete(&backup.data, cluster, cluster_uid, plugin, catalog) {
                continue;
            }
            match api.delete(&name, &Default::default()).await {
                Ok(_) => deleted.push(name),
                // Gone already: what was wanted.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => {
                    let e = self.error(Kind::Backup, &name, "delete", e);
                    warn!("{e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(deleted),
        }
    }
}

/// Whether a Backup resource (its `spec` and `status`) stands for a backup of this
/// Cluster by this plugin, completed, that `catalog` no longer has.
fn obsolete(
    backup: &serde_json::Value,
    cluster: &str,
    cluster_uid: &str,
    plugin: &str,
    catalog: &BTreeSet<String>,
) -> bool {
    let status = &backup["status"];
    let metadata = &status["pluginMetadata"];
    backup["spec"]["cluster"]["name"] == cluster
        && status["phase"] == "completed"
        && status["method"] == "plugin"
        && !cluster_uid.is_empty()
        && metadata["clusterUID"] == cluster_uid
        && metadata["pluginName"] == plugin
        && status["backupId"]
            .as_str()
            .is_some_and(|id| !id.is_empty() && !catalog.contains(id))
}

/// What a watch event says of the watched object.
enum Seen {
    /// Its resourceVersion now (`None` when the event has none).
    Version(Option<String>),
    Bookmark,
    Error(String),
}

fn event_version<K>(event: &WatchEvent<K>, version: impl Fn(&K) -> Option<String>) -> Seen {
    match event {
        WatchEvent::Added(o) | WatchEvent::Modified(o) => Seen::Version(version(o)),
        // A deleted object is a change whatever its last version was.
        WatchEvent::Deleted(_) => Seen::Version(None),
        WatchEvent::Bookmark(_) => Seen::Bookmark,
        WatchEvent::Error(status) => Seen::Error(format!("{} {}", status.code, status.message)),
    }
}

/// Writes `window` into `data["status"]["serverRecoveryWindow"][server]`.
fn set_window(data: &mut serde_json::Value, server: &str, window: &RecoveryWindow) {
    if !data.is_object() {
        *data = serde_json::json!({});
    }
    let status = data
        .as_object_mut()
        .expect("an object")
        .entry("status")
        .or_insert_with(|| serde_json::json!({}));
    if !status.is_object() {
        *status = serde_json::json!({});
    }
    let windows = status
        .as_object_mut()
        .expect("an object")
        .entry("serverRecoveryWindow")
        .or_insert_with(|| serde_json::json!({}));
    if !windows.is_object() {
        *windows = serde_json::json!({});
    }
    let entry = windows
        .as_object_mut()
        .expect("an object")
        .entry(server)
        .or_insert_with(|| serde_json::json!({}));
    if !entry.is_object() {
        *entry = serde_json::json!({});
    }
    let entry = entry.as_object_mut().expect("an object");
    for (field, value) in [
        (
            "firstRecoverabilityPoint",
            &window.first_recoverability_point,
        ),
        (
            "lastSuccessfulBackupTime",
            &window.last_successful_backup_time,
        ),
        ("lastFailedBackupTime", &window.last_failed_backup_time),
    ] {
        if let Some(time) = value {
            // As `metav1.Time` serializes: RFC 3339, whole seconds, UTC.
            let time = time.to_rfc3339_opts(SecondsFormat::Secs, true);
            entry.insert(field.to_owned(), serde_json::Value::String(time));
        }
    }
}

/// Every Secret an ObjectStore names, once each.
pub fn secret_names(store: &ObjectStore) -> BTreeSet<String> {
    let c = &store.spec.configuration;
    let mut refs: Vec<&SecretRef> = Vec::new();
    refs.extend(c.endpoint_ca.as_ref());
    if let Some(s3) = &c.s3_credentials {
        refs.extend(
            [
                &s3.access_key_id,
                &s3.secret_access_key,
                &s3.session_token,
                &s3.region,
            ]
            .into_iter()
            .flatten(),
        );
    }
    if let Some(azure) = &c.azure_credentials {
        refs.extend(
            [
                &azure.connection_string,
                &azure.storage_account,
                &azure.storage_key,
                &azure.storage_sas_token,
            ]
            .into_iter()
            .flatten(),
        );
    }
    if let Some(google) = &c.google_credentials {
        refs.extend(google.application_credentials.as_ref());
    }
    refs.into_iter().map(|r| r.name.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recovery_window_is_set_for_its_server_and_keeps_the_others() {
        let mut data = serde_json::json!({
            "status": {"serverRecoveryWindow": {
                "other": {"lastSuccessfulBackupTime": "2026-01-01T00:00:00Z"},
                "pg": {"lastFailedBackupTime": "2026-02-01T00:00:00Z"}
            }}
        });
        let window = RecoveryWindow {
            first_recoverability_point: Some("2026-03-01T00:00:00.25Z".parse().unwrap()),
            last_successful_backup_time: Some("2026-03-02T00:00:00Z".parse().unwrap()),
            last_failed_backup_time: None,
        };
        set_window(&mut data, "pg", &window);
        assert_eq!(
            data,
            serde_json::json!({"status": {"serverRecoveryWindow": {
                "other": {"lastSuccessfulBackupTime": "2026-01-01T00:00:00Z"},
                "pg": {
                    "lastFailedBackupTime": "2026-02-01T00:00:00Z",
                    "firstRecoverabilityPoint": "2026-03-01T00:00:00Z",
                    "lastSuccessfulBackupTime": "2026-03-02T00:00:00Z"
                }
            }}})
        );
        let mut empty = serde_json::json!({"spec": {}});
        set_window(&mut empty, "pg", &window);
        assert_eq!(
            empty["status"]["serverRecoveryWindow"]["pg"]["firstRecoverabilityPoint"],
            "2026-03-01T00:00:00Z"
        );
    }

    #[test]
    fn every_secret_an_object_store_names_is_read_once() {
        let manifest = walship_config::parse(
            "apiVersion: barmancloud.cnpg.io/v1\nkind: ObjectStore\nmetadata: {name: s}\n\
             spec:\n  configuration:\n    destinationPath: s3://bkt/p\n    endpointCA: {name: ca, key: ca.crt}\n\
             \x20   s3Credentials:\n      accessKeyId: {name: aws, key: ID}\n      secretAccessKey: {name: aws, key: KEY}\n",
        )
        .unwrap();
        assert_eq!(
            secret_names(&manifest).into_iter().collect::<Vec<_>>(),
            ["aws", "ca"]
        );
    }

    #[test]
    fn only_this_clusters_completed_plugin_backups_missing_from_the_catalog_are_obsolete() {
        let catalog: BTreeSet<String> = ["20261130T000000".to_owned()].into();
        let backup = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut b = serde_json::json!({
                "spec": {"cluster": {"name": "pg"}, "method": "plugin"},
                "status": {"phase": "completed", "method": "plugin",
                    "backupId": "20200101T000000",
                    "pluginMetadata": {"clusterUID": "uid-1",
                        "pluginName": "barman-cloud.cloudnative-pg.io"}}
            });
            change(&mut b);
            obsolete(
                &b,
                "pg",
                "uid-1",
                "barman-cloud.cloudnative-pg.io",
                &catalog,
            )
        };
        assert!(backup(&|_| {}));
        for (why, change) in [
            (
                "in the catalog",
                &(|b: &mut serde_json::Value| b["status"]["backupId"] = "20261130T000000".into())
                    as &dyn Fn(&mut serde_json::Value),
            ),
            ("another cluster", &|b| {
                b["spec"]["cluster"]["name"] = "other".into()
            }),
            ("another uid (a cluster of the same name before)", &|b| {
                b["status"]["pluginMetadata"]["clusterUID"] = "uid-0".into()
            }),
            ("another plugin", &|b| {
                b["status"]["pluginMetadata"]["pluginName"] = "other.io".into()
            }),
            ("running", &|b| b["status"]["phase"] = "running".into()),
            ("failed", &|b| b["status"]["phase"] = "failed".into()),
            ("a volume snapshot", &|b| {
                b["status"]["method"] = "volumeSnapshot".into()
            }),
            ("no backup id yet", &|b| {
                b["status"].as_object_mut().unwrap().remove("backupId");
            }),
            ("no status", &|b| {
                b.as_object_mut().unwrap().remove("status");
            }),
        ] {
            assert!(!backup(change), "{why}");
        }
    }
}
