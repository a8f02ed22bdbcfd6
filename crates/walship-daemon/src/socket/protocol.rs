//! The lines `wal-push`, `wal-fetch` and the daemon exchange: one request per
//! connection, one line each way.
//!
//! - `PUSH <absolute path>\n` → `OK <sha256>\n` (durably stored), `ERR <message>\n` (not
//!   stored: PostgreSQL must retry) or `NOTMINE <message>\n` (not this daemon's file: the
//!   client uploads it itself).
//! - `FETCH <name> <absolute path>\n` → `OK <object key>\n` (restored there),
//!   `NOTFOUND\n` (not in the archive) or `ERR <message>\n` (the client fetches it
//!   itself).
//!
//! These bytes must not change: during an upgrade an old `wal-push` talks to a new
//! daemon, and a new one to an old daemon. Nothing here does I/O.

use std::path::{Path, PathBuf};

/// A request, as the daemon reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Confirm that the WAL file at `path` (absolute) is archived.
    Push { path: PathBuf },
    /// Restore the WAL file `name` to `dest` (absolute).
    Fetch { name: String, dest: PathBuf },
}

/// A line the daemon could not take as a request; answered with an `ERR` line, which
/// both kinds of client read as a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(String);

/// The daemon's answer to a push request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushReply {
    /// Durably stored; the SHA-256 of the raw file.
    Archived { sha256: String },
    /// Not stored (yet); the reason. PostgreSQL must retry.
    Failed(String),
    /// Not a file this daemon archives; the client uploads it itself.
    NotMine(String),
}

/// The daemon's answer to a fetch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchReply {
    /// Restored to the requested path from the object `key`.
    Restored { key: String },
    /// The archive has no such file.
    NotFound,
    /// Not restored; the reason. The client fetches the file itself.
    Failed(String),
}

impl Request {
    pub fn to_line(&self) -> String {
        match self {
            Request::Push { path } => format!("PUSH {}\n", path.display()),
            Request::Fetch { name, dest } => format!("FETCH {name} {}\n", dest.display()),
        }
    }

