//! The catalog: the base backups under `<prefix>/<server>/base/`, read as barman-cloud's
//! `CloudBackupCatalog` reads them, so both tools see the same backups.
//!
//! A backup is a directory `base/<backup id>/` holding `backup.info`; a directory
//! without one is not a backup (barman skips it the same way), and one whose
//! `backup.info` cannot be read is reported apart, never silently dropped: barman's
//! retention refuses to run while one is unreadable, and so will walship's.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use walship_store::{ErrorKind, Store, StoreError};
use walship_wal::Layout;

use crate::info::{BackupInfo, InfoTime, Status};

/// How many `backup.info` files are read at once when listing.
const READS_IN_FLIGHT: usize = 8;

/// Whether `text` is a backup id as barman makes them: `YYYYMMDDTHHMMSS`.
pub fn is_backup_id(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 15
        && b[8] == b'T'
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[9..].iter().all(u8::is_ascii_digit)
}

/// Whether `name` can name a backup: not empty, not one of the words that already
/// pick a backup (`latest`, `last`, `oldest`, `first`, `last-failed`, `auto`), and not
/// shaped like a backup id, as barman-cloud-backup refuses.
pub fn check_backup_name(name: &str) -> Result<(), String> {
    const RESERVED: [&str; 6] = ["latest", "last", "oldest", "first", "last-failed", "auto"];
    if name.trim().is_empty() {
        return Err("--name: a backup name cannot be empty".to_owned());
    }
    if RESERVED.contains(&name) {
        return Err(format!(
            "--name {name:?}: a reserved word (it already picks a backup); choose another name"
        ));
    }
    if is_backup_id(name) {
        return Err(format!(
            "--name {name:?}: shaped like a backup id (YYYYMMDDTHHMMSS); choose another name"
        ));
    }
    Ok(())
}

/// One backup of the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The directory's name (a backup id, when barman or walship made it).
    pub id: String,
    pub info: BackupInfo,
}

/// Every backup of a server, in id order (barman's order: ids are times), and the
/// directories whose `backup.info` could not be read, with why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    pub backups: Vec<Entry>,
    pub unreadable: Vec<(String, String)>,
}

/// What `keep` annotation a backup carries (`base/<id>/annotations/keep`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepTarget {
    /// Kept with the WAL needed to make it consistent only.
    Standalone,
    /// Kept with all the WAL after it.
    Full,
}

impl KeepTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            KeepTarget::Standalone => "standalone",
            KeepTarget::Full => "full",
        }
    }
}

/// Why a backup named on the command line is not in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("unknown backup {0:?} for server {1:?}")]
    Unknown(String, String),
}

/// A server's backups in a store.
#[derive(Debug, Clone)]
pub struct Catalog {
    store: Arc<dyn Store>,
    base: String,
    server: String,
}

impl Catalog {
    pub fn new(store: Arc<dyn Store>, layout: &Layout, server_name: &str) -> Catalog {
        Catalog {
            store,
            base: layout.base_backups_prefix(),
            server: server_name.to_owned(),
        }
    }

    /// `base/<id>/`: where a backup's objects are.
    pub fn backup_prefix(&self, id: &str) -> String {
        format!("{}{id}/", self.base)
    }

    /// `base/<id>/backup.info`.
    pub fn info_key(&self, id: &str) -> String {
        format!("{}{id}/backup.info", self.base)
    }

    /// `base/<id>/annotations/keep`.
    pub fn keep_key(&self, id: &str) -> String {
        format!("{}{id}/annotations/keep", self.base)
    }

    /// Every backup, read from the store.
    pub async fn list(&self) -> Result<Listing, StoreError> {
        let objects = self.store.list(&self.base).await?;
        // The backup directories: the first path element below base/ of every key that
        // has one (barman lists with a `/` delimiter and takes the common prefixes).
        let ids: BTreeSet<String> = objects
            .iter()
            .filter_map(|o| o.key.strip_prefix(&self.base))
            .filter_map(|rest| rest.split_once('/').map(|(dir, _)| dir.to_owned()))
            .filter(|dir| !dir.is_empty())
            .collect();
        let read: Vec<(String, Option<Result<BackupInfo, String>>)> = futures::stream::iter(ids)
            .map(|id| async move {
                let info = self.read_info(&id).await?;
                Ok::<_, StoreError>((id, info))
            })
            .buffered(READS_IN_FLIGHT)
            .try_collect()
            .await?;
        let mut listing = Listing::default();
        for (id, info) in read {
            match info {
                None => {}
                Some(Ok(info)) => listing.backups.push(Entry { id, info }),
                Some(Err(why)) => listing.unreadable.push((id, why)),
            }
        }
        Ok(listing)
    }

