//! Hostile and careless input: no panic on any of it, the exit statuses of PostgreSQL's
//! contracts whatever goes wrong (usage errors and internal errors included), bounded
//! waits on a store that never answers, and nothing secret in any output at any log
//! level.

mod common;

use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;
use common::{Archive, assert_no_secret, real_segments, stderr};
use walship_testkit::{SilentServer, WalshipBin, pg_temp_dir};

/// A PEM block whose base64 is invalid (and whose valid prefix decodes to "SECRET"): the
/// AWS SDK's trust store panicked on it.
const BAD_PEM: &str =
    "-----BEGIN CERTIFICATE-----\nU0VDUkVU!!!garbage\n-----END CERTIFICATE-----\n";

fn with_endpoint_ca(manifest: &str) -> String {
    manifest.replace(
        "    s3Credentials:",
        "    endpointCA:\n      name: minio-ca\n      key: ca.crt\n    s3Credentials:",
    )
}

#[test]
fn a_ca_bundle_that_does_not_parse_is_bad_configuration_for_every_command_never_a_panic()
-> Result<()> {
    let archive = Archive::start(None)?;
    let (wal_dir, segments) = real_segments(1)?;
    let src = wal_dir.path().join(&segments[0]);
    archive.write_manifest(&with_endpoint_ca(&archive.manifest()))?;
    let dest = pg_temp_dir()?;
    let dest = dest.path().join("x");
    for pem in [
        BAD_PEM,
        "-----BEGIN CERTIFICATE-----\nU0VDUkVU\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nU0VDUkVU\n",
        "no certificate at all",
    ] {
        archive.write_secret("minio-ca", "ca.crt", pem)?;
        for (args, expected) in [
            (vec!["check"], 2),
            (vec!["wal-push", src.to_str().unwrap()], 2),
            (vec!["wal-fetch", &segments[0], dest.to_str().unwrap()], 126),
        ] {
            let out = archive.walship(&args)?;
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(expected), "{args:?} {pem:?}: {err}");
            assert!(err.contains("spec.configuration.endpointCA"), "{err}");
            assert!(!err.contains("panicked"), "{err}");
            assert!(!err.contains("U0VDUkVU"), "the bundle was quoted: {err}");
        }
    }
    assert!(archive.keys()?.is_empty());
    Ok(())
}

#[test]
fn a_panic_anywhere_ends_with_the_commands_contract_status_never_101() -> Result<()> {
    let archive = Archive::start(None)?;
    let dir = pg_temp_dir()?;
    let dest = dir.path().join("x");
    for (args, expected) in [
        (vec!["wal-push", "000000010000000000000001"], 1),
        (
            vec![
                "wal-fetch",
                "000000010000000000000001",
                dest.to_str().unwrap(),
            ],
            126,
        ),
        (vec!["check"], 1),
        (vec!["daemon", "--pgdata", dir.path().to_str().unwrap()], 1),
    ] {
        let out = Command::new(WalshipBin::path()?)
            .args(archive.global_args())
            .args(&args)
            .env("WALSHIP_INJECT_PANIC", "1")
            .output()?;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(expected), "{args:?}: {err}");
        assert!(err.contains("internal error"), "{err}");
        assert!(err.contains("injected by WALSHIP_INJECT_PANIC"), "{err}");
    }
    Ok(())
}

