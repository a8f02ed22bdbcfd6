//! The metric families and their typed handles.

use std::marker::PhantomData;
use std::sync::{Mutex, PoisonError};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Upload latency buckets in seconds: 5 ms (a local store) to 60 s (a large segment over
/// a slow link, with retries).
const UPLOAD_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// `archive_command` acknowledgement latency in seconds: 0.5 ms (the daemon already
/// archived the segment) to 30 s (the caller waited for a slow upload).
const ACK_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

mod sealed {
    pub trait Sealed {}
}

/// A closed set of label values. Only this crate defines them, so no caller can slip a
/// free-form string (an error message with a URL in it, say) into a label.
pub trait Label: sealed::Sealed + Copy + 'static {
    /// The label's name.
    const NAME: &'static str;
    /// Every value, so each series exists (at zero) from the first scrape on: a rate over
    /// a series that appears only at its first increment misses that increment.
    const ALL: &'static [Self];
    /// The label value as exported.
    fn as_str(self) -> &'static str;
}

macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident, $label:literal, { $($(#[$vdoc:meta])* $variant:ident => $value:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl sealed::Sealed for $name {}

        impl Label for $name {
            const NAME: &'static str = $label;
            const ALL: &'static [Self] = &[$(Self::$variant),+];
            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $value),+
                }
            }
        }
    };
}

label_enum!(
    /// Why archiving a segment failed (`walship_archive_failures_total{reason}`).
    FailureReason, "reason", {
        /// The store could not be reached (DNS, connection, timeouts after retries).
        StoreUnreachable => "store_unreachable",
        /// The store refused the credentials or the operation.
        AccessDenied => "access_denied",
        /// An object with different content already exists under the key.
        Conflict => "conflict",
        /// The local file is not a valid segment (wrong size, bad page header).
        InvalidFile => "invalid_file",
        /// Anything else.
        Other => "other",
    }
);

label_enum!(
    /// Why a store request was retried (`walship_retries_total{reason}`).
    RetryReason, "reason", {
        /// The request timed out.
        Timeout => "timeout",
        /// The store asked us to slow down (HTTP 429, S3 `SlowDown`).
        Throttled => "throttled",
        /// The store answered with a 5xx.
        ServerError => "server_error",
        /// The connection failed or broke.
        Connection => "connection",
        /// Anything else.
        Other => "other",
    }
);

label_enum!(
    /// The outcome of a configuration reload (`walship_config_reloads_total{result}`).
    ReloadResult, "result", {
        /// The new configuration is in use.
        Applied => "applied",
        /// The new configuration was invalid; the old one stays in use.
        Rejected => "rejected",
    }
);

label_enum!(
    /// The outcome of one round of the retention loop (`walship_retention_runs_total{result}`).
    RetentionResult, "result", {
        /// The policy was applied (whether or not anything was obsolete).
        Applied => "applied",
        /// Nothing to apply: no retention policy, or this server is a standby (only the
        /// primary deletes). The catalog was still read for the backup gauges.
        Skipped => "skipped",
        /// The catalog could not be read whole, or a deletion failed; the next round
        /// finishes it.
        Failed => "failed",
    }
);

/// A counter whose only label takes the values of `L`.
#[derive(Debug, Clone)]
pub struct LabeledCounter<L: Label> {
    inner: IntCounterVec,
    _label: PhantomData<L>,
}

impl<L: Label> LabeledCounter<L> {
    fn register(registry: &Registry, name: &str, help: &str) -> Self {
        let inner = IntCounterVec::new(Opts::new(name, help), &[L::NAME])
            .expect("metric options are valid");
        register(registry, inner.clone());
        for value in L::ALL {
            inner.with_label_values(&[value.as_str()]);
        }
        LabeledCounter {
            inner,
            _label: PhantomData,
        }
    }

    /// Adds one to the series for `label`.
    pub fn inc(&self, label: L) {
        self.inner.with_label_values(&[label.as_str()]).inc();
    }

