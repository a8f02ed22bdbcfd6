//! The services on the plugin's socket: identity, WAL, backup, metrics and
//! grpc.health.v1, plaintext HTTP/2 on a Unix socket, every call served concurrently
//! (the `.backup` file `pg_backup_stop` waits for is archived while a Backup call is
//! still running).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{info, warn};
use walship_wal::WalName;

use crate::PLUGIN_NAME;
use crate::cluster::PluginConfig;
use crate::export;
use crate::pb::identity::capability::service::Kind;
use crate::pb::{backup, identity, metrics, wal};
use crate::sidecar::{
    ArchiveCall, BackupCall, CallError, Recovery, RestoreCall, RestoreJobCall, Sidecar,
};

/// The plugin's display name, which CloudNativePG shows and records in each Backup's
/// metadata.
pub const DISPLAY_NAME: &str = "BarmanCloudInstance";

/// What the services need besides the sidecar.
#[derive(Debug, Clone)]
pub struct Settings {
    /// walship's version, reported as the plugin's.
    pub version: String,
    /// PGDATA: relative paths in calls are relative to it, as PostgreSQL's are.
    pub pgdata: PathBuf,
}

/// Serves every service on `socket` until `shutdown`; an old socket file left by a
/// previous run is replaced.
pub async fn serve<S: Sidecar>(
    socket: &Path,
    sidecar: Arc<S>,
    settings: Settings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = bind(socket)?;
    info!(socket = %socket.display(), "serving CNPG-I as {PLUGIN_NAME}");
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let settings = Arc::new(settings);
    let identity = Identity {
        kinds: vec![Kind::Wal, Kind::Backup, Kind::Metrics],
        settings: settings.clone(),
        ready: {
            let sidecar = sidecar.clone();
            Arc::new(move || sidecar.ready())
        },
    };
    let services = Services { sidecar, settings };
    let result = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(identity::identity_server::IdentityServer::new(identity))
        .add_service(wal::wal_server::WalServer::new(services.clone()))
        .add_service(backup::backup_server::BackupServer::new(services.clone()))
        .add_service(metrics::metrics_server::MetricsServer::new(services))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown.cancelled())
        .await;
    let _ = std::fs::remove_file(socket);
    result.map_err(std::io::Error::other)
}

/// Serves the restore job's sidecar on `socket` until `shutdown`: identity (RESTORE_JOB
/// and WAL), the restore job's hooks, WAL restores, and grpc.health.
pub async fn serve_restore_job<R: Recovery>(
    socket: &Path,
    recovery: Arc<R>,
    settings: Settings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = bind(socket)?;
    info!(socket = %socket.display(), "serving CNPG-I as {PLUGIN_NAME} (restore job)");
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let settings = Arc::new(settings);
    let identity = Identity {
        kinds: vec![Kind::RestoreJob, Kind::Wal],
        settings: settings.clone(),
        ready: Arc::new(|| true),
    };
    let job = Job { recovery, settings };
    let result = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(identity::identity_server::IdentityServer::new(identity))
        .add_service(wal::restore_job_hooks_server::RestoreJobHooksServer::new(
            job.clone(),
        ))
        .add_service(wal::wal_server::WalServer::new(job))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown.cancelled())
        .await;
    let _ = std::fs::remove_file(socket);
    result.map_err(std::io::Error::other)
}

/// The longest path a Unix socket can have on Linux: `sun_path`'s 108 bytes, less the
/// terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Binds the socket, replacing a file left by an earlier run.
fn bind(socket: &Path) -> std::io::Result<UnixListener> {
    let len = socket.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the plugin's socket {} is {len} bytes long; a Unix socket's path can be at \
                 most {MAX_SOCKET_PATH} bytes: choose a shorter --plugins-dir",
                socket.display()
            ),
        ));
    }
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(socket)
}

struct Services<S> {
    sidecar: Arc<S>,
    settings: Arc<Settings>,
}

