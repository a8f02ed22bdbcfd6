//! The one mapping from an HTTP error answer to an [`ErrorKind`], for every cloud.
//!
//! S3, Azure Blob Storage and Google Cloud Storage agree on most statuses and differ in
//! their error codes (S3's `<Code>`, Azure's `x-ms-error-code`, GCS's `reason`); the
//! codes that matter are listed here side by side, so a status means the same thing
//! whichever store answered it.

use std::time::Duration;

use crate::ErrorKind;

/// What the failed request was for: a 412 or a 404 means something else for a
/// create-only put than for a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// A create-only put (or a step of one: a block, a part, the commit).
    Create,
    /// A listing: it names no object, so its 404 is the bucket's.
    List,
    /// A read or a delete of one object.
    Read,
    /// A credential exchange (STS, Azure AD, Google's token endpoint, the metadata
    /// server): its 4xx answers refuse the identity, whatever their code.
    Token,
}

/// The kind of an HTTP error answer with status `status` and the service's error
/// `code` (empty when it gave none).
pub fn kind_of(request: Request, status: u16, code: &str) -> ErrorKind {
    if request == Request::Token {
        return match (status, code) {
            // STS throttles with 400 Throttling.
            (429, _) | (_, "Throttling" | "SlowDown" | "TooManyRequests") => ErrorKind::Throttled,
            (408, _) | (500..=599, _) => ErrorKind::Server,
            (400..=499, _) => ErrorKind::Denied,
            _ => ErrorKind::Rejected,
        };
    }
    match (status, code) {
        // Create-only puts carry `If-None-Match: *` (S3, Azure) or
        // `ifGenerationMatch=0` (GCS); nothing else walship sends has a precondition.
        (412, _) | (_, "PreconditionFailed") if request == Request::Create => {
            ErrorKind::AlreadyExists
        }
        (409, "BlobAlreadyExists") => ErrorKind::AlreadyExists,
        (404, "NoSuchBucket" | "ContainerNotFound") | (409, "ContainerBeingDeleted") => {
            ErrorKind::ContainerMissing
        }
        // NoSuchUpload: a multipart upload's id is gone (completed or aborted already).
        (404, "NoSuchKey" | "BlobNotFound" | "NoSuchUpload") => ErrorKind::NotFound,
        // A create or a listing names no existing object, so its 404 can only be the
        // bucket's.
        (404, _) if request != Request::Read => ErrorKind::ContainerMissing,
        (404, _) => ErrorKind::NotFound,
        (429, _) | (_, "SlowDown" | "ServerBusy" | "rateLimitExceeded" | "TooManyRequests") => {
            ErrorKind::Throttled
        }
        // A 403 that is not about the credentials: the request's signed time is too far
        // from the store's clock.
        (_, "RequestTimeTooSkewed") => ErrorKind::ClockSkew,
        // Temporary credentials past their expiry (S3 answers 400): refused until their
        // source hands out fresh ones, see [`is_expired_credentials`].
        (_, code) if is_expired_credentials(code) => ErrorKind::Denied,
        (401 | 403, _)
        | (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied")
        | (_, "AuthenticationFailed" | "AuthorizationFailure") => ErrorKind::Denied,
        // S3 answers 409 when two conditional writes of one key race
        // (ConditionalRequestConflict, OperationAborted): the retry learns who won. Other
        // 409s (Azure's SnapshotsPresent, LeaseIdMissing) stay until someone acts.
        (409, "ConditionalRequestConflict" | "OperationAborted" | "") => ErrorKind::Conflict,
        (408 | 500..=599, _) | (_, "RequestTimeout" | "OperationTimedOut" | "InternalError") => {
            ErrorKind::Server
        }
        _ => ErrorKind::Rejected,
    }
}

/// How far a server's clock may be from this machine's before a refusal from it is
/// put down to the clock. Servers allow 5 minutes (Azure AD, Google's token endpoint
/// checking a signed assertion's `iat` and `exp`) to 15 (S3's and Azure's signed
/// requests); two clocks kept by NTP differ by well under a second, so a refusal from a
/// server 5 minutes away is named for the clock first.
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// How far a server's clock was from this machine's when it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockOffset {
    /// Whether the server's clock is ahead of this machine's (else behind).
    pub server_ahead: bool,
    /// By how much, to the second of the `Date` header.
    pub by: Duration,
}

