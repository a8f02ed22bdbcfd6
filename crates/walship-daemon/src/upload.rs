//! The upload-and-ack step: one file through the archiver, then, only if the store
//! confirmed it and the file did not change meanwhile, its ack in the journal.
//!
//! It knows nothing of the queue: which file and when is the dispatcher's business, and
//! what it returns (the ack record, or why there is none) goes back to the queue.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tracing::warn;
use walship_engine::{Archiver, PushError, PushOutcome};
use walship_metrics::{FailureReason, Health, Metrics, RetryReason};
use walship_store::ErrorKind;

use crate::journal::{AckRecord, FileIdentity, Journal};

/// Why an upload ended without an ack.
#[derive(Debug)]
pub(crate) struct Failed {
    /// What waiters and logs see.
    pub(crate) message: String,
    /// The wait the store asked for (`Retry-After`): the file is not tried again sooner.
    pub(crate) retry_after: Option<std::time::Duration>,
}

impl Failed {
    fn new(message: String) -> Failed {
        Failed {
            message,
            retry_after: None,
        }
    }
}

pub(crate) struct Uploader {
    pub(crate) pg_wal: PathBuf,
    pub(crate) journal: Journal,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) health: Arc<Health>,
}

impl Uploader {
    /// Uploads `pg_wal/<name>` with `archiver` and journals the ack. The file's identity
    /// is taken before and after, so a file that changed meanwhile is never acked.
    pub(crate) async fn upload(
        &self,
        archiver: &Archiver,
        name: &str,
    ) -> Result<AckRecord, Failed> {
        let path = self.pg_wal.join(name);
        let before =
            FileIdentity::of(&path).map_err(|e| Failed::new(format!("{}: {e}", path.display())))?;
        let started = Instant::now();
        let outcome = archiver.push(&path).await;
        self.metrics
            .upload_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                self.health.record_upload_failure();
                self.metrics.archive_failures_total.inc(failure_reason(&e));
                // Every failed file is retried by the dispatcher (with backoff).
                self.metrics.retries_total.inc(retry_reason(&e));
                if matches!(e, PushError::Conflict { .. }) {
                    self.metrics.conflicts_total.inc();
                }
                warn!("upload failed: {e}");
                let retry_after = match &e {
                    PushError::Store { source, .. } => source.retry_after(),
                    _ => None,
                };
                return Err(Failed {
                    message: e.to_string(),
                    retry_after,
                });
            }
        };
        let sha256 = match outcome {
            PushOutcome::Uploaded {
                sha256,
                stored_bytes,
                ..
            } => {
                self.metrics.uploaded_bytes_total.inc_by(stored_bytes);
                sha256
            }
            PushOutcome::AlreadyArchived { sha256, .. } => {
                self.metrics.duplicates_total.inc();
                sha256
            }
        };
        self.health.record_upload_success();
        self.metrics.segments_archived_total.inc();
        self.metrics.archived_bytes_total.inc_by(before.size);
        let unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.metrics.set_last_archived(name, unix);
        if FileIdentity::of(&path).ok() != Some(before) {
            warn!("the file changed during the upload; not acknowledging it");
            return Err(Failed::new("the file changed during the upload".to_owned()));
        }
        let record = AckRecord {
            identity: before,
            sha256,
        };
        // Two fsyncs: off the async worker threads, which other uploads and wal-push
        // answers share.
        let (journal, wal, entry) = (self.journal.clone(), name.to_owned(), record.clone());
        let journaled = tokio::task::spawn_blocking(move || journal.record(&wal, &entry)).await;
        if let Ok(Err(e)) | Err(e) = journaled.map_err(std::io::Error::other) {
            // Still stored; the ack just is not remembered across restarts.
            warn!("cannot journal the ack: {e}");
            self.metrics.unjournaled_acks_total.inc();
        }
        Ok(record)
    }
}

fn failure_reason(e: &PushError) -> FailureReason {
    match e {
        PushError::Conflict { .. } => FailureReason::Conflict,
        PushError::NotWal { .. } | PushError::Read { .. } | PushError::NotAFile { .. } => {
            FailureReason::InvalidFile
        }
        PushError::Store { source, .. } => match source.kind() {
            ErrorKind::Connection | ErrorKind::TimedOut => FailureReason::StoreUnreachable,
            ErrorKind::Denied => FailureReason::AccessDenied,
            _ => FailureReason::Other,
        },
        _ => FailureReason::Other,
    }
}

/// The label of a failed push's retry: the store error's kind, never its text.
fn retry_reason(e: &PushError) -> RetryReason {
    match e {
        PushError::Store { source, .. } => retry_reason_of(source.kind()),
        _ => RetryReason::Other,
    }
}

/// The label of a retry after a store error of `kind` (the daemon's retry of a file, or
/// a store's retry of one request, heard through `walship_store::retry::observe_retries`).
pub(crate) fn retry_reason_of(kind: ErrorKind) -> RetryReason {
    match kind {
        ErrorKind::TimedOut => RetryReason::Timeout,
        ErrorKind::Connection => RetryReason::Connection,
        ErrorKind::Throttled => RetryReason::Throttled,
        ErrorKind::Server | ErrorKind::Conflict | ErrorKind::Response => RetryReason::ServerError,
        ErrorKind::AlreadyExists
        | ErrorKind::NotFound
        | ErrorKind::ContainerMissing
        | ErrorKind::Denied
        | ErrorKind::Rejected
        | ErrorKind::Source
        | ErrorKind::ClockSkew => RetryReason::Other,
    }
}
