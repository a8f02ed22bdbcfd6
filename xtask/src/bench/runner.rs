//! Running each tool over the backlog, and back: one runner for every "one process
//! per segment" tool (walship wal-push, barman-cloud, pgBackRest's archive-push and
//! archive-get), one for the walship daemon.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use walship_testkit::{free_port, wait_until};

use super::env::{CnpgCalls, Run, Stage, Transport, run_ok};
use super::proc::{Meter, peak_rss_kib};

/// Who ships the backlog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Archiver {
    /// `walship daemon` at `wal.maxParallel`, over TLS or plain HTTP.
    Daemon(usize, Transport),
    /// `walship wal-push %p` once per segment, no daemon.
    WalPush,
    /// `barman-cloud-wal-archive` once per segment, N at a time (the plugin's maxParallel).
    Barman(usize),
    /// `pgbackrest archive-push` with `archive-async=y` and `process-max` N.
    PgBackRest(usize),
    /// `walship cnpg instance` at `wal.maxParallel`, asked as CloudNativePG asks the
    /// plugin's sidecar: a manager process per segment (the fake instance manager).
    CnpgSidecar(usize),
    /// The Barman Cloud plugin's sidecar at `wal.maxParallel` N, as it archives: each
    /// call PostgreSQL makes ships its segment and up to N-1 other `.ready` ones, one
    /// `barman-cloud-wal-archive` process each, and answers when all have ended; the
    /// calls for those others are answered from its spool. Its gRPC hop is left out,
    /// which flatters it.
    PluginWay(usize),
}

impl Archiver {
    pub fn label(self) -> String {
        match self {
            Archiver::Daemon(n, Transport::Tls) => format!("walship daemon, maxParallel {n}"),
            Archiver::Daemon(n, Transport::Plain) => {
                format!("walship daemon, maxParallel {n}, plain HTTP")
            }
            Archiver::WalPush => "walship wal-push, once per segment".into(),
            Archiver::Barman(1) => "barman-cloud-wal-archive, once per segment".into(),
            Archiver::Barman(n) => format!("barman-cloud-wal-archive, {n} in parallel"),
            Archiver::PgBackRest(n) => format!("pgBackRest archive-push async, process-max {n}"),
            Archiver::CnpgSidecar(n) => {
                format!("walship cnpg instance via CNPG-I, maxParallel {n}")
            }
            Archiver::PluginWay(n) => format!(
                "the Barman Cloud plugin's way, maxParallel {n}: barman-cloud-wal-archive \
                 per segment, a batch per call"
            ),
        }
    }

    /// How many uploads may run at once (to compare tools at equal parallelism).
    pub fn processes(self) -> usize {
        match self {
            Archiver::Daemon(n, _)
            | Archiver::Barman(n)
            | Archiver::PgBackRest(n)
            | Archiver::CnpgSidecar(n)
            | Archiver::PluginWay(n) => n,
            Archiver::WalPush => 1,
        }
    }
}

/// What one archive run measured.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub seconds: f64,
    pub cpu_seconds: f64,
    /// Wall time of each command PostgreSQL would have waited for.
    pub latencies: Vec<f64>,
    /// Peak RSS of the daemon (KiB).
    pub peak_rss_kib: Option<u64>,
    /// `wal-push` answered by a daemon that had already shipped the segment.
    pub preshipped_latencies: Vec<f64>,
}

