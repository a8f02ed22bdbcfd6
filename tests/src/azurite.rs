//! Azurite, Microsoft's Azure Storage emulator (blob service only), on 127.0.0.1.

use std::env;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tempfile::TempDir;

use crate::paths::target_dir;
use crate::sigv4::{civil_from_days, hmac};
use crate::util::{free_port, port_is_open, wait_until};

/// Azurite's well-known development account and key (documented by Microsoft; not a
/// secret).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// `azurite-blob`: `$WALSHIP_AZURITE`, else on `PATH`, else where `cargo xtask
/// install-tools` puts it (`<target>/tools/node_modules/.bin/azurite-blob`).
pub fn azurite_path() -> Result<PathBuf> {
    if let Some(p) = env::var_os("WALSHIP_AZURITE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Ok(p) = crate::paths::tool_path("azurite-blob") {
        return Ok(p);
    }
    let ours = target_dir().join("tools/node_modules/.bin/azurite-blob");
    if ours.exists() {
        return Ok(ours);
    }
    bail!(
        "azurite-blob not found: run `cargo xtask install-tools` (npm install azurite), \
         or set WALSHIP_AZURITE"
    )
}

/// A running Azurite blob service with in-memory storage; stopped when dropped.
pub struct AzuriteServer {
    child: Option<Child>,
    port: u16,
    _dir: TempDir,
    log: PathBuf,
}

impl AzuriteServer {
    pub fn start() -> Result<AzuriteServer> {
        let program = azurite_path()?;
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("azurite.log");
        let port = free_port()?;
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(&program)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args(["--inMemoryPersistence", "--loose", "--skipApiVersionCheck"])
            .arg("--disableTelemetry")
            // Anything Azurite still writes lands in the server's own directory.
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut server = AzuriteServer {
            child: Some(child),
            port,
            _dir: dir,
            log,
        };
        wait_until(Duration::from_secs(30), "Azurite to listen", || {
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("Azurite exited ({status}): {}", server.log_contents());
            }
            Ok(port_is_open(port))
        })?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The blob service URL, account included (the emulator's path-style form).
    pub fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port)
    }

    /// A connection string for the development account.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={};",
            self.blob_endpoint()
        )
    }

    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Creates a container with a Shared Key signed request (Create Container).
    pub fn create_container(&self, name: &str) -> Result<()> {
        let status = self.signed(
            "PUT",
            &format!("/{AZURITE_ACCOUNT}/{name}"),
            "restype=container",
        )?;
        if status != 201 {
            bail!(
                "creating container {name}: HTTP {status}: {}",
                self.log_contents()
            );
        }
        Ok(())
    }

    fn signed(&self, method: &str, path: &str, query: &str) -> Result<u16> {
        let date = http_date(SystemTime::now());
        let version = "2021-08-06";
        let canonical_query: String = {
            let mut pairs: Vec<(&str, &str)> =
                query.split('&').filter_map(|p| p.split_once('=')).collect();
            pairs.sort();
            pairs.iter().map(|(k, v)| format!("\n{k}:{v}")).collect()
        };
        // The emulator's canonical resource repeats the account (it is also in the path).
        let string_to_sign = format!(
            "{method}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}{path}{canonical_query}"
        );
        let key = STANDARD
            .decode(AZURITE_KEY)
            .context("decoding the account key")?;
        let signature = STANDARD.encode(hmac(&key, string_to_sign.as_bytes()));
        let request = format!(
            "{method} {path}?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-ms-date: {date}\r\n\
             x-ms-version: {version}\r\nAuthorization: SharedKey {AZURITE_ACCOUNT}:{signature}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            port = self.port
        );
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(request.as_bytes())?;
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response);
        text.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("no HTTP status from Azurite: {text:?}"))
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for AzuriteServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// RFC 1123 date, as `x-ms-date` wants it.
fn http_date(now: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_rfc_1123() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_638_000); // 2026-11-25 20:20:00 UTC
        assert_eq!(http_date(t), "Wed, 25 Nov 2026 20:20:00 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn azurite_starts_creates_containers_and_stops() {
        let mut server = AzuriteServer::start().unwrap();
        server.create_container("walship").unwrap();
        let err = server.create_container("walship").unwrap_err().to_string();
        assert!(err.contains("409"), "{err}");
        let port = server.port();
        server.stop();
        assert!(!port_is_open(port));
    }
}
