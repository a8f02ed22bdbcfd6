//! `walship`: the command line. Argument parsing, logging set-up and wiring of the
//! library crates; no archiving logic lives here.
//!
//! Exit statuses follow PostgreSQL's contracts:
//! - `wal-push` (archive_command): 0 once the file is durably archived (or an identical
//!   copy already was); 1 for any failure, so PostgreSQL retries; 2 for a bad
//!   configuration. Never above 125, which would make the archiver process exit.
//! - `wal-fetch` (restore_command): 0 restored; 1 not in the archive. Any other failure
//!   (bad configuration, store unreachable after retries, corrupt object) exits 126:
//!   PostgreSQL treats a status above 125 as fatal and stops recovery, instead of taking
//!   the segment as missing and ending recovery early on a timeline with a gap.
//! - `check`: 0 usable, 1 store problem, 2 bad configuration.
//!
//! Dependencies: `clap` (arguments and environment variables), `anyhow` (errors at this
//! edge only), `tokio` (the runtime), `tracing` and `tracing-subscriber` (logs to
//! stderr, which PostgreSQL copies into its own log for archive and restore commands).

mod daemon;
mod wiring;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use tracing::{error, info, warn};
use walship_engine::{FetchOutcome, PushOutcome};

#[derive(Debug, Parser)]
#[command(name = "walship", version, about, long_about = None)]
struct Cli {
    /// The ObjectStore manifest (apiVersion barmancloud.cnpg.io/v1).
    #[arg(
        long,
        env = "WALSHIP_CONFIG",
        default_value = "/etc/walship/objectstore.yaml",
        global = true
    )]
    config: PathBuf,

    /// Where the Secrets the manifest names are mounted: <dir>/<secret>/<key>.
    #[arg(
        long,
        env = "WALSHIP_SECRETS_DIR",
        default_value = "/etc/walship/secrets",
        global = true
    )]
    secrets_dir: PathBuf,

    /// The server name in the archive (barman's `serverName`; the cluster name under
    /// CloudNativePG). Overrides spec.configuration.serverName.
    #[arg(long, env = "WALSHIP_SERVER_NAME", global = true)]
    server_name: Option<String>,

    /// The daemon's Unix socket: `daemon` listens on it, `wal-push` asks it first.
    #[arg(
        long,
        env = "WALSHIP_SOCKET",
        default_value = "/run/walship/walship.sock",
        global = true
    )]
    socket: PathBuf,

    /// Log line format [default: json for `daemon`, text otherwise].
    #[arg(long, env = "WALSHIP_LOG_FORMAT", value_enum, global = true)]
    log_format: Option<LogFormat>,

    /// Log filter, e.g. `info` or `walship_engine=debug`.
    #[arg(long, env = "WALSHIP_LOG", default_value = "info", global = true)]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// archive_command: archive one WAL file (`walship wal-push %p`).
    WalPush {
        /// Path of the file, as PostgreSQL's %p gives it.
        path: PathBuf,
    },
    /// restore_command: restore one WAL file (`walship wal-fetch %f %p`).
    WalFetch {
        /// The WAL file name PostgreSQL asks for (%f).
        name: String,
        /// Where to write it (%p).
        dest: PathBuf,
        /// How long to keep retrying a failing store before giving up (seconds).
        #[arg(long, env = "WALSHIP_FETCH_RETRY_SECONDS", default_value_t = 60)]
        retry_seconds: u64,
    },
    /// Run the daemon: watch pg_wal/archive_status, ship every ready file concurrently,
    /// answer wal-push over the socket, serve /metrics, /healthz and /readyz.
    Daemon {
        /// PostgreSQL's data directory.
        #[arg(long, env = "PGDATA")]
        pgdata: PathBuf,
        /// Where acknowledged uploads are journaled; must be outside the data directory
        /// [default: <pgdata>/../walship-journal].
        #[arg(long, env = "WALSHIP_JOURNAL_DIR")]
        journal_dir: Option<PathBuf>,
        /// Address for /metrics, /healthz and /readyz.
        #[arg(long, env = "WALSHIP_METRICS_ADDR", default_value = "127.0.0.1:9188")]
        metrics_addr: std::net::SocketAddr,
        /// Where restore prefetches are spooled: same filesystem as pg_wal, outside it
        /// [default: <pgdata>/../walship-spool].
        #[arg(long, env = "WALSHIP_SPOOL_DIR")]
        spool_dir: Option<PathBuf>,
        /// Segments to prefetch ahead of PostgreSQL's restore requests (0 disables);
        /// also bounded by --prefetch-max-mib.
        #[arg(long, default_value_t = 64)]
        prefetch: usize,
        /// Upper bound on prefetched data held in the spool, in MiB.
        #[arg(long, default_value_t = 1024)]
        prefetch_max_mib: u64,
        /// Seconds to let in-flight uploads finish after SIGTERM.
        #[arg(long, default_value_t = 30)]
        shutdown_grace_seconds: u64,
        /// /readyz fails when uploads have failed continuously for this many seconds.
        #[arg(long, default_value_t = 60)]
        unready_after_seconds: u64,
        /// Full rescan of archive_status every this many seconds (a safety net for
        /// missed notifications).
        #[arg(long, default_value_t = 5)]
        rescan_seconds: u64,
    },
    /// Check the configuration, the credentials and that the archive can be listed, and
    /// report whether the server's WAL archive is empty or already holds WAL.
    Check {
        /// Fail (exit 1) when the archive already holds WAL, as
        /// barman-cloud-check-wal-archive does before a new cluster's first archiving.
        #[arg(long)]
        expect_empty: bool,
        /// Count only WAL of this timeline and later (a promoted cluster continues the
        /// archive of its former primary on a new timeline).
        #[arg(long, value_name = "N")]
        timeline: Option<u32>,
    },
}

