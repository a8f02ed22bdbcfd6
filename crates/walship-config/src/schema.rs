//! The known field tree of an ObjectStore document, and a walker that checks
//! a generic YAML value against it before serde sees it.
//!
//! serde's `deny_unknown_fields` stops at the first problem and cannot suggest
//! the name that was meant; walking the tree ourselves lets us report every
//! unknown field, wrong type and missing field with its full YAML path, and
//! hand serde a cleaned value that it cannot fail on.

use serde_json::{Map, Value};

use crate::error::ConfigError;

/// What a field may hold.
pub(crate) enum Kind {
    Str,
    Bool,
    /// An integer that fits in `u32` and is at least `min`.
    UInt {
        min: u64,
    },
    StrList,
    StrMap,
    /// A string from a closed set; the empty string means unset, as in the
    /// plugin's Go types.
    Enum {
        what: &'static str,
        values: &'static [&'static str],
    },
    Object(&'static [Field]),
    /// A mapping kept as it is (Kubernetes types walship does not interpret).
    AnyMap,
    /// A list kept as it is.
    AnyList,
    /// Anything, kept or dropped by the typed model (other Kubernetes metadata).
    Any,
}

pub(crate) struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// Describes the expected value when it is missing; empty means "derive
    /// it from `kind`".
    pub what: &'static str,
}

const fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
        what: "",
    }
}

const fn req(name: &'static str, kind: Kind, what: &'static str) -> Field {
    Field {
        name,
        kind,
        required: true,
        what,
    }
}

pub(crate) const WAL_COMPRESSIONS: &[&str] = &["bzip2", "gzip", "lz4", "snappy", "xz", "zstd"];
pub(crate) const DATA_COMPRESSIONS: &[&str] = &["bzip2", "gzip", "lz4", "snappy"];
const ENCRYPTIONS: &[&str] = &["AES256", "aws:kms"];
const LOG_LEVELS: &[&str] = &["error", "warning", "info", "debug", "trace"];

const SECRET_REF: Kind = Kind::Object(&[
    req("name", Kind::Str, "the name of the Secret"),
    req("key", Kind::Str, "the key inside the Secret"),
]);
const ENCRYPTION: Kind = Kind::Enum {
    what: "encryption",
    values: ENCRYPTIONS,
};

const S3_CREDENTIALS: &[Field] = &[
    opt("accessKeyId", SECRET_REF),
    opt("secretAccessKey", SECRET_REF),
    opt("region", SECRET_REF),
    opt("sessionToken", SECRET_REF),
    opt("inheritFromIAMRole", Kind::Bool),
];

const AZURE_CREDENTIALS: &[Field] = &[
    opt("connectionString", SECRET_REF),
    opt("storageAccount", SECRET_REF),
    opt("storageKey", SECRET_REF),
    opt("storageSasToken", SECRET_REF),
    opt("inheritFromAzureAD", Kind::Bool),
    opt("useDefaultAzureCredentials", Kind::Bool),
];

const GOOGLE_CREDENTIALS: &[Field] = &[
    opt("applicationCredentials", SECRET_REF),
    opt("gkeEnvironment", Kind::Bool),
];

const WAL: &[Field] = &[
    opt(
        "compression",
        Kind::Enum {
            what: "WAL compression",
            values: WAL_COMPRESSIONS,
        },
    ),
    opt("encryption", ENCRYPTION),
    opt("maxParallel", Kind::UInt { min: 1 }),
    opt("archiveAdditionalCommandArgs", Kind::StrList),
    opt("restoreAdditionalCommandArgs", Kind::StrList),
];

const DATA: &[Field] = &[
    opt(
        "compression",
        Kind::Enum {
            what: "base backup compression",
            values: DATA_COMPRESSIONS,
        },
    ),
    opt("encryption", ENCRYPTION),
    opt("immediateCheckpoint", Kind::Bool),
    opt("jobs", Kind::UInt { min: 1 }),
    opt("additionalCommandArgs", Kind::StrList),
    opt("restoreAdditionalCommandArgs", Kind::StrList),
];

const CONFIGURATION: &[Field] = &[
    req(
        "destinationPath",
        Kind::Str,
        crate::destination::DESTINATION_EXPECTED,
    ),
    opt("endpointURL", Kind::Str),
    opt("endpointCA", SECRET_REF),
    opt("serverName", Kind::Str),
    opt("s3Credentials", Kind::Object(S3_CREDENTIALS)),
    opt("azureCredentials", Kind::Object(AZURE_CREDENTIALS)),
    opt("googleCredentials", Kind::Object(GOOGLE_CREDENTIALS)),
    opt("wal", Kind::Object(WAL)),
    opt("data", Kind::Object(DATA)),
    opt("tags", Kind::StrMap),
    opt("historyTags", Kind::StrMap),
];

