//! Retention as barman-cloud-backup-delete applies it, without I/O: which backups a
//! policy makes obsolete, and which WAL a deleted backup leaves unneeded. Deleting
//! what barman deletes and nothing more is the point: a user switching between the
//! tools mid-window must never lose WAL one of them still needs.
//!
//! Backups (barman's `RetentionPolicy._backup_report`), newest first:
//! - only DONE backups count; STARTED and FAILED ones are never deleted by a policy;
//! - REDUNDANCY N: the newest N DONE backups without a keep are kept (kept ones count
//!   towards N), older ones are obsolete;
//! - RECOVERY WINDOW: DONE backups are kept up to and including the first whose end
//!   time is before now minus the window; older ones are obsolete (a month is 31
//!   days);
//! - a backup with a keep annotation is never obsolete; minimum redundancy keeps the
//!   newest backups past the window.
//!
//! WAL (barman's `_remove_wals_for_backup`), for each deleted backup, oldest first:
//! WAL is removed only when no older DONE backup remains (or only `keep:standalone`
//! ones, whose begin-to-end range stays); then every WAL name older than the next DONE
//! backup's `begin_wal` (or the deleted backup's own, when none is left) goes, except
//! `.history` files and WAL on a timeline another remaining backup is on.

use chrono::{DateTime, Duration, FixedOffset};

use crate::catalog::{Entry, KeepTarget};
use crate::info::Status;

/// A retention policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS`, as days.
    RecoveryWindow { days: u32, text: (u32, char) },
    /// `REDUNDANCY n`.
    Redundancy(u32),
}

impl Policy {
    /// barman's syntax (`RECOVERY WINDOW OF 30 DAYS`, `REDUNDANCY 3`, any case, an
    /// optional plural `s`) or the plugin's short form (`30d`, `4w`, `6m`).
    pub fn parse(text: &str) -> Result<Policy, String> {
        let expected = "expected RECOVERY WINDOW OF <n> DAYS|WEEKS|MONTHS, REDUNDANCY <n>, or \
                        the plugin's <n>d, <n>w, <n>m";
        let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let window = |n: &str, unit: &str| -> Option<Policy> {
            let n: u32 = n.parse().ok()?;
            let unit = match unit.trim_end_matches('s') {
                "day" | "d" => 'd',
                "week" | "w" => 'w',
                "month" | "m" => 'm',
                _ => return None,
            };
            let days = match unit {
                'd' => n,
                'w' => n.checked_mul(7)?,
                _ => n.checked_mul(31)?,
            };
            Some(Policy::RecoveryWindow {
                days,
                text: (n, unit),
            })
        };
        let parsed = match words.as_slice() {
            ["recovery", "window", "of", n, unit] => window(n, unit),
            ["redundancy", n] => n.parse().ok().map(Policy::Redundancy),
            [short] if short.len() >= 2 && !short.starts_with('0') => {
                let (n, unit) = short.split_at(short.len() - 1);
                n.bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| window(n, unit))
                    .flatten()
            }
            _ => None,
        };
        parsed.ok_or_else(|| format!("{text:?} is not a retention policy; {expected}"))
    }

    /// The window's length, for a recovery window.
    pub fn window(&self) -> Option<Duration> {
        match self {
            Policy::RecoveryWindow { days, .. } => Some(Duration::days(i64::from(*days))),
            Policy::Redundancy(_) => None,
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::RecoveryWindow {
                text: (n, unit), ..
            } => {
                let unit = match unit {
                    'd' => "DAYS",
                    'w' => "WEEKS",
                    _ => "MONTHS",
                };
                write!(f, "RECOVERY WINDOW OF {n} {unit}")
            }
            Policy::Redundancy(n) => write!(f, "REDUNDANCY {n}"),
        }
    }
}

fn is_done(entry: &Entry) -> bool {
    entry.info.status == Some(Status::Done)
}

/// The ids of the backups `policy` makes obsolete, oldest first. `backups` is the
/// whole catalog in id order; `keep` gives each backup's keep annotation.
pub fn obsolete(
    backups: &[Entry],
    keep: &dyn Fn(&str) -> Option<KeepTarget>,
    policy: Policy,
    minimum_redundancy: u32,
    now: DateTime<FixedOffset>,
) -> Vec<String> {
    let mut out = Vec::new();
    match policy {
        Policy::Redundancy(n) => {
            let n = n.max(minimum_redundancy);
            // Kept backups count towards the newest N too.
            for (newer, entry) in backups.iter().rev().filter(|e| is_done(e)).enumerate() {
                if keep(&entry.id).is_none() && newer >= n as usize {
                    out.push(entry.id.clone());
                }
            }
        }
        Policy::RecoveryWindow { .. } => {
            let point = now - policy.window().unwrap_or_default();
            let mut found = false;
            let mut valid = 0;
            for entry in backups.iter().rev().filter(|e| is_done(e)) {
                let kept = keep(&entry.id).is_some();
                if found {
                    if valid < minimum_redundancy {
                        valid += 1;
                    } else if !kept {
                        out.push(entry.id.clone());
                    }
                } else {
                    valid += 1;
                    // A DONE backup without an end time is taken as inside the window.
                    if entry.info.end_time.is_some_and(|t| t.0 < point) {
                        found = true;
                    }
                }
            }
        }
    }
    out.reverse();
    out
}

