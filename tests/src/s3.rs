//! A local S3-compatible server: `s3s-fs` by default, `minio` when one is on `PATH`,
//! or moto's server where a test needs what s3s-fs gets wrong (create-only puts that
//! are atomic under concurrent PUTs of one key, a missing bucket that stays missing).

use std::env;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::paths::{target_dir, tool_path};
use crate::sigv4;
use crate::util::{free_port, port_is_open, random_token, tail, wait_until};

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Which server implementation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3Kind {
    /// `s3s-fs`: objects are plain files at `<root>/<bucket>/<key>`.
    S3sFs,
    /// MinIO: objects are in MinIO's own on-disk format under the root.
    Minio,
    /// moto's server (`moto_server`, PyPI `moto[server]`): objects live in the
    /// process's memory, so the root stays empty and a restart loses them. It checks
    /// `If-None-Match: *` atomically (of concurrent creates of one key exactly one
    /// wins) and answers a PUT into a missing bucket with `NoSuchBucket`, where s3s-fs
    /// does neither; it accepts any keys.
    Moto,
}

impl S3Kind {
    /// `$WALSHIP_S3_SERVER` (`s3s-fs`, `minio` or `moto`) when set, else `minio` when
    /// one is on `PATH`, else `s3s-fs`.
    pub fn detect() -> Result<Self> {
        match env::var("WALSHIP_S3_SERVER").as_deref() {
            Ok("s3s-fs") => return Ok(S3Kind::S3sFs),
            Ok("minio") => return Ok(S3Kind::Minio),
            Ok("moto") => return Ok(S3Kind::Moto),
            Ok("") | Err(_) => {}
            Ok(other) => {
                bail!("WALSHIP_S3_SERVER={other:?}: expected `s3s-fs`, `minio` or `moto`")
            }
        }
        let minio_on_path = env::var_os("PATH")
            .is_some_and(|p| env::split_paths(&p).any(|dir| dir.join("minio").is_file()));
        Ok(if minio_on_path {
            S3Kind::Minio
        } else {
            S3Kind::S3sFs
        })
    }

    /// The program's file name.
    pub fn program(self) -> &'static str {
        match self {
            S3Kind::S3sFs => "s3s-fs",
            S3Kind::Minio => "minio",
            S3Kind::Moto => "moto_server",
        }
    }

    /// Where the program is installed; an error says how to install it.
    pub fn path(self) -> Result<PathBuf> {
        match self {
            S3Kind::Moto => moto_path(),
            other => tool_path(other.program()),
        }
    }
}

/// Finds moto's `moto_server`: `$WALSHIP_MOTO`, else
/// `<target>/tools/moto-venv/bin/moto_server` (the pinned version `cargo xtask
/// install-tools` puts there), else on `PATH` (or where [`tool_path`] looks).
pub fn moto_path() -> Result<PathBuf> {
    if let Some(p) = env::var_os("WALSHIP_MOTO").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let ours = target_dir().join("tools/moto-venv/bin/moto_server");
    if ours.exists() {
        return Ok(ours);
    }
    tool_path("moto_server").map_err(|_| {
        anyhow::anyhow!(
            "moto_server not found: run `cargo xtask install-tools` (pip installs \
             moto[server] into <target>/tools/moto-venv), or set WALSHIP_MOTO"
        )
    })
}

/// What to start; every field left `None` is chosen by the kit.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// The implementation; default [`S3Kind::detect`].
    pub kind: Option<S3Kind>,
    /// The port; default a free one.
    pub port: Option<u16>,
    /// The data directory (created if missing); default a fresh temporary one.
    pub root: Option<PathBuf>,
    /// Where the server's output goes; default `server.log` beside a temporary root,
    /// or `<root>.log` for a given root.
    pub log: Option<PathBuf>,
    /// The access key; default a random one.
    pub access_key: Option<String>,
    /// The secret key; default a random one.
    pub secret_key: Option<String>,
}

