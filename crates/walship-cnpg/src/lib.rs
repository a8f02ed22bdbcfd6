//! CNPG-I, CloudNativePG's plugin interface: walship serving as the Barman Cloud
//! plugin's instance sidecar on the plugin's Unix socket, so a CloudNativePG user
//! switches by changing one image.
//!
//! - [`pb`]: the protocol's messages and services, generated at build time from our
//!   own `.proto` files in `proto/` (written from the protocol's facts: same packages,
//!   services, methods, field numbers and types as cnpg-i v0.6.0);
//! - [`cluster`]: what a call's Cluster JSON says (stores, server names, the pod's
//!   place), read once, by the plugin's rules;
//! - [`sidecar`]: the [`Sidecar`](sidecar::Sidecar) trait, what the binary's wiring
//!   does for each call (the daemon's archive and fetch, a base backup), and
//!   [`CallError`](sidecar::CallError), the one mapping of outcomes to gRPC codes;
//! - [`server`]: the services on the socket (identity, WAL, backup, metrics, health);
//! - [`export`]: walship's metrics as the metrics service defines and collects them;
//! - [`client`]: the other end, for `healthcheck unix`.
//!
//! It must never answer an Archive before the store confirmed the file, return
//! NOT_FOUND for a restore that failed for another reason, or collect a metric name it
//! did not define.
//!
//! Dependencies: `tonic`, `tonic-prost`, `prost` (gRPC and protobuf, the user's choice),
//! `tonic-health` (grpc.health.v1, which the plugin's sidecar serves and its startup
//! probe calls), `protox` and `tonic-prost-build` at build time (protobuf compiled
//! without protoc), `tokio-stream` (the Unix listener as tonic's incoming stream),
//! `tower` and `hyper-util` (the client's Unix-socket connector), `serde` and
//! `serde_json` (the Cluster JSON), `chrono` (backup names from the time, as the plugin makes them), `walship-wal` (WAL names), `walship-metrics` (the
//! values exported), `tokio`, `tokio-util`, `thiserror`, `tracing`.

pub mod client;
pub mod cluster;
pub mod export;
pub mod server;
pub mod sidecar;

/// The plugin's name: what Clusters name in `spec.plugins[]`, and the socket's file
/// name in the plugins directory.
pub const PLUGIN_NAME: &str = "barman-cloud.cloudnative-pg.io";

/// The protocol, generated from `proto/`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
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
