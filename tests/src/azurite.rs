//! Azurite, Microsoft's Azure Storage emulator (blob service only), on 127.0.0.1: plain
//! HTTP by default, or HTTPS with a certificate from a throwaway CA and Azure AD bearer
//! tokens accepted (`--oauth basic`), which is how workload identity is tested. The kit
//! signs the few requests it makes itself (create a container, list blobs) with Shared
//! Key, and makes service SAS tokens, so tests depend on nothing but Azurite.

use std::env;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tempfile::TempDir;

use crate::paths::target_dir;
use crate::sigv4::{civil_from_days, hmac};
use crate::tls::make_certificates;
use crate::util::{on_a_free_port, port_is_open, wait_until};

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

/// How to start Azurite.
#[derive(Debug, Clone, Default)]
pub struct AzuriteOptions {
    /// Keep blobs in this directory (`--location`) instead of in memory, so they outlive
    /// the process; the caller owns the directory.
    pub location: Option<PathBuf>,
    /// Write Azurite's output here instead of into its temporary directory.
    pub log: Option<PathBuf>,
    /// Serve HTTPS with a certificate for 127.0.0.1 signed by a CA made for this server
    /// ([`AzuriteServer::ca_pem_path`]), and accept Azure AD bearer tokens
    /// (`--oauth basic`: Azurite checks a token's issuer, audience and lifetime, not its
    /// signature). Azurite allows OAuth over HTTPS only.
    pub https_oauth: bool,
}

/// A running Azurite blob service; stopped when dropped.
pub struct AzuriteServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    log: PathBuf,
    https: bool,
}

impl AzuriteServer {
    /// In-memory storage, plain HTTP.
    pub fn start() -> Result<AzuriteServer> {
        Self::start_with(AzuriteOptions::default())
    }

    pub fn start_with(options: AzuriteOptions) -> Result<AzuriteServer> {
        let program = azurite_path()?;
        on_a_free_port(|port| {
            let dir = tempfile::tempdir()?;
            let log = options
                .log
                .clone()
                .unwrap_or_else(|| dir.path().join("azurite.log"));
            let log_file = std::fs::File::create(&log)?;
            let mut cmd = Command::new(&program);
            cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .args(["--loose", "--skipApiVersionCheck", "--disableTelemetry"]);
            match &options.location {
                Some(location) => cmd.arg("--location").arg(location),
                None => cmd.arg("--inMemoryPersistence"),
            };
            if options.https_oauth {
                make_certificates(dir.path())?;
                cmd.arg("--cert")
                    .arg(dir.path().join("server.pem"))
                    .arg("--key")
                    .arg(dir.path().join("server.key"))
                    .args(["--oauth", "basic"]);
            }
            let child = cmd
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
                dir,
                log,
                https: options.https_oauth,
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
        })
    }

    /// The PEM of the CA that signed an HTTPS server's certificate (what a manifest's
    /// `endpointCA` points at).
    pub fn ca_pem_path(&self) -> Option<PathBuf> {
        self.https.then(|| self.dir.path().join("ca.pem"))
    }

    /// The process id, for tests that must stop the server from outside.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Leaves the server running after this handle is gone and returns its pid (for
    /// `cargo xtask services`, which passes a `location` and a `log` of its own).
    pub fn detach(mut self) -> Option<u32> {
        // Dropping a `Child` neither kills nor waits for it.
        self.child.take().map(|c| c.id())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The blob service URL, account included (the emulator's path-style form).
    pub fn blob_endpoint(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port)
    }

    /// A connection string for the development account.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol={};AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={};",
            if self.https { "https" } else { "http" },
            self.blob_endpoint()
        )
    }

    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Creates a container with a Shared Key signed request (Create Container).
    pub fn create_container(&self, name: &str) -> Result<()> {
        let (status, body) = self.signed(
            "PUT",
            &format!("/{AZURITE_ACCOUNT}/{name}"),
            "restype=container",
        )?;
        if status != 201 {
            bail!(
                "creating container {name}: HTTP {status}: {body}\n{}",
                self.log_contents()
            );
        }
        Ok(())
    }

    /// The names of the blobs in `container` (List Blobs, every page).
    pub fn list_blobs(&self, container: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut marker = String::new();
        loop {
            let mut query = "comp=list&restype=container".to_owned();
            if !marker.is_empty() {
                query = format!("comp=list&marker={marker}&restype=container");
            }
            let (status, body) =
                self.signed("GET", &format!("/{AZURITE_ACCOUNT}/{container}"), &query)?;
            if status != 200 {
                bail!("listing container {container}: HTTP {status}: {body}");
            }
            names.extend(xml_values(&body, "Name"));
            marker = xml_values(&body, "NextMarker")
                .into_iter()
                .next()
                .unwrap_or_default();
            if marker.is_empty() {
                break;
            }
        }
        names.sort();
        Ok(names)
    }

    /// A service SAS for `container` (`sr=c`) with `permissions` (such as `racwdl`)
    /// that expires at `expiry`, signed with the development account's key: the query
    /// string a user puts in `storageSasToken`. Give an expiry in the past for an
    /// expired token.
    pub fn container_sas(
        &self,
        container: &str,
        permissions: &str,
        expiry: SystemTime,
    ) -> Result<String> {
        let version = "2021-08-06";
        let expiry = iso8601(expiry);
        // The 2020-12-06 service SAS string-to-sign: permissions, start, expiry,
        // canonical resource, identifier, IP, protocol, version, resource, snapshot time,
        // encryption scope and the five response headers (unused here).
        let string_to_sign = [
            permissions,
            "",
            &expiry,
            &format!("/blob/{AZURITE_ACCOUNT}/{container}"),
            "",
            "",
            "",
            version,
            "c",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ]
        .join("\n");
        let key = STANDARD
            .decode(AZURITE_KEY)
            .context("decoding the account key")?;
        let signature = STANDARD.encode(hmac(&key, string_to_sign.as_bytes()));
        Ok(format!(
            "sv={version}&sr=c&sp={permissions}&se={}&sig={}",
            percent_encode(&expiry),
            percent_encode(&signature)
        ))
    }

    /// Sends one Shared Key signed request without a body; returns the status and body.
    fn signed(&self, method: &str, path: &str, query: &str) -> Result<(u16, String)> {
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
        let response = match self.ca_pem_path() {
            Some(ca) => exchange_tls(self.port, &ca, request.as_bytes())?,
            None => exchange_plain(self.port, request.as_bytes())?,
        };
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("no HTTP status from Azurite: {text:?}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| dechunk(b))
            .unwrap_or_default();
        Ok((status, body))
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

fn exchange_plain(port: u16, request: &[u8]) -> Result<Vec<u8>> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request)?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    Ok(response)
}

