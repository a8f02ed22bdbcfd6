//! What the daemon does with the catalog between backups, as the plugin's sidecar does
//! every `retentionPolicyIntervalSeconds`: apply the retention policy (on the primary
//! only), then read what the catalog now says an operator can recover to.
//!
//! One round reads the catalog once ([`Snapshot::read`]), deletes what
//! [`Snapshot::plan_policy`] plans, exactly as `walship backup-delete` does, and sums
//! the catalog that is left up in a [`CatalogSummary`]: the plugin's three timestamps
//! (first recoverability point, last successful and last failed backup) and the latest
//! backup's duration and size. The daemon's metrics are that summary.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset};
use walship_store::Store;
use walship_wal::Layout;

use crate::catalog::{Catalog, Entry, Listing};
use crate::delete::{self, DeleteError, Snapshot};
use crate::info::Status;
use crate::retention::Policy;

/// What the catalog says an operator can recover to, as the plugin reports it in the
/// ObjectStore's `status.serverRecoveryWindow` and its three gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogSummary {
    /// The end of the oldest DONE backup: the earliest time a point-in-time recovery
    /// can reach (a backup is consistent only at its end). The plugin's
    /// `firstRecoverabilityPoint`.
    pub first_recoverability_point: Option<DateTime<FixedOffset>>,
    /// The end of the newest DONE backup (`lastSuccessfulBackupTime`).
    pub last_successful_backup: Option<DateTime<FixedOffset>>,
    /// When the newest FAILED backup ended, or began if it has no end
    /// (`lastFailedBackupTime`).
    pub last_failed_backup: Option<DateTime<FixedOffset>>,
    /// The newest DONE backup's duration, from its `begin_time` to its `end_time`.
    pub last_backup_seconds: Option<f64>,
    /// The newest DONE backup's `size` (the bytes it copied).
    pub last_backup_bytes: Option<u64>,
    /// DONE backups in the catalog.
    pub done_backups: usize,
}

impl CatalogSummary {
    /// Sums up `listing` (in id order, as [`Catalog::list`] returns it). Backups still
    /// STARTED count for nothing: they may be running, or may have crashed.
    pub fn of(listing: &Listing) -> CatalogSummary {
        let done: Vec<&Entry> = listing
            .backups
            .iter()
            .filter(|e| e.info.status == Some(Status::Done))
            .collect();
        // The oldest DONE backup that has an end: barman's order is the id's, which is
        // the begin time; a DONE backup without an end time cannot anchor a recovery.
        let first = done.iter().find_map(|e| e.info.end_time.map(|t| t.0));
        let newest = done.iter().rev().find(|e| e.info.end_time.is_some());
        let last_failed = listing
            .backups
            .iter()
            .rev()
            .filter(|e| e.info.status == Some(Status::Failed))
            .find_map(|e| e.info.end_time.or(e.info.begin_time).map(|t| t.0));
        CatalogSummary {
            first_recoverability_point: first,
            last_successful_backup: newest.and_then(|e| e.info.end_time.map(|t| t.0)),
            last_failed_backup: last_failed,
            last_backup_seconds: newest.and_then(|e| {
                let (begin, end) = (e.info.begin_time?.0, e.info.end_time?.0);
                let micros = (end - begin).num_microseconds()?;
                Some((micros.max(0) as f64) / 1e6)
            }),
            last_backup_bytes: newest.and_then(|e| e.info.size),
            done_backups: done.len(),
        }
    }
}

/// Whether this round may delete: only the primary applies retention, as the plugin's
/// sidecar does (every instance of a cluster runs one; a standby that deleted too
/// would race the primary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    /// A standby or a server in recovery: the catalog is read, nothing is deleted.
    Standby,
}

/// What one round did.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// Backups deleted (all their objects, `backup.info` last).
    pub deleted_backups: usize,
    /// WAL objects deleted.
    pub deleted_wal: usize,
    /// The catalog after the deletions.
    pub summary: CatalogSummary,
    /// Every backup id left in the catalog, those whose `backup.info` cannot be read
    /// included: what CloudNativePG's Backup resources are checked against.
    pub ids: BTreeSet<String>,
}

/// Every backup id of `listing`, readable or not.
fn ids(listing: &Listing) -> BTreeSet<String> {
    listing
        .backups
        .iter()
        .map(|e| e.id.clone())
        .chain(listing.unreadable.iter().map(|(id, _)| id.clone()))
        .collect()
}

/// A round that stopped, with what it had deleted by then (the next round finishes a
/// deletion cut short, as `backup-delete` run again does).
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct RoundError {
    pub deleted_backups: usize,
    pub deleted_wal: usize,
    #[source]
    pub source: DeleteError,
}

