//! Google Cloud Storage through fake-gcs-server, with the seed's two `googleCredentials`
//! manifests as written (see `common::gcs`): PostgreSQL archives with `wal-push` and
//! recovers to a point in time with `wal-fetch`; barman-cloud reads what walship wrote
//! and walship what barman-cloud wrote; bad keys, a wrong bucket and a refusing token
//! endpoint fail cleanly; and the scenarios every store must pass (`common::pitr`, the
//! daemon's) run here too.

mod common;

use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::gcs::{BUCKET, FOLDER, GcsArchive, Identity, SERVER, seed_service_account_manifest};
use common::{
    archived_in_pg_wal, assert_changed_copy_refused, assert_walship_restores_what_barman_archived,
    real_segments, sha256_file, stderr,
};
use walship_testkit::{
    InitOptions, PgCluster, TokenMode, WalshipBin, free_port, pg_temp_dir, pg_user_command,
    wait_until,
};

#[test]
fn a_base_backup_restores_and_recovers_to_a_target_time_on_gcs() -> Result<()> {
    common::pitr::backs_up_restores_and_recovers_to_a_target_time(&GcsArchive::for_scenarios(
        "gzip", 1,
    )?)
}

#[test]
fn the_point_in_time_recovery_every_store_passes_passes_on_gcs() -> Result<()> {
    common::pitr::recovers_to_a_target_time(&GcsArchive::for_scenarios("gzip", 1)?)
}

#[test]
fn the_daemon_ships_every_segment_to_gcs_and_wal_push_only_asks_it() -> Result<()> {
    let archive = GcsArchive::for_scenarios("zstd", 4)?;
    common::daemon::ships_every_segment_and_wal_push_only_asks_it(&archive)
}

#[test]
fn postgres_archives_with_a_service_account_key_and_recovers_to_a_point_in_time() -> Result<()> {
    let archive = GcsArchive::start(false)?;
    let mut primary = PgCluster::init_temp(InitOptions {
        wal_segsize_mb: Some(1),
    })?;
    primary.set_conf(&[
        ("archive_mode", "on"),
        ("archive_command", &archive.pg_command("wal-push %p")?),
        ("wal_keep_size", "1GB"),
    ])?;
    primary.start()?;
    primary.psql("CREATE TABLE t (x int)")?;
    primary.psql("INSERT INTO t SELECT generate_series(1, 50000)")?;
    // No WAL in the backup: recovery needs the archive even to become consistent.
    let mut restored = primary.basebackup_temp(&["-X", "none"])?;
    primary.psql("INSERT INTO t SELECT generate_series(1, 50000)")?;
    let expected = primary.psql("SELECT count(*) || ':' || sum(x) FROM t")?;
    let target = primary.psql("SELECT clock_timestamp()")?;
    primary.psql("DELETE FROM t WHERE x % 2 = 0")?;
    let last = primary.switch_wal()?;
    let stats = primary.wait_for_archived(&last, Duration::from_secs(120))?;
    assert_eq!(stats.failed_count, 0, "{}", primary.log_contents());

    // Every archived segment is in barman's layout, with its checksum in the metadata.
    let archived = archived_in_pg_wal(primary.data_dir())?;
    let keys = archive.gcs.object_names(BUCKET, FOLDER)?;
    for name in &archived {
        let key = format!("{FOLDER}/{SERVER}/wals/{}/{name}", &name[..16]);
        ensure!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    let first_key = format!(
        "{FOLDER}/{SERVER}/wals/{}/{}",
        &archived[0][..16],
        archived[0]
    );
    let metadata = archive.gcs.object_metadata(BUCKET, &first_key)?;
    assert_eq!(
        metadata["walship-sha256"].as_str(),
        Some(sha256_file(&primary.data_dir().join("pg_wal").join(&archived[0]))?.as_str()),
        "{metadata}"
    );
    assert!(archive.tokens().granted() >= 1, "no token was fetched");
    assert!(
        archive.tokens().refused().is_empty(),
        "{:?}",
        archive.tokens().refused()
    );

    // barman-cloud reads what walship wrote.
    let fetched = pg_temp_dir()?;
    let dest = fetched.path().join("by-barman");
    let out = archive
        .barman("barman-cloud-wal-restore")?
        .arg(archive.destination())
        .arg(SERVER)
        .arg(&archived[0])
        .arg(&dest)
        .output()?;
    ensure!(
        out.status.success(),
        "barman-cloud-wal-restore: {}",
        stderr(&out)
    );
    assert_eq!(
        sha256_file(&dest)?,
        sha256_file(&primary.data_dir().join("pg_wal").join(&archived[0]))?
    );
    primary.stop()?;

    restored.set_conf(&[
        ("restore_command", &archive.pg_command("wal-fetch %f %p")?),
        ("recovery_target_time", &target),
        ("recovery_target_action", "promote"),
    ])?;
    restored.create_recovery_signal()?;
    restored.start()?;
    restored.wait_for_recovery_end_within(Duration::from_secs(120))?;
    assert_eq!(
        restored.psql("SELECT count(*) || ':' || sum(x) FROM t")?,
        expected
    );
    let log = restored.log_contents();
    assert!(log.contains("restored log file"), "{log}");
    assert!(
        log.contains("recovery stopping before commit of transaction"),
        "recovery did not stop at the target time:\n{log}"
    );
    Ok(())
}

#[test]
fn gke_workload_identity_pushes_fetches_checks_and_never_overwrites() -> Result<()> {
    let archive = GcsArchive::start(true)?;
    let out = archive.walship(&["check", "--expect-empty"])?;
    ensure!(out.status.success(), "check: {}", stderr(&out));
    let (wal_dir, segments) = real_segments(2)?;
    let out_dir = pg_temp_dir()?;
    for name in &segments {
        let src = wal_dir.path().join(name);
        let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
        ensure!(out.status.success(), "{}", stderr(&out));
        let dest = out_dir.path().join(name);
        let out = archive.walship(&["wal-fetch", name, dest.to_str().unwrap()])?;
        ensure!(out.status.success(), "{}", stderr(&out));
        assert_eq!(sha256_file(&dest)?, sha256_file(&src)?);
    }
    let out = archive.walship(&["check"])?;
    ensure!(out.status.success(), "check: {}", stderr(&out));
    if let Identity::Gke(metadata) = &archive.identity {
        assert!(metadata.tokens() >= 1, "no token from the metadata server");
    }
    // Identical re-push succeeds; different content under the name is refused (the
    // emulator's 412 for ifGenerationMatch=0) and the archived object stays as it was.
    let src = wal_dir.path().join(&segments[0]);
    let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    assert_changed_copy_refused(|args| archive.walship(args), &src)?;
    let dest = out_dir.path().join("again");
    let out = archive.walship(&["wal-fetch", &segments[0], dest.to_str().unwrap()])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256_file(&dest)?, sha256_file(&src)?);
    Ok(())
}

