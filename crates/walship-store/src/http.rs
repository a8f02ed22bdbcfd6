//! The HTTP client of the stores that speak HTTP through reqwest themselves (Azure, whose
//! SDK runs on it, and GCS), built in one place so that both bound the connect and trust a
//! private CA (`endpointCA`) the same way.

use crate::{CaBundle, deadline};

/// A reqwest client builder with a bounded connect ([`deadline::CONNECT`]: reqwest's
/// default has no timeout at all) and the `endpointCA` certificates, already parsed,
/// added to the public roots. The caller adds what is its own (Azure turns idle pooling
/// off as its SDK does; GCS keeps the pool and sets an overall timeout) and builds it.
/// The error says what is wrong, never quoting the bundle.
pub fn client_builder(ca: Option<&CaBundle>) -> Result<reqwest::ClientBuilder, String> {
    let mut builder = reqwest::ClientBuilder::new().connect_timeout(deadline::CONNECT);
    for der in ca.map(CaBundle::der).unwrap_or_default() {
        let certificate = reqwest::Certificate::from_der(der.as_ref())
            .map_err(|e| format!("a certificate cannot be used: {e}"))?;
        builder = builder.add_root_certificate(certificate);
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_builds_with_and_without_a_private_ca() {
        let bundle = CaBundle::from_pem(crate::tls::tests::CA.as_bytes()).unwrap();
        assert!(client_builder(Some(&bundle)).unwrap().build().is_ok());
        assert!(client_builder(None).unwrap().build().is_ok());
    }
}
