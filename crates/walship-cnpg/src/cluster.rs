//! What a call's `cluster_definition` (the Cluster resource as JSON) tells the sidecar,
//! read once into [`PluginConfig`]: which ObjectStore and server name this cluster
//! archives to, which ones it recovers or replicates from, and this pod's place.
//!
//! The rules are the Barman Cloud plugin's (`config.NewFromCluster`): the plugin's
//! entry in `spec.plugins[]` (enabled unless `enabled: false`) gives `barmanObjectName`
//! and `serverName` (default: the Cluster's name); the external cluster named by
//! `spec.bootstrap.recovery.source`, and the one named by `spec.replica.source`, give the
//! recovery and replica-source stores when their `plugin` is this one, their server
//! name defaulting to the Cluster's own name. Unknown fields are ignored, as the
//! plugin's lenient decoder ignores them: the Cluster has hundreds this sidecar does not
//! need.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::PLUGIN_NAME;

/// The Cluster JSON did not parse.
#[derive(Debug, thiserror::Error)]
#[error("cluster_definition is not a Cluster resource: {0}")]
pub struct BadCluster(#[from] serde_json::Error);

/// An ObjectStore and the server name within it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreRef {
    /// The ObjectStore's name, in the Cluster's namespace.
    pub object_store: String,
    pub server_name: String,
}

/// What this sidecar needs from a Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    pub cluster_name: String,
    pub namespace: String,
    pub cluster_uid: String,
    /// Where this cluster archives WAL and takes backups (`None` when the plugin's entry
    /// names no ObjectStore: a cluster that only recovers through the plugin).
    pub archive: Option<StoreRef>,
    /// `spec.bootstrap.recovery`'s source, when it is this plugin.
    pub recovery: Option<StoreRef>,
    /// `spec.replica.source`, when it is this plugin.
    pub replica_source: Option<StoreRef>,
    /// `status.currentPrimary` (empty while the first instance is being created).
    pub current_primary: String,
    /// `spec.replica.enabled`: this cluster replicates another one.
    pub is_replica_cluster: bool,
    /// Whether the replica source can be streamed from (it has connection parameters).
    pub replica_source_streams: bool,
    /// The plugin entry's `parameters`, whole.
    pub parameters: BTreeMap<String, String>,
    /// `spec.bootstrap.recovery.recoveryTarget`, when recovering to one.
    pub recovery_target: Option<RecoveryTarget>,
    /// `spec.walStorage` is set: pg_wal lives on a volume of its own.
    pub wal_storage: bool,
}

/// `spec.bootstrap.recovery.recoveryTarget`: what the restore job picks its backup by
/// (the rest of it is PostgreSQL's recovery settings, which CloudNativePG writes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryTarget {
    #[serde(rename = "backupID")]
    pub backup_id: Option<String>,
    pub target_time: Option<String>,
    #[serde(rename = "targetLSN")]
    pub target_lsn: Option<String>,
    #[serde(rename = "targetTLI")]
    pub target_tli: Option<String>,
    pub target_name: Option<String>,
    #[serde(rename = "targetXID")]
    pub target_xid: Option<String>,
    pub target_immediate: Option<bool>,
}

