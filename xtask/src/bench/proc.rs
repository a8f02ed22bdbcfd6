//! What a run costs: CPU-seconds of every process it started (grandchildren
//! included), peak RSS of one process or of a command's whole process tree, and the
//! reaping that makes those honest.
//!
//! xtask makes itself a child subreaper, so a process that daemonizes (pgBackRest's
//! async worker, the postmaster behind `pg_ctl`) is re-parented to us instead of
//! init; [`Meter::cpu_seconds`] waits for every such newcomer, and the kernel then
//! adds its CPU time to our `RUSAGE_CHILDREN`. Times of processes still running
//! are not counted, so the caller stops what it started before asking.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Makes orphaned descendants our children (Linux `PR_SET_CHILD_SUBREAPER`).
pub fn become_subreaper() -> Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument and
    // touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        bail!(
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Wall time and CPU of everything started between [`Meter::start`] and the end.
pub struct Meter {
    start: Instant,
    cpu_before: f64,
    known: HashSet<u32>,
}

impl Meter {
    pub fn start() -> Result<Meter> {
        Ok(Meter {
            known: children()?,
            cpu_before: children_cpu_seconds(),
            start: Instant::now(),
        })
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// CPU-seconds (user + system) of every process started since [`Meter::start`],
    /// after waiting for the ones that were re-parented to us to exit.
    pub fn cpu_seconds(&self) -> Result<f64> {
        reap_newcomers(&self.known, true)?;
        Ok(children_cpu_seconds() - self.cpu_before)
    }
}

/// Pids whose parent is this process (from `/proc`).
pub fn children() -> Result<HashSet<u32>> {
    let me = std::process::id();
    let mut out = HashSet::new();
    for entry in fs::read_dir("/proc").context("reading /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between the listing and the read: skip it.
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if parent_of(&stat) == Some(me) {
            out.insert(pid);
        }
    }
    Ok(out)
}

/// The parent pid in a `/proc/<pid>/stat` line (the field after the state, which
/// follows the parenthesised command name that may itself hold spaces).
fn parent_of(stat: &str) -> Option<u32> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Waits for our children that are not in `known` (re-parented daemons, or a
/// postmaster left as a zombie); with `block` false only the ones already exited.
pub fn reap_newcomers(known: &HashSet<u32>, block: bool) -> Result<()> {
    for pid in children()?.difference(known) {
        let flags = if block { 0 } else { libc::WNOHANG };
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`, a local we own.
        unsafe { libc::waitpid(*pid as libc::pid_t, &mut status, flags) };
    }
    Ok(())
}

/// User + system CPU of all waited-for descendants so far.
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass; zeroed is a valid rusage.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Peak resident set size of a running process in KiB (`VmHWM`).
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmHWM in /proc/{pid}/status"))
}

/// What one command cost: wall time, CPU of every process it started, and the
/// peak memory of its process tree.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    pub seconds: f64,
    pub cpu_seconds: f64,
    /// The larger of the sampled peak of the tree's summed PSS (worker processes
    /// included) and the peak RSS of its largest single process (`wait4`'s
    /// `ru_maxrss`, exact even for a peak between two samples).
    pub peak_rss_kib: u64,
}

/// Runs `cmd` to its end, measuring it (see [`Cost`]); its output goes to `log`,
/// whose tail a failure quotes.
pub fn run_measured(cmd: &mut Command, log: &Path) -> Result<Cost> {
    let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let meter = Meter::start()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", crate::cargo::describe(cmd)))?;
    let pid = child.id();
    let done = AtomicBool::new(false);
    let (seconds, sampled, status, maxrss) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut peak = 0;
            while !done.load(Ordering::SeqCst) {
                peak = peak.max(tree_memory_kib(pid));
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        let mut status = 0;
        // SAFETY: wait4 writes only into `status` and `usage`, locals we own; the
        // child is ours and is reaped here (the `Child` handle is never waited on).
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage);
            usage
        };
        // Before joining the sampler, which may be in the middle of a pause.
        let seconds = meter.elapsed().as_secs_f64();
        done.store(true, Ordering::SeqCst);
        let sampled = sampler.join().unwrap_or(0);
        (seconds, sampled, status, usage.ru_maxrss.max(0) as u64)
    });
    drop(child);
    let cpu_seconds = meter.cpu_seconds()?;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let text = fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        bail!(
            "`{}` failed (wait status {status:#x}): {}",
            crate::cargo::describe(cmd),
            lines[lines.len().saturating_sub(15)..].join("\n")
        );
    }
    Ok(Cost {
        seconds,
        cpu_seconds,
        peak_rss_kib: sampled.max(maxrss),
    })
}

/// The summed memory of `root` and its live descendants in KiB: each one's PSS
/// (shared pages split among their sharers, so forked workers are not counted
/// twice), or its RSS where the kernel offers no `smaps_rollup`.
fn tree_memory_kib(root: u32) -> u64 {
    let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, parent) in processes() {
        parents.entry(parent).or_default().push(pid);
    }
    let mut total = 0;
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        total += process_memory_kib(pid);
        todo.extend(parents.get(&pid).into_iter().flatten());
    }
    total
}

fn process_memory_kib(pid: u32) -> u64 {
    let field = |file: &str, name: &str| -> Option<u64> {
        let text = fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    field("smaps_rollup", "Pss:")
        .or_else(|| field("status", "VmRSS:"))
        .unwrap_or(0)
}

/// (pid, parent pid) of every live process.
fn processes() -> Vec<(u32, u32)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parent_of(&stat)?))
        })
        .collect()
}

/// The 1-minute load average, for the caveat printed with the results.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The signal that interrupted the bench (0: none yet).
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn record_signal(signal: libc::c_int) {
    // Only an atomic store: the one thing a signal handler may safely do here.
    INTERRUPTED.store(signal, Ordering::SeqCst);
}

/// On Ctrl-C, SIGTERM or SIGHUP, stops every process the bench started (servers,
/// PostgreSQL, the tools under test: all are our descendants, see
/// [`become_subreaper`]) and exits, instead of leaving them running. The handler
/// only records the signal; a watcher thread does the rest. exec resets handled
/// signals, so the children keep their default reactions.
pub fn stop_descendants_on_signal() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let handler = record_signal as extern "C" fn(libc::c_int);
        // SAFETY: installs a handler that performs one atomic store.
        unsafe { libc::signal(signal, handler as libc::sighandler_t) };
    }
    std::thread::spawn(|| {
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let signal = INTERRUPTED.load(Ordering::SeqCst);
            if signal == 0 {
                continue;
            }
            eprintln!("bench: interrupted; stopping every process it started");
            // SIGINT first: PostgreSQL shuts down fast, servers and tools exit. Again
            // and again: the main thread may start the next run meanwhile.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !descendants().is_empty() && Instant::now() < deadline {
                signal_descendants(libc::SIGINT);
                std::thread::sleep(Duration::from_millis(200));
                reap_newcomers(&HashSet::new(), false).ok();
            }
            signal_descendants(libc::SIGKILL);
            std::process::exit(128 + signal);
        }
    });
}

/// After an interrupt, parks the calling thread until the watcher of
/// [`stop_descendants_on_signal`] has stopped everything and exited: no further run
/// starts, and no partial result is written.
pub fn stop_if_interrupted() {
    while INTERRUPTED.load(Ordering::SeqCst) != 0 {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn signal_descendants(signal: libc::c_int) {
    for pid in descendants() {
        // SAFETY: kill only sends a signal.
        unsafe { libc::kill(pid as libc::pid_t, signal) };
    }
}

/// Every live (not zombie) process below this one.
fn descendants() -> Vec<u32> {
    let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let zombie = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            == Some("Z");
        if let Some(parent) = parent_of(&stat)
            && !zombie
        {
            parents.entry(parent).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![std::process::id()];
    while let Some(pid) = todo.pop() {
        for &child in parents.get(&pid).into_iter().flatten() {
            out.push(child);
            todo.push(child);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_after_a_command_name_with_spaces() {
        assert_eq!(parent_of("42 (a b) c) S 7 42 42 0"), Some(7));
        assert_eq!(parent_of("1 (init) S 0 1 1"), Some(0));
    }

    #[test]
    fn a_measured_command_reports_its_cpu_and_memory_and_a_failure_its_output() {
        let _alone = crate::CHILD_PROCESSES
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("out.log");
        let cost = run_measured(
            Command::new("sh").args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"]),
            &log,
        )
        .unwrap();
        assert!(cost.cpu_seconds > 0.0, "{cost:?}");
        assert!(cost.peak_rss_kib > 0, "{cost:?}");
        assert!(cost.seconds > 0.0, "{cost:?}");
        let err = run_measured(
            Command::new("sh").args(["-c", "echo the reason >&2; exit 3"]),
            &log,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("the reason"), "{err:#}");
    }

    #[test]
    fn cpu_of_a_finished_child_is_counted() {
        let _alone = crate::CHILD_PROCESSES
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let meter = Meter::start().unwrap();
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(meter.cpu_seconds().unwrap() > 0.0);
    }
}