impl ClockOffset {
    /// Whether the clocks differ by more than [`CLOCK_TOLERANCE`].
    pub fn is_skew(&self) -> bool {
        self.by > CLOCK_TOLERANCE
    }
}

impl std::fmt::Display for ClockOffset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds = self.by.as_secs();
        let amount = match seconds {
            0..120 => format!("{seconds} s"),
            // To the nearest minute: the `Date` has whole seconds, and came a moment ago.
            _ => format!("{} minutes", (seconds + 30) / 60),
        };
        let way = if self.server_ahead {
            "ahead of"
        } else {
            "behind"
        };
        write!(f, "the server's clock is {amount} {way} this machine's")
    }
}

/// The offset between the server's clock, as an answer's `Date` header gives it, and
/// `now`; `None` without a header, or with one that is not an HTTP date.
pub fn clock_offset(date: Option<&str>, now: std::time::SystemTime) -> Option<ClockOffset> {
    let server = httpdate::parse_http_date(date?.trim()).ok()?;
    Some(match server.duration_since(now) {
        Ok(by) => ClockOffset {
            server_ahead: true,
            by,
        },
        Err(behind) => ClockOffset {
            server_ahead: false,
            by: behind.duration(),
        },
    })
}

/// The kind of a refusal once the server's clock is known: a refusal of the
/// credentials ([`ErrorKind::Denied`]) from a server whose clock is further than
/// [`CLOCK_TOLERANCE`] from this machine's is [`ErrorKind::ClockSkew`]. Azure answers a
/// request signed too long ago with its plain `403 AuthenticationFailed`, and Google's
/// token endpoint an assertion out of its time with its plain `400 invalid_grant`: the
/// cause is only in their text, which no kind is decided from, and in the clocks, which
/// are compared instead. Any other kind stays: a 5xx is the server failing, whatever
/// its clock.
pub fn with_clock(kind: ErrorKind, offset: Option<ClockOffset>) -> ErrorKind {
    match (kind, offset) {
        (ErrorKind::Denied, Some(offset)) if offset.is_skew() => ErrorKind::ClockSkew,
        _ => kind,
    }
}

/// Whether an error code says the request's temporary credentials have expired
/// (S3's `ExpiredToken` and `TokenRefreshRequired`): a refusal of the credentials
/// ([`ErrorKind::Denied`]) with its own wording, as nothing is wrong with the identity
/// and its permissions; their source (STS, the instance metadata service) has handed
/// out no fresh ones.
pub fn is_expired_credentials(code: &str) -> bool {
    matches!(code, "ExpiredToken" | "TokenRefreshRequired")
}

