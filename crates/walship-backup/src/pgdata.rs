//! What of a data directory goes into a base backup: PostgreSQL's own rules for
//! `BASE_BACKUP` (basebackup.c's `excludeDirContents` and `excludeFiles`), and barman's
//! additions (server logs, `recovery.conf`, `standby.signal`), so a restore of either
//! tool's backup starts the same server.
//!
//! Pure rules over relative paths: the walk that applies them is elsewhere.

/// What to do with one entry of the data directory, by its path relative to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Copy it (a directory: and walk into it).
    Copy,
    /// A directory whose entry is copied but whose contents are not: restored empty,
    /// where PostgreSQL expects it to exist.
    CopyEmpty,
    /// Leave it out.
    Skip,
    /// `global/pg_control`: copied last, after every other file, as barman does, so a
    /// backup holds a control file at least as new as any page.
    Last,
}

/// Directories restored empty (PostgreSQL's `excludeDirContents`, barman's log
/// directories, and the WAL directory under both its names).
const EMPTY_DIRS: &[&str] = &[
    "pg_wal",
    "pg_xlog",
    "log",
    "pg_log",
    "pg_dynshmem",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_stat_tmp",
    "pg_snapshots",
    "pg_subtrans",
];

/// Files left out wherever they are (PostgreSQL's `excludeFiles` and barman's list).
const SKIPPED_FILES: &[&str] = &[
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "pg_internal.init",
    "postmaster.pid",
    "postmaster.opts",
    "recovery.conf",
    "standby.signal",
    // Written by the backup itself (pg_backup_stop hands them over); a stale one from
    // an earlier exclusive backup must not travel.
    "backup_label",
    "tablespace_map",
];

/// The rule for `path` (relative to the data directory, `/`-separated, no leading
/// `./`); `is_dir` says whether it is a directory.
pub fn rule(path: &str, is_dir: bool) -> Rule {
    let mut parts = path.split('/');
    let first = parts.next().unwrap_or_default();
    let name = path.rsplit('/').next().unwrap_or_default();
    let top_level = !path.contains('/');
    if top_level && is_dir && EMPTY_DIRS.contains(&first) {
        return Rule::CopyEmpty;
    }
    if !top_level && EMPTY_DIRS.contains(&first) {
        // pg_wal/archive_status stays as an empty directory: PostgreSQL 15 recreates
        // it, older versions refuse to start without it.
        if path == "pg_wal/archive_status" && is_dir {
            return Rule::CopyEmpty;
        }
        return Rule::Skip;
    }
    // Tablespaces are links under pg_tblspc; each goes into its own tar.
    if first == "pg_tblspc" && !top_level {
        return Rule::Skip;
    }
    if path == "global/pg_control" {
        return Rule::Last;
    }
    if name.starts_with("pgsql_tmp") || (!is_dir && SKIPPED_FILES.contains(&name)) {
        return Rule::Skip;
    }
    if !is_dir && is_temporary_relation(path) {
        return Rule::Skip;
    }
    Rule::Copy
}

/// The rule for `path` relative to a tablespace's location, for a server of major
/// version `major`: only the server's own `PG_<major>_<catversion>` directory goes into
/// the tablespace's tar (another version's, left by pg_upgrade, is not this server's),
/// without temporary files and relations.
pub fn tablespace_rule(major: u32, path: &str, is_dir: bool) -> Rule {
    let first = path.split('/').next().unwrap_or_default();
    let ours = first
        .strip_prefix(&format!("PG_{major}_"))
        .is_some_and(|cat| !cat.is_empty() && cat.bytes().all(|b| b.is_ascii_digit()));
    let name = path.rsplit('/').next().unwrap_or_default();
    if !ours || name.starts_with("pgsql_tmp") || (!is_dir && is_temporary_relation(path)) {
        return Rule::Skip;
    }
    Rule::Copy
}

