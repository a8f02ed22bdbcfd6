//! The WAL every tool ships: real segments from pgbench on PostgreSQL 15, made once
//! per segment size and kept under `<target>/bench/wal-<N>mib/` for later runs.
//!
//! The cluster that wrote them is kept too (stopped): pgBackRest checks each
//! segment's system identifier against the `pg_control` of its `pg1-path`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use walship_testkit::{InitOptions, PgCluster, make_readable_by_pg, target_dir};

/// Segments ready to ship.
pub struct Corpus {
    /// The directory holding the segment files.
    pub dir: PathBuf,
    /// The cluster's data directory (its `pg_control` goes into each stage for
    /// pgBackRest).
    pub pgdata: PathBuf,
    /// Segment names, oldest first.
    pub names: Vec<String>,
    /// Size of one segment in bytes.
    pub segment_bytes: u64,
}

impl Corpus {
    /// No WAL: for a run of the base backup section alone, which ships none.
    pub fn none() -> Corpus {
        Corpus {
            dir: PathBuf::new(),
            pgdata: PathBuf::new(),
            names: Vec::new(),
            segment_bytes: 0,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// At least `count` segments of `segment_mib` MiB: the cached ones when there are
/// enough, else a fresh cluster runs pgbench until it has archived that many.
pub fn corpus(segment_mib: u32, count: usize) -> Result<Corpus> {
    let base = target_dir().join(format!("bench/wal-{segment_mib}mib"));
    let archive = base.join("archive");
    let pgdata = base.join("cluster/data");
    let cached = segment_names(&archive).unwrap_or_default();
    let names = if cached.len() >= count && pgdata.join("global/pg_control").is_file() {
        println!(
            "bench: reusing {} cached {segment_mib} MiB segments in {}",
            cached.len(),
            archive.display()
        );
        cached
    } else {
        generate(&base, segment_mib, count)?
    };
    Ok(Corpus {
        dir: archive,
        pgdata,
        names: names.into_iter().take(count).collect(),
        segment_bytes: u64::from(segment_mib) << 20,
    })
}

fn generate(base: &Path, segment_mib: u32, count: usize) -> Result<Vec<String>> {
    println!("bench: generating {count} segments of {segment_mib} MiB with pgbench (once)");
    if base.exists() {
        fs::remove_dir_all(base).with_context(|| format!("removing {}", base.display()))?;
    }
    let archive = base.join("archive");
    fs::create_dir_all(&archive)?;
    // The PostgreSQL user writes the archive and must reach it through `base`.
    make_readable_by_pg(base)?;
    let mut pg = PgCluster::init(
        &base.join("cluster"),
        InitOptions {
            wal_segsize_mb: Some(segment_mib),
        },
    )?;
    pg.set_conf(&[
        ("archive_mode", "on"),
        (
            "archive_command",
            &format!("cp %p {}/%f", archive.display()),
        ),
        ("max_wal_size", "4GB"),
        ("checkpoint_timeout", "30s"),
    ])?;
    pg.start()?;
    // A data load (COPY, index builds) then TPC-B updates with full-page images
    // after each checkpoint: the mix a busy primary writes, so compression ratios
    // are realistic rather than best case.
    let scale = (count * segment_mib as usize / 48).clamp(1, 50).to_string();
    pg.pgbench(&["-i", "-q", "-s", &scale])?;
    let mut rounds = 0;
    while archived_or_ready(&pg, &archive)? < count + 1 {
        rounds += 1;
        if rounds > 200 {
            bail!("pgbench wrote too little WAL after {rounds} rounds");
        }
        pg.pgbench(&["-c", "4", "-j", "2", "-T", "5", "-N"])?;
    }
    let last = pg.switch_wal()?;
    pg.wait_for_archived(&last, Duration::from_secs(600))?;
    pg.stop()?;
    let names = segment_names(&archive)?;
    if names.len() < count {
        bail!(
            "only {} segments were archived; wanted {count}",
            names.len()
        );
    }
    Ok(names)
}

/// Segments archived so far plus those waiting for the archiver.
fn archived_or_ready(pg: &PgCluster, archive: &Path) -> Result<usize> {
    let ready = fs::read_dir(pg.data_dir().join("pg_wal/archive_status"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
        .count();
    Ok(segment_names(archive)?.len() + ready)
}

/// WAL segment names (24 hex digits) in `dir`, sorted.
fn segment_names(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    names.sort();
    Ok(names)
}
