//! The one way walship writes a local file that must survive a crash whole or not at
//! all: a temporary file beside it, fsync, then its name, then the directory fsync.
//!
//! Used by the local store (objects and their metadata), the archiver (a restored
//! segment in pg_wal), the daemon's ack journal and its prefetch spool. A crash leaves
//! either the old state or the new one, and at worst a temporary file whose name starts
//! with [`TEMP_PREFIX`] and ends with [`TEMP_SUFFIX`], which readers skip and may remove.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Temporary files start with this.
pub const TEMP_PREFIX: &str = ".walship-tmp-";
/// Temporary files end with this, so that no reader that goes by suffix (the journal's
/// `.ack`) takes one for a finished file.
pub const TEMP_SUFFIX: &str = ".tmp";

/// How the finished file takes its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// `rename(2)`: replaces a file of that name.
    Replace,
    /// `link(2)`: fails with [`io::ErrorKind::AlreadyExists`] when the name is taken,
    /// atomically, so of two writers exactly one creates the file.
    CreateOnly,
}

/// Whether `name` is one of the temporary files [`write`] leaves after a crash.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)
}

/// Writes the file `dest` with what `fill` writes into it, durably: a temporary file in
/// the same directory, fsync, published as `publish` says, then the directory fsync.
/// The temporary file never outlives the call. I/O errors become `E` through
/// `io_error`; `fill` reports its own.
pub fn write<E>(
    dest: &Path,
    publish: Publish,
    fill: impl FnOnce(&mut File) -> Result<(), E>,
    io_error: impl Fn(io::Error) -> E,
) -> Result<(), E> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(
        "{TEMP_PREFIX}{}-{n}-{name}{TEMP_SUFFIX}",
        std::process::id()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(&io_error)?;
    let written = fill(&mut file).and_then(|()| file.sync_all().map_err(&io_error));
    drop(file);
    let published = written.and_then(|()| {
        match publish {
            Publish::Replace => std::fs::rename(&tmp, dest),
            Publish::CreateOnly => std::fs::hard_link(&tmp, dest),
        }
        .map_err(&io_error)
    });
    // After a rename the temporary name is gone already; after a link, or a failure,
    // it is removed here.
    let _ = std::fs::remove_file(&tmp);
    published?;
    sync_dir(&dir).map_err(io_error)
}

/// Gives `src`, a finished and fsynced file, the name `dest` too, only if that name is
/// free (`link(2)`: [`io::ErrorKind::AlreadyExists`] otherwise, atomically), then
/// fsyncs `dest`'s directory: the last step of a [`Publish::CreateOnly`] write, for a
/// file written elsewhere on the same file system.
pub fn link_new(src: &Path, dest: &Path) -> io::Result<()> {
    std::fs::hard_link(src, dest)?;
    match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// fsyncs a directory, so that the names created or removed in it persist.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| is_temporary(n))
            .collect()
    }

    #[test]
    fn a_replacing_write_leaves_the_new_content_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f.ack");
        std::fs::write(&dest, b"old").unwrap();
        write(&dest, Publish::Replace, |f| f.write_all(b"new"), |e| e).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_create_only_write_never_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("object");
        write(&dest, Publish::CreateOnly, |f| f.write_all(b"first"), |e| e).unwrap();
        let err = write(
            &dest,
            Publish::CreateOnly,
            |f| f.write_all(b"second"),
            |e| e,
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&dest).unwrap(), b"first");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_failing_fill_publishes_nothing_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let err = write(
            &dest,
            Publish::Replace,
            |f| {
                f.write_all(b"half")?;
                Err(io::Error::other("the source broke"))
            },
            |e| e,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "the source broke");
        assert!(!dest.exists());
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn temporary_names_are_recognised_and_finished_ones_are_not() {
        assert!(is_temporary(
            ".walship-tmp-12-0-000000010000000000000001.ack.tmp"
        ));
        assert!(!is_temporary("000000010000000000000001.ack"));
        assert!(!is_temporary(".walship-tmp-12-0-x"));
    }
}