    /// Reads one request line. Paths must be absolute: the daemon does not share the
    /// client's working directory.
    pub fn parse(line: &str) -> Result<Request, BadRequest> {
        let line = line.trim_end();
        let bad = || BadRequest(line.to_owned());
        match line.split_once(' ') {
            Some(("PUSH", path)) if Path::new(path).is_absolute() => Ok(Request::Push {
                path: PathBuf::from(path),
            }),
            Some(("FETCH", rest)) => match rest.split_once(' ') {
                Some((name, dest)) if Path::new(dest).is_absolute() => Ok(Request::Fetch {
                    name: name.to_owned(),
                    dest: PathBuf::from(dest),
                }),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl BadRequest {
    pub fn to_line(&self) -> String {
        err_line(&format!("bad request {:?}", self.0))
    }
}

impl PushReply {
    pub fn to_line(&self) -> String {
        match self {
            PushReply::Archived { sha256 } => format!("OK {sha256}\n"),
            PushReply::Failed(msg) => err_line(msg),
            PushReply::NotMine(msg) => format!("NOTMINE {}\n", one_line(msg)),
        }
    }

    /// Reads the daemon's answer to a push; `None` for anything else (a daemon that
    /// answers nonsense is treated like one that does not answer).
    pub fn parse(line: &str) -> Option<PushReply> {
        match split(line) {
            ("OK", sha256) => Some(PushReply::Archived {
                sha256: sha256.to_owned(),
            }),
            ("ERR", msg) => Some(PushReply::Failed(msg.to_owned())),
            ("NOTMINE", msg) => Some(PushReply::NotMine(msg.to_owned())),
            _ => None,
        }
    }
}

impl FetchReply {
    pub fn to_line(&self) -> String {
        match self {
            FetchReply::Restored { key } => format!("OK {key}\n"),
            FetchReply::NotFound => "NOTFOUND\n".to_owned(),
            FetchReply::Failed(msg) => err_line(msg),
        }
    }

    /// Reads the daemon's answer to a fetch; `None` for anything else.
    pub fn parse(line: &str) -> Option<FetchReply> {
        match split(line) {
            ("OK", key) => Some(FetchReply::Restored {
                key: key.to_owned(),
            }),
            ("NOTFOUND", _) => Some(FetchReply::NotFound),
            ("ERR", msg) => Some(FetchReply::Failed(msg.to_owned())),
            _ => None,
        }
    }
}

/// A reply is one line, so a message spanning several is joined with spaces.
fn one_line(msg: &str) -> String {
    msg.replace('\n', " ")
}

fn err_line(msg: &str) -> String {
    format!("ERR {}\n", one_line(msg))
}

/// The reply's first word and the rest of its line.
fn split(line: &str) -> (&str, &str) {
    let line = line.trim_end_matches('\n');
    line.split_once(' ').unwrap_or((line, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes an old `wal-push` sends and expects, byte for byte: changing any of
    /// them breaks upgrades, where old clients talk to a new daemon.
    #[test]
    fn the_wire_lines_are_the_ones_every_released_walship_speaks() {
        let sha = "ab".repeat(32);
        let key = "prefix/pg/wals/0000000100000000/000000010000000000000006.gz";
        let cases: [(String, &str); 9] = [
            (
                Request::Push {
                    path: "/pg/pg_wal/000000010000000000000006".into(),
                }
                .to_line(),
                "PUSH /pg/pg_wal/000000010000000000000006\n",
            ),
            (
                Request::Fetch {
                    name: "000000010000000000000006".to_owned(),
                    dest: "/pg/pg_wal/RECOVERYXLOG".into(),
                }
                .to_line(),
                "FETCH 000000010000000000000006 /pg/pg_wal/RECOVERYXLOG\n",
            ),
            (
                PushReply::Archived {
                    sha256: sha.clone(),
                }
                .to_line(),
                &format!("OK {sha}\n"),
            ),
            (
                PushReply::Failed("store down".to_owned()).to_line(),
                "ERR store down\n",
            ),
            (
                PushReply::NotMine("elsewhere".to_owned()).to_line(),
                "NOTMINE elsewhere\n",
            ),
            (
                FetchReply::Restored {
                    key: key.to_owned(),
                }
                .to_line(),
                &format!("OK {key}\n"),
            ),
            (FetchReply::NotFound.to_line(), "NOTFOUND\n"),
            (
                FetchReply::Failed("store down".to_owned()).to_line(),
                "ERR store down\n",
            ),
            (
                Request::parse("HELLO\n").unwrap_err().to_line(),
                "ERR bad request \"HELLO\"\n",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(line, expected);
        }
    }

    #[test]
    fn requests_are_read_back_and_relative_paths_refused() {
        for request in [
            Request::Push {
                path: "/data/pg_wal/000000010000000000000006".into(),
            },
            Request::Fetch {
                name: "00000002.history".to_owned(),
                dest: "/data/pg_wal/RECOVERYHISTORY".into(),
            },
            Request::Fetch {
                name: "000000010000000000000006".to_owned(),
                dest: "/path with spaces/RECOVERYXLOG".into(),
            },
        ] {
            assert_eq!(Request::parse(&request.to_line()), Ok(request));
        }
        for line in [
            "PUSH pg_wal/000000010000000000000006\n",
            "FETCH 000000010000000000000006 pg_wal/RECOVERYXLOG\n",
            "FETCH 000000010000000000000006\n",
            "PUSH\n",
            "\n",
            "DELETE /everything\n",
        ] {
            assert!(Request::parse(line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn replies_round_trip_as_single_lines() {
        for reply in [
            PushReply::Archived {
                sha256: "ab".repeat(32),
            },
            PushReply::Failed("store down\nsecond line".to_owned()),
            PushReply::NotMine("elsewhere".to_owned()),
        ] {
            let line = reply.to_line();
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            let back = PushReply::parse(&line).unwrap();
            match (&reply, &back) {
                (PushReply::Failed(_), PushReply::Failed(m)) => {
                    assert_eq!(m, "store down second line");
                }
                _ => assert_eq!(back, reply),
            }
        }
        for reply in [
            FetchReply::Restored {
                key: "prefix/pg/wals/00000002.history".to_owned(),
            },
            FetchReply::NotFound,
            FetchReply::Failed("store down".to_owned()),
        ] {
            assert_eq!(FetchReply::parse(&reply.to_line()), Some(reply));
        }
    }

    /// Each kind of client takes only the answers its request can get; anything else
    /// reads as no answer at all, and the client does the work itself.
    #[test]
    fn an_answer_that_does_not_fit_the_request_is_not_read_as_one() {
        for line in ["NOTFOUND\n", "WHAT 1\n", "\n", "ok abc\n"] {
            assert_eq!(PushReply::parse(line), None, "{line:?}");
        }
        for line in ["NOTMINE elsewhere\n", "WHAT 1\n", "\n"] {
            assert_eq!(FetchReply::parse(line), None, "{line:?}");
        }
    }
}
