//! Point-in-time recovery from an archive alone, the scenario every store must pass: a
//! base backup taken without WAL (`pg_basebackup -X none`) recovers to a
//! `recovery_target_time` with every segment fetched by `walship wal-fetch`, and the
//! promoted server archives its new timeline's history file.

use std::time::Duration;

use anyhow::Result;
use walship_testkit::{InitOptions, PgCluster};

use super::{ArchiveHarness, PREFIX, SERVER};

/// Runs the scenario against `archive`, whose manifest compresses with gzip.
pub fn recovers_to_a_target_time(archive: &dyn ArchiveHarness) -> Result<()> {
    recovers_to_a_target_time_after(archive, &|| {})
}

/// [`recovers_to_a_target_time`], calling `before_recovery` once the archive is
/// written and before the restored server starts (a fault schedule starts there).
pub fn recovers_to_a_target_time_after(
    archive: &dyn ArchiveHarness,
    before_recovery: &dyn Fn(),
) -> Result<()> {
    let mut primary = PgCluster::init_temp(InitOptions {
        wal_segsize_mb: Some(1),
    })?;
    primary.set_conf(&[
        ("archive_mode", "on"),
        ("archive_command", &archive.archive_command()?),
    ])?;
    primary.start()?;
    primary.psql("CREATE TABLE t (x int)")?;
    primary.psql("INSERT INTO t SELECT generate_series(1, 50000)")?;

    // No WAL in the backup: recovery needs the archive even to become consistent.
    let mut restored = primary.basebackup_temp(&["-X", "none"])?;

    primary.psql("INSERT INTO t SELECT generate_series(1, 50000)")?;
    let expected = primary.psql("SELECT count(*) || ':' || sum(x) FROM t")?;
    // Read after the insert committed, so the target lies between it and the delete.
    let target = primary.psql("SELECT clock_timestamp()")?;
    primary.psql("DELETE FROM t WHERE x % 2 = 0")?;
    primary.psql("INSERT INTO t SELECT generate_series(1, 7)")?;
    let last = primary.switch_wal()?;
    let stats = primary.wait_for_archived(&last, Duration::from_secs(120))?;
    assert_eq!(stats.failed_count, 0, "{}", primary.log_contents());
    primary.stop()?;

    restored.set_conf(&[
        ("restore_command", &archive.restore_command()?),
        ("recovery_target_time", &target),
        ("recovery_target_action", "promote"),
        ("archive_mode", "on"),
        ("archive_command", &archive.archive_command()?),
    ])?;
    restored.create_recovery_signal()?;
    before_recovery();
    restored.start()?;
    restored.wait_for_recovery_end_within(Duration::from_secs(120))?;

    assert_eq!(
        restored.psql("SELECT count(*) || ':' || sum(x) FROM t")?,
        expected
    );
    let log = restored.log_contents();
    assert!(
        log.contains("recovery stopping before commit of transaction"),
        "recovery did not stop at the target time:\n{log}"
    );
    assert!(log.contains("restored log file"), "{log}");

    // The promoted server is on timeline 2 and archives its history file, which
    // barman keeps directly under wals/.
    let history_key = format!("{PREFIX}/{SERVER}/wals/00000002.history.gz");
    walship_testkit::wait_until(
        Duration::from_secs(60),
        "00000002.history in the archive",
        || Ok(archive.keys()?.contains(&history_key)),
    )?;
    Ok(())
}

/// Runs the base backup scenario against `archive`: `walship backup` of a running
/// primary (gzip, three jobs), then `walship restore --target-time` of it, and the
/// restored server recovers to the target through `walship wal-fetch`.
pub fn backs_up_restores_and_recovers_to_a_target_time(archive: &dyn ArchiveHarness) -> Result<()> {
    let mut primary = PgCluster::init_temp(InitOptions {
        wal_segsize_mb: Some(1),
    })?;
    primary.set_conf(&[
        ("archive_mode", "on"),
        ("archive_command", &archive.archive_command()?),
    ])?;
    primary.start()?;
    primary.psql("CREATE TABLE t (x int)")?;
    primary.psql("INSERT INTO t SELECT generate_series(1, 50000)")?;
    let port = primary.port().to_string();
    let out = archive.walship(&[
        "backup",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--compression",
        "gzip",
        "--jobs",
        "3",
        "--name",
        "scenario",
    ])?;
    anyhow::ensure!(
        out.status.success(),
        "walship backup: {}",
        super::stderr(&out)
    );
    let base = format!("{PREFIX}/{SERVER}/base/");
    let keys = archive.keys()?;
    for object in ["backup.info", "data.tar.gz", "walship.json"] {
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&base) && k.ends_with(&format!("/{object}"))),
            "no {object} under {base}: {keys:?}"
        );
    }

    primary.psql("INSERT INTO t SELECT generate_series(1, 50000)")?;
    let expected = primary.psql("SELECT count(*) || ':' || sum(x) FROM t")?;
    let target = primary.psql("SELECT clock_timestamp()")?;
    primary.psql("DELETE FROM t WHERE x % 2 = 0")?;
    let last = primary.switch_wal()?;
    let stats = primary.wait_for_archived(&last, Duration::from_secs(120))?;
    assert_eq!(stats.failed_count, 0, "{}", primary.log_contents());
    primary.stop()?;

    let dir = walship_testkit::pg_temp_dir()?;
    let data = dir.path().join("data");
    let out = archive.walship(&[
        "restore",
        "scenario",
        data.to_str().expect("a UTF-8 path"),
        "--target-time",
        &target,
    ])?;
    anyhow::ensure!(
        out.status.success(),
        "walship restore: {}",
        super::stderr(&out)
    );
    assert!(
        super::stderr(&out).contains("every object's SHA-256 checked"),
        "{}",
        super::stderr(&out)
    );
    let mut restored = PgCluster::restored_in(dir)?;
    restored.set_conf(&[("archive_mode", "off")])?;
    if !archive.env().is_empty() {
        // The harness reaches its store through environment variables (the GCS
        // emulator's address), which the restore_command walship wrote does not carry.
        restored.set_conf(&[("restore_command", &archive.restore_command()?)])?;
    }
    restored.start()?;
    restored.wait_for_recovery_end_within(Duration::from_secs(120))?;
    assert_eq!(
        restored.psql("SELECT count(*) || ':' || sum(x) FROM t")?,
        expected
    );
    let log = restored.log_contents();
    assert!(
        log.contains("recovery stopping before commit of transaction"),
        "recovery did not stop at the target time:\n{log}"
    );
    Ok(())
}
