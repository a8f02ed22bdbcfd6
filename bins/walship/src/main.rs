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
mod logging;
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
        global = true,
        help_heading = "Global options"
    )]
    config: PathBuf,

    /// Where the Secrets the manifest names are mounted: <dir>/<secret>/<key>.
    #[arg(
        long,
        env = "WALSHIP_SECRETS_DIR",
        default_value = "/etc/walship/secrets",
        global = true,
        help_heading = "Global options"
    )]
    secrets_dir: PathBuf,

    /// The server name in the archive (barman's `serverName`; the cluster name under
    /// CloudNativePG). Overrides spec.configuration.serverName.
    #[arg(
        long,
        env = "WALSHIP_SERVER_NAME",
        global = true,
        help_heading = "Global options"
    )]
    server_name: Option<String>,

    /// The daemon's Unix socket: `daemon` listens on it, `wal-push` asks it first.
    #[arg(
        long,
        env = "WALSHIP_SOCKET",
        default_value = "/run/walship/walship.sock",
        global = true,
        help_heading = "Global options"
    )]
    socket: PathBuf,

    /// Log line format [default: json for `daemon`, text otherwise].
    #[arg(
        long,
        env = "WALSHIP_LOG_FORMAT",
        value_enum,
        global = true,
        help_heading = "Global options"
    )]
    log_format: Option<LogFormat>,

    /// Log filter: a level (error, warn, info, debug, trace) or directives such as
    /// `info,walship_engine=debug`. Every line is scrubbed of secrets at every level.
    #[arg(
        long,
        env = "WALSHIP_LOG",
        default_value = "info",
        global = true,
        help_heading = "Global options"
    )]
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
    #[command(after_help = PUSH_HELP)]
    WalPush {
        /// Path of the file, as PostgreSQL's %p gives it.
        path: PathBuf,
        /// Give up (exit 1, PostgreSQL retries the file later) when the store has not
        /// confirmed the upload within this many seconds, the daemon's answer included.
        #[arg(long, env = "WALSHIP_PUSH_TIMEOUT_SECONDS", default_value_t = 60,
              value_parser = clap::value_parser!(u64).range(1..))]
        timeout_seconds: u64,
    },
    /// restore_command: restore one WAL file (`walship wal-fetch %f %p`).
    #[command(after_help = FETCH_HELP)]
    WalFetch {
        /// The WAL file name PostgreSQL asks for (%f).
        name: String,
        /// Where to write it (%p).
        dest: PathBuf,
        /// The whole restore's time budget in seconds, attempts in flight included: a
        /// failing or silent store is retried until it runs out, then wal-fetch exits
        /// 126. With 0, one attempt, bounded by the per-request deadlines.
        #[arg(long, env = "WALSHIP_FETCH_RETRY_SECONDS", default_value_t = 60)]
        retry_seconds: u64,
    },
    /// Run the daemon: watch pg_wal/archive_status, ship every ready file concurrently,
    /// answer wal-push over the socket, serve /metrics, /healthz and /readyz.
    #[command(after_help = DAEMON_HELP)]
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
    #[command(after_help = CHECK_HELP)]
    Check {
        /// Fail (exit 1) when the archive already holds WAL, as
        /// barman-cloud-check-wal-archive does before a new cluster's first archiving.
        #[arg(long)]
        expect_empty: bool,
        /// Count only WAL of this timeline and later (a promoted cluster continues the
        /// archive of its former primary on a new timeline).
        #[arg(long, value_name = "N")]
        timeline: Option<u32>,
        /// Give up (exit 1) when the store has not answered within this many seconds.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        timeout_seconds: u64,
    },
}

const PUSH_HELP: &str = "\
Example (postgresql.conf):
  archive_mode = on
  archive_command = 'walship --config /etc/walship/objectstore.yaml --secrets-dir /etc/walship/secrets wal-push %p'

