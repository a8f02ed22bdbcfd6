//! `walship`: the command line. Argument parsing, logging set-up, wiring of the
//! library crates and exit statuses; no archiving logic lives here. What `wal-push`,
//! `wal-fetch` and `check` do (the daemon first, then the archiver directly) is
//! `walship_daemon::client`; the daemon is `walship_daemon`.
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
//! stderr, which PostgreSQL copies into its own log for archive and restore commands),
//! `indicatif` (the progress bar of `backup`, `restore` and `backup-delete` on a
//! terminal; see `progress.rs`), `tonic` (the async-trait attribute `cnpg.rs` implements
//! walship-cnpg's `Sidecar` with).

mod backups;
mod cli;
mod cnpg;
mod daemon;
mod kubeconf;
mod logging;
mod progress;
mod stores;
mod wiring;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing::error;
use walship_store::RetryPolicy;

use cli::{Cli, CnpgCommand, Command, DaemonArgs, Healthcheck, LogFormat};
use walship_daemon::client::{
    self, CheckResult, Client, EXIT_RESTORE_FATAL, FetchResult, PushResult,
};

/// The exit statuses one command owes its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contract {
    Push,
    Fetch,
    Check,
    Daemon,
    /// `backup`, `backup-list`, `backup-show`: barman-cloud's statuses.
    Catalog,
}

/// How a command ended, whichever it was.
#[derive(Debug)]
enum Ending {
    Pushed(PushResult),
    Fetched(FetchResult),
    Checked(CheckResult),
    Cataloged(backups::Outcome),
    /// The daemon stopped cleanly (SIGTERM, SIGINT).
    DaemonStopped,
    /// The daemon stopped on a failure.
    DaemonFailed,
    /// A bad configuration or usage.
    BadConfig,
    /// An internal error: a panic, or no runtime to run on.
    Internal,
}

impl Contract {
    fn of(command: &Command) -> Contract {
        match command {
            Command::WalPush { .. } => Contract::Push,
            Command::WalFetch { .. } => Contract::Fetch,
            Command::Check { .. } => Contract::Check,
            Command::Daemon(_)
            | Command::Cnpg(CnpgCommand::Instance(_) | CnpgCommand::Restore(_)) => Contract::Daemon,
            Command::Cnpg(CnpgCommand::Healthcheck(_)) | Command::CopyTo { .. } => Contract::Check,
            Command::Backup(_)
            | Command::BackupList { .. }
            | Command::BackupShow { .. }
            | Command::BackupDelete { .. }
            | Command::BackupKeep { .. }
            | Command::Restore(_) => Contract::Catalog,
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
                Some("daemon" | "cnpg") => Some(Contract::Daemon),
                Some("check" | "copy-to") => Some(Contract::Check),
                Some(
                    "backup" | "backup-list" | "backup-show" | "backup-delete" | "backup-keep"
                    | "restore",
                ) => Some(Contract::Catalog),
                _ => None,
            })
            .unwrap_or(Contract::Check)
    }

    /// The one place exit statuses are decided (the crate documentation has the
    /// contracts).
    fn exit_status(self, ending: &Ending) -> u8 {
        match ending {
            Ending::Pushed(PushResult::ArchivedByDaemon | PushResult::ArchivedDirectly(_)) => 0,
            Ending::Pushed(PushResult::NotArchived { .. }) => 1,
            Ending::Fetched(FetchResult::RestoredByDaemon | FetchResult::RestoredDirectly) => 0,
            Ending::Fetched(FetchResult::NotFound) => 1,
            Ending::Fetched(FetchResult::Fatal { .. }) => EXIT_RESTORE_FATAL,
            Ending::Checked(checked) if checked.usable => 0,
            Ending::Checked(_) => 1,
            Ending::Cataloged(backups::Outcome::Done) => 0,
            Ending::Cataloged(backups::Outcome::Failed) => 1,
            Ending::Cataloged(backups::Outcome::Unreachable) => 2,
            Ending::Cataloged(backups::Outcome::General) => 4,
            Ending::DaemonStopped => 0,
            Ending::DaemonFailed => 1,
            // restore_command must stop recovery (126), not report the file missing.
            Ending::BadConfig if self == Contract::Fetch => EXIT_RESTORE_FATAL,
            Ending::BadConfig if self == Contract::Catalog => 3,
            Ending::BadConfig => 2,
            // archive_command retries (1), restore_command stops recovery (126), check
            // reports failure (1), the daemon exits so its supervisor restarts it.
            Ending::Internal if self == Contract::Fetch => EXIT_RESTORE_FATAL,
            Ending::Internal if self == Contract::Catalog => 4,
            Ending::Internal => 1,
        }
    }

    fn exit(self, ending: &Ending) -> ExitCode {
        ExitCode::from(self.exit_status(ending))
    }
}

