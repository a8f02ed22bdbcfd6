//! What `wal-push`, `wal-fetch` and `check` do, whether a daemon runs or not.
//!
//! `wal-push` and `wal-fetch` ask the daemon first, over its [`socket`](crate::socket).
//! When no daemon can answer for the file (no socket, a stale one, silence, a file it
//! does not archive) they do the work themselves through an [`Archiver`], exactly as
//! without a daemon, within the same time budget. A daemon that answered decides: a
//! push it failed is not retried here, because PostgreSQL retries it.
//!
//! Each command returns a small result that the binary maps to its exit status; nothing
//! here exits or prints, and the configuration is wired by the caller, only when the
//! daemon did not answer (so the fast path reads no manifest and no secret).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};
use walship_engine::{Archiver, FetchOutcome};

use crate::socket::{FetchReply, PushReply, ask_fetch, ask_push, record_fallback};

/// wal-fetch's status for any failure other than "not in the archive": above 125, so
/// PostgreSQL stops recovery instead of taking the segment as missing and ending
/// recovery early on a timeline with a gap.
pub const EXIT_RESTORE_FATAL: u8 = 126;

/// How long wal-push waits for the daemon at most (and within --timeout-seconds).
const PUSH_WAIT: Duration = Duration::from_secs(30);

/// How long the daemon lets a wal-push request wait for its upload
/// ([`DaemonConfig::push_wait`](crate::DaemonConfig::push_wait)): a little less than
/// wal-push waits, so its answer (not a timeout) normally arrives.
pub const DAEMON_PUSH_WAIT: Duration = Duration::from_secs(PUSH_WAIT.as_secs() - 2);

/// How long wal-fetch waits for the daemon at most (and within --retry-seconds).
const FETCH_WAIT: Duration = Duration::from_secs(120);

/// Why wal-push uploads a file itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direct {
    /// No daemon socket: no daemon runs (or it shut down cleanly).
    NoDaemon,
    /// A socket exists but nothing answered: the daemon died or hangs.
    Silent,
    /// The daemon answered that this file is not one it archives.
    NotMine,
}

/// How `wal-push` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushResult {
    /// The daemon confirmed the file is durably archived.
    ArchivedByDaemon,
    /// Uploaded here (or an identical copy was already archived), for the reason given.
    ArchivedDirectly(Direct),
    /// Not archived: PostgreSQL keeps the file and retries it later.
    NotArchived { reason: String },
}

/// How `wal-fetch` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchResult {
    /// The daemon restored the file (from its prefetch spool or the store).
    RestoredByDaemon,
    /// Restored here from the store.
    RestoredDirectly,
    /// The archive has no such file.
    NotFound,
    /// Anything else: the store failing or silent for the whole budget, a corrupt
    /// object, a local write error. Recovery must stop rather than end at a gap.
    Fatal { reason: String },
}

/// How `check` ended: whether the archive is usable (and empty, when that was asked
/// for), and the lines to show the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub usable: bool,
    /// The report for standard output.
    pub report: Option<String>,
    /// What is wrong, for standard error.
    pub problem: Option<String>,
}

/// The client of one daemon socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    push_wait: Duration,
    fetch_wait: Duration,
}

