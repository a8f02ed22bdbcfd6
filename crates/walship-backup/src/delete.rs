//! `walship backup-delete` and `backup-keep`: the [`retention`](crate::retention)
//! rules applied to a store, in barman-cloud-backup-delete's order. A plan is made
//! first from one snapshot of the catalog and the WAL listing, so `--dry-run` prints
//! exactly what a real run deletes; each backup's tars go first, `walship.json` next
//! and `backup.info` last (a deletion that fails half-way is finished by the next
//! run), then the WAL its deletion left unneeded.
//!
//! The snapshot's catalog is one that two readings in a row agreed on ([`agreed`]):
//! a listing that lags behind the store's writes, or an answer damaged on the way that
//! still parses, seen once, would plan on a catalog without a kept backup, or with its
//! `begin_wal` later than it is, and delete the WAL it needs.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, FixedOffset};
use walship_store::{PutOptions, Store, StoreError};
use walship_wal::Layout;

use crate::catalog::{Catalog, Entry, KeepTarget, Listing};
use crate::info::Status;
use crate::retention::{self, Policy, WalObject};

/// One backup to delete and its objects, `backup.info` last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoomedBackup {
    pub id: String,
    pub objects: Vec<String>,
}

/// What a deletion removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub backups: Vec<DoomedBackup>,
    pub wal: Vec<WalObject>,
}

impl Plan {
    /// The backups and WAL objects gone once the first `objects` of the plan are
    /// deleted, in [`execute`]'s order: a backup counts once its last object
    /// (`backup.info`) is gone.
    pub fn tally(&self, objects: usize) -> (usize, usize) {
        let mut left = objects;
        let mut backups = 0;
        for backup in &self.backups {
            if left < backup.objects.len() {
                return (backups, 0);
            }
            left -= backup.objects.len();
            backups += 1;
        }
        (backups, left.min(self.wal.len()))
    }
}

/// Why nothing was deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// barman refuses too: deleting with an incomplete picture of the catalog could
    /// delete WAL a backup it could not read needs.
    #[error(
        "cannot read the backup.info of {0}; refusing to delete anything with part of the \
         catalog unknown"
    )]
    Unreadable(String),
    #[error("{0}")]
    Refused(String),
    #[error(
        "the catalog read differently on each of {0} readings in a row (a listing lagging \
         behind the store's writes, or answers damaged on the way); refusing to delete \
         anything until two readings agree"
    )]
    Unsettled(usize),
}

/// How many times a catalog is read at most for two readings in a row to agree.
const READINGS: usize = 4;

/// What `read` gives twice in a row, within [`READINGS`] readings. What a deletion is
/// planned on must be what the store holds, not one answer of it: a stale or damaged
/// answer is seen once, not twice in a row.
pub(crate) async fn agreed<T, F, Fut>(mut read: F) -> Result<T, DeleteError>
where
    T: PartialEq,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DeleteError>>,
{
    let mut last = read().await?;
    for _ in 1..READINGS {
        let next = read().await?;
        if next == last {
            return Ok(next);
        }
        last = next;
    }
    Err(DeleteError::Unsettled(READINGS))
}

/// The catalog as a deletion sees it: every backup, their keep annotations, and the
/// WAL objects in the archive.
pub struct Snapshot {
    pub listing: Listing,
    pub keeps: BTreeMap<String, KeepTarget>,
    pub wal: Vec<WalObject>,
    /// Every key under the backups' prefix, to find each backup's objects.
    base_keys: Vec<String>,
}

impl Snapshot {
    /// Reads the catalog with its keeps until two readings agree, then the WAL
    /// listing. The WAL listing is read once: a name missing from it is only not
    /// deleted, and a damaged name is judged by the same rule as the rest (older than
    /// what the remaining backups need), so it cannot take WAL a backup needs.
    pub async fn read(
        store: &dyn Store,
        catalog: &Catalog,
        layout: &Layout,
    ) -> Result<Snapshot, DeleteError> {
        let (listing, keeps) = agreed(|| async {
            let listing = catalog.list().await?;
            let mut keeps = BTreeMap::new();
            for entry in &listing.backups {
                if let Some(keep) = catalog.keep_target(&entry.id).await? {
                    keeps.insert(entry.id.clone(), keep);
                }
            }
            Ok((listing, keeps))
        })
        .await?;
        if !listing.unreadable.is_empty() {
            let ids: Vec<&str> = listing
                .unreadable
                .iter()
                .map(|(id, _)| id.as_str())
                .collect();
            return Err(DeleteError::Unreadable(ids.join(", ")));
        }
        let wal = store
            .list(&layout.wals_prefix())
            .await?
            .into_iter()
            .filter_map(|o| {
                let (name, _) = layout.parse_wal_key(&o.key)?;
                Some(WalObject {
                    name: name.to_string(),
                    key: o.key,
                })
            })
            .collect();
        let base_keys = store
            .list(&layout.base_backups_prefix())
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        Ok(Snapshot {
            listing,
            keeps,
            wal,
            base_keys,
        })
    }