/// A temporary relation's file, `t<backend>_<relfilenode>[.<segment>|_<fork>]`, in a
/// database directory (`base/<oid>/` or a tablespace's): PostgreSQL removes them at
/// start, so copying them is waste.
fn is_temporary_relation(path: &str) -> bool {
    let mut parts = path.rsplit('/');
    let name = parts.next().unwrap_or_default();
    let in_database = parts
        .next()
        .is_some_and(|dir| !dir.is_empty() && dir.bytes().all(|b| b.is_ascii_digit()));
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let Some((backend, relation)) = rest.split_once('_') else {
        return false;
    };
    let relation = relation.split(['.', '_']).next().unwrap_or_default();
    in_database
        && !backend.is_empty()
        && backend.bytes().all(|b| b.is_ascii_digit())
        && !relation.is_empty()
        && relation.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tablespace_keeps_only_this_versions_directory_without_temporary_files() {
        assert_eq!(tablespace_rule(15, "PG_15_202209061", true), Rule::Copy);
        assert_eq!(
            tablespace_rule(15, "PG_15_202209061/16384/16390", false),
            Rule::Copy
        );
        assert_eq!(tablespace_rule(15, "PG_14_202107181", true), Rule::Skip);
        assert_eq!(
            tablespace_rule(15, "PG_15_202209061/16384/t3_16390", false),
            Rule::Skip
        );
        assert_eq!(
            tablespace_rule(15, "PG_15_202209061/pgsql_tmp", true),
            Rule::Skip
        );
        assert_eq!(tablespace_rule(15, "lost+found", true), Rule::Skip);
        assert_eq!(tablespace_rule(15, "notes.txt", false), Rule::Skip);
    }

    #[test]
    fn each_entry_gets_the_rule_postgresql_and_barman_give_it() {
        for (path, is_dir, expected) in [
            ("PG_VERSION", false, Rule::Copy),
            ("base", true, Rule::Copy),
            ("base/5/16384", false, Rule::Copy),
            ("base/5/16384_fsm", false, Rule::Copy),
            ("base/5/16384.1", false, Rule::Copy),
            ("base/5/t3_16390", false, Rule::Skip),
            ("base/5/t3_16390_fsm", false, Rule::Skip),
            ("base/5/t3_16390.2", false, Rule::Skip),
            ("base/t3_16390", false, Rule::Copy),
            ("base/5/pgsql_tmp", true, Rule::Skip),
            ("base/pgsql_tmp/pgsql_tmp123.0", false, Rule::Skip),
            ("base/5/pg_internal.init", false, Rule::Skip),
            ("global/pg_internal.init", false, Rule::Skip),
            ("global/pg_control", false, Rule::Last),
            ("global/1262", false, Rule::Copy),
            ("pg_wal", true, Rule::CopyEmpty),
            ("pg_wal/000000010000000000000001", false, Rule::Skip),
            ("pg_wal/archive_status", true, Rule::CopyEmpty),
            (
                "pg_wal/archive_status/000000010000000000000001.done",
                false,
                Rule::Skip,
            ),
            ("log", true, Rule::CopyEmpty),
            ("log/postgresql-2026-11-30.log", false, Rule::Skip),
            ("pg_stat_tmp", true, Rule::CopyEmpty),
            ("pg_stat_tmp/global.stat", false, Rule::Skip),
            ("pg_replslot/slot1", true, Rule::Skip),
            ("pg_stat", true, Rule::Copy),
            ("pg_tblspc", true, Rule::Copy),
            ("pg_tblspc/16385", false, Rule::Skip),
            ("postmaster.pid", false, Rule::Skip),
            ("postmaster.opts", false, Rule::Skip),
            ("standby.signal", false, Rule::Skip),
            ("recovery.signal", false, Rule::Copy),
            ("backup_label", false, Rule::Skip),
            ("tablespace_map", false, Rule::Skip),
            ("postgresql.conf", false, Rule::Copy),
            ("postgresql.auto.conf", false, Rule::Copy),
            ("postgresql.auto.conf.tmp", false, Rule::Skip),
            ("current_logfiles", false, Rule::Copy),
        ] {
            assert_eq!(rule(path, is_dir), expected, "{path}");
        }
    }
}
