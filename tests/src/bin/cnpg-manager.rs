//! A stand-in for CloudNativePG's instance manager (`/controller/manager`) on the client
//! side of CNPG-I: each invocation opens a new connection to the plugin's socket and
//! replays the manager's sequence (GetPluginMetadata, GetPluginCapabilities, the
//! GetCapabilities of every advertised service, Probe), then makes one call, as
//! `manager wal-archive %p` and `manager wal-restore %f %p` do per file.
//!
//! ```text
//! cnpg-manager --plugins-dir DIR --cluster FILE wal-archive PATH
//! cnpg-manager --plugins-dir DIR --cluster FILE wal-restore [--rewind] NAME DEST
//! cnpg-manager --plugins-dir DIR --cluster FILE backup BACKUP_JSON_FILE
//! cnpg-manager --plugins-dir DIR --cluster FILE metrics
//! cnpg-manager --plugins-dir DIR --cluster FILE restore-job
//! ```
//!
//! Exit status: 0 done; 1 the file is not in the archive (NOT_FOUND, or OUT_OF_RANGE,
//! the plugin's end-of-WAL signal), which PostgreSQL takes as "not available"; 2 the
//! plugin answered another error (printed as `code: message`), 126 for `wal-restore`
//! so that PostgreSQL stops rather than take the file as missing; 3 the sequence
//! itself failed (no socket, wrong plugin, a capability missing); 4 usage. `backup` prints the
//! BackupResult, `metrics` every collected sample as JSON lines, `restore-job` the
//! RestoreJobHooks answer (asking for the empty-archive check, as the operator does).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};

mod pb {
    pub mod identity {
        tonic::include_proto!("cnpgi.identity.v1");
    }
    pub mod wal {
        tonic::include_proto!("cnpgi.wal.v1");
    }
    pub mod backup {
        tonic::include_proto!("cnpgi.backup.v1");
    }
    pub mod metrics {
        tonic::include_proto!("cnpgi.metrics.v1");
    }
}

use pb::identity::identity_client::IdentityClient;
use pb::wal::wal_client::WalClient;

const PLUGIN_NAME: &str = "barman-cloud.cloudnative-pg.io";

enum Failure {
    /// The plugin answered with an error status.
    Answered(tonic::Status),
    /// The manager's own sequence failed.
    Sequence(String),
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Failure::Answered(status)
    }
}

struct Args {
    plugins_dir: PathBuf,
    cluster: PathBuf,
    command: Vec<String>,
}

fn parse_args() -> Option<Args> {
    let mut args = std::env::args().skip(1);
    let (mut plugins_dir, mut cluster, mut command) = (None, None, Vec::new());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--plugins-dir" => plugins_dir = Some(PathBuf::from(args.next()?)),
            "--cluster" => cluster = Some(PathBuf::from(args.next()?)),
            _ => command.push(arg),
        }
    }
    Some(Args {
        plugins_dir: plugins_dir?,
        cluster: cluster?,
        command,
    })
}

async fn connect(socket: &Path) -> Result<Channel, Failure> {
    let socket = socket.to_owned();
    let shown = socket.display().to_string();
    Endpoint::from_static("http://plugin.socket")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .map_err(|e| Failure::Sequence(format!("cannot connect to {shown}: {e}")))
}