    fn keep(&self) -> impl Fn(&str) -> Option<KeepTarget> + '_ {
        |id| self.keeps.get(id).copied()
    }

    /// The objects of backup `id`, as barman deletes them (its tars), plus
    /// walship's record, with `backup.info` last. The keep annotation stays, as
    /// barman leaves it (a kept backup is never deleted).
    fn objects_of(&self, catalog: &Catalog, entry: &Entry) -> Vec<String> {
        let prefix = catalog.backup_prefix(&entry.id);
        let mut bases = vec!["data".to_owned()];
        bases.extend(entry.info.tablespaces.iter().map(|t| t.oid.to_string()));
        let mut objects: Vec<String> = self
            .base_keys
            .iter()
            .filter(|k| {
                k.strip_prefix(&prefix).is_some_and(|name| {
                    bases.iter().any(|b| {
                        name.strip_prefix(b.as_str()).is_some_and(|rest| {
                            rest.starts_with(".tar")
                                || (rest.starts_with('_')
                                    && rest
                                        .get(1..5)
                                        .is_some_and(|n| n.bytes().all(|c| c.is_ascii_digit()))
                                    && rest.get(5..).is_some_and(|r| r.starts_with(".tar")))
                        })
                    })
                })
            })
            .cloned()
            .collect();
        let manifest = format!("{prefix}{}", crate::take::MANIFEST_NAME);
        if self.base_keys.contains(&manifest) {
            objects.push(manifest);
        }
        objects.push(catalog.info_key(&entry.id));
        objects
    }

    /// The plan of one deletion after another: `doomed` ids in order, each one's WAL
    /// decided with the catalog as the deletions before it left it.
    fn plan(&self, catalog: &Catalog, doomed: &[String], by_policy: bool) -> Plan {
        let mut remaining: Vec<Entry> = self.listing.backups.clone();
        let mut plan = Plan::default();
        let mut wal: Vec<WalObject> = self.wal.clone();
        for id in doomed {
            let Some(at) = remaining.iter().position(|e| &e.id == id) else {
                continue;
            };
            let entry = remaining.remove(at);
            plan.backups.push(DoomedBackup {
                id: entry.id.clone(),
                objects: self.objects_of(catalog, &entry),
            });
            let gone = retention::wal_to_delete(&entry, &remaining, &self.keep(), &wal, by_policy);
            wal.retain(|w| !gone.contains(w));
            plan.wal.extend(gone);
        }
        plan.wal.sort_by(|a, b| a.key.cmp(&b.key));
        plan
    }

    /// What `policy` deletes at `now`.
    pub fn plan_policy(
        &self,
        catalog: &Catalog,
        policy: Policy,
        minimum_redundancy: u32,
        now: DateTime<FixedOffset>,
    ) -> Plan {
        let doomed = retention::obsolete(
            &self.listing.backups,
            &self.keep(),
            policy,
            minimum_redundancy,
            now,
        );
        self.plan(catalog, &doomed, true)
    }

    /// What deleting the one backup `which` names deletes; refused for a kept backup
    /// or below the minimum redundancy, as barman refuses.
    pub fn plan_one(
        &self,
        catalog: &Catalog,
        which: &str,
        minimum_redundancy: u32,
    ) -> Result<Plan, DeleteError> {
        let entry = catalog
            .resolve(&self.listing, which)
            .map_err(|e| DeleteError::Refused(e.to_string()))?;
        if let Some(keep) = self.keeps.get(&entry.id) {
            return Err(DeleteError::Refused(format!(
                "backup {} is kept ({}); release the keep (backup-keep --release) to delete it",
                entry.id,
                keep.as_str()
            )));
        }
        let completed = self
            .listing
            .backups
            .iter()
            .filter(|e| e.info.status != Some(Status::Started))
            .count();
        if minimum_redundancy > 0 && minimum_redundancy as usize >= completed {
            return Err(DeleteError::Refused(format!(
                "deleting backup {} would leave fewer than the minimum redundancy of \
                 {minimum_redundancy} (there are {completed})",
                entry.id
            )));
        }
        Ok(self.plan(catalog, std::slice::from_ref(&entry.id), false))
    }
}