const SIDECAR: &[Field] = &[
    opt("env", Kind::AnyList),
    opt("resources", Kind::AnyMap),
    opt("retentionPolicyIntervalSeconds", Kind::UInt { min: 1 }),
    opt("additionalContainerArgs", Kind::StrList),
    opt(
        "logLevel",
        Kind::Enum {
            what: "log level",
            values: LOG_LEVELS,
        },
    ),
];

const SPEC: &[Field] = &[
    req(
        "configuration",
        Kind::Object(CONFIGURATION),
        "a mapping with at least destinationPath",
    ),
    opt("retentionPolicy", Kind::Str),
    opt("instanceSidecarConfiguration", Kind::Object(SIDECAR)),
];

const METADATA: &[Field] = &[
    req("name", Kind::Str, "the ObjectStore's name"),
    opt("namespace", Kind::Str),
    opt("labels", Kind::StrMap),
    opt("annotations", Kind::StrMap),
    // Set by the API server or by tools; accepted so `kubectl get -o yaml`
    // output works, and ignored.
    opt("uid", Kind::Any),
    opt("resourceVersion", Kind::Any),
    opt("generation", Kind::Any),
    opt("generateName", Kind::Any),
    opt("creationTimestamp", Kind::Any),
    opt("deletionTimestamp", Kind::Any),
    opt("deletionGracePeriodSeconds", Kind::Any),
    opt("ownerReferences", Kind::Any),
    opt("finalizers", Kind::Any),
    opt("managedFields", Kind::Any),
    opt("selfLink", Kind::Any),
];

pub(crate) const ROOT: &[Field] = &[
    req("apiVersion", Kind::Str, crate::model::API_VERSION),
    req("kind", Kind::Str, crate::model::KIND),
    req("metadata", Kind::Object(METADATA), "a mapping with a name"),
    req("spec", Kind::Object(SPEC), "a mapping with configuration"),
    // Written by the plugin's controller; accepted and ignored.
    opt("status", Kind::Any),
];

/// The path shown for the document itself.
pub(crate) const DOCUMENT: &str = "(document)";

/// Check `value` against `fields` (the document root), pushing every problem
/// to `errs`. Returns the value with null, invalid and empty-enum fields
/// removed, which the typed model always accepts.
pub(crate) fn walk_root(value: &Value, errs: &mut Vec<ConfigError>) -> Value {
    walk(value, &Kind::Object(ROOT), "", "", errs).unwrap_or(Value::Object(Map::new()))
}

fn child(path: &str, name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (path.is_empty(), plain) {
        (true, true) => name.to_string(),
        (false, true) => format!("{path}.{name}"),
        (_, false) => format!("{path}[{name:?}]"),
    }
}

