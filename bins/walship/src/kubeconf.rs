//! The sidecar's configuration from the Kubernetes API, as the Barman Cloud plugin's
//! sidecar reads it: the pod's Cluster names the ObjectStore (its `spec.plugins[]`
//! entry, or the recovery or replica source where the Cluster archives nowhere), the
//! ObjectStore and its Secrets come from the API, and a watch of all of them keeps
//! [`Live`] current. A change notifies the daemon's reload loop, which swaps the store.
//!
//! What cannot be read (no ObjectStore, a missing Secret, a permission the Role lacks)
//! is kept as the reason, never a crash: the sidecar keeps serving, each call answers
//! FAILED_PRECONDITION with the reason, and the watch goes on until it can be read.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use walship_backup::upkeep::CatalogSummary;
use walship_cnpg::PLUGIN_NAME;
use walship_cnpg::cluster::{PluginConfig, StoreRef};
use walship_kube::{Kind, Kube, Loaded, RecoveryWindow, Watched};

/// How long after a failed read the next one is tried, when no watch could be set up.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// What the sidecar serves, read from the API.
#[derive(Debug)]
pub struct Resolved {
    /// The ObjectStore's name.
    pub store: String,
    /// The server name WAL and backups go under.
    pub server: String,
    pub loaded: Loaded,
    /// The pod's Cluster: its name and uid (for the pod's own store only).
    pub cluster: Option<(String, String)>,
}

/// The configuration as last read: [`Resolved`], or why it cannot be.
pub type Snapshot = Result<Arc<Resolved>, String>;

/// The latest snapshot, kept fresh by a watch.
#[derive(Clone)]
pub struct Live {
    snapshot: watch::Receiver<Snapshot>,
    kube: Kube,
    changed: Arc<Notify>,
}

/// What to follow.
#[derive(Debug, Clone)]
pub enum Wanted {
    /// The pod's own store: the one its Cluster archives to, or where it archives
    /// nowhere (a replica cluster), the one its WAL is restored from.
    Pod {
        cluster: String,
        pod: String,
        /// `--server-name`, over the Cluster's.
        server_override: Option<String>,
    },
    /// A store a call names besides the pod's own: a recovery or replica source, a
    /// Backup's own `barmanObjectName`.
    Store(StoreRef),
}

