//! `cargo xtask demo`: walship's main job on a fresh machine, with no cloud at all.
//!
//! Checks for PostgreSQL 15, builds walship, starts a throwaway PostgreSQL 15 cluster
//! (1 MiB segments) whose `archive_command` is `walship wal-push` into a `file://`
//! store (walship's embedded default), writes some WAL with pgbench, waits for
//! PostgreSQL to report it archived, keeps the archive in `<target>/demo/`, restores
//! one segment from it with `walship wal-fetch`, and prints what was shipped, where
//! everything is and how to remove it. Each step is announced as it starts, with the
//! time since the demo began.
//!
//! The cluster runs in a temporary directory under `/tmp` (the PostgreSQL user must
//! be able to reach it, which a checkout under `/root` is not) and is removed at the
//! end; the archive is copied out of it before, owned by whoever ran the demo.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use walship_testkit::{
    InitOptions, PgCluster, WalshipBin, make_readable_by_pg, pg_temp_dir, target_dir,
};

use crate::cargo::build_walship;
use crate::progress::Steps;
use crate::tools;

/// The demo's steps, in order (each announced as it starts).
const STEPS: usize = 9;

pub fn demo() -> Result<u8> {
    let mut steps = Steps::new("demo", STEPS);

    // A missing PostgreSQL must show before a build of many minutes, not after it.
    steps.step("checking for PostgreSQL 15");
    tools::check_postgres()?;

    steps.step("building walship (debug)");
    let built = build_walship(false)?;
    // The binary the PostgreSQL user runs: the built one, or a copy it can reach.
    let walship = WalshipBin::for_pg()?;

    steps.step("initdb: a throwaway PostgreSQL 15 cluster with 1 MiB WAL segments");
    let work = pg_temp_dir()?;
    let store = Store::new(work.path())?;
    make_readable_by_pg(work.path())?;
    let mut pg = PgCluster::init_temp(InitOptions {
        wal_segsize_mb: Some(1),
    })?;
    let archive_command = format!(
        "{} {} wal-push %p",
        walship.display(),
        store.global_args().join(" ")
    );
    pg.set_conf(&[
        ("archive_mode", "on"),
        ("archive_command", &archive_command),
    ])?;

    steps.step("starting PostgreSQL, archive_command = walship wal-push");
    println!(
        "manifest ({}):\n{}",
        store.manifest.display(),
        fs::read_to_string(&store.manifest)?
    );
    println!("archive_command = '{archive_command}'\n");
    pg.start()?;

    steps.step("pgbench: writing WAL (pgbench -i -s 2, then 2 clients x 200 transactions)");
    pg.pgbench(&["-i", "-s", "2", "-q"])?;
    pg.pgbench(&["-c", "2", "-t", "200"])?;

    steps.step("waiting for PostgreSQL to archive every full segment through walship");
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

    let kept_dir = target_dir().join("demo");
    steps.step(&format!("keeping the archive in {}", kept_dir.display()));
    let kept = store.keep(&kept_dir)?;
    let mut shipped = Vec::new();
    list_files(&kept.archive, &kept.archive, &mut shipped)?;
    shipped.sort();
    println!("shipped to {}:", kept.archive.display());
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

    steps.step(&format!("restoring {last} with walship wal-fetch"));
    let restored = kept_dir.join("restored").join(&last);
    fs::create_dir_all(kept_dir.join("restored"))?;
    let out = Command::new(&built)
        .args(kept.global_args())
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
        "walship wal-fetch {last} restored {} bytes into {}",
        fs::metadata(&restored)?.len(),
        restored.display()
    );

    steps.step("walship check: the manifest parses and the archive can be listed");
    let out = Command::new(&built)
        .args(kept.global_args())
        .arg("check")
        .output()
        .context("running walship check")?;
    print!("walship check: {}", String::from_utf8_lossy(&out.stdout));
    ensure!(
        out.status.success(),
        "walship check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    steps.finish("the demo is done");
    print!("{}", kept_summary(&built, &kept, &last));
    Ok(0)
}

/// A `file://` store and the manifest and secrets directory walship reads it with.
struct Store {
    archive: PathBuf,
    manifest: PathBuf,
    secrets: PathBuf,
}

impl Store {
    /// `<dir>/archive`, `<dir>/objectstore.yaml` (zstd, as the README's example) and
    /// an empty `<dir>/secrets`: a `file://` store needs no credentials.
    fn new(dir: &Path) -> Result<Store> {
        let store = Store {
            archive: dir.join("archive"),
            manifest: dir.join("objectstore.yaml"),
            secrets: dir.join("secrets"),
        };
        fs::create_dir_all(&store.archive)
            .with_context(|| format!("creating {}", store.archive.display()))?;
        fs::create_dir_all(&store.secrets)?;
        fs::write(&store.manifest, manifest(&store.archive))
            .with_context(|| format!("writing {}", store.manifest.display()))?;
        Ok(store)
    }

