//! The clients' end of the socket (`wal-push`, `wal-fetch`): one request, one answer,
//! bounded in time; and the fallback log, where `wal-push` notes what it uploaded itself
//! because the daemon did not answer.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{FetchReply, PushReply, Request};

/// Asks the daemon at `socket` to confirm `path` (absolute). An `Err` means no daemon
/// answered (none running, stale socket, timeout, an answer that is not one): the caller
/// uploads by itself.
pub async fn ask_push(socket: &Path, path: &Path, timeout: Duration) -> io::Result<PushReply> {
    let request = Request::Push {
        path: path.to_owned(),
    };
    let line = ask(socket, &request, timeout).await?;
    PushReply::parse(&line).ok_or_else(|| bad_reply(&line))
}

/// Asks the daemon at `socket` to restore `name` to `dest` (absolute). An `Err` means
/// no daemon answered: the caller fetches by itself.
pub async fn ask_fetch(
    socket: &Path,
    name: &str,
    dest: &Path,
    timeout: Duration,
) -> io::Result<FetchReply> {
    let request = Request::Fetch {
        name: name.to_owned(),
        dest: dest.to_owned(),
    };
    let line = ask(socket, &request, timeout).await?;
    FetchReply::parse(&line).ok_or_else(|| bad_reply(&line))
}

/// Sends `request` and reads the answer's line, all within `timeout`.
async fn ask(socket: &Path, request: &Request, timeout: Duration) -> io::Result<String> {
    let exchange = async {
        let mut stream = UnixStream::connect(socket).await?;
        stream.write_all(request.to_line().as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await?;
        Ok(line)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the daemon did not answer in time"))?
}

fn bad_reply(line: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("bad reply {line:?}"))
}

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
pub(crate) fn take_fallbacks(socket: &Path) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn no_socket_or_a_stale_one_is_an_error_not_an_answer() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("walship.sock");
        let wal = Path::new("/pg/pg_wal/000000010000000000000006");
        let wait = Duration::from_secs(5);
        assert!(ask_push(&socket, wal, wait).await.is_err());
        // A daemon killed with SIGKILL leaves its socket behind, with nobody listening.
        drop(tokio::net::UnixListener::bind(&socket).unwrap());
        assert!(socket.exists());
        assert!(ask_push(&socket, wal, wait).await.is_err());
        assert!(ask_fetch(&socket, "x", wal, wait).await.is_err());
    }
}
