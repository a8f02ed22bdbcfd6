//! `cargo xtask demo`: walship's main job on a fresh machine, with no cloud at all.
//!
//! Builds walship, starts a throwaway PostgreSQL 15 cluster (1 MiB segments) whose
//! `archive_command` is `walship wal-push` into a `file://` store (walship's embedded
//! default), writes some WAL with pgbench, waits for PostgreSQL to report it archived,
//! restores one segment back with `walship wal-fetch`, and prints what was shipped.
//! Everything lives in temporary directories that are removed at the end.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use walship_testkit::{InitOptions, PgCluster, WalshipBin, make_readable_by_pg, pg_temp_dir};

use crate::cargo::{cargo, run_step_checked};

pub fn demo() -> Result<u8> {
    run_step_checked(cargo().args(["build", "--package", "walship", "--bins"]))?;
    let work = pg_temp_dir()?;
    let archive_dir = work.path().join("archive");
    fs::create_dir_all(&archive_dir)?;
    let manifest = work.path().join("objectstore.yaml");
    fs::write(
        &manifest,
        format!(
            "apiVersion: barmancloud.cnpg.io/v1\n\
             kind: ObjectStore\n\
             metadata:\n  name: demo-store\n\
             spec:\n  configuration:\n    destinationPath: file://{}\n\
             \x20   wal:\n      compression: zstd\n",
            archive_dir.display()
        ),
    )?;
    fs::create_dir_all(work.path().join("secrets"))?;
    make_readable_by_pg(work.path())?;

    let walship = WalshipBin::for_pg()?;
    let global = format!(
        "--config {} --secrets-dir {} --server-name demo",
        manifest.display(),
        work.path().join("secrets").display()
    );
    println!(
        "manifest ({}):\n{}",
        manifest.display(),
        fs::read_to_string(&manifest)?
    );

    let mut pg = PgCluster::init_temp(InitOptions {
        wal_segsize_mb: Some(1),
    })?;
    let archive_command = format!("{} {global} wal-push %p", walship.display());
    println!("archive_command = '{archive_command}'\n");
    pg.set_conf(&[
        ("archive_mode", "on"),
        ("archive_command", &archive_command),
    ])?;
    pg.start()?;
    pg.pgbench(&["-i", "-s", "2", "-q"])?;
    pg.pgbench(&["-c", "2", "-t", "200"])?;
    let last = pg.switch_wal()?;
    let stats = pg.wait_for_archived(&last, Duration::from_secs(120))?;
    pg.stop()?;
    if stats.failed_count > 0 {
        eprintln!("server log:\n{}", pg.log_contents());
        bail!("archive_command failed {} times", stats.failed_count);
    }
    println!(
        "PostgreSQL archived {} files (last {}), failed {}\n",
        stats.archived_count,
        stats.last_archived_wal.as_deref().unwrap_or("-"),
        stats.failed_count
    );

    let mut shipped = Vec::new();
    list_files(&archive_dir, &archive_dir, &mut shipped)?;
    shipped.sort();
    println!("shipped to {}:", archive_dir.display());
    let (mut total, mut count) = (0u64, 0usize);
    for (key, size) in &shipped {
        println!("  {key:<60} {size:>9} bytes");
        total += size;
        count += 1;
    }
    println!(
        "  {count} objects, {total} bytes (from {} MiB of WAL)\n",
        stats.archived_count
    );

    let restored = work.path().join("restored");
    let out = Command::new(WalshipBin::path()?)
        .args(global.split(' '))
        .args(["wal-fetch", &last])
        .arg(&restored)
        .output()
        .context("running walship wal-fetch")?;
    ensure!(
        out.status.success(),
        "wal-fetch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "walship wal-fetch {last} restored {} bytes",
        fs::metadata(&restored)?.len()
    );
    let out = Command::new(WalshipBin::path()?)
        .args(global.split(' '))
        .arg("check")
        .output()?;
    print!("walship check: {}", String::from_utf8_lossy(&out.stdout));
    Ok(0)
}

fn list_files(base: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(".walship") {
            continue;
        }
        if entry.file_type()?.is_dir() {
            list_files(base, &path, out)?;
        } else {
            let key = path.strip_prefix(base)?.display().to_string();
            out.push((key, entry.metadata()?.len()));
        }
    }
    Ok(())
}