#[test]
fn walship_restores_what_barman_cloud_archived_to_gcs() -> Result<()> {
    let archive = GcsArchive::start(true)?;
    let (wal_dir, segments) = real_segments(2)?;
    assert_walship_restores_what_barman_archived(
        |tool| archive.barman(tool),
        |args| archive.walship(args),
        &archive.destination(),
        SERVER,
        wal_dir.path(),
        &segments,
        &["--gzip", "--snappy"],
    )
}

#[test]
fn bad_keys_wrong_buckets_and_refusing_token_endpoints_fail_cleanly() -> Result<()> {
    let archive = GcsArchive::start(false)?;
    let (wal_dir, segments) = real_segments(1)?;
    let src = wal_dir.path().join(&segments[0]);
    let key_file = archive
        .dir
        .path()
        .join("secrets/backup-creds/gcsCredentials");
    let good_key = fs::read_to_string(&key_file)?;
    let pem_line = serde_json_line(&good_key);

    // The token endpoint refuses: access denied, nothing archived.
    archive.tokens().set_mode(TokenMode::Refuse);
    let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("access denied") && err.contains("token"),
        "{err}"
    );
    assert!(!err.contains(&pem_line), "the key leaked: {err}");
    // The error is said once: a refused key is not retried, and nothing warns per
    // token request (gcp_auth's client, which did, no longer asks for tokens).
    assert!(!err.contains("WARN"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.contains("ERROR")).count(),
        1,
        "{err}"
    );
    archive.tokens().set_mode(TokenMode::Grant);

    // A key file that is not JSON: the field is named, the content is not shown.
    fs::write(&key_file, "{ this is TOPSECRET not json")?;
    let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("googleCredentials.applicationCredentials") && err.contains("not valid JSON"),
        "{err}"
    );
    assert!(!err.contains("TOPSECRET"), "{err}");
    // A user-credentials file instead of a service-account key.
    fs::write(
        &key_file,
        r#"{"type":"authorized_user","client_id":"x","client_secret":"TOPSECRET","refresh_token":"TOPSECRET"}"#,
    )?;
    let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
    let err = stderr(&out);
    assert!(
        err.contains("\"authorized_user\"") && err.contains("service_account"),
        "{err}"
    );
    assert!(!err.contains("TOPSECRET"), "{err}");
    fs::write(&key_file, &good_key)?;

    // A bucket that does not exist.
    fs::write(
        archive.dir.path().join("objectstore.yaml"),
        seed_service_account_manifest().replace(BUCKET, "no-such-bucket"),
    )?;
    let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("does not exist") && err.contains("gs://no-such-bucket"),
        "{err}"
    );
    assert!(archive.gcs.object_names(BUCKET, "")?.is_empty());
    Ok(())
}

