//! The command line: every option, its environment variable and default, and the help
//! text with each command's exit-status contract.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "walship", version, about, long_about = None)]
pub(crate) struct Cli {
    /// The ObjectStore manifest (apiVersion barmancloud.cnpg.io/v1).
    #[arg(
        long,
        env = "WALSHIP_CONFIG",
        default_value = "/etc/walship/objectstore.yaml",
        global = true,
        help_heading = "Global options"
    )]
    pub(crate) config: PathBuf,

    /// Where the Secrets the manifest names are mounted: <dir>/<secret>/<key>.
    #[arg(
        long,
        env = "WALSHIP_SECRETS_DIR",
        default_value = "/etc/walship/secrets",
        global = true,
        help_heading = "Global options"
    )]
    pub(crate) secrets_dir: PathBuf,

    /// The server name in the archive (barman's `serverName`; the cluster name under
    /// CloudNativePG). Overrides spec.configuration.serverName.
    #[arg(
        long,
        env = "WALSHIP_SERVER_NAME",
        global = true,
        help_heading = "Global options"
    )]
    pub(crate) server_name: Option<String>,

    /// The daemon's Unix socket: `daemon` listens on it, `wal-push` asks it first.
    #[arg(
        long,
        env = "WALSHIP_SOCKET",
        default_value = "/run/walship/walship.sock",
        global = true,
        help_heading = "Global options"
    )]
    pub(crate) socket: PathBuf,

    /// Log line format [default: json for `daemon`, text otherwise].
    #[arg(
        long,
        env = "WALSHIP_LOG_FORMAT",
        value_enum,
        global = true,
        help_heading = "Global options"
    )]
    pub(crate) log_format: Option<LogFormat>,

    /// Log filter: a level (error, warn, info, debug, trace) or directives such as
    /// `info,walship_engine=debug`. Every line is scrubbed of secrets at every level.
    #[arg(
        long,
        env = "WALSHIP_LOG",
        default_value = "info",
        global = true,
        help_heading = "Global options"
    )]
    pub(crate) log_level: String,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    Daemon(DaemonArgs),
    /// Take an online base backup of the running PostgreSQL (its data directory read
    /// locally) into the archive, in barman-cloud-backup's layout.
    #[command(after_help = BACKUP_HELP)]
    Backup(BackupArgs),
    /// List the server's base backups, as barman-cloud-backup-list does.
    #[command(after_help = LIST_HELP)]
    BackupList {
        #[arg(long, value_enum, default_value = "console")]
        format: OutputFormat,
    },
    /// Show one base backup, as barman-cloud-backup-show does.
    #[command(after_help = LIST_HELP)]
    BackupShow {
        /// A backup id, a backup name, `latest` (or `last`), `oldest` (or `first`), or
        /// `last-failed`.
        backup: String,
        #[arg(long, value_enum, default_value = "console")]
        format: OutputFormat,
    },
    /// Delete base backups and the WAL only they needed, as barman-cloud-backup-delete
    /// does: one backup (-b) or what a retention policy makes obsolete.
    #[command(after_help = DELETE_HELP)]
    BackupDelete {
        /// The backup to delete: an id or a name.
        #[arg(long, short = 'b', conflicts_with = "retention_policy")]
        backup_id: Option<String>,
        /// `RECOVERY WINDOW OF <n> DAYS|WEEKS|MONTHS`, `REDUNDANCY <n>`, or the
        /// plugin's `<n>d|w|m` [default: the manifest's spec.retentionPolicy].
        #[arg(long, short = 'r')]
        retention_policy: Option<String>,
        /// Never leave fewer than this many backups.
        #[arg(long, short = 'm', default_value_t = 0)]
        minimum_redundancy: u32,
        /// Print what would be deleted (backup ids and WAL names), delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Keep a backup past every retention policy, release it, or show its keep.
    #[command(after_help = LIST_HELP)]
    BackupKeep {
        /// An id, a name, `latest` or `oldest`.
        backup: String,
        /// `full` keeps all WAL after it too; `standalone` only the WAL it needs.
        #[arg(long, value_enum, conflicts_with_all = ["release", "status"])]
        target: Option<KeepTargetArg>,
        /// Remove the keep.
        #[arg(long, conflicts_with = "status")]
        release: bool,
        /// Print `Keep: nokeep|standalone|full`.
        #[arg(long)]
        status: bool,
    },
    /// Restore a base backup into an empty directory, as barman-cloud-restore does; with
    /// a --target-*, also prepare a point-in-time recovery through `walship wal-fetch`.
    #[command(after_help = RESTORE_HELP)]
    Restore(RestoreArgs),
    /// CloudNativePG: serve as the Barman Cloud plugin's instance sidecar (CNPG-I on
    /// the plugin's Unix socket), or probe it. Also reached as `manager <command>`
    /// through a link named `manager`, as the plugin's image offers it.
    #[command(subcommand, after_help = CNPG_HELP)]
    Cnpg(CnpgCommand),
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
    /// Copy this binary to <DIR>/walship: an init container's way to give a PostgreSQL
    /// container `archive_command` and `restore_command` from walship's image, which
    /// has no shell to copy with.
    #[command(after_help = COPY_HELP)]
    CopyTo {
        /// A directory shared with the PostgreSQL container (an emptyDir volume).
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    Console,
    Json,
}

/// A base backup's compression (`data.compression` in the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackupCompressionArg {
    None,
    Gzip,
    Bzip2,
    Snappy,
    Lz4,
}