/// Invoked through a link named `manager` (the name the plugin's image gives its
/// binary), `manager instance` and `manager healthcheck unix` are `walship cnpg …`.
fn as_walship(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let invoked_as_manager = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|name| name == "manager");
    if invoked_as_manager {
        args.insert(1, "cnpg".into());
    }
    args
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = as_walship(std::env::args_os().collect());
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e, Contract::of_args(&args)),
    };
    let contract = Contract::of(&cli.command);
    install_panic_backstop(contract);
    logging::register_environment_secrets();
    let format = cli.log_format.unwrap_or(match cli.command {
        Command::Daemon(_) | Command::Cnpg(CnpgCommand::Instance(_) | CnpgCommand::Restore(_)) => {
            LogFormat::Json
        }
        _ => LogFormat::Text,
    });
    match logging::filter(&cli.log_level) {
        Ok(filter) => logging::init(format, filter),
        Err(problem) => {
            eprintln!("walship: {problem}");
            return contract.exit(&Ending::BadConfig);
        }
    }
    // archive_command and restore_command run once per segment: a single-threaded
    // runtime starts no worker threads, which is most of what PostgreSQL waits for
    // when the daemon already shipped the segment. Compression still runs on the
    // blocking pool. The daemon serves many uploads at once.
    let mut builder = match cli.command {
        // A backup compresses on one thread and uploads (and hashes parts) on others.
        Command::Daemon(_)
        | Command::Cnpg(CnpgCommand::Instance(_) | CnpgCommand::Restore(_))
        | Command::Backup(_)
        | Command::Restore(_) => {
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
            return contract.exit(&Ending::Internal);
        }
    };
    let ending = runtime.block_on(run(cli));
    // A read blocked in the kernel (a hung filesystem) cannot be cancelled; waiting for
    // it would turn a signal or a timeout back into a hang.
    runtime.shutdown_background();
    contract.exit(&ending)
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
            let code = contract.exit_status(&Ending::BadConfig);
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
    let code = contract.exit_status(&Ending::Internal);
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
            walship_secret::redact::scrub(&payload)
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

async fn run(cli: Cli) -> Ending {
    injected_panic().await;
    // The archiver of wal-push and wal-fetch, wired only when the daemon could not
    // answer for them (a future does nothing until awaited), with the command's one
    // retry policy.
    let files = wiring::Source::files(&cli.config, &cli.secrets_dir);
    let wire = |retry: RetryPolicy| async {
        wiring::archiver(&files, cli.server_name.as_deref(), None, retry)
            .await
            .map(|wired| wired.archiver)
    };
    let ended = match &cli.command {
        Command::WalPush {
            path,
            timeout_seconds,
        } => Client::new(&cli.socket)
            .push(
                path,
                Duration::from_secs(*timeout_seconds),
                wire(RetryPolicy::default()),
            )
            .await
            .map(Ending::Pushed),
        Command::WalFetch {
            name,
            dest,
            retry_seconds,
        } => {
            // The store retries each request for as long as --retry-seconds allows; with
            // zero, as the other commands do.
            let retry = wiring::retry_within(*retry_seconds);
            Client::new(&cli.socket)
                .fetch(name, dest, Duration::from_secs(*retry_seconds), wire(retry))
                .await
                .map(Ending::Fetched)
        }
        Command::Check {
            expect_empty,
            timeline,
            timeout_seconds,
        } => match wire(RetryPolicy::default()).await {
            Ok(archiver) => {
                let timeout = Duration::from_secs(*timeout_seconds);
                let checked = client::check(&archiver, *expect_empty, *timeline, timeout).await;
                if let Some(report) = &checked.report {
                    println!("{report}");
                }
                if let Some(problem) = &checked.problem {
                    eprintln!("walship: {problem}");
                }
                Ok(Ending::Checked(checked))
            }
            Err(e) => Err(e),
        },
        Command::Daemon(args) => {
            run_daemon(&cli, args, files.clone(), cli.server_name.clone(), None).await
        }
        Command::Cnpg(CnpgCommand::Instance(args)) => cnpg_instance(&cli, args).await,
        Command::Cnpg(CnpgCommand::Restore(args)) => cnpg::run_restore_job(&cli, args).await,
        Command::Cnpg(CnpgCommand::Healthcheck(Healthcheck::Unix { plugins })) => {
            let socket = plugins.plugins_dir.join(walship_cnpg::PLUGIN_NAME);
            let answer = walship_cnpg::client::healthcheck(&socket, Duration::from_secs(10)).await;
            Ok(Ending::Checked(CheckResult {
                usable: answer.is_ok(),
                report: None,
                problem: answer
                    .err()
                    .inspect(|problem| eprintln!("walship: {problem}")),
            }))
        }
        Command::CopyTo { dir } => Ok(Ending::Checked(copy_to(dir))),
        Command::Backup(args) => backups::backup(&cli, args).await.map(Ending::Cataloged),
        Command::BackupList { format } => backups::list(&cli, *format).await.map(Ending::Cataloged),
        Command::BackupShow { backup, format } => backups::show(&cli, backup, *format)
            .await
            .map(Ending::Cataloged),
        Command::Restore(args) => backups::restore(&cli, args).await.map(Ending::Cataloged),
        Command::BackupDelete {
            backup_id,
            retention_policy,
            minimum_redundancy,
            dry_run,
        } => backups::delete(
            &cli,
            backup_id.as_deref(),
            retention_policy.as_deref(),
            *minimum_redundancy,
            *dry_run,
        )
        .await
        .map(Ending::Cataloged),
        Command::BackupKeep {
            backup,
            target,
            release,
            status,
        } => backups::keep(&cli, backup, *target, *release, *status)
            .await
            .map(Ending::Cataloged),
    };
    ended.unwrap_or_else(|e| {
        // Printed plainly: a list of config errors reads best one per line.
        eprintln!("walship: {e:#}");
        Ending::BadConfig
    })
}

