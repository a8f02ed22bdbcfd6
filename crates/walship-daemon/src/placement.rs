//! Where the daemon may keep its own files: never inside the data directory or pg_wal,
//! whose contents travel into base backups, replicas and restores.

use std::path::{Path, PathBuf};

use crate::DaemonError;

/// Refuses `dir` when it is (or would be created) inside the data directory or pg_wal,
/// symbolic links resolved (pg_wal is often a link to another volume).
pub(crate) fn outside_data_directory(
    flag: &'static str,
    dir: &Path,
    pgdata: &Path,
    pg_wal: &Path,
) -> Result<(), DaemonError> {
    let resolved = resolve_existing_prefix(dir);
    for (root, what) in [(pg_wal, "pg_wal"), (pgdata, "the data directory")] {
        let root = resolve_existing_prefix(root);
        if resolved.starts_with(&root) {
            return Err(DaemonError::InsideDataDirectory {
                flag,
                path: dir.to_owned(),
                inside: root,
                what,
            });
        }
    }
    Ok(())
}

/// `path` with its longest existing ancestor canonicalized and the rest appended, so a
/// directory that does not exist yet is compared where it will be created.
fn resolve_existing_prefix(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut rest = Vec::new();
    let mut current = absolute.as_path();
    loop {
        if let Ok(real) = current.canonicalize() {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (current.parent(), current.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                current = parent;
            }
            _ => return absolute,
        }
    }
}
