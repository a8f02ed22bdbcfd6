//! `endpointCA`: an S3-compatible endpoint behind TLS with a private CA is trusted when
//! the manifest names the CA bundle, and refused (with a clear error) when it does not.

mod common;

use std::fs;

use anyhow::Result;
use common::{Archive, real_segments, stderr};
use walship_testkit::TlsProxy;

#[test]
fn a_private_ca_from_endpoint_ca_is_trusted_and_required() -> Result<()> {
    let archive = Archive::start(Some("lz4"))?;
    let tls = TlsProxy::start(archive.s3.port())?;
    archive.write_secret(
        "minio-ca",
        "ca.crt",
        &fs::read_to_string(tls.ca_pem_path())?,
    )?;
    let https = archive
        .manifest()
        .replace(&archive.s3.endpoint(), &tls.endpoint());
    let (wal_dir, segments) = real_segments(2)?;

    // Without the CA: the certificate is not trusted, and nothing is shipped.
    archive.write_manifest(&https)?;
    let first = wal_dir.path().join(&segments[0]);
    let out = archive.walship(&["wal-push", first.to_str().unwrap()])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("certificate"),
        "the error should name the certificate problem: {}",
        stderr(&out)
    );
    assert!(archive.keys()?.is_empty());

    // With endpointCA, as the seed's MinIO example writes it.
    let with_ca = https.replace(
        "    s3Credentials:",
        "    endpointCA:\n      name: minio-ca\n      key: ca.crt\n    s3Credentials:",
    );
    archive.write_manifest(&with_ca)?;
    for name in &segments {
        let src = wal_dir.path().join(name);
        let out = archive.walship(&["wal-push", src.to_str().unwrap()])?;
        assert!(out.status.success(), "{}", stderr(&out));
        let dest = archive.dir.path().join(format!("{name}.restored"));
        let out = archive.walship(&["wal-fetch", name, dest.to_str().unwrap()])?;
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(fs::read(&dest)?, fs::read(&src)?);
    }
    assert_eq!(archive.keys()?.len(), segments.len());
    Ok(())
}