const EXIT_RESTORE_FATAL: u8 = 126;

/// How long wal-push waits for the daemon; the daemon gives up a little earlier, so
/// its answer (not a timeout) normally arrives.
const PUSH_WAIT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.log_format.unwrap_or(match cli.command {
        Command::Daemon { .. } => LogFormat::Json,
        _ => LogFormat::Text,
    });
    init_logging(format, &cli.log_level);
    // archive_command and restore_command run once per segment: a single-threaded
    // runtime starts no worker threads, which is most of what PostgreSQL waits for
    // when the daemon already shipped the segment. Compression still runs on the
    // blocking pool. The daemon serves many uploads at once.
    let mut builder = match cli.command {
        Command::Daemon { .. } => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let is_fetch = matches!(cli.command, Command::WalFetch { .. });
    let config_failure = if is_fetch { EXIT_RESTORE_FATAL } else { 2 };
    let mut direct = Direct::NoDaemon;
    if let Command::WalPush { path } = &cli.command {
        match push_through_daemon(&cli.socket, path).await {
            Ok(code) => return code,
            Err(why) => direct = why,
        }
    }
    if let Command::WalFetch { name, dest, .. } = &cli.command
        && let Some(code) = fetch_through_daemon(&cli.socket, name, dest).await
    {
        return code;
    }
    // Only the daemon publishes metrics; it counts credential loads from the start.
    let metrics = std::sync::Arc::new(walship_metrics::Metrics::new());
    let observer = matches!(cli.command, Command::Daemon { .. })
        .then(|| daemon::credential_observer(&metrics));
    let wired = match wiring::archiver(
        &cli.config,
        &cli.secrets_dir,
        cli.server_name.as_deref(),
        observer,
    )
    .await
    {
        Ok(w) => w,
        Err(e) => {
            // Printed plainly: a list of config errors reads best one per line.
            eprintln!("walship: {e:#}");
            return ExitCode::from(config_failure);
        }
    };
    let archiver = wired.archiver;
    match cli.command {
        Command::Daemon {
            pgdata,
            journal_dir,
            spool_dir,
            prefetch,
            prefetch_max_mib,
            metrics_addr,
            shutdown_grace_seconds,
            unready_after_seconds,
            rescan_seconds,
        } => {
            let beside_pgdata = |name: &str| {
                pgdata
                    .parent()
                    .unwrap_or(std::path::Path::new("/"))
                    .join(name)
            };
            let journal_dir = journal_dir.unwrap_or_else(|| beside_pgdata("walship-journal"));
            let spool_dir = spool_dir.unwrap_or_else(|| beside_pgdata("walship-spool"));
            let config = walship_engine::daemon::DaemonConfig {
                pgdata,
                journal_dir,
                socket_path: Some(cli.socket.clone()),
                max_parallel: wired.max_parallel,
                rescan_interval: Duration::from_secs(rescan_seconds.max(1)),
                push_wait: PUSH_WAIT - Duration::from_secs(2),
                shutdown_grace: Duration::from_secs(shutdown_grace_seconds),
                spool_dir,
                prefetch_window: prefetch,
                prefetch_max_bytes: prefetch_max_mib.saturating_mul(1 << 20),
            };
            let sources = daemon::Sources {
                config: cli.config.clone(),
                secrets_dir: cli.secrets_dir.clone(),
                server_name: cli.server_name.clone(),
            };
            match daemon::run(
                config,
                archiver,
                sources,
                metrics,
                metrics_addr,
                unready_after_seconds,
            )
            .await
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::WalPush { path } => match push_unless_signalled(&archiver, &path).await {
            Ok(PushOutcome::Uploaded { .. } | PushOutcome::AlreadyArchived { .. }) => {
                if direct == Direct::Silent
                    && let Some(name) = path.file_name().and_then(|n| n.to_str())
                {
                    walship_engine::daemon::socket::record_fallback(&cli.socket, name);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                error!("not archived: {e}");
                ExitCode::from(1)
            }
        },
        Command::WalFetch {
            name,
            dest,
            retry_seconds,
        } => {
            let deadline = Instant::now() + Duration::from_secs(retry_seconds);
            let mut delay = Duration::from_millis(500);
            loop {
                match archiver.fetch(&name, &dest).await {
                    Ok(FetchOutcome::Restored { .. }) => return ExitCode::SUCCESS,
                    Ok(FetchOutcome::NotFound) => return ExitCode::from(1),
                    Err(e) if e.is_store_failure() && Instant::now() + delay < deadline => {
                        warn!("{e}; retrying in {delay:?}");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                    Err(e) => {
                        error!(
                            "{e}; exiting with status {EXIT_RESTORE_FATAL} so that PostgreSQL \
                             stops recovery instead of treating {name} as missing"
                        );
                        return ExitCode::from(EXIT_RESTORE_FATAL);
                    }
                }
            }
        }
        Command::Check {
            expect_empty,
            timeline,
        } => match archiver.check(timeline).await {
            Ok(report) => {
                let scope =
                    timeline.map_or(String::new(), |t| format!(" (timeline {t} and later)"));
                if report.wal_objects == 0 {
                    println!(
                        "ok: {} reachable; the WAL archive under {} is empty{scope}",
                        archiver.store().describe(),
                        archiver.layout().wals_prefix(),
                    );
                    return ExitCode::SUCCESS;
                }
                println!(
                    "{}: {} reachable; {} WAL files already archived under {}{scope}{}",
                    if expect_empty { "not empty" } else { "ok" },
                    archiver.store().describe(),
                    report.wal_objects,
                    archiver.layout().wals_prefix(),
                    report
                        .newest
                        .map(|n| format!(", newest segment {n}"))
                        .unwrap_or_default()
                );
                if expect_empty {
                    eprintln!(
                        "walship: expected an empty WAL archive: another cluster may be \
                         archiving here; check serverName and destinationPath"
                    );
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                error!("{e}");
                eprintln!("walship: {e}");
                ExitCode::from(1)
            }
        },
    }
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// archive_command must never die on a signal: PostgreSQL's archiver treats that as
/// fatal and restarts. A termination request instead abandons the upload (nothing was
/// acknowledged) and exits 1, so PostgreSQL retries the file later.
async fn push_unless_signalled(
    archiver: &walship_engine::Archiver,
    path: &std::path::Path,
) -> Result<PushOutcome, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot install signal handlers; a signal would end this upload abruptly");
        return archiver.push(path).await.map_err(|e| e.to_string());
    };
    let interrupted =
        || Err("interrupted by a signal before the store confirmed the upload".to_owned());
    tokio::select! {
        result = archiver.push(path) => result.map_err(|e| e.to_string()),
        _ = term.recv() => interrupted(),
        _ = int.recv() => interrupted(),
        _ = quit.recv() => interrupted(),
        _ = hup.recv() => interrupted(),
    }
}

/// Why wal-push uploads a file itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direct {
    /// No daemon socket: no daemon runs (or it shut down cleanly).
    NoDaemon,
    /// A socket exists but nothing answered: the daemon died or hangs.
    Silent,
    /// The daemon answered that this file is not one it archives.
    NotMine,
}

/// The fast path of wal-push: ask the daemon. `Err` says why no daemon could answer
/// for this file; the caller then uploads it directly, exactly as without a daemon.
async fn push_through_daemon(
    socket: &std::path::Path,
    path: &std::path::Path,
) -> Result<ExitCode, Direct> {
    use walship_engine::daemon::socket::{Reply, ask_push};
    if !socket.exists() {
        return Err(Direct::NoDaemon);
    }
    // PostgreSQL runs archive_command in the data directory with a relative %p.
    let absolute = std::env::current_dir()
        .map_err(|_| Direct::Silent)?
        .join(path);
    match ask_push(socket, &absolute, PUSH_WAIT).await {
        Ok(Reply::Archived(_)) => Ok(ExitCode::SUCCESS),
        Ok(Reply::Failed(msg)) => {
            error!("not archived: {msg}");
            Ok(ExitCode::from(1))
        }
        Ok(Reply::NotMine(msg)) => {
            info!("the daemon does not archive this file ({msg}); uploading directly");
            Err(Direct::NotMine)
        }
        Ok(Reply::NotFound) => {
            warn!("unexpected answer from the daemon; uploading directly");
            Err(Direct::Silent)
        }
        Err(e) => {
            warn!(
                "no answer from the daemon at {} ({e}); uploading directly",
                socket.display()
            );
            Err(Direct::Silent)
        }
    }
}

/// The prefetching path of wal-fetch: ask the daemon. `None` means it could not answer
/// authoritatively, and the caller fetches directly (with its own retries).
async fn fetch_through_daemon(
    socket: &std::path::Path,
    name: &str,
    dest: &std::path::Path,
) -> Option<ExitCode> {
    use walship_engine::daemon::socket::{Reply, ask_fetch};
    if !socket.exists() {
        return None;
    }
    let absolute = std::env::current_dir().ok()?.join(dest);
    match ask_fetch(socket, name, &absolute, Duration::from_secs(120)).await {
        Ok(Reply::Archived(_)) => Some(ExitCode::SUCCESS),
        Ok(Reply::NotFound) => Some(ExitCode::from(1)),
        Ok(Reply::Failed(msg) | Reply::NotMine(msg)) => {
            warn!("the daemon could not restore {name} ({msg}); fetching directly");
            None
        }
        Err(e) => {
            warn!(
                "no answer from the daemon at {} ({e}); fetching directly",
                socket.display()
            );
            None
        }
    }
}
