//! `destinationPath` parsed into the store it names.

use std::path::PathBuf;

use url::Url;

use crate::error::ConfigError;

const PATH: &str = "spec.configuration.destinationPath";
pub(crate) const DESTINATION_EXPECTED: &str = "s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX] or an Azure blob URL \
    (https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX] or \
    http(s)://HOST:PORT/ACCOUNT/CONTAINER[/PREFIX]), or file:///ABSOLUTE/PATH";
const AZURE_HOST_SUFFIX: &str = ".blob.core.windows.net";
const S3_BUCKET_EXPECTED: &str = "an S3 bucket name: 3-63 lowercase letters, digits, dots and \
    hyphens (legacy buckets may also have capitals and underscores), starting and ending with a \
    letter or digit, not formatted as an IP address, and without a prefix or suffix AWS reserves";
/// Prefixes and suffixes AWS keeps for its own names (access point aliases,
/// Multi-Region Access Points, directory and table buckets, documentation).
const S3_RESERVED_PREFIXES: &[&str] = &["xn--", "sthree-", "amzn-s3-demo-"];
const S3_RESERVED_SUFFIXES: &[&str] = &["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"];

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
            "s3" => {
                let (bucket, prefix) = bucket_and_prefix(s, rest)?;
                if let Some(why) = s3_bucket_problem(&bucket) {
                    return Err(ConfigError::with_value(
                        PATH,
                        s,
                        format!("has an invalid bucket name {bucket:?} (it {why})"),
                        S3_BUCKET_EXPECTED,
                    ));
                }
                Ok(Destination::S3 { bucket, prefix })
            }
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
    // This only rules out what cannot be a bucket at all (ports, credentials,
    // placeholders such as `<bucket>`); S3 names are then held to AWS's rules
    // (`s3_bucket_problem`). GCS names get no stricter check yet.
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

/// Why `bucket` cannot be an S3 bucket, if it cannot (AWS's general purpose
/// bucket naming rules). `bucket_and_prefix` has already limited it to ASCII
/// letters, digits, `.`, `-` and `_`.
///
/// Capitals and underscores are let through: buckets created in us-east-1
/// before March 2018 may have them, Ceph accepts them with
/// `rgw_relaxed_s3_bucket_names`, boto3 (which barman-cloud uses) accepts
/// them, and the plugin's own documentation writes `s3://BUCKET_NAME/`.
/// Every other rule holds for every S3 server walship is used with, so a name
/// breaking one is a typo or a leftover placeholder, better reported now
/// than as a 400 or a DNS failure at the first WAL segment.
fn s3_bucket_problem(bucket: &str) -> Option<String> {
    let len = bucket.len();
    if !(3..=63).contains(&len) {
        return Some(format!("is {len} characters long"));
    }
    if let Some(why) = alphanumeric_ends(bucket) {
        return Some(why);
    }
    if bucket.contains("..") {
        return Some("has two adjacent dots".into());
    }
    if looks_like_ipv4(bucket) {
        return Some("is formatted as an IP address".into());
    }
    // The reserved names are lowercase; a legacy name in capitals must not
    // slip past them.
    let lower = bucket.to_ascii_lowercase();
    if let Some(p) = S3_RESERVED_PREFIXES.iter().find(|p| lower.starts_with(*p)) {
        return Some(format!("starts with {p:?}, which AWS reserves"));
    }
    if let Some(p) = S3_RESERVED_SUFFIXES.iter().find(|p| lower.ends_with(*p)) {
        return Some(format!("ends with {p:?}, which AWS reserves"));
    }
    None
}

/// Why `name` does not start and end with a letter or digit, if it does not.
fn alphanumeric_ends(name: &str) -> Option<String> {
    let first = name.chars().next()?;
    let last = name.chars().next_back()?;
    if !first.is_ascii_alphanumeric() {
        Some(format!("starts with {first:?}"))
    } else if !last.is_ascii_alphanumeric() {
        Some(format!("ends with {last:?}"))
    } else {
        None
    }
}

