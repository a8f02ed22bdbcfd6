//! The results: raw numbers kept as measured, ratios computed from them, printed
//! as a markdown table and written as markdown plus JSON.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::backup::{self, BackupTool, Compression, RestoreTool};
use super::env::Transport;
use super::live::{Live, LiveTool};
use super::proc::Cost;
use super::runner::{Archiver, Measured, Restorer};

/// One archive run.
pub struct ArchiveRow {
    pub compression: String,
    pub archiver: Archiver,
    pub measured: Measured,
}

/// One restore run.
pub struct RestoreRow {
    pub compression: String,
    pub restorer: Restorer,
    pub measured: Measured,
}

/// Everything a bench run measured, and the circumstances.
#[derive(Default)]
pub struct Results {
    pub mode: String,
    pub started: String,
    pub walship_build: String,
    pub segments: usize,
    pub segment_bytes: u64,
    pub load_before: String,
    pub load_after: String,
    pub notes: Vec<String>,
    /// Runs that failed (each also has a note).
    pub failures: usize,
    /// (threads, seconds) for the whole corpus.
    pub ceiling: Vec<(usize, f64)>,
    /// Seconds each for `/bin/true` launched as every archive_command is.
    pub floor_latencies: Vec<f64>,
    pub archive: Vec<ArchiveRow>,
    pub restore: Vec<RestoreRow>,
    pub live: Vec<(LiveTool, Live)>,
    /// Whether the WAL runs were made (not with `--section backup`).
    pub wal: bool,
    /// The base backup section, when it ran.
    pub backup: Option<backup::BackupResults>,
}

fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    // Nearest rank: the smallest value with at least p% of the values at or below it.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank - 1])
}

impl Results {
    fn total_bytes(&self) -> f64 {
        self.segment_bytes as f64 * self.segments as f64
    }

    fn per_second(&self, seconds: f64) -> f64 {
        self.segments as f64 / seconds
    }

    fn mb_per_second(&self, seconds: f64) -> f64 {
        self.total_bytes() / 1e6 / seconds
    }

    fn cpu_per_gb(&self, cpu: f64) -> f64 {
        cpu / (self.total_bytes() / 1e9)
    }

    fn archive_row(&self, compression: &str, archiver: Archiver) -> Option<&ArchiveRow> {
        self.archive
            .iter()
            .find(|r| r.compression == compression && r.archiver == archiver)
    }

    fn restore_row(&self, restorer: Restorer) -> Option<&RestoreRow> {
        self.restore.iter().find(|r| r.restorer == restorer)
    }

    fn compressions(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for row in &self.archive {
            if !out.contains(&row.compression) {
                out.push(row.compression.clone());
            }
        }
        out
    }

    /// Segments per second of the best walship daemon run over TLS with `compression`.
    fn best_daemon(&self, compression: &str) -> Option<&ArchiveRow> {
        self.archive
            .iter()
            .filter(|r| {
                r.compression == compression
                    && matches!(r.archiver, Archiver::Daemon(_, Transport::Tls))
            })
            .min_by(|a, b| a.measured.seconds.total_cmp(&b.measured.seconds))
    }

    fn best_ceiling(&self) -> Option<f64> {
        self.ceiling.iter().map(|(_, s)| *s).min_by(f64::total_cmp)
    }

