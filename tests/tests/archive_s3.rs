//! PostgreSQL archives through `walship wal-push` into a real S3-compatible server, and
//! every segment it archived comes back byte-identical through `walship wal-fetch`.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{Archive, BUCKET, PREFIX, SERVER, archived_in_pg_wal, sha256_file, stderr};
use walship_testkit::{InitOptions, PgCluster, pg_temp_dir};

const CODECS: [Option<&str>; 7] = [
    None,
    Some("gzip"),
    Some("bzip2"),
    Some("xz"),
    Some("snappy"),
    Some("zstd"),
    Some("lz4"),
];

fn extension(codec: Option<&str>) -> &'static str {
    match codec {
        None => "",
        Some("gzip") => ".gz",
        Some("bzip2") => ".bz2",
        Some("xz") => ".xz",
        Some("snappy") => ".snappy",
        Some("zstd") => ".zst",
        Some("lz4") => ".lz4",
        Some(other) => panic!("unknown codec {other}"),
    }
}

fn archiving_cluster(archive: &Archive) -> Result<PgCluster> {
    let mut pg = PgCluster::init_temp(InitOptions {
        wal_segsize_mb: Some(1),
    })?;
    pg.set_conf(&[
        ("archive_mode", "on"),
        ("archive_command", &archive.archive_command()?),
        // Keep every segment in pg_wal so the test can compare it with the archive.
        ("wal_keep_size", "1GB"),
        ("max_wal_size", "1GB"),
    ])?;
    pg.start()?;
    Ok(pg)
}

#[test]
fn pgbench_wal_is_archived_completely_and_byte_identical_with_every_codec() -> Result<()> {
    for codec in CODECS {
        let archive = Archive::start(codec)?;
        let pg = archiving_cluster(&archive)?;
        pg.pgbench(&["-i", "-s", "2", "-q"])?;
        pg.pgbench(&["-c", "2", "-t", "300"])?;
        let last = pg.switch_wal()?;
        let stats = pg.wait_for_archived(&last, Duration::from_secs(120))?;
        assert_eq!(
            stats.failed_count,
            0,
            "{codec:?}: archive_command failed; server log:\n{}",
            pg.log_contents()
        );

        let archived = archived_in_pg_wal(pg.data_dir())?;
        assert!(archived.len() >= 5, "{codec:?}: only {archived:?} archived");
        let keys = archive.keys()?;
        eprintln!(
            "{codec:?}: {} segments archived by PostgreSQL, {} objects in the bucket",
            archived.len(),
            keys.len()
        );
        let ext = extension(codec);
        let fetch_dir = pg_temp_dir()?;
        for name in &archived {
            let key = format!("{PREFIX}/{SERVER}/wals/{}/{name}{ext}", &name[..16]);
            assert!(
                keys.contains(&key),
                "{codec:?}: {key} missing; bucket has {keys:?}"
            );
            let dest = fetch_dir.path().join(name);
            let out = archive.walship(&["wal-fetch", name, dest.to_str().unwrap()])?;
            assert!(out.status.success(), "{codec:?} {name}: {}", stderr(&out));
            assert_eq!(
                sha256_file(&dest)?,
                sha256_file(&pg.data_dir().join("pg_wal").join(name))?,
                "{codec:?}: {name} differs after the round trip"
            );
        }
        // Nothing but WAL objects in the expected layout.
        for key in &keys {
            let rest = key
                .strip_prefix(&format!("{PREFIX}/{SERVER}/wals/"))
                .unwrap_or_else(|| panic!("{key} is outside the server's wals/"));
            assert!(rest.ends_with(ext), "{key} lacks {ext}");
        }
        pg.stop()?;
        drop(archive);
    }
    Ok(())
}

#[test]
fn archiving_survives_a_store_outage_and_catches_up() -> Result<()> {
    let mut archive = Archive::start(Some("zstd"))?;
    let pg = archiving_cluster(&archive)?;
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x")?;
    let first = pg.switch_wal()?;
    pg.wait_for_archived(&first, Duration::from_secs(60))?;

    archive.s3.stop();
    pg.psql("INSERT INTO t SELECT generate_series(1, 20000)")?;
    let during = pg.switch_wal()?;
    // PostgreSQL retries a failing archive_command; wait until it has seen failures.
    walship_testkit::wait_until(Duration::from_secs(60), "a failed archive attempt", || {
        Ok(pg.archiver_stats()?.failed_count > 0)
    })?;
    let stats = pg.archiver_stats()?;
    assert!(
        stats.last_archived_wal.as_deref() < Some(during.as_str()),
        "{during} reported archived while the store was down: {stats:?}"
    );

    archive.s3.restart()?;
    pg.psql("INSERT INTO t SELECT generate_series(1, 1000)")?;
    let after = pg.switch_wal()?;
    pg.wait_for_archived(&after, Duration::from_secs(120))?;
    let keys = archive.keys()?;
    for name in archived_in_pg_wal(pg.data_dir())? {
        let key = format!("{PREFIX}/{SERVER}/wals/{}/{name}.zst", &name[..16]);
        assert!(keys.contains(&key), "{key} missing after the outage");
    }
    let log = pg.log_contents();
    assert!(
        log.contains("cannot reach the store") || log.contains("dispatch failure"),
        "the server log should say why archiving failed:\n{log}"
    );
    let _ = BUCKET;
    Ok(())
}
