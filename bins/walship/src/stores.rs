//! The stores CNPG-I calls name besides the one the daemon archives to: a recovery
//! source (the restore job), a replica cluster's source (its designated primary
//! restores from it while archiving to its own), a Backup's own `barmanObjectName` (an
//! offsite copy). Each is built once and kept while what it was built from stays the
//! same; from the Kubernetes API each ObjectStore is followed by a watch of its own.
//!
//! From files there is one store: a call naming another is refused with
//! FAILED_PRECONDITION, naming both, rather than served from the wrong archive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use walship_cnpg::cluster::StoreRef;
use walship_cnpg::sidecar::CallError;
use walship_daemon::prefetch::Prefetcher;
use walship_engine::{Archiver, FetchOutcome};
use walship_kube::Kube;
use walship_metrics::Metrics;
use walship_store::RetryPolicy;

use crate::kubeconf::{Live, Resolved, Wanted};
use crate::wiring::{self, Purpose, Source, Target};

/// One store as a call uses it: base backups through `target`, WAL through `archiver`.
pub struct Served {
    pub target: Target,
    pub archiver: Archiver,
    /// Where its recovery window is written (from the Kubernetes API only).
    pub live: Option<Arc<Live>>,
    /// Reads WAL ahead of recovery from it, when a spool directory was given.
    pub prefetch: Option<Arc<Prefetcher>>,
}

/// Where and how far WAL is read ahead from the stores calls name: each store gets a
/// spool of its own inside `dir` (a spooled file is never served for another archive).
#[derive(Clone)]
pub struct ReadAhead {
    pub dir: PathBuf,
    /// Segments ahead of the latest request.
    pub window: usize,
    pub max_bytes: u64,
    pub metrics: Arc<Metrics>,
}

impl ReadAhead {
    /// A spool for one store, in a directory no other spool uses.
    fn spool(&self, store: &StoreRef) -> std::io::Result<Arc<Prefetcher>> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(format!(
            ".walship-read-ahead-{}-{}-{n}",
            store.object_store, store.server_name
        ));
        Ok(Arc::new(Prefetcher::new(
            &dir,
            self.window,
            self.max_bytes,
            self.metrics.clone(),
        )?))
    }
}

impl Served {
    /// `name` restored to `dest` for recovery: through the read-ahead spool when there
    /// is one, else fetched alone. NOT_FOUND only when the archive has no such file.
    pub async fn restore(&self, name: &str, dest: &Path) -> Result<(), CallError> {
        let Some(prefetch) = &self.prefetch else {
            return crate::cnpg::fetch_one(&self.archiver, name, dest).await;
        };
        match prefetch.fetch(&self.archiver, name, dest).await {
            Ok(FetchOutcome::Restored { .. }) => Ok(()),
            Ok(FetchOutcome::NotFound) => {
                Err(CallError::NotFound(format!("{name} is not in the archive")))
            }
            // Never NOT_FOUND for a failure: recovery would end early at a gap.
            Err(e) => Err(CallError::Unavailable(e)),
        }
    }

    /// Whether reading ahead found `name` missing (answered once per finding).
    pub fn known_missing(&self, name: &str) -> bool {
        self.prefetch.as_ref().is_some_and(|p| p.take_missing(name))
    }
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
        read_ahead: Option<ReadAhead>,
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
    pub async fn files(
        source: &Source,
        server_override: Option<&str>,
        read_ahead: Option<&ReadAhead>,
    ) -> anyhow::Result<Stores> {
        let mut served = build(source, server_override).await?;
        let reference = StoreRef {
            object_store: served.target.doc.metadata.name.clone(),
            server_name: served.target.server.clone(),
        };
        if let Some(read_ahead) = read_ahead {
            served.prefetch = Some(read_ahead.spool(&reference).with_context(|| {
                format!(
                    "cannot prepare a read-ahead spool in {}",
                    read_ahead.dir.display()
                )
            })?);
        }
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
    pub fn kube(kube: Kube, read_ahead: Option<ReadAhead>) -> Stores {
        Stores::Kube {
            kube: Box::new(kube),
            followed: Mutex::new(BTreeMap::new()),
            stop: CancellationToken::new(),
            read_ahead,
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
                read_ahead,
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
                // A rebuilt store may be another archive: its spool starts empty.
                if let Some(read_ahead) = read_ahead {
                    served.prefetch = Some(read_ahead.spool(wanted).map_err(|e| {
                        CallError::Internal(format!(
                            "cannot prepare a read-ahead spool in {}: {e}",
                            read_ahead.dir.display()
                        ))
                    })?);
                }
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
    // Base backups, their restores and the WAL copied for them are long operations: each
    // of their requests is retried for a minute, as `walship backup`'s are, so a store's
    // hiccup does not throw away hours of work. WAL restores keep the default policy:
    // recovery asks again by itself.
    let target = wiring::target(
        source,
        server_override,
        None,
        wiring::retry_within(crate::cli::LONG_OPERATION_RETRY_SECONDS),
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
        prefetch: None,
    })
}