// `backup`'s options.
#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    /// A name for the backup, usable wherever an id is (barman's --name).
    #[arg(long, short = 'n')]
    pub(crate) name: Option<String>,
    /// Ask PostgreSQL for an immediate checkpoint instead of a spread one
    /// [default: data.immediateCheckpoint].
    #[arg(long)]
    pub(crate) immediate_checkpoint: bool,
    /// Parts uploaded at once [default: data.jobs, else 2].
    #[arg(long, short = 'J', value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) jobs: Option<u32>,
    /// Compression of the tars [default: data.compression, else none].
    #[arg(long, value_enum)]
    pub(crate) compression: Option<BackupCompressionArg>,
    /// A tar is continued in a new object (data_0001.tar, …) once it holds this much:
    /// a number of bytes, or with kB, MB, GB or TB (powers of 1024, as barman reads them)
    /// [default: --max-archive-size in data.additionalCommandArgs, else 100GB].
    #[arg(long, short = 'S', value_parser = walship_config::parse_size)]
    pub(crate) max_archive_size: Option<u64>,
    /// PostgreSQL's host or socket directory [default: PGHOST, else /var/run/postgresql].
    #[arg(long)]
    pub(crate) host: Option<String>,
    /// [default: PGPORT, else 5432]
    #[arg(long)]
    pub(crate) port: Option<u16>,
    /// [default: PGUSER, else postgres]
    #[arg(long, short = 'U')]
    pub(crate) user: Option<String>,
    /// [default: PGDATABASE, else postgres]
    #[arg(long, short = 'd')]
    pub(crate) dbname: Option<String>,
    /// While the backup waits for PostgreSQL to archive its last WAL, give up once
    /// archiving has failed, with no success, for this many seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) archive_stall_seconds: u64,
    /// How long each request to the store is tried again while it fails (a 503, a
    /// reset, a store down): a store failing for longer fails the backup. With 0, a
    /// request is retried only within its own deadline.
    #[arg(long, env = "WALSHIP_BACKUP_RETRY_SECONDS", default_value_t = LONG_OPERATION_RETRY_SECONDS)]
    pub(crate) retry_seconds: u64,
}

/// How long a backup's or a restore's requests are retried by default: a store's
/// minute of trouble must not throw away hours of copying.
pub(crate) const LONG_OPERATION_RETRY_SECONDS: u64 = 60;

