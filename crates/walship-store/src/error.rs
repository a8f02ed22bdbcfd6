//! Why a store operation failed: one [`ErrorKind`] for every cloud, the message the
//! user reads, and the error that caused it.
//!
//! Retry decisions, metrics and exit statuses look at the kind only, never at the text:
//! a kind is decided once, where the answer is read ([`crate::status`] for HTTP
//! answers, each store for its transport failures), and travels unchanged from there.

use std::fmt;
use std::time::Duration;

/// The cause of an error as a boxed trait object, as SDKs hand them over.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure a store operation met. Closed: metrics use it as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A create-only put found an object under the key (412, `BlobAlreadyExists`).
    AlreadyExists,
    /// No object under the key (404).
    NotFound,
    /// The bucket or container does not exist.
    ContainerMissing,
    /// The credentials were refused, or lack a permission (401, 403, a token endpoint's
    /// 4xx, no credentials at all).
    Denied,
    /// The store asks the client to slow down (429, `SlowDown`, `ServerBusy`).
    Throttled,
    /// The store failed to serve the request (5xx, 408).
    Server,
    /// A conditional request raced another one on the same key (409 on S3); trying
    /// again settles which one won.
    Conflict,
    /// No connection could be made, or it broke before an answer came.
    Connection,
    /// The store accepted the request but did not answer within its deadline.
    TimedOut,
    /// The answer was cut short or malformed (a body shorter than announced, JSON that
    /// does not parse, a protocol step the store skipped).
    Response,
    /// The store refused the request as invalid (another 4xx); repeating it will not
    /// help.
    Rejected,
    /// The local file to upload could not be read, or changed while it was read.
    Source,
    /// A request was refused for its time: this machine's clock and the server's differ
    /// by more than it allows (S3's `RequestTimeTooSkewed`, 15 minutes; or a refusal
    /// from a server whose `Date` is further than [`crate::status::CLOCK_TOLERANCE`]
    /// from this machine's clock, [`crate::status::with_clock`]). Tried again: the S3
    /// SDK corrects its signing time from the store's answer, and a clock put right by
    /// its time service heals it too.
    ClockSkew,
}

impl ErrorKind {
    /// Every kind, for closed metric label sets and tests.
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::AlreadyExists,
        ErrorKind::NotFound,
        ErrorKind::ContainerMissing,
        ErrorKind::Denied,
        ErrorKind::Throttled,
        ErrorKind::Server,
        ErrorKind::Conflict,
        ErrorKind::Connection,
        ErrorKind::TimedOut,
        ErrorKind::Response,
        ErrorKind::Rejected,
        ErrorKind::Source,
        ErrorKind::ClockSkew,
    ];

    /// Whether the same request may succeed later without anything being changed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Throttled
                | ErrorKind::Server
                | ErrorKind::Conflict
                | ErrorKind::Connection
                | ErrorKind::TimedOut
                | ErrorKind::Response
                | ErrorKind::ClockSkew
        )
    }

    /// A short lower-case name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::NotFound => "not_found",
            ErrorKind::ContainerMissing => "container_missing",
            ErrorKind::Denied => "denied",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Server => "server",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Connection => "connection",
            ErrorKind::TimedOut => "timed_out",
            ErrorKind::Response => "response",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Source => "source",
            ErrorKind::ClockSkew => "clock_skew",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a store operation failed. The message names the key and the store, never a
/// credential; the kind says what to do about it; the source is the error that caused
/// it (an SDK's or the transport's), for `error_chain` and debugging.
pub struct StoreError {
    kind: ErrorKind,
    message: String,
    source: Option<BoxError>,
    retry_after: Option<Duration>,
}

