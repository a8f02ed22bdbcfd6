//! Azure Blob Storage through Azurite, with the seed's manifests: PostgreSQL archives
//! with `wal-push` and recovers to a point in time with `wal-fetch`, once per credential
//! method (connection string, account key, SAS token); the daemon archives to Azure;
//! barman-cloud reads what walship wrote and walship reads what barman-cloud wrote; and
//! bad input (wrong key, expired SAS, missing container, malformed URL) fails clearly
//! without printing a secret.

mod common;

use std::fs;
use std::time::{Duration, SystemTime};

use anyhow::{Result, ensure};
use common::azure::{
    AzureArchive, AzureCredential, CONTAINER, ENDPOINT_CA, WorkloadIdentity, rotate,
};
use common::daemon::{DaemonProcess, assert_all_archived_identical, setup_for};
use common::{
    ArchiveHarness, PREFIX, SERVER, assert_changed_copy_refused,
    assert_walship_restores_what_barman_archived, real_segments, sha256_file, stderr,
};
use walship_testkit::{AZURITE_KEY, AzuriteOptions, AzuriteServer, pg_temp_dir};

/// `wal-fetch` retries a failing store for a minute by default (credentials may be
/// rotating); the bad-input tests want the final answer at once.
fn no_fetch_retries() -> (&'static str, String) {
    ("WALSHIP_FETCH_RETRY_SECONDS", "0".to_owned())
}

#[test]
fn pitr_with_a_connection_string() -> Result<()> {
    let archive = AzureArchive::start(AzureCredential::ConnectionString)?;
    common::pitr::recovers_to_a_target_time(&archive)
}

#[test]
fn a_base_backup_restores_and_recovers_to_a_target_time_on_azure() -> Result<()> {
    let archive = AzureArchive::start(AzureCredential::SharedKey)?;
    common::pitr::backs_up_restores_and_recovers_to_a_target_time(&archive)
}

#[test]
fn pitr_with_an_account_key() -> Result<()> {
    let archive = AzureArchive::start(AzureCredential::SharedKey)?;
    common::pitr::recovers_to_a_target_time(&archive)
}

#[test]
fn pitr_with_a_sas_token() -> Result<()> {
    let archive = AzureArchive::start(AzureCredential::Sas)?;
    common::pitr::recovers_to_a_target_time(&archive)
}

#[test]
fn the_daemon_archives_to_azure_byte_identical() -> Result<()> {
    let archive = AzureArchive::shared_key("zstd")?;
    common::daemon::ships_every_segment_and_wal_push_only_asks_it(&archive)
}

#[test]
fn barman_cloud_restores_what_walship_archived_to_azure() -> Result<()> {
    let archive = AzureArchive::start(AzureCredential::ConnectionString)?;
    let (wal_dir, segments) = real_segments(2)?;
    let out_dir = pg_temp_dir()?;
    for name in &segments {
        let src = wal_dir.path().join(name);
        let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
        ensure!(out.status.success(), "{}", stderr(&out));
        let dest = out_dir.path().join(name);
        let out = archive
            .barman("barman-cloud-wal-restore")?
            .arg(archive.destination())
            .arg(SERVER)
            .arg(name)
            .arg(&dest)
            .output()?;
        ensure!(
            out.status.success(),
            "barman-cloud-wal-restore: {}",
            stderr(&out)
        );
        assert_eq!(sha256_file(&dest)?, sha256_file(&src)?, "{name}");
    }
    Ok(())
}

#[test]
fn walship_restores_what_barman_cloud_archived_to_azure() -> Result<()> {
    let archive = AzureArchive::start(AzureCredential::ConnectionString)?;
    let (wal_dir, segments) = real_segments(2)?;
    assert_walship_restores_what_barman_archived(
        |tool| archive.barman(tool),
        |args| archive.walship(args),
        &archive.destination(),
        SERVER,
        wal_dir.path(),
        &segments,
        &["--gzip", "--zstd"],
    )
}