    /// (target, goal, measured, met) for every target the issue sets.
    fn targets(&self) -> Vec<(String, f64, Option<f64>)> {
        let mut out = Vec::new();
        let Some(first) = self.compressions().into_iter().next() else {
            return out;
        };
        let ratio = |a: Option<&ArchiveRow>, b: Option<&ArchiveRow>| {
            Some(b?.measured.seconds / a?.measured.seconds)
        };
        out.push((
            format!("archive: best walship daemon ÷ barman-cloud once per segment ({first})"),
            30.0,
            ratio(
                self.best_daemon(&first),
                self.archive_row(&first, Archiver::Barman(1)),
            ),
        ));
        for row in self.archive.iter().filter(|r| r.compression == first) {
            if let Archiver::PgBackRest(n) = row.archiver {
                out.push((
                    format!(
                        "archive: walship daemon ÷ pgBackRest async at {n} processes ({first})"
                    ),
                    2.0,
                    ratio(
                        self.archive_row(&first, Archiver::Daemon(n, Transport::Tls)),
                        Some(row),
                    ),
                ));
            }
        }
        let plain = self
            .archive
            .iter()
            .filter(|r| {
                r.compression == "none"
                    && matches!(r.archiver, Archiver::Daemon(_, Transport::Plain))
            })
            .min_by(|a, b| a.measured.seconds.total_cmp(&b.measured.seconds));
        out.push((
            "archive: walship daemon, uncompressed, plain HTTP ÷ server ceiling, raw MB/s".into(),
            0.9,
            plain
                .zip(self.best_ceiling())
                .map(|(r, c)| c / r.measured.seconds),
        ));
        let preshipped: Vec<f64> = self
            .archive
            .iter()
            .flat_map(|r| r.measured.preshipped_latencies.iter().copied())
            .collect();
        out.push((
            "archive_command p99 with the daemon, pre-shipped (ms; lower is better)".into(),
            5.0,
            percentile(&preshipped, 99.0).map(|s| s * 1e3),
        ));
        let rss8 = self
            .archive
            .iter()
            .find(|r| r.archiver == Archiver::Daemon(8, Transport::Tls))
            .and_then(|r| r.measured.peak_rss_kib);
        out.push((
            "daemon peak RSS at maxParallel 8 (MiB; lower is better)".into(),
            64.0,
            rss8.map(|k| k as f64 / 1024.0),
        ));
        let restore = |r: Restorer| self.restore_row(r).map(|r| r.measured.seconds);
        out.push((
            "restore: walship with prefetch ÷ barman-cloud-wal-restore once per segment".into(),
            10.0,
            restore(Restorer::Barman(1))
                .zip(restore(Restorer::DaemonPrefetch))
                .map(|(b, w)| b / w),
        ));
        out
    }

