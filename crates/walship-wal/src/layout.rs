//! Where barman-cloud puts WAL files in a bucket, and which object
//! barman-cloud-wal-restore would pick for a name.
//!
//! The keys are exactly barman's (`barman/clients/cloud_walarchive.py`,
//! `cloud_walrestore.py`, `barman/xlog.py` `hash_dir`, `barman/cloud.py`
//! `ALLOWED_COMPRESSIONS`):
//!
//! ```text
//! <prefix>/<server>/wals/<TTTTTTTTLLLLLLLL>/<segment>[.partial|.OOOOOOOO.backup][<ext>]
//! <prefix>/<server>/wals/<TTTTTTTT>.history[<ext>]
//! <prefix>/<server>/base/<backup id>/...
//! ```
//!
//! barman-cloud-wal-archive compresses every kind of file, history files
//! included, and names the object after the file plus the codec's extension.

use crate::compression::Compression;
use crate::name::WalName;

/// The key layout of one server's archive in one bucket or container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `<prefix>/<server>/`, or `<server>/` with an empty prefix.
    root: String,
}

/// Whether [`Layout::pick_restore`] may hand out `<name>.partial` when
/// PostgreSQL asks for a segment `<name>` that is not in the archive.
///
/// barman-cloud-wal-restore does so unless given `--no-partial`. walship
/// does not by default: a `.partial` is the zero-padded tail of a timeline
/// that was abandoned at a promotion, and restoring it under the full
/// segment's name is only right for a `pg_receivewal`-style archive whose
/// newest segment is still being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartialPolicy {
    /// Only the segment itself (barman-cloud-wal-restore `--no-partial`).
    #[default]
    Never,
    /// `<name>.partial` when no `<name>` object exists.
    WhenSegmentMissing,
}

/// The outcome of [`Layout::pick_restore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestorePick {
    /// Download `key`, decompress with `compression`, and store the result
    /// under the name PostgreSQL asked for. `name` is the object's own WAL
    /// name: the wanted name, or its `.partial` when the policy allowed it.
    Found {
        key: String,
        name: WalName,
        compression: Option<Compression>,
    },
    /// Nothing to restore. `skipped_partial` is a `.partial` key the policy
    /// refused, worth a log line ("only X.partial is archived").
    NotFound { skipped_partial: Option<String> },
}

impl Layout {
    /// The layout for `server_name` under `prefix`, the path inside the
    /// bucket or container (what follows the bucket in `destinationPath`).
    /// Leading and trailing slashes of `prefix` are ignored, as barman's
    /// `os.path.join` effectively does; an empty prefix puts the server at the
    /// top of the bucket. `server_name` is used as it is.
    pub fn new(prefix: &str, server_name: &str) -> Layout {
        let prefix = prefix.trim_matches('/');
        let root = if prefix.is_empty() {
            format!("{server_name}/")
        } else {
            format!("{prefix}/{server_name}/")
        };
        Layout { root }
    }

    /// `<prefix>/<server>/`: everything of this server's archive.
    pub fn server_prefix(&self) -> &str {
        &self.root
    }

    /// `<prefix>/<server>/wals/`: every WAL object of this server.
    pub fn wals_prefix(&self) -> String {
        format!("{}wals/", self.root)
    }

    /// `<prefix>/<server>/base/`: the base backups (one directory per backup
    /// id holding `backup.info` and the tar files).
    pub fn base_backups_prefix(&self) -> String {
        format!("{}base/", self.root)
    }

    /// The "directory" an object for `name` is stored in, ending in `/`:
    /// `wals/<TTTTTTTTLLLLLLLL>/` for segments, `.partial` and `.backup`
    /// files, `wals/` itself for history files. Listing it shows everything
    /// barman archived for that timeline and log number.
    pub fn hash_dir_prefix(&self, name: &WalName) -> String {
        match name.hash_dir() {
            Some(dir) => format!("{}wals/{dir}/", self.root),
            None => self.wals_prefix(),
        }
    }

    /// The narrowest listing prefix that finds every object for `name`
    /// (all compressions, and its `.partial`/`.backup` siblings for a
    /// segment): the key without extension. This is the prefix
    /// barman-cloud-wal-restore lists.
    pub fn restore_listing_prefix(&self, name: &WalName) -> String {
        format!("{}{name}", self.hash_dir_prefix(name))
    }

    /// The key barman-cloud-wal-archive writes `name` to, with
    /// `compression`'s extension.
    pub fn wal_key(&self, name: &WalName, compression: Option<Compression>) -> String {
        let ext = compression.map_or("", |c| c.extension());
        format!("{}{name}{ext}", self.hash_dir_prefix(name))
    }