impl StoreError {
    /// An error of `kind` in `store`; `detail` says what happened (the key included).
    pub fn new(kind: ErrorKind, store: impl fmt::Display, detail: impl fmt::Display) -> Self {
        let message = match kind {
            ErrorKind::ContainerMissing => {
                format!("{store}: the bucket or container does not exist: {detail}")
            }
            ErrorKind::Denied => format!(
                "{store}: access denied ({detail}); check the credentials and their permissions"
            ),
            ErrorKind::Connection => format!("{store}: cannot reach the store: {detail}"),
            ErrorKind::ClockSkew => format!(
                "{store}: a request was refused for its time ({detail}): this machine's \
                 clock differs from the server's by more than it allows; check the time \
                 synchronisation (NTP) of the node"
            ),
            _ => format!("{store}: {detail}"),
        };
        StoreError {
            kind,
            message,
            source: None,
            retry_after: None,
        }
    }

    /// The credentials the store signs with could not be obtained from a credential
    /// endpoint (STS, Azure AD, a token endpoint, the metadata server). A refusal reads
    /// as access denied; anything else says the endpoint failed, so an endpoint that is
    /// down is not taken for wrong credentials (nor for the store being unreachable).
    pub fn credentials(
        kind: ErrorKind,
        store: impl fmt::Display,
        detail: impl fmt::Display,
    ) -> Self {
        // Their own wording: the credentials are refused, or the clock is off.
        if matches!(kind, ErrorKind::Denied | ErrorKind::ClockSkew) {
            return Self::new(kind, store, detail);
        }
        StoreError {
            kind,
            message: format!("{store}: cannot obtain credentials: {detail}"),
            source: None,
            retry_after: None,
        }
    }

    /// A request refused for its time ([`ErrorKind::ClockSkew`]); `offset`, the server's
    /// clock as its answer's `Date` gave it, is named after `detail` when it is beyond
    /// [`crate::status::CLOCK_TOLERANCE`].
    pub fn clock_skew(
        store: impl fmt::Display,
        detail: impl fmt::Display,
        offset: Option<crate::status::ClockOffset>,
    ) -> Self {
        match offset.filter(crate::status::ClockOffset::is_skew) {
            Some(offset) => Self::new(ErrorKind::ClockSkew, store, format!("{detail}; {offset}")),
            None => Self::new(ErrorKind::ClockSkew, store, detail),
        }
    }

    /// The store refused the temporary credentials as expired
    /// ([`crate::status::is_expired_credentials`]): [`ErrorKind::Denied`], worded for
    /// what it is, since the identity and its permissions are fine and only fresh
    /// credentials are missing.
    pub fn expired_credentials(store: impl fmt::Display, detail: impl fmt::Display) -> Self {
        StoreError {
            kind: ErrorKind::Denied,
            message: format!(
                "{store}: the temporary credentials in hand have expired and no fresh ones \
                 came ({detail}); check that their source (STS, the instance metadata \
                 service) answers: archiving goes on once it hands out fresh ones"
            ),
            source: None,
            retry_after: None,
        }
    }

    /// A create-only put found an object under `key`.
    pub fn already_exists(store: impl fmt::Display, key: &str) -> Self {
        StoreError {
            kind: ErrorKind::AlreadyExists,
            message: format!("{key}: an object with this key already exists in {store}"),
            source: None,
            retry_after: None,
        }
    }

    /// No object under `key`.
    pub fn not_found(store: impl fmt::Display, key: &str) -> Self {
        StoreError {
            kind: ErrorKind::NotFound,
            message: format!("{key}: no such object in {store}"),
            source: None,
            retry_after: None,
        }
    }

    /// The store accepted the request but did not answer (or finish answering) within
    /// `after` ([`crate::deadline`]): a silent or stalled store. `what` names the call
    /// and the key, e.g. `PutObject wals/0000.../...`.
    pub fn timed_out(store: impl fmt::Display, what: impl fmt::Display, after: Duration) -> Self {
        StoreError {
            kind: ErrorKind::TimedOut,
            message: format!(
                "{store}: {what} got no answer within {} s; the store is not answering",
                after.as_secs()
            ),
            source: None,
            retry_after: None,
        }
    }

