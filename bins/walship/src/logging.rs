//! Log set-up: the filter from `--log-level`, the format, and the scrubbing writer that
//! every log line (walship's and every dependency's) passes through.

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::LogFormat;

/// The levels a bare directive may name; anything else bare is a mistake (tracing would
/// take it as a target name and log nothing at all).
const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// Parses `--log-level`: a level, or comma-separated `target=level` directives.
pub fn filter(spec: &str) -> Result<EnvFilter, String> {
    let expected = "expected a level (error, warn, info, debug, trace) or directives such as \
                    \"info,walship_engine=debug\"";
    if spec.trim().is_empty() {
        return Err(format!("--log-level (WALSHIP_LOG) is empty; {expected}"));
    }
    for directive in spec.split(',').map(str::trim) {
        let bare = !directive.contains(['=', '[', ':']);
        if bare && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "--log-level (WALSHIP_LOG) {spec:?}: {directive:?} is not a level; {expected}"
            ));
        }
    }
    EnvFilter::builder()
        .parse(spec)
        .map_err(|e| format!("--log-level (WALSHIP_LOG) {spec:?}: {e}; {expected}"))
}

/// Installs the global subscriber. Colours only on a terminal: PostgreSQL copies an
/// archive or restore command's stderr into its own log, where escape codes are noise.
pub fn init(format: LogFormat, filter: EnvFilter) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Scrubbing)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Makes a [`LineWriter`] per event.
struct Scrubbing;

impl<'a> MakeWriter<'a> for Scrubbing {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter(Vec::with_capacity(256))
    }
}

/// Collects one formatted event and writes it to stderr, scrubbed of secrets, when the
/// formatter is done with it.
struct LineWriter(Vec<u8>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.0);
        let scrubbed = walship_secret::redact::scrub(&text);
        crate::progress::write_stderr(scrubbed.as_bytes());
    }
}

/// Registers the credential environment variables the SDKs' default chains read, so
/// their values are scrubbed like the mounted secrets.
pub fn register_environment_secrets() {
    for var in [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AZURE_CLIENT_SECRET",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_ACCESS_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_STORAGE_CONNECTION_STRING",
        // libpq's password, which `backup` connects with.
        "PGPASSWORD",
    ] {
        if let Ok(value) = std::env::var(var) {
            walship_secret::redact::register(&value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_or_directives_are_accepted_and_anything_else_named_as_wrong() {
        for good in [
            "info",
            "DEBUG",
            "trace",
            "warn,walship_engine=debug",
            "off",
            "h2=trace",
        ] {
            assert!(filter(good).is_ok(), "{good}");
        }
        for (bad, named) in [
            ("verbose", "\"verbose\" is not a level"),
            ("info,loud", "\"loud\" is not a level"),
            ("", "is empty"),
            ("walship=loudest", "loudest"),
        ] {
            let err = filter(bad).unwrap_err();
            assert!(err.contains(named), "{bad}: {err}");
            assert!(err.contains("--log-level"), "{err}");
        }
    }
}
