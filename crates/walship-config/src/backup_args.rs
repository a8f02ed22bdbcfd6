//! `data.additionalCommandArgs`: the barman-cloud-backup options users add to the
//! plugin's own, parsed once into what walship does with each.
//!
//! The plugin appends these to the options it sets itself and drops any whose name it
//! already set (its compression, jobs, immediate checkpoint and backup name win), and
//! barman-cloud-backup refuses an option it does not know. walship does the same: the
//! manifest's typed fields and the command line win, an option walship carries out is
//! carried out, one that only tunes barman's own transfer is accepted without effect
//! (and said so in the backup's log), and one that would change what is stored or how
//! in a way walship cannot honour is refused, naming the option. A refusal fails the
//! backup, never the manifest: WAL archiving goes on with a typo in a backup option.

use crate::error::ConfigError;
use crate::model::{Compression, Encryption};

/// What `data.additionalCommandArgs` asks of a backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupCommandArgs {
    /// `-n`, `--name`.
    pub name: Option<String>,
    /// `-J`, `--jobs`.
    pub jobs: Option<u32>,
    /// `--immediate-checkpoint`.
    pub immediate_checkpoint: bool,
    /// `-z`/`--gzip`, `-j`/`--bzip2`, `--snappy`, `--lz4`.
    pub compression: Option<Compression>,
    /// `-S`, `--max-archive-size`, in bytes.
    pub max_archive_size: Option<u64>,
    /// `--min-chunk-size`, in bytes: walship's parts are at least this large.
    pub min_chunk_size: Option<u64>,
    /// `-h`/`--host`, `-p`/`--port`, `-U`/`--user`, `-d`/`--dbname`.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub dbname: Option<String>,
    /// `--tag KEY,VALUE`, in order (added to the manifest's `tags`).
    pub tags: Vec<(String, String)>,
    /// `-e`, `--encryption` (S3 server-side encryption).
    pub encryption: Option<Encryption>,
    /// `--encryption-scope` (Azure).
    pub encryption_scope: Option<String>,
    /// Options accepted without effect, each with why.
    pub without_effect: Vec<(String, &'static str)>,
}

/// How an option is spelt and what it takes.
struct Opt {
    names: &'static [&'static str],
    takes_value: bool,
    what: What,
}