// `restore`'s options.
#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// A backup id, a backup name, `latest` (or `last`), or `oldest` (or `first`).
    pub(crate) backup: String,
    /// The data directory to restore into: missing or empty.
    pub(crate) dest: PathBuf,
    /// Restore the tablespace NAME into LOCATION (missing or empty) instead of its
    /// recorded location; repeat for several.
    #[arg(long = "tablespace", value_name = "NAME:LOCATION", value_parser = parse_tablespace)]
    pub(crate) tablespaces: Vec<(String, PathBuf)>,
    /// Recover up to this time (any form PostgreSQL's recovery_target_time accepts,
    /// e.g. 2026-11-30T01:19:58.9+00:00).
    #[arg(long, group = "target")]
    pub(crate) target_time: Option<String>,
    /// Recover up to this LSN.
    #[arg(long, group = "target")]
    pub(crate) target_lsn: Option<String>,
    /// Recover up to this restore point.
    #[arg(long, group = "target")]
    pub(crate) target_name: Option<String>,
    /// Recover only until the backup is consistent (recovery_target = 'immediate').
    #[arg(long, group = "target")]
    pub(crate) target_immediate: bool,
    /// The timeline to recover along: current (the backup's), latest, or a timeline id
    /// [default: PostgreSQL's, latest].
    #[arg(long, requires = "target", value_parser = walship_backup::restore::Timeline::parse)]
    pub(crate) target_tli: Option<walship_backup::restore::Timeline>,
    /// What PostgreSQL does at the target.
    #[arg(long, value_enum, default_value = "promote", requires = "target")]
    pub(crate) target_action: TargetActionArg,
    /// Ranged reads (16 MiB each) in flight at once, one large tar or many.
    #[arg(long, short = 'J', default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) jobs: u32,
    /// How long each request to the store is tried again while it fails: a store
    /// failing for longer fails the restore. With 0, a request is retried only within
    /// its own deadline.
    #[arg(long, env = "WALSHIP_BACKUP_RETRY_SECONDS", default_value_t = LONG_OPERATION_RETRY_SECONDS)]
    pub(crate) retry_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum KeepTargetArg {
    Full,
    Standalone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TargetActionArg {
    Pause,
    Promote,
    Shutdown,
}

fn parse_tablespace(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once(':') {
        Some((name, location)) if !name.is_empty() && location.starts_with('/') => {
            Ok((name.to_owned(), PathBuf::from(location)))
        }
        _ => Err(format!(
            "{text:?}: expected NAME:LOCATION with an absolute LOCATION"
        )),
    }
}

/// `100GB`, `5MB`, `1024`: barman's size syntax (binary multiples).
#[derive(Debug, Subcommand)]
pub(crate) enum CnpgCommand {
    /// The sidecar: the daemon (everything `walship daemon` does) plus the plugin's
    /// identity, WAL, backup and metrics services on
    /// <plugins-dir>/barman-cloud.cloudnative-pg.io.
    Instance(Box<CnpgInstanceArgs>),
    /// The restore job's sidecar: restores the backup a recovering Cluster's target
    /// calls for into PGDATA (RestoreJobHooks), then serves the WAL recovery asks for.
    Restore(Box<CnpgRestoreArgs>),
    /// The sidecar's startup probe.
    #[command(subcommand)]
    Healthcheck(Healthcheck),
}

#[derive(Debug, Args)]
pub(crate) struct CnpgRestoreArgs {
    #[command(flatten)]
    pub(crate) plugins: PluginsDir,
    /// The data directory to restore into.
    #[arg(long, env = "PGDATA")]
    pub(crate) pgdata: PathBuf,
    /// This pod's name.
    #[arg(long, env = "POD_NAME")]
    pub(crate) pod_name: String,
    /// The Cluster's name (the server name unless --server-name says otherwise).
    #[arg(long, env = "CLUSTER_NAME")]
    pub(crate) cluster_name: Option<String>,
    /// Where pg_wal goes when the Cluster has `spec.walStorage` (pg_wal becomes a link
    /// to it, as the plugin makes it).
    #[arg(long, default_value = "/var/lib/postgresql/wal/pg_wal")]
    pub(crate) wal_dir: PathBuf,
    /// The restore_command handed back for recovery: CloudNativePG's manager, which
    /// calls this sidecar's WAL service.
    #[arg(
        long,
        env = "WALSHIP_CNPG_RESTORE_COMMAND",
        default_value = "/controller/manager wal-restore --log-destination /controller/log/postgres.json %f %p"
    )]
    pub(crate) restore_command: String,
    /// Objects downloaded at once.
    #[arg(long, default_value_t = 4)]
    pub(crate) jobs: u32,
    /// Where recovery's WAL is read ahead (a volume: the root filesystem is read-only);
    /// without one, each file is fetched when asked.
    #[arg(long, env = "SPOOL_DIRECTORY")]
    pub(crate) spool_dir: Option<PathBuf>,
    /// Segments read ahead of recovery's requests (0 disables); also bounded by
    /// --prefetch-max-mib.
    #[arg(long, default_value_t = 64)]
    pub(crate) prefetch: usize,
    /// Upper bound on WAL held read ahead, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub(crate) prefetch_max_mib: u64,
    #[command(flatten)]
    pub(crate) from: ConfigSource,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Healthcheck {
    /// Exit 0 when the plugin's socket answers grpc.health.v1 with SERVING, else 1.
    Unix {
        #[command(flatten)]
        plugins: PluginsDir,
    },
}

