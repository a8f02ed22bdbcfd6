//! Which file on disk: the one notion of a file's identity that the archiver (did the
//! file change while it was being archived?) and the daemon's ack journal (is this the
//! file that was acknowledged, or one recycled under the same name?) both use.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Device, inode, size and modification time (to the nanosecond) of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl FileIdentity {
    /// The identity of the file at `path` (symbolic links followed).
    pub fn of(path: &Path) -> io::Result<FileIdentity> {
        std::fs::metadata(path).map(|m| FileIdentity::of_metadata(&m))
    }

    /// The identity that `meta` describes, for a file already open.
    pub fn of_metadata(meta: &std::fs::Metadata) -> FileIdentity {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}
