//! Where walship's identities come from: secrets mounted from Kubernetes, or the
//! ambient identity of the pod (IRSA's web-identity token, instance roles, Azure and
//! GKE workload identity).
//!
//! The config crate says *which* secret holds a credential; this crate reads it and turns
//! it into something a cloud client can sign with. Each cloud gets one resolved type
//! ([`S3Access`], [`AzureCredentialSource`], [`GoogleCredentialSource`]) so callers match on
//! a closed set of sources instead of re-reading configuration. Secret values stay inside
//! [`walship_secret::Secret`] (redacting `Debug`) until the moment a client needs them.
//!
//! Expiring tokens are refreshed by the providers handed to the SDKs: for S3 that is
//! aws-config's default chain, whose web-identity provider re-assumes the role before the
//! session expires, behind the SDK's identity cache, and behind [`held_until_expiry`],
//! which keeps the credentials in hand while they still sign when a refresh fails.
//!
//! Dependencies: `walship-config` (secret references and the secrets directory),
//! `aws-config` (the default credential chain: environment, web identity/IRSA, ECS,
//! instance metadata), `aws-credential-types` (the provider type the S3 client takes),
//! `thiserror`, `tracing`.

mod azure;
mod google;
mod held;
mod observe;
mod s3;
#[cfg(test)]
mod test_support;

pub use azure::{AzureCredentialSource, azure_access};
pub use google::{GoogleCredentialSource, google_access};
pub use held::{STILL_VALID_FOR, held_until_expiry};
pub use observe::{RefreshObserver, observed_s3_provider};
pub use s3::{S3Access, S3CredentialSource, s3_access};

/// Why a credential could not be resolved. Names the secret and key, never a value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{field}: {source}")]
    Secret {
        /// The configuration field that referenced the secret, e.g.
        /// `spec.configuration.s3Credentials.accessKeyId`.
        field: String,
        #[source]
        source: walship_config::SecretError,
    },
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
}

/// Reads a value that names something (a storage account, a region) for the
/// configuration field `field`, trimmed; an empty value is an error. Unlike a secret it
/// stays readable in logs.
fn read_nonempty_name(
    secrets: &walship_config::Secrets,
    field: &str,
    r: &walship_config::SecretRef,
) -> Result<String, CredentialError> {
    let value = secrets
        .read_name(r)
        .map_err(|source| CredentialError::Secret {
            field: field.to_owned(),
            source,
        })?;
    let value = value.trim();
    if value.is_empty() {
        return Err(CredentialError::Invalid {
            field: field.to_owned(),
            problem: format!(
                "secret {:?} key {:?} is empty; expected a non-empty value",
                r.name, r.key
            ),
        });
    }
    Ok(value.to_owned())
}

/// Reads the secret `r` for the configuration field `field`; an empty value is an error
/// (a key that was created but never filled in).
fn read_nonempty(
    secrets: &walship_config::Secrets,
    field: &str,
    r: &walship_config::SecretRef,
) -> Result<walship_secret::Secret, CredentialError> {
    let secret = secrets.read(r).map_err(|source| CredentialError::Secret {
        field: field.to_owned(),
        source,
    })?;
    if secret.expose().trim().is_empty() {
        return Err(CredentialError::Invalid {
            field: field.to_owned(),
            problem: format!(
                "secret {:?} key {:?} is empty; expected a non-empty value",
                r.name, r.key
            ),
        });
    }
    Ok(secret)
}
