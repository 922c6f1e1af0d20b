//! TLS of Corral's own. `corral serve` and `corral node` serve HTTPS from
//! PEM files (the server's certificate is read again when its files are
//! renewed). The host calls a worker node or a remote upstream that has a
//! certificate of its own by trusting exactly that certificate, named by
//! its SHA-256 fingerprint (pinned, as SSH pins a host key), instead of the
//! public certificate authorities; a self-signed certificate is enough.
//!
//! A pinned certificate is the peer's identity: its names and validity
//! dates are not checked, only that the peer proves it holds the
//! certificate's key.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
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

/// A fingerprint as the API takes it, in the form it is stored and shown
/// ([`show`]); `""` is none.
pub fn normalize(text: &str) -> Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > 200 {
        return Err("must be at most 200 bytes".into());
    }
    parse(text).map(|pin| Some(show(&pin)))
}

/// What TLS refused, when that is why a call failed: a certificate that
/// is not the pinned one or that no authority signed, or a peer that does
/// not speak TLS. The reason names no host: it may reach the users of a
/// remote model.
pub fn failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = vec![e];
    while let Some(err) = next.pop() {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(match tls {
                rustls::Error::InvalidCertificate(why) => {
                    format!("TLS refused its certificate: {}", certificate_problem(why))
                }
                other => format!("TLS failed: {other}"),
            });
        }
        next.extend(err.source());
        // An `io::Error` hides the error it wraps from `source()`.
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            next.push(inner);
        }
    }
    None
}

/// Why a certificate was refused, without the names it holds or was asked
/// for.
fn certificate_problem(why: &CertificateError) -> String {
    use CertificateError as E;
    match why {
        E::Other(other) => other.0.to_string(),
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            "it is not valid for the server's name".into()
        }
        E::Expired | E::ExpiredContext { .. } => "it has expired".into(),
        E::NotValidYet | E::NotValidYetContext { .. } => "it is not valid yet".into(),
        E::UnknownIssuer => "no trusted authority issued it".into(),
        E::Revoked => "it was revoked".into(),
        E::BadSignature => "its signature does not match".into(),
        // Others by their name only: some carry details of the peer.
        other => {
            let shown = format!("{other:?}");
            let name = shown.split([' ', '(', '{']).next().unwrap_or_default();
            format!("it is not acceptable ({name})")
        }
    }
}

/// Reads a PEM certificate chain (the server's own certificate first) and
/// its PEM private key, checking that they belong together.
fn read_identity(cert_file: &Path, key_file: &Path) -> anyhow::Result<CertifiedKey> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("the certificate file {}: {e}", cert_file.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "the certificate file {} holds no certificate",
        cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| anyhow::anyhow!("the key file {}: {e}", key_file.display()))?;
    CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| anyhow::anyhow!("the certificate and key do not make a TLS identity: {e}"))
}

fn fingerprint_of(identity: &CertifiedKey) -> Fingerprint {
    fingerprint(identity.cert[0].as_ref())
}

/// What tells that a file was replaced or rewritten: its inode, length,
/// and modification and change times (a copy that keeps the old
/// modification time still gets a new change time).
type FileStamp = (u64, u64, SystemTime, i64, i64);

/// The two files' stamps (a renewed certificate replaces or rewrites them).
type Stamp = [Option<FileStamp>; 2];

fn stamp(files: [&Path; 2]) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    files.map(|file| {
        let meta = std::fs::metadata(file).ok()?;
        Some((
            meta.ino(),
            meta.len(),
            meta.modified().ok()?,
            meta.ctime(),
            meta.ctime_nsec(),
        ))
    })
}

/// A server's certificate and key, read from PEM files, that can be read
/// again while the server runs: a renewed certificate is served to new
/// connections without a restart. A renewal that cannot be read (a key
/// that does not match, a file half written) leaves the previous identity
/// in place.
#[derive(Debug)]
pub struct Identity {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamp when they were last read, whether or not reading
    /// them worked; a failed renewal is tried again once they change.
    read_at: Mutex<Stamp>,
}