/// True for four dot-separated groups of digits (`192.168.5.4`): such a name
/// would be taken for an address in a virtual-hosted URL.
fn looks_like_ipv4(name: &str) -> bool {
    let groups: Vec<&str> = name.split('.').collect();
    groups.len() == 4
        && groups
            .iter()
            .all(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
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
            ("s3://bkt", s3("bkt", "")),
            ("s3://bkt/", s3("bkt", "")),
            (
                "s3://BUCKET_NAME/path/to/folder",
                s3("BUCKET_NAME", "path/to/folder"),
            ),
            ("s3://bkt/p/", s3("bkt", "p")),
            ("S3://bkt//p//", s3("bkt", "p")),
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
    fn s3_bucket_names_follow_the_aws_naming_rules() {
        let long = "a".repeat(63);
        let good = [
            "abc",
            "my-bucket",
            "my.bucket.name",
            "walship-e2e",
            "0bucket9",
            long.as_str(),
            // Legacy us-east-1 buckets and Ceph's relaxed names, and the
            // plugin's own documentation (s3://BUCKET_NAME/...).
            "BUCKET_NAME",
            "Legacy_Bucket",
            // Only the listed suffixes are reserved, not every "s3" ending.
            "logs-s3",
            "1.2.3",
        ];
        for bucket in good {
            let input = format!("s3://{bucket}/pg");
            assert_eq!(
                Destination::parse(&input).unwrap(),
                s3(bucket, "pg"),
                "{input}"
            );
        }
        let too_long = "a".repeat(64);
        let bad = [
            ("ab", "is 2 characters long"),
            (too_long.as_str(), "is 64 characters long"),
            ("-bucket", "starts with '-'"),
            ("bucket-", "ends with '-'"),
            (".bucket", "starts with '.'"),
            ("_bucket", "starts with '_'"),
            ("bucket.", "ends with '.'"),
            ("my..bucket", "has two adjacent dots"),
            ("192.168.5.4", "is formatted as an IP address"),
            ("xn--bucket", "starts with \"xn--\", which AWS reserves"),
            ("XN--bucket", "starts with \"xn--\", which AWS reserves"),
            ("sthree-bucket", "starts with \"sthree-\""),
            ("sthree-configurator", "starts with \"sthree-\""),
            ("amzn-s3-demo-bucket", "starts with \"amzn-s3-demo-\""),
            (
                "bucket-s3alias",
                "ends with \"-s3alias\", which AWS reserves",
            ),
            ("bucket--ol-s3", "ends with \"--ol-s3\""),
            ("bucket.mrap", "ends with \".mrap\""),
            ("bucket--x-s3", "ends with \"--x-s3\""),
            ("bucket--table-s3", "ends with \"--table-s3\""),
        ];
        for (bucket, why) in bad {
            let input = format!("s3://{bucket}/pg");
            let e = Destination::parse(&input).expect_err(&input);
            assert_eq!(e.path, PATH);
            assert_eq!(e.value.as_deref(), Some(input.as_str()));
            let want = format!("has an invalid bucket name {bucket:?} (it {why}");
            assert!(e.problem.starts_with(&want), "{input}: {e}");
        }
    }

    #[test]
    fn an_invalid_s3_bucket_name_says_what_is_expected() {
        let e = Destination::parse("s3://my..bucket/x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.configuration.destinationPath: \"s3://my..bucket/x\" has an invalid bucket name \
             \"my..bucket\" (it has two adjacent dots); expected an S3 bucket name: 3-63 lowercase \
             letters, digits, dots and hyphens (legacy buckets may also have capitals and \
             underscores), starting and ending with a letter or digit, not formatted as an IP \
             address, and without a prefix or suffix AWS reserves"
        );
    }

    #[test]
    fn gcs_bucket_names_are_not_held_to_the_s3_rules() {
        // GCS reserves other names (goog*, *google*); the S3 list means nothing there.
        assert_eq!(
            Destination::parse("gs://bucket-s3alias/p").unwrap(),
            Destination::Gcs {
                bucket: "bucket-s3alias".into(),
                prefix: "p".into(),
            }
        );
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
