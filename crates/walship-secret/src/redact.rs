//! Scrubbing secrets out of text that leaves the process (log lines above all).
//!
//! [`crate::Secret`] keeps a value out of walship's own messages, but a dependency can
//! still print what it was handed: the Azure SDK logs request URLs, SAS signature
//! included, at debug level. So every log line is passed through [`scrub`] before it
//! is written, whatever its source. Two nets:
//! - every secret value walship reads (walship-config's `Secrets` registers each one,
//!   and the binary registers the credential environment variables) is replaced wherever
//!   it appears, as read, line by line, parameter by parameter and percent-encoded;
//! - values derived from secrets, which no registry can know (request signatures,
//!   access tokens, session tokens), are recognised by the parameter or header that
//!   carries them (`sig=`, `X-Amz-Signature=`, `Authorization: Bearer …`, …).

use std::borrow::Cow;
use std::sync::RwLock;

use crate::percent_encode;

/// What a scrubbed value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Shorter fragments are not registered: they would match ordinary words.
const MIN_FRAGMENT: usize = 8;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a secret value, so that it and its parts never reach a log line.
pub fn register(value: &str) {
    let mut fragments = Vec::new();
    let mut add = |s: &str| {
        let s = s.trim().trim_matches('"');
        if s.len() >= MIN_FRAGMENT {
            fragments.push(s.to_owned());
            let encoded = percent_encode(s);
            if encoded != s {
                fragments.push(encoded);
            }
        }
    };
    add(value);
    // Lines (PEM keys, JSON key files whose private key holds "\n" escapes), and the
    // secret parameters of `a=b&c=d` (SAS tokens) and `A=b;C=d` (connection strings).
    // Only those: an account name, an endpoint or an expiry date in the same string
    // is what an operator reads logs for.
    for line in value.split(['\n', '\r']).flat_map(|l| l.split("\\n")) {
        add(line);
        for part in line.split(['&', ';', '?', ',']) {
            if let Some((k, v)) = part.split_once('=')
                && is_secret_parameter(k)
            {
                add(v);
            }
        }
    }
    let Ok(mut secrets) = SECRETS.write() else {
        return;
    };
    for fragment in fragments {
        if !secrets.contains(&fragment) {
            secrets.push(fragment);
        }
    }
    // Longest first, so a value is replaced whole before any of its parts.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Whether a `key=value` parameter of a secret carries the secret part: a SAS's `sig`,
/// a connection string's `AccountKey` or `SharedAccessSignature`, and the like.
fn is_secret_parameter(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    key == "sig"
        || ["key", "signature", "secret", "token", "password"]
            .iter()
            .any(|part| key.contains(part))
}

/// `text` with every registered secret and every recognised signature or token
/// replaced by [`REDACTED`].
pub fn scrub(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    if let Ok(secrets) = SECRETS.read() {
        for secret in secrets.iter() {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
    }
    // Most lines carry none of the markers: one lowercase copy rules them out.
    let lower = out.to_ascii_lowercase();
    for marker in CARRIERS.iter().filter(|m| lower.contains(**m)) {
        if let Some(scrubbed) = scrub_after(&out, marker) {
            out = Cow::Owned(scrubbed);
        }
    }
    out
}

/// Parameters and headers whose value is a credential, matched without regard to case.
/// The value runs to the next delimiter.
const CARRIERS: &[&str] = &[
    "sig=",
    "x-amz-signature=",
    "x-amz-security-token=",
    "x-amz-security-token: ",
    "x-amz-security-token\": \"",
    "signature=",
    "bearer ",
    "sharedkey ",
    "access_token\":\"",
    "access_token\": \"",
    "client_assertion=",
    "assertion=",
    "client_secret=",
    "accountkey=",
    "sharedaccesssignature=",
    "aws_secret_access_key=",
    "session_token: \"",
    "session_token=",
];

/// Replaces the value after each occurrence of `marker`; `None` when there is none.
fn scrub_after(text: &str, marker: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    if !lower.contains(marker) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find(marker) {
        let start = search + found + marker.len();
        let len = text[start..]
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '&' | '"' | '\'' | ',' | ';' | ')' | '>' | '}')
            })
            .unwrap_or(text.len() - start);
        if len == 0 || text[start..].starts_with(REDACTED) {
            search = start;
            continue;
        }
        out.push_str(&text[rest..start]);
        out.push_str(REDACTED);
        rest = start + len;
        search = rest;
    }
    out.push_str(&text[rest..]);
    Some(out)
}