    /// Adds `n` to the series for `label`.
    pub fn inc_by(&self, label: L, n: u64) {
        self.inner.with_label_values(&[label.as_str()]).inc_by(n);
    }

    /// The current value of the series for `label`.
    pub fn get(&self, label: L) -> u64 {
        self.inner.with_label_values(&[label.as_str()]).get()
    }
}

fn register<C: prometheus::core::Collector + 'static>(registry: &Registry, collector: C) {
    // Registration fails only for duplicate or inconsistent names, which is a bug here.
    registry
        .register(Box::new(collector))
        .expect("metric names are unique");
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).expect("metric options are valid");
    register(registry, metric.clone());
    metric
}

fn int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).expect("metric options are valid");
    register(registry, metric.clone());
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    let metric = Gauge::new(name, help).expect("metric options are valid");
    register(registry, metric.clone());
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("metric options are valid");
    register(registry, metric.clone());
    metric
}

/// Whether a [`Family`]'s values only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One metric's values, from [`Metrics::snapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    /// The label names; each sample gives their values in this order.
    pub label_names: Vec<String>,
    pub samples: Vec<(Vec<String>, f64)>,
}

/// Every metric walship exports, registered in a registry of its own.
///
/// Handles are cheap to clone (they share their value), but the usual way to share them
/// is an `Arc<Metrics>` handed to each component.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Segments (and history files) archived.
    pub segments_archived_total: IntCounter,
    /// Raw bytes of archived files, before compression.
    pub archived_bytes_total: IntCounter,
    /// Bytes sent to the store, after compression.
    pub uploaded_bytes_total: IntCounter,
    /// Files whose archiving failed, by reason.
    pub archive_failures_total: LabeledCounter<FailureReason>,
    /// Time spent uploading one file, retries included.
    pub upload_duration_seconds: Histogram,
    /// Files PostgreSQL marked `.ready` that are not archived yet.
    pub ready_backlog_files: IntGauge,
    /// Raw bytes of those files.
    pub ready_backlog_bytes: IntGauge,
    /// Age of the oldest `.ready` file; 0 when the backlog is empty.
    pub oldest_ready_age_seconds: Gauge,
    /// Unix time of the last successful archive. Set through
    /// [`Metrics::set_last_archived`] so it stays consistent with the info metric.
    pub last_archived_timestamp_seconds: Gauge,
    /// Labelled with the last archived segment only; see [`Metrics::set_last_archived`].
    last_archived_segment_info: IntGaugeVec,
    last_archived_segment: Mutex<Option<String>>,
    /// Store requests retried, by reason.
    pub retries_total: LabeledCounter<RetryReason>,
    /// Files found already archived with identical content (counted as success).
    pub duplicates_total: IntCounter,
    /// Files refused because an object with different content exists under the key.
    pub conflicts_total: IntCounter,
    /// Acknowledgements (the store confirmed the copy) the ack journal could not
    /// record: harmless for the data, but a restarted daemon compares those files with
    /// the store instead of its journal, and the journal's filesystem needs a look.
    pub unjournaled_acks_total: IntCounter,
    /// Files `wal-push` uploaded itself because no daemon answered.
    pub wal_push_fallback_uploads_total: IntCounter,
    /// Time from an `archive_command` request to its acknowledgement.
    pub archive_command_ack_seconds: Histogram,
    /// `wal-fetch` requests served from the prefetch cache.
    pub restore_hits_total: IntCounter,
    /// `wal-fetch` requests that had to go to the store.
    pub restore_misses_total: IntCounter,
    /// Raw bytes prefetched for restore.
    pub restore_prefetched_bytes_total: IntCounter,
    /// Store credentials refreshed.
    pub credential_refreshes_total: IntCounter,
    /// Credential refreshes that failed.
    pub credential_refresh_failures_total: IntCounter,
    /// Configuration reloads, by result.
    pub config_reloads_total: LabeledCounter<ReloadResult>,
    /// Unix time of the end of the oldest DONE base backup: the earliest point a
    /// recovery can reach; 0 when there is none. The plugin's
    /// `first_recoverability_point`.
    pub first_recoverability_point_seconds: Gauge,
    /// Unix time of the end of the newest DONE base backup; 0 when there is none.
    pub last_available_backup_timestamp_seconds: Gauge,
    /// Unix time of the newest FAILED base backup; 0 when there is none.
    pub last_failed_backup_timestamp_seconds: Gauge,
    /// How long the newest DONE base backup took.
    pub last_backup_duration_seconds: Gauge,
    /// The bytes the newest DONE base backup copied (its `size`).
    pub last_backup_size_bytes: IntGauge,
    /// DONE base backups in the catalog.
    pub backups_available: IntGauge,
    /// Rounds of the retention loop, by result.
    pub retention_runs_total: LabeledCounter<RetentionResult>,
    /// Base backups the retention loop deleted.
    pub retention_deleted_backups_total: IntCounter,
    /// WAL files the retention loop deleted.
    pub retention_deleted_wal_total: IntCounter,
    /// The retention policy's recovery window; 0 without one (or keeping by redundancy).
    /// Beside the first recoverability point it tells whether the window is kept.
    pub retention_recovery_window_seconds: IntGauge,
    /// 1 while the daemon is ready (`/readyz` answers 200), else 0; brought up to date
    /// at each scrape and each CNPG-I Collect ([`Metrics::observe_readiness`]).
    pub ready: IntGauge,
}

