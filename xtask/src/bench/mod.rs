//! `cargo xtask bench`: walship against the tools users would otherwise pick, on
//! the same machine, the same local object store and the same WAL, as ratios.
//!
//! One S3 server (s3s-fs) behind one TLS front (stunnel with a private CA; pgBackRest
//! speaks S3 over HTTPS only, so everyone takes that path) serves every run; each
//! run gets a fresh bucket that is emptied afterwards. Absolute times on a shared
//! machine are noise: the report divides each tool's time by its peers' from the
//! same run. `--quick` is CI's smoke test that the harness works, not a measurement.
//!
//! Two sections: WAL (archive and restore of a backlog, live runs) and base backups
//! (backup and restore of a pgbench database, [`backup`]); `--section` runs one alone.

mod backup;
mod ceiling;
mod env;
mod live;
mod proc;
mod report;
mod runner;
mod wal;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use walship_testkit::{S3Server, WalshipBin, target_dir, workspace_root};

use crate::cargo;
use crate::progress::Steps;
use crate::tools;
use env::{Env, Transport};
use live::{Live, LiveTool, Load};
use report::{ArchiveRow, RestoreRow, Results};
use runner::{Archiver, Restorer};

/// `cargo xtask bench` flags; every default depends on `--quick`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// CI's smoke test: 20 segments of 1 MiB, parallelism 4 only, a 5 s live run, base
    /// backups of a pgbench scale 2 database at --jobs 4 only; results go to
    /// `<target>/bench/quick.{md,json}`, not to bench/results/.
    #[arg(long)]
    quick: bool,
    /// Segments in the backlog [default: 200; quick 20].
    #[arg(long)]
    segments: Option<usize>,
    /// WAL segment size in MiB [default: 16; quick 1].
    #[arg(long)]
    segment_mib: Option<u32>,
    /// Compressions to compare, comma-separated [default: gzip,zstd; quick gzip].
    #[arg(long, value_delimiter = ',')]
    compression: Option<Vec<String>>,
    /// Parallelism levels, comma-separated [default: 1,4,8; quick 4].
    #[arg(long, value_delimiter = ',')]
    parallel: Option<Vec<usize>>,
    /// Seconds of pgbench in each live run [default: 60; quick 5]; 0 skips them.
    #[arg(long)]
    live_seconds: Option<u64>,
    /// Use the debug build of walship instead of building a release one.
    #[arg(long)]
    debug: bool,
    /// A note for the report (e.g. what else ran on the machine); repeatable.
    #[arg(long)]
    note: Vec<String>,
    /// Only the runs whose label contains this text (case-insensitive), e.g.
    /// `pgbackrest` or `daemon`: for working on one peer. The ceiling always runs.
    /// In the base backup section the text is matched against the compression and
    /// the label (`gzip walship backup`); a restore brings its backup along.
    #[arg(long)]
    only: Option<String>,
    /// Which section to run: `wal` (archive, restore and live runs of WAL),
    /// `backup` (base backups and their restores), or `all`.
    #[arg(long, value_enum, default_value_t = Section::All)]
    section: Section,
    /// `pgbench -i -s` scale of the base backup section's database [default: 100,
    /// about 1.5 GB; quick 2, about 55 MB]; 0 skips the section.
    #[arg(long)]
    backup_scale: Option<u32>,
    /// `walship backup --jobs` levels, comma-separated; the highest is also the
    /// peers' matched parallelism and restores', and barman-cloud's default (-J 2)
    /// runs when 2 is among them [default: 2,4; quick 4].
    #[arg(long, value_delimiter = ',')]
    backup_jobs: Option<Vec<usize>>,
}

/// The parts of the bench `--section` chooses from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    All,
    Wal,
    Backup,
}

/// What a run does, with the defaults resolved.
struct Plan {
    mode: &'static str,
    segments: usize,
    segment_mib: u32,
    compressions: Vec<String>,
    parallels: Vec<usize>,
    /// An extra daemon run for the RSS target (maxParallel 32), full mode only.
    rss_parallel: Option<usize>,
    live: Option<Load>,
    release: bool,
    notes: Vec<String>,
    only: Option<String>,
    /// Whether the WAL section runs.
    wal: bool,
    /// The base backup section, unless skipped.
    backup: Option<backup::Plan>,
    section: Section,
}

