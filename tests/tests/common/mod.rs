//! Shared set-up for the end-to-end tests: an S3 server with a bucket (or Azurite with a
//! container, in `azure`; fake-gcs-server with a bucket, in `gcs`), an ObjectStore manifest and its secrets as Kubernetes would
//! mount them, and a way to run the `walship` binary with them. Scenarios that every
//! store must pass (`pitr`, the daemon's) take an [`ArchiveHarness`].
#![allow(dead_code)]

pub mod azure;
pub mod backups;
pub mod daemon;
pub mod gcs;
pub mod pitr;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result};
use tempfile::TempDir;
use walship_testkit::{S3Server, WalshipBin, make_readable_by_pg, pg_temp_dir};

pub const BUCKET: &str = "walship-e2e";
pub const PREFIX: &str = "cluster-archive";
pub const SERVER: &str = "pg-main";

/// An S3-compatible server with a bucket, plus a manifest and secrets pointing at it.
pub struct Archive {
    pub s3: S3Server,
    /// Holds `objectstore.yaml` and `secrets/`; readable by the PostgreSQL user.
    pub dir: TempDir,
    pub compression: Option<&'static str>,
}

impl Archive {
    pub fn start(compression: Option<&'static str>) -> Result<Archive> {
        Archive::on(S3Server::start()?, compression)
    }

    /// An archive on moto, whose listings behave as S3's do (s3s-fs answers an empty
    /// `delimiter=`, which barman's retention sends, with no files).
    pub fn start_moto(compression: Option<&'static str>) -> Result<Archive> {
        Archive::on(S3Server::start_moto()?, compression)
    }

    fn on(s3: S3Server, compression: Option<&'static str>) -> Result<Archive> {
        s3.create_bucket(BUCKET)?;
        let dir = pg_temp_dir()?;
        let archive = Archive {
            s3,
            dir,
            compression,
        };
        archive.write_secret("aws-creds", "ACCESS_KEY_ID", archive.s3.access_key())?;
        archive.write_secret("aws-creds", "ACCESS_SECRET_KEY", archive.s3.secret_key())?;
        archive.write_manifest(&archive.manifest())?;
        Ok(archive)
    }

    pub fn destination(&self) -> String {
        format!("s3://{BUCKET}/{PREFIX}")
    }

    /// The manifest as a user writes it (the seed's MinIO example, with our endpoint).
    pub fn manifest(&self) -> String {
        let wal = match self.compression {
            Some(c) => format!("    wal:\n      compression: {c}\n      maxParallel: 4\n"),
            None => String::new(),
        };
        format!(
            "apiVersion: barmancloud.cnpg.io/v1\n\
             kind: ObjectStore\n\
             metadata:\n  name: minio-store\n\
             spec:\n  configuration:\n    destinationPath: {dest}\n    endpointURL: {endpoint}\n\
             \x20   s3Credentials:\n      accessKeyId:\n        name: aws-creds\n        key: ACCESS_KEY_ID\n\
             \x20     secretAccessKey:\n        name: aws-creds\n        key: ACCESS_SECRET_KEY\n{wal}",
            dest = self.destination(),
            endpoint = self.s3.endpoint(),
        )
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("objectstore.yaml")
    }

    pub fn secrets_dir(&self) -> PathBuf {
        self.dir.path().join("secrets")
    }

    pub fn write_manifest(&self, yaml: &str) -> Result<()> {
        fs::write(self.config_path(), yaml)?;
        make_readable_by_pg(&self.config_path())
    }