enum What {
    Name,
    Jobs,
    ImmediateCheckpoint,
    Compression(Compression),
    MaxArchiveSize,
    MinChunkSize,
    Host,
    Port,
    User,
    Dbname,
    Tag,
    Encryption,
    EncryptionScope,
    /// Accepted; the reason it changes nothing in walship.
    NoEffect(&'static str),
    /// Refused; what to do instead.
    Refused(&'static str),
}

const SNAPSHOTS: &str = "walship takes no snapshot backups; remove the option (barman-cloud-backup's \
     snapshot backups are not supported)";

const OPTIONS: &[Opt] = &[
    opt(&["-n", "--name"], true, What::Name),
    opt(&["-J", "--jobs"], true, What::Jobs),
    opt(
        &["--immediate-checkpoint"],
        false,
        What::ImmediateCheckpoint,
    ),
    opt(
        &["-z", "--gzip"],
        false,
        What::Compression(Compression::Gzip),
    ),
    opt(
        &["-j", "--bzip2"],
        false,
        What::Compression(Compression::Bzip2),
    ),
    opt(&["--snappy"], false, What::Compression(Compression::Snappy)),
    opt(&["--lz4"], false, What::Compression(Compression::Lz4)),
    opt(&["-S", "--max-archive-size"], true, What::MaxArchiveSize),
    opt(&["--min-chunk-size"], true, What::MinChunkSize),
    opt(&["-h", "--host"], true, What::Host),
    opt(&["-p", "--port"], true, What::Port),
    opt(&["-U", "--user"], true, What::User),
    opt(&["-d", "--dbname"], true, What::Dbname),
    opt(&["--tag"], true, What::Tag),
    opt(&["-e", "--encryption"], true, What::Encryption),
    opt(&["--encryption-scope"], true, What::EncryptionScope),
    opt(
        &["-v", "--verbose", "-q", "--quiet"],
        false,
        What::NoEffect(
            "walship's log level is --log-level (or instanceSidecarConfiguration.logLevel)",
        ),
    ),
    opt(
        &["--read-timeout"],
        true,
        What::NoEffect("walship sizes each request's deadline to its body"),
    ),
    opt(
        &["--addressing-style"],
        true,
        What::NoEffect(
            "walship uses path-style requests for custom endpoints and virtual-hosted ones on AWS",
        ),
    ),
    opt(
        &["--cloud-provider"],
        true,
        What::NoEffect("the cloud is the one destinationPath names"),
    ),
    opt(
        &["--max-bandwidth"],
        true,
        What::NoEffect(
            "walship does not limit its bandwidth; lower data.jobs to send less at once",
        ),
    ),
    opt(
        &["-t", "--test"],
        false,
        What::Refused("a backup that only tests the connection is `walship check`"),
    ),
    opt(
        &["--endpoint-url"],
        true,
        What::Refused("set spec.configuration.endpointURL instead"),
    ),
    opt(
        &["-P", "--aws-profile", "--profile"],
        true,
        What::Refused("credentials come from spec.configuration.s3Credentials"),
    ),
    opt(
        &["--azure-credential", "--credential"],
        true,
        What::Refused("credentials come from spec.configuration.azureCredentials"),
    ),
    opt(
        &["--sse-kms-key-id"],
        true,
        What::Refused(
            "walship does not yet send a KMS key id; S3 uses the bucket's default key with aws:kms",
        ),
    ),
    opt(&["--snapshot-instance"], true, What::Refused(SNAPSHOTS)),
    opt(&["--snapshot-disk"], true, What::Refused(SNAPSHOTS)),
    opt(&["--snapshot-zone"], true, What::Refused(SNAPSHOTS)),
    opt(&["--snapshot-gcp-project"], true, What::Refused(SNAPSHOTS)),
    opt(&["--gcp-project"], true, What::Refused(SNAPSHOTS)),
    opt(&["--kms-key-name"], true, What::Refused(SNAPSHOTS)),
    opt(&["--gcp-zone"], true, What::Refused(SNAPSHOTS)),
    opt(&["--aws-region"], true, What::Refused(SNAPSHOTS)),
    opt(
        &["--aws-await-snapshots-timeout"],
        true,
        What::Refused(SNAPSHOTS),
    ),
    opt(
        &["--aws-snapshot-lock-mode"],
        true,
        What::Refused(SNAPSHOTS),
    ),
    opt(
        &["--aws-snapshot-lock-duration"],
        true,
        What::Refused(SNAPSHOTS),
    ),
    opt(
        &["--aws-snapshot-lock-cool-off-period"],
        true,
        What::Refused(SNAPSHOTS),
    ),
    opt(
        &["--aws-snapshot-lock-expiration-date"],
        true,
        What::Refused(SNAPSHOTS),
    ),
];

const fn opt(names: &'static [&'static str], takes_value: bool, what: What) -> Opt {
    Opt {
        names,
        takes_value,
        what,
    }
}

/// What the error says is accepted.
const ACCEPTED: &str = "a barman-cloud-backup option walship carries out (--name, --jobs, \
     --immediate-checkpoint, --gzip, --bzip2, --snappy, --lz4, --max-archive-size, \
     --min-chunk-size, --host, --port, --user, --dbname, --tag KEY,VALUE, --encryption, \
     --encryption-scope) or accepts without effect (--verbose, --quiet, --read-timeout, \
     --addressing-style, --cloud-provider, --max-bandwidth)";

/// Reads a size as barman-cloud-backup does: a number, optionally followed by B, kB, MB,
/// GB or TB (powers of 1024; the unit's case does not matter).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size; expected e.g. 100GB, 512MB or 1048576"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" => 10,
        "M" | "MB" => 20,
        "G" | "GB" => 30,
        "T" | "TB" => 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; expected B, kB, MB, GB or TB"
            ));
        }
    };
    number
        .checked_mul(1 << shift)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a usable size"))
}

