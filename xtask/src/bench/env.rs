//! The bench's shared world: one S3 server (s3s-fs) with a TLS front (stunnel, a
//! private CA), the WAL corpus, the tools' paths, and per-run buckets with each
//! tool's configuration pointing at them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;
use walship_testkit::{
    PgCluster, S3Server, TlsProxy, make_readable_by_pg, pg_temp_dir, pg_user_command,
};

use super::wal::Corpus;

/// The server name every tool archives under.
pub const SERVER: &str = "bench";
/// The prefix inside each bucket.
pub const PREFIX: &str = "archive";

/// See [`Run::cnpg_calls`].
pub struct CnpgCalls {
    pub plugins: TempDir,
    /// `<cnpg-manager> --plugins-dir … --cluster … wal-archive %p`.
    pub archive_command: String,
}

/// What every run shares.
pub struct Env {
    pub s3: S3Server,
    pub tls: TlsProxy,
    pub corpus: Corpus,
    /// The walship binary, executable by the PostgreSQL user.
    pub walship: PathBuf,
    /// The barman-cloud virtualenv's `bin/`.
    pub barman_bin: PathBuf,
    /// `None` when pgBackRest is not installed: its runs are skipped.
    pub pgbackrest: Option<PathBuf>,
    /// The test kit's fake CloudNativePG instance manager (`cnpg-manager`), executable
    /// by the PostgreSQL user: CloudNativePG's `manager wal-archive %p`, a process per
    /// segment.
    pub cnpg_manager: Option<PathBuf>,
    work: TempDir,
    runs: AtomicU32,
}

impl Env {
    pub fn new(
        s3: S3Server,
        corpus: Corpus,
        walship: PathBuf,
        barman_venv: &Path,
        pgbackrest: Option<PathBuf>,
    ) -> Result<Env> {
        let tls = TlsProxy::start(s3.port())?;
        Ok(Env {
            s3,
            tls,
            corpus,
            walship,
            barman_bin: barman_venv.join("bin"),
            pgbackrest,
            cnpg_manager: None,
            work: pg_temp_dir()?,
            runs: AtomicU32::new(0),
        })
    }

    /// A fresh bucket and a directory (owned by the PostgreSQL user) for one run.
    pub fn run(&self, label: &str) -> Result<Run<'_>> {
        let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        let bucket = format!("bench-{n:03}");
        self.s3.create_bucket(&bucket)?;
        let dir = self.work.path().join(format!("{n:03}-{}", sanitize(label)));
        fs::create_dir_all(&dir)?;
        let run = Run {
            env: self,
            bucket,
            dir,
        };
        run.write_walship_secrets()?;
        make_readable_by_pg(&run.dir)?;
        Ok(run)
    }

    fn tls_port(&self) -> Result<u16> {
        let endpoint = self.tls.endpoint();
        endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("no port in {endpoint}"))
    }
}

fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// One run's bucket and configuration; the bucket's objects are removed on drop so
/// a full run does not keep gigabytes of copies.
pub struct Run<'a> {
    pub env: &'a Env,
    pub bucket: String,
    pub dir: PathBuf,
}

/// Which front the tools talk to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Transport {
    /// HTTPS through stunnel (what pgBackRest needs; everyone's default here).
    Tls,
    /// Plain HTTP straight to the server (the ceiling's path).
    Plain,
}