/// A URL as it may be shown: without user info (`https://user:pass@host`), query
/// (`?sig=...`) or fragment, which is where URLs carry credentials. Text that is not a
/// URL loses everything up to its last `@` and from its first `?` or `#`.
pub fn url(text: &str) -> String {
    let text = text.trim();
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, text),
    };
    // Everything up to the last `@` goes, even when a `?`, `#` or `/` inside a password
    // makes the user info hard to tell from the rest: showing less is the safe mistake.
    let rest = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host_and_path = if path.is_empty() {
        host.to_owned()
    } else {
        format!("{host}/{path}")
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{host_and_path}"),
        None => host_and_path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_secret_is_scrubbed_whole_in_parts_and_percent_encoded() {
        register("sv=2022-11-02&ss=b&sig=AbC/dEf+GhI=registered1");
        register(
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n",
        );
        let line = "GET 'https://a.blob/c?sv=2022-11-02&ss=b&sig=AbC%2FdEf%2BGhI%3Dregistered1' \
                    key MIIEvQIBADANBgkqhkiG9w0BAQEFAASC and AbC/dEf+GhI=registered1";
        let out = scrub(line);
        assert!(!out.contains("registered1"), "{out}");
        assert!(!out.contains("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"), "{out}");
        assert!(out.contains("https://a.blob/c?"), "{out}");
    }

    #[test]
    fn names_and_endpoints_in_a_connection_string_stay_readable() {
        register(
            "DefaultEndpointsProtocol=https;AccountName=readableaccount;\
             AccountKey=c2VjcmV0LWFjY291bnQta2V5;EndpointSuffix=core.windows.net",
        );
        let out = scrub("using readableaccount at core.windows.net, key c2VjcmV0LWFjY291bnQta2V5");
        assert!(out.contains("readableaccount"), "{out}");
        assert!(out.contains("core.windows.net"), "{out}");
        assert!(!out.contains("c2VjcmV0LWFjY291bnQta2V5"), "{out}");
    }

    #[test]
    fn signatures_and_tokens_no_registry_knows_are_recognised_by_their_carrier() {
        let cases = [
            (
                "performing request GET 'http://h/c/b?sp=r&SIG=abcdef123%3D' with reqwest",
                "abcdef123",
            ),
            (
                "authorization: Bearer eyJhbGciOi.eyJzdWIi.sig",
                "eyJhbGciOi",
            ),
            (
                "Authorization: AWS4-HMAC-SHA256 Credential=AKIA/x, SignedHeaders=host, Signature=0123abcd",
                "0123abcd",
            ),
            (
                "{\"access_token\":\"ya29.secret-token\",\"expires_in\":3599}",
                "ya29.secret-token",
            ),
            (
                "body: client_assertion=eyJ.jwt.part&client_id=x",
                "eyJ.jwt.part",
            ),
            (
                "x-amz-security-token: FwoGZXIvYXdzEB0aDJ session",
                "FwoGZXIvYXdzEB0aDJ",
            ),
            (
                "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=Eby8vdM02x==;",
                "Eby8vdM02x",
            ),
        ];
        for (line, secret) in cases {
            let out = scrub(line);
            assert!(!out.contains(secret), "{line} -> {out}");
            assert!(out.contains(REDACTED), "{out}");
        }
        assert_eq!(
            scrub("nothing secret here: sig"),
            "nothing secret here: sig"
        );
        // Scrubbing is idempotent.
        let once = scrub("a sig=xyz b").into_owned();
        assert_eq!(scrub(&once), once);
    }

    #[test]
    fn a_url_is_shown_without_user_info_query_or_fragment() {
        let cases = [
            (
                "https://AKIA:secret@minio.local:9000/x",
                "https://minio.local:9000/x",
            ),
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
            ("http://127.0.0.1:9000/", "http://127.0.0.1:9000"),
            (
                " https://acct.blob.core.windows.net/c?sv=1&sig=abc#frag ",
                "https://acct.blob.core.windows.net/c",
            ),
            (
                "http://127.0.0.1:10000/devstoreaccount1",
                "http://127.0.0.1:10000/devstoreaccount1",
            ),
            ("https://u:p?a#s/s@host/path", "https://host/path"),
            ("user:pass@host:9000/p?q=1", "host:9000/p"),
            ("not a url", "not a url"),
        ];
        for (text, shown) in cases {
            assert_eq!(url(text), shown, "{text}");
        }
    }
}