/// A running S3-compatible server on 127.0.0.1; dropping it kills the server.
pub struct S3Server {
    kind: S3Kind,
    program: PathBuf,
    port: u16,
    access_key: String,
    secret_key: String,
    root: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    // Declared last so the server is stopped before its directory is removed.
    _temp: Option<TempDir>,
}

impl S3Server {
    /// Starts a server with a fresh temporary root, random keys and a free port.
    pub fn start() -> Result<S3Server> {
        Self::start_with(S3Options::default())
    }

    /// Starts moto's server (in memory, random keys, a free port): for the checks
    /// s3s-fs cannot make, such as concurrent create-only puts of one key.
    pub fn start_moto() -> Result<S3Server> {
        Self::start_with(S3Options {
            kind: Some(S3Kind::Moto),
            ..S3Options::default()
        })
    }

    /// Starts a server as `options` say; waits until it accepts connections.
    pub fn start_with(options: S3Options) -> Result<S3Server> {
        let kind = match options.kind {
            Some(kind) => kind,
            None => S3Kind::detect()?,
        };
        let program = kind.path()?;
        let (temp, root, log) = match options.root {
            Some(root) => {
                let log = options.log.unwrap_or_else(|| root.with_extension("log"));
                (None, root, log)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("walship-s3-")
                    .tempdir_in("/tmp")
                    .context("creating a temporary directory for the S3 server")?;
                let root = temp.path().join("data");
                let log = options
                    .log
                    .unwrap_or_else(|| temp.path().join("server.log"));
                (Some(temp), root, log)
            }
        };
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let mut server = S3Server {
            kind,
            program,
            port: 0,
            access_key: options
                .access_key
                .unwrap_or_else(|| format!("WS{}", random_token(18))),
            // MinIO wants at least 8 characters; AWS-style secrets are 40.
            secret_key: options.secret_key.unwrap_or_else(|| random_token(40)),
            root,
            log,
            child: None,
            _temp: temp,
        };
        match options.port {
            Some(port) => {
                server.port = port;
                server.spawn()?;
            }
            None => {
                // A free port can be taken between our check and the server's bind:
                // try a few fresh ones before giving up.
                let mut last_error = None;
                for _ in 0..3 {
                    server.port = free_port()?;
                    match server.spawn() {
                        Ok(()) => return Ok(server),
                        Err(e) => last_error = Some(e),
                    }
                }
                return Err(last_error.expect("at least one attempt"));
            }
        }
        Ok(server)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = Command::new(&self.program);
        match self.kind {
            S3Kind::S3sFs => {
                cmd.args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
                    .args(["--access-key", &self.access_key])
                    .args(["--secret-key", &self.secret_key])
                    .arg(&self.root);
            }
            S3Kind::Minio => {
                // MinIO also serves a web console; keep it off the well-known port.
                let console = free_port()?;
                cmd.arg("server")
                    .args(["--address", &format!("127.0.0.1:{}", self.port)])
                    .args(["--console-address", &format!("127.0.0.1:{console}")])
                    .arg(&self.root)
                    .env("MINIO_ROOT_USER", &self.access_key)
                    .env("MINIO_ROOT_PASSWORD", &self.secret_key)
                    .env("MINIO_BROWSER", "off");
            }
            S3Kind::Moto => {
                // Keys are not passed: without INITIAL_NO_AUTH_ACTION_COUNT moto accepts
                // any signature.
                cmd.args(["--host", "127.0.0.1", "--port", &self.port.to_string()]);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        self.child = Some(child);
        let port = self.port;
        let what = format!("{} to listen on 127.0.0.1:{port}", self.kind.program());
        let waited = wait_until(START_TIMEOUT, &what, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("the server exited ({status})");
            }
            Ok(port_is_open(port))
        });
        if let Err(e) = waited {
            self.kill();
            return Err(e.context(format!(
                "{} log tail:\n{}",
                self.log.display(),
                tail(&self.log_contents(), 20)
            )));
        }
        Ok(())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The access key id the server accepts.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key the server accepts.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Which implementation is running.
    pub fn kind(&self) -> S3Kind {
        self.kind
    }

    /// The server's data directory. For `s3s-fs` an object is the plain file
    /// `<root>/<bucket>/<key>` (its metadata sits in dot-files directly under the root);
    /// moto keeps everything in memory and leaves it empty.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The server's output so far.
    pub fn log_contents(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Creates a bucket. For `s3s-fs` a bucket is a directory under the root, so this
    /// makes the directory; for MinIO and moto it sends a signed CreateBucket.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        match self.kind {
            S3Kind::S3sFs => {
                let dir = self.root.join(name);
                fs::create_dir(&dir).with_context(|| format!("creating bucket {name}"))
            }
            S3Kind::Minio | S3Kind::Moto => {
                // MinIO may accept connections a moment before it serves requests.
                let mut status = 0;
                let what = format!("{} to create a bucket", self.kind.program());
                wait_until(Duration::from_secs(10), &what, || {
                    status = sigv4::send(
                        self.port,
                        "PUT",
                        &format!("/{name}"),
                        &self.access_key,
                        &self.secret_key,
                    )?;
                    Ok(status != 503)
                })?;
                if status != 200 {
                    bail!(
                        "creating bucket {name}: {} answered HTTP {status}",
                        self.kind.program()
                    );
                }
                Ok(())
            }
        }
    }