impl PluginConfig {
    /// Reads a call's `cluster_definition`.
    pub fn from_json(json: &[u8]) -> Result<PluginConfig, BadCluster> {
        let cluster: Cluster = serde_json::from_slice(json)?;
        let name = cluster.metadata.name.clone();
        let ours = cluster
            .spec
            .plugins
            .iter()
            .find(|p| p.name == PLUGIN_NAME && p.enabled.unwrap_or(true));
        let parameters = ours.map(|p| p.parameters.clone()).unwrap_or_default();
        let archive = parameters
            .get("barmanObjectName")
            .filter(|n| !n.is_empty())
            .map(|object_store| StoreRef {
                object_store: object_store.clone(),
                server_name: parameters
                    .get("serverName")
                    .filter(|n| !n.is_empty())
                    .cloned()
                    .unwrap_or_else(|| name.clone()),
            });
        let external = |source: Option<&String>| -> Option<&ExternalCluster> {
            let source = source.filter(|s| !s.is_empty())?;
            cluster
                .spec
                .external_clusters
                .iter()
                .find(|e| &e.name == source)
        };
        let source_store = |source: Option<&String>| -> Option<StoreRef> {
            let plugin = external(source)?.plugin.as_ref()?;
            if plugin.name != PLUGIN_NAME {
                return None;
            }
            Some(StoreRef {
                object_store: plugin
                    .parameters
                    .get("barmanObjectName")
                    .cloned()
                    .unwrap_or_default(),
                server_name: plugin
                    .parameters
                    .get("serverName")
                    .filter(|n| !n.is_empty())
                    .cloned()
                    .unwrap_or_else(|| name.clone()),
            })
        };
        let recovery = cluster
            .spec
            .bootstrap
            .as_ref()
            .and_then(|b| b.recovery.as_ref());
        let recovery_source = recovery.and_then(|r| r.source.as_ref());
        let replica_source = cluster
            .spec
            .replica
            .as_ref()
            .and_then(|r| r.source.as_ref());
        Ok(PluginConfig {
            namespace: cluster.metadata.namespace.clone(),
            cluster_uid: cluster.metadata.uid.clone(),
            archive,
            recovery: source_store(recovery_source),
            replica_source: source_store(replica_source),
            current_primary: cluster.status.current_primary.clone(),
            is_replica_cluster: cluster
                .spec
                .replica
                .as_ref()
                .is_some_and(|r| r.enabled.unwrap_or(false)),
            replica_source_streams: external(replica_source)
                .is_some_and(|e| e.connection_parameters.is_some()),
            parameters,
            recovery_target: recovery.and_then(|r| r.recovery_target.clone()),
            wal_storage: cluster.spec.wal_storage.is_some(),
            cluster_name: name,
        })
    }

    /// The store a WAL restore on pod `pod` reads, as the plugin picks it: a designated
    /// primary still promoting keeps reading its replica source; with no primary yet
    /// (a cluster being recovered) the recovery source; otherwise the cluster's own.
    pub fn restore_store(&self, pod: &str) -> Option<&StoreRef> {
        if self.current_primary == pod && self.replica_source.is_some() {
            self.replica_source.as_ref()
        } else if self.current_primary.is_empty() {
            self.recovery.as_ref()
        } else {
            self.archive.as_ref()
        }
    }

    /// Whether pod `pod` can stream WAL instead of reading the archive: a standby can;
    /// a designated primary of a replica cluster can when its source has connection
    /// parameters; a primary, or the first instance being created, cannot.
    pub fn can_stream(&self, pod: &str) -> bool {
        if self.current_primary.is_empty() {
            false
        } else if self.current_primary != pod {
            true
        } else {
            self.is_replica_cluster && self.replica_source_streams
        }
    }
}