/// A `walship daemon` as the PostgreSQL user; killed when dropped.
struct Daemon(std::process::Child, std::path::PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_daemon_ships_to_gcs_with_gke_workload_identity() -> Result<()> {
    let archive = GcsArchive::start(true)?;
    let socket = archive.dir.path().join("walship.sock");
    let mut pg = PgCluster::init_temp(InitOptions {
        wal_segsize_mb: Some(1),
    })?;
    let command = archive.pg_command(&format!("--socket {} wal-push %p", socket.display()))?;
    pg.set_conf(&[
        ("archive_mode", "on"),
        ("archive_command", &command),
        ("wal_keep_size", "1GB"),
    ])?;
    let log = archive.dir.path().join("daemon.log");
    let metrics_port = free_port()?;
    let mut cmd = pg_user_command(&WalshipBin::for_pg()?, archive.dir.path())?;
    cmd.envs(archive.env_vars())
        .args(archive.args())
        .arg("--socket")
        .arg(&socket)
        .args(["--log-format", "text", "daemon", "--pgdata"])
        .arg(pg.data_dir())
        .arg("--journal-dir")
        .arg(archive.dir.path().join("journal"))
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args(["--rescan-seconds", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&log)?);
    let mut daemon = Daemon(cmd.spawn().context("starting walship daemon")?, log);
    wait_until(Duration::from_secs(30), "the daemon's socket", || {
        if let Some(status) = daemon.0.try_wait()? {
            anyhow::bail!(
                "the daemon exited with {status}: {}",
                fs::read_to_string(&daemon.1)?
            );
        }
        Ok(socket.exists())
    })?;
    pg.start()?;
    pg.pgbench(&["-i", "-s", "1", "-q"])?;
    let last = pg.switch_wal()?;
    let stats = pg.wait_for_archived(&last, Duration::from_secs(120))?;
    assert_eq!(stats.failed_count, 0, "{}", pg.log_contents());
    let keys = archive.gcs.object_names(BUCKET, FOLDER)?;
    let archived = archived_in_pg_wal(pg.data_dir())?;
    ensure!(archived.len() >= 3, "{archived:?}");
    for name in &archived {
        let key = format!("{FOLDER}/{SERVER}/wals/{}/{name}", &name[..16]);
        ensure!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    // The daemon did the uploads (not wal-push falling back on its own).
    let shipped = metric(metrics_port, "walship_segments_archived_total")?;
    ensure!(
        shipped >= archived.len() as f64,
        "daemon archived {shipped} of {}",
        archived.len()
    );
    let text = fs::read_to_string(&daemon.1)?;
    if let Identity::Gke(metadata) = &archive.identity {
        assert!(metadata.tokens() >= 1, "no token from the metadata server");
    }
    assert!(!text.contains("ya29."), "a token reached the log: {text}");
    Ok(())
}

/// The value of an unlabelled metric on the daemon's `/metrics`.
fn metric(port: u16, name: &str) -> Result<f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .with_context(|| format!("{name} not in /metrics"))?
        .trim()
        .parse()
        .context("parsing the metric")
}

/// A line from the middle of the key's PEM body, to look for in outputs.
fn serde_json_line(key_json: &str) -> String {
    let start = key_json.find("BEGIN PRIVATE KEY").expect("a PEM key");
    key_json[start..]
        .split("\\n")
        .nth(3)
        .expect("PEM lines")
        .to_owned()
}

/// Every command at trace level, with a service-account key and with GKE workload
/// identity: neither the key nor an access token reaches the output.
#[test]
fn no_secret_reaches_the_output_of_any_command_at_trace_level() -> Result<()> {
    let (wal_dir, segments) = real_segments(1)?;
    let src = wal_dir.path().join(&segments[0]);
    for gke in [false, true] {
        let archive = GcsArchive::start(gke)?;
        let key_json = if gke {
            String::new()
        } else {
            archive.tokens().key_json()?
        };
        let key: serde_json::Value = serde_json::from_str(if gke { "{}" } else { &key_json })?;
        let private_key = key["private_key"].as_str().unwrap_or_default().to_owned();
        let mut secrets: Vec<&str> = private_key
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        secrets.push("ya29.test-");
        secrets.push("ya29.gke-");
        common::trace_every_command(
            &format!("gke={gke}"),
            &|args| archive.walship(args),
            &src,
            &segments[0],
            &secrets,
        )?;
    }
    Ok(())
}