/// Ships the whole corpus with `archiver` into `run`'s bucket.
pub fn archive(run: &Run<'_>, archiver: Archiver, compression: &str) -> Result<Measured> {
    let corpus = &run.env.corpus;
    match archiver {
        Archiver::Daemon(parallel, transport) => {
            run.walship_manifest(compression, parallel, transport)?;
            daemon_backlog(run, None)
        }
        Archiver::CnpgSidecar(parallel) => {
            run.walship_manifest(compression, parallel, Transport::Tls)?;
            daemon_backlog(run, Some(run.cnpg_calls()?))
        }
        Archiver::WalPush => {
            run.walship_manifest(compression, 1, Transport::Tls)?;
            let stage = Stage::new(run, "archive", corpus, true)?;
            stage.mark_ready(&corpus.names)?;
            per_segment(&corpus.names, 1, |name| {
                let path = stage.segment(name);
                let mut cmd = run.walship(&["wal-push", &path.display().to_string()])?;
                run_ok(&mut cmd)?;
                stage.mark_done(name)
            })
        }
        // One barman-cloud-wal-archive per segment: N at a time as they come, or in
        // batches of N answered together (the plugin's sidecar).
        Archiver::Barman(parallel) | Archiver::PluginWay(parallel) => {
            let stage = Stage::new(run, "archive", corpus, true)?;
            stage.mark_ready(&corpus.names)?;
            let flag = format!("--{compression}");
            let one = |name: &str| {
                let mut cmd = run.barman("barman-cloud-wal-archive");
                cmd.arg(&flag)
                    .arg(run.destination())
                    .arg(super::env::SERVER)
                    .arg(stage.segment(name));
                run_ok(&mut cmd)?;
                stage.mark_done(name)
            };
            if matches!(archiver, Archiver::PluginWay(_)) {
                in_batches(&corpus.names, parallel, one)
            } else {
                per_segment(&corpus.names, parallel, one)
            }
        }
        Archiver::PgBackRest(processes) => {
            let stage = Stage::new(run, "archive", corpus, true)?;
            let conf = run.pgbackrest_conf(processes, compression, &stage.pgdata)?;
            run.pgbackrest_stanza(&conf)?;
            stage.mark_ready(&corpus.names)?;
            // PostgreSQL calls archive_command one segment at a time; the async
            // worker it starts looks ahead at the other .ready files.
            per_segment(&corpus.names, 1, |name| {
                let path = stage.segment(name).display().to_string();
                run_ok(&mut run.pgbackrest(&conf, &["archive-push", &path])?)?;
                stage.mark_done(name)
            })
        }
    }
}

/// What starting any archive_command costs here: `/bin/true` launched `times` times
/// the way every timed tool is (as the PostgreSQL user), in seconds each. The
/// archive_command latencies are read against it.
pub fn floor(run: &Run<'_>, times: usize) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(times);
    for _ in 0..times {
        let mut cmd = walship_testkit::pg_user_command(Path::new("/bin/true"), &run.dir)?;
        let start = Instant::now();
        run_ok(&mut cmd)?;
        out.push(start.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// Calls `one` for every name, `parallel` at a time, in order of the names (each
/// worker takes the oldest not yet taken), timing each call and the whole.
pub fn per_segment(
    names: &[String],
    parallel: usize,
    one: impl Fn(&str) -> Result<()> + Sync,
) -> Result<Measured> {
    let meter = Meter::start()?;
    let next = AtomicUsize::new(0);
    let latencies = Mutex::new(Vec::with_capacity(names.len()));
    let failure = Mutex::new(None);
    thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(name) = names.get(i) else { break };
                    let start = Instant::now();
                    if let Err(e) = one(name) {
                        failure
                            .lock()
                            .unwrap()
                            .get_or_insert(e.context(name.clone()));
                        // Stop the others too: the numbers of a failed run mean nothing.
                        next.store(names.len(), Ordering::SeqCst);
                        break;
                    }
                    latencies
                        .lock()
                        .unwrap()
                        .push(start.elapsed().as_secs_f64());
                }
            });
        }
    });
    let seconds = meter.elapsed().as_secs_f64();
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }
    Ok(Measured {
        seconds,
        cpu_seconds: meter.cpu_seconds()?,
        latencies: latencies.into_inner().unwrap(),
        ..Measured::default()
    })
}

/// Calls `one` for every name in batches of `size`, the calls of a batch at once, the
/// next batch when all of them have ended (the plugin's sidecar per archive call);
/// times the whole and each batch (what the call that started it waited for).
pub fn in_batches(
    names: &[String],
    size: usize,
    one: impl Fn(&str) -> Result<()> + Sync,
) -> Result<Measured> {
    let meter = Meter::start()?;
    let mut latencies = Vec::with_capacity(names.len() / size.max(1) + 1);
    for batch in names.chunks(size.max(1)) {
        let start = Instant::now();
        let failures: Vec<anyhow::Error> = thread::scope(|s| {
            let running: Vec<_> = batch
                .iter()
                .map(|name| s.spawn(|| one(name).with_context(|| name.clone())))
                .collect();
            running
                .into_iter()
                .filter_map(|t| match t.join() {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some(anyhow::anyhow!("a batch thread panicked")),
                })
                .collect()
        });
        // The numbers of a failed run mean nothing.
        if let Some(e) = failures.into_iter().next() {
            return Err(e);
        }
        latencies.push(start.elapsed().as_secs_f64());
    }
    Ok(Measured {
        seconds: meter.elapsed().as_secs_f64(),
        cpu_seconds: meter.cpu_seconds()?,
        latencies,
        ..Measured::default()
    })
}