    /// The results as a markdown page.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let mib = self.segment_bytes >> 20;
        let _ = writeln!(md, "# walship benchmark ({} mode)\n", self.mode);
        let what = if self.wal {
            format!(
                "{} segments of {mib} MiB of real pgbench WAL (PostgreSQL 15)",
                self.segments
            )
        } else {
            "the base backup section only".to_owned()
        };
        let _ = writeln!(
            md,
            "Run {} with {what}, walship {} build, one s3s-fs server on 127.0.0.1 behind stunnel \
             (TLS, private CA) for every tool. Load average before/after: {} / {}.\n",
            self.started, self.walship_build, self.load_before, self.load_after
        );
        for note in &self.notes {
            let _ = writeln!(md, "- {note}");
        }
        md.push('\n');
        if self.wal {
            self.wal_markdown(&mut md);
        }
        if let Some(section) = &self.backup {
            section.markdown(&mut md);
        }
        md
    }

    /// The WAL sections: targets, archive throughput, ceiling, latencies, live runs
    /// and WAL restores.
    fn wal_markdown(&self, md: &mut String) {
        let _ = writeln!(md, "## Targets\n");
        let _ = writeln!(md, "| target | goal | measured | met | how far |");
        let _ = writeln!(md, "|---|---:|---:|---|---:|");
        for (name, goal, measured) in self.targets() {
            let lower_is_better = name.contains("lower is better");
            let (shown, met, far) = match measured {
                Some(m) => {
                    let met = if lower_is_better { m < goal } else { m >= goal };
                    let far = if lower_is_better { goal / m } else { m / goal };
                    (
                        format!("{m:.2}"),
                        if met { "yes" } else { "**no**" },
                        format!("{far:.2}× of goal"),
                    )
                }
                None => ("n/a".into(), "not measured", String::new()),
            };
            let _ = writeln!(md, "| {name} | {goal} | {shown} | {met} | {far} |");
        }

        let _ = writeln!(
            md,
            "\n## Archive throughput (backlog of {} segments)\n",
            self.segments
        );
        let _ = writeln!(
            md,
            "| compression | tool | seconds | segments/s | MB/s (raw WAL) | CPU-s per GB | peak RSS MiB | × barman once per segment | × pgBackRest at equal processes |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for row in &self.archive {
            let m = &row.measured;
            let vs = |other: Option<&ArchiveRow>| {
                other
                    .map(|o| format!("{:.2}", o.measured.seconds / m.seconds))
                    .unwrap_or_else(|| "–".into())
            };
            let pgbr = self.archive_row(
                &row.compression,
                Archiver::PgBackRest(row.archiver.processes()),
            );
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
                row.compression,
                row.archiver.label(),
                m.seconds,
                self.per_second(m.seconds),
                self.mb_per_second(m.seconds),
                self.cpu_per_gb(m.cpu_seconds),
                m.peak_rss_kib
                    .map(|k| format!("{:.1}", k as f64 / 1024.0))
                    .unwrap_or_else(|| "–".into()),
                vs(self.archive_row(&row.compression, Archiver::Barman(1))),
                vs(pgbr),
            );
        }

        // CloudNativePG: walship's sidecar against the plugin's, at the same maxParallel.
        for row in &self.archive {
            let Archiver::PluginWay(n) = row.archiver else {
                continue;
            };
            if let Some(ours) = self.archive_row(&row.compression, Archiver::CnpgSidecar(n)) {
                let _ = writeln!(
                    md,
                    "\nCloudNativePG ({}, maxParallel {n}): walship's sidecar archives the \
                     backlog {:.1}× as fast as the Barman Cloud plugin's way.",
                    row.compression,
                    row.measured.seconds / ours.measured.seconds
                );
            }
        }

        let _ = writeln!(
            md,
            "\n## Ceiling: plain concurrent PUTs, no compression, no checks\n"
        );
        let _ = writeln!(md, "| threads | seconds | segments/s | MB/s |");
        let _ = writeln!(md, "|---:|---:|---:|---:|");
        for (threads, seconds) in &self.ceiling {
            let _ = writeln!(
                md,
                "| {threads} | {seconds:.2} | {:.1} | {:.1} |",
                self.per_second(*seconds),
                self.mb_per_second(*seconds)
            );
        }

        let _ = writeln!(
            md,
            "\n## archive_command latency (what PostgreSQL waits for, per segment)\n"
        );
        let _ = writeln!(md, "| compression | archive_command | p50 ms | p99 ms |");
        let _ = writeln!(md, "|---|---|---:|---:|");
        if let (Some(p50), Some(p99)) = (
            percentile(&self.floor_latencies, 50.0),
            percentile(&self.floor_latencies, 99.0),
        ) {
            let _ = writeln!(
                md,
                "| – | the floor: `/bin/true`, launched the same way | {:.1} | {:.1} |",
                p50 * 1e3,
                p99 * 1e3
            );
        }
        for row in &self.archive {
            let m = &row.measured;
            let mut line = |what: String, values: &[f64]| {
                if let (Some(p50), Some(p99)) = (percentile(values, 50.0), percentile(values, 99.0))
                {
                    let _ = writeln!(
                        md,
                        "| {} | {what} | {:.1} | {:.1} |",
                        row.compression,
                        p50 * 1e3,
                        p99 * 1e3
                    );
                }
            };
            match row.archiver {
                Archiver::Daemon(n, Transport::Tls) => line(
                    format!("walship wal-push, daemon (maxParallel {n}) already shipped it"),
                    &m.preshipped_latencies,
                ),
                Archiver::Daemon(_, Transport::Plain) => {}
                Archiver::CnpgSidecar(n) => line(
                    format!(
                        "CloudNativePG's manager → walship cnpg instance (maxParallel {n}), \
                         already shipped"
                    ),
                    &m.preshipped_latencies,
                ),
                Archiver::PluginWay(n) => line(
                    format!(
                        "CloudNativePG's manager → the Barman Cloud plugin's sidecar \
                         (maxParallel {n}), calls that shipped a batch (the other {} of \
                         each batch answered from its spool, not timed)",
                        n - 1
                    ),
                    &m.latencies,
                ),
                other => line(other.label(), &m.latencies),
            }
        }

        if !self.live.is_empty() {
            let _ = writeln!(
                md,
                "\n## Live: pgbench as fast as it goes, each tool as archive_command\n"
            );
            let _ = writeln!(
                md,
                "| archive_command | load seconds | segments archived | peak .ready | oldest .ready (s) | drain after load (s) |"
            );
            let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
            for (tool, live) in &self.live {
                let _ = writeln!(
                    md,
                    "| {} | {:.1} | {} | {} | {:.1} | {:.1} |",
                    tool.label(),
                    live.seconds,
                    live.segments,
                    live.peak_ready,
                    live.oldest_ready_seconds,
                    live.drain_seconds
                );
            }
        }

        let _ = writeln!(
            md,
            "\n## Restore (restore_command once per segment, in order)\n"
        );
        let _ = writeln!(
            md,
            "| compression | tool | seconds | segments/s | MB/s | CPU-s per GB | × barman once per segment |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|");
        let barman = self.restore_row(Restorer::Barman(1));
        for row in &self.restore {
            let m = &row.measured;
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {} |",
                row.compression,
                row.restorer.label(),
                m.seconds,
                self.per_second(m.seconds),
                self.mb_per_second(m.seconds),
                self.cpu_per_gb(m.cpu_seconds),
                barman
                    .map(|b| format!("{:.2}", b.measured.seconds / m.seconds))
                    .unwrap_or_else(|| "–".into()),
            );
        }
    }

    /// The raw numbers (times in seconds, sizes in bytes) as JSON.
    pub fn json(&self) -> Value {
        let measured = |m: &Measured| {
            json!({
                "seconds": m.seconds,
                "cpu_seconds": m.cpu_seconds,
                "latencies_seconds": m.latencies,
                "preshipped_latencies_seconds": m.preshipped_latencies,
                "peak_rss_kib": m.peak_rss_kib,
            })
        };
        json!({
            "mode": self.mode,
            "started": self.started,
            "walship_build": self.walship_build,
            "segments": self.segments,
            "segment_bytes": self.segment_bytes,
            "load_average_before": self.load_before,
            "load_average_after": self.load_after,
            "notes": self.notes,
            "ceiling": self.ceiling.iter().map(|(t, s)| json!({"threads": t, "seconds": s})).collect::<Vec<_>>(),
            "floor_latencies_seconds": self.floor_latencies,
            "archive": self.archive.iter().map(|r| json!({
                "compression": r.compression,
                "tool": r.archiver.label(),
                "processes": r.archiver.processes(),
                "measured": measured(&r.measured),
            })).collect::<Vec<_>>(),
            "restore": self.restore.iter().map(|r| json!({
                "compression": r.compression,
                "tool": r.restorer.label(),
                "measured": measured(&r.measured),
            })).collect::<Vec<_>>(),
            "live": self.live.iter().map(|(t, l)| json!({
                "tool": t.label(),
                "load_seconds": l.seconds,
                "segments_archived": l.segments,
                "peak_ready": l.peak_ready,
                "oldest_ready_seconds": l.oldest_ready_seconds,
                "drain_seconds": l.drain_seconds,
            })).collect::<Vec<_>>(),
            "targets": self.targets().into_iter().map(|(name, goal, measured)| json!({
                "target": name, "goal": goal, "measured": measured,
            })).collect::<Vec<_>>(),
            "base_backups": self.backup.as_ref().map(backup::BackupResults::json),
        })
    }
}

