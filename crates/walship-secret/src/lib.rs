//! Secrets and their redaction: the one home of everything that keeps a credential out of
//! what leaves the process.
//!
//! [`Secret`] and [`SecretBytes`] hold a value whose `Debug` and `Display` never show it,
//! so a configuration that holds one can derive `Debug`; the value comes out only through
//! `expose`, at the moment a client signs or sends with it. [`redact`] is the scrubber every
//! log line passes through (each secret read is registered there; signatures and tokens
//! are recognised by what carries them), and [`redact::url`] the one way a URL is shown
//! (no user info, query or fragment). [`ALL_BUT_UNRESERVED`] is the one RFC 3986
//! percent-encoding: the scrubber looks for secrets as URLs carry them, and the stores
//! encode with the same set (S3 tags, GCS object names).
//!
//! This crate must never depend on another walship crate (every crate that handles a
//! secret depends on it), do I/O, or print, log or return a secret's value other than
//! through `expose`.
//!
//! Dependencies: `percent-encoding` (the RFC 3986 encoding, already in the tree through
//! `url`), so that one well-kept implementation encodes secrets, tags and object names.

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

pub mod redact;

/// Every character but RFC 3986's unreserved set (`A-Z a-z 0-9 - . _ ~`) is
/// percent-encoded: how URLs carry SAS signatures (`/`, `+` and `=` encoded), how S3
/// wants tags, and how the GCS JSON API wants an object name as one path segment.
pub const ALL_BUT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` percent-encoded with [`ALL_BUT_UNRESERVED`] (upper-case hex digits).
pub fn percent_encode(text: &str) -> String {
    utf8_percent_encode(text, ALL_BUT_UNRESERVED).to_string()
}

/// A secret string. Its `Debug` and `Display` never show the value.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value (read from a secret, an environment variable, or a test's literal).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself; call this only where it is handed to a client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Take the value out; only where it is handed to a client.
    pub fn into_exposed(self) -> String {
        self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Secret bytes, exactly as stored (CA bundles, JSON keys). Redacted like [`Secret`].
#[derive(Clone)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wrap bytes.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        SecretBytes(value.into())
    }

    /// The bytes themselves.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Take the bytes out.
    pub fn into_exposed(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-very-secret");
        let b = SecretBytes::new(b"hunter2-very-secret".to_vec());
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Derived {
            key: Secret,
            maybe: Option<Secret>,
            bytes: SecretBytes,
        }
        let derived = Derived {
            key: s.clone(),
            maybe: Some(s.clone()),
            bytes: b.clone(),
        };
        for shown in [
            format!("{s:?}"),
            format!("{s}"),
            format!("{b:?}"),
            format!("{b}"),
            format!("{derived:?}"),
            format!("{derived:#?}"),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
        assert_eq!(s.expose(), "hunter2-very-secret");
        assert_eq!(b.expose(), b"hunter2-very-secret");
    }

    #[test]
    fn percent_encoding_keeps_only_the_unreserved_set() {
        assert_eq!(percent_encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(percent_encode("a b&c=d/e+f"), "a%20b%26c%3Dd%2Fe%2Bf");
        assert_eq!(percent_encode("é"), "%C3%A9");
        assert_eq!(percent_encode("\n%"), "%0A%25");
    }
}