impl Run<'_> {
    fn endpoint(&self, transport: Transport) -> String {
        match transport {
            Transport::Tls => self.env.tls.endpoint(),
            Transport::Plain => self.env.s3.endpoint(),
        }
    }

    fn write_walship_secrets(&self) -> Result<()> {
        let secrets = self.dir.join("secrets");
        let write = |name: &str, key: &str, value: &[u8]| -> Result<()> {
            let dir = secrets.join(name);
            fs::create_dir_all(&dir)?;
            fs::write(dir.join(key), value)?;
            Ok(())
        };
        write(
            "aws-creds",
            "ACCESS_KEY_ID",
            self.env.s3.access_key().as_bytes(),
        )?;
        write(
            "aws-creds",
            "ACCESS_SECRET_KEY",
            self.env.s3.secret_key().as_bytes(),
        )?;
        write("bench-ca", "ca.crt", &fs::read(self.env.tls.ca_pem_path())?)?;
        // stunnel's directory is private to root; barman and pgBackRest (run as the
        // PostgreSQL user in the live runs) read this copy.
        fs::copy(self.env.tls.ca_pem_path(), self.ca_path())?;
        Ok(())
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Writes the ObjectStore manifest walship reads: the seed's MinIO example with
    /// this run's bucket, endpoint, CA, compression and maxParallel.
    pub fn walship_manifest(
        &self,
        compression: &str,
        parallel: usize,
        transport: Transport,
    ) -> Result<()> {
        let ca = match transport {
            Transport::Tls => "    endpointCA:\n      name: bench-ca\n      key: ca.crt\n",
            Transport::Plain => "",
        };
        // barman-cloud's default: no `compression` field at all.
        let compression = match compression {
            "none" => String::new(),
            other => format!("      compression: {other}\n"),
        };
        let yaml = format!(
            "apiVersion: barmancloud.cnpg.io/v1\n\
             kind: ObjectStore\n\
             metadata:\n  name: bench-store\n\
             spec:\n  configuration:\n    destinationPath: s3://{bucket}/{PREFIX}\n\
             \x20   endpointURL: {endpoint}\n{ca}\
             \x20   s3Credentials:\n      accessKeyId:\n        name: aws-creds\n        key: ACCESS_KEY_ID\n\
             \x20     secretAccessKey:\n        name: aws-creds\n        key: ACCESS_SECRET_KEY\n\
             \x20   wal:\n{compression}      maxParallel: {parallel}\n",
            bucket = self.bucket,
            endpoint = self.endpoint(transport),
        );
        let path = self.dir.join("objectstore.yaml");
        fs::write(&path, yaml)?;
        make_readable_by_pg(&path)
    }

    /// What CloudNativePG's calls to the plugin's sidecar need: a plugins directory of
    /// its own (a short path: a socket's is limited to 107 bytes) and the Cluster JSON
    /// naming this run's ObjectStore; returns them with the archive_command the fake
    /// instance manager makes of them (`… wal-archive %p`).
    pub fn cnpg_calls(&self) -> Result<CnpgCalls> {
        let manager = self
            .env
            .cnpg_manager
            .as_deref()
            .context("the fake instance manager (cnpg-manager) was not built")?;
        let plugins = pg_temp_dir()?;
        let cluster = self.dir.join("cluster.json");
        fs::write(
            &cluster,
            format!(
                r#"{{"metadata":{{"name":"{SERVER}","namespace":"bench","uid":"bench-uid"}},
                "spec":{{"plugins":[{{"name":"barman-cloud.cloudnative-pg.io",
                  "parameters":{{"barmanObjectName":"bench-store"}}}}]}},
                "status":{{"currentPrimary":"bench-1"}}}}"#
            ),
        )?;
        make_readable_by_pg(&cluster)?;
        let archive_command = format!(
            "{} --plugins-dir {} --cluster {} wal-archive %p",
            manager.display(),
            plugins.path().display(),
            cluster.display()
        );
        Ok(CnpgCalls {
            plugins,
            archive_command,
        })
    }

    /// `--config … --secrets-dir … --server-name … --socket …` for every walship call.
    pub fn walship_args(&self) -> Vec<String> {
        vec![
            "--config".into(),
            self.dir.join("objectstore.yaml").display().to_string(),
            "--secrets-dir".into(),
            self.dir.join("secrets").display().to_string(),
            "--server-name".into(),
            SERVER.into(),
            "--socket".into(),
            self.socket().display().to_string(),
            "--log-format".into(),
            "text".into(),
            "--log-level".into(),
            "warn".into(),
        ]
    }

    /// The daemon's socket (absent unless a daemon runs: `wal-push` then uploads itself).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("walship.sock")
    }

    /// `walship <args> <extra>` as the PostgreSQL user.
    pub fn walship(&self, extra: &[&str]) -> Result<Command> {
        let mut cmd = pg_user_command(&self.env.walship, &self.dir)?;
        cmd.args(self.walship_args()).args(extra);
        Ok(cmd)
    }

    /// The environment barman-cloud needs for this server.
    pub fn barman_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.env.s3.access_key().into()),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                self.env.s3.secret_key().into(),
            ),
            ("AWS_DEFAULT_REGION".into(), "us-east-1".into()),
            ("AWS_CA_BUNDLE".into(), self.ca_path().display().to_string()),
            // boto3's default CRC checksums are what S3-compatible servers reject.
            (
                "AWS_REQUEST_CHECKSUM_CALCULATION".into(),
                "when_required".into(),
            ),
            (
                "AWS_RESPONSE_CHECKSUM_VALIDATION".into(),
                "when_required".into(),
            ),
        ]
    }

    /// `barman-cloud-<tool> --cloud-provider aws-s3 --endpoint-url …` (before the
    /// tool's own options and positional arguments).
    pub fn barman(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.env.barman_bin.join(tool));
        cmd.envs(self.barman_env())
            .args(["--cloud-provider", "aws-s3", "--endpoint-url"])
            .arg(self.env.tls.endpoint());
        cmd
    }

    /// `s3://bucket/prefix`, barman's destination argument.
    pub fn destination(&self) -> String {
        format!("s3://{}/{PREFIX}", self.bucket)
    }

    /// Writes `pgbackrest.conf` for this run (async, `process-max`, S3 through the TLS
    /// front) and returns its path. `pgdata` (pgBackRest's `pg1-path`) holds the
    /// segments and the `pg_control` they belong to.
    pub fn pgbackrest_conf(
        &self,
        processes: usize,
        compression: &str,
        pgdata: &Path,
    ) -> Result<PathBuf> {
        self.pgbackrest_conf_with(processes, compression, pgdata, &["archive-async=y"], &[])
    }

    /// Like [`Run::pgbackrest_conf`] with more `key=value` lines in the `[global]`
    /// section and in the stanza's.
    pub fn pgbackrest_conf_with(
        &self,
        processes: usize,
        compression: &str,
        pgdata: &Path,
        global: &[&str],
        stanza: &[&str],
    ) -> Result<PathBuf> {
        let compress = match compression {
            "none" => "none",
            "gzip" => "gz",
            "zstd" => "zst",
            "lz4" => "lz4",
            other => bail!("pgBackRest has no compression {other:?}"),
        };
        for sub in ["spool", "lock", "log"] {
            fs::create_dir_all(self.dir.join(sub))?;
        }
        let lines = |extra: &[&str]| extra.iter().map(|l| format!("{l}\n")).collect::<String>();
        let conf = format!(
            "[global]\n\
             repo1-type=s3\nrepo1-s3-bucket={bucket}\nrepo1-s3-endpoint=127.0.0.1\n\
             repo1-storage-port={port}\nrepo1-s3-region=us-east-1\n\
             repo1-s3-key={key}\nrepo1-s3-key-secret={secret}\n\
             repo1-s3-uri-style=path\nrepo1-storage-verify-tls=n\nrepo1-path=/{PREFIX}\n\
             process-max={processes}\ncompress-type={compress}\n\
             spool-path={dir}/spool\nlock-path={dir}/lock\nlog-path={dir}/log\n\
             log-level-console=error\nlog-level-stderr=error\nlog-level-file=off\n{global}\
             [{SERVER}]\npg1-path={pgdata}\n{stanza}",
            bucket = self.bucket,
            port = self.env.tls_port()?,
            key = self.env.s3.access_key(),
            secret = self.env.s3.secret_key(),
            dir = self.dir.display(),
            pgdata = pgdata.display(),
            global = lines(global),
            stanza = lines(stanza),
        );
        let path = self.dir.join("pgbackrest.conf");
        fs::write(&path, conf)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        make_readable_by_pg(&self.dir)?;
        Ok(path)
    }

    /// `pgbackrest --config … --stanza bench <args>` as the PostgreSQL user (it
    /// refuses to write a spool its owner does not match).
    pub fn pgbackrest(&self, conf: &Path, args: &[&str]) -> Result<Command> {
        let program = self
            .env
            .pgbackrest
            .as_deref()
            .context("pgBackRest is not installed")?;
        let mut cmd = pg_user_command(program, &self.dir)?;
        cmd.arg(format!("--config={}", conf.display()))
            .arg(format!("--stanza={SERVER}"))
            .args(args);
        Ok(cmd)
    }

    /// `stanza-create` without a running server (it reads `pg_control` only).
    pub fn pgbackrest_stanza(&self, conf: &Path) -> Result<()> {
        run_ok(&mut self.pgbackrest(conf, &["--no-online", "stanza-create"])?)
    }

    /// A fresh cluster's archive_command settings for the live run use these; the
    /// cluster reads the CA and configuration as the PostgreSQL user.
    pub fn set_barman_env(&self, pg: &mut PgCluster) {
        for (k, v) in self.barman_env() {
            pg.set_env(&k, &v);
        }
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        // s3s-fs keeps a bucket as a directory of plain files.
        let _ = fs::remove_dir_all(self.env.s3.root_dir().join(&self.bucket));
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Runs `cmd`; a failure is an error with its output.
pub fn run_ok(cmd: &mut Command) -> Result<()> {
    let output = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}): {}{}",
            crate::cargo::describe(cmd),
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A fake data directory for a backlog: `pg_wal` holds (hard links to) the corpus's
/// segments; `.ready` files are made by [`Stage::mark_ready`]. The daemon and the
/// tools only read it, as they read a real one.
pub struct Stage {
    pub pgdata: PathBuf,
}