/// One request over TLS, verified against `ca`: the kit has no TLS library, and
/// `openssl s_client` (which the certificates already need) is a TLS pipe.
fn exchange_tls(port: u16, ca: &Path, request: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-CAfile")
        .arg(ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running openssl s_client")?;
    child
        .stdin
        .take()
        .context("openssl's stdin")?
        .write_all(request)?;
    // `-quiet` keeps the connection open after stdin ends; `Connection: close` ends it.
    let out = child.wait_with_output()?;
    if out.stdout.is_empty() {
        bail!(
            "no answer over TLS: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// The body of a `Transfer-Encoding: chunked` answer (Azurite's lists), or the text as
/// it is when it is not chunked.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, tail)) = rest.split_once("\r\n") else {
            return body.to_owned();
        };
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_owned();
        };
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}

/// The text of every `<tag>…</tag>` element.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find(&open) {
        let tail = &rest[at + open.len()..];
        let Some(end) = tail.find(&close) else { break };
        out.push(tail[..end].replace("&amp;", "&"));
        rest = &tail[end..];
    }
    out
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `2026-11-25T20:20:00Z`, as SAS times are written.
fn iso8601(time: SystemTime) -> String {
    let (_, (y, m, d), (hh, mm, ss)) = civil_time(time);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// Days since the epoch, the UTC date and the time of day.
fn civil_time(time: SystemTime) -> (i64, (i64, u32, u32), (u64, u64, u64)) {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    (
        days,
        civil_from_days(days),
        (rem / 3600, rem / 60 % 60, rem % 60),
    )
}

/// RFC 1123 date, as `x-ms-date` wants it.
fn http_date(now: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, (y, m, d), (hh, mm, ss)) = civil_time(now);
    format!(
        "{}, {d:02} {} {y} {hh:02}:{mm:02}:{ss:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
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
    fn sas_times_and_encoding() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_638_000);
        assert_eq!(iso8601(t), "2026-11-25T20:20:00Z");
        assert_eq!(percent_encode("a+b/c=:"), "a%2Bb%2Fc%3D%3A");
        assert_eq!(dechunk("5\r\nhello\r\n3\r\n!!!\r\n0\r\n\r\n"), "hello!!!");
        assert_eq!(
            xml_values("<a><Name>x</Name><Name>y&amp;z</Name></a>", "Name"),
            ["x", "y&z"]
        );
    }

    #[test]
    fn azurite_starts_creates_containers_and_stops() {
        let mut server = AzuriteServer::start().unwrap();
        server.create_container("walship").unwrap();
        let err = server.create_container("walship").unwrap_err().to_string();
        assert!(err.contains("409"), "{err}");
        assert!(server.list_blobs("walship").unwrap().is_empty());
        let port = server.port();
        server.stop();
        assert!(!port_is_open(port));
    }

    #[test]
    fn https_azurite_answers_over_tls_with_its_ca() {
        let server = AzuriteServer::start_with(AzuriteOptions {
            https_oauth: true,
            ..AzuriteOptions::default()
        })
        .unwrap();
        assert!(server.blob_endpoint().starts_with("https://"));
        server.create_container("walship").unwrap();
        assert!(server.list_blobs("walship").unwrap().is_empty());
    }
}
