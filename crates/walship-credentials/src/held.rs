//! Credentials kept while they are valid, when their refresh fails.
//!
//! The SDK's identity cache asks the provider for new credentials a little before the
//! ones it holds expire (ten seconds by default), and when the provider fails there it
//! drops them: a few seconds of STS or the metadata server failing would stop archiving
//! while the credentials in hand still sign. Behind this wrapper a failed load hands
//! back the last credentials while they have [`STILL_VALID_FOR`] left, with a warning,
//! and only then the failure, which names the endpoint.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};

/// The least validity a kept credential must have left to be handed out: enough for one
/// request to be signed and carried out.
pub const STILL_VALID_FOR: Duration = Duration::from_secs(5);

/// `provider`, whose last credentials outlive a failed refresh until they expire.
pub fn held_until_expiry(provider: SharedCredentialsProvider) -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Held {
        inner: provider,
        last: Mutex::new(None),
    })
}

struct Held {
    inner: SharedCredentialsProvider,
    last: Mutex<Option<Credentials>>,
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Held").field("inner", &self.inner).finish()
    }
}

impl ProvideCredentials for Held {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let last = || self.last.lock().unwrap_or_else(|e| e.into_inner());
            match self.inner.provide_credentials().await {
                Ok(fresh) => {
                    *last() = Some(fresh.clone());
                    Ok(fresh)
                }
                Err(e) => {
                    let kept = last().clone();
                    let left = kept
                        .as_ref()
                        .and_then(Credentials::expiry)
                        .and_then(|expiry| expiry.duration_since(SystemTime::now()).ok())
                        .filter(|left| *left >= STILL_VALID_FOR);
                    match (kept, left) {
                        (Some(kept), Some(left)) => {
                            tracing::warn!(
                                valid_for = ?Duration::from_secs(left.as_secs()),
                                "cannot refresh the credentials ({}); signing with the current ones until they expire",
                                chain(&e)
                            );
                            Ok(kept)
                        }
                        _ => Err(e),
                    }
                }
            }
        })
    }
}

/// An error and its sources, as one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(source) = next {
        text.push_str(": ");
        text.push_str(&source.to_string());
        next = source.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use aws_credential_types::provider::error::CredentialsError;

    use super::*;

    /// Hands out credentials valid for `lifetime` from now, or fails while `down`.
    #[derive(Debug)]
    struct Sts {
        lifetime: Duration,
        down: Arc<AtomicBool>,
    }

    impl ProvideCredentials for Sts {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            future::ProvideCredentials::ready(if self.down.load(Ordering::SeqCst) {
                Err(CredentialsError::provider_error(
                    "STS answered with HTTP 503",
                ))
            } else {
                Ok(Credentials::new(
                    "AKIA",
                    "secret",
                    None,
                    Some(SystemTime::now() + self.lifetime),
                    "test",
                ))
            })
        }
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_credentials_that_still_sign_and_not_expiring_ones() {
        let down = Arc::new(AtomicBool::new(false));
        let provider = |lifetime| {
            held_until_expiry(SharedCredentialsProvider::new(Sts {
                lifetime,
                down: down.clone(),
            }))
        };
        let long = provider(Duration::from_secs(60));
        let short = provider(Duration::from_secs(2));
        assert!(long.provide_credentials().await.is_ok());
        assert!(short.provide_credentials().await.is_ok());
        down.store(true, Ordering::SeqCst);
        let kept = long.provide_credentials().await.expect("kept while valid");
        assert_eq!(kept.access_key_id(), "AKIA");
        let err = short
            .provide_credentials()
            .await
            .expect_err("2 s left is too little to sign with");
        assert!(chain(&err).contains("HTTP 503"), "{err}");
        // Nothing loaded yet: nothing to keep.
        assert!(
            provider(Duration::from_secs(60))
                .provide_credentials()
                .await
                .is_err()
        );
    }
}
