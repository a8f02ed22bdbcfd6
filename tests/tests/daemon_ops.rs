//! Operating the daemon: an object store outage makes it unready and its backlog drains
//! once the store is back; /metrics passes Prometheus's own lint (and a real Prometheus
//! scrapes it); Kubernetes-style rotated secrets are picked up without a restart.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::daemon::{DaemonProcess, assert_all_archived_identical, setup};
use walship_testkit::{
    PgCluster, S3Options, S3Server, free_port, make_readable_by_pg, random_token, wait_until,
};

/// `GET path` on 127.0.0.1:`port` over HTTP/1.0 (so the body is never chunked):
/// status, headers and body.
fn http_get(port: u16, path: &str) -> Result<(u16, String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let response = String::from_utf8(raw).context("a non-UTF-8 HTTP response")?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of HTTP headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok((status, head.to_owned(), body.to_owned()))
}

/// The value of `series` (a metric name with its labels exactly as exposed, e.g.
/// `walship_config_reloads_total{result="applied"}`) in an exposition.
fn series_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

fn scrape(daemon: &DaemonProcess) -> Result<String> {
    let (status, head, body) = http_get(daemon.metrics_port, "/metrics")?;
    ensure!(status == 200, "/metrics answered {status}: {body}");
    ensure!(
        head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("content-type:") && l.contains("text/plain; version=0.0.4")
        }),
        "/metrics is not the Prometheus text format 0.0.4:\n{head}"
    );
    Ok(body)
}

fn value(exposition: &str, series: &str) -> Result<f64> {
    series_value(exposition, series).with_context(|| format!("{series} not in /metrics"))
}

/// Writes a little WAL and switches to a new segment; returns the one it closed.
fn write_and_switch(pg: &PgCluster) -> Result<String> {
    pg.psql("CREATE TABLE IF NOT EXISTS filler (x int)")?;
    pg.psql("INSERT INTO filler SELECT generate_series(1, 2000)")?;
    pg.switch_wal()
}

/// Polls until the daemon's backlog gauge reads 0.
fn wait_for_empty_backlog(daemon: &DaemonProcess) -> Result<()> {
    let mut seen = f64::NAN;
    wait_until(
        Duration::from_secs(60),
        "walship_ready_backlog_files to be 0",
        || {
            seen = daemon.metric("walship_ready_backlog_files")?;
            Ok(seen == 0.0)
        },
    )
    .with_context(|| {
        format!(
            "last seen backlog {seen}; daemon log:\n{}",
            daemon.log_contents()
        )
    })
}

