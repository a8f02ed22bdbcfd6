//! Google credentials: a service-account JSON key from a secret, or GKE Workload Identity.

use walship_config::GoogleCredentials;
use walship_secret::Secret;

use crate::{CredentialError, read_nonempty};

const FIELD: &str = "spec.configuration.googleCredentials";

/// How a Google client authenticates. The config crate has already checked that exactly
/// one way is configured. The GCS store takes it as it is and exposes the key only where
/// gcp_auth signs with it, so the derived `Debug` (the `Secret` redacts itself) is the
/// only one.
#[derive(Debug, Clone)]
pub enum GoogleCredentialSource {
    /// `applicationCredentials`: the service-account JSON key, held in memory (never
    /// written out, never logged).
    ServiceAccountKey(Secret),
    /// `gkeEnvironment: true`: the pod's Workload Identity, through the metadata server.
    GkeWorkloadIdentity,
}

/// Reads the secret `creds` names.
pub fn google_access(
    creds: &GoogleCredentials,
    secrets: &walship_config::Secrets,
) -> Result<GoogleCredentialSource, CredentialError> {
    if let Some(r) = &creds.application_credentials {
        let key = read_nonempty(secrets, &format!("{FIELD}.applicationCredentials"), r)?;
        return Ok(GoogleCredentialSource::ServiceAccountKey(key));
    }
    if creds.gke_environment {
        return Ok(GoogleCredentialSource::GkeWorkloadIdentity);
    }
    Err(CredentialError::Invalid {
        field: FIELD.to_owned(),
        problem: "no credential given; expected applicationCredentials or gkeEnvironment: true"
            .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{r, secrets_with};

    #[test]
    fn the_seed_key_is_read_and_redacted() {
        let (_d, secrets) = secrets_with(&[(
            "backup-creds",
            "gcsCredentials",
            r#"{"type":"service_account","private_key":"topsecret"}"#,
        )]);
        let source = google_access(
            &GoogleCredentials {
                application_credentials: r("backup-creds", "gcsCredentials"),
                gke_environment: false,
            },
            &secrets,
        )
        .unwrap();
        assert!(
            matches!(&source, GoogleCredentialSource::ServiceAccountKey(s) if s.expose().contains("topsecret"))
        );
        assert!(!format!("{source:?}").contains("topsecret"));
        let gke = google_access(
            &GoogleCredentials {
                application_credentials: None,
                gke_environment: true,
            },
            &secrets,
        )
        .unwrap();
        assert!(matches!(gke, GoogleCredentialSource::GkeWorkloadIdentity));
    }

    #[test]
    fn a_missing_or_empty_key_names_the_field_and_the_keys_that_exist() {
        let (_d, secrets) = secrets_with(&[
            ("backup-creds", "credentials.json", "{}"),
            ("empty", "gcsCredentials", " \n"),
        ]);
        let err = google_access(
            &GoogleCredentials {
                application_credentials: r("backup-creds", "gcsCredentials"),
                gke_environment: false,
            },
            &secrets,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("googleCredentials.applicationCredentials"),
            "{err}"
        );
        assert!(err.contains("credentials.json"), "{err}");
        let err = google_access(
            &GoogleCredentials {
                application_credentials: r("empty", "gcsCredentials"),
                gke_environment: false,
            },
            &secrets,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is empty"), "{err}");
    }
}
