//! `inheritFromIAMRole: true` as IRSA provides it: a projected web-identity token file
//! and a role ARN in the environment, exchanged with STS (a local stand-in speaking the
//! real protocol) for the credentials walship signs with.

mod common;

use std::fs;
use std::process::Command;

use anyhow::Result;
use common::{Archive, real_segments, stderr};
use walship_testkit::{StsStub, WalshipBin};

#[test]
fn irsa_credentials_come_from_the_web_identity_token() -> Result<()> {
    let archive = Archive::start(Some("gzip"))?;
    let manifest = archive.manifest().replace(
        "    s3Credentials:\n      accessKeyId:\n        name: aws-creds\n        key: ACCESS_KEY_ID\n      secretAccessKey:\n        name: aws-creds\n        key: ACCESS_SECRET_KEY\n",
        "    s3Credentials:\n      inheritFromIAMRole: true\n",
    );
    assert!(!manifest.contains("accessKeyId"), "{manifest}");
    archive.write_manifest(&manifest)?;
    let sts = StsStub::start(
        archive.s3.access_key(),
        archive.s3.secret_key(),
        "session-token-from-sts",
    )?;
    let token_file = archive.dir.path().join("token");
    fs::write(&token_file, "projected-service-account-jwt")?;
    let (wal_dir, segments) = real_segments(1)?;

    let walship = WalshipBin::path()?;
    let run = |args: &[&str]| {
        Command::new(&walship)
            .args(archive.global_args())
            .args(args)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_PROFILE")
            .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/walship")
            .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file)
            .env("AWS_ROLE_SESSION_NAME", "walship-session")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL_STS", sts.endpoint())
            // Keep the SDK away from the instance metadata service and shared files.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .output()
    };
    let src = wal_dir.path().join(&segments[0]);
    let out = run(&["wal-push", src.to_str().unwrap()])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let requests = sts.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("Action=AssumeRoleWithWebIdentity")
                && r.contains("WebIdentityToken=projected-service-account-jwt")
                && r.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fwalship")),
        "STS saw {requests:?}"
    );
    assert!(
        !stderr(&out).contains(archive.s3.secret_key()),
        "{}",
        stderr(&out)
    );
    let dest = archive.dir.path().join("restored");
    let out = run(&["wal-fetch", &segments[0], dest.to_str().unwrap()])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read(&dest)?, fs::read(&src)?);

    // At trace level neither the keys STS hands out, nor its session token, nor the
    // projected token reaches the output.
    let out = run(&["--log-level", "trace", "check"])?;
    let all = stderr(&out);
    assert!(out.status.success() && all.contains("TRACE"), "{all}");
    common::assert_no_secret(
        "IRSA check at trace level",
        &all,
        &[
            archive.s3.secret_key(),
            "session-token-from-sts",
            "projected-service-account-jwt",
        ],
    );
    Ok(())
}

#[test]
fn irsa_without_its_web_identity_environment_is_a_credentials_problem() -> Result<()> {
    let archive = Archive::start(None)?;
    archive.write_manifest(&archive.manifest().replace(
        "    s3Credentials:\n      accessKeyId:\n        name: aws-creds\n        key: ACCESS_KEY_ID\n      secretAccessKey:\n        name: aws-creds\n        key: ACCESS_SECRET_KEY\n",
        "    s3Credentials:\n      inheritFromIAMRole: true\n",
    ))?;
    let out = Command::new(WalshipBin::path()?)
        .args(archive.global_args())
        .args(["check", "--timeout-seconds", "30"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ROLE_ARN")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .output()?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("cannot reach the store"), "{err}");
    assert!(err.contains("no AWS credentials could be loaded"), "{err}");
    assert!(err.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{err}");
    Ok(())
}
