//! Azure Blob Storage through Azurite: PostgreSQL archives with `wal-push` using the
//! seed's connection-string and shared-key manifests, `wal-fetch` restores, barman-cloud
//! reads what walship wrote, and walship reads what barman-cloud wrote.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{archived_in_pg_wal, real_segments, sha256_file, stderr};
use walship_testkit::{
    AZURITE_ACCOUNT, AZURITE_KEY, AzuriteServer, InitOptions, PgCluster, WalshipBin,
    make_readable_by_pg, pg_temp_dir,
};

const CONTAINER: &str = "walship-e2e";
const SERVER: &str = "pg-azure";

struct AzureArchive {
    azurite: AzuriteServer,
    dir: tempfile::TempDir,
}

impl AzureArchive {
    /// `credentials` is the `azureCredentials` block, indented for the manifest.
    fn start(credentials: &str) -> Result<AzureArchive> {
        let azurite = AzuriteServer::start()?;
        azurite.create_container(CONTAINER)?;
        let archive = AzureArchive {
            azurite,
            dir: pg_temp_dir()?,
        };
        let secrets = archive.dir.path().join("secrets/azure-creds");
        fs::create_dir_all(&secrets)?;
        fs::write(
            secrets.join("AZURE_STORAGE_CONNECTION_STRING"),
            archive.azurite.connection_string(),
        )?;
        fs::write(secrets.join("AZURE_STORAGE_ACCOUNT"), AZURITE_ACCOUNT)?;
        fs::write(secrets.join("AZURE_STORAGE_KEY"), AZURITE_KEY)?;
        fs::write(
            archive.dir.path().join("objectstore.yaml"),
            format!(
                "apiVersion: barmancloud.cnpg.io/v1\nkind: ObjectStore\nmetadata:\n  name: azure-store\n\
                 spec:\n  configuration:\n    destinationPath: {}\n    azureCredentials:\n{credentials}\
                 \x20   wal:\n      compression: gzip\n",
                archive.destination()
            ),
        )?;
        make_readable_by_pg(archive.dir.path())?;
        Ok(archive)
    }

    /// The emulator form of an Azure destinationPath.
    fn destination(&self) -> String {
        format!("{}/{CONTAINER}/archive", self.azurite.blob_endpoint())
    }

    fn args(&self) -> Vec<String> {
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
            SERVER.into(),
        ]
    }

    fn walship(&self, args: &[&str]) -> Result<Output> {
        Command::new(WalshipBin::path()?)
            .args(self.args())
            .args(args)
            .output()
            .context("running walship")
    }

    fn barman(&self, tool: &str) -> Result<Command> {
        let venv = walship_testkit::barman_venv()
            .context("the barman-cloud virtualenv is missing: run `cargo xtask install-tools`")?;
        let mut cmd = Command::new(venv.join("bin").join(tool));
        cmd.env(
            "AZURE_STORAGE_CONNECTION_STRING",
            self.azurite.connection_string(),
        )
        .args(["--cloud-provider", "azure-blob-storage"]);
        Ok(cmd)
    }
}

const CONNECTION_STRING: &str = "      connectionString:\n        name: azure-creds\n        key: AZURE_STORAGE_CONNECTION_STRING\n";
const SHARED_KEY: &str = "      storageAccount:\n        name: azure-creds\n        key: AZURE_STORAGE_ACCOUNT\n      storageKey:\n        name: azure-creds\n        key: AZURE_STORAGE_KEY\n";