#[test]
fn an_existing_blob_is_never_overwritten_and_a_wrong_key_is_denied_without_leaking() -> Result<()> {
    let mut archive = AzureArchive::start(AzureCredential::SharedKey)?;
    archive.env.push(no_fetch_retries());
    let (wal_dir, segments) = real_segments(2)?;
    let src = wal_dir.path().join(&segments[0]);
    let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    // Identical re-push succeeds; different content under the name is refused.
    let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    let changed_dir = assert_changed_copy_refused(|args| archive.walship(args), &src)?;

    // A wrong key: denied with the 403, and neither key appears anywhere in the output.
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
    archive.write_secret("AZURE_STORAGE_KEY", wrong)?;
    let next = wal_dir.path().join(&segments[1]);
    let out = archive.walship(&["wal-push", next.to_str().unwrap()])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("access denied") && err.contains("403"),
        "{err}"
    );
    assert!(
        !err.contains(wrong) && !err.contains(AZURITE_KEY),
        "a key leaked: {err}"
    );
    let dest = changed_dir.path().join("fetched");
    let out = archive.walship(&["wal-fetch", &segments[0], dest.to_str().unwrap()])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(126), "{err}");
    assert!(err.contains("403"), "{err}");
    assert!(!err.contains(wrong), "a key leaked: {err}");
    Ok(())
}

#[test]
fn an_expired_sas_token_is_denied_without_printing_it() -> Result<()> {
    let mut archive = AzureArchive::start(AzureCredential::Sas)?;
    archive.env.push(no_fetch_retries());
    let (wal_dir, segments) = real_segments(1)?;
    let src = wal_dir.path().join(&segments[0]);
    let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
    ensure!(out.status.success(), "{}", stderr(&out));

    let expired = archive.azurite.container_sas(
        CONTAINER,
        "rcwl",
        SystemTime::now() - Duration::from_secs(3600),
    )?;
    archive.write_secret("AZURE_STORAGE_SAS_TOKEN", &expired)?;
    let signature = expired.rsplit_once("sig=").unwrap().1.to_owned();
    let decoded = signature
        .replace("%2B", "+")
        .replace("%2F", "/")
        .replace("%3D", "=");
    let leaked = |text: &str| text.contains(&signature) || text.contains(&decoded[..20]);

    let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("access denied") && err.contains("403"),
        "{err}"
    );
    assert!(!leaked(&err), "the SAS token leaked: {err}");

    let dest = pg_temp_dir()?;
    let dest = dest.path().join(&segments[0]);
    let out = archive.walship(&["wal-fetch", &segments[0], dest.to_str().unwrap()])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(126), "{err}");
    assert!(err.contains("403"), "{err}");
    assert!(!leaked(&err), "the SAS token leaked: {err}");
    assert!(!dest.exists());
    Ok(())
}

#[test]
fn a_missing_container_is_named() -> Result<()> {
    let archive = AzureArchive::start(AzureCredential::ConnectionString)?;
    let manifest = archive
        .manifest(AzureCredential::ConnectionString, "gzip", "")
        .replace(&format!("/{CONTAINER}/"), "/no-such-container/");
    archive.write_manifest(&manifest)?;
    let (wal_dir, segments) = real_segments(1)?;
    let src = wal_dir.path().join(&segments[0]);
    let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no-such-container"), "{err}");
    assert!(err.to_lowercase().contains("container"), "{err}");
    let out = archive.walship(&["check"])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no-such-container"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[test]
fn malformed_destination_paths_are_config_errors_naming_the_field() -> Result<()> {
    let mut archive = AzureArchive::start(AzureCredential::SharedKey)?;
    archive.env.push(no_fetch_retries());
    let (wal_dir, segments) = real_segments(1)?;
    let src = wal_dir.path().join(&segments[0]);
    let good = archive.destination();
    let port = archive.azurite.port();
    for bad in [
        // No container in the emulator form.
        format!("http://127.0.0.1:{port}/devstoreaccount1"),
        // No container on the public host.
        "https://acct.blob.core.windows.net/".to_owned(),
        // Not a URL at all.
        "https//acct.blob.core.windows.net/c/p".to_owned(),
        // An invalid container name.
        format!("http://127.0.0.1:{port}/devstoreaccount1/Bad_Container/{PREFIX}"),
    ] {
        let manifest = archive
            .manifest(AzureCredential::SharedKey, "gzip", "")
            .replace(&good, &bad);
        archive.write_manifest(&manifest)?;
        let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("destinationPath"), "{bad}: {err}");
        let out = archive.walship(&["check"])?;
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        let dest = wal_dir.path().join("fetched");
        let out = archive.walship(&["wal-fetch", &segments[0], dest.to_str().unwrap()])?;
        assert_eq!(out.status.code(), Some(126), "{bad}: {}", stderr(&out));
    }
    Ok(())
}

