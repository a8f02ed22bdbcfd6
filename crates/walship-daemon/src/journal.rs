//! The ack journal: one small fsynced file per segment the store has confirmed, kept
//! outside `pg_wal` (and outside the data directory, so base backups never copy it).
//!
//! It only saves a restarted daemon from re-uploading; the store stays the source of
//! truth. A record carries the file's identity (device, inode, size, modification
//! time) so a file recycled under the same name is not mistaken for the acked one.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use walship_store::durable;

pub use walship_engine::FileIdentity;

/// One acknowledged upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRecord {
    pub identity: FileIdentity,
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

const SUFFIX: &str = ".ack";

impl Journal {
    /// Opens (creating) the journal directory and loads every record in it. Records
    /// that cannot be parsed are dropped: at worst the segment is compared again.
    pub fn open(dir: &Path) -> io::Result<(Journal, HashMap<String, AckRecord>)> {
        fs::create_dir_all(dir)?;
        let mut records = HashMap::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(wal) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
                // Leftover temporary files from a crash (and from before the durable
                // write was shared: `.tmp-`).
                let name = name.to_string_lossy();
                if durable::is_temporary(&name) || name.starts_with(".tmp-") {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            };
            match fs::read_to_string(entry.path())
                .ok()
                .and_then(|t| parse(&t))
            {
                Some(record) => {
                    records.insert(wal.to_owned(), record);
                }
                None => {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok((
            Journal {
                dir: dir.to_owned(),
            },
            records,
        ))
    }

    /// Durably records that `name` is stored ([`walship_store::durable`]); a journal
    /// directory removed meanwhile is created again.
    pub fn record(&self, name: &str, record: &AckRecord) -> io::Result<()> {
        let id = record.identity;
        let text = format!(
            "{} {} {} {} {}\n",
            record.sha256, id.dev, id.ino, id.size, id.mtime_ns
        );
        let write = || {
            durable::write(
                &self.dir.join(format!("{name}{SUFFIX}")),
                durable::Publish::Replace,
                |file| file.write_all(text.as_bytes()),
                |e| e,
            )
        };
        match write() {
            // The directory was removed under the daemon: made again, as a restart
            // would, so one removal does not leave every later ack unjournaled.
            Err(e) if e.kind() == io::ErrorKind::NotFound && !self.dir.exists() => {
                fs::create_dir_all(&self.dir)?;
                tracing::warn!(
                    "the ack journal's directory {} was gone; created it again",
                    self.dir.display()
                );
                write()
            }
            written => written,
        }
    }

    /// Drops the record of `name` (PostgreSQL has marked it done).
    pub fn forget(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.dir.join(format!("{name}{SUFFIX}"))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn parse(text: &str) -> Option<AckRecord> {
    let mut parts = text.split_whitespace();
    let sha256 = parts.next()?.to_owned();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let identity = FileIdentity {
        dev: parts.next()?.parse().ok()?,
        ino: parts.next()?.parse().ok()?,
        size: parts.next()?.parse().ok()?,
        mtime_ns: parts.next()?.parse().ok()?,
    };
    Some(AckRecord { identity, sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_can_be_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("seg");
        fs::write(&file, b"data").unwrap();
        let record = AckRecord {
            identity: FileIdentity::of(&file).unwrap(),
            sha256: "ab".repeat(32),
        };
        let journal_dir = dir.path().join("journal");
        let (journal, loaded) = Journal::open(&journal_dir).unwrap();
        assert!(loaded.is_empty());
        journal.record("000000010000000000000001", &record).unwrap();
        fs::write(journal_dir.join("000000010000000000000002.ack"), "garbage").unwrap();
        fs::write(journal_dir.join(".tmp-x-1"), "half").unwrap();
        let (journal, loaded) = Journal::open(&journal_dir).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded["000000010000000000000001"], record);
        assert!(!journal_dir.join(".tmp-x-1").exists());
        assert!(!journal_dir.join("000000010000000000000002.ack").exists());
        journal.forget("000000010000000000000001").unwrap();
        journal.forget("000000010000000000000001").unwrap();
        assert!(Journal::open(&journal_dir).unwrap().1.is_empty());
    }

    #[test]
    fn identity_changes_when_a_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("seg");
        fs::write(&file, b"data").unwrap();
        let before = FileIdentity::of(&file).unwrap();
        let other = dir.path().join("other");
        fs::write(&other, b"data").unwrap();
        fs::rename(&other, &file).unwrap();
        assert_ne!(FileIdentity::of(&file).unwrap(), before);
    }
}
