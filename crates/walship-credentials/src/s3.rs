//! S3 credentials: static keys from secrets, or the ambient AWS identity.

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use walship_config::{S3Credentials, SecretRef, Secrets};
use walship_secret::Secret;

use crate::{CredentialError, read_nonempty, read_nonempty_name};

const FIELD: &str = "spec.configuration.s3Credentials";

/// Everything an S3 client needs to know about who it is and where it signs.
#[derive(Debug)]
pub struct S3Access {
    pub source: S3CredentialSource,
    /// From `s3Credentials.region`, else `AWS_REGION` / `AWS_DEFAULT_REGION`; `None`
    /// leaves the choice to the store (a default for custom endpoints, the AWS chain
    /// otherwise).
    pub region: Option<String>,
}

/// Where the signing identity comes from. The keys stay `Secret`s (its derived `Debug`
/// redacts them) until [`S3Access::provider`] hands them to the SDK.
#[derive(Debug)]
pub enum S3CredentialSource {
    /// `accessKeyId` + `secretAccessKey` (+ `sessionToken`) read from secrets.
    Static {
        access_key_id: Secret,
        secret_access_key: Secret,
        session_token: Option<Secret>,
    },
    /// `inheritFromIAMRole: true`, or no credentials at all: the AWS default chain
    /// (environment, IRSA web-identity token file, ECS, instance metadata).
    Ambient,
}

/// Resolves the S3 credentials a configuration names, reading secrets from `secrets`.
/// The config crate has already checked the combination of fields; this only reads them.
pub fn s3_access(
    creds: Option<&S3Credentials>,
    secrets: &Secrets,
) -> Result<S3Access, CredentialError> {
    let read = |name: &str, r: &SecretRef| read_nonempty(secrets, &format!("{FIELD}.{name}"), r);
    let Some(creds) = creds else {
        return Ok(S3Access {
            source: S3CredentialSource::Ambient,
            region: env_region(),
        });
    };
    let region = match &creds.region {
        Some(r) => Some(read_nonempty_name(secrets, &format!("{FIELD}.region"), r)?),
        None => env_region(),
    };
    let source = match (&creds.access_key_id, &creds.secret_access_key) {
        (Some(id), Some(key)) if !creds.inherit_from_iam_role => S3CredentialSource::Static {
            access_key_id: signable(read("accessKeyId", id)?, "accessKeyId")?,
            secret_access_key: signable(read("secretAccessKey", key)?, "secretAccessKey")?,
            session_token: match &creds.session_token {
                Some(t) => Some(signable(read("sessionToken", t)?, "sessionToken")?),
                None => None,
            },
        },
        (None, None) => S3CredentialSource::Ambient,
        _ if creds.inherit_from_iam_role => S3CredentialSource::Ambient,
        _ => {
            return Err(CredentialError::Invalid {
                field: FIELD.to_owned(),
                problem: "accessKeyId and secretAccessKey must be given together".to_owned(),
            });
        }
    };
    Ok(S3Access { source, region })
}

/// A key goes into request headers as it is: anything but printable ASCII (a newline
/// or a space inside it, a character pasted from a document) cannot be sent, and is
/// refused here, naming the field, before any client is built with it.
fn signable(secret: Secret, name: &str) -> Result<Secret, CredentialError> {
    if secret.expose().trim().bytes().all(|b| b.is_ascii_graphic()) {
        Ok(secret)
    } else {
        Err(CredentialError::Invalid {
            field: format!("{FIELD}.{name}"),
            problem: "holds characters other than printable ASCII (a space or line break \
                      inside it, or a character pasted from a document); expected the key \
                      exactly as AWS or the storage provider issued it"
                .to_owned(),
        })
    }
}

fn env_region() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .map(|v| v.trim().to_owned())
        .find(|v| !v.is_empty())
}

