//! Switching in both directions: barman-cloud's own tools read what walship wrote,
//! and walship reads (and refuses to overwrite) what barman-cloud wrote, with every
//! codec barman-cloud-wal-archive offers.

mod common;

use std::fs;

use anyhow::{Context, Result, ensure};
use common::{Archive, PREFIX, assert_changed_copy_refused, real_segments, sha256_file, stderr};
use walship_testkit::pg_temp_dir;

/// walship's codec name and barman-cloud-wal-archive's flag for it.
const CODECS: [(Option<&str>, Option<&str>); 7] = [
    (None, None),
    (Some("gzip"), Some("--gzip")),
    (Some("bzip2"), Some("--bzip2")),
    (Some("xz"), Some("--xz")),
    (Some("snappy"), Some("--snappy")),
    (Some("zstd"), Some("--zstd")),
    (Some("lz4"), Some("--lz4")),
];

const HISTORY: &[u8] = b"1\t0/3000000\tno recovery target specified\n";

#[test]
fn barman_cloud_restores_what_walship_archived() -> Result<()> {
    let (wal_dir, segments) = real_segments(3)?;
    fs::write(wal_dir.path().join("00000002.history"), HISTORY)?;
    let mut files = segments.clone();
    files.push("00000002.history".into());
    for (codec, _) in CODECS {
        let archive = Archive::start(codec)?;
        let out_dir = pg_temp_dir()?;
        for name in &files {
            let src = wal_dir.path().join(name);
            let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
            ensure!(
                out.status.success(),
                "{codec:?} push {name}: {}",
                stderr(&out)
            );
            let dest = out_dir.path().join(name);
            let out = archive
                .barman("barman-cloud-wal-restore")?
                .arg(archive.destination())
                .arg(common::SERVER)
                .arg(name)
                .arg(&dest)
                .output()?;
            ensure!(
                out.status.success(),
                "{codec:?}: barman-cloud-wal-restore {name} failed: {}",
                stderr(&out)
            );
            assert_eq!(
                sha256_file(&dest)?,
                sha256_file(&src)?,
                "{codec:?}: barman restored a different {name}"
            );
        }
    }
    Ok(())
}

#[test]
fn walship_restores_and_recognises_what_barman_cloud_archived() -> Result<()> {
    let (wal_dir, segments) = real_segments(3)?;
    fs::write(wal_dir.path().join("00000002.history"), HISTORY)?;
    let mut files = segments.clone();
    files.push("00000002.history".into());
    for (codec, flag) in CODECS {
        let archive = Archive::start(codec)?;
        let out_dir = pg_temp_dir()?;
        for name in &files {
            let src = wal_dir.path().join(name);
            let mut barman = archive.barman("barman-cloud-wal-archive")?;
            if let Some(flag) = flag {
                barman.arg(flag);
            }
            let out = barman
                .arg(archive.destination())
                .arg(common::SERVER)
                .arg(&src)
                .output()?;
            ensure!(
                out.status.success(),
                "{codec:?}: barman-cloud-wal-archive {name} failed: {}",
                stderr(&out)
            );

            let dest = out_dir.path().join(name);
            let out = archive.walship(&["wal-fetch", name, dest.to_str().unwrap()])?;
            ensure!(
                out.status.success(),
                "{codec:?} fetch {name}: {}",
                stderr(&out)
            );
            assert_eq!(
                sha256_file(&dest)?,
                sha256_file(&src)?,
                "{codec:?}: {name} differs"
            );

            // PostgreSQL re-archiving a file barman already stored: identical is success.
            let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
            ensure!(
                out.status.success(),
                "{codec:?}: re-pushing {name} over barman's identical copy failed: {}",
                stderr(&out)
            );
        }
        // A different file under an archived name is refused, naming both checksums.
        let name = &segments[0];
        assert_changed_copy_refused(|args| archive.walship(args), &wal_dir.path().join(name))
            .with_context(|| format!("{codec:?}"))?;
        // ...and barman's object is still the original.
        let dest = out_dir.path().join("again");
        let out = archive.walship(&["wal-fetch", name, dest.to_str().unwrap()])?;
        ensure!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            sha256_file(&dest)?,
            sha256_file(&wal_dir.path().join(name))?
        );
        let _ = PREFIX;
    }
    Ok(())
}