/// MiB of a KiB count, for the tables.
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl backup::BackupResults {
    fn mb_per_second(&self, cost: &Cost) -> f64 {
        self.database_bytes as f64 / 1e6 / cost.seconds
    }

    fn cpu_per_gb(&self, cost: &Cost) -> f64 {
        cost.cpu_seconds / (self.database_bytes as f64 / 1e9)
    }

    fn backup(&self, compression: Compression, tool: BackupTool) -> Option<&Cost> {
        self.backups
            .iter()
            .find(|r| r.compression == compression && r.tool == tool)
            .map(|r| &r.cost)
    }

    /// (what, walship's MB/s ÷ the other's) for every pair both sides of which ran:
    /// above 1 walship is faster; against the GETs it is the share of the ceiling.
    pub fn ratios(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        let vs =
            |out: &mut Vec<(String, f64)>, what: String, w: Option<&Cost>, o: Option<&Cost>| {
                if let (Some(w), Some(o)) = (w, o) {
                    out.push((what, o.seconds / w.seconds));
                }
            };
        for compression in [Compression::None, Compression::Gzip] {
            let c = compression.name();
            for row in self.backups.iter().filter(|r| r.compression == compression) {
                if let BackupTool::WalshipLocal(jobs) = row.tool {
                    let local = BackupTool::PgBasebackup;
                    vs(
                        &mut out,
                        format!(
                            "backup, {c}: walship --jobs {jobs} to file:// ÷ {}",
                            local.label(compression)
                        ),
                        Some(&row.cost),
                        self.backup(compression, local),
                    );
                    continue;
                }
                let BackupTool::Walship(jobs) = row.tool else {
                    continue;
                };
                let w = Some(&row.cost);
                let barman = [BackupTool::Barman(Some(jobs)), BackupTool::Barman(None)]
                    .into_iter()
                    .find(|b| b.parallel() == Some(jobs) && self.backup(compression, *b).is_some());
                if let Some(barman) = barman {
                    vs(
                        &mut out,
                        format!(
                            "backup, {c}: walship --jobs {jobs} ÷ {}",
                            barman.label(compression)
                        ),
                        w,
                        self.backup(compression, barman),
                    );
                }
                let pgbr = BackupTool::PgBackRest(jobs);
                vs(
                    &mut out,
                    format!(
                        "backup, {c}: walship --jobs {jobs} ÷ {}",
                        pgbr.label(compression)
                    ),
                    w,
                    self.backup(compression, pgbr),
                );
                let local = BackupTool::PgBasebackup;
                vs(
                    &mut out,
                    format!(
                        "backup, {c}: walship --jobs {jobs} ÷ {}",
                        local.label(compression)
                    ),
                    w,
                    self.backup(compression, local),
                );
            }
            for row in self
                .restores
                .iter()
                .filter(|r| r.compression == compression)
            {
                if !matches!(row.tool, RestoreTool::Walship(_)) {
                    continue;
                }
                let w = Some(&row.cost);
                for other in self
                    .restores
                    .iter()
                    .filter(|r| r.compression == compression)
                {
                    if matches!(other.tool, RestoreTool::Walship(_)) {
                        continue;
                    }
                    vs(
                        &mut out,
                        format!(
                            "restore, {c}: {} ÷ {}",
                            row.tool.label(),
                            other.tool.label()
                        ),
                        w,
                        Some(&other.cost),
                    );
                }
            }
        }
        out
    }

    /// The section as markdown, under a second-level heading.
    pub fn markdown(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "\n## Base backups and restores (pgbench -i -s {})\n",
            self.scale
        );
        let _ = writeln!(
            md,
            "A {:.0} MB database (`sum(pg_database_size)`; PGDATA {:.0} MB without pg_wal) on \
             PostgreSQL 15 archiving with `walship wal-push` into the bucket walship's backups go \
             to; every backup asks for an immediate checkpoint and waits for its WAL to be archived. \
             MB/s is the database size over the wall time. CPU-s are the tool's own processes (not \
             PostgreSQL's backends, walsender or archive_command); peak memory is the tool's process \
             tree (summed PSS, sampled every 100 ms, or its largest process's peak RSS). gzip levels: \
             walship 6, pgBackRest 6 (its default), pg_basebackup -z 6 (zlib's default), barman-cloud 9. \
             pgBackRest keeps its defaults: one repository object per file (no bundling). Restores \
             write to the same disk; walship's checks every object's SHA-256, barman-cloud-restore \
             fetches its tars one after another, and the GETs ceiling fetches walship's objects \
             without unpacking or checking them. The S3 server is s3s-fs behind stunnel's TLS on \
             the same two cores: `walship backup` into a `file://` store on the disk \
             pg_basebackup writes to is the like-for-like beside pg_basebackup.\n",
            self.database_bytes as f64 / 1e6,
            self.pgdata_bytes as f64 / 1e6,
        );
        for skipped in &self.skipped {
            let _ = writeln!(md, "- skipped: {skipped}");
        }
        if !self.skipped.is_empty() {
            md.push('\n');
        }
        let _ = writeln!(md, "| ratio (walship's MB/s ÷ the other's) | × |");
        let _ = writeln!(md, "|---|---:|");
        for (what, ratio) in self.ratios() {
            let _ = writeln!(md, "| {what} | {ratio:.2} |");
        }
        let max_jobs = self
            .backups
            .iter()
            .filter_map(|r| match r.tool {
                BackupTool::Walship(n) => Some(n),
                _ => None,
            })
            .max();
        for compression in [Compression::None, Compression::Gzip] {
            if let Some(n) = max_jobs
                && let Some(cost) = self.backup(compression, BackupTool::Walship(n))
            {
                let _ = writeln!(
                    md,
                    "| peak memory of walship backup --jobs {n}, {} (MiB) | {:.1} |",
                    compression.name(),
                    mib(cost.peak_rss_kib)
                );
            }
        }

        let _ = writeln!(md, "\n### Backups\n");
        let _ = writeln!(
            md,
            "| compression | tool | seconds | MB/s | CPU-s | CPU-s per GB | peak memory MiB | stored MB |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|");
        for row in &self.backups {
            let c = &row.cost;
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                row.compression.name(),
                row.tool.label(row.compression),
                c.seconds,
                self.mb_per_second(c),
                c.cpu_seconds,
                self.cpu_per_gb(c),
                mib(c.peak_rss_kib),
                row.stored_bytes as f64 / 1e6
            );
        }
        let _ = writeln!(md, "\n### Restores\n");
        let _ = writeln!(
            md,
            "| compression | tool | seconds | MB/s | CPU-s | CPU-s per GB | peak memory MiB |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|");
        for row in &self.restores {
            let c = &row.cost;
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} |",
                row.compression.name(),
                row.tool.label(),
                c.seconds,
                self.mb_per_second(c),
                c.cpu_seconds,
                self.cpu_per_gb(c),
                mib(c.peak_rss_kib)
            );
        }
    }

    /// The raw numbers (seconds, bytes, KiB) as JSON.
    pub fn json(&self) -> Value {
        let cost = |c: &Cost| {
            json!({
                "seconds": c.seconds,
                "cpu_seconds": c.cpu_seconds,
                "peak_memory_kib": c.peak_rss_kib,
            })
        };
        json!({
            "pgbench_scale": self.scale,
            "database_bytes": self.database_bytes,
            "pgdata_bytes_without_pg_wal": self.pgdata_bytes,
            "load_seconds": self.load_seconds,
            "skipped": self.skipped,
            "backups": self.backups.iter().map(|r| json!({
                "compression": r.compression.name(),
                "tool": r.tool.label(r.compression),
                "parallel": r.tool.parallel(),
                "stored_bytes": r.stored_bytes,
                "measured": cost(&r.cost),
            })).collect::<Vec<_>>(),
            "restores": self.restores.iter().map(|r| json!({
                "compression": r.compression.name(),
                "tool": r.tool.label(),
                "measured": cost(&r.cost),
            })).collect::<Vec<_>>(),
            "ratios": self.ratios().into_iter().map(|(what, ratio)| json!({
                "ratio": what, "value": ratio,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn ratios_compare_times_of_the_same_corpus() {
        let row = |archiver, seconds| ArchiveRow {
            compression: "gzip".into(),
            archiver,
            measured: Measured {
                seconds,
                ..Measured::default()
            },
        };
        let results = Results {
            segments: 10,
            segment_bytes: 1 << 20,
            archive: vec![
                row(Archiver::Daemon(4, Transport::Tls), 1.0),
                row(Archiver::Barman(1), 40.0),
                row(Archiver::PgBackRest(4), 1.5),
            ],
            wal: true,
            ..Results::default()
        };
        let targets = results.targets();
        assert_eq!(targets[0].2, Some(40.0));
        assert_eq!(targets[1].2, Some(1.5));
        let md = results.markdown();
        assert!(md.contains("| 40.00 | 1.50 |"), "{md}");
    }

    #[test]
    fn backup_ratios_pair_walship_with_each_peer_at_equal_parallelism() {
        let cost = |seconds| Cost {
            seconds,
            cpu_seconds: 1.0,
            peak_rss_kib: 2048,
        };
        let backup = |tool, seconds| backup::BackupRow {
            compression: Compression::Gzip,
            tool,
            cost: cost(seconds),
            stored_bytes: 1,
        };
        let restore = |tool, seconds| backup::RestoreRow {
            compression: Compression::Gzip,
            tool,
            cost: cost(seconds),
        };
        let section = backup::BackupResults {
            scale: 1,
            database_bytes: 2_000_000_000,
            backups: vec![
                backup(BackupTool::Walship(2), 10.0),
                backup(BackupTool::Walship(4), 8.0),
                backup(BackupTool::Barman(None), 20.0),
                backup(BackupTool::Barman(Some(4)), 16.0),
                backup(BackupTool::PgBackRest(4), 12.0),
                backup(BackupTool::PgBasebackup, 4.0),
                backup(BackupTool::WalshipLocal(4), 5.0),
            ],
            restores: vec![
                restore(RestoreTool::Walship(4), 4.0),
                restore(RestoreTool::Gets(4), 2.0),
                restore(RestoreTool::Barman, 8.0),
            ],
            ..backup::BackupResults::default()
        };
        let ratios = section.ratios();
        let ratio = |what: &str| {
            ratios
                .iter()
                .find(|(w, _)| w == what)
                .map(|(_, r)| *r)
                .unwrap_or_else(|| panic!("no {what:?} in {ratios:?}"))
        };
        let walship2 = "backup, gzip: walship --jobs 2";
        let walship4 = "backup, gzip: walship --jobs 4";
        assert_eq!(
            ratio(&format!("{walship2} ÷ barman-cloud-backup (default -J 2)")),
            2.0
        );
        assert_eq!(
            ratio(&format!("{walship4} ÷ barman-cloud-backup -J 4")),
            2.0
        );
        assert_eq!(
            ratio(&format!(
                "{walship4} ÷ pgBackRest backup --type=full, process-max 4"
            )),
            1.5
        );
        assert_eq!(
            ratio(&format!("{walship2} ÷ pg_basebackup -Ft -z, local disk")),
            0.4
        );
        assert_eq!(
            ratio(&format!(
                "{walship4} to file:// ÷ pg_basebackup -Ft -z, local disk"
            )),
            0.8
        );
        // No pgBackRest run at process-max 2: no ratio made up for it.
        assert!(!ratios.iter().any(|(w, _)| w.contains("process-max 2")));
        let restore = "restore, gzip: walship restore --jobs 4";
        assert_eq!(ratio(&format!("{restore} ÷ barman-cloud-restore")), 2.0);
        assert_eq!(
            ratio(&format!(
                "{restore} ÷ ceiling: 4 concurrent ranged GETs of walship's objects (curl)"
            )),
            0.5
        );
        let mut md = String::new();
        section.markdown(&mut md);
        assert!(
            md.contains("| peak memory of walship backup --jobs 4, gzip (MiB) | 2.0 |"),
            "{md}"
        );
        // 2 GB in 8 s, 1 CPU-s: 250 MB/s, 0.5 CPU-s per GB.
        assert!(
            md.contains(
                "| gzip | walship backup --jobs 4 | 8.00 | 250.0 | 1.0 | 0.5 | 2.0 | 0.0 |"
            ),
            "{md}"
        );
    }
}
