//! Running cargo (and other commands) from xtask, with each step announced and timed.

use std::env;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use walship_testkit::{target_dir, workspace_root};

/// Crates a first `cargo build --package walship --bins` compiles into an empty
/// target directory: walship's normal and build dependencies as `cargo tree` lists
/// them, walship's own crates included (378 at the end of November 2026, after
/// CNPG-I's gRPC stack, tonic, prost and protox, added 58). A test holds the figure
/// against `cargo tree`, so it cannot drift far unnoticed.
pub const WALSHIP_CRATES: usize = 378;

/// How long that first debug build takes on 2 cores, in minutes. Measured on a
/// 2-core Debian 12 VM: 275 of the crates (the others were already built) in 16.4
/// minutes at `nice -n 15` while another build shared the machine (load 3 to 6); the
/// upper bound allows for the 58 crates CNPG-I added since (not measured afresh).
pub const FIRST_BUILD_MINUTES_2_CORES: &str = "15 to 25";

/// A `cargo` command run from the workspace root.
///
/// `$CARGO` is the cargo that runs xtask (the toolchain pinned in
/// `rust-toolchain.toml`), so nested builds use the same toolchain and lock files.
pub fn cargo() -> Command {
    let program = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs `cmd` with its output going to ours, announcing it and how long it took,
/// and returns its exit code (1 when it was killed by a signal).
pub fn run_step(cmd: &mut Command) -> Result<u8> {
    let line = describe(cmd);
    eprintln!("==> {line}");
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("could not run `{line}`"))?;
    eprintln!(
        "<== {line}: {status} after {:.1}s",
        start.elapsed().as_secs_f64()
    );
    Ok(status
        .code()
        .map(|c| u8::try_from(c).unwrap_or(1))
        .unwrap_or(1))
}

/// Like [`run_step`], but a non-zero exit is an error.
pub fn run_step_checked(cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    match run_step(cmd)? {
        0 => Ok(()),
        code => anyhow::bail!("`{line}` failed with exit code {code}"),
    }
}

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    let program = PathBuf::from(cmd.get_program());
    // `$CARGO` is a long toolchain path; "cargo" says the same to a reader.
    let mut line = match program.file_name() {
        Some(name) if name == "cargo" => "cargo".to_owned(),
        _ => program.display().to_string(),
    };
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Builds the `walship` binary (`release` or debug) and returns its path; says
/// first what a first build costs when there is no binary yet.
pub fn build_walship(release: bool) -> Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    let binary = target_dir().join(profile).join("walship");
    if let Some(notice) = first_build_notice(release, binary.exists()) {
        eprintln!("{notice}");
    }
    let mut build = cargo();
    build.args(["build", "--package", "walship", "--bins"]);
    if release {
        build.arg("--release");
    }
    run_step_checked(&mut build)?;
    Ok(binary)
}

/// Builds one of the test kit's own binaries (the fake CloudNativePG instance manager)
/// with the same profile as walship and returns its path.
pub fn build_testkit_bin(name: &str, release: bool) -> Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    let mut build = cargo();
    build.args(["build", "--package", "walship-testkit", "--bin", name]);
    if release {
        build.arg("--release");
    }
    run_step_checked(&mut build)?;
    Ok(target_dir().join(profile).join(name))
}

/// What to expect from building walship when it was never built in this target
/// directory; `None` once it was (cargo then rebuilds only what changed).
pub fn first_build_notice(release: bool, built_before: bool) -> Option<String> {
    if built_before {
        return None;
    }
    let cost = if release {
        format!(
            "a first release build compiles about {WALSHIP_CRATES} crates with optimisations, \
             longer than the {FIRST_BUILD_MINUTES_2_CORES} minutes of a debug build on 2 cores"
        )
    } else {
        format!(
            "a first build compiles about {WALSHIP_CRATES} crates, \
             roughly {FIRST_BUILD_MINUTES_2_CORES} minutes on 2 cores, longer on a busy machine"
        )
    };
    Some(format!(
        "walship is not built yet in {}: {cost}; cargo shows its progress below, \
         and later builds take seconds",
        target_dir().display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_notice_once_walship_was_built() {
        assert_eq!(first_build_notice(false, true), None);
        assert_eq!(first_build_notice(true, true), None);
    }

    #[test]
    fn a_first_build_is_announced_with_its_crates_and_minutes() {
        let text = first_build_notice(false, false).unwrap();
        assert!(
            text.contains(&format!("compiles about {WALSHIP_CRATES} crates")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{FIRST_BUILD_MINUTES_2_CORES} minutes on 2 cores")),
            "{text}"
        );
        let release = first_build_notice(true, false).unwrap();
        assert!(release.contains("release build"), "{release}");
    }

    /// `cargo tree` counts the packages the build compiles (normal and build
    /// dependencies, walship's own crates included); the stated figure must stay
    /// within a tenth of it.
    #[test]
    fn the_stated_crate_count_matches_cargo_tree() {
        let _alone = crate::CHILD_PROCESSES
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let output = cargo()
            .args([
                "tree",
                "--package",
                "walship",
                "--edges",
                "normal,build",
                "--prefix",
                "none",
                // CI sets CARGO_TERM_COLOR=always; coloured lines would not deduplicate.
                "--color",
                "never",
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "cargo tree: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        let mut packages: Vec<&str> = text
            .lines()
            .map(|l| l.trim_end_matches(" (*)"))
            .filter(|l| !l.is_empty())
            .collect();
        packages.sort_unstable();
        packages.dedup();
        let counted = packages.len();
        assert!(
            counted * 9 <= WALSHIP_CRATES * 10 && WALSHIP_CRATES * 9 <= counted * 10,
            "cargo tree counts {counted} packages; WALSHIP_CRATES says {WALSHIP_CRATES}"
        );
    }
}
