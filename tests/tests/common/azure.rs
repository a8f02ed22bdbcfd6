//! An Azure archive under test: Azurite with a container, and an ObjectStore manifest in
//! the seed's emulator form (`<scheme>://127.0.0.1:<port>/<account>/<container>/<prefix>`)
//! with one of the seed's credential blocks, its secrets mounted as Kubernetes would.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use tempfile::TempDir;
use walship_testkit::{
    AZURITE_ACCOUNT, AZURITE_KEY, AadOptions, AadStub, AzuriteOptions, AzuriteServer, WalshipBin,
    make_readable_by_pg, pg_temp_dir,
};

use super::{ArchiveHarness, PREFIX, SERVER};

pub const CONTAINER: &str = "walship-e2e";
/// The secret every credential's keys live in, as in the seed.
pub const SECRET: &str = "azure-creds";

/// The seed's ways to authenticate to Azure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzureCredential {
    ConnectionString,
    SharedKey,
    Sas,
    /// `inheritFromAzureAD: true`; the workload identity variables go in
    /// [`AzureArchive::env`].
    WorkloadIdentity,
}

impl AzureCredential {
    /// The `azureCredentials` block, as the seed writes it (key names included).
    pub fn block(self) -> &'static str {
        match self {
            AzureCredential::ConnectionString => {
                "      connectionString:\n        name: azure-creds\n        key: AZURE_CONNECTION_STRING\n"
            }
            AzureCredential::SharedKey => {
                "      storageAccount:\n        name: azure-creds\n        key: AZURE_STORAGE_ACCOUNT\n\
                 \x20     storageKey:\n        name: azure-creds\n        key: AZURE_STORAGE_KEY\n"
            }
            AzureCredential::Sas => {
                "      storageAccount:\n        name: azure-creds\n        key: AZURE_STORAGE_ACCOUNT\n\
                 \x20     storageSasToken:\n        name: azure-creds\n        key: AZURE_STORAGE_SAS_TOKEN\n"
            }
            AzureCredential::WorkloadIdentity => "      inheritFromAzureAD: true\n",
        }
    }
}

/// Azurite with a container, a manifest and secrets; everything stops when dropped.
pub struct AzureArchive {
    pub azurite: AzuriteServer,
    pub dir: TempDir,
    /// Extra environment for walship (workload identity's variables).
    pub env: Vec<(&'static str, String)>,
}

impl AzureArchive {
    /// Plain-HTTP Azurite, gzip.
    pub fn start(credential: AzureCredential) -> Result<AzureArchive> {
        Self::on(AzuriteServer::start()?, credential, "gzip", "")
    }

    /// Plain-HTTP Azurite, the storage account's shared key, `compression`: the
    /// archive the scenarios that are not about credentials run on.
    pub fn shared_key(compression: &str) -> Result<AzureArchive> {
        Self::on(
            AzuriteServer::start()?,
            AzureCredential::SharedKey,
            compression,
            "",
        )
    }

    /// On a given Azurite; `extra` is added to `spec.configuration` as it is (indented
    /// four spaces), for `endpointCA` and the like.
    pub fn on(
        azurite: AzuriteServer,
        credential: AzureCredential,
        compression: &str,
        extra: &str,
    ) -> Result<AzureArchive> {
        azurite.create_container(CONTAINER)?;
        let archive = AzureArchive {
            azurite,
            dir: pg_temp_dir()?,
            env: Vec::new(),
        };
        archive.write_secret(
            "AZURE_CONNECTION_STRING",
            &archive.azurite.connection_string(),
        )?;
        archive.write_secret("AZURE_STORAGE_ACCOUNT", AZURITE_ACCOUNT)?;
        archive.write_secret("AZURE_STORAGE_KEY", AZURITE_KEY)?;
        let sas = archive.azurite.container_sas(
            CONTAINER,
            // What the README says a SAS needs: walship never deletes.
            "rcwl",
            SystemTime::now() + Duration::from_secs(24 * 3600),
        )?;
        archive.write_secret("AZURE_STORAGE_SAS_TOKEN", &sas)?;
        archive.write_manifest(&archive.manifest(credential, compression, extra))?;
        Ok(archive)
    }

    /// The emulator form of an Azure destinationPath.
    pub fn destination(&self) -> String {
        format!("{}/{CONTAINER}/{PREFIX}", self.azurite.blob_endpoint())
    }

    pub fn manifest(&self, credential: AzureCredential, compression: &str, extra: &str) -> String {
        format!(
            "apiVersion: barmancloud.cnpg.io/v1\nkind: ObjectStore\nmetadata:\n  name: azure-store\n\
             spec:\n  configuration:\n    destinationPath: \"{}\"\n{extra}    azureCredentials:\n{}\
             \x20   wal:\n      compression: {compression}\n      maxParallel: 4\n",
            self.destination(),
            credential.block(),
        )
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("objectstore.yaml")
    }

