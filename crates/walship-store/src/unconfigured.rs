//! [`Unconfigured`]: the store of a sidecar whose configuration cannot be read yet (the
//! ObjectStore or a Secret is missing, or the Role does not grant it). Every request
//! fails, saying why, so the daemon keeps running (its socket, its metrics) and counts
//! failures until a reload brings the real store; nothing is ever reported missing.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{ErrorKind, MultipartUpload, ObjectInfo, PutOptions, Store, StoreError};

/// A store that refuses every request with `reason`.
#[derive(Debug, Clone)]
pub struct Unconfigured {
    reason: String,
}

impl Unconfigured {
    pub fn new(reason: impl Into<String>) -> Unconfigured {
        Unconfigured {
            reason: reason.into(),
        }
    }

    fn refuse(&self) -> StoreError {
        // Rejected, not NotFound: a restore must never read this as "not archived".
        StoreError::new(ErrorKind::Rejected, self.describe(), &self.reason)
    }
}

#[async_trait]
impl Store for Unconfigured {
    fn describe(&self) -> String {
        "no store configured".to_owned()
    }

    async fn put_create(&self, _: &str, _: Bytes, _: &PutOptions) -> Result<(), StoreError> {
        Err(self.refuse())
    }

    async fn get(&self, _: &str) -> Result<(Bytes, ObjectInfo), StoreError> {
        Err(self.refuse())
    }

    async fn head(&self, _: &str) -> Result<Option<ObjectInfo>, StoreError> {
        Err(self.refuse())
    }

    async fn list(&self, _: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        Err(self.refuse())
    }

    async fn delete(&self, _: &str) -> Result<(), StoreError> {
        Err(self.refuse())
    }

    async fn put_replace(&self, _: &str, _: Bytes, _: &PutOptions) -> Result<(), StoreError> {
        Err(self.refuse())
    }

    async fn get_range(&self, _: &str, _: Range<u64>) -> Result<Bytes, StoreError> {
        Err(self.refuse())
    }

    async fn start_multipart(
        &self,
        _: &str,
        _: &PutOptions,
    ) -> Result<Arc<dyn MultipartUpload>, StoreError> {
        Err(self.refuse())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_request_fails_with_the_reason_and_nothing_reads_as_missing() {
        let store = Unconfigured::new("ObjectStore \"db\"/\"s3\" does not exist");
        let errors = [
            store.get("k").await.unwrap_err(),
            store.head("k").await.unwrap_err(),
            store.list("").await.unwrap_err(),
            store.get_range("k", 0..1).await.unwrap_err(),
            store
                .put_create("k", Bytes::new(), &PutOptions::default())
                .await
                .unwrap_err(),
        ];
        for e in errors {
            assert_eq!(e.kind(), ErrorKind::Rejected);
            assert!(e.to_string().contains("does not exist"), "{e}");
        }
    }
}
