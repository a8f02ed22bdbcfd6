//! User metadata stored with an object, and the one way a service's answer becomes it.

use std::collections::BTreeMap;

/// User metadata stored with an object (S3 `x-amz-meta-*`, Azure metadata, GCS metadata).
/// Keys are lower-case ASCII.
pub type Metadata = BTreeMap<String, String>;

/// The user metadata a service returned, as [`Metadata`]: every entry is kept, its name
/// lower-cased (S3 and Azure may return names in another case than they were stored in;
/// walship's keys, `walship-sha256`, are lower-case). A cloud that cannot store walship's
/// names as they are maps them back before calling this (Azure stores `-` as `_`).
pub fn metadata_from<K, V>(entries: impl IntoIterator<Item = (K, V)>) -> Metadata
where
    K: AsRef<str>,
    V: Into<String>,
{
    entries
        .into_iter()
        .map(|(name, value)| (name.as_ref().to_ascii_lowercase(), value.into()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_kept_under_its_lower_case_name() {
        let metadata = metadata_from([
            ("Walship-SHA256", "abc"),
            ("walship-sha256-raw", "def"),
            ("other", "Kept As Is"),
        ]);
        assert_eq!(
            metadata,
            Metadata::from([
                ("walship-sha256".to_owned(), "abc".to_owned()),
                ("walship-sha256-raw".to_owned(), "def".to_owned()),
                ("other".to_owned(), "Kept As Is".to_owned()),
            ])
        );
        assert!(metadata_from(Vec::<(String, String)>::new()).is_empty());
    }
}