/// `walship copy-to DIR`: this executable copied to `DIR/walship`, written under another
/// name, flushed and renamed, so the destination is whole or absent.
fn copy_to(dir: &std::path::Path) -> CheckResult {
    use std::os::unix::fs::PermissionsExt;
    let dest = dir.join("walship");
    let partial = dir.join(".walship.partial");
    let copied = std::env::current_exe()
        .map_err(|e| format!("cannot find this executable: {e}"))
        .and_then(|exe| {
            let step = |what: &str, e: std::io::Error| {
                format!(
                    "copying {} to {}: {what}: {e}",
                    exe.display(),
                    dest.display()
                )
            };
            std::fs::copy(&exe, &partial).map_err(|e| step("writing", e))?;
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| step("making it executable", e))?;
            std::fs::File::open(&partial)
                .and_then(|f| f.sync_all())
                .map_err(|e| step("flushing", e))?;
            std::fs::rename(&partial, &dest).map_err(|e| step("renaming", e))?;
            Ok(format!("copied {} to {}", exe.display(), dest.display()))
        });
    match copied {
        Ok(report) => {
            println!("{report}");
            CheckResult {
                usable: true,
                report: None,
                problem: None,
            }
        }
        Err(problem) => {
            let _ = std::fs::remove_file(&partial);
            eprintln!("walship: {problem}");
            CheckResult {
                usable: false,
                report: None,
                problem: Some(problem),
            }
        }
    }
}

/// `walship daemon`: its configuration from the arguments, then [`daemon::run`] until
/// shutdown. `Err` is a bad configuration.
async fn run_daemon(
    cli: &Cli,
    args: &DaemonArgs,
    source: wiring::Source,
    server_name: Option<String>,
    plugin: Option<cnpg::Plugin>,
) -> anyhow::Result<Ending> {
    let DaemonArgs {
        pgdata,
        journal_dir,
        spool_dir,
        prefetch,
        prefetch_max_mib,
        metrics_addr,
        shutdown_grace_seconds,
        unready_after_seconds,
        wait_for_pgdata,
        rescan_seconds,
        retention_interval_seconds,
        retention_policy,
    } = args;
    // Only the daemon publishes metrics; it counts credential loads from the start.
    let metrics = std::sync::Arc::new(walship_metrics::Metrics::new());
    let observer = Some(daemon::credential_observer(&metrics));
    let wired = match (
        wiring::archiver(
            &source,
            server_name.as_deref(),
            observer,
            RetryPolicy::default(),
        )
        .await,
        &source,
    ) {
        (Ok(wired), _) => wired,
        // Under CloudNativePG a configuration that cannot be read yet is no reason to
        // stop (the pod would restart in a loop): the sidecar serves, its store refuses
        // every request saying why, and the watch's reload brings the real one.
        (Err(e), wiring::Source::Kube(_)) => wiring::Wired {
            archiver: walship_engine::Archiver::new(
                std::sync::Arc::new(walship_store::Unconfigured::new(format!("{e:#}"))),
                walship_wal::Layout::new("", "unconfigured"),
                walship_engine::ArchiverSettings::default(),
            ),
            max_parallel: 1,
        },
        (Err(e), wiring::Source::Files { .. }) => return Err(e),
    };
    let beside_pgdata = |name: &str| {
        pgdata
            .parent()
            .unwrap_or(std::path::Path::new("/"))
            .join(name)
    };
    let config = walship_daemon::DaemonConfig {
        pgdata: pgdata.clone(),
        journal_dir: journal_dir
            .clone()
            .unwrap_or_else(|| beside_pgdata("walship-journal")),
        socket_path: Some(cli.socket.clone()),
        max_parallel: wired.max_parallel,
        rescan_interval: Duration::from_secs((*rescan_seconds).max(1)),
        push_wait: client::DAEMON_PUSH_WAIT,
        shutdown_grace: Duration::from_secs(*shutdown_grace_seconds),
        spool_dir: spool_dir
            .clone()
            .unwrap_or_else(|| beside_pgdata("walship-spool")),
        prefetch_window: *prefetch,
        prefetch_max_bytes: prefetch_max_mib.saturating_mul(1 << 20),
    };
    let sources = daemon::Sources {
        source,
        server_name: server_name.clone(),
    };
    let retention = daemon::Retention {
        interval_seconds: *retention_interval_seconds,
        policy: *retention_policy,
    };
    let stopped = daemon::run(
        config,
        wired.archiver,
        sources,
        retention,
        metrics,
        daemon::Serving {
            metrics_addr: *metrics_addr,
            unready_after_seconds: *unready_after_seconds,
            wait_for_pgdata: *wait_for_pgdata,
            plugin,
        },
    )
    .await;
    Ok(match stopped {
        Ok(()) => Ending::DaemonStopped,
        Err(e) => {
            error!("{e:#}");
            Ending::DaemonFailed
        }
    })
}

