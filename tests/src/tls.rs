//! A TLS front for a local server, with a private CA made for the occasion: `stunnel`
//! terminates TLS on 127.0.0.1 with a certificate signed by a throwaway CA (made with
//! the `openssl` command) and forwards to the plain-HTTP server behind it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::paths::tool_path;
use crate::util::{free_port, port_is_open, run_checked, wait_until};

/// `stunnel` forwarding TLS on its own port to `127.0.0.1:<backend>`; stopped when dropped.
pub struct TlsProxy {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl TlsProxy {
    pub fn start(backend_port: u16) -> Result<TlsProxy> {
        let dir = tempfile::tempdir()?;
        make_certificates(dir.path())?;
        let port = free_port()?;
        let conf = dir.path().join("stunnel.conf");
        fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\n[front]\naccept = 127.0.0.1:{port}\n\
                 connect = 127.0.0.1:{backend_port}\ncert = {}\nkey = {}\n",
                dir.path().join("server.pem").display(),
                dir.path().join("server.key").display()
            ),
        )?;
        let program = tool_path("stunnel")
            .or_else(|_| tool_path("stunnel4"))
            .context("stunnel is missing (Debian package stunnel4)")?;
        let log = fs::File::create(dir.path().join("stunnel.log"))?;
        let child = Command::new(program)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting stunnel")?;
        let mut proxy = TlsProxy {
            child: Some(child),
            port,
            dir,
        };
        wait_until(Duration::from_secs(20), "stunnel to listen", || {
            if let Some(status) = proxy
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "stunnel exited ({status}): {}",
                    fs::read_to_string(proxy.dir.path().join("stunnel.log")).unwrap_or_default()
                );
            }
            Ok(port_is_open(port))
        })?;
        Ok(proxy)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The PEM of the CA that signed the proxy's certificate.
    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A CA and a server certificate for IP 127.0.0.1 signed by it.
pub(crate) fn make_certificates(dir: &Path) -> Result<()> {
    let openssl = |args: &[&str]| -> Result<()> {
        let mut cmd = Command::new("openssl");
        cmd.args(args).current_dir(dir);
        run_checked(&mut cmd).map(drop)
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=walship test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ])?;
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ])
}