    /// `--config … --secrets-dir … --server-name demo`, before every subcommand.
    fn global_args(&self) -> Vec<String> {
        vec![
            "--config".into(),
            self.manifest.display().to_string(),
            "--secrets-dir".into(),
            self.secrets.display().to_string(),
            "--server-name".into(),
            "demo".into(),
        ]
    }

    /// Copies the archive to `<dir>/archive` with a manifest pointing there, replacing
    /// what a previous demo left in `dir`.
    fn keep(&self, dir: &Path) -> Result<Store> {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let kept = Store::new(dir)?;
        copy_tree(&self.archive, &kept.archive)?;
        Ok(kept)
    }
}

/// The demo's manifest: an ObjectStore whose destination is the `file://` store at
/// `archive`, compressing WAL with zstd.
fn manifest(archive: &Path) -> String {
    format!(
        "apiVersion: barmancloud.cnpg.io/v1\n\
         kind: ObjectStore\n\
         metadata:\n  name: demo-store\n\
         spec:\n  configuration:\n    destinationPath: file://{}\n\
         \x20   wal:\n      compression: zstd\n",
        archive.display()
    )
}

/// The closing words: where the binary and the kept archive are, a command to try,
/// and how to remove them.
fn kept_summary(binary: &Path, kept: &Store, segment: &str) -> String {
    let dir = kept.archive.parent().unwrap_or(&kept.archive);
    format!(
        "\nkept:\n\
         \x20 the walship binary  {binary}\n\
         \x20 the archive         {archive}\n\
         \x20 its manifest        {manifest}\n\
         fetch a segment from it yourself:\n\
         \x20 {binary} {global} wal-fetch {segment} /tmp/{segment}\n\
         remove the demo's files (the binary stays until `cargo clean`):\n\
         \x20 rm -rf {dir}\n",
        binary = binary.display(),
        archive = kept.archive.display(),
        manifest = kept.manifest.display(),
        global = kept.global_args().join(" "),
        dir = dir.display(),
    )
}

/// Copies the files under `from` into `to` (created), keeping the layout; skips the
/// store's half-written temporary files.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(".walship-tmp-") {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type()?.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            fs::copy(&src, &dst)
                .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        }
    }
    Ok(())
}

/// The objects under `dir` (keys relative to `base`) with their sizes, leaving out
/// the store's own metadata and temporary files (`.walship-*`).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeping_copies_objects_and_metadata_and_replaces_a_previous_demo() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(&tmp.path().join("work")).unwrap();
        let wal = store.archive.join("demo/wals/0000000100000000");
        fs::create_dir_all(&wal).unwrap();
        fs::write(wal.join("000000010000000000000001.zst"), b"wal").unwrap();
        fs::create_dir_all(store.archive.join(".walship-meta")).unwrap();
        fs::write(store.archive.join(".walship-meta/x"), b"meta").unwrap();
        fs::write(store.archive.join(".walship-tmp-1"), b"half").unwrap();
        let kept_dir = tmp.path().join("demo");
        fs::create_dir_all(kept_dir.join("restored")).unwrap();
        fs::write(kept_dir.join("restored/old"), b"old").unwrap();

        let kept = store.keep(&kept_dir).unwrap();

        let mut objects = Vec::new();
        list_files(&kept.archive, &kept.archive, &mut objects).unwrap();
        assert_eq!(
            objects,
            vec![(
                "demo/wals/0000000100000000/000000010000000000000001.zst".to_owned(),
                3
            )]
        );
        assert!(kept.archive.join(".walship-meta/x").is_file());
        assert!(!kept.archive.join(".walship-tmp-1").exists());
        assert!(!kept_dir.join("restored/old").exists());
        let manifest = fs::read_to_string(&kept.manifest).unwrap();
        assert!(
            manifest.contains(&format!(
                "destinationPath: file://{}\n",
                kept.archive.display()
            )),
            "{manifest}"
        );
    }

    #[test]
    fn the_summary_says_where_the_binary_and_archive_are_and_how_to_remove_them() {
        let tmp = tempfile::tempdir().unwrap();
        let kept = Store::new(&tmp.path().join("demo")).unwrap();
        let text = kept_summary(
            Path::new("/t/debug/walship"),
            &kept,
            "000000010000000000000003",
        );
        assert!(
            text.contains("the walship binary  /t/debug/walship\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!("the archive         {}\n", kept.archive.display())),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "/t/debug/walship --config {} --secrets-dir {} --server-name demo \
                 wal-fetch 000000010000000000000003 /tmp/000000010000000000000003\n",
                kept.manifest.display(),
                kept.secrets.display()
            )),
            "{text}"
        );
        assert!(
            text.ends_with(&format!("rm -rf {}\n", tmp.path().join("demo").display())),
            "{text}"
        );
    }
}