#[test]
fn an_outage_makes_the_daemon_unready_and_the_backlog_drains() -> Result<()> {
    let started = Instant::now();
    let (mut archive, mut pg, socket) = setup()?;
    let daemon =
        DaemonProcess::start_with(&archive, &pg, &socket, &["--unready-after-seconds", "1"])?;
    pg.start()?;
    pg.pgbench(&["-i", "-s", "1", "-q"])?;
    let first = pg.switch_wal()?;
    pg.wait_for_archived(&first, Duration::from_secs(120))?;
    wait_until(Duration::from_secs(30), "/readyz to answer 200", || {
        Ok(daemon.get("/readyz")?.0 == 200)
    })?;
    let failed_before = pg.archiver_stats()?.failed_count;
    eprintln!(
        "set up and first segment archived in {:.1?} (failed_count {failed_before})",
        started.elapsed()
    );

    // The store goes away while PostgreSQL keeps writing WAL.
    archive.s3.stop();
    let outage_started = Instant::now();
    let writing = AtomicBool::new(true);
    let mut observed = String::new();
    let (outage, rounds) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| -> Result<u32> {
            let mut rounds = 0;
            while writing.load(Ordering::SeqCst) {
                pg.pgbench(&["-n", "-c", "2", "-t", "100"])?;
                // Close the segment too, so that the backlog grows round by round.
                pg.switch_wal()?;
                rounds += 1;
            }
            Ok(rounds)
        });
        let outage = wait_until(
            Duration::from_secs(120),
            "/readyz 503, a backlog and failed archive_commands",
            || {
                let (status, reason) = daemon.get("/readyz")?;
                let backlog = daemon.metric("walship_ready_backlog_files")?;
                let failed = pg.archiver_stats()?.failed_count;
                observed = format!(
                    "/readyz {status} {reason:?}, backlog {backlog}, failed_count {failed}"
                );
                Ok(status == 503 && backlog > 0.0 && failed > failed_before)
            },
        );
        writing.store(false, Ordering::SeqCst);
        let rounds = writer.join().expect("the pgbench thread panicked");
        (outage, rounds)
    });
    outage.with_context(|| format!("last seen: {observed}\ndaemon:\n{}", daemon.log_contents()))?;
    let rounds = rounds?;
    let outage_seen = outage_started.elapsed();
    eprintln!("outage seen after {outage_seen:.1?} ({rounds} pgbench rounds): {observed}");
    let metrics = scrape(&daemon)?;
    // What /readyz says is a metric too, for the WalshipNotReady alert.
    assert_eq!(value(&metrics, "walship_ready")?, 0.0);
    let unreachable = value(
        &metrics,
        "walship_archive_failures_total{reason=\"store_unreachable\"}",
    )?;
    assert!(
        unreachable > 0.0,
        "no failure counted as store_unreachable while the store was down:\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("walship_archive_failures_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The store comes back: the daemon becomes ready and everything gets archived.
    archive.s3.restart()?;
    let restarted = Instant::now();
    wait_until(
        Duration::from_secs(120),
        "/readyz to answer 200 again",
        || {
            let (status, reason) = daemon.get("/readyz")?;
            observed = format!("/readyz {status} {reason:?}");
            Ok(status == 200)
        },
    )
    .with_context(|| format!("last seen: {observed}\ndaemon:\n{}", daemon.log_contents()))?;
    let ready_again = restarted.elapsed();
    assert_eq!(value(&scrape(&daemon)?, "walship_ready")?, 1.0);
    let last = write_and_switch(&pg)?;
    let stats = pg.wait_for_archived(&last, Duration::from_secs(180))?;
    wait_for_empty_backlog(&daemon)?;
    let drained = restarted.elapsed();
    assert!(
        stats.failed_count > failed_before,
        "PostgreSQL saw no failure during the outage: {stats:?}"
    );
    let verifying = Instant::now();
    let count = assert_all_archived_identical(&archive, &pg)?;
    eprintln!(
        "{count} segments archived; {} failed archive_commands during the outage; ready \
         again {ready_again:.1?} and drained {drained:.1?} after the restart; verified in \
         {:.1?}; total {:.1?}",
        stats.failed_count - failed_before,
        verifying.elapsed(),
        started.elapsed()
    );
    Ok(())
}

/// Runs `promtool check metrics` on `exposition`; Err when promtool is not installed.
fn promtool_check(exposition: &str) -> Result<std::process::Output> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "promtool is not on PATH: install the Debian package `prometheus` \
             (apt-get install prometheus; .ci/run installs it in CI)"
        ),
        Err(e) => return Err(e).context("starting promtool"),
    };
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(exposition.as_bytes())?;
    Ok(child.wait_with_output()?)
}

