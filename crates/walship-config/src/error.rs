//! Configuration errors: one [`ConfigError`] per problem, collected into
//! [`ConfigErrors`] so a user sees every mistake in one run.

use std::fmt;

/// One problem found in an ObjectStore document.
///
/// Displayed as `<path>: <value quoted> <problem>; expected <what>`, for example
/// `spec.configuration.destinationPath: "s3:/bucket" is not a valid URL; expected s3://BUCKET[/PREFIX], ...`.
/// The value is left out when there is none to show (a missing or unknown field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted YAML path of the field (`spec.configuration.wal.maxParallel`), or
    /// `line L, column C` for YAML syntax errors, or the file path for I/O errors.
    pub path: String,
    /// The offending value as written, when there is one.
    pub value: Option<String>,
    /// What is wrong with it (`is not a valid URL`, `unknown field`, ...).
    pub problem: String,
    /// What would have been accepted.
    pub expected: String,
}

impl ConfigError {
    /// An error about `path` with no value to show.
    pub fn new(
        path: impl Into<String>,
        problem: impl Into<String>,
        expected: impl Into<String>,
    ) -> Self {
        ConfigError {
            path: path.into(),
            value: None,
            problem: problem.into(),
            expected: expected.into(),
        }
    }

    /// An error about the value `value` found at `path`.
    pub fn with_value(
        path: impl Into<String>,
        value: impl Into<String>,
        problem: impl Into<String>,
        expected: impl Into<String>,
    ) -> Self {
        ConfigError {
            path: path.into(),
            value: Some(value.into()),
            problem: problem.into(),
            expected: expected.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path)?;
        if let Some(value) = &self.value {
            write!(f, "{value:?} ")?;
        }
        write!(f, "{}", self.problem)?;
        if !self.expected.is_empty() {
            write!(f, "; expected {}", self.expected)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a document: schema problems first (unknown fields,
/// wrong types, missing fields), then the cross-field rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The individual errors.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    /// Number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no errors (never the case for a returned `Err`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterate over the errors.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
