//! A `walship daemon` process for end-to-end tests.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::ensure;
use anyhow::{Context, Result, bail};
use walship_testkit::{
    InitOptions, PgCluster, WalshipBin, free_port, pg_temp_dir, pg_user_command, wait_until,
};

use super::{Archive, ArchiveHarness, PREFIX, SERVER, archived_in_pg_wal, sha256_file, stderr};

/// A running `walship daemon`, as the PostgreSQL user; killed when dropped.
pub struct DaemonProcess {
    pub child: Child,
    pub metrics_port: u16,
    pub log: PathBuf,
}

impl DaemonProcess {
    pub fn start(
        archive: &dyn ArchiveHarness,
        pg: &PgCluster,
        socket: &Path,
    ) -> Result<DaemonProcess> {
        Self::start_with(archive, pg, socket, &[])
    }

    /// Like [`DaemonProcess::start`], with `extra` arguments after the daemon's own.
    pub fn start_with(
        archive: &dyn ArchiveHarness,
        pg: &PgCluster,
        socket: &Path,
        extra: &[&str],
    ) -> Result<DaemonProcess> {
        let mut daemon = Self::spawn(archive, pg.data_dir(), socket, extra)?;
        daemon.wait_until_serving(|| socket.exists(), "the daemon's socket and /healthz")?;
        Ok(daemon)
    }

    /// A daemon with `--wait-for-pgdata` on a data directory `initdb` has not made
    /// yet; returns once /healthz answers (its socket comes with the data directory).
    pub fn start_before_initdb(
        archive: &dyn ArchiveHarness,
        data_dir: &Path,
        socket: &Path,
    ) -> Result<DaemonProcess> {
        let mut daemon = Self::spawn(archive, data_dir, socket, &["--wait-for-pgdata"])?;
        daemon.wait_until_serving(|| true, "the daemon's /healthz")?;
        Ok(daemon)
    }

    fn spawn(
        archive: &dyn ArchiveHarness,
        data_dir: &Path,
        socket: &Path,
        extra: &[&str],
    ) -> Result<DaemonProcess> {
        let metrics_port = free_port()?;
        let log = archive.dir().join(format!("daemon-{metrics_port}.log"));
        let log_file = fs::File::create(&log)?;
        let mut cmd = pg_user_command(&WalshipBin::for_pg()?, archive.dir())?;
        cmd.args(archive.global_args())
            .arg("--socket")
            .arg(socket)
            .args(["--log-format", "text", "daemon", "--pgdata"])
            .arg(data_dir)
            .arg("--journal-dir")
            .arg(archive.dir().join("journal"))
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--rescan-seconds", "2"])
            .args(extra)
            .envs(archive.env())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = cmd.spawn().context("starting walship daemon")?;
        Ok(DaemonProcess {
            child,
            metrics_port,
            log,
        })
    }

    fn wait_until_serving(&mut self, also: impl Fn() -> bool, what: &str) -> Result<()> {
        wait_until(Duration::from_secs(30), what, || {
            if let Some(status) = self.child.try_wait()? {
                bail!("the daemon exited with {status}: {}", self.log_contents());
            }
            Ok(also() && self.get("/healthz").is_ok())
        })
    }

    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.metrics_port, path)
    }

    /// The value of an unlabelled metric.
    pub fn metric(&self, name: &str) -> Result<f64> {
        metric_at(self.metrics_port, name)
    }

    pub fn log_contents(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: &str) -> Result<()> {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster and archive for daemon tests: 1 MiB segments, zstd, and an
/// `archive_command` that asks the daemon over `socket` first.
pub fn setup() -> Result<(Archive, PgCluster, PathBuf)> {
    let archive = Archive::start(Some("zstd"))?;
    let (pg, socket) = setup_for(&archive)?;
    Ok((archive, pg, socket))
}

/// Like [`setup`] for an archive made elsewhere (compressed with zstd).
pub fn setup_for(archive: &dyn ArchiveHarness) -> Result<(PgCluster, PathBuf)> {
    let socket = archive.dir().join("walship.sock");
    let pg = PgCluster::init_temp(InitOptions {
        wal_segsize_mb: Some(1),
    })?;
    let command = archive.archive_command()?.replace(
        " wal-push ",
        &format!(" --socket {} wal-push ", socket.display()),
    );
    pg.set_conf(&[
        ("archive_mode", "on"),
        ("archive_command", &command),
        ("wal_keep_size", "1GB"),
        ("max_wal_size", "1GB"),
    ])?;
    Ok((pg, socket))
}

/// Every segment PostgreSQL marked `.done` is in the bucket and `wal-fetch` gives back
/// the very bytes in `pg_wal`. Returns how many there were.
pub fn assert_all_archived_identical(
    archive: &dyn ArchiveHarness,
    pg: &PgCluster,
) -> Result<usize> {
    let keys = archive.keys()?;
    let fetch_dir = pg_temp_dir()?;
    let archived = archived_in_pg_wal(pg.data_dir())?;
    ensure!(!archived.is_empty(), "PostgreSQL marked nothing .done");
    for name in &archived {
        let key = format!("{PREFIX}/{SERVER}/wals/{}/{name}.zst", &name[..16]);
        assert!(
            keys.contains(&key),
            "{key} missing; PostgreSQL was told it was archived"
        );
        let dest = fetch_dir.path().join(name);
        let out = archive.walship(&["wal-fetch", name, dest.to_str().unwrap()])?;
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_eq!(
            sha256_file(&dest)?,
            sha256_file(&pg.data_dir().join("pg_wal").join(name))?,
            "{name} differs"
        );
    }
    Ok(archived.len())
}

/// The daemon scenario every store must pass: PostgreSQL under pgbench archives through
/// the daemon (`archive` compresses with zstd); every segment is stored byte-identical,
/// `wal-push` never uploads by itself, and the daemon counts what it shipped.
pub fn ships_every_segment_and_wal_push_only_asks_it(archive: &dyn ArchiveHarness) -> Result<()> {
    let (mut pg, socket) = setup_for(archive)?;
    let daemon = DaemonProcess::start(archive, &pg, &socket)?;
    pg.start()?;
    pg.pgbench(&["-i", "-s", "1", "-q"])?;
    let last = pg.switch_wal()?;
    let stats = pg.wait_for_archived(&last, Duration::from_secs(120))?;
    assert_eq!(stats.failed_count, 0, "{}", pg.log_contents());
    let count = assert_all_archived_identical(archive, &pg)?;
    assert!(count >= 3, "only {count} segments");
    let log = pg.log_contents();
    assert!(
        !log.contains("uploading directly"),
        "wal-push bypassed the daemon:\n{log}\ndaemon:\n{}",
        daemon.log_contents()
    );
    assert!(daemon.metric("walship_segments_archived_total")? >= count as f64);
    Ok(())
}

/// `GET path` on a walship metrics port: (status, body).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of an unlabelled metric on a walship metrics port.
pub fn metric_at(port: u16, name: &str) -> Result<f64> {
    let (_, body) = http_get(port, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .with_context(|| format!("{name} not in /metrics"))?
        .trim()
        .parse()
        .context("parsing the metric")
}
