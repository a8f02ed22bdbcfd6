//! walship-config: the `ObjectStore` document walship is configured with.
//!
//! walship reads the same `barmancloud.cnpg.io/v1` `ObjectStore` YAML that
//! users of the CloudNativePG Barman Cloud plugin already write. This crate
//! turns that text into a typed model ([`ObjectStore`]), checks it the way the
//! plugin and barman-cloud do (and a little more, so mistakes surface before
//! the first WAL segment is due), reports *every* problem at once with its
//! YAML path ([`ConfigErrors`]), parses `destinationPath` into a
//! [`Destination`], and reads the Secret values the document refers to from
//! a Kubernetes-style secrets directory ([`SecretsDir`]).
//!
//! # What this crate must never do
//!
//! - No I/O other than reading the configuration file ([`load`]) and Secret
//!   files ([`SecretsDir`]): no network, no environment variables, no writes.
//! - No knowledge of cloud SDKs or how to talk to a store: it says *which*
//!   store and *which* credentials, the store crates decide how to use them.
//! - Never print, log or put into an error a Secret value.
//!
//! # Dependencies and why
//!
//! - `serde` (derive): the typed model.
//! - `serde-saphyr`: YAML parsing (pure Rust, maintained; `serde_yaml` is
//!   deprecated). Used only to get a generic value and syntax errors with
//!   line and column.
//! - `serde_json`: its `Value` is the generic tree the schema walk checks
//!   (unknown fields, types) before the typed model is built from it, and it
//!   holds the Kubernetes objects walship keeps but does not interpret.
//! - `url`: parsing Azure, `file://` and `endpointURL` URLs.
//! - `strsim`: "did you mean ...?" suggestions for misspelled field names.
//! - `thiserror`: the [`SecretError`] type.
//!
//! # Example
//!
//! ```
//! let store = walship_config::parse(r#"
//! apiVersion: barmancloud.cnpg.io/v1
//! kind: ObjectStore
//! metadata:
//!   name: minio-store
//! spec:
//!   configuration:
//!     destinationPath: s3://backups/pg
//!     endpointURL: http://minio:9000
//!     s3Credentials:
//!       inheritFromIAMRole: true
//! "#).unwrap();
//! assert_eq!(
//!     store.destination(),
//!     walship_config::Destination::S3 { bucket: "backups".into(), prefix: "pg".into() },
//! );
//! assert_eq!(store.spec.configuration.wal_max_parallel(), 1);
//! assert_eq!(store.server_name(Some("cluster-1")).unwrap(), "cluster-1");
//! ```

mod destination;
mod error;
mod model;
pub mod redact;
mod schema;
mod secrets;
mod validate;

#[cfg(test)]
mod corpus_tests;

use std::path::Path;

pub use destination::Destination;
pub use error::{ConfigError, ConfigErrors};
pub use model::{
    API_VERSION, AzureCredentials, BarmanObjectStoreConfiguration, Compression,
    DEFAULT_RETENTION_POLICY_INTERVAL_SECONDS, DEFAULT_WAL_MAX_PARALLEL, DataConfig, Encryption,
    GoogleCredentials, InstanceSidecarConfiguration, KIND, ObjectMeta, ObjectStore,
    ObjectStoreSpec, RetentionPolicy, RetentionUnit, S3Credentials, SecretRef, WalConfig,
};
pub use secrets::{Secret, SecretBytes, SecretError, SecretsDir};

/// Parse and validate an ObjectStore document. On failure, every problem
/// found is returned: schema problems (unknown fields, types, missing fields;
/// fields of one mapping in name order) first, then the cross-field rules.
pub fn parse(yaml: &str) -> Result<ObjectStore, ConfigErrors> {
    let options = serde_saphyr::options! {
        // `maxParallel: 010` should not silently become 8 or 10.
        leading_zero_numbers_as_strings: true,
        with_snippet: false,
    };
    let value: serde_json::Value = match serde_saphyr::from_str_with_options(yaml, options) {
        Ok(v) => v,
        Err(e) => return Err(syntax_error(&e).into()),
    };
    if value.is_null() {
        return Err(ConfigError::new(
            schema::DOCUMENT,
            "is empty",
            "an ObjectStore document (apiVersion: barmancloud.cnpg.io/v1, kind: ObjectStore)",
        )
        .into());
    }

    let mut errs = Vec::new();
    let clean = schema::walk_root(&value, &mut errs);
    if !value.is_object() {
        return Err(ConfigErrors(errs));
    }
    match serde_json::from_value::<ObjectStore>(clean) {
        Ok(store) => {
            validate::validate(&store, &mut errs);
            if errs.is_empty() {
                Ok(store)
            } else {
                Err(ConfigErrors(errs))
            }
        }
        Err(e) => {
            // The walk hands serde only values it checked, so this means the
            // schema and the model disagree: a bug, but still reported.
            errs.push(ConfigError::new(
                schema::DOCUMENT,
                format!("does not fit the model: {e}"),
                "an ObjectStore document",
            ));
            Err(ConfigErrors(errs))
        }
    }
}

/// Read `path` and [`parse`] it. An unreadable file gives one error naming it.
pub fn load(path: &Path) -> Result<ObjectStore, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            path.display().to_string(),
            format!("cannot be read: {e}"),
            "a readable ObjectStore YAML file",
        )
    })?;
    parse(&text)
}

fn syntax_error(e: &serde_saphyr::Error) -> ConfigError {
    let e = e.without_snippet();
    let text = e.to_string();
    match e.location() {
        Some(loc) => {
            // The message repeats the location; keep only the description.
            let prefix = format!("line {} column {}: ", loc.line(), loc.column());
            let suffix = format!(" at line {}, column {}", loc.line(), loc.column());
            let message = text
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .trim_start_matches(prefix.as_str())
                .trim_end_matches(suffix.as_str());
            // Drop advice about serde-saphyr's own API, which means nothing
            // to someone editing YAML.
            let message = message
                .split(", set DuplicateKeyPolicy")
                .next()
                .unwrap_or_default()
                .split("; use from_str_multiple")
                .next()
                .unwrap_or_default()
                .to_string();
            ConfigError::new(
                format!("line {}, column {}", loc.line(), loc.column()),
                message,
                "valid YAML",
            )
        }
        None => ConfigError::new(schema::DOCUMENT, text, "valid YAML"),
    }
}