/// The wait a `Retry-After` header asks for, in its delay-seconds form (the form S3,
/// Azure and GCS send). An HTTP date is ignored: the policy's backoff applies instead.
pub fn retry_after(header: Option<&str>) -> Option<Duration> {
    let seconds: u64 = header?.trim().parse().ok()?;
    // A store asking for more than a minute is not honoured beyond it: the operation's
    // budget decides whether to wait at all.
    Some(Duration::from_secs(seconds.min(60)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorKind::*;
    use Request::{Create, List, Read};

    #[test]
    fn a_refusal_from_a_server_whose_clock_is_far_from_ours_is_clock_skew() {
        let now = httpdate::parse_http_date("Tue, 01 Dec 2026 12:00:00 GMT").unwrap();
        let ahead = clock_offset(Some("Tue, 01 Dec 2026 12:20:00 GMT"), now).unwrap();
        assert_eq!(
            ahead,
            ClockOffset {
                server_ahead: true,
                by: Duration::from_secs(1200)
            }
        );
        assert_eq!(
            ahead.to_string(),
            "the server's clock is 20 minutes ahead of this machine's"
        );
        let behind = clock_offset(Some("Tue, 01 Dec 2026 11:54:59 GMT"), now).unwrap();
        assert!(!behind.server_ahead && behind.is_skew(), "{behind:?}");
        assert_eq!(with_clock(Denied, Some(ahead)), ClockSkew);
        assert_eq!(with_clock(Denied, Some(behind)), ClockSkew);

        // Within the tolerance, or no readable date: the refusal stands.
        let near = clock_offset(Some("Tue, 01 Dec 2026 12:04:59 GMT"), now).unwrap();
        assert!(!near.is_skew());
        assert_eq!(
            near.to_string(),
            "the server's clock is 5 minutes ahead of this machine's"
        );
        let close = clock_offset(Some("Tue, 01 Dec 2026 12:00:07 GMT"), now).unwrap();
        assert_eq!(
            close.to_string(),
            "the server's clock is 7 s ahead of this machine's"
        );
        assert_eq!(with_clock(Denied, Some(near)), Denied);
        assert_eq!(clock_offset(Some("yesterday"), now), None);
        assert_eq!(clock_offset(None, now), None);
        assert_eq!(with_clock(Denied, None), Denied);
        // A server failing is failing, whatever its clock says.
        assert_eq!(with_clock(Server, Some(ahead)), Server);
        assert_eq!(with_clock(NotFound, Some(ahead)), NotFound);
    }

    #[test]
    fn each_clouds_answers_map_onto_the_same_kinds() {
        let table: &[(Request, u16, &str, ErrorKind)] = &[
            // S3
            (Create, 412, "PreconditionFailed", AlreadyExists),
            (Read, 404, "NoSuchKey", NotFound),
            (Create, 404, "NoSuchBucket", ContainerMissing),
            (Create, 404, "NoSuchUpload", NotFound),
            (Read, 404, "NoSuchBucket", ContainerMissing),
            (Read, 403, "AccessDenied", Denied),
            (Read, 403, "SignatureDoesNotMatch", Denied),
            (Create, 400, "ExpiredToken", Denied),
            (Read, 400, "TokenRefreshRequired", Denied),
            (Create, 503, "SlowDown", Throttled),
            (Create, 409, "ConditionalRequestConflict", Conflict),
            (Create, 409, "OperationAborted", Conflict),
            (Create, 400, "RequestTimeout", Server),
            (Create, 403, "RequestTimeTooSkewed", ClockSkew),
            (Read, 403, "RequestTimeTooSkewed", ClockSkew),
            (Create, 500, "InternalError", Server),
            (Create, 400, "InvalidArgument", Rejected),
            // Azure
            (Create, 412, "ConditionNotMet", AlreadyExists),
            (Create, 409, "BlobAlreadyExists", AlreadyExists),
            (Read, 404, "BlobNotFound", NotFound),
            (Create, 404, "BlobNotFound", NotFound),
            (Read, 404, "ContainerNotFound", ContainerMissing),
            (Create, 409, "ContainerBeingDeleted", ContainerMissing),
            (Read, 403, "AuthenticationFailed", Denied),
            (Read, 403, "AuthorizationPermissionMismatch", Denied),
            (Create, 503, "ServerBusy", Throttled),
            (Create, 500, "OperationTimedOut", Server),
            (Create, 400, "InvalidBlockList", Rejected),
            (Read, 409, "SnapshotsPresent", Rejected),
            // GCS (the error's `reason`)
            (Create, 412, "conditionNotMet", AlreadyExists),
            (Create, 404, "notFound", ContainerMissing),
            (Read, 404, "notFound", NotFound),
            (List, 404, "notFound", ContainerMissing),
            (Read, 401, "required", Denied),
            (Read, 403, "forbidden", Denied),
            (Read, 429, "rateLimitExceeded", Throttled),
            (Read, 408, "", Server),
            (Read, 502, "", Server),
            (Read, 400, "invalid", Rejected),
        ];
        for &(request, status, code, kind) in table {
            assert_eq!(
                kind_of(request, status, code),
                kind,
                "{request:?} {status} {code}"
            );
        }
    }

    /// A credential endpoint failing is not the identity refused: only its 4xx answers
    /// say the identity is wrong, and a throttled or failing endpoint is retried.
    #[test]
    fn a_token_endpoints_4xx_refuses_the_identity_and_its_5xx_is_the_endpoint_failing() {
        for (status, code, kind) in [
            (400, "InvalidIdentityToken", Denied),
            (403, "AccessDenied", Denied),
            (400, "invalid_grant", Denied),
            (401, "", Denied),
            (404, "", Denied),
            (400, "Throttling", Throttled),
            (429, "", Throttled),
            (408, "", Server),
            (500, "", Server),
            (503, "ServiceUnavailable", Server),
        ] {
            assert_eq!(
                kind_of(Request::Token, status, code),
                kind,
                "{status} {code}"
            );
        }
    }

    #[test]
    fn a_412_on_a_read_is_not_taken_for_an_existing_object() {
        assert_eq!(kind_of(Read, 412, ""), Rejected);
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        assert_eq!(retry_after(Some("3")), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(Some("3600")), Some(Duration::from_secs(60)));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }
}
