//! TLS with rustls and its `ring` provider, chosen here and nowhere else: TLS 1.3 and 1.2
//! only, the provider's default suites (ECDHE with AES-GCM or ChaCha20-Poly1305).
//!
//! - [`ServerTls`]: a listener's certificate, key and (for mutual TLS) client CA and CRL,
//!   loaded from PEM files, swapped whole on [`ServerTls::reload`] for new connections only;
//!   a bad new file leaves the old configuration in force.
//! - [`client_config`]: what `hl7-ihp send --tls` connects with.
//! - [`identity`]: a client certificate's subject and SANs as one line of text.

pub mod identity;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why TLS files could not be used; the text names the file and says what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// The one crypto provider: `ring` (no C toolchain beyond what `ring` builds with, and the
/// suites ATNA's connectathon accepts).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs [`provider`] as the process's default, at start, so that nothing in the
/// dependency tree can pick another. Installing twice is harmless.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The files of a TLS listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// The certificate chain, PEM, the listener's own certificate first.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates, PEM: when given, a client certificate issued by one of them is
    /// required.
    pub client_ca: Option<PathBuf>,
    /// Revoked client certificates, PEM CRLs of those CAs.
    pub crl: Option<PathBuf>,
}

impl ServerTlsFiles {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [
            Some(&self.cert),
            Some(&self.key),
            self.client_ca.as_ref(),
            self.crl.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
    }
}

/// What a file looked like when it was last read: a change to any means "reload".
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp(Option<(SystemTime, u64, u64)>);

impl Stamp {
    fn of(path: &Path) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp(
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino()))),
        )
    }
}

/// A listener's TLS configuration, reloadable.
#[derive(Debug)]
pub struct ServerTls {
    files: ServerTlsFiles,
    /// The ALPN-free rustls configuration new connections take.
    current: RwLock<Arc<ServerConfig>>,
    /// The files as last tried (loaded or refused): a refused file is not tried again until
    /// it changes.
    tried: RwLock<Vec<Stamp>>,
}

impl ServerTls {
    /// Loads the files; an error names the file and the reason.
    pub fn load(files: ServerTlsFiles) -> Result<Arc<ServerTls>, TlsError> {
        let stamps = files.paths().map(Stamp::of).collect();
        let config = server_config(&files)?;
        Ok(Arc::new(ServerTls {
            files,
            current: RwLock::new(config),
            tried: RwLock::new(stamps),
        }))
    }

    /// The configuration a new connection uses.
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether mutual TLS is on (a client certificate is required).
    pub fn requires_client_certificate(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Whether any file changed since it was last tried.
    pub fn changed(&self) -> bool {
        let now: Vec<Stamp> = self.files.paths().map(Stamp::of).collect();
        *self.tried.read().unwrap_or_else(|p| p.into_inner()) != now
    }

    /// Reads every file again and, if all are good, makes them the configuration of new
    /// connections; otherwise the old one stays and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps: Vec<Stamp> = self.files.paths().map(Stamp::of).collect();
        *self.tried.write().unwrap_or_else(|p| p.into_inner()) = stamps;
        let config = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path)
        .map_err(|e| TlsError(format!("cannot read the {what} {}: {e}", path.display())))
}

/// Every certificate of a PEM file; at least one.
pub fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("the {what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "the {what} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path, "private key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        TlsError(format!(
            "the private key {}: {e} (expected a PEM PKCS#8, PKCS#1 or SEC1 key)",
            path.display()
        ))
    })
}

fn roots(path: &Path, what: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, what)? {
        roots
            .add(cert)
            .map_err(|e| TlsError(format!("the {what} {}: {e}", path.display())))?;
    }
    Ok(roots)
}

fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let pem = read(path, "CRL")?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("the CRL {}: {e}", path.display())))?;
    if crls.is_empty() {
        return Err(TlsError(format!(
            "the CRL {} holds no PEM CRL (-----BEGIN X509 CRL-----)",
            path.display()
        )));
    }
    Ok(crls)
}

fn server_config(files: &ServerTlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(&files.cert, "certificate")?;
    let key = private_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| TlsError(format!("TLS versions: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca, "client CA")?),
                provider(),
            );
            if let Some(crl) = &files.crl {
                verifier = verifier.with_crls(crls(crl)?);
            }
            let verifier = verifier
                .build()
                .map_err(|e| TlsError(format!("the client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| pair_error(&files.cert, &files.key, &e))?;
    // MLLP has no ALPN name.
    config.alpn_protocols = Vec::new();
    // No TLS 1.3 session tickets: they are written after the client's last handshake
    // message, so a client that closes at once (a TLS health check, `openssl s_time`) made
    // a finished handshake count as failed; and MLLP connections last hours, so resuming
    // saves little. (TLS 1.2 session ids still resume, from rustls' in-memory cache.)
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A certificate and key that rustls refused together, said plainly.
fn pair_error(cert: &Path, key: &Path, error: &rustls::Error) -> TlsError {
    let why = match error {
        rustls::Error::InconsistentKeys(_) => "the key does not match the certificate".to_owned(),
        other => other.to_string(),
    };
    TlsError(format!(
        "the certificate {} and the key {}: {why}",
        cert.display(),
        key.display()
    ))
}

/// The CA bundles tried when `send --tls` is given no `--tls-ca`.
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// A client configuration: trusting `ca` (else the system's CA bundle), and presenting
/// `cert` and `key` when given (both or neither).
pub fn client_config(
    ca: Option<&Path>,
    cert_and_key: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca {
        Some(ca) => roots(ca, "CA")?,
        None => {
            let bundle = SYSTEM_BUNDLES
                .iter()
                .map(Path::new)
                .find(|p| p.exists())
                .ok_or_else(|| TlsError("no system CA bundle found; give --tls-ca FILE".into()))?;
            roots(bundle, "system CA bundle")?
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| TlsError(format!("TLS versions: {e}")))?
        .with_root_certificates(roots);
    let config = match cert_and_key {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert, "certificate")?, private_key(key)?)
            .map_err(|e| pair_error(cert, key, &e))?,
    };
    Ok(Arc::new(config))
}

/// Why a TLS handshake failed, as the audit trail and `/metrics` name it.
pub fn handshake_failure(error: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error, PeerIncompatible};
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return match error.kind() {
            std::io::ErrorKind::UnexpectedEof => "closed during the handshake",
            _ => "connection error",
        };
    };
    match tls {
        Error::NoCertificatesPresented => "no certificate",
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => "unknown CA",
        Error::InvalidCertificate(CertificateError::Revoked) => "revoked",
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "expired",
        Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "not yet valid",
        Error::InvalidCertificate(_) => "bad certificate",
        // TLS 1.2 and 1.3 clients always send signature_algorithms; a ClientHello without
        // it is a TLS 1.0 or 1.1 one (what rustls notices first of an old client).
        Error::PeerIncompatible(
            PeerIncompatible::SignatureAlgorithmsExtensionRequired
            | PeerIncompatible::SupportedVersionsExtensionRequired
            | PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::Tls13RequiredForQuic,
        ) => "old TLS version",
        Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon) => {
            "no common cipher suite"
        }
        Error::PeerIncompatible(_) => "incompatible client",
        Error::InvalidMessage(_) => "not TLS",
        Error::AlertReceived(_) => "alert from the client",
        _ => "handshake error",
    }
}
