//! What PostgreSQL feels: a real cluster under pgbench with each tool as its
//! `archive_command`, watched from outside: how many `.ready` files pile up, how old
//! the oldest gets, and how long the pile takes to drain once pgbench stops.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use walship_testkit::{InitOptions, PgCluster, wait_until};

use super::env::{Env, SERVER, Transport};
use super::proc::{children, reap_newcomers};
use super::runner::Daemon;

/// The archive_command under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveTool {
    WalPush,
    Daemon(usize),
    /// `walship cnpg instance`, called as CloudNativePG calls the plugin's sidecar: a
    /// manager process per segment, a new gRPC connection, the load sequence, Archive.
    CnpgSidecar(usize),
    Barman,
    PgBackRest(usize),
}

impl LiveTool {
    pub fn label(self) -> String {
        match self {
            LiveTool::WalPush => "walship wal-push (no daemon)".into(),
            LiveTool::Daemon(n) => format!("walship wal-push + daemon, maxParallel {n}"),
            // Short: the run's directory is named after it, and the daemon's socket
            // path in it is limited to 107 bytes.
            LiveTool::CnpgSidecar(n) => {
                format!("walship cnpg instance via CNPG-I, maxParallel {n}")
            }
            LiveTool::Barman => "barman-cloud-wal-archive".into(),
            LiveTool::PgBackRest(n) => format!("pgBackRest archive-push async, process-max {n}"),
        }
    }
}

/// What the watcher saw.
#[derive(Clone, Debug, Default)]
pub struct Live {
    pub seconds: f64,
    pub segments: usize,
    pub peak_ready: usize,
    pub oldest_ready_seconds: f64,
    pub drain_seconds: f64,
}

/// How hard pgbench pushes.
pub struct Load {
    pub segment_mib: u32,
    pub scale: u32,
    pub seconds: u64,
}

