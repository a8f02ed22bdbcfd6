//! `walship backup` against a real PostgreSQL 15 and the S3 test server, read back by
//! barman-cloud's own tools: barman-cloud-backup-list and -show see walship's backups,
//! barman-cloud-restore restores each compression (a tablespace relocated), and
//! PostgreSQL recovers from every one of them to one target time with
//! barman-cloud-wal-restore fetching the WAL.

mod common;

use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::backups::{backup, spawn_backup};
use common::{Archive, ArchiveHarness, BUCKET, PREFIX, SERVER, stderr};
use walship_testkit::{InitOptions, PgCluster, make_readable_by_pg, pg_temp_dir};

/// walship's `--compression` values, with the extension barman gives each.
const COMPRESSIONS: [(&str, &str); 5] = [
    ("none", ""),
    ("gzip", ".gz"),
    ("bzip2", ".bz2"),
    ("snappy", ".snappy"),
    ("lz4", ".lz4"),
];

/// A primary archiving through walship, with a table in a tablespace of its own.
fn primary(archive: &Archive) -> Result<(PgCluster, tempfile::TempDir)> {
    let mut primary = PgCluster::init_temp(InitOptions {
        wal_segsize_mb: Some(1),
    })?;
    primary.set_conf(&[
        ("archive_mode", "on"),
        ("archive_command", &archive.archive_command()?),
    ])?;
    primary.start()?;
    let space = pg_temp_dir()?;
    primary.psql(&format!(
        "CREATE TABLESPACE extra LOCATION '{}'",
        space.path().display()
    ))?;
    primary.psql("CREATE TABLE t (x int)")?;
    primary.psql("CREATE TABLE u (x int) TABLESPACE extra")?;
    primary.psql("INSERT INTO t SELECT generate_series(1, 20000)")?;
    primary.psql("INSERT INTO u SELECT generate_series(1, 5000)")?;
    Ok((primary, space))
}

/// Three more WAL segments, each with rows in `t`.
fn more_wal(primary: &PgCluster) -> Result<()> {
    for _ in 0..3 {
        primary.psql("INSERT INTO t SELECT generate_series(1, 5000)")?;
        primary.switch_wal()?;
    }
    Ok(())
}

fn json_field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let at = json.find(&format!("\"{key}\": \""))? + key.len() + 5;
    let rest = &json[at..];
    Some(&rest[..rest.find('"')?])
}

