//! The Unix socket between `wal-push` and the daemon.
//!
//! One request per connection, one line each way:
//! `PUSH <absolute path>\n` → `OK <sha256>\n` (durably stored), `ERR <message>\n` (not
//! stored: PostgreSQL must retry) or `NOTMINE <message>\n` (not this daemon's file: the
//! client uploads it itself). The socket is created with mode 0600, so only the user
//! PostgreSQL and the daemon run as can talk to it.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Daemon, DaemonError};

/// The daemon's answer to a push request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Stored; the SHA-256 of the raw file.
    Archived(String),
    /// Not stored (yet); the reason.
    Failed(String),
    /// Not a file this daemon archives; the client should upload it itself.
    NotMine(String),
    /// (restore) The archive has no such file.
    NotFound,
}

impl Reply {
    fn to_line(&self) -> String {
        let one_line = |s: &str| s.replace('\n', " ");
        match self {
            Reply::Archived(sha) => format!("OK {sha}\n"),
            Reply::Failed(msg) => format!("ERR {}\n", one_line(msg)),
            Reply::NotMine(msg) => format!("NOTMINE {}\n", one_line(msg)),
            Reply::NotFound => "NOTFOUND\n".to_owned(),
        }
    }

    fn from_line(line: &str) -> Option<Reply> {
        let line = line.trim_end_matches('\n');
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "OK" => Some(Reply::Archived(rest.to_owned())),
            "ERR" => Some(Reply::Failed(rest.to_owned())),
            "NOTMINE" => Some(Reply::NotMine(rest.to_owned())),
            "NOTFOUND" => Some(Reply::NotFound),
            _ => None,
        }
    }
}

pub(super) struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Binds `path`, replacing a stale socket left by a daemon that died, but refusing
    /// to steal one a live daemon still listens on.
    pub(super) async fn bind(path: &Path) -> Result<Server, DaemonError> {
        let io_err = |source| DaemonError::Io {
            path: path.to_owned(),
            source,
        };
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                return Err(DaemonError::SocketInUse {
                    path: path.to_owned(),
                });
            }
            std::fs::remove_file(path).map_err(io_err)?;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let listener = UnixListener::bind(path).map_err(io_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        Ok(Server {
            listener,
            path: path.to_owned(),
        })
    }

    pub(super) async fn serve(self, daemon: Daemon, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let daemon = daemon.clone();
                        tokio::spawn(async move {
                            if let Err(e) = handle(stream, daemon).await {
                                debug!("socket client: {e}");
                            }
                        });
                    }
                    Err(e) => warn!("accepting on {}: {e}", self.path.display()),
                },
            }
        }
        // New wal-push calls now upload directly, as without a daemon.
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn handle(stream: UnixStream, daemon: Daemon) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(8192));
    reader.read_line(&mut line).await?;
    let reply = match line.trim_end().split_once(' ') {
        Some(("PUSH", path)) if Path::new(path).is_absolute() => {
            daemon.request_push(Path::new(path)).await
        }
        Some(("FETCH", rest)) => match rest.split_once(' ') {
            Some((name, dest)) if Path::new(dest).is_absolute() => {
                daemon.request_fetch(name, Path::new(dest)).await
            }
            _ => Reply::Failed(format!("bad request {:?}", line.trim_end())),
        },
        _ => Reply::Failed(format!("bad request {:?}", line.trim_end())),
    };
    write.write_all(reply.to_line().as_bytes()).await?;
    write.shutdown().await
}

use tokio::io::AsyncReadExt as _;

/// Where `wal-push` notes a segment it uploaded itself because the daemon behind
/// `socket` did not answer; the daemon counts (and empties) it when it runs again, as
/// `walship_wal_push_fallback_uploads_total`.
pub fn fallback_log(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".fallbacks");
    PathBuf::from(name)
}

/// Appends `wal` to the fallback log of `socket` (best effort: it only feeds a metric).
pub fn record_fallback(socket: &Path, wal: &str) {
    use std::io::Write;
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(fallback_log(socket))
        .and_then(|mut f| f.write_all(format!("{wal}\n").as_bytes()));
}

/// Takes the fallback log of `socket`: the number of uploads noted since the last
/// call. The log is renamed before it is read, so notes appended meanwhile start a new
/// log instead of being lost.
pub(super) fn take_fallbacks(socket: &Path) -> usize {
    let log = fallback_log(socket);
    let taken = log.with_extension("fallbacks.taken");
    if std::fs::rename(&log, &taken).is_err() {
        return 0;
    }
    let count = std::fs::read_to_string(&taken)
        .map(|text| text.lines().filter(|l| !l.is_empty()).count())
        .unwrap_or(0);
    let _ = std::fs::remove_file(&taken);
    count
}

/// Asks the daemon at `socket` to confirm `path` (absolute). An `Err` means no daemon
/// answered (none running, stale socket, timeout): the caller uploads by itself.
pub async fn ask_push(socket: &Path, path: &Path, timeout: Duration) -> io::Result<Reply> {
    ask(socket, format!("PUSH {}\n", path.display()), timeout).await
}

/// Asks the daemon at `socket` to restore `name` to `dest` (absolute). An `Err` means
/// no daemon answered: the caller fetches by itself.
pub async fn ask_fetch(
    socket: &Path,
    name: &str,
    dest: &Path,
    timeout: Duration,
) -> io::Result<Reply> {
    ask(
        socket,
        format!("FETCH {name} {}\n", dest.display()),
        timeout,
    )
    .await
}

async fn ask(socket: &Path, request: String, timeout: Duration) -> io::Result<Reply> {
    let exchange = async {
        let mut stream = UnixStream::connect(socket).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await?;
        Reply::from_line(&line).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("bad reply {line:?}"))
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the daemon did not answer in time"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_as_single_lines() {
        for reply in [
            Reply::Archived("ab".repeat(32)),
            Reply::Failed("store down\nsecond line".to_owned()),
            Reply::NotMine("elsewhere".to_owned()),
            Reply::NotFound,
        ] {
            let line = reply.to_line();
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            let back = Reply::from_line(&line).unwrap();
            match (&reply, &back) {
                (Reply::Failed(_), Reply::Failed(m)) => assert_eq!(m, "store down second line"),
                _ => assert_eq!(back, reply),
            }
        }
        assert_eq!(Reply::from_line("WHAT 1"), None);
    }

    #[test]
    fn fallback_notes_are_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("walship.sock");
        assert_eq!(take_fallbacks(&socket), 0);
        record_fallback(&socket, "000000010000000000000001");
        record_fallback(&socket, "000000010000000000000002");
        assert_eq!(take_fallbacks(&socket), 2);
        assert_eq!(take_fallbacks(&socket), 0);
        record_fallback(&socket, "000000010000000000000003");
        assert_eq!(take_fallbacks(&socket), 1);
    }
}