impl<S> Clone for Services<S> {
    fn clone(&self) -> Self {
        Services {
            sidecar: self.sidecar.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl Settings {
    /// `path` as PostgreSQL means it: relative to PGDATA.
    fn absolute(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.pgdata.join(path)
        }
    }
}

fn cluster(json: &[u8]) -> Result<PluginConfig, Status> {
    PluginConfig::from_json(json).map_err(|e| CallError::InvalidArgument(e.to_string()).status())
}

/// The identity service: who the plugin is and which services this socket serves.
#[derive(Clone)]
struct Identity {
    kinds: Vec<Kind>,
    settings: Arc<Settings>,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
}

#[tonic::async_trait]
impl identity::identity_server::Identity for Identity {
    async fn get_plugin_metadata(
        &self,
        _: Request<identity::PluginMetadataRequest>,
    ) -> Result<Response<identity::PluginMetadata>, Status> {
        Ok(Response::new(identity::PluginMetadata {
            name: PLUGIN_NAME.to_owned(),
            version: self.settings.version.clone(),
            display_name: DISPLAY_NAME.to_owned(),
            description: "walship: WAL archiving, base backups and restores in \
                          barman-cloud's layout, as the Barman Cloud plugin's sidecar"
                .to_owned(),
            project_url: "https://github.com/walship/walship".to_owned(),
            repository_url: "https://github.com/walship/walship".to_owned(),
            license: "Apache-2.0".to_owned(),
            license_url: "https://www.apache.org/licenses/LICENSE-2.0".to_owned(),
            maturity: "alpha".to_owned(),
            vendor: "walship".to_owned(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<identity::PluginCapabilitiesRequest>,
    ) -> Result<Response<identity::PluginCapabilities>, Status> {
        use identity::capability::{Capability as Of, Service};
        let capabilities = self
            .kinds
            .iter()
            .map(|kind| identity::Capability {
                capability: Some(Of::Service(Service { kind: *kind as i32 })),
            })
            .collect();
        Ok(Response::new(identity::PluginCapabilities { capabilities }))
    }

    async fn probe(
        &self,
        _: Request<identity::ProbeRequest>,
    ) -> Result<Response<identity::ProbeResult>, Status> {
        Ok(Response::new(identity::ProbeResult {
            ready: (self.ready)(),
        }))
    }
}

#[tonic::async_trait]
impl<S: Sidecar> wal::wal_server::Wal for Services<S> {
    async fn get_capabilities(
        &self,
        _: Request<wal::WalCapabilitiesRequest>,
    ) -> Result<Response<wal::WalCapabilities>, Status> {
        use wal::wal_capability::rpc::Kind;
        Ok(Response::new(wal_capabilities(&[
            Kind::ArchiveWal,
            Kind::RestoreWal,
        ])))
    }

    async fn archive(
        &self,
        request: Request<wal::ArchiveRequest>,
    ) -> Result<Response<wal::ArchiveResult>, Status> {
        let request = request.into_inner();
        let cluster = cluster(&request.cluster_definition)?;
        let path = self.settings.absolute(&request.source_file_name);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if WalName::parse(&name).is_err() {
            return Err(CallError::InvalidArgument(format!(
                "source_file_name {:?} is not a WAL file",
                request.source_file_name
            ))
            .status());
        }
        let call = ArchiveCall {
            cluster,
            path,
            check_empty_archive: request.check_empty_wal_archive,
        };
        match self.sidecar.archive(call).await {
            Ok(()) => Ok(Response::new(wal::ArchiveResult {})),
            Err(e) => {
                warn!(wal = %name, error = %e, "archive failed");
                Err(e.status())
            }
        }
    }

    async fn restore(
        &self,
        request: Request<wal::RestoreWalRequest>,
    ) -> Result<Response<wal::RestoreWalResult>, Status> {
        let call = restore_call(request.into_inner(), &self.settings)?;
        let name = call.name.clone();
        restored(&name, self.sidecar.restore(call).await)
    }

    async fn status(
        &self,
        _: Request<wal::StatusRequest>,
    ) -> Result<Response<wal::StatusResult>, Status> {
        Err(not_advertised("Status"))
    }

    async fn set_first_required(
        &self,
        _: Request<wal::FirstRequiredRequest>,
    ) -> Result<Response<wal::FirstRequiredResult>, Status> {
        Err(not_advertised("SetFirstRequired"))
    }
}

/// The WAL service's capabilities: `kinds`.
fn wal_capabilities(kinds: &[wal::wal_capability::rpc::Kind]) -> wal::WalCapabilities {
    use wal::wal_capability::{Capability as Of, Rpc};
    wal::WalCapabilities {
        capabilities: kinds
            .iter()
            .map(|kind| wal::WalCapability {
                capability: Some(Of::Rpc(Rpc { kind: *kind as i32 })),
            })
            .collect(),
    }
}

/// The answer to a call this socket does not advertise (CloudNativePG never makes it).
fn not_advertised(call: &str) -> Status {
    Status::unimplemented(format!("{call} is not advertised by this socket"))
}

/// A WAL.Restore request read: a WAL file name, an absolute destination.
fn restore_call(
    request: wal::RestoreWalRequest,
    settings: &Settings,
) -> Result<RestoreCall, Status> {
    let cluster = cluster(&request.cluster_definition)?;
    let name = request.source_wal_name;
    if WalName::parse(&name).is_err() {
        return Err(
            CallError::InvalidArgument(format!("{name:?} is not a WAL file name")).status(),
        );
    }
    if request.destination_file_name.is_empty() {
        return Err(
            CallError::InvalidArgument("destination_file_name is empty".to_owned()).status(),
        );
    }
    Ok(RestoreCall {
        cluster,
        dest: settings.absolute(&request.destination_file_name),
        rewind: request.mode == wal::restore_wal_request::Mode::Rewind as i32,
        name,
    })
}

/// A WAL.Restore answer; a failure other than NOT_FOUND is logged.
fn restored(
    name: &str,
    outcome: Result<(), CallError>,
) -> Result<Response<wal::RestoreWalResult>, Status> {
    match outcome {
        Ok(()) => Ok(Response::new(wal::RestoreWalResult {})),
        Err(e) => {
            if !matches!(e, CallError::NotFound(_) | CallError::OutOfRange(_)) {
                warn!(wal = %name, error = %e, "restore failed");
            }
            Err(e.status())
        }
    }
}

/// The restore job's services, answered by a [`Recovery`].
struct Job<R> {
    recovery: Arc<R>,
    settings: Arc<Settings>,
}

impl<R> Clone for Job<R> {
    fn clone(&self) -> Self {
        Job {
            recovery: self.recovery.clone(),
            settings: self.settings.clone(),
        }
    }
}

#[tonic::async_trait]
impl<R: Recovery> wal::restore_job_hooks_server::RestoreJobHooks for Job<R> {
    async fn get_capabilities(
        &self,
        _: Request<wal::RestoreJobCapabilitiesRequest>,
    ) -> Result<Response<wal::RestoreJobCapabilities>, Status> {
        Ok(Response::new(wal::RestoreJobCapabilities {
            capabilities: vec![wal::RestoreJobCapability {
                kind: wal::restore_job_capability::Kind::Restore as i32,
            }],
        }))
    }

    async fn restore(
        &self,
        request: Request<wal::RestoreJobRequest>,
    ) -> Result<Response<wal::RestoreJobResult>, Status> {
        let request = request.into_inner();
        let call = RestoreJobCall {
            cluster: cluster(&request.cluster_definition)?,
            check_empty_archive: request.check_empty_wal_archive,
        };
        match self.recovery.restore_job(call).await {
            Ok(done) => Ok(Response::new(wal::RestoreJobResult {
                restore_config: done.restore_config,
                envs: done.envs,
            })),
            Err(e) => {
                warn!(error = %e, "the restore job failed");
                Err(e.status())
            }
        }
    }
}

#[tonic::async_trait]
impl<R: Recovery> wal::wal_server::Wal for Job<R> {
    async fn get_capabilities(
        &self,
        _: Request<wal::WalCapabilitiesRequest>,
    ) -> Result<Response<wal::WalCapabilities>, Status> {
        use wal::wal_capability::rpc::Kind;
        Ok(Response::new(wal_capabilities(&[Kind::RestoreWal])))
    }

    async fn archive(
        &self,
        _: Request<wal::ArchiveRequest>,
    ) -> Result<Response<wal::ArchiveResult>, Status> {
        Err(not_advertised(
            "Archive (the restore job's sidecar only restores)",
        ))
    }

    async fn restore(
        &self,
        request: Request<wal::RestoreWalRequest>,
    ) -> Result<Response<wal::RestoreWalResult>, Status> {
        let call = restore_call(request.into_inner(), &self.settings)?;
        let name = call.name.clone();
        restored(&name, self.recovery.restore(call).await)
    }

    async fn status(
        &self,
        _: Request<wal::StatusRequest>,
    ) -> Result<Response<wal::StatusResult>, Status> {
        Err(not_advertised("Status"))
    }

    async fn set_first_required(
        &self,
        _: Request<wal::FirstRequiredRequest>,
    ) -> Result<Response<wal::FirstRequiredResult>, Status> {
        Err(not_advertised("SetFirstRequired"))
    }
}

/// The name the plugin gives a backup: `backup-` and the compact ISO 8601 UTC time.
pub fn backup_name(now: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(now)
        .format("backup-%Y%m%d%H%M%S")
        .to_string()
}

#[tonic::async_trait]
impl<S: Sidecar> backup::backup_server::Backup for Services<S> {
    async fn get_capabilities(
        &self,
        _: Request<backup::BackupCapabilitiesRequest>,
    ) -> Result<Response<backup::BackupCapabilities>, Status> {
        use backup::backup_capability::{Capability as Of, Rpc, rpc::Kind};
        Ok(Response::new(backup::BackupCapabilities {
            capabilities: vec![backup::BackupCapability {
                capability: Some(Of::Rpc(Rpc {
                    kind: Kind::Backup as i32,
                })),
            }],
        }))
    }

    async fn backup(
        &self,
        request: Request<backup::BackupRequest>,
    ) -> Result<Response<backup::BackupResult>, Status> {
        let request = request.into_inner();
        let cluster = cluster(&request.cluster_definition)?;
        let cluster_uid = cluster.cluster_uid.clone();
        let call = BackupCall {
            cluster,
            backup_name: backup_name(SystemTime::now()),
            parameters: request.parameters.into_iter().collect(),
        };
        let done = self.sidecar.backup(call).await.map_err(|e| {
            warn!(error = %e, "backup failed");
            e.status()
        })?;
        let metadata: BTreeMap<&str, String> = [
            ("timeline", done.timeline.to_string()),
            ("version", self.settings.version.clone()),
            ("name", PLUGIN_NAME.to_owned()),
            ("displayName", DISPLAY_NAME.to_owned()),
            ("clusterUID", cluster_uid),
            ("pluginName", PLUGIN_NAME.to_owned()),
        ]
        .into();
        Ok(Response::new(backup::BackupResult {
            backup_id: done.backup_id,
            backup_name: done.backup_name,
            started_at: done.started_at,
            stopped_at: done.stopped_at,
            begin_wal: done.begin_wal,
            end_wal: done.end_wal,
            begin_lsn: done.begin_lsn,
            end_lsn: done.end_lsn,
            backup_label_file: done.backup_label,
            tablespace_map_file: done.tablespace_map,
            instance_id: self.sidecar.pod_name(),
            online: true,
            metadata: metadata
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        }))
    }
}

#[tonic::async_trait]
impl<S: Sidecar> metrics::metrics_server::Metrics for Services<S> {
    async fn get_capabilities(
        &self,
        _: Request<metrics::MetricsCapabilitiesRequest>,
    ) -> Result<Response<metrics::MetricsCapabilities>, Status> {
        use metrics::metrics_capability::{Capability as Of, Rpc, rpc::Kind};
        Ok(Response::new(metrics::MetricsCapabilities {
            capabilities: vec![metrics::MetricsCapability {
                capability: Some(Of::Rpc(Rpc {
                    kind: Kind::Metrics as i32,
                })),
            }],
        }))
    }

    async fn define(
        &self,
        _: Request<metrics::DefineRequest>,
    ) -> Result<Response<metrics::Definitions>, Status> {
        Ok(Response::new(metrics::Definitions {
            metrics: export::define(&self.sidecar.metrics()),
        }))
    }

    async fn collect(
        &self,
        _: Request<metrics::CollectRequest>,
    ) -> Result<Response<metrics::Samples>, Status> {
        Ok(Response::new(metrics::Samples {
            metrics: export::collect(&self.sidecar.metrics()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_socket_path_too_long_for_unix_sockets_is_refused_naming_the_flag() {
        let long = PathBuf::from(format!("/tmp/{}/{PLUGIN_NAME}", "d".repeat(80)));
        let e = bind(&long).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        let said = e.to_string();
        assert!(
            said.contains("--plugins-dir") && said.contains("at most 107"),
            "{said}"
        );
        assert!(
            !long.parent().unwrap().exists(),
            "nothing is created for it"
        );
    }

    #[test]
    fn backups_are_named_as_the_plugin_names_them() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(backup_name(t), "backup-20261118110640");
        assert_eq!(backup_name(UNIX_EPOCH), "backup-19700101000000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(backup_name(leap), "backup-20000229000000");
    }
}
