//! Google Cloud Storage through fake-gcs-server for the end-to-end tests: the seed's two
//! `googleCredentials` manifests as written (a service-account JSON key with tokens from
//! a local token endpoint, GKE Workload Identity with tokens from a local metadata
//! server), and an [`ArchiveHarness`] so the scenarios every store must pass run here
//! too.
//!
//! The seed's manifests carry no endpoint, so walship finds the emulator through
//! `STORAGE_EMULATOR_HOST` and the metadata server through `GCE_METADATA_HOST`, as
//! Google's own clients do; PostgreSQL's `archive_command` sets them for its child.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result};
use walship_testkit::{
    GcsServer, GoogleTokenServer, MetadataServer, WalshipBin, make_readable_by_pg, pg_temp_dir,
};

use super::ArchiveHarness;

pub const BUCKET: &str = "walship-gcs-e2e";
/// The folder and server name of the seed-manifest archives.
pub const FOLDER: &str = "archive";
pub const SERVER: &str = "pg-gcs";

/// The seed's "Service Account JSON Key" manifest, with `<bucket>` and `<folder>` filled
/// in.
pub fn seed_service_account_manifest() -> String {
    service_account_manifest(FOLDER, "")
}

/// The service-account manifest under `folder`, with `extra` lines appended under
/// `configuration`.
fn service_account_manifest(folder: &str, extra: &str) -> String {
    format!(
        "apiVersion: barmancloud.cnpg.io/v1\nkind: ObjectStore\nmetadata:\n  name: google-store\n\
         spec:\n  configuration:\n    destinationPath: \"gs://{BUCKET}/{folder}\"\n    \
         googleCredentials:\n      applicationCredentials:\n        name: backup-creds\n        \
         key: gcsCredentials\n{extra}"
    )
}

/// The seed's "GKE Workload Identity" manifest.
fn seed_gke_manifest() -> String {
    format!(
        "apiVersion: barmancloud.cnpg.io/v1\nkind: ObjectStore\nmetadata:\n  name: google-store\n\
         spec:\n  configuration:\n    destinationPath: \"gs://{BUCKET}/{FOLDER}\"\n    \
         googleCredentials:\n      gkeEnvironment: true\n"
    )
}

pub enum Identity {
    Key(GoogleTokenServer),
    Gke(MetadataServer),
}

/// fake-gcs-server with a bucket, a manifest and its secrets, and the identity's server.
pub struct GcsArchive {
    pub gcs: GcsServer,
    pub identity: Identity,
    /// Where `GCE_METADATA_HOST` points instead of the metadata server itself (a fault
    /// proxy in front of it).
    pub metadata_host: Option<String>,
    pub dir: tempfile::TempDir,
    folder: &'static str,
    server: &'static str,
}

impl GcsArchive {
    /// The seed's manifest as written: GKE workload identity when `gke`, else a
    /// service-account key.
    pub fn start(gke: bool) -> Result<GcsArchive> {
        if gke {
            let archive = GcsArchive::new(Identity::Gke(MetadataServer::start()?), FOLDER, SERVER)?;
            fs::write(
                archive.dir.path().join("objectstore.yaml"),
                seed_gke_manifest(),
            )?;
            make_readable_by_pg(archive.dir.path())?;
            Ok(archive)
        } else {
            GcsArchive::with_key(FOLDER, SERVER, "")
        }
    }

    /// The archive the shared scenarios expect ([`super::pitr`], [`super::daemon`]):
    /// under the common prefix and server name, compressed as `compression`, with a
    /// service-account key.
    pub fn for_scenarios(compression: &str, max_parallel: u32) -> Result<GcsArchive> {
        GcsArchive::with_key(
            super::PREFIX,
            super::SERVER,
            &format!(
                "    wal:\n      compression: {compression}\n      maxParallel: {max_parallel}\n"
            ),
        )
    }