impl Client {
    /// The client of the daemon listening (or not) on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
            push_wait: PUSH_WAIT,
            fetch_wait: FETCH_WAIT,
        }
    }

    /// `wal-push`: archives the file at `path` (PostgreSQL's `%p`, relative to the
    /// working directory) within `timeout`, the daemon's answer included. `archiver` is
    /// awaited only when this process has to upload the file itself; its error (a bad
    /// configuration) is returned as it is.
    pub async fn push<E>(
        &self,
        path: &Path,
        timeout: Duration,
        archiver: impl Future<Output = Result<Archiver, E>>,
    ) -> Result<PushResult, E> {
        let started = Instant::now();
        let direct = match self
            .push_through_daemon(path, self.push_wait.min(timeout))
            .await
        {
            Ok(result) => return Ok(result),
            Err(direct) => direct,
        };
        let archiver = archiver.await?;
        match push_unless_signalled(&archiver, path, started + timeout, timeout).await {
            Ok(()) => {
                if direct == Direct::Silent
                    && let Some(name) = path.file_name().and_then(|n| n.to_str())
                {
                    record_fallback(&self.socket, name);
                }
                Ok(PushResult::ArchivedDirectly(direct))
            }
            Err(reason) => {
                error!("not archived: {reason}");
                Ok(PushResult::NotArchived { reason })
            }
        }
    }

    /// The fast path of wal-push: ask the daemon. `Err` says why no daemon could answer
    /// for this file; the caller then uploads it directly, exactly as without a daemon.
    async fn push_through_daemon(&self, path: &Path, wait: Duration) -> Result<PushResult, Direct> {
        if !self.socket.exists() {
            return Err(Direct::NoDaemon);
        }
        // PostgreSQL runs archive_command in the data directory with a relative %p.
        let absolute = std::env::current_dir()
            .map_err(|_| Direct::Silent)?
            .join(path);
        match ask_push(&self.socket, &absolute, wait).await {
            Ok(PushReply::Archived { .. }) => Ok(PushResult::ArchivedByDaemon),
            Ok(PushReply::Failed(reason)) => {
                error!("not archived: {reason}");
                Ok(PushResult::NotArchived { reason })
            }
            Ok(PushReply::NotMine(msg)) => {
                info!("the daemon does not archive this file ({msg}); uploading directly");
                Err(Direct::NotMine)
            }
            Err(e) => {
                warn!(
                    "no answer from the daemon at {} ({e}); uploading directly",
                    self.socket.display()
                );
                Err(Direct::Silent)
            }
        }
    }

    /// `wal-fetch`: restores `name` to `dest` (PostgreSQL's `%f` and `%p`). A failing or
    /// silent store is retried until `retry` has passed since the call, the daemon's
    /// answer and the attempt in flight included; with zero, one attempt, bounded by the
    /// stores' per-request deadlines. `archiver` is awaited only when this process has
    /// to fetch the file itself.
    pub async fn fetch<E>(
        &self,
        name: &str,
        dest: &Path,
        retry: Duration,
        archiver: impl Future<Output = Result<Archiver, E>>,
    ) -> Result<FetchResult, E> {
        let started = Instant::now();
        let wait = if retry.is_zero() {
            self.fetch_wait
        } else {
            self.fetch_wait.min(retry)
        };
        if let Some(result) = self.fetch_through_daemon(name, dest, wait).await {
            return Ok(result);
        }
        let archiver = archiver.await?;
        Ok(fetch_within(&archiver, name, dest, started + retry, retry).await)
    }

    /// The prefetching path of wal-fetch: ask the daemon. `None` means it could not
    /// answer authoritatively, and the caller fetches directly (with its own retries).
    async fn fetch_through_daemon(
        &self,
        name: &str,
        dest: &Path,
        wait: Duration,
    ) -> Option<FetchResult> {
        if !self.socket.exists() {
            return None;
        }
        let absolute = std::env::current_dir().ok()?.join(dest);
        match ask_fetch(&self.socket, name, &absolute, wait).await {
            Ok(FetchReply::Restored { .. }) => Some(FetchResult::RestoredByDaemon),
            Ok(FetchReply::NotFound) => Some(FetchResult::NotFound),
            Ok(FetchReply::Failed(msg)) => {
                warn!("the daemon could not restore {name} ({msg}); fetching directly");
                None
            }
            Err(e) => {
                warn!(
                    "no answer from the daemon at {} ({e}); fetching directly",
                    self.socket.display()
                );
                None
            }
        }
    }
}

/// archive_command must never die on a signal: PostgreSQL's archiver treats that as
/// fatal and restarts. A termination request instead abandons the upload (nothing was
/// acknowledged) and exits 1, so PostgreSQL retries the file later.
async fn push_unless_signalled(
    archiver: &Archiver,
    path: &Path,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), String> {
    let bounded = async {
        injected_stuck_read().await;
        match tokio::time::timeout_at(deadline.into(), archiver.push(path)).await {
            Ok(result) => result.map(drop).map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "{} did not confirm the upload within --timeout-seconds {}; PostgreSQL will \
                 retry the file",
                archiver.store().describe(),
                timeout.as_secs()
            )),
        }
    };
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot install signal handlers; a signal would end this upload abruptly");
        return bounded.await;
    };
    let interrupted =
        || Err("interrupted by a signal before the store confirmed the upload".to_owned());
    tokio::select! {
        result = bounded => result,
        _ = term.recv() => interrupted(),
        _ = int.recv() => interrupted(),
        _ = quit.recv() => interrupted(),
        _ = hup.recv() => interrupted(),
    }
}