/// Carries out `plan`; `each` is told of every object deleted.
pub async fn execute(
    store: &Arc<dyn Store>,
    plan: &Plan,
    each: &mut (dyn FnMut(&str) + Send),
) -> Result<(), StoreError> {
    for backup in &plan.backups {
        for key in &backup.objects {
            store.delete(key).await?;
            each(key);
        }
    }
    for wal in &plan.wal {
        store.delete(&wal.key).await?;
        each(&wal.key);
    }
    Ok(())
}

/// `backup-keep`: records `target` for the DONE backup `entry`.
pub async fn keep(
    store: &dyn Store,
    catalog: &Catalog,
    entry: &Entry,
    target: KeepTarget,
) -> Result<(), DeleteError> {
    if entry.info.status != Some(Status::Done) {
        return Err(DeleteError::Refused(format!(
            "cannot keep backup {}: its status is {}; only DONE backups can be kept",
            entry.id,
            entry.info.status.map_or("unknown", Status::as_str)
        )));
    }
    store
        .put_replace(
            &catalog.keep_key(&entry.id),
            Bytes::from_static(target.as_str().as_bytes()),
            &PutOptions::default(),
        )
        .await?;
    Ok(())
}

/// `backup-keep --release`.
pub async fn release(store: &dyn Store, catalog: &Catalog, id: &str) -> Result<(), DeleteError> {
    store.delete(&catalog.keep_key(id)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_a_backup_only_once_its_backup_info_is_gone_and_wal_after_every_backup() {
        let backup = |id: &str| DoomedBackup {
            id: id.to_owned(),
            objects: vec![format!("{id}/data.tar"), format!("{id}/backup.info")],
        };
        let wal = |name: &str| WalObject {
            name: name.to_owned(),
            key: format!("wals/{name}"),
        };
        let plan = Plan {
            backups: vec![backup("a"), backup("b")],
            wal: vec![wal("1"), wal("2"), wal("3")],
        };
        assert_eq!(plan.tally(0), (0, 0));
        assert_eq!(plan.tally(1), (0, 0));
        assert_eq!(plan.tally(2), (1, 0));
        assert_eq!(plan.tally(3), (1, 0));
        assert_eq!(plan.tally(4), (2, 0));
        assert_eq!(plan.tally(6), (2, 2));
        assert_eq!(plan.tally(7), (2, 3));
        assert_eq!(plan.tally(99), (2, 3));
    }

    /// Readings handed out in turn; past the end, the last one again.
    fn readings(
        answers: &[&'static str],
    ) -> impl FnMut() -> std::future::Ready<Result<&'static str, DeleteError>> {
        let mut answers = answers.iter().copied();
        let mut last = None;
        move || {
            last = answers.next().or(last);
            std::future::ready(Ok(last.expect("an answer")))
        }
    }

    #[tokio::test]
    async fn a_catalog_is_taken_only_when_two_readings_in_a_row_agree() {
        assert_eq!(agreed(readings(&["whole"])).await.unwrap(), "whole");
        assert_eq!(
            agreed(readings(&["stale", "whole", "whole"]))
                .await
                .unwrap(),
            "whole"
        );
        // Agreeing with an earlier reading, not the one before, is not agreeing.
        let flapping = agreed(readings(&["stale", "whole", "stale", "whole", "whole"])).await;
        assert!(
            matches!(flapping, Err(DeleteError::Unsettled(READINGS))),
            "{flapping:?}"
        );
        let mut calls = 0;
        let failed = agreed(|| {
            calls += 1;
            std::future::ready(Err::<(), _>(DeleteError::Refused("store down".into())))
        })
        .await;
        assert!(matches!(failed, Err(DeleteError::Refused(_))));
        assert_eq!(calls, 1, "a failed reading is not read again here");
    }
}