Exit status (PostgreSQL's archive_command contract):
  0  durably stored, or an identical copy already was
  1  not archived: PostgreSQL keeps the file and retries (store failing or silent past
     --timeout-seconds, a file that is not WAL, a different copy already archived,
     a usage error in archive_command, a signal)
  2  bad configuration (manifest, secrets); PostgreSQL retries too
  Never above 125: PostgreSQL's archiver would exit.";

const FETCH_HELP: &str = "\
Example (postgresql.conf, or the recovery settings of a standby):
  restore_command = 'walship --config /etc/walship/objectstore.yaml --secrets-dir /etc/walship/secrets wal-fetch %f %p'

Exit status (PostgreSQL's restore_command contract):
  0    restored
  1    not in the archive (PostgreSQL then ends recovery or waits for streaming)
  126  anything else: bad configuration, a usage error in restore_command, the store
       failing or silent for --retry-seconds, a corrupt object. Above 125, so
       PostgreSQL stops recovery instead of ending it early at a gap.";

const DAEMON_HELP: &str = "\
Example (beside PostgreSQL, with the same manifest as archive_command):
  walship --config /etc/walship/objectstore.yaml --secrets-dir /etc/walship/secrets \\
    daemon --pgdata /var/lib/postgresql/data --journal-dir /var/lib/walship/journal

--journal-dir and --spool-dir must be outside the data directory and pg_wal.

Exit status: 0 after a clean shutdown (SIGTERM, SIGINT); 1 on any failure, an internal
error included, so that its supervisor restarts it; 2 for a bad configuration or usage.";

const CHECK_HELP: &str = "\
Example:
  walship --config /etc/walship/objectstore.yaml --secrets-dir /etc/walship/secrets check --expect-empty

Exit status:
  0  usable (and empty, with --expect-empty)
  1  store problem (unreachable, silent past --timeout-seconds, access denied, missing
     bucket), or not empty with --expect-empty
  2  bad configuration or usage";

const EXIT_RESTORE_FATAL: u8 = 126;

/// How long wal-push waits for the daemon; the daemon gives up a little earlier, so
/// its answer (not a timeout) normally arrives.
const PUSH_WAIT: Duration = Duration::from_secs(30);

/// How long wal-fetch waits for the daemon at most (and within --retry-seconds).
const FETCH_WAIT: Duration = Duration::from_secs(120);

/// The exit statuses one command owes its caller, for the failures every command can
/// have: a usage or configuration error, and an internal error (a panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contract {
    Push,
    Fetch,
    Check,
    Daemon,
}

impl Contract {
    fn of(command: &Command) -> Contract {
        match command {
            Command::WalPush { .. } => Contract::Push,
            Command::WalFetch { .. } => Contract::Fetch,
            Command::Check { .. } => Contract::Check,
            Command::Daemon { .. } => Contract::Daemon,
        }
    }

    /// From the raw arguments, for a command line clap refused: the first argument that
    /// names a subcommand.
    fn of_args(args: &[std::ffi::OsString]) -> Contract {
        args.iter()
            .skip(1)
            .find_map(|a| match a.to_str() {
                Some("wal-push") => Some(Contract::Push),
                Some("wal-fetch") => Some(Contract::Fetch),
                Some("daemon") => Some(Contract::Daemon),
                Some("check") => Some(Contract::Check),
                _ => None,
            })
            .unwrap_or(Contract::Check)
    }

    /// Bad configuration or usage: restore_command must stop recovery (126), not report
    /// the file missing; the others exit 2.
    fn config_failure(self) -> u8 {
        match self {
            Contract::Fetch => EXIT_RESTORE_FATAL,
            _ => 2,
        }
    }

    /// An internal error: archive_command retries (1), restore_command stops recovery
    /// (126), check reports failure (1), the daemon exits so its supervisor restarts it.
    fn internal_failure(self) -> u8 {
        match self {
            Contract::Fetch => EXIT_RESTORE_FATAL,
            _ => 1,
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e, Contract::of_args(&args)),
    };
    let contract = Contract::of(&cli.command);
    install_panic_backstop(contract);
    logging::register_environment_secrets();
    let format = cli.log_format.unwrap_or(match cli.command {
        Command::Daemon { .. } => LogFormat::Json,
        _ => LogFormat::Text,
    });
    match logging::filter(&cli.log_level) {
        Ok(filter) => logging::init(format, filter),
        Err(problem) => {
            eprintln!("walship: {problem}");
            return ExitCode::from(contract.config_failure());
        }
    }
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
            return ExitCode::from(contract.internal_failure());
        }
    };
    let code = runtime.block_on(run(cli));
    // A read blocked in the kernel (a hung filesystem) cannot be cancelled; waiting for
    // it would turn a signal or a timeout back into a hang.
    runtime.shutdown_background();
    code
}

