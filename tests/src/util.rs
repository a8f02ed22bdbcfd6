//! Small helpers shared by the server handles: ports, polling, random tokens and
//! running a command with its output in the error.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

/// A port on 127.0.0.1 that was free a moment ago: bound to port 0, read back, released.
///
/// Another process may take it before the caller binds it; the server handles
/// retry with a fresh port when their process fails to start.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Starts a server with `start(port)` on a [`free_port`], and on another one (three
/// tries in all) when it failed because something took the port meanwhile: its error
/// then says "address already in use", as Go's and Node's servers word it.
pub fn on_a_free_port<T>(mut start: impl FnMut(u16) -> Result<T>) -> Result<T> {
    let mut tries = 0;
    loop {
        tries += 1;
        match start(free_port()?) {
            Err(e) if tries < 3 && format!("{e:#}").contains("address already in use") => {}
            started => return started,
        }
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port` right now.
pub fn port_is_open(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Polls `check` until it returns `Ok(true)`, failing after `timeout` with a message
/// naming `what`. An `Err` from `check` ends the wait at once: it means the thing
/// waited for cannot happen any more (a process died, a query failed for good).
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if check().with_context(|| format!("while waiting for {what}"))? {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        // Back off gently so a slow start does not spin, but a fast one is seen quickly.
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A random token of `len` characters from `[0-9A-Z]`, for throwaway keys and names.
///
/// Built from the standard library's randomly seeded hasher mixed with the time,
/// the process id and a counter: unpredictable enough for test credentials, and
/// it saves a dependency.
pub fn random_token(len: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut hasher = RandomState::new().build_hasher();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        hasher.write_u128(nanos);
        hasher.write_u32(std::process::id());
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut bits = hasher.finish();
        // Each 64-bit hash yields ten characters (36^10 < 2^64 with room to spare).
        for _ in 0..10 {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[(bits % 36) as usize] as char);
            bits /= 36;
        }
    }
    out
}

/// Runs `cmd` to completion; on a non-zero exit the error carries the command line,
/// the exit status and both output streams.
pub(crate) fn run_checked(cmd: &mut Command) -> Result<Output> {
    let line = describe(cmd);
    let output = cmd
        .output()
        .with_context(|| format!("could not run `{line}`"))?;
    if !output.status.success() {
        bail!(
            "`{line}` failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim_end(),
            String::from_utf8_lossy(&output.stderr).trim_end(),
        );
    }
    Ok(output)
}

/// The command line of `cmd`, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// The last `lines` lines of `text`, for error messages that quote a log.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_whose_port_was_taken_meanwhile_is_started_on_another_three_times_at_most() {
        let taken = || anyhow::anyhow!("server exited: bind: address already in use");
        let mut ports = Vec::new();
        let started = on_a_free_port(|port| {
            ports.push(port);
            match ports.len() {
                1 => Err(taken()),
                _ => Ok(port),
            }
        })
        .unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(started, ports[1]);

        let mut tries = 0;
        let err = on_a_free_port(|_| -> Result<()> {
            tries += 1;
            Err(taken())
        })
        .unwrap_err();
        assert_eq!(tries, 3, "{err:#}");
        // Any other failure is not tried again.
        let mut tries = 0;
        on_a_free_port(|_| -> Result<()> {
            tries += 1;
            anyhow::bail!("no such program")
        })
        .unwrap_err();
        assert_eq!(tries, 1);
    }

    #[test]
    fn random_tokens_have_the_asked_length_and_differ() {
        for len in [0, 1, 9, 10, 11, 40] {
            let token = random_token(len);
            assert_eq!(token.len(), len);
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            );
        }
        assert_ne!(random_token(20), random_token(20));
    }

    #[test]
    fn wait_until_times_out_with_the_name_of_the_wait() {
        let err = wait_until(Duration::from_millis(50), "the moon", || Ok(false)).unwrap_err();
        assert!(err.to_string().contains("the moon"), "{err}");
    }

    #[test]
    fn wait_until_stops_at_the_first_error() {
        let mut calls = 0;
        let err = wait_until(Duration::from_secs(10), "x", || {
            calls += 1;
            bail!("gone")
        })
        .unwrap_err();
        assert_eq!(calls, 1);
        assert!(format!("{err:#}").contains("gone"));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