impl Live {
    /// Reads the configuration once, then keeps reading it at every change until
    /// `shutdown`; [`Live::changed`] is notified when what is served changes.
    pub async fn start(kube: Kube, wanted: Wanted, shutdown: CancellationToken) -> Live {
        let changed = Arc::new(Notify::new());
        let mut watched = Watched::default();
        let first = read(&kube, &wanted, &mut watched).await;
        match &first {
            Ok(r) => info!(
                objectstore = %r.store,
                server = %r.server,
                "configuration read from the Kubernetes API (namespace {:?})",
                kube.namespace()
            ),
            Err(e) => warn!("{e}; calls answer FAILED_PRECONDITION until it can be read"),
        }
        let (send, snapshot) = watch::channel(first);
        let watching = kube.clone();
        let notify = changed.clone();
        tokio::spawn(async move {
            loop {
                // While the configuration cannot be read, what it will need may not
                // exist yet (an ObjectStore, a Secret): read again every while. Once it
                // is read, watch what it was read from.
                let readable = send.borrow().is_ok();
                let waited = if readable {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        waited = watching.wait_for_change(&watched) => waited,
                    }
                } else {
                    Ok(())
                };
                if let Err(e) = &waited {
                    warn!("cannot watch the configuration: {e}");
                }
                if !readable || waited.is_err() {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(RETRY_AFTER) => {}
                    }
                }
                let mut now_watched = Watched::default();
                let next = read(&watching, &wanted, &mut now_watched).await;
                watched = now_watched;
                let same = match (&*send.borrow(), &next) {
                    (Ok(a), Ok(b)) => {
                        a.store == b.store && a.server == b.server && a.loaded == b.loaded
                    }
                    (Err(a), Err(b)) => a == b,
                    _ => false,
                };
                if same {
                    continue;
                }
                match &next {
                    Ok(r) => info!(
                        objectstore = %r.store,
                        server = %r.server,
                        "the configuration changed in the Kubernetes API: reloading"
                    ),
                    Err(e) => {
                        warn!("{e}; calls answer FAILED_PRECONDITION until it can be read again")
                    }
                }
                // A configuration that cannot be read leaves the daemon on its last good
                // store; calls are refused meanwhile.
                let reload = next.is_ok();
                let _previous = send.send_replace(next);
                if reload {
                    notify.notify_one();
                }
            }
        });
        Live {
            snapshot,
            kube,
            changed,
        }
    }

    /// Notified when a new configuration was read (for the daemon's reload loop).
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// The client it reads with.
    pub fn kube(&self) -> &Kube {
        &self.kube
    }

    /// The configuration as last read.
    pub fn current(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// Writes the catalog's figures as the ObjectStore's `status.serverRecoveryWindow`
    /// entry of the server served, as the plugin does after a backup and after
    /// retention. A failure is logged: the backup or the round stands either way.
    pub async fn publish(&self, summary: &CatalogSummary) {
        let Ok(resolved) = self.current() else {
            return;
        };
        let utc = |t: Option<chrono::DateTime<chrono::FixedOffset>>| {
            t.map(|t| t.with_timezone(&chrono::Utc))
        };
        let window = RecoveryWindow {
            first_recoverability_point: utc(summary.first_recoverability_point),
            last_successful_backup_time: utc(summary.last_successful_backup),
            last_failed_backup_time: utc(summary.last_failed_backup),
        };
        if let Err(e) = self
            .kube
            .set_recovery_window(&resolved.store, &resolved.server, &window)
            .await
        {
            warn!("cannot write the ObjectStore's status.serverRecoveryWindow: {e}");
        }
    }

    /// After a retention round that read the catalog whole (`ids`, every backup in it):
    /// the Cluster's Backup resources whose backup is gone are deleted, as the plugin's
    /// sidecar deletes them, so `kubectl get backups` shows what can be restored.
    pub async fn delete_backups_not_in_catalog(&self, ids: &BTreeSet<String>) {
        let Ok(resolved) = self.current() else {
            return;
        };
        let Some((cluster, uid)) = &resolved.cluster else {
            return;
        };
        match self
            .kube
            .delete_backups_not_in_catalog(cluster, uid, PLUGIN_NAME, ids)
            .await
        {
            Ok(deleted) if deleted.is_empty() => {}
            Ok(deleted) => info!(
                "deleted the Backup resources whose backup retention removed: {}",
                deleted.join(", ")
            ),
            Err(e) => warn!("cannot delete Backup resources no longer in the catalog: {e}"),
        }
    }
}

/// The ObjectStore wanted (for the pod's own, the Cluster first) and its Secrets.
async fn read(kube: &Kube, wanted: &Wanted, watched: &mut Watched) -> Snapshot {
    let (store, server, identity) = match wanted {
        Wanted::Store(store) => (store.object_store.clone(), store.server_name.clone(), None),
        Wanted::Pod {
            cluster,
            pod,
            server_override,
        } => {
            let (json, version) = kube.cluster(cluster).await.map_err(|e| e.to_string())?;
            watched
                .versions
                .insert((Kind::Cluster, cluster.clone()), version);
            let config =
                PluginConfig::from_json(&json).map_err(|e| format!("Cluster {cluster:?}: {e}"))?;
            // The store archived to; where nothing is archived (a replica cluster
            // reading its source's archive), the one WAL is restored from.
            let Some(store) = config
                .archive
                .as_ref()
                .or_else(|| config.restore_store(pod))
            else {
                return Err(format!(
                    "Cluster {cluster:?} names no ObjectStore for {PLUGIN_NAME}: set \
                     parameters.barmanObjectName in its spec.plugins entry"
                ));
            };
            (
                store.object_store.clone(),
                server_override
                    .clone()
                    .unwrap_or_else(|| store.server_name.clone()),
                Some((cluster.clone(), config.cluster_uid.clone())),
            )
        }
    };
    let loaded = kube
        .object_store(&store, watched)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(Resolved {
        store,
        server,
        loaded,
        cluster: identity,
    }))
}