/// A running `walship daemon` over a stage, as the PostgreSQL user; killed on drop.
pub struct Daemon {
    child: Child,
    metrics_port: u16,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon over `pgdata` with `run`'s manifest and socket, and waits
    /// until it answers.
    pub fn start_at(run: &Run<'_>, pgdata: &Path, extra: &[&str]) -> Result<Daemon> {
        let mut cmd = run.walship(&[])?;
        cmd.args(["daemon", "--pgdata"]).arg(pgdata).args(extra);
        Self::start(run, cmd, run.socket())
    }

    /// Starts `walship cnpg instance` over `pgdata`, serving the plugin's socket in
    /// `plugins`, as CloudNativePG's pod runs the sidecar.
    pub fn start_sidecar(run: &Run<'_>, pgdata: &Path, plugins: &Path) -> Result<Daemon> {
        let mut cmd = run.walship(&[])?;
        cmd.args(["cnpg", "instance", "--config-from", "files"])
            .args(["--retention-interval-seconds", "0"])
            .arg("--plugins-dir")
            .arg(plugins)
            .arg("--pgdata")
            .arg(pgdata)
            .env("POD_NAME", "bench-1")
            .env("CLUSTER_NAME", super::env::SERVER);
        Self::start(run, cmd, plugins.join("barman-cloud.cloudnative-pg.io"))
    }

    /// Runs `cmd` (a walship long-running command), adding the metrics address, and
    /// waits until `socket` exists and the metrics answer.
    fn start(run: &Run<'_>, mut cmd: Command, socket: PathBuf) -> Result<Daemon> {
        let metrics_port = free_port()?;
        let log = run.dir.join("daemon.log");
        cmd.args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?);
        let child = cmd.spawn().context("starting walship daemon")?;
        let mut daemon = Daemon {
            child,
            metrics_port,
            log,
        };
        wait_until(Duration::from_secs(60), "the daemon's socket", || {
            if let Some(status) = daemon.child.try_wait()? {
                bail!("the daemon exited with {status}: {}", daemon.log_tail());
            }
            Ok(socket.exists() && daemon.metrics().is_ok())
        })?;
        Ok(daemon)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn metrics(&self) -> Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.metrics_port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    }

    /// An unlabelled metric's value (0 when not exposed yet).
    pub fn metric(&self, name: &str) -> Result<f64> {
        let body = self.metrics()?;
        Ok(body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0))
    }

    /// Fails when the daemon has exited, with its log.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the daemon exited with {status}: {}", self.log_tail());
        }
        Ok(())
    }

    /// SIGTERM, then wait: its CPU time then counts in ours.
    pub fn stop(mut self) -> Result<()> {
        // SAFETY: kill sends a signal to our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon ships a backlog: it starts over an empty `archive_status`, then every
/// segment turns `.ready` at once, and the clock runs until its counter says all
/// are stored. Then PostgreSQL's `wal-push` for each (already shipped) segment is
/// timed.
fn daemon_backlog(run: &Run<'_>, cnpg: Option<CnpgCalls>) -> Result<Measured> {
    let corpus = &run.env.corpus;
    let stage = Stage::new(run, "archive", corpus, true)?;
    let mut daemon = match &cnpg {
        None => Daemon::start_at(run, &stage.pgdata, &["--rescan-seconds", "5"])?,
        Some(calls) => Daemon::start_sidecar(run, &stage.pgdata, calls.plugins.path())?,
    };
    let meter = Meter::start()?;
    stage.mark_ready(&corpus.names)?;
    let want = corpus.names.len() as f64;
    let timeout = Duration::from_secs(3600);
    wait_until(timeout, "the daemon to ship the backlog", || {
        daemon.check_alive()?;
        Ok(daemon.metric("walship_segments_archived_total")? >= want)
    })?;
    let seconds = meter.elapsed().as_secs_f64();
    let peak_rss_kib = Some(peak_rss_kib(daemon.pid())?);
    let mut preshipped = Vec::with_capacity(corpus.names.len());
    for name in &corpus.names {
        let path = stage.segment(name).display().to_string();
        let mut cmd = match &cnpg {
            None => run.walship(&["wal-push", &path])?,
            // PostgreSQL runs the archive_command through the shell, as here.
            Some(calls) => {
                let line = calls.archive_command.replace("%p", &path);
                let mut cmd = walship_testkit::pg_user_command(Path::new("/bin/sh"), &run.dir)?;
                cmd.args(["-c", &line]);
                cmd
            }
        };
        let start = Instant::now();
        run_ok(&mut cmd)?;
        preshipped.push(start.elapsed().as_secs_f64());
        stage.mark_done(name)?;
    }
    daemon.stop()?;
    Ok(Measured {
        seconds,
        cpu_seconds: meter.cpu_seconds()?,
        latencies: Vec::new(),
        peak_rss_kib,
        preshipped_latencies: preshipped,
    })
}

/// Who replays the archive through restore_command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restorer {
    /// `walship wal-fetch`, no daemon.
    WalFetch,
    /// `walship wal-fetch` answered by the daemon's prefetch spool.
    DaemonPrefetch,
    /// `barman-cloud-wal-restore`, with `--parallel N` above 1.
    Barman(usize),
    /// `pgbackrest archive-get` with `archive-async=y` and `process-max` N.
    PgBackRest(usize),
}