#[derive(Debug, Args)]
pub(crate) struct PluginsDir {
    /// The directory CloudNativePG looks for plugin sockets in.
    #[arg(long, env = "WALSHIP_PLUGINS_DIR", default_value = "/plugins")]
    pub(crate) plugins_dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct CnpgInstanceArgs {
    #[command(flatten)]
    pub(crate) plugins: PluginsDir,
    /// This pod's name: a backup's instance id, and the pod's place in the Cluster.
    #[arg(long, env = "POD_NAME")]
    pub(crate) pod_name: String,
    /// The Cluster's name: the Cluster read from the Kubernetes API, and the server
    /// name in the archive unless --server-name (or, with --config-from files, the
    /// manifest's serverName) says otherwise.
    #[arg(long, env = "CLUSTER_NAME")]
    pub(crate) cluster_name: Option<String>,
    #[command(flatten)]
    pub(crate) from: ConfigSource,
    #[command(flatten)]
    pub(crate) daemon: DaemonArgs,
}

/// Where the CloudNativePG sidecars read their configuration.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConfigSource {
    /// Where the ObjectStore and its Secrets come from: the Kubernetes API (in-cluster
    /// configuration, or KUBECONFIG when set), as the plugin's sidecar reads them, or
    /// --config and --secrets-dir.
    #[arg(long, env = "WALSHIP_CONFIG_FROM", value_enum, default_value_t = ConfigFrom::Kubernetes)]
    pub(crate) config_from: ConfigFrom,
    /// The pod's namespace, where the Cluster, the ObjectStore and its Secrets are read.
    #[arg(long, env = "NAMESPACE")]
    pub(crate) namespace: Option<String>,
    /// The Cluster's API group (CloudNativePG's, or a custom build's).
    #[arg(long, env = "CUSTOM_CNPG_GROUP", default_value = walship_kube::CNPG_GROUP)]
    pub(crate) cnpg_group: String,
    /// The Cluster's API version.
    #[arg(long, env = "CUSTOM_CNPG_VERSION", default_value = walship_kube::CNPG_VERSION)]
    pub(crate) cnpg_version: String,
}

/// Where `cnpg instance` and `cnpg restore` read their configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ConfigFrom {
    Kubernetes,
    Files,
}

// The daemon's options (a struct of their own, so that one function can take them).
#[derive(Debug, Clone, Args)]
pub(crate) struct DaemonArgs {
    /// PostgreSQL's data directory.
    #[arg(long, env = "PGDATA")]
    pub(crate) pgdata: PathBuf,
    /// Where acknowledged uploads are journaled; must be outside the data directory
    /// [default: <pgdata>/../walship-journal].
    #[arg(long, env = "WALSHIP_JOURNAL_DIR")]
    pub(crate) journal_dir: Option<PathBuf>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "WALSHIP_METRICS_ADDR", default_value = "127.0.0.1:9188")]
    pub(crate) metrics_addr: std::net::SocketAddr,
    /// Wait for <pgdata>/pg_wal/archive_status to appear instead of failing: for a
    /// daemon started before PostgreSQL's first initdb (a native sidecar beside an
    /// empty volume). /readyz fails while it waits.
    #[arg(long, env = "WALSHIP_WAIT_FOR_PGDATA")]
    pub(crate) wait_for_pgdata: bool,
    /// Where restore prefetches are spooled: same filesystem as pg_wal, outside it
    /// [default: SPOOL_DIRECTORY under CloudNativePG, else <pgdata>/../walship-spool].
    #[arg(long, env = "WALSHIP_SPOOL_DIR")]
    pub(crate) spool_dir: Option<PathBuf>,
    /// Segments to prefetch ahead of PostgreSQL's restore requests (0 disables);
    /// also bounded by --prefetch-max-mib.
    #[arg(long, default_value_t = 64)]
    pub(crate) prefetch: usize,
    /// Upper bound on prefetched data held in the spool, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub(crate) prefetch_max_mib: u64,
    /// Seconds to let in-flight uploads finish after SIGTERM.
    #[arg(long, default_value_t = 30)]
    pub(crate) shutdown_grace_seconds: u64,
    /// /readyz fails when uploads have failed continuously for this many seconds.
    #[arg(long, default_value_t = 60)]
    pub(crate) unready_after_seconds: u64,
    /// Full rescan of archive_status every this many seconds (a safety net for
    /// missed notifications).
    #[arg(long, default_value_t = 5)]
    pub(crate) rescan_seconds: u64,
    /// Seconds between rounds of the retention loop (the policy applied on the primary,
    /// the backup metrics refreshed); 0 turns it off [default: the manifest's
    /// spec.instanceSidecarConfiguration.retentionPolicyIntervalSeconds, else 1800].
    #[arg(long)]
    pub(crate) retention_interval_seconds: Option<u64>,
    /// The retention policy the loop applies: `RECOVERY WINDOW OF <n> DAYS|WEEKS|MONTHS`,
    /// `REDUNDANCY <n>`, or the plugin's `<n>d|w|m` [default: the manifest's
    /// spec.retentionPolicy; none, nothing deleted].
    #[arg(long, value_parser = parse_policy)]
    pub(crate) retention_policy: Option<walship_backup::retention::Policy>,
}