/// A real Prometheus server scraping one target every second; killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target_port: u16) -> Result<Prometheus> {
        let dir = tempfile::Builder::new()
            .prefix("walship-prometheus-")
            .tempdir_in("/tmp")?;
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: walship\n    scrape_interval: 1s\n\
                 \x20   scrape_timeout: 1s\n\
                 \x20   static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )?;
        let port = free_port()?;
        let log = fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus (Debian package `prometheus`)")?;
        let mut prometheus = Prometheus { child, port, dir };
        wait_until(Duration::from_secs(60), "prometheus /-/ready", || {
            if let Some(status) = prometheus.child.try_wait()? {
                bail!("prometheus exited with {status}:\n{}", prometheus.log());
            }
            Ok(http_get(port, "/-/ready").is_ok_and(|(status, _, _)| status == 200))
        })?;
        Ok(prometheus)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The value of the first sample an instant query returns, if any.
    fn query(&self, expr: &str) -> Result<Option<f64>> {
        let (status, _, body) = http_get(self.port, &format!("/api/v1/query?query={expr}"))?;
        ensure!(status == 200, "query {expr}: HTTP {status}: {body}");
        ensure!(
            body.contains("\"status\":\"success\""),
            "query {expr}: {body}"
        );
        // {"status":"success","data":{"resultType":"vector","result":[{"metric":{..},"value":[<ts>,"<v>"]}]}}
        let Some((_, rest)) = body.split_once("\"value\":[") else {
            return Ok(None);
        };
        let sample = rest
            .split_once(",\"")
            .and_then(|(_, v)| v.split_once('"'))
            .map(|(v, _)| v)
            .with_context(|| format!("no sample value in {body}"))?;
        Ok(Some(
            sample
                .parse()
                .with_context(|| format!("parsing {sample:?}"))?,
        ))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn metrics_pass_promtool_and_move_as_expected() -> Result<()> {
    const SEGMENTS: usize = 6;
    let (archive, mut pg, socket) = setup()?;
    let daemon = DaemonProcess::start(&archive, &pg, &socket)?;
    pg.start()?;
    let first = write_and_switch(&pg)?;
    pg.wait_for_archived(&first, Duration::from_secs(120))?;
    wait_for_empty_backlog(&daemon)?;

    let before = scrape(&daemon)?;
    let lint = promtool_check(&before)?;
    assert!(
        lint.status.success(),
        "promtool check metrics failed on the first scrape:\n{}{}\n--- exposition ---\n{before}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // N segments, the last one alone after the others were archived, so that it is
    // certainly the last the daemon archived.
    for _ in 0..SEGMENTS - 1 {
        write_and_switch(&pg)?;
    }
    let second_last = pg.switch_wal()?;
    pg.wait_for_archived(&second_last, Duration::from_secs(120))?;
    let last = write_and_switch(&pg)?;
    let stats = pg.wait_for_archived(&last, Duration::from_secs(120))?;
    assert_eq!(stats.failed_count, 0, "{}", pg.log_contents());
    wait_for_empty_backlog(&daemon)?;
    let after = scrape(&daemon)?;

    let delta =
        |series: &str| -> Result<f64> { Ok(value(&after, series)? - value(&before, series)?) };
    let archived = delta("walship_segments_archived_total")?;
    assert!(
        archived >= SEGMENTS as f64,
        "walship_segments_archived_total rose by {archived}, fewer than the {SEGMENTS} segments archived"
    );
    let acks = delta("walship_archive_command_ack_seconds_count")?;
    assert!(
        acks >= SEGMENTS as f64,
        "{acks} acks for {SEGMENTS} segments"
    );
    let uploads = delta("walship_upload_duration_seconds_count")?;
    assert!(
        uploads >= SEGMENTS as f64,
        "{uploads} uploads timed for {SEGMENTS} segments"
    );
    assert!(delta("walship_archived_bytes_total")? >= (SEGMENTS << 20) as f64);
    assert_eq!(value(&after, "walship_ready_backlog_files")?, 0.0);
    assert_eq!(value(&after, "walship_ready_backlog_bytes")?, 0.0);
    // The static keys were loaded (once, behind the SDK's identity cache).
    assert!(value(&after, "walship_credential_refreshes_total")? >= 1.0);
    assert_eq!(
        value(&after, "walship_credential_refresh_failures_total")?,
        0.0
    );
    let info: Vec<&str> = after
        .lines()
        .filter(|l| l.starts_with("walship_last_archived_segment_info{"))
        .collect();
    assert_eq!(
        info,
        [format!(
            "walship_last_archived_segment_info{{segment=\"{last}\"}} 1"
        )],
        "the info metric must name exactly the last archived segment"
    );
    let lint = promtool_check(&after)?;
    assert!(
        lint.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{after}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // A real Prometheus scrapes the daemon and can query what it exposes.
    let started = Instant::now();
    let prometheus = Prometheus::start(daemon.metrics_port)?;
    let mut seen = None;
    wait_until(
        Duration::from_secs(60),
        "prometheus to have scraped walship_segments_archived_total > 0",
        || {
            seen = prometheus.query("walship_segments_archived_total")?;
            Ok(seen.is_some_and(|v| v > 0.0))
        },
    )
    .with_context(|| format!("last seen {seen:?}; prometheus log:\n{}", prometheus.log()))?;
    let up = prometheus.query("up")?;
    assert_eq!(up, Some(1.0), "the scrape target is not up");
    eprintln!(
        "prometheus saw walship_segments_archived_total = {seen:?} {:.1?} after starting",
        started.elapsed()
    );
    drop(prometheus);
    Ok(())
}

/// A Secret mounted the way the kubelet mounts it: `<dir>/<key>` is a symlink to
/// `..data/<key>`, and `..data` a symlink to a timestamped directory holding the files.
struct K8sSecret {
    dir: PathBuf,
    current: Option<String>,
}

impl K8sSecret {
    /// Replaces whatever is at `dir` with the symlinked layout holding `files`.
    fn create(dir: &Path, files: &[(&str, &str)]) -> Result<K8sSecret> {
        if dir.exists() {
            fs::remove_dir_all(dir)?;
        }
        fs::create_dir_all(dir)?;
        let mut secret = K8sSecret {
            dir: dir.to_path_buf(),
            current: None,
        };
        secret.update(files)?;
        for (key, _) in files {
            symlink(format!("..data/{key}"), dir.join(key))?;
        }
        make_readable_by_pg(dir)?;
        Ok(secret)
    }

    /// What the kubelet's atomic writer does on an update: a new timestamped directory,
    /// a new `..data_tmp` symlink to it renamed over `..data`, the old directory removed.
    fn update(&mut self, files: &[(&str, &str)]) -> Result<()> {
        let stamp = format!("..2026_11_24_10_00_00.{}", random_token(9));
        let new_dir = self.dir.join(&stamp);
        fs::create_dir(&new_dir)?;
        for (key, value) in files {
            fs::write(new_dir.join(key), value)?;
        }
        make_readable_by_pg(&new_dir)?;
        let tmp = self.dir.join("..data_tmp");
        symlink(&stamp, &tmp)?;
        make_readable_by_pg(&tmp)?;
        fs::rename(&tmp, self.dir.join("..data"))?;
        if let Some(old) = self.current.replace(stamp) {
            fs::remove_dir_all(self.dir.join(old))?;
        }
        Ok(())
    }
}

#[test]
fn rotated_secrets_are_picked_up_without_a_restart() -> Result<()> {
    let (mut archive, mut pg, socket) = setup()?;
    let mut secret = K8sSecret::create(
        &archive.secrets_dir().join("aws-creds"),
        &[
            ("ACCESS_KEY_ID", archive.s3.access_key()),
            ("ACCESS_SECRET_KEY", archive.s3.secret_key()),
        ],
    )?;
    let daemon = DaemonProcess::start(&archive, &pg, &socket)?;
    pg.start()?;
    let first = write_and_switch(&pg)?;
    let stats = pg.wait_for_archived(&first, Duration::from_secs(120))?;
    assert_eq!(stats.failed_count, 0, "{}", pg.log_contents());
    let applied_before = value(
        &scrape(&daemon)?,
        "walship_config_reloads_total{result=\"applied\"}",
    )?;

    // The store's keys are rotated: same port, same data, new keys.
    let (port, root, kind) = (
        archive.s3.port(),
        archive.s3.root_dir().to_path_buf(),
        archive.s3.kind(),
    );
    let (new_access, new_secret) = (format!("WS{}", random_token(18)), random_token(40));
    archive.s3.stop();
    let rotated = S3Server::start_with(S3Options {
        kind: Some(kind),
        port: Some(port),
        root: Some(root.clone()),
        log: Some(root.with_file_name("server-rotated.log")),
        access_key: Some(new_access.clone()),
        secret_key: Some(new_secret.clone()),
    })?;
    // The old handle owns the temporary directory the new server runs in: keep it.
    let retired = std::mem::replace(&mut archive.s3, rotated);

    // With the old keys still mounted, archiving fails.
    let failed_before = pg.archiver_stats()?.failed_count;
    write_and_switch(&pg)?;
    wait_until(
        Duration::from_secs(60),
        "archive_command to fail with the old keys",
        || Ok(pg.archiver_stats()?.failed_count > failed_before),
    )?;
    let denied = value(
        &scrape(&daemon)?,
        "walship_archive_failures_total{reason=\"access_denied\"}",
    )?;
    assert!(
        denied > 0.0,
        "the old keys' failures are not counted as access_denied"
    );

    // The kubelet updates the Secret; the daemon must notice by itself.
    let rotated_at = Instant::now();
    secret.update(&[
        ("ACCESS_KEY_ID", &new_access),
        ("ACCESS_SECRET_KEY", &new_secret),
    ])?;
    let mut applied = applied_before;
    wait_until(
        Duration::from_secs(60),
        "walship_config_reloads_total{result=\"applied\"} to rise",
        || {
            applied = value(
                &scrape(&daemon)?,
                "walship_config_reloads_total{result=\"applied\"}",
            )?;
            Ok(applied > applied_before)
        },
    )
    .with_context(|| format!("daemon log:\n{}", daemon.log_contents()))?;
    let reloaded = rotated_at.elapsed();
    for _ in 0..3 {
        write_and_switch(&pg)?;
    }
    let last = write_and_switch(&pg)?;
    pg.wait_for_archived(&last, Duration::from_secs(120))
        .with_context(|| format!("daemon log:\n{}", daemon.log_contents()))?;
    wait_for_empty_backlog(&daemon)?;
    let count = assert_all_archived_identical(&archive, &pg)?;
    assert!(applied >= 1.0);
    eprintln!(
        "{count} segments archived; reload applied {reloaded:.1?} after the Secret update, \
         all archived {:.1?} after it",
        rotated_at.elapsed()
    );
    // Stop the server before its directory (owned by the old handle) goes.
    archive.s3.stop();
    drop(retired);
    Ok(())
}

/// A store that accepts connections and never answers: the daemon's uploads end as
/// timeouts (counted as such) instead of holding their slots, nothing is acknowledged,
/// and when the manifest points at a store that answers, the backlog is shipped.
#[test]
fn a_silent_store_is_a_retried_timeout_and_shipping_resumes_when_a_store_answers() -> Result<()> {
    let (archive, mut pg, socket) = setup()?;
    let silent = walship_testkit::SilentServer::start()?;
    let good = archive.manifest();
    archive.write_manifest(&good.replace(&archive.s3.endpoint(), &silent.endpoint()))?;
    let daemon = DaemonProcess::start(&archive, &pg, &socket)?;
    pg.start()?;
    let first = write_and_switch(&pg)?;
    let mut observed = String::new();
    wait_until(
        Duration::from_secs(150),
        "an upload to the silent store counted as a timeout",
        || {
            let metrics = scrape(&daemon)?;
            let timeouts =
                series_value(&metrics, "walship_retries_total{reason=\"timeout\"}").unwrap_or(0.0);
            observed = format!("retries{{timeout}} {timeouts}");
            Ok(timeouts >= 1.0)
        },
    )
    .with_context(|| format!("last seen: {observed}\ndaemon:\n{}", daemon.log_contents()))?;
    let stats = pg.archiver_stats()?;
    assert!(
        stats.last_archived_wal.as_deref() < Some(first.as_str()),
        "{first} reported archived while the store was silent: {stats:?}"
    );
    assert!(archive.keys()?.is_empty(), "{:?}", archive.keys()?);
    assert!(
        daemon.log_contents().contains("got no answer within"),
        "{}",
        daemon.log_contents()
    );

    // The manifest points at a store that answers: the daemon reloads and ships all.
    archive.write_manifest(&good)?;
    let last = write_and_switch(&pg)?;
    pg.wait_for_archived(&last, Duration::from_secs(180))
        .with_context(|| format!("daemon:\n{}", daemon.log_contents()))?;
    wait_for_empty_backlog(&daemon)?;
    assert_all_archived_identical(&archive, &pg)?;
    Ok(())
}

/// A native sidecar starts before PostgreSQL's first initdb (deploy/standalone): with
/// --wait-for-pgdata the daemon stays up and unready until the data directory is
/// there, then archives what PostgreSQL hands it.
#[test]
fn with_wait_for_pgdata_the_daemon_waits_unready_for_initdb_then_archives() -> Result<()> {
    let archive = common::Archive::start(Some("zstd"))?;
    let socket = archive.dir.path().join("walship.sock");
    let pg_dir = walship_testkit::pg_temp_dir()?;
    let data_dir = pg_dir.path().join("data");
    let daemon = DaemonProcess::start_before_initdb(&archive, &data_dir, &socket)?;
    // Alive (the startup and liveness probes pass, so PostgreSQL's container starts),
    // not ready, and saying why.
    let waiting_for = data_dir.join("pg_wal/archive_status").display().to_string();
    wait_until(Duration::from_secs(10), "/readyz to name the wait", || {
        let (status, body) = daemon.get("/readyz")?;
        Ok(status == 503 && body.contains(&waiting_for))
    })?;
    std::thread::sleep(Duration::from_secs(2));
    ensure!(
        daemon.get("/healthz")?.0 == 200 && daemon.metric("walship_ready")? == 0.0,
        "{}",
        daemon.log_contents()
    );
    ensure!(
        !socket.exists(),
        "the socket is served before there is WAL to archive"
    );

    let mut pg = PgCluster::init(
        pg_dir.path(),
        walship_testkit::InitOptions {
            wal_segsize_mb: Some(1),
        },
    )?;
    let command = archive.archive_command()?.replace(
        " wal-push ",
        &format!(" --socket {} wal-push ", socket.display()),
    );
    pg.set_conf(&[("archive_mode", "on"), ("archive_command", &command)])?;
    pg.start()?;
    // The daemon looks for the data directory once a second: PostgreSQL may archive
    // its first segment before that, by itself (wal-push finds no daemon yet), which
    // is what wal-push is for. Once the socket is there, the daemon archives.
    wait_until(Duration::from_secs(10), "the daemon's socket", || {
        Ok(socket.exists())
    })
    .with_context(|| daemon.log_contents())?;
    let wal = write_and_switch(&pg)?;
    pg.wait_for_archived(&wal, Duration::from_secs(60))?;
    wait_until(Duration::from_secs(30), "/readyz to pass", || {
        Ok(daemon.get("/readyz")?.0 == 200)
    })
    .with_context(|| daemon.log_contents())?;
    ensure!(
        daemon.metric("walship_segments_archived_total")? >= 1.0,
        "the daemon shipped nothing: {}\n--- postgres ---\n{}",
        daemon.log_contents(),
        pg.log_contents()
    );
    let checked = assert_all_archived_identical(&archive, &pg)?;
    ensure!(checked >= 1);
    drop(pg_dir);
    Ok(())
}