    pub fn write_secret(&self, name: &str, key: &str, value: &str) -> Result<()> {
        let dir = self.secrets_dir().join(name);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(key), value)?;
        make_readable_by_pg(&self.secrets_dir())
    }

    /// The arguments every walship invocation gets.
    pub fn global_args(&self) -> Vec<String> {
        vec![
            "--config".into(),
            self.config_path().display().to_string(),
            "--secrets-dir".into(),
            self.secrets_dir().display().to_string(),
            "--server-name".into(),
            SERVER.into(),
        ]
    }

    /// `archive_command` for PostgreSQL.
    pub fn archive_command(&self) -> Result<String> {
        ArchiveHarness::archive_command(self)
    }

    /// `restore_command` for PostgreSQL.
    pub fn restore_command(&self) -> Result<String> {
        ArchiveHarness::restore_command(self)
    }

    /// Runs `walship <global args> <args>` as the current user.
    pub fn walship(&self, args: &[&str]) -> Result<Output> {
        self.walship_as(SERVER, args)
    }

    /// Like [`Archive::walship`] for another server name in the same bucket.
    pub fn walship_as(&self, server: &str, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(WalshipBin::path()?);
        let mut global = self.global_args();
        global.truncate(4);
        cmd.args(global).args(["--server-name", server]).args(args);
        // The tests' own environment must not leak credentials into the binary.
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
        ] {
            cmd.env_remove(var);
        }
        cmd.output().context("running walship")
    }

    /// Object keys in the bucket (read from the server's directory).
    pub fn keys(&self) -> Result<Vec<String>> {
        Ok(self
            .s3
            .objects_on_disk(BUCKET)?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !k.contains(".s3s-fs") && !k.ends_with(".meta"))
            .collect())
    }

    /// The env and arguments barman-cloud tools need for this server.
    pub fn barman(&self, tool: &str) -> Result<Command> {
        let venv = walship_testkit::barman_venv().context(
            "the barman-cloud virtualenv is missing: run `cargo xtask install-tools` \
             (or set WALSHIP_BARMAN_VENV)",
        )?;
        let mut cmd = Command::new(venv.join("bin").join(tool));
        cmd.env("AWS_ACCESS_KEY_ID", self.s3.access_key())
            .env("AWS_SECRET_ACCESS_KEY", self.s3.secret_key())
            .env("AWS_DEFAULT_REGION", "us-east-1")
            // boto3's default CRC checksums are what S3-compatible servers reject.
            .env("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
            .env("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
            .args(["--cloud-provider", "aws-s3", "--endpoint-url"])
            .arg(self.s3.endpoint());
        Ok(cmd)
    }
}

/// What a store-independent scenario needs from an archive under test: where its
/// manifest and secrets are, how to run walship against it, and what is in it.
pub trait ArchiveHarness {
    /// Holds `objectstore.yaml` and `secrets/`; readable by the PostgreSQL user.
    fn dir(&self) -> &Path;
    /// The arguments every walship invocation gets.
    fn global_args(&self) -> Vec<String>;
    /// Runs `walship <global args> <args>` as the current user.
    fn walship(&self, args: &[&str]) -> Result<Output>;
    /// Object keys in the bucket or container, sorted.
    fn keys(&self) -> Result<Vec<String>>;
    /// Environment walship needs besides the manifest (an identity's variables).
    fn env(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// `archive_command` for PostgreSQL.
    fn archive_command(&self) -> Result<String> {
        Ok(format!(
            "{} {} wal-push %p",
            WalshipBin::for_pg()?.display(),
            self.global_args().join(" ")
        ))
    }

    /// `restore_command` for PostgreSQL.
    fn restore_command(&self) -> Result<String> {
        Ok(format!(
            "{} {} wal-fetch %f %p",
            WalshipBin::for_pg()?.display(),
            self.global_args().join(" ")
        ))
    }
}

impl ArchiveHarness for Archive {
    fn dir(&self) -> &Path {
        self.dir.path()
    }
    fn global_args(&self) -> Vec<String> {
        Archive::global_args(self)
    }
    fn walship(&self, args: &[&str]) -> Result<Output> {
        Archive::walship(self, args)
    }
    fn keys(&self) -> Result<Vec<String>> {
        Archive::keys(self)
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&data)))
}

/// Segment file names in `pg_wal` whose archiving PostgreSQL has completed (`.done`).
pub fn archived_in_pg_wal(data_dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(data_dir.join("pg_wal/archive_status"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".done"))
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Real WAL files: a throwaway 1 MiB-segment cluster archives with `cp` into a
/// directory, which is returned with the names of the segments in it (oldest first).
pub fn real_segments(count: usize) -> Result<(TempDir, Vec<String>)> {
    use walship_testkit::{InitOptions, PgCluster};
    let out = pg_temp_dir()?;
    let mut pg = PgCluster::init_temp(InitOptions {
        wal_segsize_mb: Some(1),
    })?;
    pg.set_conf(&[
        ("archive_mode", "on"),
        (
            "archive_command",
            &format!("cp %p {}/%f", out.path().display()),
        ),
    ])?;
    pg.start()?;
    pg.psql("CREATE TABLE t (x int)")?;
    let mut last = String::new();
    for _ in 0..count {
        pg.psql("INSERT INTO t SELECT generate_series(1, 3000)")?;
        last = pg.switch_wal()?;
    }
    pg.wait_for_archived(&last, std::time::Duration::from_secs(60))?;
    pg.stop()?;
    let mut names: Vec<String> = fs::read_dir(out.path())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() == 24)
        .collect();
    names.sort();
    Ok((out, names))
}

/// A copy of the file at `src` with one byte changed, under the same name in a new
/// directory (which lives as long as the returned handle).
pub fn changed_copy(src: &Path) -> Result<(TempDir, PathBuf)> {
    let dir = pg_temp_dir()?;
    let name = src.file_name().context("the file has no name")?;
    let changed = dir.path().join(name);
    let mut bytes = fs::read(src)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&changed, &bytes)?;
    Ok((dir, changed))
}

