//! Real servers for walship's end-to-end tests and for `cargo xtask`.
//!
//! This crate starts and stops the things walship talks to — an S3-compatible
//! object store (`s3s-fs`, or `minio` when one is on `PATH`; moto's server where a
//! test needs atomic create-only puts), Azurite (plain HTTP, or
//! HTTPS with a throwaway CA and OAuth), stand-ins for AWS STS, the EC2 instance metadata service and Azure AD's token
//! endpoint that speak their real protocols, a stand-in for the Kubernetes API (the
//! Cluster, ObjectStore and Secrets CloudNativePG's sidecar reads), and throwaway PostgreSQL 15 clusters — and
//! finds the tools and binaries the tests drive
//! (`walship` itself, `s3s-fs`, `moto_server`, the barman-cloud virtualenv). Everything listens
//! on 127.0.0.1 on ports picked free at start, every handle owns its temporary
//! directory, and every handle stops its process when dropped, so a test stops
//! exactly what it started. PostgreSQL refuses to run as root, so when the tests
//! run as root the kit runs the PostgreSQL tools as an unprivileged system user
//! (`walship-pg`), creating it on first use.
//!
//! The API is synchronous (`std::process`): the tests wait on real processes and
//! have no use for an async runtime. It must never depend on walship's own
//! crates, so that it keeps testing the product from the outside.
//!
//! Dependencies, and why each is here:
//! - `anyhow`: every failure here ends a test, so one error type with context
//!   (which command, its stderr, the server log's tail) serves better than a
//!   typed enum.
//! - `serde_json`: the GCS emulator's answers, and the JWT assertion the stand-in
//!   token endpoint checks.
//! - `tempfile`: temporary directories that are removed when their handle drops.
//! - `base64`: Azure Shared Key and SAS signatures (the kit creates containers, lists
//!   blobs and makes SAS tokens for Azurite) decode the key and encode the signature in
//!   base64; the Azure AD stand-in's JWTs are base64url.
//! - `socket2`: the fault proxy's resets (SO_LINGER 0, so closing sends RST as a
//!   dropped connection does; std cannot set it).
//! - `sha2` and `hex`: the few signed S3 requests the kit makes itself (creating a
//!   bucket on MinIO, checking that a bucket exists) need SigV4, which is
//!   SHA-256 and HMAC-SHA-256.

mod aad;
mod azurite;
mod fault;
mod gcs;
mod imds;
mod kube_api;
mod paths;
mod pg;
mod s3;
mod sigv4;
mod silent;
mod sts;
mod stub;
mod tls;
mod util;

pub use aad::{AadOptions, AadStub};
pub use azurite::{AZURITE_ACCOUNT, AZURITE_KEY, AzuriteOptions, AzuriteServer, azurite_path};
pub use fault::{Fault, FaultProxy, Rule, Seen};
pub use gcs::{GcsServer, GoogleTokenServer, MetadataServer, TokenMode, fake_gcs_path};
pub use imds::{IMDS_ROLE, ImdsStub};
pub use kube_api::{KubeApi, KubeKind, KubeRequest};
pub use paths::{
    WalshipBin, barman_bin_for_pg, barman_system_venv, barman_venv, executable_by_pg,
    pg_can_run_script, target_dir, tool_path, workspace_root,
};
pub use pg::{
    InitOptions, PgCluster, PgUser, make_readable_by_pg, pg_bin_dir, pg_temp_dir, pg_user,
    pg_user_command,
};
pub use s3::{S3Kind, S3Options, S3Server, moto_path};
pub use silent::SilentServer;
pub use sts::StsStub;
pub use tls::TlsProxy;
pub use util::{free_port, port_is_open, random_token, wait_until};
