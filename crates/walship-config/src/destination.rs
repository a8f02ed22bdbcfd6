//! `destinationPath` parsed into the store it names.

use std::path::PathBuf;

use url::Url;

use crate::error::ConfigError;

const PATH: &str = "spec.configuration.destinationPath";
pub(crate) const DESTINATION_EXPECTED: &str = "s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX] or an Azure blob URL \
    (https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX] or \
    http(s)://HOST:PORT/ACCOUNT/CONTAINER[/PREFIX]), or file:///ABSOLUTE/PATH";
const AZURE_HOST_SUFFIX: &str = ".blob.core.windows.net";

/// Where the archive lives. Every `prefix` is without leading or trailing `/`
/// and empty when there is none; keys are `<prefix>/<server>/wals/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `s3://BUCKET[/PREFIX]`.
    S3 { bucket: String, prefix: String },
    /// `gs://BUCKET[/PREFIX]`.
    Gcs { bucket: String, prefix: String },
    /// An Azure Blob Storage URL. `endpoint` is the blob service URL requests
    /// go to: `https://ACCOUNT.blob.core.windows.net`, or for the emulator
    /// form `http://HOST:PORT/ACCOUNT` (Azurite puts the account in the path).
    Azure {
        /// The destination path as written.
        url: String,
        endpoint: String,
        account: String,
        container: String,
        prefix: String,
        /// True for the `http(s)://HOST:PORT/ACCOUNT/CONTAINER/PREFIX` form.
        emulator: bool,
    },
    /// walship's local store, `file:///ABSOLUTE/PATH`: the whole path is the
    /// root and the prefix is always empty.
    File { root: PathBuf, prefix: String },
}

impl Destination {
    /// Parse a `destinationPath`. Errors carry the path
    /// `spec.configuration.destinationPath`.
    pub fn parse(s: &str) -> Result<Destination, ConfigError> {
        let invalid =
            |problem: &str| ConfigError::with_value(PATH, s, problem, DESTINATION_EXPECTED);
        if s.is_empty() {
            return Err(ConfigError::new(PATH, "is empty", DESTINATION_EXPECTED));
        }
        if s.trim() != s {
            return Err(invalid("has leading or trailing whitespace"));
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(invalid("is not a valid URL"));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "s3" => bucket_and_prefix(s, rest)
                .map(|(bucket, prefix)| Destination::S3 { bucket, prefix }),
            "gs" => bucket_and_prefix(s, rest)
                .map(|(bucket, prefix)| Destination::Gcs { bucket, prefix }),
            "http" | "https" => azure(s),
            "file" => file(s),
            _ => Err(invalid("has an unsupported scheme")),
        }
    }

    /// The key prefix inside the bucket or container (empty for `File`).
    pub fn prefix(&self) -> &str {
        match self {
            Destination::S3 { prefix, .. }
            | Destination::Gcs { prefix, .. }
            | Destination::Azure { prefix, .. }
            | Destination::File { prefix, .. } => prefix,
        }
    }

    /// `s3`, `gs`, `azure` or `file`: which kind of store this is.
    pub fn kind(&self) -> &'static str {
        match self {
            Destination::S3 { .. } => "s3",
            Destination::Gcs { .. } => "gs",
            Destination::Azure { .. } => "azure",
            Destination::File { .. } => "file",
        }
    }
}

fn trim_prefix(p: &str) -> String {
    p.trim_matches('/').to_string()
}

fn bucket_and_prefix(s: &str, rest: &str) -> Result<(String, String), ConfigError> {
    let invalid = |problem: &str| ConfigError::with_value(PATH, s, problem, DESTINATION_EXPECTED);
    if rest.contains(['?', '#']) {
        return Err(invalid("has a query or fragment"));
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(invalid("has no bucket name"));
    }
    // Real bucket names are stricter; this only rules out what cannot be a
    // bucket at all (ports, credentials, placeholders such as `<bucket>`).
    if !bucket
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(invalid("has an invalid bucket name"));
    }
    if prefix.chars().any(char::is_control) {
        return Err(invalid("has control characters in its prefix"));
    }
    Ok((bucket.to_string(), trim_prefix(prefix)))
}