/// A command line clap refused: help and version go to stdout with status 0; anything
/// else is a usage error, reported with the command's contract status (126 for
/// wal-fetch, whose caller would take clap's 2 as "not found").
fn usage_error(e: &clap::Error, contract: Contract) -> ExitCode {
    use clap::error::ErrorKind;
    let _ = e.print();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
        _ => {
            let code = contract.config_failure();
            eprintln!("walship: exiting with status {code}");
            ExitCode::from(code)
        }
    }
}

/// Whatever panics, in any thread or task, the process ends with the command's contract
/// status rather than Rust's 101 (which restore_command's caller would take as "not
/// found", ending recovery at a gap), and tokio cannot swallow a panicked task while the
/// daemon limps on. The message is scrubbed of secrets like every log line.
fn install_panic_backstop(contract: Contract) {
    let code = contract.internal_failure();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = format!(
            "walship: internal error (a bug; please report it){location}: {}; exiting with \
             status {code}\n",
            walship_config::redact::scrub(&payload)
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
        std::process::exit(i32::from(code));
    }));
}

/// Tests prove the backstop with a deliberate panic in a spawned task (debug builds
/// only; a release binary has no such switch).
#[cfg(debug_assertions)]
async fn injected_panic() {
    if std::env::var_os("WALSHIP_INJECT_PANIC").is_some() {
        let _ = tokio::spawn(async { panic!("injected by WALSHIP_INJECT_PANIC") }).await;
    }
}

#[cfg(not(debug_assertions))]
async fn injected_panic() {}

/// Tests stand in for a read stuck in the kernel (a hung network filesystem), which no
/// runtime can cancel, with a blocking task that never returns (debug builds only).
#[cfg(debug_assertions)]
async fn injected_stuck_read() {
    if std::env::var_os("WALSHIP_INJECT_STUCK_READ").is_some() {
        let _ = tokio::task::spawn_blocking(|| {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        })
        .await;
    }
}

#[cfg(not(debug_assertions))]
async fn injected_stuck_read() {}