#[test]
fn workload_identity_over_https_with_a_private_ca() -> Result<()> {
    let wi = WorkloadIdentity::start("gzip", Duration::from_secs(3600))?;
    let archive = &wi.archive;
    let (wal_dir, segments) = real_segments(2)?;
    let src = wal_dir.path().join(&segments[0]);
    let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    let first = fs::read_to_string(&wi.token_file)?;
    assert_eq!(wi.aad.assertions(), std::slice::from_ref(&first));
    let dest = pg_temp_dir()?;
    let fetched = dest.path().join(&segments[0]);
    let out = archive.walship(&["wal-fetch", &segments[0], fetched.to_str().unwrap()])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256_file(&fetched)?, sha256_file(&src)?);
    let out = archive.walship(&["check"])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    assert!(
        archive
            .keys()?
            .iter()
            .any(|k| k.ends_with(&format!("{}.gz", segments[0]))),
        "{:?}",
        archive.keys()?
    );

    // Without endpointCA the server's certificate is not trusted: a clear failure.
    let manifest = archive.manifest(AzureCredential::WorkloadIdentity, "gzip", "");
    archive.write_manifest(&manifest)?;
    let next = wal_dir.path().join(&segments[1]);
    let out = archive.walship(&["wal-push", next.to_str().unwrap()])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // useDefaultAzureCredentials takes the same workload identity when its variables
    // are set.
    let manifest = archive
        .manifest(AzureCredential::WorkloadIdentity, "gzip", ENDPOINT_CA)
        .replace(
            "inheritFromAzureAD: true",
            "useDefaultAzureCredentials: true",
        );
    archive.write_manifest(&manifest)?;
    let exchanges = wi.aad.assertions().len();
    let out = archive.walship(&["wal-push", next.to_str().unwrap()])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    assert_eq!(wi.aad.assertions().len(), exchanges + 1);

    // A client id Azure AD does not know: denied, with Azure AD's reason.
    let mut wrong = AzureArchive::on(
        AzuriteServer::start_with(AzuriteOptions {
            https_oauth: true,
            ..AzuriteOptions::default()
        })?,
        AzureCredential::WorkloadIdentity,
        "gzip",
        ENDPOINT_CA,
    )?;
    let ca = fs::read_to_string(wrong.azurite.ca_pem_path().unwrap())?;
    wrong.write_secret_in("azure-ca", "ca.crt", &ca)?;
    wrong.env = archive.env.clone();
    wrong.env[0].1 = "11111111-2222-3333-4444-555555555555".to_owned();
    let out = wrong.walship(&["wal-push", next.to_str().unwrap()])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("access denied"), "{err}");
    assert!(
        err.contains("AADSTS700016") || err.contains("unauthorized_client"),
        "{err}"
    );
    assert!(
        !err.contains(&first),
        "the service-account token leaked: {err}"
    );

    // Workload identity without the webhook's variables: a config error naming them.
    wrong.env.clear();
    let out = wrong.walship(&["wal-push", next.to_str().unwrap()])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("inheritFromAzureAD") && err.contains("AZURE_CLIENT_ID"),
        "{err}"
    );
    Ok(())
}

#[test]
fn the_daemon_reads_the_rotated_token_file_when_it_refreshes() -> Result<()> {
    // Tokens valid for less than the refresh margin: every store call needs a new one,
    // so the daemon exchanges the token file again and again while it runs.
    let wi = WorkloadIdentity::start("zstd", Duration::from_secs(120))?;
    let archive = &wi.archive;
    let (mut pg, socket) = setup_for(archive)?;
    let daemon = DaemonProcess::start(archive, &pg, &socket)?;
    pg.start()?;
    pg.psql("CREATE TABLE t (x int)")?;
    let mut tokens = vec![fs::read_to_string(&wi.token_file)?];
    for round in 0..3 {
        pg.psql("INSERT INTO t SELECT generate_series(1, 20000)")?;
        let last = pg.switch_wal()?;
        let stats = pg.wait_for_archived(&last, Duration::from_secs(120))?;
        assert_eq!(
            stats.failed_count,
            0,
            "round {round}: {}\ndaemon:\n{}",
            pg.log_contents(),
            daemon.log_contents()
        );
        // The kubelet rotates the token; the old one is no longer accepted.
        tokens.push(rotate(&wi.token_file)?);
    }
    assert_all_archived_identical(archive, &pg)?;
    let seen = wi.aad.assertions();
    for (round, token) in tokens[..3].iter().enumerate() {
        assert!(
            seen.contains(token),
            "the token of round {round} was never exchanged: {seen:?}"
        );
    }
    assert!(
        !daemon.log_contents().contains(&tokens[0]),
        "a token leaked"
    );
    Ok(())
}