    /// Whether the bucket exists, asked over the S3 API (a signed HeadBucket), which
    /// also proves the keys are accepted.
    pub fn bucket_exists(&self, name: &str) -> Result<bool> {
        match sigv4::send(
            self.port,
            "HEAD",
            &format!("/{name}"),
            &self.access_key,
            &self.secret_key,
        )? {
            200 => Ok(true),
            404 => Ok(false),
            other => bail!("HeadBucket {name}: HTTP {other}"),
        }
    }

    /// Stores `body` at `bucket/key` with one signed PUT (payload unsigned, no
    /// checksum, a connection of its own) and returns the HTTP status: the
    /// benchmark's measure of what the server itself can ingest.
    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) -> Result<u16> {
        sigv4::send_with_body(
            self.port,
            "PUT",
            &format!("/{bucket}/{key}"),
            &self.access_key,
            &self.secret_key,
            Some(body),
        )
    }

    /// The object at `bucket/key`, read with one signed GET; an error for any answer
    /// but 200.
    pub fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        let (status, body) = sigv4::exchange(
            self.port,
            "GET",
            &format!("/{bucket}/{key}"),
            &self.access_key,
            &self.secret_key,
            None,
        )?;
        if status != 200 {
            bail!("GET {bucket}/{key}: HTTP {status}");
        }
        Ok(body)
    }

    /// The objects of a bucket as `(key, size)`, sorted, read from disk (`s3s-fs` only).
    pub fn objects_on_disk(&self, bucket: &str) -> Result<Vec<(String, u64)>> {
        if self.kind != S3Kind::S3sFs {
            bail!(
                "objects_on_disk reads s3s-fs's layout; this server is {:?}",
                self.kind
            );
        }
        let base = self.root.join(bucket);
        let mut out = Vec::new();
        collect_files(&base, &base, &mut out)?;
        out.sort();
        Ok(out)
    }

    /// Kills the server and waits for it to exit; idempotent.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Stops the server and starts it again on the same port, root and keys (for
    /// outage tests).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        // The old listening socket is gone once the process is reaped; the new one
        // can bind at once because both servers set SO_REUSEADDR.
        self.spawn()
    }

    /// Leaves the server running after this handle is gone (for `cargo xtask
    /// services`) and returns its pid.
    pub fn detach(mut self) -> Option<u32> {
        // Dropping a `Child` neither kills nor waits for it.
        self.child.take().map(|c| c.id())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn collect_files(base: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let meta = entry.metadata()?;
        if meta.is_dir() {
            collect_files(base, &path, out)?;
        } else {
            let key = path.strip_prefix(base)?.to_string_lossy().into_owned();
            out.push((key, meta.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3s_fs() -> S3Server {
        S3Server::start_with(S3Options {
            kind: Some(S3Kind::S3sFs),
            ..S3Options::default()
        })
        .expect("s3s-fs starts (run `cargo xtask install-tools` if it is missing)")
    }

    #[test]
    fn s3s_fs_starts_serves_and_frees_its_port_on_drop() {
        let server = s3s_fs();
        let port = server.port();
        assert!(port_is_open(port));
        assert_eq!(server.endpoint(), format!("http://127.0.0.1:{port}"));
        assert!(server.pid().is_some());
        let root = server.root_dir().to_path_buf();
        assert!(root.is_dir());
        drop(server);
        assert!(!port_is_open(port), "port {port} still open after drop");
        assert!(
            !root.exists(),
            "temporary root {} left behind",
            root.display()
        );
    }

    #[test]
    fn a_bucket_made_as_a_directory_is_seen_over_the_api() {
        let server = s3s_fs();
        assert!(!server.bucket_exists("walship").unwrap());
        server.create_bucket("walship").unwrap();
        assert!(server.bucket_exists("walship").unwrap());
        assert!(server.objects_on_disk("walship").unwrap().is_empty());
    }

    #[test]
    fn s3s_fs_rejects_a_wrong_secret() {
        let server = s3s_fs();
        // (A one-letter bucket name is invalid in S3 and answered 400 before any
        // signature check.)
        server.create_bucket("keys").unwrap();
        let status =
            sigv4::send(server.port(), "HEAD", "/keys", server.access_key(), "wrong").unwrap();
        assert_eq!(status, 403);
        let ok = sigv4::send(
            server.port(),
            "HEAD",
            "/keys",
            server.access_key(),
            server.secret_key(),
        )
        .unwrap();
        assert_eq!(ok, 200);
    }

    #[test]
    fn put_object_stores_the_body() {
        let server = s3s_fs();
        server.create_bucket("puts").unwrap();
        assert_eq!(server.put_object("puts", "a/b", b"hello").unwrap(), 200);
        assert_eq!(
            server.objects_on_disk("puts").unwrap(),
            vec![("a/b".to_owned(), 5)]
        );
    }

    fn moto() -> S3Server {
        S3Server::start_moto()
            .expect("moto_server starts (run `cargo xtask install-tools` if it is missing)")
    }

    #[test]
    fn moto_starts_serves_and_frees_its_port_on_drop() {
        let server = moto();
        let port = server.port();
        assert_eq!(server.kind(), S3Kind::Moto);
        assert!(!server.bucket_exists("walship").unwrap());
        server.create_bucket("walship").unwrap();
        assert!(server.bucket_exists("walship").unwrap());
        drop(server);
        assert!(!port_is_open(port), "port {port} still open after drop");
    }

    #[test]
    fn moto_refuses_a_put_into_a_missing_bucket() {
        // s3s-fs creates the bucket instead (shared/TEST-INFRA.md): moto is where a
        // missing bucket can be seen.
        let server = moto();
        assert_eq!(server.put_object("absent", "k", b"x").unwrap(), 404);
        assert!(!server.bucket_exists("absent").unwrap());
    }

    #[test]
    fn restart_keeps_port_root_and_keys() {
        let mut server = s3s_fs();
        server.create_bucket("keep").unwrap();
        let (port, pid) = (server.port(), server.pid());
        server.stop();
        assert!(!port_is_open(port));
        server.restart().unwrap();
        assert_eq!(server.port(), port);
        assert_ne!(server.pid(), pid);
        assert!(server.bucket_exists("keep").unwrap());
    }
}