async fn run(cli: Cli) -> ExitCode {
    injected_panic().await;
    let config_failure = Contract::of(&cli.command).config_failure();
    // Each command's whole time budget starts now, the daemon's answer included.
    let started = Instant::now();
    let mut direct = Direct::NoDaemon;
    if let Command::WalPush {
        path,
        timeout_seconds,
    } = &cli.command
    {
        let wait = PUSH_WAIT.min(Duration::from_secs(*timeout_seconds));
        match push_through_daemon(&cli.socket, path, wait).await {
            Ok(code) => return code,
            Err(why) => direct = why,
        }
    }
    if let Command::WalFetch {
        name,
        dest,
        retry_seconds,
    } = &cli.command
    {
        let wait = match retry_seconds {
            0 => FETCH_WAIT,
            n => FETCH_WAIT.min(Duration::from_secs(*n)),
        };
        if let Some(code) = fetch_through_daemon(&cli.socket, name, dest, wait).await {
            return code;
        }
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
            let config = walship_daemon::DaemonConfig {
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
        Command::WalPush {
            path,
            timeout_seconds,
        } => match push_unless_signalled(
            &archiver,
            &path,
            started + Duration::from_secs(timeout_seconds),
            timeout_seconds,
        )
        .await
        {
            Ok(PushOutcome::Uploaded { .. } | PushOutcome::AlreadyArchived { .. }) => {
                if direct == Direct::Silent
                    && let Some(name) = path.file_name().and_then(|n| n.to_str())
                {
                    walship_daemon::socket::record_fallback(&cli.socket, name);
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
            let deadline = started + Duration::from_secs(retry_seconds);
            let mut delay = Duration::from_millis(500);
            loop {
                // The budget bounds the attempt in flight too; with 0 the single attempt
                // is bounded by the stores' per-request deadlines alone.
                let attempt = archiver.fetch(&name, &dest);
                let result = if retry_seconds == 0 {
                    attempt.await
                } else {
                    match tokio::time::timeout_at(deadline.into(), attempt).await {
                        Ok(result) => result,
                        Err(_) => {
                            error!(
                                "{name}: no answer from {} within --retry-seconds \
                                 {retry_seconds}; exiting with status {EXIT_RESTORE_FATAL} so \
                                 that PostgreSQL stops recovery instead of treating {name} as \
                                 missing",
                                archiver.store().describe()
                            );
                            return ExitCode::from(EXIT_RESTORE_FATAL);
                        }
                    }
                };
                match result {
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
            timeout_seconds,
        } => match tokio::time::timeout(
            Duration::from_secs(timeout_seconds),
            archiver.check(timeline),
        )
        .await
        {
            Err(_) => {
                eprintln!(
                    "walship: {}: no answer within --timeout-seconds {timeout_seconds}; the \
                     store accepts connections but does not answer",
                    archiver.store().describe()
                );
                ExitCode::from(1)
            }
            Ok(Ok(report)) => {
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
            Ok(Err(e)) => {
                eprintln!("walship: {e}");
                ExitCode::from(1)
            }
        },
    }
}

/// archive_command must never die on a signal: PostgreSQL's archiver treats that as
/// fatal and restarts. A termination request instead abandons the upload (nothing was
/// acknowledged) and exits 1, so PostgreSQL retries the file later.
async fn push_unless_signalled(
    archiver: &walship_engine::Archiver,
    path: &std::path::Path,
    deadline: Instant,
    timeout_seconds: u64,
) -> Result<PushOutcome, String> {
    let bounded = async {
        injected_stuck_read().await;
        match tokio::time::timeout_at(deadline.into(), archiver.push(path)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "{} did not confirm the upload within --timeout-seconds {timeout_seconds}; \
                 PostgreSQL will retry the file",
                archiver.store().describe()
            )),
        }
    };
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot install signal handlers; a signal would end this upload abruptly");
        return bounded.await;
    };
    let interrupted =
        || Err("interrupted by a signal before the store confirmed the upload".to_owned());
    tokio::select! {
        result = bounded => result,
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
    wait: Duration,
) -> Result<ExitCode, Direct> {
    use walship_daemon::socket::{PushReply, ask_push};
    if !socket.exists() {
        return Err(Direct::NoDaemon);
    }
    // PostgreSQL runs archive_command in the data directory with a relative %p.
    let absolute = std::env::current_dir()
        .map_err(|_| Direct::Silent)?
        .join(path);
    match ask_push(socket, &absolute, wait).await {
        Ok(PushReply::Archived { .. }) => Ok(ExitCode::SUCCESS),
        Ok(PushReply::Failed(msg)) => {
            error!("not archived: {msg}");
            Ok(ExitCode::from(1))
        }
        Ok(PushReply::NotMine(msg)) => {
            info!("the daemon does not archive this file ({msg}); uploading directly");
            Err(Direct::NotMine)
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
    wait: Duration,
) -> Option<ExitCode> {
    use walship_daemon::socket::{FetchReply, ask_fetch};
    if !socket.exists() {
        return None;
    }
    let absolute = std::env::current_dir().ok()?.join(dest);
    match ask_fetch(socket, name, &absolute, wait).await {
        Ok(FetchReply::Restored { .. }) => Some(ExitCode::SUCCESS),
        Ok(FetchReply::NotFound) => Some(ExitCode::from(1)),
        Ok(FetchReply::Failed(msg)) => {
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
