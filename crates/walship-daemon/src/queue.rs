//! The queue: which files PostgreSQL wants archived, which are uploading, which wait out
//! a backoff, and which the store has confirmed.
//!
//! Pure bookkeeping: no I/O, no tasks and no clock reads (callers pass `now`), so every
//! rule of dispatch order, backoff and acknowledgement is unit-tested here. The daemon
//! holds it under one lock and does the scanning, the uploading and the journaling.
//!
//! An upload running longer than `stalled_after` no longer holds one of the
//! `max_parallel` slots: a store that stops answering some requests (a stalled
//! connection, an overloaded partition) would otherwise hold every slot until each
//! request's deadline, and archiving would stop for that long although the store takes
//! other requests. The stalled upload goes on to its own deadline, and the uploads in
//! flight stay bounded: twice `max_parallel` in all.

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
    /// Uploads running now, with when they started; waiters subscribe to the channel.
    in_flight: HashMap<String, Running>,
    /// Files whose last upload failed.
    backoff: HashMap<String, Backoff>,
    /// `.ready` files from the last scan, in archive order, neither acked nor running.
    waiting: Vec<String>,
    backoff_delay: BackoffFn,
    /// How long an upload holds its slot (see the module's docs).
    stalled_after: Duration,
}

struct Running {
    rx: watch::Receiver<Option<UploadResult>>,
    started: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    attempts: u32,
    due: Instant,
    /// Until when the store asked not to be asked again (`Retry-After`): a `wal-push`
    /// starting the file ahead of the queue waits for it too.
    asked_until: Option<Instant>,
}

/// The right to run one file's upload, handed out once per upload: whoever holds it
/// uploads and then hands it back through [`Queue::finish`] and [`Ticket::complete`].
#[must_use = "an upload that is never finished keeps its file in flight forever"]
pub(crate) struct Ticket {
    name: String,
    tx: watch::Sender<Option<UploadResult>>,
    not_before: Option<Instant>,
}

