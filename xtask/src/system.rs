//! Programs that come from the system's package manager (pgBackRest, stunnel,
//! openssl): found on `PATH`, else installed with `apt-get` when this process is root
//! or may use `sudo` without a password, else named with the exact command that
//! installs them, before the command that needs them has started any real work.

use std::process::Command;

use anyhow::{Result, bail};
use walship_testkit::tool_path;

use crate::cargo::run_step_checked;

/// A program some xtask command needs from a Debian/Ubuntu package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemTool {
    /// The names the program goes by; any one will do (`stunnel` or `stunnel4`).
    pub programs: &'static [&'static str],
    /// The Debian/Ubuntu package that provides it.
    pub package: &'static str,
    /// What it is for, in the message when it is missing.
    pub why: &'static str,
}

/// pgBackRest, one of the peers `cargo xtask bench` compares walship with.
pub const PGBACKREST: SystemTool = SystemTool {
    programs: &["pgbackrest"],
    package: "pgbackrest",
    why: "one of the peers the bench compares walship with",
};

/// The TLS front of the bench's S3 server (pgBackRest speaks S3 over HTTPS only).
pub const STUNNEL: SystemTool = SystemTool {
    programs: &["stunnel", "stunnel4"],
    package: "stunnel4",
    why: "the TLS front of the bench's S3 server (pgBackRest speaks S3 over HTTPS only)",
};

/// Makes the private CA and certificate of the TLS front.
pub const OPENSSL: SystemTool = SystemTool {
    programs: &["openssl"],
    package: "openssl",
    why: "makes the private CA of that TLS front",
};

/// What `cargo xtask bench` needs from the system besides PostgreSQL 15 (checked
/// with the test kit's other tools). [`PGBACKREST`] is asked for on its own: a peer
/// the bench skips when it cannot be had.
pub const BENCH: &[SystemTool] = &[STUNNEL, OPENSSL];

/// How this process could install a package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    /// Running as root: `apt-get` directly.
    Root,
    /// `sudo -n` works (no password asked).
    Sudo,
    /// Neither: a human has to run the command.
    None,
}

impl Privilege {
    /// The privilege of this process.
    pub fn current() -> Privilege {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return Privilege::Root;
        }
        let sudo_works = tool_path("sudo").is_ok()
            && Command::new("sudo")
                .args(["-n", "true"])
                .output()
                .is_ok_and(|o| o.status.success());
        if sudo_works {
            Privilege::Sudo
        } else {
            Privilege::None
        }
    }
}

/// The tools in `needs` for which `found` knows none of the program names.
pub fn missing(needs: &[SystemTool], found: impl Fn(&str) -> bool) -> Vec<SystemTool> {
    needs
        .iter()
        .filter(|need| !need.programs.iter().any(|p| found(p)))
        .copied()
        .collect()
}

/// The packages that provide `tools`, each once, in order.
fn packages(tools: &[SystemTool]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for tool in tools {
        if !out.contains(&tool.package) {
            out.push(tool.package);
        }
    }
    out
}

/// The command a human runs to install `packages`: with `sudo` unless already root.
pub fn install_hint(packages: &[&str], privilege: Privilege) -> String {
    let sudo = if privilege == Privilege::Root {
        ""
    } else {
        "sudo "
    };
    format!(
        "{sudo}apt-get update && {sudo}apt-get install -y {}",
        packages.join(" ")
    )
}

/// Why `task` cannot start: each missing program with its package and purpose,
/// then the command that installs them.
pub fn missing_message(task: &str, missing: &[SystemTool], privilege: Privilege) -> String {
    let mut text = "missing programs:".to_owned();
    for tool in missing {
        text.push_str(&format!(
            "\n  - {} (Debian/Ubuntu package `{}`): {}",
            tool.programs.join(" or "),
            tool.package,
            tool.why
        ));
    }
    text.push_str(&format!(
        "\n  install them, then run `{task}` again:\n      {}",
        install_hint(&packages(missing), privilege)
    ));
    text
}

