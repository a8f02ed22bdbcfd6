//! The daemon's end of the socket: binds it (mode 0600), accepts connections and hands
//! each parsed request to a [`Handler`]. It knows the protocol, not the daemon.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::protocol::{FetchReply, PushReply, Request};
use crate::DaemonError;

/// What the server needs from whoever answers requests: the daemon, or a stand-in in
/// tests. Cheap to clone: one clone serves each connection.
pub trait Handler: Clone + Send + Sync + 'static {
    /// Answers `wal-push` for the WAL file at `path` (absolute).
    fn push(&self, path: &Path) -> impl Future<Output = PushReply> + Send;
    /// Answers `wal-fetch`: restores `name` to `dest` (absolute).
    fn fetch(&self, name: &str, dest: &Path) -> impl Future<Output = FetchReply> + Send;
}

/// The longest request line read; a path is far shorter, and a client sending more is
/// not a walship client.
const MAX_REQUEST_BYTES: u64 = 8192;

pub(crate) struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Binds `path`, replacing a stale socket left by a daemon that died, but refusing
    /// to steal one a live daemon still listens on. Only the user PostgreSQL and the
    /// daemon run as may connect (mode 0600).
    pub(crate) async fn bind(path: &Path) -> Result<Server, DaemonError> {
        let io_err = |source| DaemonError::Io {
            path: path.to_owned(),
            source,
        };
        let len = path.as_os_str().len();
        if len > crate::MAX_SOCKET_PATH {
            return Err(DaemonError::SocketPathTooLong {
                path: path.to_owned(),
                len,
            });
        }
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

    /// Serves until `shutdown` is cancelled, then removes the socket.
    pub(crate) async fn serve(self, handler: impl Handler, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let handler = handler.clone();
                        tokio::spawn(async move {
                            if let Err(e) = handle(stream, handler).await {
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

async fn handle(stream: UnixStream, handler: impl Handler) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
    reader.read_line(&mut line).await?;
    let reply = match Request::parse(&line) {
        Ok(Request::Push { path }) => handler.push(&path).await.to_line(),
        Ok(Request::Fetch { name, dest }) => handler.fetch(&name, &dest).await.to_line(),
        Err(bad) => bad.to_line(),
    };
    write.write_all(reply.as_bytes()).await?;
    write.shutdown().await
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::socket::client::{ask_fetch, ask_push};

    /// Answers every request the same way and remembers what it was asked.
    #[derive(Clone, Default)]
    struct Recorder {
        asked: Arc<Mutex<Vec<String>>>,
    }

    impl Handler for Recorder {
        async fn push(&self, path: &Path) -> PushReply {
            self.asked
                .lock()
                .unwrap()
                .push(format!("push {}", path.display()));
            PushReply::Archived {
                sha256: "ab".repeat(32),
            }
        }

        async fn fetch(&self, name: &str, dest: &Path) -> FetchReply {
            self.asked
                .lock()
                .unwrap()
                .push(format!("fetch {name} {}", dest.display()));
            FetchReply::NotFound
        }
    }

    #[tokio::test]
    async fn a_socket_path_longer_than_unix_sockets_allow_is_refused_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d".repeat(100)).join("walship.sock");
        let Err(e) = Server::bind(&path).await else {
            panic!("bound a {}-byte path", path.as_os_str().len());
        };
        let said = e.to_string();
        assert!(
            said.starts_with("--socket ") && said.contains("at most 107"),
            "{said}"
        );
    }

    #[tokio::test]
    async fn requests_reach_the_handler_and_malformed_ones_are_refused_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/walship.sock");
        let server = Server::bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let recorder = Recorder::default();
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(server.serve(recorder.clone(), shutdown.clone()));
        let wait = Duration::from_secs(10);

        let wal = Path::new("/pg/pg_wal/000000010000000000000006");
        let pushed = ask_push(&path, wal, wait).await.unwrap();
        assert_eq!(
            pushed,
            PushReply::Archived {
                sha256: "ab".repeat(32)
            }
        );
        let fetched = ask_fetch(&path, "000000010000000000000007", Path::new("/tmp/x"), wait)
            .await
            .unwrap();
        assert_eq!(fetched, FetchReply::NotFound);

        let mut stream = UnixStream::connect(&path).await.unwrap();
        stream
            .write_all(b"PUSH pg_wal/000000010000000000000006\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert_eq!(
            answer,
            "ERR bad request \"PUSH pg_wal/000000010000000000000006\"\n"
        );

        assert_eq!(
            *recorder.asked.lock().unwrap(),
            [
                "push /pg/pg_wal/000000010000000000000006",
                "fetch 000000010000000000000007 /tmp/x",
            ]
        );
        // A second daemon must not steal the socket of a live one.
        assert!(matches!(
            Server::bind(&path).await,
            Err(DaemonError::SocketInUse { .. })
        ));
        shutdown.cancel();
        serving.await.unwrap();
        assert!(!path.exists(), "the socket outlived the server");
    }
}
