//! Reading Secret values, from one of two places:
//!
//! - a directory laid out like Kubernetes Secret volumes: `<dir>/<secret name>/<key>`,
//!   where each key is usually a symlink through `..data` to a timestamped directory
//!   (symlinks are followed);
//! - the Secrets themselves, as read from the Kubernetes API (walship-kube), held in
//!   memory: under CloudNativePG the sidecar has no Secret volumes, and a value copied
//!   to disk would outlive the pod on its volume.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use walship_secret::{Secret, SecretBytes, redact};

use crate::model::SecretRef;
use crate::validate::secret_part_problem;

/// Where the Secrets a manifest names are read from.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    source: Source,
}

#[derive(Clone, PartialEq, Eq)]
enum Source {
    /// Mounted Secrets, one sub-directory per Secret.
    Dir(PathBuf),
    /// Secrets read from the API: name → key → value.
    Fetched {
        /// Where they were read (`namespace "db"`), for errors.
        origin: String,
        secrets: Arc<BTreeMap<String, BTreeMap<String, Vec<u8>>>>,
    },
}

impl std::fmt::Debug for Secrets {
    // Names only: the values never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Dir(root) => f.debug_tuple("Secrets::Dir").field(root).finish(),
            Source::Fetched { origin, secrets } => f
                .debug_struct("Secrets::Fetched")
                .field("origin", origin)
                .field("names", &secrets.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// Why a Secret value could not be read. Names the Secret, key and where it was
/// looked for, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {name:?} key {key:?}: the reference is invalid: {reason}")]
    InvalidRef {
        name: String,
        key: String,
        reason: String,
    },
    #[error(
        "secret {name:?} not found: {} is not a directory (is the Secret mounted there?)",
        path.display()
    )]
    MissingSecret {
        name: String,
        key: String,
        path: PathBuf,
    },
    #[error("secret {name:?} not found: it is not among the Secrets read from {origin}")]
    NotFetched {
        name: String,
        key: String,
        origin: String,
    },
    #[error(
        "missing key {key:?} inside secret {name:?}: {at}; available keys: {}",
        if available.is_empty() { "none".to_string() } else { available.join(", ") }
    )]
    MissingKey {
        name: String,
        key: String,
        /// `/etc/walship/secrets/s/k does not exist`, or `the Secret read from …`.
        at: String,
        available: Vec<String>,
    },
    #[error("secret {name:?} key {key:?}: cannot read {}: {source}", path.display())]
    Unreadable {
        name: String,
        key: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("secret {name:?} key {key:?}: {at} is not UTF-8 text")]
    NotUtf8 {
        name: String,
        key: String,
        at: String,
    },
}

impl Secrets {
    /// Secrets mounted under `path` (e.g. `/etc/walship/secrets`).
    pub fn dir(path: impl Into<PathBuf>) -> Self {
        Secrets {
            source: Source::Dir(path.into()),
        }
    }

    /// Secrets read from elsewhere (`origin`, as errors name it): Secret name → key →
    /// value. Nothing is registered with the scrubber until a value is read.
    pub fn fetched(
        origin: impl Into<String>,
        secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    ) -> Self {
        Secrets {
            source: Source::Fetched {
                origin: origin.into(),
                secrets: Arc::new(secrets),
            },
        }
    }

    /// The directory they are mounted in, when they are.
    pub fn mounted_at(&self) -> Option<&Path> {
        match &self.source {
            Source::Dir(root) => Some(root),
            Source::Fetched { .. } => None,
        }
    }

    /// Where the value of `r` is shown to be: `<dir>/<name>/<key>`, or `Secret <name>,
    /// key <key> (<origin>)`.
    pub fn place_of(&self, r: &SecretRef) -> String {
        match &self.source {
            Source::Dir(root) => root.join(&r.name).join(&r.key).display().to_string(),
            Source::Fetched { origin, .. } => {
                format!("Secret {:?}, key {:?} (read from {origin})", r.name, r.key)
            }
        }
    }

    /// Read a text value (access keys, tokens, account names), dropping one
    /// trailing `\n` or `\r\n`: Kubernetes stores values as given, but values
    /// made with `echo` or an editor often end with a newline that would
    /// otherwise become part of a key.
    pub fn read(&self, r: &SecretRef) -> Result<Secret, SecretError> {
        let secret = self.read_text(r)?;
        redact::register(secret.expose());
        Ok(secret)
    }