impl Restorer {
    pub fn label(self) -> String {
        match self {
            Restorer::WalFetch => "walship wal-fetch, no daemon".into(),
            Restorer::DaemonPrefetch => "walship wal-fetch + daemon prefetch".into(),
            Restorer::Barman(1) => "barman-cloud-wal-restore, once per segment".into(),
            Restorer::Barman(n) => format!("barman-cloud-wal-restore --parallel {n}"),
            Restorer::PgBackRest(n) => format!("pgBackRest archive-get async, process-max {n}"),
        }
    }
}

/// Replays the corpus from `run`'s bucket (written by the matching archiver) one
/// restore_command at a time, as PostgreSQL's startup process does.
pub fn restore(run: &Run<'_>, restorer: Restorer, compression: &str) -> Result<Measured> {
    let corpus = &run.env.corpus;
    let stage = Stage::new(run, "restore", corpus, false)?;
    let dest = stage.pg_wal().join("RECOVERYXLOG");
    let dest_arg = dest.display().to_string();
    let fetched = |cmd: &mut Command| -> Result<()> {
        run_ok(cmd)?;
        if fs::metadata(&dest)?.len() != corpus.segment_bytes {
            bail!("{} has the wrong size", dest.display());
        }
        fs::remove_file(&dest)?;
        Ok(())
    };
    match restorer {
        Restorer::WalFetch => per_segment(&corpus.names, 1, |name| {
            fetched(&mut run.walship(&["wal-fetch", name, &dest_arg])?)
        }),
        Restorer::DaemonPrefetch => {
            // The daemon does the downloading: its CPU counts once it has exited.
            let meter = Meter::start()?;
            let daemon = Daemon::start_at(run, &stage.pgdata, &[])?;
            let measured = per_segment(&corpus.names, 1, |name| {
                fetched(&mut run.walship(&["wal-fetch", name, &dest_arg])?)
            });
            daemon.stop()?;
            let mut measured = measured?;
            measured.cpu_seconds = meter.cpu_seconds()?;
            Ok(measured)
        }
        Restorer::Barman(parallel) => {
            let spool = run.dir.join(format!("barman-spool-{parallel}"));
            fs::create_dir_all(&spool)?;
            per_segment(&corpus.names, 1, |name| {
                let mut cmd = run.barman("barman-cloud-wal-restore");
                if parallel > 1 {
                    cmd.args(["--parallel", &parallel.to_string(), "--spool-dir"])
                        .arg(&spool);
                }
                cmd.arg(run.destination())
                    .arg(super::env::SERVER)
                    .arg(name)
                    .arg(&dest);
                fetched(&mut cmd)
            })
        }
        Restorer::PgBackRest(processes) => {
            // A spool of its own per setting: the queue must start empty.
            let conf = run.pgbackrest_conf(processes, compression, &stage.pgdata)?;
            let spool = run.dir.join("spool");
            let _ = fs::remove_dir_all(&spool);
            fs::create_dir_all(&spool)?;
            walship_testkit::make_readable_by_pg(&spool)?;
            per_segment(&corpus.names, 1, |name| {
                fetched(&mut run.pgbackrest(&conf, &["archive-get", name, &dest_arg])?)
            })
        }
    }
}