impl Metrics {
    /// Registers every family, and on Linux the process collector, in a new registry.
    pub fn new() -> Metrics {
        let r = Registry::new();

        #[cfg(target_os = "linux")]
        register(
            &r,
            prometheus::process_collector::ProcessCollector::for_self(),
        );

        let last_archived_segment_info = IntGaugeVec::new(
            Opts::new(
                "walship_last_archived_segment_info",
                "The last archived segment, as a label; the value is always 1.",
            ),
            &["segment"],
        )
        .expect("metric options are valid");
        register(&r, last_archived_segment_info.clone());

        Metrics {
            segments_archived_total: counter(
                &r,
                "walship_segments_archived_total",
                "WAL segments and history files archived.",
            ),
            archived_bytes_total: counter(
                &r,
                "walship_archived_bytes_total",
                "Raw bytes of archived files, before compression.",
            ),
            uploaded_bytes_total: counter(
                &r,
                "walship_uploaded_bytes_total",
                "Bytes uploaded to the object store, after compression.",
            ),
            archive_failures_total: LabeledCounter::register(
                &r,
                "walship_archive_failures_total",
                "Files whose archiving failed, by reason.",
            ),
            upload_duration_seconds: histogram(
                &r,
                "walship_upload_duration_seconds",
                "Time spent uploading one file, retries included.",
                UPLOAD_BUCKETS,
            ),
            ready_backlog_files: int_gauge(
                &r,
                "walship_ready_backlog_files",
                "Files marked ready by PostgreSQL and not archived yet.",
            ),
            ready_backlog_bytes: int_gauge(
                &r,
                "walship_ready_backlog_bytes",
                "Raw bytes of the files marked ready and not archived yet.",
            ),
            oldest_ready_age_seconds: gauge(
                &r,
                "walship_oldest_ready_age_seconds",
                "Age of the oldest file marked ready; 0 when there is none.",
            ),
            last_archived_timestamp_seconds: gauge(
                &r,
                "walship_last_archived_timestamp_seconds",
                "Unix time of the last successful archive.",
            ),
            last_archived_segment_info,
            last_archived_segment: Mutex::new(None),
            retries_total: LabeledCounter::register(
                &r,
                "walship_retries_total",
                "Object store requests tried again, by the kind of failure: by the store's retry policy within one operation, or by the daemon's backoff of a file.",
            ),
            duplicates_total: counter(
                &r,
                "walship_duplicates_total",
                "Files already archived with identical content.",
            ),
            conflicts_total: counter(
                &r,
                "walship_conflicts_total",
                "Files refused because different content is archived under the same name.",
            ),
            unjournaled_acks_total: counter(
                &r,
                "walship_unjournaled_acks_total",
                "Files archived and acknowledged that the ack journal could not record (its filesystem full, unwritable or gone).",
            ),
            wal_push_fallback_uploads_total: counter(
                &r,
                "walship_wal_push_fallback_uploads_total",
                "Files wal-push uploaded itself because no daemon answered.",
            ),
            archive_command_ack_seconds: histogram(
                &r,
                "walship_archive_command_ack_seconds",
                "Time from an archive_command request to its acknowledgement.",
                ACK_BUCKETS,
            ),
            restore_hits_total: counter(
                &r,
                "walship_restore_hits_total",
                "wal-fetch requests served from the prefetch cache.",
            ),
            restore_misses_total: counter(
                &r,
                "walship_restore_misses_total",
                "wal-fetch requests that had to go to the object store.",
            ),
            restore_prefetched_bytes_total: counter(
                &r,
                "walship_restore_prefetched_bytes_total",
                "Raw bytes prefetched for restore.",
            ),
            credential_refreshes_total: counter(
                &r,
                "walship_credential_refreshes_total",
                "Object store credentials refreshed.",
            ),
            credential_refresh_failures_total: counter(
                &r,
                "walship_credential_refresh_failures_total",
                "Object store credential refreshes that failed.",
            ),
            config_reloads_total: LabeledCounter::register(
                &r,
                "walship_config_reloads_total",
                "Configuration reloads, by result.",
            ),
            first_recoverability_point_seconds: gauge(
                &r,
                "walship_first_recoverability_point_seconds",
                "Unix time of the end of the oldest complete base backup, the earliest point \
                 a recovery can reach; 0 when there is none.",
            ),
            last_available_backup_timestamp_seconds: gauge(
                &r,
                "walship_last_available_backup_timestamp_seconds",
                "Unix time of the end of the newest complete base backup; 0 when there is none.",
            ),
            last_failed_backup_timestamp_seconds: gauge(
                &r,
                "walship_last_failed_backup_timestamp_seconds",
                "Unix time of the newest failed base backup; 0 when there is none.",
            ),
            last_backup_duration_seconds: gauge(
                &r,
                "walship_last_backup_duration_seconds",
                "How long the newest complete base backup took.",
            ),
            last_backup_size_bytes: int_gauge(
                &r,
                "walship_last_backup_size_bytes",
                "Bytes the newest complete base backup copied.",
            ),
            backups_available: int_gauge(
                &r,
                "walship_backups_available",
                "Complete base backups in the catalog.",
            ),
            retention_runs_total: LabeledCounter::register(
                &r,
                "walship_retention_runs_total",
                "Rounds of the retention loop, by result.",
            ),
            retention_deleted_backups_total: counter(
                &r,
                "walship_retention_deleted_backups_total",
                "Base backups the retention loop deleted.",
            ),
            retention_deleted_wal_total: counter(
                &r,
                "walship_retention_deleted_wal_total",
                "WAL files the retention loop deleted.",
            ),
            retention_recovery_window_seconds: int_gauge(
                &r,
                "walship_retention_recovery_window_seconds",
                "The retention policy's recovery window; 0 without one, or when it keeps \
                 backups by redundancy.",
            ),
            ready: int_gauge(
                &r,
                "walship_ready",
                "1 while the daemon is ready (/readyz answers 200), else 0.",
            ),
            registry: r,
        }
    }