/// `walship cnpg instance`: the daemon plus the plugin's socket, configured from the
/// Kubernetes API (the pod's Cluster, its ObjectStore and Secrets), or from files with
/// `--config-from files`.
async fn cnpg_instance(cli: &Cli, args: &cli::CnpgInstanceArgs) -> anyhow::Result<Ending> {
    let mut daemon = args.daemon.clone();
    if daemon.spool_dir.is_none() {
        daemon.spool_dir = std::env::var_os("SPOOL_DIRECTORY").map(Into::into);
    }
    let socket = args.plugins.plugins_dir.join(walship_cnpg::PLUGIN_NAME);
    match args.from.config_from {
        cli::ConfigFrom::Files => {
            // The Cluster's name is the server name unless one is given, as the plugin
            // defaults it.
            let server_name = cli.server_name.clone().or(args.cluster_name.clone());
            let doc = walship_config::load(&cli.config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let server = doc
                .server_name(server_name.as_deref())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let plugin = cnpg::Plugin {
                socket,
                pod: args.pod_name.clone(),
                store: doc.metadata.name.clone(),
                server,
            };
            let source = wiring::Source::files(&cli.config, &cli.secrets_dir);
            run_daemon(cli, &daemon, source, server_name, Some(plugin)).await
        }
        cli::ConfigFrom::Kubernetes => {
            let Some(cluster) = &args.cluster_name else {
                anyhow::bail!(
                    "--config-from kubernetes needs the pod's Cluster: set CLUSTER_NAME \
                     (CloudNativePG sets it), or use --config-from files"
                );
            };
            let kube = connect_kube(&args.from).await?;
            let stop_watching = tokio_util::sync::CancellationToken::new();
            let live = kubeconf::Live::start(
                kube,
                kubeconf::Wanted::Pod {
                    cluster: cluster.clone(),
                    pod: args.pod_name.clone(),
                    server_override: cli.server_name.clone(),
                },
                stop_watching.clone(),
            )
            .await;
            let plugin = cnpg::Plugin {
                socket,
                pod: args.pod_name.clone(),
                store: String::new(),
                server: String::new(),
            };
            let ended = run_daemon(
                cli,
                &daemon,
                wiring::Source::Kube(std::sync::Arc::new(live)),
                None,
                Some(plugin),
            )
            .await;
            stop_watching.cancel();
            ended
        }
    }
}

/// The Kubernetes API client of a CloudNativePG sidecar, for the pod's namespace.
pub(crate) async fn connect_kube(from: &cli::ConfigSource) -> anyhow::Result<walship_kube::Kube> {
    let Some(namespace) = &from.namespace else {
        anyhow::bail!(
            "--config-from kubernetes needs the pod's namespace: set NAMESPACE \
             (CloudNativePG sets it), or use --config-from files"
        );
    };
    Ok(walship_kube::Kube::connect(namespace, &from.cnpg_group, &from.cnpg_version).await?)
}
