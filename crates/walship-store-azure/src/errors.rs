//! SDK errors onto the store's kinds, and the scrubber that keeps secrets out of their
//! text.

use super::*;

/// Removes secrets from text that came back from the SDK or the HTTP client.
#[derive(Clone, Default)]
pub(crate) struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    pub(crate) fn new(secrets: Vec<String>) -> Scrubber {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 4).collect();
        // Longest first, so a token is removed whole before its signature alone.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Scrubber { secrets }
    }

    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "<redacted>");
            }
        }
        // Any SAS signature in a URL, known or not (a user-delegation SAS, say).
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find("sig=") {
            result.push_str(&rest[..at + 4]);
            let tail = &rest[at + 4..];
            let end = tail
                .find(|c: char| c == '&' || c == ')' || c == '"' || c == '\'' || c.is_whitespace())
                .unwrap_or(tail.len());
            if end > 0 {
                result.push_str("<redacted>");
            }
            rest = &tail[end..];
        }
        result.push_str(rest);
        result
    }
}

pub(crate) fn is_invalid_range(err: &azure_core::Error) -> bool {
    matches!(err.kind(), ErrorKind::HttpResponse { status, .. } if u16::from(*status) == 416)
}

/// The HTTP status and error code of an error, looking through credential errors that
/// wrap the token endpoint's answer.
pub(crate) fn http_status(err: &azure_core::Error) -> Option<(u16, String)> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(azure) = e.downcast_ref::<azure_core::Error>()
            && let ErrorKind::HttpResponse { status, error_code } = azure.kind()
        {
            return Some((u16::from(*status), error_code.clone().unwrap_or_default()));
        }
        current = e.source();
    }
    None
}

pub(crate) fn has_io_cause(err: &azure_core::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(azure) = e.downcast_ref::<azure_core::Error>()
            && matches!(azure.kind(), ErrorKind::Io)
        {
            return true;
        }
        if e.is::<std::io::Error>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Maps an SDK error onto the store's error kinds, through the one status mapping every
/// store shares. Pure, so that it can be tested without a server. The SDK's error is
/// not kept as the source: its text can quote a SAS URL.
pub(crate) fn classify(
    store: &str,
    key: &str,
    request: Request,
    err: &azure_core::Error,
    scrubber: &Scrubber,
) -> StoreError {
    // Found wherever it sits in the chain: the SDK wraps a transport error in context.
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut answer = None;
    while let Some(e) = next {
        if let Some(a) = e.downcast_ref::<crate::config::ErrorAnswer>() {
            answer = Some(a);
            break;
        }
        next = e.source();
    }
    let clock = answer.and_then(|a| a.clock);
    classify_kind(store, key, request, err, clock, scrubber)
        .with_retry_after(answer.and_then(|a| a.wait))
}

fn classify_kind(
    store: &str,
    key: &str,
    request: Request,
    err: &azure_core::Error,
    clock: Option<status::ClockOffset>,
    scrubber: &Scrubber,
) -> StoreError {
    use walship_store::ErrorKind as Kind;
    match err.kind() {
        ErrorKind::HttpResponse { status, error_code } => {
            let status = u16::from(*status);
            let code = error_code.clone().unwrap_or_default();
            let message = err
                .as_http_error()
                .and_then(|h| h.error_message())
                .and_then(|m| m.lines().next())
                .map(|m| scrubber.scrub(m.trim()))
                .unwrap_or_default();
            let short = format!("HTTP {status} {code}").trim_end().to_owned();
            let detail = if message.is_empty() {
                short.clone()
            } else {
                format!("{short}: {message}")
            };
            match status::with_clock(status::kind_of(request, status, &code), clock) {
                Kind::AlreadyExists => StoreError::already_exists(store, key),
                Kind::NotFound => StoreError::not_found(store, key),
                Kind::ContainerMissing => StoreError::new(Kind::ContainerMissing, store, detail),
                // The service's own message for authentication failures can quote the
                // string it signed; the code says enough.
                Kind::Denied => StoreError::new(Kind::Denied, store, format!("{key}: {short}")),
                Kind::ClockSkew => StoreError::clock_skew(store, format!("{key}: {short}"), clock),
                kind => StoreError::new(kind, store, format!("{key}: {detail}")),
            }
        }
        ErrorKind::Io => StoreError::new(
            Kind::Connection,
            store,
            format!("{key}: {}", scrubber.scrub(&error_chain(err))),
        ),
        ErrorKind::Credential => {
            let detail = format!(
                "{key}: cannot obtain an Azure AD token: {}",
                scrubber.scrub(&error_chain(err))
            );
            // The token endpoint's own answer, when there was one, through the one
            // mapping: a 4xx refuses the identity, anything else is the endpoint failing
            // (and passes).
            let kind = match http_status(err) {
                Some((status, code)) => status::kind_of(status::Request::Token, status, &code),
                None if has_io_cause(err) => Kind::Connection,
                None => Kind::Denied,
            };
            StoreError::credentials(kind, store, detail)
        }
        // An answer that does not read (a listing or a header damaged on the way, cut
        // short) says nothing of the object: tried again like any bad answer.
        ErrorKind::DataConversion => StoreError::new(
            Kind::Response,
            store,
            format!(
                "{key}: the store's answer cannot be read: {}",
                scrubber.scrub(&error_chain(err))
            ),
        ),
        _ => StoreError::new(
            Kind::Rejected,
            store,
            format!("{key}: {}", scrubber.scrub(&error_chain(err))),
        ),
    }
}