#[test]
fn barman_cloud_restores_every_compression_of_a_walship_backup_and_postgres_recovers_to_a_target()
-> Result<()> {
    let archive = Archive::start(Some("gzip"))?;
    let (primary, _space) = primary(&archive)?;
    let mut ids = Vec::new();
    for (compression, extension) in COMPRESSIONS {
        primary.psql("INSERT INTO t SELECT generate_series(1, 1000)")?;
        let name = format!("nightly-{compression}");
        let out = backup(
            &archive,
            &primary,
            &["--compression", compression, "--name", &name, "--jobs", "3"],
        )?;
        ensure!(
            out.status.success(),
            "walship backup --compression {compression}: {}",
            stderr(&out)
        );
        let show = archive.walship(&["backup-show", &name, "--format", "json"])?;
        ensure!(show.status.success(), "backup-show: {}", stderr(&show));
        let json = String::from_utf8(show.stdout)?;
        let id = json_field(&json, "backup_id")
            .context("no backup_id in backup-show")?
            .to_owned();
        assert_eq!(json_field(&json, "status"), Some("DONE"), "{json}");
        let keys = archive.keys()?;
        let base = format!("{PREFIX}/{SERVER}/base/{id}/");
        let mut mine: Vec<String> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&base))
            .map(str::to_owned)
            .collect();
        mine.sort();
        let oid = primary.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'extra'")?;
        let mut expected = vec![
            format!("{}.tar{extension}", oid.trim()),
            "backup.info".to_owned(),
            format!("data.tar{extension}"),
            "walship.json".to_owned(),
        ];
        expected.sort();
        assert_eq!(mine, expected, "{compression}: the backup's objects");
        ids.push((compression, id));
    }

    // barman-cloud-backup-list sees every backup, DONE, with its name.
    let out = archive
        .barman("barman-cloud-backup-list")?
        .args(["--format", "json"])
        .arg(archive.destination())
        .arg(SERVER)
        .output()?;
    ensure!(
        out.status.success(),
        "barman-cloud-backup-list: {}",
        stderr(&out)
    );
    let listed = String::from_utf8(out.stdout)?;
    // walship prints barman's JSON byte for byte: the plugin parses either.
    let ours = archive.walship(&["backup-list", "--format", "json"])?;
    assert_eq!(
        String::from_utf8(ours.stdout)?,
        listed,
        "backup-list --format json"
    );
    for (compression, id) in &ids {
        assert!(
            listed.contains(&format!("\"backup_id\": \"{id}\"")),
            "{compression}: {id} not listed: {listed}"
        );
        assert!(listed.contains(&format!("\"backup_name\": \"nightly-{compression}\"")));
    }
    assert_eq!(listed.matches("\"status\": \"DONE\"").count(), ids.len());

    // Past every backup: the target, then changes recovery must not replay.
    primary.psql("INSERT INTO t SELECT generate_series(1, 3000)")?;
    let expected_t = primary.psql("SELECT count(*) || ':' || sum(x) FROM t")?;
    let expected_u = primary.psql("SELECT count(*) || ':' || sum(x) FROM u")?;
    let target = primary.psql("SELECT clock_timestamp()")?;
    primary.psql("DELETE FROM t WHERE x % 2 = 0")?;
    primary.psql("INSERT INTO u SELECT generate_series(1, 7)")?;
    let last = primary.switch_wal()?;
    let stats = primary.wait_for_archived(&last, Duration::from_secs(120))?;
    assert_eq!(stats.failed_count, 0, "{}", primary.log_contents());
    primary.stop()?;

    let barman_bin = walship_testkit::barman_bin_for_pg()?
        .context("no barman-cloud the PostgreSQL user can run: run `cargo xtask install-tools`")?;
    for (compression, id) in &ids {
        let dir = pg_temp_dir()?;
        let relocated = dir.path().join("extra");
        let out = archive
            .barman("barman-cloud-restore")?
            .args(["--tablespace", &format!("extra:{}", relocated.display())])
            .arg(archive.destination())
            .arg(SERVER)
            .arg(id)
            .arg(dir.path().join("data"))
            .output()?;
        ensure!(
            out.status.success(),
            "{compression}: barman-cloud-restore {id}: {}",
            stderr(&out)
        );
        make_readable_by_pg(dir.path())?;
        let mut restored = PgCluster::restored_in(dir)?;
        let restore_command = format!(
            "{} --cloud-provider aws-s3 --endpoint-url {} s3://{BUCKET}/{PREFIX} {SERVER} %f %p",
            barman_bin.join("barman-cloud-wal-restore").display(),
            archive.s3.endpoint(),
        );
        for (name, value) in [
            ("AWS_ACCESS_KEY_ID", archive.s3.access_key()),
            ("AWS_SECRET_ACCESS_KEY", archive.s3.secret_key()),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required"),
            ("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required"),
        ] {
            restored.set_env(name, value);
        }
        restored.set_conf(&[
            ("archive_mode", "off"),
            ("restore_command", &restore_command),
            ("recovery_target_time", &target),
            ("recovery_target_action", "promote"),
        ])?;
        restored.create_recovery_signal()?;
        restored.start()?;
        restored.wait_for_recovery_end_within(Duration::from_secs(120))?;
        assert_eq!(
            restored.psql("SELECT count(*) || ':' || sum(x) FROM t")?,
            expected_t,
            "{compression}: table t after recovery"
        );
        assert_eq!(
            restored.psql("SELECT count(*) || ':' || sum(x) FROM u")?,
            expected_u,
            "{compression}: table u (in the relocated tablespace) after recovery"
        );
        let link = fs::read_link(
            restored.data_dir().join("pg_tblspc").join(
                restored
                    .psql("SELECT oid FROM pg_tablespace WHERE spcname = 'extra'")?
                    .trim(),
            ),
        )?;
        assert_eq!(link, relocated, "{compression}: the tablespace link");
        let log = restored.log_contents();
        assert!(
            log.contains("recovery stopping before"),
            "{compression}: recovery did not stop at the target:\n{log}"
        );
        restored.stop()?;
    }
    Ok(())
}

#[test]
fn a_backup_is_refused_when_archiving_is_off_and_nothing_is_stored() -> Result<()> {
    let archive = Archive::start(None)?;
    let mut cluster = PgCluster::init_temp(InitOptions::default())?;
    cluster.start()?;
    let out = backup(&archive, &cluster, &[])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("archive_mode = off"), "{err}");
    assert!(archive.keys()?.is_empty(), "{:?}", archive.keys()?);
    Ok(())
}

#[test]
fn a_server_that_cannot_be_reached_exits_2_and_stores_nothing() -> Result<()> {
    let archive = Archive::start(None)?;
    let port = walship_testkit::free_port()?.to_string();
    let out = archive.walship(&["backup", "--host", "127.0.0.1", "--port", &port])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot connect to PostgreSQL"),
        "{}",
        stderr(&out)
    );
    assert!(archive.keys()?.is_empty());
    Ok(())
}

