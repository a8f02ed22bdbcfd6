//! The daemon in front of PostgreSQL: it pre-ships every `.ready` file, `wal-push`
//! answers from it over the socket, nothing is lost when it is killed, and it reports
//! what it did on /metrics.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::{Archive, PREFIX, SERVER, archived_in_pg_wal, sha256_file, stderr};
use walship_testkit::{
    InitOptions, PgCluster, WalshipBin, free_port, pg_temp_dir, pg_user_command, wait_until,
};

/// A running `walship daemon`, as the PostgreSQL user; killed when dropped.
struct DaemonProcess {
    child: Child,
    metrics_port: u16,
    log: PathBuf,
}

impl DaemonProcess {
    fn start(archive: &Archive, pg: &PgCluster, socket: &Path) -> Result<DaemonProcess> {
        let metrics_port = free_port()?;
        let log = archive
            .dir
            .path()
            .join(format!("daemon-{metrics_port}.log"));
        let log_file = fs::File::create(&log)?;
        let mut cmd = pg_user_command(&WalshipBin::for_pg()?, archive.dir.path())?;
        cmd.args(archive.global_args())
            .arg("--socket")
            .arg(socket)
            .args(["--log-format", "text", "daemon", "--pgdata"])
            .arg(pg.data_dir())
            .arg("--journal-dir")
            .arg(archive.dir.path().join("journal"))
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--rescan-seconds", "2"])
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = cmd.spawn().context("starting walship daemon")?;
        let mut daemon = DaemonProcess {
            child,
            metrics_port,
            log,
        };
        wait_until(
            Duration::from_secs(30),
            "the daemon's socket and /healthz",
            || {
                if let Some(status) = daemon.child.try_wait()? {
                    bail!("the daemon exited with {status}: {}", daemon.log_contents());
                }
                Ok(socket.exists() && daemon.get("/healthz").is_ok())
            },
        )?;
        Ok(daemon)
    }

    fn get(&self, path: &str) -> Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.metrics_port))?;
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

    /// The value of an unlabelled metric.
    fn metric(&self, name: &str) -> Result<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .with_context(|| format!("{name} not in /metrics"))?
            .trim()
            .parse()
            .context("parsing the metric")
    }

    fn log_contents(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: &str) -> Result<()> {
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

fn setup() -> Result<(Archive, PgCluster, PathBuf)> {
    let archive = Archive::start(Some("zstd"))?;
    let socket = archive.dir.path().join("walship.sock");
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
    Ok((archive, pg, socket))
}

fn assert_all_archived_identical(archive: &Archive, pg: &PgCluster) -> Result<usize> {
    let keys = archive.keys()?;
    let fetch_dir = pg_temp_dir()?;
    let archived = archived_in_pg_wal(pg.data_dir())?;
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

#[test]
fn the_daemon_ships_ahead_and_wal_push_answers_from_it() -> Result<()> {
    let (archive, mut pg, socket) = setup()?;
    let mut daemon = DaemonProcess::start(&archive, &pg, &socket)?;
    pg.start()?;
    pg.pgbench(&["-i", "-s", "2", "-q"])?;
    pg.pgbench(&["-c", "2", "-t", "300"])?;
    let last = pg.switch_wal()?;
    let stats = pg.wait_for_archived(&last, Duration::from_secs(120))?;
    assert_eq!(stats.failed_count, 0, "{}", pg.log_contents());

    let count = assert_all_archived_identical(&archive, &pg)?;
    let log = pg.log_contents();
    assert!(
        !log.contains("uploading directly"),
        "wal-push bypassed the daemon:\n{log}\ndaemon:\n{}",
        daemon.log_contents()
    );
    let shipped = daemon.metric("walship_segments_archived_total")?;
    assert!(shipped >= count as f64, "{shipped} < {count}");
    assert!(daemon.metric("walship_archive_command_ack_seconds_count")? >= count as f64);
    let (status, body) = daemon.get("/readyz")?;
    assert_eq!(status, 200, "{body}");
    eprintln!(
        "{count} segments; ack latency sum {:.3}s over {} acks",
        daemon.metric("walship_archive_command_ack_seconds_sum")?,
        daemon.metric("walship_archive_command_ack_seconds_count")?
    );

    // SIGTERM: exits 0 and removes its socket; wal-push then uploads directly.
    daemon.signal("TERM")?;
    let status = daemon.child.wait()?;
    assert!(status.success(), "{status}: {}", daemon.log_contents());
    assert!(!socket.exists());
    pg.psql("INSERT INTO pgbench_history SELECT * FROM pgbench_history LIMIT 100")?;
    let last = pg.switch_wal()?;
    let stats = pg.wait_for_archived(&last, Duration::from_secs(60))?;
    assert_eq!(stats.failed_count, 0);
    assert_all_archived_identical(&archive, &pg)?;
    Ok(())
}

#[test]
fn killing_the_daemon_repeatedly_loses_nothing() -> Result<()> {
    let (archive, mut pg, socket) = setup()?;
    pg.start()?;
    pg.pgbench(&["-i", "-s", "1", "-q"])?;
    for round in 0..10 {
        let daemon = DaemonProcess::start(&archive, &pg, &socket)?;
        // Kill it at a different point of the work each round.
        pg.pgbench(&["-c", "2", "-t", &(50 + round * 37).to_string()])?;
        pg.switch_wal()?;
        daemon.signal("KILL")?;
        drop(daemon);
    }
    // With the socket stale, wal-push falls back to direct uploads.
    let last = pg.switch_wal()?;
    pg.wait_for_archived(&last, Duration::from_secs(120))?;
    let daemon = DaemonProcess::start(&archive, &pg, &socket)?;
    pg.pgbench(&["-c", "2", "-t", "100"])?;
    let last = pg.switch_wal()?;
    pg.wait_for_archived(&last, Duration::from_secs(120))?;
    let count = assert_all_archived_identical(&archive, &pg)?;
    eprintln!("{count} segments archived across 10 kill -9 rounds");
    drop(daemon);
    Ok(())
}
