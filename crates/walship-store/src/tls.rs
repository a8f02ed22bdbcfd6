//! A private CA bundle (`endpointCA`), parsed before any HTTP client sees it.
//!
//! The SDKs' TLS set-up takes PEM bytes and some of them panic on a block they cannot
//! decode (aws-smithy's trust store does, on invalid base64). So the bundle is parsed
//! here in full: every PEM block decoded, every certificate parsed as an X.509 trust
//! anchor, and clients are handed only [`CaBundle::pem`], a clean re-encoding of the
//! certificates that passed, or [`CaBundle::der`]. Anything else is an error that names
//! the problem and never quotes the bundle's bytes (a secret's contents).

use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// One or more CA certificates, each parsed as an X.509 certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundle {
    certificates: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaBundle({} certificates)", self.certificates.len())
    }
}

impl CaBundle {
    /// Parses a PEM bundle. Blocks that are not certificates (keys, parameters) are an
    /// error too: a bundle that holds a private key was meant for something else.
    pub fn from_pem(pem: &[u8]) -> Result<CaBundle, String> {
        let text = std::str::from_utf8(pem)
            .map_err(|_| "is not text; expected PEM certificates".to_owned())?;
        let blocks = text.matches("-----BEGIN ").count();
        let certificate_blocks = text.matches("-----BEGIN CERTIFICATE-----").count();
        if certificate_blocks == 0 {
            return Err(
                "holds no \"-----BEGIN CERTIFICATE-----\" block; expected PEM certificates"
                    .to_owned(),
            );
        }
        if blocks != certificate_blocks {
            return Err(format!(
                "holds {} PEM blocks that are not certificates; expected only \
                 \"-----BEGIN CERTIFICATE-----\" blocks",
                blocks - certificate_blocks
            ));
        }
        let mut certificates = Vec::new();
        for (n, item) in CertificateDer::pem_slice_iter(pem).enumerate() {
            let der = item.map_err(|e| {
                format!(
                    "certificate {} of the bundle is not valid PEM ({}); expected \
                     base64 between the BEGIN and END lines",
                    n + 1,
                    pem_problem(&e)
                )
            })?;
            webpki::anchor_from_trusted_cert(&der).map_err(|e| {
                format!(
                    "certificate {} of the bundle is not a valid X.509 certificate ({e:?})",
                    n + 1
                )
            })?;
            certificates.push(der.into_owned());
        }
        if certificates.len() != certificate_blocks {
            return Err(format!(
                "{} of its {certificate_blocks} certificate blocks could be read; expected \
                 complete BEGIN/END pairs",
                certificates.len()
            ));
        }
        Ok(CaBundle { certificates })
    }

    /// The certificates in DER.
    pub fn der(&self) -> &[CertificateDer<'static>] {
        &self.certificates
    }

    /// The certificates re-encoded as PEM: only what parsed, in a form every PEM reader
    /// takes (64-character lines, no headers, no text between blocks).
    pub fn pem(&self) -> Vec<u8> {
        let mut out = String::new();
        for cert in &self.certificates {
            out.push_str("-----BEGIN CERTIFICATE-----\n");
            let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
            for line in b64.as_bytes().chunks(64) {
                out.push_str(std::str::from_utf8(line).unwrap_or_default());
                out.push('\n');
            }
            out.push_str("-----END CERTIFICATE-----\n");
        }
        out.into_bytes()
    }
}

/// What was wrong with a PEM block, without quoting it.
fn pem_problem(e: &rustls_pki_types::pem::Error) -> &'static str {
    use rustls_pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "no END line",
        Error::IllegalSectionStart { .. } => "a malformed BEGIN line",
        Error::Base64Decode(_) => "invalid base64",
        Error::NoItemsFound => "no certificate",
        _ => "unreadable",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A real self-signed CA certificate (`openssl req -x509 -newkey ec`, P-256).
    pub(crate) const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBiTCCAS+gAwIBAgIUCGRKzDX8OWQIVQAVrMAJm/hHyVQwCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPd2Fsc2hpcC10ZXN0LWNhMB4XDTI2MTEzMDAyMTM0MVoXDTM2
MTEyNzAyMTM0MVowGjEYMBYGA1UEAwwPd2Fsc2hpcC10ZXN0LWNhMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEF/goSNWacZefdd/jDGScuW7qvyt/KV4H6C9uYxvF
q7UJ6ruKLCuRLLOzGhJNyik8PP6hBX0AGQs0W64kjuY6xaNTMFEwHQYDVR0OBBYE
FHNSz/1Fxhip4QUpqO7tKg3X4VzbMB8GA1UdIwQYMBaAFHNSz/1Fxhip4QUpqO7t
Kg3X4VzbMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgTIW0SbGe
rnNHnIeA03z102mlQmlIG+ysHlTQlyGgdPgCIQDSCA0pzmoKe3Cjk9/g7PM7jtdR
+xsac5Q87lxQCgh1/g==
-----END CERTIFICATE-----
";

    #[test]
    fn a_real_certificate_parses_and_is_re_encoded_to_the_same_der() {
        let noisy = format!("Subject: walship-test-ca\n{CA}\n\n{CA}");
        let bundle = CaBundle::from_pem(noisy.as_bytes()).unwrap();
        assert_eq!(bundle.der().len(), 2);
        let again = CaBundle::from_pem(&bundle.pem()).unwrap();
        assert_eq!(again, bundle);
        assert_eq!(
            String::from_utf8(bundle.pem()).unwrap(),
            format!("{CA}{CA}")
        );
    }

    #[test]
    fn invalid_base64_in_a_certificate_block_is_an_error_not_a_panic() {
        let bad = "-----BEGIN CERTIFICATE-----\nU0VDUkVU!!!garbage\n-----END CERTIFICATE-----\n";
        let err = CaBundle::from_pem(bad.as_bytes()).unwrap_err();
        assert!(err.contains("invalid base64"), "{err}");
        assert!(
            !err.contains("U0VDUkVU"),
            "the bundle's bytes were quoted: {err}"
        );
    }

    #[test]
    fn what_is_not_a_certificate_bundle_is_refused_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"not a pem", "no \"-----BEGIN CERTIFICATE-----\""),
            (b"\xff\xfe", "not text"),
            (b"-----BEGIN CERTIFICATE-----\nU0VDUkVU\n", "no END line"),
            (
                b"-----BEGIN CERTIFICATE-----\nU0VDUkVU\n-----END CERTIFICATE-----\n",
                "not a valid X.509 certificate",
            ),
            (
                b"-----BEGIN PRIVATE KEY-----\nU0VDUkVU\n-----END PRIVATE KEY-----\n",
                "no \"-----BEGIN CERTIFICATE-----\"",
            ),
        ];
        for (pem, expected) in cases {
            let err = CaBundle::from_pem(pem).unwrap_err();
            assert!(
                err.contains(expected),
                "{:?}: {err}",
                String::from_utf8_lossy(pem)
            );
        }
        let mixed =
            format!("{CA}-----BEGIN PRIVATE KEY-----\nU0VDUkVU\n-----END PRIVATE KEY-----\n");
        let err = CaBundle::from_pem(mixed.as_bytes()).unwrap_err();
        assert!(err.contains("not certificates"), "{err}");
    }
}
