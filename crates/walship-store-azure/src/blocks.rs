//! Block ids, and walship's metadata and tags in the forms Azure accepts.

use super::*;

pub(crate) use walship_store::upload_nonce;

pub(crate) fn block_id(nonce: &str, index: usize) -> Bytes {
    Bytes::from(format!("{nonce}-{index:06}"))
}

/// Walship's metadata keys (`walship-sha256`) as Azure metadata names (C# identifiers).
pub(crate) fn encode_metadata(metadata: &Metadata) -> Result<Option<AzureMetadata>, String> {
    if metadata.is_empty() {
        return Ok(None);
    }
    let mut out = AzureMetadata::new();
    for (key, value) in metadata {
        let valid_key = !key.is_empty()
            && key.as_bytes()[0].is_ascii_lowercase()
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_key {
            return Err(format!(
                "metadata key {key:?} cannot be stored in Azure: keys must start with a \
                 lower-case letter and contain only a-z, 0-9 and '-'"
            ));
        }
        if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return Err(format!(
                "the value of metadata key {key:?} cannot be stored in Azure: only printable \
                 ASCII is allowed"
            ));
        }
        out.insert(key.replace('-', "_"), value.clone());
    }
    Ok(Some(out))
}

/// Azure metadata names back into walship's keys: the `_` that stood for `-`.
pub(crate) fn decode_metadata(metadata: Option<&HashMap<String, String>>) -> Metadata {
    metadata
        .map(|m| {
            walship_store::metadata_from(m.iter().map(|(k, v)| (k.replace('_', "-"), v.clone())))
        })
        .unwrap_or_default()
}

pub(crate) fn encode_tags(tags: &BTreeMap<String, String>) -> Option<Tags> {
    if tags.is_empty() {
        return None;
    }
    let mut out = Tags::new();
    for (k, v) in tags {
        out.insert(k.clone(), v.clone());
    }
    Some(out)
}
