//! The one retry policy: how often and how long a store request is tried again.
//!
//! Every store sends each request through [`RetryPolicy::run`], and no SDK retries
//! underneath it (the S3 and Azure SDKs are built with their retries off), so a request
//! is tried at most [`RetryPolicy::max_attempts`] times and nothing retries inside
//! something else that retries. The policy is built once by the binary and handed to
//! the store it builds; callers above the store (the daemon's queue, PostgreSQL calling
//! archive_command again) decide about the operation as a whole.
//!
//! Only transient kinds ([`ErrorKind::is_transient`]) are retried. A wait the store
//! asks for (`Retry-After`) replaces the backoff. No attempt starts that could not run
//! to its deadline within the budget: by default the budget is one silent attempt and a
//! little more ([`crate::deadline::for_operation`]), so fast failures (a 503, a reset)
//! are retried, and a store that does not answer holds its caller for tens of seconds,
//! not for attempts × deadline.

use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::{ErrorKind, StoreError, deadline};

type Observer = Arc<dyn Fn(ErrorKind) + Send + Sync>;

/// Told of every retry in the process. One, as the retry layer is one: the daemon
/// counts retries by kind in its metrics, without each of the many places that build a
/// policy (one per store and command) having to carry it.
static OBSERVER: RwLock<Option<Observer>> = RwLock::new(None);

/// From now on, `observer` is told the kind of failure of every request a
/// [`RetryPolicy`] tries again, in any store of this process; it replaces the one
/// before. It runs on the retrying task: it must be quick (a counter).
pub fn observe_retries(observer: impl Fn(ErrorKind) + Send + Sync + 'static) {
    *OBSERVER.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(observer));
}

fn retrying(kind: ErrorKind) {
    let observer = OBSERVER
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if let Some(observer) = observer {
        observer(kind);
    }
}

/// How a store retries one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The wait before the second attempt; it doubles for each later one.
    pub first_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// How long after the first attempt started a new one may start; the caller bounds
    /// the attempt in flight (wal-fetch's `--retry-seconds`). `None`: one attempt's
    /// deadline and a little more ([`deadline::for_operation`]), and only attempts that
    /// can run to their own deadline within it.
    pub budget: Option<Duration>,
}

impl Default for RetryPolicy {
    /// Four attempts, 200 ms apart and doubling, within one attempt's deadline.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            budget: None,
        }
    }
}

impl RetryPolicy {
    /// As many attempts as fit in `budget`, 0.5 s apart and doubling up to 10 s: for a
    /// caller with a total budget of its own, such as restore_command, for which a
    /// store that is down for a while must not end recovery.
    pub fn within(budget: Duration) -> Self {
        RetryPolicy {
            max_attempts: u32::MAX,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            budget: Some(budget),
        }
    }

    /// The wait before attempt `attempt + 1`, after `attempt` attempts failed.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(16);
        self.first_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the policy is spent. Each
    /// attempt bounds itself (`per_attempt` is its deadline, which sizes the default
    /// budget). `what` names the request in the debug log of each retry.
    pub async fn run<T, F, Fut>(
        &self,
        what: &str,
        per_attempt: Duration,
        mut attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let started = Instant::now();
        let mut tried = 1;
        loop {
            let err = match attempt().await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let wait = err.retry_after().unwrap_or_else(|| self.backoff(tried));
            let next_start = started.elapsed() + wait;
            let fits = match self.budget {
                // Another attempt only if it can run to its own deadline within the
                // budget: a store that lets one attempt time out gets no second one.
                None => next_start + per_attempt <= deadline::for_operation(per_attempt),
                Some(total) => next_start < total,
            };
            if !err.is_transient() || tried >= self.max_attempts || !fits {
                return Err(err);
            }
            tracing::debug!(what, attempt = tried, kind = %err.kind(), ?wait, error = %err, "retrying");
            retrying(err.kind());
            tokio::time::sleep(wait).await;
            tried += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::ErrorKind;

    fn failing(kind: ErrorKind) -> StoreError {
        StoreError::new(kind, "test://", "k: failed")
    }

    #[test]
    fn the_backoff_doubles_and_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(200));
        assert_eq!(p.backoff(2), Duration::from_millis(400));
        assert_eq!(p.backoff(3), Duration::from_millis(800));
        assert_eq!(p.backoff(40), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_is_retried_up_to_the_attempt_limit() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = RetryPolicy::default()
            .run("put k", Duration::from_secs(30), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(failing(ErrorKind::Server))
            })
            .await;
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Server);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lasting_failure_is_not_retried() {
        for kind in [
            ErrorKind::Denied,
            ErrorKind::AlreadyExists,
            ErrorKind::NotFound,
            ErrorKind::Rejected,
            ErrorKind::Source,
        ] {
            let calls = AtomicU32::new(0);
            let result: Result<(), _> = RetryPolicy::default()
                .run("put k", Duration::from_secs(30), || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(failing(kind))
                })
                .await;
            assert_eq!(result.unwrap_err().kind(), kind);
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{kind}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn success_after_a_throttle_returns_the_value() {
        let calls = AtomicU32::new(0);
        let result = RetryPolicy::default()
            .run("get k", Duration::from_secs(30), || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(failing(ErrorKind::Throttled)),
                    _ => Ok(7),
                }
            })
            .await;
        assert_eq!(result.unwrap(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_attempt_leaves_no_room_for_another_by_default() {
        // The attempt uses up its whole deadline; the default budget is that deadline
        // and five seconds, less than the deadline again.
        let per_attempt = Duration::from_secs(25);
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = RetryPolicy::default()
            .run("put k", per_attempt, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(per_attempt).await;
                Err(failing(ErrorKind::TimedOut))
            })
            .await;
        assert_eq!(result.unwrap_err().kind(), ErrorKind::TimedOut);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_replaces_the_backoff() {
        let started = Instant::now();
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            budget: Some(Duration::from_secs(60)),
            ..RetryPolicy::default()
        };
        let result = policy
            .run("put k", Duration::from_secs(30), || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(failing(ErrorKind::Throttled)
                        .with_retry_after(Some(Duration::from_secs(3)))),
                    _ => Ok(()),
                }
            })
            .await;
        assert!(result.is_ok());
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_total_budget_allows_many_attempts_and_stops_at_its_end() {
        let started = Instant::now();
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = RetryPolicy::within(Duration::from_secs(30))
            .run("get k", Duration::from_secs(25), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(failing(ErrorKind::Connection))
            })
            .await;
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Connection);
        // 0.5, 1, 2, 4, 8 and 10 s apart: the attempt at 25.5 s is the last to start.
        assert_eq!(calls.load(Ordering::SeqCst), 7);
        assert_eq!(started.elapsed(), Duration::from_millis(25_500));
    }

    #[tokio::test(start_paused = true)]
    async fn the_observer_hears_the_kind_of_each_retry_and_not_of_the_last_failure() {
        // Other tests run beside this one in the process: count only this test's kind.
        let heard = Arc::new(AtomicU32::new(0));
        let counter = heard.clone();
        observe_retries(move |kind| {
            if kind == ErrorKind::Response {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        let result: Result<(), _> = RetryPolicy::default()
            .run("get k", Duration::from_secs(30), || async {
                Err(failing(ErrorKind::Response))
            })
            .await;
        assert!(result.is_err());
        // Four attempts: three retries; the fourth failure is the caller's to count.
        assert_eq!(heard.load(Ordering::SeqCst), 3);
    }
}