#[derive(Deserialize)]
struct Cluster {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: Spec,
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    uid: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    plugins: Vec<Plugin>,
    #[serde(default)]
    external_clusters: Vec<ExternalCluster>,
    bootstrap: Option<Bootstrap>,
    replica: Option<Replica>,
    wal_storage: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Plugin {
    name: String,
    enabled: Option<bool>,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExternalCluster {
    name: String,
    plugin: Option<Plugin>,
    connection_parameters: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Bootstrap {
    recovery: Option<Recovery>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recovery {
    source: Option<String>,
    recovery_target: Option<RecoveryTarget>,
}

#[derive(Deserialize)]
struct Replica {
    enabled: Option<bool>,
    source: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(default)]
    current_primary: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> PluginConfig {
        PluginConfig::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn the_plugins_entry_gives_the_store_and_the_server_name_defaults_to_the_cluster() {
        let c = config(
            r#"{"metadata":{"name":"pg","namespace":"db","uid":"u-1"},
                "spec":{"instances":3,"plugins":[
                  {"name":"other.io","parameters":{"barmanObjectName":"nope"}},
                  {"name":"barman-cloud.cloudnative-pg.io","isWALArchiver":true,
                   "parameters":{"barmanObjectName":"minio-store"}}]},
                "status":{"currentPrimary":"pg-1"}}"#,
        );
        assert_eq!(
            c.archive,
            Some(StoreRef {
                object_store: "minio-store".into(),
                server_name: "pg".into()
            })
        );
        assert_eq!(
            (c.namespace.as_str(), c.cluster_uid.as_str()),
            ("db", "u-1")
        );
        assert_eq!(c.restore_store("pg-2"), c.archive.as_ref());
        assert!(c.can_stream("pg-2"));
        assert!(!c.can_stream("pg-1"), "the primary streams from nobody");
    }

    #[test]
    fn a_disabled_entry_or_none_gives_no_store() {
        let c = config(
            r#"{"metadata":{"name":"pg"},"spec":{"plugins":[
                {"name":"barman-cloud.cloudnative-pg.io","enabled":false,
                 "parameters":{"barmanObjectName":"s"}}]}}"#,
        );
        assert_eq!(c.archive, None);
        assert_eq!(config(r#"{"metadata":{"name":"pg"}}"#).archive, None);
    }

    #[test]
    fn a_cluster_being_recovered_reads_its_recovery_source_named_as_the_plugin_names_it() {
        let c = config(
            r#"{"metadata":{"name":"pg-restored"},
                "spec":{"bootstrap":{"recovery":{"source":"origin"}},
                  "externalClusters":[{"name":"origin","plugin":{
                    "name":"barman-cloud.cloudnative-pg.io",
                    "parameters":{"barmanObjectName":"old-store","serverName":"pg"}}}],
                  "plugins":[{"name":"barman-cloud.cloudnative-pg.io",
                    "parameters":{"barmanObjectName":"new-store"}}]},
                "status":{}}"#,
        );
        let recovery = StoreRef {
            object_store: "old-store".into(),
            server_name: "pg".into(),
        };
        assert_eq!(c.recovery, Some(recovery.clone()));
        assert_eq!(c.restore_store("pg-restored-1"), Some(&recovery));
        assert!(!c.can_stream("pg-restored-1"));
    }

    #[test]
    fn the_recovery_target_and_wal_storage_are_read_as_cloudnative_pg_spells_them() {
        let c = config(
            r#"{"metadata":{"name":"pg"},"spec":{"walStorage":{"size":"1Gi"},
                "bootstrap":{"recovery":{"source":"origin","recoveryTarget":{
                  "backupID":"20261130T101010","targetTime":"2026-11-30 10:20:00+00",
                  "targetLSN":"0/3000000","targetTLI":"2","targetImmediate":true}}}}}"#,
        );
        let target = c.recovery_target.unwrap();
        assert_eq!(target.backup_id.as_deref(), Some("20261130T101010"));
        assert_eq!(
            target.target_time.as_deref(),
            Some("2026-11-30 10:20:00+00")
        );
        assert_eq!(target.target_lsn.as_deref(), Some("0/3000000"));
        assert_eq!(target.target_tli.as_deref(), Some("2"));
        assert_eq!(target.target_immediate, Some(true));
        assert!(c.wal_storage);
        assert!(!config(r#"{"metadata":{"name":"pg"}}"#).wal_storage);
    }

    #[test]
    fn a_designated_primary_reads_its_replica_source_and_streams_only_with_a_connection() {
        let json = |connection: &str| {
            format!(
                r#"{{"metadata":{{"name":"pg-dr"}},
                "spec":{{"replica":{{"enabled":true,"source":"main"}},
                  "externalClusters":[{{"name":"main",{connection}"plugin":{{
                    "name":"barman-cloud.cloudnative-pg.io",
                    "parameters":{{"barmanObjectName":"main-store"}}}}}}]}},
                "status":{{"currentPrimary":"pg-dr-1"}}}}"#
            )
        };
        let c = config(&json(""));
        assert_eq!(
            c.restore_store("pg-dr-1"),
            Some(&StoreRef {
                object_store: "main-store".into(),
                server_name: "pg-dr".into()
            })
        );
        assert!(!c.can_stream("pg-dr-1"));
        let c = config(&json(r#""connectionParameters":{"host":"main-rw"},"#));
        assert!(c.can_stream("pg-dr-1"));
    }

    #[test]
    fn a_definition_that_is_not_json_is_an_error_that_says_so() {
        let e = PluginConfig::from_json(b"not json").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cluster_definition is not a Cluster"),
            "{e}"
        );
    }
}