impl Identity {
    /// Reads the files; an error names the one at fault.
    pub fn load(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<Self>> {
        let read_at = stamp([cert_file, key_file]);
        let identity = read_identity(cert_file, key_file)?;
        Ok(Arc::new(Identity {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(Arc::new(identity)),
            read_at: Mutex::new(read_at),
        }))
    }

    /// The fingerprint of the certificate now served.
    pub fn fingerprint(&self) -> Fingerprint {
        fingerprint_of(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the files again when they changed since they were last read
    /// (always with `force`). `Ok(Some(_))`: a new certificate is served,
    /// with this fingerprint; `Ok(None)`: nothing to do; an error: the
    /// files could not be read, and the previous certificate stays.
    pub fn reload(&self, force: bool) -> anyhow::Result<Option<Fingerprint>> {
        let now = stamp([&self.cert_file, &self.key_file]);
        {
            let mut read_at = self.read_at.lock().unwrap_or_else(|e| e.into_inner());
            if !force && *read_at == now {
                return Ok(None);
            }
            *read_at = now;
        }
        let identity = read_identity(&self.cert_file, &self.key_file)?;
        let pin = fingerprint_of(&identity);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(identity);
        Ok(Some(pin))
    }
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// How often the certificate files are looked at for a renewal.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves a renewed certificate once its files change (looked at every
/// [`RECHECK`]), or at once on SIGHUP; a renewal that cannot be read
/// is logged and the previous certificate stays.
pub fn watch(identity: Arc<Identity>) {
    // Taken over before the server says it listens: from then on a SIGHUP
    // (a reload after a renewal) must not end the process.
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(err) => {
            tracing::warn!(%err, "no SIGHUP: certificate files are only looked at every few seconds");
            None
        }
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RECHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            #[cfg(unix)]
            let hung_up = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hung_up = std::future::pending::<Option<()>>();
            let force = tokio::select! {
                Some(()) = hung_up => true,
                _ = tick.tick() => false,
            };
            let reading = identity.clone();
            match tokio::task::spawn_blocking(move || reading.reload(force)).await {
                Ok(Ok(Some(pin))) => tracing::info!(
                    fingerprint = %show(&pin),
                    "read the TLS certificate files again"
                ),
                Ok(Ok(None)) => {}
                Ok(Err(err)) => {
                    tracing::warn!("{err:#}; the previous TLS certificate is still served")
                }
                Err(err) => tracing::warn!(%err, "reading the TLS certificate files failed"),
            }
        }
    });
}

/// A server configuration that presents `identity` and speaks HTTP/1.1.
pub fn server_config(identity: Arc<Identity>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(identity);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
    use rustls::sign::CertifiedKey;

    // Two self-signed P-256 identities made for these tests only
    // (`openssl req -x509 -newkey ec ...`).
    const A_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBeTCCAR+gAwIBAgIUTDaBCdwuUt6kn4yDcazeUDAaWQEwCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHZ3B1LWJveDAeFw0yNjExMjkxNjIzMTlaFw0zNjExMjYxNjIz
MTlaMBIxEDAOBgNVBAMMB2dwdS1ib3gwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AARNgWvjUmeAgbgNy6uQUf4ctlJzmdzAOprG2kipBZbqy2nX9UXr7T14pMFhWvdN
Oj0Pc1bj89ZPxrqGFZV73iIAo1MwUTAdBgNVHQ4EFgQU0UicVFhV6wE28fg4UgQK
KhojRg0wHwYDVR0jBBgwFoAU0UicVFhV6wE28fg4UgQKKhojRg0wDwYDVR0TAQH/
BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEAgwh6v7gWpLvgab6Y7a9PrnpKyLBq
3caCVT9q8AGbW90CIAtMdGoTvpiH+kuv1Qrxic6YAF8EgSJJVVvRXmBnoIig
-----END CERTIFICATE-----
";
    const A_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgi8XmYmD/dnCRStB4
5QynEuHl5U1YIUIhGh4UsPn5zHWhRANCAARNgWvjUmeAgbgNy6uQUf4ctlJzmdzA
OprG2kipBZbqy2nX9UXr7T14pMFhWvdNOj0Pc1bj89ZPxrqGFZV73iIA
-----END PRIVATE KEY-----
";
    const B_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBeTCCAR+gAwIBAgIUflY+l5p79UZHawn3sthelUZdO6EwCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHZ3B1LWJveDAeFw0yNjExMjkxNjIzMTlaFw0zNjExMjYxNjIz
MTlaMBIxEDAOBgNVBAMMB2dwdS1ib3gwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AASq93kj92tG8NdSL/sVoRLG5r8vcuMtwCSXeuQqpXC7S/kbKHiFYdWNC8lqTiL4
aJTFyqQYBu7SxQJPVF4uATuJo1MwUTAdBgNVHQ4EFgQUWCRj+1/b37vHDocsM74s
qgXA7iEwHwYDVR0jBBgwFoAUWCRj+1/b37vHDocsM74sqgXA7iEwDwYDVR0TAQH/
BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEA9YUD/NM8X9fAKlQsvgAijp0HOsXa
DFb/peKYSVSx/R8CIC2D874zaDf1ek4jVFEr7QEzLt4h6U8Mp9aubkdb8X2Q
-----END CERTIFICATE-----
";
    const B_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgXfBPhiunUxCxW/8g
rjvziG+BvyfQ9oBX+B7wOCpwEgihRANCAASq93kj92tG8NdSL/sVoRLG5r8vcuMt
wCSXeuQqpXC7S/kbKHiFYdWNC8lqTiL4aJTFyqQYBu7SxQJPVF4uATuJ
-----END PRIVATE KEY-----
";

    fn cert(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// A server that presents `cert_pem` and signs with `key_pem`, whether
    /// or not they belong together.
    fn server(cert_pem: &str, key_pem: &str) -> rustls::ServerConfig {
        #[derive(Debug)]
        struct Fixed(Arc<CertifiedKey>);
        impl rustls::server::ResolvesServerCert for Fixed {
            fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
                Some(self.0.clone())
            }
        }
        let provider = provider();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let signer = provider.key_provider.load_private_key(key).unwrap();
        let identity = CertifiedKey::new(vec![cert(cert_pem)], signer);
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(Arc::new(identity))))
    }

    /// Runs a handshake in memory; the client's error if it refuses.
    fn handshake(
        client: rustls::ClientConfig,
        server: rustls::ServerConfig,
    ) -> Result<(), rustls::Error> {
        let name = ServerName::try_from("node.invalid").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client), name)?;
        let mut server = rustls::ServerConnection::new(Arc::new(server))?;
        for _ in 0..10 {
            let mut to_server = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut to_server).unwrap();
            }
            server.read_tls(&mut to_server.as_slice()).unwrap();
            server
                .process_new_packets()
                .expect("the server accepts the client");
            let mut to_client = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut to_client).unwrap();
            }
            client.read_tls(&mut to_client.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not end");
    }

    fn pinned_to(pem: &str) -> rustls::ClientConfig {
        pinned_client_config(fingerprint(cert(pem).as_ref())).unwrap()
    }

    #[test]
    fn the_pinned_certificate_with_its_key_is_accepted() {
        assert!(handshake(pinned_to(A_CERT), server(A_CERT, A_KEY)).is_ok());
        assert!(handshake(pinned_to(B_CERT), server(B_CERT, B_KEY)).is_ok());
    }

    #[test]
    fn another_certificate_is_refused_as_not_pinned() {
        let refused = handshake(pinned_to(A_CERT), server(B_CERT, B_KEY)).unwrap_err();
        let rustls::Error::InvalidCertificate(CertificateError::Other(why)) = &refused else {
            panic!("refused for another reason: {refused:?}");
        };
        assert!(why.0.to_string().contains("not the pinned one"), "{why}");
    }

    #[test]
    fn the_pinned_certificate_without_its_key_is_refused() {
        // A man in the middle can replay the node's certificate, but not
        // sign the handshake with its key.
        let refused = handshake(pinned_to(A_CERT), server(A_CERT, B_KEY)).unwrap_err();
        assert!(
            matches!(
                refused,
                rustls::Error::InvalidCertificate(CertificateError::BadSignature)
            ),
            "{refused:?}"
        );
    }

    fn fingerprint_of_pem(pem: &str) -> Fingerprint {
        fingerprint(cert(pem).as_ref())
    }

    /// `a.crt` and `a.key` in a temporary folder.
    fn files(cert_pem: &str, key_pem: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = (dir.path().join("a.crt"), dir.path().join("a.key"));
        std::fs::write(&crt, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        (dir, crt, key)
    }

    /// Whether a server with `identity` shows clients the certificate
    /// `pem` (a client pinned to it completes the handshake).
    fn serves(identity: &Arc<Identity>, pem: &str) -> bool {
        let config = server_config(identity.clone()).unwrap();
        handshake(pinned_to(pem), (*config).clone()).is_ok()
    }

    #[test]
    fn an_identity_reads_the_pem_files_and_names_the_fingerprint() {
        let (_dir, crt, key) = files(A_CERT, A_KEY);
        let identity = Identity::load(&crt, &key).unwrap();
        assert_eq!(identity.fingerprint(), fingerprint_of_pem(A_CERT));
        assert!(serves(&identity, A_CERT));

        std::fs::write(&key, B_KEY).unwrap();
        let mismatch = Identity::load(&crt, &key).unwrap_err().to_string();
        assert!(
            mismatch.contains("do not make a TLS identity"),
            "{mismatch}"
        );
        std::fs::write(&key, A_CERT).unwrap();
        let not_a_key = Identity::load(&crt, &key).unwrap_err().to_string();
        assert!(not_a_key.contains("the key file"), "{not_a_key}");
        std::fs::write(&crt, A_KEY).unwrap();
        let no_cert = Identity::load(&crt, &key).unwrap_err().to_string();
        assert!(no_cert.contains("holds no certificate"), "{no_cert}");
        let missing = Identity::load(&crt.with_extension("gone"), &key)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("a.gone"), "{missing}");
    }

    #[test]
    fn a_renewed_certificate_is_served_once_its_files_change() {
        let (_dir, crt, key) = files(A_CERT, A_KEY);
        let identity = Identity::load(&crt, &key).unwrap();
        assert_eq!(identity.reload(false).unwrap(), None, "nothing changed");

        // The renewal is written in place, the same length, and keeps the
        // old modification time (as `cp -p` would): the change time tells.
        let old_times: Vec<SystemTime> = [&crt, &key]
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().modified().unwrap())
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&crt, B_CERT).unwrap();
        std::fs::write(&key, B_KEY).unwrap();
        for (file, time) in [&crt, &key].into_iter().zip(old_times) {
            let f = std::fs::File::options().write(true).open(file).unwrap();
            f.set_modified(time).unwrap();
        }
        assert_eq!(
            identity.reload(false).unwrap(),
            Some(fingerprint_of_pem(B_CERT))
        );
        assert!(serves(&identity, B_CERT));
        assert_eq!(
            identity.reload(false).unwrap(),
            None,
            "read once per change"
        );
    }

    #[test]
    fn a_failed_renewal_is_tried_again_once_the_files_change() {
        let (_dir, crt, key) = files(A_CERT, A_KEY);
        let identity = Identity::load(&crt, &key).unwrap();
        // The certificate is replaced first, the key a moment later.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&crt, B_CERT).unwrap();
        assert!(identity.reload(false).is_err());
        assert_eq!(
            identity.reload(false).unwrap(),
            None,
            "not read again unchanged"
        );
        assert!(serves(&identity, A_CERT));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&key, B_KEY).unwrap();
        assert_eq!(
            identity.reload(false).unwrap(),
            Some(fingerprint_of_pem(B_CERT))
        );
        assert!(serves(&identity, B_CERT));
    }

    #[test]
    fn refused_certificates_are_described_without_names() {
        let named = CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("secret.internal").unwrap().to_owned(),
            presented: vec!["DnsName(\"other.internal\")".into()],
        };
        for (why, said) in [
            (named, "not valid for the server's name"),
            (CertificateError::UnknownIssuer, "no trusted authority"),
            (CertificateError::Expired, "expired"),
            (
                CertificateError::BadEncoding,
                "not acceptable (BadEncoding)",
            ),
        ] {
            let text = failure(&rustls::Error::InvalidCertificate(why)).unwrap();
            assert!(text.starts_with("TLS refused its certificate: "), "{text}");
            assert!(text.contains(said), "{text}");
            assert!(!text.contains("internal"), "{text}");
        }
    }

    #[test]
    fn a_renewal_that_cannot_be_read_keeps_the_served_certificate() {
        let (_dir, crt, key) = files(A_CERT, A_KEY);
        let identity = Identity::load(&crt, &key).unwrap();
        // Half a renewal: the new certificate, the old key.
        std::fs::write(&crt, B_CERT).unwrap();
        let refused = identity.reload(true).unwrap_err().to_string();
        assert!(refused.contains("do not make a TLS identity"), "{refused}");
        assert_eq!(identity.fingerprint(), fingerprint_of_pem(A_CERT));
        assert!(serves(&identity, A_CERT));
        // The rest of it arrives.
        std::fs::write(&key, B_KEY).unwrap();
        assert_eq!(
            identity.reload(true).unwrap(),
            Some(fingerprint_of_pem(B_CERT))
        );
        std::fs::remove_file(&key).unwrap();
        assert!(identity.reload(true).is_err());
        assert!(serves(&identity, B_CERT));
    }

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