#[test]
fn postgres_archives_to_azurite_and_restores_byte_identical() -> Result<()> {
    let archive = AzureArchive::start(CONNECTION_STRING)?;
    let mut pg = PgCluster::init_temp(InitOptions {
        wal_segsize_mb: Some(1),
    })?;
    let command = format!(
        "{} {} wal-push %p",
        WalshipBin::for_pg()?.display(),
        archive.args().join(" ")
    );
    pg.set_conf(&[
        ("archive_mode", "on"),
        ("archive_command", &command),
        ("wal_keep_size", "1GB"),
    ])?;
    pg.start()?;
    pg.pgbench(&["-i", "-s", "1", "-q"])?;
    let last = pg.switch_wal()?;
    let stats = pg.wait_for_archived(&last, Duration::from_secs(120))?;
    assert_eq!(stats.failed_count, 0, "{}", pg.log_contents());
    let fetched = pg_temp_dir()?;
    let archived = archived_in_pg_wal(pg.data_dir())?;
    assert!(archived.len() >= 3, "{archived:?}");
    for name in &archived {
        let dest = fetched.path().join(name);
        let out = archive.walship(&["wal-fetch", name, dest.to_str().unwrap()])?;
        ensure!(out.status.success(), "{name}: {}", stderr(&out));
        assert_eq!(
            sha256_file(&dest)?,
            sha256_file(&pg.data_dir().join("pg_wal").join(name))?,
            "{name}"
        );
    }
    // barman-cloud reads what walship wrote to Azure.
    let name = &archived[0];
    let dest = fetched.path().join("by-barman");
    let out = archive
        .barman("barman-cloud-wal-restore")?
        .arg(archive.destination())
        .arg(SERVER)
        .arg(name)
        .arg(&dest)
        .output()?;
    ensure!(
        out.status.success(),
        "barman-cloud-wal-restore: {}",
        stderr(&out)
    );
    assert_eq!(
        sha256_file(&dest)?,
        sha256_file(&fetched.path().join(name))?
    );
    Ok(())
}

#[test]
fn shared_key_manifests_work_and_wrong_keys_are_denied_without_leaking() -> Result<()> {
    let archive = AzureArchive::start(SHARED_KEY)?;
    let (wal_dir, segments) = real_segments(2)?;
    let src = wal_dir.path().join(&segments[0]);
    let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    // Identical re-push succeeds; different content under the name is refused.
    let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    let changed_dir = pg_temp_dir()?;
    let changed = changed_dir.path().join(&segments[0]);
    let mut bytes = fs::read(&src)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs::write(&changed, bytes)?;
    let out = archive.walship(&["wal-push", changed.to_str().unwrap()])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refusing to overwrite"),
        "{}",
        stderr(&out)
    );

    // A wrong key: denied, and neither key appears anywhere in the output.
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
    fs::write(
        archive
            .dir
            .path()
            .join("secrets/azure-creds/AZURE_STORAGE_KEY"),
        wrong,
    )?;
    let out = archive.walship(&[
        "wal-push",
        wal_dir.path().join(&segments[1]).to_str().unwrap(),
    ])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("access denied"), "{err}");
    assert!(
        !err.contains(wrong) && !err.contains(AZURITE_KEY),
        "a key leaked: {err}"
    );
    Ok(())
}

#[test]
fn walship_restores_what_barman_cloud_archived_to_azure() -> Result<()> {
    let archive = AzureArchive::start(CONNECTION_STRING)?;
    let (wal_dir, segments) = real_segments(2)?;
    let out_dir = pg_temp_dir()?;
    for (name, flag) in segments.iter().zip(["--gzip", "--zstd"]) {
        let src = wal_dir.path().join(name);
        let out = archive
            .barman("barman-cloud-wal-archive")?
            .arg(flag)
            .arg(archive.destination())
            .arg(SERVER)
            .arg(&src)
            .output()?;
        ensure!(
            out.status.success(),
            "barman-cloud-wal-archive: {}",
            stderr(&out)
        );
        let dest = out_dir.path().join(name);
        let out = archive.walship(&["wal-fetch", name, dest.to_str().unwrap()])?;
        ensure!(out.status.success(), "{}", stderr(&out));
        assert_eq!(sha256_file(&dest)?, sha256_file(&src)?);
        let _ = Path::new(name);
    }
    Ok(())
}