/// What CloudNativePG does when it loads a plugin before a call; `required` are the
/// services the call needs.
async fn load(
    channel: &Channel,
    required: &[pb::identity::capability::service::Kind],
) -> Result<(), Failure> {
    use pb::identity::capability::{Capability, service::Kind};
    let mut identity = IdentityClient::new(channel.clone());
    let metadata = identity
        .get_plugin_metadata(pb::identity::PluginMetadataRequest {})
        .await?
        .into_inner();
    if metadata.name != PLUGIN_NAME {
        return Err(Failure::Sequence(format!(
            "the socket's plugin is {:?}, not {PLUGIN_NAME}",
            metadata.name
        )));
    }
    let capabilities = identity
        .get_plugin_capabilities(pb::identity::PluginCapabilitiesRequest {})
        .await?
        .into_inner()
        .capabilities;
    let kinds: Vec<i32> = capabilities
        .iter()
        .filter_map(|c| c.capability.as_ref())
        .map(|Capability::Service(s)| s.kind)
        .collect();
    for kind in &kinds {
        // Every advertised service must answer GetCapabilities, or loading fails.
        match Kind::try_from(*kind) {
            Ok(Kind::Wal) => {
                WalClient::new(channel.clone())
                    .get_capabilities(pb::wal::WalCapabilitiesRequest {})
                    .await?;
            }
            Ok(Kind::Backup) => {
                pb::backup::backup_client::BackupClient::new(channel.clone())
                    .get_capabilities(pb::backup::BackupCapabilitiesRequest {})
                    .await?;
            }
            Ok(Kind::Metrics) => {
                pb::metrics::metrics_client::MetricsClient::new(channel.clone())
                    .get_capabilities(pb::metrics::MetricsCapabilitiesRequest {})
                    .await?;
            }
            Ok(Kind::RestoreJob) => {
                pb::wal::restore_job_hooks_client::RestoreJobHooksClient::new(channel.clone())
                    .get_capabilities(pb::wal::RestoreJobCapabilitiesRequest {})
                    .await?;
            }
            _ => {}
        }
    }
    for &needed in required {
        if !kinds.contains(&(needed as i32)) {
            return Err(Failure::Sequence(format!(
                "the plugin does not advertise {needed:?}"
            )));
        }
    }
    let probe = identity
        .probe(pb::identity::ProbeRequest {})
        .await?
        .into_inner();
    if !probe.ready {
        return Err(Failure::Sequence(
            "the plugin's Probe says not ready".into(),
        ));
    }
    Ok(())
}