fn parse_policy(text: &str) -> Result<walship_backup::retention::Policy, String> {
    walship_backup::retention::Policy::parse(text)
}

const CNPG_HELP: &str = "\
Under CloudNativePG the Barman Cloud plugin's Deployment starts the sidecar with
`instance` (set its SIDECAR_IMAGE to walship's image); PostgreSQL's archive_command and
restore_command stay CloudNativePG's own (`/controller/manager wal-archive|wal-restore`),
which call this sidecar over the socket.

Exit status: `instance` 0 after SIGTERM, 1 on a failure, 2 for a bad configuration;
`healthcheck unix` 0 when the socket answers SERVING, 1 otherwise.";

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

const BACKUP_HELP: &str = "\
Example:
  PGHOST=/var/run/postgresql walship --config /etc/walship/objectstore.yaml backup --name nightly

The backup refuses to start when WAL archiving is off or failing: its WAL would never
reach the archive and it could not be restored. backup.info says STARTED while it runs,
DONE once every object is stored, FAILED otherwise (SIGTERM and SIGINT included).

Exit status (barman-cloud-backup's):
  0  the backup is DONE
  1  the backup failed (backup.info says FAILED), or WAL archiving cannot deliver its WAL
  2  PostgreSQL or the store cannot be reached, or PostgreSQL refused the backup (rights)
  3  bad configuration or usage
  4  internal error";

const RESTORE_HELP: &str = "\
Example (a point-in-time recovery):
  walship --config /etc/walship/objectstore.yaml restore latest /var/lib/postgresql/15/main \\
      --target-time '2026-11-30 01:19:58+00'
  then start PostgreSQL: it fetches WAL with `walship wal-fetch` and stops at the target.

Every object is checked against the SHA-256 walship recorded (backups taken by
barman-cloud have none). global/pg_control is put in place last, so a restore that
fails leaves a directory PostgreSQL refuses to start on.

Exit status:
  0  restored
  1  the restore failed (no such backup, not DONE, a corrupt object, a non-empty
     destination)
  2  the store cannot be reached
  3  bad configuration or usage
  4  internal error";

const DELETE_HELP: &str = "\
Deletes what barman-cloud-backup-delete would delete, no more: DONE backups outside the
policy except kept ones (backup-keep), never a STARTED or FAILED one; then WAL older than
the oldest remaining backup's begin, except .history files, WAL a keep:standalone backup
needs, and WAL on another timeline that has backups. Refuses to run when any backup.info
cannot be read.

Exit status:
  0  done (or printed, with --dry-run)
  1  refused (a kept backup, minimum redundancy, an unreadable catalog), or a
     deletion failed part-way (run it again to finish)
  2  the store cannot be reached
  3  bad configuration or usage (a policy that does not parse)
  4  internal error";

const LIST_HELP: &str = "\
Exit status:
  0  printed
  1  no such backup
  2  the store cannot be reached
  3  bad configuration or usage
  4  internal error, or a backup.info the catalog cannot read";

const COPY_HELP: &str = "\
Example (an init container of walship's image, /opt/walship an emptyDir volume):
  walship copy-to /opt/walship
then, in the PostgreSQL container:
  archive_command = '/opt/walship/walship wal-push %p'

The copy is written beside its destination and renamed over it, so a restarted init
container never leaves a half-written binary behind.

Exit status:
  0  copied
  1  not copied (the directory is missing, not writable, or full)
  2  bad usage";

const CHECK_HELP: &str = "\
Example:
  walship --config /etc/walship/objectstore.yaml --secrets-dir /etc/walship/secrets check --expect-empty

Exit status:
  0  usable (and empty, with --expect-empty)
  1  store problem (unreachable, silent past --timeout-seconds, access denied, missing
     bucket), or not empty with --expect-empty
  2  bad configuration or usage";
