//! The queue: which files PostgreSQL wants archived, which are uploading, which wait out
//! a backoff, and which the store has confirmed.
//!
//! Pure bookkeeping: no I/O, no tasks and no clock reads (callers pass `now`), so every
//! rule of dispatch order, backoff and acknowledgement is unit-tested here. The daemon
//! holds it under one lock and does the scanning, the uploading and the journaling.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::journal::{AckRecord, FileIdentity};
use crate::status::Ready;

/// The result of one upload as waiters see it: the content's SHA-256, or why it failed.
pub(crate) type UploadResult = Result<String, String>;

/// How long a file waits after its `attempts`-th failed upload.
pub(crate) type BackoffFn = fn(u32) -> Duration;

/// The wait before a file is due again when nothing is backed off.
const IDLE: Duration = Duration::from_secs(3600);

pub(crate) struct Queue {
    /// Confirmed by the store (and journaled), keyed by WAL file name.
    acked: HashMap<String, AckRecord>,
    /// Uploads running now; waiters subscribe to the channel.
    in_flight: HashMap<String, watch::Receiver<Option<UploadResult>>>,
    /// Files whose last upload failed.
    backoff: HashMap<String, Backoff>,
    /// `.ready` files from the last scan, in archive order, neither acked nor running.
    waiting: Vec<String>,
    backoff_delay: BackoffFn,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    attempts: u32,
    due: Instant,
}

/// The right to run one file's upload, handed out once per upload: whoever holds it
/// uploads and then hands it back through [`Queue::finish`] and [`Ticket::complete`].
#[must_use = "an upload that is never finished keeps its file in flight forever"]
pub(crate) struct Ticket {
    name: String,
    tx: watch::Sender<Option<UploadResult>>,
}

impl Ticket {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Tells every waiter how the upload ended. Called after [`Queue::finish`], outside
    /// the queue's lock.
    pub(crate) fn complete(self, result: UploadResult) {
        // No receiver left (the waiter gave up) is fine: the queue already knows.
        let _ = self.tx.send(Some(result));
    }
}

/// What a `wal-push` for a file finds.
pub(crate) enum Claim {
    /// The same file (by identity) is confirmed: answer at once.
    Acked { sha256: String },
    /// Its upload is running: wait for it.
    Running(watch::Receiver<Option<UploadResult>>),
    /// Nothing runs for it: start this upload now, ahead of the queue, and wait for it.
    Start(Ticket, watch::Receiver<Option<UploadResult>>),
}

/// What a scan of `archive_status` changed.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Refreshed {
    /// Acked files PostgreSQL has since marked done: their journal records can go.
    pub done: Vec<String>,
    /// `.ready` files not yet confirmed.
    pub backlog_files: i64,
    /// Their size in `pg_wal`.
    pub backlog_bytes: i64,
    /// The oldest of their `.ready` markers.
    pub oldest_ready: Option<SystemTime>,
}

