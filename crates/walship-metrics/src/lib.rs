//! The daemon's metrics and health: typed Prometheus handles and the HTTP endpoints that
//! expose them.
//!
//! [`Metrics`] registers every `walship_*` metric family in a registry of its own (never
//! the process-global default one, so tests and embedders can hold several) together
//! with the process collector (RSS, CPU, file descriptors) where the platform has one.
//! [`Health`] keeps the few facts readiness depends on: whether the configuration
//! loaded, whether the object store answered the last probe, and since when uploads
//! have been failing. [`serve`] answers `GET /metrics`, `GET /healthz` and `GET /readyz`
//! until its cancellation token fires. The engine and the binary update the handles; this
//! crate only counts and reports.
//!
//! This crate must never know clouds, WAL parsing or configuration files, and it must
//! never put a secret, a URL or a file path into a label: every label with a free value
//! is replaced by a closed enum ([`FailureReason`], [`RetryReason`], [`ReloadResult`],
//! [`RetentionResult`]),
//! and the only free-text label is the segment name of the last archived segment.
//!
//! Dependencies: `prometheus` (metric types, the text exposition format 0.0.4 and the
//! Linux process collector; its protobuf default is off), `axum` (the small HTTP server,
//! HTTP/1 only, on tokio), `tokio` (the listener and the runtime the server runs on),
//! `tokio-util` (the `CancellationToken` the daemon uses for shutdown everywhere),
//! `tracing` (start, stop and encoding errors are logged, never printed).

mod health;
mod metrics;
mod server;

pub use health::Health;
pub use metrics::{
    FailureReason, Family, Kind, Label, LabeledCounter, Metrics, ReloadResult, RetentionResult,
    RetryReason,
};
pub use server::{CONTENT_TYPE, serve};