    /// Read a value that names something rather than grants access (a storage account,
    /// a region): like [`Secrets::read`], but the value stays readable in logs, where
    /// it is what tells an operator which account or region is used.
    pub fn read_name(&self, r: &SecretRef) -> Result<String, SecretError> {
        Ok(self.read_text(r)?.into_exposed())
    }

    fn read_text(&self, r: &SecretRef) -> Result<Secret, SecretError> {
        let bytes = self.read_raw(r)?;
        let mut s = String::from_utf8(bytes).map_err(|_| SecretError::NotUtf8 {
            name: r.name.clone(),
            key: r.key.clone(),
            at: self.place_of(r),
        })?;
        if s.ends_with('\n') {
            s.pop();
            if s.ends_with('\r') {
                s.pop();
            }
        }
        Ok(Secret::new(s))
    }

    /// Read a value byte for byte (CA bundles, JSON key files).
    pub fn read_bytes(&self, r: &SecretRef) -> Result<SecretBytes, SecretError> {
        let bytes = self.read_raw(r)?;
        // Whatever the value is used for, no log line may carry it.
        redact::register(&String::from_utf8_lossy(&bytes));
        Ok(SecretBytes::new(bytes))
    }

    fn read_raw(&self, r: &SecretRef) -> Result<Vec<u8>, SecretError> {
        for part in [&r.name, &r.key] {
            if let Some(reason) = secret_part_problem(part) {
                return Err(SecretError::InvalidRef {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    reason: format!("{part:?} {reason}"),
                });
            }
        }
        match &self.source {
            Source::Dir(root) => read_mounted(root, r),
            Source::Fetched { origin, secrets } => {
                let Some(secret) = secrets.get(&r.name) else {
                    return Err(SecretError::NotFetched {
                        name: r.name.clone(),
                        key: r.key.clone(),
                        origin: origin.clone(),
                    });
                };
                secret
                    .get(&r.key)
                    .cloned()
                    .ok_or_else(|| SecretError::MissingKey {
                        name: r.name.clone(),
                        key: r.key.clone(),
                        at: format!("the Secret read from {origin} has no such key"),
                        available: secret.keys().cloned().collect(),
                    })
            }
        }
    }
}

fn read_mounted(root: &Path, r: &SecretRef) -> Result<Vec<u8>, SecretError> {
    let dir = root.join(&r.name);
    let path = dir.join(&r.key);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !dir.is_dir() {
                return Err(SecretError::MissingSecret {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    path: dir,
                });
            }
            Err(SecretError::MissingKey {
                name: r.name.clone(),
                key: r.key.clone(),
                at: format!("{} does not exist", path.display()),
                available: list_keys(&dir),
            })
        }
        Err(source) => Err(SecretError::Unreadable {
            name: r.name.clone(),
            key: r.key.clone(),
            path,
            source,
        }),
    }
}