    /// Records the last archived segment and when it was archived.
    ///
    /// The info metric keeps exactly one series: the previous segment's label value is
    /// removed, so the series count stays constant however long the daemon runs. Only the
    /// final path component of `segment` is used, so a path passed by mistake cannot leak
    /// the data directory's layout into a label.
    pub fn set_last_archived(&self, segment: &str, unix_time: f64) {
        let segment = segment.rsplit(['/', '\\']).next().unwrap_or(segment);
        // The lock makes "remove the old label, set the new one" atomic with respect to
        // concurrent callers, so two series can never be left at 1.
        let mut last = self
            .last_archived_segment
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(previous) = last.as_deref()
            && previous != segment
        {
            // The series may be missing only if someone reset the vector; nothing to do.
            let _ = self
                .last_archived_segment_info
                .remove_label_values(&[previous]);
        }
        self.last_archived_segment_info
            .with_label_values(&[segment])
            .set(1);
        self.last_archived_timestamp_seconds.set(unix_time);
        *last = Some(segment.to_owned());
    }

    /// The last segment given to [`Metrics::set_last_archived`], if any.
    pub fn last_archived(&self) -> Option<String> {
        self.last_archived_segment
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every family in the Prometheus text exposition format 0.0.4.
    ///
    /// Encoding cannot fail for the metrics registered here; should it ever, the error is
    /// logged and an empty exposition returned (the HTTP endpoint answers 500 instead).
    pub fn render(&self) -> String {
        self.encode().unwrap_or_else(|error| {
            tracing::error!(%error, "encoding metrics failed");
            String::new()
        })
    }

    /// Brings `walship_ready` up to date with `health`.
    pub fn observe_readiness(&self, health: &crate::Health) {
        self.ready.set(i64::from(health.readiness().is_ok()));
    }

    /// Every counter and gauge as plain values, for another exporter (the CNPG-I
    /// metrics service). A histogram becomes its `_sum` and `_count`, both counters:
    /// buckets would multiply the series another exporter has to define up front.
    pub fn snapshot(&self) -> Vec<Family> {
        use prometheus::proto::MetricType;
        let mut out = Vec::new();
        for family in self.registry.gather() {
            let label_names: Vec<String> = family
                .get_metric()
                .first()
                .map(|m| m.get_label().iter().map(|l| l.name().to_owned()).collect())
                .unwrap_or_default();
            let values = |m: &prometheus::proto::Metric| -> Vec<String> {
                m.get_label().iter().map(|l| l.value().to_owned()).collect()
            };
            let name = family.name().to_owned();
            let help = family.help().to_owned();
            match family.get_field_type() {
                MetricType::COUNTER | MetricType::GAUGE => {
                    let kind = if family.get_field_type() == MetricType::COUNTER {
                        Kind::Counter
                    } else {
                        Kind::Gauge
                    };
                    let samples = family
                        .get_metric()
                        .iter()
                        .map(|m| {
                            let value = if kind == Kind::Counter {
                                m.get_counter().get_value()
                            } else {
                                m.get_gauge().get_value()
                            };
                            (values(m), value)
                        })
                        .collect();
                    out.push(Family {
                        name,
                        help,
                        kind,
                        label_names,
                        samples,
                    });
                }
                MetricType::HISTOGRAM => {
                    let metrics = family.get_metric();
                    out.push(Family {
                        name: format!("{name}_sum"),
                        help: format!("{help} (sum)"),
                        kind: Kind::Counter,
                        label_names: label_names.clone(),
                        samples: metrics
                            .iter()
                            .map(|m| (values(m), m.get_histogram().get_sample_sum()))
                            .collect(),
                    });
                    out.push(Family {
                        name: format!("{name}_count"),
                        help: format!("{help} (count)"),
                        kind: Kind::Counter,
                        label_names,
                        samples: metrics
                            .iter()
                            .map(|m| (values(m), m.get_histogram().get_sample_count() as f64))
                            .collect(),
                    });
                }
                // Not registered here (no summaries or untyped metrics).
                _ => {}
            }
        }
        out
    }

    pub(crate) fn encode(&self) -> prometheus::Result<String> {
        let families = self.registry.gather();
        let mut buf = Vec::new();
        TextEncoder::new().encode(&families, &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every walship family; the process families come on top on Linux.
    const FAMILIES: &[(&str, &str)] = &[
        ("walship_segments_archived_total", "counter"),
        ("walship_archived_bytes_total", "counter"),
        ("walship_uploaded_bytes_total", "counter"),
        ("walship_archive_failures_total", "counter"),
        ("walship_upload_duration_seconds", "histogram"),
        ("walship_ready_backlog_files", "gauge"),
        ("walship_ready_backlog_bytes", "gauge"),
        ("walship_oldest_ready_age_seconds", "gauge"),
        ("walship_last_archived_timestamp_seconds", "gauge"),
        ("walship_last_archived_segment_info", "gauge"),
        ("walship_retries_total", "counter"),
        ("walship_duplicates_total", "counter"),
        ("walship_conflicts_total", "counter"),
        ("walship_unjournaled_acks_total", "counter"),
        ("walship_wal_push_fallback_uploads_total", "counter"),
        ("walship_archive_command_ack_seconds", "histogram"),
        ("walship_restore_hits_total", "counter"),
        ("walship_restore_misses_total", "counter"),
        ("walship_restore_prefetched_bytes_total", "counter"),
        ("walship_credential_refreshes_total", "counter"),
        ("walship_credential_refresh_failures_total", "counter"),
        ("walship_config_reloads_total", "counter"),
        ("walship_first_recoverability_point_seconds", "gauge"),
        ("walship_last_available_backup_timestamp_seconds", "gauge"),
        ("walship_last_failed_backup_timestamp_seconds", "gauge"),
        ("walship_last_backup_duration_seconds", "gauge"),
        ("walship_last_backup_size_bytes", "gauge"),
        ("walship_backups_available", "gauge"),
        ("walship_retention_runs_total", "counter"),
        ("walship_retention_deleted_backups_total", "counter"),
        ("walship_retention_deleted_wal_total", "counter"),
        ("walship_retention_recovery_window_seconds", "gauge"),
        ("walship_ready", "gauge"),
    ];

    fn families_in(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| {
                let (name, kind) = l.split_once(' ').expect("TYPE line has a kind");
                (name.to_owned(), kind.to_owned())
            })
            .collect()
    }

    #[test]
    fn render_has_help_and_type_for_every_family() {
        let m = Metrics::new();
        m.set_last_archived("000000010000000000000001", 1.0);
        let text = m.render();
        for (name, kind) in FAMILIES {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("# HELP {name} "))),
                "no HELP for {name} in\n{text}"
            );
            assert!(
                text.lines().any(|l| l == format!("# TYPE {name} {kind}")),
                "no TYPE {kind} for {name} in\n{text}"
            );
        }
        // Nothing unexpected: every family is either ours or the process collector's.
        for (name, _) in families_in(&text) {
            assert!(
                FAMILIES.iter().any(|(n, _)| *n == name) || name.starts_with("process_"),
                "unexpected family {name}"
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn render_includes_process_metrics() {
        let text = Metrics::new().render();
        assert!(text.contains("# TYPE process_resident_memory_bytes gauge"));
        assert!(text.contains("# TYPE process_open_fds gauge"));
    }

    #[test]
    fn counters_end_in_total_and_others_do_not() {
        let text = Metrics::new().render();
        let families = families_in(&text);
        assert!(families.len() >= FAMILIES.len() - 1);
        for (name, kind) in families {
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "{name} is a {kind}"
            );
            if !name.starts_with("process_") {
                assert!(name.starts_with("walship_"), "{name} lacks the prefix");
            }
        }
    }

    #[test]
    fn labelled_series_exist_at_zero_from_the_start() {
        let text = Metrics::new().render();
        for reason in FailureReason::ALL {
            let series = format!(
                "walship_archive_failures_total{{reason=\"{}\"}} 0",
                reason.as_str()
            );
            assert!(text.contains(&series), "missing {series}");
        }
        for reason in RetryReason::ALL {
            let series = format!("walship_retries_total{{reason=\"{}\"}} 0", reason.as_str());
            assert!(text.contains(&series), "missing {series}");
        }
        for result in ReloadResult::ALL {
            let series = format!(
                "walship_config_reloads_total{{result=\"{}\"}} 0",
                result.as_str()
            );
            assert!(text.contains(&series), "missing {series}");
        }
        for result in RetentionResult::ALL {
            let series = format!(
                "walship_retention_runs_total{{result=\"{}\"}} 0",
                result.as_str()
            );
            assert!(text.contains(&series), "missing {series}");
        }
    }

    #[test]
    fn labelled_counters_count_per_value() {
        let m = Metrics::new();
        m.archive_failures_total.inc(FailureReason::Conflict);
        m.archive_failures_total
            .inc_by(FailureReason::StoreUnreachable, 3);
        m.retries_total.inc(RetryReason::Throttled);
        m.config_reloads_total.inc(ReloadResult::Rejected);
        assert_eq!(m.archive_failures_total.get(FailureReason::Conflict), 1);
        assert_eq!(
            m.archive_failures_total
                .get(FailureReason::StoreUnreachable),
            3
        );
        assert_eq!(m.archive_failures_total.get(FailureReason::Other), 0);
        let text = m.render();
        assert!(text.contains("walship_archive_failures_total{reason=\"conflict\"} 1"));
        assert!(text.contains("walship_archive_failures_total{reason=\"store_unreachable\"} 3"));
        assert!(text.contains("walship_retries_total{reason=\"throttled\"} 1"));
        assert!(text.contains("walship_config_reloads_total{result=\"rejected\"} 1"));
    }

    #[test]
    fn histograms_use_the_documented_bucket_range() {
        let m = Metrics::new();
        m.upload_duration_seconds.observe(0.2);
        m.archive_command_ack_seconds.observe(0.0001);
        let text = m.render();
        assert!(text.contains("walship_upload_duration_seconds_bucket{le=\"0.005\"} 0"));
        assert!(text.contains("walship_upload_duration_seconds_bucket{le=\"60\"} 1"));
        assert!(text.contains("walship_upload_duration_seconds_count 1"));
        assert!(text.contains("walship_archive_command_ack_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("walship_archive_command_ack_seconds_bucket{le=\"30\"} 1"));
    }

    fn info_lines(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| l.starts_with("walship_last_archived_segment_info{"))
            .collect()
    }

    #[test]
    fn last_archived_replaces_the_previous_label() {
        let m = Metrics::new();
        assert!(info_lines(&m.render()).is_empty());

        m.set_last_archived("000000010000000000000001", 1_700_000_000.0);
        assert_eq!(
            info_lines(&m.render()),
            ["walship_last_archived_segment_info{segment=\"000000010000000000000001\"} 1"]
        );

        m.set_last_archived("000000010000000000000002", 1_700_000_060.5);
        m.set_last_archived("000000010000000000000002", 1_700_000_061.0);
        let text = m.render();
        assert_eq!(
            info_lines(&text),
            ["walship_last_archived_segment_info{segment=\"000000010000000000000002\"} 1"]
        );
        assert!(text.contains("walship_last_archived_timestamp_seconds 1700000061"));
        assert_eq!(
            m.last_archived().as_deref(),
            Some("000000010000000000000002")
        );
    }

    #[test]
    fn last_archived_never_exports_a_path() {
        let m = Metrics::new();
        m.set_last_archived("/var/lib/postgresql/data/pg_wal/00000002.history", 1.0);
        assert_eq!(
            info_lines(&m.render()),
            ["walship_last_archived_segment_info{segment=\"00000002.history\"} 1"]
        );
    }

    #[test]
    fn registries_are_independent() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.segments_archived_total.inc();
        assert_eq!(b.segments_archived_total.get(), 0);
        assert!(
            prometheus::gather()
                .iter()
                .all(|f| !f.name().starts_with("walship_"))
        );
    }

    /// Lints the exposition with Prometheus's own checker when it is installed.
    #[test]
    fn promtool_accepts_the_exposition() {
        use std::io::Write;
        use std::process::{Command, Stdio};

        let m = Metrics::new();
        m.set_last_archived("000000010000000000000001", 1.0);
        m.upload_duration_seconds.observe(0.1);
        let text = m.render();

        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("note: promtool is not on PATH; skipping the exposition lint");
                return;
            }
            Err(e) => panic!("starting promtool: {e}"),
        };
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(text.as_bytes())
            .expect("writing to promtool");
        let out = child.wait_with_output().expect("waiting for promtool");
        assert!(
            out.status.success(),
            "promtool check metrics failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
