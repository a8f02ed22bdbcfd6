//! Counting credential loads: the SDKs refresh expiring credentials internally, behind
//! their identity caches, so the only place to see a refresh is the provider itself.

use std::fmt;
use std::sync::Arc;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};

/// Told the outcome (`true` for success) of every credential load.
pub type RefreshObserver = Arc<dyn Fn(bool) + Send + Sync>;

/// `provider`, reporting each load to `observer`. Behind the SDK's identity cache a
/// load happens once at start and then only when the credentials near expiry.
pub fn observed_s3_provider(
    provider: SharedCredentialsProvider,
    observer: RefreshObserver,
) -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Observed {
        inner: provider,
        observer,
    })
}

struct Observed {
    inner: SharedCredentialsProvider,
    observer: RefreshObserver,
}

impl fmt::Debug for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observed")
            .field("inner", &self.inner)
            .finish()
    }
}

impl ProvideCredentials for Observed {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let result = self.inner.provide_credentials().await;
            (self.observer)(result.is_ok());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::error::CredentialsError;
    use std::sync::Mutex;

    #[derive(Debug)]
    struct Failing;

    impl ProvideCredentials for Failing {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            future::ProvideCredentials::ready(Err(CredentialsError::not_loaded("no token")))
        }
    }

    #[tokio::test]
    async fn every_load_and_its_outcome_is_reported() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let observer: RefreshObserver = {
            let seen = seen.clone();
            Arc::new(move |ok| seen.lock().unwrap().push(ok))
        };
        let good = observed_s3_provider(
            SharedCredentialsProvider::new(Credentials::for_tests()),
            observer.clone(),
        );
        let bad = observed_s3_provider(SharedCredentialsProvider::new(Failing), observer);
        assert!(good.provide_credentials().await.is_ok());
        assert!(bad.provide_credentials().await.is_err());
        assert!(good.provide_credentials().await.is_ok());
        assert_eq!(*seen.lock().unwrap(), [true, false, true]);
    }
}