/// Parses `args` (the list at `path`, `spec.configuration.data.additionalCommandArgs`)
/// as barman-cloud-backup's argument parser reads options: `--opt value`,
/// `--opt=value`, `-J 4`, `-J4`. The last of a repeated option wins, as with argparse;
/// `--tag` adds up.
pub fn parse_backup_args(args: &[String], path: &str) -> Result<BackupCommandArgs, ConfigError> {
    let mut out = BackupCommandArgs::default();
    let mut i = 0;
    while i < args.len() {
        let at = format!("{path}[{i}]");
        let arg = args[i].as_str();
        let (flag, inline) = split_option(arg);
        // An option walship does not take is named without its value: an endpoint URL
        // may carry a password, and errors are printed as they are.
        let named = match inline {
            Some(_) if arg.starts_with("--") => format!("{flag}=…"),
            Some(_) => format!("{flag}…"),
            None => flag.to_owned(),
        };
        let Some(option) = OPTIONS.iter().find(|o| o.names.contains(&flag)) else {
            return Err(ConfigError::with_value(
                at,
                named,
                "is not a barman-cloud-backup option walship knows",
                ACCEPTED,
            ));
        };
        let value = match (option.takes_value, inline) {
            (false, None) => None,
            (false, Some(_)) => {
                return Err(ConfigError::with_value(
                    at,
                    arg,
                    "takes no value",
                    format!("{flag} alone"),
                ));
            }
            (true, Some(value)) => Some(value.to_owned()),
            (true, None) => {
                i += 1;
                match args.get(i) {
                    Some(value) => Some(value.clone()),
                    None => {
                        return Err(ConfigError::with_value(
                            at,
                            arg,
                            "needs a value",
                            format!("{flag} VALUE, as two items or as {flag}=VALUE"),
                        ));
                    }
                }
            }
        };
        let value = value.unwrap_or_default();
        let bad = |problem: String, expected: &str| {
            ConfigError::with_value(format!("{path}[{i}]"), value.clone(), problem, expected)
        };
        match &option.what {
            What::Name => out.name = Some(value.clone()),
            What::Jobs => {
                out.jobs = Some(
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .ok_or_else(|| {
                            bad(format!("is not a number of jobs for {flag}"), "1 to 64")
                        })?,
                );
            }
            What::ImmediateCheckpoint => out.immediate_checkpoint = true,
            What::Compression(c) => out.compression = Some(*c),
            What::MaxArchiveSize => {
                out.max_archive_size =
                    Some(parse_size(&value).map_err(|e| bad(e, "a size such as 100GB"))?);
            }
            What::MinChunkSize => {
                out.min_chunk_size =
                    Some(parse_size(&value).map_err(|e| bad(e, "a size such as 32MB"))?);
            }
            What::Host => out.host = Some(value.clone()),
            What::Port => {
                out.port = Some(
                    value
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| bad(format!("is not a port for {flag}"), "1 to 65535"))?,
                );
            }
            What::User => out.user = Some(value.clone()),
            What::Dbname => out.dbname = Some(value.clone()),
            What::Tag => {
                let (key, tag) = value
                    .split_once(',')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| bad(format!("is not a tag for {flag}"), "KEY,VALUE"))?;
                out.tags.push((key.to_owned(), tag.to_owned()));
            }
            What::Encryption => {
                out.encryption = Some(match value.as_str() {
                    "AES256" => Encryption::Aes256,
                    "aws:kms" => Encryption::AwsKms,
                    _ => {
                        return Err(bad(
                            format!("is not an encryption for {flag}"),
                            "AES256 or aws:kms",
                        ));
                    }
                });
            }
            What::EncryptionScope => {
                out.encryption_scope = Some(value.trim().to_owned()).filter(|s| !s.is_empty());
            }
            What::NoEffect(why) => out.without_effect.push((arg.to_owned(), why)),
            What::Refused(instead) => {
                return Err(ConfigError::with_value(
                    at,
                    named,
                    "is a barman-cloud-backup option walship does not carry out",
                    *instead,
                ));
            }
        }
        i += 1;
    }
    Ok(out)
}