/// A fresh cluster archiving with `tool` while pgbench loads it (`pgbench -i`, then
/// `pgbench -N` for `load.seconds`).
/// `barman_bin` is a barman-cloud the PostgreSQL user can run ([`crate::tools::ensure_barman_for_pg`]).
pub fn live(
    env: &Env,
    tool: LiveTool,
    compression: &str,
    load: &Load,
    barman_bin: &Path,
) -> Result<Live> {
    let run = env.run(&format!("live {}", tool.label()))?;
    let known = children()?;
    let mut pg = PgCluster::init(
        &run.dir.join("pg"),
        InitOptions {
            wal_segsize_mb: Some(load.segment_mib),
        },
    )?;
    let walship = format!(
        "{} {} wal-push %p",
        env.walship.display(),
        run.walship_args().join(" ")
    );
    let mut daemon_parallel = None;
    let mut sidecar_plugins = None;
    let command = match tool {
        LiveTool::CnpgSidecar(n) => {
            run.walship_manifest(compression, n, Transport::Tls)?;
            let calls = run.cnpg_calls()?;
            let command = calls.archive_command.clone();
            sidecar_plugins = Some(calls.plugins);
            command
        }
        LiveTool::WalPush => {
            run.walship_manifest(compression, 1, Transport::Tls)?;
            walship
        }
        LiveTool::Daemon(n) => {
            run.walship_manifest(compression, n, Transport::Tls)?;
            daemon_parallel = Some(n);
            walship
        }
        LiveTool::Barman => {
            run.set_barman_env(&mut pg);
            format!(
                "{} --cloud-provider aws-s3 --endpoint-url {} --{compression} {} {SERVER} %p",
                barman_bin.join("barman-cloud-wal-archive").display(),
                env.tls.endpoint(),
                run.destination()
            )
        }
        LiveTool::PgBackRest(n) => {
            let program = env
                .pgbackrest
                .as_deref()
                .context("pgBackRest is not installed")?;
            let conf = run.pgbackrest_conf(n, compression, pg.data_dir())?;
            run.pgbackrest_stanza(&conf)?;
            format!(
                "{} --config={} --stanza={SERVER} archive-push %p",
                program.display(),
                conf.display()
            )
        }
    };
    pg.set_conf(&[
        ("archive_mode", "on"),
        ("archive_command", &command),
        ("max_wal_size", "4GB"),
        ("checkpoint_timeout", "30s"),
    ])?;
    let daemon = match (daemon_parallel, &sidecar_plugins) {
        (Some(_), _) => Some(Daemon::start_at(&run, pg.data_dir(), &[])?),
        (None, Some(plugins)) => Some(Daemon::start_sidecar(&run, pg.data_dir(), plugins.path())?),
        (None, None) => None,
    };
    pg.start()?;
    let status_dir = pg.data_dir().join("pg_wal/archive_status");
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let (watched, load_seconds, drain_seconds) = thread::scope(|s| -> Result<_> {
        let watcher = s.spawn(|| watch(&status_dir, &stop));
        let loaded = (|| -> Result<()> {
            pg.pgbench(&["-i", "-q", "-s", &load.scale.to_string()])?;
            pg.pgbench(&["-c", "4", "-j", "2", "-N", "-T", &load.seconds.to_string()])?;
            Ok(())
        })();
        let load_seconds = start.elapsed().as_secs_f64();
        // The last segment pgbench filled is still open: close it so it is archived.
        let drained = loaded.and_then(|()| {
            pg.switch_wal()?;
            wait_until(
                Duration::from_secs(1800),
                "the .ready backlog to drain",
                || {
                    // A tool that keeps failing would never drain: stop early and say why.
                    let stats = pg.archiver_stats()?;
                    if stats.failed_count >= 30 {
                        bail!(
                            "archive_command failed {} times; PostgreSQL log tail:\n{}",
                            stats.failed_count,
                            tail(&pg.log_contents(), 10)
                        );
                    }
                    Ok(count_ready(&status_dir)?.0 == 0)
                },
            )
        });
        let drain_seconds = start.elapsed().as_secs_f64() - load_seconds;
        stop.store(true, Ordering::SeqCst);
        let watched = watcher.join().expect("the watcher does not panic");
        drained?;
        Ok((watched, load_seconds, drain_seconds))
    })?;
    let stats = pg.archiver_stats()?;
    if stats.failed_count > 0 {
        println!(
            "bench: {}: {} failed archive attempts (PostgreSQL retried them)",
            tool.label(),
            stats.failed_count
        );
    }
    pg.stop()?;
    if let Some(daemon) = daemon {
        daemon.stop()?;
    }
    // The postmaster was re-parented to us (we are a subreaper): reap it.
    reap_newcomers(&known, false)?;
    Ok(Live {
        seconds: load_seconds,
        segments: stats.archived_count as usize,
        peak_ready: watched.0,
        oldest_ready_seconds: watched.1,
        drain_seconds,
    })
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Samples `archive_status` every 100 ms until `stop`: (peak `.ready` count, oldest
/// `.ready` age in seconds).
fn watch(status_dir: &Path, stop: &AtomicBool) -> (usize, f64) {
    let mut peak = (0, 0.0f64);
    while !stop.load(Ordering::SeqCst) {
        if let Ok((count, oldest)) = count_ready(status_dir) {
            peak.0 = peak.0.max(count);
            peak.1 = peak.1.max(oldest);
        }
        thread::sleep(Duration::from_millis(100));
    }
    peak
}

/// `.ready` files in `dir` and the age of the oldest, in seconds.
fn count_ready(dir: &Path) -> Result<(usize, f64)> {
    let now = SystemTime::now();
    let mut count = 0;
    let mut oldest = 0.0f64;
    for entry in fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        if !entry.file_name().to_string_lossy().ends_with(".ready") {
            continue;
        }
        count += 1;
        // A file archived between the listing and the stat is simply gone.
        if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
            let age = now.duration_since(modified).unwrap_or_default();
            oldest = oldest.max(age.as_secs_f64());
        }
    }
    Ok((count, oldest))
}