/// Tests stand in for a read stuck in the kernel (a hung network filesystem), which no
/// runtime can cancel, with a blocking task that never returns (debug builds only; a
/// release binary has no such switch).
#[cfg(debug_assertions)]
async fn injected_stuck_read() {
    if std::env::var_os("WALSHIP_INJECT_STUCK_READ").is_some() {
        let _ = tokio::task::spawn_blocking(|| {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        })
        .await;
    }
}

#[cfg(not(debug_assertions))]
async fn injected_stuck_read() {}

/// Fetches from the store, whose requests retry by the policy the archiver was built
/// with (for wal-fetch: for as long as `--retry-seconds` allows), within `deadline`.
/// Nothing retries here: a retry of the whole fetch would nest inside the store's.
async fn fetch_within(
    archiver: &Archiver,
    name: &str,
    dest: &Path,
    deadline: Instant,
    retry: Duration,
) -> FetchResult {
    // The budget bounds the attempt in flight too; with zero the fetch is bounded by
    // the stores' per-request deadlines alone.
    let attempt = archiver.fetch(name, dest);
    let result = if retry.is_zero() {
        attempt.await
    } else {
        match tokio::time::timeout_at(deadline.into(), attempt).await {
            Ok(result) => result,
            Err(_) => {
                let reason = format!(
                    "{name}: no answer from {} within --retry-seconds {}",
                    archiver.store().describe(),
                    retry.as_secs()
                );
                return fatal(reason, name);
            }
        }
    };
    match result {
        Ok(FetchOutcome::Restored { .. }) => FetchResult::RestoredDirectly,
        Ok(FetchOutcome::NotFound) => FetchResult::NotFound,
        Err(e) => fatal(e.to_string(), name),
    }
}

/// Logs why wal-fetch gives up on `name` with the status that stops recovery.
fn fatal(reason: String, name: &str) -> FetchResult {
    error!(
        "{reason}; exiting with status {EXIT_RESTORE_FATAL} so that PostgreSQL stops recovery \
         instead of treating {name} as missing"
    );
    FetchResult::Fatal { reason }
}

/// `check`: lists the archive within `timeout` and reports whether it is usable, and
/// empty when `expect_empty` (counting only WAL of `timeline` and later, when given).
pub async fn check(
    archiver: &Archiver,
    expect_empty: bool,
    timeline: Option<u32>,
    timeout: Duration,
) -> CheckResult {
    let store = archiver.store().describe();
    let wals = archiver.layout().wals_prefix();
    let report = match tokio::time::timeout(timeout, archiver.check(timeline)).await {
        Err(_) => {
            return CheckResult::unusable(format!(
                "{store}: no answer within --timeout-seconds {}; the store accepts \
                 connections but does not answer",
                timeout.as_secs()
            ));
        }
        Ok(Err(e)) => return CheckResult::unusable(e.to_string()),
        Ok(Ok(report)) => report,
    };
    let scope = timeline.map_or(String::new(), |t| format!(" (timeline {t} and later)"));
    if report.wal_objects == 0 {
        return CheckResult {
            usable: true,
            report: Some(format!(
                "ok: {store} reachable; the WAL archive under {wals} is empty{scope}"
            )),
            problem: None,
        };
    }
    let newest = report
        .newest
        .map(|n| format!(", newest segment {n}"))
        .unwrap_or_default();
    CheckResult {
        usable: !expect_empty,
        report: Some(format!(
            "{}: {store} reachable; {} WAL files already archived under {wals}{scope}{newest}",
            if expect_empty { "not empty" } else { "ok" },
            report.wal_objects,
        )),
        problem: expect_empty.then(|| {
            "expected an empty WAL archive: another cluster may be archiving here; check \
             serverName and destinationPath"
                .to_owned()
        }),
    }
}