impl Plan {
    fn from(args: Args) -> Plan {
        let quick = args.quick;
        let segment_mib = args.segment_mib.unwrap_or(pick(quick, 1, 16));
        let live_seconds = args.live_seconds.unwrap_or(pick(quick, 5, 60));
        Plan {
            mode: pick(quick, "quick", "full"),
            segments: args.segments.unwrap_or(pick(quick, 20, 200)),
            segment_mib,
            compressions: args.compression.unwrap_or_else(|| {
                pick(
                    quick,
                    vec!["gzip".into()],
                    vec!["gzip".into(), "zstd".into()],
                )
            }),
            parallels: args
                .parallel
                .unwrap_or_else(|| pick(quick, vec![4], vec![1, 4, 8])),
            rss_parallel: pick(quick, None, Some(32)),
            live: (live_seconds > 0).then_some(Load {
                segment_mib,
                scale: pick(quick, 1, 20),
                seconds: live_seconds,
            }),
            release: !args.debug,
            notes: args.note,
            only: args.only.map(|o| o.to_lowercase()),
            wal: args.section != Section::Backup,
            backup: match (
                args.section,
                args.backup_scale.unwrap_or(pick(quick, 2, 100)),
            ) {
                (Section::Wal, _) | (_, 0) => None,
                (_, scale) => {
                    let jobs = args
                        .backup_jobs
                        .unwrap_or_else(|| pick(quick, vec![4], vec![2, 4]));
                    Some(backup::Plan {
                        scale,
                        restore_jobs: jobs.iter().copied().max().unwrap_or(4),
                        jobs,
                    })
                }
            },
            section: args.section,
        }
    }

    /// Whether the run labelled `label` is wanted (`--only`).
    fn wants(&self, label: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|only| label.to_lowercase().contains(only))
    }

    fn max_parallel(&self) -> usize {
        self.parallels.iter().copied().max().unwrap_or(1)
    }

    /// Every archive run for `compression`, peers side by side.
    fn archivers(&self, first_compression: bool) -> Vec<Archiver> {
        let mut out = Vec::new();
        for &n in &self.parallels {
            out.push(Archiver::Daemon(n, Transport::Tls));
        }
        if first_compression {
            out.push(Archiver::Daemon(self.max_parallel(), Transport::Plain));
            if let Some(n) = self.rss_parallel {
                out.push(Archiver::Daemon(n, Transport::Tls));
            }
        }
        out.push(Archiver::CnpgSidecar(self.max_parallel()));
        if self.max_parallel() > 1 {
            out.push(Archiver::PluginWay(self.max_parallel()));
        }
        out.push(Archiver::WalPush);
        out.push(Archiver::Barman(1));
        for &n in self.parallels.iter().filter(|&&n| n > 1) {
            out.push(Archiver::Barman(n));
        }
        for &n in &self.parallels {
            out.push(Archiver::PgBackRest(n));
        }
        out
    }

    /// The restores replayed from the archive `archiver` just wrote (first
    /// compression only): each tool restores what it archived.
    fn restorers_after(&self, archiver: Archiver) -> Vec<Restorer> {
        let max = self.max_parallel();
        match archiver {
            Archiver::Daemon(n, Transport::Tls) if n == max => {
                vec![Restorer::WalFetch, Restorer::DaemonPrefetch]
            }
            // Once per segment and at the highest parallelism: barman's restores are
            // the slowest runs of all, and the ones in between add little.
            Archiver::Barman(n) if n == max => {
                let mut out = vec![Restorer::Barman(1)];
                if max > 1 {
                    out.push(Restorer::Barman(max));
                }
                out
            }
            Archiver::PgBackRest(n) if n == max => vec![Restorer::PgBackRest(max)],
            _ => Vec::new(),
        }
    }
}

/// `quick_value` in quick mode, else `full_value`.
fn pick<T>(quick: bool, quick_value: T, full_value: T) -> T {
    if quick { quick_value } else { full_value }
}