/// Makes every tool in `needs` present for `task`: reports the ones found, installs
/// the missing ones with `apt-get` when root or password-less sudo allows, and
/// otherwise fails with [`missing_message`].
pub fn ensure(task: &str, needs: &[SystemTool]) -> Result<()> {
    let found = |program: &str| tool_path(program).is_ok();
    for need in needs {
        if let Some(path) = need.programs.iter().find_map(|p| tool_path(p).ok()) {
            println!("{}: found at {}", need.programs[0], path.display());
        }
    }
    let lacking = missing(needs, found);
    if lacking.is_empty() {
        return Ok(());
    }
    let privilege = Privilege::current();
    if privilege == Privilege::None || tool_path("apt-get").is_err() {
        let mut message = missing_message(task, &lacking, privilege);
        if tool_path("apt-get").is_err() {
            message.push_str(
                "\n(no apt-get here: install the same programs with this system's package manager)",
            );
        }
        bail!(message);
    }
    let packages = packages(&lacking);
    println!(
        "{task}: installing the Debian packages {} with apt-get",
        packages.join(", ")
    );
    let apt = |args: &[&str]| -> Command {
        let mut cmd = match privilege {
            Privilege::Root => Command::new("apt-get"),
            _ => {
                let mut sudo = Command::new("sudo");
                sudo.args(["-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
                sudo
            }
        };
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        cmd
    };
    let installed = run_step_checked(&mut apt(&["update", "-q"])).and_then(|()| {
        run_step_checked(apt(&["install", "-y", "-q", "--no-install-recommends"]).args(&packages))
    });
    if let Err(e) = installed {
        bail!("{e:#}\n{}", missing_message(task, &lacking, privilege));
    }
    let still = missing(needs, found);
    if !still.is_empty() {
        bail!(
            "apt-get succeeded but these are still not on PATH.\n{}",
            missing_message(task, &still, privilege)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_missing_when_every_tool_is_found() {
        assert!(missing(BENCH, |_| true).is_empty());
    }

    #[test]
    fn a_tool_is_missing_only_when_none_of_its_names_is_found() {
        // stunnel4 is Debian's name for the same program.
        let found = |p: &str| p == "stunnel4";
        assert_eq!(missing(BENCH, found), vec![OPENSSL]);
        assert_eq!(missing(BENCH, |_| false), BENCH.to_vec());
    }

    #[test]
    fn the_message_names_the_missing_program_its_package_and_the_command() {
        let text = missing_message("cargo xtask bench", &[PGBACKREST], Privilege::None);
        assert!(text.starts_with("missing programs:\n"), "{text}");
        assert!(
            text.contains(
                "\n  - pgbackrest (Debian/Ubuntu package `pgbackrest`): one of the peers"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "\n  install them, then run `cargo xtask bench` again:\n      \
                 sudo apt-get update && sudo apt-get install -y pgbackrest"
            ),
            "{text}"
        );
        assert!(!text.contains("stunnel"), "{text}");
    }

    #[test]
    fn the_message_lists_every_missing_tool_and_each_package_once() {
        let two_names = SystemTool {
            programs: &["stunnel"],
            package: "stunnel4",
            why: "again",
        };
        let text = missing_message("x", &[STUNNEL, two_names, OPENSSL], Privilege::Sudo);
        assert!(text.contains("- stunnel or stunnel4 (Debian/Ubuntu package `stunnel4`)"));
        assert!(text.contains("- openssl (Debian/Ubuntu package `openssl`)"));
        assert!(
            text.ends_with("sudo apt-get install -y stunnel4 openssl"),
            "{text}"
        );
    }

    #[test]
    fn root_is_told_the_command_without_sudo() {
        assert_eq!(
            install_hint(&["pgbackrest", "stunnel4"], Privilege::Root),
            "apt-get update && apt-get install -y pgbackrest stunnel4"
        );
    }

    #[test]
    fn ensure_is_quiet_about_tools_that_are_present() {
        // `sh` is on every machine the xtask runs on; nothing is installed.
        let sh = SystemTool {
            programs: &["walship-no-such-program", "sh"],
            package: "dash",
            why: "a shell",
        };
        ensure("test", &[sh]).unwrap();
    }
}
