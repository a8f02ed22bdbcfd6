//! walship-config: the `ObjectStore` document walship is configured with.
//!
//! walship reads the same `barmancloud.cnpg.io/v1` `ObjectStore` YAML that
//! users of the CloudNativePG Barman Cloud plugin already write. This crate
//! turns that text into a typed model ([`ObjectStore`]), checks it the way the
//! plugin and barman-cloud do (and a little more, so mistakes surface before
//! the first WAL segment is due), reports *every* problem at once with its
//! YAML path ([`ConfigErrors`]), parses `destinationPath` into a
//! [`Destination`], and reads the Secret values the document refers to (from
//! a Kubernetes-style secrets directory, or from Secrets another crate read
//! from the Kubernetes API: [`Secrets`]) into walship-secret's redacting
//! `Secret`, registering each value with its scrubber.
//!
//! # What this crate must never do
//!
//! - No I/O other than reading the configuration file ([`load`]) and Secret
//!   files ([`Secrets`]): no network, no environment variables, no writes.
//!   An ObjectStore read from the Kubernetes API comes in as a value
//!   ([`parse_value`]), its Secrets as values ([`Secrets::fetched`]).
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
//! - `walship-secret`: the redacting `Secret` values are read into, and the scrubber
//!   each one is registered with.
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
//!     &walship_config::Destination::S3 { bucket: "backups".into(), prefix: "pg".into() },
//! );
//! assert_eq!(store.spec.configuration.wal_max_parallel(), 1);
//! assert_eq!(store.server_name(Some("cluster-1")).unwrap(), "cluster-1");
//! ```

mod backup_args;
mod destination;
mod error;
mod manifest;
mod model;
mod schema;
mod secrets;
mod validate;

#[cfg(test)]
mod corpus_tests;

use std::path::Path;

pub use backup_args::{BackupCommandArgs, parse_backup_args, parse_size};
pub use destination::Destination;
pub use error::{ConfigError, ConfigErrors};
pub use manifest::Manifest;
pub use model::{
    API_VERSION, AzureCredentials, BarmanObjectStoreConfiguration, Compression,
    DEFAULT_RETENTION_POLICY_INTERVAL_SECONDS, DEFAULT_WAL_MAX_PARALLEL, DataConfig, Encryption,
    GoogleCredentials, InstanceSidecarConfiguration, KIND, ObjectMeta, ObjectStore,
    ObjectStoreSpec, RetentionPolicy, RetentionUnit, S3Credentials, SecretRef, WalConfig,
};
pub use secrets::{SecretError, Secrets};

/// Parse and validate an ObjectStore document. On failure, every problem
/// found is returned: schema problems (unknown fields, types, missing fields;
/// fields of one mapping in name order) first, then the cross-field rules.
pub fn parse(yaml: &str) -> Result<Manifest, ConfigErrors> {
    let options = serde_saphyr::options! {
        // `maxParallel: 010` should not silently become 8 or 10.
        leading_zero_numbers_as_strings: true,
        with_snippet: false,
        budget: Some(budget(yaml.len())),
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_ALIAS_EVENTS,
        },
    };
    let value: serde_json::Value = match serde_saphyr::from_str_with_options(yaml, options) {
        Ok(v) => v,
        Err(e) => return Err(limit_error(&e).unwrap_or_else(|| syntax_error(&e)).into()),
    };
    parse_value(&value)
}

/// Validate an ObjectStore already parsed into a generic value (as the Kubernetes API
/// serves it, without its `status` and server-set metadata), by the same rules as
/// [`parse`].
pub fn parse_value(value: &serde_json::Value) -> Result<Manifest, ConfigErrors> {
    if value.is_null() {
        return Err(ConfigError::new(
            schema::DOCUMENT,
            "is empty",
            "an ObjectStore document (apiVersion: barmancloud.cnpg.io/v1, kind: ObjectStore)",
        )
        .into());
    }

    let mut errs = Vec::new();
    let clean = schema::walk_root(value, &mut errs);
    if !value.is_object() {
        return Err(ConfigErrors(errs));
    }
    match serde_json::from_value::<ObjectStore>(clean) {
        Ok(store) => {
            validate::validate(&store, &mut errs);
            if !errs.is_empty() {
                return Err(ConfigErrors(errs));
            }
            // Validation checked the destination; what it parsed is kept with the
            // document, so nothing downstream parses it again.
            Manifest::new(store).map_err(|e| ConfigErrors(vec![e]))
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
pub fn load(path: &Path) -> Result<Manifest, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            path.display().to_string(),
            format!("cannot be read: {e}"),
            "a readable ObjectStore YAML file",
        )
    })?;
    parse(&text)
}

