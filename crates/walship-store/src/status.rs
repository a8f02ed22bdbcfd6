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