#[test]
fn a_backup_whose_wal_cannot_be_archived_ends_failed_not_done() -> Result<()> {
    let archive = Archive::start(None)?;
    let mut cluster = PgCluster::init_temp(InitOptions::default())?;
    // Archiving is on but every attempt fails; no attempt has been made yet, so only
    // the wait at the backup's end can find out.
    cluster.set_conf(&[("archive_mode", "on"), ("archive_command", "false")])?;
    cluster.start()?;
    let out = backup(&archive, &cluster, &["--archive-stall-seconds", "3"])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("WAL archiving is failing"), "{err}");
    let list = archive.walship(&["backup-list", "--format", "json"])?;
    let listed = String::from_utf8(list.stdout)?;
    assert!(listed.contains("\"status\": \"FAILED\""), "{listed}");
    assert!(!listed.contains("\"status\": \"DONE\""), "{listed}");
    assert!(
        listed.contains("failure stopping the backup (WAL archiving is failing"),
        "{listed}"
    );
    Ok(())
}

/// Recovers `dir` (restored by `walship restore` with a target) and checks the tables.
fn recover_and_check(dir: tempfile::TempDir, expected: &[(&str, &str)], what: &str) -> Result<()> {
    let mut restored = PgCluster::restored_in(dir)?;
    // The primary's archiving came along in the backup; a promoted copy must not
    // archive a new timeline into the archive the next recovery reads.
    restored.set_conf(&[("archive_mode", "off")])?;
    restored.start()?;
    restored.wait_for_recovery_end_within(Duration::from_secs(120))?;
    for (table, value) in expected {
        assert_eq!(
            restored.psql(&format!("SELECT count(*) || ':' || sum(x) FROM {table}"))?,
            *value,
            "{what}: table {table} after recovery"
        );
    }
    let log = restored.log_contents();
    assert!(
        log.contains("recovery stopping before"),
        "{what}: recovery did not stop at the target:\n{log}"
    );
    assert!(log.contains("restored log file"), "{what}: {log}");
    restored.stop()
}

#[test]
fn walship_restores_barman_cloud_and_walship_backups_and_postgres_recovers_through_wal_fetch()
-> Result<()> {
    let archive = Archive::start(Some("lz4"))?;
    let (primary, _space) = primary(&archive)?;
    let out = archive
        .barman("barman-cloud-backup")?
        .args([
            "--gzip",
            "-h",
            "127.0.0.1",
            "-p",
            &primary.port().to_string(),
        ])
        .args(["-U", "postgres", "-n", "by-barman"])
        .arg(archive.destination())
        .arg(SERVER)
        .output()?;
    ensure!(
        out.status.success(),
        "barman-cloud-backup: {}",
        stderr(&out)
    );
    primary.psql("INSERT INTO t SELECT generate_series(1, 1000)")?;
    let out = backup(
        &archive,
        &primary,
        &["--compression", "snappy", "--name", "by-walship"],
    )?;
    ensure!(out.status.success(), "walship backup: {}", stderr(&out));
    let at_backup_t = primary.psql("SELECT count(*) || ':' || sum(x) FROM t")?;

    // walship's list shows both, in barman's JSON shape.
    let list = archive.walship(&["backup-list", "--format", "json"])?;
    ensure!(list.status.success(), "backup-list: {}", stderr(&list));
    let listed = String::from_utf8(list.stdout)?;
    assert!(listed.starts_with("{\"backups_list\": [{"), "{listed}");
    assert!(
        listed.contains("\"backup_name\": \"by-barman\""),
        "{listed}"
    );
    assert!(
        listed.contains("\"backup_name\": \"by-walship\""),
        "{listed}"
    );
    assert_eq!(
        listed.matches("\"status\": \"DONE\"").count(),
        2,
        "{listed}"
    );

    primary.psql("INSERT INTO t SELECT generate_series(1, 3000)")?;
    let expected_t = primary.psql("SELECT count(*) || ':' || sum(x) FROM t")?;
    let expected_u = primary.psql("SELECT count(*) || ':' || sum(x) FROM u")?;
    let target = primary.psql("SELECT clock_timestamp()")?;
    primary.psql("DELETE FROM t WHERE x % 2 = 0")?;
    primary.psql("INSERT INTO u SELECT generate_series(1, 7)")?;
    let last = primary.switch_wal()?;
    let stats = primary.wait_for_archived(&last, Duration::from_secs(120))?;
    assert_eq!(stats.failed_count, 0, "{}", primary.log_contents());
    primary.stop()?;

    for name in ["by-barman", "by-walship"] {
        let dir = pg_temp_dir()?;
        let data = dir.path().join("data");
        let relocated = dir.path().join("extra");
        let out = archive.walship(&[
            "restore",
            name,
            data.to_str().unwrap(),
            "--tablespace",
            &format!("extra:{}", relocated.display()),
            "--target-time",
            &target,
        ])?;
        ensure!(
            out.status.success(),
            "walship restore {name}: {}",
            stderr(&out)
        );
        let err = stderr(&out);
        match name {
            "by-walship" => assert!(err.contains("every object's SHA-256 checked"), "{err}"),
            _ => assert!(err.contains("without recorded checksums"), "{err}"),
        }
        let auto = fs::read_to_string(data.join("postgresql.auto.conf"))?;
        assert!(auto.contains("wal-fetch %f %p'"), "{auto}");
        recover_and_check(dir, &[("t", &expected_t), ("u", &expected_u)], name)?;
    }

    // --target-immediate on the backup's own timeline: consistent, nothing after it.
    let dir = pg_temp_dir()?;
    let data = dir.path().join("data");
    let relocated = dir.path().join("extra");
    let out = archive.walship(&[
        "restore",
        "by-walship",
        data.to_str().unwrap(),
        "--tablespace",
        &format!("extra:{}", relocated.display()),
        "--target-immediate",
        "--target-tli",
        "current",
    ])?;
    ensure!(out.status.success(), "walship restore: {}", stderr(&out));
    let auto = fs::read_to_string(data.join("postgresql.auto.conf"))?;
    assert!(
        auto.contains("recovery_target = 'immediate'\nrecovery_target_timeline = 'current'\n"),
        "{auto}"
    );
    let mut restored = PgCluster::restored_in(dir)?;
    restored.set_conf(&[("archive_mode", "off")])?;
    restored.start()?;
    restored.wait_for_recovery_end_within(Duration::from_secs(120))?;
    assert_eq!(
        restored.psql("SELECT count(*) || ':' || sum(x) FROM t")?,
        at_backup_t,
        "table t after an immediate recovery"
    );
    let log = restored.log_contents();
    assert!(
        log.contains("recovery stopping after reaching consistency"),
        "{log}"
    );
    restored.stop()?;
    Ok(())
}