fn azure(s: &str) -> Result<Destination, ConfigError> {
    let invalid = |problem: &str| ConfigError::with_value(PATH, s, problem, DESTINATION_EXPECTED);
    let url = Url::parse(s).map_err(|_| invalid("is not a valid URL"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("has a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("contains credentials"));
    }
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
        _ => return Err(invalid("has no host")),
    };
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    let base = match url.port() {
        Some(port) => format!("{}://{}:{}", url.scheme(), host, port),
        None => format!("{}://{}", url.scheme(), host),
    };
    if let Some(account) = host.strip_suffix(AZURE_HOST_SUFFIX) {
        if account.is_empty() || account.contains('.') {
            return Err(invalid("has no storage account in its host name"));
        }
        let Some((container, prefix)) = segments.split_first() else {
            return Err(invalid("has no container"));
        };
        Ok(Destination::Azure {
            url: s.to_string(),
            endpoint: base,
            account: account.to_string(),
            container: container.to_string(),
            prefix: prefix.join("/"),
            emulator: false,
        })
    } else {
        match segments.as_slice() {
            [account, container, prefix @ ..] => Ok(Destination::Azure {
                url: s.to_string(),
                endpoint: format!("{base}/{account}"),
                account: account.to_string(),
                container: container.to_string(),
                prefix: prefix.join("/"),
                emulator: true,
            }),
            _ => Err(invalid(
                "is neither an ACCOUNT.blob.core.windows.net URL nor has ACCOUNT/CONTAINER in its path",
            )),
        }
    }
}

fn file(s: &str) -> Result<Destination, ConfigError> {
    let expected = "file:///ABSOLUTE/PATH (three slashes: no host)";
    let invalid = |problem: &str| ConfigError::with_value(PATH, s, problem, expected);
    // The URL parser resolves `..` away, so look at the text as written.
    if s.split('/')
        .any(|c| c == ".." || c.eq_ignore_ascii_case("%2e%2e"))
    {
        return Err(invalid("contains '..'"));
    }
    let url = Url::parse(s).map_err(|_| invalid("is not a valid URL"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("has a query or fragment"));
    }
    match url.host_str() {
        None | Some("") | Some("localhost") => {}
        Some(_) => return Err(invalid("has a host (a relative path?)")),
    }
    let root = url
        .to_file_path()
        .map_err(|()| invalid("is not an absolute local path"))?;
    // Drop a trailing slash so `file:///a/b/` and `file:///a/b` are the same root.
    let root: PathBuf = root.components().collect();
    Ok(Destination::File {
        root,
        prefix: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: &str) -> Destination {
        Destination::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn good_paths() {
        let cases: Vec<(&str, Destination)> = vec![
            ("s3://b", s3("b", "")),
            ("s3://b/", s3("b", "")),
            (
                "s3://BUCKET_NAME/path/to/folder",
                s3("BUCKET_NAME", "path/to/folder"),
            ),
            ("s3://b/p/", s3("b", "p")),
            ("S3://b//p//", s3("b", "p")),
            (
                "gs://my-bucket/folder",
                Destination::Gcs {
                    bucket: "my-bucket".into(),
                    prefix: "folder".into(),
                },
            ),
            (
                "https://acct.blob.core.windows.net/cont/a/b/",
                Destination::Azure {
                    url: "https://acct.blob.core.windows.net/cont/a/b/".into(),
                    endpoint: "https://acct.blob.core.windows.net".into(),
                    account: "acct".into(),
                    container: "cont".into(),
                    prefix: "a/b".into(),
                    emulator: false,
                },
            ),
            (
                "http://azurite:10000/devstoreaccount1/cont",
                Destination::Azure {
                    url: "http://azurite:10000/devstoreaccount1/cont".into(),
                    endpoint: "http://azurite:10000/devstoreaccount1".into(),
                    account: "devstoreaccount1".into(),
                    container: "cont".into(),
                    prefix: "".into(),
                    emulator: true,
                },
            ),
            (
                "file:///a/b",
                Destination::File {
                    root: "/a/b".into(),
                    prefix: "".into(),
                },
            ),
            (
                "file:///a/b/",
                Destination::File {
                    root: "/a/b".into(),
                    prefix: "".into(),
                },
            ),
            (
                "file://localhost/srv/wal",
                Destination::File {
                    root: "/srv/wal".into(),
                    prefix: "".into(),
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(Destination::parse(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn bad_paths() {
        let cases = [
            ("s3:/bucket", "is not a valid URL"),
            ("bucket/prefix", "is not a valid URL"),
            ("s3://", "has no bucket name"),
            ("s3:///prefix", "has no bucket name"),
            ("gs://<bucket>/<folder>", "invalid bucket name"),
            ("s3://b/p?x=1", "query"),
            ("ftp://host/x", "unsupported scheme"),
            ("https://acct.blob.core.windows.net/", "has no container"),
            ("http://localhost:10000/acct", "ACCOUNT/CONTAINER"),
            ("file://relative/path", "has a host"),
            ("file:///a/../b", "'..'"),
            (" s3://b", "whitespace"),
            ("", "is empty"),
        ];
        for (input, fragment) in cases {
            let e = Destination::parse(input).expect_err(input);
            assert_eq!(e.path, PATH);
            assert!(e.to_string().contains(fragment), "{input}: {e}");
        }
    }

    #[test]
    fn message_style() {
        let e = Destination::parse("s3:/bucket").unwrap_err();
        assert!(
            e.to_string().starts_with(
                "spec.configuration.destinationPath: \"s3:/bucket\" is not a valid URL; expected s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX] or an Azure blob URL"
            ),
            "{e}"
        );
    }
}
