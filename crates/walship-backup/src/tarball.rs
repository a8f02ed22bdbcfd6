//! The tar stream of a base backup, as barman-cloud-restore reads it (Python's
//! `tarfile`, which reads GNU headers, long names included): a `.` root entry carrying
//! the data directory's mode (a restored directory with 0755 is refused by PostgreSQL),
//! then directories, files and links with their modes and times.
//!
//! A file is copied as it is at the moment it is read, as PostgreSQL's own base backup
//! does: its size is taken from `lstat`, its content read up to that size (a file that
//! shrank meanwhile is padded with zeros; WAL replay rewrites every page changed during
//! the backup), and a file that vanished (a dropped relation) is skipped.

use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tar::{Builder, EntryType, Header};

/// What became of a file asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Copied with this many bytes of content.
    Copied(u64),
    /// It no longer existed.
    Vanished,
}

/// A tar stream being written to `W`.
pub struct TarOut<W: Write> {
    builder: Builder<W>,
    /// Content bytes of the files copied so far.
    pub content_bytes: u64,
    pub files: u64,
}

fn header(kind: EntryType, meta: Option<&Metadata>, mode: u32) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode & 0o7777);
    // Every numeric field is written: readers other than Python's (the tar crate)
    // refuse a header whose owner is blank.
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    if let Some(meta) = meta {
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or_default());
        header.set_uid(u64::from(meta.uid()));
        header.set_gid(u64::from(meta.gid()));
    }
    header.set_size(0);
    header
}

impl<W: Write> TarOut<W> {
    pub fn new(out: W) -> TarOut<W> {
        let mut builder = Builder::new(out);
        builder.follow_symlinks(false);
        TarOut {
            builder,
            content_bytes: 0,
            files: 0,
        }
    }

    /// The `.` entry: the root directory with `meta`'s mode.
    pub fn root(&mut self, meta: &Metadata) -> io::Result<()> {
        let mut h = header(EntryType::Directory, Some(meta), meta.mode());
        self.builder.append_data(&mut h, ".", io::empty())
    }

    /// A directory entry at `rel`.
    pub fn dir(&mut self, rel: &str, meta: &Metadata) -> io::Result<()> {
        let mut h = header(EntryType::Directory, Some(meta), meta.mode());
        self.builder.append_data(&mut h, rel, io::empty())
    }

    /// A symbolic link at `rel` pointing at `target`.
    pub fn symlink(&mut self, rel: &str, target: &Path, meta: &Metadata) -> io::Result<()> {
        let mut h = header(EntryType::Symlink, Some(meta), meta.mode());
        self.builder.append_link(&mut h, rel, target)
    }

    /// A file made of `data` (`backup_label`, which PostgreSQL hands over at the end),
    /// owned by `owner` (uid, gid).
    pub fn bytes(
        &mut self,
        rel: &str,
        data: &[u8],
        mode: u32,
        mtime: u64,
        owner: (u32, u32),
    ) -> io::Result<()> {
        let mut h = header(EntryType::Regular, None, mode);
        h.set_mtime(mtime);
        h.set_uid(u64::from(owner.0));
        h.set_gid(u64::from(owner.1));
        h.set_size(data.len() as u64);
        self.builder.append_data(&mut h, rel, data)?;
        self.files += 1;
        self.content_bytes += data.len() as u64;
        Ok(())
    }

    /// The file at `path` as `rel`, as it is now (see the module's notes).
    pub fn file(&mut self, rel: &str, path: &Path) -> io::Result<Appended> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Appended::Vanished),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let size = meta.len();
        let mut h = header(EntryType::Regular, Some(&meta), meta.mode());
        h.set_size(size);
        self.builder.append_data(&mut h, rel, exactly(file, size))?;
        self.files += 1;
        self.content_bytes += size;
        Ok(Appended::Copied(size))
    }

    /// The writer the archive goes to.
    pub fn get_ref(&self) -> &W {
        self.builder.get_ref()
    }

    /// Ends the archive (two zero blocks) and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}

/// Exactly `size` bytes of `content` whatever happens to it meanwhile: what it holds up
/// to that size, then zeros if it shrank.
fn exactly(content: impl Read, size: u64) -> impl Read {
    content.take(size).chain(io::repeat(0)).take(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_archive_holds_the_root_mode_files_links_and_label_and_skips_what_vanished() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("base/1")).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(data.join("PG_VERSION"), b"15\n").unwrap();
        std::fs::write(data.join("base/1/1259"), vec![7u8; 20_000]).unwrap();
        std::os::unix::fs::symlink("/elsewhere/wal", data.join("pg_wal")).unwrap();
        let long = format!("base/1/{}", "x".repeat(120));
        std::fs::write(data.join(&long), b"long name").unwrap();

        let mut tar = TarOut::new(Vec::new());
        tar.root(&std::fs::metadata(&data).unwrap()).unwrap();
        tar.dir("base", &std::fs::metadata(data.join("base")).unwrap())
            .unwrap();
        tar.file("PG_VERSION", &data.join("PG_VERSION")).unwrap();
        tar.file("base/1/1259", &data.join("base/1/1259")).unwrap();
        tar.file(&long, &data.join(&long)).unwrap();
        assert_eq!(
            tar.file("base/1/dropped", &data.join("base/1/dropped"))
                .unwrap(),
            Appended::Vanished
        );
        tar.symlink(
            "pg_wal",
            Path::new("/elsewhere/wal"),
            &std::fs::symlink_metadata(data.join("pg_wal")).unwrap(),
        )
        .unwrap();
        tar.bytes(
            "backup_label",
            b"START WAL LOCATION: 0/2000028\n",
            0o644,
            0,
            (26, 26),
        )
        .unwrap();
        assert_eq!(tar.files, 4);
        let bytes = tar.finish().unwrap();

        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mode = entry.header().mode().unwrap();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            seen.push((path, mode, content.len()));
        }
        assert_eq!(seen[0], (".".to_owned(), 0o700, 0));
        assert!(
            seen.contains(&("PG_VERSION".to_owned(), 0o644, 3)),
            "{seen:?}"
        );
        assert!(
            seen.contains(&("base/1/1259".to_owned(), 0o644, 20_000)),
            "{seen:?}"
        );
        assert!(seen.contains(&(long.clone(), 0o644, 9)), "{seen:?}");
        assert!(seen.iter().all(|(p, _, _)| p != "base/1/dropped"));
        assert_eq!(
            seen.last().unwrap(),
            &("backup_label".to_owned(), 0o644, 30)
        );
    }

    /// A file that shrinks or grows while it is read still fills exactly the size its
    /// header promised, so the stream stays a valid archive.
    #[test]
    fn a_file_that_shrank_is_padded_with_zeros_and_one_that_grew_is_cut() {
        let mut out = Vec::new();
        exactly(&b"abc"[..], 8).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc\0\0\0\0\0");
        // A file that grew is cut at the size its header promised.
        out.clear();
        exactly(&b"abcdefghij"[..], 4)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"abcd");
    }
}
