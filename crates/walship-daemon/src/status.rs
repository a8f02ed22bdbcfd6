//! Reading `pg_wal/archive_status`: which files PostgreSQL wants archived.

use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use walship_wal::WalName;

/// A `.ready` file: PostgreSQL wants `name` archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub name: WalName,
    /// Size of the WAL file in `pg_wal` (0 if it vanished meanwhile).
    pub size: u64,
    /// When the `.ready` marker was created.
    pub since: Option<SystemTime>,
}

/// The order PostgreSQL's archiver uses: timeline history files first, then the
/// oldest segment (names sort by timeline, log and segment).
pub fn archive_order(name: &WalName) -> (u8, String) {
    (u8::from(!name.is_history()), name.to_string())
}

/// Every `.ready` file with a WAL name, in archive order. Anything else (temporary
/// files, `.done` markers, foreign names) is ignored.
pub fn scan(pg_wal: &Path) -> io::Result<Vec<Ready>> {
    let mut ready = Vec::new();
    for entry in fs::read_dir(pg_wal.join("archive_status"))? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(stem) = file_name.to_str().and_then(|n| n.strip_suffix(".ready")) else {
            continue;
        };
        let Ok(name) = WalName::parse(stem) else {
            continue;
        };
        let since = entry.metadata().and_then(|m| m.modified()).ok();
        let size = fs::metadata(pg_wal.join(stem))
            .map(|m| m.len())
            .unwrap_or(0);
        ready.push(Ready { name, size, since });
    }
    ready.sort_by_key(|r| archive_order(&r.name));
    Ok(ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_first_then_oldest_and_foreign_names_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("archive_status");
        fs::create_dir_all(&status).unwrap();
        for name in [
            "000000020000000000000003.ready",
            "000000010000000000000002.ready",
            "00000002.history.ready",
            "000000010000000000000001.done",
            "000000010000000000000001.partial.ready",
            "xlogtemp.123.ready",
            "000000010000000000000004.ready.tmp",
        ] {
            fs::write(status.join(name), b"").unwrap();
        }
        fs::write(dir.path().join("000000010000000000000002"), vec![0u8; 10]).unwrap();
        let names: Vec<String> = scan(dir.path())
            .unwrap()
            .iter()
            .map(|r| r.name.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "00000002.history",
                "000000010000000000000001.partial",
                "000000010000000000000002",
                "000000020000000000000003"
            ]
        );
        let ready = scan(dir.path()).unwrap();
        assert_eq!(ready[2].size, 10);
    }
}