#[test]
fn the_seed_s_all_keys_example_is_refused_naming_the_conflicts() -> Result<()> {
    let archive = AzureArchive::start(AzureCredential::ConnectionString)?;
    let all = format!(
        "{}{}      storageSasToken:\n        name: azure-creds\n        key: AZURE_STORAGE_SAS_TOKEN\n",
        AzureCredential::ConnectionString.block(),
        AzureCredential::SharedKey.block()
    );
    let manifest = archive
        .manifest(AzureCredential::ConnectionString, "gzip", "")
        .replace(AzureCredential::ConnectionString.block(), &all);
    archive.write_manifest(&manifest)?;
    let out = archive.walship(&["check"])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for field in ["storageAccount", "storageKey", "storageSasToken"] {
        assert!(
            err.contains(&format!("azureCredentials.{field}")),
            "{field} not named: {err}"
        );
    }
    assert!(err.contains("conflicts with connectionString"), "{err}");

    // A key without its account.
    let manifest = archive
        .manifest(AzureCredential::SharedKey, "gzip", "")
        .replace(
            "      storageAccount:\n        name: azure-creds\n        key: AZURE_STORAGE_ACCOUNT\n",
            "",
        );
    archive.write_manifest(&manifest)?;
    let out = archive.walship(&["check"])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("azureCredentials.storageAccount"), "{err}");
    Ok(())
}

/// Every command at trace level (the Azure SDK logs each request's URL there, a SAS
/// signature included) with each credential kind of the seed: no key, no SAS token or
/// signature, no connection string reaches the output.
#[test]
fn no_secret_reaches_the_output_of_any_command_at_trace_level() -> Result<()> {
    let (wal_dir, segments) = real_segments(1)?;
    let src = wal_dir.path().join(&segments[0]);
    for credential in [
        AzureCredential::Sas,
        AzureCredential::SharedKey,
        AzureCredential::ConnectionString,
    ] {
        let archive = AzureArchive::start(credential)?;
        let sas = fs::read_to_string(archive.secret_path("AZURE_STORAGE_SAS_TOKEN"))?;
        let signature = sas
            .split('&')
            .find_map(|p| p.strip_prefix("sig="))
            .expect("a SAS has a signature")
            .to_owned();
        let connection = archive.azurite.connection_string();
        let secrets = [
            AZURITE_KEY,
            sas.as_str(),
            signature.as_str(),
            connection.as_str(),
        ];
        let outputs = common::trace_every_command(
            &format!("{credential:?}"),
            &|args| archive.walship(args),
            &src,
            &segments[0],
            &secrets,
        )?;
        // The SDK does print each request's URL, signature included: the scrubber, not
        // silence, is what keeps it out.
        if credential == AzureCredential::Sas {
            ensure!(
                outputs.iter().all(|o| o.contains("<redacted>")),
                "{outputs:?}"
            );
        }
    }
    Ok(())
}

/// An emulator-style destinationPath names the account twice over with the
/// credentials; when the two differ, walship says which one it uses.
#[test]
fn a_destination_account_that_differs_from_storage_account_is_warned_about() -> Result<()> {
    let archive = AzureArchive::start(AzureCredential::SharedKey)?;
    let manifest = archive
        .manifest(AzureCredential::SharedKey, "gzip", "")
        .replace(
            &format!("/{}/{CONTAINER}", walship_testkit::AZURITE_ACCOUNT),
            &format!("/otheraccount/{CONTAINER}"),
        );
    ensure!(manifest.contains("/otheraccount/"), "{manifest}");
    archive.write_manifest(&manifest)?;
    let out = archive.walship(&["check", "--timeout-seconds", "30"])?;
    let err = stderr(&out);
    ensure!(
        err.contains("storageAccount is \"devstoreaccount1\"")
            && err.contains("destinationPath names the account \"otheraccount\""),
        "{err}"
    );
    Ok(())
}