impl Ticket {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// When the upload may start, if not at once: the end of a wait the store asked
    /// for, which a `wal-push` does not cut short.
    pub(crate) fn not_before(&self) -> Option<Instant> {
        self.not_before
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
    pub(crate) fn new(
        acked: HashMap<String, AckRecord>,
        backoff_delay: BackoffFn,
        stalled_after: Duration,
    ) -> Queue {
        Queue {
            acked,
            in_flight: HashMap::new(),
            backoff: HashMap::new(),
            waiting: Vec::new(),
            backoff_delay,
            stalled_after,
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

    /// Hands out uploads, in queue order, while fewer than `max_parallel` run that have
    /// not stalled (and fewer than twice that in all), skipping files still backed off;
    /// also returns how long until something changes that: a backed-off file due, or a
    /// running upload counted as stalled.
    pub(crate) fn start_due(
        &mut self,
        max_parallel: usize,
        now: Instant,
    ) -> (Vec<Ticket>, Duration) {
        let mut next_due = IDLE;
        let mut holding = 0;
        for running in self.in_flight.values() {
            let stalls_at = running.started + self.stalled_after;
            if stalls_at > now {
                holding += 1;
                next_due = next_due.min(stalls_at - now);
            }
        }
        let mut started = Vec::new();
        let mut i = 0;
        while holding < max_parallel
            && self.in_flight.len() < 2 * max_parallel
            && i < self.waiting.len()
        {
            if let Some(b) = self.backoff.get(&self.waiting[i])
                && b.due > now
            {
                next_due = next_due.min(b.due - now);
                i += 1;
                continue;
            }
            let name = self.waiting.remove(i);
            let (ticket, _) = self.register(name, now);
            started.push(ticket);
            holding += 1;
            next_due = next_due.min(self.stalled_after);
        }
        (started, next_due)
    }

    /// A `wal-push` asks for `name`, whose file in `pg_wal` is `identity` now.
    pub(crate) fn claim(&mut self, name: &str, identity: &FileIdentity, now: Instant) -> Claim {
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
            Some(running) => Claim::Running(running.rx.clone()),
            None => {
                self.waiting.retain(|n| n != name);
                let asked_until = self
                    .backoff
                    .get(name)
                    .and_then(|b| b.asked_until)
                    .filter(|until| *until > now);
                let (mut ticket, rx) = self.register(name.to_owned(), now);
                ticket.not_before = asked_until;
                Claim::Start(ticket, rx)
            }
        }
    }

    fn register(
        &mut self,
        name: String,
        now: Instant,
    ) -> (Ticket, watch::Receiver<Option<UploadResult>>) {
        let (tx, rx) = watch::channel(None);
        self.in_flight.insert(
            name.clone(),
            Running {
                rx: rx.clone(),
                started: now,
            },
        );
        (
            Ticket {
                name,
                tx,
                not_before: None,
            },
            rx,
        )
    }

    /// An upload ended: `Ok` with the confirmed and journaled record, or `Err` with the
    /// wait the store asked for, if it did. On failure the file goes back to the front
    /// of the queue, due after its backoff or that wait, whichever is longer. Returns
    /// the attempts so far when it failed.
    pub(crate) fn finish(
        &mut self,
        ticket: &Ticket,
        outcome: Result<AckRecord, Option<Duration>>,
        now: Instant,
    ) -> Option<u32> {
        let name = ticket.name();
        self.in_flight.remove(name);
        match outcome {
            Ok(record) => {
                self.backoff.remove(name);
                self.acked.insert(name.to_owned(), record);
                None
            }
            Err(asked) => {
                let attempts = self.backoff.get(name).map_or(0, |b| b.attempts) + 1;
                let asked_until = asked.map(|wait| now + wait);
                let due = (now + (self.backoff_delay)(attempts)).max(asked_until.unwrap_or(now));
                self.backoff.insert(
                    name.to_owned(),
                    Backoff {
                        attempts,
                        due,
                        asked_until,
                    },
                );
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

    impl Claim {
        fn start(self) -> Ticket {
            match self {
                Claim::Start(ticket, _) => ticket,
                _ => panic!("the claim did not start an upload"),
            }
        }
    }

    fn names(tickets: &[Ticket]) -> Vec<&str> {
        tickets.iter().map(Ticket::name).collect()
    }

    const STALL: Duration = Duration::from_secs(60);

    const A: &str = "000000010000000000000001";
    const B: &str = "000000010000000000000002";
    const C: &str = "000000010000000000000003";

    #[test]
    fn uploads_start_in_scan_order_and_never_more_than_max_parallel() {
        let mut q = Queue::new(HashMap::new(), seconds, STALL);
        q.refresh(&ready(&[A, B, C]));
        let now = Instant::now();
        let (first, _) = q.start_due(2, now);
        assert_eq!(names(&first), [A, B]);
        let (none, _) = q.start_due(2, now);
        assert!(none.is_empty(), "a third upload started beside two");
        q.finish(&first[0], Ok(record(1)), now);
        let (next, _) = q.start_due(2, now);
        assert_eq!(names(&next), [C]);
    }

    #[test]
    fn a_failed_upload_waits_its_backoff_at_the_front_of_the_queue() {
        let mut q = Queue::new(HashMap::new(), seconds, STALL);
        q.refresh(&ready(&[A, B]));
        let now = Instant::now();
        let (started, _) = q.start_due(1, now);
        assert_eq!(q.finish(&started[0], Err(None), now), Some(1));
        // A is backed off for 1 s: B goes first, and the wait names A's due time.
        let (started, next_due) = q.start_due(1, now);
        assert_eq!(names(&started), [B]);
        assert_eq!(next_due, Duration::from_secs(1));
        q.finish(&started[0], Ok(record(2)), now);
        let (started, next_due) = q.start_due(1, now);
        assert!(started.is_empty());
        assert_eq!(next_due, Duration::from_secs(1));
        // Due: it starts again, and a second failure counts as the second attempt.
        let later = now + Duration::from_secs(1);
        let (started, _) = q.start_due(1, later);
        assert_eq!(names(&started), [A]);
        assert_eq!(q.finish(&started[0], Err(None), later), Some(2));
        // A rescan keeps the backoff of a file still ready.
        q.refresh(&ready(&[A]));
        let (started, next_due) = q.start_due(1, later);
        assert!(started.is_empty());
        assert_eq!(next_due, Duration::from_secs(2));
    }

    #[test]
    fn a_wait_the_store_asked_for_is_kept_when_longer_than_the_backoff() {
        let mut q = Queue::new(HashMap::new(), seconds, STALL);
        q.refresh(&ready(&[A]));
        let now = Instant::now();
        let (started, _) = q.start_due(1, now);
        q.finish(&started[0], Err(Some(Duration::from_secs(5))), now);
        let (none, next_due) = q.start_due(1, now + Duration::from_secs(1));
        assert!(none.is_empty(), "retried before the store's Retry-After");
        assert_eq!(next_due, Duration::from_secs(4));
        let (again, _) = q.start_due(1, now + Duration::from_secs(5));
        assert_eq!(names(&again), [A]);
        // A shorter wait than the backoff (2 s after a second failure) changes nothing.
        q.finish(&again[0], Err(Some(Duration::from_millis(10))), now);
        let (_, next_due) = q.start_due(1, now);
        assert_eq!(next_due, Duration::from_secs(2));
        // A wal-push starts the file ahead of its backoff, but not before the wait the
        // store asked for.
        let pushed = q.claim(A, &identity(1), now).start();
        q.finish(&pushed, Err(Some(Duration::from_secs(5))), now);
        let pushed = q
            .claim(A, &identity(1), now + Duration::from_secs(1))
            .start();
        assert_eq!(pushed.not_before(), Some(now + Duration::from_secs(5)));
        q.finish(&pushed, Err(None), now + Duration::from_secs(6));
        let pushed = q
            .claim(A, &identity(1), now + Duration::from_secs(6))
            .start();
        assert_eq!(
            pushed.not_before(),
            None,
            "the backoff alone holds no push back"
        );
    }

    #[test]
    fn a_rescan_forgets_acks_postgresql_marked_done_and_counts_only_the_unconfirmed() {
        let mut q = Queue::new(HashMap::from([(A.to_owned(), record(1))]), seconds, STALL);
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
        let mut q = Queue::new(HashMap::from([(A.to_owned(), record(1))]), seconds, STALL);
        match q.claim(A, &identity(1), Instant::now()) {
            Claim::Acked { sha256 } => assert_eq!(sha256, "sha-1"),
            _ => panic!("the acked file was not answered from the journal"),
        }
        match q.claim(A, &identity(2), Instant::now()) {
            Claim::Start(ticket, _) => assert_eq!(ticket.name(), A),
            _ => panic!("a rewritten file was not shipped again"),
        }
        assert!(!q.is_acked(A), "the stale ack was kept");
    }

    #[test]
    fn a_push_waits_for_the_running_upload_and_hears_how_it_ended() {
        let mut q = Queue::new(HashMap::new(), seconds, STALL);
        q.refresh(&ready(&[A, B]));
        let (started, _) = q.start_due(1, Instant::now());
        let Claim::Running(mut waiter) = q.claim(A, &identity(1), Instant::now()) else {
            panic!("a second upload of a running file was started");
        };
        // B is pushed ahead of the queue and is no longer waiting there.
        let Claim::Start(b, _) = q.claim(B, &identity(2), Instant::now()) else {
            panic!("B was not started on demand");
        };
        assert_eq!(q.in_flight(), 2);
        let (none, _) = q.start_due(8, Instant::now());
        assert!(none.is_empty(), "B was queued as well as started");
        let ticket = started.into_iter().next().unwrap();
        q.finish(&ticket, Ok(record(1)), Instant::now());
        ticket.complete(Ok("sha-1".to_owned()));
        assert_eq!(
            *waiter.borrow_and_update(),
            Some(Ok("sha-1".to_owned())),
            "the waiter missed the result"
        );
        q.finish(&b, Err(None), Instant::now());
        b.complete(Err("store down".to_owned()));
        assert_eq!(q.in_flight(), 0);
    }

    #[test]
    fn a_stalled_upload_gives_its_slot_up_and_at_most_twice_max_parallel_run() {
        const D: &str = "000000010000000000000004";
        const E: &str = "000000010000000000000005";
        let mut q = Queue::new(HashMap::new(), seconds, Duration::from_secs(10));
        q.refresh(&ready(&[A, B, C, D, E]));
        let now = Instant::now();
        let (first, next_due) = q.start_due(2, now);
        assert_eq!(names(&first), [A, B]);
        assert_eq!(
            next_due,
            Duration::from_secs(10),
            "no wake-up when they stall"
        );
        // Still within their time: they hold both slots.
        let (none, next_due) = q.start_due(2, now + Duration::from_secs(9));
        assert!(none.is_empty(), "{:?} started early", names(&none));
        assert_eq!(next_due, Duration::from_secs(1));
        // Both stalled: two more start beside them, and no more than that.
        let later = now + Duration::from_secs(10);
        let (more, _) = q.start_due(2, later);
        assert_eq!(names(&more), [C, D]);
        assert_eq!(q.in_flight(), 4);
        let (none, _) = q.start_due(2, later + Duration::from_secs(60));
        assert!(
            none.is_empty(),
            "{} uploads in flight",
            q.in_flight() + none.len()
        );
        // A stalled upload that ends frees room for the next file.
        q.finish(&first[0], Ok(record(1)), later);
        let (next, _) = q.start_due(2, later + Duration::from_secs(60));
        assert_eq!(names(&next), [E]);
        // A push started on demand holds a slot from the moment it is claimed.
        let mut q = Queue::new(HashMap::new(), seconds, Duration::from_secs(10));
        q.refresh(&ready(&[A, B]));
        let Claim::Start(_a, _) = q.claim(A, &identity(1), now) else {
            panic!("A was not started on demand");
        };
        let (none, _) = q.start_due(1, now + Duration::from_secs(5));
        assert!(none.is_empty(), "B started beside a push still in its time");
        let (b, _) = q.start_due(1, now + Duration::from_secs(10));
        assert_eq!(names(&b), [B]);
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