impl Stage {
    /// A stage named `name` inside the run's directory (the daemon's journal and
    /// spool go beside its data directory, so stages never share them).
    pub fn new(run: &Run<'_>, name: &str, corpus: &Corpus, with_segments: bool) -> Result<Stage> {
        let pgdata = run.dir.join(name).join("pgdata");
        let pg_wal = pgdata.join("pg_wal");
        fs::create_dir_all(pg_wal.join("archive_status"))?;
        fs::set_permissions(&pgdata, fs::Permissions::from_mode(0o700))?;
        // pgBackRest wants the segments under its `pg1-path` and checks their system
        // identifier against that directory's `pg_control`: give it the real one.
        fs::create_dir_all(pgdata.join("global"))?;
        fs::copy(
            corpus.pgdata.join("global/pg_control"),
            pgdata.join("global/pg_control"),
        )?;
        fs::copy(corpus.pgdata.join("PG_VERSION"), pgdata.join("PG_VERSION"))?;
        if with_segments {
            for name in &corpus.names {
                let to = pg_wal.join(name);
                if fs::hard_link(corpus.path(name), &to).is_err() {
                    fs::copy(corpus.path(name), &to)?;
                }
            }
        }
        make_readable_by_pg(&run.dir)?;
        Ok(Stage { pgdata })
    }

    pub fn pg_wal(&self) -> PathBuf {
        self.pgdata.join("pg_wal")
    }

    pub fn segment(&self, name: &str) -> PathBuf {
        self.pg_wal().join(name)
    }

    /// Creates `archive_status/<name>.ready` for every name, as PostgreSQL does when
    /// it finishes a segment.
    pub fn mark_ready(&self, names: &[String]) -> Result<()> {
        let status = self.pg_wal().join("archive_status");
        for name in names {
            let path = status.join(format!("{name}.ready"));
            fs::write(&path, b"")?;
            make_readable_by_pg(&path)?;
        }
        Ok(())
    }

    /// What PostgreSQL does after archive_command succeeded.
    pub fn mark_done(&self, name: &str) -> Result<()> {
        let status = self.pg_wal().join("archive_status");
        fs::rename(
            status.join(format!("{name}.ready")),
            status.join(format!("{name}.done")),
        )?;
        Ok(())
    }
}
