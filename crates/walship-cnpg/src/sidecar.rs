//! What the sidecar does for each call, implemented by the binary's wiring, and the
//! one mapping of its outcomes to gRPC codes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tonic::{Code, Status};

use crate::cluster::PluginConfig;

/// `WAL.Archive`: the file PostgreSQL archives.
#[derive(Debug, Clone)]
pub struct ArchiveCall {
    pub cluster: PluginConfig,
    /// Absolute (made so against PGDATA when PostgreSQL passed `pg_wal/…`).
    pub path: PathBuf,
    /// The operator's decision on checking that the archive is empty; `None` from an
    /// operator that predates the field.
    pub check_empty_archive: Option<bool>,
}

/// `WAL.Restore`: the file recovery wants.
#[derive(Debug, Clone)]
pub struct RestoreCall {
    pub cluster: PluginConfig,
    /// `%f`, checked to be a WAL file name.
    pub name: String,
    /// `%p`, absolute.
    pub dest: PathBuf,
    /// Under pg_rewind: this file only, no read-ahead.
    pub rewind: bool,
}

/// `Backup.Backup`.
#[derive(Debug, Clone)]
pub struct BackupCall {
    pub cluster: PluginConfig,
    /// The Backup resource's `metadata.name`.
    pub backup_name: String,
    /// The Backup's plugin parameters.
    pub parameters: BTreeMap<String, String>,
}

/// `RestoreJobHooks.Restore`: restore the data directory of a Cluster being recovered.
#[derive(Debug, Clone)]
pub struct RestoreJobCall {
    pub cluster: PluginConfig,
    /// The operator's decision on checking that the new cluster's archive is empty.
    pub check_empty_archive: Option<bool>,
}

/// A data directory restored: what the job adds to PostgreSQL's configuration and
/// environment before recovery starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreJobDone {
    pub restore_config: String,
    /// `NAME=VALUE`.
    pub envs: Vec<String>,
}

/// A backup taken: what fills the Backup resource's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupDone {
    pub backup_id: String,
    pub backup_name: String,
    pub started_at: i64,
    pub stopped_at: i64,
    pub begin_wal: String,
    pub end_wal: String,
    pub begin_lsn: String,
    pub end_lsn: String,
    pub timeline: u32,
    /// PostgreSQL's `server_version_num`.
    pub version: u32,
    pub backup_label: Vec<u8>,
    pub tablespace_map: Vec<u8>,
}

/// Why a call failed, by what the caller should do about it. Each maps to one gRPC code
/// ([`CallError::status`]), the codes the plugin's sidecar answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The archive has no such file (terminal: recovery moves on or streams).
    #[error("{0}")]
    NotFound(String),
    /// A request that will never succeed as it is (a bad WAL name, a bad definition).
    #[error("{0}")]
    InvalidArgument(String),
    /// The store could not be reached or refused for now; a retry may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// What the call needs is missing: configuration, an ObjectStore, a permission.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The plugin's end-of-WAL signal: stop reading the archive, stream instead.
    #[error("{0}")]
    OutOfRange(String),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

impl CallError {
    /// The gRPC status this error is answered with.
    pub fn status(&self) -> Status {
        let code = match self {
            CallError::NotFound(_) => Code::NotFound,
            CallError::InvalidArgument(_) => Code::InvalidArgument,
            CallError::Unavailable(_) => Code::Unavailable,
            CallError::FailedPrecondition(_) => Code::FailedPrecondition,
            CallError::OutOfRange(_) => Code::OutOfRange,
            CallError::Internal(_) => Code::Internal,
        };
        Status::new(code, self.to_string())
    }
}

/// The sidecar's work, one method per call that does any.
#[tonic::async_trait]
pub trait Sidecar: Send + Sync + 'static {
    /// Returns once the store holds the file (or an identical copy of it).
    async fn archive(&self, call: ArchiveCall) -> Result<(), CallError>;
    /// Puts the file at `dest`, or says why not.
    async fn restore(&self, call: RestoreCall) -> Result<(), CallError>;
    /// Takes a base backup; DONE in the store before this returns.
    async fn backup(&self, call: BackupCall) -> Result<BackupDone, CallError>;
    /// Whether calls can be taken now (the identity service's Probe).
    fn ready(&self) -> bool;
    /// The values the metrics service exports.
    fn metrics(&self) -> Vec<walship_metrics::Family>;
    /// This pod's name (`POD_NAME`): the backup's `instance_id`, and the pod's place
    /// in the cluster.
    fn pod_name(&self) -> String;
}

/// The restore job's sidecar: the data directory first, then the WAL recovery asks for.
#[tonic::async_trait]
pub trait Recovery: Send + Sync + 'static {
    /// Restores the backup the Cluster's recovery target calls for into PGDATA.
    async fn restore_job(&self, call: RestoreJobCall) -> Result<RestoreJobDone, CallError>;
    /// Puts a WAL file at `dest`, or says why not.
    async fn restore(&self, call: RestoreCall) -> Result<(), CallError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_is_answered_with_the_plugins_code_and_never_not_found_for_an_error() {
        let cases = [
            (CallError::NotFound("x".into()), Code::NotFound),
            (
                CallError::InvalidArgument("x".into()),
                Code::InvalidArgument,
            ),
            (CallError::Unavailable("x".into()), Code::Unavailable),
            (
                CallError::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (CallError::OutOfRange("x".into()), Code::OutOfRange),
            (CallError::Internal("x".into()), Code::Internal),
        ];
        for (error, code) in cases {
            let status = error.status();
            assert_eq!(status.code(), code, "{error:?}");
            assert_eq!(status.message(), "x");
        }
    }
}