impl Queue {
    pub(crate) fn new(acked: HashMap<String, AckRecord>, backoff_delay: BackoffFn) -> Queue {
        Queue {
            acked,
            in_flight: HashMap::new(),
            backoff: HashMap::new(),
            waiting: Vec::new(),
            backoff_delay,
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    #[cfg(test)]
    pub(crate) fn is_acked(&self, name: &str) -> bool {
        self.acked.contains_key(name)
    }

    /// Takes a fresh scan (`ready`, in archive order): forgets acks and backoffs of files
    /// no longer ready, and queues every ready file that is neither acked nor running.
    pub(crate) fn refresh(&mut self, ready: &[Ready]) -> Refreshed {
        let ready_names: HashSet<String> = ready.iter().map(|r| r.name.to_string()).collect();
        let mut done: Vec<String> = self
            .acked
            .keys()
            .filter(|n| !ready_names.contains(*n))
            .cloned()
            .collect();
        done.sort();
        for name in &done {
            self.acked.remove(name);
        }
        self.backoff.retain(|n, _| ready_names.contains(n));
        let mut refreshed = Refreshed {
            done,
            ..Refreshed::default()
        };
        self.waiting.clear();
        for r in ready {
            let name = r.name.to_string();
            if self.acked.contains_key(&name) {
                continue;
            }
            refreshed.backlog_files += 1;
            refreshed.backlog_bytes += i64::try_from(r.size).unwrap_or(i64::MAX);
            if let Some(since) = r.since {
                refreshed.oldest_ready =
                    Some(refreshed.oldest_ready.map_or(since, |o| o.min(since)));
            }
            if !self.in_flight.contains_key(&name) {
                self.waiting.push(name);
            }
        }
        refreshed
    }

    /// Hands out uploads, in queue order, while fewer than `max_parallel` run, skipping
    /// files still backed off; also returns how long until the first of those is due.
    pub(crate) fn start_due(
        &mut self,
        max_parallel: usize,
        now: Instant,
    ) -> (Vec<Ticket>, Duration) {
        let mut next_due = IDLE;
        let mut started = Vec::new();
        let mut i = 0;
        while self.in_flight.len() < max_parallel && i < self.waiting.len() {
            if let Some(b) = self.backoff.get(&self.waiting[i])
                && b.due > now
            {
                next_due = next_due.min(b.due - now);
                i += 1;
                continue;
            }
            let name = self.waiting.remove(i);
            let (ticket, _) = self.register(name);
            started.push(ticket);
        }
        (started, next_due)
    }

    /// A `wal-push` asks for `name`, whose file in `pg_wal` is `identity` now.
    pub(crate) fn claim(&mut self, name: &str, identity: &FileIdentity) -> Claim {
        if let Some(record) = self.acked.get(name) {
            if record.identity == *identity {
                return Claim::Acked {
                    sha256: record.sha256.clone(),
                };
            }
            // Same name, another file (recycled or rewritten): ship it again; the
            // create-only rule compares it with what is stored.
            self.acked.remove(name);
        }
        match self.in_flight.get(name) {
            Some(rx) => Claim::Running(rx.clone()),
            None => {
                self.waiting.retain(|n| n != name);
                let (ticket, rx) = self.register(name.to_owned());
                Claim::Start(ticket, rx)
            }
        }
    }

    fn register(&mut self, name: String) -> (Ticket, watch::Receiver<Option<UploadResult>>) {
        let (tx, rx) = watch::channel(None);
        self.in_flight.insert(name.clone(), rx.clone());
        (Ticket { name, tx }, rx)
    }

    /// An upload ended. `acked` is the confirmed and journaled record when it succeeded;
    /// on failure the file goes back to the front of the queue, due after its backoff.
    /// Returns the attempts so far when it failed.
    pub(crate) fn finish(
        &mut self,
        ticket: &Ticket,
        acked: Option<AckRecord>,
        now: Instant,
    ) -> Option<u32> {
        let name = ticket.name();
        self.in_flight.remove(name);
        match acked {
            Some(record) => {
                self.backoff.remove(name);
                self.acked.insert(name.to_owned(), record);
                None
            }
            None => {
                let attempts = self.backoff.get(name).map_or(0, |b| b.attempts) + 1;
                let due = now + (self.backoff_delay)(attempts);
                self.backoff
                    .insert(name.to_owned(), Backoff { attempts, due });
                if !self.waiting.iter().any(|n| n == name) {
                    self.waiting.insert(0, name.to_owned());
                }
                Some(attempts)
            }
        }
    }
}

/// The daemon's backoff: 0.5 s doubling per attempt up to 30 s, times a random factor in
/// [0.5, 1.5) so many files failing together do not retry in lockstep.
pub(crate) fn backoff_delay(attempts: u32) -> Duration {
    let base = 0.5 * 2f64.powi(attempts.saturating_sub(1).min(6) as i32);
    let jitter = (RandomState::new().hash_one(Instant::now()) % 1000) as f64 / 1000.0 + 0.5;
    Duration::from_secs_f64(base.min(30.0) * jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use walship_wal::WalName;

    fn ready(names: &[&str]) -> Vec<Ready> {
        names
            .iter()
            .map(|n| Ready {
                name: WalName::parse(n).unwrap(),
                size: 16,
                since: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(n.len() as u64)),
            })
            .collect()
    }

    fn identity(inode: u64) -> FileIdentity {
        FileIdentity {
            dev: 1,
            ino: inode,
            size: 16,
            mtime_ns: 7,
        }
    }

    fn record(inode: u64) -> AckRecord {
        AckRecord {
            identity: identity(inode),
            sha256: format!("sha-{inode}"),
        }
    }

    fn seconds(attempts: u32) -> Duration {
        Duration::from_secs(u64::from(attempts))
    }

    fn names(tickets: &[Ticket]) -> Vec<&str> {
        tickets.iter().map(Ticket::name).collect()
    }

    const A: &str = "000000010000000000000001";
    const B: &str = "000000010000000000000002";
    const C: &str = "000000010000000000000003";

    #[test]
    fn uploads_start_in_scan_order_and_never_more_than_max_parallel() {
        let mut q = Queue::new(HashMap::new(), seconds);
        q.refresh(&ready(&[A, B, C]));
        let now = Instant::now();
        let (first, _) = q.start_due(2, now);
        assert_eq!(names(&first), [A, B]);
        let (none, _) = q.start_due(2, now);
        assert!(none.is_empty(), "a third upload started beside two");
        q.finish(&first[0], Some(record(1)), now);
        let (next, _) = q.start_due(2, now);
        assert_eq!(names(&next), [C]);
    }

    #[test]
    fn a_failed_upload_waits_its_backoff_at_the_front_of_the_queue() {
        let mut q = Queue::new(HashMap::new(), seconds);
        q.refresh(&ready(&[A, B]));
        let now = Instant::now();
        let (started, _) = q.start_due(1, now);
        assert_eq!(q.finish(&started[0], None, now), Some(1));
        // A is backed off for 1 s: B goes first, and the wait names A's due time.
        let (started, next_due) = q.start_due(1, now);
        assert_eq!(names(&started), [B]);
        assert_eq!(next_due, Duration::from_secs(1));
        q.finish(&started[0], Some(record(2)), now);
        let (started, next_due) = q.start_due(1, now);
        assert!(started.is_empty());
        assert_eq!(next_due, Duration::from_secs(1));
        // Due: it starts again, and a second failure counts as the second attempt.
        let later = now + Duration::from_secs(1);
        let (started, _) = q.start_due(1, later);
        assert_eq!(names(&started), [A]);
        assert_eq!(q.finish(&started[0], None, later), Some(2));
        // A rescan keeps the backoff of a file still ready.
        q.refresh(&ready(&[A]));
        let (started, next_due) = q.start_due(1, later);
        assert!(started.is_empty());
        assert_eq!(next_due, Duration::from_secs(2));
    }

    #[test]
    fn a_rescan_forgets_acks_postgresql_marked_done_and_counts_only_the_unconfirmed() {
        let mut q = Queue::new(HashMap::from([(A.to_owned(), record(1))]), seconds);
        let refreshed = q.refresh(&ready(&[A, B, C]));
        assert_eq!(refreshed.done, Vec::<String>::new());
        assert_eq!((refreshed.backlog_files, refreshed.backlog_bytes), (2, 32));
        let (started, _) = q.start_due(8, Instant::now());
        assert_eq!(names(&started), [B, C], "an acked file was uploaded again");
        // PostgreSQL renamed A's .ready to .done: its ack (and journal record) can go.
        let refreshed = q.refresh(&ready(&[B, C]));
        assert_eq!(refreshed.done, [A]);
        assert!(!q.is_acked(A));
        // Running files count in the backlog but are not queued twice.
        assert_eq!(refreshed.backlog_files, 2);
        let (again, _) = q.start_due(8, Instant::now());
        assert!(again.is_empty(), "{:?} started twice", names(&again));
    }

    #[test]
    fn a_push_of_the_acked_file_is_answered_and_of_a_rewritten_one_is_shipped_again() {
        let mut q = Queue::new(HashMap::from([(A.to_owned(), record(1))]), seconds);
        match q.claim(A, &identity(1)) {
            Claim::Acked { sha256 } => assert_eq!(sha256, "sha-1"),
            _ => panic!("the acked file was not answered from the journal"),
        }
        match q.claim(A, &identity(2)) {
            Claim::Start(ticket, _) => assert_eq!(ticket.name(), A),
            _ => panic!("a rewritten file was not shipped again"),
        }
        assert!(!q.is_acked(A), "the stale ack was kept");
    }

    #[test]
    fn a_push_waits_for_the_running_upload_and_hears_how_it_ended() {
        let mut q = Queue::new(HashMap::new(), seconds);
        q.refresh(&ready(&[A, B]));
        let (started, _) = q.start_due(1, Instant::now());
        let Claim::Running(mut waiter) = q.claim(A, &identity(1)) else {
            panic!("a second upload of a running file was started");
        };
        // B is pushed ahead of the queue and is no longer waiting there.
        let Claim::Start(b, _) = q.claim(B, &identity(2)) else {
            panic!("B was not started on demand");
        };
        assert_eq!(q.in_flight(), 2);
        let (none, _) = q.start_due(8, Instant::now());
        assert!(none.is_empty(), "B was queued as well as started");
        let ticket = started.into_iter().next().unwrap();
        q.finish(&ticket, Some(record(1)), Instant::now());
        ticket.complete(Ok("sha-1".to_owned()));
        assert_eq!(
            *waiter.borrow_and_update(),
            Some(Ok("sha-1".to_owned())),
            "the waiter missed the result"
        );
        q.finish(&b, None, Instant::now());
        b.complete(Err("store down".to_owned()));
        assert_eq!(q.in_flight(), 0);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempts in 1..20 {
            let d = backoff_delay(attempts).as_secs_f64();
            let base = (0.5 * 2f64.powi((attempts - 1).min(6) as i32)).min(30.0);
            assert!(d >= base * 0.5 && d < base * 1.5, "{attempts}: {d}");
        }
    }
}