    /// The WAL name and compression of a key under [`Layout::wals_prefix`],
    /// the inverse of [`Layout::wal_key`]. `None` for anything else: keys of
    /// another server or outside `wals/`, unknown or doubled extensions
    /// (e.g. `.gpg`, `.gz.gz`), lowercase names, and names in the wrong
    /// place (a segment outside its hash directory, a history file inside one).
    pub fn parse_wal_key(&self, key: &str) -> Option<(WalName, Option<Compression>)> {
        let rest = key.strip_prefix(&self.root)?.strip_prefix("wals/")?;
        let file = rest.rsplit('/').next()?;
        let (stem, compression) = split_extension(file);
        let name = WalName::parse(stem).ok()?;
        (self.wal_key(&name, compression) == key).then_some((name, compression))
    }

    /// The object barman-cloud-wal-restore would restore for `wanted`, among
    /// `keys` (a listing of [`Layout::hash_dir_prefix`] or
    /// [`Layout::restore_listing_prefix`]; other keys are ignored).
    ///
    /// Candidates are the key of `wanted` without compression or with any
    /// one of barman's extensions, and, if `partial` allows and `wanted` is a
    /// segment, the same for `<wanted>.partial`; the segment always wins over
    /// its `.partial`. Like barman, which takes the first compressed key in
    /// listing order and otherwise the uncompressed one, a compressed copy
    /// is preferred, the first in byte order, so the choice does not depend
    /// on the order of `keys`. (barman also skips a compressed `.backup`
    /// file; walship restores any kind by its exact name.)
    pub fn pick_restore(
        &self,
        wanted: &WalName,
        keys: &[String],
        partial: PartialPolicy,
    ) -> RestorePick {
        if let Some((key, compression)) = self.best_key(wanted, keys) {
            return RestorePick::Found {
                key,
                name: *wanted,
                compression,
            };
        }
        let Some((timeline, log, seg)) = wanted
            .is_segment()
            .then(|| wanted.segment_parts())
            .flatten()
        else {
            return RestorePick::NotFound {
                skipped_partial: None,
            };
        };
        let partial_name = WalName::Partial { timeline, log, seg };
        match (self.best_key(&partial_name, keys), partial) {
            (Some((key, compression)), PartialPolicy::WhenSegmentMissing) => RestorePick::Found {
                key,
                name: partial_name,
                compression,
            },
            (Some((key, _)), PartialPolicy::Never) => RestorePick::NotFound {
                skipped_partial: Some(key),
            },
            (None, _) => RestorePick::NotFound {
                skipped_partial: None,
            },
        }
    }

    /// The preferred key for exactly `name`: the first compressed one in
    /// byte order, else the uncompressed one.
    fn best_key(&self, name: &WalName, keys: &[String]) -> Option<(String, Option<Compression>)> {
        let base = self.wal_key(name, None);
        let mut plain = None;
        let mut compressed: Option<(&str, Compression)> = None;
        for key in keys {
            let Some(ext) = key.strip_prefix(base.as_str()) else {
                continue;
            };
            if ext.is_empty() {
                plain = Some(key.as_str());
            } else if let Some(c) = Compression::ALL.into_iter().find(|c| c.extension() == ext)
                && compressed.is_none_or(|(best, _)| key.as_str() < best)
            {
                compressed = Some((key, c));
            }
        }
        match (compressed, plain) {
            (Some((key, c)), _) => Some((key.to_owned(), Some(c))),
            (None, Some(key)) => Some((key.to_owned(), None)),
            (None, None) => None,
        }
    }
}