    /// The same with GKE workload identity: tokens from the metadata server.
    pub fn gke_for_scenarios(compression: &str, max_parallel: u32) -> Result<GcsArchive> {
        let archive = GcsArchive::new(
            Identity::Gke(MetadataServer::start()?),
            super::PREFIX,
            super::SERVER,
        )?;
        fs::write(
            archive.dir.path().join("objectstore.yaml"),
            format!(
                "apiVersion: barmancloud.cnpg.io/v1\nkind: ObjectStore\nmetadata:\n  name: \
                 google-store\nspec:\n  configuration:\n    destinationPath: \
                 \"gs://{BUCKET}/{}\"\n    googleCredentials:\n      gkeEnvironment: true\n    \
                 wal:\n      compression: {compression}\n      maxParallel: {max_parallel}\n",
                super::PREFIX
            ),
        )?;
        make_readable_by_pg(archive.dir.path())?;
        Ok(archive)
    }

    fn with_key(folder: &'static str, server: &'static str, extra: &str) -> Result<GcsArchive> {
        let tokens = GoogleTokenServer::start()?;
        let key = tokens.key_json()?;
        let archive = GcsArchive::new(Identity::Key(tokens), folder, server)?;
        fs::write(
            archive.dir.path().join("objectstore.yaml"),
            service_account_manifest(folder, extra),
        )?;
        let secret = archive.dir.path().join("secrets/backup-creds");
        fs::create_dir_all(&secret)?;
        fs::write(secret.join("gcsCredentials"), key)?;
        make_readable_by_pg(archive.dir.path())?;
        Ok(archive)
    }

    fn new(identity: Identity, folder: &'static str, server: &'static str) -> Result<GcsArchive> {
        let gcs = GcsServer::start()?;
        gcs.create_bucket(BUCKET)?;
        Ok(GcsArchive {
            gcs,
            identity,
            metadata_host: None,
            dir: pg_temp_dir()?,
            folder,
            server,
        })
    }

    pub fn tokens(&self) -> &GoogleTokenServer {
        match &self.identity {
            Identity::Key(t) => t,
            Identity::Gke(_) => panic!("not a service-account archive"),
        }
    }

    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("STORAGE_EMULATOR_HOST", self.gcs.host())];
        if let Identity::Gke(metadata) = &self.identity {
            let host = self
                .metadata_host
                .clone()
                .unwrap_or_else(|| metadata.host());
            env.push(("GCE_METADATA_HOST", host));
        }
        env
    }

    pub fn args(&self) -> Vec<String> {
        vec![
            "--config".into(),
            self.dir
                .path()
                .join("objectstore.yaml")
                .display()
                .to_string(),
            "--secrets-dir".into(),
            self.dir.path().join("secrets").display().to_string(),
            "--server-name".into(),
            self.server.into(),
        ]
    }

    /// An `archive_command` or `restore_command` for PostgreSQL (run through `sh -c`).
    pub fn pg_command(&self, tail: &str) -> Result<String> {
        let env: Vec<String> = self
            .env_vars()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        Ok(format!(
            "{} {} {} {tail}",
            env.join(" "),
            WalshipBin::for_pg()?.display(),
            self.args().join(" ")
        ))
    }

    pub fn walship(&self, args: &[&str]) -> Result<Output> {
        Command::new(WalshipBin::path()?)
            .envs(self.env_vars())
            .args(self.args())
            .args(args)
            .output()
            .context("running walship")
    }

    pub fn barman(&self, tool: &str) -> Result<Command> {
        let venv = walship_testkit::barman_venv()
            .context("the barman-cloud virtualenv is missing: run `cargo xtask install-tools`")?;
        let mut cmd = Command::new(venv.join("bin").join(tool));
        // barman's Google client goes to the emulator, unauthenticated, when this is set.
        cmd.env("STORAGE_EMULATOR_HOST", self.gcs.endpoint())
            .args(["--cloud-provider", "google-cloud-storage"]);
        Ok(cmd)
    }

    pub fn destination(&self) -> String {
        format!("gs://{BUCKET}/{}", self.folder)
    }
}

impl ArchiveHarness for GcsArchive {
    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn global_args(&self) -> Vec<String> {
        self.args()
    }

    fn walship(&self, args: &[&str]) -> Result<Output> {
        GcsArchive::walship(self, args)
    }

    fn keys(&self) -> Result<Vec<String>> {
        let mut keys = self.gcs.object_names(BUCKET, "")?;
        keys.sort();
        Ok(keys)
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        self.env_vars()
    }

    fn archive_command(&self) -> Result<String> {
        self.pg_command("wal-push %p")
    }

    fn restore_command(&self) -> Result<String> {
        self.pg_command("wal-fetch %f %p")
    }
}