/// `src` is archived: pushing a changed copy under its name must be refused (exit 1,
/// "refusing to overwrite", naming both checksums). Returns the copy's directory.
pub fn assert_changed_copy_refused(
    walship: impl Fn(&[&str]) -> Result<Output>,
    src: &Path,
) -> Result<TempDir> {
    let (dir, changed) = changed_copy(src)?;
    let out = walship(&["wal-push", changed.to_str().context("non-UTF-8 path")?])?;
    let err = stderr(&out);
    anyhow::ensure!(out.status.code() == Some(1), "expected exit 1: {err}");
    anyhow::ensure!(err.contains("refusing to overwrite"), "{err}");
    anyhow::ensure!(
        err.contains(&sha256_file(&changed)?) && err.contains(&sha256_file(src)?),
        "both checksums must be named: {err}"
    );
    Ok(dir)
}

/// barman-cloud-wal-archive stores each of `segments` (file names in `wal_dir`) with the
/// matching codec flag; walship's wal-fetch must restore each byte-identical.
pub fn assert_walship_restores_what_barman_archived(
    barman: impl Fn(&str) -> Result<Command>,
    walship: impl Fn(&[&str]) -> Result<Output>,
    destination: &str,
    server: &str,
    wal_dir: &Path,
    segments: &[String],
    flags: &[&str],
) -> Result<()> {
    let out_dir = pg_temp_dir()?;
    for (name, flag) in segments.iter().zip(flags) {
        let src = wal_dir.join(name);
        let out = barman("barman-cloud-wal-archive")?
            .arg(flag)
            .arg(destination)
            .arg(server)
            .arg(&src)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "barman-cloud-wal-archive {flag}: {}",
            stderr(&out)
        );
        let dest = out_dir.path().join(name);
        let out = walship(&["wal-fetch", name, dest.to_str().context("non-UTF-8 path")?])?;
        anyhow::ensure!(out.status.success(), "{}", stderr(&out));
        anyhow::ensure!(
            sha256_file(&dest)? == sha256_file(&src)?,
            "{name} ({flag}) differs after wal-fetch"
        );
    }
    Ok(())
}

/// Fails when `output` holds any of `secrets` (as given or percent-encoded), or a
/// signature or token that the log layer should have scrubbed (`sig=…`, `Signature=…`,
/// `Bearer …`) with anything but `<redacted>` after it.
pub fn assert_no_secret(context: &str, output: &str, secrets: &[&str]) {
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        let encoded: String = secret
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        for form in [secret.to_string(), encoded] {
            assert!(
                !output.contains(&form),
                "{context}: a secret ({}...) reached the output:\n{output}",
                &secret[..4]
            );
        }
    }
    let lower = output.to_ascii_lowercase();
    for carrier in ["sig=", "signature=", "bearer ", "x-amz-security-token="] {
        let mut from = 0;
        while let Some(at) = lower[from..].find(carrier) {
            let value = &output[from + at + carrier.len()..];
            let first = value.chars().next();
            assert!(
                value.starts_with("<redacted>")
                    || first.is_none_or(|c| c.is_whitespace() || "&\"',;)".contains(c)),
                "{context}: {carrier} carries a value in:\n{}",
                &output[(from + at).saturating_sub(80)..(from + at + 120).min(output.len())]
            );
            from += at + carrier.len();
        }
    }
}

/// Runs `check`, `wal-push src` and `wal-fetch segment` at trace level through
/// `walship`; each must succeed, log at trace level and carry none of `secrets`
/// ([`assert_no_secret`]). Returns each command's stderr and stdout together.
pub fn trace_every_command(
    context: &str,
    walship: &dyn Fn(&[&str]) -> Result<Output>,
    src: &Path,
    segment: &str,
    secrets: &[&str],
) -> Result<Vec<String>> {
    let dest = pg_temp_dir()?;
    let dest = dest.path().join("restored");
    let mut outputs = Vec::new();
    for args in [
        vec!["--log-level", "trace", "check"],
        vec![
            "--log-level",
            "trace",
            "wal-push",
            src.to_str().unwrap_or_default(),
        ],
        vec![
            "--log-level",
            "trace",
            "wal-fetch",
            segment,
            dest.to_str().unwrap_or_default(),
        ],
    ] {
        let out = walship(&args)?;
        let all = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
        anyhow::ensure!(out.status.success(), "{context} {args:?}: {all}");
        anyhow::ensure!(
            all.contains("TRACE"),
            "{context} {args:?}: no trace output: {all}"
        );
        assert_no_secret(&format!("{context} {args:?}"), &all, secrets);
        outputs.push(all);
    }
    anyhow::ensure!(dest.exists(), "{context}: nothing was restored");
    Ok(outputs)
}