/// Splits one known compression extension off a file name.
fn split_extension(file: &str) -> (&str, Option<Compression>) {
    for c in Compression::ALL {
        if let Some(stem) = file.strip_suffix(c.extension()) {
            return (stem, Some(c));
        }
    }
    (file, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> WalName {
        WalName::parse(text).unwrap()
    }

    fn keys(list: &[&str]) -> Vec<String> {
        list.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn prefixes() {
        let l = Layout::new("pg/prod", "cluster-example");
        assert_eq!(l.server_prefix(), "pg/prod/cluster-example/");
        assert_eq!(l.wals_prefix(), "pg/prod/cluster-example/wals/");
        assert_eq!(l.base_backups_prefix(), "pg/prod/cluster-example/base/");
        for prefix in ["", "/", "//"] {
            let l = Layout::new(prefix, "cluster-example");
            assert_eq!(l.wals_prefix(), "cluster-example/wals/", "{prefix:?}");
            assert_eq!(l.base_backups_prefix(), "cluster-example/base/");
        }
        // s3://bucket/backups/ gives barman the path "backups/".
        assert_eq!(
            Layout::new("backups/", "pg").wals_prefix(),
            "backups/pg/wals/"
        );
        assert_eq!(
            Layout::new("/backups", "pg").wals_prefix(),
            "backups/pg/wals/"
        );
    }

    /// Golden table of keys as barman-cloud-wal-archive writes them.
    #[test]
    fn wal_keys_are_barmans() {
        let l = Layout::new("backups", "pg");
        let cases: &[(&str, Option<Compression>, &str)] = &[
            (
                "000000010000000000000006",
                None,
                "backups/pg/wals/0000000100000000/000000010000000000000006",
            ),
            (
                "000000010000000000000006",
                Some(Compression::Gzip),
                "backups/pg/wals/0000000100000000/000000010000000000000006.gz",
            ),
            (
                "0000000200000001000000FE",
                Some(Compression::Zstd),
                "backups/pg/wals/0000000200000001/0000000200000001000000FE.zst",
            ),
            (
                "00000001000000000000000A.partial",
                Some(Compression::Snappy),
                "backups/pg/wals/0000000100000000/00000001000000000000000A.partial.snappy",
            ),
            (
                "000000010000000000000002.00000028.backup",
                Some(Compression::Bzip2),
                "backups/pg/wals/0000000100000000/000000010000000000000002.00000028.backup.bz2",
            ),
            ("00000002.history", None, "backups/pg/wals/00000002.history"),
            (
                "00000002.history",
                Some(Compression::Xz),
                "backups/pg/wals/00000002.history.xz",
            ),
            (
                "0000000A00000B2C000000FF",
                Some(Compression::Lz4),
                "backups/pg/wals/0000000A00000B2C/0000000A00000B2C000000FF.lz4",
            ),
        ];
        for &(text, compression, key) in cases {
            let n = name(text);
            assert_eq!(l.wal_key(&n, compression), key);
            assert_eq!(l.parse_wal_key(key), Some((n, compression)), "{key}");
            assert!(key.starts_with(&l.hash_dir_prefix(&n)));
            assert!(key.starts_with(&l.restore_listing_prefix(&n)));
        }
        assert_eq!(
            l.hash_dir_prefix(&name("000000010000000000000006")),
            "backups/pg/wals/0000000100000000/"
        );
        assert_eq!(
            l.hash_dir_prefix(&name("00000002.history")),
            "backups/pg/wals/"
        );
        assert_eq!(
            l.restore_listing_prefix(&name("000000010000000000000006")),
            "backups/pg/wals/0000000100000000/000000010000000000000006"
        );
    }

    #[test]
    fn parse_wal_key_rejects_everything_else() {
        let l = Layout::new("backups", "pg");
        for key in [
            "",
            "backups/pg/wals/",
            "backups/pg/wals/0000000100000000/",
            // Other server, other prefix, outside wals/.
            "backups/other/wals/0000000100000000/000000010000000000000006",
            "pg/wals/0000000100000000/000000010000000000000006",
            "backups/pg/base/20250101T000000/backup.info",
            // Wrong or missing hash directory.
            "backups/pg/wals/0000000100000001/000000010000000000000006",
            "backups/pg/wals/0000000200000000/000000010000000000000006",
            "backups/pg/wals/000000010000000000000006",
            "backups/pg/wals/0000000100000000/00000002.history",
            "backups/pg/wals/x/0000000100000000/000000010000000000000006",
            // Unknown, encrypted or doubled extensions.
            "backups/pg/wals/0000000100000000/000000010000000000000006.gpg",
            "backups/pg/wals/0000000100000000/000000010000000000000006.gz.gpg",
            "backups/pg/wals/0000000100000000/000000010000000000000006.gz.gz",
            "backups/pg/wals/0000000100000000/000000010000000000000006.zstd",
            "backups/pg/wals/0000000100000000/000000010000000000000006.tmp",
            "backups/pg/wals/00000002.history.gpg",
            // Lowercase, and not WAL at all.
            "backups/pg/wals/0000000100000000/00000001000000000000000a",
            "backups/pg/wals/0000000100000000/notes.txt",
        ] {
            assert_eq!(l.parse_wal_key(key), None, "{key}");
        }
        // Empty prefix.
        let top = Layout::new("", "pg");
        assert_eq!(
            top.parse_wal_key("pg/wals/00000003.history.gz"),
            Some((name("00000003.history"), Some(Compression::Gzip)))
        );
    }

    #[test]
    fn restore_picks_like_barman() {
        let l = Layout::new("backups", "pg");
        let seg = name("000000010000000000000006");
        let dir = "backups/pg/wals/0000000100000000/";
        let k = |file: &str| format!("{dir}{file}");
        let found = |file: &str, n: &str, c: Option<Compression>| RestorePick::Found {
            key: k(file),
            name: name(n),
            compression: c,
        };
        let not_found = RestorePick::NotFound {
            skipped_partial: None,
        };

        // Uncompressed and compressed.
        let listing = keys(&[
            &k("000000010000000000000005"),
            &k("000000010000000000000006"),
        ]);
        assert_eq!(
            l.pick_restore(&seg, &listing, PartialPolicy::Never),
            found("000000010000000000000006", "000000010000000000000006", None)
        );
        let listing = keys(&[
            &k("000000010000000000000006.gz"),
            &k("0000000100000000000000060"),
            &k("000000010000000000000006.00000028.backup"),
        ]);
        assert_eq!(
            l.pick_restore(&seg, &listing, PartialPolicy::Never),
            found(
                "000000010000000000000006.gz",
                "000000010000000000000006",
                Some(Compression::Gzip)
            )
        );
        // Both: a compressed copy wins, the first in listing order, whatever
        // the order given.
        let mut listing = keys(&[
            &k("000000010000000000000006"),
            &k("000000010000000000000006.zst"),
            &k("000000010000000000000006.bz2"),
        ]);
        for _ in 0..3 {
            assert_eq!(
                l.pick_restore(&seg, &listing, PartialPolicy::Never),
                found(
                    "000000010000000000000006.bz2",
                    "000000010000000000000006",
                    Some(Compression::Bzip2)
                )
            );
            listing.rotate_left(1);
        }
        // Backup files, unknown suffixes and other segments are never picked.
        let listing = keys(&[
            &k("000000010000000000000006.00000028.backup"),
            &k("000000010000000000000006.00000028.backup.gz"),
            &k("000000010000000000000006.gpg"),
            &k("000000010000000000000006.gz.tmp"),
            &k("000000010000000000000007"),
            "backups/other/wals/0000000100000000/000000010000000000000006",
        ]);
        assert_eq!(
            l.pick_restore(&seg, &listing, PartialPolicy::Never),
            not_found
        );
        assert_eq!(l.pick_restore(&seg, &[], PartialPolicy::Never), not_found);
    }

    #[test]
    fn restore_partial_policy() {
        let l = Layout::new("backups", "pg");
        let seg = name("00000001000000000000000A");
        let dir = "backups/pg/wals/0000000100000000/";
        let partial_key = format!("{dir}00000001000000000000000A.partial.gz");
        let listing = vec![partial_key.clone()];
        assert_eq!(
            l.pick_restore(&seg, &listing, PartialPolicy::default()),
            RestorePick::NotFound {
                skipped_partial: Some(partial_key.clone())
            }
        );
        assert_eq!(
            l.pick_restore(&seg, &listing, PartialPolicy::WhenSegmentMissing),
            RestorePick::Found {
                key: partial_key.clone(),
                name: name("00000001000000000000000A.partial"),
                compression: Some(Compression::Gzip),
            }
        );
        // The full segment wins over its .partial (barman would take
        // whichever comes last in its listing loop).
        let full = format!("{dir}00000001000000000000000A");
        let listing = vec![full.clone(), partial_key.clone()];
        assert_eq!(
            l.pick_restore(&seg, &listing, PartialPolicy::WhenSegmentMissing),
            RestorePick::Found {
                key: full,
                name: seg,
                compression: None,
            }
        );
        // Asking for the .partial itself finds it under any policy.
        let p = name("00000001000000000000000A.partial");
        assert!(matches!(
            l.pick_restore(&p, &[partial_key], PartialPolicy::Never),
            RestorePick::Found { .. }
        ));
    }

    #[test]
    fn restore_history_files() {
        let l = Layout::new("", "cluster-example");
        let h = name("00000002.history");
        let listing = keys(&[
            "cluster-example/wals/00000002.history.gz",
            "cluster-example/wals/00000003.history.gz",
            "cluster-example/wals/0000000200000000/00000002.history",
        ]);
        assert_eq!(
            l.pick_restore(&h, &listing, PartialPolicy::WhenSegmentMissing),
            RestorePick::Found {
                key: "cluster-example/wals/00000002.history.gz".to_string(),
                name: h,
                compression: Some(Compression::Gzip),
            }
        );
        assert_eq!(
            l.pick_restore(
                &name("00000004.history"),
                &listing,
                PartialPolicy::WhenSegmentMissing
            ),
            RestorePick::NotFound {
                skipped_partial: None
            }
        );
    }
}