#[test]
fn usage_errors_exit_with_the_commands_contract_status_and_help_shows_examples() -> Result<()> {
    let walship = |args: &[&str]| -> Result<Output> {
        Ok(Command::new(WalshipBin::path()?).args(args).output()?)
    };
    for (args, expected) in [
        // restore_command with its arguments missing must stop recovery, not say
        // "not found" (clap's own status, 2, would read as that).
        (vec!["wal-fetch"], 126),
        (vec!["wal-fetch", "000000010000000000000001"], 126),
        (vec!["wal-fetch", "--retry-seconds", "x", "a", "b"], 126),
        (vec!["wal-push"], 2),
        (vec!["wal-push", "--timeout-seconds", "0", "f"], 2),
        (vec!["check", "--no-such-flag"], 2),
        (vec!["daemon"], 2),
        (vec!["no-such-command"], 2),
        (vec!["--log-level", "verbose", "check"], 2),
        (vec!["--log-level", "verbose", "wal-fetch", "a", "b"], 126),
    ] {
        let out = walship(&args)?;
        assert_eq!(
            out.status.code(),
            Some(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = walship(&["--log-level", "verbose", "check"])?;
    assert!(
        stderr(&out).contains("\"verbose\" is not a level"),
        "{}",
        stderr(&out)
    );

    for (command, example) in [
        ("wal-push", "archive_command = '"),
        ("wal-fetch", "restore_command = '"),
        ("daemon", "daemon --pgdata"),
        ("check", "check --expect-empty"),
    ] {
        let out = walship(&[command, "--help"])?;
        assert_eq!(out.status.code(), Some(0));
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains(example), "{command}: {help}");
        assert!(help.contains("--config"), "{command}: {help}");
        assert!(help.contains("Exit status"), "{command}: {help}");
        assert!(help.contains("Global options:"), "{command}: {help}");
    }
    let help = walship(&["daemon", "--help"])?;
    let help = String::from_utf8_lossy(&help.stdout);
    let (own, rest) = help.split_once("Global options:").unwrap();
    let global = rest.split("Example").next().unwrap_or_default();
    assert!(
        own.contains("--journal-dir") && !own.contains("--secrets-dir"),
        "{help}"
    );
    assert!(
        global.contains("--secrets-dir") && !global.contains("--journal-dir"),
        "{help}"
    );
    Ok(())
}

#[test]
fn errors_are_printed_once_without_colour_escapes_when_stderr_is_not_a_terminal() -> Result<()> {
    let mut archive = Archive::start(None)?;
    let (wal_dir, segments) = real_segments(1)?;
    archive.s3.stop();
    let src = wal_dir.path().join(&segments[0]);
    for args in [vec!["wal-push", src.to_str().unwrap()], vec!["check"]] {
        let out = archive.walship(&args)?;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(!err.contains('\u{1b}'), "escape codes in: {err:?}");
        assert_eq!(
            err.matches("cannot reach the store").count(),
            1,
            "{args:?}: the error should be printed once: {err}"
        );
    }
    Ok(())
}

#[test]
fn a_fifo_or_a_directory_as_percent_p_is_refused_without_blocking() -> Result<()> {
    let archive = Archive::start(None)?;
    let dir = pg_temp_dir()?;
    let fifo = dir.path().join("000000010000000000000001");
    let status = Command::new("mkfifo").arg(&fifo).status()?;
    assert!(status.success());
    let directory = dir.path().join("000000010000000000000002");
    fs::create_dir(&directory)?;
    for (path, kind) in [(&fifo, "FIFO"), (&directory, "directory")] {
        // Before the fix, opening the FIFO blocked until a writer came: a watchdog ends
        // a hung run so the test fails instead of hanging.
        let out = run_with_watchdog(
            Command::new(WalshipBin::path()?)
                .args(archive.global_args())
                .args(["wal-push", path.to_str().unwrap()]),
            Duration::from_secs(60),
        )?;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(kind) && err.contains("not a regular file"),
            "{err}"
        );
    }
    assert!(archive.keys()?.is_empty());
    Ok(())
}

#[test]
fn a_history_file_that_does_not_parse_is_not_archived() -> Result<()> {
    let archive = Archive::start(Some("gzip"))?;
    let dir = pg_temp_dir()?;
    let history = dir.path().join("00000002.history");
    fs::write(&history, "this is not a timeline history\n\u{0}\u{1}")?;
    walship_testkit::make_readable_by_pg(dir.path())?;
    let out = archive.walship(&["wal-push", history.to_str().unwrap()])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not a timeline history file"), "{err}");
    assert!(archive.keys()?.is_empty());

    fs::write(&history, "1\t0/3000000\tno recovery target specified\n")?;
    let out = archive.walship(&["wal-push", history.to_str().unwrap()])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(archive.keys()?.len(), 1);
    Ok(())
}

/// Runs `cmd`, killing it after `limit` (a hang fails the assertions that follow instead
/// of hanging the suite).
fn run_with_watchdog(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > limit {
            child.kill()?;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child.wait_with_output()?)
}

/// Runs walship against a silent store and returns its output and how long it took.
fn against_silent_store(
    global: &[String],
    env: &[(&str, String)],
    args: &[&str],
) -> Result<(Output, Duration)> {
    let started = Instant::now();
    let out = run_with_watchdog(
        Command::new(WalshipBin::path()?)
            .args(global)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY"),
        Duration::from_secs(150),
    )?;
    Ok((out, started.elapsed()))
}

/// Every command against a store that accepts connections and never answers, on each
/// cloud: each gives up by itself with its contract's status, within its budget plus
/// one request's deadline (liveness bounds, not speed: the budgets are 5 s and 3 s and
/// the bound is ten times that; before the fix these took minutes).
#[test]
fn a_store_that_never_answers_is_given_up_within_each_commands_budget() -> Result<()> {
    let silent = SilentServer::start()?;
    let dir = pg_temp_dir()?;
    let (wal_dir, segments) = real_segments(1)?;
    let src = wal_dir.path().join(&segments[0]);
    let secrets = dir.path().join("secrets");
    let write = |path: &str, value: &str| -> Result<()> {
        let p = secrets.join(path);
        fs::create_dir_all(p.parent().unwrap())?;
        fs::write(p, value)?;
        Ok(())
    };
    write("creds/ACCESS_KEY_ID", "AKIAEXAMPLE")?;
    write("creds/ACCESS_SECRET_KEY", "secret-key-example-0123456789")?;
    write("creds/AZURE_STORAGE_ACCOUNT", "devstoreaccount1")?;
    write("creds/AZURE_STORAGE_KEY", "c2VjcmV0LWtleQ==")?;
    let s3 = format!(
        "    destinationPath: s3://bucket/prefix\n    endpointURL: {}\n    s3Credentials:\n\
         \x20     accessKeyId:\n        name: creds\n        key: ACCESS_KEY_ID\n\
         \x20     secretAccessKey:\n        name: creds\n        key: ACCESS_SECRET_KEY\n",
        silent.endpoint()
    );
    let azure = format!(
        "    destinationPath: {}/devstoreaccount1/container/prefix\n    azureCredentials:\n\
         \x20     storageAccount:\n        name: creds\n        key: AZURE_STORAGE_ACCOUNT\n\
         \x20     storageKey:\n        name: creds\n        key: AZURE_STORAGE_KEY\n",
        silent.endpoint()
    );
    let gcs = format!(
        "    destinationPath: gs://bucket/prefix\n    endpointURL: {}\n    googleCredentials:\n\
         \x20     gkeEnvironment: true\n",
        silent.endpoint()
    );
    let metadata = vec![("GCE_METADATA_HOST", format!("127.0.0.1:{}", silent.port()))];
    for (cloud, spec, env) in [
        ("s3", s3, vec![]),
        ("azure", azure, vec![]),
        ("gcs", gcs, metadata),
    ] {
        let config = dir.path().join(format!("{cloud}.yaml"));
        fs::write(
            &config,
            format!(
                "apiVersion: barmancloud.cnpg.io/v1\nkind: ObjectStore\nmetadata:\n  name: s\n\
                 spec:\n  configuration:\n{spec}"
            ),
        )?;
        let global = vec![
            "--config".to_owned(),
            config.display().to_string(),
            "--secrets-dir".to_owned(),
            secrets.display().to_string(),
            "--socket".to_owned(),
            dir.path().join("no-daemon.sock").display().to_string(),
        ];
        let dest = dir.path().join(format!("{cloud}-restored"));
        for (args, expected, budget) in [
            (vec!["check", "--timeout-seconds", "5"], 1, 5),
            (
                vec!["wal-push", "--timeout-seconds", "5", src.to_str().unwrap()],
                1,
                5,
            ),
            (
                vec![
                    "wal-fetch",
                    "--retry-seconds",
                    "3",
                    &segments[0],
                    dest.to_str().unwrap(),
                ],
                126,
                3,
            ),
        ] {
            let (out, took) = against_silent_store(&global, &env, &args)?;
            let err = stderr(&out);
            assert_eq!(
                out.status.code(),
                Some(expected),
                "{cloud} {args:?} ({took:?}): {err}"
            );
            assert!(
                took < Duration::from_secs(budget * 10),
                "{cloud} {args:?} ran {took:?} on a budget of {budget} s: {err}"
            );
            assert!(!dest.exists(), "{cloud}: something was restored");
        }
    }
    Ok(())
}

/// Every command at trace level, the SDK's request logs included, with the static keys
/// of an S3 endpoint: no key and no request signature reaches the output.
#[test]
fn no_secret_reaches_the_output_of_any_command_at_trace_level_with_s3_keys() -> Result<()> {
    let archive = Archive::start(Some("gzip"))?;
    let (wal_dir, segments) = real_segments(1)?;
    let src = wal_dir.path().join(&segments[0]);
    let secret = archive.s3.secret_key().to_owned();
    common::trace_every_command(
        "S3 keys",
        &|args| archive.walship(args),
        &src,
        &segments[0],
        &[&secret],
    )?;
    // A missing segment takes another path through the SDK and the archiver.
    let dest = pg_temp_dir()?;
    let out = archive.walship(&[
        "--log-level",
        "trace",
        "wal-fetch",
        "0000000100000000000000FE",
        dest.path().join("x").to_str().unwrap(),
    ])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_no_secret("a missing segment", &stderr(&out), &[&secret]);
    // WALSHIP_LOG reaches the same filter.
    let out = Command::new(WalshipBin::path()?)
        .args(archive.global_args())
        .args(["check"])
        .env("WALSHIP_LOG", "trace")
        .output()?;
    let all = stderr(&out);
    assert!(all.contains("TRACE"), "{all}");
    assert_no_secret("WALSHIP_LOG=trace check", &all, &[&secret]);
    Ok(())
}

/// A read stuck in the kernel (a hung filesystem under pg_wal) cannot be cancelled; a
/// SIGTERM must still end wal-push with status 1 at once, not wait for the read. The
/// stuck read is a blocking task that never returns (WALSHIP_INJECT_STUCK_READ, debug
/// builds only): before the fix the runtime waited for it on the way out, forever.
#[test]
fn a_terminated_wal_push_exits_1_even_while_a_read_is_stuck() -> Result<()> {
    let archive = Archive::start(None)?;
    let (wal_dir, segments) = real_segments(1)?;
    let mut child = Command::new(WalshipBin::path()?)
        .args(archive.global_args())
        .args([
            "wal-push",
            wal_dir.path().join(&segments[0]).to_str().unwrap(),
        ])
        .env("WALSHIP_INJECT_STUCK_READ", "1")
        .stderr(Stdio::piped())
        .spawn()?;
    // Let it start (its signal handlers installed) and get stuck; nothing can finish
    // meanwhile.
    std::thread::sleep(Duration::from_secs(3));
    assert!(child.try_wait()?.is_none(), "wal-push ended by itself");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    let started = Instant::now();
    while child.try_wait()?.is_none() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait()?.is_none() {
        child.kill()?;
    }
    let out = child.wait_with_output()?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{:?}: {err}", out.status);
    assert!(err.contains("interrupted by a signal"), "{err}");
    assert!(archive.keys()?.is_empty());
    Ok(())
}