/// `--opt=value` → (`--opt`, `value`); `-J4` → (`-J`, `4`); anything else whole.
fn split_option(arg: &str) -> (&str, Option<&str>) {
    if arg.starts_with("--") {
        return match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value)),
            None => (arg, None),
        };
    }
    if arg.starts_with('-') && arg.len() > 2 && arg.is_char_boundary(2) {
        let (flag, rest) = arg.split_at(2);
        return (flag, Some(rest.strip_prefix('=').unwrap_or(rest)));
    }
    (arg, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "spec.configuration.data.additionalCommandArgs";

    fn parse(args: &[&str]) -> Result<BackupCommandArgs, ConfigError> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        parse_backup_args(&args, PATH)
    }

    #[test]
    fn options_walship_carries_out_are_read_in_every_spelling_argparse_accepts() {
        let args = parse(&[
            "--min-chunk-size=32MB",
            "-J4",
            "--immediate-checkpoint",
            "--max-archive-size",
            "2GB",
            "-z",
            "--tag",
            "team,db",
            "--tag=env,prod",
            "-e",
            "aws:kms",
            "--encryption-scope=scope1",
            "-n",
            "nightly",
            "-p",
            "5433",
            "--jobs=3",
        ])
        .unwrap();
        assert_eq!(
            args,
            BackupCommandArgs {
                name: Some("nightly".into()),
                jobs: Some(3),
                immediate_checkpoint: true,
                compression: Some(Compression::Gzip),
                max_archive_size: Some(2 << 30),
                min_chunk_size: Some(32 << 20),
                port: Some(5433),
                tags: vec![("team".into(), "db".into()), ("env".into(), "prod".into())],
                encryption: Some(Encryption::AwsKms),
                encryption_scope: Some("scope1".into()),
                ..BackupCommandArgs::default()
            }
        );
    }

    #[test]
    fn transfer_tuning_is_accepted_without_effect_and_says_why() {
        let args = parse(&["--read-timeout=60", "-v", "--max-bandwidth", "10MB"]).unwrap();
        let names: Vec<&str> = args
            .without_effect
            .iter()
            .map(|(a, _)| a.as_str())
            .collect();
        assert_eq!(names, ["--read-timeout=60", "-v", "--max-bandwidth"]);
        assert!(args.without_effect.iter().all(|(_, why)| !why.is_empty()));
        assert_eq!(
            args,
            BackupCommandArgs {
                without_effect: args.without_effect.clone(),
                ..BackupCommandArgs::default()
            }
        );
    }

    #[test]
    fn unknown_refused_and_malformed_options_name_the_item_the_value_and_what_is_expected() {
        for (args, index, value, expected) in [
            (
                &["--immediate-checkpoint", "--frobnicate"][..],
                1,
                "--frobnicate",
                "--name, --jobs",
            ),
            (
                &["--snapshot-disk", "d1"],
                0,
                "--snapshot-disk",
                "no snapshot backups",
            ),
            (
                &["--endpoint-url=https://user:hunter2@s3.example"],
                0,
                "--endpoint-url=…",
                "endpointURL",
            ),
            (&["--frob=hunter2"], 0, "--frob=…", "--name, --jobs"),
            (&["-J", "0"], 1, "0", "1 to 64"),
            (&["--jobs"], 0, "--jobs", "--jobs VALUE"),
            (&["--gzip=yes"], 0, "--gzip=yes", "--gzip alone"),
            (&["--max-archive-size", "12XB"], 1, "12XB", "100GB"),
            (&["--tag", "novalue"], 1, "novalue", "KEY,VALUE"),
            (&["-e", "rot13"], 1, "rot13", "AES256 or aws:kms"),
            (
                &["--sse-kms-key-id", "k"],
                0,
                "--sse-kms-key-id",
                "KMS key id",
            ),
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.path, format!("{PATH}[{index}]"), "{args:?}: {err}");
            assert_eq!(err.value.as_deref(), Some(value), "{args:?}: {err}");
            assert!(err.expected.contains(expected), "{args:?}: {err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn sizes_are_read_in_powers_of_1024_as_barman_reads_them() {
        assert_eq!(parse_size("100GB"), Ok(100 << 30));
        assert_eq!(parse_size("5mb"), Ok(5 << 20));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("GB").is_err());
        assert!(parse_size("1PB").is_err());
    }
}