fn shown(path: &str) -> &str {
    if path.is_empty() { DOCUMENT } else { path }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn describe(kind: &Kind) -> String {
    match kind {
        Kind::Str => "a string".into(),
        Kind::Bool => "true or false".into(),
        Kind::UInt { min } => format!("an integer of at least {min}"),
        Kind::StrList => "a list of strings".into(),
        Kind::StrMap => "a mapping of strings to strings".into(),
        Kind::Enum { values, .. } => format!("one of {}", values.join(", ")),
        Kind::Object(_) | Kind::AnyMap => "a mapping".into(),
        Kind::AnyList => "a list".into(),
        Kind::Any => "any value".into(),
    }
}

fn wrong_type(path: &str, v: &Value, kind: &Kind) -> ConfigError {
    let mut expected = describe(kind);
    if matches!(kind, Kind::Str) && matches!(v, Value::Number(_) | Value::Bool(_)) {
        expected.push_str(" (put the value in quotes)");
    }
    let problem = format!("is {}", type_name(v));
    match scalar(v) {
        Some(s) => ConfigError::with_value(shown(path), s, problem, expected),
        None => ConfigError::new(shown(path), problem, expected),
    }
}

/// The closest name among `candidates`, if it is close enough to be a typo.
pub(crate) fn suggest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= (name.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Paths of every field called `name` (ignoring case) anywhere in the schema.
fn find_anywhere(fields: &[Field], path: &str, name: &str, out: &mut Vec<String>) {
    for f in fields {
        let p = child(path, f.name);
        if f.name.eq_ignore_ascii_case(name) {
            out.push(p.clone());
        }
        if let Kind::Object(sub) = &f.kind {
            find_anywhere(sub, &p, name, out);
        }
    }
}

fn unknown_field(path: &str, key: &str, fields: &[Field]) -> ConfigError {
    let p = child(path, key);
    let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
    let mut expected = format!("one of {}", names.join(", "));
    if let Some(s) = suggest(key, names.iter().copied()) {
        expected.push_str(&format!(" (did you mean {s:?}?)"));
    } else {
        // A known field at the wrong level, e.g. inheritFromAzureAD directly
        // under configuration: point at the one place it belongs.
        let mut found = Vec::new();
        find_anywhere(ROOT, "", key, &mut found);
        if let [only] = found.as_slice() {
            expected.push_str(&format!(" ({key:?} belongs at {only})"));
        }
    }
    ConfigError::new(p, "unknown field", expected)
}

fn walk(
    v: &Value,
    kind: &Kind,
    path: &str,
    what: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<Value> {
    match kind {
        Kind::Any => Some(v.clone()),
        Kind::Str => v.is_string().then(|| v.clone()).or_else(|| {
            errs.push(wrong_type(path, v, kind));
            None
        }),
        Kind::Bool => v.is_boolean().then(|| v.clone()).or_else(|| {
            errs.push(wrong_type(path, v, kind));
            None
        }),
        Kind::UInt { min } => {
            let n = match v {
                Value::Number(n) => n
                    .as_u64()
                    .map(Ok)
                    .or_else(|| n.as_i64().map(|_| Err("is negative")))
                    .or_else(|| {
                        n.as_f64().map(|f| {
                            if f.fract() == 0.0 && f >= 0.0 {
                                // Saturating: anything huge is reported as too large below.
                                Ok(f as u64)
                            } else {
                                Err("is not a whole number")
                            }
                        })
                    }),
                _ => None,
            };
            match n {
                None => {
                    errs.push(wrong_type(path, v, kind));
                    None
                }
                Some(Err(problem)) => {
                    errs.push(ConfigError::with_value(
                        path,
                        scalar(v).unwrap_or_default(),
                        problem,
                        describe(kind),
                    ));
                    None
                }
                Some(Ok(n)) if n < *min => {
                    errs.push(ConfigError::with_value(
                        path,
                        n.to_string(),
                        "is too small",
                        describe(kind),
                    ));
                    None
                }
                Some(Ok(n)) if n > u64::from(u32::MAX) => {
                    errs.push(ConfigError::with_value(
                        path,
                        n.to_string(),
                        "is too large",
                        format!("{} and at most {}", describe(kind), u32::MAX),
                    ));
                    None
                }
                Some(Ok(n)) => Some(Value::from(n)),
            }
        }
        Kind::Enum { what, values } => match v {
            Value::String(s) if s.is_empty() => None,
            Value::String(s) if values.contains(&s.as_str()) => Some(v.clone()),
            Value::String(s) => {
                let mut expected = describe(kind);
                if let Some(m) = suggest(s, values.iter().copied()) {
                    expected.push_str(&format!(" (did you mean {m:?}?)"));
                }
                errs.push(ConfigError::with_value(
                    path,
                    s.clone(),
                    format!("is not a supported {what}"),
                    expected,
                ));
                None
            }
            _ => {
                errs.push(wrong_type(path, v, kind));
                None
            }
        },
        Kind::StrList => match v {
            Value::Array(items) => {
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    if !item.is_string() {
                        errs.push(wrong_type(&format!("{path}[{i}]"), item, &Kind::Str));
                        ok = false;
                    }
                }
                ok.then(|| v.clone())
            }
            _ => {
                errs.push(wrong_type(path, v, kind));
                None
            }
        },
        Kind::StrMap => match v {
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, item) in map {
                    match item {
                        Value::String(_) => {
                            out.insert(k.clone(), item.clone());
                        }
                        _ => errs.push(wrong_type(&child(path, k), item, &Kind::Str)),
                    }
                }
                Some(Value::Object(out))
            }
            _ => {
                errs.push(wrong_type(path, v, kind));
                None
            }
        },
        Kind::AnyMap => v.is_object().then(|| v.clone()).or_else(|| {
            errs.push(wrong_type(path, v, kind));
            None
        }),
        Kind::AnyList => v.is_array().then(|| v.clone()).or_else(|| {
            errs.push(wrong_type(path, v, kind));
            None
        }),
        Kind::Object(fields) => {
            let Value::Object(map) = v else {
                let mut e = wrong_type(path, v, kind);
                if !what.is_empty() {
                    e.expected = what.to_string();
                }
                errs.push(e);
                return None;
            };
            let mut out = Map::new();
            for (k, item) in map {
                let Some(field) = fields.iter().find(|f| f.name == k) else {
                    errs.push(unknown_field(path, k, fields));
                    continue;
                };
                if item.is_null() {
                    // `wal:` with nothing after it: Kubernetes treats an
                    // explicit null as unset, and so do we.
                    continue;
                }
                if let Some(clean) = walk(item, &field.kind, &child(path, k), field.what, errs) {
                    out.insert(k.clone(), clean);
                }
            }
            for f in fields.iter().filter(|f| f.required) {
                if map.get(f.name).is_none_or(Value::is_null) {
                    let expected = if f.what.is_empty() {
                        describe(&f.kind)
                    } else {
                        f.what.to_string()
                    };
                    errs.push(ConfigError::new(
                        child(path, f.name),
                        "is missing",
                        expected,
                    ));
                }
            }
            Some(Value::Object(out))
        }
    }
}