async fn run(args: Args) -> Result<(), Failure> {
    let cluster = std::fs::read(&args.cluster)
        .map_err(|e| Failure::Sequence(format!("{}: {e}", args.cluster.display())))?;
    let channel = connect(&args.plugins_dir.join(PLUGIN_NAME)).await?;
    let command: Vec<&str> = args.command.iter().map(String::as_str).collect();
    {
        use pb::identity::capability::service::Kind;
        let required: &[Kind] = match command.first() {
            Some(&"backup") => &[Kind::Backup],
            Some(&"metrics") => &[Kind::Metrics],
            Some(&"restore-job") => &[Kind::RestoreJob],
            _ => &[Kind::Wal],
        };
        load(&channel, required).await?;
    }
    match command.as_slice() {
        ["wal-archive", path] => {
            let path =
                std::path::absolute(path).map_err(|e| Failure::Sequence(format!("{path}: {e}")))?;
            WalClient::new(channel)
                .archive(pb::wal::ArchiveRequest {
                    cluster_definition: cluster,
                    source_file_name: path.display().to_string(),
                    parameters: Default::default(),
                    check_empty_wal_archive: None,
                })
                .await?;
        }
        ["wal-restore", rest @ ..] => {
            let (rewind, rest) = match rest {
                ["--rewind", rest @ ..] => (true, rest),
                rest => (false, rest),
            };
            let [name, dest] = rest else {
                return Err(Failure::Sequence(
                    "usage: wal-restore [--rewind] NAME DEST".into(),
                ));
            };
            let dest =
                std::path::absolute(dest).map_err(|e| Failure::Sequence(format!("{dest}: {e}")))?;
            let mode = if rewind {
                pb::wal::restore_wal_request::Mode::Rewind
            } else {
                pb::wal::restore_wal_request::Mode::Recovery
            };
            WalClient::new(channel)
                .restore(pb::wal::RestoreWalRequest {
                    cluster_definition: cluster,
                    source_wal_name: (*name).to_owned(),
                    destination_file_name: dest.display().to_string(),
                    parameters: Default::default(),
                    mode: mode as i32,
                })
                .await?;
        }
        ["backup", backup_file] => {
            let backup = std::fs::read(backup_file)
                .map_err(|e| Failure::Sequence(format!("{backup_file}: {e}")))?;
            // The manager sends the Backup's `spec.pluginConfiguration.parameters` as
            // the call's parameters.
            let resource: serde_json::Value = serde_json::from_slice(&backup)
                .map_err(|e| Failure::Sequence(format!("{backup_file}: {e}")))?;
            let parameters = resource["spec"]["pluginConfiguration"]["parameters"]
                .as_object()
                .map(|p| {
                    p.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let result = pb::backup::backup_client::BackupClient::new(channel)
                .backup(pb::backup::BackupRequest {
                    cluster_definition: cluster,
                    backup_definition: backup,
                    parameters,
                })
                .await?
                .into_inner();
            let metadata: serde_json::Map<String, serde_json::Value> = result
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
                .collect();
            let json = serde_json::json!({
                "backup_id": result.backup_id,
                "backup_name": result.backup_name,
                "started_at": result.started_at,
                "stopped_at": result.stopped_at,
                "begin_wal": result.begin_wal,
                "end_wal": result.end_wal,
                "begin_lsn": result.begin_lsn,
                "end_lsn": result.end_lsn,
                "instance_id": result.instance_id,
                "online": result.online,
                "metadata": metadata,
            });
            println!("{json}");
        }
        ["metrics"] => {
            let mut client = pb::metrics::metrics_client::MetricsClient::new(channel);
            let defined = client
                .define(pb::metrics::DefineRequest {
                    cluster_definition: cluster.clone(),
                })
                .await?
                .into_inner()
                .metrics;
            let collected = client
                .collect(pb::metrics::CollectRequest {
                    cluster_definition: cluster,
                })
                .await?
                .into_inner()
                .metrics;
            for sample in collected {
                // The exporter's rule: a name collected but not defined fails the scrape.
                let Some(definition) = defined.iter().find(|d| d.fq_name == sample.fq_name) else {
                    return Err(Failure::Sequence(format!(
                        "{} is collected but not defined",
                        sample.fq_name
                    )));
                };
                if definition.variable_labels.len() != sample.variable_labels.len() {
                    return Err(Failure::Sequence(format!(
                        "{} has {} label values for {} labels",
                        sample.fq_name,
                        sample.variable_labels.len(),
                        definition.variable_labels.len()
                    )));
                }
                println!(
                    "{}",
                    serde_json::json!({
                        "name": sample.fq_name,
                        "labels": sample.variable_labels,
                        "value": sample.value,
                    })
                );
            }
        }
        ["restore-job"] => {
            let result = pb::wal::restore_job_hooks_client::RestoreJobHooksClient::new(channel)
                .restore(pb::wal::RestoreJobRequest {
                    cluster_definition: cluster,
                    check_empty_wal_archive: Some(true),
                })
                .await?
                .into_inner();
            println!(
                "{}",
                serde_json::json!({
                    "restore_config": result.restore_config,
                    "envs": result.envs,
                })
            );
        }
        _ => return Err(Failure::Sequence(format!("unknown command {command:?}"))),
    }
    Ok(())
}

fn main() -> ExitCode {
    let Some(args) = parse_args() else {
        eprintln!("usage: cnpg-manager --plugins-dir DIR --cluster FILE COMMAND ARGS...");
        return ExitCode::from(4);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cnpg-manager: {e}");
            return ExitCode::from(3);
        }
    };
    let restoring = args.command.first().is_some_and(|c| c == "wal-restore");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Answered(status)) => {
            eprintln!("cnpg-manager: {:?}: {}", status.code(), status.message());
            match status.code() {
                Code::NotFound | Code::OutOfRange => ExitCode::from(1),
                _ if restoring => ExitCode::from(126),
                _ => ExitCode::from(2),
            }
        }
        Err(Failure::Sequence(problem)) => {
            eprintln!("cnpg-manager: {problem}");
            ExitCode::from(3)
        }
    }
}