    /// The directory's `backup.info`: `None` when it has none, `Some(Err)` when it
    /// cannot be read as one.
    async fn read_info(&self, id: &str) -> Result<Option<Result<BackupInfo, String>>, StoreError> {
        match self.store.get(&self.info_key(id)).await {
            Ok((bytes, _)) => Ok(Some(
                BackupInfo::parse(&bytes).map_err(|e| format!("backup.info: {e}")),
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The backup `which` names, as barman resolves it: a backup id as it is; `latest` or
    /// `last` (the newest not still STARTED), `oldest` or `first` (the oldest not still
    /// STARTED), `last-failed`; otherwise a backup's name.
    pub fn resolve<'l>(
        &self,
        listing: &'l Listing,
        which: &str,
    ) -> Result<&'l Entry, ResolveError> {
        let unknown = || ResolveError::Unknown(which.to_owned(), self.server.clone());
        let backups = &listing.backups;
        let found = if is_backup_id(which) {
            backups.iter().find(|e| e.id == which)
        } else {
            match which {
                "latest" | "last" => backups
                    .iter()
                    .rev()
                    .find(|e| e.info.status != Some(Status::Started)),
                "oldest" | "first" => backups
                    .iter()
                    .find(|e| e.info.status != Some(Status::Started)),
                "last-failed" => backups
                    .iter()
                    .rev()
                    .find(|e| e.info.status == Some(Status::Failed)),
                name => backups
                    .iter()
                    .find(|e| e.info.backup_name.as_deref() == Some(name)),
            }
        };
        found.ok_or_else(unknown)
    }

    /// The backup's keep annotation, if any.
    pub async fn keep_target(&self, id: &str) -> Result<Option<KeepTarget>, StoreError> {
        match self.store.get(&self.keep_key(id)).await {
            Ok((body, _)) => Ok(match body.as_ref() {
                b"standalone" => Some(KeepTarget::Standalone),
                b"full" => Some(KeepTarget::Full),
                // barman treats any other body as no keep target it knows.
                _ => None,
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What a recovery asks for, as CloudNativePG's recovery target gives it: the backup
/// to start from is picked by these, as CloudNativePG's barman-cloud catalog picks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryPick {
    /// `backupID`: that backup, whatever the rest says.
    pub backup_id: Option<String>,
    /// `targetTime`: the newest backup that ended at or before it.
    pub time: Option<String>,
    /// `targetLSN`: the newest backup that ended at or before it.
    pub lsn: Option<String>,
    /// `targetTLI`: only backups of this timeline when it is a number.
    pub timeline: Option<String>,
}

/// A recovery target time in the forms CloudNativePG and PostgreSQL write it: RFC 3339
/// (`Z` or `+00:00`), or PostgreSQL's `2026-11-30 10:20:00.5+00` with its short offset.
fn target_time(text: &str) -> Option<InfoTime> {
    let text = text.trim();
    let mut normal = match text.strip_suffix('Z') {
        Some(rest) => format!("{rest}+00:00"),
        None => text.to_owned(),
    };
    let bytes = normal.as_bytes();
    if bytes.len() > 3
        && matches!(bytes[bytes.len() - 3], b'+' | b'-')
        && bytes[bytes.len() - 2..].iter().all(u8::is_ascii_digit)
    {
        normal.push_str(":00");
    }
    InfoTime::parse(&normal)
}

/// The backup a recovery to `pick` starts from: only DONE backups, newest first.
pub fn pick_for_recovery<'e>(
    backups: &'e [Entry],
    pick: &RecoveryPick,
) -> Result<&'e Entry, String> {
    let done = |e: &&Entry| e.info.status == Some(Status::Done);
    if let Some(id) = &pick.backup_id {
        return backups
            .iter()
            .filter(done)
            .find(|e| &e.id == id || e.info.backup_name.as_deref() == Some(id))
            .ok_or_else(|| format!("backupID {id:?}: no such DONE backup"));
    }
    let timeline: Option<u32> = pick.timeline.as_deref().and_then(|t| t.parse().ok());
    let on_timeline = |e: &&Entry| timeline.is_none_or(|t| e.info.timeline == Some(t));
    let time = match &pick.time {
        Some(text) => Some(target_time(text).ok_or_else(|| {
            format!("targetTime {text:?} is not a time; expected e.g. 2026-11-30T10:20:00Z")
        })?),
        None => None,
    };
    let lsn =
        match &pick.lsn {
            Some(text) => Some(crate::session::parse_lsn(text).ok_or_else(|| {
                format!("targetLSN {text:?} is not an LSN; expected e.g. 0/3000060")
            })?),
            None => None,
        };
    let ended_before = |e: &&Entry| match (&time, lsn) {
        (Some(time), _) => e.info.end_time.as_ref().is_some_and(|end| end.0 <= time.0),
        (None, Some(lsn)) => e
            .info
            .end_xlog
            .as_deref()
            .and_then(crate::session::parse_lsn)
            .is_some_and(|end| end <= lsn),
        (None, None) => true,
    };
    let by_end = |e: &&Entry| e.info.end_time.as_ref().map(|t| t.0);
    backups
        .iter()
        .filter(done)
        .filter(on_timeline)
        .filter(ended_before)
        .max_by_key(by_end)
        .ok_or_else(|| match (&pick.time, &pick.lsn) {
            (Some(t), _) => format!("no DONE backup ended at or before targetTime {t}"),
            (None, Some(l)) => format!("no DONE backup ended at or before targetLSN {l}"),
            _ => "no DONE backup in the catalog".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    fn entry(id: &str, status: &str, end: &str, end_lsn: &str, timeline: u32) -> Entry {
        let info = crate::info::BackupInfo {
            status: Some(match status {
                "DONE" => Status::Done,
                _ => Status::Failed,
            }),
            end_time: InfoTime::parse(end),
            end_xlog: Some(end_lsn.to_owned()),
            timeline: Some(timeline),
            ..Default::default()
        };
        Entry {
            id: id.to_owned(),
            info,
        }
    }

    #[test]
    fn a_recovery_starts_from_the_newest_done_backup_that_ended_before_its_target() {
        let backups = vec![
            entry(
                "20261101T000000",
                "DONE",
                "2026-11-01 00:10:00+00:00",
                "0/2000000",
                1,
            ),
            entry(
                "20261110T000000",
                "DONE",
                "2026-11-10 00:10:00+00:00",
                "0/5000000",
                1,
            ),
            entry(
                "20261115T000000",
                "FAILED",
                "2026-11-15 00:10:00+00:00",
                "0/6000000",
                1,
            ),
            entry(
                "20261120T000000",
                "DONE",
                "2026-11-20 00:10:00+00:00",
                "0/9000000",
                2,
            ),
        ];
        let pick = |p: RecoveryPick| pick_for_recovery(&backups, &p).map(|e| e.id.as_str());
        assert_eq!(pick(RecoveryPick::default()), Ok("20261120T000000"));
        let at = |t: &str| RecoveryPick {
            time: Some(t.into()),
            ..RecoveryPick::default()
        };
        assert_eq!(pick(at("2026-11-16 00:00:00+00")), Ok("20261110T000000"));
        assert_eq!(pick(at("2026-11-10T00:10:00Z")), Ok("20261110T000000"));
        assert_eq!(
            pick(at("2026-11-21T00:00:00.5+01:00")),
            Ok("20261120T000000")
        );
        assert!(
            pick(at("2026-10-01 00:00:00+00"))
                .unwrap_err()
                .contains("no DONE backup")
        );
        assert!(pick(at("yesterday")).unwrap_err().contains("not a time"));
        let lsn = RecoveryPick {
            lsn: Some("0/5800000".into()),
            ..RecoveryPick::default()
        };
        assert_eq!(pick(lsn), Ok("20261110T000000"));
        let tli = RecoveryPick {
            timeline: Some("1".into()),
            ..RecoveryPick::default()
        };
        assert_eq!(pick(tli), Ok("20261110T000000"));
        let id = RecoveryPick {
            backup_id: Some("20261101T000000".into()),
            time: Some("2026-11-30 00:00:00+00".into()),
            ..RecoveryPick::default()
        };
        assert_eq!(pick(id), Ok("20261101T000000"));
        let failed = RecoveryPick {
            backup_id: Some("20261115T000000".into()),
            ..RecoveryPick::default()
        };
        assert!(pick(failed).is_err(), "a FAILED backup is never picked");
    }

    use super::*;

    #[test]
    fn reserved_words_and_id_shaped_names_cannot_name_a_backup() {
        for bad in ["latest", "first", "last-failed", "", "20261130T010203"] {
            assert!(check_backup_name(bad).is_err(), "{bad:?}");
        }
        for good in ["nightly", "before-upgrade", "2026-11-30"] {
            assert!(check_backup_name(good).is_ok(), "{good:?}");
        }
    }
    use bytes::Bytes;
    use walship_store::{LocalStore, PutOptions};

    async fn put(store: &LocalStore, key: &str, body: &str) {
        store
            .put_create(key, Bytes::from(body.to_owned()), &PutOptions::default())
            .await
            .unwrap();
    }

    fn info(status: &str, name: Option<&str>) -> String {
        let mut text = format!("status={status}\nversion=150018\ntablespaces=None\n");
        if let Some(name) = name {
            text.push_str(&format!("backup_name={name}\n"));
        }
        text
    }

    #[test]
    fn backup_ids_are_fifteen_characters_of_date_t_time() {
        assert!(is_backup_id("20261130T001933"));
        for bad in [
            "20261130001933",
            "20261130T00193",
            "2026113xT001933",
            "latest",
            "",
        ] {
            assert!(!is_backup_id(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn listing_skips_directories_without_backup_info_and_reports_unreadable_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::new(dir.path()));
        let base = "p/pg/base/";
        put(
            &store,
            &format!("{base}20261130T010000/backup.info"),
            &info("DONE", None),
        )
        .await;
        put(&store, &format!("{base}20261130T010000/data.tar"), "tar").await;
        put(
            &store,
            &format!("{base}20261129T010000/backup.info"),
            &info("FAILED", Some("n")),
        )
        .await;
        put(
            &store,
            &format!("{base}20261128T010000/data.tar"),
            "only a tar",
        )
        .await;
        put(
            &store,
            &format!("{base}20261127T010000/backup.info"),
            "status=LOST\n",
        )
        .await;
        put(
            &store,
            "p/pg/wals/0000000100000000/000000010000000000000001",
            "wal",
        )
        .await;
        let catalog = Catalog::new(store, &Layout::new("p", "pg"), "pg");
        let listing = catalog.list().await.unwrap();
        let ids: Vec<&str> = listing.backups.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["20261129T010000", "20261130T010000"]);
        assert_eq!(listing.unreadable.len(), 1);
        assert_eq!(listing.unreadable[0].0, "20261127T010000");
        assert!(
            listing.unreadable[0].1.contains("status"),
            "{:?}",
            listing.unreadable
        );
    }

    #[tokio::test]
    async fn shortcuts_and_names_resolve_as_barman_resolves_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::new(dir.path()));
        for (id, status, name) in [
            ("20261101T000000", "STARTED", None),
            ("20261102T000000", "DONE", Some("first-good")),
            ("20261103T000000", "FAILED", None),
            ("20261104T000000", "DONE", None),
            ("20261105T000000", "STARTED", None),
        ] {
            put(
                &store,
                &format!("p/pg/base/{id}/backup.info"),
                &info(status, name),
            )
            .await;
        }
        let catalog = Catalog::new(store.clone(), &Layout::new("p", "pg"), "pg");
        let listing = catalog.list().await.unwrap();
        for (which, id) in [
            ("latest", "20261104T000000"),
            ("last", "20261104T000000"),
            ("oldest", "20261102T000000"),
            ("first", "20261102T000000"),
            ("last-failed", "20261103T000000"),
            ("first-good", "20261102T000000"),
            ("20261105T000000", "20261105T000000"),
        ] {
            assert_eq!(catalog.resolve(&listing, which).unwrap().id, id, "{which}");
        }
        let err = catalog.resolve(&listing, "20261231T000000").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown backup \"20261231T000000\" for server \"pg\""
        );
        assert!(catalog.resolve(&listing, "no-such-name").is_err());

        put(&store, &catalog.keep_key("20261102T000000"), "standalone").await;
        assert_eq!(
            catalog.keep_target("20261102T000000").await.unwrap(),
            Some(KeepTarget::Standalone)
        );
        assert_eq!(catalog.keep_target("20261104T000000").await.unwrap(), None);
    }
}