/// A WAL object in the archive: its WAL name (without a compression suffix) and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalObject {
    pub name: String,
    pub key: String,
}

/// The timeline a WAL, `.backup`, `.partial` or `.history` name is on.
fn timeline_of(name: &str) -> Option<u32> {
    u32::from_str_radix(name.get(..8)?, 16).ok()
}

/// The WAL objects that deleting `deleted` leaves unneeded, as barman decides it.
/// `remaining` is the catalog after the deletion (every status), in id order, and
/// includes no backup deleted before; `by_policy` is true when a retention policy
/// deletes (barman then also cleans up behind `keep:standalone` backups).
pub fn wal_to_delete(
    deleted: &Entry,
    remaining: &[Entry],
    keep: &dyn Fn(&str) -> Option<KeepTarget>,
    wal: &[WalObject],
    by_policy: bool,
) -> Vec<WalObject> {
    // The DONE backups around the deleted one.
    let done: Vec<&Entry> = remaining.iter().filter(|e| is_done(e)).collect();
    let mut protected_ranges: Vec<(String, String)> = Vec::new();
    for previous in done.iter().rev().filter(|e| e.id < deleted.id) {
        match keep(&previous.id) {
            Some(KeepTarget::Standalone) if by_policy => {
                let (Some(begin), Some(end)) = (&previous.info.begin_wal, &previous.info.end_wal)
                else {
                    return Vec::new();
                };
                protected_ranges.push((begin.clone(), end.clone()));
            }
            // An older backup without a keep, or kept full, needs every WAL since.
            _ => return Vec::new(),
        }
    }
    let next = done.iter().find(|e| e.id > deleted.id).copied();
    let until = next.unwrap_or(deleted);
    let Some(until_wal) = &until.info.begin_wal else {
        return Vec::new();
    };
    // WAL on a timeline another remaining backup is on stays, but for the
    // timeline of the backup WAL is removed up to.
    let protected_timelines: Vec<u32> = remaining
        .iter()
        .filter(|e| e.id != deleted.id)
        .filter_map(|e| e.info.timeline)
        .filter(|t| Some(*t) != until.info.timeline)
        .collect();
    wal.iter()
        .filter(|w| !w.name.ends_with(".history"))
        .filter(|w| timeline_of(&w.name).is_some_and(|t| !protected_timelines.contains(&t)))
        .filter(|w| {
            let checked = w.name.get(..24).unwrap_or(&w.name);
            !protected_ranges
                .iter()
                .any(|(begin, end)| checked >= begin.as_str() && checked <= end.as_str())
        })
        .filter(|w| w.name.as_str() < until_wal.as_str())
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::{BackupInfo, InfoTime};

    fn at(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).unwrap()
    }

    fn backup(id: &str, status: Status, end: &str, begin_wal: &str, end_wal: &str) -> Entry {
        Entry {
            id: id.to_owned(),
            info: BackupInfo {
                status: Some(status),
                end_time: Some(InfoTime(at(end))),
                begin_wal: Some(begin_wal.to_owned()),
                end_wal: Some(end_wal.to_owned()),
                timeline: Some(1),
                ..BackupInfo::default()
            },
        }
    }

    fn catalog() -> Vec<Entry> {
        vec![
            backup(
                "20261101T000000",
                Status::Done,
                "2026-11-01T01:00:00+00:00",
                "000000010000000000000002",
                "000000010000000000000002",
            ),
            backup(
                "20261110T000000",
                Status::Done,
                "2026-11-10T01:00:00+00:00",
                "000000010000000000000005",
                "000000010000000000000005",
            ),
            backup(
                "20261115T000000",
                Status::Failed,
                "2026-11-15T01:00:00+00:00",
                "000000010000000000000007",
                "000000010000000000000007",
            ),
            backup(
                "20261120T000000",
                Status::Done,
                "2026-11-20T01:00:00+00:00",
                "000000010000000000000009",
                "00000001000000000000000A",
            ),
            backup(
                "20261129T000000",
                Status::Done,
                "2026-11-29T01:00:00+00:00",
                "00000001000000000000000C",
                "00000001000000000000000C",
            ),
        ]
    }

    #[test]
    fn policies_parse_in_barmans_syntax_and_the_plugins_short_form() {
        assert_eq!(
            Policy::parse("30d").unwrap().window(),
            Some(Duration::days(30))
        );
        assert_eq!(
            Policy::parse("4w").unwrap().window(),
            Some(Duration::days(28))
        );
        assert_eq!(
            Policy::parse("6m").unwrap().window(),
            Some(Duration::days(186))
        );
        assert_eq!(
            Policy::parse("RECOVERY WINDOW OF 2 WEEKS")
                .unwrap()
                .to_string(),
            "RECOVERY WINDOW OF 2 WEEKS"
        );
        assert_eq!(
            Policy::parse("recovery window of 1 day").unwrap().window(),
            Some(Duration::days(1))
        );
        assert_eq!(
            Policy::parse("REDUNDANCY 3").unwrap(),
            Policy::Redundancy(3)
        );
        for bad in [
            "",
            "30",
            "0d",
            "30y",
            "d",
            "RECOVERY WINDOW 3 DAYS",
            "REDUNDANCY x",
        ] {
            let err = Policy::parse(bad).unwrap_err();
            assert!(err.contains("expected RECOVERY WINDOW OF"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_recovery_window_keeps_the_first_backup_before_it_and_never_deletes_failed_ones() {
        let now = at("2026-11-30T12:00:00+00:00");
        let none = |_: &str| None;
        // 15 days: the window starts 2026-11-15 12:00; 20261110 is the first DONE
        // backup before it and stays; 20261101 goes; the FAILED one stays.
        let gone = obsolete(&catalog(), &none, Policy::parse("15d").unwrap(), 0, now);
        assert_eq!(gone, ["20261101T000000"]);
        // 5 days: 20261120 is the first before the window; the two older DONE go.
        let gone = obsolete(&catalog(), &none, Policy::parse("5d").unwrap(), 0, now);
        assert_eq!(gone, ["20261101T000000", "20261110T000000"]);
        // Kept and minimum-redundancy backups stay.
        let kept = |id: &str| (id == "20261101T000000").then_some(KeepTarget::Full);
        let gone = obsolete(&catalog(), &kept, Policy::parse("5d").unwrap(), 0, now);
        assert_eq!(gone, ["20261110T000000"]);
        let gone = obsolete(&catalog(), &none, Policy::parse("5d").unwrap(), 3, now);
        assert_eq!(gone, ["20261101T000000"]);
    }

    #[test]
    fn redundancy_keeps_the_newest_done_backups_counting_kept_ones() {
        let now = at("2026-11-30T12:00:00+00:00");
        let none = |_: &str| None;
        let gone = obsolete(&catalog(), &none, Policy::Redundancy(2), 0, now);
        assert_eq!(gone, ["20261101T000000", "20261110T000000"]);
        let kept = |id: &str| (id == "20261120T000000").then_some(KeepTarget::Standalone);
        let gone = obsolete(&catalog(), &kept, Policy::Redundancy(1), 0, now);
        assert_eq!(gone, ["20261101T000000", "20261110T000000"]);
    }

    fn wal(names: &[&str]) -> Vec<WalObject> {
        names
            .iter()
            .map(|n| WalObject {
                name: (*n).to_owned(),
                key: format!("wals/{}/{n}.gz", &n[..16.min(n.len())]),
            })
            .collect()
    }

    #[test]
    fn wal_older_than_the_next_backup_goes_but_never_a_history_file() {
        let all = catalog();
        let deleted = &all[0];
        let remaining: Vec<Entry> = all[1..].to_vec();
        let archive = wal(&[
            "00000001.history",
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000004.partial",
            "000000010000000000000005",
            "000000010000000000000006",
        ]);
        let none = |_: &str| None;
        let gone: Vec<String> = wal_to_delete(deleted, &remaining, &none, &archive, true)
            .into_iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(
            gone,
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup",
                "000000010000000000000004.partial",
            ]
        );
    }

    #[test]
    fn no_wal_goes_while_an_older_backup_remains_and_standalone_ranges_stay() {
        let all = catalog();
        let none = |_: &str| None;
        let archive = wal(&[
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000006",
        ]);
        // Deleting the second backup while the first remains: nothing.
        let remaining = vec![
            all[0].clone(),
            all[2].clone(),
            all[3].clone(),
            all[4].clone(),
        ];
        assert!(wal_to_delete(&all[1], &remaining, &none, &archive, true).is_empty());
        // The first is kept standalone: under a policy its own WAL stays, the rest
        // before the next backup goes; deleted by id, nothing goes.
        let standalone = |id: &str| (id == "20261101T000000").then_some(KeepTarget::Standalone);
        let gone: Vec<String> = wal_to_delete(&all[1], &remaining, &standalone, &archive, true)
            .into_iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(
            gone,
            ["000000010000000000000003", "000000010000000000000006"]
        );
        assert!(wal_to_delete(&all[1], &remaining, &standalone, &archive, false).is_empty());
    }

    #[test]
    fn wal_of_another_timeline_with_a_backup_stays() {
        let all = catalog();
        let mut remaining: Vec<Entry> = all[1..].to_vec();
        remaining[2].info.timeline = Some(2);
        remaining[2].info.begin_wal = Some("000000020000000000000009".into());
        let archive = wal(&["000000010000000000000001", "000000020000000000000001"]);
        let none = |_: &str| None;
        let gone: Vec<String> = wal_to_delete(&all[0], &remaining, &none, &archive, true)
            .into_iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(gone, ["000000010000000000000001"]);
    }
}
