//! The facts readiness is decided on.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What the last store probe said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreState {
    NotProbed,
    Reachable,
    Unreachable,
}

#[derive(Debug)]
struct State {
    config_loaded: bool,
    store: StoreState,
    /// When the current run of failed uploads began; `None` while uploads succeed.
    failing_since: Option<Instant>,
    /// What the daemon waits for before it can archive (PostgreSQL's first initdb).
    waiting_for: Option<String>,
}

/// Liveness and readiness of the daemon.
///
/// Liveness (`/healthz`) is only "the process answers". Readiness (`/readyz`) fails when
/// the configuration is not loaded, when the object store did not answer the last probe
/// (or was never probed, and no upload has succeeded since start), or when uploads have
/// been failing without a single success for at least `max_failing`.
///
/// One small mutex guards the state: updates come once per upload or probe, so it is
/// never contended, and readers see the three facts consistently.
#[derive(Debug)]
pub struct Health {
    max_failing: Duration,
    state: Mutex<State>,
}

impl Health {
    /// Readiness turns false once uploads have failed continuously for `max_failing`.
    pub fn new(max_failing: Duration) -> Health {
        Health {
            max_failing,
            state: Mutex::new(State {
                config_loaded: false,
                store: StoreState::NotProbed,
                failing_since: None,
                waiting_for: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain data that is always valid, so a panic elsewhere while the
        // lock was held leaves nothing to repair.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a valid configuration is loaded.
    pub fn set_config_loaded(&self, ok: bool) {
        self.state().config_loaded = ok;
    }

    /// What the daemon waits for before it can archive, a reason not to be ready;
    /// `None` once it has it.
    pub fn set_waiting_for(&self, what: Option<String>) {
        self.state().waiting_for = what;
    }

    /// An upload succeeded: the failing clock stops, and the store is evidently reachable.
    pub fn record_upload_success(&self) {
        let mut state = self.state();
        state.failing_since = None;
        state.store = StoreState::Reachable;
    }

    /// An upload failed: the failing clock starts unless it is already running.
    pub fn record_upload_failure(&self) {
        self.record_upload_failure_at(Instant::now());
    }

    fn record_upload_failure_at(&self, now: Instant) {
        self.state().failing_since.get_or_insert(now);
    }

    /// The outcome of a store probe (at start-up or periodic).
    pub fn record_store_probe(&self, ok: bool) {
        self.state().store = if ok {
            StoreState::Reachable
        } else {
            StoreState::Unreachable
        };
    }

    /// `Ok` when ready; otherwise every reason the daemon is not, joined with "; ".
    pub fn readiness(&self) -> Result<(), String> {
        self.readiness_at(Instant::now())
    }

    fn readiness_at(&self, now: Instant) -> Result<(), String> {
        let state = self.state();
        let mut reasons = Vec::new();
        if !state.config_loaded {
            reasons.push("configuration not loaded".to_owned());
        }
        if let Some(what) = &state.waiting_for {
            reasons.push(format!("waiting for {what}"));
        }
        match state.store {
            StoreState::Reachable => {}
            StoreState::NotProbed => reasons.push("object store not probed yet".to_owned()),
            StoreState::Unreachable => {
                reasons.push("object store unreachable at the last probe".to_owned())
            }
        }
        if let Some(since) = state.failing_since {
            let failing = now.saturating_duration_since(since);
            // `>=` rather than `>` so that a zero limit means "any failure", exactly.
            if failing >= self.max_failing {
                reasons.push(format!(
                    "uploads failing for {}s (limit {}s)",
                    failing.as_secs(),
                    self.max_failing.as_secs()
                ));
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(max_failing: Duration) -> Health {
        let h = Health::new(max_failing);
        h.set_config_loaded(true);
        h.record_store_probe(true);
        h
    }

    #[test]
    fn not_ready_until_config_and_store_are_known() {
        let h = Health::new(Duration::from_secs(60));
        let err = h.readiness().unwrap_err();
        assert!(err.contains("configuration not loaded"), "{err}");
        assert!(err.contains("not probed"), "{err}");

        h.set_config_loaded(true);
        let err = h.readiness().unwrap_err();
        assert!(!err.contains("configuration"), "{err}");
        assert!(err.contains("not probed"), "{err}");

        h.record_store_probe(true);
        assert_eq!(h.readiness(), Ok(()));
    }

    #[test]
    fn config_unload_and_failed_probe_make_it_unready() {
        let h = ready(Duration::from_secs(60));
        h.record_store_probe(false);
        let err = h.readiness().unwrap_err();
        assert!(err.contains("unreachable"), "{err}");
        h.record_store_probe(true);
        assert_eq!(h.readiness(), Ok(()));

        h.set_config_loaded(false);
        assert!(h.readiness().unwrap_err().contains("configuration"));
    }

    #[test]
    fn an_upload_success_proves_the_store_reachable() {
        let h = Health::new(Duration::from_secs(60));
        h.set_config_loaded(true);
        h.record_store_probe(false);
        h.record_upload_success();
        assert_eq!(h.readiness(), Ok(()));
    }

    #[test]
    fn zero_limit_fails_on_the_first_failure_and_recovers_on_success() {
        let h = ready(Duration::ZERO);
        h.record_upload_failure();
        let err = h.readiness().unwrap_err();
        assert!(err.contains("uploads failing"), "{err}");
        h.record_upload_success();
        assert_eq!(h.readiness(), Ok(()));
    }

    #[test]
    fn failing_clock_starts_at_the_first_failure_of_a_run() {
        let limit = Duration::from_secs(10);
        let h = ready(limit);
        let t0 = Instant::now();
        h.record_upload_failure_at(t0);
        // A later failure does not restart the clock.
        h.record_upload_failure_at(t0 + Duration::from_secs(8));
        assert_eq!(h.readiness_at(t0 + Duration::from_secs(9)), Ok(()));
        let err = h.readiness_at(t0 + Duration::from_secs(12)).unwrap_err();
        assert_eq!(err, "uploads failing for 12s (limit 10s)");

        // A success ends the run; the next failure starts a new one.
        h.record_upload_success();
        let t1 = t0 + Duration::from_secs(20);
        h.record_upload_failure_at(t1);
        assert_eq!(h.readiness_at(t1 + Duration::from_secs(5)), Ok(()));
        assert!(h.readiness_at(t1 + limit).is_err());
    }

    #[test]
    fn reasons_are_all_reported() {
        let h = Health::new(Duration::ZERO);
        h.record_store_probe(false);
        h.record_upload_failure();
        let err = h.readiness().unwrap_err();
        assert_eq!(err.matches("; ").count(), 2, "{err}");
    }
}