impl S3Access {
    /// The provider an S3 client signs with. Static keys are wrapped as they are; the
    /// ambient identity is aws-config's default chain, which refreshes expiring
    /// sessions (IRSA tokens rotate hourly) before they lapse.
    pub async fn provider(&self) -> SharedCredentialsProvider {
        match &self.source {
            S3CredentialSource::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => SharedCredentialsProvider::new(Credentials::new(
                access_key_id.expose().trim(),
                secret_access_key.expose().trim(),
                session_token.as_ref().map(|t| t.expose().trim().to_owned()),
                None,
                "walship-secrets",
            )),
            S3CredentialSource::Ambient => {
                // The store's retry policy retries each request, loading credentials
                // included; STS's own client (three attempts by default) and the instance
                // metadata client (four) would multiply those attempts and hide a failing
                // endpoint behind them.
                let provider = aws_config::provider_config::ProviderConfig::default()
                    .with_retry_config(aws_config::retry::RetryConfig::disabled());
                let imds = aws_config::imds::Client::builder()
                    .configure(&provider)
                    .max_attempts(1)
                    .build();
                let mut chain =
                    aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                        .imds_client(imds)
                        .configure(provider);
                if let Some(region) = &self.region {
                    chain = chain.region(aws_config::Region::new(region.clone()));
                }
                SharedCredentialsProvider::new(chain.build().await)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{r, secrets_with};

    #[test]
    fn static_keys_are_read_and_redacted() {
        let (_d, secrets) = secrets_with(&[
            ("aws", "ID", "AKIAEXAMPLE\n"),
            ("aws", "KEY", "very-secret-value"),
            ("aws", "REGION", "eu-west-3"),
        ]);
        let creds = S3Credentials {
            access_key_id: r("aws", "ID"),
            secret_access_key: r("aws", "KEY"),
            region: r("aws", "REGION"),
            ..Default::default()
        };
        let access = s3_access(Some(&creds), &secrets).unwrap();
        assert_eq!(access.region.as_deref(), Some("eu-west-3"));
        let debug = format!("{access:?}");
        assert!(!debug.contains("very-secret-value"), "{debug}");
        assert!(!debug.contains("AKIAEXAMPLE"), "{debug}");
        match access.source {
            S3CredentialSource::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                assert_eq!(access_key_id.expose().trim(), "AKIAEXAMPLE");
                assert_eq!(secret_access_key.expose(), "very-secret-value");
                assert!(session_token.is_none());
            }
            other => panic!("expected static keys, got {other:?}"),
        }
    }

    #[test]
    fn missing_key_names_field_secret_and_key() {
        let (_d, secrets) = secrets_with(&[("aws", "ID", "AKIA")]);
        let creds = S3Credentials {
            access_key_id: r("aws", "ID"),
            secret_access_key: r("aws", "SECRET_KEY"),
            ..Default::default()
        };
        let err = s3_access(Some(&creds), &secrets).unwrap_err().to_string();
        assert!(err.contains("s3Credentials.secretAccessKey"), "{err}");
        assert!(err.contains("SECRET_KEY"), "{err}");
        assert!(err.contains("aws"), "{err}");
    }

    #[test]
    fn empty_secret_is_rejected() {
        let (_d, secrets) = secrets_with(&[("aws", "ID", "AKIA"), ("aws", "KEY", "\n")]);
        let creds = S3Credentials {
            access_key_id: r("aws", "ID"),
            secret_access_key: r("aws", "KEY"),
            ..Default::default()
        };
        let err = s3_access(Some(&creds), &secrets).unwrap_err().to_string();
        assert!(
            err.contains("secretAccessKey") && err.contains("empty"),
            "{err}"
        );
    }

    #[test]
    fn iam_role_and_absent_credentials_use_the_ambient_chain() {
        let (_d, secrets) = secrets_with(&[]);
        let creds = S3Credentials {
            inherit_from_iam_role: true,
            ..Default::default()
        };
        let access = s3_access(Some(&creds), &secrets).unwrap();
        assert!(matches!(access.source, S3CredentialSource::Ambient));
        let access = s3_access(None, &secrets).unwrap();
        assert!(matches!(access.source, S3CredentialSource::Ambient));
    }

    #[tokio::test]
    async fn static_provider_signs_with_the_secret_values() {
        use aws_credential_types::provider::ProvideCredentials;
        let (_d, secrets) = secrets_with(&[("aws", "ID", "AKIA1"), ("aws", "KEY", "s3cr3t\n")]);
        let creds = S3Credentials {
            access_key_id: r("aws", "ID"),
            secret_access_key: r("aws", "KEY"),
            ..Default::default()
        };
        let provider = s3_access(Some(&creds), &secrets).unwrap().provider().await;
        let c = provider.provide_credentials().await.unwrap();
        assert_eq!(c.access_key_id(), "AKIA1");
        assert_eq!(c.secret_access_key(), "s3cr3t");
    }

    #[test]
    fn a_key_that_cannot_go_into_a_header_is_refused_naming_the_field() {
        for (field, value) in [
            ("ACCESS_KEY_ID", "AKIA EXAMPLE"),
            ("ACCESS_SECRET_KEY", "secret\nsplit"),
            ("ACCESS_SECRET_KEY", "s\u{e9}cret-key"),
        ] {
            let mut values = vec![
                ("aws", "ACCESS_KEY_ID", "AKIAEXAMPLE"),
                ("aws", "ACCESS_SECRET_KEY", "secret"),
            ];
            values.retain(|(_, k, _)| *k != field);
            values.push(("aws", field, value));
            let (_dir, secrets) = secrets_with(&values);
            let creds = S3Credentials {
                access_key_id: r("aws", "ACCESS_KEY_ID"),
                secret_access_key: r("aws", "ACCESS_SECRET_KEY"),
                ..S3Credentials::default()
            };
            let err = s3_access(Some(&creds), &secrets).unwrap_err().to_string();
            assert!(err.contains("printable ASCII"), "{err}");
            assert!(!err.contains(value), "{err}");
        }
    }
}