/// How many YAML events (a scalar, or the start or end of a mapping or list)
/// alias expansion may add to a document, in all. Anchors and aliases let a
/// few lines stand for billions of nodes ("billion laughs"); a configuration
/// that reuses a block (`historyTags: *tags`) needs a few dozen.
const MAX_ALIAS_EVENTS: usize = 100_000;

/// serde-saphyr's budget for a document of `len` bytes.
///
/// Its default caps every document at 250 000 nodes and 1 000 000 events,
/// expanded aliases included: that is what stops an alias bomb, but it also
/// refuses a plain manifest of a few MB, such as `kubectl get -o yaml` output
/// with a large last-applied-configuration or managedFields. Here the two are
/// kept apart. A plain document may have as many nodes as its size allows:
/// the densest YAML (`[?,?,...]`, a list of empty mappings) has 1.5 nodes and
/// 2 events per byte, and the budget allows twice that, so its size is the
/// only limit. Aliases get [`MAX_ALIAS_EVENTS`] on top, enforced by
/// serde-saphyr's alias replay limit, which counts only replayed events.
fn budget(len: usize) -> serde_saphyr::Budget {
    let mut budget = serde_saphyr::Budget::default();
    let slack = MAX_ALIAS_EVENTS + 1024;
    budget.max_nodes = len.saturating_mul(2).saturating_add(slack);
    budget.max_events = len.saturating_mul(4).saturating_add(slack);
    budget
}

/// The message for a document refused by a parser limit (alias expansion,
/// nesting, size) rather than for bad syntax, if that is why it was refused.
fn limit_error(e: &serde_saphyr::Error) -> Option<ConfigError> {
    use serde_saphyr::Error as E;
    use serde_saphyr::budget::BudgetBreach as B;

    let alias_expected =
        format!("aliases (*name) that expand to at most {MAX_ALIAS_EVENTS} YAML events in all");
    // The location of the outer error is where the alias was used.
    let path = e.location().map_or_else(
        || schema::DOCUMENT.to_string(),
        |loc| format!("line {}, column {}", loc.line(), loc.column()),
    );
    let mut inner = e;
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let (problem, expected) = match inner {
        E::AliasReplayLimitExceeded {
            max_total_replayed_events,
            ..
        } => (
            format!(
                "expands its aliases (*name) to more than {max_total_replayed_events} YAML events \
                 (an alias bomb such as \"billion laughs\"?)"
            ),
            alias_expected,
        ),
        E::AliasReplayStackDepthExceeded { max_depth, .. } => (
            format!("nests aliases (*name) more than {max_depth} deep"),
            alias_expected,
        ),
        E::AliasReplayCounterOverflow { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::Budget {
            breach:
                B::Nodes { .. }
                | B::Events { .. }
                | B::Aliases { .. }
                | B::Anchors { .. }
                | B::AliasAnchorRatio { .. }
                | B::RecordedAnchorEvents { .. }
                | B::RecordedAnchorBytes { .. },
            ..
        } => (
            // A plain document never reaches the node and event budgets
            // (see `budget`), so only its aliases and anchors can have.
            "has too many anchors (&name) and aliases (*name), or expands them too far".to_string(),
            alias_expected,
        ),
        E::Budget {
            breach: B::Depth { .. },
            ..
        } => (
            "nests mappings and lists too deep".to_string(),
            format!(
                "at most {} levels of nesting",
                serde_saphyr::Budget::default().max_depth
            ),
        ),
        E::Budget {
            breach: B::ScalarBytes { .. },
            ..
        } => {
            let mib = serde_saphyr::Budget::default().max_total_scalar_bytes >> 20;
            (
                format!("has more than {mib} MiB of keys and values, aliases (*name) expanded"),
                format!("at most {mib} MiB of keys and values"),
            )
        }
        E::Budget { breach, .. } => (
            format!("exceeds a YAML parser limit ({breach:?})"),
            "a smaller or simpler document".to_string(),
        ),
        _ => return None,
    };
    Some(ConfigError::new(path, problem, expected))
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