    /// The error for a local file that could not be read for an upload (not the store's
    /// fault, and not transient: the file itself is wrong).
    pub fn source_file(store: impl fmt::Display, path: &std::path::Path, detail: &str) -> Self {
        StoreError::new(
            ErrorKind::Source,
            store,
            format!("reading {} for upload: {detail}", path.display()),
        )
    }

    /// Keeps `source` as the cause. Its text must already be scrubbed of secrets: it is
    /// printed by `error_chain`.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The wait the store asked for before a retry (`Retry-After`).
    pub fn with_retry_after(mut self, wait: Option<Duration>) -> Self {
        self.retry_after = wait;
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the same request may succeed later without anything being changed.
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }

    /// The wait the store asked for before a retry, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source.as_ref().map(|s| s.to_string()))
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// An error and its sources on one line (`a: b: c`), skipping a source whose text the
/// line already holds; SDK errors often nest their real cause several levels down.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_store_and_the_key_as_before_the_kinds_existed() {
        let cases = [
            (
                StoreError::already_exists("s3://b", "wals/x"),
                "wals/x: an object with this key already exists in s3://b",
            ),
            (
                StoreError::not_found("s3://b", "wals/x"),
                "wals/x: no such object in s3://b",
            ),
            (
                StoreError::new(ErrorKind::Denied, "s3://b", "HTTP 403 AccessDenied"),
                "s3://b: access denied (HTTP 403 AccessDenied); check the credentials and \
                 their permissions",
            ),
            (
                StoreError::new(ErrorKind::Connection, "s3://b", "connection refused"),
                "s3://b: cannot reach the store: connection refused",
            ),
            (
                StoreError::new(
                    ErrorKind::ContainerMissing,
                    "s3://b",
                    "HTTP 404 NoSuchBucket",
                ),
                "s3://b: the bucket or container does not exist: HTTP 404 NoSuchBucket",
            ),
            (
                StoreError::timed_out("s3://b", "PutObject wals/x", Duration::from_secs(41)),
                "s3://b: PutObject wals/x got no answer within 41 s; the store is not answering",
            ),
            (
                StoreError::new(ErrorKind::Server, "s3://b", "wals/x: HTTP 503"),
                "s3://b: wals/x: HTTP 503",
            ),
            (
                StoreError::new(
                    ErrorKind::ClockSkew,
                    "s3://b",
                    "HTTP 403 RequestTimeTooSkewed",
                ),
                "s3://b: a request was refused for its time (HTTP 403 RequestTimeTooSkewed): \
                 this machine's clock differs from the server's by more than it allows; check \
                 the time synchronisation (NTP) of the node",
            ),
            (
                StoreError::expired_credentials("s3://b", "HTTP 400 ExpiredToken"),
                "s3://b: the temporary credentials in hand have expired and no fresh ones came \
                 (HTTP 400 ExpiredToken); check that their source (STS, the instance metadata \
                 service) answers: archiving goes on once it hands out fresh ones",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }

    #[test]
    fn only_failures_of_the_store_or_the_way_to_it_are_transient() {
        let transient: Vec<_> = ErrorKind::ALL
            .into_iter()
            .filter(|k| k.is_transient())
            .collect();
        assert_eq!(
            transient,
            [
                ErrorKind::Throttled,
                ErrorKind::Server,
                ErrorKind::Conflict,
                ErrorKind::Connection,
                ErrorKind::TimedOut,
                ErrorKind::Response,
                ErrorKind::ClockSkew
            ]
        );
    }

    #[test]
    fn the_source_is_kept_and_printed_once_in_the_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let err = StoreError::new(ErrorKind::Connection, "s3://b", "wals/x").with_source(io);
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(
            error_chain(&err),
            "s3://b: cannot reach the store: wals/x: reset by peer"
        );
    }
}
