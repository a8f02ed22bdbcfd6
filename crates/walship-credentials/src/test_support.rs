//! Secrets directories for the unit tests, laid out as Kubernetes mounts them.

use std::fs;

use walship_config::{SecretRef, Secrets};

/// A temporary secrets directory holding `(secret, key, value)` entries.
pub fn secrets_with(entries: &[(&str, &str, &str)]) -> (tempfile::TempDir, Secrets) {
    let dir = tempfile::tempdir().unwrap();
    for (name, key, value) in entries {
        fs::create_dir_all(dir.path().join(name)).unwrap();
        fs::write(dir.path().join(name).join(key), value).unwrap();
    }
    let secrets = Secrets::dir(dir.path());
    (dir, secrets)
}

/// A reference to `key` in secret `name`.
pub fn r(name: &str, key: &str) -> Option<SecretRef> {
    Some(SecretRef::new(name, key))
}