#[test]
fn a_restore_refuses_corrupt_objects_unknown_backups_and_used_directories() -> Result<()> {
    let archive = Archive::start(None)?;
    let (primary, _space) = primary(&archive)?;
    let out = backup(&archive, &primary, &["--name", "only"])?;
    ensure!(out.status.success(), "walship backup: {}", stderr(&out));
    primary.stop()?;

    // A used directory, and an unknown backup: refused, exit 1.
    let used = pg_temp_dir()?;
    fs::write(used.path().join("PG_VERSION"), "15\n")?;
    let out = archive.walship(&["restore", "only", used.path().to_str().unwrap()])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
    let fresh = pg_temp_dir()?;
    let dest = fresh.path().join("data");
    let out = archive.walship(&["restore", "20200101T000000", dest.to_str().unwrap()])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("unknown backup"), "{}", stderr(&out));

    // One byte of data.tar flipped in the store: the restore fails naming the object,
    // and what it leaves cannot be started (no global/pg_control).
    let data_tar = archive
        .keys()?
        .into_iter()
        .find(|k| k.ends_with("/data.tar"))
        .context("no data.tar")?;
    let on_disk = archive.s3.root_dir().join(BUCKET).join(&data_tar);
    let mut bytes = fs::read(&on_disk)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&on_disk, &bytes)?;
    let out = archive.walship(&[
        "restore",
        "only",
        dest.to_str().unwrap(),
        "--tablespace",
        &format!("extra:{}", fresh.path().join("extra").display()),
    ])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("data.tar: its SHA-256 is"), "{err}");
    assert!(
        !dest.join("global/pg_control").exists(),
        "pg_control was put in place"
    );
    Ok(())
}

/// What a dry run names: backup ids and WAL names. barman prints the keys it would
/// delete; walship prints `backup <id>` and `wal <name>` lines.
fn planned(barman_stdout: &str) -> (Vec<String>, Vec<String>) {
    let mut backups = Vec::new();
    let mut wal = Vec::new();
    for key in barman_stdout
        .split(['[', ']', ',', ' ', '\n'])
        .map(|w| w.trim_matches('\''))
        .filter(|w| w.contains('/'))
    {
        if let Some(id) = key
            .strip_suffix("/backup.info")
            .and_then(|k| k.rsplit('/').next())
        {
            backups.push(id.to_owned());
        } else if key.contains("/wals/") {
            let name = key.rsplit('/').next().unwrap_or(key);
            let name = name.split('.').next().unwrap_or(name).to_owned();
            let full = key
                .rsplit('/')
                .next()
                .unwrap_or(key)
                .trim_end_matches(".gz")
                .to_owned();
            wal.push(if full.len() > 24 { full } else { name });
        }
    }
    backups.sort();
    wal.sort();
    (backups, wal)
}