impl RoundError {
    fn before_deleting(source: DeleteError) -> RoundError {
        RoundError {
            deleted_backups: 0,
            deleted_wal: 0,
            source,
        }
    }
}

/// One round: apply `policy` at `now` if there is one and this is the primary, then
/// sum up the catalog. A catalog with a `backup.info` that cannot be read is summed up
/// but nothing is deleted from it (the error says which), as `backup-delete` refuses.
pub async fn round(
    store: &Arc<dyn Store>,
    layout: &Layout,
    server: &str,
    policy: Option<Policy>,
    role: Role,
    now: DateTime<FixedOffset>,
) -> Result<Round, RoundError> {
    let catalog = Catalog::new(store.clone(), layout, server);
    let Some(policy) = policy.filter(|_| role == Role::Primary) else {
        // Agreed on, as for a deletion: the ids decide which Backup resources go.
        let listing = delete::agreed(|| async { Ok(catalog.list().await?) })
            .await
            .map_err(RoundError::before_deleting)?;
        return Ok(Round {
            deleted_backups: 0,
            deleted_wal: 0,
            summary: CatalogSummary::of(&listing),
            ids: ids(&listing),
        });
    };
    let snapshot = Snapshot::read(&**store, &catalog, layout)
        .await
        .map_err(RoundError::before_deleting)?;
    let plan = snapshot.plan_policy(&catalog, policy, 0, now);
    let mut deleted = 0usize;
    let done = delete::execute(store, &plan, &mut |_| deleted += 1).await;
    let (deleted_backups, deleted_wal) = plan.tally(deleted);
    if let Err(e) = done {
        return Err(RoundError {
            deleted_backups,
            deleted_wal,
            source: e.into(),
        });
    }
    let doomed: Vec<&str> = plan.backups.iter().map(|b| b.id.as_str()).collect();
    let mut left = snapshot.listing;
    left.backups.retain(|e| !doomed.contains(&e.id.as_str()));
    Ok(Round {
        deleted_backups,
        deleted_wal,
        summary: CatalogSummary::of(&left),
        ids: ids(&left),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::{BackupInfo, InfoTime};
    use bytes::Bytes;
    use walship_store::{LocalStore, PutOptions};

    fn at(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).unwrap()
    }

    fn info(status: Status, begin: &str, end: Option<&str>, begin_wal: &str) -> BackupInfo {
        BackupInfo {
            status: Some(status),
            begin_time: Some(InfoTime(at(begin))),
            end_time: end.map(|e| InfoTime(at(e))),
            begin_wal: Some(begin_wal.to_owned()),
            end_wal: Some(begin_wal.to_owned()),
            timeline: Some(1),
            size: Some(1000),
            version: Some(150000),
            ..BackupInfo::default()
        }
    }

    fn listing(entries: Vec<(&str, BackupInfo)>) -> Listing {
        Listing {
            backups: entries
                .into_iter()
                .map(|(id, info)| Entry {
                    id: id.to_owned(),
                    info,
                })
                .collect(),
            unreadable: Vec::new(),
        }
    }

    #[test]
    fn the_summary_takes_the_oldest_and_newest_done_backups_ends_and_the_newest_failure() {
        let summary = CatalogSummary::of(&listing(vec![
            (
                "20261101T000000",
                info(
                    Status::Failed,
                    "2026-11-01T00:00:00+00:00",
                    None,
                    "000000010000000000000001",
                ),
            ),
            (
                "20261102T000000",
                info(
                    Status::Done,
                    "2026-11-02T00:00:00+00:00",
                    Some("2026-11-02T00:10:00.5+00:00"),
                    "000000010000000000000003",
                ),
            ),
            (
                "20261103T000000",
                info(
                    Status::Failed,
                    "2026-11-03T00:00:00+00:00",
                    Some("2026-11-03T00:01:00+00:00"),
                    "000000010000000000000005",
                ),
            ),
            (
                "20261104T000000",
                info(
                    Status::Done,
                    "2026-11-04T00:00:00+00:00",
                    Some("2026-11-04T00:02:30+00:00"),
                    "000000010000000000000007",
                ),
            ),
            (
                "20261105T000000",
                info(
                    Status::Started,
                    "2026-11-05T00:00:00+00:00",
                    None,
                    "000000010000000000000009",
                ),
            ),
        ]));
        assert_eq!(
            summary,
            CatalogSummary {
                first_recoverability_point: Some(at("2026-11-02T00:10:00.5+00:00")),
                last_successful_backup: Some(at("2026-11-04T00:02:30+00:00")),
                last_failed_backup: Some(at("2026-11-03T00:01:00+00:00")),
                last_backup_seconds: Some(150.0),
                last_backup_bytes: Some(1000),
                done_backups: 2,
            }
        );
    }

    #[test]
    fn an_empty_catalog_sums_up_to_nothing() {
        assert_eq!(
            CatalogSummary::of(&Listing::default()),
            CatalogSummary::default()
        );
    }

    fn wal_key(layout: &Layout, name: &str) -> String {
        layout.wal_key(&walship_wal::WalName::parse(name).unwrap(), None)
    }

    async fn put(store: &Arc<dyn Store>, key: &str, body: &[u8]) {
        store
            .put_create(key, Bytes::copy_from_slice(body), &PutOptions::default())
            .await
            .unwrap();
    }

    /// Three DONE backups a week apart and WAL from before the first to after the last.
    async fn seeded() -> (tempfile::TempDir, Arc<dyn Store>, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
        let layout = Layout::new("", "pg");
        let catalog = Catalog::new(store.clone(), &layout, "pg");
        for (id, day, wal) in [
            ("20261110T000000", "10", "000000010000000000000002"),
            ("20261117T000000", "17", "000000010000000000000004"),
            ("20261124T000000", "24", "000000010000000000000006"),
        ] {
            let begin = format!("2026-11-{day}T00:00:00+00:00");
            let end = format!("2026-11-{day}T00:05:00+00:00");
            let text = info(Status::Done, &begin, Some(&end), wal).render();
            put(&store, &catalog.info_key(id), text.as_bytes()).await;
            put(
                &store,
                &format!("{}data.tar", catalog.backup_prefix(id)),
                b"tar",
            )
            .await;
        }
        for n in 1..=7 {
            let name = format!("00000001000000000000000{n}");
            put(&store, &wal_key(&layout, &name), b"wal").await;
        }
        (dir, store, layout)
    }

    #[tokio::test]
    async fn a_round_on_the_primary_deletes_what_the_policy_makes_obsolete_and_sums_up_the_rest() {
        let (_dir, store, layout) = seeded().await;
        let now = at("2026-11-30T00:00:00+00:00");
        // 10 days: the window starts 2026-11-20; 20261117 is the newest backup before
        // it and stays, 20261110 goes with the WAL before 20261117's first.
        let policy = Policy::parse("10d").unwrap();
        let round = round(&store, &layout, "pg", Some(policy), Role::Primary, now)
            .await
            .unwrap();
        assert_eq!((round.deleted_backups, round.deleted_wal), (1, 3));
        assert_eq!(
            round.summary.first_recoverability_point,
            Some(at("2026-11-17T00:05:00+00:00"))
        );
        assert_eq!(round.summary.done_backups, 2);
        let left: Vec<String> = store
            .list(&layout.wals_prefix())
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(left.len(), 4, "{left:?}");
        assert!(
            left.iter()
                .all(|k| k.as_str() >= wal_key(&layout, "000000010000000000000004").as_str()),
            "{left:?}"
        );
        let listing = Catalog::new(store.clone(), &layout, "pg")
            .list()
            .await
            .unwrap();
        assert_eq!(CatalogSummary::of(&listing), round.summary);
    }

    #[tokio::test]
    async fn a_round_on_a_standby_deletes_nothing_and_still_sums_up_the_catalog() {
        let (_dir, store, layout) = seeded().await;
        let now = at("2026-11-30T00:00:00+00:00");
        let policy = Policy::parse("10d").unwrap();
        let round = round(&store, &layout, "pg", Some(policy), Role::Standby, now)
            .await
            .unwrap();
        assert_eq!((round.deleted_backups, round.deleted_wal), (0, 0));
        assert_eq!(round.summary.done_backups, 3);
        assert_eq!(
            round.summary.first_recoverability_point,
            Some(at("2026-11-10T00:05:00+00:00"))
        );
        assert_eq!(store.list(&layout.wals_prefix()).await.unwrap().len(), 7);
    }

    #[tokio::test]
    async fn a_round_refuses_to_delete_from_a_catalog_it_cannot_read_whole() {
        let (_dir, store, layout) = seeded().await;
        let catalog = Catalog::new(store.clone(), &layout, "pg");
        put(
            &store,
            &catalog.info_key("20261101T000000"),
            b"a line without an equals sign",
        )
        .await;
        let policy = Policy::parse("1d").unwrap();
        let now = at("2026-11-30T00:00:00+00:00");
        let err = round(&store, &layout, "pg", Some(policy), Role::Primary, now)
            .await
            .unwrap_err();
        assert!(matches!(err.source, DeleteError::Unreadable(_)), "{err}");
        assert_eq!(store.list(&layout.wals_prefix()).await.unwrap().len(), 7);
        assert_eq!(catalog.list().await.unwrap().backups.len(), 3);
    }
}
