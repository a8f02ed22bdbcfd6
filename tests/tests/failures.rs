//! Every way `wal-push` and `wal-fetch` can fail, with the exit statuses PostgreSQL's
//! archive_command and restore_command contracts need, and no secret in any output.

mod common;

use std::fs;

use anyhow::Result;
use common::{Archive, real_segments, stderr};
use walship_testkit::pg_temp_dir;

#[test]
fn a_bad_manifest_exits_2_names_the_field_and_ships_nothing() -> Result<()> {
    let archive = Archive::start(None)?;
    let (wal_dir, segments) = real_segments(1)?;
    let src = wal_dir.path().join(&segments[0]);
    let good = archive.manifest();

    let cases = [
        (
            good.replace("s3Credentials:", "s3Credential:"),
            "spec.configuration.s3Credential",
            "did you mean \"s3Credentials\"",
        ),
        (
            good.replace("destinationPath: s3://", "destinationPath: s3:/"),
            "spec.configuration.destinationPath",
            "expected s3://BUCKET[/PREFIX]",
        ),
        (
            format!("{good}    wal:\n      maxParallel: 0\n"),
            "spec.configuration.wal.maxParallel",
            "0",
        ),
        (
            good.replace("barmancloud.cnpg.io/v1", "barmancloud.cnpg.io/v2"),
            "apiVersion",
            "barmancloud.cnpg.io/v1",
        ),
    ];
    for (yaml, path, hint) in cases {
        archive.write_manifest(&yaml)?;
        let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{path}: {err}");
        assert!(err.contains(path), "expected {path} in: {err}");
        assert!(err.contains(hint), "expected {hint:?} in: {err}");
        // check reports the same way.
        let out = archive.walship(&["check"])?;
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    }
    // A missing secret key names the secret, the key and the field.
    archive.write_manifest(&good.replace("key: ACCESS_SECRET_KEY", "key: NO_SUCH_KEY"))?;
    let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("NO_SUCH_KEY") && err.contains("aws-creds"),
        "{err}"
    );
    assert!(err.contains("secretAccessKey"), "{err}");
    assert!(archive.keys()?.is_empty(), "something was shipped");
    Ok(())
}

#[test]
fn an_empty_google_key_file_is_bad_configuration_naming_the_field() -> Result<()> {
    let archive = Archive::start(None)?;
    archive.write_secret("gcs", "key.json", "{}")?;
    archive.write_manifest(
        "apiVersion: barmancloud.cnpg.io/v1\nkind: ObjectStore\nmetadata:\n  name: g\n\
         spec:\n  configuration:\n    destinationPath: gs://bucket/path\n\
         \x20   googleCredentials:\n      applicationCredentials:\n        name: gcs\n        key: key.json\n",
    )?;
    let out = archive.walship(&["check"])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("googleCredentials.applicationCredentials") && err.contains("service_account"),
        "{err}"
    );
    Ok(())
}

#[test]
fn wrong_credentials_fail_without_revealing_the_secret() -> Result<()> {
    let archive = Archive::start(None)?;
    let (wal_dir, segments) = real_segments(1)?;
    let src = wal_dir.path().join(&segments[0]);
    let wrong = "wrong-secret-value-0123456789";
    archive.write_secret("aws-creds", "ACCESS_SECRET_KEY", wrong)?;
    let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("access denied"), "{err}");
    assert!(!err.contains(wrong), "the secret leaked: {err}");
    assert!(
        !err.contains(archive.s3.secret_key()),
        "the real secret leaked: {err}"
    );
    let out = archive.walship(&["check"])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(!stderr(&out).contains(wrong));

    // A restore with wrong keys must not look like "not found" (exit 1).
    let dest = pg_temp_dir()?;
    let out = archive.walship(&[
        "wal-fetch",
        "--retry-seconds",
        "0",
        &segments[0],
        dest.path().join("x").to_str().unwrap(),
    ])?;
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(archive.keys()?.is_empty());
    Ok(())
}

#[test]
fn a_store_that_is_down_fails_push_and_stops_recovery() -> Result<()> {
    let mut archive = Archive::start(Some("gzip"))?;
    let (wal_dir, segments) = real_segments(2)?;
    let src = wal_dir.path().join(&segments[0]);
    assert!(
        archive
            .walship(&["wal-push", src.to_str().unwrap()])?
            .status
            .success()
    );
    archive.s3.stop();

    let out = archive.walship(&[
        "wal-push",
        wal_dir.path().join(&segments[1]).to_str().unwrap(),
    ])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach the store"),
        "{}",
        stderr(&out)
    );

    let dest_dir = pg_temp_dir()?;
    let dest = dest_dir.path().join("RECOVERYXLOG");
    let out = archive.walship(&[
        "wal-fetch",
        "--retry-seconds",
        "0",
        &segments[0],
        dest.to_str().unwrap(),
    ])?;
    // Above 125: PostgreSQL aborts recovery instead of ending it at a gap.
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(!dest.exists());

    // Back up: the segment archived before the outage restores, the other one is
    // reported missing with 1.
    archive.s3.restart()?;
    let out = archive.walship(&["wal-fetch", &segments[0], dest.to_str().unwrap()])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = archive.walship(&[
        "wal-fetch",
        &segments[1],
        dest_dir.path().join("y").to_str().unwrap(),
    ])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!dest_dir.path().join("y").exists());
    Ok(())
}