fn walship_planned(stdout: &str) -> (Vec<String>, Vec<String>) {
    let mut backups = Vec::new();
    let mut wal = Vec::new();
    for line in stdout.lines() {
        if let Some(id) = line.strip_prefix("backup ") {
            backups.push(id.to_owned());
        } else if let Some(name) = line.strip_prefix("wal ") {
            wal.push(name.to_owned());
        }
    }
    backups.sort();
    wal.sort();
    (backups, wal)
}

/// Moves a backup back in time so that it ended `days` ago, its begin with it (its
/// duration unchanged), in the backup.info both tools read.
fn age_backup(archive: &Archive, id: &str, days: i64) -> Result<()> {
    const FORMAT: &str = "%Y-%m-%d %H:%M:%S%.f%:z";
    let key = format!("{PREFIX}/{SERVER}/base/{id}/backup.info");
    let text = String::from_utf8(archive.s3.get_object(BUCKET, &key)?)?;
    let time_of = |field: &str| -> Result<chrono::DateTime<chrono::FixedOffset>> {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .with_context(|| format!("no {field}"))?;
        Ok(chrono::DateTime::parse_from_str(value.trim(), FORMAT)?)
    };
    let end = time_of("end_time=")?;
    let shift = chrono::Utc::now().fixed_offset() - chrono::Duration::days(days) - end;
    let moved = |t: chrono::DateTime<chrono::FixedOffset>| {
        (t + shift)
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S%.6f+00:00")
            .to_string()
    };
    let (begin, end) = (moved(time_of("begin_time=")?), moved(end));
    let text: String = text
        .lines()
        .map(|line| {
            if line.starts_with("end_time=") {
                format!("end_time={end}")
            } else if line.starts_with("begin_time=") {
                format!("begin_time={begin}")
            } else {
                line.to_owned()
            }
        })
        .map(|l| l + "\n")
        .collect();
    let status = archive.s3.put_object(BUCKET, &key, text.as_bytes())?;
    ensure!(status == 200, "rewriting {key}: HTTP {status}");
    Ok(())
}

#[test]
fn walship_and_barman_cloud_backup_delete_agree_on_a_mixed_catalog_under_a_recovery_window()
-> Result<()> {
    let archive = Archive::start_moto(Some("gzip"))?;
    let (primary, _space) = primary(&archive)?;
    let port = primary.port().to_string();
    let barman_backup = |name: &str| -> Result<()> {
        let out = archive
            .barman("barman-cloud-backup")?
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-n", name])
            .arg(archive.destination())
            .arg(SERVER)
            .output()?;
        ensure!(
            out.status.success(),
            "barman-cloud-backup: {}",
            stderr(&out)
        );
        Ok(())
    };
    more_wal(&primary)?;
    barman_backup("oldest-one")?;
    more_wal(&primary)?;
    let out = backup(&archive, &primary, &["--name", "second"])?;
    ensure!(out.status.success(), "walship backup: {}", stderr(&out));
    more_wal(&primary)?;
    barman_backup("newest-one")?;
    more_wal(&primary)?;
    let last = primary.switch_wal()?;
    primary.wait_for_archived(&last, Duration::from_secs(120))?;
    // A history file no retention may delete.
    let history = pg_temp_dir()?;
    let path = history.path().join("00000002.history");
    fs::write(&path, "1\t0/3000000\tno recovery target specified\n")?;
    let out = archive.walship(&["wal-push", path.to_str().unwrap()])?;
    ensure!(out.status.success(), "wal-push history: {}", stderr(&out));

    let show = |name: &str| -> Result<String> {
        let out = archive.walship(&["backup-show", name, "--format", "json"])?;
        let json = String::from_utf8(out.stdout)?;
        Ok(json_field(&json, "backup_id")
            .context("backup_id")?
            .to_owned())
    };
    let (first, second, third) = (show("oldest-one")?, show("second")?, show("newest-one")?);
    age_backup(&archive, &first, 10)?;
    age_backup(&archive, &second, 5)?;

    for policy in ["RECOVERY WINDOW OF 3 DAYS", "REDUNDANCY 1"] {
        let out = archive
            .barman("barman-cloud-backup-delete")?
            .args(["--dry-run", "-r", policy])
            .arg(archive.destination())
            .arg(SERVER)
            .output()?;
        ensure!(out.status.success(), "barman dry run: {}", stderr(&out));
        let theirs = planned(&String::from_utf8(out.stdout)?);
        let out = archive.walship(&["backup-delete", "--dry-run", "-r", policy])?;
        ensure!(out.status.success(), "walship dry run: {}", stderr(&out));
        let ours = walship_planned(&String::from_utf8(out.stdout)?);
        assert_eq!(
            ours, theirs,
            "{policy}: walship's plan differs from barman's"
        );
        // Neither side may pass by deleting nothing.
        assert!(
            !ours.0.is_empty() && !ours.1.is_empty(),
            "{policy}: {ours:?}"
        );
        assert!(!ours.1.iter().any(|w| w.ends_with(".history")), "{ours:?}");
    }
    let (expected_backups, expected_wal) = walship_planned(&String::from_utf8(
        archive
            .walship(&["backup-delete", "--dry-run", "-r", "3d"])?
            .stdout,
    )?);
    assert_eq!(expected_backups, std::slice::from_ref(&first));

    // walship deletes (the manifest's short form); barman then finds nothing more to
    // delete, and restores from what is left still work for barman's tools.
    let out = archive.walship(&["backup-delete", "-r", "3d"])?;
    ensure!(
        out.status.success(),
        "walship backup-delete: {}",
        stderr(&out)
    );
    let out = archive
        .barman("barman-cloud-backup-delete")?
        .args(["--dry-run", "-r", "RECOVERY WINDOW OF 3 DAYS"])
        .arg(archive.destination())
        .arg(SERVER)
        .output()?;
    let after = planned(&String::from_utf8(out.stdout)?);
    assert_eq!(
        after,
        (vec![], vec![]),
        "barman would delete more after walship"
    );
    let out = archive
        .barman("barman-cloud-backup-list")?
        .args(["--format", "json"])
        .arg(archive.destination())
        .arg(SERVER)
        .output()?;
    let listed = String::from_utf8(out.stdout)?;
    assert!(!listed.contains(&first), "{listed}");
    assert!(
        listed.contains(&second) && listed.contains(&third),
        "{listed}"
    );
    assert!(!expected_wal.is_empty());

    // Keep: a kept backup is refused by -b and survives a policy that would delete it.
    let out = archive.walship(&["backup-keep", &second, "--target", "standalone"])?;
    ensure!(out.status.success(), "backup-keep: {}", stderr(&out));
    let out = archive
        .barman("barman-cloud-backup-keep")?
        .args(["--status"])
        .arg(archive.destination())
        .arg(SERVER)
        .arg(&second)
        .output()?;
    assert_eq!(String::from_utf8(out.stdout)?.trim(), "Keep: standalone");
    let out = archive.walship(&["backup-delete", "-b", &second])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is kept"), "{}", stderr(&out));
    let out = archive.walship(&["backup-delete", "--dry-run", "-r", "REDUNDANCY 1"])?;
    let (doomed, _) = walship_planned(&String::from_utf8(out.stdout)?);
    assert!(
        doomed.is_empty(),
        "a kept backup is planned for deletion: {doomed:?}"
    );
    let out = archive.walship(&["backup-keep", &second, "--release"])?;
    ensure!(out.status.success(), "release: {}", stderr(&out));
    let out = archive.walship(&["backup-keep", &second, "--status"])?;
    assert_eq!(String::from_utf8(out.stdout)?.trim(), "Keep: nokeep");
    Ok(())
}

