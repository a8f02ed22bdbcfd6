//! Walking a data directory (or a tablespace) under the [`pgdata`](crate::pgdata) rules:
//! each entry kept is handed to the caller, a directory before its contents, names in
//! byte order so two backups of one directory list it alike.
//!
//! Entries that vanish during the walk (a dropped database's directory) are skipped, as
//! PostgreSQL's own base backup skips them; any other error ends the walk.

use std::fs::{self, Metadata};
use std::io;
use std::path::{Path, PathBuf};

use crate::pgdata::Rule;

/// One entry to copy.
#[derive(Debug)]
pub enum Entry {
    Dir {
        rel: String,
        meta: Metadata,
    },
    File {
        rel: String,
        path: PathBuf,
    },
    Symlink {
        rel: String,
        target: PathBuf,
        meta: Metadata,
    },
}

/// Walks `root`, asking `rule` about every entry by its path relative to `root`, and
/// hands what is kept to `each`. Entries whose rule is [`Rule::Last`] are not handed
/// over but returned, in walk order, for the caller to copy at the very end.
pub fn walk(
    root: &Path,
    rule: &dyn Fn(&str, bool) -> Rule,
    each: &mut dyn FnMut(Entry) -> io::Result<()>,
) -> io::Result<Vec<Entry>> {
    let mut last = Vec::new();
    walk_dir(root, "", rule, each, &mut last)?;
    Ok(last)
}

fn walk_dir(
    dir: &Path,
    rel_dir: &str,
    rule: &dyn Fn(&str, bool) -> Rule,
    each: &mut dyn FnMut(Entry) -> io::Result<()>,
    last: &mut Vec<Entry>,
) -> io::Result<()> {
    let mut names: Vec<_> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    names.sort();
    for name in names {
        let Some(name) = name.to_str().map(str::to_owned) else {
            // PostgreSQL names its files in ASCII; anything else is not its.
            continue;
        };
        let path = dir.join(&name);
        let rel = if rel_dir.is_empty() {
            name
        } else {
            format!("{rel_dir}/{name}")
        };
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let file_type = meta.file_type();
        // A link to a directory (pg_wal on another volume) is judged as the directory
        // it stands for, and copied as that directory's entry.
        let target_is_dir = file_type.is_symlink() && path.is_dir();
        let is_dir = file_type.is_dir() || target_is_dir;
        let entry = |meta: Metadata| -> io::Result<Entry> {
            Ok(if file_type.is_symlink() && !target_is_dir {
                Entry::Symlink {
                    rel: rel.clone(),
                    target: fs::read_link(&path)?,
                    meta,
                }
            } else if is_dir {
                Entry::Dir {
                    rel: rel.clone(),
                    meta,
                }
            } else {
                Entry::File {
                    rel: rel.clone(),
                    path: path.clone(),
                }
            })
        };
        match rule(&rel, is_dir) {
            Rule::Skip => {}
            Rule::Last => last.push(entry(meta)?),
            // Its contents are skipped by their own rules, all but what must stay
            // (pg_wal/archive_status).
            Rule::CopyEmpty | Rule::Copy if is_dir => {
                each(entry(dir_meta(&path, meta))?)?;
                walk_dir(&path, &rel, rule, each, last)?;
            }
            Rule::Copy if file_type.is_file() || file_type.is_symlink() => each(entry(meta)?)?,
            // Sockets, pipes and devices have no place in a data directory's copy; a
            // file cannot be kept empty.
            Rule::Copy | Rule::CopyEmpty => {}
        }
    }
    Ok(())
}

/// A directory's own metadata, following a link to it.
fn dir_meta(path: &Path, meta: Metadata) -> Metadata {
    if meta.file_type().is_symlink() {
        fs::metadata(path).unwrap_or(meta)
    } else {
        meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgdata;

    #[test]
    fn a_data_directory_is_walked_in_order_under_the_rules_with_pg_control_kept_for_last() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let wal_volume = dir.path().join("wal");
        for d in [
            "base/1",
            "base/5",
            "global",
            "pg_stat_tmp",
            "pg_tblspc",
            "log",
        ] {
            fs::create_dir_all(data.join(d)).unwrap();
        }
        fs::create_dir_all(wal_volume.join("archive_status")).unwrap();
        fs::write(wal_volume.join("000000010000000000000001"), b"wal").unwrap();
        std::os::unix::fs::symlink(&wal_volume, data.join("pg_wal")).unwrap();
        std::os::unix::fs::symlink("/tablespaces/a", data.join("pg_tblspc/16385")).unwrap();
        for f in [
            "PG_VERSION",
            "base/1/1259",
            "base/5/t3_16390",
            "base/5/16384",
            "global/pg_control",
            "global/1262",
            "pg_stat_tmp/global.stat",
            "postmaster.pid",
            "log/postgresql.log",
        ] {
            fs::write(data.join(f), f.as_bytes()).unwrap();
        }
        let mut seen = Vec::new();
        let last = walk(&data, &pgdata::rule, &mut |entry| {
            seen.push(match entry {
                Entry::Dir { rel, .. } => format!("{rel}/"),
                Entry::File { rel, .. } => rel,
                Entry::Symlink { rel, .. } => format!("{rel}@"),
            });
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            [
                "PG_VERSION",
                "base/",
                "base/1/",
                "base/1/1259",
                "base/5/",
                "base/5/16384",
                "global/",
                "global/1262",
                "log/",
                "pg_stat_tmp/",
                "pg_tblspc/",
                "pg_wal/",
                "pg_wal/archive_status/",
            ]
        );
        assert!(matches!(&last[..], [Entry::File { rel, .. }] if rel == "global/pg_control"));
    }
}