/// Runs the benchmark; returns the exit code.
pub fn run(args: Args) -> Result<u8> {
    let plan = Plan::from(args);
    // Prerequisites, build, server and report; the WAL corpus, its runs and the live
    // runs; the base backups.
    let wal_steps = if plan.wal {
        2 + usize::from(plan.live.is_some())
    } else {
        0
    };
    let total = 4 + wal_steps + usize::from(plan.backup.is_some());
    let mut steps = Steps::new("bench", total);
    proc::become_subreaper()?;
    proc::stop_descendants_on_signal();

    // Everything a run needs is checked (and installed where it can be) before the
    // build and the first measurement, so a missing peer never ends a run midway.
    steps.step(
        "checking prerequisites: PostgreSQL 15, pgBackRest, stunnel, openssl, s3s-fs, barman-cloud",
    );
    let installed = tools::install_for_bench()?;
    let barman_live = match &plan.live {
        Some(_) if plan.wal && plan.wants(&LiveTool::Barman.label()) => {
            crate::tools::ensure_barman_for_pg()?
        }
        _ => None,
    };

    steps.step(&format!(
        "building walship ({})",
        if plan.release { "release" } else { "debug" }
    ));
    let (walship, build) = build_walship(plan.release)?;

    let mut results = Results {
        mode: plan.mode.into(),
        started: utc_now(),
        walship_build: build.into(),
        load_before: proc::load_average(),
        notes: plan.notes.clone(),
        wal: plan.wal,
        ..Results::default()
    };
    let corpus = if plan.wal {
        steps.step(&format!(
            "WAL: {} segments of {} MiB",
            plan.segments, plan.segment_mib
        ));
        wal::corpus(plan.segment_mib, plan.segments)?
    } else {
        wal::Corpus::none()
    };
    results.segments = corpus.names.len();
    results.segment_bytes = corpus.segment_bytes;
    steps.step("starting s3s-fs behind stunnel");
    let s3 = S3Server::start()?;
    let mut env = Env::new(
        s3,
        corpus,
        walship,
        &installed.barman_venv,
        installed.pgbackrest,
    )?;
    if plan.wal {
        let built = cargo::build_testkit_bin("cnpg-manager", plan.release)?;
        env.cnpg_manager = Some(walship_testkit::executable_by_pg(&built)?);
    }
    if env.pgbackrest.is_none() {
        results.notes.push(
            "pgBackRest is not installed: every pgBackRest run was skipped \
             (`apt-get install pgbackrest`)"
                .into(),
        );
    }

    if plan.wal {
        wal_runs(&plan, &env, &mut results, &mut steps, barman_live)?;
    }

    if let Some(backup_plan) = &plan.backup {
        proc::stop_if_interrupted();
        steps.step(&format!(
            "base backups and restores: pgbench -i -s {}, walship --jobs {}",
            backup_plan.scale,
            backup_plan
                .jobs
                .iter()
                .map(|j| j.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ));
        let section = backup::run(
            &env,
            backup_plan,
            &|label| plan.wants(label),
            &mut |what, e| failed(&mut results, what, e),
        );
        match section {
            Ok(section) => results.backup = Some(section),
            Err(e) => failed(&mut results, "the base backup section", e),
        }
    }

    proc::stop_if_interrupted();
    results.load_after = proc::load_average();
    if let Some(only) = &plan.only {
        results
            .notes
            .push(format!("only the runs matching {only:?}"));
    }
    steps.step("writing the report");
    let markdown = results.markdown();
    println!("\n{markdown}");
    write_results(&plan, &results, &markdown)?;
    steps.finish("the bench is done");
    Ok(if results.failures == 0 { 0 } else { 1 })
}

/// The WAL section: the ceiling, the floor, every archiver and restorer over the
/// backlog, then the live runs.
fn wal_runs(
    plan: &Plan,
    env: &Env,
    results: &mut Results,
    steps: &mut Steps,
    barman_live: Option<PathBuf>,
) -> Result<()> {
    steps.step("archive and restore runs: the ceiling, then each tool");
    for &threads in &plan.parallels {
        let run = env.run(&format!("ceiling {threads}"))?;
        let seconds = ceiling::ceiling(&run, threads)?;
        println!("bench: ceiling, {threads} threads: {seconds:.2}s");
        results.ceiling.push((threads, seconds));
    }

    let floor_run = env.run("floor")?;
    results.floor_latencies = runner::floor(&floor_run, plan.segments.min(100))?;

    for (i, compression) in plan.compressions.iter().enumerate() {
        for archiver in plan.archivers(i == 0) {
            proc::stop_if_interrupted();
            if !plan.wants(&archiver.label())
                || (matches!(archiver, Archiver::PgBackRest(_)) && env.pgbackrest.is_none())
            {
                continue;
            }
            let run = env.run(&archiver.label())?;
            let measured = match runner::archive(&run, archiver, compression) {
                Ok(measured) => measured,
                // One broken peer must not cost the whole run: say so in the report.
                Err(e) => {
                    failed(results, &format!("{} ({compression})", archiver.label()), e);
                    continue;
                }
            };
            println!(
                "bench: {} ({compression}): {:.2}s, {:.1} CPU-s",
                archiver.label(),
                measured.seconds,
                measured.cpu_seconds
            );
            results.archive.push(ArchiveRow {
                compression: compression.clone(),
                archiver,
                measured,
            });
            if i > 0 {
                continue;
            }
            for restorer in plan.restorers_after(archiver) {
                proc::stop_if_interrupted();
                let measured = match runner::restore(&run, restorer, compression) {
                    Ok(measured) => measured,
                    Err(e) => {
                        failed(results, &restorer.label(), e);
                        continue;
                    }
                };
                println!(
                    "bench: {} ({compression}): {:.2}s",
                    restorer.label(),
                    measured.seconds
                );
                results.restore.push(RestoreRow {
                    compression: compression.clone(),
                    restorer,
                    measured,
                });
            }
        }
    }

    // The ceiling is plain PUTs of the segments as they are: the like-for-like walship
    // run stores them uncompressed too, over plain HTTP like the PUT loop.
    proc::stop_if_interrupted();
    let uncompressed = Archiver::Daemon(plan.max_parallel(), Transport::Plain);
    if plan.wants(&uncompressed.label()) {
        let run = env.run(&format!("{} uncompressed", uncompressed.label()))?;
        match runner::archive(&run, uncompressed, "none") {
            Ok(measured) => {
                println!(
                    "bench: {} (none): {:.2}s, {:.1} CPU-s",
                    uncompressed.label(),
                    measured.seconds,
                    measured.cpu_seconds
                );
                results.archive.push(ArchiveRow {
                    compression: "none".into(),
                    archiver: uncompressed,
                    measured,
                });
            }
            Err(e) => failed(results, &format!("{} (none)", uncompressed.label()), e),
        }
    }

    if let Some(load) = &plan.live {
        let compression = &plan.compressions[0];
        let max = plan.max_parallel();
        steps.step(&format!(
            "live runs: pgbench for {} s per tool",
            load.seconds
        ));
        let mut tools = vec![
            LiveTool::WalPush,
            LiveTool::Daemon(max),
            LiveTool::CnpgSidecar(max),
        ];
        let barman_bin = barman_live;
        match &barman_bin {
            Some(_) => tools.push(LiveTool::Barman),
            None if plan.wants(&LiveTool::Barman.label()) => results.notes.push(format!(
                "barman-cloud skipped in the live run: the PostgreSQL user cannot run it from {}",
                env.barman_bin.display()
            )),
            None => {}
        }
        if env.pgbackrest.is_some() {
            tools.push(LiveTool::PgBackRest(max));
        }
        let barman_bin = barman_bin.unwrap_or_default();
        for tool in tools.into_iter().filter(|t| plan.wants(&t.label())) {
            proc::stop_if_interrupted();
            let live: Live = match live::live(env, tool, compression, load, &barman_bin) {
                Ok(live) => live,
                Err(e) => {
                    failed(results, &format!("live run, {}", tool.label()), e);
                    continue;
                }
            };
            println!(
                "bench: live, {}: peak .ready {}, oldest {:.1}s",
                tool.label(),
                live.peak_ready,
                live.oldest_ready_seconds
            );
            results.live.push((tool, live));
        }
    }

    Ok(())
}

/// Records a failed run in the report (and the exit code) and goes on.
fn failed(results: &mut Results, what: &str, error: anyhow::Error) {
    let text = format!("{error:#}");
    let first_line = text.lines().next().unwrap_or_default();
    eprintln!("bench: {what} FAILED: {text}");
    results.failures += 1;
    results.notes.push(format!("FAILED: {what}: {first_line}"));
}

/// The walship binary to measure: a release build unless `--debug`.
fn build_walship(release: bool) -> Result<(PathBuf, &'static str)> {
    let built = cargo::build_walship(release)?;
    // The test kit copies the binary where the PostgreSQL user can run it when the
    // target directory is out of its reach; it looks at WALSHIP_BIN.
    // SAFETY: no other thread runs yet (the bench starts its threads later).
    unsafe { std::env::set_var("WALSHIP_BIN", &built) };
    let profile = if release { "release" } else { "debug" };
    Ok((WalshipBin::for_pg()?, profile))
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Full runs: `bench/results/latest.{md,json}` plus a copy named by its start time
/// (`backup-latest` and `<time>-backup` for `--section backup`, likewise `wal`, so a
/// run of one section keeps the other's numbers); quick or partial (`--only`) runs:
/// `<target>/bench/<mode>.{md,json}` (CI must not overwrite the committed numbers).
fn write_results(plan: &Plan, results: &Results, markdown: &str) -> Result<()> {
    let json = serde_json::to_string_pretty(&results.json())? + "\n";
    let (dir, names): (PathBuf, Vec<String>) = if plan.mode == "quick" || plan.only.is_some() {
        (target_dir().join("bench"), vec![plan.mode.into()])
    } else {
        // `2026-11-26T0216Z`: two runs on one day keep both copies.
        let date = match (results.started.get(..13), results.started.get(14..16)) {
            (Some(hour), Some(minute)) => format!("{hour}{minute}Z"),
            _ => "undated".to_owned(),
        };
        let names = match plan.section {
            Section::All => vec!["latest".into(), date],
            Section::Wal => vec!["wal-latest".into(), format!("{date}-wal")],
            Section::Backup => vec!["backup-latest".into(), format!("{date}-backup")],
        };
        (workspace_root().join("bench/results"), names)
    };
    fs::create_dir_all(&dir)?;
    for name in names {
        write(&dir.join(format!("{name}.md")), markdown)?;
        write(&dir.join(format!("{name}.json")), &json)?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    println!("bench: wrote {}", path.display());
    Ok(())
}
