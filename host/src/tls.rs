//! TLS for worker nodes: `corral node` can serve HTTPS with a certificate
//! of its own, and the host then trusts exactly that certificate, named by
//! its SHA-256 fingerprint (pinned, as SSH pins a host key), instead of a
//! public certificate authority. A self-signed certificate is enough.
//!
//! A pinned certificate is the node's identity: its names and validity
//! dates are not checked, only that the node proves it holds the
//! certificate's key.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

/// A SHA-256 certificate fingerprint.
pub type Fingerprint = [u8; 32];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The fingerprint of a DER certificate.
pub fn fingerprint(der: &[u8]) -> Fingerprint {
    Sha256::digest(der).into()
}

/// `fingerprint` as `openssl x509 -fingerprint -sha256` prints it: upper
/// case hex pairs joined by colons.
pub fn show(fingerprint: &Fingerprint) -> String {
    fingerprint
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Reads a fingerprint written as 64 hex digits, in either case, with or
/// without colons between the pairs.
pub fn parse(text: &str) -> Result<Fingerprint, String> {
    let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
    let wrong = || "must be a SHA-256 fingerprint: 64 hex digits, colons allowed".to_owned();
    if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(wrong());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| wrong())?;
    }
    Ok(out)
}

/// A server configuration from a PEM certificate chain (the node's own
/// certificate first) and its PEM private key, with the fingerprint of the
/// first certificate.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Fingerprint)> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("the certificate file {}: {e}", cert_file.display()))?;
    let first = certs.first().ok_or_else(|| {
        anyhow::anyhow!(
            "the certificate file {} holds no certificate",
            cert_file.display()
        )
    })?;
    let pin = fingerprint(first.as_ref());
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| anyhow::anyhow!("the key file {}: {e}", key_file.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("the certificate and key do not make a TLS identity: {e}"))?;
    Ok((Arc::new(config), pin))
}

/// A client configuration that accepts exactly the certificate `pin` names.
pub fn pinned_client_config(pin: Fingerprint) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = provider();
    let verifier = Pinned {
        pin,
        algorithms: provider.signature_verification_algorithms,
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The reason a pinned connection is refused; it reaches technicians as
/// the node's reason for being down.
#[derive(Debug)]
struct NotPinned;

impl std::fmt::Display for NotPinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("it is not the pinned one (the fingerprint differs)")
    }
}

impl std::error::Error for NotPinned {}

#[derive(Debug)]
struct Pinned {
    pin: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity.as_ref()) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(NotPinned)),
            )))
        }
    }

    // The handshake's signatures are checked as usual: they prove that the
    // peer holds the pinned certificate's key.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_with_or_without_colons_in_either_case() {
        let shown = show(&[0xab; 32]);
        assert_eq!(shown.len(), 95);
        assert!(shown.starts_with("AB:AB:"));
        assert_eq!(parse(&shown), Ok([0xab; 32]));
        assert_eq!(
            parse(&shown.replace(':', "").to_lowercase()),
            Ok([0xab; 32])
        );
        assert_eq!(parse(&format!("  {shown}\n")), Ok([0xab; 32]));
    }

    #[test]
    fn a_wrong_fingerprint_is_refused() {
        for bad in [
            "",
            "AB:CD",
            &"a".repeat(63),
            &"a".repeat(65),
            &"g".repeat(64),
            &format!("+{}", "a".repeat(63)),
            &"é".repeat(32),
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was read");
        }
    }
}