#[test]
fn a_backup_interrupted_by_sigterm_ends_failed_and_its_session_ends() -> Result<()> {
    let archive = Archive::start(None)?;
    let (primary, _space) = primary(&archive)?;
    // Enough data that the copy is still running when the signal comes.
    primary.psql(
        "CREATE TABLE big AS SELECT g, md5(g::text) AS m FROM generate_series(1, 1500000) g",
    )?;
    let child = spawn_backup(
        &archive,
        &primary,
        &[
            "--compression",
            "bzip2",
            "--jobs",
            "1",
            "--immediate-checkpoint",
        ],
    )?;
    // Wait until the backup is running (PostgreSQL sees its session), then signal.
    walship_testkit::wait_until(Duration::from_secs(60), "the backup's session", || {
        Ok(primary
            .psql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'walship_backup'",
            )?
            .trim()
            == "1")
    })?;
    std::thread::sleep(Duration::from_millis(500));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let out = child.wait_with_output()?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let list = archive.walship(&["backup-list", "--format", "json"])?;
    let listed = String::from_utf8(list.stdout)?;
    assert!(listed.contains("\"status\": \"FAILED\""), "{listed}");
    assert!(listed.contains("cancelled"), "{listed}");
    // The session is gone, and with it the backup PostgreSQL was running.
    walship_testkit::wait_until(Duration::from_secs(30), "the session to end", || {
        Ok(primary
            .psql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'walship_backup'",
            )?
            .trim()
            == "0")
    })?;
    Ok(())
}

#[test]
fn a_role_without_backup_rights_exits_2_and_stores_nothing() -> Result<()> {
    let archive = Archive::start(None)?;
    let mut cluster = PgCluster::init_temp(InitOptions::default())?;
    cluster.set_conf(&[
        ("archive_mode", "on"),
        ("archive_command", &archive.archive_command()?),
    ])?;
    cluster.start()?;
    cluster.psql("CREATE ROLE plain LOGIN")?;
    let out = backup(&archive, &cluster, &["--user", "plain"])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    // PostgreSQL's own words, whichever query it refuses first.
    assert!(err.contains("PostgreSQL refused"), "{err}");
    assert!(err.contains("must be superuser"), "{err}");
    assert!(archive.keys()?.is_empty(), "{:?}", archive.keys()?);
    Ok(())
}