    pub fn write_manifest(&self, yaml: &str) -> Result<()> {
        fs::write(self.config_path(), yaml)?;
        make_readable_by_pg(&self.config_path())
    }

    pub fn secret_path(&self, key: &str) -> PathBuf {
        self.dir.path().join("secrets").join(SECRET).join(key)
    }

    /// Writes `key` of the [`SECRET`] secret.
    pub fn write_secret(&self, key: &str, value: &str) -> Result<()> {
        self.write_secret_in(SECRET, key, value)
    }

    /// Writes `key` of the secret `name`.
    pub fn write_secret_in(&self, name: &str, key: &str, value: &str) -> Result<()> {
        let path = self.dir.path().join("secrets").join(name).join(key);
        fs::create_dir_all(path.parent().context("secret dir")?)?;
        fs::write(&path, value)?;
        make_readable_by_pg(&self.dir.path().join("secrets"))
    }

    /// barman-cloud's tools for this container, with a connection string.
    pub fn barman(&self, tool: &str) -> Result<Command> {
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

impl ArchiveHarness for AzureArchive {
    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn global_args(&self) -> Vec<String> {
        vec![
            "--config".into(),
            self.config_path().display().to_string(),
            "--secrets-dir".into(),
            self.dir.path().join("secrets").display().to_string(),
            "--server-name".into(),
            SERVER.into(),
        ]
    }

    fn walship(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(WalshipBin::path()?);
        cmd.args(self.global_args()).args(args);
        // The tests' own environment must not lend walship an identity.
        for (var, _) in std::env::vars() {
            if var.starts_with("AZURE_") {
                cmd.env_remove(var);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (*k, v)));
        cmd.output().context("running walship")
    }

    fn keys(&self) -> Result<Vec<String>> {
        self.azurite.list_blobs(CONTAINER)
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        self.env.clone()
    }
}

/// Workload identity as AKS sets it up: the webhook's variables, a federated token
/// file, a local Azure AD token endpoint, and Azurite over HTTPS with OAuth whose CA
/// the manifest names in `endpointCA`.
pub struct WorkloadIdentity {
    pub archive: AzureArchive,
    pub aad: AadStub,
    pub token_file: std::path::PathBuf,
    /// Where the kubelet would project the token: outside the directories the daemon
    /// watches for configuration changes, whose reloads would read the file anew anyway.
    _token_dir: tempfile::TempDir,
}

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT: &str = "0f7c2d3e-5a6b-4c8d-9e0f-1a2b3c4d5e6f";
pub const ENDPOINT_CA: &str = "    endpointCA:\n      name: azure-ca\n      key: ca.crt\n";

impl WorkloadIdentity {
    /// `lifetime`: how long the endpoint's access tokens are valid.
    pub fn start(compression: &str, lifetime: Duration) -> Result<WorkloadIdentity> {
        let azurite = AzuriteServer::start_with(AzuriteOptions {
            https_oauth: true,
            ..AzuriteOptions::default()
        })?;
        let ca = fs::read_to_string(azurite.ca_pem_path().expect("an HTTPS Azurite"))?;
        let mut archive = AzureArchive::on(
            azurite,
            AzureCredential::WorkloadIdentity,
            compression,
            ENDPOINT_CA,
        )?;
        archive.write_secret_in("azure-ca", "ca.crt", &ca)?;
        let token_dir = pg_temp_dir()?;
        let token_file = token_dir.path().join("azure-identity-token");
        rotate(&token_file)?;
        let aad = AadStub::start(AadOptions {
            tenant_id: TENANT.to_owned(),
            client_id: CLIENT.to_owned(),
            token_file: token_file.clone(),
            lifetime,
        })?;
        archive.env = vec![
            ("AZURE_CLIENT_ID", CLIENT.to_owned()),
            ("AZURE_TENANT_ID", TENANT.to_owned()),
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                token_file.display().to_string(),
            ),
            ("AZURE_AUTHORITY_HOST", aad.authority_host()),
            ("WALSHIP_FETCH_RETRY_SECONDS", "0".to_owned()),
        ];
        Ok(WorkloadIdentity {
            archive,
            aad,
            token_file,
            _token_dir: token_dir,
        })
    }
}

/// Writes a new projected service-account token, as the kubelet does when it rotates
/// it (a new file renamed over the old one).
pub fn rotate(token_file: &std::path::Path) -> Result<String> {
    let token = format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.sig",
        walship_testkit::random_token(24)
    );
    let tmp = token_file.with_extension("new");
    fs::write(&tmp, &token)?;
    walship_testkit::make_readable_by_pg(&tmp)?;
    fs::rename(&tmp, token_file)?;
    Ok(token)
}