/// Key names in a Secret directory, without Kubernetes' own `..data` and
/// `..<timestamp>` entries.
fn list_keys(dir: &Path) -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with(".."))
        .collect();
    keys.sort();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// Build the layout the kubelet creates for a Secret volume:
    /// `<dir>/..2026_01_01_00_00_00.1/<key>`, `..data -> ..2026...`,
    /// `<key> -> ..data/<key>`.
    fn kube_secret(root: &Path, name: &str, entries: &[(&str, &[u8])]) {
        let dir = root.join(name);
        let ts = dir.join("..2026_01_01_00_00_00.123");
        fs::create_dir_all(&ts).unwrap();
        for (k, v) in entries {
            fs::write(ts.join(k), v).unwrap();
        }
        symlink("..2026_01_01_00_00_00.123", dir.join("..data")).unwrap();
        for (k, _) in entries {
            symlink(format!("..data/{k}"), dir.join(k)).unwrap();
        }
    }

    #[test]
    fn reads_through_data_symlinks_and_trims_one_newline() {
        let tmp = tempfile::tempdir().unwrap();
        kube_secret(
            tmp.path(),
            "aws-creds",
            &[
                ("ACCESS_KEY_ID", b"AKIAEXAMPLE\n"),
                ("ACCESS_SECRET_KEY", b"s3cr3t-value\r\n"),
                ("TWO_NEWLINES", b"v\n\n"),
                ("ca.crt", b"-----BEGIN-----\n"),
            ],
        );
        let dir = Secrets::dir(tmp.path());
        let id = dir
            .read(&SecretRef::new("aws-creds", "ACCESS_KEY_ID"))
            .unwrap();
        assert_eq!(id.expose(), "AKIAEXAMPLE");
        let sk = dir
            .read(&SecretRef::new("aws-creds", "ACCESS_SECRET_KEY"))
            .unwrap();
        assert_eq!(sk.expose(), "s3cr3t-value");
        let two = dir
            .read(&SecretRef::new("aws-creds", "TWO_NEWLINES"))
            .unwrap();
        assert_eq!(two.expose(), "v\n");
        let ca = dir
            .read_bytes(&SecretRef::new("aws-creds", "ca.crt"))
            .unwrap();
        assert_eq!(ca.expose(), b"-----BEGIN-----\n");
    }

    #[test]
    fn redacted() {
        let tmp = tempfile::tempdir().unwrap();
        kube_secret(tmp.path(), "s", &[("k", b"hunter2-very-secret")]);
        let dir = Secrets::dir(tmp.path());
        let s = dir.read(&SecretRef::new("s", "k")).unwrap();
        let b = dir.read_bytes(&SecretRef::new("s", "k")).unwrap();
        for shown in [
            format!("{s:?}"),
            format!("{s}"),
            format!("{b:?}"),
            format!("{b}"),
            format!("{:?}", Some(&s)),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
    }

    #[test]
    fn missing_secret_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Secrets::dir(tmp.path());
        let e = dir.read(&SecretRef::new("nope", "KEY")).unwrap_err();
        assert!(matches!(e, SecretError::MissingSecret { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("\"nope\""), "{msg}");
        assert!(
            msg.contains(&tmp.path().join("nope").display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn missing_key_lists_available_keys_but_not_internals() {
        let tmp = tempfile::tempdir().unwrap();
        kube_secret(
            tmp.path(),
            "azure-creds",
            &[("AZURE_STORAGE_KEY", b"x"), ("AZURE_STORAGE_ACCOUNT", b"y")],
        );
        let dir = Secrets::dir(tmp.path());
        let e = dir
            .read(&SecretRef::new("azure-creds", "AZURE_CONNECTION_STRING"))
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "missing key \"AZURE_CONNECTION_STRING\" inside secret \"azure-creds\""
            ),
            "{msg}"
        );
        assert!(
            msg.ends_with("available keys: AZURE_STORAGE_ACCOUNT, AZURE_STORAGE_KEY"),
            "{msg}"
        );
        assert!(!msg.contains("..data"), "{msg}");
    }

    #[test]
    fn not_utf8_and_unreadable() {
        let tmp = tempfile::tempdir().unwrap();
        kube_secret(tmp.path(), "s", &[("bin", &[0xff, 0xfe, 0x00])]);
        fs::create_dir(tmp.path().join("s").join("adir")).unwrap();
        let dir = Secrets::dir(tmp.path());
        let e = dir.read(&SecretRef::new("s", "bin")).unwrap_err();
        assert!(matches!(e, SecretError::NotUtf8 { .. }), "{e:?}");
        assert!(e.to_string().contains("not UTF-8"));
        // The bytes are still available raw.
        assert_eq!(
            dir.read_bytes(&SecretRef::new("s", "bin"))
                .unwrap()
                .expose(),
            &[0xff, 0xfe, 0x00]
        );
        let e = dir.read(&SecretRef::new("s", "adir")).unwrap_err();
        assert!(matches!(e, SecretError::Unreadable { .. }), "{e:?}");
    }

    #[test]
    fn dangling_key_symlink_is_a_missing_key() {
        let tmp = tempfile::tempdir().unwrap();
        kube_secret(tmp.path(), "s", &[("k", b"v")]);
        symlink("..data/gone", tmp.path().join("s").join("gone")).unwrap();
        let e = Secrets::dir(tmp.path())
            .read(&SecretRef::new("s", "gone"))
            .unwrap_err();
        assert!(matches!(e, SecretError::MissingKey { .. }), "{e:?}");
    }

    #[test]
    fn rejects_traversal() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Secrets::dir(tmp.path());
        for r in [
            SecretRef::new("..", "k"),
            SecretRef::new("a", "../../etc/passwd"),
            SecretRef::new("", "k"),
            SecretRef::new("a", ""),
        ] {
            let e = dir.read(&r).unwrap_err();
            assert!(matches!(e, SecretError::InvalidRef { .. }), "{e:?}");
        }
    }
}
