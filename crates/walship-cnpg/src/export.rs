//! walship's metrics as CNPG-I's metrics service carries them: the instance's exporter
//! calls Define, then Collect, on every scrape and exports the names unchanged, and a
//! collected name that was not defined fails the whole scrape. Both answers are made
//! here from one [`walship_metrics::Metrics::snapshot`], so they cannot disagree.
//!
//! Exported: the plugin's three gauges under its exact names (dashboards and alerts
//! written for the plugin keep working), and every `walship_` metric, the WAL ones the
//! plugin's users ask for among them. Nothing else: the process metrics would collide
//! with the instance manager's own `process_*` series.

use walship_metrics::{Family, Kind};

use crate::pb::metrics::{Definition, Sample, ValueType, value_type};

/// The plugin's gauges, and the walship metric each one takes its value from.
pub const PLUGIN_GAUGES: [(&str, &str, &str); 3] = [
    (
        "barman_cloud_cloudnative_pg_io_first_recoverability_point",
        "walship_first_recoverability_point_seconds",
        "Unix time of the earliest point the cluster can be recovered to (0: none)",
    ),
    (
        "barman_cloud_cloudnative_pg_io_last_available_backup_timestamp",
        "walship_last_available_backup_timestamp_seconds",
        "Unix time the newest successful backup ended (0: none)",
    ),
    (
        "barman_cloud_cloudnative_pg_io_last_failed_backup_timestamp",
        "walship_last_failed_backup_timestamp_seconds",
        "Unix time of the newest failed backup (0: none)",
    ),
];

fn exported(families: &[Family]) -> impl Iterator<Item = &Family> {
    families.iter().filter(|f| f.name.starts_with("walship_"))
}

fn kind(kind: Kind) -> ValueType {
    let kind = match kind {
        Kind::Counter => value_type::Kind::Counter,
        Kind::Gauge => value_type::Kind::Gauge,
    };
    ValueType { kind: kind as i32 }
}

/// What Define answers.
pub fn define(families: &[Family]) -> Vec<Definition> {
    let plugin = PLUGIN_GAUGES.iter().map(|(name, _, help)| Definition {
        fq_name: (*name).to_owned(),
        help: (*help).to_owned(),
        variable_labels: Vec::new(),
        const_labels: Default::default(),
        value_type: Some(kind(Kind::Gauge)),
    });
    let ours = exported(families).map(|f| Definition {
        fq_name: f.name.clone(),
        help: f.help.clone(),
        variable_labels: f.label_names.clone(),
        const_labels: Default::default(),
        value_type: Some(kind(f.kind)),
    });
    plugin.chain(ours).collect()
}

/// What Collect answers.
pub fn collect(families: &[Family]) -> Vec<Sample> {
    let value_of = |source: &str| {
        families
            .iter()
            .find(|f| f.name == source)
            .and_then(|f| f.samples.first())
            .map_or(0.0, |(_, v)| *v)
    };
    let plugin = PLUGIN_GAUGES.iter().map(|(name, source, _)| Sample {
        value: value_of(source),
        fq_name: (*name).to_owned(),
        variable_labels: Vec::new(),
    });
    let ours = exported(families).flat_map(|f| {
        f.samples.iter().map(|(labels, value)| Sample {
            value: *value,
            fq_name: f.name.clone(),
            variable_labels: labels.clone(),
        })
    });
    plugin.chain(ours).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn every_collected_name_is_defined_with_as_many_labels_and_nothing_but_walships() {
        let metrics = walship_metrics::Metrics::new();
        metrics.segments_archived_total.inc_by(3);
        metrics.ready_backlog_files.set(7);
        metrics
            .first_recoverability_point_seconds
            .set(1_700_000_000.0);
        metrics.archive_command_ack_seconds.observe(0.25);
        let families = metrics.snapshot();
        let defined: BTreeMap<String, Definition> = define(&families)
            .into_iter()
            .map(|d| (d.fq_name.clone(), d))
            .collect();
        let samples = collect(&families);
        assert!(!samples.is_empty());
        for sample in &samples {
            let definition = defined
                .get(&sample.fq_name)
                .unwrap_or_else(|| panic!("{} is collected but not defined", sample.fq_name));
            assert_eq!(
                definition.variable_labels.len(),
                sample.variable_labels.len(),
                "{}",
                sample.fq_name
            );
        }
        assert!(
            defined
                .keys()
                .all(|n| n.starts_with("walship_") || n.starts_with("barman_cloud_")),
            "{:?}",
            defined.keys().collect::<Vec<_>>()
        );
        let value = |name: &str| {
            samples
                .iter()
                .find(|s| s.fq_name == name)
                .map(|s| s.value)
                .unwrap_or_else(|| panic!("{name} not collected"))
        };
        assert_eq!(
            value("barman_cloud_cloudnative_pg_io_first_recoverability_point"),
            1_700_000_000.0
        );
        assert_eq!(
            value("barman_cloud_cloudnative_pg_io_last_failed_backup_timestamp"),
            0.0
        );
        assert_eq!(value("walship_segments_archived_total"), 3.0);
        assert_eq!(value("walship_ready_backlog_files"), 7.0);
        assert_eq!(value("walship_archive_command_ack_seconds_count"), 1.0);
        assert_eq!(value("walship_archive_command_ack_seconds_sum"), 0.25);
    }
}
