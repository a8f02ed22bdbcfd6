//! The stores CNPG-I calls name besides the one the daemon archives to: a recovery
//! source (the restore job), a replica cluster's source (its designated primary
//! restores from it while archiving to its own), a Backup's own `barmanObjectName` (an
//! offsite copy). Each is built once and kept while what it was built from stays the
//! same; from the Kubernetes API each ObjectStore is followed by a watch of its own.
//!
//! From files there is one store: a call naming another is refused with
//! FAILED_PRECONDITION, naming both, rather than served from the wrong archive.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use walship_cnpg::cluster::StoreRef;
use walship_cnpg::sidecar::CallError;
use walship_engine::Archiver;
use walship_kube::Kube;
use walship_store::RetryPolicy;

use crate::kubeconf::{Live, Resolved, Wanted};
use crate::wiring::{self, Purpose, Source, Target};

/// One store as a call uses it: base backups through `target`, WAL through `archiver`.
pub struct Served {
    pub target: Target,
    pub archiver: Archiver,
    /// Where its recovery window is written (from the Kubernetes API only).
    pub live: Option<Arc<Live>>,
}

/// The stores calls name.
pub enum Stores {
    /// `--config` and `--secrets-dir`: one store, built at the start.
    Files {
        served: Arc<Served>,
        reference: StoreRef,
        from: String,
    },
    /// The Kubernetes API: any ObjectStore of the namespace the Role grants.
    Kube {
        kube: Box<Kube>,
        followed: Mutex<BTreeMap<StoreRef, Followed>>,
        /// Ends the watches when the registry is dropped.
        stop: CancellationToken,
    },
}

/// An ObjectStore followed from the API, and what was last built from it.
pub struct Followed {
    live: Arc<Live>,
    built: Option<(Arc<Resolved>, Arc<Served>)>,
}

impl Stores {
    /// The one store `source` (files) describes, under `server_override` or the
    /// manifest's server name.
    pub async fn files(source: &Source, server_override: Option<&str>) -> anyhow::Result<Stores> {
        let served = build(source, server_override).await?;
        let reference = StoreRef {
            object_store: served.target.doc.metadata.name.clone(),
            server_name: served.target.server.clone(),
        };
        let from = match source {
            Source::Files { config, .. } => config.display().to_string(),
            Source::Kube(_) => "the Kubernetes API".to_owned(),
        };
        Ok(Stores::Files {
            served: Arc::new(served),
            reference,
            from,
        })
    }

    /// Every ObjectStore a call names, read from the API at first use and followed.
    pub fn kube(kube: Kube) -> Stores {
        Stores::Kube {
            kube: Box::new(kube),
            followed: Mutex::new(BTreeMap::new()),
            stop: CancellationToken::new(),
        }
    }

    /// Whether a call naming `wanted` can be served (from files, only the one store).
    pub fn serves(&self, wanted: &StoreRef) -> bool {
        match self {
            Stores::Files { reference, .. } => reference == wanted,
            Stores::Kube { .. } => true,
        }
    }

    /// The store `wanted` names, for a call that would `what` with it: FAILED_PRECONDITION
    /// naming what is missing when it cannot be read (no such ObjectStore, a Secret,
    /// a permission) or built, or when `wanted` is none.
    pub async fn get(
        &self,
        wanted: Option<&StoreRef>,
        what: &str,
    ) -> Result<Arc<Served>, CallError> {
        let wanted = wanted.ok_or_else(|| crate::cnpg::no_store(what))?;
        match self {
            Stores::Files {
                served,
                reference,
                from,
            } => {
                crate::cnpg::check_store(reference, from, wanted, what)?;
                Ok(served.clone())
            }
            Stores::Kube {
                kube,
                followed,
                stop,
            } => {
                let mut followed = followed.lock().await;
                if !followed.contains_key(wanted) {
                    let live = Live::start(
                        (**kube).clone(),
                        Wanted::Store(wanted.clone()),
                        stop.child_token(),
                    )
                    .await;
                    followed.insert(
                        wanted.clone(),
                        Followed {
                            live: Arc::new(live),
                            built: None,
                        },
                    );
                }
                let entry = followed.get_mut(wanted).expect("inserted above");
                let resolved = entry
                    .live
                    .current()
                    .map_err(CallError::FailedPrecondition)?;
                if let Some((from, served)) = &entry.built
                    && Arc::ptr_eq(from, &resolved)
                {
                    return Ok(served.clone());
                }
                let mut served = build(&Source::Kube(entry.live.clone()), None)
                    .await
                    .map_err(|e| {
                        CallError::FailedPrecondition(format!(
                            "ObjectStore {:?}: {e:#}",
                            wanted.object_store
                        ))
                    })?;
                served.live = Some(entry.live.clone());
                let served = Arc::new(served);
                entry.built = Some((resolved, served.clone()));
                Ok(served)
            }
        }
    }
}

impl Drop for Stores {
    fn drop(&mut self) {
        if let Stores::Kube { stop, .. } = self {
            stop.cancel();
        }
    }
}

/// A store's target for base backups and its archiver for WAL (their server-side
/// encryption may differ).
async fn build(source: &Source, server_override: Option<&str>) -> anyhow::Result<Served> {
    let target = wiring::target(
        source,
        server_override,
        None,
        RetryPolicy::default(),
        Purpose::Backups,
    )
    .await?;
    let archiver = wiring::archiver(source, server_override, None, RetryPolicy::default())
        .await?
        .archiver;
    Ok(Served {
        target,
        archiver,
        live: None,
    })
}
