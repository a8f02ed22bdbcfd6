//! `inheritFromIAMRole: true` as IRSA provides it: a projected web-identity token file
//! and a role ARN in the environment, exchanged with STS (a local stand-in speaking the
//! real protocol) for the credentials walship signs with.

mod common;

use std::fs;
use std::process::Command;

use anyhow::Result;
use common::{Archive, real_segments, stderr};
use walship_testkit::{StsStub, WalshipBin};

const STATIC_KEYS: &str = "    s3Credentials:\n      accessKeyId:\n        name: aws-creds\n        key: ACCESS_KEY_ID\n      secretAccessKey:\n        name: aws-creds\n        key: ACCESS_SECRET_KEY\n";

/// An archive configured with `inheritFromIAMRole: true`, an STS stand-in handing out the
/// archive's keys, and the environment the IRSA webhook injects.
struct Irsa {
    archive: Archive,
    sts: StsStub,
    token_file: std::path::PathBuf,
}

impl Irsa {
    fn start(compression: Option<&'static str>) -> Result<Irsa> {
        let archive = Archive::start(compression)?;
        let manifest = archive.manifest().replace(
            STATIC_KEYS,
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
        Ok(Irsa {
            archive,
            sts,
            token_file,
        })
    }

    fn run(&self, args: &[&str]) -> Result<std::process::Output> {
        Ok(Command::new(WalshipBin::path()?)
            .args(self.archive.global_args())
            .args(args)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_PROFILE")
            .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/walship")
            .env("AWS_WEB_IDENTITY_TOKEN_FILE", &self.token_file)
            .env("AWS_ROLE_SESSION_NAME", "walship-session")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL_STS", self.sts.endpoint())
            // Keep the SDK away from the instance metadata service and shared files.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .output()?)
    }
}

#[test]
fn irsa_credentials_come_from_the_web_identity_token() -> Result<()> {
    let irsa = Irsa::start(Some("gzip"))?;
    let (archive, sts) = (&irsa.archive, &irsa.sts);
    let (wal_dir, segments) = real_segments(1)?;
    let run = |args: &[&str]| irsa.run(args);
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
        STATIC_KEYS,
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

/// STS failing is the credential endpoint failing, not the identity refused, and it is
/// retried by walship's one retry layer only: the SDK's STS client, which retries three
/// times by default, asks once per attempt of the store request.
#[test]
fn sts_failing_is_retried_once_per_store_attempt_and_reported_as_sts_failing() -> Result<()> {
    let irsa = Irsa::start(None)?;
    irsa.sts.fail_with(Some(503));
    let (wal_dir, segments) = real_segments(1)?;
    let src = wal_dir.path().join(&segments[0]);
    let out = irsa.run(&["wal-push", src.to_str().unwrap()])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let asked = irsa.sts.requests().len();
    // One create-only put, retried by walship's policy (4 attempts by default), each
    // attempt asking STS once; with the SDK's own STS retries it was 3 per attempt.
    assert_eq!(asked, 4, "STS was asked {asked} times: {err}");
    assert!(
        err.contains("cannot obtain credentials")
            && err.contains("STS answered AssumeRoleWithWebIdentity with HTTP 503"),
        "{err}"
    );
    assert!(!err.contains("access denied"), "{err}");

    // STS back: the next wal-push ships it, with nothing left behind by the failures.
    irsa.sts.fail_with(None);
    let out = irsa.run(&["wal-push", src.to_str().unwrap()])?;
    assert!(out.status.success(), "{}", stderr(&out));

    // STS refusing the token is the identity refused, and is not retried.
    irsa.sts.fail_with(Some(400));
    let before = irsa.sts.requests().len();
    let out = irsa.run(&["wal-push", src.to_str().unwrap()])?;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(irsa.sts.requests().len() - before, 1, "{err}");
    assert!(err.contains("access denied"), "{err}");
    Ok(())
}