#[test]
fn a_store_that_fails_mid_backup_never_leaves_it_done_and_the_session_ends() -> Result<()> {
    let mut archive = Archive::start(None)?;
    let (primary, _space) = primary(&archive)?;
    primary.psql(
        "CREATE TABLE big AS SELECT g, md5(g::text) AS m FROM generate_series(1, 1500000) g",
    )?;
    // A store down fails the backup after 3 s, not the default minute.
    let child = spawn_backup(
        &archive,
        &primary,
        &[
            "--compression",
            "bzip2",
            "--jobs",
            "1",
            "--immediate-checkpoint",
            "--retry-seconds",
            "3",
        ],
    )?;
    walship_testkit::wait_until(Duration::from_secs(60), "the backup to start", || {
        let out = archive.walship(&["backup-list", "--format", "json"])?;
        Ok(String::from_utf8(out.stdout)?.contains("\"status\": \"STARTED\""))
    })?;
    archive.s3.stop();
    let out = child.wait_with_output()?;
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    archive.s3.restart()?;
    let list = archive.walship(&["backup-list", "--format", "json"])?;
    let listed = String::from_utf8(list.stdout)?;
    assert!(!listed.contains("\"status\": \"DONE\""), "{listed}");
    walship_testkit::wait_until(Duration::from_secs(30), "the session to end", || {
        Ok(primary
            .psql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'walship_backup'",
            )?
            .trim()
            == "0")
    })?;
    Ok(())
}

/// A backup's `end_time` from its `backup.info`, in unix seconds.
fn end_time_of(archive: &Archive, id: &str) -> Result<f64> {
    let key = format!("{PREFIX}/{SERVER}/base/{id}/backup.info");
    let text = String::from_utf8(archive.s3.get_object(BUCKET, &key)?)?;
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("end_time="))
        .context("no end_time")?;
    let t = chrono::DateTime::parse_from_str(value.trim(), "%Y-%m-%d %H:%M:%S%.f%:z")?;
    Ok(t.timestamp_micros() as f64 / 1e6)
}

#[test]
fn the_daemon_applies_the_manifests_retention_policy_on_its_interval_and_reports_the_catalog()
-> Result<()> {
    let archive = Archive::start(Some("gzip"))?;
    let (primary, _space) = primary(&archive)?;
    more_wal(&primary)?;
    let out = backup(&archive, &primary, &["--name", "old"])?;
    ensure!(out.status.success(), "walship backup: {}", stderr(&out));
    more_wal(&primary)?;
    let out = backup(&archive, &primary, &["--name", "new"])?;
    ensure!(out.status.success(), "walship backup: {}", stderr(&out));
    more_wal(&primary)?;
    let last = primary.switch_wal()?;
    primary.wait_for_archived(&last, Duration::from_secs(120))?;
    let show = |name: &str| -> Result<(String, String)> {
        let out = archive.walship(&["backup-show", name, "--format", "json"])?;
        let json = String::from_utf8(out.stdout)?;
        Ok((
            json_field(&json, "backup_id")
                .context("backup_id")?
                .to_owned(),
            json_field(&json, "begin_wal")
                .context("begin_wal")?
                .to_owned(),
        ))
    };
    let ((old, _), (new, new_begin_wal)) = (show("old")?, show("new")?);
    // Under 3 days, the newer one is the first backup before the window (kept, as
    // barman keeps it: recovery into the window starts from it) and the older goes.
    age_backup(&archive, &old, 10)?;
    age_backup(&archive, &new, 5)?;
    let wal_before = |keys: &[String]| -> Vec<String> {
        keys.iter()
            .filter(|k| k.contains("/wals/") && !k.ends_with(".history"))
            .filter_map(|k| k.rsplit('/').next())
            .filter(|name| name.get(..24).is_some_and(|n| n < new_begin_wal.as_str()))
            .map(str::to_owned)
            .collect()
    };
    ensure!(
        !wal_before(&archive.keys()?).is_empty(),
        "the archive holds no WAL older than the newer backup: the test could not fail"
    );

    // The plugin's fields: the policy in its short form, the interval in seconds.
    archive.write_manifest(&format!(
        "{}  retentionPolicy: \"3d\"\n  instanceSidecarConfiguration:\n    \
         retentionPolicyIntervalSeconds: 1\n",
        archive.manifest()
    ))?;
    let socket = archive.dir().join("walship.sock");
    let daemon = common::daemon::DaemonProcess::start(&archive, &primary, &socket)?;
    walship_testkit::wait_until(
        Duration::from_secs(60),
        "two rounds of the retention loop",
        || Ok(daemon.metric("walship_retention_runs_total{result=\"applied\"}")? >= 2.0),
    )
    .with_context(|| daemon.log_contents())?;

    assert_eq!(
        daemon.metric("walship_retention_deleted_backups_total")?,
        1.0
    );
    assert!(daemon.metric("walship_retention_deleted_wal_total")? > 0.0);
    assert_eq!(
        daemon.metric("walship_retention_runs_total{result=\"failed\"}")?,
        0.0,
        "{}",
        daemon.log_contents()
    );
    assert_eq!(daemon.metric("walship_backups_available")?, 1.0);
    // The policy's window beside the first recoverability point, for the
    // WalshipRecoveryWindowShort alert.
    assert_eq!(
        daemon.metric("walship_retention_recovery_window_seconds")?,
        3.0 * 86400.0
    );
    let end = end_time_of(&archive, &new)?;
    for gauge in [
        "walship_first_recoverability_point_seconds",
        "walship_last_available_backup_timestamp_seconds",
    ] {
        let value = daemon.metric(gauge)?;
        assert!((value - end).abs() < 1e-3, "{gauge} is {value}, not {end}");
    }
    assert_eq!(
        daemon.metric("walship_last_failed_backup_timestamp_seconds")?,
        0.0
    );
    assert!(daemon.metric("walship_last_backup_size_bytes")? > 0.0);
    assert!(daemon.metric("walship_last_backup_duration_seconds")? > 0.0);

    let keys = archive.keys()?;
    assert!(
        !keys.iter().any(|k| k.contains(&format!("/base/{old}/"))),
        "the old backup is still there"
    );
    assert!(
        keys.iter()
            .any(|k| k.ends_with(&format!("/base/{new}/backup.info")))
    );
    assert_eq!(wal_before(&keys), Vec::<String>::new());
    // What is left is what the policy keeps: a second look deletes nothing more.
    let out = archive.walship(&["backup-delete", "--dry-run", "-r", "3d"])?;
    assert_eq!(String::from_utf8(out.stdout)?, "");
    Ok(())
}

