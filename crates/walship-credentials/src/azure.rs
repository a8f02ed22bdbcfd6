//! Azure credentials: a connection string, a shared key or a SAS token from secrets, or
//! the pod's identity (workload identity, or the default chain).

use walship_config::{AzureCredentials, SecretRef, Secrets};
use walship_secret::Secret;

use crate::{CredentialError, read_nonempty, read_nonempty_name};

const FIELD: &str = "spec.configuration.azureCredentials";

/// How an Azure client authenticates. The config crate has already checked that exactly
/// one way is configured. The Azure store takes it as it is and exposes the secrets only
/// where it builds the SDK's credentials from them, so the derived `Debug` (the `Secret`s
/// redact themselves) is the only one.
#[derive(Debug, Clone)]
pub enum AzureCredentialSource {
    /// `connectionString`: account, key or SAS and endpoints in one string.
    ConnectionString(Secret),
    /// `storageAccount` + `storageKey`.
    SharedKey { account: String, key: Secret },
    /// `storageAccount` + `storageSasToken`.
    Sas { account: String, token: Secret },
    /// `inheritFromAzureAD`: Azure AD Workload Identity (the federated token file, client
    /// and tenant id the webhook injects as environment variables).
    WorkloadIdentity,
    /// `useDefaultAzureCredentials`: the Azure SDK's default chain.
    DefaultCredential,
}

/// Reads the secrets `creds` names.
pub fn azure_access(
    creds: &AzureCredentials,
    secrets: &Secrets,
) -> Result<AzureCredentialSource, CredentialError> {
    let read = |name: &str, r: &SecretRef| read_nonempty(secrets, &format!("{FIELD}.{name}"), r);
    let account = || -> Result<String, CredentialError> {
        match &creds.storage_account {
            Some(r) => read_nonempty_name(secrets, &format!("{FIELD}.storageAccount"), r),
            None => Err(CredentialError::Invalid {
                field: format!("{FIELD}.storageAccount"),
                problem: "is required with storageKey or storageSasToken".to_owned(),
            }),
        }
    };
    if let Some(r) = &creds.connection_string {
        return Ok(AzureCredentialSource::ConnectionString(read(
            "connectionString",
            r,
        )?));
    }
    if let Some(r) = &creds.storage_key {
        return Ok(AzureCredentialSource::SharedKey {
            account: account()?,
            key: read("storageKey", r)?,
        });
    }
    if let Some(r) = &creds.storage_sas_token {
        return Ok(AzureCredentialSource::Sas {
            account: account()?,
            token: read("storageSasToken", r)?,
        });
    }
    if creds.inherit_from_azure_ad {
        return Ok(AzureCredentialSource::WorkloadIdentity);
    }
    if creds.use_default_azure_credentials {
        return Ok(AzureCredentialSource::DefaultCredential);
    }
    Err(CredentialError::Invalid {
        field: FIELD.to_owned(),
        problem: "no credential given; expected connectionString, storageAccount with \
                  storageKey or storageSasToken, inheritFromAzureAD or \
                  useDefaultAzureCredentials"
            .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{r, secrets_with};

    #[test]
    fn each_source_reads_its_secrets_and_redacts_them() {
        let (_d, secrets) = secrets_with(&[
            ("azure", "AZURE_CONNECTION_STRING", "AccountKey=topsecret"),
            ("azure", "AZURE_STORAGE_ACCOUNT", "acct\n"),
            ("azure", "AZURE_STORAGE_KEY", "sharedkeysecret"),
            ("azure", "AZURE_STORAGE_SAS_TOKEN", "sv=2022&sig=sassecret"),
        ]);
        let cs = azure_access(
            &AzureCredentials {
                connection_string: r("azure", "AZURE_CONNECTION_STRING"),
                ..Default::default()
            },
            &secrets,
        )
        .unwrap();
        assert!(
            matches!(&cs, AzureCredentialSource::ConnectionString(s) if s.expose().contains("topsecret"))
        );
        let key = azure_access(
            &AzureCredentials {
                storage_account: r("azure", "AZURE_STORAGE_ACCOUNT"),
                storage_key: r("azure", "AZURE_STORAGE_KEY"),
                ..Default::default()
            },
            &secrets,
        )
        .unwrap();
        let sas = azure_access(
            &AzureCredentials {
                storage_account: r("azure", "AZURE_STORAGE_ACCOUNT"),
                storage_sas_token: r("azure", "AZURE_STORAGE_SAS_TOKEN"),
                ..Default::default()
            },
            &secrets,
        )
        .unwrap();
        for source in [&cs, &key, &sas] {
            let debug = format!("{source:?}");
            assert!(!debug.contains("secret"), "{debug}");
        }
        assert!(
            matches!(&key, AzureCredentialSource::SharedKey { account, .. } if account == "acct")
        );
        assert!(matches!(&sas, AzureCredentialSource::Sas { account, .. } if account == "acct"));
        let wi = azure_access(
            &AzureCredentials {
                inherit_from_azure_ad: true,
                ..Default::default()
            },
            &secrets,
        )
        .unwrap();
        assert!(matches!(wi, AzureCredentialSource::WorkloadIdentity));
    }

    #[test]
    fn the_seed_key_name_mismatch_is_reported_with_the_keys_that_exist() {
        // The seed page names the key AZURE_CONNECTION_STRING while its Secret example
        // holds AZURE_STORAGE_CONNECTION_STRING: the error must say which keys exist.
        let (_d, secrets) =
            secrets_with(&[("azure-creds", "AZURE_STORAGE_CONNECTION_STRING", "x")]);
        let err = azure_access(
            &AzureCredentials {
                connection_string: r("azure-creds", "AZURE_CONNECTION_STRING"),
                ..Default::default()
            },
            &secrets,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("azureCredentials.connectionString"), "{err}");
        assert!(err.contains("AZURE_STORAGE_CONNECTION_STRING"), "{err}");
    }
}