impl CheckResult {
    fn unusable(problem: String) -> CheckResult {
        CheckResult {
            usable: false,
            report: None,
            problem: Some(problem),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;
    use walship_engine::ArchiverSettings;
    use walship_engine::test_support::segment_bytes;
    use walship_store::LocalStore;
    use walship_wal::Layout;

    use super::*;
    use crate::socket::fallback_log;

    const WAL: &str = "000000010000000000000006";

    /// A data directory with one segment, an archive in a local store, and a socket
    /// path where a stand-in daemon may listen.
    struct Fixture {
        dir: tempfile::TempDir,
        socket: PathBuf,
        wal: PathBuf,
        archiver: Archiver,
        wired: Arc<AtomicBool>,
        requests: Arc<Mutex<Vec<String>>>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let pg_wal = dir.path().join("pgdata/pg_wal");
            std::fs::create_dir_all(&pg_wal).unwrap();
            let wal = pg_wal.join(WAL);
            std::fs::write(&wal, segment_bytes(WAL, 1)).unwrap();
            let archiver = Archiver::new(
                Arc::new(LocalStore::new(dir.path().join("store"))),
                Layout::new("prefix", "pg"),
                ArchiverSettings::default(),
            );
            Fixture {
                socket: dir.path().join("run/walship.sock"),
                dir,
                wal,
                archiver,
                wired: Arc::default(),
                requests: Arc::default(),
            }
        }

        /// A client that waits for the daemon briefly, so silent daemons are quick.
        fn client(&self) -> Client {
            Client {
                socket: self.socket.clone(),
                push_wait: Duration::from_millis(300),
                fetch_wait: Duration::from_millis(300),
            }
        }

        /// A stand-in daemon on the socket: it reads each request and answers `answer`
        /// as it is, or, with `None`, holds the connection open and never answers.
        fn daemon(&self, answer: Option<&'static str>) {
            std::fs::create_dir_all(self.socket.parent().unwrap()).unwrap();
            let listener = UnixListener::bind(&self.socket).unwrap();
            let requests = self.requests.clone();
            tokio::spawn(async move {
                let mut unanswered = Vec::new();
                while let Ok((stream, _)) = listener.accept().await {
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    let mut line = String::new();
                    let _ = reader.read_line(&mut line).await;
                    requests.lock().unwrap().push(line);
                    match answer {
                        Some(answer) => {
                            let _ = write.write_all(answer.as_bytes()).await;
                        }
                        None => unanswered.push((reader, write)),
                    }
                }
            });
        }

        /// A socket left behind by a daemon killed with SIGKILL: nobody listens on it.
        fn stale_socket(&self) {
            std::fs::create_dir_all(self.socket.parent().unwrap()).unwrap();
            drop(UnixListener::bind(&self.socket).unwrap());
            assert!(self.socket.exists());
        }

        /// The archiver, as the binary wires it: only when awaited, which is noted.
        fn wiring(&self) -> impl Future<Output = Result<Archiver, Infallible>> + use<> {
            let (wired, archiver) = (self.wired.clone(), self.archiver.clone());
            async move {
                wired.store(true, Ordering::SeqCst);
                Ok(archiver)
            }
        }

        fn wired(&self) -> bool {
            self.wired.load(Ordering::SeqCst)
        }

        /// WAL objects in the archive.
        async fn stored(&self) -> usize {
            let wals = self.archiver.layout().wals_prefix();
            self.archiver.store().list(&wals).await.unwrap().len()
        }

        /// The segments wal-push noted as uploaded while the daemon did not answer.
        fn fallbacks(&self) -> String {
            std::fs::read_to_string(fallback_log(&self.socket)).unwrap_or_default()
        }

        async fn push(&self) -> PushResult {
            let timeout = Duration::from_secs(60);
            self.client()
                .push(&self.wal, timeout, self.wiring())
                .await
                .unwrap()
        }

        async fn fetch(&self, name: &str, dest: &Path) -> FetchResult {
            let retry = Duration::from_secs(10);
            self.client()
                .fetch(name, dest, retry, self.wiring())
                .await
                .unwrap()
        }
    }

    #[tokio::test]
    async fn a_daemon_that_archived_the_file_answers_wal_push_without_an_upload() {
        let f = Fixture::new();
        f.daemon(Some("OK abababab\n"));
        assert_eq!(f.push().await, PushResult::ArchivedByDaemon);
        assert!(!f.wired(), "the configuration was loaded for nothing");
        assert_eq!(f.stored().await, 0);
        assert_eq!(f.fallbacks(), "");
        assert_eq!(
            *f.requests.lock().unwrap(),
            [format!("PUSH {}\n", f.wal.display())]
        );
    }

    #[tokio::test]
    async fn a_daemon_that_failed_makes_wal_push_fail_without_uploading() {
        let f = Fixture::new();
        f.daemon(Some("ERR store down\n"));
        assert_eq!(
            f.push().await,
            PushResult::NotArchived {
                reason: "store down".to_owned()
            }
        );
        assert!(!f.wired());
        assert_eq!(f.stored().await, 0);
        assert_eq!(f.fallbacks(), "");
    }

    #[tokio::test]
    async fn a_file_the_daemon_does_not_archive_is_uploaded_directly_without_a_note() {
        let f = Fixture::new();
        f.daemon(Some("NOTMINE not in this daemon's pg_wal\n"));
        assert_eq!(
            f.push().await,
            PushResult::ArchivedDirectly(Direct::NotMine)
        );
        assert_eq!(f.stored().await, 1);
        assert_eq!(f.fallbacks(), "");
    }

    #[tokio::test]
    async fn a_silent_daemon_makes_wal_push_upload_directly_and_note_the_fallback() {
        let f = Fixture::new();
        f.daemon(None);
        assert_eq!(f.push().await, PushResult::ArchivedDirectly(Direct::Silent));
        assert_eq!(f.stored().await, 1);
        assert_eq!(f.fallbacks(), format!("{WAL}\n"));
        assert_eq!(f.requests.lock().unwrap().len(), 1);
    }

    /// A daemon answering nonsense (or an answer meant for wal-fetch) may be broken in
    /// any way: its word is not taken, and the file is uploaded as if it were silent.
    #[tokio::test]
    async fn a_garbled_answer_makes_wal_push_upload_directly_and_note_the_fallback() {
        for answer in ["HELLO\n", "NOTFOUND\n", ""] {
            let f = Fixture::new();
            f.daemon(Some(answer));
            assert_eq!(
                f.push().await,
                PushResult::ArchivedDirectly(Direct::Silent),
                "{answer:?}"
            );
            assert_eq!(f.stored().await, 1, "{answer:?}");
            assert_eq!(f.fallbacks(), format!("{WAL}\n"), "{answer:?}");
        }
    }

    #[tokio::test]
    async fn a_stale_socket_makes_wal_push_upload_directly_and_note_the_fallback() {
        let f = Fixture::new();
        f.stale_socket();
        assert_eq!(f.push().await, PushResult::ArchivedDirectly(Direct::Silent));
        assert_eq!(f.stored().await, 1);
        assert_eq!(f.fallbacks(), format!("{WAL}\n"));
    }

    #[tokio::test]
    async fn without_a_socket_wal_push_uploads_directly_and_notes_nothing() {
        let f = Fixture::new();
        assert_eq!(
            f.push().await,
            PushResult::ArchivedDirectly(Direct::NoDaemon)
        );
        assert_eq!(f.stored().await, 1);
        assert!(!fallback_log(&f.socket).exists());
    }

    /// The time wal-push spends waiting for a silent daemon is part of its budget: past
    /// it, the file is not archived (PostgreSQL retries) rather than late.
    #[tokio::test]
    async fn the_wait_for_a_silent_daemon_counts_against_the_wal_push_timeout() {
        let f = Fixture::new();
        f.daemon(None);
        let mut client = f.client();
        client.push_wait = Duration::from_secs(1);
        let result = client
            .push(&f.wal, Duration::from_secs(1), f.wiring())
            .await
            .unwrap();
        let PushResult::NotArchived { reason } = result else {
            panic!("{result:?}");
        };
        assert!(
            reason.contains("did not confirm the upload within --timeout-seconds 1"),
            "{reason}"
        );
        assert_eq!(f.fallbacks(), "");
    }

    #[tokio::test]
    async fn a_bad_configuration_matters_only_when_the_command_works_without_the_daemon() {
        let f = Fixture::new();
        let broken = || async { Err::<Archiver, _>("bad manifest") };
        let client = f.client();
        let timeout = Duration::from_secs(60);
        assert_eq!(
            client.push(&f.wal, timeout, broken()).await,
            Err("bad manifest")
        );
        f.daemon(Some("OK abababab\n"));
        assert_eq!(
            client.push(&f.wal, timeout, broken()).await,
            Ok(PushResult::ArchivedByDaemon)
        );
    }

    #[tokio::test]
    async fn a_daemon_that_restored_the_file_answers_wal_fetch_without_the_store() {
        let f = Fixture::new();
        f.daemon(Some(
            "OK prefix/pg/wals/0000000100000000/000000010000000000000006\n",
        ));
        let dest = f.dir.path().join("pgdata/pg_wal/RECOVERYXLOG");
        assert_eq!(f.fetch(WAL, &dest).await, FetchResult::RestoredByDaemon);
        assert!(!f.wired());
        assert_eq!(
            *f.requests.lock().unwrap(),
            [format!("FETCH {WAL} {}\n", dest.display())]
        );
    }

    #[tokio::test]
    async fn a_daemon_that_finds_no_such_file_answers_wal_fetch_not_found() {
        let f = Fixture::new();
        f.daemon(Some("NOTFOUND\n"));
        let dest = f.dir.path().join("RECOVERYXLOG");
        assert_eq!(f.fetch(WAL, &dest).await, FetchResult::NotFound);
        assert!(!f.wired());
    }

    #[tokio::test]
    async fn a_daemon_that_could_not_restore_makes_wal_fetch_read_the_store_itself() {
        for answer in [Some("ERR spool full\n"), Some("NOTMINE what\n"), None] {
            let f = Fixture::new();
            f.archiver.push(&f.wal).await.unwrap();
            f.daemon(answer);
            let dest = f.dir.path().join("RECOVERYXLOG");
            assert_eq!(
                f.fetch(WAL, &dest).await,
                FetchResult::RestoredDirectly,
                "{answer:?}"
            );
            assert_eq!(
                std::fs::read(&dest).unwrap(),
                std::fs::read(&f.wal).unwrap()
            );
        }
    }

    #[tokio::test]
    async fn without_a_daemon_a_missing_file_is_not_found_and_a_bad_name_is_fatal() {
        let f = Fixture::new();
        let dest = f.dir.path().join("RECOVERYXLOG");
        assert_eq!(
            f.fetch("000000010000000000000009", &dest).await,
            FetchResult::NotFound
        );
        let result = f.fetch("not-a-wal-file", &dest).await;
        assert!(matches!(result, FetchResult::Fatal { .. }), "{result:?}");
        assert!(!dest.exists());
    }

    /// End-to-end tests and operators' scripts read these lines: their words must not
    /// drift.
    #[tokio::test]
    async fn check_reports_in_the_words_scripts_read() {
        let f = Fixture::new();
        let store = format!("file://{}", f.dir.path().join("store").display());
        let timeout = Duration::from_secs(10);
        assert_eq!(
            check(&f.archiver, true, None, timeout).await,
            CheckResult {
                usable: true,
                report: Some(format!(
                    "ok: {store} reachable; the WAL archive under prefix/pg/wals/ is empty"
                )),
                problem: None,
            }
        );
        f.archiver.push(&f.wal).await.unwrap();
        assert_eq!(
            check(&f.archiver, false, None, timeout).await,
            CheckResult {
                usable: true,
                report: Some(format!(
                    "ok: {store} reachable; 1 WAL files already archived under \
                     prefix/pg/wals/, newest segment {WAL}"
                )),
                problem: None,
            }
        );
        assert_eq!(
            check(&f.archiver, true, None, timeout).await,
            CheckResult {
                usable: false,
                report: Some(format!(
                    "not empty: {store} reachable; 1 WAL files already archived under \
                     prefix/pg/wals/, newest segment {WAL}"
                )),
                problem: Some(
                    "expected an empty WAL archive: another cluster may be archiving here; \
                     check serverName and destinationPath"
                        .to_owned()
                ),
            }
        );
        assert_eq!(
            check(&f.archiver, true, Some(2), timeout).await,
            CheckResult {
                usable: true,
                report: Some(format!(
                    "ok: {store} reachable; the WAL archive under prefix/pg/wals/ is empty \
                     (timeline 2 and later)"
                )),
                problem: None,
            }
        );
    }
}
