//! `cargo xtask`: everything around walship that is not the product itself.
//!
//! Installing the tools the end-to-end tests drive, starting an S3 server for
//! manual use, running the test suite the way CI does, the demo and the
//! benchmarks live here, in Rust, rather than in shell scripts scattered
//! around the repository. `.ci/run` only installs system packages and then calls
//! `cargo xtask test`. This crate must never be a dependency of the product: it
//! drives walship from the outside, like a user or CI would.
//!
//! Dependencies, and why each is here:
//! - `walship-testkit`: the same server handles and tool lookups the tests use
//!   (`S3Server`, `tool_path`, `barman_venv`, `pg_bin_dir`, `target_dir`), so
//!   what `install-tools` installs is exactly what the tests then find.
//! - `anyhow`: every failure here ends the command with a message for a human;
//!   context on each step beats a typed error.
//! - `clap`: the subcommands and their flags, with generated `--help`.
//! - `serde_json`: the state file of `services up`, read back by `services down`
//!   and `services status` (and readable by other scripts), and the bench's raw
//!   results.
//! - `libc`: the bench's process accounting (`prctl` to become a child subreaper,
//!   `getrusage`/`waitpid` for the CPU time of every process a tool started), and
//!   `geteuid` to know whether system packages can be installed.
//! - `tempfile`: the bench's work directory, removed when the run ends.
//! - `tar`, `flate2`, `sha2`, `hex`, `chrono`: `cargo xtask image` writes the OCI
//!   image archive itself (no Docker daemon or registry can be had), so that every
//!   byte of it is chosen here and the same commit gives the same digest.

mod bench;
mod cargo;
mod dashboard;
mod demo;
mod image;
mod progress;
mod services;
mod system;
mod test;
mod tidy;
mod tools;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Development tasks for walship", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the end-to-end tests need (s3s-fs, the barman-cloud
    /// virtualenv, Azurite) unless present, and check that PostgreSQL 15 is installed.
    InstallTools,
    /// Start, stop or inspect local servers for manual use.
    Services {
        #[command(subcommand)]
        action: services::Action,
    },
    /// Install the tools, build the walship binary, then run
    /// `cargo test --workspace` with the extra arguments given after `--`.
    Test {
        /// Passed on to `cargo test` (e.g. `-- -p walship-wal -- --nocapture`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Formatting check, clippy with warnings as errors, and documentation that names
    /// only paths that exist (run by `.ci/run` before the tests).
    Tidy,
    /// Run walship's main job: a throwaway PostgreSQL archiving to a local store;
    /// keeps the archive in `<target>/demo/`.
    Demo,
    /// Compare walship with barman-cloud and pgBackRest on the same machine, store
    /// and WAL, and its base backups and restores with theirs and pg_basebackup's;
    /// prints ratios and writes bench/results/latest.{md,json}. Installs pgBackRest
    /// and stunnel with apt-get when root or sudo allows.
    Bench(bench::Args),
    /// Build walship's OCI image archive (release binary, `/manager` link, CA
    /// certificates, user 26:26) without Docker or a registry; prints its digest and size.
    Image(image::Args),
    /// Draw deploy/monitoring's Grafana dashboard from a five-minute run of walship
    /// scraped by a real Prometheus (load, a backup, an outage, restores), as
    /// deploy/monitoring/dashboard.png.
    Dashboard,
}

/// Held by the tests that start processes: the bench's meter waits for every new
/// child of the process, so it would reap a sibling test's child from under it.
#[cfg(test)]
static CHILD_PROCESSES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::InstallTools => tools::install().map(|_| 0),
        Command::Services { action } => services::run(action),
        Command::Test { cargo_args } => test::run(&cargo_args),
        Command::Tidy => tidy::run(),
        Command::Demo => demo::demo(),
        Command::Bench(args) => bench::run(args),
        Command::Image(args) => image::run(args),
        Command::Dashboard => dashboard::run(),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("cargo xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