#[test]
fn truncated_zeroed_and_foreign_files_are_refused() -> Result<()> {
    let archive = Archive::start(None)?;
    let (wal_dir, segments) = real_segments(1)?;
    let real = fs::read(wal_dir.path().join(&segments[0]))?;
    let dir = pg_temp_dir()?;
    let name = &segments[0];

    let truncated = dir.path().join(name);
    fs::write(&truncated, &real[..real.len() / 2 + 100])?;
    let out = archive.walship(&["wal-push", truncated.to_str().unwrap()])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("power of two"), "{}", stderr(&out));

    fs::write(&truncated, vec![0u8; real.len()])?;
    let out = archive.walship(&["wal-push", truncated.to_str().unwrap()])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("all zeros"), "{}", stderr(&out));

    let foreign = dir.path().join("backup_label.old");
    fs::write(&foreign, b"START WAL LOCATION")?;
    let out = archive.walship(&["wal-push", foreign.to_str().unwrap()])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a WAL file name"),
        "{}",
        stderr(&out)
    );

    let missing = dir.path().join("000000010000000000000099");
    let out = archive.walship(&["wal-push", missing.to_str().unwrap()])?;
    assert_eq!(out.status.code(), Some(1));

    assert!(archive.keys()?.is_empty(), "{:?}", archive.keys()?);
    Ok(())
}

#[test]
fn a_missing_bucket_is_named_and_nothing_is_created() -> Result<()> {
    let archive = Archive::start(None)?;
    let (wal_dir, segments) = real_segments(1)?;
    archive.write_manifest(
        &archive
            .manifest()
            .replace(&format!("s3://{}/", common::BUCKET), "s3://no-such-bucket/"),
    )?;
    let out = archive.walship(&[
        "wal-push",
        wal_dir.path().join(&segments[0]).to_str().unwrap(),
    ])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("bucket or container does not exist"), "{err}");
    let out = archive.walship(&["check"])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!archive.s3.bucket_exists("no-such-bucket")?);
    Ok(())
}

#[test]
fn a_terminated_wal_push_exits_1_instead_of_dying_on_the_signal() -> Result<()> {
    use std::io::Read;
    use std::net::TcpListener;
    use std::process::{Command, Stdio};

    // An endpoint that accepts connections and never answers: the upload hangs.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let archive = Archive::start(None)?;
    archive.write_manifest(
        &archive
            .manifest()
            .replace(&archive.s3.endpoint(), &format!("http://127.0.0.1:{port}")),
    )?;
    let (wal_dir, segments) = real_segments(1)?;
    let child = Command::new(walship_testkit::WalshipBin::path()?)
        .args(archive.global_args())
        .args([
            "wal-push",
            wal_dir.path().join(&segments[0]).to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()?;
    // Wait for the request to arrive, so the signal lands mid-upload.
    let (mut conn, _) = listener.accept()?;
    let mut first = [0u8; 16];
    conn.read_exact(&mut first)?;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    let out = child.wait_with_output()?;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{:?} {}",
        out.status,
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("interrupted by a signal"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[test]
fn check_reports_an_empty_or_continuing_archive() -> Result<()> {
    let archive = Archive::start(Some("zstd"))?;
    let out = archive.walship(&["check", "--expect-empty"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is empty"));

    let (wal_dir, segments) = real_segments(1)?;
    let out = archive.walship(&[
        "wal-push",
        wal_dir.path().join(&segments[0]).to_str().unwrap(),
    ])?;
    assert!(out.status.success(), "{}", stderr(&out));

    let out = archive.walship(&["check"])?;
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("1 WAL files already archived") && text.contains(&segments[0]),
        "{text}"
    );
    let out = archive.walship(&["check", "--expect-empty"])?;
    assert_eq!(out.status.code(), Some(1));
    // A promoted cluster on timeline 2 may continue an archive of timeline 1.
    let out = archive.walship(&["check", "--expect-empty", "--timeline", "2"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    Ok(())
}

/// s3s-fs checks the headers' syntax but does not keep SSE or tags, so this shows they are
/// well-formed and accepted; that they are stored needs AWS or MinIO.
#[test]
fn encryption_and_tags_from_the_manifest_are_accepted_and_the_checksum_is_stored() -> Result<()> {
    let archive = Archive::start(None)?;
    let manifest = format!(
        "{}    wal:\n      compression: snappy\n      encryption: AES256\n    tags:\n      backupRetentionPolicy: expire\n    historyTags:\n      backupRetentionPolicy: keep\n",
        archive.manifest()
    );
    archive.write_manifest(&manifest)?;
    let (wal_dir, segments) = real_segments(1)?;
    let src = wal_dir.path().join(&segments[0]);
    let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let dest = wal_dir.path().join("restored");
    let out = archive.walship(&["wal-fetch", &segments[0], dest.to_str().unwrap()])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read(&dest)?, fs::read(&src)?);
    // The raw file's SHA-256 went into the object's user metadata (s3s-fs keeps it in a
    // JSON file beside the objects).
    let sha = common::sha256_file(&src)?;
    let stored: Vec<String> = fs::read_dir(archive.s3.root_dir())?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".metadata.json"))
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .collect();
    assert!(
        stored
            .iter()
            .any(|m| m.contains("walship-sha256") && m.contains(&sha)),
        "no object metadata with the checksum: {stored:?}"
    );
    Ok(())
}