#[test]
fn barman_cloud_backup_options_in_the_manifest_are_carried_out_and_unknown_ones_fail_only_the_backup()
-> Result<()> {
    let archive = Archive::start(Some("gzip"))?;
    let (primary, _space) = primary(&archive)?;
    let with_args = |args: &[&str]| -> Result<()> {
        let items: String = args
            .iter()
            .map(|a| format!("        - \"{a}\"\n"))
            .collect();
        archive.write_manifest(&format!(
            "{}    data:\n      additionalCommandArgs:\n{items}",
            archive.manifest()
        ))
    };
    with_args(&[
        "--name=from-args",
        "-J",
        "3",
        "--lz4",
        "--min-chunk-size=20MB",
        "--tag",
        "team,db",
        "--read-timeout=60",
        "--immediate-checkpoint",
    ])?;
    let out = backup(&archive, &primary, &[])?;
    ensure!(out.status.success(), "walship backup: {}", stderr(&out));
    assert!(
        stderr(&out).contains("--read-timeout=60 has no effect"),
        "{}",
        stderr(&out)
    );
    let out = archive.walship(&["backup-show", "from-args", "--format", "json"])?;
    ensure!(out.status.success(), "backup-show: {}", stderr(&out));
    let json = String::from_utf8(out.stdout)?;
    // -J 3 (barman records the jobs as copy_stats' workers); the tars' compression is
    // in their names (barman leaves backup.info's `compression` None).
    assert!(json.contains("\"number_of_workers\": 3"), "{json}");
    let id = json_field(&json, "backup_id").context("backup_id")?;
    let keys = archive.keys()?;
    assert!(
        keys.iter()
            .any(|k| k.ends_with(&format!("/base/{id}/data.tar.lz4"))),
        "{keys:?}"
    );

    // An option walship cannot honour fails the backup (exit 3, the item named,
    // nothing stored) and nothing else: the same manifest still lists and archives.
    with_args(&["--immediate-checkpoint", "--snapshot-disk", "disk-1"])?;
    let out = backup(&archive, &primary, &["--name", "refused"])?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("spec.configuration.data.additionalCommandArgs[1]")
            && stderr(&out).contains("--snapshot-disk")
            && stderr(&out).contains("no snapshot backups"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        archive.keys()?.len(),
        keys.len(),
        "the refused backup stored objects"
    );
    let out = archive.walship(&["backup-list"])?;
    ensure!(out.status.success(), "backup-list: {}", stderr(&out));
    let last = primary.switch_wal()?;
    primary.wait_for_archived(&last, Duration::from_secs(60))?;
    Ok(())
}
